//! The `gcmspec` command line: a thin layer over the library. Port choice, signals and
//! exit codes live here; each command is a module of `cli`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Why not the system allocator: Cargo.toml (measured in benches/load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cli::SpecArgs;
use cli::client::{ClientArgs, MatrixArgs};
use cli::diff::DiffArgs;
use cli::reference_client::ReferenceClientArgs;
use cli::replay::ReplayArgs;
use cli::rules::{RulesArgs, SelftestArgs};
use cli::run::RunArgs;
use cli::serve::ServeArgs;

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
    /// Serve the reference (HTTP, and XMPP when asked) until interrupted: a stateful fake
    /// that also journals and judges the app servers that use it.
    Serve(Box<ServeArgs>),
    /// Run the suite against the clean reference and against each rule's fault.
    Selftest(SelftestArgs),
    /// Check the spec files and report every problem.
    Lint(SpecArgs),
    /// List every rule with its level, source and checks.
    Rules(RulesArgs),
    /// Judge a client library, through its driver, against the app-server rules.
    Client(Box<ClientArgs>),
    /// Make docs/client-matrix.md from the libraries' results files.
    Matrix(MatrixArgs),
    /// The project's own app server behind the driver contract (`gcmspec client --driver
    /// "gcmspec reference-client"`), correct or broken one duty at a time.
    #[command(hide = true)]
    ReferenceClient(ReferenceClientArgs),
    /// Run saved failures (replay files) again and say whether they still fail.
    Replay(ReplayArgs),
    /// Run the same checks and generated sequences against the reference and a target, and
    /// show where their normalized responses differ.
    Diff(Box<DiffArgs>),
}

fn main() -> ExitCode {
    quiet_expected_panics();
    match cli::output::quiet_on_closed_stdout(real_main) {
        Some(Ok(code)) => code,
        Some(Err(e)) if broken_pipe(&e) => ExitCode::from(cli::output::CLOSED_PIPE),
        Some(Err(e)) => {
            eprintln!("error: {}", gcmspec::driver::error_chain(e.as_ref()));
            ExitCode::from(2)
        }
        None => ExitCode::from(cli::output::CLOSED_PIPE),
    }
}

/// An error that is a write to a closed stdout, anywhere in its chain.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help, the version and usage errors (a reader that left is no error here either).
        Err(e) => {
            let _ = e.print();
            return Ok(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)));
        }
    };
    match cli.command {
        Command::Run(args) => cli::run::run(*args),
        Command::Serve(args) => cli::serve::serve(*args),
        Command::Selftest(args) => cli::rules::selftest(args),
        Command::Lint(args) => cli::rules::lint(args),
        Command::Rules(args) => cli::rules::rules(args),
        Command::Client(args) => cli::client::client(*args),
        Command::Matrix(args) => cli::client::matrix(args),
        Command::ReferenceClient(args) => cli::reference_client::reference_client(args),
        Command::Replay(args) => cli::replay::replay(args),
        Command::Diff(args) => cli::diff::diff(*args),
    }
}

/// A snapshot mismatch is reported by insta as a panic, which the harness catches and turns
/// into the check's failure; its "thread panicked at" line would read as a crash. So would
/// the main thread's write to a closed stdout, which `main` ends quietly. Any other panic is
/// still shown as one.
fn quiet_expected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        let main_thread = std::thread::current().name() == Some("main");
        let expected =
            text.starts_with("snapshot assertion for ") || (main_thread && cli::output::closed_pipe(payload));
        if !expected {
            default(info);
        }
    }));
}
