//! What the simulated Scale Out "network" carries from simulated hosts to the simulated SSISDB.
//!
//! In the real system a master service writes its own heartbeat into SSISDB
//! (`internal.update_master_settings`) and relays every worker heartbeat that passed mutual TLS
//! (`internal.update_worker_agent_status`, unknown workers inserted disabled). The simulation
//! computes those heartbeats from the simulated hosts' state (services running with the settings
//! they loaded at start, certificates in stores, HTTP.SYS bindings, cluster role owner) and hands
//! them to the simulated catalog, which decides whether SQL accepts them.

use serde::{Deserialize, Serialize};

/// Heartbeat of the master service running on the cluster role owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterHeartbeat {
    /// Windows computer name of the node running the master.
    pub machine_name: String,
    /// `SqlServerName` the running master loaded at start.
    pub sql_server_name: String,
    /// `PortNumber` the running master loaded at start.
    pub port: u16,
    /// `SSLCertThumbprint` the running master loaded at start.
    pub ssl_cert_thumbprint: String,
    /// Logon account of the master service (needs a login on the SQL primary).
    pub service_account: String,
}

/// Heartbeat of a worker that reached a master over mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    /// `AgentId` from the worker's WorkerSettings.config (loaded at start).
    pub agent_id: String,
    /// Windows computer name of the worker.
    pub machine_name: String,
    /// Logon account of the worker service.
    pub user_account: String,
    /// The master that relayed this heartbeat.
    pub via_master: String,
}

/// Why a simulated connection failed: mirrors the documented error texts (reference §12).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionFailure {
    /// Node whose service failed to connect.
    pub node: String,
    /// Pitfall-style message, e.g. "Could not establish trust relationship: master certificate
    /// 1A2B… is not in LocalMachine\Root".
    pub message: String,
}

/// Everything the simulated network delivered in one observation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleOutTraffic {
    pub masters: Vec<MasterHeartbeat>,
    pub workers: Vec<WorkerHeartbeat>,
    pub failures: Vec<ConnectionFailure>,
}
