//! Per-host figures of the agent and its `/metrics`, `/healthz`, `/readyz` endpoints.
//!
//! Recorded once per pass ([`AgentMetrics::record_pass`] and friends). Failure categories:
//! - `transient`: the pass could not talk to the API server (read the HostConfig or a Secret,
//!   write the status); retried with backoff;
//! - `user`: items refused by the safety rules or material checks; nothing changes until the spec
//!   does;
//! - `host`: steps that failed on the host (files, stores, services, cluster); retried.
//!
//! `/healthz` fails when no pass completed within the liveness bound, so a wedged loop (or an API
//! server unreachable for that long) gets the agent restarted; `/readyz` succeeds once a pass
//! completed since start. Labels name item kinds and items (never Secret material).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use ssis_crds::HostConfigStatus;

use crate::engine::ApplyReport;

/// Default bound of `/healthz`: above the longest a single host call may block a pass (PowerShell
/// is killed after 180 s, service waits end after 30 s each) plus the 60 s backoff cap.
pub const DEFAULT_LIVENESS_BOUND: Duration = Duration::from_secs(600);

type Labels = Vec<(&'static str, String)>;

/// Why a pass did not complete cleanly (label `category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCategory {
    Transient,
    User,
    Host,
}

impl FailureCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::User => "user",
            Self::Host => "host",
        }
    }
}

/// How a pass ended (label `result` of `ssis_agent_passes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassResult {
    /// Nothing to write: the host matched.
    Converged,
    /// Host writes made, no failure.
    Changed,
    /// Some item failed or was refused.
    Failed,
    /// No HostConfig is named after this node (yet).
    NoHostConfig,
    /// The pass could not run or its status could not be written.
    Error,
}

impl PassResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::Changed => "changed",
            Self::Failed => "failed",
            Self::NoHostConfig => "no_host_config",
            Self::Error => "error",
        }
    }
}

#[derive(Debug)]
struct Liveness {
    started: Instant,
    last_completed: Option<Instant>,
}

/// The agent's metrics, in a registry of their own (prefix `ssis_agent`).
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    passes: Family<Labels, Counter>,
    writes: Family<Labels, Counter>,
    drift_repairs: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    failed_items: Gauge,
    refused_items: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    liveness: Mutex<Liveness>,
    bound: Duration,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new(DEFAULT_LIVENESS_BOUND, Instant::now())
    }
}

