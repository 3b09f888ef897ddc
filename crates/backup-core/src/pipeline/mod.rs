//! The backup pipeline: snapshot → compress + digest (one streaming pass) →
//! every sink at once → sidecars → manifest, last.
//!
//! A run is planned first ([`plan`]), so `--dry-run` can print exactly what
//! [`execute`] would do, with the same names.
//!
//! Per database:
//! 1. Pin one read transaction on the source ([`crate::snapshot`]).
//! 2. Stream the image once through the raw-database digest, the compressor
//!    (workers on every core) and the artifact digest into every sink, while
//!    another thread runs the post-backup check on the same image:
//!    - fast path (WAL source, SQLite with `sqlite_dbpage`): the pinned
//!      snapshot's pages go straight into the compressor, and the check reads
//!      the same snapshot on a second connection; no scratch file at all;
//!    - fallback: the online backup API copies the snapshot into a private
//!      scratch file first, then the file is streamed and checked.
//! 3. Only when the check passed are the uploads finished (made visible);
//!    then each stored size is compared and the sidecars written.
//! 4. After all databases, each sink gets one manifest listing what it holds.
//!    Until then nothing of the run is a backup.

mod commit;
mod fan_out;
mod full_image;
mod held;
mod incremental;
mod plan;
mod report;
mod run;
mod twin_check;
mod wal_hint;

use std::path::PathBuf;
use std::sync::Arc;

use crate::compress::Compression;
use crate::database::{CheckLevel, SnapshotMethod};
use crate::naming::Template;
use crate::sink::Sink;

pub use held::{HeldSnapshots, MAX_HELD_WAL};
pub use plan::{Action, Plan, PlanItem, PlannedArtifact, plan};
pub use report::{BackupError, ManifestWritten, Outcome, RunReport, SinkFailure, SnapshotFailure};
pub use run::execute;

/// A sink and the template naming artifacts in it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// Artifact names.
    pub template: Template,
    /// Only used for cold-tier backups (`--tier cold` or a cold tag).
    pub cold_only: bool,
}

/// Hooks for progress display (the CLI draws bars with them) and for
/// stopping a run early. Every method has a no-op default; calls come from
/// the backup thread.
pub trait Observer: Send + Sync {
    /// Asked before each database, after its snapshot and between streamed
    /// chunks. Once it returns true the run stops cleanly: the database in
    /// flight is abandoned (its uploads aborted, nothing stored), later
    /// databases are not started, and both are reported as skipped with the
    /// reason [`INTERRUPTED`]; databases finished before still get their
    /// manifest, so the run never leaves a complete-looking partial backup.
    fn cancelled(&self) -> bool {
        false
    }
    /// Snapshot progress in pages.
    fn snapshot_progress(&self, _label: &str, _done: u64, _total: u64) {}
    /// Compress + upload progress in database bytes read.
    fn stream_progress(&self, _label: &str, _done: u64, _total: u64) {}
    /// The database is finished (successfully or not).
    fn database_done(&self, _label: &str) {}
}

/// Skip reason of databases abandoned or not started because the run was
/// cancelled (see [`Observer::cancelled`]).
pub const INTERRUPTED: &str = "interrupted: run cancelled, nothing of it stored";

/// An observer that shows nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {}

/// How a run backs up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Trigger tag for every database of the run.
    pub tag: Option<String>,
    /// Also send every database to cold-only targets.
    pub cold: bool,
    /// Also send these databases to cold-only targets (the CLI puts here
    /// the labels whose `cold_tags` hold this run's tag).
    pub cold_labels: Vec<String>,
    /// Compression.
    pub compression: Compression,
    /// Post-backup check.
    pub verify_level: CheckLevel,
    /// Snapshot method.
    pub snapshot_method: SnapshotMethod,
    /// When databases backed up incrementally start a new chain.
    pub incremental: crate::incremental::Policy,
    /// Private folder for snapshot scratch files (same file system as the
    /// local tier is best; never inside a source's folder).
    pub scratch_dir: PathBuf,
    /// Private folder where incremental runs keep each sink's newest page
    /// hashes, so that the next run reads no page index from the sink
    /// (see [`crate::incremental::cached_hashes`]); `None`: always read the sink.
    pub page_cache: Option<PathBuf>,
    /// Keep each incremental run's snapshot pinned until the next run of
    /// the same database (a daemon with a short interval; see
    /// [`HeldSnapshots`]); `None`: release it at the end of the run.
    pub held: Option<HeldSnapshots>,
}

