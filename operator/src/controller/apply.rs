//! Apply: make the API and SQL Server match the plan. Every write is skipped when the current state
//! already matches, so a converged world costs zero writes.

use std::collections::BTreeMap;

use futures::StreamExt;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use ssis_crds::{HostConfig, HostConfigSpec, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SecretVersion};

pub use crate::catalog::batches::action_kind;
use crate::catalog::batches::action_replica;
use crate::catalog::{Catalog, SecretString, SecretValue, SqlAction};
use crate::plan::certificates::host_secret_name;
use crate::plan::{CertificateRequestSource, PlanOutput};

use super::certificates::{SecretData, certificate_secret, parse_certificate_secret};
use super::dereference::{World, fingerprint};
use super::{
    CERTIFICATE_ID_LABEL, Context, FIELD_MANAGER, FINALIZER, OWNER_ANNOTATION, ReconcileReport, is_conflict,
    is_not_found, object_key,
};

/// Content hash of each operator-namespace Secret, by name.
type SecretVersions = BTreeMap<String, String>;

/// Label marking an operator-namespace copy of a user Secret key (service-account passwords).
pub const SECRET_COPY_LABEL: &str = "ssis.sqlops.io/secret-copy";
/// Annotation naming the copy's source (`namespace/name/key`; never the value).
pub const COPIED_FROM_ANNOTATION: &str = "ssis.sqlops.io/copied-from";

/// Apply every part of the plan, in dependency order: host material first (HostConfigs reference
/// it), then HostConfigs, SQL actions, finalizers, Events, and finally unused material.
pub async fn apply<C: Catalog>(ctx: &Context<C>, world: &World, plan: &PlanOutput, report: &mut ReconcileReport) {
    // Versions of the operator's Secrets, including those written in this pass, for the
    // HostConfigs that name them.
    let mut versions: SecretVersions = world.managed_secrets.iter().map(|s| (s.name_any(), fingerprint(s))).collect();
    issue_certificates(ctx, world, plan, report, &mut versions).await;
    copy_secrets(ctx, world, plan, report, &mut versions).await;
    apply_host_configs(ctx, world, plan, report, &versions).await;
    run_sql_actions(ctx, world, plan, report).await;
    finalizers(ctx, world, plan, report).await;
    plan_events(ctx, world, plan, report).await;
    collect_secrets(ctx, world, plan, report).await;
}

fn ssa_secret(secret: &Secret) -> serde_json::Value {
    let mut body = serde_json::to_value(secret).unwrap_or_default();
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("Secret");
    body
}

async fn issue_certificates<C: Catalog>(
    ctx: &Context<C>,
    world: &World,
    plan: &PlanOutput,
    report: &mut ReconcileReport,
    versions: &mut SecretVersions,
) {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    // RSA key generation is CPU work: it runs on the blocking pool, several at once, so a large
    // enrollment neither stalls the async runtime (other units, watches, health) nor one core.
    let parallel = std::thread::available_parallelism().map_or(2, usize::from);
    let jobs = plan.certificate_requests.iter().filter_map(|request| {
        let tls: Option<(SecretData, String)> = match &request.source {
            CertificateRequestSource::Generate { .. } => None,
            CertificateRequestSource::FromTlsSecret { secret } => {
                let Some(user_secret) = world.secrets.get(secret) else {
                    report.problem(format!("certificate {}: TLS Secret {secret} not found", request.id));
                    return None;
                };
                let data = user_secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
                Some((data, fingerprint(user_secret)))
            }
        };
        let (issuer, request, now) = (ctx.issuer.clone(), request.clone(), ctx.clock.now());
        Some(async move {
            // Deterministic per id, so the old and new certificates of a rotation coexist.
            let secret_name = host_secret_name(&request.id);
            let issued = tokio::task::spawn_blocking({
                let secret_name = secret_name.clone();
                let tls_data = tls.as_ref().map(|(data, _)| data.clone());
                let request = request.clone();
                move || issuer.issue(&request, &secret_name, tls_data.as_ref(), now)
            })
            .await
            .map_err(|e| format!("issuing panicked: {e}"))
            .and_then(|result| result);
            (request, secret_name, tls.map(|(_, fingerprint)| fingerprint), issued)
        })
    });
    let results: Vec<_> = futures::stream::iter(jobs.collect::<Vec<_>>()).buffered(parallel).collect().await;
    for (request, secret_name, source_fingerprint, issued) in results {
        let (mut issued, data) = match issued {
            Ok(result) => result,
            Err(error) => {
                report.problem(format!("certificate {}: {error}", request.id));
                continue;
            }
        };
        // The planner compares this with the user Secret's fingerprint to notice a new certificate.
        issued.source_fingerprint = source_fingerprint;
        issued.secret_name = secret_name.clone();
        let secret = certificate_secret(&ctx.operator_namespace, &issued, data);
        if report.fenced_by(&ctx.fence) {
            return;
        }
        // Server-side apply creates it, or overwrites a Secret of that name whose metadata was damaged.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match secrets.patch(&secret_name, &params, &Patch::Apply(ssa_secret(&secret))).await {
            Ok(_) => {
                report.secret_writes += 1;
                versions.insert(secret_name.clone(), fingerprint(&secret));
                tracing::info!(id = %request.id, thumbprint = %issued.thumbprint, secret = %secret_name, "certificate stored");
            }
            Err(error) if is_conflict(&error) => report.conflicts += 1,
            Err(error) => report.problem(format!("storing certificate {}: {error}", request.id)),
        }
    }
}

