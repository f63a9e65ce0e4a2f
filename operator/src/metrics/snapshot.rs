//! The domain figures of one pass, computed purely from what the operator already holds after
//! planning: the custom resources (spec and stored status), the statuses the planner computed,
//! the HostConfig statuses the agents wrote, the observed SQL state and the clock. No IO.

use ssis_crds::{ItemState, RotationPhase, WorkerPhase};

use crate::plan::{ObjectKey, PlanInput, PlanOutput, namespace_of};

/// A worker counts as online while its `LastOnlineTime` is at most this old: five heartbeats at
/// the default `AgentHeartbeatInterval` of one minute (reference §3, §6 "LastOnlineTime fresh";
/// the threshold Scale Out Manager uses is not documented, §13).
pub const WORKER_ONLINE_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// Renewal window assumed for a certificate the operator does not renew itself (`secretRef`):
/// the default `renewBeforeDays` of generated certificates.
pub const DEFAULT_RENEWAL_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

/// Every rotation phase, in procedure order (a state set: one series per phase).
pub const ROTATION_PHASES: [RotationPhase; 6] = [
    RotationPhase::Idle,
    RotationPhase::TrustingNew,
    RotationPhase::DisablingWorkers,
    RotationPhase::SwitchingMasters,
    RotationPhase::SwitchingWorkers,
    RotationPhase::RemovingOld,
];

/// Every HostConfig item state.
pub const ITEM_STATES: [ItemState; 4] = [ItemState::Applied, ItemState::Pending, ItemState::Failed, ItemState::Refused];

/// Namespace and name of a custom resource: the only identity labels of its series.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResourceId {
    pub namespace: String,
    pub name: String,
}

impl ResourceId {
    fn of(meta: &kube::api::ObjectMeta) -> Self {
        Self { namespace: namespace_of(meta).to_string(), name: meta.name.clone().unwrap_or_default() }
    }

