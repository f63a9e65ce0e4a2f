//! What the operator reads, held in memory by watch-fed stores (kube-runtime reflectors), so a
//! reconcile reads no API object over the network except the data of a referenced Secret whose
//! resourceVersion changed.
//!
//! - the three user kinds: whole objects, in the watched namespaces;
//! - HostConfigs: whole objects (their status is what the agents report);
//! - Nodes: metadata only, Windows nodes only (`kubernetes.io/os=windows`);
//! - Secrets: metadata only in the watched namespaces (to notice that a referenced Secret changed;
//!   data is fetched only for referenced Secrets, see [`SecretCache`]), and whole objects for the
//!   operator's own Secrets (label `app.kubernetes.io/managed-by=ssis-operator`);
//! - agent Leases: the node agents' liveness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use ssis_crds::{HostConfig, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup};

/// Several stores of one kind (one per watched namespace) read as one.
#[derive(Clone)]
pub struct MultiStore<K: Resource<DynamicType = ()> + Clone + 'static>(Vec<Store<K>>);

impl<K: Resource<DynamicType = ()> + Clone + 'static> MultiStore<K> {
    pub fn new(stores: Vec<Store<K>>) -> Self {
        Self(stores)
    }

    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.0.iter().flat_map(Store::state).collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new(name).within(namespace);
        self.0.iter().find_map(|store| store.get(&key))
    }

    /// Wait until every store has its initial list.
    pub async fn wait_until_ready(&self) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        for store in &self.0 {
            store.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// Everything the operator reads from the API server.
#[derive(Clone)]
pub struct Stores {
    pub availability_groups: MultiStore<SsisdbAvailabilityGroup>,
    pub master_groups: MultiStore<ScaleOutMasterGroup>,
    pub workers: MultiStore<ScaleOutWorker>,
    pub host_configs: Store<HostConfig>,
    /// Windows nodes, metadata only.
    pub nodes: Store<PartialObjectMeta<Node>>,
    /// Secrets of the watched namespaces, metadata only.
    pub secrets: MultiStore<PartialObjectMeta<Secret>>,
    /// The operator's own Secrets (certificates, password copies), whole.
    pub owned_secrets: Store<Secret>,
    /// Agent liveness Leases.
    pub leases: Store<Lease>,
}

/// Writers of a [`Stores`] filled directly (tests and the simulated world, which take a snapshot
/// of the in-memory API server before each operator pass instead of running watches).
pub struct StoreWriters {
    pub availability_groups: Writer<SsisdbAvailabilityGroup>,
    pub master_groups: Writer<ScaleOutMasterGroup>,
    pub workers: Writer<ScaleOutWorker>,
    pub host_configs: Writer<HostConfig>,
    pub nodes: Writer<PartialObjectMeta<Node>>,
    pub secrets: Writer<PartialObjectMeta<Secret>>,
    pub owned_secrets: Writer<Secret>,
    pub leases: Writer<Lease>,
}

fn replace_all<K>(writer: &mut Writer<K>, objects: Vec<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}

/// The objects of one snapshot.
#[derive(Default)]
pub struct Snapshot {
    pub availability_groups: Vec<SsisdbAvailabilityGroup>,
    pub master_groups: Vec<ScaleOutMasterGroup>,
    pub workers: Vec<ScaleOutWorker>,
    pub host_configs: Vec<HostConfig>,
    pub nodes: Vec<Node>,
    pub secrets: Vec<Secret>,
    pub leases: Vec<Lease>,
}

impl StoreWriters {
    /// Replace every store's content with a snapshot (Windows nodes and the operator's own
    /// Secrets selected as the watches select them).
    pub fn replace(&mut self, snapshot: Snapshot, operator_namespace: &str) {
        use kube::core::PartialObjectMetaExt;
        replace_all(&mut self.availability_groups, snapshot.availability_groups);
        replace_all(&mut self.master_groups, snapshot.master_groups);
        replace_all(&mut self.workers, snapshot.workers);
        replace_all(&mut self.host_configs, snapshot.host_configs);
        let windows = snapshot
            .nodes
            .iter()
            .filter(|n| n.labels().get(super::WINDOWS_NODE_LABEL).map(String::as_str) == Some("windows"))
            .map(|n| n.metadata.clone().into_response_partial::<Node>())
            .collect();
        replace_all(&mut self.nodes, windows);
        let owned = snapshot
            .secrets
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(operator_namespace))
            .filter(|s| {
                s.labels().get(ssis_crds::MANAGED_BY_LABEL).map(String::as_str) == Some(ssis_crds::MANAGED_BY_VALUE)
            })
            .cloned()
            .collect();
        replace_all(&mut self.owned_secrets, owned);
        let metadata = snapshot.secrets.iter().map(|s| s.metadata.clone().into_response_partial::<Secret>()).collect();
        replace_all(&mut self.secrets, metadata);
        let leases =
            snapshot.leases.into_iter().filter(|l| l.labels().contains_key(ssis_crds::agent_lease::LABEL)).collect();
        replace_all(&mut self.leases, leases);
    }
}

