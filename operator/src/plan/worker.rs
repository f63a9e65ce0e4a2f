//! Scale Out Workers: reference §7 (two certificates), §8 (connecting a worker, steps 3-8), the
//! worker certificate change of §7, removal (§5.4) and pitfalls 1, 3, 4, 14.

use std::collections::{BTreeMap, BTreeSet};

use ssis_crds::{
    CertStore, Contributor, Ensure, HostConfigSpec, HostService, RotationPhase, RotationStatus, ScaleOutWorker,
    ScaleOutWorkerStatus, SecretKeyRef, ServiceLogon, ServiceRole, ServiceRunState, ServiceStartType, SqlVersion,
    WorkerNodeStatus, WorkerPhase, WorkerSettings, host_secret_keys,
};

use super::availability_group::check_secret_key;
use super::certificates::{
    HostMaterial, absent, cert_item, next_worker_phase, request_unless_issued, rotation_target, start_rotation,
    wanted_certificate,
};
use super::conditions::Findings;
use super::inventory::{AGENT_STALE_AFTER, Owner, item_name, selector_matches};
use super::master::{MasterGroupPlan, pending_items};
use super::merge::Contribution;
use super::{ObjectKey, Pass, PlanInput, SecretCopy, SqlStage, namespace_of, object_key};
use crate::catalog::{CatalogObservation, SqlAction, WorkerAgentRow};

const KIND: &str = "ScaleOutWorker";

/// The nodes a ScaleOutWorker selects, resolved before planning (for conflict detection).
#[derive(Clone, Debug)]
pub struct ResolvedNodes {
    pub key: ObjectKey,
    /// `namespace/name` of the referenced master group.
    pub group: Option<ObjectKey>,
    /// SQL version of the referenced master group, when it exists.
    pub version: Option<SqlVersion>,
    /// The worker is being deleted: it selects no node any more.
    pub deleting: bool,
    /// Selected nodes, sorted; `Err((reason, message))` for an invalid selection.
    pub nodes: Result<Vec<String>, (String, String)>,
}

/// Resolve every worker's nodes: `nodeName`, or every Windows node matching `nodeSelector`
/// (new nodes join automatically; nodes that stop matching drop out and are removed).
pub fn resolve_all(input: &PlanInput) -> BTreeMap<ObjectKey, ResolvedNodes> {
    let mut all = BTreeMap::new();
    for worker in &input.workers {
        let key = object_key(&worker.metadata);
        let namespace = namespace_of(&worker.metadata);
        let group_key = format!("{namespace}/{}", worker.spec.master_group_ref.name);
        let version =
            input.master_groups.iter().find(|g| object_key(&g.metadata) == group_key).map(|g| g.spec.sql_version);
        let deleting = worker.metadata.deletion_timestamp.is_some();
        let nodes = if deleting {
            Ok(vec![])
        } else {
            match (&worker.spec.node_name, &worker.spec.node_selector) {
                (Some(node), None) => Ok(vec![node.clone()]),
                (None, Some(selector)) => {
                    let mut matched = Vec::new();
                    let mut error = None;
                    for node in input.nodes.iter().filter(|n| n.windows) {
                        match selector_matches(selector, &node.labels) {
                            Ok(true) => matched.push(node.name.clone()),
                            Ok(false) => {}
                            Err(message) => error = Some(("InvalidNodeSelector".to_string(), message)),
                        }
                    }
                    matched.sort();
                    match error {
                        Some(error) => Err(error),
                        None => Ok(matched),
                    }
                }
                _ => Err((
                    "InvalidNodeSelection".to_string(),
                    "spec: set exactly one of spec.nodeName (a single worker) or spec.nodeSelector (a pool)"
                        .to_string(),
                )),
            }
        };
        all.insert(key.clone(), ResolvedNodes { key, group: Some(group_key), version, deleting, nodes });
    }
    all
}

/// What a worker node holds of its own certificate in one phase of a worker certificate rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCertificateLayout {
    /// In the worker's My (with key) and Root, and in Root on every master node.
    pub present: Vec<HostMaterial>,
    /// Removed from all of those stores.
    pub removed: Vec<String>,
    /// `WorkerHttpsCertThumbprint`.
    pub presented: HostMaterial,
}

