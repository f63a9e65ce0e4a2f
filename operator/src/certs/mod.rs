//! Certificate material for hosts, IO-free: generate a self-signed RSA certificate or convert a
//! user's `kubernetes.io/tls` Secret, and package it as the operator-namespace Secret data the
//! agents import (PKCS#12 with a random password + public DER, keys from
//! [`ssis_crds::host_secret_keys`]). Called by the controller's apply stage for each
//! [`CertificateRequest`] the planner emits (reference §7).
//!
//! Choices where Microsoft is silent (reference §7, [UNCONFIRMED] key usage): RSA 2048,
//! KeyUsage DigitalSignature + KeyEncipherment, EKU serverAuth + clientAuth. The PFX uses
//! 3DES + HMAC-SHA1, which every supported Windows Server imports (AES-256 PFX needs 2019+).
//!
//! RSA keys are generated, parsed and re-encoded by aws-lc-rs, the process's one TLS crypto
//! provider (through rcgen for generation). The PFX is written by `p12-keystore`, whose `pkcs12`
//! and `cms` dependencies are RustCrypto pre-releases (0.2.0-pre.0, 0.3.0-pre.1; no RustSec
//! advisory against either): no maintained stable crate writes PKCS#12 (`p12` 0.6 is unmaintained
//! and links a second generation of the RustCrypto ciphers), and aws-lc-rs does not expose
//! AWS-LC's `PKCS12_create`. Revisit when RustCrypto's `pkcs12` ships its builder.

use std::collections::BTreeMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use p12_keystore::{
    Certificate as P12Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rand::CryptoRng;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha1::{Digest, Sha1};
use ssis_crds::host_secret_keys;

use crate::plan::{CertificateRequest, CertificateRequestSource, IssuedCertificate};

/// Why a certificate could not be produced. Messages name the Secret key and the fix; they never
/// contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The user's TLS Secret lacks a key or holds unusable PEM.
    #[error("TLS Secret {secret}: {message}")]
    InvalidTlsSecret { secret: String, message: String },
    /// Generation failed (names not valid for a certificate, RNG failure, encoding).
    #[error("generating certificate {id}: {message}")]
    Generate { id: String, message: String },
    /// Packaging as PKCS#12 failed.
    #[error("packaging certificate {id} as PKCS#12: {message}")]
    Package { id: String, message: String },
}

/// Generated certificates start this much before `now`, for clock skew between hosts.
const BACKDATE: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// Produce the certificate a request asks for and the data of its operator-namespace Secret
/// named `secret_name` (e.g. [`crate::plan::certificates::host_secret_name`]). `tls_secret_data` is the data of the user's `kubernetes.io/tls`
/// Secret for [`CertificateRequestSource::FromTlsSecret`] (ignored otherwise). `rng` draws the
/// serial number and the PFX password; the RSA key comes from aws-lc-rs's own generator.
pub fn issue(
    request: &CertificateRequest,
    secret_name: &str,
    tls_secret_data: Option<&BTreeMap<String, Vec<u8>>>,
    now: jiff::Timestamp,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(IssuedCertificate, BTreeMap<String, Vec<u8>>), CertError> {
    let (der, pkcs8, info) = match &request.source {
        CertificateRequestSource::Generate { common_name, dns_names, validity_days } => {
            generate(&request.id, common_name, dns_names, *validity_days, now, rng)?
        }
        CertificateRequestSource::FromTlsSecret { secret } => {
            let empty = BTreeMap::new();
            convert_tls_secret(secret, tls_secret_data.unwrap_or(&empty))?
        }
    };
    let password = random_password(rng);
    let pfx = package_pfx(&request.id, &der, &pkcs8, &password)?;
    let issued = IssuedCertificate {
        id: request.id.clone(),
        secret_name: secret_name.to_string(),
        thumbprint: info.thumbprint,
        not_before: info.not_before,
        not_after: info.not_after,
        dns_names: info.dns_names,
        source_fingerprint: None,
    };
    let data = BTreeMap::from([
        (host_secret_keys::PFX.to_string(), pfx),
        (host_secret_keys::PFX_PASSWORD.to_string(), password.into_bytes()),
        (host_secret_keys::CERTIFICATE_DER.to_string(), der),
    ]);
    Ok((issued, data))
}

/// Public facts of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// SHA-1 of the DER, upper-case hex: what Windows calls the thumbprint.
    pub thumbprint: String,
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
    pub dns_names: Vec<String>,
}

