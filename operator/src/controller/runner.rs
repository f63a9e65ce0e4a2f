//! The long-running operator, built from kube-runtime's parts:
//!
//! - reflectors keep every object the operator reads in memory ([`Stores`]): the user kinds and
//!   HostConfigs whole, Windows Nodes and the watched namespaces' Secrets metadata-only, the
//!   operator's own Secrets and the agents' Leases by label;
//! - every change goes through a predicate (status churn the planner does not read, heartbeats
//!   and our own writes trigger nothing) and is mapped to the units it concerns
//!   ([`crate::plan::topology`]);
//! - kube-runtime's `applier` runs one reconcile per unit with its queue, debounce, bounded
//!   concurrency and per-unit requeue, and [`error_policy`] backs off each unit on its own;
//! - leader election with a Lease; losing it fences every running reconcile (no further SQL action
//!   or API write), and the chart's termination grace period covers one pass;
//! - `/metrics`, `/healthz` (fails when a reconcile is wedged), `/readyz`.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ApplierConfig, applier};
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use ssis_crds::{
    HostConfig, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup,
};
use tokio::sync::watch as channel;

use crate::catalog::{Catalog, RoleSnapshot};
use crate::plan::inventory::AGENT_STALE_AFTER;
use crate::plan::topology::{Topology, UnitKey};

use super::leader::{LeaderElector, LeaseSettings};
use super::metrics::{Health, router};
use super::orphans::reconcile_orphans;
use super::stores::{MultiStore, Stores};
use super::{Context, Fence, ReconcileReport, WINDOWS_NODE_LABEL, reconcile_unit, topology_of};

/// How long one watch request stays open before it is renewed (kube's default is 290 s; the API
/// server's own default for watches is a random value above `--min-request-timeout`, 1800 s).
/// Bookmarks keep a quiet watch alive through proxies meanwhile.
pub const WATCH_TIMEOUT_SECONDS: u32 = 1800;

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Every unit is reconciled at least this often, so drift found by SQL observation is repaired.
    pub resync: Duration,
    /// Quiet time after a change before a reconcile, so bursts of events make one pass.
    pub debounce: Duration,
    /// Delay before the next pass while converging (one step per pass).
    pub converging_requeue: Duration,
    /// `None` disables leader election (single replica).
    pub leader: Option<LeaseSettings>,
    pub metrics_addr: SocketAddr,
    /// Upper bound of one pass (the chart's terminationGracePeriodSeconds covers it).
    pub pass_timeout: Duration,
    /// Units reconciled at the same time.
    pub concurrency: u16,
    /// How often availability-group roles and the master's machine are read (a change starts the
    /// unit's reconcile).
    pub role_poll: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            debounce: Duration::from_millis(500),
            converging_requeue: Duration::from_secs(2),
            leader: None,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            pass_timeout: Duration::from_secs(300),
            concurrency: 4,
            role_poll: Duration::from_secs(5),
        }
    }
}

/// What the applier schedules: one virtual object per unit (named by its smallest deployment,
/// `namespace/name`), plus [`ORPHANS`], the sweep of what no unit owns. It never goes to the API.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Unit {
    pub metadata: ObjectMeta,
}

/// The unit that sweeps orphans.
pub const ORPHANS: &str = "orphans";
const ORPHANS_NAMESPACE: &str = "-";

impl Resource for Unit {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "SsisUnit".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "internal.ssis.sqlops.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "units".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn unit_ref(key: &str) -> ObjectRef<Unit> {
    match key.split_once('/') {
        Some((namespace, name)) => ObjectRef::new(name).within(namespace),
        None => ObjectRef::new(key).within(ORPHANS_NAMESPACE),
    }
}

fn orphans_ref() -> ObjectRef<Unit> {
    ObjectRef::new(ORPHANS).within(ORPHANS_NAMESPACE)
}

fn unit_object(reference: &ObjectRef<Unit>) -> Unit {
    Unit {
        metadata: ObjectMeta {
            name: Some(reference.name.clone()),
            namespace: reference.namespace.clone(),
            ..Default::default()
        },
    }
}

/// A change seen by a reflector, after its predicate.
#[derive(Clone, Debug)]
enum Change {
    /// A user kind: `Kind/namespace/name`.
    Resource(String),
    Node(String),
    HostConfig {
        name: String,
        contributors: Vec<String>,
    },
    Secret {
        namespace: String,
        name: String,
    },
    OwnedSecret(Option<String>),
    Lease(String),
}

