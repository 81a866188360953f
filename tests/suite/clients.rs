//! Client libraries judged through their drivers (`gcmspec client`, docs/client-drivers.md).
//!
//! - `clients::contract::*`: the project's reference client behind the driver contract
//!   (`gcmspec reference-client`), on the virtual clock: correct, it passes every case a
//!   library can break; with each case's fault, it fails that case on exactly that rule.
//! - `clients::library::*`: node-gcm, python-gcm, the slixmpp CCS sample and the reference
//!   client, each run as a user runs it (`gcmspec client --driver ... --expect FILE`, the wall
//!   clock), held to the verdicts recorded in tests/interop/drivers/expected/.
//! - `clients::the-matrix-is-generated`: docs/client-matrix.md is what `gcmspec matrix` makes
//!   of those files.
//! - `clients::broken-drivers::*`: a driver that never says hello, speaks another contract,
//!   hangs, never reads its stdin, exits or answers what was not asked is said in a line,
//!   the run ends within its timeouts, and never exits 0.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gcmspec::appserver::cases::Env;
use gcmspec::appserver::driven_library::DriverCommand;
use gcmspec::appserver::library_suite::LibrarySuite;
use gcmspec::driver::{Capabilities, Control, HttpTarget, Target};
use gcmspec::reference::{ClockKind, Config, Reference, RunningReference};
use gcmspec::verdicts::Rulebook;
use libtest_mimic::Trial;

use crate::trial;

const BIN: &str = env!("CARGO_BIN_EXE_gcmspec");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn expected(name: &str) -> PathBuf {
    root().join("tests/interop/drivers/expected").join(format!("{name}.json"))
}

/// A served reference on the virtual clock, and the suite of its cases for a driver.
struct Served {
    _running: RunningReference,
    target: Arc<dyn Target>,
    caps: Capabilities,
    env: Vec<(String, String)>,
}

fn suite(served: &Served, command: String) -> Result<LibrarySuite, String> {
    let book = Rulebook::bundled();
    let driver = DriverCommand::new(command, served.env.clone(), Duration::from_secs(30));
    let sender = Control { target: &*served.target, caps: &served.caps }.new_sender().map_err(|e| e.to_string())?;
    let hello = driver.hello(&sender)?;
    let env = Env { target: served.target.clone(), caps: served.caps.clone(), numbers: book.numbers.clone() };
    Ok(LibrarySuite { env, driver, hello, book })
}

fn contract_trials(runtime: &tokio::runtime::Runtime) -> Vec<Trial> {
    let config = Config { clock: ClockKind::Virtual, ..Config::bundled() };
    let running = runtime.block_on(Reference::start_with(config)).expect("binding 127.0.0.1:0");
    let url = running.url();
    let xmpp = running.xmpp_address();
    let target = HttpTarget::new(&url, HttpTarget::DEFAULT_TIMEOUT).expect("a loopback URL").with_xmpp(xmpp);
    let target: Arc<dyn Target> = Arc::new(target);
    let caps = Capabilities::probe(&*target).expect("the reference's capabilities");
    let env = vec![
        ("GCMSPEC_HTTP_URL".to_string(), url.clone()),
        ("GCMSPEC_XMPP_HOST".to_string(), xmpp.ip().to_string()),
        ("GCMSPEC_XMPP_PORT".to_string(), xmpp.port().to_string()),
        ("GCMSPEC_CLOCK".to_string(), "virtual".to_string()),
    ];
    let served = Arc::new(Served { _running: running, target, caps, env });
    let correct = match suite(&served, format!("{BIN} reference-client")) {
        Ok(s) => Arc::new(s),
        Err(e) => return vec![trial("clients::contract::the-reference-client-starts", move || Err(e))],
    };
    let mut out = Vec::new();
    for case in correct.cases() {
        let (s, c) = (correct.clone(), case.clone());
        out.push(trial(&format!("clients::contract::{}::correct", case.name), move || {
            s.judge(&c).result.map_err(|e| format!("the correct reference client failed:\n{e}"))
        }));
        let (served, c) = (served.clone(), case.clone());
        out.push(trial(&format!("clients::contract::{}::fault {}", case.name, case.fault.name()), move || {
            let broken = suite(&served, format!("{BIN} reference-client --fault {}", c.fault.name()))?;
            match broken.judge(&c).result {
                Ok(()) => Err(format!("the fault {} passed", c.fault.name())),
                Err(e) if e.starts_with(&format!("{} violated:", c.rule)) && !e.contains("also violated") => Ok(()),
                Err(e) => Err(format!("the fault {} should fail {} alone:\n{e}", c.fault.name(), c.rule)),
            }
        }));
    }
    out
}

