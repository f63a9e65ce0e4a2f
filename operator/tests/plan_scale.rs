//! Planning a large pool: correctness at scale, with the time per pass printed as a figure
//! (`cargo test -p ssis-operator --test plan_scale -- --nocapture`); nothing here is timed.

mod plan_support;

use plan_support::*;
use ssis_crds::WorkerPhase;

#[test]
fn a_pool_of_300_nodes_enrolls_every_node_and_trusts_each_worker_on_every_master() {
    const POOL: usize = 300;
    let mut input = input();
    input.workers = vec![pool("etl", ("pool", "etl"))];
    for index in 0..POOL {
        let mut node = windows_node(&format!("etl-{index:03}"));
        node.labels.insert("pool".into(), "etl".into());
        input.nodes.push(node);
    }
    let mut world = World::new(input);
    let mut figures = Vec::new();
    let mut output = world.pass();
    for _ in 0..4 {
        let started = std::time::Instant::now();
        output = world.pass();
        figures.push(started.elapsed());
    }
    println!("plan passes over {POOL} pool nodes + 2 masters: {figures:?}");
    let status = &output.worker_statuses["ssis/etl"];
    assert_eq!(status.nodes.len(), POOL);
    assert!(
        status.nodes.iter().all(|n| n.phase == WorkerPhase::Registering),
        "no SQL observation: every node waits to register"
    );
    for master in ["sql-1", "sql-2"] {
        let trusted =
            output.host_configs[master].certificates.iter().filter(|c| c.name.starts_with("worker-trust-")).count();
        assert_eq!(trusted, POOL, "every pool worker's certificate in Root on {master}");
    }
}
