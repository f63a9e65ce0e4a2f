//! `ssis-operator plan -f <files or dirs>... [-o text|json]`: the GitOps pull-request preview.
//! Offline: reads manifests (the three kinds, Secrets, optional Nodes), plans as for a fresh
//! installation (no SQL observation) and prints, per Windows node, what the operator would make
//! the host look like and which SQL actions it would run. Secret data is never printed: Secrets
//! contribute their key names and a fingerprint only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Node, Secret};
use serde::Serialize;
use serde_json::Value as Json;
use sha1::{Digest, Sha1};
use ssis_crds::{
    CertStore, Ensure, HostConfigSpec, ScaleOutMasterGroup, ScaleOutWorker, ServiceRole, SsisdbAvailabilityGroup,
};

use crate::plan::{
    CertificateRequest, CertificateRequestSource, IssuedCertificate, NodeInfo, PlanInput, PlanOutput, SecretCopy,
    SecretMeta, fresh_install::fresh_install_observation, object_key, plan,
};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One item per line, sorted: diff-friendly.
    Text,
    /// The same content as JSON.
    Json,
}

/// Arguments of `plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Manifest files or directories (multi-document YAML; like `kubectl apply -f`, a directory
    /// contributes its `.yaml`, `.yml` and `.json` files in name order, not its subdirectories).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Namespace of manifests without `metadata.namespace`.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Namespace the operator runs in (where host-material Secrets are written).
    #[arg(long, default_value = "ssis-system")]
    pub operator_namespace: String,
}

/// Print the preview.
pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let manifests = load_manifests(&args.files, &args.namespace)?;
    let preview = preview(manifests, &args.operator_namespace, jiff::Timestamp::now());
    match args.output {
        OutputFormat::Text => print!("{}", render_text(&preview)),
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&preview).context("encoding the preview as JSON")?)
        }
    }
    Ok(())
}

/// Everything read from the manifests.
#[derive(Debug, Default)]
pub struct Manifests {
    pub availability_groups: Vec<SsisdbAvailabilityGroup>,
    pub master_groups: Vec<ScaleOutMasterGroup>,
    pub workers: Vec<ScaleOutWorker>,
    pub nodes: Vec<NodeInfo>,
    pub secrets: BTreeMap<String, SecretMeta>,
    /// `tls.crt` of TLS Secrets (public certificates only), to show real thumbprints.
    pub tls_certificates: BTreeMap<String, Vec<u8>>,
}

/// Read every manifest. Errors name the file, the document index and the field.
pub fn load_manifests(paths: &[PathBuf], default_namespace: &str) -> anyhow::Result<Manifests> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files)?;
    }
    let mut manifests = Manifests::default();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        load_text(&text, &file.display().to_string(), default_namespace, &mut manifests)?;
    }
    Ok(manifests)
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let metadata = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !metadata.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", path.display()))?;
    entries.sort();
    for entry in entries {
        let manifest = entry.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest && !entry.is_dir() {
            files.push(entry);
        }
    }
    Ok(())
}

