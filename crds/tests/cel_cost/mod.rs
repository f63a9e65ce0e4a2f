//! A conservative estimate of what the API server computes, when a CRD is written, as the
//! worst-case CEL cost of an `x-kubernetes-validations` rule. It walks the rule's AST (parsed by
//! the `cel` crate that kube-cel brings) and follows the Kubernetes model:
//!
//! - cel-go `checker/cost.go` (vendored in kubernetes/kubernetes): identifiers and field selections
//!   cost 1, `has()` 1, literals 0, a list literal 10; `&&`/`||` add their operands; a comprehension
//!   (the `all`/`exists`/`exists_one`/`map`/`filter` macros) costs its range, init and result plus
//!   *range size × (loop condition + step)*; equality costs ceil(0.1 × the smaller operand size);
//!   `startsWith` ceil(0.1 × argument size), `contains` the product of both traversals, `matches`
//!   ceil(0.1 × (string size + 1)) × ceil(0.25 × regex size); any other call 1 plus its arguments.
//! - k8s.io/apiserver/pkg/cel/library/cost.go: `split` costs ceil(0.2 × size) and returns at most
//!   `size` strings of at most `size` bytes; `ip`, `isIP` and `family` as there (this estimate
//!   charges the parse of `ip`/`isIP` as a string traversal even where the library charges 1).
//! - k8s.io/apiserver/pkg/cel/common/schemas.go: a string's size is its `maxLength` **× 4** (bytes,
//!   a code point being up to 4), a list's `maxItems`, a map's `maxProperties`; without them the
//!   server falls back to the 3 MiB request size, which this estimate treats as unbounded: a rule
//!   whose cost depends on such a size is an error naming the missing bound.
//!
//! The server checks `cost × cardinality` against `StaticEstimatedCostLimit` for every rule and
//! sums it into `StaticEstimatedCRDCostLimit` (apiextensions `validation.go`, `getExpressionCost`),
//! where the cardinality is the product of `maxItems` / `maxProperties` of every list and map
//! above the rule (`cel_validation.go`, `extractMaxElements`).

use kube_cel::cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use kube_cel::cel::parser::Parser;
use serde_json::Value;

/// apiextensions `StaticEstimatedCostLimit`: per rule, after multiplying by its cardinality.
pub const PER_EXPRESSION_LIMIT: u64 = 10_000_000;
/// apiextensions `StaticEstimatedCRDCostLimit`: the sum over every rule of a CRD.
pub const PER_CRD_LIMIT: u64 = 100_000_000;

/// cel-go `common.StringTraversalCostFactor`.
const STRING_TRAVERSAL: f64 = 0.1;
/// cel-go `common.RegexStringLengthCostFactor`.
const REGEX_LENGTH: f64 = 0.25;
/// cel-go `createListBaseCost`, `createMapBaseCost`, `createMessageBaseCost`.
const CREATE_LIST: u64 = 10;
const CREATE_MAP: u64 = 30;
const CREATE_MESSAGE: u64 = 40;
/// schemas.go: `maxLength` counts code points, sizes count bytes.
const BYTES_PER_CHARACTER: u64 = 4;

/// What the estimator knows about a value.
#[derive(Clone, Debug)]
enum Shape<'s> {
    /// A value described by a node of the CRD schema (`self` and what is selected from it).
    Schema(&'s Value),
    /// A string of at most this many bytes (`None`: unbounded).
    Str(Option<u64>),
    /// A list of at most this many items (`None`: unbounded) of one shape.
    List(Option<u64>, Box<Shape<'s>>),
    /// Numbers, booleans, null and opaque objects such as `ip(...)`: size 1 when compared.
    Scalar,
    /// Nothing known: its size is unbounded.
    Unknown,
}

impl<'s> Shape<'s> {
    /// The size the server's estimator would use (`None`: unbounded).
    fn size(&self) -> Option<u64> {
        match self {
            Shape::Schema(node) => match node.get("type").and_then(Value::as_str) {
                Some("string") => node.get("maxLength").and_then(Value::as_u64).map(|max| max * BYTES_PER_CHARACTER),
                Some("array") => node.get("maxItems").and_then(Value::as_u64),
                Some("object") if node.get("additionalProperties").is_some() => {
                    node.get("maxProperties").and_then(Value::as_u64)
                }
                Some("integer" | "number" | "boolean") => Some(1),
                _ => None,
            },
            Shape::Str(size) | Shape::List(size, _) => *size,
            Shape::Scalar => Some(1),
            Shape::Unknown => None,
        }
    }

    fn is_string(&self) -> bool {
        match self {
            Shape::Schema(node) => node.get("type").and_then(Value::as_str) == Some("string"),
            Shape::Str(_) => true,
            _ => false,
        }
    }

    /// What a comprehension over this value binds its variable to (list items, map keys).
    fn element(&self) -> Shape<'s> {
        match self {
            Shape::Schema(node) => match node.get("type").and_then(Value::as_str) {
                Some("array") => node.get("items").map_or(Shape::Unknown, Shape::Schema),
                // Map keys carry no length bound in a structural schema.
                Some("object") => Shape::Str(None),
                _ => Shape::Unknown,
            },
            Shape::List(_, element) => (**element).clone(),
            _ => Shape::Unknown,
        }
    }

    /// `value.field` (or `value['field']` on a map).
    fn field(&self, name: &str) -> Shape<'s> {
        match self {
            Shape::Schema(node) => node
                .get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
                .map_or(Shape::Unknown, Shape::Schema),
            _ => Shape::Unknown,
        }
    }

    /// `value[index]`.
    fn index(&self) -> Shape<'s> {
        match self {
            Shape::Schema(node) if node.get("type").and_then(Value::as_str) == Some("object") => {
                node.get("additionalProperties").filter(|a| a.is_object()).map_or(Shape::Unknown, Shape::Schema)
            }
            other => other.element(),
        }
    }
}

