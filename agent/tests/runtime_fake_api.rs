//! The agent runtime stepped against an in-memory Kubernetes API (kube-fake-client): reads its
//! HostConfig and Secrets, applies, writes status with server-side apply, writes nothing on a
//! converged host, and repairs drift.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use ssis_agent::engine::{ActionKind, AgentConfig};
use ssis_agent::host::Host;
use ssis_agent::host::simulated::faults;
use ssis_agent::runtime::{FIELD_MANAGER, RuntimeConfig, SharedHost, SyncOutcome, sync_once};
use ssis_crds::*;

const NAMESPACE: &str = "ssis-system";

/// kube-fake-client 0.3 registers every custom kind as namespaced (a scope heuristic), so the
/// cluster-scoped HostConfig is filed under `default` while cluster-scoped paths look in `""`:
/// list works, but a status patch by name misses. This interceptor routes the agent's status SSA
/// to the stored object and records the field manager.
fn fake_api(
    objects_secret: Secret,
    host_config: HostConfig,
    managers: Arc<Mutex<Vec<String>>>,
) -> kube_fake_client::ClientBuilder {
    let funcs = kube_fake_client::interceptor::Funcs::new().patch_status(move |ctx| {
        managers.lock().unwrap().push(ctx.params.field_manager.clone().unwrap_or_default());
        let mut stored: HostConfig = ctx.client.get("default", ctx.name)?;
        stored.status = serde_json::from_value(ctx.patch["status"].clone())?;
        let updated = ctx.client.update_status("default", &stored, &Default::default())?;
        Ok(Some(serde_json::to_value(updated)?))
    });
    kube_fake_client::ClientBuilder::new()
        .with_resource::<HostConfig>()
        .with_status_subresource::<HostConfig>()
        .with_object(host_config)
        .with_object(objects_secret)
        .with_interceptor_funcs(funcs)
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
    let managers = Arc::new(Mutex::new(Vec::new()));
    let client = fake_api(secret, host_config, managers.clone()).build().await.unwrap();
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
    assert_eq!(*managers.lock().unwrap(), [FIELD_MANAGER]);
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
    assert_eq!(managers.lock().unwrap().len(), 2);

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
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<HostConfig>()
        .with_status_subresource::<HostConfig>()
        .build()
        .await
        .unwrap();
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
