//! update_status: write each planned status through the status subresource (server-side apply)
//! only when it differs, and publish Events for the notable transitions the diff reveals.

use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use ssis_crds::condition_types::{READY, STALLED};
use ssis_crds::{
    ScaleOutMasterGroup, ScaleOutMasterGroupStatus, ScaleOutWorker, ScaleOutWorkerStatus, SsisdbAvailabilityGroup,
    SsisdbAvailabilityGroupStatus, find_condition,
};

use crate::catalog::Catalog;
use crate::plan::{ObjectKey, PlanOutput};

use super::apply::publish;
use super::dereference::World;
use super::{Context, FIELD_MANAGER, ReconcileReport, is_conflict, is_not_found, object_key};

/// A custom resource kind with kstatus conditions in its status.
pub trait StatusKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug
{
    type Status: Serialize + Clone + PartialEq;
    fn current_status(&self) -> Option<&Self::Status>;
    fn conditions_mut(status: &mut Self::Status) -> &mut Vec<Condition>;
    fn conditions(status: &Self::Status) -> &[Condition];
    fn observed_generation_mut(status: &mut Self::Status) -> &mut Option<i64>;
}

macro_rules! status_kind {
    ($kind:ty, $status:ty) => {
        impl StatusKind for $kind {
            type Status = $status;
            fn current_status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn conditions_mut(status: &mut $status) -> &mut Vec<Condition> {
                &mut status.conditions
            }
            fn conditions(status: &$status) -> &[Condition] {
                &status.conditions
            }
            fn observed_generation_mut(status: &mut $status) -> &mut Option<i64> {
                &mut status.observed_generation
            }
        }
    };
}

status_kind!(SsisdbAvailabilityGroup, SsisdbAvailabilityGroupStatus);
status_kind!(ScaleOutMasterGroup, ScaleOutMasterGroupStatus);
status_kind!(ScaleOutWorker, ScaleOutWorkerStatus);

/// Whether the plan leaves any resource Stalled (waiting for a human).
pub fn any_stalled(plan: &PlanOutput) -> bool {
    let stalled = |conditions: &[Condition]| find_condition(conditions, STALLED).is_some_and(|c| c.status == "True");
    plan.availability_group_statuses.values().any(|s| stalled(&s.conditions))
        || plan.master_group_statuses.values().any(|s| stalled(&s.conditions))
        || plan.worker_statuses.values().any(|s| stalled(&s.conditions))
}

/// The status to write: the planned one with `observedGeneration` filled in and each condition's
/// `lastTransitionTime` kept while its status did not change (kstatus semantics, and no write churn).
pub fn normalize<K: StatusKind>(object: &K, planned: &K::Status) -> K::Status {
    let mut status = planned.clone();
    let generation = object.meta().generation;
    if K::observed_generation_mut(&mut status).is_none() {
        *K::observed_generation_mut(&mut status) = generation;
    }
    let current = object.current_status().map(K::conditions).unwrap_or_default();
    for condition in K::conditions_mut(&mut status) {
        if condition.observed_generation.is_none() {
            condition.observed_generation = generation;
        }
        if let Some(previous) = find_condition(current, &condition.type_)
            && previous.status == condition.status
        {
            condition.last_transition_time = previous.last_transition_time.clone();
        }
    }
    status
}

/// The server-side apply body of a status: the whole status (fields that disappeared from it are
/// removed by the API server because this manager stops sending them).
pub fn status_body<K: StatusKind>(status: &K::Status) -> serde_json::Value {
    json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status })
}

/// Patch every changed status; returns the objects whose status was written, with the old status.
async fn patch_statuses<C: Catalog, K: StatusKind>(
    ctx: &Context<C>,
    objects: &[K],
    planned: &BTreeMap<ObjectKey, K::Status>,
    report: &mut ReconcileReport,
) -> Vec<(K, Option<K::Status>, K::Status)> {
    let mut written = vec![];
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for object in objects {
        let key = object_key(object);
        let Some(planned) = planned.get(&key) else { continue };
        let status = normalize(object, planned);
        if object.current_status() == Some(&status) {
            continue;
        }
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
        if report.fenced_by(&ctx.fence) {
            return written;
        }
        match api.patch_status(&object.name_any(), &params, &Patch::Apply(status_body::<K>(&status))).await {
            Ok(_) => {
                report.status_patches += 1;
                written.push((object.clone(), object.current_status().cloned(), status));
            }
            Err(error) if is_conflict(&error) => report.conflicts += 1,
            Err(error) if is_not_found(&error) => {}
            Err(error) => report.problem(format!("patching status of {} {key}: {error}", K::kind(&()))),
        }
    }
    written
}

