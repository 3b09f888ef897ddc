//! Delivering failure alerts and recovery messages: a Slack-compatible
//! webhook (`POST {"text": …}`) and/or a command with the details in
//! `SQLITE_BACKUP_*` environment variables.
//!
//! The webhook URL is a secret (it is the credential): it never appears in a
//! log line or error message; HTTP errors are reported without it.

use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use crate::state::Event;
use backup_config::Alerts;
use secrecy::ExposeSecret;
use tracing::{info, warn};

/// How long one webhook POST may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the alert command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the message is about: backups and restore drills have their own
/// streaks and their own wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// A backup run.
    Backup,
    /// A restore drill.
    Drill,
}

impl Job {
    /// `backup` or `drill` (`SQLITE_BACKUP_JOB`).
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Backup => "backup",
            Job::Drill => "drill",
        }
    }
}

/// One message about one database.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// Backup or drill.
    pub job: Job,
    /// Database label.
    pub label: &'a str,
    /// What happened.
    pub event: &'a Event,
    /// The run that caused it.
    pub run_id: &'a str,
    /// The config file (names the installation in the message).
    pub config: &'a std::path::Path,
}

impl Notice<'_> {
    /// `failure` or `recovery` (`SQLITE_BACKUP_EVENT`).
    pub fn kind(&self) -> &'static str {
        match self.event {
            Event::Alert { .. } => "failure",
            Event::Recovery { .. } => "recovery",
        }
    }

    /// The consecutive failure count the message is about.
    pub fn failures(&self) -> u32 {
        match self.event {
            Event::Alert { failures, .. } | Event::Recovery { failures } => *failures,
        }
    }

    /// The error, for failures.
    pub fn error(&self) -> &str {
        match self.event {
            Event::Alert { error, .. } => error,
            Event::Recovery { .. } => "",
        }
    }

    /// The human text (the webhook's `text`, `SQLITE_BACKUP_TEXT`).
    pub fn text(&self) -> String {
        let host = hostname();
        if self.job == Job::Drill {
            return match self.event {
                Event::Alert { failures, error } => format!(
                    ":rotating_light: sqlite-backup on {host}: restore drill of `{}` failed {failures} time{} in a row ({}): its backups may not restore. {error}",
                    self.label,
                    if *failures == 1 { "" } else { "s" },
                    self.run_id
                ),
                Event::Recovery { failures } => format!(
                    ":white_check_mark: sqlite-backup on {host}: restore drill of `{}` passed again ({}) after {failures} failed drill{}.",
                    self.label,
                    self.run_id,
                    if *failures == 1 { "" } else { "s" }
                ),
            };
        }
        match self.event {
            Event::Alert { failures, error } => format!(
                ":rotating_light: sqlite-backup on {host}: backup of `{}` failed {failures} runs in a row (run {}). Last error: {error}",
                self.label, self.run_id
            ),
            Event::Recovery { failures } => format!(
                ":white_check_mark: sqlite-backup on {host}: backup of `{}` recovered: run {} succeeded after {failures} failed run{}.",
                self.label,
                self.run_id,
                if *failures == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Send `notice` through every configured channel. Returns true when it
/// reached at least one (or none is configured: the log line is then the
/// only alert), false when every configured channel failed.
pub fn send(alerts: Option<&Alerts>, notice: &Notice<'_>) -> bool {
    let webhook = alerts.and_then(|a| a.webhook.as_ref());
    let command = alerts.and_then(|a| a.command.as_deref());
    if webhook.is_none() && command.is_none() {
        warn!(
            "alert not sent label={} event={}: no webhook or command under [alerts]",
            notice.label,
            notice.kind()
        );
        return true;
    }
    let mut delivered = false;
    if let Some(url) = webhook {
        match post_webhook(url.expose_secret(), &notice.text()) {
            Ok(()) => {
                info!(
                    "alert sent label={} job={} event={} via=webhook",
                    notice.label,
                    notice.job.as_str(),
                    notice.kind()
                );
                delivered = true;
            }
            Err(e) => warn!(
                "alert webhook failed label={} event={}: {e}",
                notice.label,
                notice.kind()
            ),
        }
    }
    if let Some(cmd) = command {
        match run_command(cmd, notice) {
            Ok(()) => {
                info!(
                    "alert sent label={} job={} event={} via=command",
                    notice.label,
                    notice.job.as_str(),
                    notice.kind()
                );
                delivered = true;
            }
            Err(e) => warn!(
                "alert command failed label={} event={}: {e}",
                notice.label,
                notice.kind()
            ),
        }
    }
    delivered
}

/// POST `{"text": text}`; one retry after a short pause. Errors never
/// contain the URL.
fn post_webhook(url: &str, text: &str) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .user_agent(concat!("sqlite-backup/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {}", e.without_url()))?;
    let body = serde_json::json!({ "text": text });
    let mut last = String::new();
    for attempt in 0..2 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        match client
            .post(url)
            .json(&body)
            .send()
            .and_then(|r| r.error_for_status())
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                // A 4xx will not get better by retrying.
                let give_up = e.status().is_some_and(|s| s.is_client_error());
                last = e.without_url().to_string();
                if give_up {
                    break;
                }
            }
        }
    }
    Err(format!("POST to the configured webhook: {last}"))
}

