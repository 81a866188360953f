//! The whole test suite, one binary (`cargo test` runs it; it takes the usual libtest flags).
//!
//! Modules, each a group of trials:
//! - `conformance`: every rule's checks against the in-process reference and against the
//!   reference over loopback HTTP and XMPP, both compared with the committed snapshots; the
//!   XMPP checks again over TLS; and the `gcm-2013` profile in-process. `grading`: a target
//!   that answers as real servers did passes on observed outcomes, and fails with `--strict`.
//! - `selftest`: the reference with each rule's fault switched on fails that rule.
//! - `interop`: real clients drive the reference: `fcm-device-group` (crates.io), `node-gcm`
//!   and `@xmpp/client` (npm, plain and TLS).
//! - `cli`: the `gcmspec` binary as a user runs it: exit codes, `serve` + `run --target`,
//!   baselines, JSON and JUnit reports, replay files (including ones an earlier gcmspec
//!   wrote, in `tests/data/replays/`), differential runs, the progress bar.
//! - `closed_output`: every command that prints, with its stdout closed before it starts,
//!   runs to its end and exits as it would have (a run, a replay, a diff on their verdicts).
//! - `failure_messages`: what a failure says: which side of its bound a probe was on, what
//!   a normalized answer's error classes stand for.
//! - `report`: the HTML report opened in headless Chromium, checked against the JSON report.
//! - `robustness`: nothing a client sends (HTTP or XMPP) makes the server answer 5xx or hang;
//!   against a server that hangs, resets, answers garbage or a huge body, every check ends
//!   within its timeout with a clear failure and the run completes.
//! - `exposure`: who can reach `gcmspec serve`: loopback unless told, a control API a web
//!   page cannot drive and a token can close, keys from the OS, a private certificate file.
//! - `tenancy`: what one peer may hold of a shared reference: the login deadline on a peer
//!   that never reads, each sender's share of the XMPP connections, room for an app server
//!   among peers that never log in (an evicted TLS handshake goes at once), caps on
//!   senders, devices and stored messages.
//! - `state`: `serve --state FILE` after `kill -9`: senders, devices, groups, stored and
//!   received messages (HTTP and XMPP) come back; new credentials are never old ones.
//! - `readme`: README's walk-through figures are what the program gives.
//! - `specs`: spec-file errors name file, line and field; the bundled files are all of specs/.
//! - `app_servers`: every app-server rule on every path it covers, under both clocks: the
//!   reference client passes each case, its fault for the case fails exactly that rule, and
//!   each legal variant passes.
//! - `clients`: client libraries through their drivers (`gcmspec client`): the reference
//!   client behind the driver contract passes every case and each fault fails its rule alone;
//!   node-gcm, python-gcm and the slixmpp CCS sample are held to their recorded verdicts;
//!   docs/client-matrix.md is generated from them; broken drivers are said and ended.
//! - `verdict_readings`: the app-server rules at their edges: legal app servers the verdicts
//!   must not blame, settled verdicts, the bounds of the clock and of scripts.
//! - `group_readings`: the group rules on every way of breaking them: an operation without
//!   its key however it is missing, a send to a group's name in any field on any path.
//! - `agreement`: where the reference and a grader must agree (a value the reference refuses
//!   is one the rule's grader blames), over generated values on every path.
//! - `journals`: what a sender's journal keeps, served: XMPP writes in the wire's order,
//!   stanzas cut as HTTP bodies are, caps taken at their word.

use libtest_mimic::{Arguments, Failed, Trial};

mod agreement;
mod app_servers;
mod cli;
mod clients;
mod closed_output;
mod conformance;
mod exposure;
mod failure_messages;
mod group_readings;
mod interop;
mod journals;
mod readme;
mod report;
mod robustness;
mod selftest;
mod specs;
mod state;
mod tenancy;
mod verdict_readings;

/// A trial from a closure that returns a description of what went wrong.
pub fn trial(name: &str, f: impl FnOnce() -> Result<(), String> + Send + 'static) -> Trial {
    Trial::test(name, move || f().map_err(Failed::from))
}

/// Runs an async trial body on a runtime of its own.
pub fn block_on(f: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(f)
}

fn main() {
    let args = Arguments::from_args();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    let mut trials = Vec::new();
    trials.extend(conformance::trials(&runtime));
    trials.extend(conformance::grading_trials());
    trials.extend(selftest::trials());
    trials.extend(interop::trials());
    trials.extend(cli::trials());
    trials.extend(closed_output::trials());
    trials.extend(failure_messages::trials());
    trials.extend(report::trials());
    trials.extend(robustness::trials());
    trials.extend(robustness::misbehaving_trials());
    trials.extend(specs::trials());
    trials.extend(readme::trials());
    trials.extend(tenancy::trials());
    trials.extend(exposure::trials());
    trials.extend(state::trials());
    trials.extend(app_servers::trials(&runtime));
    trials.extend(verdict_readings::trials());
    trials.extend(group_readings::trials());
    trials.extend(journals::trials());
    trials.extend(agreement::trials());
    trials.extend(clients::trials(&runtime));
    let conclusion = libtest_mimic::run(&args, trials);
    // Servers started for the HTTP trials stop with the runtime.
    drop(runtime);
    conclusion.exit();
}
