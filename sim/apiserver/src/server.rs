//! The store and the verbs: what a request does to it, decided under one lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};

use crate::fields::{self, FieldSet, Scope, display_path, field_set, to_fields_v1, value_at};
use crate::ledger::Ledger;
use crate::merge::{merge_applied, merge_patch, remove_paths};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::shape::Node;
use crate::validate::{self, FieldError};
use crate::{AdmissionHook, AdmissionRequest, Clock, Identity, Options, ResourceType};

/// An error answered as a `Status` object.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub causes: Vec<FieldError>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self { code, reason: reason.into(), message: message.into(), causes: vec![] }
    }

    fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} {name:?} not found", resource.qualified()))
    }

    fn conflict(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your \
                 changes to the latest version and try again",
                resource.qualified()
            ),
        )
    }

    /// 422 with the API server's message: `Kind.group "name" is invalid: [a: ..., b: ...]`.
    pub fn invalid(resource: &ResourceType, name: &str, causes: Vec<FieldError>) -> Self {
        let listed: Vec<String> = causes.iter().map(ToString::to_string).collect();
        let joined = if listed.len() == 1 { listed[0].clone() } else { format!("[{}]", listed.join(", ")) };
        let kind = if resource.group.is_empty() {
            resource.kind.clone()
        } else {
            format!("{}.{}", resource.kind, resource.group)
        };
        Self { code: 422, reason: "Invalid".into(), message: format!("{kind} {name:?} is invalid: {joined}"), causes }
    }

    /// The Status body.
    pub fn to_status(&self) -> Value {
        let causes: Vec<Value> =
            self.causes.iter().map(|c| json!({ "reason": c.reason, "message": c.detail, "field": c.field })).collect();
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
            "details": { "causes": causes },
        })
    }
}

/// One managedFields entry.
#[derive(Clone, Debug, PartialEq)]
struct Managed {
    manager: String,
    /// `Apply` or `Update`.
    operation: &'static str,
    subresource: String,
    time: String,
    fields: FieldSet,
}

#[derive(Clone, Debug)]
struct Stored {
    /// The object without managedFields.
    value: Value,
    managed: Vec<Managed>,
}

/// (group, plural, namespace, name)
type ObjectKey = (String, String, String, String);

/// A watch event kept for watches.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub kind: &'static str,
    pub object: Arc<Value>,
    pub previous: Option<Arc<Value>>,
}

pub(crate) struct State {
    types: BTreeMap<(String, String), Arc<ResourceType>>,
    objects: BTreeMap<ObjectKey, Stored>,
    pub rv: u64,
    uids: u64,
    pub events: VecDeque<Event>,
    pub admission: Vec<AdmissionHook>,
    options: Options,
    cel: kube_cel::Validator,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    ledger: Mutex<Ledger>,
    pub clock: Mutex<Clock>,
    /// The latest resourceVersion, for watches waiting on new events.
    pub changed: tokio::sync::watch::Sender<u64>,
}

/// A write as the verbs see it.
pub(crate) struct Write<'a> {
    pub identity: &'a Identity,
    pub resource: Arc<ResourceType>,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
    pub field_manager: Option<String>,
    pub force: bool,
}

