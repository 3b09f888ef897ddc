//! `sqlite-backup`: the command-line face of backup-core. It parses flags,
//! resolves them with the config file and hands the work to the libraries;
//! it formats results and turns errors into exit codes (0 ok, 1 failed,
//! 2 bad usage or config).

/// `print!` that drops what a closed stdout cannot take. Rust ignores
/// SIGPIPE, so `print!` into a pipe whose reader left (`list | head -1`)
/// panics; a reader that has seen enough is no failure of the command,
/// which goes on to its own end and exit code (a backup is not abandoned
/// because its summary's reader left).
/// While a command's `--json` owns stdout ([`output::json_owns_stdout`]),
/// its text for people goes to stderr instead.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = match $crate::output::human_on_stderr() {
            true => write!(std::io::stderr(), $($arg)*),
            false => write!(std::io::stdout(), $($arg)*),
        };
    }};
}

/// `println!` as [`out!`] is `print!`.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => { out!("{}\n", format_args!($($arg)*)) };
}

mod alerts;
mod args;
mod charts;
mod cmd;
mod health;
mod history;
mod interval;
mod jobs;
mod lock;
mod logging;
mod metrics;
mod output;
mod progress;
mod settings;
mod shell;
mod signals;
mod state;

use std::process::ExitCode;

/// How a command ended, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything succeeded.
    Ok = 0,
    /// Some database failed, or corruption was found.
    Failed = 1,
    /// Bad usage or config.
    Usage = 2,
}

fn main() -> ExitCode {
    let cli = args::Cli::parse_with_build();
    if let Err(e) = logging::init(
        cli.log_format,
        cli.color,
        cli.quiet,
        cli.log_file.as_deref(),
    ) {
        eprintln!("error: {e:#}");
        return ExitCode::from(Exit::Usage as u8);
    }
    // A daemon reads its sinks' catalogs every run; each run then reads only
    // what was appended since the last (see backup_core's view::memo).
    backup_core::manifest::view::memo::remember();
    let result = cmd::run(&cli);
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            let usage = e.downcast_ref::<settings::UsageError>().is_some();
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {e:#}");
            if usage { Exit::Usage } else { Exit::Failed }
        }
    };
    ExitCode::from(exit as u8)
}