/// The Windows thumbprint of a DER certificate.
pub fn thumbprint(der: &[u8]) -> String {
    Sha1::digest(der).iter().map(|b| format!("{b:02X}")).collect()
}

/// Read the public facts of a DER certificate.
pub fn inspect_der(der: &[u8]) -> Result<CertificateInfo, String> {
    let (_, certificate) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let validity = certificate.validity();
    let timestamp = |t: i64| jiff::Timestamp::from_second(t).map_err(|e| format!("validity out of range: {e}"));
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                dns_names.push(dns.to_string());
            }
        }
    }
    Ok(CertificateInfo {
        thumbprint: thumbprint(der),
        not_before: timestamp(validity.not_before.timestamp())?,
        not_after: timestamp(validity.not_after.timestamp())?,
        dns_names,
    })
}

/// Public facts of the leaf certificate in a TLS Secret's `tls.crt` (used by the `plan` preview,
/// which shows real thumbprints for user certificates).
pub fn inspect_tls_secret(secret: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<CertificateInfo, CertError> {
    let der = leaf_certificate_der(secret, data)?;
    inspect_der(&der).map_err(|message| invalid(secret, format!("tls.crt: {message}")))
}

fn invalid(secret: &str, message: String) -> CertError {
    CertError::InvalidTlsSecret { secret: secret.to_string(), message }
}

fn leaf_certificate_der(secret: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, CertError> {
    let pem_data = data
        .get("tls.crt")
        .ok_or_else(|| invalid(secret, "has no tls.crt; it must be a kubernetes.io/tls Secret".into()))?;
    let blocks = pem::parse_many(pem_data).map_err(|e| invalid(secret, format!("tls.crt is not PEM: {e}")))?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .ok_or_else(|| invalid(secret, "tls.crt holds no CERTIFICATE block".into()))
}

/// Convert a `kubernetes.io/tls` Secret: the leaf certificate of `tls.crt` and its RSA key from
/// `tls.key` (PKCS#8 or PKCS#1). Other key types are refused: Windows import of them is not
/// verified for this procedure.
fn convert_tls_secret(
    secret: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<(Vec<u8>, Vec<u8>, CertificateInfo), CertError> {
    let der = leaf_certificate_der(secret, data)?;
    let info = inspect_der(&der).map_err(|message| invalid(secret, format!("tls.crt: {message}")))?;
    let key_pem = data.get("tls.key").ok_or_else(|| invalid(secret, "has no tls.key".into()))?;
    let block = pem::parse(key_pem).map_err(|e| invalid(secret, format!("tls.key is not PEM: {e}")))?;
    let key = match block.tag() {
        "PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_pkcs8(block.contents()).map_err(|_| {
            invalid(secret, "tls.key is not an RSA key; only RSA keys are supported (issue the certificate with an RSA key, e.g. cert-manager privateKey.algorithm: RSA)".into())
        })?,
        "RSA PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_der(block.contents())
            .map_err(|e| invalid(secret, format!("tls.key is not a valid RSA key: {e}")))?,
        other => {
            return Err(invalid(
                secret,
                format!("tls.key holds a {other:?} block; only RSA keys are supported (cert-manager: privateKey.algorithm: RSA)"),
            ));
        }
    };
    let (_, certificate) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| invalid(secret, format!("tls.crt: {e}")))?;
    // Both sides as the DER RSAPublicKey (modulus, exponent): the certificate's subjectPublicKey
    // bits and the key's public half.
    if certificate.public_key().subject_public_key.data.as_ref() != key.public_key().as_ref() {
        return Err(invalid(
            secret,
            "tls.key does not belong to the certificate in tls.crt; put the matching pair in the Secret".into(),
        ));
    }
    let pkcs8 =
        key.as_der().map_err(|e| invalid(secret, format!("tls.key: cannot encode as PKCS#8: {e}")))?.as_ref().to_vec();
    Ok((der, pkcs8, info))
}

