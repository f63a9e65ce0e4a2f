//! Step 3: the pure diff of desired vs observed into ordered, idempotent steps.
//!
//! Order (reference §7/§8: certificates before the settings that name them; the service restart
//! last): certificates → registry → MasterSettings/WorkerSettings → legacy config + pointer →
//! HTTP.SYS bindings → service start type / logon → removal of `Absent` certificates (after the
//! settings switched away from them) → cluster role. Service start/stop/restart is decided by
//! [`plan_service_actions`] after the other steps ran, from what actually changed.

use std::collections::BTreeMap;

use ssis_crds::{
    CertStore, Ensure, HostConfigSpec, ItemKind, ItemState, RegistryPointerMode, RegistryValueType, ServiceRole,
    ServiceRunState,
};

use super::SecretSource;
use super::applied_state::AppliedState;
use super::observe::{Observed, ObservedFile};
use super::validate::{Validated, item_names};
use crate::certificates;
use crate::host::{ClusterRoleRequest, RegistryData, SecretString, ServiceInfo, ServiceState};
use crate::safety::{AllowList, WindowsPath};
use crate::settings::{self, legacy_ini};

/// Application id used for a new HTTP.SYS binding when the spec gives none and none exists
/// (the docs accept any GUID; a fixed one keeps the agent idempotent).
pub const DEFAULT_SSL_BINDING_APP_ID: &str = "{5E1A6D4B-0C0F-4D62-9B37-55515CA1E391}";

/// Why an item cannot proceed in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub state: ItemState,
    pub reason: &'static str,
    pub message: String,
}

impl Blocked {
    fn pending(reason: &'static str, message: String) -> Self {
        Self { state: ItemState::Pending, reason, message }
    }
    fn failed(reason: &'static str, message: String) -> Self {
        Self { state: ItemState::Failed, reason, message }
    }
    fn refused(reason: &'static str, message: String) -> Self {
        Self { state: ItemState::Refused, reason, message }
    }
}

/// Certificate material read from a Secret. Debug never shows the bytes or the password.
pub enum Material {
    Pfx { pfx: Vec<u8>, password: SecretString },
    Der(Vec<u8>),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Material::Pfx { pfx, .. } => write!(f, "Pfx({} bytes, password redacted)", pfx.len()),
            Material::Der(der) => write!(f, "Der({} bytes)", der.len()),
        }
    }
}

/// Secret material the plan needs, looked up only for items that must change.
#[derive(Debug, Default)]
pub struct Materials {
    pub certificates: BTreeMap<String, Result<Material, Blocked>>,
    pub logon_passwords: BTreeMap<ServiceRole, Result<SecretString, Blocked>>,
}

/// One host write.
#[derive(Debug)]
pub enum Action {
    ImportPfx { store: CertStore, thumbprint: String, pfx: Vec<u8>, password: SecretString },
    ImportCertificate { store: CertStore, thumbprint: String, der: Vec<u8> },
    GrantPrivateKeyRead { store: CertStore, thumbprint: String, account: String },
    WriteRegistry { key: String, value_name: Option<String>, data: RegistryData },
    WriteFile { path: String, content: Vec<u8> },
    SetSslBinding { ip_port: String, thumbprint: String, store: CertStore, app_id: String },
    SetStartType { service: String, start_type: ssis_crds::ServiceStartType },
    SetLogon { service: String, account: String, password: SecretString },
    RemoveCertificate { store: CertStore, thumbprint: String },
    CreateClusterRole { request: ClusterRoleRequest },
}

/// A step: an action for an item, skipped when an item it depends on failed in this pass.
#[derive(Debug)]
pub struct Step {
    pub item: String,
    pub action: Action,
    pub depends_on: Vec<String>,
}

/// The plan of one pass.
#[derive(Debug, Default)]
pub struct Plan {
    /// Items in apply order, with their kind.
    pub items: Vec<(String, ItemKind)>,
    pub steps: Vec<Step>,
    /// Items that cannot proceed (no steps for them).
    pub blocked: BTreeMap<String, Blocked>,
    /// Observed value per item (thumbprint, setting values, service state), before the pass.
    pub observed_values: BTreeMap<String, String>,
}

