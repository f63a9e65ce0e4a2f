//! Certificate bookkeeping of the planner: ids of requested certificates, names of the
//! operator-namespace Secrets holding host material, and the rotation state machines (reference
//! §7 "Master cert change" / "Worker cert change").

use std::collections::HashMap;

use sha1::{Digest, Sha1};
use ssis_crds::{
    CertStore, CertificateMaterialRef, CertificateSource, Ensure, HostCertificate, RotationPhase, RotationStatus,
    host_secret_keys,
};

use super::{CertificateRequest, CertificateRequestSource, IssuedCertificate, PlanInput};

/// Certificate material the hosts can import: its thumbprint and the Secret that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMaterial {
    pub thumbprint: String,
    pub secret_name: String,
}

impl HostMaterial {
    pub fn from_issued(issued: &IssuedCertificate) -> Self {
        Self { thumbprint: issued.thumbprint.clone(), secret_name: issued.secret_name.clone() }
    }

    /// Imported with its private key (PKCS#12).
    pub fn with_key(&self, name: String, store: CertStore, private_key_readers: Vec<String>) -> HostCertificate {
        HostCertificate {
            name,
            store,
            thumbprint: self.thumbprint.clone(),
            ensure: Ensure::Present,
            source: Some(CertificateMaterialRef {
                secret_name: self.secret_name.clone(),
                certificate_key: None,
                pfx_key: Some(host_secret_keys::PFX.into()),
                pfx_password_key: Some(host_secret_keys::PFX_PASSWORD.into()),
            }),
            private_key_readers,
        }
    }

    /// Only the public certificate (DER).
    pub fn public(&self, name: String, store: CertStore) -> HostCertificate {
        HostCertificate {
            name,
            store,
            thumbprint: self.thumbprint.clone(),
            ensure: Ensure::Present,
            source: Some(CertificateMaterialRef {
                secret_name: self.secret_name.clone(),
                certificate_key: Some(host_secret_keys::CERTIFICATE_DER.into()),
                pfx_key: None,
                pfx_password_key: None,
            }),
            private_key_readers: vec![],
        }
    }
}

/// Removal of a certificate by thumbprint.
pub fn absent(name: String, store: CertStore, thumbprint: &str) -> HostCertificate {
    HostCertificate {
        name,
        store,
        thumbprint: thumbprint.to_string(),
        ensure: Ensure::Absent,
        source: None,
        private_key_readers: vec![],
    }
}

/// HostConfig certificate item names: short (the CRD allows 128 characters) and unique per
/// certificate and purpose.
pub mod cert_item {
    /// The master certificate with its key, on a master node.
    pub fn master_with_key(thumbprint: &str) -> String {
        format!("master-cert-{thumbprint}")
    }
    /// The master certificate's public part, in a worker's Root.
    pub fn master_trust(thumbprint: &str) -> String {
        format!("master-trust-{thumbprint}")
    }
    /// A worker's own certificate with key, in its My store.
    pub fn worker_own(thumbprint: &str) -> String {
        format!("worker-cert-{thumbprint}")
    }
    /// A worker's public certificate in a Root store (its own, or a master node's).
    pub fn worker_trust(thumbprint: &str) -> String {
        format!("worker-trust-{thumbprint}")
    }
}

