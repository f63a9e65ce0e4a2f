//! The simulated SSISDB / availability-group model follows the documented semantics
//! (shared/reference/ssis-scale-out.md §5, §6, §9, §12).

use ssis_agent::host::simulated::traffic::{MasterHeartbeat, ScaleOutTraffic, WorkerHeartbeat};
use ssis_operator::catalog::simulated::{RESERVED_WORKER_AGENT_ID, SimulatedCatalog, WorldSetup};
use ssis_operator::catalog::{
    Catalog, CatalogError, CatalogTarget, ReplicaEndpoint, SecretString, SecretValue, SqlAction,
};

const KEY: &str = "ssis/ag";
const DMK: &str = "Catalog-Pa55";
const LOG_PW: &str = "Logging-Pa55";
const MASTER_ACCOUNT: &str = "CORP\\svc-ssis";
const WORKER_ID: &str = "a1b2c3d4-0000-4000-8000-000000000001";

fn target() -> CatalogTarget {
    CatalogTarget {
        key: KEY.into(),
        availability_group_name: "AG_SSIS".into(),
        database_name: "SSISDB".into(),
        replicas: ["NODE1", "NODE2", "NODE3"]
            .iter()
            .map(|n| ReplicaEndpoint {
                name: (*n).into(),
                host: format!("{}.corp.local", n.to_lowercase()),
                port: 1433,
            })
            .collect(),
        listener_name: "agl-ssis".into(),
        listener_port: 1433,
        admin_username: "operator".into(),
        admin_password: SecretString::new("Adm1n"),
        ca_pem: None,
        insecure_skip_verify: false,
        logging_password: SecretString::new(LOG_PW),
        master_service_accounts: vec![MASTER_ACCOUNT.into()],
    }
}

fn resolve(value: &SecretValue) -> SecretString {
    match value {
        SecretValue::LoggingPassword => SecretString::new(LOG_PW),
        SecretValue::CatalogPassword => SecretString::new(DMK),
    }
}

fn fresh() -> (SimulatedCatalog, CatalogTarget) {
    let t = target();
    (SimulatedCatalog::for_target(&t, SecretString::new(DMK)), t)
}

async fn run(sim: &SimulatedCatalog, t: &CatalogTarget, action: SqlAction) -> Result<(), CatalogError> {
    sim.execute(t, &action, &resolve).await
}

fn sql_number(result: Result<(), CatalogError>) -> u32 {
    match result {
        Err(CatalogError::Sql { number, .. }) => number,
        other => panic!("expected a SQL error, got {other:?}"),
    }
}

fn master(sql_server_name: &str) -> MasterHeartbeat {
    MasterHeartbeat {
        machine_name: "MNODE1".into(),
        sql_server_name: sql_server_name.into(),
        port: 8391,
        ssl_cert_thumbprint: "AB".repeat(20),
        service_account: MASTER_ACCOUNT.into(),
    }
}

fn worker(agent_id: &str) -> WorkerHeartbeat {
    WorkerHeartbeat {
        agent_id: agent_id.into(),
        machine_name: "WORKER1".into(),
        user_account: "NT Service\\SSISScaleOutWorker150".into(),
        via_master: "MNODE1".into(),
    }
}

fn now() -> jiff::Timestamp {
    "2026-11-22T03:00:00Z".parse().unwrap()
}

/// Bring the fresh world to the point where masters are accepted: Scale Out enabled, master
/// login on every replica.
async fn converge_basics(sim: &SimulatedCatalog, t: &CatalogTarget) {
    run(sim, t, SqlAction::EnableScaleOut { replica: "NODE1".into() }).await.unwrap();
    for r in ["NODE1", "NODE2", "NODE3"] {
        run(sim, t, SqlAction::CreateWindowsLogin { replica: r.into(), account: MASTER_ACCOUNT.into() }).await.unwrap();
    }
    run(sim, t, SqlAction::GrantSsisAdmin { replica: "NODE1".into(), account: MASTER_ACCOUNT.into() }).await.unwrap();
}

