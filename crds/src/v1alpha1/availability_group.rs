//! `SsisdbAvailabilityGroup`: the Always On availability group that holds SSISDB (reference §9, §10)
//! and the server-level objects every replica needs for Scale Out logging (reference §6 step 6).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyRef, SecretRef, SqlTls};

/// Desired state of the availability group that holds SSISDB.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[kube(
    group = "ssis.sqlops.io",
    version = "v1alpha1",
    kind = "SsisdbAvailabilityGroup",
    namespaced,
    status = "SsisdbAvailabilityGroupStatus",
    shortname = "ssisag",
    category = "ssis",
    derive = "Default",
    derive = "PartialEq",
    doc = "SsisdbAvailabilityGroup is the Always On availability group that holds the SSIS catalog (SSISDB), \
           its replicas and its listener. The operator keeps every replica ready for Scale Out: the catalog \
           master key encrypted by each replica's service master key (no error 15581 after failover), the \
           logging login ##MS_SSISLogDBWorkerAgentLogin## with the primary's SID and one password everywhere, \
           Always On support registered, and the logging connection pointed at the listener. \
           status.serverName (listener,port) is what ScaleOutMasterGroups use as SqlServerName.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.primaryReplica"}"#,
    printcolumn = r#"{"name":"Server","type":"string","jsonPath":".status.serverName"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SsisdbAvailabilityGroupSpec {
    /// Name of the availability group (`sys.availability_groups.name`), e.g. `AG_SSIS`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_$#@ .-]*$"))]
    pub availability_group_name: String,

    /// Name of the SSIS catalog database in the group.
    #[serde(default = "default_database_name")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_$#@.-]*$"))]
    pub database_name: String,

    /// The SQL Server instances that host a replica of the group (1 to 9). Names are unique (the
    /// list-map key, enforced by the API server); the operator also requires a distinct host and
    /// port and a distinct `nodeName` per replica and reports a duplicate as Stalled. Two or more
    /// replicas are needed for high availability.
    #[schemars(length(min = 1, max = 9))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub replicas: Vec<AvailabilityReplica>,

    /// The availability-group listener masters and workers connect through (reference §6 step 4).
    pub listener: ListenerSpec,

    /// Secret with an admin login (sysadmin on every replica) used by the operator. Keys default to
    /// `username` and `password`.
    pub admin_credentials: SqlCredentials,

    /// TLS for the operator's SQL connections. Certificates are validated by default.
    #[serde(default)]
    pub tls: SqlTls,

    /// Secret key holding the SSISDB database master key password (set when the catalog was
    /// created). Used to re-encrypt the master key with the service master key of every replica
    /// (prevents error 15581 after failover, pitfall 10).
    pub catalog_password_secret_ref: SecretKeyRef,

    /// The Scale Out logging login `##MS_SSISLogDBWorkerAgentLogin##` (reference §6 step 6).
    pub logging_login: LoggingLoginSpec,

    /// Register every replica for SSISDB Always On support (what SSMS "Enable Always On Support"
    /// does, reference §9.2 step 3). Automatic failover of SSISDB is not supported without it.
    #[serde(default = "default_true")]
    pub enable_always_on_support: bool,
}

fn default_database_name() -> String {
    "SSISDB".into()
}
fn default_true() -> bool {
    true
}

/// One replica (SQL Server instance) of the availability group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AvailabilityReplica {
    /// Replica server name as SQL Server reports it (`@@SERVERNAME`, `replica_server_name`):
    /// `HOST` or `HOST\INSTANCE`.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(\\[A-Za-z0-9_$#]+)?$"))]
    pub name: String,
    /// DNS host name the operator connects to for this replica.
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
        )
    )]
    pub host: String,
    /// TCP port of the instance.
    #[serde(default = "default_sql_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Kubernetes node name of the Windows node running this instance, when it is a node of the
    /// cluster (used for the legacy SSIS service configuration; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub node_name: Option<String>,
}

fn default_sql_port() -> i32 {
    1433
}

