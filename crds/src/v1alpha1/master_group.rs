//! `ScaleOutMasterGroup`: the Scale Out Master installed on several Windows nodes and made highly
//! available by a failover-cluster Generic Service role (reference §6, §7, §11) plus, optionally, the
//! legacy SSIS service configuration of those nodes (reference §4).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CertificateSource, LocalObjectRef, SqlVersion, WindowsAccount};

/// Desired state of a highly available Scale Out Master.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[kube(
    group = "ssis.sqlops.io",
    version = "v1alpha1",
    kind = "ScaleOutMasterGroup",
    namespaced,
    status = "ScaleOutMasterGroupStatus",
    shortname = "ssismaster",
    category = "ssis",
    derive = "Default",
    derive = "PartialEq",
    doc = "ScaleOutMasterGroup is a highly available SSIS Scale Out Master: the master service installed on \
           several Windows nodes, run by a failover-cluster Generic Service role under one client access \
           point (spec.masterService.dnsName), all nodes serving the same TLS certificate and pointing \
           SqlServerName at the SSISDB availability-group listener. The operator follows Microsoft's \
           high-availability procedure on every node, rotates the certificate before expiry and, \
           optionally, configures the legacy SSIS service (MsDtsServer) on the same nodes.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".status.masterAddress"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeNode"}"#,
    printcolumn = r#"{"name":"Cert-Expiry","type":"string","jsonPath":".status.certificate.notAfter"}"#,
    printcolumn = r#"{"name":"Rotation","type":"string","jsonPath":".status.rotation.phase"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScaleOutMasterGroupSpec {
    /// SQL Server major version installed on the master nodes (`140`, `150`, `160`). Service names
    /// and paths are derived from it.
    pub sql_version: SqlVersion,

    /// The `SsisdbAvailabilityGroup` (same namespace) whose listener the masters use as
    /// `SqlServerName` (reference §6 step 5).
    pub availability_group_ref: LocalObjectRef,

    /// The clustered master service endpoint workers connect to.
    pub master_service: MasterServiceSpec,

    /// Kubernetes node names of the Windows nodes with the Scale Out Master installed (every
    /// possible owner of the cluster role): 1 to 16 distinct names (a list-type set, so the API
    /// server refuses a duplicate); two or more for high availability.
    #[schemars(
        length(min = 1, max = 16),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub nodes: Vec<String>,

    /// The master TLS certificate, shared by every master node (reference §6 steps 2.2 and 3).
    /// Its subject alternative names always include `masterService.dnsName`.
    pub certificate: CertificateSource,

    /// Domain account the master service runs as. High availability requires a domain account
    /// so the service can reach SSISDB on whichever replica is primary (reference §6 step 2.1).
    pub service_account: WindowsAccount,

    /// The failover-cluster Generic Service role (reference §6 step 7, §11).
    #[serde(default)]
    pub cluster_role: ClusterRoleSettings,

    /// Configure the legacy SSIS service (MsDtsServer) on the master nodes: MsDtsSrvr.ini.xml lists
    /// every replica of the availability group (reference §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_service: Option<LegacyServiceSettings>,

    /// Set the SCHANNEL `SendTrustedIssuerList` = 0 on master nodes so non-self-signed certificates
    /// in LocalMachine\Root do not break worker client authentication (pitfall 3).
    #[serde(default)]
    pub disable_trusted_issuer_list: bool,
}

/// The clustered master service endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.dnsName.split('.')[0].size() <= 15").message("masterService.dnsName: the first label is the cluster network name and must be at most 15 characters (NetBIOS limit); choose a shorter client access point name"))]
pub struct MasterServiceSpec {
    /// DNS host name of the failover-cluster client access point, e.g. `ssis-master.corp.example.com`.
    /// Its first label is the cluster network name (≤ 15 characters). This is not the AG listener
    /// (pitfall 7).
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
        )
    )]
    pub dns_name: String,
    /// HTTPS port of the master (`PortNumber`).
    #[serde(default = "default_master_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_master_port() -> i32 {
    8391
}

/// Failover-cluster role settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoleSettings {
    /// Create the Generic Service role when it does not exist. When false the role must be created
    /// by hand; the operator then only checks it.
    #[serde(default = "default_true")]
    pub manage: bool,
    /// Static IPv4 addresses (`a.b.c.d` or `a.b.c.d/prefix`) of the client access point, one per
    /// cluster network. Networks without DHCP need one here or in `ignoreNetworks`. Replaced as a
    /// whole and passed to the cluster role in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(
            length(min = 7, max = 18),
            regex(
                pattern = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/([0-9]|[12][0-9]|3[0-2]))?$"
            )
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub static_addresses: Vec<String>,
    /// Cluster networks to ignore when creating the role (names as `Get-ClusterNetwork` shows them).
    /// Replaced as a whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub ignore_networks: Vec<String>,
    /// Name of the failover cluster, when not the local one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
        )
    )]
    pub cluster_name: Option<String>,
}

impl Default for ClusterRoleSettings {
    fn default() -> Self {
        Self { manage: true, static_addresses: vec![], ignore_networks: vec![], cluster_name: None }
    }
}

fn default_true() -> bool {
    true
}

