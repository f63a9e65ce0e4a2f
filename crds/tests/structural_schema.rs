//! Every generated schema must be structural and portable, so a real API server accepts the CRDs
//! (Kubernetes "Specifying a structural schema"): every node typed, no `$ref`, no
//! `additionalProperties` beside `properties`, `nullable` only on typed nodes, no
//! `x-kubernetes-preserve-unknown-fields`, defaults valid against their own schema, and patterns in
//! the RE2 syntax the API server (Go `regexp`) compiles.

mod support;

use serde_json::Value;

/// Keywords a structural schema node may carry (OpenAPI v3 subset accepted by apiextensions/v1).
const ALLOWED_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "description",
    "title",
    "default",
    "nullable",
    "enum",
    "maximum",
    "minimum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "properties",
    "additionalProperties",
    "example",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
];

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

fn check_node(path: &str, node: &Value, problems: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        problems.push(format!("{path}: schema node is not an object"));
        return;
    };
    for key in map.keys() {
        if !ALLOWED_KEYWORDS.contains(&key.as_str()) {
            problems.push(format!("{path}: keyword `{key}` is not allowed in a structural schema"));
        }
    }
    let ty = map.get("type").and_then(Value::as_str);
    match ty {
        Some(t) if TYPES.contains(&t) => {}
        Some(t) => problems.push(format!("{path}: unknown type `{t}`")),
        None if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) => {}
        None => problems.push(format!("{path}: node has no `type`")),
    }
    if map.contains_key("nullable") && ty.is_none() {
        problems.push(format!("{path}: `nullable` on an untyped node"));
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        problems.push(format!("{path}: `additionalProperties` beside `properties`"));
    }
    if let Some(additional) = map.get("additionalProperties") {
        match additional {
            Value::Object(_) => check_node(&format!("{path}.additionalProperties"), additional, problems),
            other => problems.push(format!("{path}: additionalProperties must be a schema, found {other}")),
        }
    }
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        if ty != Some("object") {
            problems.push(format!("{path}: `properties` on a non-object node"));
        }
        for (name, child) in properties {
            check_node(&format!("{path}.{name}"), child, problems);
        }
    }
    if let Some(required) = map.get("required").and_then(Value::as_array) {
        let properties = map.get("properties").and_then(Value::as_object);
        for name in required.iter().filter_map(Value::as_str) {
            if properties.is_none_or(|p| !p.contains_key(name)) {
                problems.push(format!("{path}: required field `{name}` is not a declared property"));
            }
        }
    }
    match (ty, map.get("items")) {
        (Some("array"), Some(items @ Value::Object(_))) => check_node(&format!("{path}[]"), items, problems),
        (Some("array"), _) => problems.push(format!("{path}: array without a single `items` schema")),
        (_, Some(_)) => problems.push(format!("{path}: `items` on a non-array node")),
        _ => {}
    }
    if let Some(pattern) = map.get("pattern").and_then(Value::as_str)
        && let Err(e) = regex::Regex::new(pattern)
    {
        problems.push(format!("{path}: pattern {pattern:?} is not RE2 syntax: {e}"));
    }
    if let Some(values) = map.get("enum").and_then(Value::as_array) {
        let validator = support::json_validator(&strip_for_value_check(node));
        for value in values {
            if !validator.is_valid(value) {
                problems.push(format!("{path}: enum value {value} does not match the node's type"));
            }
        }
    }
    if let Some(default) = map.get("default") {
        let validator = support::json_validator(&strip_for_value_check(node));
        let errors: Vec<String> = validator.iter_errors(default).map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            problems.push(format!("{path}: default {default} is invalid against its schema: {errors:?}"));
        }
        let cel = kube_cel::Validator::new().validate(node, default, None);
        if let Err(cel_errors) = cel {
            problems.push(format!("{path}: default {default} breaks a CEL rule: {cel_errors:?}"));
        }
    }
}

/// The node without its own `default`, so a default is checked against the constraints, not itself.
fn strip_for_value_check(node: &Value) -> Value {
    let mut copy = node.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("default");
    }
    copy
}

#[test]
fn every_generated_schema_is_structural() {
    let mut problems = Vec::new();
    for (kind, schema) in support::schemas_by_kind() {
        check_node(&kind, &schema, &mut problems);
        let spec = schema.pointer("/properties/spec");
        assert!(spec.is_some(), "{kind}: schema has no spec");
    }
    assert!(problems.is_empty(), "non-structural schema nodes:\n{}", problems.join("\n"));
}

#[test]
fn no_schema_preserves_unknown_fields_or_references_definitions() {
    for (file, crd) in ssis_crds::generate::all_crds() {
        let yaml = ssis_crds::generate::render_yaml(&crd);
        for forbidden in ["x-kubernetes-preserve-unknown-fields", "$ref", "definitions", "allOf", "anyOf", "oneOf"] {
            assert!(
                !yaml.contains(forbidden),
                "{file} contains `{forbidden}`; the API server needs a structural schema"
            );
        }
    }
}

#[test]
fn checker_rejects_non_structural_nodes() {
    // The checker itself must be able to fail: each of these breaks one rule.
    let bad = [
        serde_json::json!({"type": "object", "properties": {"a": {"description": "untyped"}}}),
        serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
        serde_json::json!({"type": "object", "properties": {"a": {"nullable": true}}}),
        serde_json::json!({"type": "object", "properties": {"a": {"$ref": "#/definitions/x"}}}),
        serde_json::json!({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1, "default": 0}}}),
        serde_json::json!({"type": "object", "properties": {"a": {"type": "array"}}}),
        serde_json::json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)"}}}),
        serde_json::json!({"type": "object", "required": ["b"], "properties": {"a": {"type": "string"}}}),
    ];
    for schema in bad {
        let mut problems = Vec::new();
        check_node("test", &schema, &mut problems);
        assert!(!problems.is_empty(), "checker accepted {schema}");
    }
}

#[test]
fn top_level_object_metadata_and_status_are_typed() {
    for (kind, schema) in support::schemas_by_kind() {
        assert_eq!(schema["type"], "object", "{kind}");
        assert_eq!(schema["required"], serde_json::json!(["spec"]), "{kind}: spec must be required");
        assert_eq!(schema.pointer("/properties/status/type"), Some(&Value::from("object")), "{kind}");
    }
}
