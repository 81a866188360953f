//! Nothing a client sends can make the reference answer 5xx, panic, or stop serving.

use std::io::{Read, Write};

use gcmspec::Reference;
use gcmspec::reference::Config;
use gcmspec::wire::HttpRequest;
use libtest_mimic::Trial;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

use crate::trial;

const PATHS: &[&str] = &[
    "/gcm/notification",
    "/fcm/notification",
    "/gcm/googlenotification",
    "/gcm/send",
    "/fcm/send",
    "/_gcmspec/v1/instances",
    "/_gcmspec/v1/id_tokens",
    "/_gcmspec/v1/instances/x/messages",
    "/_gcmspec/v1/instances/x/connectivity",
    "/_gcmspec/v1/instances/x/upstream",
    "/_gcmspec/v1/instances/x/handled",
    "/_gcmspec/v1/instances/x/reregister",
    "/_gcmspec/v1/senders/x/clock",
];
const FIELDS: &[&str] = &[
    "operation",
    "notification_key_name",
    "notification_key",
    "registration_ids",
    "id_token",
    "to",
    "data",
    "notification",
    "collapse_key",
    "time_to_live",
    "delay_while_idle",
    "dry_run",
    "restricted_package_name",
    "sender_ids",
    "count",
    "account",
    "platform",
    "state",
    "advance_seconds",
    "message_id",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("create".to_string()),
            Just("add".to_string()),
            Just("remove".to_string()),
            "[a-z%:]{0,12}".prop_map(String::from)
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(proptest::sample::select(FIELDS).prop_map(String::from), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn fuzz_in_process() -> Result<(), String> {
    let reference = Reference::new(Config::bundled());
    let sender = reference.with_model(|m| m.create_sender());
    let request = (
        proptest::sample::select(PATHS),
        prop_oneof![Just("POST"), Just("GET"), Just("PUT")],
        any::<bool>(),
        prop_oneof![
            json_value().prop_map(|v| v.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..64)
        ],
    );
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    runner
        .run(&request, |(path, method, authed, body)| {
            let mut req = HttpRequest::new(method, path).with_header("project_id", &sender.sender_id);
            if authed {
                req = req.with_header("authorization", &format!("key={}", sender.server_key));
            }
            req.body = body;
            let resp = reference.handle(&req);
            prop_assert!(
                resp.status != 500,
                "500 for {} {} {:?}: {}",
                method,
                path,
                String::from_utf8_lossy(&req.body),
                String::from_utf8_lossy(&resp.body)
            );
            if resp.status >= 400 && resp.status != 503 {
                // A JSON error that says why; a 401 is the real service's HTML page, with a
                // paragraph that says why.
                let text = String::from_utf8_lossy(&resp.body);
                let explained = resp.body_json().is_some_and(|b| b["error"].is_string())
                    || (resp.status == 401 && text.contains("<TITLE>Unauthorized</TITLE>") && text.contains("<P>"));
                prop_assert!(explained, "error without an explanation: {} {:?}", resp.status, text);
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
}

async fn socket_abuse() -> Result<(), String> {
    let server = Reference::start().await;
    let (addr, xmpp_addr) = (server.address(), server.xmpp_address());
    let sender = server.reference().with_model(|m| m.create_sender());
    tokio::task::spawn_blocking(move || {
        // Not HTTP at all.
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.write_all(b"\x16\x03\x01garbage that is not HTTP\r\n\r\n").map_err(|e| e.to_string())?;
        let _ = s.read(&mut [0u8; 256]);
        // A body over the limit.
        let big = vec![b'x'; Config::DEFAULT_MAX_BODY_BYTES + 1];
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let head =
            format!("POST /fcm/send HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", big.len());
        s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        let _ = s.write_all(&big);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if !answer.starts_with("HTTP/1.1 413") {
            return Err(format!("expected 413 for an oversized body, got {:?}", answer.lines().next()));
        }
        // XMPP: garbage, an unclosed flood, then a good login still works.
        let xmpp = xmpp_addr;
        // Nesting past any limit before login used to overflow the parser's stack and abort
        // the whole process, HTTP included.
        let deep = format!("<stream:stream to='gcm.googleapis.com'>{}", "<a>".repeat(5000)).into_bytes();
        for garbage in
            [&b"\x16\x03\x01\x00\xff not xml at all"[..], b"<stream:stream><message><<<>", b"<a b='c'></b>", &deep]
        {
            let mut s = std::net::TcpStream::connect(xmpp).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(5))).map_err(|e| e.to_string())?;
            s.write_all(garbage).map_err(|e| e.to_string())?;
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if !answer.contains("stream:error") {
                return Err(format!("expected a stream error for {garbage:?}, got {answer:?}"));
            }
        }
        let login = gcmspec::driver::xmpp::XmppClient::connect(
            xmpp,
            None,
            &sender.sender_id,
            &sender.server_key,
            std::time::Duration::from_secs(5),
        )?;
        if login.1 != gcmspec::driver::xmpp::Auth::Success {
            return Err(format!("a good XMPP login failed after the garbage: {:?}", login.1));
        }
        // A payload that is not JSON says so (it used to say "not a JSON object").
        let mut client = login.0.ok_or("logged in without a client")?;
        for bad in ["{\"to\": 1e400}", "{\"to\": \"x\", \"message_id\": "] {
            client.send_raw(&format!("<message id='j'><gcm xmlns='google:mobile:data'>{bad}</gcm></message>"))?;
            let nack = client.next_as_json()?;
            let described = nack["error_description"].as_str().unwrap_or_default();
            if nack["error"] != "INVALID_JSON" || !described.contains("not valid JSON") {
                return Err(format!("{bad}: expected INVALID_JSON that says the JSON is not valid, got {nack}"));
            }
        }
        // A malformed chunked body is a bad request, not one "larger than" the limit.
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.write_all(b"POST /fcm/send HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\nnot a chunk\r\n")
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if !answer.starts_with("HTTP/1.1 400") || answer.contains("larger than") {
            return Err(format!("expected 400 for a malformed chunked body, got {answer:?}"));
        }
        // Still serving.
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.write_all(b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        if !answer.starts_with("HTTP/1.1 404") || !answer.contains("no endpoint at /nowhere") {
            return Err(format!("expected a 404 that names the path, got {answer:?}"));
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A hostile XMPP server: after the client's stream header, a header of its own and elements
/// nested 5000 deep. The harness's client refuses it with an error; it used to overflow its
/// stack and abort `gcmspec run` (exit 134, no report).
fn hostile_xmpp_server_nesting() -> Result<(), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.read(&mut [0u8; 1024]);
            let mut hostile = String::from("<stream:stream from='gcm.googleapis.com' id='x' version='1.0'>");
            hostile.push_str(&"<a>".repeat(5000));
            let _ = s.write_all(hostile.as_bytes());
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
    match gcmspec::driver::xmpp::XmppClient::connect(addr, None, "1", "k", std::time::Duration::from_secs(5)) {
        Err(e) if e.contains("nested deeper than") => Ok(()),
        Err(e) => Err(format!("expected the nesting to be named, got: {e}")),
        Ok((_, auth)) => Err(format!("a login against a hostile server succeeded? {auth:?}")),
    }
}

/// `count` registers many instances in one call, within a bound; anything else is a 400 that
/// says what is wrong, and registers nothing.
fn register_count_is_bounded() -> Result<(), String> {
    let reference = Reference::new(Config::bundled());
    let sender = reference.with_model(|m| m.create_sender());
    let register = |count: Value| {
        let body = json!({"sender_ids": [sender.sender_id], "count": count});
        reference.handle(&HttpRequest::new("POST", "/_gcmspec/v1/instances").with_json(&body))
    };
    let max = gcmspec::reference::control::MAX_REGISTER_AT_ONCE;
    for bad in [json!(0), json!(-1), json!(max + 1), json!(u64::MAX), json!(2.5), json!("3"), json!([3])] {
        let resp = register(bad.clone());
        let says = resp.body_json().and_then(|b| b["error"].as_str().map(str::to_string)).unwrap_or_default();
        if resp.status != 400 || !says.contains("`count`") {
            return Err(format!("count {bad}: {} {says:?}", resp.status));
        }
    }
    let resp = register(json!(3));
    let ids = resp.body_json().and_then(|b| b["registration_ids"].as_array().map(Vec::len));
    if resp.status != 201 || ids != Some(3) {
        return Err(format!("count 3: {} {:?}", resp.status, String::from_utf8_lossy(&resp.body)));
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("robustness::hostile-xmpp-server-nesting", hostile_xmpp_server_nesting),
        trial("robustness::random-requests-never-500", fuzz_in_process),
        trial("robustness::socket-abuse", || crate::block_on(socket_abuse())),
        trial("robustness::register-count-is-bounded", register_count_is_bounded),
        trial("robustness::wrong-method-is-405", || {
            let resp = Reference::new(Config::bundled()).handle(&HttpRequest::new("DELETE", "/fcm/send"));
            if resp.status == 405 { Ok(()) } else { Err(format!("got {}", resp.status)) }
        }),
    ]
}

/// How a fake server misbehaves on every protocol request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// Answers capabilities as a control API would, then nothing at all.
    CapabilitiesThenHang,
    /// Answers capabilities 200 with something that is not JSON.
    BadCapabilities,
    /// Never answers protocol requests (the capability probe gets 404).
    Hang,
    /// Never answers anything, the capability probe included.
    HangAll,
    /// Closes the connection without a word.
    Reset,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Answers a body larger than any the protocol has.
    Huge,
    /// A control API that says it makes senders, and answers `200 {}` to every call.
    EmptyControl,
    /// Capabilities that declare a throttle bucket of 2^64 - 1 tokens.
    HugeParams,
}

/// A server on 127.0.0.1:0 that answers the capability probe with 404 (no control API) and
/// misbehaves on everything else. It serves until the process ends.
fn misbehaving_server(how: Misbehaviour) -> Result<std::net::SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
                    head.push(byte[0]);
                }
                if matches!(how, Misbehaviour::HangAll) {
                    std::thread::sleep(std::time::Duration::from_secs(120));
                    return;
                }
                if String::from_utf8_lossy(&head).contains("/_gcmspec/") {
                    let capabilities = String::from_utf8_lossy(&head).contains("capabilities");
                    let body: &[u8] = match how {
                        Misbehaviour::EmptyControl if !capabilities => b"{}",
                        Misbehaviour::EmptyControl => {
                            br#"{"protocol": "gcmspec-control/1", "profile": "fcm", "capabilities": ["senders", "instances", "inbox"]}"#
                        }
                        Misbehaviour::HugeParams => {
                            br#"{"protocol": "gcmspec-control/1", "profile": "fcm", "capabilities": ["senders"], "params": {"throttle_initial_tokens": 18446744073709551615}}"#
                        }
                        Misbehaviour::CapabilitiesThenHang => {
                            br#"{"protocol": "gcmspec-control/1", "profile": "fcm", "capabilities": ["senders", "instances", "inbox", "unregister", "id_tokens", "connectivity", "clock"]}"#
                        }
                        Misbehaviour::BadCapabilities => b"<html>maintenance</html>",
                        _ => {
                            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
                            return;
                        }
                    };
                    if !capabilities && how != Misbehaviour::EmptyControl {
                        // Everything else of the control API: silence.
                        std::thread::sleep(std::time::Duration::from_secs(60));
                        return;
                    }
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body);
                    return;
                }
                match how {
                    Misbehaviour::Hang
                    | Misbehaviour::HangAll
                    | Misbehaviour::CapabilitiesThenHang
                    | Misbehaviour::BadCapabilities
                    | Misbehaviour::EmptyControl
                    | Misbehaviour::HugeParams => std::thread::sleep(std::time::Duration::from_secs(60)),
                    Misbehaviour::Reset => drop(stream),
                    Misbehaviour::Garbage => {
                        let _ = stream.write_all(b"\x00\x01\x02 this is not HTTP \xff\r\n\r\n");
                    }
                    Misbehaviour::Huge => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n",
                        );
                        let chunk = vec![b' '; 1 << 16];
                        while stream.write_all(&chunk).is_ok() {}
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn against_misbehaving(how: Misbehaviour, code: i32, needles: &[&str]) -> Result<(), String> {
    let addr = misbehaving_server(how)?;
    let url = format!("http://{addr}");
    let dir = std::env::temp_dir().join(format!("gcmspec-misbehaving-{}-{how:?}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // A second is enough to wait for silence; a huge body is read up to its cap, 8 MiB per
    // exchange, which a loaded machine may not do within a second: it gets ten.
    let timeout = if how == Misbehaviour::Huge { "10" } else { "1" };
    let mut args =
        vec!["run", "--target", &url, "--timeout", timeout, "--no-snapshots", "--no-replays", "--json", "r.json"];
    if !matches!(
        how,
        Misbehaviour::CapabilitiesThenHang
            | Misbehaviour::BadCapabilities
            | Misbehaviour::EmptyControl
            | Misbehaviour::HugeParams
    ) {
        args.extend(["--api-key", "AIzaFake", "--sender-id", "123456789012"]);
    }
    let start = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gcmspec"))
        .args(&args)
        .current_dir(&dir)
        .output()
        .map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_to_string(dir.join("r.json"));
    let _ = std::fs::remove_dir_all(&dir);
    // The run completes, says what went wrong, and writes its report with what ran.
    if out.status.code() != Some(code) || !needles.iter().all(|n| text.contains(n)) || report.is_err() {
        return Err(format!(
            "{how:?}: expected exit {code} saying {needles:?} and a report, got exit {:?} after {took:?} (report: {}):\n{text}",
            out.status.code(),
            report.is_ok()
        ));
    }
    Ok(())
}

pub fn misbehaving_trials() -> Vec<Trial> {
    vec![
        // No answer at all: after three in a row the target has stopped answering; one error.
        trial("robustness::target-hangs", || {
            against_misbehaving(
                Misbehaviour::Hang,
                2,
                &[
                    "timed out",
                    "the target stopped answering",
                    "checks in flight when it stopped or due after were not tried",
                ],
            )
        }),
        trial("robustness::target-resets", || {
            against_misbehaving(Misbehaviour::Reset, 2, &["cannot reach", "the target stopped answering"])
        }),
        trial("robustness::target-answers-garbage", || {
            against_misbehaving(Misbehaviour::Garbage, 2, &["cannot reach", "the target stopped answering"])
        }),
        // An answer, however wrong, is an answer: the checks fail, the run goes on.
        trial("robustness::target-answers-a-huge-body", || {
            against_misbehaving(Misbehaviour::Huge, 1, &["cut off", "test result: FAILED"])
        }),
        // Capabilities, then silence: the run used to wait for every check's timeouts in turn
        // (over 300 s) and write no report.
        trial("robustness::target-stops-after-capabilities", || {
            against_misbehaving(Misbehaviour::CapabilitiesThenHang, 2, &["the target stopped answering"])
        }),
        trial("robustness::the-run-ends-at-its-deadline", || {
            // However long a timeout: the run ends at its deadline, with its report.
            let addr = misbehaving_server(Misbehaviour::Hang)?;
            let url = format!("http://{addr}");
            let start = std::time::Instant::now();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_gcmspec"))
                .args(["run", "--target", &url, "--api-key", "AIzaFake", "--sender-id", "123456789012"])
                .args(["--timeout", "60", "--deadline", "1", "--no-snapshots", "--no-replays"])
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            // The summary line says how many checks the deadline left untried.
            let untried = text.lines().any(|l| l.starts_with("gcmspec: 0 passed") && l.ends_with(" not tried"));
            if out.status.code() != Some(2) || !text.contains("the run's deadline (1s) passed") || !untried {
                return Err(format!("exit {:?} after {:?}:\n{text}", out.status.code(), start.elapsed()));
            }
            // A bound of the test, not a timing of gcmspec: far below the 60 s timeout.
            if start.elapsed() > std::time::Duration::from_secs(30) {
                return Err(format!("the run took {:?} with a deadline of 1 s", start.elapsed()));
            }
            Ok(())
        }),
        trial("robustness::the-deadline-covers-the-first-request", || {
            // The capability probe is the run's first request: a target that never answers it
            // used to hold the run for the whole --timeout, and no report was written.
            let addr = misbehaving_server(Misbehaviour::HangAll)?;
            let dir = scratch_dir("first-request")?;
            let (out, took) =
                run_in(&dir, &["--target", &format!("http://{addr}"), "--timeout", "60", "--deadline", "2"])?;
            let report = std::fs::read_to_string(dir.join("r.json"));
            let _ = std::fs::remove_dir_all(&dir);
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.code() != Some(2) || !text.contains("the run's deadline (2s) passed") || report.is_err() {
                return Err(format!("exit {:?} after {took:?}, report {}:\n{text}", out.status.code(), report.is_ok()));
            }
            // A bound of the test, not a timing of gcmspec: far below the 60 s timeout.
            if took > std::time::Duration::from_secs(30) {
                return Err(format!("the run took {took:?} with a deadline of 2 s"));
            }
            Ok(())
        }),
        trial("robustness::the-deadline-cuts-xmpp-exchanges", || {
            // An XMPP endpoint that takes the connection and never says a word: each login
            // waits --xmpp-timeout, unless the run's deadline comes first.
            let addr = misbehaving_server(Misbehaviour::Hang)?;
            let xmpp = silent_listener()?;
            let dir = scratch_dir("xmpp-deadline")?;
            let (out, took) = run_in(
                &dir,
                &["--target", &format!("http://{addr}"), "--xmpp", &xmpp.to_string()]
                    .into_iter()
                    .chain(["--api-key", "AIzaFake", "--sender-id", "123456789012", "--timeout", "60"])
                    .chain(["--xmpp-timeout", "30", "--deadline", "3", "xmpp"])
                    .collect::<Vec<_>>(),
            )?;
            let _ = std::fs::remove_dir_all(&dir);
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.code() != Some(2) || !text.contains("the run's deadline (3s) passed") {
                return Err(format!("exit {:?} after {took:?}:\n{text}", out.status.code()));
            }
            if took > std::time::Duration::from_secs(25) {
                return Err(format!("the run took {took:?} with a deadline of 3 s and XMPP timeouts of 30 s"));
            }
            Ok(())
        }),
        trial("robustness::a-control-api-that-makes-no-sender-is-said", || {
            against_misbehaving(Misbehaviour::EmptyControl, 2, &["offers `senders` but making one failed"])
        }),
        trial("robustness::declared-numbers-out-of-range-are-one-error", || {
            against_misbehaving(
                Misbehaviour::HugeParams,
                2,
                &["declares numbers the checks cannot use", "`throttle_initial_tokens` is 18446744073709551615"],
            )
        }),
        trial("robustness::a-silent-xmpp-endpoint-is-one-error", || {
            // Plain and with TLS (whose handshake used to wait without end): one error, at once.
            let served = crate::cli::Served::start(&[])?;
            let xmpp = silent_listener()?.to_string();
            for tls in [false, true] {
                let dir = scratch_dir(&format!("silent-xmpp-{tls}"))?;
                let mut args = vec!["--target", &served.url, "--xmpp", &xmpp, "--xmpp-timeout", "1"];
                if tls {
                    args.push("--xmpp-tls");
                }
                let (out, took) = run_in(&dir, &args)?;
                let report = std::fs::read_to_string(dir.join("r.json"));
                let _ = std::fs::remove_dir_all(&dir);
                let text = String::from_utf8_lossy(&out.stderr).into_owned();
                if out.status.code() != Some(2) || !text.contains("the XMPP endpoint") || report.is_err() {
                    return Err(format!("tls {tls}: exit {:?} after {took:?}:\n{text}", out.status.code()));
                }
                if took > std::time::Duration::from_secs(20) {
                    return Err(format!("tls {tls}: the run took {took:?} with an XMPP timeout of 1 s"));
                }
            }
            Ok(())
        }),
        trial("robustness::capabilities-not-json-is-said", || {
            against_misbehaving(
                Misbehaviour::BadCapabilities,
                2,
                &["no usable control API: its capabilities answer is not JSON", "<html>maintenance"],
            )
        }),
    ]
}

fn scratch_dir(what: &str) -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("gcmspec-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// `gcmspec run ARGS` in `dir`, with a JSON report `r.json` and neither snapshots nor replays.
fn run_in(dir: &std::path::Path, args: &[&str]) -> Result<(std::process::Output, std::time::Duration), String> {
    let start = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gcmspec"))
        .arg("run")
        .args(args)
        .args(["--no-snapshots", "--no-replays", "--json", "r.json"])
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    Ok((out, start.elapsed()))
}

/// A listener on 127.0.0.1:0 that takes every connection and never writes to it.
fn silent_listener() -> Result<std::net::SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    Ok(addr)
}
