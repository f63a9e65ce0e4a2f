//! The pure planner: from the custom resources, Secret metadata, HostConfig statuses and observed
//! SQL state, compute the desired HostConfig of every Windows node, the SQL actions and the status
//! of every custom resource. No IO here; everything is plain data in, plain data out.

use std::collections::{BTreeMap, BTreeSet};

use ssis_crds::{
    HostConfig, HostConfigSpec, ScaleOutMasterGroup, ScaleOutMasterGroupStatus, ScaleOutWorker, ScaleOutWorkerStatus,
    SsisdbAvailabilityGroup, SsisdbAvailabilityGroupStatus,
};

use crate::catalog::{CatalogObservation, SqlAction};

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
}

/// A certificate the apply stage must make available as host material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRequest {
    /// Id the result is stored under (see [`IssuedCertificate::id`]).
    pub id: String,
    pub source: CertificateRequestSource,
}

/// How to obtain a requested certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateRequestSource {
    /// Generate a self-signed RSA certificate.
    Generate { common_name: String, dns_names: Vec<String>, validity_days: u32 },
    /// Convert the user's `kubernetes.io/tls` Secret (`namespace/name`) into host material.
    FromTlsSecret { secret: ObjectKey },
}

/// Plan one reconcile pass: pure function of its input, never panics on any schema-valid input.
pub fn plan(input: &PlanInput) -> PlanOutput {
    let mut output = PlanOutput::default();
    for group in &input.master_groups {
        for node in &group.spec.nodes {
            output
                .host_configs
                .entry(node.clone())
                .or_insert_with(|| HostConfigSpec { sql_version: group.spec.sql_version, ..Default::default() });
        }
    }
    output
}
