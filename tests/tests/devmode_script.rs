//! scripts/dev-cluster-demo.sh without a cluster: `--check` contacts nothing, a missing or
//! unreachable cluster fails clearly instead of hanging, and every process the script starts is
//! gone after it exits — normally, on SIGINT, or when a process it started dies.
//!
//! A fake `kubectl` (a shell script written by the test) answers like an API server and records
//! every call; the operator and agents are either stubs that record their PID and sleep, or the
//! real binaries pointed at an API server that refuses connections.

#[path = "devmode_support.rs"]
mod devmode_support;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use devmode_support::{Scratch, binary, repo_root};
use serde::Deserialize as _;

/// Upper bound for anything the script does here; reaching it means it hung (a failure).
const HANG_GUARD: Duration = Duration::from_secs(180);

const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
# Fake kubectl for the dev-mode script tests: records each call, answers like an empty cluster.
set -euo pipefail
printf '%s\n' "$*" >>"$FAKE_KUBECTL_LOG"
args=()
for arg in "$@"; do
  case "$arg" in --request-timeout=*) ;; *) args+=("$arg") ;; esac
done
set -- "${args[@]}"
case "$1" in
  get)
    if [[ "${2:-}" == --raw ]]; then
      [[ "${FAKE_READYZ:-ok}" == hang ]] && exec sleep 600
      echo ok
      exit 0
    fi
    case "${2:-}" in
      namespace | node)
        echo "Error from server (NotFound): ${2}s \"${3:-}\" not found" >&2
        exit 1
        ;;
    esac
    echo "fake: kubectl $*"
    ;;
  auth) echo yes ;;
  config) echo fake-context ;;
  apply)
    if [[ " $* " == *" -o name "* ]]; then
      files=()
      previous=""
      for arg in "$@"; do
        [[ "$previous" == -f ]] && files+=("$arg")
        previous=$arg
      done
      awk '/^kind:/ { kind = tolower($2) } /^metadata:/ { meta = 1; next }
           meta && /^  name:/ { print kind "/" $2; meta = 0 }' "${files[@]}"
    fi
    ;;
  wait)
    if [[ " $* " == *" --for=condition=Ready "* && "${FAKE_WAIT:-ok}" == block ]]; then
      echo "$$" >"$FAKE_KUBECTL_WAIT_PID"
      exec sleep 600
    fi
    echo "condition met"
    ;;
esac
"#;

const STUB_OPERATOR: &str = r#"#!/usr/bin/env bash
set -euo pipefail
case "${1:-}" in
  crd) printf 'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: hostconfigs.ssis.sqlops.io\n' ;;
  run)
    if [[ "${2:-}" == --help ]]; then
      echo "      --sim-world <SIM_WORLD>"
      exit 0
    fi
    printf 'ssis-operator %s\n' "$*" >>"$STUB_LOG"
    echo "$$" >>"$STUB_PIDS"
    exec sleep 600
    ;;
esac
"#;

const STUB_AGENT: &str = r#"#!/usr/bin/env bash
set -euo pipefail
case "${1:-}" in
  provision-sim) mkdir -p "$3" ;;
  run)
    printf 'ssis-agent %s\n' "$*" >>"$STUB_LOG"
    echo "$$" >>"$STUB_PIDS"
    exec sleep 600
    ;;
esac
"#;

fn script() -> PathBuf {
    repo_root().join("scripts/dev-cluster-demo.sh")
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The Windows nodes of scripts/dev/windows-nodes.txt.
fn listed_nodes() -> Vec<(String, String, BTreeSet<String>)> {
    let text = std::fs::read_to_string(repo_root().join("scripts/dev/windows-nodes.txt")).unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(columns.len(), 4, "node, features, sqlVersion, labels: {line}");
            let labels =
                if columns[3] == "-" { BTreeSet::new() } else { columns[3].split(',').map(str::to_string).collect() };
            (columns[0].to_string(), columns[1].to_string(), labels)
        })
        .collect()
}

/// One test's environment: fake kubectl, stub or real binaries, a kubeconfig, logs.
struct Lab {
    scratch: Scratch,
    stubs: bool,
}