/// Copy user Secret keys (service-account passwords) into the operator namespace, where agents
/// read them. Values are compared, never logged.
async fn copy_secrets<C: Catalog>(
    ctx: &Context<C>,
    world: &World,
    plan: &PlanOutput,
    report: &mut ReconcileReport,
    versions: &mut SecretVersions,
) {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (target, copy) in &plan.secret_copies {
        let source = format!("{}/{}", copy.source_namespace, copy.source_name);
        let Some(value) = world.secret_bytes(&source, &copy.source_key) else {
            report.problem(format!("copying Secret {source} key {} into {target}: source missing", copy.source_key));
            continue;
        };
        let copied_from = format!("{source}/{}", copy.source_key);
        let current = world.managed_secrets.iter().find(|s| s.name_any() == *target);
        let up_to_date = current.is_some_and(|current| {
            let data = current.data.as_ref();
            // Keys another field manager added stay (server-side apply removes only what this
            // manager stops sending); agents read the one key they are told to.
            data.is_some_and(|d| d.get(&copy.target_key).is_some_and(|v| v.0 == value))
                && current.labels().get(SECRET_COPY_LABEL).map(String::as_str) == Some("true")
                && current.annotations().get(COPIED_FROM_ANNOTATION) == Some(&copied_from)
                && current.annotations().get(OWNER_ANNOTATION) == Some(&copy.owner)
        });
        if up_to_date {
            continue;
        }
        let body = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": target,
                "namespace": ctx.operator_namespace,
                "labels": { MANAGED_BY_LABEL: MANAGED_BY_VALUE, SECRET_COPY_LABEL: "true" },
                "annotations": { COPIED_FROM_ANNOTATION: copied_from, OWNER_ANNOTATION: copy.owner },
            },
            "type": "Opaque",
            "data": BTreeMap::from([(copy.target_key.clone(), k8s_openapi::ByteString(value))]),
        });
        if report.fenced_by(&ctx.fence) {
            return;
        }
        match secrets.patch(target, &params, &Patch::Apply(&body)).await {
            Ok(written) => {
                report.secret_writes += 1;
                versions.insert(target.clone(), fingerprint(&written));
                tracing::info!(secret = %target, from = %copied_from, "password copy written");
            }
            Err(error) if is_conflict(&error) => report.conflicts += 1,
            Err(error) => report.problem(format!("writing Secret {target}: {error}")),
        }
    }
}

/// The server-side apply body of a HostConfig: the whole desired object. A field the operator
/// stops sending is removed by the API server (it owns no other manager), so nothing is ever sent
/// as null, and every required field is always there.
pub fn host_config_body(name: &str, desired: &HostConfigSpec) -> serde_json::Value {
    json!({
        "apiVersion": HostConfig::api_version(&()),
        "kind": HostConfig::kind(&()),
        "metadata": { "name": name, "labels": { MANAGED_BY_LABEL: MANAGED_BY_VALUE } },
        "spec": desired,
    })
}

