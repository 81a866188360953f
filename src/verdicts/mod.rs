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

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod body;
pub mod entry;
pub mod events;
mod graders;

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

/// A map that keeps its newest [`TRACKED`] entries, and says whether it forgot any.
///
/// Insertion order is kept in a queue of (insertion number, key): a key removed and inserted
/// again has a new number, and the queue's older mention of it is stale (skipped, and
/// compacted away once stale mentions are most of the queue), so every operation costs O(1)
/// amortized however often a key comes and goes.
///
/// Keyed by text (ids, names) or by number (a send's `seq`, a message's fingerprint): a state
/// file has both as text, as it had when every key was text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Key, V: Serialize", deserialize = "K: Key, V: Deserialize<'de>"))]
pub(crate) struct Bounded<V, K = String> {
    map: HashMap<K, (u64, V)>,
    #[serde(with = "keys_as_text")]
    order: VecDeque<(u64, K)>,
    next: u64,
    pub forgot: u64,
}

/// What a [`Bounded`] may be keyed by.
pub(crate) trait Key:
    std::hash::Hash + Eq + Clone + std::fmt::Display + std::str::FromStr + Serialize + serde::de::DeserializeOwned
{
}

impl Key for String {}
impl Key for u64 {}

/// A [`Bounded`]'s order with its keys as text, whatever their type.
mod keys_as_text {
    use std::collections::VecDeque;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, K: super::Key>(order: &VecDeque<(u64, K)>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(order.iter().map(|(n, k)| (n, k.to_string())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, K: super::Key>(d: D) -> Result<VecDeque<(u64, K)>, D::Error> {
        let text = Vec::<(u64, String)>::deserialize(d)?;
        let key = |k: &str| k.parse().map_err(|_| serde::de::Error::custom(format!("not a key of this map: {k:?}")));
        text.into_iter().map(|(n, k)| Ok((n, key(&k)?))).collect()
    }
}

impl<V, K: Key> Default for Bounded<V, K> {
    fn default() -> Self {
        Bounded { map: HashMap::new(), order: VecDeque::new(), next: 0, forgot: 0 }
    }
}

impl<V, K: Key> Bounded<V, K> {
    pub fn get<Q: std::hash::Hash + Eq + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.get(k).map(|(_, v)| v)
    }

    pub fn get_mut<Q: std::hash::Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.get_mut(k).map(|(_, v)| v)
    }

    fn live(&self, (n, k): &(u64, K)) -> bool {
        self.map.get(k).is_some_and(|(m, _)| m == n)
    }

    /// Inserts `v` under `k`; past the bound, the oldest entry is forgotten (and returned,
    /// for a caller that indexes what it holds).
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.map.get_mut(&k) {
            // Already there: the value changes, its place in the order does not.
            Some(slot) => slot.1 = v,
            None => {
                self.next += 1;
                self.map.insert(k.clone(), (self.next, v));
                self.order.push_back((self.next, k));
            }
        }
        let mut forgotten = None;
        while self.map.len() > TRACKED {
            match self.order.pop_front() {
                Some(e) if self.live(&e) => {
                    forgotten = self.map.remove(&e.1).map(|(_, v)| v);
                    self.forgot += 1;
                }
                Some(_) => {}
                None => break,
            }
        }
        self.compact();
        forgotten
    }

