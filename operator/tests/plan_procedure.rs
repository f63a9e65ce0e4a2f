//! The planner against the reference procedure: one test per step and per pitfall it prevents.

mod plan_support;

use plan_support::*;
use ssis_crds::*;
use ssis_operator::catalog::{SecretValue, SqlAction};
use ssis_operator::plan::plan;

fn actions(output: &ssis_operator::plan::PlanOutput) -> Vec<SqlAction> {
    output.sql_actions.get(AG_KEY).cloned().unwrap_or_default()
}

#[test]
fn step_5_master_settings_point_at_the_listener_on_every_master_node() {
    let output = World::new(input()).converge(6);
    for node in ["sql-1", "sql-2"] {
        let settings = output.host_configs[node].master_settings.clone().expect("master settings on every master node");
        assert_eq!(settings.sql_server_name, "agl-ssis.corp.example.com,1433");
        assert_eq!(settings.port_number, 8391);
    }
}

#[test]
fn step_3_one_master_certificate_with_its_key_in_root_and_bound_on_every_master_node() {
    let output = World::new(input()).converge(6);
    let served = output.host_configs["sql-1"].master_settings.clone().expect("settings").ssl_cert_thumbprint;
    for node in ["sql-1", "sql-2"] {
        let spec = &output.host_configs[node];
        let certificate = spec
            .certificates
            .iter()
            .find(|c| c.thumbprint == served)
            .expect("the shared master certificate on every master node");
        assert_eq!(certificate.store, CertStore::Root);
        assert!(
            certificate.source.as_ref().and_then(|s| s.pfx_key.as_ref()).is_some(),
            "imported with its private key"
        );
        // Pitfall 5: each master node has its own binding to the shared certificate.
        assert_eq!(spec.http_ssl_bindings.len(), 1);
        assert_eq!(spec.http_ssl_bindings[0].ip_port, "0.0.0.0:8391");
        assert_eq!(spec.http_ssl_bindings[0].thumbprint, served);
    }
}

#[test]
fn pitfall_1_master_certificate_names_include_the_client_access_point() {
    let output = plan(&input());
    let request = output
        .certificate_requests
        .iter()
        .find(|r| r.id.starts_with("master/"))
        .expect("master certificate requested on a fresh install");
    match &request.source {
        ssis_operator::plan::CertificateRequestSource::Generate { dns_names, .. } => {
            assert!(dns_names.contains(&"ssis-master.corp.example.com".to_string()));
        }
        other => panic!("expected a generated certificate, got {other:?}"),
    }
}

#[test]
fn step_7_cluster_role_created_from_exactly_one_node_with_owners_from_agents() {
    let output = World::new(input()).converge(6);
    let roles: Vec<&ClusterRole> =
        ["sql-1", "sql-2"].iter().map(|n| output.host_configs[*n].cluster_role.as_ref().expect("role item")).collect();
    assert_eq!(roles.iter().filter(|r| r.create).count(), 1);
    assert!(roles[0].create, "the first node of spec.nodes creates the role");
    assert_eq!(roles[0].name, "ssis-master");
    assert_eq!(roles[0].possible_owners, vec!["SQL-1".to_string(), "SQL-2".to_string()]);
    let service = output.host_configs["sql-1"]
        .services
        .iter()
        .find(|s| s.role == ServiceRole::ScaleOutMaster)
        .expect("master service");
    assert_eq!(service.state, ServiceRunState::ClusterManaged);
    assert_eq!(service.start_type, Some(ServiceStartType::Manual));
}

#[test]
fn step_2_1_master_service_logs_on_as_the_domain_account_through_an_operator_namespace_copy() {
    let output = plan(&input());
    let service = output.host_configs["sql-1"]
        .services
        .iter()
        .find(|s| s.role == ServiceRole::ScaleOutMaster)
        .expect("master service");
    let logon = service.logon.clone().expect("logon account");
    assert_eq!(logon.username, r"CORP\svc-ssis-master");
    let copy = output.secret_copies.get(&logon.password_secret_ref.name).expect("the password Secret is copied");
    assert_eq!((copy.source_namespace.as_str(), copy.source_name.as_str()), (NS, "master-account"));
    assert_eq!(logon.password_secret_ref.key, host_secret_keys::PASSWORD);
}

#[test]
fn step_8_and_pitfall_8_master_address_scale_out_and_master_account_logins() {
    let mut input = input();
    let mut observation = converged_observation();
    let ssisdb = observation.ssisdb.as_mut().expect("ssisdb");
    ssisdb.master_properties.remove("MASTER_ADDRESS");
    ssisdb.master_properties.insert("IS_SCALEOUT_ENABLED".into(), String::new());
    ssisdb.master_account_users.clear();
    observation.replicas[1].master_account_logins.clear();
    input.catalogs.insert(AG_KEY.into(), observation);
    let actions = actions(&plan(&input));
    assert!(actions.contains(&SqlAction::EnableScaleOut { replica: "SQL1".into() }));
    assert!(
        actions.contains(&SqlAction::CreateWindowsLogin {
            replica: "SQL2".into(),
            account: r"CORP\svc-ssis-master".into()
        })
    );
    assert!(!actions.iter().any(|a| matches!(a, SqlAction::CreateWindowsLogin { replica, .. } if replica == "SQL1")));
    assert!(
        actions
            .contains(&SqlAction::GrantSsisAdmin { replica: "SQL1".into(), account: r"CORP\svc-ssis-master".into() })
    );
    let address = SqlAction::UpdateMasterAddress {
        replica: "SQL1".into(),
        address: "https://ssis-master.corp.example.com:8391".into(),
    };
    assert_eq!(actions.last(), Some(&address), "step 8 runs after the logins it depends on");
    let enable = actions.iter().position(|a| matches!(a, SqlAction::EnableScaleOut { .. })).expect("enable");
    let login = actions.iter().position(|a| matches!(a, SqlAction::CreateWindowsLogin { .. })).expect("login");
    assert!(enable < login);
}

