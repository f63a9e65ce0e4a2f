//! `ssis-operator`: the operator binary. Subcommands live in `cli/`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    ssis_operator::cli::main(ssis_operator::cli::Cli::parse())
}
