//! The group rules on every way an app server can break them, found by an outside pass: an
//! add or remove carries the key it was given however the key is missing (absent, null, not
//! a string), and a send addressed to a group's name is one whichever field and path carry
//! the name.

use gcmspec::verdicts::Outcome;
use gcmspec::wire::HttpRequest;
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::trial;
use crate::verdict_readings::{App, outcome};

/// A fresh app server with a group named `name` made of one device: the group's key and a
/// second device's token.
fn with_group(name: &str) -> (App, String, String) {
    let app = App::new();
    let (a, b) = (app.device("android"), app.device("android"));
    let key = app.group_named(name, &[a]);
    (app, key, b)
}

fn judged(app: &App, rule: &str) -> Result<Option<Outcome>, String> {
    Ok(outcome(&app.settled()?, rule))
}

/// An add or remove for a name whose key was given, with no key, breaks app.group.save-key
/// however the key is missing; with the key given, it does not.
fn an_operation_without_its_key_has_none() -> Result<(), String> {
    let missing: [(&str, Option<Value>); 5] = [
        ("absent", None),
        ("null", Some(Value::Null)),
        ("a number", Some(json!(123))),
        ("an array", Some(json!(["k"]))),
        ("empty", Some(json!(""))),
    ];
    let mut wrong = Vec::new();
    for operation in ["add", "remove"] {
        for (how, key) in &missing {
            let (app, _, b) = with_group("g");
            let mut body = json!({ "operation": operation, "notification_key_name": "g", "registration_ids": [b] });
            if let Some(key) = key {
                body["notification_key"] = key.clone();
            }
            app.call("POST", "/gcm/notification", Some(body));
            if judged(&app, "app.group.save-key")? != Some(Outcome::Violated) {
                wrong.push(format!("an {operation} with its key {how} was not blamed"));
            }
        }
        let (app, key, b) = with_group("g");
        let body = json!({ "operation": operation, "notification_key_name": "g", "notification_key": key, "registration_ids": [b] });
        app.call("POST", "/gcm/notification", Some(body));
        if judged(&app, "app.group.save-key")? != Some(Outcome::Passed) {
            wrong.push(format!("an {operation} with the key it was given did not pass"));
        }
    }
    if wrong.is_empty() { Ok(()) } else { Err(wrong.join("; ")) }
}

/// A plain-text send of `form` (already encoded) from `app`.
fn plain_text(app: &App, form: &str) {
    let mut req = HttpRequest::new("POST", "/fcm/send")
        .with_header("authorization", &format!("key={}", app.key))
        .with_header("content-type", "application/x-www-form-urlencoded;charset=UTF-8");
    req.body = form.as_bytes().to_vec();
    app.reference.handle(&req);
}

/// A send of the message from an app server, given the group's name and a token.
type Send = fn(&App, &str, &str);

/// A send that names a group by its name breaks app.group.create-before-send in `to` and
/// among `registration_ids`, as JSON and as plain text; a send to the key, or to tokens
/// alone, does not.
fn a_send_to_a_group_name_is_one_on_every_path() -> Result<(), String> {
    let name = "grp";
    let mut wrong = Vec::new();
    let sends: [(&str, Send); 5] = [
        ("to, JSON", |app, name, _| {
            app.send(json!({ "to": name, "data": { "a": "1" } }));
        }),
        ("registration_ids, JSON", |app, name, _| {
            app.send(json!({ "registration_ids": [name], "data": { "a": "1" } }));
        }),
        ("registration_ids with a token, JSON", |app, name, token| {
            app.send(json!({ "registration_ids": [token, name], "data": { "a": "1" } }));
        }),
        ("registration_id, plain text", |app, name, _| plain_text(app, &format!("registration_id={name}&data.a=1"))),
        ("two registration_id, plain text", |app, name, token| {
            plain_text(app, &format!("registration_id={token}&registration_id={name}&data.a=1"))
        }),
    ];
    for (how, send) in sends {
        let (app, _, token) = with_group(name);
        send(&app, name, &token);
        if judged(&app, "app.group.create-before-send")? != Some(Outcome::Violated) {
            wrong.push(format!("a send naming the group in {how} was not blamed"));
        }
    }
    let (app, key, token) = with_group(name);
    app.send(json!({ "to": key, "data": { "a": "1" } }));
    app.send(json!({ "registration_ids": [token], "data": { "a": "2" } }));
    plain_text(&app, &format!("registration_id={token}&data.a=3"));
    if judged(&app, "app.group.create-before-send")? == Some(Outcome::Violated) {
        wrong.push("sends to the key and to a token were blamed".into());
    }
    if wrong.is_empty() { Ok(()) } else { Err(wrong.join("; ")) }
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("group-readings::an-operation-without-its-key-has-none", an_operation_without_its_key_has_none),
        trial(
            "group-readings::a-send-to-a-group-name-is-one-on-every-path",
            a_send_to_a_group_name_is_one_on_every_path,
        ),
    ]
}
