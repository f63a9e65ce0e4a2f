//! Domain metrics: what a DBA watches (certificates, rotations, failovers, masters, workers, node
//! agents), exported by the operator with prometheus-client.
//!
//! [`snapshot::snapshot`] computes the figures of a pass purely; [`DomainMetrics`] keeps the last
//! snapshot of each scope and encodes it at scrape time, so the series of a deleted resource
//! disappear with the first pass that no longer sees it. Only "failovers observed" has memory
//! across passes. Labels are namespace and name (plus node, replica or phase where the figure is
//! per node, replica or phase) — never anything taken from a Secret.

pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

pub use snapshot::{ResourceId, Snapshot, snapshot};

use snapshot::ROTATION_PHASES;

type Labels = Vec<(&'static str, String)>;

/// Failovers counted for one availability group.
#[derive(Clone, Debug, Default)]
struct Failovers {
    /// The last primary this process saw (kept through a period without primary, so A → none → B
    /// counts once).
    last_primary: Option<String>,
    count: u64,
}

#[derive(Debug, Default)]
struct State {
    /// The last snapshot of each scope (`""` for the whole world).
    scopes: BTreeMap<String, Snapshot>,
    failovers: BTreeMap<ResourceId, Failovers>,
}

/// The domain metrics collector. Register it once; feed it with [`DomainMetrics::observe`].
#[derive(Debug, Default)]
pub struct DomainMetrics {
    state: Mutex<State>,
}

impl DomainMetrics {
    /// Replace the figures of the whole world with this pass's.
    pub fn observe(&self, snapshot: Snapshot) {
        self.observe_scope("", snapshot);
    }

    /// Replace the figures of one scope (e.g. one deployment, when passes reconcile deployments
    /// separately); the other scopes keep theirs.
    pub fn observe_scope(&self, scope: &str, snapshot: Snapshot) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for group in &snapshot.availability_groups {
            let counted = state
                .failovers
                .entry(group.id.clone())
                .or_insert_with(|| Failovers { last_primary: group.previous_primary.clone(), count: 0 });
            if let (Some(before), Some(now)) = (&counted.last_primary, &group.primary)
                && !before.eq_ignore_ascii_case(now)
            {
                counted.count += 1;
            }
            if group.primary.is_some() {
                counted.last_primary = group.primary.clone();
            }
        }
        state.scopes.insert(scope.to_string(), snapshot);
        state.forget_unseen();
    }

    /// Drop a scope and its series (its deployment was deleted).
    /// The scopes that have figures.
    pub fn scopes(&self) -> Vec<String> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).scopes.keys().cloned().collect()
    }

    pub fn forget_scope(&self, scope: &str) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.scopes.remove(scope);
        state.forget_unseen();
    }

    /// Failovers observed for an availability group since this process started.
    pub fn failovers(&self, namespace: &str, name: &str) -> u64 {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = ResourceId { namespace: namespace.into(), name: name.into() };
        state.failovers.get(&id).map(|f| f.count).unwrap_or(0)
    }

    /// The merged figures of every scope (nodes deduplicated by name).
    pub fn current(&self) -> Snapshot {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.merged()
    }

    /// The key figures in a few lines, one per resource and node (`simulate` prints them).
    pub fn summary(&self) -> Vec<String> {
        let snapshot = self.current();
        let now = snapshot.now;
        let ago = |t: Option<jiff::Timestamp>| {
            t.map(|t| format!("{} s ago", now.duration_since(t).as_secs())).unwrap_or_else(|| "never".into())
        };
        let days_left = |t: Option<jiff::Timestamp>| {
            t.map(|t| format!("{} days", t.duration_since(now).as_hours() / 24)).unwrap_or_else(|| "unknown".into())
        };
        let mut lines = Vec::new();
        for group in &snapshot.availability_groups {
            let count = |f: fn(&snapshot::ReplicaFigures) -> bool| group.replicas.iter().filter(|r| f(r)).count();
            let total = group.replicas.len();
            lines.push(format!(
                "SsisdbAvailabilityGroup {}: primary {}, failovers observed {}, replicas connected {}/{total}, catalog key ready {}/{total}, logging login ready {}/{total}",
                group.id.key(),
                group.primary.as_deref().unwrap_or("none"),
                self.failovers(&group.id.namespace, &group.id.name),
                count(|r| r.connected),
                count(|r| r.catalog_key_ready),
                count(|r| r.logging_login_ready),
            ));
        }
        for group in &snapshot.master_groups {
            lines.push(format!(
                "ScaleOutMasterGroup {}: active {}, nodes ready {}/{}, certificate expires in {}, rotation {:?}, master last online {}, workers online and enabled {}/{}",
                group.id.key(),
                group.active_node.as_deref().unwrap_or("none"),
                group.nodes_ready,
                group.nodes,
                days_left(group.certificate_expiry),
                group.rotation_phase,
                ago(group.last_online),
                group.workers_online_enabled,
                group.workers,
            ));
        }
        for worker in &snapshot.workers {
            lines.push(format!(
                "ScaleOutWorker {}: {} node(s): enrolled {}, registered {}, enabled {}, online {}; certificate expires in {}",
                worker.id.key(),
                worker.nodes,
                worker.enrolled,
                worker.registered,
                worker.enabled,
                worker.online,
                days_left(worker.certificate_expiry),
            ));
        }
        for node in &snapshot.nodes {
            lines.push(format!(
                "node {}: agent reported {}, drift repairs {}, failed items {}",
                node.node,
                ago(node.last_report),
                node.drift_repairs,
                node.items_in(ssis_crds::ItemState::Failed),
            ));
        }
        lines
    }
}

