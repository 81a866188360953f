//! Runs one declarative scenario against a target.

use serde_json::{Value, json};

use super::evidence::ExchangeLog;
pub use super::expect::{Matched, check, describe, expect_any, summary};
use super::snapshot::Redactor;
use crate::catalog::template::{self, Vars, text_of};
use crate::catalog::{Action, Auth, Body, Grade, REPEAT_VAR, Request, Step};
use crate::driver::Control;
use crate::driver::xmpp::{Auth as XmppAuth, XmppClient};
use crate::wire::{HttpRequest, HttpResponse};

/// What a scenario did, normalized, for its snapshot.
#[derive(Debug, Default)]
pub struct Transcript {
    pub text: String,
    /// For steps with several accepted outcomes, the one each matched: `step 3: observed-400`.
    pub matched: Vec<String>,
    /// Some step passed only on an observed (not documented) outcome.
    pub observed: bool,
    /// Names run-specific values in `text`; knows the builtins before the first step.
    pub redactor: Redactor,
}

/// Runs `steps` with `vars` (parameters and builtins already set). On failure the error
/// says which step, what was expected and what came back. HTTP exchanges are seen by the
/// control's target; XMPP ones, made here, are added to `log`.
pub fn run(
    control: &Control<'_>,
    steps: &[Step],
    mut vars: Vars,
    transport: &str,
    settings: &super::Options,
    log: &ExchangeLog,
    transcript: &mut Transcript,
) -> Result<(), String> {
    let (xmpp_timeout, strict) = (settings.xmpp_timeout, settings.strict);
    // XMPP connections by name; they close when the scenario ends.
    let mut connections: std::collections::HashMap<String, XmppClient> = std::collections::HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let at = |e: String| format!("step {n} (line {}): {e}", step.line);
        let exchange = match &step.action {
            Action::NewSender { name, count } => {
                let value = match count {
                    None => control.new_sender().map_err(|e| at(e.to_string()))?.to_json(),
                    Some(c) => {
                        let n = render(c, &vars).map_err(at)?;
                        let n = n.as_u64().ok_or_else(|| at(format!("`count` must be a whole number, found {n}")))?;
                        let senders =
                            (0..n).map(|_| control.new_sender().map(|s| s.to_json())).collect::<Result<Vec<_>, _>>();
                        Value::Array(senders.map_err(|e| at(e.to_string()))?)
                    }
                };
                define(&mut vars, &mut transcript.redactor, name, value);
                None
            }
            Action::Register { name, count, senders, account, platform, package } => {
                let count = render(count, &vars).map_err(at)?;
                let count = count
                    .as_u64()
                    .ok_or_else(|| at(format!("`count` must be a non-negative integer, found {count}")))?;
                let mut sender_ids = Vec::new();
                for s in senders {
                    match sender_value(s, &vars).map_err(at)? {
                        Value::Array(many) => {
                            sender_ids.extend(many.iter().filter_map(|v| v["id"].as_str().map(str::to_string)))
                        }
                        one => sender_ids.push(text_of(&one["id"])),
                    }
                }
                let render_opt = |v: &Option<Value>| v.as_ref().map(|v| render(v, &vars)).transpose();
                let (account, platform, package) = (
                    render_opt(account).map_err(at)?,
                    render_opt(platform).map_err(at)?,
                    render_opt(package).map_err(at)?,
                );
                if !step.expect.is_empty() {
                    // A registration the step expects may be refused: its answer is checked
                    // like a request's, and the ids it gave (none if refused) are defined.
                    let mut exchanges = Vec::new();
                    let mut ids = Vec::new();
                    for _ in 0..count {
                        let (req, resp) = control
                            .try_register(&sender_ids, account.as_ref(), platform.as_ref(), package.as_ref())
                            .map_err(|e| at(e.to_string()))?;
                        if let Some(id) =
                            resp.body_json().and_then(|b| b["registration_id"].as_str().map(str::to_string))
                            && (200..300).contains(&resp.status)
                        {
                            ids.push(Value::String(id));
                        }
                        exchanges.push((format!("step {n}"), req, resp));
                    }
                    define(&mut vars, &mut transcript.redactor, name, Value::Array(ids));
                    Some(exchanges)
                } else {
                    let ids = (0..count)
                        .map(|_| {
                            control
                                .register(&sender_ids, account.as_ref(), platform.as_ref(), package.as_ref())
                                .map(Value::String)
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| at(e.to_string()))?;
                    define(&mut vars, &mut transcript.redactor, name, Value::Array(ids));
                    None
                }
            }
            Action::Unregister(which) => {
                let which = render(which, &vars).map_err(at)?;
                let ids: Vec<Value> = match which {
                    Value::Array(a) => a,
                    v => vec![v],
                };
                for id in ids {
                    control.unregister(&text_of(&id)).map_err(|e| at(e.to_string()))?;
                }
                None
            }
            Action::IdToken { name, account, sender } => {
                let account = text_of(&render(account, &vars).map_err(at)?);
                let sender_id = text_of(&sender_value(sender, &vars).map_err(at)?["id"]);
                let token = control.id_token(&sender_id, &account).map_err(|e| at(e.to_string()))?;
                define(&mut vars, &mut transcript.redactor, name, Value::String(token));
                None
            }
            Action::Connectivity { of, state } => {
                let id = text_of(&render(of, &vars).map_err(at)?);
                control.set_connectivity(&id, state).map_err(|e| at(e.to_string()))?;
                None
            }
            Action::Uninstall(which) => {
                let id = text_of(&render(which, &vars).map_err(at)?);
                control.uninstall(&id).map_err(|e| at(e.to_string()))?;
                None
            }
            Action::Reregister { of, name } => {
                let id = text_of(&render(of, &vars).map_err(at)?);
                let new = control.reregister(&id).map_err(|e| at(e.to_string()))?;
                define(&mut vars, &mut transcript.redactor, name, Value::String(new));
                None
            }
            Action::Upstream { from, to, data } => {
                let times = repeat_count(step, &vars).map_err(at)?;
                for i in 0..times {
                    if step.repeat.is_some() {
                        vars.insert(REPEAT_VAR.to_string(), Value::from(i));
                    }
                    let from = text_of(&render(from, &vars).map_err(at)?);
                    let to = text_of(&render(to, &vars).map_err(at)?);
                    let data = data.as_ref().map(|d| render(d, &vars)).transpose().map_err(at)?;
                    control.upstream(&from, &to, data.as_ref()).map_err(|e| at(e.to_string()))?;
                }
                vars.remove(REPEAT_VAR);
                None
            }
            Action::Handled { by, message_id } => {
                let by = text_of(&render(by, &vars).map_err(at)?);
                let message_id = text_of(&render(message_id, &vars).map_err(at)?);
                control.handled(&by, &message_id).map_err(|e| at(e.to_string()))?;
                None
            }
            Action::AdvanceClock { seconds, sender } => {
                let seconds = render(seconds, &vars).map_err(at)?;
                let seconds =
                    seconds.as_u64().ok_or_else(|| at(format!("`seconds` must be a whole number, found {seconds}")))?;
                let sender_id = text_of(&sender_value(sender, &vars).map_err(at)?["id"]);
                control.advance_clock(&sender_id, seconds).map_err(|e| at(e.to_string()))?;
                None
            }
            Action::Send(message) => {
                let message = render(message, &vars).map_err(at)?;
                let sender = sender_value("sender", &vars).map_err(at)?;
                if transport == "xmpp" {
                    if !connections.contains_key(SEND_CONNECTION) {
                        let (client, auth) = XmppClient::connect_to(
                            control.target,
                            &text_of(&sender["id"]),
                            &text_of(&sender["key"]),
                            xmpp_timeout,
                        )
                        .map_err(at)?;
                        let client = client.ok_or_else(|| at(format!("the XMPP login failed: {auth:?}")))?;
                        connections.insert(SEND_CONNECTION.to_string(), client);
                    }
                    let mut message = message;
                    message["message_id"] = json!(format!("send-{n}"));
                    let c = connections.get_mut(SEND_CONNECTION).expect("connected above");
                    c.send_gcm(&format!("s{n}"), &message).map_err(at)?;
                    let req = xmpp_exchange("send", &message.to_string());
                    let answer = receive(c, &req, log).map_err(at)?;
                    let normal = normalize_xmpp(&answer);
                    transcript.note_match(
                        n,
                        expect_any(&step.expect, &xmpp_answer(&normal), &vars, strict).map_err(|e| {
                            at(format!("send over XMPP: {e}\n  answer: {answer}\n  normalized: {normal}"))
                        })?,
                    );
                    Some(vec![(format!("step {n}"), req, xmpp_answer(&answer))])
                } else {
                    let req = HttpRequest::new("POST", "/fcm/send")
                        .with_header("authorization", &format!("key={}", text_of(&sender["key"])))
                        .with_json(&message);
                    let resp = control.target.exchange(&req).map_err(|e| at(e.to_string()))?;
                    let normal = normalize_http(&resp);
                    transcript.note_match(
                        n,
                        expect_any(&step.expect, &xmpp_answer(&normal), &vars, strict).map_err(|e| {
                            at(format!("send over HTTP: {e}\n{}\n  normalized: {normal}", describe(&req, &resp)))
                        })?,
                    );
                    Some(vec![(format!("step {n}"), req, resp)])
                }
            }
            Action::XmppConnect { name, sender, password, domain } => {
                let sender = sender_value(sender, &vars).map_err(at)?;
                let id = text_of(&sender["id"]);
                let password = match password {
                    Some(p) => text_of(&render(p, &vars).map_err(at)?),
                    None => text_of(&sender["key"]),
                };
                let domain = domain.as_deref().unwrap_or(crate::xmpp::DOMAIN);
                let (client, auth) =
                    XmppClient::connect_to_in(control.target, &id, domain, &password, xmpp_timeout).map_err(at)?;
                let answer = match &auth {
                    XmppAuth::Success => json!({ "sasl": "success" }),
                    XmppAuth::Failure(condition) => json!({ "sasl": "failure", "condition": condition }),
                };
                log.push(&xmpp_exchange(&format!("connect as {id}"), ""), &xmpp_answer(&answer));
                if step.expect.is_empty() && client.is_none() {
                    return Err(at(format!("the XMPP login as {id} failed: {answer}")));
                }
                if let Some(c) = client {
                    connections.insert(name.clone(), c);
                }
                vars.insert(name.clone(), json!({ "jid": format!("{id}@{domain}") }));
                Some(vec![(format!("step {n}"), xmpp_exchange(&format!("connect as {id}"), ""), xmpp_answer(&answer))])
            }
            Action::XmppSend { on, message } => {
                let message = render(message, &vars).map_err(at)?;
                let c = connections.get_mut(on).ok_or_else(|| at(format!("`{on}` is not an open XMPP connection")))?;
                c.send_gcm(&format!("s{n}"), &message).map_err(at)?;
                let req = xmpp_exchange(&format!("send on {on}"), &message.to_string());
                let answer = receive(c, &req, log).map_err(at)?;
                Some(vec![(format!("step {n}"), req, xmpp_answer(&answer))])
            }
            Action::XmppRaw { on, stanza } => {
                let stanza = text_of(&render(stanza, &vars).map_err(at)?);
                let c = connections.get_mut(on).ok_or_else(|| at(format!("`{on}` is not an open XMPP connection")))?;
                c.send_raw(&stanza).map_err(at)?;
                let req = xmpp_exchange(&format!("raw on {on}"), &stanza);
                let answer = receive(c, &req, log).map_err(at)?;
                Some(vec![(format!("step {n}"), req, xmpp_answer(&answer))])
            }
            Action::XmppPost { on, .. } | Action::XmppReceive { on } => {
                let times = repeat_count(step, &vars).map_err(at)?;
                let mut exchanges = Vec::new();
                for i in 0..times {
                    if step.repeat.is_some() {
                        vars.insert(REPEAT_VAR.to_string(), Value::from(i));
                    }
                    let of = if times > 1 { format!(" ({} of {times})", i + 1) } else { String::new() };
                    let c =
                        connections.get_mut(on).ok_or_else(|| at(format!("`{on}` is not an open XMPP connection")))?;
                    let (req, resp) = match &step.action {
                        Action::XmppPost { message, .. } => {
                            let message = render(message, &vars).map_err(at)?;
                            c.send_gcm(&format!("s{n}-{i}"), &message).map_err(at)?;
                            let sent = (
                                xmpp_exchange(&format!("post on {on}"), &message.to_string()),
                                xmpp_answer(&Value::Null),
                            );
                            log.push(&sent.0, &sent.1);
                            sent
                        }
                        _ => {
                            let req = xmpp_exchange(&format!("receive on {on}"), "");
                            let got = receive(c, &req, log).map_err(|e| at(format!("receiving on {on}{of}: {e}")))?;
                            let resp = xmpp_answer(&got);
                            transcript.note_match(
                                n,
                                expect_any(&step.expect, &resp, &vars, strict).map_err(|e| {
                                    at(format!("receiving on {on}{of}: {e}\n{}", describe(&req, &resp)))
                                })?,
                            );
                            (req, resp)
                        }
                    };
                    if i == 0 || i + 1 == times {
                        exchanges.push((format!("step {n}{of}"), req, resp));
                    }
                }
                vars.remove(REPEAT_VAR);
                Some(exchanges)
            }
            Action::XmppQuiet { on } => {
                let c = connections.get_mut(on).ok_or_else(|| at(format!("`{on}` is not an open XMPP connection")))?;
                let req = xmpp_exchange(&format!("listen on {on} for {QUIET:?}"), "");
                let got = c.quiet(QUIET).map_err(at)?;
                log.push(&req, &xmpp_answer(got.as_ref().unwrap_or(&json!("(nothing)"))));
                if let Some(got) = got {
                    return Err(at(format!("expected nothing on {on} for {QUIET:?}, got {got}")));
                }
                None
            }
            Action::XmppClose(on) => {
                if let Some(c) = connections.remove(on) {
                    c.close();
                    log.push(&xmpp_exchange(&format!("close {on}"), "</stream:stream>"), &xmpp_answer(&Value::Null));
                }
                None
            }
            Action::Drain { sender } => {
                let sender_id = text_of(&sender_value(sender, &vars).map_err(at)?["id"]);
                control.drain(&sender_id).map_err(|e| at(e.to_string()))?;
                None
            }
            Action::Inbox(which) => {
                let id = text_of(&render(which, &vars).map_err(at)?);
                let (req, resp) = control.inbox(&id).map_err(|e| at(e.to_string()))?;
                Some(vec![(format!("step {n}"), req, resp)])
            }
            Action::Request(r) => {
                let times = repeat_count(step, &vars).map_err(at)?;
                let mut exchanges = Vec::new();
                for i in 0..times {
                    if step.repeat.is_some() {
                        vars.insert(REPEAT_VAR.to_string(), Value::from(i));
                    }
                    let req = build_request(r, &vars).map_err(at)?;
                    let resp = control.target.exchange(&req).map_err(|e| at(e.to_string()))?;
                    transcript.note_match(
                        n,
                        expect_any(&step.expect, &resp, &vars, strict).map_err(|e| {
                            let which =
                                if times > 1 { format!(" (repeat {} of {times})", i + 1) } else { String::new() };
                            at(format!("{} {}{which}: {e}\n{}", req.method, req.path, describe(&req, &resp)))
                        })?,
                    );
                    // A long repeat is shown by its first and last exchange.
                    if i == 0 || i + 1 == times {
                        let label =
                            if times > 1 { format!("step {n} ({} of {times})", i + 1) } else { format!("step {n}") };
                        exchanges.push((label, req, resp));
                    }
                }
                vars.remove(REPEAT_VAR);
                Some(exchanges)
            }
        };
        let Some(exchanges) = exchange else { continue };
        for (_, req, resp) in &exchanges {
            if !matches!(
                step.action,
                Action::Request(_) | Action::XmppPost { .. } | Action::XmppReceive { .. } | Action::Send(_)
            ) {
                let name = expect_any(&step.expect, resp, &vars, strict)
                    .map_err(|e| at(format!("{} {}: {e}\n{}", req.method, req.path, describe(req, resp))))?;
                transcript.note_match(n, name);
            }
        }
        let Some((_, req, resp)) = exchanges.last() else { continue };
        for (var, pointer) in &step.save {
            let value = resp.body_json().and_then(|b| b.pointer(pointer).cloned()).ok_or_else(|| {
                at(format!("cannot save `{var}`: the response has nothing at `{pointer}`\n{}", describe(req, resp)))
            })?;
            define(&mut vars, &mut transcript.redactor, var, value);
        }
        // After saving, so that a saved value reads as its variable (`<key>`) here too.
        for (label, req, resp) in &exchanges {
            let text = transcript.redactor.exchange(label, req, resp);
            transcript.text.push_str(&text);
            transcript.text.push('\n');
        }
    }
    Ok(())
}

