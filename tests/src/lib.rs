//! Integration and end-to-end tests live in tests/tests/. This library holds the end-to-end
//! helpers: reading what a simulated host looks like and converging a world with a readable
//! failure.

use std::collections::BTreeMap;

use ssis_agent::host::simulated::state::HostState;
use ssis_agent::host::{CertInfo, Host};
use ssis_agent::settings;
use ssis_crds::{CertStore, ScaleOutMasterGroup, ScaleOutWorker};
use ssis_operator::simulation::faults::binn_file;
use ssis_operator::simulation::{Convergence, World, WorldOptions};

/// Rounds a scenario may take to converge before it counts as stuck.
pub const ROUND_LIMIT: u64 = 60;

/// The bundled examples, converged.
pub async fn converged_examples() -> World {
    let mut world = World::from_examples(WorldOptions::default()).await.expect("building the example world");
    converge(&mut world).await;
    world
}

/// Run to a fixed point or fail with the world's account of what never converged. Every request
/// the operator and the agents sent on the way must be one a real API server accepts.
pub async fn converge(world: &mut World) -> Convergence {
    let convergence = match world.run_until_converged(ROUND_LIMIT).await {
        Ok(convergence) => convergence,
        Err(explanation) => panic!("{explanation}"),
    };
    assert_no_refused_requests(world);
    convergence
}

/// No request of the operator or an agent was refused as invalid (400/403/422).
pub fn assert_no_refused_requests(world: &World) {
    let ledger = world.api.ledger();
    let refused: Vec<String> = ledger
        .refused
        .iter()
        .filter(|(key, _)| key.component != "user")
        .map(|(key, message)| format!("{} {} {}: {message}", key.component, key.verb, key.resource_path()))
        .collect();
    assert!(refused.is_empty(), "requests a real API server refuses:\n{}", refused.join("\n"));
}

/// Owned keys of a settings file in a node's Binn folder, as on disk.
pub fn settings_on_disk(world: &World, node: &str, file: &str, keys: &[&str]) -> BTreeMap<String, String> {
    let path = binn_file(world, node, file).expect("known node");
    let bytes = world.host(node).expect("host").read_file(&path).expect("readable").unwrap_or_default();
    settings::read_values(&bytes, keys).map(|(_, values)| values).unwrap_or_default()
}

/// The whole persisted state of a node's host.
pub fn host_state(world: &World, node: &str) -> HostState {
    world.host(node).expect("host").state().expect("host state")
}

/// What a running service loaded at start (`None` when it is stopped).
pub fn loaded(world: &World, node: &str, service: &str) -> Option<BTreeMap<String, String>> {
    let state = host_state(world, node);
    let service = state.services.get(service)?;
    service.running.then(|| service.loaded.clone().unwrap_or_default().settings)
}

/// Certificates in one LocalMachine store of a node.
pub fn certificates(world: &World, node: &str, store: CertStore) -> Vec<CertInfo> {
    world.host(node).expect("host").list_certificates(store).expect("store")
}

/// Whether a store of a node holds a thumbprint.
pub fn has_certificate(world: &World, node: &str, store: CertStore, thumbprint: &str) -> bool {
    certificates(world, node, store).iter().any(|c| c.thumbprint.eq_ignore_ascii_case(thumbprint))
}

/// The master group of the examples.
pub async fn master_group(world: &World) -> ScaleOutMasterGroup {
    world.list::<ScaleOutMasterGroup>().await.into_iter().next().expect("a master group")
}

/// A ScaleOutWorker by name.
pub async fn worker(world: &World, name: &str) -> Option<ScaleOutWorker> {
    world.list::<ScaleOutWorker>().await.into_iter().find(|w| w.metadata.name.as_deref() == Some(name))
}

/// `(node, worker agent id, certificate thumbprint)` of every enrolled worker node.
pub async fn enrolled_workers(world: &World) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for worker in world.list::<ScaleOutWorker>().await {
        for node in worker.status.iter().flat_map(|s| &s.nodes) {
            all.push((
                node.node_name.clone(),
                node.worker_agent_id.clone().unwrap_or_default(),
                node.certificate_thumbprint.clone().unwrap_or_default(),
            ));
        }
    }
    all.sort();
    all
}

/// Master nodes of the examples.
pub const MASTER_NODES: [&str; 2] = ["win-sql-1", "win-sql-2"];
/// Worker nodes of the examples (the single worker and the pool's node).
pub const WORKER_NODES: [&str; 2] = ["win-worker-1", "win-worker-2"];
/// Namespace/name of the examples' availability group (the simulated SQL world key).
pub const AG_KEY: &str = "ssis/ssisdb";
/// Name of the Scale Out Master and Worker services of the examples (SQL Server 2022).
pub const MASTER_SERVICE: &str = "SSISScaleOutMaster160";
pub const WORKER_SERVICE: &str = "SSISScaleOutWorker160";
pub const LEGACY_SERVICE: &str = "MsDtsServer160";

/// A host whose agent process dies after `writes_left` successful writes: every later call fails,
/// as if the process had been killed between two host operations.
pub struct DyingHost {
    inner: ssis_agent::host::simulated::SimulatedHost,
    writes_left: usize,
    pub died: bool,
}

