//! The in-memory API server against kube's own client and runtime: each test pins one behaviour of
//! a real API server that code shaped by a laxer double got wrong.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use ssis_sim_apiserver::{ApiServer, EmptiedContainers, Identity, Options};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "test.sqlops.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct WidgetSpec {
    pub size: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub endpoint: String,
    pub thumbprint: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub struct Item {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

fn widget_crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = serde_json::to_value(Widget::crd()).expect("crd");
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]["items"]["x-kubernetes-list-type"] = "map".into();
    spec["properties"]["items"]["x-kubernetes-list-map-keys"] = json!(["name"]);
    spec["properties"]["size"]["maximum"] = 100.into();
    serde_json::from_value(crd).expect("crd")
}

async fn server(emptied: EmptiedContainers) -> ApiServer {
    let server = ApiServer::new(Options { emptied_containers: emptied, ..Options::default() });
    server.register_crd(&widget_crd()).expect("register");
    server.seed(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "ns" } })).expect("namespace");
    server
}

fn api(server: &ApiServer, who: &str) -> Api<Widget> {
    Api::namespaced(server.client(Identity::new(who, who)), "ns")
}

fn widget(spec: Value) -> Value {
    json!({ "apiVersion": "test.sqlops.io/v1", "kind": "Widget", "metadata": { "name": "w" }, "spec": spec })
}

async fn apply(api: &Api<Widget>, manager: &str, spec: Value) -> Result<Widget, kube::Error> {
    api.patch("w", &PatchParams::apply(manager).force(), &Patch::Apply(widget(spec))).await
}

fn message(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.message),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn a_field_dropped_from_an_applied_configuration_disappears() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    apply(&api, "op", json!({ "size": 1, "note": "n", "items": [{ "name": "a" }, { "name": "b" }] })).await.unwrap();
    let after = apply(&api, "op", json!({ "size": 1, "items": [{ "name": "b" }] })).await.unwrap();
    assert_eq!(after.spec.note, None);
    assert_eq!(after.spec.items, vec![Item { name: "b".into(), value: None }]);
}

#[tokio::test]
async fn an_explicit_null_in_an_applied_configuration_keeps_the_value() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    apply(&api, "op", json!({ "size": 1, "note": "n" })).await.unwrap();
    let after = apply(&api, "op", json!({ "size": 1, "note": null })).await.unwrap();
    assert_eq!(after.spec.note.as_deref(), Some("n"), "a merge patch would delete it; apply keeps it");
}

#[tokio::test]
async fn a_struct_with_required_fields_nulled_or_dropped_is_refused_where_emptied_structs_are_kept() {
    // structured-merge-diff #306 keeps a struct emptied by apply as `{}`; its required fields are
    // then missing, exactly the 422 a v1.36.2 API server answered to the operator's nulls.
    let server = server(EmptiedContainers::KeptEmpty).await;
    let api = api(&server, "op");
    apply(&api, "op", json!({ "size": 1, "settings": { "endpoint": "e", "thumbprint": "t" } })).await.unwrap();
    let nulled = message(apply(&api, "op", json!({ "size": 1, "settings": null })).await.unwrap_err());
    assert!(nulled.starts_with("422 "), "{nulled}");
    assert!(nulled.contains("spec.settings.endpoint: Required value"), "{nulled}");
    assert!(nulled.contains("spec.settings.thumbprint: Required value"), "{nulled}");
    let dropped = message(apply(&api, "op", json!({ "size": 1 })).await.unwrap_err());
    assert!(dropped.contains("spec.settings.endpoint: Required value"), "{dropped}");

    let lenient = server_with_removed().await;
    let api = self::api(&lenient, "op");
    apply(&api, "op", json!({ "size": 1, "settings": { "endpoint": "e", "thumbprint": "t" } })).await.unwrap();
    assert_eq!(apply(&api, "op", json!({ "size": 1 })).await.unwrap().spec.settings, None);
}

async fn server_with_removed() -> ApiServer {
    server(EmptiedContainers::Removed).await
}

