//! `gcmspec replay`: saved failures, run again.

use super::output::{say, say_raw};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use gcmspec::driver::Target;
use gcmspec::harness::{self, Options};

use super::{Connected, SpecArgs, TargetArgs, connect, load, run_id};

#[derive(Args)]
pub(crate) struct ReplayArgs {
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

pub(crate) fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let catalog = load(&args.spec)?;
    let mut replays = Vec::new();
    let mut clients = Vec::new();
    for file in &args.files {
        // A client library's failed case (`gcmspec client`) runs again through its driver.
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Ok(r) = serde_json::from_str::<super::client::ClientReplay>(&text)
            && r.schema == super::client::REPLAY_SCHEMA
        {
            clients.push((file.clone(), r));
            continue;
        }
        replays.push(harness::replay::Replay::read(file)?);
    }
    if !clients.is_empty() {
        if !replays.is_empty() {
            bail!("replay server checks and client cases in separate runs: they take different flags");
        }
        let mut still_failing = 0;
        for (file, r) in &clients {
            if args.curl {
                say!("# {} ({}), failed with {}:", r.name, file.display(), r.driver);
                say_raw!("{}", harness::evidence::curl_script(&r.exchanges, "http://127.0.0.1:4000", None));
                continue;
            }
            still_failing += usize::from(!super::client::replay(r, file)?);
        }
        return Ok(if still_failing > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    let base = args.to.target.clone().unwrap_or_else(|| "http://127.0.0.1:4000".into());
    if args.curl {
        for (file, r) in args.files.iter().zip(&replays) {
            say!(
                "# {} ({}), failed against {}:\n# {}",
                r.name,
                file.display(),
                r.target,
                r.failure.lines().next().unwrap_or("")
            );
            say_raw!("{}", harness::evidence::curl_script(&r.exchanges, base.trim_end_matches('/'), None));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut still_failing = 0;
    for (file, r) in args.files.iter().zip(&replays) {
        let Connected { target, caps, .. } = connect(&args.to, &catalog, Some(&r.profile), None)?;
        if let Some(why) = r.unsupported(&caps) {
            bail!("cannot replay {} ({}) against {}: {why}", r.name, file.display(), target.describe());
        }
        let mut options = Options::new(&r.profile);
        options.run_id = run_id();
        options.xmpp_timeout = Duration::from_secs_f64(args.to.xmpp_timeout.max(0.01));
        let run = r.run(target.as_ref(), &caps, &options);
        match run.result {
            Ok(()) => say!("passes now: {} ({}) against {}", r.name, file.display(), target.describe()),
            Err(e) => {
                still_failing += 1;
                say!("still fails: {} ({}) against {}\n{e}", r.name, file.display(), target.describe());
            }
        }
    }
    Ok(if still_failing > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
