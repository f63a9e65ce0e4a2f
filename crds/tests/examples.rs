//! The manifests in `examples/` are what users copy and what `ssis-operator simulate` / `plan` run
//! on, so each must pass admission exactly as a real API server would check it (OpenAPI constraints
//! after defaulting, then the CEL rules), deserialize into the Rust types, and be complete: every
//! Secret, key and object it references is in the examples too. The deliberately wrong manifests in
//! `crds/tests/invalid/` must each be rejected with an error naming the expected field.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use ssis_crds::{HostConfig, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup};
use support::{Manifest, admission_errors, load_documents, schemas_by_kind, workspace_root, yaml_files};

const API_VERSION: &str = "ssis.sqlops.io/v1alpha1";

fn examples() -> Vec<Manifest> {
    let files = yaml_files(&workspace_root().join("examples"));
    assert!(!files.is_empty(), "examples/ has no manifests");
    files.iter().flat_map(|f| load_documents(f)).collect()
}

fn invalid_dir() -> PathBuf {
    workspace_root().join("crds/tests/invalid")
}

/// Deserialize a custom resource into its Rust type, as the operator will.
fn deserialize(manifest: &Manifest) -> Result<(), String> {
    let value = manifest.value.clone();
    let result = match manifest.kind() {
        "SsisdbAvailabilityGroup" => serde_json::from_value::<SsisdbAvailabilityGroup>(value).map(drop),
        "ScaleOutMasterGroup" => serde_json::from_value::<ScaleOutMasterGroup>(value).map(drop),
        "ScaleOutWorker" => serde_json::from_value::<ScaleOutWorker>(value).map(drop),
        "HostConfig" => serde_json::from_value::<HostConfig>(value).map(drop),
        other => return Err(format!("unknown kind {other}")),
    };
    result.map_err(|e| e.to_string())
}

#[test]
fn every_example_custom_resource_passes_admission_and_deserializes() {
    let schemas = schemas_by_kind();
    let mut checked = BTreeMap::<String, usize>::new();
    for manifest in examples().iter().filter(|m| m.api_version() == API_VERSION) {
        let where_ = format!("{} {}/{}", manifest.file.display(), manifest.kind(), manifest.name());
        let schema = schemas.get(manifest.kind()).unwrap_or_else(|| panic!("{where_}: no CRD for this kind"));
        let errors = admission_errors(schema, &manifest.value);
        assert!(errors.is_empty(), "{where_} would be rejected:\n{}", errors.join("\n"));
        deserialize(manifest).unwrap_or_else(|e| panic!("{where_} does not deserialize into the Rust type: {e}"));
        assert_eq!(manifest.namespace(), "ssis", "{where_}: examples live in namespace ssis");
        *checked.entry(manifest.kind().to_string()).or_default() += 1;
    }
    assert_eq!(checked.get("SsisdbAvailabilityGroup"), Some(&1), "{checked:?}");
    assert_eq!(checked.get("ScaleOutMasterGroup"), Some(&1), "{checked:?}");
    assert_eq!(checked.get("ScaleOutWorker"), Some(&2), "{checked:?}");
}

#[test]
fn examples_describe_the_documented_deployment() {
    let manifests = examples();
    let find = |kind: &str, name: &str| {
        manifests
            .iter()
            .find(|m| m.kind() == kind && m.name() == name)
            .unwrap_or_else(|| panic!("examples lack {kind} {name}"))
            .value
            .clone()
    };
    let ag: SsisdbAvailabilityGroup = serde_json::from_value(find("SsisdbAvailabilityGroup", "ssisdb")).unwrap();
    assert_eq!(ag.spec.replicas.len(), 2, "two replicas");
    assert!(ag.spec.listener.name.len() <= 15);
    let master: ScaleOutMasterGroup = serde_json::from_value(find("ScaleOutMasterGroup", "ssis-master")).unwrap();
    assert_eq!(master.spec.sql_version, ssis_crds::SqlVersion::V160, "SQL Server 2022");
    assert_eq!(master.spec.nodes, ["win-sql-1", "win-sql-2"]);
    assert_eq!(master.spec.availability_group_ref.name, "ssisdb");
    let replica_nodes: BTreeSet<_> = ag.spec.replicas.iter().filter_map(|r| r.node_name.clone()).collect();
    assert_eq!(replica_nodes, master.spec.nodes.iter().cloned().collect(), "masters run on the SQL replica nodes");
    let single: ScaleOutWorker = serde_json::from_value(find("ScaleOutWorker", "win-worker-1")).unwrap();
    assert_eq!(single.spec.node_name.as_deref(), Some("win-worker-1"));
    let pool: ScaleOutWorker = serde_json::from_value(find("ScaleOutWorker", "etl-pool")).unwrap();
    let labels = pool.spec.node_selector.clone().and_then(|s| s.match_labels).unwrap_or_default();
    assert_eq!(labels.get("ssis.sqlops.io/worker-pool").map(String::as_str), Some("etl"));
    for worker in [&single, &pool] {
        assert_eq!(worker.spec.master_group_ref.name, "ssis-master");
    }
}