/// Parse one file's documents into `manifests`.
pub fn load_text(text: &str, file: &str, default_namespace: &str, manifests: &mut Manifests) -> anyhow::Result<()> {
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let at = format!("{file}, document {index}");
        let value: serde_yaml_ng::Value =
            serde::Deserialize::deserialize(document).with_context(|| format!("{at}: not valid YAML"))?;
        if value.is_null() {
            continue;
        }
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
            bail!("{at}: missing apiVersion or kind; every document must be a Kubernetes object");
        };
        match (api_version.as_str(), kind.as_str()) {
            ("ssis.sqlops.io/v1alpha1", "SsisdbAvailabilityGroup") => {
                let mut object: SsisdbAvailabilityGroup = typed(value, &at)?;
                default_ns(&mut object.metadata, default_namespace);
                manifests.availability_groups.push(object);
            }
            ("ssis.sqlops.io/v1alpha1", "ScaleOutMasterGroup") => {
                let mut object: ScaleOutMasterGroup = typed(value, &at)?;
                default_ns(&mut object.metadata, default_namespace);
                manifests.master_groups.push(object);
            }
            ("ssis.sqlops.io/v1alpha1", "ScaleOutWorker") => {
                let mut object: ScaleOutWorker = typed(value, &at)?;
                default_ns(&mut object.metadata, default_namespace);
                manifests.workers.push(object);
            }
            ("ssis.sqlops.io/v1alpha1", "HostConfig") => {
                bail!("{at}: HostConfig is written by the operator, not by users; remove it from the preview input")
            }
            ("v1", "Secret") => {
                let mut secret: Secret = typed(value, &at)?;
                default_ns(&mut secret.metadata, default_namespace);
                let key = object_key(&secret.metadata);
                let mut data: BTreeMap<String, Vec<u8>> =
                    secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                for (k, v) in secret.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                if let Some(certificate) = data.get("tls.crt") {
                    manifests.tls_certificates.insert(key.clone(), certificate.clone());
                }
                manifests
                    .secrets
                    .insert(key, SecretMeta { keys: data.keys().cloned().collect(), fingerprint: fingerprint(&data) });
            }
            ("v1", "Node") => {
                let node: Node = typed(value, &at)?;
                let labels = node.metadata.labels.clone().unwrap_or_default();
                let os = node.status.as_ref().and_then(|s| s.node_info.as_ref()).map(|i| i.operating_system.as_str());
                let windows =
                    labels.get("kubernetes.io/os").map(String::as_str) == Some("windows") || os == Some("windows");
                manifests.nodes.push(NodeInfo {
                    name: node.metadata.name.clone().unwrap_or_default(),
                    labels,
                    windows,
                });
            }
            ("v1", "Namespace") => {}
            (api_version, kind) => bail!(
                "{at}: unknown kind {kind} ({api_version}); the preview reads SsisdbAvailabilityGroup, ScaleOutMasterGroup, \
                 ScaleOutWorker (ssis.sqlops.io/v1alpha1), Secret, Node and Namespace (v1)"
            ),
        }
    }
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml_ng::Value, at: &str) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        anyhow::anyhow!("{at}: invalid manifest at field {path}: {}", error.inner())
    })
}

fn default_ns(meta: &mut kube::api::ObjectMeta, namespace: &str) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(namespace.to_string());
    }
}

/// Fingerprint of Secret data: a hash over sorted keys and values, never the values.
fn fingerprint(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut hasher = Sha1::new();
    for (key, value) in data {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value);
        hasher.update([0]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The preview: what the operator would do after converging from a fresh installation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub notes: Vec<String>,
    pub nodes: BTreeMap<String, HostConfigSpec>,
    pub sql_actions: BTreeMap<String, Vec<crate::catalog::SqlAction>>,
    pub certificates: Vec<PreviewCertificate>,
    pub secret_copies: BTreeMap<String, SecretCopy>,
    pub resources: Vec<PreviewResource>,
}

/// A certificate the operator would issue or convert.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewCertificate {
    pub id: String,
    pub secret_name: String,
    pub thumbprint: String,
    /// The thumbprint is a stand-in: generated certificates get theirs when the operator creates them.
    pub placeholder: bool,
    pub source: CertificateRequestSource,
}

/// Status summary of one custom resource.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewResource {
    pub kind: String,
    pub key: String,
    /// `type=status reason: message` per condition.
    pub conditions: Vec<String>,
    /// Per-node or per-replica detail.
    pub details: Vec<String>,
}

