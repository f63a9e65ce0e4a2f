//! Step 2: read the host state the spec is about. Reads only; a failing read is kept as an error
//! for the items that needed it.

use std::collections::BTreeMap;

use ssis_crds::{CertStore, HostConfigSpec, ServiceRole};

use super::validate::Validated;
use crate::host::{CertInfo, ClusterRoleInfo, Host, HostError, RegistryData, ServiceInfo, SslBindingInfo};
use crate::safety::AllowList;

/// A file's path and content (`None` when missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedFile {
    pub path: String,
    pub content: Result<Option<Vec<u8>>, String>,
}

/// The two forms of the legacy `ServiceConfigFile` pointer (reference §4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPointer {
    pub key_exists: bool,
    /// `...\SSIS\ServiceConfigFile` (Default).
    pub key_default: Option<RegistryData>,
    /// `...\SSIS` value `ServiceConfigFile`.
    pub named_value: Option<RegistryData>,
}

/// What the engine saw on the host.
#[derive(Debug, Clone)]
pub struct Observed {
    pub computer_name: Result<String, String>,
    pub certificates: BTreeMap<CertStore, Result<Vec<CertInfo>, String>>,
    /// Private key readers of spec certificates that have readers listed and are present.
    pub key_readers: BTreeMap<(CertStore, String), Result<Vec<String>, String>>,
    pub master_settings: ObservedFile,
    pub worker_settings: ObservedFile,
    pub legacy_config: Option<ObservedFile>,
    pub legacy_pointer: Result<ObservedPointer, String>,
    /// Spec registry values by item name.
    pub registry_values: BTreeMap<String, Result<Option<RegistryData>, String>>,
    /// All three SSIS services (status reports every one).
    pub services: BTreeMap<ServiceRole, Result<Option<ServiceInfo>, String>>,
    pub ssl_bindings: BTreeMap<String, Result<Option<SslBindingInfo>, String>>,
    pub cluster_role: Option<Result<Option<ClusterRoleInfo>, HostErrorText>>,
}

/// A host error kept as text, with whether the backend cannot do it at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostErrorText {
    pub unsupported: bool,
    pub message: String,
}

impl Observed {
    /// The certificate with this thumbprint in this store, if observed.
    pub fn certificate(&self, store: CertStore, thumbprint: &str) -> Option<&CertInfo> {
        self.certificates.get(&store)?.as_ref().ok()?.iter().find(|c| c.thumbprint.eq_ignore_ascii_case(thumbprint))
    }
}

fn text(error: HostError) -> String {
    error.to_string()
}

pub const ALL_ROLES: [ServiceRole; 3] =
    [ServiceRole::ScaleOutMaster, ServiceRole::ScaleOutWorker, ServiceRole::LegacySsisService];

pub fn observe(host: &dyn Host, spec: &HostConfigSpec, allow: &AllowList, validated: &Validated) -> Observed {
    let mut certificates = BTreeMap::new();
    for store in [CertStore::Root, CertStore::My] {
        certificates.insert(store, host.list_certificates(store).map_err(text));
    }
    let mut key_readers = BTreeMap::new();
    for cert in spec.certificates.iter().filter(|c| !c.private_key_readers.is_empty()) {
        let present = certificates
            .get(&cert.store)
            .and_then(|r| r.as_ref().ok())
            .is_some_and(|list| list.iter().any(|c| c.thumbprint.eq_ignore_ascii_case(&cert.thumbprint)));
        if present {
            key_readers.insert(
                (cert.store, cert.thumbprint.clone()),
                host.private_key_readers(cert.store, &cert.thumbprint).map_err(text),
            );
        }
    }
    let read = |path: String| ObservedFile { content: host.read_file(&path).map_err(text), path };
    let legacy_config = validated.legacy_config_path.clone().map(read);
    let legacy_pointer = (|| -> Result<ObservedPointer, HostError> {
        Ok(ObservedPointer {
            key_exists: host.registry_key_exists(&allow.service_config_file_key())?,
            key_default: host.read_registry(&allow.service_config_file_key(), None)?,
            named_value: host.read_registry(&allow.ssis_key(), Some("ServiceConfigFile"))?,
        })
    })()
    .map_err(text);
    let mut registry_values = BTreeMap::new();
    for value in &spec.registry_values {
        let item = super::validate::item_names::registry_value(&value.name);
        if !validated.is_refused(&item) {
            registry_values.insert(item, host.read_registry(&value.key, value.value_name.as_deref()).map_err(text));
        }
    }
    let services = ALL_ROLES
        .iter()
        .map(|role| (*role, host.query_service(&role.service_name(spec.sql_version)).map_err(text)))
        .collect();
    let ssl_bindings = spec
        .http_ssl_bindings
        .iter()
        .map(|b| (b.ip_port.clone(), host.query_ssl_binding(&b.ip_port).map_err(text)))
        .collect();
    let cluster_role = spec.cluster_role.as_ref().map(|role| {
        host.query_cluster_role(&role.name).map_err(|error| HostErrorText {
            unsupported: matches!(error, HostError::Unsupported(_)),
            message: error.to_string(),
        })
    });
    Observed {
        computer_name: host.computer_name().map_err(text),
        certificates,
        key_readers,
        master_settings: read(allow.master_settings_path()),
        worker_settings: read(allow.worker_settings_path()),
        legacy_config,
        legacy_pointer,
        registry_values,
        services,
        ssl_bindings,
        cluster_role,
    }
}