#[tokio::test]
async fn fields_another_manager_owns_survive_and_conflicts_need_force() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    apply(&api, "a", json!({ "size": 1, "note": "shared", "items": [{ "name": "x" }] })).await.unwrap();
    apply(&api, "b", json!({ "size": 1, "note": "shared", "items": [{ "name": "y" }] })).await.unwrap();
    let after = apply(&api, "a", json!({ "size": 1 })).await.unwrap();
    assert_eq!(after.spec.note.as_deref(), Some("shared"), "b still owns the note");
    assert_eq!(after.spec.items, vec![Item { name: "y".into(), value: None }], "a's item went, b's stayed");

    let unforced =
        api.patch("w", &PatchParams::apply("b"), &Patch::Apply(widget(json!({ "size": 2 })))).await.unwrap_err();
    let text = message(unforced);
    assert!(text.starts_with("409 Apply failed with 1 conflict"), "{text}");
    assert!(text.contains("conflict with \"a\": .spec.size"), "{text}");
    assert_eq!(apply(&api, "b", json!({ "size": 2 })).await.unwrap().spec.size, 2);
}

#[tokio::test]
async fn schema_validation_refuses_with_field_errors() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    let missing = message(apply(&api, "op", json!({ "note": "n" })).await.unwrap_err());
    assert_eq!(missing, "422 Widget.test.sqlops.io \"w\" is invalid: spec.size: Required value");
    let too_big = message(apply(&api, "op", json!({ "size": 101 })).await.unwrap_err());
    assert!(
        too_big.contains("spec.size: Invalid value: 101: spec.size in body should be less than or equal to 100"),
        "{too_big}"
    );
    let duplicate = message(
        apply(&api, "op", json!({ "size": 1, "items": [{ "name": "a", "value": "1" }, { "name": "a" }] }))
            .await
            .unwrap_err(),
    );
    assert!(duplicate.contains(r#".spec.items: duplicate entries for key [name="a"]"#), "{duplicate}");
    let object: Widget =
        serde_json::from_value(widget(json!({ "size": 1, "items": [{ "name": "a" }, { "name": "a" }] }))).unwrap();
    let created = message(api.create(&PostParams::default(), &object).await.unwrap_err());
    assert!(created.contains(r#"spec.items[1]: Duplicate value: map[string]interface {}{"name":"a"}"#), "{created}");
    let bad_name = json!({ "apiVersion": "test.sqlops.io/v1", "kind": "Widget", "metadata": { "name": "Bad_Name" }, "spec": { "size": 1 } });
    let refused =
        message(api.create(&PostParams::default(), &serde_json::from_value(bad_name).unwrap()).await.unwrap_err());
    assert!(refused.contains("metadata.name: Invalid value: \"Bad_Name\""), "{refused}");
}

#[tokio::test]
async fn the_status_subresource_separates_spec_and_status_writes() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    let created = api
        .patch(
            "w",
            &PatchParams::apply("op"),
            &Patch::Apply(json!({
            "apiVersion": "test.sqlops.io/v1", "kind": "Widget", "metadata": { "name": "w" },
            "spec": { "size": 1 }, "status": { "phase": "Ignored" } })),
        )
        .await
        .unwrap();
    assert_eq!(created.status, None, "status in a main-resource apply is ignored");
    assert_eq!(created.metadata.generation, Some(1));
    let status = api
        .patch_status(
            "w",
            &PatchParams::apply("op"),
            &Patch::Apply(json!({
            "apiVersion": "test.sqlops.io/v1", "kind": "Widget", "metadata": { "name": "w" },
            "spec": { "size": 50 }, "status": { "phase": "Ready" } })),
        )
        .await
        .unwrap();
    assert_eq!(status.spec.size, 1, "a status write cannot change the spec");
    assert_eq!(status.status.and_then(|s| s.phase).as_deref(), Some("Ready"));
    assert_eq!(status.metadata.generation, Some(1), "status changes do not bump the generation");
    let changed = apply(&api, "op", json!({ "size": 2 })).await.unwrap();
    assert_eq!(changed.metadata.generation, Some(2));
    let rv = changed.resource_version();
    let again = apply(&api, "op", json!({ "size": 2 })).await.unwrap();
    assert_eq!(again.resource_version(), rv, "a no-op apply stores nothing");
}

#[tokio::test]
async fn stale_updates_conflict() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    let mut first = apply(&api, "op", json!({ "size": 1 })).await.unwrap();
    apply(&api, "op", json!({ "size": 2 })).await.unwrap();
    first.spec.size = 3;
    let stale = message(api.replace("w", &PostParams::default(), &first).await.unwrap_err());
    assert!(stale.starts_with("409 Operation cannot be fulfilled on widgets.test.sqlops.io \"w\""), "{stale}");
}

#[tokio::test]
async fn deletion_waits_for_finalizers_and_refuses_new_ones() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    apply(&api, "op", json!({ "size": 1 })).await.unwrap();
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "finalizers": ["a/cleanup"] } })))
        .await
        .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("w").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let added = message(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": ["a/cleanup", "b/new"] } })),
        )
        .await
        .unwrap_err(),
    );
    assert!(added.contains("no new finalizers can be added if the object is being deleted"), "{added}");
    // kube-runtime's finalizer helper removes its finalizer with a JSON patch (test + remove).
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/finalizers/0", "value": "a/cleanup" },
        { "op": "remove", "path": "/metadata/finalizers/0" }
    ]))
    .unwrap();
    api.patch::<Widget>("w", &PatchParams::default(), &Patch::Json(patch)).await.unwrap();
    assert!(api.get_opt("w").await.unwrap().is_none(), "gone once the last finalizer is removed");
}

