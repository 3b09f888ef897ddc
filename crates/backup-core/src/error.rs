//! The one error type of the facade ([`crate::Backups`]): the cases an
//! embedder acts on, each with the context needed to say what happened.

use std::path::PathBuf;

use crate::compress::CompressionError;
use crate::database::{DatabaseError, NameError};
use crate::incremental::PolicyError;
use crate::inuse::Holder;
use crate::naming::TemplateError;
use crate::pipeline::BackupError;
use crate::restore::{Rejection, RestoreError};
use crate::sink::SinkError;
use crate::source::SourceError;
use crate::verify::{Problem, VerifyError};

/// What went wrong, as an embedder needs to tell it apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing in the catalog matches (no backup of that label, no such
    /// snapshot id, nothing before that time).
    #[error("{0}")]
    NotFound(String),
    /// Only other machines or files have backups of the label (naming one
    /// with [`crate::Restore::source`] restores it), or the name given
    /// matches several.
    #[error(transparent)]
    WrongSource(#[from] SourceError),
    /// A backup failed its checks: what was checked, and what failed.
    #[error("{subject} is corrupt: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Corrupt {
        /// The artifact (sink and key).
        subject: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// Every restore candidate failed verification; the target is untouched.
    #[error("none of the {} candidate(s) of {label:?} passed verification; the target was not touched", rejected.len())]
    NoGoodBackup {
        /// Database label.
        label: String,
        /// Each candidate and why it was rejected, newest first.
        rejected: Vec<Rejection>,
    },
    /// Another process uses the database a restore would replace.
    #[error("{} is in use: {}", path.display(), holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("; "))]
    InUse {
        /// The database.
        path: PathBuf,
        /// Who holds it.
        holders: Vec<Holder>,
    },
    /// A backup did not reach every sink (or none).
    #[error("backup of {label:?} failed: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Backup {
        /// Database label.
        label: String,
        /// Per sink or for the whole database.
        errors: Vec<BackupError>,
    },
    /// The source database does not exist.
    #[error("{} does not exist", path.display())]
    NoSource {
        /// The configured path.
        path: PathBuf,
    },
    /// The restored file passed its checks but the post-restore hook
    /// rejected it; it stays in place, the previous database beside it.
    #[error("post-restore check of {} failed: {error}{}", path.display(), broken.as_ref().map(|b| format!(" (the previous database is kept at {})", b.display())).unwrap_or_default())]
    PostRestore {
        /// The restored file.
        path: PathBuf,
        /// Where the previous database is kept.
        broken: Option<PathBuf>,
        /// What the hook said.
        error: String,
    },
    /// Encrypted backups, and no identity (or the wrong one) to open them.
    #[error("{0}")]
    Keys(String),
    /// The run was cancelled; nothing incomplete was stored.
    #[error("cancelled: nothing of the run was stored")]
    Cancelled,
    /// Reading from or writing to a sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A bad label, tag, template or option, caught before anything ran.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Local file-system work failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What [`Error::Config`] found wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A label or tag.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An artifact name template.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A database's own settings (path, retention, incremental with
    /// encryption).
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// A compression level out of range.
    #[error(transparent)]
    Compression(#[from] CompressionError),
    /// When incremental chains start over.
    #[error(transparent)]
    Incremental(#[from] PolicyError),
    /// A backup with no sink to go to.
    #[error("no sink to back up to")]
    NoSink,
}

impl From<RestoreError> for Error {
    fn from(e: RestoreError) -> Self {
        match e {
            e @ (RestoreError::NoBackups { .. } | RestoreError::UnknownSink { .. }) => {
                Error::NotFound(e.to_string())
            }
            RestoreError::WrongSource(e) => Error::WrongSource(e),
            RestoreError::InUse { target, holders } => Error::InUse {
                path: target,
                holders,
            },
            RestoreError::NonePassed { label, rejected } => Error::NoGoodBackup { label, rejected },
            e @ (RestoreError::NeedsIdentity { .. } | RestoreError::WrongIdentity { .. }) => {
                Error::Keys(e.to_string())
            }
            RestoreError::Io { what, path, source } => Error::Io { what, path, source },
        }
    }
}

impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Sink(e) => Error::Sink(e),
            VerifyError::Scratch { path, source } => Error::Io {
                what: "writing the scratch file",
                path: path.into(),
                source,
            },
        }
    }
}
