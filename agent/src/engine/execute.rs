//! Step 4: run the plan against the host, then decide and run service start/stop/restart from
//! what changed. Every successful write is counted in the [`ApplyReport`].

use std::collections::{BTreeMap, BTreeSet};

use ssis_crds::{HostConfigSpec, ServiceRole};

use super::applied_state::{self, AppliedState};
use super::observe::Observed;
use super::plan::{Action, Plan, ServiceAction, plan_service_actions};
use super::validate::item_names;
use super::{ActionKind, ApplyReport};
use crate::host::simulated::win32_codes;
use crate::host::{Host, HostError, ServiceInfo};

/// What happened to each item that had steps.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    /// Items all of whose steps succeeded.
    pub changed: BTreeSet<String>,
    /// Items with a failed step, with the error.
    pub failed: BTreeMap<String, String>,
    /// Items whose steps were skipped because an item they depend on failed.
    pub skipped: BTreeMap<String, String>,
    /// What each changed item did (for status messages).
    pub done: BTreeMap<String, Vec<String>>,
}

fn describe(action: &Action) -> String {
    match action {
        Action::ImportPfx { store, thumbprint, .. } => {
            format!("imported {thumbprint} with its private key into {store:?}")
        }
        Action::ImportCertificate { store, thumbprint, .. } => format!("imported {thumbprint} into {store:?}"),
        Action::GrantPrivateKeyRead { account, .. } => format!("granted {account} read access to the private key"),
        Action::WriteRegistry { key, value_name, .. } => {
            format!("wrote HKLM\\{key}\\{}", value_name.as_deref().unwrap_or("(Default)"))
        }
        Action::WriteFile { path, .. } => format!("wrote {path}"),
        Action::SetSslBinding { ip_port, thumbprint, .. } => format!("bound {ip_port} to {thumbprint}"),
        Action::SetStartType { start_type, .. } => format!("set start type {start_type:?}"),
        Action::SetLogon { account, .. } => format!("set logon account {account}"),
        Action::RemoveCertificate { store, thumbprint } => format!("removed {thumbprint} from {store:?}"),
        Action::CreateClusterRole { request } => format!("created cluster role {}", request.name),
    }
}

fn run(host: &mut dyn Host, action: &Action) -> Result<ActionKind, HostError> {
    match action {
        Action::ImportPfx { store, thumbprint, pfx, password } => {
            let imported = host.import_pfx(*store, pfx, password)?;
            verify_thumbprint(&imported, thumbprint)?;
            Ok(ActionKind::CertificateImport)
        }
        Action::ImportCertificate { store, thumbprint, der } => {
            let imported = host.import_certificate(*store, der)?;
            verify_thumbprint(&imported, thumbprint)?;
            Ok(ActionKind::CertificateImport)
        }
        Action::GrantPrivateKeyRead { store, thumbprint, account } => {
            host.grant_private_key_read(*store, thumbprint, account).map(|()| ActionKind::PrivateKeyGrant)
        }
        Action::WriteRegistry { key, value_name, data } => {
            host.write_registry(key, value_name.as_deref(), data).map(|()| ActionKind::RegistryWrite)
        }
        Action::WriteFile { path, content } => host.write_file_atomic(path, content).map(|()| ActionKind::FileWrite),
        Action::SetSslBinding { ip_port, thumbprint, store, app_id } => {
            host.set_ssl_binding(ip_port, thumbprint, *store, app_id).map(|()| ActionKind::SslBindingWrite)
        }
        Action::SetStartType { service, start_type } => {
            host.set_service_start_type(service, *start_type).map(|()| ActionKind::ServiceConfigChange)
        }
        Action::SetLogon { service, account, password } => {
            host.set_service_logon(service, account, password).map(|()| ActionKind::ServiceConfigChange)
        }
        Action::RemoveCertificate { store, thumbprint } => {
            host.remove_certificate(*store, thumbprint).map(|_| ActionKind::CertificateRemoval)
        }
        Action::CreateClusterRole { request } => {
            host.create_cluster_role(request).map(|()| ActionKind::ClusterRoleCreate)
        }
    }
}

fn verify_thumbprint(imported: &str, expected: &str) -> Result<(), HostError> {
    if imported.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(HostError::Invalid(format!("the host imported certificate {imported}, expected {expected}")))
    }
}

/// Windows' "already running" on start means the goal is reached (the cluster or another actor
/// started it meanwhile; it loaded the current configuration).
fn start(host: &mut dyn Host, service: &str) -> Result<(), HostError> {
    match host.start_service(service) {
        Err(HostError::Os { code, .. }) if code == win32_codes::SERVICE_ALREADY_RUNNING => Ok(()),
        other => other,
    }
}

fn stop(host: &mut dyn Host, service: &str) -> Result<(), HostError> {
    match host.stop_service(service) {
        Err(HostError::Os { code, .. }) if code == win32_codes::SERVICE_NOT_ACTIVE => Ok(()),
        other => other,
    }
}

