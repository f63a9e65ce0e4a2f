//! Failover cluster: observe the master's Generic Service role through clusapi, create it with a
//! one-shot `Add-ClusterGenericServiceRole` (reference §11; clusapi has no one-call equivalent),
//! run by `powershell.rs` (absolute path, no profile, killed after a timeout).
//! Wine has no failover cluster: the queries are verified only on real Windows; the pure parts
//! (state names, property-list parsing, PowerShell quoting and script) are unit-tested.

use std::process::Command;

use windows::Win32::Foundation::{
    ERROR_GROUP_NOT_FOUND, ERROR_MORE_DATA, ERROR_NO_MORE_ITEMS, GetLastError, NO_ERROR, WIN32_ERROR,
};
use windows::Win32::Networking::Clustering::{
    CLUSCTL_RESOURCE_GET_PRIVATE_PROPERTIES, CLUSCTL_RESOURCE_GET_RESOURCE_TYPE, CLUSPROP_FORMAT_EXPAND_SZ,
    CLUSPROP_FORMAT_SZ, CLUSPROP_SYNTAX_NAME, CLUSTER_GROUP_ENUM_CONTAINS, CloseCluster, CloseClusterGroup,
    CloseClusterResource, ClusterGroupCloseEnum, ClusterGroupEnum, ClusterGroupOpenEnum, ClusterResourceControl,
    ClusterStateRunning, GetClusterGroupState, GetNodeClusterState, HCLUSTER, HGROUP, HGROUPENUM, HRESOURCE,
    OpenCluster, OpenClusterGroup, OpenClusterResource,
};
use windows::core::{PCWSTR, PWSTR};

use super::powershell::{POWERSHELL_TIMEOUT, powershell_exe, run_bounded};
use super::util::{from_wide, map_code, wide};
use crate::host::{ClusterRoleInfo, ClusterRoleRequest, HostError};

/// The CLUSPROP_SYNTAX value of a property-name record.
const SYNTAX_NAME: u32 = CLUSPROP_SYNTAX_NAME.0;
/// The CLUSPROP_FORMAT (low word of a value record's syntax) of string values.
const FORMAT_SZ: u32 = CLUSPROP_FORMAT_SZ.0 as u32;
const FORMAT_EXPAND_SZ: u32 = CLUSPROP_FORMAT_EXPAND_SZ.0 as u32;

/// CLUSTER_GROUP_STATE as the names `Get-ClusterGroup` prints (reference §11).
pub fn cluster_group_state_name(state: i32) -> &'static str {
    match state {
        0 => "Online",
        1 => "Offline",
        2 => "Failed",
        3 => "PartialOnline",
        4 => "Pending",
        _ => "Unknown",
    }
}

/// A PowerShell single-quoted string literal. Inside one, only quote characters are special:
/// `'` and the typographic quotes PowerShell also accepts (U+2018..U+201B) are doubled.
pub fn ps_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn ps_array(values: &[String]) -> String {
    format!("@({})", values.iter().map(|v| ps_quote(v)).collect::<Vec<_>>().join(", "))
}

/// The script for `powershell.exe -EncodedCommand`: a fixed structure in which every value from
/// the request is a quoted literal, so no input can change what runs.
pub fn add_cluster_role_script(request: &ClusterRoleRequest) -> String {
    let mut s = String::from("$ErrorActionPreference = 'Stop'\ntry {\n    Import-Module FailoverClusters\n");
    s += &format!(
        "    $p = @{{ Name = {}; ServiceName = {} }}\n",
        ps_quote(&request.name),
        ps_quote(&request.service_name)
    );
    if !request.static_addresses.is_empty() {
        s += &format!("    $p['StaticAddress'] = {}\n", ps_array(&request.static_addresses));
    }
    if !request.ignore_networks.is_empty() {
        s += &format!("    $p['IgnoreNetwork'] = {}\n", ps_array(&request.ignore_networks));
    }
    if let Some(cluster) = &request.cluster_name {
        s += &format!("    $p['Cluster'] = {}\n", ps_quote(cluster));
    }
    s += "    Add-ClusterGenericServiceRole @p | Out-Null\n";
    if !request.possible_owners.is_empty() {
        s += &format!(
            "    $o = @{{ Group = {}; Owners = {} }}\n",
            ps_quote(&request.name),
            ps_array(&request.possible_owners)
        );
        if let Some(cluster) = &request.cluster_name {
            s += &format!("    $o['Cluster'] = {}\n", ps_quote(cluster));
        }
        s += "    Set-ClusterOwnerNode @o | Out-Null\n";
    }
    s += "} catch {\n    [Console]::Error.WriteLine($_.Exception.Message)\n    exit 1\n}\nexit 0\n";
    s
}

