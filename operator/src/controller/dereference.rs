//! Dereference: read every input of the planner. Secret values stay here (for apply-time use);
//! the planner only sees which keys exist and a fingerprint.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use ssis_crds::{
    HostConfig, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup,
};

use crate::catalog::{Catalog, CatalogObservation, CatalogTarget, ReplicaEndpoint, SecretString};
use crate::plan::{NodeInfo, ObjectKey, PlanInput, SecretMeta};

use super::certificates::{newest_per_id, parse_certificate_secret};
use super::{CERTIFICATE_ID_LABEL, Context, Error, ReconcileReport, WINDOWS_NODE_LABEL, object_key};

/// How long one SQL observation may take before the group counts as unobserved this pass.
const OBSERVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything read in one pass.
pub struct World {
    /// What the planner sees.
    pub input: PlanInput,
    /// Referenced Secrets with their values, by `namespace/name` (apply-time use only).
    pub secrets: BTreeMap<ObjectKey, Secret>,
    /// Current HostConfigs by name.
    pub host_configs: BTreeMap<String, HostConfig>,
    /// Every Secret in the operator namespace carrying the managed-by label.
    pub managed_secrets: Vec<Secret>,
}

impl World {
    /// A value of a referenced Secret, as UTF-8.
    pub fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<SecretString> {
        let secret = self.secrets.get(&format!("{namespace}/{name}"))?;
        let bytes = &secret.data.as_ref()?.get(key)?.0;
        String::from_utf8(bytes.clone()).ok().map(SecretString::new)
    }

    /// Raw bytes of a referenced Secret's key.
    pub fn secret_bytes(&self, key: &str, data_key: &str) -> Option<Vec<u8>> {
        Some(self.secrets.get(key)?.data.as_ref()?.get(data_key)?.0.clone())
    }

    /// The SQL connection target of an availability group, when every Secret it needs is there.
    pub fn catalog_target(&self, group: &SsisdbAvailabilityGroup) -> Result<CatalogTarget, String> {
        let namespace = group.namespace().unwrap_or_default();
        let spec = &group.spec;
        let admin = &spec.admin_credentials;
        let missing =
            |what: &str, name: &str, key: &str| format!("{what}: Secret {namespace}/{name} key {key} is missing");
        let admin_username = self
            .secret_value(&namespace, &admin.secret.name, &admin.username_key)
            .ok_or_else(|| missing("admin credentials", &admin.secret.name, &admin.username_key))?;
        let admin_password = self
            .secret_value(&namespace, &admin.secret.name, &admin.password_key)
            .ok_or_else(|| missing("admin credentials", &admin.secret.name, &admin.password_key))?;
        let logging = &spec.logging_login.password_secret_ref;
        let logging_password = self
            .secret_value(&namespace, &logging.name, &logging.key)
            .ok_or_else(|| missing("logging login password", &logging.name, &logging.key))?;
        let ca_pem = match &spec.tls.ca_secret_ref {
            None => None,
            Some(ca) => Some(
                self.secret_bytes(&format!("{namespace}/{}", ca.name), &ca.key)
                    .ok_or_else(|| missing("TLS CA", &ca.name, &ca.key))?,
            ),
        };
        let port =
            |port: i32, what: &str| u16::try_from(port).map_err(|_| format!("{what}: port {port} is out of range"));
        let replicas = spec
            .replicas
            .iter()
            .map(|r| Ok(ReplicaEndpoint { name: r.name.clone(), host: r.host.clone(), port: port(r.port, &r.name)? }))
            .collect::<Result<Vec<_>, String>>()?;
        let key = object_key(group);
        let master_service_accounts = self
            .input
            .master_groups
            .iter()
            .filter(|m| {
                m.namespace().as_deref() == Some(namespace.as_str())
                    && m.spec.availability_group_ref.name == group.name_any()
            })
            .map(|m| m.spec.service_account.username.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(CatalogTarget {
            key,
            availability_group_name: spec.availability_group_name.clone(),
            database_name: spec.database_name.clone(),
            replicas,
            listener_name: spec.listener.name.clone(),
            listener_port: port(spec.listener.port, "listener")?,
            admin_username: admin_username.expose().to_string(),
            admin_password,
            ca_pem,
            insecure_skip_verify: spec.tls.insecure_skip_verify,
            logging_password,
            master_service_accounts,
        })
    }
}

/// SHA-256 over the sorted keys and values, length-prefixed so different splits cannot collide.
pub fn fingerprint(secret: &Secret) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in secret.data.iter().flatten() {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.0.len() as u64).to_be_bytes());
        hasher.update(&value.0);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Secret metadata the planner may see.