impl Plan {
    fn block(&mut self, item: &str, blocked: Blocked) {
        self.blocked.entry(item.to_string()).or_insert(blocked);
    }
    fn step(&mut self, item: &str, action: Action, depends_on: Vec<String>) {
        self.steps.push(Step { item: item.to_string(), action, depends_on });
    }
    /// Whether the plan imports this certificate into this store (and which item does).
    fn importer_of(&self, store: CertStore, thumbprint: &str) -> Option<String> {
        self.steps.iter().find_map(|step| match &step.action {
            Action::ImportPfx { store: s, thumbprint: t, .. }
            | Action::ImportCertificate { store: s, thumbprint: t, .. }
                if *s == store && t.eq_ignore_ascii_case(thumbprint) =>
            {
                Some(step.item.clone())
            }
            _ => None,
        })
    }
}

fn store_name(store: CertStore) -> &'static str {
    match store {
        CertStore::Root => r"LocalMachine\Root",
        CertStore::My => r"LocalMachine\My",
    }
}

/// Whether a present certificate still lacks what the item asks for (a private key from a PFX).
fn certificate_needs_import(spec_cert: &ssis_crds::HostCertificate, observed: &Observed) -> bool {
    match observed.certificate(spec_cert.store, &spec_cert.thumbprint) {
        None => true,
        Some(found) => {
            let wants_key = spec_cert.source.as_ref().is_some_and(|s| s.pfx_key.is_some());
            wants_key && !found.has_private_key
        }
    }
}

fn secret_bytes(secrets: &dyn SecretSource, field: &str, secret: &str, key: &str) -> Result<Vec<u8>, Blocked> {
    match secrets.get(secret, key) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(Blocked::pending(
            "WaitingForSecret",
            format!("{field}: Secret {secret} has no key {key} (yet); create it in the agent's namespace"),
        )),
        Err(problem) => Err(Blocked::failed("SecretUnreadable", format!("{field}: {problem}"))),
    }
}

fn secret_text(bytes: Vec<u8>, field: &str) -> Result<SecretString, Blocked> {
    String::from_utf8(bytes)
        .map(SecretString::new)
        .map_err(|_| Blocked::failed("InvalidMaterial", format!("{field}: the password is not UTF-8 text")))
}

/// Look up the Secret material of items that must change, and verify certificate thumbprints.
pub fn resolve_materials(
    spec: &HostConfigSpec,
    validated: &Validated,
    observed: &Observed,
    secrets: &dyn SecretSource,
) -> Materials {
    let mut materials = Materials::default();
    for (index, cert) in spec.certificates.iter().enumerate() {
        let item = item_names::certificate(&cert.name);
        if validated.is_refused(&item) || cert.ensure == Ensure::Absent || !certificate_needs_import(cert, observed) {
            continue;
        }
        let Some(source) = &cert.source else { continue };
        let field = format!("spec.certificates[{index}].source");
        let material = (|| -> Result<Material, Blocked> {
            let (material, leaf) = match (&source.pfx_key, &source.pfx_password_key) {
                (Some(pfx_key), Some(password_key)) => {
                    let pfx = secret_bytes(secrets, &field, &source.secret_name, pfx_key)?;
                    let password =
                        secret_text(secret_bytes(secrets, &field, &source.secret_name, password_key)?, &field)?;
                    let leaf = certificates::pfx_leaf_certificate(&pfx, &password).map_err(|error| {
                        Blocked::failed(
                            "InvalidMaterial",
                            format!("{field}: Secret {} key {pfx_key}: {error}", source.secret_name),
                        )
                    })?;
                    (Material::Pfx { pfx, password }, leaf)
                }
                _ => {
                    let key = source.certificate_key.clone().unwrap_or_default();
                    let bytes = secret_bytes(secrets, &field, &source.secret_name, &key)?;
                    let der = certificates::to_der(&bytes)
                        .and_then(|der| certificates::metadata(&der).map(|_| der))
                        .map_err(|error| {
                            Blocked::failed(
                                "InvalidMaterial",
                                format!("{field}: Secret {} key {key}: {error}", source.secret_name),
                            )
                        })?;
                    (Material::Der(der.clone()), der)
                }
            };
            let found = certificates::thumbprint(&leaf);
            if found != cert.thumbprint {
                return Err(Blocked::refused(
                    "ThumbprintMismatch",
                    format!(
                        "spec.certificates[{index}].thumbprint is {} but Secret {} holds certificate {found}; fix the thumbprint or the Secret",
                        cert.thumbprint, source.secret_name
                    ),
                ));
            }
            Ok(material)
        })();
        materials.certificates.insert(item, material);
    }
    for (index, service) in spec.services.iter().enumerate() {
        let Some(logon) = &service.logon else { continue };
        if validated.is_refused(&item_names::service(service.role)) {
            continue;
        }
        let current = observed.services.get(&service.role).and_then(|s| s.as_ref().ok()).and_then(|s| s.as_ref());
        if current.is_some_and(|info| info.logon_account.eq_ignore_ascii_case(&logon.username)) {
            continue;
        }
        let field = format!("spec.services[{index}].logon.passwordSecretRef");
        let password = secret_bytes(secrets, &field, &logon.password_secret_ref.name, &logon.password_secret_ref.key)
            .and_then(|bytes| secret_text(bytes, &field));
        materials.logon_passwords.insert(service.role, password);
    }
    materials
}

