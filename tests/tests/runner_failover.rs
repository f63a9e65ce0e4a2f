//! The long-running operator (`controller::runner::run`: reflectors, kube-runtime's applier, the
//! role poller) against a converged simulated world, on tokio's paused clock: an availability-group
//! failover starts the unit's follow-up within 10 s without any API event, and a quiet operator
//! sends the API server nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::Api;
use ssis_crds::SsisdbAvailabilityGroup;
use ssis_operator::controller::runner::{RunnerConfig, run};
use ssis_operator::simulation::api::Component;
use ssis_tests::converged_examples;

fn config() -> RunnerConfig {
    RunnerConfig {
        leader: None,
        metrics_addr: "127.0.0.1:0".parse().expect("address"),
        debounce: Duration::from_millis(500),
        role_poll: Duration::from_secs(5),
        ..Default::default()
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_availability_group_failover_starts_its_follow_up_within_ten_seconds() {
    let world = converged_examples().await;
    let ctx = world.new_operator_context();
    let groups: Api<SsisdbAvailabilityGroup> = Api::all(world.client(Component::User));
    let measured = Arc::new(Mutex::new(None));
    let result = measured.clone();
    let scenario = async {
        // The runner lists, watches and reconciles every unit once; the role poller records.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let primary = |groups: Vec<SsisdbAvailabilityGroup>| {
            groups.into_iter().next().and_then(|g| g.status).and_then(|s| s.primary_replica)
        };
        assert_eq!(primary(groups.list(&Default::default()).await.unwrap().items).as_deref(), Some("WIN-SQL-1"));
        let started = tokio::time::Instant::now();
        world.fail_over_availability_group("WIN-SQL-2").await.expect("failover");
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if primary(groups.list(&Default::default()).await.unwrap().items).as_deref() == Some("WIN-SQL-2") {
                *result.lock().unwrap() = Some(started.elapsed());
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the failover was never followed");
        }
    };
    run(ctx, config(), scenario).await.expect("runner");
    let elapsed = measured.lock().unwrap().expect("measured");
    println!("AG failover noticed and its status written after {:.1} s (simulated)", elapsed.as_secs_f64());
    assert!(elapsed <= Duration::from_secs(10), "follow-up started after {elapsed:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_quiet_operator_sends_the_api_server_nothing_and_sql_no_login() {
    let world = converged_examples().await;
    let ctx = world.new_operator_context();
    let observed = Arc::new(Mutex::new(None));
    let result = observed.clone();
    let scenario = async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let before = (world.api.ledger().requests_by("operator"), world.catalog.logins());

        // Four quiet minutes: no change, no failover (the role poller reads SQL over pooled
        // connections; watches are renewed every 30 minutes).
        tokio::time::sleep(Duration::from_secs(240)).await;
        let after = (world.api.ledger().requests_by("operator"), world.catalog.logins());

        *result.lock().unwrap() = Some((before, after));
    };
    run(ctx, config(), scenario).await.expect("runner");
    let ((requests, logins), (requests_after, logins_after)) = observed.lock().unwrap().expect("observed");
    assert_eq!(requests_after, requests, "API requests in four quiet minutes");
    assert_eq!(logins_after, logins, "SQL logins in four quiet minutes");
}
