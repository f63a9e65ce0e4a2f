//! Dev mode's hand-off across processes: simulated Windows hosts changed by separate `ssis-agent`
//! processes, and the operator side's simulated SQL world persisted in a file, agree on worker
//! registration through the shared world directory (docs/dev-mode.md).
//!
//! Each agent step is its own process (`ssis-agent provision-sim`, `ssis-agent apply`); the
//! operator side is this test process, which reloads the SQL world from its file each time as a
//! restarted `ssis-operator run --catalog simulated --sim-state FILE` would.

#[path = "devmode_support.rs"]
mod devmode_support;

use std::path::Path;
use std::task::{Context, Poll, Waker};

use devmode_support::{Scratch, isolated, stderr, stdout};
use ssis_agent::certificates::generate_self_signed;
use ssis_agent::host::simulated::network;
use ssis_crds::*;
use ssis_operator::catalog::simulated::SqlWorld;
use ssis_operator::catalog::{
    Catalog, CatalogTarget, ReplicaEndpoint, SecretString, SecretValue, SimulatedCatalog, SqlAction,
};
use ssis_operator::cli::run::deliver_simulated_traffic;
use ssis_operator::controller::{Clock, SystemClock};

const GROUP_KEY: &str = "ssis/ssisdb";
const PRIMARY: &str = "WIN-SQL-1";
const MASTER_ACCOUNT: &str = r"CORP\svc-ssis-master";
/// The master's client access point (reference §6 step 7), in the master certificate's names.
const MASTER_DNS: &str = "ssis-master.corp.example.com";
const PFX_PASSWORD: &str = "devmode-pfx-Zq9";

/// The operator's view of the example availability group.
fn target() -> CatalogTarget {
    let replica = |name: &str, host: &str| ReplicaEndpoint { name: name.into(), host: host.into(), port: 1433 };
    CatalogTarget {
        key: GROUP_KEY.into(),
        availability_group_name: "AG_SSIS".into(),
        database_name: "SSISDB".into(),
        replicas: vec![
            replica(PRIMARY, "win-sql-1.corp.example.com"),
            replica("WIN-SQL-2", "win-sql-2.corp.example.com"),
        ],
        listener_name: "agl-ssis".into(),
        listener_port: 1433,
        admin_username: "ssis-operator".into(),
        admin_password: SecretString::new("admin-password"),
        ca_pem: None,
        insecure_skip_verify: false,
        logging_password: SecretString::new("logging-password"),
        master_service_accounts: vec![MASTER_ACCOUNT.into()],
    }
}

/// The simulated catalog never awaits, so one poll completes an action.
fn execute(catalog: &SimulatedCatalog, action: SqlAction) {
    let resolve = |_: &SecretValue| SecretString::new("not needed by this action");
    let target = target();
    let mut future = std::pin::pin!(catalog.execute(&target, &action, &resolve));
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.unwrap_or_else(|e| panic!("{action:?} failed: {e}")),
        Poll::Pending => panic!("the simulated catalog awaited something"),
    }
}

fn provision(scratch: &Scratch, node: &str, computer_name: &str, features: &str) {
    let root = scratch.join(&format!("world/hosts/{node}"));
    let output = isolated("ssis-agent", &scratch.path)
        .args(["provision-sim", "--root"])
        .arg(&root)
        .args(["--computer-name", computer_name, "--sql-version", "160", "--features", features])
        .output()
        .expect("running ssis-agent provision-sim");
    assert!(output.status.success(), "provision-sim {node}: {}", stderr(&output));
}

/// `ssis-agent apply` in its own process; returns the status it prints.
fn apply(scratch: &Scratch, node: &str, spec: HostConfigSpec) -> HostConfigStatus {
    let file = scratch.join(&format!("{node}.hostconfig.yaml"));
    let mut host_config = HostConfig::new(node, spec);
    host_config.metadata.generation = Some(1);
    std::fs::write(&file, serde_yaml_ng::to_string(&host_config).unwrap()).unwrap();
    let output = isolated("ssis-agent", &scratch.path)
        .args(["apply", "-f"])
        .arg(&file)
        .args(["--host", "simulated", "--root"])
        .arg(scratch.join(&format!("world/hosts/{node}")))
        .arg("--secrets-dir")
        .arg(scratch.join("secrets"))
        .output()
        .expect("running ssis-agent apply");
    assert!(output.status.success(), "apply {node}: {}", stderr(&output));
    #[derive(serde::Deserialize)]
    struct Printed {
        status: HostConfigStatus,
    }
    let printed: Printed = serde_yaml_ng::from_str(&stdout(&output)).expect("apply prints {status: ...} as YAML");
    printed.status
}

