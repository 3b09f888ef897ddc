//! # backup-core
//!
//! The storage-agnostic engine of `sqlite-backup`: WAL-safe online snapshots
//! of live SQLite databases, compressed and checksummed in one streaming
//! pass, shipped to any [`sink::Sink`], verified, restored and pruned.
//!
//! The common case is a few lines with [`Backups`]: back up a live
//! database, verify the newest backup the way a restore would, restore it.
//!
//! ```
//! use backup_core::{Backups, Database, sink::MemorySink};
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("app.db");
//! # rusqlite::Connection::open(&path)?.execute_batch(
//! #     "PRAGMA journal_mode=WAL; CREATE TABLE tasks(id INTEGER PRIMARY KEY, t TEXT);
//! #      INSERT INTO tasks(t) VALUES ('one'), ('two');")?;
//! let backups = Backups::new(MemorySink::new("local")); // or backup_local::LocalSink::folder(…)
//! let app = Database::new("app", &path).require_tables(["tasks"]);
//! backups.backup(&app)?;
//! backups.verify_latest(&app)?;
//! backups.restore(&app).to(dir.path().join("restored.db")).run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The facade's errors are one enum, [`Error`], with the cases an embedder
//! acts on; each module below it has its own typed errors ([`sink::SinkError`],
//! [`restore::RestoreError`], …), the causes kept as sources. The
//! modules below the facade stay public for what it does not cover: several
//! databases in one run with a printable plan ([`pipeline`]), the hash-chained
//! catalog ([`catalog`], [`anchor`]), retention as a pure function
//! ([`retention`]). A new store implements [`sink::Sink`] and proves itself
//! with the conformance suite (`sink::conformance`, feature `testing`).
//!
//! # The fast path and SQLite's compile flags
//! A WAL database is streamed page by page straight from one pinned read
//! transaction into the compressor when the SQLite that rusqlite links has
//! `SQLITE_ENABLE_DBPAGE_VTAB` (and checked on a second connection in
//! parallel with `SQLITE_ENABLE_SNAPSHOT`). Without them a backup is still
//! correct but goes through a scratch copy made by the online backup API
//! (about twice the I/O); it logs once why. An embedder that uses rusqlite's
//! `bundled` feature gets the flags by setting, for its own build,
//! `LIBSQLITE3_FLAGS="-DSQLITE_ENABLE_DBPAGE_VTAB -DSQLITE_ENABLE_SNAPSHOT"`
//! (for example in its `.cargo/config.toml` under `[env]`, as this
//! workspace does). backup-core must share one `rusqlite` (0.43) and so one
//! `libsqlite3-sys` with the embedding application: Cargo links only one.
#![warn(missing_docs)]

pub mod adopt;
pub mod anchor;
mod backups;
pub mod catalog;
pub mod compaction;
pub mod compress;
mod database;
pub mod digest;
pub mod drill;
pub mod duration;
pub mod encryption;
mod error;
pub mod fsutil;
pub mod incremental;
pub mod intent;
pub mod inuse;
pub mod manifest;
mod mirror;
pub mod naming;
pub mod page_map;
pub mod pipeline;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod sqlite;
pub mod verify;
pub mod wal_frames;
pub mod xor_pack;

pub use backups::{BackedUp, Backups, Builder, CancelToken, Progress, Restore, Verified};
pub use database::{
    CheckLevel, Database, NameError, NameKind, NameProblem, SnapshotMethod, validate_label,
    validate_tag,
};
pub use error::{ConfigError, Error};
pub use jiff;
pub use restore::Restored;
pub use retention::Retention;

pub use database::DatabaseError;
