//! The one health rule of a database, for `status`, `status --json`, the
//! metrics (`sqlite_backup_healthy`) and the HTML report alike.

use jiff::Timestamp;

/// Health of one database, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The latest attempt failed (whatever succeeded before it).
    Failing,
    /// Never backed up.
    Never,
    /// The newest backup is older than `max_age_hours`.
    Stale,
    /// The latest attempt succeeded and the newest backup is recent.
    Ok,
}

impl Health {
    /// `failing`, `never`, `stale` or `ok`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Failing => "failing",
            Health::Never => "never",
            Health::Stale => "stale",
            Health::Ok => "ok",
        }
    }
}

/// The rule: a failed latest attempt is never ok (it counts even when an
/// earlier backup is recent); then no backup at all; then a newest backup
/// older than `max_age_hours`.
pub fn health(
    newest_backup: Option<Timestamp>,
    consecutive_failures: u32,
    max_age_hours: u32,
    now: Timestamp,
) -> Health {
    match newest_backup {
        _ if consecutive_failures > 0 => Health::Failing,
        None => Health::Never,
        Some(at) if now.duration_since(at).as_secs() > i64::from(max_age_hours) * 3600 => {
            Health::Stale
        }
        Some(_) => Health::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_latest_attempt_is_failing_even_right_after_a_success() {
        let now: Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let recent = Some("2026-12-04T11:59:00Z".parse().unwrap());
        let old = Some("2026-12-01T00:00:00Z".parse().unwrap());
        assert_eq!(health(recent, 1, 26, now), Health::Failing);
        assert_eq!(health(None, 2, 26, now), Health::Failing);
        assert_eq!(health(None, 0, 26, now), Health::Never);
        assert_eq!(health(old, 0, 26, now), Health::Stale);
        assert_eq!(health(recent, 0, 26, now), Health::Ok);
    }
}