/// Every `{name, key}` Secret reference (and the admin credentials' `name` + key fields) in a spec.
fn secret_references(kind: &str, spec: &Value) -> Vec<(String, String, String)> {
    let mut refs = Vec::new();
    fn walk(path: &str, value: &Value, refs: &mut Vec<(String, String, String)>) {
        match value {
            Value::Object(map) => {
                let is_key_ref = path.ends_with("SecretRef") || path.ends_with("secretRef");
                if is_key_ref
                    && let (Some(Value::String(name)), Some(Value::String(key))) = (map.get("name"), map.get("key"))
                {
                    refs.push((path.to_string(), name.clone(), key.clone()));
                }
                for (k, v) in map {
                    walk(&format!("{path}.{k}"), v, refs);
                }
            }
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| walk(&format!("{path}[{i}]"), v, refs)),
            _ => {}
        }
    }
    walk("spec", spec, &mut refs);
    if kind == "SsisdbAvailabilityGroup" {
        let creds = &spec["adminCredentials"];
        let name = creds["name"].as_str().unwrap_or_default().to_string();
        for (field, default) in [("usernameKey", "username"), ("passwordKey", "password")] {
            let key = creds[field].as_str().unwrap_or(default).to_string();
            refs.push((format!("spec.adminCredentials.{field}"), name.clone(), key));
        }
    }
    refs
}

#[test]
fn every_reference_in_the_examples_resolves() {
    let manifests = examples();
    let secrets: BTreeMap<(String, String), BTreeSet<String>> = manifests
        .iter()
        .filter(|m| m.kind() == "Secret")
        .map(|m| {
            let keys = ["data", "stringData"]
                .iter()
                .filter_map(|field| m.value.get(field).and_then(Value::as_object))
                .flat_map(|map| map.keys().cloned())
                .collect();
            ((m.namespace().to_string(), m.name().to_string()), keys)
        })
        .collect();
    let objects: BTreeSet<(String, String, String)> =
        manifests.iter().map(|m| (m.kind().to_string(), m.namespace().to_string(), m.name().to_string())).collect();
    let mut referenced_secrets = BTreeSet::new();
    for manifest in manifests.iter().filter(|m| m.api_version() == API_VERSION) {
        let ns = manifest.namespace().to_string();
        for (field, name, key) in secret_references(manifest.kind(), &manifest.value["spec"]) {
            let keys = secrets.get(&(ns.clone(), name.clone())).unwrap_or_else(|| {
                panic!("{} {} {field}: Secret {ns}/{name} is not in examples/", manifest.kind(), manifest.name())
            });
            assert!(keys.contains(&key), "{} {field}: Secret {ns}/{name} has no key {key}", manifest.name());
            referenced_secrets.insert((ns.clone(), name));
        }
        let object_refs =
            [("availabilityGroupRef", "SsisdbAvailabilityGroup"), ("masterGroupRef", "ScaleOutMasterGroup")];
        for (field, kind) in object_refs {
            if let Some(name) = manifest.value["spec"][field]["name"].as_str() {
                let key = (kind.to_string(), ns.clone(), name.to_string());
                assert!(
                    objects.contains(&key),
                    "{} spec.{field}: {kind} {ns}/{name} is not in examples/",
                    manifest.name()
                );
            }
        }
    }
    let unused: Vec<_> = secrets.keys().filter(|k| !referenced_secrets.contains(*k)).collect();
    assert!(unused.is_empty(), "Secrets in examples/ that nothing references: {unused:?}");
}