/// Plan repeatedly from a fresh installation until no new certificate is requested, feeding the
/// statuses back as the controller would.
pub fn preview(manifests: Manifests, operator_namespace: &str, now: jiff::Timestamp) -> Preview {
    let mut notes = Vec::new();
    let mut nodes = manifests.nodes.clone();
    if nodes.is_empty() {
        let mut names = BTreeSet::new();
        names.extend(manifests.master_groups.iter().flat_map(|g| g.spec.nodes.iter().cloned()));
        names.extend(manifests.workers.iter().filter_map(|w| w.spec.node_name.clone()));
        names.extend(
            manifests
                .availability_groups
                .iter()
                .flat_map(|a| a.spec.replicas.iter().filter_map(|r| r.node_name.clone())),
        );
        if !names.is_empty() {
            notes.push(format!(
                "no Node objects given; assuming these referenced nodes are Windows nodes: {}",
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for worker in manifests.workers.iter().filter(|w| w.spec.node_selector.is_some()) {
            notes.push(format!(
                "ScaleOutWorker {} selects nodes by label; inferred nodes have no labels, so pass Node manifests to preview the pool",
                object_key(&worker.metadata)
            ));
        }
        nodes = names.into_iter().map(|name| NodeInfo { name, labels: BTreeMap::new(), windows: true }).collect();
    }
    notes
        .push("no SQL observation: SQL actions are planned as for a fresh installation (first replica primary)".into());

    let mut input = PlanInput {
        now,
        operator_namespace: operator_namespace.to_string(),
        availability_groups: manifests.availability_groups,
        master_groups: manifests.master_groups,
        workers: manifests.workers,
        nodes,
        secrets: manifests.secrets,
        ..Default::default()
    };
    for ag in &input.availability_groups {
        input.catalogs.insert(object_key(&ag.metadata), fresh_install_observation(ag));
    }
    let mut certificates: BTreeMap<String, PreviewCertificate> = BTreeMap::new();
    let mut output = plan(&input);
    for _ in 0..8 {
        let mut changed = false;
        for request in &output.certificate_requests {
            let (issued, placeholder) = preview_certificate(request, &manifests.tls_certificates, now, &mut notes);
            certificates.insert(
                request.id.clone(),
                PreviewCertificate {
                    id: request.id.clone(),
                    secret_name: issued.secret_name.clone(),
                    thumbprint: issued.thumbprint.clone(),
                    placeholder,
                    source: request.source.clone(),
                },
            );
            input.issued_certificates.insert(request.id.clone(), issued);
            changed = true;
        }
        changed |= feed_back_statuses(&mut input, &output);
        if !changed {
            break;
        }
        output = plan(&input);
    }
    Preview {
        notes,
        resources: resources(&output),
        nodes: output.host_configs,
        sql_actions: output.sql_actions,
        certificates: certificates.into_values().collect(),
        secret_copies: output.secret_copies,
    }
}

fn preview_certificate(
    request: &CertificateRequest,
    tls_certificates: &BTreeMap<String, Vec<u8>>,
    now: jiff::Timestamp,
    notes: &mut Vec<String>,
) -> (IssuedCertificate, bool) {
    let placeholder = |dns_names: Vec<String>, days: u32| IssuedCertificate {
        id: request.id.clone(),
        secret_name: crate::plan::certificates::host_secret_name(&request.id),
        thumbprint: Sha1::digest(format!("preview:{}", request.id)).iter().map(|b| format!("{b:02X}")).collect(),
        not_before: now,
        not_after: now.checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days))).unwrap_or(now),
        dns_names,
        source_fingerprint: None,
    };
    match &request.source {
        CertificateRequestSource::Generate { dns_names, validity_days, .. } => {
            (placeholder(dns_names.clone(), *validity_days), true)
        }
        CertificateRequestSource::FromTlsSecret { secret } => {
            let data = tls_certificates.get(secret).map(|c| BTreeMap::from([("tls.crt".to_string(), c.clone())]));
            match data.as_ref().map(|d| crate::certs::inspect_tls_secret(secret, d)) {
                Some(Ok(info)) => (
                    IssuedCertificate {
                        id: request.id.clone(),
                        secret_name: crate::plan::certificates::host_secret_name(&request.id),
                        thumbprint: info.thumbprint,
                        not_before: info.not_before,
                        not_after: info.not_after,
                        dns_names: info.dns_names,
                        source_fingerprint: None,
                    },
                    false,
                ),
                Some(Err(error)) => {
                    notes.push(format!("certificate {}: {error}", request.id));
                    (placeholder(vec![], 365), true)
                }
                None => (placeholder(vec![], 365), true),
            }
        }
    }
}