/// A predicate: the part of an object whose change matters, hashed; `None` ignores the object.
type Fingerprint<K> = fn(&K) -> Option<u64>;

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

use std::hash::{Hash, Hasher};

/// Spec changes, deletion and labels/annotations of the user kinds (their status is the
/// operator's own output and triggers nothing; the unit requeues while it converges).
fn user_kind_fingerprint<K: Resource>(object: &K) -> Option<u64> {
    let meta = object.meta();
    Some(hash_of(&(
        meta.generation,
        meta.deletion_timestamp.as_ref().map(|t| t.0.to_string()),
        &meta.labels,
        &meta.annotations,
        &meta.finalizers,
    )))
}

/// What agents report, without liveness churn: a status change the planner reads.
fn host_config_fingerprint(host_config: &HostConfig) -> Option<u64> {
    let mut status = host_config.status.clone();
    if let Some(agent) = status.as_mut().and_then(|s| s.agent.as_mut()) {
        agent.last_heartbeat_time.clear();
    }
    Some(hash_of(&serde_json::to_string(&status).unwrap_or_default()))
}

fn node_fingerprint(node: &PartialObjectMeta<Node>) -> Option<u64> {
    Some(hash_of(&node.metadata.labels))
}

fn resource_version_fingerprint<K: Resource>(object: &K) -> Option<u64> {
    Some(hash_of(&object.meta().resource_version))
}

/// A Lease matters when its agent comes back after being silent long enough to count as not
/// reporting (ordinary renewals are liveness only).
fn lease_fingerprint(lease: &Lease) -> Option<u64> {
    let renewed = lease.spec.as_ref()?.renew_time.as_ref()?.0;
    // Renewals inside one staleness window hash alike; a gap crosses into a new window.
    let window = renewed.as_second() / AGENT_STALE_AFTER.as_secs().max(1);
    Some(hash_of(&window))
}

/// Run a reflector for `api` into `writer`, sending a [`Change`] for every object whose
/// fingerprint changed (and every deletion). `synced` counts the initial lists done.
fn spawn_reflector<K, S>(
    name: &'static str,
    stream: S,
    writer: Writer<K>,
    fingerprint: Fingerprint<K>,
    to_change: fn(&K) -> Option<Change>,
    changes: mpsc::UnboundedSender<Change>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut seen: HashMap<ObjectRef<K>, u64> = HashMap::new();
        let mut stream = std::pin::pin!(reflector::reflector(writer, stream).default_backoff());
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(watch = name, %error, "watch error; retrying with backoff");
                    continue;
                }
            };
            match event {
                Event::Apply(object) | Event::InitApply(object) => {
                    let Some(print) = fingerprint(&object) else { continue };
                    if seen.insert(ObjectRef::from(&object), print) != Some(print)
                        && let Some(change) = to_change(&object)
                    {
                        let _ = changes.unbounded_send(change);
                    }
                }
                Event::Delete(object) => {
                    seen.remove(&ObjectRef::from(&object));
                    if let Some(change) = to_change(&object) {
                        let _ = changes.unbounded_send(change);
                    }
                }
                Event::Init | Event::InitDone => {}
            }
        }
    })
}

fn resource_change<K: Resource<DynamicType = ()>>(object: &K) -> Option<Change> {
    let key = format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any());
    Some(Change::Resource(format!("{}/{key}", K::kind(&()))))
}

/// Where reflectors are started: the client, namespaces and the change channel they feed.
struct ReflectorSet<'a> {
    client: &'a kube::Client,
    namespaces: &'a [String],
    config: watcher::Config,
    changes: &'a mpsc::UnboundedSender<Change>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Reflectors of one namespaced kind: one per watched namespace (all namespaces when none is set).
