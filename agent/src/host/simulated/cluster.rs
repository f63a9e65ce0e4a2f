//! The simulated failover cluster, shared by every host of a world:
//! `<world>/cluster/roles/<name>.json` holds each Generic Service role (reference §11). The cluster
//! keeps a role's service running on the owner node only; [`enforce`] applies that. A touched host
//! applies the roles it may own, the network the whole cluster.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{FileLock, HostPaths, io_error, write_atomic};
use super::{start_service_in, stop_service_in};
use crate::host::{ClusterRoleRequest, HostError};

/// A Generic Service role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleFile {
    /// Role / client access point name.
    pub name: String,
    /// Windows computer name of the owner node.
    pub owner_node: String,
    /// `Online`, `Failed` or `Offline`.
    pub state: String,
    pub service_name: String,
    pub possible_owners: Vec<String>,
    #[serde(default)]
    pub static_addresses: Vec<String>,
}

fn roles_dir(world: &Path) -> PathBuf {
    world.join("cluster").join("roles")
}

fn lock_path(world: &Path) -> PathBuf {
    world.join("cluster").join("cluster.lock")
}

fn role_path(world: &Path, name: &str) -> PathBuf {
    roles_dir(world).join(format!("{}.json", name.to_lowercase()))
}

/// Every host root of the world (`<world>/hosts/*` with a state file).
pub fn host_roots(world: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir(world.join("hosts"))
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.join("state.json").exists()).collect())
        .unwrap_or_default();
    roots.sort();
    roots
}

pub fn read_role(world: &Path, name: &str) -> Result<Option<RoleFile>, HostError> {
    match std::fs::read(role_path(world, name)) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| HostError::Io(format!("role file {name}: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read role file", e)),
    }
}

pub fn list_roles(world: &Path) -> Result<Vec<RoleFile>, HostError> {
    let mut roles = Vec::new();
    let Ok(entries) = std::fs::read_dir(roles_dir(world)) else {
        return Ok(roles);
    };
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).map_err(|e| io_error("read role file", e))?;
        if entry.path().extension().is_some_and(|e| e == "json") {
            roles.push(serde_json::from_slice(&bytes).map_err(|e| HostError::Io(format!("role file: {e}")))?);
        }
    }
    roles.sort_by(|a: &RoleFile, b| a.name.cmp(&b.name));
    Ok(roles)
}

fn write_role(world: &Path, role: &RoleFile) -> Result<(), HostError> {
    let bytes = serde_json::to_vec_pretty(role).map_err(|e| HostError::Io(e.to_string()))?;
    write_atomic(&role_path(world, &role.name), &bytes)
}

/// `Add-ClusterGenericServiceRole`: the first possible owner (or the creating node) owns it.
pub fn create_role(world: &Path, request: &ClusterRoleRequest, creating_node: &str) -> Result<(), HostError> {
    let _lock = FileLock::acquire(&lock_path(world))?;
    if read_role(world, &request.name)?.is_some() {
        return Err(HostError::Os {
            context: format!("Add-ClusterGenericServiceRole {}: the role already exists", request.name),
            code: super::win32_codes::OBJECT_ALREADY_EXISTS,
        });
    }
    let possible_owners = if request.possible_owners.is_empty() {
        vec![creating_node.to_string()]
    } else {
        request.possible_owners.clone()
    };
    write_role(
        world,
        &RoleFile {
            name: request.name.clone(),
            owner_node: possible_owners[0].clone(),
            state: "Pending".into(),
            service_name: request.service_name.clone(),
            possible_owners,
            static_addresses: request.static_addresses.clone(),
        },
    )
}

/// `Move-ClusterGroup`: move a role to `to` (a computer name) or to the next possible owner.
/// Returns the new owner.
pub fn move_role(world: &Path, name: &str, to: Option<&str>) -> Result<String, HostError> {
    {
        let _lock = FileLock::acquire(&lock_path(world))?;
        let mut role = read_role(world, name)?.ok_or_else(|| HostError::NotFound(format!("cluster role {name}")))?;
        let next = match to {
            Some(node) => node.to_string(),
            None => {
                let position = role.possible_owners.iter().position(|o| o.eq_ignore_ascii_case(&role.owner_node));
                let index = position.map(|p| (p + 1) % role.possible_owners.len()).unwrap_or(0);
                role.possible_owners[index].clone()
            }
        };
        role.owner_node = next;
        role.state = "Pending".into();
        write_role(world, &role)?;
    }
    enforce_role(world, name)?;
    Ok(read_role(world, name)?.map(|r| r.owner_node).unwrap_or_default())
}

