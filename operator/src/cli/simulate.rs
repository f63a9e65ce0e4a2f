//! `ssis-operator simulate [-f manifests...] [--rounds N] [--inject <fault>@<round>]...`: run the
//! whole system in process — the real operator and agent code against an in-memory API server,
//! simulated Windows hosts and a simulated SSISDB availability group — and tell, round by round
//! and node by node, what happens. Exit 0 at a fixed point, non-zero with the reason otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context as _, bail};
use ssis_crds::{ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup, condition_types, find_condition};

use crate::simulation::manifests::Manifests;
use crate::simulation::narrate::{final_state, round_lines, worker_states};
use crate::simulation::{World, WorldOptions};

/// Arguments of `simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Manifest files or directories (default: the repository's bundled examples).
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Round limit: no fixed point by then is a failure.
    #[arg(long, default_value_t = 100)]
    pub rounds: u64,
    /// A fault at a round: `failover=<replica>@<round>` (AG failover), `master-failover=<node>@<round>`
    /// (move the master cluster role), `rotate-master-cert@<round>` (time passes until renewal),
    /// `drift=<node>@<round>` (settings edited by hand, service stopped). Repeatable.
    #[arg(long = "inject", value_name = "FAULT@ROUND")]
    pub inject: Vec<Injection>,
    /// Seed of the certificate generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the world directory (simulated hosts, cluster) and print where it is.
    #[arg(long)]
    pub keep: bool,
}

/// A fault and the round before which it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    pub fault: Fault,
    pub round: u64,
}

/// The faults `simulate` can inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Failover(String),
    MasterFailover(String),
    RotateMasterCertificate,
    Drift(String),
}

impl FromStr for Injection {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "use failover=<replica>@<round>, master-failover=<node>@<round>, rotate-master-cert@<round> or drift=<node>@<round>";
        let (fault, round) = text.rsplit_once('@').ok_or_else(|| format!("'{text}': missing @<round>; {usage}"))?;
        let round: u64 = round.parse().map_err(|_| format!("'{text}': '{round}' is not a round number; {usage}"))?;
        let fault = match fault.split_once('=') {
            Some(("failover", replica)) if !replica.is_empty() => Fault::Failover(replica.to_string()),
            Some(("master-failover", node)) if !node.is_empty() => Fault::MasterFailover(node.to_string()),
            Some(("drift", node)) if !node.is_empty() => Fault::Drift(node.to_string()),
            None if fault == "rotate-master-cert" => Fault::RotateMasterCertificate,
            _ => return Err(format!("'{text}': unknown fault; {usage}")),
        };
        Ok(Injection { fault, round })
    }
}

/// Run the simulation on its own single-threaded runtime.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(simulate(args))
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let manifests = if args.files.is_empty() {
        println!("manifests: the bundled examples (examples/*.yaml)");
        Manifests::bundled_examples()
    } else {
        println!("manifests: {}", args.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
        Manifests::from_paths(&args.files)
    }
    .map_err(anyhow::Error::msg)?;
    let options = WorldOptions { seed: args.seed, keep_directory: args.keep, ..Default::default() };
    let mut world = World::new(&manifests, options).await.map_err(anyhow::Error::msg)?;
    for (node, sim) in &world.nodes {
        let mut installed = vec![];
        if sim.setup.master {
            installed.push(sim.setup.version.master_service_name());
        }
        if sim.setup.legacy {
            installed.push(sim.setup.version.legacy_service_name());
        }
        if sim.setup.worker {
            installed.push(sim.setup.version.worker_service_name());
        }
        println!("host {node} ({}): {}", sim.computer_name, installed.join(", "));
    }
    if args.keep {
        println!("world directory: {}", world.directory().display());
    }
    println!();

    let last_injection = args.inject.iter().map(|i| i.round).max().unwrap_or(0);
    let mut workers = BTreeMap::new();
    let mut ready = BTreeMap::new();
    let mut failures = BTreeSet::new();
    let mut leaders: BTreeMap<String, String> = BTreeMap::new();
    let mut converged_at = None;
    for round in 1..=args.rounds {
        for injection in args.inject.iter().filter(|i| i.round == round) {
            for line in inject(&mut world, &injection.fault).await? {
                println!("round {round}  INJECT  {line}");
            }
        }
        let report = world.step().await;
        for line in round_lines(&report) {
            println!("{line}");
        }
        let now_failures: BTreeSet<(String, String)> = report
            .traffic_failures
            .iter()
            .map(|f| (world.node_by_computer_name(&f.node).unwrap_or(&f.node).to_string(), f.message.clone()))
            .collect();
        for (node, message) in now_failures.difference(&failures) {
            println!("round {round}  {node}  cannot reach its master: {message}");
        }
        for (node, _) in failures.difference(&now_failures) {
            if !now_failures.iter().any(|(n, _)| n == node) {
                println!("round {round}  {node}  connects to its master again");
            }
        }
        failures = now_failures;
        let now_workers = worker_states(&world.list::<ScaleOutWorker>().await);
        for (node, (phase, registered, enabled)) in &now_workers {
            let before = workers.get(node);
            if before.map(|(p, _, _): &(String, bool, bool)| p) != Some(phase) {
                let from = before.map(|(p, _, _)| p.as_str()).unwrap_or("-");
                println!("round {round}  {node}  worker {from} → {phase}");
            }
            let was = before.map(|(_, r, e)| (*r, *e)).unwrap_or((false, false));
            if (*registered, *enabled) != was {
                let describe = |(registered, enabled): (bool, bool)| match (registered, enabled) {
                    (false, _) => "not registered",
                    (true, false) => "registered (disabled)",
                    (true, true) => "enabled",
                };
                println!("round {round}  {node}  {} → {}", describe(was), describe((*registered, *enabled)));
            }
        }
        workers = now_workers;
        for (what, leader) in leaders_now(&world).await {
            if let Some(before) = leaders.get(&what).filter(|before| **before != leader) {
                println!("round {round}  {what}  {before} → {leader}");
            }
            leaders.insert(what, leader);
        }
        for (kind, name, is_ready, reason) in readiness(&world).await {
            if ready.get(&(kind.clone(), name.clone())) != Some(&is_ready) {
                let status = if is_ready { "True" } else { "False" };
                println!("round {round}  {kind} {name}  Ready={status} ({reason})");
                ready.insert((kind, name), is_ready);
            }
        }
        if round >= last_injection && report.writes() == 0 && world.not_ready().await.is_empty() {
            converged_at = Some(round);
            break;
        }
    }

    println!("\n=== final state ===");
    print!("{}", final_state(&world).await);
    println!("\n=== totals ===");
    let totals = &world.totals;
    println!("rounds: {}", world.round);
    for (key, n) in &totals.api {
        println!("API   {:<8} {:<6} {:<28} {n}", key.component, key.verb, key.resource);
    }
    for (kind, n) in &totals.sql {
        println!("SQL   {kind:<44} {n}");
    }
    for (kind, n) in &totals.host {
        println!("host  {kind:<44} {n}");
    }
    println!("agent liveness (Lease renewals): {}", totals.lease_renewals);
    println!("certificates issued: {}", world.issuer.issued().len());
    println!("\n=== key figures (the operator's domain metrics, docs/operations.md) ===");
    for line in world.operator_metrics().domain.summary() {
        println!("{line}");
    }
    match converged_at {
        Some(round) => {
            println!("\nconverged at round {round}: a round with no writes of any kind and every resource Ready");
            Ok(())
        }
        None => {
            let explanation = world.explain(&format!("no fixed point after {} rounds", args.rounds)).await;
            bail!("{explanation}")
        }
    }
}

