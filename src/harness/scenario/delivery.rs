//! Sends over the trial's delivery path, and their answers in one shape.
//!
//! A scenario's `send` is written once; the trial's path decides how it goes out: JSON `to`
//! on /fcm/send (`token`, `key`), `registration_ids` on /gcm/send (`multicast`), the
//! plain-text form on /gcm/send (`plain-text`), an XMPP message (`xmpp`, `xmpp-key`). An
//! [`audience`] makes its devices ready for the path (on the key paths, a group of them for
//! each sender), and every answer is normalized so that one expectation fits all paths:
//!
//! ```text
//! { "accepted": bool,              the send was taken: some recipient got a message id
//!   "success": n, "failure": m,    per recipient, as counted by the answer
//!   "failed_registration_ids": [], which recipients failed (as listed, or from the results)
//!   "canonical": id,               the canonical id named for a single recipient
//!   "error": class, "code": code,  why it was not taken: a class the same on every path
//!                                  (bad-registration, unregistered, invalid, unavailable,
//!                                  unauthorized, ...) and the server's own code
//!   "answer": "http-200" | "ack" | "nack" | "stanza-error" | "nothing" | ...,
//!   "body": "json" | "text" | "none" }
//! ```

use serde_json::{Map, Value, json};

use super::Lane;
use crate::catalog::Path;
use crate::catalog::template::text_of;
use crate::driver::Control;
use crate::driver::xmpp::XmppClient;
use crate::harness::evidence::ExchangeLog;
use crate::wire::{HttpRequest, HttpResponse};

/// What a send needs beyond the lane.
pub(super) struct SendCx<'a> {
    pub control: &'a Control<'a>,
    pub path: Path,
    pub xmpp_timeout: std::time::Duration,
    pub log: &'a ExchangeLog,
}

pub(super) type Exchanges = Vec<(String, HttpRequest, HttpResponse)>;

/// An audience: its devices, and on the key paths a group of them for each sender that takes
/// turns, as `{"devices": [...], "keys": [...]}`.
pub(super) fn audience(
    cx: &SendCx<'_>,
    lane: &Lane,
    as_name: &str,
    devices: Vec<String>,
    n: usize,
) -> Result<(Value, Exchanges), String> {
    let mut exchanges = Vec::new();
    let mut keys = Vec::new();
    if cx.path.to_key() {
        for (t, tenant) in lane.tenants.iter().enumerate() {
            let name = format!(
                "{}-{as_name}{}",
                text_of(&lane.vars["name"]),
                if t == 0 { String::new() } else { format!("-{t}") }
            );
            let body = json!({"operation": "create", "notification_key_name": name, "registration_ids": devices});
            let req = HttpRequest::new("POST", "/gcm/notification")
                .with_header("authorization", &format!("key={}", text_of(&tenant["key"])))
                .with_header("project_id", &text_of(&tenant["id"]))
                .with_json(&body);
            let resp = cx.control.target.exchange(&req).map_err(|e| e.to_string())?;
            let key = resp.body_json().and_then(|b| b["notification_key"].as_str().map(str::to_string));
            match (resp.status, key) {
                (200, Some(k)) => keys.push(Value::String(k)),
                _ => {
                    return Err(format!(
                        "making the audience `{as_name}` a group for the {} path: expected 200 with a notification_key\n{}",
                        cx.path,
                        super::describe(&req, &resp)
                    ));
                }
            }
            exchanges.push((format!("step {n} (audience)"), req, resp));
        }
    }
    Ok((json!({ "devices": devices, "keys": keys }), exchanges))
}

