//! The apply and update_status stages against an in-memory API server, with hand-written plans so
//! the controller's own behaviour is what is asserted.

mod controller_support;

use controller_support::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use ssis_crds::*;
use ssis_operator::catalog::{SecretValue, SqlAction};
use ssis_operator::controller::stores::Stores;
use ssis_operator::controller::{FINALIZER, ReconcileReport, World, apply, dereference, status};
use ssis_operator::plan::certificates::host_secret_name;
use ssis_operator::plan::{CertificateRequest, CertificateRequestSource, PlanOutput, SecretCopy};

/// Everything the API server holds, as the apply stage sees it (these tests hand-write plans that
/// belong to no unit of deployments).
async fn world(ctx: &ssis_operator::controller::Context<FakeCatalog>) -> World {
    let mut report = ReconcileReport::default();
    let stores = Stores::load(&ctx.client, OPERATOR_NS).await.expect("stores");
    dereference::dereference_scope(ctx, &stores, dereference::Scope::Everything, &mut report)
        .await
        .expect("dereference")
}

async fn apply_pass(ctx: &ssis_operator::controller::Context<FakeCatalog>, plan: &PlanOutput) -> ReconcileReport {
    let world = world(ctx).await;
    let mut report = ReconcileReport::default();
    apply::apply(ctx, &world, plan, &mut report).await;
    status::update_status(ctx, &world, plan, &mut report).await;
    report
}

