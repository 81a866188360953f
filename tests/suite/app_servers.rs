//! App servers judged by the reference's verdicts: every app-server rule on every path its
//! text covers, under the virtual clock and the machine's, over loopback HTTP and XMPP.
//!
//! For each case (`gcmspec::appserver::cases`): the project's reference client passes it
//! (its rule `passed`, no rule violated); the same client with the case's fault fails it on
//! exactly that rule; and each legal variant of the client passes it too.

use std::sync::Arc;
use std::time::Duration;

use gcmspec::appserver::cases::{self, Case, Env};
use gcmspec::appserver::reference_client::{ReferenceClient, Wait};
use gcmspec::appserver::{AppFault, AppVariant, Client};
use gcmspec::driver::{Capabilities, Control, HttpTarget, Sender, Target};
use gcmspec::reference::{ClockKind, Config, Reference, RunningReference};
use gcmspec::verdicts::{Outcome, Rulebook};
use libtest_mimic::Trial;

use crate::trial;

/// What the client is in a trial.
#[derive(Clone, Copy)]
enum As {
    Correct,
    Faulty(AppFault),
    Variant(AppVariant),
}

struct Server {
    /// Kept for the trials' lifetime: dropping it stops the server.
    _running: RunningReference,
    target: Arc<dyn Target>,
    caps: Capabilities,
    clock: ClockKind,
}

pub fn trials(runtime: &tokio::runtime::Runtime) -> Vec<Trial> {
    let book = Rulebook::bundled();
    let mut out = vec![trial("app-servers::every-rule-has-cases", {
        let book = book.clone();
        move || every_rule_has_cases(&book)
    })];
    for clock in [ClockKind::Virtual, ClockKind::Wall] {
        let config = Config { clock, ..Config::bundled() };
        let running = runtime.block_on(Reference::start_with(config)).expect("binding 127.0.0.1:0");
        let target = HttpTarget::new(&running.url(), HttpTarget::DEFAULT_TIMEOUT).expect("a loopback URL");
        let target: Arc<dyn Target> = Arc::new(target.with_xmpp(running.xmpp_address()));
        let caps = Capabilities::probe(&*target).expect("the reference's capabilities");
        let server = Arc::new(Server { _running: running, target, caps, clock });
        let clock_name = if clock == ClockKind::Wall { "wall" } else { "virtual" };
        for case in cases::catalogue(&book) {
            let mut kinds = vec![As::Correct, As::Faulty(case.fault)];
            // The variants once, on the clock that costs no waiting.
            if clock == ClockKind::Virtual {
                kinds.extend(AppVariant::ALL.iter().map(|v| As::Variant(*v)));
            }
            for kind in kinds {
                let who = match kind {
                    As::Correct => "correct".to_string(),
                    As::Faulty(f) => format!("fault {}", f.name()),
                    As::Variant(v) => format!("variant {}", v.name()),
                };
                let name = format!("app-servers::{}::{clock_name}::{who}", case.name);
                let (server, case, book) = (server.clone(), case.clone(), book.clone());
                out.push(trial(&name, move || judge(&server, &case, &book, kind)));
            }
        }
    }
    out
}

fn every_rule_has_cases(book: &Rulebook) -> Result<(), String> {
    let missing = cases::missing(book);
    if !missing.is_empty() {
        return Err(format!("app-server rules without cases: {}", missing.join(", ")));
    }
    // Each rule's cases must break it with a fault of that very rule.
    for case in cases::catalogue(book) {
        if case.fault.rule_id() != case.rule {
            return Err(format!("{}: its fault {} breaks {}", case.name, case.fault.name(), case.fault.rule_id()));
        }
    }
    Ok(())
}

fn judge(server: &Server, case: &Case, book: &Rulebook, kind: As) -> Result<(), String> {
    let env = Env { target: server.target.clone(), caps: server.caps.clone(), numbers: book.numbers.clone() };
    let mut make = |sender: &Sender| -> Result<Box<dyn Client>, String> {
        let wait = waiter(server, sender);
        let client = ReferenceClient::new(server.target.clone(), sender.clone(), book.numbers.clone(), wait);
        Ok(Box::new(match kind {
            As::Correct => client,
            As::Faulty(f) => client.with_fault(f),
            As::Variant(v) => client.with_variant(v),
        }))
    };
    let ended = case.run(&env, &mut make);
    if let Some(e) = &ended.error {
        return Err(format!("the case could not run: {e}"));
    }
    if let Some(why) = &ended.unsupported {
        return Err(format!("the reference client cannot do it: {why}"));
    }
    let verdict = ended.verdict.as_ref().ok_or("no verdict for the case's rule")?;
    let detail = || serde_json::to_string_pretty(&ended.verdicts).unwrap_or_default();
    match kind {
        As::Correct | As::Variant(_) => {
            if verdict.outcome != Outcome::Passed || !ended.violated.is_empty() {
                return Err(format!(
                    "a correct client: expected {} passed and nothing violated, got {:?}, violated {:?}\n{}",
                    case.rule,
                    verdict.outcome,
                    ended.violated,
                    detail()
                ));
            }
        }
        As::Faulty(f) => {
            if ended.violated != [case.rule.as_str()] {
                return Err(format!(
                    "the fault {} should violate {} alone, violated {:?}\n{}",
                    f.name(),
                    case.rule,
                    ended.violated,
                    detail()
                ));
            }
        }
    }
    Ok(())
}

/// How the client waits: on the virtual clock by advancing its sender's clock, on the
/// machine's by sleeping.
fn waiter(server: &Server, sender: &Sender) -> Wait {
    match server.clock {
        ClockKind::Wall => Arc::new(std::thread::sleep),
        ClockKind::Virtual => {
            let (target, caps, sender) = (server.target.clone(), server.caps.clone(), sender.id.clone());
            Arc::new(move |d: Duration| {
                let control = Control { target: &*target, caps: &caps };
                let _ = control.advance_clock_ms(&sender, d.as_millis() as u64);
            })
        }
    }
}
