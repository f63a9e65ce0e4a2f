//! The SQL side: every SQL Server interaction goes through [`Catalog`].
//!
//! Implementations: `tiberius` (real, rustls TLS with validation on by default) and `simulated`
//! (an in-memory SSISDB / availability-group model that follows the documented semantics).
//! The planner never talks SQL: it reads a [`CatalogObservation`] and emits [`SqlAction`]s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use ssis_agent::host::SecretString;

/// Where and how to connect for one availability group. Built by the controller from the
/// `SsisdbAvailabilityGroup` spec and its Secrets.
#[derive(Clone, Debug)]
pub struct CatalogTarget {
    /// `namespace/name` of the SsisdbAvailabilityGroup (for the simulated model and logs).
    pub key: String,
    pub availability_group_name: String,
    pub database_name: String,
    pub replicas: Vec<ReplicaEndpoint>,
    pub listener_name: String,
    pub listener_port: u16,
    pub admin_username: String,
    pub admin_password: SecretString,
    /// PEM CA bundle; `None` uses the built-in roots. Validation is on unless `insecure_skip_verify`.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
    /// Current logging-login password: used only to check it with `PWDCOMPARE`, never stored.
    pub logging_password: SecretString,
    /// Domain accounts of master services that need a login (reference §5.3 [INFER]).
    pub master_service_accounts: Vec<String>,
}

/// One replica endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaEndpoint {
    /// `@@SERVERNAME` / `replica_server_name`.
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// What the operator observed in SQL Server for one availability group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogObservation {
    /// Replica currently primary for the catalog database, if any replica answered as primary.
    pub primary: Option<String>,
    /// The availability group exists (seen from the primary).
    pub availability_group_exists: bool,
    /// The catalog database is a member of the group.
    pub database_in_group: bool,
    /// Listener as SQL Server reports it: (name, port). Port `None` when created outside SQL.
    pub listener: Option<(String, Option<u16>)>,
    /// Per-replica observations, in spec order.
    pub replicas: Vec<ReplicaObservation>,
    /// SSISDB state read on the primary; `None` when no primary answered.
    pub ssisdb: Option<SsisdbObservation>,
}

/// What one replica reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaObservation {
    pub name: String,
    /// Connection worked. When false, `error` says why and the other fields are defaults.
    pub reachable: bool,
    pub error: Option<String>,
    /// `PRIMARY`, `SECONDARY`, `RESOLVING`.
    pub role: String,
    /// `HEALTHY`, `PARTIALLY_HEALTHY`, `NOT_HEALTHY`.
    pub synchronization_health: String,
    /// SQL authentication (mixed mode) is enabled: worker logging needs it (pitfall 9).
    pub sql_auth_enabled: bool,
    /// The DMK password is stored for the catalog database (`sp_control_dbmasterkey_password`),
    /// so this replica can open the DMK after a failover (pitfall 10).
    pub master_key_password_stored: bool,
    /// SID (hex, `0x…`) of `##MS_SSISLogDBWorkerAgentLogin##`, when the login exists.
    pub logging_login_sid: Option<String>,
    /// `PWDCOMPARE(current password, password_hash)` for the logging login.
    pub logging_login_password_matches: bool,
    /// Master service accounts that have a server login here.
    pub master_account_logins: Vec<String>,
}

/// SSISDB state read on the primary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsisdbObservation {
    /// `sys.databases.is_master_key_encrypted_by_server` for SSISDB on the primary (error 15581
    /// otherwise).
    pub master_key_encrypted_by_server: bool,
    /// `catalog.master_properties` (property_name → property_value).
    pub master_properties: BTreeMap<String, String>,
    /// `catalog.worker_agents`.
    pub worker_agents: Vec<WorkerAgentRow>,
    /// `catalog.alwayson_replicas.server_name` (registered for Always On support).
    pub always_on_replicas: Vec<String>,
    /// Master service accounts with an SSISDB user in `ssis_admin`.
    pub master_account_users: Vec<String>,
}

/// One row of `catalog.worker_agents`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerAgentRow {
    /// `WorkerAgentId` (upper-case GUID).
    pub worker_agent_id: String,
    pub is_enabled: bool,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub machine_name: String,
    pub tags: Option<String>,
    /// `LastOnlineTime`, RFC 3339.
    pub last_online_time: Option<String>,
}

