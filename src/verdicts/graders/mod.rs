//! The graders the app-server rules name (`grader = "..."`), one state each per rule and
//! sender. A grader reads events ([`super::events::Event`]) and writes the rule's log: how
//! often the situation came up, and each violation with the entries that show it. `settle`
//! judges what has waited past its time (an ack, a retry); it runs before every event and
//! when verdicts are read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::{Event, ToAck};
use super::{Numbers, RuleLog, Stamp};

mod groups;
mod ids;
mod retry;
mod shape;
mod xmpp;

/// A grader and the parameters its rule gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Config {
    TtlRange,
    TargetExclusive,
    IdCount,
    PayloadSize,
    ReservedKeys,
    StaleId(ids::Reading),
    CollapseKeys { held: bool },
    GroupKeySaved,
    GroupOneApp,
    GroupBeforeSend,
    Retry { group: bool, within_ms: u64 },
    RetryAfter { slack_ms: u64 },
    Backoff { first_wait_ms: u64, tolerance: f64 },
    ResentSuccess { within_ms: u64 },
    MessageId,
    Acks { kind: ToAck, within_ms: u64, in_flight_ms: u64 },
    AckConnection,
    Draining { in_flight_ms: u64 },
    PendingLimit,
}

impl Config {
    /// The grader `name` with a rule's `params`; an unknown name or a parameter missing or
    /// of the wrong kind is an error.
    pub fn of(name: &str, params: &BTreeMap<String, Value>) -> Result<Config, String> {
        let number = |k: &str| -> Result<u64, String> {
            params.get(k).and_then(Value::as_u64).ok_or_else(|| format!("grader `{name}` needs `{k}`, a whole number"))
        };
        let text = |k: &str| -> Result<&str, String> {
            params.get(k).and_then(Value::as_str).ok_or_else(|| format!("grader `{name}` needs `{k}`, a string"))
        };
        let choose = |k: &str, options: &[&str]| -> Result<usize, String> {
            let v = text(k)?;
            options.iter().position(|o| *o == v).ok_or_else(|| format!("`{k}` is one of {}", options.join(", ")))
        };
        Ok(match name {
            "ttl-range" => Config::TtlRange,
            "target-exclusive" => Config::TargetExclusive,
            "id-count" => Config::IdCount,
            "payload-size" => Config::PayloadSize,
            "reserved-keys" => Config::ReservedKeys,
            "stale-id" => Config::StaleId(ids::Reading {
                after: [ids::After::Canonical, ids::After::NotRegistered]
                    [choose("after", &["canonical", "not-registered"])?],
                in_flight_ms: number("in_flight_ms")?,
                new_connection_is_later: choose("new_connection", &["after-the-answer", "in-flight"])? == 0,
            }),
            "collapse-keys" => Config::CollapseKeys { held: choose("count", &["held", "unexpired"])? == 0 },
            "group-key-saved" => Config::GroupKeySaved,
            "group-one-app" => Config::GroupOneApp,
            "group-before-send" => Config::GroupBeforeSend,
            "retry" => Config::Retry {
                group: choose("after", &["server-error", "group-failure"])? == 1,
                within_ms: number("within_seconds")?.saturating_mul(1000),
            },
            "retry-after" => Config::RetryAfter { slack_ms: number("slack_ms")? },
            "backoff" => Config::Backoff {
                first_wait_ms: number("first_wait_ms")?,
                tolerance: params
                    .get("tolerance")
                    .and_then(Value::as_f64)
                    .filter(|t| (0.0..1.0).contains(t))
                    .ok_or_else(|| format!("grader `{name}` needs `tolerance`, a fraction from 0 to 1"))?,
            },
            "resent-success" => Config::ResentSuccess { within_ms: number("within_seconds")?.saturating_mul(1000) },
            "message-id" => Config::MessageId,
            "acks" => Config::Acks {
                kind: [ToAck::Upstream, ToAck::Receipt][choose("kind", &["upstream", "receipt"])?],
                within_ms: number("within_seconds")?.saturating_mul(1000),
                in_flight_ms: number("in_flight_ms")?,
            },
            "ack-connection" => Config::AckConnection,
            "draining" => Config::Draining { in_flight_ms: number("in_flight_ms")? },
            "pending-limit" => Config::PendingLimit,
            other => return Err(format!("no grader `{other}`")),
        })
    }
}

/// What a grader keeps between events, for one rule and sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum State {
    /// Graders that judge each send alone.
    Stateless,
    StaleId(ids::StaleIds),
    CollapseKeys(shape::CollapseKeys),
    Groups(groups::Groups),
    Retry(retry::Retries),
    RetryAfter(retry::RetryAfter),
    Backoff(retry::Backoff),
    ResentSuccess(retry::ResentSuccess),
    MessageId(xmpp::MessageIds),
    Acks(xmpp::Acks),
    AckConnection(xmpp::AckConnection),
    Draining(xmpp::Draining),
    PendingLimit(xmpp::PendingLimit),
}

