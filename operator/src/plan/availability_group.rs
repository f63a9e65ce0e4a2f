//! SSISDB in an Always On availability group: reference §9 (Always On for SSISDB), §10 (listener),
//! §6 step 4 (listener) and step 6 (logging login on every replica), pitfalls 9 and 10.

use ssis_crds::{
    ListenerSpec, ObservedListener, ReplicaStatus, SsisdbAvailabilityGroup, SsisdbAvailabilityGroupSpec,
    SsisdbAvailabilityGroupStatus,
};

use super::conditions::Findings;
use super::{Pass, PlanInput, SqlStage, namespace_of, object_key};
use crate::catalog::{CatalogObservation, ReplicaObservation, SecretValue, SqlAction};

const KIND: &str = "SsisdbAvailabilityGroup";

/// Host name clients use for the listener: `name` or `name.dnsDomain`.
pub fn listener_host(listener: &ListenerSpec) -> String {
    match listener.dns_domain.as_deref().filter(|d| !d.is_empty()) {
        Some(domain) => format!("{}.{domain}", listener.name),
        None => listener.name.clone(),
    }
}

/// `<listener host>,<port>`: MasterSettings `SqlServerName` (reference §6 step 5) and the logging
/// Data Source (step 6.3). Never a node name (pitfalls 9 and 16).
pub fn listener_server_name(spec: &SsisdbAvailabilityGroupSpec) -> String {
    format!("{},{}", listener_host(&spec.listener), spec.listener.port)
}

