//! Human-readable accounts of a simulated world: what a round did (per node, per SQL statement,
//! per API write) and, when a run does not converge, what is still missing and why.

pub use crate::catalog::batches::action_replica as sql_replica;
use std::collections::BTreeMap;
use std::fmt::Write;

use ssis_crds::{HostConfig, ItemState, ScaleOutMasterGroup, ScaleOutWorker, SsisdbAvailabilityGroup};

use super::api::Component;
use super::{RoundReport, World};
use crate::catalog::SqlAction;

/// The T-SQL a user would recognise for an action (parameters that are secrets never appear).
pub fn describe_sql(action: &SqlAction) -> String {
    match action {
        SqlAction::CreateListener { name, port, .. } => {
            format!("ALTER AVAILABILITY GROUP … ADD LISTENER N'{name}' (PORT = {port})")
        }
        SqlAction::EnableScaleOut { .. } => "EXEC catalog.enable_scaleout".into(),
        SqlAction::EncryptMasterKeyByServiceKey { .. } => {
            "OPEN MASTER KEY …; ALTER MASTER KEY ADD ENCRYPTION BY SERVICE MASTER KEY".into()
        }
        SqlAction::StoreMasterKeyPassword { .. } => "EXEC sp_control_dbmasterkey_password @action = N'add'".into(),
        SqlAction::SetLoggingLoginPassword { .. } => {
            "ALTER LOGIN [##MS_SSISLogDBWorkerAgentLogin##] WITH PASSWORD = …".into()
        }
        SqlAction::CreateLoggingLoginWithSid { sid, drop_existing, .. } => format!(
            "{}CREATE LOGIN [##MS_SSISLogDBWorkerAgentLogin##] WITH PASSWORD = …, SID = {sid}",
            if *drop_existing { "DROP LOGIN …; " } else { "" }
        ),
        SqlAction::UpdateLogDbInfo { server_name, .. } => {
            format!("EXEC catalog.update_logdb_info @server_name = N'{server_name}', @connection_string = …")
        }
        SqlAction::UpdateMasterAddress { address, .. } => format!("EXEC catalog.update_master_address N'{address}'"),
        SqlAction::CreateWindowsLogin { account, .. } => format!("CREATE LOGIN [{account}] FROM WINDOWS"),
        SqlAction::GrantSsisAdmin { account, .. } => {
            format!("CREATE USER [{account}]; ALTER ROLE ssis_admin ADD MEMBER")
        }
        SqlAction::RegisterAlwaysOnReplica { server_name, .. } => {
            format!("EXEC internal.add_replica_info N'{server_name}'")
        }
        SqlAction::EnableWorkerAgent { worker_agent_id, .. } => {
            format!("EXEC catalog.enable_worker_agent '{worker_agent_id}'")
        }
        SqlAction::DisableWorkerAgent { worker_agent_id, .. } => {
            format!("EXEC catalog.disable_worker_agent '{worker_agent_id}'")
        }
        SqlAction::SetWorkerAgentProperty { worker_agent_id, property, value, .. } => {
            format!("EXEC catalog.set_worker_agent_property '{worker_agent_id}', N'{property}', N'{value}'")
        }
    }
}

/// One line per thing that happened in a round, in the order it happened.
pub fn round_lines(report: &RoundReport) -> Vec<String> {
    let r = report.round;
    let mut lines = Vec::new();
    if let Some(Err(error)) = &report.operator {
        lines.push(format!("round {r}  operator  pass aborted: {error}"));
    }
    let operator_writes: BTreeMap<String, u64> = report
        .api_writes
        .iter()
        .filter(|(k, _)| k.component == Component::Operator.name())
        .fold(BTreeMap::new(), |mut all, (k, n)| {
            *all.entry(format!("{} {}", k.verb, k.resource)).or_default() += n;
            all
        });
    if !operator_writes.is_empty() {
        let parts: Vec<String> = operator_writes.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        lines.push(format!("round {r}  operator  API: {}", parts.join(", ")));
    }
    for (_, action) in &report.sql {
        lines.push(format!("round {r}  SQL  {}  {}", sql_replica(action), describe_sql(action)));
    }
    for (node, pass) in &report.agents {
        if let Some(error) = &pass.error {
            lines.push(format!("round {r}  {node}  agent pass failed: {error}"));
        }
        for (item, message) in &pass.changed {
            lines.push(format!("round {r}  {node}  {item}: {message}"));
        }
        for (item, message) in &pass.failed {
            lines.push(format!("round {r}  {node}  FAILED {item}: {message}"));
        }
    }
    lines
}

/// Worker enrollment per (worker, node): phase and enabled flag.
pub fn worker_states(workers: &[ScaleOutWorker]) -> BTreeMap<String, (String, bool, bool)> {
    let mut states = BTreeMap::new();
    for worker in workers {
        for node in worker.status.iter().flat_map(|s| &s.nodes) {
            states.insert(node.node_name.clone(), (format!("{:?}", node.phase), node.registered, node.enabled));
        }
    }
    states
}

fn conditions_text(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    if conditions.is_empty() {
        return "    (no conditions yet)\n".into();
    }
    conditions.iter().fold(String::new(), |mut out, c| {
        let _ = writeln!(out, "    {}={} ({}) {}", c.type_, c.status, c.reason, c.message);
        out
    })
}