/// `-EncodedCommand` argument: base64 of the UTF-16LE script.
pub fn encode_powershell_command(script: &str) -> String {
    use base64::Engine as _;
    let utf16le: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64::engine::general_purpose::STANDARD.encode(utf16le)
}

/// The first string value of property `name` in a cluster property list (CLUSPROP_* records:
/// DWORD count, then per property a NAME record and value records ending with ENDMARK).
pub fn find_sz_property(list: &[u8], name: &str) -> Option<String> {
    let dword = |off: usize| list.get(off..off + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let utf16 = |off: usize, len: usize| {
        let bytes = list.get(off..off + len)?;
        let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Some(from_wide(&units))
    };
    let count = dword(0)?;
    let mut off = 4usize;
    for _ in 0..count {
        if dword(off)? != SYNTAX_NAME {
            return None;
        }
        let len = dword(off + 4)? as usize;
        let prop = utf16(off + 8, len)?;
        off += 8 + len.next_multiple_of(4);
        let mut value = None;
        loop {
            let syntax = dword(off)?;
            if syntax == 0 {
                off += 4;
                break;
            }
            let len = dword(off + 4)? as usize;
            if value.is_none() && matches!(syntax & 0xFFFF, FORMAT_SZ | FORMAT_EXPAND_SZ) {
                value = utf16(off + 8, len);
            }
            off += 8 + len.next_multiple_of(4);
        }
        if prop.eq_ignore_ascii_case(name) {
            return value;
        }
    }
    None
}

/// The calling thread's last error; read it right after the failing call.
fn last_error() -> WIN32_ERROR {
    // SAFETY: reads a thread-local value; no pointers, no preconditions.
    unsafe { GetLastError() }
}

/// Unsupported unless this node is a running failover-cluster node.
fn require_cluster() -> Result<(), HostError> {
    let mut state = 0u32;
    // SAFETY: a null node name means this node; `state` is a valid out slot.
    let rc = unsafe { GetNodeClusterState(PCWSTR::null(), &mut state) };
    if rc != NO_ERROR.0 {
        return Err(HostError::Unsupported(format!("failover clustering is not available here (os error {rc})")));
    }
    if state != ClusterStateRunning.0 as u32 {
        return Err(HostError::Unsupported(format!(
            "this node is not a running failover-cluster node (state {state})"
        )));
    }
    Ok(())
}

// Each guard holds one non-null handle returned to this process, owned by the guard alone, and
// closes it exactly once on drop; nothing else closes it.

struct Cluster(HCLUSTER);
impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: an open cluster handle owned by this guard (see above).
        unsafe {
            let _ = CloseCluster(self.0);
        }
    }
}

struct Group(HGROUP);
impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: an open group handle owned by this guard (see above).
        unsafe {
            let _ = CloseClusterGroup(self.0);
        }
    }
}

struct Resource(HRESOURCE);
impl Drop for Resource {
    fn drop(&mut self) {
        // SAFETY: an open resource handle owned by this guard (see above).
        unsafe {
            let _ = CloseClusterResource(self.0);
        }
    }
}

