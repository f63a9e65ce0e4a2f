//! The in-memory Kubernetes API of the simulated world: kube-fake-client with the four kinds
//! registered (status subresources), plus Nodes, Secrets, Events and Leases. Every component gets
//! its own `kube::Client` over the same store, so each write is counted by who made it, verb and
//! resource; faults (409, 500, lost responses) are injected on the way in.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use kube_fake_client::ClientBuilder;
use ssis_crds::{HostConfig, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup};

/// Namespace under which the cluster-scoped kinds are stored: kube-fake-client 0.3 registers every
/// custom kind as namespaced, so cluster-scoped paths are rewritten into this namespace.
pub const CLUSTER_SCOPE_NAMESPACE: &str = "_cluster";

/// Plurals of this API group's cluster-scoped kinds.
const CLUSTER_SCOPED_PLURALS: &[&str] = &["hostconfigs"];

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The operator's `reconcile_world`.
    Operator,
    /// A node agent writing its HostConfig status.
    Agent,
    /// The harness acting as a user (`kubectl apply`, `kubectl label`, `kubectl delete`).
    User,
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Component::Operator => "operator",
            Component::Agent => "agent",
            Component::User => "user",
        })
    }
}

/// One counted write: component, verb (`create`, `patch`, `update`, `delete`) and resource
/// (plural, with `/status` for the status subresource).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteKey {
    pub component: Component,
    pub verb: String,
    pub resource: String,
}

/// A fault injected into matching requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiFault {
    /// 409 Conflict, as for a stale resourceVersion.
    Conflict,
    /// 500 Internal Server Error.
    ServerError,
    /// The request reached the server and was applied, but the response never arrived.
    TimeoutAfterApply,
    /// The request never reached the server.
    TimeoutBeforeApply,
}

/// Which requests a fault applies to, and how many more times.
#[derive(Clone, Debug)]
pub struct FaultRule {
    pub fault: ApiFault,
    /// Only requests of this component (`None`: any).
    pub component: Option<Component>,
    /// Only this resource, e.g. `hostconfigs` or `scaleoutworkers/status` (`None`: any).
    pub resource: Option<String>,
    /// Only writes (reads pass untouched).
    pub writes_only: bool,
    /// Matching requests still to fail.
    pub remaining: u32,
}

/// Counters and pending faults shared by every client of the world.
#[derive(Debug, Default)]
pub struct ApiLedger {
    /// Successful writes.
    pub writes: BTreeMap<WriteKey, u64>,
    /// Every request that reached the server.
    pub requests: u64,
    /// Faults injected so far.
    pub faults_injected: u64,
    pub rules: Vec<FaultRule>,
}

impl ApiLedger {
    /// Total successful writes of one component.
    pub fn writes_by(&self, component: Component) -> u64 {
        self.writes.iter().filter(|(k, _)| k.component == component).map(|(_, n)| n).sum()
    }
}

/// An object a user deleted while it still had finalizers: (resource plural, namespace, name).
type DeletingKey = (String, String, String);

/// The fake API server plus the ledger.
#[derive(Clone)]
pub struct SimulatedApi {
    raw: kube::Client,
    ledger: Arc<Mutex<ApiLedger>>,
    /// kube-fake-client deletes at once and cannot store a deletionTimestamp, so objects deleted
    /// with finalizers are kept here and shown with their deletionTimestamp until the last
    /// finalizer is removed, as a real API server does.
    deleting: Arc<Mutex<BTreeMap<DeletingKey, String>>>,
}

/// A builder with every kind the world uses.
pub fn fake_builder(objects: Vec<serde_json::Value>) -> ClientBuilder {
    ClientBuilder::new()
        .with_resource::<SsisdbAvailabilityGroup>()
        .with_status_subresource::<SsisdbAvailabilityGroup>()
        .with_resource::<ScaleOutMasterGroup>()
        .with_status_subresource::<ScaleOutMasterGroup>()
        .with_resource::<ScaleOutWorker>()
        .with_status_subresource::<ScaleOutWorker>()
        .with_resource::<HostConfig>()
        .with_status_subresource::<HostConfig>()
        .with_runtime_objects(objects)
}