#[test]
fn step_6_2_logging_login_created_on_secondaries_with_primary_sid() {
    let mut input = input();
    let mut observation = converged_observation();
    observation.replicas[1].logging_login_sid = None;
    input.catalogs.insert(AG_KEY.into(), observation);
    let actions = actions(&plan(&input));
    assert!(actions.contains(&SqlAction::CreateLoggingLoginWithSid {
        replica: "SQL2".into(),
        sid: SID.into(),
        password: SecretValue::LoggingPassword,
        drop_existing: false,
    }));
}

#[test]
fn pitfall_9_logging_login_with_another_sid_is_recreated_with_the_primary_sid() {
    let mut input = input();
    let mut observation = converged_observation();
    observation.replicas[1].logging_login_sid = Some("0xDEAD".into());
    input.catalogs.insert(AG_KEY.into(), observation);
    let output = plan(&input);
    assert!(actions(&output).contains(&SqlAction::CreateLoggingLoginWithSid {
        replica: "SQL2".into(),
        sid: SID.into(),
        password: SecretValue::LoggingPassword,
        drop_existing: true,
    }));
    let status = &output.availability_group_statuses[AG_KEY];
    assert!(!status.replicas[1].logging_login_ready);
}

#[test]
fn step_6_1_and_6_3_password_change_updates_primary_and_logdb_info() {
    let mut world = World::new(input());
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    // The first pass cannot know which password the encrypted connection string holds: it writes it once.
    let first = world.pass();
    assert!(actions(&first).iter().any(|a| matches!(a, SqlAction::UpdateLogDbInfo { .. })));
    let first = world.pass();
    assert!(!actions(&first).iter().any(|a| matches!(a, SqlAction::UpdateLogDbInfo { .. })), "nothing changed since");
    assert_eq!(
        first.availability_group_statuses[AG_KEY].logging_password_fingerprint.as_deref(),
        Some("f-logging-1"),
        "the fingerprint, never the password, is tracked in status"
    );
    // The user rotates the logging password Secret; PWDCOMPARE now fails on every replica.
    world.input.secrets.get_mut("ssis/ssis-logging").expect("secret").fingerprint = "f-logging-2".into();
    let observation = world.input.catalogs.get_mut(AG_KEY).expect("observation");
    for replica in &mut observation.replicas {
        replica.logging_login_password_matches = false;
    }
    let second = world.pass();
    let actions = actions(&second);
    assert!(actions.contains(&SqlAction::SetLoggingLoginPassword {
        replica: "SQL1".into(),
        password: SecretValue::LoggingPassword
    }));
    assert!(actions.contains(&SqlAction::SetLoggingLoginPassword {
        replica: "SQL2".into(),
        password: SecretValue::LoggingPassword
    }));
    assert!(actions.contains(&SqlAction::UpdateLogDbInfo {
        replica: "SQL1".into(),
        server_name: "agl-ssis.corp.example.com,1433".into(),
        password: SecretValue::LoggingPassword,
    }));
}

#[test]
fn pitfall_9_logdb_info_pointing_at_a_node_is_moved_to_the_listener() {
    let mut input = input();
    let mut observation = converged_observation();
    observation.ssisdb.as_mut().expect("ssisdb").master_properties.insert("CLUSTER_LOGDB_SERVER".into(), "SQL1".into());
    input.catalogs.insert(AG_KEY.into(), observation);
    let mut ag = availability_group();
    ag.status = Some(SsisdbAvailabilityGroupStatus {
        logging_password_fingerprint: Some("f-logging-1".into()),
        ..Default::default()
    });
    input.availability_groups = vec![ag];
    assert!(actions(&plan(&input)).iter().any(|a| matches!(a, SqlAction::UpdateLogDbInfo { server_name, .. } if server_name == "agl-ssis.corp.example.com,1433")));
}

#[test]
fn pitfall_10_master_key_password_stored_on_every_replica_and_encrypted_on_primary() {
    let mut input = input();
    let mut observation = converged_observation();
    observation.replicas[1].master_key_password_stored = false;
    observation.ssisdb.as_mut().expect("ssisdb").master_key_encrypted_by_server = false;
    input.catalogs.insert(AG_KEY.into(), observation);
    let actions = actions(&plan(&input));
    assert!(actions.contains(&SqlAction::StoreMasterKeyPassword {
        replica: "SQL2".into(),
        password: SecretValue::CatalogPassword
    }));
    assert!(
        !actions.iter().any(|a| matches!(a, SqlAction::StoreMasterKeyPassword { replica, .. } if replica == "SQL1"))
    );
    assert!(actions.contains(&SqlAction::EncryptMasterKeyByServiceKey {
        replica: "SQL1".into(),
        password: SecretValue::CatalogPassword
    }));
}

#[test]
fn pitfall_11_always_on_support_registered_for_a_missing_replica() {
    let mut input = input();
    let mut observation = converged_observation();
    observation.ssisdb.as_mut().expect("ssisdb").always_on_replicas = vec!["SQL1".into()];
    input.catalogs.insert(AG_KEY.into(), observation);
    input.availability_groups[0].status = Some(SsisdbAvailabilityGroupStatus {
        logging_password_fingerprint: Some("f-logging-1".into()),
        ..Default::default()
    });
    assert_eq!(
        actions(&plan(&input)),
        vec![SqlAction::RegisterAlwaysOnReplica { replica: "SQL1".into(), server_name: "SQL2".into() }]
    );
}

