//! The Kubernetes side of the agent, built like the kubelet's:
//!
//! - its HostConfig comes from one watch (a reflector on the object named after the node, field
//!   selector `metadata.name=<node>`): a spec change starts a pass at once;
//! - referenced Secrets are read by name from one namespace and kept ([`SecretCache`]); one is read
//!   again only when the version the operator records for it in the spec (`secretVersions`)
//!   changes;
//! - drift detection is a short poll of the host only (default 2 s): on a converged host a pass
//!   reads a few small files, two certificate stores, three services and one binding, and makes no
//!   API request at all. A poll covers every kind of drift alike (files, stores, registry,
//!   services, HTTP.SYS, the cluster role), where file notifications would cover files only;
//! - liveness is a `coordination.k8s.io` Lease renewed every 30 s ([`renew_lease`]), and the
//!   status is written (server-side apply on the status subresource, field manager `ssis-agent`)
//!   only when it changed.
//!
//! Failed passes back off exponentially (backon).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use backon::BackoffBuilder;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use ssis_crds::{HostConfig, HostConfigStatus};

use crate::engine::{AgentConfig, ApplyReport, SecretSource, reconcile_host};
use crate::host::Host;

/// How long the HostConfig watch stays open before it is renewed (kube's default is 290 s, the API
/// server's own default above 1800 s).
pub const WATCH_TIMEOUT_SECONDS: u32 = 1800;

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "ssis-agent";

/// The host shared between the async runtime and the blocking reconcile thread. A pass holds
/// the lock through all of its host calls, so each call must end on its own: the Windows backend
/// bounds its waits (service start/stop and a locked service database 30 s each, file-replace
/// retries about 1 s) and kills PowerShell after `host::windows::POWERSHELL_TIMEOUT` (180 s).
pub type SharedHost = Arc<Mutex<Box<dyn Host>>>;

/// Everything the runtime needs besides the client and the host.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Kubernetes node name = HostConfig name.
    pub node_name: String,
    /// The one namespace the agent reads Secrets from.
    pub namespace: String,
    pub agent: AgentConfig,
    /// Time between drift polls on a healthy host.
    pub drift_interval: Duration,
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// No HostConfig named after this node exists (yet).
    NoHostConfig,
    Synced {
        status_written: bool,
        report: ApplyReport,
    },
}

/// A Secret as read (`None`: it did not exist) with the version the spec named then.
type CachedSecret = (Option<String>, Option<Secret>);

/// The Secrets the agent has read, with the version the spec named when it read them.
#[derive(Debug, Default)]
pub struct SecretCache {
    entries: Mutex<HashMap<String, CachedSecret>>,
    /// Secret reads made (for tests and benchmarks).
    reads: std::sync::atomic::AtomicU64,
}

impl SecretCache {
    /// Secret GETs made so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What one pass reads Secrets through: the cache, reading a Secret again only when the spec's
/// version for it differs from the cached one (or names none). Used from the blocking thread.
struct PassSecrets {
    cache: Arc<SecretCache>,
    versions: BTreeMap<String, String>,
    api: Api<Secret>,
    handle: tokio::runtime::Handle,
}

impl SecretSource for PassSecrets {
    fn get(&self, secret_name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let wanted = self.versions.get(secret_name).cloned();
        let mut entries = self.cache.entries.lock().map_err(|_| "secret cache poisoned".to_string())?;
        let fresh = entries.get(secret_name).is_some_and(|(version, _)| version.is_some() && *version == wanted);
        if !fresh {
            self.cache.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let fetched = self
                .handle
                .block_on(self.api.get_opt(secret_name))
                .map_err(|error| format!("cannot read Secret {secret_name}: {error}"))?;
            entries.insert(secret_name.to_string(), (wanted, fetched));
        }
        let secret = entries.get(secret_name).and_then(|(_, secret)| secret.clone());
        Ok(secret.and_then(|s| {
            s.data
                .and_then(|data| data.get(key).map(|v| v.0.clone()))
                .or_else(|| s.string_data.and_then(|data| data.get(key).map(|v| v.clone().into_bytes())))
        }))
    }
}

/// What an agent keeps between passes.
#[derive(Debug, Default)]
pub struct AgentState {
    pub secrets: Arc<SecretCache>,
    /// When the liveness Lease was last renewed.
    pub lease_renewed: Mutex<Option<jiff::Timestamp>>,
}

/// Whether a pass writes the status it computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    /// Write it when it differs from the stored status (every pass of the running agent).
    IfChanged,
    /// End the pass before the write, as an agent killed right after applying would (fault tests).
    Skip,
}

