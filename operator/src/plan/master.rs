//! Scale Out Master high availability: reference §6 (steps 2, 3, 5, 7, 8), §7 (certificates,
//! HTTP.SYS binding, master certificate change), §4 (legacy SSIS service in a cluster), §11 (the
//! Generic Service role) and pitfalls 1, 3, 5, 7, 8, 16.

use std::collections::{BTreeMap, BTreeSet};

use ssis_crds::{
    CertStore, CertificateStatus, ClusterRole, Contributor, Ensure, HostConfigSpec, HostService, HttpSslBinding,
    LegacyFolder, LegacyServiceConfig, MasterNodeStatus, MasterSettings, RegistryPointerMode, RegistryValue,
    RegistryValueType, RotationPhase, ScaleOutMasterGroup, ScaleOutMasterGroupStatus, SecretKeyRef, ServiceLogon,
    ServiceRole, ServiceRunState, ServiceStartType, SqlVersion, SsisdbAvailabilityGroup, host_secret_keys,
};

use super::availability_group::{check_secret_key, listener_server_name};
use super::certificates::{
    HostMaterial, MasterCertificateLayout, absent, cert_item, master_layout, master_rotation_pauses_workers,
    next_master_phase, request_unless_issued, rotation_target, start_rotation, wanted_certificate,
};
use super::conditions::Findings;
use super::inventory::{Owner, item_name};
use super::merge::Contribution;
use super::worker::ResolvedNodes;
use super::{ObjectKey, Pass, SecretCopy, SqlStage, namespace_of, object_key};
use crate::catalog::SqlAction;

const KIND: &str = "ScaleOutMasterGroup";

/// What workers need to know about their master group after it was planned.
#[derive(Clone, Debug)]
pub struct MasterGroupPlan {
    pub key: ObjectKey,
    pub version: SqlVersion,
    /// `https://<dnsName>:<port>` (reference §6 step 8, §8 step 5).
    pub endpoint: String,
    /// `namespace/name` of the SsisdbAvailabilityGroup, when it exists.
    pub availability_group: Option<ObjectKey>,
    /// Master nodes that take items this pass (valid Windows nodes without conflicts).
    pub nodes: Vec<String>,
    /// Master certificate layout of this pass; `None` until the first certificate is issued.
    pub certificate: Option<MasterCertificateLayout>,
    /// A master certificate rotation keeps the group's workers disabled in SSISDB this pass
    /// (reference §7 "Master cert change"): the workers must not enable them.
    pub pauses_workers: bool,
}

/// The master service account's password, copied into the operator namespace for the agents.
fn logon_account(pass: &mut Pass, group: &ScaleOutMasterGroup, key: &str, findings: &mut Findings) -> ServiceLogon {
    let account = &group.spec.service_account;
    let namespace = namespace_of(&group.metadata);
    let secret = &account.password_secret_ref;
    let copy_name = super::certificates::logon_secret_name(KIND, key);
    if check_secret_key(
        pass.input,
        namespace,
        &secret.name,
        &secret.key,
        "spec.serviceAccount.passwordSecretRef",
        findings,
    ) {
        pass.output.secret_copies.insert(
            copy_name.clone(),
            SecretCopy {
                owner: format!("ScaleOutMasterGroup/{key}"),
                source_namespace: namespace.to_string(),
                source_name: secret.name.clone(),
                source_key: secret.key.clone(),
                target_key: host_secret_keys::PASSWORD.into(),
            },
        );
    }
    ServiceLogon {
        username: account.username.clone(),
        password_secret_ref: SecretKeyRef { name: copy_name, key: host_secret_keys::PASSWORD.into() },
    }
}

