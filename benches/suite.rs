//! Wall time of the default conformance run, in-process and over loopback HTTP and XMPP.
//!
//! `cargo bench --bench suite` (a release build). Prints figures; asserts nothing about
//! speed. Snapshots are off so that only the protocol work is timed. The checks without
//! XMPP are also timed alone: XMPP checks include deliberate 200 ms listens for silence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gcmspec::harness::{self, Options};
use gcmspec::reference::{Config, Reference};
use gcmspec::target::{Capabilities, HttpTarget, InProcess, Target};

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
    let in_process: Arc<dyn Target> = Arc::new(InProcess::new(Reference::new(Config::bundled())));
    report("in-process, all", time_suite(in_process.clone(), false));
    report("in-process, without XMPP", time_suite(in_process, true));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(Reference::start_with(Config::bundled())).expect("bind");
    let target: Arc<dyn Target> = Arc::new(
        HttpTarget::new(&server.url(), HttpTarget::DEFAULT_TIMEOUT).expect("url").with_xmpp(server.xmpp_address()),
    );
    report("loopback HTTP+XMPP, all", time_suite(target.clone(), false));
    report("loopback HTTP, without XMPP", time_suite(target, true));
    drop(server);
}
