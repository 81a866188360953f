//! Where a rule's text applies: the paths it covers, along three axes.
//!
//! - **delivery**: how a message is sent: to a registration id (`token`), to a list of them
//!   (`multicast`), to a notification key (`key`), in the plain-text form (`plain-text`), or
//!   over XMPP to an id or a key (`xmpp`, `xmpp-key`);
//! - **group**: which device-group endpoint: the app server's (`server`), the client's
//!   (`client`), or the lookup (`lookup`);
//! - **tenancy**: whether the state the rule speaks of is shared right: two devices of one
//!   sender (`two-devices`), one device messaged by two senders (`two-senders`).
//!
//! A rule declares, from its quote, the paths it covers (`covers`); each check runs over the
//! covered paths its steps can take, one trial per path for a check written once
//! (generic `send`, `audience`, `manage` steps), or the path its fixed requests take. A
//! covered path that no check runs needs a stated reason (`not_run`); `gcmspec lint` refuses
//! the rule otherwise, and `gcmspec rules` shows the matrix.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    Token,
    Multicast,
    Key,
    PlainText,
    Xmpp,
    XmppKey,
    Server,
    Client,
    Lookup,
    TwoDevices,
    TwoSenders,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    Delivery,
    Group,
    Tenancy,
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Axis::Delivery => "delivery",
            Axis::Group => "group",
            Axis::Tenancy => "tenancy",
        })
    }
}

impl Path {
    pub const ALL: &'static [Path] = &[
        Path::Token,
        Path::Multicast,
        Path::Key,
        Path::PlainText,
        Path::Xmpp,
        Path::XmppKey,
        Path::Server,
        Path::Client,
        Path::Lookup,
        Path::TwoDevices,
        Path::TwoSenders,
    ];

    /// Sends to registration ids: the paths a send addressed to one device can take.
    pub const TO_TOKENS: &'static [Path] = &[Path::Token, Path::Multicast, Path::PlainText, Path::Xmpp];
    /// Sends to a notification key.
    pub const TO_KEYS: &'static [Path] = &[Path::Key, Path::XmppKey];

    pub fn name(self) -> &'static str {
        match self {
            Path::Token => "token",
            Path::Multicast => "multicast",
            Path::Key => "key",
            Path::PlainText => "plain-text",
            Path::Xmpp => "xmpp",
            Path::XmppKey => "xmpp-key",
            Path::Server => "server",
            Path::Client => "client",
            Path::Lookup => "lookup",
            Path::TwoDevices => "two-devices",
            Path::TwoSenders => "two-senders",
        }
    }

    /// What the path is, for a person.
    pub fn description(self) -> &'static str {
        match self {
            Path::Token => "HTTP JSON send to one registration id (`to`, /fcm/send)",
            Path::Multicast => "HTTP JSON send to a list of registration ids (`registration_ids`, /gcm/send)",
            Path::Key => "HTTP JSON send to a notification key (`to`, /fcm/send)",
            Path::PlainText => "plain-text form send to one registration id (/gcm/send)",
            Path::Xmpp => "XMPP message to one registration id",
            Path::XmppKey => "XMPP message to a notification key",
            Path::Server => "server-side group management (POST /gcm/notification)",
            Path::Client => "client-side group management (POST /gcm/googlenotification)",
            Path::Lookup => "group lookup (GET /gcm/notification?notification_key_name=)",
            Path::TwoDevices => "two devices of one sender, side by side",
            Path::TwoSenders => "one device that two senders message",
        }
    }

    pub fn axis(self) -> Axis {
        match self {
            Path::Token | Path::Multicast | Path::Key | Path::PlainText | Path::Xmpp | Path::XmppKey => Axis::Delivery,
            Path::Server | Path::Client | Path::Lookup => Axis::Group,
            Path::TwoDevices | Path::TwoSenders => Axis::Tenancy,
        }
    }

    /// A send over XMPP (the path needs the target's connection server).
    pub fn is_xmpp(self) -> bool {
        matches!(self, Path::Xmpp | Path::XmppKey)
    }

    /// A send addressed to a notification key.
    pub fn to_key(self) -> bool {
        matches!(self, Path::Key | Path::XmppKey)
    }

    /// The names a rule's `covers` may use for several paths at once.
    pub fn expand_alias(name: &str) -> Option<Vec<Path>> {
        Some(match name {
            "sends" => Path::ALL.iter().copied().filter(|p| p.axis() == Axis::Delivery).collect(),
            "token-sends" => Path::TO_TOKENS.to_vec(),
            "key-sends" => Path::TO_KEYS.to_vec(),
            "group-endpoints" => vec![Path::Server, Path::Client],
            "tenants" => vec![Path::TwoDevices, Path::TwoSenders],
            _ => return None,
        })
    }

    pub const ALIASES: &'static [&'static str] = &["sends", "token-sends", "key-sends", "group-endpoints", "tenants"];
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown path `{0}`")]
pub struct UnknownPath(pub String);

