//! `gcmspec run` on a terminal: a progress bar instead of libtest's line per trial.
//!
//! Terminal policy belongs to the binary, so this lives beside `main.rs`. It selects trials
//! with libtest-mimic's own filter (`Arguments::is_filtered_out`, `is_ignored`), so the same
//! flags pick the same checks either way, and records into the same [`Recorder`]. The bar
//! appears once a run has taken longer than a moment; failures are printed above it as they
//! happen, with their messages at the end, as libtest would.

use super::output::say;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gcmspec::harness::report::Recorder;
use gcmspec::harness::{self, Case, CheckRun};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// A bar when both stdout and stderr are terminals and CI is not set.
    Auto,
    Always,
    /// libtest's line per trial.
    Never,
}

/// How long a run goes before the bar appears.
const A_MOMENT: Duration = Duration::from_millis(250);
const REDRAW: Duration = Duration::from_millis(100);

/// Whether this run draws a bar: not when asked for libtest's own output (`--list`,
/// `--format`, `-q`, `--nocapture`).
pub fn wanted(mode: Progress, args: &libtest_mimic::Arguments) -> bool {
    use std::io::IsTerminal;
    let libtest_output = args.list || args.format.is_some() || args.quiet || args.nocapture;
    match mode {
        Progress::Never => false,
        Progress::Always => !libtest_output,
        Progress::Auto => {
            !libtest_output
                && std::io::stdout().is_terminal()
                && std::io::stderr().is_terminal()
                && std::env::var_os("CI").is_none()
        }
    }
}

struct State {
    done: usize,
    failed: usize,
    running: Vec<String>,
    drawn: bool,
}

/// Runs the selected cases with a progress bar on stderr; prints libtest's summary line.
pub fn run(cases: &[Case], recorder: &Recorder, args: &libtest_mimic::Arguments) {
    let trials = harness::trials(cases.to_vec(), "");
    let mut selected = Vec::new();
    let (mut filtered, mut ignored) = (0, 0);
    for (case, trial) in cases.iter().zip(&trials) {
        if args.is_filtered_out(trial) {
            filtered += 1;
        } else if args.is_ignored(trial) {
            ignored += 1;
        } else {
            selected.push(case);
        }
    }
    let total = selected.len();
    let start = Instant::now();
    let state = Mutex::new(State { done: 0, failed: 0, running: Vec::new(), drawn: false });
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let threads =
        args.test_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let failures: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            while lock().done < total {
                std::thread::sleep(REDRAW);
                if start.elapsed() > A_MOMENT {
                    draw(&mut lock(), total, start);
                }
            }
            clear(&mut lock());
        });
        harness::parallel_map(&selected, threads, |case| {
            lock().running.push(case.name.clone());
            let result = match &case.run {
                Ok(f) => {
                    recorder
                        .record(&case.name, || {
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f()))
                                .unwrap_or_else(|_| CheckRun::failed("the check panicked".into()))
                        })
                        .result
                }
                // Asked for with --ignored: an unsupported check fails, as in libtest.
                Err(why) => Err(format!("unsupported: {why}")),
            };
            let mut st = lock();
            st.running.retain(|n| *n != case.name);
            st.done += 1;
            if let Err(message) = result.as_ref().map_err(|e| e.as_str()) {
                if gcmspec::driver::TargetError::means_not_tried(message)
                    || gcmspec::harness::report::not_judged(message).is_some()
                {
                    return;
                }
                let message = message.to_string();
                st.failed += 1;
                clear(&mut st);
                eprintln!("FAILED {}", case.name);
                failures.lock().unwrap_or_else(|e| e.into_inner()).push((case.name.clone(), message));
                if start.elapsed() > A_MOMENT {
                    draw(&mut st, total, start);
                }
            }
        });
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    if !failures.is_empty() {
        say!("\nfailures:\n");
        for (name, message) in &failures {
            say!("---- {name} ----\n{message}\n");
        }
        say!("failures:");
        for (name, _) in &failures {
            say!("    {name}");
        }
    }
    say!(
        "\ntest result: {}. {} passed; {} failed; {ignored} ignored; 0 measured; {filtered} filtered out; finished in {:.2}s\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        total - failures.len(),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
}

fn clear(st: &mut State) {
    if st.drawn {
        eprint!("\r\x1b[2K");
        st.drawn = false;
    }
}

fn draw(st: &mut State, total: usize, start: Instant) {
    const WIDTH: usize = 30;
    let filled = (st.done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let bar: String = "█".repeat(filled) + &"░".repeat(WIDTH - filled);
    let failed = if st.failed > 0 { format!(" · {} failed", st.failed) } else { String::new() };
    let running = st.running.first().map(|n| format!(" · {n}")).unwrap_or_default();
    let mut line = format!("{bar} {}/{total} checks{failed} · {:.1}s{running}", st.done, start.elapsed().as_secs_f64());
    // One line: never wrap, or the next redraw cannot erase it.
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse::<usize>().ok()).unwrap_or(100);
    if line.chars().count() >= columns {
        line = line.chars().take(columns.saturating_sub(2)).collect();
    }
    eprint!("\r\x1b[2K{line}");
    let _ = std::io::stderr().flush();
    st.drawn = true;
}
