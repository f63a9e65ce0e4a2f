//! The agent's allow-list: a HostConfig can only name files, registry values and services that are
//! derived from the SQL version and the agent's own configuration (its Program Files root and
//! explicitly allowed extra folders). Everything is normalised before it is compared; anything else
//! is refused with a reason naming the field and never executed.

use ssis_crds::{RegistryValueType, SqlVersion};

/// Default Program Files folder of SQL Server (reference §1).
pub const DEFAULT_PROGRAM_FILES_ROOT: &str = r"C:\Program Files\Microsoft SQL Server";

/// SCHANNEL key and the only values the agent may write there (reference §7, pitfall 3).
pub const SCHANNEL_KEY: &str = r"SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL";
pub const SCHANNEL_VALUES: [&str; 2] = ["SendTrustedIssuerList", "ClientAuthTrustMode"];

/// The agent's configured roots (flags `--program-files` and `--allow-root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyConfig {
    pub program_files_root: String,
    pub extra_roots: Vec<String>,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self { program_files_root: DEFAULT_PROGRAM_FILES_ROOT.to_string(), extra_roots: Vec::new() }
    }
}

/// A path or key rejected before comparison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("must be an absolute path with a drive letter (C:\\...) or a UNC share (\\\\server\\share\\...)")]
    NotAbsolute,
    #[error("'..' is not allowed")]
    ParentComponent,
    #[error("device and extended-length paths (\\\\?\\, \\\\.\\) are not allowed")]
    DevicePath,
    #[error("component {0:?} is not allowed (alternate data streams, wildcards or trailing dots/spaces)")]
    BadComponent(String),
}

/// A normalised Windows path: backslashes, no empty or `.` components, drive letter upper-case.
/// Compare with [`WindowsPath::key`] (case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsPath {
    /// `C:` or `\\server\share`.
    prefix: String,
    components: Vec<String>,
}

impl WindowsPath {
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let unified = raw.trim().replace('/', "\\");
        if unified.starts_with(r"\\?\") || unified.starts_with(r"\\.\") || unified.starts_with(r"\??\") {
            return Err(PathError::DevicePath);
        }
        let (prefix, rest) = if let Some(unc) = unified.strip_prefix(r"\\") {
            let mut parts = unc.split('\\').filter(|p| !p.is_empty());
            let (Some(server), Some(share)) = (parts.next(), parts.next()) else {
                return Err(PathError::NotAbsolute);
            };
            let consumed = unc.find(share).map(|i| i + share.len()).unwrap_or(unc.len());
            (format!(r"\\{server}\{share}"), unc[consumed..].to_string())
        } else {
            let bytes = unified.as_bytes();
            if bytes.len() < 3 || !bytes[0].is_ascii_alphabetic() || bytes[1] != b':' || bytes[2] != b'\\' {
                return Err(PathError::NotAbsolute);
            }
            (format!("{}:", (bytes[0] as char).to_ascii_uppercase()), unified[2..].to_string())
        };
        let mut components = Vec::new();
        for component in rest.split('\\') {
            match component {
                "" | "." => continue,
                ".." => return Err(PathError::ParentComponent),
                c if c.contains([':', '*', '?', '"', '<', '>', '|']) || c.ends_with('.') || c.ends_with(' ') => {
                    return Err(PathError::BadComponent(c.to_string()));
                }
                c => components.push(c.to_string()),
            }
        }
        Ok(Self { prefix, components })
    }

    /// Case-insensitive comparison key.
    fn key(&self) -> Vec<String> {
        std::iter::once(self.prefix.to_lowercase()).chain(self.components.iter().map(|c| c.to_lowercase())).collect()
    }

    /// Whether `self` is `root` or inside it.
    pub fn is_within(&self, root: &WindowsPath) -> bool {
        let (mine, theirs) = (self.key(), root.key());
        mine.len() >= theirs.len() && mine[..theirs.len()] == theirs[..]
    }

    pub fn file_name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    pub fn join(&self, component: &str) -> WindowsPath {
        let mut joined = self.clone();
        joined.components.extend(component.split('\\').filter(|c| !c.is_empty()).map(str::to_string));
        joined
    }
}

impl std::fmt::Display for WindowsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.prefix)?;
        if self.components.is_empty() {
            return f.write_str("\\");
        }
        for component in &self.components {
            write!(f, "\\{component}")?;
        }
        Ok(())
    }
}

