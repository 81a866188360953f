//! `serve --state FILE`: what a crash (`kill -9`) keeps. Each trial starts a server on a
//! fresh file, has it accept things over HTTP, the control API and XMPP, kills it without
//! warning, starts it again on the same file and asks for everything back.

use libtest_mimic::Trial;
use serde_json::{Value, json};

use gcmspec::driver::xmpp::XmppClient;
use gcmspec::driver::{HttpTarget, Target};
use gcmspec::wire::HttpRequest;

use crate::cli::Served;
use crate::trial;

struct Api {
    target: HttpTarget,
}

impl Api {
    fn new(url: &str) -> Result<Api, String> {
        Ok(Api { target: HttpTarget::new(url, std::time::Duration::from_secs(10)).map_err(|e| e.to_string())? })
    }

    /// A request as `sender` (its key, and its id as `project_id`), or anonymous.
    fn call(
        &self,
        method: &str,
        path: &str,
        sender: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut req = HttpRequest::new(method, path);
        req.query = gcmspec::wire::parse_query(query);
        if let Some(body) = body {
            req = req.with_json(&body);
        }
        if let Some((id, key)) = sender {
            req = req.with_header("authorization", &format!("key={key}")).with_header("project_id", id);
        }
        let resp = self.target.exchange(&req).map_err(|e| e.to_string())?;
        Ok((resp.status, resp.body_json().unwrap_or(Value::Null)))
    }

    fn control(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let (status, json) = self.call(method, &format!("/_gcmspec/v1/{path}"), None, Some(body))?;
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: {status} {json}"));
        }
        Ok(json)
    }

    fn register(&self, sender: &str) -> Result<String, String> {
        let made = self.control("POST", "instances", json!({ "sender_ids": [sender] }))?;
        Ok(made["registration_id"].as_str().unwrap_or_default().to_string())
    }

    fn inbox(&self, id: &str) -> Result<Vec<Value>, String> {
        let (_, json) = self.call("GET", &format!("/_gcmspec/v1/instances/{id}/messages"), None, None)?;
        Ok(json["messages"].as_array().cloned().unwrap_or_default())
    }
}

/// Stops the server at once, with no chance to write anything more (`kill -9`).
fn crash(served: &mut Served) -> Result<(), String> {
    served.kill()
}

