//! Fixtures for the planner tests: the example topology (an AG with two replicas, a two-node
//! master group on SQL 2022, a single worker), and a tiny world that feeds the plan back the way
//! the controller and the agents would, so multi-pass procedures can be stepped.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ObjectMeta;
use ssis_crds::*;
use ssis_operator::catalog::{CatalogObservation, ReplicaObservation, SsisdbObservation, WorkerAgentRow};
use ssis_operator::plan::inventory::item_name;
use ssis_operator::plan::{IssuedCertificate, NodeInfo, PlanInput, PlanOutput, SecretMeta, plan};

pub const NS: &str = "ssis";
pub const AG_KEY: &str = "ssis/ssisdb";
pub const GROUP_KEY: &str = "ssis/masters";
pub const SID: &str = "0x0123456789ABCDEF";

pub fn now() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("valid timestamp")
}

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), generation: Some(1), ..Default::default() }
}

fn key_ref(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef { name: name.into(), key: key.into() }
}

pub fn availability_group() -> SsisdbAvailabilityGroup {
    SsisdbAvailabilityGroup {
        metadata: meta("ssisdb"),
        spec: SsisdbAvailabilityGroupSpec {
            availability_group_name: "AG_SSIS".into(),
            database_name: "SSISDB".into(),
            replicas: vec![
                AvailabilityReplica {
                    name: "SQL1".into(),
                    host: "sql1.corp.example.com".into(),
                    port: 1433,
                    node_name: Some("sql-1".into()),
                },
                AvailabilityReplica {
                    name: "SQL2".into(),
                    host: "sql2.corp.example.com".into(),
                    port: 1433,
                    node_name: Some("sql-2".into()),
                },
            ],
            listener: ListenerSpec {
                name: "agl-ssis".into(),
                dns_domain: Some("corp.example.com".into()),
                port: 1433,
                create: None,
            },
            admin_credentials: SqlCredentials {
                secret: SecretRef { name: "sql-admin".into() },
                username_key: "username".into(),
                password_key: "password".into(),
            },
            tls: Default::default(),
            catalog_password_secret_ref: key_ref("ssisdb-catalog", "password"),
            logging_login: LoggingLoginSpec { password_secret_ref: key_ref("ssis-logging", "password") },
            enable_always_on_support: true,
        },
        status: None,
    }
}

pub fn master_group() -> ScaleOutMasterGroup {
    ScaleOutMasterGroup {
        metadata: meta("masters"),
        spec: ScaleOutMasterGroupSpec {
            sql_version: SqlVersion::V160,
            availability_group_ref: LocalObjectRef { name: "ssisdb".into() },
            master_service: MasterServiceSpec { dns_name: "ssis-master.corp.example.com".into(), port: 8391 },
            nodes: vec!["sql-1".into(), "sql-2".into()],
            certificate: CertificateSource { secret_ref: None, generate: Some(Default::default()) },
            service_account: WindowsAccount {
                username: r"CORP\svc-ssis-master".into(),
                password_secret_ref: key_ref("master-account", "password"),
            },
            cluster_role: Default::default(),
            legacy_service: None,
            disable_trusted_issuer_list: false,
        },
        status: None,
    }
}

pub fn worker(name: &str, node: &str) -> ScaleOutWorker {
    ScaleOutWorker {
        metadata: meta(name),
        spec: ScaleOutWorkerSpec {
            master_group_ref: LocalObjectRef { name: "masters".into() },
            node_name: Some(node.into()),
            node_selector: None,
            enabled: true,
            display_name: Some("Worker {node}".into()),
            description: None,
            tags: vec![],
            certificate: CertificateSource { secret_ref: None, generate: Some(Default::default()) },
            service_account: None,
        },
        status: None,
    }
}

pub fn pool(name: &str, label: (&str, &str)) -> ScaleOutWorker {
    let mut pool = worker(name, "unused");
    pool.spec.node_name = None;
    pool.spec.node_selector = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some(BTreeMap::from([(label.0.to_string(), label.1.to_string())])),
        match_expressions: None,
    });
    pool
}

pub fn windows_node(name: &str) -> NodeInfo {
    NodeInfo { name: name.into(), labels: BTreeMap::new(), windows: true }
}

pub fn secrets() -> BTreeMap<String, SecretMeta> {
    let secret = |keys: &[&str], fingerprint: &str| SecretMeta {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        fingerprint: fingerprint.into(),
    };
    BTreeMap::from([
        (format!("{NS}/sql-admin"), secret(&["username", "password"], "f-admin")),
        (format!("{NS}/ssisdb-catalog"), secret(&["password"], "f-catalog")),
        (format!("{NS}/ssis-logging"), secret(&["password"], "f-logging-1")),
        (format!("{NS}/master-account"), secret(&["password"], "f-master")),
    ])
}

