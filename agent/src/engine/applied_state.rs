//! What the agent itself must remember across restarts: the last applied `restartToken` of each
//! service and restarts that were decided but not yet done. Kept in a small JSON file owned by the
//! agent on the host, so a restarted agent neither repeats nor forgets a restart.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::host::{Host, HostError};

/// Where the state lives on the node (outside every allow-listed SSIS folder; no HostConfig can
/// name it).
pub const APPLIED_STATE_PATH: &str = r"C:\ProgramData\SSIS Scale Out Agent\applied-state.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedState {
    /// Windows service name → last applied restart token.
    #[serde(default)]
    pub restart_tokens: BTreeMap<String, String>,
    /// Services whose restart was decided and not yet completed.
    #[serde(default)]
    pub pending_restarts: BTreeSet<String>,
}

/// Read the state; a missing or damaged file reads as empty (the worst case is one extra restart).
pub fn load(host: &dyn Host) -> AppliedState {
    match host.read_file(APPLIED_STATE_PATH) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        _ => AppliedState::default(),
    }
}

pub fn save(host: &mut dyn Host, state: &AppliedState) -> Result<(), HostError> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| HostError::Io(e.to_string()))?;
    host.write_file_atomic(APPLIED_STATE_PATH, &bytes)
}