/// Normalise a registry key path relative to HKLM: backslashes, no empty components, optional
/// `HKLM\` / `HKEY_LOCAL_MACHINE\` prefix removed. Returns the comparison key (lower-case).
pub fn normalise_registry_key(raw: &str) -> Result<String, String> {
    if raw.contains('/') {
        return Err("must use backslashes".into());
    }
    let mut components: Vec<&str> = raw.split('\\').filter(|c| !c.is_empty()).collect();
    if let Some(first) = components.first()
        && (first.eq_ignore_ascii_case("HKLM") || first.eq_ignore_ascii_case("HKEY_LOCAL_MACHINE"))
    {
        components.remove(0);
    }
    if components.iter().any(|c| *c == "." || *c == "..") {
        return Err("'.' and '..' are not allowed".into());
    }
    if components.is_empty() {
        return Err("is empty".into());
    }
    Ok(components.join("\\").to_lowercase())
}

/// What a registry value on the allow-list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedRegistryValue {
    /// `ServiceConfigFile` pointer of the legacy service (reference §4); data must be an allowed
    /// legacy config path.
    ServiceConfigFile,
    /// An SCHANNEL DWORD (reference §7).
    Schannel,
}

/// The allow-list for one SQL version.
#[derive(Debug, Clone)]
pub struct AllowList {
    version: SqlVersion,
    binn: WindowsPath,
    extra_roots: Vec<WindowsPath>,
}

impl AllowList {
    /// Build from the agent's configuration; a bad configured root is a start-up error.
    pub fn new(config: &SafetyConfig, version: SqlVersion) -> Result<Self, String> {
        let program_files = WindowsPath::parse(&config.program_files_root)
            .map_err(|error| format!("--program-files '{}' {error}", config.program_files_root))?;
        let extra_roots = config
            .extra_roots
            .iter()
            .map(|root| WindowsPath::parse(root).map_err(|error| format!("--allow-root '{root}' {error}")))
            .collect::<Result<Vec<_>, _>>()?;
        let binn = program_files.join(version.major_dir()).join("DTS").join("Binn");
        Ok(Self { version, binn, extra_roots })
    }

    pub fn version(&self) -> SqlVersion {
        self.version
    }

    /// `<Program Files>\<ver>\DTS\Binn` (reference §1).
    pub fn binn_dir(&self) -> &WindowsPath {
        &self.binn
    }

    pub fn master_settings_path(&self) -> String {
        self.binn.join("MasterSettings.config").to_string()
    }

    pub fn worker_settings_path(&self) -> String {
        self.binn.join("WorkerSettings.config").to_string()
    }

    pub fn default_legacy_config_path(&self) -> String {
        self.binn.join("MsDtsSrvr.ini.xml").to_string()
    }

    /// The folders a legacy config file may live in: Binn plus the extra roots.
    pub fn allowed_folders(&self) -> Vec<String> {
        std::iter::once(&self.binn).chain(&self.extra_roots).map(ToString::to_string).collect()
    }

    /// Check a legacy config file path (`field` names the spec field for the message). Returns the
    /// normalised path.
    pub fn check_legacy_config_path(&self, field: &str, raw: &str) -> Result<String, String> {
        let path = WindowsPath::parse(raw).map_err(|error| format!("{field} '{raw}' {error}; fix the path"))?;
        let inside = std::iter::once(&self.binn).chain(&self.extra_roots).any(|root| path.is_within(root));
        if !inside {
            return Err(format!(
                "{field} '{raw}' is outside the allowed folders [{}]; add the folder to the agent's --allow-root or fix the path",
                self.allowed_folders().join(", ")
            ));
        }
        let is_xml = path.file_name().is_some_and(|name| name.to_lowercase().ends_with(".xml"));
        if !is_xml {
            return Err(format!("{field} '{raw}' must name an .xml file (MsDtsSrvr.ini.xml); fix the path"));
        }
        Ok(path.to_string())
    }

    /// `SOFTWARE\Microsoft\Microsoft SQL Server\<ver>\SSIS` (reference §4).
    pub fn ssis_key(&self) -> String {
        format!(r"SOFTWARE\Microsoft\Microsoft SQL Server\{}\SSIS", self.version.major_dir())
    }

    /// `...\SSIS\ServiceConfigFile` (the key form of the pointer).
    pub fn service_config_file_key(&self) -> String {
        format!(r"{}\ServiceConfigFile", self.ssis_key())
    }

