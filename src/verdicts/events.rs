//! Journal entries read as what they mean to the graders: a send and its targets and
//! content, its answer (per target, for a group, or refused, or a server error), a group
//! operation, and on XMPP the connection's life, what the server sent the app server and the
//! app server's acks. One reading, whichever transport or form the exchange took.
//!
//! (Longer than a room should be: reading every kind of exchange into events, HTTP sends,
//! group operations, lookups and XMPP stanzas, shares the event types and the `Reader`;
//! split by kind, each part would reach into the others.)

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::body::SendFields;
use super::entry::{Conn, Entry, Facts, Message, Stamp, What};
use crate::catalog::Path;

/// A downstream send as the app server made it: where and when, and what its body said
/// (`fields`, read through as the send's own: `sent.to`, `sent.parts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    pub seq: u64,
    pub stamp: Stamp,
    pub conn: Option<Conn>,
    /// When its connection was opened (wall ms), if known.
    pub conn_opened_us: Option<u64>,
    pub path: Path,
    /// Kept in a state file beside the fields above, as they were before they had a type.
    #[serde(flatten)]
    pub fields: SendFields,
    pub facts: std::sync::Arc<Facts>,
}

impl std::ops::Deref for Sent {
    type Target = SendFields;

    fn deref(&self) -> &SendFields {
        &self.fields
    }
}

/// A `time_to_live` as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ttl {
    Whole(i64),
    /// Not a whole number (a fraction, a string, ...), as its JSON text.
    Other(String),
}

impl Sent {
    /// Whom it was addressed to, without collecting them.
    pub fn each_target(&self) -> impl Iterator<Item = &str> {
        self.to.iter().map(String::as_str).chain(self.ids.iter().flatten().map(String::as_str))
    }

    /// Whom it was addressed to: `to`, or the ids listed.
    pub fn targets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.to.iter().map(String::as_str).collect();
        if let Some(ids) = &self.ids {
            out.extend(ids.iter().map(String::as_str));
        }
        out
    }

    /// The time to live in milliseconds it asks for (the default when absent).
    pub fn ttl_ms(&self, default_seconds: u64) -> u64 {
        match &self.ttl {
            Some(Ttl::Whole(t)) => (*t).max(0) as u64 * 1000,
            _ => default_seconds * 1000,
        }
    }

    /// Whether this send may be a message with `parts` sent again: at least half of those
    /// parts unchanged (a retry may add a field or change one, a timestamp say). Lenient: it
    /// decides that a failure was retried.
    pub fn like(&self, parts: &[u64]) -> bool {
        let kept = parts.iter().filter(|p| self.parts.contains(p)).count();
        2 * kept >= parts.len()
    }

    /// Whether this send surely is a message with `parts` sent again: every one of them
    /// unchanged (fields added, an attempt counter say, are allowed). Strict: it decides which
    /// send's timing a retry rule judges, so that another message is never judged as one.
    pub fn again(&self, parts: &[u64]) -> bool {
        parts.iter().all(|p| self.parts.contains(p))
    }

    pub fn to_key(&self) -> bool {
        matches!(self.path, Path::Key | Path::XmppKey)
    }

    pub fn xmpp(&self) -> bool {
        matches!(self.path, Path::Xmpp | Path::XmppKey)
    }
}

/// How a send was answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub seq: u64,
    pub stamp: Stamp,
    pub conn: Option<Conn>,
    /// The service could not take it now: a 5xx, or an XMPP nack SERVICE_UNAVAILABLE,
    /// INTERNAL_SERVER_ERROR or CONNECTION_DRAINING.
    pub server_error: bool,
    /// The XMPP nack said CONNECTION_DRAINING: the message goes again on a new connection,
    /// at once (the service did not fail; this connection is closing).
    #[serde(default)]
    pub draining: bool,
    /// What a Retry-After said, in milliseconds from the answer.
    pub retry_after_ms: Option<u64>,
    /// The request itself was refused (a 4xx, a nack for the message): sending it again as
    /// it is would not help.
    pub refused: bool,
    /// XMPP: acked (the message was taken), rather than nacked.
    pub acked: bool,
    /// Per target id, in order: `None` taken, `Some(error)` not.
    pub results: Vec<(String, Result<Option<String>, String>)>,
    /// A send to a notification key: the members that failed (`failed_registration_ids`),
    /// and whether every member did (a 503, a nack).
    pub failed_members: Vec<String>,
    pub all_members_failed: bool,
}

