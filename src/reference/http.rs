//! The HTTP adapter: requests in, model calls, responses out. Thin on purpose.
//!
//! [`handle`] is synchronous and socket-free, so the harness's in-process target and the
//! real server (see [`super::serve`]) run exactly the same code.

use serde_json::{Map, Value, json};

use super::control;
use super::faults::{Fault, Variant, Variants, WrongUnit};
use super::model::{
    ClientOp, GroupError, GroupOp, Message, Model, Path, SendOutcome, SendResult, Target, Via, send_outcome_body,
    send_outcome_json,
};
use crate::wire::json_kind as kind;
use crate::wire::{HttpRequest, HttpResponse};

/// Paths of the public protocol.
pub const GROUP_PATHS: &[&str] = &["/gcm/notification", "/fcm/notification"];
pub const CLIENT_GROUP_PATH: &str = "/gcm/googlenotification";
pub const SEND_PATHS: &[&str] = &["/gcm/send", "/fcm/send"];

/// What a server instance shows beyond the model.
#[derive(Debug, Clone)]
pub struct Site {
    pub profile: String,
    pub control_api: bool,
    /// Required of every control-API request (`Authorization: Bearer ...`), when set.
    pub control_token: Option<String>,
}

pub fn handle(model: &mut Model, site: &Site, req: &HttpRequest) -> HttpResponse {
    let resp = route(model, site, req);
    if model.variants().has(Variant::PlainTextErrors) && (400..500).contains(&resp.status) {
        return plain_text(resp);
    }
    resp
}

/// The plain-text variant of an error: the message alone, as text.
fn plain_text(resp: HttpResponse) -> HttpResponse {
    let Some(message) = resp.body_json().and_then(|b| b["error"].as_str().map(str::to_string)) else { return resp };
    HttpResponse {
        status: resp.status,
        headers: vec![("content-type".into(), "text/plain; charset=UTF-8".into())],
        body: format!("Error={message}").into_bytes(),
    }
}

fn route(model: &mut Model, site: &Site, req: &HttpRequest) -> HttpResponse {
    let path = req.path.as_str();
    let method = req.method.as_str();
    if path.starts_with(control::PREFIX) && site.control_api {
        if let Err(refused) = control::guard(site.control_token.as_deref(), req) {
            return refused;
        }
        return control::handle(model, site, req);
    }
    match (method, path) {
        ("POST", p) if GROUP_PATHS.contains(&p) => group_operation(model, req),
        ("GET", p) if GROUP_PATHS.contains(&p) => group_lookup(model, req),
        ("POST", CLIENT_GROUP_PATH) => client_group_operation(model, req),
        ("POST", p) if SEND_PATHS.contains(&p) => send(model, req),
        (_, p) if GROUP_PATHS.contains(&p) || SEND_PATHS.contains(&p) || p == CLIENT_GROUP_PATH => {
            HttpResponse::error(405, format!("{method} is not allowed on {p}"))
        }
        _ => HttpResponse::error(404, format!("no endpoint at {path}")),
    }
}

/// Whether a request is one of the public protocol's, which the journal keeps (the control
/// API's are the test's own doing).
pub fn journaled(req: &HttpRequest) -> bool {
    let p = req.path.as_str();
    SEND_PATHS.contains(&p) || GROUP_PATHS.contains(&p) || p == CLIENT_GROUP_PATH
}

/// The sender a request of the public protocol acts for: its server key's, or on the
/// client-side endpoint (no key) its `project_id`'s.
pub fn sender_of(model: &Model, req: &HttpRequest) -> Option<String> {
    if let Some(sender) = server_key(req).and_then(|k| model.sender_for_key(k)) {
        return Some(sender.to_string());
    }
    let project = req.header("project_id").map(str::trim).filter(|p| model.has_sender(p))?;
    (req.path == CLIENT_GROUP_PATH).then(|| project.to_string())
}

