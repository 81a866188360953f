//! The other party: app servers and the client libraries they use, asked to do things and
//! judged by the reference's verdicts.
//!
//! - [`Command`]: what a test (or `gcmspec client`) asks an app server to do: send a message
//!   on a path, manage a group, keep an XMPP session. It is the vocabulary of the driver
//!   contract (docs/client-drivers.md).
//! - [`Client`]: anything that does those things against the reference.
//! - [`reference_client::ReferenceClient`]: a small app server of this project's own,
//!   correct by default; each [`AppFault`] breaks one duty of the app-server rules, each
//!   [`AppVariant`] does something the documents allow differently.
//! - [`cases`]: a case per app-server rule and path it covers, which sets up devices and
//!   scripted answers, asks the client to act, and reads the verdicts.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod cases;
pub mod contract;
pub mod driven_library;
pub mod library_suite;
pub mod matrix;
pub mod reference_client;
pub mod speaks_contract;
mod store;
mod xmpp_session;

/// What an app server is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Command {
    /// Send a message, and say what came of it.
    Send { to: To, message: Outgoing, via: Via },
    /// Make a device group for a user's devices of one app (`app` names it, when the app
    /// server keeps several apps apart).
    CreateGroup {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        tokens: Vec<String>,
    },
    AddToGroup {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        tokens: Vec<String>,
    },
    RemoveFromGroup {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        tokens: Vec<String>,
    },
    /// Keep the XMPP session open for a while, handling what arrives (upstream messages,
    /// receipts, control messages), on `connections` connections at once (default 1).
    XmppListen {
        seconds: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connections: Option<usize>,
    },
    /// Send `count` messages over XMPP as fast as the session allows.
    XmppBurst { to: To, count: usize, message: Outgoing },
    /// End the XMPP session.
    XmppClose,
}

/// Whom a send is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum To {
    /// One device, by the token the app server stored for it.
    Token(String),
    /// Several devices at once (`registration_ids`).
    Tokens(Vec<String>),
    /// A user's device group.
    Group {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
    },
    /// A device group by the notification key its caller kept (a driven library is handed
    /// the key, not the user).
    Key(String),
}

/// How a send goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    Json,
    PlainText,
    Xmpp,
}

/// A message to send, as the app wants it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<i64>,
    /// XMPP: ask for a delivery receipt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub receipt: bool,
}

/// Something that acts as an app server against the reference: the project's own
/// [`reference_client::ReferenceClient`], or a driver around a real library.
pub trait Client: Send {
    /// A short name for reports.
    fn describe(&self) -> String;
    /// Does it, and says what came of it (what a library returned to its caller), or why it
    /// could not; `Err(Unsupported)` when the client cannot be asked to do it at all.
    fn run(&mut self, command: &Command) -> Result<Value, ClientError>;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// It would not, or could not (a refusal to send something invalid is one).
    #[error("{0}")]
    Failed(String),
    /// What stands between gcmspec and the client broke (a driver that is late, exits or
    /// breaks its contract): never a refusal, always the case's failure.
    #[error("{0}")]
    Broken(String),
}

/// A duty of the app-server rules the reference client breaks, named by the rule's id (one
/// more duty of the same rule is `rule-id:what`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppFault {
    TtlOutOfRange,
    BothTargetFields,
    UnsplitIds,
    OversizedPayload,
    ReservedKey,
    IgnoresCanonical,
    KeepsNotRegistered,
    /// A fresh collapse key on every message, whatever the device holds.
    CollapseKeyPerMessage,
    /// A collapse key of its own, fresh each time, on every message the caller sent without one.
    MakesUpCollapseKeys,
    RecreatesGroups,
    OneGroupPerUser,
    SendsToGroupName,
    AddsUnobtainedTokens,
    NeverRetriesGroups,
    NeverRetries,
    IgnoresRetryAfter,
    NoBackoff,
    ResendsSuccesses,
    /// After some ids of a multicast fail, sends to the whole list again.
    RetriesWholeList,
    ReusesMessageIds,
    NeverAcksUpstream,
    NeverAcksReceipts,
    AcksOnOtherConnection,
    IgnoresDraining,
    NoFlowControl,
}

