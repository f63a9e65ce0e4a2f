//! Label selectors (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`) and the field selectors every kind
//! supports (`metadata.name`, `metadata.namespace`), as in k8s.io/apimachinery `labels.Parse` and
//! `fields.ParseSelector`.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = vec![];
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else if let Some((key, values)) = split_set(part, " notin ") {
                Requirement::NotIn(key, values?)
            } else if let Some((key, values)) = split_set(part, " in ") {
                Requirement::In(key, values?)
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else {
                Requirement::Exists(part.to_string())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether an object's `metadata.labels` match.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, values) => get(k).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(k, values) => get(k).is_none_or(|v| values.iter().all(|x| x != v)),
        })
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = vec![];
    let mut depth = 0;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn split_set(part: &str, operator: &str) -> Option<(String, Result<Vec<String>, String>)> {
    let (key, rest) = part.split_once(operator)?;
    let rest = rest.trim();
    let values = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_string()).collect())
        .ok_or_else(|| format!("unable to parse requirement: {part:?}: values must be in parentheses"));
    Some((key.trim().to_string(), values))
}

/// A parsed field selector; only `metadata.name` and `metadata.namespace` are supported, as for
/// custom resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = vec![];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
            };
            if !matches!(f_trim(field), "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {}", f_trim(field)));
            }
            terms.push((f_trim(field).to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str().unwrap_or_default(),
                _ => object["metadata"]["namespace"].as_str().unwrap_or_default(),
            };
            (actual == value) == *equal
        })
    }

    /// The one name an equality on `metadata.name` pins the selector to.
    pub fn name(&self) -> Option<&str> {
        self.0.iter().find(|(field, equal, _)| field == "metadata.name" && *equal).map(|(_, _, v)| v.as_str())
    }
}

fn f_trim(field: &str) -> &str {
    field.trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_match_like_the_api_server() {
        let object = json!({ "metadata": { "labels": { "kubernetes.io/os": "windows", "pool": "a" } } });
        for (selector, expected) in [
            ("", true),
            ("kubernetes.io/os=windows", true),
            ("kubernetes.io/os==windows,pool", true),
            ("kubernetes.io/os!=windows", false),
            ("!pool", false),
            ("pool in (a,b)", true),
            ("pool notin (a)", false),
            ("missing notin (a)", true),
            ("pool in (b, c)", false),
        ] {
            assert_eq!(LabelSelector::parse(selector).unwrap().matches(&object), expected, "{selector}");
        }
        assert!(LabelSelector::parse("pool in a").is_err());
    }

    #[test]
    fn field_selectors_support_name_and_namespace_only() {
        let object = json!({ "metadata": { "name": "n1", "namespace": "ns" } });
        let selector = FieldSelector::parse("metadata.name=n1,metadata.namespace!=other").unwrap();
        assert!(selector.matches(&object));
        assert_eq!(selector.name(), Some("n1"));
        assert!(!FieldSelector::parse("metadata.name=n2").unwrap().matches(&object));
        assert!(FieldSelector::parse("spec.nodeName=x").unwrap_err().contains("not supported"));
    }
}
