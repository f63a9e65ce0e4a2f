//! Every SQL batch the operator can send, as compile-time constants.
//!
//! Rules (DESIGN.md "Every SQL batch is a compile-time constant"):
//! - user data travels only as parameters `@P1, @P2, ...` (tiberius binds them positionally);
//! - DDL that cannot take parameters (CREATE/ALTER LOGIN, OPEN MASTER KEY, ALTER AVAILABILITY
//!   GROUP ... ADD LISTENER, CREATE USER, ALTER ROLE) is composed *server-side* inside the constant
//!   batch: identifiers with `QUOTENAME` (NULL for > 128 characters, so every composed statement is
//!   checked for NULL and the batch `THROW`s instead of silently running nothing), string literals
//!   with `REPLACE(@p, N'''', N'''''')`, then `sys.sp_executesql`;
//! - stored procedures that take real parameters are called with them
//!   (`sp_control_dbmasterkey_password`, `catalog.update_logdb_info`, `catalog.enable_worker_agent`).
//!
//! The SSISDB database name comes from the spec: it never appears in a batch. Batches of
//! [`Scope::CatalogDatabase`] run on a connection whose *database* is the catalog database
//! (tiberius `Config::database`), so they reference `catalog.x` unqualified.
//!
//! Every action batch is idempotent (guarded by `IF NOT EXISTS` where the underlying statement is
//! not), so a retry after a dropped connection is safe.

use super::{CatalogTarget, SecretString, SecretValue, SqlAction};

/// Which database a batch runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Server-level objects: the connection's database is `master`.
    Server,
    /// SSISDB objects: the connection's database is [`CatalogTarget::database_name`].
    CatalogDatabase,
}

// ------------------------------------------------------------------------------------------------
// Observation queries (reference §10 state queries, §5.1 views, §12 pitfalls 8-10).
// ------------------------------------------------------------------------------------------------

/// Reference §10 "AG, replicas and their current role/health": the local replica's role and
/// synchronization health in the group `@P1`. No row = the group does not exist here.
pub const OBSERVE_LOCAL_REPLICA_STATE: &str = "\
SELECT rs.role_desc, rs.synchronization_health_desc
FROM sys.availability_groups AS ag
JOIN sys.dm_hadr_availability_replica_states AS rs ON rs.group_id = ag.group_id AND rs.is_local = 1
WHERE ag.name = @P1;";

/// Reference §10 "which AG holds SSISDB": a row when database `@P2` is in group `@P1`.
pub const OBSERVE_DATABASE_IN_GROUP: &str = "\
SELECT adc.database_name
FROM sys.availability_databases_cluster AS adc
JOIN sys.availability_groups AS ag ON ag.group_id = adc.group_id
WHERE ag.name = @P1 AND adc.database_name = @P2;";

/// Reference §10 "listener": DNS name and port (port NULL = created outside SQL) of group `@P1`.
pub const OBSERVE_LISTENER: &str = "\
SELECT l.dns_name, l.port
FROM sys.availability_group_listeners AS l
JOIN sys.availability_groups AS ag ON ag.group_id = l.group_id
WHERE ag.name = @P1;";

/// Pitfall 9 / reference §5.5: worker logging needs SQL authentication (mixed mode).
pub const OBSERVE_SQL_AUTH_MODE: &str = "\
SELECT CAST(SERVERPROPERTY('IsIntegratedSecurityOnly') AS int) AS integrated_security_only;";

/// Reference §6 steps 6.1/6.2, pitfall 9: SID of the logging login (hex `0x...`) and whether the
/// current password `@P1` matches (`PWDCOMPARE`). No row = the login does not exist here.
pub const OBSERVE_LOGGING_LOGIN: &str = "\
SELECT CONVERT(nvarchar(200), sl.sid, 1) AS sid_hex, PWDCOMPARE(@P1, sl.password_hash) AS password_matches
FROM sys.sql_logins AS sl
WHERE sl.name = N'##MS_SSISLogDBWorkerAgentLogin##';";

/// Pitfall 10: the DMK password of database `@P1` is stored as a credential on this server
/// (`sp_control_dbmasterkey_password`), matched through the database's family GUID.
pub const OBSERVE_MASTER_KEY_PASSWORD_STORED: &str = "\
SELECT COUNT(*) AS stored
FROM sys.master_key_passwords AS mkp
JOIN sys.credentials AS c ON c.credential_id = mkp.credential_id
JOIN sys.database_recovery_status AS drs ON drs.family_guid = mkp.family_guid
WHERE drs.database_id = DB_ID(@P1);";

