//! The Helm chart (charts/ssis-operator), checked with the real helm v4 binary: lint, rendering with
//! default and non-default values, the values schema, exact RBAC, pod security, CRD copies.
//! Run scripts/ci/install-helm.sh first (or set HELM / KUBECTL).

#[path = "helm_support.rs"]
mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::*;

fn operator_deployment(docs: &[Value]) -> &Value {
    one(docs, "Deployment")
}

fn operator_container(docs: &[Value]) -> &Value {
    let containers =
        operator_deployment(docs)["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "the operator pod has one container");
    &containers[0]
}

fn args(container: &Value) -> Vec<&str> {
    container["args"].as_array().expect("args").iter().map(|arg| arg.as_str().expect("string arg")).collect()
}

// ---------------------------------------------------------------------------------------------
// helm lint
// ---------------------------------------------------------------------------------------------

#[test]
fn helm_is_v4() {
    let version = helm_ok(&["version", "--template", "{{.Version}}"]);
    assert!(version.starts_with("v4."), "expected helm v4, got {version}");
}

#[test]
fn lint_strict_passes_for_every_value_set() {
    for (label, extra) in VARIANTS {
        let mut lint_args = vec!["lint", "--strict", "--namespace", NAMESPACE];
        let chart = chart_dir().display().to_string();
        lint_args.push(&chart);
        lint_args.extend_from_slice(extra);
        let output = helm_ok(&lint_args);
        assert!(output.contains("1 chart(s) linted, 0 chart(s) failed"), "{label}: {output}");
        assert!(!output.contains("[WARNING]") && !output.contains("[ERROR]"), "{label}: {output}");
    }
}

// ---------------------------------------------------------------------------------------------
// Offline API validation: every rendered object must survive a round trip through the typed
// Kubernetes API structs (k8s-openapi). A misspelled or misplaced field is dropped on the way and
// shows up as a difference. (`kubectl apply --dry-run=client` needs an API server for the REST
// mapping and OpenAPI schema, so it cannot run here; see deploy_manifests.rs for what kubectl does
// offline.)
// ---------------------------------------------------------------------------------------------

#[test]
fn every_rendered_object_is_a_valid_api_object() {
    for (label, extra) in VARIANTS {
        let docs = render(extra);
        assert!(!docs.is_empty(), "{label}: nothing rendered");
        for doc in &docs {
            let typed = assert_api_valid(doc);
            // The kinds without a typed model are prometheus-operator's.
            assert!(
                typed || ["ServiceMonitor", "PodMonitor", "PrometheusRule"].contains(&kind(doc)),
                "{label}: unexpected kind {}",
                kind(doc)
            );
            if kind(doc) != "ClusterRole"
                && kind(doc) != "ClusterRoleBinding"
                && kind(doc) != "ValidatingAdmissionPolicy"
                && kind(doc) != "ValidatingAdmissionPolicyBinding"
            {
                assert_eq!(doc["metadata"]["namespace"], json!(NAMESPACE), "{label}: {} {}", kind(doc), name(doc));
            }
            assert_eq!(doc["metadata"]["labels"]["app.kubernetes.io/part-of"], json!("ssis-operator"));
        }
    }
}

#[test]
fn chart_crds_render_and_are_api_valid() {
    let docs = render(&["--include-crds"]);
    let crds = of_kind(&docs, "CustomResourceDefinition");
    let names: BTreeSet<&str> = crds.iter().map(|crd| name(crd)).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "hostconfigs.ssis.sqlops.io",
            "scaleoutmastergroups.ssis.sqlops.io",
            "scaleoutworkers.ssis.sqlops.io",
            "ssisdbavailabilitygroups.ssis.sqlops.io",
        ])
    );
    for crd in crds {
        assert_api_valid(crd);
    }
}

#[test]
fn chart_crds_equal_generated_crds() {
    assert_same_crds(&chart_dir().join("crds"));
}

// ---------------------------------------------------------------------------------------------
// What each value set renders
// ---------------------------------------------------------------------------------------------

/// Optional monitoring objects: (PrometheusRule, Grafana dashboard ConfigMap, agent PodMonitor).
type Monitoring = (bool, bool, bool);

fn expected_inventory(agent: bool, pdb: bool, service_monitor: bool, policy: bool) -> BTreeSet<(String, String)> {
    expected_inventory_with(agent, pdb, service_monitor, policy, (false, false, false))
}

fn expected_inventory_with(
    agent: bool,
    pdb: bool,
    service_monitor: bool,
    policy: bool,
    (rules, dashboard, pod_monitor): Monitoring,
) -> BTreeSet<(String, String)> {
    let mut items = vec![
        ("Deployment", "ssis-operator"),
        ("Service", "ssis-operator-metrics"),
        ("ServiceAccount", "ssis-operator"),
        ("ClusterRole", "ssis-operator"),
        ("ClusterRoleBinding", "ssis-operator"),
        ("Role", "ssis-operator"),
        ("RoleBinding", "ssis-operator"),
        // The agent roles stay for standalone Windows hosts even without the DaemonSet.
        ("ClusterRole", "ssis-operator-agent"),
        ("Role", "ssis-operator-agent"),
    ];
    if agent {
        items.extend([
            ("DaemonSet", "ssis-operator-agent"),
            ("ServiceAccount", "ssis-operator-agent"),
            ("ClusterRoleBinding", "ssis-operator-agent"),
            ("RoleBinding", "ssis-operator-agent"),
        ]);
    }
    if pdb {
        items.push(("PodDisruptionBudget", "ssis-operator"));
    }
    if service_monitor {
        items.push(("ServiceMonitor", "ssis-operator"));
    }
    if policy {
        items.extend([
            ("ValidatingAdmissionPolicy", "ssis-operator-agent-own-node"),
            ("ValidatingAdmissionPolicyBinding", "ssis-operator-agent-own-node"),
        ]);
    }
    if rules {
        items.push(("PrometheusRule", "ssis-operator"));
    }
    if dashboard {
        items.push(("ConfigMap", "ssis-operator-dashboard"));
    }
    if pod_monitor {
        items.push(("PodMonitor", "ssis-operator-agent"));
    }
    items.into_iter().map(|(k, n)| (k.to_string(), n.to_string())).collect()
}

