//! Which resources are planned together.
//!
//! A **deployment** is one SsisdbAvailabilityGroup with the ScaleOutMasterGroups that reference it
//! and the ScaleOutWorkers that reference those master groups. A HostConfig merges contributions
//! from everything on its node, so deployments that share a Windows node are planned together as
//! one **unit** (the connected components of "shares a node"). Independent deployments — the usual
//! case — are each a unit of their own: planned, applied and backed off on their own.
//!
//! Everything here is pure: from the custom resources and the Windows nodes' labels.

use std::collections::{BTreeMap, BTreeSet};

use ssis_crds::{ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup};

use super::inventory::selector_matches;
use super::{NodeInfo, ObjectKey, object_key};

/// A deployment, named by the availability group its master groups reference: `namespace/name`.
/// The group itself need not exist (its master groups then report it missing). Workers whose
/// master group does not exist form a deployment named `namespace/masterless:<master group>`
/// (`:` cannot occur in an object name), so they still get a status and their finalizer.
pub type DeploymentKey = ObjectKey;

/// A unit of planning: its smallest deployment key.
pub type UnitKey = ObjectKey;

/// The deployments and units of a world.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Deployment of every custom resource, by `Kind/namespace/name`.
    pub deployment_of: BTreeMap<String, DeploymentKey>,
    /// Windows nodes each deployment puts something on.
    pub nodes_of: BTreeMap<DeploymentKey, BTreeSet<String>>,
    /// Unit of every deployment.
    pub unit_of: BTreeMap<DeploymentKey, UnitKey>,
    /// Deployments of every unit.
    pub members: BTreeMap<UnitKey, BTreeSet<DeploymentKey>>,
    /// Deployments referencing each Secret, by (namespace, name).
    pub secrets: BTreeMap<(String, String), BTreeSet<DeploymentKey>>,
}

/// Every Secret the custom resources reference, as (namespace, name).
pub fn referenced_secrets<'a>(
    groups: impl IntoIterator<Item = &'a SsisdbAvailabilityGroup>,
    masters: impl IntoIterator<Item = &'a ScaleOutMasterGroup>,
    workers: impl IntoIterator<Item = &'a ScaleOutWorker>,
) -> BTreeSet<(String, String)> {
    let mut refs = BTreeSet::new();
    for group in groups {
        refs.extend(secrets_of_group(group));
    }
    for master in masters {
        refs.extend(secrets_of_master(master));
    }
    for worker in workers {
        refs.extend(secrets_of_worker(worker));
    }
    refs
}

fn named(namespace: &str, names: impl IntoIterator<Item = String>) -> Vec<(String, String)> {
    // An empty name is admitted by no schema, but must not turn into a request.
    names.into_iter().filter(|n| !n.is_empty()).map(|n| (namespace.to_string(), n)).collect()
}

fn secrets_of_group(group: &SsisdbAvailabilityGroup) -> Vec<(String, String)> {
    let spec = &group.spec;
    let mut names = vec![
        spec.admin_credentials.secret.name.clone(),
        spec.catalog_password_secret_ref.name.clone(),
        spec.logging_login.password_secret_ref.name.clone(),
    ];
    names.extend(spec.tls.ca_secret_ref.as_ref().map(|ca| ca.name.clone()));
    named(&namespace(&group.metadata), names)
}

fn secrets_of_master(master: &ScaleOutMasterGroup) -> Vec<(String, String)> {
    let mut names = vec![master.spec.service_account.password_secret_ref.name.clone()];
    names.extend(master.spec.certificate.secret_ref.as_ref().map(|s| s.name.clone()));
    named(&namespace(&master.metadata), names)
}

fn secrets_of_worker(worker: &ScaleOutWorker) -> Vec<(String, String)> {
    let mut names: Vec<String> =
        worker.spec.service_account.iter().map(|a| a.password_secret_ref.name.clone()).collect();
    names.extend(worker.spec.certificate.secret_ref.as_ref().map(|s| s.name.clone()));
    named(&namespace(&worker.metadata), names)
}

/// `Kind/namespace/name`, the key [`Topology::deployment_of`] uses.
pub fn resource_key(kind: &str, object: &ObjectKey) -> String {
    format!("{kind}/{object}")
}

