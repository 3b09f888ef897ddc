//! Measured RTO: end-to-end `sqlite-backup restore` of a ~200 MB database
//! from the local hot tier, next to `PRAGMA integrity_check` alone on the
//! same file. Prints numbers, asserts only correctness (timings vary).
//!
//! ```text
//! cargo build -p backup-cli --release
//! SQLITE_BACKUP_BIN=target/release/sqlite-backup \
//!   cargo test --test restore_rto -- --ignored --nocapture
//! ```
//! Without `SQLITE_BACKUP_BIN` the debug binary is used (its dependencies
//! — SQLite, zstd, SHA-256 — are built with opt-level 2 even in debug).
//! `RTO_MB` changes the size (default 200).

use std::process::Command;
use std::time::Instant;

use backup_core::digest::Sha256;
use backup_testkit::restore_support::{Fixture, integrity};

#[test]
#[ignore = "slow: builds a 200 MB database; run with --ignored --nocapture"]
fn rto_of_a_200_mb_restore_vs_integrity_check_alone() {
    let mb: u64 = std::env::var("RTO_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // Honours SQLITE_BACKUP_BIN (e.g. the release binary).
    let bin = backup_testkit::testkit::binary();
    let t = Instant::now();
    let f = Fixture::new(bin.clone(), mb << 20, "");
    let db_size = std::fs::metadata(&f.db).unwrap().len();
    println!(
        "binary {}\ndatabase {:.1} MB created in {:.1?}",
        bin.display(),
        db_size as f64 / 1e6,
        t.elapsed()
    );

    let t = Instant::now();
    let entry = f.backup("rto");
    println!(
        "backup: {:.1?} (artifact {:.1} MB zstd)",
        t.elapsed(),
        entry.size as f64 / 1e6
    );

    // In place: what an operator runs after corruption (the live db is kept aside).
    let t = Instant::now();
    let out = f
        .cmd()
        .args(["--quiet", "restore", "app"])
        .output()
        .unwrap();
    let in_place = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let timings = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("timings:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    println!("restore in place: {in_place:.2?} ({timings})");

    // To a new path: a fresh host.
    let to = f.dir.path().join("fresh").join("app.db");
    let t = Instant::now();
    let out = f
        .cmd()
        .args(["--quiet", "restore", "app", "--to"])
        .arg(&to)
        .output()
        .unwrap();
    let fresh = t.elapsed();
    assert!(out.status.success());
    println!("restore to a new path: {fresh:.2?}");
    assert_eq!(
        Sha256::hex_of(&std::fs::read(&to).unwrap()),
        entry.db_sha256
    );

    // The floor: integrity_check alone on the same file.
    let t = Instant::now();
    assert_eq!(integrity(&to), ["ok"]);
    let ic = t.elapsed();
    println!("PRAGMA integrity_check alone (rusqlite, same build): {ic:.2?}");
    if let Ok(o) = {
        let t = Instant::now();
        Command::new("sqlite3")
            .arg(&to)
            .arg("PRAGMA integrity_check;")
            .output()
            .map(|o| (o, t.elapsed()))
    } {
        println!(
            "PRAGMA integrity_check alone (sqlite3 shell): {:.2?} -> {}",
            o.1,
            String::from_utf8_lossy(&o.0.stdout).trim()
        );
    }
    println!(
        "ratio restore-in-place / integrity_check: {:.1}x",
        in_place.as_secs_f64() / ic.as_secs_f64()
    );
}