#[tokio::test]
async fn fresh_world_looks_like_the_manual_setup() {
    let (sim, t) = fresh();
    let obs = sim.observe(&t).await.unwrap();
    assert_eq!(obs.primary.as_deref(), Some("NODE1"));
    assert!(obs.availability_group_exists && obs.database_in_group);
    assert_eq!(obs.listener, Some(("agl-ssis".into(), Some(1433))));
    assert_eq!(obs.replicas.iter().map(|r| r.role.as_str()).collect::<Vec<_>>(), ["PRIMARY", "SECONDARY", "SECONDARY"]);
    assert!(obs.replicas.iter().all(|r| r.reachable && r.sql_auth_enabled && !r.master_key_password_stored));
    assert!(obs.replicas.iter().all(|r| r.logging_login_sid.is_none()));
    let ssisdb = obs.ssisdb.unwrap();
    assert!(ssisdb.master_key_encrypted_by_server);
    assert_eq!(ssisdb.master_properties.get("IS_SCALEOUT_ENABLED").map(String::as_str), Some(""));
    assert!(ssisdb.worker_agents.is_empty() && ssisdb.always_on_replicas.is_empty());
    // Observing writes nothing.
    assert_eq!(sim.total_executed(KEY), 0);
}

#[tokio::test]
async fn enable_scaleout_creates_the_logging_login_on_the_primary_only() {
    let (sim, t) = fresh();
    run(&sim, &t, SqlAction::EnableScaleOut { replica: "NODE1".into() }).await.unwrap();
    let obs = sim.observe(&t).await.unwrap();
    let ssisdb = obs.ssisdb.unwrap();
    assert_eq!(ssisdb.master_properties["IS_SCALEOUT_ENABLED"], "TRUE");
    assert_eq!(ssisdb.master_properties["CLUSTER_LOGDB_SERVER"], "NODE1");
    let sid = obs.replicas[0].logging_login_sid.clone().unwrap();
    assert!(sid.starts_with("0x") && sid.len() == 34, "{sid}");
    // The generated password is unknown to the operator (§5.3 step 1).
    assert!(!obs.replicas[0].logging_login_password_matches);
    assert!(obs.replicas[1].logging_login_sid.is_none());
    // Idempotent: a second run changes nothing.
    run(&sim, &t, SqlAction::EnableScaleOut { replica: "NODE1".into() }).await.unwrap();
    assert_eq!(sim.observe(&t).await.unwrap().replicas[0].logging_login_sid.clone().unwrap(), sid);
    assert_eq!(sim.executed(KEY)["EnableScaleOut"], 2);
}

#[tokio::test]
async fn logging_login_steps_6_1_and_6_2_give_the_same_sid_and_password_everywhere() {
    let (sim, t) = fresh();
    run(&sim, &t, SqlAction::EnableScaleOut { replica: "NODE1".into() }).await.unwrap();
    run(
        &sim,
        &t,
        SqlAction::SetLoggingLoginPassword { replica: "NODE1".into(), password: SecretValue::LoggingPassword },
    )
    .await
    .unwrap();
    let sid = sim.observe(&t).await.unwrap().replicas[0].logging_login_sid.clone().unwrap();
    for r in ["NODE2", "NODE3"] {
        let create = SqlAction::CreateLoggingLoginWithSid {
            replica: r.into(),
            sid: sid.to_lowercase(),
            password: SecretValue::LoggingPassword,
            drop_existing: false,
        };
        run(&sim, &t, create.clone()).await.unwrap();
        // A second create without drop_existing: 15025 already exists.
        assert_eq!(sql_number(run(&sim, &t, create).await), 15025);
    }
    let obs = sim.observe(&t).await.unwrap();
    for r in &obs.replicas {
        assert_eq!(r.logging_login_sid.as_deref(), Some(sid.as_str()), "{}", r.name);
        assert!(r.logging_login_password_matches, "{}", r.name);
    }
    // A SID that is not hex fails the server-side CONVERT.
    let bad = SqlAction::CreateLoggingLoginWithSid {
        replica: "NODE2".into(),
        sid: "0xZZ".into(),
        password: SecretValue::LoggingPassword,
        drop_existing: true,
    };
    assert_eq!(sql_number(run(&sim, &t, bad).await), 8114);
    // Setting the password where the login is missing: 15151.
    let t2 = target();
    let (sim2, _) = fresh();
    assert_eq!(
        sql_number(
            run(
                &sim2,
                &t2,
                SqlAction::SetLoggingLoginPassword { replica: "NODE2".into(), password: SecretValue::LoggingPassword }
            )
            .await
        ),
        15151
    );
}

