//! A case for each app-server rule on each path its text covers: it registers devices and
//! scripts the reference's answers through the control API, asks a [`Client`] to act on
//! that path, lets time pass where the rule waits on it, and reads the sender's verdicts.
//!
//! The same cases judge the project's reference client (correct, and broken one duty at a
//! time: [`Case::fault`]) and, through a driver, real client libraries. A covered path with
//! no case is a gap the test suite refuses ([`missing`]).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{AppFault, Client, ClientError, Command, Outgoing, To, Via};
use crate::catalog::Path;
use crate::driver::{Capabilities, Control, Sender, Target};
use crate::verdicts::{Numbers, RuleVerdict, Rulebook, Verdicts};
use crate::wire::HttpRequest;

/// One rule on one path.
#[derive(Clone)]
pub struct Case {
    pub rule: String,
    pub path: Path,
    /// `rule@path`.
    pub name: String,
    /// What a driven library must be able to do for it: abilities of the driver contract
    /// (`http`, `multicast`, `group-send`, `xmpp`, ...: [`super::contract::ABILITIES`]).
    pub needs: Vec<&'static str>,
    /// Set when the rule is the caller's duty alone on this path (what the app does with
    /// tokens and names), which a library it calls cannot break: why. `gcmspec client`
    /// leaves such cases out.
    pub caller_only: Option<&'static str>,
    /// What the case does, for a person.
    pub what: &'static str,
    /// The reference client's fault that breaks this rule on this path.
    pub fault: AppFault,
    steps: Steps,
}

type Steps = fn(&mut Run<'_>, Path) -> Result<(), String>;
/// Which fault of the reference client breaks a rule on a path.
type Breaks = fn(Path) -> AppFault;

/// A rule's cases: their steps, the fault that breaks it (by path), and what they do.
fn recipe(rule: &str) -> Option<(Steps, Breaks, &'static str)> {
    Some(match rule {
        "app.send.ttl-range" => {
            (ttl_range, |_| AppFault::TtlOutOfRange, "asks for a send with time_to_live at the bound, then one past it")
        }
        "app.send.one-target-field" => (plain_send, |_| AppFault::BothTargetFields, "asks for one send"),
        "app.send.registration-ids-count" => (
            many_ids,
            |_| AppFault::UnsplitIds,
            "asks for one message to as many tokens as a request may name, then to one more",
        ),
        "app.send.payload-limit" => {
            (payload, |_| AppFault::OversizedPayload, "asks for data of the limit's size, then one byte more")
        }
        "app.send.reserved-keys" => {
            (reserved, |_| AppFault::ReservedKey, "asks for a send, then one whose data has the reserved key `from`")
        }
        "app.canonical-id.replace" => (
            canonical,
            |_| AppFault::IgnoresCanonical,
            "the service answers a canonical id for a token; the device is sent to (or grouped) again",
        ),
        "app.not-registered.delete" => (
            not_registered,
            |_| AppFault::KeepsNotRegistered,
            "the service answers NotRegistered for a token; the device is sent to (or grouped) again",
        ),
        "app.collapse-key.limit" => (
            collapse_offline,
            |_| AppFault::MakesUpCollapseKeys,
            "five messages under one collapse key to an offline device, then five without one",
        ),
        "app.collapse-key.in-flight" => (
            collapse_awake,
            |_| AppFault::CollapseKeyPerMessage,
            "five messages under one collapse key, then five without one",
        ),
        "app.group.save-key" => {
            (save_key, |_| AppFault::RecreatesGroups, "asks to create a group, add a member, remove one")
        }
        "app.group.name-per-app" => {
            (two_apps, |_| AppFault::OneGroupPerUser, "asks for a group of one user in each of two apps")
        }
        "app.group.create-before-send" => (
            before_send,
            |p| match p {
                Path::Server => AppFault::AddsUnobtainedTokens,
                _ => AppFault::SendsToGroupName,
            },
            "asks for a group and a send to it",
        ),
        "app.group.retry" => (
            group_retry,
            |_| AppFault::NeverRetriesGroups,
            "the service answers a group send with one member failed (the documented partial success)",
        ),
        "app.retry.server-error" => (
            server_error,
            |_| AppFault::NeverRetries,
            "the service answers 503 (500 in plain text, Unavailable in a multicast, a nack over XMPP) once",
        ),
        "app.retry.after" => (
            retry_after,
            |_| AppFault::IgnoresRetryAfter,
            "the service answers 503 with Retry-After of 3 seconds (an HTTP date in a multicast)",
        ),
        "app.retry.backoff" => (backoff, |_| AppFault::NoBackoff, "the service fails the send twice, then takes it"),
        "app.retry.only-failures" => (
            only_failures,
            |p| match p {
                Path::Multicast => AppFault::RetriesWholeList,
                _ => AppFault::ResendsSuccesses,
            },
            "asks for one send, which the service takes (in a multicast, all ids but one, whose result is Unavailable)",
        ),
        "app.xmpp.message-id" => {
            (message_ids, |_| AppFault::ReusesMessageIds, "two sends, on two connections one after the other")
        }
        "app.xmpp.ack-upstream" => (
            upstream,
            |_| AppFault::NeverAcksUpstream,
            "a device sends an upstream message, twice (as the service does)",
        ),
        "app.xmpp.ack-receipts" => {
            (receipts, |_| AppFault::NeverAcksReceipts, "a send that asks for a delivery receipt")
        }
        "app.xmpp.ack-own-connection" => (
            two_connections,
            |_| AppFault::AcksOnOtherConnection,
            "an upstream message arrives while the app server holds two connections",
        ),
        "app.xmpp.draining" => {
            (draining, |_| AppFault::IgnoresDraining, "the service sends CONNECTION_DRAINING; then a send is asked for")
        }
        "app.xmpp.pending-limit" => (
            pending,
            |_| AppFault::NoFlowControl,
            "asks for 20 more messages than may be pending, while the service holds its acks",
        ),
        _ => return None,
    })
}

/// Whether a rule is the caller's duty alone on a path: what a library is handed (tokens,
/// names, keys) is the caller's, so a library it calls cannot break it.
fn caller_only(rule: &str, path: Path) -> Option<&'static str> {
    match (rule, path) {
        ("app.group.name-per-app", _) => Some("the caller names its groups"),
        ("app.group.create-before-send", _) => Some("the caller obtains the tokens and the key a library is handed"),
        _ => None,
    }
}