fn condition_true(conditions: &[Condition], type_: &str) -> Option<String> {
    find_condition(conditions, type_).filter(|c| c.status == "True").map(|c| c.message.clone())
}

/// Events for kstatus transitions common to every kind.
async fn condition_events<C: Catalog, K: StatusKind>(
    ctx: &Context<C>,
    report: &mut ReconcileReport,
    object: &K,
    old: Option<&K::Status>,
    new: &K::Status,
) {
    let old_conditions = old.map(K::conditions).unwrap_or_default();
    let new_conditions = K::conditions(new);
    if let Some(message) = condition_true(new_conditions, STALLED)
        && condition_true(old_conditions, STALLED).is_none()
    {
        publish(ctx, report, object, EventType::Warning, "Stalled", "Reconcile", message).await;
    }
    if condition_true(new_conditions, READY).is_some() && condition_true(old_conditions, READY).is_none() {
        publish(ctx, report, object, EventType::Normal, "Ready", "Reconcile", format!("{} is ready", K::kind(&())))
            .await;
    }
}

/// Write every changed status and publish transition Events.
pub async fn update_status<C: Catalog>(
    ctx: &Context<C>,
    world: &World,
    plan: &PlanOutput,
    report: &mut ReconcileReport,
) {
    let input = &world.input;
    for (object, old, new) in
        patch_statuses(ctx, &input.availability_groups, &plan.availability_group_statuses, report).await
    {
        // FailoverDetected comes from the planner (plan events).
        condition_events(ctx, report, &object, old.as_ref(), &new).await;
    }
    for (object, old, new) in patch_statuses(ctx, &input.master_groups, &plan.master_group_statuses, report).await {
        condition_events(ctx, report, &object, old.as_ref(), &new).await;
        let old_active = old.as_ref().and_then(|s| s.active_node.clone());
        if let (Some(from), Some(to)) = (old_active, new.active_node.clone())
            && from != to
        {
            let note = format!("active master moved from {from} to {to}");
            publish(ctx, report, &object, EventType::Normal, "MasterFailover", "ObserveCluster", note).await;
        }
    }
    for (object, old, new) in patch_statuses(ctx, &input.workers, &plan.worker_statuses, report).await {
        condition_events(ctx, report, &object, old.as_ref(), &new).await;
        for node in new.nodes.iter().filter(|n| n.enabled) {
            let was_enabled = old
                .as_ref()
                .and_then(|s| s.nodes.iter().find(|o| o.node_name == node.node_name))
                .is_some_and(|o| o.enabled);
            if !was_enabled {
                let note = format!("worker on node {} enabled", node.node_name);
                publish(ctx, report, &object, EventType::Normal, "WorkerEnabled", "EnableWorker", note).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn condition(type_: &str, status: &str, at: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: Time(at.parse().unwrap()),
        }
    }

    #[test]
    fn normalize_keeps_transition_time_while_status_is_unchanged() {
        let mut worker = ScaleOutWorker::new("w", Default::default());
        worker.metadata.generation = Some(3);
        worker.status = Some(ScaleOutWorkerStatus {
            conditions: vec![
                condition("Ready", "False", "2026-01-01T00:00:00Z"),
                condition("Stalled", "False", "2026-01-01T00:00:00Z"),
            ],
            ..Default::default()
        });
        let planned = ScaleOutWorkerStatus {
            conditions: vec![
                condition("Ready", "False", "2026-02-02T00:00:00Z"),
                condition("Stalled", "True", "2026-02-02T00:00:00Z"),
            ],
            ..Default::default()
        };
        let status = normalize(&worker, &planned);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.conditions[0].last_transition_time.0.to_string(), "2026-01-01T00:00:00Z");
        assert_eq!(status.conditions[1].last_transition_time.0.to_string(), "2026-02-02T00:00:00Z");
        assert!(status.conditions.iter().all(|c| c.observed_generation == Some(3)));
    }
}
