//! An in-memory Kubernetes API server for tests and the simulation, built to refuse what a real
//! API server refuses.
//!
//! Every component gets its own [`kube::Client`] ([`ApiServer::client`]) over one store, so each
//! request is recorded by who made it (verb, group, resource, subresource, namespace — reads too).
//! What it models, with the upstream behaviour each part follows:
//! - server-side apply with field ownership (`managedFields`): a field a manager stops applying is
//!   removed unless another manager owns it; an explicit `null` in an applied configuration changes
//!   nothing; conflicts with other managers without `force`; list-maps merged by key
//!   (sigs.k8s.io/structured-merge-diff; see [`merge::EmptiedContainers`] for what is left of an
//!   emptied struct);
//! - CRD objects pruned, defaulted and validated against the CRD's openAPIV3Schema (required, types,
//!   enums, patterns, lengths, item counts, list-map and set uniqueness) and its CEL rules, with the
//!   API server's 422 field errors;
//! - status subresources (a main-resource write cannot change status, a status write cannot change
//!   anything else), `metadata.generation` on spec changes, optimistic concurrency (409), finalizers
//!   and `deletionTimestamp`, namespaces that must exist;
//! - list (label and field selectors, paging) and watch (resourceVersion, 410 Gone after
//!   compaction, objects leaving a selector delivered as DELETED), metadata-only responses
//!   (`as=PartialObjectMetadata`);
//! - Events (events.k8s.io/v1) validated as the API server does (required fields, 1 KiB note);
//! - admission hooks ([`ApiServer::add_admission`]) for policies such as a ValidatingAdmissionPolicy;
//! - injected faults (409, 500, lost responses).

pub mod fields;
mod http;
pub mod ledger;
pub mod merge;
pub mod selectors;
mod server;
pub mod shape;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

pub use http::{api_server_cpu_on_this_thread, in_api_server};
pub use ledger::{ApiFault, FaultRule, Ledger, RequestKey};
pub use merge::EmptiedContainers;
pub use server::ApiError;

/// Who sends requests through a client.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    /// Short name used in the ledger (`operator`, `agent`, `user`).
    pub component: String,
    /// The authenticated user name (`system:serviceaccount:ssis-system:ssis-agent`).
    pub user: String,
    /// The node a ServiceAccount token is bound to (`authentication.kubernetes.io/node-name`).
    pub node: Option<String>,
}

impl Identity {
    pub fn new(component: impl Into<String>, user: impl Into<String>) -> Self {
        Self { component: component.into(), user: user.into(), node: None }
    }

    pub fn on_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
}

/// A kind the server serves.
#[derive(Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// CRD kinds: `metadata.generation` counts changes outside metadata and status.
    pub generation: bool,
    /// The openAPIV3Schema of a CRD version.
    pub schema: Option<Value>,
    cel: Option<kube_cel::CompiledSchema>,
}

impl ResourceType {
    /// `apiVersion` of objects of this kind.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `plural.group` as the API server names a resource in messages (`hostconfigs.ssis.sqlops.io`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool, status: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource: status,
            generation: false,
            schema: None,
            cel: None,
        }
    }
}

/// An admission decision: `Err` refuses the request with that error.
pub type AdmissionHook = Arc<dyn Fn(&AdmissionRequest<'_>) -> Result<(), ApiError> + Send + Sync>;

/// What an admission hook sees of a write.
#[derive(Debug)]
pub struct AdmissionRequest<'a> {
    pub identity: &'a Identity,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'static str,
    pub resource: &'a ResourceType,
    /// `status` or empty.
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
}

/// Settings of a server.
#[derive(Clone, Debug)]
pub struct Options {
    /// What apply leaves of an emptied struct or list.
    pub emptied_containers: EmptiedContainers,
    /// Refuse objects in namespaces that do not exist, as a real server does.
    pub require_namespaces: bool,
    /// Watch events kept for watches that resume from a resourceVersion (older ones get 410 Gone).
    pub watch_history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { emptied_containers: EmptiedContainers::default(), require_namespaces: true, watch_history: 20_000 }
    }
}

