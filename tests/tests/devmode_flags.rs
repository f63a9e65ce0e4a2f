//! The dev-mode flags of both binaries, run as processes without a cluster: `--help` marks them as
//! development/demo modes with production defaults, and invalid combinations fail with a message
//! naming the fix before any connection to Kubernetes is tried.

#[path = "devmode_support.rs"]
mod devmode_support;

use std::path::Path;
use std::process::Output;

use devmode_support::{Scratch, isolated, stderr, stdout};

fn run(binary: &str, scratch: &Scratch, args: &[&str]) -> Output {
    isolated(binary, &scratch.path).env_remove("RUST_BACKTRACE").args(args).output().expect("running the binary")
}

/// Help text with clap's line wrapping undone, so phrases can be searched.
fn help_text(binary: &str, subcommand: &str) -> String {
    let scratch = Scratch::new("help");
    let output = run(binary, &scratch, &[subcommand, "--help"]);
    assert!(output.status.success(), "{binary} {subcommand} --help: {}", stderr(&output));
    stdout(&output).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The paragraph of `--flag` in a long help: from the flag to the next flag.
fn flag_help<'a>(help: &'a str, flag: &str) -> &'a str {
    let start = help.find(&format!("{flag} <")).unwrap_or_else(|| panic!("{flag} is not in the help:\n{help}"));
    let rest = &help[start + flag.len()..];
    let end = rest.find(" --").unwrap_or(rest.len());
    &help[start..start + flag.len() + end]
}

fn assert_fails_with(output: &Output, expected: &str) {
    let text = stderr(output);
    assert!(!output.status.success(), "should fail; stderr:\n{text}");
    assert!(text.contains(expected), "stderr should contain {expected:?}:\n{text}");
}

#[test]
fn operator_help_marks_the_simulated_catalog_and_its_files_as_development_modes() {
    let help = help_text("ssis-operator", "run");
    let catalog = flag_help(&help, "--catalog");
    assert!(catalog.contains("[default: tiberius]"), "{catalog}");
    assert!(catalog.contains("simulated: DEVELOPMENT/DEMO ONLY"), "{catalog}");
    for flag in ["--sim-state", "--sim-world"] {
        let text = flag_help(&help, flag);
        assert!(text.contains("DEVELOPMENT/DEMO"), "{flag} must say it is a development mode: {text}");
        assert!(text.contains("--catalog simulated"), "{flag} must name the mode it belongs to: {text}");
        assert!(!text.contains("[default:"), "{flag} must be off unless given: {text}");
    }
}

#[test]
fn agent_help_marks_the_simulated_host_as_a_development_mode() {
    let help = help_text("ssis-agent", "run");
    let host = flag_help(&help, "--host");
    assert!(host.contains("Default `windows` on Windows"), "{host}");
    assert!(host.contains("simulated: A directory-rooted simulated node: development and demo mode only"), "{host}");
    assert!(flag_help(&help, "--root").contains("--host simulated"));
    assert!(flag_help(&help, "--world").contains("<world>/hosts/<node>"));
    let provision = help_text("ssis-agent", "provision-sim");
    assert!(provision.contains("development/demo"), "{provision}");
}

#[test]
fn operator_simulation_files_without_the_simulated_catalog_are_refused_before_connecting() {
    let scratch = Scratch::new("operator-flags");
    let state = scratch.join("sql-world.json");
    let world = scratch.join("world");
    std::fs::create_dir_all(world.join("hosts")).unwrap();
    let state = state.to_str().unwrap();
    let world = world.to_str().unwrap();

    let output = run("ssis-operator", &scratch, &["run", "--namespace", "ops", "--sim-state", state]);
    assert_fails_with(&output, "--sim-state is only used with --catalog simulated");
    let output =
        run("ssis-operator", &scratch, &["run", "--namespace", "ops", "--catalog", "tiberius", "--sim-world", world]);
    assert_fails_with(&output, "--sim-world is only used with --catalog simulated");
    for output in [
        run("ssis-operator", &scratch, &["run", "--namespace", "ops", "--sim-state", state]),
        run("ssis-operator", &scratch, &["run", "--namespace", "ops", "--catalog", "tiberius", "--sim-world", world]),
    ] {
        assert!(!stderr(&output).contains("Kubernetes"), "flags are checked before connecting: {}", stderr(&output));
    }
    assert!(!Path::new(state).exists(), "a refused start must not create the state file");
}

