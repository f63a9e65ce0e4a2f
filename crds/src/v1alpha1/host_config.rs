//! `HostConfig`: the internal, cluster-scoped contract between the operator and the node agent of
//! one Windows node (named after the node). The operator writes the spec — everything the host must
//! look like, merged from every group and worker on that node — and the agent writes the status.
//!
//! The vocabulary is deliberately narrow: services are named by role (the agent derives the Windows
//! service name from `sqlVersion`), files by kind, and every free-form path or registry key is checked
//! by the agent against an allow-list before anything is touched.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyRef, SqlVersion};
use crate::v1alpha1::master_group::LegacyFolder;

/// Desired state of one Windows node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[kube(
    group = "ssis.sqlops.io",
    version = "v1alpha1",
    kind = "HostConfig",
    status = "HostConfigStatus",
    shortname = "ssishost",
    category = "ssis",
    derive = "Default",
    derive = "PartialEq",
    doc = "HostConfig is internal: one per Windows node, named after the node. The operator writes its spec \
           (certificates, owned settings-file keys, registry values, services, HTTP.SYS bindings and the \
           cluster role that node must have, merged from every SSIS resource on it); the ssis-agent on that \
           node applies it with allow-listed, idempotent steps and writes the status. Do not edit by hand: \
           the operator overwrites the spec.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.sqlVersion"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.agent.lastHeartbeatTime"}"#,
    printcolumn = r#"{"name":"Repairs","type":"integer","jsonPath":".status.drift.repairs"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HostConfigSpec {
    /// SQL Server major version of the SSIS installation on this node. Service names, the settings
    /// file folder and allowed registry keys are derived from it.
    pub sql_version: SqlVersion,

    /// The custom resources that contributed to this HostConfig (for `kubectl describe` and the
    /// `plan` preview).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["kind".into(), "namespace".into(), "name".into()]))]
    pub contributors: Vec<Contributor>,

    /// Certificates in the LocalMachine stores (reference §7). Item names are unique: the API
    /// server enforces it through the list-map key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub certificates: Vec<HostCertificate>,

    /// Owned keys of MasterSettings.config (reference §2).
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub master_settings: Option<MasterSettings>,

    /// Owned keys of WorkerSettings.config (reference §3).
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub worker_settings: Option<WorkerSettings>,

    /// MsDtsSrvr.ini.xml of the legacy SSIS service and its registry pointer (reference §4).
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub legacy_service_config: Option<LegacyServiceConfig>,

    /// Registry values under HKEY_LOCAL_MACHINE (allow-listed keys only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub registry_values: Vec<RegistryValue>,

    /// Windows services, by role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["role".into()]))]
    pub services: Vec<HostService>,

    /// HTTP.SYS SSL bindings of the master port (reference §7, pitfall 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["ipPort".into()]))]
    pub http_ssl_bindings: Vec<HttpSslBinding>,

    /// The failover-cluster Generic Service role of the master (reference §6 step 7, §11).
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub cluster_role: Option<ClusterRole>,

    /// A version (content hash) of every Secret this spec names, written by the operator: the
    /// agent keeps what it read and reads a Secret again only when its version here changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub secret_versions: Vec<SecretVersion>,
}

/// The version of one Secret of the agent's namespace (list-map key: `name`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    /// Secret name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Hash of the Secret's data (never the data).
    #[schemars(length(min = 1, max = 80), regex(pattern = r"^[a-z0-9]+:[0-9a-f]+$"))]
    pub version: String,
}

/// A custom resource that contributed items to a HostConfig (all three fields are the list-map key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Contributor {
    /// Kind of the contributing resource.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Namespace of the contributing resource.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the contributing resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A LocalMachine certificate store. Only the two stores the procedure uses exist here.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default)]
pub enum CertStore {
    /// `LocalMachine\Root` (trusted roots; the master certificate and every trusted worker certificate).
    #[default]
    Root,
    /// `LocalMachine\My` (personal; the worker's own client certificate).
    My,
}

/// Whether an item must exist or be removed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum Ensure {
    /// Create or update the item.
    #[default]
    Present,
    /// Remove the item if it exists.
    Absent,
}