#[tokio::test]
async fn failover_to_a_replica_without_the_dmk_gives_15581_until_the_key_is_encrypted_there() {
    let (sim, t) = fresh();
    converge_basics(&sim, &t).await;
    sim.failover(KEY, "NODE2").unwrap();
    let obs = sim.observe(&t).await.unwrap();
    assert_eq!(obs.primary.as_deref(), Some("NODE2"));
    assert!(!obs.ssisdb.as_ref().unwrap().master_key_encrypted_by_server);
    let address =
        SqlAction::UpdateMasterAddress { replica: "NODE2".into(), address: "https://ssis-master:8391".into() };
    assert_eq!(sql_number(run(&sim, &t, address.clone()).await), 15581);
    // The catalog database is not readable on the old primary, now a secondary.
    let old = SqlAction::UpdateMasterAddress { replica: "NODE1".into(), address: "https://x:1".into() };
    assert_eq!(sql_number(run(&sim, &t, old).await), 976);
    // Empty password relies on a stored credential: none yet.
    let stored_only =
        SqlAction::EncryptMasterKeyByServiceKey { replica: "NODE2".into(), password: SecretValue::CatalogPassword };
    let empty = |_: &SecretValue| SecretString::new("");
    assert!(matches!(sim.execute(&t, &stored_only, &empty).await, Err(CatalogError::Sql { number: 15581, .. })));
    // A wrong password: 15313.
    let wrong = |_: &SecretValue| SecretString::new("nope");
    assert!(matches!(sim.execute(&t, &stored_only, &wrong).await, Err(CatalogError::Sql { number: 15313, .. })));
    // The right one fixes it.
    run(&sim, &t, stored_only).await.unwrap();
    assert!(sim.observe(&t).await.unwrap().ssisdb.unwrap().master_key_encrypted_by_server);
    run(&sim, &t, address).await.unwrap();
}

#[tokio::test]
async fn a_stored_dmk_password_lets_the_new_primary_open_the_key() {
    let (sim, t) = fresh();
    run(
        &sim,
        &t,
        SqlAction::StoreMasterKeyPassword { replica: "NODE3".into(), password: SecretValue::CatalogPassword },
    )
    .await
    .unwrap();
    // Idempotent (the batch is guarded).
    run(
        &sim,
        &t,
        SqlAction::StoreMasterKeyPassword { replica: "NODE3".into(), password: SecretValue::CatalogPassword },
    )
    .await
    .unwrap();
    assert!(sim.observe(&t).await.unwrap().replicas[2].master_key_password_stored);
    sim.failover(KEY, "NODE3").unwrap();
    // SQL Server opens the DMK from the credential: procedures work.
    run(&sim, &t, SqlAction::UpdateMasterAddress { replica: "NODE3".into(), address: "https://m:8391".into() })
        .await
        .unwrap();
    // And the empty-password form of the fix uses the stored credential.
    let empty = |_: &SecretValue| SecretString::new("");
    let fix =
        SqlAction::EncryptMasterKeyByServiceKey { replica: "NODE3".into(), password: SecretValue::CatalogPassword };
    sim.execute(&t, &fix, &empty).await.unwrap();
    assert!(sim.observe(&t).await.unwrap().ssisdb.unwrap().master_key_encrypted_by_server);
}