#[test]
fn operator_refuses_a_simulated_world_directory_that_does_not_exist() {
    let scratch = Scratch::new("operator-world");
    let missing = scratch.join("no-such-world");
    let output = run(
        "ssis-operator",
        &scratch,
        &["run", "--namespace", "ops", "--catalog", "simulated", "--sim-world", missing.to_str().unwrap()],
    );
    assert_fails_with(&output, "--sim-world");
    assert_fails_with(&output, "provision-sim");
    assert!(!stderr(&output).contains("Kubernetes"), "checked before connecting: {}", stderr(&output));
}

#[test]
fn operator_dev_mode_with_valid_flags_gets_as_far_as_the_cluster_connection() {
    let scratch = Scratch::new("operator-valid");
    let world = scratch.join("world");
    std::fs::create_dir_all(world.join("hosts")).unwrap();
    let state = scratch.join("sql-world.json");
    let output = run(
        "ssis-operator",
        &scratch,
        &[
            "run",
            "--namespace",
            "ops",
            "--catalog",
            "simulated",
            "--sim-state",
            state.to_str().unwrap(),
            "--sim-world",
            world.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    // No kubeconfig exists in the isolated environment: the only failure left is the cluster.
    assert_fails_with(&output, "connecting to the Kubernetes API");
    assert!(!stderr(&output).contains("--sim"), "{}", stderr(&output));
}

#[test]
fn operator_rejects_an_unknown_catalog_naming_the_choices() {
    let scratch = Scratch::new("operator-catalog");
    let output = run("ssis-operator", &scratch, &["run", "--namespace", "ops", "--catalog", "sqlite"]);
    assert_fails_with(&output, "[possible values: tiberius, simulated]");
}

#[test]
fn agent_on_linux_needs_an_explicit_simulated_host_with_a_provisioned_root() {
    let scratch = Scratch::new("agent-flags");
    let base = ["run", "--node-name", "win-worker-1", "--namespace", "ssis-operator"];
    let with = |extra: &[&str]| -> Output {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        run("ssis-agent", &scratch, &args)
    };
    // Production default: the Windows backend, which Linux does not have.
    assert_fails_with(&with(&[]), "--host is required on this platform; use --host simulated --root DIR");
    assert_fails_with(&with(&["--host", "windows"]), "--host windows works only on Windows");
    assert_fails_with(
        &with(&["--host", "simulated"]),
        "--host simulated needs --root DIR (create one with provision-sim)",
    );
    let empty = scratch.join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let output = with(&["--host", "simulated", "--root", empty.to_str().unwrap()]);
    assert_fails_with(&output, "no simulated host at");
    assert_fails_with(&output, "ssis-agent provision-sim --root");
    assert_fails_with(&with(&["--host", "vm"]), "[possible values: windows, simulated]");
}

#[test]
fn agent_provision_sim_lays_out_a_node_once_and_refuses_to_overwrite_it() {
    let scratch = Scratch::new("agent-provision");
    let root = scratch.join("world/hosts/win-worker-1");
    let provision = |features: &str| {
        run(
            "ssis-agent",
            &scratch,
            &[
                "provision-sim",
                "--root",
                root.to_str().unwrap(),
                "--computer-name",
                "WIN-WORKER-1",
                "--features",
                features,
            ],
        )
    };
    assert_fails_with(&provision("worker,dtc"), "unknown feature 'dtc'");
    let first = provision("worker");
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("WIN-WORKER-1"), "{}", stdout(&first));
    assert!(root.join("state.json").is_file());
    assert_fails_with(&provision("worker"), "already holds a simulated host");
}
