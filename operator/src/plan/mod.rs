//! The pure planner: from the custom resources, Secret metadata, HostConfig statuses and observed
//! SQL state, compute the desired HostConfig of every Windows node, the SQL actions and the status
//! of every custom resource. No IO here; everything is plain data in, plain data out.
//!
//! Reading order follows the reference: [`availability_group`] (§9, §10, §6 steps 4 and 6),
//! [`master`] (§6 steps 2, 3, 5, 7, 8; §7; §4), [`worker`] (§7, §8), then [`merge`] of every
//! contribution into one HostConfig per node.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use ssis_crds::{
    HostConfig, HostConfigSpec, ScaleOutMasterGroup, ScaleOutMasterGroupStatus, ScaleOutWorker, ScaleOutWorkerStatus,
    SsisdbAvailabilityGroup, SsisdbAvailabilityGroupStatus,
};

use crate::catalog::{CatalogObservation, SqlAction};

pub mod availability_group;
pub mod certificates;
pub mod conditions;
pub mod fresh_install;
pub mod inventory;
pub mod master;
pub mod merge;
pub mod topology;
pub mod worker;

/// `namespace/name` of a namespaced object.
pub type ObjectKey = String;

/// Everything the planner reads.
#[derive(Clone, Debug, Default)]
pub struct PlanInput {
    /// Current time (RFC 3339 via jiff), for certificate expiry and heartbeat staleness.
    pub now: jiff::Timestamp,
    /// Namespace the operator runs in: host-material Secrets live here.
    pub operator_namespace: String,
    pub availability_groups: Vec<SsisdbAvailabilityGroup>,
    pub master_groups: Vec<ScaleOutMasterGroup>,
    pub workers: Vec<ScaleOutWorker>,
    /// Kubernetes nodes (for pools by selector and to know which nodes are Windows nodes).
    pub nodes: Vec<NodeInfo>,
    /// Current HostConfigs, with the status their agents wrote.
    pub host_configs: Vec<HostConfig>,
    /// Metadata of referenced Secrets (never their values), by `namespace/name`.
    pub secrets: BTreeMap<ObjectKey, SecretMeta>,
    /// Certificates the operator has issued or converted into host-material Secrets, by id.
    pub issued_certificates: BTreeMap<String, IssuedCertificate>,
    /// Observed SQL state per SsisdbAvailabilityGroup (`namespace/name`); absent = not observed.
    pub catalogs: BTreeMap<ObjectKey, CatalogObservation>,
    /// Last renewal of each node agent's liveness Lease, by node name.
    pub agent_leases: BTreeMap<String, jiff::Timestamp>,
}

/// A Kubernetes node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `kubernetes.io/os=windows`.
    pub windows: bool,
}

/// Secret metadata: which keys exist and a fingerprint of the data (a hash, never the data).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretMeta {
    pub keys: BTreeSet<String>,
    pub fingerprint: String,
}

/// A certificate available as host material in an operator-namespace Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Stable id (e.g. `master/<ns>/<group>` or `worker/<ns>/<worker>/<node>`).
    pub id: String,
    /// Operator-namespace Secret with `certificate.pfx`, `pfx-password`, `certificate.der`.
    pub secret_name: String,
    /// SHA-1 thumbprint, upper-case hex.
    pub thumbprint: String,
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
    pub dns_names: Vec<String>,
    /// For certificates converted from a user TLS Secret: fingerprint of that Secret's data.
    pub source_fingerprint: Option<String>,
}

