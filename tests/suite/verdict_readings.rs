//! Readings of the app-server rules at their edges, each a legal app server the verdicts
//! must not blame (or a broken one they must), found by trying the rules as their users do:
//! a member that fails whenever it is tried needs no retry, a retry may go to the canonical
//! id that replaced a failed member, a verdict read settled judges what is still open (and,
//! over HTTP, lets an ack on its way land first), and the clock and scripts refuse values
//! past their bounds.
//!
//! Past 600 lines: each reading is one function with its whole setup, read alone.

use gcmspec::driver::xmpp::XmppClient;
use gcmspec::driver::{HttpTarget, Target};
use gcmspec::reference::{Config, Reference};
use gcmspec::verdicts::{Outcome, Verdicts};
use gcmspec::wire::HttpRequest;
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::trial;

/// One sender of an in-process reference, as an app server drives it (shared with
/// `group_readings`).
pub(crate) struct App {
    pub reference: Reference,
    pub id: String,
    pub key: String,
}

impl App {
    pub fn new() -> App {
        let reference = Reference::new(Config::bundled());
        let s = reference.create_sender().expect("a sender");
        App { reference, id: s.sender_id, key: s.server_key }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut req = HttpRequest::new(method, path)
            .with_header("authorization", &format!("key={}", self.key))
            .with_header("project_id", &self.id);
        for (k, v) in query.split('&').filter_map(|p| p.split_once('=')) {
            req = req.with_query(k, v);
        }
        if let Some(b) = body {
            req = req.with_json(&b);
        }
        let resp = self.reference.handle(&req);
        (resp.status, resp.body_json().unwrap_or(Value::Null))
    }

