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
            let live: &[Value] = match live {
                Some(Value::Array(live)) => live,
                _ => &[],
            };
            let items_node = node.items();
            let key_of = |item: &Value| item_key(item, &keys).unwrap_or_else(|| item.to_string());
            let merged = merge_list_order(live, items, key_of, |live_item, applied| match applied {
                Some(applied) => merge_applied(live_item, applied, items_node),
                None => live_item.cloned(),
            });
            Some(Value::Array(merged))
        }
        (Shape::Set, Value::Array(items)) => {
            let live: &[Value] = match live {
                Some(Value::Array(live)) => live,
                _ => &[],
            };
            let merged =
                merge_list_order(live, items, Value::to_string, |live_item, applied| applied.or(live_item).cloned());
            Some(Value::Array(merged))
        }
        _ => Some(config.clone()),
    }
}

/// The order of a merged keyed list (structured-merge-diff `mergingWalker.visitListItems`): the
/// applied items in the applied order, live-only items kept at their place among them. So a
/// manager that reorders its items reorders them on the server, and applying the same list again
/// changes nothing.
fn merge_list_order(
    live: &[Value],
    applied: &[Value],
    key_of: impl Fn(&Value) -> String,
    merge_item: impl Fn(Option<&Value>, Option<&Value>) -> Option<Value>,
) -> Vec<Value> {
    let live_keys: Vec<String> = live.iter().map(&key_of).collect();
    let applied_keys: Vec<String> = applied.iter().map(&key_of).collect();
    let in_applied = |key: &String| applied_keys.contains(key);
    let live_item = |key: &String| live_keys.iter().position(|k| k == key).map(|i| &live[i]);
    // Items on both sides, in applied order: a live shared item is emitted only when it is next.
    let mut shared: std::collections::VecDeque<&String> =
        applied_keys.iter().filter(|key| live_keys.contains(key)).collect();
    let mut emitted = std::collections::BTreeSet::new();
    let mut out = vec![];
    let (mut l, mut r) = (0, 0);
    while l < live.len() || r < applied.len() {
        if l < live.len() && r < applied.len() && live_keys[l] == applied_keys[r] {
            let key = &applied_keys[r];
            emitted.insert(key.clone());
            out.extend(merge_item(Some(&live[l]), Some(&applied[r])));
            if shared.front() == Some(&key) {
                shared.pop_front();
            }
            l += 1;
            r += 1;
            continue;
        }
        if l < live.len() {
            let key = &live_keys[l];
            if !in_applied(key) {
                out.extend(merge_item(Some(&live[l]), None));
                l += 1;
                continue;
            }
            if emitted.contains(key) || shared.front().is_some_and(|next| *next != key) {
                l += 1;
                continue;
            }
        }
        if r < applied.len() {
            let key = &applied_keys[r];
            if emitted.insert(key.clone()) {
                out.extend(merge_item(live_item(key), Some(&applied[r])));
            }
            if shared.front() == Some(&key) {
                shared.pop_front();
            }
            r += 1;
        } else {
            l += 1;
        }
    }
    out
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
            json!({ "spec": { "items": [{ "name": "b", "value": "2" }, { "name": "a", "value": "3" }],
                              "settings": { "a": "x" }, "tags": ["u", "t"] } }),
            "applied items in the applied order"
        );
    }

    #[test]
    fn live_only_items_keep_their_place_among_the_applied_ones() {
        let key = |v: &Value| v.to_string();
        let merge = |live: Value, applied: Value| {
            let (live, applied) = (live.as_array().unwrap().clone(), applied.as_array().unwrap().clone());
            Value::Array(merge_list_order(&live, &applied, key, |l, a| a.or(l).cloned()))
        };
        assert_eq!(merge(json!(["a", "x", "b", "c"]), json!(["a", "b", "c"])), json!(["a", "x", "b", "c"]));
        assert_eq!(merge(json!(["a", "x", "b"]), json!(["b", "a"])), json!(["x", "b", "a"]));
        assert_eq!(merge(json!(["a", "b"]), json!(["b", "a"])), json!(["b", "a"]));
        assert_eq!(merge(json!([]), json!(["b", "a"])), json!(["b", "a"]));
        assert_eq!(merge(json!(["x", "y"]), json!(["n"])), json!(["x", "y", "n"]));
        // Applying the same list again changes nothing.
        let once = merge(json!(["x", "a"]), json!(["b", "a"]));
        assert_eq!(merge(once.clone(), json!(["b", "a"])), once);
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
