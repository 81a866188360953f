//! Named properties: checks over generated input, too varied to write out as scenarios.
//!
//! A spec check names one (`property = "group-membership"`) and gives its parameters. Each
//! property reaches the server only through the [`Target`] and its control API, so it runs
//! against every target alike.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::Value;

use super::evidence::ExchangeLog;
use crate::driver::{Capabilities, Control, Target};

mod ccs;
mod keys;
mod lifetime;
mod membership;

use crate::wire::{HttpRequest, HttpResponse};
pub use keys::estimated_bits;

/// What a property run gets.
pub struct PropertyCx<'a> {
    pub target: &'a dyn Target,
    pub caps: &'a Capabilities,
    /// The check's parameters, rendered, over the profile's and rule's parameters.
    pub params: BTreeMap<String, Value>,
    pub seed: u64,
    /// Overrides the check's `cases` parameter when set.
    pub cases: Option<u32>,
    /// Distinguishes this run's group names from other runs' on a shared server.
    pub run_id: String,
    /// The check's exchanges (the target records into it); a search keeps only the last
    /// case's, so a failure shows the minimal sequence's.
    pub log: &'a ExchangeLog,
    pub mode: Mode,
    /// Set by a failed search: the shrunk sequence, as JSON.
    pub found: std::sync::Mutex<Option<Value>>,
}

/// What a sequence property does with its generator.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Search for a failing sequence and shrink it (proptest).
    #[default]
    Search,
    /// Run this one sequence (from a replay file) once.
    Replay(Value),
    /// Run the first `cases` generated sequences, whatever their outcome: the same sequences
    /// for any target with the same seed, for a differential run.
    Sample,
}

impl<'a> PropertyCx<'a> {
    pub fn new(target: &'a dyn Target, caps: &'a Capabilities, log: &'a ExchangeLog) -> PropertyCx<'a> {
        PropertyCx {
            target,
            caps,
            params: BTreeMap::new(),
            seed: 0,
            cases: None,
            run_id: "run".into(),
            log,
            mode: Mode::Search,
            found: std::sync::Mutex::new(None),
        }
    }

    fn control(&self) -> Control<'_> {
        Control { target: self.target, caps: self.caps }
    }

    fn param(&self, name: &str) -> Result<u64, String> {
        self.params
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("property parameter `{name}` must be a non-negative integer"))
    }

    fn cases(&self) -> Result<u32, String> {
        match self.cases {
            Some(c) => Ok(c),
            None => Ok(u32::try_from(self.param("cases")?).unwrap_or(u32::MAX)),
        }
    }
}

pub struct PropertyDef {
    pub name: &'static str,
    pub summary: &'static str,
    /// Control-API capabilities it uses.
    pub needs: &'static [&'static str],
    /// Parameters it reads (from the check, the rule or the profile).
    pub params: &'static [&'static str],
    /// It generates random sequences from the seed: whether it finds a bug may depend on
    /// the seed, so no fault may be caught by such a property alone.
    pub seeded: bool,
    pub run: fn(&PropertyCx<'_>) -> Result<(), String>,
}

pub const PROPERTIES: &[PropertyDef] = &[
    PropertyDef {
        name: "group-membership",
        summary: "random create/add/remove/send sequences on one group agree with a model of its members, cap included",
        needs: &["instances", "inbox"],
        params: &["max_members", "cases", "max_ops", "spare_instances"],
        seeded: true,
        run: membership::group_membership,
    },
    PropertyDef {
        name: "notification-keys-unguessable",
        summary: "notification keys are distinct and vary in enough positions to carry min_bits random bits",
        needs: &["instances"],
        params: &["samples", "min_bits"],
        seeded: false,
        run: keys::keys_unguessable,
    },
    PropertyDef {
        name: "message-lifetime",
        summary: "random interleavings of sends, connectivity changes, clock advances and re-registrations keep every lifetime invariant",
        needs: &["instances", "inbox", "connectivity", "clock", "reregister"],
        params: &[
            "cases",
            "max_ops",
            "short_ttl_seconds",
            "long_ttl_seconds",
            "throttle_grant_interval_seconds",
            "max_payload_bytes",
        ],
        seeded: true,
        run: lifetime::message_lifetime,
    },
    PropertyDef {
        name: "ccs-upstream",
        summary: "random interleavings of upstream messages, acks (on the right and the wrong connection), connects and closes keep the connection server's ack and resend rules",
        needs: &["instances", "upstream", "xmpp"],
        params: &["cases", "max_ops", "max_pending_per_connection"],
        seeded: true,
        run: ccs::ccs_upstream,
    },
];