/// Plan one ScaleOutMasterGroup: its contributions to every master node, its SQL actions, its
/// certificate (issue / rotate) and its status.
pub(crate) fn plan_master_group(
    pass: &mut Pass,
    group: &ScaleOutMasterGroup,
    worker_nodes: &BTreeMap<ObjectKey, ResolvedNodes>,
) -> MasterGroupPlan {
    let input = pass.input;
    let key = object_key(&group.metadata);
    let namespace = namespace_of(&group.metadata).to_string();
    let spec = &group.spec;
    let previous = group.status.clone().unwrap_or_default();
    let mut findings = Findings::default();
    let owner = Owner::MasterGroup(key.clone());
    let endpoint = format!("https://{}:{}", spec.master_service.dns_name, spec.master_service.port);
    let network_name = spec.master_service.dns_name.split('.').next().unwrap_or_default().to_string();

    // Reference §6 step 5: SqlServerName is the SSISDB listener, never a node name (pitfall 16).
    let availability_group: Option<&SsisdbAvailabilityGroup> = input.availability_groups.iter().find(|ag| {
        namespace_of(&ag.metadata) == namespace
            && ag.metadata.name.as_deref() == Some(spec.availability_group_ref.name.as_str())
    });
    let sql_server_name = availability_group.map(|ag| listener_server_name(&ag.spec));
    if availability_group.is_none() {
        findings.stall(
            "AvailabilityGroupNotFound",
            format!(
                "spec.availabilityGroupRef.name: SsisdbAvailabilityGroup {namespace}/{} does not exist; create it or fix the name",
                spec.availability_group_ref.name
            ),
        );
    }

    // Reference §1 / §6 step 2.1: HA needs the master service to run as a domain account.
    let logon = logon_account(pass, group, &key, &mut findings);

    // The master nodes that take items this pass.
    let mut nodes: Vec<String> = Vec::new();
    let mut node_statuses: BTreeMap<String, MasterNodeStatus> = BTreeMap::new();
    if spec.nodes.is_empty() {
        findings
            .stall("NoMasterNodes", "spec.nodes is empty; list the Windows nodes with the Scale Out Master installed");
    }
    for (index, node) in spec.nodes.iter().enumerate() {
        if nodes.contains(node) || node_statuses.contains_key(node) {
            continue;
        }
        if let Some((reason, message)) = pass.conflicts.get(&owner, node) {
            findings.stall(reason, message.clone());
            node_statuses.insert(node.clone(), node_status(node, "Conflict", false, None, Some(message.clone())));
        } else if let Some(problem) = pass.inventory.node_problem(node) {
            let message = problem.describe(node, &format!("spec.nodes[{index}]"));
            findings.stall(problem.reason(), message.clone());
            node_statuses.insert(node.clone(), node_status(node, "Failed", false, None, Some(message)));
        } else {
            nodes.push(node.clone());
        }
    }

    // Reference §7 and §6 steps 2.2 / 3: one certificate for every master node, with the client
    // access point name in its SANs (pitfall 1). Renewal and TLS Secret changes rotate it in phases.
    let workers_of_group: BTreeSet<String> = worker_nodes
        .values()
        .filter(|r| r.group.as_deref() == Some(key.as_str()) && !r.deleting)
        .flat_map(|r| {
            r.nodes.iter().flatten().filter(|n| pass.conflicts.get(&Owner::Worker(r.key.clone()), n).is_none())
        })
        .cloned()
        .collect();
    let ag_key = availability_group.map(|ag| object_key(&ag.metadata));
    let certificate = plan_master_certificate(
        pass,
        group,
        &key,
        &nodes,
        &workers_of_group,
        ag_key.as_deref(),
        &previous,
        &mut findings,
    );
    let (layout, certificate_status, rotation) = certificate;
    let pauses_workers = rotation.as_ref().is_some_and(|r| master_rotation_pauses_workers(r.phase));

    // Per-node items.
    let possible_owners: Vec<String> = {
        let mut owners: Vec<String> =
            nodes.iter().filter_map(|n| pass.inventory.computer_name(n).map(str::to_string)).collect();
        owners.sort();
        owners.dedup();
        owners
    };
    for (position, node) in nodes.iter().enumerate() {
        let mut items = HostConfigSpec { sql_version: spec.sql_version, ..Default::default() };
        let port = spec.master_service.port;
        let ip_port = format!("0.0.0.0:{port}");
        let mut restart_on_change_of = vec![];
        if let Some(layout) = &layout {
            // Reference §6 step 3: the same certificate WITH its private key in LocalMachine\Root.
            for material in &layout.trusted {
                items.certificates.push(material.with_key(
                    cert_item::master_with_key(&material.thumbprint),
                    CertStore::Root,
                    vec![],
                ));
            }
            for thumbprint in &layout.removed {
                items.certificates.push(absent(cert_item::master_with_key(thumbprint), CertStore::Root, thumbprint));
            }
            // Reference §7 / pitfall 5: every master node binds the port to the shared certificate.
            items.http_ssl_bindings.push(HttpSslBinding {
                ip_port: ip_port.clone(),
                thumbprint: layout.served.thumbprint.clone(),
                cert_store: CertStore::Root,
                app_id: None,
            });
            // Reference §6 step 5: MasterSettings.config points at the listener.
            if let Some(sql_server_name) = &sql_server_name {
                items.master_settings = Some(MasterSettings {
                    sql_server_name: sql_server_name.clone(),
                    ssl_cert_thumbprint: layout.served.thumbprint.clone(),
                    port_number: port,
                });
                restart_on_change_of.push(item_name::MASTER_SETTINGS.to_string());
            }
            restart_on_change_of.push(item_name::certificate(&cert_item::master_with_key(&layout.served.thumbprint)));
            restart_on_change_of.push(item_name::http_ssl_binding(&ip_port));
        }
        // Reference §6 step 7: the cluster starts the service where the role is online; a role
        // created by hand keeps the start type its creator chose.
        items.services.push(HostService {
            role: ServiceRole::ScaleOutMaster,
            state: ServiceRunState::ClusterManaged,
            start_type: spec.cluster_role.manage.then_some(ServiceStartType::Manual),
            logon: Some(logon.clone()),
            restart_on_change_of,
            restart_token: None,
        });
        // Reference §6 step 7 / §11: the Generic Service role, created from one node only.
        items.cluster_role = Some(ClusterRole {
            name: network_name.clone(),
            service: ServiceRole::ScaleOutMaster,
            create: spec.cluster_role.manage && position == 0 && possible_owners.len() == nodes.len(),
            static_addresses: spec.cluster_role.static_addresses.clone(),
            ignore_networks: spec.cluster_role.ignore_networks.clone(),
            possible_owners: possible_owners.clone(),
            cluster_name: spec.cluster_role.cluster_name.clone(),
        });
        // Pitfall 3: non-self-signed certificates in Root break worker client authentication.
        if spec.disable_trusted_issuer_list {
            items.registry_values.push(RegistryValue {
                name: "schannel-send-trusted-issuer-list".into(),
                key: r"SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL".into(),
                value_name: Some("SendTrustedIssuerList".into()),
                type_: RegistryValueType::DWord,
                data: "0".into(),
            });
        }
        // Reference §4 "SSIS in a cluster": the legacy service on every node, listing every replica.
        if let Some(legacy) = &spec.legacy_service {
            let mut folders: Vec<LegacyFolder> = Vec::new();
            if legacy.include_all_replicas {
                for replica in availability_group.map(|ag| ag.spec.replicas.as_slice()).unwrap_or_default() {
                    folders.push(LegacyFolder {
                        name: format!("MSDB-{}", replica.name.replace('\\', "-")),
                        server_name: Some(replica.name.clone()),
                        store_path: None,
                    });
                }
            }
            folders.extend(legacy.additional_folders.iter().cloned());
            // `folders` is a list-map keyed by name: the API server refuses a HostConfig that
            // repeats one. Replica names `A\B` and `A-B` both give `MSDB-A-B`; keep the first.
            let mut names = BTreeSet::new();
            folders.retain(|folder| {
                let first = names.insert(folder.name.clone());
                if !first {
                    findings.stall(
                        "LegacyFolderNameCollision",
                        format!(
                            "spec.legacyService: two package-store folders would be named {}; rename a replica or an additionalFolders entry so every folder name is distinct",
                            folder.name
                        ),
                    );
                }
                first
            });
            items.legacy_service_config = Some(LegacyServiceConfig {
                config_file_path: None,
                stop_executing_packages_on_shutdown: legacy.stop_executing_packages_on_shutdown,
                folders,
                registry_pointer: RegistryPointerMode::Auto,
            });
            items.services.push(HostService {
                role: ServiceRole::LegacySsisService,
                state: ServiceRunState::Running,
                start_type: None,
                logon: None,
                restart_on_change_of: vec![item_name::LEGACY_SERVICE_CONFIG.to_string()],
                restart_token: None,
            });
        }

        let status = observe_master_node(pass, node, &items, layout.is_some());
        if status.phase != "Ready" {
            let message = status.message.clone().unwrap_or_default();
            findings.progress(
                if status.phase == "Unreachable" { "AgentNotReporting" } else { "ApplyingHostConfig" },
                message,
            );
        }
        node_statuses.insert(node.clone(), status);
        pass.contributions.push(Contribution {
            node: node.clone(),
            contributor: Contributor {
                kind: KIND.into(),
                namespace: namespace.clone(),
                name: group.metadata.name.clone().unwrap_or_default(),
            },
            version: spec.sql_version,
            items,
        });
    }
    if nodes.iter().all(|n| pass.inventory.computer_name(n).is_none()) && !nodes.is_empty() {
        findings.progress(
            "WaitingForAgents",
            "no master node's agent has reported its computer name yet; the cluster role's possible owners are set once they do",
        );
    }

    // SQL side: reference §6 step 8, §5.3 [INFER] (domain account login), pitfall 8.
    let catalog_ready = availability_group.is_some_and(|ag| plan_master_sql(pass, group, ag, &endpoint, &mut findings));
    findings.detail(
        "CatalogReady",
        catalog_ready,
        if catalog_ready { "MasterRegistered" } else { "CatalogNotReady" },
        format!("the catalog's master address is {endpoint} and the master account has a login on every replica"),
    );
    match (&certificate_status, &rotation) {
        (Some(certificate), None) => findings.detail(
            "CertificateReady",
            true,
            "CertificateServed",
            format!("serving {} until {}", certificate.thumbprint, certificate.not_after),
        ),
        (_, Some(rotation)) => {
            findings.detail("CertificateReady", false, "Rotating", format!("rotation phase {:?}", rotation.phase))
        }
        (None, None) => findings.detail("CertificateReady", false, "Issuing", "the master certificate is being issued"),
    }
    if !spec.cluster_role.manage
        && !nodes.is_empty()
        && nodes.iter().all(|n| pass.inventory.cluster_role(n).is_some_and(|r| !r.exists))
    {
        findings.stall(
            "ClusterRoleMissing",
            format!(
                "spec.clusterRole.manage is false but no master node sees the cluster role {network_name}; create the Generic Service role (Add-ClusterGenericServiceRole -ServiceName {} -Name {network_name}) or set spec.clusterRole.manage: true",
                spec.sql_version.master_service_name()
            ),
        );
    }
    let role_online = nodes.iter().any(|n| {
        pass.inventory
            .cluster_role(n)
            .is_some_and(|r| r.exists && r.state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("Online")))
    });
    findings.detail(
        "ClusterRoleReady",
        role_online,
        if role_online { "RoleOnline" } else { "RoleNotOnline" },
        format!("cluster role {network_name} (Generic Service {})", spec.sql_version.master_service_name()),
    );

    // Active node: the owner of the cluster role as any master node sees it.
    let active_node = nodes.iter().find_map(|n| {
        let role = pass.inventory.cluster_role(n)?;
        let owner = role.owner_node.as_deref()?;
        Some(pass.inventory.node_by_computer_name(owner).map(str::to_string).unwrap_or_else(|| owner.to_string()))
    });
    if spec.cluster_role.manage
        && !nodes.is_empty()
        && nodes.iter().all(|n| pass.inventory.cluster_role(n).is_none_or(|r| !r.exists))
    {
        findings.progress(
            "ClusterRoleMissing",
            format!("waiting for the cluster role {network_name} to be created on {}", nodes[0]),
        );
    }

    let status = ScaleOutMasterGroupStatus {
        observed_generation: group.metadata.generation,
        conditions: findings.conditions(
            &format!("every master node serves {endpoint} with the shared certificate"),
            group.metadata.generation,
            &previous.conditions,
            input.now,
        ),
        master_address: Some(endpoint.clone()),
        sql_server_name: sql_server_name.clone(),
        active_node,
        certificate: certificate_status,
        rotation,
        nodes: spec.nodes.iter().filter_map(|n| node_statuses.get(n).cloned()).fold(Vec::new(), |mut all, s| {
            if !all.iter().any(|x: &MasterNodeStatus| x.name == s.name) {
                all.push(s);
            }
            all
        }),
    };
    pass.output.master_group_statuses.insert(key.clone(), status);

    MasterGroupPlan {
        key,
        version: spec.sql_version,
        endpoint,
        availability_group: availability_group.map(|ag| object_key(&ag.metadata)),
        nodes,
        certificate: layout,
        pauses_workers,
    }
}

