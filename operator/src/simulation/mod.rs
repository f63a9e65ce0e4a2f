//! The deterministic in-process world: an in-memory Kubernetes API, simulated Windows hosts in a
//! world directory each driven by the real agent engine, the simulated SSISDB / availability group,
//! and the real operator (every unit's `reconcile_unit` and the orphan sweep), stepped in rounds:
//!
//! operator pass → every agent pass (node name order) → simulated network observe → catalog
//! ingest → clock advance.
//!
//! Every write is counted: API writes by component, verb and resource; SQL actions by kind; host
//! writes by action kind. A run ends at a fixed point (a round without writes, every custom
//! resource Ready) or at a round limit, which yields a readable account of what never converged.
//! Used by `ssis-operator simulate`, the end-to-end tests and the fleet benchmark.

pub mod api;
pub mod faults;
pub mod issuer;
pub mod manifests;
pub mod narrate;
pub mod recording;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ssis_agent::engine::{ActionKind, AgentConfig, ApplyReport};
use ssis_agent::host::Host;
use ssis_agent::host::simulated::provision::{Features, provision};
use ssis_agent::host::simulated::traffic::ConnectionFailure;
use ssis_agent::host::simulated::{SimulatedHost, faults as host_faults, network};
use ssis_agent::runtime::{AgentState, RuntimeConfig, SharedHost, StatusWrite, renew_lease, sync_with};
use ssis_crds::{
    HostConfig, HostConfigStatus, ItemState, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup,
    condition_types, find_condition,
};

use crate::catalog::{SimulatedCatalog, SqlAction, simulated::IngestReport};
use crate::controller::stores::{Snapshot, StoreWriters, Stores};
use crate::controller::{Clock, Context, ManualClock, ReconcileReport, reconcile_all};

use self::api::{Component, SimulatedApi, WriteKey};
use self::issuer::SeededIssuer;
use self::manifests::{HostSetup, Manifests, node_object};
use self::recording::RecordingCatalog;

/// How a world is set up.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// Seeds the certificate generator.
    pub seed: u64,
    /// Simulated time per round (the operator's requeue interval while converging).
    pub round_step: Duration,
    /// Simulated time at round 0.
    pub start: jiff::Timestamp,
    pub operator_namespace: String,
    /// Kept after the world is dropped (for inspection).
    pub keep_directory: bool,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            round_step: Duration::from_secs(1),
            start: jiff::Timestamp::from_second(1_780_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            operator_namespace: "ssis-system".into(),
            keep_directory: false,
        }
    }
}

/// One simulated Windows node.
#[derive(Clone, Debug)]
pub struct SimNode {
    pub root: PathBuf,
    pub computer_name: String,
    pub setup: HostSetup,
    /// Whether its agent takes part in rounds (a node that never reports has it off).
    pub agent_running: bool,
    /// What its agent keeps between passes (Secrets read, last Lease renewal); a restarted agent
    /// starts with nothing.
    pub agent_state: Arc<AgentState>,
}

/// What one agent pass did.
#[derive(Clone, Debug, Default)]
pub struct AgentPass {
    /// No HostConfig named after the node yet.
    pub no_host_config: bool,
    pub report: ApplyReport,
    pub status_written: bool,
    /// The agent renewed its liveness Lease in this pass.
    pub lease_renewed: bool,
    /// (item, what was done) for items changed in this pass.
    pub changed: Vec<(String, String)>,
    /// (item, why) for items that failed in this pass.
    pub failed: Vec<(String, String)>,
    /// The pass could not run (API error reading the HostConfig or a Secret, host error).
    pub error: Option<String>,
}

/// Everything one round did.
#[derive(Clone, Debug, Default)]
pub struct RoundReport {
    pub round: u64,
    pub now: jiff::Timestamp,
    /// The operator pass (`Err` when it aborted, `None` when the operator is stopped).
    pub operator: Option<Result<ReconcileReport, String>>,
    /// SQL actions executed this round, by availability group.
    pub sql: Vec<(String, SqlAction)>,
    pub agents: BTreeMap<String, AgentPass>,
    /// API writes this round.
    pub api_writes: BTreeMap<WriteKey, u64>,
    pub traffic_failures: Vec<ConnectionFailure>,
    pub ingest: BTreeMap<String, IngestReport>,
}