    /// Check a registry value of `spec.registryValues[i]`.
    pub fn check_registry_value(
        &self,
        field: &str,
        key: &str,
        value_name: Option<&str>,
        value_type: RegistryValueType,
        data: &str,
    ) -> Result<AllowedRegistryValue, String> {
        let normalised = normalise_registry_key(key).map_err(|problem| format!("{field}.key '{key}' {problem}"))?;
        let pointer_key = normalise_registry_key(&self.service_config_file_key()).unwrap_or_default();
        let ssis_key = normalise_registry_key(&self.ssis_key()).unwrap_or_default();
        let schannel = normalise_registry_key(SCHANNEL_KEY).unwrap_or_default();
        let allowed_list = format!(
            "[{}\\(Default), {}\\ServiceConfigFile, {SCHANNEL_KEY}\\{{{}}}]",
            self.service_config_file_key(),
            self.ssis_key(),
            SCHANNEL_VALUES.join(", ")
        );
        let kind = match value_name {
            None if normalised == pointer_key => AllowedRegistryValue::ServiceConfigFile,
            Some(name) if normalised == ssis_key && name.eq_ignore_ascii_case("ServiceConfigFile") => {
                AllowedRegistryValue::ServiceConfigFile
            }
            Some(name) if normalised == schannel && SCHANNEL_VALUES.iter().any(|v| v.eq_ignore_ascii_case(name)) => {
                AllowedRegistryValue::Schannel
            }
            _ => {
                return Err(format!(
                    "{field} HKLM\\{key}\\{} is not on the agent's registry allow-list {allowed_list}; remove the item",
                    value_name.unwrap_or("(Default)")
                ));
            }
        };
        match kind {
            AllowedRegistryValue::ServiceConfigFile => {
                if value_type != RegistryValueType::String {
                    return Err(format!("{field}.type must be String for ServiceConfigFile"));
                }
                self.check_legacy_config_path(&format!("{field}.data"), data)?;
            }
            AllowedRegistryValue::Schannel => {
                if value_type != RegistryValueType::DWord || data.parse::<u32>().is_err() {
                    return Err(format!("{field} SCHANNEL values are DWORDs; set type DWord and a decimal data"));
                }
            }
        }
        Ok(kind)
    }
}

