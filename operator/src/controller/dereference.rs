//! Dereference: read every input of the planner for one unit of deployments, from the watch-fed
//! stores. Secret values stay here (for apply-time use); the planner only sees which keys exist and
//! a fingerprint.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use ssis_crds::{HostConfig, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup};

use crate::catalog::{Catalog, CatalogObservation, CatalogTarget, ReplicaEndpoint, SecretString};
use crate::plan::topology::{Topology, UnitKey, referenced_secrets};
use crate::plan::{NodeInfo, ObjectKey, PlanInput, SecretMeta, object_key as plan_object_key};

use super::certificates::{newest_per_id, parse_certificate_secret};
use super::stores::Stores;
use super::{CERTIFICATE_ID_LABEL, Context, Error, OWNER_ANNOTATION, ReconcileReport, WINDOWS_NODE_LABEL, object_key};

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
    /// HostConfigs this unit may delete when it no longer wants them: no other unit puts
    /// anything on their node.
    pub deletable_host_configs: BTreeSet<String>,
    /// The operator-namespace Secrets (managed-by label) that belong to this unit's resources.
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

/// The Windows nodes of the stores, sorted by name.
pub fn node_infos(stores: &Stores) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = stores
        .nodes
        .state()
        .iter()
        .map(|node| {
            let labels = node.metadata.labels.clone().unwrap_or_default();
            let windows = labels.get(WINDOWS_NODE_LABEL).map(String::as_str) == Some("windows");
            NodeInfo { name: node.name_any(), labels, windows }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

/// The custom resource an operator-owned Secret belongs to, as `Kind/namespace/name`: from an
/// issued certificate's id (`master/<ns>/<group>/...`, `worker/<ns>/<worker>/...`) or the
/// [`OWNER_ANNOTATION`] of a password copy.
pub fn secret_owner(secret: &Secret) -> Option<String> {
    if let Some(owner) = secret.annotations().get(OWNER_ANNOTATION) {
        return Some(owner.clone());
    }
    let issued = parse_certificate_secret(secret)?;
    let mut parts = issued.id.splitn(4, '/');
    let kind = match parts.next()? {
        "master" => "ScaleOutMasterGroup",
        "worker" => "ScaleOutWorker",
        _ => return None,
    };
    let (namespace, name) = (parts.next()?, parts.next()?);
    Some(format!("{kind}/{namespace}/{name}"))
}

/// What a pass reads: one unit of deployments (the operator), or everything in the stores (tests
/// of the apply stage, previews).
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Unit { topology: &'a Topology, unit: &'a UnitKey },
    Everything,
}

impl Scope<'_> {
    fn includes(&self, kind: &str, key: &ObjectKey) -> bool {
        match self {
            Scope::Unit { topology, unit } => topology.in_unit(unit, kind, key),
            Scope::Everything => true,
        }
    }
}

/// Read what the planner needs for one unit of deployments, from the stores. A missing Secret or
/// an unreachable SQL Server does not abort the pass (the planner reports it); only a failed read
/// of a changed referenced Secret is a problem of this pass.
pub async fn dereference<C: Catalog>(
    ctx: &Context<C>,
    stores: &Stores,
    topology: &Topology,
    unit: &UnitKey,
    report: &mut ReconcileReport,
) -> Result<World, Error> {
    dereference_scope(ctx, stores, Scope::Unit { topology, unit }, report).await
}

/// [`dereference`] for any [`Scope`].
pub async fn dereference_scope<C: Catalog>(
    ctx: &Context<C>,
    stores: &Stores,
    scope: Scope<'_>,
    report: &mut ReconcileReport,
) -> Result<World, Error> {
    let in_unit = |kind: &str, meta: &kube::api::ObjectMeta| scope.includes(kind, &plan_object_key(meta));
    let availability_groups: Vec<SsisdbAvailabilityGroup> = stores
        .availability_groups
        .state()
        .iter()
        .filter(|o| in_unit("SsisdbAvailabilityGroup", &o.metadata))
        .map(|o| (**o).clone())
        .collect();
    let master_groups: Vec<ScaleOutMasterGroup> = stores
        .master_groups
        .state()
        .iter()
        .filter(|o| in_unit("ScaleOutMasterGroup", &o.metadata))
        .map(|o| (**o).clone())
        .collect();
    let workers: Vec<ScaleOutWorker> = stores
        .workers
        .state()
        .iter()
        .filter(|o| in_unit("ScaleOutWorker", &o.metadata))
        .map(|o| (**o).clone())
        .collect();
    let nodes = node_infos(stores);

    // HostConfigs of the unit's nodes, and those its resources still contribute to.
    let unit_nodes: Option<BTreeSet<String>> = match scope {
        Scope::Unit { topology, unit } => Some(topology.unit_nodes(unit)),
        Scope::Everything => None,
    };
    let on_unit_node = |node: &str| unit_nodes.as_ref().is_none_or(|nodes| nodes.contains(node));
    let contributes = |host_config: &HostConfig| {
        host_config.spec.contributors.iter().any(|c| scope.includes(&c.kind, &format!("{}/{}", c.namespace, c.name)))
    };
    let host_configs: Vec<HostConfig> = stores
        .host_configs
        .state()
        .iter()
        .filter(|h| on_unit_node(&h.name_any()) || contributes(h))
        .map(|h| (**h).clone())
        .collect();
    // A HostConfig may be deleted by this unit only when no other unit puts anything on its node.
    let deletable_host_configs = host_configs
        .iter()
        .map(|h| h.name_any())
        .filter(|node| match scope {
            Scope::Unit { topology, unit } => topology.units_on_node(node).iter().all(|u| u == unit),
            Scope::Everything => true,
        })
        .collect();

    let mut secrets = BTreeMap::new();
    for (namespace, name) in referenced_secrets(&availability_groups, &master_groups, &workers) {
        // Missing from the watched metadata: absent, and the planner says who references it.
        let Some(meta) = stores.secrets.get(&namespace, &name) else { continue };
        let version = meta.resource_version().unwrap_or_default();
        match ctx.secret_cache.get(&ctx.client, &namespace, &name, &version).await {
            Ok(Some(secret)) => {
                secrets.insert(format!("{namespace}/{name}"), (*secret).clone());
            }
            Ok(None) => {}
            Err(error) => report.problem(format!("reading Secret {namespace}/{name}: {error}")),
        }
    }

    let owned_by_unit = |secret: &Secret| match scope {
        Scope::Everything => true,
        Scope::Unit { .. } => secret_owner(secret).is_some_and(|owner| {
            let (kind, key) = owner.split_once('/').unwrap_or((owner.as_str(), ""));
            scope.includes(kind, &key.to_string())
        }),
    };
    let managed_secrets: Vec<Secret> =
        stores.owned_secrets.state().iter().filter(|s| owned_by_unit(s)).map(|s| (**s).clone()).collect();
    let issued_certificates = newest_per_id(
        managed_secrets
            .iter()
            .filter(|s| s.labels().contains_key(CERTIFICATE_ID_LABEL))
            .filter_map(parse_certificate_secret),
    );
    let agent_leases = stores
        .leases
        .state()
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            let node = spec.holder_identity.clone()?;
            let renewed = spec.renew_time.as_ref()?.0;
            on_unit_node(&node).then_some((node, renewed))
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
            agent_leases,
        },
        secrets,
        host_configs: host_configs.into_iter().map(|h| (h.name_any(), h)).collect(),
        deletable_host_configs,
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
