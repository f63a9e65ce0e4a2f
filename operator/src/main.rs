//! `ssis-operator`: the operator binary. Subcommands live in `cli/`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // One TLS crypto provider for every client of the process (kube and tiberius), installed before
    // any of them is built: with both rustls provider features in the build, none is chosen for us.
    ssis_operator::catalog::install_crypto_provider();
    ssis_operator::cli::main(ssis_operator::cli::Cli::parse())
}
