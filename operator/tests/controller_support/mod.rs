//! Shared fixtures of the controller tests: an in-memory API server that validates like a real
//! one (`ssis-sim-apiserver`), a fake SQL catalog that records actions, and a certificate issuer
//! without cryptography.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ObjectMeta;
use ssis_crds::host_secret_keys;
use ssis_operator::catalog::{
    Catalog, CatalogError, CatalogObservation, CatalogTarget, SecretString, SecretValue, SqlAction,
};
use ssis_operator::controller::{CertificateIssuer, Context, ManualClock, SecretData};
use ssis_operator::plan::{CertificateRequest, CertificateRequestSource, IssuedCertificate};
use ssis_sim_apiserver::{ApiServer, Identity, Options};

pub const OPERATOR_NS: &str = "ssis-system";

/// The identity the operator's client sends requests as.
pub fn operator_identity() -> Identity {
    Identity::new("operator", format!("system:serviceaccount:{OPERATOR_NS}:ssis-operator"))
}

/// A server serving `crds`, with the operator namespace and every namespace `objects` use, and
/// `objects` stored.
pub fn server_with_crds(crds: &[CustomResourceDefinition], objects: Vec<serde_json::Value>) -> ApiServer {
    let server = ApiServer::new(Options::default());
    for crd in crds {
        server.register_crd(crd).expect("CRD registers");
    }
    let mut namespaces: BTreeSet<String> =
        objects.iter().filter_map(|o| o["metadata"]["namespace"].as_str().map(String::from)).collect();
    namespaces.insert(OPERATOR_NS.to_string());
    for object in objects.iter().filter(|o| o["kind"] == "Namespace") {
        namespaces.remove(object["metadata"]["name"].as_str().unwrap_or_default());
    }
    for namespace in namespaces {
        server
            .seed(serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace } }))
            .expect("namespace");
    }
    for object in objects {
        server.seed(object.clone()).unwrap_or_else(|e| panic!("storing {object}: {e}"));
    }
    server
}

/// A server with the operator's four CRDs and `objects`.
pub fn fake_server(objects: Vec<serde_json::Value>) -> ApiServer {
    let crds: Vec<_> = ssis_crds::generate::all_crds().into_iter().map(|(_, crd)| crd).collect();
    server_with_crds(&crds, objects)
}

/// The operator's client of [`fake_server`].
pub async fn fake_client(objects: Vec<serde_json::Value>) -> kube::Client {
    fake_server(objects).client(operator_identity())
}

/// A valid master group spec (the example's), for tests that need one to exist.
pub fn master_group_spec() -> ssis_crds::ScaleOutMasterGroupSpec {
    serde_json::from_value(serde_json::json!({
        "sqlVersion": "160",
        "availabilityGroupRef": { "name": "ag" },
        "masterService": { "dnsName": "ssis-master.corp.example.com", "port": 8391 },
        "nodes": ["win-1"],
        "certificate": { "generate": {} },
        "serviceAccount": { "username": "CORP\\svc", "passwordSecretRef": { "name": "svc", "key": "password" } },
        "clusterRole": { "manage": true }
    }))
    .expect("a valid master group spec")
}

/// `kubectl delete` of a namespaced object: with finalizers it stays, with a deletionTimestamp.
pub async fn delete<K>(client: &kube::Client, namespace: &str, name: &str)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    kube::Api::<K>::namespaced(client.clone(), namespace)
        .delete(name, &Default::default())
        .await
        .expect("delete accepted");
}

/// An object as JSON with its apiVersion and kind.
pub fn json<K: serde::Serialize + kube::Resource<DynamicType = ()>>(object: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(object).expect("serializable");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

pub fn windows_node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("kubernetes.io/os".to_string(), "windows".to_string())])),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Default::default()
    }
}