/// Everything the planner decides.
#[derive(Clone, Debug, Default)]
pub struct PlanOutput {
    /// Desired spec of every Windows node's HostConfig (nodes absent here get their HostConfig
    /// deleted once nothing references them).
    pub host_configs: BTreeMap<String, HostConfigSpec>,
    /// Certificates to issue (generate) or convert (from a user TLS Secret) before the next pass.
    pub certificate_requests: Vec<CertificateRequest>,
    /// SQL actions per SsisdbAvailabilityGroup, in execution order.
    pub sql_actions: BTreeMap<ObjectKey, Vec<SqlAction>>,
    pub availability_group_statuses: BTreeMap<ObjectKey, SsisdbAvailabilityGroupStatus>,
    pub master_group_statuses: BTreeMap<ObjectKey, ScaleOutMasterGroupStatus>,
    pub worker_statuses: BTreeMap<ObjectKey, ScaleOutWorkerStatus>,
    /// Operator-namespace Secrets to write as copies of a user Secret key (service-account
    /// passwords the agents need), by target Secret name. The apply stage copies the value; the
    /// plan never holds it.
    pub secret_copies: BTreeMap<String, SecretCopy>,
    /// Operator-namespace certificate Secrets still referenced (current and rotating-to
    /// certificates); labelled host-material Secrets not listed here can be deleted.
    pub retained_host_secrets: BTreeSet<String>,
    /// ScaleOutWorkers being deleted whose cleanup is complete (workers disabled, certificates
    /// removed from every master node, services stopped): the controller drops their finalizer.
    pub finalizable: BTreeSet<ObjectKey>,
    /// Event-worthy happenings of this pass (failover, rotation progress).
    pub events: Vec<PlanEvent>,
}

/// A copy of one key of a user Secret into the operator namespace, under
/// [`ssis_crds::host_secret_keys::PASSWORD`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretCopy {
    /// The custom resource that needs the copy, `Kind/namespace/name`.
    pub owner: String,
    pub source_namespace: String,
    pub source_name: String,
    pub source_key: String,
    pub target_key: String,
}

/// An Event the controller should publish on the object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEvent {
    /// `SsisdbAvailabilityGroup`, `ScaleOutMasterGroup` or `ScaleOutWorker`.
    pub kind: String,
    pub key: ObjectKey,
    /// `true` for a Warning event.
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// A certificate the apply stage must make available as host material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequest {
    /// Id the result is stored under (see [`IssuedCertificate::id`]).
    pub id: String,
    pub source: CertificateRequestSource,
}

/// How to obtain a requested certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CertificateRequestSource {
    /// Generate a self-signed RSA certificate.
    Generate { common_name: String, dns_names: Vec<String>, validity_days: u32 },
    /// Convert the user's `kubernetes.io/tls` Secret (`namespace/name`) into host material.
    FromTlsSecret { secret: ObjectKey },
}

/// Order of SQL actions within one availability group, following reference §6: listener (step
/// 4), catalog key (§9.3), Scale Out enabled (§5.3), logging login (step 6), Always On support
/// (§9.2 step 3), master account, master address (step 8), then workers (§8 steps 7-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SqlStage {
    Listener,
    CatalogKey,
    EnableScaleOut,
    LoggingLogin,
    LogDb,
    AlwaysOn,
    MasterAccount,
    MasterAddress,
    WorkerProperties,
    WorkerEnable,
}

/// Working state of one planning pass.
pub(crate) struct Pass<'a> {
    pub input: &'a PlanInput,
    pub inventory: inventory::Inventory<'a>,
    pub issued: certificates::IssuedByThumbprint<'a>,
    pub conflicts: inventory::Conflicts,
    pub output: PlanOutput,
    pub sql: BTreeMap<ObjectKey, Vec<(SqlStage, SqlAction)>>,
    pub contributions: Vec<merge::Contribution>,
}

impl Pass<'_> {
    pub fn sql(&mut self, availability_group: &str, stage: SqlStage, action: SqlAction) {
        let actions = self.sql.entry(availability_group.to_string()).or_default();
        if !actions.iter().any(|(_, a)| a == &action) {
            actions.push((stage, action));
        }
    }

    pub fn event(&mut self, kind: &str, key: &str, warning: bool, reason: &str, message: String) {
        self.output.events.push(PlanEvent {
            kind: kind.into(),
            key: key.into(),
            warning,
            reason: reason.into(),
            message,
        });
    }
}

