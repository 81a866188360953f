//! Group operations on the trial's endpoint, written once.
//!
//! On the server side (`server`), a `manage` step is one request to /gcm/notification, a group
//! addressed by its key once a create named it. On the client side (`client`), the group is
//! named after the account that manages it, every request carries that account's id_token,
//! takes one registration id and has no create: a create is an add per id (the first makes
//! the group), an add or a remove one request per id. The answer, whatever it took:
//!
//! ```text
//! { "ok": bool,                  every request was answered 200 with a notification_key
//!   "refused": bool,             some request was answered 4xx
//!   "says_why": bool,            that refusal has a body
//!   "status": n,                 the last request's status
//!   "notification_key": key }    the last key answered
//! ```

use serde_json::{Value, json};

use super::Lane;
use super::delivery::Exchanges;
use crate::catalog::Path;
use crate::catalog::template::text_of;
use crate::driver::Control;
use crate::wire::{HttpRequest, HttpResponse};

pub(super) fn manage(
    control: &Control<'_>,
    endpoint: Path,
    lane: &mut Lane,
    op: &str,
    ids: &[String],
    group: &str,
    label: &str,
) -> Result<(Exchanges, Value), String> {
    let sender = lane.vars["sender"].clone();
    let (id, key) = (text_of(&sender["id"]), text_of(&sender["key"]));
    let mut requests: Vec<HttpRequest> = Vec::new();
    match endpoint {
        Path::Server => {
            let mut body = json!({ "operation": op, "notification_key_name": group, "registration_ids": ids });
            if op != "create" {
                let Some(k) = lane.groups.get(group) else {
                    return Err(format!("the group `{group}` has no key: no create of it succeeded"));
                };
                body["notification_key"] = json!(k);
            }
            requests.push(
                HttpRequest::new("POST", "/gcm/notification")
                    .with_header("authorization", &format!("key={key}"))
                    .with_header("project_id", &id)
                    .with_json(&body),
            );
        }
        Path::Client => {
            let token = match lane.tokens.get(group) {
                Some(t) => t.clone(),
                None => {
                    let t = control.id_token(&id, group).map_err(|e| e.to_string())?;
                    lane.tokens.insert(group.to_string(), t.clone());
                    t
                }
            };
            let op = if op == "create" { "add" } else { op };
            for reg in ids {
                let body = json!({ "operation": op, "notification_key_name": group, "registration_ids": [reg], "id_token": token });
                requests.push(
                    HttpRequest::new("POST", "/gcm/googlenotification").with_header("project_id", &id).with_json(&body),
                );
            }
        }
        other => return Err(format!("`{other}` is not a group endpoint a `manage` step can use")),
    }
    let mut exchanges: Exchanges = Vec::new();
    let (mut ok, mut refused, mut says_why) = (true, false, false);
    let mut last: Option<(u16, Option<String>)> = None;
    let total = requests.len();
    for (k, req) in requests.into_iter().enumerate() {
        let resp: HttpResponse = control.target.exchange(&req).map_err(|e| e.to_string())?;
        let answered = resp.body_json().and_then(|b| b["notification_key"].as_str().map(str::to_string));
        if resp.status != 200 || answered.is_none() {
            ok = false;
        }
        if (400..500).contains(&resp.status) {
            refused = true;
            says_why |= !resp.body.iter().all(u8::is_ascii_whitespace);
        }
        if let Some(k) = &answered
            && resp.status == 200
        {
            lane.groups.insert(group.to_string(), k.clone());
        }
        last = Some((resp.status, answered));
        let label = if total > 1 { format!("{label} ({} of {total})", k + 1) } else { label.to_string() };
        let stop = resp.status != 200;
        exchanges.push((label, req, resp));
        // A client-side operation stops at its first refusal, as an app would.
        if stop {
            break;
        }
    }
    let (status, key) = last.unwrap_or((0, None));
    let mut answer = json!({ "ok": ok && status != 0, "refused": refused, "says_why": says_why, "status": status });
    if let Some(k) = key {
        answer["notification_key"] = json!(k);
    }
    Ok((exchanges, answer))
}
