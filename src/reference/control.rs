//! The control API: what a harness needs beyond the public protocol (docs/control-api.md).
//!
//! Served under a reserved prefix. It sets up isolated senders and app instances, mints
//! id_tokens, invalidates registrations and shows what a device received.

use serde_json::{Value, json};

use super::http::Site;
use super::model::script::Scripted;
use super::model::{Connectivity, Model, NewInstance, Platform, RegisterError, StoreFull};
use crate::wire::{HttpRequest, HttpResponse};

pub const PREFIX: &str = "/_gcmspec/v1/";
/// The version string a server answers in `GET /_gcmspec/v1/capabilities`.
pub const PROTOCOL: &str = "gcmspec-control/1";

/// What keeps the control API to the harness that started the reference, before any route:
/// with a token configured, the request must carry it; without one, a `Host` that names
/// another site than this machine is refused (a web page open in a local browser, a DNS
/// rebinding), and so is a POST without a JSON body type (a browser sends `text/plain` or a
/// form cross-origin without asking first; JSON it must ask for).
pub fn guard(token: Option<&str>, req: &HttpRequest) -> Result<(), HttpResponse> {
    if let Some(token) = token {
        // The scheme is case-insensitive (RFC 9110); the token is not.
        let given = req
            .header("authorization")
            .map(str::trim)
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if given != Some(token) {
            return Err(HttpResponse::error(
                401,
                "the control API of this reference needs `Authorization: Bearer <token>` (its --control-token)",
            ));
        }
    } else if let Some(host) = req.header("host")
        && !is_local_host(host)
    {
        return Err(HttpResponse::error(
            403,
            format!(
                "the control API answers only requests for this machine (Host {host:?} names another site); \
                 a reference others reach needs --control-token"
            ),
        ));
    }
    let json = req
        .header("content-type")
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
    // POST is the one state-changing method a page may send cross-origin unasked; a PUT or
    // DELETE makes the browser ask first, and the reference grants nothing.
    if req.method == "POST" && !json {
        return Err(HttpResponse::error(
            415,
            format!(
                "{} on the control API needs `Content-Type: application/json` (a body of {{}} will do)",
                req.method
            ),
        ));
    }
    Ok(())
}

/// A `Host` that can only mean this machine: `localhost` (or a name under it) or an address
/// literal, with or without a port. A DNS name could be rebound to 127.0.0.1 by anyone.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// The sender whose verdicts `GET {path}?{query}` reads settled, if it is such a read: the
/// HTTP adapter lets what is in flight arrive before it answers one.
pub fn settled_read_of<'a>(method: &str, path: &'a str, query: Option<&str>) -> Option<&'a str> {
    let rest = path.strip_prefix(PREFIX)?;
    let sender = rest.strip_prefix("senders/")?.strip_suffix("/verdicts")?;
    let settled =
        crate::wire::parse_query(query?).into_iter().any(|(k, v)| k == "settled" && (v == "true" || v == "1"));
    (method == "GET" && settled && !sender.contains('/')).then_some(sender)
}