/// A catalog whose observation is fixed and whose actions are recorded; `fail_at` makes the
/// n-th execute call (0-based) fail.
#[derive(Default)]
pub struct FakeCatalog {
    pub observation: Mutex<Option<CatalogObservation>>,
    pub executed: Mutex<Vec<SqlAction>>,
    pub resolved: Mutex<Vec<String>>,
    pub fail_at: Mutex<Option<usize>>,
    /// Holds the first action until released (`started` is notified when it begins).
    pub gate: Option<Arc<Gate>>,
    pub calls: Mutex<usize>,
}

/// Holds a SQL action in the middle of its execution.
#[derive(Default)]
pub struct Gate {
    pub started: tokio::sync::Notify,
    pub release: tokio::sync::Notify,
}

impl FakeCatalog {
    pub fn unreachable() -> Self {
        Self::default()
    }
}

impl Catalog for FakeCatalog {
    async fn observe(&self, target: &CatalogTarget) -> Result<CatalogObservation, CatalogError> {
        self.observation.lock().unwrap().clone().ok_or_else(|| CatalogError::Connect {
            replica: target.replicas.first().map(|r| r.name.clone()).unwrap_or_default(),
            message: "connection refused".into(),
        })
    }

    async fn execute(
        &self,
        _target: &CatalogTarget,
        action: &SqlAction,
        resolve: &(dyn Fn(&SecretValue) -> SecretString + Sync),
    ) -> Result<(), CatalogError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls - 1
        };
        if call == 0
            && let Some(gate) = &self.gate
        {
            gate.started.notify_one();
            gate.release.notified().await;
        }
        if *self.fail_at.lock().unwrap() == Some(call) {
            return Err(CatalogError::Sql { replica: "sql1".into(), number: 50000, message: "injected".into() });
        }
        if let SqlAction::UpdateLogDbInfo { password, .. } = action {
            self.resolved.lock().unwrap().push(resolve(password).expose().to_string());
        }
        self.executed.lock().unwrap().push(action.clone());
        Ok(())
    }
}

/// Issues deterministic "certificates" without cryptography (RSA generation is slow in debug
/// builds and not what these tests are about): the thumbprint counts the issued certificates.
#[derive(Default)]
pub struct FakeIssuer {
    pub issued: Mutex<Vec<String>>,
}

impl CertificateIssuer for FakeIssuer {
    fn issue(
        &self,
        request: &CertificateRequest,
        secret_name: &str,
        tls_secret_data: Option<&SecretData>,
        now: jiff::Timestamp,
    ) -> Result<(IssuedCertificate, SecretData), String> {
        let mut issued = self.issued.lock().unwrap();
        issued.push(request.id.clone());
        let dns_names = match &request.source {
            CertificateRequestSource::Generate { dns_names, .. } => dns_names.clone(),
            CertificateRequestSource::FromTlsSecret { .. } => {
                tls_secret_data.filter(|d| d.contains_key("tls.crt")).ok_or("TLS Secret lacks tls.crt")?;
                vec![]
            }
        };
        let certificate = IssuedCertificate {
            id: request.id.clone(),
            secret_name: secret_name.to_string(),
            thumbprint: format!("{:040X}", issued.len()),
            not_before: now,
            not_after: now.checked_add(jiff::SignedDuration::from_hours(24 * 365)).unwrap(),
            dns_names,
            source_fingerprint: None,
        };
        let data = BTreeMap::from([
            (host_secret_keys::PFX.to_string(), vec![0x30]),
            (host_secret_keys::PFX_PASSWORD.to_string(), b"pfx-password".to_vec()),
            (host_secret_keys::CERTIFICATE_DER.to_string(), vec![0x30]),
        ]);
        Ok((certificate, data))
    }
}

pub fn start_time() -> jiff::Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

/// A context over `client` with a manual clock.
pub fn context(client: kube::Client, catalog: FakeCatalog) -> (Context<FakeCatalog>, ManualClock) {
    let clock = ManualClock::new(start_time());
    let mut ctx = Context::new(client, catalog, OPERATOR_NS, Arc::new(FakeIssuer::default()));
    ctx.clock = Arc::new(clock.clone());
    (ctx, clock)
}