/// Reference §7 "Worker cert change": the new certificate is trusted on every master node before
/// the worker presents it (pitfall 3), and the old one is removed only afterwards.
pub fn worker_layout(
    phase: RotationPhase,
    current: &HostMaterial,
    next: Option<&HostMaterial>,
) -> WorkerCertificateLayout {
    let Some(next) = next.filter(|n| n.thumbprint != current.thumbprint) else {
        return WorkerCertificateLayout { present: vec![current.clone()], removed: vec![], presented: current.clone() };
    };
    match phase {
        RotationPhase::Idle
        | RotationPhase::TrustingNew
        | RotationPhase::DisablingWorkers
        | RotationPhase::SwitchingMasters => WorkerCertificateLayout {
            present: vec![current.clone(), next.clone()],
            removed: vec![],
            presented: current.clone(),
        },
        RotationPhase::SwitchingWorkers => WorkerCertificateLayout {
            present: vec![current.clone(), next.clone()],
            removed: vec![],
            presented: next.clone(),
        },
        RotationPhase::RemovingOld => WorkerCertificateLayout {
            present: vec![next.clone()],
            removed: vec![current.thumbprint.clone()],
            presented: next.clone(),
        },
    }
}

/// Everything one worker CR needs while planning its nodes.
struct WorkerContext<'a> {
    worker: &'a ScaleOutWorker,
    key: ObjectKey,
    namespace: String,
    group: Option<&'a MasterGroupPlan>,
    catalog: Option<(ObjectKey, &'a CatalogObservation)>,
    logon: Option<ServiceLogon>,
    key_readers: Vec<String>,
    contributor: Contributor,
}

/// Plan one ScaleOutWorker: every selected node enrolled (reference §8), every node that left
/// removed, and its status.
pub(crate) fn plan_worker(
    pass: &mut Pass,
    worker: &ScaleOutWorker,
    groups: &BTreeMap<ObjectKey, MasterGroupPlan>,
    resolved_all: &BTreeMap<ObjectKey, ResolvedNodes>,
) {
    let input = pass.input;
    let key = object_key(&worker.metadata);
    let namespace = namespace_of(&worker.metadata).to_string();
    let spec = &worker.spec;
    let previous = worker.status.clone().unwrap_or_default();
    let deleting = worker.metadata.deletion_timestamp.is_some();
    let mut findings = Findings::default();
    let group_key = format!("{namespace}/{}", spec.master_group_ref.name);
    let group = groups.get(&group_key);
    if group.is_none() && !deleting {
        findings.stall(
            "MasterGroupNotFound",
            format!(
                "spec.masterGroupRef.name: ScaleOutMasterGroup {group_key} does not exist; create it or fix the name"
            ),
        );
    }
    let desired: Vec<String> = match resolved_all.get(&key).map(|r| &r.nodes) {
        Some(Ok(nodes)) => nodes.clone(),
        Some(Err((reason, message))) => {
            findings.stall(reason, message.clone());
            vec![]
        }
        None => vec![],
    };
    if !deleting && desired.is_empty() && spec.node_selector.is_some() && findings.stalled.is_empty() {
        findings.progress(
            "NoMatchingNodes",
            "spec.nodeSelector matches no Windows node yet; label nodes to add them to the pool",
        );
    }

    // Worker service logon (reference §1); its password is copied for the agent.
    let logon = spec.service_account.as_ref().map(|account| {
        let copy_name = super::certificates::logon_secret_name(KIND, &key);
        let secret = &account.password_secret_ref;
        if check_secret_key(
            input,
            &namespace,
            &secret.name,
            &secret.key,
            "spec.serviceAccount.passwordSecretRef",
            &mut findings,
        ) {
            pass.output.secret_copies.insert(
                copy_name.clone(),
                SecretCopy {
                    owner: format!("ScaleOutWorker/{key}"),
                    source_namespace: namespace.clone(),
                    source_name: secret.name.clone(),
                    source_key: secret.key.clone(),
                    target_key: host_secret_keys::PASSWORD.into(),
                },
            );
        }
        ServiceLogon {
            username: account.username.clone(),
            password_secret_ref: SecretKeyRef { name: copy_name, key: host_secret_keys::PASSWORD.into() },
        }
    });
    let version = group.map(|g| g.version).unwrap_or_default();
    // Pitfall 4: the worker service account must read its certificate's private key.
    let key_readers = vec![
        spec.service_account
            .as_ref()
            .map(|a| a.username.clone())
            .unwrap_or_else(|| format!("NT Service\\{}", version.worker_service_name())),
    ];
    let catalog = group
        .and_then(|g| g.availability_group.as_ref())
        .and_then(|ag| input.catalogs.get(ag).map(|o| (ag.clone(), o)));
    let context = WorkerContext {
        worker,
        key: key.clone(),
        namespace: namespace.clone(),
        group,
        catalog,
        logon,
        key_readers,
        contributor: Contributor {
            kind: KIND.into(),
            namespace: namespace.clone(),
            name: worker.metadata.name.clone().unwrap_or_default(),
        },
    };

    let previous_nodes: BTreeMap<&str, &WorkerNodeStatus> =
        previous.nodes.iter().map(|n| (n.node_name.as_str(), n)).collect();
    let mut statuses = Vec::new();
    for node in &desired {
        let status =
            plan_enrolled_node(pass, &context, node, previous_nodes.get(node.as_str()).copied(), &mut findings);
        statuses.push(status);
    }
    let mut removals_pending = false;
    for (node, previous_node) in &previous_nodes {
        if desired.iter().any(|d| d == node) {
            continue;
        }
        let claimed_by_other = resolved_all
            .values()
            .any(|r| r.key != key && !r.deleting && r.nodes.as_ref().is_ok_and(|n| n.iter().any(|x| x == node)));
        if let Some(status) = plan_removal(pass, &context, node, previous_node, claimed_by_other) {
            findings.progress("RemovingWorker", status.message.clone().unwrap_or_default());
            statuses.push(status);
            removals_pending = true;
        }
    }
    statuses.sort_by(|a, b| a.node_name.cmp(&b.node_name));
    if deleting && !removals_pending {
        pass.output.finalizable.insert(key.clone());
    }

    let ready = statuses.iter().filter(|s| s.phase == WorkerPhase::Ready).count();
    let status = ScaleOutWorkerStatus {
        observed_generation: worker.metadata.generation,
        conditions: findings.conditions(
            &format!("{ready} worker(s) enrolled and in the desired state"),
            worker.metadata.generation,
            &previous.conditions,
            input.now,
        ),
        summary: Some(format!("{ready}/{}", desired.len())),
        nodes: statuses,
    };
    pass.output.worker_statuses.insert(key, status);
}