impl AgentMetrics {
    /// Metrics whose `/healthz` fails when no pass completed for `bound` (counted from `started`
    /// until the first pass).
    pub fn new(bound: Duration, started: Instant) -> Self {
        let mut registry = Registry::with_prefix("ssis_agent");
        let passes = Family::<Labels, Counter>::default();
        let writes = Family::<Labels, Counter>::default();
        let drift_repairs = Family::<Labels, Counter>::default();
        let failures = Family::<Labels, Counter>::default();
        let failed_items = Gauge::default();
        let refused_items = Gauge::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register("passes", "Reconcile passes by result", passes.clone());
        registry.register("writes", "Host writes by action kind", writes.clone());
        registry.register(
            "drift_repairs",
            "Items repaired after someone changed them on the host, by item kind and item",
            drift_repairs.clone(),
        );
        registry.register(
            "failures",
            "Passes that ended with a failure, by category (transient: API; user: refused items; host: failed steps)",
            failures.clone(),
        );
        registry.register("failed_items", "Items in state Failed after the last pass", failed_items.clone());
        registry.register("refused_items", "Items in state Refused after the last pass", refused_items.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "When a pass last completed (Unix seconds; 0 before the first)",
            last_success.clone(),
        );
        registry.register(
            "build",
            "Agent version",
            Info::new(vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
        );
        // Zero series for every result and category, so `increase()` sees the first one.
        for result in [
            PassResult::Converged,
            PassResult::Changed,
            PassResult::Failed,
            PassResult::NoHostConfig,
            PassResult::Error,
        ] {
            let _ = passes.get_or_create(&vec![("result", result.as_str().to_string())]);
        }
        for category in [FailureCategory::Transient, FailureCategory::User, FailureCategory::Host] {
            let _ = failures.get_or_create(&vec![("category", category.as_str().to_string())]);
        }
        Self {
            registry,
            passes,
            writes,
            drift_repairs,
            failures,
            failed_items,
            refused_items,
            last_success,
            liveness: Mutex::new(Liveness { started, last_completed: None }),
            bound,
        }
    }

    fn pass(&self, result: PassResult) {
        self.passes.get_or_create(&vec![("result", result.as_str().to_string())]).inc();
    }

    fn failure(&self, category: FailureCategory) {
        self.failures.get_or_create(&vec![("category", category.as_str().to_string())]).inc();
    }

    fn completed(&self, now: jiff::Timestamp, at: Instant) {
        self.last_success.set(now.as_millisecond() as f64 / 1000.0);
        let mut liveness = self.liveness.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        liveness.last_completed = Some(at);
    }

    /// A pass that ran `reconcile_host`: `status` as computed, `report` of its writes,
    /// `status_written_ok` false when the status write failed.
    pub fn record_pass(
        &self,
        status: &HostConfigStatus,
        report: &ApplyReport,
        status_write_ok: bool,
        now: jiff::Timestamp,
        at: Instant,
    ) {
        for (kind, count) in &report.writes {
            self.writes.get_or_create(&vec![("kind", format!("{kind:?}"))]).inc_by(u64::from(*count));
        }
        // Every item gets its series at zero, so `increase()` also sees an item's first repair.
        for item in &status.items {
            let _ = self
                .drift_repairs
                .get_or_create(&vec![("kind", format!("{:?}", item.kind)), ("item", item.name.clone())]);
        }
        if report.drift_repaired {
            for item in &report.changed_items {
                let kind = status.items.iter().find(|i| &i.name == item).map(|i| format!("{:?}", i.kind));
                let labels = vec![("kind", kind.unwrap_or_else(|| "Unknown".into())), ("item", item.clone())];
                self.drift_repairs.get_or_create(&labels).inc();
            }
        }
        let count = |state: ssis_crds::ItemState| status.items.iter().filter(|i| i.state == state).count() as i64;
        let (failed, refused) = (count(ssis_crds::ItemState::Failed), count(ssis_crds::ItemState::Refused));
        self.failed_items.set(failed);
        self.refused_items.set(refused);
        if failed > 0 {
            self.failure(FailureCategory::Host);
        }
        if refused > 0 {
            self.failure(FailureCategory::User);
        }
        if !status_write_ok {
            self.failure(FailureCategory::Transient);
            self.pass(PassResult::Error);
            return;
        }
        self.pass(if failed > 0 || refused > 0 {
            PassResult::Failed
        } else if report.total_writes() > 0 {
            PassResult::Changed
        } else {
            PassResult::Converged
        });
        self.completed(now, at);
    }

    /// A pass that found no HostConfig for this node: the loop works, nothing to do.
    pub fn record_no_host_config(&self, now: jiff::Timestamp, at: Instant) {
        self.pass(PassResult::NoHostConfig);
        self.completed(now, at);
    }

    /// A pass that could not run (API error before or while reading its input).
    /// An API request of the agent's own (its watch, its Lease) failed: transient, no pass ran.
    pub fn record_api_error(&self) {
        self.failure(FailureCategory::Transient);
    }

    pub fn record_error(&self) {
        self.pass(PassResult::Error);
        self.failure(FailureCategory::Transient);
    }

    /// Whether a pass completed within the bound (or the agent started less than the bound ago).
    pub fn live_at(&self, at: Instant) -> bool {
        let liveness = self.liveness.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        at.saturating_duration_since(liveness.last_completed.unwrap_or(liveness.started)) <= self.bound
    }

    /// Whether a pass completed since start.
    pub fn ready(&self) -> bool {
        self.liveness.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).last_completed.is_some()
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

static GLOBAL: OnceLock<Arc<AgentMetrics>> = OnceLock::new();

/// The metrics of this process: one agent per process, so the runtime records into one instance
/// without threading it through every call. `configure` sets the liveness bound before first use.
pub fn global() -> &'static Arc<AgentMetrics> {
    GLOBAL.get_or_init(|| Arc::new(AgentMetrics::default()))
}

/// Set the process's metrics (with their liveness bound); returns the instance in use (the first
/// one set wins).
pub fn configure(bound: Duration) -> Arc<AgentMetrics> {
    GLOBAL.get_or_init(|| Arc::new(AgentMetrics::new(bound, Instant::now()))).clone()
}

/// Router with `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Arc<AgentMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .route("/readyz", get(ready_handler))
        .with_state(metrics)
}

async fn metrics_handler(State(metrics): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
}

async fn health_handler(State(metrics): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    if metrics.live_at(Instant::now()) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no pass completed within the liveness bound")
    }
}

async fn ready_handler(State(metrics): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    if metrics.ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "no pass completed yet") }
}

