//! `ssis-operator plan`: the offline GitOps preview.

use std::path::{Path, PathBuf};
use std::process::Command;

use ssis_operator::cli::plan::{Manifests, load_manifests, load_text, preview, render_text};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan")
}

fn now() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("valid timestamp")
}

fn text_for(paths: &[PathBuf]) -> String {
    let manifests = load_manifests(paths, "default").expect("manifests load");
    render_text(&preview(manifests, "ssis-system", now()))
}

const SECRET_VALUES: [&str; 4] = [
    "S3cr3t-Admin-Never-Printed",
    "S3cr3t-Catalog-Never-Printed",
    "S3cr3t-Logging-Never-Printed",
    "UzNjcjN0LU1hc3Rlci1OZXZlci1QcmludGVk",
];

#[test]
fn preview_shows_every_windows_node_and_the_sql_actions_without_secret_values() {
    let text = text_for(&[fixtures()]);
    for node in ["win-sql-1", "win-sql-2", "win-worker-1", "win-etl-1", "win-etl-2"] {
        assert!(text.contains(&format!("\nnode {node} sqlVersion=160\n")), "node {node} missing:\n{text}");
    }
    assert!(!text.contains("node linux-1"), "Linux nodes never get a HostConfig");
    assert!(text.contains("masterSettings SqlServerName=agl-ssis.corp.example.com,1433"));
    assert!(text.contains("workerSettings MasterEndpoint=https://ssis-master.corp.example.com:8391"));
    assert!(text.contains("EnableScaleOut replica=SQL1"));
    assert!(text.contains("UpdateMasterAddress address=https://ssis-master.corp.example.com:8391 replica=SQL1"));
    assert!(text.contains("legacyServiceConfig folder SqlServerFolder MSDB-SQL2 ServerName=SQL2"));
    for secret in SECRET_VALUES {
        assert!(!text.contains(secret), "secret value printed");
    }
}

#[test]
fn preview_text_is_stable_and_sorted_for_diffs() {
    let first = text_for(&[fixtures()]);
    let second = text_for(&[fixtures().join("nodes.yaml"), fixtures().join("topology.yaml")]);
    assert_eq!(first, second, "file order does not change the preview");
    let nodes: Vec<&str> = first.lines().filter(|l| l.starts_with("node ")).collect();
    let mut sorted = nodes.clone();
    sorted.sort();
    assert_eq!(nodes, sorted);
}

#[test]
fn without_node_objects_referenced_nodes_are_inferred_and_said_so() {
    let text = text_for(&[fixtures().join("topology.yaml")]);
    assert!(text.contains("note: no Node objects given; assuming these referenced nodes are Windows nodes: win-sql-1, win-sql-2, win-worker-1"));
    assert!(text.contains("selects nodes by label"));
    assert!(text.contains("node win-worker-1 sqlVersion=160"));
}

#[test]
fn json_output_carries_the_same_plan() {
    let manifests = load_manifests(&[fixtures()], "default").expect("manifests load");
    let json = serde_json::to_value(preview(manifests, "ssis-system", now())).expect("json");
    assert!(json["nodes"]["win-sql-1"]["masterSettings"]["sqlServerName"] == "agl-ssis.corp.example.com,1433");
    assert!(json["sqlActions"]["ssis/ssisdb"].as_array().is_some_and(|a| !a.is_empty()));
    let text = json.to_string();
    for secret in SECRET_VALUES {
        assert!(!text.contains(secret));
    }
}

#[test]
fn unknown_kind_names_the_file_and_document() {
    let mut manifests = Manifests::default();
    let error = load_text(
        "kind: Namespace\napiVersion: v1\n---\napiVersion: v1\nkind: ConfigMap\n",
        "cm.yaml",
        "default",
        &mut manifests,
    )
    .expect_err("unknown kind");
    let message = error.to_string();
    assert!(message.contains("cm.yaml, document 1") && message.contains("unknown kind ConfigMap"), "{message}");
}

#[test]
fn invalid_manifest_names_the_field() {
    let yaml = "apiVersion: ssis.sqlops.io/v1alpha1\nkind: ScaleOutMasterGroup\nmetadata: {name: m}\nspec:\n  sqlVersion: \"160\"\n  availabilityGroupRef: {name: a}\n  masterService: {dnsName: x, port: not-a-number}\n";
    let mut manifests = Manifests::default();
    let message = load_text(yaml, "m.yaml", "default", &mut manifests).expect_err("invalid").to_string();
    assert!(message.contains("m.yaml, document 0") && message.contains("spec.masterService.port"), "{message}");
}

#[test]
fn missing_file_is_a_clear_error_and_a_failing_exit_code() {
    let output = Command::new(env!("CARGO_BIN_EXE_ssis-operator"))
        .args(["plan", "-f", "/nonexistent/manifests.yaml"])
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/manifests.yaml"), "{stderr}");
}

#[test]
fn binary_prints_text_and_json() {
    let dir = fixtures();
    let text =
        Command::new(env!("CARGO_BIN_EXE_ssis-operator")).args(["plan", "-f"]).arg(&dir).output().expect("binary runs");
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("# ssis-operator plan"));
    let json = Command::new(env!("CARGO_BIN_EXE_ssis-operator"))
        .args(["plan", "-o", "json", "-f"])
        .arg(&dir)
        .output()
        .expect("binary runs");
    assert!(json.status.success());
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid JSON");
    assert!(value["nodes"].as_object().is_some_and(|n| n.len() == 5));
}

/// The repository's examples (always in the tree: a missing file fails the test instead of skipping
/// it) preview the deployment they describe: the master nodes point SqlServerName at the AG
/// listener of 20-availability-group.yaml, the workers at the master endpoint of
/// 30-master-group.yaml, and SQL Server gets the Scale Out actions.
#[test]
fn repository_examples_preview_the_deployment_they_describe() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = text_for(&[examples]);
    for node in ["win-sql-1", "win-sql-2", "win-worker-1"] {
        assert!(text.contains(&format!("\nnode {node} ")), "node {node} missing:\n{text}");
    }
    assert!(text.contains("masterSettings SqlServerName=agl-ssis.corp.example.com,1433"), "{text}");
    assert!(text.contains("workerSettings MasterEndpoint=https://ssis-master.corp.example.com:8391"), "{text}");
    assert!(text.contains("\nsql ssis/ssisdb\n") && text.contains(". EnableScaleOut replica=WIN-SQL-1\n"), "{text}");
}
