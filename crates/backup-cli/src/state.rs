//! Run state that outlives a run: per database the last success, the last
//! failure and the consecutive-failure streak that drives alerts.
//!
//! The state is one small JSON file, `state.json`, in the config's
//! `state_dir`. It is replaced atomically (temp file, fsync, rename, fsync
//! of the folder), so a crash leaves either the old or the new state, never
//! half of one. Only a run holding the run lock ([`crate::lock`]) writes it.
//!
//! The rules live in one pure function, [`DbState::record`]: given what a
//! run did to a database, it updates the record and says whether an alert
//! or a recovery message is due.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use backup_core::fsutil;

/// File name of the state inside `state_dir`.
pub const STATE_FILE: &str = "state.json";
/// `format` field of the state file.
pub const FORMAT: &str = "sqlite-backup/state";
/// Current state file version.
pub const VERSION: u32 = 1;

/// The newest successful backup of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Success {
    /// When the run that took it finished with this database.
    pub at: Timestamp,
    /// Run id (the manifest name).
    pub run_id: String,
    /// Sinks that hold it, in target order (`local`, `azure`, `cold`).
    pub sinks: Vec<String>,
    /// Artifact key in the first sink.
    pub key: String,
    /// Artifact size in bytes (compressed).
    pub size: u64,
}

/// The newest failed backup of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When it failed.
    pub at: Timestamp,
    /// Run id.
    pub run_id: String,
    /// What went wrong.
    pub error: String,
}

/// Everything remembered about one database.
///
/// Fields added after version 1 shipped default when absent, so older
/// state files still load (and older binaries ignore them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbState {
    /// Newest success, if any.
    pub last_success: Option<Success>,
    /// Newest failure, if any.
    pub last_failure: Option<Failure>,
    /// Failed runs since the last success (or reset).
    pub consecutive_failures: u32,
    /// An alert went out for the current streak.
    pub alerted: bool,
    /// The newest backup attempt, successful or not.
    #[serde(default)]
    pub last_attempt: Option<Attempt>,
    /// Per sink: its newest backup and what prune deleted there.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkRecord>,
    /// Restore drills: the newest one and their own failure streak.
    #[serde(default)]
    pub drill: DrillState,
}

/// One backup attempt of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it finished.
    pub at: Timestamp,
    /// How long the database took (snapshot, compression, uploads, checks).
    pub duration_ms: u64,
    /// No part failed.
    pub ok: bool,
    /// Size of the live database file (uncompressed), when a snapshot was taken.
    pub db_size: Option<u64>,
}

/// What is known of one sink for one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkRecord {
    /// When its newest backup was taken.
    pub last_success: Option<Timestamp>,
    /// That backup's artifact key.
    pub key: String,
    /// That backup's stored (compressed) size in bytes.
    pub stored_bytes: u64,
    /// Artifacts prune deleted there, ever (a counter).
    pub pruned_total: u64,
}

/// Restore drills of one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillState {
    /// The newest drill.
    pub last: Option<DrillRun>,
    /// Failed drills since the last passing one (or reset).
    pub consecutive_failures: u32,
    /// A drill alert went out for the current streak.
    pub alerted: bool,
}

/// One drill of one database, over every sink drilled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRun {
    /// When it finished.
    pub at: Timestamp,
    /// Its id (`drill-<time>`), named in logs and alerts.
    pub drill_id: String,
    /// Per sink.
    pub sinks: Vec<SinkDrillRecord>,
}