/// Legacy SSIS service (MsDtsServer) settings, following "SSIS in a cluster": do not cluster the
/// service; run it on every node with a config listing every SQL instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.additionalFolders) || !has(self.includeAllReplicas) || !self.includeAllReplicas || self.additionalFolders.all(f, !f.name.startsWith('MSDB-'))").message("legacyService.additionalFolders[].name: names starting with MSDB- are reserved for the per-replica folders of includeAllReplicas; choose another name"))]
#[x_kube(validation = Rule::new("(has(self.includeAllReplicas) && self.includeAllReplicas) || (has(self.additionalFolders) && size(self.additionalFolders) > 0)").message("legacyService: with includeAllReplicas false the package store would list no SQL Server; set includeAllReplicas or add additionalFolders"))]
pub struct LegacyServiceSettings {
    /// Add one `SqlServerFolder` per replica of the availability group (named `MSDB-<replica>`).
    #[serde(default = "default_true")]
    pub include_all_replicas: bool,
    /// Extra top-level folders; names are unique (list-map key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub additional_folders: Vec<LegacyFolder>,
    /// Value of `StopExecutingPackagesOnShutdown`.
    #[serde(default = "default_true")]
    pub stop_executing_packages_on_shutdown: bool,
}

impl Default for LegacyServiceSettings {
    fn default() -> Self {
        Self { include_all_replicas: true, additional_folders: vec![], stop_executing_packages_on_shutdown: true }
    }
}

/// One top-level folder of MsDtsSrvr.ini.xml: exactly one of `serverName` (a `SqlServerFolder`) or
/// `storePath` (a `FileSystemFolder`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.serverName) != has(self.storePath)").message("legacy folder: set exactly one of serverName (a SqlServerFolder) or storePath (a FileSystemFolder); remove the other"))]
pub struct LegacyFolder {
    /// Folder name shown in SSMS; characters invalid in file names are not allowed.
    #[schemars(length(min = 1, max = 128), regex(pattern = r#"^[^"<>|:*?\\/]+$"#))]
    pub name: String,
    /// SQL Server instance (`.`, `Server` or `Server\Instance`) of a `SqlServerFolder`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^(\.|[A-Za-z0-9][A-Za-z0-9_.-]*)(\\[A-Za-z0-9_$#]+)?$"))]
    pub server_name: Option<String>,
    /// Store path of a `FileSystemFolder` (relative to the Binn folder, or absolute), e.g.
    /// `..\Packages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 260), regex(pattern = r#"^[^"<>|*?]+$"#))]
    pub store_path: Option<String>,
}

/// Observed state of a master group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleOutMasterGroupStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled, plus CertificateReady, ClusterRoleReady,
    /// CatalogReady.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// `https://<dnsName>:<port>` as written with `catalog.update_master_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_address: Option<String>,
    /// `SqlServerName` the masters use (`<listener>,<port>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_server_name: Option<String>,
    /// Node that currently owns the cluster role (the active master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_node: Option<String>,
    /// The certificate the masters serve.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
    /// Progress of a master certificate rotation.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// Per-node state.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub nodes: Vec<MasterNodeStatus>,
}

/// A certificate in use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// SHA-1 thumbprint, upper-case hex (what Windows and the settings files use).
    pub thumbprint: String,
    /// Expiry (RFC 3339).
    pub not_after: String,
    /// Subject alternative DNS names, as the certificate lists them.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub dns_names: Vec<String>,
    /// Name of the operator-namespace Secret holding the host material (PFX and public cert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_secret_name: Option<String>,
}

/// Certificate rotation phases. Order guarantees that no worker is ever configured to trust a
/// certificate its master is not serving.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum RotationPhase {
    /// No rotation in progress.
    #[default]
    Idle,
    /// The new certificate is being installed everywhere it must be trusted (every master node with
    /// its key, every worker's Root) while the old one stays in use.
    TrustingNew,
    /// Master certificate rotation only: the group's workers are disabled in SSISDB
    /// (`catalog.disable_worker_agent`) while the masters still serve the old certificate. A worker
    /// pins exactly one master thumbprint, so it is taken out of service before the masters switch
    /// and stays disabled until it pins the new certificate (reference §7 "Master cert change",
    /// pitfall 14).
    DisablingWorkers,
    /// Masters switch to the new certificate (binding, `SSLCertThumbprint`, restart); in a master
    /// rotation only once no worker of the group is observed enabled.
    SwitchingMasters,
    /// Workers switch `MasterHttpsCertThumbprint` to the new certificate and restart; in a master
    /// rotation they stay disabled and are enabled again once every worker pins the new
    /// certificate.
    SwitchingWorkers,
    /// The old certificate is removed from every store.
    RemovingOld,
}

/// Progress of a certificate rotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Current phase.
    pub phase: RotationPhase,
    /// Thumbprint being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_thumbprint: Option<String>,
    /// Thumbprint being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_thumbprint: Option<String>,
    /// Name of the operator-namespace Secret with the new certificate's host material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_host_secret_name: Option<String>,
    /// Expiry of the new certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_not_after: Option<String>,
    /// When the rotation started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// Observed state of one master node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MasterNodeStatus {
    /// Kubernetes node name.
    pub name: String,
    /// `Ready`, `Applying`, `Failed`, `Unreachable` (agent not reporting) or `Conflict`.
    pub phase: String,
    /// Whether the node's HostConfig status reports every master item applied.
    pub ready: bool,
    /// State of the master service on the node (`Running`, `Stopped`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_state: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
