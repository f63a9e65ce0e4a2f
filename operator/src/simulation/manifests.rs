//! What the simulated world is built from: manifests (the bundled examples, files, or a generated
//! fleet) and the Windows nodes and hosts they imply.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use ssis_crds::{ScaleOutMasterGroup, ScaleOutWorker, SqlVersion, SsisdbAvailabilityGroup};

/// The repository's example deployment, embedded so `simulate` works from any directory.
pub const BUNDLED_EXAMPLES: &[(&str, &str)] = &[
    ("examples/00-namespace.yaml", include_str!("../../../examples/00-namespace.yaml")),
    ("examples/10-secrets.yaml", include_str!("../../../examples/10-secrets.yaml")),
    ("examples/20-availability-group.yaml", include_str!("../../../examples/20-availability-group.yaml")),
    ("examples/30-master-group.yaml", include_str!("../../../examples/30-master-group.yaml")),
    ("examples/40-worker-win-worker-1.yaml", include_str!("../../../examples/40-worker-win-worker-1.yaml")),
    ("examples/41-worker-pool-etl.yaml", include_str!("../../../examples/41-worker-pool-etl.yaml")),
];

/// Label kube uses for the node OS.
pub const OS_LABEL: &str = "kubernetes.io/os";

/// Manifests as API objects (Secrets with `stringData` folded into `data`).
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub availability_groups: Vec<SsisdbAvailabilityGroup>,
    pub master_groups: Vec<ScaleOutMasterGroup>,
    pub workers: Vec<ScaleOutWorker>,
    pub secrets: Vec<Secret>,
    /// Nodes given explicitly (name → labels).
    pub nodes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Manifests {
    /// The bundled examples.
    pub fn bundled_examples() -> Result<Self, String> {
        let mut manifests = Self::default();
        for (name, text) in BUNDLED_EXAMPLES {
            manifests.add_text(text, name)?;
        }
        Ok(manifests)
    }

    /// Files or directories (recursively, `.yaml`/`.yml`/`.json`, in name order).
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self, String> {
        let mut files = Vec::new();
        for path in paths {
            collect_files(path, &mut files)?;
        }
        let mut manifests = Self::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            manifests.add_text(&text, &file.display().to_string())?;
        }
        Ok(manifests)
    }

    /// Parse one multi-document YAML text.
    pub fn add_text(&mut self, text: &str, origin: &str) -> Result<(), String> {
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let at = format!("{origin}, document {index}");
            let value: serde_json::Value =
                serde::Deserialize::deserialize(document).map_err(|e| format!("{at}: not valid YAML: {e}"))?;
            if value.is_null() {
                continue;
            }
            let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            match (field("apiVersion").as_str(), field("kind").as_str()) {
                ("ssis.sqlops.io/v1alpha1", "SsisdbAvailabilityGroup") => {
                    self.availability_groups.push(typed(value, &at)?)
                }
                ("ssis.sqlops.io/v1alpha1", "ScaleOutMasterGroup") => self.master_groups.push(typed(value, &at)?),
                ("ssis.sqlops.io/v1alpha1", "ScaleOutWorker") => self.workers.push(typed(value, &at)?),
                ("v1", "Secret") => {
                    let mut secret: Secret = typed(value, &at)?;
                    let mut data = secret.data.take().unwrap_or_default();
                    for (key, text) in secret.string_data.take().unwrap_or_default() {
                        data.insert(key, ByteString(text.into_bytes()));
                    }
                    secret.data = Some(data);
                    self.secrets.push(secret);
                }
                ("v1", "Node") => {
                    let node: k8s_openapi::api::core::v1::Node = typed(value, &at)?;
                    self.nodes.insert(node.metadata.name.unwrap_or_default(), node.metadata.labels.unwrap_or_default());
                }
                ("v1", "Namespace") => {}
                (api_version, kind) => {
                    return Err(format!(
                        "{at}: unknown kind {kind} ({api_version}); the simulation reads SsisdbAvailabilityGroup, \
                         ScaleOutMasterGroup, ScaleOutWorker, Secret, Node and Namespace"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The Windows nodes the manifests need: every master node, every named worker node, every
    /// replica node, plus one node per pool carrying the pool's `matchLabels` (named
    /// `win-worker-<n>` after the named workers). Explicit Nodes keep their labels.
    pub fn windows_nodes(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let windows = || BTreeMap::from([(OS_LABEL.to_string(), "windows".to_string())]);
        let mut nodes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (name, labels) in &self.nodes {
            nodes.insert(name.clone(), labels.clone());
        }
        let referenced = self
            .master_groups
            .iter()
            .flat_map(|m| m.spec.nodes.iter().cloned())
            .chain(self.workers.iter().filter_map(|w| w.spec.node_name.clone()))
            .chain(
                self.availability_groups
                    .iter()
                    .flat_map(|a| a.spec.replicas.iter().filter_map(|r| r.node_name.clone())),
            );
        for name in referenced {
            nodes.entry(name).or_insert_with(windows);
        }
        let mut next_worker = self.workers.iter().filter(|w| w.spec.node_name.is_some()).count() + 1;
        for worker in &self.workers {
            let Some(labels) = worker.spec.node_selector.as_ref().and_then(|s| s.match_labels.clone()) else {
                continue;
            };
            let already = nodes.values().any(|l| labels.iter().all(|(k, v)| l.get(k) == Some(v)));
            if labels.is_empty() || already {
                continue;
            }
            let mut name = format!("win-worker-{next_worker}");
            while nodes.contains_key(&name) {
                next_worker += 1;
                name = format!("win-worker-{next_worker}");
            }
            next_worker += 1;
            let mut node_labels = windows();
            node_labels.extend(labels);
            nodes.insert(name, node_labels);
        }
        nodes
    }

    /// What setup installed on each node: masters get the Scale Out Master and the legacy
    /// service, workers the Scale Out Worker; the SQL version comes from the master group.
    pub fn host_features(&self, nodes: &BTreeMap<String, BTreeMap<String, String>>) -> BTreeMap<String, HostSetup> {
        let mut setups: BTreeMap<String, HostSetup> = BTreeMap::new();
        let group_version = |namespace: &str, name: &str| {
            self.master_groups
                .iter()
                .find(|m| {
                    m.metadata.namespace.as_deref() == Some(namespace) && m.metadata.name.as_deref() == Some(name)
                })
                .map(|m| m.spec.sql_version)
        };
        for master in &self.master_groups {
            for node in &master.spec.nodes {
                let setup = setups.entry(node.clone()).or_insert_with(|| HostSetup::new(master.spec.sql_version));
                setup.master = true;
                setup.legacy = true;
            }
        }
        for worker in &self.workers {
            let namespace = worker.metadata.namespace.clone().unwrap_or_default();
            let version = group_version(&namespace, &worker.spec.master_group_ref.name).unwrap_or_default();
            let selected: Vec<String> = match (&worker.spec.node_name, &worker.spec.node_selector) {
                (Some(node), _) => vec![node.clone()],
                (None, Some(selector)) => {
                    let wanted = selector.match_labels.clone().unwrap_or_default();
                    nodes
                        .iter()
                        .filter(|(_, labels)| {
                            !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
                        })
                        .map(|(name, _)| name.clone())
                        .collect()
                }
                (None, None) => vec![],
            };
            for node in selected {
                setups.entry(node).or_insert_with(|| HostSetup::new(version)).worker = true;
            }
        }
        for node in nodes.keys() {
            setups.entry(node.clone()).or_insert_with(|| HostSetup::new(SqlVersion::default()));
        }
        setups
    }

    /// Every object to store in the API, as JSON.
    pub fn api_objects(&self) -> Vec<serde_json::Value> {
        let mut objects = Vec::new();
        let json = |value: serde_json::Result<serde_json::Value>| value.unwrap_or_default();
        for secret in &self.secrets {
            let mut value = json(serde_json::to_value(secret));
            value["apiVersion"] = "v1".into();
            value["kind"] = "Secret".into();
            objects.push(value);
        }
        objects.extend(self.availability_groups.iter().map(|o| json(serde_json::to_value(o))));
        objects.extend(self.master_groups.iter().map(|o| json(serde_json::to_value(o))));
        objects.extend(self.workers.iter().map(|o| json(serde_json::to_value(o))));
        objects
    }
}

/// What SQL Server setup installed on one simulated node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSetup {
    pub version: SqlVersion,
    pub master: bool,
    pub worker: bool,
    pub legacy: bool,
}

impl HostSetup {
    pub fn new(version: SqlVersion) -> Self {
        Self { version, master: false, worker: false, legacy: false }
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| format!("{at}: invalid manifest at field {}: {}", e.path(), e.inner()))
}

/// A Windows Node object.
pub fn node_object(name: &str, labels: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name, "labels": labels } })
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if !metadata.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("listing {}: {e}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        let manifest = entry.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if entry.is_dir() {
            collect_files(&entry, files)?;
        } else if manifest {
            files.push(entry);
        }
    }
    Ok(())
}

