//! Backups under load: a writer committing ≥ 500 transactions/s through a
//! backup of a WAL database; a source that never stops changing (pinned read
//! transaction versus SQLite's step loop without one); a rollback-journal
//! database with a writer.
//!
//! Still to add after the restore merge: restore the artifact with
//! `sqlite-backup restore app --to PATH` instead of decompressing it here.

use std::path::Path;
use std::time::{Duration, Instant};

use backup_core::compress::Compression;
use backup_core::manifest::Entry;
use backup_core::snapshot::OnlineBackup;
use backup_testkit::demo::{Writer, WriterStats};
use backup_testkit::testkit::{Project, assert_snapshot_point, task_ids};
use jiff::Timestamp;
use rusqlite::Connection;

/// Decompress a listed artifact of the local tier to `out` (what a restore
/// places, minus the ceremony).
fn unpack(p: &Project, entry: &Entry, out: &Path) {
    let input = std::fs::File::open(p.backups().join(&entry.key)).unwrap();
    let mut dec = Compression::new(entry.compression)
        .decoder(Box::new(std::io::BufReader::new(input)))
        .unwrap();
    let mut f = std::fs::File::create(out).unwrap();
    std::io::copy(&mut dec, &mut f).unwrap();
}

fn integrity(db: &Path) -> String {
    Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Rows `id <= max` of `tasks`, as text, for comparing source and copy.
fn rows_up_to(db: &Path, max: i64) -> Vec<(i64, String, String)> {
    let c = Connection::open(db).unwrap();
    let mut s = c
        .prepare("SELECT id, title, created_at FROM tasks WHERE id <= ?1 ORDER BY id")
        .unwrap();
    s.query_map([max], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The snapshot holds exactly the ids 1..=max, every commit that returned
/// before the snapshot began, and each of those rows exactly as the source
/// has it. Returns max.
fn assert_consistent(p: &Project, entry: &Entry, source: &Path, stats: &WriterStats) -> i64 {
    let restored = p.join("restored.db");
    let _ = std::fs::remove_file(&restored);
    unpack(p, entry, &restored);
    assert_eq!(integrity(&restored), "ok");
    let max = assert_snapshot_point(&restored, entry.snapshot_at, stats);
    assert_eq!(
        rows_up_to(&restored, max),
        rows_up_to(source, max),
        "a row in the snapshot differs from the committed row"
    );
    max
}

/// These tests measure timing: run them one at a time, not against each
/// other's writers on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn window(stats: &WriterStats, from: Timestamp, to: Timestamp) -> WriterStats {
    let mut w = WriterStats::default();
    for ((id, t), lat) in stats.commits.iter().zip(&stats.latencies) {
        if *t >= from && *t <= to {
            w.commits.push((*id, *t));
            w.latencies.push(*lat);
        }
    }
    w
}

#[test]
fn a_writer_at_500_commits_per_second_through_a_wal_backup() {
    let _serial = serial();
    let p = Project::new();
    let db = p.demo_db("app.db", 12_000_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n",
    );

    // Baseline: the same writer without a backup. The writer runs flat out
    // (it reaches thousands of commits/s): paced by sleeps, a thread on a
    // loaded 2-core machine falls below 500/s for reasons unrelated to us.
    let w = Writer::start(&db, 0).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let idle = w.stop();
    assert!(idle.errors.is_empty(), "{:?}", idle.errors);
    let idle_rate = idle.commits.len() as f64 / 1.5;

    let w = Writer::start(&db, 0).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (t0, i0) = (Timestamp::now(), Instant::now());
    p.run_ok(&["backup"]);
    let (t1, took) = (Timestamp::now(), i0.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    let stats = w.stop();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    let during = window(&stats, t0, t1);
    let rate = during.commits.len() as f64 / took.as_secs_f64();

    let entry = p.catalog().remove(0).entry;
    let max = assert_consistent(&p, &entry, &db, &stats);
    let (p50, p99) = (during.percentile(0.5), during.percentile(0.99));
    eprintln!(
        "WAL writer: backup took {took:?}, {} commits during it ({rate:.0}/s; {idle_rate:.0}/s without backup), \
         snapshot holds ids 1..={max} ({} commits in all); latency without backup p50 {:?} p99 {:?}; \
         during backup p50 {p50:?} p99 {p99:?} max {:?}",
        during.commits.len(),
        stats.commits.len(),
        idle.percentile(0.5),
        idle.percentile(0.99),
        during.percentile(1.0),
    );
    // 500/s and 50 ms are the targets; a machine too loaded to reach them
    // without a backup is held to what it reached then (a quarter of it,
    // ten times its p99), which a backup blocking the writer still fails.
    let wanted = (idle_rate / 4.0).min(500.0);
    assert!(
        rate >= wanted,
        "writer managed only {rate:.0} commits/s ({idle_rate:.0}/s without backup)"
    );
    let bound = (idle.percentile(0.99) * 10).max(Duration::from_millis(50));
    assert!(
        p99 < bound,
        "writer p99 commit latency during the backup is {p99:?} (bound {bound:?})"
    );
}

/// SQLite's online backup in steps of 100 pages, with one commit by another
/// connection between every two steps: a source that never stops changing,
/// made deterministic. `pinned` holds one read transaction across all steps
/// (what snapshot.rs does); without it, each `step` opens a fresh read (the
/// shape of rusqlite's `run_to_completion`). Returns (steps taken, finished,
/// restarts), giving up after `max_steps`.
fn step_loop(src_path: &Path, dest: &Path, pinned: bool, max_steps: u32) -> (u32, bool, u32) {
    let src =
        Connection::open_with_flags(src_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let writer = Connection::open(src_path).unwrap();
    writer.busy_timeout(Duration::from_secs(10)).unwrap();
    if pinned {
        src.execute_batch("BEGIN").unwrap();
        src.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap();
    }
    let mut dst = Connection::open(dest).unwrap();
    let backup = rusqlite::backup::Backup::new(&src, &mut dst).unwrap();
    let (mut restarts, mut last_remaining) = (0, i32::MAX);
    for step in 1..=max_steps {
        match backup.step(100).unwrap() {
            rusqlite::backup::StepResult::Done => return (step, true, restarts),
            _ => {
                let remaining = backup.progress().remaining;
                // No progress since the last step: the copy started over.
                if remaining >= last_remaining {
                    restarts += 1;
                }
                last_remaining = remaining;
            }
        }
        writer
            .execute(
                "INSERT INTO tasks (title, owner, status, priority, created_at) VALUES ('x', 'w', 'pending', 1, 'now')",
                [],
            )
            .unwrap();
    }
    (max_steps, false, restarts)
}

#[test]
fn a_source_that_never_stops_changing_is_still_snapshotted_in_bounded_time() {
    let _serial = serial();
    let p = Project::new();
    let db = p.demo_db("busy.db", 4_000_000);

    // Deterministic: a commit between every two steps.
    let pages: u32 = Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let needed = pages.div_ceil(100);
    let (steps, finished, restarts) = step_loop(&db, &p.join("pinned-det.db"), true, needed + 5);
    assert!(
        finished && restarts == 0,
        "pinned: {steps} steps, {restarts} restarts"
    );
    assert_eq!(integrity(&p.join("pinned-det.db")), "ok");
    let budget = 20 * needed;
    let (_, finished, restarts) = step_loop(&db, &p.join("unpinned-det.db"), false, budget);
    assert!(
        !finished && restarts >= budget - 2,
        "without the pinned read the copy must restart at every step ({restarts} restarts)"
    );
    eprintln!(
        "commit between every step: pinned copy of {pages} pages done in {steps} steps; \
         unpinned not done after {budget} steps ({restarts} restarts)"
    );

    // Live: a writer committing as fast as it can, and the real snapshot.
    let writer = Writer::start(&db, 0).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pinned = p.join("pinned.db");
    let t0 = Instant::now();
    let stats = OnlineBackup {
        pages_per_step: 100,
    }
    .take(&db, &pinned, &mut |_, _| {})
    .expect("pinned snapshot");
    let took = t0.elapsed();
    let w = writer.stop();
    assert!(w.errors.is_empty(), "{:?}", w.errors);
    let rate = w.commits.len() as f64
        / w.commits
            .last()
            .unwrap()
            .1
            .duration_since(w.commits[0].1)
            .as_secs_f64();
    eprintln!(
        "full-speed writer ({rate:.0} commits/s): pinned snapshot of {} pages in steps of 100 took {took:?}",
        stats.page_count
    );
    assert_eq!(integrity(&pinned), "ok");
    let ids = task_ids(&pinned);
    assert_eq!(ids, (1..=*ids.last().unwrap()).collect::<Vec<_>>());
    assert!(
        took < Duration::from_secs(30),
        "pinned snapshot took {took:?}"
    );
}

/// A 4 MB demo database in rollback-journal mode (`journal_mode = DELETE`).
fn journal_db(p: &Project) -> std::path::PathBuf {
    let db = p.demo_db("journal.db", 4_000_000);
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
    db
}

#[test]
fn a_rollback_journal_database_is_backed_up_consistently_under_a_writer() {
    let _serial = serial();
    let p = Project::new();
    let db = journal_db(&p);
    p.write_config(
        "[[database]]\nlabel = \"journal\"\npath = \"journal.db\"\nrequired_tables = [\"tasks\"]\n",
    );
    let w = Writer::start(&db, 200).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    p.run_ok(&["backup"]);
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let stats = w.stop();
    assert!(
        stats.errors.is_empty(),
        "the writer must wait for the snapshot, not fail: {:?}",
        stats.errors
    );
    let entry = p.catalog().remove(0).entry;
    let max = assert_consistent(&p, &entry, &db, &stats);
    eprintln!(
        "rollback journal: backup took {took:?} (snapshot {} ms); writer {} commits, p50 {:?}, max wait {:?}; snapshot holds 1..={max}",
        entry.snapshot_ms,
        stats.commits.len(),
        stats.percentile(0.5),
        stats.percentile(1.0)
    );
    for suffix in ["-wal", "-shm"] {
        assert!(
            !p.join(&format!("journal.db{suffix}")).exists(),
            "backup turned the rollback-journal database into WAL"
        );
    }
}

#[test]
fn a_rollback_journal_snapshot_gets_its_read_lock_against_a_full_speed_writer() {
    let _serial = serial();
    // A writer committing back to back holds the exclusive lock nearly all
    // the time; SQLite's default busy back-off (up to 100 ms sleeps) waited
    // 6 s here for the first read lock. The source busy handler polls each
    // millisecond (snapshot.rs), so the snapshot starts within milliseconds
    // and then the writer waits for the copy instead.
    let p = Project::new();
    let db = journal_db(&p);
    let writer = Writer::start(&db, 0).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = p.join("snap.db");
    let stats = OnlineBackup::default()
        .take(&db, &out, &mut |_, _| {})
        .expect("snapshot");
    let took = t0.elapsed();
    let w = writer.stop();
    assert!(w.errors.is_empty(), "{:?}", w.errors);
    eprintln!(
        "rollback journal, full-speed writer ({} commits, p50 {:?}, max {:?}): snapshot of {} pages took {took:?}",
        w.commits.len(),
        w.percentile(0.5),
        w.percentile(1.0),
        stats.page_count
    );
    assert_eq!(integrity(&out), "ok");
    let ids = task_ids(&out);
    assert_eq!(ids, (1..=*ids.last().unwrap()).collect::<Vec<_>>());
    assert!(took < Duration::from_secs(3), "snapshot took {took:?}");
}
