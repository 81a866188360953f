//! What the model costs: a clock advance as instances pile up (it should grow with the
//! messages waiting, not with the instances registered), and one request handled in-process,
//! parsing and rendering included (what a served request spends holding the model), with and
//! without the app-server journal and its grading, and that cost again while the app server
//! has left thousands of failures unretried (the grading's cost should not grow with them),
//! and the grader's thread's work for each send, alone.
//!
//! `cargo bench --bench model` (a release build). Prints figures; asserts nothing about speed.

use std::time::Instant;

// The allocator `gcmspec serve` runs with, so that these figures are what it spends.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use gcmspec::reference::model::{Message, Target};
use gcmspec::{Reference, reference::Config};

fn main() {
    // `cargo bench` passes --bench; a word after it picks the part whose name holds it.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |part: &str| only.as_deref().is_none_or(|o| part.contains(o));
    if wants("clock-advance") {
        clock_advance();
    }
    // A case's name picks that case alone (`-- multicast`), for a profiler.
    let case = only
        .clone()
        .filter(|o| ["one-request", "clock-advance", "open-failures"].iter().all(|part| !part.contains(o.as_str())));
    if wants("one-request") || case.is_some() {
        one_request(case.as_deref());
    }
    if wants("open-failures") {
        open_failures();
    }
    if wants("grader-work") {
        grader_work();
    }
}

/// What the grader's thread does for each one-token send `serve` leaves it (read the send,
/// grade it, keep its entry packed), timed alone on this thread: the figure a journaled
/// `serve` spends on a second core, without the noise of sharing that core with a load
/// generator.
fn grader_work() {
    use gcmspec::reference::grader::{Journaling, Waiting};
    use gcmspec::reference::journal::{JournalCaps, Kept};
    use gcmspec::reference::packed::Packed;
    use gcmspec::verdicts::entry::{DeviceFound, FactsFound};
    use gcmspec::verdicts::events::PreparedAnswer;
    use gcmspec::wire::HttpRequest;
    let reference = Reference::new(Config::bundled());
    let (sender, id) = reference.with_model(|m| {
        let sender = m.create_sender();
        let id = m.register_instance(vec![sender.sender_id.clone()], None);
        (sender, id)
    });
    let request = HttpRequest::new("POST", "/fcm/send")
        .with_header("authorization", &format!("key={}", sender.server_key))
        .with_json(&serde_json::json!({"to": id, "data": {"score": "5x1", "time": "15:10"}}));
    let response = reference.handle(&request);
    assert_eq!(response.status, 200);
    let how =
        Journaling { book: std::sync::Arc::new(gcmspec::verdicts::Rulebook::bundled()), caps: JournalCaps::default() };
    let mut kept = Kept::default();
    let mut seq = 0;
    let mut waiting = |n: usize| -> Vec<Waiting> {
        (0..n)
            .map(|_| {
                seq += 1;
                let mut facts = FactsFound::default();
                facts.push(DeviceFound { id: &id, known: true, ..DeviceFound::default() });
                Waiting {
                    seq,
                    stamp: gcmspec::verdicts::Stamp::now(seq),
                    connection: Some(gcmspec::verdicts::Conn::Http(seq % 32)),
                    connection_opened_us: Some(0),
                    exchange: Packed::of(&request, &response),
                    body: request.body.clone(),
                    answer: PreparedAnswer::Results(vec![Ok(None)]),
                    scripted: None,
                    facts,
                }
            })
            .collect()
    };
    // Past the journal's caps from the start, as a loaded server is: each entry kept drops one.
    for w in waiting(JournalCaps::default().entries) {
        w.journal(&how, &mut kept);
    }
    const BATCH: usize = 20_000;
    let mut rounds: Vec<std::time::Duration> = (0..9)
        .map(|_| {
            let batch = waiting(BATCH);
            let start = Instant::now();
            for w in batch {
                w.journal(&how, &mut kept);
            }
            start.elapsed() / BATCH as u32
        })
        .collect();
    rounds.sort();
    println!(
        "the grader's work for one journaled one-token send (read, graded, kept packed): {:?} each, median of {} rounds of {BATCH} ({:?}-{:?})",
        rounds[rounds.len() / 2],
        rounds.len(),
        rounds[0],
        rounds[rounds.len() - 1]
    );
}

