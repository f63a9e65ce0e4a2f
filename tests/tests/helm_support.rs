//! Shared helpers of the chart and deploy/ tests (included with `#[path]` by helm_chart.rs and
//! deploy_manifests.rs; as a test target of its own it holds no tests).
//!
//! The tests run the REAL helm (v4) and kubectl binaries. They are found through the HELM / KUBECTL
//! environment variables or in `<repo>/.tools/bin/` (installed by scripts/ci/install-helm.sh). When
//! they are missing the tests fail and say how to install them; they never skip.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Release name and namespace used for every render (the ones deploy/ssis-operator.yaml is made with).
pub const RELEASE: &str = "ssis-operator";
pub const NAMESPACE: &str = "ssis-operator";

/// The repository root (the workspace directory above tests/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/ssis-operator")
}

/// Path of a real tool binary: `$ENV_VAR`, else `.tools/bin/<name>`. Panics with install instructions.
pub fn tool(name: &str, env_var: &str) -> PathBuf {
    let path = match std::env::var_os(env_var) {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => repo_root().join(".tools/bin").join(name),
    };
    assert!(
        path.is_file(),
        "{name} not found at {} (set {env_var} or run scripts/ci/install-helm.sh, which installs helm v4 and \
         kubectl into .tools/bin); the chart tests need the real binaries and do not skip without them",
        path.display()
    );
    path
}

pub fn helm_bin() -> PathBuf {
    tool("helm", "HELM")
}

/// Helm 3 (installed next to helm v4 as `.tools/bin/helm3`), to check that the chart works with both.
pub fn helm3_bin() -> PathBuf {
    tool("helm3", "HELM3")
}

pub fn kubectl_bin() -> PathBuf {
    tool("kubectl", "KUBECTL")
}

/// Non-default value sets every structural test also runs against (besides the defaults).
pub const VARIANTS: &[(&str, &[&str])] = &[
    ("defaults", &[]),
    ("agent disabled", &["--set", "agent.enabled=false"]),
    (
        "single replica without leader election",
        &["--set", "operator.replicas=1", "--set", "operator.leaderElection.enabled=false"],
    ),
    ("service monitor", &["--set", "operator.metrics.serviceMonitor.enabled=true"]),
    (
        "custom tolerations and resources",
        &[
            "--set-json",
            r#"agent.tolerations=[{"key":"sku","operator":"Equal","value":"Windows","effect":"NoSchedule"},{"key":"ssis","operator":"Exists"}]"#,
            "--set-json",
            r#"agent.resources={"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"cpu":"2","memory":"512Mi"}}"#,
            "--set-json",
            r#"operator.resources={"requests":{"cpu":"10m","memory":"32Mi"},"limits":{"cpu":"1","memory":"1Gi"}}"#,
            "--set-json",
            r#"operator.tolerations=[{"key":"dedicated","operator":"Equal","value":"ops","effect":"NoExecute","tolerationSeconds":60}]"#,
            "--set-json",
            r#"agent.nodeSelector={"ssis.sqlops.io/role":"scale-out"}"#,
        ],
    ),
    ("node-bound agent admission policy", &["--set", "agent.nodeBoundStatusPolicy.enabled=true"]),
    (
        "watched namespaces, registry and digest",
        &[
            "--set",
            "imageRegistry=registry.example.com/ssis",
            "--set",
            "operator.image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "--set",
            "agent.image.tag=1.2.3",
            "--set-json",
            r#"operator.watchNamespaces=["etl-prod","etl-test"]"#,
            "--set",
            "operator.concurrency=8",
        ],
    ),
    (
        "monitoring: alert rules, dashboard, agent PodMonitor",
        &[
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "agent.metrics.podMonitor.enabled=true",
            "--set",
            "operator.metrics.serviceMonitor.enabled=true",
        ],
    ),
];