#[test]
fn step_4_missing_listener_stalls_with_the_fix_unless_creation_is_requested() {
    let mut input = input();
    let mut observation = converged_observation();
    observation.listener = None;
    input.catalogs.insert(AG_KEY.into(), observation);
    let output = plan(&input);
    let status = &output.availability_group_statuses[AG_KEY];
    let stalled = condition(&status.conditions, "Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "ListenerMissing"));
    assert!(stalled.message.contains("spec.listener.create"), "the message says how to fix it: {}", stalled.message);
    assert!(!actions(&output).iter().any(|a| matches!(a, SqlAction::CreateListener { .. })));

    input.availability_groups[0].spec.listener.create = Some(ListenerCreate {
        static_ips: vec![ListenerStaticIp { address: "10.0.0.50".into(), subnet_mask: "255.255.255.0".into() }],
    });
    let actions = actions(&plan(&input));
    assert_eq!(
        actions.first(),
        Some(&SqlAction::CreateListener {
            replica: "SQL1".into(),
            name: "agl-ssis".into(),
            port: 1433,
            static_ips: vec![("10.0.0.50".into(), "255.255.255.0".into())],
        })
    );
}

#[test]
fn pitfall_9_sql_authentication_disabled_is_stalled_with_the_fix() {
    let mut input = input();
    let mut observation = converged_observation();
    observation.replicas[1].sql_auth_enabled = false;
    input.catalogs.insert(AG_KEY.into(), observation);
    let output = plan(&input);
    let stalled = condition(&output.availability_group_statuses[AG_KEY].conditions, "Stalled");
    assert_eq!(stalled.reason, "SqlAuthenticationDisabled");
    assert!(stalled.message.contains("SQL2") && stalled.message.contains("SQL Server and Windows Authentication mode"));
}

#[test]
fn failover_follow_up_records_the_time_and_repairs_the_new_primary() {
    let mut world = World::new(input());
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    world.pass();
    // SQL2 becomes primary; its DMK is not encrypted by its service master key yet (error 15581).
    let observation = world.input.catalogs.get_mut(AG_KEY).expect("observation");
    observation.primary = Some("SQL2".into());
    observation.replicas[0].role = "SECONDARY".into();
    observation.replicas[1].role = "PRIMARY".into();
    observation.ssisdb.as_mut().expect("ssisdb").master_key_encrypted_by_server = false;
    let output = world.pass();
    let status = &output.availability_group_statuses[AG_KEY];
    assert_eq!(status.primary_replica.as_deref(), Some("SQL2"));
    assert_eq!(status.last_failover_time.as_deref(), Some(now().to_string().as_str()));
    assert!(output.events.iter().any(|e| e.reason == "FailoverDetected" && e.warning));
    assert!(actions(&output).contains(&SqlAction::EncryptMasterKeyByServiceKey {
        replica: "SQL2".into(),
        password: SecretValue::CatalogPassword
    }));
}

#[test]
fn pitfall_3_worker_cert_trusted_on_every_master_node() {
    let output = World::new(input()).converge(6);
    let worker_thumbprint =
        output.host_configs["wk-1"].worker_settings.clone().expect("worker settings").worker_https_cert_thumbprint;
    for master in ["sql-1", "sql-2"] {
        assert!(
            output.host_configs[master].certificates.iter().any(|c| c.thumbprint == worker_thumbprint
                && c.store == CertStore::Root
                && c.ensure == Ensure::Present),
            "worker certificate missing from Root on {master}"
        );
    }
    let own = output.host_configs["wk-1"]
        .certificates
        .iter()
        .find(|c| c.thumbprint == worker_thumbprint && c.store == CertStore::My)
        .expect("worker certificate in My");
    // Pitfall 4: the worker service account can read its key.
    assert_eq!(own.private_key_readers, vec![r"NT Service\SSISScaleOutWorker160".to_string()]);
}

#[test]
fn step_8_5_worker_settings_and_restart_once_trusted_on_every_master() {
    let mut world = World::new(input());
    world.silent.insert("sql-2".into());
    let output = world.converge(6);
    let worker = &output.host_configs["wk-1"];
    let settings = worker.worker_settings.clone().expect("settings");
    assert_eq!(settings.master_endpoint, "https://ssis-master.corp.example.com:8391");
    let service = worker.services.iter().find(|s| s.role == ServiceRole::ScaleOutWorker).expect("service");
    assert_eq!(service.restart_token, None, "sql-2 has not trusted the worker yet");
    world.silent.clear();
    let output = world.converge(6);
    let service = output.host_configs["wk-1"]
        .services
        .iter()
        .find(|s| s.role == ServiceRole::ScaleOutWorker)
        .cloned()
        .expect("service");
    assert!(service.restart_token.is_some(), "a restart is requested once every master trusts the worker");
}

#[test]
fn pitfall_14_worker_enabled_only_after_registration() {
    let mut world = World::new(input());
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    let output = world.converge(6);
    assert!(!actions(&output).iter().any(|a| matches!(a, SqlAction::EnableWorkerAgent { .. })));
    let node = &output.worker_statuses["ssis/wk-1"].nodes[0];
    assert_eq!(node.phase, WorkerPhase::Registering);

    // The worker registers itself, disabled (reference §5.4).
    world.input.catalogs.get_mut(AG_KEY).expect("observation").ssisdb.as_mut().expect("ssisdb").worker_agents =
        vec![registered_row("wk-1", false)];
    let output = world.pass();
    assert!(
        actions(&output)
            .contains(&SqlAction::EnableWorkerAgent { replica: "SQL1".into(), worker_agent_id: agent_id("wk-1") })
    );
    assert_eq!(output.worker_statuses["ssis/wk-1"].nodes[0].phase, WorkerPhase::Enabling);

    world.input.catalogs.get_mut(AG_KEY).expect("observation").ssisdb.as_mut().expect("ssisdb").worker_agents =
        vec![registered_row("wk-1", true)];
    let output = world.pass();
    assert!(actions(&output).is_empty());
    assert_eq!(output.worker_statuses["ssis/wk-1"].nodes[0].phase, WorkerPhase::Ready);
    assert_eq!(condition(&output.worker_statuses["ssis/wk-1"].conditions, "Ready").status, "True");
}

#[test]
fn step_8_8_worker_properties_substitute_the_node_name() {
    let mut world = World::new(input());
    world.input.workers[0].spec.description = Some("ETL".into());
    world.input.workers[0].spec.tags = vec!["etl".into(), "big".into()];
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    world.converge(6);
    let mut row = registered_row("wk-1", true);
    row.display_name = Some("WK-1".into());
    world.input.catalogs.get_mut(AG_KEY).expect("observation").ssisdb.as_mut().expect("ssisdb").worker_agents =
        vec![row];
    let actions = actions(&world.pass());
    let property = |property: &str, value: &str| SqlAction::SetWorkerAgentProperty {
        replica: "SQL1".into(),
        worker_agent_id: agent_id("wk-1"),
        property: property.into(),
        value: value.into(),
    };
    assert!(actions.contains(&property("DisplayName", "Worker wk-1")));
    assert!(actions.contains(&property("Description", "ETL")));
    assert!(actions.contains(&property("Tags", "etl,big")));
}

#[test]
fn pool_enrolls_new_matching_nodes_and_removes_nodes_that_stop_matching() {
    let mut input = input();
    input.workers = vec![pool("etl", ("pool", "etl"))];
    let mut labelled = windows_node("etl-1");
    labelled.labels.insert("pool".into(), "etl".into());
    input.nodes.push(labelled);
    let mut world = World::new(input);
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    world.converge(6);
    let mut second = windows_node("etl-2");
    second.labels.insert("pool".into(), "etl".into());
    world.input.nodes.push(second);
    let output = world.converge(6);
    let nodes: Vec<&str> = output.worker_statuses["ssis/etl"].nodes.iter().map(|n| n.node_name.as_str()).collect();
    assert_eq!(nodes, vec!["etl-1", "etl-2"], "a node labelled later joins the pool");

    // etl-1 registered and enabled; then it loses its label.
    let ssisdb = world.input.catalogs.get_mut(AG_KEY).expect("observation").ssisdb.as_mut().expect("ssisdb");
    ssisdb.worker_agents = vec![registered_row("etl-1", true)];
    world.pass();
    let thumbprint = world.input.workers[0].status.as_ref().expect("status").nodes[0]
        .certificate_thumbprint
        .clone()
        .expect("thumbprint");
    world.input.nodes.iter_mut().find(|n| n.name == "etl-1").expect("node").labels.clear();
    let output = world.pass();
    assert!(
        actions(&output)
            .contains(&SqlAction::DisableWorkerAgent { replica: "SQL1".into(), worker_agent_id: agent_id("etl-1") })
    );
    for master in ["sql-1", "sql-2"] {
        assert!(
            output.host_configs[master]
                .certificates
                .iter()
                .any(|c| c.thumbprint == thumbprint && c.ensure == Ensure::Absent)
        );
    }
    let removing =
        output.worker_statuses["ssis/etl"].nodes.iter().find(|n| n.node_name == "etl-1").expect("still listed");
    assert_eq!(removing.phase, WorkerPhase::Removing);
    let stopped =
        output.host_configs["etl-1"].services.iter().find(|s| s.role == ServiceRole::ScaleOutWorker).expect("service");
    assert_eq!(stopped.state, ServiceRunState::Stopped);

    // The catalog confirms; the agents applied: the node is dropped from the status.
    world.input.catalogs.get_mut(AG_KEY).expect("observation").ssisdb.as_mut().expect("ssisdb").worker_agents =
        vec![registered_row("etl-1", false)];
    let output = world.pass();
    assert!(!output.worker_statuses["ssis/etl"].nodes.iter().any(|n| n.node_name == "etl-1"));
}

#[test]
fn deleted_worker_is_finalizable_only_after_disable_and_untrust_on_every_master() {
    let mut world = World::new(input());
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    world.converge(6);
    world.input.catalogs.get_mut(AG_KEY).expect("observation").ssisdb.as_mut().expect("ssisdb").worker_agents =
        vec![registered_row("wk-1", true)];
    world.converge(3);
    world.input.workers[0].metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    world.silent.insert("sql-2".into());
    let output = world.pass();
    assert!(!output.finalizable.contains("ssis/wk-1"));
    assert!(actions(&output).iter().any(|a| matches!(a, SqlAction::DisableWorkerAgent { .. })));
    world.input.catalogs.get_mut(AG_KEY).expect("observation").ssisdb.as_mut().expect("ssisdb").worker_agents =
        vec![registered_row("wk-1", false)];
    let output = world.pass();
    assert!(!output.finalizable.contains("ssis/wk-1"), "sql-2 has not removed the worker certificate yet");
    world.silent.clear();
    world.pass();
    let output = world.pass();
    assert!(output.finalizable.contains("ssis/wk-1"));
}

#[test]
fn conflict_two_groups_on_one_node_stalls_both_and_the_node_gets_no_master_items() {
    let mut input = input();
    let mut second = master_group();
    second.metadata = meta("other");
    second.spec.nodes = vec!["sql-2".into()];
    second.spec.master_service.dns_name = "other-master.corp.example.com".into();
    input.master_groups.push(second);
    let output = World::new(input).converge(4);
    for key in [GROUP_KEY, "ssis/other"] {
        let stalled = condition(&output.master_group_statuses[key].conditions, "Stalled");
        assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "MasterNodeConflict"), "{key}");
        assert!(stalled.message.contains("sql-2"));
    }
    let sql2 = output.host_configs.get("sql-2");
    assert!(sql2.is_none_or(|spec| spec.master_settings.is_none() && spec.cluster_role.is_none()));
    assert!(output.host_configs["sql-1"].master_settings.is_some(), "the other node still converges");
}

