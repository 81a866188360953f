//! The HTML report as a person sees it: `gcmspec run --html` against faulty servers, opened
//! in headless Chromium (Debian's package, driven by npm's playwright-core; `.ci/run` installs
//! both), compared with the JSON report of the same run and with the spec's quotes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::Trial;
use serde_json::Value;

use crate::trial;

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Runs gcmspec in `dir` and returns the JSON report it wrote.
fn run_with_reports(dir: &Path, args: &[&str], code: i32) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_gcmspec"))
        .args(["run", "--no-snapshots", "--html", "r.html", "--json", "r.json"])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.code() != Some(code) {
        return Err(format!(
            "gcmspec run {} exited {:?}, expected {code}:\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = std::fs::read_to_string(dir.join("r.json")).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// What the browser saw of `dir/r.html`.
fn open_in_browser(dir: &Path) -> Result<Value, String> {
    let out = Command::new("node")
        .arg("html-report.mjs")
        .arg(dir.join("r.html"))
        .arg(dir.join("r.png"))
        .current_dir(interop_dir())
        .env("CHROMIUM", chromium())
        .output()
        .map_err(|e| format!("running node: {e}"))?;
    if !out.status.success() {
        return Err(format!("html-report.mjs failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Compares what the browser showed with the JSON report of the same run.
fn compare(seen: &Value, report: &Value) -> Result<(), String> {
    let catalog = gcmspec::bundled::catalog().map_err(|e| e.to_string())?;
    let fail = |what: String| Err(format!("{what}\nthe browser saw: {seen:#}"));
    if seen["errors"].as_array().is_none_or(|e| !e.is_empty())
        || seen["fetched"].as_array().is_none_or(|f| !f.is_empty())
    {
        return fail("the page had script errors or loaded something besides itself".into());
    }
    let summary = &report["summary"];
    let graded = summary["graded_failures"].as_u64().unwrap_or(0);
    let verdict = if graded > 0 { format!("FAIL: {graded} graded failure") } else { "PASS".into() };
    if !seen["verdict"].as_str().is_some_and(|v| v.starts_with(&verdict)) {
        return fail(format!("the verdict should read {verdict:?}"));
    }
    let tiles: Vec<&str> = seen["tiles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for field in ["passed", "failed", "unsupported"] {
        let want = format!("{} {field}", summary[field]);
        if !tiles.contains(&want.as_str()) {
            return fail(format!("no tile {want:?}"));
        }
    }
    // Each rule's row shows the rule's outcome and names its failed checks.
    let mut outcomes: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in report["results"].as_array().into_iter().flatten() {
        let (rule, name) = (r["rule"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or(""));
        let check = name.strip_prefix(&format!("{rule}::")).unwrap_or(name).to_string();
        outcomes.entry(rule.to_string()).or_default().push((check, r["outcome"].as_str().unwrap_or("").into()));
    }
    let rule_outcome = |checks: &[(String, String)]| {
        ["failed", "passed", "unsupported", "skipped"]
            .into_iter()
            .find(|o| checks.iter().any(|(_, c)| c == o))
            .unwrap_or("skipped")
    };
    let rows = seen["rows"].as_array().cloned().unwrap_or_default();
    if rows.len() != outcomes.len() {
        return fail(format!("{} rows for {} rules", rows.len(), outcomes.len()));
    }
    for row in &rows {
        let rule = row["rule"].as_str().unwrap_or("");
        let Some(checks) = outcomes.get(rule) else { return fail(format!("a row for unknown rule {rule}")) };
        if row["outcome"] != rule_outcome(checks) || row["visible"] != true {
            return fail(format!("row {rule}: shows {}, the report says {}", row["outcome"], rule_outcome(checks)));
        }
        let failed: BTreeSet<&str> = checks.iter().filter(|(_, o)| o == "failed").map(|(c, _)| c.as_str()).collect();
        let shown: BTreeSet<&str> =
            row["failed_checks"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if failed != shown {
            return fail(format!("row {rule}: failed checks shown {shown:?}, the report says {failed:?}"));
        }
    }
    let rules_with = |o: &str| -> BTreeSet<String> {
        outcomes.iter().filter(|(_, c)| rule_outcome(c) == o).map(|(r, _)| r.clone()).collect()
    };
    let as_set = |v: &Value| -> BTreeSet<String> {
        v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
    };
    if as_set(&seen["filter_failed"]) != rules_with("failed") {
        return fail("the `failed` filter should leave exactly the failed rules".into());
    }
    if as_set(&seen["filter_unsupported"]) != rules_with("unsupported") {
        return fail("the `unsupported` filter should leave exactly the unsupported rules".into());
    }
    if seen["filter_all"].as_u64() != Some(outcomes.len() as u64) {
        return fail("`all rules` should show every row again".into());
    }
    // A failed rule opens by default at its quote, its failure and how to reproduce it.
    let details = seen["failed_details"].as_array().cloned().unwrap_or_default();
    if as_set(&Value::Array(details.iter().map(|d| d["rule"].clone()).collect())) != rules_with("failed") {
        return fail("every failed rule, and only those, should have open failure details".into());
    }
    for d in &details {
        let rule = catalog.rule(d["rule"].as_str().unwrap_or("")).ok_or("a detail for an unknown rule")?;
        let quote = &rule.sources[0].quote;
        let ok = d["open"] == true
            && d["quote"].as_str() == Some(quote.as_str())
            && d["message"].as_str().is_some_and(|m| !m.is_empty())
            && d["replay"].as_str().is_some_and(|r| r.contains("gcmspec replay gcmspec-replays/"))
            && d["curl_folded"] == true;
        let property = rule.checks.iter().all(|c| matches!(c.kind, gcmspec::catalog::CheckKind::Property { .. }));
        // Properties that use only XMPP make no HTTP request to show as curl.
        let reproduced = property
            || (d["curl"].as_str().is_some_and(|c| c.contains("curl -sS -X "))
                && d["exchanges"].as_u64().is_some_and(|n| n > 0));
        if !ok || !reproduced {
            return fail(format!("the details of failed rule {} are incomplete", rule.id));
        }
    }
    let clicked = &seen["clicked"];
    if let Some(rule) = clicked["rule"].as_str() {
        let quote = catalog.rule(rule).map(|r| r.sources[0].quote.clone());
        if clicked["open"] != true || clicked["in_view"] != true || clicked["quote"].as_str() != quote.as_deref() {
            return fail(format!("clicking {rule} in the matrix should open it at its quote"));
        }
    }
    Ok(())
}

fn html_report_in_chromium() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("gcmspec-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Faults in the in-process reference: failed rules, with property and scenario failures.
    let faulty = ["--fault", "group.member-cap", "--fault", "lifetime.ttl.range", "--fault", "send.group.partial"];
    let report = run_with_reports(&dir, &faulty, 1)?;
    compare(&open_in_browser(&dir)?, &report)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn html_report_of_a_server_without_control_api() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("gcmspec-html-bare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    let runtime = runtime.map_err(|e| e.to_string())?;
    // A third-party-like server: public protocol only, one rule broken.
    let catalog = gcmspec::bundled::catalog().map_err(|e| e.to_string())?;
    let mut config = gcmspec::reference::Config::from_profile(&catalog.profiles["fcm"]).map_err(|e| e.to_string())?;
    config.control_api = false;
    config.faults = gcmspec::reference::Faults::new(["send.request.malformed".parse().map_err(|e| format!("{e}"))?]);
    let server = runtime.block_on(gcmspec::Reference::start_with(config)).map_err(|e| e.to_string())?;
    let sender = server.reference().with_model(|m| m.create_sender());
    let args = ["--target", &server.url(), "--api-key", &sender.server_key, "--sender-id", &sender.sender_id];
    let report = run_with_reports(&dir, &args, 1)?;
    if report["summary"]["unsupported"].as_u64().unwrap_or(0) == 0 {
        return Err("a server without the control API should leave rules unsupported".into());
    }
    compare(&open_in_browser(&dir)?, &report)?;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Needs Chromium and playwright-core: ignored outside CI without them, required in CI.
fn browser_trial(name: &str, f: fn() -> Result<(), String>) -> Trial {
    let ready = chromium().is_file() && interop_dir().join("node_modules/playwright-core").is_dir();
    let t = trial(name, move || {
        if !ready {
            return Err(format!(
                "needs {} (Debian's chromium) and npm's playwright-core in tests/interop: .ci/run installs both",
                chromium().display()
            ));
        }
        f()
    });
    t.with_ignored_flag(!ready && std::env::var_os("CI").is_none())
}

pub fn trials() -> Vec<Trial> {
    vec![
        browser_trial("report::html-in-chromium::faulty-reference", html_report_in_chromium),
        browser_trial(
            "report::html-in-chromium::server-without-control-api",
            html_report_of_a_server_without_control_api,
        ),
    ]
}
