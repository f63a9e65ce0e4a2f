//! The engine against simulated hosts: the HA procedure end to end, idempotence, drift repair,
//! refusals and each connectivity pitfall of reference §12.

mod common;

use common::*;
use ssis_agent::engine::{ActionKind, MapSecretSource};
use ssis_agent::host::Host;
use ssis_agent::host::simulated::{faults, network};
use ssis_crds::*;

struct Lab {
    world: World,
    secrets: MapSecretSource,
    master_thumbprint: String,
    worker_thumbprint: String,
    worker_agent_id: String,
}

/// Two master nodes (M1, M2) and one worker (W1) as setup leaves them, plus the shared master
/// certificate with the client access point name in its SANs (reference §6 step 2.2).
fn lab(test: &str, master_names: &[&str]) -> Lab {
    let world = World::new(test);
    world.provision("m1", "master");
    world.provision("m2", "master");
    let worker = world.provision("w1", "worker");
    let master = master_certificate(master_names);
    let mut secrets = MapSecretSource::new();
    add_certificate_secret(&mut secrets, "master-cert", &master);
    secrets.insert("worker-w1", host_secret_keys::CERTIFICATE_DER, read_worker_certificate(&world, "w1"));
    Lab {
        world,
        secrets,
        master_thumbprint: master.thumbprint,
        worker_thumbprint: worker.worker_certificate_thumbprint.unwrap(),
        worker_agent_id: worker.agent_id.unwrap(),
    }
}

fn converge(lab: &Lab, node: &str, spec: &HostConfigSpec) -> HostConfigStatus {
    let mut host = lab.world.host(node);
    let (status, _) = apply(&mut host, spec, &lab.secrets, None);
    status
}

#[test]
fn ha_procedure_registers_the_worker_and_survives_master_failover() {
    let lab = lab("ha", &["ssis-master", "ssis-master.corp.local"]);
    let workers = [("worker-w1", lab.worker_thumbprint.as_str())];
    let m1 = master_spec(&lab.master_thumbprint, &workers, true);
    let m2 = master_spec(&lab.master_thumbprint, &workers, false);
    let w1 = worker_spec(&lab.master_thumbprint, &lab.worker_thumbprint, "https://ssis-master.corp.local:8391");

    let s1 = converge(&lab, "m1", &m1);
    assert!(ready(&s1), "{:#?}", s1.conditions);
    let s2 = converge(&lab, "m2", &m2);
    assert!(ready(&s2), "{:#?}", s2.conditions);
    let sw = converge(&lab, "w1", &w1);
    assert!(ready(&sw), "{:#?}", sw.conditions);
    assert_eq!(sw.worker_settings.as_ref().unwrap().values["AgentId"], lab.worker_agent_id);

    // The cluster runs the master on M1 only; the worker's heartbeat reaches SSISDB through it.
    let traffic = network::observe(&lab.world.dir).unwrap();
    assert_eq!(traffic.failures, vec![]);
    assert_eq!(traffic.masters.len(), 1);
    assert_eq!(traffic.masters[0].machine_name, "M1");
    assert_eq!(traffic.masters[0].sql_server_name, "agl-ssis,1433");
    assert_eq!(traffic.workers.len(), 1);
    assert_eq!(traffic.workers[0].agent_id, lab.worker_agent_id);
    assert_eq!(traffic.workers[0].via_master, "M1");

    // Master failover: M2 has the same certificate, binding and trusts the worker (pitfall 3).
    assert_eq!(faults::move_cluster_role(&lab.world.dir, "ssis-master", None).unwrap(), "M2");
    let traffic = network::observe(&lab.world.dir).unwrap();
    assert_eq!(traffic.failures, vec![]);
    assert_eq!(traffic.masters.iter().map(|m| m.machine_name.as_str()).collect::<Vec<_>>(), ["M2"]);
    assert_eq!(traffic.workers[0].via_master, "M2");
}