fn generate(
    id: &str,
    common_name: &str,
    dns_names: &[String],
    validity_days: u32,
    now: jiff::Timestamp,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(Vec<u8>, Vec<u8>, CertificateInfo), CertError> {
    let error = |message: String| CertError::Generate { id: id.to_string(), message };
    let key_pair = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .map_err(|e| error(format!("RSA key generation: {e}")))?;
    let pkcs8 = key_pair.serialize_der();

    let mut params = CertificateParams::new(dns_names.to_vec())
        .map_err(|e| error(format!("subject alternative names {dns_names:?}: {e}")))?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    params.distinguished_name = subject;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let not_before = now.checked_sub(BACKDATE).map_err(|e| error(e.to_string()))?;
    let not_after = now
        .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(validity_days)))
        .map_err(|e| error(format!("validity of {validity_days} days: {e}")))?;
    let to_time = |t: jiff::Timestamp| {
        time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|e| error(format!("time out of range: {e}")))
    };
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let certificate = params.self_signed(&key_pair).map_err(|e| error(format!("signing: {e}")))?;
    let der = certificate.der().to_vec();
    let info = CertificateInfo {
        thumbprint: thumbprint(&der),
        not_before: jiff::Timestamp::from_second(not_before.as_second()).map_err(|e| error(e.to_string()))?,
        not_after: jiff::Timestamp::from_second(not_after.as_second()).map_err(|e| error(e.to_string()))?,
        dns_names: dns_names.to_vec(),
    };
    Ok((der, pkcs8, info))
}

/// 32 characters from letters and digits (no characters that need quoting anywhere).
fn random_password(rng: &mut (impl CryptoRng + ?Sized)) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

fn package_pfx(id: &str, der: &[u8], pkcs8: &[u8], password: &str) -> Result<Vec<u8>, CertError> {
    let error = |message: String| CertError::Package { id: id.to_string(), message };
    let certificate = P12Certificate::from_der(der).map_err(|e| error(e.to_string()))?;
    let key = PrivateKey::from_der(pkcs8).map_err(|e| error(e.to_string()))?;
    let local_key_id = Sha1::digest(der).to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        "ssis-scale-out",
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, [certificate])),
    );
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .write()
        .map_err(|e| error(e.to_string()))
}

/// Annotations the controller puts on a host-material Secret so it can rebuild
/// [`IssuedCertificate`]s from the Secrets it lists (metadata only, no key material).
pub mod annotations {
    pub const ID: &str = "ssis.sqlops.io/certificate-id";
    pub const THUMBPRINT: &str = "ssis.sqlops.io/thumbprint";
    pub const NOT_BEFORE: &str = "ssis.sqlops.io/not-before";
    pub const NOT_AFTER: &str = "ssis.sqlops.io/not-after";
    pub const DNS_NAMES: &str = "ssis.sqlops.io/dns-names";
    pub const SOURCE_FINGERPRINT: &str = "ssis.sqlops.io/source-fingerprint";
}

/// Annotations describing an issued certificate.
pub fn secret_annotations(issued: &IssuedCertificate) -> BTreeMap<String, String> {
    let mut map = BTreeMap::from([
        (annotations::ID.to_string(), issued.id.clone()),
        (annotations::THUMBPRINT.to_string(), issued.thumbprint.clone()),
        (annotations::NOT_BEFORE.to_string(), issued.not_before.to_string()),
        (annotations::NOT_AFTER.to_string(), issued.not_after.to_string()),
        (annotations::DNS_NAMES.to_string(), issued.dns_names.join(",")),
    ]);
    if let Some(fingerprint) = &issued.source_fingerprint {
        map.insert(annotations::SOURCE_FINGERPRINT.to_string(), fingerprint.clone());
    }
    map
}

/// Rebuild an issued certificate from its Secret's name and annotations (`None` when any is missing).
pub fn issued_from_annotations(secret_name: &str, map: &BTreeMap<String, String>) -> Option<IssuedCertificate> {
    Some(IssuedCertificate {
        id: map.get(annotations::ID)?.clone(),
        secret_name: secret_name.to_string(),
        thumbprint: map.get(annotations::THUMBPRINT)?.clone(),
        not_before: map.get(annotations::NOT_BEFORE)?.parse().ok()?,
        not_after: map.get(annotations::NOT_AFTER)?.parse().ok()?,
        dns_names: map.get(annotations::DNS_NAMES)?.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect(),
        source_fingerprint: map.get(annotations::SOURCE_FINGERPRINT).cloned(),
    })
}