impl Transcript {
    /// Notes the outcome step `n` matched, if it has several (once per step).
    fn note_match(&mut self, n: usize, matched: Option<Matched>) {
        let Some(Matched { name, grade }) = matched else { return };
        let note = match grade {
            Grade::Documented => format!("step {n}: {name}"),
            Grade::Observed => {
                self.observed = true;
                format!("step {n}: {name} (observed, not documented)")
            }
        };
        if !self.matched.contains(&note) {
            self.matched.push(note);
        }
    }
}

/// The XMPP connection `send` steps use, per scenario.
const SEND_CONNECTION: &str = "@send";

/// The class of a send error, the same word whichever transport named it.
fn error_class(code: &str) -> &str {
    match code {
        "InvalidRegistration" | "MismatchSenderId" | "BAD_REGISTRATION" | "MissingRegistration" => "bad-registration",
        "NotRegistered" | "DEVICE_UNREGISTERED" => "unregistered",
        "InvalidTtl" | "InvalidDataKey" | "MessageTooBig" | "InvalidPackageName" | "INVALID_JSON" => "invalid",
        "Unavailable" | "SERVICE_UNAVAILABLE" | "InternalServerError" | "INTERNAL_SERVER_ERROR" => "unavailable",
        other => other,
    }
}

/// Copies the device-group counts of an answer, when it has them.
fn counts(from: &Value, to: &mut Value) {
    for field in ["success", "failure", "failed_registration_ids"] {
        if let Some(v) = from.get(field) {
            to[field] = v.clone();
        }
    }
}