/// Every app-server rule of `book` on every path it covers that has a case.
pub fn catalogue(book: &Rulebook) -> Vec<Case> {
    let mut out = Vec::new();
    for rule in &book.rules {
        let Some((steps, fault, what)) = recipe(&rule.id) else { continue };
        for &path in &rule.covers {
            out.push(Case {
                rule: rule.id.clone(),
                path,
                name: format!("{}@{path}", rule.id),
                needs: needs(&rule.id, path),
                caller_only: caller_only(&rule.id, path),
                what,
                fault: fault(path),
                steps,
            });
        }
    }
    out
}

/// Covered paths of `book`'s rules that no case runs.
pub fn missing(book: &Rulebook) -> Vec<String> {
    book.rules.iter().filter(|r| recipe(&r.id).is_none()).map(|r| r.id.clone()).collect()
}

/// What a library must do for a rule's case on a path. Groups a library cannot make, its
/// caller makes (correctly): a group send needs only `group-send`.
fn needs(rule: &str, path: Path) -> Vec<&'static str> {
    if rule == "app.group.save-key" {
        return vec!["group-management"];
    }
    match path {
        Path::Xmpp | Path::XmppKey => vec!["xmpp"],
        Path::Key => vec!["group-send"],
        Path::PlainText => vec!["plain-text"],
        Path::Multicast => vec!["multicast"],
        _ => vec!["http"],
    }
}

/// Where the cases run: the reference (HTTP, its control API, its XMPP endpoint), and how
/// time passes for the client's waits.
pub struct Env {
    pub target: Arc<dyn Target>,
    pub caps: Capabilities,
    /// The documents' numbers the cases probe (the profile's).
    pub numbers: Numbers,
}

/// How a case ended.
#[derive(Debug, Clone)]
pub struct Ended {
    /// Its rule's verdict, once the steps ran.
    pub verdict: Option<RuleVerdict>,
    /// Every rule the client violated meanwhile.
    pub violated: Vec<String>,
    pub verdicts: Option<Verdicts>,
    /// The sender's journal: what the client sent and was answered.
    pub entries: Vec<crate::verdicts::Entry>,
    /// The case could not be run (set-up failed), or the client cannot do what it needs.
    pub error: Option<String>,
    pub unsupported: Option<String>,
}

