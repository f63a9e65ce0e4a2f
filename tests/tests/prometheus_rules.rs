//! The chart's alert rules and Grafana dashboard, checked with the real promtool (Debian's
//! `prometheus` package; scripts/ci/install-promtool.sh puts it in .tools/bin, or set PROMTOOL):
//! `promtool check rules` on the rendered PrometheusRule, `promtool test rules` with
//! tests/promtool/alerts.test.yml (every alert fires on a synthetic series and stays quiet on a
//! healthy one), every metric the rules and the dashboard query is one the binaries export (names
//! read from their registries), every dashboard query parses, and every runbook link has its
//! section in docs/operations.md.

#[path = "helm_support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

fn promtool() -> PathBuf {
    let path = match std::env::var_os("PROMTOOL") {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => repo_root().join(".tools/bin/promtool"),
    };
    assert!(
        path.is_file(),
        "promtool not found at {} (set PROMTOOL or run scripts/ci/install-promtool.sh); the rule tests need \
         the real binary and do not skip without it",
        path.display()
    );
    path
}

fn promtool_run(args: &[&str], dir: &Path) -> (bool, String) {
    let output = Command::new(promtool()).args(args).current_dir(dir).output().expect("running promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssis-promtool-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The rendered PrometheusRule's `spec` (its `groups`), with default thresholds.
fn rule_groups() -> Value {
    let docs = render(&["--set", "prometheusRule.enabled=true"]);
    one(&docs, "PrometheusRule")["spec"].clone()
}

fn alerts(groups: &Value) -> Vec<&Value> {
    groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules"))
        .filter(|rule| rule["alert"].is_string())
        .collect()
}

fn write_rules(dir: &Path, groups: &Value) -> PathBuf {
    let path = dir.join("rules.yml");
    std::fs::write(&path, serde_yaml_ng::to_string(groups).expect("rules YAML")).expect("write rules");
    path
}

/// Metric names a text exposition declares, as queries see them (`_total` for counters,
/// `_bucket`/`_sum`/`_count` for histograms, `_info` for info metrics).
fn declared_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "info" => {
                names.insert(format!("{name}_info"));
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every metric name the two binaries export, read from their registries after recording one of
/// everything (families with labels appear once a series exists).
fn exported_names() -> BTreeSet<String> {
    let operator = ssis_operator::controller::Metrics::default();
    operator
        .record_report(&ssis_operator::controller::ReconcileReport { host_config_applies: 1, ..Default::default() });
    operator.sql_action("EnableWorkerAgent", true);
    let agent = ssis_agent::metrics::AgentMetrics::default();
    let status = ssis_crds::HostConfigStatus {
        items: vec![ssis_crds::ItemStatus {
            kind: ssis_crds::ItemKind::MasterSettings,
            name: "masterSettings".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let report = ssis_agent::engine::ApplyReport {
        writes: [(ssis_agent::engine::ActionKind::FileWrite, 1)].into(),
        changed_items: vec!["masterSettings".into()],
        drift_repaired: true,
        ..Default::default()
    };
    agent.record_pass(&status, &report, true, jiff::Timestamp::UNIX_EPOCH, std::time::Instant::now());
    let mut names = declared_names(&operator.encode());
    names.extend(declared_names(&agent.encode()));
    names
}

/// `ssis_*` metric names in a PromQL expression.
fn queried_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("ssis_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn promtool_accepts_the_rendered_rules() {
    let groups = rule_groups();
    let dir = scratch("check");
    write_rules(&dir, &groups);
    let (ok, output) = promtool_run(&["check", "rules", "rules.yml"], &dir);
    assert!(ok, "promtool check rules:\n{output}");
    let count = alerts(&groups).len();
    assert!(output.contains(&format!("SUCCESS: {count} rules found")), "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_alert_fires_on_a_synthetic_series_and_stays_quiet_on_a_healthy_one() {
    let groups = rule_groups();
    let dir = scratch("test");
    write_rules(&dir, &groups);
    let cases_path = repo_root().join("tests/promtool/alerts.test.yml");
    std::fs::copy(&cases_path, dir.join("alerts.test.yml")).expect("copy the test cases");
    let (ok, output) = promtool_run(&["test", "rules", "alerts.test.yml"], &dir);
    assert!(ok, "promtool test rules:\n{output}");
    assert!(output.contains("SUCCESS"), "{output}");

    let cases: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&cases_path).expect("read the cases")).expect("cases YAML");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in cases["tests"].as_array().expect("tests") {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let names: BTreeSet<String> =
        alerts(&groups).iter().map(|a| a["alert"].as_str().expect("alert name").to_string()).collect();
    let missing_firing: Vec<&String> = names.difference(&fires).collect();
    let missing_quiet: Vec<&String> = names.difference(&quiet).collect();
    assert!(missing_firing.is_empty(), "alerts without a case where they fire: {missing_firing:?}");
    assert!(missing_quiet.is_empty(), "alerts without a case where they stay quiet: {missing_quiet:?}");
    let unknown: Vec<&String> = fires.union(&quiet).filter(|n| !names.contains(*n)).collect();
    assert!(unknown.is_empty(), "cases for alerts the chart does not define: {unknown:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn thresholds_come_from_values() {
    let docs = render(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.workerOfflineAfter=2h",
        "--set",
        "prometheusRule.rotationStuckFor=30m",
        "--set",
        "operator.resync=10m",
        "--set",
        "prometheusRule.driftRepairsPerHour=5",
    ]);
    let groups = one(&docs, "PrometheusRule")["spec"].clone();
    let alert = |name: &str| {
        alerts(&groups).into_iter().find(|a| a["alert"] == name).unwrap_or_else(|| panic!("{name}")).clone()
    };
    assert!(alert("SsisWorkerOffline")["expr"].as_str().unwrap().ends_with("> 7200"));
    assert_eq!(alert("SsisMasterCertificateRotationStuck")["for"], "30m");
    // Three times operator.resync when not set.
    assert!(alert("SsisOperatorNotReconciling")["expr"].as_str().unwrap().ends_with("> 1800"));
    assert!(alert("SsisRepeatedDrift")["expr"].as_str().unwrap().ends_with(">= 5"));
}

#[test]
fn every_alert_links_its_runbook_section_in_docs_operations() {
    let groups = rule_groups();
    let docs = std::fs::read_to_string(repo_root().join("docs/operations.md")).expect("docs/operations.md");
    let headings: BTreeSet<&str> = docs.lines().filter_map(|l| l.strip_prefix("### ")).map(str::trim).collect();
    for alert in alerts(&groups) {
        let name = alert["alert"].as_str().unwrap();
        let url = alert["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name} has no runbook_url"));
        assert_eq!(
            url,
            format!(
                "https://example.invalid/ssis-scale-out-operator/blob/main/docs/operations.md#{}",
                name.to_lowercase()
            ),
            "{name}"
        );
        assert!(headings.contains(name), "docs/operations.md has no section '### {name}' for its runbook link");
        for key in ["summary", "description"] {
            assert!(alert["annotations"][key].is_string(), "{name} lacks annotation {key}");
        }
        assert!(
            ["info", "warning", "critical"].contains(&alert["labels"]["severity"].as_str().unwrap_or_default()),
            "{name}"
        );
    }
}

#[test]
fn the_rules_query_only_metrics_the_binaries_export() {
    let exported = exported_names();
    let groups = rule_groups();
    for alert in alerts(&groups) {
        let expr = alert["expr"].as_str().expect("expr");
        let unknown: Vec<String> = queried_names(expr).difference(&exported).cloned().collect();
        assert!(unknown.is_empty(), "{} queries {unknown:?}, which no binary exports", alert["alert"]);
    }
}

/// Every `expr` in the dashboard's panels, with Grafana's variables replaced by plain values.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    let mut stack = vec![dashboard];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    queries.push(expr.clone());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    queries
}

#[test]
fn the_dashboard_parses_queries_exported_metrics_and_ships_in_its_configmap() {
    let text = std::fs::read_to_string(chart_dir().join("dashboards/ssis-scale-out.json")).expect("dashboard file");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "ssis-scale-out");

    let queries = dashboard_queries(&dashboard);
    assert!(!queries.is_empty());
    let exported = exported_names();
    let mut queried = BTreeSet::new();
    for expr in &queries {
        let names = queried_names(expr);
        assert!(!names.is_empty(), "a dashboard query names no ssis metric: {expr}");
        let unknown: Vec<&String> = names.difference(&exported).collect();
        assert!(unknown.is_empty(), "the dashboard queries {unknown:?}, which no binary exports: {expr}");
        queried.extend(names);
    }
    // The template variable's query too.
    let variable = dashboard["templating"]["list"][1]["query"]["query"].as_str().expect("namespace variable");
    assert!(queried_names(variable).is_subset(&exported), "{variable}");

    // Each query parses as PromQL (as a recording rule).
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let plain = expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$namespace", "ssis");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": plain})
        })
        .collect();
    let dir = scratch("dashboard");
    write_rules(&dir, &serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}));
    let (ok, output) = promtool_run(&["check", "rules", "rules.yml"], &dir);
    assert!(ok, "a dashboard query does not parse:\n{output}");
    let _ = std::fs::remove_dir_all(&dir);

    // The ConfigMap carries the file for the Grafana sidecar.
    let docs = render(&["--set", "grafanaDashboard.enabled=true"]);
    let config_map = one(&docs, "ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(config_map["data"]["ssis-scale-out.json"].as_str().expect("dashboard key")).expect("JSON");
    assert_eq!(shipped, dashboard);
}