fn hex_sha1(data: &[u8]) -> String {
    Sha1::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A suggested name for the operator-namespace Secret holding the host material of certificate
/// `id` (distinct per id, so old and new certificates of a rotation live in different Secrets).
/// The planner always uses the name reported back in [`IssuedCertificate::secret_name`].
pub fn host_secret_name(id: &str) -> String {
    format!("ssis-cert-{}", &hex_sha1(id.as_bytes())[..20])
}

/// Name of the operator-namespace copy of a service-account password.
pub fn logon_secret_name(owner_kind: &str, key: &str) -> String {
    format!("ssis-logon-{}", &hex_sha1(format!("{owner_kind}/{key}").as_bytes())[..20])
}

fn short(thumbprint: &str) -> &str {
    thumbprint.get(..12).unwrap_or(thumbprint)
}

/// The certificate a [`CertificateSource`] asks for now, given the one currently in use.
pub struct WantedCertificate {
    pub id: String,
    pub source: CertificateRequestSource,
}

/// Decide which certificate should be in use: the current one while it is valid and matches the
/// source, otherwise a new one (renewal before expiry, changed names, changed TLS Secret).
/// `Err` names the field and the fix.
pub fn wanted_certificate(
    input: &PlanInput,
    base_id: &str,
    namespace: &str,
    source: &CertificateSource,
    common_name: &str,
    required_names: &[String],
    current: Option<(&str, Option<&str>, &[String])>,
) -> Result<Option<WantedCertificate>, (String, String)> {
    if let Some(secret) = &source.secret_ref {
        let key = format!("{namespace}/{}", secret.name);
        let Some(meta) = input.secrets.get(&key) else {
            return Err((
                "CertificateSecretNotFound".into(),
                format!(
                    "certificate.secretRef: Secret {key} does not exist; create the kubernetes.io/tls Secret (e.g. with cert-manager) or use certificate.generate"
                ),
            ));
        };
        for required in ["tls.crt", "tls.key"] {
            if !meta.keys.contains(required) {
                return Err((
                    "CertificateSecretInvalid".into(),
                    format!(
                        "certificate.secretRef: Secret {key} has no key {required}; it must be a kubernetes.io/tls Secret with tls.crt and tls.key"
                    ),
                ));
            }
        }
        let id = format!("{base_id}/tls-{}", meta.fingerprint.get(..16).unwrap_or(&meta.fingerprint));
        return Ok(Some(WantedCertificate { id, source: CertificateRequestSource::FromTlsSecret { secret: key } }));
    }
    let Some(generate) = &source.generate else {
        return Err((
            "CertificateSourceMissing".into(),
            "certificate: set certificate.generate (operator-generated) or certificate.secretRef (a kubernetes.io/tls Secret)".into(),
        ));
    };
    let mut dns_names: Vec<String> = required_names.to_vec();
    for name in &generate.additional_dns_names {
        if !dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            dns_names.push(name.clone());
        }
    }
    let names_id = &hex_sha1(dns_names.join(",").to_ascii_lowercase().as_bytes())[..8];
    let request = CertificateRequestSource::Generate {
        common_name: common_name.to_string(),
        dns_names: dns_names.clone(),
        validity_days: u32::try_from(generate.validity_days).unwrap_or(365).max(1),
    };
    match current {
        None => Ok(Some(WantedCertificate { id: format!("{base_id}/gen-{names_id}"), source: request })),
        Some((thumbprint, not_after, current_names)) => {
            let covers_names = dns_names.iter().all(|n| current_names.iter().any(|c| c.eq_ignore_ascii_case(n)));
            let renew_at = not_after.and_then(|t| t.parse::<jiff::Timestamp>().ok()).and_then(|t| {
                t.checked_sub(jiff::SignedDuration::from_hours(24 * i64::from(generate.renew_before_days))).ok()
            });
            let expiring = renew_at.is_none_or(|renew_at| input.now >= renew_at);
            if covers_names && !expiring {
                Ok(None)
            } else {
                let id = format!("{base_id}/gen-{names_id}-after-{}", short(thumbprint));
                Ok(Some(WantedCertificate { id, source: request }))
            }
        }
    }
}

/// The request for a wanted certificate, unless it has been issued already.
pub fn request_unless_issued(input: &PlanInput, wanted: &WantedCertificate) -> Option<CertificateRequest> {
    (!input.issued_certificates.contains_key(&wanted.id))
        .then(|| CertificateRequest { id: wanted.id.clone(), source: wanted.source.clone() })
}

/// What the hosts must hold in one phase of a master certificate rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterCertificateLayout {
    /// Imported with key into Root on every master node and (public) into every worker's Root.
    pub trusted: Vec<HostMaterial>,
    /// Removed everywhere.
    pub removed: Vec<String>,
    /// Bound to the port and set as `SSLCertThumbprint`.
    pub served: HostMaterial,
    /// Set as the workers' `MasterHttpsCertThumbprint`.
    pub pinned_by_workers: HostMaterial,
}

/// Reference §7 "Master cert change", in an order that never leaves a worker pinned to a
/// certificate its masters do not serve and never removes a certificate still in use.
pub fn master_layout(
    phase: RotationPhase,
    current: &HostMaterial,
    next: Option<&HostMaterial>,
) -> MasterCertificateLayout {
    let Some(next) = next.filter(|n| n.thumbprint != current.thumbprint) else {
        return MasterCertificateLayout {
            trusted: vec![current.clone()],
            removed: vec![],
            served: current.clone(),
            pinned_by_workers: current.clone(),
        };
    };
    let both = vec![current.clone(), next.clone()];
    match phase {
        // Reference §7 "Master cert change": the masters keep serving the old certificate while
        // the group's workers are disabled, so the switch comes strictly after the disable.
        RotationPhase::Idle | RotationPhase::TrustingNew | RotationPhase::DisablingWorkers => MasterCertificateLayout {
            trusted: both,
            removed: vec![],
            served: current.clone(),
            pinned_by_workers: current.clone(),
        },
        RotationPhase::SwitchingMasters => MasterCertificateLayout {
            trusted: both,
            removed: vec![],
            served: next.clone(),
            pinned_by_workers: current.clone(),
        },
        RotationPhase::SwitchingWorkers => MasterCertificateLayout {
            trusted: both,
            removed: vec![],
            served: next.clone(),
            pinned_by_workers: next.clone(),
        },
        RotationPhase::RemovingOld => MasterCertificateLayout {
            trusted: vec![next.clone()],
            removed: vec![current.thumbprint.clone()],
            served: next.clone(),
            pinned_by_workers: next.clone(),
        },
    }
}

/// The phase after `phase` in a master rotation.
pub fn next_master_phase(phase: RotationPhase) -> RotationPhase {
    match phase {
        RotationPhase::Idle => RotationPhase::TrustingNew,
        RotationPhase::TrustingNew => RotationPhase::DisablingWorkers,
        RotationPhase::DisablingWorkers => RotationPhase::SwitchingMasters,
        RotationPhase::SwitchingMasters => RotationPhase::SwitchingWorkers,
        RotationPhase::SwitchingWorkers => RotationPhase::RemovingOld,
        RotationPhase::RemovingOld => RotationPhase::Idle,
    }
}

