//! Whole operator passes (`reconcile_all`: every unit, then the orphan sweep; real planner) over the example deployment and over odd
//! resources the schema admits, against the in-memory API server.

mod controller_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use controller_support::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use ssis_crds::*;
use ssis_operator::catalog::{CatalogObservation, ReplicaObservation};
use ssis_operator::controller::stores::Stores;
use ssis_operator::controller::{Context, ReconcileReport, reconcile_all};

/// The committed example deployment, with `stringData` Secrets turned into `data` (the in-memory
/// server does not do that conversion).
fn example_objects() -> Vec<serde_json::Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut objects = vec![];
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            if value.is_null() {
                continue;
            }
            if value["kind"] == "Secret" {
                let mut secret: Secret = serde_json::from_value(value.clone()).unwrap();
                let string_data = secret.string_data.take().unwrap_or_default();
                let data: BTreeMap<String, ByteString> =
                    string_data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect();
                secret.data = Some(data);
                objects.push(json(&secret));
            } else {
                objects.push(value);
            }
        }
    }
    for node in ["win-sql-1", "win-sql-2", "win-worker-1"] {
        objects.push(json(&windows_node(node)));
    }
    objects
}

/// Run passes until one writes nothing; returns every report.
async fn converge(ctx: &Context<FakeCatalog>, max_passes: usize) -> Vec<ReconcileReport> {
    let mut reports = vec![];
    for _ in 0..max_passes {
        let report = reconcile_all(ctx, &Stores::load(&ctx.client, OPERATOR_NS).await.unwrap()).await.expect("pass");
        let done = report.writes() == 0;
        reports.push(report);
        if done {
            return reports;
        }
    }
    panic!("no fixed point after {max_passes} passes: {:?}", reports.last());
}

#[tokio::test]
async fn unreachable_sql_does_not_stop_host_configs_and_a_converged_world_writes_nothing() {
    let client = fake_client(example_objects()).await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    let reports = converge(&ctx, 10).await;
    let first = &reports[0];
    assert!(first.writes() > 0, "the first pass has work to do: {first:?}");
    assert!(first.problems.iter().any(|p| p.contains("observing SQL")), "{first:?}");

    // The master nodes got their HostConfigs although SQL was never reachable.
    let host_configs = Api::<HostConfig>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = host_configs.items.iter().filter_map(|h| h.metadata.name.clone()).collect();
    assert!(names.contains(&"win-sql-1".to_string()) && names.contains(&"win-sql-2".to_string()), "{names:?}");

    // Every custom resource has a kstatus status with observedGeneration.
    let groups = Api::<SsisdbAvailabilityGroup>::namespaced(client.clone(), "ssis").list(&Default::default()).await;
    for group in groups.unwrap().items {
        let status = group.status.expect("status written");
        assert_eq!(status.observed_generation, group.metadata.generation);
        assert!(find_condition(&status.conditions, "Ready").is_some());
    }
    let workers = Api::<ScaleOutWorker>::namespaced(client.clone(), "ssis").list(&Default::default()).await.unwrap();
    assert!(
        workers.items.iter().all(|w| w.metadata.finalizers.iter().flatten().any(|f| f == "ssis.sqlops.io/cleanup"))
    );

    // Nothing secret leaked into a status or an Event.
    let everything = format!("{:?}{:?}", workers.items, host_configs.items);
    assert!(!everything.contains("CHANGE-ME"), "a Secret value leaked");

    let again = reconcile_all(&ctx, &Stores::load(&ctx.client, OPERATOR_NS).await.unwrap()).await.unwrap();
    assert_eq!(again.writes(), 0, "{again:?}");
}

/// A reachable group whose SSISDB is not prepared for Scale Out yet (SQL actions to run).
fn unprepared_observation() -> CatalogObservation {
    CatalogObservation {
        primary: Some("WIN-SQL-1".into()),
        availability_group_exists: true,
        database_in_group: true,
        listener: Some(("agl-ssis".into(), Some(1433))),
        replicas: ["WIN-SQL-1", "WIN-SQL-2"]
            .iter()
            .map(|name| ReplicaObservation {
                name: (*name).into(),
                reachable: true,
                role: if *name == "WIN-SQL-1" { "PRIMARY" } else { "SECONDARY" }.into(),
                synchronization_health: "HEALTHY".into(),
                sql_auth_enabled: true,
                ..Default::default()
            })
            .collect(),
        ssisdb: Some(Default::default()),
    }
}