fn host_config_current(desired: &HostConfigSpec, current: &HostConfig) -> bool {
    serde_json::to_value(desired).ok() == serde_json::to_value(&current.spec).ok()
        && current.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// The planned spec with the version of every Secret it names (unknown versions are left out: the
/// agent then reads that Secret every pass until the next pass knows it).
pub fn with_secret_versions(spec: &HostConfigSpec, versions: &SecretVersions) -> HostConfigSpec {
    let mut spec = spec.clone();
    let named: std::collections::BTreeSet<&str> = spec
        .certificates
        .iter()
        .filter_map(|c| c.source.as_ref().map(|s| s.secret_name.as_str()))
        .chain(spec.services.iter().filter_map(|s| s.logon.as_ref().map(|l| l.password_secret_ref.name.as_str())))
        .collect();
    spec.secret_versions = named
        .into_iter()
        .filter_map(|name| {
            versions.get(name).map(|version| SecretVersion { name: name.to_string(), version: version.clone() })
        })
        .collect();
    spec
}

async fn apply_host_configs<C: Catalog>(
    ctx: &Context<C>,
    world: &World,
    plan: &PlanOutput,
    report: &mut ReconcileReport,
    versions: &SecretVersions,
) {
    let api: Api<HostConfig> = Api::all(ctx.client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (name, planned) in &plan.host_configs {
        let desired = &with_secret_versions(planned, versions);
        let current = world.host_configs.get(name);
        if current.is_some_and(|current| host_config_current(desired, current)) {
            continue;
        }
        if report.fenced_by(&ctx.fence) {
            return;
        }
        match api.patch(name, &params, &Patch::Apply(host_config_body(name, desired))).await {
            Ok(_) => {
                report.host_config_applies += 1;
                tracing::info!(host_config = %name, "HostConfig applied");
            }
            Err(error) if is_conflict(&error) => report.conflicts += 1,
            Err(error) => report.problem(format!("applying HostConfig {name}: {error}")),
        }
    }
    for (name, current) in &world.host_configs {
        if plan.host_configs.contains_key(name)
            || current.meta().deletion_timestamp.is_some()
            || !world.deletable_host_configs.contains(name)
        {
            continue;
        }
        if report.fenced_by(&ctx.fence) {
            return;
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                report.host_config_deletes += 1;
                tracing::info!(host_config = %name, "HostConfig deleted: no resource uses the node any more");
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => report.problem(format!("deleting HostConfig {name}: {error}")),
        }
    }
}

fn needed_secret(action: &SqlAction) -> Option<&SecretValue> {
    match action {
        SqlAction::EncryptMasterKeyByServiceKey { password, .. }
        | SqlAction::StoreMasterKeyPassword { password, .. }
        | SqlAction::SetLoggingLoginPassword { password, .. }
        | SqlAction::CreateLoggingLoginWithSid { password, .. }
        | SqlAction::UpdateLogDbInfo { password, .. } => Some(password),
        _ => None,
    }
}

/// Run each group's actions in order, one at a time, stopping at the first failure so an ordered
/// procedure resumes where it stopped on the next pass.
async fn run_sql_actions<C: Catalog>(ctx: &Context<C>, world: &World, plan: &PlanOutput, report: &mut ReconcileReport) {
    for (key, actions) in &plan.sql_actions {
        if actions.is_empty() {
            continue;
        }
        let Some(group) = world.input.availability_groups.iter().find(|g| object_key(*g) == *key) else {
            report.problem(format!("SQL actions planned for unknown availability group {key}"));
            continue;
        };
        let target = match world.catalog_target(group) {
            Ok(target) => target,
            Err(reason) => {
                report.problem(format!("cannot run SQL actions for {key}: {reason}"));
                report.pending_sql_actions.insert(key.clone(), actions.len());
                continue;
            }
        };
        let namespace = group.namespace().unwrap_or_default();
        let catalog_password = world.secret_value(
            &namespace,
            &group.spec.catalog_password_secret_ref.name,
            &group.spec.catalog_password_secret_ref.key,
        );
        let logging_password = target.logging_password.clone();
        let mut done = 0;
        for action in actions {
            let kind = action_kind(action);
            if needed_secret(action) == Some(&SecretValue::CatalogPassword) && catalog_password.is_none() {
                report.problem(format!("{key}: {kind} needs the catalog password Secret, which is missing"));
                break;
            }
            let resolve = |value: &SecretValue| -> SecretString {
                match value {
                    SecretValue::LoggingPassword => logging_password.clone(),
                    SecretValue::CatalogPassword => catalog_password.clone().unwrap_or_else(|| SecretString::new("")),
                }
            };
            if report.fenced_by(&ctx.fence) {
                return;
            }
            match ctx.catalog.execute(&target, action, &resolve).await {
                Ok(()) => {
                    done += 1;
                    report.sql_actions += 1;
                    ctx.metrics.sql_action(kind, true);
                    tracing::info!(group = %key, action = kind, "SQL action done");
                    publish(
                        ctx,
                        report,
                        group,
                        EventType::Normal,
                        kind,
                        "SqlAction",
                        format!("{kind} done on {}", action_replica(action)),
                    )
                    .await;
                }
                Err(error) => {
                    ctx.metrics.sql_action(kind, false);
                    report.problem(format!("{key}: {kind} failed: {error}"));
                    publish(
                        ctx,
                        report,
                        group,
                        EventType::Warning,
                        "SqlActionFailed",
                        "SqlAction",
                        format!("{kind} failed: {error}"),
                    )
                    .await;
                    break;
                }
            }
        }
        if done < actions.len() {
            report.pending_sql_actions.insert(key.clone(), actions.len() - done);
        }
    }
}

/// Publish an Event; failures are logged, never fatal. Notes never carry secret values.
pub(crate) async fn publish<C: Catalog, K: Resource<DynamicType = ()>>(
    ctx: &Context<C>,
    report: &mut ReconcileReport,
    object: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event =
        Event { type_, reason: reason.into(), note: Some(event_note(note)), action: action.into(), secondary: None };
    if report.fenced_by(&ctx.fence) {
        return;
    }
    match ctx.recorder.publish(&event, &object.object_ref(&())).await {
        Ok(()) => report.events += 1,
        Err(error) => tracing::warn!(%error, reason, "publishing Event failed"),
    }
}

/// The API server refuses an Event whose note is longer than 1 KiB (events.k8s.io/v1 validation);
/// long notes (SQL error texts) are cut at a character boundary and marked.
pub(crate) fn event_note(note: String) -> String {
    const LIMIT: usize = 1024;
    const MARK: &str = " …";
    if note.len() <= LIMIT {
        return note;
    }
    let mut end = LIMIT - MARK.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &note[..end])
}

/// Add the cleanup finalizer to workers on first sight; remove it once the planner reports the
/// cleanup done. Master groups need none (their HostConfig items go with the group); a finalizer
/// left on one is released on deletion.
async fn finalizers<C: Catalog>(ctx: &Context<C>, world: &World, plan: &PlanOutput, report: &mut ReconcileReport) {
    for worker in &world.input.workers {
        let finalizable = plan.finalizable.contains(&object_key(worker));
        reconcile_finalizer(ctx, worker, true, finalizable, report).await;
    }
    for master in &world.input.master_groups {
        reconcile_finalizer(ctx, master, false, true, report).await;
    }
}

/// Finalizer list patch guarded by resourceVersion: a 409 means the object changed; re-read next pass.
async fn reconcile_finalizer<C: Catalog, K>(
    ctx: &Context<C>,
    object: &K,
    wanted_on_live: bool,
    finalizable: bool,
    report: &mut ReconcileReport,
) where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let finalizers = object.finalizers();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    let deleting = object.meta().deletion_timestamp.is_some();
    let wanted: Vec<String> = if wanted_on_live && !deleting && !has {
        finalizers.iter().cloned().chain([FINALIZER.to_string()]).collect()
    } else if deleting && has && finalizable {
        finalizers.iter().filter(|f| *f != FINALIZER).cloned().collect()
    } else {
        return;
    };
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let patch = json!({ "metadata": { "finalizers": wanted, "resourceVersion": object.resource_version() } });
    if report.fenced_by(&ctx.fence) {
        return;
    }
    match api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            report.finalizer_patches += 1;
            tracing::info!(object = %object_key(object), removed = deleting, "finalizer patched");
        }
        Err(error) if is_conflict(&error) => report.conflicts += 1,
        Err(error) if is_not_found(&error) => {}
        Err(error) => report.problem(format!("patching finalizers of {}: {error}", object_key(object))),
    }
}

