//! Step 1: every HostConfig item is checked against the allow-list and basic shape rules before
//! anything on the host is read or written. A refused item is reported (state Refused, with the
//! field and the fix) and never executed.

use std::collections::BTreeMap;

use ssis_crds::{Ensure, HostConfigSpec, ItemKind, ServiceRole};

use crate::safety::{AllowList, is_account_name, is_thumbprint, parse_guid};

/// Status item names (also the vocabulary of `restartOnChangeOf`).
pub mod item_names {
    pub const MASTER_SETTINGS: &str = "masterSettings";
    pub const WORKER_SETTINGS: &str = "workerSettings";
    pub const LEGACY_SERVICE_CONFIG: &str = "legacyServiceConfig";

    pub fn certificate(name: &str) -> String {
        format!("certificate/{name}")
    }
    pub fn registry_value(name: &str) -> String {
        format!("registryValue/{name}")
    }
    pub fn http_ssl_binding(ip_port: &str) -> String {
        format!("httpSslBinding/{ip_port}")
    }
    pub fn service(role: ssis_crds::ServiceRole) -> String {
        format!("service/{role:?}")
    }
    pub fn cluster_role(name: &str) -> String {
        format!("clusterRole/{name}")
    }
}

/// Why an item is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: ItemKind,
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of validation.
#[derive(Debug, Clone, Default)]
pub struct Validated {
    /// Refused items by item name.
    pub refused: BTreeMap<String, Refusal>,
    /// Normalised legacy config path (when the legacy item is allowed).
    pub legacy_config_path: Option<String>,
}

impl Validated {
    pub fn is_refused(&self, item: &str) -> bool {
        self.refused.contains_key(item)
    }
    fn refuse(&mut self, item: String, kind: ItemKind, reason: &'static str, message: String) {
        self.refused.entry(item).or_insert(Refusal { kind, reason, message });
    }
}

fn thumbprint_problem(field: &str, value: &str) -> Option<String> {
    (!is_thumbprint(value))
        .then(|| format!("{field} '{value}' must be 40 upper-case hex digits (a SHA-1 thumbprint); fix the value"))
}

/// `https://host:port` with a DNS host name and a port.
pub fn parse_master_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint.strip_prefix("https://")?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        return None;
    }
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let valid_host = !host.is_empty()
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    valid_host.then(|| (host.to_string(), port))
}

fn ip_port_is_valid(ip_port: &str) -> bool {
    let Some((ip, port)) = ip_port.rsplit_once(':') else {
        return false;
    };
    let octets: Vec<&str> = ip.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| !o.is_empty() && o.len() <= 3 && o.parse::<u8>().is_ok())
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn is_guid(value: &str) -> bool {
    parse_guid(value).is_some()
}