fn node_status(
    name: &str,
    phase: &str,
    ready: bool,
    service_state: Option<String>,
    message: Option<String>,
) -> MasterNodeStatus {
    MasterNodeStatus { name: name.to_string(), phase: phase.to_string(), ready, service_state, message }
}

/// Phase of one master node from its agent's report.
fn observe_master_node(pass: &Pass, node: &str, items: &HostConfigSpec, certificate_known: bool) -> MasterNodeStatus {
    let service_state = pass.inventory.service_state(node, ServiceRole::ScaleOutMaster);
    if let Some(problem) = pass.inventory.agent_problem(node) {
        return node_status(node, "Unreachable", false, service_state, Some(problem.describe(node)));
    }
    if pass.inventory.service_installed(node, ServiceRole::ScaleOutMaster) == Some(false) {
        return node_status(
            node,
            "Failed",
            false,
            service_state,
            Some(format!(
                "node {node}: the Scale Out Master service is not installed; install it with SQL Server setup (feature IS_Master, reference §6 step 3)"
            )),
        );
    }
    let failed = pass.inventory.failed_items(node, |_| true);
    if !failed.is_empty() {
        return node_status(node, "Failed", false, service_state, Some(format!("node {node}: {}", failed.join("; "))));
    }
    let pending = pending_items(pass, node, items);
    if !certificate_known {
        return node_status(
            node,
            "Applying",
            false,
            service_state,
            Some(format!("node {node}: waiting for the master certificate")),
        );
    }
    if !pending.is_empty() {
        return node_status(
            node,
            "Applying",
            false,
            service_state,
            Some(format!("node {node}: applying {}", pending.join(", "))),
        );
    }
    node_status(node, "Ready", true, service_state, None)
}