impl Case {
    /// Runs the case with a fresh sender; `client` makes the client for that sender.
    pub fn run(&self, env: &Env, client: &mut MakeClient<'_>) -> Ended {
        let control = Control { target: &*env.target, caps: &env.caps };
        let mut ended = Ended {
            verdict: None,
            violated: Vec::new(),
            verdicts: None,
            entries: Vec::new(),
            error: None,
            unsupported: None,
        };
        let sender = match control.new_sender() {
            Ok(s) => s,
            Err(e) => {
                ended.error = Some(format!("a sender: {e}"));
                return ended;
            }
        };
        let mut client = match client(&sender) {
            Ok(c) => c,
            Err(e) => {
                ended.error = Some(e);
                return ended;
            }
        };
        let mut run =
            Run { env, control, sender: sender.clone(), client: &mut *client, user: format!("user{}", sender.id) };
        match (self.steps)(&mut run, self.path) {
            Ok(()) => {}
            Err(e) if e.starts_with("unsupported: ") => {
                ended.unsupported = Some(e["unsupported: ".len()..].to_string())
            }
            Err(e) => ended.error = Some(e),
        }
        let _ = run.client.run(&Command::XmppClose);
        match run.verdicts() {
            Ok(v) => {
                ended.verdict = v.rule(&self.rule).cloned();
                ended.violated = v.violated().into_iter().map(str::to_string).collect();
                ended.verdicts = Some(v);
            }
            Err(e) => ended.error = Some(ended.error.take().map_or(e.clone(), |x| format!("{x}; {e}"))),
        }
        if let Ok(j) = run.own("GET", "journal", None) {
            let shown = j["entries"].as_array().cloned().unwrap_or_default();
            ended.entries = shown.into_iter().filter_map(crate::verdicts::Entry::from_json).collect();
        }
        ended
    }
}

/// Makes the client of a case for its fresh sender (a driver process is started here), or
/// says why it could not.
pub type MakeClient<'a> = dyn FnMut(&Sender) -> Result<Box<dyn Client>, String> + 'a;

/// One case as it runs.
pub struct Run<'a> {
    env: &'a Env,
    control: Control<'a>,
    sender: Sender,
    client: &'a mut dyn Client,
    user: String,
}

impl Run<'_> {
    fn devices(&self, n: usize, package: Option<&str>) -> Result<Vec<String>, String> {
        let package = package.map(|p| json!(p));
        (0..n)
            .map(|_| self.control.register(std::slice::from_ref(&self.sender.id), None, None, package.as_ref()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())
    }

    /// A control-API call about this sender, with its key.
    fn own(&self, method: &str, what: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = HttpRequest::new(
            method,
            &format!("{}senders/{}/{what}", crate::reference::control::PREFIX, self.sender.id),
        )
        .with_header("authorization", &format!("key={}", self.sender.key));
        if let Some(b) = body {
            req = req.with_json(&b);
        }
        let resp = self.env.target.exchange(&req).map_err(|e| e.to_string())?;
        if !(200..300).contains(&resp.status) {
            return Err(format!("{method} {what}: {} {}", resp.status, String::from_utf8_lossy(&resp.body)));
        }
        Ok(resp.body_json().unwrap_or(Value::Null))
    }

    fn script(&self, answer: Value) -> Result<(), String> {
        self.own("POST", "script", Some(answer)).map(|_| ())
    }

    fn verdicts(&self) -> Result<Verdicts, String> {
        let v = self.own("GET", "verdicts", None)?;
        serde_json::from_value(v).map_err(|e| format!("the verdicts: {e}"))
    }

    /// Lets time pass on the sender's clock (past a rule's window, say).
    fn advance(&self, seconds: u64) -> Result<(), String> {
        self.control.advance_clock(&self.sender.id, seconds).map_err(|e| e.to_string())
    }

    fn ask(&mut self, command: Command) -> Result<Value, String> {
        match self.client.run(&command) {
            Ok(v) => Ok(v),
            Err(ClientError::Unsupported(why)) => Err(format!("unsupported: {why}")),
            Err(ClientError::Failed(why) | ClientError::Broken(why)) => Err(why),
        }
    }

    /// Asks, and takes a refusal as an answer: a client may rightly refuse to send. A
    /// client that could not be asked (a driver gone) is no refusal.
    fn try_ask(&mut self, command: Command) -> Result<(), String> {
        match self.client.run(&command) {
            Ok(_) | Err(ClientError::Failed(_)) => Ok(()),
            Err(ClientError::Unsupported(why)) => Err(format!("unsupported: {why}")),
            Err(ClientError::Broken(why)) => Err(why),
        }
    }

    /// The devices as the path addresses them (a group made for them on the key paths).
    fn to(&mut self, path: Path, devices: &[String]) -> Result<(To, Via), String> {
        let group = || To::Group { user: self.user.clone(), app: None };
        Ok(match path {
            Path::Multicast => (To::Tokens(devices.to_vec()), Via::Json),
            Path::PlainText => (To::Token(devices[0].clone()), Via::PlainText),
            Path::Xmpp => (To::Token(devices[0].clone()), Via::Xmpp),
            Path::Key | Path::XmppKey => {
                let to = group();
                self.ask(Command::CreateGroup { user: self.user.clone(), app: None, tokens: devices.to_vec() })?;
                (to, if path == Path::Key { Via::Json } else { Via::Xmpp })
            }
            _ => (To::Token(devices[0].clone()), Via::Json),
        })
    }

    /// The notification key of the case's group (made by [`Self::to`] on a key path).
    fn verdicts_key(&self) -> Result<String, String> {
        let req = HttpRequest::new("GET", "/gcm/notification")
            .with_header("authorization", &format!("key={}", self.sender.key))
            .with_header("project_id", &self.sender.id)
            .with_query("notification_key_name", &self.user);
        let resp = self.env.target.exchange(&req).map_err(|e| e.to_string())?;
        resp.body_json()
            .and_then(|b| b["notification_key"].as_str().map(str::to_string))
            .ok_or_else(|| format!("the case's group: {}", resp.status))
    }

    fn send(&mut self, to: &To, via: Via, message: Outgoing) -> Result<Value, String> {
        self.ask(Command::Send { to: to.clone(), message, via })
    }
}

