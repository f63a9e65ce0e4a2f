//! Controllers: one level-triggered reconcile per unit of deployments.
//!
//! A deployment is an SsisdbAvailabilityGroup with the master groups and workers that reference it;
//! deployments that share a Windows node form one unit (a HostConfig merges everything on its node;
//! see [`crate::plan::topology`]). [`reconcile_unit`] runs dereference (from the watch-fed
//! [`stores`]) → plan (pure) → apply → update_status for one unit; [`reconcile_orphans`] removes
//! what no unit owns any more. Both are plain async functions, so the end-to-end harness steps them
//! against an in-memory API server; [`runner`] drives them with kube-runtime's reflectors and
//! applier (queue, debounce, concurrency, per-unit backoff) and leader election.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kube::runtime::events::{Recorder, Reporter};

use crate::catalog::{Catalog, CatalogTarget, SecretString};

pub mod apply;
pub mod certificates;
pub mod dereference;
pub mod leader;
pub mod metrics;
pub mod orphans;
pub mod runner;
pub mod startup;
pub mod status;
pub mod stores;

pub use certificates::{CertificateIssuer, CertsIssuer, SecretData};
pub use dereference::World;
pub use leader::{LeaderElector, LeaseSettings, LeaseStep};
pub use metrics::Metrics;
pub use startup::{CrdCheckError, check_crds};

/// Field manager of every server-side apply the operator does.
pub const FIELD_MANAGER: &str = "ssis-operator";
/// Finalizer that guards cleanup (disable the worker, untrust its certificate on every master).
pub const FINALIZER: &str = "ssis.sqlops.io/cleanup";
/// Label carrying a hash of the certificate id on issued-certificate Secrets (ids contain `/`,
/// which label values cannot).
pub const CERTIFICATE_ID_LABEL: &str = "ssis.sqlops.io/certificate-id";
/// Name of the Windows-node label value selector.
pub const WINDOWS_NODE_LABEL: &str = "kubernetes.io/os";
/// Annotation on operator-namespace Secrets naming the custom resource they belong to
/// (`Kind/namespace/name`), so the unit that owns the resource, and nobody else, collects them.
pub const OWNER_ANNOTATION: &str = "ssis.sqlops.io/owner";

/// Source of the current time; injectable so tests and the harness drive time without sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> jiff::Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock that only moves when told to (tests, the deterministic harness).
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<jiff::Timestamp>>);

impl ManualClock {
    pub fn new(start: jiff::Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn set(&self, now: jiff::Timestamp) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
    }

    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let by = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
        *now = now.saturating_add(by).unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Everything a reconcile pass needs.
pub struct Context<C: Catalog> {
    pub client: kube::Client,
    pub catalog: C,
    /// Namespace the operator runs in: host-material Secrets and the leader Lease live here.
    pub operator_namespace: String,
    /// Namespaces whose custom resources are reconciled; empty means all namespaces.
    pub watch_namespaces: Vec<String>,
    pub clock: Arc<dyn Clock>,
    pub recorder: Recorder,
    pub issuer: Arc<dyn CertificateIssuer>,
    pub metrics: Arc<Metrics>,
    /// Upper bound of concurrent SQL observations.
    pub concurrency: usize,
    /// Called with each availability group's target and catalog password before it is observed
    /// (development mode: the simulated catalog creates the group's SQL world on first sight).
    pub prepare_target: Option<PrepareTarget>,
    /// Data of referenced Secrets, read again only when their resourceVersion changes.
    pub secret_cache: Arc<stores::SecretCache>,
    /// Leadership: once lost, a running reconcile makes no further SQL action or API write.
    pub fence: Fence,
    /// The SQL targets of every unit, for the role poller (an AG or master failover starts the
    /// unit's reconcile within seconds, whatever the API server is doing).
    pub role_targets: Arc<Mutex<BTreeMap<String, (CatalogTarget, crate::plan::topology::UnitKey)>>>,
}

/// Stops writes when leadership is lost (CloudNativePG's fencing): every SQL action and API write
/// of a pass checks it first.
#[derive(Clone, Debug)]
pub struct Fence(Option<tokio::sync::watch::Receiver<bool>>);

impl Fence {
    /// No leader election: never fenced.
    pub fn open() -> Self {
        Self(None)
    }

    /// Fenced whenever `leading` reads false.
    pub fn following(leading: tokio::sync::watch::Receiver<bool>) -> Self {
        Self(Some(leading))
    }

