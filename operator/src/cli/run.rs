//! `ssis-operator run`: the controllers, with leader election, metrics and health endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube::runtime::events::{Recorder, Reporter};
use ssis_agent::host::simulated::network;

use crate::catalog::simulated::IngestReport;
use crate::catalog::{Catalog, SimulatedCatalog, TiberiusCatalog};
use crate::controller::runner::{self, RunnerConfig};
use crate::controller::{
    CertificateIssuer, CertsIssuer, Context, FIELD_MANAGER, LeaseSettings, PrepareTarget, check_crds,
};

/// Which SQL implementation the controllers use.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogKind {
    /// Real SQL Server through tiberius (TLS validated by default).
    Tiberius,
    /// DEVELOPMENT/DEMO ONLY: an in-memory SSISDB model, never talks to SQL Server.
    Simulated,
}

/// Arguments of `run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Namespace the operator runs in: issued-certificate and password Secrets and the leader Lease
    /// live here.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Reconcile custom resources only in this namespace (repeatable). Default: all namespaces.
    #[arg(long = "watch-namespace")]
    pub watch_namespaces: Vec<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so several replicas can run (only the leader reconciles).
    #[arg(long = "leader-election", overrides_with = "no_leader_election", default_value_t = true)]
    pub leader_election: bool,
    /// Run without leader election (a single replica only).
    #[arg(long = "no-leader-election")]
    pub no_leader_election: bool,
    /// Name of the leader Lease in the operator namespace.
    #[arg(long, default_value = "ssis-operator-leader")]
    pub lease_name: String,
    /// Identity in the Lease (default: POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Upper bound of concurrent SQL observations.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// SQL implementation. `simulated` is a development/demo mode that never contacts SQL Server.
    #[arg(long, value_enum, default_value = "tiberius")]
    pub catalog: CatalogKind,
    /// DEVELOPMENT/DEMO ONLY, with `--catalog simulated`: file the simulated SQL world is loaded
    /// from and saved to, so a restarted operator sees the same SQL world.
    #[arg(long)]
    pub sim_state: Option<PathBuf>,
    /// DEVELOPMENT/DEMO ONLY, with `--catalog simulated`: world directory of the simulated Windows
    /// hosts (`ssis-agent run --host simulated --world`). Master and worker heartbeats are read
    /// from it into the simulated SQL world before every reconcile pass and every 2 s.
    #[arg(long)]
    pub sim_world: Option<PathBuf>,
    /// Full reconcile at least this often (repairs drift seen through SQL), e.g. `300s`, `5m`.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Upper bound of one unit's pass; on shutdown the operator waits this long for running passes
    /// (the pod's terminationGracePeriodSeconds must cover it so the Lease is released).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub pass_timeout: Duration,
}

impl RunArgs {
    /// Flag rules that need no cluster to judge, checked before connecting to it.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.catalog != CatalogKind::Simulated {
            anyhow::ensure!(self.sim_state.is_none(), "--sim-state is only used with --catalog simulated");
            anyhow::ensure!(self.sim_world.is_none(), "--sim-world is only used with --catalog simulated");
        }
        if let Some(world) = &self.sim_world {
            anyhow::ensure!(
                world.is_dir(),
                "--sim-world {} is not a directory; create it and provision the simulated nodes with \
                 `ssis-agent provision-sim --root {}/hosts/<node>`",
                world.display(),
                world.display()
            );
        }
        Ok(())
    }
}

/// How often dev mode reads the simulated network between reconcile passes.
const SIMULATED_TRAFFIC_INTERVAL: Duration = Duration::from_secs(2);

/// Dev mode's hand-off between processes: what the simulated network of the hosts in `world`
/// carries (master and worker heartbeats, reference §5.4) is delivered to the simulated SQL world,
/// where an unknown worker is registered disabled. Returns SQL's verdict per availability group.
pub fn deliver_simulated_traffic(
    catalog: &SimulatedCatalog,
    world: &Path,
    now: jiff::Timestamp,
) -> anyhow::Result<BTreeMap<String, IngestReport>> {
    let traffic =
        network::observe(world).with_context(|| format!("reading the simulated world {}", world.display()))?;
    for failure in &traffic.failures {
        tracing::debug!(node = %failure.node, message = %failure.message, "simulated Scale Out connection failed");
    }
    Ok(catalog.ingest(&traffic, now))
}

fn deliver_or_warn(catalog: &SimulatedCatalog, world: &Path) {
    if let Err(error) = deliver_simulated_traffic(catalog, world, jiff::Timestamp::now()) {
        tracing::warn!(error = %format!("{error:#}"), "simulated heartbeats not delivered");
    }
}

