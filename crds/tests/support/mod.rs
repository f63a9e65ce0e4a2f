//! Helpers shared by the schema tests: the generated schemas as JSON, an admission-style validator
//! (OpenAPI constraints through `jsonschema`, then the CEL rules through kube-cel) and manifest loading.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The workspace root (parent of `crds/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crds/ has a parent").to_path_buf()
}

/// `openAPIV3Schema` of every generated CRD, by kind.
pub fn schemas_by_kind() -> BTreeMap<String, Value> {
    ssis_crds::generate::all_crds()
        .into_iter()
        .map(|(_, crd)| {
            let kind = crd.spec.names.kind.clone();
            let version = crd.spec.versions.into_iter().next().expect("one version");
            let schema = version.schema.and_then(|s| s.open_api_v3_schema).expect("schema present");
            (kind, serde_json::to_value(schema).expect("schema serializes"))
        })
        .collect()
}

/// `openAPIV3Schema` of every CRD as committed under `crds/generated/` (what `kubectl apply`, the
/// chart and `deploy/` install), by kind.
pub fn generated_schemas_by_kind() -> BTreeMap<String, Value> {
    let files = yaml_files(&workspace_root().join("crds/generated"));
    assert!(!files.is_empty(), "crds/generated holds no CRDs");
    files
        .iter()
        .flat_map(|file| load_documents(file))
        .map(|crd| {
            let kind = crd.value.pointer("/spec/names/kind").and_then(Value::as_str).expect("CRD kind").to_string();
            let versions = crd.value.pointer("/spec/versions").and_then(Value::as_array).expect("CRD versions");
            assert_eq!(versions.len(), 1, "{kind}: one served version");
            let schema = versions[0].pointer("/schema/openAPIV3Schema").expect("openAPIV3Schema").clone();
            (kind, schema)
        })
        .collect()
}

/// Convert an OpenAPI v3 (Kubernetes dialect) schema into JSON Schema draft 4 for `jsonschema`:
/// `nullable: true` becomes a `null` alternative of `type`, and — like `kubectl --validate=strict`
/// — objects with `properties` reject unknown fields, so a typo in an example is an error rather
/// than a silently pruned field.
pub fn to_json_schema(node: &Value) -> Value {
    match node {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let converted = match key.as_str() {
                    // Literal values, not schemas.
                    "default" | "enum" | "example" | "x-kubernetes-validations" => value.clone(),
                    "properties" => Value::Object(
                        value
                            .as_object()
                            .expect("properties is a map")
                            .iter()
                            .map(|(k, v)| (k.clone(), to_json_schema(v)))
                            .collect(),
                    ),
                    _ => to_json_schema(value),
                };
                out.insert(key.clone(), converted);
            }
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(ty)) = map.get("type")
            {
                out.insert("type".into(), Value::Array(vec![Value::String(ty.clone()), "null".into()]));
            }
            let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

/// Build a draft-4 validator for one (converted) schema node. Formats such as `int32` are hints in
/// the Kubernetes dialect, so format validation is off.
pub fn json_validator(openapi: &Value) -> jsonschema::Validator {
    let mut schema = to_json_schema(openapi);
    // The root of a CRD schema declares only spec and status; apiVersion, kind and metadata are
    // validated by the API server itself.
    if openapi.pointer("/properties/spec").is_some()
        && let Some(root) = schema.as_object_mut()
    {
        root.remove("additionalProperties");
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(false)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema does not compile as JSON Schema: {e}"))
}

/// `/spec/replicas/0/name` → `spec.replicas[0].name`, the way the API server names fields.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').filter(|s| !s.is_empty()) {
        if segment.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

/// DNS-1123 subdomain, as the API server checks `metadata.name` of namespaced custom resources.
fn valid_object_name(name: &str) -> bool {
    let re = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap();
    !name.is_empty() && name.len() <= 253 && re.is_match(name)
}

/// Admission-style validation of one custom resource: metadata.name, then the OpenAPI schema (after
/// defaulting, as the API server does), list-type map keys and set items unique, then every CEL
/// rule. Returns `field: message` lines; empty means accepted.
pub fn admission_errors(schema: &Value, object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if valid_object_name(name) => {}
        other => errors.push(format!("metadata.name: {other:?} is not a DNS-1123 subdomain")),
    }
    let defaulted = kube_cel::apply_defaults(schema, object);
    let validator = json_validator(schema);
    for error in validator.iter_errors(&defaulted) {
        errors.push(format!("{}: {}", field_path(error.instance_path().as_str()), error));
    }
    list_type_errors("", schema, &defaulted, &mut errors);
    if let Err(cel_errors) = kube_cel::Validator::new().validate(schema, object, None) {
        errors.extend(cel_errors.iter().map(|e| e.to_string()));
    }
    errors
}

/// The API server's uniqueness checks of `x-kubernetes-list-type: map` keys and `set` items,
/// modelled on k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype/validation.go: every
/// later occurrence of a key (map) or item (set) already seen is refused as `<list>[<i>]: Duplicate
/// value: <key>`, where the key of a list-map item is the object of its key fields. The server runs
/// this on the defaulted object, so a key left out but defaulted counts with its default.
pub fn list_type_errors(path: &str, schema: &Value, value: &Value, errors: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                let child_schema = schema
                    .pointer(&format!("/properties/{}", name.replace('~', "~0").replace('/', "~1")))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(child_schema) = child_schema {
                    let child_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                    list_type_errors(&child_path, child_schema, child, errors);
                }
            }
        }
        Value::Array(items) => {
            let identity = |item: &Value| -> Value {
                match schema.get("x-kubernetes-list-map-keys").and_then(Value::as_array) {
                    Some(keys) => Value::Object(
                        keys.iter()
                            .filter_map(Value::as_str)
                            .filter_map(|k| item.get(k).map(|v| (k.to_string(), v.clone())))
                            .collect(),
                    ),
                    None => item.clone(),
                }
            };
            if matches!(schema.get("x-kubernetes-list-type").and_then(Value::as_str), Some("map" | "set")) {
                let mut seen = Vec::new();
                let mut reported = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    let key = identity(item);
                    if seen.contains(&key) {
                        if !reported.contains(&key) {
                            errors.push(format!("{path}[{index}]: Duplicate value: {key}"));
                            reported.push(key);
                        }
                    } else {
                        seen.push(key);
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    list_type_errors(&format!("{path}[{index}]"), item_schema, item, errors);
                }
            }
        }
        _ => {}
    }
}

/// One YAML document of a manifest file.
pub struct Manifest {
    pub file: PathBuf,
    pub value: Value,
}

impl Manifest {
    pub fn kind(&self) -> &str {
        self.value.get("kind").and_then(Value::as_str).unwrap_or_default()
    }
    pub fn api_version(&self) -> &str {
        self.value.get("apiVersion").and_then(Value::as_str).unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
    }
    pub fn namespace(&self) -> &str {
        self.value.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default()
    }
}

/// Every `*.yaml` file of a directory, sorted by name.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    files
}

/// Parse every document of a multi-document YAML file (empty documents skipped).
pub fn load_documents(file: &Path) -> Vec<Manifest> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()))
        })
        .filter(|value| !value.is_null())
        .map(|value| Manifest { file: file.to_path_buf(), value })
        .collect()
}
