//! Show progress of a long backup, and cancel one from another thread:
//! a cancelled backup stores nothing and lists nothing.
//!
//! `cargo run --example progress_and_cancel`

use std::sync::atomic::{AtomicU64, Ordering};

use backup_core::{Backups, CancelToken, Database, Error, Progress};
use backup_local::LocalSink;
use backup_testkit::demo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let db_path = tmp.path().join("app.db");
    demo::create(&db_path, 12_000_000, 2)?;
    let backups = Backups::new(LocalSink::folder(tmp.path().join("backups")));
    let app = Database::new("app", &db_path);

    // 1. Progress: the closure is called as the database is read.
    let last = AtomicU64::new(0);
    let taken = backups.backup_with(
        &app,
        Some("session"),
        |p| {
            let (Progress::Stream { done, total, .. } | Progress::Snapshot { done, total, .. }) = p;
            let pct = done * 100 / total.max(1);
            if pct >= last.load(Ordering::Relaxed) + 25 {
                last.store(pct, Ordering::Relaxed);
                println!("progress: {pct}%");
            }
        },
        None,
    )?;
    println!("backed up: {}", taken.copies[0].1.key);
    assert!(last.load(Ordering::Relaxed) >= 75, "progress was reported");

    // 2. Cancel: the token is cancelled from the progress callback, as a
    // signal handler or another thread would.
    let cancel = CancelToken::new();
    let result = backups.backup_with(
        &app,
        Some("session"),
        |p| {
            let (Progress::Stream { done, .. } | Progress::Snapshot { done, .. }) = p;
            if done > 0 {
                cancel.cancel();
            }
        },
        Some(&cancel),
    );
    match result {
        Err(Error::Cancelled) => println!("cancelled: nothing of it was stored"),
        other => return Err(format!("expected a cancelled backup, got {other:?}").into()),
    }
    let (listed, _) = backups.list();
    assert_eq!(listed.len(), 1, "only the first backup is listed");
    Ok(())
}
