//! Verdicts on an app server: the rules that bind the "3rd-party server" (`party =
//! "app-server"` in `specs/`), graded from the journal of what one sender exchanged with the
//! reference.
//!
//! Pure and incremental: [`Grading::feed`] takes each [`entry::Entry`] as it is journaled
//! and costs what that entry holds, never what the reference stores; [`Grading::verdicts`]
//! says, for every app-server rule, `passed`, `violated` (with the exchanges that show it)
//! or `not-exercised`. What a grader keeps is bounded (at most [`TRACKED`] ids, keys or
//! messages per rule and sender); past that, the oldest are forgotten and the verdict says so.
//!
//! The numbers come from the spec profile, the readings' own from each rule's `params`
//! ([`Rulebook::from_catalog`]): nothing here is a literal of the documents.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod body;
mod bounded;
pub mod entry;
pub mod events;
mod graders;
pub(crate) mod packing;

pub(crate) use bounded::Bounded;

use crate::catalog::{Catalog, Level, Path};
pub use entry::{Conn, Device, Entry, Facts, Stamp, What};
use events::{Event, Reader};
use graders::{Config, Kind, Routes, State};

/// The `schema` of a verdicts document; bumped on any incompatible change.
pub const SCHEMA: &str = "gcmspec-verdicts/1";

/// Ids, keys or messages one grader keeps per sender at most (the oldest go first).
pub const TRACKED: usize = 10_000;
/// Different messages' failures the retry-timing graders keep at one target: a newer failure
/// of another message does not hide an older one (an outage fails every message to a device,
/// and each is retried on its own), up to this many; past it the oldest is forgotten, and
/// counted in the rule's note.
pub const PER_TARGET: usize = 8;

/// Violations a verdict shows in full per rule (all are counted).
const SHOWN: usize = 20;

/// The documents' numbers the graders judge by, from a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbers {
    pub max_ttl_seconds: u64,
    pub default_ttl_seconds: u64,
    pub max_registration_ids: usize,
    pub max_payload_bytes: usize,
    pub max_payload_bytes_ios: Option<usize>,
    pub max_collapse_keys: usize,
    pub max_pending_per_connection: usize,
}

/// The app-server rules of a catalogue under one profile, each with its grader configured.
#[derive(Debug, Clone)]
pub struct Rulebook {
    pub rules: Vec<BookRule>,
    pub numbers: Numbers,
    routes: Routes,
}

#[derive(Debug, Clone)]
pub struct BookRule {
    pub id: String,
    pub title: String,
    pub level: Level,
    pub covers: Vec<Path>,
    config: Config,
}

impl Rulebook {
    /// Reads the app-server rules and their parameters; every problem at once.
    pub fn from_catalog(catalog: &Catalog, profile: &str) -> Result<Rulebook, String> {
        let p = catalog.profiles.get(profile).ok_or_else(|| format!("unknown profile `{profile}`"))?;
        let mut problems = Vec::new();
        let mut num = |name: &str| match p.params.get(name).and_then(|v| v.value.as_u64()) {
            Some(n) => n,
            None => {
                problems.push(format!("profile `{profile}` has no number `{name}`"));
                0
            }
        };
        let numbers = Numbers {
            max_ttl_seconds: num("max_ttl_seconds"),
            default_ttl_seconds: num("default_ttl_seconds"),
            max_registration_ids: num("max_registration_ids") as usize,
            max_payload_bytes: num("max_payload_bytes") as usize,
            max_payload_bytes_ios: p
                .params
                .get("max_payload_bytes_ios")
                .and_then(|v| v.value.as_u64())
                .map(|n| n as usize),
            max_collapse_keys: num("max_collapse_keys") as usize,
            max_pending_per_connection: num("max_pending_per_connection") as usize,
        };
        let mut rules = Vec::new();
        for rule in catalog.app_server_rules().filter(|r| r.profiles.iter().any(|x| x == profile)) {
            let grader = rule.grader.as_deref().unwrap_or_default();
            match Config::of(grader, &rule.params) {
                Ok(config) => rules.push(BookRule {
                    id: rule.id.clone(),
                    title: rule.title.clone(),
                    level: rule.level,
                    covers: rule.covers.clone(),
                    config,
                }),
                Err(why) => problems.push(format!("{}: rule[{}]: {why}", rule.location, rule.id)),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        let routes = Routes::of(rules.iter().map(|r| &r.config));
        Ok(Rulebook { rules, numbers, routes })
    }

    /// The bundled catalogue's, under its default profile.
    pub fn bundled() -> Rulebook {
        let catalog = crate::bundled::catalog().expect("the bundled specs are checked by the test suite");
        Rulebook::from_catalog(&catalog, crate::bundled::DEFAULT_PROFILE)
            .expect("the bundled app-server rules are checked by the test suite")
    }
}

/// One violation: what happened, and the journal entries that show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub message: String,
    /// Sequence numbers of the entries it cites (the journal's `seq`).
    pub entries: Vec<u64>,
    /// When it was seen (the sender's clock).
    pub at_ms: u64,
}

/// What one rule has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleLog {
    pub exercised: u64,
    pub violations: Vec<Violation>,
    pub violations_total: u64,
}

