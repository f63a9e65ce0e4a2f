//! The simulated host: a directory-rooted model of one Windows node.
//!
//! Layout of a host root (`<world>/hosts/<node>` when part of a world):
//! - `state.json` — certificate stores, registry, services (with what each running service loaded
//!   at start), HTTP.SYS bindings; rewritten atomically under `state.lock`.
//! - `fs/C/...` — the node's files (`C:\Program Files\...` → `fs/C/Program Files/...`), matched
//!   case-insensitively like NTFS.
//!
//! Cross-host pieces live in the world directory: the failover cluster ([`cluster`]) and the
//! network that decides which heartbeats get through ([`network`]). Nothing is cached in memory,
//! so agents in several processes and a harness can share one world.

pub mod cluster;
pub mod faults;
pub mod network;
pub mod provision;
pub mod state;
pub mod traffic;

use std::path::{Path, PathBuf};

use ssis_crds::{CertStore, ServiceStartType, SqlVersion};

use self::state::{HostPaths, HostState, LoadedConfig, StoredBinding, StoredCertificate, StoredRegistryData};
use super::{
    CertInfo, ClusterRoleInfo, ClusterRoleRequest, Host, HostError, RegistryData, SecretString, ServiceInfo,
    ServiceState, SslBindingInfo,
};
use crate::certificates;
use crate::safety::{WindowsPath, normalise_registry_key};
use crate::settings::{self, AGENT_ID_KEY, MASTER_OWNED_KEYS, WORKER_OWNED_KEYS, legacy_ini};

/// Windows error codes the simulation returns where Windows would.
pub mod win32_codes {
    pub const SERVICE_ALREADY_RUNNING: u32 = 1056;
    pub const SERVICE_DISABLED: u32 = 1058;
    pub const SERVICE_NOT_ACTIVE: u32 = 1062;
    pub const PROCESS_ABORTED: u32 = 1067;
    pub const OBJECT_ALREADY_EXISTS: u32 = 5010;
}

/// One simulated Windows node.
#[derive(Debug, Clone)]
pub struct SimulatedHost {
    paths: HostPaths,
    world: Option<PathBuf>,
}

impl SimulatedHost {
    /// Open a provisioned host root. The world defaults to the grandparent when the root is
    /// `<world>/hosts/<node>`.
    pub fn open(root: impl Into<PathBuf>, world: Option<PathBuf>) -> Result<Self, HostError> {
        let root = root.into();
        let world = world.or_else(|| world_of(&root));
        let host = Self { paths: HostPaths { root }, world };
        let computer_name = host.paths.read()?.computer_name;
        host.enforce_cluster(&computer_name)?;
        Ok(host)
    }

    pub fn root(&self) -> &Path {
        &self.paths.root
    }

    pub fn world(&self) -> Option<&Path> {
        self.world.as_deref()
    }

    /// The whole persisted state (for tests, the harness and `network::observe`).
    pub fn state(&self) -> Result<HostState, HostError> {
        self.paths.read()
    }

    /// Apply the cluster roles this host may own (the only ones its operations can disturb).
    fn enforce_cluster(&self, computer_name: &str) -> Result<(), HostError> {
        match &self.world {
            Some(world) => cluster::enforce_for_host(world, computer_name),
            None => Ok(()),
        }
    }

    /// Where a Windows path lives under the root. Components match existing entries
    /// case-insensitively (NTFS semantics); `..` and device paths are rejected.
    pub fn local_path(&self, windows_path: &str) -> Result<PathBuf, HostError> {
        map_windows_path(&self.paths.fs_root(), windows_path)
    }
}

fn world_of(root: &Path) -> Option<PathBuf> {
    let parent = root.parent()?;
    (parent.file_name()? == "hosts").then(|| parent.parent().map(Path::to_path_buf)).flatten()
}