fn file_content<'a>(file: &'a ObservedFile, item: &str) -> Result<Option<&'a [u8]>, Blocked> {
    match &file.content {
        Ok(content) => Ok(content.as_deref()),
        Err(problem) => Err(Blocked::failed("ReadFailed", format!("{item}: cannot read {}: {problem}", file.path))),
    }
}

fn registry_equal(observed: Option<&RegistryData>, desired: &RegistryData) -> bool {
    match (observed, desired) {
        (Some(RegistryData::String(a)), RegistryData::String(b)) => {
            // A path pointer equal after normalisation is equal (no churn over case or slashes).
            a == b
                || match (WindowsPath::parse(a), WindowsPath::parse(b)) {
                    (Ok(a), Ok(b)) => a.is_within(&b) && b.is_within(&a),
                    _ => false,
                }
        }
        (Some(a), b) => a == b,
        (None, _) => false,
    }
}

/// Build the plan. `new_agent_id` is used only if WorkerSettings.config must be recreated.
pub fn plan(
    spec: &HostConfigSpec,
    allow: &AllowList,
    validated: &Validated,
    observed: &Observed,
    materials: &Materials,
    new_agent_id: &str,
) -> Plan {
    let mut plan = Plan::default();
    for (item, refusal) in &validated.refused {
        plan.block(item, Blocked::refused(refusal.reason, refusal.message.clone()));
    }

    // Certificates to import (reference §7: master cert into Root with key on every master node,
    // worker cert into My; public certs into Root).
    for cert in spec.certificates.iter().filter(|c| c.ensure == Ensure::Present) {
        let item = item_names::certificate(&cert.name);
        plan.items.push((item.clone(), ItemKind::Certificate));
        if validated.is_refused(&item) {
            continue;
        }
        if let Some(Err(problem)) = observed.certificates.get(&cert.store) {
            plan.block(
                &item,
                Blocked::failed("ReadFailed", format!("cannot list {}: {problem}", store_name(cert.store))),
            );
            continue;
        }
        if let Some(found) = observed.certificate(cert.store, &cert.thumbprint) {
            plan.observed_values.insert(item.clone(), found.thumbprint.clone());
        }
        if certificate_needs_import(cert, observed) {
            match materials.certificates.get(&item) {
                Some(Ok(Material::Pfx { pfx, password })) => plan.step(
                    &item,
                    Action::ImportPfx {
                        store: cert.store,
                        thumbprint: cert.thumbprint.clone(),
                        pfx: pfx.clone(),
                        password: password.clone(),
                    },
                    vec![],
                ),
                Some(Ok(Material::Der(der))) => plan.step(
                    &item,
                    Action::ImportCertificate {
                        store: cert.store,
                        thumbprint: cert.thumbprint.clone(),
                        der: der.clone(),
                    },
                    vec![],
                ),
                Some(Err(blocked)) => {
                    plan.block(&item, blocked.clone());
                    continue;
                }
                None => {
                    plan.block(&item, Blocked::failed("InvalidMaterial", format!("{item}: no certificate material")));
                    continue;
                }
            }
        }
        // Pitfall 4: the service account must be able to read the private key.
        let readers = observed.key_readers.get(&(cert.store, cert.thumbprint.clone()));
        for account in &cert.private_key_readers {
            let granted = matches!(readers, Some(Ok(list)) if list.iter().any(|r| r.eq_ignore_ascii_case(account)));
            if !granted {
                plan.step(
                    &item,
                    Action::GrantPrivateKeyRead {
                        store: cert.store,
                        thumbprint: cert.thumbprint.clone(),
                        account: account.clone(),
                    },
                    vec![],
                );
            }
        }
    }

    // Registry values (allow-listed SCHANNEL values and the ServiceConfigFile pointer).
    for value in &spec.registry_values {
        let item = item_names::registry_value(&value.name);
        plan.items.push((item.clone(), ItemKind::RegistryValue));
        if validated.is_refused(&item) {
            continue;
        }
        let desired = match value.type_ {
            RegistryValueType::String => RegistryData::String(value.data.clone()),
            RegistryValueType::DWord => RegistryData::DWord(value.data.parse().unwrap_or_default()),
        };
        match observed.registry_values.get(&item) {
            Some(Ok(current)) => {
                if let Some(current) = current {
                    plan.observed_values.insert(item.clone(), registry_text(current));
                }
                if !registry_equal(current.as_ref(), &desired) {
                    plan.step(
                        &item,
                        Action::WriteRegistry {
                            key: value.key.clone(),
                            value_name: value.value_name.clone(),
                            data: desired,
                        },
                        vec![],
                    );
                }
            }
            Some(Err(problem)) => plan.block(&item, Blocked::failed("ReadFailed", problem.clone())),
            None => {}
        }
    }

    // Settings files (reference §2, §3; HA step 5 of §6; §8 step 5).
    if let Some(master) = &spec.master_settings {
        let needed = [(CertStore::Root, master.ssl_cert_thumbprint.as_str(), "spec.masterSettings.sslCertThumbprint")];
        plan_settings_file(
            &mut plan,
            item_names::MASTER_SETTINGS,
            ItemKind::MasterSettings,
            &observed.master_settings,
            settings::default_master_settings(),
            &settings::master_owned_values(master),
            &needed,
            observed,
            validated,
        );
    }
    if let Some(worker) = &spec.worker_settings {
        let computer_name = observed.computer_name.clone().unwrap_or_default();
        let needed = [
            (
                CertStore::Root,
                worker.master_https_cert_thumbprint.as_str(),
                "spec.workerSettings.masterHttpsCertThumbprint",
            ),
            (
                CertStore::My,
                worker.worker_https_cert_thumbprint.as_str(),
                "spec.workerSettings.workerHttpsCertThumbprint",
            ),
        ];
        plan_settings_file(
            &mut plan,
            item_names::WORKER_SETTINGS,
            ItemKind::WorkerSettings,
            &observed.worker_settings,
            settings::default_worker_settings(&computer_name, new_agent_id),
            &settings::worker_owned_values(worker),
            &needed,
            observed,
            validated,
        );
    }

    // Legacy service: MsDtsSrvr.ini.xml and the ServiceConfigFile pointer (reference §4).
    if let Some(legacy) = &spec.legacy_service_config {
        let item = item_names::LEGACY_SERVICE_CONFIG;
        plan.items.push((item.to_string(), ItemKind::LegacyServiceConfig));
        if let (Some(file), Some(path)) = (&observed.legacy_config, &validated.legacy_config_path) {
            plan_legacy(&mut plan, allow, legacy, file, path, observed);
        }
    }

    // HTTP.SYS bindings on every master node (reference §7, pitfall 5).
    for binding in &spec.http_ssl_bindings {
        let item = item_names::http_ssl_binding(&binding.ip_port);
        plan.items.push((item.clone(), ItemKind::HttpSslBinding));
        if validated.is_refused(&item) {
            continue;
        }
        let current = match observed.ssl_bindings.get(&binding.ip_port) {
            Some(Ok(current)) => current.clone(),
            Some(Err(problem)) => {
                plan.block(&item, Blocked::failed("ReadFailed", problem.clone()));
                continue;
            }
            None => None,
        };
        if let Some(current) = &current {
            plan.observed_values.insert(item.clone(), current.thumbprint.clone());
        }
        let matches = current.as_ref().is_some_and(|c| {
            c.thumbprint.eq_ignore_ascii_case(&binding.thumbprint)
                && c.store == binding.cert_store
                && binding.app_id.as_ref().is_none_or(|id| id.eq_ignore_ascii_case(&c.app_id))
        });
        if matches {
            continue;
        }
        let field = format!("spec.httpSslBindings[{}].thumbprint", binding.ip_port);
        let depends_on = match certificate_dependency(&plan, observed, binding.cert_store, &binding.thumbprint, &field)
        {
            Ok(depends_on) => depends_on,
            Err(blocked) => {
                plan.block(&item, blocked);
                continue;
            }
        };
        // Docs: reuse the original appid when changing certificates.
        let app_id = binding
            .app_id
            .clone()
            .or_else(|| current.map(|c| c.app_id))
            .unwrap_or_else(|| DEFAULT_SSL_BINDING_APP_ID.to_string());
        plan.step(
            &item,
            Action::SetSslBinding {
                ip_port: binding.ip_port.clone(),
                thumbprint: binding.thumbprint.clone(),
                store: binding.cert_store,
                app_id,
            },
            depends_on,
        );
    }

    // Service configuration (start type, logon); the run state comes last.
    for service in &spec.services {
        let item = item_names::service(service.role);
        plan.items.push((item.clone(), ItemKind::Service));
        if validated.is_refused(&item) {
            continue;
        }
        let name = service.role.service_name(spec.sql_version);
        let info = match observed.services.get(&service.role) {
            Some(Ok(Some(info))) => info.clone(),
            Some(Ok(None)) | None => {
                plan.block(
                    &item,
                    Blocked::failed(
                        "ServiceNotInstalled",
                        format!(
                            "{name} is not installed; install the SSIS {} feature of SQL Server {} on this node",
                            role_feature(service.role),
                            spec.sql_version.product_version()
                        ),
                    ),
                );
                continue;
            }
            Some(Err(problem)) => {
                plan.block(&item, Blocked::failed("ReadFailed", problem.clone()));
                continue;
            }
        };
        plan.observed_values.insert(item.clone(), service_state_text(info.state).to_string());
        if let Some(start_type) = service.start_type
            && start_type != info.start_type
        {
            plan.step(&item, Action::SetStartType { service: name.clone(), start_type }, vec![]);
        }
        if let Some(logon) = &service.logon
            && !info.logon_account.eq_ignore_ascii_case(&logon.username)
        {
            match materials.logon_passwords.get(&service.role) {
                Some(Ok(password)) => plan.step(
                    &item,
                    Action::SetLogon {
                        service: name.clone(),
                        account: logon.username.clone(),
                        password: password.clone(),
                    },
                    vec![],
                ),
                Some(Err(blocked)) => plan.block(&item, blocked.clone()),
                None => {}
            }
        }
    }

    // Certificates to remove, after the settings no longer reference them.
    for cert in spec.certificates.iter().filter(|c| c.ensure == Ensure::Absent) {
        let item = item_names::certificate(&cert.name);
        plan.items.push((item.clone(), ItemKind::Certificate));
        if validated.is_refused(&item) {
            continue;
        }
        if observed.certificate(cert.store, &cert.thumbprint).is_some() {
            plan.observed_values.insert(item.clone(), cert.thumbprint.clone());
            let after: Vec<String> = plan
                .steps
                .iter()
                .map(|s| s.item.clone())
                .filter(|i| {
                    i == item_names::MASTER_SETTINGS
                        || i == item_names::WORKER_SETTINGS
                        || i.starts_with("httpSslBinding/")
                })
                .collect();
            plan.step(
                &item,
                Action::RemoveCertificate { store: cert.store, thumbprint: cert.thumbprint.clone() },
                after,
            );
        }
    }

    // The cluster role (reference §6 step 7, §11): created by exactly one node when missing.
    if let Some(role) = &spec.cluster_role {
        let item = item_names::cluster_role(&role.name);
        plan.items.push((item.clone(), ItemKind::ClusterRole));
        if !validated.is_refused(&item) {
            match &observed.cluster_role {
                Some(Ok(Some(found))) => {
                    plan.observed_values.insert(item.clone(), format!("{} on {}", found.state, found.owner_node));
                    let expected = role.service.service_name(spec.sql_version);
                    if !found.service_name.eq_ignore_ascii_case(&expected) {
                        plan.block(
                            &item,
                            Blocked::failed(
                                "RoleRunsAnotherService",
                                format!(
                                    "cluster role {} runs {} instead of {expected}; recreate the role (Remove-ClusterGroup -RemoveResources) after a version upgrade",
                                    role.name, found.service_name
                                ),
                            ),
                        );
                    }
                }
                Some(Ok(None)) if role.create => plan.step(
                    &item,
                    Action::CreateClusterRole {
                        request: ClusterRoleRequest {
                            name: role.name.clone(),
                            service_name: role.service.service_name(spec.sql_version),
                            static_addresses: role.static_addresses.clone(),
                            ignore_networks: role.ignore_networks.clone(),
                            possible_owners: role.possible_owners.clone(),
                            cluster_name: role.cluster_name.clone(),
                        },
                    },
                    vec![],
                ),
                Some(Ok(None)) => plan.block(
                    &item,
                    Blocked::pending(
                        "WaitingForRoleCreation",
                        format!("cluster role {} does not exist yet; another node creates it", role.name),
                    ),
                ),
                Some(Err(error)) => plan.block(
                    &item,
                    Blocked::failed(
                        if error.unsupported { "NotClustered" } else { "ReadFailed" },
                        error.message.clone(),
                    ),
                ),
                None => {}
            }
        }
    }
    plan
}

