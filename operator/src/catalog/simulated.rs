//! The simulated [`Catalog`]: an in-memory SSISDB / availability-group model that follows the
//! semantics documented in shared/reference/ssis-scale-out.md.
//!
//! One [`SqlWorld`] per SsisdbAvailabilityGroup (`CatalogTarget::key`). The state is shared
//! in-process (`Arc<Mutex<..>>`, clones of a [`SimulatedCatalog`] see the same world) and can be
//! saved to / loaded from a JSON file (atomic write) so a restarted dev-mode operator sees the same
//! SQL world. Passwords are kept only as salted SHA-256 hashes (`PWDCOMPARE` semantics), never in
//! clear, so the state file holds no secret.
//!
//! Observation rows are mapped to a [`CatalogObservation`] by the same pure functions as the
//! tiberius implementation (`tds::replica_observation` ...), so both sides agree on the mapping.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ssis_agent::host::simulated::traffic::ScaleOutTraffic;

use super::batches::{LOGGING_LOGIN_NAME, action_kind, action_replica};
use super::tds::{
    CatalogRows, ReplicaRows, WorkerAgentRaw, assemble_observation, replica_observation, ssisdb_observation,
    unreachable_replica,
};
use super::{Catalog, CatalogError, CatalogObservation, CatalogTarget, SecretString, SecretValue, SqlAction};

/// The reserved worker id the registration procedure rejects (reference §3, error 27101).
pub const RESERVED_WORKER_AGENT_ID: &str = "11111111-1111-1111-1111-111111111111";
/// SSISDB user of the logging login (reference §5.3 step 4).
pub const LOGGING_USER_NAME: &str = "##MS_SSISLogDBWorkerAgentUser##";

/// Error 15581 (pitfall 10).
pub const MASTER_KEY_NOT_OPEN: u32 = 15581;

/// How the world looks after the manual SQL setup the reference assumes (§6 steps 1-4, §9.2).
#[derive(Clone, Debug)]
pub struct WorldSetup {
    pub availability_group_name: String,
    pub database_name: String,
    /// `@@SERVERNAME` of every replica; the first one is the original primary.
    pub replicas: Vec<String>,
    pub listener_name: String,
    pub listener_port: u16,
    pub availability_group_exists: bool,
    pub listener_exists: bool,
    pub database_in_group: bool,
    /// `catalog.enable_scaleout` already ran on the original primary (creates the logging login
    /// there only, with a password nobody knows).
    pub scale_out_enabled: bool,
    /// "Enable Always On Support" already ran: every replica registered.
    pub always_on_support_enabled: bool,
    /// The SSISDB database master key password chosen when the catalog was created.
    pub catalog_password: SecretString,
    /// Sysadmin login the operator connects with (present on every replica).
    pub admin_username: String,
    pub admin_password: SecretString,
}

impl WorldSetup {
    /// The usual starting point for `target`: AG, SSISDB in the AG and listener present, catalog
    /// with a DMK, Scale Out not enabled, Always On support not enabled.
    pub fn from_target(target: &CatalogTarget, catalog_password: SecretString) -> Self {
        Self {
            availability_group_name: target.availability_group_name.clone(),
            database_name: target.database_name.clone(),
            replicas: target.replicas.iter().map(|r| r.name.clone()).collect(),
            listener_name: target.listener_name.clone(),
            listener_port: target.listener_port,
            availability_group_exists: true,
            listener_exists: true,
            database_in_group: true,
            scale_out_enabled: false,
            always_on_support_enabled: false,
            catalog_password,
            admin_username: target.admin_username.clone(),
            admin_password: target.admin_password.clone(),
        }
    }
}

/// Role of a replica in the availability group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Primary,
    Secondary,
}

/// A server login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLogin {
    pub name: String,
    /// `0x...`, upper-case hex.
    pub sid: String,
    pub windows: bool,
    /// Salted hash (SQL logins only).
    pub password_hash: Option<String>,
}

/// One SQL Server instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimReplica {
    pub name: String,
    pub role: Role,
    pub reachable: bool,
    pub sql_auth_enabled: bool,
    pub synchronization_health: String,
    /// Logins by lower-cased name (SQL Server's default collation is case-insensitive).
    pub logins: BTreeMap<String, SimLogin>,
    /// `sp_control_dbmasterkey_password` credentials: database name → password hash.
    pub stored_master_key_passwords: BTreeMap<String, String>,
    /// This server's service master key encrypts the SSISDB DMK.
    pub service_key_encrypts_catalog_key: bool,
}

/// A database user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimUser {
    pub name: String,
    pub sid: String,
    pub roles: BTreeSet<String>,
}

/// One `catalog.worker_agents` row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimWorker {
    pub is_enabled: bool,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub machine_name: String,
    pub tags: Option<String>,
    pub user_account: String,
    pub last_online_time: Option<String>,
}