/// `300s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}: use e.g. 300s, 5m, 1h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value.saturating_mul(60),
        "h" => value.saturating_mul(3600),
        _ => return Err(format!("invalid duration unit in {text:?}: use s, m or h")),
    };
    if seconds == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// Start the operator; returns when SIGTERM or Ctrl-C arrives.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    args.validate()?;
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(args))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).json().try_init();
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    check_crds(&client).await?;
    let issuer: Arc<dyn CertificateIssuer> = Arc::new(CertsIssuer);
    match args.catalog {
        CatalogKind::Tiberius => start(client, TiberiusCatalog::default(), None, issuer, &args).await,
        CatalogKind::Simulated => {
            tracing::warn!("--catalog simulated: DEVELOPMENT/DEMO MODE, SQL Server is never contacted");
            let catalog = match &args.sim_state {
                Some(path) => SimulatedCatalog::open(path).with_context(|| format!("opening {}", path.display()))?,
                None => {
                    tracing::warn!("no --sim-state: the simulated SQL world is lost when the operator stops");
                    SimulatedCatalog::new()
                }
            };
            // Each new availability group finds a fresh simulated SQL world on first observation.
            let worlds = catalog.clone();
            let hosts = args.sim_world.clone();
            let prepare: PrepareTarget = Box::new(move |target, password| {
                if worlds.ensure_world(target, password.clone()) {
                    tracing::info!(group = %target.key, "simulated SQL world created");
                }
                // Heartbeats first, so this pass observes the registrations the hosts produced.
                // A few small file reads: acceptable on the async thread in dev mode.
                if let Some(world) = &hosts {
                    deliver_or_warn(&worlds, world);
                }
            });
            if let Some(world) = args.sim_world.clone() {
                tracing::warn!(world = %world.display(), "--sim-world: DEVELOPMENT/DEMO MODE, heartbeats come from simulated hosts");
                let catalog = catalog.clone();
                // Between passes too, so LAST_ONLINE_TIME moves and new registrations are waiting.
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(SIMULATED_TRAFFIC_INTERVAL);
                    loop {
                        ticks.tick().await;
                        let (catalog, world) = (catalog.clone(), world.clone());
                        let _ = tokio::task::spawn_blocking(move || deliver_or_warn(&catalog, &world)).await;
                    }
                });
            }
            start(client, catalog, Some(prepare), issuer, &args).await
        }
    }
}

async fn start<C: Catalog + 'static>(
    client: kube::Client,
    catalog: C,
    prepare_target: Option<PrepareTarget>,
    issuer: Arc<dyn CertificateIssuer>,
    args: &RunArgs,
) -> anyhow::Result<()> {
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("ssis-operator-{}", std::process::id()));
    let mut ctx = Context::new(client.clone(), catalog, args.namespace.clone(), issuer);
    ctx.watch_namespaces = args.watch_namespaces.clone();
    ctx.concurrency = usize::from(args.concurrency);
    ctx.prepare_target = prepare_target;
    ctx.recorder =
        Recorder::new(client, Reporter { controller: FIELD_MANAGER.into(), instance: Some(identity.clone()) });
    let leader_election = args.leader_election && !args.no_leader_election;
    let config = RunnerConfig {
        resync: args.resync,
        leader: leader_election.then(|| LeaseSettings::new(&args.lease_name, &args.namespace, &identity)),
        metrics_addr: args.metrics_addr,
        concurrency: args.concurrency,
        pass_timeout: args.pass_timeout,
        ..Default::default()
    };
    tracing::info!(
        namespace = %args.namespace,
        watch_namespaces = ?args.watch_namespaces,
        leader_election,
        %identity,
        "starting controllers"
    );
    runner::run(ctx, config, shutdown_signal()).await
}

/// Resolves on SIGTERM (Kubernetes pod stop) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Harness {
        #[command(flatten)]
        args: RunArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let args = Harness::parse_from(["x", "--namespace", "ssis-system"]).args;
        assert!(args.leader_election && !args.no_leader_election);
        assert_eq!(args.lease_name, "ssis-operator-leader");
        assert_eq!(args.concurrency, 4);
        assert_eq!(args.catalog, CatalogKind::Tiberius);
        assert_eq!(args.resync, Duration::from_secs(300));
        assert_eq!(args.metrics_addr.to_string(), "0.0.0.0:8080");
        assert!(args.watch_namespaces.is_empty());

        let args = Harness::parse_from([
            "x",
            "--namespace",
            "ops",
            "--watch-namespace",
            "a",
            "--watch-namespace",
            "b",
            "--no-leader-election",
            "--catalog",
            "simulated",
            "--sim-state",
            "/tmp/sim.json",
            "--resync",
            "5m",
        ])
        .args;
        assert_eq!(args.watch_namespaces, vec!["a", "b"]);
        assert!(args.no_leader_election);
        assert_eq!(args.catalog, CatalogKind::Simulated);
        assert_eq!(args.resync, Duration::from_secs(300));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