#[test]
fn value_sets_render_the_expected_objects() {
    assert_eq!(inventory(&render(&[])), expected_inventory(true, true, false, false));
    assert_eq!(inventory(&render(&["--set", "agent.enabled=false"])), expected_inventory(false, true, false, false));
    assert_eq!(
        inventory(&render(&["--set", "operator.replicas=1", "--set", "operator.leaderElection.enabled=false"])),
        expected_inventory(true, false, false, false)
    );
    assert_eq!(
        inventory(&render(&["--set", "operator.metrics.serviceMonitor.enabled=true"])),
        expected_inventory(true, true, true, false)
    );
    assert_eq!(
        inventory(&render(&["--set", "agent.nodeBoundStatusPolicy.enabled=true"])),
        expected_inventory(true, true, false, true)
    );
    assert_eq!(
        inventory(&render(VARIANTS.last().expect("monitoring variant").1)),
        expected_inventory_with(true, true, true, false, (true, true, true))
    );
    for (toggle, monitoring) in [
        ("prometheusRule.enabled=true", (true, false, false)),
        ("grafanaDashboard.enabled=true", (false, true, false)),
        ("agent.metrics.podMonitor.enabled=true", (false, false, true)),
    ] {
        assert_eq!(
            inventory(&render(&["--set", toggle])),
            expected_inventory_with(true, true, false, false, monitoring),
            "{toggle}"
        );
    }
    // No agents, no PodMonitor.
    assert_eq!(
        inventory(&render(&["--set", "agent.enabled=false", "--set", "agent.metrics.podMonitor.enabled=true"])),
        expected_inventory(false, true, false, false)
    );
}

// ---------------------------------------------------------------------------------------------
// Operator Deployment
// ---------------------------------------------------------------------------------------------

#[test]
fn operator_defaults_two_replicas_with_leader_election() {
    let docs = render(&[]);
    let deployment = operator_deployment(&docs);
    assert_eq!(deployment["spec"]["replicas"], json!(2));
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], json!(0));
    let container = operator_container(&docs);
    assert_eq!(
        args(container),
        [
            "run",
            "--namespace=$(POD_NAMESPACE)",
            "--metrics-addr=0.0.0.0:8080",
            "--lease-name=ssis-operator-leader",
            "--concurrency=4",
            "--resync=5m",
            "--pass-timeout=120s"
        ]
    );
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], json!(1));
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);
    // Replicas prefer different nodes.
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert_eq!(
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"],
        json!("kubernetes.io/hostname")
    );
}

#[test]
fn operator_single_replica_runs_without_leader_election() {
    let docs = render(&["--set", "operator.replicas=1", "--set", "operator.leaderElection.enabled=false"]);
    assert_eq!(operator_deployment(&docs)["spec"]["replicas"], json!(1));
    let args = args(operator_container(&docs));
    assert!(args.contains(&"--no-leader-election"), "{args:?}");
    assert!(!args.iter().any(|arg| arg.starts_with("--lease-name")), "{args:?}");
}

#[test]
fn operator_watch_namespaces_image_registry_and_digest() {
    let docs = render(VARIANTS[6].1);
    let container = operator_container(&docs);
    let args = args(container);
    assert!(args.contains(&"--watch-namespace=etl-prod") && args.contains(&"--watch-namespace=etl-test"), "{args:?}");
    assert!(args.contains(&"--concurrency=8"), "{args:?}");
    assert_eq!(
        container["image"],
        json!(
            "registry.example.com/ssis/ssis-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
    let daemonset = one(&docs, "DaemonSet");
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("registry.example.com/ssis/ssis-agent:1.2.3")
    );
}

#[test]
fn default_images_use_the_chart_app_version() {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    let app_version = chart["appVersion"].as_str().expect("appVersion");
    let docs = render(&[]);
    assert_eq!(operator_container(&docs)["image"], json!(format!("ssis-operator:{app_version}")));
    assert_eq!(
        one(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["image"],
        json!(format!("ssis-agent:{app_version}"))
    );
    // The chart version follows the workspace version.
    let workspace: Value = {
        let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
        let version = text
            .lines()
            .skip_while(|line| line.trim() != "[workspace.package]")
            .find_map(|line| line.strip_prefix("version = "))
            .expect("workspace version");
        json!(version.trim_matches('"'))
    };
    assert_eq!(json!(app_version), workspace);
    assert_eq!(chart["version"], workspace);
}

#[test]
fn operator_pod_meets_the_restricted_pod_security_standard() {
    for (label, extra) in VARIANTS {
        let docs = render(extra);
        let pod = &operator_deployment(&docs)["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true), "{label}");
        assert_ne!(pod["securityContext"]["runAsUser"], json!(0), "{label}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], json!("RuntimeDefault"), "{label}");
        assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null() && pod["hostIPC"].is_null(), "{label}");
        let container = operator_container(&docs);
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], json!(false), "{label}");
        assert_eq!(security["readOnlyRootFilesystem"], json!(true), "{label}");
        assert_eq!(security["runAsNonRoot"], json!(true), "{label}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{label}");
        assert!(security["capabilities"]["add"].is_null(), "{label}");
        assert!(security["privileged"].is_null(), "{label}");
        assert_eq!(security["seccompProfile"]["type"], json!("RuntimeDefault"), "{label}");
        // Only emptyDir volumes (no hostPath).
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            assert!(volume["emptyDir"].is_object(), "{label}: {volume}");
        }
    }
}