/// Reference §5.3 [INFER], pitfall 8: Windows logins on this server (the master service
/// accounts are matched case-insensitively by the operator).
pub const OBSERVE_WINDOWS_LOGINS: &str = "\
SELECT sp.name
FROM sys.server_principals AS sp
WHERE sp.type IN ('U', 'G');";

/// Pitfall 10 / reference §9.3: `is_master_key_encrypted_by_server` of database `@P1` (run on
/// the primary).
pub const OBSERVE_MASTER_KEY_ENCRYPTED_BY_SERVER: &str = "\
SELECT d.is_master_key_encrypted_by_server
FROM sys.databases AS d
WHERE d.name = @P1;";

/// Reference §5.1 `catalog.master_properties` (catalog database).
pub const OBSERVE_MASTER_PROPERTIES: &str = "\
SELECT mp.property_name, CONVERT(nvarchar(max), mp.property_value) AS property_value
FROM catalog.master_properties AS mp;";

/// Reference §5.1 `catalog.worker_agents` (catalog database). The id is converted to its
/// upper-case string form and `LastOnlineTime` to ISO 8601 (style 127) server-side.
pub const OBSERVE_WORKER_AGENTS: &str = "\
SELECT CONVERT(nvarchar(36), wa.[WorkerAgentId]) AS worker_agent_id, wa.[IsEnabled], wa.[DisplayName],
       wa.[Description], wa.[MachineName], wa.[Tags],
       CONVERT(nvarchar(40), wa.[LastOnlineTime], 127) AS last_online_time
FROM catalog.worker_agents AS wa;";

/// Reference §9.3 `catalog.alwayson_replicas` (catalog database).
pub const OBSERVE_ALWAYSON_REPLICAS: &str = "\
SELECT ar.server_name
FROM catalog.alwayson_replicas AS ar;";

/// Reference §5.3 [INFER]: Windows users of the catalog database in role `ssis_admin`.
pub const OBSERVE_SSIS_ADMIN_MEMBERS: &str = "\
SELECT m.name
FROM sys.database_role_members AS rm
JOIN sys.database_principals AS r ON r.principal_id = rm.role_principal_id
JOIN sys.database_principals AS m ON m.principal_id = rm.member_principal_id
WHERE r.name = N'ssis_admin' AND m.type IN ('U', 'G');";

// ------------------------------------------------------------------------------------------------
// Action batches, one (or, for listeners with several IPs, a sequence) per SqlAction variant.
// ------------------------------------------------------------------------------------------------