/// A generated fleet: `groups` master groups (each with its own availability group of two
/// replicas on its two master nodes) and a pool of `workers_per_group` workers each, in namespace
/// `fleet`. Hosts: `groups × (2 + workers_per_group)`.
pub fn fleet(groups: usize, workers_per_group: usize) -> Manifests {
    let mut text = String::new();
    text.push_str(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: sql-admin, namespace: fleet}\nstringData: {username: ssis-operator, password: fleet-admin}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: ssisdb-catalog, namespace: fleet}\nstringData: {password: fleet-catalog}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: ssis-logging-login, namespace: fleet}\nstringData: {password: fleet-logging}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: ssis-master-service-account, namespace: fleet}\nstringData: {password: fleet-master}\n",
    );
    let mut nodes = BTreeSet::new();
    for g in 0..groups {
        let (a, b) = (format!("m{g:03}a"), format!("m{g:03}b"));
        text.push_str(&format!(
            "---\napiVersion: ssis.sqlops.io/v1alpha1\nkind: SsisdbAvailabilityGroup\nmetadata: {{name: ag-{g:03}, namespace: fleet}}\n\
             spec:\n  availabilityGroupName: AG_{g:03}\n  replicas:\n  - {{name: {ua}, host: {a}.corp.example.com, nodeName: {a}}}\n  - {{name: {ub}, host: {b}.corp.example.com, nodeName: {b}}}\n\
             \x20 listener: {{name: agl-{g:03}, dnsDomain: corp.example.com, port: 1433}}\n  adminCredentials: {{name: sql-admin}}\n  tls: {{insecureSkipVerify: true}}\n\
             \x20 catalogPasswordSecretRef: {{name: ssisdb-catalog, key: password}}\n  loggingLogin: {{passwordSecretRef: {{name: ssis-logging-login, key: password}}}}\n\
             ---\napiVersion: ssis.sqlops.io/v1alpha1\nkind: ScaleOutMasterGroup\nmetadata: {{name: master-{g:03}, namespace: fleet}}\n\
             spec:\n  sqlVersion: \"160\"\n  availabilityGroupRef: {{name: ag-{g:03}}}\n  masterService: {{dnsName: ssism-{g:03}.corp.example.com, port: 8391}}\n\
             \x20 nodes: [{a}, {b}]\n  certificate: {{generate: {{validityDays: 365, renewBeforeDays: 30}}}}\n\
             \x20 serviceAccount: {{username: 'CORP\\svc-master-{g:03}', passwordSecretRef: {{name: ssis-master-service-account, key: password}}}}\n\
             ---\napiVersion: ssis.sqlops.io/v1alpha1\nkind: ScaleOutWorker\nmetadata: {{name: pool-{g:03}, namespace: fleet}}\n\
             spec:\n  masterGroupRef: {{name: master-{g:03}}}\n  nodeSelector: {{matchLabels: {{fleet-pool: p{g:03}}}}}\n",
            ua = a.to_uppercase(),
            ub = b.to_uppercase(),
        ));
        nodes.insert(a);
        nodes.insert(b);
        for w in 0..workers_per_group {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Node\nmetadata: {{name: w{g:03}-{w:03}, labels: {{kubernetes.io/os: windows, fleet-pool: p{g:03}}}}}\n"
            ));
        }
    }
    let mut manifests = Manifests::default();
    manifests.add_text(&text, "generated fleet").expect("the generated fleet is valid");
    manifests
}
