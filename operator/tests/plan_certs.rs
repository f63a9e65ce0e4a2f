//! `certs::issue`: generated and converted certificates and their host-material Secret data.

use std::collections::BTreeMap;

use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use rand::SeedableRng;
use rand::rngs::ChaCha20Rng;
use ssis_crds::host_secret_keys;
use ssis_operator::certs::{self, CertError};
use ssis_operator::plan::{CertificateRequest, CertificateRequestSource};
use x509_parser::extensions::ParsedExtension;

fn now() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("valid timestamp")
}

fn generate_request() -> CertificateRequest {
    CertificateRequest {
        id: "master/ssis/masters/gen-1".into(),
        source: CertificateRequestSource::Generate {
            common_name: "ssis-master.corp.example.com".into(),
            dns_names: vec!["ssis-master.corp.example.com".into(), "ssis-master".into()],
            validity_days: 365,
        },
    }
}

#[test]
fn step_2_2_generated_master_certificate_has_the_client_access_point_and_a_usable_pfx() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (issued, data) = certs::issue(&generate_request(), "ssis-cert-test", None, now(), &mut rng).expect("issued");
    assert_eq!(issued.secret_name, "ssis-cert-test");
    assert_eq!(issued.dns_names, vec!["ssis-master.corp.example.com".to_string(), "ssis-master".to_string()]);
    assert_eq!(issued.not_after.duration_since(now()), jiff::SignedDuration::from_hours(24 * 365));

    let der = &data[host_secret_keys::CERTIFICATE_DER];
    assert_eq!(certs::thumbprint(der), issued.thumbprint);
    assert_eq!(issued.thumbprint.len(), 40);
    assert!(issued.thumbprint.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));

    let (_, certificate) = x509_parser::parse_x509_certificate(der).expect("valid X.509");
    let mut sans = Vec::new();
    let mut key_usage_ok = false;
    let mut eku_ok = false;
    for extension in certificate.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                        sans.push(dns.to_string());
                    }
                }
            }
            ParsedExtension::KeyUsage(usage) => {
                key_usage_ok = usage.digital_signature() && usage.key_encipherment();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => eku_ok = eku.server_auth && eku.client_auth,
            _ => {}
        }
    }
    assert!(sans.contains(&"ssis-master.corp.example.com".to_string()), "pitfall 1: {sans:?}");
    assert!(key_usage_ok, "KeyUsage DigitalSignature + KeyEncipherment");
    assert!(eku_ok, "EKU serverAuth + clientAuth");
    let rsa = certificate.public_key().parsed().expect("public key");
    match rsa {
        x509_parser::public_key::PublicKey::RSA(key) => assert_eq!(key.key_size(), 2048),
        other => panic!("expected an RSA key, got {other:?}"),
    }

    let password = String::from_utf8(data[host_secret_keys::PFX_PASSWORD].clone()).expect("utf-8 password");
    assert!(password.len() >= 32 && password.chars().all(|c| c.is_ascii_alphanumeric()));
    let store =
        KeyStore::from_pkcs12(&data[host_secret_keys::PFX], &password, Pkcs12ImportPolicy::Strict).expect("PFX opens");
    let (_, chain) = store.private_key_chain().expect("the PFX carries the private key");
    assert_eq!(chain.certs()[0].as_der(), der.as_slice());
    assert!(KeyStore::from_pkcs12(&data[host_secret_keys::PFX], "wrong", Pkcs12ImportPolicy::Strict).is_err());

    // 3DES + HMAC-SHA1, which every supported Windows Server imports (PBES2/AES needs 2019+); the
    // algorithm identifiers of the bags and the MAC are not encrypted.
    let pfx = &data[host_secret_keys::PFX];
    let has = |der: &[u8]| pfx.windows(der.len()).any(|w| w == der);
    let triple_des = [0x06, 0x0A, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x0C, 0x01, 0x03]; // 1.2.840.113549.1.12.1.3
    let sha1 = [0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A]; // 1.3.14.3.2.26
    let pbes2 = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x05, 0x0D]; // 1.2.840.113549.1.5.13
    assert!(has(&triple_des) && has(&sha1) && !has(&pbes2), "PFX algorithms changed");
}

fn tls_secret(certificate_pem: String, key_pem: String) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("tls.crt".to_string(), certificate_pem.into_bytes()),
        ("tls.key".to_string(), key_pem.into_bytes()),
    ])
}