fn node_status(node: &str, phase: WorkerPhase, message: Option<String>) -> WorkerNodeStatus {
    WorkerNodeStatus { node_name: node.to_string(), phase, message, ..Default::default() }
}

/// Enroll one node (reference §8 steps 3-8).
fn plan_enrolled_node(
    pass: &mut Pass,
    context: &WorkerContext,
    node: &str,
    previous: Option<&WorkerNodeStatus>,
    findings: &mut Findings,
) -> WorkerNodeStatus {
    let owner = Owner::Worker(context.key.clone());
    let keep = |mut status: WorkerNodeStatus| {
        if let Some(previous) = previous {
            status.worker_agent_id = previous.worker_agent_id.clone();
            status.certificate_thumbprint = previous.certificate_thumbprint.clone();
            status.certificate_not_after = previous.certificate_not_after.clone();
            status.rotating_to_thumbprint = previous.rotating_to_thumbprint.clone();
            status.certificate_rotation = previous.certificate_rotation.clone();
        }
        status
    };
    if let Some((reason, message)) = pass.conflicts.get(&owner, node) {
        findings.stall(reason, message.clone());
        return keep(node_status(node, WorkerPhase::Failed, Some(message.clone())));
    }
    let field = if context.worker.spec.node_name.is_some() { "spec.nodeName" } else { "spec.nodeSelector" };
    if let Some(problem) = pass.inventory.node_problem(node) {
        let message = problem.describe(node, field);
        findings.stall(problem.reason(), message.clone());
        return keep(node_status(node, WorkerPhase::Failed, Some(message)));
    }
    let Some(group) = context.group else {
        return keep(node_status(node, WorkerPhase::Pending, Some("waiting for the master group".into())));
    };
    let Some(master_certificate) = &group.certificate else {
        let message = format!("node {node}: waiting for the master certificate of {}", group.key);
        findings.progress("WaitingForMasterCertificate", message.clone());
        return keep(node_status(node, WorkerPhase::Pending, Some(message)));
    };

    let certificate = plan_worker_certificate(pass, context, node, previous, group, findings);
    let Some((layout, mut status)) = certificate else {
        let message = format!("node {node}: waiting for its worker certificate to be issued");
        findings.progress("IssuingCertificate", message.clone());
        return keep(node_status(node, WorkerPhase::Pending, Some(message)));
    };

    // Reference §8 step 3: the master certificate (public) in the worker's Root (pitfall 1).
    let mut items = HostConfigSpec { sql_version: group.version, ..Default::default() };
    for material in &master_certificate.trusted {
        items.certificates.push(material.public(cert_item::master_trust(&material.thumbprint), CertStore::Root));
    }
    for thumbprint in &master_certificate.removed {
        items.certificates.push(absent(cert_item::master_trust(thumbprint), CertStore::Root, thumbprint));
    }
    // Reference §7: the worker's own certificate with its key in My (readable by the worker service
    // account, pitfall 4) and its public part in the worker's Root.
    for material in &layout.present {
        items.certificates.push(material.with_key(
            cert_item::worker_own(&material.thumbprint),
            CertStore::My,
            context.key_readers.clone(),
        ));
        items.certificates.push(material.public(cert_item::worker_trust(&material.thumbprint), CertStore::Root));
    }
    for thumbprint in &layout.removed {
        items.certificates.push(absent(cert_item::worker_own(thumbprint), CertStore::My, thumbprint));
        items.certificates.push(absent(cert_item::worker_trust(thumbprint), CertStore::Root, thumbprint));
    }
    // Reference §8 step 5: WorkerSettings.config.
    items.worker_settings = Some(WorkerSettings {
        master_endpoint: group.endpoint.clone(),
        master_https_cert_thumbprint: master_certificate.pinned_by_workers.thumbprint.clone(),
        worker_https_cert_thumbprint: layout.presented.thumbprint.clone(),
    });
    // Pitfall 3: the worker certificate in Root on EVERY master node, not only the active one.
    let masters_not_trusting: Vec<&String> = group
        .nodes
        .iter()
        .filter(|m| {
            !pass.inventory.certificate_applied(m, CertStore::Root, &layout.presented.thumbprint, Ensure::Present)
        })
        .collect();
    // Reference §8 step 6: restart the worker; once more when its certificate first becomes trusted
    // on every master, so it reconnects instead of waiting out a failed handshake.
    items.services.push(HostService {
        role: ServiceRole::ScaleOutWorker,
        state: ServiceRunState::Running,
        start_type: Some(ServiceStartType::Automatic),
        logon: context.logon.clone(),
        restart_on_change_of: vec![
            item_name::WORKER_SETTINGS.to_string(),
            item_name::certificate(&cert_item::master_trust(&master_certificate.pinned_by_workers.thumbprint)),
            item_name::certificate(&cert_item::worker_own(&layout.presented.thumbprint)),
        ],
        restart_token: masters_not_trusting.is_empty().then(|| {
            format!(
                "trusted-{}-{}",
                short(&layout.presented.thumbprint),
                short(&master_certificate.pinned_by_workers.thumbprint)
            )
        }),
    });
    for master in &group.nodes {
        let mut trust = HostConfigSpec { sql_version: group.version, ..Default::default() };
        for material in &layout.present {
            trust.certificates.push(material.public(cert_item::worker_trust(&material.thumbprint), CertStore::Root));
        }
        for thumbprint in &layout.removed {
            trust.certificates.push(absent(cert_item::worker_trust(thumbprint), CertStore::Root, thumbprint));
        }
        pass.contributions.push(Contribution {
            node: master.clone(),
            contributor: context.contributor.clone(),
            version: group.version,
            items: trust,
        });
    }

    // Phase of the node.
    let pending = pending_items(pass, node, &items);
    pass.contributions.push(Contribution {
        node: node.to_string(),
        contributor: context.contributor.clone(),
        version: group.version,
        items,
    });
    let agent_id = pass.inventory.worker_agent_id(node);
    status.worker_agent_id = agent_id.clone().or(status.worker_agent_id);
    if let Some(problem) = pass.inventory.agent_problem(node) {
        let message = problem.describe(node);
        findings.progress("AgentNotReporting", message.clone());
        status.phase = WorkerPhase::Pending;
        status.message = Some(message);
        return status;
    }
    if pass.inventory.service_installed(node, ServiceRole::ScaleOutWorker) == Some(false) {
        let message = format!(
            "node {node}: the Scale Out Worker service is not installed; install it with SQL Server setup (feature IS_Worker)"
        );
        findings.stall("WorkerServiceNotInstalled", message.clone());
        status.phase = WorkerPhase::Failed;
        status.message = Some(message);
        return status;
    }
    let failed = pass.inventory.failed_items(node, |name| {
        name.starts_with("certificate/")
            || name == item_name::WORKER_SETTINGS
            || name == item_name::service(ServiceRole::ScaleOutWorker)
    });
    if !failed.is_empty() {
        let message = format!("node {node}: {}", failed.join("; "));
        findings.progress("HostItemFailed", message.clone());
        status.phase = WorkerPhase::Failed;
        status.message = Some(message);
        return status;
    }
    if !pending.is_empty() || !masters_not_trusting.is_empty() {
        let mut waiting = pending;
        waiting.extend(masters_not_trusting.iter().map(|m| format!("trust on master node {m}")));
        let message = format!("node {node}: applying {}", waiting.join(", "));
        findings.progress("ConfiguringWorker", message.clone());
        status.phase = WorkerPhase::Configuring;
        status.message = Some(message);
        return status;
    }

    // Reference §8 step 7: wait for the worker to register itself, matched by its AgentId.
    let Some(agent_id) = agent_id else {
        let message =
            format!("node {node}: the agent has not reported the worker's AgentId from WorkerSettings.config yet");
        findings.progress("RegisteringWorker", message.clone());
        status.phase = WorkerPhase::Registering;
        status.message = Some(message);
        return status;
    };
    let duplicates = pass.inventory.other_nodes_with_agent_id(node, &agent_id);
    if !duplicates.is_empty() {
        let message = format!(
            "node {node}: AgentId {agent_id} is also used by {} (a cloned image?); give each worker its own AgentId in WorkerSettings.config and restart the worker",
            duplicates.join(", ")
        );
        findings.stall("DuplicateAgentId", message.clone());
        status.phase = WorkerPhase::Failed;
        status.message = Some(message);
        return status;
    }
    let Some((ag_key, observation)) = &context.catalog else {
        let message = format!("node {node}: waiting for the SQL observation to see the worker register");
        findings.progress("RegisteringWorker", message.clone());
        status.phase = WorkerPhase::Registering;
        status.message = Some(message);
        return status;
    };
    let (Some(primary), Some(ssisdb)) = (observation.primary.as_deref(), observation.ssisdb.as_ref()) else {
        let message = format!("node {node}: {ag_key} has no readable primary; waiting");
        findings.progress("RegisteringWorker", message.clone());
        status.phase = WorkerPhase::Registering;
        status.message = Some(message);
        return status;
    };
    let Some(row) = ssisdb.worker_agents.iter().find(|r| r.worker_agent_id.eq_ignore_ascii_case(&agent_id)) else {
        let message = format!(
            "node {node}: waiting for worker {agent_id} to register itself in catalog.worker_agents (several minutes after its restart)"
        );
        findings.progress("RegisteringWorker", message.clone());
        status.phase = WorkerPhase::Registering;
        status.message = Some(message);
        return status;
    };
    status.registered = true;
    status.enabled = row.is_enabled;
    status.last_online_time =
        reported_online_time(previous.and_then(|p| p.last_online_time.as_deref()), row.last_online_time.as_deref());

    // Reference §8 steps 7-8 and pitfall 14: enable (or disable) only after registration.
    let mut actions = worker_agent_actions(context, node, primary, &agent_id, row);
    // Reference §7 "Master cert change": while the group's master certificate rotation switches
    // masters and workers, the workers stay disabled (the master group disables them); enabling
    // resumes once every worker pins the new certificate.
    let paused = context.group.is_some_and(|g| g.pauses_workers);
    if paused {
        actions.retain(|(_, action)| !matches!(action, SqlAction::EnableWorkerAgent { .. }));
    }
    if paused && context.worker.spec.enabled {
        for (stage, action) in &actions {
            pass.sql(ag_key, *stage, action.clone());
        }
        let message = format!("node {node}: disabled during master certificate rotation");
        findings.progress("PausedForMasterCertificateRotation", message.clone());
        status.phase = WorkerPhase::Enabling;
        status.message = Some(message);
    } else if actions.is_empty() {
        status.phase = WorkerPhase::Ready;
        status.message = None;
    } else {
        let message = format!("node {node}: setting the worker's catalog properties and enabled state");
        findings.progress("EnablingWorker", message.clone());
        status.phase = WorkerPhase::Enabling;
        status.message = Some(message);
        for (stage, action) in actions {
            pass.sql(ag_key, stage, action);
        }
    }
    status
}

