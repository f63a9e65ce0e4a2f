//! The Kubernetes side of the agent: read the node's HostConfig, read referenced Secrets (by name,
//! one namespace), run [`reconcile_host`] on a blocking thread, write the status with server-side
//! apply on the status subresource (field manager `ssis-agent`), and repeat.
//!
//! Drift detection is a short poll: every `drift_interval` (default 2 s) the agent runs a full
//! pass, which on a converged host is reads only (a few small files, two certificate stores,
//! three services, one binding) and writes nothing — not even status. A poll covers every kind of
//! drift the same way (files, certificate stores, registry, services, HTTP.SYS, the cluster role),
//! works identically on Windows and on simulated hosts shared across processes, and keeps repair
//! under 5 s; file-change notifications would cover files only and miss stores and services. A
//! HostConfig watch (field selector `metadata.name=<node>`) triggers a pass at once when the spec
//! changes. Failed passes back off exponentially (backon) instead of polling.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use backon::BackoffBuilder;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use ssis_crds::{HostConfig, HostConfigStatus};

use crate::engine::{AgentConfig, ApplyReport, SecretSource, reconcile_host};
use crate::host::Host;

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

/// Secrets read by name from one namespace, each fetched at most once per pass. Used from the
/// blocking reconcile thread.
pub struct KubeSecretSource {
    api: Api<Secret>,
    handle: tokio::runtime::Handle,
    cache: Mutex<BTreeMap<String, Option<Secret>>>,
}

impl KubeSecretSource {
    pub fn new(client: Client, namespace: &str, handle: tokio::runtime::Handle) -> Self {
        Self { api: Api::namespaced(client, namespace), handle, cache: Mutex::new(BTreeMap::new()) }
    }
}

impl SecretSource for KubeSecretSource {
    fn get(&self, secret_name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let mut cache = self.cache.lock().map_err(|_| "secret cache poisoned".to_string())?;
        if !cache.contains_key(secret_name) {
            let fetched = self
                .handle
                .block_on(self.api.get_opt(secret_name))
                .map_err(|error| format!("cannot read Secret {secret_name}: {error}"))?;
            cache.insert(secret_name.to_string(), fetched);
        }
        let secret = cache.get(secret_name).cloned().flatten();
        Ok(secret.and_then(|s| {
            s.data
                .and_then(|data| data.get(key).map(|v| v.0.clone()))
                .or_else(|| s.string_data.and_then(|data| data.get(key).map(|v| v.clone().into_bytes())))
        }))
    }
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

/// One pass: read the HostConfig, reconcile the host, write the status if it changed.
pub async fn sync_once(client: &Client, host: &SharedHost, config: &RuntimeConfig) -> anyhow::Result<SyncOutcome> {
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now());
    let result = sync_at(client, host, config, now, StatusWrite::IfChanged).await;
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

/// One pass with the clock reading `now` (the simulated world passes its manual clock):
/// `None` when no HostConfig is named after the node.
pub async fn sync_at(
    client: &Client,
    host: &SharedHost,
    config: &RuntimeConfig,
    now: jiff::Timestamp,
    write: StatusWrite,
) -> anyhow::Result<Option<PassDetail>> {
    let api: Api<HostConfig> = Api::all(client.clone());
    // A list with a name field selector: the same query as the watch, and it needs only list RBAC.
    let selector = ListParams::default().fields(&format!("metadata.name={}", config.node_name));
    let listed = api.list(&selector).await.with_context(|| format!("reading HostConfig {}", config.node_name))?;
    let Some(host_config) = listed.items.into_iter().find(|h| h.name_any() == config.node_name) else {
        return Ok(None);
    };
    let spec = host_config.spec.clone();
    let generation = host_config.metadata.generation.unwrap_or(0);
    let previous = host_config.status.clone();
    let secrets = KubeSecretSource::new(client.clone(), &config.namespace, tokio::runtime::Handle::current());
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
        match api.patch_status(&host_config.name_any(), &params, &Patch::Apply(patch)).await {
            Ok(_) => pass.status_written = true,
            Err(error) => pass.status_write_error = Some(error),
        }
    }
    Ok(Some(pass))
}

fn retry_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Run until `shutdown` resolves: a pass at start, on every HostConfig event and every
/// `drift_interval`; failures back off exponentially.
pub async fn run(
    client: Client,
    host: SharedHost,
    config: RuntimeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let api: Api<HostConfig> = Api::all(client.clone());
    let selector = format!("metadata.name={}", config.node_name);
    let mut events = watcher(api, watcher::Config::default().fields(&selector)).default_backoff().boxed();
    tokio::pin!(shutdown);
    let mut backoff = retry_backoff();
    let mut delay = Duration::ZERO;
    let mut watching = true;
    loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
            event = events.next(), if watching => match event {
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "HostConfig watch error");
                    continue;
                }
                // The watch ended; the drift poll still picks up spec changes.
                None => {
                    watching = false;
                    continue;
                }
            },
            () = tokio::time::sleep(delay) => {}
        }
        delay = match sync_once(&client, &host, &config).await {
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
        };
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