#[test]
fn operator_runs_on_linux_with_probes_namespace_and_resources() {
    for (label, extra) in VARIANTS {
        let docs = render(extra);
        let pod = &operator_deployment(&docs)["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], json!("linux"), "{label}");
        assert_eq!(pod["serviceAccountName"], json!("ssis-operator"), "{label}");
        let container = operator_container(&docs);
        let port = &container["ports"][0];
        assert_eq!(port["name"], json!("metrics"), "{label}");
        assert_eq!(port["containerPort"], json!(8080), "{label}");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], json!("/healthz"), "{label}");
        assert_eq!(container["livenessProbe"]["httpGet"]["port"], json!("metrics"), "{label}");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], json!("/readyz"), "{label}");
        assert_eq!(container["readinessProbe"]["httpGet"]["port"], json!("metrics"), "{label}");
        let env = container["env"].as_array().expect("env");
        let pod_namespace = env.iter().find(|var| var["name"] == "POD_NAMESPACE").expect("POD_NAMESPACE");
        assert_eq!(pod_namespace["valueFrom"]["fieldRef"]["fieldPath"], json!("metadata.namespace"), "{label}");
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(container["resources"][bound][resource].is_string(), "{label}: resources.{bound}.{resource}");
            }
        }
        // The metrics Service targets the operator pods' metrics port.
        let service = one(&docs, "Service");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], json!("metrics"), "{label}");
        let selector = service["spec"]["selector"].as_object().expect("selector");
        let pod_labels = &operator_deployment(&docs)["spec"]["template"]["metadata"]["labels"];
        for (key, value) in selector {
            assert_eq!(&pod_labels[key], value, "{label}: Service selector {key}");
        }
    }
}

#[test]
fn custom_tolerations_resources_and_node_selector_are_rendered() {
    let docs = render(VARIANTS[4].1);
    let agent_pod = &one(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(
        agent_pod["tolerations"],
        json!([
            {"key": "sku", "operator": "Equal", "value": "Windows", "effect": "NoSchedule"},
            {"key": "ssis", "operator": "Exists"}
        ])
    );
    assert_eq!(agent_pod["nodeSelector"], json!({"kubernetes.io/os": "windows", "ssis.sqlops.io/role": "scale-out"}));
    assert_eq!(
        agent_pod["containers"][0]["resources"],
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}})
    );
    let operator_pod = &operator_deployment(&docs)["spec"]["template"]["spec"];
    assert_eq!(
        operator_pod["tolerations"],
        json!([{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoExecute", "tolerationSeconds": 60}])
    );
    assert_eq!(
        operator_container(&docs)["resources"],
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
    );
}

#[test]
fn node_selector_values_cannot_move_pods_to_the_wrong_os() {
    let docs = render(&[
        "--set-json",
        r#"operator.nodeSelector={"kubernetes.io/os":"windows","pool":"ops"}"#,
        "--set-json",
        r#"agent.nodeSelector={"kubernetes.io/os":"linux"}"#,
    ]);
    assert_eq!(
        operator_deployment(&docs)["spec"]["template"]["spec"]["nodeSelector"],
        json!({"kubernetes.io/os": "linux", "pool": "ops"})
    );
    assert_eq!(
        one(&docs, "DaemonSet")["spec"]["template"]["spec"]["nodeSelector"],
        json!({"kubernetes.io/os": "windows"})
    );
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let docs = render(&[
        "--set",
        "operator.metrics.serviceMonitor.enabled=true",
        "--set",
        "operator.metrics.serviceMonitor.labels.release=prometheus",
    ]);
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], json!("monitoring.coreos.com/v1"));
    assert_eq!(monitor["metadata"]["labels"]["release"], json!("prometheus"));
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"], json!([NAMESPACE]));
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], json!("metrics"));
    assert_eq!(endpoint["path"], json!("/metrics"));
    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["name"], json!("metrics"));
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels") {
        assert_eq!(&service["metadata"]["labels"][key], value, "ServiceMonitor selects label {key}");
    }
}

// ---------------------------------------------------------------------------------------------
// Agent DaemonSet
// ---------------------------------------------------------------------------------------------