impl FromStr for Path {
    type Err = UnknownPath;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Path::ALL.iter().copied().find(|p| p.name() == s).ok_or_else(|| UnknownPath(s.to_string()))
    }
}

/// A documented number a rule's checks probe at n-1, n and n+1, in the unit the text gives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limit {
    /// The parameter that holds n (a profile's or the rule's).
    pub param: String,
    pub unit: Unit,
    /// What the text says of n itself.
    pub at_limit: AtLimit,
}

/// The unit a limit is counted in; probes count in it (bytes with multibyte content,
/// members with an id listed twice), and the self-test counts in another to show they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    Bytes,
    Seconds,
    Members,
    Messages,
    Keys,
    Senders,
    Ids,
    Tokens,
}

impl Unit {
    pub const ALL: &'static [Unit] = &[
        Unit::Bytes,
        Unit::Seconds,
        Unit::Members,
        Unit::Messages,
        Unit::Keys,
        Unit::Senders,
        Unit::Ids,
        Unit::Tokens,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Seconds => "seconds",
            Unit::Members => "members",
            Unit::Messages => "messages",
            Unit::Keys => "keys",
            Unit::Senders => "senders",
            Unit::Ids => "ids",
            Unit::Tokens => "tokens",
        }
    }
}

/// Whether n itself is within the limit, or the text leaves it open ("If the limit is
/// reached" against "up to 100": both readings pass at n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AtLimit {
    Within,
    Either,
}

/// The rounds of a probe: the value probed, and `over` as the round's expectations read it
/// (`false` within the limit, `true` past it, `"either"` at n where the text leaves it open).
pub fn probe_rounds(n: i64, at_limit: AtLimit) -> Vec<(i64, serde_json::Value)> {
    use serde_json::Value;
    let at = match at_limit {
        AtLimit::Within => Value::Bool(false),
        AtLimit::Either => Value::String("either".into()),
    };
    vec![(n - 1, Value::Bool(false)), (n, at), (n + 1, Value::Bool(true))]
}

/// Where a check's steps use the probed value, in words ("step 5's advance_clock.seconds",
/// "step 2's repeat count"), for a failure to say what the round's value did: sent, repeated, or
/// the clock moved by it. Any `${...}` that names `probe` counts (`${min(probe, n)}` too).
/// A walk with a stack over each step's fields; the steps are the catalogue's.
pub fn probe_uses(steps: &[super::Step]) -> Vec<String> {
    use serde_json::Value;
    let mut uses = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        // What the step does with it: its action's fields (named as the spec file writes
        // them, `send.time_to_live`) and its repetitions. Expectations read the value, and
        // do not make a round differ.
        let Ok(action) = serde_json::to_value(&step.action) else { continue };
        let repeat = step.repeat.as_ref().map(|r| ("repeat count".to_string(), r));
        let mut found = Vec::new();
        let mut stack: Vec<(String, &Value)> = repeat.into_iter().collect();
        if let Value::Object(o) = &action {
            stack.extend(o.iter().rev().map(|(k, v)| (k.clone(), v)));
        }
        while let Some((path, v)) = stack.pop() {
            match v {
                Value::String(s) if names_probe(s) => found.push(path),
                Value::Object(o) => stack.extend(o.iter().rev().map(|(k, v)| (format!("{path}.{k}"), v))),
                Value::Array(a) => stack.extend(a.iter().enumerate().rev().map(|(k, v)| (format!("{path}[{k}]"), v))),
                _ => {}
            }
        }
        if !found.is_empty() {
            uses.push(format!("step {}'s {}", i + 1, found.join(" and ")));
        }
    }
    match uses.split_last() {
        Some((last, [])) => vec![last.clone()],
        Some((last, rest)) => vec![format!("{} and {last}", rest.join(", "))],
        None => Vec::new(),
    }
}

/// Whether a template's `${...}` expressions name the probe.
fn names_probe(template: &str) -> bool {
    template.split("${").skip(1).any(|rest| {
        let expr = rest.split('}').next().unwrap_or("");
        expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == super::PROBE_VAR)
    })
}

/// One trial of a check: the paths it exercises and how its generic steps run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The covered paths this trial exercises (what the matrix credits it with).
    pub paths: Vec<Path>,
    /// The delivery path `send` steps take.
    pub delivery: Path,
    /// The endpoint `manage` steps use.
    pub endpoint: Path,
    /// Two devices side by side, or one device two senders message; none for one of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<Path>,
    /// The trial name's suffix: empty for a check's first run, `@path` for the others.
    pub suffix: String,
}

impl Run {
    /// A run on the defaults: the first path of each axis.
    pub fn plain() -> Run {
        Run { paths: Vec::new(), delivery: Path::Token, endpoint: Path::Server, tenancy: None, suffix: String::new() }
    }
}
