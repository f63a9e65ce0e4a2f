//! Step 5: the `HostConfigStatus` (pure). Conditions follow kstatus: Ready, Reconciling, Stalled
//! (refused items). Timestamps only move when something changes, and the heartbeat at most once
//! per heartbeat interval, so a converged host produces an identical status and no API write.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use ssis_crds::{
    AgentInfo, CertStore, DriftStatus, HostConfigSpec, HostConfigStatus, ItemState, ItemStatus, ObservedCertificate,
    ObservedClusterRole, ObservedHttpSslBinding, ObservedService, ObservedSettings, condition_types,
};

use super::execute::Outcomes;
use super::observe::{ALL_ROLES, Observed, ObservedFile};
use super::plan::{Plan, service_state_text};
use super::validate::Validated;
use super::{AgentConfig, ApplyReport};
use crate::host::Host;
use crate::settings::{self, AGENT_ID_KEY, MASTER_OWNED_KEYS, WORKER_OWNED_KEYS};

pub struct StatusInput<'a> {
    pub spec: &'a HostConfigSpec,
    pub generation: i64,
    pub validated: &'a Validated,
    pub plan: &'a Plan,
    /// Observed value per item after the pass.
    pub observed_values: &'a BTreeMap<String, String>,
    pub outcomes: &'a Outcomes,
    pub observed: &'a Observed,
    pub previous: Option<&'a HostConfigStatus>,
    pub now: jiff::Timestamp,
    pub config: &'a AgentConfig,
    pub report: &'a mut ApplyReport,
    /// `windows` or `simulated`.
    pub backend: &'a str,
}

fn item_status(input: &StatusInput<'_>, item: &str, kind: ssis_crds::ItemKind) -> ItemStatus {
    let observed = input.observed_values.get(item).cloned();
    let (state, reason, message) = if let Some(blocked) = input.plan.blocked.get(item) {
        (blocked.state, blocked.reason.to_string(), Some(blocked.message.clone()))
    } else if let Some(error) = input.outcomes.failed.get(item) {
        (ItemState::Failed, "ApplyFailed".to_string(), Some(error.clone()))
    } else if let Some(why) = input.outcomes.skipped.get(item) {
        (ItemState::Pending, "WaitingForDependency".to_string(), Some(why.clone()))
    } else if let Some(done) = input.outcomes.done.get(item) {
        (ItemState::Applied, "Changed".to_string(), Some(done.join("; ")))
    } else {
        (ItemState::Applied, "UpToDate".to_string(), None)
    };
    ItemStatus { kind, name: item.to_string(), state, reason: Some(reason), message, observed }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
    previous: &[Condition],
    now: jiff::Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let unchanged = previous.iter().find(|c| c.type_ == type_).filter(|c| c.status == status && c.reason == reason);
    Condition {
        type_: type_.to_string(),
        last_transition_time: unchanged.map(|c| c.last_transition_time.clone()).unwrap_or(Time(now)),
        message,
        observed_generation: Some(generation),
        reason: reason.to_string(),
        status,
    }
}

fn conditions(items: &[ItemStatus], generation: i64, previous: &[Condition], now: jiff::Timestamp) -> Vec<Condition> {
    let names = |state: ItemState| -> Vec<String> {
        items.iter().filter(|i| i.state == state).map(|i| i.name.clone()).collect()
    };
    let (refused, failed, pending) = (names(ItemState::Refused), names(ItemState::Failed), names(ItemState::Pending));
    let first_message = |state: ItemState| {
        items
            .iter()
            .find(|i| i.state == state)
            .and_then(|i| i.message.clone().map(|m| format!("{}: {m}", i.name)))
            .unwrap_or_default()
    };
    let ready = refused.is_empty() && failed.is_empty() && pending.is_empty();
    let (ready_reason, ready_message) = if ready {
        ("Converged", format!("all {} items applied", items.len()))
    } else if !refused.is_empty() {
        ("ItemsRefused", format!("refused: {}. {}", refused.join(", "), first_message(ItemState::Refused)))
    } else if !failed.is_empty() {
        ("ApplyFailed", format!("failed: {}. {}", failed.join(", "), first_message(ItemState::Failed)))
    } else {
        ("Progressing", format!("pending: {}. {}", pending.join(", "), first_message(ItemState::Pending)))
    };
    let reconciling = !failed.is_empty() || !pending.is_empty();
    let (reconciling_reason, reconciling_message) = if !failed.is_empty() {
        ("Retrying", format!("retrying with backoff: {}", failed.join(", ")))
    } else if !pending.is_empty() {
        ("Waiting", format!("waiting: {}", pending.join(", ")))
    } else {
        ("Idle", "nothing left to apply".to_string())
    };
    let (stalled_reason, stalled_message) = if refused.is_empty() {
        ("NothingRefused", "no item is refused".to_string())
    } else {
        ("ItemsRefused", format!("fix the spec: {}", first_message(ItemState::Refused)))
    };
    vec![
        condition(condition_types::READY, ready, ready_reason, ready_message, generation, previous, now),
        condition(
            condition_types::RECONCILING,
            reconciling,
            reconciling_reason,
            reconciling_message,
            generation,
            previous,
            now,
        ),
        condition(
            condition_types::STALLED,
            !refused.is_empty(),
            stalled_reason,
            stalled_message,
            generation,
            previous,
            now,
        ),
    ]
}