impl Answer {
    /// The targets that must be tried again: every one on a server error, else those whose
    /// result was Unavailable or InternalServerError.
    pub fn unavailable(&self, sent: &Sent) -> Vec<String> {
        if self.server_error {
            return sent.targets().into_iter().map(str::to_string).collect();
        }
        self.results
            .iter()
            .filter(|(_, r)| matches!(r, Err(e) if e == "Unavailable" || e == "InternalServerError"))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupVerb {
    Create,
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupOp {
    pub seq: u64,
    pub stamp: Stamp,
    pub conn: Option<Conn>,
    pub conn_opened_us: Option<u64>,
    /// Server (`/gcm/notification`) or client (`/gcm/googlenotification`).
    pub endpoint: Path,
    pub verb: Option<GroupVerb>,
    pub name: Option<String>,
    pub key: Option<String>,
    pub ids: Vec<String>,
    /// The key answered, or the error's text.
    pub answer: Result<String, String>,
    pub facts: std::sync::Arc<Facts>,
}

/// What the server sent an app server that it must ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToAck {
    Upstream,
    Receipt,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Sent(std::sync::Arc<Sent>),
    Answered(std::sync::Arc<Sent>, Answer),
    Group(GroupOp),
    Lookup {
        seq: u64,
        stamp: Stamp,
        name: String,
        key: Option<String>,
    },
    Opened {
        seq: u64,
        stamp: Stamp,
        conn: u64,
    },
    Closed {
        seq: u64,
        stamp: Stamp,
        conn: u64,
        /// Lost when the server stopped, not closed by either side.
        lost: bool,
    },
    /// An upstream message or receipt written to a connection.
    ToAck {
        seq: u64,
        stamp: Stamp,
        conn: u64,
        message_id: String,
        kind: ToAck,
        /// The device an upstream message came `from`: its ack names it as `to` (message ids
        /// are the devices', so two devices may use one). None for a receipt, which comes
        /// from the service and whose id is the service's.
        peer: Option<String>,
    },
    /// The server answered (acked or nacked) something the app server sent on a connection,
    /// whether or not it could be matched to a downstream message.
    Replied {
        seq: u64,
        stamp: Stamp,
        conn: u64,
    },
    /// The app server acked (or nacked) something the server sent it.
    AppAck {
        seq: u64,
        stamp: Stamp,
        conn: u64,
        message_id: String,
        /// Whom the ack names (`to`): the device of an upstream message.
        to: Option<String>,
    },
    Draining {
        seq: u64,
        stamp: Stamp,
        conn: u64,
    },
}

/// A send as the adapter already parsed it, and its answer as the model gave it: grading
/// takes these instead of parsing the journal entry's bodies again (the entry still holds
/// them, for readers and for a state file's replay, which parses them).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub body: PreparedBody,
    pub answer: PreparedAnswer,
}

/// The send's body: as the adapter parsed it, or its fields as the grader's thread read them
/// from its bytes.
#[derive(Debug, Clone)]
pub enum PreparedBody {
    Parsed(Map<String, Value>),
    Read(SendFields),
}

#[derive(Debug, Clone)]
pub enum PreparedAnswer {
    /// Per target, in order: taken (with a canonical id, if any) or the error.
    Results(Vec<Result<Option<String>, String>>),
    /// A send to a notification key: the members that failed, and whether any took it.
    Group { failed: Vec<String>, success: usize },
    /// A send to a notification key that no member took (a 503).
    GroupFailed,
}

/// XMPP sends read but not yet answered, per connection and message id: their answers come
/// in a later entry. Bounded: an app server that never gets answers cannot grow it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reader {
    unanswered: HashMap<String, Sent>,
    order: VecDeque<String>,
}

impl Reader {
    const KEPT: usize = 4096;