/// Run a tool offline: no kubeconfig, so nothing can reach a cluster by accident.
pub fn run(bin: &Path, args: &[&str]) -> Output {
    let scratch = std::env::temp_dir().join(format!("ssis-helm-tests-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("create scratch dir");
    Command::new(bin)
        .args(args)
        .current_dir(repo_root())
        .env("KUBECONFIG", scratch.join("no-kubeconfig"))
        .env("HELM_CACHE_HOME", scratch.join("helm-cache"))
        .env("HELM_CONFIG_HOME", scratch.join("helm-config"))
        .env("HELM_DATA_HOME", scratch.join("helm-data"))
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", bin.display()))
}

/// Run helm and return stdout; panics with stderr when it fails.
pub fn helm_ok(args: &[&str]) -> String {
    run_ok(&helm_bin(), args)
}

/// Run a helm binary and return stdout; panics with stderr when it fails.
pub fn run_ok(bin: &Path, args: &[&str]) -> String {
    let output = run(bin, args);
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}",
        bin.display(),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

/// Run helm expecting failure; returns stderr.
pub fn helm_err(args: &[&str]) -> String {
    run_err(&helm_bin(), args)
}

/// Run a helm binary expecting failure; returns stderr.
pub fn run_err(bin: &Path, args: &[&str]) -> String {
    let output = run(bin, args);
    assert!(
        !output.status.success(),
        "{} {} unexpectedly succeeded; stdout:\n{}",
        bin.display(),
        args.join(" "),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `helm template` arguments for the chart with extra `--set`-style arguments.
pub fn template_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "template".to_string(),
        RELEASE.to_string(),
        chart_dir().display().to_string(),
        "--namespace".to_string(),
        NAMESPACE.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Render the chart (templates only, no CRDs) as raw YAML text.
pub fn render_text(extra: &[&str]) -> String {
    let args = template_args(extra);
    helm_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Render the chart and parse every non-empty document.
pub fn render(extra: &[&str]) -> Vec<Value> {
    parse_documents(&render_text(extra))
}

/// Parse a multi-document YAML stream, dropping empty documents.
pub fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc| !doc.is_null())
        .collect()
}

pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// All documents of one kind.
pub fn of_kind<'a>(docs: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| kind(doc) == wanted).collect()
}

/// The single document of a kind; panics when there is none or more than one.
pub fn one<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    let found = of_kind(docs, wanted);
    assert_eq!(found.len(), 1, "expected exactly one {wanted}, found {}", found.len());
    found[0]
}

/// (kind, name) of every document, to compare what a value set renders.
pub fn inventory(docs: &[Value]) -> BTreeSet<(String, String)> {
    docs.iter().map(|doc| (kind(doc).to_string(), name(doc).to_string())).collect()
}

/// The files (name -> bytes) of a directory with the given extension, sorted by name.
pub fn files_with_extension(dir: &Path, extension: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read file");
            (path.file_name().expect("file name").to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Assert that `copy_dir` holds exactly the YAML files of crds/generated/, byte for byte.
pub fn assert_same_crds(copy_dir: &Path) {
    let generated = files_with_extension(&repo_root().join("crds/generated"), "yaml");
    let copies = files_with_extension(copy_dir, "yaml");
    assert!(!generated.is_empty(), "crds/generated/ holds no CRDs");
    let generated_names: Vec<&str> = generated.iter().map(|(name, _)| name.as_str()).collect();
    let copy_names: Vec<&str> = copies.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        copy_names,
        generated_names,
        "{} must hold exactly the CRD files of crds/generated/; run deploy/render.sh",
        copy_dir.display()
    );
    for ((name, generated), (_, copy)) in generated.iter().zip(&copies) {
        assert!(
            generated == copy,
            "{}/{name} differs from crds/generated/{name}; run deploy/render.sh",
            copy_dir.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Offline API validation: every rendered object must survive a round trip through the typed
// Kubernetes API structs (k8s-openapi). A misspelled or misplaced field is dropped on the way and
// shows up as a difference. (`kubectl apply --dry-run=client` needs an API server for the REST
// mapping and the OpenAPI schema, so it cannot run without a cluster.)
// ---------------------------------------------------------------------------------------------

fn roundtrip<T: DeserializeOwned + Serialize>(doc: &Value) -> Value {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|error| panic!("{} {} does not match the API type: {error}", kind(doc), name(doc)));
    serde_json::to_value(&typed).expect("serialize")
}

fn differences(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
                let child = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(x, y, &child, out),
                    (Some(_), None) => out.push(format!("{child}: not a field of the API type")),
                    (None, Some(_)) => out.push(format!("{child}: added by the API type")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{path}[{index}]"), out);
            }
        }
        // Schema bounds are f64 in the API types (1 and 1.0 are the same JSON number to the API server).
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a != b => out.push(format!("{path}: {a} became {b}")),
        _ => {}
    }
}

/// Validate one object against its API type; returns false for kinds without a typed model here.
pub fn assert_api_valid(doc: &Value) -> bool {
    let back = match kind(doc) {
        "Deployment" => roundtrip::<Deployment>(doc),
        "DaemonSet" => roundtrip::<DaemonSet>(doc),
        "Service" => roundtrip::<Service>(doc),
        "ConfigMap" => roundtrip::<ConfigMap>(doc),
        "ServiceAccount" => roundtrip::<ServiceAccount>(doc),
        "Namespace" => roundtrip::<Namespace>(doc),
        "ClusterRole" => roundtrip::<ClusterRole>(doc),
        "ClusterRoleBinding" => roundtrip::<ClusterRoleBinding>(doc),
        "Role" => roundtrip::<Role>(doc),
        "RoleBinding" => roundtrip::<RoleBinding>(doc),
        "PodDisruptionBudget" => roundtrip::<PodDisruptionBudget>(doc),
        "ValidatingAdmissionPolicy" => roundtrip::<ValidatingAdmissionPolicy>(doc),
        "ValidatingAdmissionPolicyBinding" => roundtrip::<ValidatingAdmissionPolicyBinding>(doc),
        "CustomResourceDefinition" => roundtrip::<CustomResourceDefinition>(doc),
        _ => return false,
    };
    let mut diffs = Vec::new();
    differences(doc, &back, "", &mut diffs);
    assert!(diffs.is_empty(), "{} {} is not valid for the Kubernetes API:\n{}", kind(doc), name(doc), diffs.join("\n"));
    true
}
