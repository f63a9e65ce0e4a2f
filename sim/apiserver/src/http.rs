//! The HTTP side: requests from a [`kube::Client`] routed to the verbs, answered with JSON
//! documents, `Status` errors or streamed watch events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};

use crate::ledger::{ApiFault, RequestKey};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{ApiError, Event, Shared, State, Write};
use crate::{Identity, ResourceType};

type Body = UnsyncBoxBody<Bytes, Infallible>;

pub(crate) fn client(shared: Arc<Shared>, identity: Identity) -> kube::Client {
    let service = tower::service_fn(move |request: Request<kube::client::Body>| {
        let shared = shared.clone();
        let identity = identity.clone();
        ServedByApiServer(Box::pin(serve(shared, identity, request)))
    });
    kube::Client::new(service, "default")
}

thread_local! {
    static IN_API_SERVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static API_SERVER_CPU_NANOS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// CPU time of the current thread, in nanoseconds (0 where unsupported).
fn thread_cpu_nanos() -> u64 {
    #[cfg(unix)]
    {
        let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `time` is a valid, writable timespec for the duration of the call.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) } == 0;
        if ok {
            return (time.tv_sec as u64) * 1_000_000_000 + time.tv_nsec as u64;
        }
    }
    0
}

/// CPU time the current thread spent serving API requests (including streaming watch events to
/// clients polled on this thread), so a benchmark can subtract it from the thread's total.
pub fn api_server_cpu_on_this_thread() -> std::time::Duration {
    std::time::Duration::from_nanos(API_SERVER_CPU_NANOS.with(std::cell::Cell::get))
}

/// Run `poll` as the API server's side of a request: [`in_api_server`] is set and its CPU time
/// counted (only the outermost poll counts, so nested ones are not counted twice).
fn served<T>(poll: impl FnOnce() -> T) -> T {
    let outer = IN_API_SERVER.replace(true);
    let started = if outer { 0 } else { thread_cpu_nanos() };
    let result = poll();
    if !outer {
        let spent = thread_cpu_nanos().saturating_sub(started);
        API_SERVER_CPU_NANOS.with(|total| total.set(total.get() + spent));
    }
    IN_API_SERVER.set(outer);
    result
}

/// Whether the current thread is doing the API server's side of a request (a benchmark's
/// allocator uses this to tell the operator's memory from the server's).
pub fn in_api_server() -> bool {
    IN_API_SERVER.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// Polls the server's side of a request with [`in_api_server`] set.
struct ServedByApiServer<F>(F);

impl<F: std::future::Future + Unpin> std::future::Future for ServedByApiServer<F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        served(|| std::pin::Pin::new(&mut self.0).poll(cx))
    }
}

impl<F: futures::Stream + Unpin> futures::Stream for ServedByApiServer<F> {
    type Item = F::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<F::Item>> {
        let outer = IN_API_SERVER.replace(true);
        let result = std::pin::Pin::new(&mut self.0).poll_next(cx);
        IN_API_SERVER.set(outer);
        result
    }
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string().into_bytes()));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.to_status())
}

fn timeout() -> kube::Error {
    kube::Error::Service(Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "injected timeout: no response from the API server",
    )))
}

/// A parsed request path.
struct Target {
    resource: Arc<ResourceType>,
    namespace: String,
    name: String,
    subresource: String,
}

fn parse_target(state: &State, path: &str) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ));
        }
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, rest @ ..] if *plural != "status" && *plural != "finalize" => {
            (namespace.to_string(), [&[*plural][..], rest].concat())
        }
        other => (String::new(), other.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, "", ""),
        [plural, name] => (*plural, *name, ""),
        [plural, name, subresource] => (*plural, *name, *subresource),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ));
        }
    };
    let resource = state.resource(group, plural).ok_or_else(|| {
        ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    })?;
    let served = subresource.is_empty() || (subresource == "status" && resource.status_subresource);
    if !served {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        ));
    }
    if !resource.namespaced && !namespace.is_empty() {
        return Err(ApiError::new(404, "NotFound", format!("{} is not namespaced", resource.plural)));
    }
    Ok(Target { resource, namespace, name: name.to_string(), subresource: subresource.to_string() })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("zz"), 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(request: &Request<kube::client::Body>) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn param<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The verb of a request, as RBAC names it.
fn verb(method: &Method, target: &Target, watch: bool) -> &'static str {
    match (method, target.name.is_empty()) {
        (&Method::GET, false) => "get",
        (&Method::GET, true) if watch => "watch",
        (&Method::GET, true) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "delete",
        (&Method::DELETE, true) => "deletecollection",
        _ => "unknown",
    }
}

/// Which metadata-only form the client accepts (`as=PartialObjectMetadata[List]`).
fn metadata_only(request: &Request<kube::client::Body>) -> bool {
    request
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"))
}

