//! Every array of the committed CRDs (`crds/generated/`) says how the API server merges and
//! validates it: a list of objects with an identity is `x-kubernetes-list-type: map` (uniqueness of
//! its keys at zero CEL cost, per-item ownership under server-side apply), a list of distinct
//! scalars is a `set`, and anything else is explicitly `atomic`. The key rules are the API
//! server's own (k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go:
//! list-map keys must name scalar properties of the item; `validateMapListKeysMapSet`: each key is
//! required or has a default, and neither a key nor a set/map item may be nullable).

mod support;

use serde_json::{Value, json};

/// Lists of objects that are atomic on purpose, with the reason.
const ATOMIC_OBJECT_LISTS: &[(&str, &str)] = &[(
    "ScaleOutWorker.spec.nodeSelector.matchExpressions",
    "Kubernetes' own LabelSelector declares matchExpressions +listType=atomic: a requirement has no \
     identity (one key may appear with several operators)",
)];

const SCALAR_TYPES: &[&str] = &["string", "integer", "number", "boolean"];

fn check_lists(path: &str, node: &Value, problems: &mut Vec<String>) {
    let list_type = node.get("x-kubernetes-list-type").and_then(Value::as_str);
    let keys: Option<Vec<&str>> = node
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).collect());
    let is_array = node.get("type").and_then(Value::as_str) == Some("array");
    if !is_array && (list_type.is_some() || keys.is_some()) {
        problems.push(format!("{path}: x-kubernetes-list-type on a node that is not an array"));
    }
    if keys.is_some() && list_type != Some("map") {
        problems.push(format!("{path}: x-kubernetes-list-map-keys needs x-kubernetes-list-type: map"));
    }
    if is_array {
        let items = node.get("items").cloned().unwrap_or_default();
        let items_are_objects = items.get("type").and_then(Value::as_str) == Some("object");
        if matches!(list_type, Some("map" | "set")) && items.get("nullable") == Some(&Value::Bool(true)) {
            problems.push(format!("{path}[]: items of a list-type {} cannot be nullable", list_type.unwrap()));
        }
        match (list_type, items_are_objects) {
            (None, _) => problems.push(format!(
                "{path}: array without x-kubernetes-list-type (map for keyed objects, set for distinct scalars, atomic otherwise)"
            )),
            (Some("map"), true) => check_map_keys(path, keys.as_deref().unwrap_or_default(), &items, problems),
            (Some("map"), false) => problems.push(format!("{path}: a list-type map needs object items")),
            (Some("set"), true) => {
                problems.push(format!("{path}: a set of objects; give the items a key and make it a map"))
            }
            (Some("atomic"), true) if !ATOMIC_OBJECT_LISTS.iter().any(|(p, _)| *p == path) => problems.push(format!(
                "{path}: an atomic list of objects; make it a list-type map on the items' identity, or add it to \
                 ATOMIC_OBJECT_LISTS with the reason"
            )),
            (Some("set" | "atomic"), _) => {}
            (Some(other), _) => problems.push(format!("{path}: unknown x-kubernetes-list-type {other}")),
        }
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            check_lists(&format!("{path}.{name}"), child, problems);
        }
    }
    if let Some(items) = node.get("items") {
        check_lists(&format!("{path}[]"), items, problems);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
        check_lists(&format!("{path}{{}}"), additional, problems);
    }
}

fn check_map_keys(path: &str, keys: &[&str], items: &Value, problems: &mut Vec<String>) {
    if keys.is_empty() {
        problems.push(format!("{path}: list-type map without x-kubernetes-list-map-keys"));
    }
    let required: Vec<&str> =
        items.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for key in keys {
        let Some(property) = items.pointer(&format!("/properties/{key}")) else {
            problems.push(format!("{path}: list-map key {key} is not a property of the items"));
            continue;
        };
        let ty = property.get("type").and_then(Value::as_str).unwrap_or_default();
        if !SCALAR_TYPES.contains(&ty) {
            problems.push(format!("{path}: list-map key {key} has type {ty:?}; keys must be scalar"));
        }
        if !required.contains(key) && property.get("default").is_none() {
            problems.push(format!("{path}: list-map key {key} is neither required nor defaulted"));
        }
        if property.get("nullable") == Some(&Value::Bool(true)) {
            problems.push(format!("{path}: list-map key {key} is nullable"));
        }
    }
}