fn observed_settings(file: &ObservedFile, keys: &[&str]) -> Option<ObservedSettings> {
    match &file.content {
        Ok(Some(bytes)) => Some(match settings::read_values(bytes, keys) {
            Ok((format, values)) => ObservedSettings { format: format.as_str().to_string(), values },
            Err(error) => ObservedSettings {
                format: "Unreadable".to_string(),
                values: BTreeMap::from([("error".to_string(), error.to_string())]),
            },
        }),
        Ok(None) => Some(ObservedSettings { format: "Missing".to_string(), values: BTreeMap::new() }),
        Err(_) => None,
    }
}

fn observed_certificates(
    spec: &HostConfigSpec,
    observed: &Observed,
    master: &Option<ObservedSettings>,
    worker: &Option<ObservedSettings>,
) -> Vec<ObservedCertificate> {
    // Managed (spec items) and referenced (spec settings/bindings and the settings files on disk).
    let mut wanted: BTreeSet<(CertStore, String)> = BTreeSet::new();
    for cert in &spec.certificates {
        wanted.insert((cert.store, cert.thumbprint.clone()));
    }
    for binding in &spec.http_ssl_bindings {
        wanted.insert((binding.cert_store, binding.thumbprint.clone()));
    }
    let mut referenced = |store: CertStore, value: Option<&String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            wanted.insert((store, value.to_uppercase()));
        }
    };
    if let Some(m) = &spec.master_settings {
        referenced(CertStore::Root, Some(&m.ssl_cert_thumbprint));
    }
    if let Some(w) = &spec.worker_settings {
        referenced(CertStore::Root, Some(&w.master_https_cert_thumbprint));
        referenced(CertStore::My, Some(&w.worker_https_cert_thumbprint));
    }
    if let Some(m) = master {
        referenced(CertStore::Root, m.values.get("SSLCertThumbprint"));
    }
    if let Some(w) = worker {
        referenced(CertStore::Root, w.values.get("MasterHttpsCertThumbprint"));
        referenced(CertStore::My, w.values.get("WorkerHttpsCertThumbprint"));
    }
    wanted
        .iter()
        .filter_map(|(store, thumbprint)| {
            observed.certificate(*store, thumbprint).map(|found| ObservedCertificate {
                store: *store,
                thumbprint: found.thumbprint.clone(),
                subject: Some(found.subject.clone()).filter(|s| !s.is_empty()),
                not_after: Some(found.not_after.clone()).filter(|s| !s.is_empty()),
                has_private_key: found.has_private_key,
            })
        })
        .collect()
}