impl RuleLog {
    /// One more violation; its text and list of entries are made only if it is among those
    /// shown (an app server that breaks a rule at load pays for neither).
    pub(crate) fn violate(&mut self, at: Stamp, entries: &[u64], message: impl FnOnce() -> String) {
        self.violations_total += 1;
        if self.violations.len() < SHOWN {
            self.violations.push(Violation { message: message(), entries: entries.to_vec(), at_ms: at.at_ms });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    Violated,
    NotExercised,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleVerdict {
    pub id: String,
    pub title: String,
    pub level: Level,
    pub outcome: Outcome,
    /// How many times the app server met the situation the rule is about.
    pub exercised: u64,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub violations: Vec<Violation>,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub violations_total: u64,
    /// What is still open (a failure within its retry window, a message awaiting its ack),
    /// or what was forgotten past the grader's bound.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub passed: usize,
    pub violated: usize,
    pub not_exercised: usize,
    /// Violated rules at level MUST: what fails a test.
    pub must_violated: usize,
}

/// Every app-server rule's verdict for one sender (`GET .../senders/{id}/verdicts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    pub schema: String,
    pub sender_id: String,
    /// The journal they were graded from: entries seen, and how many of them its cap no
    /// longer shows (they were graded all the same).
    pub journal: JournalCount,
    pub summary: Summary,
    pub rules: Vec<RuleVerdict>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalCount {
    pub entries: u64,
    pub dropped: u64,
    /// Entries of an earlier journal of this sender's that was evicted to make room for
    /// other senders: its exchanges are gone, its violations are carried over, and what its
    /// graders held open (stale ids, failures to retry, copies to ack) is forgotten.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub evicted_entries: u64,
}

/// How a violation carried over an eviction begins, and where the first one it counts is told.
const CARRIED: &str = "before this sender's journal was evicted (to make room for other senders' journals), ";
const CARRIED_FIRST: &str = "; the first: ";

/// What is kept of a sender's journal once it is evicted: how long it was, and the rules it
/// had violated (how often, and the first violation's text), so that a verdict never turns
/// clean by losing its evidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Remains {
    pub entries: u64,
    pub violated: Vec<(String, u64, String)>,
}

impl Remains {
    pub fn of(v: &Verdicts) -> Remains {
        Remains {
            entries: v.journal.entries + v.journal.evicted_entries,
            violated: v
                .rules
                .iter()
                .filter(|r| r.outcome == Outcome::Violated)
                .map(|r| {
                    // The first violation itself, not an earlier eviction's account of it.
                    let first = r.violations.first().map(|x| x.message.as_str()).unwrap_or_default();
                    let first = match first.strip_prefix(CARRIED) {
                        Some(carried) => carried.split_once(CARRIED_FIRST).map_or(carried, |(_, f)| f),
                        None => first,
                    }
                    .to_string();
                    (r.id.clone(), r.violations_total.max(1), first)
                })
                .collect(),
        }
    }
}

impl Verdicts {
    pub fn rule(&self, id: &str) -> Option<&RuleVerdict> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The rules violated, by id.
    pub fn violated(&self) -> Vec<&str> {
        self.rules.iter().filter(|r| r.outcome == Outcome::Violated).map(|r| r.id.as_str()).collect()
    }

    /// Each MUST violation, a line each: empty when the app server kept every MUST it met.
    pub fn must_violations(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.outcome == Outcome::Violated && r.level == Level::Must)
            .flat_map(|r| r.violations.iter().map(move |v| format!("{}: {}", r.id, v.message)))
            .collect()
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Carries over what an evicted journal of the same sender had found.
    pub fn carry(&mut self, before: &Remains) {
        self.journal.evicted_entries += before.entries;
        for (id, count, first) in &before.violated {
            let Some(r) = self.rules.iter_mut().find(|r| &r.id == id) else { continue };
            r.violations.insert(
                0,
                Violation {
                    message: format!("{CARRIED}{count} violation(s){CARRIED_FIRST}{first}"),
                    entries: Vec::new(),
                    at_ms: 0,
                },
            );
            r.violations_total += count;
            r.outcome = Outcome::Violated;
        }
        let mut summary = Summary::default();
        for r in &self.rules {
            match r.outcome {
                Outcome::Passed => summary.passed += 1,
                Outcome::Violated => summary.violated += 1,
                Outcome::NotExercised => summary.not_exercised += 1,
            }
            summary.must_violated += usize::from(r.outcome == Outcome::Violated && r.level == Level::Must);
        }
        self.summary = summary;
    }
}

/// One sender's grading: the events read so far and each rule's state and log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Grading {
    reader: Reader,
    states: Vec<State>,
    logs: Vec<RuleLog>,
}

impl Grading {
    /// Grades one more entry (entries come in journal order); `prepared`, the send the
    /// adapter already parsed, spares parsing the entry's bodies again.
    pub fn feed(&mut self, book: &Rulebook, entry: &Entry, prepared: Option<events::Prepared>) {
        self.fit(book);
        for event in self.reader.read(entry, prepared) {
            let at = stamp_of(&event);
            // Each rule's state and log are its own: settling them all, then offering the
            // event to the rules that read it, is settling and feeding rule by rule.
            for &i in book.routes.settling() {
                self.states[i].settle(&book.rules[i].config, &book.numbers, at, &mut self.logs[i]);
            }
            for &i in book.routes.readers(Kind::of(&event)) {
                self.states[i].feed(&book.rules[i].config, &book.numbers, &event, &mut self.logs[i]);
            }
        }
    }

