//! The agent runtime stepped against the in-memory Kubernetes API server (`ssis-sim-apiserver`,
//! which validates against the generated CRD and models server-side apply): reads its HostConfig
//! and Secrets, applies, writes status with server-side apply, writes nothing on a converged host,
//! and repairs drift.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::CustomResourceExt;
use kube::api::Api;
use ssis_agent::engine::{ActionKind, AgentConfig};
use ssis_agent::host::Host;
use ssis_agent::host::simulated::faults;
use ssis_agent::runtime::{FIELD_MANAGER, RuntimeConfig, SharedHost, SyncOutcome, sync_once};
use ssis_crds::*;
use ssis_sim_apiserver::{ApiServer, Identity, Options};

const NAMESPACE: &str = "ssis-system";

/// A server with the HostConfig CRD, the agent's namespace and `objects`.
fn fake_api(objects: Vec<serde_json::Value>) -> ApiServer {
    let server = ApiServer::new(Options::default());
    server.register_crd(&HostConfig::crd()).unwrap();
    server
        .seed(serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE } }))
        .unwrap();
    for object in objects {
        server.seed(object).unwrap();
    }
    server
}

fn as_json<K: serde::Serialize + kube::Resource<DynamicType = ()>>(object: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

fn agent_client(server: &ApiServer) -> kube::Client {
    server.client(Identity::new("agent", format!("system:serviceaccount:{NAMESPACE}:ssis-agent")))
}

/// Field managers of the status subresource's server-side applies.
async fn status_managers(client: &kube::Client) -> Vec<String> {
    let stored = host_configs(client).get("w1").await.unwrap();
    stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status") && m.operation.as_deref() == Some("Apply"))
        .filter_map(|m| m.manager)
        .collect()
}

fn host_configs(client: &kube::Client) -> Api<HostConfig> {
    Api::all(client.clone())
}

async fn stored_status(client: &kube::Client) -> HostConfigStatus {
    let list = host_configs(client).list(&Default::default()).await.unwrap();
    list.items.into_iter().find(|h| h.metadata.name.as_deref() == Some("w1")).unwrap().status.expect("status written")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_applies_its_host_config_and_reports_status() {
    let world = World::new("runtime");
    let worker = world.provision("w1", "worker");
    let master = master_certificate(&["ssis-master"]);
    let spec = worker_spec(
        &master.thumbprint,
        worker.worker_certificate_thumbprint.as_deref().unwrap(),
        "https://ssis-master:8391",
    );
    let mut host_config = HostConfig::new("w1", spec);
    host_config.metadata.generation = Some(1);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("master-cert".into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some([(host_secret_keys::CERTIFICATE_DER.to_string(), ByteString(master.der.clone()))].into()),
        ..Default::default()
    };
    let server = fake_api(vec![as_json(&host_config), as_json(&secret)]);
    let client = agent_client(&server);
    let boxed: Box<dyn Host> = Box::new(world.host("w1"));
    let host: SharedHost = Arc::new(Mutex::new(boxed));
    let config = RuntimeConfig {
        node_name: "w1".into(),
        namespace: NAMESPACE.into(),
        agent: AgentConfig::default(),
        drift_interval: Duration::from_secs(2),
    };

    let SyncOutcome::Synced { status_written, report } = sync_once(&client, &host, &config).await.unwrap() else {
        panic!("the HostConfig exists");
    };
    assert!(status_written);
    assert_eq!(report.count(ActionKind::CertificateImport), 1);
    let status = stored_status(&client).await;
    assert_eq!(status_managers(&client).await, [FIELD_MANAGER]);
    assert!(ready(&status), "{:#?}", status.conditions);
    assert_eq!(status.worker_settings.as_ref().unwrap().values["AgentId"], worker.agent_id.clone().unwrap());

    // Converged: no host write; the status settles ("Changed" items become "UpToDate") and is
    // then not written again.
    for pass in 0..2 {
        let SyncOutcome::Synced { status_written, report } = sync_once(&client, &host, &config).await.unwrap() else {
            panic!("the HostConfig exists");
        };
        assert_eq!(report.total_writes(), 0);
        assert_eq!(status_written, pass == 0, "pass {pass}");
    }
    let status_writes: u64 =
        server.ledger().writes.iter().filter(|(k, _)| k.resource_path() == "hostconfigs/status").map(|(_, n)| n).sum();
    assert_eq!(status_writes, 2, "the first status and the settled one; nothing while converged");

    // Drift: the trusted master certificate is deleted by hand; the next pass repairs and reports it.
    faults::delete_certificate(&world.root("w1"), CertStore::Root, &master.thumbprint).unwrap();
    let SyncOutcome::Synced { status_written, report } = sync_once(&client, &host, &config).await.unwrap() else {
        panic!("the HostConfig exists");
    };
    assert!(status_written);
    assert!(report.drift_repaired);
    let status = stored_status(&client).await;
    assert_eq!(status.drift.unwrap().repairs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_host_config_is_not_an_error() {
    let world = World::new("runtime-missing");
    world.provision("w2", "worker");
    let client = agent_client(&fake_api(vec![]));
    let boxed: Box<dyn Host> = Box::new(world.host("w2"));
    let host: SharedHost = Arc::new(Mutex::new(boxed));
    let config = RuntimeConfig {
        node_name: "w2".into(),
        namespace: NAMESPACE.into(),
        agent: AgentConfig::default(),
        drift_interval: Duration::from_secs(2),
    };
    assert_eq!(sync_once(&client, &host, &config).await.unwrap(), SyncOutcome::NoHostConfig);
}

/// Requests of the agent so far, by verb and resource path.
fn agent_requests(server: &ApiServer) -> std::collections::BTreeMap<(String, String), u64> {
    let mut requests = std::collections::BTreeMap::new();
    for (key, n) in &server.ledger().requests {
        if key.component == "agent" {
            *requests.entry((key.verb.clone(), key.resource_path())).or_default() += n;
        }
    }
    requests
}

/// The running agent (`runtime::run`) over simulated minutes on tokio's paused clock: after it has
/// applied its HostConfig, drift polls make no API request; the Lease is renewed at most once per
/// 30 s; a Secret is read again only when the operator records a new version for it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_running_agent_costs_the_api_server_only_its_lease_and_rereads_a_secret_only_when_it_changed() {
    let world = World::new("runtime-quiet");
    let worker = world.provision("w1", "worker");
    let master = master_certificate(&["ssis-master"]);
    let mut spec = worker_spec(
        &master.thumbprint,
        worker.worker_certificate_thumbprint.as_deref().unwrap(),
        "https://ssis-master:8391",
    );
    spec.secret_versions = vec![SecretVersion { name: "master-cert".into(), version: "sha256:01".into() }];
    let host_config = HostConfig::new("w1", spec.clone());
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("master-cert".into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some([(host_secret_keys::CERTIFICATE_DER.to_string(), ByteString(master.der.clone()))].into()),
        ..Default::default()
    };
    let server = fake_api(vec![as_json(&host_config), as_json(&secret)]);
    let client = agent_client(&server);
    let boxed: Box<dyn Host> = Box::new(world.host("w1"));
    let host: SharedHost = Arc::new(Mutex::new(boxed));
    let config = RuntimeConfig {
        node_name: "w1".into(),
        namespace: NAMESPACE.into(),
        agent: AgentConfig::default(),
        drift_interval: Duration::from_secs(2),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(ssis_agent::runtime::run(client.clone(), host, config, async {
        let _ = stopped.await;
    }));
    // Settle: the first passes apply the HostConfig and write the status.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(ready(&stored_status(&client).await));
    let settled = agent_requests(&server);
    // Two quiet minutes: 60 drift polls.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let quiet = agent_requests(&server);
    let mut delta: Vec<((String, String), u64)> = quiet
        .iter()
        .map(|(k, n)| (k.clone(), n - settled.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    delta.sort();
    assert_eq!(delta, vec![(("patch".to_string(), "leases".to_string()), 4)], "quiet minutes cost only Lease renewals");
    let secret_gets = quiet.get(&("get".to_string(), "secrets".to_string())).copied().unwrap_or(0);
    assert_eq!(secret_gets, 1, "the Secret was read once");

    let secret_gets = |requests: &std::collections::BTreeMap<(String, String), u64>| {
        requests.get(&("get".to_string(), "secrets".to_string())).copied().unwrap_or(0)
    };
    // Drift that needs the certificate again: repaired from the Secret already read.
    faults::delete_certificate(&world.root("w1"), CertStore::Root, &master.thumbprint).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(stored_status(&client).await.drift.map(|d| d.repairs), Some(1));
    assert_eq!(secret_gets(&agent_requests(&server)), 1, "repaired from the cached Secret");

    // The operator records a new version: the next import reads the Secret again, once.
    spec.secret_versions[0].version = "sha256:02".into();
    let api: Api<HostConfig> = Api::all(server.client(Identity::new("operator", "operator")));
    let mut changed = serde_json::json!({ "apiVersion": "ssis.sqlops.io/v1alpha1", "kind": "HostConfig",
                                          "metadata": { "name": "w1" } });
    changed["spec"] = serde_json::to_value(&spec).unwrap();
    api.patch("w1", &kube::api::PatchParams::apply("ssis-operator").force(), &kube::api::Patch::Apply(changed))
        .await
        .unwrap();
    faults::delete_certificate(&world.root("w1"), CertStore::Root, &master.thumbprint).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = agent_requests(&server);
    assert_eq!(secret_gets(&after), 2, "{after:?}");
    assert_eq!(after.get(&("watch".to_string(), "hostconfigs".to_string())).copied(), Some(1), "{after:?}");
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
}
