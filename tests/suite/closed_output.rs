//! The binary when whoever reads its output has stopped (`gcmspec rules | head`): every
//! command goes on to its end and exits as it would have, without a panic's message; a run,
//! a replay, a diff still reach their verdicts and write their reports.
//!
//! The pipe's reading end is closed before the command starts, so that its first write
//! fails every time (not only when it outruns the reader).

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use libtest_mimic::Trial;

use crate::trial;

/// A pipe whose reading end is already closed: its writing end, for a child's stdout.
fn closed_pipe() -> Result<Stdio, String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe(2) just opened both; each is owned once, here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Ok(Stdio::from(write))
}

/// Runs `args` in `dir` with stdout closed: its exit code and what it wrote to stderr.
fn run_closed(dir: &std::path::Path, args: &[&str]) -> Result<(i32, String), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_gcmspec"))
        .args(args)
        .current_dir(dir)
        .env("CI", "true")
        .stdin(Stdio::null())
        .stdout(closed_pipe()?)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn expect_closed(dir: &std::path::Path, args: &[&str], code: i32) -> Result<(), String> {
    let (got, stderr) = run_closed(dir, args)?;
    if stderr.contains("panicked") || got != code {
        return Err(format!("gcmspec {} with stdout closed exited {got} (expected {code}):\n{stderr}", args.join(" ")));
    }
    Ok(())
}

fn every_printing_command() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("gcmspec-closed-output-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = (|| {
        for args in [
            &["rules"][..],
            &["rules", "--json"],
            &["selftest", "--list"],
            &["lint"],
            &["run", "--list"],
            &["--help"],
            &["run", "--help"],
            &["--version"],
        ] {
            expect_closed(&dir, args, 0)?;
        }
        // A run prints its trials to stdout and its summary to stderr: it goes on, grades,
        // and exits on its report (0 here, 1 with a fault), writing its replay files.
        expect_closed(&dir, &["run", "--no-snapshots", "send.auth.server-key"], 0)?;
        expect_closed(&dir, &["run", "--no-snapshots", "--fault", "send.auth.server-key", "send.auth.server-key"], 1)?;
        let replays: Vec<_> = std::fs::read_dir(dir.join("gcmspec-replays"))
            .map_err(|e| format!("no replay files: {e}"))?
            .flatten()
            .map(|e| e.path())
            .collect();
        let replay = replays.first().and_then(|p| p.to_str()).ok_or("no replay file written")?.to_string();
        // A replay's curl script, printed; the replay itself, with its verdict: it still
        // fails with the fault (1), and passes on the clean reference (0).
        expect_closed(&dir, &["replay", "--curl", &replay], 0)?;
        expect_closed(&dir, &["replay", "--fault", "send.auth.server-key", &replay], 1)?;
        expect_closed(&dir, &["replay", &replay], 0)?;
        // A diff against a served reference with a fault: it differs (1), and writes its report.
        let served = crate::cli::Served::start(&["--fault", "send.auth.server-key"])?;
        let report = dir.join("diff.json");
        let report_arg = report.to_str().unwrap_or_default();
        expect_closed(&dir, &["diff", "--target", &served.url, "--json", report_arg, "send.auth.server-key"], 1)?;
        if !report.exists() {
            return Err("diff with its stdout closed wrote no --json report".into());
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub fn trials() -> Vec<Trial> {
    vec![trial("closed-output::every-command-runs-to-its-end", every_printing_command)]
}
