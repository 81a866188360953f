//! `gcmspec run`: the suite against a target, graded, with reports and replay files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use gcmspec::harness::{self, Options};

use super::{Connected, SpecArgs, TargetArgs, connect, load, output, progress, run_id, selection};

#[derive(Args)]
#[command(after_help = "\
Examples:
  gcmspec run                                   the bundled reference, in this process
  gcmspec run --target http://127.0.0.1:4000    a server with the control API (docs/control-api.md)
  gcmspec run --target URL --api-key KEY --sender-id ID
                                                a server without it: the checks a sender can run
  gcmspec run group.member-cap --json r.json    one rule's checks, with a report

Exit status: 0 every MUST check passed, 1 a graded check failed, 2 nothing ran or the run
stopped (unreachable target, --deadline).")]
pub(crate) struct RunArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    to: TargetArgs,
    /// Profile to test (default: what the target reports, else fcm).
    #[arg(long)]
    profile: Option<String>,
    /// Seed for property-based checks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Cases per property (overrides the specs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cases: Option<u32>,
    /// Compare normalized responses with the snapshots in DIR, a profile other than fcm's in
    /// DIR/PROFILE (default for the in-process reference: ./snapshots).
    #[arg(long, value_name = "DIR")]
    snapshots: Option<PathBuf>,
    /// Do not compare snapshots.
    #[arg(long, conflicts_with = "snapshots")]
    no_snapshots: bool,
    /// Hold the server to the documents: SHOULD rules fail the run too, and steps accept only
    /// documented answers, not those real servers were merely seen to give.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    reports: ReportFiles,
    /// Known failures (one `rule::check` a line): only failures not listed fail the run.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write this run's graded failures as a baseline file.
    #[arg(long, value_name = "FILE")]
    write_baseline: Option<PathBuf>,
    /// Save each failure as a replay file in DIR (older replay files there are removed).
    #[arg(long, value_name = "DIR", default_value = "gcmspec-replays")]
    replays: PathBuf,
    /// Do not save replay files.
    #[arg(long)]
    no_replays: bool,
    /// A progress bar (auto: on a terminal, outside CI) or libtest's line per check.
    #[arg(long, value_enum, default_value = "auto")]
    progress: progress::Progress,
    /// Seconds the whole run may take: past it, checks not yet done are not tried (reported
    /// `not-tried`), the reports are written with what ran, and the run exits 2.
    #[arg(long, value_name = "SECONDS")]
    deadline: Option<f64>,
    #[command(flatten)]
    checks: selection::Selection,
}