    pub fn control(&self, method: &str, what: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, &format!("/_gcmspec/v1/{what}"), body)
    }

    pub fn device(&self, platform: &str) -> String {
        let body = json!({ "sender_ids": [self.id], "platform": platform });
        self.control("POST", "instances", Some(body)).1["registration_id"].as_str().unwrap_or_default().to_string()
    }

    pub fn group(&self, ids: &[String]) -> String {
        self.group_named("u", ids)
    }

    /// Creates the group `name` of `ids`: its key.
    pub fn group_named(&self, name: &str, ids: &[String]) -> String {
        let body = json!({ "operation": "create", "notification_key_name": name, "registration_ids": ids });
        self.call("POST", "/gcm/notification", Some(body)).1["notification_key"].as_str().unwrap_or_default().into()
    }

    pub fn send(&self, body: Value) -> Value {
        self.call("POST", "/fcm/send", Some(body)).1
    }

    pub fn settled(&self) -> Result<Verdicts, String> {
        let (status, v) = self.control("GET", &format!("senders/{}/verdicts?settled=true", self.id), None);
        if status != 200 {
            return Err(format!("settled verdicts: {status} {v}"));
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

/// Grades an XMPP entry on connection `conn`, numbered after `seq`, 10 ms after the one before.
fn xmpp_entry(
    grading: &mut gcmspec::verdicts::Grading,
    book: &gcmspec::verdicts::Rulebook,
    seq: &mut u64,
    conn: u64,
    what: gcmspec::verdicts::What,
) {
    use gcmspec::verdicts::{Conn, Entry, Stamp};
    *seq += 1;
    let stamp = Stamp { at_ms: *seq * 10, wall_ms: *seq * 10, wall_us: 0 };
    let entry = Entry { seq: *seq, stamp, connection: Some(Conn::Xmpp(conn)), connection_opened_us: Some(0), what };
    grading.feed(book, &entry, None);
}

pub(crate) fn outcome(v: &Verdicts, rule: &str) -> Option<Outcome> {
    v.rule(rule).map(|r| r.outcome)
}

/// An iOS member sent more than its limit fails whenever it is tried: the partial failure
/// asks for no retry (nor would a member whose device no longer exists).
fn lasting_member_failures_need_no_retry() -> Result<(), String> {
    let app = App::new();
    let (a, b, c) = (app.device("android"), app.device("android"), app.device("ios"));
    let key = app.group(&[a, b, c.clone()]);
    let answer = app.send(json!({ "to": key, "data": { "d": "x".repeat(3000) } }));
    if answer["failed_registration_ids"] != json!([c]) {
        return Err(format!("expected the iOS member {c} to fail for its size: {answer}"));
    }
    let v = app.settled()?;
    if outcome(&v, "app.group.retry") == Some(Outcome::Violated) {
        return Err(format!("a retry was asked of members that fail whenever tried: {}", v.to_json()));
    }
    Ok(())
}

/// After a canonical id replaced a member's id, retrying the failed member at the new id is
/// the retry (and the only one the canonical-id rule allows).
fn a_retry_may_go_to_the_canonical_id() -> Result<(), String> {
    let app = App::new();
    let (a, b) = (app.device("android"), app.device("android"));
    let key = app.group(&[a.clone(), b.clone()]);
    app.control(
        "POST",
        &format!("senders/{}/script", app.id),
        Some(json!({ "kind": "canonical", "registration_id": a })),
    );
    let answer = app.send(json!({ "to": a, "data": { "m": "1" } }));
    let renamed = answer["results"][0]["registration_id"].as_str().ok_or(format!("no canonical id: {answer}"))?;
    app.control(
        "POST",
        &format!("senders/{}/script", app.id),
        Some(json!({ "kind": "group-failure", "notification_key": key, "members": 1 })),
    );
    let answer = app.send(json!({ "to": key, "data": { "m": "2" } }));
    if answer["failed_registration_ids"] != json!([a]) {
        return Err(format!("expected {a} to fail: {answer}"));
    }
    app.control("POST", &format!("senders/{}/clock", app.id), Some(json!({ "advance_seconds": 2 })));
    app.send(json!({ "to": renamed, "data": { "m": "2", "attempt": "2" } }));
    let v = app.settled()?;
    for rule in ["app.group.retry", "app.canonical-id.replace"] {
        if outcome(&v, rule) != Some(Outcome::Passed) {
            return Err(format!("{rule} is not passed: {}", v.to_json()));
        }
    }
    Ok(())
}

/// Read settled, a failure never retried is missed; read as of now, it is still open.
fn settled_verdicts_judge_what_is_open() -> Result<(), String> {
    let app = App::new();
    let a = app.device("android");
    app.control("POST", &format!("senders/{}/script", app.id), Some(json!({ "kind": "status", "status": 503 })));
    app.send(json!({ "to": a, "data": { "m": "1" } }));
    let (_, now) = app.control("GET", &format!("senders/{}/verdicts", app.id), None);
    let open = now["rules"].as_array().and_then(|r| r.iter().find(|r| r["id"] == "app.retry.server-error")).cloned();
    if open.as_ref().map(|r| r["outcome"].clone()) != Some(json!("not-exercised")) {
        return Err(format!("as of now the failure is still open: {open:?}"));
    }
    let v = app.settled()?;
    if outcome(&v, "app.retry.server-error") != Some(Outcome::Violated) {
        return Err(format!("settled, the failure never retried is missed: {}", v.to_json()));
    }
    // The journal goes on: read as of now again, it is still open.
    let (_, again) = app.control("GET", &format!("senders/{}/verdicts", app.id), None);
    if again["summary"] != now["summary"] {
        return Err(format!("a settled read changed the verdicts: {} then {}", now["summary"], again["summary"]));
    }
    Ok(())
}

/// Over HTTP a settled read waits, at most the rule's in_flight_ms, for what may still be on
/// its way: an app server whose ack is sent while the test reads its verdicts is not blamed
/// for it, and one that keeps its connection and never acks is, whichever comes first.
async fn a_settled_read_lets_an_ack_on_its_way_land() -> Result<(), String> {
    let server = Reference::start_with(Config::bundled()).await.map_err(|e| e.to_string())?;
    let (url, xmpp) = (server.url(), server.xmpp_address());
    let (sender, phone) = server.reference().with_model(|m| {
        let sender = m.create_sender();
        let phone = m.register_instance(vec![sender.sender_id.clone()], None);
        (sender, phone)
    });
    tokio::task::spawn_blocking(move || {
        let http = HttpTarget::new(&url, std::time::Duration::from_secs(10)).map_err(|e| e.to_string())?;
        // Read on a thread of its own, as a test does while its app server goes on.
        let read_settled = || {
            let (url, id, key) = (url.clone(), sender.sender_id.clone(), format!("key={}", sender.server_key));
            std::thread::spawn(move || -> Result<Verdicts, String> {
                let http = HttpTarget::new(&url, std::time::Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                let req = HttpRequest::new("GET", &format!("/_gcmspec/v1/senders/{id}/verdicts"))
                    .with_query("settled", "true")
                    .with_header("authorization", &key);
                let resp = http.exchange(&req).map_err(|e| e.to_string())?;
                let body = resp.body_json().ok_or_else(|| {
                    format!("not JSON: {} {:?}", resp.status, String::from_utf8_lossy(&resp.body))
                })?;
                serde_json::from_value(body).map_err(|e| e.to_string())
            })
        };
        let log_in = || {
            let timeout = std::time::Duration::from_secs(5);
            let (client, auth) = XmppClient::connect(xmpp, None, &sender.sender_id, &sender.server_key, timeout)?;
            client.ok_or(format!("XMPP login refused: {auth:?}"))
        };
        let upstream = |id: &str| {
            let body = json!({ "to": format!("{}@gcm.googleapis.com", sender.sender_id), "message_id": id, "data": { "m": id } });
            let req = HttpRequest::new("POST", &format!("/_gcmspec/v1/instances/{phone}/upstream"))
                .with_header("authorization", &format!("key={}", sender.server_key))
                .with_json(&body);
            http.exchange(&req).map(|r| r.status).map_err(|e| e.to_string())
        };
        let mut client = log_in()?;
        let status = upstream("up-1")?;
        let got = client.next_as_json()?;
        if status != 200 || got["message_id"] != "up-1" {
            return Err(format!("the upstream message: {status}, then {got}"));
        }
        // The test reads its verdicts at once; the ack goes 200 ms later.
        let reading = read_settled();
        std::thread::sleep(std::time::Duration::from_millis(200));
        client.send_gcm("", &json!({ "to": got["from"], "message_id": "up-1", "message_type": "ack" }))?;
        let v = reading.join().map_err(|_| "the reader panicked".to_string())??;
        if outcome(&v, "app.xmpp.ack-upstream") != Some(Outcome::Passed) {
            return Err(format!("an ack sent as the verdicts were read was blamed: {}", v.to_json()));
        }
        // Never acked, on a connection still open: missed, however soon it is read.
        upstream("up-2")?;
        client.next_as_json()?;
        let v = read_settled().join().map_err(|_| "the reader panicked".to_string())??;
        drop(client);
        match v.rule("app.xmpp.ack-upstream") {
            Some(r)
                if r.outcome == Outcome::Violated
                    && r.violations_total == 1
                    && r.violations[0].message.contains("read settled") => {}
            _ => return Err(format!("a copy never acked on an open connection was not missed: {}", v.to_json())),
        }
        // Never acked, its connection closed at once: in flight when it closed, excused and
        // counted in the note, whether the close or the read comes first.
        let mut client = log_in()?;
        upstream("up-3")?;
        client.next_as_json()?;
        drop(client);
        let v = read_settled().join().map_err(|_| "the reader panicked".to_string())??;
        match v.rule("app.xmpp.ack-upstream") {
            Some(r) if r.violations_total == 1 && r.note.as_deref().is_some_and(|n| n.contains("unacked copy(ies) excused")) => {
                Ok(())
            }
            _ => Err(format!("a copy whose connection closed at once was judged: {}", v.to_json())),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A clock advance or a Retry-After past their bounds is refused, said, and changes nothing.
fn bounds_of_the_clock_and_scripts() -> Result<(), String> {
    let app = App::new();
    let clock = format!("senders/{}/clock", app.id);
    let (status, before) = app.control("POST", &clock, Some(json!({ "advance_ms": 0 })));
    for huge in [json!({ "advance_ms": u64::MAX }), json!({ "advance_seconds": 1u64 << 63 })] {
        let (status, body) = app.control("POST", &clock, Some(huge.clone()));
        if status != 400 {
            return Err(format!("{huge}: {status} {body}, not 400"));
        }
    }
    let (_, after) = app.control("POST", &clock, Some(json!({ "advance_ms": 0 })));
    if status != 200 || before["now_ms"] != after["now_ms"] {
        return Err(format!("the clock moved: {before} then {after}"));
    }
    let script = format!("senders/{}/script", app.id);
    let (status, body) =
        app.control("POST", &script, Some(json!({ "kind": "status", "status": 503, "retry_after_date": 1u64 << 63 })));
    if status != 400 {
        return Err(format!("a Retry-After date 2^63 s ahead: {status} {body}, not 400"));
    }
    for i in 0..=64 {
        let (status, body) = app.control("POST", &script, Some(json!({ "kind": "status", "status": 503 })));
        let expected = if i < 64 { 201 } else { 507 };
        if status != expected {
            return Err(format!("script {}: {status} {body}, not {expected}", i + 1));
        }
    }
    Ok(())
}

/// A newer failure at a device does not hide an older one from the retry-timing rules: for
/// each of them, with k different messages failing at one device in turn, a too-early retry
/// of any one of them (the oldest, one in the middle, the newest) breaks the rule, and every
/// one retried in time passes; past `PER_TARGET` the oldest is forgotten, and the note says so.
fn a_newer_failure_does_not_hide_an_older_one() -> Result<(), String> {
    use gcmspec::verdicts::PER_TARGET;
    // The rule, the script that fails a send, and how long a legal retry waits (seconds).
    let rules = [
        ("app.retry.after", json!({ "kind": "status", "status": 503, "retry_after": 30 }), 31),
        ("app.retry.backoff", json!({ "kind": "status", "status": 503 }), 1),
    ];
    let message = |i: usize| json!({ "m": i.to_string(), "text": format!("message {i}") });
    for (rule, script, wait) in &rules {
        for k in [2, 3, PER_TARGET] {
            for early in [0, k / 2, k - 1] {
                let app = App::new();
                let a = app.device("android");
                for i in 0..k {
                    app.control("POST", &format!("senders/{}/script", app.id), Some(script.clone()));
                    app.send(json!({ "to": a, "data": message(i) }));
                }
                app.send(json!({ "to": a, "data": message(early) }));
                let v = app.settled()?;
                if outcome(&v, rule) != Some(Outcome::Violated) {
                    return Err(format!(
                        "{rule}: message {early} of {k} failed at one device and retried at once is not a violation: {}",
                        v.to_json()
                    ));
                }
            }
            let app = App::new();
            let a = app.device("android");
            for i in 0..k {
                app.control("POST", &format!("senders/{}/script", app.id), Some(script.clone()));
                app.send(json!({ "to": a, "data": message(i) }));
            }
            app.control("POST", &format!("senders/{}/clock", app.id), Some(json!({ "advance_seconds": wait })));
            for i in (0..k).rev() {
                app.send(json!({ "to": a, "data": message(i) }));
            }
            let v = app.settled()?;
            if outcome(&v, rule) != Some(Outcome::Passed) {
                return Err(format!(
                    "{rule}: {k} messages failed at one device, each retried in time, is not passed: {}",
                    v.to_json()
                ));
            }
        }
        // One more than a device keeps: the oldest is forgotten, and said to be.
        let app = App::new();
        let a = app.device("android");
        for i in 0..=PER_TARGET {
            app.control("POST", &format!("senders/{}/script", app.id), Some(script.clone()));
            app.send(json!({ "to": a, "data": message(i) }));
        }
        let v = app.settled()?;
        let note = v.rule(rule).and_then(|r| r.note.clone()).unwrap_or_default();
        if !note.contains(&format!("more than {PER_TARGET} different messages")) {
            return Err(format!(
                "{rule}: {} failures at one device, and the note does not say one was forgotten: {note:?}",
                PER_TARGET + 1
            ));
        }
    }
    Ok(())
}

/// Message ids are the devices': two devices may send one id, each on its own connection.
/// An ack names its message by `to` (the device) and `message_id`, so each way an app
/// server can name it is graded by both ack rules: the right device on the right connection
/// passes; the devices swapped (each ack on the other's connection) breaks
/// app.xmpp.ack-own-connection; a device that sent nothing acks nothing (the copies go
/// unacked); an ack naming no device is matched by its id alone; two copies of one message
/// need two acks, each on the connection its copy awaits it (a second ack where one copy was
/// acked already, while another connection's copy waits, is on the wrong connection).
fn an_ack_names_the_device_of_its_message() -> Result<(), String> {
    use gcmspec::verdicts::{Grading, JournalCount, Rulebook, Stamp, What};
    let book = Rulebook::bundled();
    // (conn, device) of each upstream copy written, all with message id "7"; then the acks
    // (conn, `to`); then what each rule must read.
    type Case =
        (&'static str, Vec<(u64, &'static str)>, Vec<(u64, Option<&'static str>)>, Option<Outcome>, Option<Outcome>);
    let cases: Vec<Case> = vec![
        (
            "each on its own connection",
            vec![(1, "A"), (2, "B")],
            vec![(1, Some("A")), (2, Some("B"))],
            Some(Outcome::Passed),
            Some(Outcome::Passed),
        ),
        (
            "swapped",
            vec![(1, "A"), (2, "B")],
            vec![(1, Some("B")), (2, Some("A"))],
            Some(Outcome::Passed),
            Some(Outcome::Violated),
        ),
        (
            "one swapped",
            vec![(1, "A"), (2, "B")],
            vec![(1, Some("A")), (1, Some("B"))],
            Some(Outcome::Passed),
            Some(Outcome::Violated),
        ),
        (
            "a device that sent nothing",
            vec![(1, "A"), (2, "B")],
            vec![(1, Some("C")), (2, Some("C"))],
            Some(Outcome::Violated),
            Some(Outcome::NotExercised),
        ),
        (
            "naming no device",
            vec![(1, "A"), (2, "B")],
            vec![(1, None), (2, None)],
            Some(Outcome::Passed),
            Some(Outcome::Passed),
        ),
        (
            "two copies, two acks",
            vec![(1, "A"), (1, "A")],
            vec![(1, Some("A")), (1, Some("A"))],
            Some(Outcome::Passed),
            Some(Outcome::Passed),
        ),
        (
            "one copy acked twice where it was written, the other's never",
            vec![(1, "A"), (2, "A")],
            vec![(1, Some("A")), (1, Some("A"))],
            Some(Outcome::Passed),
            Some(Outcome::Violated),
        ),
        (
            "a duplicate ack",
            vec![(1, "A")],
            vec![(1, Some("A")), (1, Some("A"))],
            Some(Outcome::Passed),
            Some(Outcome::Passed),
        ),
        (
            "two copies, one ack",
            vec![(1, "A"), (1, "A")],
            vec![(1, Some("A"))],
            Some(Outcome::Violated),
            Some(Outcome::Passed),
        ),
    ];
    // Only `"message_type": "ack"` acks: an `ACK`, a nack or another type leaves the copy unacked.
    let mut cases = cases;
    for kind in ["ACK", "nack", "receipt", "acknowledge"] {
        cases.push((kind, vec![(1, "A")], vec![(1, Some(kind))], Some(Outcome::Violated), Some(Outcome::NotExercised)));
    }
    for (name, written, acks, upstream, own) in cases {
        let mut grading = Grading::default();
        let mut seq = 0;
        let mut feed = |conn: u64, what: What| xmpp_entry(&mut grading, &book, &mut seq, conn, what);
        for conn in [1, 2] {
            feed(conn, What::XmppOpened);
        }
        for (conn, device) in &written {
            let stanza =
                json!({ "from": device, "category": "com.example", "message_id": "7", "data": { "hi": "there" } });
            feed(*conn, What::XmppSent { stanza, stanza_cut: 0 });
        }
        for (conn, to) in &acks {
            // A case named for a message type sends that type, to the device that sent it.
            let kind = if ["ACK", "nack", "receipt", "acknowledge"].contains(&name) { name } else { "ack" };
            let mut stanza = json!({ "message_id": "7", "message_type": kind });
            match to {
                Some(to) if *to == name => stanza["to"] = json!("A"),
                Some(to) => stanza["to"] = json!(to),
                None => {}
            }
            feed(*conn, What::XmppReceived { stanza, stanza_cut: 0, scripted: None, facts: Default::default() });
        }
        let v = grading.verdicts(&book, "s", Stamp::SETTLED, JournalCount::default());
        let read = (outcome(&v, "app.xmpp.ack-upstream"), outcome(&v, "app.xmpp.ack-own-connection"));
        if read != (upstream, own) {
            return Err(format!(
                "{name}: ack-upstream and ack-own-connection read {read:?}, expected {:?}: {}",
                (upstream, own),
                v.to_json()
            ));
        }
    }
    Ok(())
}

/// What `app.retry.server-error` owes, at its edges (found by an outside pass): one retry is
/// enough however many more fail, with or without Retry-After; a retry may go to the canonical
/// id that replaced the failed one, learnt after the failure; and a 5xx answered to a send to
/// a notification key, before the service read it, is the group's failure to retry.
fn what_a_failed_send_is_owed() -> Result<(), String> {
    let advance = |app: &App, s: u64| {
        app.control("POST", &format!("senders/{}/clock", app.id), Some(json!({ "advance_seconds": s })));
    };
    let script = |app: &App, body: Value| {
        app.control("POST", &format!("senders/{}/script", app.id), Some(body));
    };
    // Retried with back-off (or after each Retry-After), every retry failing, then given up.
    for retry_after in [None, Some(10)] {
        for failed_retries in 1..=5u32 {
            let app = App::new();
            let a = app.device("android");
            let mut status = json!({ "kind": "status", "status": 503, "times": failed_retries + 1 });
            if let Some(r) = retry_after {
                status["retry_after"] = json!(r);
            }
            script(&app, status);
            app.send(json!({ "to": a, "data": { "m": "1" } }));
            for i in 0..failed_retries {
                advance(&app, retry_after.unwrap_or(1 << i));
                app.send(json!({ "to": a, "data": { "m": "1" } }));
            }
            let v = app.settled()?;
            if outcome(&v, "app.retry.server-error") != Some(Outcome::Passed) {
                return Err(format!(
                    "{failed_retries} failed retries (Retry-After {retry_after:?}), then given up: server-error not passed: {}",
                    v.to_json()
                ));
            }
        }
    }
    // Failed at an id; a later answer names its canonical id; the retry goes there.
    let app = App::new();
    let a = app.device("android");
    script(&app, json!({ "kind": "error", "error": "Unavailable", "registration_id": a }));
    app.send(json!({ "to": a, "data": { "m": "first" } }));
    let (_, renamed) = app.control("POST", &format!("instances/{a}/reregister"), Some(json!({})));
    let renamed = renamed["registration_id"].as_str().ok_or(format!("no new id: {renamed}"))?.to_string();
    advance(&app, 1);
    let answer = app.send(json!({ "to": a, "data": { "m": "second" } }));
    if answer["results"][0]["registration_id"] != json!(renamed) {
        return Err(format!("expected the canonical id {renamed}: {answer}"));
    }
    advance(&app, 1);
    app.send(json!({ "to": renamed, "data": { "m": "first" } }));
    let v = app.settled()?;
    for rule in ["app.retry.server-error", "app.canonical-id.replace"] {
        if outcome(&v, rule) != Some(Outcome::Passed) {
            return Err(format!("a retry to the canonical id learnt later: {rule} not passed: {}", v.to_json()));
        }
    }
    // Each id that failed is owed the retry: a multicast's failed ids retried one by one, some
    // of them, or together.
    for (retries, expected) in [
        (vec![vec![1]], Outcome::Violated),
        (vec![vec![1], vec![2]], Outcome::Passed),
        (vec![vec![1, 2]], Outcome::Passed),
        (vec![vec![0, 1, 2]], Outcome::Passed),
    ] {
        let app = App::new();
        let ids: Vec<String> = (0..3).map(|_| app.device("android")).collect();
        for id in &ids[1..] {
            script(&app, json!({ "kind": "error", "error": "Unavailable", "registration_id": id }));
        }
        app.send(json!({ "registration_ids": ids, "data": { "m": "x" } }));
        for retry in &retries {
            advance(&app, 1);
            let to: Vec<&String> = retry.iter().map(|&i| &ids[i]).collect();
            app.send(json!({ "registration_ids": to, "data": { "m": "x" } }));
        }
        let v = app.settled()?;
        if outcome(&v, "app.retry.server-error") != Some(expected) {
            return Err(format!(
                "a multicast's failed ids 1 and 2, retried as {retries:?}: server-error not {expected:?}: {}",
                v.to_json()
            ));
        }
    }
    // The same for a group's failed members: each, or the key for all.
    for (retry, expected) in
        [("one member", Outcome::Violated), ("each member", Outcome::Passed), ("the key", Outcome::Passed)]
    {
        let app = App::new();
        let members: Vec<String> = (0..4).map(|_| app.device("android")).collect();
        let key = app.group(&members);
        script(&app, json!({ "kind": "group-failure", "notification_key": key, "members": 2 }));
        let answer = app.send(json!({ "to": key, "data": { "m": "y" } }));
        let failed: Vec<String> = serde_json::from_value(answer["failed_registration_ids"].clone()).unwrap_or_default();
        if failed.len() != 2 {
            return Err(format!("expected two members to fail: {answer}"));
        }
        advance(&app, 1);
        match retry {
            "one member" => drop(app.send(json!({ "to": failed[0], "data": { "m": "y" } }))),
            "each member" => {
                for f in &failed {
                    app.send(json!({ "to": f, "data": { "m": "y" } }));
                }
            }
            _ => drop(app.send(json!({ "to": key, "data": { "m": "y" } }))),
        }
        let v = app.settled()?;
        if outcome(&v, "app.group.retry") != Some(expected) {
            return Err(format!(
                "two members failed, retried to {retry}: group.retry not {expected:?}: {}",
                v.to_json()
            ));
        }
    }
    // A 503 to a notification key, never retried, then retried after its Retry-After.
    for retried in [false, true] {
        let app = App::new();
        let key = app.group(&[app.device("android"), app.device("android")]);
        script(&app, json!({ "kind": "status", "status": 503, "retry_after": 10 }));
        app.send(json!({ "to": key, "data": { "m": "to all" } }));
        if retried {
            advance(&app, 10);
            app.send(json!({ "to": key, "data": { "m": "to all" } }));
        }
        let v = app.settled()?;
        let read = (outcome(&v, "app.group.retry"), outcome(&v, "app.retry.server-error"));
        let expected = (Some(if retried { Outcome::Passed } else { Outcome::Violated }), Some(Outcome::NotExercised));
        if read != expected {
            return Err(format!(
                "a 503 to a key (retried: {retried}): group.retry and server-error read {read:?}, expected {expected:?}: {}",
                v.to_json()
            ));
        }
    }
    Ok(())
}

/// The bundled app-server rules, with the stale-id rules' `new_connection` as given.
fn stale_ids_reading(new_connection: &str) -> Result<gcmspec::verdicts::Rulebook, String> {
    let mut catalog = gcmspec::bundled::catalog().map_err(|e| e.to_string())?;
    for rule in catalog.rules.iter_mut().filter(|r| r.grader.as_deref() == Some("stale-id")) {
        rule.params.insert("new_connection".into(), json!(new_connection));
    }
    gcmspec::verdicts::Rulebook::from_catalog(&catalog, gcmspec::bundled::DEFAULT_PROFILE)
}

/// A send on another connection is "later" than a canonical id's answer when it arrives
/// in_flight_ms after it; with `new_connection = "after-the-answer"`, also on a connection
/// opened after the answer was written, ordered to the microsecond: a client that reads the
/// answer and reconnects within its millisecond is after it, and one whose connection was
/// opened before the answer (to the microsecond) was in flight. An answer stamped to the
/// millisecond only (an older state file's) cannot order a connection opened in its own
/// millisecond, and the tie goes to the app server.
fn a_connection_opened_after_the_answer_is_after_it() -> Result<(), String> {
    use gcmspec::verdicts::entry::Message;
    use gcmspec::verdicts::{Conn, Entry, Grading, JournalCount, Rulebook, Stamp, What};
    let book = Rulebook::bundled();
    let http = |seq: u64, stamp: Stamp, conn: u64, opened_us: u64, answer: Value| Entry {
        seq,
        stamp,
        connection: Some(Conn::Http(conn)),
        connection_opened_us: Some(opened_us),
        what: What::Http {
            request: Message {
                method: Some("POST".into()),
                path: Some("/fcm/send".into()),
                headers: vec![("content-type".into(), "application/json".into())],
                body: json!({ "to": "old-id", "data": { "m": "1" } }).to_string(),
                ..Message::default()
            },
            response: Message {
                status: Some(200),
                headers: vec![("content-type".into(), "application/json".into())],
                body: answer.to_string(),
                ..Message::default()
            },
            scripted: None,
            facts: Default::default(),
        },
    };
    let canonical = json!({ "multicast_id": 1, "success": 1, "failure": 0, "canonical_ids": 1,
        "results": [{ "message_id": "0:1", "registration_id": "new-id" }] });
    let plain = json!({ "multicast_id": 2, "success": 1, "failure": 0, "canonical_ids": 0, "results": [{ "message_id": "0:2" }] });
    // The bundled reading: a new connection is in flight like any other. The other (a spec
    // directory of one's own): one opened after the answer was written is after it.
    let in_flight = book;
    let book = stale_ids_reading("after-the-answer")?;
    let precise = Stamp { at_ms: 10_000, wall_ms: 10_000, wall_us: 10_000_500 };
    let to_the_ms = Stamp { wall_us: 0, ..precise };
    let soon = Stamp { at_ms: 10_050, wall_ms: 10_050, wall_us: 10_050_000 };
    let past_in_flight = Stamp { at_ms: 11_000, wall_ms: 10_050, wall_us: 10_050_000 };
    let cases = [
        (&book, precise, 10_000_499, soon, Outcome::Passed),
        (&book, precise, 10_000_500, soon, Outcome::Passed),
        (&book, precise, 10_000_501, soon, Outcome::Violated),
        (&book, precise, 10_001_000, soon, Outcome::Violated),
        (&book, to_the_ms, 10_000_999, soon, Outcome::Passed),
        (&book, to_the_ms, 10_001_000, soon, Outcome::Violated),
        (&in_flight, precise, 10_000_501, soon, Outcome::Passed),
        (&in_flight, precise, 10_040_000, soon, Outcome::Passed),
        (&in_flight, precise, 10_000_501, past_in_flight, Outcome::Violated),
    ];
    for (book, answered, opened_us, sent, expected) in cases {
        let mut grading = Grading::default();
        grading.feed(book, &http(1, answered, 1, 9_000_000, canonical.clone()), None);
        grading.feed(book, &http(2, sent, 2, opened_us, plain.clone()), None);
        let v = grading.verdicts(book, "s", Stamp::SETTLED, JournalCount::default());
        if outcome(&v, "app.canonical-id.replace") != Some(expected) {
            return Err(format!(
                "a send at {sent:?} on a connection opened at {opened_us} µs, the canonical id's answer at {answered:?}: not {expected:?}: {}",
                v.to_json()
            ));
        }
    }
    Ok(())
}

/// Served: an app server that opens a connection per request, as urllib does, reads the
/// canonical id's answer and sends to the old id again on a new connection, `ROUNDS` times
/// (each with a device of its own); the sender's clock advanced `advance_seconds` between.
/// How many sends broke `app.canonical-id.replace`, under the stale-id rules' `new_connection`.
async fn reconnecting_sends_blamed(new_connection: &str, advance_seconds: u64) -> Result<u64, String> {
    use std::io::{Read, Write};
    let mut config = Config::bundled();
    config.app_rules = Some(std::sync::Arc::new(stale_ids_reading(new_connection)?));
    let server = Reference::start_with(config).await.map_err(|e| e.to_string())?;
    let (url, reference) = (server.url(), server.reference().clone());
    let sender = reference.create_sender().map_err(|e| e.to_string())?;
    let phones: Vec<String> = reference
        .with_model(|m| (0..ROUNDS).map(|_| m.register_instance(vec![sender.sender_id.clone()], None)).collect());
    let key = format!("key={}", sender.server_key);
    let v = tokio::task::spawn_blocking(move || -> Result<Verdicts, String> {
        let host = url.trim_start_matches("http://").to_string();
        // One request on a connection of its own, read to its end.
        let send = |to: &str| -> Result<String, String> {
            let body = json!({ "to": to, "data": { "m": "1" } }).to_string();
            let request = format!(
                "POST /fcm/send HTTP/1.1\r\nhost: {host}\r\nauthorization: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut s = std::net::TcpStream::connect(&host).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
            s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
            let mut text = String::new();
            s.read_to_string(&mut text).map_err(|e| e.to_string())?;
            Ok(text)
        };
        let control = |what: &str, body: Value| {
            let req = HttpRequest::new("POST", &format!("/_gcmspec/v1/senders/{}/{what}", sender.sender_id))
                .with_header("authorization", &key)
                .with_json(&body);
            let resp = reference.handle(&req);
            match resp.status {
                200..300 => Ok(()),
                s => Err(format!("{what} was refused: {s} {}", String::from_utf8_lossy(&resp.body))),
            }
        };
        for phone in &phones {
            control("script", json!({ "kind": "canonical", "registration_id": phone }))?;
            let answer = send(phone)?;
            if !answer.contains("registration_id") {
                return Err(format!("no canonical id came back: {answer}"));
            }
            if advance_seconds > 0 {
                control("clock", json!({ "advance_seconds": advance_seconds }))?;
            }
            send(phone)?;
        }
        reference.verdicts(&sender.sender_id).ok_or_else(|| "no verdicts".to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(v.rule("app.canonical-id.replace").map_or(0, |r| r.violations_total))
}

const ROUNDS: usize = 25;

/// Read as the rules read it by default, a send on a new connection right after the answer
/// may have been in flight (a concurrent app server's looks the same), and once the sender's
/// clock has passed in_flight_ms it cannot have been: each is blamed then. Read with
/// `new_connection = "after-the-answer"`, each is blamed at once, ordered to the microsecond
/// (a fast client reconnects within the answer's millisecond).
async fn a_client_that_reconnects_is_judged_as_the_reading_says() -> Result<(), String> {
    for (reading, advance, expected) in
        [("in-flight", 0, 0), ("in-flight", 2, ROUNDS as u64), ("after-the-answer", 0, ROUNDS as u64)]
    {
        let blamed = reconnecting_sends_blamed(reading, advance).await?;
        if blamed != expected {
            return Err(format!(
                "new_connection = {reading:?}, the clock advanced {advance} s between: {blamed} of {ROUNDS} sends to the old id blamed, not {expected}"
            ));
        }
    }
    Ok(())
}

/// A message nacked CONNECTION_DRAINING goes again on a new connection at once, as the
/// control asks: its retry is owed (`app.retry.server-error`) but not held to the back-off's
/// first wait, which a nack SERVICE_UNAVAILABLE is (found by an outside pass).
fn a_draining_nack_is_retried_at_once() -> Result<(), String> {
    use gcmspec::verdicts::{Grading, JournalCount, Rulebook, Stamp, What};
    let book = Rulebook::bundled();
    for (error, backoff) in [("CONNECTION_DRAINING", Outcome::NotExercised), ("SERVICE_UNAVAILABLE", Outcome::Violated)]
    {
        let mut grading = Grading::default();
        let mut seq = 0;
        let mut feed = |conn: u64, what: What| xmpp_entry(&mut grading, &book, &mut seq, conn, what);
        let message = json!({ "to": "A", "message_id": "m1", "data": { "m": "1" } });
        let received = |stanza: &Value| What::XmppReceived {
            stanza: stanza.clone(),
            stanza_cut: 0,
            scripted: None,
            facts: Default::default(),
        };
        feed(1, What::XmppOpened);
        feed(1, received(&message));
        let nack = json!({ "message_type": "nack", "message_id": "m1", "from": "A", "error": error });
        feed(1, What::XmppSent { stanza: nack, stanza_cut: 0 });
        feed(2, What::XmppOpened);
        feed(2, received(&message));
        feed(
            2,
            What::XmppSent { stanza: json!({ "message_type": "ack", "message_id": "m1", "from": "A" }), stanza_cut: 0 },
        );
        let v = grading.verdicts(&book, "s", Stamp::SETTLED, JournalCount::default());
        let read = (outcome(&v, "app.retry.server-error"), outcome(&v, "app.retry.backoff"));
        if read != (Some(Outcome::Passed), Some(backoff)) {
            return Err(format!("a nack {error} retried 20 ms later on a new connection: {read:?}: {}", v.to_json()));
        }
    }
    Ok(())
}

/// Every retry that waits on nothing breaks the back-off, not only the first: after a first
/// retry at once, "twice the wait before" is twice nothing (outside pass 20 saw three
/// immediate retries counted as one violation). Retries that double from a second pass.
fn every_retry_at_once_breaks_the_backoff() -> Result<(), String> {
    let failing = json!({ "kind": "status", "status": 503, "times": 3 });
    let message = json!({ "n": "1" });
    let app = App::new();
    let a = app.device("android");
    app.control("POST", &format!("senders/{}/script", app.id), Some(failing.clone()));
    for _ in 0..4 {
        app.send(json!({ "to": a, "data": message }));
    }
    let v = app.settled()?;
    let backoff = v.rule("app.retry.backoff").ok_or("no app.retry.backoff verdict")?;
    if backoff.outcome != Outcome::Violated || backoff.violations_total != 3 {
        return Err(format!("three retries at once are not three violations: {}", v.to_json()));
    }
    let app = App::new();
    let a = app.device("android");
    app.control("POST", &format!("senders/{}/script", app.id), Some(failing));
    app.send(json!({ "to": a, "data": message }));
    for wait in [1, 2, 4] {
        app.control("POST", &format!("senders/{}/clock", app.id), Some(json!({ "advance_seconds": wait })));
        app.send(json!({ "to": a, "data": message }));
    }
    let v = app.settled()?;
    if outcome(&v, "app.retry.backoff") != Some(Outcome::Passed) {
        return Err(format!("retries after 1, 2 and 4 s are not passed: {}", v.to_json()));
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("verdict-readings::every-retry-at-once-breaks-the-backoff", every_retry_at_once_breaks_the_backoff),
        trial("verdict-readings::lasting-member-failures-need-no-retry", lasting_member_failures_need_no_retry),
        trial("verdict-readings::a-retry-may-go-to-the-canonical-id", a_retry_may_go_to_the_canonical_id),
        trial("verdict-readings::settled-verdicts-judge-what-is-open", settled_verdicts_judge_what_is_open),
        trial("verdict-readings::a-settled-read-lets-an-ack-on-its-way-land", || {
            crate::block_on(a_settled_read_lets_an_ack_on_its_way_land())
        }),
        trial("verdict-readings::bounds-of-the-clock-and-scripts", bounds_of_the_clock_and_scripts),
        trial(
            "verdict-readings::a-newer-failure-does-not-hide-an-older-one",
            a_newer_failure_does_not_hide_an_older_one,
        ),
        trial("verdict-readings::an-ack-names-the-device-of-its-message", an_ack_names_the_device_of_its_message),
        trial("verdict-readings::what-a-failed-send-is-owed", what_a_failed_send_is_owed),
        trial("verdict-readings::a-draining-nack-is-retried-at-once", a_draining_nack_is_retried_at_once),
        trial("verdict-readings::a-client-that-reconnects-is-judged-as-the-reading-says", || {
            crate::block_on(a_client_that_reconnects_is_judged_as_the_reading_says())
        }),
        trial(
            "verdict-readings::a-connection-opened-after-the-answer-is-after-it",
            a_connection_opened_after_the_answer_is_after_it,
        ),
    ]
}
