//! The SQL state of a fresh installation, for previews without a SQL connection (`plan` CLI):
//! the availability group holds the catalog, the first replica is primary, and none of the Scale
//! Out preparation has been done yet.

use ssis_crds::SsisdbAvailabilityGroup;

use crate::catalog::{CatalogObservation, ReplicaObservation, SsisdbObservation};

/// Observation of a freshly built availability group: the listener exists unless the spec asks
/// the operator to create it; no DMK password stored, no logins, Scale Out not enabled.
pub fn fresh_install_observation(ag: &SsisdbAvailabilityGroup) -> CatalogObservation {
    let spec = &ag.spec;
    let primary = spec.replicas.first().map(|r| r.name.clone());
    CatalogObservation {
        primary: primary.clone(),
        availability_group_exists: true,
        database_in_group: true,
        listener: spec
            .listener
            .create
            .is_none()
            .then(|| (spec.listener.name.clone(), u16::try_from(spec.listener.port).ok())),
        replicas: spec
            .replicas
            .iter()
            .map(|r| ReplicaObservation {
                name: r.name.clone(),
                reachable: true,
                error: None,
                role: if Some(&r.name) == primary.as_ref() { "PRIMARY" } else { "SECONDARY" }.into(),
                synchronization_health: "HEALTHY".into(),
                sql_auth_enabled: true,
                master_key_password_stored: false,
                logging_login_sid: None,
                logging_login_password_matches: false,
                master_account_logins: vec![],
            })
            .collect(),
        ssisdb: Some(SsisdbObservation { master_key_encrypted_by_server: true, ..Default::default() }),
    }
}