/// The time source for timestamps the server writes.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// The server. Cloning shares the store.
#[derive(Clone)]
pub struct ApiServer {
    shared: Arc<server::Shared>,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new(Options::default())
    }
}

impl ApiServer {
    /// A server with the built-in kinds the project uses: Namespaces, Nodes, Secrets, ConfigMaps,
    /// Events (core and events.k8s.io), Leases and CustomResourceDefinitions.
    pub fn new(options: Options) -> Self {
        let server = Self { shared: Arc::new(server::Shared::new(options)) };
        for resource in [
            ResourceType::builtin("", "v1", "Namespace", "namespaces", false, true),
            ResourceType::builtin("", "v1", "Node", "nodes", false, true),
            ResourceType::builtin("", "v1", "Secret", "secrets", true, false),
            ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true, false),
            ResourceType::builtin("", "v1", "Event", "events", true, false),
            ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true, false),
            ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
            ResourceType::builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
            ),
        ] {
            server.shared.state().register(resource);
        }
        server
    }

    /// Serve a CRD's storage version (schema, CEL rules, scope, status subresource) and store the
    /// CRD object itself.
    pub fn register_crd(&self, crd: &CustomResourceDefinition) -> Result<(), String> {
        let spec = &crd.spec;
        let version = spec
            .versions
            .iter()
            .find(|v| v.storage)
            .ok_or_else(|| format!("CRD {}: no storage version", spec.names.plural))?;
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| e.to_string())?;
        let cel = schema.as_ref().map(kube_cel::compile_schema);
        if let Some(compiled) = &cel
            && compiled.has_errors()
        {
            let errors: Vec<String> = compiled.compilation_errors().iter().map(|e| e.to_string()).collect();
            return Err(format!("CRD {}: CEL rules do not compile: {}", spec.names.plural, errors.join("; ")));
        }
        self.shared.state().register(ResourceType {
            group: spec.group.clone(),
            version: version.name.clone(),
            kind: spec.names.kind.clone(),
            plural: spec.names.plural.clone(),
            namespaced: spec.scope == "Namespaced",
            status_subresource: version.subresources.as_ref().is_some_and(|s| s.status.is_some()),
            generation: true,
            schema,
            cel,
        });
        let mut object = serde_json::to_value(crd).map_err(|e| e.to_string())?;
        object["apiVersion"] = "apiextensions.k8s.io/v1".into();
        object["kind"] = "CustomResourceDefinition".into();
        self.seed(object).map(|_| ()).map_err(|e| e.to_string())
    }

    /// Store an object as a user would have created it (not recorded in the ledger).
    pub fn seed(&self, object: Value) -> Result<Value, ApiError> {
        let identity = Identity::new("seed", "system:admin");
        self.shared.seed(&identity, object)
    }

    /// A client whose requests are made as `identity`.
    pub fn client(&self, identity: Identity) -> kube::Client {
        http::client(self.shared.clone(), identity)
    }

    /// The recorded requests and pending faults.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.shared.ledger()
    }

    /// Fail the next requests matching the rule.
    pub fn inject(&self, rule: FaultRule) {
        self.shared.ledger().rules.push(rule);
    }

    /// Refuse writes with `hook` (runs after schema validation, before storing).
    pub fn add_admission(&self, hook: AdmissionHook) {
        self.shared.state().admission.push(hook);
    }

    /// Timestamps (creation, deletion, managedFields) come from `clock`.
    pub fn set_clock(&self, clock: Clock) {
        *self.shared.clock.lock().unwrap_or_else(|p| p.into_inner()) = clock;
    }

    /// The current object, as a GET would return it (not recorded).
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared.state().peek(group, plural, namespace, name)
    }

    /// Every object of a resource (not recorded).
    pub fn objects(&self, group: &str, plural: &str) -> Vec<Value> {
        self.shared.state().peek_all(group, plural)
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.state().rv
    }

    /// Object counts by `plural.group`.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.shared.state().counts()
    }
}