fn namespaced<K>(
    set: &mut ReflectorSet<'_>,
    name: &'static str,
    fingerprint: Fingerprint<K>,
    to_change: fn(&K) -> Option<Change>,
) -> MultiStore<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let apis: Vec<Api<K>> = if set.namespaces.is_empty() {
        vec![Api::all(set.client.clone())]
    } else {
        set.namespaces.iter().map(|ns| Api::namespaced(set.client.clone(), ns)).collect()
    };
    let mut stores = vec![];
    for api in apis {
        let (reader, writer) = reflector::store();
        let stream = watch(api, set.config.clone());
        set.tasks.push(spawn_reflector(name, stream, writer, fingerprint, to_change, set.changes.clone()));
        stores.push(reader);
    }
    MultiStore::new(stores)
}

/// Start every reflector; returns the stores and the tasks feeding them.
fn start_reflectors<C: Catalog>(
    ctx: &Context<C>,
    changes: &mpsc::UnboundedSender<Change>,
) -> (Stores, Vec<tokio::task::JoinHandle<()>>) {
    let client = &ctx.client;
    let namespaces = &ctx.watch_namespaces;
    let config = watcher::Config::default().timeout(WATCH_TIMEOUT_SECONDS);
    let mut set = ReflectorSet { client, namespaces, config: config.clone(), changes, tasks: vec![] };
    let availability_groups = namespaced::<SsisdbAvailabilityGroup>(
        &mut set,
        "ssisdbavailabilitygroups",
        user_kind_fingerprint,
        resource_change,
    );
    let master_groups =
        namespaced::<ScaleOutMasterGroup>(&mut set, "scaleoutmastergroups", user_kind_fingerprint, resource_change);
    let workers = namespaced::<ScaleOutWorker>(&mut set, "scaleoutworkers", user_kind_fingerprint, resource_change);
    let mut tasks = set.tasks;
    // Referenced Secrets live in the watched namespaces: metadata only, to notice new versions.
    let secret_metadata = {
        let apis: Vec<Api<PartialObjectMeta<Secret>>> = if namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
        };
        let mut stores = vec![];
        for api in apis {
            let (reader, writer) = reflector::store();
            let stream = watch(api, config.clone());
            tasks.push(spawn_reflector(
                "secrets(metadata)",
                stream,
                writer,
                resource_version_fingerprint,
                |s| Some(Change::Secret { namespace: s.namespace().unwrap_or_default(), name: s.name_any() }),
                changes.clone(),
            ));
            stores.push(reader);
        }
        MultiStore::new(stores)
    };
    let (host_configs, writer) = reflector::store();
    tasks.push(spawn_reflector(
        "hostconfigs",
        watch(Api::<HostConfig>::all(client.clone()), config.clone()),
        writer,
        host_config_fingerprint,
        |h| {
            let contributors =
                h.spec.contributors.iter().map(|c| format!("{}/{}/{}", c.kind, c.namespace, c.name)).collect();
            Some(Change::HostConfig { name: h.name_any(), contributors })
        },
        changes.clone(),
    ));
    let (nodes, writer) = reflector::store();
    tasks.push(spawn_reflector(
        "nodes(metadata)",
        watch(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            config.clone().labels(&format!("{WINDOWS_NODE_LABEL}=windows")),
        ),
        writer,
        node_fingerprint,
        |n| Some(Change::Node(n.name_any())),
        changes.clone(),
    ));
    let (owned_secrets, writer) = reflector::store();
    tasks.push(spawn_reflector(
        "secrets(owned)",
        watch(
            Api::<Secret>::namespaced(client.clone(), &ctx.operator_namespace),
            config.clone().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")),
        ),
        writer,
        resource_version_fingerprint,
        |s| Some(Change::OwnedSecret(super::dereference::secret_owner(s))),
        changes.clone(),
    ));
    let (leases, writer) = reflector::store();
    tasks.push(spawn_reflector(
        "leases",
        watch(
            Api::<Lease>::namespaced(client.clone(), &ctx.operator_namespace),
            config.clone().labels(ssis_crds::agent_lease::LABEL),
        ),
        writer,
        lease_fingerprint,
        |l| l.spec.as_ref().and_then(|s| s.holder_identity.clone()).map(Change::Lease),
        changes.clone(),
    ));
    let stores = Stores {
        availability_groups,
        master_groups,
        workers,
        host_configs,
        nodes,
        secrets: secret_metadata,
        owned_secrets,
        leases,
    };
    (stores, tasks)
}