    /// Whether writes must stop.
    pub fn lost(&self) -> bool {
        self.0.as_ref().is_some_and(|leading| !*leading.borrow())
    }
}

/// See [`Context::prepare_target`].
pub type PrepareTarget = Box<dyn Fn(&CatalogTarget, &SecretString) + Send + Sync>;

impl<C: Catalog> Context<C> {
    /// A context with the wall clock, fresh metrics and a concurrency of 4.
    pub fn new(
        client: kube::Client,
        catalog: C,
        operator_namespace: impl Into<String>,
        issuer: Arc<dyn CertificateIssuer>,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: None });
        Self {
            client,
            catalog,
            operator_namespace: operator_namespace.into(),
            watch_namespaces: vec![],
            clock: Arc::new(SystemClock),
            recorder,
            issuer,
            metrics: Arc::new(Metrics::default()),
            concurrency: 4,
            prepare_target: None,
            secret_cache: Arc::new(stores::SecretCache::default()),
            fence: Fence::open(),
            role_targets: Arc::default(),
        }
    }
}

/// What one pass did. A converged world reports zero writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// HostConfig specs applied with server-side apply.
    pub host_config_applies: u32,
    /// HostConfigs deleted because no resource wants them any more.
    pub host_config_deletes: u32,
    /// Operator-namespace Secrets created, patched or deleted (certificates, password copies).
    pub secret_writes: u32,
    /// Status subresource patches of the custom resources.
    pub status_patches: u32,
    /// SQL actions executed successfully.
    pub sql_actions: u32,
    /// Finalizers added or removed.
    pub finalizer_patches: u32,
    /// Events published (only on transitions, so zero when converged).
    pub events: u32,
    /// Optimistic-concurrency conflicts (409): re-read and retried on the next pass.
    pub conflicts: u32,
    /// Some resource is Stalled (waits for a change by a human; longer requeue).
    pub stalled: bool,
    /// Transient problems (SQL unreachable, failed action, API error on one object), without
    /// secret material. Non-empty means "retry with backoff".
    pub problems: Vec<String>,
    /// SQL actions still planned for each availability group after this pass.
    pub pending_sql_actions: BTreeMap<String, usize>,
    /// Leadership was lost during the pass: the remaining writes were not made.
    pub fenced: bool,
}

impl ReconcileReport {
    /// Writes to the API or SQL Server (Events excluded).
    pub fn writes(&self) -> u32 {
        self.host_config_applies
            + self.host_config_deletes
            + self.secret_writes
            + self.status_patches
            + self.sql_actions
            + self.finalizer_patches
    }

    /// Whether the next pass should come after a backoff delay.
    pub fn needs_retry(&self) -> bool {
        !self.problems.is_empty() || self.conflicts > 0
    }

    /// Add another pass's counts (the harness sums the units of one round).
    pub fn add(&mut self, other: ReconcileReport) {
        self.host_config_applies += other.host_config_applies;
        self.host_config_deletes += other.host_config_deletes;
        self.secret_writes += other.secret_writes;
        self.status_patches += other.status_patches;
        self.sql_actions += other.sql_actions;
        self.finalizer_patches += other.finalizer_patches;
        self.events += other.events;
        self.conflicts += other.conflicts;
        self.stalled |= other.stalled;
        self.problems.extend(other.problems);
        self.pending_sql_actions.extend(other.pending_sql_actions);
        self.fenced |= other.fenced;
    }

    /// Whether leadership was lost: then the pass must make no further write (it returns, and
    /// the report says so).
    pub(crate) fn fenced_by(&mut self, fence: &Fence) -> bool {
        if fence.lost() {
            if !self.fenced {
                tracing::warn!("leadership lost: this pass makes no further SQL action or API write");
            }
            self.fenced = true;
        }
        self.fenced
    }

    fn problem(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(%message, "reconcile problem");
        self.problems.push(message);
    }
}

/// Errors that abort a whole pass (the world could not be read).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the planner panicked: {0}")]
    PlannerPanicked(String),
}

/// One pass over one unit of deployments: dereference → plan → apply → update_status.
pub async fn reconcile_unit<C: Catalog>(
    ctx: &Context<C>,
    stores: &stores::Stores,
    topology: &crate::plan::topology::Topology,
    unit: &crate::plan::topology::UnitKey,
) -> Result<ReconcileReport, Error> {
    let mut report = ReconcileReport::default();
    let world = dereference::dereference(ctx, stores, topology, unit, &mut report).await?;
    register_role_targets(ctx, &world, unit);
    let mut plan = run_planner(&world.input)?;
    report.stalled = status::any_stalled(&plan);
    apply::apply(ctx, &world, &plan, &mut report).await;
    keep_unconfirmed_password_fingerprints(&mut plan, &world.input, &report);
    status::update_status(ctx, &world, &plan, &mut report).await;
    ctx.metrics.record_report(&report);
    ctx.metrics.observe(unit, &world.input, &plan);
    Ok(report)
}