#[tokio::test]
async fn master_heartbeats_need_the_listener_or_primary_name_and_a_login_on_the_primary() {
    let (sim, t) = fresh();
    // No master login yet: rejected (pitfall 8).
    let traffic =
        ScaleOutTraffic { masters: vec![master("AGL-SSIS,1433")], workers: vec![worker(WORKER_ID)], failures: vec![] };
    let report = &sim.ingest(&traffic, now())[KEY];
    assert!(report.accepted_masters.is_empty());
    assert!(report.rejected_masters[0].1.contains("no login"), "{report:?}");
    assert!(report.rejected_workers[0].1.contains("not relayed"), "{report:?}");

    converge_basics(&sim, &t).await;
    // Wrong SqlServerName (a node that is not primary): rejected.
    let wrong = ScaleOutTraffic { masters: vec![master("NODE2")], ..Default::default() };
    assert!(sim.ingest(&wrong, now())[KEY].rejected_masters[0].1.contains("neither the listener"));
    // The listener, any case: accepted; the primary's name also works.
    let report = &sim.ingest(&traffic, now())[KEY];
    assert_eq!(report.accepted_masters, ["MNODE1"]);
    assert_eq!(report.accepted_workers, [WORKER_ID.to_uppercase()]);
    let fqdn = ScaleOutTraffic { masters: vec![master("agl-ssis.corp.local, 1433")], ..Default::default() };
    assert_eq!(sim.ingest(&fqdn, now())[KEY].accepted_masters, ["MNODE1"]);
    // The listener without its port, or with another port, is not the listener.
    for name in ["agl-ssis", "agl-ssis,1533"] {
        let wrong = ScaleOutTraffic { masters: vec![master(name)], ..Default::default() };
        assert!(sim.ingest(&wrong, now())[KEY].accepted_masters.is_empty(), "{name}");
    }
    let by_primary = ScaleOutTraffic { masters: vec![master("node1")], ..Default::default() };
    assert_eq!(sim.ingest(&by_primary, now())[KEY].accepted_masters, ["MNODE1"]);

    let ssisdb = sim.observe(&t).await.unwrap().ssisdb.unwrap();
    assert_eq!(ssisdb.master_properties["MACHINE_NAME"], "MNODE1");
    assert_eq!(ssisdb.master_properties["MASTER_SERVICE_PORT"], "8391");
    assert_eq!(ssisdb.master_properties["SSLCERT_THUMBPRINT"], "AB".repeat(20));
    assert_eq!(ssisdb.master_properties["LAST_ONLINE_TIME"], "2026-11-22T03:00:00Z");
    // Pitfall 14: a new worker registers disabled.
    let w = &ssisdb.worker_agents[0];
    assert_eq!(w.worker_agent_id, WORKER_ID.to_uppercase());
    assert!(!w.is_enabled);
    assert_eq!(w.machine_name, "WORKER1");
    assert_eq!(w.last_online_time.as_deref(), Some("2026-11-22T03:00:00Z"));

    // After a failover the master login must exist on the new primary too: it does (all replicas).
    sim.failover(KEY, "NODE3").unwrap();
    assert_eq!(sim.ingest(&traffic, now())[KEY].accepted_masters, ["MNODE1"]);
    // A disconnected primary accepts nothing.
    sim.disconnect(KEY, "NODE3").unwrap();
    assert!(sim.ingest(&traffic, now())[KEY].rejected_masters[0].1.contains("no reachable primary"));
}

