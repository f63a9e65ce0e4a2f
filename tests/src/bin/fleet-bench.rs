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
    let quiet_seconds = std::env::var("FLEET_BENCH_QUIET_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60u64);
    println!("command: cargo run --release -p ssis-tests --bin fleet-bench -- {groups} {workers} {max_rounds}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let world = runtime.block_on(converge(groups, workers, max_rounds));
    let mut world = world;
    runtime.block_on(passes(&mut world));
    quiet_minute(&runtime, &world, quiet_seconds);
    println!(
        "process peak: VmHWM {:.0} MiB (API server, {} hosts, SQL model and operator in one process)",
        vm_hwm_mib(),
        world.nodes.len()
    );
}

async fn converge(groups: usize, workers: usize, max_rounds: u64) -> World {
    let manifests = fleet(groups, workers);
    let started = Instant::now();
    let mut world = World::new(&manifests, WorldOptions::default()).await.expect("world");
    println!(
        "fleet: {groups} master groups x {workers} workers = {} workers, {} hosts (built in {:.1} s)",
        groups * workers,
        world.nodes.len(),
        started.elapsed().as_secs_f64()
    );
    let wall = Instant::now();
    match world.run_until_converged(max_rounds).await {
        Ok(c) => {
            // Issuing (RSA key generation, on the blocking pool) is real operator work.
            let issuing = world.issuer.issuing_time();
            println!(
                "converge: {} rounds, {:.1} s wall; {} certificates issued ({:.1} s of RSA work over all cores)",
                c.rounds,
                wall.elapsed().as_secs_f64(),
                world.issuer.issued().len(),
                issuing.as_secs_f64(),
            )
        }
        Err(why) => {
            let head: String = why.lines().filter(|l| !l.starts_with("    ")).take(40).collect::<Vec<_>>().join("\n");
            println!(
                "converge: NOT converged after {max_rounds} rounds ({:.1} s wall)\n{head}",
                wall.elapsed().as_secs_f64()
            );
        }
    }
    world
}

/// The operator's stores, one full operator pass, and re-planning one deployment.
async fn passes(world: &mut World) {
    // The operator's stores hold every object it watches: measured as the heap a fresh set takes.
    let before = LIVE[OPERATOR].load(Ordering::Relaxed);
    let (stores, mut writers) = ssis_operator::controller::stores::Stores::writable();
    writers.replace(world.snapshot(), &world.options.operator_namespace);
    let stores_bytes = LIVE[OPERATOR].load(Ordering::Relaxed).saturating_sub(before);
    drop((stores, writers));

    // Every unit and the orphan sweep once over the converged fleet.
    let writes_before: u64 = world.api.ledger().writes.values().sum::<u64>();
    world.sync_stores();
    let live_before = LIVE[OPERATOR].load(Ordering::Relaxed);
    OPERATOR_PEAK.store(live_before, Ordering::Relaxed);
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let resync = world.operator_pass().await;
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    let pass_peak = OPERATOR_PEAK.load(Ordering::Relaxed) - live_before;
    let api_writes = world.api.ledger().writes.values().sum::<u64>() - writes_before;
    match resync {
        Ok(report) => println!(
            "every unit once (resync): {:.0} ms CPU, {:.0} ms wall, writes {} (API {api_writes}, SQL {})",
            ms(cpu),
            ms(wall),
            report.writes(),
            report.sql_actions,
        ),
        Err(error) => println!("resync failed: {error}"),
    }
    println!(
        "operator heap: stores {:.1} MiB + one full resync's working set {:.1} MiB = {:.1} MiB (bytes the operator \
         requested; API server allocations excluded)",
        mib(stores_bytes),
        mib(pass_peak),
        mib(stores_bytes + pass_peak)
    );

    // Re-plan one deployment after its spec changes: one pool gets a new tag.
    let units = world.units();
    let unit = units.first().cloned().expect("a unit");
    let (namespace, name) = unit.split_once('/').expect("namespace/name");
    let pools: Vec<ssis_crds::ScaleOutWorker> = world.list().await;
    if let Some(pool) = pools.iter().find(|w| w.metadata.namespace.as_deref() == Some(namespace)) {
        let mut changed = serde_json::to_value(pool).expect("json");
        changed["apiVersion"] = "ssis.sqlops.io/v1alpha1".into();
        changed["kind"] = "ScaleOutWorker".into();
        changed["spec"]["tags"] = serde_json::json!(["benchmark"]);
        if let Some(fields) = changed["metadata"].as_object_mut() {
            fields.retain(|k, _| k == "name" || k == "namespace");
        }
        world.apply_object(changed).await.expect("spec change");
    }
    let runs = std::env::var("FLEET_BENCH_PLAN_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(21usize).max(1);
    let mut dereference_ms = vec![];
    let mut plan_ms = vec![];
    let mut input = None;
    for _ in 0..runs {
        let wall = Instant::now();
        let fresh = world.plan_input(&unit).await.expect("plan input");
        dereference_ms.push(ms(wall.elapsed()));
        let wall = Instant::now();
        std::hint::black_box(ssis_operator::plan::plan(&fresh));
        plan_ms.push(ms(wall.elapsed()));
        input = Some(fresh);
    }
    dereference_ms.sort_by(f64::total_cmp);
    plan_ms.sort_by(f64::total_cmp);
    let input = input.expect("input");
    println!(
        "re-plan deployment {name} after a spec change ({} units in the fleet; {} HostConfigs, {} workers in the unit; \
         {runs} runs): plan median {:.2} ms (min {:.2}), dereference from the stores + SQL observation median {:.2} ms",
        units.len(),
        input.host_configs.len(),
        input.workers.len(),
        plan_ms[runs / 2],
        plan_ms[0],
        dereference_ms[runs / 2],
    );
}

/// The long-running operator (reflectors, applier, role poller) for `seconds` of real time over the
/// converged fleet, while every node's agent renews its Lease every 30 s from another thread.
fn quiet_minute(runtime: &tokio::runtime::Runtime, world: &World, seconds: u64) {
    use ssis_operator::controller::runner::{RunnerConfig, run};
    use ssis_operator::simulation::api::Component;
    let nodes: Vec<String> = world.nodes.keys().cloned().collect();
    let namespace = world.options.operator_namespace.clone();
    let client = world.client(Component::Agent);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Liveness keeps ticking: every agent's Lease every 30 s, spread over the 30 s.
    let ticker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let states: Vec<ssis_agent::runtime::AgentState> = nodes.iter().map(|_| Default::default()).collect();
                let gap = std::time::Duration::from_secs(30) / nodes.len().max(1) as u32;
                while !stop.load(Ordering::Relaxed) {
                    for (node, state) in nodes.iter().zip(&states) {
                        let config = ssis_agent::runtime::RuntimeConfig {
                            node_name: node.clone(),
                            namespace: namespace.clone(),
                            agent: Default::default(),
                            drift_interval: std::time::Duration::from_secs(2),
                        };
                        let _ = ssis_agent::runtime::renew_lease(&client, &config, state, jiff::Timestamp::now()).await;
                        tokio::time::sleep(gap).await;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            });
        })
    };
    let ctx = world.new_operator_context();
    let config = RunnerConfig { metrics_addr: "127.0.0.1:0".parse().expect("address"), ..RunnerConfig::default() };
    let settle = std::time::Duration::from_secs(30);
    let counts = |world: &World| {
        let mut by_class = std::collections::BTreeMap::new();
        for (key, n) in &world.api.ledger().requests {
            *by_class.entry((key.component.clone(), key.verb.clone(), key.resource_path())).or_insert(0u64) += n;
        }
        by_class
    };
    let report = std::sync::Mutex::new(None);
    runtime
        .block_on(run(ctx, config, async {
            tokio::time::sleep(settle).await;
            let (requests, logins) = (counts(world), world.catalog.logins());
            let (cpu, api_cpu) = (thread_cpu(), ssis_operator::simulation::api::api_server_cpu_on_this_thread());
            tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
            let cpu = (thread_cpu() - cpu)
                .saturating_sub(ssis_operator::simulation::api::api_server_cpu_on_this_thread() - api_cpu);
            *report.lock().unwrap() = Some((requests, counts(world), logins, world.catalog.logins(), cpu));
        }))
        .expect("runner");
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    let Some((before, after, logins, logins_after, cpu)) = report.into_inner().unwrap() else { return };
    println!("quiet window: {seconds} s of real time after a {} s start-up, liveness ticking", settle.as_secs());
    let mut other = 0;
    for (class, n) in &after {
        let delta = n - before.get(class).copied().unwrap_or(0);
        if delta > 0 {
            println!("  requests {:<8} {:<6} {:<28} {delta}", class.0, class.1, class.2);
            if class.2 != "leases" {
                other += delta;
            }
        }
    }
    let renewals: u64 = after
        .iter()
        .filter(|(c, _)| c.2 == "leases" && c.1 == "patch")
        .map(|(c, n)| n - before.get(c).copied().unwrap_or(0))
        .sum();
    println!(
        "  API requests other than Lease renewals: {other}; Lease renewals: {renewals} ({:.2} per node per 30 s)",
        renewals as f64 / world.nodes.len() as f64 / (seconds as f64 / 30.0)
    );
    println!(
        "  operator CPU: {:.0} ms in {seconds} s = {:.2} % of a core (its thread, minus the in-process API server's share); \
         SQL logins: {}",
        ms(cpu),
        100.0 * cpu.as_secs_f64() / seconds as f64,
        logins_after - logins
    );
}
