//! Outside events a user or a failure inflicts on the simulated world: failovers, drift by hand,
//! a certificate rotation forced by time. Each acts like the event it models, never like the
//! operator or the agent.

use ssis_agent::host::Host;
use ssis_agent::host::simulated::faults;
use ssis_agent::safety::DEFAULT_PROGRAM_FILES_ROOT;
use ssis_agent::settings::{self, SettingValue};
use ssis_crds::{CertStore, ScaleOutMasterGroup, SsisdbAvailabilityGroup};

use super::World;
use crate::controller::Clock;

/// `C:\Program Files\Microsoft SQL Server\<ver>\DTS\Binn\<file>` for a node's SQL version.
pub fn binn_file(world: &World, node: &str, file: &str) -> Result<String, String> {
    let sim = world.nodes.get(node).ok_or_else(|| format!("no node {node}"))?;
    Ok(format!(r"{DEFAULT_PROGRAM_FILES_ROOT}\{}\DTS\Binn\{file}", sim.setup.version.major_dir()))
}

impl World {
    /// An AG failover (`ALTER AVAILABILITY GROUP … FAILOVER` on `replica`); returns the group key.
    pub async fn fail_over_availability_group(&self, replica: &str) -> Result<String, String> {
        for group in self.list::<SsisdbAvailabilityGroup>().await {
            if group.spec.replicas.iter().any(|r| r.name.eq_ignore_ascii_case(replica)) {
                let key = crate::plan::object_key(&group.metadata);
                self.catalog.failover(&key, replica).map_err(|e| e.to_string())?;
                return Ok(key);
            }
        }
        Err(format!("no SsisdbAvailabilityGroup has a replica {replica}"))
    }

    /// The cluster role (client access point network name) of the master group on `node`.
    pub async fn master_role_of(&self, node: &str) -> Result<String, String> {
        self.list::<ScaleOutMasterGroup>()
            .await
            .into_iter()
            .find(|g| g.spec.nodes.iter().any(|n| n == node))
            .map(|g| g.spec.master_service.dns_name.split('.').next().unwrap_or_default().to_string())
            .ok_or_else(|| format!("node {node} is in no ScaleOutMasterGroup"))
    }

    /// Master failover: move the master's cluster role to `node`; returns the new owner.
    pub async fn fail_over_master(&self, node: &str) -> Result<String, String> {
        let role = self.master_role_of(node).await?;
        self.move_master_role(&role, node)
    }

    /// Move the clock past the renewal point of every generated master certificate, so the
    /// operator starts a rotation. Returns how far the clock moved.
    pub async fn age_master_certificates(&self) -> Result<jiff::SignedDuration, String> {
        let days = self
            .list::<ScaleOutMasterGroup>()
            .await
            .iter()
            .filter_map(|g| g.spec.certificate.generate.as_ref())
            .map(|g| i64::from(g.validity_days - g.renew_before_days) + 1)
            .max()
            .ok_or("no ScaleOutMasterGroup generates its certificate")?;
        let by = jiff::SignedDuration::from_hours(24 * days);
        self.clock.set(self.clock.now().checked_add(by).map_err(|e| e.to_string())?);
        Ok(by)
    }

    /// Time passes without any round running (a jump of the simulated clock).
    pub fn pass_days(&self, days: u64) {
        self.clock.advance(std::time::Duration::from_secs(days * 24 * 3600));
    }

    /// An administrator edits one owned key of a settings file by hand.
    pub fn edit_setting(&self, node: &str, file: &str, key: &str, value: &str) -> Result<(), String> {
        let path = binn_file(self, node, file)?;
        let root = self.host_root(node)?;
        faults::edit_file(&root, &path, |text| {
            settings::apply_owned_values(text.as_bytes(), &[(key, SettingValue::Text(value.to_string()))])
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or(text)
        })
        .map_err(|e| e.to_string())
    }

    /// A service crashes or is stopped by hand.
    pub fn stop_service(&self, node: &str, service: &str) -> Result<(), String> {
        faults::stop_service(&self.host_root(node)?, service).map_err(|e| e.to_string())
    }

    /// A certificate is deleted by hand; `Ok(false)` when it was not there.
    pub fn delete_certificate(&self, node: &str, store: CertStore, thumbprint: &str) -> Result<bool, String> {
        faults::delete_certificate(&self.host_root(node)?, store, thumbprint).map_err(|e| e.to_string())
    }

    /// Typical drift on one node: the owned settings edited by hand and the SSIS service stopped.
    /// Returns what was done.
    pub fn drift(&self, node: &str) -> Result<Vec<String>, String> {
        let sim = self.nodes.get(node).ok_or_else(|| format!("no node {node}"))?;
        let version = sim.setup.version;
        let mut done = Vec::new();
        if sim.setup.master {
            self.edit_setting(node, "MasterSettings.config", "SqlServerName", &sim.computer_name)?;
            done.push(format!("MasterSettings.config SqlServerName set to {} by hand", sim.computer_name));
        }
        if sim.setup.worker {
            self.edit_setting(node, "WorkerSettings.config", "MasterEndpoint", "https://wrong-master:8391")?;
            done.push("WorkerSettings.config MasterEndpoint set to https://wrong-master:8391 by hand".into());
            self.stop_service(node, &version.worker_service_name())?;
            done.push(format!("{} stopped", version.worker_service_name()));
        }
        if sim.setup.legacy
            && self.host(node)?.query_service(&version.legacy_service_name()).map_err(|e| e.to_string())?.is_some()
        {
            self.stop_service(node, &version.legacy_service_name())?;
            done.push(format!("{} stopped", version.legacy_service_name()));
        }
        Ok(done)
    }
}
