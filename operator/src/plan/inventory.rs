//! What the planner knows about Windows nodes: which exist, whose agent reports, what each
//! HostConfig status says was applied, and which custom resources claim which node.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use ssis_crds::{
    CertStore, Ensure, HostConfig, HostConfigSpec, ItemState, ObservedClusterRole, ServiceRole, SqlVersion,
};

use super::{NodeInfo, ObjectKey, PlanInput};

/// An agent whose last heartbeat is older than this is reported as not reporting.
pub const AGENT_STALE_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// HostConfig item names, as the agent reports them in `status.items[].name` and as
/// `restartOnChangeOf` references them.
pub mod item_name {
    use ssis_crds::ServiceRole;

    pub const MASTER_SETTINGS: &str = "masterSettings";
    pub const WORKER_SETTINGS: &str = "workerSettings";
    pub const LEGACY_SERVICE_CONFIG: &str = "legacyServiceConfig";

    /// The agent names the cluster role item after the role (agent `item_names::cluster_role`).
    pub fn cluster_role(name: &str) -> String {
        format!("clusterRole/{name}")
    }

    pub fn certificate(name: &str) -> String {
        format!("certificate/{name}")
    }

    pub fn http_ssl_binding(ip_port: &str) -> String {
        format!("httpSslBinding/{ip_port}")
    }

    pub fn registry_value(name: &str) -> String {
        format!("registryValue/{name}")
    }

    pub fn service(role: ServiceRole) -> String {
        let role = match role {
            ServiceRole::ScaleOutMaster => "ScaleOutMaster",
            ServiceRole::ScaleOutWorker => "ScaleOutWorker",
            ServiceRole::LegacySsisService => "LegacySsisService",
        };
        format!("service/{role}")
    }
}

/// Why a node's agent cannot be relied on this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentProblem {
    /// No HostConfig exists yet (first pass) or it has no status.
    NeverReported,
    /// The last heartbeat is older than [`AGENT_STALE_AFTER`].
    Stale { last_heartbeat: String },
}

impl AgentProblem {
    pub fn describe(&self, node: &str) -> String {
        match self {
            AgentProblem::NeverReported => format!(
                "the ssis-agent on node {node} has not reported yet; check that its DaemonSet pod runs on {node} \
                 (kubectl -n <operator namespace> get pods -o wide)"
            ),
            AgentProblem::Stale { last_heartbeat } => format!(
                "the ssis-agent on node {node} last reported at {last_heartbeat} (more than {} minutes ago); \
                 check its pod and the node",
                AGENT_STALE_AFTER.as_mins()
            ),
        }
    }
}

/// A node that cannot take items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeProblem {
    NotFound,
    NotWindows,
}

impl NodeProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            NodeProblem::NotFound => "NodeNotFound",
            NodeProblem::NotWindows => "NodeNotWindows",
        }
    }

    pub fn describe(&self, node: &str, field: &str) -> String {
        match self {
            NodeProblem::NotFound => {
                format!("{field}: node {node} does not exist in the cluster; fix the node name or join the node")
            }
            NodeProblem::NotWindows => format!(
                "{field}: node {node} is not a Windows node (label kubernetes.io/os=windows); SSIS runs only on Windows nodes"
            ),
        }
    }
}

/// Read-only view over nodes and HostConfigs. Lookups the planner makes once per worker node are
/// indexed here, so a pass stays linear in the number of nodes.
pub struct Inventory<'a> {
    now: jiff::Timestamp,
    agent_leases: &'a BTreeMap<String, jiff::Timestamp>,
    nodes: BTreeMap<&'a str, &'a NodeInfo>,
    host_configs: BTreeMap<&'a str, &'a HostConfig>,
    /// Windows nodes by the (upper-case) worker `AgentId` their agent reports, in node-name order.
    nodes_by_agent_id: BTreeMap<String, Vec<&'a str>>,
    /// Node by ASCII-lower-case Windows computer name; the first node in name order wins.
    nodes_by_computer_name: BTreeMap<String, &'a str>,
}