/// Reference to a secret value the executor resolves at apply time: the plan never holds secrets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SecretValue {
    /// The logging-login password of the group.
    LoggingPassword,
    /// The SSISDB database master key password of the group.
    CatalogPassword,
}

/// One SQL action. Every action maps to one compile-time-constant batch; its fields travel as
/// parameters. `replica` names the replica the action runs on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SqlAction {
    /// Reference §10: create the listener (only when `listener.create` is set).
    CreateListener { replica: String, name: String, port: u16, static_ips: Vec<(String, String)> },
    /// Reference §5.3 / pitfall 8: `catalog.enable_scaleout` when `IS_SCALEOUT_ENABLED` is not TRUE.
    EnableScaleOut { replica: String },
    /// Pitfall 10 on the primary: `OPEN MASTER KEY ...; ALTER MASTER KEY ADD ENCRYPTION BY SERVICE MASTER KEY`.
    EncryptMasterKeyByServiceKey { replica: String, password: SecretValue },
    /// Pitfall 10 on every replica: `sp_control_dbmasterkey_password @action = N'add'` so the replica
    /// can open the DMK after it becomes primary.
    StoreMasterKeyPassword { replica: String, password: SecretValue },
    /// Step 6.1: set the logging login's password on the primary.
    SetLoggingLoginPassword { replica: String, password: SecretValue },
    /// Step 6.2: (re)create the logging login on a secondary with the primary's SID.
    CreateLoggingLoginWithSid { replica: String, sid: String, password: SecretValue, drop_existing: bool },
    /// Step 6.3: `catalog.update_logdb_info` pointing at the listener.
    UpdateLogDbInfo { replica: String, server_name: String, password: SecretValue },
    /// Step 8: `catalog.update_master_address`.
    UpdateMasterAddress { replica: String, address: String },
    /// Reference §5.3 [INFER]: server login for the master's domain account.
    CreateWindowsLogin { replica: String, account: String },
    /// Reference §5.3 [INFER]: SSISDB user in `ssis_admin` for the master's domain account.
    GrantSsisAdmin { replica: String, account: String },
    /// Reference §9.3: register a replica for SSISDB Always On support (`internal.add_replica_info`).
    RegisterAlwaysOnReplica { replica: String, server_name: String },
    /// Reference §8 step 7.
    EnableWorkerAgent { replica: String, worker_agent_id: String },
    /// Finalizer / `enabled: false`.
    DisableWorkerAgent { replica: String, worker_agent_id: String },
    /// Reference §8 step 8: `DisplayName`, `Description` or `Tags`.
    SetWorkerAgentProperty { replica: String, worker_agent_id: String, property: String, value: String },
}

impl SqlAction {
    /// One action of every kind, every user-data field set to `data`: what the tests of the SQL
    /// paths (batch registry, parameter binding, hostile input) run through. The match below is
    /// exhaustive, so a new kind does not compile until it gets an arm here, next to the list it
    /// must also join.
    #[doc(hidden)]
    pub fn one_of_every_kind(data: &str) -> Vec<SqlAction> {
        let r = || "NODE1".to_string();
        let d = || data.to_string();
        let actions = vec![
            SqlAction::CreateListener { replica: r(), name: d(), port: 1433, static_ips: vec![(d(), d()), (d(), d())] },
            SqlAction::CreateListener { replica: r(), name: d(), port: 1433, static_ips: vec![] },
            SqlAction::EnableScaleOut { replica: r() },
            SqlAction::EncryptMasterKeyByServiceKey { replica: r(), password: SecretValue::CatalogPassword },
            SqlAction::StoreMasterKeyPassword { replica: r(), password: SecretValue::CatalogPassword },
            SqlAction::SetLoggingLoginPassword { replica: r(), password: SecretValue::LoggingPassword },
            SqlAction::CreateLoggingLoginWithSid {
                replica: r(),
                sid: d(),
                password: SecretValue::LoggingPassword,
                drop_existing: true,
            },
            SqlAction::UpdateLogDbInfo { replica: r(), server_name: d(), password: SecretValue::LoggingPassword },
            SqlAction::UpdateMasterAddress { replica: r(), address: d() },
            SqlAction::CreateWindowsLogin { replica: r(), account: d() },
            SqlAction::GrantSsisAdmin { replica: r(), account: d() },
            SqlAction::RegisterAlwaysOnReplica { replica: r(), server_name: d() },
            SqlAction::EnableWorkerAgent { replica: r(), worker_agent_id: d() },
            SqlAction::DisableWorkerAgent { replica: r(), worker_agent_id: d() },
            SqlAction::SetWorkerAgentProperty { replica: r(), worker_agent_id: d(), property: d(), value: d() },
        ];
        for action in &actions {
            match action {
                SqlAction::CreateListener { .. }
                | SqlAction::EnableScaleOut { .. }
                | SqlAction::EncryptMasterKeyByServiceKey { .. }
                | SqlAction::StoreMasterKeyPassword { .. }
                | SqlAction::SetLoggingLoginPassword { .. }
                | SqlAction::CreateLoggingLoginWithSid { .. }
                | SqlAction::UpdateLogDbInfo { .. }
                | SqlAction::UpdateMasterAddress { .. }
                | SqlAction::CreateWindowsLogin { .. }
                | SqlAction::GrantSsisAdmin { .. }
                | SqlAction::RegisterAlwaysOnReplica { .. }
                | SqlAction::EnableWorkerAgent { .. }
                | SqlAction::DisableWorkerAgent { .. }
                | SqlAction::SetWorkerAgentProperty { .. } => {}
            }
        }
        actions
    }
}