pub fn execute(
    host: &mut dyn Host,
    spec: &HostConfigSpec,
    plan: &Plan,
    observed: &Observed,
    applied: &AppliedState,
    report: &mut ApplyReport,
) -> Outcomes {
    let mut outcomes = Outcomes::default();
    // Record the restarts this pass's changes will need before making them: an agent killed after
    // a change but before the restart would otherwise leave the service on its old configuration.
    let changing: BTreeSet<&str> = plan.steps.iter().map(|step| step.item.as_str()).collect();
    let mut on_disk = applied.clone();
    let intended: BTreeSet<String> = spec
        .services
        .iter()
        .filter(|s| s.restart_on_change_of.iter().any(|item| changing.contains(item.as_str())))
        .map(|s| s.role.service_name(spec.sql_version))
        .collect();
    if !intended.is_subset(&applied.pending_restarts) {
        let mut pending = applied.clone();
        pending.pending_restarts.extend(intended);
        if applied_state::save(host, &pending).is_ok() {
            report.record(ActionKind::AgentStateWrite);
            on_disk = pending;
        }
    }
    for step in &plan.steps {
        if outcomes.failed.contains_key(&step.item) || outcomes.skipped.contains_key(&step.item) {
            continue;
        }
        if let Some(dependency) =
            step.depends_on.iter().find(|d| outcomes.failed.contains_key(*d) || outcomes.skipped.contains_key(*d))
        {
            outcomes
                .skipped
                .insert(step.item.clone(), format!("waiting for {dependency}, which did not apply in this pass"));
            continue;
        }
        match run(host, &step.action) {
            Ok(kind) => {
                report.record(kind);
                outcomes.done.entry(step.item.clone()).or_default().push(describe(&step.action));
            }
            Err(error) => {
                report.failed_steps += 1;
                outcomes.failed.insert(step.item.clone(), format!("{}: {error}", describe(&step.action)));
            }
        }
    }
    for item in outcomes.done.keys() {
        if !outcomes.failed.contains_key(item) {
            outcomes.changed.insert(item.clone());
        }
    }

    // Services: the run state and restarts, from what changed in this pass.
    let current: BTreeMap<ServiceRole, Option<ServiceInfo>> = spec
        .services
        .iter()
        .map(|s| {
            let name = s.role.service_name(spec.sql_version);
            let info = host
                .query_service(&name)
                .ok()
                .flatten()
                .or_else(|| observed.services.get(&s.role).and_then(|r| r.as_ref().ok()).cloned().flatten());
            (s.role, info)
        })
        .collect();
    let changed: Vec<String> = outcomes.changed.iter().cloned().collect();
    let blocked_or_failed = |item: &str| {
        plan.blocked
            .get(item)
            .is_some_and(|b| b.state != ssis_crds::ItemState::Pending && b.reason != "WaitingForSecret")
            || outcomes.failed.contains_key(item)
    };
    let (actions, mut next_state) = plan_service_actions(spec, &blocked_or_failed, &current, &changed, applied);
    let restarts: BTreeSet<String> = actions
        .iter()
        .filter_map(|a| match a {
            ServiceAction::Restart { service, .. } => Some(service.clone()),
            _ => None,
        })
        .collect();
    if !restarts.is_empty() {
        // Record the decision first, so a crash between stop and start cannot lose it.
        let mut pending = on_disk.clone();
        pending.pending_restarts.extend(restarts.iter().cloned());
        if pending != on_disk && applied_state::save(host, &pending).is_ok() {
            report.record(ActionKind::AgentStateWrite);
            on_disk = pending;
        }
    }
    for action in &actions {
        let (item, result, kind, what) = match action {
            ServiceAction::Start { role, service } => (
                item_names::service(*role),
                start(host, service),
                ActionKind::ServiceStart,
                format!("started {service}"),
            ),
            ServiceAction::Stop { role, service } => {
                (item_names::service(*role), stop(host, service), ActionKind::ServiceStop, format!("stopped {service}"))
            }
            ServiceAction::Restart { role, service, because } => {
                let result = stop(host, service).and_then(|()| start(host, service));
                let what = format!("restarted {service} because of {}", because.join(", "));
                (item_names::service(*role), result, ActionKind::ServiceRestart, what)
            }
        };
        match result {
            Ok(()) => {
                report.record(kind);
                outcomes.done.entry(item.clone()).or_default().push(what);
                outcomes.changed.insert(item);
            }
            Err(error) => {
                report.failed_steps += 1;
                if let ServiceAction::Restart { service, .. } = action {
                    next_state.pending_restarts.insert(service.clone());
                }
                outcomes.failed.insert(item, format!("{what}: {error}"));
            }
        }
    }
    if next_state != on_disk {
        match applied_state::save(host, &next_state) {
            Ok(()) => report.record(ActionKind::AgentStateWrite),
            Err(error) => {
                report.failed_steps += 1;
                tracing::warn!(%error, "could not record applied restart tokens");
            }
        }
    }
    report.changed_items = outcomes.changed.iter().cloned().collect();
    outcomes
}
