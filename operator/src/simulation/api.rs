//! The in-memory Kubernetes API of the simulated world: `ssis-sim-apiserver` serving the four CRDs
//! as generated from the types (schema, CEL rules, status subresources), plus Namespaces, Nodes,
//! Secrets, Events and Leases. Every component gets its own `kube::Client` over the same store,
//! so each request is counted by who made it, verb and resource; faults are injected on the way in.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use serde_json::Value;
pub use ssis_sim_apiserver::{ApiFault, FaultRule, Ledger, RequestKey, api_server_cpu_on_this_thread, in_api_server};
use ssis_sim_apiserver::{ApiServer, Identity, Options};

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The operator.
    Operator,
    /// A node agent.
    Agent,
    /// The harness acting as a user (`kubectl apply`, `kubectl label`, `kubectl delete`).
    User,
}

impl Component {
    /// The name requests are recorded under.
    pub fn name(self) -> &'static str {
        match self {
            Component::Operator => "operator",
            Component::Agent => "agent",
            Component::User => "user",
        }
    }

    fn identity(self, operator_namespace: &str) -> Identity {
        let user = match self {
            Component::Operator => format!("system:serviceaccount:{operator_namespace}:ssis-operator"),
            Component::Agent => format!("system:serviceaccount:{operator_namespace}:ssis-agent"),
            Component::User => "kubernetes-admin".to_string(),
        };
        Identity::new(self.name(), user)
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One class of successful writes, as the world counts them: component, verb and resource path
/// (`hostconfigs/status`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteKey {
    pub component: String,
    pub verb: String,
    pub resource: String,
}

/// The API server of a world.
#[derive(Clone)]
pub struct SimulatedApi {
    pub server: ApiServer,
    operator_namespace: String,
}

impl SimulatedApi {
    /// A server with the CRDs registered, the namespaces of `objects` and the operator namespace
    /// created, and `objects` stored as a user would have created them.
    pub async fn new(objects: Vec<Value>, operator_namespace: &str) -> Result<Self, String> {
        let server = ApiServer::new(Options::default());
        for (_, crd) in ssis_crds::generate::all_crds() {
            server.register_crd(&crd)?;
        }
        let mut namespaces: std::collections::BTreeSet<String> =
            objects.iter().filter_map(|o| o["metadata"]["namespace"].as_str().map(String::from)).collect();
        namespaces.insert(operator_namespace.to_string());
        for object in objects.iter().filter(|o| o["kind"] == "Namespace") {
            namespaces.remove(object["metadata"]["name"].as_str().unwrap_or_default());
        }
        for namespace in namespaces {
            server
                .seed(serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace } }))
                .map_err(|e| format!("creating namespace {namespace}: {e}"))?;
        }
        for object in objects {
            let what = format!(
                "{} {}",
                object["kind"].as_str().unwrap_or("?"),
                object["metadata"]["name"].as_str().unwrap_or("?")
            );
            server.seed(object).map_err(|e| format!("storing {what}: {e}"))?;
        }
        Ok(Self { server, operator_namespace: operator_namespace.to_string() })
    }

    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.server.ledger()
    }

    /// Successful writes so far, by component, verb and resource path.
    pub fn writes(&self) -> BTreeMap<WriteKey, u64> {
        let mut writes = BTreeMap::new();
        for (key, n) in &self.ledger().writes {
            let class =
                WriteKey { component: key.component.clone(), verb: key.verb.clone(), resource: key.resource_path() };
            *writes.entry(class).or_default() += n;
        }
        writes
    }

    /// Fail the next requests matching the rule.
    pub fn inject(&self, rule: FaultRule) {
        self.server.inject(rule);
    }

    /// A client for `component`.
    pub fn client(&self, component: Component) -> kube::Client {
        self.server.client(component.identity(&self.operator_namespace))
    }
}

/// A fault rule for one component and resource path (`hostconfigs`, `scaleoutworkers/status`).
pub fn fault(fault: ApiFault, component: Component, resource: &str, remaining: u32) -> FaultRule {
    FaultRule {
        fault,
        component: Some(component.name().to_string()),
        resource: Some(resource.to_string()),
        writes_only: true,
        remaining,
    }
}