struct GroupEnum(HGROUPENUM);
impl Drop for GroupEnum {
    fn drop(&mut self) {
        // SAFETY: an open group enumeration handle owned by this guard (see above).
        unsafe {
            let _ = ClusterGroupCloseEnum(self.0);
        }
    }
}

/// ClusterResourceControl output, grown until it fits.
fn resource_control(res: &Resource, code: u32) -> Result<Vec<u8>, u32> {
    let mut buf = vec![0u8; 512];
    loop {
        let mut returned = 0u32;
        // SAFETY: `res` holds an open resource handle for the call; no input buffer (null, size
        // 0); the output pointer and size describe `buf` exactly, so the API writes within it or
        // reports ERROR_MORE_DATA with the size needed in `returned`, a valid out slot.
        let rc = unsafe {
            ClusterResourceControl(
                res.0,
                None,
                code,
                None,
                0,
                Some(buf.as_mut_ptr().cast()),
                buf.len() as u32,
                Some(&mut returned),
            )
        };
        match WIN32_ERROR(rc) {
            NO_ERROR => {
                buf.truncate(returned as usize);
                return Ok(buf);
            }
            ERROR_MORE_DATA if returned as usize > buf.len() => buf.resize(returned as usize, 0),
            code => return Err(code.0),
        }
    }
}

/// ServiceName of the group's "Generic Service" resource, if it has one.
fn generic_service_name(cluster: &Cluster, group: &Group) -> Result<String, HostError> {
    // SAFETY: `group` holds an open group handle for the call; the type is a documented flag.
    let e = unsafe { ClusterGroupOpenEnum(group.0, CLUSTER_GROUP_ENUM_CONTAINS.0 as u32) };
    if e.0 == 0 {
        return Err(map_code("enumerate cluster group resources", last_error().0));
    }
    let e = GroupEnum(e);
    let mut found = String::new();
    for index in 0.. {
        let mut kind = 0u32;
        let mut name = vec![0u16; 256];
        let mut len = name.len() as u32;
        // SAFETY: `e` holds an open enumeration; `name` is a live buffer of `len` u16s (in:
        // capacity in characters), so a longer name fails with ERROR_MORE_DATA instead of
        // overflowing; `kind` and `len` are valid out slots.
        let rc = unsafe { ClusterGroupEnum(e.0, index, &mut kind, PWSTR(name.as_mut_ptr()), &mut len) };
        if rc != NO_ERROR.0 {
            if rc != ERROR_NO_MORE_ITEMS.0 {
                return Err(map_code("enumerate cluster group resources", rc));
            }
            break;
        }
        // SAFETY: `cluster` holds an open cluster handle; on success ClusterGroupEnum wrote a
        // NUL-terminated name into `name`, which lives across the call.
        let res = unsafe { OpenClusterResource(cluster.0, PCWSTR(name.as_ptr())) };
        if res.0 == 0 {
            continue;
        }
        let res = Resource(res);
        let Ok(ty) = resource_control(&res, CLUSCTL_RESOURCE_GET_RESOURCE_TYPE.0 as u32) else { continue };
        let units: Vec<u16> = ty.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        if !from_wide(&units).eq_ignore_ascii_case("Generic Service") {
            continue;
        }
        if let Ok(props) = resource_control(&res, CLUSCTL_RESOURCE_GET_PRIVATE_PROPERTIES.0 as u32)
            && let Some(service) = find_sz_property(&props, "ServiceName")
        {
            found = service;
            break;
        }
    }
    Ok(found)
}