impl Lab {
    fn new(test: &str, stubs: bool) -> Self {
        let scratch = Scratch::new(test);
        write_executable(&scratch.join("kubectl"), FAKE_KUBECTL);
        write_executable(&scratch.join("ssis-operator-stub"), STUB_OPERATOR);
        write_executable(&scratch.join("ssis-agent-stub"), STUB_AGENT);
        // A cluster that refuses connections: only the real binaries read it.
        std::fs::write(
            scratch.join("kubeconfig"),
            "apiVersion: v1\nkind: Config\nclusters:\n- name: nowhere\n  cluster:\n    server: https://127.0.0.1:1\n\
             contexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: nobody\ncurrent-context: nowhere\n\
             users:\n- name: nobody\n  user:\n    token: not-a-secret\n",
        )
        .unwrap();
        for file in ["kubectl.log", "stub.log", "stub.pids"] {
            std::fs::write(scratch.join(file), "").unwrap();
        }
        std::fs::create_dir_all(scratch.join("tmp")).unwrap();
        Self { scratch, stubs }
    }

    fn command(&self, args: &[&str]) -> Command {
        let (operator, agent) = if self.stubs {
            (self.scratch.join("ssis-operator-stub"), self.scratch.join("ssis-agent-stub"))
        } else {
            (binary("ssis-operator"), binary("ssis-agent"))
        };
        let mut command = Command::new("bash");
        command
            .arg(script())
            .args(args)
            .env("KUBECTL", self.scratch.join("kubectl"))
            .env("KUBECONFIG", self.scratch.join("kubeconfig"))
            .env("SSIS_OPERATOR_BIN", operator)
            .env("SSIS_AGENT_BIN", agent)
            .env("SSIS_DEMO_API_TIMEOUT", "1")
            .env("TMPDIR", self.scratch.join("tmp"))
            .env("FAKE_KUBECTL_LOG", self.scratch.join("kubectl.log"))
            .env("FAKE_KUBECTL_WAIT_PID", self.scratch.join("wait.pid"))
            .env("STUB_LOG", self.scratch.join("stub.log"))
            .env("STUB_PIDS", self.scratch.join("stub.pids"))
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and only calls signal(2),
        // which is async-signal-safe; it touches no memory of the parent.
        unsafe { command.pre_exec(default_signal_dispositions) };
        command
    }

    fn kubectl_calls(&self) -> Vec<String> {
        read_lines(&self.scratch.join("kubectl.log"))
    }

    fn stub_pids(&self) -> Vec<u32> {
        read_lines(&self.scratch.join("stub.pids")).iter().map(|l| l.parse().unwrap()).collect()
    }
}

/// Start the script with SIGINT and SIGTERM at their defaults, as a terminal would. A
/// non-interactive shell starts background jobs (`./scripts/test-all.sh &`, nohup, some CI
/// runners) with SIGINT ignored; an ignored signal stays ignored across fork and exec, and bash
/// cannot trap a signal ignored at entry, so the script would never see the tests' SIGINT.
fn default_signal_dispositions() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: signal(2) with SIG_DFL is async-signal-safe and changes only this process.
        if unsafe { libc::signal(signal, libc::SIG_DFL) } == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signals a process ignores (the `SigIgn` mask of /proc/PID/status).
