//! Agent benchmark: runs the real agent loop (`runtime::run`, default 2 s drift poll) against a
//! simulated worker node and an in-memory Kubernetes API, then prints
//! - drift repair latency: time from an administrator's edit of WorkerSettings.config to its
//!   repair by the running loop, over N trials (p50 / p95 / max; target < 5 s);
//! - idle RSS of this process while the converged agent polls (VmRSS / VmHWM; target < 20 MB);
//! - whether any child process was spawned in steady state (target: none).
//!
//! Run: `cargo bench -p ssis-agent --bench agent_bench` (env `TRIALS`, default 10).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use ssis_agent::engine::AgentConfig;
use ssis_agent::host::Host;
use ssis_agent::host::simulated::faults;
use ssis_agent::runtime::{self, RuntimeConfig, SharedHost};
use ssis_crds::*;

const SETTINGS: &str = r"C:\Program Files\Microsoft SQL Server\160\DTS\Binn\WorkerSettings.config";
const ENDPOINT: &str = "https://ssis-master.corp.local:8391";

fn proc_status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Processes whose parent is this process.
fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).is_some_and(|ppid| ppid == me)
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    let trials: usize = std::env::var("TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let world = World::new("bench");
    let worker = world.provision("w1", "worker");
    let master = master_certificate(&["ssis-master.corp.local"]);
    let spec = worker_spec(&master.thumbprint, worker.worker_certificate_thumbprint.as_deref().unwrap(), ENDPOINT);
    let mut host_config = HostConfig::new("w1", spec);
    host_config.metadata.generation = Some(1);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("master-cert".into()),
            namespace: Some("ssis-system".into()),
            ..Default::default()
        },
        data: Some([(host_secret_keys::CERTIFICATE_DER.to_string(), ByteString(master.der.clone()))].into()),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = runtime.block_on(async {
        let server = ssis_sim_apiserver::ApiServer::default();
        server.register_crd(&<HostConfig as kube::CustomResourceExt>::crd()).unwrap();
        server
            .seed(serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "ssis-system" } }))
            .unwrap();
        let mut host_config = serde_json::to_value(&host_config).unwrap();
        host_config["apiVersion"] = "ssis.sqlops.io/v1alpha1".into();
        host_config["kind"] = "HostConfig".into();
        server.seed(host_config).unwrap();
        let mut secret = serde_json::to_value(&secret).unwrap();
        secret["apiVersion"] = "v1".into();
        secret["kind"] = "Secret".into();
        server.seed(secret).unwrap();
        server.client(ssis_sim_apiserver::Identity::new("agent", "system:serviceaccount:ssis-system:ssis-agent"))
    });
    let boxed: Box<dyn Host> = Box::new(world.host("w1"));
    let host: SharedHost = Arc::new(Mutex::new(boxed));
    let config = RuntimeConfig {
        node_name: "w1".into(),
        namespace: "ssis-system".into(),
        agent: AgentConfig::default(),
        drift_interval: Duration::from_secs(2),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = runtime.spawn(runtime::run(client, host, config, async {
        let _ = stop_rx.await;
    }));
    let root = world.root("w1");
    let settings_file = binn(&root).join("WorkerSettings.config");
    let converged = || std::fs::read_to_string(&settings_file).unwrap_or_default().contains(ENDPOINT);
    let wait_converged = |limit: Duration| {
        let start = Instant::now();
        while !converged() {
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(start.elapsed())
    };
    wait_converged(Duration::from_secs(30)).expect("the agent converges the host");
    std::thread::sleep(Duration::from_secs(3));

    // Idle: converged agent polling every 2 s.
    let idle = Duration::from_secs(10);
    let start = Instant::now();
    let mut spawned = Vec::new();
    while start.elapsed() < idle {
        spawned.extend(children());
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss = proc_status_kb("VmRSS:");
    let hwm = proc_status_kb("VmHWM:");

    let mut latencies = Vec::new();
    for trial in 0..trials {
        // Spread the edits over the poll period.
        std::thread::sleep(Duration::from_millis(300 + 170 * trial as u64 % 1700));
        faults::edit_file(&root, SETTINGS, |text| text.replace(ENDPOINT, "https://wrong-master:8391")).unwrap();
        let latency = wait_converged(Duration::from_secs(30)).expect("drift repaired");
        latencies.push(latency);
    }
    let _ = stop_tx.send(());
    let _ = runtime.block_on(agent);
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("agent bench (simulated worker node, drift interval 2 s, {trials} trials)");
    println!(
        "drift repair latency: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (target < 5000 ms)",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.95)),
        ms(*latencies.last().unwrap())
    );
    println!(
        "idle RSS of this process (agent loop + in-memory API + bench): VmRSS {:.1} MB, VmHWM {:.1} MB (target < 20 MB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "processes spawned in steady state: {}",
        if spawned.is_empty() { "none".to_string() } else { format!("{} ({spawned:?})", spawned.len()) }
    );
}