/// Everything a reconcile needs, shared by the applier's concurrent reconciles.
pub struct Shared<C: Catalog> {
    pub ctx: Context<C>,
    pub stores: Stores,
    topology: RwLock<Topology>,
    config: RunnerConfig,
    /// Consecutive failures per unit, for its own backoff.
    failures: Mutex<HashMap<String, u32>>,
    health: Arc<Health>,
}

/// Why a unit's pass must be retried (the message carries no secret material).
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("{0}")]
    Pass(#[from] super::Error),
    #[error("pass left problems to retry: {0}")]
    Problems(String),
    #[error("pass timed out")]
    TimedOut,
}

/// What to do after a pass that succeeded.
pub fn next_action(report: &ReconcileReport, config: &RunnerConfig, until_agent_stale: Option<Duration>) -> Action {
    if report.writes() > 0 || !report.pending_sql_actions.is_empty() {
        return Action::requeue(config.converging_requeue);
    }
    // Converged (or Stalled, waiting for a person): resync, or sooner when an agent's Lease would
    // expire, so a silent node is reported without any event.
    Action::requeue(until_agent_stale.map_or(config.resync, |stale| stale.min(config.resync)))
}

/// Exponential per-unit backoff: 1 s, 2 s, 4 s … 5 min.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8).saturating_sub(1)).min(Duration::from_secs(300))
}

/// The error policy: this unit alone waits, longer with every consecutive failure.
fn error_policy<C: Catalog>(unit: Arc<Unit>, error: &UnitError, shared: Arc<Shared<C>>) -> Action {
    let key = unit_key(&unit);
    let failures = {
        let mut failures = shared.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.clone()).or_default();
        *count += 1;
        *count
    };
    shared.ctx.metrics.reconcile_errors.inc();
    let delay = backoff(failures);
    tracing::warn!(unit = %key, %error, failures, retry_in = ?delay, "reconcile failed; this unit backs off");
    Action::requeue(delay)
}

fn unit_key(unit: &Unit) -> String {
    match unit.namespace().as_deref() {
        Some(ORPHANS_NAMESPACE) | None => unit.name_any(),
        Some(namespace) => format!("{namespace}/{}", unit.name_any()),
    }
}

/// Time until the first agent of `unit` would count as not reporting.
fn until_agent_stale(stores: &Stores, topology: &Topology, unit: &UnitKey, now: jiff::Timestamp) -> Option<Duration> {
    let nodes = topology.unit_nodes(unit);
    stores
        .leases
        .state()
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            nodes.contains(spec.holder_identity.as_deref()?).then_some(spec.renew_time.as_ref()?.0)
        })
        .filter_map(|renewed| {
            let stale_at = renewed.checked_add(AGENT_STALE_AFTER).ok()?;
            let left = stale_at.duration_since(now);
            (left > jiff::SignedDuration::ZERO).then(|| Duration::try_from(left).ok()).flatten()
        })
        .min()
        .map(|left| left + Duration::from_secs(1))
}

type PassFuture = Pin<Box<dyn Future<Output = Result<Action, UnitError>>>>;

async fn reconcile<C: Catalog + 'static>(unit: Arc<Unit>, shared: Arc<Shared<C>>) -> Result<Action, UnitError> {
    let key = unit_key(&unit);
    if shared.ctx.fence.lost() {
        return Ok(Action::await_change());
    }
    let topology = shared.topology.read().unwrap_or_else(|p| p.into_inner()).clone();
    let started = std::time::Instant::now();
    shared.health.begin(&key);
    let pass = async {
        if key == ORPHANS {
            shared.ctx.metrics.retain_units(&topology.members.keys().cloned().collect());
            Ok(reconcile_orphans(&shared.ctx, &shared.stores, &topology).await)
        } else {
            reconcile_unit(&shared.ctx, &shared.stores, &topology, &key).await
        }
    };
    let result = tokio::time::timeout(shared.config.pass_timeout, pass).await;
    shared.health.end(&key);
    shared.ctx.metrics.reconciles.inc();
    shared.ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let report = match result {
        Err(_) => return Err(UnitError::TimedOut),
        Ok(Err(error)) => return Err(UnitError::Pass(error)),
        Ok(Ok(report)) => report,
    };
    shared.health.reconciled.store(true, Ordering::SeqCst);
    tracing::info!(unit = %key, writes = report.writes(), problems = report.problems.len(), stalled = report.stalled, "reconcile pass done");
    if report.fenced {
        return Ok(Action::await_change());
    }
    if report.needs_retry() {
        let mut problems = report.problems.join("; ");
        if report.conflicts > 0 {
            problems.push_str(&format!(" ({} conflicts)", report.conflicts));
        }
        return Err(UnitError::Problems(problems));
    }
    shared.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    let stale = until_agent_stale(&shared.stores, &topology, &key, shared.ctx.clock.now());
    Ok(next_action(&report, &shared.config, stale))
}

