//! The driver contract (`gcmspec-driver/1`, docs/client-drivers.md): how `gcmspec client`
//! talks to a driver, a small program that makes one client library do what it is asked.
//!
//! One JSON object a line each way. The driver speaks first: a [`Hello`] naming the library
//! and what it can be asked. Then, for each [`Request`] (with an `id`), one [`Reply`] with
//! the same `id`: what the library `returned` (in the shape of [`Returned`]), what it
//! `raised`, or that it cannot be asked that (`unsupported`). At the end of stdin the driver
//! exits. One driver process serves one case.
//!
//! gcmspec is the library's caller: it keeps the tokens and group keys (an app server's
//! store) and updates them only from what the library returned, so a library that hides a
//! canonical id or a `NotRegistered` from its caller shows in the verdicts as the stale id
//! used again.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Via;

/// The `contract` field of the hello line; bumped on any incompatible change.
pub const CONTRACT: &str = "gcmspec-driver/1";

/// What a driver can be asked, as its hello line lists it.
pub const ABILITIES: &[(&str, &str)] = &[
    ("http", "send a JSON message to one registration token"),
    ("multicast", "send one JSON message to a list of registration tokens"),
    ("plain-text", "send to one token in the plain-text (form-encoded) format"),
    ("group-send", "send to a notification key"),
    ("group-management", "create a device group and add or remove its members"),
    ("xmpp", "keep an XMPP (CCS) session: send on it, and handle what arrives"),
];

/// The driver's first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub contract: String,
    /// The library it drives, as its package registry names it.
    pub library: String,
    pub version: String,
    /// What it can be asked: names from [`ABILITIES`].
    #[serde(default)]
    pub supports: Vec<String>,
}

impl Hello {
    /// Why a hello line cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.contract != CONTRACT {
            return Some(format!("it speaks contract {:?}; this gcmspec speaks {CONTRACT:?}", self.contract));
        }
        let unknown: Vec<&str> =
            self.supports.iter().map(String::as_str).filter(|s| !ABILITIES.iter().any(|(a, _)| a == s)).collect();
        if !unknown.is_empty() {
            return Some(format!(
                "it supports {} unknown to {CONTRACT} (known: {})",
                unknown.join(", "),
                ABILITIES.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", ")
            ));
        }
        None
    }
}

/// Whom a send is for, as the caller addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    Token(String),
    Tokens(Vec<String>),
    NotificationKey(String),
}

/// A message as the caller wants it sent; the driver maps it to the library's message type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delivery_receipt_requested: bool,
}

/// What gcmspec asks, with the `id` its reply carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Send through the library, with its own retries, and say what it returned.
    Send {
        to: Recipient,
        via: Via,
        message: Message,
    },
    CreateGroup {
        notification_key_name: String,
        tokens: Vec<String>,
    },
    /// `notification_key`: the key the library returned when the group was made, if it did.
    AddToGroup {
        notification_key_name: String,
        #[serde(default)]
        notification_key: Option<String>,
        tokens: Vec<String>,
    },
    RemoveFromGroup {
        notification_key_name: String,
        #[serde(default)]
        notification_key: Option<String>,
        tokens: Vec<String>,
    },
    /// Keep the XMPP session open `seconds`, on `connections` connections, handling what
    /// arrives (acks, upstream messages, receipts, control messages).
    XmppListen {
        seconds: f64,
        connections: usize,
    },
    /// Send `count` copies of the message (each with `data.n` set to its index) over XMPP
    /// as fast as the session allows.
    XmppBurst {
        to: Recipient,
        count: usize,
        message: Message,
    },
    /// Close the XMPP session.
    XmppClose,
}

/// The driver's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    /// What the library returned to its caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned: Option<Value>,
    /// What it raised (an exception, an error callback): its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised: Option<String>,
    /// It cannot be asked this through its API: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// What a send returned, as far as the library told its caller; a field the library does
/// not expose is left out. gcmspec updates its store from `results` (a `canonical` replaces
/// the token, an `error` of `NotRegistered` deletes it) and reads a group's key from
/// `notification_key`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Returned {
    /// Per token sent to, in any order.
    #[serde(default)]
    pub results: Vec<TokenResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<u64>,
    /// A group send's members the service could not reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tokens: Vec<String>,
    /// create-group (and add or remove): the group's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenResult {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The canonical registration id the service answered for this token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
    /// The error code, as the service gave it (`NotRegistered`, `Unavailable`,
    /// `DEVICE_UNREGISTERED`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TokenResult {
    /// The service said the token is gone: the caller deletes it.
    pub fn gone(&self) -> bool {
        matches!(self.error.as_deref(), Some("NotRegistered" | "DEVICE_UNREGISTERED"))
    }
}

/// A line a driver may write at most: a larger one breaks the contract (a driver that prints
/// a library's debug dump on stdout, say) rather than fill gcmspec's memory.
pub const MAX_LINE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_read_as_the_document_shows_them() {
        let r: Request = serde_json::from_value(json!({
            "id": 3, "op": "send", "to": {"notification_key": "k"}, "via": "json",
            "message": {"data": {"a": "b"}, "time_to_live": 60}
        }))
        .unwrap();
        assert!(matches!(r.op, Op::Send { to: Recipient::NotificationKey(ref k), via: Via::Json, .. } if k == "k"));
        let line = serde_json::to_value(Request { id: 1, op: Op::XmppClose }).unwrap();
        assert_eq!(line, json!({"id": 1, "op": "xmpp-close"}));
    }

    #[test]
    fn a_hello_of_another_contract_or_with_unknown_abilities_is_refused() {
        let hello = |c: &str, s: &[&str]| Hello {
            contract: c.into(),
            library: "x".into(),
            version: "1".into(),
            supports: s.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(hello(CONTRACT, &["http", "xmpp"]).problem(), None);
        assert!(hello("gcmspec-driver/2", &[]).problem().unwrap().contains("gcmspec-driver/2"));
        assert!(hello(CONTRACT, &["telepathy"]).problem().unwrap().contains("telepathy"));
    }
}
