//! What the commands print on stdout. Whoever reads it may stop before the end (`| head`), or
//! may have gone before the start: that changes neither what a command does nor how it exits.
//! The first write that finds the pipe closed points stdout at nothing, and the command goes
//! on to its verdict (a run, a replay, a diff, a selftest) or its end (a listing).

use std::io::Write;

/// Writes `args` to stdout, and flushes them; a closed pipe silences stdout from then on.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        silence_stdout();
    }
}

/// Points stdout at /dev/null: nothing written later fails, or is seen.
pub(crate) fn silence_stdout() {
    #[cfg(unix)]
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open; dup2 replaces stdout's with the null device's.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// How a command ends if a write to a closed stdout still panics in it (the commands' own
/// printing goes through `write` here, which does not, and libtest-mimic's through
/// `cli::run::run_trials`): as a Unix tool that SIGPIPE ended, without a panic's message.
pub(crate) const CLOSED_PIPE: u8 = 128 + 13;

/// Whether a panic is a write to a closed stdout (or stderr): whoever read it stopped, as
/// `gcmspec rules | head` does. std's `println!` panics with "failed printing to stdout:
/// Broken pipe"; libtest-mimic unwraps the `io::Error` (`kind: BrokenPipe`).
pub(crate) fn closed_pipe(payload: &dyn std::any::Any) -> bool {
    let text = payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied());
    text.is_some_and(|t| t.contains("Broken pipe") || t.contains("BrokenPipe"))
}

/// Runs `f`; a panic on writing to a closed stdout (a broken pipe) is returned as `None`, any
/// other goes on as it would. (The binary's panic hook keeps the first kind quiet.)
pub(crate) fn quiet_on_closed_stdout<R>(f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) if closed_pipe(&*payload) => None,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// `println!` for the commands: a reader that left does not stop them.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the commands.
macro_rules! say_raw {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

pub(crate) use {say, say_raw};
