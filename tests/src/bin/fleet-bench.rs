//! Fleet benchmark: a generated fleet of master groups with worker pools, converged in the
//! simulated world, then timed. Prints figures; asserts nothing about time.
//!
//! `cargo run --release -p ssis-tests --bin fleet-bench -- [groups] [workers-per-group] [max-rounds]`
//! (default 50 × 20 = 1,000 workers, 1,100 hosts).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ssis_operator::simulation::manifests::fleet;
use ssis_operator::simulation::{World, WorldOptions};

/// Counts live heap bytes and their peak, so the operator's own peak can be measured around one pass.
struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        pointer
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// CPU time of this thread (the single-threaded runtime runs everything on it), from schedstat.
fn thread_cpu() -> std::time::Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos: u64 = text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    std::time::Duration::from_nanos(nanos)
}

fn vm_hwm_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (groups, workers, max_rounds) = (number(0, 50), number(1, 20), number(2, 60) as u64);
    println!("command: cargo run --release -p ssis-tests --bin fleet-bench -- {groups} {workers} {max_rounds}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(bench(groups, workers, max_rounds));
}

async fn bench(groups: usize, workers: usize, max_rounds: u64) {
    let manifests = fleet(groups, workers);
    let started = Instant::now();
    let mut world = World::new(&manifests, WorldOptions::default()).await.expect("world");
    println!(
        "fleet: {groups} master groups x {workers} workers = {} workers, {} hosts (built in {:.1} s)",
        groups * workers,
        world.nodes.len(),
        started.elapsed().as_secs_f64()
    );

    let (wall, cpu) = (Instant::now(), thread_cpu());
    let convergence = world.run_until_converged(max_rounds).await;
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    match &convergence {
        Ok(c) => {
            // Issuing (RSA key generation) is real operator work; reported apart from the rest.
            let issuing = world.issuer.issuing_time();
            println!(
                "converge: {} rounds, {:.1} s wall, {:.1} s CPU; {} certificates issued in {:.1} s wall, \
                 the rest (operator, agents, simulated world) {:.1} s wall",
                c.rounds,
                wall.as_secs_f64(),
                cpu.as_secs_f64(),
                world.issuer.issued().len(),
                issuing.as_secs_f64(),
                wall.saturating_sub(issuing).as_secs_f64()
            )
        }
        Err(why) => {
            let head: String = why.lines().filter(|l| !l.starts_with("    ")).take(40).collect::<Vec<_>>().join("\n");
            println!(
                "converge: NOT converged after {max_rounds} rounds ({:.1} s wall, {:.1} s of it issuing {} certificates)\n{head}",
                wall.as_secs_f64(),
                world.issuer.issuing_time().as_secs_f64(),
                world.issuer.issued().len()
            );
        }
    }

    // One full operator resync over the converged fleet.
    let writes_before: u64 = world.api.ledger().writes.values().sum();
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let live_before = LIVE.load(Ordering::Relaxed);
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let resync = world.operator_pass().await;
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    let operator_peak = PEAK.load(Ordering::Relaxed) - live_before;
    let api_writes = world.api.ledger().writes.values().sum::<u64>() - writes_before;
    match resync {
        Ok(report) => println!(
            "resync (reconcile_world once): {:.0} ms CPU, {:.0} ms wall, writes {} (API {api_writes}, SQL {}), \
             heap growth during the pass {:.1} MiB",
            ms(cpu),
            ms(wall),
            report.writes(),
            report.sql_actions,
            mib(operator_peak)
        ),
        Err(error) => println!("resync failed: {error}"),
    }

    // One full round (operator, every agent, network, SQL ingest).
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let round = world.step().await;
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    println!(
        "full round (operator + {} agents + network): {:.0} ms CPU, {:.0} ms wall, writes {} (+{} heartbeats)",
        world.nodes.len(),
        ms(cpu),
        ms(wall),
        round.writes(),
        round.heartbeat_writes()
    );

    // The pure planner on the fleet's input.
    let input = world.plan_input().await.expect("plan input");
    let mut timings = Vec::new();
    for _ in 0..5 {
        let (wall, cpu) = (Instant::now(), thread_cpu());
        let output = ssis_operator::plan::plan(&input);
        timings.push((ms(thread_cpu() - cpu), ms(wall.elapsed())));
        std::hint::black_box(output);
    }
    timings.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "plan (pure planner, {} HostConfigs): median {:.1} ms CPU, min {:.1} ms CPU",
        input.host_configs.len(),
        timings[2].0,
        timings[0].0
    );
    println!("peak memory: process VmHWM {:.0} MiB (API server, hosts, SQL model and operator together)", vm_hwm_mib());
}