impl Shared {
    pub fn new(options: Options) -> Self {
        let (changed, _) = tokio::sync::watch::channel(0);
        Self {
            state: Mutex::new(State {
                types: BTreeMap::new(),
                objects: BTreeMap::new(),
                rv: 0,
                uids: 0,
                events: VecDeque::new(),
                admission: vec![],
                options,
                cel: kube_cel::Validator::new(),
            }),
            ledger: Mutex::new(Ledger::default()),
            clock: Mutex::new(Arc::new(jiff::Timestamp::now)),
            changed,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn now(&self) -> String {
        let clock = self.clock.lock().unwrap_or_else(|p| p.into_inner()).clone();
        clock().round(jiff::Unit::Second).unwrap_or(clock()).to_string()
    }

    /// Run a state change and wake watches if it produced events.
    pub fn mutate<T>(&self, change: impl FnOnce(&mut State, &str) -> T) -> T {
        let now = self.now();
        let mut state = self.state();
        let before = state.rv;
        let result = change(&mut state, &now);
        let after = state.rv;
        drop(state);
        if after != before {
            self.changed.send_replace(after);
        }
        result
    }

    pub fn seed(&self, identity: &Identity, object: Value) -> Result<Value, ApiError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let resource = self.state().type_by_kind(&api_version, &kind).ok_or_else(|| {
            ApiError::new(404, "NotFound", format!("no kind {kind:?} is registered for {api_version}"))
        })?;
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let write = Write {
            identity,
            resource,
            namespace,
            name: String::new(),
            subresource: String::new(),
            field_manager: Some("seed".into()),
            force: false,
        };
        self.mutate(|state, now| state.create(&write, object, now, true))
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

impl State {
    pub fn register(&mut self, resource: ResourceType) {
        self.types.insert((resource.group.clone(), resource.plural.clone()), Arc::new(resource));
    }

    pub fn resource(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.get(&(group.to_string(), plural.to_string())).cloned()
    }

    fn type_by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.types.values().find(|t| t.group == group && t.version == version && t.kind == kind).cloned()
    }

    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (group, plural, _, _) in self.objects.keys() {
            let name = if group.is_empty() { plural.clone() } else { format!("{plural}.{group}") };
            *counts.entry(name).or_default() += 1;
        }
        counts
    }

    fn render(stored: &Stored) -> Value {
        let mut value = stored.value.clone();
        if !stored.managed.is_empty() {
            let entries: Vec<Value> = stored
                .managed
                .iter()
                .map(|m| {
                    let mut entry = json!({
                        "manager": m.manager, "operation": m.operation,
                        "apiVersion": value["apiVersion"], "time": m.time,
                        "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&m.fields),
                    });
                    if !m.subresource.is_empty() {
                        entry["subresource"] = m.subresource.clone().into();
                    }
                    entry
                })
                .collect();
            value["metadata"]["managedFields"] = Value::Array(entries);
        }
        value
    }

    pub fn peek(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.objects.get(&(group.into(), plural.into(), namespace.into(), name.into())).map(Self::render)
    }

    pub fn peek_all(&self, group: &str, plural: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, _, _), _)| g == group && p == plural)
            .map(|(_, stored)| Self::render(stored))
            .collect()
    }

    pub fn get(&self, resource: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.peek(&resource.group, &resource.plural, namespace, name).ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// Objects of a resource in `namespace` (empty: all) matching the selectors, in name order,
    /// from just after `after` (a continue token) up to `limit`; returns the items and the next token.
    pub fn list(
        &self,
        resource: &ResourceType,
        namespace: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        after: Option<&str>,
    ) -> (Vec<Value>, Option<String>) {
        let mut items = vec![];
        let mut next = None;
        for ((group, plural, object_namespace, name), stored) in &self.objects {
            if *group != resource.group || *plural != resource.plural {
                continue;
            }
            if !namespace.is_empty() && object_namespace != namespace {
                continue;
            }
            let token = format!("{object_namespace}/{name}");
            if after.is_some_and(|after| token.as_str() <= after) {
                continue;
            }
            if !labels.matches(&stored.value) || !fields.matches(&stored.value) {
                continue;
            }
            if limit.is_some_and(|limit| items.len() >= limit) {
                next = items.last().map(|last: &Value| {
                    format!(
                        "{}/{}",
                        last["metadata"]["namespace"].as_str().unwrap_or_default(),
                        last["metadata"]["name"].as_str().unwrap_or_default()
                    )
                });
                break;
            }
            items.push(Self::render(stored));
        }
        (items, next)
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        kind: &'static str,
        object: &Stored,
        previous: Option<&Stored>,
    ) {
        let event = Event {
            rv: self.rv,
            group: resource.group.clone(),
            plural: resource.plural.clone(),
            namespace: namespace.to_string(),
            kind,
            object: Arc::new(Self::render(object)),
            previous: previous.map(|p| Arc::new(Self::render(p))),
        };
        self.events.push_back(event);
        while self.events.len() > self.options.watch_history {
            self.events.pop_front();
        }
    }

    /// The oldest resourceVersion a watch can resume from.
    pub fn oldest_watchable(&self) -> u64 {
        self.events.front().map_or(self.rv, |e| e.rv.saturating_sub(1))
    }

    fn check_namespace(&self, resource: &ResourceType, namespace: &str) -> Result<(), ApiError> {
        if !resource.namespaced {
            return Ok(());
        }
        if namespace.is_empty() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the server could not find the requested resource: a namespace is required",
            ));
        }
        if self.options.require_namespaces
            && !self.objects.contains_key(&(String::new(), "namespaces".into(), String::new(), namespace.to_string()))
        {
            return Err(ApiError::new(404, "NotFound", format!("namespaces {namespace:?} not found")));
        }
        Ok(())
    }

    /// Prune, default and validate an object about to be stored; CEL rules see `old` on updates.
    fn admit_shape(&self, resource: &ResourceType, object: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if resource.group.is_empty() && resource.plural == "secrets" {
            string_data_into_data(object);
        }
        if let Some(schema) = &resource.schema {
            validate::prune(object, schema);
            *object = kube_cel::apply_defaults(schema, object);
        }
        let mut errors = metadata_errors(resource, object);
        if let Some(schema) = &resource.schema {
            errors.extend(validate::validate_schema(object, schema));
            if errors.is_empty()
                && let Some(cel) = &resource.cel
            {
                errors.extend(validate::validate_cel(&self.cel, cel, object, old));
            }
        }
        errors.extend(builtin_errors(resource, object));
        if errors.is_empty() { Ok(()) } else { Err(ApiError::invalid(resource, &name, errors)) }
    }

    fn admit(
        &self,
        write: &Write<'_>,
        operation: &'static str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let request = AdmissionRequest {
            identity: write.identity,
            operation,
            resource: &write.resource,
            subresource: &write.subresource,
            namespace: &write.namespace,
            name: &write.name,
            object,
            old_object: old,
        };
        for hook in &self.admission {
            hook(&request)?;
        }
        Ok(())
    }

    fn key(write: &Write<'_>, name: &str) -> ObjectKey {
        (write.resource.group.clone(), write.resource.plural.clone(), write.namespace.clone(), name.to_string())
    }

    fn manager(write: &Write<'_>) -> String {
        write.field_manager.clone().unwrap_or_else(|| write.identity.component.clone())
    }

    /// POST.
    pub fn create(&mut self, write: &Write<'_>, object: Value, now: &str, seeding: bool) -> Result<Value, ApiError> {
        self.insert_new(write, object, now, seeding, None)
    }

    /// Create; `applied` is the (manager, field set) of a server-side apply that creates.
    fn insert_new(
        &mut self,
        write: &Write<'_>,
        mut object: Value,
        now: &str,
        seeding: bool,
        applied: Option<(String, FieldSet)>,
    ) -> Result<Value, ApiError> {
        let resource = write.resource.clone();
        if !object.is_object() {
            return Err(ApiError::new(400, "BadRequest", "the request body is not an object"));
        }
        object["apiVersion"] = resource.api_version().into();
        object["kind"] = resource.kind.clone().into();
        let meta = object["metadata"].as_object().cloned().unwrap_or_default();
        let namespace = if resource.namespaced {
            let body_namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or_default();
            if !body_namespace.is_empty() && !write.namespace.is_empty() && body_namespace != write.namespace {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if write.namespace.is_empty() { body_namespace.to_string() } else { write.namespace.clone() }
        } else {
            String::new()
        };
        self.check_namespace(&resource, &namespace)?;
        let mut name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty()
            && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        {
            self.uids += 1;
            name = format!("{prefix}{:05x}", self.uids & 0xfffff);
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                &resource,
                "",
                vec![FieldError {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    detail: "Required value: name or generateName is required".into(),
                }],
            ));
        }
        let key = (resource.group.clone(), resource.plural.clone(), namespace.clone(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", resource.qualified()),
            ));
        }
        if resource.status_subresource && !seeding {
            // A create cannot set status when the kind has a status subresource.
            if let Some(fields) = object.as_object_mut() {
                fields.remove("status");
            }
        }
        let metadata = object["metadata"].as_object_mut().map(std::mem::take).unwrap_or_default();
        let mut clean = Map::new();
        for field in ["labels", "annotations", "finalizers", "ownerReferences", "generateName"] {
            if let Some(value) = metadata.get(field) {
                clean.insert(field.into(), value.clone());
            }
        }
        clean.insert("name".into(), name.clone().into());
        if resource.namespaced {
            clean.insert("namespace".into(), namespace.clone().into());
        }
        self.uids += 1;
        clean.insert("uid".into(), format!("00000000-0000-4000-8000-{:012x}", self.uids).into());
        clean.insert("creationTimestamp".into(), now.into());
        if resource.generation {
            clean.insert("generation".into(), 1.into());
        }
        object["metadata"] = Value::Object(clean);
        let write = Write { namespace: namespace.clone(), name: name.clone(), ..clone_write(write) };
        self.admit_shape(&resource, &mut object, None)?;
        self.admit(&write, "CREATE", Some(&object), None)?;
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let root = Node::Root(resource.schema.as_ref());
        let scope = Scope::Main { status_subresource: resource.status_subresource };
        let managed = vec![match applied {
            Some((manager, fields)) => {
                Managed { manager, operation: "Apply", subresource: String::new(), time: now.to_string(), fields }
            }
            None => Managed {
                manager: Self::manager(&write),
                operation: "Update",
                subresource: String::new(),
                time: now.to_string(),
                fields: field_set(&object, root, scope),
            },
        }];
        let stored = Stored { value: object, managed };
        self.record(&resource, &namespace, "ADDED", &stored, None);
        let rendered = Self::render(&stored);
        self.objects.insert(key, stored);
        Ok(rendered)
    }

    fn stored(&self, write: &Write<'_>) -> Result<Stored, ApiError> {
        self.objects
            .get(&Self::key(write, &write.name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&write.resource, &write.name))
    }

    /// PUT (main resource or status).
    pub fn update(&mut self, write: &Write<'_>, body: Value, now: &str) -> Result<Value, ApiError> {
        let old = self.stored(write)?;
        let sent_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
        if sent_rv.is_empty() && write.resource.generation {
            return Err(ApiError::invalid(
                &write.resource,
                &write.name,
                vec![FieldError {
                    reason: "FieldValueInvalid",
                    field: "metadata.resourceVersion".into(),
                    detail: "Invalid value: 0x0: must be specified for an update".into(),
                }],
            ));
        }
        if !sent_rv.is_empty() && sent_rv != old.value["metadata"]["resourceVersion"] {
            return Err(ApiError::conflict(&write.resource, &write.name));
        }
        let new = scoped(&write.resource, &write.subresource, &old.value, &body);
        self.commit_update(write, old, new, None, now)
    }

    /// PATCH with a merge, strategic-merge (treated as merge: the kinds written here have no
    /// patch-merge keys that matter) or JSON patch.
    pub fn patch(&mut self, write: &Write<'_>, content_type: &str, body: &[u8], now: &str) -> Result<Value, ApiError> {
        let old = self.stored(write)?;
        let mut patched = old.value.clone();
        if content_type.starts_with("application/json-patch+json") {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut patched, &patch)
                .map_err(|e| ApiError::new(422, "Invalid", format!("the JSON patch could not be applied: {e}")))?;
        } else {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid merge patch: {e}")))?;
            if let Some(sent) = patch["metadata"]["resourceVersion"].as_str()
                && sent != old.value["metadata"]["resourceVersion"]
            {
                return Err(ApiError::conflict(&write.resource, &write.name));
            }
            merge_patch(&mut patched, &patch);
        }
        let new = scoped(&write.resource, &write.subresource, &old.value, &patched);
        self.commit_update(write, old, new, None, now)
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply.
    pub fn apply(&mut self, write: &Write<'_>, config: Value, now: &str) -> Result<Value, ApiError> {
        let resource = write.resource.clone();
        let Some(manager) = write.field_manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        };
        let config_name = config["metadata"]["name"].as_str().unwrap_or_default();
        // An applied configuration may leave the name out; the URL names the object.
        if !config_name.is_empty() && config_name != write.name {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the name of the object ({config_name}) does not match the name on the URL ({})", write.name),
            ));
        }
        if config["apiVersion"].as_str() != Some(resource.api_version().as_str())
            || config["kind"].as_str() != Some(resource.kind.as_str())
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "apiVersion and kind must be {} {} in an applied configuration",
                    resource.api_version(),
                    resource.kind
                ),
            ));
        }
        let scope = if write.subresource == "status" {
            Scope::Status
        } else {
            Scope::Main { status_subresource: resource.status_subresource }
        };
        let root = Node::Root(resource.schema.as_ref());
        let mut config = config;
        if let Some(fields) = config.as_object_mut() {
            fields.retain(|field, _| field == "metadata" || fields::in_scope(scope, field));
        }
        if scope == Scope::Status {
            // Status writes cannot change metadata.
            config["metadata"] = json!({ "name": write.name });
        }
        if let Some(duplicate) = fields::duplicate_key(&config, root, "") {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!("failed to create typed patch object ({}; {}): {duplicate}", resource.qualified(), write.name),
            ));
        }
        let applied = field_set(&config, root, scope);
        let existing = self.objects.get(&Self::key(write, &write.name)).cloned();
        let Some(old) = existing else {
            if scope == Scope::Status {
                return Err(ApiError::not_found(&resource, &write.name));
            }
            let mut object = merge_applied(None, &config, root).unwrap_or_else(|| json!({}));
            object["metadata"]["name"] = write.name.clone().into();
            return self.insert_new(write, object, now, false, Some((manager, applied)));
        };
        let subresource = if scope == Scope::Status { "status" } else { "" };
        let mine = |m: &Managed| m.manager == manager && m.operation == "Apply" && m.subresource == subresource;
        // Conflicts: another manager owns a field this configuration sets to a different value.
        let mut conflicts = vec![];
        let mut managed = old.managed.clone();
        for entry in managed.iter_mut().filter(|m| !mine(m)) {
            let contested: Vec<_> = entry
                .fields
                .intersection(&applied)
                .filter(|path| {
                    let wanted = value_at(&config, path, root);
                    wanted.is_some_and(|w| !w.is_null()) && value_at(&old.value, path, root) != wanted
                })
                .cloned()
                .collect();
            for path in contested {
                if write.force {
                    entry.fields.remove(&path);
                } else {
                    conflicts.push(format!("conflict with {:?}: {}", entry.manager, display_path(&path)));
                }
            }
        }
        if !conflicts.is_empty() {
            let count = conflicts.len();
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {count} conflict{}: {}",
                    if count == 1 { "" } else { "s" },
                    conflicts.join("\n")
                ),
            ));
        }
        let mut merged = merge_applied(Some(&old.value), &config, root).unwrap_or_else(|| old.value.clone());
        let previous = managed.iter().find(|m| mine(m)).map(|m| m.fields.clone()).unwrap_or_default();
        let owned_by_others: FieldSet =
            managed.iter().filter(|m| !mine(m)).flat_map(|m| m.fields.iter().cloned()).collect();
        let removed: FieldSet =
            previous.difference(&applied).filter(|p| !owned_by_others.contains(*p)).cloned().collect();
        remove_paths(&mut merged, &removed, root, self.options.emptied_containers);
        managed.retain(|m| !mine(m));
        managed.push(Managed {
            manager,
            operation: "Apply",
            subresource: subresource.into(),
            time: now.into(),
            fields: applied,
        });
        self.commit_update(write, old, merged, Some(managed), now)
    }

    /// Store an updated object: server-owned metadata kept, deletion rules, validation,
    /// admission, generation, resourceVersion and managedFields. A write that changes nothing is
    /// not stored (same resourceVersion, no watch event).
    fn commit_update(
        &mut self,
        write: &Write<'_>,
        old: Stored,
        mut new: Value,
        managed: Option<Vec<Managed>>,
        now: &str,
    ) -> Result<Value, ApiError> {
        let resource = write.resource.clone();
        let old_meta = old.value["metadata"].as_object().cloned().unwrap_or_default();
        let mut meta = new["metadata"].as_object().cloned().unwrap_or_default();
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "generateName",
        ] {
            match old_meta.get(field) {
                Some(value) => meta.insert(field.into(), value.clone()),
                None => meta.remove(field),
            };
        }
        meta.remove("managedFields");
        new["metadata"] = Value::Object(meta);
        new["apiVersion"] = resource.api_version().into();
        new["kind"] = resource.kind.clone().into();
        let deleting = old_meta.contains_key("deletionTimestamp");
        let finalizers = |value: &Value| -> Vec<String> {
            value["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        };
        if deleting {
            let before = finalizers(&old.value);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &resource,
                    &write.name,
                    vec![FieldError {
                        reason: "FieldValueForbidden",
                        field: "metadata.finalizers".into(),
                        detail: format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{added:?}}}"
                        ),
                    }],
                ));
            }
        }
        self.admit_shape(&resource, &mut new, Some(&old.value))?;
        let root = Node::Root(resource.schema.as_ref());
        let scope = if write.subresource == "status" {
            Scope::Status
        } else {
            Scope::Main { status_subresource: resource.status_subresource }
        };
        let managed = match managed {
            Some(managed) => managed,
            None => update_ownership(&old, &new, root, scope, Self::manager(write), &write.subresource, now),
        };
        let content_changed = new != old.value;
        let ownership_changed = strip_times(&managed) != strip_times(&old.managed);
        if !content_changed && !ownership_changed {
            return Ok(Self::render(&old));
        }
        self.admit(write, "UPDATE", Some(&new), Some(&old.value))?;
        if resource.generation && spec_changed(&old.value, &new) {
            let generation = old.value["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = generation.into();
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = rv.to_string().into();
        let stored = Stored { value: new, managed };
        let key = Self::key(write, &write.name);
        if deleting && finalizers(&stored.value).is_empty() {
            self.record(&resource, &write.namespace, "DELETED", &stored, Some(&old));
            self.objects.remove(&key);
            return Ok(Self::render(&stored));
        }
        self.record(&resource, &write.namespace, "MODIFIED", &stored, Some(&old));
        let rendered = Self::render(&stored);
        self.objects.insert(key, stored);
        Ok(rendered)
    }

    /// DELETE: objects with finalizers get a deletionTimestamp and stay until the last one goes.
    /// Returns the object still being deleted, or `None` once it is gone.
    pub fn delete(&mut self, write: &Write<'_>, options: &Value, now: &str) -> Result<Option<Value>, ApiError> {
        let old = self.stored(write)?;
        if let Some(uid) = options["preconditions"]["uid"].as_str()
            && old.value["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict(&write.resource, &write.name));
        }
        if let Some(rv) = options["preconditions"]["resourceVersion"].as_str()
            && old.value["metadata"]["resourceVersion"].as_str() != Some(rv)
        {
            return Err(ApiError::conflict(&write.resource, &write.name));
        }
        self.admit(write, "DELETE", None, Some(&old.value))?;
        let key = Self::key(write, &write.name);
        let has_finalizers = old.value["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.value["metadata"]["deletionTimestamp"].is_string() {
                return Ok(Some(Self::render(&old)));
            }
            let mut stored = old.clone();
            stored.value["metadata"]["deletionTimestamp"] = now.into();
            stored.value["metadata"]["deletionGracePeriodSeconds"] = 0.into();
            if write.resource.generation {
                let generation = old.value["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                stored.value["metadata"]["generation"] = generation.into();
            }
            let rv = self.next_rv();
            stored.value["metadata"]["resourceVersion"] = rv.to_string().into();
            self.record(&write.resource, &write.namespace, "MODIFIED", &stored, Some(&old));
            let rendered = Self::render(&stored);
            self.objects.insert(key, stored);
            return Ok(Some(rendered));
        }
        let rv = self.next_rv();
        let mut stored = old.clone();
        stored.value["metadata"]["resourceVersion"] = rv.to_string().into();
        self.record(&write.resource, &write.namespace, "DELETED", &stored, Some(&old));
        self.objects.remove(&key);
        Ok(None)
    }
}

