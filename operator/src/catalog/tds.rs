//! The real [`Catalog`]: tiberius over TCP + rustls.
//!
//! One connection per replica and scope (`master` for server-level batches, the catalog database
//! for SSISDB batches, chosen with `Config::database` so the database name never appears in SQL).
//! TLS: encryption required; the server certificate is validated against the target's CA bundle,
//! else the bundled webpki roots; validation is skipped only when `insecure_skip_verify` is set.
//! SQL authentication with the admin credentials. Transient failures (I/O, timeouts, a short list
//! of SQL error numbers) are retried with backon; every batch is idempotent, so a retry is safe.
//!
//! Everything that does not need a live server (connection settings, parameter binding, row to
//! observation mapping, error mapping and redaction) is a pure function tested below.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, Row, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::batches::{self, BatchCall, Scope, SqlParam};
use super::pool::Pool;
use super::{
    Catalog, CatalogError, CatalogObservation, CatalogTarget, ReplicaEndpoint, ReplicaObservation, RoleSnapshot,
    SecretString, SecretValue, SqlAction, SsisdbObservation, WorkerAgentRow,
};

/// Timeouts and retry policy of [`TiberiusCatalog`].
#[derive(Clone, Debug)]
pub struct TiberiusOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Pre-login + TLS + login handshake timeout.
    pub login_timeout: Duration,
    /// Per-response command timeout.
    pub command_timeout: Duration,
    /// Retries after the first attempt, on transient errors only.
    pub retries: usize,
    pub min_retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// `APP_NAME()` seen by SQL Server.
    pub application_name: String,
}

impl Default for TiberiusOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(60),
            retries: 3,
            min_retry_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(5),
            application_name: "ssis-operator".into(),
        }
    }
}

/// The tiberius implementation of [`Catalog`]. Connections are pooled per replica, database and
/// credentials, and reused across passes.
#[derive(Clone, Debug, Default)]
pub struct TiberiusCatalog {
    options: TiberiusOptions,
    pool: std::sync::Arc<Pool<PoolKey, Connection>>,
}

impl TiberiusCatalog {
    pub fn new(options: TiberiusOptions) -> Self {
        Self { options, pool: Default::default() }
    }

    /// Logins (new connections) so far.
    pub fn logins(&self) -> u64 {
        self.pool.logins()
    }
}

/// What a pooled connection is good for: the same server, database, login and trust. The password
/// enters as a hash, so a changed password makes new connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    host: String,
    port: u16,
    database: String,
    username: String,
    password_hash: [u8; 32],
    trust: u64,
}

impl PoolKey {
    fn of(settings: &ConnectionSettings) -> Self {
        use sha2::Digest;
        let trust = match &settings.trust {
            Trust::CaBundle(pem) => {
                let digest = sha2::Sha256::digest(pem);
                u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
            }
            Trust::WebpkiRoots => 1,
            Trust::InsecureSkipVerify => 2,
        };
        Self {
            host: settings.host.clone(),
            port: settings.port,
            database: settings.database.clone(),
            username: settings.username.clone(),
            password_hash: sha2::Sha256::digest(settings.password.expose().as_bytes()).into(),
            trust,
        }
    }
}

/// How the server certificate is trusted.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// Validate against this PEM CA bundle (from the target's CA Secret).
    CaBundle(Vec<u8>),
    /// Validate against the bundled webpki (Mozilla) roots.
    WebpkiRoots,
    /// Accept any certificate: only when `insecure_skip_verify` is explicitly set.
    InsecureSkipVerify,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::CaBundle(pem) => write!(f, "CaBundle({} bytes)", pem.len()),
            Trust::WebpkiRoots => f.write_str("WebpkiRoots"),
            Trust::InsecureSkipVerify => f.write_str("InsecureSkipVerify"),
        }
    }
}

/// Everything needed to open one connection (pure data; `Debug` redacts the password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub replica: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: SecretString,
    pub trust: Trust,
    pub login_timeout: Duration,
    pub command_timeout: Duration,
    pub application_name: String,
}

/// Build the settings to reach `replica` in `scope`.
pub fn connection_settings(
    target: &CatalogTarget,
    replica: &ReplicaEndpoint,
    scope: Scope,
    options: &TiberiusOptions,
) -> ConnectionSettings {
    let trust = if target.insecure_skip_verify {
        Trust::InsecureSkipVerify
    } else if let Some(pem) = &target.ca_pem {
        Trust::CaBundle(pem.clone())
    } else {
        Trust::WebpkiRoots
    };
    let database = match scope {
        Scope::Server => "master".to_owned(),
        Scope::CatalogDatabase => target.database_name.clone(),
    };
    ConnectionSettings {
        replica: replica.name.clone(),
        host: replica.host.clone(),
        port: replica.port,
        database,
        username: target.admin_username.clone(),
        password: target.admin_password.clone(),
        trust,
        login_timeout: options.login_timeout,
        command_timeout: options.command_timeout,
        application_name: options.application_name.clone(),
    }
}