pub fn handle(model: &mut Model, site: &Site, req: &HttpRequest) -> HttpResponse {
    let profile = site.profile.as_str();
    let rest = &req.path[PREFIX.len()..];
    let parts: Vec<&str> = rest.split('/').collect();
    // A sender's journal, verdicts and scripts are its own: they need its server key (or,
    // on a reference with a control token, that token, which the guard has checked).
    if let ["senders", id, "journal" | "verdicts" | "script", ..] = parts.as_slice()
        && let Err(refused) = own_sender(model, site, id, req)
    {
        return refused;
    }
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["capabilities"]) => HttpResponse::json(
            200,
            &json!({
                "protocol": PROTOCOL,
                "profile": profile,
                "capabilities": crate::catalog::CAPABILITIES,
                "faults": model.faults().names(),
                "variants": model.variants().iter().map(|v| v.name()).collect::<Vec<_>>(),
                "params": model.declared_limits().server_chosen(),
            }),
        ),
        ("POST", ["senders"]) => match model.try_create_sender() {
            Ok(sender) => HttpResponse::json(201, &json!(sender)),
            Err(full) => store_full(&full),
        },
        ("POST", ["instances"]) => register(model, req).unwrap_or_else(|e| e),
        ("POST", ["id_tokens"]) => id_token(model, req).unwrap_or_else(|e| e),
        ("POST", ["instances", id, "connectivity"]) => connectivity(model, id, req).unwrap_or_else(|e| e),
        ("POST", ["instances", id, "uninstall"]) => {
            if model.uninstall(id) {
                HttpResponse::empty(204)
            } else {
                unknown_instance(id)
            }
        }
        ("POST", ["instances", id, "reregister"]) => {
            match model.room_to_reregister(id).map(|()| model.reregister(id)) {
                Ok(Some(new)) => HttpResponse::json(201, &json!({ "registration_id": new })),
                Ok(None) => unknown_instance(id),
                Err(full) => store_full(&full),
            }
        }
        ("POST", ["instances", id, "upstream"]) => upstream(model, id, req).unwrap_or_else(|e| e),
        ("POST", ["instances", id, "handled"]) => handled(model, id, req).unwrap_or_else(|e| e),
        ("POST", ["senders", id, "clock"]) => clock(model, id, req).unwrap_or_else(|e| e),
        ("POST", ["senders", id, "drain"]) => match model.drain(id) {
            Some(n) => HttpResponse::json(200, &json!({ "connections": n })),
            None => HttpResponse::error(404, format!("unknown sender id {id:?}")),
        },
        ("POST", ["instances", id, "unregister"]) => {
            if model.unregister(id) {
                HttpResponse::empty(204)
            } else {
                unknown_instance(id)
            }
        }
        ("GET", ["instances", id, "messages"]) => inbox(model, id, req).unwrap_or_else(|e| e),
        ("GET", ["senders", id, "journal"]) => journal(model, id, req).unwrap_or_else(|e| e),
        ("GET", ["senders", id, "verdicts"]) => {
            let now = crate::verdicts::Stamp::now(model.now_ms(id));
            // `settled`: as a test reads them when it is done, every window closed (a retry
            // or an ack still awaited is then a violation); the journal itself is untouched.
            let verdicts = match req.query_param("settled") {
                None | Some("false" | "0") => model.journals.verdicts(id, now),
                Some("true" | "1") => model.journals.settled_verdicts(id),
                Some(_) => return HttpResponse::error(400, "`settled` is true or false"),
            };
            match verdicts {
                Some(v) => HttpResponse::json(200, &v.to_json()),
                None => journals_off(),
            }
        }
        ("POST", ["senders", id, "script"]) => script(model, id, req).unwrap_or_else(|e| e),
        ("GET", ["senders", id, "script"]) => HttpResponse::json(200, &json!({ "scripts": model.scripts(id) })),
        ("DELETE", ["senders", id, "script"]) => {
            model.clear_scripts(id);
            HttpResponse::empty(204)
        }
        ("DELETE", ["instances", id, "messages"]) => {
            if model.clear_inbox(id) {
                HttpResponse::empty(204)
            } else {
                unknown_instance(id)
            }
        }
        _ => HttpResponse::error(404, format!("no control endpoint {} {}", req.method, req.path)),
    }
}

/// A control handler's answer; errors are responses too, so `?` can return them.
type Reply = Result<HttpResponse, HttpResponse>;

/// The request may read or script `sender`: it names a known sender, and carries that
/// sender's server key (`Authorization: key=...`), unless the reference has a control token.
fn own_sender(model: &Model, site: &Site, sender: &str, req: &HttpRequest) -> Result<(), HttpResponse> {
    if site.control_token.is_some() {
        return match model.has_sender(sender) {
            true => Ok(()),
            false => Err(HttpResponse::error(404, format!("unknown sender id {sender:?}"))),
        };
    }
    // Without the sender's key, an unknown sender and another's look alike: sender ids are
    // not to be probed.
    match super::http::server_key(req).and_then(|k| model.sender_for_key(k)) {
        Some(s) if s == sender => Ok(()),
        _ => Err(HttpResponse::error(
            403,
            "a sender's journal, verdicts and scripts need its server key: `Authorization: key=<server key>`",
        )),
    }
}