fn master_spec(thumbprint: &str, with_worker: bool) -> HostConfigSpec {
    HostConfigSpec {
        sql_version: SqlVersion::V160,
        master_settings: Some(MasterSettings {
            sql_server_name: "ssisag,1433".into(),
            ssl_cert_thumbprint: thumbprint.into(),
            port_number: 8391,
        }),
        worker_settings: with_worker.then(|| WorkerSettings {
            master_endpoint: "https://master.example.com:8391".into(),
            master_https_cert_thumbprint: thumbprint.into(),
            worker_https_cert_thumbprint: "B".repeat(40),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn host_configs_are_server_side_applied_once_and_removed_fields_disappear() {
    let client = fake_client(vec![json(&windows_node("win-1")), json(&windows_node("win-2"))]).await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    let mut plan = PlanOutput::default();
    plan.host_configs.insert("win-1".into(), master_spec(&"A".repeat(40), true));
    plan.host_configs.insert("win-2".into(), master_spec(&"A".repeat(40), false));

    let first = apply_pass(&ctx, &plan).await;
    assert_eq!(first.host_config_applies, 2, "{first:?}");

    let api: Api<HostConfig> = Api::all(client.clone());
    let stored = api.get("win-1").await.unwrap();
    assert_eq!(stored.spec, plan.host_configs["win-1"]);
    assert_eq!(stored.labels().get(MANAGED_BY_LABEL).map(String::as_str), Some(MANAGED_BY_VALUE));
    let managers: Vec<_> =
        stored.meta().managed_fields.iter().flatten().map(|m| (m.manager.clone(), m.operation.clone())).collect();
    assert!(
        managers.contains(&(Some("ssis-operator".into()), Some("Apply".into()))),
        "HostConfig must be written by server-side apply with our field manager: {managers:?}"
    );

    let second = apply_pass(&ctx, &plan).await;
    assert_eq!(second.writes(), 0, "a converged world writes nothing: {second:?}");

    // Dropping a struct with required fields (the node stops being a worker) removes it: the
    // operator stops sending it. Sent as null, as the operator once did, the API server kept an
    // emptied struct and refused it: 422 spec.workerSettings.masterEndpoint: Required value.
    plan.host_configs.insert("win-1".into(), master_spec(&"A".repeat(40), false));
    let third = apply_pass(&ctx, &plan).await;
    assert!(third.problems.is_empty(), "{:?}", third.problems);
    assert_eq!(third.host_config_applies, 1);
    assert_eq!(api.get("win-1").await.unwrap().spec.worker_settings, None);
    assert_eq!(apply_pass(&ctx, &plan).await.writes(), 0);

    // A node no longer wanted loses its HostConfig.
    plan.host_configs.remove("win-2");
    let fourth = apply_pass(&ctx, &plan).await;
    assert_eq!(fourth.host_config_deletes, 1);
    assert!(api.get_opt("win-2").await.unwrap().is_none());
}

#[tokio::test]
async fn host_config_apply_keeps_the_agent_status() {
    let mut existing = HostConfig::new("win-1", master_spec(&"A".repeat(40), false));
    existing.status = Some(HostConfigStatus { observed_generation: Some(1), ..Default::default() });
    let client = fake_client(vec![json(&windows_node("win-1")), json(&existing)]).await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    let mut plan = PlanOutput::default();
    let mut desired = master_spec(&"C".repeat(40), false);
    // A status smuggled into the main resource must be ignored by the API server.
    desired.sql_version = SqlVersion::V150;
    plan.host_configs.insert("win-1".into(), desired.clone());
    assert_eq!(apply_pass(&ctx, &plan).await.host_config_applies, 1);
    let stored = Api::<HostConfig>::all(client).get("win-1").await.unwrap();
    assert_eq!(stored.spec, desired);
    assert_eq!(stored.status.unwrap().observed_generation, Some(1), "the agent's status is untouched");
}

fn worker(name: &str) -> ScaleOutWorker {
    let mut worker = ScaleOutWorker::new(
        name,
        ScaleOutWorkerSpec {
            master_group_ref: LocalObjectRef { name: "masters".into() },
            node_name: Some("win-1".into()),
            enabled: true,
            certificate: serde_json::from_value(serde_json::json!({ "generate": {} })).expect("defaults"),
            ..Default::default()
        },
    );
    worker.metadata.namespace = Some("etl".into());
    worker
}

fn ready(status: &str, message: &str) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: if status == "True" { "Ready".into() } else { "Enrolling".into() },
        message: message.into(),
        observed_generation: None,
        last_transition_time: Time(start_time()),
    }
}

#[tokio::test]
async fn status_goes_through_the_status_subresource_and_only_when_changed() {
    let client = fake_client(vec![json(&worker("w1"))]).await;
    let (ctx, clock) = context(client.clone(), FakeCatalog::unreachable());
    let api: Api<ScaleOutWorker> = Api::namespaced(client.clone(), "etl");
    // First pass adds the finalizer (a main-resource write).
    apply_pass(&ctx, &PlanOutput::default()).await;
    let before = api.get("w1").await.unwrap();

    let mut plan = PlanOutput::default();
    plan.worker_statuses.insert(
        "etl/w1".into(),
        ScaleOutWorkerStatus {
            conditions: vec![ready("False", "waiting")],
            summary: Some("0/1".into()),
            ..Default::default()
        },
    );
    let report = apply_pass(&ctx, &plan).await;
    assert_eq!(report.status_patches, 1, "{report:?}");
    let after = api.get("w1").await.unwrap();
    let status = after.status.clone().unwrap();
    assert_eq!(status.summary.as_deref(), Some("0/1"));
    assert_eq!(status.observed_generation, after.metadata.generation);
    assert_eq!(after.spec, before.spec);
    assert_eq!(after.metadata.generation, before.metadata.generation, "status writes do not bump generation");

    // Same plan later: nothing to write, transition time kept.
    clock.advance(std::time::Duration::from_secs(600));
    let mut later = plan.clone();
    later.worker_statuses.get_mut("etl/w1").unwrap().conditions[0].last_transition_time = Time(clock_now(&ctx));
    assert_eq!(apply_pass(&ctx, &later).await.writes(), 0);

    // Ready flips: one patch, one Event; the summary field removed from the plan disappears.
    let mut done = PlanOutput::default();
    done.worker_statuses.insert(
        "etl/w1".into(),
        ScaleOutWorkerStatus { conditions: vec![ready("True", "enrolled")], ..Default::default() },
    );
    let report = apply_pass(&ctx, &done).await;
    assert_eq!(report.status_patches, 1);
    assert!(report.events >= 1, "Ready transition publishes an Event: {report:?}");
    let status = api.get("w1").await.unwrap().status.unwrap();
    assert_eq!(status.summary, None);
    assert_eq!(status.conditions[0].status, "True");
}

fn clock_now(ctx: &ssis_operator::controller::Context<FakeCatalog>) -> jiff::Timestamp {
    ctx.clock.now()
}

#[tokio::test]
async fn a_stale_resource_version_conflicts_and_the_next_pass_succeeds() {
    let client = fake_client(vec![json(&worker("w1"))]).await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    let api: Api<ScaleOutWorker> = Api::namespaced(client.clone(), "etl");
    let stale = world(&ctx).await;
    // Someone else changes the object after we read it.
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "etl"}}})),
    )
    .await
    .unwrap();
    let mut report = ReconcileReport::default();
    apply::apply(&ctx, &stale, &PlanOutput::default(), &mut report).await;
    assert_eq!(report.conflicts, 1, "{report:?}");
    assert_eq!(report.finalizer_patches, 0);
    assert!(report.needs_retry());
    assert!(!api.get("w1").await.unwrap().finalizers().contains(&FINALIZER.to_string()));

    let retry = apply_pass(&ctx, &PlanOutput::default()).await;
    assert_eq!((retry.conflicts, retry.finalizer_patches), (0, 1), "{retry:?}");
    let stored = api.get("w1").await.unwrap();
    assert!(stored.finalizers().contains(&FINALIZER.to_string()));
    assert_eq!(stored.labels().get("team").map(String::as_str), Some("etl"), "the other writer's change survives");
}

