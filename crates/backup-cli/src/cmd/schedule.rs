//! `sqlite-backup schedule print`: service files that run `daemon --once`
//! on a timer, with the absolute path of this binary and of the config.
//!
//! - systemd: a `oneshot` service plus a timer (`OnBootSec`, then
//!   `OnUnitActiveSec` = the interval). Logs go to the journal (and to
//!   `--log-file` when given).
//! - launchd: a plist with `StartInterval` (seconds) and `RunAtLoad`; stderr
//!   goes to `--log-file` when given, else `sqlite-backup.log` in the state
//!   folder.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::Exit;
use crate::args::{Cli, LogFormat, ScheduleCommand};
use crate::interval;
use crate::settings::{self, UsageError};

/// Name of the systemd units and the launchd job.
const NAME: &str = "sqlite-backup";
/// launchd job label.
const LAUNCHD_LABEL: &str = "org.sqlite-backup.backup";
/// systemd: first run this long after boot (or the interval, if shorter).
const BOOT_DELAY: Duration = Duration::from_secs(5 * 60);

/// What the service files need.
#[derive(Debug, Clone)]
pub struct Job {
    /// Absolute path of the `sqlite-backup` binary.
    pub binary: PathBuf,
    /// Absolute path of the config file.
    pub config: PathBuf,
    /// Time between runs.
    pub every: Duration,
    /// `--log-file`, absolute, when given.
    pub log_file: Option<PathBuf>,
    /// `--log-format json` was given.
    pub json_logs: bool,
    /// The config's state folder (absolute), for launchd's default log.
    pub state_dir: PathBuf,
    /// `[drill] every`, when drills are scheduled.
    pub drill_every: Option<Duration>,
}

/// What the scheduled runs do about restore drills, one line.
fn drill_line(job: &Job) -> String {
    match job.drill_every {
        Some(d) => format!(
            "Restore drills: every {} ([drill] every); a run also drills when one is due.",
            interval::format(d)
        ),
        None => {
            "Restore drills: off (set [drill] every = \"24h\" to have these runs drill).".into()
        }
    }
}

pub fn run(cli: &Cli, cmd: &ScheduleCommand) -> Result<Exit> {
    let ScheduleCommand::Print(args) = cmd;
    let every = interval::parse(&args.interval)?;
    let config_path = std::fs::canonicalize(&cli.config).map_err(|e| {
        UsageError(format!(
            "config {}: {e} (schedule print needs the config the service will use)",
            cli.config.display()
        ))
    })?;
    let config = settings::load_config(&config_path)?;
    let binary = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("finding the path of this binary")?;
    let log_file = match &cli.log_file {
        Some(p) => Some(std::path::absolute(p).context("resolving --log-file")?),
        None => None,
    };
    let job = Job {
        binary,
        config: config_path,
        every,
        log_file,
        json_logs: cli.log_format == LogFormat::Json,
        state_dir: std::path::absolute(&config.state_dir).context("resolving state_dir")?,
        drill_every: config.drill.map(|d| d.every),
    };
    if args.systemd {
        out!("{}", systemd(&job));
    } else {
        out!("{}", launchd(&job));
    }
    Ok(Exit::Ok)
}

/// The global flags a scheduled run gets.
fn log_args(job: &Job, with_file: bool) -> Vec<String> {
    let mut out = Vec::new();
    if job.json_logs {
        out.extend(["--log-format".into(), "json".into()]);
    }
    if with_file && let Some(f) = &job.log_file {
        out.extend(["--log-file".into(), f.display().to_string()]);
    }
    out
}

/// systemd's quoting for one `ExecStart` word: `%` doubled; quoted when it
/// holds whitespace, quotes or backslashes.
fn systemd_word(word: &str) -> String {
    let w = word.replace('%', "%%");
    if w.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
    {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        w
    }
}