async fn inject(world: &mut World, fault: &Fault) -> anyhow::Result<Vec<String>> {
    Ok(match fault {
        Fault::Failover(replica) => {
            let group = world.fail_over_availability_group(replica).await.map_err(anyhow::Error::msg)?;
            vec![format!("availability group {group} fails over to {replica}")]
        }
        Fault::MasterFailover(node) => {
            let owner = world.fail_over_master(node).await.map_err(anyhow::Error::msg)?;
            vec![format!("master cluster role moved to {owner}")]
        }
        Fault::RotateMasterCertificate => {
            let by = world.age_master_certificates().await.map_err(anyhow::Error::msg)?;
            vec![format!("{} days pass: the master certificate is due for renewal", by.as_hours() / 24)]
        }
        Fault::Drift(node) => {
            world.drift(node).map_err(anyhow::Error::msg)?.into_iter().map(|d| format!("{node}: {d}")).collect()
        }
    })
}

/// The AG primaries and the active masters, to show failovers as they are noticed.
async fn leaders_now(world: &World) -> Vec<(String, String)> {
    let mut leaders = Vec::new();
    for group in world.list::<SsisdbAvailabilityGroup>().await {
        if let Some(primary) = group.status.as_ref().and_then(|s| s.primary_replica.clone()) {
            leaders.push((
                format!("SsisdbAvailabilityGroup {} primary", crate::plan::object_key(&group.metadata)),
                primary,
            ));
        }
    }
    for group in world.list::<ScaleOutMasterGroup>().await {
        if let Some(active) = group.status.as_ref().and_then(|s| s.active_node.clone()) {
            leaders.push((
                format!("ScaleOutMasterGroup {} active master", crate::plan::object_key(&group.metadata)),
                active,
            ));
        }
    }
    leaders
}

/// (kind, namespace/name, Ready, reason) of every custom resource.
async fn readiness(world: &World) -> Vec<(String, String, bool, String)> {
    let mut all = Vec::new();
    let mut push = |kind: &str, meta: &kube::api::ObjectMeta, conditions: Option<&Vec<_>>| {
        let condition = conditions.and_then(|c: &Vec<_>| find_condition(c, condition_types::READY));
        all.push((
            kind.to_string(),
            crate::plan::object_key(meta),
            condition.is_some_and(|c| c.status == "True"),
            condition.map(|c| c.reason.clone()).unwrap_or_else(|| "no status yet".into()),
        ));
    };
    for o in world.list::<SsisdbAvailabilityGroup>().await {
        push("SsisdbAvailabilityGroup", &o.metadata, o.status.as_ref().map(|s| &s.conditions));
    }
    for o in world.list::<ScaleOutMasterGroup>().await {
        push("ScaleOutMasterGroup", &o.metadata, o.status.as_ref().map(|s| &s.conditions));
    }
    for o in world.list::<ScaleOutWorker>().await {
        push("ScaleOutWorker", &o.metadata, o.status.as_ref().map(|s| &s.conditions));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injections_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(
            "failover=WIN-SQL-2@10".parse::<Injection>(),
            Ok(Injection { fault: Fault::Failover("WIN-SQL-2".into()), round: 10 })
        );
        assert_eq!(
            "rotate-master-cert@3".parse::<Injection>(),
            Ok(Injection { fault: Fault::RotateMasterCertificate, round: 3 })
        );
        assert_eq!(
            "drift=win-worker-1@7".parse::<Injection>().map(|i| i.fault),
            Ok(Fault::Drift("win-worker-1".into()))
        );
        assert!("failover=x".parse::<Injection>().unwrap_err().contains("missing @<round>"));
        assert!("explode@3".parse::<Injection>().unwrap_err().contains("unknown fault"));
    }
}