/// The example topology: AG, two-node master group, one worker on `wk-1`.
pub fn input() -> PlanInput {
    PlanInput {
        now: now(),
        operator_namespace: "ssis-system".into(),
        availability_groups: vec![availability_group()],
        master_groups: vec![master_group()],
        workers: vec![worker("wk-1", "wk-1")],
        nodes: vec![windows_node("sql-1"), windows_node("sql-2"), windows_node("wk-1")],
        secrets: secrets(),
        ..Default::default()
    }
}

pub fn replica(name: &str, role: &str) -> ReplicaObservation {
    ReplicaObservation {
        name: name.into(),
        reachable: true,
        error: None,
        role: role.into(),
        synchronization_health: "HEALTHY".into(),
        sql_auth_enabled: true,
        master_key_password_stored: true,
        logging_login_sid: Some(SID.into()),
        logging_login_password_matches: true,
        master_account_logins: vec![r"CORP\svc-ssis-master".into()],
    }
}

/// Everything already prepared: the converged SQL side with SQL1 primary.
pub fn converged_observation() -> CatalogObservation {
    CatalogObservation {
        primary: Some("SQL1".into()),
        availability_group_exists: true,
        database_in_group: true,
        listener: Some(("agl-ssis".into(), Some(1433))),
        replicas: vec![replica("SQL1", "PRIMARY"), replica("SQL2", "SECONDARY")],
        ssisdb: Some(SsisdbObservation {
            master_key_encrypted_by_server: true,
            master_properties: BTreeMap::from([
                ("IS_SCALEOUT_ENABLED".into(), "TRUE".into()),
                ("CLUSTER_LOGDB_SERVER".into(), "agl-ssis.corp.example.com,1433".into()),
                ("MASTER_ADDRESS".into(), "https://ssis-master.corp.example.com:8391".into()),
            ]),
            worker_agents: vec![],
            always_on_replicas: vec!["SQL1".into(), "SQL2".into()],
            master_account_users: vec![r"CORP\svc-ssis-master".into()],
        }),
    }
}

pub fn agent_id(node: &str) -> String {
    format!("00000000-0000-0000-0000-{:0>12}", node.bytes().map(|b| format!("{:X}", b % 16)).collect::<String>())
        .to_ascii_uppercase()
}

pub fn registered_row(node: &str, enabled: bool) -> WorkerAgentRow {
    WorkerAgentRow {
        worker_agent_id: agent_id(node),
        is_enabled: enabled,
        display_name: Some(format!("Worker {node}")),
        description: None,
        machine_name: node.to_ascii_uppercase(),
        tags: None,
        last_online_time: Some(now().to_string()),
    }
}

/// Every item name of a spec, as the agent reports them.
pub fn item_names(spec: &HostConfigSpec) -> Vec<(ItemKind, String)> {
    let mut names = Vec::new();
    for c in &spec.certificates {
        names.push((ItemKind::Certificate, item_name::certificate(&c.name)));
    }
    if spec.master_settings.is_some() {
        names.push((ItemKind::MasterSettings, item_name::MASTER_SETTINGS.into()));
    }
    if spec.worker_settings.is_some() {
        names.push((ItemKind::WorkerSettings, item_name::WORKER_SETTINGS.into()));
    }
    if spec.legacy_service_config.is_some() {
        names.push((ItemKind::LegacyServiceConfig, item_name::LEGACY_SERVICE_CONFIG.into()));
    }
    for r in &spec.registry_values {
        names.push((ItemKind::RegistryValue, item_name::registry_value(&r.name)));
    }
    for s in &spec.services {
        names.push((ItemKind::Service, item_name::service(s.role)));
    }
    for b in &spec.http_ssl_bindings {
        names.push((ItemKind::HttpSslBinding, item_name::http_ssl_binding(&b.ip_port)));
    }
    if let Some(role) = &spec.cluster_role {
        names.push((ItemKind::ClusterRole, item_name::cluster_role(&role.name)));
    }
    names
}

/// A plan input evolving pass after pass: certificates issued, statuses written back, and every
/// agent (except `silent` ones) applying its HostConfig completely.
pub struct World {
    pub input: PlanInput,
    pub silent: BTreeSet<String>,
    pub issued: u32,
}

impl World {
    pub fn new(input: PlanInput) -> Self {
        Self { input, silent: BTreeSet::new(), issued: 0 }
    }

