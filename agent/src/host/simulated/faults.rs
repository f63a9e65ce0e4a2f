//! Faults a test harness injects into a simulated world: master failover, a stopped service, an
//! edited settings file, a deleted certificate. Each acts like the outside event it models (an
//! administrator or a crash), not like the agent.

use std::path::Path;

use ssis_crds::CertStore;

use super::state::HostPaths;
use super::{SimulatedHost, cluster, stop_service_in};
use crate::host::{Host, HostError};

/// Move a cluster role to `to` (computer name) or the next possible owner; returns the new owner.
pub fn move_cluster_role(world: &Path, role: &str, to: Option<&str>) -> Result<String, HostError> {
    cluster::move_role(world, role, to)
}

/// Stop a service as if it crashed or an administrator stopped it. A cluster-managed service is
/// started again by the cluster the next time a host of the world is touched.
pub fn stop_service(host_root: &Path, service: &str) -> Result<(), HostError> {
    HostPaths { root: host_root.to_path_buf() }.update(|state| stop_service_in(state, service))
}

/// Replace a file's content (an administrator editing it); no backup is kept.
pub fn write_file(host_root: &Path, windows_path: &str, content: &[u8]) -> Result<(), HostError> {
    let host = SimulatedHost { paths: HostPaths { root: host_root.to_path_buf() }, world: None };
    let local = host.local_path(windows_path)?;
    super::state::write_atomic(&local, content)
}

/// Edit a file's text with `edit` (e.g. replace a value).
pub fn edit_file(host_root: &Path, windows_path: &str, edit: impl FnOnce(String) -> String) -> Result<(), HostError> {
    let host = SimulatedHost { paths: HostPaths { root: host_root.to_path_buf() }, world: None };
    let current = host.read_file(windows_path)?.ok_or_else(|| HostError::NotFound(windows_path.to_string()))?;
    let text = String::from_utf8(current).map_err(|_| HostError::Invalid(format!("{windows_path} is not UTF-8")))?;
    write_file(host_root, windows_path, edit(text).as_bytes())
}

/// Delete a certificate from a store; `Ok(false)` when it was not there.
pub fn delete_certificate(host_root: &Path, store: CertStore, thumbprint: &str) -> Result<bool, HostError> {
    let mut host = SimulatedHost { paths: HostPaths { root: host_root.to_path_buf() }, world: None };
    host.remove_certificate(store, thumbprint)
}
