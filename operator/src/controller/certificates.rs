//! Issued certificates as operator-namespace Secrets: labels, and reading them back as
//! [`IssuedCertificate`]s for the planner. The cryptography is behind [`CertificateIssuer`]
//! (production: [`crate::certs::issue`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use ssis_crds::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

use crate::plan::{CertificateRequest, IssuedCertificate};

use super::CERTIFICATE_ID_LABEL;

/// Secret data by key.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Turns a [`CertificateRequest`] into host material (generate, or convert a user TLS Secret).
pub trait CertificateIssuer: Send + Sync {
    /// `secret_name` is the operator-namespace Secret the material goes into; `tls_secret_data` is
    /// the user Secret's data for `FromTlsSecret` requests, `None` for `Generate`. Returns the
    /// certificate's public facts and the host-material Secret data.
    fn issue(
        &self,
        request: &CertificateRequest,
        secret_name: &str,
        tls_secret_data: Option<&SecretData>,
        now: jiff::Timestamp,
    ) -> Result<(IssuedCertificate, SecretData), String>;
}

/// The real issuer: RSA keys from aws-lc-rs; serial numbers and PFX passwords from the
/// thread-local CSPRNG (ChaCha12, seeded and reseeded from the operating system).
#[derive(Clone, Copy, Debug, Default)]
pub struct CertsIssuer;

impl CertificateIssuer for CertsIssuer {
    fn issue(
        &self,
        request: &CertificateRequest,
        secret_name: &str,
        tls_secret_data: Option<&SecretData>,
        now: jiff::Timestamp,
    ) -> Result<(IssuedCertificate, SecretData), String> {
        crate::certs::issue(request, secret_name, tls_secret_data, now, &mut rand::rng()).map_err(|e| e.to_string())
    }
}

/// Label value for an id: a hash, because ids contain `/`.
pub fn id_label_value(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))[..40].to_string()
}

/// The Secret holding one issued certificate. Owner-less: it must outlive any single resource
/// until every host stopped using it (the planner says when, through `retained_host_secrets`).
pub fn certificate_secret(namespace: &str, issued: &IssuedCertificate, data: SecretData) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(issued.secret_name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                (CERTIFICATE_ID_LABEL.to_string(), id_label_value(&issued.id)),
            ])),
            annotations: Some(crate::certs::secret_annotations(issued)),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

/// Read an issued-certificate Secret back; `None` when it is not one (or its annotations are
/// damaged, in which case the planner asks for the certificate again and it is overwritten).
pub fn parse_certificate_secret(secret: &Secret) -> Option<IssuedCertificate> {
    secret.labels().get(CERTIFICATE_ID_LABEL)?;
    crate::certs::issued_from_annotations(&secret.name_any(), secret.metadata.annotations.as_ref()?)
}

/// The newest certificate per id (by `notBefore`, then Secret name for determinism).
pub fn newest_per_id(certificates: impl IntoIterator<Item = IssuedCertificate>) -> BTreeMap<String, IssuedCertificate> {
    let mut newest: BTreeMap<String, IssuedCertificate> = BTreeMap::new();
    for certificate in certificates {
        let replace = match newest.get(&certificate.id) {
            None => true,
            Some(current) => {
                (certificate.not_before, &certificate.secret_name) > (current.not_before, &current.secret_name)
            }
        };
        if replace {
            newest.insert(certificate.id.clone(), certificate);
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(id: &str, name: &str, not_before: &str) -> IssuedCertificate {
        IssuedCertificate {
            id: id.into(),
            secret_name: name.into(),
            thumbprint: "AB".repeat(20),
            not_before: not_before.parse().unwrap(),
            not_after: "2030-01-01T00:00:00Z".parse().unwrap(),
            dns_names: vec!["a.example.com".into(), "b.example.com".into()],
            source_fingerprint: Some("sha256:x".into()),
        }
    }

    #[test]
    fn secret_round_trips_the_public_facts() {
        let original = issued("worker/ns/pool/node-1/gen-1", "ssis-cert-1", "2026-01-01T00:00:00Z");
        let secret = certificate_secret("ops", &original, BTreeMap::from([("certificate.der".into(), vec![1])]));
        assert_eq!(parse_certificate_secret(&secret), Some(original));
        assert!(secret.labels()[CERTIFICATE_ID_LABEL].len() <= 63);
        let mut unlabelled = secret.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(parse_certificate_secret(&unlabelled), None);
    }

    #[test]
    fn newest_certificate_wins_per_id() {
        let old = issued("m", "a", "2026-01-01T00:00:00Z");
        let new = issued("m", "b", "2026-06-01T00:00:00Z");
        assert_eq!(newest_per_id([new.clone(), old.clone()])["m"], new);
        assert_eq!(newest_per_id([old, new.clone()])["m"], new);
    }
}
