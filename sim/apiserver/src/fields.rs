//! Field paths and field sets, as server-side apply tracks ownership
//! (sigs.k8s.io/structured-merge-diff: `fieldpath.Set`, `typed.ToFieldSet`).
//!
//! A set holds the leaves a manager set (scalars, atomic lists and maps, empty objects, explicit
//! nulls), every list-map item (`k:{...}`) and every set member (`v:...`). A non-empty struct is not
//! a member itself: when a manager stops sending it, its leaves go, and what is left of the struct
//! depends on the server ([`crate::EmptiedContainers`]).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::shape::{Node, Shape, item_key};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object (`f:name`).
    Field(String),
    /// A list-map item by its key fields, as canonical JSON (`k:{"name":"a"}`).
    Key(String),
    /// A set member, as JSON (`v:"a"`).
    Value(String),
}

pub type FieldPath = Vec<PathElement>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a request may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything but `status` (when the kind has a status subresource) and server-owned metadata.
    Main { status_subresource: bool },
    /// `status` only (the status subresource).
    Status,
}

/// Metadata fields a client owns; the rest (uid, resourceVersion, generation, ...) is the server's.
pub const CLIENT_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// Whether a top-level field belongs to `scope`.
pub fn in_scope(scope: Scope, field: &str) -> bool {
    match (scope, field) {
        (_, "apiVersion" | "kind") => false,
        (Scope::Status, field) => field == "status",
        (Scope::Main { status_subresource }, "status") => !status_subresource,
        (Scope::Main { .. }, _) => true,
    }
}

/// The field set of an object (or applied configuration) within `scope`.
pub fn field_set(object: &Value, root: Node<'_>, scope: Scope) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(fields) = object.as_object() else { return set };
    for (field, value) in fields {
        if !in_scope(scope, field) {
            continue;
        }
        let path = vec![PathElement::Field(field.clone())];
        if field == "metadata" {
            for (meta_field, meta_value) in value.as_object().into_iter().flatten() {
                if CLIENT_METADATA.contains(&meta_field.as_str()) {
                    let mut meta_path = path.clone();
                    meta_path.push(PathElement::Field(meta_field.clone()));
                    collect(meta_value, root.child("metadata").child(meta_field), meta_path, &mut set);
                }
            }
            continue;
        }
        collect(value, root.child(field), path, &mut set);
    }
    set
}

fn collect(value: &Value, node: Node<'_>, path: FieldPath, set: &mut FieldSet) {
    match (node.shape(value), value) {
        (Shape::Map, Value::Object(fields)) if !fields.is_empty() => {
            for (field, child) in fields {
                let mut child_path = path.clone();
                child_path.push(PathElement::Field(field.clone()));
                collect(child, node.child(field), child_path, set);
            }
        }
        (Shape::ListMap(keys), Value::Array(items)) if !items.is_empty() => {
            let items_node = node.items();
            for item in items {
                let Some(key) = item_key(item, &keys) else { continue };
                let mut item_path = path.clone();
                item_path.push(PathElement::Key(key));
                set.insert(item_path.clone());
                if let Value::Object(fields) = item {
                    for (field, child) in fields {
                        let mut child_path = item_path.clone();
                        child_path.push(PathElement::Field(field.clone()));
                        collect(child, items_node.child(field), child_path, set);
                    }
                }
            }
        }
        (Shape::Set, Value::Array(items)) if !items.is_empty() => {
            for item in items {
                let mut item_path = path.clone();
                item_path.push(PathElement::Value(item.to_string()));
                set.insert(item_path);
            }
        }
        // Scalars, atomic values, empty objects and lists, explicit nulls: the path is a leaf.
        _ => {
            set.insert(path);
        }
    }
}

/// The first list-map in an applied configuration that names one key twice, as structured-merge-diff
/// refuses it: `.spec.items: duplicate entries for key [name="a"]`.
pub fn duplicate_key(value: &Value, node: Node<'_>, path: &str) -> Option<String> {
    match (node.shape(value), value) {
        (Shape::Map, Value::Object(fields)) => {
            fields.iter().find_map(|(field, child)| duplicate_key(child, node.child(field), &format!("{path}.{field}")))
        }
        (Shape::ListMap(keys), Value::Array(items)) => {
            let mut seen = BTreeSet::new();
            for item in items {
                if let Some(key) = item_key(item, &keys)
                    && !seen.insert(key.clone())
                {
                    let shown = display_path(&[PathElement::Key(key)]);
                    return Some(format!("{path}: duplicate entries for key {shown}"));
                }
            }
            items.iter().find_map(|item| duplicate_key(item, node.items(), path))
        }
        _ => None,
    }
}