/// Items of `items` the node's agent has not reported Applied for the current spec.
pub(crate) fn pending_items(pass: &Pass, node: &str, items: &HostConfigSpec) -> Vec<String> {
    let inventory = &pass.inventory;
    let mut pending = Vec::new();
    for c in &items.certificates {
        if !inventory.certificate_applied(node, c.store, &c.thumbprint, c.ensure) {
            pending.push(item_name::certificate(&c.name));
        }
    }
    if let Some(settings) = &items.master_settings
        && !inventory.applied(node, item_name::MASTER_SETTINGS, |s| s.master_settings.as_ref() == Some(settings))
    {
        pending.push(item_name::MASTER_SETTINGS.into());
    }
    if let Some(settings) = &items.worker_settings
        && !inventory.applied(node, item_name::WORKER_SETTINGS, |s| s.worker_settings.as_ref() == Some(settings))
    {
        pending.push(item_name::WORKER_SETTINGS.into());
    }
    if let Some(legacy) = &items.legacy_service_config
        && !inventory
            .applied(node, item_name::LEGACY_SERVICE_CONFIG, |s| s.legacy_service_config.as_ref() == Some(legacy))
    {
        pending.push(item_name::LEGACY_SERVICE_CONFIG.into());
    }
    for value in &items.registry_values {
        let name = item_name::registry_value(&value.name);
        if !inventory.applied(node, &name, |s| s.registry_values.contains(value)) {
            pending.push(name);
        }
    }
    for service in &items.services {
        let name = item_name::service(service.role);
        let same = |s: &HostConfigSpec| {
            s.services.iter().any(|x| {
                x.role == service.role
                    && x.state == service.state
                    && x.start_type == service.start_type
                    && x.logon == service.logon
            })
        };
        if !inventory.applied(node, &name, same) {
            pending.push(name);
        }
    }
    for binding in &items.http_ssl_bindings {
        let name = item_name::http_ssl_binding(&binding.ip_port);
        if !inventory.applied(node, &name, |s| s.http_ssl_bindings.contains(binding)) {
            pending.push(name);
        }
    }
    if let Some(role) = &items.cluster_role
        && !inventory.applied(node, &item_name::cluster_role(&role.name), |s| {
            s.cluster_role.as_ref().is_some_and(|r| r.name == role.name && r.create == role.create)
        })
    {
        pending.push(item_name::cluster_role(&role.name));
    }
    pending
}