impl ConnectionSettings {
    /// The tiberius configuration: encryption required, certificate validation per [`Trust`].
    pub fn to_config(&self) -> Config {
        let mut config = Config::new();
        config.host(&self.host);
        config.port(self.port);
        config.database(&self.database);
        config.application_name(&self.application_name);
        config.authentication(AuthMethod::sql_server(&self.username, self.password.expose()));
        config.encryption(EncryptionLevel::Required);
        match &self.trust {
            // Extra CAs layered on the (possibly empty) OS store of the operator image.
            Trust::CaBundle(pem) => config.trust_cert_ca_bundle(pem.clone()),
            Trust::WebpkiRoots => config.trust_webpki_roots(),
            Trust::InsecureSkipVerify => config.trust_cert(),
        }
        config.handshake_timeout(Some(self.login_timeout));
        config.command_timeout(Some(self.command_timeout));
        config
    }
}

/// A parameter as tiberius binds it: `@P1...` in order, never spliced into the text.
struct Bound<'a>(&'a SqlParam);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> ColumnData<'_> {
        match self.0 {
            SqlParam::Text(t) => ColumnData::String(Some(Cow::Borrowed(t.as_str()))),
            SqlParam::Secret(s) => ColumnData::String(Some(Cow::Borrowed(s.expose()))),
            SqlParam::Int(i) => ColumnData::I32(Some(*i)),
            SqlParam::Bit(b) => ColumnData::Bit(Some(*b)),
        }
    }
}

/// SQL error numbers worth a retry: deadlock victim, transport-level failures reported by the
/// server, database in transition during a failover.
const TRANSIENT_SQL_ERRORS: &[u32] = &[1205, 233, 64, 4060, 4221, 10053, 10054, 10060, 40613, 40197, 40501];

/// A failure before mapping to [`CatalogError`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    Connect { message: String, transient: bool },
    Sql { number: u32, message: String },
    Other(String),
}

impl Failure {
    fn transient(&self) -> bool {
        match self {
            Failure::Connect { transient, .. } => *transient,
            Failure::Sql { number, .. } => TRANSIENT_SQL_ERRORS.contains(number),
            Failure::Other(_) => false,
        }
    }

    fn from_tiberius(e: tiberius::error::Error, connecting: bool) -> Self {
        use tiberius::error::Error as E;
        match e {
            E::Server(token) => Failure::Sql { number: token.code(), message: token.message().to_owned() },
            E::Io { .. } => Failure::Connect { message: e.to_string(), transient: true },
            other if connecting => Failure::Connect { message: other.to_string(), transient: false },
            other => Failure::Other(other.to_string()),
        }
    }

    /// Map into the contract's error, with every secret value removed from the message.
    fn into_catalog_error(self, replica: &str, secrets: &[&str]) -> CatalogError {
        match self {
            Failure::Connect { message, .. } => {
                CatalogError::Connect { replica: replica.to_owned(), message: redact(&message, secrets) }
            }
            Failure::Sql { number, message } => {
                CatalogError::Sql { replica: replica.to_owned(), number, message: redact(&message, secrets) }
            }
            Failure::Other(message) => CatalogError::Other(format!("{replica}: {}", redact(&message, secrets))),
        }
    }
}

/// Remove every occurrence of every non-empty secret from `message`.
pub fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "<redacted>");
    }
    out
}

type Connection = Client<Compat<TcpStream>>;

async fn connect(settings: &ConnectionSettings, connect_timeout: Duration) -> Result<Connection, Failure> {
    let config = settings.to_config();
    let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect((settings.host.as_str(), settings.port)))
        .await
    {
        Err(_) => {
            return Err(Failure::Connect {
                message: format!("TCP connect to {}:{} timed out", settings.host, settings.port),
                transient: true,
            });
        }
        Ok(Err(e)) => {
            return Err(Failure::Connect {
                message: format!("TCP connect to {}:{}: {e}", settings.host, settings.port),
                transient: true,
            });
        }
        Ok(Ok(tcp)) => tcp,
    };
    tcp.set_nodelay(true).map_err(|e| Failure::Connect { message: e.to_string(), transient: true })?;
    Client::connect(config, tcp.compat_write()).await.map_err(|e| Failure::from_tiberius(e, true))
}

async fn query(client: &mut Connection, sql: &'static str, params: &[SqlParam]) -> Result<Vec<Row>, Failure> {
    let bound: Vec<Bound<'_>> = params.iter().map(Bound).collect();
    let refs: Vec<&dyn ToSql> = bound.iter().map(|b| b as &dyn ToSql).collect();
    let stream = client.query(sql, &refs).await.map_err(|e| Failure::from_tiberius(e, false))?;
    stream.into_first_result().await.map_err(|e| Failure::from_tiberius(e, false))
}

