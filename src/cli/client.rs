//! `gcmspec client`: a client library judged through its driver, as `gcmspec run` judges a
//! server: the same checks' trials, progress, reports, replay files and exit codes. Also
//! `gcmspec matrix` (the libraries' recorded outcomes as docs/client-matrix.md) and the hidden
//! `gcmspec reference-client` (the project's own app server behind the driver contract).

use super::output::{say, say_raw};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use gcmspec::appserver::cases::Env;
use gcmspec::appserver::driven_library::DriverCommand;
use gcmspec::appserver::library_suite::LibrarySuite;
use gcmspec::appserver::matrix::{self, Results};
use gcmspec::driver::{Capabilities, HttpTarget, Target};
use gcmspec::harness::{self, CheckRun, report::Report};
use gcmspec::reference::{ClockKind, Reference};
use gcmspec::verdicts::Rulebook;

use super::run::{ReportFiles, run_trials, write_report_files};
use super::{SpecArgs, load, positive_seconds, progress, reference_config, selection};

#[derive(Args)]
#[command(after_help = "\
Examples:
  gcmspec client --driver \"node drivers/node-gcm.js\"            every case the library can break
  gcmspec client --driver \"python3 driver.py\" app.retry --json r.json
  gcmspec client --driver CMD --results lib.json                  its outcomes, for --expect and `matrix`
  gcmspec client --driver CMD --expect lib.json                   fail if an outcome changed

The driver is started once per case, with the reference's endpoints and a fresh sender in its
environment, and speaks the driver contract on stdin and stdout (docs/client-drivers.md).