/// Run the command through the shell with the details in the environment.
fn run_command(cmd: &str, notice: &Notice<'_>) -> Result<(), String> {
    let env: [(&str, OsString); 8] = [
        ("SQLITE_BACKUP_EVENT", notice.kind().into()),
        ("SQLITE_BACKUP_JOB", notice.job.as_str().into()),
        ("SQLITE_BACKUP_LABEL", notice.label.into()),
        ("SQLITE_BACKUP_ERROR", notice.error().into()),
        (
            "SQLITE_BACKUP_FAILURES",
            notice.failures().to_string().into(),
        ),
        ("SQLITE_BACKUP_RUN_ID", notice.run_id.into()),
        ("SQLITE_BACKUP_CONFIG", notice.config.into()),
        ("SQLITE_BACKUP_TEXT", notice.text().into()),
    ];
    crate::shell::run(cmd, env, false, COMMAND_TIMEOUT).map_err(|e| e.to_string())
}

/// This machine's name, for the message (best effort).
fn hostname() -> String {
    let from_file = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| from_file("/proc/sys/kernel/hostname"))
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| {
            Command::new("hostname")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_label_error_and_count() {
        let alert = Event::Alert {
            failures: 3,
            error: "file is not a database".into(),
        };
        let n = Notice {
            job: Job::Backup,
            label: "mission-control",
            event: &alert,
            run_id: "r1",
            config: "x.toml".as_ref(),
        };
        let t = n.text();
        assert!(
            t.contains("`mission-control` failed 3 runs in a row"),
            "{t}"
        );
        assert!(t.contains("file is not a database"), "{t}");
        assert_eq!((n.kind(), n.failures()), ("failure", 3));
        let rec = Event::Recovery { failures: 1 };
        let n = Notice { event: &rec, ..n };
        assert!(n.text().contains("recovered"), "{}", n.text());
        assert!(n.text().ends_with("after 1 failed run."), "{}", n.text());
        assert_eq!(n.error(), "");
        let drill = Notice {
            job: Job::Drill,
            event: &alert,
            run_id: "drill-1",
            ..n
        };
        let t = drill.text();
        assert!(
            t.contains("restore drill of `mission-control` failed 3 times"),
            "{t}"
        );
        assert!(t.contains("file is not a database"), "{t}");
    }

    #[cfg(unix)]
    #[test]
    fn command_gets_details_in_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = format!(
            "echo \"$SQLITE_BACKUP_EVENT|$SQLITE_BACKUP_JOB|$SQLITE_BACKUP_LABEL|$SQLITE_BACKUP_FAILURES|$SQLITE_BACKUP_ERROR\" > {}",
            out.display()
        );
        let alert = Event::Alert {
            failures: 3,
            error: "boom".into(),
        };
        let n = Notice {
            job: Job::Backup,
            label: "costs",
            event: &alert,
            run_id: "r1",
            config: "x.toml".as_ref(),
        };
        run_command(&cmd, &n).unwrap();
        assert_eq!(
            std::fs::read_to_string(out).unwrap().trim(),
            "failure|backup|costs|3|boom"
        );
        assert!(run_command("exit 3", &n).unwrap_err().contains("exit"));
    }
}
