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