impl DrillRun {
    /// The failures, one line per sink.
    pub fn error(&self) -> Option<String> {
        let errors: Vec<String> = self
            .sinks
            .iter()
            .filter_map(|s| s.error.as_ref().map(|e| format!("sink {}: {e}", s.sink)))
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

/// A drill of one database in one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkDrillRecord {
    /// Sink name.
    pub sink: String,
    /// Run ids restored, newest first.
    pub snapshots: Vec<String>,
    /// Time to restore the newest backup (fetch, digest, decompress, every
    /// check, place, re-check, post_restore), in milliseconds; `None` when
    /// it failed.
    pub rto_ms: Option<u64>,
    /// What failed, naming the artifact.
    pub error: Option<String>,
}

/// What one run did to one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// When.
    pub at: Timestamp,
    /// Run id.
    pub run_id: String,
    /// Artifacts written (sink, key, size): a backup exists in these sinks.
    pub written: Vec<(String, String, u64)>,
    /// The error, if any part failed (a failed sink counts even when
    /// another sink succeeded).
    pub error: Option<String>,
    /// How long the database took.
    pub duration_ms: u64,
    /// Live database size, when a snapshot was taken.
    pub db_size: Option<u64>,
}

impl RunResult {
    /// A complete success to one sink.
    #[cfg(test)]
    pub fn success(at: Timestamp, run_id: &str, sink: &str, key: &str, size: u64) -> Self {
        Self {
            at,
            run_id: run_id.into(),
            written: vec![(sink.into(), key.into(), size)],
            error: None,
            duration_ms: 5,
            db_size: Some(size * 2),
        }
    }
    /// A failure with nothing written.
    #[cfg(test)]
    pub fn failure(at: Timestamp, run_id: &str, error: &str) -> Self {
        Self {
            at,
            run_id: run_id.into(),
            written: vec![],
            error: Some(error.into()),
            duration_ms: 5,
            db_size: None,
        }
    }
}

/// A message the caller should send after [`DbState::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The streak just reached the threshold: alert (once per streak).
    Alert {
        /// Consecutive failed runs.
        failures: u32,
        /// The latest error.
        error: String,
    },
    /// A run succeeded after an alert went out.
    Recovery {
        /// How many runs had failed in a row.
        failures: u32,
    },
}

impl DbState {
    /// Apply one run's result. `after_failures` is the alert threshold
    /// (values below 1 act as 1).
    ///
    /// - Anything written updates `last_success`.
    /// - An error extends the streak; reaching the threshold for the first
    ///   time in this streak returns [`Event::Alert`] and sets `alerted`.
    /// - A clean success ends the streak; if an alert had gone out it
    ///   returns [`Event::Recovery`].
    pub fn record(&mut self, run: &RunResult, after_failures: u32) -> Option<Event> {
        if !run.written.is_empty() || run.error.is_some() {
            self.last_attempt = Some(Attempt {
                at: run.at,
                duration_ms: run.duration_ms,
                ok: run.error.is_none(),
                db_size: run.db_size,
            });
        }
        for (sink, key, size) in &run.written {
            let s = self.sinks.entry(sink.clone()).or_default();
            s.last_success = Some(run.at);
            s.key = key.clone();
            s.stored_bytes = *size;
        }
        if let Some((_, key, size)) = run.written.first() {
            self.last_success = Some(Success {
                at: run.at,
                run_id: run.run_id.clone(),
                sinks: run.written.iter().map(|(s, _, _)| s.clone()).collect(),
                key: key.clone(),
                size: *size,
            });
        }
        if let Some(error) = &run.error {
            self.last_failure = Some(Failure {
                at: run.at,
                run_id: run.run_id.clone(),
                error: error.clone(),
            });
        }
        if run.error.is_none() && run.written.is_empty() {
            return None;
        }
        streak(
            &mut self.consecutive_failures,
            &mut self.alerted,
            run.error.as_deref(),
            after_failures,
        )
    }

    /// Apply one drill's result to the drill streak (kept apart from the
    /// backup streak: backups can succeed while their restores fail).
    pub fn record_drill(&mut self, drill: DrillRun, after_failures: u32) -> Option<Event> {
        let error = drill.error();
        let d = &mut self.drill;
        d.last = Some(drill);
        streak(
            &mut d.consecutive_failures,
            &mut d.alerted,
            error.as_deref(),
            after_failures,
        )
    }

    /// Record artifacts deleted by prune in `sink`.
    pub fn record_pruned(&mut self, sink: &str, deleted: u64) {
        let s = self.sinks.entry(sink.to_string()).or_default();
        s.pruned_total = s.pruned_total.saturating_add(deleted);
    }

