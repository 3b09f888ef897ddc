//! Call the library from a tokio application without blocking its runtime:
//! backups are blocking work (file and SQLite I/O, compression on every
//! core), so they run on tokio's blocking pool while the service keeps
//! answering.
//!
//! `cargo run --example in_async_service`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup_core::{Backups, Database};
use backup_local::LocalSink;
use backup_testkit::demo;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let db_path = tmp.path().join("app.db");
    demo::create(&db_path, 4_000_000, 3)?;
    let backups = Arc::new(Backups::new(LocalSink::folder(tmp.path().join("backups"))));
    let app = Database::new("app", &db_path);

    // Proof that the runtime stays free: the backup's first progress report
    // waits until an async task on this one-thread runtime has answered. If
    // the backup blocked the runtime, that answer could never come.
    let (answered, answer) = std::sync::mpsc::channel::<()>();
    let answer = Mutex::new(answer);
    let service = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        answered.send(()).expect("backup waiting");
    });

    let job = {
        let (backups, app) = (backups.clone(), app.clone());
        tokio::task::spawn_blocking(move || {
            let waited = AtomicBool::new(false);
            backups.backup_with(
                &app,
                None,
                |_| {
                    if !waited.swap(true, Ordering::SeqCst) {
                        let got = answer.lock().unwrap().recv_timeout(Duration::from_secs(30));
                        assert!(got.is_ok(), "the runtime was blocked");
                    }
                },
                None,
            )
        })
    };
    let taken = job.await??;
    service.await?;
    println!(
        "backed up {} while the service kept answering",
        taken.copies[0].1.key
    );

    let verified = {
        let backups = backups.clone();
        tokio::task::spawn_blocking(move || backups.verify_latest(&app)).await??
    };
    assert_eq!(verified.listed.run_id, taken.run_id);
    Ok(())
}