    /// One controller pass: plan, issue requested certificates, write statuses, let agents apply.
    pub fn pass(&mut self) -> PlanOutput {
        let output = plan(&self.input);
        for request in &output.certificate_requests {
            self.issued += 1;
            let thumbprint = format!("{:040X}", u128::from(self.issued) * 0x1111_1111);
            self.input.issued_certificates.insert(
                request.id.clone(),
                IssuedCertificate {
                    id: request.id.clone(),
                    secret_name: ssis_operator::plan::certificates::host_secret_name(&request.id),
                    thumbprint,
                    not_before: self.input.now,
                    not_after: self
                        .input
                        .now
                        .checked_add(jiff::SignedDuration::from_hours(24 * 365))
                        .expect("in range"),
                    dns_names: match &request.source {
                        ssis_operator::plan::CertificateRequestSource::Generate { dns_names, .. } => dns_names.clone(),
                        _ => vec![],
                    },
                    source_fingerprint: None,
                },
            );
        }
        self.write_statuses(&output);
        self.agents_apply(&output);
        output
    }

    pub fn write_statuses(&mut self, output: &PlanOutput) {
        for ag in &mut self.input.availability_groups {
            if let Some(s) = output.availability_group_statuses.get(&ssis_operator::plan::object_key(&ag.metadata)) {
                ag.status = Some(s.clone());
            }
        }
        for g in &mut self.input.master_groups {
            if let Some(s) = output.master_group_statuses.get(&ssis_operator::plan::object_key(&g.metadata)) {
                g.status = Some(s.clone());
            }
        }
        for w in &mut self.input.workers {
            if let Some(s) = output.worker_statuses.get(&ssis_operator::plan::object_key(&w.metadata)) {
                w.status = Some(s.clone());
            }
        }
    }

    pub fn agents_apply(&mut self, output: &PlanOutput) {
        for (node, spec) in &output.host_configs {
            let existing = self.input.host_configs.iter().position(|h| h.metadata.name.as_deref() == Some(node));
            let mut host = match existing {
                Some(i) => self.input.host_configs.remove(i),
                None => HostConfig::new(node, spec.clone()),
            };
            if existing.is_none() || host.spec != *spec {
                host.metadata.generation = Some(host.metadata.generation.unwrap_or(0) + 1);
                host.spec = spec.clone();
            }
            if !self.silent.contains(node) {
                host.status = Some(applied_status(node, &host, self.input.now));
            }
            self.input.host_configs.push(host);
        }
    }

    /// Run passes until nothing changes in the host configs and no SQL action or request remains.
    pub fn converge(&mut self, max: usize) -> PlanOutput {
        let mut last = self.pass();
        for _ in 0..max {
            let next = self.pass();
            let stable = next.host_configs == last.host_configs
                && next.certificate_requests.is_empty()
                && next.sql_actions.values().all(Vec::is_empty);
            last = next;
            if stable {
                break;
            }
        }
        last
    }
}

/// What a healthy agent reports after applying `host` completely.
pub fn applied_status(node: &str, host: &HostConfig, now: jiff::Timestamp) -> HostConfigStatus {
    let spec = &host.spec;
    let mut values = BTreeMap::new();
    if spec.worker_settings.is_some() {
        values.insert("AgentId".to_string(), agent_id(node));
    }
    HostConfigStatus {
        observed_generation: host.metadata.generation,
        agent: Some(AgentInfo {
            version: "test".into(),
            backend: "simulated".into(),
            computer_name: node.to_ascii_uppercase(),
            last_heartbeat_time: now.to_string(),
        }),
        items: item_names(spec)
            .into_iter()
            .map(|(kind, name)| ItemStatus { kind, name, state: ItemState::Applied, ..Default::default() })
            .collect(),
        services: spec
            .services
            .iter()
            .map(|s| ObservedService {
                role: s.role,
                name: s.role.service_name(spec.sql_version),
                installed: true,
                state: Some(if s.state == ServiceRunState::Stopped { "Stopped" } else { "Running" }.into()),
                start_type: s.start_type,
                logon_account: s.logon.as_ref().map(|l| l.username.clone()),
            })
            .collect(),
        worker_settings: spec.worker_settings.as_ref().map(|_| ObservedSettings { format: "Json".into(), values }),
        cluster_role: spec.cluster_role.as_ref().map(|r| ObservedClusterRole {
            name: r.name.clone(),
            exists: true,
            owner_node: Some("SQL-1".into()),
            state: Some("Online".into()),
        }),
        ..Default::default()
    }
}

pub fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions.iter().find(|c| c.type_ == type_).expect("condition present")
}