/// A systemd service + timer pair, as one text with install instructions.
pub fn systemd(job: &Job) -> String {
    let every = interval::format(job.every);
    let boot = interval::format(job.every.min(BOOT_DELAY));
    let mut words = vec![job.binary.display().to_string()];
    words.extend(log_args(job, true));
    words.extend([
        "--config".into(),
        job.config.display().to_string(),
        "daemon".into(),
        "--once".into(),
    ]);
    let exec = words
        .iter()
        .map(|w| systemd_word(w))
        .collect::<Vec<_>>()
        .join(" ");
    let config = job.config.display();
    let drill = drill_line(job);
    let mut s = String::new();
    let _ = write!(
        s,
        "\
# systemd units for sqlite-backup ({config}), one run every {every}.
# {drill}
# Save the two files below (system-wide in /etc/systemd/system/, or per user
# in ~/.config/systemd/user/ and add --user to systemctl), then:
#   systemctl daemon-reload
#   systemctl enable --now {NAME}.timer
# Check: systemctl list-timers {NAME}.timer; journalctl -u {NAME}.service

# ---- {NAME}.service ----
[Unit]
Description=sqlite-backup: one backup run of {config}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={exec}
# SIGTERM stops cleanly: the database in flight is abandoned (nothing
# incomplete is kept), the state file is written, exit 0.
KillSignal=SIGTERM
TimeoutStopSec=2min
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7

# ---- {NAME}.timer ----
[Unit]
Description=sqlite-backup every {every}

[Timer]
OnBootSec={boot}
OnUnitActiveSec={every}
AccuracySec=1min
Unit={NAME}.service

[Install]
WantedBy=timers.target
"
    );
    s
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A launchd plist (`StartInterval`), with install instructions in a comment.
pub fn launchd(job: &Job) -> String {
    let mut args = vec![job.binary.display().to_string()];
    args.extend(log_args(job, false));
    args.extend([
        "--config".into(),
        job.config.display().to_string(),
        "daemon".into(),
        "--once".into(),
    ]);
    let program = args
        .iter()
        .map(|a| format!("        <string>{}</string>\n", xml(a)))
        .collect::<String>();
    let log: PathBuf = job
        .log_file
        .clone()
        .unwrap_or_else(|| job.state_dir.join("sqlite-backup.log"));
    let log = xml(&log.display().to_string());
    let seconds = job.every.as_secs();
    let config = xml(&job.config.display().to_string());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!--
  sqlite-backup ({config}), one run every {every} ({seconds} s).
  {drill}
  Save as ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist, then:
    launchctl load ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist
  Check: launchctl list | grep {LAUNCHD_LABEL}   (last column: exit code of the last run)
-->
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{LAUNCHD_LABEL}</string>
    <key>ProgramArguments</key>
    <array>
{program}    </array>
    <key>StartInterval</key>
    <integer>{seconds}</integer>
    <key>RunAtLoad</key>
    <true/>
    <key>ProcessType</key>
    <string>Background</string>
    <key>LowPriorityIO</key>
    <true/>
    <key>StandardOutPath</key>
    <string>{log}</string>
    <key>StandardErrorPath</key>
    <string>{log}</string>
</dict>
</plist>
"#,
        every = interval::format(job.every),
        drill = xml(&drill_line(job)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            binary: "/opt/sqlite backup/bin/sqlite-backup".into(),
            config: "/etc/sb/100%.toml".into(),
            every: Duration::from_secs(90),
            log_file: Some("/var/log/sb.log".into()),
            json_logs: true,
            state_dir: "/etc/sb/.sqlite-backup-state".into(),
            drill_every: Some(Duration::from_secs(86_400)),
        }
    }

    #[test]
    fn systemd_quotes_and_escapes_exec_start() {
        let s = systemd(&job());
        assert!(
            s.contains("ExecStart=\"/opt/sqlite backup/bin/sqlite-backup\" --log-format json --log-file /var/log/sb.log --config /etc/sb/100%%.toml daemon --once\n"),
            "{s}"
        );
        assert!(
            s.contains("# Restore drills: every 1d ([drill] every)"),
            "{s}"
        );
        // Interval shorter than the boot delay: first run after one interval.
        assert!(
            s.contains("OnBootSec=1m30s\nOnUnitActiveSec=1m30s\n"),
            "{s}"
        );
    }

    #[test]
    fn launchd_escapes_and_logs_to_the_log_file() {
        let mut j = job();
        j.config = "/etc/a&b.toml".into();
        let s = launchd(&j);
        assert!(s.contains("<string>/etc/a&amp;b.toml</string>"), "{s}");
        assert!(s.contains("<integer>90</integer>"), "{s}");
        assert!(
            s.contains("<key>StandardErrorPath</key>\n    <string>/var/log/sb.log</string>"),
            "{s}"
        );
        assert!(!s.contains("--log-file"), "{s}");
    }
}