fn write_secret(scratch: &Scratch, secret: &str, key: &str, value: &[u8]) {
    let dir = scratch.join(&format!("secrets/{secret}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(key), value).unwrap();
}

fn assert_ready(node: &str, status: &HostConfigStatus) {
    let ready = find_condition(&status.conditions, condition_types::READY);
    assert!(ready.is_some_and(|c| c.status == "True"), "{node} not Ready: {:#?}", status);
}

fn certificate(name: &str, store: CertStore, thumbprint: &str, source: CertificateMaterialRef) -> HostCertificate {
    HostCertificate {
        name: name.into(),
        store,
        thumbprint: thumbprint.into(),
        ensure: Ensure::Present,
        source: Some(source),
        private_key_readers: vec![],
    }
}

fn pfx(secret: &str) -> CertificateMaterialRef {
    CertificateMaterialRef {
        secret_name: secret.into(),
        certificate_key: None,
        pfx_key: Some(host_secret_keys::PFX.into()),
        pfx_password_key: Some(host_secret_keys::PFX_PASSWORD.into()),
    }
}

fn der(secret: &str) -> CertificateMaterialRef {
    CertificateMaterialRef {
        secret_name: secret.into(),
        certificate_key: Some(host_secret_keys::CERTIFICATE_DER.into()),
        pfx_key: None,
        pfx_password_key: None,
    }
}

/// The master node of reference §6: shared certificate in Root, the worker's certificate trusted
/// (pitfall 3), SqlServerName at the listener, HTTP.SYS binding, domain account, cluster role.
fn master_spec(master_thumbprint: &str, worker_thumbprint: &str) -> HostConfigSpec {
    HostConfigSpec {
        sql_version: SqlVersion::V160,
        certificates: vec![
            certificate("master", CertStore::Root, master_thumbprint, pfx("master-cert")),
            certificate("worker-win-worker-1", CertStore::Root, worker_thumbprint, der("worker-win-worker-1")),
        ],
        master_settings: Some(MasterSettings {
            sql_server_name: "agl-ssis.corp.example.com,1433".into(),
            ssl_cert_thumbprint: master_thumbprint.into(),
            port_number: 8391,
        }),
        http_ssl_bindings: vec![HttpSslBinding {
            ip_port: "0.0.0.0:8391".into(),
            thumbprint: master_thumbprint.into(),
            cert_store: CertStore::Root,
            app_id: None,
        }],
        services: vec![HostService {
            role: ServiceRole::ScaleOutMaster,
            state: ServiceRunState::ClusterManaged,
            start_type: Some(ServiceStartType::Manual),
            logon: Some(ServiceLogon {
                username: MASTER_ACCOUNT.into(),
                password_secret_ref: SecretKeyRef {
                    name: "master-service-account".into(),
                    key: host_secret_keys::PASSWORD.into(),
                },
            }),
            restart_on_change_of: vec![
                "masterSettings".into(),
                "certificate/master".into(),
                "certificate/worker-win-worker-1".into(),
                "httpSslBinding/0.0.0.0:8391".into(),
            ],
            restart_token: None,
        }],
        cluster_role: Some(ClusterRole {
            name: "ssis-master".into(),
            service: ServiceRole::ScaleOutMaster,
            create: true,
            possible_owners: vec![PRIMARY.into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The worker node of reference §8: master certificate in Root, endpoint at the client access point.
fn worker_spec(master_thumbprint: &str, worker_thumbprint: &str) -> HostConfigSpec {
    HostConfigSpec {
        sql_version: SqlVersion::V160,
        certificates: vec![certificate("master", CertStore::Root, master_thumbprint, der("master-cert"))],
        worker_settings: Some(WorkerSettings {
            master_endpoint: format!("https://{MASTER_DNS}:8391"),
            master_https_cert_thumbprint: master_thumbprint.into(),
            worker_https_cert_thumbprint: worker_thumbprint.into(),
        }),
        services: vec![HostService {
            role: ServiceRole::ScaleOutWorker,
            state: ServiceRunState::Running,
            start_type: None,
            logon: None,
            restart_on_change_of: vec!["workerSettings".into(), "certificate/master".into()],
            restart_token: None,
        }],
        ..Default::default()
    }
}

/// The worker's setup-created certificate (reference §7), as the operator would read it.
fn worker_certificate(world: &Path, node: &str) -> Vec<u8> {
    std::fs::read(
        world.join(format!("hosts/{node}/fs/C/Program Files/Microsoft SQL Server/160/DTS/Binn/SSISScaleOutWorker.cer")),
    )
    .expect("provision-sim leaves SSISScaleOutWorker.cer in Binn")
}

fn sql_world(state_file: &Path) -> SqlWorld {
    SimulatedCatalog::open(state_file).unwrap().world(GROUP_KEY).expect("the world was saved")
}

#[test]
fn worker_changed_by_agent_processes_registers_disabled_in_the_operators_persisted_sql_world() {
    let scratch = Scratch::new("handoff");
    let world = scratch.join("world");
    let state_file = scratch.join("sql-world.json");

    // Two simulated Windows nodes as SQL Server setup leaves them, each made by its own process.
    provision(&scratch, "win-sql-1", PRIMARY, "master");
    provision(&scratch, "win-worker-1", "WIN-WORKER-1", "worker");

    // Operator side, first start: the SQL world of the availability group is created on first
    // sight, then the SQL steps that must precede registration run: Scale Out enabled (§5.3) and
    // a login for the master's domain account on the primary (pitfall 8).
    {
        let catalog = SimulatedCatalog::open(&state_file).unwrap();
        assert!(catalog.ensure_world(&target(), SecretString::new("catalog-password")));
        execute(&catalog, SqlAction::EnableScaleOut { replica: PRIMARY.into() });
        execute(&catalog, SqlAction::CreateWindowsLogin { replica: PRIMARY.into(), account: MASTER_ACCOUNT.into() });
    }
    // A restarted operator finds that world again instead of a fresh one.
    let reloaded = SimulatedCatalog::open(&state_file).unwrap();
    assert!(!reloaded.ensure_world(&target(), SecretString::new("catalog-password")), "world recreated");
    let sql = sql_world(&state_file);
    let ssisdb = sql.ssisdb.as_ref().unwrap();
    assert_eq!(ssisdb.master_properties.get("IS_SCALEOUT_ENABLED").map(String::as_str), Some("TRUE"));
    assert!(sql.replicas[0].logins.values().any(|l| l.name == MASTER_ACCOUNT && l.windows));
    assert!(ssisdb.worker_agents.is_empty());

    // Host material as the operator places it in Secrets (here files for the offline apply).
    let master = generate_self_signed(&[MASTER_DNS, "ssis-master"], &SecretString::new(PFX_PASSWORD)).unwrap();
    let worker_der = worker_certificate(&world, "win-worker-1");
    write_secret(&scratch, "master-cert", host_secret_keys::PFX, &master.pfx);
    write_secret(&scratch, "master-cert", host_secret_keys::PFX_PASSWORD, PFX_PASSWORD.as_bytes());
    write_secret(&scratch, "master-cert", host_secret_keys::CERTIFICATE_DER, &master.der);
    write_secret(&scratch, "worker-win-worker-1", host_secret_keys::CERTIFICATE_DER, &worker_der);
    write_secret(&scratch, "master-service-account", host_secret_keys::PASSWORD, b"svc-password");
    let worker_state = ssis_agent::host::simulated::SimulatedHost::open(world.join("hosts/win-worker-1"), None)
        .unwrap()
        .state()
        .unwrap();
    let worker_thumbprint = worker_state
        .certificates
        .iter()
        .find(|c| c.store == CertStore::My)
        .map(|c| c.thumbprint.clone())
        .expect("setup put the worker certificate in LocalMachine\\My");

    // Before any HostConfig: setup's defaults reach no master, so SQL hears of no worker.
    let before = network::observe(&world).unwrap();
    assert!(before.workers.is_empty(), "{before:#?}");

    // The agents apply their HostConfigs, each in its own process.
    let master_status = apply(&scratch, "win-sql-1", master_spec(&master.thumbprint, &worker_thumbprint));
    assert_ready("win-sql-1", &master_status);
    let worker_status = apply(&scratch, "win-worker-1", worker_spec(&master.thumbprint, &worker_thumbprint));
    assert_ready("win-worker-1", &worker_status);
    let agent_id = worker_status.worker_settings.as_ref().and_then(|w| w.values.get("AgentId")).cloned().unwrap();

    // Operator side again, a new load of the file: the hand-off `ssis-operator run --sim-world`
    // runs before each pass reads the shared world and delivers the heartbeats to SQL.
    let traffic = network::observe(&world).unwrap();
    assert_eq!(traffic.failures, vec![], "every connection in the world should succeed");
    assert_eq!(traffic.masters.iter().map(|m| m.machine_name.as_str()).collect::<Vec<_>>(), [PRIMARY]);
    let catalog = SimulatedCatalog::open(&state_file).unwrap();
    let reports = deliver_simulated_traffic(&catalog, &world, SystemClock.now()).unwrap();
    let report = &reports[GROUP_KEY];
    assert_eq!(report.accepted_masters, [PRIMARY], "{report:#?}");
    assert_eq!(report.accepted_workers.len(), 1, "{report:#?}");
    drop(catalog);

    // Persisted: yet another load shows the worker in catalog.worker_agents, disabled (pitfall 14).
    let sql = sql_world(&state_file);
    let workers = &sql.ssisdb.as_ref().unwrap().worker_agents;
    let row = workers.get(&agent_id.to_uppercase()).unwrap_or_else(|| panic!("{agent_id} not in {workers:#?}"));
    assert!(!row.is_enabled, "a newly registered worker must be disabled");
    assert_eq!(row.machine_name, "WIN-WORKER-1");
    assert!(row.last_online_time.is_some());
    assert_eq!(workers.len(), 1);
}