#[test]
fn every_array_declares_its_list_type_with_valid_keys() {
    let mut problems = Vec::new();
    for (kind, schema) in support::generated_schemas_by_kind() {
        check_lists(&kind, &schema, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "list types the API server would refuse or that lose identity:\n{}",
        problems.join("\n")
    );
}

#[test]
fn keyed_lists_carry_the_keys_of_their_identity() {
    let expected: &[(&str, &str, &[&str])] = &[
        ("SsisdbAvailabilityGroup", "/properties/spec/properties/replicas", &["name"]),
        (
            "SsisdbAvailabilityGroup",
            "/properties/spec/properties/listener/properties/create/properties/staticIps",
            &["address"],
        ),
        ("SsisdbAvailabilityGroup", "/properties/status/properties/replicas", &["name"]),
        ("SsisdbAvailabilityGroup", "/properties/status/properties/conditions", &["type"]),
        ("ScaleOutMasterGroup", "/properties/spec/properties/legacyService/properties/additionalFolders", &["name"]),
        ("ScaleOutMasterGroup", "/properties/status/properties/nodes", &["name"]),
        ("ScaleOutMasterGroup", "/properties/status/properties/conditions", &["type"]),
        ("ScaleOutWorker", "/properties/status/properties/nodes", &["nodeName"]),
        ("ScaleOutWorker", "/properties/status/properties/conditions", &["type"]),
        ("HostConfig", "/properties/spec/properties/contributors", &["kind", "namespace", "name"]),
        ("HostConfig", "/properties/spec/properties/certificates", &["name"]),
        ("HostConfig", "/properties/spec/properties/legacyServiceConfig/properties/folders", &["name"]),
        ("HostConfig", "/properties/spec/properties/registryValues", &["name"]),
        ("HostConfig", "/properties/spec/properties/services", &["role"]),
        ("HostConfig", "/properties/spec/properties/httpSslBindings", &["ipPort"]),
        ("HostConfig", "/properties/spec/properties/secretVersions", &["name"]),
        ("HostConfig", "/properties/status/properties/items", &["name"]),
        ("HostConfig", "/properties/status/properties/certificates", &["store", "thumbprint"]),
        ("HostConfig", "/properties/status/properties/services", &["role"]),
        ("HostConfig", "/properties/status/properties/httpSslBindings", &["ipPort"]),
        ("HostConfig", "/properties/status/properties/conditions", &["type"]),
    ];
    let sets: &[(&str, &str)] = &[
        ("ScaleOutMasterGroup", "/properties/spec/properties/nodes"),
        ("ScaleOutWorker", "/properties/spec/properties/tags"),
        ("HostConfig", "/properties/spec/properties/clusterRole/properties/possibleOwners"),
    ];
    let schemas = support::generated_schemas_by_kind();
    for (kind, pointer, keys) in expected {
        let list = schemas[*kind].pointer(pointer).unwrap_or_else(|| panic!("{kind} has no {pointer}"));
        assert_eq!(list["x-kubernetes-list-type"], "map", "{kind} {pointer}");
        assert_eq!(list["x-kubernetes-list-map-keys"], json!(keys), "{kind} {pointer}");
    }
    for (kind, pointer) in sets {
        let list = schemas[*kind].pointer(pointer).unwrap_or_else(|| panic!("{kind} has no {pointer}"));
        assert_eq!(list["x-kubernetes-list-type"], "set", "{kind} {pointer}");
    }
}

#[test]
fn the_checker_refuses_what_the_api_server_refuses() {
    let list = |keys: Value, item: Value| json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys, "items": item});
    let bad = [
        ("no list type", json!({"type": "array", "items": {"type": "string"}})),
        (
            "key not a property",
            list(
                json!(["id"]),
                json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}),
            ),
        ),
        ("key optional", list(json!(["name"]), json!({"type": "object", "properties": {"name": {"type": "string"}}}))),
        (
            "key nullable",
            list(
                json!(["name"]),
                json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "nullable": true}}}),
            ),
        ),
        (
            "key not scalar",
            list(
                json!(["name"]),
                json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "object"}}}),
            ),
        ),
        ("no keys", list(json!([]), json!({"type": "object", "properties": {}}))),
        ("map of scalars", list(json!(["x"]), json!({"type": "string"}))),
        (
            "atomic objects",
            json!({"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "object", "properties": {}}}),
        ),
        (
            "nullable set items",
            json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string", "nullable": true}}),
        ),
        (
            "keys without map",
            json!({"type": "array", "x-kubernetes-list-type": "atomic", "x-kubernetes-list-map-keys": ["a"], "items": {"type": "string"}}),
        ),
    ];
    for (what, node) in bad {
        let mut problems = Vec::new();
        check_lists("T", &json!({"type": "object", "properties": {"list": node}}), &mut problems);
        assert!(!problems.is_empty(), "the checker accepted {what}");
    }
    let good = list(
        json!(["name", "port"]),
        json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer", "default": 1433}}}),
    );
    let mut problems = Vec::new();
    check_lists("T", &json!({"type": "object", "properties": {"list": good}}), &mut problems);
    assert_eq!(problems, Vec::<String>::new(), "a defaulted key is as good as a required one");
}

#[test]
fn the_admission_model_refuses_duplicate_keys_naming_the_list_and_the_key() {
    let schema = json!({"type": "object", "properties": {
        "replicas": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "port"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "plain": {"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}},
    }});
    let object = json!({
        "replicas": [{"name": "a", "port": 1}, {"name": "a", "port": 2}, {"name": "a", "port": 1}, {"name": "a", "port": 1}],
        "tags": ["x", "y", "x"],
        "plain": ["x", "x"],
    });
    let mut errors = Vec::new();
    support::list_type_errors("spec", &schema, &object, &mut errors);
    assert_eq!(
        errors,
        [r#"spec.replicas[2]: Duplicate value: {"name":"a","port":1}"#, r#"spec.tags[2]: Duplicate value: "x""#],
        "one error per duplicated key, at its first repetition; atomic lists may repeat"
    );
}
