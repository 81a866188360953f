//! Runs one declarative scenario against a target, on one trial's paths.
//!
//! A scenario is written once; its trial ([`Run`]) says how its generic steps go: the
//! delivery path of its `send`s ([`delivery`]), the endpoint of its `manage` steps
//! ([`manage`]), and its tenancy. With **two devices**, the scenario runs twice side by side
//! for one sender, step by step (a second *lane*: its own devices, groups and names), so
//! that anything kept per sender rather than per device shows; with **two senders**, every
//! device it registers is registered for a second sender too, the two take turns at its
//! sends, and both clocks move together.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::evidence::ExchangeLog;
pub use super::expect::{Matched, check, describe, expect_any, summary};
use super::snapshot::Redactor;
use crate::catalog::template::{Vars, text_of};
use crate::catalog::{Action, Grade, Path, REPEAT_VAR, Run, Step};
use crate::driver::Control;
use crate::driver::xmpp::{Auth as XmppAuth, XmppClient};
use crate::wire::{HttpRequest, HttpResponse};

mod delivery;
mod exchange;
mod manage;

use exchange::{
    QUIET, build_request, ids_of, json_answer, receive, render, repeat_count, repeat_label, repeat_of, sender_value,
    set_counter, xmpp_answer, xmpp_exchange,
};

use delivery::{Exchanges, SendCx};
pub use delivery::{error_class, normalize_http, normalize_text, normalize_xmpp, text_lines};

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
    /// Each step as it went, for a differential run to compare step by step.
    pub steps: Vec<StepRecord>,
    /// Nobody reads the normalized exchanges (no snapshot, no differential run): they are not
    /// redacted and written, a fifth of an in-process run's time.
    pub skip_text: bool,
}

/// One step of a scenario as it went: what a differential run compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepRecord {
    /// `3`, or `3 twin` for the second device's lane.
    pub key: String,
    /// It had expectations: where they passed, they judged its answer.
    pub expected: bool,
    /// The outcome it matched, where it accepts several.
    pub outcome: Option<String>,
    /// Its exchanges, normalized.
    pub text: String,
}

/// One world a scenario runs in: its variables, connections and groups.
pub(super) struct Lane {
    /// Empty for the scenario's own lane; `twin` for the second device's.
    prefix: &'static str,
    vars: Vars,
    connections: HashMap<String, XmppClient>,
    /// Group name -> key, as `manage` steps learned it.
    groups: HashMap<String, String>,
    /// id_tokens for client-side `manage`, by account.
    tokens: HashMap<String, String>,
    /// The senders that take turns at `send`s: the trial's, and with two senders a second.
    tenants: Vec<Value>,
    /// Sends made so far (whose turn it is).
    sends: usize,
    /// XMPP messages sent so far (their message ids).
    xmpp_sent: usize,
}

impl Lane {
    fn new(prefix: &'static str, vars: Vars) -> Lane {
        let tenants = vec![vars["sender"].clone()];
        Lane {
            prefix,
            vars,
            connections: HashMap::new(),
            groups: HashMap::new(),
            tokens: HashMap::new(),
            tenants,
            sends: 0,
            xmpp_sent: 0,
        }
    }

    fn label(&self, n: usize) -> String {
        if self.prefix.is_empty() { format!("step {n}") } else { format!("step {n} ({} device)", self.prefix) }
    }

    fn define(&mut self, redactor: &mut Redactor, name: &str, value: Value) {
        let label = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        redactor.learn(&label, &value);
        self.vars.insert(name.to_string(), value);
    }
}

/// How one scenario runs.
pub struct Setup<'a> {
    pub control: &'a Control<'a>,
    pub run: &'a Run,
    pub settings: &'a super::Options,
    /// HTTP exchanges are seen by the control's target; XMPP ones, made here, are added here.
    pub log: &'a ExchangeLog,
    /// The spec file the steps are in, if known: a failure names it with the step's line.
    pub file: Option<&'a str>,
}

