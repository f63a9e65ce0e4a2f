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

/// Counts live heap bytes and the peak of the operator's share. Every block carries a one-byte tag in
/// a header: allocated while the simulated API server serves a request
/// ([`ssis_operator::simulation::api::in_api_server`]) or by anyone else. A block is credited back to
/// whoever allocated it, so a response body the API server allocates and the operator's client
/// frees stays the API server's.
struct TaggedAllocator;

const OPERATOR: usize = 0;
const API_SERVER: usize = 1;
static LIVE: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static OPERATOR_PEAK: AtomicUsize = AtomicUsize::new(0);

/// The header is one alignment unit (at least 16 bytes) in front of the block, so the block keeps
/// the alignment it asked for; the tag is its last byte.
fn with_header(layout: Layout) -> (Layout, usize) {
    // A power of two (alignments are), so the header keeps the block aligned.
    let offset = layout.align().max(16);
    (Layout::from_size_align(layout.size() + offset, offset).expect("layout with header"), offset)
}

// SAFETY: blocks come from the system allocator with a header in front; the pointer handed out is
// `offset` bytes in, aligned as requested, and `dealloc` undoes exactly that. `realloc` and
// `alloc_zeroed` use the trait's defaults, which go through these two.
unsafe impl GlobalAlloc for TaggedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (full, offset) = with_header(layout);
        let base = unsafe { System.alloc(full) };
        if base.is_null() {
            return base;
        }
        let tag = if ssis_operator::simulation::api::in_api_server() { API_SERVER } else { OPERATOR };
        let block = unsafe { base.add(offset) };
        unsafe { block.sub(1).write(tag as u8) };
        let live = LIVE[tag].fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        if tag == OPERATOR {
            OPERATOR_PEAK.fetch_max(live, Ordering::Relaxed);
        }
        block
    }
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let (full, offset) = with_header(layout);
        let tag = usize::from(unsafe { block.sub(1).read() });
        LIVE[tag].fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(block.sub(offset), full) };
    }
}

#[global_allocator]
static ALLOCATOR: TaggedAllocator = TaggedAllocator;

/// CPU time of this thread (the single-threaded runtime runs everything on it), from schedstat.
fn thread_cpu() -> std::time::Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos: u64 = text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    std::time::Duration::from_nanos(nanos)
}

/// Peak resident set size of this process (`VmHWM`) in MiB.
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
    let writes_before: u64 = world.api.ledger().writes.values().sum::<u64>();
    let live_before = LIVE[OPERATOR].load(Ordering::Relaxed);
    let api_server_before = LIVE[API_SERVER].load(Ordering::Relaxed);
    OPERATOR_PEAK.store(live_before, Ordering::Relaxed);
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let resync = world.operator_pass().await;
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    // No host runs during the pass, so the growth is the operator's working set; the simulated SQL
    // model's answers count as the operator's, as a real operator holds its query results.
    let operator_peak = OPERATOR_PEAK.load(Ordering::Relaxed) - live_before;
    let api_server_left = LIVE[API_SERVER].load(Ordering::Relaxed).saturating_sub(api_server_before);
    let api_writes = world.api.ledger().writes.values().sum::<u64>() - writes_before;
    match resync {
        Ok(report) => println!(
            "resync (reconcile_world once): {:.0} ms CPU, {:.0} ms wall, writes {} (API {api_writes}, SQL {}), \
             operator heap peak during the pass {:.1} MiB (API server allocations excluded; {:.1} MiB of them still live)",
            ms(cpu),
            ms(wall),
            report.writes(),
            report.sql_actions,
            mib(operator_peak),
            mib(api_server_left)
        ),
        Err(error) => println!("resync failed: {error}"),
    }

    // One full round (operator, every agent, network, SQL ingest).
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let round = world.step().await;
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    println!(
        "full round (operator + {} agents + network): {:.0} ms CPU, {:.0} ms wall, writes {} (+{} Lease renewals)",
        world.nodes.len(),
        ms(cpu),
        ms(wall),
        round.writes(),
        round.liveness_writes()
    );

    // The pure planner on the fleet's input.
    let unit = world.units().into_iter().next().expect("a unit");
    let input = world.plan_input(&unit).await.expect("plan input");
    // FLEET_BENCH_PLAN_RUNS raises the count, e.g. to profile the planner with `perf record`.
    let runs = std::env::var("FLEET_BENCH_PLAN_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(21usize).max(1);
    let (mut cpu_ms, mut wall_ms) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (wall, cpu) = (Instant::now(), thread_cpu());
        let output = ssis_operator::plan::plan(&input);
        cpu_ms.push(ms(thread_cpu() - cpu));
        wall_ms.push(ms(wall.elapsed()));
        std::hint::black_box(output);
    }
    cpu_ms.sort_by(f64::total_cmp);
    wall_ms.sort_by(f64::total_cmp);
    // Some kernels account thread CPU time in scheduler ticks (4 ms); the wall clock is exact and,
    // single-threaded, close to CPU time on an idle machine.
    println!(
        "plan (pure planner, {} HostConfigs, {runs} runs): median {:.1} ms wall (min {:.1}), {:.1} ms CPU",
        input.host_configs.len(),
        wall_ms[runs / 2],
        wall_ms[0],
        cpu_ms[runs / 2],
    );
    // The operator keeps no object cache between passes (it lists every pass; watches only
    // trigger), so its peak is its started process plus one pass's working set.
    println!(
        "operator peak memory: heap peak during a resync {:.1} MiB (bytes requested by the operator; add the \
         started operator process, measured separately in docs/testing.md)",
        mib(operator_peak)
    );
    println!(
        "process peak: VmHWM {:.0} MiB (API server, {} hosts, SQL model and operator in one process)",
        vm_hwm_mib(),
        world.nodes.len()
    );
}
