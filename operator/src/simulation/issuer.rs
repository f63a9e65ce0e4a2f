//! The real certificate code ([`crate::certs::issue`]) driven by a seeded generator, so a simulated
//! world issues the same certificates on every run, and counts what it issued.

use std::sync::Mutex;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::controller::{CertificateIssuer, SecretData};
use crate::plan::{CertificateRequest, IssuedCertificate};

/// Issues real RSA certificates from a ChaCha20 generator seeded by the world.
pub struct SeededIssuer {
    rng: Mutex<ChaCha20Rng>,
    issued: Mutex<Vec<String>>,
}

impl SeededIssuer {
    pub fn new(seed: u64) -> Self {
        Self { rng: Mutex::new(ChaCha20Rng::seed_from_u64(seed)), issued: Mutex::new(Vec::new()) }
    }

    /// Ids of every certificate issued so far, in order (a restart must not re-issue).
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl CertificateIssuer for SeededIssuer {
    fn issue(
        &self,
        request: &CertificateRequest,
        secret_name: &str,
        tls_secret_data: Option<&SecretData>,
        now: jiff::Timestamp,
    ) -> Result<(IssuedCertificate, SecretData), String> {
        let mut rng = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let issued =
            crate::certs::issue(request, secret_name, tls_secret_data, now, &mut *rng).map_err(|e| e.to_string())?;
        self.issued.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(request.id.clone());
        Ok(issued)
    }
}
