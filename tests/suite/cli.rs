//! The `gcmspec` binary, run as a user would.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use libtest_mimic::Trial;

use crate::trial;

/// A fresh working directory per call: runs write replay files there, and parallel
/// trials must not share (or remove) them.
fn workdir() -> Result<std::path::PathBuf, String> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gcmspec-cli-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn gcmspec_in(dir: &std::path::Path, args: &[&str]) -> Result<(i32, String), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_gcmspec"))
        .args(args)
        .current_dir(dir)
        .env("CI", "true")
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

pub(crate) fn gcmspec(args: &[&str]) -> Result<(i32, String), String> {
    let dir = workdir()?;
    let result = gcmspec_in(&dir, args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn expect_in(dir: &std::path::Path, args: &[&str], code: i32, needles: &[&str]) -> Result<String, String> {
    let (got, text) = gcmspec_in(dir, args)?;
    if got != code {
        return Err(format!("gcmspec {} exited {got}, expected {code}:\n{text}", args.join(" ")));
    }
    match needles.iter().find(|n| !text.contains(**n)) {
        Some(n) => Err(format!("gcmspec {}: no {n:?} in:\n{text}", args.join(" "))),
        None => Ok(text),
    }
}

pub(crate) fn expect(args: &[&str], code: i32, needles: &[&str]) -> Result<(), String> {
    let (got, text) = gcmspec(args)?;
    if got != code {
        return Err(format!("gcmspec {} exited {got}, expected {code}:\n{text}", args.join(" ")));
    }
    match needles.iter().find(|n| !text.contains(**n)) {
        Some(n) => Err(format!("gcmspec {}: no {n:?} in:\n{text}", args.join(" "))),
        None => Ok(()),
    }
}

/// `gcmspec serve` on an ephemeral port; killed on drop.
pub(crate) struct Served {
    child: Child,
    pub(crate) url: String,
    pub(crate) sender_id: String,
    pub(crate) server_key: String,
    /// The XMPP address, when started with `--xmpp` or `--xmpp-tls`.
    pub(crate) xmpp: String,
    /// The certificate file of `--xmpp-tls`.
    pub(crate) certificate: String,
}

impl Served {
    pub(crate) fn start(extra: &[&str]) -> Result<Served, String> {
        Self::start_limited(None, extra)
    }

    /// `gcmspec serve` with at most `fds` file descriptors (`ulimit -n`), when given.
    fn start_limited(fds: Option<u32>, extra: &[&str]) -> Result<Served, String> {
        let mut command = match fds {
            None => Command::new(env!("CARGO_BIN_EXE_gcmspec")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_gcmspec")]);
                c
            }
        };
        // Under a descriptor limit the server reports accept errors, as it should; in a test
        // run they would only alarm a reader.
        let stderr = if fds.is_some() { Stdio::null() } else { Stdio::inherit() };
        let mut child = command
            .args(["serve", "--http", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| e.to_string())?;
        // Read the banner on a thread so that a server that never prints cannot hang the test.
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Every line is read, so that the server never writes to a closed pipe.
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.unwrap_or_default());
            }
        });
        let next = || rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap_or_default();
        let (first, second) = (next(), next());
        let third = if extra.iter().any(|a| a.starts_with("--xmpp")) { next() } else { String::new() };
        let xmpp = third.split_whitespace().find(|w| w.starts_with("127.0.0.1:")).unwrap_or_default().to_string();
        let certificate =
            third.split_whitespace().skip_while(|w| *w != "certificate").nth(1).unwrap_or_default().to_string();
        let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_default().to_string();
        let field = |name: &str| {
            second
                .split_whitespace()
                .skip_while(|w| *w != name)
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches(',')
                .to_string()
        };
        let served = Served { sender_id: field("id"), server_key: field("key"), url, child, xmpp, certificate };
        if served.url.is_empty() || served.server_key.is_empty() {
            return Err(format!("unexpected serve banner: {first:?} / {second:?}"));
        }
        Ok(served)
    }
}

impl Served {
    /// Stops the server at once, as `kill -9` does: it gets no chance to write anything more.
    pub(crate) fn kill(&mut self) -> Result<(), String> {
        self.child.kill().map_err(|e| e.to_string())?;
        self.child.wait().map(drop).map_err(|e| e.to_string())
    }

