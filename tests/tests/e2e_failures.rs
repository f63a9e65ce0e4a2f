//! End-to-end failure modes against the simulated world: agents killed mid-apply, operator
//! restarts, API errors, SQL disconnects, a node that never reports, and random interleavings of
//! every component's steps.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use ssis_agent::host::Host;
use ssis_agent::host::simulated::state::HostState;
use ssis_crds::{CertStore, ScaleOutMasterGroup, ScaleOutWorker, condition_types, find_condition};
use ssis_operator::simulation::api::{ApiFault, Component, FaultRule};
use ssis_operator::simulation::{World, WorldOptions};
use ssis_tests::*;

/// What must be identical after an interrupted-then-restarted pass and an uninterrupted one.
fn essential(state: &HostState) -> String {
    let mut state = state.clone();
    for service in state.services.values_mut() {
        service.starts = 0;
    }
    state.certificates.sort_by(|a, b| (a.store, &a.thumbprint).cmp(&(b.store, &b.thumbprint)));
    for certificate in &mut state.certificates {
        certificate.private_key_readers.sort();
    }
    serde_json::to_string_pretty(&state).expect("serializable")
}

#[tokio::test(flavor = "current_thread")]
async fn an_agent_killed_after_any_number_of_writes_leaves_no_torn_file_and_converges_after_restart() {
    let node = "win-worker-1";
    let mut world = World::from_examples(WorldOptions::default()).await.expect("world");
    world.set_agent_running(node, false);
    for _ in 0..ROUND_LIMIT {
        world.step().await;
        let spec = world.host_config(node).await.map(|h| h.spec);
        if spec.is_some_and(|s| s.worker_settings.is_some() && !s.certificates.is_empty()) {
            break;
        }
    }
    let root = world.host_root(node).unwrap();
    let snapshot = world.directory().join("snapshots").join(node);
    copy_tree(&root, &snapshot);
    let before_files = files_under(&root.join("fs"));

    // The uninterrupted pass: what the host must end up as.
    let reference = world.agent_pass(node, None, false).await;
    let writes = reference.report.total_writes() as usize;
    assert!(writes >= 5, "the first pass on a worker does the whole enrollment: {:?}", reference.report);
    let reference_state = essential(&host_state(&world, node));
    let reference_files = files_under(&root.join("fs"));

    for k in 0..writes {
        restore_tree(&snapshot, &root);
        let mut wrap = |host| -> Box<dyn Host> { Box::new(DyingHost::new(host, k)) };
        world.agent_pass(node, Some(&mut wrap), false).await;
        // Atomic writes: every file is either as before the pass or as after a full pass.
        for (path, content) in files_under(&root.join("fs")) {
            if path.ends_with(".bak") || path.contains("SSIS Scale Out Agent") {
                continue;
            }
            assert!(
                before_files.get(&path) == Some(&content) || reference_files.get(&path) == Some(&content),
                "killed after {k} writes: {path} is torn"
            );
        }
        // The restarted agent finishes the job.
        let mut passes = 0;
        loop {
            let pass = world.agent_pass(node, None, false).await;
            passes += 1;
            assert!(pass.failed.is_empty(), "killed after {k} writes, restart pass failed: {:?}", pass.failed);
            if pass.report.total_writes() == 0 {
                break;
            }
            assert!(passes < 4, "killed after {k} writes: no fixed point after restart");
        }
        assert_eq!(essential(&host_state(&world, node)), reference_state, "killed after {k} writes");
    }
    world.set_agent_running(node, true);
    converge(&mut world).await;
}

/// Every phase of a master rotation (the status.rotation.phase enum of the ScaleOutMasterGroup
/// CRD) but Idle.
fn rotation_phases_of_the_api() -> BTreeSet<String> {
    let crd = serde_json::to_value(<ScaleOutMasterGroup as kube::CustomResourceExt>::crd()).expect("CRD");
    let phase = "/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/rotation/properties/phase/enum";
    let phases = crd.pointer(phase).and_then(serde_json::Value::as_array).expect("the rotation phase enum");
    phases.iter().filter_map(serde_json::Value::as_str).filter(|p| *p != "Idle").map(str::to_string).collect()
}