/// `true` for 40 upper-case hex digits (the spec's thumbprint form).
pub fn is_thumbprint(value: &str) -> bool {
    value.len() == 40 && value.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// A GUID as Windows tools spell it: `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` or without the
/// braces, any hex case. The other forms `uuid` reads (32 bare digits, `urn:uuid:`) are refused.
pub fn parse_guid(value: &str) -> Option<uuid::Uuid> {
    if !matches!(value.len(), 36 | 38) {
        return None;
    }
    uuid::Uuid::try_parse(value).ok()
}

/// A Windows account name in `DOMAIN\user`, `user@domain` or `NT Service\name` form.
pub fn is_account_name(value: &str) -> bool {
    let value = value.trim();
    if value.is_empty()
        || value.len() > 256
        || value.contains(['"', '/', '[', ']', ':', ';', '|', '=', '+', '*', '?', '<', '>'])
    {
        return false;
    }
    match (value.split_once('\\'), value.split_once('@')) {
        (Some((domain, user)), None) => !domain.is_empty() && !user.is_empty() && !user.contains('\\'),
        (None, Some((user, domain))) => !user.is_empty() && !domain.is_empty() && !domain.contains('@'),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(extra: &[&str]) -> AllowList {
        let config = SafetyConfig {
            program_files_root: DEFAULT_PROGRAM_FILES_ROOT.into(),
            extra_roots: extra.iter().map(|r| r.to_string()).collect(),
        };
        AllowList::new(&config, SqlVersion::V160).unwrap()
    }

    #[test]
    fn paths_are_normalised_before_comparison() {
        let list = allow(&[]);
        let ok = list
            .check_legacy_config_path("f", "c:/program files/MICROSOFT SQL SERVER/160/dts/binn//MsDtsSrvr.ini.xml")
            .unwrap();
        assert_eq!(ok, r"C:\program files\MICROSOFT SQL SERVER\160\dts\binn\MsDtsSrvr.ini.xml");
    }

    #[test]
    fn parent_components_are_rejected_even_when_they_would_stay_inside() {
        let list = allow(&[]);
        let error = list
            .check_legacy_config_path(
                "spec.legacyServiceConfig.configFilePath",
                r"C:\Program Files\Microsoft SQL Server\160\DTS\Binn\..\Binn\MsDtsSrvr.ini.xml",
            )
            .unwrap_err();
        assert!(error.contains("'..' is not allowed"), "{error}");
    }

    #[test]
    fn outside_path_names_field_allowed_folders_and_fix() {
        let list = allow(&[]);
        let error =
            list.check_legacy_config_path("spec.legacyServiceConfig.configFilePath", r"D:\x\a.xml").unwrap_err();
        assert_eq!(
            error,
            r"spec.legacyServiceConfig.configFilePath 'D:\x\a.xml' is outside the allowed folders [C:\Program Files\Microsoft SQL Server\160\DTS\Binn]; add the folder to the agent's --allow-root or fix the path"
        );
    }

    #[test]
    fn sibling_folder_with_common_prefix_is_not_inside() {
        let list = allow(&[r"S:\SSIS"]);
        assert!(list.check_legacy_config_path("f", r"S:\SSIS\MsDtsSrvr.ini.xml").is_ok());
        assert!(list.check_legacy_config_path("f", r"S:\SSIS-other\MsDtsSrvr.ini.xml").is_err());
        assert!(list.check_legacy_config_path("f", r"S:\ssis\sub\MsDtsSrvr.ini.xml").is_ok());
    }

    #[test]
    fn device_paths_streams_and_relative_paths_are_rejected() {
        for bad in [r"\\?\C:\x.xml", r"\\.\pipe\x", r"relative\x.xml", r"C:\Program Files\a.xml:stream", r"C:\x.xml."] {
            assert!(WindowsPath::parse(bad).is_err(), "{bad}");
        }
        assert!(WindowsPath::parse(r"\\fileserver\share\ssis\MsDtsSrvr.ini.xml").is_ok());
    }

    #[test]
    fn registry_allow_list() {
        let list = allow(&[]);
        let pointer = r"SOFTWARE\Microsoft\Microsoft SQL Server\160\SSIS\ServiceConfigFile";
        let path = r"C:\Program Files\Microsoft SQL Server\160\DTS\Binn\MsDtsSrvr.ini.xml";
        assert_eq!(
            list.check_registry_value("r", pointer, None, RegistryValueType::String, path),
            Ok(AllowedRegistryValue::ServiceConfigFile)
        );
        assert_eq!(
            list.check_registry_value(
                "r",
                r"HKLM\software\microsoft\microsoft sql server\160\ssis",
                Some("ServiceConfigFile"),
                RegistryValueType::String,
                path
            ),
            Ok(AllowedRegistryValue::ServiceConfigFile)
        );
        assert_eq!(
            list.check_registry_value("r", SCHANNEL_KEY, Some("ClientAuthTrustMode"), RegistryValueType::DWord, "2"),
            Ok(AllowedRegistryValue::Schannel)
        );
        // Another version's key, another SCHANNEL value, a pointer to a foreign file: refused.
        let other_version = r"SOFTWARE\Microsoft\Microsoft SQL Server\150\SSIS\ServiceConfigFile";
        assert!(list.check_registry_value("r", other_version, None, RegistryValueType::String, path).is_err());
        assert!(list.check_registry_value("r", SCHANNEL_KEY, Some("Enabled"), RegistryValueType::DWord, "1").is_err());
        let error = list
            .check_registry_value(
                "spec.registryValues[0]",
                pointer,
                None,
                RegistryValueType::String,
                r"C:\Windows\evil.xml",
            )
            .unwrap_err();
        assert!(error.starts_with(r"spec.registryValues[0].data 'C:\Windows\evil.xml' is outside"), "{error}");
        assert!(list.check_registry_value("r", r"SOFTWARE\..\SYSTEM", None, RegistryValueType::String, path).is_err());
    }

    #[test]
    fn thumbprints_and_accounts() {
        assert!(is_thumbprint("0123456789ABCDEF0123456789ABCDEF01234567"));
        let guid = 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff_u128;
        assert_eq!(parse_guid("{00112233-4455-6677-8899-AABBCCDDEEFF}").map(|g| g.as_u128()), Some(guid));
        assert_eq!(parse_guid("00112233-4455-6677-8899-aabbccddeeff").map(|g| g.as_u128()), Some(guid));
        for bad in [
            "",
            "{00112233-4455-6677-8899-aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeeff}",
            "{{00112233-4455-6677-8899-aabbccddeeff}}",
            "00112233445566778899aabbccddeeff",
            "urn:uuid:00112233-4455-6677-8899-aabbccddeeff",
            "0011223-34455-6677-8899-aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeefg",
            " 00112233-4455-6677-8899-aabbccddeef",
        ] {
            assert_eq!(parse_guid(bad), None, "{bad}");
        }
        assert!(!is_thumbprint("0123456789abcdef0123456789abcdef01234567"));
        assert!(is_account_name(r"CORP\svc-ssis"));
        assert!(is_account_name(r"NT Service\SSISScaleOutWorker160"));
        assert!(is_account_name("svc@corp.local"));
        assert!(!is_account_name("svc"));
        assert!(!is_account_name(r"CORP\a\b"));
    }
}