/// The final state of every custom resource: conditions and key status fields.
pub async fn final_state(world: &World) -> String {
    let mut out = String::new();
    for ag in world.list::<SsisdbAvailabilityGroup>().await {
        let key = crate::plan::object_key(&ag.metadata);
        let status = ag.status.unwrap_or_default();
        let _ = writeln!(
            out,
            "SsisdbAvailabilityGroup {key}: primary {}, serverName {}",
            status.primary_replica.unwrap_or_else(|| "-".into()),
            status.server_name.unwrap_or_else(|| "-".into())
        );
        out.push_str(&conditions_text(&status.conditions));
        for replica in &status.replicas {
            let _ = writeln!(
                out,
                "    replica {}: {} connected={} catalogKeyReady={} loggingLoginReady={}",
                replica.name, replica.role, replica.connected, replica.catalog_key_ready, replica.logging_login_ready
            );
        }
    }
    for group in world.list::<ScaleOutMasterGroup>().await {
        let key = crate::plan::object_key(&group.metadata);
        let status = group.status.unwrap_or_default();
        let certificate = status.certificate.as_ref().map(|c| format!("{} (until {})", c.thumbprint, c.not_after));
        let _ = writeln!(
            out,
            "ScaleOutMasterGroup {key}: address {}, active node {}, certificate {}, rotation {}",
            status.master_address.unwrap_or_else(|| "-".into()),
            status.active_node.unwrap_or_else(|| "-".into()),
            certificate.unwrap_or_else(|| "-".into()),
            status.rotation.map(|r| format!("{:?}", r.phase)).unwrap_or_else(|| "Idle".into()),
        );
        out.push_str(&conditions_text(&status.conditions));
        for node in &status.nodes {
            let _ = writeln!(
                out,
                "    node {}: {} service={}{}",
                node.name,
                node.phase,
                node.service_state.clone().unwrap_or_else(|| "-".into()),
                node.message.as_ref().map(|m| format!(" — {m}")).unwrap_or_default()
            );
        }
    }
    for worker in world.list::<ScaleOutWorker>().await {
        let key = crate::plan::object_key(&worker.metadata);
        let status = worker.status.unwrap_or_default();
        let _ = writeln!(out, "ScaleOutWorker {key}: {} enrolled", status.summary.unwrap_or_else(|| "-".into()));
        out.push_str(&conditions_text(&status.conditions));
        for node in &status.nodes {
            let _ = writeln!(
                out,
                "    node {}: {:?} agent {} registered={} enabled={}{}",
                node.node_name,
                node.phase,
                node.worker_agent_id.clone().unwrap_or_else(|| "-".into()),
                node.registered,
                node.enabled,
                node.message.as_ref().map(|m| format!(" — {m}")).unwrap_or_default()
            );
        }
    }
    out
}

/// What never converged: every resource's state, every node item not Applied, the last
/// connection failures, ingest rejections and operator problems.
pub async fn explain(world: &World, headline: &str) -> String {
    let mut out = format!("{headline}\n");
    for problem in world.not_ready().await {
        let _ = writeln!(out, "  not ready: {problem}");
    }
    out.push_str(&final_state(world).await);
    for host_config in world.list::<HostConfig>().await {
        let node = host_config.metadata.name.clone().unwrap_or_default();
        let running = world.nodes.get(&node).is_some_and(|n| n.agent_running);
        let Some(status) = host_config.status else {
            let _ = writeln!(
                out,
                "HostConfig {node}: no status{}",
                if running { "" } else { " (its agent is not running)" }
            );
            continue;
        };
        let open: Vec<_> = status.items.iter().filter(|i| i.state != ItemState::Applied).collect();
        if open.is_empty() {
            continue;
        }
        let _ = writeln!(out, "HostConfig {node}:");
        for item in open {
            let _ = writeln!(
                out,
                "    {} {:?} ({}) {}",
                item.name,
                item.state,
                item.reason.clone().unwrap_or_default(),
                item.message.clone().unwrap_or_default()
            );
        }
    }
    let last = &world.last;
    if let Some(Ok(operator)) = &last.operator {
        for problem in &operator.problems {
            let _ = writeln!(out, "operator problem: {problem}");
        }
        for (group, pending) in &operator.pending_sql_actions {
            let _ = writeln!(out, "SQL actions still pending for {group}: {pending}");
        }
    }
    for failure in &last.traffic_failures {
        let _ = writeln!(out, "connection failure on {}: {}", failure.node, failure.message);
    }
    for (group, ingest) in &last.ingest {
        for (master, why) in &ingest.rejected_masters {
            let _ = writeln!(out, "SQL {group} rejected master {master}: {why}");
        }
        for (worker, why) in &ingest.rejected_workers {
            let _ = writeln!(out, "SQL {group} rejected worker {worker}: {why}");
        }
    }
    let _ = writeln!(
        out,
        "last round: {} writes (api {}, sql {}, host {})",
        last.writes(),
        last.api_state_writes(),
        last.sql.len(),
        last.host_writes()
    );
    for line in round_lines(last) {
        let _ = writeln!(out, "  {line}");
    }
    out
}
