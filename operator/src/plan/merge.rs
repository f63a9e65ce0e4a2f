//! Merge the contributions of every master group and worker into one HostConfig spec per node.
//! Conflicting contributions never get here (see [`super::inventory::Conflicts`]).

use std::collections::BTreeMap;

use ssis_crds::{Contributor, Ensure, HostCertificate, HostConfigSpec, SqlVersion};

use super::inventory::item_name;

/// Items one custom resource wants on one node.
#[derive(Clone, Debug)]
pub struct Contribution {
    pub node: String,
    pub contributor: Contributor,
    pub version: SqlVersion,
    pub items: HostConfigSpec,
}

/// One HostConfig spec per node; items sorted so the output is stable.
pub fn merge(contributions: Vec<Contribution>) -> BTreeMap<String, HostConfigSpec> {
    let mut by_node: BTreeMap<String, Vec<Contribution>> = BTreeMap::new();
    for contribution in contributions {
        by_node.entry(contribution.node.clone()).or_default().push(contribution);
    }
    by_node.into_iter().map(|(node, contributions)| (node, merge_node(contributions))).collect()
}

fn merge_node(mut contributions: Vec<Contribution>) -> HostConfigSpec {
    contributions.sort_by(|a, b| a.contributor.cmp(&b.contributor));
    let mut spec = HostConfigSpec {
        sql_version: contributions.first().map(|c| c.version).unwrap_or_default(),
        ..Default::default()
    };
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    for contribution in contributions {
        if !spec.contributors.contains(&contribution.contributor) {
            spec.contributors.push(contribution.contributor);
        }
        let items = contribution.items;
        for certificate in items.certificates {
            merge_certificate(&mut spec.certificates, certificate, &mut renamed);
        }
        spec.master_settings = spec.master_settings.or(items.master_settings);
        spec.worker_settings = spec.worker_settings.or(items.worker_settings);
        spec.legacy_service_config = spec.legacy_service_config.or(items.legacy_service_config);
        spec.cluster_role = spec.cluster_role.or(items.cluster_role);
        for value in items.registry_values {
            if !spec.registry_values.iter().any(|v| v.name == value.name) {
                spec.registry_values.push(value);
            }
        }
        for service in items.services {
            if !spec.services.iter().any(|s| s.role == service.role) {
                spec.services.push(service);
            }
        }
        for binding in items.http_ssl_bindings {
            if !spec.http_ssl_bindings.iter().any(|b| b.ip_port == binding.ip_port) {
                spec.http_ssl_bindings.push(binding);
            }
        }
    }
    for service in &mut spec.services {
        for reference in &mut service.restart_on_change_of {
            if let Some(kept) = renamed.get(reference.as_str()) {
                *reference = kept.clone();
            }
        }
        service.restart_on_change_of.sort();
        service.restart_on_change_of.dedup();
    }
    spec.contributors.sort();
    spec.certificates.sort_by(|a, b| a.name.cmp(&b.name));
    spec.registry_values.sort_by(|a, b| a.name.cmp(&b.name));
    spec.services.sort_by_key(|s| s.role);
    spec.http_ssl_bindings.sort_by(|a, b| a.ip_port.cmp(&b.ip_port));
    spec
}

/// One item per store and thumbprint: Present beats Absent (a certificate still needed by one
/// resource is never removed for another), material with the private key beats the public part,
/// and private-key readers are united. Restart triggers of a merged-away item follow the kept one.
fn merge_certificate(
    certificates: &mut Vec<HostCertificate>,
    incoming: HostCertificate,
    renamed: &mut BTreeMap<String, String>,
) {
    let same = certificates
        .iter_mut()
        .find(|c| c.store == incoming.store && c.thumbprint.eq_ignore_ascii_case(&incoming.thumbprint));
    let Some(existing) = same else {
        certificates.push(incoming);
        return;
    };
    let incoming_wins = rank(&incoming) > rank(existing);
    let mut readers = existing.private_key_readers.clone();
    for reader in &incoming.private_key_readers {
        if !readers.contains(reader) {
            readers.push(reader.clone());
        }
    }
    let (kept_name, dropped_name) = if incoming_wins {
        let dropped = existing.name.clone();
        *existing = incoming;
        (existing.name.clone(), dropped)
    } else {
        (existing.name.clone(), incoming.name)
    };
    readers.sort();
    existing.private_key_readers = if existing.ensure == Ensure::Present { readers } else { vec![] };
    if kept_name != dropped_name {
        renamed.insert(item_name::certificate(&dropped_name), item_name::certificate(&kept_name));
    }
}

fn rank(certificate: &HostCertificate) -> u8 {
    match (certificate.ensure, certificate.source.as_ref().is_some_and(|s| s.pfx_key.is_some())) {
        (Ensure::Absent, _) => 0,
        (Ensure::Present, false) => 1,
        (Ensure::Present, true) => 2,
    }
}
