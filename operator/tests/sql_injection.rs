//! Hostile names and passwords travel as data: through every parameterised path of the
//! simulated model they round-trip exactly, and on the tiberius side the batch text never changes.

use ssis_agent::host::simulated::traffic::{MasterHeartbeat, ScaleOutTraffic, WorkerHeartbeat};
use ssis_operator::catalog::batches::{SqlParam, action_calls};
use ssis_operator::catalog::simulated::SimulatedCatalog;
use ssis_operator::catalog::{Catalog, CatalogTarget, ReplicaEndpoint, SecretString, SecretValue, SqlAction};

const KEY: &str = "ssis/ag";
const WORKER_ID: &str = "A1B2C3D4-0000-4000-8000-000000000001";

fn hostile_values() -> Vec<String> {
    vec![
        "'; DROP LOGIN x --".into(),
        "]; DROP DATABASE SSISDB; --".into(),
        "a'b\"c[d]e;f--g/*h*/".into(),
        "N''''''".into(),
        "Zürich – 東京 – 🚀 – \u{202e}rtl".into(),
        "x".repeat(4096),
        format!("{}'];--", "é".repeat(2048)),
    ]
}

fn target(logging_password: &str, accounts: Vec<String>) -> CatalogTarget {
    CatalogTarget {
        key: KEY.into(),
        availability_group_name: "AG_SSIS".into(),
        database_name: "SSISDB".into(),
        replicas: ["NODE1", "NODE2"]
            .iter()
            .map(|n| ReplicaEndpoint { name: (*n).into(), host: "h".into(), port: 1433 })
            .collect(),
        listener_name: "agl-ssis".into(),
        listener_port: 1433,
        admin_username: "operator".into(),
        admin_password: SecretString::new("'; SHUTDOWN --"),
        ca_pem: None,
        insecure_skip_verify: false,
        logging_password: SecretString::new(logging_password),
        master_service_accounts: accounts,
    }
}

#[tokio::test]
async fn hostile_passwords_work_with_pwdcompare_and_the_dmk() {
    for password in hostile_values() {
        let t = target(&password, vec![]);
        let sim = SimulatedCatalog::for_target(&t, SecretString::new(password.clone()));
        let resolve = |_: &SecretValue| SecretString::new(password.clone());
        let run = |action: SqlAction| {
            let sim = sim.clone();
            let t = t.clone();
            let password = password.clone();
            async move { sim.execute(&t, &action, &move |_: &SecretValue| SecretString::new(password.clone())).await }
        };
        run(SqlAction::EnableScaleOut { replica: "NODE1".into() }).await.unwrap();
        run(SqlAction::SetLoggingLoginPassword { replica: "NODE1".into(), password: SecretValue::LoggingPassword })
            .await
            .unwrap();
        let sid = sim.observe(&t).await.unwrap().replicas[0].logging_login_sid.clone().unwrap();
        run(SqlAction::CreateLoggingLoginWithSid {
            replica: "NODE2".into(),
            sid,
            password: SecretValue::LoggingPassword,
            drop_existing: false,
        })
        .await
        .unwrap();
        run(SqlAction::StoreMasterKeyPassword { replica: "NODE2".into(), password: SecretValue::CatalogPassword })
            .await
            .unwrap();
        run(SqlAction::UpdateLogDbInfo {
            replica: "NODE1".into(),
            server_name: password.clone(),
            password: SecretValue::LoggingPassword,
        })
        .await
        .unwrap();
        let obs = sim.observe(&t).await.unwrap();
        assert!(obs.replicas.iter().all(|r| r.logging_login_password_matches), "PWDCOMPARE after {password:?}");
        assert_eq!(obs.ssisdb.unwrap().master_properties["CLUSTER_LOGDB_SERVER"], password);
        // A slightly different password does not match.
        let other = target(&format!("{password} "), vec![]);
        assert!(sim.observe(&other).await.unwrap().replicas.iter().all(|r| !r.logging_login_password_matches));
        // The hostile DMK password opens the key on the new primary.
        sim.failover(KEY, "NODE2").unwrap();
        sim.execute(
            &t,
            &SqlAction::EncryptMasterKeyByServiceKey {
                replica: "NODE2".into(),
                password: SecretValue::CatalogPassword,
            },
            &resolve,
        )
        .await
        .unwrap();
        assert!(sim.observe(&t).await.unwrap().ssisdb.unwrap().master_key_encrypted_by_server);
    }
}