#[tokio::test]
async fn finalizer_is_added_then_removed_only_after_cleanup() {
    let mut deleting = worker("gone");
    deleting.metadata.finalizers = Some(vec![FINALIZER.into(), "other/keep".into()]);
    let client = fake_client(vec![json(&worker("fresh")), json(&deleting)]).await;
    delete::<ScaleOutWorker>(&client, "etl", "gone").await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    let api: Api<ScaleOutWorker> = Api::namespaced(client.clone(), "etl");

    // Cleanup still in progress: the planner has not reported the worker finalizable.
    let cleaning = PlanOutput::default();
    let report = apply_pass(&ctx, &cleaning).await;
    assert_eq!(report.finalizer_patches, 1, "only the fresh worker gets a finalizer: {report:?}");
    assert!(api.get("fresh").await.unwrap().finalizers().contains(&FINALIZER.to_string()));
    assert!(api.get("gone").await.unwrap().finalizers().contains(&FINALIZER.to_string()));
    assert_eq!(apply_pass(&ctx, &cleaning).await.writes(), 0);

    // Cleanup done: our finalizer goes, the other controller's stays.
    let mut done = PlanOutput::default();
    done.finalizable.insert("etl/gone".into());
    let report = apply_pass(&ctx, &done).await;
    assert_eq!(report.finalizer_patches, 1, "{report:?}");
    assert_eq!(api.get("gone").await.unwrap().finalizers(), &["other/keep".to_string()]);
    assert_eq!(apply_pass(&ctx, &done).await.writes(), 0);
}

#[tokio::test]
async fn master_groups_get_no_finalizer_and_a_leftover_one_is_released() {
    let mut live = ScaleOutMasterGroup::new("live", master_group_spec());
    live.metadata.namespace = Some("etl".into());
    let mut gone = ScaleOutMasterGroup::new("gone", master_group_spec());
    gone.metadata.namespace = Some("etl".into());
    gone.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let client = fake_client(vec![json(&live), json(&gone)]).await;
    delete::<ScaleOutMasterGroup>(&client, "etl", "gone").await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    let report = apply_pass(&ctx, &PlanOutput::default()).await;
    assert_eq!(report.finalizer_patches, 1, "{report:?}");
    let api: Api<ScaleOutMasterGroup> = Api::namespaced(client, "etl");
    assert!(api.get_opt("gone").await.unwrap().is_none());
    assert!(api.get("live").await.unwrap().finalizers().is_empty());
}

#[tokio::test]
async fn finalizer_removal_lets_the_api_server_delete_the_object() {
    let mut deleting = worker("gone");
    deleting.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let client = fake_client(vec![json(&deleting)]).await;
    delete::<ScaleOutWorker>(&client, "etl", "gone").await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    let mut done = PlanOutput::default();
    done.finalizable.insert("etl/gone".into());
    let report = apply_pass(&ctx, &done).await;
    assert_eq!(report.finalizer_patches, 1);
    assert!(Api::<ScaleOutWorker>::namespaced(client, "etl").get_opt("gone").await.unwrap().is_none());
}

fn availability_group() -> SsisdbAvailabilityGroup {
    let mut group = SsisdbAvailabilityGroup::new(
        "ag",
        SsisdbAvailabilityGroupSpec {
            availability_group_name: "SSISAG".into(),
            database_name: "SSISDB".into(),
            replicas: vec![AvailabilityReplica {
                name: "SQL1".into(),
                host: "sql1".into(),
                port: 1433,
                node_name: None,
            }],
            listener: ListenerSpec { name: "ssisag".into(), port: 1433, ..Default::default() },
            admin_credentials: SqlCredentials {
                secret: SecretRef { name: "sql-admin".into() },
                username_key: "username".into(),
                password_key: "password".into(),
            },
            catalog_password_secret_ref: SecretKeyRef { name: "ssisdb".into(), key: "password".into() },
            logging_login: LoggingLoginSpec {
                password_secret_ref: SecretKeyRef { name: "logging".into(), key: "password".into() },
            },
            ..Default::default()
        },
    );
    group.metadata.namespace = Some("etl".into());
    group
}

