//! Command-line interface of `ssis-operator`. One module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod crd;
pub mod plan;
pub mod run;
pub mod simulate;

/// Operator for SQL Server Integration Services Scale Out with master high availability.
#[derive(Parser, Debug)]
#[command(name = "ssis-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions of every kind as YAML, or write one file per kind.
    Crd(crd::CrdArgs),
    /// Preview offline what the operator would do for a set of manifests (GitOps pull-request preview).
    Plan(plan::PlanArgs),
    /// Run the controllers (leader election, /metrics, /healthz, /readyz).
    Run(run::RunArgs),
    /// Run the operator, agents, simulated hosts and a simulated SSISDB in process and show what happens.
    Simulate(simulate::SimulateArgs),
}

/// Run a parsed command line; errors are printed with their causes.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Crd(args) => crd::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Run(args) => run::run(args),
        Command::Simulate(args) => simulate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
