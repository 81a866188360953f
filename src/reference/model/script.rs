//! Scripted answers: what a test makes the reference answer next, for a sender or one
//! registration id, for the next N requests or for a time (`POST .../senders/{id}/script`,
//! docs/control-api.md). Every answer is one the documents or the notes describe: a 5xx with
//! or without Retry-After, a result's error code, a canonical id, NotRegistered, a group send
//! that fails for some or all members, an XMPP nack, and acks that come late (a connection
//! server under load, which flow control is for).
//!
//! Scripts are part of the model (they are inputs, kept by a state file like any other); the
//! adapters ask for them where they apply, and each use counts toward `times`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::*;

/// Scripts one sender may have waiting at once.
pub const MAX_SCRIPTS_PER_SENDER: usize = 64;

/// Per-result error codes of the legacy HTTP reference (protocol-notes.md).
pub const RESULT_ERRORS: &[&str] = &[
    "MissingRegistration",
    "InvalidRegistration",
    "NotRegistered",
    "InvalidPackageName",
    "MismatchSenderId",
    "MessageTooBig",
    "InvalidDataKey",
    "InvalidTtl",
    "Unavailable",
    "InternalServerError",
    "DeviceMessageRateExceeded",
    "TopicsMessageRateExceeded",
];

/// Nack codes of the legacy XMPP reference.
pub const NACK_CODES: &[&str] = &[
    "BAD_ACK",
    "BAD_REGISTRATION",
    "CONNECTION_DRAINING",
    "DEVICE_MESSAGE_RATE_EXCEEDED",
    "DEVICE_UNREGISTERED",
    "INTERNAL_SERVER_ERROR",
    "INVALID_JSON",
    "QUOTA_EXCEEDED",
    "SERVICE_UNAVAILABLE",
    "TOPICS_MESSAGE_RATE_EXCEEDED",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Script {
    pub id: u64,
    pub answer: Scripted,
    /// Uses left; `None` while `until_ms` holds.
    pub times: Option<u64>,
    /// The sender's clock until which it holds.
    pub until_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scripted {
    /// HTTP: the whole request answered with this 5xx.
    Status { status: u16, retry_after: Option<RetryAfter>, requests: Requests },
    /// A send's result for this id (over XMPP, the matching nack).
    Error { error: String, registration_id: String },
    /// The id's app registers again first: the answer carries the canonical id.
    Canonical { registration_id: String },
    /// The id's registration is gone first: the answer says NotRegistered.
    NotRegistered { registration_id: String },
    /// A send to the key fails for its first `members` members (all, when `None`).
    GroupFailure { notification_key: String, members: Option<usize> },
    /// XMPP: a downstream message is nacked with this code, not taken.
    Nack { error: String },
    /// XMPP: a downstream message's ack is written only this long after it is taken.
    HoldAcks { release_after_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryAfter {
    /// `Retry-After: N` (delta-seconds).
    Seconds(u64),
    /// `Retry-After: <HTTP date>` this many seconds ahead (of the wall clock).
    DateIn(u64),
}

/// Which HTTP requests a status script answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Requests {
    Sends,
    Groups,
    All,
}

impl Scripted {
    /// What it does, for the journal and the script list.
    pub fn describe(&self) -> String {
        match self {
            Scripted::Status { status, retry_after, .. } => match retry_after {
                Some(RetryAfter::Seconds(s)) => format!("HTTP {status} with Retry-After: {s}"),
                Some(RetryAfter::DateIn(s)) => format!("HTTP {status} with Retry-After: an HTTP date {s} s ahead"),
                None => format!("HTTP {status} without Retry-After"),
            },
            Scripted::Error { error, registration_id } => format!("{error} for {registration_id}"),
            Scripted::Canonical { registration_id } => format!("a canonical id for {registration_id}"),
            Scripted::NotRegistered { registration_id } => format!("NotRegistered for {registration_id}"),
            Scripted::GroupFailure { notification_key, members: Some(n) } => {
                format!("a send to {notification_key} failing for {n} member(s)")
            }
            Scripted::GroupFailure { notification_key, members: None } => {
                format!("a send to {notification_key} failing for every member")
            }
            Scripted::Nack { error } => format!("XMPP nack {error}"),
            Scripted::HoldAcks { release_after_ms } => format!("XMPP acks held {release_after_ms} ms"),
        }
    }

    /// Reads a script's answer from the control API's JSON (docs/control-api.md).
    pub fn parse(body: &Map<String, Value>) -> Result<Scripted, String> {
        let text = |k: &str| body.get(k).and_then(Value::as_str).ok_or_else(|| format!("`{k}` must be a string"));
        let named = |list: &'static [&'static str], k: &str| -> Result<&'static str, String> {
            let v = text(k)?;
            list.iter().copied().find(|c| *c == v).ok_or_else(|| format!("`{k}` must be one of {}", list.join(", ")))
        };
        Ok(match text("kind")? {
            "status" => {
                let status = body
                    .get("status")
                    .and_then(Value::as_u64)
                    .filter(|s| (500..=599).contains(s))
                    .ok_or("`status` must be a 5xx: what the notes say means \"retry later\"")?
                    as u16;
                // A year: longer than any test waits, short enough for any date arithmetic.
                const MAX_RETRY_AFTER: u64 = 365 * 24 * 3600;
                let seconds = |k: &str| {
                    body.get(k).map(|v| {
                        v.as_u64()
                            .filter(|s| *s <= MAX_RETRY_AFTER)
                            .ok_or(format!("`{k}` must be whole seconds, at most {MAX_RETRY_AFTER} (a year)"))
                    })
                };
                let retry_after = match (seconds("retry_after"), seconds("retry_after_date")) {
                    (Some(_), Some(_)) => return Err("give `retry_after` or `retry_after_date`, not both".into()),
                    (Some(s), None) => Some(RetryAfter::Seconds(s?)),
                    (None, Some(s)) => Some(RetryAfter::DateIn(s?)),
                    (None, None) => None,
                };
                let requests = match body.get("requests").and_then(Value::as_str).unwrap_or("sends") {
                    "sends" => Requests::Sends,
                    "groups" => Requests::Groups,
                    "all" => Requests::All,
                    _ => return Err("`requests` must be \"sends\", \"groups\" or \"all\"".into()),
                };
                Scripted::Status { status, retry_after, requests }
            }
            "error" => Scripted::Error {
                error: named(RESULT_ERRORS, "error")?.to_string(),
                registration_id: text("registration_id")?.to_string(),
            },
            "canonical" => Scripted::Canonical { registration_id: text("registration_id")?.to_string() },
            "not-registered" => Scripted::NotRegistered { registration_id: text("registration_id")?.to_string() },
            "group-failure" => Scripted::GroupFailure {
                notification_key: text("notification_key")?.to_string(),
                members: match body.get("members") {
                    None => None,
                    Some(Value::String(s)) if s == "all" => None,
                    Some(v) => Some(
                        v.as_u64().filter(|n| *n > 0).ok_or("`members` must be a count of at least 1, or \"all\"")?
                            as usize,
                    ),
                },
            },
            "nack" => Scripted::Nack { error: named(NACK_CODES, "error")?.to_string() },
            "hold-acks" => Scripted::HoldAcks {
                release_after_ms: body
                    .get("release_after_ms")
                    .and_then(Value::as_u64)
                    .filter(|ms| *ms <= 60_000)
                    .ok_or("`release_after_ms` must be milliseconds, at most 60000")?,
            },
            other => {
                return Err(format!(
                    "unknown kind {other:?}: expected status, error, canonical, not-registered, group-failure, nack or hold-acks"
                ));
            }
        })
    }
}

impl Script {
    pub fn to_json(&self) -> Value {
        json!({ "id": self.id, "answer": self.answer.describe(), "times": self.times, "until_ms": self.until_ms })
    }
}

impl Model {
    /// Scripts an answer for `sender`'s next requests: `times` of them (1 by default), or
    /// those within `for_seconds` (at most `times` of them, when both are given).
    pub fn add_script(
        &mut self,
        sender: &str,
        answer: Scripted,
        times: Option<u64>,
        for_seconds: Option<u64>,
    ) -> Result<u64, ScriptError> {
        if !self.senders.contains_key(sender) {
            return Err(ScriptError::UnknownSender(format!("unknown sender id {sender:?}")));
        }
        let now = self.now_ms(sender);
        let scripts = self.scripts.entry(sender.to_string()).or_default();
        scripts.retain(|s| s.until_ms.is_none_or(|u| u > now));
        if scripts.len() >= MAX_SCRIPTS_PER_SENDER {
            return Err(ScriptError::Full(format!(
                "a sender has at most {MAX_SCRIPTS_PER_SENDER} scripts waiting: DELETE them first"
            )));
        }
        self.next_script += 1;
        let until_ms = for_seconds.map(|s| now.saturating_add(s.saturating_mul(1000)));
        let times = if until_ms.is_some() { times } else { Some(times.unwrap_or(1)) };
        scripts.push(Script { id: self.next_script, answer, times, until_ms });
        Ok(self.next_script)
    }

    pub fn scripts(&self, sender: &str) -> Vec<Value> {
        let now = self.now_ms(sender);
        self.scripts
            .get(sender)
            .map(|s| s.iter().filter(|s| s.until_ms.is_none_or(|u| u > now)).map(Script::to_json).collect())
            .unwrap_or_default()
    }

    pub fn clear_scripts(&mut self, sender: &str) -> bool {
        self.scripts.remove(sender);
        self.senders.contains_key(sender)
    }

    /// Takes one use of the first live script of `sender` that `pick` accepts.
    fn take_script<R>(&mut self, sender: &str, mut pick: impl FnMut(&Scripted) -> Option<R>) -> Option<R> {
        let now = self.now_ms(sender);
        let scripts = self.scripts.get_mut(sender)?;
        scripts.retain(|s| s.until_ms.is_none_or(|u| u > now));
        let (at, found) = scripts.iter().enumerate().find_map(|(i, s)| pick(&s.answer).map(|r| (i, r)))?;
        if let Some(times) = &mut scripts[at].times {
            *times -= 1;
            if *times == 0 {
                scripts.remove(at);
            }
        }
        if scripts.is_empty() {
            self.scripts.remove(sender);
        }
        Some(found)
    }

    /// HTTP: a scripted 5xx for this request (`send`: a send, else a group operation).
    pub fn scripted_status(&mut self, sender: &str, send: bool) -> Option<(u16, Option<RetryAfter>)> {
        if self.scripts.is_empty() {
            return None;
        }
        let found = self.take_script(sender, |a| match a {
            Scripted::Status { status, retry_after, requests }
                if *requests == Requests::All || (*requests == Requests::Sends) == send =>
            {
                Some((*status, *retry_after, a.describe()))
            }
            _ => None,
        })?;
        self.note_scripted(found.2);
        Some((found.0, found.1))
    }

    /// XMPP: a scripted nack for the next downstream message.
    pub fn scripted_nack(&mut self, sender: &str) -> Option<&'static str> {
        if self.scripts.is_empty() {
            return None;
        }
        let (code, what) = self.take_script(sender, |a| match a {
            Scripted::Nack { error } => NACK_CODES.iter().copied().find(|c| c == error).map(|c| (c, a.describe())),
            _ => None,
        })?;
        self.note_scripted(what);
        Some(code)
    }

    /// XMPP: how long to hold the next downstream message's ack, if scripted.
    pub fn scripted_hold(&mut self, sender: &str) -> Option<u64> {
        if self.scripts.is_empty() {
            return None;
        }
        let (ms, what) = self.take_script(sender, |a| match a {
            Scripted::HoldAcks { release_after_ms } => Some((*release_after_ms, a.describe())),
            _ => None,
        })?;
        self.note_scripted(what);
        Some(ms)
    }

    /// Before a send: the scripts for its ids or its key take effect. A canonical id or a
    /// NotRegistered changes the registration as the service would have; an error or a group
    /// failure holds for this send only (`forced`).
    pub(super) fn apply_send_scripts(&mut self, sender: &str, target: &Target) {
        self.forced.clear();
        if !self.scripts.contains_key(sender) {
            return;
        }
        let ids: Vec<String> = match target {
            Target::To(to) => match self.groups.get(to.as_str()) {
                Some(g) => {
                    let members: Vec<String> = g.members.iter().map(|m| m.to_string()).collect();
                    let key = to.clone();
                    if let Some((members_failing, what)) = self.take_script(sender, |a| match a {
                        Scripted::GroupFailure { notification_key, members } if *notification_key == key => {
                            Some((*members, a.describe()))
                        }
                        _ => None,
                    }) {
                        let n = members_failing.unwrap_or(members.len()).min(members.len());
                        for m in &members[..n] {
                            self.forced.insert(m.clone(), "Unavailable");
                        }
                        self.note_scripted(what);
                    }
                    members
                }
                None => vec![to.clone()],
            },
            Target::RegistrationIds(ids) => ids.clone(),
            Target::Missing => Vec::new(),
        };
        for id in ids {
            let Some((answer, what)) = self.take_script(sender, |a| match a {
                Scripted::Error { registration_id, .. }
                | Scripted::Canonical { registration_id }
                | Scripted::NotRegistered { registration_id }
                    if *registration_id == id =>
                {
                    Some((a.clone(), a.describe()))
                }
                _ => None,
            }) else {
                continue;
            };
            match answer {
                Scripted::Error { error, .. } => {
                    if let Some(code) = RESULT_ERRORS.iter().copied().find(|c| *c == error) {
                        self.forced.insert(id.clone(), code);
                    }
                }
                Scripted::Canonical { .. } => {
                    let _ = self.reregister(&id);
                }
                Scripted::NotRegistered { .. } => {
                    let current = self.resolve(&id).to_string();
                    if let Some(inst) = self.instances.get_mut(current.as_str()) {
                        inst.registered = false;
                    }
                }
                _ => {}
            }
            self.note_scripted(what);
        }
    }

    fn note_scripted(&mut self, what: String) {
        if let Some(o) = &mut self.observation {
            o.scripted.push(what);
        }
    }
}

/// Why a script was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptError {
    UnknownSender(String),
    /// The sender's scripts are at their cap (507, as every cap).
    Full(String),
}