fn ignored_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process is running");
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).expect("SigIgn line");
    u64::from_str_radix(mask.trim(), 16).expect("hex mask")
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Wait for the script; a hang past [`HANG_GUARD`] kills it and fails the test.
fn finish(mut child: Child) -> Finished {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("the script hung; stderr:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run_to_end(lab: &Lab, args: &[&str]) -> Finished {
    finish(lab.command(args).spawn().expect("starting the script"))
}

/// A process is gone when /proc has no live entry for it (a zombie has already exited).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// PIDs the script reports as started: "started <name> (pid <n>), log ...".
fn reported_pids(stderr: &str) -> Vec<u32> {
    stderr.lines().filter_map(|line| line.split_once("(pid ")?.1.split(')').next()?.parse().ok()).collect()
}

fn started_pids(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter(|line| line.contains(": started "))
        .filter_map(|line| line.split_once("(pid ")?.1.split(')').next()?.parse().ok())
        .collect()
}

fn assert_all_gone(pids: &[u32], context: &str) {
    let running: Vec<u32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
    for pid in &running {
        // Do not leak them into the next test, then fail.
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert!(running.is_empty(), "{context}: still running after the script exited: {running:?}");
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < HANG_GUARD, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn node_list_covers_every_windows_node_the_examples_name() {
    let nodes = listed_nodes();
    let names: BTreeSet<&str> = nodes.iter().map(|(name, _, _)| name.as_str()).collect();
    let mut referenced = BTreeSet::new();
    let mut pool_labels = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document).unwrap();
            let spec = &value["spec"];
            match value["kind"].as_str() {
                Some("ScaleOutMasterGroup") => {
                    let nodes = spec["nodes"].as_array().unwrap();
                    referenced.extend(nodes.iter().map(|n| (n.as_str().unwrap().to_string(), "master")));
                }
                Some("ScaleOutWorker") => {
                    if let Some(node) = spec["nodeName"].as_str() {
                        referenced.insert((node.to_string(), "worker"));
                    }
                    if let Some(labels) = spec["nodeSelector"]["matchLabels"].as_object() {
                        pool_labels.extend(labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap())));
                    }
                }
                Some("SsisdbAvailabilityGroup") => {
                    for replica in spec["replicas"].as_array().unwrap() {
                        if let Some(node) = replica["nodeName"].as_str() {
                            referenced.insert((node.to_string(), "master"));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    assert!(!referenced.is_empty() && !pool_labels.is_empty(), "the examples changed shape");
    for (node, feature) in &referenced {
        assert!(names.contains(node.as_str()), "{node} is used by the examples but not in windows-nodes.txt");
        let (_, features, _) = nodes.iter().find(|(name, _, _)| name == node).unwrap();
        assert!(features.split(',').any(|f| f == *feature), "{node} needs the {feature} feature");
    }
    for label in &pool_labels {
        let members: Vec<_> = nodes.iter().filter(|(_, _, labels)| labels.contains(label)).collect();
        assert!(members.len() >= 2, "the pool {label} should have members to show");
        assert!(members.iter().all(|(_, features, _)| features.contains("worker")));
        assert!(members.iter().all(|(name, _, _)| !referenced.iter().any(|(n, _)| n == name)));
    }
}

#[test]
fn check_mode_prints_the_plan_and_touches_no_cluster() {
    let lab = Lab::new("check", true);
    let finished = finish(lab.command(&["--check"]).env_remove("KUBECONFIG").spawn().unwrap());
    assert!(finished.status.success(), "{}\n{}", finished.stdout, finished.stderr);
    assert_eq!(lab.kubectl_calls(), Vec::<String>::new(), "--check must not call kubectl");
    assert!(lab.stub_pids().is_empty(), "--check must start nothing");
    let out = &finished.stdout;
    assert!(out.contains("KUBECONFIG is not set: a real run stops here"), "{out}");
    assert!(out.contains("apply --server-side"), "{out}");
    for (node, features, _) in listed_nodes() {
        assert!(out.contains(&format!("--node-name {node} ")), "no agent for {node}:\n{out}");
        assert!(out.contains(&format!("--features {features}")), "{out}");
    }
    assert!(out.contains("--catalog simulated --sim-state"), "{out}");
    assert!(out.contains("--sim-world"), "{out}");
    assert!(out.contains("kubectl") && out.contains("wait --for=condition=Ready -n ssis"), "{out}");
}

#[test]
fn check_mode_fails_when_a_prerequisite_is_missing() {
    let lab = Lab::new("check-missing", true);
    let finished =
        finish(lab.command(&["--check"]).env("KUBECTL", lab.scratch.join("no-such-kubectl")).spawn().unwrap());
    assert!(!finished.status.success());
    assert!(finished.stdout.contains("MISSING"), "{}", finished.stdout);
    assert!(finished.stderr.contains("prerequisite(s) missing"), "{}", finished.stderr);
}

#[test]
fn a_run_without_kubeconfig_stops_before_touching_anything() {
    let lab = Lab::new("no-kubeconfig", true);
    let finished = finish(lab.command(&[]).env_remove("KUBECONFIG").spawn().unwrap());
    assert_eq!(finished.status.code(), Some(1));
    assert!(finished.stderr.contains("KUBECONFIG is not set"), "{}", finished.stderr);
    assert!(finished.stderr.contains("--check"), "{}", finished.stderr);
    assert!(lab.kubectl_calls().is_empty());
    assert!(lab.stub_pids().is_empty());
}

#[test]
fn an_api_server_that_never_answers_fails_the_run_instead_of_hanging_it() {
    let lab = Lab::new("hanging-api", true);
    let finished = finish(lab.command(&[]).env("FAKE_READYZ", "hang").spawn().unwrap());
    assert_eq!(finished.status.code(), Some(1));
    assert!(finished.stderr.contains("is not reachable or not ready within 1s"), "{}", finished.stderr);
    assert!(lab.stub_pids().is_empty(), "nothing may start without an API server");
}

#[test]
fn real_kubectl_against_a_refusing_api_server_fails_clearly() {
    let kubectl = devmode_kubectl();
    let lab = Lab::new("refused", true);
    let finished = finish(lab.command(&[]).env("KUBECTL", &kubectl).spawn().unwrap());
    assert_eq!(finished.status.code(), Some(1));
    assert!(finished.stderr.contains("is not reachable or not ready"), "{}", finished.stderr);
    assert!(finished.stderr.contains("127.0.0.1:1"), "the cause should be shown: {}", finished.stderr);
    assert!(lab.stub_pids().is_empty());
}

/// The real kubectl: $KUBECTL, `.tools/bin/kubectl` (scripts/ci/install-helm.sh) or PATH.
fn devmode_kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let tools = repo_root().join(".tools/bin/kubectl");
    if tools.is_file() {
        return tools;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("kubectl")).find(|p| p.is_file()));
    on_path.expect("kubectl not found: set KUBECTL or run scripts/ci/install-helm.sh (installs .tools/bin/kubectl)")
}

#[test]
fn a_completed_run_stops_every_process_it_started_and_deletes_what_it_created() {
    let lab = Lab::new("complete", true);
    let finished = run_to_end(&lab, &["--timeout", "30s"]);
    assert!(finished.status.success(), "{}\n{}", finished.stdout, finished.stderr);

    let nodes = listed_nodes();
    let pids = lab.stub_pids();
    assert_eq!(pids.len(), 1 + nodes.len(), "one operator and one agent per node");
    assert_eq!(started_pids(&finished.stderr).into_iter().collect::<BTreeSet<_>>(), pids.iter().copied().collect());
    assert_all_gone(&pids, "after a completed run");

    let stub_log = read_lines(&lab.scratch.join("stub.log"));
    let operator = stub_log.iter().find(|l| l.starts_with("ssis-operator run")).expect("the operator ran");
    for flag in
        ["--catalog simulated", "--sim-state ", "--sim-world ", "--no-leader-election", "--watch-namespace ssis"]
    {
        assert!(operator.contains(flag), "operator started without {flag}: {operator}");
    }
    for (node, _, _) in &nodes {
        let agent = stub_log.iter().find(|l| l.contains(&format!("--node-name {node} "))).expect("an agent per node");
        assert!(agent.contains("--host simulated") && agent.contains(&format!("/hosts/{node} ")), "{agent}");
    }

    let calls = lab.kubectl_calls();
    let has = |needle: &str| calls.iter().any(|c| c.contains(needle));
    assert!(has("apply --server-side --field-manager=ssis-dev-demo -f"), "{calls:#?}");
    let node_applies = calls.iter().filter(|c| c.contains("apply -f") && c.contains("/node-")).count();
    assert_eq!(node_applies, nodes.len(), "a Node object for every missing node: {calls:#?}");
    let ready_wait = calls.iter().find(|c| c.starts_with("wait --for=condition=Ready")).expect("waited for Ready");
    for resource in [
        "ssisdbavailabilitygroup/ssisdb",
        "scaleoutmastergroup/ssis-master",
        "scaleoutworker/win-worker-1",
        "scaleoutworker/etl-pool",
    ] {
        assert!(ready_wait.contains(resource), "{resource} not waited on: {ready_wait}");
    }
    assert!(has("get ssis -A"), "summary missing: {calls:#?}");
    // Clean-up without --keep: the resources first (their finalizers need the operator), then
    // the Nodes and namespaces it created.
    let position = |needle: &str| calls.iter().position(|c| c.contains(needle)).unwrap_or_else(|| panic!("{needle}"));
    assert!(position("delete -n ssis --ignore-not-found") < position("delete nodes"));
    assert!(has("delete namespace ssis ") && has("delete namespace ssis-operator "), "{calls:#?}");
    let deleted_nodes = calls.iter().find(|c| c.contains("delete nodes")).unwrap();
    assert!(nodes.iter().all(|(node, _, _)| deleted_nodes.contains(node.as_str())), "{deleted_nodes}");
}

#[test]
fn keep_leaves_the_cluster_objects_but_still_stops_the_processes() {
    let lab = Lab::new("keep", true);
    let finished = run_to_end(&lab, &["--keep", "--timeout", "30s"]);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_all_gone(&lab.stub_pids(), "with --keep");
    assert!(!lab.kubectl_calls().iter().any(|c| c.contains("delete")), "{:#?}", lab.kubectl_calls());
    assert!(finished.stderr.contains("--keep: leaving the cluster objects"), "{}", finished.stderr);
}

#[test]
fn sigint_while_waiting_stops_every_process_including_the_wait() {
    let lab = Lab::new("sigint", true);
    let child = lab.command(&["--timeout", "600s"]).env("FAKE_WAIT", "block").spawn().unwrap();
    let script_pid = child.id();
    let wait_pid_file = lab.scratch.join("wait.pid");
    wait_until("the script to wait for Ready", || wait_pid_file.is_file());
    let wait_pid: u32 = std::fs::read_to_string(&wait_pid_file).unwrap().trim().parse().unwrap();
    assert!(alive(wait_pid));
    // Whatever this test process inherited (a background job ignores SIGINT), the script must not
    // ignore SIGINT, or the signal below would go nowhere and the script would run to its timeout.
    let sigint = 1u64 << (libc::SIGINT - 1);
    assert_eq!(ignored_signals(script_pid) & sigint, 0, "the script was started with SIGINT ignored");
    let status = Command::new("kill").args(["-INT", &script_pid.to_string()]).status().unwrap();
    assert!(status.success());
    let finished = finish(child);

    assert_eq!(finished.status.code(), Some(130), "{}", finished.stderr);
    assert!(finished.stderr.contains("interrupted"), "{}", finished.stderr);
    let pids = lab.stub_pids();
    assert_eq!(pids.len(), 1 + listed_nodes().len());
    assert_all_gone(&pids, "after SIGINT");
    assert_all_gone(&[wait_pid], "the kubectl wait after SIGINT");
    assert!(lab.kubectl_calls().iter().any(|c| c.contains("delete nodes")), "clean-up ran after SIGINT");
}

#[test]
fn sigterm_during_the_run_cleans_up_the_same_way() {
    let lab = Lab::new("sigterm", true);
    let child = lab.command(&["--timeout", "600s"]).env("FAKE_WAIT", "block").spawn().unwrap();
    let wait_pid_file = lab.scratch.join("wait.pid");
    wait_until("the script to wait for Ready", || wait_pid_file.is_file());
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let finished = finish(child);
    assert_eq!(finished.status.code(), Some(143), "{}", finished.stderr);
    assert_all_gone(&lab.stub_pids(), "after SIGTERM");
}

#[test]
fn real_binaries_without_a_reachable_api_server_fail_the_run_and_leave_no_process() {
    // kubectl is faked (the API "answers"), but the real operator and agents read the kubeconfig
    // and find nothing at 127.0.0.1:1: the operator exits, the script notices and cleans up.
    let lab = Lab::new("real-binaries", false);
    let args = ["--timeout", "600s", "--metrics-addr", "127.0.0.1:0"];
    let finished = finish(lab.command(&args).env("FAKE_WAIT", "block").spawn().unwrap());
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(finished.stderr.contains("operator (pid"), "{}", finished.stderr);
    assert!(finished.stderr.contains("exited early"), "{}", finished.stderr);
    let pids = reported_pids(&finished.stderr);
    assert_eq!(started_pids(&finished.stderr).len(), 1 + listed_nodes().len(), "{}", finished.stderr);
    assert_all_gone(&pids, "real binaries");
    // The simulated hosts were provisioned by the real agent binary.
    let workdir = std::fs::read_dir(lab.scratch.join("tmp")).unwrap().next().unwrap().unwrap().path();
    for (node, _, _) in listed_nodes() {
        assert!(workdir.join(format!("world/hosts/{node}/state.json")).is_file(), "{node} not provisioned");
    }
}