    /// Drops stale mentions once they are most of the order, so that a walk of the order
    /// costs what the map holds, not what it once held.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len().max(64) {
            let map = &self.map;
            self.order.retain(|(n, k)| map.get(k).is_some_and(|(m, _)| m == n));
        }
    }

    /// Iterates the live entries, oldest first.
    pub fn iter_ordered(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order.iter().filter_map(|(n, k)| match self.map.get(k) {
            Some((m, v)) if m == n => Some((k, v)),
            _ => None,
        })
    }

    /// Removes and returns the oldest entries while `pick` takes them: the first live entry
    /// it does not take ends the walk (for entries whose order is the order they fall due).
    pub fn take_front_while(&mut self, mut pick: impl FnMut(&V) -> bool) -> Vec<V> {
        let mut out = Vec::new();
        while let Some((n, k)) = self.order.front() {
            match self.map.get(k) {
                Some((m, v)) if m == n => {
                    if !pick(v) {
                        break;
                    }
                    let (_, k) = self.order.pop_front().expect("a front");
                    out.extend(self.map.remove(&k).map(|(_, v)| v));
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        out
    }

    pub fn entry_or<Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized>(
        &mut self,
        k: &Q,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: std::borrow::Borrow<Q>,
    {
        if !self.map.contains_key(k) {
            self.insert(k.to_owned(), make());
        }
        self.get_mut(k).expect("just inserted")
    }

    pub fn remove<Q: std::hash::Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        let v = self.map.remove(k).map(|(_, v)| v);
        self.compact();
        v
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(_, v)| v)
    }

    /// Removes and returns the entries `pick` chooses, oldest first.
    pub fn take_where(&mut self, mut pick: impl FnMut(&V) -> bool) -> Vec<V> {
        let keys: Vec<K> = self
            .order
            .iter()
            .filter(|e| self.live(e) && self.map.get(&e.1).is_some_and(|(_, v)| pick(v)))
            .map(|(_, k)| k.clone())
            .collect();
        let out = keys.iter().filter_map(|k| self.map.remove(k).map(|(_, v)| v)).collect();
        self.compact();
        out
    }

    /// A note when the bound made it forget something.
    pub fn forgot_note(&self, what: &str) -> Option<String> {
        (self.forgot > 0).then(|| format!("{} {what} forgotten past the bound of {TRACKED}", self.forgot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map keyed by number is written as one keyed by the same numbers as text (as every
    /// such map was before numbers were keys), and reads from either.
    #[test]
    fn numbered_keys_are_kept_as_text() {
        let (mut by_number, mut by_text): (Bounded<u32, u64>, Bounded<u32>) = Default::default();
        for (k, v) in [(7u64, 1), (u64::MAX, 2), (0, 3)] {
            by_number.insert(k, v);
            by_text.insert(k.to_string(), v);
        }
        by_number.remove(&7);
        by_text.remove("7");
        let written = serde_json::to_value(&by_number).unwrap();
        assert_eq!(written, serde_json::to_value(&by_text).unwrap());
        let read: Bounded<u32, u64> = serde_json::from_value(written).unwrap();
        assert_eq!(read.iter_ordered().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), vec![(u64::MAX, 2), (0, 3)]);
        let mut not_numbers = serde_json::to_value(&by_text).unwrap();
        not_numbers["order"][0][1] = "x".into();
        assert!(serde_json::from_value::<Bounded<u32, u64>>(not_numbers).is_err());
    }

    #[test]
    fn a_key_that_comes_and_goes_costs_nothing_more() {
        let mut b: Bounded<u32> = Bounded::default();
        for i in 0..100_000 {
            b.insert("k".into(), i);
            b.remove("k");
        }
        // The order holds stale mentions only up to a small multiple of what is live.
        assert!(b.order.len() <= 2 * 64 + 1, "{}", b.order.len());
        b.insert("a".into(), 1);
        b.insert("b".into(), 2);
        assert_eq!(b.take_where(|v| *v == 1), vec![1]);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_front_is_taken_while_it_is_due_and_no_further() {
        let mut b: Bounded<u32> = Bounded::default();
        for (k, v) in [("a", 1), ("b", 2), ("c", 9), ("d", 3)] {
            b.insert(k.into(), v);
        }
        b.remove("b");
        // "b" is gone (a stale mention, skipped); "c" is not due, so "d" waits behind it.
        assert_eq!(b.take_front_while(|v| *v < 5), vec![1]);
        assert_eq!(b.iter_ordered().map(|(k, _)| k).collect::<Vec<_>>(), ["c", "d"]);
        // Past the bound, the one forgotten is handed back.
        let mut b: Bounded<usize> = Bounded::default();
        let forgotten: Vec<usize> = (0..TRACKED + 2).filter_map(|i| b.insert(i.to_string(), i)).collect();
        assert_eq!(forgotten, [0, 1]);
    }

    #[test]
    fn past_the_bound_the_oldest_go() {
        let mut b: Bounded<usize> = Bounded::default();
        for i in 0..TRACKED + 5 {
            b.insert(i.to_string(), i);
        }
        assert_eq!((b.len(), b.forgot), (TRACKED, 5));
        assert!(b.get("0").is_none() && b.get(&TRACKED.to_string()).is_some());
    }
}
