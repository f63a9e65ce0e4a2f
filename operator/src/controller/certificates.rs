//! Issued certificates as operator-namespace Secrets: naming, labels, and reading them back as
//! [`IssuedCertificate`]s for the planner. The cryptography is behind [`CertificateIssuer`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use ssis_crds::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, host_secret_keys};

use crate::catalog::SecretString;
use crate::plan::{CertificateRequest, IssuedCertificate};

use super::CERTIFICATE_ID_LABEL;

/// Annotation with the full certificate id (label values cannot hold it).
pub const ID_ANNOTATION: &str = "ssis.sqlops.io/certificate-id";
/// Annotation with the SHA-1 thumbprint.
pub const THUMBPRINT_ANNOTATION: &str = "ssis.sqlops.io/thumbprint";
/// Annotation with the validity start (RFC 3339).
pub const NOT_BEFORE_ANNOTATION: &str = "ssis.sqlops.io/not-before";
/// Annotation with the expiry (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "ssis.sqlops.io/not-after";
/// Annotation with the subject alternative DNS names, comma-separated.
pub const DNS_NAMES_ANNOTATION: &str = "ssis.sqlops.io/dns-names";
/// Annotation with the fingerprint of the user TLS Secret a certificate was converted from.
pub const SOURCE_FINGERPRINT_ANNOTATION: &str = "ssis.sqlops.io/source-fingerprint";

/// PEM certificate and key of a user `kubernetes.io/tls` Secret, for conversion to host material.
pub struct TlsMaterial {
    pub certificate_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Fingerprint of the user Secret's data.
    pub fingerprint: String,
}

/// Host material of one certificate.
pub struct IssuedMaterial {
    /// PKCS#12 bundle with the private key.
    pub pfx: Vec<u8>,
    pub pfx_password: SecretString,
    /// Public certificate, DER.
    pub certificate_der: Vec<u8>,
    /// SHA-1 thumbprint, upper-case hex.
    pub thumbprint: String,
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
    pub dns_names: Vec<String>,
}

/// Turns a [`CertificateRequest`] into host material (generate, or convert a user TLS Secret).
pub trait CertificateIssuer: Send + Sync {
    /// `tls` is the user Secret's material for `FromTlsSecret` requests, `None` for `Generate`.
    fn issue(
        &self,
        request: &CertificateRequest,
        tls: Option<&TlsMaterial>,
        now: jiff::Timestamp,
    ) -> Result<IssuedMaterial, String>;
}

/// Deterministic Secret name: one Secret per (id, thumbprint), so old and new certificates coexist
/// during a rotation.
pub fn secret_name(id: &str, thumbprint: &str) -> String {
    let id_hash = hex::encode(Sha256::digest(id.as_bytes()));
    let thumb: String = thumbprint.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    format!("ssis-cert-{}-{}", &id_hash[..12], thumb.to_ascii_lowercase())
}

/// Label value for an id: a hash, because ids contain `/`.
pub fn id_label_value(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))[..40].to_string()
}

/// The Secret holding one issued certificate (owner-less: it must outlive any single resource until
/// every host stopped using it).
pub fn certificate_secret(
    namespace: &str,
    id: &str,
    material: &IssuedMaterial,
    source_fingerprint: Option<&str>,
) -> Secret {
    let mut annotations = BTreeMap::from([
        (ID_ANNOTATION.to_string(), id.to_string()),
        (THUMBPRINT_ANNOTATION.to_string(), material.thumbprint.clone()),
        (NOT_BEFORE_ANNOTATION.to_string(), material.not_before.to_string()),
        (NOT_AFTER_ANNOTATION.to_string(), material.not_after.to_string()),
        (DNS_NAMES_ANNOTATION.to_string(), material.dns_names.join(",")),
    ]);
    if let Some(fingerprint) = source_fingerprint {
        annotations.insert(SOURCE_FINGERPRINT_ANNOTATION.to_string(), fingerprint.to_string());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(id, &material.thumbprint)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                (CERTIFICATE_ID_LABEL.to_string(), id_label_value(id)),
            ])),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (host_secret_keys::PFX.to_string(), ByteString(material.pfx.clone())),
            (
                host_secret_keys::PFX_PASSWORD.to_string(),
                ByteString(material.pfx_password.expose().as_bytes().to_vec()),
            ),
            (host_secret_keys::CERTIFICATE_DER.to_string(), ByteString(material.certificate_der.clone())),
        ])),
        ..Default::default()
    }
}

