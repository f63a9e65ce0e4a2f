//! The one owner of orphan cleanup: HostConfigs of nodes no unit puts anything on any more, and
//! operator-namespace Secrets whose custom resource is gone. (Within a unit, `apply` removes what
//! that unit's plan no longer wants; what is left when a whole deployment is deleted ends here.)

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use ssis_crds::HostConfig;

use crate::catalog::Catalog;
use crate::plan::topology::Topology;

use super::dereference::secret_owner;
use super::stores::Stores;
use super::{Context, ReconcileReport, is_not_found};

/// Secrets any HostConfig names (certificate material, logon passwords): an agent may still be
/// reading them, so they stay whatever else is true.
fn named_by_host_configs(host_configs: &[std::sync::Arc<HostConfig>]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for host_config in host_configs {
        let spec = &host_config.spec;
        names.extend(spec.certificates.iter().filter_map(|c| c.source.as_ref().map(|s| s.secret_name.clone())));
        names.extend(spec.services.iter().filter_map(|s| s.logon.as_ref().map(|l| l.password_secret_ref.name.clone())));
    }
    names
}

/// Whether a HostConfig belongs to nobody: no unit puts anything on its node and none of its
/// contributors exists.
pub fn orphaned_host_config(host_config: &HostConfig, topology: &Topology) -> bool {
    let node = host_config.name_any();
    topology.units_on_node(&node).is_empty()
        && host_config
            .spec
            .contributors
            .iter()
            .all(|c| topology.unit_of_resource(&c.kind, &format!("{}/{}", c.namespace, c.name)).is_none())
}

/// Whether an operator Secret's custom resource is gone. Secrets with no owner marker are left
/// alone (their unit adds the marker on its next write).
pub fn orphaned_secret(secret: &Secret, topology: &Topology) -> bool {
    secret_owner(secret).is_some_and(|owner| {
        let (kind, key) = owner.split_once('/').unwrap_or((owner.as_str(), ""));
        topology.unit_of_resource(kind, &key.to_string()).is_none()
    })
}

/// Delete what belongs to nobody.
pub async fn reconcile_orphans<C: Catalog>(ctx: &Context<C>, stores: &Stores, topology: &Topology) -> ReconcileReport {
    let mut report = ReconcileReport::default();
    let host_configs = stores.host_configs.state();
    let host_config_api: Api<HostConfig> = Api::all(ctx.client.clone());
    for host_config in host_configs.iter().filter(|h| h.metadata.deletion_timestamp.is_none()) {
        if !orphaned_host_config(host_config, topology) {
            continue;
        }
        if ctx.fence.lost() {
            report.fenced = true;
            return report;
        }
        let name = host_config.name_any();
        match host_config_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                report.host_config_deletes += 1;
                tracing::info!(host_config = %name, "HostConfig deleted: nothing uses the node any more");
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => report.problem(format!("deleting HostConfig {name}: {error}")),
        }
    }
    let named = named_by_host_configs(&host_configs);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    for secret in stores.owned_secrets.state() {
        let name = secret.name_any();
        if !orphaned_secret(&secret, topology) || named.contains(&name) {
            continue;
        }
        if ctx.fence.lost() {
            report.fenced = true;
            return report;
        }
        match secrets.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                report.secret_writes += 1;
                tracing::info!(secret = %name, "operator Secret deleted: its resource is gone");
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => report.problem(format!("deleting Secret {name}: {error}")),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssis_crds::{Contributor, HostConfigSpec};

    #[test]
    fn a_host_config_is_orphaned_only_when_no_unit_and_no_contributor_remain() {
        let mut host_config = HostConfig::new("win-1", HostConfigSpec::default());
        host_config.spec.contributors =
            vec![Contributor { kind: "ScaleOutWorker".into(), namespace: "ns".into(), name: "gone".into() }];
        assert!(orphaned_host_config(&host_config, &Topology::default()));
    }
}