/// One `send` step's message over the trial's path, from the sender whose turn it is: the
/// exchanges it made and the normalized answer.
pub(super) fn send(
    cx: &SendCx<'_>,
    lane: &mut Lane,
    message: Value,
    from: Option<Value>,
    label: &str,
) -> Result<(Exchanges, Value), String> {
    let turn = lane.sends % lane.tenants.len();
    let tenant = from.unwrap_or_else(|| lane.tenants[turn].clone());
    lane.sends += 1;
    let (key, devices): (Option<String>, Vec<String>) = match &message["to"] {
        Value::Object(a) => {
            let devices = a.get("devices").and_then(Value::as_array).cloned().unwrap_or_default();
            let key = a.get("keys").and_then(|k| k.get(turn)).and_then(Value::as_str).map(str::to_string);
            (key, devices.iter().map(text_of).collect())
        }
        Value::String(s) if cx.path.to_key() => (Some(s.clone()), Vec::new()),
        Value::String(s) => (None, vec![s.clone()]),
        other => return Err(format!("a send's `to` must be an audience, an id or a key, found {other}")),
    };
    let mut fields = message.as_object().cloned().unwrap_or_default();
    fields.remove("to");
    let auth = format!("key={}", text_of(&tenant["key"]));
    let mut exchanges = Vec::new();
    let mut answers = Vec::new();
    match cx.path {
        Path::Key | Path::XmppKey => {
            let key =
                key.ok_or("the key paths send to an audience (made by an `audience` step) or a notification key")?;
            let members = devices.len().max(1);
            if cx.path == Path::Key {
                let req = json_send("/fcm/send", &auth, &fields, "to", json!(key));
                let resp = cx.control.target.exchange(&req).map_err(|e| e.to_string())?;
                answers.push((key.clone(), normalize_http(&resp, &[])));
                exchanges.push((label.to_string(), req, resp));
            } else {
                let (req, resp, normal) = xmpp_send(cx, lane, &tenant, &fields, &key, label, members)?;
                answers.push((key.clone(), normal));
                exchanges.push((label.to_string(), req, resp));
            }
        }
        Path::Multicast => {
            let ids: Vec<Value> = devices.iter().map(|d| json!(d)).collect();
            let req = json_send("/gcm/send", &auth, &fields, "registration_ids", Value::Array(ids));
            let resp = cx.control.target.exchange(&req).map_err(|e| e.to_string())?;
            answers.push((String::new(), normalize_http(&resp, &devices)));
            exchanges.push((label.to_string(), req, resp));
        }
        Path::Token | Path::PlainText | Path::Xmpp => {
            for (k, id) in devices.iter().enumerate() {
                let label = if devices.len() > 1 {
                    format!("{label} (to {} of {})", k + 1, devices.len())
                } else {
                    label.to_string()
                };
                let (req, resp, normal) = match cx.path {
                    Path::Token => {
                        let req = json_send("/fcm/send", &auth, &fields, "to", json!(id));
                        let resp = cx.control.target.exchange(&req).map_err(|e| e.to_string())?;
                        let normal = normalize_http(&resp, std::slice::from_ref(id));
                        (req, resp, normal)
                    }
                    Path::PlainText => {
                        let req = form_send(&auth, &fields, id)?;
                        let resp = cx.control.target.exchange(&req).map_err(|e| e.to_string())?;
                        let normal = normalize_text(&resp, id);
                        (req, resp, normal)
                    }
                    _ => xmpp_send(cx, lane, &tenant, &fields, id, &label, 1)?,
                };
                answers.push((id.clone(), normal));
                exchanges.push((label, req, resp));
            }
        }
        other => return Err(format!("`{other}` is not a delivery path")),
    }
    Ok((exchanges, aggregate(answers)))
}

fn json_send(path: &str, auth: &str, fields: &Map<String, Value>, target: &str, to: Value) -> HttpRequest {
    let mut body = fields.clone();
    body.insert(target.to_string(), to);
    HttpRequest::new("POST", path).with_header("authorization", auth).with_json(&Value::Object(body))
}

/// The plain-text form of a send: its fields as `key=value`, data as `data.<key>`.
fn form_send(auth: &str, fields: &Map<String, Value>, id: &str) -> Result<HttpRequest, String> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("registration_id", id);
    for (k, v) in fields {
        match (k.as_str(), v) {
            ("data", Value::Object(data)) => {
                for (dk, dv) in data {
                    form.append_pair(&format!("data.{dk}"), &text_of(dv));
                }
            }
            (_, Value::Bool(b)) => {
                form.append_pair(k, if *b { "1" } else { "0" });
            }
            (_, Value::String(_) | Value::Number(_)) => {
                form.append_pair(k, &text_of(v));
            }
            (k, v) => return Err(format!("the plain-text form has no place for `{k}` = {v}")),
        }
    }
    let mut req = HttpRequest::new("POST", "/gcm/send")
        .with_header("authorization", auth)
        .with_header("content-type", "application/x-www-form-urlencoded;charset=UTF-8");
    req.body = form.finish().into_bytes();
    Ok(req)
}

