//! Wall time of the default conformance run, in-process and over loopback HTTP and XMPP.
//!
//! `cargo bench --bench suite` (a release build). Prints figures; asserts nothing about
//! speed. Snapshots are off so that only the protocol work is timed. The checks without
//! XMPP are also timed alone: XMPP checks include deliberate 200 ms listens for silence.
//! Last, runs against a slow server (every HTTP answer 2 ms late; side by side, then one at a
//! time like a single-threaded server), with the checks that take longest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gcmspec::driver::{Capabilities, HttpTarget, InProcess, Target};
use gcmspec::harness::{self, Options};
use gcmspec::reference::{Config, Reference};

// The allocator `gcmspec run` runs with, so that these figures are what it spends.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 10;

fn time_suite(target: Arc<dyn Target>, only_http: bool) -> (usize, Vec<Duration>) {
    let catalog = Arc::new(gcmspec::bundled::catalog().expect("bundled specs"));
    let caps = Arc::new(Capabilities::probe(target.as_ref()).expect("probe"));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut times = Vec::new();
    let mut count = 0;
    for round in 0..ROUNDS {
        let options = Arc::new(Options { run_id: format!("bench{round}"), ..Options::new("fcm") });
        let mut cases = harness::cases(&catalog, target.clone(), caps.clone(), &options);
        if only_http {
            cases.retain(|c| !c.name.contains("xmpp"));
        }
        count = cases.len();
        let start = Instant::now();
        let results = harness::run_cases(&cases, threads);
        times.push(start.elapsed());
        if let Some((name, Err(e))) = results.iter().find(|(_, r)| r.is_err()) {
            panic!("{name} failed during the benchmark: {e}");
        }
    }
    times.sort();
    (count, times)
}

/// Each check of the in-process run timed alone, one after another: the slowest bound the
/// run's wall time from below, however many threads share the rest.
fn slowest_checks(target: Arc<dyn Target>) {
    let catalog = Arc::new(gcmspec::bundled::catalog().expect("bundled specs"));
    let caps = Arc::new(Capabilities::probe(target.as_ref()).expect("probe"));
    let options = Arc::new(Options { run_id: "slowest".into(), ..Options::new("fcm") });
    let cases = harness::cases(&catalog, target, caps, &options);
    let mut times: Vec<(Duration, String)> = cases
        .iter()
        .map(|case| {
            let start = Instant::now();
            let results = harness::run_cases(std::slice::from_ref(case), 1);
            assert!(results[0].1.is_ok(), "{} failed during the benchmark", case.name);
            (start.elapsed(), case.name.clone())
        })
        .collect();
    times.sort_by(|a, b| b.cmp(a));
    let total: Duration = times.iter().map(|(d, _)| *d).sum();
    println!("  each check alone, one after another: {:.1} ms in all; the slowest:", total.as_secs_f64() * 1000.0);
    for (d, name) in times.iter().take(8) {
        println!("    {:>7.1} ms  {name}", d.as_secs_f64() * 1000.0);
    }
}

fn report(label: &str, (checks, times): (usize, Vec<Duration>)) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<28} {checks} checks  min {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  ({ROUNDS} rounds)",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}

fn main() {
    let rules = gcmspec::bundled::catalog().expect("bundled specs").rules.len();
    println!("default conformance run, {rules} rules, profile fcm");
    // As `gcmspec run` makes it: nothing journaled, since no app server is judged.
    let in_process: Arc<dyn Target> = Arc::new(InProcess::new(Reference::new(Config::bundled().without_journal())));
    report("in-process, all", time_suite(in_process.clone(), false));
    slowest_checks(in_process.clone());
    report("in-process, without XMPP", time_suite(in_process, true));
    // `cargo bench --bench suite -- in-process` stops here (for a profiler).
    if std::env::args().skip(1).any(|a| a == "in-process") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(Reference::start_with(Config::bundled())).expect("bind");
    let target: Arc<dyn Target> = Arc::new(
        HttpTarget::new(&server.url(), HttpTarget::DEFAULT_TIMEOUT).expect("url").with_xmpp(server.xmpp_address()),
    );
    report("loopback HTTP+XMPP, all", time_suite(target.clone(), false));
    report("loopback HTTP, without XMPP", time_suite(target, true));
    drop(server);
    slow_server(&runtime, false);
    slow_server(&runtime, true);
}

/// One run against a server that answers each request 2 ms late, one at a time: what
/// dominates is the number of requests on each check's path, not CPU.
fn slow_server(runtime: &tokio::runtime::Runtime, one_at_a_time: bool) {
    let latency = Duration::from_millis(2);
    let config = Config { latency, one_at_a_time, ..Config::bundled() };
    let server = runtime.block_on(Reference::start_with(config)).expect("bind");
    let target: Arc<dyn Target> = Arc::new(
        HttpTarget::new(&server.url(), HttpTarget::DEFAULT_TIMEOUT).expect("url").with_xmpp(server.xmpp_address()),
    );
    let catalog = Arc::new(gcmspec::bundled::catalog().expect("bundled specs"));
    let caps = Arc::new(Capabilities::probe(target.as_ref()).expect("probe"));
    let options = Arc::new(Options { run_id: "slow".into(), ..Options::new("fcm") });
    let cases = harness::cases(&catalog, target, caps, &options);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    let timed = harness::parallel_map(&cases, threads, |case| {
        let t = Instant::now();
        let ok = case.run.as_ref().map(|f| f().result.is_ok()).unwrap_or(false);
        (case.name.clone(), t.elapsed(), ok)
    });
    let total = start.elapsed();
    let failed: Vec<&String> = timed.iter().filter(|(_, _, ok)| !ok).map(|(n, _, _)| n).collect();
    assert!(failed.is_empty(), "checks failed against the slow server: {failed:?}");
    let sum: Duration = timed.iter().map(|(_, d, _)| *d).sum();
    println!(
        "slow server ({} ms a request, {}): {} checks, wall {:.1} s ({threads} threads), sum of checks {:.1} s",
        latency.as_millis(),
        if one_at_a_time { "one at a time" } else { "side by side" },
        timed.len(),
        total.as_secs_f64(),
        sum.as_secs_f64()
    );
    let mut slowest = timed;
    slowest.sort_by_key(|(_, d, _)| std::cmp::Reverse(*d));
    for (name, d, _) in slowest.iter().take(6) {
        println!("    {:>6.2} s  {name}", d.as_secs_f64());
    }
}