    /// Stops the server as `kill` does (SIGTERM), so that it cleans up; true if it exited
    /// within a few seconds.
    pub(crate) fn terminate(&mut self) -> bool {
        self.signal("TERM")
    }

    /// Sends the signal (`TERM`, `HUP`, `INT`); true if the server exited within a few seconds.
    pub(crate) fn signal(&mut self, name: &str) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        // The shell's own `kill`: a fresh machine need not have a kill binary.
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -{name} \"$0\""), &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if !self.terminate() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A GET answered with JSON, over a plain socket (the test needs no HTTP client of its own).
fn curl_json(url: &str) -> Result<(u16, serde_json::Value), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("not an http URL")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    Ok((status, serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?))
}

/// Half-sent headers and silent XMPP connections are closed at their deadlines; more
/// connections than the server has file descriptors make accepting fail for a while, and both
/// listeners serve again once the flood is gone (the XMPP listener used to die for good).
fn serve_sheds_what_a_peer_holds() -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let served = Served::start_limited(
        Some(128),
        &["--xmpp", "127.0.0.1:0", "--header-timeout", "1", "--login-timeout", "1", "--max-connections", "1000"],
    )?;
    let http = served.url.trim_start_matches("http://").to_string();
    let closed_within = |mut s: TcpStream, limit: Duration| -> Result<String, String> {
        s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => Ok(String::from_utf8_lossy(&got).into_owned()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => Ok(String::new()),
            Err(e) => Err(format!("still open after {:?}: {e}", start.elapsed())),
        }
    };
    // Headers that never end.
    let mut s = TcpStream::connect(&http).map_err(|e| e.to_string())?;
    s.write_all(b"POST /fcm/send HTTP/1.1\r\nhost: x\r\n").map_err(|e| e.to_string())?;
    closed_within(s, Duration::from_secs(5)).map_err(|e| format!("half-sent headers: {e}"))?;
    // A keep-alive connection left idle after its answer.
    let mut s = TcpStream::connect(&http).map_err(|e| e.to_string())?;
    s.write_all(b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let answered = closed_within(s, Duration::from_secs(5)).map_err(|e| format!("idle keep-alive: {e}"))?;
    if !answered.starts_with("HTTP/1.1 404") {
        return Err(format!("expected the answer before the close, got {answered:?}"));
    }
    // An XMPP connection that never logs in.
    let s = TcpStream::connect(&served.xmpp).map_err(|e| e.to_string())?;
    let said = closed_within(s, Duration::from_secs(5)).map_err(|e| format!("silent XMPP connection: {e}"))?;
    if !said.contains("connection-timeout") {
        return Err(format!("expected a connection-timeout stream error, got {said:?}"));
    }
    // A flood past the server's 128 file descriptors, on both listeners, then gone.
    let mut flood = Vec::new();
    for _ in 0..200 {
        for addr in [&http, &served.xmpp] {
            if let Ok(s) = TcpStream::connect(addr) {
                flood.push(s);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    drop(flood);
    // Both listeners serve again (the server recovers within its backoff).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let http_ok =
            curl_json(&format!("{}/_gcmspec/v1/capabilities", served.url)).is_ok_and(|(status, _)| status == 200);
        let xmpp_ok = gcmspec::driver::xmpp::XmppClient::connect(
            served.xmpp.parse().map_err(|e| format!("{e}"))?,
            None,
            &served.sender_id,
            &served.server_key,
            Duration::from_secs(2),
        )
        .is_ok_and(|(_, auth)| auth == gcmspec::driver::xmpp::Auth::Success);
        if http_ok && xmpp_ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("after the flood: HTTP serving {http_ok}, XMPP logging in {xmpp_ok}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many trials `gcmspec run` makes against the in-process reference (profile fcm).
fn trial_count() -> usize {
    let catalog = std::sync::Arc::new(gcmspec::bundled::catalog().expect("bundled specs load"));
    let target: std::sync::Arc<dyn gcmspec::driver::Target> = std::sync::Arc::new(gcmspec::driver::InProcess::new(
        gcmspec::Reference::new(gcmspec::reference::Config::bundled()),
    ));
    let caps = std::sync::Arc::new(gcmspec::driver::Capabilities::probe(target.as_ref()).expect("probing"));
    let options = std::sync::Arc::new(gcmspec::harness::Options::new("fcm"));
    gcmspec::harness::cases(&catalog, target, caps, &options).len()
}

/// The trials of a rule, as `gcmspec run` names them (`rule::check`, `rule::check@xmpp`).
fn trials_of(rule: &str) -> Vec<String> {
    let catalog = std::sync::Arc::new(gcmspec::bundled::catalog().expect("bundled specs load"));
    let target: std::sync::Arc<dyn gcmspec::driver::Target> = std::sync::Arc::new(gcmspec::driver::InProcess::new(
        gcmspec::Reference::new(gcmspec::reference::Config::bundled()),
    ));
    let caps = std::sync::Arc::new(gcmspec::driver::Capabilities::probe(target.as_ref()).expect("probing"));
    let options = std::sync::Arc::new(gcmspec::harness::Options::new("fcm"));
    gcmspec::harness::cases(&catalog, target, caps, &options)
        .into_iter()
        .filter(|c| c.rule_id == rule)
        .map(|c| c.name)
        .collect()
}

/// The trials of `group.member-cap` its designed fault (one member past the cap) fails: the
/// probe on both endpoints (its round past the cap), the over-cap create and add, and the
/// random operations. The duplicate check never reaches past the cap, so it passes.
fn member_cap_failures() -> Vec<String> {
    ["add-past-cap-applies-nothing", "create-over-cap", "random-operations", "up-to-the-cap", "up-to-the-cap@client"]
        .map(String::from)
        .to_vec()
}

/// `serve --report DIR`: at shutdown, each sender's verdicts as JSON, JUnit and HTML.
fn serve_writes_verdict_reports() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("gcmspec-verdict-reports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut served = Served::start(&["--report", &dir.display().to_string()])?;
    let target =
        gcmspec::driver::HttpTarget::new(&served.url, std::time::Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let send = gcmspec::wire::HttpRequest::new("POST", "/fcm/send")
        .with_header("authorization", &format!("key={}", served.server_key))
        .with_json(&serde_json::json!({ "to": "somebody", "time_to_live": -1, "data": { "a": "b" } }));
    gcmspec::driver::Target::exchange(&target, &send).map_err(|e| e.to_string())?;
    if !served.terminate() {
        return Err("serve did not stop on SIGTERM".into());
    }
    let read = |ext: &str| {
        let path = dir.join(format!("{}.{ext}", served.sender_id));
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let json: serde_json::Value = serde_json::from_str(&read("json")?).map_err(|e| e.to_string())?;
    let ttl = json["results"].as_array().into_iter().flatten().find(|r| r["rule"] == "app.send.ttl-range");
    let ttl = ttl.ok_or("no app.send.ttl-range in the JSON report")?;
    if ttl["outcome"] != "failed" || ttl["graded"] != true || json["summary"]["graded_failures"] != 1 {
        return Err(format!("the JSON report: {json}"));
    }
    let junit = read("xml")?;
    if !junit.contains("classname=\"app.send.ttl-range\"") || !junit.contains("<failure") {
        return Err(format!("the JUnit report: {junit}"));
    }
    if !read("html")?.contains("time_to_live -1") {
        return Err("the HTML report does not show the violation".into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `rules --export DIR`: the bundled specs, to change a rule's parameters and read them back
/// with `--specs`; a second export into the same place is refused, not overwritten.
fn rules_export_round_trips() -> Result<(), String> {
    let dir = workdir()?;
    expect_in(&dir, &["rules", "--export", "mine"], 0, &["14 spec files", "--specs mine"])?;
    let lifetime = dir.join("mine/app-server-lifetime.toml");
    let text = std::fs::read_to_string(&lifetime).map_err(|e| e.to_string())?;
    let changed = text.replace("new_connection = \"in-flight\"", "new_connection = \"after-the-answer\"");
    if changed == text {
        return Err("no new_connection parameter to change in the exported specs".into());
    }
    std::fs::write(&lifetime, changed).map_err(|e| e.to_string())?;
    expect_in(&dir, &["lint", "--specs", "mine"], 0, &["23 app-server rules"])?;
    let json = expect_in(&dir, &["rules", "--specs", "mine", "--json"], 0, &["after-the-answer"])?;
    if json.matches("after-the-answer").count() < 2 {
        return Err("both stale-id rules read the changed parameter".into());
    }
    expect_in(&dir, &["rules", "--export", "mine"], 2, &["is there already"])?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("cli::serve-writes-verdict-reports", serve_writes_verdict_reports),
        trial("cli::rules-export-round-trips", rules_export_round_trips),
        trial("cli::run-in-process-passes", || expect(&["run"], 0, &["test result: ok"])),
        trial("cli::run-with-a-fault-fails-its-rule", || {
            expect(
                &["run", "--fault", "group.member-cap", "--no-snapshots"],
                1,
                &["group.member-cap::create-over-cap", "FAILED"],
            )
        }),
        trial("cli::run-with-no-trial-exits-2", || expect(&["run", "no-rule-is-called-this"], 2, &["no trial ran"])),
        trial("cli::lint-passes", || expect(&["lint"], 0, &["ok: "])),
        trial("cli::rules-tell-titles-readings-values-and-needs", || {
            let member_cap = |profile: &str| -> Result<serde_json::Value, String> {
                let (code, out) = gcmspec(&["rules", "--json", "--profile", profile])?;
                let json: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
                if code != 0 || json["schema"] != "gcmspec-rules/3" {
                    return Err(format!("exit {code}, schema {}", json["schema"]));
                }
                let rules = json["rules"].as_array().cloned().unwrap_or_default();
                rules.into_iter().find(|r| r["id"] == "group.member-cap").ok_or("no group.member-cap".into())
            };
            let fcm = member_cap("fcm")?;
            let old = member_cap("gcm-2013")?;
            if fcm["params"]["max_members"]["value"] != 20 || old["params"]["max_members"]["value"] != 10 {
                return Err(format!("max_members: fcm {}, gcm-2013 {}", fcm["params"], old["params"]));
            }
            if fcm["sources"][0]["title"] != "GCM User Notifications (notification keys), HTML source"
                || !fcm["reading"].as_str().is_some_and(|r| r.contains("4xx"))
            {
                return Err(format!("sources or reading: {fcm}"));
            }
            // Needs per trial: the XMPP run needs xmpp, a property what the property uses.
            expect(
                &["rules"],
                0,
                &[
                    "check send.group.success::every-member@xmpp-key (scenario; on xmpp-key; needs instances, xmpp)",
                    "check lifetime.stored-limit::stored-while-offline@two-senders (scenario; on two-senders; needs clock, connectivity, inbox, instances, senders)",
                    "limit: max_stored_messages in messages (probed at n-1, n, n+1; the text leaves n open)",
                    "The paths each rule covers:",
                    "not run, and why:",
                    "check xmpp.upstream.at-least-once::random-interleavings (property ccs-upstream, random from the seed; needs instances, upstream, xmpp)",
                    "throttle_initial_tokens = 20 (the server's to declare)",
                    "000_63227b9e89e6b167.txt: GCM User Notifications (notification keys), HTML source",
                ],
            )
        }),
        trial("cli::should-failures-fail-only-with-strict", || {
            let fault = ["run", "--no-snapshots", "--fault", "group.remove.last-deletes"];
            // Its check, on both endpoints.
            expect(&fault, 0, &["2 SHOULD, which fail only with --strict"])?;
            expect(&[&fault[..], &["--strict"]].concat(), 1, &["2 failed (2 graded)"])?;
            // The reference gives documented answers only: it passes --strict.
            expect(&["run", "--no-snapshots", "--strict"], 0, &[&format!("{} passed, 0 failed", trial_count())])
        }),
        trial("cli::baseline-ratchets", || {
            let file = std::env::temp_dir().join(format!("gcmspec-baseline-{}.txt", std::process::id()));
            let f = file.to_str().unwrap_or_default();
            // Adopt: the failures of today's run become the baseline, and the same run passes.
            expect(&["run", "--no-snapshots", "--fault", "group.member-cap", "--write-baseline", f], 1, &["graded"])?;
            expect(
                &["run", "--no-snapshots", "--fault", "group.member-cap", "--baseline", f],
                0,
                &["known failure(s), 0 new"],
            )?;
            // Something new breaks: the run fails and names it.
            let both =
                ["run", "--no-snapshots", "--fault", "group.member-cap", "--fault", "group.lookup", "--baseline", f];
            expect(&both, 1, &["2 new", "group.lookup::lookup-then-send fails and is not in the baseline"])?;
            // The listed failures are fixed: the run passes and says so.
            let result =
                expect(&["run", "--no-snapshots", "--baseline", f], 0, &["passes now: remove it from the baseline"]);
            let _ = std::fs::remove_file(&file);
            result
        }),
        trial("cli::json-and-junit-reports", || {
            let dir = std::env::temp_dir().join(format!("gcmspec-reports-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let (json, junit) = (dir.join("r.json"), dir.join("r.xml"));
            let args = [
                "run",
                "--no-snapshots",
                "--fault",
                "group.member-cap",
                "--json",
                json.to_str().unwrap_or_default(),
                "--junit",
                junit.to_str().unwrap_or_default(),
            ];
            expect(&args, 1, &["graded"])?;
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            let failed: Vec<&str> = report["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["outcome"] == "failed")
                .filter_map(|r| r["name"].as_str())
                .collect();
            if report["schema"] != "gcmspec-report/1"
                || !failed.iter().all(|n| n.starts_with("group.member-cap::"))
                || failed.is_empty()
            {
                return Err(format!("unexpected JSON report: schema {}, failed {failed:?}", report["schema"]));
            }
            let xml = std::fs::read_to_string(&junit).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_dir_all(&dir);
            let cases = xml.matches("<testcase ").count();
            if cases != report["results"].as_array().map_or(0, Vec::len)
                || !xml.contains("classname=\"group.member-cap\"")
                || !xml.contains("<failure ")
            {
                return Err(format!("unexpected JUnit report ({cases} test cases):\n{}", &xml[..xml.len().min(600)]));
            }
            Ok(())
        }),
        trial("cli::usage-error-exits-2", || {
            expect(
                &["run", "--fault", "no.such-rule"],
                2,
                &["no fault (a rule id, or rule-id:what) is named `no.such-rule`"],
            )?;
            expect(&["run", "--variant", "no-such-variant"], 2, &["no legal variant is named `no-such-variant`"])
        }),
        trial("cli::a-legal-variant-served-passes", || {
            // What the documents allow, differently from the reference: still a pass.
            let served = Served::start(&["--variant", "plain-text-errors", "--variant", "uuid-keys"])?;
            expect(&["run", "--target", &served.url], 0, &["test result: ok"])?;
            let (_, caps) = curl_json(&format!("{}/_gcmspec/v1/capabilities", served.url))?;
            let named = caps["variants"].as_array().cloned().unwrap_or_default();
            if named.len() != 2
                || !["plain-text-errors", "uuid-keys"].iter().all(|v| named.contains(&serde_json::json!(v)))
            {
                return Err(format!("capabilities do not name the variants: {caps}"));
            }
            Ok(())
        }),
        trial("cli::serve-sheds-what-a-peer-holds", serve_sheds_what_a_peer_holds),
        trial("cli::run-target-against-serve", || {
            let served = Served::start(&[])?;
            expect(&["run", "--target", &served.url], 0, &["test result: ok", &served.url])?;
            // Filtered, the summary counts what the filter chose: the rule's XMPP checks (no
            // --xmpp here) are unsupported, and every other check skipped, not unsupported.
            let rule = "lifetime.connected.delivered-now";
            let chosen = trials_of(rule).len();
            let xmpp = trials_of(rule).iter().filter(|t| t.contains("xmpp")).count();
            let summary = format!(
                "{} passed, 0 failed (0 graded), {xmpp} unsupported, {} skipped",
                chosen - xmpp,
                trial_count() - chosen
            );
            expect(&["run", "--target", &served.url, rule], 0, &[&summary])?;
            // Nothing chosen it can run: the run says what the checks lack, and the flag.
            expect(
                &["run", "--target", &served.url, "@xmpp"],
                2,
                &["no trial ran: every check chosen is unsupported by the target", "--xmpp HOST:PORT"],
            )
        }),
        trial("cli::run-target-with-xmpp-against-serve", || {
            let served = Served::start(&["--xmpp", "127.0.0.1:0"])?;
            let args = ["run", "--target", &served.url, "--xmpp", &served.xmpp, "xmpp"];
            let needles = [
                "send.group.partial::two-of-three-refuse@xmpp-key",
                "xmpp.receipt::after-the-device-connects",
                " 0 failed",
            ];
            expect(&args, 0, &needles)
        }),
        trial("cli::run-target-with-xmpp-tls-against-serve", || {
            let served = Served::start(&["--xmpp-tls", "127.0.0.1:0"])?;
            let args = [
                "run",
                "--target",
                &served.url,
                "--xmpp",
                &served.xmpp,
                "--xmpp-tls",
                "--xmpp-ca",
                &served.certificate,
                "xmpp",
            ];
            expect(
                &args,
                0,
                &["xmpp.auth.sasl-plain::server-key-accepted", "xmpp.receipt::after-the-device-connects", " 0 failed"],
            )
        }),
        trial("cli::run-help-is-gcmspecs-own", || {
            // It used to be libtest's: no program name, flags that do nothing here.
            let (code, text) = gcmspec(&["run", "--help"])?;
            let stray = ["--bench", "-Z ", "--logfile", "--show-output", "USAGE: [OPTIONS]", "Usefull"];
            match stray.iter().find(|s| text.contains(**s)) {
                Some(s) => Err(format!("run --help shows {s:?}:\n{text}")),
                None if code != 0 || !text.contains("Usage: gcmspec run") || !text.contains("Examples:") => {
                    Err(format!("exit {code}:\n{text}"))
                }
                None => Ok(()),
            }
        }),
        trial("cli::libtest-flags-that-mean-something-still-work", || {
            expect(
                &["run", "--format", "terse", "--skip", "@", "--exact", "group.member-cap::create-over-cap"],
                0,
                &["gcmspec: 1 passed, 0 failed"],
            )
        }),
        trial("cli::an-error-is-said-once", || {
            // A cause its error already quotes, or a URL said twice, used to be printed again.
            for (args, said) in [
                (vec!["run", "--specs", "/nonexistent-gcmspec-dir"], "No such file"),
                (vec!["run", "--target", "http://127.0.0.1:1"], "127.0.0.1:1/_gcmspec/v1/capabilities"),
            ] {
                let (code, text) = gcmspec(&args)?;
                if code != 2 || text.matches(said).count() != 1 {
                    return Err(format!(
                        "gcmspec {} exited {code}, saying {said:?} other than once:\n{text}",
                        args.join(" ")
                    ));
                }
            }
            Ok(())
        }),
        trial("cli::plain-xmpp-against-tls-says-try-xmpp-tls", || {
            // A TLS endpoint answers plain XML with an alert record, which used to read only
            // as "malformed XML" (and then failed every XMPP check): one error, before any.
            let served = Served::start(&["--xmpp-tls", "127.0.0.1:0"])?;
            let args = ["run", "--target", &served.url, "--xmpp", &served.xmpp, "xmpp.auth.sasl-plain"];
            expect(&args, 2, &["the XMPP endpoint", "the server answered with TLS: try --xmpp-tls"])
        }),
        trial("cli::run-target-against-faulty-serve", || {
            let served = Served::start(&["--fault", "send.group.partial"])?;
            expect(&["run", "--target", &served.url], 1, &["send.group.partial::two-of-three-refuse", "FAILED"])
        }),
        trial("cli::no-control-api-marks-rules-unsupported", || {
            let served = Served::start(&["--without-control-api"])?;
            let args =
                ["run", "--target", &served.url, "--api-key", &served.server_key, "--sender-id", &served.sender_id];
            expect(&args, 0, &["[unsupported]", "group.request.malformed::not-json", "test result: ok"])
        }),
        trial("cli::failures-are-saved-as-replays-that-reproduce-them", || {
            let dir = workdir()?;
            let faulty = ["run", "--no-snapshots", "--fault", "group.member-cap", "--fault", "lifetime.ttl.range"];
            let text = expect_in(
                &dir,
                &faulty,
                1,
                &["replay: gcmspec replay gcmspec-replays/", "in-process: to follow it with curl"],
            )?;
            let mut files: Vec<String> = std::fs::read_dir(dir.join("gcmspec-replays"))
                .map_err(|e| e.to_string())?
                .flatten()
                .map(|e| format!("gcmspec-replays/{}", e.file_name().to_string_lossy()))
                .collect();
            files.sort();
            let mut want: Vec<String> =
                member_cap_failures().iter().map(|c| format!("gcmspec-replays/group.member-cap__{c}.json")).collect();
            // The designed fault of lifetime.ttl.range (any time_to_live accepted) fails each of
            // its checks, and nothing else: the dry run of an invalid send is held to the real
            // send's answer, which this server gives alike.
            let unchecked_ttl = trials_of("lifetime.ttl.range");
            want.extend(unchecked_ttl.into_iter().map(|t| format!("gcmspec-replays/{}.json", t.replace("::", "__"))));
            want.sort();
            if files != want {
                return Err(format!("replay files {files:?}, expected {want:?}\n{text}"));
            }
            fn replay<'a>(files: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
                let mut args = vec!["replay"];
                args.extend(files.iter().map(String::as_str));
                args.extend_from_slice(extra);
                args
            }
            // Against the same faults every failure comes back; the property replays its
            // shrunk sequence, not a new search.
            let still = expect_in(
                &dir,
                &replay(&files, &["--fault", "group.member-cap", "--fault", "lifetime.ttl.range"]),
                1,
                &["still fails: group.member-cap::random-operations", "  1. Create("],
            )?;
            if still.matches("still fails: ").count() != want.len() {
                return Err(format!("expected {} failures to reproduce:\n{still}", want.len()));
            }
            // Against a server without them, each passes; over HTTP and XMPP as well.
            let served = Served::start(&["--xmpp", "127.0.0.1:0"])?;
            let fixed = expect_in(
                &dir,
                &replay(&files, &["--target", &served.url, "--xmpp", &served.xmpp]),
                0,
                &["passes now: lifetime.ttl.range::at-the-bound"],
            )?;
            if fixed.matches("passes now: ").count() != want.len() {
                return Err(format!("expected {} passes:\n{fixed}", want.len()));
            }
            // A server that lacks what a replay needs is told so, not failed.
            let bare = Served::start(&["--without-control-api"])?;
            expect_in(
                &dir,
                &[
                    "replay",
                    &files[0],
                    "--target",
                    &bare.url,
                    "--api-key",
                    &bare.server_key,
                    "--sender-id",
                    &bare.sender_id,
                ],
                2,
                &[
                    "cannot replay group.member-cap::add-past-cap-applies-nothing",
                    "the target does not offer: inbox, instances",
                ],
            )?;
            // The curl form addresses the given server and carries the exact requests.
            let curl = expect_in(
                &dir,
                &[
                    "replay",
                    "--curl",
                    "gcmspec-replays/lifetime.ttl.range__at-the-bound.json",
                    "--target",
                    "http://127.0.0.1:4000",
                ],
                0,
                &["curl -sS -X POST http://127.0.0.1:4000/fcm/send", "\"time_to_live\":2419201"],
            )?;
            // A later clean run removes the stale replays.
            expect_in(&dir, &["run", "--no-snapshots", "group.member-cap"], 0, &["test result: ok"])?;
            let left = std::fs::read_dir(dir.join("gcmspec-replays")).map_err(|e| e.to_string())?.count();
            let _ = std::fs::remove_dir_all(&dir);
            if left != 0 {
                return Err(format!("{left} stale replay file(s) left\n{curl}"));
            }
            Ok(())
        }),
        trial("cli::diff-against-an-identical-server-finds-nothing", || {
            // Another process, another seed (so other keys and ids), over HTTP and XMPP: after
            // normalization every exchange of every check and sampled sequence is the same.
            let served = Served::start(&["--xmpp", "127.0.0.1:0"])?;
            expect(
                &["diff", "--target", &served.url, "--xmpp", &served.xmpp],
                0,
                &[&format!("{} checks compared", trial_count()), &format!("{} identical, 0 differ", trial_count())],
            )
        }),
        trial("cli::diff-shows-where-a-faulty-server-answers-differently", || {
            let served = Served::start(&["--fault", "lifetime.ttl.range"])?;
            expect(
                &["diff", "--target", &served.url, "lifetime."],
                1,
                &[
                    "DIFFERS lifetime.ttl.range::at-the-bound (reference passed, target failed)",
                    "matches none of the accepted outcomes",
                    // Over HTTP: the target has no XMPP endpoint here.
                    &format!(
                        "{} differ",
                        trials_of("lifetime.ttl.range").iter().filter(|t| !t.contains("xmpp")).count()
                    ),
                ],
            )
        }),
        trial("cli::diff-needs-something-to-compare", || {
            expect(&["diff"], 2, &["diff compares the reference with --target URL"])
        }),
        trial("cli::progress-bar-selects-and-reports-as-libtest", || {
            // Forced (the test's stderr is no terminal): the same filter flags, the same summary.
            let args = ["run", "--progress", "always", "--no-snapshots", "--fault", "group.member-cap"];
            let (total, failing) = (trial_count(), member_cap_failures().len());
            expect(
                &args,
                1,
                &[
                    "FAILED group.member-cap::create-over-cap",
                    &format!("/{total} checks"),
                    &format!(
                        "test result: FAILED. {} passed; {failing} failed; 0 ignored; 0 measured; 0 filtered out",
                        total - failing
                    ),
                ],
            )?;
            let filtered = [&args[..], &["group.member-cap"]].concat();
            expect(
                &filtered,
                1,
                &[&format!(
                    "test result: FAILED. 1 passed; {failing} failed; 0 ignored; 0 measured; {} filtered out",
                    total - failing - 1
                )],
            )
        }),
        trial("cli::a-bad-replay-file-is-a-clear-error", || {
            let dir = workdir()?;
            std::fs::write(dir.join("bad.json"), "{\"schema\": \"gcmspec-replay/1\", \"name\": 3}")
                .map_err(|e| e.to_string())?;
            std::fs::write(dir.join("other.json"), "{\"schema\": \"something-else/9\"}").map_err(|e| e.to_string())?;
            expect_in(&dir, &["replay", "bad.json"], 2, &["bad.json is not a replay file: invalid type"])?;
            expect_in(&dir, &["replay", "missing.json"], 2, &["cannot read missing.json"])?;
            let result = expect_in(&dir, &["replay", "other.json"], 2, &["other.json is not a replay file"]);
            let _ = std::fs::remove_dir_all(&dir);
            result.map(drop)
        }),
        trial("cli::a-changed-response-shape-shows-as-a-snapshot-diff", || {
            // Snapshots in which the server once said something else: the run fails on the
            // snapshot alone, and the reports carry the difference.
            let dir = workdir()?;
            let snaps = dir.join("snaps");
            std::fs::create_dir_all(&snaps).map_err(|e| e.to_string())?;
            let name = "client.create.refused__create-refused.snap";
            let committed =
                std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots").join(name))
                    .map_err(|e| e.to_string())?;
            let edited = committed.replace("add creates the group", "add makes the group");
            std::fs::write(snaps.join(name), edited).map_err(|e| e.to_string())?;
            let args =
                ["run", "--snapshots", "snaps", "--json", "r.json", "--exact", "client.create.refused::create-refused"];
            expect_in(&dir, &args, 1, &["the normalized responses differ from snapshot"])?;
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            let diff = report["results"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["name"] == "client.create.refused::create-refused")
                .and_then(|r| r["snapshot_diff"].as_str())
                .unwrap_or_default()
                .to_string();
            let _ = std::fs::remove_dir_all(&dir);
            if !(diff.contains("-  \"error\": \"the client-side endpoint supports only \\\"add\\\" and \\\"remove\\\": add makes the group\"")
                && diff.contains("+  \"error\": \"the client-side endpoint supports only \\\"add\\\" and \\\"remove\\\": add creates the group\""))
            {
                return Err(format!("unexpected snapshot_diff:\n{diff}"));
            }
            Ok(())
        }),
        trial("cli::replay-files-of-schema-1-keep-running", || {
            // Written by an earlier gcmspec (tests/data/replays): a scenario and a property's
            // shrunk sequence. They must keep running, so the format only grows compatibly.
            let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/replays");
            let files: Vec<String> = ["lifetime.ttl.range__bounds.json", "group.member-cap__random-operations.json"]
                .iter()
                .map(|f| data.join(f).display().to_string())
                .collect();
            let args: Vec<&str> = ["replay"].into_iter().chain(files.iter().map(String::as_str)).collect();
            expect(
                &args,
                0,
                &["passes now: lifetime.ttl.range::bounds", "passes now: group.member-cap::random-operations"],
            )?;
            let faulty = [&args[..], &["--fault", "lifetime.ttl.range", "--fault", "group.member-cap"]].concat();
            expect(
                &faulty,
                1,
                &[
                    "still fails: lifetime.ttl.range::bounds",
                    "still fails: group.member-cap::random-operations",
                    "  3. Add(",
                ],
            )
        }),
        trial("cli::unreachable-target-exits-2", || {
            expect(&["run", "--target", "http://127.0.0.1:9"], 2, &["cannot reach"])
        }),
    ]
}
