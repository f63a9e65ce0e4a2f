//! `ssis-operator`: the operator binary.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ssis-operator", version, about = "Operator for SSIS Scale Out with master high availability")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (all kinds) as YAML, or write one file per kind.
    Crd {
        /// Write one file per kind into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir: None } => print!("{}", ssis_crds::generate::render_all_yaml()),
        Command::Crd { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for (file, crd) in ssis_crds::generate::all_crds() {
                std::fs::write(dir.join(file), ssis_crds::generate::render_yaml(&crd))?;
            }
        }
    }
    Ok(())
}