async fn execute_batch(client: &mut Connection, call: &BatchCall) -> Result<(), Failure> {
    let bound: Vec<Bound<'_>> = call.params.iter().map(Bound).collect();
    let refs: Vec<&dyn ToSql> = bound.iter().map(|b| b as &dyn ToSql).collect();
    client.execute(call.sql, &refs).await.map_err(|e| Failure::from_tiberius(e, false))?;
    Ok(())
}

fn text_param(value: &str) -> SqlParam {
    SqlParam::Text(value.to_owned())
}

fn get_str(row: &Row, idx: usize) -> Result<Option<String>, Failure> {
    row.try_get::<&str, _>(idx).map(|v| v.map(str::to_owned)).map_err(|e| Failure::Other(e.to_string()))
}

fn get_i32(row: &Row, idx: usize) -> Result<Option<i32>, Failure> {
    row.try_get::<i32, _>(idx).map_err(|e| Failure::Other(e.to_string()))
}

fn get_bool(row: &Row, idx: usize) -> Result<Option<bool>, Failure> {
    row.try_get::<bool, _>(idx).map_err(|e| Failure::Other(e.to_string()))
}

/// What the server-level observation queries returned on one replica (plain data).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaRows {
    /// `OBSERVE_LOCAL_REPLICA_STATE`: (role_desc, synchronization_health_desc); `None` = the group
    /// does not exist on this replica.
    pub local_state: Option<(Option<String>, Option<String>)>,
    /// `OBSERVE_DATABASE_IN_GROUP` returned a row.
    pub database_in_group: bool,
    /// `OBSERVE_LISTENER`: (dns_name, port).
    pub listener: Option<(String, Option<i32>)>,
    /// `OBSERVE_SQL_AUTH_MODE`: `IsIntegratedSecurityOnly`.
    pub integrated_security_only: Option<i32>,
    /// `OBSERVE_LOGGING_LOGIN`: (sid_hex, PWDCOMPARE result); `None` = no login.
    pub logging_login: Option<(Option<String>, Option<i32>)>,
    /// `OBSERVE_MASTER_KEY_PASSWORD_STORED`: count.
    pub master_key_passwords: i32,
    /// `OBSERVE_WINDOWS_LOGINS`.
    pub windows_logins: Vec<String>,
    /// `OBSERVE_MASTER_KEY_ENCRYPTED_BY_SERVER`; `None` = no such database here.
    pub master_key_encrypted_by_server: Option<bool>,
}

/// What the catalog-database queries returned on the primary (plain data).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogRows {
    pub master_properties: Vec<(String, Option<String>)>,
    /// (id, is_enabled, display_name, description, machine_name, tags, last_online_time).
    pub worker_agents: Vec<WorkerAgentRaw>,
    pub always_on_replicas: Vec<String>,
    pub ssis_admin_members: Vec<String>,
}

/// One raw `catalog.worker_agents` row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerAgentRaw {
    pub worker_agent_id: Option<String>,
    pub is_enabled: Option<bool>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub machine_name: Option<String>,
    pub tags: Option<String>,
    pub last_online_time: Option<String>,
}

fn contains_ignore_case(haystack: &[String], needle: &str) -> bool {
    let needle = needle.to_lowercase();
    haystack.iter().any(|h| h.to_lowercase() == needle)
}

/// Accounts of `wanted` present in `have`, case-insensitively (Windows names), in `wanted` order.
pub fn matching_accounts(wanted: &[String], have: &[String]) -> Vec<String> {
    wanted.iter().filter(|w| contains_ignore_case(have, w)).cloned().collect()
}

/// Row → [`ReplicaObservation`] for a replica that answered.
pub fn replica_observation(name: &str, rows: &ReplicaRows, master_accounts: &[String]) -> ReplicaObservation {
    let (role, health) = match &rows.local_state {
        Some((role, health)) => (role.clone().unwrap_or_default(), health.clone().unwrap_or_default()),
        None => (String::new(), String::new()),
    };
    let (sid, matches) = match &rows.logging_login {
        Some((sid, matches)) => (sid.clone(), *matches == Some(1)),
        None => (None, false),
    };
    ReplicaObservation {
        name: name.to_owned(),
        reachable: true,
        error: None,
        role,
        synchronization_health: health,
        sql_auth_enabled: rows.integrated_security_only == Some(0),
        master_key_password_stored: rows.master_key_passwords > 0,
        logging_login_sid: sid.map(|s| s.to_ascii_uppercase().replacen("0X", "0x", 1)),
        logging_login_password_matches: matches,
        master_account_logins: matching_accounts(master_accounts, &rows.windows_logins),
    }
}

/// A replica that could not be observed.
pub fn unreachable_replica(name: &str, message: String) -> ReplicaObservation {
    ReplicaObservation { name: name.to_owned(), reachable: false, error: Some(message), ..Default::default() }
}

/// Normalise `LastOnlineTime` (ISO 8601, style 127) to RFC 3339; unparsable text is kept.
pub fn normalise_time(raw: &str) -> String {
    let trimmed = raw.trim();
    match trimmed.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.to_string(),
        Err(_) => trimmed.to_owned(),
    }
}