#[tokio::test]
async fn objects_need_an_existing_namespace() {
    let server = server(EmptiedContainers::Removed).await;
    let secrets: Api<Secret> = Api::namespaced(server.client(Identity::new("op", "op")), "missing");
    let secret: Secret = serde_json::from_value(json!({ "metadata": { "name": "s" } })).unwrap();
    let refused = message(secrets.create(&PostParams::default(), &secret).await.unwrap_err());
    assert_eq!(refused, "404 namespaces \"missing\" not found");
    let namespaces: Api<Namespace> = Api::all(server.client(Identity::new("op", "op")));
    assert!(namespaces.get("ns").await.is_ok());
}

#[tokio::test]
async fn secret_string_data_is_stored_as_data() {
    let server = server(EmptiedContainers::Removed).await;
    let secrets: Api<Secret> = Api::namespaced(server.client(Identity::new("op", "op")), "ns");
    let secret: Secret =
        serde_json::from_value(json!({ "metadata": { "name": "s" }, "stringData": { "password": "pw" } })).unwrap();
    let stored = secrets.create(&PostParams::default(), &secret).await.unwrap();
    assert_eq!(stored.string_data, None);
    assert_eq!(stored.data.unwrap()["password"].0, b"pw".to_vec());
}

#[tokio::test]
async fn reflectors_follow_watches_and_selectors() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels("pool=a");
    let stream = reflector(writer, watcher(api.clone(), config)).applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    let labelled = |pool: &str| {
        json!({ "apiVersion": "test.sqlops.io/v1", "kind": "Widget",
                "metadata": { "name": "w", "labels": { "pool": pool } }, "spec": { "size": 1 } })
    };
    api.patch("w", &PatchParams::apply("op"), &Patch::Apply(labelled("a"))).await.unwrap();
    wait_for(|| reader.state().len() == 1).await;
    api.patch("w", &PatchParams::apply("op"), &Patch::Apply(labelled("b"))).await.unwrap();
    wait_for(|| reader.state().is_empty()).await;
    task.abort();
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn metadata_only_lists_and_recorded_reads() {
    let server = server(EmptiedContainers::Removed).await;
    let api = api(&server, "op");
    apply(&api, "op", json!({ "size": 1 })).await.unwrap();
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].name_any(), "w");
    let ledger = server.ledger();
    let verbs: Vec<(String, String)> =
        ledger.requests.keys().filter(|k| k.component == "op").map(|k| (k.verb.clone(), k.resource.clone())).collect();
    assert_eq!(verbs, vec![("list".to_string(), "widgets".to_string()), ("patch".to_string(), "widgets".to_string())]);
}

#[tokio::test]
async fn events_are_validated_like_the_api_server_does() {
    let server = server(EmptiedContainers::Removed).await;
    let client = server.client(Identity::new("op", "op"));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "ns");
    let event = |note: String| -> k8s_openapi::api::events::v1::Event {
        serde_json::from_value(json!({
            "metadata": { "name": "e" }, "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "ssis-operator", "reportingInstance": "x", "action": "Reconcile",
            "reason": "Done", "type": "Normal", "note": note
        }))
        .unwrap()
    };
    let refused = message(events.create(&PostParams::default(), &event("x".repeat(1025))).await.unwrap_err());
    assert!(refused.contains("note: Too long"), "{refused}");
    events.create(&PostParams::default(), &event("fine".into())).await.unwrap();
}