/// A scripted 5xx (`POST .../script`), with its Retry-After: delta-seconds, or an HTTP date
/// from the wall clock (the one an app server compares it with), rounded up.
fn scripted_status(model: &mut Model, sender: &str, send: bool) -> Option<HttpResponse> {
    let (status, retry_after) = model.scripted_status(sender, send)?;
    let mut resp = HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/html; charset=UTF-8".into())],
        body: format!("<HTML><HEAD><TITLE>Error {status}</TITLE></HEAD><BODY><H1>Error {status}</H1><P>The service is unavailable now: try again later.</P></BODY></HTML>\n").into_bytes(),
    };
    match retry_after {
        Some(super::model::script::RetryAfter::Seconds(s)) => resp.headers.push(("retry-after".into(), s.to_string())),
        Some(super::model::script::RetryAfter::DateIn(s)) => {
            let at = super::journal::wall_ms() + s * 1000;
            resp.headers.push(("retry-after".into(), crate::verdicts::events::http_date(at)));
        }
        None => {}
    }
    Some(resp)
}

/// The server key of `Authorization: key=...`, if the header has that form.
pub(crate) fn server_key(req: &HttpRequest) -> Option<&str> {
    let v = req.header("authorization")?.trim();
    let (scheme, key) = v.split_at_checked(4)?;
    scheme.eq_ignore_ascii_case("key=").then(|| key.trim()).filter(|k| !k.is_empty())
}

/// A 401 as the real service sent it: a small HTML page titled Unauthorized. Clients that
/// know the service recognise it by that text (fcm-node and fcm-push look for `"error":`
/// first, and take a JSON error for another failure), so the reason a person needs is a
/// paragraph of the page, worded without JSON.
fn unauthorized(req: &HttpRequest) -> HttpResponse {
    let why = match req.header("authorization") {
        None => "The request has no Authorization header: send Authorization: key=&lt;server key&gt;.",
        Some(_) => "The server key in the Authorization header is not one of this server's.",
    };
    HttpResponse {
        status: 401,
        headers: vec![("content-type".into(), "text/html; charset=UTF-8".into())],
        body: format!(
            "<HTML>\n<HEAD>\n<TITLE>Unauthorized</TITLE>\n</HEAD>\n<BODY BGCOLOR=\"#FFFFFF\" TEXT=\"#000000\">\n<H1>Unauthorized</H1>\n<H2>Error 401</H2>\n<P>{why}</P>\n</BODY>\n</HTML>\n"
        )
        .into_bytes(),
    }
}

fn json_object(req: &HttpRequest) -> Result<Map<String, Value>, HttpResponse> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(HttpResponse::error(400, format!("the body must be a JSON object, found {}", kind(&other)))),
        Err(e) => Err(HttpResponse::error(400, format!("the body is not valid JSON: {e}"))),
    }
}

fn string_field(body: &Map<String, Value>, field: &str, required: bool) -> Result<Option<String>, HttpResponse> {
    match body.get(field) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(HttpResponse::error(400, format!("missing field `{field}`"))),
        Some(other) => Err(HttpResponse::error(400, format!("`{field}` must be a string, found {}", kind(other)))),
    }
}

fn registration_ids(body: &Map<String, Value>) -> Result<Vec<String>, HttpResponse> {
    let bad = |why: &str| HttpResponse::error(400, format!("`registration_ids` {why}"));
    match body.get("registration_ids") {
        None => Err(bad("is missing")),
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad("must hold only strings"))).collect()
        }
        Some(other) => Err(bad(&format!("must be an array of strings, found {}", kind(other)))),
    }
}

fn group_error(variants: &Variants, e: GroupError) -> HttpResponse {
    let other = variants.has(Variant::OtherErrorStatuses);
    let status = match e {
        GroupError::BadIdToken => 401,
        GroupError::NotOwner => 403,
        // The reference's own store cap, not a rule of the protocol: 507 Insufficient Storage.
        GroupError::StoreFull(_) => 507,
        GroupError::NotFound if other => 404,
        GroupError::AlreadyExists | GroupError::NameMismatch if other => 409,
        GroupError::TooManyMembers { .. } if other => 422,
        _ => 400,
    };
    if e == GroupError::AlreadyExists && variants.has(Variant::AlreadyExistsAnswered200) {
        return HttpResponse::json(200, &json!({ "error": e.to_string() }));
    }
    HttpResponse::error(status, e)
}

fn key_response(variants: &Variants, result: Result<String, GroupError>) -> HttpResponse {
    match result {
        Ok(key) => HttpResponse::json(200, &json!({ "notification_key": key })),
        Err(e) => group_error(variants, e),
    }
}