type CertificateOutcome =
    (Option<MasterCertificateLayout>, Option<CertificateStatus>, Option<ssis_crds::RotationStatus>);

/// Reference §7 "Master cert change": issue, then TrustingNew → DisablingWorkers →
/// SwitchingMasters → SwitchingWorkers → RemovingOld → Idle, one phase per pass, each only after
/// every involved HostConfig (and, for DisablingWorkers, the SQL observation) reports the previous
/// phase applied. A worker pins one master thumbprint, so the group's workers are disabled in
/// SSISDB before the masters switch and enabled again only once they pin the new certificate.
#[allow(clippy::too_many_arguments)]
fn plan_master_certificate(
    pass: &mut Pass,
    group: &ScaleOutMasterGroup,
    key: &str,
    master_nodes: &[String],
    worker_nodes: &BTreeSet<String>,
    ag_key: Option<&str>,
    previous: &ScaleOutMasterGroupStatus,
    findings: &mut Findings,
) -> CertificateOutcome {
    let input = pass.input;
    let spec = &group.spec;
    let namespace = namespace_of(&group.metadata);
    let base_id = format!("master/{key}");
    let dns_name = spec.master_service.dns_name.clone();
    let mut required = vec![dns_name.clone()];
    if let Some(network_name) = dns_name.split('.').next().filter(|n| *n != dns_name) {
        required.push(network_name.to_string());
    }
    let current_status = previous.certificate.clone().filter(|c| c.host_secret_name.is_some());
    let current = current_status.as_ref().and_then(|c| {
        Some(HostMaterial { thumbprint: c.thumbprint.clone(), secret_name: c.host_secret_name.clone()? })
    });

    // A rotation in progress continues to its end before another one starts.
    if let (Some(current), Some(rotation)) =
        (&current, previous.rotation.as_ref().filter(|r| r.phase != RotationPhase::Idle))
        && let Some(target) = rotation_target(rotation)
    {
        let ip_port = format!("0.0.0.0:{}", spec.master_service.port);
        let mut waiting =
            master_phase_waiting_on(pass, rotation.phase, current, &target, master_nodes, worker_nodes, &ip_port);
        if rotation.phase == RotationPhase::DisablingWorkers {
            waiting.extend(disable_group_workers(pass, ag_key, worker_nodes));
        }
        if !waiting.is_empty() {
            findings.progress(
                "RotatingCertificate",
                format!(
                    "master certificate rotation {:?}: waiting for {}{}",
                    rotation.phase,
                    waiting.join(", "),
                    if master_rotation_pauses_workers(rotation.phase) {
                        " (the group's workers stay disabled in SSISDB until they pin the new certificate)"
                    } else {
                        ""
                    }
                ),
            );
            let layout = master_layout(rotation.phase, current, Some(&target));
            return (Some(layout), current_status, Some(rotation.clone()));
        }
        let next = next_master_phase(rotation.phase);
        pass.event(
            KIND,
            key,
            false,
            "CertificateRotation",
            format!("master certificate rotation: {:?} → {next:?}", rotation.phase),
        );
        if next == RotationPhase::Idle {
            let issued = pass.issued.get(&target.thumbprint);
            let status = CertificateStatus {
                thumbprint: target.thumbprint.clone(),
                not_after: rotation.to_not_after.clone().unwrap_or_default(),
                dns_names: issued.map(|i| i.dns_names.clone()).unwrap_or_else(|| required.clone()),
                host_secret_name: Some(target.secret_name.clone()),
            };
            return (Some(master_layout(RotationPhase::Idle, &target, None)), Some(status), None);
        }
        findings.progress("RotatingCertificate", format!("master certificate rotation advanced to {next:?}"));
        if next == RotationPhase::DisablingWorkers {
            // Reference §7 "Master cert change": take the workers out of service in the same
            // pass; the masters switch only once the observation shows none of them enabled.
            let disabling = disable_group_workers(pass, ag_key, worker_nodes);
            pass.event(
                KIND,
                key,
                false,
                "WorkersPaused",
                format!(
                    "disabling this group's workers in SSISDB until they pin the new master certificate ({} to disable)",
                    disabling.len()
                ),
            );
        } else if rotation.phase == RotationPhase::SwitchingWorkers {
            pass.event(
                KIND,
                key,
                false,
                "WorkersResumed",
                "every worker pins the new master certificate; workers with spec.enabled are enabled again".into(),
            );
        }
        let rotation = ssis_crds::RotationStatus { phase: next, ..rotation.clone() };
        return (Some(master_layout(next, current, Some(&target))), current_status, Some(rotation));
    }

    let current_names: Vec<String> = current_status.as_ref().map(|c| c.dns_names.clone()).unwrap_or_default();
    let wanted = wanted_certificate(
        input,
        &base_id,
        namespace,
        &spec.certificate,
        &dns_name,
        &required,
        current.as_ref().map(|c| {
            (c.thumbprint.as_str(), current_status.as_ref().map(|s| s.not_after.as_str()), current_names.as_slice())
        }),
    );
    let wanted = match wanted {
        Ok(wanted) => wanted,
        Err((reason, message)) => {
            findings.stall(&reason, message);
            return (current.as_ref().map(|c| master_layout(RotationPhase::Idle, c, None)), current_status, None);
        }
    };
    let wanted = wanted.filter(|w| current.as_ref().is_none_or(|c| !super::certificates::is_current(input, &w.id, c)));
    let Some(wanted) = wanted else {
        return (current.as_ref().map(|c| master_layout(RotationPhase::Idle, c, None)), current_status, None);
    };
    let Some(issued) = input.issued_certificates.get(&wanted.id) else {
        if let Some(request) = request_unless_issued(input, &wanted) {
            pass.output.certificate_requests.push(request);
        }
        findings.progress(
            if current.is_some() { "RenewingCertificate" } else { "IssuingCertificate" },
            format!("waiting for the master certificate {} to be issued", wanted.id),
        );
        return (current.as_ref().map(|c| master_layout(RotationPhase::Idle, c, None)), current_status, None);
    };
    let issued_status = CertificateStatus {
        thumbprint: issued.thumbprint.clone(),
        not_after: issued.not_after.to_string(),
        dns_names: issued.dns_names.clone(),
        host_secret_name: Some(issued.secret_name.clone()),
    };
    match &current {
        // First certificate: nothing trusts an older one, so it is used directly.
        None => (
            Some(master_layout(RotationPhase::Idle, &HostMaterial::from_issued(issued), None)),
            Some(issued_status),
            None,
        ),
        // Same certificate in a new Secret (e.g. the TLS Secret was re-applied): adopt it.
        Some(c) if c.thumbprint.eq_ignore_ascii_case(&issued.thumbprint) => (
            Some(master_layout(RotationPhase::Idle, &HostMaterial::from_issued(issued), None)),
            Some(issued_status),
            None,
        ),
        Some(c) => {
            let rotation = start_rotation(input, &c.thumbprint, issued);
            pass.event(
                KIND,
                key,
                false,
                "CertificateRotation",
                format!("rotating the master certificate from {} to {}", c.thumbprint, issued.thumbprint),
            );
            findings.progress("RotatingCertificate", "master certificate rotation started (TrustingNew)");
            let layout = master_layout(RotationPhase::TrustingNew, c, Some(&HostMaterial::from_issued(issued)));
            (Some(layout), current_status, Some(rotation))
        }
    }
}

