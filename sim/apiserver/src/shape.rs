//! What server-side apply and validation need to know about each node of an object: is it a
//! scalar, a struct, a granular map, a keyed list (`x-kubernetes-list-type: map`), a set or an
//! atomic value. CRD objects take it from their structural schema; `metadata` follows ObjectMeta's
//! markers (labels/annotations granular maps, finalizers a set, ownerReferences keyed by uid);
//! built-in kinds without a schema here treat objects as granular maps and lists as atomic.

use serde_json::Value;

/// How apply merges, owns and removes a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A leaf: strings, numbers, booleans, int-or-string.
    Scalar,
    /// An object replaced as a whole (`x-kubernetes-map-type: atomic`).
    AtomicMap,
    /// An object whose fields are merged and owned one by one (structs and granular maps).
    Map,
    /// `x-kubernetes-list-type: map`: items merged and owned by their key fields.
    ListMap(Vec<String>),
    /// `x-kubernetes-list-type: set`: scalar items owned one by one.
    Set,
    /// Any other list (CRD lists default to atomic): replaced as a whole.
    AtomicList,
}

/// A position in an object's type: a schema node, ObjectMeta, or no type information.
#[derive(Clone, Copy, Debug)]
pub enum Node<'a> {
    /// The top of an object: `metadata` is ObjectMeta, the rest follows the schema (if any).
    Root(Option<&'a Value>),
    /// A node of a CRD's openAPIV3Schema.
    Schema(&'a Value),
    /// `metadata`.
    ObjectMeta,
    /// `metadata.labels` / `metadata.annotations`.
    StringMap,
    /// `metadata.finalizers`.
    Finalizers,
    /// `metadata.ownerReferences`.
    OwnerReferences,
    /// No type information: objects are granular maps, lists atomic.
    Untyped,
}

impl<'a> Node<'a> {
    /// The shape of `value` at this node.
    pub fn shape(self, value: &Value) -> Shape {
        match self {
            Node::Root(_) | Node::ObjectMeta | Node::StringMap => Shape::Map,
            Node::Finalizers => Shape::Set,
            Node::OwnerReferences => Shape::ListMap(vec!["uid".into()]),
            Node::Untyped => match value {
                Value::Object(_) => Shape::Map,
                Value::Array(_) => Shape::AtomicList,
                _ => Shape::Scalar,
            },
            Node::Schema(schema) => schema_shape(schema, value),
        }
    }

    /// The node of field `key` of an object at this node.
    pub fn child(self, key: &str) -> Node<'a> {
        match self {
            Node::Root(schema) => match key {
                "metadata" => Node::ObjectMeta,
                _ => schema.and_then(|s| schema_child(s, key)).map_or(Node::Untyped, Node::Schema),
            },
            Node::ObjectMeta => match key {
                "labels" | "annotations" => Node::StringMap,
                "finalizers" => Node::Finalizers,
                "ownerReferences" => Node::OwnerReferences,
                _ => Node::Untyped,
            },
            Node::Schema(schema) => schema_child(schema, key).map_or(Node::Untyped, Node::Schema),
            Node::StringMap | Node::Finalizers | Node::OwnerReferences | Node::Untyped => Node::Untyped,
        }
    }

    /// The node of the items of a list at this node.
    pub fn items(self) -> Node<'a> {
        match self {
            Node::Schema(schema) => schema.get("items").map_or(Node::Untyped, Node::Schema),
            _ => Node::Untyped,
        }
    }
}

fn schema_shape(schema: &Value, value: &Value) -> Shape {
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return Shape::Scalar;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            if schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic") {
                Shape::AtomicMap
            } else {
                Shape::Map
            }
        }
        Some("array") => match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => Shape::ListMap(
                schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| keys.iter().filter_map(Value::as_str).map(String::from).collect())
                    .unwrap_or_default(),
            ),
            Some("set") => Shape::Set,
            _ => Shape::AtomicList,
        },
        Some(_) => Shape::Scalar,
        // Untyped nodes (x-kubernetes-preserve-unknown-fields) follow the value.
        None => Node::Untyped.shape(value),
    }
}

/// The schema of field `key`: a declared property, or the additionalProperties schema.
pub fn schema_child<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(property) = schema.get("properties").and_then(|p| p.get(key)) {
        return Some(property);
    }
    schema.get("additionalProperties").filter(|a| a.is_object())
}

/// The key of a list-map item: its key fields as a canonical JSON object (what FieldsV1 writes
/// after `k:`). `None` when a key field is missing.
pub fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut object = serde_json::Map::new();
    for key in keys {
        object.insert(key.clone(), item.get(key)?.clone());
    }
    Some(Value::Object(object).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_follow_the_schema_markers() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "certificates": {
                            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                            "items": { "type": "object", "properties": { "name": { "type": "string" } } }
                        },
                        "tags": { "type": "array", "x-kubernetes-list-type": "set", "items": { "type": "string" } },
                        "args": { "type": "array", "items": { "type": "string" } },
                        "selector": { "type": "object", "x-kubernetes-map-type": "atomic",
                                      "additionalProperties": { "type": "string" } },
                        "port": { "x-kubernetes-int-or-string": true }
                    }
                }
            }
        });
        let root = Node::Root(Some(&schema));
        let spec = root.child("spec");
        assert_eq!(spec.shape(&json!({})), Shape::Map);
        assert_eq!(spec.child("certificates").shape(&json!([])), Shape::ListMap(vec!["name".into()]));
        assert_eq!(spec.child("tags").shape(&json!([])), Shape::Set);
        assert_eq!(spec.child("args").shape(&json!([])), Shape::AtomicList);
        assert_eq!(spec.child("selector").shape(&json!({})), Shape::AtomicMap);
        assert_eq!(spec.child("port").shape(&json!(1)), Shape::Scalar);
        assert_eq!(spec.child("certificates").items().child("name").shape(&json!("a")), Shape::Scalar);
        assert_eq!(root.child("metadata").child("finalizers").shape(&json!([])), Shape::Set);
        assert_eq!(root.child("metadata").child("labels").shape(&json!({})), Shape::Map);
        assert_eq!(Node::Root(None).child("data").shape(&json!({"a": "b"})), Shape::Map);
    }

    #[test]
    fn item_keys_are_canonical_json() {
        let keys = vec!["name".to_string(), "store".to_string()];
        assert_eq!(
            item_key(&json!({"store": "My", "name": "a", "x": 1}), &keys).as_deref(),
            Some(r#"{"name":"a","store":"My"}"#)
        );
        assert_eq!(item_key(&json!({"name": "a"}), &keys), None);
    }
}