#[test]
fn second_pass_on_a_converged_host_writes_nothing_and_keeps_the_status() {
    let lab = lab("idempotent", &["ssis-master"]);
    let spec = master_spec(&lab.master_thumbprint, &[("worker-w1", lab.worker_thumbprint.as_str())], true);
    let mut host = lab.world.host("m1");
    let (first, report) = apply(&mut host, &spec, &lab.secrets, None);
    assert!(ready(&first));
    assert_eq!(report.count(ActionKind::CertificateImport), 2);
    assert_eq!(report.count(ActionKind::FileWrite), 1);
    assert_eq!(report.count(ActionKind::SslBindingWrite), 1);
    assert_eq!(report.count(ActionKind::ClusterRoleCreate), 1);
    assert_eq!(report.count(ActionKind::ServiceConfigChange), 1);
    assert_eq!(
        item(&first, "masterSettings").observed.as_deref(),
        Some(
            format!("SqlServerName=agl-ssis,1433; SSLCertThumbprint={}; PortNumber=8391", lab.master_thumbprint)
                .as_str()
        )
    );
    let (second, report) = apply(&mut host, &spec, &lab.secrets, Some(&first));
    assert_eq!(report.total_writes(), 0, "{report:?}");
    assert!(second.items.iter().all(|i| i.reason.as_deref() == Some("UpToDate")), "{:#?}", second.items);
    let (third, report) = apply(&mut host, &spec, &lab.secrets, Some(&second));
    assert_eq!(report.total_writes(), 0);
    assert_eq!(third, second, "a converged pass must not change the status");
}

#[test]
fn drift_is_repaired_and_counted() {
    let lab = lab("drift", &["ssis-master.corp.local"]);
    let spec = worker_spec(&lab.master_thumbprint, &lab.worker_thumbprint, "https://ssis-master.corp.local:8391");
    let mut host = lab.world.host("w1");
    let (status, _) = apply(&mut host, &spec, &lab.secrets, None);
    assert!(ready(&status));
    let root = lab.world.root("w1");
    let settings_path = r"C:\Program Files\Microsoft SQL Server\160\DTS\Binn\WorkerSettings.config";

    // An administrator points the worker elsewhere: the file is repaired and the worker restarted.
    faults::edit_file(&root, settings_path, |text| text.replace("ssis-master.corp.local", "node1")).unwrap();
    let (status, report) = apply(&mut host, &spec, &lab.secrets, Some(&status));
    assert_eq!(report.count(ActionKind::FileWrite), 1);
    assert_eq!(report.count(ActionKind::ServiceRestart), 1);
    assert!(report.drift_repaired);
    assert_eq!(status.drift.as_ref().unwrap().repairs, 1);
    assert_eq!(status.drift.as_ref().unwrap().last_repaired_items, ["service/ScaleOutWorker", "workerSettings"]);
    let loaded = host.state().unwrap().services["SSISScaleOutWorker160"].loaded.clone().unwrap();
    assert_eq!(loaded.settings["MasterEndpoint"], "https://ssis-master.corp.local:8391");

    // The trusted master certificate is deleted: re-imported, worker restarted.
    assert!(faults::delete_certificate(&root, CertStore::Root, &lab.master_thumbprint).unwrap());
    let (status, report) = apply(&mut host, &spec, &lab.secrets, Some(&status));
    assert_eq!(report.count(ActionKind::CertificateImport), 1);
    assert_eq!(report.count(ActionKind::ServiceRestart), 1);
    assert_eq!(status.drift.as_ref().unwrap().repairs, 2);

    // The service is stopped: started again (a start reads everything, so no extra restart).
    faults::stop_service(&root, "SSISScaleOutWorker160").unwrap();
    let (status, report) = apply(&mut host, &spec, &lab.secrets, Some(&status));
    assert_eq!(report.count(ActionKind::ServiceStart), 1);
    assert_eq!(report.count(ActionKind::ServiceRestart), 0);
    assert_eq!(status.drift.as_ref().unwrap().repairs, 3);
    let (_, report) = apply(&mut host, &spec, &lab.secrets, Some(&status));
    assert_eq!(report.total_writes(), 0);
}