fn tls_request() -> CertificateRequest {
    CertificateRequest {
        id: "master/ssis/masters/tls-abc".into(),
        source: CertificateRequestSource::FromTlsSecret { secret: "ssis/master-tls".into() },
    }
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

/// An RSA-2048 key pair and a self-signed certificate for it, as cert-manager would put them in a
/// `kubernetes.io/tls` Secret.
fn rsa_certificate() -> (rcgen::KeyPair, rcgen::Certificate) {
    let key_pair =
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("RSA key");
    let params = rcgen::CertificateParams::new(vec!["ssis-master.corp.example.com".to_string()]).expect("params");
    let certificate = params.self_signed(&key_pair).expect("self-signed");
    (key_pair, certificate)
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (what `openssl genrsa -traditional`
/// and older cert-manager versions write as "RSA PRIVATE KEY").
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    use x509_parser::der_parser::der::parse_der;
    let (_, info) = parse_der(pkcs8).expect("PKCS#8 DER");
    let fields = info.as_sequence().expect("PrivateKeyInfo is a SEQUENCE");
    fields[2].as_slice().expect("privateKey OCTET STRING").to_vec()
}

/// The private key the PFX carries, as PKCS#8 DER.
fn pfx_private_key(data: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let password = String::from_utf8(data[host_secret_keys::PFX_PASSWORD].clone()).expect("utf-8 password");
    let store =
        KeyStore::from_pkcs12(&data[host_secret_keys::PFX], &password, Pkcs12ImportPolicy::Strict).expect("PFX opens");
    let (_, chain) = store.private_key_chain().expect("the PFX carries the private key");
    chain.key().as_der().to_vec()
}

#[test]
fn tls_secret_with_an_rsa_key_is_converted_keeping_its_thumbprint() {
    let (key_pair, certificate) = rsa_certificate();
    let pkcs8 = key_pair.serialize_der();
    let pkcs1 = pkcs1_of(&pkcs8);
    for key_pem in [pem_block("PRIVATE KEY", &pkcs8), pem_block("RSA PRIVATE KEY", &pkcs1)] {
        let data = tls_secret(pem_block("CERTIFICATE", certificate.der()), key_pem.clone());
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let (issued, host_data) =
            certs::issue(&tls_request(), "ssis-cert-tls", Some(&data), now(), &mut rng).expect("converted");
        assert_eq!(issued.thumbprint, certs::thumbprint(certificate.der()));
        assert_eq!(host_data[host_secret_keys::CERTIFICATE_DER], certificate.der().to_vec());
        assert_eq!(issued.dns_names, vec!["ssis-master.corp.example.com".to_string()]);
        // PKCS#1 keys are re-encoded: the PFX always carries the same PKCS#8 key.
        assert_eq!(pfx_private_key(&host_data), pkcs8, "{key_pem:.30}");
    }
}

#[test]
fn tls_secret_whose_key_belongs_to_another_certificate_is_refused() {
    let (_, certificate) = rsa_certificate();
    let (other_key, _) = rsa_certificate();
    let data =
        tls_secret(pem_block("CERTIFICATE", certificate.der()), pem_block("PRIVATE KEY", &other_key.serialize_der()));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let error = certs::issue(&tls_request(), "x", Some(&data), now(), &mut rng).expect_err("mismatched pair");
    assert!(error.to_string().contains("does not belong to the certificate"), "{error}");
}

#[test]
fn tls_secret_with_a_non_rsa_key_is_refused_with_the_fix() {
    let key_pair = rcgen::KeyPair::generate().expect("ECDSA key");
    let certificate = rcgen::CertificateParams::new(vec!["ssis-master".to_string()])
        .expect("params")
        .self_signed(&key_pair)
        .expect("self-signed");
    let data =
        tls_secret(pem_block("CERTIFICATE", certificate.der()), pem_block("PRIVATE KEY", &key_pair.serialize_der()));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let error = certs::issue(&tls_request(), "x", Some(&data), now(), &mut rng).expect_err("EC keys are refused");
    let message = error.to_string();
    assert!(matches!(error, CertError::InvalidTlsSecret { .. }));
    assert!(message.contains("ssis/master-tls") && message.contains("RSA"), "{message}");
}

#[test]
fn tls_secret_without_keys_names_the_missing_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let error = certs::issue(&tls_request(), "x", Some(&BTreeMap::new()), now(), &mut rng).expect_err("empty Secret");
    assert!(error.to_string().contains("tls.crt"), "{error}");
}

#[test]
fn issued_certificate_survives_the_secret_annotation_round_trip() {
    let issued = ssis_operator::plan::IssuedCertificate {
        id: "worker/ssis/w/n/gen-1".into(),
        secret_name: "ssis-cert-1".into(),
        thumbprint: "A".repeat(40),
        not_before: now(),
        not_after: now(),
        dns_names: vec!["n".into(), "n.corp".into()],
        source_fingerprint: Some("f".into()),
    };
    let annotations = certs::secret_annotations(&issued);
    assert_eq!(certs::issued_from_annotations("ssis-cert-1", &annotations), Some(issued));
}
