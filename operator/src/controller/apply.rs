//! Apply: make the API and SQL Server match the plan. Every write is skipped when the current state
//! already matches, so a converged world costs zero writes.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use ssis_crds::{HostConfig, HostConfigSpec, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

use crate::catalog::{Catalog, SecretString, SecretValue, SqlAction};
use crate::plan::{CertificateRequestSource, PlanOutput};

use super::certificates::{TlsMaterial, certificate_secret, parse_certificate_secret, secret_name};
use super::dereference::{World, fingerprint};
use super::{
    CERTIFICATE_ID_LABEL, Context, FIELD_MANAGER, FINALIZER, ReconcileReport, is_conflict, is_not_found,
    null_removed_fields, object_key,
};

/// Apply every part of the plan, in dependency order: certificate material first (HostConfigs
/// reference it), then HostConfigs, SQL actions, finalizers.
pub async fn apply<C: Catalog>(ctx: &Context<C>, world: &World, plan: &PlanOutput, report: &mut ReconcileReport) {
    issue_certificates(ctx, world, plan, report).await;
    apply_host_configs(ctx, world, plan, report).await;
    run_sql_actions(ctx, world, plan, report).await;
    finalizers(ctx, world, plan, report).await;
    collect_certificate_secrets(ctx, world, plan, report).await;
}

async fn issue_certificates<C: Catalog>(
    ctx: &Context<C>,
    world: &World,
    plan: &PlanOutput,
    report: &mut ReconcileReport,
) {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    for request in &plan.certificate_requests {
        let tls = match &request.source {
            CertificateRequestSource::Generate { .. } => None,
            CertificateRequestSource::FromTlsSecret { secret } => {
                let (Some(certificate_pem), Some(key_pem)) =
                    (world.secret_bytes(secret, "tls.crt"), world.secret_bytes(secret, "tls.key"))
                else {
                    report.problem(format!("certificate {}: TLS Secret {secret} lacks tls.crt or tls.key", request.id));
                    continue;
                };
                let fingerprint = world.secrets.get(secret).map(fingerprint).unwrap_or_default();
                Some(TlsMaterial { certificate_pem, key_pem, fingerprint })
            }
        };
        let material = match ctx.issuer.issue(request, tls.as_ref(), ctx.clock.now()) {
            Ok(material) => material,
            Err(error) => {
                report.problem(format!("certificate {}: {error}", request.id));
                continue;
            }
        };
        let name = secret_name(&request.id, &material.thumbprint);
        if world.managed_secrets.iter().any(|s| s.metadata.name.as_deref() == Some(name.as_str())) {
            // Same id and thumbprint already stored (a converted user certificate that did not change).
            continue;
        }
        let secret = certificate_secret(
            &ctx.operator_namespace,
            &request.id,
            &material,
            tls.as_ref().map(|t| t.fingerprint.as_str()),
        );
        match secrets
            .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &secret)
            .await
        {
            Ok(_) => {
                report.secret_writes += 1;
                tracing::info!(id = %request.id, thumbprint = %material.thumbprint, secret = %name, "certificate issued");
            }
            Err(error) if is_conflict(&error) => report.conflicts += 1,
            Err(error) => report.problem(format!("storing certificate {}: {error}", request.id)),
        }
    }
}

/// The server-side apply body of a HostConfig; fields the current spec has and the desired one
/// lacks are sent as null so they are removed.
pub fn host_config_body(name: &str, desired: &HostConfigSpec, current: Option<&HostConfig>) -> serde_json::Value {
    let mut spec = serde_json::to_value(desired).unwrap_or_default();
    if let Some(current) = current {
        null_removed_fields(&serde_json::to_value(&current.spec).unwrap_or_default(), &mut spec);
    }
    json!({
        "apiVersion": HostConfig::api_version(&()),
        "kind": HostConfig::kind(&()),
        "metadata": { "name": name, "labels": { MANAGED_BY_LABEL: MANAGED_BY_VALUE } },
        "spec": spec,
    })
}