/// Checks run side by side against a server over the network: they mostly wait, so more of
/// them than there are cores (`--test-threads` still decides).
const REMOTE_THREADS: usize = 8;

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let catalog = Arc::new(load(&args.spec)?);
    let deadline = args.deadline.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let Connected { target: watched, caps, base_url } =
        match connect(&args.to, &catalog, args.profile.as_deref(), deadline) {
            Ok(connected) => connected,
            Err(e) => {
                // A CI job that expects its reports gets them, saying why nothing ran.
                let why = gcmspec::driver::error_chain(e.as_ref());
                let target = args.to.target.clone().unwrap_or_else(|| "in-process reference".into());
                let profile = args.profile.clone().unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
                let report = harness::report::Report::aborted(&target, &profile, args.strict, why);
                write_reports(&args, &report, &catalog, &target, "")?;
                return Err(e);
            }
        };
    let target: Arc<dyn gcmspec::driver::Target> = watched.clone();
    let mut test = args.checks.libtest();
    if args.to.target.is_some() && test.test_threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        test.test_threads = Some(cores.max(REMOTE_THREADS));
    }
    // The bundled reference's snapshots are in ./snapshots of a checkout (where --help says
    // they are looked for), never in the tree the binary was built from. A legal variant
    // answers otherwise by design: its run is not compared with the reference's snapshots.
    let default_snapshots = match (&args.to.target, args.to.variants.is_empty()) {
        (None, true) => {
            let dir = PathBuf::from("snapshots");
            if !dir.is_dir() && args.snapshots.is_none() && !args.no_snapshots && !test.list {
                eprintln!(
                    "gcmspec: no ./snapshots here (a checkout has them): responses are not compared with snapshots"
                );
            }
            Some(dir).filter(|d| d.is_dir())
        }
        (None, false) => {
            if args.snapshots.is_none() && !args.no_snapshots {
                eprintln!("gcmspec: legal variants answer otherwise by design: snapshots are not compared");
            }
            None
        }
        (Some(_), _) => None,
    };
    let profile = args
        .profile
        .clone()
        .or_else(|| caps.profile.clone())
        .unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    if !catalog.profiles.contains_key(&profile) {
        bail!("unknown profile `{profile}`");
    }
    // A directory named on purpose must be there: a typo would otherwise write a snapshot
    // file per check into a new tree, and fail them all.
    if let Some(dir) = args.snapshots.as_ref().filter(|d| !d.is_dir()) {
        bail!("--snapshots {}: no such directory (--no-snapshots compares none)", dir.display());
    }
    let snapshots = if args.no_snapshots { None } else { args.snapshots.clone().or(default_snapshots) };
    let options = Arc::new(Options {
        profile,
        seed: args.seed,
        cases: args.cases,
        snapshots,
        xmpp_timeout: Duration::from_secs_f64(args.to.xmpp_timeout.max(0.01)),
        run_id: run_id(),
        strict: args.strict,
    });
    if !test.list {
        eprintln!(
            "gcmspec: {} rules, profile {}, target {}",
            catalog.server_rules().count(),
            options.profile,
            target.describe()
        );
    }
    let described = target.describe();
    let cases = harness::cases(&catalog, target, Arc::new(caps), &options);
    // Read and checked before the run: a bad baseline is said at once.
    let baseline = match &args.baseline {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let baseline = harness::report::Baseline::parse(&text);
            // An entry that names no check matches nothing: a typo, or a check since renamed.
            let stale: Vec<&String> = baseline.0.iter().filter(|e| !cases.iter().any(|c| &c.name == *e)).collect();
            if !stale.is_empty() {
                bail!(
                    "{}: {} {} no check of this suite (a typo, or a check renamed): {}",
                    path.display(),
                    stale.len(),
                    if stale.len() == 1 { "entry names" } else { "entries name" },
                    stale.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            Some(baseline)
        }
    };
    let recorder = harness::report::Recorder::default();
    // The exit code comes from the graded report, not from libtest's count of failures.
    if progress::wanted(args.progress, &test) {
        progress::run(&cases, &recorder, &test);
    } else {
        run_trials(&test, &cases, &recorder);
    }
    if test.list {
        return Ok(ExitCode::SUCCESS);
    }
    let mut report = recorder.report(&cases, &described, &options.profile, args.strict);
    if watched.stopped().is_some() {
        report.unanswered_not_tried();
    }
    let replay_flags = args.to.flags();
    if !args.no_replays {
        // Only what failed has a replay (not what the stop left untried).
        let failed: std::collections::BTreeSet<&str> = report
            .results
            .iter()
            .filter(|r| r.outcome == harness::report::Outcome::Failed)
            .map(|r| r.name.as_str())
            .collect();
        let replays: Vec<_> = recorder.replays().into_iter().filter(|r| failed.contains(r.name.as_str())).collect();
        save_replays(&args.replays, &replays, &mut report, &base_url, &replay_flags)?;
    }
    if let Some(baseline) = &baseline {
        report.apply_baseline(baseline);
    }
    if let Some(path) = &args.write_baseline {
        std::fs::write(path, report.baseline()).with_context(|| format!("writing {}", path.display()))?;
    }
    write_reports(&args, &report, &catalog, &base_url, &replay_flags)?;
    let s = &report.summary;
    let ungraded = s.failed - s.graded_failures;
    eprintln!(
        "gcmspec: {} passed{}, {} failed ({} graded{}), {} unsupported, {} skipped{}",
        s.passed,
        if s.observed > 0 {
            format!(" ({} on an answer real servers gave, not the documented one: --strict fails them)", s.observed)
        } else {
            String::new()
        },
        s.failed,
        s.graded_failures,
        if ungraded > 0 { format!("; {ungraded} SHOULD, which fail only with --strict") } else { String::new() },
        s.unsupported,
        s.skipped,
        // Checks the target's stop or the run's deadline left: neither passed nor failed.
        if s.not_tried > 0 { format!(", {} not tried", s.not_tried) } else { String::new() }
    );
    // One mistake behind many failures, named once (the report's `summary.shared_causes`).
    for c in s.shared_causes.iter().filter(|c| c.failures >= 3).take(3) {
        eprintln!(
            "gcmspec: {} of the {} failures, in {} rule{}, share one cause: {} (fix it first: the others may follow from it)",
            c.failures,
            s.failed,
            c.rules,
            if c.rules == 1 { "" } else { "s" },
            c.cause
        );
    }
    if args.baseline.is_some() {
        eprintln!(
            "gcmspec: baseline: {} known failure(s), {} new",
            s.known_failures,
            s.graded_failures - s.known_failures
        );
        for new in report.results.iter().filter(|r| r.graded && !r.known) {
            eprintln!("gcmspec: baseline: {} fails and is not in the baseline", new.name);
        }
        for fixed in &s.fixed {
            eprintln!("gcmspec: baseline: {fixed} passes now: remove it from the baseline");
        }
    }
    if let Some(why) = watched.stopped() {
        eprintln!(
            "gcmspec: the target stopped answering: {why}; the {} checks in flight when it stopped or due after were not tried \
             (libtest counts those in flight as failed: they are not graded)",
            report.summary.not_tried
        );
        return Ok(ExitCode::from(2));
    }
    if let Some(d) = watched.deadline_passed() {
        eprintln!("gcmspec: the run's deadline ({d:?}) passed; the checks not done by then were not tried");
        return Ok(ExitCode::from(2));
    }
    if report.exit_code() == 2 {
        eprintln!("gcmspec: no trial ran{}", why_nothing_ran(&report, &cases, test.filter.as_deref(), test.exact));
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// Writes each failure's replay file (after removing older ones), notes it in the report, and
/// prints how to reproduce it: the replay command and the failing end as curl commands.
pub(crate) fn save_replays(
    dir: &Path,
    replays: &[harness::replay::Replay],
    report: &mut harness::report::Report,
    base_url: &str,
    replay_flags: &str,
) -> anyhow::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") && harness::replay::Replay::read(&path).is_ok() {
                std::fs::remove_file(&path).with_context(|| format!("removing the old replay {}", path.display()))?;
            }
        }
    }
    if replays.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for replay in replays {
        let path = replay.path_in(dir);
        std::fs::write(&path, replay.to_json()).with_context(|| format!("writing {}", path.display()))?;
        if let Some(r) = report.results.iter_mut().find(|r| r.name == replay.name) {
            r.replay = Some(path.display().to_string());
        }
        const SHOWN: usize = 4;
        let shown = &replay.exchanges[replay.exchanges.len().saturating_sub(SHOWN)..];
        eprintln!("\ngcmspec: FAILED {}\n  replay: gcmspec replay {}{replay_flags}", replay.name, path.display());
        // The in-process reference has no address for curl to reach, nor keys any other
        // server knows.
        if !replay_flags.contains("--target") {
            eprintln!("  (in-process: to follow it with curl, run it against `gcmspec serve` with --target)");
        } else if replay.exchanges.iter().any(|x| !x.is_xmpp()) {
            let earlier = replay.exchanges.len() - shown.len();
            let note = if earlier > 0 {
                format!(" (the last {}; all {} with `gcmspec replay --curl`)", shown.len(), replay.exchanges.len())
            } else {
                String::new()
            };
            eprintln!("  as curl{note}:");
            for line in harness::evidence::curl_script(shown, base_url, Some(400)).lines() {
                eprintln!("    {line}");
            }
        }
    }
    Ok(())
}