#[test]
fn agent_is_a_windows_host_process_daemonset() {
    let docs = render(&[]);
    let daemonset = one(&docs, "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "windows"}));
    assert_eq!(pod["hostNetwork"], json!(true));
    assert_eq!(pod["securityContext"]["windowsOptions"]["hostProcess"], json!(true));
    assert_eq!(pod["securityContext"]["windowsOptions"]["runAsUserName"], json!("NT AUTHORITY\\SYSTEM"));
    assert_eq!(pod["serviceAccountName"], json!("ssis-operator-agent"));
    // Volumes (the service-account token) at their usual paths: containerd >= 1.7 bind mounts.
    assert_eq!(
        daemonset["spec"]["template"]["metadata"]["annotations"]["microsoft.com/hostprocess-mount-behavior"],
        json!("bind")
    );
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}])
    );
    // Linux-only pod security fields would be rejected or meaningless on a Windows pod.
    assert!(pod["securityContext"]["seccompProfile"].is_null() && pod["securityContext"]["runAsNonRoot"].is_null());
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    // Every container of a HostProcess pod must be HostProcess.
    assert_eq!(container["securityContext"]["windowsOptions"]["hostProcess"], json!(true));
    assert!(pod["initContainers"].is_null());
    assert_eq!(
        args(container),
        [
            "run",
            "--node-name=$(NODE_NAME)",
            "--namespace=$(POD_NAMESPACE)",
            "--host=windows",
            "--metrics-addr=0.0.0.0:9181",
            "--liveness-bound=10m"
        ]
    );
    // The host network opens the metrics port on the node; the probes use it.
    assert_eq!(container["ports"], json!([{"name": "metrics", "containerPort": 9181, "protocol": "TCP"}]));
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "metrics"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}));
    let env = container["env"].as_array().expect("env");
    let field = |var: &str| {
        env.iter().find(|entry| entry["name"] == var).unwrap_or_else(|| panic!("{var}"))["valueFrom"]["fieldRef"]
            ["fieldPath"]
            .clone()
    };
    assert_eq!(field("NODE_NAME"), json!("spec.nodeName"));
    assert_eq!(field("POD_NAMESPACE"), json!("metadata.namespace"));
    assert!(container["resources"]["limits"]["memory"].is_string());
}

#[test]
fn agent_metrics_port_and_liveness_bound_are_values() {
    let docs = render(&["--set", "agent.metrics.port=19181", "--set", "agent.metrics.livenessBound=20m"]);
    let container = &one(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let args = args(container);
    assert!(args.contains(&"--metrics-addr=0.0.0.0:19181") && args.contains(&"--liveness-bound=20m"), "{args:?}");
    assert_eq!(container["ports"][0]["containerPort"], json!(19181));
}

#[test]
fn agent_pod_monitor_scrapes_the_agents_and_names_their_node() {
    let docs = render(&["--set", "agent.metrics.podMonitor.enabled=true"]);
    let monitor = one(&docs, "PodMonitor");
    assert_eq!(monitor["apiVersion"], json!("monitoring.coreos.com/v1"));
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], json!("metrics"));
    assert_eq!(endpoint["path"], json!("/metrics"));
    assert_eq!(
        endpoint["relabelings"][0],
        json!({"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"})
    );
    let pod_labels = &one(&docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels") {
        assert_eq!(&pod_labels[key], value, "PodMonitor selects label {key}");
    }
}

#[test]
fn agent_disabled_renders_no_daemonset_but_keeps_roles_for_standalone_hosts() {
    let docs = render(&["--set", "agent.enabled=false"]);
    assert!(of_kind(&docs, "DaemonSet").is_empty());
    let agent_roles: Vec<&Value> = docs.iter().filter(|doc| name(doc) == "ssis-operator-agent").collect();
    let kinds: BTreeSet<&str> = agent_roles.iter().map(|doc| kind(doc)).collect();
    assert_eq!(kinds, BTreeSet::from(["ClusterRole", "Role"]));
}