/// The value at `path`, if present.
pub fn value_at<'v>(object: &'v Value, path: &[PathElement], root: Node<'_>) -> Option<&'v Value> {
    let mut current = object;
    let mut node = root;
    for element in path {
        match element {
            PathElement::Field(field) => {
                current = current.get(field)?;
                node = node.child(field);
            }
            PathElement::Key(key) => {
                let Shape::ListMap(keys) = node.shape(current) else { return None };
                current = current.as_array()?.iter().find(|item| item_key(item, &keys).as_deref() == Some(key))?;
                node = node.items();
            }
            PathElement::Value(member) => {
                current = current.as_array()?.iter().find(|item| item.to_string() == *member)?;
            }
        }
    }
    Some(current)
}

/// A field set as `metadata.managedFields[].fieldsV1`: nested `f:`/`k:`/`v:` objects, with `.`
/// marking a path that is a member and also has members below it.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for element in path {
            let key = match element {
                PathElement::Field(name) => format!("f:{name}"),
                PathElement::Key(key) => format!("k:{key}"),
                PathElement::Value(value) => format!("v:{value}"),
            };
            node = node.entry(key).or_insert_with(|| Value::Object(Map::new())).as_object_mut().expect("object");
        }
        // Mark the path itself; removed again below where nothing hangs under it.
        node.insert(".".into(), Value::Object(Map::new()));
    }
    strip_lone_dots(&mut root);
    Value::Object(root)
}

fn strip_lone_dots(node: &mut Map<String, Value>) {
    if node.len() == 1 && node.contains_key(".") {
        node.clear();
        return;
    }
    for (key, child) in node.iter_mut() {
        if key != "."
            && let Some(child) = child.as_object_mut()
        {
            strip_lone_dots(child);
        }
    }
}

/// Render a path for conflict messages: `.spec.certificates[name="a"].thumbprint`.
pub fn display_path(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathElement::Key(key) => {
                let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", inner.join(",")));
            }
            PathElement::Value(value) => out.push_str(&format!("[{value}]")),
        }
    }
    out
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
                    "properties": {
                        "items": {
                            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                            "items": { "type": "object", "properties": {
                                "name": { "type": "string" }, "value": { "type": "string" } } }
                        },
                        "settings": { "type": "object", "properties": { "a": { "type": "string" } } },
                        "args": { "type": "array", "items": { "type": "string" } }
                    }
                },
                "status": { "type": "object", "properties": { "phase": { "type": "string" } } }
            }
        })
    }

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn a_field_set_holds_leaves_and_list_items_but_not_structs() {
        let schema = schema();
        let object = json!({
            "apiVersion": "x/v1", "kind": "X",
            "metadata": { "name": "n", "labels": { "a": "b" }, "finalizers": ["f"] },
            "spec": { "items": [{ "name": "i", "value": "v" }], "settings": { "a": "1" }, "args": ["x"] },
            "status": { "phase": "Ready" }
        });
        let set = field_set(&object, Node::Root(Some(&schema)), Scope::Main { status_subresource: true });
        let key = PathElement::Key(r#"{"name":"i"}"#.into());
        let expected: FieldSet = [
            vec![f("metadata"), f("labels"), f("a")],
            vec![f("metadata"), f("finalizers"), PathElement::Value("\"f\"".into())],
            vec![f("spec"), f("items"), key.clone()],
            vec![f("spec"), f("items"), key.clone(), f("name")],
            vec![f("spec"), f("items"), key, f("value")],
            vec![f("spec"), f("settings"), f("a")],
            vec![f("spec"), f("args")],
        ]
        .into_iter()
        .collect();
        assert_eq!(set, expected);
        let status = field_set(&object, Node::Root(Some(&schema)), Scope::Status);
        assert_eq!(status, [vec![f("status"), f("phase")]].into_iter().collect());
    }

    #[test]
    fn an_explicit_null_is_a_leaf() {
        let schema = schema();
        let object = json!({ "spec": { "settings": null } });
        let set = field_set(&object, Node::Root(Some(&schema)), Scope::Main { status_subresource: true });
        assert_eq!(set, [vec![f("spec"), f("settings")]].into_iter().collect());
    }

    #[test]
    fn fields_v1_marks_members_with_children() {
        let set: FieldSet = [
            vec![f("spec"), f("items"), PathElement::Key(r#"{"name":"i"}"#.into())],
            vec![f("spec"), f("items"), PathElement::Key(r#"{"name":"i"}"#.into()), f("name")],
            vec![f("spec"), f("args")],
        ]
        .into_iter()
        .collect();
        assert_eq!(
            to_fields_v1(&set),
            json!({ "f:spec": { "f:args": {}, "f:items": { r#"k:{"name":"i"}"#: { ".": {}, "f:name": {} } } } })
        );
    }

    #[test]
    fn values_are_found_by_path() {
        let schema = schema();
        let object = json!({ "spec": { "items": [{ "name": "i", "value": "v" }] } });
        let path = vec![f("spec"), f("items"), PathElement::Key(r#"{"name":"i"}"#.into()), f("value")];
        assert_eq!(value_at(&object, &path, Node::Root(Some(&schema))), Some(&json!("v")));
        assert_eq!(display_path(&path), r#".spec.items[name="i"].value"#);
    }
}
