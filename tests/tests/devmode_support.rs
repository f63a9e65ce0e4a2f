//! Shared helpers of the dev-mode tests (included with `#[path]` by the devmode_* tests; as a test
//! target of its own it holds no tests).
//!
//! The tests run the REAL `ssis-operator` and `ssis-agent` binaries. Cargo builds another
//! package's binaries only for that package's own tests, so [`binary`] runs `cargo build` for them
//! once per test process (a no-op when they are fresh) unless SSIS_OPERATOR_BIN / SSIS_AGENT_BIN
//! name binaries to use.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root (the workspace directory above tests/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `target/<profile>` of this test executable (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("test executable lives in target/<profile>/deps").to_path_buf()
}

fn build_binaries() -> PathBuf {
    let dir = profile_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(repo_root()).args(["build", "-p", "ssis-operator", "-p", "ssis-agent", "--bins"]);
    if dir.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    let output = command.output().expect("running cargo build for the dev-mode binaries");
    assert!(
        output.status.success(),
        "cargo build -p ssis-operator -p ssis-agent failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// Path of `ssis-operator` or `ssis-agent`, built from this workspace.
pub fn binary(name: &str) -> PathBuf {
    let override_var = match name {
        "ssis-operator" => "SSIS_OPERATOR_BIN",
        "ssis-agent" => "SSIS_AGENT_BIN",
        other => panic!("no binary {other} in this workspace"),
    };
    if let Some(path) = std::env::var_os(override_var).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let path = BUILT.get_or_init(build_binaries).join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A command for a dev-mode binary that cannot reach any cluster by accident: no kubeconfig, no
/// in-cluster environment, HOME in a scratch directory.
pub fn isolated(binary_name: &str, scratch: &Path) -> Command {
    let mut command = Command::new(binary(binary_name));
    command
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", scratch.join("no-kubeconfig"))
        .env("HOME", scratch)
        .env("RUST_LOG", "warn");
    command
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A scratch directory removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Self {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!("ssis-devmode-{test}-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating a scratch directory");
        Self { path }
    }

    pub fn join(&self, relative: &str) -> PathBuf {
        self.path.join(relative)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