#[tokio::test]
async fn sql_observation_feeds_the_plan_and_actions_run_through_the_catalog() {
    let client = fake_client(example_objects()).await;
    let catalog = FakeCatalog::default();
    *catalog.observation.lock().unwrap() = Some(unprepared_observation());
    let (ctx, _) = context(client.clone(), catalog);
    let first = reconcile_all(&ctx, &Stores::load(&ctx.client, OPERATOR_NS).await.unwrap()).await.unwrap();
    assert!(first.sql_actions > 0, "an unprepared SSISDB gets SQL actions: {first:?}");
    let executed = ctx.catalog.executed.lock().unwrap().clone();
    assert_eq!(executed.len() as u32, first.sql_actions);
    let group = Api::<SsisdbAvailabilityGroup>::namespaced(client, "ssis").get("ssisdb").await.unwrap();
    assert_eq!(group.status.unwrap().primary_replica.as_deref(), Some("WIN-SQL-1"));
}

#[test]
fn resources_with_empty_optional_fields_never_panic_the_planner() {
    // The API server refuses these (empty names, port 70000): they reach the planner only through a
    // schema gap or an older CRD, and even then it must not panic.
    let mut group = SsisdbAvailabilityGroup::new("empty", Default::default());
    group.metadata.namespace = Some("odd".into());
    group.spec.listener.port = 0;
    group.spec.replicas = vec![AvailabilityReplica { port: 70000, ..Default::default() }];
    let mut master = ScaleOutMasterGroup::new("empty", Default::default());
    master.metadata.namespace = Some("odd".into());
    master.spec.nodes = vec!["win-1".into(), "missing-node".into()];
    let mut pool = ScaleOutWorker::new("pool", Default::default());
    pool.metadata.namespace = Some("odd".into());
    pool.spec.node_selector = Some(Default::default());
    pool.spec.certificate = CertificateSource::default();
    let mut single = ScaleOutWorker::new("single", Default::default());
    single.metadata.namespace = Some("odd".into());
    single.spec.node_name = Some("win-1".into());
    single.spec.master_group_ref.name = "empty".into();
    let input = ssis_operator::plan::PlanInput {
        now: start_time(),
        operator_namespace: OPERATOR_NS.into(),
        availability_groups: vec![group],
        master_groups: vec![master],
        workers: vec![pool, single],
        nodes: vec![ssis_operator::plan::NodeInfo {
            name: "win-1".into(),
            labels: BTreeMap::from([("kubernetes.io/os".to_string(), "windows".to_string())]),
            windows: true,
        }],
        ..Default::default()
    };
    let first = ssis_operator::plan::plan(&input);
    assert_eq!(first.availability_group_statuses.len(), 1);
    assert_eq!(first.worker_statuses.len(), 2);
}

/// CloudNativePG-style fencing, on the manual clock: a pass whose Lease is taken over while its
/// first SQL action runs makes no further SQL action and no further API write.
#[tokio::test]
async fn losing_the_lease_stops_a_running_pass_before_its_next_sql_action_or_api_write() {
    use ssis_operator::controller::{Fence, LeaderElector, LeaseSettings, LeaseStep};
    let server = fake_server(example_objects());
    let client = server.client(operator_identity());
    let gate = Arc::new(Gate::default());
    let catalog = FakeCatalog { gate: Some(gate.clone()), ..Default::default() };
    *catalog.observation.lock().unwrap() = Some(unprepared_observation());
    let (mut ctx, clock) = context(client.clone(), catalog);
    let ours =
        LeaderElector::new(client.clone(), LeaseSettings::new("leader", OPERATOR_NS, "pod-a"), Arc::new(clock.clone()));
    assert_eq!(ours.step().await.unwrap(), LeaseStep::Leading);
    let (leading, fence) = tokio::sync::watch::channel(true);
    ctx.fence = Fence::following(fence);
    let stores = Stores::load(&client, OPERATOR_NS).await.unwrap();

    let takeover = async {
        gate.started.notified().await;
        let writes_at_fence = server.ledger().writes_by("operator");
        // Our renewals stop (the pass is stuck in SQL); the standby takes over after expiry.
        let standby_client = server
            .client(ssis_sim_apiserver::Identity::new("standby", "system:serviceaccount:ssis-system:ssis-operator"));
        let standby = LeaderElector::new(
            standby_client,
            LeaseSettings::new("leader", OPERATOR_NS, "pod-b"),
            Arc::new(clock.clone()),
        );
        assert!(matches!(standby.step().await.unwrap(), LeaseStep::Following { .. }));
        clock.advance(std::time::Duration::from_secs(16));
        assert_eq!(standby.step().await.unwrap(), LeaseStep::Leading);
        assert_eq!(ours.step().await.unwrap(), LeaseStep::Following { holder: Some("pod-b".into()) });
        // What the elector's loop publishes on that step.
        leading.send(false).unwrap();
        gate.release.notify_one();
        writes_at_fence
    };
    let (pass, writes_at_fence) = tokio::join!(reconcile_all(&ctx, &stores), takeover);
    let report = pass.unwrap();
    assert!(report.fenced, "{report:?}");
    assert_eq!(ctx.catalog.executed.lock().unwrap().len(), 1, "only the action under way finished");
    assert_eq!(server.ledger().writes_by("operator"), writes_at_fence, "no API write after the Lease was lost");
}