/// Every certificate id was issued once.
fn assert_issued_once(world: &World) {
    let issued = world.issuer.issued();
    let unique: BTreeSet<&String> = issued.iter().collect();
    assert_eq!(unique.len(), issued.len(), "a certificate was issued twice: {issued:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_operator_restarted_before_every_round_of_an_enrollment_redoes_nothing() {
    let mut world = World::from_examples(WorldOptions::default()).await.expect("world");
    let mut converged = false;
    for _ in 0..ROUND_LIMIT {
        world.restart_operator();
        let report = world.step().await;
        if report.writes() == 0 && world.not_ready().await.is_empty() {
            converged = true;
            break;
        }
    }
    assert!(converged, "{}", world.explain("no fixed point with an operator restarted every round").await);
    assert_issued_once(&world);
    assert_eq!(world.issuer.issued().len(), 3, "one master and two worker certificates");
    let sql = &world.totals.sql;
    assert_eq!(sql.get("EnableWorkerAgent"), Some(&2), "each worker enabled once: {sql:?}");
    assert_eq!(sql.get("UpdateMasterAddress"), Some(&1), "{sql:?}");
    assert_eq!(sql.get("EnableScaleOut"), Some(&1), "{sql:?}");
    assert_eq!(sql.get("CreateLoggingLoginWithSid"), Some(&1), "{sql:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_operator_restarted_in_every_phase_of_a_master_rotation_finishes_it_once() {
    let mut world = converged_examples().await;
    let old = master_group(&world).await.status.unwrap().certificate.unwrap().thumbprint;
    world.age_master_certificates().await.unwrap();
    let mut phases = BTreeSet::new();
    let mut converged = false;
    for _ in 0..ROUND_LIMIT {
        world.restart_operator();
        let report = world.step().await;
        let rotation = master_group(&world).await.status.and_then(|s| s.rotation);
        if let Some(rotation) = rotation.filter(|r| r.phase != ssis_crds::RotationPhase::Idle) {
            phases.insert(format!("{:?}", rotation.phase));
        }
        if report.writes() == 0 && world.not_ready().await.is_empty() {
            converged = true;
            break;
        }
    }
    assert!(converged, "{}", world.explain("no fixed point").await);
    assert_eq!(phases, rotation_phases_of_the_api(), "a restarted operator still goes through every phase");
    assert_issued_once(&world);
    let masters: Vec<_> = world.issuer.issued().into_iter().filter(|id| id.starts_with("master/")).collect();
    assert_eq!(masters.len(), 2, "one renewal, not one per restart: {masters:?}");
    for node in MASTER_NODES.iter().chain(WORKER_NODES.iter()) {
        assert!(!has_certificate(&world, node, CertStore::Root, &old), "{node} still has the old certificate");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn api_conflicts_server_errors_and_lost_responses_only_delay_convergence() {
    let mut world = World::from_examples(WorldOptions::default()).await.expect("world");
    let rule = |fault, component: Component, resource: &str, remaining| FaultRule {
        fault,
        component: Some(component.name().to_string()),
        resource: Some(resource.to_string()),
        writes_only: true,
        remaining,
    };
    world.api.inject(rule(ApiFault::Conflict, Component::Operator, "hostconfigs", 3));
    world.api.inject(rule(ApiFault::ServerError, Component::Operator, "scaleoutworkers/status", 2));
    world.api.inject(rule(ApiFault::TimeoutAfterApply, Component::Operator, "secrets", 2));
    world.api.inject(rule(ApiFault::TimeoutBeforeApply, Component::Agent, "hostconfigs/status", 3));
    world.api.inject(rule(ApiFault::Conflict, Component::Operator, "scaleoutworkers", 1));
    world.api.inject(FaultRule {
        fault: ApiFault::ServerError,
        component: Some(Component::Operator.name().to_string()),
        // The operator reads Secret data only when a referenced Secret changes; its first read fails.
        resource: Some("secrets".into()),
        writes_only: false,
        remaining: 1,
    });
    converge(&mut world).await;
    assert_eq!(world.api.ledger().faults_injected, 12, "every injected fault was hit");
    assert_issued_once(&world);
    // Lost responses must not leave duplicate host material behind.
    let certificate_secrets = world
        .list::<k8s_openapi::api::core::v1::Secret>()
        .await
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some("ssis-system"))
        .filter(|s| s.metadata.labels.as_ref().is_some_and(|l| l.contains_key("ssis.sqlops.io/certificate-id")))
        .count();
    assert_eq!(certificate_secrets, 3, "one host-material Secret per certificate in use");
}

#[tokio::test(flavor = "current_thread")]
async fn sql_disconnects_in_the_middle_of_the_procedure_are_resumed_without_redoing_steps() {
    let mut world = World::from_examples(WorldOptions::default()).await.expect("world");
    // The first observation creates the SQL world; then connections drop every round for a while.
    world.step().await;
    for round in 0..6 {
        world.catalog.fail_next(AG_KEY, 1 + round % 3).expect("SQL world");
        world.step().await;
    }
    world.catalog.disconnect(AG_KEY, "WIN-SQL-2").unwrap();
    world.run_rounds(3).await;
    let ag = world.list::<ssis_crds::SsisdbAvailabilityGroup>().await.remove(0).status.unwrap();
    let ready = find_condition(&ag.conditions, condition_types::READY).unwrap();
    assert_eq!(ready.status, "False", "an unreachable replica is not ready");
    assert!(ag.replicas.iter().any(|r| r.name == "WIN-SQL-2" && !r.connected), "{:?}", ag.replicas);
    world.catalog.reconnect(AG_KEY, "WIN-SQL-2").unwrap();
    converge(&mut world).await;
    let sql = world.sql_world(AG_KEY).unwrap();
    let sids: BTreeSet<_> =
        sql.replicas.iter().map(|r| r.logins.get("##ms_ssislogdbworkeragentlogin##").map(|l| l.sid.clone())).collect();
    assert_eq!(sids.len(), 1, "one logging login SID everywhere: {sids:?}");
    assert_eq!(world.totals.sql.get("CreateLoggingLoginWithSid"), Some(&1), "{:?}", world.totals.sql);
    assert_eq!(world.totals.sql.get("EnableWorkerAgent"), Some(&2), "{:?}", world.totals.sql);
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_that_never_reports_does_not_hold_back_the_others_and_is_named() {
    let mut world = World::from_examples(WorldOptions::default()).await.expect("world");
    world.set_agent_running("win-worker-2", false);
    world.run_rounds(30).await;
    let quiet = world.run_rounds(3).await;
    assert_eq!(quiet, 0, "everything else reached a fixed point");
    for worker in world.list::<ScaleOutWorker>().await {
        let name = worker.metadata.name.clone().unwrap_or_default();
        let status = worker.status.unwrap();
        let ready = find_condition(&status.conditions, condition_types::READY).unwrap().clone();
        if name == "etl-pool" {
            assert_eq!(ready.status, "False");
            assert!(ready.message.contains("win-worker-2"), "the condition names the node: {}", ready.message);
            let node = &status.nodes[0];
            assert!(node.message.as_deref().is_some_and(|m| m.contains("agent")), "and says why: {node:?}");
        } else {
            assert_eq!(ready.status, "True", "{name}: {}", ready.message);
        }
    }
    let master = master_group(&world).await.status.unwrap();
    assert!(find_condition(&master.conditions, condition_types::READY).is_some_and(|c| c.status == "True"));
}

/// The essentials of a converged world, independent of generated ids and thumbprints.
async fn converged_shape(world: &World) -> BTreeMap<String, String> {
    let mut shape = BTreeMap::new();
    shape.insert("not ready".into(), format!("{:?}", world.not_ready().await));
    let thumbprint = master_group(world).await.status.unwrap().certificate.unwrap().thumbprint;
    for (node, _) in world.nodes.iter() {
        let state = host_state(world, node);
        let roots = state.certificates.iter().filter(|c| c.store == CertStore::Root).count();
        let mine = state.certificates.iter().filter(|c| c.store == CertStore::My).count();
        let running: Vec<_> = state.services.iter().filter(|(_, s)| s.running).map(|(n, _)| n.clone()).collect();
        let serves = state.ssl_bindings.values().map(|b| b.thumbprint == thumbprint).collect::<Vec<_>>();
        shape.insert(node.clone(), format!("Root {roots}, My {mine}, running {running:?}, binding serves {serves:?}"));
    }
    let sql = world.sql_world(AG_KEY).unwrap();
    let ssisdb = sql.ssisdb.unwrap();
    shape.insert(
        "workers".into(),
        format!("{:?}", ssisdb.worker_agents.values().map(|w| w.is_enabled).collect::<Vec<_>>()),
    );
    shape.insert("MASTER_ADDRESS".into(), ssisdb.master_properties["MASTER_ADDRESS"].clone());
    shape.insert("CLUSTER_LOGDB_SERVER".into(), ssisdb.master_properties["CLUSTER_LOGDB_SERVER"].clone());
    shape
}

/// One step of one component.
#[derive(Clone, Copy, Debug)]
enum Step {
    Operator,
    Agent(usize),
    Network,
    Clock,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![Just(Step::Operator), (0usize..4).prop_map(Step::Agent), Just(Step::Network), Just(Step::Clock)]
}

async fn run_interleaving(steps: &[Step]) -> BTreeMap<String, String> {
    let mut world = World::from_examples(WorldOptions::default()).await.expect("world");
    let nodes: Vec<String> = world.nodes.keys().cloned().collect();
    for step in steps {
        match step {
            Step::Operator => {
                let _ = world.operator_pass().await;
            }
            Step::Agent(i) => {
                world.agent_pass(&nodes[i % nodes.len()], None, true).await;
            }
            Step::Network => {
                world.network_round();
            }
            Step::Clock => world.clock.advance(world.options.round_step),
        }
    }
    converge(&mut world).await;
    converged_shape(&world).await
}

#[test]
fn random_interleavings_of_operator_and_agent_steps_reach_the_same_final_state() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let baseline = runtime.block_on(run_interleaving(&[]));
    let config = ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(steps in proptest::collection::vec(step_strategy(), 5..40))| {
        let shape = runtime.block_on(run_interleaving(&steps));
        prop_assert_eq!(&shape, &baseline);
    });
}