pub fn query_role(name: &str) -> Result<Option<ClusterRoleInfo>, HostError> {
    require_cluster()?;
    // SAFETY: a null name opens the local cluster; the handle is owned by `Cluster` below.
    let h = unsafe { OpenCluster(PCWSTR::null()) };
    if h.0 == 0 {
        return Err(map_code("OpenCluster", last_error().0));
    }
    let cluster = Cluster(h);
    let n = wide(name);
    // SAFETY: `cluster` holds an open cluster handle; `n` is a NUL-terminated buffer alive for
    // the call. The handle is owned by `Group` below.
    let g = unsafe { OpenClusterGroup(cluster.0, PCWSTR(n.as_ptr())) };
    if g.0 == 0 {
        return match last_error() {
            ERROR_GROUP_NOT_FOUND => Ok(None),
            code => Err(map_code(&format!("open cluster group {name}"), code.0)),
        };
    }
    let group = Group(g);
    let mut owner = vec![0u16; 256];
    let mut len = owner.len() as u32;
    // SAFETY: `group` holds an open group handle; `owner` is a live buffer of `len` u16s (in:
    // capacity in characters), so the API never writes past it; `len` is a valid out slot.
    let state = unsafe { GetClusterGroupState(group.0, Some(PWSTR(owner.as_mut_ptr())), Some(&mut len)) };
    Ok(Some(ClusterRoleInfo {
        owner_node: from_wide(&owner),
        state: cluster_group_state_name(state.0).to_string(),
        service_name: generic_service_name(&cluster, &group)?,
    }))
}