/// `LastOnlineTime` moves with every worker heartbeat (about once a minute); status keeps the
/// reported value until it is [`AGENT_STALE_AFTER`] old, so a converged pool is not rewritten on
/// every resync.
fn reported_online_time(previous: Option<&str>, observed: Option<&str>) -> Option<String> {
    let parse = |t: &str| t.parse::<jiff::Timestamp>().ok();
    match (previous.and_then(parse), observed.and_then(parse)) {
        (Some(p), Some(o)) if o >= p && o.duration_since(p) < AGENT_STALE_AFTER => previous.map(str::to_string),
        _ => observed.map(str::to_string),
    }
}

/// `catalog.set_worker_agent_property` and `catalog.enable_worker_agent` / `disable_worker_agent`
/// for a registered worker (reference §5.2, §8 steps 7-8).
fn worker_agent_actions(
    context: &WorkerContext,
    node: &str,
    primary: &str,
    agent_id: &str,
    row: &WorkerAgentRow,
) -> Vec<(SqlStage, SqlAction)> {
    let spec = &context.worker.spec;
    let mut actions = Vec::new();
    let property = |property: &str, value: String| {
        (
            SqlStage::WorkerProperties,
            SqlAction::SetWorkerAgentProperty {
                replica: primary.to_string(),
                worker_agent_id: agent_id.to_string(),
                property: property.to_string(),
                value,
            },
        )
    };
    if let Some(display_name) = &spec.display_name {
        let wanted = display_name.replace("{node}", node);
        if row.display_name.as_deref() != Some(wanted.as_str()) {
            actions.push(property("DisplayName", wanted));
        }
    }
    if let Some(description) = &spec.description
        && row.description.as_deref() != Some(description.as_str())
    {
        actions.push(property("Description", description.clone()));
    }
    if !spec.tags.is_empty() {
        let tags = spec.tags.join(",");
        if row.tags.as_deref() != Some(tags.as_str()) {
            actions.push(property("Tags", tags));
        }
    }
    let worker_agent_id = agent_id.to_string();
    let replica = primary.to_string();
    if spec.enabled && !row.is_enabled {
        actions.push((SqlStage::WorkerEnable, SqlAction::EnableWorkerAgent { replica, worker_agent_id }));
    } else if !spec.enabled && row.is_enabled {
        actions.push((SqlStage::WorkerEnable, SqlAction::DisableWorkerAgent { replica, worker_agent_id }));
    }
    actions
}