#[test]
fn a_settings_change_reaches_the_service_only_through_a_restart() {
    let lab = lab("restart", &["ssis-master.corp.local"]);
    let mut spec = worker_spec(&lab.master_thumbprint, &lab.worker_thumbprint, "https://ssis-master.corp.local:8391");
    spec.services[0].restart_on_change_of.clear();
    let mut host = lab.world.host("w1");
    apply(&mut host, &spec, &lab.secrets, None);
    // Without a restart trigger the file changes but the running worker keeps what it loaded.
    let state = host.state().unwrap();
    let loaded = &state.services["SSISScaleOutWorker160"].loaded.as_ref().unwrap().settings;
    assert_eq!(loaded["MasterEndpoint"], "");
    let traffic = network::observe(&lab.world.dir).unwrap();
    assert!(traffic.workers.is_empty());
    assert!(traffic.failures[0].message.starts_with("There was no endpoint listening"), "{:?}", traffic.failures);
    // A restart token asks for exactly one restart, remembered across agent restarts.
    spec.services[0].restart_token = Some("1".into());
    let starts = |host: &ssis_agent::host::simulated::SimulatedHost| {
        host.state().unwrap().services["SSISScaleOutWorker160"].starts
    };
    let before = starts(&host);
    let (_, report) = apply(&mut host, &spec, &lab.secrets, None);
    assert_eq!(report.count(ActionKind::ServiceRestart), 1);
    assert_eq!(starts(&host), before + 1);
    let loaded = host.state().unwrap().services["SSISScaleOutWorker160"].loaded.clone().unwrap().settings;
    assert_eq!(loaded["MasterEndpoint"], "https://ssis-master.corp.local:8391");
    let mut restarted_agent_host = lab.world.host("w1");
    let (_, report) = apply(&mut restarted_agent_host, &spec, &lab.secrets, None);
    assert_eq!(report.total_writes(), 0, "a restarted agent must not restart the service again");
}