fn journals_off() -> HttpResponse {
    HttpResponse::error(404, "this reference keeps no journals (no app-server rules, or `serve --max-journals 0`)")
}

/// A sender's journal: from the cursor `after` (a `next`), or from the oldest entry kept.
fn journal(model: &Model, sender: &str, req: &HttpRequest) -> Reply {
    if !model.journals.enabled() {
        return Err(journals_off());
    }
    let after = match req.query_param("after") {
        None => None,
        Some(a) => {
            Some(a.parse::<u64>().map_err(|_| HttpResponse::error(400, "`after` must be a whole number (a `next`)"))?)
        }
    };
    let Some(view) = model.journals.view(sender, after) else {
        return Ok(HttpResponse::json(200, &json!({ "entries": [], "next": 0 })));
    };
    let mut body = json!({ "entries": view.entries, "next": view.next });
    if view.dropped > 0 {
        body["dropped"] = json!(view.dropped);
    }
    Ok(HttpResponse::json(200, &body))
}

/// A scripted answer: `{"kind": ..., "times": N}` or `"for_seconds": S` (docs/control-api.md).
fn script(model: &mut Model, sender: &str, req: &HttpRequest) -> Reply {
    let b = body(req)?;
    let answer = Scripted::parse(&b).map_err(|e| HttpResponse::error(400, e))?;
    let count = |k: &str| match b.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| HttpResponse::error(400, format!("`{k}` must be a whole number of at least 1"))),
    };
    let (times, for_seconds) = (count("times")?, count("for_seconds")?);
    let what = answer.describe();
    let id = model.add_script(sender, answer, times, for_seconds).map_err(|e| match e {
        super::model::script::ScriptError::Full(why) => HttpResponse::error(507, why),
        super::model::script::ScriptError::UnknownSender(why) => HttpResponse::error(404, why),
    })?;
    Ok(HttpResponse::json(201, &json!({ "id": id, "answer": what })))
}

fn unknown_instance(id: &str) -> HttpResponse {
    HttpResponse::error(404, format!("no app instance with registration id {id:?}"))
}

/// What a device received: from the cursor `after` (a position, as `next` gave it) or from
/// the oldest kept. `next` is the cursor for what comes later; `dropped`, when not 0, how many
/// messages the inbox limit dropped before they could be read from there.
fn inbox(model: &Model, id: &str, req: &HttpRequest) -> Reply {
    let after = match req.query_param("after") {
        None => None,
        Some(a) => {
            Some(a.parse::<u64>().map_err(|_| HttpResponse::error(400, "`after` must be a whole number (a `next`)"))?)
        }
    };
    let view = model.inbox_from(id).ok_or_else(|| unknown_instance(id))?;
    let skip = after.map_or(0, |a| a.saturating_sub(view.first)).min(view.messages.len() as u64) as usize;
    let next = view.first + view.messages.len() as u64;
    let dropped = match after {
        None => view.dropped,
        Some(a) => view.dropped.min(view.first.saturating_sub(a)),
    };
    let mut body = json!({ "messages": &view.messages[skip..], "next": next });
    if dropped > 0 {
        body["dropped"] = json!(dropped);
    }
    Ok(HttpResponse::json(200, &body))
}

fn connectivity(model: &mut Model, id: &str, req: &HttpRequest) -> Reply {
    let b = body(req)?;
    let state = match b.get("state").cloned().map(serde_json::from_value::<Connectivity>) {
        Some(Ok(state)) => state,
        _ => return Err(HttpResponse::error(400, "expected {\"state\": \"awake\" | \"idle\" | \"offline\"}")),
    };
    Ok(if model.set_connectivity(id, state) { HttpResponse::empty(204) } else { unknown_instance(id) })
}