#[test]
fn conflict_different_sql_versions_on_one_node_stall_with_the_reason() {
    let mut input = input();
    let mut second = master_group();
    second.metadata = meta("old");
    second.spec.nodes = vec!["wk-1".into()];
    second.spec.sql_version = SqlVersion::V150;
    input.master_groups.push(second);
    let output = plan(&input);
    let stalled = condition(&output.worker_statuses["ssis/wk-1"].conditions, "Stalled");
    assert_eq!(stalled.reason, "SqlVersionConflict");
    assert!(!output.host_configs.contains_key("wk-1"));
}

#[test]
fn node_whose_agent_never_reports_is_named_while_the_others_converge() {
    let mut world = World::new(input());
    world.silent.insert("sql-2".into());
    let output = world.converge(6);
    let status = &output.master_group_statuses[GROUP_KEY];
    let sql2 = status.nodes.iter().find(|n| n.name == "sql-2").expect("sql-2 listed");
    assert_eq!(sql2.phase, "Unreachable");
    assert!(sql2.message.as_deref().is_some_and(|m| m.contains("sql-2")));
    assert_eq!(status.nodes.iter().find(|n| n.name == "sql-1").expect("sql-1").phase, "Ready");
    assert!(condition(&status.conditions, "Ready").message.contains("sql-2"));
}