/// Reference §7 "Master cert change" and pitfall 14: `catalog.disable_worker_agent` for every
/// worker of the group that is registered and enabled in `catalog.worker_agents`; returns what is
/// still to be observed disabled (empty once the observation shows none of them enabled).
fn disable_group_workers(pass: &mut Pass, ag_key: Option<&str>, worker_nodes: &BTreeSet<String>) -> Vec<String> {
    let Some(ag_key) = ag_key else {
        return vec!["the SsisdbAvailabilityGroup to disable the workers in".into()];
    };
    let Some(observation) = pass.input.catalogs.get(ag_key) else {
        return vec![format!("the SQL observation of {ag_key} to disable the workers")];
    };
    let (Some(primary), Some(ssisdb)) = (observation.primary.clone(), observation.ssisdb.as_ref()) else {
        return vec![format!("a readable primary of {ag_key} to disable the workers")];
    };
    let mut waiting = Vec::new();
    let mut actions = Vec::new();
    for node in worker_nodes {
        let Some(agent_id) = pass.inventory.worker_agent_id(node) else { continue };
        let enabled =
            ssisdb.worker_agents.iter().any(|r| r.worker_agent_id.eq_ignore_ascii_case(&agent_id) && r.is_enabled);
        if enabled {
            waiting.push(format!("worker {agent_id} on {node} to be disabled in SSISDB"));
            actions.push(SqlAction::DisableWorkerAgent { replica: primary.clone(), worker_agent_id: agent_id });
        }
    }
    for action in actions {
        pass.sql(ag_key, SqlStage::WorkerEnable, action);
    }
    waiting
}