/// Keep the role poller's targets of `unit` equal to the unit's availability groups.
fn register_role_targets<C: Catalog>(ctx: &Context<C>, world: &World, unit: &crate::plan::topology::UnitKey) {
    let mut targets = ctx.role_targets.lock().unwrap_or_else(|p| p.into_inner());
    targets.retain(|_, (_, owner)| owner != unit);
    for group in &world.input.availability_groups {
        if let Ok(target) = world.catalog_target(group) {
            targets.insert(target.key.clone(), (target, unit.clone()));
        }
    }
}

/// The topology of what the stores hold now.
pub fn topology_of(stores: &stores::Stores) -> crate::plan::topology::Topology {
    let groups = stores.availability_groups.state();
    let masters = stores.master_groups.state();
    let workers = stores.workers.state();
    let nodes = dereference::node_infos(stores);
    crate::plan::topology::Topology::of(
        groups.iter().map(|g| &**g),
        masters.iter().map(|m| &**m),
        workers.iter().map(|w| &**w),
        &nodes,
    )
}

/// Every unit once, in key order, then the orphan sweep: what the end-to-end harness runs as one
/// operator pass. The reports are summed.
pub async fn reconcile_all<C: Catalog>(ctx: &Context<C>, stores: &stores::Stores) -> Result<ReconcileReport, Error> {
    let topology = topology_of(stores);
    let mut total = ReconcileReport::default();
    for unit in topology.members.keys() {
        total.add(reconcile_unit(ctx, stores, &topology, unit).await?);
    }
    total.add(orphans::reconcile_orphans(ctx, stores, &topology).await);
    ctx.metrics.retain_units(&topology.members.keys().cloned().collect());
    ctx.secret_cache.retain(|namespace, name| topology.references_secret(namespace, name));
    Ok(total)
}

/// The planner records the new logging-password fingerprint in the same pass that emits the SQL
/// actions carrying the new password. When some of those actions did not run, the previous
/// fingerprint stays in status, so the next pass sees the change again and retries them
/// (otherwise `catalog.update_logdb_info` would keep the old password for good).
fn keep_unconfirmed_password_fingerprints(
    plan: &mut crate::plan::PlanOutput,
    input: &crate::plan::PlanInput,
    report: &ReconcileReport,
) {
    for key in report.pending_sql_actions.keys() {
        let Some(status) = plan.availability_group_statuses.get_mut(key) else { continue };
        let previous = input
            .availability_groups
            .iter()
            .find(|group| object_key(*group) == *key)
            .and_then(|group| group.status.as_ref())
            .and_then(|status| status.logging_password_fingerprint.clone());
        status.logging_password_fingerprint = previous;
    }
}

/// The planner is pure; a panic in it must not take the operator down with every other resource.
fn run_planner(input: &crate::plan::PlanInput) -> Result<crate::plan::PlanOutput, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::plan::plan(input))).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::PlannerPanicked(message)
    })
}

/// `namespace/name` of a namespaced object, as the planner keys it.
pub(crate) fn object_key<K: kube::Resource>(object: &K) -> String {
    crate::plan::object_key(object.meta())
}

/// Whether an API error is an optimistic-concurrency conflict.
pub(crate) fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Whether an API error is "not found".
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod password_fingerprint_tests {
    use super::*;
    use ssis_crds::{SsisdbAvailabilityGroup, SsisdbAvailabilityGroupStatus};

    fn world_with_previous(previous: &str) -> (crate::plan::PlanInput, crate::plan::PlanOutput) {
        let mut group = SsisdbAvailabilityGroup::new("ag", Default::default());
        group.metadata.namespace = Some("ssis".into());
        group.status = Some(SsisdbAvailabilityGroupStatus {
            logging_password_fingerprint: Some(previous.into()),
            ..Default::default()
        });
        let input = crate::plan::PlanInput { availability_groups: vec![group], ..Default::default() };
        let mut plan = crate::plan::PlanOutput::default();
        plan.availability_group_statuses.insert(
            "ssis/ag".into(),
            SsisdbAvailabilityGroupStatus { logging_password_fingerprint: Some("new".into()), ..Default::default() },
        );
        (input, plan)
    }

    #[test]
    fn failed_sql_actions_keep_the_previous_fingerprint_so_the_password_change_is_retried() {
        let (input, mut plan) = world_with_previous("old");
        let mut report = ReconcileReport::default();
        report.pending_sql_actions.insert("ssis/ag".into(), 1);
        keep_unconfirmed_password_fingerprints(&mut plan, &input, &report);
        assert_eq!(plan.availability_group_statuses["ssis/ag"].logging_password_fingerprint.as_deref(), Some("old"));
    }

    #[test]
    fn completed_sql_actions_record_the_new_fingerprint() {
        let (input, mut plan) = world_with_previous("old");
        keep_unconfirmed_password_fingerprints(&mut plan, &input, &ReconcileReport::default());
        assert_eq!(plan.availability_group_statuses["ssis/ag"].logging_password_fingerprint.as_deref(), Some("new"));
    }
}
