//! What the engine backs up: one database, and the knobs of how.

use std::path::PathBuf;

use serde::Deserialize;

use crate::encryption::Recipients;
use crate::retention::{Retention, RetentionError};

/// Which integrity check runs right after each backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckLevel {
    /// `PRAGMA quick_check`: skips index-content cross checks, ~4× faster.
    /// After a backup, `foreign_key_check` is left to `verify` / `restore`.
    #[default]
    QuickCheck,
    /// `PRAGMA integrity_check` and `foreign_key_check`: the full check.
    IntegrityCheck,
    /// Neither: only the schema checks (required tables, row counts, check
    /// queries). What an incremental run that read only the pages the WAL
    /// named records (manifest version 2); never a configured level.
    Schema,
}

impl std::fmt::Display for CheckLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::QuickCheck => "quick_check",
            Self::IntegrityCheck => "integrity_check",
            Self::Schema => "schema",
        })
    }
}

/// How the consistent image is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMethod {
    /// One read transaction for the whole copy. WAL databases stream their
    /// pages straight into the compressor when SQLite has `sqlite_dbpage`;
    /// otherwise (and for rollback-journal databases) SQLite's online backup
    /// API copies into a scratch file first.
    #[default]
    Backup,
    /// Always the online backup API into a scratch file (the fallback of
    /// `backup`, selectable for comparison).
    BackupApi,
    /// `VACUUM INTO`: smaller and defragmented, but rewrites every page.
    VacuumInto,
}

/// One database to back up.
///
/// ```
/// let db = backup_core::Database::new("app", "/srv/app.db")
///     .require_tables(["tasks"])
///     .check("SELECT count(*) > 0 FROM tasks");
/// assert_eq!(db.label, "app");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    /// Lowercase, hyphen-separated name used in artifact names.
    pub label: String,
    /// The live database file.
    pub path: PathBuf,
    /// Tables that must exist in every backup.
    pub required_tables: Vec<String>,
    /// Queries that must each return true (a non-zero integer).
    pub checks: Vec<String>,
    /// This database's retention policy.
    pub retention: Retention,
    /// Encrypt its backups to these recipients (`None`: plaintext).
    pub encryption: Option<Recipients>,
    /// Back it up as incremental page-level snapshots (see [`crate::incremental`]).
    pub incremental: bool,
    /// The name this machine goes by in shared sinks (default: its host
    /// name); with the path, whose database this is ([`crate::source`]).
    pub host: Option<String>,
}

impl Database {
    /// A database with no extra checks and the default retention. The label
    /// and [`Database::validate`]'s rules are checked when a backup runs.
    pub fn new(label: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            label: label.into(),
            path: path.into(),
            required_tables: Vec::new(),
            checks: Vec::new(),
            retention: Retention::default(),
            encryption: None,
            incremental: false,
            host: None,
        }
    }

    /// Name this machine `host` in the catalog instead of its host name
    /// (for containers whose host name changes on every start).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Encrypt this database's backups to `recipients` (age): the host
    /// then cannot read them back without an identity.
    pub fn encrypt_to(mut self, recipients: Recipients) -> Self {
        self.encryption = Some(recipients);
        self
    }

    /// Tables that must exist in every backup and restore.
    pub fn require_tables<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_tables
            .extend(tables.into_iter().map(Into::into));
        self
    }

    /// A query that must return true (non-zero) on every backup and restore.
    pub fn check(mut self, query: impl Into<String>) -> Self {
        self.checks.push(query.into());
        self
    }

    /// This database's retention policy.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }
}

impl Database {
    /// Refuse settings the engine cannot honour: an empty path, a
    /// contradictory retention. The label is checked by [`validate_label`].
    pub fn validate(&self) -> Result<(), DatabaseError> {
        let label = || self.label.clone();
        if self.path.to_str().is_some_and(|p| p.trim().is_empty()) {
            return Err(DatabaseError::EmptyPath { label: label() });
        }
        self.retention
            .validate()
            .map_err(|source| DatabaseError::Retention {
                label: label(),
                source,
            })?;
        Ok(())
    }
}

/// Why [`Database::validate`] refused a database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseError {
    /// No path to back up.
    #[error("database {label:?} has an empty path")]
    EmptyPath {
        /// The database's label.
        label: String,
    },
    /// Its retention contradicts itself.
    #[error("database {label:?}: {source}")]
    Retention {
        /// The database's label.
        label: String,
        /// The contradiction.
        source: RetentionError,
    },
}

/// Check a database label: lowercase ASCII letters and digits in
/// hyphen-separated words.
///
/// ```
/// use backup_core::validate_label;
/// assert!(validate_label("mission-control").is_ok());
/// assert!(validate_label("Mission Control").is_err());
/// assert!(validate_label("../etc").is_err());
/// ```
pub fn validate_label(label: &str) -> Result<(), NameError> {
    check_name(label).map_err(|problem| NameError {
        kind: NameKind::Label,
        name: label.to_string(),
        problem,
    })
}

/// Check a tag (`r75`, `session`, `phase1`): same alphabet as labels.
pub fn validate_tag(tag: &str) -> Result<(), NameError> {
    check_name(tag).map_err(|problem| NameError {
        kind: NameKind::Tag,
        name: tag.to_string(),
        problem,
    })
}

fn check_name(name: &str) -> Result<(), NameProblem> {
    let ok_word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if name.len() > 64 {
        Err(NameProblem::TooLong)
    } else if !name.split('-').all(ok_word) {
        Err(NameProblem::Alphabet)
    } else {
        Ok(())
    }
}

/// A label or tag that cannot name artifacts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?} {problem}")]
pub struct NameError {
    /// Label or tag.
    pub kind: NameKind,
    /// The name as given.
    pub name: String,
    /// What is wrong with it.
    pub problem: NameProblem,
}

/// What a [`NameError`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A database label.
    Label,
    /// A run's tag.
    Tag,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Label => "label",
            Self::Tag => "tag",
        })
    }
}

/// Why a name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    /// Over 64 characters.
    #[error("is longer than 64 characters")]
    TooLong,
    /// Not lowercase letters and digits in hyphen-separated words.
    #[error("must be lowercase letters and digits in hyphen-separated words")]
    Alphabet,
}