/// Rows → [`SsisdbObservation`].
pub fn ssisdb_observation(
    encrypted_by_server: bool,
    rows: &CatalogRows,
    master_accounts: &[String],
) -> SsisdbObservation {
    let master_properties: BTreeMap<String, String> =
        rows.master_properties.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    let worker_agents = rows
        .worker_agents
        .iter()
        .filter_map(|w| {
            Some(WorkerAgentRow {
                worker_agent_id: w.worker_agent_id.as_ref()?.to_ascii_uppercase(),
                is_enabled: w.is_enabled.unwrap_or(false),
                display_name: w.display_name.clone(),
                description: w.description.clone(),
                machine_name: w.machine_name.clone().unwrap_or_default(),
                tags: w.tags.clone(),
                last_online_time: w.last_online_time.as_deref().map(normalise_time),
            })
        })
        .collect();
    SsisdbObservation {
        master_key_encrypted_by_server: encrypted_by_server,
        master_properties,
        worker_agents,
        always_on_replicas: rows.always_on_replicas.clone(),
        master_account_users: matching_accounts(master_accounts, &rows.ssis_admin_members),
    }
}

/// Put the per-replica results together: the primary is the replica that reports the `PRIMARY`
/// role (first in spec order); group-level facts come from the primary, else from any replica.
pub fn assemble_observation(
    replicas: Vec<(ReplicaObservation, Option<ReplicaRows>)>,
    ssisdb: Option<SsisdbObservation>,
) -> CatalogObservation {
    let primary_index = replicas.iter().position(|(o, _)| o.reachable && o.role.eq_ignore_ascii_case("PRIMARY"));
    let group_view = primary_index
        .and_then(|i| replicas[i].1.as_ref())
        .or_else(|| replicas.iter().filter_map(|(_, r)| r.as_ref()).find(|r| r.local_state.is_some()));
    let (exists, in_group, listener) = match group_view {
        Some(rows) => (
            rows.local_state.is_some(),
            rows.database_in_group,
            rows.listener.as_ref().map(|(name, port)| (name.clone(), port.and_then(|p| u16::try_from(p).ok()))),
        ),
        None => (false, false, None),
    };
    CatalogObservation {
        primary: primary_index.map(|i| replicas[i].0.name.clone()),
        availability_group_exists: exists,
        database_in_group: in_group,
        listener,
        replicas: replicas.into_iter().map(|(o, _)| o).collect(),
        ssisdb: if primary_index.is_some() { ssisdb } else { None },
    }
}