/// A Secret key referenced by a spec field exists (its value is never read here).
pub(crate) fn check_secret_key(
    input: &PlanInput,
    namespace: &str,
    name: &str,
    key: &str,
    field: &str,
    findings: &mut Findings,
) -> bool {
    let secret = format!("{namespace}/{name}");
    match input.secrets.get(&secret) {
        None => {
            findings.stall("SecretNotFound", format!("{field}: Secret {secret} does not exist; create it"));
            false
        }
        Some(meta) if !meta.keys.contains(key) => {
            findings.stall(
                "SecretKeyMissing",
                format!("{field}: Secret {secret} has no key {key:?}; add it or fix the key name"),
            );
            false
        }
        Some(_) => true,
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Cross-replica rules the CRD cannot state cheaply: a list-map has one key (`name`), and
/// checking any other pair of replicas in CEL takes nested list macros, which the API server
/// costs quadratically. Each finding is (reason, message naming the field and the fix).
pub fn replica_spec_problems(spec: &SsisdbAvailabilityGroupSpec) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    for (index, replica) in spec.replicas.iter().enumerate() {
        let earlier = &spec.replicas[..index];
        // DNS host names compare case-insensitively: SQL1.corp and sql1.corp are one endpoint.
        if let Some(first) =
            earlier.iter().position(|o| o.host.eq_ignore_ascii_case(&replica.host) && o.port == replica.port)
        {
            problems.push((
                "DuplicateReplicaEndpoint",
                format!(
                    "spec.replicas[{index}]: host {} port {} is already spec.replicas[{first}] ({}); each replica needs its own SQL Server endpoint, fix the host or port of one of them",
                    replica.host, replica.port, spec.replicas[first].name
                ),
            ));
        }
        if let Some(node) = &replica.node_name
            && let Some(first) = earlier.iter().position(|o| o.node_name.as_ref() == Some(node))
        {
            problems.push((
                "DuplicateReplicaNode",
                format!(
                    "spec.replicas[{index}].nodeName: node {node} already runs spec.replicas[{first}] ({}); a Kubernetes node runs at most one replica of the group, fix the nodeName of one of them",
                    spec.replicas[first].name
                ),
            ));
        }
    }
    problems
}

/// Plan one SsisdbAvailabilityGroup: its SQL actions (in order) and its status.
pub(crate) fn plan_availability_group(pass: &mut Pass, ag: &SsisdbAvailabilityGroup) {
    let input = pass.input;
    let key = object_key(&ag.metadata);
    let namespace = namespace_of(&ag.metadata).to_string();
    let spec = &ag.spec;
    let previous = ag.status.clone().unwrap_or_default();
    let mut findings = Findings::default();
    let server_name = listener_server_name(spec);

    let credentials = &spec.admin_credentials;
    for (secret_key, field) in [
        (&credentials.username_key, "spec.adminCredentials.usernameKey"),
        (&credentials.password_key, "spec.adminCredentials.passwordKey"),
    ] {
        check_secret_key(input, &namespace, &credentials.secret.name, secret_key, field, &mut findings);
    }
    let catalog_ref = &spec.catalog_password_secret_ref;
    check_secret_key(
        input,
        &namespace,
        &catalog_ref.name,
        &catalog_ref.key,
        "spec.catalogPasswordSecretRef",
        &mut findings,
    );
    let logging_ref = &spec.logging_login.password_secret_ref;
    check_secret_key(
        input,
        &namespace,
        &logging_ref.name,
        &logging_ref.key,
        "spec.loggingLogin.passwordSecretRef",
        &mut findings,
    );
    if spec.replicas.is_empty() {
        findings
            .stall("NoReplicas", "spec.replicas is empty; list every SQL Server instance of the availability group");
    }
    let replica_problems = replica_spec_problems(spec);
    for (reason, message) in &replica_problems {
        findings.stall(reason, message.clone());
    }

    let mut status = SsisdbAvailabilityGroupStatus {
        observed_generation: ag.metadata.generation,
        server_name: Some(server_name.clone()),
        last_failover_time: previous.last_failover_time.clone(),
        logging_password_fingerprint: previous.logging_password_fingerprint.clone(),
        ..Default::default()
    };
    let scale_out_wanted = input.master_groups.iter().any(|g| {
        namespace_of(&g.metadata) == namespace
            && Some(g.spec.availability_group_ref.name.as_str()) == ag.metadata.name.as_deref()
    });

    match input.catalogs.get(&key) {
        // Nothing is done in SQL for a spec the CRD used to refuse (see replica_spec_problems).
        Some(_) if !replica_problems.is_empty() => {
            status.replicas = spec
                .replicas
                .iter()
                .map(|r| unknown_replica(&r.name, "not reconciled: spec.replicas is invalid"))
                .collect();
        }
        None => {
            findings.progress(
                "ObservingCatalog",
                "waiting for the first SQL observation of the replicas (connection, roles, SSISDB state)",
            );
            status.replicas = spec.replicas.iter().map(|r| unknown_replica(&r.name, "not observed yet")).collect();
        }
        Some(observation) => {
            plan_observed(pass, ag, &key, observation, &server_name, scale_out_wanted, &mut status, &mut findings);
        }
    }

    let listener_ready = status.listener.as_ref().is_some_and(|l| l.ready);
    findings.detail(
        "ListenerReady",
        listener_ready,
        if listener_ready { "ListenerFound" } else { "ListenerNotReady" },
        format!("listener {} on port {}", spec.listener.name, spec.listener.port),
    );
    let all =
        |ready: fn(&ssis_crds::ReplicaStatus) -> bool| !status.replicas.is_empty() && status.replicas.iter().all(ready);
    let keys_ready = all(|r| r.catalog_key_ready);
    findings.detail(
        "CatalogKeyReady",
        keys_ready,
        if keys_ready { "MasterKeyOpenableEverywhere" } else { "MasterKeyNotReady" },
        "every replica can open the SSISDB master key after a failover (pitfall 10)",
    );
    let logins_ready = all(|r| r.logging_login_ready);
    findings.detail(
        "LoggingLoginReady",
        logins_ready,
        if logins_ready { "LoggingLoginConsistent" } else { "LoggingLoginNotReady" },
        "##MS_SSISLogDBWorkerAgentLogin## has the primary's SID and the current password on every replica (pitfall 9)",
    );
    let actions = pass.sql.get(&key).map_or(0, Vec::len);
    if actions > 0 {
        findings.progress("ApplyingSqlActions", format!("{actions} SQL action(s) to run on the replicas"));
    }
    status.conditions = findings.conditions(
        &format!("SSISDB is ready for Scale Out on every replica; masters use {server_name}"),
        ag.metadata.generation,
        &previous.conditions,
        input.now,
    );
    pass.output.availability_group_statuses.insert(key, status);
}

fn unknown_replica(name: &str, message: &str) -> ReplicaStatus {
    ReplicaStatus {
        name: name.to_string(),
        role: "UNKNOWN".into(),
        connected: false,
        synchronization_health: "UNKNOWN".into(),
        catalog_key_ready: false,
        logging_login_ready: false,
        message: Some(message.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_observed(
    pass: &mut Pass,
    ag: &SsisdbAvailabilityGroup,
    key: &str,
    observation: &CatalogObservation,
    server_name: &str,
    scale_out_wanted: bool,
    status: &mut SsisdbAvailabilityGroupStatus,
    findings: &mut Findings,
) {
    let input = pass.input;
    let spec = &ag.spec;
    let previous = ag.status.clone().unwrap_or_default();
    let observed = |name: &str| observation.replicas.iter().find(|r| same_name(&r.name, name));
    let primary = observation.primary.clone();
    let primary_observation = primary.as_deref().and_then(observed);
    let primary_sid = primary_observation.and_then(|p| p.logging_login_sid.clone());
    let ssisdb = observation.ssisdb.as_ref();

    for replica in &spec.replicas {
        match observed(&replica.name) {
            Some(r) if r.reachable => {
                if !r.sql_auth_enabled {
                    // Pitfall 9: workers log with a SQL login; without mixed mode nothing is logged.
                    findings.stall(
                        "SqlAuthenticationDisabled",
                        format!(
                            "replica {}: SQL Server authentication is disabled, so workers cannot write execution logs; \
                             enable \"SQL Server and Windows Authentication mode\" and restart that instance",
                            replica.name
                        ),
                    );
                }
            }
            Some(r) => findings.progress(
                "ReplicaUnreachable",
                format!(
                    "replica {} is unreachable ({}); the other replicas are still reconciled",
                    replica.name,
                    r.error.as_deref().unwrap_or("no detail")
                ),
            ),
            None => findings.progress("ReplicaUnreachable", format!("replica {} was not observed", replica.name)),
        }
    }

    if !observation.availability_group_exists {
        findings.stall(
            "AvailabilityGroupMissing",
            format!(
                "availability group {} was not found; create it with {} as a member (reference §9.2) — the operator does not create availability groups",
                spec.availability_group_name, spec.database_name
            ),
        );
    } else if !observation.database_in_group {
        findings.stall(
            "DatabaseNotInGroup",
            format!(
                "{} is not a member of availability group {}; add it (reference §9.2 step 2)",
                spec.database_name, spec.availability_group_name
            ),
        );
    }

    // Failover follow-up: a new primary must be able to open the catalog master key (pitfall 10)
    // and keep the logging login's SID (pitfall 9); the checks below repair both.
    if let (Some(before), Some(now)) = (previous.primary_replica.as_deref(), primary.as_deref())
        && !same_name(before, now)
    {
        status.last_failover_time = Some(input.now.to_string());
        pass.event(
            KIND,
            key,
            true,
            "FailoverDetected",
            format!(
                "{} primary moved from {before} to {now}; re-verifying the catalog master key and logins on {now}",
                spec.database_name
            ),
        );
        findings.progress(
            "FailoverFollowUp",
            format!("failover from {before} to {now}: verifying the catalog master key and logins on the new primary"),
        );
    }
    status.primary_replica = primary.clone();

    let Some(primary) = primary else {
        findings.progress(
            "NoPrimary",
            format!(
                "no replica answered as primary for {}; waiting (check the availability group health if this persists)",
                spec.database_name
            ),
        );
        status.replicas =
            spec.replicas.iter().map(|r| replica_status(&r.name, observed(&r.name), None, false, None)).collect();
        return;
    };

    // Reference §6 step 4 / §10: the listener masters and workers use.
    plan_listener(pass, key, &spec.listener, &primary, observation, status, findings);

    let Some(ssisdb) = ssisdb else {
        findings.stall(
            "CatalogMissing",
            format!(
                "{} was not readable on primary {primary}; create the SSIS catalog there (reference §9.2 step 1)",
                spec.database_name
            ),
        );
        status.replicas = spec
            .replicas
            .iter()
            .map(|r| replica_status(&r.name, observed(&r.name), primary_sid.as_deref(), false, Some(&primary)))
            .collect();
        return;
    };

    // Reference §9.3 / pitfall 10: every replica stores the DMK password so it can open the key
    // after becoming primary; the primary keeps the DMK encrypted by its service master key.
    for replica in &spec.replicas {
        if let Some(r) = observed(&replica.name).filter(|r| r.reachable && !r.master_key_password_stored) {
            pass.sql(
                key,
                SqlStage::CatalogKey,
                SqlAction::StoreMasterKeyPassword { replica: r.name.clone(), password: SecretValue::CatalogPassword },
            );
        }
    }
    if !ssisdb.master_key_encrypted_by_server {
        pass.sql(
            key,
            SqlStage::CatalogKey,
            SqlAction::EncryptMasterKeyByServiceKey {
                replica: primary.clone(),
                password: SecretValue::CatalogPassword,
            },
        );
    }

    // Reference §5.3 / pitfall 8: Scale Out enabled on the catalog (creates the logging login).
    let scale_out_enabled =
        ssisdb.master_properties.get("IS_SCALEOUT_ENABLED").is_some_and(|v| v.eq_ignore_ascii_case("TRUE"));
    let enabling_now = scale_out_wanted && !scale_out_enabled;
    if enabling_now {
        pass.sql(key, SqlStage::EnableScaleOut, SqlAction::EnableScaleOut { replica: primary.clone() });
    }

    let logging_fingerprint = input
        .secrets
        .get(&format!("{}/{}", namespace_of(&ag.metadata), spec.logging_login.password_secret_ref.name))
        .map(|m| m.fingerprint.clone());
    if scale_out_enabled || enabling_now {
        plan_logging_login(
            pass,
            ag,
            key,
            observation,
            &primary,
            enabling_now,
            server_name,
            logging_fingerprint.as_deref(),
            findings,
        );
        status.logging_password_fingerprint = logging_fingerprint.or(status.logging_password_fingerprint.take());
    }

    // Reference §9.2 step 3 / pitfall 11: Always On support registered for every replica.
    if spec.enable_always_on_support {
        for replica in &spec.replicas {
            if !ssisdb.always_on_replicas.iter().any(|r| same_name(r, &replica.name)) {
                pass.sql(
                    key,
                    SqlStage::AlwaysOn,
                    SqlAction::RegisterAlwaysOnReplica { replica: primary.clone(), server_name: replica.name.clone() },
                );
            }
        }
    }

    status.replicas = spec
        .replicas
        .iter()
        .map(|r| {
            replica_status(
                &r.name,
                observed(&r.name),
                primary_sid.as_deref(),
                ssisdb.master_key_encrypted_by_server,
                Some(&primary),
            )
        })
        .collect();
}

/// Reference §10: verify the listener, or create it when `listener.create` is set; the result
/// goes into `status.listener`.
fn plan_listener(
    pass: &mut Pass,
    key: &str,
    listener: &ListenerSpec,
    primary: &str,
    observation: &CatalogObservation,
    status: &mut SsisdbAvailabilityGroupStatus,
    findings: &mut Findings,
) {
    let found = observation.listener.as_ref().filter(|(name, _)| same_name(name, &listener.name));
    let ready = match found {
        Some((_, None)) => {
            findings.stall(
                "ListenerPortUnknown",
                format!(
                    "listener {} has no port in SQL Server (created outside SQL); set it with ALTER AVAILABILITY GROUP … MODIFY LISTENER N'{}' (PORT = {})",
                    listener.name, listener.name, listener.port
                ),
            );
            false
        }
        Some((_, Some(port))) if i32::from(*port) != listener.port => {
            findings.stall(
                "ListenerPortMismatch",
                format!(
                    "listener {} listens on port {port} but spec.listener.port is {}; change one of them to match",
                    listener.name, listener.port
                ),
            );
            false
        }
        Some(_) => true,
        None => {
            match &listener.create {
                Some(create) if !create.static_ips.is_empty() => {
                    let port = u16::try_from(listener.port).unwrap_or(1433);
                    pass.sql(
                        key,
                        SqlStage::Listener,
                        SqlAction::CreateListener {
                            replica: primary.to_string(),
                            name: listener.name.clone(),
                            port,
                            static_ips: create
                                .static_ips
                                .iter()
                                .map(|ip| (ip.address.clone(), ip.subnet_mask.clone()))
                                .collect(),
                        },
                    );
                }
                _ => findings.stall(
                    "ListenerMissing",
                    format!(
                        "listener {} does not exist on the availability group; create it (ALTER AVAILABILITY GROUP … ADD LISTENER N'{}' (WITH IP ((N'<ip>', N'<mask>')), PORT = {})) or set spec.listener.create.staticIps so the operator creates it",
                        listener.name, listener.name, listener.port
                    ),
                ),
            }
            false
        }
    };
    status.listener = Some(ObservedListener {
        name: listener.name.clone(),
        port: found.and_then(|(_, port)| port.map(i32::from)),
        ready,
    });
}

/// Reference §6 step 6: one logging login, with the primary's SID and one password, on every
/// replica, and `catalog.update_logdb_info` pointing at the listener (pitfall 9).
#[allow(clippy::too_many_arguments)]
fn plan_logging_login(
    pass: &mut Pass,
    ag: &SsisdbAvailabilityGroup,
    key: &str,
    observation: &CatalogObservation,
    primary: &str,
    enabling_now: bool,
    server_name: &str,
    logging_fingerprint: Option<&str>,
    findings: &mut Findings,
) {
    let spec = &ag.spec;
    let previous = ag.status.clone().unwrap_or_default();
    let primary_observation = observation.replicas.iter().find(|r| same_name(&r.name, primary));
    let password = SecretValue::LoggingPassword;

    // Reference §6 step 6.1: the logging login's password on the primary. `enable_scaleout`
    // recreates the login with a random password, so set ours right after it.
    let set_on_primary = enabling_now || primary_observation.is_none_or(|p| !p.logging_login_password_matches);
    if set_on_primary {
        pass.sql(
            key,
            SqlStage::LoggingLogin,
            SqlAction::SetLoggingLoginPassword { replica: primary.to_string(), password: password.clone() },
        );
    }

    // Reference §6 step 6.2: the logging login with the primary's SID on every secondary.
    let primary_sid = if enabling_now { None } else { primary_observation.and_then(|p| p.logging_login_sid.clone()) };
    match &primary_sid {
        Some(sid) => {
            for replica in &spec.replicas {
                let Some(r) = observation.replicas.iter().find(|r| same_name(&r.name, &replica.name)) else { continue };
                if same_name(&r.name, primary) || !r.reachable {
                    continue;
                }
                match r.logging_login_sid.as_deref() {
                    Some(existing) if existing.eq_ignore_ascii_case(sid) => {
                        if !r.logging_login_password_matches {
                            pass.sql(
                                key,
                                SqlStage::LoggingLogin,
                                SqlAction::SetLoggingLoginPassword { replica: r.name.clone(), password: password.clone() },
                            );
                        }
                    }
                    existing => pass.sql(
                        key,
                        SqlStage::LoggingLogin,
                        SqlAction::CreateLoggingLoginWithSid {
                            replica: r.name.clone(),
                            sid: sid.clone(),
                            password: password.clone(),
                            drop_existing: existing.is_some(),
                        },
                    ),
                }
            }
        }
        None if !enabling_now => findings.stall(
            "LoggingLoginMissing",
            format!(
                "##MS_SSISLogDBWorkerAgentLogin## does not exist on primary {primary} although Scale Out is enabled; run EXEC SSISDB.catalog.enable_scaleout on {primary} to recreate it"
            ),
        ),
        None => findings.progress(
            "EnablingScaleOut",
            "enabling Scale Out on the catalog; the logging login is copied to the secondaries with the primary's SID in the next pass",
        ),
    }

    // Reference §6 step 6.3: the logging connection points at the listener, with the current password.
    let logdb_server =
        observation.ssisdb.as_ref().and_then(|s| s.master_properties.get("CLUSTER_LOGDB_SERVER")).map(String::as_str);
    let password_changed =
        logging_fingerprint.is_some() && logging_fingerprint != previous.logging_password_fingerprint.as_deref();
    if logdb_server != Some(server_name) || password_changed || set_on_primary {
        pass.sql(
            key,
            SqlStage::LogDb,
            SqlAction::UpdateLogDbInfo { replica: primary.to_string(), server_name: server_name.to_string(), password },
        );
    }
}

fn replica_status(
    name: &str,
    observed: Option<&ReplicaObservation>,
    primary_sid: Option<&str>,
    primary_key_encrypted_by_server: bool,
    primary: Option<&str>,
) -> ReplicaStatus {
    let Some(r) = observed else { return unknown_replica(name, "not observed") };
    if !r.reachable {
        return ReplicaStatus {
            message: Some(format!("unreachable: {}", r.error.as_deref().unwrap_or("no detail"))),
            ..unknown_replica(name, "")
        };
    }
    let is_primary = primary.is_some_and(|p| same_name(p, name));
    let catalog_key_ready = r.master_key_password_stored && (!is_primary || primary_key_encrypted_by_server);
    let sid_matches = match (r.logging_login_sid.as_deref(), primary_sid) {
        (Some(sid), Some(primary_sid)) => sid.eq_ignore_ascii_case(primary_sid),
        _ => false,
    };
    let logging_login_ready = sid_matches && r.logging_login_password_matches;
    let mut problems = Vec::new();
    if !r.sql_auth_enabled {
        problems.push("SQL Server authentication disabled".to_string());
    }
    if !catalog_key_ready {
        problems.push("catalog master key not yet openable by this replica".to_string());
    }
    if !logging_login_ready {
        problems.push("logging login missing, with another SID, or with an old password".to_string());
    }
    ReplicaStatus {
        name: name.to_string(),
        role: if r.role.is_empty() { "UNKNOWN".into() } else { r.role.clone() },
        connected: true,
        synchronization_health: if r.synchronization_health.is_empty() {
            "UNKNOWN".into()
        } else {
            r.synchronization_health.clone()
        },
        catalog_key_ready,
        logging_login_ready,
        message: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}