    /// The alert of this streak could not be delivered: try again on the
    /// next failed run.
    pub fn alert_undelivered(&mut self) {
        self.alerted = false;
    }

    /// Zero the streaks, backup and drill (`status --reset-failures`).
    /// Returns the old backup count.
    pub fn reset_failures(&mut self) -> u32 {
        self.alerted = false;
        self.drill.alerted = false;
        self.drill.consecutive_failures = 0;
        std::mem::take(&mut self.consecutive_failures)
    }
}

/// The streak rules shared by backups and drills: an error extends the
/// streak and reaching the threshold (values below 1 act as 1) alerts once
/// per streak; a success ends it, with a recovery message if an alert went out.
fn streak(
    failures: &mut u32,
    alerted: &mut bool,
    error: Option<&str>,
    after_failures: u32,
) -> Option<Event> {
    match error {
        Some(error) => {
            *failures = failures.saturating_add(1);
            if *failures >= after_failures.max(1) && !*alerted {
                *alerted = true;
                return Some(Event::Alert {
                    failures: *failures,
                    error: error.to_string(),
                });
            }
            None
        }
        None => {
            let failures = std::mem::take(failures);
            std::mem::take(alerted).then_some(Event::Recovery { failures })
        }
    }
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] at write time.
    pub version: u32,
    /// Last time the file was written.
    pub updated_at: Option<Timestamp>,
    /// Per database label.
    pub databases: BTreeMap<String, DbState>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            updated_at: None,
            databases: BTreeMap::new(),
        }
    }
}

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{op} state file {path}: {source}")]
    Io {
        /// `read` or `write`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a state file this version understands.
    #[error("state file {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl State {
    /// `state_dir/state.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Read the state; a missing file is an empty state.
    pub fn load(state_dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(state_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(StateError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| StateError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if state.format != FORMAT || state.version > VERSION {
            return Err(StateError::Invalid {
                path,
                message: format!(
                    "format {:?} version {} (this build reads {FORMAT:?} up to version {VERSION})",
                    state.format, state.version
                ),
            });
        }
        Ok(state)
    }

    /// Read the state; if the file is damaged, move it aside as
    /// `state.json.invalid-<unix seconds>` and start empty, returning the
    /// problem so the caller can warn. Backups must not stop because the
    /// bookkeeping broke.
    pub fn load_or_recover(state_dir: &Path) -> (Self, Option<StateError>) {
        match Self::load(state_dir) {
            Ok(s) => (s, None),
            Err(e @ StateError::Invalid { .. }) => {
                let path = Self::path(state_dir);
                let aside = path.with_file_name(format!(
                    "{STATE_FILE}.invalid-{}",
                    Timestamp::now().as_second()
                ));
                let _ = std::fs::rename(&path, aside);
                (Self::default(), Some(e))
            }
            Err(e) => (Self::default(), Some(e)),
        }
    }

    /// [`State::save`], logging a failure instead of returning it: the
    /// backups themselves are done, only the counters are lost.
    pub fn save_logged(&mut self, state_dir: &Path) {
        if let Err(e) = self.save(state_dir) {
            tracing::error!("{e}: failure counters were not updated");
        }
    }

    /// Write atomically into `state_dir` (created if needed).
    pub fn save(&mut self, state_dir: &Path) -> Result<(), StateError> {
        let path = Self::path(state_dir);
        let io_err = |source| StateError::Io {
            op: "write",
            path: path.clone(),
            source,
        };
        fsutil::create_dir_all_mode(state_dir, fsutil::PRIVATE_DIR).map_err(io_err)?;
        self.updated_at = Some(Timestamp::now());
        let mut bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        bytes.push(b'\n');
        fsutil::atomic_write(&path, &bytes).map_err(io_err)
    }

    /// The record of `label` (created empty).
    pub fn database(&mut self, label: &str) -> &mut DbState {
        self.databases.entry(label.to_string()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_alerts_once_and_recovers() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let fail = RunResult::failure(now, "run-1", "not a database");
        let mut db = DbState::default();
        assert_eq!(db.record(&fail, 2), None);
        assert!(matches!(
            db.record(&fail, 2),
            Some(Event::Alert { failures: 2, .. })
        ));
        assert_eq!(db.record(&fail, 2), None); // once per streak
        let ok = RunResult::success(now, "run-2", "local", "app.db.zst", 10);
        assert!(matches!(
            db.record(&ok, 2),
            Some(Event::Recovery { failures: 3 })
        ));
        assert_eq!(db.consecutive_failures, 0);
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }
    fn fail(s: i64) -> RunResult {
        RunResult::failure(t(s), &format!("run-{s}"), "file is not a database")
    }
    fn ok(s: i64) -> RunResult {
        RunResult::success(
            t(s),
            &format!("run-{s}"),
            "local",
            "app.db.zst",
            100 + s as u64,
        )
    }

    #[test]
    fn alert_once_when_streak_reaches_threshold() {
        let mut db = DbState::default();
        assert_eq!(db.record(&fail(1), 3), None);
        assert_eq!(db.record(&fail(2), 3), None);
        assert_eq!(
            db.record(&fail(3), 3),
            Some(Event::Alert {
                failures: 3,
                error: "file is not a database".into()
            })
        );
        assert!(db.alerted);
        assert_eq!(db.record(&fail(4), 3), None, "once per streak");
        assert_eq!(db.record(&fail(5), 3), None);
        assert_eq!(db.consecutive_failures, 5);
        assert_eq!(db.last_failure.as_ref().unwrap().run_id, "run-5");
        assert_eq!(db.last_success, None);
    }

    #[test]
    fn recovery_after_alert_resets_streak() {
        let mut db = DbState::default();
        for s in 1..=4 {
            db.record(&fail(s), 3);
        }
        assert_eq!(db.record(&ok(5), 3), Some(Event::Recovery { failures: 4 }));
        assert_eq!(db.consecutive_failures, 0);
        assert!(!db.alerted);
        let s = db.last_success.as_ref().unwrap();
        assert_eq!((s.run_id.as_str(), s.size), ("run-5", 105));
        // The last failure stays on record for `status`.
        assert_eq!(db.last_failure.as_ref().unwrap().run_id, "run-4");
        // A new streak alerts again.
        db.record(&fail(6), 3);
        db.record(&fail(7), 3);
        assert!(matches!(db.record(&fail(8), 3), Some(Event::Alert { .. })));
    }

    #[test]
    fn success_without_alert_sends_nothing() {
        let mut db = DbState::default();
        db.record(&fail(1), 3);
        db.record(&fail(2), 3);
        assert_eq!(db.record(&ok(3), 3), None);
        assert_eq!(db.consecutive_failures, 0);
    }

    #[test]
    fn partial_success_counts_as_failure_but_records_the_backup() {
        let mut db = DbState::default();
        let run = RunResult {
            at: t(1),
            run_id: "run-1".into(),
            written: vec![("local".into(), "k".into(), 7)],
            error: Some("sink azure: timeout".into()),
            duration_ms: 9,
            db_size: Some(20),
        };
        assert!(matches!(db.record(&run, 1), Some(Event::Alert { .. })));
        assert_eq!(db.last_success.as_ref().unwrap().sinks, vec!["local"]);
        assert_eq!(db.consecutive_failures, 1);
    }

    #[test]
    fn nothing_written_and_no_error_changes_nothing() {
        let mut db = DbState::default();
        db.record(&fail(1), 3);
        let before = db.clone();
        let run = RunResult {
            at: t(2),
            run_id: "run-2".into(),
            written: vec![],
            error: None,
            duration_ms: 0,
            db_size: None,
        };
        assert_eq!(db.record(&run, 3), None);
        assert_eq!(db, before);
    }

    fn drill(s: i64, error: Option<&str>) -> DrillRun {
        DrillRun {
            at: t(s),
            drill_id: format!("drill-{s}"),
            sinks: vec![SinkDrillRecord {
                sink: "local".into(),
                snapshots: vec!["run-1".into()],
                rto_ms: error.is_none().then_some(40),
                error: error.map(str::to_string),
            }],
        }
    }

    #[test]
    fn drills_have_their_own_streak() {
        let mut db = DbState::default();
        db.record(&fail(1), 3);
        assert!(matches!(
            db.record_drill(drill(2, Some("sha256 mismatch")), 1),
            Some(Event::Alert { failures: 1, ref error }) if error == "sink local: sha256 mismatch"
        ));
        assert_eq!(
            db.record_drill(drill(3, Some("x")), 1),
            None,
            "once per streak"
        );
        // The backup streak is untouched by drills and the other way round.
        assert_eq!(db.consecutive_failures, 1);
        assert_eq!(db.record(&ok(4), 3), None);
        assert_eq!(db.drill.consecutive_failures, 2);
        assert_eq!(
            db.record_drill(drill(5, None), 1),
            Some(Event::Recovery { failures: 2 })
        );
        assert_eq!(db.drill.last.as_ref().unwrap().sinks[0].rto_ms, Some(40));
    }

    #[test]
    fn attempts_and_sinks_are_recorded() {
        let mut db = DbState::default();
        db.record(&ok(1), 3);
        db.record(&fail(2), 3);
        let a = db.last_attempt.as_ref().unwrap();
        assert_eq!((a.at, a.ok), (t(2), false));
        let s = &db.sinks["local"];
        assert_eq!((s.last_success, s.stored_bytes), (Some(t(1)), 101));
        db.record_pruned("local", 2);
        db.record_pruned("local", 1);
        assert_eq!(db.sinks["local"].pruned_total, 3);
    }

    #[test]
    fn version_one_files_without_the_new_fields_load() {
        let old = r#"{"format":"sqlite-backup/state","version":1,"updated_at":null,
            "databases":{"app":{"last_success":null,"last_failure":null,"consecutive_failures":2,"alerted":false}}}"#;
        let s: State = serde_json::from_str(old).unwrap();
        assert_eq!(s.databases["app"].consecutive_failures, 2);
        assert_eq!(s.databases["app"].drill, DrillState::default());
    }

    #[test]
    fn threshold_zero_acts_as_one() {
        let mut db = DbState::default();
        assert!(matches!(db.record(&fail(1), 0), Some(Event::Alert { .. })));
    }

    #[test]
    fn undelivered_alert_is_retried_next_failure() {
        let mut db = DbState::default();
        assert!(db.record(&fail(1), 1).is_some());
        db.alert_undelivered();
        assert!(matches!(
            db.record(&fail(2), 1),
            Some(Event::Alert { failures: 2, .. })
        ));
    }

    #[test]
    fn reset_zeroes_the_streak() {
        let mut db = DbState::default();
        for s in 1..=3 {
            db.record(&fail(s), 3);
        }
        assert_eq!(db.reset_failures(), 3);
        assert_eq!((db.consecutive_failures, db.alerted), (0, false));
        // After a reset a success is not a "recovery".
        assert_eq!(db.record(&ok(4), 3), None);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        assert_eq!(State::load(&state_dir).unwrap(), State::default());
        let mut s = State::default();
        s.database("app").record(&fail(1), 3);
        s.database("costs").record(&ok(2), 3);
        s.save(&state_dir).unwrap();
        let back = State::load(&state_dir).unwrap();
        assert_eq!(back, s);
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE]);
    }

    #[test]
    fn damaged_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(State::path(dir.path()), b"{\"format\": tru").unwrap();
        assert!(matches!(
            State::load(dir.path()),
            Err(StateError::Invalid { .. })
        ));
        let (s, problem) = State::load_or_recover(dir.path());
        assert_eq!(s, State::default());
        assert!(problem.is_some());
        assert!(!State::path(dir.path()).exists());
    }
}