/// Serve the router on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<AgentMetrics>) -> std::io::Result<()> {
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ssis_crds::{ItemKind, ItemState, ItemStatus};

    use super::*;
    use crate::engine::ActionKind;

    fn item(kind: ItemKind, name: &str, state: ItemState) -> ItemStatus {
        ItemStatus { kind, name: name.into(), state, ..Default::default() }
    }

    fn now() -> jiff::Timestamp {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_drift_repair_counts_writes_and_items_by_kind() {
        let start = Instant::now();
        let metrics = AgentMetrics::new(Duration::from_secs(60), start);
        let status = HostConfigStatus {
            items: vec![
                item(ItemKind::MasterSettings, "masterSettings", ItemState::Applied),
                item(ItemKind::Service, "service/master", ItemState::Applied),
            ],
            ..Default::default()
        };
        let report = ApplyReport {
            writes: BTreeMap::from([(ActionKind::FileWrite, 1), (ActionKind::ServiceRestart, 1)]),
            changed_items: vec!["masterSettings".into(), "service/master".into()],
            drift_repaired: true,
            ..Default::default()
        };
        metrics.record_pass(&status, &report, true, now(), start);
        metrics.record_pass(&status, &report, true, now(), start);
        let text = metrics.encode();
        for needle in [
            r#"ssis_agent_drift_repairs_total{kind="MasterSettings",item="masterSettings"} 2"#,
            r#"ssis_agent_drift_repairs_total{kind="Service",item="service/master"} 2"#,
            r#"ssis_agent_writes_total{kind="FileWrite"} 2"#,
            r#"ssis_agent_passes_total{result="changed"} 2"#,
            "ssis_agent_last_success_timestamp_seconds 1780315200.0",
            "ssis_agent_failed_items 0",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
        assert!(text.contains(r#"ssis_agent_failures_total{category="host"} 0"#), "{text}");
    }

    #[test]
    fn changes_after_a_spec_change_are_not_drift() {
        let metrics = AgentMetrics::default();
        let report = ApplyReport {
            writes: BTreeMap::from([(ActionKind::FileWrite, 1)]),
            changed_items: vec!["masterSettings".into()],
            drift_repaired: false,
            ..Default::default()
        };
        let status = HostConfigStatus {
            items: vec![item(ItemKind::MasterSettings, "masterSettings", ItemState::Applied)],
            ..Default::default()
        };
        metrics.record_pass(&status, &report, true, now(), Instant::now());
        let text = metrics.encode();
        assert!(
            text.contains(r#"ssis_agent_drift_repairs_total{kind="MasterSettings",item="masterSettings"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn failures_are_counted_by_category() {
        let metrics = AgentMetrics::default();
        let status = HostConfigStatus {
            items: vec![
                item(ItemKind::Certificate, "certificate/a", ItemState::Failed),
                item(ItemKind::RegistryValue, "registry/x", ItemState::Refused),
            ],
            ..Default::default()
        };
        metrics.record_pass(&status, &ApplyReport::default(), true, now(), Instant::now());
        metrics.record_error();
        metrics.record_pass(&HostConfigStatus::default(), &ApplyReport::default(), false, now(), Instant::now());
        let text = metrics.encode();
        for needle in [
            r#"ssis_agent_failures_total{category="host"} 1"#,
            r#"ssis_agent_failures_total{category="user"} 1"#,
            r#"ssis_agent_failures_total{category="transient"} 2"#,
            r#"ssis_agent_passes_total{result="failed"} 1"#,
            r#"ssis_agent_passes_total{result="error"} 2"#,
            "ssis_agent_failed_items 0",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
    }

    #[test]
    fn liveness_fails_once_no_pass_completed_within_the_bound() {
        let start = Instant::now();
        let bound = Duration::from_secs(60);
        let metrics = AgentMetrics::new(bound, start);
        assert!(metrics.live_at(start + bound), "starting up");
        assert!(!metrics.ready());
        assert!(!metrics.live_at(start + bound + Duration::from_secs(1)), "no pass since start");
        metrics.record_error();
        assert!(!metrics.live_at(start + bound + Duration::from_secs(1)), "an error is no completed pass");
        metrics.record_no_host_config(now(), start + Duration::from_secs(30));
        assert!(metrics.ready());
        assert!(metrics.live_at(start + Duration::from_secs(90)));
        assert!(!metrics.live_at(start + Duration::from_secs(91)));
    }

    #[test]
    fn pass_results_and_failure_categories_start_at_zero() {
        let text = AgentMetrics::default().encode();
        for needle in
            [r#"ssis_agent_passes_total{result="converged"} 0"#, r#"ssis_agent_failures_total{category="user"} 0"#]
        {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
    }
}