fn role_feature(role: ServiceRole) -> &'static str {
    match role {
        ServiceRole::ScaleOutMaster => "Scale Out Master (IS_Master)",
        ServiceRole::ScaleOutWorker => "Scale Out Worker (IS_Worker)",
        ServiceRole::LegacySsisService => "Integration Services",
    }
}

pub fn service_state_text(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Stopped => "Stopped",
        ServiceState::StartPending => "StartPending",
        ServiceState::StopPending => "StopPending",
        ServiceState::Running => "Running",
        ServiceState::ContinuePending => "ContinuePending",
        ServiceState::PausePending => "PausePending",
        ServiceState::Paused => "Paused",
    }
}

fn registry_text(data: &RegistryData) -> String {
    match data {
        RegistryData::String(s) => s.clone(),
        RegistryData::DWord(d) => d.to_string(),
    }
}

/// A referenced certificate must be in its store already or be imported earlier in this plan.
fn certificate_dependency(
    plan: &Plan,
    observed: &Observed,
    store: CertStore,
    thumbprint: &str,
    field: &str,
) -> Result<Vec<String>, Blocked> {
    if let Some(importer) = plan.importer_of(store, thumbprint) {
        return Ok(vec![importer]);
    }
    if observed.certificate(store, thumbprint).is_some() {
        return Ok(vec![]);
    }
    let waiting_on = plan.blocked.keys().find(|item| item.starts_with("certificate/")).cloned();
    Err(Blocked::pending(
        "WaitingForCertificate",
        match waiting_on {
            Some(item) => format!("{field} {thumbprint} is not in {} yet ({item} is not applied)", store_name(store)),
            None => format!(
                "{field} {thumbprint} is not in {} and no certificates[] item imports it; add the certificate",
                store_name(store)
            ),
        },
    ))
}