fn namespace(meta: &kube::api::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

impl Topology {
    /// The deployments and units of these resources. `nodes` are every Kubernetes node (pools
    /// select among the Windows ones).
    pub fn of<'a>(
        availability_groups: impl IntoIterator<Item = &'a SsisdbAvailabilityGroup>,
        master_groups: impl IntoIterator<Item = &'a ScaleOutMasterGroup>,
        workers: impl IntoIterator<Item = &'a ScaleOutWorker>,
        nodes: &[NodeInfo],
    ) -> Self {
        let mut topology = Topology::default();
        let add = |topology: &mut Topology, kind: &str, key: &ObjectKey, deployment: &DeploymentKey| {
            topology.deployment_of.insert(resource_key(kind, key), deployment.clone());
            topology.nodes_of.entry(deployment.clone()).or_default();
        };
        for group in availability_groups {
            let key = object_key(&group.metadata);
            add(&mut topology, "SsisdbAvailabilityGroup", &key, &key);
            for secret in secrets_of_group(group) {
                topology.secrets.entry(secret).or_default().insert(key.clone());
            }
            let nodes = topology.nodes_of.entry(key).or_default();
            nodes.extend(group.spec.replicas.iter().filter_map(|r| r.node_name.clone()));
        }
        let mut master_deployment = BTreeMap::new();
        for master in master_groups {
            let key = object_key(&master.metadata);
            let deployment = format!("{}/{}", namespace(&master.metadata), master.spec.availability_group_ref.name);
            add(&mut topology, "ScaleOutMasterGroup", &key, &deployment);
            for secret in secrets_of_master(master) {
                topology.secrets.entry(secret).or_default().insert(deployment.clone());
            }
            topology.nodes_of.entry(deployment.clone()).or_default().extend(master.spec.nodes.iter().cloned());
            master_deployment.insert(key, deployment);
        }
        let windows: Vec<&NodeInfo> = nodes.iter().filter(|n| n.windows).collect();
        for worker in workers {
            let key = object_key(&worker.metadata);
            let master = format!("{}/{}", namespace(&worker.metadata), worker.spec.master_group_ref.name);
            let deployment = master_deployment.get(&master).cloned().unwrap_or_else(|| {
                format!("{}/masterless:{}", namespace(&worker.metadata), worker.spec.master_group_ref.name)
            });
            add(&mut topology, "ScaleOutWorker", &key, &deployment);
            for secret in secrets_of_worker(worker) {
                topology.secrets.entry(secret).or_default().insert(deployment.clone());
            }
            let selected: Vec<String> = match (&worker.spec.node_name, &worker.spec.node_selector) {
                (Some(node), _) => vec![node.clone()],
                (None, Some(selector)) => windows
                    .iter()
                    .filter(|n| selector_matches(selector, &n.labels).unwrap_or(false))
                    .map(|n| n.name.clone())
                    .collect(),
                (None, None) => vec![],
            };
            topology.nodes_of.entry(deployment).or_default().extend(selected);
        }
        topology.group_into_units();
        topology
    }

    /// Union the deployments that share a node; a unit is named by its smallest deployment.
    fn group_into_units(&mut self) {
        let deployments: Vec<&DeploymentKey> = self.nodes_of.keys().collect();
        let index: BTreeMap<&DeploymentKey, usize> = deployments.iter().enumerate().map(|(i, d)| (*d, i)).collect();
        let mut parent: Vec<usize> = (0..deployments.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        let mut first_on_node: BTreeMap<&str, usize> = BTreeMap::new();
        for (deployment, nodes) in &self.nodes_of {
            let i = index[deployment];
            for node in nodes {
                match first_on_node.get(node.as_str()) {
                    Some(&j) => {
                        let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                        // The smaller index (= the smaller key) stays the root.
                        parent[a.max(b)] = a.min(b);
                    }
                    None => {
                        first_on_node.insert(node, i);
                    }
                }
            }
        }
        let mut unit_of = BTreeMap::new();
        let mut members: BTreeMap<UnitKey, BTreeSet<DeploymentKey>> = BTreeMap::new();
        for (i, deployment) in deployments.iter().enumerate() {
            let unit = deployments[root(&mut parent, i)].clone();
            unit_of.insert((*deployment).clone(), unit.clone());
            members.entry(unit).or_default().insert((*deployment).clone());
        }
        self.unit_of = unit_of;
        self.members = members;
    }

    /// The unit a custom resource belongs to.
    pub fn unit_of_resource(&self, kind: &str, key: &ObjectKey) -> Option<&UnitKey> {
        self.deployment_of.get(&resource_key(kind, key)).and_then(|d| self.unit_of.get(d))
    }

    /// Units that put something on `node`.
    pub fn units_on_node(&self, node: &str) -> BTreeSet<UnitKey> {
        self.nodes_of
            .iter()
            .filter(|(_, nodes)| nodes.contains(node))
            .filter_map(|(deployment, _)| self.unit_of.get(deployment).cloned())
            .collect()
    }

    /// Whether a custom resource (`Kind/namespace/name`) belongs to `unit`.
    pub fn in_unit(&self, unit: &UnitKey, kind: &str, key: &ObjectKey) -> bool {
        self.unit_of_resource(kind, key) == Some(unit)
    }

    /// Whether any resource references the Secret `namespace/name`.
    pub fn references_secret(&self, namespace: &str, name: &str) -> bool {
        self.secrets.contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// Units referencing the Secret `namespace/name`.
    pub fn units_of_secret(&self, namespace: &str, name: &str) -> BTreeSet<UnitKey> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|deployment| self.unit_of.get(deployment).cloned())
            .collect()
    }

    /// Nodes of every deployment of `unit`.
    pub fn unit_nodes(&self, unit: &UnitKey) -> BTreeSet<String> {
        self.members
            .get(unit)
            .into_iter()
            .flatten()
            .flat_map(|d| self.nodes_of.get(d).into_iter().flatten().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use ssis_crds::{LocalObjectRef, ScaleOutMasterGroupSpec, ScaleOutWorkerSpec};

    fn master(ns: &str, name: &str, ag: &str, nodes: &[&str]) -> ScaleOutMasterGroup {
        let mut group = ScaleOutMasterGroup::new(
            name,
            ScaleOutMasterGroupSpec {
                availability_group_ref: LocalObjectRef { name: ag.into() },
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                ..Default::default()
            },
        );
        group.metadata.namespace = Some(ns.into());
        group
    }

    fn worker(ns: &str, name: &str, master: &str, node: Option<&str>, pool: Option<&str>) -> ScaleOutWorker {
        let mut worker = ScaleOutWorker::new(
            name,
            ScaleOutWorkerSpec {
                master_group_ref: LocalObjectRef { name: master.into() },
                node_name: node.map(String::from),
                node_selector: pool.map(|p| LabelSelector {
                    match_labels: Some(BTreeMap::from([("pool".to_string(), p.to_string())])),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        worker.metadata.namespace = Some(ns.into());
        worker
    }

    fn node(name: &str, pool: &str) -> NodeInfo {
        NodeInfo { name: name.into(), labels: BTreeMap::from([("pool".to_string(), pool.to_string())]), windows: true }
    }

    #[test]
    fn deployments_that_share_no_node_are_units_of_their_own() {
        let masters = [master("a", "m", "ag", &["sql-a1"]), master("b", "m", "ag", &["sql-b1"])];
        let workers = [worker("a", "w", "m", Some("w-a1"), None), worker("b", "pool", "m", None, Some("b"))];
        let nodes = [node("w-b1", "b"), node("w-b2", "b"), node("w-x", "other")];
        let topology = Topology::of(&[] as &[SsisdbAvailabilityGroup], &masters, &workers, &nodes);
        assert_eq!(topology.unit_of_resource("ScaleOutWorker", &"a/w".into()), Some(&"a/ag".to_string()));
        assert_eq!(topology.unit_of_resource("ScaleOutWorker", &"b/pool".into()), Some(&"b/ag".to_string()));
        assert_eq!(topology.members.len(), 2);
        assert_eq!(
            topology.unit_nodes(&"b/ag".into()),
            BTreeSet::from(["sql-b1".to_string(), "w-b1".into(), "w-b2".into()])
        );
        assert_eq!(topology.units_on_node("w-x"), BTreeSet::new());
    }

    #[test]
    fn deployments_sharing_a_node_are_planned_as_one_unit() {
        let masters = [master("a", "m", "ag", &["sql-1"]), master("b", "m", "ag", &["sql-2"])];
        // A pool of deployment b selects a node that deployment a uses as a single worker.
        let workers = [worker("a", "w", "m", Some("shared"), None), worker("b", "pool", "m", None, Some("p"))];
        let nodes = [node("shared", "p")];
        let topology = Topology::of(&[] as &[SsisdbAvailabilityGroup], &masters, &workers, &nodes);
        assert_eq!(topology.members.len(), 1);
        assert_eq!(topology.unit_of["b/ag"], "a/ag");
        assert_eq!(topology.units_on_node("shared"), BTreeSet::from(["a/ag".to_string()]));
    }

    #[test]
    fn workers_without_their_master_group_get_a_deployment_of_their_own() {
        let workers = [worker("a", "w", "gone", Some("n1"), None)];
        let topology = Topology::of(
            &[] as &[SsisdbAvailabilityGroup],
            &[] as &[ScaleOutMasterGroup],
            &workers,
            &[node("n1", "x")],
        );
        assert_eq!(topology.unit_of_resource("ScaleOutWorker", &"a/w".into()), Some(&"a/masterless:gone".to_string()));
    }
}