/// An XMPP message on the sender's own connection (made on first use), and its answer.
fn xmpp_send(
    cx: &SendCx<'_>,
    lane: &mut Lane,
    tenant: &Value,
    fields: &Map<String, Value>,
    to: &str,
    label: &str,
    members: usize,
) -> Result<(HttpRequest, HttpResponse, Value), String> {
    let id = text_of(&tenant["id"]);
    let conn = format!("@send:{id}");
    if !lane.connections.contains_key(&conn) {
        let (client, auth) = XmppClient::connect_to(cx.control.target, &id, &text_of(&tenant["key"]), cx.xmpp_timeout)?;
        let client = client.ok_or_else(|| format!("logging in over XMPP as {id}: {}", super::refused_login(&auth)))?;
        lane.connections.insert(conn.clone(), client);
    }
    lane.xmpp_sent += 1;
    let mut message = fields.clone();
    message.insert("to".into(), json!(to));
    message.insert("message_id".into(), json!(format!("send-{}", lane.xmpp_sent)));
    let message = Value::Object(message);
    let c = lane.connections.get_mut(&conn).expect("connected above");
    c.send_gcm(&format!("s{}", lane.xmpp_sent), &message)?;
    let req = super::xmpp_exchange(&format!("send ({label})"), &message.to_string());
    let answer = super::receive(c, &req, cx.log);
    let normal = normalize_xmpp(&answer, members);
    Ok((req, super::xmpp_answer(&answer), normal))
}

/// The classes a send's error is normalized to, each with the codes (HTTP's and XMPP's) it
/// stands for: the same word whichever path named it.
/// Each class, with its codes over HTTP and over XMPP (the connection server's own): a code
/// counts only on its own transport, so that `NotRegistered` in an XMPP nack is kept as given
/// rather than read as `DEVICE_UNREGISTERED` (outside pass 21 saw it pass).
const ERROR_CLASSES: &[(&str, &[&str], &[&str])] = &[
    ("bad-registration", &["InvalidRegistration", "MismatchSenderId", "MissingRegistration"], &["BAD_REGISTRATION"]),
    ("unregistered", &["NotRegistered"], &["DEVICE_UNREGISTERED"]),
    ("invalid", &["InvalidTtl", "InvalidDataKey", "MessageTooBig", "InvalidPackageName"], &["INVALID_JSON"]),
    ("unavailable", &["Unavailable", "InternalServerError"], &["SERVICE_UNAVAILABLE", "INTERNAL_SERVER_ERROR"]),
];

/// The class of a send error over HTTP or (`xmpp`) in a nack; a code in no class of its
/// transport is kept as given.
pub fn error_class(code: &str, xmpp: bool) -> &str {
    ERROR_CLASSES
        .iter()
        .find(|(_, http, ccs)| if xmpp { ccs.contains(&code) } else { http.contains(&code) })
        .map_or(code, |(class, _, _)| class)
}

/// For a failure read on a normalized answer that has an `error`: what its classes stand for,
/// so that `expected "unregistered", found "Unregistered"` reads as the wrong code it is, not
/// as a matter of case.
pub fn error_legend(normal: &Value) -> Option<String> {
    // The key anywhere in the answer (an aggregate holds one answer per target), iteratively.
    let mut pending = vec![normal];
    let mut has_error = false;
    while let Some(v) = pending.pop() {
        match v {
            Value::Object(o) => {
                has_error |= o.contains_key("error");
                pending.extend(o.values());
            }
            Value::Array(a) => pending.extend(a),
            _ => {}
        }
    }
    if !has_error {
        return None;
    }
    let classes: Vec<String> = ERROR_CLASSES
        .iter()
        .map(|(class, http, ccs)| format!("{class} = {} over HTTP, {} over XMPP", http.join(" or "), ccs.join(" or ")))
        .collect();
    Some(format!(
        "errors are normalized to classes: {}; any other code is kept as the server gave it",
        classes.join("; ")
    ))
}

fn body_kind(resp: &HttpResponse) -> &'static str {
    if resp.body.iter().all(u8::is_ascii_whitespace) {
        "none"
    } else if resp.body_json().is_some() {
        "json"
    } else {
        "text"
    }
}

/// A count as a number: JSON has one number type, so `1.0` counts as 1.
fn count_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
}