fn upstream(model: &mut Model, id: &str, req: &HttpRequest) -> Reply {
    let b = body(req)?;
    let Some(to) = b.get("to").and_then(Value::as_str) else {
        return Err(HttpResponse::error(
            400,
            "expected {\"to\": <notification key or sender id@gcm.googleapis.com>, \"data\": {...}}",
        ));
    };
    let data = match b.get("data") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(HttpResponse::error(400, "`data` must be a JSON object")),
    };
    if model.inbox(id).is_none() {
        return Err(unknown_instance(id));
    }
    // `<sender id>@gcm.googleapis.com` (or `@fcm.googleapis.com`) is the app server; anything
    // else a notification key.
    let fcm_refused = model.faults().has(crate::reference::Fault::XmppFcmDomain);
    if let Some((sender, domain)) = crate::xmpp::app_server(to)
        && !(fcm_refused && domain == crate::xmpp::FCM_DOMAIN)
    {
        let message_id = b.get("message_id").and_then(Value::as_str).map(str::to_string);
        // `copies`: the same message sent more than once, as the connection server did when
        // it had no ack (the app server must ack each copy).
        let copies = match b.get("copies") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_UPSTREAM_COPIES).contains(n))
                .ok_or_else(|| HttpResponse::error(400, format!("`copies` must be 1 to {MAX_UPSTREAM_COPIES}")))?,
        };
        let first = model
            .upstream_to_app_server(id, sender, data.clone(), message_id)
            .map_err(|e| HttpResponse::error(400, e))?;
        for _ in 1..copies {
            model
                .upstream_to_app_server(id, sender, data.clone(), Some(first.clone()))
                .map_err(|e| HttpResponse::error(400, e))?;
        }
        return Ok(HttpResponse::json(200, &json!({ "message_id": first })));
    }
    Ok(match model.upstream_to_group(id, to, data) {
        Ok(_) => HttpResponse::empty(204),
        Err(e) => HttpResponse::error(400, e),
    })
}

fn handled(model: &mut Model, id: &str, req: &HttpRequest) -> Reply {
    let b = body(req)?;
    let Some(message_id) = b.get("message_id").and_then(Value::as_str) else {
        return Err(HttpResponse::error(400, "expected {\"message_id\": <the id in the device's messages>}"));
    };
    Ok(match model.handled(id, message_id) {
        Ok(()) => HttpResponse::empty(204),
        Err(e) => HttpResponse::error(404, e),
    })
}

fn clock(model: &mut Model, sender: &str, req: &HttpRequest) -> Reply {
    let b = body(req)?;
    // Whole seconds, or milliseconds (what a test that stands in for a client's wait needs).
    let ms = match (b.get("advance_seconds").and_then(Value::as_u64), b.get("advance_ms").and_then(Value::as_u64)) {
        (Some(s), None) => s.saturating_mul(1000),
        (None, Some(ms)) => ms,
        _ => {
            return Err(HttpResponse::error(
                400,
                "expected {\"advance_seconds\": <whole seconds>} or {\"advance_ms\": <milliseconds>}",
            ));
        }
    };
    if ms > model.clock_room_ms(sender) {
        return Err(HttpResponse::error(
            400,
            format!(
                "a sender's clock goes at most {} ms ahead of the reference's in all; this one may move {} ms more",
                Model::MAX_CLOCK_OFFSET_MS,
                model.clock_room_ms(sender)
            ),
        ));
    }
    Ok(match model.advance_clock_ms(sender, ms) {
        Some(now_ms) => HttpResponse::json(200, &json!({ "now_ms": now_ms })),
        None => HttpResponse::error(404, format!("unknown sender id {sender:?}")),
    })
}

fn body(req: &HttpRequest) -> Result<serde_json::Map<String, Value>, HttpResponse> {
    if req.body.is_empty() {
        return Ok(Default::default());
    }
    match serde_json::from_slice(&req.body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(HttpResponse::error(400, "the body must be a JSON object")),
    }
}

