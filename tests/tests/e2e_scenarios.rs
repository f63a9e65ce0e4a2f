//! End-to-end scenarios against the simulated world (operator/src/simulation): the real operator
//! and agent code, simulated hosts, SQL and API. Each test is named after what a user does or
//! suffers.

use std::collections::BTreeMap;

use ssis_crds::{CertStore, ScaleOutWorker, condition_types, find_condition};
use ssis_operator::simulation::manifests::HostSetup;
use ssis_tests::*;

const LOGGING_LOGIN: &str = "##ms_ssislogdbworkeragentlogin##";

#[tokio::test(flavor = "current_thread")]
async fn fresh_install_from_the_examples_follows_the_procedure_on_every_host_and_in_sql() {
    let world = converged_examples().await;
    let group = master_group(&world).await;
    let status = group.status.clone().expect("master group status");
    let thumbprint = status.certificate.as_ref().expect("master certificate").thumbprint.clone();

    for node in MASTER_NODES {
        // Reference §6 step 5: SqlServerName = listener,port; the shared certificate; the port.
        let settings = settings_on_disk(
            &world,
            node,
            "MasterSettings.config",
            &["SqlServerName", "SSLCertThumbprint", "PortNumber"],
        );
        assert_eq!(settings["SqlServerName"], "agl-ssis.corp.example.com,1433", "{node}");
        assert_eq!(settings["SSLCertThumbprint"], thumbprint, "{node}");
        assert_eq!(settings["PortNumber"], "8391", "{node}");
        // Step 3: the same certificate with its private key in LocalMachine\Root on every master node.
        let master_cert = certificates(&world, node, CertStore::Root).into_iter().find(|c| c.thumbprint == thumbprint);
        assert!(master_cert.is_some_and(|c| c.has_private_key), "{node}: master certificate with key in Root");
        // Pitfall 5: each node binds the port to the shared certificate.
        let state = host_state(&world, node);
        assert_eq!(state.ssl_bindings["0.0.0.0:8391"].thumbprint, thumbprint, "{node}: HTTP.SYS binding");
        // Pitfall 3: every worker certificate is trusted on EVERY master node.
        for (worker_node, _, worker_thumbprint) in enrolled_workers(&world).await {
            assert!(
                has_certificate(&world, node, CertStore::Root, &worker_thumbprint),
                "{node} must trust the certificate of {worker_node}"
            );
        }
        // Reference §4: the legacy service on every master node lists every SQL instance.
        let legacy = loaded(&world, node, LEGACY_SERVICE).expect("legacy service running");
        assert_eq!(legacy["TopLevelFolders"], "MSDB-WIN-SQL-1;MSDB-WIN-SQL-2", "{node}");
    }

    // Workers: registered with their AgentId and enabled (pitfall 14), pinned to the master certificate.
    let sql = world.sql_world(AG_KEY).expect("SQL world");
    let ssisdb = sql.ssisdb.as_ref().expect("SSISDB");
    let enrolled = enrolled_workers(&world).await;
    assert_eq!(enrolled.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>(), WORKER_NODES);
    for (node, agent_id, _) in &enrolled {
        let on_disk = settings_on_disk(
            &world,
            node,
            "WorkerSettings.config",
            &["AgentId", "MasterHttpsCertThumbprint", "MasterEndpoint"],
        );
        assert_eq!(on_disk["AgentId"].to_uppercase(), *agent_id, "{node}: status names the AgentId on disk");
        assert_eq!(on_disk["MasterHttpsCertThumbprint"], thumbprint, "{node}");
        assert_eq!(on_disk["MasterEndpoint"], "https://ssis-master.corp.example.com:8391", "{node}");
        let row =
            ssisdb.worker_agents.get(agent_id).unwrap_or_else(|| panic!("{node} registered in catalog.worker_agents"));
        assert!(row.is_enabled, "{node} enabled");
    }
    assert_eq!(ssisdb.worker_agents.len(), 2, "no stray worker rows");

    // Steps 6 and 8: master address and logging server point at the client access point / listener.
    assert_eq!(ssisdb.master_properties["MASTER_ADDRESS"], "https://ssis-master.corp.example.com:8391");
    assert_eq!(ssisdb.master_properties["CLUSTER_LOGDB_SERVER"], "agl-ssis.corp.example.com,1433");
    // Step 6.2: the logging login exists on every replica with the primary's SID.
    let sids: Vec<_> = sql.replicas.iter().map(|r| r.logins.get(LOGGING_LOGIN).map(|l| l.sid.clone())).collect();
    assert!(sids.iter().all(|s| s.is_some() && *s == sids[0]), "logging login SIDs {sids:?}");
    // Pitfall 10: every replica can open the catalog's master key after a failover.
    assert!(
        sql.replicas.iter().all(|r| r.service_key_encrypts_catalog_key || !r.stored_master_key_passwords.is_empty())
    );

    // The active master owns the cluster role and is the one SQL sees.
    assert_eq!(status.active_node.as_deref(), Some("win-sql-1"));
    assert_eq!(ssisdb.master_properties["MACHINE_NAME"], "WIN-SQL-1");
    assert!(world.last.traffic_failures.is_empty(), "every worker connects: {:?}", world.last.traffic_failures);
}

