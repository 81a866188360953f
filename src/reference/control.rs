//! The control API: what a harness needs beyond the public protocol (docs/control-api.md).
//!
//! Served under a reserved prefix. It sets up isolated senders and app instances, mints
//! id_tokens, invalidates registrations and shows what a device received.

use serde_json::{Value, json};

use super::model::Model;
use crate::wire::{HttpRequest, HttpResponse};

pub const PREFIX: &str = "/_gcmspec/v1/";
/// The version string a server answers in `GET /_gcmspec/v1/capabilities`.
pub const PROTOCOL: &str = "gcmspec-control/1";

pub fn handle(model: &mut Model, profile: &str, req: &HttpRequest) -> HttpResponse {
    let rest = &req.path[PREFIX.len()..];
    let parts: Vec<&str> = rest.split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["capabilities"]) => HttpResponse::json(
            200,
            &json!({
                "protocol": PROTOCOL,
                "profile": profile,
                "capabilities": crate::spec::CAPABILITIES,
                "faults": model.faults().iter().map(|f| f.rule_id()).collect::<Vec<_>>(),
            }),
        ),
        ("POST", ["senders"]) => HttpResponse::json(201, &json!(model.create_sender())),
        ("POST", ["instances"]) => register(model, req),
        ("POST", ["id_tokens"]) => id_token(model, req),
        ("POST", ["instances", id, "unregister"]) => {
            if model.unregister(id) {
                HttpResponse::empty(204)
            } else {
                HttpResponse::error(404, format!("no app instance with registration id {id:?}"))
            }
        }
        ("GET", ["instances", id, "messages"]) => match model.inbox(id) {
            Some(messages) => HttpResponse::json(200, &json!({ "messages": messages })),
            None => HttpResponse::error(404, format!("no app instance with registration id {id:?}")),
        },
        _ => HttpResponse::error(404, format!("no control endpoint {} {}", req.method, req.path)),
    }
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

fn register(model: &mut Model, req: &HttpRequest) -> HttpResponse {
    let b = match body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let senders: Option<Vec<String>> = b
        .get("sender_ids")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
    let Some(senders) = senders.filter(|s| !s.is_empty()) else {
        return HttpResponse::error(400, "`sender_ids` must be a non-empty array of sender ids");
    };
    if let Some(unknown) = senders.iter().find(|s| !model.has_sender(s)) {
        return HttpResponse::error(400, format!("unknown sender id {unknown:?}"));
    }
    let account = match b.get("account") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a.clone()),
        Some(_) => return HttpResponse::error(400, "`account` must be a string"),
    };
    for field in ["package", "platform"] {
        if b.get(field).is_some_and(|v| !v.is_string()) {
            return HttpResponse::error(400, format!("`{field}` must be a string"));
        }
    }
    let id = model.register_instance(senders, account);
    HttpResponse::json(201, &json!({ "registration_id": id }))
}

fn id_token(model: &mut Model, req: &HttpRequest) -> HttpResponse {
    let b = match body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(sender), Some(account)) =
        (b.get("sender_id").and_then(Value::as_str), b.get("account").and_then(Value::as_str))
    else {
        return HttpResponse::error(400, "expected {\"sender_id\": ..., \"account\": ...}");
    };
    match model.mint_id_token(sender, account) {
        Some(token) => HttpResponse::json(201, &json!({ "id_token": token })),
        None => HttpResponse::error(400, format!("unknown sender id {sender:?}")),
    }
}