#[test]
fn stale_heartbeat_counts_as_not_reporting() {
    let mut world = World::new(input());
    world.converge(6);
    world.input.now = now().checked_add(jiff::SignedDuration::from_mins(30)).expect("in range");
    world.silent.insert("sql-2".into());
    world.silent.insert("sql-1".into());
    world.silent.insert("wk-1".into());
    let output = world.pass();
    let node = &output.master_group_statuses[GROUP_KEY].nodes[0];
    assert_eq!(node.phase, "Unreachable");
    assert!(node.message.as_deref().is_some_and(|m| m.contains("last reported")));
}

#[test]
fn rotation_never_trusts_unserved_master_cert() {
    let mut world = World::new(input());
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    world.converge(6);
    let old =
        world.input.master_groups[0].status.as_ref().and_then(|s| s.certificate.clone()).expect("served certificate");
    // Time passes into the renewal window (validity 365 days, renew 30 days before).
    world.input.now = now().checked_add(jiff::SignedDuration::from_hours(24 * 340)).expect("in range");
    let mut phases = Vec::new();
    for _ in 0..12 {
        let output = world.pass();
        let masters_serving: Vec<String> = ["sql-1", "sql-2"]
            .iter()
            .map(|n| output.host_configs[*n].master_settings.clone().expect("settings").ssl_cert_thumbprint)
            .collect();
        let pinned =
            output.host_configs["wk-1"].worker_settings.clone().expect("settings").master_https_cert_thumbprint;
        // Every thumbprint a worker is pinned to is served by every master in the same or an earlier pass.
        let applied_serving: Vec<String> = world
            .input
            .host_configs
            .iter()
            .filter(|h| ["sql-1", "sql-2"].contains(&h.metadata.name.as_deref().unwrap_or_default()))
            .filter_map(|h| h.spec.master_settings.as_ref().map(|m| m.ssl_cert_thumbprint.clone()))
            .collect();
        if pinned != old.thumbprint {
            assert!(
                applied_serving.iter().all(|t| *t == pinned),
                "worker pinned to {pinned} while masters serve {applied_serving:?}"
            );
            assert!(masters_serving.iter().all(|t| *t == pinned));
        }
        // Whatever the masters serve, the worker trusts it in Root.
        for served in &masters_serving {
            assert!(
                output.host_configs["wk-1"]
                    .certificates
                    .iter()
                    .any(|c| &c.thumbprint == served && c.ensure == Ensure::Present)
            );
        }
        let phase = output.master_group_statuses[GROUP_KEY].rotation.as_ref().map(|r| r.phase).unwrap_or_default();
        phases.push(phase);
        if phase == RotationPhase::Idle && phases.len() > 1 {
            break;
        }
    }
    assert_eq!(
        phases,
        vec![
            RotationPhase::Idle,
            RotationPhase::TrustingNew,
            RotationPhase::DisablingWorkers,
            RotationPhase::SwitchingMasters,
            RotationPhase::SwitchingWorkers,
            RotationPhase::RemovingOld,
            RotationPhase::Idle
        ]
    );
    let new = world.input.master_groups[0].status.as_ref().and_then(|s| s.certificate.clone()).expect("certificate");
    assert_ne!(new.thumbprint, old.thumbprint);
    let final_output = world.pass();
    for node in ["sql-1", "sql-2", "wk-1"] {
        assert!(
            !final_output.host_configs[node].certificates.iter().any(|c| c.thumbprint == old.thumbprint),
            "old certificate item left on {node} after rotation"
        );
    }
}

/// Executes the enable/disable actions of a pass against the observed `catalog.worker_agents`.
fn execute_enable_actions(world: &mut World, output: &ssis_operator::plan::PlanOutput) {
    let ssisdb = world.input.catalogs.get_mut(AG_KEY).and_then(|o| o.ssisdb.as_mut()).expect("ssisdb observed");
    for action in actions(output) {
        let (id, enabled) = match action {
            SqlAction::EnableWorkerAgent { worker_agent_id, .. } => (worker_agent_id, true),
            SqlAction::DisableWorkerAgent { worker_agent_id, .. } => (worker_agent_id, false),
            _ => continue,
        };
        for row in ssisdb.worker_agents.iter_mut().filter(|r| r.worker_agent_id == id) {
            row.is_enabled = enabled;
        }
    }
}

fn wk1_enabled(world: &World) -> bool {
    world.input.catalogs[AG_KEY].ssisdb.as_ref().expect("ssisdb").worker_agents.iter().any(|r| r.is_enabled)
}

