//! Every `x-kubernetes-validations` rule of the committed CRDs (`crds/generated/`) compiles with
//! kube-cel, uses only the variables a CRD rule may use, names a field and its fix in its message,
//! nests no list macro inside another (uniqueness belongs to list-map keys), and has a worst-case
//! cost, estimated with the Kubernetes cost model (`cel_cost`), far below apiextensions' limits: a
//! real API server refuses a CRD whose estimate is over them.

mod cel_cost;
mod support;

use cel_cost::{PER_CRD_LIMIT, PER_EXPRESSION_LIMIT, functions, nests_macros, rule_cost};
use kube_cel::{ScopeContext, check_rule_scope, compile_schema};
use serde_json::{Value, json};

/// Margin under the server's limits: a rule (times its cardinality) may use a tenth of the
/// per-expression limit and a CRD a tenth of the per-CRD limit, so a schema change that grows an
/// estimate (a longer maxLength, a bigger maxItems) fails here long before a server refuses it.
const MARGIN: u64 = 10;

/// A rule found in a schema, with the node it sits on and the maximum number of instances of that
/// node in one object: the product of `maxItems` / `maxProperties` of every list and map above
/// it (`None` when one of them is unbounded), as apiextensions' `extractMaxElements` computes it.
struct FoundRule {
    path: String,
    rule: String,
    message: String,
    message_expression: Option<String>,
    node: Value,
    cardinality: Option<u64>,
}

fn collect_rules(path: &str, node: &Value, cardinality: Option<u64>, out: &mut Vec<FoundRule>) {
    if let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            out.push(FoundRule {
                path: path.to_string(),
                rule: rule["rule"].as_str().unwrap_or_default().to_string(),
                message: rule["message"].as_str().unwrap_or_default().to_string(),
                message_expression: rule["messageExpression"].as_str().map(str::to_string),
                node: node.clone(),
                cardinality,
            });
        }
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            collect_rules(&format!("{path}.{name}"), child, cardinality, out);
        }
    }
    if let Some(items) = node.get("items") {
        let max = node.get("maxItems").and_then(Value::as_u64);
        collect_rules(&format!("{path}[]"), items, cardinality.zip(max).map(|(c, m)| c * m), out);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
        let max = node.get("maxProperties").and_then(Value::as_u64);
        collect_rules(&format!("{path}{{}}"), additional, cardinality.zip(max).map(|(c, m)| c * m), out);
    }
}

/// Every rule of the committed CRDs, with its kind.
fn all_rules() -> Vec<(String, FoundRule)> {
    let mut found = Vec::new();
    for (kind, schema) in support::generated_schemas_by_kind() {
        let mut rules = Vec::new();
        collect_rules(&kind, &schema, Some(1), &mut rules);
        found.extend(rules.into_iter().map(|r| (kind.clone(), r)));
    }
    found
}

/// What the API server charges for a rule (and its messageExpression): cost × cardinality.
fn expression_cost(rule: &FoundRule) -> Result<(u64, u64), String> {
    let mut cost = rule_cost(&rule.rule, &rule.node)?;
    if let Some(expression) = &rule.message_expression {
        cost += rule_cost(expression, &rule.node)?;
    }
    let cardinality = rule
        .cardinality
        .ok_or_else(|| format!("{} sits inside a list without maxItems (or a map without maxProperties)", rule.path))?;
    Ok((cost, cost.saturating_mul(cardinality)))
}

#[test]
fn every_rule_compiles_with_kube_cel() {
    let mut failures = Vec::new();
    for (kind, schema) in support::generated_schemas_by_kind() {
        let compiled = compile_schema(&schema);
        let mut stack = vec![(kind.clone(), &compiled)];
        while let Some((path, node)) = stack.pop() {
            failures.extend(node.compilation_errors().into_iter().map(|e| format!("{path}: {e}")));
            stack.extend(node.properties.iter().map(|(name, child)| (format!("{path}.{name}"), child)));
            stack.extend(node.items.iter().map(|items| (format!("{path}[]"), items.as_ref())));
            stack.extend(node.additional_properties.iter().map(|a| (format!("{path}{{}}"), a.as_ref())));
        }
    }
    assert!(failures.is_empty(), "CEL rules that do not compile:\n{}", failures.join("\n"));
}

/// The `Rule::new("...")` texts of `#[x_kube(validation = ...)]` attributes in crds/src.
fn declared_rules() -> std::collections::BTreeSet<String> {
    let literal = regex::Regex::new(r#"Rule::new\("((?:[^"\\]|\\.)*)"\)"#).unwrap();
    let mut declared = std::collections::BTreeSet::new();
    let mut directories = vec![support::workspace_root().join("crds/src")];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).expect("crds/src").map(|e| e.expect("entry").path()) {
            if entry.is_dir() {
                directories.push(entry);
            } else if entry.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&entry).expect("source");
                declared
                    .extend(literal.captures_iter(&source).map(|c| c[1].replace("\\\"", "\"").replace("\\\\", "\\")));
            }
        }
    }
    declared
}