/// Check every item of the spec.
pub fn validate(spec: &HostConfigSpec, allow: &AllowList) -> Validated {
    let mut result = Validated::default();

    for (index, cert) in spec.certificates.iter().enumerate() {
        let item = item_names::certificate(&cert.name);
        let field = format!("spec.certificates[{index}]");
        let mut problems: Vec<String> =
            thumbprint_problem(&format!("{field}.thumbprint"), &cert.thumbprint).into_iter().collect();
        if cert.ensure == Ensure::Present {
            match &cert.source {
                None => problems
                    .push(format!("{field}.source is required unless ensure is Absent; add the Secret reference")),
                Some(source) => {
                    if source.pfx_key.is_some() != source.pfx_password_key.is_some() {
                        problems.push(format!(
                            "{field}.source: pfxKey and pfxPasswordKey go together; set both or neither"
                        ));
                    }
                    if source.pfx_key.is_none() && source.certificate_key.is_none() {
                        problems.push(format!("{field}.source: set certificateKey or pfxKey + pfxPasswordKey"));
                    }
                    if !cert.private_key_readers.is_empty() && source.pfx_key.is_none() {
                        problems.push(format!(
                            "{field}.privateKeyReaders needs a private key; import from pfxKey or drop privateKeyReaders"
                        ));
                    }
                }
            }
        }
        for (reader_index, reader) in cert.private_key_readers.iter().enumerate() {
            if !is_account_name(reader) {
                problems.push(format!(
                    "{field}.privateKeyReaders[{reader_index}] '{reader}' is not a DOMAIN\\user or user@domain account name"
                ));
            }
        }
        if let Some(problem) = problems.into_iter().next() {
            result.refuse(item, ItemKind::Certificate, "InvalidItem", problem);
        }
    }

    if let Some(master) = &spec.master_settings {
        let problem = thumbprint_problem("spec.masterSettings.sslCertThumbprint", &master.ssl_cert_thumbprint)
            .or_else(|| {
                (!(1..=65535).contains(&master.port_number)).then(|| {
                    format!("spec.masterSettings.portNumber {} must be between 1 and 65535", master.port_number)
                })
            })
            .or_else(|| {
                (master.sql_server_name.trim().is_empty() || master.sql_server_name.chars().any(char::is_control)).then(
                    || "spec.masterSettings.sqlServerName must be a server name such as 'listener,1433'".to_string(),
                )
            });
        if let Some(problem) = problem {
            result.refuse(item_names::MASTER_SETTINGS.into(), ItemKind::MasterSettings, "InvalidItem", problem);
        }
    }

    if let Some(worker) = &spec.worker_settings {
        let problem = (parse_master_endpoint(&worker.master_endpoint).is_none())
            .then(|| {
                format!(
                    "spec.workerSettings.masterEndpoint '{}' must be https://<master DNS name>:<port>",
                    worker.master_endpoint
                )
            })
            .or_else(|| {
                thumbprint_problem(
                    "spec.workerSettings.masterHttpsCertThumbprint",
                    &worker.master_https_cert_thumbprint,
                )
            })
            .or_else(|| {
                thumbprint_problem(
                    "spec.workerSettings.workerHttpsCertThumbprint",
                    &worker.worker_https_cert_thumbprint,
                )
            });
        if let Some(problem) = problem {
            result.refuse(item_names::WORKER_SETTINGS.into(), ItemKind::WorkerSettings, "InvalidItem", problem);
        }
    }

    if let Some(legacy) = &spec.legacy_service_config {
        let path = match &legacy.config_file_path {
            Some(path) => allow.check_legacy_config_path("spec.legacyServiceConfig.configFilePath", path),
            None => Ok(allow.default_legacy_config_path()),
        };
        let folder_problem = legacy.folders.iter().enumerate().find_map(|(index, folder)| {
            let field = format!("spec.legacyServiceConfig.folders[{index}]");
            if folder.server_name.is_some() == folder.store_path.is_some() {
                return Some(format!(
                    "{field}: set exactly one of serverName (SqlServerFolder) or storePath (FileSystemFolder)"
                ));
            }
            if folder.name.is_empty() || folder.name.contains(['"', '<', '>', '|', ':', '*', '?', '\\', '/']) {
                return Some(format!("{field}.name '{}' contains characters invalid in folder names", folder.name));
            }
            None
        });
        match (path, folder_problem) {
            (Err(problem), _) => result.refuse(
                item_names::LEGACY_SERVICE_CONFIG.into(),
                ItemKind::LegacyServiceConfig,
                "OutsideAllowList",
                problem,
            ),
            (Ok(_), Some(problem)) => result.refuse(
                item_names::LEGACY_SERVICE_CONFIG.into(),
                ItemKind::LegacyServiceConfig,
                "InvalidItem",
                problem,
            ),
            (Ok(path), None) => result.legacy_config_path = Some(path),
        }
    }

    for (index, value) in spec.registry_values.iter().enumerate() {
        let field = format!("spec.registryValues[{index}]");
        if let Err(problem) =
            allow.check_registry_value(&field, &value.key, value.value_name.as_deref(), value.type_, &value.data)
        {
            result.refuse(
                item_names::registry_value(&value.name),
                ItemKind::RegistryValue,
                "OutsideAllowList",
                problem,
            );
        }
    }

    for (index, binding) in spec.http_ssl_bindings.iter().enumerate() {
        let field = format!("spec.httpSslBindings[{index}]");
        let problem = (!ip_port_is_valid(&binding.ip_port))
            .then(|| format!("{field}.ipPort '{}' must be <IPv4>:<port>, e.g. 0.0.0.0:8391", binding.ip_port))
            .or_else(|| thumbprint_problem(&format!("{field}.thumbprint"), &binding.thumbprint))
            .or_else(|| {
                binding.app_id.as_ref().filter(|id| !is_guid(id)).map(|id| {
                    format!("{field}.appId '{id}' must be a GUID such as {{00112233-4455-6677-8899-aabbccddeeff}}")
                })
            });
        if let Some(problem) = problem {
            result.refuse(
                item_names::http_ssl_binding(&binding.ip_port),
                ItemKind::HttpSslBinding,
                "InvalidItem",
                problem,
            );
        }
    }

    let known_triggers = trigger_names(spec);
    let mut seen_roles: Vec<ServiceRole> = Vec::new();
    for (index, service) in spec.services.iter().enumerate() {
        let field = format!("spec.services[{index}]");
        let item = item_names::service(service.role);
        let mut problem = None;
        if seen_roles.contains(&service.role) {
            problem = Some(format!("{field}.role {:?} is listed twice; merge the entries", service.role));
        }
        seen_roles.push(service.role);
        if let Some(logon) = &service.logon
            && !is_account_name(&logon.username)
        {
            problem.get_or_insert(format!(
                "{field}.logon.username '{}' is not a DOMAIN\\user or user@domain account name",
                logon.username
            ));
        }
        for (trigger_index, trigger) in service.restart_on_change_of.iter().enumerate() {
            if !known_triggers.iter().any(|known| known == trigger) {
                problem.get_or_insert(format!(
                    "{field}.restartOnChangeOf[{trigger_index}] '{trigger}' names no item of this HostConfig; use one of [{}]",
                    known_triggers.join(", ")
                ));
            }
        }
        if let Some(problem) = problem {
            result.refuse(item, ItemKind::Service, "InvalidItem", problem);
        }
    }

    if let Some(role) = &spec.cluster_role {
        let valid_name = !role.name.is_empty()
            && role.name.len() <= 15
            && role.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let problem = (!valid_name)
            .then(|| {
                format!(
                    "spec.clusterRole.name '{}' must be 1-15 letters, digits, '-' or '_' (a NetBIOS name)",
                    role.name
                )
            })
            .or_else(|| {
                role.possible_owners.iter().enumerate().find(|(_, o)| o.is_empty() || o.len() > 15).map(|(i, o)| {
                    format!(
                        "spec.clusterRole.possibleOwners[{i}] '{o}' must be a Windows computer name (1-15 characters)"
                    )
                })
            });
        if let Some(problem) = problem {
            result.refuse(item_names::cluster_role(&role.name), ItemKind::ClusterRole, "InvalidItem", problem);
        }
    }
    result
}

/// The item names a `restartOnChangeOf` entry may use for this spec.
pub fn trigger_names(spec: &HostConfigSpec) -> Vec<String> {
    let mut names = Vec::new();
    if spec.master_settings.is_some() {
        names.push(item_names::MASTER_SETTINGS.to_string());
    }
    if spec.worker_settings.is_some() {
        names.push(item_names::WORKER_SETTINGS.to_string());
    }
    if spec.legacy_service_config.is_some() {
        names.push(item_names::LEGACY_SERVICE_CONFIG.to_string());
    }
    names.extend(spec.certificates.iter().map(|c| item_names::certificate(&c.name)));
    names.extend(spec.http_ssl_bindings.iter().map(|b| item_names::http_ssl_binding(&b.ip_port)));
    names.extend(spec.registry_values.iter().map(|r| item_names::registry_value(&r.name)));
    names
}