/// Assemble the status and fill the drift fields of the report.
pub fn build(input: StatusInput<'_>) -> HostConfigStatus {
    let items: Vec<ItemStatus> = input.plan.items.iter().map(|(item, kind)| item_status(&input, item, *kind)).collect();
    let previous_conditions = input.previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let conditions = conditions(&items, input.generation, previous_conditions, input.now);
    let observed = input.observed;
    let spec = input.spec;

    let master_settings = observed_settings(&observed.master_settings, &MASTER_OWNED_KEYS)
        .filter(|s| spec.master_settings.is_some() || s.format != "Missing");
    let worker_keys: Vec<&str> = WORKER_OWNED_KEYS.iter().copied().chain([AGENT_ID_KEY]).collect();
    let worker_settings = observed_settings(&observed.worker_settings, &worker_keys)
        .filter(|s| spec.worker_settings.is_some() || s.format != "Missing");
    let certificates = observed_certificates(spec, observed, &master_settings, &worker_settings);
    let services = ALL_ROLES
        .iter()
        .map(|role| {
            let info = observed.services.get(role).and_then(|r| r.as_ref().ok()).cloned().flatten();
            ObservedService {
                role: *role,
                name: role.service_name(spec.sql_version),
                installed: info.is_some(),
                state: info.as_ref().map(|i| service_state_text(i.state).to_string()),
                start_type: info.as_ref().map(|i| i.start_type),
                logon_account: info.as_ref().map(|i| i.logon_account.clone()),
            }
        })
        .collect();
    let http_ssl_bindings = spec
        .http_ssl_bindings
        .iter()
        .filter_map(|b| {
            let found = observed.ssl_bindings.get(&b.ip_port)?.as_ref().ok()?.as_ref()?;
            Some(ObservedHttpSslBinding { ip_port: b.ip_port.clone(), thumbprint: found.thumbprint.clone() })
        })
        .collect();
    let cluster_role = spec.cluster_role.as_ref().map(|role| {
        let found = observed.cluster_role.as_ref().and_then(|r| r.as_ref().ok()).cloned().flatten();
        ObservedClusterRole {
            name: role.name.clone(),
            exists: found.is_some(),
            owner_node: found.as_ref().map(|f| f.owner_node.clone()),
            state: found.map(|f| f.state),
        }
    });

    // Drift: the spec did not change since a pass that had converged, yet something was written.
    let previous = input.previous;
    let converged_before = previous.is_some_and(|p| {
        p.observed_generation == Some(input.generation) && p.items.iter().all(|i| i.state == ItemState::Applied)
    });
    let mut drift = previous.and_then(|p| p.drift.clone()).unwrap_or_default();
    if converged_before && !input.report.changed_items.is_empty() {
        drift.repairs += 1;
        drift.last_repair_time = Some(input.now.to_string());
        drift.last_repaired_items = input.report.changed_items.clone();
        input.report.drift_repaired = true;
    }

    let mut status = HostConfigStatus {
        observed_generation: Some(input.generation),
        conditions,
        agent: None,
        items,
        certificates,
        services,
        master_settings,
        worker_settings,
        http_ssl_bindings,
        cluster_role,
        drift: Some(drift).filter(|d| *d != DriftStatus::default()),
    };
    status.agent = Some(agent_info(
        observed.computer_name.clone().unwrap_or_default(),
        &status,
        previous,
        input.now,
        input.config,
        input.backend,
    ));
    status
}

/// The agent block. `lastHeartbeatTime` is the time the status last changed: liveness is the
/// agent's Lease, so a converged host keeps an identical status and causes no write.
fn agent_info(
    computer_name: String,
    status: &HostConfigStatus,
    previous: Option<&HostConfigStatus>,
    now: jiff::Timestamp,
    config: &AgentConfig,
    backend: &str,
) -> AgentInfo {
    let previous_agent = previous.and_then(|p| p.agent.clone());
    let rest_unchanged = previous.is_some_and(|p| {
        let mut p = p.clone();
        p.agent = None;
        p == *status
    });
    let heartbeat = previous_agent
        .as_ref()
        .filter(|_| rest_unchanged)
        .map(|a| a.last_heartbeat_time.clone())
        .filter(|last| !last.is_empty())
        .unwrap_or_else(|| now.to_string());
    AgentInfo {
        version: config.agent_version.clone(),
        backend: backend.to_string(),
        computer_name,
        last_heartbeat_time: heartbeat,
    }
}

/// Status when the agent's own configuration is unusable (bad --program-files / --allow-root).
pub fn agent_misconfigured(
    host: &mut dyn Host,
    generation: i64,
    previous: Option<&HostConfigStatus>,
    now: jiff::Timestamp,
    config: &AgentConfig,
    problem: &str,
) -> HostConfigStatus {
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let message = format!("agent configuration: {problem}; fix the agent's flags and restart it");
    let mut status = HostConfigStatus {
        observed_generation: Some(generation),
        conditions: vec![
            condition(
                condition_types::READY,
                false,
                "AgentMisconfigured",
                message.clone(),
                generation,
                previous_conditions,
                now,
            ),
            condition(
                condition_types::RECONCILING,
                false,
                "AgentMisconfigured",
                message.clone(),
                generation,
                previous_conditions,
                now,
            ),
            condition(
                condition_types::STALLED,
                true,
                "AgentMisconfigured",
                message,
                generation,
                previous_conditions,
                now,
            ),
        ],
        ..Default::default()
    };
    let computer_name = host.computer_name().unwrap_or_default();
    status.agent = Some(agent_info(computer_name, &status, previous, now, config, host.backend_name()));
    status
}
