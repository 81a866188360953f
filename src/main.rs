//! The `gcmspec` command line: a thin layer over the library. Port choice, signals and
//! exit codes live here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use gcmspec::harness::{self, Options};
use gcmspec::reference::{self, Fault, Faults, Reference};
use gcmspec::spec::Catalog;
use gcmspec::target::{Capabilities, HttpTarget, InProcess, Sender, Target};

mod progress;

#[derive(Parser)]
#[command(
    name = "gcmspec",
    version,
    about = "Conformance suite and reference server for the legacy GCM/FCM device-group protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the conformance suite (default target: the in-process reference).
    Run(Box<RunArgs>),
    /// Serve the reference over HTTP until interrupted.
    Serve(ServeArgs),
    /// Run the suite against the clean reference and against each rule's fault.
    Selftest(SelftestArgs),
    /// Check the spec files and report every problem.
    Lint(SpecArgs),
    /// List every rule with its level, source and checks.
    Rules(RulesArgs),
    /// Run saved failures (replay files) again and say whether they still fail.
    Replay(ReplayArgs),
    /// Run the same checks and generated sequences against the reference and a target, and
    /// show where their normalized responses differ.
    Diff(Box<DiffArgs>),
}

#[derive(Args)]
struct SpecArgs {
    /// Read spec files from this directory instead of the bundled ones.
    #[arg(long, value_name = "DIR")]
    specs: Option<PathBuf>,
}

/// Which server to reach, and how.
#[derive(Args)]
struct TargetArgs {
    /// The server to test, e.g. http://127.0.0.1:4000 (default: the in-process reference).
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Server key to use when the target has no control API.
    #[arg(long, requires = "sender_id")]
    api_key: Option<String>,
    /// Sender id (project number) that goes with --api-key.
    #[arg(long, requires = "api_key")]
    sender_id: Option<String>,
    /// Break this rule in the in-process reference (repeatable).
    #[arg(long = "fault", value_name = "RULE_ID", conflicts_with = "target")]
    faults: Vec<String>,
    /// The target's XMPP connection server, HOST:PORT, for the XMPP rules.
    #[arg(long, value_name = "HOST:PORT", requires = "target")]
    xmpp: Option<String>,
    /// The --xmpp endpoint takes TLS from the first byte.
    #[arg(long, requires = "xmpp")]
    xmpp_tls: bool,
    /// Trust this CA certificate (PEM) for --xmpp-tls; without it any certificate is accepted.
    #[arg(long, value_name = "FILE", requires = "xmpp_tls")]
    xmpp_ca: Option<PathBuf>,
    /// Per-request timeout in seconds, for --target.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Seconds an XMPP step waits for the server's answer.
    #[arg(long, default_value_t = 3.0)]
    xmpp_timeout: f64,
}

impl TargetArgs {
    /// The flags that reach the same server again (for the replay commands a run prints).
    fn flags(&self) -> String {
        let mut out = String::new();
        match &self.target {
            None => self.faults.iter().for_each(|f| out.push_str(&format!(" --fault {f}"))),
            Some(url) => out.push_str(&format!(" --target {url}")),
        }
        if let (Some(key), Some(id)) = (&self.api_key, &self.sender_id) {
            out.push_str(&format!(" --api-key {key} --sender-id {id}"));
        }
        if let Some(x) = &self.xmpp {
            out.push_str(&format!(" --xmpp {x}"));
        }
        if self.xmpp_tls {
            out.push_str(" --xmpp-tls");
        }
        if let Some(ca) = &self.xmpp_ca {
            out.push_str(&format!(" --xmpp-ca {}", ca.display()));
        }
        out
    }
}

