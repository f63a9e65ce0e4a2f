//! The long-running loop against the in-memory API: it elects itself, reconciles, serves
//! /metrics, /healthz and /readyz, and on shutdown releases the Lease.

mod controller_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use ssis_operator::controller::runner::{RunnerConfig, run};
use ssis_operator::controller::{LeaseSettings, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn leader_reconciles_serves_health_and_releases_the_lease_on_shutdown() {
    let client = fake_client(vec![json(&windows_node("win-1"))]).await;
    let (mut ctx, _clock) = context(client.clone(), FakeCatalog::unreachable());
    let metrics = Arc::new(Metrics::default());
    ctx.metrics = metrics.clone();
    let addr = free_port();
    let config = RunnerConfig {
        leader: Some(LeaseSettings::new("ssis-operator-leader", OPERATOR_NS, "pod-a")),
        metrics_addr: addr,
        debounce: Duration::from_millis(10),
        ..Default::default()
    };
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let observed = seen.clone();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NS);
    let lease_during = Arc::new(Mutex::new(None));
    let lease_seen = lease_during.clone();
    // Shut down once the first pass is done and the endpoints were read.
    let shutdown = async move {
        while metrics.reconciles.get() == 0 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for path in ["/healthz", "/readyz", "/metrics"] {
            let response = http_get(addr, path).await;
            observed.lock().unwrap().push(response);
        }
        *lease_seen.lock().unwrap() = lease_api.get("ssis-operator-leader").await.ok();
    };
    tokio::time::timeout(Duration::from_secs(120), run(ctx, config, shutdown))
        .await
        .expect("the loop stops on shutdown")
        .unwrap();

    let responses = seen.lock().unwrap().clone();
    let status_line = |r: &str| r.lines().next().unwrap_or_default().to_string();
    assert!(status_line(&responses[0]).contains(" 200") && responses[0].ends_with("ok"), "{}", responses[0]);
    assert!(status_line(&responses[1]).contains(" 200"), "leader is ready after its first pass: {}", responses[1]);
    let passes: u64 = responses[2]
        .lines()
        .find_map(|l| l.strip_prefix("ssis_operator_reconciles_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("reconcile counter exported");
    assert!(passes >= 1, "{}", responses[2]);
    assert!(responses[2].contains("ssis_operator_leader 1"), "{}", responses[2]);

    let during = lease_during.lock().unwrap().clone().expect("lease held while running");
    assert_eq!(during.spec.unwrap().holder_identity.as_deref(), Some("pod-a"));
    let after = Api::<Lease>::namespaced(client, OPERATOR_NS).get("ssis-operator-leader").await.unwrap();
    assert_eq!(after.spec.unwrap().holder_identity, None, "the lease is released on shutdown");
}

/// With leader election off, the loop runs a pass when something changes and otherwise waits for
/// the resync: a dropped leadership sender made `changed()` ready at once, so the loop ran a full
/// pass every debounce interval forever (114 passes a minute against a real API server).
#[tokio::test(start_paused = true)]
async fn without_leader_election_no_pass_runs_without_a_trigger() {
    let server = fake_server(vec![json(&windows_node("win-1"))]);
    let client = server.client(operator_identity());
    let (mut ctx, _clock) = context(client, FakeCatalog::unreachable());
    let metrics = Arc::new(Metrics::default());
    ctx.metrics = metrics.clone();
    let config = RunnerConfig {
        leader: None,
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        debounce: Duration::from_millis(500),
        resync: Duration::from_secs(300),
        ..Default::default()
    };
    let counted = metrics.clone();
    let ledger = server.clone();
    let seen = Arc::new(Mutex::new(((0, 0), (0, 0))));
    let observed = seen.clone();
    let shutdown = async move {
        // The watches' initial lists trigger the first pass(es); let them settle.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let settled = (counted.reconciles.get(), ledger.ledger().requests_by("operator"));
        // Two quiet minutes of simulated time: no trigger, no resync due yet.
        tokio::time::sleep(Duration::from_secs(120)).await;
        let after = (counted.reconciles.get(), ledger.ledger().requests_by("operator"));
        *observed.lock().unwrap() = (settled, after);
    };
    run(ctx, config, shutdown).await.unwrap();
    let ((passes, requests), (passes_after, requests_after)) = *seen.lock().unwrap();
    assert!(passes >= 1, "the first pass ran");
    assert_eq!(passes_after, passes, "passes ran in two quiet minutes without leader election");
    assert_eq!(requests_after, requests, "a quiet operator sends no API requests");
}