/// One certificate in one LocalMachine store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.ensure == 'Absent' || has(self.source)").message("certificates[].source is required unless ensure is Absent"))]
pub struct HostCertificate {
    /// Stable item name, unique within the HostConfig (the list-map key; used in status and
    /// restart triggers).
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Target store.
    pub store: CertStore,
    /// SHA-1 thumbprint (40 upper-case hex digits) the imported certificate must have; the agent
    /// refuses material whose thumbprint differs.
    #[schemars(regex(pattern = r"^[0-9A-F]{40}$"))]
    pub thumbprint: String,
    /// Present (import) or Absent (remove by thumbprint).
    #[serde(default)]
    pub ensure: Ensure,
    /// Where the certificate material is (a Secret in the agent's namespace).
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub source: Option<CertificateMaterialRef>,
    /// Accounts granted read access to the private key (the worker service account, pitfall 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub private_key_readers: Vec<String>,
}

/// Certificate material in a Secret of the agent's namespace: with `pfxKey` + `pfxPasswordKey` the
/// certificate is imported with its private key; otherwise only the public certificate
/// (`certificateKey`, DER or PEM) is imported.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.pfxKey) == has(self.pfxPasswordKey)").message("source: pfxKey and pfxPasswordKey go together"))]
#[x_kube(validation = Rule::new("!has(self.secretName) || has(self.pfxKey) || has(self.certificateKey)").message("source: set certificateKey (public certificate) or pfxKey + pfxPasswordKey (with private key)"))]
pub struct CertificateMaterialRef {
    /// Secret name (in the agent's namespace).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: String,
    /// Key of the public certificate (DER or PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub certificate_key: Option<String>,
    /// Key of the PKCS#12 (PFX) bundle with the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub pfx_key: Option<String>,
    /// Key of the PFX password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub pfx_password_key: Option<String>,
}

/// Owned keys of MasterSettings.config. Every other key in the file is preserved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct MasterSettings {
    /// `SqlServerName`: `<AG listener>,<port>` in HA (reference §6 step 5).
    #[schemars(length(min = 1, max = 300))]
    pub sql_server_name: String,
    /// `SSLCertThumbprint`: the master certificate.
    #[schemars(regex(pattern = r"^[0-9A-F]{40}$"))]
    pub ssl_cert_thumbprint: String,
    /// `PortNumber`.
    #[schemars(range(min = 1, max = 65535))]
    pub port_number: i32,
}

/// Owned keys of WorkerSettings.config. Every other key (including `AgentId`) is preserved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSettings {
    /// `MasterEndpoint`: `https://<master DNS>:<port>`.
    #[schemars(length(min = 9, max = 300), regex(pattern = r"^https://"))]
    pub master_endpoint: String,
    /// `MasterHttpsCertThumbprint`: the master certificate the worker trusts.
    #[schemars(regex(pattern = r"^[0-9A-F]{40}$"))]
    pub master_https_cert_thumbprint: String,
    /// `WorkerHttpsCertThumbprint`: the worker's own client certificate (in LocalMachine\My).
    #[schemars(regex(pattern = r"^[0-9A-F]{40}$"))]
    pub worker_https_cert_thumbprint: String,
}

/// How the `ServiceConfigFile` registry entry is written. Microsoft calls it a key whose default
/// value is the path; whether it is a key or a named value under `SSIS` is unconfirmed, so `Auto`
/// updates whichever exists and creates the key form when neither does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum RegistryPointerMode {
    /// Update whichever form exists; create the key form when neither exists.
    #[default]
    Auto,
    /// `...\SSIS\ServiceConfigFile` key, default value.
    KeyDefaultValue,
    /// `...\SSIS` key, value named `ServiceConfigFile`.
    NamedValue,
}

/// MsDtsSrvr.ini.xml and its registry pointer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct LegacyServiceConfig {
    /// Full path of the config file. Absent: `<Binn>\MsDtsSrvr.ini.xml`. Must be inside an
    /// allow-listed folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 260))]
    pub config_file_path: Option<String>,
    /// `StopExecutingPackagesOnShutdown`.
    pub stop_executing_packages_on_shutdown: bool,
    /// Top-level folders, in order; names are unique (list-map key).
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub folders: Vec<LegacyFolder>,
    /// How the `ServiceConfigFile` registry entry is written.
    #[serde(default)]
    pub registry_pointer: RegistryPointerMode,
}

/// Registry value type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum RegistryValueType {
    /// REG_SZ.
    #[default]
    String,
    /// REG_DWORD (data is a decimal number).
    DWord,
}

/// One registry value under HKEY_LOCAL_MACHINE.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'DWord' || self.data.matches('^[0-9]{1,10}$')").message("registryValues[].data must be a decimal number for type DWord"))]
pub struct RegistryValue {
    /// Stable item name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key path relative to HKEY_LOCAL_MACHINE, e.g.
    /// `SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL`.
    #[schemars(length(min = 1, max = 255))]
    pub key: String,
    /// Value name; absent means the key's default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub value_name: Option<String>,
    /// Value type.
    #[serde(rename = "type")]
    pub type_: RegistryValueType,
    /// Value data.
    #[schemars(length(max = 1024))]
    pub data: String,
}