impl State {
    fn merged(&self) -> Snapshot {
        let mut merged = Snapshot::default();
        let mut nodes = BTreeSet::new();
        for snapshot in self.scopes.values() {
            merged.now = merged.now.max(snapshot.now);
            merged.availability_groups.extend(snapshot.availability_groups.iter().cloned());
            merged.master_groups.extend(snapshot.master_groups.iter().cloned());
            merged.workers.extend(snapshot.workers.iter().cloned());
            merged.nodes.extend(snapshot.nodes.iter().filter(|n| nodes.insert(n.node.clone())).cloned());
        }
        merged
    }

    fn forget_unseen(&mut self) {
        let seen: BTreeSet<ResourceId> =
            self.scopes.values().flat_map(|s| s.availability_groups.iter().map(|g| g.id.clone())).collect();
        self.failovers.retain(|id, _| seen.contains(id));
    }
}

fn id_labels(id: &ResourceId) -> Labels {
    vec![("namespace", id.namespace.clone()), ("name", id.name.clone())]
}

fn with(mut labels: Labels, key: &'static str, value: impl Into<String>) -> Labels {
    labels.push((key, value.into()));
    labels
}

fn seconds(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// One metric family: name, help, type and its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<(Labels, f64)>,
}

impl Family {
    fn gauge(name: &'static str, help: &'static str) -> Self {
        Self { name, help, counter: false, samples: vec![] }
    }

    fn counter(name: &'static str, help: &'static str) -> Self {
        Self { name, help, counter: true, samples: vec![] }
    }

    fn push(&mut self, labels: Labels, value: impl Into<f64>) {
        self.samples.push((labels, value.into()));
    }
}