/// Reference §7 "Master cert change", pitfall 14: an enabled worker is never pinned to a
/// certificate its masters do not serve, because the group's workers are disabled before the
/// masters switch and enabled again only once they pin the new certificate.
#[test]
fn master_rotation_disables_workers_before_switching_and_enables_them_after() {
    let mut world = World::new(input());
    let mut observation = converged_observation();
    observation.ssisdb.as_mut().expect("ssisdb").worker_agents = vec![registered_row("wk-1", true)];
    world.input.catalogs.insert(AG_KEY.into(), observation);
    world.converge(6);
    assert!(wk1_enabled(&world));
    let old = world.input.master_groups[0].status.as_ref().and_then(|s| s.certificate.clone()).expect("served");
    world.input.now = now().checked_add(jiff::SignedDuration::from_hours(24 * 340)).expect("in range");
    let mut phases = Vec::new();
    let mut disable_seen_while_serving_old = false;
    let mut sql_refused = 0;
    let mut paused_message_seen = false;
    let mut paused_event_seen = false;
    let mut reenabled_in = None;
    for _ in 0..16 {
        let enabled_before = wk1_enabled(&world);
        let output = world.pass();
        let served = output.host_configs["sql-1"].master_settings.clone().expect("settings").ssl_cert_thumbprint;
        let pinned =
            output.host_configs["wk-1"].worker_settings.clone().expect("settings").master_https_cert_thumbprint;
        let phase = output.master_group_statuses[GROUP_KEY].rotation.as_ref().map(|r| r.phase).unwrap_or_default();
        let sql = actions(&output);
        let disables = sql.iter().any(|a| matches!(a, SqlAction::DisableWorkerAgent { worker_agent_id, .. } if *worker_agent_id == agent_id("wk-1")));
        let enables = sql.iter().any(|a| matches!(a, SqlAction::EnableWorkerAgent { .. }));
        if served != old.thumbprint {
            assert!(!enabled_before, "masters switched to {served} while wk-1 was observed enabled ({phase:?})");
        }
        if disables {
            assert_eq!(
                served, old.thumbprint,
                "the disable is emitted while the masters still serve the old certificate"
            );
            disable_seen_while_serving_old = true;
        }
        if matches!(
            phase,
            RotationPhase::DisablingWorkers | RotationPhase::SwitchingMasters | RotationPhase::SwitchingWorkers
        ) {
            assert!(!enables, "{phase:?}: a worker must not be enabled while masters and workers switch");
            let node = &output.worker_statuses["ssis/wk-1"].nodes[0];
            if !wk1_enabled(&world) {
                paused_message_seen |=
                    node.message.as_deref().is_some_and(|m| m.contains("disabled during master certificate rotation"));
            }
        }
        paused_event_seen |= output.events.iter().any(|e| e.reason == "WorkersPaused");
        if enables {
            assert_eq!(pinned, served, "enabled again only once wk-1 pins the served certificate");
            reenabled_in.get_or_insert(phase);
        }
        // The first two disables fail in SQL: the masters must keep serving the old certificate.
        if phase == RotationPhase::DisablingWorkers && sql_refused < 2 {
            sql_refused += 1;
            assert!(disables, "the disable is emitted again until it is observed");
        } else {
            execute_enable_actions(&mut world, &output);
        }
        if enabled_before == wk1_enabled(&world) && wk1_enabled(&world) && served != old.thumbprint {
            assert_eq!(pinned, served, "an enabled worker pins what its masters serve");
        }
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        if phase == RotationPhase::Idle && phases.len() > 1 {
            break;
        }
    }
    assert_eq!(sql_refused, 2);
    assert!(disable_seen_while_serving_old, "wk-1 was disabled before the switch");
    assert!(paused_message_seen, "the worker status says why it is disabled");
    assert!(paused_event_seen, "an event tells users the workers are paused");
    // Enabling resumes through the usual path once the workers pin the new certificate (the pass
    // that removes the old certificate changes wk-1's HostConfig, so it may wait for that first).
    assert!(
        matches!(reenabled_in, Some(RotationPhase::RemovingOld | RotationPhase::Idle)),
        "enabling resumes once workers pin the new certificate, not in {reenabled_in:?}"
    );
    assert!(wk1_enabled(&world), "wk-1 (spec.enabled) is enabled again");
    assert_eq!(
        phases,
        vec![
            RotationPhase::Idle,
            RotationPhase::TrustingNew,
            RotationPhase::DisablingWorkers,
            RotationPhase::SwitchingMasters,
            RotationPhase::SwitchingWorkers,
            RotationPhase::RemovingOld,
            RotationPhase::Idle
        ]
    );
}

#[test]
fn rotation_waits_while_a_master_node_has_not_applied_the_previous_phase() {
    let mut world = World::new(input());
    world.converge(6);
    world.input.now = now().checked_add(jiff::SignedDuration::from_hours(24 * 340)).expect("in range");
    world.pass(); // requests the new certificate
    world.silent.insert("sql-2".into());
    let output = world.pass(); // starts TrustingNew
    assert_eq!(
        output.master_group_statuses[GROUP_KEY].rotation.as_ref().map(|r| r.phase),
        Some(RotationPhase::TrustingNew)
    );
    for _ in 0..3 {
        let output = world.pass();
        let rotation = output.master_group_statuses[GROUP_KEY].rotation.clone().expect("rotation");
        assert_eq!(rotation.phase, RotationPhase::TrustingNew, "must not switch while sql-2 lacks the new certificate");
    }
}

#[test]
fn worker_certificate_rotation_trusts_on_every_master_before_switching() {
    let mut world = World::new(input());
    world.converge(6);
    let old = world.input.workers[0].status.as_ref().expect("status").nodes[0]
        .certificate_thumbprint
        .clone()
        .expect("thumbprint");
    world.input.now = now().checked_add(jiff::SignedDuration::from_hours(24 * 700)).expect("in range");
    for _ in 0..10 {
        let output = world.pass();
        let presented =
            output.host_configs["wk-1"].worker_settings.clone().expect("settings").worker_https_cert_thumbprint;
        if presented != old {
            for master in ["sql-1", "sql-2"] {
                let applied =
                    world.input.host_configs.iter().find(|h| h.metadata.name.as_deref() == Some(master)).is_some_and(
                        |h| {
                            h.spec.certificates.iter().any(|c| c.thumbprint == presented && c.ensure == Ensure::Present)
                        },
                    );
                assert!(applied, "worker presents {presented} before {master} trusts it");
            }
        }
    }
    let node = world.input.workers[0].status.as_ref().expect("status").nodes[0].clone();
    assert_ne!(node.certificate_thumbprint.as_deref(), Some(old.as_str()), "rotation completed");
    assert!(node.certificate_rotation.is_none());
}

