//! The host interface: every effect the agent has on a Windows node goes through [`Host`].
//!
//! Two implementations: `windows` (real Win32, `cfg(windows)`, tested under Wine) and `simulated`
//! (a directory-rooted model for Linux development, tests and the in-process simulation).
//! Paths are Windows paths (`C:\Program Files\...`); the simulated host maps them under its root.
//! Calls are blocking: the agent runs them on a blocking thread.

pub mod simulated;
#[cfg(windows)]
pub mod windows;

use ssis_crds::{CertStore, ServiceStartType};

/// Errors from host operations. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The object (service, certificate, key, file) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Another process holds the object for now (a sharing or lock violation on a file, the
    /// service database locked): transient, a later attempt can succeed unchanged.
    #[error("busy: {0}")]
    Busy(String),
    /// The agent lacks the right to do this (ERROR_ACCESS_DENIED: an ACL, a read-only file, a
    /// missing privilege). Not transient: retrying unchanged fails the same way until someone
    /// changes the rights.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The material or request is invalid (bad PFX password, wrong thumbprint, parse error).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend cannot do this (e.g. a Win32 feature Wine lacks, or no failover cluster).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Any other OS error, with its code.
    #[error("{context}: os error {code}")]
    Os { context: String, code: u32 },
    /// I/O error of the simulated backend.
    #[error("io: {0}")]
    Io(String),
}

/// A certificate found in a LocalMachine store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-1 thumbprint, upper-case hex.
    pub thumbprint: String,
    /// Subject, e.g. `CN=ssis-master.corp.example.com`.
    pub subject: String,
    /// Subject alternative DNS names.
    pub dns_names: Vec<String>,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// Whether a private key is associated with the certificate.
    pub has_private_key: bool,
}

/// Registry data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryData {
    /// REG_SZ.
    String(String),
    /// REG_DWORD.
    DWord(u32),
}

/// Run state of a Windows service (SERVICE_STATUS.dwCurrentState).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Stopped,
    StartPending,
    StopPending,
    Running,
    ContinuePending,
    PausePending,
    Paused,
}

/// A Windows service as found on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub state: ServiceState,
    pub start_type: ServiceStartType,
    /// Logon account (`ObjectName`), e.g. `NT Service\SSISScaleOutWorker160` or `CORP\svc-ssis`.
    pub logon_account: String,
}

/// An HTTP.SYS SSL binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslBindingInfo {
    pub thumbprint: String,
    pub store: CertStore,
    pub app_id: String,
}

/// A failover-cluster role (group) as seen from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRoleInfo {
    /// Windows computer name of the owner node.
    pub owner_node: String,
    /// `Online`, `Offline`, `Failed`, `PartialOnline`, `Pending`, `Unknown`.
    pub state: String,
    /// Service name of the role's Generic Service resource.
    pub service_name: String,
}

/// Parameters for creating a Generic Service role (`Add-ClusterGenericServiceRole`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRoleRequest {
    pub name: String,
    pub service_name: String,
    pub static_addresses: Vec<String>,
    pub ignore_networks: Vec<String>,
    pub possible_owners: Vec<String>,
    pub cluster_name: Option<String>,
}

/// A secret string that never prints its value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret value. Call only where it is handed to the OS.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// Every effect the agent can have on a host. Implementations must be idempotent where the
/// operation is (removing an absent certificate returns `Ok(false)`).
pub trait Host: Send {
    /// `windows` or `simulated`.
    fn backend_name(&self) -> &'static str;
    /// Windows computer name.
    fn computer_name(&self) -> Result<String, HostError>;

    // --- certificate stores (LocalMachine) ---
    fn list_certificates(&self, store: CertStore) -> Result<Vec<CertInfo>, HostError>;
    /// Import a PKCS#12 bundle with its private key; returns the thumbprint of the end-entity cert.
    fn import_pfx(&mut self, store: CertStore, pfx: &[u8], password: &SecretString) -> Result<String, HostError>;
    /// Import a public certificate (DER); returns its thumbprint.
    fn import_certificate(&mut self, store: CertStore, der: &[u8]) -> Result<String, HostError>;
    /// Remove by thumbprint; `Ok(false)` when it was not there.
    fn remove_certificate(&mut self, store: CertStore, thumbprint: &str) -> Result<bool, HostError>;
    /// Accounts with read access to the certificate's private key.
    fn private_key_readers(&self, store: CertStore, thumbprint: &str) -> Result<Vec<String>, HostError>;
    /// Grant an account read access to the certificate's private key.
    fn grant_private_key_read(&mut self, store: CertStore, thumbprint: &str, account: &str) -> Result<(), HostError>;

    // --- files ---
    /// Read a file; `Ok(None)` when it does not exist.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Replace a file atomically (temp file + flush + rename), keeping the previous content as
    /// `<path>.bak` when it existed.
    fn write_file_atomic(&mut self, path: &str, content: &[u8]) -> Result<(), HostError>;

    // --- registry (HKEY_LOCAL_MACHINE) ---
    fn registry_key_exists(&self, key: &str) -> Result<bool, HostError>;
    /// `value_name: None` is the key's default value.
    fn read_registry(&self, key: &str, value_name: Option<&str>) -> Result<Option<RegistryData>, HostError>;
    fn write_registry(&mut self, key: &str, value_name: Option<&str>, data: &RegistryData) -> Result<(), HostError>;

    // --- services ---
    /// `Ok(None)` when the service is not installed.
    fn query_service(&self, name: &str) -> Result<Option<ServiceInfo>, HostError>;
    fn start_service(&mut self, name: &str) -> Result<(), HostError>;
    fn stop_service(&mut self, name: &str) -> Result<(), HostError>;
    fn set_service_start_type(&mut self, name: &str, start_type: ServiceStartType) -> Result<(), HostError>;
    fn set_service_logon(&mut self, name: &str, account: &str, password: &SecretString) -> Result<(), HostError>;

    // --- HTTP.SYS ---
    fn query_ssl_binding(&self, ip_port: &str) -> Result<Option<SslBindingInfo>, HostError>;
    fn set_ssl_binding(
        &mut self,
        ip_port: &str,
        thumbprint: &str,
        store: CertStore,
        app_id: &str,
    ) -> Result<(), HostError>;

    // --- failover cluster ---
    /// `Ok(None)` when the role does not exist; `Err(Unsupported)` when the node is not clustered.
    fn query_cluster_role(&self, name: &str) -> Result<Option<ClusterRoleInfo>, HostError>;
    /// One-shot creation (PowerShell `Add-ClusterGenericServiceRole` on Windows).
    fn create_cluster_role(&mut self, request: &ClusterRoleRequest) -> Result<(), HostError>;
}
