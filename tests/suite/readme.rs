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

pub fn trials() -> Vec<Trial> {
    vec![trial("readme::walk-through-figures", walk_through), trial("readme::bare-server-figures", bare_server)]
}