impl AppFault {
    pub const ALL: &'static [AppFault] = &[
        AppFault::TtlOutOfRange,
        AppFault::BothTargetFields,
        AppFault::UnsplitIds,
        AppFault::OversizedPayload,
        AppFault::ReservedKey,
        AppFault::IgnoresCanonical,
        AppFault::KeepsNotRegistered,
        AppFault::CollapseKeyPerMessage,
        AppFault::MakesUpCollapseKeys,
        AppFault::RecreatesGroups,
        AppFault::OneGroupPerUser,
        AppFault::SendsToGroupName,
        AppFault::AddsUnobtainedTokens,
        AppFault::NeverRetriesGroups,
        AppFault::NeverRetries,
        AppFault::IgnoresRetryAfter,
        AppFault::NoBackoff,
        AppFault::ResendsSuccesses,
        AppFault::RetriesWholeList,
        AppFault::ReusesMessageIds,
        AppFault::NeverAcksUpstream,
        AppFault::NeverAcksReceipts,
        AppFault::AcksOnOtherConnection,
        AppFault::IgnoresDraining,
        AppFault::NoFlowControl,
    ];

    /// The rule it breaks, and what it does.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            AppFault::TtlOutOfRange => ("app.send.ttl-range", "passes time_to_live on unchecked, one past the range"),
            AppFault::BothTargetFields => {
                ("app.send.one-target-field", "names its targets in both `to` and `registration_ids`")
            }
            AppFault::UnsplitIds => ("app.send.registration-ids-count", "sends a list of any length in one request"),
            AppFault::OversizedPayload => ("app.send.payload-limit", "sends data of any size"),
            AppFault::ReservedKey => ("app.send.reserved-keys", "adds `from` to every message's data"),
            AppFault::IgnoresCanonical => {
                ("app.canonical-id.replace", "keeps the old registration id after a canonical id")
            }
            AppFault::KeepsNotRegistered => {
                ("app.not-registered.delete", "keeps a registration id after NotRegistered")
            }
            AppFault::CollapseKeyPerMessage => {
                ("app.collapse-key.in-flight", "makes a fresh collapse key for every message")
            }
            AppFault::MakesUpCollapseKeys => (
                "app.collapse-key.limit",
                "adds a collapse key of its own, a fresh one each time, to every message sent without one",
            ),
            AppFault::RecreatesGroups => {
                ("app.group.save-key", "forgets a group's key and asks to create the group again")
            }
            AppFault::OneGroupPerUser => {
                ("app.group.name-per-app", "names a group after the user alone, whatever the app")
            }
            AppFault::SendsToGroupName => ("app.group.create-before-send", "sends to a group's name, not its key"),
            AppFault::AddsUnobtainedTokens => {
                ("app.group.create-before-send:tokens", "adds a token no device gave it to each group it makes")
            }
            AppFault::NeverRetriesGroups => ("app.group.retry", "never sends a group message again after it failed"),
            AppFault::NeverRetries => ("app.retry.server-error", "never retries a 5xx, Unavailable or a nack"),
            AppFault::IgnoresRetryAfter => ("app.retry.after", "retries on its own back-off, ignoring Retry-After"),
            AppFault::NoBackoff => ("app.retry.backoff", "retries every second, without backing off"),
            AppFault::ResendsSuccesses => {
                ("app.retry.only-failures", "takes a success for a failure and sends the message again")
            }
            AppFault::RetriesWholeList => (
                "app.retry.only-failures:whole-list",
                "after some ids of a multicast fail, sends to every id of the list again",
            ),
            AppFault::ReusesMessageIds => ("app.xmpp.message-id", "numbers XMPP messages per connection, from 1 again"),
            AppFault::NeverAcksUpstream => ("app.xmpp.ack-upstream", "never acks upstream messages"),
            AppFault::NeverAcksReceipts => ("app.xmpp.ack-receipts", "never acks delivery receipts"),
            AppFault::AcksOnOtherConnection => {
                ("app.xmpp.ack-own-connection", "acks on its newest connection, whichever received the message")
            }
            AppFault::IgnoresDraining => ("app.xmpp.draining", "goes on sending on a draining connection"),
            AppFault::NoFlowControl => ("app.xmpp.pending-limit", "sends without waiting for acks"),
        }
    }

    /// The rule it breaks.
    pub fn rule_id(self) -> &'static str {
        let id = self.describe().0;
        id.split(':').next().unwrap_or(id)
    }

    pub fn name(self) -> &'static str {
        self.describe().0
    }
}

impl std::str::FromStr for AppFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AppFault::ALL.iter().copied().find(|f| f.name() == s).ok_or_else(|| {
            format!(
                "unknown app fault {s:?} (known: {})",
                AppFault::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Ways the documents allow that the reference client does not take by default: a client
/// that takes them must pass every rule all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppVariant {
    /// Retries a group's failed members by sending to the key again, not to each member.
    RetriesViaKey,
    /// Looks a group's key up before every add or remove (a lookup gives a key again).
    LooksUpKeys,
    /// Backs off with up to 15% jitter, and waits three times as long each time.
    JitteredBackoff,
    /// Opens a new XMPP connection for each burst of messages, closing the last one.
    ConnectionPerBurst,
    /// Marks each retry with the attempt's number in its data (`attempt`).
    MarksRetries,
    /// Tries a message twice at most: one retry, then it gives up.
    GivesUpAfterOneRetry,
    /// Backs off from half a second, not one (the documents give no first wait).
    ShortFirstWait,
}

impl AppVariant {
    pub const ALL: &'static [AppVariant] = &[
        AppVariant::RetriesViaKey,
        AppVariant::LooksUpKeys,
        AppVariant::JitteredBackoff,
        AppVariant::ConnectionPerBurst,
        AppVariant::MarksRetries,
        AppVariant::GivesUpAfterOneRetry,
        AppVariant::ShortFirstWait,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AppVariant::RetriesViaKey => "retries-via-key",
            AppVariant::LooksUpKeys => "looks-up-keys",
            AppVariant::JitteredBackoff => "jittered-backoff",
            AppVariant::ConnectionPerBurst => "connection-per-burst",
            AppVariant::MarksRetries => "marks-retries",
            AppVariant::GivesUpAfterOneRetry => "gives-up-after-one-retry",
            AppVariant::ShortFirstWait => "short-first-wait",
        }
    }
}