/// Every family, in export order, with the samples of `snapshot`. Families without samples are
/// still described, so the exported names are known before the first pass.
fn families(snapshot: &Snapshot, failovers: &BTreeMap<ResourceId, Failovers>) -> Vec<Family> {
    let mut primary = Family::gauge(
        "ssis_availability_group_primary_info",
        "Current primary replica of the catalog database (value 1, label replica).",
    );
    let mut failover_count = Family::counter(
        "ssis_availability_group_failovers",
        "Changes of primary replica observed by this operator process.",
    );
    let mut last_failover = Family::gauge(
        "ssis_availability_group_last_failover_timestamp_seconds",
        "When a change of primary was last recorded in status (status.lastFailoverTime), Unix seconds.",
    );
    let mut replicas =
        Family::gauge("ssis_availability_group_replicas", "Replicas in the availability group's status.");
    let mut replicas_connected =
        Family::gauge("ssis_availability_group_replicas_connected", "Replicas the operator could connect to.");
    let mut replica_connected = Family::gauge(
        "ssis_availability_group_replica_connected",
        "1 when the operator could connect to the replica, else 0.",
    );
    let mut catalog_key = Family::gauge(
        "ssis_availability_group_replica_catalog_key_ready",
        "1 when the replica can open the SSISDB master key after a failover (pitfall 10), else 0.",
    );
    let mut logging_login = Family::gauge(
        "ssis_availability_group_replica_logging_login_ready",
        "1 when the logging login exists on the replica with the primary's SID and current password (pitfall 9), else 0.",
    );
    for group in &snapshot.availability_groups {
        let id = id_labels(&group.id);
        if let Some(replica) = &group.primary {
            primary.push(with(id.clone(), "replica", replica), 1.0);
        }
        let count = failovers.get(&group.id).map(|f| f.count).unwrap_or(0);
        failover_count.push(id.clone(), count as f64);
        if let Some(t) = group.last_failover {
            last_failover.push(id.clone(), seconds(t));
        }
        replicas.push(id.clone(), group.replicas.len() as f64);
        replicas_connected.push(id.clone(), group.replicas.iter().filter(|r| r.connected).count() as f64);
        for replica in &group.replicas {
            let labels = with(id.clone(), "replica", &replica.name);
            replica_connected.push(labels.clone(), flag(replica.connected) as f64);
            catalog_key.push(labels.clone(), flag(replica.catalog_key_ready) as f64);
            logging_login.push(labels, flag(replica.logging_login_ready) as f64);
        }
    }

    let mut cert_expiry = Family::gauge(
        "ssis_master_group_certificate_expiry_timestamp_seconds",
        "Expiry (notAfter) of the certificate the masters serve, Unix seconds.",
    );
    let mut cert_window = Family::gauge(
        "ssis_master_group_certificate_renewal_window_seconds",
        "How long before expiry a rotation is due: certificate.generate.renewBeforeDays, or 30 days for a certificate from a Secret.",
    );
    let mut phase = Family::gauge(
        "ssis_master_group_rotation_phase",
        "Master certificate rotation phase: 1 for the current phase, 0 for the others (Idle when none).",
    );
    let mut active = Family::gauge(
        "ssis_master_group_active_node_info",
        "Node owning the master cluster role (value 1, label node).",
    );
    let mut nodes = Family::gauge("ssis_master_group_nodes", "Master nodes in the spec.");
    let mut nodes_ready =
        Family::gauge("ssis_master_group_nodes_ready", "Master nodes whose agent reports every master item applied.");
    let mut last_online = Family::gauge(
        "ssis_master_group_last_online_timestamp_seconds",
        "LAST_ONLINE_TIME in catalog.master_properties (the master's heartbeat in SSISDB), Unix seconds.",
    );
    let mut workers =
        Family::gauge("ssis_master_group_workers", "Worker nodes of every ScaleOutWorker that references the group.");
    let mut workers_available = Family::gauge(
        "ssis_master_group_workers_online_enabled",
        "Worker nodes of the group that are registered, enabled and online: executions need at least one (pitfall 14).",
    );
    for group in &snapshot.master_groups {
        let id = id_labels(&group.id);
        if let Some(t) = group.certificate_expiry {
            cert_expiry.push(id.clone(), seconds(t));
        }
        cert_window.push(id.clone(), group.renewal_window.as_secs() as f64);
        for candidate in ROTATION_PHASES {
            let value = flag(candidate == group.rotation_phase) as f64;
            phase.push(with(id.clone(), "phase", format!("{candidate:?}")), value);
        }
        if let Some(node) = &group.active_node {
            active.push(with(id.clone(), "node", node), 1.0);
        }
        nodes.push(id.clone(), group.nodes);
        nodes_ready.push(id.clone(), group.nodes_ready);
        if let Some(t) = group.last_online {
            last_online.push(id.clone(), seconds(t));
        }
        workers.push(id.clone(), group.workers);
        workers_available.push(id, group.workers_online_enabled);
    }

    let mut worker_nodes =
        Family::gauge("ssis_worker_nodes", "Nodes the ScaleOutWorker enrolls (one, or every node of a pool).");
    let mut enrolled =
        Family::gauge("ssis_worker_nodes_enrolled", "Nodes in phase Ready: enrolled and in the desired enabled state.");
    let mut registered =
        Family::gauge("ssis_worker_nodes_registered", "Nodes whose worker is registered in catalog.worker_agents.");
    let mut enabled = Family::gauge("ssis_worker_nodes_enabled", "Nodes whose worker is enabled (IsEnabled).");
    let mut online =
        Family::gauge("ssis_worker_nodes_online", "Nodes whose worker's LastOnlineTime is at most 5 minutes old.");
    let mut worker_expiry = Family::gauge(
        "ssis_worker_certificate_expiry_timestamp_seconds",
        "The soonest expiry among the nodes' worker certificates, Unix seconds.",
    );
    let mut worker_window = Family::gauge(
        "ssis_worker_certificate_renewal_window_seconds",
        "How long before expiry a worker certificate rotation is due.",
    );
    let mut worker_rotations = Family::gauge(
        "ssis_worker_certificate_rotations_in_progress",
        "Nodes with a worker certificate rotation under way.",
    );
    let mut node_last_online = Family::gauge(
        "ssis_worker_node_last_online_timestamp_seconds",
        "LastOnlineTime of the node's worker in catalog.worker_agents, Unix seconds.",
    );
    let mut node_phase = Family::gauge(
        "ssis_worker_node_certificate_rotation_phase",
        "Phase of a worker certificate rotation in progress on the node (value 1; absent when none).",
    );
    for worker in &snapshot.workers {
        let id = id_labels(&worker.id);
        worker_nodes.push(id.clone(), worker.nodes);
        enrolled.push(id.clone(), worker.enrolled);
        registered.push(id.clone(), worker.registered);
        enabled.push(id.clone(), worker.enabled);
        online.push(id.clone(), worker.online);
        if let Some(t) = worker.certificate_expiry {
            worker_expiry.push(id.clone(), seconds(t));
        }
        worker_window.push(id.clone(), worker.renewal_window.as_secs() as f64);
        worker_rotations.push(id.clone(), worker.rotations_in_progress);
        for node in &worker.node_details {
            let labels = with(id.clone(), "node", &node.node);
            if let Some(t) = node.last_online {
                node_last_online.push(labels.clone(), seconds(t));
            }
            if let Some(current) = node.rotation_phase {
                node_phase.push(with(labels, "phase", format!("{current:?}")), 1.0);
            }
        }
    }

    let mut last_report = Family::gauge(
        "ssis_node_agent_last_report_timestamp_seconds",
        "The agent's last heartbeat in its HostConfig status (status.agent.lastHeartbeatTime), Unix seconds.",
    );
    let mut drift = Family::counter(
        "ssis_node_drift_repairs",
        "Drift repairs the node's agent recorded in its HostConfig status (status.drift.repairs).",
    );
    let mut items = Family::gauge("ssis_node_items", "HostConfig items by state (Applied, Pending, Failed, Refused).");
    for node in &snapshot.nodes {
        let labels: Labels = vec![("node", node.node.clone())];
        if let Some(t) = node.last_report {
            last_report.push(labels.clone(), seconds(t));
        }
        drift.push(labels.clone(), node.drift_repairs as f64);
        for (state, count) in &node.items {
            items.push(with(labels.clone(), "state", format!("{state:?}")), *count);
        }
    }

    vec![
        primary,
        failover_count,
        last_failover,
        replicas,
        replicas_connected,
        replica_connected,
        catalog_key,
        logging_login,
        cert_expiry,
        cert_window,
        phase,
        active,
        nodes,
        nodes_ready,
        last_online,
        workers,
        workers_available,
        worker_nodes,
        enrolled,
        registered,
        enabled,
        online,
        worker_expiry,
        worker_window,
        worker_rotations,
        node_last_online,
        node_phase,
        last_report,
        drift,
        items,
    ]
}

impl Collector for DomainMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (snapshot, failovers) = {
            let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (state.merged(), state.failovers.clone())
        };
        for family in families(&snapshot, &failovers) {
            let metric_type = if family.counter { MetricType::Counter } else { MetricType::Gauge };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                if family.counter {
                    ConstCounter::new(*value as u64).encode(sample)?;
                } else {
                    ConstGauge::new(*value).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}
