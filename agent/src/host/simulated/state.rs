//! The persisted state of one simulated node (`<root>/state.json`) and its cross-process lock.
//! Every operation locks, reads, changes and atomically rewrites the file, so several processes
//! (agents, the operator's simulation, a test harness) can share a world directory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ssis_crds::{CertStore, ServiceStartType};

use crate::host::HostError;

/// One certificate in a simulated LocalMachine store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCertificate {
    pub store: CertStore,
    pub thumbprint: String,
    pub subject: String,
    pub dns_names: Vec<String>,
    pub not_after: String,
    pub has_private_key: bool,
    #[serde(default)]
    pub private_key_readers: Vec<String>,
}

/// REG_SZ / REG_DWORD data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredRegistryData {
    String(String),
    DWord(u32),
}

/// A registry key: its spelling, default value and named values (keyed lower-case).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRegistryKey {
    pub path: String,
    #[serde(default)]
    pub default_value: Option<StoredRegistryData>,
    #[serde(default)]
    pub values: BTreeMap<String, (String, StoredRegistryData)>,
}

/// What a running service read at start (reference §2/§3/§4: settings are read only at start).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadedConfig {
    /// Settings values read at start (owned keys, `AgentId`, `ServiceConfigFile`).
    pub settings: BTreeMap<String, String>,
}

/// A simulated Windows service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredService {
    /// `Running` or `Stopped` (transitions are instant in the simulation).
    pub running: bool,
    pub start_type: ServiceStartType,
    pub logon_account: String,
    /// Present while running.
    #[serde(default)]
    pub loaded: Option<LoadedConfig>,
    /// How often the service was started (tests count restarts with it).
    #[serde(default)]
    pub starts: u64,
    /// Why the last start failed, if it did.
    #[serde(default)]
    pub last_start_error: Option<String>,
}

/// An HTTP.SYS binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredBinding {
    pub thumbprint: String,
    pub store: CertStore,
    pub app_id: String,
}

/// Everything about one node except its files (those live under `<root>/fs`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostState {
    pub computer_name: String,
    /// SQL Server's Program Files folder on this node (where services find their settings).
    pub program_files_root: String,
    #[serde(default)]
    pub certificates: Vec<StoredCertificate>,
    /// Keyed by the lower-case key path.
    #[serde(default)]
    pub registry: BTreeMap<String, StoredRegistryKey>,
    #[serde(default)]
    pub services: BTreeMap<String, StoredService>,
    /// Keyed by `ip:port`.
    #[serde(default)]
    pub ssl_bindings: BTreeMap<String, StoredBinding>,
}

pub(crate) fn io_error(context: &str, error: std::io::Error) -> HostError {
    match error.kind() {
        // EBUSY (Linux) / ERROR_BUSY (Windows): held for now. A permission error is not "busy":
        // retrying unchanged cannot help.
        std::io::ErrorKind::ResourceBusy => HostError::Busy(format!("{context}: {error}")),
        std::io::ErrorKind::PermissionDenied => HostError::AccessDenied(format!("{context}: {error}")),
        _ => HostError::Io(format!("{context}: {error}")),
    }
}

/// Write a file atomically: temp file in the same folder, flush, rename.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> Result<(), HostError> {
    let parent = path.parent().ok_or_else(|| HostError::Io(format!("{} has no parent folder", path.display())))?;
    std::fs::create_dir_all(parent).map_err(|e| io_error("create folder", e))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = parent.join(format!(".{file_name}.{}.tmp", std::process::id()));
    {
        let mut file = File::create(&temp).map_err(|e| io_error("create temp file", e))?;
        file.write_all(content).map_err(|e| io_error("write temp file", e))?;
        file.sync_all().map_err(|e| io_error("flush temp file", e))?;
    }
    std::fs::rename(&temp, path).map_err(|e| io_error("replace file", e))
}

/// An exclusive lock on a lock file, released on drop.
pub(crate) struct FileLock(File);

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> Result<Self, HostError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error("create lock folder", e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| io_error("open lock file", e))?;
        file.lock().map_err(|e| io_error("lock", e))?;
        Ok(Self(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Paths of one simulated host root.
#[derive(Debug, Clone)]
pub(crate) struct HostPaths {
    pub root: PathBuf,
}

impl HostPaths {
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("state.lock")
    }
    pub fn fs_root(&self) -> PathBuf {
        self.root.join("fs")
    }

    pub fn load(&self) -> Result<HostState, HostError> {
        let bytes = std::fs::read(self.state_file()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                HostError::NotFound(format!(
                    "no simulated host at {} (run `ssis-agent provision-sim --root {}` first)",
                    self.root.display(),
                    self.root.display()
                ))
            } else {
                io_error("read simulated host state", e)
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| HostError::Io(format!("simulated host state is damaged: {e}")))
    }

    pub fn save(&self, state: &HostState) -> Result<(), HostError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| HostError::Io(e.to_string()))?;
        write_atomic(&self.state_file(), &bytes)
    }

    /// Lock, read, change, write back when changed.
    pub fn update<R>(&self, change: impl FnOnce(&mut HostState) -> Result<R, HostError>) -> Result<R, HostError> {
        let _lock = FileLock::acquire(&self.lock_file())?;
        let mut state = self.load()?;
        let before = state.clone();
        let result = change(&mut state)?;
        if state != before {
            self.save(&state)?;
        }
        Ok(result)
    }

    /// Lock and read.
    pub fn read(&self) -> Result<HostState, HostError> {
        let _lock = FileLock::acquire(&self.lock_file())?;
        self.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_permission_problems_apart_from_busy_objects() {
        let denied = io_error("replace file", std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(denied, HostError::AccessDenied(_)), "{denied:?}");
        let busy = io_error("replace file", std::io::Error::from(std::io::ErrorKind::ResourceBusy));
        assert!(matches!(busy, HostError::Busy(_)), "{busy:?}");
        let other = io_error("replace file", std::io::Error::from(std::io::ErrorKind::InvalidData));
        assert!(matches!(other, HostError::Io(_)), "{other:?}");
    }
}