/// `ceil(size × factor)`, as cel-go's `multiplyByCostFactor`.
fn traversal(size: u64, factor: f64) -> u64 {
    (size as f64 * factor).ceil() as u64
}

struct Estimator<'s> {
    rule_node: &'s Value,
    rule: &'s str,
    /// Variables bound by enclosing comprehensions, innermost last.
    scopes: Vec<(String, Shape<'s>)>,
}

impl<'s> Estimator<'s> {
    fn unbounded(&self, what: &str) -> String {
        format!("`{}`: {what}", self.rule)
    }

    fn size_of(&self, shape: &Shape<'s>, what: &str) -> Result<u64, String> {
        shape.size().ok_or_else(|| self.unbounded(what))
    }

    fn cost(&mut self, expr: &IdedExpr) -> Result<(u64, Shape<'s>), String> {
        match &expr.expr {
            Expr::Literal(literal) => Ok((
                0,
                match literal {
                    LiteralValue::String(s) => Shape::Str(Some(s.inner().chars().count() as u64)),
                    LiteralValue::Bytes(b) => Shape::Str(Some(b.len() as u64)),
                    _ => Shape::Scalar,
                },
            )),
            Expr::Ident(name) => {
                let shape = match self.scopes.iter().rev().find(|(bound, _)| bound == name) {
                    Some((_, shape)) => shape.clone(),
                    None if name == "self" || name == "oldSelf" => Shape::Schema(self.rule_node),
                    None => return Err(format!("`{}`: unknown variable {name}", self.rule)),
                };
                Ok((1, shape))
            }
            Expr::Select(select) => {
                let (operand, shape) = self.cost(&select.operand)?;
                if select.test {
                    // has(): presence test only.
                    Ok((operand + 1, Shape::Scalar))
                } else {
                    Ok((operand + 1, shape.field(&select.field)))
                }
            }
            Expr::List(list) => {
                let mut cost = CREATE_LIST;
                let mut element = Shape::Unknown;
                for item in &list.elements {
                    let (item_cost, item_shape) = self.cost(item)?;
                    cost += item_cost;
                    element = item_shape;
                }
                Ok((cost, Shape::List(Some(list.elements.len() as u64), Box::new(element))))
            }
            Expr::Map(map) => {
                let mut cost = CREATE_MAP;
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Err(format!("`{}`: unexpected map entry", self.rule));
                    };
                    cost += self.cost(&entry.key)?.0 + self.cost(&entry.value)?.0;
                }
                Ok((cost, Shape::Unknown))
            }
            Expr::Struct(message) => {
                let mut cost = CREATE_MESSAGE;
                for entry in &message.entries {
                    let EntryExpr::StructField(field) = &entry.expr else {
                        return Err(format!("`{}`: unexpected struct entry", self.rule));
                    };
                    cost += self.cost(&field.value)?.0;
                }
                Ok((cost, Shape::Unknown))
            }
            Expr::Comprehension(comprehension) => self.comprehension(comprehension),
            Expr::Call(call) => {
                let mut costs = 0u64;
                let target = match &call.target {
                    Some(target) => {
                        let (cost, shape) = self.cost(target)?;
                        costs += cost;
                        Some(shape)
                    }
                    None => None,
                };
                let mut args = Vec::new();
                let mut arg_costs = Vec::new();
                for arg in &call.args {
                    let (cost, shape) = self.cost(arg)?;
                    arg_costs.push(cost);
                    args.push(shape);
                }
                costs += arg_costs.iter().sum::<u64>();
                self.call(&call.func_name, target, &args, &arg_costs, costs)
            }
            Expr::Unspecified => Err(format!("`{}`: unspecified expression", self.rule)),
        }
    }

    /// `costComprehension`: range + init + result + range size × (loop condition + step).
    fn comprehension(&mut self, c: &ComprehensionExpr) -> Result<(u64, Shape<'s>), String> {
        let (range_cost, range) = self.cost(&c.iter_range)?;
        let iterations = self.size_of(&range, "iterates a list or map without maxItems / maxProperties")?;
        let (init_cost, init) = self.cost(&c.accu_init)?;
        let accumulator = match init {
            Shape::List(..) => Shape::List(Some(iterations), Box::new(Shape::Unknown)),
            _ => Shape::Scalar,
        };
        self.scopes.push((c.accu_var.clone(), accumulator.clone()));
        self.scopes.push((c.iter_var.clone(), range.element()));
        let condition = self.cost(&c.loop_cond).map(|(cost, _)| cost);
        let step = self.cost(&c.loop_step).map(|(cost, _)| cost);
        self.scopes.pop();
        let result = self.cost(&c.result);
        self.scopes.pop();
        let (result_cost, shape) = result?;
        let loop_cost = iterations.saturating_mul(condition? + step?);
        Ok((range_cost + init_cost + result_cost + loop_cost, shape))
    }

    /// A function or operator: its own cost on top of `costs` (target and arguments).
    fn call(
        &self,
        function: &str,
        target: Option<Shape<'s>>,
        args: &[Shape<'s>],
        arg_costs: &[u64],
        costs: u64,
    ) -> Result<(u64, Shape<'s>), String> {
        // The string a member function works on, or the first argument of a global one.
        let subject = target.clone().or_else(|| args.first().cloned()).unwrap_or(Shape::Unknown);
        let member_arg = || if target.is_some() { args.first() } else { args.get(1) };
        Ok(match function {
            "_&&_" | "_||_" => (costs, Shape::Scalar),
            "_?_:_" => {
                let (a, b) = (arg_costs[1], arg_costs[2]);
                (arg_costs[0] + a.max(b), args[1].clone())
            }
            "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" => {
                let ordering = !matches!(function, "_==_" | "_!=_");
                if ordering && !(args[0].is_string() && args[1].is_string()) {
                    (costs + 1, Shape::Scalar)
                } else {
                    let smaller = match (args[0].size(), args[1].size()) {
                        (Some(a), Some(b)) => a.min(b),
                        (Some(a), None) | (None, Some(a)) => a,
                        (None, None) => return Err(self.unbounded("compares two values without maxLength")),
                    };
                    (costs + traversal(smaller, STRING_TRAVERSAL), Shape::Scalar)
                }
            }
            "!_" | "-_" | "@not_strictly_false" | "_-_" | "_*_" | "_/_" | "_%_" | "dyn" => (costs + 1, Shape::Scalar),
            "_+_" if args.iter().all(Shape::is_string) => {
                let a = self.size_of(&args[0], "concatenates a string without maxLength")?;
                let b = self.size_of(&args[1], "concatenates a string without maxLength")?;
                (costs + traversal(a + b, STRING_TRAVERSAL), Shape::Str(Some(a + b)))
            }
            "_+_" => (costs + 1, args.iter().find(|a| matches!(a, Shape::List(..))).cloned().unwrap_or(Shape::Scalar)),
            "_[_]" => (costs + 1, args[0].index()),
            "@in" => (costs + self.size_of(&args[1], "`in` over a list or map without a bound")?, Shape::Scalar),
            "size" => (costs + 1, Shape::Scalar),
            "startsWith" | "endsWith" => {
                let prefix = member_arg().cloned().unwrap_or(Shape::Unknown);
                let size = self.size_of(&prefix, "startsWith/endsWith with an unbounded argument")?;
                (costs + traversal(size, STRING_TRAVERSAL), Shape::Scalar)
            }
            "contains" => {
                let string = self.size_of(&subject, "contains() on a string without maxLength")?;
                let part = member_arg().cloned().unwrap_or(Shape::Unknown);
                let part = self.size_of(&part, "contains() with an unbounded argument")?;
                (costs + traversal(string, STRING_TRAVERSAL) * traversal(part, STRING_TRAVERSAL), Shape::Scalar)
            }
            "matches" => {
                let string = self.size_of(&subject, "matches() on a string without maxLength")?;
                let regex = member_arg().cloned().unwrap_or(Shape::Unknown);
                let regex = self.size_of(&regex, "matches() with an unbounded pattern")?;
                (costs + traversal(string + 1, STRING_TRAVERSAL) * traversal(regex, REGEX_LENGTH), Shape::Scalar)
            }
            "split" => {
                let size = self.size_of(&subject, "split() on a string without maxLength")?;
                (
                    costs + traversal(size, 2.0 * STRING_TRAVERSAL),
                    Shape::List(Some(size), Box::new(Shape::Str(Some(size)))),
                )
            }
            "lowerAscii" | "upperAscii" | "trim" | "substring" => {
                let size = self.size_of(&subject, "a string function on a string without maxLength")?;
                (costs + traversal(size, STRING_TRAVERSAL), Shape::Str(Some(size)))
            }
            // Parsing is a traversal of the string (library/cost.go `CallCost`); the estimate for the
            // global forms is 1, so charging the traversal is the conservative side.
            "isIP" | "ip" | "isCIDR" | "cidr" if target.is_none() => {
                let size = self.size_of(&subject, "parses a string without maxLength")?;
                (costs + 1 + traversal(size, STRING_TRAVERSAL), Shape::Scalar)
            }
            "family"
            | "isUnspecified"
            | "isLoopback"
            | "isLinkLocalMulticast"
            | "isLinkLocalUnicast"
            | "isCanonical"
            | "prefixLength"
            | "masked" => (costs + 1, Shape::Scalar),
            other => {
                return Err(format!(
                    "`{}`: function {other} is not in this cost model; add it from cost.go",
                    self.rule
                ));
            }
        })
    }
}