fn sql_secrets() -> Vec<serde_json::Value> {
    vec![
        json(&secret("etl", "sql-admin", &[("username", "sa"), ("password", "admin-pw")])),
        json(&secret("etl", "ssisdb", &[("password", "dmk-pw")])),
        json(&secret("etl", "logging", &[("password", "log-pw")])),
    ]
}

#[tokio::test]
async fn sql_actions_run_in_order_and_stop_at_the_first_failure() {
    let mut objects = sql_secrets();
    objects.push(json(&availability_group()));
    let client = fake_client(objects).await;
    let catalog = FakeCatalog::default();
    *catalog.fail_at.lock().unwrap() = Some(1);
    let (ctx, _) = context(client, catalog);
    let actions = vec![
        SqlAction::UpdateLogDbInfo {
            replica: "SQL1".into(),
            server_name: "ssisag,1433".into(),
            password: SecretValue::LoggingPassword,
        },
        SqlAction::EnableScaleOut { replica: "SQL1".into() },
        SqlAction::UpdateMasterAddress { replica: "SQL1".into(), address: "https://m:8391".into() },
    ];
    let mut plan = PlanOutput::default();
    plan.sql_actions.insert("etl/ag".into(), actions.clone());

    let report = apply_pass(&ctx, &plan).await;
    assert_eq!(report.sql_actions, 1);
    assert_eq!(report.pending_sql_actions.get("etl/ag"), Some(&2));
    assert!(report.needs_retry());
    assert!(report.problems.iter().all(|p| !p.contains("log-pw") && !p.contains("admin-pw")), "{report:?}");
    assert_eq!(*ctx.catalog.executed.lock().unwrap(), vec![actions[0].clone()]);
    assert_eq!(*ctx.catalog.resolved.lock().unwrap(), vec!["log-pw".to_string()], "secrets resolved at apply time");

    // The planner (observing the first action done) now plans the remaining two; they succeed.
    plan.sql_actions.insert("etl/ag".into(), actions[1..].to_vec());
    let report = apply_pass(&ctx, &plan).await;
    assert_eq!(report.sql_actions, 2);
    assert!(report.pending_sql_actions.is_empty());
    assert_eq!(*ctx.catalog.executed.lock().unwrap(), actions);
}