/// `gcmspec client --driver COMMAND --expect FILE`, as a user runs it.
fn held_to_its_verdicts(name: &str, command: &str, needs: Option<&Path>) -> Trial {
    let installed = needs.is_none_or(Path::exists);
    let (name, command, missing) =
        (name.to_string(), command.to_string(), needs.map(|p| p.display().to_string()).unwrap_or_default());
    let t = trial(&format!("clients::library::{name}"), move || {
        if !installed {
            return Err(format!("{missing} is not there: .ci/run installs the interop clients"));
        }
        let out = Command::new(BIN)
            .args(["client", "--driver", &command, "--expect"])
            .arg(expected(&name))
            .args(["--no-replays", "--progress", "never", "-q", "--timeout", "15"])
            .current_dir(root())
            .env("PATH", format!("{}:{}", Path::new(BIN).parent().unwrap().display(), std::env::var("PATH").unwrap()))
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        match out.status.code() {
            Some(0) => Ok(()),
            code => Err(format!(
                "gcmspec client --driver {command:?} --expect exited {code:?}:\n{}",
                text.lines().filter(|l| l.starts_with("gcmspec") || l.starts_with("  ")).collect::<Vec<_>>().join("\n")
            )),
        }
    });
    t.with_ignored_flag(!installed && std::env::var_os("CI").is_none())
}

fn the_matrix_is_generated() -> Result<(), String> {
    let files: Vec<String> = ["node-gcm", "python-gcm", "slixmpp", "gcmspec-reference-client"]
        .iter()
        .map(|n| format!("tests/interop/drivers/expected/{n}.json"))
        .collect();
    // Made afresh (on stdout), compared with the committed page.
    let made = Command::new(BIN).arg("matrix").args(&files).current_dir(root()).output().map_err(|e| e.to_string())?;
    if !made.status.success() {
        return Err(format!("gcmspec matrix: {}", String::from_utf8_lossy(&made.stderr)));
    }
    let fresh = String::from_utf8_lossy(&made.stdout);
    let committed = std::fs::read_to_string(root().join("docs/client-matrix.md")).map_err(|e| e.to_string())?;
    if fresh != committed {
        return Err(format!(
            "docs/client-matrix.md is not what `gcmspec matrix {} --out docs/client-matrix.md` makes: run it",
            files.join(" ")
        ));
    }
    Ok(())
}

