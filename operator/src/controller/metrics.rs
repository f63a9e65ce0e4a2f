//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::ReconcileReport;
use crate::metrics::DomainMetrics;

type Labels = Vec<(String, String)>;

/// Operator metrics, registered in their own registry; the domain metrics (`ssis_*`, see
/// [`crate::metrics`]) in a second one without the `ssis_operator` prefix.
pub struct Metrics {
    registry: Registry,
    domain_registry: Registry,
    pub domain: Arc<DomainMetrics>,
    /// When the last pass completed, by the operator's clock.
    pub last_reconcile: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_duration: Histogram,
    pub writes: Family<Labels, Counter>,
    pub sql_actions: Family<Labels, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ssis_operator");
        let reconciles = Counter::default();
        let reconcile_errors = Counter::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let writes = Family::<Labels, Counter>::default();
        let sql_actions = Family::<Labels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "World reconcile passes", reconciles.clone());
        registry.register("reconcile_errors", "Passes that failed or left problems to retry", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Duration of one world reconcile", reconcile_duration.clone());
        registry.register("writes", "Writes by kind (API objects and SQL actions)", writes.clone());
        registry.register("sql_actions", "SQL actions by kind and result", sql_actions.clone());
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        let last_reconcile = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "last_reconcile_timestamp_seconds",
            "When the last reconcile pass completed (Unix seconds; 0 before the first)",
            last_reconcile.clone(),
        );
        let domain = Arc::new(DomainMetrics::default());
        let mut domain_registry = Registry::default();
        domain_registry.register_collector(Box::new(domain.clone()));
        Self {
            registry,
            domain_registry,
            domain,
            last_reconcile,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            writes,
            sql_actions,
            leader,
        }
    }
}

impl Metrics {
    /// Count the writes of one pass by kind.
    pub fn record_report(&self, report: &ReconcileReport) {
        let kinds = [
            ("hostconfig_apply", report.host_config_applies),
            ("hostconfig_delete", report.host_config_deletes),
            ("secret", report.secret_writes),
            ("status", report.status_patches),
            ("sql_action", report.sql_actions),
            ("finalizer", report.finalizer_patches),
            ("event", report.events),
        ];
        for (kind, count) in kinds {
            if count > 0 {
                self.writes.get_or_create(&vec![("kind".into(), kind.into())]).inc_by(u64::from(count));
            }
        }
    }

    pub fn sql_action(&self, kind: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.sql_actions.get_or_create(&vec![("action".into(), kind.into()), ("result".into(), result.into())]).inc();
    }

    /// The domain figures of a completed pass (the one hook in the reconcile path): computed
    /// purely from the pass's input and the statuses it planned, see [`crate::metrics::snapshot`].
    pub fn observe(&self, unit: &str, input: &crate::plan::PlanInput, plan: &crate::plan::PlanOutput) {
        self.domain.observe_scope(unit, crate::metrics::snapshot(input, plan));
        self.last_reconcile.set(input.now.as_millisecond() as f64 / 1000.0);
    }

    /// Drop the figures of units that no longer exist (their resources are gone).
    pub fn retain_units(&self, units: &std::collections::BTreeSet<String>) {
        for scope in self.domain.scopes() {
            if !units.contains(&scope) {
                self.domain.forget_scope(&scope);
            }
        }
    }

    /// Both registries in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.domain_registry);
        let _ = encode_eof(&mut out);
        out
    }
}

/// Readiness and liveness inputs shared by the watchers, the leader loop and the reconciles.
#[derive(Default)]
pub struct Health {
    /// Every watch stream delivered its initial list.
    pub synced: AtomicBool,
    pub leader: AtomicBool,
    /// The first reconcile as leader finished.
    pub reconciled: AtomicBool,
    /// Reconciles under way, by unit, with their start.
    in_flight: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// A pass running longer than this (plus a grace) means the loop is wedged.
    pass_timeout: std::time::Duration,
}

impl Health {
    pub fn new(pass_timeout: std::time::Duration) -> Self {
        Self { pass_timeout, ..Default::default() }
    }

    pub fn begin(&self, unit: &str) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(unit.to_string(), std::time::Instant::now());
    }

    pub fn end(&self, unit: &str) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(unit);
    }

    /// Alive unless a pass has run past its own timeout by a minute: the timeout should have
    /// ended it, so the loop is wedged and a restart is the way out.
    pub fn alive(&self) -> bool {
        let limit = self.pass_timeout + std::time::Duration::from_secs(60);
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).values().all(|started| started.elapsed() <= limit)
    }

    /// Ready when caches synced and, for the leader, after its first reconcile.
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
            && (!self.leader.load(Ordering::SeqCst) || self.reconciled.load(Ordering::SeqCst))
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Router with `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

async fn health_handler(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.alive() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "reconcile wedged") }
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_actions_are_exported() {
        let metrics = Metrics::default();
        metrics.record_report(&ReconcileReport { host_config_applies: 2, ..Default::default() });
        metrics.sql_action("EnableWorkerAgent", true);
        metrics.leader.set(1);
        let text = metrics.encode();
        assert!(text.contains(r#"ssis_operator_writes_total{kind="hostconfig_apply"} 2"#), "{text}");
        assert!(
            text.contains(r#"ssis_operator_sql_actions_total{action="EnableWorkerAgent",result="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains("ssis_operator_leader 1"), "{text}");
    }

    #[test]
    fn readiness_waits_for_sync_and_first_leader_reconcile() {
        let health = Health::default();
        assert!(!health.ready());
        health.synced.store(true, Ordering::SeqCst);
        assert!(health.ready());
        health.leader.store(true, Ordering::SeqCst);
        assert!(!health.ready());
        health.reconciled.store(true, Ordering::SeqCst);
        assert!(health.ready());
    }
}
