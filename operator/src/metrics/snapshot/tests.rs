use std::collections::BTreeMap;

use ssis_crds::{
    AgentInfo, CertificateStatus, DriftStatus, HostConfig, HostConfigStatus, ItemKind, ItemStatus, MasterNodeStatus,
    ReplicaStatus, RotationStatus, ScaleOutMasterGroup, ScaleOutMasterGroupStatus, ScaleOutWorker,
    ScaleOutWorkerStatus, SsisdbAvailabilityGroup, SsisdbAvailabilityGroupStatus, WorkerNodeStatus,
};

use super::*;
use crate::catalog::{CatalogObservation, SsisdbObservation, WorkerAgentRow};
use crate::metrics::DomainMetrics;

const NOW: &str = "2026-06-01T12:00:00Z";

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

fn meta(name: &str) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta { name: Some(name.into()), namespace: Some("ssis".into()), ..Default::default() }
}

fn availability_group(primary: Option<&str>) -> SsisdbAvailabilityGroup {
    let mut group = SsisdbAvailabilityGroup::new("ssisdb", Default::default());
    group.metadata = meta("ssisdb");
    group.status = Some(SsisdbAvailabilityGroupStatus {
        primary_replica: primary.map(String::from),
        logging_password_fingerprint: Some("fp-of-the-logging-password".into()),
        ..Default::default()
    });
    group
}

fn replica(name: &str, connected: bool, key: bool) -> ReplicaStatus {
    ReplicaStatus {
        name: name.into(),
        role: "SECONDARY".into(),
        connected,
        synchronization_health: "HEALTHY".into(),
        catalog_key_ready: key,
        logging_login_ready: true,
        message: None,
    }
}

fn worker_node(node: &str, id: &str, enabled: bool, not_after: &str) -> WorkerNodeStatus {
    WorkerNodeStatus {
        node_name: node.into(),
        phase: if enabled { ssis_crds::WorkerPhase::Ready } else { ssis_crds::WorkerPhase::Enabling },
        worker_agent_id: Some(id.into()),
        registered: true,
        enabled,
        // Status keeps an older value; the catalog row of this pass wins.
        last_online_time: Some("2026-06-01T11:00:00Z".into()),
        certificate_not_after: Some(not_after.into()),
        ..Default::default()
    }
}