fn clone_write<'a>(write: &Write<'a>) -> Write<'a> {
    Write {
        identity: write.identity,
        resource: write.resource.clone(),
        namespace: write.namespace.clone(),
        name: write.name.clone(),
        subresource: write.subresource.clone(),
        field_manager: write.field_manager.clone(),
        force: write.force,
    }
}

/// What a main-resource or status write may change: the other part comes from the live object.
fn scoped(resource: &ResourceType, subresource: &str, old: &Value, new: &Value) -> Value {
    if subresource == "status" {
        let mut result = old.clone();
        match new.get("status") {
            Some(status) => result["status"] = status.clone(),
            None => {
                if let Some(fields) = result.as_object_mut() {
                    fields.remove("status");
                }
            }
        }
        return result;
    }
    let mut result = new.clone();
    if resource.status_subresource
        && let Some(fields) = result.as_object_mut()
    {
        match old.get("status") {
            Some(status) => fields.insert("status".into(), status.clone()),
            None => fields.remove("status"),
        };
    }
    result
}

/// Whether anything outside metadata and status changed (what bumps metadata.generation).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |value: &Value| {
        let mut value = value.clone();
        if let Some(fields) = value.as_object_mut() {
            fields.remove("metadata");
            fields.remove("status");
        }
        value
    };
    strip(old) != strip(new)
}

