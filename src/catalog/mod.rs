//! The rules, as written in `specs/*.toml`.
//!
//! Loading is pure: [`load`] takes file names and texts (and the source documents the quotes
//! come from) and returns a [`Catalog`] or every problem at once. It knows nothing of
//! transports, servers or the harness.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod coverage;
mod load;
pub mod template;
pub mod tree;

pub use coverage::{AtLimit, Axis, Limit, Path, Run, Unit};
pub use load::{SpecError, SpecErrors, load};

/// Everything the spec files say: documents, profiles and rules.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub documents: BTreeMap<String, Document>,
    pub profiles: BTreeMap<String, Profile>,
    pub rules: Vec<Rule>,
}

impl Catalog {
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The rules that bind servers: what `gcmspec run` checks.
    pub fn server_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.party == Party::Server)
    }

    /// The rules that bind app servers: what the reference grades from its journal.
    pub fn app_server_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.party == Party::AppServer)
    }

    /// The variables a scenario of `rule` sees before its first step under `profile`:
    /// the profile's parameters, then the rule's own.
    pub fn parameters(&self, rule: &Rule, profile: &str) -> BTreeMap<String, Value> {
        let mut vars: BTreeMap<String, Value> = self
            .profiles
            .get(profile)
            .map(|p| p.params.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect())
            .unwrap_or_default();
        vars.extend(rule.params.clone());
        vars
    }

    /// Whether a target may declare its own value for this parameter (the documents give none).
    pub fn server_chosen(&self, param: &str) -> bool {
        self.profiles.values().any(|p| p.params.get(param).is_some_and(|p| p.server_chosen))
    }

    /// What is wrong with the numbers a target declares (`params` of its capabilities), if
    /// anything: each must be one the server chooses, a whole number in its declared range.
    pub fn check_declared(&self, declared: &BTreeMap<String, Value>) -> Result<(), String> {
        let mut problems = Vec::new();
        for (k, v) in declared {
            let range = self.profiles.values().find_map(|p| p.params.get(k).filter(|p| p.server_chosen)?.declared);
            match (range, v.as_u64()) {
                (None, _) => problems.push(format!("`{k}` is not a number the server chooses")),
                (Some((lo, hi)), Some(n)) if (lo..=hi).contains(&n) => {}
                (Some((lo, hi)), _) => {
                    problems.push(format!("`{k}` is {v}: expected a whole number from {lo} to {hi}"))
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

/// A source document that quotes are taken from.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub id: String,
    pub title: String,
    /// The file under `specs/sources/` that holds its text.
    pub file: String,
    /// Lines start with a line number (an excerpt from a source browser); quotes skip them.
    pub line_numbers: bool,
}

/// What differs between revisions of the documents.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub name: String,
    pub title: String,
    pub documents: Vec<String>,
    pub params: BTreeMap<String, Param>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub value: Value,
    pub source: SourceRef,
    /// The documents give no number: this is the reference's choice, and a target may
    /// declare its own in the control API's capabilities (`params`).
    pub server_chosen: bool,
    /// For a number the server chooses: the range a target may declare (`declared`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceRef {
    pub document: String,
    pub section: String,
    pub quote: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Must,
    Should,
    May,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::May => "MAY",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Which party a rule binds: the two the documents address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Party {
    /// A server that implements the protocol (GCM/FCM, its HTTP and connection servers):
    /// judged by checks that `gcmspec run` sends it.
    #[default]
    Server,
    /// The "3rd-party server" (app server, or the client library it uses): judged by a
    /// grader over the journal of what it sent the reference and what it was answered.
    AppServer,
}

impl Party {
    pub fn name(self) -> &'static str {
        match self {
            Party::Server => "server",
            Party::AppServer => "app-server",
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The graders an app-server rule may name (`grader = "..."`): each reads the journal of one
/// sender's exchanges with the reference (`crate::verdicts`), with the rule's parameters.
pub const GRADERS: &[&str] = &[
    "ttl-range",
    "target-exclusive",
    "id-count",
    "payload-size",
    "reserved-keys",
    "stale-id",
    "collapse-keys",
    "group-key-saved",
    "group-one-app",
    "group-before-send",
    "retry",
    "retry-after",
    "backoff",
    "resent-success",
    "message-id",
    "acks",
    "ack-connection",
    "draining",
    "pending-limit",
];

/// One documented rule, with the checks that test it.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub level: Level,
    /// Who the rule binds. A server rule has checks; an app-server rule a grader.
    pub party: Party,
    /// For an app-server rule: the grader that judges the journal (one of [`GRADERS`]),
    /// reading the rule's `params`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grader: Option<String>,
    pub sources: Vec<SourceRef>,
    /// How the rule reads where the documents are vague, and so what the checks accept.
    pub interpretation: Option<String>,
    pub profiles: Vec<String>,
    /// Server capabilities the checks need: those the steps imply plus any the file names.
    pub needs: Vec<String>,
    pub params: BTreeMap<String, Value>,
    /// The paths its text covers (see [`coverage`]), in the order its checks run them.
    pub covers: Vec<Path>,
    /// Covered paths that no check runs, and why.
    pub not_run: BTreeMap<Path, String>,
    /// Documented numbers its checks probe at n-1, n and n+1.
    pub limits: Vec<Limit>,
    pub checks: Vec<Check>,
    pub location: Location,
}

impl Rule {
    /// The trials of its checks that exercise `path`: `(check index, run index)`.
    pub fn runs_on(&self, path: Path) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (c, check) in self.checks.iter().enumerate() {
            for (r, run) in check.runs.iter().enumerate() {
                if run.paths.contains(&path) {
                    out.push((c, r));
                }
            }
        }
        out
    }

    pub fn limit(&self, param: &str) -> Option<&Limit> {
        self.limits.iter().find(|l| l.param == param)
    }

    /// Whether `gcmspec run` tests it against servers (an app-server rule is graded instead).
    pub fn binds_server(&self) -> bool {
        self.party == Party::Server
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub kind: CheckKind,
    /// Its trials: one per covered path a check written once runs over (generic `send`,
    /// `audience` and `manage` steps), or one for the paths its fixed requests take.
    pub runs: Vec<Run>,
    /// A limit of the rule (its parameter) the scenario runs at n-1, n and n+1, with
    /// `${probe}` the value and `${over}` whether it is past the limit.
    pub probe: Option<String>,
    /// Capabilities this check needs: what its steps imply plus the rule's explicit needs.
    /// A server without them can still run the rule's other checks.
    pub needs: Vec<String>,
    pub location: Location,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Scenario(Vec<Step>),
    /// A named property from the harness's registry, run with proptest.
    Property {
        property: String,
        params: BTreeMap<String, Value>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub line: usize,
    pub action: Action,
    /// Acceptable outcomes: the step passes if the response matches any one of them.
    pub expect: Vec<Expect>,
    /// Run a request step this many times (`${i}` counts from 0).
    pub repeat: Option<Value>,
    /// Variable name -> JSON pointer into the response body.
    pub save: Vec<(String, String)>,
    /// Whose `send` it is, where not the trial's sender (whose turn it is, with two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// What a step does. Values are JSON templates (see [`template`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A fresh sender (project), or with `count` an array of them, through the control API.
    NewSender {
        name: String,
        count: Option<Value>,
    },
    /// `count` app instances registered for the given senders (expressions naming a sender
    /// or an array of senders).
    Register {
        name: String,
        count: Value,
        senders: Vec<String>,
        account: Option<Value>,
        platform: Option<Value>,
        package: Option<Value>,
    },
    /// Invalidate these registration ids (one or an array).
    Unregister(Value),
    /// An id_token for an account, minted for a sender's project.
    IdToken {
        name: String,
        account: Value,
        sender: String,
    },
    /// What the device with this registration id has received.
    Inbox(Value),
    Request(Request),
    /// The devices a trial's sends address, made ready for its delivery path: on the key
    /// paths a group of them (per sender), on the others the ids themselves. `${name}` holds
    /// it; a `send` to it takes the trial's path.
    Audience {
        name: String,
        devices: Value,
    },
    /// A device-group operation on the trial's group endpoint: server side, one request;
    /// client side (id_token of the account `${account}`), one request per id, an add
    /// creating the group. Its answer is normalized: `{"ok": bool, "status": ..,
    /// "notification_key": ..}`.
    Manage {
        op: String,
        ids: Value,
        /// The group's name (`${name}` when absent).
        group: Option<Value>,
    },
    /// A downstream send over the trial's transport (HTTP `/fcm/send`, or an XMPP message on
    /// the sender's connection). Its answer is normalized so one expectation fits both:
    /// `{"accepted": bool, "success", "failure", "failed_registration_ids", "canonical",
    /// "error": "bad-registration" | "unregistered" | "invalid" | "unavailable" | ...}`.
    Send(Value),
    /// The device goes `awake`, `idle` or `offline`.
    Connectivity {
        of: Value,
        state: String,
    },
    /// The app is uninstalled from the device.
    Uninstall(Value),
    /// The app registers again on the same device; `name` holds the new registration id.
    Reregister {
        of: Value,
        name: String,
    },
    /// The device sends a message upstream to a notification key.
    Upstream {
        from: Value,
        to: Value,
        data: Option<Value>,
    },
    /// The device handled the group message with this id.
    Handled {
        by: Value,
        message_id: Value,
    },
    /// The sender's clock moves forward.
    AdvanceClock {
        seconds: Value,
        sender: String,
    },
    /// An XMPP connection as an app server, named `name`; `password` overrides the server
    /// key. The step's answer is `{"sasl": "success"}` or `{"sasl": "failure", "condition": ...}`.
    XmppConnect {
        name: String,
        sender: String,
        password: Option<Value>,
        /// The domain of the login (`<sender id>@DOMAIN`); the GCM one when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
    },
    /// A `<gcm>` message on a connection; the answer is the next message back, as JSON.
    XmppSend {
        on: String,
        message: Value,
    },
    /// Raw XML on a connection; the answer is the next message back, as JSON
    /// (`{"stanza_error": "bad-request"}` for a stanza error).
    XmppRaw {
        on: String,
        stanza: Value,
    },
    /// A `<gcm>` message on a connection, not waiting for an answer (acks, pipelining).
    XmppPost {
        on: String,
        message: Value,
    },
    /// The next message the server sends on a connection, as JSON.
    XmppReceive {
        on: String,
    },
    /// Nothing arrives on a connection for a moment.
    XmppQuiet {
        on: String,
    },
    /// The app server closes a connection.
    XmppClose(String),
    /// The server tells the sender's XMPP connections to drain (control API).
    Drain {
        sender: String,
    },
    /// Nothing is sent: the step's expectations read only variables (`value = ...`), such as
    /// what earlier steps matched (`@outcomes`). The text says what is asserted.
    Assert(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The sender variable whose credentials the request carries.
    pub sender: String,
    pub auth: Auth,
    pub headers: Vec<(String, Value)>,
    pub omit_headers: Vec<String>,
    pub query: Vec<(String, Value)>,
    pub body: Body,
}

/// Which credentials a request carries by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Auth {
    /// `Authorization: key=...` and `project_id`: server-side group management.
    Server,
    /// `Authorization: key=...` only: downstream sends.
    Key,
    /// `project_id` only: client-side group management, whose credential is in the body.
    Project,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    None,
    Json(Value),
    Raw(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expect {
    /// Names the outcome when there are several ("documented", "observed 400").
    pub name: Option<String>,
    /// Whether the documents give this answer, or only real servers were seen to.
    #[serde(default)]
    pub grade: Grade,
    /// Any of these statuses passes.
    pub status: Vec<u16>,
    /// Any status of these classes passes (`4` for 4xx), where the documents name none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_class: Vec<u16>,
    pub body: BodyShape,
    pub fields: Vec<FieldCheck>,
}

/// How an accepted outcome is graded. Both pass; `--strict` accepts only documented ones
/// (`../shared/protocol-notes.md`: real servers answered some invalid requests with a 400 and a
/// text where the documents give a 200 and an error code).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    #[default]
    Documented,
    Observed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyShape {
    Any,
    Json,
    /// No body at all.
    Empty,
    /// Anything but JSON: nothing, or text (the 503 of a group send that failed everywhere).
    NotJson,
    /// Some body, JSON or text: an error that "says why" (real servers answered in text).
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldCheck {
    /// A JSON pointer into the response body ("" is the whole body).
    pub at: String,
    /// Checks this value (a `${...}` template) instead of the response: an outcome that
    /// holds only in some state (`value = "${canonical}", ne = "${phones[0]}"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Narrows an array to the elements that match this partially before the op: `{ at =
    /// "/messages", where = { message_type = "deleted_messages" }, len = 2 }`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    pub op: FieldOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOp {
    Eq(Value),
    Ne(Value),
    Type(JsonType),
    Absent,
    Len(Value),
    /// Array (or object, or string) at least this long.
    MinLen(Value),
    /// Array (or object, or string) at most this long.
    MaxLen(Value),
    /// Array equal to this one as a set (order is not promised).
    Set(Value),
    Contains(Value),
    /// Equal to one of these values (a code from a documented list).
    OneOf(Value),
    /// String at least this many characters long.
    MinChars(Value),
    /// Some element of the array matches this value partially (objects: these fields).
    Some(Value),
    /// No element of the array matches this value partially.
    None(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    String,
    Number,
    Integer,
    Bool,
    Array,
    Object,
    Null,
}

impl JsonType {
    /// The JSON type it is of, in the words of [`crate::wire::json_kind`] (an integer is a
    /// number).
    pub fn kind(self) -> &'static str {
        match self {
            JsonType::Integer | JsonType::Number => "a number",
            JsonType::String => "a string",
            JsonType::Bool => "a boolean",
            JsonType::Array => "an array",
            JsonType::Object => "an object",
            JsonType::Null => "null",
        }
    }

    pub fn matches(self, v: &Value) -> bool {
        match self {
            JsonType::String => v.is_string(),
            JsonType::Number => v.is_number(),
            // JSON has one number type: 3.0 is an integer's value.
            JsonType::Integer => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
            JsonType::Bool => v.is_boolean(),
            JsonType::Array => v.is_array(),
            JsonType::Object => v.is_object(),
            JsonType::Null => v.is_null(),
        }
    }
}

/// Transports beyond HTTP a server may offer; a target knows them from its configuration.
pub const TRANSPORTS: &[&str] = &["xmpp"];

/// Capabilities a server may offer beyond the public protocol (see docs/control-api.md).
pub const CAPABILITIES: &[&str] = &[
    "senders",
    "instances",
    "unregister",
    "inbox",
    "id_tokens",
    "connectivity",
    "uninstall",
    "reregister",
    "upstream",
    "dismiss",
    "clock",
    "drain",
    // What judges app servers (docs/app-servers.md): no server rule needs them.
    "journal",
    "verdicts",
    "script",
];

/// Variables every scenario has before its first step: the trial's sender, a group name
/// unique to the trial, an account (an email address unique to the trial: client-side groups
/// are named after the account that manages them), the run's id, and the trial's delivery
/// path and group endpoint (`token`, `key`, ...; `server`, `client`: where the documented
/// answer differs by path).
pub const BUILTIN_VARS: &[&str] = &["sender", "name", "account", "run", "path", "endpoint"];

/// The variable a probe's round holds its value in.
pub const PROBE_VAR: &str = "probe";
/// The variable that says whether a probe's round is past the limit.
pub const OVER_VAR: &str = "over";
/// Variables a probe's rounds add: the value probed, and whether it is past the limit.
pub const PROBE_VARS: &[&str] = &[PROBE_VAR, OVER_VAR];

/// What a `save` may take besides a JSON pointer into the answer (one ending in `?` may find
/// nothing, and saves null): the outcome the step matched (its name), each repetition's (an
/// array), and the answer's status.
pub const SAVE_SPECIALS: &[&str] = &["@outcome", "@outcomes", "@status"];

/// The counter of a repeated step.
pub const REPEAT_VAR: &str = "i";
