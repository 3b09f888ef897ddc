//! Shared kit for the end-to-end tests, examples and benchmark of
//! sqlite-backup: temporary project folders with a config file, the real
//! binary, real external tools (`sqlite3`, `sha256sum`, `zstd`, `gunzip`).
//!
//! Nothing here fakes a result: helpers only set things up and run real
//! programs. A missing external tool fails loudly with the install command,
//! never skips a test.

pub mod azurite;
pub mod faults;
pub mod moto;
pub mod ops_support;
pub mod process;
pub mod remote;
pub mod restore_support;
pub mod server;
pub mod testkit;

/// The demo database generator and writer, which the `demo` command ships
/// too, hence a crate of its own.
pub use backup_demo as demo;