fn data(text: &str) -> Outgoing {
    let mut m = Outgoing::default();
    m.data.insert("text".into(), json!(text));
    m
}

fn plain_send(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    run.try_ask(Command::Send { to, via, message: data("hello") })
}

fn reserved(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    run.try_ask(Command::Send { to: to.clone(), via, message: data("hello") })?;
    // A key the documents reserve: a client should refuse it, not pass it on.
    let mut m = data("from me");
    m.data.insert("from".into(), json!("app"));
    run.try_ask(Command::Send { to, via, message: m })
}

fn ttl_range(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let max = run.env.numbers.max_ttl_seconds as i64;
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    // At the bound: within it; one past: a client should refuse.
    run.try_ask(Command::Send {
        to: to.clone(),
        via,
        message: Outgoing { time_to_live: Some(max), ..data("at the bound") },
    })?;
    run.try_ask(Command::Send { to, via, message: Outgoing { time_to_live: Some(max + 1), ..data("past it") } })
}

fn many_ids(run: &mut Run<'_>, _path: Path) -> Result<(), String> {
    let max = run.env.numbers.max_registration_ids;
    let ids = register_many(run, max + 1)?;
    // At the bound: one request may name them all; one more: split, or refused.
    run.try_ask(Command::Send { to: To::Tokens(ids[..max].to_vec()), via: Via::Json, message: data("to all") })?;
    run.try_ask(Command::Send { to: To::Tokens(ids), via: Via::Json, message: data("to all and one") })
}

fn register_many(run: &Run<'_>, n: usize) -> Result<Vec<String>, String> {
    let req = HttpRequest::new("POST", &format!("{}instances", crate::reference::control::PREFIX))
        .with_json(&json!({ "sender_ids": [run.sender.id], "count": n }));
    let resp = run.env.target.exchange(&req).map_err(|e| e.to_string())?;
    let ids = resp.body_json().and_then(|b| serde_json::from_value::<Vec<String>>(b["registration_ids"].clone()).ok());
    ids.ok_or_else(|| format!("registering {n} devices: {}", resp.status))
}

fn payload(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let max = run.env.numbers.max_payload_bytes;
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    let sized = |n: usize| {
        let mut m = Outgoing::default();
        m.data.insert("d".into(), json!("x".repeat(n - 1)));
        m
    };
    run.try_ask(Command::Send { to: to.clone(), via, message: sized(max) })?;
    run.try_ask(Command::Send { to, via, message: sized(max + 1) })
}