/// Turn changes into the units to reconcile; keeps the topology and the unit store current.
struct Router {
    topology: Topology,
    units: Writer<Unit>,
}

impl Router {
    fn refresh_units(&mut self) {
        let mut refs: Vec<ObjectRef<Unit>> = self.topology.members.keys().map(|k| unit_ref(k)).collect();
        refs.push(orphans_ref());
        self.units.apply_watcher_event(&Event::Init);
        for reference in &refs {
            self.units.apply_watcher_event(&Event::InitApply(unit_object(reference)));
        }
        self.units.apply_watcher_event(&Event::InitDone);
    }

    /// Units affected by a batch of changes (topology recomputed first when it may have moved).
    fn route(&mut self, changes: &[Change], stores: &Stores) -> HashSet<ObjectRef<Unit>> {
        let before = self.topology.clone();
        if changes.iter().any(|c| matches!(c, Change::Resource(_) | Change::Node(_))) {
            self.topology = topology_of(stores);
            if self.topology.members != before.members || self.topology.nodes_of != before.nodes_of {
                self.refresh_units();
            }
        }
        let mut targets = HashSet::new();
        let add_units = |units: BTreeSet<UnitKey>, targets: &mut HashSet<ObjectRef<Unit>>| {
            targets.extend(units.iter().map(|u| unit_ref(u)));
        };
        for change in changes {
            match change {
                Change::Resource(resource) => {
                    let (kind, key) = resource.split_once('/').unwrap_or((resource.as_str(), ""));
                    let key = key.to_string();
                    let units: BTreeSet<UnitKey> = [&before, &self.topology]
                        .iter()
                        .filter_map(|t| t.unit_of_resource(kind, &key).cloned())
                        .collect();
                    if units.is_empty() || self.topology.unit_of_resource(kind, &key).is_none() {
                        targets.insert(orphans_ref());
                    }
                    add_units(units, &mut targets);
                }
                Change::Node(node) => {
                    add_units(before.units_on_node(node), &mut targets);
                    add_units(self.topology.units_on_node(node), &mut targets);
                }
                Change::HostConfig { name, contributors } => {
                    let mut units = self.topology.units_on_node(name);
                    for contributor in contributors {
                        let (kind, key) = contributor.split_once('/').unwrap_or((contributor.as_str(), ""));
                        units.extend(self.topology.unit_of_resource(kind, &key.to_string()).cloned());
                    }
                    if units.is_empty() {
                        targets.insert(orphans_ref());
                    }
                    add_units(units, &mut targets);
                }
                Change::Secret { namespace, name } => {
                    add_units(self.topology.units_of_secret(namespace, name), &mut targets)
                }
                Change::OwnedSecret(owner) => {
                    let unit = owner.as_ref().and_then(|owner| {
                        let (kind, key) = owner.split_once('/')?;
                        self.topology.unit_of_resource(kind, &key.to_string()).cloned()
                    });
                    match unit {
                        Some(unit) => {
                            targets.insert(unit_ref(&unit));
                        }
                        None => {
                            targets.insert(orphans_ref());
                        }
                    }
                }
                Change::Lease(node) => add_units(self.topology.units_on_node(node), &mut targets),
            }
        }
        targets
    }

    fn all(&self) -> Vec<ObjectRef<Unit>> {
        let mut refs: Vec<ObjectRef<Unit>> = self.topology.members.keys().map(|k| unit_ref(k)).collect();
        refs.push(orphans_ref());
        refs
    }
}