/// A one-token send, journaled, while `open` earlier sends failed (scripted 503s) and were
/// never retried: each is a failure the retry rules watch until its window closes.
fn open_failures() {
    use gcmspec::wire::HttpRequest;
    for open in [0u64, 1_000, 10_000] {
        let reference = Reference::new(Config::bundled());
        let (sender, ids) = reference.with_model(|m| {
            let sender = m.create_sender();
            let ids: Vec<String> = (0..2).map(|_| m.register_instance(vec![sender.sender_id.clone()], None)).collect();
            (sender, ids)
        });
        let send = |to: &str, n: u64| {
            HttpRequest::new("POST", "/fcm/send")
                .with_header("authorization", &format!("key={}", sender.server_key))
                .with_json(&serde_json::json!({"to": to, "data": {"n": n}}))
        };
        if open > 0 {
            let script = HttpRequest::new("POST", &format!("/_gcmspec/v1/senders/{}/script", sender.sender_id))
                .with_header("authorization", &format!("key={}", sender.server_key))
                .with_json(&serde_json::json!({"kind": "status", "status": 503, "times": open}));
            assert_eq!(reference.handle(&script).status, 201);
            for n in 0..open {
                assert_eq!(reference.handle(&send(&ids[0], n)).status, 503);
            }
        }
        let times = 5_000u64;
        let requests: Vec<HttpRequest> = (0..times).map(|n| send(&ids[1], 1_000_000 + n)).collect();
        println!(
            "send to one token, journaled, with {open:>6} failures left unretried: {:?} each",
            each(&reference, &requests)
        );
        // Reading them settled judges them all; so does the first send once they fall due.
        let control = |method: &str, path: &str| {
            HttpRequest::new(method, &format!("/_gcmspec/v1/senders/{}/{path}", sender.sender_id))
                .with_header("authorization", &format!("key={}", sender.server_key))
        };
        let read = || {
            let start = Instant::now();
            assert_eq!(reference.handle(&control("GET", "verdicts").with_query("settled", "true")).status, 200);
            start.elapsed()
        };
        let settled = [read(), read()];
        let advance = control("POST", "clock").with_json(&serde_json::json!({"advance_seconds": 3600}));
        assert_eq!(reference.handle(&advance).status, 200);
        let start = Instant::now();
        assert_eq!(reference.handle(&send(&ids[1], 0)).status, 200);
        println!("  read settled (twice): {settled:?}; the send when they all fall due: {:?}", start.elapsed());
    }
    // The same with upstream messages written to an XMPP connection and never acked: each a
    // copy the ack rules watch until its window closes.
    for open in [0u64, 1_000, 10_000] {
        let reference = Reference::new(Config::bundled());
        let (sender, id) = reference.with_model(|m| {
            let sender = m.create_sender();
            let id = m.register_instance(vec![sender.sender_id.clone()], None);
            (sender, id)
        });
        reference.with_model(|m| {
            let now = m.now_ms(&sender.sender_id);
            for n in 0..open {
                let stamp = gcmspec::verdicts::Stamp::now(now);
                let stanza = serde_json::json!({"from": id, "message_id": format!("up-{n}"), "data": {"n": n}});
                let what = gcmspec::verdicts::What::XmppSent { stanza, stanza_cut: 0 };
                let conn = Some((gcmspec::verdicts::Conn::Xmpp(1), now));
                m.journals.record(&sender.sender_id, stamp, conn, what, false, None);
            }
        });
        let times = 5_000u64;
        let requests: Vec<HttpRequest> = (0..times)
            .map(|n| {
                HttpRequest::new("POST", "/fcm/send")
                    .with_header("authorization", &format!("key={}", sender.server_key))
                    .with_json(&serde_json::json!({"to": id, "data": {"n": n}}))
            })
            .collect();
        println!(
            "send to one token, journaled, with {open:>6} upstream copies unacked:  {:?} each",
            each(&reference, &requests)
        );
    }
    // Acks, when every copy held shares one message id (devices numbering their messages
    // alike): each ack should cost the same however many share it.
    for held in [500u64, 10_000] {
        let reference = Reference::new(Config::bundled());
        let sender = reference.with_model(|m| m.create_sender());
        let record = |m: &mut gcmspec::reference::model::Model, what, conn: u64| {
            let stamp = gcmspec::verdicts::Stamp::now(m.now_ms(&sender.sender_id));
            let conn = Some((gcmspec::verdicts::Conn::Xmpp(conn), 0));
            m.journals.record(&sender.sender_id, stamp, conn, what, false, None);
        };
        reference.with_model(|m| {
            for n in 0..held {
                let stanza = serde_json::json!({"from": format!("device-{n}"), "message_id": "1", "data": {}});
                record(m, gcmspec::verdicts::What::XmppSent { stanza, stanza_cut: 0 }, n % 8);
            }
        });
        let start = Instant::now();
        reference.with_model(|m| {
            for n in 0..held {
                let stanza = serde_json::json!({"to": format!("device-{n}"), "message_id": "1", "message_type": "ack"});
                let what = gcmspec::verdicts::What::XmppReceived {
                    stanza,
                    stanza_cut: 0,
                    scripted: None,
                    facts: Default::default(),
                };
                record(m, what, n % 8);
            }
        });
        println!(
            "ack, journaled, with {held:>6} copies sharing its message id: {:?} each",
            start.elapsed() / held as u32
        );
    }
}

/// How long `reference` takes to answer each of `requests` (every one a 200), on average.
fn each(reference: &Reference, requests: &[gcmspec::wire::HttpRequest]) -> std::time::Duration {
    let start = Instant::now();
    for request in requests {
        assert_eq!(reference.handle(request).status, 200);
    }
    start.elapsed() / requests.len().max(1) as u32
}