/// Authenticates a server-side group request (`path`: an operation, or the lookup) and
/// returns its sender.
fn group_sender(model: &Model, req: &HttpRequest, path: Path) -> Result<String, HttpResponse> {
    let project_id = req.header("project_id").map(str::trim);
    let sender = model.sender_for_group_request(server_key(req), project_id, path).ok_or_else(|| unauthorized(req))?;
    if model.ignores_project_id(path) {
        return Ok(sender);
    }
    let other = model.variants().has(Variant::OtherErrorStatuses);
    match project_id {
        None => {
            Err(HttpResponse::error(if other { 403 } else { 400 }, "missing project_id header: expected the sender id"))
        }
        Some(p) if p != sender => Err(HttpResponse::error(
            if other { 403 } else { 401 },
            "project_id does not match the sender of the server key",
        )),
        Some(_) => Ok(sender),
    }
}

fn group_operation(model: &mut Model, req: &HttpRequest) -> HttpResponse {
    let parsed = (|| {
        let sender = group_sender(model, req, Path::Server)?;
        if let Some(resp) = scripted_status(model, &sender, false) {
            return Err(resp);
        }
        let body = json_object(req)?;
        let operation = string_field(&body, "operation", true)?.unwrap_or_default();
        let name = string_field(&body, "notification_key_name", false)?;
        let ids = registration_ids(&body)?;
        let op = match operation.as_str() {
            "add" | "remove" => {
                let key = string_field(&body, "notification_key", true)?.unwrap_or_default();
                if operation == "add" { GroupOp::Add { key, name, ids } } else { GroupOp::Remove { key, name, ids } }
            }
            other if other == "create" || model.faults().on(Fault::MalformedGroupRequest, Path::Server) => {
                let name = name.ok_or_else(|| HttpResponse::error(400, "missing field `notification_key_name`"))?;
                GroupOp::Create { name, ids }
            }
            other => {
                return Err(HttpResponse::error(
                    400,
                    format!("unknown operation {other:?}: expected \"create\", \"add\" or \"remove\""),
                ));
            }
        };
        Ok((sender, op))
    })();
    match parsed {
        Ok((sender, op)) => {
            if let GroupOp::Create { ids, .. } | GroupOp::Add { ids, .. } = &op {
                model.observe_devices(ids);
            }
            let create = matches!(op, GroupOp::Create { .. });
            match model.manage_group(&sender, op) {
                Ok(_) if create && model.faults().has(Fault::CreateReturnsKey) => HttpResponse::json(200, &json!({})),
                result => key_response(model.variants(), result),
            }
        }
        Err(resp) => resp,
    }
}

fn group_lookup(model: &mut Model, req: &HttpRequest) -> HttpResponse {
    let sender = match group_sender(model, req, Path::Lookup) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if let Some(resp) = scripted_status(model, &sender, false) {
        return resp;
    }
    match req.query_param("notification_key_name") {
        // The malformed-request fault, on the lookup: the sender's oldest group instead.
        None if model.faults().on(Fault::MalformedGroupRequest, Path::Lookup) => {
            let first = model.groups_of(&sender).into_values().next();
            match first.and_then(|g| g["notification_key"].as_str().map(str::to_string)) {
                Some(k) => HttpResponse::json(200, &json!({ "notification_key": k })),
                None => HttpResponse::json(200, &json!({})),
            }
        }
        None => HttpResponse::error(400, "missing query parameter `notification_key_name`"),
        Some(name) => {
            let result = model.lookup(&sender, name);
            key_response(model.variants(), result)
        }
    }
}