#[tokio::test(flavor = "current_thread")]
async fn a_converged_world_writes_nothing_for_100_rounds() {
    let mut world = converged_examples().await;
    let before = world.totals.clone();
    let writes = world.run_rounds(100).await;
    let mut after = world.totals.clone();
    assert_eq!(writes, 0, "steady state must not write: {:?} → {:?}", before, after);
    // The only periodic write is each agent's liveness Lease, renewed at most once per 30 s
    // (100 rounds of 1 s: at most four per agent); no status is written.
    let renewals = after.lease_renewals - before.lease_renewals;
    assert!(renewals >= 3 * world.nodes.len() as u64, "every agent keeps its Lease: {renewals}");
    assert!(renewals <= 4 * world.nodes.len() as u64, "{renewals} renewals");
    let lease_writes = |totals: &ssis_operator::simulation::Totals| -> u64 {
        totals.api.iter().filter(|(k, _)| k.resource == "leases").map(|(_, n)| n).sum()
    };
    assert_eq!(lease_writes(&after) - lease_writes(&before), renewals);
    after.api.retain(|k, _| k.resource != "leases");
    let mut before_api = before.api.clone();
    before_api.retain(|k, _| k.resource != "leases");
    assert_eq!(before_api, after.api, "no other API write, no status write");
    assert_eq!(before.sql, after.sql, "no SQL statement");
    assert_eq!(before.host, after.host, "no host write");
}