/// One pass in detail, for callers that report per item (the simulated world).
#[derive(Debug)]
pub struct PassDetail {
    /// The status stored before the pass.
    pub previous: Option<HostConfigStatus>,
    /// The status the pass computed.
    pub status: HostConfigStatus,
    pub report: ApplyReport,
    pub status_written: bool,
    /// The status differed but writing it failed; the host changes of the pass stand.
    pub status_write_error: Option<kube::Error>,
}

/// One pass with a HostConfig read now (one GET), for tools and tests; the running agent takes the
/// HostConfig from its watch ([`run`]).
pub async fn sync_once(client: &Client, host: &SharedHost, config: &RuntimeConfig) -> anyhow::Result<SyncOutcome> {
    let state = AgentState::default();
    let host_config = Api::<HostConfig>::all(client.clone())
        .get_opt(&config.node_name)
        .await
        .with_context(|| format!("reading HostConfig {}", config.node_name))?;
    sync_outcome(client, host, config, host_config, &state).await
}

async fn sync_outcome(
    client: &Client,
    host: &SharedHost,
    config: &RuntimeConfig,
    host_config: Option<HostConfig>,
    state: &AgentState,
) -> anyhow::Result<SyncOutcome> {
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now());
    let result = sync_with(client, host, config, host_config, state, now, StatusWrite::IfChanged).await;
    // Metrics hook: one record per pass (crate::metrics).
    let metrics = crate::metrics::global();
    match &result {
        Ok(Some(pass)) => metrics.record_pass(
            &pass.status,
            &pass.report,
            pass.status_write_error.is_none(),
            now,
            std::time::Instant::now(),
        ),
        Ok(None) => metrics.record_no_host_config(now, std::time::Instant::now()),
        Err(_) => metrics.record_error(),
    }
    let Some(pass) = result? else {
        return Ok(SyncOutcome::NoHostConfig);
    };
    let report = pass.report;
    if report.total_writes() > 0 || report.failed_steps > 0 {
        tracing::info!(
            node = %config.node_name,
            writes = report.total_writes(),
            failed = report.failed_steps,
            drift_repaired = report.drift_repaired,
            changed = ?report.changed_items,
            "host pass"
        );
    }
    if let Some(error) = pass.status_write_error {
        return Err(anyhow::Error::new(error).context(format!("writing the status of HostConfig {}", config.node_name)));
    }
    Ok(SyncOutcome::Synced { status_written: pass.status_written, report })
}