/// A device's id is answered with a canonical id (the app registered again); the client
/// sends to the device again, or lists it in a group, a moment later.
fn canonical(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    stale(run, path, json!({ "kind": "canonical" }))
}

fn not_registered(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    stale(run, path, json!({ "kind": "not-registered" }))
}

fn stale(run: &mut Run<'_>, path: Path, mut script: Value) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    script["registration_id"] = json!(devices[0]);
    run.script(script)?;
    let send_path = if path == Path::Server { Path::Token } else { path };
    let (to, via) = run.to(send_path, &devices)?;
    run.send(&to, via, data("first"))?;
    // Past anything that could have been in flight when the answer came.
    run.advance(2)?;
    if path == Path::Server {
        run.try_ask(Command::CreateGroup { user: run.user.clone(), app: None, tokens: devices })
    } else {
        run.try_ask(Command::Send { to, via, message: data("second") })
    }
}

/// Five messages, all under one collapse key, to a device that is offline (the server holds
/// what it is sent) or awake.
fn collapse(run: &mut Run<'_>, path: Path, offline: bool) -> Result<(), String> {
    let devices = run.devices(1, None)?;
    if offline {
        run.control.set_connectivity(&devices[0], "offline").map_err(|e| e.to_string())?;
    }
    let (to, via) = run.to(path, &devices)?;
    for i in 0..=run.env.numbers.max_collapse_keys {
        let m = Outgoing { collapse_key: Some("sync".into()), ..data(&format!("update {i}")) };
        run.try_ask(Command::Send { to: to.clone(), via, message: m })?;
    }
    // Then as many without one: a library that makes up a key the caller did not give (a fresh
    // one each time) breaks the rule as surely as one that changes the caller's.
    for i in 0..=run.env.numbers.max_collapse_keys {
        run.try_ask(Command::Send { to: to.clone(), via, message: data(&format!("note {i}")) })?;
    }
    Ok(())
}

fn collapse_offline(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    collapse(run, path, true)
}

fn collapse_awake(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    collapse(run, path, false)
}

fn save_key(run: &mut Run<'_>, _path: Path) -> Result<(), String> {
    let devices = run.devices(3, None)?;
    let user = run.user.clone();
    run.ask(Command::CreateGroup { user: user.clone(), app: None, tokens: devices[..2].to_vec() })?;
    run.ask(Command::AddToGroup { user: user.clone(), app: None, tokens: devices[2..].to_vec() })?;
    run.ask(Command::RemoveFromGroup { user, app: None, tokens: devices[..1].to_vec() }).map(|_| ())
}

/// One user with two apps of the project: a mail app and a chat app.
fn two_apps(run: &mut Run<'_>, _path: Path) -> Result<(), String> {
    let mail = run.devices(1, Some("com.example.mail"))?;
    let chat = run.devices(1, Some("com.example.chat"))?;
    let user = run.user.clone();
    run.ask(Command::CreateGroup { user: user.clone(), app: Some("mail".into()), tokens: mail })?;
    run.ask(Command::CreateGroup { user, app: Some("chat".into()), tokens: chat }).map(|_| ())
}

fn before_send(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    if path == Path::Server {
        return run.ask(Command::CreateGroup { user: run.user.clone(), app: None, tokens: devices }).map(|_| ());
    }
    let (to, via) = run.to(path, &devices)?;
    run.try_ask(Command::Send { to, via, message: data("to the group") })
}

/// Retry windows are long: the case moves the sender's clock past them before reading.
fn past_windows(run: &mut Run<'_>) -> Result<(), String> {
    run.advance(601)
}

fn group_retry(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    let key = run.verdicts_key()?;
    run.script(json!({ "kind": "group-failure", "notification_key": key, "members": 1 }))?;
    run.try_ask(Command::Send { to, via, message: data("to the group") })?;
    past_windows(run)
}

fn server_error(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    run.script(match path {
        Path::Xmpp => json!({ "kind": "nack", "error": "SERVICE_UNAVAILABLE" }),
        Path::Multicast => json!({ "kind": "error", "error": "Unavailable", "registration_id": devices[1] }),
        Path::PlainText => json!({ "kind": "status", "status": 500 }),
        _ => json!({ "kind": "status", "status": 503 }),
    })?;
    run.try_ask(Command::Send { to, via, message: data("again later") })?;
    past_windows(run)
}