fn strip_times(managed: &[Managed]) -> Vec<Managed> {
    managed.iter().map(|m| Managed { time: String::new(), ..m.clone() }).collect()
}

/// Ownership after a non-apply write: the writer owns what it changed; fields that are gone are
/// owned by nobody.
fn update_ownership(
    old: &Stored,
    new: &Value,
    root: Node<'_>,
    scope: Scope,
    manager: String,
    subresource: &str,
    now: &str,
) -> Vec<Managed> {
    let new_set = field_set(new, root, scope);
    let changed: FieldSet =
        new_set.iter().filter(|path| value_at(&old.value, path, root) != value_at(new, path, root)).cloned().collect();
    let mut managed: Vec<Managed> = old
        .managed
        .iter()
        .cloned()
        .map(|mut m| {
            let same_scope = (m.subresource == "status") == (scope == Scope::Status);
            if same_scope {
                m.fields.retain(|p| new_set.contains(p) && !changed.contains(p));
            }
            m
        })
        .filter(|m| !m.fields.is_empty())
        .collect();
    if !changed.is_empty() {
        match managed
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == "Update" && m.subresource == subresource)
        {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = now.into();
            }
            None => managed.push(Managed {
                manager,
                operation: "Update",
                subresource: subresource.into(),
                time: now.into(),
                fields: changed,
            }),
        }
    }
    managed
}