/// Which SSIS service (the Windows service name is derived from `sqlVersion`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default)]
pub enum ServiceRole {
    /// `SSISScaleOutMaster<ver>`.
    #[default]
    ScaleOutMaster,
    /// `SSISScaleOutWorker<ver>`.
    ScaleOutWorker,
    /// `MsDtsServer<ver>` (legacy Integration Services service).
    LegacySsisService,
}

impl ServiceRole {
    /// Windows service name for a SQL version.
    pub fn service_name(self, version: SqlVersion) -> String {
        match self {
            ServiceRole::ScaleOutMaster => version.master_service_name(),
            ServiceRole::ScaleOutWorker => version.worker_service_name(),
            ServiceRole::LegacySsisService => version.legacy_service_name(),
        }
    }
}

/// Desired run state of a service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum ServiceRunState {
    /// Keep the service running.
    #[default]
    Running,
    /// Keep the service stopped.
    Stopped,
    /// The failover cluster decides where the service runs (Generic Service role): the agent never
    /// starts it, and restarts it only where it is already running.
    ClusterManaged,
}

/// Service start type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum ServiceStartType {
    /// Start at boot.
    #[default]
    Automatic,
    /// Started on demand (required for cluster-managed services).
    Manual,
    /// Never started.
    Disabled,
}

/// The logon account of a service: the account name and the Secret (in the agent's namespace)
/// holding its password. An empty object means no logon (see [`crate::common::optional_object`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLogon {
    /// Account in `DOMAIN\user` or `user@domain` form.
    #[schemars(length(min = 3, max = 256), regex(pattern = r"^([^\\@\s]+\\[^\\@\s]+|[^\\@\s]+@[^\\@\s]+)$"))]
    pub username: String,
    /// Secret key holding the account's password. Never copied into status, Events or logs.
    #[schemars(transform = crate::common::optional_object)]
    pub password_secret_ref: SecretKeyRef,
}

/// A Windows service of the SSIS installation (one per role: `role` is the list-map key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostService {
    /// Which service.
    pub role: ServiceRole,
    /// Desired run state.
    pub state: ServiceRunState,
    /// Desired start type; absent leaves it unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_type: Option<ServiceStartType>,
    /// Logon account; the password Secret is in the agent's namespace. Absent leaves it unchanged.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub logon: Option<ServiceLogon>,
    /// Names of items this service reads at start (`masterSettings`, `workerSettings`,
    /// `legacyServiceConfig`, `certificate/<name>`, `httpSslBinding/<ipPort>`): when the agent
    /// changes any of them the service is restarted once, after all changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(min = 1, max = 300)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub restart_on_change_of: Vec<String>,
    /// Changing this opaque token asks for one restart (e.g. to make a worker reconnect after its
    /// certificate became trusted on the masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub restart_token: Option<String>,
}

/// An HTTP.SYS SSL certificate binding (`netsh http add sslcert`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpSslBinding {
    /// `ip:port`, normally `0.0.0.0:<master port>`.
    #[schemars(regex(pattern = r"^(\d{1,3}\.){3}\d{1,3}:\d{1,5}$"))]
    pub ip_port: String,
    /// Thumbprint of the bound certificate.
    #[schemars(regex(pattern = r"^[0-9A-F]{40}$"))]
    pub thumbprint: String,
    /// Store holding the certificate.
    pub cert_store: CertStore,
    /// Application id GUID of the binding; absent keeps the existing one (docs: reuse the original
    /// appid when changing certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^\{?[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}?$"
    ))]
    pub app_id: Option<String>,
}

/// The Generic Service cluster role of the master.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRole {
    /// Role / client access point network name (≤ 15 characters).
    #[schemars(length(min = 1, max = 15))]
    pub name: String,
    /// Service the role runs.
    pub service: ServiceRole,
    /// Create the role when missing. Exactly one node of a group is asked to create it; the others
    /// only observe it.
    pub create: bool,
    /// Static addresses for the client access point. Atomic: copied as written from the master
    /// group's `clusterRole.staticAddresses`, which admits them as the user ordered them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 18)))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub static_addresses: Vec<String>,
    /// Networks to ignore. Atomic: copied as written from the master group's
    /// `clusterRole.ignoreNetworks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub ignore_networks: Vec<String>,
    /// Possible owners (Windows computer names, sorted and distinct).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub possible_owners: Vec<String>,
    /// Failover cluster name, when not the local cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster_name: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Status (written by the agent)