/// Read an issued-certificate Secret back; `None` when it is not one (or its annotations are
/// damaged, in which case it is ignored and the planner asks for a new certificate).
pub fn parse_certificate_secret(secret: &Secret) -> Option<IssuedCertificate> {
    let annotations = secret.metadata.annotations.as_ref()?;
    secret.metadata.labels.as_ref()?.get(CERTIFICATE_ID_LABEL)?;
    let get = |key: &str| annotations.get(key).cloned();
    let dns_names = get(DNS_NAMES_ANNOTATION)
        .map(|names| names.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    Some(IssuedCertificate {
        id: get(ID_ANNOTATION)?,
        secret_name: secret.metadata.name.clone()?,
        thumbprint: get(THUMBPRINT_ANNOTATION)?,
        not_before: get(NOT_BEFORE_ANNOTATION)?.parse().ok()?,
        not_after: get(NOT_AFTER_ANNOTATION)?.parse().ok()?,
        dns_names,
        source_fingerprint: get(SOURCE_FINGERPRINT_ANNOTATION),
    })
}

/// The newest certificate per id (by `notBefore`, then name for determinism).
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

    fn material(thumbprint: &str, not_before: &str) -> IssuedMaterial {
        IssuedMaterial {
            pfx: vec![1, 2, 3],
            pfx_password: SecretString::new("pfx-pass"),
            certificate_der: vec![4, 5],
            thumbprint: thumbprint.into(),
            not_before: not_before.parse().unwrap(),
            not_after: "2030-01-01T00:00:00Z".parse().unwrap(),
            dns_names: vec!["a.example.com".into(), "b.example.com".into()],
        }
    }

    #[test]
    fn secret_round_trips_metadata_and_names_are_deterministic() {
        let id = "worker/ns/pool/node-1";
        let secret =
            certificate_secret("ops", id, &material(&"AB".repeat(20), "2026-01-01T00:00:00Z"), Some("sha256:x"));
        let parsed = parse_certificate_secret(&secret).unwrap();
        assert_eq!(parsed.id, id);
        assert_eq!(parsed.thumbprint, "AB".repeat(20));
        assert_eq!(parsed.dns_names, vec!["a.example.com", "b.example.com"]);
        assert_eq!(parsed.source_fingerprint.as_deref(), Some("sha256:x"));
        assert_eq!(parsed.secret_name, secret_name(id, &"AB".repeat(20)));
        assert!(parsed.secret_name.len() <= 63);
        assert_ne!(secret_name(id, &"AB".repeat(20)), secret_name(id, &"CD".repeat(20)));
        assert_ne!(secret_name(id, &"AB".repeat(20)), secret_name("worker/ns/pool/node-2", &"AB".repeat(20)));
    }

    #[test]
    fn newest_certificate_wins_per_id() {
        let old = parse_certificate_secret(&certificate_secret(
            "ops",
            "m",
            &material(&"AA".repeat(20), "2026-01-01T00:00:00Z"),
            None,
        ))
        .unwrap();
        let new = parse_certificate_secret(&certificate_secret(
            "ops",
            "m",
            &material(&"BB".repeat(20), "2026-06-01T00:00:00Z"),
            None,
        ))
        .unwrap();
        let newest = newest_per_id([new.clone(), old]);
        assert_eq!(newest["m"].thumbprint, new.thumbprint);
    }
}