impl TiberiusCatalog {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.options.min_retry_delay)
            .with_max_delay(self.options.max_retry_delay)
            .with_max_times(self.options.retries)
    }

    async fn read_replica(&self, target: &CatalogTarget, replica: &ReplicaEndpoint) -> Result<ReplicaRows, Failure> {
        let settings = connection_settings(target, replica, Scope::Server, &self.options);
        let ag = &target.availability_group_name;
        let db = &target.database_name;
        let key = PoolKey::of(&settings);
        let attempt = || async {
            let mut client = self.pool.checkout(&key, || connect(&settings, self.options.connect_timeout)).await?;
            let mut rows = ReplicaRows::default();
            let state = query(&mut client, batches::OBSERVE_LOCAL_REPLICA_STATE, &[text_param(ag)]).await?;
            if let Some(r) = state.first() {
                rows.local_state = Some((get_str(r, 0)?, get_str(r, 1)?));
            }
            rows.database_in_group =
                !query(&mut client, batches::OBSERVE_DATABASE_IN_GROUP, &[text_param(ag), text_param(db)])
                    .await?
                    .is_empty();
            if let Some(r) = query(&mut client, batches::OBSERVE_LISTENER, &[text_param(ag)]).await?.first() {
                rows.listener = get_str(r, 0)?.map(|name| (name, get_i32(r, 1).ok().flatten()));
            }
            if let Some(r) = query(&mut client, batches::OBSERVE_SQL_AUTH_MODE, &[]).await?.first() {
                rows.integrated_security_only = get_i32(r, 0)?;
            }
            let logging_param = SqlParam::Secret(target.logging_password.clone());
            if let Some(r) = query(&mut client, batches::OBSERVE_LOGGING_LOGIN, &[logging_param]).await?.first() {
                rows.logging_login = Some((get_str(r, 0)?, get_i32(r, 1)?));
            }
            if let Some(r) =
                query(&mut client, batches::OBSERVE_MASTER_KEY_PASSWORD_STORED, &[text_param(db)]).await?.first()
            {
                rows.master_key_passwords = get_i32(r, 0)?.unwrap_or(0);
            }
            for r in query(&mut client, batches::OBSERVE_WINDOWS_LOGINS, &[]).await? {
                rows.windows_logins.extend(get_str(&r, 0)?);
            }
            if let Some(r) =
                query(&mut client, batches::OBSERVE_MASTER_KEY_ENCRYPTED_BY_SERVER, &[text_param(db)]).await?.first()
            {
                rows.master_key_encrypted_by_server = get_bool(r, 0)?;
            }
            self.pool.checkin(key.clone(), client);
            Ok(rows)
        };
        attempt.retry(self.backoff()).sleep(tokio::time::sleep).when(Failure::transient).await
    }

    async fn read_catalog(&self, target: &CatalogTarget, replica: &ReplicaEndpoint) -> Result<CatalogRows, Failure> {
        let settings = connection_settings(target, replica, Scope::CatalogDatabase, &self.options);
        let key = PoolKey::of(&settings);
        let attempt = || async {
            let mut client = self.pool.checkout(&key, || connect(&settings, self.options.connect_timeout)).await?;
            let mut rows = CatalogRows::default();
            for r in query(&mut client, batches::OBSERVE_MASTER_PROPERTIES, &[]).await? {
                if let Some(name) = get_str(&r, 0)? {
                    rows.master_properties.push((name, get_str(&r, 1)?));
                }
            }
            for r in query(&mut client, batches::OBSERVE_WORKER_AGENTS, &[]).await? {
                rows.worker_agents.push(WorkerAgentRaw {
                    worker_agent_id: get_str(&r, 0)?,
                    is_enabled: get_bool(&r, 1)?,
                    display_name: get_str(&r, 2)?,
                    description: get_str(&r, 3)?,
                    machine_name: get_str(&r, 4)?,
                    tags: get_str(&r, 5)?,
                    last_online_time: get_str(&r, 6)?,
                });
            }
            for r in query(&mut client, batches::OBSERVE_ALWAYSON_REPLICAS, &[]).await? {
                rows.always_on_replicas.extend(get_str(&r, 0)?);
            }
            for r in query(&mut client, batches::OBSERVE_SSIS_ADMIN_MEMBERS, &[]).await? {
                rows.ssis_admin_members.extend(get_str(&r, 0)?);
            }
            self.pool.checkin(key.clone(), client);
            Ok(rows)
        };
        attempt.retry(self.backoff()).sleep(tokio::time::sleep).when(Failure::transient).await
    }

    async fn run_calls(&self, settings: &ConnectionSettings, calls: &[BatchCall]) -> Result<(), Failure> {
        let key = PoolKey::of(settings);
        let attempt = || async {
            let mut client = self.pool.checkout(&key, || connect(settings, self.options.connect_timeout)).await?;
            for call in calls {
                execute_batch(&mut client, call).await?;
            }
            self.pool.checkin(key.clone(), client);
            Ok(())
        };
        attempt.retry(self.backoff()).sleep(tokio::time::sleep).when(Failure::transient).await
    }
}

fn secrets_of(target: &CatalogTarget) -> [&str; 2] {
    [target.admin_password.expose(), target.logging_password.expose()]
}

impl Catalog for TiberiusCatalog {
    async fn observe(&self, target: &CatalogTarget) -> Result<CatalogObservation, CatalogError> {
        let secrets = secrets_of(target);
        let reads = futures::future::join_all(target.replicas.iter().map(|r| self.read_replica(target, r))).await;
        let mut replicas = Vec::with_capacity(reads.len());
        for (endpoint, read) in target.replicas.iter().zip(reads) {
            replicas.push(match read {
                Ok(rows) => (replica_observation(&endpoint.name, &rows, &target.master_service_accounts), Some(rows)),
                Err(failure) => {
                    let message = failure.into_catalog_error(&endpoint.name, &secrets).to_string();
                    (unreachable_replica(&endpoint.name, message), None)
                }
            });
        }
        let primary = replicas.iter().position(|(o, _)| o.reachable && o.role.eq_ignore_ascii_case("PRIMARY"));
        let mut ssisdb = None;
        if let Some(i) = primary {
            let encrypted = replicas[i].1.as_ref().and_then(|r| r.master_key_encrypted_by_server);
            // No catalog database on the primary: nothing to read.
            if let Some(encrypted) = encrypted {
                match self.read_catalog(target, &target.replicas[i]).await {
                    Ok(rows) => {
                        ssisdb = Some(ssisdb_observation(encrypted, &rows, &target.master_service_accounts));
                    }
                    Err(failure) => {
                        let message = failure.into_catalog_error(&target.replicas[i].name, &secrets).to_string();
                        replicas[i].0.error = Some(message);
                    }
                }
            }
        }
        Ok(assemble_observation(replicas, ssisdb))
    }