/// Names, namespaces, labels and annotations as the API server checks them for every kind.
fn metadata_errors(resource: &ResourceType, object: &Value) -> Vec<FieldError> {
    let mut errors = vec![];
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if let Some(detail) = validate::dns_subdomain(name) {
        errors.push(FieldError { reason: "FieldValueInvalid", field: "metadata.name".into(), detail });
    }
    if let Some(labels) = object["metadata"]["labels"].as_object() {
        errors.extend(validate::labels(labels));
    }
    if let Some(annotations) = object["metadata"]["annotations"].as_object() {
        let size: usize = annotations.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
        if size > 256 * 1024 {
            errors.push(FieldError {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                detail: "Too long: may not be more than 262144 bytes".into(),
            });
        }
    }
    let _ = resource;
    errors
}

/// A Secret's `stringData` is merged into `data` (base64) and never stored (core/v1 Secret
/// conversion: "stringData ... is write-only").
fn string_data_into_data(object: &mut Value) {
    use base64::Engine;
    let Some(fields) = object.as_object_mut() else { return };
    let Some(Value::Object(string_data)) = fields.remove("stringData") else { return };
    let data = fields.entry("data").or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    for (key, value) in string_data {
        let text = value.as_str().unwrap_or_default();
        data[&key] = base64::engine::general_purpose::STANDARD.encode(text).into();
    }
}