/// Phases of a master rotation in which the group's workers are kept disabled in SSISDB: from the
/// disable before the masters switch until every worker pins the new certificate. A worker pins a
/// single master thumbprint, so only a disabled worker can be pinned to a certificate its master
/// does not serve (reference §7 "Master cert change", pitfalls 14 and 15).
pub fn master_rotation_pauses_workers(phase: RotationPhase) -> bool {
    matches!(phase, RotationPhase::DisablingWorkers | RotationPhase::SwitchingMasters | RotationPhase::SwitchingWorkers)
}

/// The phase after `phase` in a worker certificate rotation (no master switch involved).
pub fn next_worker_phase(phase: RotationPhase) -> RotationPhase {
    match phase {
        RotationPhase::Idle => RotationPhase::TrustingNew,
        RotationPhase::TrustingNew | RotationPhase::DisablingWorkers | RotationPhase::SwitchingMasters => {
            RotationPhase::SwitchingWorkers
        }
        RotationPhase::SwitchingWorkers => RotationPhase::RemovingOld,
        RotationPhase::RemovingOld => RotationPhase::Idle,
    }
}

/// A rotation status starting now towards `next`.
pub fn start_rotation(input: &PlanInput, from: &str, next: &IssuedCertificate) -> RotationStatus {
    RotationStatus {
        phase: RotationPhase::TrustingNew,
        from_thumbprint: Some(from.to_string()),
        to_thumbprint: Some(next.thumbprint.clone()),
        to_host_secret_name: Some(next.secret_name.clone()),
        to_not_after: Some(next.not_after.to_string()),
        started_at: Some(input.now.to_string()),
    }
}

/// The rotation target recorded in a status, when complete enough to act on.
pub fn rotation_target(rotation: &RotationStatus) -> Option<HostMaterial> {
    Some(HostMaterial {
        thumbprint: rotation.to_thumbprint.clone()?,
        secret_name: rotation.to_host_secret_name.clone()?,
    })
}

/// The wanted certificate `id` is the one in use already (same thumbprint and Secret).
pub fn is_current(input: &PlanInput, id: &str, current: &HostMaterial) -> bool {
    input
        .issued_certificates
        .get(id)
        .is_some_and(|i| i.thumbprint.eq_ignore_ascii_case(&current.thumbprint) && i.secret_name == current.secret_name)
}

/// Issued certificates by thumbprint: the planner looks one up for every worker node, so a scan of
/// every issued certificate each time would make a pass quadratic in the fleet.
pub struct IssuedByThumbprint<'a> {
    /// Upper-case thumbprint → certificate; the first by id wins when two ids share a thumbprint.
    by_thumbprint: HashMap<String, &'a IssuedCertificate>,
}

impl<'a> IssuedByThumbprint<'a> {
    pub fn new(input: &'a PlanInput) -> Self {
        let mut by_thumbprint = HashMap::with_capacity(input.issued_certificates.len());
        for issued in input.issued_certificates.values() {
            by_thumbprint.entry(issued.thumbprint.to_ascii_uppercase()).or_insert(issued);
        }
        Self { by_thumbprint }
    }

    /// Issued certificate with this thumbprint (any case), if the operator still has its material.
    pub fn get(&self, thumbprint: &str) -> Option<&'a IssuedCertificate> {
        self.by_thumbprint.get(&thumbprint.to_ascii_uppercase()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(t: &str) -> HostMaterial {
        HostMaterial { thumbprint: t.repeat(40), secret_name: format!("s-{t}") }
    }

    #[test]
    fn rotation_never_pins_workers_before_masters_serve_and_never_removes_in_use() {
        let old = material("A");
        let new = material("B");
        let mut phase = RotationPhase::TrustingNew;
        let mut masters_served_new_in_an_earlier_phase = false;
        loop {
            let layout = master_layout(phase, &old, Some(&new));
            if layout.pinned_by_workers == new {
                assert!(masters_served_new_in_an_earlier_phase, "{phase:?}: workers pinned before masters switched");
            }
            for removed in &layout.removed {
                assert_ne!(removed, &layout.served.thumbprint);
                assert_ne!(removed, &layout.pinned_by_workers.thumbprint);
            }
            assert!(layout.trusted.contains(&layout.served));
            assert!(layout.trusted.contains(&layout.pinned_by_workers));
            masters_served_new_in_an_earlier_phase |= layout.served == new;
            phase = next_master_phase(phase);
            if phase == RotationPhase::Idle {
                break;
            }
        }
    }

    #[test]
    fn host_secret_names_are_stable_and_distinct_per_id() {
        assert_eq!(host_secret_name("master/ns/a/gen-1"), host_secret_name("master/ns/a/gen-1"));
        assert_ne!(host_secret_name("master/ns/a/gen-1"), host_secret_name("master/ns/a/gen-2"));
        assert!(host_secret_name("x").len() <= 63);
    }
}