/// An HTTP send's answer in the transport-neutral shape of `send` steps; `answer` says what
/// came back (`http-200`, `http-503`, ...).
pub fn normalize_http(resp: &HttpResponse) -> Value {
    let mut out = normalize_http_outcome(resp);
    out["answer"] = json!(format!("http-{}", resp.status));
    out
}

fn normalize_http_outcome(resp: &HttpResponse) -> Value {
    let body = resp.body_json();
    match (resp.status, &body) {
        (200, Some(b)) if b.get("results").is_some() => {
            let r = &b["results"][0];
            match r.get("message_id") {
                Some(_) => {
                    let mut out = json!({ "accepted": true });
                    if let Some(c) = r.get("registration_id") {
                        out["canonical"] = c.clone();
                    }
                    out
                }
                None => json!({ "accepted": false, "error": error_class(r["error"].as_str().unwrap_or("")) }),
            }
        }
        (200, Some(b)) => {
            let mut out = json!({ "accepted": true });
            counts(b, &mut out);
            out
        }
        (503, _) => json!({ "accepted": false, "error": "unavailable" }),
        (400, _) => json!({ "accepted": false, "error": "invalid" }),
        (status, _) => json!({ "accepted": false, "error": format!("http-{status}") }),
    }
}

/// An XMPP answer (ack or nack) in the transport-neutral shape of `send` steps; `answer`
/// says what came back (`ack`, `nack`, `stanza-error`, ...).
pub fn normalize_xmpp(answer: &Value) -> Value {
    let mut out = normalize_xmpp_outcome(answer);
    out["answer"] = match (answer["message_type"].as_str(), answer.get("stanza_error")) {
        (Some(kind), _) => json!(kind),
        (None, Some(_)) => json!("stanza-error"),
        (None, None) => json!("other"),
    };
    out
}