/// Nodes (with the item) that have not yet applied what `phase` requires.
fn master_phase_waiting_on(
    pass: &Pass,
    phase: RotationPhase,
    old: &HostMaterial,
    new: &HostMaterial,
    master_nodes: &[String],
    worker_nodes: &BTreeSet<String>,
    ip_port: &str,
) -> Vec<String> {
    let inventory = &pass.inventory;
    let mut waiting = Vec::new();
    let serves_new = |node: &str| {
        inventory.applied(node, item_name::MASTER_SETTINGS, |s| {
            s.master_settings.as_ref().is_some_and(|m| m.ssl_cert_thumbprint == new.thumbprint)
        }) && inventory.applied(node, &item_name::http_ssl_binding(ip_port), |s| {
            s.http_ssl_bindings.iter().any(|b| b.ip_port == ip_port && b.thumbprint == new.thumbprint)
        })
    };
    match phase {
        // DisablingWorkers waits on SQL, not on HostConfigs (see `disable_group_workers`).
        RotationPhase::Idle | RotationPhase::DisablingWorkers => {}
        RotationPhase::TrustingNew => {
            for node in master_nodes {
                if !inventory.certificate_applied(node, CertStore::Root, &new.thumbprint, Ensure::Present) {
                    waiting.push(format!("master node {node} to import the new certificate"));
                }
            }
            for node in worker_nodes {
                if !inventory.certificate_applied(node, CertStore::Root, &new.thumbprint, Ensure::Present) {
                    waiting.push(format!("worker node {node} to trust the new certificate"));
                }
            }
        }
        RotationPhase::SwitchingMasters => {
            for node in master_nodes {
                if !serves_new(node) {
                    waiting.push(format!("master node {node} to serve the new certificate"));
                }
            }
        }
        RotationPhase::SwitchingWorkers => {
            for node in worker_nodes {
                if !inventory.applied(node, item_name::WORKER_SETTINGS, |s| {
                    s.worker_settings.as_ref().is_some_and(|w| w.master_https_cert_thumbprint == new.thumbprint)
                }) {
                    waiting.push(format!("worker node {node} to switch MasterHttpsCertThumbprint"));
                }
            }
        }
        RotationPhase::RemovingOld => {
            for node in master_nodes.iter().chain(worker_nodes) {
                if !inventory.certificate_applied(node, CertStore::Root, &old.thumbprint, Ensure::Absent) {
                    waiting.push(format!("node {node} to remove the old certificate"));
                }
            }
        }
    }
    waiting
}