/// Keep every role's service running on its owner only, and record the role state.
pub fn enforce(world: &Path) -> Result<(), HostError> {
    enforce_where(world, |_| true)
}

/// [`enforce`] for the roles `computer_name` may own: touching a host can only disturb those, so
/// a worker node's operations read no other host.
pub fn enforce_for_host(world: &Path, computer_name: &str) -> Result<(), HostError> {
    enforce_where(world, |role| role.possible_owners.iter().any(|owner| owner.eq_ignore_ascii_case(computer_name)))
}

/// [`enforce`] for one role.
pub fn enforce_role(world: &Path, name: &str) -> Result<(), HostError> {
    enforce_where(world, |role| role.name.eq_ignore_ascii_case(name))
}

fn enforce_where(world: &Path, selected: impl Fn(&RoleFile) -> bool) -> Result<(), HostError> {
    if !roles_dir(world).exists() {
        return Ok(());
    }
    let _lock = FileLock::acquire(&lock_path(world))?;
    let roles: Vec<RoleFile> = list_roles(world)?.into_iter().filter(|role| selected(role)).collect();
    // Built only when a possible owner is not at `<world>/hosts/<lowercase name>`.
    let mut scanned: Option<Vec<(PathBuf, String)>> = None;
    for mut role in roles {
        let mut owner_state = "Offline".to_string();
        for member in role_members(world, &role, &mut scanned)? {
            if let Some(found) = enforce_on(&member, &role)? {
                owner_state = found.to_string();
            }
        }
        if role.state != owner_state {
            role.state = owner_state;
            write_role(world, &role)?;
        }
    }
    Ok(())
}

/// The roots of the hosts whose computer name is a possible owner. Other clusters' nodes in the
/// same world may run a service of the same name: a role only manages its possible owners.
fn role_members(
    world: &Path,
    role: &RoleFile,
    scanned: &mut Option<Vec<(PathBuf, String)>>,
) -> Result<Vec<PathBuf>, HostError> {
    let mut members = Vec::new();
    for owner in &role.possible_owners {
        // Hosts are named after their node, the computer name in upper case: read that one host.
        let candidate = HostPaths { root: world.join("hosts").join(owner.to_lowercase()) };
        if candidate.state_file().exists() && candidate.read()?.computer_name.eq_ignore_ascii_case(owner) {
            members.push(candidate.root);
            continue;
        }
        if scanned.is_none() {
            *scanned = Some(
                host_roots(world)
                    .into_iter()
                    .map(|root| {
                        let computer_name = HostPaths { root: root.clone() }.read()?.computer_name;
                        Ok((root, computer_name))
                    })
                    .collect::<Result<_, HostError>>()?,
            );
        }
        let hosts = scanned.as_deref().unwrap_or_default();
        members.extend(hosts.iter().filter(|(_, name)| name.eq_ignore_ascii_case(owner)).map(|(root, _)| root.clone()));
    }
    members.sort();
    members.dedup();
    Ok(members)
}

/// Apply `role` on one member; `Some(state)` when the member is the owner and has the service.
fn enforce_on(root: &Path, role: &RoleFile) -> Result<Option<&'static str>, HostError> {
    let paths = HostPaths { root: root.to_path_buf() };
    let fs_root = paths.fs_root();
    let service_name = &role.service_name;
    paths.update(|state| {
        if !state.services.contains_key(service_name) {
            return Ok(None);
        }
        let is_owner = state.computer_name.eq_ignore_ascii_case(&role.owner_node);
        let running = state.services[service_name].running;
        if is_owner {
            if running {
                return Ok(Some("Online"));
            }
            return Ok(Some(match start_service_in(&fs_root, state, service_name) {
                Ok(()) => "Online",
                Err(_) => "Failed",
            }));
        }
        if running {
            stop_service_in(state, service_name)?;
        }
        Ok(None)
    })
}
