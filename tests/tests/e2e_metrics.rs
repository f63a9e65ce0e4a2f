//! The domain metrics as the simulated world drives them: the real operator's `/metrics` text and
//! each node's agent metrics after a fresh install, a master certificate rotation, an availability
//! group failover, hand edits on a host and a deleted worker (docs/operations.md says what they mean).

use ssis_crds::{RotationPhase, ScaleOutWorker};
use ssis_operator::controller::Clock;
use ssis_operator::simulation::World;
use ssis_tests::*;

fn operator_text(world: &World) -> String {
    world.operator_metrics().encode()
}

/// The value of the one sample whose line starts with `series ` (name and labels as exported).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "current_thread")]
async fn a_converged_install_exports_a_healthy_deployment() {
    let world = converged_examples().await;
    let text = operator_text(&world);
    let ag = r#"{namespace="ssis",name="ssisdb""#;
    let master = r#"{namespace="ssis",name="ssis-master"}"#;
    assert_eq!(sample(&text, &format!(r#"ssis_availability_group_primary_info{ag},replica="WIN-SQL-1"}}"#)), Some(1.0));
    assert_eq!(sample(&text, &format!("ssis_availability_group_failovers_total{ag}}}")), Some(0.0));
    assert_eq!(sample(&text, &format!("ssis_availability_group_replicas_connected{ag}}}")), Some(2.0));
    for replica in ["WIN-SQL-1", "WIN-SQL-2"] {
        let labels = format!(r#"{ag},replica="{replica}"}}"#);
        assert_eq!(sample(&text, &format!("ssis_availability_group_replica_catalog_key_ready{labels}")), Some(1.0));
        assert_eq!(sample(&text, &format!("ssis_availability_group_replica_logging_login_ready{labels}")), Some(1.0));
    }
    assert_eq!(sample(&text, &format!("ssis_master_group_nodes_ready{master}")), Some(2.0));
    assert_eq!(sample(&text, &format!("ssis_master_group_workers_online_enabled{master}")), Some(2.0));
    assert_eq!(
        sample(&text, r#"ssis_master_group_rotation_phase{namespace="ssis",name="ssis-master",phase="Idle"}"#),
        Some(1.0)
    );
    // The master's heartbeat reached SSISDB within the last rounds.
    let now = world.clock.now().as_second() as f64;
    let last_online = sample(&text, &format!("ssis_master_group_last_online_timestamp_seconds{master}")).unwrap();
    assert!(now - last_online <= 5.0, "LAST_ONLINE_TIME {last_online} vs now {now}");
    for worker in ["etl-pool", "win-worker-1"] {
        let labels = format!(r#"{{namespace="ssis",name="{worker}"}}"#);
        for figure in ["nodes", "nodes_enrolled", "nodes_registered", "nodes_enabled", "nodes_online"] {
            assert_eq!(sample(&text, &format!("ssis_worker_{figure}{labels}")), Some(1.0), "{worker} {figure}");
        }
    }
    for node in MASTER_NODES.iter().chain(WORKER_NODES.iter()) {
        let labels = format!(r#"{{node="{node}",state="Failed"}}"#);
        assert_eq!(sample(&text, &format!("ssis_node_items{labels}")), Some(0.0), "{node}");
        assert!(sample(&text, &format!(r#"ssis_node_agent_last_report_timestamp_seconds{{node="{node}"}}"#)).is_some());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_rotation_phase_metric_moves_through_the_phases_and_back_to_idle() {
    let mut world = converged_examples().await;
    world.age_master_certificates().await.expect("time passes");
    let mut phases = vec![RotationPhase::Idle];
    let mut converged = false;
    for _ in 0..ROUND_LIMIT {
        let report = world.step().await;
        let current = world.operator_metrics().domain.current();
        let phase =
            current.master_groups.iter().find(|g| g.id.name == "ssis-master").expect("master group").rotation_phase;
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        if report.writes() == 0 && world.not_ready().await.is_empty() {
            converged = true;
            break;
        }
    }
    assert!(converged, "{}", world.explain("the rotation did not finish").await);
    assert_eq!(
        phases,
        [
            RotationPhase::Idle,
            RotationPhase::TrustingNew,
            RotationPhase::DisablingWorkers,
            RotationPhase::SwitchingMasters,
            RotationPhase::SwitchingWorkers,
            RotationPhase::RemovingOld,
            RotationPhase::Idle,
        ]
    );
    // The new certificate's expiry is exported: a full validity period ahead again.
    let text = operator_text(&world);
    let expiry =
        sample(&text, r#"ssis_master_group_certificate_expiry_timestamp_seconds{namespace="ssis",name="ssis-master"}"#)
            .expect("expiry");
    let window =
        sample(&text, r#"ssis_master_group_certificate_renewal_window_seconds{namespace="ssis",name="ssis-master"}"#)
            .expect("window");
    assert!(expiry - world.clock.now().as_second() as f64 > window, "the renewed certificate is outside the window");
}

#[tokio::test(flavor = "current_thread")]
async fn an_availability_group_failover_increments_the_counter_once() {
    let mut world = converged_examples().await;
    world.fail_over_availability_group("WIN-SQL-2").await.expect("failover");
    converge(&mut world).await;
    let text = operator_text(&world);
    let ag = r#"{namespace="ssis",name="ssisdb""#;
    assert_eq!(sample(&text, &format!("ssis_availability_group_failovers_total{ag}}}")), Some(1.0));
    assert_eq!(sample(&text, &format!(r#"ssis_availability_group_primary_info{ag},replica="WIN-SQL-2"}}"#)), Some(1.0));
    assert_eq!(sample(&text, &format!(r#"ssis_availability_group_primary_info{ag},replica="WIN-SQL-1"}}"#)), None);
    let failover_at = sample(&text, &format!("ssis_availability_group_last_failover_timestamp_seconds{ag}}}"))
        .expect("failover time");
    assert!(world.clock.now().as_second() as f64 - failover_at < 3600.0, "the info alert's window");
    // More quiet rounds do not count it again.
    world.run_rounds(10).await;
    assert_eq!(sample(&operator_text(&world), &format!("ssis_availability_group_failovers_total{ag}}}")), Some(1.0));
}

#[tokio::test(flavor = "current_thread")]
async fn hand_edits_count_as_drift_repairs_by_item_on_the_agent_and_the_node() {
    let mut world = converged_examples().await;
    world.drift("win-sql-1").expect("drift");
    converge(&mut world).await;
    let agent = world.agent_metrics["win-sql-1"].encode();
    let repaired: Vec<&str> =
        agent.lines().filter(|l| l.starts_with("ssis_agent_drift_repairs_total{") && !l.ends_with(" 0")).collect();
    assert!(repaired.iter().any(|l| l.contains(r#"kind="MasterSettings",item="masterSettings""#)), "{agent}");
    // Nothing else drifted on the other nodes.
    let quiet = world.agent_metrics["win-sql-2"].encode();
    assert!(
        quiet.lines().filter(|l| l.starts_with("ssis_agent_drift_repairs_total{")).all(|l| l.ends_with(" 0")),
        "{quiet}"
    );
    let text = operator_text(&world);
    assert!(sample(&text, r#"ssis_node_drift_repairs_total{node="win-sql-1"}"#).unwrap() >= 1.0, "{text}");
    assert_eq!(sample(&text, r#"ssis_node_drift_repairs_total{node="win-sql-2"}"#), Some(0.0));
}

#[tokio::test(flavor = "current_thread")]
async fn a_deleted_worker_leaves_no_series_behind() {
    let mut world = converged_examples().await;
    assert!(operator_text(&world).contains(r#"name="win-worker-1""#));
    world.delete_object::<ScaleOutWorker>("ssis", "win-worker-1").await.expect("delete");
    converge(&mut world).await;
    let text = operator_text(&world);
    assert!(!text.contains(r#"name="win-worker-1""#), "{text}");
    assert_eq!(sample(&text, r#"ssis_worker_nodes{namespace="ssis",name="etl-pool"}"#), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, r#"ssis_master_group_workers{namespace="ssis",name="ssis-master"}"#),
        Some(1.0),
        "the master group counts the remaining pool only"
    );
}
