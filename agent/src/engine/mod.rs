//! The apply engine: make one host match its `HostConfigSpec`.
//!
//! The pipeline reads like the reference procedure:
//! 1. [`validate`] — every item passes the allow-list ([`crate::safety`]) or is Refused (pure);
//! 2. [`observe`] — read the host through [`Host`] (reads only);
//! 3. [`plan`] — diff desired vs observed into ordered, idempotent steps (pure): certificates →
//!    registry → settings files → legacy config → HTTP.SYS → service configuration → removals of
//!    `Absent` certificates → cluster role; service start/stop/restart is decided last
//!    ([`plan::plan_service_actions`]) from what actually changed in the pass;
//! 4. [`execute`] — run the steps against `&mut dyn Host`, counting every write;
//! 5. [`status`] — build the `HostConfigStatus` (pure).
//!
//! A converged host yields no steps, so a pass over it performs zero host writes and produces
//! the same status as before (liveness is the agent's Lease, not the status).

pub mod applied_state;
pub mod execute;
pub mod observe;
pub mod plan;
pub mod status;
pub mod validate;

use std::collections::BTreeMap;

use ssis_crds::{HostConfigSpec, HostConfigStatus};

use crate::host::Host;
use crate::safety::{AllowList, SafetyConfig};

/// Looks up Secret material by (Secret name, key) in the agent's namespace.
pub trait SecretSource {
    /// `Ok(None)` when the Secret or the key does not exist. Errors never contain the value.
    fn get(&self, secret_name: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
}

/// Secrets from a map (tests, the in-process harness).
#[derive(Debug, Default, Clone)]
pub struct MapSecretSource {
    secrets: BTreeMap<(String, String), Vec<u8>>,
}

impl MapSecretSource {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, secret_name: &str, key: &str, value: impl Into<Vec<u8>>) {
        self.secrets.insert((secret_name.to_string(), key.to_string()), value.into());
    }
}

impl SecretSource for MapSecretSource {
    fn get(&self, secret_name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.secrets.get(&(secret_name.to_string(), key.to_string())).cloned())
    }
}

/// Secrets as files `<dir>/<secret name>/<key>` (the offline `apply` command).
#[derive(Debug, Clone)]
pub struct DirSecretSource {
    pub dir: std::path::PathBuf,
}

impl SecretSource for DirSecretSource {
    fn get(&self, secret_name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        if [secret_name, key].iter().any(|part| part.contains(['/', '\\']) || part.starts_with('.')) {
            return Err(format!("secret reference {secret_name}/{key} is not a plain name"));
        }
        match std::fs::read(self.dir.join(secret_name).join(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read secret file {secret_name}/{key}: {}", e.kind())),
        }
    }
}

/// The agent's own configuration for a pass.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub safety: SafetyConfig,
    /// Reported in `status.agent.version`.
    pub agent_version: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { safety: SafetyConfig::default(), agent_version: env!("CARGO_PKG_VERSION").to_string() }
    }
}

/// Kinds of host writes, counted per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    CertificateImport,
    CertificateRemoval,
    PrivateKeyGrant,
    RegistryWrite,
    FileWrite,
    SslBindingWrite,
    ServiceConfigChange,
    ServiceStart,
    ServiceStop,
    ServiceRestart,
    ClusterRoleCreate,
    /// The agent's own applied-state file (restart tokens, pending restarts).
    AgentStateWrite,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Successful host writes per kind.
    pub writes: BTreeMap<ActionKind, u32>,
    /// Steps that failed.
    pub failed_steps: u32,
    /// Items refused by the allow-list or material checks.
    pub refused_items: u32,
    /// Items that needed a change in this pass.
    pub changed_items: Vec<String>,
    /// Whether this pass repaired local drift (the spec had not changed since the last pass).
    pub drift_repaired: bool,
}

impl ApplyReport {
    pub fn total_writes(&self) -> u32 {
        self.writes.values().sum()
    }
    pub fn count(&self, kind: ActionKind) -> u32 {
        self.writes.get(&kind).copied().unwrap_or(0)
    }
    pub(crate) fn record(&mut self, kind: ActionKind) {
        *self.writes.entry(kind).or_default() += 1;
    }
}

/// One reconcile pass of a host against its spec. Never panics on bad input: every problem ends
/// up in the returned status.
pub fn reconcile_host(
    host: &mut dyn Host,
    spec: &HostConfigSpec,
    generation: i64,
    secrets: &dyn SecretSource,
    previous: Option<&HostConfigStatus>,
    now: jiff::Timestamp,
    config: &AgentConfig,
) -> (HostConfigStatus, ApplyReport) {
    let allow = match AllowList::new(&config.safety, spec.sql_version) {
        Ok(allow) => allow,
        Err(problem) => {
            let status = status::agent_misconfigured(host, generation, previous, now, config, &problem);
            return (status, ApplyReport::default());
        }
    };
    let validated = validate::validate(spec, &allow);
    let observed = observe::observe(host, spec, &allow, &validated);
    let applied = applied_state::load(host);
    let materials = plan::resolve_materials(spec, &validated, &observed, secrets);
    let new_agent_id = uuid::Uuid::new_v4().to_string();
    let plan = plan::plan(spec, &allow, &validated, &observed, &materials, &new_agent_id);
    let mut report = ApplyReport { refused_items: validated.refused.len() as u32, ..Default::default() };
    let outcomes = execute::execute(host, spec, &plan, &observed, &applied, &mut report);
    let (final_observation, observed_values) = if report.total_writes() > 0 {
        let after = observe::observe(host, spec, &allow, &validated);
        // Observed values reported per item are those after the pass.
        let values =
            plan::plan(spec, &allow, &validated, &after, &plan::Materials::default(), &new_agent_id).observed_values;
        (after, values)
    } else {
        let values = plan.observed_values.clone();
        (observed, values)
    };
    let status = status::build(status::StatusInput {
        spec,
        generation,
        validated: &validated,
        plan: &plan,
        observed_values: &observed_values,
        outcomes: &outcomes,
        observed: &final_observation,
        previous,
        now,
        config,
        report: &mut report,
        backend: host.backend_name(),
    });
    (status, report)
}
