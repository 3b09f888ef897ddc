//! A process that keeps each run's snapshot pinned until the next run
//! (the daemon at a short interval) stops the WAL from restarting between
//! runs, so runs keep reading only the pages the WAL names; without it, a
//! checkpoint that completes between runs restarts the WAL, which costs the
//! next run a full read unless the old frames after its mark are still in
//! the file (a truncating checkpoint cuts them off).
//! The tests read what each run logs (`pages hashed … read=…`).

use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use backup_core::pipeline::HeldSnapshots;
use backup_core::sink::MemorySink;
use backup_core::{Backups, Database};
use backup_testkit::testkit::incremental_app;

/// The log lines of the runs, kept for the test to read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// What was logged since the last call.
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// Per round: a write, a checkpoint (`mode`), another write, then a run.
/// Returns for each run whether it read only what the WAL named, and
/// checks every snapshot against the live image.
fn rounds(backups: &Backups, db: &Database, app: &Connection, mode: &str) -> Vec<bool> {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    (0..6)
        .map(|round| {
            app.execute("UPDATE t SET v = 'a' || v WHERE id = ?1", [round * 300 + 1])
                .unwrap();
            app.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
                .unwrap();
            app.execute("UPDATE t SET v = 'b' || v WHERE id = ?1", [round * 300 + 2])
                .unwrap();
            let done = backups.backup(db).unwrap();
            let entry = &done.copies[0].1;
            let restored = db.path.with_file_name(format!("restored-{round}.db"));
            backups
                .restore(db)
                .id(&done.run_id)
                .to(&restored)
                .run()
                .unwrap();
            let dump = |c: &Connection| -> Vec<String> {
                c.prepare("SELECT v FROM t ORDER BY id")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            };
            assert_eq!(dump(&Connection::open(&restored).unwrap()), dump(app));
            let logged = logs.take();
            let line = logged
                .lines()
                .find(|l| l.contains("pages hashed"))
                .unwrap_or_else(|| panic!("round {round}: no pages hashed line in {logged}"));
            let named = line.contains("(named by the WAL)");
            assert_eq!(named, !line.contains("read=all"), "{line}");
            // Only the first run reads and checks the image whole.
            assert_eq!(entry.db_sha256.is_empty(), round > 0, "round {round}");
            named
        })
        .collect()
}

#[test]
fn a_held_snapshot_keeps_runs_reading_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = incremental_app(dir.path());
    let build = |cache: &str| {
        Backups::builder()
            .sink(MemorySink::new("local"))
            .scratch_dir(dir.path().join("scratch"))
            .page_cache(dir.path().join(cache))
    };

    // Nobody holds a snapshot: each checkpoint completes and the next write
    // restarts the WAL. The old frames after each run's mark are still in
    // place (the new generation is shorter), so runs still read only what
    // the frames name...
    let plain = build("plain").build();
    let from_wal = rounds(&plain, &db, &app, "PASSIVE");
    assert_eq!(from_wal, [false, true, true, true, true, true]);
    // ... unless a truncating checkpoint cut them off: every run reads
    // every page.
    let plain = build("truncated").build();
    let from_wal = rounds(&plain, &db, &app, "TRUNCATE");
    assert_eq!(from_wal, [false; 6]);

    // The previous run's snapshot held: the checkpoint cannot complete, the
    // WAL is neither truncated nor restarted, and every run after the first
    // reads only what the WAL names.
    let held = HeldSnapshots::new();
    let holding = build("held").hold_snapshots(held.clone()).build();
    // The checkpoint gives up at once instead of waiting for the reader.
    app.execute_batch("PRAGMA busy_timeout = 0").unwrap();
    let from_wal = rounds(&holding, &db, &app, "TRUNCATE");
    assert_eq!(from_wal, [false, true, true, true, true, true]);
    assert_eq!(held.len(), 1);
}

#[test]
fn a_wal_file_grown_once_by_a_burst_does_not_stop_the_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = incremental_app(dir.path());
    // A burst long ago left the WAL file longer than MAX_HELD_WAL: SQLite
    // restarts a WAL by writing over it from the start and never shortens
    // it (without journal_size_limit). What lies past the valid frames is
    // ignored by SQLite, as the stale frames of a restarted WAL are.
    app.execute("UPDATE t SET v = 'w' || v WHERE id = 1", [])
        .unwrap();
    let wal = db.path.with_file_name("app.db-wal");
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(backup_core::pipeline::MAX_HELD_WAL + (8 << 20))
        .unwrap();

    let held = HeldSnapshots::new();
    let holding = Backups::builder()
        .sink(MemorySink::new("local"))
        .scratch_dir(dir.path().join("scratch"))
        .page_cache(dir.path().join("cache"))
        .hold_snapshots(held.clone())
        .build();
    let from_wal = rounds(&holding, &db, &app, "PASSIVE");
    assert_eq!(from_wal, [false, true, true, true, true, true]);
}
