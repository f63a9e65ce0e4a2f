//! Real Windows backend of [`Host`]: thin Win32 adapters, one module per area. Decisions stay in
//! the engine; these functions only translate calls and errors. Tested under Wine
//! (`agent/tests/windows_*.rs`); what Wine cannot represent is listed in docs/windows.md.

mod certs;
mod cluster;
mod files;
mod http;
mod keyacl;
mod powershell;
mod registry;
mod services;
mod util;

pub use cluster::{add_cluster_role_script, cluster_group_state_name, encode_powershell_command, ps_quote};
pub use http::{format_guid, parse_guid, parse_ip_port};
pub use powershell::{POWERSHELL_TIMEOUT, powershell_exe};
pub use util::{filetime_to_rfc3339, hex_upper, parse_thumbprint};

use ssis_crds::{CertStore, ServiceStartType};

use super::{
    ClusterRoleInfo, ClusterRoleRequest, Host, HostError, RegistryData, SecretString, ServiceInfo, SslBindingInfo,
};

/// The Win32 host. Stateless: every call opens and closes its own handles.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowsHost;

impl WindowsHost {
    pub fn new() -> Self {
        Self
    }
}

impl Host for WindowsHost {
    fn backend_name(&self) -> &'static str {
        "windows"
    }

    fn computer_name(&self) -> Result<String, HostError> {
        util::computer_name()
    }

    fn list_certificates(&self, store: CertStore) -> Result<Vec<super::CertInfo>, HostError> {
        certs::list(store)
    }

    fn import_pfx(&mut self, store: CertStore, pfx: &[u8], password: &SecretString) -> Result<String, HostError> {
        certs::import_pfx(store, pfx, password)
    }

    fn import_certificate(&mut self, store: CertStore, der: &[u8]) -> Result<String, HostError> {
        certs::import_certificate(store, der)
    }

    fn remove_certificate(&mut self, store: CertStore, thumbprint: &str) -> Result<bool, HostError> {
        certs::remove(store, thumbprint)
    }

    fn private_key_readers(&self, store: CertStore, thumbprint: &str) -> Result<Vec<String>, HostError> {
        keyacl::readers(store, thumbprint)
    }

    fn grant_private_key_read(&mut self, store: CertStore, thumbprint: &str, account: &str) -> Result<(), HostError> {
        keyacl::grant_read(store, thumbprint, account)
    }

    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, HostError> {
        files::read(path)
    }

    fn write_file_atomic(&mut self, path: &str, content: &[u8]) -> Result<(), HostError> {
        files::write_atomic(path, content)
    }

    fn registry_key_exists(&self, key: &str) -> Result<bool, HostError> {
        registry::key_exists(key)
    }

    fn read_registry(&self, key: &str, value_name: Option<&str>) -> Result<Option<RegistryData>, HostError> {
        registry::read(key, value_name)
    }

    fn write_registry(&mut self, key: &str, value_name: Option<&str>, data: &RegistryData) -> Result<(), HostError> {
        registry::write(key, value_name, data)
    }

    fn query_service(&self, name: &str) -> Result<Option<ServiceInfo>, HostError> {
        services::query(name)
    }

    fn start_service(&mut self, name: &str) -> Result<(), HostError> {
        services::start(name)
    }

    fn stop_service(&mut self, name: &str) -> Result<(), HostError> {
        services::stop(name)
    }

    fn set_service_start_type(&mut self, name: &str, start_type: ServiceStartType) -> Result<(), HostError> {
        services::set_start_type(name, start_type)
    }

    fn set_service_logon(&mut self, name: &str, account: &str, password: &SecretString) -> Result<(), HostError> {
        services::set_logon(name, account, password)
    }

    fn query_ssl_binding(&self, ip_port: &str) -> Result<Option<SslBindingInfo>, HostError> {
        http::query(ip_port)
    }

    fn set_ssl_binding(
        &mut self,
        ip_port: &str,
        thumbprint: &str,
        store: CertStore,
        app_id: &str,
    ) -> Result<(), HostError> {
        http::set(ip_port, thumbprint, store, app_id)
    }

    fn query_cluster_role(&self, name: &str) -> Result<Option<ClusterRoleInfo>, HostError> {
        cluster::query_role(name)
    }

    fn create_cluster_role(&mut self, request: &ClusterRoleRequest) -> Result<(), HostError> {
        cluster::create_role(request)
    }
}