fn register(model: &mut Model, req: &HttpRequest) -> Reply {
    let b = body(req)?;
    let senders: Option<Vec<String>> = b
        .get("sender_ids")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
    let Some(senders) = senders.filter(|s| !s.is_empty()) else {
        return Err(HttpResponse::error(400, "`sender_ids` must be a non-empty array of sender ids"));
    };
    let text = |field: &str| match b.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(a)) => kept_text(field, a).map(|a| Some(a.to_string())),
        Some(_) => Err(HttpResponse::error(400, format!("`{field}` must be a string"))),
    };
    let (account, package) = match (text("account"), text("package")) {
        (Ok(a), Ok(p)) => (a, p),
        (Err(r), _) | (_, Err(r)) => return Err(r),
    };
    let platform = match b.get("platform").cloned().map(serde_json::from_value::<Platform>) {
        None => Platform::default(),
        Some(Ok(p)) => p,
        Some(Err(_)) => return Err(HttpResponse::error(400, "`platform` must be \"android\" or \"ios\"")),
    };
    let new = NewInstance { senders, account, package, platform };
    // `count`: many alike at once, so that a load test sets up a million devices quickly.
    let count = match b.get("count") {
        None | Some(Value::Null) => None,
        Some(n) => match n.as_u64().filter(|n| (1..=MAX_REGISTER_AT_ONCE).contains(n)) {
            Some(n) => Some(n),
            None => {
                return Err(HttpResponse::error(
                    400,
                    format!("`count` must be a whole number from 1 to {MAX_REGISTER_AT_ONCE}"),
                ));
            }
        },
    };
    let Some(count) = count else {
        return model
            .register(new)
            .map(|id| HttpResponse::json(201, &json!({ "registration_id": id })))
            .map_err(refused);
    };
    let mut ids = Vec::with_capacity(count as usize);
    // All or none: a batch that would pass a cap stores nothing.
    model.room_for(&new.senders, count as usize).map_err(|full| store_full(&full))?;
    for _ in 0..count {
        ids.push(model.register(new.clone()).map_err(refused)?);
    }
    Ok(HttpResponse::json(201, &json!({ "registration_ids": ids })))
}

fn refused(e: RegisterError) -> HttpResponse {
    match e {
        RegisterError::Invalid(why) => HttpResponse::error(400, why),
        RegisterError::Full(full) => store_full(&full),
    }
}

/// Bytes of an `account` or `package` the control API takes: an instance keeps both, and each
/// send's journal entry copies the package of every device it names, so a 1 MiB package,
/// registered `count` times, made one request hold gigabytes. An Android package name and an
/// account's email are far shorter.
pub const MAX_CONTROL_TEXT_BYTES: usize = 256;

fn kept_text<'a>(field: &str, text: &'a str) -> Result<&'a str, HttpResponse> {
    match text.len() <= MAX_CONTROL_TEXT_BYTES {
        true => Ok(text),
        false => Err(HttpResponse::error(
            400,
            format!("`{field}` is {} bytes: the reference keeps at most {MAX_CONTROL_TEXT_BYTES}", text.len()),
        )),
    }
}

/// Copies of one upstream message `POST .../upstream` may send.
pub const MAX_UPSTREAM_COPIES: u64 = 10;

/// Instances one `POST instances` may register (`count`): bounds the work of one request.
pub const MAX_REGISTER_AT_ONCE: u64 = 10_000;

fn id_token(model: &mut Model, req: &HttpRequest) -> Reply {
    let b = body(req)?;
    let (Some(sender), Some(account)) =
        (b.get("sender_id").and_then(Value::as_str), b.get("account").and_then(Value::as_str))
    else {
        return Err(HttpResponse::error(400, "expected {\"sender_id\": ..., \"account\": ...}"));
    };
    let account = kept_text("account", account)?;
    Ok(match model.mint_id_token(sender, account) {
        Ok(Some(token)) => HttpResponse::json(201, &json!({ "id_token": token })),
        Ok(None) => HttpResponse::error(400, format!("unknown sender id {sender:?}")),
        Err(full) => store_full(&full),
    })
}

