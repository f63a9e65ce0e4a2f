//! The chart is `apiVersion: v2` and must work with Helm 3 as well as Helm 4: the real helm v3 binary
//! (`.tools/bin/helm3` or $HELM3, installed by scripts/ci/install-helm.sh) lints it, renders exactly
//! what helm v4 renders for every value set, and rejects bad values through the same schema.

#[path = "helm_support.rs"]
mod support;

use support::*;

fn helm3_ok(args: &[&str]) -> String {
    run_ok(&helm3_bin(), args)
}

#[test]
fn helm3_is_v3() {
    let version = helm3_ok(&["version", "--template", "{{.Version}}"]);
    assert!(version.starts_with("v3."), "expected helm v3, got {version}");
}

#[test]
fn helm3_lints_every_value_set_strictly() {
    let chart = chart_dir().display().to_string();
    for (label, extra) in VARIANTS {
        let mut args = vec!["lint", "--strict", "--namespace", NAMESPACE, chart.as_str()];
        args.extend_from_slice(extra);
        let output = helm3_ok(&args);
        assert!(output.contains("1 chart(s) linted, 0 chart(s) failed"), "{label}: {output}");
        assert!(!output.contains("[WARNING]") && !output.contains("[ERROR]"), "{label}: {output}");
    }
}

#[test]
fn helm3_renders_exactly_what_helm4_renders() {
    for (label, extra) in VARIANTS {
        let args = template_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v3 = helm3_ok(&args);
        let v4 = helm_ok(&args);
        assert!(!parse_documents(&v3).is_empty(), "{label}: helm3 rendered nothing");
        assert_eq!(parse_documents(&v3), parse_documents(&v4), "{label}: helm v3 and v4 render differently");
    }
    // CRDs included the same way.
    let args = template_args(&["--include-crds"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(parse_documents(&helm3_ok(&args)), parse_documents(&helm_ok(&args)));
}

#[test]
fn helm3_rejects_bad_values_naming_them() {
    // Helm 3's schema validator words errors differently ("operator.replicas: Must be ..."), but it
    // names the value too.
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "operator.replicas=0"], "operator.replicas"),
        (&["--set", "operator.image.pullPolicy=Sometimes"], "operator.image.pullPolicy"),
        (&["--set", "operator.bogus=1"], "bogus"),
        (&["--set", "agent.tolerations[0].effect=Never"], "effect"),
        (&["--set", "operator.leaderElection.enabled=false"], "requires operator.leaderElection.enabled=true"),
    ];
    for (extra, needle) in cases {
        let args = template_args(extra);
        let stderr = run_err(&helm3_bin(), &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(stderr.contains(needle), "helm3 template {extra:?}: expected {needle:?} in:\n{stderr}");
    }
}
