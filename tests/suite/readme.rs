//! README's walk-through gives figures; these trials run what it shows and hold it to them
//! (the selftest line is held by `selftest::fcm::every-fault-is-caught`).

use libtest_mimic::Trial;

use crate::cli::{Served, gcmspec};
use crate::trial;

const README: &str = include_str!("../../README.md");

/// The number README puts between `before` and `after` (as in "the other 323 trials pass").
fn stated(before: &str, after: &str) -> Result<usize, String> {
    let at = README.find(after).ok_or_else(|| format!("README no longer says {after:?}"))?;
    let head = &README[..at];
    let digits = head.chars().rev().take_while(char::is_ascii_digit).count();
    let (rest, number) = head.split_at(head.len() - digits);
    if !rest.ends_with(before) {
        return Err(format!("README: expected {before:?} before the count of {after:?}"));
    }
    number.parse().map_err(|_| format!("no count before {after:?} in README"))
}

/// The `gcmspec: N passed, N failed ...` line of a run.
fn counts(out: &str) -> Option<(usize, usize, usize)> {
    let line = out.lines().rev().find(|l| l.starts_with("gcmspec: ") && l.contains(" passed"))?;
    let num = |word: &str| -> Option<usize> {
        let i = line.find(word)?;
        line[..i].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some((num(" passed")?, num(" failed")?, num(" unsupported")?))
}

fn walk_through() -> Result<(), String> {
    let served =
        Served::start(&["--xmpp", "127.0.0.1:0", "--fault", "group.member-cap", "--fault", "lifetime.ttl.range"])?;
    let (_, out) = gcmspec(&["run", "--target", &served.url, "--xmpp", &served.xmpp, "--no-replays"])?;
    let (passed, failed, _) = counts(&out).ok_or_else(|| format!("no summary line in:\n{out}"))?;
    let other = stated("the other ", " trials pass")?;
    if passed != other || failed != 17 {
        return Err(format!(
            "the faulted run gave {passed} passed, {failed} failed; README says 17 fail and {other} pass"
        ));
    }
    let (_, out) = gcmspec(&["diff", "--target", &served.url, "--xmpp", &served.xmpp])?;
    let line =
        out.lines().find(|l| l.starts_with("gcmspec diff: ")).ok_or_else(|| format!("no diff line in:\n{out}"))?;
    let compared = stated("# gcmspec diff: ", " checks compared")?;
    let identical = stated("seed 0): ", " identical")?;
    let want = format!("{compared} checks compared (8 sequences per property, seed 0): {identical} identical,");
    if !line.contains(&want) {
        return Err(format!("README's diff figures ({want}) are not the run's: {line}"));
    }
    Ok(())
}

fn bare_server() -> Result<(), String> {
    let served = Served::start(&["--without-control-api", "--fault", "send.request.malformed"])?;
    let (_, out) = gcmspec(&[
        "run",
        "--target",
        &served.url,
        "--api-key",
        &served.server_key,
        "--sender-id",
        &served.sender_id,
        "--no-replays",
    ])?;
    let (passed, failed, unsupported) = counts(&out).ok_or_else(|| format!("no summary line in:\n{out}"))?;
    let other = stated("The other ", " trials are `unsupported`")?;
    if passed + failed != 6 || failed != 1 || unsupported != other {
        return Err(format!(
            "the bare server gave {passed} passed, {failed} failed, {unsupported} unsupported; README says six run, one fails, {other} unsupported"
        ));
    }
    Ok(())
}

/// The fake section's example: an app server that retries a 503 after 1 s, when Retry-After
/// said 10, gets the verdicts README shows; and README counts the app-server rules right.
fn fake_server_figures() -> Result<(), String> {
    use gcmspec::reference::{Config, Reference};
    use gcmspec::wire::HttpRequest;
    use serde_json::json;
    let rules = gcmspec::verdicts::Rulebook::bundled().rules.len();
    let stated_rules = stated("graded\nagainst the ", " app-server rules (`gcmspec rules")?;
    if rules != stated_rules {
        return Err(format!("README says {stated_rules} app-server rules; there are {rules}"));
    }
    let reference = Reference::new(Config::bundled());
    let sender = reference.create_sender().map_err(|e| e.to_string())?;
    let key = format!("key={}", sender.server_key);
    let control = |path: &str, body: serde_json::Value| {
        let req = HttpRequest::new("POST", &format!("/_gcmspec/v1/{path}"))
            .with_header("authorization", &key)
            .with_json(&body);
        reference.handle(&req)
    };
    control(
        &format!("senders/{}/script", sender.sender_id),
        json!({"kind": "status", "status": 503, "retry_after": 10}),
    );
    let phone = control("instances", json!({"sender_ids": [sender.sender_id]})).body_json().unwrap_or_default()
        ["registration_id"]
        .clone();
    let send = || {
        let req = HttpRequest::new("POST", "/fcm/send")
            .with_header("authorization", &key)
            .with_json(&json!({"to": phone, "data": {"n": "1"}}));
        reference.handle(&req).status
    };
    send();
    control(&format!("senders/{}/clock", sender.sender_id), json!({"advance_ms": 1000}));
    send();
    let v = reference.verdicts(&sender.sender_id).ok_or("no verdicts")?.to_json();
    let summary = &v["summary"];
    let line = format!(
        "\"summary\":{{\"passed\":{},\"violated\":{},\"not_exercised\":{},\"must_violated\":{}}}",
        summary["passed"], summary["violated"], summary["not_exercised"], summary["must_violated"]
    );
    if !README.contains(&line) {
        return Err(format!("README's fake-server example should show {line}"));
    }
    let message = v["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"] == "app.retry.after")
        .map(|r| r["violations"][0]["message"].clone());
    let message = message.and_then(|m| m.as_str().map(str::to_string)).ok_or("no app.retry.after violation")?;
    if !README.contains(&message) {
        return Err(format!("README's fake-server example should quote: {message}"));
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("readme::walk-through-figures", walk_through),
        trial("readme::bare-server-figures", bare_server),
        trial("readme::fake-server-figures", fake_server_figures),
    ]
}
