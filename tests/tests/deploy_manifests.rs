//! deploy/ (plain manifests for GitOps) and examples/gitops/: drift against the chart and the
//! generated CRDs, offline validation with the real kubectl (kustomize build) and the typed API, and
//! the Argo CD health check run in a real Lua 5.1 interpreter (Argo CD's gopher-lua is Lua 5.1).
//! Run scripts/ci/install-helm.sh first (or set HELM / KUBECTL).

#[path = "helm_support.rs"]
mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::*;

/// First lines of deploy/ssis-operator.yaml (written by deploy/render.sh).
const DEPLOY_HEADER: &str = "# Rendered by deploy/render.sh: helm template ssis-operator charts/ssis-operator --namespace ssis-operator\n\
# (default values; CRDs are in deploy/crds/). Do not edit; change the chart and re-render.\n";

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

fn kubectl_ok(args: &[&str]) -> String {
    let output = run(&kubectl_bin(), args);
    assert!(
        output.status.success(),
        "kubectl {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Drift
// ---------------------------------------------------------------------------------------------

#[test]
fn deploy_manifest_equals_the_chart_rendered_with_default_values() {
    let expected = format!("{DEPLOY_HEADER}{}", render_text(&[]));
    let actual = read("deploy/ssis-operator.yaml");
    if actual != expected {
        let first_difference = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map(|line| format!("first difference at line {}", line + 1))
            .unwrap_or_else(|| "one is a prefix of the other".into());
        panic!(
            "deploy/ssis-operator.yaml is out of date with charts/ssis-operator ({first_difference}); run deploy/render.sh"
        );
    }
}

#[test]
fn deploy_crds_equal_generated_crds() {
    assert_same_crds(&repo_root().join("deploy/crds"));
}

// ---------------------------------------------------------------------------------------------
// kubectl (offline): kustomize builds of deploy/ and of the registry overlay
// ---------------------------------------------------------------------------------------------

#[test]
fn kubectl_kustomize_builds_deploy_with_namespace_crds_and_workloads() {
    let docs = parse_documents(&kubectl_ok(&["kustomize", "deploy"]));
    let namespace = one(&docs, "Namespace");
    assert_eq!(name(namespace), NAMESPACE);
    // HostProcess pods are admitted only at the privileged Pod Security level.
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], json!("privileged"));
    let crds: BTreeSet<&str> = of_kind(&docs, "CustomResourceDefinition").iter().map(|crd| name(crd)).collect();
    let generated: BTreeSet<String> = files_with_extension(&repo_root().join("crds/generated"), "yaml")
        .iter()
        .map(|(file, _)| format!("{}.ssis.sqlops.io", file.trim_end_matches(".yaml")))
        .collect();
    assert_eq!(crds, generated.iter().map(String::as_str).collect());
    for doc in &docs {
        let typed = assert_api_valid(doc);
        assert!(typed, "unexpected kind {} in deploy/", kind(doc));
        let cluster_scoped =
            matches!(kind(doc), "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding");
        if !cluster_scoped {
            assert_eq!(doc["metadata"]["namespace"], json!(NAMESPACE), "{} {}", kind(doc), name(doc));
        }
    }
    // Everything the chart renders by default is in the build.
    let chart = inventory(&render(&[]));
    let built = inventory(&docs);
    assert!(chart.is_subset(&built), "missing from deploy/: {:?}", chart.difference(&built).collect::<Vec<_>>());
}