#[test]
fn each_connectivity_pitfall_yields_its_documented_failure() {
    // Pitfall 1: the master certificate lacks the client access point name.
    let lab1 = lab("pitfall1", &["m1", "m2"]);
    let workers = [("worker-w1", lab1.worker_thumbprint.as_str())];
    converge(&lab1, "m1", &master_spec(&lab1.master_thumbprint, &workers, true));
    converge(&lab1, "w1", &worker_spec(&lab1.master_thumbprint, &lab1.worker_thumbprint, "https://ssis-master:8391"));
    let failure = &network::observe(&lab1.world.dir).unwrap().failures[0];
    assert!(failure.message.starts_with("Could not establish trust relationship"), "{failure:?}");
    assert!(failure.message.contains("not among the master certificate names"), "{failure:?}");

    // Pitfall 3: after failover the new owner does not trust the worker certificate.
    let lab3 = lab("pitfall3", &["ssis-master"]);
    let workers = [("worker-w1", lab3.worker_thumbprint.as_str())];
    converge(&lab3, "m1", &master_spec(&lab3.master_thumbprint, &workers, true));
    converge(&lab3, "m2", &master_spec(&lab3.master_thumbprint, &[], false));
    converge(&lab3, "w1", &worker_spec(&lab3.master_thumbprint, &lab3.worker_thumbprint, "https://ssis-master:8391"));
    assert_eq!(network::observe(&lab3.world.dir).unwrap().workers.len(), 1);
    faults::move_cluster_role(&lab3.world.dir, "ssis-master", Some("M2")).unwrap();
    let traffic = network::observe(&lab3.world.dir).unwrap();
    assert!(traffic.workers.is_empty());
    assert!(
        traffic.failures[0].message.contains("forbidden with client authentication scheme 'Anonymous'"),
        "{:?}",
        traffic.failures
    );

    // Pitfall 5: the owner's binding points at another certificate.
    faults::move_cluster_role(&lab3.world.dir, "ssis-master", Some("M1")).unwrap();
    let mut m1 = lab3.world.host("m1");
    let setup_thumbprint = m1
        .list_certificates(CertStore::Root)
        .unwrap()
        .into_iter()
        .find(|c| c.thumbprint != lab3.master_thumbprint && c.subject == "CN=M1")
        .unwrap()
        .thumbprint;
    m1.set_ssl_binding("0.0.0.0:8391", &setup_thumbprint, CertStore::Root, "{00000000-0000-0000-0000-000000000001}")
        .unwrap();
    let failure = &network::observe(&lab3.world.dir).unwrap().failures[0];
    assert!(failure.message.starts_with("An error occurred while making the HTTP request"), "{failure:?}");

    // Pitfall 2: the worker's endpoint uses a wrong port.
    converge(&lab3, "m1", &master_spec(&lab3.master_thumbprint, &workers, true));
    converge(&lab3, "w1", &worker_spec(&lab3.master_thumbprint, &lab3.worker_thumbprint, "https://ssis-master:9999"));
    let failure = &network::observe(&lab3.world.dir).unwrap().failures[0];
    assert!(
        failure.message.starts_with("There was no endpoint listening at https://ssis-master:9999/ClusterManagement/"),
        "{failure:?}"
    );

    // Pitfall 4: the worker account cannot read its certificate's private key.
    converge(&lab3, "w1", &worker_spec(&lab3.master_thumbprint, &lab3.worker_thumbprint, "https://ssis-master:8391"));
    assert_eq!(network::observe(&lab3.world.dir).unwrap().workers.len(), 1);
    let mut spec = worker_spec(&lab3.master_thumbprint, &lab3.worker_thumbprint, "https://ssis-master:8391");
    spec.services[0].logon = Some(ServiceLogon {
        username: r"CORP\svc-worker".into(),
        password_secret_ref: SecretKeyRef { name: "worker-logon".into(), key: "password".into() },
    });
    spec.services[0].restart_token = Some("logon".into());
    let mut secrets = lab3.secrets.clone();
    secrets.insert("worker-logon", "password", "Svc-Pa55");
    let mut w1 = lab3.world.host("w1");
    let (status, _) = apply(&mut w1, &spec, &secrets, None);
    assert!(!format!("{status:?}").contains("Svc-Pa55"), "the password must never reach the status");
    let failure = &network::observe(&lab3.world.dir).unwrap().failures[0];
    assert!(failure.message.starts_with("Could not establish secure channel"), "{failure:?}");
}

#[test]
fn unsafe_items_are_refused_with_the_field_and_never_executed() {
    let lab = lab("refused", &["ssis-master"]);
    let mut spec = master_spec(&lab.master_thumbprint, &[], true);
    spec.legacy_service_config = Some(LegacyServiceConfig {
        config_file_path: Some(r"D:\x\MsDtsSrvr.ini.xml".into()),
        stop_executing_packages_on_shutdown: true,
        folders: vec![],
        registry_pointer: RegistryPointerMode::Auto,
    });
    spec.registry_values.push(RegistryValue {
        name: "run-key".into(),
        key: r"SOFTWARE\Microsoft\Windows\CurrentVersion\Run".into(),
        value_name: Some("evil".into()),
        type_: RegistryValueType::String,
        data: r"C:\evil.exe".into(),
    });
    let mut host = lab.world.host("m1");
    let (status, _) = apply(&mut host, &spec, &lab.secrets, None);
    let legacy = item(&status, "legacyServiceConfig");
    assert_eq!(legacy.state, ItemState::Refused);
    assert_eq!(
        legacy.message.as_deref(),
        Some(
            r"spec.legacyServiceConfig.configFilePath 'D:\x\MsDtsSrvr.ini.xml' is outside the allowed folders [C:\Program Files\Microsoft SQL Server\160\DTS\Binn]; add the folder to the agent's --allow-root or fix the path"
        )
    );
    let run_key = item(&status, "registryValue/run-key");
    assert_eq!(run_key.state, ItemState::Refused);
    assert!(run_key.message.as_deref().unwrap().starts_with(r"spec.registryValues[0] HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Run\evil is not on the agent's registry allow-list"));
    assert!(!host.registry_key_exists(r"SOFTWARE\Microsoft\Windows\CurrentVersion\Run").unwrap());
    assert!(!lab.world.root("m1").join("fs/D").exists());
    let stalled = find_condition(&status.conditions, condition_types::STALLED).unwrap();
    assert_eq!(stalled.status, "True");
    // The other items still applied.
    assert_eq!(item(&status, "masterSettings").state, ItemState::Applied);
}

