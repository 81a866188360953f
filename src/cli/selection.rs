//! Which checks a run takes and how it shows them: the part of libtest's flags that means
//! something here, said in our words. libtest-mimic runs the trials; its own `Arguments`
//! is built from these, so `run --help` shows no flag that does nothing (`--bench`, `-Z`,
//! `--logfile`).

use clap::Args;
use libtest_mimic::{Arguments, ColorSetting, FormatSetting};

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Choosing checks")]
pub(crate) struct Selection {
    /// Run only the checks whose name contains FILTER: a rule id (`group.member-cap`), a
    /// check (`group.member-cap::create-over-cap`) or a path (`@xmpp`). `gcmspec rules`
    /// lists the rules; `--list` the checks.
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
    /// FILTER (and --skip) match a check's whole name.
    #[arg(long)]
    pub exact: bool,
    /// Leave out the checks whose name contains FILTER (repeatable).
    #[arg(long, value_name = "FILTER")]
    pub skip: Vec<String>,
    /// List the checks the run would take, and run none.
    #[arg(long)]
    pub list: bool,
    /// Checks run side by side (default: the cores; against --target, 8 at least).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub test_threads: Option<usize>,
    /// Also try the checks the target cannot support (they fail saying what is missing).
    #[arg(long)]
    pub include_ignored: bool,
    /// Try only the checks the target cannot support.
    #[arg(long, conflicts_with = "include_ignored")]
    pub ignored: bool,
    /// libtest's output: `pretty` (a line per check), `terse` (a character per check) or
    /// `json` (events).
    #[arg(long, value_enum, value_name = "FORMAT", hide_possible_values = true)]
    pub format: Option<FormatSetting>,
    /// Same as --format terse.
    #[arg(short, long, conflicts_with = "format")]
    pub quiet: bool,
    /// Colour in libtest's output: `auto` (on a terminal), `always` or `never`.
    #[arg(long, value_enum, value_name = "WHEN", hide_possible_values = true)]
    pub color: Option<ColorSetting>,
    /// libtest's line per check in place of the progress bar (as with --progress never).
    #[arg(long)]
    pub nocapture: bool,
}

impl Selection {
    /// The same choice in libtest-mimic's terms.
    pub fn libtest(&self) -> Arguments {
        Arguments {
            filter: self.filter.clone(),
            exact: self.exact,
            skip: self.skip.clone(),
            list: self.list,
            test_threads: self.test_threads,
            include_ignored: self.include_ignored,
            ignored: self.ignored,
            format: self.format,
            quiet: self.quiet,
            color: self.color,
            nocapture: self.nocapture,
            ..Arguments::default()
        }
    }
}

/// A count of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}