#[tokio::test]
async fn worker_agent_procedures_follow_the_ddl() {
    let (sim, t) = fresh();
    converge_basics(&sim, &t).await;
    let traffic = ScaleOutTraffic {
        masters: vec![master("agl-ssis,1433")],
        workers: vec![worker(WORKER_ID), worker(RESERVED_WORKER_AGENT_ID)],
        failures: vec![],
    };
    let report = &sim.ingest(&traffic, now())[KEY];
    assert!(report.rejected_workers[0].1.contains("27101"), "{report:?}");

    let r = || "NODE1".to_string();
    run(&sim, &t, SqlAction::EnableWorkerAgent { replica: r(), worker_agent_id: WORKER_ID.into() }).await.unwrap();
    assert!(sim.observe(&t).await.unwrap().ssisdb.unwrap().worker_agents[0].is_enabled);
    let unknown = "00000000-0000-0000-0000-00000000abcd";
    assert_eq!(
        sql_number(run(&sim, &t, SqlAction::EnableWorkerAgent { replica: r(), worker_agent_id: unknown.into() }).await),
        27243
    );
    assert_eq!(
        sql_number(
            run(&sim, &t, SqlAction::DisableWorkerAgent { replica: r(), worker_agent_id: unknown.into() }).await
        ),
        27243
    );
    assert_eq!(
        sql_number(
            run(&sim, &t, SqlAction::DisableWorkerAgent { replica: r(), worker_agent_id: "not-a-guid".into() }).await
        ),
        8169
    );
    for (property, value) in [("DisplayName", "Worker one"), ("Description", "d"), ("Tags", "etl;fast")] {
        let set = SqlAction::SetWorkerAgentProperty {
            replica: r(),
            worker_agent_id: WORKER_ID.into(),
            property: property.into(),
            value: value.into(),
        };
        run(&sim, &t, set).await.unwrap();
    }
    let bad = SqlAction::SetWorkerAgentProperty {
        replica: r(),
        worker_agent_id: WORKER_ID.into(),
        property: "MachineName".into(),
        value: "x".into(),
    };
    assert_eq!(sql_number(run(&sim, &t, bad).await), 27101);
    let w = sim.observe(&t).await.unwrap().ssisdb.unwrap().worker_agents[0].clone();
    assert_eq!(
        (w.display_name.as_deref(), w.description.as_deref(), w.tags.as_deref(), w.machine_name.as_str()),
        (Some("Worker one"), Some("d"), Some("etl;fast"), "WORKER1")
    );
    run(&sim, &t, SqlAction::DisableWorkerAgent { replica: r(), worker_agent_id: WORKER_ID.into() }).await.unwrap();
    assert!(!sim.observe(&t).await.unwrap().ssisdb.unwrap().worker_agents[0].is_enabled);
}

#[tokio::test]
async fn always_on_registration_logdb_and_admin_users() {
    let (sim, t) = fresh();
    converge_basics(&sim, &t).await;
    for r in ["NODE1", "NODE2", "NODE1"] {
        run(&sim, &t, SqlAction::RegisterAlwaysOnReplica { replica: "NODE1".into(), server_name: r.into() })
            .await
            .unwrap();
    }
    run(
        &sim,
        &t,
        SqlAction::UpdateLogDbInfo {
            replica: "NODE1".into(),
            server_name: "agl-ssis,1433".into(),
            password: SecretValue::LoggingPassword,
        },
    )
    .await
    .unwrap();
    let obs = sim.observe(&t).await.unwrap();
    let ssisdb = obs.ssisdb.unwrap();
    assert_eq!(ssisdb.always_on_replicas, ["NODE1", "NODE2"]);
    assert_eq!(ssisdb.master_properties["CLUSTER_LOGDB_SERVER"], "agl-ssis,1433");
    assert!(!ssisdb.master_properties.contains_key("CLUSTER_LOGDB_CONNECTIONSTRING"));
    assert_eq!(ssisdb.master_account_users, [MASTER_ACCOUNT]);
    assert!(obs.replicas.iter().all(|r| r.master_account_logins == [MASTER_ACCOUNT]));
    // A user for an account without a login: 15007.
    let orphan = SqlAction::GrantSsisAdmin { replica: "NODE1".into(), account: "CORP\\nobody".into() };
    assert_eq!(sql_number(run(&sim, &t, orphan).await), 15007);
}

#[tokio::test]
async fn listener_creation_on_the_primary_only() {
    let t = target();
    let mut setup = WorldSetup::from_target(&t, SecretString::new(DMK));
    setup.listener_exists = false;
    let sim = SimulatedCatalog::new();
    sim.add_world(KEY, &setup);
    assert_eq!(sim.observe(&t).await.unwrap().listener, None);
    let create = |replica: &str| SqlAction::CreateListener {
        replica: replica.into(),
        name: "agl-ssis".into(),
        port: 1533,
        static_ips: vec![("10.0.0.50".into(), "255.255.255.0".into())],
    };
    assert_eq!(sql_number(run(&sim, &t, create("NODE2")).await), 41140);
    run(&sim, &t, create("NODE1")).await.unwrap();
    assert_eq!(sim.observe(&t).await.unwrap().listener, Some(("agl-ssis".into(), Some(1533))));
    assert_eq!(sql_number(run(&sim, &t, create("NODE1")).await), 19471);
}