    /// Every replica's role (one query each, pooled), and the master's `MACHINE_NAME` from the
    /// primary: cheap enough to run every few seconds.
    async fn observe_roles(&self, target: &CatalogTarget) -> Result<RoleSnapshot, CatalogError> {
        let secrets = secrets_of(target);
        let ag = &target.availability_group_name;
        let mut snapshot = RoleSnapshot::default();
        for replica in &target.replicas {
            let settings = connection_settings(target, replica, Scope::Server, &self.options);
            let key = PoolKey::of(&settings);
            let role = async {
                let mut client = self.pool.checkout(&key, || connect(&settings, self.options.connect_timeout)).await?;
                let state = query(&mut client, batches::OBSERVE_LOCAL_REPLICA_STATE, &[text_param(ag)]).await?;
                let role = state.first().map(|r| get_str(r, 0)).transpose()?.flatten();
                self.pool.checkin(key.clone(), client);
                Ok::<_, Failure>(role)
            };
            match role.await {
                Ok(role) => {
                    if role.as_deref().is_some_and(|r| r.eq_ignore_ascii_case("PRIMARY")) {
                        snapshot.primary = Some(replica.name.clone());
                    }
                    snapshot.reachable.push(replica.name.clone());
                }
                Err(failure) => tracing::debug!(
                    replica = %replica.name,
                    error = %failure.into_catalog_error(&replica.name, &secrets),
                    "role poll"
                ),
            }
        }
        if let Some(primary) = target.replicas.iter().find(|r| Some(&r.name) == snapshot.primary.as_ref()) {
            let settings = connection_settings(target, primary, Scope::CatalogDatabase, &self.options);
            let key = PoolKey::of(&settings);
            let machine = async {
                let mut client = self.pool.checkout(&key, || connect(&settings, self.options.connect_timeout)).await?;
                let mut machine = None;
                for r in query(&mut client, batches::OBSERVE_MASTER_PROPERTIES, &[]).await? {
                    if get_str(&r, 0)?.as_deref() == Some("MACHINE_NAME") {
                        machine = get_str(&r, 1)?;
                    }
                }
                self.pool.checkin(key.clone(), client);
                Ok::<_, Failure>(machine)
            };
            // No catalog yet (or not readable): the role alone still tells a failover.
            snapshot.master_machine = machine.await.ok().flatten();
        }
        Ok(snapshot)
    }