#[derive(Args)]
struct RunArgs {
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
    #[arg(long)]
    cases: Option<u32>,
    /// Compare normalized responses with the snapshots in DIR (default for the in-process reference: ./snapshots).
    #[arg(long, value_name = "DIR")]
    snapshots: Option<PathBuf>,
    /// Do not compare snapshots.
    #[arg(long, conflicts_with = "snapshots")]
    no_snapshots: bool,
    /// Hold the server to the documents: SHOULD rules fail the run too, and steps accept only
    /// documented answers, not those real servers were merely seen to give.
    #[arg(long)]
    strict: bool,
    /// Write the results as JSON (schema gcmspec-report/1, docs/report.md).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the results as JUnit XML.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML report: rules and outcomes, quotes, exchanges, reproductions.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
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
    #[command(flatten)]
    test: libtest_mimic::Arguments,
}

#[derive(Args)]
struct DiffArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    to: TargetArgs,
    /// Profile of the reference to compare with (default: what the target reports, else fcm).
    #[arg(long)]
    profile: Option<String>,
    /// Seed for the generated sequences (the same on both sides).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generated sequences per property, on each side.
    #[arg(long, default_value_t = harness::diff::DEFAULT_CASES)]
    cases: u32,
    /// Write the differences as JSON (schema gcmspec-diff/1).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Threads to run checks on (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Compare only checks whose name contains one of these.
    filters: Vec<String>,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Replay files written by `gcmspec run` (in gcmspec-replays/ by default).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    to: TargetArgs,
    /// Print the failing run's exchanges as curl commands instead of running anything.
    #[arg(long)]
    curl: bool,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Address for HTTP.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4000")]
    http: String,
    /// Address for the XMPP connection server (plain TCP); none if not given.
    #[arg(long, value_name = "ADDR")]
    xmpp: Option<String>,
    /// Address for the XMPP connection server with TLS from the first byte.
    #[arg(long, value_name = "ADDR")]
    xmpp_tls: Option<String>,
    /// Certificate (PEM) for --xmpp-tls; without it one is generated and written out.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) that goes with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[arg(long)]
    profile: Option<String>,
    /// Seed for keys and tokens (default: random, so keys cannot be guessed).
    #[arg(long)]
    seed: Option<u64>,
    /// Break this rule (repeatable), to see a client or the suite catch it.
    #[arg(long = "fault", value_name = "RULE_ID")]
    faults: Vec<String>,
    /// Offer only the public protocol, as a third-party server would.
    #[arg(long)]
    without_control_api: bool,
}

#[derive(Args)]
struct SelftestArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[arg(long)]
    profile: Option<String>,
    /// Threads to run checks on (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct RulesArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Print the catalogue as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Run(args) => run(*args),
        Command::Serve(args) => serve(args),
        Command::Selftest(args) => selftest(args),
        Command::Lint(args) => lint(args),
        Command::Rules(args) => rules(args),
        Command::Replay(args) => replay(args),
        Command::Diff(args) => diff(*args),
    }
}

fn load(args: &SpecArgs) -> anyhow::Result<Catalog> {
    let catalog = match &args.specs {
        Some(dir) => gcmspec::bundled::catalog_from_dir(dir)?,
        None => gcmspec::bundled::catalog()?,
    };
    let problems = harness::lint(&catalog);
    if !problems.is_empty() {
        bail!("{}\n{} error(s) in the spec files", problems.join("\n"), problems.len());
    }
    Ok(catalog)
}

