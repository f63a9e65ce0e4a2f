//! `ssis-operator crd`: the CRD YAML generated from the Rust types.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `crd`.
#[derive(clap::Args, Debug)]
pub struct CrdArgs {
    /// Write one file per kind into this directory (as committed under crds/generated) instead of
    /// printing one multi-document stream.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Print or write the CRDs.
pub fn run(args: CrdArgs) -> anyhow::Result<()> {
    match args.out_dir {
        None => print!("{}", ssis_crds::generate::render_all_yaml()),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (file, crd) in ssis_crds::generate::all_crds() {
                let path = dir.join(file);
                std::fs::write(&path, ssis_crds::generate::render_yaml(&crd))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