impl SimulatedApi {
    /// An API server holding `objects` (cluster-scoped custom objects already placed in
    /// [`CLUSTER_SCOPE_NAMESPACE`]).
    pub async fn new(objects: Vec<serde_json::Value>) -> Result<Self, String> {
        let raw = fake_builder(objects).build().await.map_err(|e| format!("building the in-memory API: {e}"))?;
        Ok(Self { raw, ledger: Arc::new(Mutex::new(ApiLedger::default())), deleting: Default::default() })
    }

    pub fn ledger(&self) -> MutexGuard<'_, ApiLedger> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fail the next `count` requests matching the rule.
    pub fn inject(&self, rule: FaultRule) {
        self.ledger().rules.push(rule);
    }

    /// Mark a namespaced object with finalizers as deleted at `at` (RFC 3339): it is shown with
    /// that deletionTimestamp and removed once its last finalizer goes.
    pub fn mark_deleting(&self, resource: &str, namespace: &str, name: &str, at: String) {
        let mut deleting = self.deleting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        deleting.insert((resource.to_string(), namespace.to_string(), name.to_string()), at);
    }

    /// A client for `component`: cluster-scoped paths rewritten, writes counted, faults injected.
    pub fn client(&self, component: Component) -> kube::Client {
        let raw = self.raw.clone();
        let ledger = self.ledger.clone();
        let deleting = self.deleting.clone();
        let service = tower::service_fn(move |mut request: http::Request<kube::client::Body>| {
            let raw = raw.clone();
            let ledger = ledger.clone();
            let deleting = deleting.clone();
            async move {
                if let Some(path) = rewrite_cluster_path(request.uri().path()) {
                    let uri = match request.uri().query() {
                        Some(query) => format!("{path}?{query}"),
                        None => path,
                    };
                    *request.uri_mut() = uri.parse().map_err(|e| kube::Error::Service(Box::new(e)))?;
                }
                let verb = write_verb(request.method());
                let resource = resource_of(request.uri().path());
                let fault = take_fault(&ledger, component, verb.is_some(), &resource);
                match fault {
                    Some(ApiFault::Conflict) => return Ok(status_response(409, "Conflict", "injected conflict")),
                    Some(ApiFault::ServerError) => {
                        return Ok(status_response(500, "InternalError", "injected server error"));
                    }
                    Some(ApiFault::TimeoutBeforeApply) => return Err(timeout()),
                    _ => {}
                }
                let method = request.method().clone();
                let watch = request.uri().query().is_some_and(|q| q.contains("watch=true"));
                let target = object_of(request.uri().path());
                let response = match list_by_name(&request) {
                    Some(name) => ServedByApiServer(Box::pin(list_one(&raw, request, name))).await?,
                    None => ServedByApiServer(Box::pin(raw.send(request))).await?,
                };
                let ok = response.status().is_success();
                let marked = !deleting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).is_empty();
                let response = if ok && marked && !watch {
                    ServedByApiServer(Box::pin(finish_deletions(&raw, &deleting, &method, target, response))).await?
                } else {
                    response
                };
                {
                    let mut ledger = ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    ledger.requests += 1;
                    if let (Some(verb), true) = (verb, ok) {
                        *ledger.writes.entry(WriteKey { component, verb: verb.into(), resource }).or_default() += 1;
                    }
                }
                if fault == Some(ApiFault::TimeoutAfterApply) {
                    return Err(timeout());
                }
                Ok(response)
            }
        });
        kube::Client::new(service, "default")
    }
}

thread_local! {
    static IN_API_SERVER: Cell<bool> = const { Cell::new(false) };
}

/// The current thread is running the in-memory API server's side of a request. A benchmark's
/// allocator uses this to tell the operator's memory from the simulated API server's.
pub fn in_api_server() -> bool {
    IN_API_SERVER.try_with(Cell::get).unwrap_or(false)
}

/// Polls the API server's side of a request with [`in_api_server`] set.
struct ServedByApiServer<F>(F);

impl<F: Future + Unpin> Future for ServedByApiServer<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let outer = IN_API_SERVER.replace(true);
        let result = Pin::new(&mut self.0).poll(cx);
        IN_API_SERVER.set(outer);
        result
    }
}