#[test]
fn node_bound_policy_limits_agent_writes_to_its_own_node() {
    let docs = render(&["--set", "agent.nodeBoundStatusPolicy.enabled=true"]);
    let policy = one(&docs, "ValidatingAdmissionPolicy");
    assert_eq!(policy["spec"]["failurePolicy"], json!("Fail"));
    let rules = &policy["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(rules["apiGroups"], json!(["ssis.sqlops.io"]));
    assert_eq!(rules["resources"], json!(["hostconfigs", "hostconfigs/status"]));
    let condition = policy["spec"]["matchConditions"][0]["expression"].as_str().expect("matchCondition");
    assert!(condition.contains("system:serviceaccount:ssis-operator:ssis-operator-agent"), "{condition}");
    let validation = policy["spec"]["validations"][0]["expression"].as_str().expect("validation");
    assert!(
        validation.contains("request.userInfo.extra['authentication.kubernetes.io/node-name'][0] == request.name"),
        "{validation}"
    );
    let binding = one(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
}

// ---------------------------------------------------------------------------------------------
// RBAC: the exact grants, as sets
// ---------------------------------------------------------------------------------------------

/// One permission held by a ServiceAccount: (scope, subject, apiGroup, resource, verb), where scope
/// is "cluster" for a ClusterRoleBinding and "namespace/<ns>" for a RoleBinding.
type Grant = (String, String, String, String, String);

/// The grants of every ServiceAccount, resolved through the bindings to the rendered roles.
fn grants(docs: &[Value]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for binding in docs.iter().filter(|doc| matches!(kind(doc), "ClusterRoleBinding" | "RoleBinding")) {
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef.kind");
        let role_name = binding["roleRef"]["name"].as_str().expect("roleRef.name");
        let binding_namespace = binding["metadata"]["namespace"].as_str();
        let role = docs
            .iter()
            .find(|doc| {
                kind(doc) == role_kind
                    && name(doc) == role_name
                    && (role_kind == "ClusterRole" || doc["metadata"]["namespace"].as_str() == binding_namespace)
            })
            .unwrap_or_else(|| {
                panic!("binding {} refers to a {role_kind} {role_name} the chart does not render", name(binding))
            });
        let scope = match kind(binding) {
            "ClusterRoleBinding" => "cluster".to_string(),
            _ => format!("namespace/{}", binding_namespace.expect("RoleBinding namespace")),
        };
        for subject in binding["subjects"].as_array().expect("subjects") {
            assert_eq!(subject["kind"], json!("ServiceAccount"), "only ServiceAccounts are bound");
            let subject_name =
                format!("{}/{}", subject["namespace"].as_str().expect("namespace"), subject["name"].as_str().unwrap());
            for rule in role["rules"].as_array().expect("rules") {
                assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null(), "{rule}");
                for group in rule["apiGroups"].as_array().expect("apiGroups") {
                    for resource in rule["resources"].as_array().expect("resources") {
                        for verb in rule["verbs"].as_array().expect("verbs") {
                            for value in [group, resource, verb] {
                                assert_ne!(value, "*", "wildcard in {} {}: {rule}", role_kind, role_name);
                            }
                            out.insert((
                                scope.clone(),
                                subject_name.clone(),
                                group.as_str().unwrap().to_string(),
                                resource.as_str().unwrap().to_string(),
                                verb.as_str().unwrap().to_string(),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

fn add(out: &mut BTreeSet<Grant>, scope: &str, subject: &str, group: &str, resources: &[&str], verbs: &[&str]) {
    for resource in resources {
        for verb in verbs {
            out.insert((scope.into(), subject.into(), group.into(), resource.to_string(), verb.to_string()));
        }
    }
}

/// The contract: operator and agent permissions, nothing more.
fn expected_grants(namespace: &str, leader_election: bool, agent: bool) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    let ns_scope = format!("namespace/{namespace}");
    let operator = format!("{namespace}/ssis-operator");
    let kinds = ["ssisdbavailabilitygroups", "scaleoutmastergroups", "scaleoutworkers"];
    let statuses = ["ssisdbavailabilitygroups/status", "scaleoutmastergroups/status", "scaleoutworkers/status"];
    add(&mut out, "cluster", &operator, "ssis.sqlops.io", &kinds, &["get", "list", "watch", "patch", "update"]);
    add(&mut out, "cluster", &operator, "ssis.sqlops.io", &statuses, &["get", "patch"]);
    add(
        &mut out,
        "cluster",
        &operator,
        "ssis.sqlops.io",
        &["hostconfigs"],
        &["get", "list", "watch", "create", "patch", "delete"],
    );
    add(&mut out, "cluster", &operator, "ssis.sqlops.io", &["hostconfigs/status"], &["get"]);
    add(&mut out, "cluster", &operator, "", &["secrets"], &["get", "list", "watch"]);
    add(&mut out, "cluster", &operator, "", &["nodes"], &["get", "list", "watch"]);
    add(&mut out, "cluster", &operator, "events.k8s.io", &["events"], &["create", "patch"]);
    add(&mut out, "cluster", &operator, "apiextensions.k8s.io", &["customresourcedefinitions"], &["get"]);
    add(&mut out, &ns_scope, &operator, "", &["secrets"], &["create", "patch", "delete"]);
    add(&mut out, &ns_scope, &operator, "coordination.k8s.io", &["leases"], &["list", "watch"]);
    if leader_election {
        add(&mut out, &ns_scope, &operator, "coordination.k8s.io", &["leases"], &["get", "create", "update"]);
    }
    if agent {
        let agent = format!("{namespace}/ssis-operator-agent");
        add(&mut out, "cluster", &agent, "ssis.sqlops.io", &["hostconfigs"], &["get", "list", "watch"]);
        add(&mut out, "cluster", &agent, "ssis.sqlops.io", &["hostconfigs/status"], &["get", "patch"]);
        add(&mut out, &ns_scope, &agent, "", &["secrets"], &["get"]);
        add(&mut out, &ns_scope, &agent, "coordination.k8s.io", &["leases"], &["create", "patch"]);
    }
    out
}

fn assert_grants(actual: &BTreeSet<Grant>, expected: &BTreeSet<Grant>, label: &str) {
    let extra: Vec<&Grant> = actual.difference(expected).collect();
    let missing: Vec<&Grant> = expected.difference(actual).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{label}: RBAC differs from the contract\nextra: {extra:#?}\nmissing: {missing:#?}"
    );
}

#[test]
fn rbac_grants_exactly_the_contract() {
    assert_grants(&grants(&render(&[])), &expected_grants(NAMESPACE, true, true), "defaults");
    assert_grants(
        &grants(&render(&["--set", "agent.enabled=false"])),
        &expected_grants(NAMESPACE, true, false),
        "agent disabled",
    );
    assert_grants(
        &grants(&render(&["--set", "operator.replicas=1", "--set", "operator.leaderElection.enabled=false"])),
        &expected_grants(NAMESPACE, false, true),
        "no leader election",
    );
    for (label, extra) in VARIANTS {
        let leader_election = !extra.contains(&"operator.leaderElection.enabled=false");
        let agent = !extra.contains(&"agent.enabled=false");
        assert_grants(&grants(&render(extra)), &expected_grants(NAMESPACE, leader_election, agent), label);
    }
}

#[test]
fn rbac_follows_the_release_namespace() {
    let args = ["template", RELEASE, &chart_dir().display().to_string(), "--namespace", "etl-ops"].map(String::from);
    let docs = parse_documents(&helm_ok(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_grants(&grants(&docs), &expected_grants("etl-ops", true, true), "namespace etl-ops");
}

#[test]
fn secret_writes_are_namespaced_only() {
    for (label, extra) in VARIANTS {
        let docs = render(extra);
        for role in of_kind(&docs, "ClusterRole") {
            for rule in role["rules"].as_array().expect("rules") {
                if rule["resources"].as_array().unwrap().contains(&json!("secrets")) {
                    for verb in rule["verbs"].as_array().unwrap() {
                        assert!(
                            ["get", "list", "watch"].contains(&verb.as_str().unwrap()),
                            "{label}: ClusterRole {} grants {verb} on secrets cluster-wide",
                            name(role)
                        );
                    }
                }
            }
        }
        let writers: Vec<&Value> = of_kind(&docs, "Role")
            .into_iter()
            .filter(|role| {
                role["rules"].as_array().unwrap().iter().any(|rule| {
                    rule["resources"].as_array().unwrap().contains(&json!("secrets"))
                        && rule["verbs"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|verb| !["get", "list", "watch"].contains(&verb.as_str().unwrap()))
                })
            })
            .collect();
        assert_eq!(writers.len(), 1, "{label}: one Role writes Secrets");
        assert_eq!(writers[0]["metadata"]["namespace"], json!(NAMESPACE), "{label}");
        assert_eq!(name(writers[0]), "ssis-operator", "{label}: only the operator writes Secrets");
    }
}

#[test]
fn service_account_tokens_are_mounted_only_into_the_pods_that_use_them() {
    let docs = render(&[]);
    for account in of_kind(&docs, "ServiceAccount") {
        assert_eq!(account["automountServiceAccountToken"], json!(false), "{}", name(account));
    }
    assert_eq!(operator_deployment(&docs)["spec"]["template"]["spec"]["automountServiceAccountToken"], json!(true));
    assert_eq!(one(&docs, "DaemonSet")["spec"]["template"]["spec"]["automountServiceAccountToken"], json!(true));
}

// ---------------------------------------------------------------------------------------------
// values.schema.json and template checks: bad values fail with a message naming the value
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_values_are_rejected_with_the_offending_value_named() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--set", "operator.replicas=0"], &["/operator/replicas", "minimum"]),
        (&["--set", "operator.image.pullPolicy=Sometimes"], &["/operator/image/pullPolicy", "IfNotPresent"]),
        (&["--set", "agent.image.pullPolicy=always"], &["/agent/image/pullPolicy"]),
        (&["--set", "operator.replicaCount=3"], &["/operator", "replicaCount"]),
        (&["--set", "agent.hostProcess=false"], &["/agent", "hostProcess"]),
        (&["--set", "unknownTopLevel=1"], &["unknownTopLevel"]),
        (&["--set", "operator.concurrency=0"], &["/operator/concurrency"]),
        (&["--set", "operator.resync=0s"], &["/operator/resync"]),
        (&["--set", "operator.resync=null"], &["/operator", "resync"]),
        (&["--set", "operator.metrics.port=80"], &["/operator/metrics/port"]),
        (&["--set", "operator.leaderElection.leaseName=Not_A_Name"], &["/operator/leaderElection/leaseName"]),
        (&["--set-json", r#"operator.watchNamespaces=["ETL Prod"]"#], &["/operator/watchNamespaces/0"]),
        (&["--set", "operator.resources.limits.cpu=lots"], &["/operator/resources/limits/cpu"]),
        (&["--set-json", r#"agent.tolerations=[{"key":"os","effect":"Never"}]"#], &["/agent/tolerations/0/effect"]),
        (&["--set", "operator.image.digest=latest"], &["/operator/image/digest"]),
        (&["--set", "operator.metrics.serviceMonitor.interval=often"], &["/operator/metrics/serviceMonitor/interval"]),
        (&["--set", "agent.updateStrategy.maxUnavailable=0"], &["/agent/updateStrategy/maxUnavailable"]),
        (&["--set", "operator.replicas=two"], &["/operator/replicas"]),
        (&["--set", "prometheusRule.workerOfflineAfter=15 minutes"], &["/prometheusRule/workerOfflineAfter"]),
        (&["--set", "prometheusRule.driftRepairsPerHour=0"], &["/prometheusRule/driftRepairsPerHour"]),
        (&["--set", "prometheusRule.runbookBaseUrl=docs/operations.md"], &["/prometheusRule/runbookBaseUrl"]),
        (&["--set", "agent.metrics.port=80"], &["/agent/metrics/port"]),
        (&["--set", "agent.metrics.livenessBound=0s"], &["/agent/metrics/livenessBound"]),
        (&["--set", "grafanaDashboard.folder=SSIS"], &["/grafanaDashboard", "folder"]),
        // Cross-field rules are template checks with their own message.
        (
            &["--set", "operator.leaderElection.enabled=false"],
            &["operator.replicas=2 requires operator.leaderElection.enabled=true"],
        ),
        (
            &["--set", "agent.enabled=false", "--set", "agent.nodeBoundStatusPolicy.enabled=true"],
            &["agent.nodeBoundStatusPolicy.enabled=true requires agent.enabled=true"],
        ),
        (
            &["--set", "operator.serviceAccount.create=false"],
            &["operator.serviceAccount.name is required when operator.serviceAccount.create=false"],
        ),
    ];
    for (extra, needles) in cases {
        let args = template_args(extra);
        let stderr = helm_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        for needle in *needles {
            assert!(stderr.contains(needle), "helm template {extra:?}: expected {needle:?} in:\n{stderr}");
        }
    }
}

#[test]
fn schema_rejection_also_stops_helm_install() {
    let chart = chart_dir().display().to_string();
    let stderr = helm_err(&[
        "install",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--set",
        "operator.replicas=-1",
    ]);
    assert!(stderr.contains("/operator/replicas"), "{stderr}");
}

#[test]
fn existing_service_accounts_can_be_used() {
    let docs = render(&[
        "--set",
        "operator.serviceAccount.create=false",
        "--set",
        "operator.serviceAccount.name=ops-sa",
        "--set",
        "agent.serviceAccount.create=false",
        "--set",
        "agent.serviceAccount.name=agent-sa",
    ]);
    assert!(of_kind(&docs, "ServiceAccount").is_empty());
    assert_eq!(operator_deployment(&docs)["spec"]["template"]["spec"]["serviceAccountName"], json!("ops-sa"));
    assert_eq!(one(&docs, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"], json!("agent-sa"));
    let subjects: BTreeSet<String> = grants(&docs).into_iter().map(|grant| grant.1).collect();
    assert_eq!(subjects, BTreeSet::from([format!("{NAMESPACE}/ops-sa"), format!("{NAMESPACE}/agent-sa")]));
}

// ---------------------------------------------------------------------------------------------
// NOTES.txt
// ---------------------------------------------------------------------------------------------

#[test]
fn install_notes_tell_what_to_do_next() {
    let chart = chart_dir().display().to_string();
    let output = helm_ok(&["install", RELEASE, &chart, "--namespace", NAMESPACE, "--dry-run=client"]);
    let notes = output.split("NOTES:").nth(1).expect("helm install prints NOTES");
    for needle in [
        "kubectl -n ssis-operator rollout status deployment/ssis-operator",
        "kubectl -n ssis-operator rollout status daemonset/ssis-operator-agent",
        "kubectl apply -f examples/",
        "kubectl wait --for=condition=Ready scaleoutworker --all -n ssis --timeout=10m",
        "kubectl get ssis -A",
        "kubectl wait --for=condition=Ready scaleoutworker/<name> -n <namespace> --timeout=10m",
        "kubectl apply --server-side --force-conflicts -f charts/ssis-operator/crds/",
    ] {
        assert!(notes.contains(needle), "NOTES lack {needle:?}:\n{notes}");
    }
    let output = helm_ok(&[
        "install",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--set",
        "agent.enabled=false",
    ]);
    let notes = output.split("NOTES:").nth(1).expect("NOTES");
    assert!(notes.contains("ClusterRole ssis-operator-agent and Role ssis-operator-agent"), "{notes}");
    assert!(!notes.contains("daemonset/"), "{notes}");

    // The example objects the NOTES name exist in examples/ (namespace ssis).
    let mut examples = Vec::new();
    for (file, bytes) in files_with_extension(&repo_root().join("examples"), "yaml") {
        let text = String::from_utf8(bytes).unwrap_or_else(|_| panic!("examples/{file} is UTF-8"));
        examples.extend(parse_documents(&text));
    }
    for (kind_name, object) in
        [("SsisdbAvailabilityGroup", "ssisdb"), ("ScaleOutMasterGroup", "ssis-master"), ("Namespace", "ssis")]
    {
        assert!(
            examples.iter().any(|doc| kind(doc) == kind_name && name(doc) == object),
            "NOTES refer to {kind_name} {object}, which examples/ does not define"
        );
    }
    let workers = of_kind(&examples, "ScaleOutWorker");
    assert!(!workers.is_empty() && workers.iter().all(|worker| worker["metadata"]["namespace"] == "ssis"));
    assert!(repo_root().join("examples/10-secrets.yaml").is_file());
}

// ---------------------------------------------------------------------------------------------
// The node-bound admission policy's CEL, evaluated
// ---------------------------------------------------------------------------------------------

fn eval_cel(expression: &str, request: &Value) -> bool {
    let program =
        cel::Program::compile(expression).unwrap_or_else(|error| panic!("CEL does not parse: {error:?}\n{expression}"));
    let mut context = cel::Context::default();
    context.add_variable("request", request.clone()).expect("request variable");
    match program.execute(&context) {
        Ok(cel::Value::Bool(result)) => result,
        other => panic!("CEL {expression} returned {other:?}"),
    }
}

fn admission_request(username: &str, node: Option<&str>, object_name: &str) -> Value {
    let mut user = json!({"username": username, "groups": ["system:serviceaccounts"]});
    if let Some(node) = node {
        user["extra"] = json!({
            "authentication.kubernetes.io/node-name": [node],
            "authentication.kubernetes.io/pod-name": ["ssis-operator-agent-x7k2p"],
        });
    }
    json!({"userInfo": user, "name": object_name, "subResource": "status", "operation": "UPDATE"})
}

#[test]
fn node_bound_policy_cel_admits_only_the_agent_of_the_same_node() {
    let docs = render(&["--set", "agent.nodeBoundStatusPolicy.enabled=true"]);
    let policy = one(&docs, "ValidatingAdmissionPolicy");
    let matches = policy["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
    let validation = policy["spec"]["validations"][0]["expression"].as_str().unwrap();
    let agent = "system:serviceaccount:ssis-operator:ssis-operator-agent";
    let operator = "system:serviceaccount:ssis-operator:ssis-operator";

    // The policy applies to the agent DaemonSet's ServiceAccount only.
    assert!(eval_cel(matches, &admission_request(agent, Some("win-1"), "win-1")));
    assert!(!eval_cel(matches, &admission_request(operator, None, "win-1")));
    assert!(!eval_cel(
        matches,
        &admission_request("system:serviceaccount:ssis-operator:ssis-agent-sqlhost01", None, "sqlhost01")
    ));

    // Its own node's HostConfig: allowed. Another node's, or a token without a node binding: denied.
    assert!(eval_cel(validation, &admission_request(agent, Some("win-1"), "win-1")));
    assert!(!eval_cel(validation, &admission_request(agent, Some("win-1"), "win-2")));
    assert!(!eval_cel(validation, &admission_request(agent, None, "win-1")));
    let mut two_nodes = admission_request(agent, Some("win-1"), "win-1");
    two_nodes["userInfo"]["extra"]["authentication.kubernetes.io/node-name"] = json!(["win-1", "win-2"]);
    assert!(!eval_cel(validation, &two_nodes));

    // The denial message names the object.
    let message = policy["spec"]["validations"][0]["messageExpression"].as_str().unwrap();
    let mut context = cel::Context::default();
    context.add_variable("request", admission_request(agent, Some("win-1"), "win-2")).expect("request");
    let text = cel::Program::compile(message).expect("messageExpression parses").execute(&context).expect("evaluates");
    assert_eq!(
        text,
        cel::Value::String(
            "the ssis agent may only write the HostConfig of its own node, not 'win-2'".to_string().into()
        )
    );
}

#[test]
fn clusters_older_than_1_31_are_refused() {
    // 1.30 serves ValidatingAdmissionPolicy v1 but cannot compile the CRDs' IP-library rules.
    let args = template_args(&["--kube-version", "1.30.14"]);
    let stderr = helm_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stderr.contains("kubeVersion") && stderr.contains(">=1.31.0-0"), "{stderr}");
    render(&["--kube-version", "1.31.0"]);
}

#[test]
fn packaged_chart_carries_crds_schema_and_notes() {
    let out_dir = std::env::temp_dir().join(format!("ssis-helm-package-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("create package dir");
    let chart = chart_dir().display().to_string();
    let destination = out_dir.display().to_string();
    helm_ok(&["package", &chart, "--destination", &destination]);
    let chart_yaml: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    let tarball = out_dir.join(format!("ssis-operator-{}.tgz", chart_yaml["version"].as_str().expect("version")));
    assert!(tarball.is_file(), "helm package wrote no {}", tarball.display());
    let listing = std::process::Command::new("tar").arg("-tzf").arg(&tarball).output().expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for file in [
        "ssis-operator/Chart.yaml",
        "ssis-operator/values.yaml",
        "ssis-operator/values.schema.json",
        "ssis-operator/templates/NOTES.txt",
        "ssis-operator/crds/hostconfigs.yaml",
        "ssis-operator/crds/scaleoutmastergroups.yaml",
        "ssis-operator/crds/scaleoutworkers.yaml",
        "ssis-operator/crds/ssisdbavailabilitygroups.yaml",
    ] {
        assert!(listing.lines().any(|line| line == file), "{file} missing from the package:\n{listing}");
    }
    // The packaged chart renders the same manifests as the source directory.
    let tarball_arg = tarball.display().to_string();
    let packaged = helm_ok(&["template", RELEASE, &tarball_arg, "--namespace", NAMESPACE]);
    assert_eq!(parse_documents(&packaged), render(&[]));
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn the_grace_period_covers_a_pass_so_a_rollout_releases_the_lease() {
    let docs = render(&[]);
    let deployment = of_kind(&docs, "Deployment").into_iter().next().expect("operator Deployment");
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_i64().expect("grace");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].as_array().expect("args");
    let pass: i64 = args
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--pass-timeout=")?.strip_suffix('s')?.parse().ok())
        .expect("--pass-timeout");
    assert!(grace >= pass + 15, "grace {grace} s does not cover a pass of {pass} s");
    let refused = helm_err(&[
        "template",
        RELEASE,
        &chart_dir().display().to_string(),
        "--set",
        "operator.terminationGracePeriodSeconds=30",
    ]);
    assert!(refused.contains("must be at least operator.passTimeoutSeconds + 15"), "{refused}");
}
