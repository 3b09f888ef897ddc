//! # backup-core
//!
//! The storage-agnostic engine of `sqlite-backup`: WAL-safe online snapshots
//! of live SQLite databases, compressed and checksummed in one streaming
//! pass, shipped to any [`sink::Sink`], verified, restored and pruned.
//!
//! ```no_run
//! use std::sync::Arc;
//! use backup_core::{config::Config, pipeline};
//!
//! let config = Config::load("sqlite-backup.toml".as_ref())?;
//! let sink: Arc<dyn backup_core::sink::Sink> = Arc::new(backup_core::sink::MemorySink::new("memory"));
//! let targets = [pipeline::Target { sink, template: config.local.template.clone(), cold_only: false }];
//! let opts = pipeline::Options {
//!     tag: None,
//!     cold: false,
//!     compression: config.compression,
//!     verify_level: config.verify_level,
//!     snapshot_method: config.snapshot_method,
//!     scratch_dir: std::env::temp_dir(),
//!     observer: Arc::new(pipeline::Silent),
//! };
//! let plan = pipeline::plan(&config.databases, &targets, &opts, jiff::Timestamp::now());
//! let report = pipeline::execute(&plan, &targets, &opts);
//! assert_eq!(report.failed_count(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod anchor;
pub mod catalog;
pub mod compress;
mod database;
pub mod digest;
pub mod fsutil;
pub mod intent;
pub mod inuse;
pub mod manifest;
pub mod naming;
pub mod pipeline;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod sink;
pub mod snapshot;
pub mod verify;

pub use database::{CheckLevel, Database, SnapshotMethod, validate_label, validate_tag};
pub use jiff;
pub use retention::Retention;
