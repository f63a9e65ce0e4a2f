//! A simulated world for engine tests: hosts under `<world>/hosts/<node>`, secrets in a map.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ssis_agent::certificates::{GeneratedCertificate, generate_self_signed};
use ssis_agent::engine::{AgentConfig, ApplyReport, MapSecretSource, reconcile_host};
use ssis_agent::host::SecretString;
use ssis_agent::host::simulated::SimulatedHost;
use ssis_agent::host::simulated::provision::{Features, ProvisionedHost, provision};
use ssis_crds::*;

pub const PFX_PASSWORD: &str = "pfx-pass-Zq9";

pub struct World {
    pub dir: PathBuf,
}

impl World {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ssis-agent-{test}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("hosts")).unwrap();
        Self { dir }
    }
    pub fn root(&self, node: &str) -> PathBuf {
        self.dir.join("hosts").join(node)
    }
    pub fn provision(&self, node: &str, features: &str) -> ProvisionedHost {
        provision(&self.root(node), &node.to_uppercase(), SqlVersion::V160, features.parse::<Features>().unwrap())
            .unwrap()
    }
    pub fn host(&self, node: &str) -> SimulatedHost {
        SimulatedHost::open(self.root(node), None).unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn master_certificate(names: &[&str]) -> GeneratedCertificate {
    generate_self_signed(names, &SecretString::new(PFX_PASSWORD)).unwrap()
}

pub fn pfx_source(secret: &str) -> CertificateMaterialRef {
    CertificateMaterialRef {
        secret_name: secret.into(),
        certificate_key: None,
        pfx_key: Some(host_secret_keys::PFX.into()),
        pfx_password_key: Some(host_secret_keys::PFX_PASSWORD.into()),
    }
}

pub fn der_source(secret: &str) -> CertificateMaterialRef {
    CertificateMaterialRef {
        secret_name: secret.into(),
        certificate_key: Some(host_secret_keys::CERTIFICATE_DER.into()),
        pfx_key: None,
        pfx_password_key: None,
    }
}

pub fn add_certificate_secret(secrets: &mut MapSecretSource, secret: &str, cert: &GeneratedCertificate) {
    secrets.insert(secret, host_secret_keys::PFX, cert.pfx.clone());
    secrets.insert(secret, host_secret_keys::PFX_PASSWORD, PFX_PASSWORD);
    secrets.insert(secret, host_secret_keys::CERTIFICATE_DER, cert.der.clone());
}

pub fn read_worker_certificate(world: &World, node: &str) -> Vec<u8> {
    std::fs::read(world.root(node).join("fs/C/Program Files/Microsoft SQL Server/160/DTS/Binn/SSISScaleOutWorker.cer"))
        .unwrap()
}

/// HostConfig of a master node of the HA design (reference §6).
pub fn master_spec(master_thumbprint: &str, trusted_workers: &[(&str, &str)], create_role: bool) -> HostConfigSpec {
    let mut certificates = vec![HostCertificate {
        name: "master".into(),
        store: CertStore::Root,
        thumbprint: master_thumbprint.into(),
        ensure: Ensure::Present,
        source: Some(pfx_source("master-cert")),
        private_key_readers: vec![],
    }];
    let mut triggers =
        vec!["masterSettings".to_string(), "certificate/master".into(), "httpSslBinding/0.0.0.0:8391".into()];
    for (secret, thumbprint) in trusted_workers {
        certificates.push(HostCertificate {
            name: format!("worker-{secret}"),
            store: CertStore::Root,
            thumbprint: (*thumbprint).into(),
            ensure: Ensure::Present,
            source: Some(der_source(secret)),
            private_key_readers: vec![],
        });
        triggers.push(format!("certificate/worker-{secret}"));
    }
    HostConfigSpec {
        sql_version: SqlVersion::V160,
        certificates,
        master_settings: Some(MasterSettings {
            sql_server_name: "agl-ssis,1433".into(),
            ssl_cert_thumbprint: master_thumbprint.into(),
            port_number: 8391,
        }),
        http_ssl_bindings: vec![HttpSslBinding {
            ip_port: "0.0.0.0:8391".into(),
            thumbprint: master_thumbprint.into(),
            cert_store: CertStore::Root,
            app_id: None,
        }],
        services: vec![HostService {
            role: ServiceRole::ScaleOutMaster,
            state: ServiceRunState::ClusterManaged,
            start_type: Some(ServiceStartType::Manual),
            logon: None,
            restart_on_change_of: triggers,
            restart_token: None,
        }],
        cluster_role: Some(ClusterRole {
            name: "ssis-master".into(),
            service: ServiceRole::ScaleOutMaster,
            create: create_role,
            possible_owners: vec!["M1".into(), "M2".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// HostConfig of a worker node (reference §8).
pub fn worker_spec(master_thumbprint: &str, worker_thumbprint: &str, endpoint: &str) -> HostConfigSpec {
    HostConfigSpec {
        sql_version: SqlVersion::V160,
        certificates: vec![HostCertificate {
            name: "master".into(),
            store: CertStore::Root,
            thumbprint: master_thumbprint.into(),
            ensure: Ensure::Present,
            source: Some(der_source("master-cert")),
            private_key_readers: vec![],
        }],
        worker_settings: Some(WorkerSettings {
            master_endpoint: endpoint.into(),
            master_https_cert_thumbprint: master_thumbprint.into(),
            worker_https_cert_thumbprint: worker_thumbprint.into(),
        }),
        services: vec![HostService {
            role: ServiceRole::ScaleOutWorker,
            state: ServiceRunState::Running,
            start_type: None,
            logon: None,
            restart_on_change_of: vec!["workerSettings".into(), "certificate/master".into()],
            restart_token: None,
        }],
        ..Default::default()
    }
}

pub fn now() -> jiff::Timestamp {
    "2026-11-22T03:00:00Z".parse().unwrap()
}

pub fn apply(
    host: &mut SimulatedHost,
    spec: &HostConfigSpec,
    secrets: &MapSecretSource,
    previous: Option<&HostConfigStatus>,
) -> (HostConfigStatus, ApplyReport) {
    reconcile_host(host, spec, 1, secrets, previous, now(), &AgentConfig::default())
}

pub fn item<'a>(status: &'a HostConfigStatus, name: &str) -> &'a ItemStatus {
    status.items.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("no item {name} in {:#?}", status.items))
}

pub fn ready(status: &HostConfigStatus) -> bool {
    find_condition(&status.conditions, condition_types::READY).is_some_and(|c| c.status == "True")
}

pub fn binn(root: &Path) -> PathBuf {
    root.join("fs/C/Program Files/Microsoft SQL Server/160/DTS/Binn")
}