/// The options and the observer of the run under way.
pub(super) struct RunOpts<'a> {
    opts: &'a Options,
    observer: &'a dyn Observer,
}

impl std::ops::Deref for RunOpts<'_> {
    type Target = Options;
    fn deref(&self) -> &Options {
        self.opts
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tag: None,
            cold: false,
            cold_labels: Vec::new(),
            compression: Compression::default(),
            verify_level: CheckLevel::default(),
            snapshot_method: SnapshotMethod::default(),
            incremental: crate::incremental::Policy::default(),
            scratch_dir: fallback_scratch_dir(),
            page_cache: None,
            held: None,
        }
    }
}

/// Where snapshots go when the configured scratch folder cannot be created.
pub(crate) fn fallback_scratch_dir() -> PathBuf {
    std::env::temp_dir().join("sqlite-backup-scratch")
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::compress::Format;
    use crate::database::Database;
    use crate::sink::MemorySink;
    use crate::verify::{self, Checks};

    /// Back up a demo database under a busy writer with `method`, then verify
    /// the artifact the way a restore does.
    fn backup_and_verify(method: SnapshotMethod, format: Format) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        backup_testkit::demo::create(&src, 3_000_000, 11).unwrap();
        let db = Database {
            label: "app".into(),
            path: src.clone(),
            required_tables: backup_testkit::demo::TABLES.map(String::from).to_vec(),
            checks: vec![],
            retention: Default::default(),
            encryption: None,
            incremental: false,
            host: None,
        };
        let sink: Arc<dyn Sink> = Arc::new(MemorySink::new("memory"));
        let targets = [Target {
            sink: sink.clone(),
            template: Template::parse("{label}-{run}{ext}", false).unwrap(),
            cold_only: false,
        }];
        let opts = Options {
            compression: Compression::new(format),
            snapshot_method: method,
            scratch_dir: dir.path().join("scratch"),
            ..Options::default()
        };
        let writer = backup_testkit::demo::Writer::start(&src, 0).unwrap();
        let plan = plan(std::slice::from_ref(&db), &targets, &opts, Timestamp::now());
        let report = execute(&plan, &Silent);
        let stats = writer.stop();
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        assert_eq!(report.failed_count(), 0, "{:?}", report.outcomes);
        let (_, entry) = &report.outcomes[0].written[0];
        assert!(entry.row_counts["tasks"] > 0);
        let scratch = dir.path().join("restored.db");
        let checks = Checks {
            level: CheckLevel::IntegrityCheck,
            required_tables: db.required_tables.clone(),
            queries: vec![],
            ..Default::default()
        };
        let verified = verify::verify_entry(sink.as_ref(), entry, &scratch, &checks).unwrap();
        assert!(
            verified.ok(),
            "{:?}",
            verified.all_problems().collect::<Vec<_>>()
        );
        assert_eq!(verified.db_sha256, entry.db_sha256);
        let restored = rusqlite::Connection::open(&scratch).unwrap();
        let tasks: i64 = restored
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .unwrap();
        // The manifest's row count was taken on the very image stored.
        assert_eq!(tasks as u64, entry.row_counts["tasks"]);
        // Nothing left in the scratch folder.
        let left = std::fs::read_dir(&opts.scratch_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0);
    }

    #[test]
    fn streamed_pages_back_up_and_verify() {
        backup_and_verify(SnapshotMethod::Backup, Format::Zstd);
        backup_and_verify(SnapshotMethod::Backup, Format::Gzip);
    }

    #[test]
    fn backup_api_fallback_backs_up_and_verifies() {
        backup_and_verify(SnapshotMethod::BackupApi, Format::Zstd);
        backup_and_verify(SnapshotMethod::BackupApi, Format::None);
    }
}