/// One pass over `host_config` (as the agent's watch holds it; `None`: no HostConfig for this node)
/// with the clock reading `now` (the simulated world passes its manual clock). Secrets go through
/// `state`'s cache; the status is written only when it changed.
pub async fn sync_with(
    client: &Client,
    host: &SharedHost,
    config: &RuntimeConfig,
    host_config: Option<HostConfig>,
    state: &AgentState,
    now: jiff::Timestamp,
    write: StatusWrite,
) -> anyhow::Result<Option<PassDetail>> {
    let Some(host_config) = host_config.filter(|h| h.name_any() == config.node_name) else {
        return Ok(None);
    };
    let spec = host_config.spec.clone();
    let generation = host_config.metadata.generation.unwrap_or(0);
    let previous = host_config.status.clone();
    let secrets = PassSecrets {
        cache: state.secrets.clone(),
        versions: spec.secret_versions.iter().map(|v| (v.name.clone(), v.version.clone())).collect(),
        api: Api::namespaced(client.clone(), &config.namespace),
        handle: tokio::runtime::Handle::current(),
    };
    let shared = host.clone();
    let agent = config.agent.clone();
    let (previous, status, report) = tokio::task::spawn_blocking(move || {
        let mut guard = shared.lock().map_err(|_| anyhow::anyhow!("host lock poisoned by an earlier panic"))?;
        let (status, report) =
            reconcile_host(guard.as_mut(), &spec, generation, &secrets, previous.as_ref(), now, &agent);
        Ok::<_, anyhow::Error>((previous, status, report))
    })
    .await??;
    let mut pass = PassDetail { previous, status, report, status_written: false, status_write_error: None };
    if write == StatusWrite::IfChanged && pass.previous.as_ref() != Some(&pass.status) {
        let patch = serde_json::json!({
            "apiVersion": "ssis.sqlops.io/v1alpha1",
            "kind": "HostConfig",
            "status": pass.status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api: Api<HostConfig> = Api::all(client.clone());
        match api.patch_status(&host_config.name_any(), &params, &Patch::Apply(patch)).await {
            Ok(_) => pass.status_written = true,
            Err(error) => pass.status_write_error = Some(error),
        }
    }
    Ok(Some(pass))
}

/// Renew this node's liveness Lease when it is due (at most once per
/// [`ssis_crds::agent_lease::RENEW_EVERY_SECONDS`]); returns whether a renewal was sent.
pub async fn renew_lease(
    client: &Client,
    config: &RuntimeConfig,
    state: &AgentState,
    now: jiff::Timestamp,
) -> Result<bool, kube::Error> {
    use ssis_crds::agent_lease;
    let every = jiff::SignedDuration::from_secs(agent_lease::RENEW_EVERY_SECONDS as i64);
    let last = *state.lease_renewed.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|last| now.duration_since(last) < every) {
        return Ok(false);
    }
    write_lease(client, config, state, now).await?;
    Ok(true)
}

/// Write this node's liveness Lease with `renewTime` = `now` (the running agent does so on its
/// own 30-second timer).
pub async fn write_lease(
    client: &Client,
    config: &RuntimeConfig,
    state: &AgentState,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    use ssis_crds::agent_lease;
    let name = agent_lease::name(&config.node_name);
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": name, "namespace": config.namespace, "labels": { agent_lease::LABEL: "true" } },
        "spec": {
            "holderIdentity": config.node_name,
            "leaseDurationSeconds": agent_lease::DURATION_SECONDS,
            "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
        },
    });
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(lease)).await?;
    *state.lease_renewed.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    Ok(())
}

fn retry_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Run until `shutdown` resolves: a pass once the HostConfig watch has its initial state, on every
/// change of the HostConfig and every `drift_interval`; failures back off exponentially. The
/// liveness Lease is renewed on its own timer.
pub async fn run(
    client: Client,
    host: SharedHost,
    config: RuntimeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let api: Api<HostConfig> = Api::all(client.clone());
    let selector = format!("metadata.name={}", config.node_name);
    let (reader, writer) = reflector::store::<HostConfig>();
    let mut events = reflector::reflector(writer, watcher(api, watcher::Config::default().fields(&selector)))
        .default_backoff()
        .boxed();
    let state = AgentState::default();
    let own = ObjectRef::<HostConfig>::new(&config.node_name);
    tokio::pin!(shutdown);
    let mut backoff = retry_backoff();
    let mut delay: Option<Duration> = None;
    let mut lease_timer = tokio::time::interval(Duration::from_secs(ssis_crds::agent_lease::RENEW_EVERY_SECONDS));
    lease_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
            _ = lease_timer.tick() => {
                if let Err(error) = write_lease(&client, &config, &state, jiff::Timestamp::now()).await {
                    crate::metrics::global().record_api_error();
                    tracing::warn!(%error, "renewing the liveness Lease failed; retrying on the next tick");
                }
                continue;
            }
            event = events.next() => match event {
                Some(Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {}
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    crate::metrics::global().record_api_error();
                    tracing::warn!(%error, "HostConfig watch error");
                    continue;
                }
                None => return Err(anyhow::anyhow!("the HostConfig watch ended")),
            },
            () = sleep_or_forever(delay) => {}
        }
        let host_config = reader.get(&own).map(|h| (*h).clone());
        delay = Some(match sync_outcome(&client, &host, &config, host_config, &state).await {
            Ok(SyncOutcome::Synced { report, .. }) if report.failed_steps > 0 => {
                backoff.next().unwrap_or(config.drift_interval)
            }
            Ok(outcome) => {
                if outcome == SyncOutcome::NoHostConfig {
                    tracing::debug!(node = %config.node_name, "no HostConfig for this node yet");
                }
                backoff = retry_backoff();
                config.drift_interval
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "sync failed; retrying with backoff");
                backoff.next().unwrap_or(config.drift_interval)
            }
        });
    }
}

/// Sleep `delay`, or forever before the first pass (which waits for the watch's initial state).
async fn sleep_or_forever(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
