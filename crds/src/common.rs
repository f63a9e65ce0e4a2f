//! Types shared by several kinds: SQL versions, Secret references, certificates, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Major version of SQL Server / SSIS. Service names, registry keys and file paths are derived from it
/// (`SSISScaleOutMaster160`, `...\Microsoft SQL Server\160\DTS\Binn`), never taken from user input.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default)]
pub enum SqlVersion {
    /// SQL Server 2017 (14.x).
    #[serde(rename = "140")]
    V140,
    /// SQL Server 2019 (15.x).
    #[serde(rename = "150")]
    V150,
    /// SQL Server 2022 (16.x).
    #[serde(rename = "160")]
    #[default]
    V160,
}

impl SqlVersion {
    /// The `<ver>` folder / suffix used by Windows names: `140`, `150`, `160`.
    pub fn major_dir(self) -> &'static str {
        match self {
            SqlVersion::V140 => "140",
            SqlVersion::V150 => "150",
            SqlVersion::V160 => "160",
        }
    }

    /// Product version shown in display names, e.g. `16.0`.
    pub fn product_version(self) -> &'static str {
        match self {
            SqlVersion::V140 => "14.0",
            SqlVersion::V150 => "15.0",
            SqlVersion::V160 => "16.0",
        }
    }

    /// Windows service name of the Scale Out Master (reference §1).
    pub fn master_service_name(self) -> String {
        format!("SSISScaleOutMaster{}", self.major_dir())
    }

    /// Windows service name of the Scale Out Worker (reference §1).
    pub fn worker_service_name(self) -> String {
        format!("SSISScaleOutWorker{}", self.major_dir())
    }

    /// Windows service name of the legacy Integration Services service (reference §1, §4).
    pub fn legacy_service_name(self) -> String {
        format!("MsDtsServer{}", self.major_dir())
    }
}

impl std::fmt::Display for SqlVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.major_dir())
    }
}

/// Reference to one key of a Secret in the same namespace as the referencing object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key inside the Secret's `data`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Reference to a whole Secret in the same namespace as the referencing object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Reference to another object of this API group in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the referenced object (same namespace).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Optional structs that the operator or the agent write with server-side apply follow one
/// convention: an empty object means the same as an absent field.
///
/// When a field manager stops sending an optional struct, the API server removes the struct's
/// fields; servers with structured-merge-diff #306 (2025-10, in Kubernetes 1.35/1.36 until its
/// revert, #330/#331) then keep the struct as `{}` instead of removing it. With required fields
/// that object is refused (`spec.workerSettings.masterEndpoint: Required value`, the 422 a
/// v1.36.2 server answered), so such structs declare no required fields in the schema
/// ([`optional_object`]) and read `{}` back as `None` ([`empty_as_none`]). Completeness is the
/// writer's: the Rust types still need every field, and the agent validates what it applies.
pub fn optional_object(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        object.remove("required");
    }
}

/// `deserialize_with` for an `Option` of an [`optional_object`] struct: `null` and a hollow object
/// (whose fields are all empty objects or lists, as nested emptied structs and sets are kept too)
/// are `None`.
pub fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    fn hollow(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Object(fields) => fields.values().all(hollow),
            serde_json::Value::Array(items) => items.is_empty(),
            _ => false,
        }
    }
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(value) if value.is_null() || (value.is_object() && hollow(&value)) => Ok(None),
        Some(value) => serde_json::from_value(value).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A Windows account with its password held in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct WindowsAccount {
    /// Account in `DOMAIN\user` (e.g. `CORP\svc-ssis-master`) or `user@domain`
    /// (e.g. `svc-ssis-master@corp.example.com`) form; no spaces.
    #[schemars(length(min = 3, max = 256), regex(pattern = r"^([^\\@\s]+\\[^\\@\s]+|[^\\@\s]+@[^\\@\s]+)$"))]
    pub username: String,
    /// Secret key holding the account's password. Never copied into status, Events or logs.
    pub password_secret_ref: SecretKeyRef,
}

/// How a certificate is obtained: exactly one of `secretRef` (an existing `kubernetes.io/tls` Secret,
/// e.g. issued by cert-manager) or `generate` (the operator creates and rotates a self-signed one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.generate)").message("certificate: set exactly one of certificate.secretRef (an existing kubernetes.io/tls Secret) or certificate.generate (operator-generated); remove the other"))]
pub struct CertificateSource {
    /// Existing `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`; RSA keys only: Windows imports
    /// of other key types are not verified). Rotation happens when the Secret's content changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Let the operator generate a self-signed RSA certificate and rotate it before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GeneratedCertificate>,
}

