//! Lay out a simulated node as SQL Server setup leaves it (reference §1, §2, §3, §4, §7): the Binn
//! folder with default settings files, a random `AgentId`, the default MsDtsSrvr.ini.xml and its
//! registry pointer, the setup-created self-signed certificates, and the services installed with
//! their virtual accounts and started.

use std::path::Path;

use ssis_crds::{CertStore, ServiceStartType, SqlVersion};

use super::state::{HostPaths, HostState, StoredService};
use super::{SimulatedHost, start_service_in};
use crate::certificates;
use crate::host::{Host, HostError, RegistryData, SecretString};
use crate::safety::DEFAULT_PROGRAM_FILES_ROOT;
use crate::settings::{self, SettingValue, legacy_ini};

/// Which SSIS features setup installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    pub master: bool,
    pub worker: bool,
    pub legacy: bool,
}

impl std::str::FromStr for Features {
    type Err = String;
    /// `master,worker,legacy` (any subset).
    fn from_str(list: &str) -> Result<Self, String> {
        let mut features = Features::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "master" => features.master = true,
                "worker" => features.worker = true,
                "legacy" => features.legacy = true,
                other => return Err(format!("unknown feature '{other}'; use master, worker, legacy")),
            }
        }
        Ok(features)
    }
}

/// What setup produced, for tests and the harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedHost {
    pub computer_name: String,
    /// `AgentId` of WorkerSettings.config.
    pub agent_id: Option<String>,
    /// Setup's self-signed master certificate (LocalMachine\Root, with key).
    pub master_certificate_thumbprint: Option<String>,
    /// Setup's self-signed worker certificate (LocalMachine\My with key, and Root).
    pub worker_certificate_thumbprint: Option<String>,
}

/// Provision `root` as an SSIS node. Fails if the root already holds a host.
pub fn provision(
    root: &Path,
    computer_name: &str,
    version: SqlVersion,
    features: Features,
) -> Result<ProvisionedHost, HostError> {
    let paths = HostPaths { root: root.to_path_buf() };
    if paths.state_file().exists() {
        return Err(HostError::Invalid(format!("{} already holds a simulated host", root.display())));
    }
    std::fs::create_dir_all(paths.fs_root()).map_err(|e| super::state::io_error("create host root", e))?;
    paths.save(&HostState {
        computer_name: computer_name.to_string(),
        program_files_root: DEFAULT_PROGRAM_FILES_ROOT.to_string(),
        ..Default::default()
    })?;
    // Open without a world first: services are started below, then the cluster applies its rules.
    let mut host = SimulatedHost { paths: paths.clone(), world: None };
    let binn = format!(r"{DEFAULT_PROGRAM_FILES_ROOT}\{}\DTS\Binn", version.major_dir());
    let setup_password = SecretString::new(uuid::Uuid::new_v4().to_string());
    let generate = |names: &[&str]| {
        certificates::generate_self_signed(names, &setup_password).map_err(|e| HostError::Invalid(e.to_string()))
    };
    let mut provisioned = ProvisionedHost {
        computer_name: computer_name.to_string(),
        agent_id: None,
        master_certificate_thumbprint: None,
        worker_certificate_thumbprint: None,
    };
    let mut services = Vec::new();
    if features.master {
        // Setup's master certificate: CN = machine name, in LocalMachine\Root with its key (§7).
        let cert = generate(&[computer_name])?;
        host.import_pfx(CertStore::Root, &cert.pfx, &setup_password)?;
        host.write_file_atomic(&format!(r"{binn}\SSISScaleOutMaster.cer"), &cert.der)?;
        let master = settings::apply_owned_values(
            settings::default_master_settings().as_bytes(),
            &[
                ("SSLCertThumbprint", SettingValue::Text(cert.thumbprint.clone())),
                ("SqlServerName", SettingValue::Text(computer_name.to_string())),
            ],
        )
        .map_err(|e| HostError::Invalid(e.to_string()))?;
        host.write_file_atomic(&format!(r"{binn}\MasterSettings.config"), &master)?;
        host.set_ssl_binding(
            "0.0.0.0:8391",
            &cert.thumbprint,
            CertStore::Root,
            "{00000000-0000-0000-0000-000000008391}",
        )?;
        provisioned.master_certificate_thumbprint = Some(cert.thumbprint);
        services.push(version.master_service_name());
    }
    if features.worker {
        let cert = generate(&[computer_name])?;
        host.import_pfx(CertStore::My, &cert.pfx, &setup_password)?;
        host.import_certificate(CertStore::Root, &cert.der)?;
        host.grant_private_key_read(
            CertStore::My,
            &cert.thumbprint,
            &format!(r"NT Service\{}", version.worker_service_name()),
        )?;
        host.write_file_atomic(&format!(r"{binn}\SSISScaleOutWorker.cer"), &cert.der)?;
        let agent_id = uuid::Uuid::new_v4().to_string();
        let worker = settings::apply_owned_values(
            settings::default_worker_settings(computer_name, &agent_id).as_bytes(),
            &[("WorkerHttpsCertThumbprint", SettingValue::Text(cert.thumbprint.clone()))],
        )
        .map_err(|e| HostError::Invalid(e.to_string()))?;
        host.write_file_atomic(&format!(r"{binn}\WorkerSettings.config"), &worker)?;
        provisioned.agent_id = Some(agent_id);
        provisioned.worker_certificate_thumbprint = Some(cert.thumbprint);
        services.push(version.worker_service_name());
    }
    if features.legacy {
        let ini_path = format!(r"{binn}\MsDtsSrvr.ini.xml");
        host.write_file_atomic(&ini_path, legacy_ini::default_legacy_ini().as_bytes())?;
        let key = format!(r"SOFTWARE\Microsoft\Microsoft SQL Server\{}\SSIS\ServiceConfigFile", version.major_dir());
        host.write_registry(&key, None, &RegistryData::String(ini_path))?;
        services.push(version.legacy_service_name());
    }
    let fs_root = paths.fs_root();
    paths.update(|state| {
        for name in &services {
            state.services.insert(
                name.clone(),
                StoredService {
                    running: false,
                    start_type: ServiceStartType::Automatic,
                    logon_account: format!(r"NT Service\{name}"),
                    loaded: None,
                    starts: 0,
                    last_start_error: None,
                },
            );
            start_service_in(&fs_root, state, name)?;
        }
        Ok(())
    })?;
    if let Some(world) = super::world_of(root) {
        super::cluster::enforce_for_host(&world, computer_name)?;
    }
    Ok(provisioned)
}
