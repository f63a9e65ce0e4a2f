//! The simulated Scale Out network: which master and worker heartbeats get through, computed from
//! the state of every host in a world following reference §7, §8 and §12. A failed connection
//! carries the text of the pitfall it reproduces.

use std::path::Path;

use ssis_crds::CertStore;

use super::cluster::{self, RoleFile};
use super::state::{HostPaths, HostState, StoredCertificate};
use super::traffic::{ConnectionFailure, MasterHeartbeat, ScaleOutTraffic, WorkerHeartbeat};
use crate::host::HostError;

fn find_cert<'a>(state: &'a HostState, store: CertStore, thumbprint: &str) -> Option<&'a StoredCertificate> {
    state.certificates.iter().find(|c| c.store == store && c.thumbprint.eq_ignore_ascii_case(thumbprint))
}

/// `https://host:port[/...]` → (host, port).
fn parse_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint.strip_prefix("https://").or_else(|| endpoint.strip_prefix("HTTPS://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, 443),
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn first_label(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

fn certificate_names_host(cert: &StoredCertificate, host: &str) -> bool {
    let cn = cert.subject.split(',').filter_map(|part| part.trim().strip_prefix("CN=")).map(str::trim);
    cert.dns_names.iter().map(String::as_str).chain(cn).any(|name| name.eq_ignore_ascii_case(host))
}

/// A running master as seen by the network.
struct RunningMaster<'a> {
    state: &'a HostState,
    port: u16,
    thumbprint: String,
}

fn running_master<'a>(state: &'a HostState) -> Option<(RunningMaster<'a>, MasterHeartbeat)> {
    let (_, service) = state.services.iter().find(|(name, s)| name.starts_with("SSISScaleOutMaster") && s.running)?;
    let loaded = service.loaded.as_ref()?;
    let port: u16 = loaded.settings.get("PortNumber")?.parse().ok()?;
    let thumbprint = loaded.settings.get("SSLCertThumbprint").cloned().unwrap_or_default();
    let heartbeat = MasterHeartbeat {
        machine_name: state.computer_name.clone(),
        sql_server_name: loaded.settings.get("SqlServerName").cloned().unwrap_or_default(),
        port,
        ssl_cert_thumbprint: thumbprint.clone(),
        service_account: service.logon_account.clone(),
    };
    Some((RunningMaster { state, port, thumbprint }, heartbeat))
}

/// Observe the whole world once. Applies the cluster's rules first.
pub fn observe(world: &Path) -> Result<ScaleOutTraffic, HostError> {
    cluster::enforce(world)?;
    let roles = cluster::list_roles(world)?;
    let states: Vec<HostState> =
        cluster::host_roots(world).into_iter().map(|root| HostPaths { root }.read()).collect::<Result<_, _>>()?;
    let mut traffic = ScaleOutTraffic::default();
    let masters: Vec<RunningMaster<'_>> = states
        .iter()
        .filter_map(|state| {
            let (master, heartbeat) = running_master(state)?;
            traffic.masters.push(heartbeat);
            Some(master)
        })
        .collect();
    for worker in &states {
        let Some((_, service)) =
            worker.services.iter().find(|(name, s)| name.starts_with("SSISScaleOutWorker") && s.running)
        else {
            continue;
        };
        let loaded = service.loaded.clone().unwrap_or_default();
        match connect_worker(worker, &service.logon_account, &loaded.settings, &roles, &states, &masters) {
            Ok(via_master) => traffic.workers.push(WorkerHeartbeat {
                agent_id: loaded.settings.get("AgentId").cloned().unwrap_or_default(),
                machine_name: worker.computer_name.clone(),
                user_account: service.logon_account.clone(),
                via_master,
            }),
            Err(message) => traffic.failures.push(ConnectionFailure { node: worker.computer_name.clone(), message }),
        }
    }
    Ok(traffic)
}

/// One worker's connection attempt; `Ok(master computer name)` or the pitfall message.
fn connect_worker(
    worker: &HostState,
    worker_account: &str,
    settings: &std::collections::BTreeMap<String, String>,
    roles: &[RoleFile],
    states: &[HostState],
    masters: &[RunningMaster<'_>],
) -> Result<String, String> {
    let endpoint = settings.get("MasterEndpoint").cloned().unwrap_or_default();
    // Pitfall 2: nothing answers at a malformed or unresolvable endpoint.
    let no_endpoint = |why: &str| {
        format!(
            "There was no endpoint listening at {}/ClusterManagement/ that could accept the message ({why})",
            endpoint.trim_end_matches('/')
        )
    };
    let (host, port) =
        parse_endpoint(&endpoint).ok_or_else(|| no_endpoint("MasterEndpoint is not an https://host:port URL"))?;
    let label = first_label(&host);
    // The host is either a cluster client access point or a computer name.
    let target_name = match roles.iter().find(|r| r.name.eq_ignore_ascii_case(label)) {
        Some(role) if role.state == "Online" => role.owner_node.clone(),
        Some(role) => return Err(no_endpoint(&format!("cluster role {} is {}", role.name, role.state))),
        None => match states.iter().find(|s| s.computer_name.eq_ignore_ascii_case(label)) {
            Some(state) => state.computer_name.clone(),
            None => return Err(no_endpoint(&format!("host name {host} does not resolve"))),
        },
    };
    let master = masters
        .iter()
        .find(|m| m.state.computer_name.eq_ignore_ascii_case(&target_name))
        .ok_or_else(|| no_endpoint(&format!("the master service is not running on {target_name}")))?;
    if master.port != port {
        return Err(no_endpoint(&format!("the master on {target_name} listens on port {}", master.port)));
    }
    // Pitfall 5: HTTP.SYS needs a binding of 0.0.0.0:<port> to the master's certificate, and the
    // certificate with its private key in LocalMachine\Root.
    let http_error = |why: String| {
        format!("An error occurred while making the HTTP request to https://{host}:{port}/ClusterManagement/ ({why})")
    };
    let binding_key = format!("0.0.0.0:{port}");
    let binding = master
        .state
        .ssl_bindings
        .get(&binding_key)
        .ok_or_else(|| http_error(format!("no SSL certificate binding for {binding_key} on {target_name}")))?;
    if !binding.thumbprint.eq_ignore_ascii_case(&master.thumbprint) {
        return Err(http_error(format!(
            "the binding for {binding_key} on {target_name} uses {} but SSLCertThumbprint is {}",
            binding.thumbprint, master.thumbprint
        )));
    }
    let served = find_cert(master.state, CertStore::Root, &binding.thumbprint)
        .filter(|c| c.has_private_key)
        .ok_or_else(|| {
            http_error(format!(
                "certificate {} with its private key is not in LocalMachine\\Root on {target_name}",
                binding.thumbprint
            ))
        })?;
    // Pitfall 1: the worker must trust the served certificate and the name it connects to.
    let trust = |why: String| {
        format!(
            "Could not establish trust relationship for the SSL/TLS secure channel with authority '{host}:{port}' ({why})"
        )
    };
    if find_cert(worker, CertStore::Root, &served.thumbprint).is_none() {
        return Err(trust(format!(
            "master certificate {} is not in LocalMachine\\Root on {}",
            served.thumbprint, worker.computer_name
        )));
    }
    if !certificate_names_host(served, &host) {
        return Err(trust(format!(
            "host name {host} in MasterEndpoint is not among the master certificate names [{}]",
            served.dns_names.join(", ")
        )));
    }
    let expected = settings.get("MasterHttpsCertThumbprint").cloned().unwrap_or_default();
    if !expected.eq_ignore_ascii_case(&served.thumbprint) {
        return Err(trust(format!(
            "MasterHttpsCertThumbprint {expected} is not the master certificate {}",
            served.thumbprint
        )));
    }
    // Pitfall 4: the worker presents its own certificate; it needs the private key and read access.
    let worker_thumbprint = settings.get("WorkerHttpsCertThumbprint").cloned().unwrap_or_default();
    let secure_channel =
        |why: String| format!("Could not establish secure channel for SSL/TLS with authority '{host}:{port}' ({why})");
    let own = find_cert(worker, CertStore::My, &worker_thumbprint).filter(|c| c.has_private_key).ok_or_else(|| {
        secure_channel(format!(
            "worker certificate {worker_thumbprint} with its private key is not in LocalMachine\\My"
        ))
    })?;
    if !own.private_key_readers.iter().any(|r| r.eq_ignore_ascii_case(worker_account)) {
        return Err(secure_channel(format!(
            "{worker_account} cannot read the private key of worker certificate {worker_thumbprint}"
        )));
    }
    // Pitfall 3: the master accepts the client certificate only when it is in its Root store.
    if find_cert(master.state, CertStore::Root, &worker_thumbprint).is_none() {
        return Err(format!(
            "The HTTP request was forbidden with client authentication scheme 'Anonymous' (403): worker certificate {worker_thumbprint} is not in LocalMachine\\Root on master node {target_name}"
        ));
    }
    Ok(master.state.computer_name.clone())
}