// ---------------------------------------------------------------------------------------------

/// Observed state of one Windows node, written by its agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostConfigStatus {
    /// Generation of the spec the agent last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled (refused items).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The agent reporting this status.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentInfo>,
    /// Per-item outcome, in apply order.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub items: Vec<ItemStatus>,
    /// Certificates the agent manages or that the spec references, as found in the stores.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["store".into(), "thumbprint".into()]))]
    pub certificates: Vec<ObservedCertificate>,
    /// SSIS services found on the host.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["role".into()]))]
    pub services: Vec<ObservedService>,
    /// Owned keys of MasterSettings.config as found on disk.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub master_settings: Option<ObservedSettings>,
    /// Owned keys of WorkerSettings.config as found on disk, plus `AgentId`.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub worker_settings: Option<ObservedSettings>,
    /// HTTP.SYS bindings found for the spec's ports.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["ipPort".into()]))]
    pub http_ssl_bindings: Vec<ObservedHttpSslBinding>,
    /// The cluster role as seen from this node.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub cluster_role: Option<ObservedClusterRole>,
    /// Local drift the agent found and repaired.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
}

/// Identity and liveness of the agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// Agent version.
    pub version: String,
    /// `windows` or `simulated`.
    pub backend: String,
    /// Windows computer name of the node (used for cluster possible owners).
    pub computer_name: String,
    /// Last time the agent confirmed the host state (RFC 3339); refreshed at most once per
    /// heartbeat interval when nothing else changes.
    pub last_heartbeat_time: String,
}

/// Kind of a HostConfig item.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default)]
pub enum ItemKind {
    /// A certificate in a store.
    #[default]
    Certificate,
    /// MasterSettings.config.
    MasterSettings,
    /// WorkerSettings.config.
    WorkerSettings,
    /// MsDtsSrvr.ini.xml and its registry pointer.
    LegacyServiceConfig,
    /// A registry value.
    RegistryValue,
    /// A Windows service.
    Service,
    /// An HTTP.SYS binding.
    HttpSslBinding,
    /// The cluster role.
    ClusterRole,
}

/// Outcome of one item.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum ItemState {
    /// The host matches the spec for this item.
    Applied,
    /// Not applied yet (waiting for a dependency or the next pass).
    #[default]
    Pending,
    /// Applying failed; retried with backoff.
    Failed,
    /// Refused by the agent's safety rules (allow-list, thumbprint mismatch); never retried until
    /// the spec changes.
    Refused,
}

/// Outcome of one HostConfig item.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ItemStatus {
    /// Item kind.
    pub kind: ItemKind,
    /// Item name (`certificate/<name>`, `masterSettings`, `service/<role>`, ...).
    pub name: String,
    /// Outcome.
    pub state: ItemState,
    /// CamelCase machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail. Never contains secret material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Observed value (thumbprint, setting value, service state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
}

/// A certificate found in a store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCertificate {
    /// Store.
    pub store: CertStore,
    /// SHA-1 thumbprint.
    pub thumbprint: String,
    /// Subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Expiry (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Whether a private key is associated.
    pub has_private_key: bool,
}

/// A service found on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObservedService {
    /// Role.
    pub role: ServiceRole,
    /// Windows service name.
    pub name: String,
    /// Whether the service is installed.
    pub installed: bool,
    /// `Running`, `Stopped`, `StartPending`, `StopPending`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Start type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_type: Option<ServiceStartType>,
    /// Logon account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logon_account: Option<String>,
}

/// Owned settings as found in a settings file (key → value), plus the detected format.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSettings {
    /// `Json` or `Xml` (detected from the first non-blank character), or `Missing`.
    pub format: String,
    /// Owned keys and their current values (plus `AgentId` for workers).
    #[serde(default)]
    pub values: std::collections::BTreeMap<String, String>,
}

/// An HTTP.SYS binding found on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObservedHttpSslBinding {
    /// `ip:port`.
    pub ip_port: String,
    /// Bound thumbprint.
    pub thumbprint: String,
}

/// The cluster role as seen from one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct ObservedClusterRole {
    /// Role name.
    pub name: String,
    /// Whether the role exists.
    pub exists: bool,
    /// Windows computer name of the owner node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_node: Option<String>,
    /// `Online`, `Offline`, `Failed`, `PartialOnline`, `Pending`, `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Drift repairs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// Number of repairs of local drift since the agent started.
    pub repairs: i64,
    /// When drift was last repaired (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair_time: Option<String>,
    /// Items repaired last time (distinct names).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub last_repaired_items: Vec<String>,
}
