//! `ScaleOutWorker`: one Scale Out Worker node, or a pool of every Windows node matching a selector,
//! enrolled with a master group (reference §7, §8).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CertificateSource, LocalObjectRef, WindowsAccount};
use crate::v1alpha1::master_group::RotationStatus;

/// Desired state of a worker or a pool of workers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[kube(
    group = "ssis.sqlops.io",
    version = "v1alpha1",
    kind = "ScaleOutWorker",
    namespaced,
    status = "ScaleOutWorkerStatus",
    shortname = "ssisworker",
    category = "ssis",
    derive = "Default",
    derive = "PartialEq",
    doc = "ScaleOutWorker enrolls one Windows node (spec.nodeName) or a pool of Windows nodes \
           (spec.nodeSelector, including nodes that join later) as SSIS Scale Out Workers of a \
           ScaleOutMasterGroup: it trusts the master certificate on the worker, trusts each worker's client \
           certificate on every master node, points WorkerSettings.config at the master, waits for the worker \
           to register in SSISDB and enables it. Deleting it disables the workers and removes their \
           certificates from the masters.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Master","type":"string","jsonPath":".spec.masterGroupRef.name"}"#,
    printcolumn = r#"{"name":"Enrolled","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.nodeName) != has(self.nodeSelector)").message("spec: set exactly one of spec.nodeName (a single worker) or spec.nodeSelector (a pool); remove the other"))]
#[x_kube(validation = Rule::new("!has(self.certificate.secretRef) || has(self.nodeName)").message("spec.certificate.secretRef gives one certificate and can only be used with spec.nodeName; use certificate.generate for a pool"))]
#[x_kube(validation = Rule::new("!has(self.nodeSelector) || (has(self.nodeSelector.matchLabels) && size(self.nodeSelector.matchLabels) > 0) || (has(self.nodeSelector.matchExpressions) && size(self.nodeSelector.matchExpressions) > 0)").message("spec.nodeSelector: an empty selector would enroll every Windows node; add matchLabels or matchExpressions (e.g. ssis.sqlops.io/worker-pool: etl)"))]
#[x_kube(validation = Rule::new("!has(self.nodeSelector) || !has(self.displayName) || self.displayName.contains('{node}')").message("spec.displayName: a pool gives every worker the same display name unless it contains {node}; add {node} (e.g. 'ETL {node}') or remove displayName"))]
pub struct ScaleOutWorkerSpec {
    /// The `ScaleOutMasterGroup` (same namespace) this worker enrolls with.
    pub master_group_ref: LocalObjectRef,

    /// A single Windows node to enroll (Kubernetes node name). Exactly one of `nodeName` and
    /// `nodeSelector` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub node_name: Option<String>,

    /// A pool: every Windows node matching this selector is enrolled, including nodes that appear
    /// later; nodes that stop matching are removed (disabled and untrusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = label_selector_lists_atomic)]
    pub node_selector: Option<LabelSelector>,

    /// Whether the workers accept executions (`catalog.enable_worker_agent` /
    /// `catalog.disable_worker_agent`). New workers register disabled (pitfall 14).
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Display name set with `catalog.set_worker_agent_property` (`{node}` is replaced by the node
    /// name; a pool's display name must contain it). Not used by SQL Server 2017.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^\S(.*\S)?$"))]
    pub display_name: Option<String>,

    /// Description set with `catalog.set_worker_agent_property`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,

    /// Tags set with `catalog.set_worker_agent_property` (joined with `,`, so a tag cannot contain a
    /// comma). Executions can be targeted at workers by tag. Distinct (a list-type set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64), regex(pattern = r"^[^,\s]([^,]*[^,\s])?$")))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub tags: Vec<String>,

    /// The worker client certificate. `generate` (default) creates one per node; `secretRef` uses
    /// an existing `kubernetes.io/tls` Secret (single node only).
    #[serde(default = "default_worker_certificate")]
    pub certificate: CertificateSource,

    /// Account the worker service runs as. Absent: keep the installed logon (the virtual account
    /// `NT Service\SSISScaleOutWorker<ver>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<WindowsAccount>,
}

fn default_true() -> bool {
    true
}

/// k8s-openapi's `LabelSelector` schema carries no list types; Kubernetes declares
/// `matchExpressions` and each requirement's `values` as `+listType=atomic`
/// (k8s.io/apimachinery/pkg/apis/meta/v1/types.go), so say the same here.
fn label_selector_lists_atomic(schema: &mut schemars::Schema) {
    fn walk(map: &mut serde_json::Map<String, serde_json::Value>) {
        if let Some(expressions) = map.get_mut("properties").and_then(|p| p.get_mut("matchExpressions")) {
            expressions["x-kubernetes-list-type"] = "atomic".into();
            if let Some(values) = expressions.pointer_mut("/items/properties/values") {
                values["x-kubernetes-list-type"] = "atomic".into();
            }
        }
        for child in map.values_mut() {
            match child {
                serde_json::Value::Object(child) => walk(child),
                serde_json::Value::Array(items) => items.iter_mut().filter_map(|i| i.as_object_mut()).for_each(walk),
                _ => {}
            }
        }
    }
    walk(schema.ensure_object());
}

fn default_worker_certificate() -> CertificateSource {
    CertificateSource { secret_ref: None, generate: Some(Default::default()) }
}

/// Observed state of a worker or pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleOutWorkerStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// `ready/desired` nodes, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Per-node enrollment state.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["nodeName".into()]))]
    pub nodes: Vec<WorkerNodeStatus>,
}

/// Enrollment phases of one worker node (reference §8).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum WorkerPhase {
    /// Waiting for the node's agent to report.
    #[default]
    Pending,
    /// Certificates and WorkerSettings being installed.
    Configuring,
    /// Waiting for the worker to register itself in `catalog.worker_agents`.
    Registering,
    /// Registered; being enabled / disabled / described.
    Enabling,
    /// Enrolled and in the desired enabled state.
    Ready,
    /// Being removed (disabled, untrusted on every master).
    Removing,
    /// Blocked; see message.
    Failed,
}

/// Enrollment state of one worker node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerNodeStatus {
    /// Kubernetes node name.
    pub node_name: String,
    /// Enrollment phase.
    pub phase: WorkerPhase,
    /// `WorkerAgentId` (the `AgentId` of WorkerSettings.config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_agent_id: Option<String>,
    /// Present in `catalog.worker_agents`.
    pub registered: bool,
    /// `IsEnabled` in `catalog.worker_agents`.
    pub enabled: bool,
    /// `LastOnlineTime` from `catalog.worker_agents` (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_online_time: Option<String>,
    /// Thumbprint of the worker client certificate in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_thumbprint: Option<String>,
    /// Expiry of the worker certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
    /// Thumbprint being rolled out during a worker certificate rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotating_to_thumbprint: Option<String>,
    /// Progress of a worker certificate rotation: `TrustingNew` (new certificate trusted on every
    /// master node) → `SwitchingWorkers` (`WorkerHttpsCertThumbprint` switched) → `RemovingOld`.
    #[serde(default, deserialize_with = "crate::common::empty_as_none", skip_serializing_if = "Option::is_none")]
    pub certificate_rotation: Option<RotationStatus>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
