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

/// The kinds of event, as [`Routes`] offers them: a send and its answer apart on XMPP (a
/// message on a connection) and otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sent,
    SentXmpp,
    Answered,
    AnsweredXmpp,
    Group,
    Lookup,
    Opened,
    Closed,
    ToAck,
    Replied,
    AppAck,
    Draining,
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::Sent,
        Kind::SentXmpp,
        Kind::Answered,
        Kind::AnsweredXmpp,
        Kind::Group,
        Kind::Lookup,
        Kind::Opened,
        Kind::Closed,
        Kind::ToAck,
        Kind::Replied,
        Kind::AppAck,
        Kind::Draining,
    ];

    pub fn of(event: &Event) -> Kind {
        // On XMPP by its path or by its connection: a grader of XMPP sends reads either.
        let xmpp = |s: &super::events::Sent| s.xmpp() || matches!(s.conn, Some(super::Conn::Xmpp(_)));
        match event {
            Event::Sent(s) if xmpp(s) => Kind::SentXmpp,
            Event::Sent(_) => Kind::Sent,
            Event::Answered(s, _) if xmpp(s) => Kind::AnsweredXmpp,
            Event::Answered(..) => Kind::Answered,
            Event::Group(_) => Kind::Group,
            Event::Lookup { .. } => Kind::Lookup,
            Event::Opened { .. } => Kind::Opened,
            Event::Closed { .. } => Kind::Closed,
            Event::ToAck { .. } => Kind::ToAck,
            Event::Replied { .. } => Kind::Replied,
            Event::AppAck { .. } => Kind::AppAck,
            Event::Draining { .. } => Kind::Draining,
        }
    }
}

impl Config {
    /// The kinds of event the grader reads: every other kind leaves its state and log as they
    /// were (held so by a test over every grader and kind), so it is not offered them.
    pub fn reads(&self) -> &'static [Kind] {
        use Kind::*;
        const SENDS: &[Kind] = &[Sent, SentXmpp];
        const SENDS_ANSWERS: &[Kind] = &[Sent, SentXmpp, Answered, AnsweredXmpp];
        match self {
            Config::TtlRange
            | Config::TargetExclusive
            | Config::IdCount
            | Config::PayloadSize
            | Config::ReservedKeys
            | Config::CollapseKeys { .. } => SENDS,
            Config::StaleId(_) => &[Sent, SentXmpp, Answered, AnsweredXmpp, Group],
            Config::GroupKeySaved | Config::GroupOneApp => &[Group, Lookup],
            Config::GroupBeforeSend => &[Sent, SentXmpp, Group, Lookup],
            Config::Retry { .. }
            | Config::RetryAfter { .. }
            | Config::Backoff { .. }
            | Config::ResentSuccess { .. } => SENDS_ANSWERS,
            Config::MessageId => &[SentXmpp, AnsweredXmpp],
            Config::Acks { .. } => &[ToAck, AppAck, Closed],
            Config::AckConnection => &[ToAck, AppAck],
            Config::Draining { .. } => &[SentXmpp, Draining, Opened, Closed],
            Config::PendingLimit => &[SentXmpp, Replied, Closed],
        }
    }

    /// Whether [`State::settle`] judges anything for it (what waits past its time).
    fn settles(&self) -> bool {
        matches!(self, Config::Retry { .. } | Config::Acks { .. })
    }
}

/// Which rules each kind of event is offered to, and which rules settle before each event:
/// an event costs the rules that read it, not every rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    readers: [Vec<usize>; Kind::ALL.len()],
    settling: Vec<usize>,
}