impl<'a> Inventory<'a> {
    pub fn new(input: &'a PlanInput) -> Self {
        let mut inventory = Self {
            now: input.now,
            agent_leases: &input.agent_leases,
            nodes: input.nodes.iter().map(|n| (n.name.as_str(), n)).collect(),
            host_configs: input
                .host_configs
                .iter()
                .filter_map(|hc| hc.metadata.name.as_deref().map(|name| (name, hc)))
                .collect(),
            nodes_by_agent_id: BTreeMap::new(),
            nodes_by_computer_name: BTreeMap::new(),
        };
        for node in inventory.windows_nodes().map(|n| n.name.as_str()).collect::<Vec<_>>() {
            if let Some(agent_id) = inventory.worker_agent_id(node) {
                inventory.nodes_by_agent_id.entry(agent_id).or_default().push(node);
            }
        }
        for (name, hc) in &inventory.host_configs {
            let computer =
                hc.status.as_ref().and_then(|s| s.agent.as_ref()).map(|a| a.computer_name.to_ascii_lowercase());
            if let Some(computer) = computer {
                inventory.nodes_by_computer_name.entry(computer).or_insert(name);
            }
        }
        inventory
    }

    pub fn windows_nodes(&self) -> impl Iterator<Item = &'a NodeInfo> + '_ {
        self.nodes.values().copied().filter(|n| n.windows)
    }

    pub fn node_problem(&self, node: &str) -> Option<NodeProblem> {
        match self.nodes.get(node) {
            None => Some(NodeProblem::NotFound),
            Some(info) if !info.windows => Some(NodeProblem::NotWindows),
            Some(_) => None,
        }
    }

    pub fn node_exists(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Liveness: the agent's Lease renewal, or (agents without a Lease) the last status it wrote.
    pub fn agent_problem(&self, node: &str) -> Option<AgentProblem> {
        let agent = self.host_configs.get(node).and_then(|hc| hc.status.as_ref()).and_then(|s| s.agent.as_ref());
        let from_status = agent.and_then(|a| a.last_heartbeat_time.parse::<jiff::Timestamp>().ok());
        let last = self.agent_leases.get(node).copied().into_iter().chain(from_status).max();
        if agent.is_none() {
            return Some(AgentProblem::NeverReported);
        }
        match last {
            Some(last) if self.now.duration_since(last) <= AGENT_STALE_AFTER => None,
            Some(last) => Some(AgentProblem::Stale { last_heartbeat: last.to_string() }),
            None => Some(AgentProblem::Stale { last_heartbeat: "never".into() }),
        }
    }

    pub fn computer_name(&self, node: &str) -> Option<&'a str> {
        let status = self.host_configs.get(node)?.status.as_ref()?;
        status.agent.as_ref().map(|a| a.computer_name.as_str()).filter(|c| !c.is_empty())
    }