/// `namespace/name` of an object (namespace `default` when absent, as kubectl does).
pub fn object_key(meta: &kube::api::ObjectMeta) -> ObjectKey {
    format!("{}/{}", namespace_of(meta), meta.name.as_deref().unwrap_or_default())
}

pub(crate) fn namespace_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or("default")
}

/// Plan one reconcile pass: a pure function of its input that never panics on any input the
/// schema admits (empty lists, missing optional fields and unknown references become Stalled
/// conditions).
pub fn plan(input: &PlanInput) -> PlanOutput {
    let worker_nodes = worker::resolve_all(input);
    let claims = claims(input, &worker_nodes);
    let mut pass = Pass {
        input,
        inventory: inventory::Inventory::new(input),
        issued: certificates::IssuedByThumbprint::new(input),
        conflicts: inventory::Conflicts::detect(&claims),
        output: PlanOutput::default(),
        sql: BTreeMap::new(),
        contributions: Vec::new(),
    };
    for availability_group in &input.availability_groups {
        availability_group::plan_availability_group(&mut pass, availability_group);
    }
    let mut groups = BTreeMap::new();
    for group in &input.master_groups {
        let result = master::plan_master_group(&mut pass, group, &worker_nodes);
        groups.insert(result.key.clone(), result);
    }
    for worker in &input.workers {
        worker::plan_worker(&mut pass, worker, &groups, &worker_nodes);
    }
    let Pass { mut output, sql, contributions, issued, .. } = pass;
    output.host_configs = merge::merge(contributions);
    output.retained_host_secrets = retained_host_secrets(&issued, &output);
    for (key, mut actions) in sql {
        actions.sort_by_key(|(stage, _)| *stage);
        output.sql_actions.insert(key, actions.into_iter().map(|(_, action)| action).collect());
    }
    output
}

/// Which node each custom resource claims, for conflict detection before planning.
fn claims(input: &PlanInput, worker_nodes: &BTreeMap<ObjectKey, worker::ResolvedNodes>) -> Vec<inventory::Claim> {
    let mut claims = Vec::new();
    for group in &input.master_groups {
        let key = object_key(&group.metadata);
        let nodes: BTreeSet<&String> = group.spec.nodes.iter().collect();
        for node in nodes {
            claims.push(inventory::Claim {
                owner: inventory::Owner::MasterGroup(key.clone()),
                node: node.clone(),
                version: group.spec.sql_version,
            });
        }
    }
    for worker in &input.workers {
        let key = object_key(&worker.metadata);
        let Some(resolved) = worker_nodes.get(&key) else { continue };
        let Some(version) = resolved.version else { continue };
        for node in resolved.nodes.iter().flatten() {
            claims.push(inventory::Claim { owner: inventory::Owner::Worker(key.clone()), node: node.clone(), version });
        }
    }
    claims
}

/// Certificate Secrets still in use: referenced by a desired HostConfig item, or by a status as the
/// served or rotating-to certificate (also while no node can take items).
fn retained_host_secrets(issued: &certificates::IssuedByThumbprint, output: &PlanOutput) -> BTreeSet<String> {
    let mut retained: BTreeSet<String> = output
        .host_configs
        .values()
        .flat_map(|spec| &spec.certificates)
        .filter_map(|c| c.source.as_ref().map(|s| s.secret_name.clone()))
        .collect();
    for status in output.master_group_statuses.values() {
        retained.extend(status.certificate.iter().filter_map(|c| c.host_secret_name.clone()));
        retained.extend(status.rotation.iter().filter_map(|r| r.to_host_secret_name.clone()));
    }
    for node in output.worker_statuses.values().flat_map(|s| &s.nodes) {
        let thumbprints = node.certificate_thumbprint.iter().chain(node.rotating_to_thumbprint.iter());
        for thumbprint in thumbprints {
            if let Some(issued) = issued.get(thumbprint) {
                retained.insert(issued.secret_name.clone());
            }
        }
    }
    retained
}
