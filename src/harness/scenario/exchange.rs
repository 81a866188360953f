//! How a scenario's steps become exchanges: HTTP requests built from a step's request and
//! variables, XMPP exchanges in the shape the transcript and expectations take, sender
//! references, and the labels of repeated steps.

use serde_json::{Value, json};

use crate::catalog::template::{self, Vars, text_of};
use crate::catalog::{Auth, Body, REPEAT_VAR, Request, Step};
use crate::driver::xmpp::XmppClient;
use crate::harness::evidence::ExchangeLog;
use crate::wire::{HttpRequest, HttpResponse};

/// A normalized answer as a response the expectations read.
pub(super) fn json_answer(normal: &Value) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "normalized".into())],
        body: normal.to_string().into_bytes(),
    }
}

/// How long `xmpp_quiet` listens: long enough for a server that would send, short enough
/// for a suite.
pub(super) const QUIET: std::time::Duration = std::time::Duration::from_millis(200);

/// An XMPP exchange in the shape the checks and the snapshots take: what was sent as the
/// request (method `XMPP`), the JSON that came back as a body.
pub(super) fn xmpp_exchange(what: &str, sent: &str) -> HttpRequest {
    HttpRequest {
        method: "XMPP".into(),
        path: what.into(),
        query: Vec::new(),
        headers: Vec::new(),
        body: sent.as_bytes().to_vec(),
    }
}

/// The next message on a connection, logged as the answer to `req`; when none comes in
/// time (or the connection ends), `{"nothing": why}`, for the step's expectations to judge.
pub(super) fn receive(c: &mut XmppClient, req: &HttpRequest, log: &ExchangeLog) -> Value {
    match c.next_as_json() {
        Ok(answer) => {
            log.push(req, &xmpp_answer(&answer));
            answer
        }
        Err(why) => {
            log.push(req, &crate::harness::evidence::no_answer(&why));
            json!({ "nothing": why })
        }
    }
}

pub(super) fn xmpp_answer(json: &Value) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "xmpp".into())],
        body: json.to_string().into_bytes(),
    }
}

/// Registration ids: one, or an array of them.
pub(super) fn ids_of(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(text_of).collect(),
        v => vec![text_of(v)],
    }
}

/// A sender reference (`other`, `partners[3]`): an object with `id` and `key`, or an array.
pub(super) fn sender_value(expr: &str, vars: &Vars) -> Result<Value, String> {
    let v = template::Expr::parse(expr).and_then(|e| e.eval(vars)).map_err(|e| e.to_string())?;
    let ok = |v: &Value| v["id"].is_string() && v["key"].is_string();
    match &v {
        Value::Array(items) if items.iter().all(ok) => Ok(v),
        v if ok(v) => Ok(v.clone()),
        _ => Err(format!("`{expr}` is not a sender")),
    }
}

/// How many times a step runs: its `repeat`, or once.
pub(super) fn repeat_count(step: &Step, vars: &Vars) -> Result<u64, String> {
    match &step.repeat {
        None => Ok(1),
        Some(v) => {
            let n = render(v, vars)?;
            n.as_u64().ok_or_else(|| format!("`repeat` must be a whole number, found {n}"))
        }
    }
}

pub(super) fn set_counter(step: &Step, vars: &mut Vars, i: u64) {
    if step.repeat.is_some() {
        vars.insert(REPEAT_VAR.to_string(), Value::from(i));
    }
}

pub(super) fn repeat_label(label: &str, i: u64, times: u64) -> String {
    if times > 1 { format!("{label} ({} of {times})", i + 1) } else { label.to_string() }
}

pub(super) fn repeat_of(i: u64, times: u64) -> String {
    if times > 1 { format!(" (repeat {} of {times})", i + 1) } else { String::new() }
}

pub(super) fn render(v: &Value, vars: &Vars) -> Result<Value, String> {
    template::render(v, vars).map_err(|e| e.to_string())
}

pub(super) fn build_request(r: &Request, vars: &Vars) -> Result<HttpRequest, String> {
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