#[test]
fn converged_system_is_stable_with_no_actions_and_identical_status() {
    let mut world = World::new(input());
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    world.input.catalogs.get_mut(AG_KEY).expect("observation").ssisdb.as_mut().expect("ssisdb").worker_agents =
        vec![registered_row("wk-1", true)];
    let first = world.converge(8);
    let second = world.pass();
    assert_eq!(first.host_configs, second.host_configs);
    assert_eq!(first.master_group_statuses, second.master_group_statuses);
    assert_eq!(first.worker_statuses, second.worker_statuses);
    assert_eq!(first.availability_group_statuses, second.availability_group_statuses);
    assert!(second.sql_actions.values().all(Vec::is_empty));
    assert!(second.certificate_requests.is_empty());
    for (key, status) in &second.master_group_statuses {
        assert_eq!(condition(&status.conditions, "Ready").status, "True", "{key}: {:?}", status.conditions);
    }
    assert_eq!(condition(&second.worker_statuses["ssis/wk-1"].conditions, "Ready").status, "True");
    assert_eq!(condition(&second.availability_group_statuses[AG_KEY].conditions, "Ready").status, "True");
    let group = &second.master_group_statuses[GROUP_KEY];
    for detail in ["CertificateReady", "ClusterRoleReady", "CatalogReady"] {
        assert_eq!(condition(&group.conditions, detail).status, "True", "{detail}");
    }
    let ag = &second.availability_group_statuses[AG_KEY];
    for detail in ["ListenerReady", "CatalogKeyReady", "LoggingLoginReady"] {
        assert_eq!(condition(&ag.conditions, detail).status, "True", "{detail}");
    }
    assert_eq!(group.active_node.as_deref(), Some("sql-1"), "the role owner's computer name maps back to its node");
}

#[test]
fn unmanaged_cluster_role_that_does_not_exist_stalls_with_the_fix() {
    let mut input = input();
    input.master_groups[0].spec.cluster_role.manage = false;
    let mut world = World::new(input);
    world.converge(4);
    for host in &mut world.input.host_configs {
        if let Some(role) = host.status.as_mut().and_then(|s| s.cluster_role.as_mut()) {
            role.exists = false;
        }
    }
    let output = plan(&world.input);
    let status = &output.master_group_statuses[GROUP_KEY];
    let stalled = condition(&status.conditions, "Stalled");
    assert_eq!(stalled.reason, "ClusterRoleMissing");
    assert!(stalled.message.contains("Add-ClusterGenericServiceRole"));
    assert!(
        output.host_configs["sql-1"].cluster_role.as_ref().is_some_and(|r| !r.create),
        "never created when unmanaged"
    );
}

#[test]
fn legacy_service_lists_every_replica_and_restarts_on_change() {
    let mut input = input();
    input.master_groups[0].spec.legacy_service = Some(LegacyServiceSettings {
        additional_folders: vec![LegacyFolder {
            name: "File System".into(),
            server_name: None,
            store_path: Some(r"..\Packages".into()),
        }],
        ..Default::default()
    });
    input.master_groups[0].spec.disable_trusted_issuer_list = true;
    let output = World::new(input).converge(4);
    for node in ["sql-1", "sql-2"] {
        let spec = &output.host_configs[node];
        let legacy = spec.legacy_service_config.clone().expect("legacy config on every master node");
        let names: Vec<&str> = legacy.folders.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["MSDB-SQL1", "MSDB-SQL2", "File System"]);
        assert_eq!(legacy.registry_pointer, RegistryPointerMode::Auto);
        let service = spec.services.iter().find(|s| s.role == ServiceRole::LegacySsisService).expect("MsDtsServer");
        assert_eq!(service.restart_on_change_of, vec!["legacyServiceConfig".to_string()]);
        let schannel = spec
            .registry_values
            .iter()
            .find(|r| r.value_name.as_deref() == Some("SendTrustedIssuerList"))
            .expect("schannel");
        assert_eq!((schannel.type_, schannel.data.as_str()), (RegistryValueType::DWord, "0"));
    }
}

#[test]
fn planner_never_panics_on_empty_or_dangling_specs() {
    let mut input = input();
    input.availability_groups[0].spec.replicas.clear();
    input.master_groups[0].spec.nodes.clear();
    input.master_groups[0].spec.certificate = CertificateSource::default();
    let mut dangling = worker("dangling", "nowhere");
    dangling.spec.master_group_ref.name = "missing".into();
    let mut both = worker("both", "wk-1");
    both.spec.node_selector = Some(Default::default());
    let mut empty = ScaleOutWorker::new("empty", Default::default());
    empty.metadata.namespace = None;
    input.workers.extend([dangling, both, empty]);
    input.secrets.clear();
    input.catalogs.insert(AG_KEY.into(), Default::default());
    let output = plan(&input);
    let stalled = |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        condition(conditions, "Stalled").status == "True"
    };
    assert!(stalled(&output.availability_group_statuses[AG_KEY].conditions));
    assert!(stalled(&output.master_group_statuses[GROUP_KEY].conditions));
    assert_eq!(condition(&output.worker_statuses["ssis/dangling"].conditions, "Stalled").reason, "MasterGroupNotFound");
    assert_eq!(condition(&output.worker_statuses["ssis/both"].conditions, "Stalled").reason, "InvalidNodeSelection");
    assert!(output.worker_statuses.contains_key("default/empty"));
}

#[test]
fn statuses_carry_observed_generation_and_never_secret_values() {
    let mut input = input();
    input.master_groups[0].metadata.generation = Some(7);
    let output = plan(&input);
    let status = &output.master_group_statuses[GROUP_KEY];
    assert_eq!(status.observed_generation, Some(7));
    assert!(status.conditions.iter().all(|c| c.observed_generation == Some(7)));
    let text = format!("{output:?}");
    for fingerprint in ["f-admin", "f-catalog", "f-master"] {
        assert!(!text.contains(fingerprint), "secret metadata {fingerprint} leaked into the plan");
    }
}

