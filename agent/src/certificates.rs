//! Certificate material: DER/PEM/PFX parsing, SHA-1 thumbprints and the metadata the agent reports
//! (subject, DNS names, expiry). Pure functions shared by the engine (which checks that Secret
//! material has the thumbprint the spec asks for) and the simulated host.

use sha1::{Digest, Sha1};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::host::SecretString;

/// Metadata of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateMetadata {
    /// SHA-1 of the DER, 40 upper-case hex digits (what Windows calls the thumbprint).
    pub thumbprint: String,
    pub subject: String,
    /// Subject alternative DNS names.
    pub dns_names: Vec<String>,
    /// RFC 3339.
    pub not_after: String,
}

/// A certificate that could not be read. Never carries key or password material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaterialError {
    #[error("not a DER or PEM X.509 certificate: {0}")]
    Certificate(String),
    #[error("the PFX could not be opened (wrong password or damaged bundle)")]
    PfxUnreadable,
    #[error("the PFX holds no certificate with a private key")]
    PfxWithoutKey,
}

/// SHA-1 thumbprint of a DER certificate.
pub fn thumbprint(der: &[u8]) -> String {
    Sha1::digest(der).iter().map(|byte| format!("{byte:02X}")).collect()
}

/// DER bytes of a certificate given as DER or PEM.
pub fn to_der(bytes: &[u8]) -> Result<Vec<u8>, MaterialError> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(trimmed).map_err(|error| MaterialError::Certificate(error.to_string()))?;
        return Ok(pem.contents);
    }
    Ok(bytes.to_vec())
}

/// Parse a DER certificate's metadata.
pub fn metadata(der: &[u8]) -> Result<CertificateMetadata, MaterialError> {
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|error| MaterialError::Certificate(error.to_string()))?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                dns_names.push((*dns).to_string());
            }
        }
    }
    let not_after = jiff::Timestamp::from_second(certificate.validity().not_after.timestamp())
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(CertificateMetadata {
        thumbprint: thumbprint(der),
        subject: certificate.subject().to_string(),
        dns_names,
        not_after,
    })
}

/// Open a PFX and return the DER of its end-entity certificate (the one with the private key).
pub fn pfx_leaf_certificate(pfx: &[u8], password: &SecretString) -> Result<Vec<u8>, MaterialError> {
    let store = p12_keystore::KeyStore::from_pkcs12(pfx, password.expose(), p12_keystore::Pkcs12ImportPolicy::Strict)
        .map_err(|_| MaterialError::PfxUnreadable)?;
    let (_, chain) = store.private_key_chain().ok_or(MaterialError::PfxWithoutKey)?;
    chain.certs().first().map(|c| c.as_der().to_vec()).ok_or(MaterialError::PfxWithoutKey)
}

/// A freshly generated self-signed certificate (what SQL setup creates; also test material).
pub struct GeneratedCertificate {
    pub der: Vec<u8>,
    /// PKCS#12 bundle with the private key, protected by the password given at generation.
    pub pfx: Vec<u8>,
    pub thumbprint: String,
}

/// Generate a self-signed certificate with `CN=<first name>` and every name as a DNS SAN.
pub fn generate_self_signed(dns_names: &[&str], pfx_password: &SecretString) -> anyhow::Result<GeneratedCertificate> {
    let names: Vec<String> = dns_names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, dns_names.first().copied().unwrap_or("localhost"));
    let key = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    let der = certificate.der().to_vec();
    let mut store = p12_keystore::KeyStore::new();
    let chain = p12_keystore::PrivateKeyChain::new(
        thumbprint(&der).into_bytes(),
        p12_keystore::PrivateKey::from_der(&key.serialize_der())?,
        [p12_keystore::Certificate::from_der(&der)?],
    );
    store.add_entry("certificate", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let pfx = store.writer(pfx_password.expose()).write()?;
    Ok(GeneratedCertificate { thumbprint: thumbprint(&der), der, pfx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfx_round_trip_and_wrong_password() {
        let password = SecretString::new("s3cret");
        let generated = generate_self_signed(&["ssis-master", "ssis-master.corp.local"], &password).unwrap();
        let leaf = pfx_leaf_certificate(&generated.pfx, &password).unwrap();
        assert_eq!(thumbprint(&leaf), generated.thumbprint);
        let meta = metadata(&generated.der).unwrap();
        assert_eq!(meta.subject, "CN=ssis-master");
        assert_eq!(meta.dns_names, vec!["ssis-master", "ssis-master.corp.local"]);
        assert_eq!(meta.thumbprint.len(), 40);
        let error = pfx_leaf_certificate(&generated.pfx, &SecretString::new("Tr0ub4dor")).unwrap_err();
        assert_eq!(error, MaterialError::PfxUnreadable);
        assert!(!error.to_string().contains("Tr0ub4dor"));
    }

    #[test]
    fn pem_and_der_give_the_same_thumbprint() {
        let generated = generate_self_signed(&["w1"], &SecretString::new("p")).unwrap();
        let pem = pem_encode(&generated.der);
        assert_eq!(thumbprint(&to_der(pem.as_bytes()).unwrap()), generated.thumbprint);
        assert_eq!(to_der(&generated.der).unwrap(), generated.der);
    }

    fn pem_encode(der: &[u8]) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
    }
}