#[allow(clippy::too_many_arguments)]
fn plan_settings_file(
    plan: &mut Plan,
    item: &str,
    kind: ItemKind,
    file: &ObservedFile,
    default_content: String,
    values: &[(&'static str, settings::SettingValue)],
    needed_certificates: &[(CertStore, &str, &str)],
    observed: &Observed,
    validated: &Validated,
) {
    plan.items.push((item.to_string(), kind));
    if validated.is_refused(item) {
        return;
    }
    let current = match file_content(file, item) {
        Ok(current) => current,
        Err(blocked) => return plan.block(item, blocked),
    };
    if let Some(bytes) = current
        && let Ok((_, found)) = settings::read_values(bytes, &values.iter().map(|(k, _)| *k).collect::<Vec<_>>())
    {
        let summary: Vec<String> =
            values.iter().map(|(k, _)| format!("{k}={}", found.get(*k).cloned().unwrap_or_default())).collect();
        plan.observed_values.insert(item.to_string(), summary.join("; "));
    }
    let base = current.map(<[u8]>::to_vec).unwrap_or_else(|| default_content.into_bytes());
    let desired = match settings::apply_owned_values(&base, values) {
        Ok(desired) => desired,
        Err(error) => {
            return plan.block(item, Blocked::failed("UnreadableSettings", format!("{}: {error}", file.path)));
        }
    };
    if current == Some(desired.as_slice()) {
        return;
    }
    let mut depends_on = Vec::new();
    for (store, thumbprint, field) in needed_certificates {
        match certificate_dependency(plan, observed, *store, thumbprint, field) {
            Ok(mut items) => depends_on.append(&mut items),
            Err(blocked) => return plan.block(item, blocked),
        }
    }
    plan.step(item, Action::WriteFile { path: file.path.clone(), content: desired }, depends_on);
}

fn plan_legacy(
    plan: &mut Plan,
    allow: &AllowList,
    legacy: &ssis_crds::LegacyServiceConfig,
    file: &ObservedFile,
    path: &str,
    observed: &Observed,
) {
    let item = item_names::LEGACY_SERVICE_CONFIG;
    let current = match file_content(file, item) {
        Ok(current) => current,
        Err(blocked) => return plan.block(item, blocked),
    };
    let base = current.map(<[u8]>::to_vec).unwrap_or_else(|| legacy_ini::default_legacy_ini().into_bytes());
    match legacy_ini::apply_legacy_ini(&base, legacy.stop_executing_packages_on_shutdown, &legacy.folders) {
        Ok(desired) if current != Some(desired.as_slice()) => {
            plan.step(item, Action::WriteFile { path: path.to_string(), content: desired }, vec![]);
        }
        Ok(_) => {}
        Err(error) => return plan.block(item, Blocked::failed("UnreadableSettings", format!("{path}: {error}"))),
    }
    let pointer = match &observed.legacy_pointer {
        Ok(pointer) => pointer,
        Err(problem) => return plan.block(item, Blocked::failed("ReadFailed", problem.clone())),
    };
    // The docs call ServiceConfigFile a key whose default value is the path; whether it is a named
    // value instead is unconfirmed (reference §4), hence the modes.
    let use_key_form = match legacy.registry_pointer {
        RegistryPointerMode::KeyDefaultValue => true,
        RegistryPointerMode::NamedValue => false,
        RegistryPointerMode::Auto => pointer.key_exists || pointer.named_value.is_none(),
    };
    let desired = RegistryData::String(path.to_string());
    let (key, value_name, current) = if use_key_form {
        (allow.service_config_file_key(), None, pointer.key_default.as_ref())
    } else {
        (allow.ssis_key(), Some("ServiceConfigFile".to_string()), pointer.named_value.as_ref())
    };
    if let Some(current) = current {
        plan.observed_values.insert(item.to_string(), registry_text(current));
    }
    if !registry_equal(current, &desired) {
        plan.step(item, Action::WriteRegistry { key, value_name, data: desired }, vec![]);
    }
}

/// Start, stop or restart decided for one service at the end of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAction {
    Start { role: ServiceRole, service: String },
    Stop { role: ServiceRole, service: String },
    Restart { role: ServiceRole, service: String, because: Vec<String> },
}

/// Decide each service's run-state action (pure). A service restarts once, only if an item in its
/// `restartOnChangeOf` changed in this pass, its `restartToken` differs from the last applied one,
/// or a restart decided earlier is still pending. A `ClusterManaged` service is never started and
/// restarted only where it is running. Returns the actions and the applied state to record once
/// they succeed.
pub fn plan_service_actions(
    spec: &HostConfigSpec,
    skip: &dyn Fn(&str) -> bool,
    services: &BTreeMap<ServiceRole, Option<ServiceInfo>>,
    changed_items: &[String],
    applied: &AppliedState,
) -> (Vec<ServiceAction>, AppliedState) {
    let mut actions = Vec::new();
    let mut next = applied.clone();
    for service in &spec.services {
        let item = item_names::service(service.role);
        if skip(&item) {
            continue;
        }
        let Some(Some(info)) = services.get(&service.role) else { continue };
        let name = service.role.service_name(spec.sql_version);
        let mut because: Vec<String> =
            service.restart_on_change_of.iter().filter(|t| changed_items.contains(t)).cloned().collect();
        if let Some(token) = &service.restart_token
            && applied.restart_tokens.get(&name) != Some(token)
        {
            because.push(format!("restartToken {token}"));
            next.restart_tokens.insert(name.clone(), token.clone());
        }
        if applied.pending_restarts.contains(&name) {
            because.push("restart pending from an earlier pass".into());
        }
        next.pending_restarts.remove(&name);
        let running = info.state == ServiceState::Running;
        let stopped = info.state == ServiceState::Stopped;
        match service.state {
            ServiceRunState::Running if stopped => {
                actions.push(ServiceAction::Start { role: service.role, service: name })
            }
            ServiceRunState::Running | ServiceRunState::ClusterManaged if running && !because.is_empty() => {
                actions.push(ServiceAction::Restart { role: service.role, service: name, because })
            }
            ServiceRunState::Stopped if running => {
                actions.push(ServiceAction::Stop { role: service.role, service: name })
            }
            // Stopped, not running or not triggered: the next start reads everything anyway.
            _ => {}
        }
    }
    (actions, next)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ssis_crds::{HostConfigSpec, HostService, ServiceRole, ServiceRunState, ServiceStartType};

    use super::{ServiceAction, plan_service_actions};
    use crate::engine::applied_state::AppliedState;
    use crate::host::{ServiceInfo, ServiceState};

    fn spec(state: ServiceRunState, token: Option<&str>) -> HostConfigSpec {
        HostConfigSpec {
            services: vec![HostService {
                role: ServiceRole::ScaleOutMaster,
                state,
                restart_on_change_of: vec!["masterSettings".into()],
                restart_token: token.map(str::to_string),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn services(state: ServiceState) -> BTreeMap<ServiceRole, Option<ServiceInfo>> {
        let info = ServiceInfo { state, start_type: ServiceStartType::Manual, logon_account: "CORP\\svc".into() };
        BTreeMap::from([(ServiceRole::ScaleOutMaster, Some(info))])
    }

    const NAME: &str = "SSISScaleOutMaster160";

    #[test]
    fn restart_only_when_a_trigger_changed_or_the_token_moved() {
        let changed = vec!["masterSettings".to_string()];
        let none = |_: &str| false;
        let (actions, _) = plan_service_actions(
            &spec(ServiceRunState::Running, None),
            &none,
            &services(ServiceState::Running),
            &[],
            &AppliedState::default(),
        );
        assert_eq!(actions, vec![]);
        let (actions, _) = plan_service_actions(
            &spec(ServiceRunState::Running, None),
            &none,
            &services(ServiceState::Running),
            &changed,
            &AppliedState::default(),
        );
        assert!(matches!(&actions[..], [ServiceAction::Restart { because, .. }] if because == &changed));
        let (actions, next) = plan_service_actions(
            &spec(ServiceRunState::Running, Some("t1")),
            &none,
            &services(ServiceState::Running),
            &[],
            &AppliedState::default(),
        );
        assert_eq!(actions.len(), 1);
        assert_eq!(next.restart_tokens[NAME], "t1");
        let (actions, _) = plan_service_actions(
            &spec(ServiceRunState::Running, Some("t1")),
            &none,
            &services(ServiceState::Running),
            &[],
            &next,
        );
        assert_eq!(actions, vec![], "the applied token is remembered");
    }

    #[test]
    fn cluster_managed_is_never_started_and_restarted_only_where_running() {
        let changed = vec!["masterSettings".to_string()];
        let none = |_: &str| false;
        let managed = spec(ServiceRunState::ClusterManaged, None);
        let (actions, _) =
            plan_service_actions(&managed, &none, &services(ServiceState::Stopped), &changed, &AppliedState::default());
        assert_eq!(actions, vec![]);
        let (actions, _) =
            plan_service_actions(&managed, &none, &services(ServiceState::Running), &changed, &AppliedState::default());
        assert!(matches!(&actions[..], [ServiceAction::Restart { .. }]));
        // A stopped Running service is started (the start reads everything), not restarted.
        let (actions, _) = plan_service_actions(
            &spec(ServiceRunState::Running, None),
            &none,
            &services(ServiceState::Stopped),
            &changed,
            &AppliedState::default(),
        );
        assert!(matches!(&actions[..], [ServiceAction::Start { .. }]));
        // A pending restart from an interrupted pass is done once and cleared.
        let pending = AppliedState { pending_restarts: [NAME.to_string()].into(), ..Default::default() };
        let (actions, next) = plan_service_actions(
            &spec(ServiceRunState::Running, None),
            &none,
            &services(ServiceState::Running),
            &[],
            &pending,
        );
        assert!(matches!(&actions[..], [ServiceAction::Restart { .. }]));
        assert!(next.pending_restarts.is_empty());
    }
}