/// Resolves when leadership changes. Without an elector (leader election off, or its task ended)
/// the sender is gone and `changed()` would be ready at once on every call — the loop would spin —
/// so then this never resolves.
async fn leadership_changed(leading: &mut channel::Receiver<bool>) {
    if leading.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Read every registered target's roles; returns the units whose AG primary or master machine
/// changed since the last poll (a target's first poll only records).
async fn poll_roles<C: Catalog>(
    shared: Arc<Shared<C>>,
    last: Arc<Mutex<HashMap<String, RoleSnapshot>>>,
) -> Vec<UnitKey> {
    let targets: Vec<(String, (crate::catalog::CatalogTarget, UnitKey))> =
        shared.ctx.role_targets.lock().unwrap_or_else(|p| p.into_inner()).clone().into_iter().collect();
    let mut changed = vec![];
    for (key, (target, unit)) in targets {
        let observed =
            tokio::time::timeout(shared.config.role_poll * 2, shared.ctx.catalog.observe_roles(&target)).await;
        let Ok(Ok(snapshot)) = observed else { continue };
        let previous = last.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), snapshot.clone());
        if let Some(previous) = previous
            && (previous.primary != snapshot.primary || previous.master_machine != snapshot.master_machine)
        {
            tracing::info!(group = %key, from = ?previous.primary, to = ?snapshot.primary, master = ?snapshot.master_machine, "failover observed");
            changed.push(unit);
        }
    }
    changed
}