#[test]
fn tls_secret_content_change_rotates_the_master_certificate_keeping_both_secrets() {
    let mut input = input();
    input.master_groups[0].spec.certificate =
        CertificateSource { secret_ref: Some(SecretRef { name: "master-tls".into() }), generate: None };
    input.secrets.insert(
        "ssis/master-tls".into(),
        ssis_operator::plan::SecretMeta {
            keys: ["tls.crt".to_string(), "tls.key".to_string()].into(),
            fingerprint: "aaaaaaaaaaaaaaaa-v1".into(),
        },
    );
    let mut world = World::new(input);
    world.converge(6);
    let before = world.input.master_groups[0].status.clone().and_then(|s| s.certificate).expect("certificate in use");
    let stable = world.pass();
    assert!(stable.certificate_requests.is_empty(), "an unchanged TLS Secret is not converted again");

    // cert-manager renews the certificate: the Secret's content changes.
    world.input.secrets.get_mut("ssis/master-tls").expect("secret").fingerprint = "bbbbbbbbbbbbbbbb-v2".into();
    let output = world.pass();
    assert!(output.certificate_requests.iter().any(|r| matches!(
        &r.source,
        ssis_operator::plan::CertificateRequestSource::FromTlsSecret { secret } if secret == "ssis/master-tls"
    )));
    let output = world.pass();
    let rotation = output.master_group_statuses[GROUP_KEY].rotation.clone().expect("rotation started");
    assert_eq!(rotation.phase, RotationPhase::TrustingNew);
    assert_eq!(rotation.from_thumbprint.as_deref(), Some(before.thumbprint.as_str()));
    let old_secret = before.host_secret_name.expect("secret name");
    assert!(output.retained_host_secrets.contains(&old_secret), "the served certificate's Secret is kept");
    assert!(output.retained_host_secrets.contains(&rotation.to_host_secret_name.expect("new secret")));
}

#[test]
fn duplicate_agent_id_from_a_cloned_image_fails_the_node_with_the_fix() {
    let mut input = input();
    input.workers.push(worker("wk-2", "wk-2"));
    input.nodes.push(windows_node("wk-2"));
    let mut world = World::new(input);
    world.input.catalogs.insert(AG_KEY.into(), converged_observation());
    world.converge(6);
    let host = world.input.host_configs.iter_mut().find(|h| h.metadata.name.as_deref() == Some("wk-2")).expect("wk-2");
    let settings = host.status.as_mut().and_then(|s| s.worker_settings.as_mut()).expect("worker settings observed");
    // Windows GUIDs compare without case: a lower-case copy is the same AgentId.
    settings.values.insert("AgentId".into(), agent_id("wk-1").to_ascii_lowercase());
    let output = plan(&world.input);
    let node = &output.worker_statuses["ssis/wk-2"].nodes[0];
    assert_eq!(node.phase, WorkerPhase::Failed);
    assert!(node.message.as_deref().is_some_and(|m| m.contains("wk-1") && m.contains("AgentId")));
    assert_eq!(condition(&output.worker_statuses["ssis/wk-2"].conditions, "Stalled").reason, "DuplicateAgentId");
}

// Rules the SsisdbAvailabilityGroup CRD enforced with nested CEL macros until the API server
// refused them as over its cost budget: the planner stalls such a spec and runs nothing in SQL.

/// The example input observed with Always On support missing, so a valid spec has SQL to run.
fn input_with_sql_to_run() -> ssis_operator::plan::PlanInput {
    let mut input = input();
    let mut observation = converged_observation();
    observation.ssisdb.as_mut().expect("ssisdb").always_on_replicas.clear();
    input.catalogs.insert(AG_KEY.into(), observation);
    assert!(!actions(&plan(&input)).is_empty(), "a valid spec with missing Always On support has SQL to run");
    input
}

#[test]
fn two_replicas_on_one_sql_endpoint_stall_naming_the_field_and_run_no_sql() {
    let mut input = input_with_sql_to_run();
    input.availability_groups[0].spec.replicas[1].host = "SQL1.corp.example.com".into();
    let output = plan(&input);
    let stalled = condition(&output.availability_group_statuses[AG_KEY].conditions, "Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "DuplicateReplicaEndpoint"));
    assert!(
        stalled.message.contains("spec.replicas[1]") && stalled.message.contains("fix the host or port"),
        "names the field and the fix: {}",
        stalled.message
    );
    assert_eq!(actions(&output), vec![], "no SQL action for a spec the CRD used to refuse");

    input.availability_groups[0].spec.replicas[1].port = 1434;
    let stalled = condition(&plan(&input).availability_group_statuses[AG_KEY].conditions, "Stalled").clone();
    assert_ne!(stalled.reason, "DuplicateReplicaEndpoint", "another port is another endpoint");
}

#[test]
fn two_replicas_on_one_node_stall_naming_the_field_and_run_no_sql() {
    let mut input = input_with_sql_to_run();
    input.availability_groups[0].spec.replicas[1].node_name = Some("sql-1".into());
    let output = plan(&input);
    let stalled = condition(&output.availability_group_statuses[AG_KEY].conditions, "Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "DuplicateReplicaNode"));
    assert!(
        stalled.message.contains("spec.replicas[1].nodeName") && stalled.message.contains("sql-1"),
        "names the field and the node: {}",
        stalled.message
    );
    assert_eq!(actions(&output), vec![]);
    assert!(output.availability_group_statuses[AG_KEY].replicas.iter().all(|r| !r.catalog_key_ready));

    input.availability_groups[0].spec.replicas[1].node_name = None;
    input.availability_groups[0].spec.replicas[0].node_name = None;
    let stalled = condition(&plan(&input).availability_group_statuses[AG_KEY].conditions, "Stalled").clone();
    assert_eq!(stalled.status, "False", "replicas outside the cluster share no node: {}", stalled.message);
}

#[test]
fn legacy_folder_names_that_collide_are_dropped_and_stalled_so_the_host_config_stays_admissible() {
    let mut input = input();
    input.availability_groups[0].spec.replicas[1].name = r"SQL1\A".into();
    input.availability_groups[0].spec.replicas.push(AvailabilityReplica {
        name: "SQL1-A".into(),
        host: "sql3.corp.example.com".into(),
        port: 1433,
        node_name: None,
    });
    input.master_groups[0].spec.legacy_service = Some(Default::default());
    let output = plan(&input);
    let folders = &output.host_configs["sql-1"].legacy_service_config.as_ref().expect("legacy config").folders;
    let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["MSDB-SQL1", "MSDB-SQL1-A"], "each name once (folders is a list-map keyed by name)");
    let stalled = condition(&output.master_group_statuses[GROUP_KEY].conditions, "Stalled");
    assert!(
        output.master_group_statuses[GROUP_KEY]
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.message.contains("MSDB-SQL1-A")),
        "the collision is reported: {}",
        stalled.message
    );
}