fn client_group_operation(model: &mut Model, req: &HttpRequest) -> HttpResponse {
    let parsed = (|| {
        let body = json_object(req)?;
        let token_project = || {
            let token = body.get("id_token").and_then(Value::as_str)?;
            model.project_of_id_token(token)
        };
        let project_id = match req.header("project_id").map(|p| p.trim().to_string()) {
            Some(p) => p,
            None if model.faults().has(Fault::ClientRequired) && token_project().is_some() => {
                token_project().unwrap_or_default()
            }
            None => return Err(HttpResponse::error(400, "missing project_id header: expected the sender id")),
        };
        let operation = string_field(&body, "operation", true)?.unwrap_or_default();
        let op = match operation.as_str() {
            "add" => ClientOp::Add,
            "remove" => ClientOp::Remove,
            "create" if model.faults().has(Fault::ClientNoCreate) => ClientOp::Add,
            // The malformed-request fault, on the client side: any operation is an add.
            other if other != "create" && model.faults().on(Fault::MalformedGroupRequest, Path::Client) => {
                ClientOp::Add
            }
            "create" => {
                let status = if model.variants().has(Variant::OtherErrorStatuses) { 403 } else { 400 };
                return Err(HttpResponse::error(
                    status,
                    "the client-side endpoint supports only \"add\" and \"remove\": add creates the group",
                ));
            }
            other => {
                return Err(HttpResponse::error(
                    400,
                    format!("unknown operation {other:?}: expected \"add\" or \"remove\""),
                ));
            }
        };
        let id_token = string_field(&body, "id_token", false)?;
        let name = match string_field(&body, "notification_key_name", !model.faults().has(Fault::ClientRequiredName))? {
            Some(name) => name,
            None => id_token.as_deref().and_then(|t| model.account_of_id_token(t)).unwrap_or_default(),
        };
        let mut ids = registration_ids(&body)?;
        let faults = model.faults();
        let several_allowed = !ids.is_empty()
            && (faults.has(Fault::ClientSingleId)
                || (faults.has(Fault::ClientSingleIdRemove) && op == ClientOp::Remove));
        if faults.has(Fault::ClientSingleIdFirstOnly) {
            ids.truncate(1);
        }
        if ids.len() != 1 && !several_allowed {
            return Err(HttpResponse::error(
                400,
                format!("a client request takes exactly one registration id, found {}", ids.len()),
            ));
        }
        Ok((project_id, op, name, id_token, ids))
    })();
    let (project_id, op, name, id_token, ids) = match parsed {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let mut result = Err(GroupError::NoValidRegistrationIds);
    for id in ids {
        result = model.manage_group_as_client(&project_id, id_token.as_deref(), op, name.clone(), id);
        if result.is_err() {
            break;
        }
    }
    key_response(model.variants(), result)
}

fn send(model: &mut Model, req: &HttpRequest) -> HttpResponse {
    // Authentication comes before validation: a stranger learns nothing about the body.
    let key = server_key(req);
    let keyed = key.and_then(|k| model.sender_for_key(k)).map(str::to_string);
    if keyed.is_none() && !model.faults().anywhere(Fault::SendAuth) {
        return unauthorized(req);
    }
    if let Some(sender) = &keyed
        && let Some(resp) = scripted_status(model, sender, true)
    {
        // Answered before the body was read: whether it went to a key is looked up for the
        // journal alone (a key's 5xx is the group's failure to retry).
        let to =
            serde_json::from_slice::<Value>(&req.body).ok().and_then(|b| b.get("to")?.as_str().map(str::to_string));
        if let Some(to) = to {
            model.observe_to(sender, &to);
        }
        return resp;
    }
    let plain_text = req.header("content-type").is_some_and(|t| {
        t.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }) && !model.faults().has(Fault::PlainText);
    if plain_text {
        return send_plain_text(model, req);
    }
    let body = match json_object(req) {
        Ok(b) => b,
        Err(_) if model.faults().has(Fault::SendMalformed) => return HttpResponse::json(200, &json!({})),
        Err(resp) => return resp,
    };
    let parsed = parse_send(model, &body, Via::Json);
    let (target, message) = match parsed {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let sender = match keyed {
        Some(sender) => sender,
        None => match model.sender_for_send(key, &target, message.via) {
            Some(sender) => sender,
            None => return unauthorized(req),
        },
    };
    let outcome = model.send(&sender, target, message);
    let resp = match send_outcome_body(&outcome, model.faults()) {
        (status, Some(body)) => HttpResponse::json_bytes(status, body),
        (status, None) => HttpResponse::empty(status),
    };
    model.observe_send(sender, body, &outcome);
    resp
}

/// The plain-text send format (protocol-notes.md): `registration_id=<one id>&collapse_key=..&
/// time_to_live=..&delay_while_idle=1&data.<key>=<value>`, answered in text: `id=<message id>`,
/// then `registration_id=<canonical id>` on a second line when there is one, or a single line
/// `Error=<code>`. The form is read into the JSON request's shape, so both are validated alike.
fn send_plain_text(model: &mut Model, req: &HttpRequest) -> HttpResponse {
    let text = |status: u16, body: String| HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=UTF-8".into())],
        body: body.into_bytes(),
    };
    let mut body = Map::new();
    let mut data = Map::new();
    let mut ids = Vec::new();
    for (key, value) in form_urlencoded::parse(&req.body) {
        let flag = |v: &str| match v {
            "1" | "true" => Ok(Value::Bool(true)),
            "0" | "false" => Ok(Value::Bool(false)),
            other => Err(text(400, format!("Error=`{key}` must be 1 or 0, found {other:?}"))),
        };
        let entry = match key.as_ref() {
            "registration_id" => {
                ids.push(Value::String(value.into_owned()));
                continue;
            }
            k if k.starts_with("data.") => {
                if !model.faults().has(Fault::PlainTextDropsData) {
                    data.insert(k["data.".len()..].to_string(), Value::String(value.into_owned()));
                }
                continue;
            }
            // Not a whole number: out of range, InvalidTtl, as in JSON.
            "time_to_live" => Value::from(crate::wire::plain_whole_number(&value).unwrap_or(-1)),
            "delay_while_idle" | "dry_run" => match flag(&value) {
                Ok(v) => v,
                Err(resp) => return resp,
            },
            "collapse_key" | "restricted_package_name" => Value::String(value.into_owned()),
            // Other fields of the JSON format have no plain-text form; unknown ones are ignored.
            _ => continue,
        };
        body.insert(key.into_owned(), entry);
    }
    if ids.len() > 1 {
        return text(400, format!("Error=the plain-text format takes one registration_id, found {}", ids.len()));
    }
    if !ids.is_empty() {
        body.insert("registration_ids".into(), Value::Array(ids));
    }
    if !data.is_empty() {
        body.insert("data".into(), Value::Object(data));
    }
    let (target, message) = match parse_send(model, &body, Via::PlainText) {
        Ok(p) => p,
        Err(resp) => {
            let why = resp.body_json().and_then(|b| b["error"].as_str().map(str::to_string)).unwrap_or_default();
            return text(resp.status, format!("Error={why}"));
        }
    };
    let Some(sender) = model.sender_for_send(server_key(req), &target, message.via) else { return unauthorized(req) };
    let outcome = model.send(&sender, target, message);
    if model.faults().has(Fault::PlainTextJsonAnswer) {
        let (status, body) = send_outcome_json(&outcome, model.faults());
        return HttpResponse::json(status, &body.unwrap_or_default());
    }
    let answer = match &outcome {
        SendOutcome::Multicast { results, .. } => match results.first() {
            Some(SendResult::Sent { message_id, canonical: Some(c) })
                if !model.faults().has(Fault::PlainTextNoCanonical) =>
            {
                format!("id={message_id}\nregistration_id={c}")
            }
            Some(SendResult::Sent { message_id, .. }) => format!("id={message_id}"),
            Some(SendResult::Error(e)) => format!("Error={e}"),
            None => "Error=MissingRegistration".into(),
        },
        SendOutcome::Invalid { error, .. } => format!("Error={error}"),
        // A registration id names no group here.
        SendOutcome::Group { .. } | SendOutcome::GroupFailed => "Error=InvalidRegistration".into(),
    };
    text(200, answer)
}

/// A downstream send's JSON, as both transports take it: the target and the message, or a
/// 400 that says what is wrong (the XMPP adapter turns it into a nack).
pub(crate) fn parse_send(
    model: &Model,
    body: &Map<String, Value>,
    via: Via,
) -> Result<(Target, Message), HttpResponse> {
    let exclusive = !model.faults().has(Fault::TargetExclusive);
    let target = match (crate::wire::given(body, "to"), crate::wire::given(body, "registration_ids")) {
        (Some(_), Some(_)) if exclusive => {
            return Err(HttpResponse::error(400, "`to` and `registration_ids` exclude each other"));
        }
        (Some(_), _) => Target::To(string_field(body, "to", true)?.unwrap_or_default()),
        (None, Some(_)) => {
            let ids = registration_ids(body)?;
            let max = model.limits().max_registration_ids;
            if ids.is_empty() {
                return Err(HttpResponse::error(400, "`registration_ids` must not be empty (MissingRegistration)"));
            }
            // The fault that counts in the wrong unit counts only the entries that are ids.
            let counted = match model.faults().unit("max_registration_ids") {
                Some(WrongUnit::ValidIds) => ids.iter().filter(|id| model.is_registration_id(id)).count(),
                _ => ids.len(),
            };
            if counted > max && !model.faults().has(Fault::RegistrationIdsLimit) {
                return Err(HttpResponse::error(
                    400,
                    format!("`registration_ids` holds {} ids: at most {max} per request", ids.len()),
                ));
            }
            Target::RegistrationIds(ids)
        }
        // Answered as documented, 200 with the error in the result (real servers also said
        // 400): the model renders it.
        (None, None) => Target::Missing,
    };
    let object = |field: &str| match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => Err(HttpResponse::error(400, format!("`{field}` must be a JSON object, found {}", kind(other)))),
    };
    let flag = |field: &str| match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(HttpResponse::error(400, format!("`{field}` must be true or false, found {}", kind(other)))),
    };
    // A time_to_live that is not a whole number is out of range: InvalidTtl, like -1. A whole
    // one written as a float (`60.0`, `6e1`) is its value, as app.send.ttl-range reads it.
    let time_to_live = match body.get("time_to_live") {
        None | Some(Value::Null) => None,
        Some(v) => Some(crate::wire::whole_number(v).unwrap_or(-1)),
    };
    let message = Message {
        collapse_key: string_field(body, "collapse_key", false)?,
        data: object("data")?,
        notification: object("notification")?,
        time_to_live,
        delay_while_idle: flag("delay_while_idle")?,
        dry_run: flag("dry_run")?,
        restricted_package_name: string_field(body, "restricted_package_name", false)?,
        receipt_for: None,
        via,
    };
    Ok((target, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_is_bounded_and_read_from_a_cursor() {
        let config = crate::reference::Config { inbox_limit: 3, ..crate::reference::Config::bundled() };
        let reference = crate::Reference::new(config);
        let (sender, phone) = reference.with_model(|m| {
            let s = m.create_sender();
            let phone = m.register_instance(vec![s.sender_id.clone()], None);
            (s, phone)
        });
        let send = |n: usize| {
            let req = HttpRequest::new("POST", "/fcm/send")
                .with_header("authorization", &format!("key={}", sender.server_key))
                .with_json(&json!({"to": phone, "time_to_live": 0, "data": {"n": n.to_string()}}));
            assert_eq!(reference.handle(&req).status, 200);
        };
        let read = |query: &str| {
            let mut req = HttpRequest::new("GET", &format!("/_gcmspec/v1/instances/{phone}/messages"));
            req.query = crate::wire::parse_query(query);
            reference.handle(&req).body_json().expect("JSON")
        };
        let ns =
            |v: &Value| v["messages"].as_array().map(|m| m.iter().map(|x| x["data"]["n"].clone()).collect::<Vec<_>>());
        for n in 0..2 {
            send(n);
        }
        assert_eq!(read("")["next"], 2);
        assert_eq!(ns(&read("after=1")), Some(vec![json!("1")]));
        for n in 2..10 {
            send(n);
        }
        // The newest 3 are kept; 7 were dropped, 6 of them after the cursor at 1.
        let all = read("");
        assert_eq!(ns(&all), Some(vec![json!("7"), json!("8"), json!("9")]));
        assert_eq!((all["next"].clone(), all["dropped"].clone()), (json!(10), json!(7)));
        assert_eq!(read("after=1")["dropped"], 6);
        assert_eq!(ns(&read("after=9")), Some(vec![json!("9")]));
        assert!(read("after=9").get("dropped").is_none());
        // Cleared: nothing shown, positions go on.
        let clear = HttpRequest::new("DELETE", &format!("/_gcmspec/v1/instances/{phone}/messages"));
        assert_eq!(reference.handle(&clear).status, 204);
        send(10);
        assert_eq!(ns(&read("after=10")), Some(vec![json!("10")]));
    }

    #[test]
    fn a_401_says_unauthorized_and_why() {
        let reference = crate::Reference::new(crate::reference::Config::bundled());
        for req in [
            HttpRequest::new("POST", "/fcm/send").with_json(&json!({"to": "x"})),
            HttpRequest::new("POST", "/fcm/send").with_header("authorization", "key=nope").with_json(&json!({})),
        ] {
            let resp = reference.handle(&req);
            let text = String::from_utf8_lossy(&resp.body).into_owned();
            assert_eq!(resp.status, 401);
            assert!(text.contains("Unauthorized") && text.contains("server key"), "{text}");
        }
    }
}