pub(crate) fn map_windows_path(fs_root: &Path, windows_path: &str) -> Result<PathBuf, HostError> {
    let parsed = WindowsPath::parse(windows_path)
        .map_err(|error| HostError::Invalid(format!("path '{windows_path}' {error}")))?;
    let text = parsed.to_string();
    let (prefix, rest) = if let Some(unc) = text.strip_prefix(r"\\") {
        ("UNC".to_string(), unc.to_string())
    } else {
        (text[..1].to_string(), text[3..].to_string())
    };
    let mut path = fs_root.join(prefix);
    for component in rest.split('\\').filter(|c| !c.is_empty()) {
        let matched = std::fs::read_dir(&path).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .find(|name| name.eq_ignore_ascii_case(component))
        });
        path.push(matched.unwrap_or_else(|| component.to_string()));
    }
    Ok(path)
}

/// The SQL version and role a service name belongs to (reference §1).
fn parse_service_name(name: &str) -> Option<(ServiceKind, SqlVersion)> {
    let (kind, suffix) = if let Some(s) = name.strip_prefix("SSISScaleOutMaster") {
        (ServiceKind::Master, s)
    } else if let Some(s) = name.strip_prefix("SSISScaleOutWorker") {
        (ServiceKind::Worker, s)
    } else if let Some(s) = name.strip_prefix("MsDtsServer") {
        (ServiceKind::Legacy, s)
    } else {
        return None;
    };
    let version =
        [SqlVersion::V140, SqlVersion::V150, SqlVersion::V160].into_iter().find(|v| v.major_dir() == suffix)?;
    Some((kind, version))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ServiceKind {
    Master,
    Worker,
    Legacy,
}

fn binn(state: &HostState, version: SqlVersion) -> String {
    format!(r"{}\{}\DTS\Binn", state.program_files_root.trim_end_matches('\\'), version.major_dir())
}

/// What a service reads at start; an error means the service process exits (error 1067).
fn load_service_config(fs_root: &Path, state: &HostState, name: &str) -> Result<LoadedConfig, String> {
    let Some((kind, version)) = parse_service_name(name) else {
        return Ok(LoadedConfig::default());
    };
    let read = |windows_path: &str| -> Result<Vec<u8>, String> {
        let local = map_windows_path(fs_root, windows_path).map_err(|e| e.to_string())?;
        std::fs::read(&local).map_err(|e| format!("cannot read {windows_path}: {e}"))
    };
    let mut loaded = LoadedConfig::default();
    match kind {
        ServiceKind::Master | ServiceKind::Worker => {
            let (file, keys): (&str, Vec<&str>) = if kind == ServiceKind::Master {
                ("MasterSettings.config", MASTER_OWNED_KEYS.to_vec())
            } else {
                ("WorkerSettings.config", WORKER_OWNED_KEYS.iter().copied().chain([AGENT_ID_KEY]).collect())
            };
            let path = format!(r"{}\{file}", binn(state, version));
            let bytes = read(&path)?;
            let (_, values) = settings::read_values(&bytes, &keys).map_err(|e| format!("{path}: {e}"))?;
            if kind == ServiceKind::Master {
                let port = values.get("PortNumber").cloned().unwrap_or_default();
                if port.parse::<u16>().is_err() {
                    return Err(format!("{path}: PortNumber {port:?} is not a port number"));
                }
            }
            loaded.settings = values;
        }
        ServiceKind::Legacy => {
            let ssis_key = format!(r"SOFTWARE\Microsoft\Microsoft SQL Server\{}\SSIS", version.major_dir());
            let pointer = registry_get(state, &format!(r"{ssis_key}\ServiceConfigFile"), None)
                .or_else(|| registry_get(state, &ssis_key, Some("ServiceConfigFile")));
            let path = match pointer {
                Some(StoredRegistryData::String(path)) => path,
                _ => format!(r"{}\MsDtsSrvr.ini.xml", binn(state, version)),
            };
            let bytes = read(&path)?;
            let content = legacy_ini::read_legacy_ini(&bytes).map_err(|e| format!("{path}: {e}"))?;
            loaded.settings.insert("ServiceConfigFile".into(), path);
            let folders = content.folders.unwrap_or_default();
            let names: Vec<String> = folders.iter().map(|f| f.name.clone()).collect();
            loaded.settings.insert("TopLevelFolders".into(), names.join(";"));
        }
    }
    Ok(loaded)
}

fn registry_get(state: &HostState, key: &str, value_name: Option<&str>) -> Option<StoredRegistryData> {
    let stored = state.registry.get(&normalise_registry_key(key).ok()?)?;
    match value_name {
        None => stored.default_value.clone(),
        Some(name) => stored.values.get(&name.to_lowercase()).map(|(_, data)| data.clone()),
    }
}

/// Start a service in `state`, loading its configuration (shared with the simulated cluster).
pub(crate) fn start_service_in(fs_root: &Path, state: &mut HostState, name: &str) -> Result<(), HostError> {
    let snapshot = state.clone();
    let service = state.services.get_mut(name).ok_or_else(|| HostError::NotFound(format!("service {name}")))?;
    if service.running {
        return Err(HostError::Os {
            context: format!("start {name}: an instance of the service is already running"),
            code: win32_codes::SERVICE_ALREADY_RUNNING,
        });
    }
    if service.start_type == ServiceStartType::Disabled {
        return Err(HostError::Os {
            context: format!("start {name}: the service is disabled"),
            code: win32_codes::SERVICE_DISABLED,
        });
    }
    service.starts += 1;
    match load_service_config(fs_root, &snapshot, name) {
        Ok(loaded) => {
            service.running = true;
            service.loaded = Some(loaded);
            service.last_start_error = None;
            Ok(())
        }
        Err(problem) => {
            service.last_start_error = Some(problem.clone());
            Err(HostError::Os {
                context: format!("start {name}: the service process terminated at start ({problem})"),
                code: win32_codes::PROCESS_ABORTED,
            })
        }
    }
}

pub(crate) fn stop_service_in(state: &mut HostState, name: &str) -> Result<(), HostError> {
    let service = state.services.get_mut(name).ok_or_else(|| HostError::NotFound(format!("service {name}")))?;
    if !service.running {
        return Err(HostError::Os {
            context: format!("stop {name}: the service has not been started"),
            code: win32_codes::SERVICE_NOT_ACTIVE,
        });
    }
    service.running = false;
    service.loaded = None;
    Ok(())
}

fn cert_info(stored: &StoredCertificate) -> CertInfo {
    CertInfo {
        thumbprint: stored.thumbprint.clone(),
        subject: stored.subject.clone(),
        dns_names: stored.dns_names.clone(),
        not_after: stored.not_after.clone(),
        has_private_key: stored.has_private_key,
    }
}

fn add_certificate(state: &mut HostState, store: CertStore, der: &[u8], with_key: bool) -> Result<String, HostError> {
    let meta = certificates::metadata(der).map_err(|e| HostError::Invalid(e.to_string()))?;
    match state.certificates.iter_mut().find(|c| c.store == store && c.thumbprint == meta.thumbprint) {
        Some(existing) => existing.has_private_key |= with_key,
        None => state.certificates.push(StoredCertificate {
            store,
            thumbprint: meta.thumbprint.clone(),
            subject: meta.subject,
            dns_names: meta.dns_names,
            not_after: meta.not_after,
            has_private_key: with_key,
            private_key_readers: Vec::new(),
        }),
    }
    Ok(meta.thumbprint)
}

impl Host for SimulatedHost {
    fn backend_name(&self) -> &'static str {
        "simulated"
    }

    fn computer_name(&self) -> Result<String, HostError> {
        Ok(self.paths.read()?.computer_name)
    }

    fn list_certificates(&self, store: CertStore) -> Result<Vec<CertInfo>, HostError> {
        let state = self.paths.read()?;
        Ok(state.certificates.iter().filter(|c| c.store == store).map(cert_info).collect())
    }

    fn import_pfx(&mut self, store: CertStore, pfx: &[u8], password: &SecretString) -> Result<String, HostError> {
        let der = certificates::pfx_leaf_certificate(pfx, password).map_err(|e| HostError::Invalid(e.to_string()))?;
        self.paths.update(|state| add_certificate(state, store, &der, true))
    }

    fn import_certificate(&mut self, store: CertStore, der: &[u8]) -> Result<String, HostError> {
        self.paths.update(|state| add_certificate(state, store, der, false))
    }

    fn remove_certificate(&mut self, store: CertStore, thumbprint: &str) -> Result<bool, HostError> {
        self.paths.update(|state| {
            let before = state.certificates.len();
            state.certificates.retain(|c| !(c.store == store && c.thumbprint.eq_ignore_ascii_case(thumbprint)));
            Ok(state.certificates.len() != before)
        })
    }

    fn private_key_readers(&self, store: CertStore, thumbprint: &str) -> Result<Vec<String>, HostError> {
        let state = self.paths.read()?;
        let cert = state
            .certificates
            .iter()
            .find(|c| c.store == store && c.thumbprint.eq_ignore_ascii_case(thumbprint))
            .ok_or_else(|| HostError::NotFound(format!("certificate {thumbprint} in LocalMachine\\{store:?}")))?;
        Ok(cert.private_key_readers.clone())
    }

    fn grant_private_key_read(&mut self, store: CertStore, thumbprint: &str, account: &str) -> Result<(), HostError> {
        self.paths.update(|state| {
            let cert = state
                .certificates
                .iter_mut()
                .find(|c| c.store == store && c.thumbprint.eq_ignore_ascii_case(thumbprint))
                .ok_or_else(|| HostError::NotFound(format!("certificate {thumbprint} in LocalMachine\\{store:?}")))?;
            if !cert.has_private_key {
                return Err(HostError::Invalid(format!("certificate {thumbprint} has no private key")));
            }
            if !cert.private_key_readers.iter().any(|r| r.eq_ignore_ascii_case(account)) {
                cert.private_key_readers.push(account.to_string());
            }
            Ok(())
        })
    }

    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, HostError> {
        let local = self.local_path(path)?;
        match std::fs::read(&local) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(state::io_error(&format!("read {path}"), e)),
        }
    }

    fn write_file_atomic(&mut self, path: &str, content: &[u8]) -> Result<(), HostError> {
        let local = self.local_path(path)?;
        if local.exists() {
            let mut backup = local.clone().into_os_string();
            backup.push(".bak");
            std::fs::copy(&local, PathBuf::from(backup)).map_err(|e| state::io_error("write backup", e))?;
        }
        state::write_atomic(&local, content)
    }

    fn registry_key_exists(&self, key: &str) -> Result<bool, HostError> {
        let normalised =
            normalise_registry_key(key).map_err(|p| HostError::Invalid(format!("registry key {key} {p}")))?;
        Ok(self.paths.read()?.registry.contains_key(&normalised))
    }

    fn read_registry(&self, key: &str, value_name: Option<&str>) -> Result<Option<RegistryData>, HostError> {
        let state = self.paths.read()?;
        Ok(registry_get(&state, key, value_name).map(|data| match data {
            StoredRegistryData::String(s) => RegistryData::String(s),
            StoredRegistryData::DWord(d) => RegistryData::DWord(d),
        }))
    }

    fn write_registry(&mut self, key: &str, value_name: Option<&str>, data: &RegistryData) -> Result<(), HostError> {
        let normalised =
            normalise_registry_key(key).map_err(|p| HostError::Invalid(format!("registry key {key} {p}")))?;
        let stored = match data {
            RegistryData::String(s) => StoredRegistryData::String(s.clone()),
            RegistryData::DWord(d) => StoredRegistryData::DWord(*d),
        };
        self.paths.update(|state| {
            // Like RegCreateKeyEx, create missing parent keys too.
            let components: Vec<&str> = key.split('\\').filter(|c| !c.is_empty()).collect();
            for depth in 1..=components.len() {
                let partial = components[..depth].join("\\");
                let partial_key = normalise_registry_key(&partial).unwrap_or_default();
                state
                    .registry
                    .entry(partial_key)
                    .or_insert_with(|| state::StoredRegistryKey { path: partial.clone(), ..Default::default() });
            }
            let entry = state.registry.get_mut(&normalised).expect("key created above");
            match value_name {
                None => entry.default_value = Some(stored),
                Some(name) => {
                    entry.values.insert(name.to_lowercase(), (name.to_string(), stored));
                }
            }
            Ok(())
        })
    }

    fn query_service(&self, name: &str) -> Result<Option<ServiceInfo>, HostError> {
        let state = self.paths.read()?;
        Ok(state.services.get(name).map(|service| ServiceInfo {
            state: if service.running { ServiceState::Running } else { ServiceState::Stopped },
            start_type: service.start_type,
            logon_account: service.logon_account.clone(),
        }))
    }

    fn start_service(&mut self, name: &str) -> Result<(), HostError> {
        let fs_root = self.paths.fs_root();
        let (result, computer_name) = self.paths.update(|state| {
            // The failed start is recorded (start count, error) even though the call fails.
            let outcome = start_service_in(&fs_root, state, name);
            Ok((outcome, state.computer_name.clone()))
        })?;
        // The cluster stops a cluster-managed service started on a node that does not own it.
        self.enforce_cluster(&computer_name)?;
        result
    }

    fn stop_service(&mut self, name: &str) -> Result<(), HostError> {
        self.paths.update(|state| stop_service_in(state, name))
    }

    fn set_service_start_type(&mut self, name: &str, start_type: ServiceStartType) -> Result<(), HostError> {
        self.paths.update(|state| {
            let service = state.services.get_mut(name).ok_or_else(|| HostError::NotFound(format!("service {name}")))?;
            service.start_type = start_type;
            Ok(())
        })
    }

    fn set_service_logon(&mut self, name: &str, account: &str, password: &SecretString) -> Result<(), HostError> {
        if password.expose().is_empty() && !account.to_ascii_lowercase().starts_with("nt service\\") {
            return Err(HostError::Invalid(format!("an empty password was given for {account}")));
        }
        self.paths.update(|state| {
            let service = state.services.get_mut(name).ok_or_else(|| HostError::NotFound(format!("service {name}")))?;
            service.logon_account = account.to_string();
            Ok(())
        })
    }

    fn query_ssl_binding(&self, ip_port: &str) -> Result<Option<SslBindingInfo>, HostError> {
        let state = self.paths.read()?;
        Ok(state.ssl_bindings.get(ip_port).map(|b| SslBindingInfo {
            thumbprint: b.thumbprint.clone(),
            store: b.store,
            app_id: b.app_id.clone(),
        }))
    }

    fn set_ssl_binding(
        &mut self,
        ip_port: &str,
        thumbprint: &str,
        store: CertStore,
        app_id: &str,
    ) -> Result<(), HostError> {
        self.paths.update(|state| {
            // netsh refuses a binding to a certificate that is not in the named store.
            if !state.certificates.iter().any(|c| c.store == store && c.thumbprint.eq_ignore_ascii_case(thumbprint)) {
                return Err(HostError::Os {
                    context: format!(
                        "netsh http add sslcert {ip_port}: certificate {thumbprint} not found in {store:?}"
                    ),
                    code: 1312,
                });
            }
            state.ssl_bindings.insert(
                ip_port.to_string(),
                StoredBinding { thumbprint: thumbprint.to_string(), store, app_id: app_id.to_string() },
            );
            Ok(())
        })
    }

    fn query_cluster_role(&self, name: &str) -> Result<Option<ClusterRoleInfo>, HostError> {
        let world = self.world.as_deref().ok_or_else(|| {
            HostError::Unsupported("this simulated node is not in a world with a failover cluster".into())
        })?;
        cluster::enforce_role(world, name)?;
        Ok(cluster::read_role(world, name)?.map(|role| ClusterRoleInfo {
            owner_node: role.owner_node,
            state: role.state,
            service_name: role.service_name,
        }))
    }

    fn create_cluster_role(&mut self, request: &ClusterRoleRequest) -> Result<(), HostError> {
        let world = self.world.clone().ok_or_else(|| {
            HostError::Unsupported("this simulated node is not in a world with a failover cluster".into())
        })?;
        let computer_name = self.computer_name()?;
        cluster::create_role(&world, request, &computer_name)?;
        cluster::enforce_role(&world, &request.name)
    }
}
