//! Leader election on a `coordination.k8s.io/v1` Lease: acquire, renew, release, every update
//! guarded by resourceVersion. Expiry is judged the client-go way: a lease held by someone else
//! is expired when its record has not changed for `lease_duration` on *our* clock, so clock skew
//! between replicas does not matter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use super::{Clock, is_conflict};

/// Lease parameters.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// The leader steps down when it could not renew for this long.
    pub renew_deadline: Duration,
    /// Interval between attempts.
    pub retry_period: Duration,
}

impl LeaseSettings {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Outcome of one election step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// We hold the lease (acquired or renewed).
    Leading,
    /// Someone else holds a valid lease.
    Following { holder: Option<String> },
}

#[derive(Debug, Default)]
struct Observed {
    /// (holder, renewTime, resourceVersion) last seen.
    record: Option<(Option<String>, Option<String>, Option<String>)>,
    /// Our clock when that record was first seen.
    seen_at: Option<jiff::Timestamp>,
    /// Our clock at the last successful acquire/renew.
    last_renewed: Option<jiff::Timestamp>,
}

/// One contender for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    clock: Arc<dyn Clock>,
    observed: Mutex<Observed>,
}

fn to_signed(duration: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX)
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaseSettings, clock: Arc<dyn Clock>) -> Self {
        let api = Api::namespaced(client, &settings.namespace);
        Self { api, settings, clock, observed: Mutex::new(Observed::default()) }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spec(&self, now: jiff::Timestamp, acquire_time: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: Some(acquire_time.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew. API errors other than conflicts are returned; the caller
    /// decides (a leader keeps leading until its renew deadline).
    pub async fn step(&self) -> Result<LeaseStep, kube::Error> {
        let now = self.clock.now();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.settings.name.clone()), ..Default::default() },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(self.won(now)),
                Err(error) if is_conflict(&error) => Ok(LeaseStep::Following { holder: None }),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder.as_deref() == Some(self.settings.identity.as_str()) {
            lease.spec = Some(self.spec(now, spec.acquire_time.clone(), transitions));
            return self.replace(&lease, now).await;
        }
        if holder.is_some() && !self.expired(&lease, now) {
            return Ok(LeaseStep::Following { holder });
        }
        // Released or expired: take over.
        lease.spec = Some(self.spec(now, None, transitions.saturating_add(1)));
        self.replace(&lease, now).await
    }

    /// Whether someone else's lease has not been renewed for a lease duration, by our clock.
    fn expired(&self, lease: &Lease, now: jiff::Timestamp) -> bool {
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (
            spec.holder_identity.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
            lease.metadata.resource_version.clone(),
        );
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.settings.lease_duration);
        let mut observed = self.observed();
        if observed.record.as_ref() != Some(&record) {
            observed.record = Some(record);
            observed.seen_at = Some(now);
        }
        let seen_at = observed.seen_at.unwrap_or(now);
        now >= seen_at.saturating_add(to_signed(duration)).unwrap_or(seen_at)
    }

    async fn replace(&self, lease: &Lease, now: jiff::Timestamp) -> Result<LeaseStep, kube::Error> {
        match self.api.replace(&self.settings.name, &PostParams::default(), lease).await {
            Ok(_) => Ok(self.won(now)),
            // Someone else wrote first; the next step re-reads.
            Err(error) if is_conflict(&error) => Ok(LeaseStep::Following { holder: None }),
            Err(error) => Err(error),
        }
    }

    fn won(&self, now: jiff::Timestamp) -> LeaseStep {
        self.observed().last_renewed = Some(now);
        LeaseStep::Leading
    }

    /// Whether a leader whose renewals fail has passed its renew deadline and must step down.
    pub fn past_renew_deadline(&self) -> bool {
        let now = self.clock.now();
        let last = self.observed().last_renewed;
        last.is_none_or(|last| now >= last.saturating_add(to_signed(self.settings.renew_deadline)).unwrap_or(last))
    }

    /// Give the lease up (on shutdown) so another replica takes over without waiting for expiry.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else { return Ok(()) };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(self.clock.now()));
        lease.spec = Some(spec);
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(error) if is_conflict(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Run the election until `shutdown` turns true, publishing leadership on `leading`; releases
    /// the lease on the way out.
    pub async fn run(self, leading: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let is_leader = *leading.borrow();
            let now_leading = match self.step().await {
                Ok(LeaseStep::Leading) => true,
                Ok(LeaseStep::Following { holder }) => {
                    if is_leader {
                        tracing::warn!(?holder, "lost the leader lease");
                    }
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, "leader election step failed");
                    is_leader && !self.past_renew_deadline()
                }
            };
            if now_leading != is_leader {
                tracing::info!(leading = now_leading, identity = %self.settings.identity, "leadership changed");
                let _ = leading.send(now_leading);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.retry_period) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        let _ = leading.send(false);
        if let Err(error) = self.release().await {
            tracing::warn!(%error, "releasing the leader lease failed");
        }
    }
}