#[tokio::test(flavor = "current_thread")]
async fn adding_a_worker_pool_then_labelling_a_new_node_enrolls_and_enables_it() {
    let mut world = converged_examples().await;
    let pool = serde_json::json!({
        "apiVersion": "ssis.sqlops.io/v1alpha1",
        "kind": "ScaleOutWorker",
        "metadata": { "name": "batch-pool", "namespace": "ssis" },
        "spec": {
            "masterGroupRef": { "name": "ssis-master" },
            "nodeSelector": { "matchLabels": { "ssis.sqlops.io/worker-pool": "batch" } },
            "displayName": "Batch {node}",
        },
    });
    world.apply_object(pool).await.expect("apply the pool");
    world.run_rounds(5).await;
    let empty = worker(&world, "batch-pool").await.and_then(|w| w.status).expect("pool status");
    assert_eq!(empty.summary.as_deref(), Some("0/0"));
    let reconciling = find_condition(&empty.conditions, condition_types::RECONCILING).expect("Reconciling");
    assert_eq!(reconciling.reason, "NoMatchingNodes", "an empty pool says how to fill it");

    let labels = BTreeMap::from([("ssis.sqlops.io/worker-pool".to_string(), "batch".to_string())]);
    let setup = HostSetup { worker: true, ..HostSetup::new(ssis_crds::SqlVersion::V160) };
    world.label_node("win-worker-3", &labels, setup).await.expect("label the new node");
    converge(&mut world).await;

    let status = worker(&world, "batch-pool").await.and_then(|w| w.status).expect("pool status");
    assert_eq!(status.summary.as_deref(), Some("1/1"));
    let node = &status.nodes[0];
    assert_eq!(node.node_name, "win-worker-3");
    assert!(node.registered && node.enabled, "{node:?}");
    let agent_id = node.worker_agent_id.clone().expect("agent id");
    let row = world.sql_world(AG_KEY).unwrap().ssisdb.unwrap().worker_agents[&agent_id].clone();
    assert!(row.is_enabled);
    assert_eq!(row.display_name.as_deref(), Some("Batch win-worker-3"));
    let thumbprint = node.certificate_thumbprint.clone().expect("worker certificate");
    for master in MASTER_NODES {
        assert!(has_certificate(&world, master, CertStore::Root, &thumbprint), "{master} trusts win-worker-3");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn deleting_a_worker_disables_it_untrusts_it_everywhere_and_leaves_nothing_behind() {
    let mut world = converged_examples().await;
    let (_, agent_id, thumbprint) =
        enrolled_workers(&world).await.into_iter().find(|(n, _, _)| n == "win-worker-1").expect("enrolled");
    world.delete_object::<ScaleOutWorker>("ssis", "win-worker-1").await.expect("kubectl delete");
    let marked = worker(&world, "win-worker-1").await.expect("kept while the finalizer runs");
    assert!(marked.metadata.deletion_timestamp.is_some());
    converge(&mut world).await;

    assert!(worker(&world, "win-worker-1").await.is_none(), "finalizer released, object gone");
    let row = world.sql_world(AG_KEY).unwrap().ssisdb.unwrap().worker_agents[&agent_id].clone();
    assert!(!row.is_enabled, "disabled in catalog.worker_agents");
    for master in MASTER_NODES {
        assert!(!has_certificate(&world, master, CertStore::Root, &thumbprint), "{master} no longer trusts it");
    }
    assert!(loaded(&world, "win-worker-1", WORKER_SERVICE).is_none(), "worker service stopped");
    // Nothing orphaned: no HostConfig for the node, no host material or password copy left for it.
    assert!(world.host_config("win-worker-1").await.is_none(), "HostConfig of the unused node deleted");
    let operator_secrets: Vec<_> = world
        .list::<k8s_openapi::api::core::v1::Secret>()
        .await
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some("ssis-system"))
        .collect();
    let logon_copy = ssis_operator::plan::certificates::logon_secret_name("ScaleOutWorker", "ssis/win-worker-1");
    assert!(
        !operator_secrets.iter().any(|s| s.metadata.name.as_deref() == Some(logon_copy.as_str())),
        "the worker's service-account password copy is deleted"
    );
    let material: Vec<_> =
        operator_secrets.iter().filter_map(ssis_operator::controller::certificates::parse_certificate_secret).collect();
    assert!(!material.iter().any(|m| m.thumbprint == thumbprint), "the worker's certificate material is deleted");
    assert_eq!(material.len(), 2, "the master's and the pool worker's material remain: {material:?}");
    // The pool's worker is untouched.
    let pool = worker(&world, "etl-pool").await.and_then(|w| w.status).unwrap();
    assert_eq!(pool.summary.as_deref(), Some("1/1"));
}

/// `(node, pinned master thumbprint)` of every worker whose service runs and is enabled in SQL,
/// for which the master it reaches serves a different certificate.
async fn workers_pinned_to_unserved_certificate(world: &ssis_operator::simulation::World) -> Vec<String> {
    let active = master_group(world).await.status.and_then(|s| s.active_node).unwrap_or_default();
    let served = loaded(world, &active, MASTER_SERVICE).and_then(|s| s.get("SSLCertThumbprint").cloned());
    let Some(ssisdb) = world.sql_world(AG_KEY).and_then(|w| w.ssisdb) else { return vec![] };
    let mut bad = Vec::new();
    for node in WORKER_NODES {
        let Some(settings) = loaded(world, node, WORKER_SERVICE) else { continue };
        let enabled = ssisdb.worker_agents.get(&settings["AgentId"].to_uppercase()).is_some_and(|r| r.is_enabled);
        let pinned = settings.get("MasterHttpsCertThumbprint").cloned();
        if enabled && served.is_some() && pinned != served {
            bad.push(format!("{node} pins {pinned:?}, {active} serves {served:?}"));
        }
    }
    bad
}

/// Rotate the master certificate by letting time pass; returns the per-round violations of "no
/// enabled worker pins a certificate its master is not serving", the old and the new thumbprint.
async fn rotate_master_certificate(world: &mut ssis_operator::simulation::World) -> (Vec<String>, String, String) {
    let old = master_group(world).await.status.unwrap().certificate.unwrap().thumbprint;
    world.age_master_certificates().await.expect("time passes");
    let mut violations = Vec::new();
    let mut converged = false;
    for _ in 0..ROUND_LIMIT {
        let report = world.step().await;
        for bad in workers_pinned_to_unserved_certificate(world).await {
            violations.push(format!("round {}: {bad}", report.round));
        }
        if report.writes() == 0 && world.not_ready().await.is_empty() {
            converged = true;
            break;
        }
    }
    assert!(converged, "{}", world.explain("the rotation did not finish").await);
    let new = master_group(world).await.status.unwrap().certificate.unwrap().thumbprint;
    (violations, old, new)
}

#[tokio::test(flavor = "current_thread")]
async fn master_certificate_rotation_replaces_the_certificate_everywhere_and_workers_reconnect() {
    let mut world = converged_examples().await;
    let (violations, old, new) = rotate_master_certificate(&mut world).await;
    assert_ne!(old, new, "a new certificate is in use");
    for node in MASTER_NODES.iter().chain(WORKER_NODES.iter()) {
        assert!(!has_certificate(&world, node, CertStore::Root, &old), "{node} still has the old certificate");
        assert!(has_certificate(&world, node, CertStore::Root, &new), "{node} trusts the new certificate");
    }
    assert!(world.last.traffic_failures.is_empty(), "{:?}", world.last.traffic_failures);
    // Reference §7 "Master cert change": the group's workers are disabled in SSISDB around the
    // switch and enabled again at the end, so every worker is back in service.
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    let ssisdb = world.sql_world(AG_KEY).and_then(|w| w.ssisdb).expect("ssisdb");
    for node in WORKER_NODES {
        let agent_id = loaded(&world, node, WORKER_SERVICE).expect("worker settings")["AgentId"].to_uppercase();
        assert!(
            ssisdb.worker_agents.get(&agent_id).is_some_and(|r| r.is_enabled),
            "{node} is enabled again after the rotation"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn master_certificate_rotation_never_leaves_an_enabled_worker_pinned_to_an_unserved_certificate() {
    let mut world = converged_examples().await;
    let (violations, _, _) = rotate_master_certificate(&mut world).await;
    assert!(
        violations.is_empty(),
        "workers pinned to a certificate their master does not serve:\n{}",
        violations.join("\n")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn worker_certificate_rotation_trusts_the_new_certificate_on_every_master_before_it_is_presented() {
    let mut world = converged_examples().await;
    let (_, _, old) = enrolled_workers(&world).await.into_iter().find(|(n, _, _)| n == "win-worker-1").unwrap();
    // The worker certificate is generated with validityDays 730 / renewBeforeDays 60.
    world.pass_days(671);
    let mut converged = false;
    for _ in 0..ROUND_LIMIT {
        let report = world.step().await;
        // The certificate a worker presents is in Root on every master node whenever it is loaded.
        if let Some(settings) = loaded(&world, "win-worker-1", WORKER_SERVICE) {
            let presented = &settings["WorkerHttpsCertThumbprint"];
            for master in MASTER_NODES {
                assert!(
                    has_certificate(&world, master, CertStore::Root, presented),
                    "round {}: win-worker-1 presents {presented}, not trusted on {master}",
                    report.round
                );
            }
        }
        if report.writes() == 0 && world.not_ready().await.is_empty() {
            converged = true;
            break;
        }
    }
    assert!(converged, "{}", world.explain("the worker rotation did not finish").await);
    let (_, _, new) = enrolled_workers(&world).await.into_iter().find(|(n, _, _)| n == "win-worker-1").unwrap();
    assert_ne!(old, new);
    for master in MASTER_NODES {
        assert!(!has_certificate(&world, master, CertStore::Root, &old), "{master} still trusts the old certificate");
    }
    assert!(!has_certificate(&world, "win-worker-1", CertStore::My, &old));
    assert!(world.last.traffic_failures.is_empty(), "{:?}", world.last.traffic_failures);
}

#[tokio::test(flavor = "current_thread")]
async fn an_availability_group_failover_is_followed_and_masters_keep_using_the_listener() {
    let mut world = converged_examples().await;
    world.fail_over_availability_group("WIN-SQL-2").await.expect("failover");
    let sql_before = world.totals.sql.clone();
    converge(&mut world).await;
    let ag = world.list::<ssis_crds::SsisdbAvailabilityGroup>().await.remove(0);
    let status = ag.status.unwrap();
    assert_eq!(status.primary_replica.as_deref(), Some("WIN-SQL-2"));
    assert!(status.last_failover_time.is_some());
    // Pitfall 10 / step 6: the DMK and logging login repairs on the new primary were issued.
    let repaired: Vec<_> =
        world.totals.sql.iter().filter(|(k, n)| sql_before.get(*k) != Some(n)).map(|(k, _)| k.clone()).collect();
    assert!(repaired.iter().any(|k| k == "EncryptMasterKeyByServiceKey"), "DMK repair issued: {repaired:?}");
    let sql = world.sql_world(AG_KEY).unwrap();
    let primary = sql.replicas.iter().find(|r| r.name == "WIN-SQL-2").unwrap();
    assert!(primary.service_key_encrypts_catalog_key, "the new primary opens the DMK itself");
    for node in MASTER_NODES {
        let settings = settings_on_disk(&world, node, "MasterSettings.config", &["SqlServerName"]);
        assert_eq!(settings["SqlServerName"], "agl-ssis.corp.example.com,1433", "{node} still uses the listener");
    }
    let ssisdb = sql.ssisdb.unwrap();
    assert!(ssisdb.worker_agents.values().all(|w| w.is_enabled));
    assert!(world.last.traffic_failures.is_empty(), "{:?}", world.last.traffic_failures);
}

#[tokio::test(flavor = "current_thread")]
async fn a_master_failover_keeps_workers_connected_because_every_master_trusts_them() {
    let mut world = converged_examples().await;
    let owner = world.fail_over_master("win-sql-2").await.expect("move the role");
    assert_eq!(owner, "WIN-SQL-2");
    // The very next round: workers reach the new owner without any change (certs already everywhere).
    let report = world.step().await;
    assert!(report.traffic_failures.is_empty(), "workers offline after master failover: {:?}", report.traffic_failures);
    let accepted: Vec<_> = report.ingest.values().flat_map(|i| i.accepted_workers.clone()).collect();
    assert_eq!(accepted.len(), 2, "both workers' heartbeats relayed by the new master");
    converge(&mut world).await;
    let status = master_group(&world).await.status.unwrap();
    assert_eq!(status.active_node.as_deref(), Some("win-sql-2"));
    assert_eq!(world.sql_world(AG_KEY).unwrap().ssisdb.unwrap().master_properties["MACHINE_NAME"], "WIN-SQL-2");
}

#[tokio::test(flavor = "current_thread")]
async fn settings_edited_by_hand_a_deleted_certificate_and_a_stopped_service_are_repaired() {
    let mut world = converged_examples().await;
    let thumbprint = master_group(&world).await.status.unwrap().certificate.unwrap().thumbprint;
    let done = world.drift("win-sql-2").expect("drift");
    assert!(!done.is_empty());
    world.drift("win-worker-1").expect("drift");
    assert!(world.delete_certificate("win-worker-2", CertStore::Root, &thumbprint).expect("delete"));
    let restarts_before = host_state(&world, "win-worker-1").services[WORKER_SERVICE].starts;
    converge(&mut world).await;

    let settings = settings_on_disk(&world, "win-sql-2", "MasterSettings.config", &["SqlServerName"]);
    assert_eq!(settings["SqlServerName"], "agl-ssis.corp.example.com,1433");
    let worker = settings_on_disk(&world, "win-worker-1", "WorkerSettings.config", &["MasterEndpoint"]);
    assert_eq!(worker["MasterEndpoint"], "https://ssis-master.corp.example.com:8391");
    assert!(loaded(&world, "win-worker-1", WORKER_SERVICE).is_some(), "worker service running again");
    assert!(host_state(&world, "win-worker-1").services[WORKER_SERVICE].starts > restarts_before);
    assert!(loaded(&world, "win-sql-2", LEGACY_SERVICE).is_some(), "legacy service running again");
    assert!(has_certificate(&world, "win-worker-2", CertStore::Root, &thumbprint), "master certificate re-imported");
    let drift = world.host_status("win-sql-2").await.and_then(|s| s.drift).expect("drift reported");
    assert!(drift.repairs > 0);
    assert!(world.last.traffic_failures.is_empty(), "{:?}", world.last.traffic_failures);
    let ready = |w: &ScaleOutWorker| {
        w.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, condition_types::READY))
            .is_some_and(|c| c.status == "True")
    };
    assert!(world.list::<ScaleOutWorker>().await.iter().all(ready));
}