/// Write the planned statuses into the input's objects; `true` when any changed.
fn feed_back_statuses(input: &mut PlanInput, output: &PlanOutput) -> bool {
    fn strip(conditions: &mut [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) {
        for condition in conditions {
            condition.last_transition_time =
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        }
    }
    let mut changed = false;
    for ag in &mut input.availability_groups {
        if let Some(status) = output.availability_group_statuses.get(&object_key(&ag.metadata)) {
            let mut status = status.clone();
            strip(&mut status.conditions);
            changed |= ag.status.as_ref() != Some(&status);
            ag.status = Some(status);
        }
    }
    for group in &mut input.master_groups {
        if let Some(status) = output.master_group_statuses.get(&object_key(&group.metadata)) {
            let mut status = status.clone();
            strip(&mut status.conditions);
            changed |= group.status.as_ref() != Some(&status);
            group.status = Some(status);
        }
    }
    for worker in &mut input.workers {
        if let Some(status) = output.worker_statuses.get(&object_key(&worker.metadata)) {
            let mut status = status.clone();
            strip(&mut status.conditions);
            changed |= worker.status.as_ref() != Some(&status);
            worker.status = Some(status);
        }
    }
    changed
}

fn resources(output: &PlanOutput) -> Vec<PreviewResource> {
    let conditions = |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        conditions.iter().map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message)).collect::<Vec<_>>()
    };
    let mut all = Vec::new();
    for (key, status) in &output.availability_group_statuses {
        all.push(PreviewResource {
            kind: "SsisdbAvailabilityGroup".into(),
            key: key.clone(),
            conditions: conditions(&status.conditions),
            details: status
                .replicas
                .iter()
                .map(|r| {
                    format!(
                        "replica {} role={} catalogKeyReady={} loggingLoginReady={}",
                        r.name, r.role, r.catalog_key_ready, r.logging_login_ready
                    )
                })
                .collect(),
        });
    }
    for (key, status) in &output.master_group_statuses {
        all.push(PreviewResource {
            kind: "ScaleOutMasterGroup".into(),
            key: key.clone(),
            conditions: conditions(&status.conditions),
            details: status.nodes.iter().map(|n| format!("node {} phase={}", n.name, n.phase)).collect(),
        });
    }
    for (key, status) in &output.worker_statuses {
        all.push(PreviewResource {
            kind: "ScaleOutWorker".into(),
            key: key.clone(),
            conditions: conditions(&status.conditions),
            details: status.nodes.iter().map(|n| format!("node {} phase={:?}", n.node_name, n.phase)).collect(),
        });
    }
    all
}

fn store(store: CertStore) -> &'static str {
    match store {
        CertStore::Root => r"LocalMachine\Root",
        CertStore::My => r"LocalMachine\My",
    }
}