impl RoundReport {
    /// API writes that are not agent liveness (Lease renewals).
    pub fn api_state_writes(&self) -> u64 {
        let total: u64 = self.api_writes.values().sum();
        total - self.liveness_writes()
    }

    /// Agent Lease renewals this round.
    pub fn liveness_writes(&self) -> u64 {
        self.agents.values().filter(|a| a.lease_renewed).count() as u64
    }

    pub fn host_writes(&self) -> u64 {
        self.agents.values().map(|a| u64::from(a.report.total_writes())).sum()
    }

    /// Writes of any kind except liveness (Lease renewals).
    pub fn writes(&self) -> u64 {
        self.api_state_writes() + self.sql.len() as u64 + self.host_writes()
    }
}

/// Cumulative write counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub api: BTreeMap<WriteKey, u64>,
    pub sql: BTreeMap<String, u64>,
    pub host: BTreeMap<String, u64>,
    /// Agent Lease renewals.
    pub lease_renewals: u64,
}

impl Totals {
    fn add(&mut self, round: &RoundReport) {
        for (key, n) in &round.api_writes {
            *self.api.entry(key.clone()).or_default() += n;
        }
        for (_, action) in &round.sql {
            *self.sql.entry(crate::controller::apply::action_kind(action).to_string()).or_default() += 1;
        }
        for pass in round.agents.values() {
            for (kind, n) in &pass.report.writes {
                *self.host.entry(format!("{kind:?}")).or_default() += u64::from(*n);
            }
        }
        self.lease_renewals += round.liveness_writes();
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Convergence {
    /// Rounds run in this call.
    pub rounds: u64,
    /// The round number of the fixed point.
    pub at_round: u64,
}

/// The temporary world directory (removed on drop unless kept).
struct WorldDirectory {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorldDirectory {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

static WORLD_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The simulated world.
pub struct World {
    pub api: SimulatedApi,
    pub catalog: SimulatedCatalog,
    pub clock: ManualClock,
    pub issuer: Arc<SeededIssuer>,
    pub nodes: BTreeMap<String, SimNode>,
    pub agent_config: AgentConfig,
    pub options: WorldOptions,
    pub round: u64,
    pub totals: Totals,
    /// Whether the operator runs in rounds (stopped = crashed / restarting).
    pub operator_running: bool,
    /// The last round run.
    pub last: RoundReport,
    /// Each node's agent metrics, recorded from its passes as the running agent records them.
    pub agent_metrics: BTreeMap<String, Arc<ssis_agent::metrics::AgentMetrics>>,
    recording: RecordingCatalog<SimulatedCatalog>,
    ctx: Context<RecordingCatalog<SimulatedCatalog>>,
    /// The operator's stores, refilled from the API server before each operator pass (the
    /// running operator keeps them current with watches; here every pass sees the latest state).
    stores: Stores,
    writers: StoreWriters,
    directory: WorldDirectory,
}

impl World {
    /// A world from manifests: API objects stored, Windows Nodes created, hosts provisioned.
    pub async fn new(manifests: &Manifests, options: WorldOptions) -> Result<Self, String> {
        let counter = WORLD_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ssis-sim-{}-{counter}-{}", std::process::id(), options.seed));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("hosts")).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let directory = WorldDirectory { path, keep: options.keep_directory };

        let nodes = manifests.windows_nodes();
        let setups = manifests.host_features(&nodes);
        let mut objects = manifests.api_objects();
        objects.extend(nodes.iter().map(|(name, labels)| node_object(name, labels)));
        let api = SimulatedApi::new(objects, &options.operator_namespace).await?;
        let catalog = SimulatedCatalog::new();
        let clock = ManualClock::new(options.start);
        let server_clock = clock.clone();
        api.server.set_clock(Arc::new(move || server_clock.now()));
        let issuer = Arc::new(SeededIssuer::new(options.seed));
        let recording = RecordingCatalog::new(catalog.clone());
        let ctx = operator_context(&api, &recording, &catalog, &clock, &issuer, &options.operator_namespace);
        let (stores, writers) = Stores::writable();
        let mut world = Self {
            api,
            catalog,
            clock,
            issuer,
            nodes: BTreeMap::new(),
            agent_config: AgentConfig::default(),
            options,
            round: 0,
            totals: Totals::default(),
            operator_running: true,
            last: RoundReport::default(),
            agent_metrics: BTreeMap::new(),
            recording,
            ctx,
            stores,
            writers,
            directory,
        };
        for (name, setup) in setups {
            world.provision_host(&name, setup)?;
        }
        Ok(world)
    }

    /// The bundled examples.
    pub async fn from_examples(options: WorldOptions) -> Result<Self, String> {
        Self::new(&Manifests::bundled_examples()?, options).await
    }

    pub fn directory(&self) -> &Path {
        &self.directory.path
    }

    /// Provision a simulated host for `node` as SQL Server setup leaves it.
    pub fn provision_host(&mut self, node: &str, setup: HostSetup) -> Result<(), String> {
        let root = self.directory.path.join("hosts").join(node);
        let computer_name = node.to_uppercase();
        let features = Features { master: setup.master, worker: setup.worker, legacy: setup.legacy };
        provision(&root, &computer_name, setup.version, features).map_err(|e| format!("provisioning {node}: {e}"))?;
        self.nodes.insert(
            node.to_string(),
            SimNode { root, computer_name, setup, agent_running: true, agent_state: Arc::default() },
        );
        Ok(())
    }

    /// A client acting as `component`.
    pub fn client(&self, component: Component) -> kube::Client {
        self.api.client(component)
    }

    /// The operator's catalog target key of an availability group (`namespace/name`).
    pub fn sql_world(&self, key: &str) -> Option<crate::catalog::simulated::SqlWorld> {
        self.catalog.world(key)
    }

    /// Stop the operator (its next pass does not happen until [`World::restart_operator`]).
    pub fn stop_operator(&mut self) {
        self.operator_running = false;
    }

    /// A new operator process: fresh `Context` over the same API, SQL and clock.
    pub fn restart_operator(&mut self) {
        self.recording = RecordingCatalog::new(self.catalog.clone());
        self.ctx = operator_context(
            &self.api,
            &self.recording,
            &self.catalog,
            &self.clock,
            &self.issuer,
            &self.options.operator_namespace,
        );
        self.operator_running = true;
    }

    /// One round: operator → agents → network → SQL ingest → clock.
    pub async fn step(&mut self) -> RoundReport {
        self.round += 1;
        let before = self.api.writes();
        let mut report = RoundReport { round: self.round, now: self.clock.now(), ..Default::default() };
        if self.operator_running {
            report.operator = Some(self.operator_pass().await);
        }
        report.sql = self.recording.drain();
        let nodes: Vec<String> = self.nodes.iter().filter(|(_, n)| n.agent_running).map(|(k, _)| k.clone()).collect();
        for node in nodes {
            let pass = self.agent_pass(&node, None, true).await;
            report.agents.insert(node, pass);
        }
        let (failures, ingest) = self.network_round();
        report.traffic_failures = failures;
        report.ingest = ingest;
        report.api_writes = delta(&before, &self.api.writes());
        self.clock.advance(self.options.round_step);
        self.totals.add(&report);
        self.last = report.clone();
        report
    }

    /// The API server's current objects, as the operator's watches would hold them.
    pub fn snapshot(&self) -> Snapshot {
        fn all<K: serde::de::DeserializeOwned>(
            server: &ssis_sim_apiserver::ApiServer,
            group: &str,
            plural: &str,
        ) -> Vec<K> {
            server.objects(group, plural).into_iter().filter_map(|o| serde_json::from_value(o).ok()).collect()
        }
        let server = &self.api.server;
        Snapshot {
            availability_groups: all(server, ssis_crds::GROUP, "ssisdbavailabilitygroups"),
            master_groups: all(server, ssis_crds::GROUP, "scaleoutmastergroups"),
            workers: all(server, ssis_crds::GROUP, "scaleoutworkers"),
            host_configs: all(server, ssis_crds::GROUP, "hostconfigs"),
            nodes: all(server, "", "nodes"),
            secrets: all(server, "", "secrets"),
            leases: all(server, "coordination.k8s.io", "leases"),
        }
    }

    /// Bring the operator's stores up to date with the API server.
    pub fn sync_stores(&mut self) {
        let snapshot = self.snapshot();
        self.writers.replace(snapshot, &self.options.operator_namespace);
    }

    /// What the planner would see now for the unit of deployments `unit` (the operator's
    /// dereference stage), e.g. to time the pure planner on its own.
    pub async fn plan_input(&mut self, unit: &str) -> Result<crate::plan::PlanInput, String> {
        self.sync_stores();
        let topology = crate::controller::topology_of(&self.stores);
        let mut report = ReconcileReport::default();
        let world = crate::controller::dereference::dereference(
            &self.ctx,
            &self.stores,
            &topology,
            &unit.to_string(),
            &mut report,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(world.input)
    }

    /// The metrics of the current operator process (a restart starts fresh ones).
    pub fn operator_metrics(&self) -> &Arc<crate::controller::Metrics> {
        &self.ctx.metrics
    }

    /// The units of deployments the operator plans separately.
    pub fn units(&mut self) -> Vec<String> {
        self.sync_stores();
        crate::controller::topology_of(&self.stores).members.keys().cloned().collect()
    }

    /// A fresh operator context over this world's API server, SQL worlds, certificate issuer and
    /// clock, e.g. to run the long-running operator (`controller::runner::run`) against the world.
    pub fn new_operator_context(&self) -> Context<RecordingCatalog<SimulatedCatalog>> {
        let recording = RecordingCatalog::new(self.catalog.clone());
        operator_context(
            &self.api,
            &recording,
            &self.catalog,
            &self.clock,
            &self.issuer,
            &self.options.operator_namespace,
        )
    }

    /// One operator pass: every unit of deployments, then the orphan sweep, from stores that hold
    /// the API server's current state.
    pub async fn operator_pass(&mut self) -> Result<ReconcileReport, String> {
        self.sync_stores();
        reconcile_all(&self.ctx, &self.stores).await.map_err(|e| e.to_string())
    }

    /// The simulated network once: which heartbeats get through, delivered to SQL.
    pub fn network_round(&mut self) -> (Vec<ConnectionFailure>, BTreeMap<String, IngestReport>) {
        match network::observe(&self.directory.path) {
            Ok(traffic) => {
                let ingest = self.catalog.ingest(&traffic, self.clock.now());
                (traffic.failures, ingest)
            }
            Err(error) => (
                vec![ConnectionFailure { node: "network".into(), message: format!("observing the world: {error}") }],
                BTreeMap::new(),
            ),
        }
    }

    /// One pass of `node`'s agent: the agent runtime's own pass (`ssis_agent::runtime::sync_with`:
    /// the node's HostConfig as its watch would hold it, Secrets through the agent's cache,
    /// `reconcile_host`, the status written with server-side apply when it changed) and its Lease
    /// renewal when due, at the world's time. `wrap` replaces the host (e.g. one that dies after
    /// some writes); with `write_status` false the agent "dies" before writing its status.
    pub async fn agent_pass(
        &mut self,
        node: &str,
        wrap: Option<&mut dyn FnMut(SimulatedHost) -> Box<dyn Host>>,
        write_status: bool,
    ) -> AgentPass {
        let mut pass = AgentPass::default();
        let Some(sim) = self.nodes.get(node).cloned() else {
            pass.error = Some(format!("no simulated host for node {node}"));
            return pass;
        };
        let host = match SimulatedHost::open(&sim.root, Some(self.directory.path.clone())) {
            Ok(host) => host,
            Err(error) => {
                pass.error = Some(format!("opening host {node}: {error}"));
                return pass;
            }
        };
        let host: Box<dyn Host> = match wrap {
            Some(wrap) => wrap(host),
            None => Box::new(host),
        };
        let config = RuntimeConfig {
            node_name: node.to_string(),
            namespace: self.options.operator_namespace.clone(),
            agent: self.agent_config.clone(),
            drift_interval: Duration::from_secs(2),
        };
        let write = if write_status { StatusWrite::IfChanged } else { StatusWrite::Skip };
        let client = self.api.client(Component::Agent);
        match renew_lease(&client, &config, &sim.agent_state, self.clock.now()).await {
            Ok(renewed) => pass.lease_renewed = renewed,
            Err(error) => pass.error = Some(format!("renewing the Lease of {node}: {error}")),
        }
        let host_config = self
            .api
            .server
            .object(ssis_crds::GROUP, "hostconfigs", "", node)
            .and_then(|object| serde_json::from_value::<HostConfig>(object).ok());
        let shared: SharedHost = Arc::new(std::sync::Mutex::new(host));
        let detail =
            match sync_with(&client, &shared, &config, host_config, &sim.agent_state, self.clock.now(), write).await {
                Ok(Some(detail)) => detail,
                Ok(None) => {
                    pass.no_host_config = true;
                    return pass;
                }
                Err(error) => {
                    pass.error = Some(format!("{error:#}"));
                    return pass;
                }
            };
        for item in &detail.status.items {
            match (item.state, item.reason.as_deref()) {
                (ItemState::Applied, Some("Changed")) => {
                    pass.changed.push((item.name.clone(), item.message.clone().unwrap_or_default()))
                }
                (ItemState::Failed | ItemState::Refused, _) => {
                    pass.failed.push((item.name.clone(), item.message.clone().unwrap_or_default()))
                }
                _ => {}
            }
        }
        self.agent_metrics.entry(node.to_string()).or_default().record_pass(
            &detail.status,
            &detail.report,
            detail.status_write_error.is_none(),
            self.clock.now(),
            std::time::Instant::now(),
        );
        pass.report = detail.report;
        pass.status_written = detail.status_written;
        if let Some(error) = detail.status_write_error {
            pass.error = Some(format!("writing the status of HostConfig {node}: {error}"));
        }
        pass
    }

    /// Run rounds until a fixed point (a round without writes of any kind, every custom resource
    /// Ready) or `max_rounds`; the error is a readable account of what never converged.
    pub async fn run_until_converged(&mut self, max_rounds: u64) -> Result<Convergence, String> {
        for ran in 1..=max_rounds {
            let report = self.step().await;
            if report.writes() == 0 && self.not_ready().await.is_empty() {
                return Ok(Convergence { rounds: ran, at_round: report.round });
            }
        }
        Err(self.explain(&format!("no fixed point after {max_rounds} rounds")).await)
    }

    /// Run `rounds` rounds; returns the writes of any kind (liveness excluded) they caused.
    pub async fn run_rounds(&mut self, rounds: u64) -> u64 {
        let mut writes = 0;
        for _ in 0..rounds {
            writes += self.step().await.writes();
        }
        writes
    }

    /// Custom resources (and HostConfigs of running agents) that are not Ready, with why.
    pub async fn not_ready(&self) -> Vec<String> {
        let client = self.api.client(Component::User);
        let mut problems = Vec::new();
        let check = |kind: &str, name: String, generation: Option<i64>, deleting: bool, conditions: &[_]| {
            let ready = find_condition(conditions, condition_types::READY);
            match ready {
                _ if deleting => Some(format!("{kind} {name}: being deleted")),
                Some(c) if c.status == "True" && c.observed_generation == generation => None,
                Some(c) => Some(format!("{kind} {name}: Ready={} ({}): {}", c.status, c.reason, c.message)),
                None => Some(format!("{kind} {name}: no Ready condition yet")),
            }
        };
        let list = ListParams::default();
        match Api::<SsisdbAvailabilityGroup>::all(client.clone()).list(&list).await {
            Ok(items) => problems.extend(items.items.iter().filter_map(|o| {
                let conditions = o.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
                check(
                    "SsisdbAvailabilityGroup",
                    crate::plan::object_key(&o.metadata),
                    o.metadata.generation,
                    o.metadata.deletion_timestamp.is_some(),
                    &conditions,
                )
            })),
            Err(e) => problems.push(format!("listing SsisdbAvailabilityGroups: {e}")),
        }
        match Api::<ScaleOutMasterGroup>::all(client.clone()).list(&list).await {
            Ok(items) => problems.extend(items.items.iter().filter_map(|o| {
                let conditions = o.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
                check(
                    "ScaleOutMasterGroup",
                    crate::plan::object_key(&o.metadata),
                    o.metadata.generation,
                    o.metadata.deletion_timestamp.is_some(),
                    &conditions,
                )
            })),
            Err(e) => problems.push(format!("listing ScaleOutMasterGroups: {e}")),
        }
        match Api::<ScaleOutWorker>::all(client.clone()).list(&list).await {
            Ok(items) => problems.extend(items.items.iter().filter_map(|o| {
                let conditions = o.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
                check(
                    "ScaleOutWorker",
                    crate::plan::object_key(&o.metadata),
                    o.metadata.generation,
                    o.metadata.deletion_timestamp.is_some(),
                    &conditions,
                )
            })),
            Err(e) => problems.push(format!("listing ScaleOutWorkers: {e}")),
        }
        match Api::<HostConfig>::all(client).list(&list).await {
            Ok(items) => problems.extend(
                items
                    .items
                    .iter()
                    .filter(|h| self.nodes.get(&h.name_any()).is_some_and(|n| n.agent_running))
                    .filter_map(|h| {
                        let conditions = h.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
                        check("HostConfig", h.name_any(), h.metadata.generation, false, &conditions)
                    }),
            ),
            Err(e) => problems.push(format!("listing HostConfigs: {e}")),
        }
        problems
    }

    /// A readable account of the current state: every custom resource's conditions and key status,
    /// every node's items that are not Applied, the last connection failures, operator problems.
    pub async fn explain(&self, headline: &str) -> String {
        narrate::explain(self, headline).await
    }

    // ---- user actions and faults ----

    /// `kubectl apply` of one object (server-side apply, field manager `kubectl`).
    pub async fn apply_object(&self, object: serde_json::Value) -> Result<(), String> {
        let client = self.api.client(Component::User);
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version.as_str()));
        let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, version, &kind));
        let api: Api<kube::api::DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(namespace) => Api::namespaced_with(client, namespace, &resource),
            None => Api::all_with(client, &resource),
        };
        let params = PatchParams::apply("kubectl").force();
        api.patch(&name, &params, &Patch::Apply(&object)).await.map_err(|e| format!("applying {kind} {name}: {e}"))?;
        Ok(())
    }

