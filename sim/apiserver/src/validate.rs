//! What the API server does to a CRD object before storing it, in its order: prune unknown fields
//! and nulls the schema does not allow, apply defaults, validate against the OpenAPI schema, then
//! evaluate the `x-kubernetes-validations` CEL rules (k8s.io/apiextensions-apiserver: `pruning`,
//! `defaulting`, `validation`, `apiserver/schema/cel`). Messages follow the API server's
//! field-error format (`spec.x: Required value`, `spec.y: Too many: 5: must have at most 4 items`).

use std::collections::BTreeSet;

use regex::Regex;
use serde_json::{Map, Value};

use crate::shape::item_key;

/// One field error, as in a 422 Status's `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`, ...
    pub reason: &'static str,
    /// `spec.certificates[1].name`.
    pub field: String,
    /// The message without the field: `Required value`.
    pub detail: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

/// Remove what the structural schema does not declare (unless it preserves unknown fields), and
/// nulls where the schema does not allow null and has no default (apiextensions pruning and
/// `PruneNonNullableNullsWithoutDefaults`). The top level keeps apiVersion, kind and metadata.
pub fn prune(object: &mut Value, schema: &Value) {
    let Some(fields) = object.as_object_mut() else { return };
    for (field, value) in fields.iter_mut() {
        if let Some(child) = schema.get("properties").and_then(|p| p.get(field)) {
            prune_node(value, child);
        }
    }
    let declared = schema.get("properties").and_then(Value::as_object);
    fields.retain(|field, value| {
        matches!(field.as_str(), "apiVersion" | "kind" | "metadata")
            || declared.and_then(|d| d.get(field)).is_some_and(|child| !value.is_null() || nullable(child))
    });
}

fn nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true) || schema.get("default").is_some()
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
}

fn prune_node(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if properties.is_none() && additional.is_none() {
                return;
            }
            let keep_unknown =
                preserves_unknown(schema) || schema.get("additionalProperties") == Some(&Value::Bool(true));
            fields.retain(|field, child| {
                let child_schema = properties.and_then(|p| p.get(field)).or(additional);
                match child_schema {
                    Some(child_schema) => !child.is_null() || nullable(child_schema),
                    None => keep_unknown,
                }
            });
            for (field, child) in fields.iter_mut() {
                if let Some(child_schema) = properties.and_then(|p| p.get(field)).or(additional) {
                    prune_node(child, child_schema);
                }
            }
        }
        Value::Array(items) => {
            if let Some(items_schema) = schema.get("items") {
                for item in items {
                    prune_node(item, items_schema);
                }
            }
        }
        _ => {}
    }
}