/// Runs the cases under libtest-mimic, recorded. A reader that stopped early (`gcmspec run |
/// head`, or a stdout closed before the run began) does not cut the run short: libtest-mimic panics on the closed pipe, and what had not run yet
/// runs then with stdout pointed at nothing, so that the reports and the exit code are the
/// whole run's.
pub(crate) fn run_trials(
    test: &libtest_mimic::Arguments,
    cases: &[harness::Case],
    recorder: &harness::report::Recorder,
) {
    let trials = harness::recorded_trials(cases, recorder);
    recorder.filtered_out(trials.iter().filter(|t| test.is_filtered_out(t)).map(|t| t.name().to_string()));
    if output::quiet_on_closed_stdout(|| libtest_mimic::run(test, trials)).is_some() {
        return;
    }
    output::silence_stdout();
    if !test.list {
        let rest: Vec<harness::Case> = cases.iter().filter(|c| !recorder.ran(&c.name)).cloned().collect();
        let rest = harness::recorded_trials(&rest, recorder);
        let _ = output::quiet_on_closed_stdout(|| libtest_mimic::run(test, rest));
    }
}

/// What to do when nothing ran: a filter that matched nothing gets the nearest names; a
/// target without the control API, the flags that let the checks needing only a sender run.
fn why_nothing_ran(
    report: &harness::report::Report,
    cases: &[harness::Case],
    filter: Option<&str>,
    exact: bool,
) -> String {
    use harness::report::Outcome;
    let selected = report.results.iter().filter(|r| r.outcome != Outcome::Skipped).count();
    if let Some(filter) = filter.filter(|_| selected == 0) {
        // With --exact a rule id matches nothing: its checks' whole names do.
        let of_rule: Vec<&str> = cases.iter().filter(|c| c.rule_id == filter).map(|c| c.name.as_str()).collect();
        if exact && !of_rule.is_empty() {
            return format!(
                ": `{filter}` is a rule; with --exact, name one of its checks whole ({}), or leave out --exact",
                of_rule.iter().take(3).copied().collect::<Vec<_>>().join(", ")
            );
        }
        let mut names: Vec<&str> = if exact {
            cases.iter().map(|c| c.name.as_str()).collect()
        } else {
            cases.iter().flat_map(|c| [c.rule_id.as_str(), c.name.as_str()]).collect()
        };
        names.sort_unstable();
        names.dedup();
        let mut near: Vec<(usize, &str)> = names.iter().map(|n| (edit_distance(filter, n), *n)).collect();
        near.sort();
        let shown: Vec<&str> = near.iter().take(3).map(|(_, n)| *n).collect();
        return format!(
            ": `{filter}` names no check. Did you mean {}? (`gcmspec rules` lists them all)",
            shown.join(", ")
        );
    }
    let unsupported = report.results.iter().filter(|r| r.outcome == Outcome::Unsupported);
    if unsupported.clone().any(|r| r.message.as_deref().is_some_and(|m| m.contains("--api-key"))) {
        return ": the target offers no control API, and no sender was given. Pass --api-key KEY --sender-id ID \
                (a sender the server knows) to run the checks that need only a sender; docs/control-api.md says \
                what a server offers for the rest"
            .to_string();
    }
    // Whatever else the chosen checks lack (an XMPP address, a capability), said as they say it.
    let mut reasons: Vec<&str> = unsupported.filter_map(|r| r.message.as_deref()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    if !reasons.is_empty() {
        let more = if reasons.len() > 3 { format!("; and {} more", reasons.len() - 3) } else { String::new() };
        return format!(
            ": every check chosen is unsupported by the target ({}{more})",
            reasons[..reasons.len().min(3)].join("; ")
        );
    }
    String::new()
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Where the reports go: `--json`, `--junit`, `--html` (`run` and `client` alike).
#[derive(clap::Args)]
pub(crate) struct ReportFiles {
    /// Write the results as JSON (schema gcmspec-report/1, docs/report.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the results as JUnit XML.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a self-contained HTML report: rules and outcomes, quotes, exchanges, reproductions.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

fn write_reports(
    args: &RunArgs,
    report: &harness::report::Report,
    catalog: &gcmspec::catalog::Catalog,
    base_url: &str,
    replay_flags: &str,
) -> anyhow::Result<()> {
    let files = &args.reports;
    write_report_files(files, report, catalog, base_url, replay_flags)
}

/// Writes the reports that were asked for.
pub(crate) fn write_report_files(
    files: &ReportFiles,
    report: &harness::report::Report,
    catalog: &gcmspec::catalog::Catalog,
    base_url: &str,
    replay_flags: &str,
) -> anyhow::Result<()> {
    if let Some(path) = &files.json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &files.junit {
        std::fs::write(path, report.junit(replay_flags)).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &files.html {
        let reproduce = harness::html::Reproduce { base_url, replay_flags };
        std::fs::write(path, harness::html::render(report, catalog, &reproduce))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
