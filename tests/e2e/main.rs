//! End-to-end tests of the `sqlite-backup` binary against real SQLite files,
//! real tools and, for Azure, a real Azurite. One test binary (one link) for
//! all of them; the timing-sensitive reliability suites keep their own.

mod adopt;
mod azure_cli;
mod backup;
mod catalog;
mod cli_snapshots;
mod drill_metrics;
mod encrypted_incremental;
mod encryption;
mod incremental;
mod mirror;
mod ops_e2e;
mod paths;
mod perms;
mod prune_cli;
mod readme;
mod rebuild_by_hand;
mod report;
mod restore;
mod s3_cli;
mod sources;