fn text_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Everything accepted before the crash is there after it; the new process makes new
/// credentials, never the old ones again (even with a fixed --seed).
fn a_crash_keeps_what_was_accepted(seed: Option<&str>, extra: &[&str]) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!(
        "gcmspec-state-{}-{}-{}",
        std::process::id(),
        seed.unwrap_or("os"),
        extra.len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("reference.state");
    let file_arg = file.display().to_string();
    let mut args = vec!["--state", &file_arg, "--xmpp", "127.0.0.1:0"];
    if let Some(s) = seed {
        args.extend(["--seed", s]);
    }
    args.extend(extra);
    let mut first = Served::start(&args)?;
    let api = Api::new(&first.url)?;
    let made = api.control("POST", "senders", json!({}))?;
    let (sender, key) = (text_of(&made["sender_id"]), text_of(&made["server_key"]));
    let (awake, offline) = (api.register(&sender)?, api.register(&sender)?);
    api.control("POST", &format!("instances/{offline}/connectivity"), json!({ "state": "offline" }))?;
    let me = Some((sender.as_str(), key.as_str()));
    let (status, group) = api.call(
        "POST",
        "/gcm/notification",
        me,
        Some(json!({ "operation": "create", "notification_key_name": "kept", "registration_ids": [awake, offline] })),
    )?;
    let group_key = text_of(&group["notification_key"]);
    if status != 200 || group_key.is_empty() {
        return Err(format!("create: {status} {group}"));
    }
    let (status, sent) =
        api.call("POST", "/fcm/send", me, Some(json!({ "to": group_key, "data": { "n": "http" } })))?;
    if status != 200 {
        return Err(format!("send to the group: {status} {sent}"));
    }
    // Over XMPP: the server's ack is its word that it took the message.
    let xmpp: std::net::SocketAddr = first.xmpp.parse().map_err(|e| format!("{e}: {:?}", first.xmpp))?;
    let (client, auth) = XmppClient::connect(xmpp, None, &sender, &key, std::time::Duration::from_secs(5))?;
    let mut client = client.ok_or(format!("XMPP login refused: {auth:?}"))?;
    client.send_gcm("x-1", &json!({ "to": awake, "message_id": "x-1", "data": { "n": "xmpp" } }))?;
    let ack = client.next_as_json()?;
    if ack["message_type"] != "ack" {
        return Err(format!("XMPP send not acked: {ack}"));
    }
    let banner = (first.sender_id.clone(), first.server_key.clone());
    crash(&mut first)?;
    drop(client);

    let second = Served::start(&args)?;
    let api = Api::new(&second.url)?;
    let mut problems = Vec::new();
    if (second.sender_id.clone(), second.server_key.clone()) != banner {
        problems.push(format!("the banner's sender changed: {banner:?} before, {:?} after", second.sender_id));
    }
    let texts = |msgs: &[Value]| msgs.iter().map(|m| text_of(&m["data"]["n"])).collect::<Vec<_>>();
    let got = texts(&api.inbox(&awake)?);
    if got != ["http", "xmpp"] {
        problems.push(format!("the awake device's inbox after the crash: {got:?}, expected [http, xmpp]"));
    }
    // The offline member's stored message is delivered when it connects.
    api.control("POST", &format!("instances/{offline}/connectivity"), json!({ "state": "awake" }))?;
    let got = texts(&api.inbox(&offline)?);
    if got != ["http"] {
        problems.push(format!("the offline member's stored message after the crash: {got:?}, expected [http]"));
    }
    let me = Some((sender.as_str(), key.as_str()));
    let (status, found) = api.call("GET", "/gcm/notification?notification_key_name=kept", me, None)?;
    if status != 200 || found["notification_key"] != group_key.as_str() {
        problems.push(format!("the group's name after the crash: {status} {found}"));
    }
    let (status, sent) =
        api.call("POST", "/fcm/send", me, Some(json!({ "to": group_key, "data": { "n": "after" } })))?;
    if status != 200 || sent["success"] != 2 {
        problems.push(format!("the sender's key and group after the crash: {status} {sent}"));
    }
    let fresh = api.control("POST", "senders", json!({}))?;
    if [&sender, &banner.0].contains(&&text_of(&fresh["sender_id"])) || text_of(&fresh["server_key"]) == key {
        problems.push(format!("a sender made after the restart got old credentials: {fresh}"));
    }
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// A file made under other faults would not replay to the same state: refused, saying why.
fn another_configuration_is_refused() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("gcmspec-state-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("reference.state").display().to_string();
    drop(Served::start(&["--state", &file])?);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gcmspec"))
        .args(["serve", "--http", "127.0.0.1:0", "--state", &file, "--fault", "group.member-cap"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    // It names the setting that differs, and no more (no dump of the configuration).
    if out.status.code() != Some(2) || !text.contains("with other settings: --fault;") || text.contains("Limits {") {
        return Err(format!("exit {:?}: {text}", out.status.code()));
    }
    Ok(())
}

/// A damaged file (cut short) is an error that says so, not a crash.
fn a_damaged_file_is_refused() -> Result<(), String> {
    let file = fresh_file("damaged")?;
    let reference =
        gcmspec::Reference::with_state(gcmspec::reference::Config::bundled(), &file).map_err(|e| e.to_string())?;
    for _ in 0..3 {
        reference.create_sender().map_err(|e| e.to_string())?;
    }
    drop(reference);
    let bytes = std::fs::read(&file).map_err(|e| e.to_string())?;
    std::fs::write(&file, &bytes[..4096.min(bytes.len())]).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gcmspec"))
        .args(["serve", "--http", "127.0.0.1:0", "--state", &file.display().to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(2) || !text.contains("damaged") || text.contains("panicked") {
        return Err(format!("a truncated file: exit {:?}: {text}", out.status.code()));
    }
    Ok(())
}

/// Sends in flight on four connections when the server is killed: every send answered 200
/// before the kill is in the device's inbox after the restart.
fn every_answered_send_survives_a_kill() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("gcmspec-state-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("reference.state").display().to_string();
    let args = ["--state", &file, "--inbox-limit", "100000", "--state-journal-bytes", "20000"];
    let mut first = Served::start(&args)?;
    let api = Api::new(&first.url)?;
    let device = api.register(&first.sender_id)?;
    let answered = std::sync::Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (url, key, id) = (first.url.clone(), first.server_key.clone(), first.sender_id.clone());
    std::thread::scope(|scope| -> Result<(), String> {
        for t in 0..4 {
            let (url, key, id, device, answered, stop) = (&url, &key, &id, &device, &answered, &stop);
            scope.spawn(move || {
                let Ok(api) = Api::new(url) else { return };
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    // A collapse key of its own: throttling (per key) holds none back.
                    let n = format!("{t}-{n}");
                    let body = json!({ "to": device, "collapse_key": n, "data": { "n": n } });
                    match api.call("POST", "/fcm/send", Some((id.as_str(), key.as_str())), Some(body)) {
                        Ok((200, _)) => answered.lock().unwrap_or_else(|e| e.into_inner()).push(n),
                        _ => break,
                    }
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(700));
        let killed = crash(&mut first);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        killed
    })?;
    let answered = answered.into_inner().unwrap_or_else(|e| e.into_inner());
    let second = Served::start(&args)?;
    let api = Api::new(&second.url)?;
    let kept: std::collections::HashSet<String> =
        api.inbox(&device)?.iter().map(|m| text_of(&m["data"]["n"])).collect();
    let lost: Vec<&String> = answered.iter().filter(|n| !kept.contains(*n)).collect();
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
    if answered.len() < 20 {
        return Err(format!("only {} sends were answered before the kill: the test tried too little", answered.len()));
    }
    if !lost.is_empty() {
        return Err(format!("{} of {} answered sends are gone after the kill: {lost:?}", lost.len(), answered.len()));
    }
    Ok(())
}

/// A send as `sender` to `to`, in-process.
fn send(reference: &gcmspec::Reference, key: &str, body: Value) -> u16 {
    let req =
        HttpRequest::new("POST", "/fcm/send").with_header("authorization", &format!("key={key}")).with_json(&body);
    reference.handle(&req).status
}

fn fresh_file(name: &str) -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("gcmspec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir.join("reference.state"))
}

/// The journals and their grading are state too: a reference started again on the file gives
/// the same verdicts and journal, whether it replays inputs or reads a snapshot.
fn journals_survive_a_restart(journal_bytes: u64) -> Result<(), String> {
    use gcmspec::reference::{Config, Reference};
    let file = fresh_file(&format!("journals-{journal_bytes}"))?;
    let config = || Config { state_journal_bytes: journal_bytes, ..Config::bundled() };
    let first = Reference::with_state(config(), &file).map_err(|e| e.to_string())?;
    let sender = first.create_sender().map_err(|e| e.to_string())?;
    let (id, key) = (sender.sender_id.clone(), sender.server_key.clone());
    let script = HttpRequest::new("POST", &format!("/_gcmspec/v1/senders/{id}/script"))
        .with_header("authorization", &format!("key={key}"))
        .with_json(&json!({ "kind": "status", "status": 503, "retry_after": 30 }));
    let phone = {
        let req = HttpRequest::new("POST", "/_gcmspec/v1/instances").with_json(&json!({ "sender_ids": [id] }));
        text_of(&first.handle(&req).body_json().unwrap_or_default()["registration_id"])
    };
    if first.handle(&script).status != 201 {
        return Err("the script was refused".into());
    }
    for body in [
        json!({ "to": phone, "data": { "n": "1" } }),
        json!({ "to": phone, "data": { "n": "1" } }),
        json!({ "to": phone, "time_to_live": -3, "data": { "n": "2" } }),
    ] {
        send(&first, &key, body);
    }
    // A failure still open at the restart, retried after it.
    if first.handle(&script).status != 201 {
        return Err("the second script was refused".into());
    }
    send(&first, &key, json!({ "to": phone, "data": { "n": "4" } }));
    let before = first.verdicts(&id).ok_or("no verdicts before")?;
    let journal_before = first.journal(&id, None).ok_or("no journal before")?;
    drop(first);
    let again = Reference::with_state(config(), &file).map_err(|e| e.to_string())?;
    let after = again.verdicts(&id).ok_or("no verdicts after the restart")?;
    let journal_after = again.journal(&id, None).ok_or("no journal after the restart")?;
    if before.violated() != ["app.retry.after", "app.send.ttl-range"] {
        return Err(format!("before the restart: {:?}", before.violated()));
    }
    if after != before || journal_after.entries != journal_before.entries {
        return Err(format!(
            "after the restart the verdicts or the journal differ:\n{}\n{}",
            before.to_json(),
            after.to_json()
        ));
    }
    // The failure open at the restart is found by its retry (the graders' indexes are built
    // again from the state they restored).
    send(&again, &key, json!({ "to": phone, "data": { "n": "4" } }));
    let settled = HttpRequest::new("GET", &format!("/_gcmspec/v1/senders/{id}/verdicts"))
        .with_query("settled", "true")
        .with_header("authorization", &format!("key={key}"));
    let settled = again.handle(&settled).body_json().unwrap_or_default();
    let retry = settled["rules"].as_array().and_then(|r| r.iter().find(|r| r["id"] == "app.retry.server-error"));
    if retry.map(|r| r["outcome"].clone()) != Some(json!("passed")) {
        return Err(format!("the failure open at the restart, retried after it: {retry:?}"));
    }
    let journal_after = again.journal(&id, None).ok_or("no journal")?;
    // And the journal goes on from where it was.
    send(&again, &key, json!({ "to": phone, "data": { "n": "3" } }));
    let next = again.journal(&id, Some(journal_after.next)).ok_or("no journal")?;
    if next.entries.len() != 1 || next.entries[0]["seq"] != json!(journal_after.next) {
        return Err(format!("the journal after the restart: {:?}", next.entries));
    }
    Ok(())
}

/// An upstream message written to a connection open when the server was killed is sent again
/// on the app server's next connection, and acked there: the journal says the first
/// connection was lost, and the ack rule owes nothing for the copy written to it (the rule
/// still holds the copy sent again, which is acked).
fn a_connection_lost_in_a_restart_owes_no_acks() -> Result<(), String> {
    let file = fresh_file("lost")?;
    let file_arg = file.display().to_string();
    let args = ["--state", &file_arg, "--xmpp", "127.0.0.1:0", "--seed", "3"];
    let log_in = |served: &Served, sender: &str, key: &str| -> Result<XmppClient, String> {
        let xmpp: std::net::SocketAddr = served.xmpp.parse().map_err(|e| format!("{e}: {:?}", served.xmpp))?;
        let (client, auth) = XmppClient::connect(xmpp, None, sender, key, std::time::Duration::from_secs(5))?;
        client.ok_or(format!("XMPP login refused: {auth:?}"))
    };
    let mut first = Served::start(&args)?;
    let api = Api::new(&first.url)?;
    let made = api.control("POST", "senders", json!({}))?;
    let (sender, key) = (text_of(&made["sender_id"]), text_of(&made["server_key"]));
    let phone = api.register(&sender)?;
    let mut client = log_in(&first, &sender, &key)?;
    let upstream = json!({ "to": format!("{sender}@gcm.googleapis.com"), "message_id": "up-1", "data": { "k": "1" } });
    api.control("POST", &format!("instances/{phone}/upstream"), upstream)?;
    let copy = client.next_as_json()?;
    if copy["message_id"] != "up-1" {
        return Err(format!("the upstream message before the crash: {copy}"));
    }
    // Past the copy's moment in flight: a close now would owe its ack.
    let me = Some((sender.as_str(), key.as_str()));
    let (status, _) =
        api.call("POST", &format!("/_gcmspec/v1/senders/{sender}/clock"), me, Some(json!({ "advance_seconds": 2 })))?;
    if status != 200 {
        return Err(format!("the clock's advance: {status}"));
    }
    crash(&mut first)?;
    drop(client);

    let second = Served::start(&args)?;
    let api = Api::new(&second.url)?;
    let mut client = log_in(&second, &sender, &key)?;
    let again = client.next_as_json()?;
    if again["message_id"] != "up-1" {
        return Err(format!("the upstream message after the crash: {again}"));
    }
    client.send_gcm("", &json!({ "to": phone, "message_id": "up-1", "message_type": "ack" }))?;
    let me = Some((sender.as_str(), key.as_str()));
    let read = |path: &str| api.call("GET", &format!("/_gcmspec/v1/senders/{sender}/{path}"), me, None);
    // The ack lands before a settled read judges (it waits for an ack on its way, briefly).
    let (_, verdicts) = read("verdicts?settled=true")?;
    let (_, journal) = read("journal")?;
    drop(client);
    let _ = std::fs::remove_dir_all(file.parent().unwrap_or(&file));
    let kinds: Vec<&str> =
        journal["entries"].as_array().into_iter().flatten().filter_map(|e| e["kind"].as_str()).collect();
    if !kinds.contains(&"xmpp-lost") {
        return Err(format!("no xmpp-lost entry in the journal after the crash: {kinds:?}"));
    }
    let rule =
        verdicts["rules"].as_array().and_then(|r| r.iter().find(|r| r["id"] == "app.xmpp.ack-upstream")).cloned();
    match rule {
        Some(r) if r["outcome"] == "passed" => Ok(()),
        other => Err(format!("app.xmpp.ack-upstream after a copy lost in a crash and its resend acked: {other:?}")),
    }
}

/// On the machine's clock, a replay sees each input at the time it came: a message that
/// reached a device before it expired still did, however much later the file is read.
fn the_wall_clock_replays_as_it_was() -> Result<(), String> {
    use gcmspec::reference::{ClockKind, Config, Reference};
    let file = fresh_file("wall")?;
    let config = || Config { clock: ClockKind::Wall, ..Config::bundled() };
    let first = Reference::with_state(config(), &file).map_err(|e| e.to_string())?;
    let sender = first.create_sender().map_err(|e| e.to_string())?;
    let control = |r: &Reference, path: &str, body: Value| {
        let req = HttpRequest::new("POST", &format!("/_gcmspec/v1/{path}")).with_json(&body);
        r.handle(&req).body_json().unwrap_or_default()
    };
    let phone = text_of(&control(&first, "instances", json!({ "sender_ids": [sender.sender_id] }))["registration_id"]);
    control(&first, &format!("instances/{phone}/connectivity"), json!({ "state": "offline" }));
    send(&first, &sender.server_key, json!({ "to": phone, "time_to_live": 1, "data": { "a": "b" } }));
    control(&first, &format!("instances/{phone}/connectivity"), json!({ "state": "awake" }));
    let received = |r: &Reference| r.with_model(|m| m.inbox(&phone).map_or(0, <[_]>::len));
    if received(&first) != 1 {
        return Err("the message did not arrive in time".into());
    }
    drop(first);
    // Past the message's time to live: read now, it would have expired before the device woke.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = Reference::with_state(config(), &file).map_err(|e| e.to_string())?;
    match received(&again) {
        1 => Ok(()),
        n => Err(format!("after the replay the device holds {n} messages, not 1")),
    }
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("state::a-crash-keeps-what-was-accepted", || a_crash_keeps_what_was_accepted(None, &[])),
        trial("state::a-crash-keeps-what-was-accepted-with-a-fixed-seed", || {
            a_crash_keeps_what_was_accepted(Some("7"), &[])
        }),
        // A snapshot after every few inputs: what the journal held is in the snapshots, and a
        // crash between them loses nothing either.
        trial("state::a-crash-keeps-what-was-accepted-across-snapshots", || {
            a_crash_keeps_what_was_accepted(Some("7"), &["--state-journal-bytes", "1"])
        }),
        trial("state::another-configuration-is-refused", another_configuration_is_refused),
        trial("state::a-damaged-file-is-refused", a_damaged_file_is_refused),
        trial("state::every-answered-send-survives-a-kill", every_answered_send_survives_a_kill),
        trial("state::journals-and-verdicts-survive-a-restart", || journals_survive_a_restart(64 << 20)),
        trial("state::journals-and-verdicts-survive-a-snapshot", || journals_survive_a_restart(1)),
        trial("state::the-wall-clock-replays-as-it-was", the_wall_clock_replays_as_it_was),
        trial("state::a-connection-lost-in-a-restart-owes-no-acks", a_connection_lost_in_a_restart_owes_no_acks),
    ]
}