impl State {
    pub fn new(config: &Config) -> State {
        match config {
            Config::TtlRange
            | Config::TargetExclusive
            | Config::IdCount
            | Config::PayloadSize
            | Config::ReservedKeys => State::Stateless,
            Config::StaleId(_) => State::StaleId(Default::default()),
            Config::CollapseKeys { .. } => State::CollapseKeys(Default::default()),
            Config::GroupKeySaved | Config::GroupOneApp | Config::GroupBeforeSend => State::Groups(Default::default()),
            Config::Retry { .. } => State::Retry(Default::default()),
            Config::RetryAfter { .. } => State::RetryAfter(Default::default()),
            Config::Backoff { .. } => State::Backoff(Default::default()),
            Config::ResentSuccess { .. } => State::ResentSuccess(Default::default()),
            Config::MessageId => State::MessageId(Default::default()),
            Config::Acks { .. } => State::Acks(Default::default()),
            Config::AckConnection => State::AckConnection(Default::default()),
            Config::Draining { .. } => State::Draining(Default::default()),
            Config::PendingLimit => State::PendingLimit(Default::default()),
        }
    }

    pub fn feed(&mut self, config: &Config, n: &Numbers, event: &Event, log: &mut RuleLog) {
        match (self, config) {
            (State::Stateless, c) => shape::feed(c, n, event, log),
            (State::StaleId(s), Config::StaleId(reading)) => s.feed(reading, event, log),
            (State::CollapseKeys(s), Config::CollapseKeys { held }) => s.feed(*held, n, event, log),
            (State::Groups(s), c) => s.feed(c, event, log),
            (State::Retry(s), Config::Retry { group, .. }) => s.feed(*group, n, event, log),
            (State::RetryAfter(s), Config::RetryAfter { slack_ms }) => s.feed(*slack_ms, n, event, log),
            (State::Backoff(s), Config::Backoff { first_wait_ms, tolerance }) => {
                s.feed(*first_wait_ms, *tolerance, n, event, log)
            }
            (State::ResentSuccess(s), Config::ResentSuccess { within_ms }) => s.feed(*within_ms, event, log),
            (State::MessageId(s), _) => s.feed(event, log),
            (State::Acks(s), Config::Acks { kind, in_flight_ms, .. }) => s.feed(*kind, *in_flight_ms, event, log),
            (State::AckConnection(s), _) => s.feed(event, log),
            (State::Draining(s), Config::Draining { in_flight_ms }) => s.feed(*in_flight_ms, event, log),
            (State::PendingLimit(s), _) => s.feed(n.max_pending_per_connection, event, log),
            // A state restored for other rules than these: start it again.
            (state, config) => *state = State::new(config),
        }
    }

    pub fn settle(&mut self, config: &Config, _n: &Numbers, now: Stamp, log: &mut RuleLog) {
        match (self, config) {
            (State::Retry(s), Config::Retry { within_ms, .. }) => s.settle(*within_ms, now, log),
            (State::Acks(s), Config::Acks { kind, within_ms, .. }) => s.settle(*kind, *within_ms, now, log),
            _ => {}
        }
    }

    /// Until when (machine clock, ms) something this rule awaits may still be in flight:
    /// a settled reading taken before then could judge an ack that is on its way.
    pub fn in_flight_until(&self, config: &Config) -> Option<u64> {
        match (self, config) {
            (State::Acks(s), Config::Acks { in_flight_ms, .. }) => s.in_flight_until(*in_flight_ms),
            _ => None,
        }
    }

    /// What is still open, or forgotten past the bound.
    pub fn note(&self) -> Option<String> {
        match self {
            State::Stateless => None,
            State::StaleId(s) => s.note(),
            State::CollapseKeys(s) => s.note(),
            State::Groups(s) => s.note(),
            State::Retry(s) => s.note(),
            State::RetryAfter(s) => s.note(),
            State::Backoff(s) => s.note(),
            State::ResentSuccess(s) => s.note(),
            State::MessageId(s) => s.note(),
            State::Acks(s) => s.note(),
            State::AckConnection(s) => s.note(),
            State::Draining(s) => s.note(),
            State::PendingLimit(_) => None,
        }
    }
}

/// Text for a time in a violation.
pub(crate) fn at(stamp: Stamp) -> String {
    super::entry::clock_text(stamp.at_ms)
}

/// How long an open duty had, in a violation's words: its window, or, read settled, that
/// the verdicts were read before it ran out (and judged as if it had).
pub(crate) fn by_when(now: Stamp, window_ms: u64) -> String {
    if now.is_settled() {
        format!("by the time the verdicts were read settled (its {} taken as run out)", secs(window_ms))
    } else {
        format!("within {}", secs(window_ms))
    }
}

/// Milliseconds as seconds with one decimal.
pub(crate) fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}