/// The availability-group listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    /// Listener network name (`sys.availability_group_listeners.dns_name`): at most 15 characters,
    /// letters, digits, `-` and `_` (NetBIOS limit, pitfall 19).
    #[schemars(length(min = 1, max = 15), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,14}$"))]
    pub name: String,
    /// DNS domain appended to the listener name to form the host name clients use, e.g.
    /// `corp.example.com`. Empty: clients use the bare name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 237),
        regex(
            pattern = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
        )
    )]
    pub dns_domain: Option<String>,
    /// Listener TCP port.
    #[serde(default = "default_sql_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Create the listener when it does not exist. Without this the operator only verifies it and
    /// reports a Stalled condition if it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<ListenerCreate>,
}

/// How to create a missing listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListenerCreate {
    /// One static IP per subnet of the cluster (DHCP is not supported for production listeners);
    /// each address at most once (list-map key).
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["address".into()]))]
    pub static_ips: Vec<ListenerStaticIp>,
}

/// A static listener address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("isIP(self.address) && ip(self.address).family() == 4").message("listener.create.staticIps[].address must be an IPv4 address such as 10.0.0.50"))]
pub struct ListenerStaticIp {
    /// IPv4 address.
    #[schemars(length(min = 7, max = 15))]
    pub address: String,
    /// Subnet mask, e.g. `255.255.255.0`.
    #[schemars(length(min = 7, max = 15), regex(pattern = r"^(\d{1,3}\.){3}\d{1,3}$"))]
    pub subnet_mask: String,
}

/// Admin credentials for the operator's SQL connections: a Secret (same namespace) holding a SQL
/// login that is sysadmin on every replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.usernameKey) || !has(self.passwordKey) || self.usernameKey != self.passwordKey").message("adminCredentials: usernameKey and passwordKey must name different keys of the Secret"))]
pub struct SqlCredentials {
    /// The Secret.
    #[serde(flatten)]
    pub secret: SecretRef,
    /// Key of the login name in the Secret.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub username_key: String,
    /// Key of the password in the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// The Scale Out logging login (reference §5.5, §6 step 6).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoggingLoginSpec {
    /// Secret key with the password of `##MS_SSISLogDBWorkerAgentLogin##`. Changing it rotates the
    /// password on every replica and in `catalog.update_logdb_info`.
    pub password_secret_ref: SecretKeyRef,
}

/// Observed state of the availability group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SsisdbAvailabilityGroupStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled, plus ListenerReady, CatalogKeyReady,
    /// LoggingLoginReady.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Replica currently primary for the catalog database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_replica: Option<String>,
    /// `<listener host>,<port>`: the value masters use for `SqlServerName` and the logging
    /// connection uses as Data Source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Observed listener.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub listener: Option<ObservedListener>,
    /// Per-replica health and readiness of the Scale Out prerequisites.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub replicas: Vec<ReplicaStatus>,
    /// When a change of primary was last observed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover_time: Option<String>,
    /// Fingerprint (not the value) of the logging-login password last applied everywhere; lets the
    /// operator detect a password change without storing the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging_password_fingerprint: Option<String>,
}

/// Observed listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[schemars(transform = crate::common::optional_object)]
#[serde(rename_all = "camelCase")]
pub struct ObservedListener {
    /// Listener network name.
    pub name: String,
    /// Port reported by SQL Server (absent when the listener was created outside SQL Server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Whether the listener exists and matches the spec.
    pub ready: bool,
}

/// Observed state of one replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Replica server name.
    pub name: String,
    /// `PRIMARY`, `SECONDARY`, `RESOLVING` or `UNKNOWN` (unreachable).
    pub role: String,
    /// Whether the operator could connect.
    pub connected: bool,
    /// `HEALTHY`, `PARTIALLY_HEALTHY`, `NOT_HEALTHY` or `UNKNOWN`.
    pub synchronization_health: String,
    /// SSISDB master key is encrypted by this replica's service master key (pitfall 10).
    pub catalog_key_ready: bool,
    /// Logging login exists with the primary's SID and the current password (pitfall 9).
    pub logging_login_ready: bool,
    /// Human-readable detail when something is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