fn one_request(case: Option<&str>) {
    let ways = [
        ("journaled and graded inline (in-process, the default):", true, false),
        ("journaled, graded on the grader's thread (as `serve` does):", true, true),
        ("nothing journaled:", false, false),
    ];
    let only_way = std::env::var("GCMSPEC_BENCH_WAY").ok();
    for (title, journaled, background) in ways {
        if only_way.as_deref().is_some_and(|w| !title.contains(w)) {
            continue;
        }
        let mut config = Config::bundled();
        if !journaled {
            config.journal_caps.senders = 0;
        }
        println!("{title}");
        let reference = Reference::new(config);
        if background {
            reference.with_model(|m| m.journals.grade_in_background()).expect("the grader's thread");
        }
        one_request_with(reference, case);
    }
}

fn one_request_with(reference: Reference, case: Option<&str>) {
    use gcmspec::wire::HttpRequest;
    let (sender, ids) = reference.with_model(|m| {
        let sender = m.create_sender();
        let ids: Vec<String> = (0..1020).map(|_| m.register_instance(vec![sender.sender_id.clone()], None)).collect();
        (sender, ids)
    });
    let post = |path: &str, body: serde_json::Value| HttpRequest {
        method: "POST".into(),
        path: path.into(),
        query: Vec::new(),
        headers: vec![
            ("authorization".into(), format!("key={}", sender.server_key)),
            ("project_id".into(), sender.sender_id.clone()),
            ("content-type".into(), "application/json".into()),
        ],
        body: body.to_string().into_bytes(),
    };
    let create = post(
        "/gcm/notification",
        serde_json::json!({"operation": "create", "notification_key_name": "n", "registration_ids": &ids[..20]}),
    );
    let key =
        reference.handle(&create).body_json().expect("a key")["notification_key"].as_str().expect("a key").to_string();
    let data = serde_json::json!({"score": "5x1", "time": "15:10"});
    let cases = [
        ("send to one token", post("/fcm/send", serde_json::json!({"to": ids[0], "data": data})), 20_000),
        ("send to a 20-member key", post("/fcm/send", serde_json::json!({"to": key, "data": data})), 2_000),
        (
            "multicast to 1000 ids",
            post("/fcm/send", serde_json::json!({"registration_ids": &ids[20..], "data": data})),
            20,
        ),
    ];
    for (name, request, times) in cases {
        if case.is_some_and(|c| !name.contains(c)) {
            continue;
        }
        // A case picked alone runs fifty times as often: enough samples for a profiler.
        let times = if case.is_some() { times * 50 } else { times };
        let start = Instant::now();
        for _ in 0..times {
            assert_eq!(reference.handle(&request).status, 200);
        }
        println!("  {name:<28} handled in-process: {:?} each", start.elapsed() / times);
    }
}

fn clock_advance() {
    use gcmspec::reference::model::{Connectivity, Model};
    // A device offline with a message waiting: what an advance may have to move.
    let waiting = |m: &mut Model, sender: &str, id: String| {
        m.set_connectivity(&id, Connectivity::Offline);
        m.send(sender, Target::To(id), Message { time_to_live: Some(3600), ..Message::default() });
    };
    for registered in [1_000usize, 200_000] {
        let reference = Reference::new(Config::bundled());
        let sender = reference.with_model(|m| {
            let sender = m.create_sender().sender_id;
            let ids: Vec<String> = (0..registered).map(|_| m.register_instance(vec![sender.clone()], None)).collect();
            for id in &ids[..10] {
                waiting(m, &sender, id.clone());
            }
            sender
        });
        let each = advance_time(&reference, &sender);
        println!("clock advance with {registered:>7} instances registered, 10 with a message waiting: {each:?} each");
    }
    // Other tenants' waiting devices: an advance pumps only the advancing sender's.
    let reference = Reference::new(Config::bundled());
    let sender = reference.with_model(|m| {
        let other = m.create_sender().sender_id;
        for _ in 0..10_000 {
            let id = m.register_instance(vec![other.clone()], None);
            waiting(m, &other, id);
        }
        let sender = m.create_sender().sender_id;
        let id = m.register_instance(vec![sender.clone()], None);
        waiting(m, &sender, id);
        sender
    });
    let each = advance_time(&reference, &sender);
    println!("clock advance of a sender with 1 device waiting, another sender's 10,000 waiting: {each:?} each");
}

/// What one advance of `sender`'s clock by a millisecond takes, over 200 of them.
fn advance_time(reference: &Reference, sender: &str) -> std::time::Duration {
    const ADVANCES: u32 = 200;
    let start = Instant::now();
    reference.with_model(|m| {
        for _ in 0..ADVANCES {
            m.advance_clock(sender, 1);
        }
    });
    start.elapsed() / ADVANCES
}
