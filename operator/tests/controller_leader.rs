//! Leader election on a Lease, with time driven by a manual clock (no sleeps).

mod controller_support;

use std::sync::Arc;
use std::time::Duration;

use controller_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use ssis_operator::controller::{LeaderElector, LeaseSettings, LeaseStep, ManualClock};

fn elector(client: &kube::Client, identity: &str, clock: &ManualClock) -> LeaderElector {
    LeaderElector::new(
        client.clone(),
        LeaseSettings::new("ssis-operator-leader", OPERATOR_NS, identity),
        Arc::new(clock.clone()),
    )
}

async fn holder(client: &kube::Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), OPERATOR_NS).get("ssis-operator-leader").await.unwrap();
    lease.spec.unwrap().holder_identity
}

#[tokio::test]
async fn one_leader_among_two_contenders_and_takeover_after_expiry() {
    let client = fake_client(vec![]).await;
    let clock = ManualClock::new(start_time());
    let a = elector(&client, "pod-a", &clock);
    let b = elector(&client, "pod-b", &clock);

    assert_eq!(a.step().await.unwrap(), LeaseStep::Leading);
    assert!(matches!(b.step().await.unwrap(), LeaseStep::Following { .. }));
    assert_eq!(holder(&client).await.as_deref(), Some("pod-a"));

    // The leader renews in time: the follower never takes over.
    for _ in 0..5 {
        clock.advance(Duration::from_secs(10));
        assert_eq!(a.step().await.unwrap(), LeaseStep::Leading);
        assert!(matches!(b.step().await.unwrap(), LeaseStep::Following { .. }));
    }

    // The leader stops renewing (crashed): after a lease duration the follower takes over.
    clock.advance(Duration::from_secs(10));
    assert!(matches!(b.step().await.unwrap(), LeaseStep::Following { .. }), "not expired yet");
    clock.advance(Duration::from_secs(6));
    assert_eq!(b.step().await.unwrap(), LeaseStep::Leading);
    assert_eq!(holder(&client).await.as_deref(), Some("pod-b"));
    let lease = Api::<Lease>::namespaced(client.clone(), OPERATOR_NS).get("ssis-operator-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));

    // The old leader comes back and follows.
    assert!(matches!(a.step().await.unwrap(), LeaseStep::Following { holder: Some(h) } if h == "pod-b"));
    assert!(a.past_renew_deadline(), "the old leader's own renewals are long past");
}

#[tokio::test]
async fn release_on_shutdown_hands_over_without_waiting_for_expiry() {
    let client = fake_client(vec![]).await;
    let clock = ManualClock::new(start_time());
    let a = elector(&client, "pod-a", &clock);
    let b = elector(&client, "pod-b", &clock);
    assert_eq!(a.step().await.unwrap(), LeaseStep::Leading);
    assert!(matches!(b.step().await.unwrap(), LeaseStep::Following { .. }));
    a.release().await.unwrap();
    assert_eq!(holder(&client).await, None);
    assert_eq!(b.step().await.unwrap(), LeaseStep::Leading);
    // Releasing a lease someone else holds changes nothing.
    a.release().await.unwrap();
    assert_eq!(holder(&client).await.as_deref(), Some("pod-b"));
}

#[tokio::test]
async fn concurrent_takeover_is_decided_by_resource_version() {
    let client = fake_client(vec![]).await;
    let clock = ManualClock::new(start_time());
    let a = elector(&client, "pod-a", &clock);
    assert_eq!(a.step().await.unwrap(), LeaseStep::Leading);
    let b = elector(&client, "pod-b", &clock);
    let c = elector(&client, "pod-c", &clock);
    assert!(matches!(b.step().await.unwrap(), LeaseStep::Following { .. }));
    assert!(matches!(c.step().await.unwrap(), LeaseStep::Following { .. }));
    clock.advance(Duration::from_secs(16));
    let (rb, rc) = tokio::join!(b.step(), c.step());
    let leaders = [rb.unwrap(), rc.unwrap()].iter().filter(|s| **s == LeaseStep::Leading).count();
    assert_eq!(leaders, 1, "exactly one contender wins the expired lease");
}