/// The name of a list request whose only field selector is `metadata.name=<name>` (what every
/// agent pass sends), not a watch.
fn list_by_name(request: &http::Request<kube::client::Body>) -> Option<String> {
    if request.method() != http::Method::GET {
        return None;
    }
    let query = request.uri().query()?;
    if query.split('&').any(|pair| pair == "watch=true") {
        return None;
    }
    let selector = query.split('&').find_map(|pair| pair.strip_prefix("fieldSelector="))?;
    // Object names are DNS labels: only the `=` of the selector is percent-encoded.
    let name = selector.replace("%3D", "=").replace("%3d", "=").strip_prefix("metadata.name=")?.to_string();
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(name)
}

/// Answer a list by name with a GET of that object, as a list of zero or one items.
/// kube-fake-client 0.3 answers any list by deserialising every stored object before filtering,
/// which made each round of a 1,100-node world quadratic; the answer is the same.
async fn list_one(
    raw: &kube::Client,
    request: http::Request<kube::client::Body>,
    name: String,
) -> Result<http::Response<kube::client::Body>, kube::Error> {
    let path = format!("{}/{name}", request.uri().path().trim_end_matches('/'));
    let get = http::Request::get(path).body(kube::client::Body::empty()).map_err(kube::Error::HttpError)?;
    let response = raw.send(get).await?;
    let status = response.status();
    if status != http::StatusCode::OK && status != http::StatusCode::NOT_FOUND {
        return Ok(response);
    }
    let items = if status == http::StatusCode::OK {
        let bytes = response.into_body().collect_bytes().await?;
        vec![serde_json::from_slice::<serde_json::Value>(&bytes).map_err(kube::Error::SerdeError)?]
    } else {
        vec![]
    };
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "metadata": {}, "items": items });
    Ok(http::Response::new(kube::client::Body::from(list.to_string().into_bytes())))
}

/// (resource, namespace, name) of a namespaced object path; name empty for a collection.
fn object_of(path: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let start = if parts.first() == Some(&"apis") { 3 } else { 2 };
    match parts.get(start..).unwrap_or_default() {
        ["namespaces", namespace, resource] => Some((resource.to_string(), namespace.to_string(), String::new())),
        ["namespaces", namespace, resource, name] => {
            Some((resource.to_string(), namespace.to_string(), name.to_string()))
        }
        [resource] => Some((resource.to_string(), String::new(), String::new())),
        _ => None,
    }
}

/// Show marked objects with their deletionTimestamp; delete one for real when a write left it
/// without finalizers.
async fn finish_deletions(
    raw: &kube::Client,
    deleting: &Mutex<BTreeMap<DeletingKey, String>>,
    method: &http::Method,
    target: Option<(String, String, String)>,
    response: http::Response<kube::client::Body>,
) -> Result<http::Response<kube::client::Body>, kube::Error> {
    let Some((resource, namespace, name)) = target else { return Ok(response) };
    let (parts, body) = response.into_parts();
    let bytes = body.collect_bytes().await?;
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(http::Response::from_parts(parts, kube::client::Body::from(bytes)));
    };
    let marked = deleting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    let mut finished = None;
    let mut mark = |object: &mut serde_json::Value| {
        let object_namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let object_name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let key = (resource.clone(), object_namespace, object_name);
        if let Some(at) = marked.get(&key) {
            object["metadata"]["deletionTimestamp"] = serde_json::json!(at);
            let finalizers = object["metadata"]["finalizers"].as_array().map(Vec::len).unwrap_or(0);
            if finalizers == 0 && *method != http::Method::GET {
                finished = Some(key);
            }
        }
    };
    if name.is_empty() && *method == http::Method::GET {
        for item in value["items"].as_array_mut().into_iter().flatten() {
            mark(item);
        }
    } else if !name.is_empty() && !namespace.is_empty() {
        mark(&mut value);
    }
    if let Some(key) = finished {
        deleting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&key);
        let path = raw_object_path(&value, &key);
        let request = http::Request::delete(path)
            .body(kube::client::Body::empty())
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
        raw.send(request).await?;
    }
    Ok(http::Response::from_parts(parts, kube::client::Body::from(value.to_string().into_bytes())))
}

/// The path of a namespaced object from its apiVersion.
fn raw_object_path(object: &serde_json::Value, (resource, namespace, name): &DeletingKey) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let prefix = if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
    format!("{prefix}/namespaces/{namespace}/{resource}/{name}")
}

fn timeout() -> kube::Error {
    kube::Error::Service(Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "injected timeout: no response from the API server",
    )))
}