/// Validate `object` against its CRD's openAPIV3Schema (everything but CEL).
pub fn validate_schema(object: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errors = vec![];
    if let Some(fields) = object.as_object() {
        let root = schema.get("properties").and_then(Value::as_object);
        for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
        {
            if !fields.contains_key(required) {
                errors.push(FieldError {
                    reason: "FieldValueRequired",
                    field: required.into(),
                    detail: "Required value".into(),
                });
            }
        }
        for (field, value) in fields {
            if matches!(field.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(child) = root.and_then(|r| r.get(field)) {
                node(value, child, field, &mut errors);
            }
        }
    }
    errors
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match (expected, value) {
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        (expected, value) => expected == type_name(value),
    }
}

fn short(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn node(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let invalid = |errors: &mut Vec<FieldError>, detail: String| {
        errors.push(FieldError {
            reason: "FieldValueInvalid",
            field: path.to_string(),
            detail: format!("Invalid value: {detail}"),
        });
    };
    if value.is_null() {
        if !nullable(schema) {
            let expected = schema.get("type").and_then(Value::as_str).unwrap_or("object");
            invalid(errors, format!("\"null\": {path} in body must be of type {expected}: \"null\""));
        }
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if int_or_string {
        if !matches!(value, Value::String(_)) && !type_matches("integer", value) {
            invalid(
                errors,
                format!("{}: {path} in body must be of type integer,string: {:?}", short(value), type_name(value)),
            );
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        let actual = type_name(value);
        invalid(errors, format!("{actual:?}: {path} in body must be of type {expected}: {actual:?}"));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(short).collect();
        errors.push(FieldError {
            reason: "FieldValueNotSupported",
            field: path.to_string(),
            detail: format!("Unsupported value: {}: supported values: {}", short(value), supported.join(", ")),
        });
    }
    match value {
        Value::String(s) => string(s, schema, path, errors),
        Value::Number(n) => number(n, schema, path, errors),
        Value::Array(items) => array(items, schema, path, errors),
        Value::Object(fields) => object(fields, schema, path, errors),
        _ => {}
    }
    for (keyword, all) in [("allOf", true), ("anyOf", false), ("oneOf", false)] {
        let Some(branches) = schema.get(keyword).and_then(Value::as_array) else { continue };
        let results: Vec<Vec<FieldError>> = branches
            .iter()
            .map(|branch| {
                let mut branch_errors = vec![];
                node(value, branch, path, &mut branch_errors);
                branch_errors
            })
            .collect();
        if all {
            errors.extend(results.into_iter().flatten());
        } else {
            let passing = results.iter().filter(|r| r.is_empty()).count();
            if passing == 0 || (keyword == "oneOf" && passing > 1) {
                invalid(errors, format!("{}: {path} in body must validate {keyword} schemas", short(value)));
            }
        }
    }
    if let Some(not) = schema.get("not") {
        let mut branch_errors = vec![];
        node(value, not, path, &mut branch_errors);
        if branch_errors.is_empty() {
            invalid(errors, format!("{}: {path} in body must not validate the schema (not)", short(value)));
        }
    }
}

fn string(s: &str, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let length = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        errors.push(FieldError {
            reason: "FieldValueTooLong",
            field: path.into(),
            detail: format!("Too long: may not be more than {max} bytes"),
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        errors.push(FieldError {
            reason: "FieldValueInvalid",
            field: path.into(),
            detail: format!("Invalid value: {s:?}: {path} in body should be at least {min} chars long"),
        });
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        // The API server uses Go's RE2 syntax; the regex crate follows the same syntax.
        match Regex::new(pattern) {
            Ok(regex) if regex.is_match(s) => {}
            Ok(_) => errors.push(FieldError {
                reason: "FieldValueInvalid",
                field: path.into(),
                detail: format!("Invalid value: {s:?}: {path} in body should match '{pattern}'"),
            }),
            Err(error) => errors.push(FieldError {
                reason: "FieldValueInvalid",
                field: path.into(),
                detail: format!("Invalid value: schema pattern {pattern:?} does not compile: {error}"),
            }),
        }
    }
}

fn number(n: &serde_json::Number, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(value) = n.as_f64() else { return };
    let exclusive = |key: &str| schema.get(key).and_then(Value::as_bool) == Some(true);
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let over = if exclusive("exclusiveMaximum") { value >= max } else { value > max };
        if over {
            let relation = if exclusive("exclusiveMaximum") { "less than" } else { "less than or equal to" };
            errors.push(FieldError {
                reason: "FieldValueInvalid",
                field: path.into(),
                detail: format!("Invalid value: {n}: {path} in body should be {relation} {max}"),
            });
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let under = if exclusive("exclusiveMinimum") { value <= min } else { value < min };
        if under {
            let relation = if exclusive("exclusiveMinimum") { "greater than" } else { "greater than or equal to" };
            errors.push(FieldError {
                reason: "FieldValueInvalid",
                field: path.into(),
                detail: format!("Invalid value: {n}: {path} in body should be {relation} {min}"),
            });
        }
    }
}

fn array(items: &[Value], schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errors.push(FieldError {
            reason: "FieldValueTooMany",
            field: path.into(),
            detail: format!("Too many: {}: must have at most {max} items", items.len()),
        });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        errors.push(FieldError {
            reason: "FieldValueInvalid",
            field: path.into(),
            detail: format!("Invalid value: {}: {path} in body should have at least {min} items", items.len()),
        });
    }
    if let Some(items_schema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            node(item, items_schema, &format!("{path}[{index}]"), errors);
        }
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => {
            let keys: Vec<String> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            let mut seen = BTreeSet::new();
            for (index, item) in items.iter().enumerate() {
                let Some(key) = item_key(item, &keys) else { continue };
                if !seen.insert(key.clone()) {
                    errors.push(FieldError {
                        reason: "FieldValueDuplicate",
                        field: format!("{path}[{index}]"),
                        detail: format!("Duplicate value: map[string]interface {{}}{key}"),
                    });
                }
            }
        }
        Some("set") => {
            let mut seen = BTreeSet::new();
            for (index, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errors.push(FieldError {
                        reason: "FieldValueDuplicate",
                        field: format!("{path}[{index}]"),
                        detail: format!("Duplicate value: {}", short(item)),
                    });
                }
            }
        }
        _ => {}
    }
}

fn object(fields: &Map<String, Value>, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !fields.contains_key(required) {
            errors.push(FieldError {
                reason: "FieldValueRequired",
                field: join(path, required),
                detail: "Required value".into(),
            });
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (field, value) in fields {
        if let Some(child) = properties.and_then(|p| p.get(field)).or(additional) {
            node(value, child, &join(path, field), errors);
        }
    }
}

/// Evaluate the CRD's `x-kubernetes-validations` rules (with `oldSelf` on updates).
pub fn validate_cel(
    validator: &kube_cel::Validator,
    compiled: &kube_cel::CompiledSchema,
    object: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    match validator.validate_compiled(compiled, object, old) {
        Ok(()) => vec![],
        Err(failures) => failures
            .into_vec()
            .into_iter()
            .map(|failure| FieldError {
                reason: "FieldValueInvalid",
                field: failure.field_path.trim_start_matches('.').to_string(),
                detail: format!("Invalid value: \"object\": {}", failure.message),
            })
            .collect(),
    }
}

/// DNS-1123 subdomain: what the API server requires of most object names.
pub fn dns_subdomain(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    (!valid).then(|| {
        format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    })
}

/// Label keys and values as `metav1validation.ValidateLabels` checks them.
pub fn labels(labels: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = vec![];
    for (key, value) in labels {
        let name = key.rsplit('/').next().unwrap_or(key);
        let prefix_ok = key.split_once('/').is_none_or(|(prefix, _)| dns_subdomain(prefix).is_none());
        if !qualified_name_part(name) || !prefix_ok {
            errors.push(FieldError {
                reason: "FieldValueInvalid",
                field: "metadata.labels".into(),
                detail: format!("Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
            });
        }
        let value = value.as_str().unwrap_or_default();
        if !(value.is_empty() || qualified_name_part(value)) {
            errors.push(FieldError {
                reason: "FieldValueInvalid",
                field: "metadata.labels".into(),
                detail: format!("Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
            });
        }
    }
    errors
}

fn qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["version"],
                    "properties": {
                        "version": { "type": "string", "enum": ["140", "150"] },
                        "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                        "name": { "type": "string", "maxLength": 5, "pattern": "^[a-z]+$" },
                        "settings": { "type": "object", "required": ["endpoint"], "properties": {
                            "endpoint": { "type": "string" } } },
                        "items": { "type": "array", "maxItems": 2, "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" } } } }
                    }
                }
            }
        })
    }

    fn messages(object: Value) -> Vec<String> {
        validate_schema(&object, &schema()).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn errors_name_the_field_as_the_api_server_does() {
        assert_eq!(messages(json!({ "spec": { "version": "140" } })), Vec::<String>::new());
        assert_eq!(
            messages(json!({ "spec": { "settings": {} , "version": "140"} })),
            vec!["spec.settings.endpoint: Required value"]
        );
        assert_eq!(messages(json!({ "spec": {} })), vec!["spec.version: Required value"]);
        assert_eq!(
            messages(json!({ "spec": { "version": "170" } })),
            vec![r#"spec.version: Unsupported value: "170": supported values: "140", "150""#]
        );
        assert_eq!(
            messages(json!({ "spec": { "version": "140", "port": 70000 } })),
            vec!["spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535"]
        );
        assert_eq!(
            messages(json!({ "spec": { "version": "140", "name": "ABCDEFG" } })),
            vec![
                "spec.name: Too long: may not be more than 5 bytes",
                r#"spec.name: Invalid value: "ABCDEFG": spec.name in body should match '^[a-z]+$'"#
            ]
        );
        assert_eq!(
            messages(
                json!({ "spec": { "version": "140", "items": [{ "name": "a" }, { "name": "a" }, { "name": "b" }] } })
            ),
            vec![
                "spec.items: Too many: 3: must have at most 2 items",
                r#"spec.items[1]: Duplicate value: map[string]interface {}{"name":"a"}"#
            ]
        );
        assert_eq!(
            messages(json!({ "spec": { "version": "140", "port": "x" } })),
            vec![r#"spec.port: Invalid value: "string": spec.port in body must be of type integer: "string""#]
        );
    }

    #[test]
    fn pruning_drops_unknown_fields_and_disallowed_nulls() {
        let mut object = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": { "name": "n" },
            "spec": { "version": "140", "unknown": 1, "settings": null }, "extra": true
        });
        prune(&mut object, &schema());
        assert_eq!(
            object,
            json!({ "apiVersion": "x/v1", "kind": "X", "metadata": { "name": "n" }, "spec": { "version": "140" } })
        );
    }

    #[test]
    fn names_and_labels_are_checked() {
        assert!(dns_subdomain("win-worker-1").is_none());
        assert!(dns_subdomain("Win_Worker").is_some());
        let bad = labels(json!({ "ssis.sqlops.io/certificate-id": "ssis/group/master" }).as_object().unwrap());
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(labels(json!({ "app.kubernetes.io/name": "ssis" }).as_object().unwrap()).is_empty());
    }
}