/// Publish the Events the planner asked for on the objects they concern.
async fn plan_events<C: Catalog>(ctx: &Context<C>, world: &World, plan: &PlanOutput, report: &mut ReconcileReport) {
    for event in &plan.events {
        let type_ = if event.warning { EventType::Warning } else { EventType::Normal };
        let note = event.message.clone();
        let input = &world.input;
        match event.kind.as_str() {
            "SsisdbAvailabilityGroup" => {
                if let Some(object) = input.availability_groups.iter().find(|o| object_key(*o) == event.key) {
                    publish(ctx, report, object, type_, &event.reason, "Reconcile", note).await;
                }
            }
            "ScaleOutMasterGroup" => {
                if let Some(object) = input.master_groups.iter().find(|o| object_key(*o) == event.key) {
                    publish(ctx, report, object, type_, &event.reason, "Reconcile", note).await;
                }
            }
            "ScaleOutWorker" => {
                if let Some(object) = input.workers.iter().find(|o| object_key(*o) == event.key) {
                    publish(ctx, report, object, type_, &event.reason, "Reconcile", note).await;
                }
            }
            other => tracing::debug!(kind = other, "Event for an unknown kind dropped"),
        }
    }
}

/// Delete operator-namespace Secrets the plan no longer needs: certificate material not retained
/// (rotation finished, resource gone) and password copies not asked for.
async fn collect_secrets<C: Catalog>(ctx: &Context<C>, world: &World, plan: &PlanOutput, report: &mut ReconcileReport) {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    // Material a HostConfig still references is kept whatever the plan says (agents may be mid-apply).
    let referenced: std::collections::BTreeSet<&str> = plan
        .host_configs
        .values()
        .chain(world.host_configs.values().map(|h| &h.spec))
        .flat_map(|spec| &spec.certificates)
        .filter_map(|c| c.source.as_ref().map(|s| s.secret_name.as_str()))
        .collect();
    let requested: std::collections::BTreeSet<String> =
        plan.certificate_requests.iter().map(|r| host_secret_name(&r.id)).collect();
    for secret in &world.managed_secrets {
        let name = secret.name_any();
        let certificate =
            secret.labels().contains_key(CERTIFICATE_ID_LABEL) && parse_certificate_secret(secret).is_some();
        let copy = secret.labels().get(SECRET_COPY_LABEL).map(String::as_str) == Some("true");
        let unused = if certificate {
            !plan.retained_host_secrets.contains(&name)
                && !referenced.contains(name.as_str())
                && !requested.contains(&name)
        } else if copy {
            !plan.secret_copies.contains_key(&name) && !referenced_by_logon(plan, world, &name)
        } else {
            false
        };
        if !unused {
            continue;
        }
        if report.fenced_by(&ctx.fence) {
            return;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                report.secret_writes += 1;
                tracing::info!(secret = %name, "unused operator Secret deleted");
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => report.problem(format!("deleting Secret {name}: {error}")),
        }
    }
}

/// Whether a desired or current HostConfig still names the Secret as a service logon password.
fn referenced_by_logon(plan: &PlanOutput, world: &World, name: &str) -> bool {
    plan.host_configs
        .values()
        .chain(world.host_configs.values().map(|h| &h.spec))
        .flat_map(|spec| &spec.services)
        .filter_map(|service| service.logon.as_ref())
        .any(|logon| logon.password_secret_ref.name == name)
}

#[cfg(test)]
mod tests {
    use super::event_note;

    #[test]
    fn event_notes_fit_the_api_servers_limit() {
        assert_eq!(event_note("short".into()), "short");
        let long = "é".repeat(600);
        let cut = event_note(long.clone());
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.ends_with(" …"));
        assert!(long.starts_with(cut.trim_end_matches(" …")));
    }
}
