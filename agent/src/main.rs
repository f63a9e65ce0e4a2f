//! `ssis-agent`: the node agent of the SSIS Scale Out operator.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ssis_agent::engine::{AgentConfig, DirSecretSource, reconcile_host};
use ssis_agent::host::Host;
use ssis_agent::host::simulated::SimulatedHost;
use ssis_agent::host::simulated::provision::{Features, provision};
use ssis_agent::runtime::{self, RuntimeConfig};
use ssis_agent::safety::{AllowList, DEFAULT_PROGRAM_FILES_ROOT, SafetyConfig};
use ssis_crds::{HostConfig, SqlVersion};

#[derive(Parser, Debug)]
#[command(name = "ssis-agent", version, about = "Makes one Windows node match its HostConfig (ssis.sqlops.io)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch this node's HostConfig and keep the host equal to it.
    Run(RunArgs),
    /// Apply a HostConfig file once, offline, and print the resulting status as YAML.
    Apply(ApplyArgs),
    /// Lay out a simulated node as SQL Server setup leaves it (development/demo).
    ProvisionSim(ProvisionArgs),
    /// Register the agent as a Windows service running `ssis-agent service <ARGS>` (Windows only).
    InstallService {
        /// Arguments of `run` for the service, e.g. `--node-name n1 --namespace ssis-system`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Remove the agent's Windows service (Windows only).
    UninstallService,
    /// Entry point when started by the Service Control Manager (Windows only).
    Service(RunArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum HostKind {
    /// The real Win32 backend.
    Windows,
    /// A directory-rooted simulated node: development and demo mode only, never production.
    Simulated,
}

#[derive(Args, Debug, Clone)]
struct HostArgs {
    /// Host backend. Default `windows` on Windows; required elsewhere. `simulated` is a
    /// development/demo mode that models a node in a directory.
    #[arg(long = "host", value_enum)]
    host: Option<HostKind>,
    /// Root directory of the simulated node (with `--host simulated`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// World directory shared by simulated nodes (failover cluster); default: the grandparent of
    /// `--root` when it is `<world>/hosts/<node>`.
    #[arg(long)]
    world: Option<PathBuf>,
    /// SQL Server's Program Files folder; settings files are only touched below it.
    #[arg(long, default_value = DEFAULT_PROGRAM_FILES_ROOT)]
    program_files: String,
    /// Extra folder the legacy MsDtsSrvr.ini.xml may live in (e.g. a cluster shared disk). Repeatable.
    #[arg(long = "allow-root")]
    allow_roots: Vec<String>,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Kubernetes node name (= HostConfig name).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Namespace of the Secrets the agent may read.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    #[command(flatten)]
    host: HostArgs,
    /// Time between drift polls (e.g. 2s, 500ms, 1m).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drift_interval: Duration,
    /// Kubeconfig file; default: in-cluster configuration, then $KUBECONFIG / ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz, or `off`. A HostProcess pod shares the node's
    /// network, so the port must be free on the node.
    #[arg(long, default_value = "0.0.0.0:9181", value_parser = parse_metrics_addr)]
    metrics_addr: MetricsAddr,
    /// /healthz fails when no pass completed for this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    liveness_bound: Duration,
}

/// Where the metrics endpoint listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetricsAddr {
    Off,
    At(std::net::SocketAddr),
}

fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr::Off);
    }
    text.parse()
        .map(MetricsAddr::At)
        .map_err(|_| format!("'{text}' is neither an address such as 0.0.0.0:9181 nor 'off'"))
}