/// Every object the operator's watches would hold, read with one LIST per kind (tests and
/// previews; the running operator uses watches).
pub async fn list_snapshot(client: &kube::Client) -> Result<Snapshot, kube::Error> {
    use kube::api::ListParams;
    async fn all<K>(client: &kube::Client) -> Result<Vec<K>, kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        Ok(Api::<K>::all(client.clone()).list(&ListParams::default()).await?.items)
    }
    Ok(Snapshot {
        availability_groups: all(client).await?,
        master_groups: all(client).await?,
        workers: all(client).await?,
        host_configs: all(client).await?,
        nodes: all(client).await?,
        secrets: all(client).await?,
        leases: all(client).await?,
    })
}

impl Stores {
    /// Stores holding what the API server holds now ([`list_snapshot`]).
    pub async fn load(client: &kube::Client, operator_namespace: &str) -> Result<Self, kube::Error> {
        let (stores, mut writers) = Self::writable();
        writers.replace(list_snapshot(client).await?, operator_namespace);
        Ok(stores)
    }

    /// Empty stores with their writers.
    pub fn writable() -> (Self, StoreWriters) {
        let availability_groups = Writer::default();
        let master_groups = Writer::default();
        let workers = Writer::default();
        let host_configs = Writer::default();
        let nodes = Writer::default();
        let secrets = Writer::default();
        let owned_secrets = Writer::default();
        let leases = Writer::default();
        let stores = Stores {
            availability_groups: MultiStore::new(vec![availability_groups.as_reader()]),
            master_groups: MultiStore::new(vec![master_groups.as_reader()]),
            workers: MultiStore::new(vec![workers.as_reader()]),
            host_configs: host_configs.as_reader(),
            nodes: nodes.as_reader(),
            secrets: MultiStore::new(vec![secrets.as_reader()]),
            owned_secrets: owned_secrets.as_reader(),
            leases: leases.as_reader(),
        };
        let writers = StoreWriters {
            availability_groups,
            master_groups,
            workers,
            host_configs,
            nodes,
            secrets,
            owned_secrets,
            leases,
        };
        (stores, writers)
    }
}

/// Data of the referenced Secrets, fetched again only when the watched metadata shows a new
/// resourceVersion: a quiet cluster costs no Secret reads.
#[derive(Default)]
pub struct SecretCache {
    /// (namespace, name) → (resourceVersion, Secret).
    cached: Mutex<HashMap<(String, String), CachedSecret>>,
}

type CachedSecret = (String, Arc<Secret>);

impl SecretCache {
    /// The Secret `namespace/name` at `resource_version` (from the metadata store): cached, or
    /// read once. `Ok(None)` when it no longer exists.
    pub async fn get(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> Result<Option<Arc<Secret>>, kube::Error> {
        let key = (namespace.to_string(), name.to_string());
        if let Some((version, secret)) = self.cached.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && version == resource_version
        {
            return Ok(Some(secret.clone()));
        }
        let Some(secret) = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await? else {
            self.cached.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            return Ok(None);
        };
        let secret = Arc::new(secret);
        let version = secret.resource_version().unwrap_or_default();
        self.cached.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (version, secret.clone()));
        Ok(Some(secret))
    }

    /// Forget Secrets no resource references any more (their values leave memory).
    pub fn retain(&self, referenced: impl Fn(&str, &str) -> bool) {
        self.cached.lock().unwrap_or_else(|p| p.into_inner()).retain(|(ns, name), _| referenced(ns, name));
    }
}