impl DyingHost {
    pub fn new(inner: ssis_agent::host::simulated::SimulatedHost, writes_left: usize) -> Self {
        Self { inner, writes_left, died: false }
    }

    fn write(&mut self) -> Result<(), ssis_agent::host::HostError> {
        if self.died || self.writes_left == 0 {
            self.died = true;
            return Err(ssis_agent::host::HostError::Io("the agent process was killed".into()));
        }
        self.writes_left -= 1;
        Ok(())
    }

    fn alive(&self) -> Result<(), ssis_agent::host::HostError> {
        if self.died { Err(ssis_agent::host::HostError::Io("the agent process was killed".into())) } else { Ok(()) }
    }
}

use ssis_agent::host::{
    ClusterRoleInfo, ClusterRoleRequest, HostError, RegistryData, SecretString, ServiceInfo, SslBindingInfo,
};
use ssis_crds::ServiceStartType;

impl Host for DyingHost {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    fn computer_name(&self) -> Result<String, HostError> {
        self.alive()?;
        self.inner.computer_name()
    }
    fn list_certificates(&self, store: CertStore) -> Result<Vec<CertInfo>, HostError> {
        self.alive()?;
        self.inner.list_certificates(store)
    }
    fn import_pfx(&mut self, store: CertStore, pfx: &[u8], password: &SecretString) -> Result<String, HostError> {
        self.write()?;
        self.inner.import_pfx(store, pfx, password)
    }
    fn import_certificate(&mut self, store: CertStore, der: &[u8]) -> Result<String, HostError> {
        self.write()?;
        self.inner.import_certificate(store, der)
    }
    fn remove_certificate(&mut self, store: CertStore, thumbprint: &str) -> Result<bool, HostError> {
        self.write()?;
        self.inner.remove_certificate(store, thumbprint)
    }
    fn private_key_readers(&self, store: CertStore, thumbprint: &str) -> Result<Vec<String>, HostError> {
        self.alive()?;
        self.inner.private_key_readers(store, thumbprint)
    }
    fn grant_private_key_read(&mut self, store: CertStore, thumbprint: &str, account: &str) -> Result<(), HostError> {
        self.write()?;
        self.inner.grant_private_key_read(store, thumbprint, account)
    }
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.alive()?;
        self.inner.read_file(path)
    }
    fn write_file_atomic(&mut self, path: &str, content: &[u8]) -> Result<(), HostError> {
        self.write()?;
        self.inner.write_file_atomic(path, content)
    }
    fn registry_key_exists(&self, key: &str) -> Result<bool, HostError> {
        self.alive()?;
        self.inner.registry_key_exists(key)
    }
    fn read_registry(&self, key: &str, value_name: Option<&str>) -> Result<Option<RegistryData>, HostError> {
        self.alive()?;
        self.inner.read_registry(key, value_name)
    }
    fn write_registry(&mut self, key: &str, value_name: Option<&str>, data: &RegistryData) -> Result<(), HostError> {
        self.write()?;
        self.inner.write_registry(key, value_name, data)
    }
    fn query_service(&self, name: &str) -> Result<Option<ServiceInfo>, HostError> {
        self.alive()?;
        self.inner.query_service(name)
    }
    fn start_service(&mut self, name: &str) -> Result<(), HostError> {
        self.write()?;
        self.inner.start_service(name)
    }
    fn stop_service(&mut self, name: &str) -> Result<(), HostError> {
        self.write()?;
        self.inner.stop_service(name)
    }
    fn set_service_start_type(&mut self, name: &str, start_type: ServiceStartType) -> Result<(), HostError> {
        self.write()?;
        self.inner.set_service_start_type(name, start_type)
    }
    fn set_service_logon(&mut self, name: &str, account: &str, password: &SecretString) -> Result<(), HostError> {
        self.write()?;
        self.inner.set_service_logon(name, account, password)
    }
    fn query_ssl_binding(&self, ip_port: &str) -> Result<Option<SslBindingInfo>, HostError> {
        self.alive()?;
        self.inner.query_ssl_binding(ip_port)
    }
    fn set_ssl_binding(
        &mut self,
        ip_port: &str,
        thumbprint: &str,
        store: CertStore,
        app_id: &str,
    ) -> Result<(), HostError> {
        self.write()?;
        self.inner.set_ssl_binding(ip_port, thumbprint, store, app_id)
    }
    fn query_cluster_role(&self, name: &str) -> Result<Option<ClusterRoleInfo>, HostError> {
        self.alive()?;
        self.inner.query_cluster_role(name)
    }
    fn create_cluster_role(&mut self, request: &ClusterRoleRequest) -> Result<(), HostError> {
        self.write()?;
        self.inner.create_cluster_role(request)
    }
}

/// Copy a directory tree (a host root, for snapshots).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create snapshot folder");
    for entry in std::fs::read_dir(from).expect("read folder").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Replace a directory tree by a snapshot.
pub fn restore_tree(snapshot: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    copy_tree(snapshot, to);
}

/// Every file under a directory, relative path → content.
pub fn files_under(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.insert(path.strip_prefix(base).unwrap_or(&path).display().to_string(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}