fn refused(error: &str, code: Option<&str>) -> Value {
    let mut out = json!({ "accepted": false, "error": error });
    if let Some(c) = code {
        out["code"] = json!(c);
    }
    out
}

/// A JSON send's answer. `targets` are the ids a multicast (or a token send) addressed, in
/// order: a result's error names its target as failed.
pub fn normalize_http(resp: &HttpResponse, targets: &[String]) -> Value {
    let body = resp.body_json();
    let mut out = match (resp.status, &body) {
        (200, Some(b)) if b["results"].is_array() => {
            let results = b["results"].as_array().cloned().unwrap_or_default();
            let ok = results.iter().filter(|r| r.get("message_id").is_some()).count();
            let mut out = json!({ "accepted": ok > 0 });
            out["success"] = b.get("success").cloned().unwrap_or(json!(ok));
            out["failure"] = b.get("failure").cloned().unwrap_or(json!(results.len() - ok));
            let failed: Vec<Value> = results
                .iter()
                .enumerate()
                .filter(|(_, r)| r.get("message_id").is_none())
                .filter_map(|(i, _)| targets.get(i).map(|t| json!(t)))
                .collect();
            if !failed.is_empty() {
                out["failed_registration_ids"] = Value::Array(failed);
            }
            if let Some(first_error) = results.iter().find_map(|r| r["error"].as_str()) {
                out["error"] = json!(error_class(first_error, false));
                out["code"] = json!(first_error);
            }
            if let [only] = results.as_slice()
                && let Some(c) = only.get("registration_id")
            {
                out["canonical"] = c.clone();
            }
            out
        }
        // A device-group answer: its counts, as given.
        (200, Some(b)) if b["success"].is_number() => {
            let mut out = json!({ "accepted": count_of(&b["success"]).unwrap_or(0) > 0 });
            for field in ["success", "failure", "failed_registration_ids"] {
                if let Some(v) = b.get(field) {
                    out[field] = v.clone();
                }
            }
            out
        }
        // 200 with an error and no results: nothing was taken.
        (200, Some(b)) if b["error"].is_string() => {
            let code = b["error"].as_str().unwrap_or_default();
            refused(error_class(code, false), Some(code))
        }
        // Group counts of the wrong type: said in the form a run's summary counts.
        (200, Some(b)) if b.get("success").is_some() => {
            let cause = crate::harness::causes::wrong_type("/success", &b["success"], &json!(0)).unwrap_or_default();
            refused(&format!("group counts that are not numbers ({cause})"), None)
        }
        (200, _) => refused("an answer that is neither results nor group counts", None),
        (400, _) => refused("invalid", None),
        (401 | 403, _) => refused("unauthorized", None),
        (503, _) => refused("unavailable", None),
        (status, _) => refused(&format!("http-{status}"), None),
    };
    out["answer"] = json!(format!("http-{}", resp.status));
    out["body"] = json!(body_kind(resp));
    out
}