#[tokio::test]
async fn hostile_names_and_values_are_stored_as_is() {
    let values = hostile_values();
    // Windows account names are at most 128 characters (sysname): longer ones are refused.
    let accounts: Vec<String> =
        values.iter().filter(|v| v.chars().count() <= 128).map(|v| format!("CORP\\{v}")).collect();
    let t = target("pw", accounts.clone());
    let sim = SimulatedCatalog::for_target(&t, SecretString::new("dmk"));
    let resolve = |_: &SecretValue| SecretString::new("pw");
    let exec = |action: SqlAction| {
        let sim = sim.clone();
        let t = t.clone();
        async move { sim.execute(&t, &action, &resolve).await }
    };
    exec(SqlAction::EnableScaleOut { replica: "NODE1".into() }).await.unwrap();
    for account in &accounts {
        for r in ["NODE1", "NODE2"] {
            exec(SqlAction::CreateWindowsLogin { replica: r.into(), account: account.clone() }).await.unwrap();
        }
        exec(SqlAction::GrantSsisAdmin { replica: "NODE1".into(), account: account.clone() }).await.unwrap();
    }
    let too_long = format!("CORP\\{}", "x".repeat(4096));
    let err = exec(SqlAction::CreateWindowsLogin { replica: "NODE1".into(), account: too_long }).await.unwrap_err();
    assert!(err.to_string().contains("longer than 128"), "{err}");

    // Workers arrive by heartbeat through an accepted master whose account is hostile.
    let traffic = ScaleOutTraffic {
        masters: vec![MasterHeartbeat {
            machine_name: "M1".into(),
            sql_server_name: "agl-ssis,1433".into(),
            port: 8391,
            ssl_cert_thumbprint: "00".repeat(20),
            service_account: accounts[0].clone(),
        }],
        workers: vec![WorkerHeartbeat {
            agent_id: WORKER_ID.into(),
            machine_name: values[1].clone(),
            user_account: values[0].clone(),
            via_master: "M1".into(),
        }],
        failures: vec![],
    };
    assert_eq!(sim.ingest(&traffic, jiff::Timestamp::UNIX_EPOCH)[KEY].accepted_workers, [WORKER_ID]);

    for value in &values {
        for property in ["DisplayName", "Description", "Tags"] {
            exec(SqlAction::SetWorkerAgentProperty {
                replica: "NODE1".into(),
                worker_agent_id: WORKER_ID.into(),
                property: property.into(),
                value: value.clone(),
            })
            .await
            .unwrap();
        }
        exec(SqlAction::UpdateMasterAddress { replica: "NODE1".into(), address: value.clone() }).await.unwrap();
        exec(SqlAction::RegisterAlwaysOnReplica { replica: "NODE1".into(), server_name: value.clone() }).await.unwrap();
        let ssisdb = sim.observe(&t).await.unwrap().ssisdb.unwrap();
        let w = &ssisdb.worker_agents[0];
        assert_eq!(w.display_name.as_deref(), Some(value.as_str()));
        assert_eq!(w.description.as_deref(), Some(value.as_str()));
        assert_eq!(w.tags.as_deref(), Some(value.as_str()));
        assert_eq!(ssisdb.master_properties["MASTER_ADDRESS"], *value);
        assert!(ssisdb.always_on_replicas.contains(value));
    }
    // Hostile text where SQL Server converts (SID, GUID) or validates (property name): the
    // conversion or validation error, nothing else.
    for value in &values {
        let number = |r: Result<(), ssis_operator::catalog::CatalogError>| match r {
            Err(ssis_operator::catalog::CatalogError::Sql { number, .. }) => number,
            other => panic!("expected a SQL error, got {other:?}"),
        };
        let sid = SqlAction::CreateLoggingLoginWithSid {
            replica: "NODE2".into(),
            sid: value.clone(),
            password: SecretValue::LoggingPassword,
            drop_existing: true,
        };
        assert_eq!(number(exec(sid).await), 8114);
        let enable = SqlAction::EnableWorkerAgent { replica: "NODE1".into(), worker_agent_id: value.clone() };
        assert_eq!(number(exec(enable).await), 8169);
        let property = SqlAction::SetWorkerAgentProperty {
            replica: "NODE1".into(),
            worker_agent_id: WORKER_ID.into(),
            property: value.clone(),
            value: "v".into(),
        };
        assert_eq!(number(exec(property).await), 27101);
    }

    let obs = sim.observe(&t).await.unwrap();
    assert_eq!(obs.ssisdb.as_ref().unwrap().worker_agents[0].machine_name, values[1]);
    assert_eq!(obs.ssisdb.unwrap().master_account_users.len(), accounts.len());
    for r in &obs.replicas {
        assert_eq!(r.master_account_logins, accounts);
    }

    // A hostile listener name and IPs are data too.
    let mut setup = ssis_operator::catalog::simulated::WorldSetup::from_target(&t, SecretString::new("dmk"));
    setup.listener_exists = false;
    sim.add_world(KEY, &setup);
    exec(SqlAction::CreateListener {
        replica: "NODE1".into(),
        name: values[0].clone(),
        port: 1433,
        static_ips: vec![(values[1].clone(), values[2].clone())],
    })
    .await
    .unwrap();
    assert_eq!(sim.observe(&t).await.unwrap().listener, Some((values[0].clone(), Some(1433))));
}

#[test]
fn tiberius_binds_every_action_parameter_as_a_parameter() {
    let t = target("pw", vec![]);
    let baseline: Vec<Vec<&str>> = SqlAction::one_of_every_kind("plain")
        .iter()
        .map(|a| action_calls(&t, a, &|_| SecretString::new("plain")).iter().map(|c| c.sql).collect())
        .collect();
    for value in hostile_values() {
        let resolve = |_: &SecretValue| SecretString::new(value.clone());
        for (action, expected) in SqlAction::one_of_every_kind(&value).iter().zip(&baseline) {
            let calls = action_calls(&t, action, &resolve);
            let texts: Vec<&str> = calls.iter().map(|c| c.sql).collect();
            assert_eq!(&texts, expected, "batch text changed with input for {action:?}");
            for call in &calls {
                let placeholders = (1..=call.params.len()).all(|i| call.sql.contains(&format!("@P{i}")));
                assert!(placeholders, "{} does not use every parameter", call.name);
                let bound = call.params.iter().any(|p| match p {
                    SqlParam::Text(s) => *s == value,
                    SqlParam::Secret(s) => s.expose() == value,
                    _ => false,
                });
                assert!(bound || call.params.is_empty(), "{}: the value is not among the parameters", call.name);
            }
        }
    }
}