/// `Name field=value ...` for an action; values are parameters or secret references, never secrets.
fn render_action(action: &crate::catalog::SqlAction) -> String {
    let json = serde_json::to_value(action).unwrap_or(Json::Null);
    match json {
        Json::Object(map) => map
            .iter()
            .map(|(name, fields)| match fields {
                Json::Object(fields) => {
                    let rendered: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={}", scalar(v))).collect();
                    format!("{name} {}", rendered.join(" "))
                }
                _ => name.clone(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Json::String(name) => name,
        other => other.to_string(),
    }
}

fn scalar(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The text preview: sorted, one item per line.
pub fn render_text(preview: &Preview) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line("# ssis-operator plan: offline preview, Secret values redacted".into());
    for note in &preview.notes {
        line(format!("note: {note}"));
    }
    let placeholders: BTreeSet<&str> =
        preview.certificates.iter().filter(|c| c.placeholder).map(|c| c.thumbprint.as_str()).collect();
    let thumb = |t: &str| if placeholders.contains(t) { format!("{t} (placeholder)") } else { t.to_string() };
    for (node, spec) in &preview.nodes {
        line(String::new());
        line(format!("node {node} sqlVersion={}", spec.sql_version));
        for c in &spec.contributors {
            line(format!("  contributor {} {}/{}", c.kind, c.namespace, c.name));
        }
        for c in &spec.certificates {
            let material = match (&c.ensure, &c.source) {
                (Ensure::Absent, _) => "remove".to_string(),
                (Ensure::Present, Some(s)) if s.pfx_key.is_some() => {
                    format!("import with private key from secret {}", s.secret_name)
                }
                (Ensure::Present, Some(s)) => format!("import public certificate from secret {}", s.secret_name),
                (Ensure::Present, None) => "import (no source)".to_string(),
            };
            let readers = if c.private_key_readers.is_empty() {
                String::new()
            } else {
                format!(" keyReaders=[{}]", c.private_key_readers.join(","))
            };
            line(format!(
                "  certificate {} {} thumbprint={} {material}{readers}",
                c.name,
                store(c.store),
                thumb(&c.thumbprint)
            ));
        }
        if let Some(m) = &spec.master_settings {
            line(format!(
                "  masterSettings SqlServerName={} SSLCertThumbprint={} PortNumber={}",
                m.sql_server_name,
                thumb(&m.ssl_cert_thumbprint),
                m.port_number
            ));
        }
        if let Some(w) = &spec.worker_settings {
            line(format!(
                "  workerSettings MasterEndpoint={} MasterHttpsCertThumbprint={} WorkerHttpsCertThumbprint={}",
                w.master_endpoint,
                thumb(&w.master_https_cert_thumbprint),
                thumb(&w.worker_https_cert_thumbprint)
            ));
        }
        for b in &spec.http_ssl_bindings {
            line(format!(
                "  httpSslBinding {} thumbprint={} store={}",
                b.ip_port,
                thumb(&b.thumbprint),
                store(b.cert_store)
            ));
        }
        if let Some(l) = &spec.legacy_service_config {
            line(format!(
                "  legacyServiceConfig MsDtsSrvr.ini.xml StopExecutingPackagesOnShutdown={} registryPointer={:?}",
                l.stop_executing_packages_on_shutdown, l.registry_pointer
            ));
            for f in &l.folders {
                match (&f.server_name, &f.store_path) {
                    (Some(server), _) => {
                        line(format!("  legacyServiceConfig folder SqlServerFolder {} ServerName={server}", f.name))
                    }
                    (None, Some(path)) => {
                        line(format!("  legacyServiceConfig folder FileSystemFolder {} StorePath={path}", f.name))
                    }
                    (None, None) => line(format!("  legacyServiceConfig folder {}", f.name)),
                }
            }
        }
        for r in &spec.registry_values {
            line(format!(
                "  registryValue HKLM\\{}\\{} {:?}={}",
                r.key,
                r.value_name.as_deref().unwrap_or("(Default)"),
                r.type_,
                r.data
            ));
        }
        for s in &spec.services {
            let logon = s
                .logon
                .as_ref()
                .map(|l| {
                    format!(
                        " logon={} password=<secret {}/{}>",
                        l.username, l.password_secret_ref.name, l.password_secret_ref.key
                    )
                })
                .unwrap_or_default();
            let start = s.start_type.map(|t| format!(" startType={t:?}")).unwrap_or_default();
            let token = s.restart_token.as_ref().map(|t| format!(" restartToken={t}")).unwrap_or_default();
            line(format!(
                "  service {:?} ({}) state={:?}{start}{logon} restartOnChangeOf=[{}]{token}",
                s.role,
                ServiceRole::service_name(s.role, spec.sql_version),
                s.state,
                s.restart_on_change_of.join(",")
            ));
        }
        if let Some(r) = &spec.cluster_role {
            line(format!(
                "  clusterRole {} service={:?} create={} staticAddresses=[{}] ignoreNetworks=[{}] possibleOwners=[{}]",
                r.name,
                r.service,
                r.create,
                r.static_addresses.join(","),
                r.ignore_networks.join(","),
                r.possible_owners.join(",")
            ));
        }
    }
    for (key, actions) in &preview.sql_actions {
        line(String::new());
        line(format!("sql {key}"));
        for (index, action) in actions.iter().enumerate() {
            line(format!("  {:>2}. {}", index + 1, render_action(action)));
        }
    }
    if !preview.certificates.is_empty() {
        line(String::new());
        line("certificates".into());
        for c in &preview.certificates {
            let source = match &c.source {
                CertificateRequestSource::Generate { common_name, dns_names, validity_days } => {
                    format!("generate CN={common_name} dnsNames=[{}] validityDays={validity_days}", dns_names.join(","))
                }
                CertificateRequestSource::FromTlsSecret { secret } => format!("convert TLS Secret {secret}"),
            };
            line(format!("  {} {source} -> secret {} thumbprint={}", c.id, c.secret_name, thumb(&c.thumbprint)));
        }
    }
    if !preview.secret_copies.is_empty() {
        line(String::new());
        line("secret copies (operator namespace, values never shown)".into());
        for (name, copy) in &preview.secret_copies {
            line(format!(
                "  {name}/{} <- {}/{} key {}",
                copy.target_key, copy.source_namespace, copy.source_name, copy.source_key
            ));
        }
    }
    for resource in &preview.resources {
        line(String::new());
        line(format!("status {} {}", resource.kind, resource.key));
        for condition in &resource.conditions {
            line(format!("  {condition}"));
        }
        for detail in &resource.details {
            line(format!("  {detail}"));
        }
    }
    out
}