    /// Create or relabel a Windows node (`kubectl label node`), provisioning a host for a new
    /// node with what setup installed.
    pub async fn label_node(
        &mut self,
        node: &str,
        labels: &BTreeMap<String, String>,
        setup: HostSetup,
    ) -> Result<(), String> {
        let api: Api<Node> = Api::all(self.api.client(Component::User));
        let mut all = BTreeMap::from([(manifests::OS_LABEL.to_string(), "windows".to_string())]);
        all.extend(labels.clone());
        match api.get_opt(node).await.map_err(|e| format!("reading Node {node}: {e}"))? {
            Some(_) => {
                let patch = serde_json::json!({ "metadata": { "labels": all } });
                api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| format!("labelling Node {node}: {e}"))?;
            }
            None => {
                let object: Node = serde_json::from_value(node_object(node, &all)).map_err(|e| e.to_string())?;
                api.create(&PostParams::default(), &object).await.map_err(|e| format!("creating Node {node}: {e}"))?;
            }
        }
        if !self.nodes.contains_key(node) {
            self.provision_host(node, setup)?;
        }
        Ok(())
    }

    /// `kubectl delete` of a namespaced custom resource. An object with finalizers gets a
    /// deletionTimestamp and stays until they are removed.
    pub async fn delete_object<K>(&self, namespace: &str, name: &str) -> Result<(), String>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.api.client(Component::User), namespace);
        api.delete(name, &DeleteParams::default()).await.map_err(|e| format!("deleting {name}: {e}"))?;
        Ok(())
    }

    /// Move the master cluster role to `node` (Move-ClusterGroup).
    pub fn move_master_role(&self, role: &str, node: &str) -> Result<String, String> {
        let computer =
            self.nodes.get(node).map(|n| n.computer_name.clone()).ok_or_else(|| format!("no node {node}"))?;
        host_faults::move_cluster_role(&self.directory.path, role, Some(&computer)).map_err(|e| e.to_string())
    }

    /// The simulated host of `node`.
    pub fn host(&self, node: &str) -> Result<SimulatedHost, String> {
        let sim = self.nodes.get(node).ok_or_else(|| format!("no node {node}"))?;
        SimulatedHost::open(&sim.root, Some(self.directory.path.clone())).map_err(|e| e.to_string())
    }

    /// The root directory of `node`'s host (for fault injection).
    pub fn host_root(&self, node: &str) -> Result<PathBuf, String> {
        self.nodes.get(node).map(|n| n.root.clone()).ok_or_else(|| format!("no node {node}"))
    }

    /// The node whose host has this Windows computer name (connection failures name computers).
    pub fn node_by_computer_name(&self, computer_name: &str) -> Option<&str> {
        self.nodes.iter().find(|(_, n)| n.computer_name.eq_ignore_ascii_case(computer_name)).map(|(k, _)| k.as_str())
    }

    /// Stop or start taking `node`'s agent into rounds.
    pub fn set_agent_running(&mut self, node: &str, running: bool) {
        if let Some(sim) = self.nodes.get_mut(node) {
            sim.agent_running = running;
        }
    }

    /// A HostConfig as stored.
    pub async fn host_config(&self, node: &str) -> Option<HostConfig> {
        Api::<HostConfig>::all(self.api.client(Component::User)).get_opt(node).await.ok().flatten()
    }

    /// Every custom object of kind `K`, sorted by namespace/name.
    pub async fn list<K>(&self) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut items = Api::<K>::all(self.api.client(Component::User))
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        items.sort_by_key(|o| (o.meta().namespace.clone(), o.meta().name.clone()));
        items
    }

    /// Host writes of a kind so far.
    pub fn host_writes(&self, kind: ActionKind) -> u64 {
        self.totals.host.get(&format!("{kind:?}")).copied().unwrap_or(0)
    }

    /// Current status of a HostConfig (for assertions).
    pub async fn host_status(&self, node: &str) -> Option<HostConfigStatus> {
        self.host_config(node).await.and_then(|h| h.status)
    }
}

fn operator_context(
    api: &SimulatedApi,
    recording: &RecordingCatalog<SimulatedCatalog>,
    catalog: &SimulatedCatalog,
    clock: &ManualClock,
    issuer: &Arc<SeededIssuer>,
    operator_namespace: &str,
) -> Context<RecordingCatalog<SimulatedCatalog>> {
    let mut ctx = Context::new(api.client(Component::Operator), recording.clone(), operator_namespace, issuer.clone());
    ctx.clock = Arc::new(clock.clone());
    let worlds = catalog.clone();
    // The first observation of an availability group finds the SQL world its manual setup left.
    ctx.prepare_target = Some(Box::new(move |target, password| {
        worlds.ensure_world(target, password.clone());
    }));
    ctx
}

fn delta(before: &BTreeMap<WriteKey, u64>, after: &BTreeMap<WriteKey, u64>) -> BTreeMap<WriteKey, u64> {
    after
        .iter()
        .filter_map(|(key, n)| {
            let d = n - before.get(key).copied().unwrap_or(0);
            (d > 0).then(|| (key.clone(), d))
        })
        .collect()
}
