//! Shared fixtures of the controller tests: an in-memory API server (kube-fake-client), a fake SQL
//! catalog that records actions, and a certificate issuer without cryptography.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::ObjectMeta;
use kube_fake_client::ClientBuilder;
use ssis_crds::host_secret_keys;
use ssis_operator::catalog::{
    Catalog, CatalogError, CatalogObservation, CatalogTarget, SecretString, SecretValue, SqlAction,
};
use ssis_operator::controller::{CertificateIssuer, Context, ManualClock, SecretData};
use ssis_operator::plan::{CertificateRequest, CertificateRequestSource, IssuedCertificate};
use ssis_operator::simulation::api;

pub const OPERATOR_NS: &str = "ssis-system";

/// Namespace under which the cluster-scoped kinds are stored in the in-memory API server.
pub const CLUSTER_SCOPE_NS: &str = api::CLUSTER_SCOPE_NAMESPACE;

/// A fake client with the four kinds registered with status subresources, plus `objects`.
pub async fn fake_client(objects: Vec<serde_json::Value>) -> kube::Client {
    cluster_scoped(fake_builder(objects).build().await.expect("fake client"))
}

/// kube-fake-client 0.3 registers every custom kind as namespaced, so requests for the
/// cluster-scoped kinds are rewritten into a fixed namespace (as the simulated world does);
/// everything else passes through unchanged.
pub fn cluster_scoped(inner: kube::Client) -> kube::Client {
    let service = tower::service_fn(move |mut request: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        async move {
            if let Some(path) = api::rewrite_cluster_path(request.uri().path()) {
                let uri = match request.uri().query() {
                    Some(query) => format!("{path}?{query}"),
                    None => path,
                };
                *request.uri_mut() = uri.parse().expect("rewritten URI");
            }
            inner.send(request).await
        }
    });
    kube::Client::new(service, "default")
}

/// A cluster-scoped object as stored by [`cluster_scoped`].
pub fn cluster_json<K: serde::Serialize>(object: &K) -> serde_json::Value {
    let mut value = json(object);
    value["metadata"]["namespace"] = serde_json::json!(CLUSTER_SCOPE_NS);
    value
}

/// The world's builder with managed fields returned, so tests can check field managers.
pub fn fake_builder(objects: Vec<serde_json::Value>) -> ClientBuilder {
    api::fake_builder(objects).with_return_managed_fields()
}

pub fn json<K: serde::Serialize>(object: &K) -> serde_json::Value {
    serde_json::to_value(object).expect("serializable")
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
    calls: Mutex<usize>,
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