/// Errors talking to SQL Server.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The replica could not be reached (network, login, TLS).
    #[error("cannot connect to {replica}: {message}")]
    Connect { replica: String, message: String },
    /// SQL Server returned an error.
    #[error("SQL error {number} on {replica}: {message}")]
    Sql { replica: String, number: u32, message: String },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Every SQL interaction of the operator.
#[allow(async_fn_in_trait)]
pub trait Catalog: Send + Sync {
    /// Read everything the planner needs about one availability group.
    async fn observe(&self, target: &CatalogTarget) -> Result<CatalogObservation, CatalogError>;
    /// Who is primary and where the master runs, cheaply: polled every few seconds so an AG or
    /// master failover starts its follow-up within seconds. The default reads a full observation.
    async fn observe_roles(&self, target: &CatalogTarget) -> Result<RoleSnapshot, CatalogError> {
        self.observe(target).await.map(|observation| RoleSnapshot::of(&observation))
    }
    /// Run one action. `resolve` turns a [`SecretValue`] into the secret string.
    async fn execute(
        &self,
        target: &CatalogTarget,
        action: &SqlAction,
        resolve: &(dyn Fn(&SecretValue) -> SecretString + Sync),
    ) -> Result<(), CatalogError>;
}

/// The roles that decide where the follow-up of a failover goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleSnapshot {
    /// The replica that is primary for the availability group.
    pub primary: Option<String>,
    /// `catalog.master_properties` `MACHINE_NAME`: the node the active master runs on.
    pub master_machine: Option<String>,
    /// Replicas that answered.
    pub reachable: Vec<String>,
}

impl RoleSnapshot {
    pub fn of(observation: &CatalogObservation) -> Self {
        Self {
            primary: observation.primary.clone(),
            master_machine: observation.ssisdb.as_ref().and_then(|s| s.master_properties.get("MACHINE_NAME").cloned()),
            reachable: observation.replicas.iter().filter(|r| r.reachable).map(|r| r.name.clone()).collect(),
        }
    }
}

// ---- Implementations (added by the SQL side; the contract above is unchanged) ----

pub mod batches;
pub mod pool;
pub mod simulated;
pub mod tds;

pub use simulated::SimulatedCatalog;
pub use tds::TiberiusCatalog;

/// Install the process-wide rustls `CryptoProvider` (aws-lc-rs, the only one the operator links:
/// tiberius' rustls path turns it on, and kube and rcgen are set to it) once. Explicit rather than
/// left to rustls' feature detection, so a dependency that turns on a second provider cannot make
/// the first TLS client panic. Idempotent: later calls (or a provider installed by someone else
/// first) are fine. The controller calls it at start-up; tests call it before connecting.
pub fn install_crypto_provider() {
    // `install_default` fails only when a provider is installed already: that is the goal.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