/// Reference §10 "primary: listener": `ALTER AVAILABILITY GROUP [@P1] ADD LISTENER N'@P2'
/// (WITH IP ((N'@P4'[, N'@P5'])), PORT = @P3)`. An empty mask `@P5` is the IPv6 form.
pub const LISTENER_CREATE_WITH_STATIC_IP: &str = "\
DECLARE @ip nvarchar(max) = N'N''' + REPLACE(@P4, N'''', N'''''') + N'''';
IF @P5 <> N''
    SET @ip = @ip + N', N''' + REPLACE(@P5, N'''', N'''''') + N'''';
DECLARE @sql nvarchar(max) = N'ALTER AVAILABILITY GROUP ' + QUOTENAME(@P1) + N' ADD LISTENER N'''
    + REPLACE(@P2, N'''', N'''''') + N''' (WITH IP ((' + @ip + N')), PORT = ' + CONVERT(nvarchar(10), @P3) + N');';
IF @sql IS NULL
    THROW 50000, N'availability group name is not a valid identifier', 1;
EXEC sys.sp_executesql @sql;";

/// Reference §10: every further static IP of a listener (one per subnet):
/// `ALTER AVAILABILITY GROUP [@P1] MODIFY LISTENER N'@P2' (ADD IP (N'@P3'[, N'@P4']))`.
pub const LISTENER_ADD_STATIC_IP: &str = "\
DECLARE @ip nvarchar(max) = N'N''' + REPLACE(@P3, N'''', N'''''') + N'''';
IF @P4 <> N''
    SET @ip = @ip + N', N''' + REPLACE(@P4, N'''', N'''''') + N'''';
DECLARE @sql nvarchar(max) = N'ALTER AVAILABILITY GROUP ' + QUOTENAME(@P1) + N' MODIFY LISTENER N'''
    + REPLACE(@P2, N'''', N'''''') + N''' (ADD IP (' + @ip + N'));';
IF @sql IS NULL
    THROW 50000, N'availability group name is not a valid identifier', 1;
EXEC sys.sp_executesql @sql;";

/// Reference §10 (DHCP is not for production, used only when no static IP is given):
/// `ALTER AVAILABILITY GROUP [@P1] ADD LISTENER N'@P2' (WITH DHCP, PORT = @P3)`.
pub const LISTENER_CREATE_WITH_DHCP: &str = "\
DECLARE @sql nvarchar(max) = N'ALTER AVAILABILITY GROUP ' + QUOTENAME(@P1) + N' ADD LISTENER N'''
    + REPLACE(@P2, N'''', N'''''') + N''' (WITH DHCP, PORT = ' + CONVERT(nvarchar(10), @P3) + N');';
IF @sql IS NULL
    THROW 50000, N'availability group name is not a valid identifier', 1;
EXEC sys.sp_executesql @sql;";

/// Reference §5.3 / pitfall 8: `catalog.enable_scaleout` unless `IS_SCALEOUT_ENABLED` is TRUE.
pub const SCALEOUT_ENABLE: &str = "\
IF NOT EXISTS (SELECT 1 FROM catalog.master_properties
               WHERE property_name = N'IS_SCALEOUT_ENABLED' AND property_value = N'TRUE')
    EXEC catalog.enable_scaleout;";

/// Pitfall 10 / reference §9.3 (on the primary, catalog database): `OPEN MASTER KEY DECRYPTION BY
/// PASSWORD = N'@P1'; ALTER MASTER KEY ADD ENCRYPTION BY SERVICE MASTER KEY; CLOSE MASTER KEY`.
/// With an empty `@P1` the key is opened from the credential stored by
/// `sp_control_dbmasterkey_password` (SQL Server tries `sys.master_key_passwords` itself).
pub const MASTER_KEY_ADD_SERVICE_KEY_ENCRYPTION: &str = "\
DECLARE @sql nvarchar(max) = N'ALTER MASTER KEY ADD ENCRYPTION BY SERVICE MASTER KEY;';
IF @P1 <> N''
    SET @sql = N'OPEN MASTER KEY DECRYPTION BY PASSWORD = N''' + REPLACE(@P1, N'''', N'''''') + N'''; '
        + @sql + N' CLOSE MASTER KEY;';
EXEC sys.sp_executesql @sql;";

/// Pitfall 10 (every replica, master database): store the DMK password of database `@P1` as a
/// credential with `sys.sp_control_dbmasterkey_password @db_name, @password, @action = N'add'`,
/// unless one is stored already.
pub const MASTER_KEY_PASSWORD_STORE: &str = "\
IF NOT EXISTS (SELECT 1
               FROM sys.master_key_passwords AS mkp
               JOIN sys.database_recovery_status AS drs ON drs.family_guid = mkp.family_guid
               WHERE drs.database_id = DB_ID(@P1))
    EXEC sp_control_dbmasterkey_password @db_name = @P1, @password = @P2, @action = N'add';";

/// Reference §6 step 6.1 (primary): `ALTER LOGIN [##MS_SSISLogDBWorkerAgentLogin##] WITH
/// PASSWORD = N'@P1'`.
pub const LOGGING_LOGIN_SET_PASSWORD: &str = "\
DECLARE @sql nvarchar(max) = N'ALTER LOGIN [##MS_SSISLogDBWorkerAgentLogin##] WITH PASSWORD = N'''
    + REPLACE(@P1, N'''', N'''''') + N''';';
EXEC sys.sp_executesql @sql;";

/// Reference §6 step 6.2 (secondary): (re)create the logging login with the primary's SID
/// `@P1` (hex `0x...`, validated by `CONVERT(varbinary, ..., 1)` and re-rendered server-side) and
/// password `@P2`, `CHECK_POLICY = OFF` as `catalog.enable_scaleout` creates it (§5.3). `@P3` = 1
/// drops an existing login first (SID mismatch).
pub const LOGGING_LOGIN_CREATE_WITH_SID: &str = "\
DECLARE @sid varbinary(85) = CONVERT(varbinary(85), @P1, 1);
IF @sid IS NULL OR DATALENGTH(@sid) = 0
    THROW 50000, N'the logging login SID is empty', 1;
IF @P3 = 1 AND EXISTS (SELECT 1 FROM sys.server_principals WHERE name = N'##MS_SSISLogDBWorkerAgentLogin##')
    EXEC sys.sp_executesql N'DROP LOGIN [##MS_SSISLogDBWorkerAgentLogin##];';
DECLARE @sql nvarchar(max) = N'CREATE LOGIN [##MS_SSISLogDBWorkerAgentLogin##] WITH PASSWORD = N'''
    + REPLACE(@P2, N'''', N'''''') + N''', SID = ' + CONVERT(nvarchar(200), @sid, 1)
    + N', CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF;';
EXEC sys.sp_executesql @sql;";

/// Reference §6 step 6.3 (primary, catalog database): `catalog.update_logdb_info @server_name =
/// @P1, @connection_string = ...`. The connection string is composed server-side with every value
/// single-quoted (embedded quotes doubled, as `internal.enable_scaleout` does for the password,
/// §5.3), `Initial Catalog` = the connection's database.
pub const LOGDB_INFO_UPDATE: &str = "\
DECLARE @connection_string nvarchar(max) = N'Data Source=''' + REPLACE(@P1, N'''', N'''''')
    + N''';Initial Catalog=''' + REPLACE(DB_NAME(), N'''', N'''''')
    + N''';User Id=##MS_SSISLogDBWorkerAgentLogin##;Password=''' + REPLACE(@P2, N'''', N'''''') + N''';';
EXEC catalog.update_logdb_info @server_name = @P1, @connection_string = @connection_string;";

/// Reference §6 step 8 (primary, catalog database): `catalog.update_master_address`.
pub const MASTER_ADDRESS_UPDATE: &str = "\
EXEC catalog.update_master_address @MasterAddress = @P1;";

/// Reference §5.3 [INFER], pitfall 8 (every replica): `CREATE LOGIN [@P1] FROM WINDOWS` unless
/// the login exists.
pub const WINDOWS_LOGIN_CREATE: &str = "\
IF NOT EXISTS (SELECT 1 FROM sys.server_principals WHERE name = @P1)
BEGIN
    DECLARE @sql nvarchar(max) = N'CREATE LOGIN ' + QUOTENAME(@P1) + N' FROM WINDOWS;';
    IF @sql IS NULL
        THROW 50000, N'the account name is longer than 128 characters', 1;
    EXEC sys.sp_executesql @sql;
END";

/// Reference §5.3 [INFER] (primary, catalog database): `CREATE USER [@P1] FOR LOGIN [@P1]` unless
/// it exists, then `ALTER ROLE [ssis_admin] ADD MEMBER [@P1]` unless it is a member.
pub const SSIS_ADMIN_GRANT: &str = "\
DECLARE @user nvarchar(300) = QUOTENAME(@P1);
IF @user IS NULL
    THROW 50000, N'the account name is longer than 128 characters', 1;
IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = @P1)
BEGIN
    DECLARE @create nvarchar(max) = N'CREATE USER ' + @user + N' FOR LOGIN ' + @user + N';';
    EXEC sys.sp_executesql @create;
END;
IF NOT EXISTS (SELECT 1
               FROM sys.database_role_members AS rm
               JOIN sys.database_principals AS r ON r.principal_id = rm.role_principal_id
               JOIN sys.database_principals AS m ON m.principal_id = rm.member_principal_id
               WHERE r.name = N'ssis_admin' AND m.name = @P1)
BEGIN
    DECLARE @add nvarchar(max) = N'ALTER ROLE [ssis_admin] ADD MEMBER ' + @user + N';';
    EXEC sys.sp_executesql @add;
END";

/// Reference §9.3 (primary, catalog database): `internal.add_replica_info @server_name = @P1,
/// @state` unless registered (the procedure raises 27227 for a registered server). State 1 for
/// the server the batch runs on, 2 ("refresh on becoming primary", `refresh_replica_status`)
/// for the others [INFER].
pub const ALWAYSON_REPLICA_REGISTER: &str = "\
IF NOT EXISTS (SELECT 1 FROM catalog.alwayson_replicas WHERE server_name = @P1)
BEGIN
    DECLARE @state tinyint = CASE WHEN UPPER(@P1) = UPPER(@@SERVERNAME) THEN 1 ELSE 2 END;
    EXEC internal.add_replica_info @server_name = @P1, @state = @state;
END";

/// Reference §8 step 7 (catalog database): `catalog.enable_worker_agent @WorkerAgentId = @P1`.
pub const WORKER_AGENT_ENABLE: &str = "\
DECLARE @id uniqueidentifier = CONVERT(uniqueidentifier, @P1);
EXEC catalog.enable_worker_agent @WorkerAgentId = @id;";

/// Reference §5.4 / finalizer (catalog database): `catalog.disable_worker_agent`.
pub const WORKER_AGENT_DISABLE: &str = "\
DECLARE @id uniqueidentifier = CONVERT(uniqueidentifier, @P1);
EXEC catalog.disable_worker_agent @WorkerAgentId = @id;";

/// Reference §8 step 8 (catalog database): `catalog.set_worker_agent_property` (`DisplayName`,
/// `Description`, `Tags`).
pub const WORKER_AGENT_SET_PROPERTY: &str = "\
DECLARE @id uniqueidentifier = CONVERT(uniqueidentifier, @P1);
EXEC catalog.set_worker_agent_property @WorkerAgentId = @id, @PropertyName = @P2, @PropertyValue = @P3;";

/// Every batch, by name: the parse test and docs/sql.md enumerate this list.
pub const ALL_BATCHES: &[(&str, &str)] = &[
    ("OBSERVE_LOCAL_REPLICA_STATE", OBSERVE_LOCAL_REPLICA_STATE),
    ("OBSERVE_DATABASE_IN_GROUP", OBSERVE_DATABASE_IN_GROUP),
    ("OBSERVE_LISTENER", OBSERVE_LISTENER),
    ("OBSERVE_SQL_AUTH_MODE", OBSERVE_SQL_AUTH_MODE),
    ("OBSERVE_LOGGING_LOGIN", OBSERVE_LOGGING_LOGIN),
    ("OBSERVE_MASTER_KEY_PASSWORD_STORED", OBSERVE_MASTER_KEY_PASSWORD_STORED),
    ("OBSERVE_WINDOWS_LOGINS", OBSERVE_WINDOWS_LOGINS),
    ("OBSERVE_MASTER_KEY_ENCRYPTED_BY_SERVER", OBSERVE_MASTER_KEY_ENCRYPTED_BY_SERVER),
    ("OBSERVE_MASTER_PROPERTIES", OBSERVE_MASTER_PROPERTIES),
    ("OBSERVE_WORKER_AGENTS", OBSERVE_WORKER_AGENTS),
    ("OBSERVE_ALWAYSON_REPLICAS", OBSERVE_ALWAYSON_REPLICAS),
    ("OBSERVE_SSIS_ADMIN_MEMBERS", OBSERVE_SSIS_ADMIN_MEMBERS),
    ("LISTENER_CREATE_WITH_STATIC_IP", LISTENER_CREATE_WITH_STATIC_IP),
    ("LISTENER_ADD_STATIC_IP", LISTENER_ADD_STATIC_IP),
    ("LISTENER_CREATE_WITH_DHCP", LISTENER_CREATE_WITH_DHCP),
    ("SCALEOUT_ENABLE", SCALEOUT_ENABLE),
    ("MASTER_KEY_ADD_SERVICE_KEY_ENCRYPTION", MASTER_KEY_ADD_SERVICE_KEY_ENCRYPTION),
    ("MASTER_KEY_PASSWORD_STORE", MASTER_KEY_PASSWORD_STORE),
    ("LOGGING_LOGIN_SET_PASSWORD", LOGGING_LOGIN_SET_PASSWORD),
    ("LOGGING_LOGIN_CREATE_WITH_SID", LOGGING_LOGIN_CREATE_WITH_SID),
    ("LOGDB_INFO_UPDATE", LOGDB_INFO_UPDATE),
    ("MASTER_ADDRESS_UPDATE", MASTER_ADDRESS_UPDATE),
    ("WINDOWS_LOGIN_CREATE", WINDOWS_LOGIN_CREATE),
    ("SSIS_ADMIN_GRANT", SSIS_ADMIN_GRANT),
    ("ALWAYSON_REPLICA_REGISTER", ALWAYSON_REPLICA_REGISTER),
    ("WORKER_AGENT_ENABLE", WORKER_AGENT_ENABLE),
    ("WORKER_AGENT_DISABLE", WORKER_AGENT_DISABLE),
    ("WORKER_AGENT_SET_PROPERTY", WORKER_AGENT_SET_PROPERTY),
];

/// The name of the logging login `catalog.enable_scaleout` creates (reference §5.3).
pub const LOGGING_LOGIN_NAME: &str = "##MS_SSISLogDBWorkerAgentLogin##";

/// One parameter value. Secrets keep their redacting `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlParam {
    Text(String),
    Secret(SecretString),
    Int(i32),
    Bit(bool),
}

/// One batch to run: constant text, scope and positional parameters `@P1...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchCall {
    pub name: &'static str,
    pub sql: &'static str,
    pub scope: Scope,
    pub params: Vec<SqlParam>,
}

impl BatchCall {
    fn new(name: &'static str, sql: &'static str, scope: Scope, params: Vec<SqlParam>) -> Self {
        Self { name, sql, scope, params }
    }

    /// The secret values among the parameters (for redaction of error messages).
    pub fn secrets(&self) -> impl Iterator<Item = &SecretString> {
        self.params.iter().filter_map(|p| match p {
            SqlParam::Secret(s) => Some(s),
            _ => None,
        })
    }
}

fn text(value: &str) -> SqlParam {
    SqlParam::Text(value.to_owned())
}

/// The replica an action runs on.
pub fn action_replica(action: &SqlAction) -> &str {
    match action {
        SqlAction::CreateListener { replica, .. }
        | SqlAction::EnableScaleOut { replica }
        | SqlAction::EncryptMasterKeyByServiceKey { replica, .. }
        | SqlAction::StoreMasterKeyPassword { replica, .. }
        | SqlAction::SetLoggingLoginPassword { replica, .. }
        | SqlAction::CreateLoggingLoginWithSid { replica, .. }
        | SqlAction::UpdateLogDbInfo { replica, .. }
        | SqlAction::UpdateMasterAddress { replica, .. }
        | SqlAction::CreateWindowsLogin { replica, .. }
        | SqlAction::GrantSsisAdmin { replica, .. }
        | SqlAction::RegisterAlwaysOnReplica { replica, .. }
        | SqlAction::EnableWorkerAgent { replica, .. }
        | SqlAction::DisableWorkerAgent { replica, .. }
        | SqlAction::SetWorkerAgentProperty { replica, .. } => replica,
    }
}

/// A stable name of the action's kind (counters, logs: never carries data).
pub fn action_kind(action: &SqlAction) -> &'static str {
    match action {
        SqlAction::CreateListener { .. } => "CreateListener",
        SqlAction::EnableScaleOut { .. } => "EnableScaleOut",
        SqlAction::EncryptMasterKeyByServiceKey { .. } => "EncryptMasterKeyByServiceKey",
        SqlAction::StoreMasterKeyPassword { .. } => "StoreMasterKeyPassword",
        SqlAction::SetLoggingLoginPassword { .. } => "SetLoggingLoginPassword",
        SqlAction::CreateLoggingLoginWithSid { .. } => "CreateLoggingLoginWithSid",
        SqlAction::UpdateLogDbInfo { .. } => "UpdateLogDbInfo",
        SqlAction::UpdateMasterAddress { .. } => "UpdateMasterAddress",
        SqlAction::CreateWindowsLogin { .. } => "CreateWindowsLogin",
        SqlAction::GrantSsisAdmin { .. } => "GrantSsisAdmin",
        SqlAction::RegisterAlwaysOnReplica { .. } => "RegisterAlwaysOnReplica",
        SqlAction::EnableWorkerAgent { .. } => "EnableWorkerAgent",
        SqlAction::DisableWorkerAgent { .. } => "DisableWorkerAgent",
        SqlAction::SetWorkerAgentProperty { .. } => "SetWorkerAgentProperty",
    }
}

/// The batches (in order) that carry out `action`, with their parameters. Secrets are resolved
/// here through `resolve` and stay wrapped in [`SecretString`].
pub fn action_calls(
    target: &CatalogTarget,
    action: &SqlAction,
    resolve: &(dyn Fn(&SecretValue) -> SecretString + Sync),
) -> Vec<BatchCall> {
    let secret = |value: &SecretValue| SqlParam::Secret(resolve(value));
    let ag = || text(&target.availability_group_name);
    match action {
        SqlAction::CreateListener { name, port, static_ips, .. } => {
            let port = SqlParam::Int(i32::from(*port));
            match static_ips.split_first() {
                None => vec![BatchCall::new(
                    "LISTENER_CREATE_WITH_DHCP",
                    LISTENER_CREATE_WITH_DHCP,
                    Scope::Server,
                    vec![ag(), text(name), port],
                )],
                Some(((ip, mask), rest)) => {
                    let mut calls = vec![BatchCall::new(
                        "LISTENER_CREATE_WITH_STATIC_IP",
                        LISTENER_CREATE_WITH_STATIC_IP,
                        Scope::Server,
                        vec![ag(), text(name), port, text(ip), text(mask)],
                    )];
                    calls.extend(rest.iter().map(|(ip, mask)| {
                        BatchCall::new(
                            "LISTENER_ADD_STATIC_IP",
                            LISTENER_ADD_STATIC_IP,
                            Scope::Server,
                            vec![ag(), text(name), text(ip), text(mask)],
                        )
                    }));
                    calls
                }
            }
        }
        SqlAction::EnableScaleOut { .. } => {
            vec![BatchCall::new("SCALEOUT_ENABLE", SCALEOUT_ENABLE, Scope::CatalogDatabase, vec![])]
        }
        SqlAction::EncryptMasterKeyByServiceKey { password, .. } => vec![BatchCall::new(
            "MASTER_KEY_ADD_SERVICE_KEY_ENCRYPTION",
            MASTER_KEY_ADD_SERVICE_KEY_ENCRYPTION,
            Scope::CatalogDatabase,
            vec![secret(password)],
        )],
        SqlAction::StoreMasterKeyPassword { password, .. } => vec![BatchCall::new(
            "MASTER_KEY_PASSWORD_STORE",
            MASTER_KEY_PASSWORD_STORE,
            Scope::Server,
            vec![text(&target.database_name), secret(password)],
        )],
        SqlAction::SetLoggingLoginPassword { password, .. } => vec![BatchCall::new(
            "LOGGING_LOGIN_SET_PASSWORD",
            LOGGING_LOGIN_SET_PASSWORD,
            Scope::Server,
            vec![secret(password)],
        )],
        SqlAction::CreateLoggingLoginWithSid { sid, password, drop_existing, .. } => vec![BatchCall::new(
            "LOGGING_LOGIN_CREATE_WITH_SID",
            LOGGING_LOGIN_CREATE_WITH_SID,
            Scope::Server,
            vec![text(sid), secret(password), SqlParam::Bit(*drop_existing)],
        )],
        SqlAction::UpdateLogDbInfo { server_name, password, .. } => vec![BatchCall::new(
            "LOGDB_INFO_UPDATE",
            LOGDB_INFO_UPDATE,
            Scope::CatalogDatabase,
            vec![text(server_name), secret(password)],
        )],
        SqlAction::UpdateMasterAddress { address, .. } => vec![BatchCall::new(
            "MASTER_ADDRESS_UPDATE",
            MASTER_ADDRESS_UPDATE,
            Scope::CatalogDatabase,
            vec![text(address)],
        )],
        SqlAction::CreateWindowsLogin { account, .. } => {
            vec![BatchCall::new("WINDOWS_LOGIN_CREATE", WINDOWS_LOGIN_CREATE, Scope::Server, vec![text(account)])]
        }
        SqlAction::GrantSsisAdmin { account, .. } => {
            vec![BatchCall::new("SSIS_ADMIN_GRANT", SSIS_ADMIN_GRANT, Scope::CatalogDatabase, vec![text(account)])]
        }
        SqlAction::RegisterAlwaysOnReplica { server_name, .. } => vec![BatchCall::new(
            "ALWAYSON_REPLICA_REGISTER",
            ALWAYSON_REPLICA_REGISTER,
            Scope::CatalogDatabase,
            vec![text(server_name)],
        )],
        SqlAction::EnableWorkerAgent { worker_agent_id, .. } => vec![BatchCall::new(
            "WORKER_AGENT_ENABLE",
            WORKER_AGENT_ENABLE,
            Scope::CatalogDatabase,
            vec![text(worker_agent_id)],
        )],
        SqlAction::DisableWorkerAgent { worker_agent_id, .. } => vec![BatchCall::new(
            "WORKER_AGENT_DISABLE",
            WORKER_AGENT_DISABLE,
            Scope::CatalogDatabase,
            vec![text(worker_agent_id)],
        )],
        SqlAction::SetWorkerAgentProperty { worker_agent_id, property, value, .. } => vec![BatchCall::new(
            "WORKER_AGENT_SET_PROPERTY",
            WORKER_AGENT_SET_PROPERTY,
            Scope::CatalogDatabase,
            vec![text(worker_agent_id), text(property), text(value)],
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Count `@Pn` placeholders used by a batch (the highest n).
    fn highest_placeholder(sql: &str) -> usize {
        let bytes = sql.as_bytes();
        let mut highest = 0;
        for i in 0..bytes.len().saturating_sub(2) {
            if bytes[i] == b'@' && bytes[i + 1] == b'P' {
                let digits: String = sql[i + 2..].chars().take_while(char::is_ascii_digit).collect();
                if let Ok(n) = digits.parse::<usize>() {
                    highest = highest.max(n);
                }
            }
        }
        highest
    }

    fn target() -> CatalogTarget {
        CatalogTarget {
            key: "ns/ag".into(),
            availability_group_name: "AG_SSIS".into(),
            database_name: "SSISDB".into(),
            replicas: vec![],
            listener_name: "agl-ssis".into(),
            listener_port: 1433,
            admin_username: "sa".into(),
            admin_password: SecretString::new("admin-pw"),
            ca_pem: None,
            insecure_skip_verify: false,
            logging_password: SecretString::new("log-pw"),
            master_service_accounts: vec![],
        }
    }

    #[test]
    fn registry_lists_every_batch_once_with_its_own_name() {
        let mut names: Vec<&str> = ALL_BATCHES.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_BATCHES.len());
        let mut texts: Vec<&str> = ALL_BATCHES.iter().map(|(_, s)| *s).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), ALL_BATCHES.len(), "two names for one batch");
    }

    #[test]
    fn every_action_call_is_a_registered_batch_with_matching_parameter_count() {
        let resolve = |_: &SecretValue| SecretString::new("s3cret");
        for action in SqlAction::one_of_every_kind("x") {
            let calls = action_calls(&target(), &action, &resolve);
            assert!(!calls.is_empty());
            for call in calls {
                let registered = ALL_BATCHES.iter().find(|(n, _)| *n == call.name).expect("registered");
                assert_eq!(registered.1, call.sql, "{}", call.name);
                assert_eq!(highest_placeholder(call.sql), call.params.len(), "{}", call.name);
            }
        }
    }

    #[test]
    fn parameters_map_per_action() {
        let resolve = |v: &SecretValue| match v {
            SecretValue::LoggingPassword => SecretString::new("log"),
            SecretValue::CatalogPassword => SecretString::new("dmk"),
        };
        let t = target();
        let listener = SqlAction::CreateListener {
            replica: "N1".into(),
            name: "agl-ssis".into(),
            port: 1433,
            static_ips: vec![("10.0.0.50".into(), "255.255.255.0".into()), ("10.1.0.50".into(), "255.255.0.0".into())],
        };
        let calls = action_calls(&t, &listener, &resolve);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "LISTENER_CREATE_WITH_STATIC_IP");
        assert_eq!(
            calls[0].params,
            vec![text("AG_SSIS"), text("agl-ssis"), SqlParam::Int(1433), text("10.0.0.50"), text("255.255.255.0")]
        );
        assert_eq!(calls[1].params, vec![text("AG_SSIS"), text("agl-ssis"), text("10.1.0.50"), text("255.255.0.0")]);

        let store = SqlAction::StoreMasterKeyPassword { replica: "N2".into(), password: SecretValue::CatalogPassword };
        let calls = action_calls(&t, &store, &resolve);
        assert_eq!(calls[0].scope, Scope::Server);
        assert_eq!(calls[0].params, vec![text("SSISDB"), SqlParam::Secret(SecretString::new("dmk"))]);

        let sid = SqlAction::CreateLoggingLoginWithSid {
            replica: "N2".into(),
            sid: "0x0102".into(),
            password: SecretValue::LoggingPassword,
            drop_existing: false,
        };
        let calls = action_calls(&t, &sid, &resolve);
        assert_eq!(
            calls[0].params,
            vec![text("0x0102"), SqlParam::Secret(SecretString::new("log")), SqlParam::Bit(false)]
        );

        let logdb = SqlAction::UpdateLogDbInfo {
            replica: "N1".into(),
            server_name: "agl-ssis,1433".into(),
            password: SecretValue::LoggingPassword,
        };
        let calls = action_calls(&t, &logdb, &resolve);
        assert_eq!(calls[0].scope, Scope::CatalogDatabase);
        assert_eq!(calls[0].params, vec![text("agl-ssis,1433"), SqlParam::Secret(SecretString::new("log"))]);

        let prop = SqlAction::SetWorkerAgentProperty {
            replica: "N1".into(),
            worker_agent_id: "A".into(),
            property: "Tags".into(),
            value: "t".into(),
        };
        let calls = action_calls(&t, &prop, &resolve);
        assert_eq!(calls[0].params, vec![text("A"), text("Tags"), text("t")]);
    }

    #[test]
    fn batch_debug_output_never_shows_secrets() {
        let resolve = |_: &SecretValue| SecretString::new("TopSecret!");
        for action in SqlAction::one_of_every_kind("x") {
            for call in action_calls(&target(), &action, &resolve) {
                assert!(!format!("{call:?}").contains("TopSecret!"));
            }
        }
    }
}