fn partial(object: &Value) -> Value {
    json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"] })
}

async fn serve(
    shared: Arc<Shared>,
    identity: Identity,
    request: Request<kube::client::Body>,
) -> Result<Response<Body>, kube::Error> {
    let query = query(&request);
    let watch = param(&query, "watch").is_some_and(|w| w == "true" || w == "1");
    let target = {
        let state = shared.state();
        parse_target(&state, request.uri().path())
    };
    let target = match target {
        Ok(target) => target,
        Err(error) => return Ok(error_response(&error)),
    };
    let verb = verb(request.method(), &target, watch);
    let key = RequestKey {
        component: identity.component.clone(),
        verb: verb.into(),
        group: target.resource.group.clone(),
        resource: target.resource.plural.clone(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
    };
    let fault = shared.ledger().take_fault(&identity.component, key.is_write(), &key.resource_path());
    match fault {
        Some(ApiFault::TimeoutBeforeApply) => return Err(timeout()),
        Some(ApiFault::Conflict) => {
            *shared.ledger().requests.entry(key).or_default() += 1;
            return Ok(error_response(&ApiError::new(409, "Conflict", "injected conflict")));
        }
        Some(ApiFault::ServerError) => {
            *shared.ledger().requests.entry(key).or_default() += 1;
            return Ok(error_response(&ApiError::new(500, "InternalError", "injected server error")));
        }
        _ => {}
    }
    let metadata_only = metadata_only(&request);
    let content_type =
        request.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let method = request.method().clone();
    let body = request.into_body().collect_bytes().await?;
    let outcome = dispatch(&shared, &identity, &target, &method, verb, &query, &content_type, &body, metadata_only);
    let mut refused = None;
    let response = match outcome {
        Ok(response) => response,
        Err(error) => {
            if matches!(error.code, 400 | 403 | 422) {
                refused = Some(error.message.clone());
            }
            error_response(&error)
        }
    };
    {
        let mut ledger = shared.ledger();
        if let Some(message) = refused {
            ledger.refused.push((key.clone(), message));
        }
        *ledger.requests.entry(key.clone()).or_default() += 1;
        if key.is_write() && response.status().is_success() {
            *ledger.writes.entry(key).or_default() += 1;
        }
    }
    if fault == Some(ApiFault::TimeoutAfterApply) {
        return Err(timeout());
    }
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    shared: &Arc<Shared>,
    identity: &Identity,
    target: &Target,
    method: &Method,
    verb: &str,
    query: &[(String, String)],
    content_type: &str,
    body: &[u8],
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let resource = &target.resource;
    let labels = LabelSelector::parse(param(query, "labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::new(400, "BadRequest", e))?;
    let fields = FieldSelector::parse(param(query, "fieldSelector").unwrap_or_default())
        .map_err(|e| ApiError::new(400, "BadRequest", e))?;
    let render = |object: Value| if metadata_only { partial(&object) } else { object };
    let write = Write {
        identity,
        resource: resource.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        subresource: target.subresource.clone(),
        field_manager: param(query, "fieldManager").map(String::from),
        force: param(query, "force") == Some("true"),
    };
    let parse = |body: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("the request body is not JSON: {e}")))
    };
    match verb {
        "get" => {
            let object = shared.state().get(resource, &target.namespace, &target.name)?;
            Ok(json_response(200, &render(object)))
        }
        "list" => {
            let limit = param(query, "limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
            let after = param(query, "continue").filter(|c| !c.is_empty());
            let state = shared.state();
            let (items, next) = state.list(resource, &target.namespace, &labels, &fields, limit, after);
            let items: Vec<Value> = items.into_iter().map(render).collect();
            let (api_version, kind) = if metadata_only {
                ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
            } else {
                (resource.api_version(), format!("{}List", resource.kind))
            };
            let mut metadata = json!({ "resourceVersion": state.rv.to_string() });
            if let Some(next) = next {
                metadata["continue"] = next.into();
            }
            Ok(json_response(
                200,
                &json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items }),
            ))
        }
        "watch" => {
            let from = param(query, "resourceVersion").and_then(|rv| rv.parse::<u64>().ok()).filter(|rv| *rv > 0);
            let timeout = param(query, "timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
            Ok(watch_response(
                shared.clone(),
                target,
                labels,
                fields,
                from,
                metadata_only,
                Duration::from_secs(timeout),
            ))
        }
        "create" => {
            let object = parse(body)?;
            let created = shared.mutate(|state, now| state.create(&write, object, now, false))?;
            Ok(json_response(201, &created))
        }
        "update" => {
            let object = parse(body)?;
            let updated = shared.mutate(|state, now| state.update(&write, object, now))?;
            Ok(json_response(200, &updated))
        }
        "patch" if content_type.starts_with("application/apply-patch") => {
            let config = parse(body)?;
            let applied = shared.mutate(|state, now| state.apply(&write, config, now))?;
            Ok(json_response(200, &applied))
        }
        "patch" => {
            let patched = shared.mutate(|state, now| state.patch(&write, content_type, body, now))?;
            Ok(json_response(200, &patched))
        }
        "delete" => {
            let options = if body.is_empty() { json!({}) } else { parse(body)? };
            match shared.mutate(|state, now| state.delete(&write, &options, now))? {
                Some(object) => Ok(json_response(200, &object)),
                None => Ok(json_response(
                    200,
                    &json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": { "name": target.name, "group": resource.group, "kind": resource.plural },
                    }),
                )),
            }
        }
        _ => {
            let _ = method;
            Err(ApiError::new(405, "MethodNotAllowed", format!("{verb} is not supported on {}", resource.plural)))
        }
    }
}