fn take_fault(ledger: &Mutex<ApiLedger>, component: Component, write: bool, resource: &str) -> Option<ApiFault> {
    let mut ledger = ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let rule = ledger.rules.iter_mut().find(|rule| {
        rule.remaining > 0
            && rule.component.is_none_or(|c| c == component)
            && rule.resource.as_deref().is_none_or(|r| r == resource)
            && (write || !rule.writes_only)
    })?;
    rule.remaining -= 1;
    let fault = rule.fault;
    ledger.rules.retain(|r| r.remaining > 0);
    ledger.faults_injected += 1;
    Some(fault)
}

fn status_response(code: u16, reason: &str, message: &str) -> http::Response<kube::client::Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    let mut response = http::Response::new(kube::client::Body::from(body.to_string().into_bytes()));
    *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

fn write_verb(method: &http::Method) -> Option<&'static str> {
    match *method {
        http::Method::POST => Some("create"),
        http::Method::PUT => Some("update"),
        http::Method::PATCH => Some("patch"),
        http::Method::DELETE => Some("delete"),
        _ => None,
    }
}

/// `secrets`, `hostconfigs/status`, `nodes`, ... from a request path.
fn resource_of(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // ["api", v] or ["apis", group, v], then optional ["namespaces", ns], then plural, name, sub.
    let start = if parts.first() == Some(&"apis") { 3 } else { 2 };
    let rest = parts.get(start..).unwrap_or_default();
    let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 { &rest[2..] } else { rest };
    match rest {
        [plural, _, sub, ..] => format!("{plural}/{sub}"),
        [plural, ..] => plural.to_string(),
        [] => "namespaces".to_string(),
    }
}

/// The path of a request for one of this group's cluster-scoped kinds, moved into
/// [`CLUSTER_SCOPE_NAMESPACE`]; `None` for every other path.
pub fn rewrite_cluster_path(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    // ["", "apis", group, version, plural, ...]
    if parts.len() >= 5 && parts[1] == "apis" && CLUSTER_SCOPED_PLURALS.contains(&parts[4]) {
        let mut rewritten = parts[..4].to_vec();
        rewritten.extend(["namespaces", CLUSTER_SCOPE_NAMESPACE]);
        rewritten.extend(&parts[4..]);
        return Some(rewritten.join("/"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> http::Request<kube::client::Body> {
        http::Request::get(uri).body(kube::client::Body::empty()).expect("request")
    }

    #[test]
    fn only_a_plain_list_by_one_name_is_answered_by_a_get() {
        let base = "/apis/ssis.sqlops.io/v1alpha1/namespaces/_cluster/hostconfigs";
        assert_eq!(list_by_name(&get(&format!("{base}?fieldSelector=metadata.name%3Dwin-1"))), Some("win-1".into()));
        assert_eq!(list_by_name(&get(&format!("{base}?fieldSelector=metadata.name%3Dwin-1&watch=true"))), None);
        assert_eq!(list_by_name(&get(&format!("{base}?fieldSelector=metadata.name%3Da%2Cspec.x%3Db"))), None);
        assert_eq!(list_by_name(&get(&format!("{base}?fieldSelector=metadata.namespace%3Dx"))), None);
        assert_eq!(list_by_name(&get(base)), None);
        let delete = http::Request::delete(format!("{base}?fieldSelector=metadata.name%3Dwin-1"))
            .body(kube::client::Body::empty())
            .expect("request");
        assert_eq!(list_by_name(&delete), None);
    }

    #[test]
    fn resources_are_named_by_plural_and_subresource() {
        assert_eq!(resource_of("/api/v1/namespaces/ssis/secrets/a"), "secrets");
        assert_eq!(resource_of("/api/v1/nodes"), "nodes");
        assert_eq!(
            resource_of("/apis/ssis.sqlops.io/v1alpha1/namespaces/_cluster/hostconfigs/n/status"),
            "hostconfigs/status"
        );
        assert_eq!(resource_of("/apis/ssis.sqlops.io/v1alpha1/namespaces/ssis/scaleoutworkers"), "scaleoutworkers");
        assert_eq!(
            rewrite_cluster_path("/apis/ssis.sqlops.io/v1alpha1/hostconfigs/n").as_deref(),
            Some("/apis/ssis.sqlops.io/v1alpha1/namespaces/_cluster/hostconfigs/n")
        );
        assert_eq!(rewrite_cluster_path("/api/v1/nodes/n"), None);
    }
}