    /// The events an entry stands for, in order; `prepared`, when the adapter has them, the
    /// send and its answer already parsed.
    pub fn read(&mut self, entry: &Entry, prepared: Option<Prepared>) -> Vec<Event> {
        let (seq, stamp, conn) = (entry.seq, entry.stamp, entry.connection);
        let opened = entry.connection_opened_us;
        let xmpp_conn = match conn {
            Some(Conn::Xmpp(n)) => n,
            _ => 0,
        };
        match &entry.what {
            What::Http { request, response, facts, .. } => {
                let at = At { seq, stamp, conn, opened };
                match prepared {
                    Some(p) => prepared_send(at, p, facts),
                    None => http(at, request, response, facts),
                }
            }
            What::XmppOpened => vec![Event::Opened { seq, stamp, conn: xmpp_conn }],
            What::XmppClosed | What::XmppLost => {
                let prefix = format!("{xmpp_conn}:");
                self.order.retain(|k| {
                    let gone = k.starts_with(&prefix);
                    if gone {
                        self.unanswered.remove(k);
                    }
                    !gone
                });
                vec![Event::Closed { seq, stamp, conn: xmpp_conn, lost: matches!(entry.what, What::XmppLost) }]
            }
            What::XmppReceived { stanza, facts, .. } => {
                let Some(json) = stanza.as_object() else { return Vec::new() };
                let message_id = json.get("message_id").and_then(Value::as_str).map(str::to_string);
                if let Some(kind) = json.get("message_type") {
                    // Only `"message_type": "ack"` acks (the quoted form): a nack, or an `ACK`,
                    // is no ack of anything, and no downstream message either.
                    if kind != "ack" {
                        return Vec::new();
                    }
                    let to = json.get("to").and_then(Value::as_str).map(str::to_string);
                    return message_id
                        .map(|message_id| Event::AppAck { seq, stamp, conn: xmpp_conn, message_id, to })
                        .into_iter()
                        .collect();
                }
                let path = if facts.to_key { Path::XmppKey } else { Path::Xmpp };
                let sent = sent_of(At { seq, stamp, conn, opened }, path, SendFields::of(json), facts.clone());
                if let Some(id) = &message_id {
                    let k = format!("{xmpp_conn}:{id}");
                    if self.unanswered.insert(k.clone(), sent.clone()).is_none() {
                        self.order.push_back(k);
                    }
                    while self.order.len() > Self::KEPT {
                        if let Some(old) = self.order.pop_front() {
                            self.unanswered.remove(&old);
                        }
                    }
                }
                vec![Event::Sent(std::sync::Arc::new(sent))]
            }
            What::XmppSent { stanza, .. } => {
                let Some(json) = stanza.as_object() else { return Vec::new() };
                let text = |k: &str| json.get(k).and_then(Value::as_str);
                let message_id = text("message_id").map(str::to_string);
                match (text("message_type"), message_id) {
                    (Some("ack" | "nack"), id) => {
                        let mut out = vec![Event::Replied { seq, stamp, conn: xmpp_conn }];
                        let k = format!("{xmpp_conn}:{}", id.unwrap_or_default());
                        if let Some(sent) = self.unanswered.remove(&k) {
                            self.order.retain(|o| *o != k);
                            let answer = xmpp_answer(seq, stamp, conn, &sent, json);
                            out.push(Event::Answered(std::sync::Arc::new(sent), answer));
                        }
                        out
                    }
                    (Some("control"), _) if text("control_type") == Some("CONNECTION_DRAINING") => {
                        vec![Event::Draining { seq, stamp, conn: xmpp_conn }]
                    }
                    (Some("receipt"), Some(message_id)) => {
                        vec![Event::ToAck { seq, stamp, conn: xmpp_conn, message_id, kind: ToAck::Receipt, peer: None }]
                    }
                    (None, Some(message_id)) if json.contains_key("from") || json.contains_key("category") => {
                        let peer = text("from").map(str::to_string);
                        vec![Event::ToAck { seq, stamp, conn: xmpp_conn, message_id, kind: ToAck::Upstream, peer }]
                    }
                    _ => Vec::new(),
                }
            }
        }
    }
}

/// Where an HTTP entry was: its sequence number, stamp, connection and when that opened.
#[derive(Clone, Copy)]
struct At {
    seq: u64,
    stamp: Stamp,
    conn: Option<Conn>,
    opened: Option<u64>,
}