/// What one stored event means to a watch with these filters (objects entering or leaving a
/// label selector are delivered as ADDED / DELETED, as the API server's watch cache does).
fn watch_event(event: &Event, labels: &LabelSelector, fields: &FieldSelector, metadata_only: bool) -> Option<Value> {
    let matches = |object: &Value| labels.matches(object) && fields.matches(object);
    let now = matches(&event.object);
    let before = event.previous.as_ref().is_some_and(|p| matches(p));
    let kind = match event.kind {
        "ADDED" if now => "ADDED",
        "MODIFIED" if now && before => "MODIFIED",
        "MODIFIED" if now => "ADDED",
        "MODIFIED" if before => "DELETED",
        "DELETED" if now || before => "DELETED",
        _ => return None,
    };
    let object = if metadata_only { partial(&event.object) } else { (*event.object).clone() };
    Some(json!({ "type": kind, "object": object }))
}

fn watch_response(
    shared: Arc<Shared>,
    target: &Target,
    labels: LabelSelector,
    fields: FieldSelector,
    from: Option<u64>,
    metadata_only: bool,
    timeout: Duration,
) -> Response<Body> {
    let resource = target.resource.clone();
    let namespace = target.namespace.clone();
    let mut pending = VecDeque::new();
    let cursor;
    {
        let state = shared.state();
        match from {
            Some(from) if from < state.oldest_watchable() => {
                let gone = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {from} ({})", state.oldest_watchable()),
                );
                pending.push_back(json!({ "type": "ERROR", "object": gone.to_status() }));
                cursor = u64::MAX;
            }
            Some(from) => cursor = from,
            None => {
                // No resourceVersion: the current state as ADDED events first.
                let (items, _) = state.list(&resource, &namespace, &labels, &fields, None, None);
                for object in items {
                    let object = if metadata_only { partial(&object) } else { object };
                    pending.push_back(json!({ "type": "ADDED", "object": object }));
                }
                cursor = state.rv;
            }
        }
    }
    let changed = shared.changed.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    struct Watch {
        shared: Arc<Shared>,
        cursor: u64,
        pending: VecDeque<Value>,
        changed: tokio::sync::watch::Receiver<u64>,
    }
    let watch = Watch { shared, cursor, pending, changed };
    let stream = futures::stream::unfold(watch, move |mut watch| {
        let resource = resource.clone();
        let namespace = namespace.clone();
        let labels = labels.clone();
        let fields = fields.clone();
        async move {
            loop {
                if let Some(event) = watch.pending.pop_front() {
                    let mut line = event.to_string().into_bytes();
                    line.push(b'\n');
                    return Some((Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(line))), watch));
                }
                if watch.cursor == u64::MAX {
                    return None;
                }
                watch.changed.borrow_and_update();
                {
                    let state = watch.shared.state();
                    if watch.cursor < state.oldest_watchable() {
                        let gone = ApiError::new(410, "Expired", "too old resource version: the watch fell behind");
                        watch.pending.push_back(json!({ "type": "ERROR", "object": gone.to_status() }));
                        watch.cursor = u64::MAX;
                        continue;
                    }
                    let start = state.events.partition_point(|e| e.rv <= watch.cursor);
                    for event in state.events.range(start..) {
                        if event.group == resource.group
                            && event.plural == resource.plural
                            && (namespace.is_empty() || event.namespace == namespace)
                            && let Some(line) = watch_event(event, &labels, &fields, metadata_only)
                        {
                            watch.pending.push_back(line);
                        }
                    }
                    watch.cursor = state.rv;
                }
                if !watch.pending.is_empty() {
                    continue;
                }
                tokio::select! {
                    result = watch.changed.changed() => {
                        if result.is_err() {
                            return None;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => return None,
                }
            }
        }
    });
    let mut response = Response::new(StreamBody::new(ServedByApiServer(Box::pin(stream))).boxed_unsync());
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