/// The SSISDB catalog (one logical copy: it moves with the availability group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimSsisdb {
    /// Replica the catalog was created on (the only place it is reachable when not in the AG).
    pub home: String,
    pub master_key_password_hash: String,
    pub master_properties: BTreeMap<String, String>,
    /// Hash of the password inside `CLUSTER_LOGDB_CONNECTIONSTRING` (filtered out of the view).
    pub logdb_password_hash: Option<String>,
    /// Workers by upper-case id.
    pub worker_agents: BTreeMap<String, SimWorker>,
    /// `internal.alwayson_support_state`: server name → state.
    pub always_on_replicas: BTreeMap<String, u8>,
    /// Users by lower-cased name.
    pub users: BTreeMap<String, SimUser>,
}

/// Listener as SQL Server knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimListener {
    pub name: String,
    pub port: Option<u16>,
    pub static_ips: Vec<(String, String)>,
}

/// Outcome of one [`SimulatedCatalog::ingest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Machine names of masters whose heartbeat SQL accepted.
    pub accepted_masters: Vec<String>,
    /// (machine name, why) of masters whose heartbeat did not reach SSISDB.
    pub rejected_masters: Vec<(String, String)>,
    /// Agent ids of worker heartbeats written.
    pub accepted_workers: Vec<String>,
    /// (agent id, why).
    pub rejected_workers: Vec<(String, String)>,
}

/// The SQL world of one availability group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlWorld {
    pub availability_group_name: String,
    pub database_name: String,
    pub availability_group_exists: bool,
    pub database_in_group: bool,
    pub listener: Option<SimListener>,
    pub replicas: Vec<SimReplica>,
    pub ssisdb: Option<SimSsisdb>,
    pub admin_username: String,
    pub admin_password_hash: String,
    /// Connections that fail before doing anything (disconnects mid-sequence).
    pub fail_next: u32,
    /// Statements executed (reached SQL Server), by action kind.
    pub executed: BTreeMap<String, u64>,
    pub last_ingest: IngestReport,
    /// Seed of the deterministic generator for SIDs and generated passwords.
    pub seed: u64,
}

fn hash_password(salt: &str, password: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn key(name: &str) -> String {
    name.to_lowercase()
}

fn sql_error(replica: &str, number: u32, message: impl Into<String>) -> CatalogError {
    CatalogError::Sql { replica: replica.to_owned(), number, message: message.into() }
}

/// Canonical `0x...` upper-case form of a hex SID, or `None` when it is not one (what
/// `CONVERT(varbinary(85), @P1, 1)` accepts).
pub fn canonical_sid(sid: &str) -> Option<String> {
    let hex = sid.strip_prefix("0x").or_else(|| sid.strip_prefix("0X"))?;
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 170 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("0x{}", hex.to_ascii_uppercase()))
}

/// Upper-case GUID, or `None` when `CONVERT(uniqueidentifier, ...)` would fail.
pub fn canonical_guid(id: &str) -> Option<String> {
    let id = id.trim();
    let id = id.strip_prefix('{').and_then(|i| i.strip_suffix('}')).unwrap_or(id);
    let ok = id.len() == 36
        && id.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    ok.then(|| id.to_ascii_uppercase())
}

/// `SqlServerName` designates the listener: `<listener>,<port>` (reference §6 step 5), the host
/// part short or fully qualified (`agl-ssis.corp.local,1433`), case-insensitive.
fn names_listener(listener: &SimListener, sql_server_name: &str) -> bool {
    let Some((host, port)) = sql_server_name.rsplit_once(',') else { return false };
    let short = host.trim().split('.').next().unwrap_or_default();
    short.eq_ignore_ascii_case(&listener.name) && port.trim().parse::<u16>().ok() == Some(listener.port.unwrap_or(1433))
}