    async fn execute(
        &self,
        target: &CatalogTarget,
        action: &SqlAction,
        resolve: &(dyn Fn(&SecretValue) -> SecretString + Sync),
    ) -> Result<(), CatalogError> {
        let replica_name = batches::action_replica(action);
        let endpoint =
            target.replicas.iter().find(|r| r.name == replica_name).ok_or_else(|| {
                CatalogError::Other(format!("replica {replica_name} is not a replica of {}", target.key))
            })?;
        let calls = batches::action_calls(target, action, resolve);
        let mut secrets: Vec<&str> = secrets_of(target).to_vec();
        secrets.extend(calls.iter().flat_map(BatchCall::secrets).map(SecretString::expose));
        let scope = calls.first().map(|c| c.scope).unwrap_or(Scope::Server);
        let settings = connection_settings(target, endpoint, scope, &self.options);
        tracing::info!(replica = %replica_name, action = batches::action_kind(action), "running SQL action");
        self.run_calls(&settings, &calls).await.map_err(|f| f.into_catalog_error(replica_name, &secrets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CatalogTarget {
        CatalogTarget {
            key: "ns/ag".into(),
            availability_group_name: "AG_SSIS".into(),
            database_name: "SSISDB".into(),
            replicas: vec![
                ReplicaEndpoint { name: "NODE1".into(), host: "node1.corp.local".into(), port: 1433 },
                ReplicaEndpoint { name: "NODE2".into(), host: "node2.corp.local".into(), port: 14330 },
            ],
            listener_name: "agl-ssis".into(),
            listener_port: 1433,
            admin_username: "operator".into(),
            admin_password: SecretString::new("Adm1n'Pa$$"),
            ca_pem: None,
            insecure_skip_verify: false,
            logging_password: SecretString::new("L0g'pw"),
            master_service_accounts: vec!["CORP\\svc-ssis".into()],
        }
    }

    #[test]
    fn connection_settings_follow_scope_and_trust() {
        let mut t = target();
        let options = TiberiusOptions::default();
        let s = connection_settings(&t, &t.replicas[1], Scope::Server, &options);
        assert_eq!((s.host.as_str(), s.port, s.database.as_str()), ("node2.corp.local", 14330, "master"));
        assert_eq!(s.trust, Trust::WebpkiRoots);
        let s = connection_settings(&t, &t.replicas[0], Scope::CatalogDatabase, &options);
        assert_eq!(s.database, "SSISDB");

        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        t.ca_pem = Some(pem.clone());
        let s = connection_settings(&t, &t.replicas[0], Scope::Server, &options);
        assert_eq!(s.trust, Trust::CaBundle(pem));

        // Skipping verification only when explicitly asked, and then it wins over a CA.
        t.insecure_skip_verify = true;
        let s = connection_settings(&t, &t.replicas[0], Scope::Server, &options);
        assert_eq!(s.trust, Trust::InsecureSkipVerify);
    }

    #[test]
    fn tiberius_config_requires_encryption_and_validates_by_default() {
        let mut t = target();
        let options = TiberiusOptions::default();
        let config = connection_settings(&t, &t.replicas[0], Scope::Server, &options).to_config();
        let debug = format!("{config:?}");
        assert!(debug.contains("encryption: Required"), "{debug}");
        assert!(debug.contains("bypass: false"), "{debug}");
        assert!(debug.contains("WebpkiRoots"), "{debug}");
        assert!(!debug.contains("Adm1n"), "password in Debug: {debug}");
        assert_eq!(config.get_addr(), "node1.corp.local:1433");
        assert_eq!(config.get_handshake_timeout(), Some(options.login_timeout));
        assert_eq!(config.get_command_timeout(), Some(options.command_timeout));

        t.ca_pem = Some(b"pem-bytes".to_vec());
        let debug = format!("{:?}", connection_settings(&t, &t.replicas[0], Scope::Server, &options).to_config());
        assert!(debug.contains("bypass: false") && debug.contains("len: 9"), "{debug}");

        t.insecure_skip_verify = true;
        let debug = format!("{:?}", connection_settings(&t, &t.replicas[0], Scope::Server, &options).to_config());
        assert!(debug.contains("bypass: true"), "{debug}");
        assert!(debug.contains("encryption: Required"), "{debug}");
    }

    #[test]
    fn settings_debug_never_shows_the_password() {
        let t = target();
        let s = connection_settings(&t, &t.replicas[0], Scope::Server, &TiberiusOptions::default());
        let debug = format!("{s:?}");
        assert!(!debug.contains("Adm1n"), "{debug}");
    }

    #[test]
    fn parameters_are_bound_with_their_sql_types() {
        let text = SqlParam::Text("a'b".into());
        assert_eq!(Bound(&text).to_sql(), ColumnData::String(Some(Cow::Borrowed("a'b"))));
        let secret = SqlParam::Secret(SecretString::new("p'w"));
        assert_eq!(Bound(&secret).to_sql(), ColumnData::String(Some(Cow::Borrowed("p'w"))));
        assert_eq!(Bound(&SqlParam::Int(1433)).to_sql(), ColumnData::I32(Some(1433)));
        assert_eq!(Bound(&SqlParam::Bit(true)).to_sql(), ColumnData::Bit(Some(true)));
    }

    #[test]
    fn sql_errors_keep_number_and_lose_secrets() {
        let failure = Failure::Sql { number: 15118, message: "Password validation failed for 'L0g'pw'".into() };
        let err = failure.into_catalog_error("NODE2", &["L0g'pw", ""]);
        match err {
            CatalogError::Sql { replica, number, message } => {
                assert_eq!((replica.as_str(), number), ("NODE2", 15118));
                assert_eq!(message, "Password validation failed for '<redacted>'");
            }
            other => panic!("unexpected {other:?}"),
        }
        let connect = Failure::Connect { message: "login failed: Adm1n'Pa$$".into(), transient: false };
        let text = connect.into_catalog_error("NODE1", &secrets_of(&target())).to_string();
        assert!(!text.contains("Adm1n"), "{text}");
        assert!(text.starts_with("cannot connect to NODE1"), "{text}");
    }

    #[test]
    fn transient_classification() {
        assert!(Failure::Connect { message: String::new(), transient: true }.transient());
        assert!(Failure::Sql { number: 1205, message: String::new() }.transient());
        assert!(!Failure::Sql { number: 15581, message: String::new() }.transient());
        assert!(!Failure::Sql { number: 18456, message: String::new() }.transient());
        assert!(!Failure::Other(String::new()).transient());
        let io = tiberius::error::Error::Io { kind: std::io::ErrorKind::ConnectionReset, message: "reset".into() };
        assert!(Failure::from_tiberius(io, true).transient());
        let tls = tiberius::error::Error::Tls("certificate rejected".into());
        assert!(!Failure::from_tiberius(tls, true).transient());
    }

    fn primary_rows() -> ReplicaRows {
        ReplicaRows {
            local_state: Some((Some("PRIMARY".into()), Some("HEALTHY".into()))),
            database_in_group: true,
            listener: Some(("agl-ssis".into(), Some(1433))),
            integrated_security_only: Some(0),
            logging_login: Some((Some("0xab12".into()), Some(1))),
            master_key_passwords: 1,
            windows_logins: vec!["corp\\SVC-SSIS".into(), "CORP\\other".into()],
            master_key_encrypted_by_server: Some(true),
        }
    }

    #[test]
    fn rows_map_to_replica_observation() {
        let accounts = vec!["CORP\\svc-ssis".to_string(), "CORP\\missing".to_string()];
        let o = replica_observation("NODE1", &primary_rows(), &accounts);
        assert_eq!(o.role, "PRIMARY");
        assert_eq!(o.synchronization_health, "HEALTHY");
        assert!(o.reachable && o.sql_auth_enabled && o.master_key_password_stored);
        assert_eq!(o.logging_login_sid.as_deref(), Some("0xAB12"));
        assert!(o.logging_login_password_matches);
        assert_eq!(o.master_account_logins, vec!["CORP\\svc-ssis".to_string()]);

        let bare = ReplicaRows { integrated_security_only: Some(1), ..Default::default() };
        let o = replica_observation("NODE2", &bare, &accounts);
        assert_eq!(o.role, "");
        assert!(!o.sql_auth_enabled && !o.master_key_password_stored && !o.logging_login_password_matches);
        assert_eq!(o.logging_login_sid, None);
        // PWDCOMPARE NULL (no password hash) is not a match.
        let nulls = ReplicaRows { logging_login: Some((Some("0x01".into()), None)), ..Default::default() };
        assert!(!replica_observation("N", &nulls, &[]).logging_login_password_matches);
    }

    #[test]
    fn observation_takes_group_facts_from_the_primary() {
        let secondary = ReplicaRows {
            local_state: Some((Some("SECONDARY".into()), Some("HEALTHY".into()))),
            database_in_group: false,
            listener: None,
            ..Default::default()
        };
        let catalog = CatalogRows {
            master_properties: vec![("MASTER_ADDRESS".into(), Some("https://m:8391".into())), ("X".into(), None)],
            worker_agents: vec![WorkerAgentRaw {
                worker_agent_id: Some("a1b2c3d4-0000-0000-0000-000000000001".into()),
                is_enabled: Some(true),
                machine_name: Some("W1".into()),
                last_online_time: Some("2026-11-22T02:00:00.1234567Z".into()),
                ..Default::default()
            }],
            always_on_replicas: vec!["NODE1".into()],
            ssis_admin_members: vec!["CORP\\SVC-SSIS".into()],
        };
        let accounts = vec!["CORP\\svc-ssis".to_string()];
        let ssisdb = ssisdb_observation(true, &catalog, &accounts);
        let obs = assemble_observation(
            vec![
                (unreachable_replica("NODE0", "cannot connect".into()), None),
                (replica_observation("NODE2", &secondary, &accounts), Some(secondary.clone())),
                (replica_observation("NODE1", &primary_rows(), &accounts), Some(primary_rows())),
            ],
            Some(ssisdb),
        );
        assert_eq!(obs.primary.as_deref(), Some("NODE1"));
        assert!(obs.availability_group_exists && obs.database_in_group);
        assert_eq!(obs.listener, Some(("agl-ssis".into(), Some(1433))));
        assert_eq!(obs.replicas.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["NODE0", "NODE2", "NODE1"]);
        assert!(!obs.replicas[0].reachable);
        let ssisdb = obs.ssisdb.unwrap();
        assert_eq!(ssisdb.master_properties["MASTER_ADDRESS"], "https://m:8391");
        assert_eq!(ssisdb.master_properties["X"], "");
        assert_eq!(ssisdb.worker_agents[0].worker_agent_id, "A1B2C3D4-0000-0000-0000-000000000001");
        assert_eq!(ssisdb.worker_agents[0].last_online_time.as_deref(), Some("2026-11-22T02:00:00.1234567Z"));
        assert_eq!(ssisdb.master_account_users, accounts);

        // Without a primary: no SSISDB state, group facts from any replica that sees the group.
        let obs = assemble_observation(
            vec![(replica_observation("NODE2", &secondary, &accounts), Some(secondary))],
            Some(SsisdbObservation::default()),
        );
        assert_eq!(obs.primary, None);
        assert!(obs.availability_group_exists);
        assert_eq!(obs.ssisdb, None);
    }

    #[test]
    fn time_normalisation_accepts_offsets() {
        assert_eq!(normalise_time("2026-11-22T03:00:00.5+01:00"), "2026-11-22T02:00:00.5Z");
        assert_eq!(normalise_time("not a time"), "not a time");
    }

    #[test]
    fn crypto_provider_install_is_idempotent() {
        crate::catalog::install_crypto_provider();
        crate::catalog::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[tokio::test]
    async fn unreachable_replicas_are_reported_and_the_rest_still_observed() {
        crate::catalog::install_crypto_provider();
        // Port 1 on localhost refuses connections: both replicas unreachable, no retries.
        let mut t = target();
        for r in &mut t.replicas {
            r.host = "127.0.0.1".into();
            r.port = 1;
        }
        let catalog = TiberiusCatalog::new(TiberiusOptions { retries: 0, ..Default::default() });
        let obs = catalog.observe(&t).await.unwrap();
        assert_eq!(obs.replicas.len(), 2);
        assert!(obs.replicas.iter().all(|r| !r.reachable));
        let error = obs.replicas[0].error.as_deref().unwrap();
        assert!(error.starts_with("cannot connect to NODE1"), "{error}");
        assert!(!error.contains("Adm1n"));
        assert_eq!(obs.primary, None);

        let action = SqlAction::EnableScaleOut { replica: "NODE3".into() };
        let err = catalog.execute(&t, &action, &|_| SecretString::new("x")).await.unwrap_err();
        assert!(err.to_string().contains("NODE3"));
    }
}
