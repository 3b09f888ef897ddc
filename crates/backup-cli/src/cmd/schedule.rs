//! `sqlite-backup schedule print`: service files that run `daemon --once`
//! on a timer (or, for an interval under a minute, one long-running
//! daemon), with the absolute path of this binary and of the config.
//!
//! - systemd: a `oneshot` service plus a timer (`OnCalendar` when the
//!   interval divides a day, with `Persistent` and `RandomizedDelaySec`),
//!   sandboxed: read-only but for the folders the config writes, no
//!   privileges (`systemd-analyze security` scores it in the tests). Logs go
//!   to the journal (and to `--log-file` when given).
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
    /// systemd `User=`.
    pub user: Option<String>,
    /// Folders the runs write (absolute): each database's (SQLite writes
    /// `-shm` beside a WAL database), the state folder, the local and cold
    /// roots, the metrics file's and the log file's.
    pub writes: Vec<PathBuf>,
}

/// The folders a run writes into, for systemd's `ReadWritePaths=`.
fn written_folders(config: &backup_config::Config, log_file: Option<&PathBuf>) -> Vec<PathBuf> {
    let parent = |p: &std::path::Path| p.parent().map(std::path::Path::to_path_buf);
    let mut out: Vec<PathBuf> = config
        .databases
        .iter()
        .filter_map(|d| parent(&d.database.path))
        .chain([config.state_dir.clone(), config.local.root.clone()])
        .chain(config.local.cold.clone())
        .chain(config.metrics.textfile.as_deref().and_then(parent))
        .chain(log_file.and_then(|f| parent(f)))
        .filter_map(|p| std::path::absolute(p).ok())
        .collect();
    out.sort();
    out.dedup();
    out
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
        user: args.user.clone(),
        writes: written_folders(&config, cli.log_file.as_ref()),
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

/// The timer's schedule for `every`: a calendar time when the interval
/// divides a day into whole minutes (runs then land at the same clock
/// times, and `Persistent=true` catches up one missed while the machine was
/// off), else a monotonic interval.
fn timer_schedule(every: Duration) -> String {
    let secs = every.as_secs();
    let calendar = match secs {
        86_400 => Some("daily".to_string()),
        s if s % 3600 == 0 && 86_400 % s == 0 => Some(format!("*-*-* 00/{}:00:00", s / 3600)),
        s if s % 60 == 0 && 3600 % s == 0 => Some(format!("*-*-* *:00/{}:00", s / 60)),
        _ => None,
    };
    let jitter = interval::format(Duration::from_secs((secs / 10).clamp(1, 300)));
    match calendar {
        Some(c) => format!("OnCalendar={c}\nPersistent=true\nRandomizedDelaySec={jitter}\n"),
        None => format!(
            "# {} does not divide a day into whole minutes: an interval instead.\n\
             OnBootSec={}\nOnUnitActiveSec={}\nRandomizedDelaySec={jitter}\n",
            interval::format(every),
            interval::format(every.min(BOOT_DELAY)),
            interval::format(every)
        ),
    }
}

/// The sandbox every sqlite-backup unit runs in: read-only everywhere but
/// the folders it writes, no privileges, no devices, no kernel knobs, and
/// only the system calls a network service needs. `systemd-analyze
/// security` scores it (the tests keep it at or below 3.0).
fn hardening(job: &Job) -> String {
    let mut s = String::new();
    match &job.user {
        Some(u) => {
            let _ = writeln!(s, "User={}", systemd_word(u));
        }
        None => s.push_str(
            "# Runs as root: `schedule print --systemd --user NAME` names the account\n\
             # that owns the databases instead.\n",
        ),
    }
    let paths: Vec<String> = job
        .writes
        .iter()
        .map(|p| format!("-{}", systemd_word(&p.display().to_string())))
        .collect();
    let _ = write!(
        s,
        "\
UMask=0077
ReadWritePaths={}
ProtectSystem=strict
PrivateMounts=yes
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
",
        paths.join(" ")
    );
    s
}

/// The `[Service]` settings both kinds of unit share.
fn service_settings(job: &Job) -> String {
    format!(
        "\
# SIGTERM stops cleanly: the database in flight is abandoned (nothing
# incomplete is kept), the state file is written, exit 0.
KillSignal=SIGTERM
TimeoutStopSec=2min
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
{}",
        hardening(job)
    )
}

/// systemd units, as one text with install instructions: a `oneshot`
/// service and its timer, or for an interval under a minute (continuous
/// protection) one long-running `daemon` service.
pub fn systemd(job: &Job) -> String {
    let every = interval::format(job.every);
    let continuous = job.every < Duration::from_secs(60);
    let mut words = vec![job.binary.display().to_string()];
    words.extend(log_args(job, true));
    words.extend([
        "--config".into(),
        job.config.display().to_string(),
        "daemon".into(),
    ]);
    match continuous {
        true => words.extend(["--interval".into(), every.clone()]),
        false => words.push("--once".into()),
    }
    let exec = words
        .iter()
        .map(|w| systemd_word(w))
        .collect::<Vec<_>>()
        .join(" ");
    let config = job.config.display();
    let drill = drill_line(job);
    let service = service_settings(job);
    let mut s = String::new();
    if continuous {
        let _ = write!(
            s,
            "\
# A systemd unit for sqlite-backup ({config}): one daemon, a run every {every}.
# {drill}
# Save the file below in /etc/systemd/system/, then:
#   systemctl daemon-reload
#   systemctl enable --now {NAME}.service
# Check: systemctl status {NAME}.service; journalctl -u {NAME}.service

# ---- {NAME}.service ----
[Unit]
Description=sqlite-backup: continuous backups of {config}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exec}
Restart=on-failure
RestartSec=5s
{service}
[Install]
WantedBy=multi-user.target
"
        );
        return s;
    }
    let schedule = timer_schedule(job.every);
    let _ = write!(
        s,
        "\
# systemd units for sqlite-backup ({config}), one run every {every}.
# {drill}
# Save the two files below in /etc/systemd/system/, then:
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
{service}
# ---- {NAME}.timer ----
[Unit]
Description=sqlite-backup every {every}

[Timer]
{schedule}AccuracySec=1s
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
    launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist
  Check: launchctl print gui/$(id -u)/{LAUNCHD_LABEL}   (last exit code, next run)
  Remove: launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}
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
            user: Some("app".into()),
            writes: vec!["/srv/app data".into(), "/var/lib/sb".into()],
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
        // 90 s does not divide an hour: a monotonic interval.
        assert!(
            s.contains("OnBootSec=1m30s\nOnUnitActiveSec=1m30s\n"),
            "{s}"
        );
        assert!(s.contains("User=app\n"), "{s}");
        assert!(
            s.contains("ReadWritePaths=-\"/srv/app data\" -/var/lib/sb\n"),
            "{s}"
        );
    }

    #[test]
    fn systemd_timers_land_on_the_clock_and_seconds_run_a_daemon() {
        let at = |secs: u64| {
            let mut j = job();
            j.every = Duration::from_secs(secs);
            systemd(&j)
        };
        assert!(at(4 * 3600).contains("OnCalendar=*-*-* 00/4:00:00\nPersistent=true\n"));
        assert!(at(15 * 60).contains("OnCalendar=*-*-* *:00/15:00\n"));
        assert!(at(86_400).contains("OnCalendar=daily\n"));
        let continuous = at(1);
        assert!(
            continuous.contains("daemon --interval 1s\n"),
            "{continuous}"
        );
        assert!(continuous.contains("Type=simple\n") && !continuous.contains("[Timer]"));
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
