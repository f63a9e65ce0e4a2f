//! Every `x-kubernetes-validations` rule compiles with kube-cel, uses only the variables a CRD rule
//! may use, names a field and its fix in its message, and has a bounded cost: a real API server
//! rejects a CRD whose estimated rule cost is too high, and the estimate is unbounded for lists and
//! strings without maxItems / maxLength.

mod support;

use kube::core::cel::{ScopeContext, check_rule_scope, compile_schema};
use serde_json::Value;

/// Kubernetes' per-expression static cost limit (apiextensions `StaticEstimatedCostLimit`).
const RULE_COST_LIMIT: u64 = 10_000_000;
/// Kubernetes' per-CRD static cost limit (`StaticEstimatedCRDCostLimit`).
const CRD_COST_LIMIT: u64 = 100_000_000;
/// The macros that iterate a list.
const MACROS: &[&str] = &["all", "exists", "exists_one", "map", "filter"];
/// String functions whose cost grows with the string's length.
const STRING_FUNCTIONS: &[&str] = &["contains", "startsWith", "endsWith", "matches", "split", "indexOf"];

/// A rule found in a schema, with the node it sits on and the maximum number of instances of that
/// node in one object (product of the enclosing arrays' maxItems).
struct FoundRule {
    path: String,
    rule: String,
    message: String,
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
        let inner = cardinality.zip(max).map(|(c, m)| c * m);
        collect_rules(&format!("{path}[]"), items, inner, out);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
        collect_rules(&format!("{path}{{}}"), additional, None, out);
    }
}

fn all_rules() -> Vec<(String, FoundRule)> {
    let mut found = Vec::new();
    for (kind, schema) in support::schemas_by_kind() {
        let mut rules = Vec::new();
        collect_rules(&kind, &schema, Some(1), &mut rules);
        found.extend(rules.into_iter().map(|r| (kind.clone(), r)));
    }
    found
}

/// Resolve `self.a.b` on a schema node (list items are entered when the path crosses a list).
fn resolve<'a>(node: &'a Value, field_path: &str) -> Option<&'a Value> {
    field_path.split('.').try_fold(node, |current, field| current.get("properties")?.get(field))
}

/// Longest string the rule can compare under `node`: the node itself, or the properties of an
/// object item that the rule mentions (`o.name`); `None` when such a string is unbounded.
fn max_string_length(node: &Value, mentioned: &[String]) -> Option<u64> {
    match node.get("type").and_then(Value::as_str) {
        Some("string") => node.get("maxLength").and_then(Value::as_u64),
        Some("object") => node
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .filter(|(name, _)| mentioned.contains(name))
                    .map(|(_, child)| max_string_length(child, mentioned))
                    .try_fold(0, |acc, m| m.map(|m| acc.max(m)))
            })
            .unwrap_or(Some(0)),
        Some("array") => node.get("items").and_then(|items| max_string_length(items, mentioned)),
        _ => Some(0),
    }
}

/// Conservative cost estimate of a rule, modelled on the Kubernetes estimator: every macro over
/// `self.<list>` multiplies by that list's maxItems (assuming the macros nest), every step costs a
/// few operations plus one traversal of the longest compared string (cost 0.1 per character), and
/// a string function on `self.<field>` traverses that field. `Err` names a missing bound.
fn estimate_cost(rule: &FoundRule) -> Result<u64, String> {
    let reference = regex::Regex::new(r"self\.([A-Za-z0-9_.]+?)\.([A-Za-z_]+)\(").unwrap();
    let member = regex::Regex::new(r"\.([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    let mentioned: Vec<String> = member.captures_iter(&rule.rule).map(|c| c[1].to_string()).collect();
    let mut iterations: u64 = 1;
    let mut string_cost: u64 = 1;
    for capture in reference.captures_iter(&rule.rule) {
        let (field, function) = (&capture[1], &capture[2]);
        let Some(target) = resolve(&rule.node, field) else {
            return Err(format!("`self.{field}` is not a field of {}", rule.path));
        };
        if MACROS.contains(&function) {
            let max_items = target
                .get("maxItems")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("list `{field}` iterated by the rule has no maxItems"))?;
            let max_len = max_string_length(target, &mentioned)
                .ok_or_else(|| format!("strings inside list `{field}` compared by the rule have no maxLength"))?;
            iterations = iterations.saturating_mul(max_items);
            string_cost = string_cost.max(max_len.div_ceil(10));
        } else if STRING_FUNCTIONS.contains(&function) {
            let max_len = target
                .get("maxLength")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("string `{field}` passed to {function}() has no maxLength"))?;
            string_cost = string_cost.max(max_len.div_ceil(10));
        }
    }
    const STEP_OPERATIONS: u64 = 10;
    let per_instance = iterations.saturating_mul(STEP_OPERATIONS + 2 * string_cost);
    let cardinality = rule.cardinality.ok_or_else(|| format!("{} sits inside a list without maxItems", rule.path))?;
    Ok(per_instance.saturating_mul(cardinality))
}

#[test]
fn every_rule_compiles_with_kube_cel() {
    let mut failures = Vec::new();
    for (kind, schema) in support::schemas_by_kind() {
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
    let count = all_rules().len();
    assert!(count >= 20, "expected the schemas to carry the documented CEL rules, found {count}");
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
fn every_rule_cost_is_bounded() {
    let mut per_crd = std::collections::BTreeMap::<String, u64>::new();
    let mut problems = Vec::new();
    for (kind, rule) in all_rules() {
        match estimate_cost(&rule) {
            Ok(cost) if cost > RULE_COST_LIMIT => problems
                .push(format!("{kind} {}: `{}` estimated cost {cost} > {RULE_COST_LIMIT}", rule.path, rule.rule)),
            Ok(cost) => *per_crd.entry(kind).or_default() += cost,
            Err(missing) => problems.push(format!("{kind} {}: `{}`: {missing}", rule.path, rule.rule)),
        }
    }
    for (kind, total) in per_crd {
        if total > CRD_COST_LIMIT {
            problems.push(format!("{kind}: total estimated CEL cost {total} > {CRD_COST_LIMIT}"));
        }
    }
    assert!(problems.is_empty(), "add maxItems / maxLength where rules iterate:\n{}", problems.join("\n"));
}

#[test]
fn cost_estimate_flags_unbounded_lists_and_strings() {
    let unbounded_list = FoundRule {
        path: "t".into(),
        rule: "self.items.all(i, self.items.exists_one(o, o == i))".into(),
        message: String::new(),
        node: serde_json::json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string", "maxLength": 10}}}}),
        cardinality: Some(1),
    };
    assert!(estimate_cost(&unbounded_list).unwrap_err().contains("maxItems"));
    let unbounded_string = FoundRule {
        rule: "self.name.contains('x')".into(),
        node: serde_json::json!({"type": "object", "properties": {"name": {"type": "string"}}}),
        ..unbounded_list
    };
    assert!(estimate_cost(&unbounded_string).unwrap_err().contains("maxLength"));
    let too_big = FoundRule {
        rule: "self.items.all(i, self.items.exists_one(o, o == i))".into(),
        node: serde_json::json!({"type": "object", "properties": {"items": {"type": "array", "maxItems": 5000, "items": {"type": "string", "maxLength": 253}}}}),
        ..unbounded_string
    };
    assert!(estimate_cost(&too_big).unwrap() > RULE_COST_LIMIT);
}
