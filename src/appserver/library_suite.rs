//! A client library judged case by case (`gcmspec client`): the app-server cases a library
//! can break, each run against a fresh driver process and a fresh sender, read into the same
//! checks, trials and report that `gcmspec run` makes.
//!
//! A case's outcome is its rule's verdict on that sender's journal: `passed`, `failed`
//! (violated, with the violations, the exchanges and the driver's conversation),
//! `not-exercised` (the library never did what the rule is about: it refused, say), or
//! `unsupported` (the driver does not offer what the case needs). A case that cannot run
//! (the driver exits, is late, the library raised where it had to act) fails saying so.

use std::sync::{Arc, Mutex};

use super::Client;
use super::cases::{self, Case, Env};
use super::contract::Hello;
use super::driven_library::{DriverCommand, Transcript};
use crate::harness::evidence::Evidence;
use crate::harness::{self, CheckRun};
use crate::verdicts::{Outcome, Rulebook};

/// Lines of the driver's conversation a failure's message shows (its end).
const SHOWN_LINES: usize = 24;

pub struct LibrarySuite {
    pub env: Env,
    pub driver: DriverCommand,
    pub hello: Hello,
    pub book: Rulebook,
}

impl LibrarySuite {
    /// The cases a library can break: every app-server case but the caller's own.
    pub fn cases(&self) -> Vec<Case> {
        cases::catalogue(&self.book).into_iter().filter(|c| c.caller_only.is_none()).collect()
    }

    /// What the driver lacks for `case`, said for a person.
    pub fn lacks(&self, case: &Case) -> Option<String> {
        let missing: Vec<&str> =
            case.needs.iter().copied().filter(|n| !self.hello.supports.iter().any(|s| s == n)).collect();
        (!missing.is_empty()).then(|| {
            format!(
                "the driver does not offer {} (it offers: {})",
                missing.join(", "),
                if self.hello.supports.is_empty() { "nothing".into() } else { self.hello.supports.join(", ") }
            )
        })
    }

    /// The cases as the harness's checks, for its trials, progress and report.
    pub fn checks(self: &Arc<Self>) -> Vec<harness::Case> {
        self.cases()
            .into_iter()
            .map(|case| {
                let level =
                    self.book.rules.iter().find(|r| r.id == case.rule).map_or(crate::catalog::Level::Must, |r| r.level);
                let run: Result<harness::CaseFn, String> = match self.lacks(&case) {
                    Some(why) => Err(why),
                    None => {
                        let (suite, case) = (self.clone(), case.clone());
                        Ok(Arc::new(move || suite.judge(&case)))
                    }
                };
                harness::Case {
                    name: case.name.clone(),
                    rule_id: case.rule.clone(),
                    paths: vec![case.path],
                    level,
                    seeded: false,
                    run,
                }
            })
            .collect()
    }

    /// Runs one case against a fresh driver, and grades it.
    pub fn judge(&self, case: &Case) -> CheckRun {
        let transcript: Mutex<Option<Transcript>> = Mutex::default();
        let mut start = |sender: &crate::driver::Sender| -> Result<Box<dyn Client>, String> {
            let library = self.driver.start(self.env.target.clone(), sender, &case.name)?;
            *transcript.lock().unwrap_or_else(|e| e.into_inner()) = Some(library.transcript());
            Ok(Box::new(library))
        };
        let ended = case.run(&self.env, &mut start);
        let said: Vec<String> = transcript
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default();
        let conversation = || {
            let from = said.len().saturating_sub(SHOWN_LINES);
            let mut out = String::from("\nthe driver was asked (>) and answered (<):");
            if from > 0 {
                out.push_str(&format!("\n  ... {from} earlier lines"));
            }
            for line in &said[from..] {
                out.push_str("\n  ");
                out.push_str(line);
            }
            out
        };
        let evidence = Evidence {
            exchanges: ended.entries.iter().map(harness::report::exchange_of).collect(),
            ..Evidence::default()
        };
        let result = if let Some(why) = &ended.unsupported {
            Err(format!("unsupported: the library cannot be asked this: {why}"))
        } else if let Some(e) = &ended.error {
            Err(format!("the case could not run: {e}{}", conversation()))
        } else {
            match &ended.verdict {
                None => Err(format!("no verdict on {}{}", case.rule, conversation())),
                Some(v) => match v.outcome {
                    Outcome::Passed => Ok(()),
                    Outcome::NotExercised => Err(format!(
                        "not exercised: the library never did what {} is about{}{}",
                        case.rule,
                        v.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
                        conversation()
                    )),
                    Outcome::Violated => {
                        let mut lines: Vec<String> =
                            v.violations.iter().map(|x| format!("  - {}", x.message)).collect();
                        if v.violations_total > v.violations.len() as u64 {
                            lines.push(format!("  ... {} violations in all", v.violations_total));
                        }
                        let others: Vec<&String> = ended.violated.iter().filter(|r| **r != case.rule).collect();
                        let also = if others.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "\nalso violated meanwhile: {}",
                                others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                            )
                        };
                        Err(format!("{} violated:\n{}{also}{}", case.rule, lines.join("\n"), conversation()))
                    }
                },
            }
        };
        CheckRun { result, evidence, replay: None }
    }
}