#[test]
fn example_secrets_hold_only_marked_placeholders() {
    let not_secret = ["username"];
    for manifest in examples().iter().filter(|m| m.kind() == "Secret") {
        assert!(
            manifest.value.get("data").is_none(),
            "{}: use stringData so placeholders stay readable",
            manifest.name()
        );
        for (key, value) in manifest.value["stringData"].as_object().expect("stringData") {
            if not_secret.contains(&key.as_str()) {
                continue;
            }
            let text = value.as_str().unwrap_or_default();
            assert!(
                text.starts_with("CHANGE-ME-"),
                "{} {key}: placeholder must start with CHANGE-ME-",
                manifest.name()
            );
        }
    }
}

/// `# expect-field: spec.listener.name` in the file header names the field the error must mention.
fn expected_field(file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("# expect-field:"))
        .map(|f| f.trim().to_string())
        .unwrap_or_else(|| panic!("{} has no `# expect-field:` header", file.display()))
}

/// Optional `# expect-message: Duplicate value` header: the error naming the field must also say this.
fn expected_message(file: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().find_map(|line| line.strip_prefix("# expect-message:")).map(|m| m.trim().to_string())
}

#[test]
fn every_invalid_manifest_is_rejected_naming_the_field() {
    let schemas = schemas_by_kind();
    let files = yaml_files(&invalid_dir());
    // The catalogue covers every kind the operator registers (ssis_crds::generate::all_crds).
    let covered: BTreeSet<String> =
        files.iter().flat_map(|file| load_documents(file)).map(|m| m.kind().to_string()).collect();
    let kinds: BTreeSet<String> = schemas.keys().cloned().collect();
    assert_eq!(covered, kinds, "kinds with invalid manifests in crds/tests/invalid (left) vs every kind (right)");
    for file in files {
        let expected = expected_field(&file);
        let documents = load_documents(&file);
        assert_eq!(documents.len(), 1, "{}: one object per invalid manifest", file.display());
        let manifest = &documents[0];
        let schema = &schemas[manifest.kind()];
        let errors = admission_errors(schema, &manifest.value);
        assert!(!errors.is_empty(), "{} was accepted; it must be rejected at {expected}", file.display());
        let message = expected_message(&file).unwrap_or_default();
        let matching = errors.iter().find(|e| e.contains(&expected) && e.contains(&message));
        let Some(matching) = matching else {
            panic!("{}: no error names {expected} with {message:?}:\n{}", file.display(), errors.join("\n"));
        };
        eprintln!("{}: {matching}", file.file_name().unwrap().to_string_lossy());
    }
}

#[test]
fn preview_nodes_cover_every_node_the_examples_use() {
    let nodes = load_documents(&workspace_root().join("examples/preview/nodes.yaml"));
    let windows: BTreeMap<String, Value> = nodes
        .iter()
        .filter(|n| {
            n.kind() == "Node" && n.value.pointer("/metadata/labels/kubernetes.io~1os") == Some(&"windows".into())
        })
        .map(|n| (n.name().to_string(), n.value["metadata"]["labels"].clone()))
        .collect();
    let pool_label = |labels: &Value| labels.get("ssis.sqlops.io/worker-pool").and_then(Value::as_str) == Some("etl");
    for manifest in examples().iter().filter(|m| m.api_version() == API_VERSION) {
        let spec = &manifest.value["spec"];
        let mut used: Vec<&str> = spec["nodes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        used.extend(spec["replicas"].as_array().into_iter().flatten().filter_map(|r| r["nodeName"].as_str()));
        used.extend(spec["nodeName"].as_str());
        for node in used {
            assert!(windows.contains_key(node), "{} uses node {node}, missing from examples/preview", manifest.name());
        }
        if let Some(node) = spec["nodeName"].as_str() {
            assert!(
                !pool_label(&windows[node]),
                "{node} is enrolled by {} and must not be in the etl pool",
                manifest.name()
            );
        }
    }
    let pool_size = windows.values().filter(|labels| pool_label(labels)).count();
    assert!(pool_size >= 2, "the etl pool preview needs labelled nodes, found {pool_size}");
}