fn short(thumbprint: &str) -> &str {
    thumbprint.get(..12).unwrap_or(thumbprint)
}

/// The worker's own certificate for this node: issue, then rotate (reference §7 "Worker cert
/// change"): TrustingNew (trusted on every master) → SwitchingWorkers → RemovingOld → Idle.
fn plan_worker_certificate(
    pass: &mut Pass,
    context: &WorkerContext,
    node: &str,
    previous: Option<&WorkerNodeStatus>,
    group: &MasterGroupPlan,
    findings: &mut Findings,
) -> Option<(WorkerCertificateLayout, WorkerNodeStatus)> {
    let input = pass.input;
    let base_id = format!("worker/{}/{node}", context.key);
    let current_thumbprint = previous.and_then(|p| p.certificate_thumbprint.clone());
    let issued = &pass.issued;
    let current_issued = current_thumbprint.as_deref().and_then(|t| issued.get(t));
    let current = current_issued.map(HostMaterial::from_issued);
    let mut status = node_status(node, WorkerPhase::Configuring, None);
    let describe = |status: &mut WorkerNodeStatus, material: &HostMaterial| {
        status.certificate_thumbprint = Some(material.thumbprint.clone());
        status.certificate_not_after = issued.get(&material.thumbprint).map(|i| i.not_after.to_string());
    };

    if let (Some(current), Some(rotation)) =
        (&current, previous.and_then(|p| p.certificate_rotation.as_ref()).filter(|r| r.phase != RotationPhase::Idle))
        && let Some(target) = rotation_target(rotation)
    {
        let waiting = worker_phase_waiting_on(pass, rotation.phase, current, &target, &group.nodes, node);
        let phase = if waiting.is_empty() { next_worker_phase(rotation.phase) } else { rotation.phase };
        if phase == RotationPhase::Idle {
            describe(&mut status, &target);
            return Some((worker_layout(RotationPhase::Idle, &target, None), status));
        }
        if !waiting.is_empty() {
            findings.progress(
                "RotatingWorkerCertificate",
                format!("node {node}: worker certificate rotation {phase:?} waiting for {}", waiting.join(", ")),
            );
        }
        describe(&mut status, current);
        status.rotating_to_thumbprint = Some(target.thumbprint.clone());
        status.certificate_rotation = Some(RotationStatus { phase, ..rotation.clone() });
        return Some((worker_layout(phase, current, Some(&target)), status));
    }

    let names = [node.to_string()];
    let current_tuple =
        current_issued.map(|i| (i.thumbprint.as_str(), Some(i.not_after.to_string()), i.dns_names.as_slice()));
    let current_tuple = current_tuple.as_ref().map(|(t, n, d)| (*t, n.as_deref(), *d));
    let wanted = match wanted_certificate(
        input,
        &base_id,
        &context.namespace,
        &context.worker.spec.certificate,
        node,
        &names,
        current_tuple,
    ) {
        Ok(wanted) => wanted,
        Err((reason, message)) => {
            findings.stall(&reason, message);
            return current.map(|c| {
                describe(&mut status, &c);
                (worker_layout(RotationPhase::Idle, &c, None), status)
            });
        }
    };
    let wanted = wanted.filter(|w| current.as_ref().is_none_or(|c| !super::certificates::is_current(input, &w.id, c)));
    let issued = wanted.as_ref().and_then(|w| input.issued_certificates.get(&w.id));
    match (current, wanted, issued) {
        (Some(current), None, _) => {
            describe(&mut status, &current);
            Some((worker_layout(RotationPhase::Idle, &current, None), status))
        }
        (current, Some(wanted), None) => {
            if let Some(request) = request_unless_issued(input, &wanted) {
                pass.output.certificate_requests.push(request);
            }
            current.map(|c| {
                describe(&mut status, &c);
                (worker_layout(RotationPhase::Idle, &c, None), status)
            })
        }
        (None, Some(_), Some(issued)) => {
            let material = HostMaterial::from_issued(issued);
            describe(&mut status, &material);
            Some((worker_layout(RotationPhase::Idle, &material, None), status))
        }
        (Some(current), Some(_), Some(issued)) => {
            let next = HostMaterial::from_issued(issued);
            if current.thumbprint == next.thumbprint {
                describe(&mut status, &next);
                return Some((worker_layout(RotationPhase::Idle, &next, None), status));
            }
            describe(&mut status, &current);
            status.rotating_to_thumbprint = Some(next.thumbprint.clone());
            status.certificate_rotation = Some(start_rotation(input, &current.thumbprint, issued));
            findings.progress("RotatingWorkerCertificate", format!("node {node}: worker certificate rotation started"));
            Some((worker_layout(RotationPhase::TrustingNew, &current, Some(&next)), status))
        }
        (None, None, _) => None,
    }
}