fn normalize_xmpp_outcome(answer: &Value) -> Value {
    match answer["message_type"].as_str() {
        Some("ack") => {
            let mut out = json!({ "accepted": true });
            counts(answer, &mut out);
            if let Some(c) = answer.get("registration_id") {
                out["canonical"] = c.clone();
            }
            out
        }
        Some("nack") => json!({ "accepted": false, "error": error_class(answer["error"].as_str().unwrap_or("")) }),
        _ => json!({ "accepted": false, "error": "not an ack or a nack", "answer": answer }),
    }
}

/// How long `xmpp_quiet` listens: long enough for a server that would send, short enough
/// for a suite.
const QUIET: std::time::Duration = std::time::Duration::from_millis(200);

/// An XMPP exchange in the shape the checks and the snapshots take: what was sent as the
/// request (method `XMPP`), the JSON that came back as a body.
fn xmpp_exchange(what: &str, sent: &str) -> HttpRequest {
    HttpRequest {
        method: "XMPP".into(),
        path: what.into(),
        query: Vec::new(),
        headers: Vec::new(),
        body: sent.as_bytes().to_vec(),
    }
}

/// The next message on a connection, logged as the answer to `req` (or, if none came, why).
fn receive(c: &mut XmppClient, req: &HttpRequest, log: &ExchangeLog) -> Result<Value, String> {
    let got = c.next_as_json();
    let resp = match &got {
        Ok(answer) => xmpp_answer(answer),
        Err(why) => super::evidence::no_answer(why),
    };
    log.push(req, &resp);
    got
}

