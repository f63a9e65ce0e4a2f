//! What the operator and the agent write with server-side apply stays valid when the API server
//! leaves a struct they stopped sending as `{}` (structured-merge-diff #306; a v1.36.2 server
//! refused the operator's HostConfig with `spec.workerSettings.masterEndpoint: Required value`).
//! See `ssis_crds::optional_object`.

mod support;

use serde_json::{Value, json};
use ssis_crds::{HostConfig, HostConfigSpec, ScaleOutMasterGroupStatus};

/// Optional object properties (not in their parent's `required`) that declare required fields.
fn optional_objects_with_required_fields(path: &str, node: &Value, out: &mut Vec<String>) {
    let required: Vec<&str> =
        node.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let child_path = format!("{path}.{name}");
        let is_object = child.get("type").and_then(Value::as_str) == Some("object");
        let declares_required = child.get("required").and_then(Value::as_array).is_some_and(|r| !r.is_empty());
        if is_object && !required.contains(&name.as_str()) && declares_required {
            out.push(child_path.clone());
        }
        optional_objects_with_required_fields(&child_path, child, out);
    }
    if let Some(items) = node.get("items") {
        optional_objects_with_required_fields(&format!("{path}[]"), items, out);
    }
}

#[test]
fn structs_the_operator_and_agent_may_stop_sending_declare_no_required_fields() {
    let schemas = support::generated_schemas_by_kind();
    let mut offenders = vec![];
    for (kind, schema) in &schemas {
        let properties = &schema["properties"];
        // The operator writes every status and the HostConfig spec; the agent the HostConfig status.
        optional_objects_with_required_fields(&format!("{kind}.status"), &properties["status"], &mut offenders);
        if kind == "HostConfig" {
            optional_objects_with_required_fields("HostConfig.spec", &properties["spec"], &mut offenders);
        }
    }
    assert!(
        offenders.is_empty(),
        "optional structs with required fields would be refused once emptied: {offenders:#?}"
    );
    // The walk finds what it is meant to find: the user-written ScaleOutMasterGroup spec keeps
    // required fields in optional structs (users get the API server's own messages there).
    let mut user = vec![];
    optional_objects_with_required_fields("spec", &schemas["ScaleOutMasterGroup"]["properties"]["spec"], &mut user);
    assert!(user.contains(&"spec.certificate.secretRef".to_string()), "{user:?}");
}

#[test]
fn an_emptied_struct_reads_back_as_absent() {
    let object = json!({
        "apiVersion": "ssis.sqlops.io/v1alpha1", "kind": "HostConfig", "metadata": { "name": "win-1" },
        "spec": {
            "sqlVersion": "160", "workerSettings": {}, "masterSettings": {}, "clusterRole": { "possibleOwners": [] },
            "legacyServiceConfig": {},
            "services": [{ "role": "ScaleOutWorker", "state": "Running", "logon": { "passwordSecretRef": {} } }],
            "certificates": [{ "name": "old", "store": "Root", "thumbprint": "0ED68DF36FD5E40B4104F6A0B6534281D4D1C08A",
                               "ensure": "Absent", "source": {} }]
        },
        "status": { "agent": {}, "drift": {}, "clusterRole": {}, "masterSettings": {}, "workerSettings": {} }
    });
    let host: HostConfig = serde_json::from_value(object).expect("an emptied struct deserializes");
    let spec: &HostConfigSpec = &host.spec;
    assert_eq!(spec.worker_settings, None);
    assert_eq!(spec.master_settings, None);
    assert_eq!(spec.cluster_role, None);
    assert_eq!(spec.legacy_service_config, None);
    assert_eq!(spec.services[0].logon, None);
    assert_eq!(spec.certificates[0].source, None);
    let status = host.status.expect("status");
    assert_eq!((status.agent, status.drift, status.cluster_role), (None, None, None));
    let group: ScaleOutMasterGroupStatus =
        serde_json::from_value(json!({ "rotation": {}, "certificate": {} })).expect("status");
    assert_eq!((group.rotation, group.certificate), (None, None));
    // A struct with fields still needs all of them.
    assert!(
        serde_json::from_value::<HostConfigSpec>(
            json!({ "sqlVersion": "160", "workerSettings": { "masterEndpoint": "https://m:8391" } })
        )
        .is_err()
    );
}