    /// Node whose agent reports this Windows computer name (case-insensitive, like Windows).
    pub fn node_by_computer_name(&self, computer: &str) -> Option<&'a str> {
        self.nodes_by_computer_name.get(&computer.to_ascii_lowercase()).copied()
    }

    /// Windows nodes other than `node` whose agent reports the same worker `AgentId` (a cloned image).
    pub fn other_nodes_with_agent_id(&self, node: &str, agent_id: &str) -> Vec<&'a str> {
        let nodes = self.nodes_by_agent_id.get(&agent_id.to_ascii_uppercase());
        nodes.into_iter().flatten().copied().filter(|other| *other != node).collect()
    }

    /// The agent applied the current spec generation and reports `item` Applied, and the current
    /// spec satisfies `expected` (so an Applied state of an older content does not count).
    pub fn applied(&self, node: &str, item: &str, expected: impl Fn(&HostConfigSpec) -> bool) -> bool {
        let Some(hc) = self.host_configs.get(node) else { return false };
        let Some(status) = hc.status.as_ref() else { return false };
        let generation_current = match (hc.metadata.generation, status.observed_generation) {
            (Some(generation), Some(observed)) => generation == observed,
            (None, Some(_)) => true,
            _ => false,
        };
        generation_current
            && expected(&hc.spec)
            && status.items.iter().any(|i| i.name == item && i.state == ItemState::Applied)
    }

    /// A certificate item for this store and thumbprint with this `ensure` is in effect (looked up
    /// by store and thumbprint, so it holds whichever contribution's name survived the merge).
    pub fn certificate_applied(&self, node: &str, store: CertStore, thumbprint: &str, ensure: Ensure) -> bool {
        let Some(hc) = self.host_configs.get(node) else { return false };
        let item = hc
            .spec
            .certificates
            .iter()
            .find(|c| c.store == store && c.thumbprint.eq_ignore_ascii_case(thumbprint) && c.ensure == ensure);
        match item {
            Some(item) => self.applied(node, &item_name::certificate(&item.name), |_| true),
            None => false,
        }
    }

    /// Failed or Refused items of a node whose name satisfies `filter`, as `item: message`.
    pub fn failed_items(&self, node: &str, filter: impl Fn(&str) -> bool) -> Vec<String> {
        let Some(status) = self.host_configs.get(node).and_then(|hc| hc.status.as_ref()) else { return vec![] };
        status
            .items
            .iter()
            .filter(|i| matches!(i.state, ItemState::Failed | ItemState::Refused) && filter(&i.name))
            .map(|i| {
                let detail = i.message.as_deref().or(i.reason.as_deref()).unwrap_or("no detail");
                format!("{} {:?}: {detail}", i.name, i.state)
            })
            .collect()
    }

    /// `AgentId` from WorkerSettings.config as the agent reports it (upper-case).
    pub fn worker_agent_id(&self, node: &str) -> Option<String> {
        let status = self.host_configs.get(node)?.status.as_ref()?;
        let id = status.worker_settings.as_ref()?.values.get("AgentId")?.trim();
        (!id.is_empty()).then(|| id.to_ascii_uppercase())
    }

    pub fn service_state(&self, node: &str, role: ServiceRole) -> Option<String> {
        let status = self.host_configs.get(node)?.status.as_ref()?;
        status.services.iter().find(|s| s.role == role).and_then(|s| s.state.clone())
    }

    pub fn service_installed(&self, node: &str, role: ServiceRole) -> Option<bool> {
        let status = self.host_configs.get(node)?.status.as_ref()?;
        status.services.iter().find(|s| s.role == role).map(|s| s.installed)
    }

    pub fn cluster_role(&self, node: &str) -> Option<&'a ObservedClusterRole> {
        self.host_configs.get(node)?.status.as_ref()?.cluster_role.as_ref()
    }
}

/// Label selector matching (`matchLabels` and `matchExpressions`).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let labels_match =
        selector.match_labels.iter().flatten().all(|(key, value)| labels.get(key).is_some_and(|v| v == value));
    let mut expressions_match = true;
    for (index, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let values = requirement.values.as_deref().unwrap_or_default();
        let value = labels.get(&requirement.key);
        let matches = match requirement.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(format!(
                    "spec.nodeSelector.matchExpressions[{index}].operator: unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                ));
            }
        };
        expressions_match &= matches;
    }
    Ok(labels_match && expressions_match)
}

/// Which kind of custom resource claims something on a node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    MasterGroup(ObjectKey),
    Worker(ObjectKey),
}

impl Owner {
    pub fn describe(&self) -> String {
        match self {
            Owner::MasterGroup(key) => format!("ScaleOutMasterGroup {key}"),
            Owner::Worker(key) => format!("ScaleOutWorker {key}"),
        }
    }
}

/// One claim of a node by a custom resource: the service it runs and the SQL version it needs.
#[derive(Clone, Debug)]
pub struct Claim {
    pub owner: Owner,
    pub node: String,
    pub version: SqlVersion,
}

/// Conflicting claims, computed from the specs before anything is planned so that no conflicting
/// item reaches any node.
#[derive(Clone, Debug, Default)]
pub struct Conflicts {
    by_owner_node: BTreeMap<(Owner, String), (String, String)>,
}