/// Parameters of an operator-generated certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.renewBeforeDays < self.validityDays").message("certificate.generate.renewBeforeDays must be smaller than certificate.generate.validityDays; lower renewBeforeDays or raise validityDays"))]
pub struct GeneratedCertificate {
    /// Validity of each generated certificate, in days.
    #[serde(default = "default_validity_days")]
    #[schemars(range(min = 7, max = 3650))]
    pub validity_days: i32,
    /// Start a rotation this many days before the current certificate expires.
    #[serde(default = "default_renew_before_days")]
    #[schemars(range(min = 1, max = 3649))]
    pub renew_before_days: i32,
    /// Extra DNS names for the subject alternative names (the required names are always included).
    /// Atomic rather than a set: DNS names compare case-insensitively, which a list-type set cannot
    /// express, and the operator drops case-insensitive duplicates itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
            )
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub additional_dns_names: Vec<String>,
}

impl Default for GeneratedCertificate {
    fn default() -> Self {
        Self {
            validity_days: default_validity_days(),
            renew_before_days: default_renew_before_days(),
            additional_dns_names: vec![],
        }
    }
}

fn default_validity_days() -> i32 {
    365
}
fn default_renew_before_days() -> i32 {
    30
}

/// TLS settings of the operator's connections to SQL Server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.caSecretRef) && has(self.insecureSkipVerify) && self.insecureSkipVerify)").message("tls: caSecretRef has no effect while tls.insecureSkipVerify is true; remove insecureSkipVerify (recommended) or caSecretRef"))]
pub struct SqlTls {
    /// Secret key with the PEM CA bundle that signed the SQL Server certificates. Without it the
    /// operator's built-in web PKI roots are used. Certificates are always validated unless
    /// `insecureSkipVerify` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Disable certificate validation. Only for labs: anyone on the network path can then read the
    /// admin password. Reported as a warning condition while set.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// kstatus condition types used by every kind.
pub mod condition_types {
    /// The object is fully reconciled and working.
    pub const READY: &str = "Ready";
    /// The operator is still making changes.
    pub const RECONCILING: &str = "Reconciling";
    /// Progress is blocked until a human acts (bad reference, conflict, unreachable dependency).
    pub const STALLED: &str = "Stalled";
}

/// Common status fields: `observedGeneration` and kstatus `conditions`.
pub trait HasConditions {
    /// The conditions of the status.
    fn conditions(&self) -> &[Condition];
}

/// Find a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Keys of the operator-namespace Secrets that carry certificate material to hosts. The operator
/// writes them; HostConfig items reference them; the agent reads them.
pub mod host_secret_keys {
    /// PKCS#12 bundle (certificate + private key), for import with the key.
    pub const PFX: &str = "certificate.pfx";
    /// Password of the PKCS#12 bundle.
    pub const PFX_PASSWORD: &str = "pfx-password";
    /// Public certificate, DER.
    pub const CERTIFICATE_DER: &str = "certificate.der";
    /// Service account password (copied from the user's Secret for the agent's namespace).
    pub const PASSWORD: &str = "password";
}

/// Label put on every object the operator creates, for ownership and RBAC-friendly listing.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "ssis-operator";

/// Node-agent liveness: each agent renews a `coordination.k8s.io/v1` Lease named
/// [`agent_lease_name`] in its namespace (the operator's), as the kubelet does with its node Lease,
/// instead of writing a heartbeat into the HostConfig status.
pub mod agent_lease {
    /// Label on every agent Lease (the operator watches Leases with it).
    pub const LABEL: &str = "ssis.sqlops.io/agent-lease";
    /// Seconds a Lease stays valid after a renewal.
    pub const DURATION_SECONDS: i32 = 120;
    /// Seconds between renewals (the issue's bound: no more than one renewal per 30 s per node).
    pub const RENEW_EVERY_SECONDS: u64 = 30;

    /// The Lease of the agent on `node`.
    pub fn name(node: &str) -> String {
        format!("ssis-agent-{node}")
    }
}
