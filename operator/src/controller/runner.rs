//! The long-running loop around [`reconcile_world`]: metadata watches as triggers, debounce,
//! backoff, periodic resync, leader election, health endpoints and graceful shutdown.
//!
//! Watches only *trigger* passes; each pass lists what it needs, so a pass is exactly what the
//! end-to-end harness runs against the in-memory API.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use ssis_crds::{HostConfig, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::catalog::Catalog;

use super::leader::{LeaderElector, LeaseSettings};
use super::metrics::{Health, router};
use super::{Context, ReconcileReport, reconcile_world};

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Full pass at least this often, so drift found by SQL observation is repaired.
    pub resync: Duration,
    /// Quiet time after a change before a pass, so bursts of events make one pass.
    pub debounce: Duration,
    /// Delay before the next pass while converging (one step per pass).
    pub converging_requeue: Duration,
    /// `None` disables leader election (single replica).
    pub leader: Option<LeaseSettings>,
    pub metrics_addr: SocketAddr,
    /// Upper bound of one pass.
    pub pass_timeout: Duration,
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
        }
    }
}

/// What to do after a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Transient trouble: exponential backoff with jitter.
    Backoff,
    /// Writes happened: come back soon for the next step.
    Converging,
    /// Nothing to do (or Stalled, waiting for a change): periodic resync only.
    Resync,
}

/// Classify a pass for requeueing.
pub fn next_after(result: &Result<ReconcileReport, super::Error>) -> Next {
    match result {
        Err(_) => Next::Backoff,
        Ok(report) if report.needs_retry() => Next::Backoff,
        Ok(report) if report.writes() > 0 || !report.pending_sql_actions.is_empty() => Next::Converging,
        Ok(_) => Next::Resync,
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Forward every change of a watch stream to `notify`; count the stream as synced after its
/// initial list.
fn spawn_trigger<S, T>(name: &'static str, stream: S, notify: Arc<Notify>, synced: Arc<AtomicUsize>) -> JoinHandle<()>
where
    S: Stream<Item = Result<Event<T>, watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        let mut counted = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::InitDone) => {
                    if !counted {
                        counted = true;
                        synced.fetch_add(1, Ordering::SeqCst);
                    }
                    notify.notify_one();
                }
                Ok(Event::Apply(_) | Event::Delete(_)) => notify.notify_one(),
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(error) => tracing::warn!(watch = name, %error, "watch error; retrying with backoff"),
            }
        }
    })
}

fn spawn_namespaced_triggers<K>(
    name: &'static str,
    client: &kube::Client,
    namespaces: &[String],
    config: &watcher::Config,
    notify: &Arc<Notify>,
    synced: &Arc<AtomicUsize>,
) -> Vec<JoinHandle<()>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    // Metadata-only watches: the triggers need no bodies.
    let apis: Vec<Api<PartialObjectMeta<K>>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    apis.into_iter()
        .map(|api| spawn_trigger(name, watch_stream(api, config.clone()), notify.clone(), synced.clone()))
        .collect()
}

/// Start every watch; returns the tasks and how many initial lists to wait for.
fn spawn_watches<C: Catalog>(ctx: &Context<C>, notify: &Arc<Notify>, synced: &Arc<AtomicUsize>) -> Vec<JoinHandle<()>> {
    let client = &ctx.client;
    let namespaces = &ctx.watch_namespaces;
    let config = watcher::Config::default();
    let mut tasks = vec![];
    tasks.extend(spawn_namespaced_triggers::<SsisdbAvailabilityGroup>(
        "ssisdbavailabilitygroups",
        client,
        namespaces,
        &config,
        notify,
        synced,
    ));
    tasks.extend(spawn_namespaced_triggers::<ScaleOutMasterGroup>(
        "scaleoutmastergroups",
        client,
        namespaces,
        &config,
        notify,
        synced,
    ));
    tasks.extend(spawn_namespaced_triggers::<ScaleOutWorker>(
        "scaleoutworkers",
        client,
        namespaces,
        &config,
        notify,
        synced,
    ));
    // Referenced Secrets live in the watched namespaces; issued ones in the operator namespace.
    let mut secret_namespaces = namespaces.clone();
    if !secret_namespaces.is_empty() && !secret_namespaces.contains(&ctx.operator_namespace) {
        secret_namespaces.push(ctx.operator_namespace.clone());
    }
    tasks.extend(spawn_namespaced_triggers::<Secret>("secrets", client, &secret_namespaces, &config, notify, synced));
    tasks.push(spawn_trigger(
        "hostconfigs",
        watch_stream(Api::<PartialObjectMeta<HostConfig>>::all(client.clone()), config.clone()),
        notify.clone(),
        synced.clone(),
    ));
    tasks.push(spawn_trigger(
        "nodes",
        watch_stream(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            config.clone().labels("kubernetes.io/os=windows"),
        ),
        notify.clone(),
        synced.clone(),
    ));
    tasks
}