pub fn find(name: &str) -> Option<&'static PropertyDef> {
    PROPERTIES.iter().find(|p| p.name == name)
}

/// The generator of one search worker: worker 0 draws what a single search would.
fn seed_rng(seed: u64, worker: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&worker.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// What a search worker found: the reason and shrunk sequence of a failure, or why it aborted.
type WorkerOutcome<T> = Result<(String, Vec<T>), String>;

/// A search runs its cases on this many workers, each with its own stream from the seed:
/// against a server that answers slowly, cases wait side by side rather than in a row. A
/// fixed number, so a seed means the same cases on any machine.
const SEARCH_WORKERS: u32 = 4;

fn exchange(cx: &PropertyCx<'_>, req: HttpRequest) -> Result<(HttpRequest, HttpResponse), String> {
    let resp = cx.target.exchange(&req).map_err(|e| e.to_string())?;
    Ok((req, resp))
}

fn server_request(method: &str, path: &str, sender: &crate::driver::Sender) -> HttpRequest {
    HttpRequest::new(method, path)
        .with_header("authorization", &format!("key={}", sender.key))
        .with_header("project_id", &sender.id)
}

fn run_sequences<T: std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned + Send>(
    cx: &PropertyCx<'_>,
    strategy: impl Strategy<Value = Vec<T>> + Sync,
    header: &str,
    case: impl Fn(&[T]) -> Result<(), String> + Sync,
) -> Result<(), String> {
    // Shrinking stops early by default (4 tries a case); a minimal sequence is worth more.
    let config = Config { cases: cx.cases()?, failure_persistence: None, max_shrink_iters: 1024, ..Config::default() };
    let show = |steps: &[T]| -> String {
        steps.iter().enumerate().map(|(i, s)| format!("  {}. {s:?}", i + 1)).collect::<Vec<_>>().join("\n")
    };
    match &cx.mode {
        Mode::Replay(sequence) => {
            let steps: Vec<T> = serde_json::from_value(sequence.clone())
                .map_err(|e| format!("the replay's sequence does not fit this property: {e}"))?;
            case(&steps).map_err(|reason| format!("{header}\n{}\n{reason}", show(&steps)))
        }
        Mode::Sample => {
            let mut runner = TestRunner::new_with_rng(config.clone(), seed_rng(cx.seed, 0));
            for _ in 0..config.cases {
                let steps = strategy.new_tree(&mut runner).map_err(|e| format!("generating: {e}"))?.current();
                // Disagreements with the harness's model are not the point here: the caller
                // compares what two servers answered.
                let _ = case(&steps);
            }
            Ok(())
        }
        Mode::Search => {
            // Each worker searches its share and shrinks its own failure; the lowest worker's
            // failure is reported, whichever finished first, so a seed gives one answer.
            let share = config.cases.div_ceil(SEARCH_WORKERS);
            let outcomes: Vec<Option<WorkerOutcome<T>>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..SEARCH_WORKERS)
                    .map(|k| {
                        let cases = share.min(config.cases.saturating_sub(share * k));
                        let config = Config { cases, ..config.clone() };
                        let (strategy, case) = (&strategy, &case);
                        scope.spawn(move || {
                            if cases == 0 {
                                return None;
                            }
                            let mut runner = TestRunner::new_with_rng(config, seed_rng(cx.seed, u64::from(k)));
                            match runner.run(strategy, |steps| {
                                cx.log.clear();
                                case(&steps).map_err(TestCaseError::fail)
                            }) {
                                Ok(()) => None,
                                Err(TestError::Fail(reason, steps)) => Some(Ok((reason.to_string(), steps))),
                                Err(TestError::Abort(why)) => Some(Err(format!("property aborted: {why}"))),
                            }
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_else(|_| Some(Err("a search worker panicked".into()))))
                    .collect()
            });
            match outcomes.into_iter().flatten().next() {
                None => Ok(()),
                Some(Err(why)) => Err(why),
                Some(Ok((reason, steps))) => {
                    *cx.found.lock().unwrap_or_else(|e| e.into_inner()) = serde_json::to_value(&steps).ok();
                    // Once more, so the log holds the minimal sequence's exchanges.
                    cx.log.clear();
                    let again = match case(&steps) {
                        Ok(()) => "\n(this sequence passed when run once more: the failure is intermittent)",
                        Err(_) => "",
                    };
                    Err(format!("{header}\n{}\n{reason}{again}", show(&steps)))
                }
            }
        }
    }
}
