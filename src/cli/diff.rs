//! `gcmspec diff`: the reference and a target, answer by answer.

use super::output::say;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use gcmspec::driver::{InProcess, Target};
use gcmspec::harness::{self, Options};
use gcmspec::reference::Reference;

use super::{Connected, SpecArgs, TargetArgs, connect, load, reference_config};

#[derive(Args)]
pub(crate) struct DiffArgs {
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
    /// Cases per property search, on each side (their verdicts and minimal sequences are compared).
    #[arg(long, default_value_t = harness::diff::DEFAULT_CASES)]
    cases: u32,
    /// Write the differences as JSON (schema gcmspec-diff/2).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Threads to run checks on (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Compare only checks whose name contains one of these.
    filters: Vec<String>,
}

pub(crate) fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    if args.to.target.is_none() && args.to.faults.is_empty() && args.to.variants.is_empty() {
        bail!("diff compares the reference with --target URL (or with itself under --fault NAME or --variant NAME)");
    }
    let Connected { target, caps, .. } = connect(&args.to, &catalog, args.profile.as_deref(), None)?;
    let profile = args
        .profile
        .clone()
        .or_else(|| caps.profile.clone())
        .unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    let reference = InProcess::new(Reference::new(reference_config(&catalog, &profile, &[], &[])?.without_journal()));
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
        say!("\nDIFFERS {} ({outcomes})", d.name);
        if let Some(why) = &d.target_failure {
            for line in why.lines().take(12) {
                say!("    {line}");
            }
        }
        for step in &d.steps {
            say!("  step {}, which no expectation judges, answered otherwise:", step.step);
            for line in step.diff.lines() {
                say!("    {line}");
            }
        }
        if let Some((ours, theirs)) = &d.sequences {
            say!("  both fail, with other minimal sequences:\n    reference: {ours}\n    target:    {theirs}");
        }
    }
    if !report.choices.is_empty() {
        say!("\nStated choices (answers the documents allow, taken otherwise; not differences):");
        for c in &report.choices {
            say!("    {} step {}: reference `{}`, target `{}`", c.check, c.step, c.reference, c.target);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    say!(
        "\ngcmspec diff: {} checks compared ({} sequences per property, seed {}): {} identical, {} differ; {} stated choice(s); {} unsupported by the target",
        report.compared,
        report.cases,
        report.seed,
        report.identical,
        report.differences.len(),
        report.choices.len(),
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
