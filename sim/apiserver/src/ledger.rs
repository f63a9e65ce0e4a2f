//! Every request the server received, by who sent it, and the faults waiting to be injected.

use std::collections::BTreeMap;

/// A request class: who, what verb, which resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// [`crate::Identity::component`].
    pub component: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// API group (empty for the core group).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    /// `status` or empty.
    pub subresource: String,
    /// Empty for cluster-scoped resources and requests across all namespaces.
    pub namespace: String,
}

impl RequestKey {
    /// `hostconfigs/status`, `secrets`.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Whether the verb changes state.
    pub fn is_write(&self) -> bool {
        matches!(self.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
    }
}

/// A fault injected into matching requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiFault {
    /// 409 Conflict, as for a stale resourceVersion.
    Conflict,
    /// 500 Internal Server Error.
    ServerError,
    /// The request reached the server and was carried out, but the response never arrived.
    TimeoutAfterApply,
    /// The request never reached the server.
    TimeoutBeforeApply,
}

/// Which requests a fault applies to, and how many more times.
#[derive(Clone, Debug)]
pub struct FaultRule {
    pub fault: ApiFault,
    /// Only requests of this component (`None`: any).
    pub component: Option<String>,
    /// Only this resource path, e.g. `hostconfigs` or `scaleoutworkers/status` (`None`: any).
    pub resource: Option<String>,
    /// Only writes (reads pass untouched).
    pub writes_only: bool,
    /// Matching requests still to fail.
    pub remaining: u32,
}

/// Counters and pending faults.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every request that reached the server, successful or not.
    pub requests: BTreeMap<RequestKey, u64>,
    /// Successful writes (2xx) only.
    pub writes: BTreeMap<RequestKey, u64>,
    /// Requests the server refused as malformed, invalid or forbidden (400, 403, 422), with the
    /// message: what a real API server would have refused too.
    pub refused: Vec<(RequestKey, String)>,
    /// Faults injected so far.
    pub faults_injected: u64,
    pub rules: Vec<FaultRule>,
}

impl Ledger {
    /// Requests of one component.
    pub fn requests_by(&self, component: &str) -> u64 {
        self.requests.iter().filter(|(k, _)| k.component == component).map(|(_, n)| n).sum()
    }

    /// Successful writes of one component.
    pub fn writes_by(&self, component: &str) -> u64 {
        self.writes.iter().filter(|(k, _)| k.component == component).map(|(_, n)| n).sum()
    }

    /// Every request that reached the server.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub(crate) fn take_fault(&mut self, component: &str, write: bool, resource_path: &str) -> Option<ApiFault> {
        let rule = self.rules.iter_mut().find(|rule| {
            rule.remaining > 0
                && rule.component.as_deref().is_none_or(|c| c == component)
                && rule.resource.as_deref().is_none_or(|r| r == resource_path)
                && (write || !rule.writes_only)
        })?;
        rule.remaining -= 1;
        let fault = rule.fault;
        self.rules.retain(|r| r.remaining > 0);
        self.faults_injected += 1;
        Some(fault)
    }
}