fn xmpp_answer(json: &Value) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "xmpp".into())],
        body: json.to_string().into_bytes(),
    }
}

fn define(vars: &mut Vars, redactor: &mut Redactor, name: &str, value: Value) {
    redactor.learn(name, &value);
    vars.insert(name.to_string(), value);
}

/// A sender reference (`other`, `partners[3]`): an object with `id` and `key`, or an array.
fn sender_value(expr: &str, vars: &Vars) -> Result<Value, String> {
    let v = template::Expr::parse(expr).and_then(|e| e.eval(vars)).map_err(|e| e.to_string())?;
    let ok = |v: &Value| v["id"].is_string() && v["key"].is_string();
    match &v {
        Value::Array(items) if items.iter().all(ok) => Ok(v),
        v if ok(v) => Ok(v.clone()),
        _ => Err(format!("`{expr}` is not a sender")),
    }
}

/// How many times a step runs: its `repeat`, or once.
fn repeat_count(step: &Step, vars: &Vars) -> Result<u64, String> {
    match &step.repeat {
        None => Ok(1),
        Some(v) => {
            let n = render(v, vars)?;
            n.as_u64().ok_or_else(|| format!("`repeat` must be a whole number, found {n}"))
        }
    }
}

fn render(v: &Value, vars: &Vars) -> Result<Value, String> {
    template::render(v, vars).map_err(|e| e.to_string())
}