#[tokio::test]
async fn disconnects_and_injected_failures() {
    let (sim, t) = fresh();
    sim.disconnect(KEY, "NODE2").unwrap();
    let obs = sim.observe(&t).await.unwrap();
    assert!(!obs.replicas[1].reachable);
    assert!(obs.replicas[1].error.as_deref().unwrap().contains("NODE2"));
    assert!(obs.replicas[0].reachable && obs.replicas[2].reachable);
    assert_eq!(obs.primary.as_deref(), Some("NODE1"));
    sim.reconnect(KEY, "NODE2").unwrap();

    // Fail the next 2 connections: a sequence of actions breaks in the middle, then recovers.
    sim.fail_next(KEY, 2).unwrap();
    let login = |r: &str| SqlAction::CreateWindowsLogin { replica: r.into(), account: MASTER_ACCOUNT.into() };
    assert!(matches!(run(&sim, &t, login("NODE1")).await, Err(CatalogError::Connect { .. })));
    assert!(matches!(run(&sim, &t, login("NODE2")).await, Err(CatalogError::Connect { .. })));
    run(&sim, &t, login("NODE3")).await.unwrap();
    // Failed connections did not execute anything.
    assert_eq!(sim.executed(KEY)["CreateWindowsLogin"], 1);

    // With the primary disconnected nobody is primary and SSISDB is not read.
    sim.disconnect(KEY, "NODE1").unwrap();
    let obs = sim.observe(&t).await.unwrap();
    assert_eq!(obs.primary, None);
    assert_eq!(obs.ssisdb, None);

    // Wrong admin credentials: login failed, without the password in the message.
    let mut bad = target();
    bad.admin_password = SecretString::new("Wr0ng-Secret");
    let obs = sim.observe(&bad).await.unwrap();
    let error = obs.replicas[2].error.clone().unwrap();
    assert!(error.contains("18456") && !error.contains("Wr0ng-Secret"), "{error}");
}

#[tokio::test]
async fn the_world_persists_to_json_and_is_shared_between_clones() {
    let dir = std::env::temp_dir().join(format!("ssis-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sql-world.json");
    let _ = std::fs::remove_file(&path);

    let t = target();
    let sim = SimulatedCatalog::open(&path).unwrap();
    sim.add_world(KEY, &WorldSetup::from_target(&t, SecretString::new(DMK)));
    let clone = sim.clone();
    run(&clone, &t, SqlAction::EnableScaleOut { replica: "NODE1".into() }).await.unwrap();
    run(
        &sim,
        &t,
        SqlAction::SetLoggingLoginPassword { replica: "NODE1".into(), password: SecretValue::LoggingPassword },
    )
    .await
    .unwrap();
    sim.failover(KEY, "NODE2").unwrap();

    // Autosaved: a "restarted process" sees the same world.
    let restarted = SimulatedCatalog::load(&path).unwrap();
    assert_eq!(restarted.world(KEY), sim.world(KEY));
    let obs = restarted.observe(&t).await.unwrap();
    assert_eq!(obs.primary.as_deref(), Some("NODE2"));
    assert!(obs.replicas[0].logging_login_password_matches);
    // No secret in the file.
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [DMK, LOG_PW, "Adm1n"] {
        assert!(!text.contains(secret), "{secret} stored in clear");
    }
    // Explicit save elsewhere round-trips too; no temp file left behind.
    let copy = dir.join("copy.json");
    sim.save(&copy).unwrap();
    assert_eq!(SimulatedCatalog::load(&copy).unwrap().world(KEY), sim.world(KEY));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn unknown_world_is_an_error() {
    let sim = SimulatedCatalog::new();
    assert!(matches!(sim.observe(&target()).await, Err(CatalogError::Other(_))));
}

#[tokio::test]
async fn ensure_world_adds_once() {
    let sim = SimulatedCatalog::new();
    let t = target();
    assert!(sim.ensure_world(&t, SecretString::new(DMK)));
    sim.failover(KEY, "NODE2").unwrap();
    assert!(!sim.ensure_world(&t, SecretString::new(DMK)));
    assert_eq!(sim.observe(&t).await.unwrap().primary.as_deref(), Some("NODE2"));
}