/// A send and its answer, as two events sharing the send (a multicast's ids are not copied).
fn sent_and_answered(sent: Sent, answer: Answer) -> Vec<Event> {
    let sent = std::sync::Arc::new(sent);
    vec![Event::Sent(sent.clone()), Event::Answered(sent, answer)]
}

fn http(at: At, request: &Message, response: &Message, facts: &std::sync::Arc<Facts>) -> Vec<Event> {
    let At { seq, stamp, conn, opened } = at;
    let full = request.path.as_deref().unwrap_or_default();
    let (path, query) = full.split_once('?').unwrap_or((full, ""));
    let method = request.method.as_deref().unwrap_or_default();
    let status = response.status.unwrap_or(0);
    match (method, path) {
        ("POST", "/gcm/send" | "/fcm/send") => {
            let form = request
                .header("content-type")
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
            let sent = if form {
                plain_text_sent(at, request, facts)
            } else {
                let Some(Value::Object(body)) = request.json() else { return Vec::new() };
                let fields = SendFields::of(&body);
                sent_of(at, json_path(facts, &fields), fields, facts.clone())
            };
            let answer = http_answer(seq, stamp, conn, &sent, status, response, form);
            sent_and_answered(sent, answer)
        }
        ("POST", "/gcm/notification" | "/fcm/notification" | "/gcm/googlenotification") => {
            let Some(Value::Object(body)) = request.json() else { return Vec::new() };
            let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            let verb = match text("operation").as_deref() {
                Some("create") => Some(GroupVerb::Create),
                Some("add") => Some(GroupVerb::Add),
                Some("remove") => Some(GroupVerb::Remove),
                _ => None,
            };
            let ids = strings(body.get("registration_ids")).unwrap_or_default();
            let answer = match (status, response.json()) {
                (200, Some(v)) if v["notification_key"].is_string() => {
                    Ok(v["notification_key"].as_str().unwrap_or_default().to_string())
                }
                (_, Some(v)) if v["error"].is_string() => Err(v["error"].as_str().unwrap_or_default().to_string()),
                _ => Err(format!("{status} {}", response.body)),
            };
            let endpoint = if path == "/gcm/googlenotification" { Path::Client } else { Path::Server };
            vec![Event::Group(GroupOp {
                seq,
                stamp,
                conn,
                conn_opened_us: opened,
                endpoint,
                verb,
                name: text("notification_key_name"),
                key: text("notification_key"),
                ids,
                answer,
                facts: facts.clone(),
            })]
        }
        ("GET", "/gcm/notification" | "/fcm/notification") => {
            let name = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "notification_key_name")
                .map(|(_, v)| v.into_owned());
            let key = (status == 200)
                .then(|| response.json())
                .flatten()
                .and_then(|v| v["notification_key"].as_str().map(str::to_string));
            name.map(|name| Event::Lookup { seq, stamp, name, key }).into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// A JSON send the adapter parsed, with the model's answer.
fn prepared_send(at: At, p: Prepared, facts: &std::sync::Arc<Facts>) -> Vec<Event> {
    let At { seq, stamp, conn, .. } = at;
    let fields = match p.body {
        PreparedBody::Parsed(body) => SendFields::of(&body),
        PreparedBody::Read(fields) => fields,
    };
    let sent = sent_of(at, json_path(facts, &fields), fields, facts.clone());
    let mut a = Answer { seq, stamp, conn, ..Answer::default() };
    match p.answer {
        PreparedAnswer::Results(results) => {
            a.results = sent.each_target().map(str::to_string).zip(results).collect();
            if !a.results.is_empty() && a.results.iter().all(|(_, r)| matches!(r, Err(e) if refusing(e))) {
                a.refused = true;
            }
        }
        PreparedAnswer::Group { failed, success } => {
            a.all_members_failed = success == 0 && !failed.is_empty();
            a.failed_members = failed;
        }
        PreparedAnswer::GroupFailed => a.all_members_failed = true,
    }
    sent_and_answered(sent, a)
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
}

/// A send from its body's fields.
fn sent_of(at: At, path: Path, fields: SendFields, facts: std::sync::Arc<Facts>) -> Sent {
    let At { seq, stamp, conn, opened } = at;
    Sent { seq, stamp, conn, conn_opened_us: opened, path, fields, facts }
}

/// A JSON send's path: to one of the sender's keys, to a list of ids, or to one token.
fn json_path(facts: &Facts, fields: &SendFields) -> Path {
    match (facts.to_key, fields.multicast()) {
        (true, _) => Path::Key,
        (false, true) => Path::Multicast,
        (false, false) => Path::Token,
    }
}

/// The plain-text form, read into the JSON send's shape (as the server reads it).
fn plain_text_sent(at: At, request: &Message, facts: &std::sync::Arc<Facts>) -> Sent {
    let mut body = Map::new();
    let mut data = Map::new();
    let mut ids = Vec::new();
    for (k, v) in form_urlencoded::parse(request.body.as_bytes()) {
        match k.as_ref() {
            "registration_id" => ids.push(Value::String(v.into_owned())),
            "time_to_live" => {
                let ttl =
                    crate::wire::plain_whole_number(&v).map_or_else(|| Value::String(v.into_owned()), Value::from);
                body.insert("time_to_live".into(), ttl);
            }
            "collapse_key" => {
                body.insert("collapse_key".into(), Value::String(v.into_owned()));
            }
            "dry_run" => {
                body.insert("dry_run".into(), Value::Bool(v == "1" || v == "true"));
            }
            key if key.starts_with("data.") => {
                data.insert(key["data.".len()..].to_string(), Value::String(v.into_owned()));
            }
            _ => {}
        }
    }
    if ids.len() == 1 {
        body.insert("to".into(), ids.remove(0));
    } else if !ids.is_empty() {
        body.insert("registration_ids".into(), Value::Array(ids));
    }
    if !data.is_empty() {
        body.insert("data".into(), Value::Object(data));
    }
    sent_of(at, Path::PlainText, SendFields::of(&body), facts.clone())
}

/// Retry-After, in milliseconds from `now_ms` (wall): delta-seconds or an HTTP date.
pub fn retry_after_ms(value: &str, now_wall_ms: u64) -> Option<u64> {
    let v = value.trim();
    if let Ok(seconds) = v.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    http_date_ms(v).map(|at| at.saturating_sub(now_wall_ms))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as milliseconds since the epoch.
pub fn http_date_ms(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    let days = days_from_civil(year, month, day);
    u64::try_from(((days * 24 + h) * 60 + m) * 60 + s).ok().map(|s| s * 1000)
}

/// Milliseconds since the epoch as an IMF-fixdate, rounded up to the second (a Retry-After
/// date is then never earlier than meant).
pub fn http_date(ms: u64) -> String {
    let secs = ms.div_ceil(1000) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    const NAMES: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        NAMES[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rest / 3600,
        (rest / 60) % 60,
        rest % 60
    )
}

/// Howard Hinnant's algorithms: a proleptic Gregorian date and its day count from 1970.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn http_answer(
    seq: u64,
    stamp: Stamp,
    conn: Option<Conn>,
    sent: &Sent,
    status: u16,
    response: &Message,
    plain_text: bool,
) -> Answer {
    let mut a = Answer { seq, stamp, conn, ..Answer::default() };
    a.retry_after_ms = response.header("retry-after").and_then(|v| retry_after_ms(v, stamp.wall_ms));
    if status >= 500 {
        // To a key, a 5xx is the group's total failure (seed 000: "HTTP code 503 and no
        // JSON"), whose retry is the group's rule; elsewhere the service's.
        if sent.to_key() {
            a.all_members_failed = true;
        } else {
            a.server_error = true;
        }
        return a;
    }
    if status != 200 {
        a.refused = true;
        return a;
    }
    if plain_text {
        let target = sent.targets().first().map(|s| s.to_string()).unwrap_or_default();
        let mut lines = response.body.lines();
        let first = lines.next().unwrap_or_default().trim();
        if let Some(error) = first.strip_prefix("Error=") {
            a.results.push((target, Err(error.to_string())));
        } else if first.starts_with("id=") {
            let canonical = lines.find_map(|l| l.trim().strip_prefix("registration_id=").map(str::to_string));
            a.results.push((target, Ok(canonical)));
        }
        return a;
    }
    let Some(body) = response.json() else {
        a.refused = true;
        return a;
    };
    if sent.to_key() {
        a.failed_members = strings(body.get("failed_registration_ids")).unwrap_or_default();
        let success = body["success"].as_u64().unwrap_or(0);
        a.all_members_failed = success == 0 && body["failure"].as_u64().unwrap_or(0) > 0;
        return a;
    }
    match body.get("results").and_then(Value::as_array) {
        Some(results) => {
            for (target, r) in sent.targets().into_iter().zip(results) {
                let result = match r.get("error").and_then(Value::as_str) {
                    Some(e) => Err(e.to_string()),
                    None => Ok(r.get("registration_id").and_then(Value::as_str).map(str::to_string)),
                };
                a.results.push((target.to_string(), result));
            }
        }
        // An invalid request answered 200 with an error and no results.
        None => a.refused = body.get("error").is_some(),
    }
    if a.results.iter().all(|(_, r)| matches!(r, Err(e) if refusing(e))) && !a.results.is_empty() {
        a.refused = true;
    }
    a
}

/// Errors that say the message itself is wrong, whoever it goes to.
fn refusing(error: &str) -> bool {
    matches!(error, "InvalidTtl" | "InvalidDataKey" | "MessageTooBig" | "MissingRegistration")
}

fn xmpp_answer(seq: u64, stamp: Stamp, conn: Option<Conn>, sent: &Sent, json: &Map<String, Value>) -> Answer {
    let mut a = Answer { seq, stamp, conn, ..Answer::default() };
    let target = sent.to.clone().unwrap_or_default();
    a.acked = json.get("message_type").and_then(Value::as_str) == Some("ack");
    match json.get("message_type").and_then(Value::as_str) {
        Some("ack") if sent.to_key() => {
            a.failed_members = strings(json.get("failed_registration_ids")).unwrap_or_default();
        }
        Some("ack") => {
            let canonical = json.get("registration_id").and_then(Value::as_str).map(str::to_string);
            a.results.push((target, Ok(canonical)));
        }
        _ => {
            let code = json.get("error").and_then(Value::as_str).unwrap_or_default();
            let for_now = matches!(code, "SERVICE_UNAVAILABLE" | "INTERNAL_SERVER_ERROR" | "CONNECTION_DRAINING");
            if sent.to_key() && (for_now || code == "DEVICE_UNREGISTERED") {
                // Seed 003: a key whose every member failed is nacked (SERVICE_UNAVAILABLE;
                // a service seen to say DEVICE_UNREGISTERED when no member is registered).
                a.all_members_failed = true;
            } else if sent.to_key() {
                // The message itself was refused (INVALID_JSON, BAD_REGISTRATION, ...):
                // sending it again as it is would not help.
                a.refused = true;
            } else if for_now {
                a.server_error = true;
                a.draining = code == "CONNECTION_DRAINING";
            } else if code == "DEVICE_UNREGISTERED" {
                a.results.push((target, Err("NotRegistered".into())));
            } else {
                a.refused = true;
                a.results.push((target, Err(code.to_string())));
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A send in a state file has its body's fields beside the others, as before they had a
    /// type of their own, and one written before `to_given`, `ids_given` and `parts` reads.
    #[test]
    fn a_send_is_kept_as_one_flat_object() {
        let old = serde_json::json!({
            "seq": 3, "stamp": {"at_ms": 1, "wall_ms": 2}, "conn": null, "conn_opened_us": null,
            "path": "token", "to": "dev", "ids": null, "ids_len": null, "ttl": {"Whole": 60},
            "collapse_key": null, "payload_bytes": 4, "reserved": [], "fingerprint": 9,
            "dry_run": false, "message_id": null, "facts": {}
        });
        let sent: Sent = serde_json::from_value(old.clone()).expect("an older send reads");
        assert_eq!((sent.to.as_deref(), sent.fingerprint, sent.to_given), (Some("dev"), 9, false));
        let written = serde_json::to_value(&sent).unwrap();
        for (k, v) in old.as_object().unwrap() {
            assert_eq!(written.get(k), Some(v), "{k}");
        }
    }

    #[test]
    fn http_dates_round_trip_and_round_up() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777_000));
        assert_eq!(http_date(784_111_777_001), "Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(retry_after_ms("120", 5), Some(120_000));
        assert_eq!(retry_after_ms("Sun, 06 Nov 1994 08:49:40 GMT", 784_111_777_000), Some(3000));
        assert_eq!(retry_after_ms("soon", 0), None);
    }
}