    pub fn key(&self) -> ObjectKey {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything the operator exports about the deployments it reconciles, at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub now: jiff::Timestamp,
    pub availability_groups: Vec<AvailabilityGroupFigures>,
    pub master_groups: Vec<MasterGroupFigures>,
    pub workers: Vec<WorkerFigures>,
    pub nodes: Vec<NodeFigures>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AvailabilityGroupFigures {
    pub id: ResourceId,
    /// Primary in the status this pass computed.
    pub primary: Option<String>,
    /// Primary in the stored status before this pass (to notice a failover).
    pub previous_primary: Option<String>,
    pub last_failover: Option<jiff::Timestamp>,
    pub replicas: Vec<ReplicaFigures>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaFigures {
    pub name: String,
    pub connected: bool,
    pub catalog_key_ready: bool,
    pub logging_login_ready: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MasterGroupFigures {
    pub id: ResourceId,
    pub certificate_expiry: Option<jiff::Timestamp>,
    pub renewal_window: jiff::SignedDuration,
    pub rotation_phase: RotationPhase,
    pub active_node: Option<String>,
    pub nodes: u32,
    pub nodes_ready: u32,
    /// `LAST_ONLINE_TIME` of `catalog.master_properties`: the active master's heartbeat in SSISDB.
    pub last_online: Option<jiff::Timestamp>,
    /// Worker nodes of every ScaleOutWorker referencing this group.
    pub workers: u32,
    /// Of those, registered, enabled and online: what executions need (pitfall 14).
    pub workers_online_enabled: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerFigures {
    pub id: ResourceId,
    pub nodes: u32,
    /// Phase Ready: enrolled and in the desired enabled state.
    pub enrolled: u32,
    pub registered: u32,
    pub enabled: u32,
    pub online: u32,
    /// The soonest expiry among the nodes' worker certificates.
    pub certificate_expiry: Option<jiff::Timestamp>,
    pub renewal_window: jiff::SignedDuration,
    /// Nodes with a worker certificate rotation under way.
    pub rotations_in_progress: u32,
    pub node_details: Vec<WorkerNodeFigures>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerNodeFigures {
    pub node: String,
    pub last_online: Option<jiff::Timestamp>,
    /// Phase of a worker certificate rotation in progress.
    pub rotation_phase: Option<RotationPhase>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFigures {
    pub node: String,
    /// `status.agent.lastHeartbeatTime` of the node's HostConfig.
    pub last_report: Option<jiff::Timestamp>,
    /// `status.drift.repairs`: drift repairs the agent made since the HostConfig exists.
    pub drift_repairs: u64,
    /// Items by state, in [`ITEM_STATES`] order (zero included).
    pub items: Vec<(ItemState, u32)>,
}

impl NodeFigures {
    pub fn items_in(&self, state: ItemState) -> u32 {
        self.items.iter().find(|(s, _)| *s == state).map(|(_, n)| *n).unwrap_or(0)
    }
}

/// Parse a time as the operator stores it (RFC 3339) or as SQL Server renders a `datetimeoffset`
/// converted to text (`2026-01-01 10:00:00.1234567 +00:00`).
pub fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    ["%Y-%m-%d %H:%M:%S%.f %:z", "%Y-%m-%d %H:%M:%S %:z"]
        .iter()
        .find_map(|format| jiff::Timestamp::strptime(format, text).ok())
}

/// The figures of one pass: `input` as dereferenced, `plan` as the planner computed it.
pub fn snapshot(input: &PlanInput, plan: &PlanOutput) -> Snapshot {
    let now = input.now;
    let availability_groups = input
        .availability_groups
        .iter()
        .map(|group| {
            let key = crate::plan::object_key(&group.metadata);
            let status = plan.availability_group_statuses.get(&key).or(group.status.as_ref());
            AvailabilityGroupFigures {
                id: ResourceId::of(&group.metadata),
                primary: status.and_then(|s| s.primary_replica.clone()),
                previous_primary: group.status.as_ref().and_then(|s| s.primary_replica.clone()),
                last_failover: status.and_then(|s| s.last_failover_time.as_deref()).and_then(parse_time),
                replicas: status
                    .map(|s| {
                        s.replicas
                            .iter()
                            .map(|r| ReplicaFigures {
                                name: r.name.clone(),
                                connected: r.connected,
                                catalog_key_ready: r.catalog_key_ready,
                                logging_login_ready: r.logging_login_ready,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();

    let workers: Vec<WorkerFigures> = input.workers.iter().map(|worker| worker_figures(input, plan, worker)).collect();

    let master_groups = input
        .master_groups
        .iter()
        .map(|group| {
            let id = ResourceId::of(&group.metadata);
            let status = plan.master_group_statuses.get(&id.key()).or(group.status.as_ref());
            let ag_key = format!("{}/{}", id.namespace, group.spec.availability_group_ref.name);
            let last_online = input
                .catalogs
                .get(&ag_key)
                .and_then(|c| c.ssisdb.as_ref())
                .and_then(|s| s.master_properties.get("LAST_ONLINE_TIME"))
                .and_then(|t| parse_time(t));
            let members: Vec<&WorkerFigures> = input
                .workers
                .iter()
                .zip(&workers)
                .filter(|(w, _)| namespace_of(&w.metadata) == id.namespace && w.spec.master_group_ref.name == id.name)
                .map(|(_, figures)| figures)
                .collect();
            MasterGroupFigures {
                certificate_expiry: status.and_then(|s| s.certificate.as_ref()).and_then(|c| parse_time(&c.not_after)),
                renewal_window: renewal_window(&group.spec.certificate),
                rotation_phase: status.and_then(|s| s.rotation.as_ref()).map(|r| r.phase).unwrap_or_default(),
                active_node: status.and_then(|s| s.active_node.clone()),
                nodes: group.spec.nodes.len() as u32,
                nodes_ready: status.map(|s| s.nodes.iter().filter(|n| n.ready).count() as u32).unwrap_or(0),
                last_online,
                workers: members.iter().map(|w| w.nodes).sum(),
                workers_online_enabled: members.iter().map(|w| online_enabled(input, plan, w)).sum(),
                id,
            }
        })
        .collect();

    let nodes = input
        .host_configs
        .iter()
        .map(|host| {
            let status = host.status.as_ref();
            let listed = status.map(|s| s.items.as_slice()).unwrap_or_default();
            let items = ITEM_STATES
                .iter()
                .map(|state| (*state, listed.iter().filter(|i| i.state == *state).count() as u32))
                .collect();
            let node = host.metadata.name.clone().unwrap_or_default();
            // Liveness: the agent's Lease renewal, or (agents without a Lease) its last status.
            let from_status = status.and_then(|s| s.agent.as_ref()).and_then(|a| parse_time(&a.last_heartbeat_time));
            let last_report = input.agent_leases.get(&node).copied().into_iter().chain(from_status).max();
            NodeFigures {
                node,
                last_report,
                drift_repairs: status.and_then(|s| s.drift.as_ref()).map(|d| d.repairs.max(0) as u64).unwrap_or(0),
                items,
            }
        })
        .collect();

    Snapshot { now, availability_groups, master_groups, workers, nodes }
}

fn renewal_window(source: &ssis_crds::CertificateSource) -> jiff::SignedDuration {
    source
        .generate
        .as_ref()
        .map(|g| jiff::SignedDuration::from_hours(24 * i64::from(g.renew_before_days)))
        .unwrap_or(DEFAULT_RENEWAL_WINDOW)
}

/// `LastOnlineTime` of a worker node: the row SQL reported in this pass (fresh), else the status.
fn last_online(
    input: &PlanInput,
    worker: &ssis_crds::ScaleOutWorker,
    node: &ssis_crds::WorkerNodeStatus,
) -> Option<jiff::Timestamp> {
    let from_catalog = node.worker_agent_id.as_deref().and_then(|id| {
        let namespace = namespace_of(&worker.metadata);
        let group = input.master_groups.iter().find(|g| {
            namespace_of(&g.metadata) == namespace
                && g.metadata.name.as_deref() == Some(&worker.spec.master_group_ref.name)
        })?;
        let ag_key = format!("{namespace}/{}", group.spec.availability_group_ref.name);
        let rows = &input.catalogs.get(&ag_key)?.ssisdb.as_ref()?.worker_agents;
        rows.iter()
            .find(|r| r.worker_agent_id.eq_ignore_ascii_case(id))?
            .last_online_time
            .as_deref()
            .and_then(parse_time)
    });
    from_catalog.or_else(|| node.last_online_time.as_deref().and_then(parse_time))
}

fn is_online(now: jiff::Timestamp, last_online: Option<jiff::Timestamp>) -> bool {
    last_online.is_some_and(|t| now.duration_since(t) <= WORKER_ONLINE_WITHIN)
}

fn worker_status<'a>(
    plan: &'a PlanOutput,
    worker: &'a ssis_crds::ScaleOutWorker,
) -> Option<&'a ssis_crds::ScaleOutWorkerStatus> {
    plan.worker_statuses.get(&crate::plan::object_key(&worker.metadata)).or(worker.status.as_ref())
}

fn worker_figures(input: &PlanInput, plan: &PlanOutput, worker: &ssis_crds::ScaleOutWorker) -> WorkerFigures {
    let nodes = worker_status(plan, worker).map(|s| s.nodes.as_slice()).unwrap_or_default();
    let count = |keep: &dyn Fn(&ssis_crds::WorkerNodeStatus) -> bool| nodes.iter().filter(|n| keep(n)).count() as u32;
    let node_details: Vec<WorkerNodeFigures> = nodes
        .iter()
        .map(|n| WorkerNodeFigures {
            node: n.node_name.clone(),
            last_online: last_online(input, worker, n),
            rotation_phase: n.certificate_rotation.as_ref().map(|r| r.phase).filter(|p| *p != RotationPhase::Idle),
        })
        .collect();
    WorkerFigures {
        id: ResourceId::of(&worker.metadata),
        nodes: nodes.len() as u32,
        enrolled: count(&|n| n.phase == WorkerPhase::Ready),
        registered: count(&|n| n.registered),
        enabled: count(&|n| n.enabled),
        online: node_details.iter().filter(|d| is_online(input.now, d.last_online)).count() as u32,
        certificate_expiry: nodes.iter().filter_map(|n| n.certificate_not_after.as_deref().and_then(parse_time)).min(),
        renewal_window: renewal_window(&worker.spec.certificate),
        rotations_in_progress: node_details.iter().filter(|d| d.rotation_phase.is_some()).count() as u32,
        node_details,
    }
}

fn online_enabled(input: &PlanInput, plan: &PlanOutput, figures: &WorkerFigures) -> u32 {
    let Some(worker) = input.workers.iter().find(|w| ResourceId::of(&w.metadata) == figures.id) else { return 0 };
    let nodes = worker_status(plan, worker).map(|s| s.nodes.as_slice()).unwrap_or_default();
    nodes
        .iter()
        .filter(|n| n.registered && n.enabled)
        .filter(|n| figures.node_details.iter().any(|d| d.node == n.node_name && is_online(input.now, d.last_online)))
        .count() as u32
}

#[cfg(test)]
mod tests;