/// Reference §6 step 8 (master address), §5.3 [INFER] (login + ssis_admin for the domain
/// account on every replica, pitfall 8).
fn plan_master_sql(
    pass: &mut Pass,
    group: &ScaleOutMasterGroup,
    ag: &SsisdbAvailabilityGroup,
    endpoint: &str,
    findings: &mut Findings,
) -> bool {
    let ag_key = object_key(&ag.metadata);
    let Some(observation) = pass.input.catalogs.get(&ag_key) else {
        findings.progress("WaitingForCatalog", format!("waiting for the SQL observation of {ag_key}"));
        return false;
    };
    let (Some(primary), Some(ssisdb)) = (observation.primary.clone(), observation.ssisdb.as_ref()) else {
        findings.progress("WaitingForCatalog", format!("{ag_key} has no readable primary yet"));
        return false;
    };
    let mut ready = true;
    let account = &group.spec.service_account.username;
    for replica in observation.replicas.iter().filter(|r| r.reachable) {
        if !replica.master_account_logins.iter().any(|a| a.eq_ignore_ascii_case(account)) {
            ready = false;
            pass.sql(
                &ag_key,
                SqlStage::MasterAccount,
                SqlAction::CreateWindowsLogin { replica: replica.name.clone(), account: account.clone() },
            );
        }
    }
    if !ssisdb.master_account_users.iter().any(|a| a.eq_ignore_ascii_case(account)) {
        ready = false;
        pass.sql(
            &ag_key,
            SqlStage::MasterAccount,
            SqlAction::GrantSsisAdmin { replica: primary.clone(), account: account.clone() },
        );
    }
    if ssisdb.master_properties.get("MASTER_ADDRESS").map(String::as_str) != Some(endpoint) {
        pass.sql(
            &ag_key,
            SqlStage::MasterAddress,
            SqlAction::UpdateMasterAddress { replica: primary, address: endpoint.to_string() },
        );
        findings.progress("UpdatingMasterAddress", format!("setting the catalog's master address to {endpoint}"));
        ready = false;
    }
    ready
}