/// AG `ssis/ssisdb` (primary moves WIN-SQL-1 → WIN-SQL-2 in this pass), master group `ssis/master`
/// in rotation phase SwitchingMasters, pool `ssis/pool` with two nodes (one online), one HostConfig.
fn world() -> (PlanInput, PlanOutput) {
    let mut input = PlanInput { now: ts(NOW), ..Default::default() };
    input.availability_groups.push(availability_group(Some("WIN-SQL-1")));

    let mut master = ScaleOutMasterGroup::new("master", Default::default());
    master.metadata = meta("master");
    master.spec.availability_group_ref.name = "ssisdb".into();
    master.spec.nodes = vec!["win-sql-1".into(), "win-sql-2".into()];
    master.spec.certificate.generate =
        Some(ssis_crds::GeneratedCertificate { renew_before_days: 10, ..Default::default() });
    input.master_groups.push(master);

    let mut pool = ScaleOutWorker::new("pool", Default::default());
    pool.metadata = meta("pool");
    pool.spec.master_group_ref.name = "master".into();
    input.workers.push(pool);

    let mut host = HostConfig::new("win-worker-1", Default::default());
    host.status = Some(HostConfigStatus {
        agent: Some(AgentInfo { last_heartbeat_time: "2026-06-01T11:59:00Z".into(), ..Default::default() }),
        drift: Some(DriftStatus { repairs: 3, ..Default::default() }),
        items: vec![
            ItemStatus {
                kind: ItemKind::Certificate,
                name: "certificate/a".into(),
                state: ItemState::Applied,
                ..Default::default()
            },
            ItemStatus {
                kind: ItemKind::Service,
                name: "service/worker".into(),
                state: ItemState::Failed,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    input.host_configs.push(host);

    let mut properties = BTreeMap::new();
    // SQL Server's text form of a datetimeoffset.
    properties.insert("LAST_ONLINE_TIME".to_string(), "2026-06-01 11:59:30.1234567 +00:00".to_string());
    input.catalogs.insert(
        "ssis/ssisdb".into(),
        CatalogObservation {
            ssisdb: Some(SsisdbObservation {
                master_properties: properties,
                worker_agents: vec![
                    WorkerAgentRow {
                        worker_agent_id: "AAAA".into(),
                        is_enabled: true,
                        last_online_time: Some("2026-06-01T11:58:00Z".into()),
                        ..Default::default()
                    },
                    WorkerAgentRow {
                        worker_agent_id: "BBBB".into(),
                        is_enabled: true,
                        last_online_time: Some("2026-06-01T11:50:00Z".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        },
    );

    let mut plan = PlanOutput::default();
    plan.availability_group_statuses.insert(
        "ssis/ssisdb".into(),
        SsisdbAvailabilityGroupStatus {
            primary_replica: Some("WIN-SQL-2".into()),
            last_failover_time: Some(NOW.into()),
            replicas: vec![replica("WIN-SQL-1", true, true), replica("WIN-SQL-2", false, false)],
            logging_password_fingerprint: Some("fp-of-the-logging-password".into()),
            ..Default::default()
        },
    );
    plan.master_group_statuses.insert(
        "ssis/master".into(),
        ScaleOutMasterGroupStatus {
            active_node: Some("win-sql-1".into()),
            certificate: Some(CertificateStatus {
                thumbprint: "AB".into(),
                not_after: "2026-06-09T12:00:00Z".into(),
                ..Default::default()
            }),
            rotation: Some(RotationStatus { phase: RotationPhase::SwitchingMasters, ..Default::default() }),
            nodes: vec![
                MasterNodeStatus { name: "win-sql-1".into(), ready: true, ..Default::default() },
                MasterNodeStatus { name: "win-sql-2".into(), ready: false, ..Default::default() },
            ],
            ..Default::default()
        },
    );
    plan.worker_statuses.insert(
        "ssis/pool".into(),
        ScaleOutWorkerStatus {
            nodes: vec![
                worker_node("win-worker-1", "aaaa", true, "2027-01-01T00:00:00Z"),
                WorkerNodeStatus {
                    certificate_rotation: Some(RotationStatus {
                        phase: RotationPhase::TrustingNew,
                        ..Default::default()
                    }),
                    ..worker_node("win-worker-2", "bbbb", true, "2026-07-01T00:00:00Z")
                },
            ],
            ..Default::default()
        },
    );
    (input, plan)
}

#[test]
fn figures_come_from_the_planned_statuses_the_catalog_and_the_host_configs() {
    let (input, plan) = world();
    let figures = snapshot(&input, &plan);

    let group = &figures.availability_groups[0];
    assert_eq!(group.id.key(), "ssis/ssisdb");
    assert_eq!(group.primary.as_deref(), Some("WIN-SQL-2"));
    assert_eq!(group.previous_primary.as_deref(), Some("WIN-SQL-1"));
    assert_eq!(group.last_failover, Some(ts(NOW)));
    assert_eq!(group.replicas.iter().filter(|r| r.connected).count(), 1);

    let master = &figures.master_groups[0];
    assert_eq!(master.rotation_phase, RotationPhase::SwitchingMasters);
    assert_eq!(master.certificate_expiry, Some(ts("2026-06-09T12:00:00Z")));
    assert_eq!(master.renewal_window, jiff::SignedDuration::from_hours(240));
    assert_eq!((master.nodes, master.nodes_ready), (2, 1));
    assert_eq!(master.active_node.as_deref(), Some("win-sql-1"));
    assert_eq!(master.last_online, Some(ts("2026-06-01T11:59:30.1234567Z")));
    // Worker AAAA reported 2 minutes ago (online), BBBB 10 minutes ago (offline).
    assert_eq!((master.workers, master.workers_online_enabled), (2, 1));

    let pool = &figures.workers[0];
    assert_eq!((pool.nodes, pool.enrolled, pool.registered, pool.enabled, pool.online), (2, 2, 2, 2, 1));
    assert_eq!(pool.node_details[0].last_online, Some(ts("2026-06-01T11:58:00Z")));
    assert_eq!(pool.certificate_expiry, Some(ts("2026-07-01T00:00:00Z")), "the soonest of the two");
    assert_eq!(pool.renewal_window, DEFAULT_RENEWAL_WINDOW, "a pool without generate settings");
    assert_eq!(pool.rotations_in_progress, 1);
    assert_eq!(pool.node_details[1].rotation_phase, Some(RotationPhase::TrustingNew));

    let node = &figures.nodes[0];
    assert_eq!(node.node, "win-worker-1");
    assert_eq!(node.last_report, Some(ts("2026-06-01T11:59:00Z")));
    assert_eq!(node.drift_repairs, 3);
    assert_eq!(node.items_in(ItemState::Failed), 1);
    assert_eq!(node.items_in(ItemState::Refused), 0);
}

#[test]
fn without_a_catalog_observation_the_status_time_decides_online() {
    let (mut input, plan) = world();
    input.catalogs.clear();
    let figures = snapshot(&input, &plan);
    // The status says 11:00, an hour ago.
    assert_eq!(figures.workers[0].online, 0);
    assert_eq!(figures.master_groups[0].workers_online_enabled, 0);
    assert_eq!(figures.master_groups[0].last_online, None);
}

#[test]
fn sql_server_and_rfc3339_times_parse_and_garbage_does_not() {
    assert_eq!(parse_time("2026-06-01T11:59:30Z"), Some(ts("2026-06-01T11:59:30Z")));
    assert_eq!(parse_time("2026-06-01 13:59:30 +02:00"), Some(ts("2026-06-01T11:59:30Z")));
    assert_eq!(parse_time("yesterday"), None);
}

fn with_primary(primary: Option<&str>, previous: Option<&str>) -> Snapshot {
    let (mut input, mut plan) = world();
    input.availability_groups[0] = availability_group(previous);
    plan.availability_group_statuses.get_mut("ssis/ssisdb").unwrap().primary_replica = primary.map(String::from);
    snapshot(&input, &plan)
}

#[test]
fn a_change_of_primary_counts_once_even_when_the_status_write_is_retried() {
    let metrics = DomainMetrics::default();
    metrics.observe(with_primary(Some("WIN-SQL-1"), Some("WIN-SQL-1")));
    assert_eq!(metrics.failovers("ssis", "ssisdb"), 0);
    metrics.observe(with_primary(Some("WIN-SQL-2"), Some("WIN-SQL-1")));
    assert_eq!(metrics.failovers("ssis", "ssisdb"), 1);
    // The status write failed: the next pass sees the old stored primary again.
    metrics.observe(with_primary(Some("WIN-SQL-2"), Some("WIN-SQL-1")));
    assert_eq!(metrics.failovers("ssis", "ssisdb"), 1);
    // No primary for a while, then back to WIN-SQL-1: one more failover.
    metrics.observe(with_primary(None, Some("WIN-SQL-2")));
    metrics.observe(with_primary(Some("win-sql-1"), None));
    assert_eq!(metrics.failovers("ssis", "ssisdb"), 2);
}

#[test]
fn a_new_process_counts_the_change_it_sees_against_the_stored_status() {
    let metrics = DomainMetrics::default();
    metrics.observe(with_primary(Some("WIN-SQL-2"), Some("WIN-SQL-1")));
    assert_eq!(metrics.failovers("ssis", "ssisdb"), 1);
}

#[test]
fn series_of_deleted_resources_disappear_and_counters_restart() {
    let metrics = crate::controller::Metrics::default();
    let (input, plan) = world();
    metrics.observe("ns/ag", &input, &plan);
    let text = metrics.encode();
    for needle in [
        r#"ssis_availability_group_failovers_total{namespace="ssis",name="ssisdb"} 1"#,
        r#"ssis_availability_group_primary_info{namespace="ssis",name="ssisdb",replica="WIN-SQL-2"} 1.0"#,
        r#"ssis_master_group_rotation_phase{namespace="ssis",name="master",phase="SwitchingMasters"} 1.0"#,
        r#"ssis_master_group_rotation_phase{namespace="ssis",name="master",phase="Idle"} 0.0"#,
        r#"ssis_master_group_certificate_expiry_timestamp_seconds{namespace="ssis",name="master"} 1781006400.0"#,
        r#"ssis_master_group_workers_online_enabled{namespace="ssis",name="master"} 1.0"#,
        r#"ssis_worker_nodes_online{namespace="ssis",name="pool"} 1.0"#,
        r#"ssis_worker_node_certificate_rotation_phase{namespace="ssis",name="pool",node="win-worker-2",phase="TrustingNew"} 1.0"#,
        r#"ssis_node_items{node="win-worker-1",state="Failed"} 1.0"#,
        r#"ssis_node_drift_repairs_total{node="win-worker-1"} 3"#,
        "ssis_operator_last_reconcile_timestamp_seconds 1780315200.0",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF") && text.matches("# EOF").count() == 1, "{text}");

    // The group and the pool are deleted.
    let (mut input, plan) = world();
    input.availability_groups.clear();
    input.workers.clear();
    metrics.observe("ns/ag", &input, &plan);
    let text = metrics.encode();
    assert!(!text.contains(r#"name="ssisdb""#), "{text}");
    assert!(!text.contains(r#"name="pool""#), "{text}");
    assert!(text.contains(r#"name="master""#), "{text}");
    // Descriptions stay, so the exported names are known even without resources.
    assert!(text.contains("# TYPE ssis_availability_group_failovers counter"), "{text}");
    assert_eq!(metrics.domain.failovers("ssis", "ssisdb"), 0);
}

#[test]
fn no_secret_material_reaches_the_metrics() {
    let metrics = crate::controller::Metrics::default();
    let (mut input, plan) = world();
    input.secrets.insert(
        "ssis/sql-admin".into(),
        crate::plan::SecretMeta { keys: ["password".to_string()].into(), fingerprint: "fp-of-the-admin-secret".into() },
    );
    metrics.observe("ns/ag", &input, &plan);
    let text = metrics.encode();
    for secret in ["fp-of-the-logging-password", "fp-of-the-admin-secret", "sql-admin"] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
}

#[test]
fn scopes_keep_each_others_series() {
    let metrics = DomainMetrics::default();
    let (input, plan) = world();
    metrics.observe_scope("ssis/ssisdb", snapshot(&input, &plan));
    let mut other = snapshot(&input, &plan);
    other.availability_groups[0].id.name = "other".into();
    metrics.observe_scope("ssis/other", other);
    assert_eq!(metrics.current().availability_groups.len(), 2);
    assert_eq!(metrics.current().nodes.len(), 1, "a node seen by two scopes is one node");
    metrics.forget_scope("ssis/other");
    assert_eq!(metrics.current().availability_groups.len(), 1);
    assert_eq!(metrics.failovers("ssis", "other"), 0);
}
