//! What one peer may hold of a shared reference: deadlines before login, and caps per
//! tenant as well as per listener (docs/robustness.md).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gcmspec::driver::xmpp::{Auth, XmppClient};
use gcmspec::reference::{Config, ConnectionPolicy, Reference, RunningReference, StoreCaps};
use gcmspec::wire::{HttpRequest, HttpResponse};
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::{block_on, trial};

fn config(policy: ConnectionPolicy) -> Config {
    let mut config = Config::bundled();
    config.connections = policy;
    config
}

/// A reference serving on 127.0.0.1 under `policy`.
async fn start(policy: ConnectionPolicy) -> Result<RunningReference, String> {
    Reference::start_with(config(policy)).await.map_err(|e| e.to_string())
}

/// Runs a trial's blocking clients off the runtime that serves them.
async fn off_the_runtime<T: Send + 'static>(
    clients: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(clients).await.map_err(|e| e.to_string())?
}

/// Whether a fresh connection gets a stream header back within `wait`.
fn answers(addr: std::net::SocketAddr, wait: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(wait));
    if s.write_all(b"<stream:stream to='gcm.googleapis.com' version='1.0'>").is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && String::from_utf8_lossy(&buf[..n]).contains("stream:stream"))
}

/// A peer that opens streams and never reads blocks the server's writes: it must lose its
/// slot at the login deadline, not the idle one.
async fn unread_writes_end_at_the_login_deadline() -> Result<(), String> {
    // A cap of one: the next connection waits for the hog's place itself (not merely for its
    // place among the connections not logged in, which a newcomer could take).
    let policy = ConnectionPolicy {
        max_connections: 1,
        login_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(600),
        ..ConnectionPolicy::default()
    };
    let server = start(policy).await?;
    let addr = server.xmpp_address();
    off_the_runtime(move || {
        let mut hog = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        hog.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        // Each stream header is answered with a header and features; nobody reads them.
        let opens = "<stream:stream to='gcm.googleapis.com' version='1.0'>".repeat(20_000);
        let _ = hog.write_all(opens.as_bytes());
        // The hog holds the listener's one place.
        let started = Instant::now();
        while !answers(addr, Duration::from_millis(300)) {
            if started.elapsed() > Duration::from_secs(5) {
                return Err("a peer that never reads kept its slot past the 0.5 s login deadline".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(hog);
        Ok(())
    })
    .await
}

/// One sender cannot take every connection: past its share its logins are refused, and
/// another sender still logs in.
async fn one_sender_cannot_hold_the_cap() -> Result<(), String> {
    let policy = ConnectionPolicy { max_connections: 8, max_connections_per_sender: 2, ..ConnectionPolicy::default() };
    let server = start(policy).await?;
    let addr = server.xmpp_address();
    let (greedy, other) = server.reference().with_model(|m| (m.create_sender(), m.create_sender()));
    off_the_runtime(move || {
        let login = |s: &gcmspec::reference::model::SenderCredentials| {
            XmppClient::connect(addr, None, &s.sender_id, &s.server_key, Duration::from_secs(5))
        };
        let mut held = Vec::new();
        for n in 0..2 {
            match login(&greedy)? {
                (Some(c), Auth::Success) => held.push(c),
                (_, auth) => return Err(format!("login {n} within the share was refused: {auth:?}")),
            }
        }
        match login(&greedy)? {
            (_, Auth::Failure(why)) if why == "temporary-auth-failure" => {}
            (_, auth) => return Err(format!("a third login of one sender (share 2): {auth:?}")),
        }
        if !matches!(login(&other)?, (Some(_), Auth::Success)) {
            return Err("another sender could not log in beside the first's share".into());
        }
        // A closed connection gives its place back.
        held.pop().ok_or("no connection held")?.close();
        let started = Instant::now();
        loop {
            match login(&greedy)? {
                (Some(_), Auth::Success) => return Ok(()),
                _ if started.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(50)),
                (_, auth) => return Err(format!("after closing one, a login is still refused: {auth:?}")),
            }
        }
    })
    .await
}

/// Peers without credentials that open connection after connection (never logging in) hold
/// at most half a listener: each newcomer takes the place of the oldest of them, so an app
/// server always gets its turn to log in.
async fn anonymous_peers_cannot_keep_an_app_server_out() -> Result<(), String> {
    let policy = ConnectionPolicy { max_connections: 8, ..ConnectionPolicy::default() };
    let server = start(policy).await?;
    let addr = server.xmpp_address();
    let sender = server.reference().with_model(|m| m.create_sender());
    off_the_runtime(move || {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Four peers at a time, each reopened as soon as it is closed.
        let flood: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(mut s) = TcpStream::connect(addr) {
                            // Short, so that they churn (each login must still evict one of them), and
                            // not so short that a login whose first bytes are late (its client not
                            // scheduled, on a loaded 2-core machine) is older than all four: at 50 ms,
                            // one full run in five saw that login evicted as the oldest silent peer.
                            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut buf = [0u8; 64];
                            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        // Each login may take a second try, as an app server reconnects: a connection whose
        // first bytes are late (its client not scheduled, on a loaded 2-core machine) is, until
        // they come, as silent as the flood's and may be the oldest (one full run in six saw
        // that). What the flood must not do is keep it out.
        let (mut logged_in, mut retried) = (0, 0);
        let mut failures = Vec::new();
        for _ in 0..10 {
            let mut tried = Vec::new();
            for _ in 0..2 {
                match XmppClient::connect(addr, None, &sender.sender_id, &sender.server_key, Duration::from_secs(2)) {
                    Ok((Some(c), Auth::Success)) => {
                        logged_in += 1;
                        retried += usize::from(!tried.is_empty());
                        c.close();
                        tried.clear();
                        break;
                    }
                    Ok((_, auth)) => tried.push(format!("{auth:?}")),
                    Err(e) => tried.push(e.to_string()),
                }
            }
            failures.extend(tried);
        }
        // A slow app server: its stream opened, then a pause far longer than the flood takes
        // to open four new connections. The silent peers must make room before it does.
        let slow = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(
                b"<stream:stream to='gcm.googleapis.com' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            )?;
            std::thread::sleep(Duration::from_millis(600));
            s.set_read_timeout(Some(Duration::from_millis(300)))?;
            let mut said = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                said.extend_from_slice(&buf[..n]);
            }
            Ok(String::from_utf8_lossy(&said).into_owned())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flood.into_iter().for_each(|t| drop(t.join()));
        match (logged_in, slow) {
            // More than the odd late login put out: the flood is winning.
            (10, _) if retried > 2 => Err(format!("{retried} of 10 logins needed a second try under the flood")),
            (10, Ok(said)) if !said.contains("policy-violation") && said.contains("mechanism") => Ok(()),
            (10, slow) => Err(format!("an app server that paused after opening its stream was put out: {slow:?}")),
            (n, _) => Err(format!("under a flood of peers that never log in, {n} of 10 logins succeeded: {failures:?}")),
        }
    })
    .await
}

/// Over TLS, a connection told to make room during its handshake goes then, not at the
/// login deadline: held until then, evicted handshakes spent the allowance of connections
/// closing, and every newcomer was turned away.
async fn an_evicted_tls_handshake_goes_at_once() -> Result<(), String> {
    let policy = ConnectionPolicy {
        max_connections: 2, // one may be not logged in
        login_timeout: Duration::from_secs(5),
        ..ConnectionPolicy::default()
    };
    let server = start(policy).await?;
    let addr = server.xmpp_tls_address();
    off_the_runtime(move || {
        // Silent: no ClientHello, so its handshake waits.
        let mut first = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(200));
        let _second = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        first.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        match first.read(&mut buf) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Ok(n) => Err(format!("the evicted handshake got {n} bytes, not a close")),
            Err(e) => Err(format!("the evicted handshake was still open 2 s later ({e}); its deadline was 5 s")),
        }
    })
    .await
}

/// Every stored collection a client can grow has a cap in total and per sender: past it the
/// request gets 507 naming the cap, nothing is stored, and other senders keep their room.
fn the_store_is_capped_per_sender_and_in_total() -> Result<(), String> {
    let mut config = Config::bundled();
    config.store = StoreCaps {
        received: 6,
        stored: 4,
        stored_per_sender: 3,
        senders: 3,
        instances: 8,
        instances_per_sender: 5,
        groups: 3,
        groups_per_sender: 2,
        id_tokens_per_sender: 2,
    };
    let reference = Reference::new(config);
    let post = |path: &str, body: Value| reference.handle(&HttpRequest::new("POST", path).with_json(&body));
    let full = |what: &str, resp: &HttpResponse, flag: &str| -> Result<(), String> {
        let says = resp.body_json().and_then(|b| b["error"].as_str().map(str::to_string)).unwrap_or_default();
        if resp.status == 507 && says.contains(flag) {
            Ok(())
        } else {
            Err(format!("{what}: {} {says:?}", resp.status))
        }
    };
    let sender = |resp: HttpResponse| -> Result<(String, String), String> {
        let b = resp.body_json().ok_or("a sender's body is not JSON")?;
        Ok((b["sender_id"].as_str().unwrap_or_default().into(), b["server_key"].as_str().unwrap_or_default().into()))
    };
    let (a, a_key) = sender(post("/_gcmspec/v1/senders", json!({})))?;
    let (b, b_key) = sender(post("/_gcmspec/v1/senders", json!({})))?;
    let (c, _) = sender(post("/_gcmspec/v1/senders", json!({})))?;
    full("a fourth sender", &post("/_gcmspec/v1/senders", json!({})), "--max-senders")?;
    let register = |s: &str, count: u64| post("/_gcmspec/v1/instances", json!({"sender_ids": [s], "count": count}));
    // A new sender's first batch past its share stores nothing (the total below stays whole).
    full("a first batch past one sender's share", &register(&c, 6), "--max-devices-per-sender")?;
    let ids = |resp: HttpResponse| -> Vec<String> {
        let b = resp.body_json().unwrap_or_default();
        b["registration_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let a_ids = ids(register(&a, 5));
    if a_ids.len() != 5 {
        return Err(format!("five devices within the share: {a_ids:?}"));
    }
    full("a sixth device of one sender", &register(&a, 1), "--max-devices-per-sender")?;
    // Received messages: six kept in all. Past that, a device that receives keeps its newest.
    let send = |to: &str, n: usize| {
        let req = HttpRequest::new("POST", "/fcm/send")
            .with_header("authorization", &format!("key={a_key}"))
            .with_json(&json!({"to": to, "data": {"n": n.to_string()}}));
        reference.handle(&req)
    };
    let shown = |id: &str| {
        let req = HttpRequest::new("GET", &format!("/_gcmspec/v1/instances/{id}/messages"));
        reference.handle(&req).body_json().unwrap_or_default()["messages"].as_array().map_or(0, Vec::len)
    };
    for n in 0..5 {
        send(&a_ids[0], n);
        send(&a_ids[1], n);
    }
    let kept = (shown(&a_ids[0]), shown(&a_ids[1]));
    if kept.0 + kept.1 > 6 + 1 || kept.1 != 1 {
        return Err(format!("received messages kept past the total of 6: {kept:?}"));
    }
    // A batch that would pass the total stores nothing: the other sender still has room for 3.
    full("a batch past the total", &register(&b, 4), "--max-devices")?;
    let b_ids = ids(register(&b, 3));
    if b_ids.len() != 3 {
        return Err(format!("after a refused batch, the three that fit: {b_ids:?}"));
    }
    full("a ninth device", &register(&b, 1), "--max-devices")?;
    full(
        "a re-registration past the total",
        &post(&format!("/_gcmspec/v1/instances/{}/reregister", b_ids[0]), json!({})),
        "--max-devices",
    )?;
    // Groups: two per sender, three in all.
    let create = |key: &str, name: &str, id: &str| {
        reference.handle(
            &HttpRequest::new("POST", "/gcm/notification")
                .with_header("authorization", &format!("key={key}"))
                .with_header("project_id", if key == a_key { &a } else { &b })
                .with_json(&json!({"operation": "create", "notification_key_name": name, "registration_ids": [id]})),
        )
    };
    for (n, name) in ["one", "two"].iter().enumerate() {
        let resp = create(&a_key, name, &a_ids[n]);
        if resp.status != 200 {
            return Err(format!(
                "group {name} within the share: {} {:?}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
        }
    }
    full("a third group of one sender", &create(&a_key, "three", &a_ids[2]), "--max-groups-per-sender")?;
    if create(&b_key, "b-one", &b_ids[0]).status != 200 {
        return Err("another sender could not make a group beside the first's share".into());
    }
    full("a fourth group in all", &create(&b_key, "b-two", &b_ids[1]), "--max-groups")?;
    let token = |s: &str| post("/_gcmspec/v1/id_tokens", json!({"sender_id": s, "account": "x@example.com"}));
    for _ in 0..2 {
        if token(&a).status != 201 {
            return Err("an id_token within the share was refused".into());
        }
    }
    full("a third id_token of one sender", &token(&a), "--max-id-tokens-per-sender")?;
    if token(&b).status != 201 {
        return Err("another sender could not mint an id_token".into());
    }
    // Stored messages: three per sender. Past them a message that would wait for an offline
    // device is refused Unavailable; one an awake device takes now is still delivered.
    let offline = post(&format!("/_gcmspec/v1/instances/{}/connectivity", a_ids[2]), json!({"state": "offline"}));
    if offline.status != 204 {
        return Err(format!("setting a device offline: {}", offline.status));
    }
    let result = |resp: HttpResponse| resp.body_json().unwrap_or_default()["results"][0].clone();
    for n in 0..3 {
        let r = result(send(&a_ids[2], n));
        if r["message_id"].as_str().is_none() {
            return Err(format!("a stored message within the share: {r}"));
        }
    }
    let r = result(send(&a_ids[2], 3));
    if r["error"] != "Unavailable" {
        return Err(format!("a fourth stored message of one sender: {r}"));
    }
    if result(send(&a_ids[3], 0))["message_id"].as_str().is_none() {
        return Err("an awake device's message was refused at the stored cap".into());
    }
    Ok(())
}

/// A sender's journal keeps its newest entries (the rest counted as dropped, and graded all
/// the same); the reference keeps the journals of its most recently active senders; and one
/// sender cannot read or script another's.
fn journals_are_bounded_and_each_senders_own() -> Result<(), String> {
    use gcmspec::reference::journal::JournalCaps;
    let mut config = Config::bundled();
    config.journal_caps = JournalCaps { entries: 5, bytes: 1 << 20, senders: 2 };
    let reference = Reference::new(config);
    let senders: Vec<_> =
        (0..3).map(|_| reference.create_sender()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let send = |s: &gcmspec::reference::model::SenderCredentials, ttl: i64| {
        let req = HttpRequest::new("POST", "/fcm/send")
            .with_header("authorization", &format!("key={}", s.server_key))
            .with_json(&json!({ "to": "nobody", "time_to_live": ttl, "data": { "a": "b" } }));
        reference.handle(&req);
    };
    for i in 0..8 {
        send(&senders[0], if i == 0 { -1 } else { 60 });
    }
    let journal = reference.journal(&senders[0].sender_id, None).ok_or("no journal")?;
    if journal.entries.len() != 5 || journal.dropped != 3 || journal.next != 8 {
        return Err(format!("kept {}, dropped {}, next {}", journal.entries.len(), journal.dropped, journal.next));
    }
    let verdicts = reference.verdicts(&senders[0].sender_id).ok_or("no verdicts")?;
    let ttl = verdicts.rule("app.send.ttl-range").ok_or("no ttl rule")?;
    if ttl.exercised != 8 || ttl.violations_total != 1 || verdicts.journal.dropped != 3 {
        return Err(format!("a dropped entry was not graded: {}", verdicts.to_json()));
    }
    // Another sender's key reads nothing of it, nor scripts it.
    for (method, what, body) in [
        ("GET", "journal", None),
        ("GET", "verdicts", None),
        ("POST", "script", Some(json!({"kind": "status", "status": 503}))),
    ] {
        let mut req = HttpRequest::new(method, &format!("/_gcmspec/v1/senders/{}/{what}", senders[0].sender_id))
            .with_header("authorization", &format!("key={}", senders[1].server_key));
        if let Some(b) = body {
            req = req.with_json(&b);
        }
        let status = reference.handle(&req).status;
        if status != 403 {
            return Err(format!("{method} {what} with another sender's key: {status}, not 403"));
        }
    }
    // Two journals at most: the least recently active goes when a third sender sends.
    send(&senders[1], 60);
    send(&senders[0], 60);
    send(&senders[2], 60);
    let mut kept = reference.journaled_senders();
    kept.sort();
    let mut expected = vec![senders[0].sender_id.clone(), senders[2].sender_id.clone()];
    expected.sort();
    if kept != expected {
        return Err(format!("journals kept for {kept:?}, not {expected:?}"));
    }
    // An evicted journal's violations stay: the verdict does not turn clean, even after the
    // sender comes back and keeps the rule.
    send(&senders[1], 60);
    send(&senders[2], 60);
    let v = reference.verdicts(&senders[0].sender_id).ok_or("no verdicts")?;
    let ttl = v.rule("app.send.ttl-range").ok_or("no ttl rule")?;
    if ttl.outcome != gcmspec::verdicts::Outcome::Violated || v.journal.evicted_entries != 9 {
        return Err(format!("an evicted journal's violation was lost: {}", v.to_json()));
    }
    if !reference.journaled_senders().contains(&senders[0].sender_id) {
        return Err("an evicted sender with violations is left out of the reports".into());
    }
    send(&senders[0], 60);
    let v = reference.verdicts(&senders[0].sender_id).ok_or("no verdicts")?;
    if v.rule("app.send.ttl-range").map(|r| r.outcome) != Some(gcmspec::verdicts::Outcome::Violated) {
        return Err(format!("a returning sender's verdict turned clean: {}", v.to_json()));
    }
    // Without its key, a sender that exists and one that does not look alike.
    for id in [senders[0].sender_id.as_str(), "999999999999"] {
        let req = HttpRequest::new("GET", &format!("/_gcmspec/v1/senders/{id}/verdicts"));
        let status = reference.handle(&req).status;
        if status != 403 {
            return Err(format!("verdicts of {id} without a key: {status}, not 403"));
        }
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("tenancy::unread-writes-end-at-the-login-deadline", || {
            block_on(unread_writes_end_at_the_login_deadline())
        }),
        trial("tenancy::one-sender-cannot-hold-the-xmpp-cap", || block_on(one_sender_cannot_hold_the_cap())),
        trial("tenancy::anonymous-peers-cannot-keep-an-app-server-out", || {
            block_on(anonymous_peers_cannot_keep_an_app_server_out())
        }),
        trial("tenancy::an-evicted-tls-handshake-goes-at-once", || block_on(an_evicted_tls_handshake_goes_at_once())),
        trial("tenancy::the-store-is-capped-per-sender-and-in-total", the_store_is_capped_per_sender_and_in_total),
        trial("tenancy::journals-are-bounded-and-each-senders-own", journals_are_bounded_and_each_senders_own),
    ]
}