/// A store cap reached: 507 Insufficient Storage, saying which cap and how to raise it.
fn store_full(full: &StoreFull) -> HttpResponse {
    HttpResponse::error(507, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(host: Option<&str>, content_type: Option<&str>, auth: Option<&str>) -> HttpRequest {
        let mut req = HttpRequest::new("POST", &format!("{PREFIX}senders"));
        req.body = b"{}".to_vec();
        for (k, v) in [("host", host), ("content-type", content_type), ("authorization", auth)] {
            if let Some(v) = v {
                req = req.with_header(k, v);
            }
        }
        req
    }

    #[test]
    fn only_this_machine_reaches_the_control_api_without_a_token() {
        let json = Some("application/json; charset=utf-8");
        for host in [None, Some("127.0.0.1:4000"), Some("localhost:4000"), Some("[::1]:4000"), Some("app.localhost")] {
            assert!(guard(None, &post(host, json, None)).is_ok(), "{host:?}");
        }
        // A page elsewhere (DNS rebinding names its own site).
        for host in ["evil.example:4000", "evil.example", "127.0.0.1.evil.example", "localhost.evil.example:4000"] {
            assert_eq!(guard(None, &post(Some(host), json, None)).unwrap_err().status, 403, "{host}");
        }
        // What a browser sends cross-origin without asking first.
        for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data")] {
            assert_eq!(guard(None, &post(Some("127.0.0.1:4000"), ct, None)).unwrap_err().status, 415, "{ct:?}");
        }
        let get = HttpRequest::new("GET", &format!("{PREFIX}capabilities")).with_header("host", "127.0.0.1:4000");
        assert!(guard(None, &get).is_ok());
    }

    /// An instance's `package` and `account`, and an id_token's `account`, are taken up to
    /// [`MAX_CONTROL_TEXT_BYTES`] and refused past it, saying so.
    #[test]
    fn control_texts_are_taken_up_to_their_bound() {
        use crate::reference::{Config, Reference};
        let reference = Reference::new(Config::bundled());
        let sender = reference.with_model(|m| m.create_sender()).sender_id;
        let call = |path: &str, body: serde_json::Value| {
            let req = HttpRequest::new("POST", &format!("{PREFIX}{path}"))
                .with_header("host", "127.0.0.1:4000")
                .with_json(&body);
            reference.handle(&req)
        };
        let at_bound = "é".repeat(MAX_CONTROL_TEXT_BYTES / 2);
        let past_it = format!("{at_bound}x");
        for field in ["package", "account"] {
            let ok = call("instances", json!({"sender_ids": [sender], field: at_bound, "count": 2}));
            assert_eq!(ok.status, 201, "{field}");
            let refused = call("instances", json!({"sender_ids": [sender], field: past_it, "count": 2}));
            assert_eq!(refused.status, 400, "{field}");
            let why = String::from_utf8_lossy(&refused.body).to_string();
            assert!(why.contains(&format!("`{field}` is 257 bytes")), "{why}");
        }
        assert_eq!(call("id_tokens", json!({"sender_id": sender, "account": at_bound})).status, 201);
        assert_eq!(call("id_tokens", json!({"sender_id": sender, "account": past_it})).status, 400);
    }

    #[test]
    fn a_token_is_required_when_set() {
        let json = Some("application/json");
        assert_eq!(guard(Some("s3cret"), &post(None, json, None)).unwrap_err().status, 401);
        assert_eq!(guard(Some("s3cret"), &post(None, json, Some("Bearer wrong"))).unwrap_err().status, 401);
        assert_eq!(guard(Some("s3cret"), &post(None, json, Some("Basic s3cret"))).unwrap_err().status, 401);
        for scheme in ["bearer", "BEARER", "Bearer"] {
            assert!(guard(Some("s3cret"), &post(None, json, Some(&format!("{scheme} s3cret")))).is_ok(), "{scheme}");
        }
        // With the token, the reference may be reached by any name.
        assert!(guard(Some("s3cret"), &post(Some("ci-runner.internal:4000"), json, Some("Bearer s3cret"))).is_ok());
        assert_eq!(
            guard(Some("s3cret"), &post(None, Some("text/plain"), Some("Bearer s3cret"))).unwrap_err().status,
            415
        );
    }
}