    /// Every rule's verdict as of `now`: what has waited past its time is judged then.
    pub fn verdicts(&mut self, book: &Rulebook, sender_id: &str, now: Stamp, journal: JournalCount) -> Verdicts {
        self.fit(book);
        let mut summary = Summary::default();
        let mut rules = Vec::new();
        for (i, rule) in book.rules.iter().enumerate() {
            self.states[i].settle(&rule.config, &book.numbers, now, &mut self.logs[i]);
            let log = &self.logs[i];
            let outcome = if log.violations_total > 0 {
                Outcome::Violated
            } else if log.exercised > 0 {
                Outcome::Passed
            } else {
                Outcome::NotExercised
            };
            match outcome {
                Outcome::Passed => summary.passed += 1,
                Outcome::Violated => summary.violated += 1,
                Outcome::NotExercised => summary.not_exercised += 1,
            }
            summary.must_violated += usize::from(outcome == Outcome::Violated && rule.level == Level::Must);
            rules.push(RuleVerdict {
                id: rule.id.clone(),
                title: rule.title.clone(),
                level: rule.level,
                outcome,
                exercised: log.exercised,
                violations: log.violations.clone(),
                violations_total: log.violations_total,
                note: self.states[i].note(),
            });
        }
        Verdicts { schema: SCHEMA.into(), sender_id: sender_id.to_string(), journal, summary, rules }
    }

    /// Until when (machine clock, ms) an awaited ack may still be in flight (see
    /// [`State::in_flight_until`]); `None` when nothing is.
    pub fn in_flight_until(&self, book: &Rulebook) -> Option<u64> {
        self.states.iter().zip(&book.rules).filter_map(|(s, r)| s.in_flight_until(&r.config)).max()
    }

    /// One state and log per rule, in the rulebook's order (a grading restored from a state
    /// file made under the same rules has them already).
    fn fit(&mut self, book: &Rulebook) {
        if self.states.len() != book.rules.len() {
            self.states = book.rules.iter().map(|r| State::new(&r.config)).collect();
            self.logs = vec![RuleLog::default(); book.rules.len()];
        }
    }
}

fn stamp_of(event: &Event) -> Stamp {
    match event {
        Event::Sent(s) => s.stamp,
        Event::Answered(_, a) => a.stamp,
        Event::Group(g) => g.stamp,
        Event::Lookup { stamp, .. }
        | Event::Opened { stamp, .. }
        | Event::Closed { stamp, .. }
        | Event::Replied { stamp, .. }
        | Event::ToAck { stamp, .. }
        | Event::AppAck { stamp, .. }
        | Event::Draining { stamp, .. } => *stamp,
    }
}