/// Resolves when leadership changes. Without an elector (leader election off, or its task ended)
/// the sender is gone and `changed()` would be ready at once on every call, which made the loop run
/// a full pass every debounce interval forever; then this never resolves.
async fn leadership_changed(leading: &mut watch::Receiver<bool>) {
    if leading.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Run until `shutdown` completes: reconcile while leading, serve health and metrics, release the
/// lease on the way out.
pub async fn run<C: Catalog>(
    ctx: Context<C>,
    config: RunnerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let health = Arc::new(Health::default());
    let notify = Arc::new(Notify::new());
    let synced = Arc::new(AtomicUsize::new(0));

    let listener = tokio::net::TcpListener::bind(config.metrics_addr).await?;
    tracing::info!(addr = %config.metrics_addr, "serving /metrics /healthz /readyz");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(
        axum::serve(listener, router(ctx.metrics.clone(), health.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );

    let watches = spawn_watches(&ctx, &notify, &synced);
    let expected_syncs = watches.len();

    let (leading_tx, mut leading_rx) = watch::channel(config.leader.is_none());
    let elector = config.leader.clone().map(|settings| {
        let elector = LeaderElector::new(ctx.client.clone(), settings, ctx.clock.clone());
        tokio::spawn(elector.run(leading_tx, stop_rx.clone()))
    });

    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff: Option<Box<dyn Iterator<Item = Duration> + Send>> = None;
    let mut delay = config.resync;
    let mut last_pass: Option<Instant> = None;
    loop {
        let update_health = |health: &Health| {
            health.synced.store(synced.load(Ordering::SeqCst) >= expected_syncs, Ordering::SeqCst);
        };
        update_health(&health);
        let triggered = tokio::select! {
            _ = &mut shutdown => break,
            _ = notify.notified() => true,
            _ = leadership_changed(&mut leading_rx) => true,
            _ = tokio::time::sleep(delay) => false,
        };
        if triggered {
            // Let a burst of changes settle into one pass.
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(config.debounce) => {}
            }
        }
        update_health(&health);
        let leading = *leading_rx.borrow();
        health.leader.store(leading, Ordering::SeqCst);
        ctx.metrics.leader.set(i64::from(leading));
        if !leading {
            health.reconciled.store(false, Ordering::SeqCst);
            delay = config.resync;
            continue;
        }
        // Backoff and converging delays are lower bounds even when a watch event arrives.
        if let Some(last) = last_pass
            && triggered
            && backoff.is_some()
            && last.elapsed() < delay
        {
            delay = delay.saturating_sub(last.elapsed());
            continue;
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(config.pass_timeout, reconcile_world(&ctx)).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("reconcile pass timed out");
                Ok(ReconcileReport { problems: vec!["pass timed out".into()], ..Default::default() })
            }
        };
        last_pass = Some(Instant::now());
        ctx.metrics.reconciles.inc();
        ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(report) => {
                health.reconciled.store(true, Ordering::SeqCst);
                tracing::info!(
                    writes = report.writes(),
                    problems = report.problems.len(),
                    stalled = report.stalled,
                    "reconcile pass done"
                );
            }
            Err(error) => tracing::error!(%error, "reconcile pass failed"),
        }
        let next = next_after(&result);
        if next == Next::Backoff {
            ctx.metrics.reconcile_errors.inc();
        }
        delay = match next {
            Next::Backoff => {
                backoff.get_or_insert_with(|| Box::new(new_backoff())).next().unwrap_or(Duration::from_secs(300))
            }
            Next::Converging => {
                backoff = None;
                config.converging_requeue
            }
            Next::Resync => {
                backoff = None;
                config.resync
            }
        };
    }

    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(elector) = elector {
        // Releases the lease so a standby takes over at once.
        let _ = elector.await;
    }
    for task in watches {
        task.abort();
    }
    let _ = http.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_step_follows_the_error_policy() {
        let converged = ReconcileReport::default();
        assert_eq!(next_after(&Ok(converged.clone())), Next::Resync);
        let stalled = ReconcileReport { stalled: true, ..Default::default() };
        assert_eq!(next_after(&Ok(stalled)), Next::Resync);
        let wrote = ReconcileReport { host_config_applies: 1, ..Default::default() };
        assert_eq!(next_after(&Ok(wrote)), Next::Converging);
        let conflict = ReconcileReport { conflicts: 1, status_patches: 1, ..Default::default() };
        assert_eq!(next_after(&Ok(conflict)), Next::Backoff);
        let problem = ReconcileReport { problems: vec!["sql down".into()], ..Default::default() };
        assert_eq!(next_after(&Ok(problem)), Next::Backoff);
        assert_eq!(next_after(&Err(super::super::Error::PlannerPanicked("x".into()))), Next::Backoff);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let delays: Vec<Duration> = new_backoff().take(20).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(600)));
        assert!(delays[10] > delays[0]);
    }
}