fn worker_phase_waiting_on(
    pass: &Pass,
    phase: RotationPhase,
    old: &HostMaterial,
    new: &HostMaterial,
    master_nodes: &[String],
    node: &str,
) -> Vec<String> {
    let inventory = &pass.inventory;
    let mut waiting = Vec::new();
    match phase {
        RotationPhase::Idle => {}
        RotationPhase::TrustingNew | RotationPhase::DisablingWorkers | RotationPhase::SwitchingMasters => {
            for master in master_nodes {
                if !inventory.certificate_applied(master, CertStore::Root, &new.thumbprint, Ensure::Present) {
                    waiting.push(format!("master node {master} to trust the new worker certificate"));
                }
            }
            if !inventory.certificate_applied(node, CertStore::My, &new.thumbprint, Ensure::Present) {
                waiting.push(format!("node {node} to import the new certificate"));
            }
        }
        RotationPhase::SwitchingWorkers => {
            if !inventory.applied(node, item_name::WORKER_SETTINGS, |s| {
                s.worker_settings.as_ref().is_some_and(|w| w.worker_https_cert_thumbprint == new.thumbprint)
            }) {
                waiting.push(format!("node {node} to present the new certificate"));
            }
        }
        RotationPhase::RemovingOld => {
            for master in master_nodes {
                if !inventory.certificate_applied(master, CertStore::Root, &old.thumbprint, Ensure::Absent) {
                    waiting.push(format!("master node {master} to remove the old worker certificate"));
                }
            }
            if !inventory.certificate_applied(node, CertStore::My, &old.thumbprint, Ensure::Absent) {
                waiting.push(format!("node {node} to remove the old certificate"));
            }
        }
    }
    waiting
}