impl Conflicts {
    /// Reference: one master service and one worker service per node (§1: the service names are
    /// per machine), and one SQL version per node (service names and paths derive from it).
    pub fn detect(claims: &[Claim]) -> Self {
        let mut by_node: BTreeMap<&str, Vec<&Claim>> = BTreeMap::new();
        for claim in claims {
            by_node.entry(claim.node.as_str()).or_default().push(claim);
        }
        let mut conflicts = Conflicts::default();
        for (node, claims) in by_node {
            let versions: BTreeSet<SqlVersion> = claims.iter().map(|c| c.version).collect();
            if versions.len() > 1 {
                let described = claims
                    .iter()
                    .map(|c| format!("{} wants {}", c.owner.describe(), c.version))
                    .collect::<Vec<_>>()
                    .join(", ");
                for claim in &claims {
                    conflicts.by_owner_node.insert(
                        (claim.owner.clone(), node.to_string()),
                        (
                            "SqlVersionConflict".into(),
                            format!(
                                "node {node} is claimed with different SQL versions ({described}); a node runs one SSIS \
                                 version: make the sqlVersion of these resources agree or use other nodes"
                            ),
                        ),
                    );
                }
                continue;
            }
            let masters: Vec<&&Claim> = claims.iter().filter(|c| matches!(c.owner, Owner::MasterGroup(_))).collect();
            if masters.len() > 1 {
                let names = masters.iter().map(|c| c.owner.describe()).collect::<Vec<_>>().join(" and ");
                for claim in &masters {
                    conflicts.by_owner_node.insert(
                        (claim.owner.clone(), node.to_string()),
                        (
                            "MasterNodeConflict".into(),
                            format!(
                                "node {node} is listed by {names}; a node has one Scale Out Master service: remove it from \
                                 all but one group's spec.nodes"
                            ),
                        ),
                    );
                }
            }
            let workers: Vec<&&Claim> = claims.iter().filter(|c| matches!(c.owner, Owner::Worker(_))).collect();
            if workers.len() > 1 {
                let names = workers.iter().map(|c| c.owner.describe()).collect::<Vec<_>>().join(" and ");
                for claim in &workers {
                    conflicts.by_owner_node.insert(
                        (claim.owner.clone(), node.to_string()),
                        (
                            "WorkerNodeConflict".into(),
                            format!(
                                "node {node} is enrolled by {names}; a node has one Scale Out Worker service: narrow the \
                                 nodeSelector or nodeName so only one ScaleOutWorker selects it"
                            ),
                        ),
                    );
                }
            }
        }
        conflicts
    }

    /// `(reason, message)` when this owner's claim of `node` conflicts.
    pub fn get(&self, owner: &Owner, node: &str) -> Option<&(String, String)> {
        self.by_owner_node.get(&(owner.clone(), node.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selector_supports_every_operator_and_names_an_unknown_one() {
        let labels = BTreeMap::from([("pool".to_string(), "etl".to_string())]);
        let selector =
            |r: LabelSelectorRequirement| LabelSelector { match_expressions: Some(vec![r]), match_labels: None };
        assert_eq!(selector_matches(&selector(requirement("pool", "In", &["etl", "x"])), &labels), Ok(true));
        assert_eq!(selector_matches(&selector(requirement("pool", "NotIn", &["etl"])), &labels), Ok(false));
        assert_eq!(selector_matches(&selector(requirement("pool", "Exists", &[])), &labels), Ok(true));
        assert_eq!(selector_matches(&selector(requirement("gpu", "DoesNotExist", &[])), &labels), Ok(true));
        let error =
            selector_matches(&selector(requirement("pool", "Gt", &["1"])), &labels).expect_err("unknown operator");
        assert!(error.contains("matchExpressions[0].operator") && error.contains("Gt"));
    }

    #[test]
    fn conflicts_flag_every_claim_on_a_node_with_two_versions() {
        let claim = |owner: Owner, version| Claim { owner, node: "n".into(), version };
        let conflicts = Conflicts::detect(&[
            claim(Owner::MasterGroup("a/m".into()), SqlVersion::V160),
            claim(Owner::Worker("a/w".into()), SqlVersion::V150),
        ]);
        assert_eq!(
            conflicts.get(&Owner::MasterGroup("a/m".into()), "n").map(|c| c.0.as_str()),
            Some("SqlVersionConflict")
        );
        assert!(conflicts.get(&Owner::Worker("a/w".into()), "n").is_some());
        assert!(conflicts.get(&Owner::Worker("a/w".into()), "other").is_none());
    }
}