pub fn secret_meta(secret: &Secret) -> SecretMeta {
    SecretMeta {
        keys: secret.data.iter().flatten().map(|(k, _)| k.clone()).collect(),
        fingerprint: fingerprint(secret),
    }
}

async fn list_namespaced<K>(client: &kube::Client, namespaces: &[String]) -> Result<Vec<K>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if namespaces.is_empty() {
        return Ok(Api::<K>::all(client.clone()).list(&ListParams::default()).await?.items);
    }
    let mut items = vec![];
    for namespace in namespaces {
        items.extend(Api::<K>::namespaced(client.clone(), namespace).list(&ListParams::default()).await?.items);
    }
    Ok(items)
}

/// Every Secret a custom resource references, as (namespace, name).
fn referenced_secrets(
    groups: &[SsisdbAvailabilityGroup],
    masters: &[ScaleOutMasterGroup],
    workers: &[ScaleOutWorker],
) -> BTreeSet<(String, String)> {
    let mut refs = BTreeSet::new();
    for group in groups {
        let ns = group.namespace().unwrap_or_default();
        let spec = &group.spec;
        refs.insert((ns.clone(), spec.admin_credentials.secret.name.clone()));
        refs.insert((ns.clone(), spec.catalog_password_secret_ref.name.clone()));
        refs.insert((ns.clone(), spec.logging_login.password_secret_ref.name.clone()));
        if let Some(ca) = &spec.tls.ca_secret_ref {
            refs.insert((ns.clone(), ca.name.clone()));
        }
    }
    for master in masters {
        let ns = master.namespace().unwrap_or_default();
        refs.insert((ns.clone(), master.spec.service_account.password_secret_ref.name.clone()));
        if let Some(secret) = &master.spec.certificate.secret_ref {
            refs.insert((ns.clone(), secret.name.clone()));
        }
    }
    for worker in workers {
        let ns = worker.namespace().unwrap_or_default();
        if let Some(account) = &worker.spec.service_account {
            refs.insert((ns.clone(), account.password_secret_ref.name.clone()));
        }
        if let Some(secret) = &worker.spec.certificate.secret_ref {
            refs.insert((ns.clone(), secret.name.clone()));
        }
    }
    // An empty name is admitted by no schema, but must not turn into a list call.
    refs.retain(|(_, name)| !name.is_empty());
    refs
}