fn retry_after(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    // Longer than the reference client's first back-off, so that ignoring it shows.
    let after = if path == Path::Multicast { "retry_after_date" } else { "retry_after" };
    let mut script = json!({ "kind": "status", "status": 503 });
    script[after] = json!(3);
    run.script(script)?;
    run.try_ask(Command::Send { to, via, message: data("after a while") })
}

fn backoff(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    let script = match path {
        Path::Xmpp => json!({ "kind": "nack", "error": "SERVICE_UNAVAILABLE", "times": 2 }),
        Path::XmppKey | Path::Key => {
            json!({ "kind": "group-failure", "notification_key": run.verdicts_key()?, "times": 2 })
        }
        Path::Multicast => {
            json!({ "kind": "error", "error": "Unavailable", "registration_id": devices[0], "times": 2 })
        }
        _ => json!({ "kind": "status", "status": 503, "times": 2 }),
    };
    run.script(script)?;
    run.try_ask(Command::Send { to, via, message: data("backing off") })
}

fn only_failures(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    if path != Path::Multicast {
        return plain_send(run, path);
    }
    let devices = run.devices(3, None)?;
    run.script(json!({ "kind": "error", "error": "Unavailable", "registration_id": devices[1] }))?;
    let (to, via) = run.to(path, &devices)?;
    run.try_ask(Command::Send { to, via, message: data("to all three") })?;
    past_windows(run)
}

fn message_ids(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    run.send(&to, via, data("first"))?;
    run.ask(Command::XmppClose)?;
    run.send(&to, via, data("second")).map(|_| ())
}

fn upstream(run: &mut Run<'_>, _path: Path) -> Result<(), String> {
    let devices = run.devices(1, None)?;
    run.ask(Command::XmppListen { seconds: 0.1, connections: None })?;
    let body =
        json!({ "to": format!("{}@{}", run.sender.id, crate::xmpp::DOMAIN), "data": { "hi": "there" }, "copies": 2 });
    let req =
        HttpRequest::new("POST", &format!("{}instances/{}/upstream", crate::reference::control::PREFIX, devices[0]))
            .with_json(&body);
    let resp = run.env.target.exchange(&req).map_err(|e| e.to_string())?;
    if resp.status != 200 {
        return Err(format!("upstream: {} {}", resp.status, String::from_utf8_lossy(&resp.body)));
    }
    run.ask(Command::XmppListen { seconds: 0.5, connections: None })?;
    // Long enough on the sender's clock that nothing was still on its way at the close.
    run.advance(2)?;
    run.ask(Command::XmppClose).map(|_| ())
}

fn receipts(run: &mut Run<'_>, _path: Path) -> Result<(), String> {
    let devices = run.devices(1, None)?;
    let message = Outgoing { receipt: true, ..data("tell me") };
    run.send(&To::Token(devices[0].clone()), Via::Xmpp, message)?;
    run.ask(Command::XmppListen { seconds: 0.5, connections: None })?;
    run.advance(2)?;
    run.ask(Command::XmppClose).map(|_| ())
}

fn two_connections(run: &mut Run<'_>, _path: Path) -> Result<(), String> {
    let devices = run.devices(1, None)?;
    run.ask(Command::XmppListen { seconds: 0.1, connections: Some(2) })?;
    let to = format!("{}@{}", run.sender.id, crate::xmpp::DOMAIN);
    run.control.upstream(&devices[0], &to, Some(&json!({ "hi": "there" }))).map_err(|e| e.to_string())?;
    run.ask(Command::XmppListen { seconds: 0.5, connections: Some(2) })?;
    run.advance(2)?;
    run.ask(Command::XmppClose).map(|_| ())
}

fn draining(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, via) = run.to(path, &devices)?;
    run.send(&to, via, data("before"))?;
    run.control.drain(&run.sender.id).map_err(|e| e.to_string())?;
    run.ask(Command::XmppListen { seconds: 0.3, connections: None })?;
    // Past the time a message written before the control was read may take to arrive.
    run.advance(2)?;
    run.try_ask(Command::Send { to, via, message: data("after") })
}

fn pending(run: &mut Run<'_>, path: Path) -> Result<(), String> {
    let devices = run.devices(2, None)?;
    let (to, _) = run.to(path, &devices)?;
    let count = run.env.numbers.max_pending_per_connection + 20;
    run.script(json!({ "kind": "hold-acks", "release_after_ms": 300, "times": count }))?;
    run.ask(Command::XmppBurst { to, count, message: data("burst") }).map(|_| ())
}