/// README's example figures for node-gcm are its recorded outcomes.
fn readme_figures() -> Result<(), String> {
    let readme = std::fs::read_to_string(root().join("README.md")).map_err(|e| e.to_string())?;
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(expected("node-gcm")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let count = |o: &str| recorded["outcomes"].as_object().map_or(0, |m| m.values().filter(|v| *v == o).count());
    let line = format!(
        "node-gcm {}: {} passed, {} failed",
        recorded["version"].as_str().unwrap_or_default(),
        count("passed"),
        count("failed")
    );
    let unsupported = format!("{} not exercised, {} unsupported", count("not-exercised"), count("unsupported"));
    if !readme.contains(&line) || !readme.contains(&unsupported) {
        return Err(format!("README's node-gcm example should say {line:?} and {unsupported:?}"));
    }
    Ok(())
}

/// A driver that breaks the contract is said, and the run ends within its timeouts.
fn broken_driver(
    script: String,
    rule: &'static str,
    code: i32,
    said: &'static str,
) -> impl FnOnce() -> Result<(), String> {
    move || {
        let started = Instant::now();
        let out = Command::new(BIN)
            .args(["client", "--driver", &script, "--timeout", "1", "--no-replays", "--progress", "never", "-q"])
            .args([rule])
            .current_dir(std::env::temp_dir())
            .output()
            .map_err(|e| e.to_string())?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.code() != Some(code) || !text.contains(said) {
            return Err(format!("exit {:?}, expected {code} saying {said:?}:\n{text}", out.status.code()));
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("took {:?}", started.elapsed()));
        }
        Ok(())
    }
}

pub fn trials(runtime: &tokio::runtime::Runtime) -> Vec<Trial> {
    let mut out = contract_trials(runtime);
    let venv = root().join("tests/interop/.venv/bin/python");
    let node = root().join("tests/interop/node_modules/node-gcm");
    out.push(held_to_its_verdicts("node-gcm", "node tests/interop/drivers/node-gcm.js", Some(&node)));
    let py = "tests/interop/.venv/bin/python tests/interop/drivers";
    out.push(held_to_its_verdicts("python-gcm", &format!("{py}/python-gcm.py"), Some(&venv)));
    out.push(held_to_its_verdicts("slixmpp", &format!("{py}/slixmpp-ccs.py"), Some(&venv)));
    out.push(held_to_its_verdicts("gcmspec-reference-client", "gcmspec reference-client", None));
    out.push(trial("clients::the-matrix-is-generated", the_matrix_is_generated));
    out.push(trial("clients::readme-figures", readme_figures));
    let hello = r#"echo '{"contract":"gcmspec-driver/1","library":"x","version":"1","supports":["http"]}'"#;
    let multicast = hello.replace(r#"["http"]"#, r#"["http","multicast"]"#);
    let (must, should, large) =
        ("app.send.ttl-range@token", "app.retry.after@token", "app.send.registration-ids-count@multicast");
    let broken = [
        ("no-hello", "sleep 30".to_string(), must, 2, "gave no hello line within 1 s"),
        (
            "another-contract",
            r#"echo '{"contract":"gcmspec-driver/9","library":"x","version":"1"}'; cat >/dev/null"#.to_string(),
            must,
            2,
            "gcmspec-driver/9",
        ),
        ("hangs", format!("{hello}; sleep 30"), must, 1, "gave no reply to request 1 within 1 s"),
        // A SHOULD rule's case fails only with --strict, but a driver that broke down is never
        // a clean run.
        ("hangs-on-a-should", format!("{hello}; sleep 30"), should, 1, "the driver broke down in 1 case"),
        // A request larger than a pipe holds, to a driver that never reads: the write must not
        // hold the run past the reply's deadline.
        ("never-reads-a-large-request", format!("{multicast}; sleep 30"), large, 1, "gave no reply to request 1"),
        ("exits", format!("{hello}; read line; echo oops >&2; exit 3"), must, 1, "exited (exit status: 3)"),
        (
            "answers-another-id",
            format!("{hello}; read line; echo 'a log line'; echo '{{\"id\": 99}}'; sleep 30"),
            must,
            1,
            "it replied to request 99, which was not asked",
        ),
        (
            "prints-broken-json",
            format!("{hello}; read line; echo '{{broken json'; sleep 30"),
            must,
            1,
            "gave no reply to request 1 within 1 s",
        ),
    ];
    for (name, script, rule, code, said) in broken {
        out.push(trial(&format!("clients::broken-drivers::{name}"), broken_driver(script, rule, code, said)));
    }
    out
}