/// The committed CRDs carry exactly the rules the API types declare: none lost between the types and
/// crds/generated, none in the YAML that no type declares (so the tests over `all_rules()` cover
/// every declared rule, however many there are).
#[test]
fn the_committed_crds_carry_exactly_the_declared_rules() {
    let declared = declared_rules();
    assert!(
        declared.contains("has(self.secretRef) != has(self.generate)"),
        "the source scan finds rules: {declared:?}"
    );
    let committed: std::collections::BTreeSet<String> = all_rules().into_iter().map(|(_, rule)| rule.rule).collect();
    let missing: Vec<_> = declared.difference(&committed).collect();
    let undeclared: Vec<_> = committed.difference(&declared).collect();
    assert!(missing.is_empty(), "declared in crds/src but not in crds/generated: {missing:#?}");
    assert!(undeclared.is_empty(), "in crds/generated but declared by no type: {undeclared:#?}");
}

#[test]
fn every_rule_uses_only_crd_variables() {
    // kube-cel's scope check also reports the loop variables of macros (`all(r, ...)`); those are
    // bound by the macro, so only other free variables are real scope errors.
    let loop_variable =
        regex::Regex::new(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,").unwrap();
    for (kind, rule) in all_rules() {
        let bound: Vec<String> =
            loop_variable.captures_iter(&rule.rule).map(|c| format!("variable '{}'", &c[1])).collect();
        let warnings: Vec<_> = check_rule_scope(&rule.rule, ScopeContext::CrdValidation)
            .into_iter()
            .filter(|w| !bound.iter().any(|b| w.message.starts_with(b.as_str())))
            .collect();
        assert!(warnings.is_empty(), "{kind} {}: {:?}", rule.path, warnings);
    }
    let unbound = check_rule_scope("request.userInfo.username == 'x'", ScopeContext::CrdValidation);
    assert!(!unbound.is_empty(), "the scope check must flag variables a CRD rule cannot use");
}

#[test]
fn every_rule_message_names_a_field_and_a_fix() {
    for (kind, rule) in all_rules() {
        let fields: Vec<&String> =
            rule.node.get("properties").and_then(Value::as_object).map(|p| p.keys().collect()).unwrap_or_default();
        let last_segment = rule.path.rsplit('.').next().unwrap_or_default().trim_end_matches("[]");
        let names_field =
            fields.iter().any(|f| rule.message.contains(f.as_str())) || rule.message.contains(last_segment);
        assert!(names_field, "{kind} {}: message {:?} names no field of the node", rule.path, rule.message);
        assert!(
            rule.message.len() >= 30,
            "{kind} {}: message {:?} is too short to say the fix",
            rule.path,
            rule.message
        );
    }
}

#[test]
fn no_rule_nests_list_macros() {
    let mut nested = Vec::new();
    for (kind, rule) in all_rules() {
        let expressions = std::iter::once(&rule.rule).chain(rule.message_expression.as_ref());
        for expression in expressions {
            match nests_macros(expression) {
                Ok(false) => {}
                Ok(true) => nested.push(format!("{kind} {}: `{expression}`", rule.path)),
                Err(e) => nested.push(format!("{kind} {}: {e}", rule.path)),
            }
        }
    }
    assert!(
        nested.is_empty(),
        "rules that run a list macro inside another cost items² on the API server; make the list \
         x-kubernetes-list-type: map (uniqueness) or check it in the operator:\n{}",
        nested.join("\n")
    );
}

#[test]
fn every_rule_cost_is_far_below_the_api_server_limits() {
    let mut per_crd = std::collections::BTreeMap::<String, u64>::new();
    let mut problems = Vec::new();
    let mut table = Vec::new();
    for (kind, rule) in all_rules() {
        match expression_cost(&rule) {
            Ok((cost, total)) => {
                table.push(format!(
                    "{total:>9} = {cost:>5} x {:>4}  {kind} {}: {}",
                    rule.cardinality.unwrap_or_default(),
                    rule.path,
                    rule.rule
                ));
                if total > PER_EXPRESSION_LIMIT / MARGIN {
                    problems.push(format!(
                        "{kind} {}: `{}` costs {cost} x cardinality {:?} = {total} > {} (a tenth of {PER_EXPRESSION_LIMIT})",
                        rule.path,
                        rule.rule,
                        rule.cardinality,
                        PER_EXPRESSION_LIMIT / MARGIN
                    ));
                }
                *per_crd.entry(kind).or_default() += total;
            }
            Err(missing) => problems.push(format!("{kind} {}: {missing}", rule.path)),
        }
    }
    eprintln!("estimated cost = per evaluation x cardinality:\n{}", table.join("\n"));
    for (kind, total) in &per_crd {
        eprintln!("{kind}: {total} in total");
        if *total > PER_CRD_LIMIT / MARGIN {
            problems.push(format!("{kind}: total estimated CEL cost {total} > {}", PER_CRD_LIMIT / MARGIN));
        }
    }
    assert_eq!(per_crd.len(), 4, "every CRD carries rules: {per_crd:?}");
    assert!(problems.is_empty(), "add maxItems / maxLength or simplify the rule:\n{}", problems.join("\n"));
}

/// Minor version (1.x) from which an API server accepts CRD rules calling these functions: the
/// table "CEL options, language features, and libraries" of
/// https://kubernetes.io/docs/reference/using-api/cel/ (a library becomes usable in stored rules one
/// release after it was added, so a rollback can still evaluate them). A function outside this table
/// and the cost model fails `every_rule_cost_is_far_below_the_api_server_limits`, so a new library
/// gets its row here when it first appears in a rule.
const LIBRARIES: &[(&str, &[&str], u32)] = &[
    (
        "Kubernetes IP address library",
        &[
            "isIP",
            "ip",
            "isCanonical",
            "family",
            "isUnspecified",
            "isLoopback",
            "isLinkLocalMulticast",
            "isLinkLocalUnicast",
            "isGlobalUnicast",
        ],
        31,
    ),
    ("Kubernetes CIDR library", &["cidr", "isCIDR", "containsIP", "containsCIDR", "masked", "prefixLength"], 31),
    ("Kubernetes semver library", &["semver", "isSemver"], 34),
    ("Kubernetes quantity library", &["quantity", "isQuantity"], 29),
    ("CEL optional types", &["optMap", "optFlatMap", "orValue", "hasValue", "_?._", "_[?_]"], 29),
];
/// `x-kubernetes-validations` are stable since 1.29 (feature gate CustomResourceValidationExpressions).
const CRD_RULES_SINCE: u32 = 29;
/// The chart's optional ValidatingAdmissionPolicy is `admissionregistration.k8s.io/v1`, stable since
/// 1.30 (feature gate ValidatingAdmissionPolicy).
const CHART_POLICY_SINCE: u32 = 30;

#[test]
fn the_documented_minimum_kubernetes_version_is_what_the_rules_need() {
    let mut minimum = (CRD_RULES_SINCE.max(CHART_POLICY_SINCE), "ValidatingAdmissionPolicy v1".to_string());
    for (kind, rule) in all_rules() {
        for function in functions(&rule.rule).unwrap_or_else(|e| panic!("{kind} {}: {e}", rule.path)) {
            for (library, names, since) in LIBRARIES {
                if names.contains(&function.as_str()) && *since > minimum.0 {
                    minimum = (*since, format!("{library} ({function}() in {kind} {})", rule.path));
                }
            }
        }
    }
    let root = support::workspace_root();
    let chart = std::fs::read_to_string(root.join("charts/ssis-operator/Chart.yaml")).unwrap();
    let install = std::fs::read_to_string(root.join("docs/install.md")).unwrap();
    let (minor, why) = minimum;
    assert!(
        chart.contains(&format!("kubeVersion: \">=1.{minor}.0-0\"")),
        "Chart.yaml kubeVersion must be >=1.{minor}.0-0: {why}"
    );
    assert!(
        install.contains(&format!("Kubernetes **1.{minor} or later**")),
        "docs/install.md must state Kubernetes 1.{minor} or later: {why}"
    );
}

// The estimator itself: it must reproduce what a real API server said and fail where it must.

fn certificates_node(max_items: u64, max_length: u64) -> Value {
    json!({"type": "object", "properties": {"certificates": {
        "type": "array", "maxItems": max_items,
        "items": {"type": "object", "properties": {"name": {"type": "string", "maxLength": max_length}}}
    }}})
}

const OLD_HOSTCONFIG_RULE: &str = "self.certificates.all(c, self.certificates.exists_one(o, o.name == c.name))";

#[test]
fn the_old_hostconfig_rule_is_over_the_limit_by_the_factor_the_api_server_reported() {
    // v1.36.2 refused it with "estimated rule cost exceeds budget by factor of 1.5x"
    // (getCostErrorMessage prints %.1f of cost / StaticEstimatedCostLimit).
    let cost = rule_cost(OLD_HOSTCONFIG_RULE, &certificates_node(512, 128)).unwrap();
    assert!(cost > PER_EXPRESSION_LIMIT, "{cost}");
    let factor = cost as f64 / PER_EXPRESSION_LIMIT as f64;
    assert_eq!(format!("{factor:.1}"), "1.5", "cost {cost}");
    assert!(nests_macros(OLD_HOSTCONFIG_RULE).unwrap());
    // By hand: exists_one = range 2 + result (@result == 1) 2 + 512 × step, the step being
    // `o.name == c.name ? @result + 1 : @result` = 2 + 2 + ceil(0.1 × 512 bytes) + 2 = 58, so 29,700;
    // all = range 2 + result 1 + 512 × (@not_strictly_false(@result) 2 + @result && exists_one 29,701).
    assert_eq!(cost, 3 + 512 * (2 + 1 + 4 + 512 * 58));
}

#[test]
fn estimates_follow_the_cost_model_term_by_term() {
    let node = json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 100},
        "enum": {"type": "string", "enum": ["Absent", "Present"]},
        "port": {"type": "integer"},
        "tags": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 10}},
    }});
    let cost = |rule: &str| rule_cost(rule, &node).unwrap_or_else(|e| panic!("{e}"));
    // self (1) + .port (1) + literal (0) + ordering of ints (1).
    assert_eq!(cost("self.port < 10"), 3);
    // has(): presence test (1) + self (1).
    assert_eq!(cost("has(self.name)"), 2);
    // String equality: ceil(0.1 × smaller size); 'Absent' has 6 bytes, name 400.
    assert_eq!(cost("self.enum == 'Absent'"), 2 + 1);
    assert_eq!(cost("self.name == self.name"), 4 + 40);
    // startsWith charges the prefix, contains both sides, matches string+1 times 0.25 × pattern.
    assert_eq!(cost("self.name.startsWith('abcdefghijk')"), 2 + 2);
    assert_eq!(cost("self.name.contains('abc')"), 2 + 40);
    assert_eq!(cost("self.name.matches('^[0-9]+$')"), 2 + 41 * 2);
    // all(): range (2) + init (0) + result (1) + 8 × (@not_strictly_false(@result) 2 + @result && pred).
    // pred = !(t.startsWith('x')) = 1 + (t 1 + 1) = 3, step = 1 + 3 = 4.
    assert_eq!(cost("self.tags.all(t, !t.startsWith('x'))"), 2 + 1 + 8 * (2 + 4));
}

