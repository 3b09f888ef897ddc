//! What a run reports: per database, the entries written and the errors.

use crate::manifest::Entry;
use crate::sink::SinkError;

/// Why a database was not backed up, or not to every sink.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// One sink failed; the others may hold the backup.
    #[error("sink {sink}: {error}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What went wrong there.
        #[source]
        error: SinkFailure,
    },
    /// The run's manifest could not be written to a sink, so nothing of
    /// the run counts there (its artifacts were removed again).
    #[error("manifest to sink {sink}: {error}")]
    Manifest {
        /// The sink's name.
        sink: String,
        /// What went wrong (one append failure fails every database of the
        /// run in that sink, hence shared).
        #[source]
        error: std::sync::Arc<crate::catalog::append::AppendError>,
    },
    /// The snapshot failed its post-backup check; nothing was stored.
    #[error(
        "the snapshot failed its post-backup check, nothing was stored: {}",
        join(problems)
    )]
    Check {
        /// What the check found.
        problems: Vec<crate::verify::Problem>,
    },
    /// The snapshot could not be taken or streamed; nothing was stored.
    #[error(transparent)]
    Snapshot(#[from] SnapshotFailure),
}

/// Why a database's snapshot could not be taken or streamed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFailure {
    /// SQLite could not open, copy or finish reading the snapshot.
    #[error(transparent)]
    Sqlite(#[from] crate::snapshot::SnapshotError),
    /// Reading the snapshot's pages failed.
    #[error("reading the snapshot: {0}")]
    Read(#[source] std::io::Error),
    /// Compressing or sending the stream failed; `sinks` says what each
    /// sink reported, when one did.
    #[error("streaming the snapshot: {error}{}", if sinks.is_empty() { String::new() } else { format!(" ({})", sinks.join("; ")) })]
    Stream {
        /// The stream's error.
        #[source]
        error: std::io::Error,
        /// `sink NAME: what it said`, per failed sink.
        sinks: Vec<String>,
    },
    /// Neither the scratch folder nor its fallback could be created.
    #[error("creating scratch folder {} ({error}) or {} ({fallback_error})", dir.display(), fallback.display())]
    Scratch {
        /// The configured scratch folder.
        dir: std::path::PathBuf,
        /// Why it failed.
        #[source]
        error: std::io::Error,
        /// The fallback folder.
        fallback: std::path::PathBuf,
        /// Why that failed too.
        fallback_error: std::io::Error,
    },
    /// The post-backup check's thread panicked.
    #[error("post-backup check panicked")]
    CheckPanicked,
    /// The run was cancelled while the snapshot was taken.
    #[error("{}", super::INTERRUPTED)]
    Interrupted,
}

fn join(problems: &[crate::verify::Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one sink did not get a database's backup.
#[derive(Debug, thiserror::Error)]
pub enum SinkFailure {
    /// The sink's own error (match on it: not found, unauthorized, …).
    #[error(transparent)]
    Store(#[from] SinkError),
    /// What the run itself found wrong there: an upload that broke off
    /// mid-stream, a name it refuses to overwrite, facts it could not seal.
    #[error("{0}")]
    Run(String),
}

impl From<String> for SinkFailure {
    fn from(message: String) -> Self {
        Self::Run(message)
    }
}

impl From<&String> for SinkFailure {
    fn from(message: &String) -> Self {
        Self::Run(message.clone())
    }
}

pub(super) fn sink_error(sink: &str, error: impl Into<SinkFailure>) -> BackupError {
    BackupError::Sink {
        sink: sink.to_string(),
        error: error.into(),
    }
}

/// The result for one database.
#[derive(Debug)]
pub struct Outcome {
    /// Label.
    pub label: String,
    /// Skip reason, when skipped.
    pub skipped: Option<String>,
    /// Entries written, with their sink name.
    pub written: Vec<(String, Entry)>,
    /// Errors (any error makes the database count as failed).
    pub errors: Vec<BackupError>,
}

impl Outcome {
    /// Backed up to every planned sink.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.skipped.is_none()
    }
    /// At least one error.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// A run's manifest in one sink: the new head of that sink's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestWritten {
    /// The sink's name.
    pub sink: String,
    /// The manifest's key.
    pub key: String,
    /// Its SHA-256: the catalog's new chain head.
    pub head: String,
}

/// The result of a run.
#[derive(Debug)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Per database, in plan order.
    pub outcomes: Vec<Outcome>,
    /// Manifests written, one per sink that received anything.
    pub manifests: Vec<ManifestWritten>,
    /// Objects a fully successful run would have written.
    pub expected_objects: usize,
    /// Objects actually written and recorded.
    pub written_objects: usize,
}

impl RunReport {
    /// Databases backed up everywhere.
    pub fn ok_count(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok()).count()
    }
    /// Databases with at least one error.
    pub fn failed_count(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failed()).count()
    }
}

/// Manifest entries written, with their sink's name.
pub(super) type Written = Vec<(String, Entry)>;
