//! How writes change an object: the server-side apply merge and the removal of fields a manager
//! no longer applies (structured-merge-diff `merge` / `RemoveItems`), and RFC 7386 merge patches.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::fields::{FieldSet, PathElement};
use crate::shape::{Node, Shape, item_key};

/// What is left of a struct, map or list whose last field or item apply removed.
///
/// structured-merge-diff dropped such containers (they became null, and the API server prunes a
/// null that the schema does not allow) until kubernetes-sigs/structured-merge-diff#306 (Oct 2025)
/// kept them as `{}` / `[]`. Servers with #306 then refuse the object when the emptied struct has
/// required fields (`...: Required value`, #330/#331, as observed on a v1.36.2 API server); #306 was
/// being reverted in July 2026. The operator must work against both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmptiedContainers {
    /// Kept as `{}` / `[]` (structured-merge-diff #306; the stricter behaviour, the default here).
    #[default]
    KeptEmpty,
    /// Removed (structured-merge-diff before #306 and after its revert).
    Removed,
}

/// The applied configuration merged over the live value. An explicit `null` in the configuration
/// changes nothing ("the explicit null from the patch is dropped", structured-merge-diff#330);
/// `None` when neither side has a value.
pub fn merge_applied(live: Option<&Value>, config: &Value, node: Node<'_>) -> Option<Value> {
    match (node.shape(config), config) {
        (_, Value::Null) => live.cloned(),
        (Shape::Map, Value::Object(fields)) => {
            let mut merged = match live {
                Some(Value::Object(live)) => live.clone(),
                _ => Map::new(),
            };
            for (field, value) in fields {
                if let Some(value) = merge_applied(merged.get(field), value, node.child(field)) {
                    merged.insert(field.clone(), value);
                }
            }
            Some(Value::Object(merged))
        }
        (Shape::ListMap(keys), Value::Array(items)) => {
            let mut merged: Vec<Value> = match live {
                Some(Value::Array(live)) => live.clone(),
                _ => vec![],
            };
            let items_node = node.items();
            for item in items {
                let key = item_key(item, &keys);
                let position = key
                    .as_ref()
                    .and_then(|key| merged.iter().position(|existing| item_key(existing, &keys).as_ref() == Some(key)));
                match position {
                    Some(index) => {
                        if let Some(value) = merge_applied(Some(&merged[index]), item, items_node) {
                            merged[index] = value;
                        }
                    }
                    None => merged.extend(merge_applied(None, item, items_node)),
                }
            }
            Some(Value::Array(merged))
        }
        (Shape::Set, Value::Array(items)) => {
            let mut merged: Vec<Value> = match live {
                Some(Value::Array(live)) => live.clone(),
                _ => vec![],
            };
            for item in items {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Some(Value::Array(merged))
        }
        _ => Some(config.clone()),
    }
}

#[derive(Default, Debug)]
struct Trie {
    member: bool,
    children: BTreeMap<PathElement, Trie>,
}

/// Remove every path of `paths` from `object` (fields, list-map items, set members).
pub fn remove_paths(object: &mut Value, paths: &FieldSet, root: Node<'_>, emptied: EmptiedContainers) {
    let mut trie = Trie::default();
    for path in paths {
        let mut node = &mut trie;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }
    remove_in(object, root, &trie, emptied);
}

/// Returns whether `value` lost its last field or item here.
fn remove_in(value: &mut Value, node: Node<'_>, trie: &Trie, emptied: EmptiedContainers) -> bool {
    let mut removed_any = false;
    let shape = node.shape(value);
    for (element, below) in &trie.children {
        match element {
            PathElement::Field(field) => {
                let Some(fields) = value.as_object_mut() else { continue };
                if below.member {
                    removed_any |= fields.remove(field).is_some();
                } else if let Some(child) = fields.get_mut(field)
                    && remove_in(child, node.child(field), below, emptied)
                {
                    if emptied == EmptiedContainers::Removed {
                        fields.remove(field);
                    }
                    removed_any = true;
                }
            }
            PathElement::Key(key) => {
                let (Shape::ListMap(keys), Some(items)) = (&shape, value.as_array_mut()) else { continue };
                let Some(index) = items.iter().position(|item| item_key(item, keys).as_deref() == Some(key.as_str()))
                else {
                    continue;
                };
                if below.member {
                    items.remove(index);
                    removed_any = true;
                } else if remove_in(&mut items[index], node.items(), below, emptied) {
                    removed_any = true;
                }
            }
            PathElement::Value(member) => {
                let Some(items) = value.as_array_mut() else { continue };
                let before = items.len();
                items.retain(|item| serde_json::from_str::<Value>(member).ok().as_ref() != Some(item));
                removed_any |= items.len() != before;
            }
        }
    }
    removed_any
        && match value {
            Value::Object(fields) => fields.is_empty(),
            Value::Array(items) => items.is_empty(),
            _ => false,
        }
}

/// RFC 7386 JSON merge patch: objects merge, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_fields) = target else { return };
    for (field, value) in patch_fields {
        if value.is_null() {
            target_fields.remove(field);
        } else {
            merge_patch(target_fields.entry(field.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{Scope, field_set};
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
                        "settings": { "type": "object", "properties": {
                            "a": { "type": "string" }, "b": { "type": "string" } } },
                        "tags": { "type": "array", "x-kubernetes-list-type": "set", "items": { "type": "string" } }
                    }
                }
            }
        })
    }

    #[test]
    fn apply_merges_list_maps_by_key_and_drops_nulls() {
        let schema = schema();
        let root = Node::Root(Some(&schema));
        let live =
            json!({ "spec": { "items": [{ "name": "a", "value": "1" }], "settings": { "a": "x" }, "tags": ["t"] } });
        let config = json!({ "spec": { "items": [{ "name": "b", "value": "2" }, { "name": "a", "value": "3" }],
                                       "settings": null, "tags": ["u", "t"] } });
        let merged = merge_applied(Some(&live), &config, root).expect("merged");
        assert_eq!(
            merged,
            json!({ "spec": { "items": [{ "name": "a", "value": "3" }, { "name": "b", "value": "2" }],
                              "settings": { "a": "x" }, "tags": ["t", "u"] } })
        );
    }

    #[test]
    fn removing_the_last_field_of_a_struct_keeps_or_drops_it() {
        let schema = schema();
        let root = Node::Root(Some(&schema));
        let object = json!({ "spec": { "settings": { "a": "x" }, "items": [{ "name": "a" }, { "name": "b" }] } });
        let owned = field_set(
            &json!({ "spec": { "settings": { "a": "x" }, "items": [{ "name": "b" }] } }),
            root,
            Scope::Main { status_subresource: true },
        );
        let mut kept = object.clone();
        remove_paths(&mut kept, &owned, root, EmptiedContainers::KeptEmpty);
        assert_eq!(kept, json!({ "spec": { "settings": {}, "items": [{ "name": "a" }] } }));
        let mut dropped = object;
        remove_paths(&mut dropped, &owned, root, EmptiedContainers::Removed);
        assert_eq!(dropped, json!({ "spec": { "items": [{ "name": "a" }] } }));
    }

    #[test]
    fn merge_patch_null_deletes() {
        let mut target = json!({ "a": { "b": 1, "c": 2 }, "d": [1] });
        merge_patch(&mut target, &json!({ "a": { "b": null, "e": 3 }, "d": [2] }));
        assert_eq!(target, json!({ "a": { "c": 2, "e": 3 }, "d": [2] }));
    }
}