#[test]
fn material_with_another_thumbprint_is_refused() {
    let lab = lab("mismatch", &["ssis-master"]);
    let other = master_certificate(&["other"]);
    let mut spec = worker_spec(&other.thumbprint, &lab.worker_thumbprint, "https://ssis-master:8391");
    spec.certificates[0].thumbprint = other.thumbprint.clone();
    let mut host = lab.world.host("w1");
    let (status, report) = apply(&mut host, &spec, &lab.secrets, None);
    let cert = item(&status, "certificate/master");
    assert_eq!(cert.state, ItemState::Refused);
    assert_eq!(cert.reason.as_deref(), Some("ThumbprintMismatch"));
    assert!(cert.message.as_deref().unwrap().contains(&lab.master_thumbprint));
    // The settings naming the missing certificate wait instead of pointing the worker at nothing.
    assert_eq!(item(&status, "workerSettings").state, ItemState::Pending);
    assert_eq!(report.count(ActionKind::FileWrite), 0);
    assert_eq!(report.count(ActionKind::CertificateImport), 0);
}

#[test]
fn legacy_config_file_and_registry_pointer() {
    let world = World::new("legacy");
    world.provision("n1", "legacy");
    let spec = HostConfigSpec {
        sql_version: SqlVersion::V160,
        legacy_service_config: Some(LegacyServiceConfig {
            config_file_path: None,
            stop_executing_packages_on_shutdown: true,
            folders: vec![
                LegacyFolder { name: "MSDB-NODE1".into(), server_name: Some("NODE1".into()), store_path: None },
                LegacyFolder { name: "MSDB-NODE2".into(), server_name: Some(r"NODE2\SSIS".into()), store_path: None },
            ],
            registry_pointer: RegistryPointerMode::Auto,
        }),
        services: vec![HostService {
            role: ServiceRole::LegacySsisService,
            state: ServiceRunState::Running,
            restart_on_change_of: vec!["legacyServiceConfig".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut host = world.host("n1");
    let secrets = MapSecretSource::new();
    let (status, report) = apply(&mut host, &spec, &secrets, None);
    assert!(ready(&status), "{:#?}", status.items);
    assert_eq!(report.count(ActionKind::FileWrite), 1);
    assert_eq!(report.count(ActionKind::RegistryWrite), 0, "setup already wrote the key-form pointer");
    assert_eq!(report.count(ActionKind::ServiceRestart), 1);
    let loaded = host.state().unwrap().services["MsDtsServer160"].loaded.clone().unwrap().settings;
    assert_eq!(loaded["TopLevelFolders"], "MSDB-NODE1;MSDB-NODE2");
    assert!(binn(&world.root("n1")).join("MsDtsSrvr.ini.xml.bak").exists(), "the previous content is kept");
    let (_, report) = apply(&mut host, &spec, &secrets, Some(&status));
    assert_eq!(report.total_writes(), 0);
}

#[test]
fn a_missing_settings_file_is_recreated_from_the_documented_defaults() {
    let lab = lab("missing-file", &["ssis-master"]);
    let spec = master_spec(&lab.master_thumbprint, &[], true);
    let path = binn(&lab.world.root("m1")).join("MasterSettings.config");
    std::fs::remove_file(&path).unwrap();
    let mut host = lab.world.host("m1");
    let (status, report) = apply(&mut host, &spec, &lab.secrets, None);
    assert_eq!(report.count(ActionKind::FileWrite), 1);
    assert_eq!(item(&status, "masterSettings").state, ItemState::Applied);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"CleanupCompletedJobsIntervalInMs\": 43200000"), "{text}");
    assert!(text.contains("\"SqlServerName\": \"agl-ssis,1433\""), "{text}");
    assert_eq!(status.master_settings.as_ref().unwrap().format, "Json");
}