/// Runs `steps` with `vars` (parameters and builtins already set). On failure the error
/// says which step, what was expected and what came back.
pub fn run(setup: &Setup<'_>, steps: &[Step], vars: Vars, transcript: &mut Transcript) -> Result<(), String> {
    let mut lanes = vec![Lane::new("", vars.clone())];
    match setup.run.tenancy {
        Some(Path::TwoSenders) => {
            let other = setup.control.new_sender().map_err(|e| format!("setting up the second sender: {e}"))?.to_json();
            transcript.redactor.learn("second_sender", &other);
            lanes[0].tenants.push(other);
        }
        Some(Path::TwoDevices) => {
            let mut twin = vars;
            for (k, prefix) in [("name", "twin-"), ("account", "twin-")] {
                let v = format!("{prefix}{}", text_of(&twin[k]));
                transcript.redactor.learn(&format!("twin.{k}"), &json!(v));
                twin.insert(k.to_string(), json!(v));
            }
            lanes.push(Lane::new("twin", twin));
        }
        _ => {}
    }
    for (i, step) in steps.iter().enumerate() {
        for lane in &mut lanes {
            run_step(setup, lane, step, i + 1, transcript)?;
        }
    }
    Ok(())
}

fn run_step(
    setup: &Setup<'_>,
    lane: &mut Lane,
    step: &Step,
    n: usize,
    transcript: &mut Transcript,
) -> Result<(), String> {
    let (control, log) = (setup.control, setup.log);
    let (xmpp_timeout, strict) = (setup.settings.xmpp_timeout, setup.settings.strict);
    let twin = if lane.prefix.is_empty() { String::new() } else { format!(" ({} device)", lane.prefix) };
    let place = match setup.file {
        Some(file) => format!("{} line {}", file.rsplit('/').next().unwrap_or(file), step.line),
        None => format!("line {}", step.line),
    };
    let at = |e: String| format!("step {n}{twin} ({place}): {e}");
    let label = lane.label(n);
    // Exchanges whose answers the step's expectations judge, one per repetition, and the
    // ones shown in the transcript.
    let mut judged: Vec<(String, HttpRequest, HttpResponse)> = Vec::new();
    let mut shown: Exchanges = Vec::new();
    match &step.action {
        Action::NewSender { name, count } => {
            let value = match count {
                None => control.new_sender().map_err(|e| at(e.to_string()))?.to_json(),
                Some(c) => {
                    let k = render(c, &lane.vars).map_err(at)?;
                    let k = k.as_u64().ok_or_else(|| at(format!("`count` must be a whole number, found {k}")))?;
                    let senders =
                        (0..k).map(|_| control.new_sender().map(|s| s.to_json())).collect::<Result<Vec<_>, _>>();
                    Value::Array(senders.map_err(|e| at(e.to_string()))?)
                }
            };
            lane.define(&mut transcript.redactor, name, value);
        }
        Action::Register { name, count, senders, account, platform, package } => {
            let count = render(count, &lane.vars).map_err(at)?;
            let count =
                count.as_u64().ok_or_else(|| at(format!("`count` must be a non-negative integer, found {count}")))?;
            let mut sender_ids = Vec::new();
            for s in senders {
                match sender_value(s, &lane.vars).map_err(at)? {
                    Value::Array(many) => {
                        sender_ids.extend(many.iter().filter_map(|v| v["id"].as_str().map(str::to_string)))
                    }
                    one => sender_ids.push(text_of(&one["id"])),
                }
            }
            // With two senders, the devices of the trial's sender are the second's too.
            if senders.as_slice() == ["sender"] {
                sender_ids.extend(lane.tenants.iter().skip(1).map(|t| text_of(&t["id"])));
            }
            let render_opt = |v: &Option<Value>| v.as_ref().map(|v| render(v, &lane.vars)).transpose();
            let (account, platform, package) =
                (render_opt(account).map_err(at)?, render_opt(platform).map_err(at)?, render_opt(package).map_err(at)?);
            if !step.expect.is_empty() {
                // A registration the step expects may be refused: its answer is checked like a
                // request's, and the ids it gave (none if refused) are defined.
                let mut ids = Vec::new();
                for _ in 0..count {
                    let (req, resp) = control
                        .try_register(&sender_ids, account.as_ref(), platform.as_ref(), package.as_ref())
                        .map_err(|e| at(e.to_string()))?;
                    if let Some(id) = resp.body_json().and_then(|b| b["registration_id"].as_str().map(str::to_string))
                        && (200..300).contains(&resp.status)
                    {
                        ids.push(Value::String(id));
                    }
                    judged.push((label.clone(), req, resp));
                }
                lane.define(&mut transcript.redactor, name, Value::Array(ids));
                shown = judged.clone();
            } else {
                let ids = (0..count)
                    .map(|_| {
                        control
                            .register(&sender_ids, account.as_ref(), platform.as_ref(), package.as_ref())
                            .map(Value::String)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| at(e.to_string()))?;
                lane.define(&mut transcript.redactor, name, Value::Array(ids));
            }
        }
        Action::Unregister(which) => {
            for id in ids_of(&render(which, &lane.vars).map_err(at)?) {
                control.unregister(&id).map_err(|e| at(e.to_string()))?;
            }
        }
        Action::IdToken { name, account, sender } => {
            let account = text_of(&render(account, &lane.vars).map_err(at)?);
            let sender_id = text_of(&sender_value(sender, &lane.vars).map_err(at)?["id"]);
            let token = control.id_token(&sender_id, &account).map_err(|e| at(e.to_string()))?;
            lane.define(&mut transcript.redactor, name, Value::String(token));
        }
        Action::Connectivity { of, state } => {
            for id in ids_of(&render(of, &lane.vars).map_err(at)?) {
                control.set_connectivity(&id, state).map_err(|e| at(e.to_string()))?;
            }
        }
        Action::Uninstall(which) => {
            for id in ids_of(&render(which, &lane.vars).map_err(at)?) {
                control.uninstall(&id).map_err(|e| at(e.to_string()))?;
            }
        }
        Action::Reregister { of, name } => {
            let id = text_of(&render(of, &lane.vars).map_err(at)?);
            let new = control.reregister(&id).map_err(|e| at(e.to_string()))?;
            lane.define(&mut transcript.redactor, name, Value::String(new));
        }
        Action::Upstream { from, to, data } => {
            for i in 0..repeat_count(step, &lane.vars).map_err(at)? {
                set_counter(step, &mut lane.vars, i);
                let from = text_of(&render(from, &lane.vars).map_err(at)?);
                let to = text_of(&render(to, &lane.vars).map_err(at)?);
                let data = data.as_ref().map(|d| render(d, &lane.vars)).transpose().map_err(at)?;
                control.upstream(&from, &to, data.as_ref()).map_err(|e| at(e.to_string()))?;
            }
            lane.vars.remove(REPEAT_VAR);
        }
        Action::Handled { by, message_id } => {
            let by = text_of(&render(by, &lane.vars).map_err(at)?);
            let message_id = text_of(&render(message_id, &lane.vars).map_err(at)?);
            control.handled(&by, &message_id).map_err(|e| at(e.to_string()))?;
        }
        Action::AdvanceClock { seconds, sender } => {
            let seconds = render(seconds, &lane.vars).map_err(at)?;
            let seconds =
                seconds.as_u64().ok_or_else(|| at(format!("`seconds` must be a whole number, found {seconds}")))?;
            // With two senders, time passes for both: each governs its own messages.
            let ids: Vec<String> = if sender == "sender" {
                lane.tenants.iter().map(|t| text_of(&t["id"])).collect()
            } else {
                vec![text_of(&sender_value(sender, &lane.vars).map_err(at)?["id"])]
            };
            for id in ids {
                control.advance_clock(&id, seconds).map_err(|e| at(e.to_string()))?;
            }
        }
        Action::Audience { name, devices } => {
            let devices = ids_of(&render(devices, &lane.vars).map_err(at)?);
            let cx = send_cx(setup, log, xmpp_timeout);
            let (value, made) = delivery::audience(&cx, lane, name, devices, n).map_err(at)?;
            lane.define(&mut transcript.redactor, name, value);
            shown = made;
        }
        Action::Send(message) => {
            let cx = send_cx(setup, log, xmpp_timeout);
            let what = format!("send over the {} path", setup.run.delivery);
            each_judged(
                step,
                n,
                lane,
                &label,
                strict,
                &at,
                transcript,
                &mut judged,
                &mut shown,
                &what,
                |lane, label| {
                    let message = render(message, &lane.vars)?;
                    let from = step.sender.as_ref().map(|s| sender_value(s, &lane.vars)).transpose()?;
                    delivery::send(&cx, lane, message, from, label)
                },
            )?;
        }
        Action::Manage { op, ids, group } => {
            let what = format!("{op} on the {} endpoint", setup.run.endpoint);
            each_judged(
                step,
                n,
                lane,
                &label,
                strict,
                &at,
                transcript,
                &mut judged,
                &mut shown,
                &what,
                |lane, label| {
                    let ids = ids_of(&render(ids, &lane.vars)?);
                    let default_group = if setup.run.endpoint == Path::Client { "account" } else { "name" };
                    let group = match group {
                        Some(g) => text_of(&render(g, &lane.vars)?),
                        None => text_of(&lane.vars[default_group]),
                    };
                    manage::manage(control, setup.run.endpoint, lane, op, &ids, &group, label)
                },
            )?;
        }
        Action::XmppConnect { name, sender, password, domain } => {
            let sender = sender_value(sender, &lane.vars).map_err(at)?;
            let id = text_of(&sender["id"]);
            let password = match password {
                Some(p) => text_of(&render(p, &lane.vars).map_err(at)?),
                None => text_of(&sender["key"]),
            };
            let domain = domain.as_deref().unwrap_or(crate::xmpp::DOMAIN);
            let (client, auth) =
                XmppClient::connect_to_in(control.target, &id, domain, &password, xmpp_timeout).map_err(at)?;
            let answer = match &auth {
                XmppAuth::Success => json!({ "sasl": "success" }),
                XmppAuth::Failure(condition) => json!({ "sasl": "failure", "condition": condition }),
            };
            let req = xmpp_exchange(&format!("connect as {id}"), "");
            log.push(&req, &xmpp_answer(&answer));
            if step.expect.is_empty() && client.is_none() {
                return Err(at(format!("logging in over XMPP as {id}: {}", refused_login(&auth))));
            }
            if let Some(c) = client {
                lane.connections.insert(name.clone(), c);
            }
            lane.vars.insert(name.clone(), json!({ "jid": format!("{id}@{domain}") }));
            judged.push((label.clone(), req, xmpp_answer(&answer)));
            shown = judged.clone();
        }
        Action::XmppSend { on, message } => {
            let message = render(message, &lane.vars).map_err(at)?;
            let c = lane.connections.get_mut(on).ok_or_else(|| at(format!("`{on}` is not an open XMPP connection")))?;
            c.send_gcm(&format!("s{n}"), &message).map_err(at)?;
            let req = xmpp_exchange(&format!("send on {on}"), &message.to_string());
            let answer = receive(c, &req, log);
            judged.push((label.clone(), req, xmpp_answer(&answer)));
            shown = judged.clone();
        }
        Action::XmppRaw { on, stanza } => {
            let stanza = text_of(&render(stanza, &lane.vars).map_err(at)?);
            let c = lane.connections.get_mut(on).ok_or_else(|| at(format!("`{on}` is not an open XMPP connection")))?;
            c.send_raw(&stanza).map_err(at)?;
            let req = xmpp_exchange(&format!("raw on {on}"), &stanza);
            let answer = receive(c, &req, log);
            judged.push((label.clone(), req, xmpp_answer(&answer)));
            shown = judged.clone();
        }
        Action::XmppPost { on, .. } | Action::XmppReceive { on } => {
            let times = repeat_count(step, &lane.vars).map_err(at)?;
            for i in 0..times {
                set_counter(step, &mut lane.vars, i);
                let of = repeat_of(i, times);
                let c =
                    lane.connections.get_mut(on).ok_or_else(|| at(format!("`{on}` is not an open XMPP connection")))?;
                let (req, resp) = match &step.action {
                    Action::XmppPost { message, .. } => {
                        let message = render(message, &lane.vars).map_err(at)?;
                        c.send_gcm(&format!("s{n}-{i}"), &message).map_err(at)?;
                        let sent =
                            (xmpp_exchange(&format!("post on {on}"), &message.to_string()), xmpp_answer(&Value::Null));
                        log.push(&sent.0, &sent.1);
                        sent
                    }
                    _ => {
                        let req = xmpp_exchange(&format!("receive on {on}"), "");
                        let resp = xmpp_answer(&receive(c, &req, log));
                        let matched = expect_any(&step.expect, &resp, &lane.vars, strict)
                            .map_err(|e| at(format!("receiving on {on}{of}: {e}\n{}", describe(&req, &resp))))?;
                        transcript.note_match(n, matched);
                        judged.push((label.clone(), req.clone(), resp.clone()));
                        (req, resp)
                    }
                };
                if i == 0 || i + 1 == times {
                    shown.push((repeat_label(&label, i, times), req, resp));
                }
            }
            lane.vars.remove(REPEAT_VAR);
        }
        Action::XmppQuiet { on } => {
            let c = lane.connections.get_mut(on).ok_or_else(|| at(format!("`{on}` is not an open XMPP connection")))?;
            let req = xmpp_exchange(&format!("listen on {on} for {QUIET:?}"), "");
            // The in-process reference on its virtual clock is asked; any other server is
            // given the time to send.
            let got = if control.target.time_is_virtual() { c.quiet_by_asking() } else { c.quiet(QUIET) };
            let got = got.map_err(at)?;
            log.push(&req, &xmpp_answer(got.as_ref().unwrap_or(&json!("(nothing)"))));
            if let Some(got) = got {
                return Err(at(format!("expected nothing on {on} for {QUIET:?}, got {got}")));
            }
        }
        Action::XmppClose(on) => {
            if let Some(c) = lane.connections.remove(on) {
                c.close();
                log.push(&xmpp_exchange(&format!("close {on}"), "</stream:stream>"), &xmpp_answer(&Value::Null));
            }
        }
        Action::Drain { sender } => {
            let sender_id = text_of(&sender_value(sender, &lane.vars).map_err(at)?["id"]);
            control.drain(&sender_id).map_err(|e| at(e.to_string()))?;
        }
        Action::Assert(what) => {
            let answer = json_answer(&json!({ "asserted": what }));
            let req = HttpRequest { method: "ASSERT".into(), path: what.clone(), ..HttpRequest::default() };
            judged.push((label.clone(), req, answer));
        }
        Action::Inbox(which) => {
            let id = text_of(&render(which, &lane.vars).map_err(at)?);
            let (req, resp) = control.inbox(&id).map_err(|e| at(e.to_string()))?;
            judged.push((label.clone(), req, resp));
            shown = judged.clone();
        }
        Action::Request(r) => {
            let times = repeat_count(step, &lane.vars).map_err(at)?;
            for i in 0..times {
                set_counter(step, &mut lane.vars, i);
                let req = build_request(r, &lane.vars).map_err(at)?;
                let resp = control.target.exchange(&req).map_err(|e| at(e.to_string()))?;
                let matched = expect_any(&step.expect, &resp, &lane.vars, strict).map_err(|e| {
                    at(format!("{} {}{}: {e}\n{}", req.method, req.path, repeat_of(i, times), describe(&req, &resp)))
                })?;
                transcript.note_match(n, matched);
                judged.push((repeat_label(&label, i, times), req.clone(), resp.clone()));
                // A long repeat is shown by its first and last exchange.
                if i == 0 || i + 1 == times {
                    shown.push((repeat_label(&label, i, times), req, resp));
                }
            }
            lane.vars.remove(REPEAT_VAR);
        }
    }
    // Steps judged once, after the fact (a repeated step was judged at each repetition).
    let judged_inline = matches!(
        step.action,
        Action::Request(_) | Action::XmppReceive { .. } | Action::Send(_) | Action::Manage { .. }
    );
    let mut outcomes = Vec::new();
    for (_, req, resp) in &judged {
        if !judged_inline {
            let matched = expect_any(&step.expect, resp, &lane.vars, strict)
                .map_err(|e| at(format!("{} {}: {e}\n{}", req.method, req.path, describe(req, resp))))?;
            transcript.note_match(n, matched);
        }
        outcomes.push(Value::String(outcome_name(&step.expect, resp, &lane.vars, strict)));
    }
    if !step.save.is_empty() {
        let Some((_, req, resp)) = judged.last() else {
            return Err(at("this step has no answer to save from".into()));
        };
        for (var, pointer) in &step.save {
            let value = match pointer.as_str() {
                "@outcome" => outcomes.last().cloned().unwrap_or(Value::Null),
                "@outcomes" => Value::Array(outcomes.clone()),
                "@status" => json!(resp.status),
                p if p.ends_with('?') => {
                    resp.body_json().and_then(|b| b.pointer(p.trim_end_matches('?')).cloned()).unwrap_or(Value::Null)
                }
                p => resp.body_json().and_then(|b| b.pointer(p).cloned()).ok_or_else(|| {
                    at(format!("cannot save `{var}`: the answer has nothing at `{p}`\n{}", describe(req, resp)))
                })?,
            };
            lane.define(&mut transcript.redactor, var, value);
        }
    }
    // After saving, so that a saved value reads as its variable (`<key>`) here too.
    let mut record = String::new();
    for (label, req, resp) in shown.iter().filter(|_| !transcript.skip_text) {
        let text = transcript.redactor.exchange(label, req, resp);
        transcript.text.push_str(&text);
        transcript.text.push('\n');
        record.push_str(&text);
    }
    let key = if lane.prefix.is_empty() { n.to_string() } else { format!("{n} {}", lane.prefix) };
    let outcome = (step.expect.len() > 1).then(|| outcomes.last().map(text_of)).flatten();
    transcript.steps.push(StepRecord { key, expected: !step.expect.is_empty(), outcome, text: record });
    Ok(())
}

/// A `send` or `manage` step, once per repetition: `go` makes the exchanges on the trial's
/// path and gives its normalized answer, which the step's expectations judge.
#[allow(clippy::too_many_arguments)]
fn each_judged(
    step: &Step,
    n: usize,
    lane: &mut Lane,
    label: &str,
    strict: bool,
    at: &dyn Fn(String) -> String,
    transcript: &mut Transcript,
    judged: &mut Vec<(String, HttpRequest, HttpResponse)>,
    shown: &mut Exchanges,
    what: &str,
    mut go: impl FnMut(&mut Lane, &str) -> Result<(Exchanges, Value), String>,
) -> Result<(), String> {
    let times = repeat_count(step, &lane.vars).map_err(at)?;
    for i in 0..times {
        set_counter(step, &mut lane.vars, i);
        let label = repeat_label(label, i, times);
        let (exchanges, normal) = go(lane, &label).map_err(at)?;
        let answer = json_answer(&normal);
        let matched = expect_any(&step.expect, &answer, &lane.vars, strict).map_err(|e| {
            let shown: Vec<String> = exchanges.iter().map(|(_, q, r)| describe(q, r)).collect();
            let legend = delivery::error_legend(&normal).map(|l| format!("\n  ({l})")).unwrap_or_default();
            // The server's own error code, where the normalized answer reads it as a class.
            let code = normal["code"].as_str().map(|c| format!(" (the server's error code: {c})")).unwrap_or_default();
            at(format!(
                "{what}{}, in its normalized answer{code}: {e}\n{}\n  normalized: {normal}{legend}",
                repeat_of(i, times),
                shown.join("\n")
            ))
        })?;
        transcript.note_match(n, matched);
        let (req, _) = exchanges.last().map(|(_, q, r)| (q.clone(), r.clone())).unwrap_or_default();
        judged.push((label.clone(), req, answer));
        if i == 0 || i + 1 == times {
            shown.extend(exchanges);
        }
    }
    lane.vars.remove(REPEAT_VAR);
    Ok(())
}

fn send_cx<'a>(setup: &'a Setup<'a>, log: &'a ExchangeLog, xmpp_timeout: std::time::Duration) -> SendCx<'a> {
    SendCx { control: setup.control, path: setup.run.delivery, xmpp_timeout, log }
}

/// The name of the outcome an answer matched (its name, or `outcome N`), for `@outcome`.
fn outcome_name(outcomes: &[crate::catalog::Expect], resp: &HttpResponse, vars: &Vars, strict: bool) -> String {
    for (k, e) in outcomes.iter().enumerate() {
        if check(e, resp, vars).is_ok() && !(strict && e.grade == Grade::Observed) {
            return e.name.clone().unwrap_or_else(|| format!("outcome {}", k + 1));
        }
    }
    "none".into()
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

/// Why a login gave no connection, in the form a run's summary counts as a cause.
pub(super) fn refused_login(auth: &XmppAuth) -> String {
    match auth {
        XmppAuth::Failure(condition) => crate::harness::causes::login_refused(condition),
        XmppAuth::Success => "the login succeeded, yet no connection was left open".to_string(),
    }
}