/// Validation of the built-in kinds the project writes, where a real server refuses.
fn builtin_errors(resource: &ResourceType, object: &Value) -> Vec<FieldError> {
    let mut errors = vec![];
    let required = |errors: &mut Vec<FieldError>, field: &str| {
        let present = object.get(field).is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
        if !present {
            errors.push(FieldError {
                reason: "FieldValueRequired",
                field: field.into(),
                detail: "Required value".into(),
            });
        }
    };
    match (resource.group.as_str(), resource.plural.as_str()) {
        // k8s.io/kubernetes pkg/apis/events/validation ValidateEventCreate.
        ("events.k8s.io", "events") => {
            for field in ["eventTime", "reportingController", "reportingInstance", "action", "reason"] {
                required(&mut errors, field);
            }
            if let Some(note) = object["note"].as_str()
                && note.len() > 1024
            {
                errors.push(FieldError {
                    reason: "FieldValueTooLong",
                    field: "note".into(),
                    detail: format!("Too long: may not be more than 1024 bytes (note is {} bytes)", note.len()),
                });
            }
            for field in ["action", "reason"] {
                if object[field].as_str().is_some_and(|v| v.len() > 128) {
                    errors.push(FieldError {
                        reason: "FieldValueTooLong",
                        field: field.into(),
                        detail: "Too long: may not be more than 128 bytes".into(),
                    });
                }
            }
            if let Some(kind) = object["type"].as_str()
                && kind != "Normal"
                && kind != "Warning"
            {
                errors.push(FieldError {
                    reason: "FieldValueNotSupported",
                    field: "type".into(),
                    detail: format!("Unsupported value: {kind:?}: supported values: \"Normal\", \"Warning\""),
                });
            }
        }
        // pkg/apis/core/validation ValidateSecret: keys are config keys, 1 MiB in all.
        ("", "secrets") => {
            let mut size = 0;
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                size += value.as_str().map_or(0, |v| v.len() * 3 / 4);
                let valid = !key.is_empty()
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !valid {
                    errors.push(FieldError {
                        reason: "FieldValueInvalid",
                        field: format!("data[{key}]"),
                        detail: format!("Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
                    });
                }
            }
            if size > 1024 * 1024 {
                errors.push(FieldError {
                    reason: "FieldValueTooLong",
                    field: "data".into(),
                    detail: "Too long: may not be more than 1048576 bytes".into(),
                });
            }
        }
        _ => {}
    }
    errors
}