/// Read the world. API list failures abort the pass; a missing Secret or an unreachable SQL Server
/// does not (the planner reports it).
pub async fn dereference<C: Catalog>(ctx: &Context<C>, report: &mut ReconcileReport) -> Result<World, Error> {
    let client = &ctx.client;
    let namespaces = &ctx.watch_namespaces;
    let read = |what: &'static str| move |source| Error::Read { what, source: Box::new(source) };
    let availability_groups: Vec<SsisdbAvailabilityGroup> =
        list_namespaced(client, namespaces).await.map_err(read("SsisdbAvailabilityGroups"))?;
    let master_groups: Vec<ScaleOutMasterGroup> =
        list_namespaced(client, namespaces).await.map_err(read("ScaleOutMasterGroups"))?;
    let workers: Vec<ScaleOutWorker> = list_namespaced(client, namespaces).await.map_err(read("ScaleOutWorkers"))?;
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await.map_err(read("Nodes"))?.items;
    let host_configs =
        Api::<HostConfig>::all(client.clone()).list(&ListParams::default()).await.map_err(read("HostConfigs"))?.items;
    let managed_secrets = Api::<Secret>::namespaced(client.clone(), &ctx.operator_namespace)
        .list(&ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")))
        .await
        .map_err(read("operator-namespace Secrets"))?
        .items;

    let mut secrets = BTreeMap::new();
    for (namespace, name) in referenced_secrets(&availability_groups, &master_groups, &workers) {
        match Api::<Secret>::namespaced(client.clone(), &namespace).get_opt(&name).await {
            Ok(Some(secret)) => {
                secrets.insert(format!("{namespace}/{name}"), secret);
            }
            // Missing: the planner sees it absent and reports Stalled for whoever references it.
            Ok(None) => {}
            Err(error) => report.problem(format!("reading Secret {namespace}/{name}: {error}")),
        }
    }

    let issued_certificates = newest_per_id(
        managed_secrets
            .iter()
            .filter(|s| s.labels().contains_key(CERTIFICATE_ID_LABEL))
            .filter_map(parse_certificate_secret),
    );

    let nodes = nodes
        .into_iter()
        .map(|node| {
            let labels = node.metadata.labels.clone().unwrap_or_default();
            let windows = labels.get(WINDOWS_NODE_LABEL).map(String::as_str) == Some("windows");
            NodeInfo { name: node.name_any(), labels, windows }
        })
        .collect();

    let mut world = World {
        input: PlanInput {
            now: ctx.clock.now(),
            operator_namespace: ctx.operator_namespace.clone(),
            availability_groups,
            master_groups,
            workers,
            nodes,
            host_configs: host_configs.clone(),
            secrets: secrets.iter().map(|(key, secret)| (key.clone(), secret_meta(secret))).collect(),
            issued_certificates,
            catalogs: BTreeMap::new(),
        },
        secrets,
        host_configs: host_configs.into_iter().map(|h| (h.name_any(), h)).collect(),
        managed_secrets,
    };
    world.input.catalogs = observe_catalogs(ctx, &world, report).await;
    Ok(world)
}

/// Observe SQL for every availability group, a bounded number at a time. Failures leave the group
/// unobserved; HostConfigs still converge.
async fn observe_catalogs<C: Catalog>(
    ctx: &Context<C>,
    world: &World,
    report: &mut ReconcileReport,
) -> BTreeMap<ObjectKey, CatalogObservation> {
    let mut targets = vec![];
    for group in &world.input.availability_groups {
        if group.meta().deletion_timestamp.is_some() {
            continue;
        }
        match world.catalog_target(group) {
            Ok(target) => {
                if let Some(prepare) = &ctx.prepare_target {
                    let password = &group.spec.catalog_password_secret_ref;
                    let namespace = group.namespace().unwrap_or_default();
                    if let Some(password) = world.secret_value(&namespace, &password.name, &password.key) {
                        prepare(&target, &password);
                    }
                }
                targets.push(target)
            }
            // The planner reports the missing reference; nothing to connect with.
            Err(reason) => tracing::debug!(group = %object_key(group), %reason, "not observing SQL"),
        }
    }
    let results: Vec<(String, Result<Result<CatalogObservation, _>, _>)> = futures::stream::iter(targets)
        .map(|target| async move {
            let outcome = tokio::time::timeout(OBSERVE_TIMEOUT, ctx.catalog.observe(&target)).await;
            (target.key.clone(), outcome)
        })
        .buffer_unordered(ctx.concurrency.max(1))
        .collect()
        .await;
    let mut observations = BTreeMap::new();
    for (key, outcome) in results {
        match outcome {
            Ok(Ok(observation)) => {
                observations.insert(key, observation);
            }
            Ok(Err(error)) => report.problem(format!("observing SQL for {key}: {error}")),
            Err(_) => report.problem(format!("observing SQL for {key}: timed out")),
        }
    }
    observations
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn fingerprint_changes_with_data_and_hides_values() {
        let a = fingerprint(&secret(&[("password", "hunter2")]));
        let b = fingerprint(&secret(&[("password", "hunter3")]));
        let split = fingerprint(&secret(&[("passwordh", "unter2")]));
        assert_ne!(a, b);
        assert_ne!(a, split);
        assert_eq!(a, fingerprint(&secret(&[("password", "hunter2")])));
        assert!(!a.contains("hunter2"));
        let meta = secret_meta(&secret(&[("password", "x"), ("username", "y")]));
        assert_eq!(meta.keys.into_iter().collect::<Vec<_>>(), vec!["password", "username"]);
    }
}