impl SqlWorld {
    /// A fresh world as described by `setup` (reference §6 steps 1-4, §9.2).
    pub fn new(setup: &WorldSetup) -> Self {
        let replicas = setup
            .replicas
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let admin = SimLogin {
                    name: setup.admin_username.clone(),
                    sid: format!("0x{:032X}", 0xA000 + i as u128),
                    windows: setup.admin_username.contains('\\'),
                    password_hash: None,
                };
                SimReplica {
                    name: name.clone(),
                    role: if i == 0 { Role::Primary } else { Role::Secondary },
                    reachable: true,
                    sql_auth_enabled: true,
                    synchronization_health: "HEALTHY".into(),
                    logins: BTreeMap::from([(key(&admin.name), admin)]),
                    stored_master_key_passwords: BTreeMap::new(),
                    // The catalog was created on the original primary: only its SMK holds the DMK.
                    service_key_encrypts_catalog_key: i == 0,
                }
            })
            .collect();
        let home = setup.replicas.first().cloned().unwrap_or_default();
        let always_on_replicas = if setup.always_on_support_enabled {
            setup.replicas.iter().enumerate().map(|(i, r)| (r.clone(), if i == 0 { 1 } else { 2 })).collect()
        } else {
            BTreeMap::new()
        };
        let mut world = SqlWorld {
            availability_group_name: setup.availability_group_name.clone(),
            database_name: setup.database_name.clone(),
            availability_group_exists: setup.availability_group_exists,
            database_in_group: setup.availability_group_exists && setup.database_in_group,
            listener: (setup.availability_group_exists && setup.listener_exists).then(|| SimListener {
                name: setup.listener_name.clone(),
                port: Some(setup.listener_port),
                static_ips: vec![],
            }),
            replicas,
            ssisdb: Some(SimSsisdb {
                home: home.clone(),
                master_key_password_hash: hash_password("dmk", setup.catalog_password.expose()),
                master_properties: BTreeMap::from([("IS_SCALEOUT_ENABLED".to_string(), String::new())]),
                logdb_password_hash: None,
                worker_agents: BTreeMap::new(),
                always_on_replicas,
                users: BTreeMap::new(),
            }),
            admin_username: setup.admin_username.clone(),
            admin_password_hash: hash_password("admin", setup.admin_password.expose()),
            fail_next: 0,
            executed: BTreeMap::new(),
            last_ingest: IngestReport::default(),
            seed: 0x5EED,
        };
        if setup.scale_out_enabled {
            world.enable_scaleout(&home);
        }
        world
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic, good enough for simulated SIDs and passwords.
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn replica_index(&self, name: &str) -> Option<usize> {
        self.replicas.iter().position(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// The reachable primary, if the group exists.
    pub fn primary(&self) -> Option<&SimReplica> {
        if !self.availability_group_exists {
            return None;
        }
        self.replicas.iter().find(|r| r.role == Role::Primary && r.reachable)
    }

    /// The catalog database is usable on this replica: in the AG it follows the primary, outside
    /// it stays where it was created.
    fn catalog_accessible(&self, replica: &SimReplica) -> bool {
        match &self.ssisdb {
            None => false,
            Some(_) if self.database_in_group => self.availability_group_exists && replica.role == Role::Primary,
            Some(db) => db.home.eq_ignore_ascii_case(&replica.name),
        }
    }

    /// SQL Server can open the DMK on this replica: its SMK encrypts it, or a stored credential
    /// holds the right password (SQL Server tries `sys.master_key_passwords` itself).
    fn master_key_opens(&self, replica: &SimReplica) -> bool {
        let Some(db) = &self.ssisdb else { return false };
        replica.service_key_encrypts_catalog_key
            || replica.stored_master_key_passwords.get(&key(&self.database_name)) == Some(&db.master_key_password_hash)
    }

    /// Reference §5.3: what `catalog.enable_scaleout` does on `replica`.
    fn enable_scaleout(&mut self, replica: &str) {
        let random = self.next_random();
        let password = format!("{random:016x}>_!@#$%&=?<*()^-;.");
        let sid = format!("0x{:016X}{:016X}", self.next_random(), self.next_random());
        let idx = self.replica_index(replica).expect("replica exists");
        let login = SimLogin {
            name: LOGGING_LOGIN_NAME.into(),
            sid: sid.clone(),
            windows: false,
            password_hash: Some(hash_password(&sid, &password)),
        };
        self.replicas[idx].logins.insert(key(LOGGING_LOGIN_NAME), login);
        let name = self.replicas[idx].name.clone();
        if let Some(db) = &mut self.ssisdb {
            db.master_properties.insert("CLUSTER_LOGDB_SERVER".into(), name);
            db.logdb_password_hash = Some(hash_password("logdb", &password));
            db.users.insert(
                key(LOGGING_USER_NAME),
                SimUser {
                    name: LOGGING_USER_NAME.into(),
                    sid,
                    roles: BTreeSet::from(["ssis_cluster_worker".to_string()]),
                },
            );
            db.master_properties.insert("IS_SCALEOUT_ENABLED".into(), "TRUE".into());
        }
    }

    /// Open a connection: reachability, injected failures, admin credentials (error 18456).
    fn connect(&mut self, replica: &str, target: &CatalogTarget) -> Result<usize, CatalogError> {
        let connect_error =
            |message: &str| CatalogError::Connect { replica: replica.to_owned(), message: message.to_owned() };
        let idx = self.replica_index(replica).ok_or_else(|| connect_error("no such server"))?;
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(connect_error("connection reset by peer (simulated disconnect)"));
        }
        if !self.replicas[idx].reachable {
            return Err(connect_error("TCP connect timed out (simulated: replica unreachable)"));
        }
        if !target.admin_username.eq_ignore_ascii_case(&self.admin_username)
            || hash_password("admin", target.admin_password.expose()) != self.admin_password_hash
        {
            return Err(connect_error(&format!("Login failed for user '{}'. (18456)", target.admin_username)));
        }
        Ok(idx)
    }

    fn replica_rows(&self, idx: usize, target: &CatalogTarget) -> ReplicaRows {
        let r = &self.replicas[idx];
        let logging = r.logins.get(&key(LOGGING_LOGIN_NAME)).map(|l| {
            let matches = l
                .password_hash
                .as_ref()
                .map(|h| i32::from(*h == hash_password(&l.sid, target.logging_password.expose())));
            (Some(l.sid.clone()), matches)
        });
        let db_here = self.ssisdb.is_some() && (self.database_in_group || self.catalog_accessible(r));
        ReplicaRows {
            local_state: self.availability_group_exists.then(|| {
                let role = match r.role {
                    Role::Primary => "PRIMARY",
                    Role::Secondary => "SECONDARY",
                };
                (Some(role.to_owned()), Some(r.synchronization_health.clone()))
            }),
            database_in_group: self.availability_group_exists && self.database_in_group,
            listener: self.listener.as_ref().map(|l| (l.name.clone(), l.port.map(i32::from))),
            integrated_security_only: Some(i32::from(!r.sql_auth_enabled)),
            logging_login: logging,
            master_key_passwords: i32::from(r.stored_master_key_passwords.contains_key(&key(&self.database_name))),
            windows_logins: r.logins.values().filter(|l| l.windows).map(|l| l.name.clone()).collect(),
            master_key_encrypted_by_server: db_here.then_some(r.service_key_encrypts_catalog_key),
        }
    }

    fn catalog_rows(&self) -> CatalogRows {
        let Some(db) = &self.ssisdb else { return CatalogRows::default() };
        CatalogRows {
            master_properties: db.master_properties.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect(),
            worker_agents: db
                .worker_agents
                .iter()
                .map(|(id, w)| WorkerAgentRaw {
                    worker_agent_id: Some(id.clone()),
                    is_enabled: Some(w.is_enabled),
                    display_name: w.display_name.clone(),
                    description: w.description.clone(),
                    machine_name: Some(w.machine_name.clone()),
                    tags: w.tags.clone(),
                    last_online_time: w.last_online_time.clone(),
                })
                .collect(),
            always_on_replicas: db.always_on_replicas.keys().cloned().collect(),
            ssis_admin_members: db
                .users
                .values()
                .filter(|u| u.roles.contains("ssis_admin") && u.name.contains('\\'))
                .map(|u| u.name.clone())
                .collect(),
        }
    }

    fn observe(&mut self, target: &CatalogTarget) -> CatalogObservation {
        let mut replicas = Vec::new();
        for spec in &target.replicas {
            match self.connect(&spec.name, target) {
                Ok(idx) => {
                    let rows = self.replica_rows(idx, target);
                    replicas
                        .push((replica_observation(&spec.name, &rows, &target.master_service_accounts), Some(rows)));
                }
                Err(e) => replicas.push((unreachable_replica(&spec.name, e.to_string()), None)),
            }
        }
        let primary = replicas.iter().position(|(o, _)| o.reachable && o.role == "PRIMARY");
        let ssisdb = primary.and_then(|i| {
            let idx = self.replica_index(&target.replicas[i].name)?;
            let replica = &self.replicas[idx];
            if !self.catalog_accessible(replica) {
                return None;
            }
            let rows = self.catalog_rows();
            Some(ssisdb_observation(replica.service_key_encrypts_catalog_key, &rows, &target.master_service_accounts))
        });
        assemble_observation(replicas, ssisdb)
    }

    /// Catalog procedure preconditions on replica `idx`: database usable (976/4060), DMK opens
    /// (15581, pitfall 10).
    fn catalog_procedure(&self, idx: usize) -> Result<(), CatalogError> {
        let r = &self.replicas[idx];
        self.catalog_database(idx)?;
        if !self.master_key_opens(r) {
            return Err(sql_error(
                &r.name,
                MASTER_KEY_NOT_OPEN,
                "Please create a master key in the database or open the master key in the session before performing this operation.",
            ));
        }
        Ok(())
    }

    fn catalog_database(&self, idx: usize) -> Result<(), CatalogError> {
        let r = &self.replicas[idx];
        if self.ssisdb.is_none() {
            return Err(sql_error(
                &r.name,
                4060,
                format!("Cannot open database \"{}\" requested by the login.", self.database_name),
            ));
        }
        if !self.catalog_accessible(r) {
            return Err(sql_error(
                &r.name,
                976,
                format!(
                    "The target database, '{}', is participating in an availability group and is currently not accessible for queries.",
                    self.database_name
                ),
            ));
        }
        Ok(())
    }

    fn worker_id(replica: &str, id: &str) -> Result<String, CatalogError> {
        canonical_guid(id).ok_or_else(|| {
            sql_error(replica, 8169, "Conversion failed when converting from a character string to uniqueidentifier.")
        })
    }

    fn apply(
        &mut self,
        idx: usize,
        action: &SqlAction,
        resolve: &(dyn Fn(&SecretValue) -> SecretString + Sync),
    ) -> Result<(), CatalogError> {
        let name = self.replicas[idx].name.clone();
        let db_key = key(&self.database_name);
        match action {
            SqlAction::CreateListener { name: listener, port, static_ips, .. } => {
                if !self.availability_group_exists {
                    return Err(sql_error(
                        &name,
                        15151,
                        "Cannot find the availability group, because it does not exist or you do not have permission.",
                    ));
                }
                if self.replicas[idx].role != Role::Primary {
                    return Err(sql_error(
                        &name,
                        41140,
                        "The availability group listener can only be created on the primary replica.",
                    ));
                }
                if self.listener.is_some() {
                    return Err(sql_error(&name, 19471, "The availability group already has a listener."));
                }
                self.listener =
                    Some(SimListener { name: listener.clone(), port: Some(*port), static_ips: static_ips.clone() });
            }
            SqlAction::EnableScaleOut { .. } => {
                self.catalog_procedure(idx)?;
                let enabled = self.ssisdb.as_ref().and_then(|d| d.master_properties.get("IS_SCALEOUT_ENABLED"));
                if enabled.map(String::as_str) != Some("TRUE") {
                    self.enable_scaleout(&name);
                }
            }
            SqlAction::EncryptMasterKeyByServiceKey { password, .. } => {
                self.catalog_database(idx)?;
                let password = resolve(password);
                let dmk = self.ssisdb.as_ref().map(|d| d.master_key_password_hash.clone()).unwrap_or_default();
                if password.expose().is_empty() {
                    if !self.master_key_opens(&self.replicas[idx]) {
                        return Err(sql_error(
                            &name,
                            MASTER_KEY_NOT_OPEN,
                            "Please create a master key in the database or open the master key in the session before performing this operation.",
                        ));
                    }
                } else if hash_password("dmk", password.expose()) != dmk {
                    return Err(sql_error(&name, 15313, "The key is not encrypted using the specified decryptor."));
                }
                self.replicas[idx].service_key_encrypts_catalog_key = true;
            }
            SqlAction::StoreMasterKeyPassword { password, .. } => {
                let db_here =
                    self.ssisdb.is_some() && (self.database_in_group || self.catalog_accessible(&self.replicas[idx]));
                if !db_here {
                    return Err(sql_error(
                        &name,
                        15010,
                        format!("The database '{}' does not exist.", self.database_name),
                    ));
                }
                let hash = hash_password("dmk", resolve(password).expose());
                self.replicas[idx].stored_master_key_passwords.entry(db_key).or_insert(hash);
            }
            SqlAction::SetLoggingLoginPassword { password, .. } => {
                let password = resolve(password);
                let login = self.replicas[idx].logins.get_mut(&key(LOGGING_LOGIN_NAME)).ok_or_else(|| {
                    sql_error(&name, 15151, format!("Cannot alter the login '{LOGGING_LOGIN_NAME}', because it does not exist or you do not have permission."))
                })?;
                login.password_hash = Some(hash_password(&login.sid, password.expose()));
            }
            SqlAction::CreateLoggingLoginWithSid { sid, password, drop_existing, .. } => {
                let sid = canonical_sid(sid)
                    .ok_or_else(|| sql_error(&name, 8114, "Error converting data type nvarchar to varbinary."))?;
                let password = resolve(password);
                let logins = &mut self.replicas[idx].logins;
                if *drop_existing {
                    logins.remove(&key(LOGGING_LOGIN_NAME));
                }
                if logins.contains_key(&key(LOGGING_LOGIN_NAME)) {
                    return Err(sql_error(
                        &name,
                        15025,
                        format!("The server principal '{LOGGING_LOGIN_NAME}' already exists."),
                    ));
                }
                if logins.values().any(|l| l.sid == sid) {
                    return Err(sql_error(&name, 15433, "Supplied parameter sid is in use."));
                }
                let hash = hash_password(&sid, password.expose());
                logins.insert(
                    key(LOGGING_LOGIN_NAME),
                    SimLogin { name: LOGGING_LOGIN_NAME.into(), sid, windows: false, password_hash: Some(hash) },
                );
            }
            SqlAction::UpdateLogDbInfo { server_name, password, .. } => {
                self.catalog_procedure(idx)?;
                let hash = hash_password("logdb", resolve(password).expose());
                if let Some(db) = &mut self.ssisdb {
                    db.master_properties.insert("CLUSTER_LOGDB_SERVER".into(), server_name.clone());
                    db.logdb_password_hash = Some(hash);
                }
            }
            SqlAction::UpdateMasterAddress { address, .. } => {
                self.catalog_procedure(idx)?;
                if address.is_empty() {
                    return Err(sql_error(&name, 27100, "The argument 'MasterAddress' cannot be null or empty."));
                }
                if let Some(db) = &mut self.ssisdb {
                    db.master_properties.insert("MASTER_ADDRESS".into(), address.clone());
                }
            }
            SqlAction::CreateWindowsLogin { account, .. } => {
                if account.chars().count() > 128 {
                    return Err(sql_error(&name, 50000, "the account name is longer than 128 characters"));
                }
                // Domain SIDs are the same on every replica (reference §5.3 [INFER]).
                let sid = format!("0x{}", &hash_password("domain", &key(account))[..56].to_ascii_uppercase());
                self.replicas[idx].logins.entry(key(account)).or_insert(SimLogin {
                    name: account.clone(),
                    sid,
                    windows: true,
                    password_hash: None,
                });
            }
            SqlAction::GrantSsisAdmin { account, .. } => {
                if account.chars().count() > 128 {
                    return Err(sql_error(&name, 50000, "the account name is longer than 128 characters"));
                }
                self.catalog_database(idx)?;
                let login = self.replicas[idx].logins.get(&key(account)).cloned();
                let db = self.ssisdb.as_mut().expect("catalog checked");
                let user = match db.users.get_mut(&key(account)) {
                    Some(user) => user,
                    None => {
                        let login = login.ok_or_else(|| {
                            sql_error(
                                &name,
                                15007,
                                format!("'{account}' is not a valid login or you do not have permission."),
                            )
                        })?;
                        db.users.entry(key(account)).or_insert(SimUser {
                            name: account.clone(),
                            sid: login.sid,
                            roles: BTreeSet::new(),
                        })
                    }
                };
                user.roles.insert("ssis_admin".into());
            }
            SqlAction::RegisterAlwaysOnReplica { server_name, .. } => {
                self.catalog_procedure(idx)?;
                if server_name.is_empty() {
                    return Err(sql_error(&name, 27138, "The server name or state cannot be NULL."));
                }
                let state = if server_name.eq_ignore_ascii_case(&name) { 1 } else { 2 };
                let db = self.ssisdb.as_mut().expect("catalog checked");
                db.always_on_replicas.entry(server_name.clone()).or_insert(state);
            }
            SqlAction::EnableWorkerAgent { worker_agent_id, .. }
            | SqlAction::DisableWorkerAgent { worker_agent_id, .. } => {
                self.catalog_procedure(idx)?;
                let id = Self::worker_id(&name, worker_agent_id)?;
                let db = self.ssisdb.as_mut().expect("catalog checked");
                let worker = db.worker_agents.get_mut(&id).ok_or_else(|| {
                    sql_error(&name, 27243, format!("The worker agent with ID '{id}' does not exist."))
                })?;
                worker.is_enabled = matches!(action, SqlAction::EnableWorkerAgent { .. });
            }
            SqlAction::SetWorkerAgentProperty { worker_agent_id, property, value, .. } => {
                self.catalog_procedure(idx)?;
                let id = Self::worker_id(&name, worker_agent_id)?;
                let db = self.ssisdb.as_mut().expect("catalog checked");
                let worker = db.worker_agents.get_mut(&id).ok_or_else(|| {
                    sql_error(&name, 27243, format!("The worker agent with ID '{id}' does not exist."))
                })?;
                let slot = match property.to_ascii_lowercase().as_str() {
                    "displayname" => &mut worker.display_name,
                    "description" => &mut worker.description,
                    "tags" => &mut worker.tags,
                    _ => {
                        return Err(sql_error(
                            &name,
                            27101,
                            "The property name is not valid: use DisplayName, Description or Tags.",
                        ));
                    }
                };
                *slot = Some(value.clone());
            }
        }
        Ok(())
    }

    /// Reference §2 / §5.4 / pitfall 8: which heartbeats reach SSISDB.
    fn ingest(&mut self, traffic: &ScaleOutTraffic, now: jiff::Timestamp) -> IngestReport {
        let mut report = IngestReport::default();
        let now = now.to_string();
        let primary = self.primary().cloned();
        for master in &traffic.masters {
            let verdict = (|| {
                let primary = primary.as_ref().ok_or("no reachable primary replica for the catalog database")?;
                let via_listener = self.listener.as_ref().is_some_and(|l| names_listener(l, &master.sql_server_name));
                if !via_listener && !master.sql_server_name.eq_ignore_ascii_case(&primary.name) {
                    return Err("SqlServerName is neither the listener nor the current primary");
                }
                if !primary.logins.get(&key(&master.service_account)).is_some_and(|l| l.windows) {
                    return Err("the master service account has no login on the current primary (pitfall 8)");
                }
                if !self.catalog_accessible(primary) {
                    return Err("the catalog database is not accessible on the primary");
                }
                Ok(())
            })();
            match verdict {
                Ok(()) => {
                    let db = self.ssisdb.as_mut().expect("catalog checked");
                    let props = &mut db.master_properties;
                    props.insert("MACHINE_NAME".into(), master.machine_name.clone());
                    props.insert("SSLCERT_THUMBPRINT".into(), master.ssl_cert_thumbprint.clone());
                    props.insert("MASTER_SERVICE_PORT".into(), master.port.to_string());
                    props.insert("LAST_ONLINE_TIME".into(), now.clone());
                    report.accepted_masters.push(master.machine_name.clone());
                }
                Err(why) => report.rejected_masters.push((master.machine_name.clone(), why.to_owned())),
            }
        }
        for worker in &traffic.workers {
            let relayed = report.accepted_masters.iter().any(|m| m.eq_ignore_ascii_case(&worker.via_master));
            let verdict = if !relayed {
                Err("not relayed by a master whose heartbeat SQL accepted".to_string())
            } else {
                match canonical_guid(&worker.agent_id) {
                    None => Err("AgentId is not a GUID (8169)".to_string()),
                    Some(id) if id == RESERVED_WORKER_AGENT_ID => Err("reserved AgentId rejected (27101)".to_string()),
                    Some(id) => Ok(id),
                }
            };
            match verdict {
                Ok(id) => {
                    let db = self.ssisdb.as_mut().expect("a master was accepted");
                    // Reference §5.4: an unknown AgentId is inserted disabled (pitfall 14).
                    let row = db.worker_agents.entry(id.clone()).or_insert_with(|| SimWorker {
                        is_enabled: false,
                        display_name: None,
                        description: None,
                        machine_name: worker.machine_name.clone(),
                        tags: None,
                        user_account: worker.user_account.clone(),
                        last_online_time: None,
                    });
                    row.machine_name = worker.machine_name.clone();
                    row.user_account = worker.user_account.clone();
                    row.last_online_time = Some(now.clone());
                    report.accepted_workers.push(id);
                }
                Err(why) => report.rejected_workers.push((worker.agent_id.clone(), why)),
            }
        }
        self.last_ingest = report.clone();
        report
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    worlds: BTreeMap<String, SqlWorld>,
}

/// The simulated catalog: clones share the same worlds.
#[derive(Clone, Debug, Default)]
pub struct SimulatedCatalog {
    state: Arc<Mutex<State>>,
    autosave: Option<PathBuf>,
    /// The same connection pool the real catalog keeps (one idle connection per replica and
    /// database), so a benchmark counts the logins a real operator would make.
    pool: Arc<super::pool::Pool<(String, String, &'static str), ()>>,
}

impl SimulatedCatalog {
    /// An empty catalog: add worlds with [`SimulatedCatalog::add_world`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A catalog holding one fresh world for `target` (see [`WorldSetup::from_target`]).
    pub fn for_target(target: &CatalogTarget, catalog_password: SecretString) -> Self {
        let catalog = Self::new();
        catalog.add_world(&target.key, &WorldSetup::from_target(target, catalog_password));
        catalog
    }

    /// Add (or replace) the world of availability group `key` (`namespace/name`).
    pub fn add_world(&self, key: &str, setup: &WorldSetup) {
        self.lock().worlds.insert(key.to_owned(), SqlWorld::new(setup));
        self.autosave_now();
    }

    /// Add the fresh world of `target` unless one exists (dev mode: the first observation of a
    /// new SsisdbAvailabilityGroup finds the SQL world the manual setup left). True when added.
    pub fn ensure_world(&self, target: &CatalogTarget, catalog_password: SecretString) -> bool {
        let added = {
            let mut state = self.lock();
            if state.worlds.contains_key(&target.key) {
                false
            } else {
                let setup = WorldSetup::from_target(target, catalog_password);
                state.worlds.insert(target.key.clone(), SqlWorld::new(&setup));
                true
            }
        };
        if added {
            self.autosave_now();
        }
        added
    }

    pub fn has_world(&self, key: &str) -> bool {
        self.lock().worlds.contains_key(key)
    }

    /// Load a catalog saved with [`SimulatedCatalog::save`].
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CatalogError::Other(format!("reading {}: {e}", path.display())))?;
        let state: State =
            serde_json::from_str(&text).map_err(|e| CatalogError::Other(format!("parsing {}: {e}", path.display())))?;
        Ok(Self { state: Arc::new(Mutex::new(state)), autosave: None, pool: Default::default() })
    }

    /// Load `path` when it exists, else start empty; every later change is saved there.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let mut catalog = if path.exists() { Self::load(path)? } else { Self::new() };
        catalog.autosave = Some(path.to_owned());
        Ok(catalog)
    }

    /// Save all worlds as JSON: temp file in the same directory, flush, rename.
    pub fn save(&self, path: &Path) -> Result<(), CatalogError> {
        let json = serde_json::to_vec_pretty(&*self.lock()).map_err(|e| CatalogError::Other(e.to_string()))?;
        let io = |e: std::io::Error| CatalogError::Other(format!("writing {}: {e}", path.display()));
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn autosave_now(&self) {
        if let Some(path) = &self.autosave
            && let Err(e) = self.save(path)
        {
            tracing::warn!(error = %e, "saving the simulated SQL world failed");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent-enough model for a simulation.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `f` on the world of `key` (then autosave).
    pub fn with_world<R>(&self, key: &str, f: impl FnOnce(&mut SqlWorld) -> R) -> Result<R, CatalogError> {
        let result = {
            let mut state = self.lock();
            let world = state
                .worlds
                .get_mut(key)
                .ok_or_else(|| CatalogError::Other(format!("no simulated SQL world for {key}")))?;
            f(world)
        };
        self.autosave_now();
        Ok(result)
    }

    /// A snapshot of the world of `key`.
    pub fn world(&self, key: &str) -> Option<SqlWorld> {
        self.lock().worlds.get(key).cloned()
    }

    /// Planned or forced failover: `replica` becomes primary, the others secondary.
    pub fn failover(&self, key: &str, replica: &str) -> Result<(), CatalogError> {
        self.with_world(key, |w| {
            let idx = w.replica_index(replica).ok_or_else(|| CatalogError::Other(format!("no replica {replica}")))?;
            for (i, r) in w.replicas.iter_mut().enumerate() {
                r.role = if i == idx { Role::Primary } else { Role::Secondary };
            }
            Ok(())
        })?
    }

    /// Make `replica` unreachable (every connection to it fails).
    pub fn disconnect(&self, key: &str, replica: &str) -> Result<(), CatalogError> {
        self.set_reachable(key, replica, false)
    }

    /// Make `replica` reachable again.
    pub fn reconnect(&self, key: &str, replica: &str) -> Result<(), CatalogError> {
        self.set_reachable(key, replica, true)
    }

    fn set_reachable(&self, key: &str, replica: &str, reachable: bool) -> Result<(), CatalogError> {
        self.with_world(key, |w| {
            let idx = w.replica_index(replica).ok_or_else(|| CatalogError::Other(format!("no replica {replica}")))?;
            w.replicas[idx].reachable = reachable;
            Ok(())
        })?
    }

    /// The next `n` connections (observe: one per replica; execute: one per action) fail.
    pub fn fail_next(&self, key: &str, n: u32) -> Result<(), CatalogError> {
        self.with_world(key, |w| w.fail_next = n)
    }

    /// Statements executed per action kind (steady state must add none).
    pub fn executed(&self, key: &str) -> BTreeMap<String, u64> {
        self.world(key).map(|w| w.executed).unwrap_or_default()
    }

    /// Sum of [`SimulatedCatalog::executed`].
    pub fn total_executed(&self, key: &str) -> u64 {
        self.executed(key).values().sum()
    }

    /// Deliver what the simulated Scale Out network carried to every world: master heartbeats
    /// are accepted when `SqlServerName` is the listener (`name,port`) or the current primary and
    /// the service account has a login on the primary (pitfall 8); worker heartbeats only when
    /// relayed by an accepted master (unknown workers inserted disabled, pitfall 14).
    pub fn ingest(&self, traffic: &ScaleOutTraffic, now: jiff::Timestamp) -> BTreeMap<String, IngestReport> {
        let reports = {
            let mut state = self.lock();
            state.worlds.iter_mut().map(|(k, w)| (k.clone(), w.ingest(traffic, now))).collect()
        };
        self.autosave_now();
        reports
    }
}

impl SimulatedCatalog {
    /// Logins (new connections) a real operator would have made so far.
    pub fn logins(&self) -> u64 {
        self.pool.logins()
    }

    async fn connection(&self, target: &CatalogTarget, replica: &str, database: &'static str) {
        let key = (target.key.clone(), replica.to_string(), database);
        let connection = self.pool.checkout(&key, || async { Ok::<_, ()>(()) }).await;
        if let Ok(connection) = connection {
            self.pool.checkin(key, connection);
        }
    }
}

impl Catalog for SimulatedCatalog {
    async fn observe(&self, target: &CatalogTarget) -> Result<CatalogObservation, CatalogError> {
        let observation = self.with_world(&target.key, |w| w.observe(target))?;
        for replica in observation.replicas.iter().filter(|r| r.reachable) {
            self.connection(target, &replica.name, "master").await;
        }
        if let Some(primary) = &observation.primary {
            self.connection(target, primary, "catalog").await;
        }
        Ok(observation)
    }

    async fn execute(
        &self,
        target: &CatalogTarget,
        action: &SqlAction,
        resolve: &(dyn Fn(&SecretValue) -> SecretString + Sync),
    ) -> Result<(), CatalogError> {
        self.connection(target, action_replica(action), "master").await;
        self.with_world(&target.key, |w| {
            let idx = w.connect(action_replica(action), target)?;
            *w.executed.entry(action_kind(action).to_owned()).or_default() += 1;
            w.apply(idx, action, resolve)
        })?
    }
}