/// Worst-case cost of one rule evaluated once on `node` (the schema node carrying the rule).
pub fn rule_cost(rule: &str, node: &Value) -> Result<u64, String> {
    let ast = Parser::new().parse(rule).map_err(|e| format!("`{rule}` does not parse: {e:?}"))?;
    Estimator { rule_node: node, rule, scopes: Vec::new() }.cost(&ast).map(|(cost, _)| cost)
}

/// Every function and operator a rule calls (macros appear expanded: `@not_strictly_false`, ...).
pub fn functions(rule: &str) -> Result<std::collections::BTreeSet<String>, String> {
    fn walk(expr: &IdedExpr, out: &mut std::collections::BTreeSet<String>) {
        match &expr.expr {
            Expr::Call(call) => {
                out.insert(call.func_name.clone());
                call.target.iter().for_each(|t| walk(t, out));
                call.args.iter().for_each(|a| walk(a, out));
            }
            Expr::Comprehension(c) => [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .for_each(|e| walk(e, out)),
            Expr::Select(select) => walk(&select.operand, out),
            Expr::List(list) => list.elements.iter().for_each(|e| walk(e, out)),
            Expr::Map(map) => map.entries.iter().for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(e) => {
                    walk(&e.key, out);
                    walk(&e.value, out);
                }
                EntryExpr::StructField(f) => walk(&f.value, out),
            }),
            Expr::Struct(message) => message.entries.iter().for_each(|entry| match &entry.expr {
                EntryExpr::StructField(f) => walk(&f.value, out),
                EntryExpr::MapEntry(e) => walk(&e.value, out),
            }),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    let ast = Parser::new().parse(rule).map_err(|e| format!("`{rule}` does not parse: {e:?}"))?;
    let mut out = std::collections::BTreeSet::new();
    walk(&ast, &mut out);
    Ok(out)
}

/// Whether a comprehension (a list or map macro) runs inside the loop of another one.
pub fn nests_macros(rule: &str) -> Result<bool, String> {
    fn walk(expr: &IdedExpr, inside_loop: bool) -> bool {
        match &expr.expr {
            Expr::Comprehension(c) => {
                inside_loop
                    || walk(&c.iter_range, inside_loop)
                    || walk(&c.accu_init, inside_loop)
                    || walk(&c.loop_cond, true)
                    || walk(&c.loop_step, true)
                    || walk(&c.result, inside_loop)
            }
            Expr::Call(call) => {
                call.target.as_deref().is_some_and(|t| walk(t, inside_loop))
                    || call.args.iter().any(|a| walk(a, inside_loop))
            }
            Expr::Select(select) => walk(&select.operand, inside_loop),
            Expr::List(list) => list.elements.iter().any(|e| walk(e, inside_loop)),
            Expr::Map(map) => map.entries.iter().any(|entry| match &entry.expr {
                EntryExpr::MapEntry(e) => walk(&e.key, inside_loop) || walk(&e.value, inside_loop),
                EntryExpr::StructField(f) => walk(&f.value, inside_loop),
            }),
            Expr::Struct(message) => message.entries.iter().any(|entry| match &entry.expr {
                EntryExpr::StructField(f) => walk(&f.value, inside_loop),
                EntryExpr::MapEntry(e) => walk(&e.value, inside_loop),
            }),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => false,
        }
    }
    let ast = Parser::new().parse(rule).map_err(|e| format!("`{rule}` does not parse: {e:?}"))?;
    Ok(walk(&ast, false))
}