fn build_request(r: &Request, vars: &Vars) -> Result<HttpRequest, String> {
    let path = text_of(&render(&Value::String(r.path.clone()), vars)?);
    let mut req = HttpRequest::new(&r.method, &path);
    let sender = &sender_value(&r.sender, vars)?;
    let (id, key) = (text_of(&sender["id"]), text_of(&sender["key"]));
    if matches!(r.auth, Auth::Server | Auth::Key) {
        req = req.with_header("authorization", &format!("key={key}"));
    }
    if matches!(r.auth, Auth::Server | Auth::Project) {
        req = req.with_header("project_id", &id);
    }
    match &r.body {
        Body::None => {}
        Body::Json(b) => req = req.with_json(&render(b, vars)?),
        Body::Raw(s) => {
            // `${...}` values interpolate as text; `headers` may set another content type.
            req.body = text_of(&render(&Value::String(s.clone()), vars)?).into_bytes();
            req = req.with_header("content-type", "application/json");
        }
    }
    for (k, v) in &r.headers {
        let k = k.to_ascii_lowercase();
        req.headers.retain(|(h, _)| *h != k);
        req.headers.push((k, text_of(&render(v, vars)?)));
    }
    req.headers.retain(|(h, _)| !r.omit_headers.contains(h));
    for (k, v) in &r.query {
        req.query.push((k.clone(), text_of(&render(v, vars)?)));
    }
    Ok(req)
}