/// Run until `shutdown` completes: reconcile while leading, serve health and metrics, release the
/// Lease on the way out.
pub async fn run<C: Catalog + 'static>(
    mut ctx: Context<C>,
    config: RunnerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let health = Arc::new(Health::new(config.pass_timeout));
    let listener = tokio::net::TcpListener::bind(config.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics /healthz /readyz");
    let (stop_tx, stop_rx) = channel::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(
        axum::serve(listener, router(ctx.metrics.clone(), health.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );

    let (leading_tx, mut leading_rx) = channel::channel(config.leader.is_none());
    let elector = config.leader.clone().map(|settings| {
        let elector = LeaderElector::new(ctx.client.clone(), settings, ctx.clock.clone());
        tokio::spawn(elector.run(leading_tx, stop_rx.clone()))
    });
    if config.leader.is_some() {
        ctx.fence = Fence::following(leading_rx.clone());
    }

    let (changes_tx, mut changes_rx) = mpsc::unbounded();
    let (stores, reflectors) = start_reflectors(&ctx, &changes_tx);
    drop(changes_tx);
    let mut shutdown = std::pin::pin!(shutdown);
    // Reconcile nothing before every store has its initial list.
    let synced = async {
        let _ = stores.availability_groups.wait_until_ready().await;
        let _ = stores.master_groups.wait_until_ready().await;
        let _ = stores.workers.wait_until_ready().await;
        let _ = stores.secrets.wait_until_ready().await;
        let _ = stores.host_configs.wait_until_ready().await;
        let _ = stores.nodes.wait_until_ready().await;
        let _ = stores.owned_secrets.wait_until_ready().await;
        let _ = stores.leases.wait_until_ready().await;
    };
    tokio::select! {
        _ = &mut shutdown => {
            stop(stop_tx, elector, reflectors, http).await;
            return Ok(());
        }
        _ = synced => {}
    }
    health.synced.store(true, Ordering::SeqCst);
    tracing::info!("caches synced");

    let (unit_reader, unit_writer) = reflector::store::<Unit>();
    let mut routing = Router { topology: topology_of(&stores), units: unit_writer };
    routing.refresh_units();
    let shared = Arc::new(Shared {
        ctx,
        stores: stores.clone(),
        topology: RwLock::new(routing.topology.clone()),
        config: config.clone(),
        failures: Mutex::new(HashMap::new()),
        health: health.clone(),
    });
    let (queue_tx, queue_rx) = mpsc::unbounded::<ObjectRef<Unit>>();
    let leading_now = *leading_rx.borrow();
    if leading_now {
        for reference in routing.all() {
            let _ = queue_tx.unbounded_send(reference);
        }
    }
    let applier_config = ApplierConfig::default().debounce(config.debounce).concurrency(config.concurrency.max(1));
    let queue =
        queue_rx.map(|r| Ok::<_, std::convert::Infallible>(kube::runtime::controller::ReconcileRequest::from(r)));
    let mut passes = std::pin::pin!(applier(
        |unit, shared: Arc<Shared<C>>| -> PassFuture { Box::pin(reconcile(unit, shared)) },
        error_policy,
        shared.clone(),
        unit_reader,
        queue,
        applier_config,
    ));
    let last_roles: Arc<Mutex<HashMap<String, RoleSnapshot>>> = Arc::default();
    let mut role_timer = tokio::time::interval(config.role_poll);
    role_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut role_poll: Option<Pin<Box<dyn Future<Output = Vec<UnitKey>>>>> = None;
    loop {
        let leading = *leading_rx.borrow();
        health.leader.store(leading, Ordering::SeqCst);
        shared.ctx.metrics.leader.set(i64::from(leading));
        tokio::select! {
            _ = &mut shutdown => break,
            _ = role_timer.tick(), if role_poll.is_none() && leading => {
                role_poll = Some(Box::pin(poll_roles(shared.clone(), last_roles.clone())));
            }
            changed = async { role_poll.as_mut().expect("guarded").await }, if role_poll.is_some() => {
                role_poll = None;
                for unit in changed {
                    let _ = queue_tx.unbounded_send(unit_ref(&unit));
                }
            }
            _ = leadership_changed(&mut leading_rx) => {
                if *leading_rx.borrow() {
                    tracing::info!("became leader: reconciling every unit");
                    for reference in routing.all() {
                        let _ = queue_tx.unbounded_send(reference);
                    }
                } else {
                    health.reconciled.store(false, Ordering::SeqCst);
                }
            }
            change = changes_rx.next() => {
                let Some(change) = change else { break };
                let mut batch = vec![change];
                while let Ok(more) = changes_rx.try_recv() {
                    batch.push(more);
                }
                let targets = routing.route(&batch, &shared.stores);
                *shared.topology.write().unwrap_or_else(|p| p.into_inner()) = routing.topology.clone();
                if *leading_rx.borrow() {
                    for target in targets {
                        let _ = queue_tx.unbounded_send(target);
                    }
                }
            }
            result = passes.next() => {
                match result {
                    Some(Ok(_)) => {}
                    Some(Err(kube::runtime::controller::Error::ObjectNotFound(reference))) => {
                        tracing::debug!(unit = %reference, "unit gone before its reconcile");
                    }
                    Some(Err(error)) => tracing::debug!(%error, "reconcile"),
                    None => break,
                }
            }
        }
    }
    tracing::info!("shutting down: running passes finish, none starts");
    drop(queue_tx);
    let drain = async { while passes.next().await.is_some() {} };
    if tokio::time::timeout(config.pass_timeout, drain).await.is_err() {
        tracing::warn!("passes still running at the pass timeout; stopping them");
    }
    stop(stop_tx, elector, reflectors, http).await;
    Ok(())
}

async fn stop(
    stop_tx: channel::Sender<bool>,
    elector: Option<tokio::task::JoinHandle<()>>,
    reflectors: Vec<tokio::task::JoinHandle<()>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let _ = stop_tx.send(true);
    if let Some(elector) = elector {
        // Releases the lease so a standby takes over at once.
        let _ = elector.await;
    }
    for task in reflectors {
        task.abort();
    }
    let _ = http.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_converging_unit_comes_back_soon_and_a_converged_one_at_resync_or_agent_expiry() {
        let config = RunnerConfig::default();
        let wrote = ReconcileReport { host_config_applies: 1, ..Default::default() };
        assert_eq!(next_action(&wrote, &config, None), Action::requeue(config.converging_requeue));
        let quiet = ReconcileReport::default();
        assert_eq!(next_action(&quiet, &config, None), Action::requeue(config.resync));
        assert_eq!(
            next_action(&quiet, &config, Some(Duration::from_secs(40))),
            Action::requeue(Duration::from_secs(40))
        );
    }

    #[test]
    fn backoff_grows_per_failure_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert!(backoff(20) <= Duration::from_secs(300));
    }

    #[test]
    fn lease_renewals_within_the_staleness_window_do_not_trigger() {
        let lease = |second: i64| Lease {
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    jiff::Timestamp::from_second(second).unwrap(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        let window = AGENT_STALE_AFTER.as_secs();
        assert_eq!(lease_fingerprint(&lease(window * 10)), lease_fingerprint(&lease(window * 10 + 30)));
        assert_ne!(lease_fingerprint(&lease(window * 10)), lease_fingerprint(&lease(window * 12)));
    }
}