Exit status: 0 every MUST case passed (and --expect matched), 1 a graded case failed or an
outcome differs from --expect, 2 nothing ran (the driver did not start, say).")]
pub(crate) struct ClientArgs {
    /// The driver: a shell command that makes the library do what it is asked
    /// (docs/client-drivers.md), e.g. "node tests/interop/drivers/node-gcm.js".
    #[arg(long, value_name = "COMMAND")]
    driver: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// The revision of the documents the reference serves and the cases hold the library to.
    #[arg(long, default_value = gcmspec::bundled::DEFAULT_PROFILE)]
    profile: String,
    /// The reference's clock: `wall` (the library sleeps in real time between retries) or
    /// `virtual` (for a driver that waits by advancing the sender's clock:
    /// GCMSPEC_CONTROL_URL).
    #[arg(long, value_enum, default_value = "wall")]
    clock: ClientClock,
    /// Seconds the driver may take to start and to answer each request; past it the driver
    /// is ended and the case fails saying so.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    timeout: f64,
    /// SHOULD cases fail the run too.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    reports: ReportFiles,
    /// Write each case's outcome (schema gcmspec-client-results/1): the expected verdicts
    /// for --expect, and a row of `gcmspec matrix`.
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Compare each case's outcome with this results file: any difference fails the run.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// Save each failure as a replay file in DIR (older replay files there are removed).
    #[arg(long, value_name = "DIR", default_value = "gcmspec-replays")]
    replays: PathBuf,
    /// Do not save replay files.
    #[arg(long)]
    no_replays: bool,
    /// A progress bar (auto: on a terminal, outside CI) or libtest's line per case.
    #[arg(long, value_enum, default_value = "auto")]
    progress: progress::Progress,
    /// Seconds the whole run may take: past it, cases not yet begun are not tried.
    #[arg(long, value_name = "SECONDS")]
    deadline: Option<f64>,
    #[command(flatten)]
    checks: selection::Selection,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientClock {
    Wall,
    Virtual,
}

/// Cases run side by side: a driver mostly waits (on its library's back-off).
const THREADS: usize = 4;

/// The reference as `gcmspec client` serves it to a driver: HTTP and XMPP on loopback.
struct Served {
    _runtime: tokio::runtime::Runtime,
    _running: gcmspec::reference::RunningReference,
    suite: Arc<LibrarySuite>,
    url: String,
}

fn serve_for(args: &ClientArgs, catalog: &gcmspec::catalog::Catalog) -> anyhow::Result<Served> {
    let book = Rulebook::from_catalog(catalog, &args.profile).map_err(anyhow::Error::msg)?;
    let mut config = reference_config(catalog, &args.profile, &[], &[])?;
    config.clock = if args.clock == ClientClock::Wall { ClockKind::Wall } else { ClockKind::Virtual };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let running = runtime.block_on(Reference::start_with(config)).context("starting the reference on loopback")?;
    let url = running.url();
    let xmpp = running.xmpp_address();
    let timeout = Duration::from_secs_f64(args.timeout);
    let target: Arc<dyn Target> = Arc::new(HttpTarget::new(&url, timeout)?.with_xmpp(xmpp));
    let caps = Capabilities::probe(&*target)?;
    let clock = if args.clock == ClientClock::Wall { "wall" } else { "virtual" };
    let env = vec![
        ("GCMSPEC_HTTP_URL".to_string(), url.clone()),
        ("GCMSPEC_XMPP_HOST".to_string(), xmpp.ip().to_string()),
        ("GCMSPEC_XMPP_PORT".to_string(), xmpp.port().to_string()),
        ("GCMSPEC_CONTROL_URL".to_string(), format!("{url}{}", gcmspec::reference::control::PREFIX)),
        ("GCMSPEC_CLOCK".to_string(), clock.to_string()),
        ("GCMSPEC_PROFILE".to_string(), args.profile.clone()),
    ];
    let driver = DriverCommand::new(args.driver.clone(), env, timeout);
    let sender = gcmspec::driver::Control { target: &*target, caps: &caps }.new_sender()?;
    let hello = driver.hello(&sender).map_err(|e| anyhow::anyhow!("{e}"))?;
    let suite = LibrarySuite { env: Env { target, caps, numbers: book.numbers.clone() }, driver, hello, book };
    Ok(Served { _runtime: runtime, _running: running, suite: Arc::new(suite), url })
}

pub(crate) fn client(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    let started = Instant::now();
    let files = &args.reports;
    let expected = match &args.expect {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(Results::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
        }
    };
    let served = match serve_for(&args, &catalog) {
        Ok(s) => s,
        Err(e) => {
            // A CI job that expects its reports gets them, saying why nothing ran.
            let why = gcmspec::driver::error_chain(e.as_ref());
            let report = Report::aborted(&format!("the driver `{}`", args.driver), &args.profile, args.strict, why);
            write_report_files(files, &report, &catalog, "", "")?;
            return Err(e);
        }
    };
    let suite = served.suite.clone();
    let hello = &suite.hello;
    let deadline = args.deadline.map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let checks: Vec<harness::Case> = suite
        .checks()
        .into_iter()
        .map(|mut c| {
            if let (Ok(f), Some(until)) = (&c.run, deadline) {
                let (f, limit) = (f.clone(), args.deadline.unwrap_or_default());
                c.run = Ok(Arc::new(move || {
                    if Instant::now() >= until {
                        return CheckRun::failed(format!("the run's deadline ({limit} s) had passed: not tried"));
                    }
                    f()
                }));
            }
            c
        })
        .collect();
    let mut test = args.checks.libtest();
    if test.test_threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        test.test_threads = Some(cores.max(THREADS));
    }
    if !test.list {
        eprintln!(
            "gcmspec: {} {} through `{}`: {} cases ({} clock), the reference at {}",
            hello.library,
            hello.version,
            args.driver,
            checks.len(),
            if args.clock == ClientClock::Wall { "wall" } else { "virtual" },
            served.url
        );
    }
    let recorder = harness::report::Recorder::default();
    if progress::wanted(args.progress, &test) {
        progress::run(&checks, &recorder, &test);
    } else {
        run_trials(&test, &checks, &recorder);
    }
    if test.list {
        return Ok(ExitCode::SUCCESS);
    }
    let described = format!("{} {} (driver: {})", hello.library, hello.version, args.driver);
    let mut report = recorder.report(&checks, &described, &args.profile, args.strict);
    report.library = Some(harness::report::Library {
        library: hello.library.clone(),
        version: hello.version.clone(),
        driver: args.driver.clone(),
        supports: hello.supports.clone(),
        clock: if args.clock == ClientClock::Wall { "wall" } else { "virtual" }.into(),
    });
    let replay_flags = replay_flags(&args);
    if !args.no_replays {
        save_replays(&args.replays, &mut report, &args.driver, &replay_flags)?;
    }
    write_report_files(files, &report, &catalog, &served.url, &replay_flags)?;
    let results = Results::of(&report).expect("a client report names its library");
    if let Some(path) = &args.results {
        std::fs::write(path, results.to_json()).with_context(|| format!("writing {}", path.display()))?;
    }
    let s = &report.summary;
    eprintln!(
        "gcmspec: {} {}: {} passed, {} failed ({} graded{}), {} not exercised, {} unsupported, {} skipped in {:.1} s",
        hello.library,
        hello.version,
        s.passed,
        s.failed,
        s.graded_failures,
        match s.failed - s.graded_failures {
            0 => String::new(),
            n => format!("; {n} SHOULD, which fail only with --strict"),
        },
        s.not_exercised,
        s.unsupported,
        s.skipped,
        started.elapsed().as_secs_f64()
    );
    if let Some(expected) = &expected {
        let differences = expected.differences(&results);
        if !differences.is_empty() {
            eprintln!(
                "gcmspec: {} outcome(s) differ from {}:",
                differences.len(),
                args.expect.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            );
            for d in &differences {
                eprintln!("  {d}");
            }
            eprintln!("  (a change that is meant: record it again with --results)");
            return Ok(ExitCode::from(1));
        }
        eprintln!("gcmspec: every outcome is as expected");
        return Ok(ExitCode::SUCCESS);
    }
    if deadline.is_some_and(|d| Instant::now() >= d) && s.not_tried > 0 {
        eprintln!("gcmspec: the run's deadline passed; the cases not begun by then were not tried");
        return Ok(ExitCode::from(2));
    }
    // A driver that broke down judged nothing in those cases: never a clean run, whatever
    // the levels of their rules.
    let broken = suite.driver.breakdowns();
    if broken > 0 {
        eprintln!(
            "gcmspec: the driver broke down in {broken} case(s) (late, exited, or off the contract; each failed case says \
             which): fix the driver, or record the outcomes with --results and hold them with --expect"
        );
        return Ok(ExitCode::from(report.exit_code().max(1)));
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// The flags that run a case again as this run did.
fn replay_flags(args: &ClientArgs) -> String {
    let mut out = format!(" --timeout {}", args.timeout);
    if args.clock == ClientClock::Virtual {
        out.push_str(" --clock virtual");
    }
    if args.profile != gcmspec::bundled::DEFAULT_PROFILE {
        out.push_str(&format!(" --profile {}", args.profile));
    }
    out
}

pub(crate) const REPLAY_SCHEMA: &str = "gcmspec-client-replay/1";

/// A failed case as data: enough to run it again against the same driver.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ClientReplay {
    pub schema: String,
    pub name: String,
    pub rule: String,
    pub library: String,
    pub version: String,
    pub driver: String,
    /// The `gcmspec client` flags it ran with (clock, timeout, profile).
    pub flags: String,
    pub failure: String,
    /// What the library sent and was answered, from the reference's journal.
    pub exchanges: Vec<harness::evidence::Exchange>,
}

/// Writes each failed case's replay file (after removing older ones) and prints how to run it.
fn save_replays(dir: &std::path::Path, report: &mut Report, driver: &str, flags: &str) -> anyhow::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["schema"] == REPLAY_SCHEMA || v["schema"] == harness::replay::SCHEMA);
            if ours {
                std::fs::remove_file(&path).with_context(|| format!("removing the old replay {}", path.display()))?;
            }
        }
    }
    let lib = report.library.clone().expect("a client report names its library");
    let failed: Vec<usize> =
        (0..report.results.len()).filter(|&i| report.results[i].outcome == harness::report::Outcome::Failed).collect();
    if failed.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for i in failed {
        let r = &mut report.results[i];
        let replay = ClientReplay {
            schema: REPLAY_SCHEMA.into(),
            name: r.name.clone(),
            rule: r.rule.clone(),
            library: lib.library.clone(),
            version: lib.version.clone(),
            driver: driver.to_string(),
            flags: flags.trim().to_string(),
            failure: r.message.clone().unwrap_or_default(),
            exchanges: r.evidence.exchanges.clone(),
        };
        let safe: String =
            r.name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' }).collect();
        let path = dir.join(format!("{safe}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&replay)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("\ngcmspec: FAILED {}\n  replay: gcmspec replay {}", r.name, path.display());
        r.replay = Some(path.display().to_string());
    }
    Ok(())
}

/// Runs a client replay's case again with its driver: whether it passes now.
pub(crate) fn replay(replay: &ClientReplay, file: &std::path::Path) -> anyhow::Result<bool> {
    #[derive(clap::Parser)]
    struct Again {
        #[command(flatten)]
        args: ClientArgs,
    }
    let mut argv = vec!["client".to_string(), "--driver".into(), replay.driver.clone()];
    argv.extend(replay.flags.split_whitespace().map(str::to_string));
    let Again { args } = <Again as clap::Parser>::try_parse_from(&argv)
        .with_context(|| format!("{}: its flags {:?}", file.display(), replay.flags))?;
    let catalog = load(&args.spec)?;
    let served = serve_for(&args, &catalog)?;
    let Some(case) = served.suite.cases().into_iter().find(|c| c.name == replay.name) else {
        bail!("{}: no case {} in this gcmspec", file.display(), replay.name);
    };
    if let Some(why) = served.suite.lacks(&case) {
        bail!("cannot replay {}: {why}", replay.name);
    }
    let run = served.suite.judge(&case);
    match run.result {
        Ok(()) => {
            say!("passes now: {} ({}) with {}", replay.name, file.display(), replay.driver);
            Ok(true)
        }
        Err(e) => {
            say!("still fails: {} ({}) with {}\n{e}", replay.name, file.display(), replay.driver);
            Ok(false)
        }
    }
}

#[derive(Args)]
pub(crate) struct MatrixArgs {
    /// Results files written by `gcmspec client --results`, a row each in this order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Write the matrix here (default: standard output).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    spec: SpecArgs,
}

pub(crate) fn matrix(args: MatrixArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    let book = Rulebook::from_catalog(&catalog, gcmspec::bundled::DEFAULT_PROFILE).map_err(anyhow::Error::msg)?;
    let mut rows = Vec::new();
    for f in &args.files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        rows.push(Results::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?);
    }
    let cases: Vec<_> =
        gcmspec::appserver::cases::catalogue(&book).into_iter().filter(|c| c.caller_only.is_none()).collect();
    let command =
        format!("gcmspec matrix {}", args.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" "));
    let text = matrix::render(&catalog, &cases, &rows, &command);
    match &args.out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?,
        None => say_raw!("{text}"),
    }
    if rows.is_empty() {
        bail!("no results files");
    }
    Ok(ExitCode::SUCCESS)
}