fn host_config_current(desired: &HostConfigSpec, current: &HostConfig) -> bool {
    serde_json::to_value(desired).ok() == serde_json::to_value(&current.spec).ok()
        && current.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

async fn apply_host_configs<C: Catalog>(
    ctx: &Context<C>,
    world: &World,
    plan: &PlanOutput,
    report: &mut ReconcileReport,
) {
    let api: Api<HostConfig> = Api::all(ctx.client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (name, desired) in &plan.host_configs {
        let current = world.host_configs.get(name);
        if current.is_some_and(|current| host_config_current(desired, current)) {
            continue;
        }
        match api.patch(name, &params, &Patch::Apply(host_config_body(name, desired, current))).await {
            Ok(_) => {
                report.host_config_applies += 1;
                tracing::info!(host_config = %name, "HostConfig applied");
            }
            Err(error) if is_conflict(&error) => report.conflicts += 1,
            Err(error) => report.problem(format!("applying HostConfig {name}: {error}")),
        }
    }
    for (name, current) in &world.host_configs {
        if plan.host_configs.contains_key(name) || current.meta().deletion_timestamp.is_some() {
            continue;
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

/// Short CamelCase name of an action, for metrics and Events (no parameters: they may name accounts).
pub fn action_kind(action: &SqlAction) -> &'static str {
    match action {
        SqlAction::CreateListener { .. } => "CreateListener",
        SqlAction::EnableScaleOut { .. } => "EnableScaleOut",
        SqlAction::EncryptMasterKeyByServiceKey { .. } => "EncryptMasterKeyByServiceKey",
        SqlAction::StoreMasterKeyPassword { .. } => "StoreMasterKeyPassword",
        SqlAction::SetLoggingLoginPassword { .. } => "SetLoggingLoginPassword",
        SqlAction::CreateLoggingLoginWithSid { .. } => "CreateLoggingLoginWithSid",
        SqlAction::UpdateLogDbInfo { .. } => "UpdateLogDbInfo",
        SqlAction::UpdateMasterAddress { .. } => "UpdateMasterAddress",
        SqlAction::CreateWindowsLogin { .. } => "CreateWindowsLogin",
        SqlAction::GrantSsisAdmin { .. } => "GrantSsisAdmin",
        SqlAction::RegisterAlwaysOnReplica { .. } => "RegisterAlwaysOnReplica",
        SqlAction::EnableWorkerAgent { .. } => "EnableWorkerAgent",
        SqlAction::DisableWorkerAgent { .. } => "DisableWorkerAgent",
        SqlAction::SetWorkerAgentProperty { .. } => "SetWorkerAgentProperty",
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

fn action_replica(action: &SqlAction) -> &str {
    match action {
        SqlAction::CreateListener { replica, .. }
        | SqlAction::EnableScaleOut { replica }
        | SqlAction::EncryptMasterKeyByServiceKey { replica, .. }
        | SqlAction::StoreMasterKeyPassword { replica, .. }
        | SqlAction::SetLoggingLoginPassword { replica, .. }
        | SqlAction::CreateLoggingLoginWithSid { replica, .. }
        | SqlAction::UpdateLogDbInfo { replica, .. }
        | SqlAction::UpdateMasterAddress { replica, .. }
        | SqlAction::CreateWindowsLogin { replica, .. }
        | SqlAction::GrantSsisAdmin { replica, .. }
        | SqlAction::RegisterAlwaysOnReplica { replica, .. }
        | SqlAction::EnableWorkerAgent { replica, .. }
        | SqlAction::DisableWorkerAgent { replica, .. }
        | SqlAction::SetWorkerAgentProperty { replica, .. } => replica,
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
    let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    match ctx.recorder.publish(&event, &object.object_ref(&())).await {
        Ok(()) => report.events += 1,
        Err(error) => tracing::warn!(%error, reason, "publishing Event failed"),
    }
}

/// Add the cleanup finalizer on first sight; remove it once the planner no longer needs the object.
async fn finalizers<C: Catalog>(ctx: &Context<C>, world: &World, plan: &PlanOutput, report: &mut ReconcileReport) {
    for worker in &world.input.workers {
        let finalizable = super::plan_hooks::worker_finalizable(plan, worker);
        reconcile_finalizer(ctx, worker, finalizable, report).await;
    }
    for master in &world.input.master_groups {
        let finalizable = super::plan_hooks::master_group_finalizable(plan, master);
        reconcile_finalizer(ctx, master, finalizable, report).await;
    }
}

/// Finalizer list patch guarded by resourceVersion: a 409 means the object changed; re-read next pass.
async fn reconcile_finalizer<C: Catalog, K>(
    ctx: &Context<C>,
    object: &K,
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
    let wanted: Vec<String> = if !deleting && !has {
        finalizers.iter().cloned().chain([FINALIZER.to_string()]).collect()
    } else if deleting && has && finalizable {
        finalizers.iter().filter(|f| *f != FINALIZER).cloned().collect()
    } else {
        return;
    };
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let patch = json!({ "metadata": { "finalizers": wanted, "resourceVersion": object.resource_version() } });
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

/// Delete superseded certificate Secrets nobody references any more (after a rotation finished).
async fn collect_certificate_secrets<C: Catalog>(
    ctx: &Context<C>,
    world: &World,
    plan: &PlanOutput,
    report: &mut ReconcileReport,
) {
    let newest: BTreeSet<&str> = world.input.issued_certificates.values().map(|c| c.secret_name.as_str()).collect();
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    let specs = plan.host_configs.values().chain(world.host_configs.values().map(|h| &h.spec));
    for spec in specs {
        for certificate in &spec.certificates {
            if let Some(source) = &certificate.source {
                referenced.insert(source.secret_name.clone());
            }
        }
    }
    // Status may still point at material mid-rotation.
    for status in plan.master_group_statuses.values() {
        referenced.extend(status.certificate.iter().filter_map(|c| c.host_secret_name.clone()));
        referenced.extend(status.rotation.iter().filter_map(|r| r.to_host_secret_name.clone()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    for secret in &world.managed_secrets {
        let name = secret.name_any();
        let is_certificate =
            secret.labels().contains_key(CERTIFICATE_ID_LABEL) && parse_certificate_secret(secret).is_some();
        if !is_certificate || newest.contains(name.as_str()) || referenced.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                report.secret_writes += 1;
                tracing::info!(secret = %name, "superseded certificate Secret deleted");
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => report.problem(format!("deleting Secret {name}: {error}")),
        }
    }
}
