//! `gcmspec selftest`, `lint` and `rules`: the spec files and the reference, checked and listed.

use super::output::{say, say_raw};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use gcmspec::harness::{self, Options};

use super::{SpecArgs, load, reference_config};

#[derive(Args)]
pub(crate) struct SelftestArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[arg(long)]
    profile: Option<String>,
    /// Threads to run checks on (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// List the faults and legal variants the reference has, and stop.
    #[arg(long)]
    list: bool,
}

#[derive(Args)]
pub(crate) struct RulesArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Print the catalogue as JSON (schema gcmspec-rules/3).
    #[arg(long)]
    json: bool,
    /// The profile whose values the rules show (default: fcm).
    #[arg(long)]
    profile: Option<String>,
    /// Write the bundled spec files (and their source documents, in `sources/`) to DIR, to
    /// change a rule's parameters and serve or run with `--specs DIR`; DIR must not hold them
    /// already.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["json", "profile"])]
    export: Option<std::path::PathBuf>,
}

pub(crate) fn selftest(args: SelftestArgs) -> anyhow::Result<ExitCode> {
    let catalog = Arc::new(load(&args.spec)?);
    let profile = args.profile.clone().unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    if args.list {
        let (faults, unmade) = harness::selftest::all_faults(&catalog);
        for f in &faults {
            let kind = match f {
                harness::selftest::AnyFault::Designed(_) => "fault  ",
                harness::selftest::AnyFault::Generated(_) => "made   ",
            };
            say!("{kind} {:<64} {}", f.name(), f.description());
        }
        for v in gcmspec::reference::Variant::ALL {
            say!("variant {:<64} {}", v.name(), v.description());
        }
        for u in &unmade {
            say!("unmade  {:<64} {}", u.rule, u.what);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = reference_config(&catalog, &profile, &[], &[])?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let report = harness::selftest(&catalog, &config, &Options::new(&profile), threads, |line| say!("{line}"));
    say!("clean reference: {} check(s) failed", report.clean_failures.len());
    if !report.rules_without_fault.is_empty() {
        say!("rules no fault breaks: {}", report.rules_without_fault.join(", "));
    }
    say!("{}", report.summary());
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(crate) fn lint(args: SpecArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args)?;
    let checks: usize = catalog.rules.iter().map(|r| r.checks.len()).sum();
    say!(
        "ok: {} server rules with {checks} checks, {} app-server rules with graders, {} profiles, {} documents",
        catalog.server_rules().count(),
        catalog.app_server_rules().count(),
        catalog.profiles.len(),
        catalog.documents.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn rules(args: RulesArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.export {
        return export(dir);
    }
    let catalog = load(&args.spec)?;
    let profile = args.profile.clone().unwrap_or_else(|| gcmspec::bundled::DEFAULT_PROFILE.into());
    if !catalog.profiles.contains_key(&profile) {
        anyhow::bail!(
            "unknown profile `{profile}` (known: {})",
            catalog.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let view = harness::rules::view(&catalog, &profile);
    let text = if args.json { serde_json::to_string_pretty(&view)? + "\n" } else { harness::rules::render_text(&view) };
    say_raw!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The bundled spec files and sources, as `specs/` held them, into `dir` (created); nothing
/// there is overwritten.
fn export(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let files = gcmspec::bundled::SPEC_FILES.iter().chain(gcmspec::bundled::SOURCE_FILES);
    let targets: Vec<(std::path::PathBuf, &str)> =
        files.map(|(path, text)| (dir.join(path.strip_prefix("specs/").unwrap_or(path)), *text)).collect();
    if let Some((taken, _)) = targets.iter().find(|(p, _)| p.exists()) {
        anyhow::bail!("{} is there already: export to a new directory", taken.display());
    }
    std::fs::create_dir_all(dir.join("sources")).with_context(|| format!("creating {}", dir.display()))?;
    for (path, text) in &targets {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let (specs, sources, dir) =
        (gcmspec::bundled::SPEC_FILES.len(), gcmspec::bundled::SOURCE_FILES.len(), dir.display());
    say!("{specs} spec files and {sources} sources written to {dir}; serve or run them with --specs {dir}");
    Ok(ExitCode::SUCCESS)
}