#[derive(Args, Debug)]
struct ApplyArgs {
    /// HostConfig YAML file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Secrets as files `<dir>/<secret name>/<key>`.
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args, Debug)]
struct ProvisionArgs {
    /// Root directory of the new simulated node (use `<world>/hosts/<node>` for a cluster).
    #[arg(long)]
    root: PathBuf,
    /// Windows computer name of the node.
    #[arg(long)]
    computer_name: String,
    /// SQL Server major version: 140, 150 or 160.
    #[arg(long, default_value = "160", value_parser = parse_sql_version)]
    sql_version: SqlVersion,
    /// Installed features: any of master, worker, legacy (comma-separated).
    #[arg(long, default_value = "master,worker,legacy")]
    features: Features,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let value: f64 = number.parse().map_err(|_| format!("'{text}' is not a duration such as 2s, 500ms or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("'{text}': unknown unit '{unit}'; use ms, s, m or h")),
    };
    if seconds <= 0.0 {
        return Err(format!("'{text}' must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_sql_version(text: &str) -> Result<SqlVersion, String> {
    match text {
        "140" => Ok(SqlVersion::V140),
        "150" => Ok(SqlVersion::V150),
        "160" => Ok(SqlVersion::V160),
        other => Err(format!("'{other}' is not a supported SQL version; use 140, 150 or 160")),
    }
}

impl HostArgs {
    fn safety(&self) -> anyhow::Result<SafetyConfig> {
        let config =
            SafetyConfig { program_files_root: self.program_files.clone(), extra_roots: self.allow_roots.clone() };
        // Fail at start-up on a bad root rather than on every pass.
        AllowList::new(&config, SqlVersion::default()).map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    fn open(&self) -> anyhow::Result<Box<dyn Host>> {
        let kind = match self.host {
            Some(kind) => kind,
            None if cfg!(windows) => HostKind::Windows,
            None => {
                anyhow::bail!("--host is required on this platform; use --host simulated --root DIR for development")
            }
        };
        match kind {
            HostKind::Simulated => {
                let root =
                    self.root.clone().context("--host simulated needs --root DIR (create one with provision-sim)")?;
                Ok(Box::new(SimulatedHost::open(root, self.world.clone())?))
            }
            HostKind::Windows => open_windows_host(),
        }
    }
}

#[cfg(windows)]
fn open_windows_host() -> anyhow::Result<Box<dyn Host>> {
    Ok(Box::new(ssis_agent::host::windows::WindowsHost::new()))
}

#[cfg(not(windows))]
fn open_windows_host() -> anyhow::Result<Box<dyn Host>> {
    anyhow::bail!("--host windows works only on Windows; use --host simulated --root DIR for development")
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).with_context(|| format!("read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.context("no Kubernetes configuration (in-cluster or kubeconfig)")?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn run_agent(args: RunArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let metrics = ssis_agent::metrics::configure(args.liveness_bound);
    if let MetricsAddr::At(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (--metrics-addr)"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(addr = %bound, "serving /metrics /healthz /readyz");
        tokio::spawn(async move {
            if let Err(error) = ssis_agent::metrics::serve(listener, metrics).await {
                tracing::error!(%error, "metrics endpoint stopped");
            }
        });
    }
    let safety = args.host.safety()?;
    let host = args.host.open()?;
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let config = RuntimeConfig {
        node_name: args.node_name.clone(),
        namespace: args.namespace.clone(),
        agent: AgentConfig { safety, ..AgentConfig::default() },
        drift_interval: args.drift_interval,
    };
    tracing::info!(node = %args.node_name, namespace = %args.namespace, backend = host.backend_name(), "agent started");
    runtime::run(client, Arc::new(Mutex::new(host)), config, shutdown).await
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Two workers are plenty: one pass at a time, the blocking pool does the host work.
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn apply_once(args: ApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("read {}", args.file.display()))?;
    let host_config: HostConfig =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not a HostConfig", args.file.display()))?;
    let mut host = args.host.open()?;
    let config = AgentConfig { safety: args.host.safety()?, ..AgentConfig::default() };
    let secrets = DirSecretSource { dir: args.secrets_dir.clone().unwrap_or_else(|| PathBuf::from("/nonexistent")) };
    let generation = host_config.metadata.generation.unwrap_or(1);
    let (status, report) = reconcile_host(
        host.as_mut(),
        &host_config.spec,
        generation,
        &secrets,
        host_config.status.as_ref(),
        jiff::Timestamp::now(),
        &config,
    );
    print!("{}", serde_yaml_ng::to_string(&serde_json::json!({ "status": status }))?);
    eprintln!("host writes: {} ({:?}), failed steps: {}", report.total_writes(), report.writes, report.failed_steps);
    Ok(())
}

#[cfg(windows)]
static SERVICE_ARGS: std::sync::OnceLock<RunArgs> = std::sync::OnceLock::new();

#[cfg(windows)]
fn service_body(stop: std::sync::mpsc::Receiver<()>) -> anyhow::Result<()> {
    let args = SERVICE_ARGS.get().cloned().context("service arguments not set")?;
    let runtime = tokio_runtime()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = stop.recv();
        let _ = tx.send(());
    });
    runtime.block_on(run_agent(args, async {
        let _ = rx.await;
    }))
}

/// Install the one TLS crypto provider of this process (aws-lc-rs, as in the operator) before any
/// client is built. Explicit, so that a dependency turning on a second rustls provider feature
/// cannot make the first kube client panic ("Could not automatically determine the process-level
/// CryptoProvider").
fn install_crypto_provider() {
    // Fails only when a provider is installed already: that is the goal.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Text for a person at a terminal; JSON lines otherwise (service log files, container logs), which
/// carry no ANSI escape codes.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    if std::io::stderr().is_terminal() {
        tracing_subscriber::fmt().with_env_filter(filter()).with_writer(std::io::stderr).init();
    } else {
        tracing_subscriber::fmt().json().with_env_filter(filter()).with_writer(std::io::stderr).init();
    }
}

fn main() -> anyhow::Result<()> {
    install_crypto_provider();
    init_logging();
    match Cli::parse().command {
        Command::Run(args) => tokio_runtime()?.block_on(run_agent(args, runtime::shutdown_signal())),
        Command::Apply(args) => apply_once(args),
        Command::ProvisionSim(args) => {
            let provisioned = provision(&args.root, &args.computer_name, args.sql_version, args.features)?;
            println!("{provisioned:#?}");
            Ok(())
        }
        #[cfg(windows)]
        Command::InstallService { args } => ssis_agent::windows_service::install(&args),
        #[cfg(windows)]
        Command::UninstallService => ssis_agent::windows_service::uninstall(),
        #[cfg(windows)]
        Command::Service(args) => {
            SERVICE_ARGS.set(args).map_err(|_| anyhow::anyhow!("service started twice"))?;
            ssis_agent::windows_service::run_as_service(service_body)
        }
        #[cfg(not(windows))]
        Command::InstallService { .. } | Command::UninstallService | Command::Service(_) => {
            anyhow::bail!("Windows services exist only on Windows; on this platform run `ssis-agent run` directly")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_address_is_an_address_or_off() {
        assert_eq!(parse_metrics_addr("off"), Ok(MetricsAddr::Off));
        assert_eq!(parse_metrics_addr("127.0.0.1:9181"), Ok(MetricsAddr::At(([127, 0, 0, 1], 9181).into())));
        assert!(parse_metrics_addr("9181").unwrap_err().contains("neither an address"));
        let cli = Cli::parse_from(["ssis-agent", "run", "--node-name", "n", "--namespace", "ns"]);
        let Command::Run(args) = cli.command else { panic!("run") };
        assert_eq!(args.metrics_addr, MetricsAddr::At(([0, 0, 0, 0], 9181).into()));
        assert_eq!(args.liveness_bound, Duration::from_secs(600));
    }
}