#[test]
fn estimates_refuse_unbounded_lists_and_strings() {
    let unbounded_list = json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string", "maxLength": 10}}}});
    let error = rule_cost("self.items.all(i, i == 'x')", &unbounded_list).unwrap_err();
    assert!(error.contains("maxItems"), "{error}");
    let unbounded_string = json!({"type": "object", "properties": {"name": {"type": "string"}}});
    let error = rule_cost("self.name.contains('x')", &unbounded_string).unwrap_err();
    assert!(error.contains("maxLength"), "{error}");
    let error = rule_cost("self.name == self.name", &unbounded_string).unwrap_err();
    assert!(error.contains("maxLength"), "{error}");
    // A bounded side is enough for equality: the model takes the smaller size.
    assert_eq!(rule_cost("self.name == 'x'", &unbounded_string), Ok(3));
    let unknown = rule_cost("self.name.reverse() == 'x'", &unbounded_string).unwrap_err();
    assert!(unknown.contains("not in this cost model"), "{unknown}");
}

#[test]
fn cardinality_multiplies_rules_inside_lists_and_unbounded_lists_fail() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "bounded": {"type": "array", "maxItems": 32, "items": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.port < 10", "message": "m"}],
            "properties": {"port": {"type": "integer"}}}},
        "unbounded": {"type": "array", "items": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.port < 10", "message": "m"}],
            "properties": {"port": {"type": "integer"}}}},
    }}}});
    let mut rules = Vec::new();
    collect_rules("T", &schema, Some(1), &mut rules);
    let bounded = rules.iter().find(|r| r.path == "T.spec.bounded[]").expect("bounded rule");
    assert_eq!(expression_cost(bounded), Ok((3, 96)));
    let unbounded = rules.iter().find(|r| r.path == "T.spec.unbounded[]").expect("unbounded rule");
    assert!(expression_cost(unbounded).unwrap_err().contains("without maxItems"));
}

#[test]
fn nested_macros_are_found_anywhere_in_a_rule() {
    assert!(!nests_macros("self.a.all(x, x > 0) && self.b.exists(y, y == 1)").unwrap());
    assert!(nests_macros("self.a.exists(x, self.b.all(y, y != x))").unwrap());
    assert!(nests_macros("self.a.map(x, x.b.filter(y, y > 0))").unwrap());
    assert!(!nests_macros("has(self.a) && size(self.a) > 0").unwrap());
}