impl Routes {
    pub fn of<'a>(configs: impl Iterator<Item = &'a Config>) -> Routes {
        let mut routes = Routes::default();
        for (i, config) in configs.enumerate() {
            for kind in config.reads() {
                routes.readers[*kind as usize].push(i);
            }
            if config.settles() {
                routes.settling.push(i);
            }
        }
        routes
    }

    /// The rules that read `kind`, by their place in the rulebook.
    pub fn readers(&self, kind: Kind) -> &[usize] {
        &self.readers[kind as usize]
    }

    /// The rules whose state settles.
    pub fn settling(&self) -> &[usize] {
        &self.settling
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

/// A wait judged against `bound`, to the millisecond where tenths would round it up to the
/// bound or past it (a 50 ms wait read "0.1 s" against a floor of 0.1 s); in tenths
/// otherwise, so that wall-clock jitter well away from the bound does not change the words.
pub(crate) fn secs_against(ms: u64, bound: u64) -> String {
    if ms < bound && (ms + 50) / 100 * 100 >= bound { format!("{:.3} s", ms as f64 / 1000.0) } else { secs(ms) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Kind, State};

    #[test]
    fn a_wait_near_its_bound_is_said_to_the_millisecond() {
        use super::secs_against;
        assert_eq!(secs_against(50, 100), "0.050 s", "tenths would read it as the floor");
        assert_eq!(secs_against(160, 192), "0.160 s", "tenths would read it past the bound");
        assert_eq!((secs_against(3, 100), secs_against(1_234, 100)), ("0.0 s".to_string(), "1.2 s".to_string()));
    }
    use crate::catalog::Path;
    use crate::verdicts::body::SendFields;
    use crate::verdicts::events::{Answer, Event, GroupOp, GroupVerb, Sent, ToAck, Ttl};
    use crate::verdicts::{Conn, Device, Facts, RuleLog, Rulebook, Stamp};

    /// A stream of every kind of event, in an order that leaves the graders holding something
    /// (an unacked receipt, a failure awaiting its retry, a group's name, a draining
    /// connection) when the kinds that might touch it come.
    fn stream() -> Vec<Event> {
        let mut seq = 0;
        let mut next = || {
            seq += 1;
            (seq, Stamp { at_ms: seq * 100, wall_ms: seq * 100, wall_us: 0 })
        };
        let device = |id: &str| Device { id: id.into(), known: true, ..Device::default() };
        let mut sent = |path: Path, conn: Conn, to: Option<&str>, ids: Option<Vec<&str>>, message_id: Option<&str>| {
            let (seq, stamp) = next();
            let targets: Vec<&str> = to.into_iter().chain(ids.iter().flatten().copied()).collect();
            Arc::new(Sent {
                seq,
                stamp,
                conn: Some(conn),
                conn_opened_us: Some(0),
                path,
                fields: SendFields {
                    to: to.map(String::from),
                    to_given: to.is_some(),
                    ids_len: ids.as_ref().map(Vec::len),
                    ids_given: ids.is_some(),
                    ids: ids.map(|ids| ids.into_iter().map(String::from).collect()),
                    ttl: Some(Ttl::Whole(60)),
                    payload_bytes: 10,
                    fingerprint: seq,
                    parts: vec![seq],
                    message_id: message_id.map(String::from),
                    ..SendFields::default()
                },
                facts: Arc::new(Facts {
                    to_key: path == Path::Key,
                    devices: targets.into_iter().map(device).collect(),
                }),
            })
        };
        let (http, xmpp) = (Conn::Http(2), Conn::Xmpp(1));
        let up = sent(Path::Xmpp, xmpp, Some("dev-a"), None, Some("m1"));
        let canonical = sent(Path::Token, http, Some("dev-a"), None, None);
        let failed = sent(Path::Token, http, Some("dev-c"), None, None);
        let multicast = sent(Path::Multicast, http, None, Some(vec!["dev-d", "dev-e"]), None);
        let to_key = sent(Path::Key, http, Some("key-k"), None, None);
        let to_name = sent(Path::Token, http, Some("name-n"), None, None);
        let drained = sent(Path::Xmpp, xmpp, Some("dev-a"), None, Some("m2"));
        let answer = |s: &Arc<Sent>| Answer { seq: s.seq, stamp: s.stamp, conn: s.conn, ..Answer::default() };
        let (conn, at) = (1, |seq: u64| Stamp { at_ms: seq * 100 + 50, wall_ms: seq * 100 + 50, wall_us: 0 });
        let results = |r: Vec<(&str, Result<Option<&str>, &str>)>| -> Vec<(String, Result<Option<String>, String>)> {
            r.into_iter()
                .map(|(id, r)| (id.to_string(), r.map(|c| c.map(String::from)).map_err(String::from)))
                .collect()
        };
        vec![
            Event::Opened { seq: 0, stamp: at(0), conn },
            Event::Sent(up.clone()),
            Event::ToAck {
                seq: 1,
                stamp: at(1),
                conn,
                message_id: "u1".into(),
                kind: ToAck::Upstream,
                peer: Some("dev-a".into()),
            },
            Event::ToAck { seq: 1, stamp: at(1), conn, message_id: "r1".into(), kind: ToAck::Receipt, peer: None },
            Event::Replied { seq: 1, stamp: at(1), conn },
            Event::Answered(up.clone(), Answer { acked: true, ..answer(&up) }),
            Event::Sent(canonical.clone()),
            Event::Answered(
                canonical.clone(),
                Answer { results: results(vec![("dev-a", Ok(Some("dev-b")))]), ..answer(&canonical) },
            ),
            Event::Sent(failed.clone()),
            Event::Answered(
                failed.clone(),
                Answer { server_error: true, retry_after_ms: Some(1000), ..answer(&failed) },
            ),
            Event::Sent(multicast.clone()),
            Event::Answered(
                multicast.clone(),
                Answer {
                    results: results(vec![("dev-d", Err("Unavailable")), ("dev-e", Err("NotRegistered"))]),
                    ..answer(&multicast)
                },
            ),
            Event::Group(GroupOp {
                seq: 20,
                stamp: at(20),
                conn: Some(http),
                conn_opened_us: Some(0),
                endpoint: Path::Server,
                verb: Some(GroupVerb::Create),
                name: Some("name-n".into()),
                key: None,
                ids: vec!["dev-a".into(), "dev-z".into()],
                answer: Ok("key-k".into()),
                facts: Arc::new(Facts {
                    to_key: false,
                    devices: vec![Device { id: "dev-z".into(), ..Device::default() }],
                }),
            }),
            Event::Lookup { seq: 21, stamp: at(21), name: "name-n".into(), key: Some("key-k".into()) },
            Event::Sent(to_key.clone()),
            Event::Answered(to_key.clone(), Answer { all_members_failed: true, ..answer(&to_key) }),
            Event::Sent(to_name.clone()),
            Event::AppAck { seq: 22, stamp: at(22), conn, message_id: "u1".into(), to: Some("dev-a".into()) },
            Event::Draining { seq: 23, stamp: at(23), conn },
            Event::Sent(drained.clone()),
            Event::Closed { seq: 24, stamp: at(24), conn, lost: false },
            Event::Opened { seq: 25, stamp: at(25), conn: 3 },
        ]
    }

    /// What `reads` leaves out, a grader never reads: offered an event of such a kind at any
    /// point of the stream, its state and log are as they were (and a rule that is not
    /// settled, settled at any point, is as it was). And what it reads, it reads:
    /// over the stream, each kind a grader is offered changes some grader that reads it.
    #[test]
    fn every_grader_reads_only_the_kinds_it_is_offered() {
        let book = Rulebook::bundled();
        let events = stream();
        let mut changed = std::collections::BTreeSet::new();
        for rule in &book.rules {
            let config = &rule.config;
            let (mut state, mut log) = (State::new(config), RuleLog::default());
            let seen = |s: &State, l: &RuleLog| (serde_json::to_value(s).unwrap(), l.clone());
            for event in &events {
                let kind = Kind::of(event);
                let before = seen(&state, &log);
                let (mut s, mut l) = (state.clone(), log.clone());
                s.feed(config, &book.numbers, event, &mut l);
                let after = seen(&s, &l);
                if config.reads().contains(&kind) {
                    changed.extend((after != before).then(|| format!("{kind:?}")));
                    (state, log) = (s, l);
                } else {
                    assert_eq!(after, before, "{}: offered no {kind:?}, yet it reads one", rule.id);
                }
                // A rule that is not settled has nothing to settle, however late it is.
                if !config.settles() {
                    let (mut s, mut l) = (state.clone(), log.clone());
                    let late = Stamp { at_ms: u64::MAX / 2, wall_ms: u64::MAX / 2, wall_us: 0 };
                    s.settle(config, &book.numbers, late, &mut l);
                    assert_eq!(seen(&s, &l), seen(&state, &log), "{}: not settled, yet it settles", rule.id);
                }
            }
        }
        let offered: std::collections::BTreeSet<String> =
            book.rules.iter().flat_map(|r| r.config.reads()).map(|k| format!("{k:?}")).collect();
        assert_eq!(changed, offered, "kinds offered that no grader read in the stream");
    }
}