#[test]
fn kustomize_overlay_points_both_images_at_the_registry() {
    let docs = parse_documents(&kubectl_ok(&["kustomize", "examples/gitops/kustomize"]));
    let image = |kind_name: &str| one(&docs, kind_name)["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(image("Deployment"), json!("registry.example.com/ssis/ssis-operator:0.1.0"));
    assert_eq!(image("DaemonSet"), json!("registry.example.com/ssis/ssis-agent:0.1.0"));
}

// ---------------------------------------------------------------------------------------------
// GitOps examples
// ---------------------------------------------------------------------------------------------

fn gitops_docs(relative: &str) -> Vec<Value> {
    parse_documents(&read(relative))
}

#[test]
fn argocd_application_installs_the_chart_with_server_side_apply_into_a_privileged_namespace() {
    let docs = gitops_docs("examples/gitops/argocd/ssis-operator-application.yaml");
    let apps = of_kind(&docs, "Application");
    let operator = apps.iter().find(|app| name(app) == "ssis-operator").expect("ssis-operator Application");
    assert_eq!(operator["apiVersion"], json!("argoproj.io/v1alpha1"));
    let path = operator["spec"]["source"]["path"].as_str().expect("source.path");
    assert!(repo_root().join(path).join("Chart.yaml").is_file(), "{path} is not the chart");
    assert_eq!(operator["spec"]["destination"]["namespace"], json!(NAMESPACE));
    let sync_options = operator["spec"]["syncPolicy"]["syncOptions"].as_array().expect("syncOptions");
    assert!(
        sync_options.contains(&json!("ServerSideApply=true")) && sync_options.contains(&json!("CreateNamespace=true"))
    );
    assert_eq!(
        operator["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        json!("privileged")
    );
    // The Helm values of the Application pass the chart's schema.
    let values = serde_yaml_ng::to_string(&operator["spec"]["source"]["helm"]["valuesObject"]).unwrap();
    assert_values_accepted(&values, "argocd Application");
}

#[test]
fn flux_examples_reference_existing_paths_and_valid_values() {
    let sources = gitops_docs("examples/gitops/flux/gitrepository.yaml");
    let source_names: BTreeSet<&str> = of_kind(&sources, "GitRepository").iter().map(|doc| name(doc)).collect();

    let kustomizations = gitops_docs("examples/gitops/flux/ssis-operator-kustomization.yaml");
    let operator = kustomizations.iter().find(|doc| name(doc) == "ssis-operator").expect("operator Kustomization");
    assert_eq!(operator["apiVersion"], json!("kustomize.toolkit.fluxcd.io/v1"));
    let path = operator["spec"]["path"].as_str().expect("path");
    assert!(repo_root().join(path).join("kustomization.yaml").is_file(), "{path} has no kustomization.yaml");
    assert_eq!(operator["spec"]["wait"], json!(true));
    let image_names: BTreeSet<&str> = operator["spec"]["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|image| image["name"].as_str().unwrap())
        .collect();
    assert_eq!(image_names, BTreeSet::from(["ssis-operator", "ssis-agent"]));
    for kustomization in &kustomizations {
        let source = kustomization["spec"]["sourceRef"]["name"].as_str().expect("sourceRef");
        assert!(source_names.contains(source), "Kustomization {} uses unknown source {source}", name(kustomization));
    }
    let resources =
        kustomizations.iter().find(|doc| name(doc) == "ssis-scale-out-prod").expect("resources Kustomization");
    assert_eq!(resources["spec"]["dependsOn"][0]["name"], json!("ssis-operator"));
    assert_eq!(resources["spec"]["wait"], json!(true));

    let releases = gitops_docs("examples/gitops/flux/ssis-operator-helmrelease.yaml");
    let release = one(&releases, "HelmRelease");
    let chart = release["spec"]["chart"]["spec"]["chart"].as_str().expect("chart");
    assert!(repo_root().join(chart).join("Chart.yaml").is_file(), "{chart} is not the chart");
    assert!(source_names.contains(release["spec"]["chart"]["spec"]["sourceRef"]["name"].as_str().unwrap()));
    assert_eq!(release["spec"]["install"]["crds"], json!("CreateReplace"));
    assert_eq!(release["spec"]["upgrade"]["crds"], json!("CreateReplace"));
    assert_eq!(release["spec"]["targetNamespace"], json!(NAMESPACE));
    assert_values_accepted(&serde_yaml_ng::to_string(&release["spec"]["values"]).unwrap(), "Flux HelmRelease");
}

/// Render the chart with a values file; the schema and templates must accept it.
fn assert_values_accepted(values_yaml: &str, label: &str) {
    let file =
        std::env::temp_dir().join(format!("ssis-values-{}-{}.yaml", std::process::id(), label.replace(' ', "-")));
    std::fs::write(&file, values_yaml).expect("write values");
    let file_arg = file.display().to_string();
    let docs = render(&["--values", &file_arg]);
    std::fs::remove_file(&file).ok();
    assert!(!of_kind(&docs, "Deployment").is_empty(), "{label}: no Deployment rendered");
}

// ---------------------------------------------------------------------------------------------
// Argo CD health check
// ---------------------------------------------------------------------------------------------

/// The namespaced user kinds, from the generated CRDs.
fn user_kinds() -> BTreeSet<String> {
    files_with_extension(&repo_root().join("crds/generated"), "yaml")
        .iter()
        .flat_map(|(_, bytes)| parse_documents(std::str::from_utf8(bytes).unwrap()))
        .filter(|crd| crd["spec"]["scope"] == "Namespaced")
        .map(|crd| {
            assert_eq!(crd["spec"]["group"], json!("ssis.sqlops.io"));
            crd["spec"]["names"]["kind"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn argocd_cm_carries_the_health_check_for_every_user_kind() {
    let health = read("examples/gitops/argocd/health.lua");
    let docs = gitops_docs("examples/gitops/argocd/argocd-cm-health.yaml");
    let config = one(&docs, "ConfigMap");
    assert_eq!(name(config), "argocd-cm");
    let data = config["data"].as_object().expect("data");
    let keys: BTreeSet<String> = data.keys().cloned().collect();
    let expected: BTreeSet<String> =
        user_kinds().iter().map(|kind| format!("resource.customizations.health.ssis.sqlops.io_{kind}")).collect();
    assert_eq!(expected.len(), 3, "three user kinds");
    assert_eq!(keys, expected);
    for (key, script) in data {
        assert_eq!(
            script.as_str(),
            Some(health.as_str()),
            "{key} differs from examples/gitops/argocd/health.lua; run deploy/render.sh"
        );
    }
}

/// Run health.lua the way Argo CD does: `obj` is the resource, the chunk returns {status, message}.
fn health_of(object: &Value) -> (String, String) {
    let lua = mlua::Lua::new();
    let script = read("examples/gitops/argocd/health.lua");
    let obj = mlua::LuaSerdeExt::to_value(&lua, object).expect("object to Lua");
    lua.globals().set("obj", obj).expect("set obj");
    let result: mlua::Table = lua.load(&script).set_name("health.lua").eval().expect("health.lua runs");
    let status: String = result.get("status").expect("status");
    let message: String = result.get("message").unwrap_or_default();
    (status, message)
}

fn worker(generation: i64, status: Value) -> Value {
    let mut object = json!({
        "apiVersion": "ssis.sqlops.io/v1alpha1",
        "kind": "ScaleOutWorker",
        "metadata": {"name": "pool-a", "namespace": "etl-prod", "generation": generation},
        "spec": {},
    });
    if !status.is_null() {
        object["status"] = status;
    }
    object
}

fn condition(kind: &str, status: &str, generation: i64, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": status, "observedGeneration": generation, "reason": reason, "message": message,
           "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

#[test]
fn argocd_health_follows_kstatus_conditions_and_generations() {
    let cases = [
        ("no status", worker(1, Value::Null), "Progressing", "Waiting for the operator"),
        (
            "ready",
            worker(
                3,
                json!({"observedGeneration": 3, "conditions": [
                    condition("Ready", "True", 3, "Enrolled", "2/2 nodes enrolled"),
                    condition("Reconciling", "False", 3, "Converged", ""),
                    condition("Stalled", "False", 3, "Converged", ""),
                ]}),
            ),
            "Healthy",
            "Enrolled: 2/2 nodes enrolled",
        ),
        (
            "spec changed, not yet observed",
            worker(4, json!({"observedGeneration": 3, "conditions": [condition("Ready", "True", 3, "Enrolled", "")]})),
            "Progressing",
            "generation 4",
        ),
        (
            "ready for an older generation",
            worker(
                4,
                json!({"observedGeneration": 4, "conditions": [
                    condition("Ready", "True", 3, "Enrolled", ""),
                    condition("Reconciling", "True", 4, "Enrolling", "node win-2: waiting for the agent"),
                ]}),
            ),
            "Progressing",
            "Enrolling: node win-2: waiting for the agent",
        ),
        (
            "stalled",
            worker(
                2,
                json!({"observedGeneration": 2, "conditions": [
                    condition("Ready", "False", 2, "InvalidSpec", "master group mg1 not found"),
                    condition("Stalled", "True", 2, "InvalidSpec", "master group mg1 not found"),
                ]}),
            ),
            "Degraded",
            "InvalidSpec: master group mg1 not found",
        ),
        (
            "stalled for an older generation is not degraded",
            worker(
                3,
                json!({"observedGeneration": 3, "conditions": [
                    condition("Stalled", "True", 2, "InvalidSpec", "old problem"),
                    condition("Ready", "False", 3, "Reconciling", "applying"),
                ]}),
            ),
            "Progressing",
            "Reconciling: applying",
        ),
        (
            "not ready, not reconciling",
            worker(
                1,
                json!({"observedGeneration": 1, "conditions": [condition("Ready", "False", 1, "WorkerOffline", "")]}),
            ),
            "Progressing",
            "WorkerOffline",
        ),
        ("status without conditions", worker(1, json!({"observedGeneration": 1})), "Progressing", "Ready"),
    ];
    for (label, object, want_status, want_message) in cases {
        let (status, message) = health_of(&object);
        assert_eq!(status, want_status, "{label}: message {message:?}");
        assert!(message.contains(want_message), "{label}: message {message:?} lacks {want_message:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// docs/install.md
// ---------------------------------------------------------------------------------------------

#[test]
fn install_guide_refers_only_to_files_that_exist() {
    let guide = read("docs/install.md");
    let mut checked = 0;
    for prefix in ["charts/", "deploy/", "examples/", "docker/", "scripts/", "tests/tests/"] {
        let mut rest = guide.as_str();
        while let Some(start) = rest.find(prefix) {
            let preceding = rest[..start].chars().last();
            let path: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
                .collect();
            rest = &rest[start + path.len().max(1)..];
            // Only repository-relative paths (not e.g. "//deploy?ref=" inside a remote URL).
            if matches!(preceding, Some(c) if c.is_ascii_alphanumeric() || c == '/' || c == '.') {
                continue;
            }
            let path = path.trim_end_matches('.');
            assert!(repo_root().join(path).exists(), "docs/install.md mentions {path}, which does not exist");
            checked += 1;
        }
    }
    assert!(checked > 20, "expected docs/install.md to mention repository files, found {checked}");
}
