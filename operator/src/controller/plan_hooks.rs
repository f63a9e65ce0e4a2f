//! Decisions the controller reads from the plan beyond its maps: when an object being deleted may
//! lose its finalizer.

use ssis_crds::{ScaleOutMasterGroup, ScaleOutWorker, WorkerPhase};

use crate::catalog::SqlAction;
use crate::plan::PlanOutput;

use super::object_key;

/// Whether any desired HostConfig still carries items contributed by the object.
fn contributes(plan: &PlanOutput, kind: &str, key: &str) -> bool {
    plan.host_configs
        .values()
        .flat_map(|spec| &spec.contributors)
        .any(|c| c.kind == kind && format!("{}/{}", c.namespace, c.name) == key)
}

/// A deleted worker is finalizable once no HostConfig carries its items (removal items such as
/// "untrust on every master" are contributed by it until done) and no node is still Removing.
pub fn worker_finalizable(plan: &PlanOutput, worker: &ScaleOutWorker) -> bool {
    let key = object_key(worker);
    let removing = plan
        .worker_statuses
        .get(&key)
        .is_some_and(|status| status.nodes.iter().any(|n| n.phase == WorkerPhase::Removing));
    let agent_ids: Vec<&str> = plan
        .worker_statuses
        .get(&key)
        .or(worker.status.as_ref())
        .map(|status| status.nodes.iter().filter_map(|n| n.worker_agent_id.as_deref()).collect())
        .unwrap_or_default();
    let disabling = plan.sql_actions.values().flatten().any(|action| {
        matches!(action, SqlAction::DisableWorkerAgent { worker_agent_id, .. } if agent_ids.contains(&worker_agent_id.as_str()))
    });
    !removing && !disabling && !contributes(plan, "ScaleOutWorker", &key)
}

/// A deleted master group is finalizable once no HostConfig carries its items.
pub fn master_group_finalizable(plan: &PlanOutput, master: &ScaleOutMasterGroup) -> bool {
    !contributes(plan, "ScaleOutMasterGroup", &object_key(master))
}