/// A plain-text answer's text, by line: `\r\n` read as `\n`, a final newline dropped.
pub fn text_lines(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

/// A plain-text send's answer: `id=...` (and `registration_id=...`), or `Error=<code>`.
pub fn normalize_text(resp: &HttpResponse, target: &str) -> Value {
    let mut out = if resp.status == 200 && body_kind(resp) == "text" {
        let text = text_lines(&resp.body);
        let lines: Vec<&str> = text.lines().collect();
        match lines.first().and_then(|l| l.split_once('=')) {
            Some(("id", _)) => {
                let mut out = json!({ "accepted": true, "success": 1, "failure": 0 });
                if let Some(c) = lines.get(1).and_then(|l| l.strip_prefix("registration_id=")) {
                    out["canonical"] = json!(c);
                }
                out
            }
            Some(("Error", code)) => {
                let mut out = refused(error_class(code, false), Some(code));
                out["success"] = json!(0);
                out["failure"] = json!(1);
                out["failed_registration_ids"] = json!([target]);
                out
            }
            _ => refused("a text answer that is neither id= nor Error=", None),
        }
    } else if resp.status == 200 {
        refused("not a plain-text answer", None)
    } else {
        let mut out = normalize_http(resp, &[]);
        out.as_object_mut().map(|o| o.remove("answer"));
        out
    };
    out["answer"] = json!(format!("http-{}", resp.status));
    out["body"] = json!(body_kind(resp));
    out
}

/// An XMPP answer: an ack (to a key: with its counts), a nack, a stanza error, or nothing.
/// `members` is how many recipients a nack failed for.
pub fn normalize_xmpp(answer: &Value, members: usize) -> Value {
    let mut out = match answer["message_type"].as_str() {
        Some("ack") => {
            let mut out = json!({ "accepted": true });
            if answer.get("success").is_some() {
                for field in ["success", "failure", "failed_registration_ids"] {
                    if let Some(v) = answer.get(field) {
                        out[field] = v.clone();
                    }
                }
                out["accepted"] = json!(count_of(&answer["success"]).unwrap_or(0) > 0);
            } else {
                out["success"] = json!(1);
                out["failure"] = json!(0);
            }
            if let Some(c) = answer.get("registration_id") {
                out["canonical"] = c.clone();
            }
            out
        }
        Some("nack") => {
            let code = answer["error"].as_str().unwrap_or("");
            let mut out = refused(error_class(code, true), Some(code));
            out["success"] = json!(0);
            out["failure"] = json!(members);
            out
        }
        _ if answer.get("nothing").is_some() => refused("no answer", None),
        _ if answer.get("stanza_error").is_some() => refused("stanza-error", None),
        _ => refused("not an ack or a nack", None),
    };
    out["answer"] = match (answer["message_type"].as_str(), answer.get("stanza_error"), answer.get("nothing")) {
        (Some(kind), _, _) => json!(kind),
        (None, Some(_), _) => json!("stanza-error"),
        (None, None, Some(_)) => json!("nothing"),
        (None, None, None) => json!("other"),
    };
    out
}

/// The answers of one send (one per request it took) as one: counts summed, the failed
/// recipients listed, accepted if any recipient took it.
fn aggregate(mut answers: Vec<(String, Value)>) -> Value {
    if answers.len() == 1 {
        return answers.pop().map(|(_, v)| v).unwrap_or(Value::Null);
    }
    // Summed; a count of another type than a number is passed on as the server gave it (the
    // first such), for the expectation on it to say so rather than read it as 0.
    let count = |f: &str| match answers.iter().find(|(_, v)| v.get(f).is_some_and(|c| !c.is_number())) {
        Some((_, v)) => v[f].clone(),
        None => json!(answers.iter().map(|(_, v)| count_of(&v[f]).unwrap_or(0)).sum::<u64>()),
    };
    let failed: Vec<Value> =
        answers.iter().filter(|(_, v)| v["accepted"] != json!(true)).map(|(id, _)| json!(id)).collect();
    let accepted = answers.iter().any(|(_, v)| v["accepted"] == json!(true));
    let mut out = json!({ "accepted": accepted, "success": count("success"), "failure": count("failure") });
    if !failed.is_empty() {
        out["failed_registration_ids"] = Value::Array(failed);
    }
    if let Some((_, first)) = answers.iter().find(|(_, v)| v.get("error").is_some()) {
        out["error"] = first["error"].clone();
        if let Some(c) = first.get("code") {
            out["code"] = c.clone();
        }
    }
    let (_, first) = &answers[0];
    out["answer"] = first["answer"].clone();
    if let Some(b) = first.get("body") {
        out["body"] = b.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{normalize_http, normalize_xmpp};
    use crate::wire::HttpResponse;

    /// A code counts only on its own transport: the HTTP API's names in an XMPP nack, or
    /// CCS's in an HTTP result, are kept as given.
    #[test]
    fn an_error_code_is_classed_on_its_own_transport() {
        let nack = |code: &str| normalize_xmpp(&json!({"message_type": "nack", "error": code}), 1)["error"].clone();
        assert_eq!(nack("DEVICE_UNREGISTERED"), json!("unregistered"));
        assert_eq!(nack("NotRegistered"), json!("NotRegistered"));
        let result = |code: &str| {
            let body = json!({"multicast_id": 1, "success": 0, "failure": 1, "results": [{"error": code}]});
            let resp = HttpResponse { status: 200, headers: Vec::new(), body: body.to_string().into_bytes() };
            normalize_http(&resp, &["t".to_string()])["error"].clone()
        };
        assert_eq!(result("NotRegistered"), json!("unregistered"));
        assert_eq!(result("DEVICE_UNREGISTERED"), json!("DEVICE_UNREGISTERED"));
    }
}
