//! The real certificate code ([`crate::certs::issue`]) driven by a seeded generator for serial
//! numbers and PFX passwords, and counts what it issued. The RSA keys come from aws-lc-rs, which
//! takes no seed, so thumbprints differ between runs; no test compares them across worlds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::ChaCha20Rng;

use crate::controller::{CertificateIssuer, SecretData};
use crate::plan::{CertificateRequest, IssuedCertificate};

/// Issues real RSA certificates (keys from aws-lc-rs, which takes no seed), with serials and
/// passwords from a ChaCha20 generator seeded by the world's seed and the certificate id: the same
/// serials on every run, whatever order (or parallelism) the certificates are issued in.
pub struct SeededIssuer {
    seed: u64,
    issued: Mutex<Vec<String>>,
    /// Wall time spent in `certs::issue` (RSA key generation dominates it), for the benchmark.
    issuing: Mutex<Duration>,
}

impl SeededIssuer {
    pub fn new(seed: u64) -> Self {
        Self { seed, issued: Mutex::new(Vec::new()), issuing: Mutex::new(Duration::ZERO) }
    }

    /// Ids of every certificate issued so far, in order (a restart must not re-issue).
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Total wall time spent issuing so far.
    pub fn issuing_time(&self) -> Duration {
        *self.issuing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let mut seed = [0u8; 32];
        let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{}/{}", self.seed, request.id).as_bytes());
        seed.copy_from_slice(&digest);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let started = Instant::now();
        let issued = crate::certs::issue(request, secret_name, tls_secret_data, now, &mut rng);
        *self.issuing.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += started.elapsed();
        let issued = issued.map_err(|e| e.to_string())?;
        self.issued.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(request.id.clone());
        Ok(issued)
    }
}