#[tokio::test]
async fn requested_certificates_become_labelled_owner_less_secrets_until_no_longer_retained() {
    // A worker referencing the user's TLS Secret (only referenced Secrets are read).
    let mut w1 = worker("w1");
    w1.spec.certificate = CertificateSource { secret_ref: Some(SecretRef { name: "user-tls".into() }), generate: None };
    let client =
        fake_client(vec![json(&secret("etl", "user-tls", &[("tls.crt", "PEM"), ("tls.key", "KEY")])), json(&w1)]).await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    let mut plan = PlanOutput::default();
    plan.certificate_requests.push(CertificateRequest {
        id: "master/etl/masters/gen-1".into(),
        source: CertificateRequestSource::Generate {
            common_name: "master.example.com".into(),
            dns_names: vec!["master.example.com".into()],
            validity_days: 365,
        },
    });
    plan.certificate_requests.push(CertificateRequest {
        id: "worker/etl/w1/win-1/gen-1".into(),
        source: CertificateRequestSource::FromTlsSecret { secret: "etl/user-tls".into() },
    });
    let master_secret = host_secret_name("master/etl/masters/gen-1");
    let worker_secret = host_secret_name("worker/etl/w1/win-1/gen-1");
    let report = apply_pass(&ctx, &plan).await;
    assert_eq!(report.secret_writes, 2, "{report:?}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NS);
    let list = secrets.list(&ListParams::default().labels("app.kubernetes.io/managed-by=ssis-operator")).await.unwrap();
    assert_eq!(list.items.len(), 2);
    let stored = secrets.get(&master_secret).await.unwrap();
    assert!(stored.metadata.owner_references.is_none());
    assert!(stored.data.as_ref().unwrap().contains_key(host_secret_keys::PFX));

    // The planner sees them as issued on the next pass; the converted one carries the user
    // Secret's fingerprint so a changed TLS Secret is noticed.
    let world = world(&ctx).await;
    let master = &world.input.issued_certificates["master/etl/masters/gen-1"];
    assert_eq!(master.secret_name, master_secret);
    assert_eq!(master.dns_names, vec!["master.example.com".to_string()]);
    let converted = &world.input.issued_certificates["worker/etl/w1/win-1/gen-1"];
    assert_eq!(converted.source_fingerprint.as_ref(), Some(&world.input.secrets["etl/user-tls"].fingerprint));

    let mut retained = PlanOutput::default();
    retained.finalizable.insert("unused".into());
    retained.retained_host_secrets.extend([master_secret.clone(), worker_secret.clone()]);
    assert_eq!(apply_pass(&ctx, &retained).await.writes(), 0);

    // Rotation finished: the worker material is no longer retained and goes.
    retained.retained_host_secrets.remove(&worker_secret);
    assert_eq!(apply_pass(&ctx, &retained).await.secret_writes, 1);
    assert!(secrets.get_opt(&worker_secret).await.unwrap().is_none());
    assert!(secrets.get_opt(&master_secret).await.unwrap().is_some());
}

#[tokio::test]
async fn password_copies_follow_the_source_and_disappear_when_not_asked_for() {
    let client = fake_client(vec![json(&secret("etl", "svc", &[("password", "s3cret")]))]).await;
    let (ctx, _) = context(client.clone(), FakeCatalog::unreachable());
    // The copy source is a Secret some resource references.
    let master = {
        let mut m = ScaleOutMasterGroup::new(
            "masters",
            ScaleOutMasterGroupSpec {
                service_account: WindowsAccount {
                    username: "CORP\\svc".into(),
                    password_secret_ref: SecretKeyRef { name: "svc".into(), key: "password".into() },
                },
                ..master_group_spec()
            },
        );
        m.metadata.namespace = Some("etl".into());
        m
    };
    Api::<ScaleOutMasterGroup>::namespaced(client.clone(), "etl").create(&Default::default(), &master).await.unwrap();
    let mut plan = PlanOutput::default();
    plan.secret_copies.insert(
        "ssis-logon-x".into(),
        SecretCopy {
            owner: "ScaleOutMasterGroup/etl/masters".into(),
            source_namespace: "etl".into(),
            source_name: "svc".into(),
            source_key: "password".into(),
            target_key: host_secret_keys::PASSWORD.into(),
        },
    );
    let report = apply_pass(&ctx, &plan).await;
    assert_eq!(report.secret_writes, 1, "{report:?}");
    let copies: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NS);
    let copy = copies.get("ssis-logon-x").await.unwrap();
    assert_eq!(copy.data.as_ref().unwrap()[host_secret_keys::PASSWORD].0, b"s3cret");
    assert_eq!(apply_pass(&ctx, &plan).await.writes(), 0);

    // The user changes the password: the copy follows.
    Api::<Secret>::namespaced(client.clone(), "etl")
        .patch("svc", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"password": "bmV3"}})))
        .await
        .unwrap();
    assert_eq!(apply_pass(&ctx, &plan).await.secret_writes, 1);
    assert_eq!(copies.get("ssis-logon-x").await.unwrap().data.unwrap()[host_secret_keys::PASSWORD].0, b"new");

    // No longer asked for: deleted.
    assert_eq!(apply_pass(&ctx, &PlanOutput::default()).await.secret_writes, 1);
    assert!(copies.get_opt("ssis-logon-x").await.unwrap().is_none());
}

#[tokio::test]
async fn dereference_gives_the_planner_fingerprints_never_values() {
    let mut objects = sql_secrets();
    objects.push(json(&availability_group()));
    let client = fake_client(objects).await;
    let (ctx, _) = context(client, FakeCatalog::unreachable());
    let mut report = ReconcileReport::default();
    let stores = Stores::load(&ctx.client, OPERATOR_NS).await.unwrap();
    let world =
        dereference::dereference_scope(&ctx, &stores, dereference::Scope::Everything, &mut report).await.unwrap();
    let meta = &world.input.secrets["etl/logging"];
    assert_eq!(meta.keys.iter().collect::<Vec<_>>(), vec!["password"]);
    let debug = format!("{:?}", world.input);
    for value in ["admin-pw", "dmk-pw", "log-pw"] {
        assert!(!debug.contains(value), "planner input leaks {value}");
    }
    assert!(world.input.catalogs.is_empty(), "unreachable SQL leaves the group unobserved");
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(!report.problems[0].contains("admin-pw"));
}