pub fn create_role(request: &ClusterRoleRequest) -> Result<(), HostError> {
    require_cluster()?;
    let encoded = encode_powershell_command(&add_cluster_role_script(request));
    let mut command = Command::new(powershell_exe()?);
    command.args(["-NoProfile", "-NonInteractive", "-EncodedCommand", &encoded]);
    let output = run_bounded(&mut command, "powershell.exe", POWERSHELL_TIMEOUT)?;
    if output.status.success() {
        return Ok(());
    }
    // The script prints only the cmdlet's error message; it carries no secret material.
    let message: String = String::from_utf8_lossy(&output.stderr).trim().chars().take(400).collect();
    Err(HostError::Os {
        context: format!("Add-ClusterGenericServiceRole {}: {message}", request.name),
        code: output.status.code().unwrap_or(-1) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_states_use_the_header_values() {
        assert_eq!(cluster_group_state_name(-1), "Unknown");
        assert_eq!(cluster_group_state_name(0), "Online");
        assert_eq!(cluster_group_state_name(1), "Offline");
        assert_eq!(cluster_group_state_name(2), "Failed");
        assert_eq!(cluster_group_state_name(3), "PartialOnline");
        assert_eq!(cluster_group_state_name(4), "Pending");
        // Some docs show ClusterGroupOnline = 206: not a real value.
        assert_eq!(cluster_group_state_name(206), "Unknown");
    }

    #[test]
    fn quoting_doubles_every_single_quote_form() {
        assert_eq!(ps_quote("ssis-master"), "'ssis-master'");
        assert_eq!(ps_quote("it's"), "'it''s'");
        assert_eq!(ps_quote("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
        assert_eq!(ps_quote("\u{2018}\u{201A}\u{201B}"), "'\u{2018}\u{2018}\u{201A}\u{201A}\u{201B}\u{201B}'");
        // Nothing else is special inside single quotes: $, backtick, double quotes stay literal.
        assert_eq!(ps_quote("$(rm x) `n \"q\""), "'$(rm x) `n \"q\"'");
        assert_eq!(ps_quote(""), "''");
    }

    /// Every quoted literal must stay one token: after the opening quote, quotes come in pairs
    /// until the closing one.
    fn single_quoted_literals(script: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = script.chars().peekable();
        let is_quote = |c: char| matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}');
        while let Some(c) = chars.next() {
            if !is_quote(c) {
                continue;
            }
            let mut lit = String::new();
            while let Some(c) = chars.next() {
                if is_quote(c) {
                    if chars.peek().is_some_and(|&n| is_quote(n)) {
                        lit.push(chars.next().unwrap());
                        continue;
                    }
                    break;
                }
                lit.push(c);
            }
            out.push(lit);
        }
        out
    }

    #[test]
    fn script_keeps_hostile_values_inside_literals() {
        let hostile = "x'; Remove-Item C:\\ -Recurse; '\u{2019}; $(whoami)";
        let request = ClusterRoleRequest {
            name: hostile.to_string(),
            service_name: "SSISScaleOutMaster160".into(),
            static_addresses: vec!["10.0.0.60".into(), hostile.into()],
            ignore_networks: vec![],
            possible_owners: vec!["NODE1".into(), "NODE2".into()],
            cluster_name: Some("CLU1".into()),
        };
        let script = add_cluster_role_script(&request);
        let literals = single_quoted_literals(&script);
        let expected = [
            "Stop",
            hostile,
            "SSISScaleOutMaster160",
            "StaticAddress",
            "10.0.0.60",
            hostile,
            "Cluster",
            "CLU1",
            hostile,
            "NODE1",
            "NODE2",
            "Cluster",
            "CLU1",
        ];
        assert_eq!(literals, expected);
        assert!(script.contains("Add-ClusterGenericServiceRole @p"));
        assert!(script.contains("Set-ClusterOwnerNode @o"));
        assert!(!script.contains("IgnoreNetwork"));
    }

    #[test]
    fn minimal_request_has_no_optional_parameters() {
        let request = ClusterRoleRequest {
            name: "ssis-master".into(),
            service_name: "SSISScaleOutMaster150".into(),
            static_addresses: vec![],
            ignore_networks: vec!["Cluster Network 2".into()],
            possible_owners: vec![],
            cluster_name: None,
        };
        let script = add_cluster_role_script(&request);
        assert!(script.contains("$p = @{ Name = 'ssis-master'; ServiceName = 'SSISScaleOutMaster150' }"));
        assert!(script.contains("$p['IgnoreNetwork'] = @('Cluster Network 2')"));
        assert!(!script.contains("StaticAddress"));
        assert!(!script.contains("Cluster'] ="));
        assert!(!script.contains("Set-ClusterOwnerNode"));
    }

    #[test]
    fn encoded_command_is_base64_of_utf16le() {
        // "dir" -> 64 00 69 00 72 00.
        assert_eq!(encode_powershell_command("dir"), "ZABpAHIA");
        assert_eq!(encode_powershell_command("a"), "YQA=");
        assert_eq!(encode_powershell_command(""), "");
        assert_eq!(encode_powershell_command("ab"), "YQBiAA==");
    }

    fn name_record(out: &mut Vec<u8>, syntax: u32, s: &str) {
        let mut bytes: Vec<u8> = s.encode_utf16().chain([0]).flat_map(|u| u.to_le_bytes()).collect();
        out.extend(syntax.to_le_bytes());
        out.extend((bytes.len() as u32).to_le_bytes());
        while !bytes.len().is_multiple_of(4) {
            bytes.push(0);
        }
        out.extend(bytes);
    }

    #[test]
    fn property_list_lookup() {
        let mut list = Vec::new();
        list.extend(2u32.to_le_bytes());
        name_record(&mut list, SYNTAX_NAME, "UseNetworkName");
        list.extend(0x0001_0002u32.to_le_bytes()); // LIST_VALUE_DWORD
        list.extend(4u32.to_le_bytes());
        list.extend(1u32.to_le_bytes());
        list.extend(0u32.to_le_bytes()); // ENDMARK
        name_record(&mut list, SYNTAX_NAME, "ServiceName");
        name_record(&mut list, 0x0001_0003, "SSISScaleOutMaster160"); // LIST_VALUE_SZ
        list.extend(0u32.to_le_bytes());
        assert_eq!(find_sz_property(&list, "ServiceName").as_deref(), Some("SSISScaleOutMaster160"));
        assert_eq!(find_sz_property(&list, "servicename").as_deref(), Some("SSISScaleOutMaster160"));
        assert_eq!(find_sz_property(&list, "UseNetworkName"), None);
        assert_eq!(find_sz_property(&list, "StartupParameters"), None);
        assert_eq!(find_sz_property(&list[..10], "ServiceName"), None);
    }
}