fn reference_config(catalog: &Catalog, profile: &str, faults: &[String]) -> anyhow::Result<reference::Config> {
    let p = catalog.profiles.get(profile).with_context(|| {
        format!(
            "unknown profile `{profile}` (known: {})",
            catalog.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let mut config = reference::Config::from_profile(p)?;
    config.faults = Faults::new(faults.iter().map(|f| f.parse::<Fault>()).collect::<Result<Vec<_>, _>>()?);
    Ok(config)
}

/// A reached target: the in-process reference (with `--fault`s) or a server at `--target`.
struct Connected {
    target: Arc<dyn Target>,
    caps: Capabilities,
    /// What curl commands address: the target, or where `gcmspec serve` listens by default.
    base_url: String,
}

fn connect(args: &TargetArgs, catalog: &Catalog, profile: Option<&str>) -> anyhow::Result<Connected> {
    let (target, mut caps, base_url): (Arc<dyn Target>, Capabilities, String) = match &args.target {
        None => {
            let profile = profile.unwrap_or(gcmspec::bundled::DEFAULT_PROFILE);
            let target = InProcess::new(Reference::new(reference_config(catalog, profile, &args.faults)?));
            let caps = Capabilities::probe(&target)?;
            (Arc::new(target), caps, "http://127.0.0.1:4000".into())
        }
        Some(url) => {
            let mut target = HttpTarget::new(url, Duration::from_secs(args.timeout))?;
            if let Some(x) = &args.xmpp {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(x.as_str())
                    .with_context(|| format!("--xmpp {x}"))?
                    .next()
                    .with_context(|| format!("--xmpp {x}: no address"))?;
                target = target.with_xmpp(addr);
                if args.xmpp_tls {
                    let ca = match &args.xmpp_ca {
                        Some(f) => {
                            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
                        }
                        None => None,
                    };
                    target = target.with_xmpp_tls(gcmspec::tls::client_config(ca.as_deref())?);
                }
            }
            let caps = Capabilities::probe(&target).with_context(|| format!("probing {url}"))?;
            (Arc::new(target), caps, url.trim_end_matches('/').to_string())
        }
    };
    if let (Some(key), Some(id)) = (&args.api_key, &args.sender_id) {
        caps.static_sender = Some(Sender { id: id.clone(), key: key.clone() });
    }
    Ok(Connected { target, caps, base_url })
}

fn run_id() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
    )
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let catalog = Arc::new(load(&args.spec)?);
    let Connected { target, caps, base_url } = connect(&args.to, &catalog, args.profile.as_deref())?;
    let default_snapshots = match args.to.target {
        None => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots")).filter(|d| d.is_dir()),
        Some(_) => None,
    };
    let profile = args
        .profile
        .clone()
        .or_else(|| caps.profile.clone())
        .unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    if !catalog.profiles.contains_key(&profile) {
        bail!("unknown profile `{profile}`");
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
    if !args.test.list {
        eprintln!("gcmspec: {} rules, profile {}, target {}", catalog.rules.len(), options.profile, target.describe());
    }
    let described = target.describe();
    let cases = harness::cases(&catalog, target, Arc::new(caps), &options);
    let recorder = harness::report::Recorder::default();
    // The exit code comes from the graded report, not from libtest's count of failures.
    if progress::wanted(args.progress, &args.test) {
        progress::run(&cases, &recorder, &args.test);
    } else {
        let _ = libtest_mimic::run(&args.test, harness::recorded_trials(&cases, &recorder));
    }
    if args.test.list {
        return Ok(ExitCode::SUCCESS);
    }
    let mut report = recorder.report(&cases, &described, &options.profile, args.strict);
    let replay_flags = args.to.flags();
    if !args.no_replays {
        save_replays(&args.replays, &recorder.replays(), &mut report, &base_url, &replay_flags)?;
    }
    if let Some(path) = &args.baseline {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        report.apply_baseline(&harness::report::Baseline::parse(&text));
    }
    if let Some(path) = &args.write_baseline {
        std::fs::write(path, report.baseline()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        let reproduce = harness::html::Reproduce { base_url: &base_url, replay_flags: &replay_flags };
        std::fs::write(path, harness::html::render(&report, &catalog, &reproduce))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let s = &report.summary;
    let ungraded = s.failed - s.graded_failures;
    eprintln!(
        "gcmspec: {} passed{}, {} failed ({} graded{}), {} unsupported, {} skipped",
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
        s.skipped
    );
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
    if report.exit_code() == 2 {
        eprintln!("gcmspec: no trial ran");
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// Writes each failure's replay file (after removing older ones), notes it in the report, and
/// prints how to reproduce it: the replay command and the failing end as curl commands.
fn save_replays(
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
        let http: Vec<_> = replay.exchanges.iter().filter(|x| !x.is_xmpp()).cloned().collect();
        let shown = &replay.exchanges[replay.exchanges.len().saturating_sub(SHOWN)..];
        eprintln!("\ngcmspec: FAILED {}\n  replay: gcmspec replay {}{replay_flags}", replay.name, path.display());
        if !http.is_empty() {
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

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    let mut replays = Vec::new();
    for file in &args.files {
        replays.push(harness::replay::Replay::read(file)?);
    }
    let base = args.to.target.clone().unwrap_or_else(|| "http://127.0.0.1:4000".into());
    if args.curl {
        for (file, r) in args.files.iter().zip(&replays) {
            println!(
                "# {} ({}), failed against {}:\n# {}",
                r.name,
                file.display(),
                r.target,
                r.failure.lines().next().unwrap_or("")
            );
            print!("{}", harness::evidence::curl_script(&r.exchanges, base.trim_end_matches('/'), None));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut still_failing = 0;
    for (file, r) in args.files.iter().zip(&replays) {
        let Connected { target, caps, .. } = connect(&args.to, &catalog, Some(&r.profile))?;
        if let Some(why) = r.unsupported(&caps) {
            bail!("cannot replay {} ({}) against {}: {why}", r.name, file.display(), target.describe());
        }
        let mut options = Options::new(&r.profile);
        options.run_id = run_id();
        options.xmpp_timeout = Duration::from_secs_f64(args.to.xmpp_timeout.max(0.01));
        let run = r.run(target.as_ref(), &caps, &options);
        match run.result {
            Ok(()) => println!("passes now: {} ({}) against {}", r.name, file.display(), target.describe()),
            Err(e) => {
                still_failing += 1;
                println!("still fails: {} ({}) against {}\n{e}", r.name, file.display(), target.describe());
            }
        }
    }
    Ok(if still_failing > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    if args.to.target.is_none() && args.to.faults.is_empty() {
        bail!("diff compares the reference with --target URL (or with itself under --fault RULE_ID)");
    }
    let Connected { target, caps, .. } = connect(&args.to, &catalog, args.profile.as_deref())?;
    let profile = args
        .profile
        .clone()
        .or_else(|| caps.profile.clone())
        .unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    let reference = InProcess::new(Reference::new(reference_config(&catalog, &profile, &[])?));
    let reference_caps = harness::diff::mirror(&caps, reference.reference());
    let mut options = Options::new(&profile);
    options.seed = args.seed;
    options.cases = Some(args.cases);
    options.run_id = "diff".into();
    options.xmpp_timeout = Duration::from_secs_f64(args.to.xmpp_timeout.max(0.01));
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let select = |name: &str| args.filters.is_empty() || args.filters.iter().any(|f| name.contains(f.as_str()));
    eprintln!("gcmspec diff: the reference (profile {profile}) against {}", target.describe());
    let report = harness::diff::run(
        &catalog,
        &harness::diff::Side { target: &reference, caps: &reference_caps },
        &harness::diff::Side { target: target.as_ref(), caps: &caps },
        &options,
        &select,
        threads,
    );
    for d in &report.differences {
        let outcomes = if d.reference_outcome == d.target_outcome {
            format!("both {}", d.reference_outcome)
        } else {
            format!("reference {}, target {}", d.reference_outcome, d.target_outcome)
        };
        println!(
            "\nDIFFERS {} ({outcomes}): {} exchange(s) differ, of {} on the reference and {} on the target{}",
            d.name,
            d.differing.len(),
            d.reference_exchanges,
            d.target_exchanges,
            if d.differing.is_empty() { "" } else { "; the first:" }
        );
        for line in d.first.lines() {
            println!("    {line}");
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "\ngcmspec diff: {} checks compared ({} sequences per property, seed {}): {} identical, {} differ; {} unsupported by the target",
        report.compared,
        report.cases,
        report.seed,
        report.identical,
        report.differences.len(),
        report.unsupported.len()
    );
    Ok(if report.compared == 0 {
        ExitCode::from(2)
    } else if report.differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    let profile = args.profile.clone().unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    let mut config = reference_config(&catalog, &profile, &args.faults)?;
    config.seed = args.seed.unwrap_or_else(random_seed);
    config.control_api = !args.without_control_api;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&args.http).await.with_context(|| format!("binding {}", args.http))?;
        let addr = listener.local_addr()?;
        let faults: Vec<String> = config.faults.iter().map(|f| f.to_string()).collect();
        let mut notes = String::new();
        if !config.control_api {
            notes.push_str(" without the control API");
        }
        if !faults.is_empty() {
            notes.push_str(&format!(" with faults: {}", faults.join(", ")));
        }
        let reference = Reference::new(config);
        // A sender ready to use, for clients that cannot call the control API.
        let sender = reference.with_model(|m| m.create_sender());
        println!("gcmspec reference ({profile}) listening on http://{addr}{notes}");
        println!("sender id {}, server key {}", sender.sender_id, sender.server_key);
        let xmpp = match &args.xmpp {
            Some(x) => {
                let l = tokio::net::TcpListener::bind(x).await.with_context(|| format!("binding {x}"))?;
                println!("XMPP connection server on {} (plain TCP)", l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let on_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Some(l) = xmpp {
            tokio::spawn(reference::xmpp::serve(l, reference.clone(), on_stop(stopped.clone())));
        }
        if let Some(x) = &args.xmpp_tls {
            let l = tokio::net::TcpListener::bind(x).await.with_context(|| format!("binding {x}"))?;
            let addr = l.local_addr()?;
            let (identity, where_) = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => {
                    let read =
                        |f: &PathBuf| std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()));
                    (gcmspec::tls::Identity { cert_pem: read(cert)?, key_pem: read(key)? }, cert.clone())
                }
                _ => {
                    let identity = gcmspec::tls::generate()?;
                    let path = std::env::temp_dir().join(format!("gcmspec-xmpp-{}.pem", addr.port()));
                    std::fs::write(&path, &identity.cert_pem).with_context(|| format!("writing {}", path.display()))?;
                    (identity, path)
                }
            };
            let config = gcmspec::tls::server_config(&identity)?;
            println!("XMPP connection server on {addr} (direct TLS), certificate {}", where_.display());
            tokio::spawn(reference::xmpp::serve_tls(l, reference.clone(), config, on_stop(stopped.clone())));
        }
        let http = tokio::spawn(reference::serve(listener, reference, on_stop(stopped)));
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
        http.await??;
        Ok(ExitCode::SUCCESS)
    })
}

/// Unpredictable without a dependency: std's hasher keys come from the OS.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

fn selftest(args: SelftestArgs) -> anyhow::Result<ExitCode> {
    let catalog = Arc::new(load(&args.spec)?);
    let profile = args.profile.clone().unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    let config = reference_config(&catalog, &profile, &[])?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let report = harness::selftest(&catalog, &config, &Options::new(&profile), threads, |line| println!("{line}"));
    println!("clean reference: {} check(s) failed", report.clean_failures.len());
    println!("faults caught: {}/{}", report.caught(), report.rules.len());
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn lint(args: SpecArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args)?;
    let checks: usize = catalog.rules.iter().map(|r| r.checks.len()).sum();
    println!(
        "ok: {} rules, {checks} checks, {} profiles, {} documents",
        catalog.rules.len(),
        catalog.profiles.len(),
        catalog.documents.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn rules(args: RulesArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&catalog.rules)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &catalog.rules {
        println!("{} [{}] {}", r.id, r.level, r.title);
        for s in &r.sources {
            println!("    {} / {}: \"{}\"", s.document, s.section, s.quote);
        }
        let checks: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
        println!(
            "    profiles: {}; needs: {}; checks: {}",
            r.profiles.join(", "),
            if r.needs.is_empty() { "-".into() } else { r.needs.join(", ") },
            checks.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