/// Remove a worker from a node that left the pool or whose ScaleOutWorker is being deleted
/// (reference §5.4: disable, stop the service, untrust its certificate on every master node).
/// `None` once removal is complete.
fn plan_removal(
    pass: &mut Pass,
    context: &WorkerContext,
    node: &str,
    previous: &WorkerNodeStatus,
    claimed_by_other: bool,
) -> Option<WorkerNodeStatus> {
    let thumbprints: BTreeSet<String> = previous
        .certificate_thumbprint
        .iter()
        .chain(previous.rotating_to_thumbprint.iter())
        .chain(
            previous.certificate_rotation.iter().flat_map(|r| r.from_thumbprint.iter().chain(r.to_thumbprint.iter())),
        )
        .cloned()
        .collect();
    let mut left = Vec::new();

    // Stop the worker service (unless another ScaleOutWorker now enrolls this node).
    let node_exists = pass.inventory.node_exists(node);
    if node_exists && !claimed_by_other {
        let version = context.group.map(|g| g.version).unwrap_or_default();
        let service = HostService {
            role: ServiceRole::ScaleOutWorker,
            state: ServiceRunState::Stopped,
            start_type: None,
            logon: None,
            restart_on_change_of: vec![],
            restart_token: None,
        };
        let stopped = pass.inventory.applied(node, &item_name::service(ServiceRole::ScaleOutWorker), |s| {
            s.services.iter().any(|x| x.role == ServiceRole::ScaleOutWorker && x.state == ServiceRunState::Stopped)
        });
        if !stopped {
            left.push(format!("stopping the worker service on {node}"));
        }
        pass.contributions.push(Contribution {
            node: node.to_string(),
            contributor: context.contributor.clone(),
            version,
            items: HostConfigSpec { sql_version: version, services: vec![service], ..Default::default() },
        });
    }

    // Untrust its certificates on every master node (pitfall 3 in reverse).
    if let Some(group) = context.group {
        for master in &group.nodes {
            let mut items = HostConfigSpec { sql_version: group.version, ..Default::default() };
            for thumbprint in &thumbprints {
                items.certificates.push(absent(cert_item::worker_trust(thumbprint), CertStore::Root, thumbprint));
                if !pass.inventory.certificate_applied(master, CertStore::Root, thumbprint, Ensure::Absent) {
                    left.push(format!("removing its certificate from master node {master}"));
                }
            }
            pass.contributions.push(Contribution {
                node: master.clone(),
                contributor: context.contributor.clone(),
                version: group.version,
                items,
            });
        }
    }

    // Disable it in the catalog.
    if let Some(agent_id) = &previous.worker_agent_id {
        match &context.catalog {
            Some((ag_key, observation)) => {
                let row = observation
                    .ssisdb
                    .as_ref()
                    .and_then(|s| s.worker_agents.iter().find(|r| r.worker_agent_id.eq_ignore_ascii_case(agent_id)));
                if let (Some(row), Some(primary)) = (row, observation.primary.as_deref())
                    && row.is_enabled
                {
                    pass.sql(
                        ag_key,
                        SqlStage::WorkerEnable,
                        SqlAction::DisableWorkerAgent {
                            replica: primary.to_string(),
                            worker_agent_id: agent_id.clone(),
                        },
                    );
                    left.push(format!("disabling worker {agent_id} in the catalog"));
                } else if observation.ssisdb.is_none() {
                    left.push(format!("waiting for the catalog to confirm worker {agent_id} is disabled"));
                }
            }
            None if context.group.and_then(|g| g.availability_group.as_ref()).is_some() => {
                left.push(format!("waiting for the SQL observation to disable worker {agent_id}"));
            }
            None => {}
        }
    }

    left.dedup();
    if left.is_empty() {
        return None;
    }
    Some(WorkerNodeStatus {
        phase: WorkerPhase::Removing,
        message: Some(format!("node {node}: {}", left.join(", "))),
        ..previous.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_rotation_presents_new_certificate_only_after_trusting_it() {
        let old = HostMaterial { thumbprint: "A".repeat(40), secret_name: "a".into() };
        let new = HostMaterial { thumbprint: "B".repeat(40), secret_name: "b".into() };
        let mut phase = RotationPhase::TrustingNew;
        let mut trusted_before = false;
        while phase != RotationPhase::Idle {
            let layout = worker_layout(phase, &old, Some(&new));
            assert!(layout.present.contains(&layout.presented), "{phase:?}: presents a certificate not in its stores");
            if layout.presented == new {
                assert!(trusted_before, "{phase:?}: presents the new certificate before masters trusted it");
            }
            trusted_before |= layout.present.contains(&new);
            phase = next_worker_phase(phase);
        }
    }
}
