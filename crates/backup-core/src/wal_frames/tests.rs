use std::path::Path;

use proptest::prelude::*;
use rusqlite::Connection;

use super::*;
use crate::snapshot::PageStream;

/// A database in WAL mode with a writer connection kept open (so the WAL
/// stays), and a few hundred rows over many pages.
fn database(dir: &Path) -> (std::path::PathBuf, Connection) {
    let db = dir.join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);
         CREATE INDEX t_body ON t(body);",
    )
    .unwrap();
    for i in 0..400 {
        insert(&conn, i);
    }
    (db, conn)
}

fn insert(conn: &Connection, i: i64) {
    conn.execute(
        "INSERT INTO t (body) VALUES (?1)",
        [format!("{i:05}-{}", "x".repeat(300))],
    )
    .unwrap();
}

/// The pinned image and its mark.
fn snapshot(db: &Path) -> (Vec<u8>, u64, Option<Mark>) {
    let stream = PageStream::open(db).unwrap().expect("WAL + sqlite_dbpage");
    let mark = mark(stream.connection(), db);
    let mut image = Vec::new();
    stream.copy_to(&mut image, &mut |_, _| {}).unwrap();
    let page_size = stream.page_size();
    stream.finish().unwrap();
    (image, page_size, mark)
}

/// Pages of `new` that differ from `old`, and pages past its end.
fn differing(old: &[u8], new: &[u8], page_size: u64) -> BTreeSet<u64> {
    let ps = page_size as usize;
    new.chunks(ps)
        .enumerate()
        .filter(|(i, page)| old.get(i * ps..(i + 1) * ps) != Some(*page))
        .map(|(i, _)| i as u64)
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u8),
    Update(u16),
    Delete(u16),
    Checkpoint(&'static str),
    Vacuum,
    AutoCheckpoint(u16),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Insert),
        4 => any::<u16>().prop_map(Op::Update),
        2 => any::<u16>().prop_map(Op::Delete),
        2 => prop::sample::select(vec!["PASSIVE", "FULL", "RESTART", "TRUNCATE"]).prop_map(Op::Checkpoint),
        1 => Just(Op::Vacuum),
        1 => prop::sample::select(vec![0u16, 1, 4, 1000]).prop_map(Op::AutoCheckpoint),
        5 => Just(Op::Snapshot),
    ]
}

fn apply(conn: &Connection, op: &Op, next: &mut i64) {
    match op {
        Op::Insert(n) => {
            for _ in 0..=(*n % 8) {
                insert(conn, *next);
                *next += 1;
            }
        }
        Op::Update(k) => {
            conn.execute(
                "UPDATE t SET body = body || 'u' WHERE id % 97 = ?1",
                [i64::from(*k % 97)],
            )
            .unwrap();
        }
        Op::Delete(k) => {
            conn.execute("DELETE FROM t WHERE id % 53 = ?1", [i64::from(*k % 53)])
                .unwrap();
        }
        Op::Checkpoint(mode) => {
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
                .unwrap();
        }
        Op::Vacuum => conn.execute_batch("VACUUM").unwrap(),
        Op::AutoCheckpoint(n) => {
            conn.query_row(&format!("PRAGMA wal_autocheckpoint = {n}"), [], |_| Ok(()))
                .unwrap();
        }
        Op::Snapshot => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the writes and checkpoints between two snapshots, the frames
    /// either name every page that differs or the answer is "unknown".
    #[test]
    fn frames_name_every_changed_page_or_say_they_cannot(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (db, conn) = database(dir.path());
        let mut next = 1000;
        let (mut image, _, mut before) = snapshot(&db);
        for op in ops.iter().chain([&Op::Snapshot]) {
            apply(&conn, op, &mut next);
            if !matches!(op, Op::Snapshot) {
                continue;
            }
            let (now, page_size, after) = snapshot(&db);
            if let Changes::Pages(named) = changed_between(&db, before.as_ref(), after.as_ref()).unwrap() {
                let missing: Vec<u64> = differing(&image, &now, page_size).difference(&named).copied().collect();
                prop_assert!(missing.is_empty(), "pages {missing:?} changed but no frame names them ({ops:?})");
            }
            image = now;
            before = after;
        }
    }
}

#[test]
fn without_restarts_every_run_knows_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = database(dir.path());
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
    let (mut image, _, mut before) = snapshot(&db);
    assert!(before.is_some(), "this SQLite names snapshots");
    for round in 0..20i64 {
        conn.execute(
            "UPDATE t SET body = body || 'v' WHERE id = ?1",
            [round * 17 + 1],
        )
        .unwrap();
        let (now, page_size, after) = snapshot(&db);
        let diff = differing(&image, &now, page_size);
        match changed_between(&db, before.as_ref(), after.as_ref()).unwrap() {
            Changes::Pages(named) => {
                assert!(
                    diff.is_subset(&named),
                    "round {round}: {diff:?} vs {named:?}"
                );
                assert!(
                    !named.is_empty() && named.len() < 6,
                    "round {round}: {named:?}"
                );
            }
            Changes::Unknown(why) => panic!("round {round}: {why}"),
        }
        image = now;
        before = after;
    }
    // Nothing written: nothing named.
    let (_, _, after) = snapshot(&db);
    assert_eq!(
        changed_between(&db, before.as_ref(), after.as_ref()).unwrap(),
        Changes::Pages(BTreeSet::new())
    );
}

#[test]
fn a_held_snapshot_keeps_the_knowledge_through_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = database(dir.path());
    let mut held = PageStream::open(&db).unwrap().unwrap();
    let mut before = mark(held.connection(), &db);
    let mut image = Vec::new();
    held.copy_to(&mut image, &mut |_, _| {}).unwrap();
    for round in 0..10i64 {
        conn.execute("UPDATE t SET body = body || 'w' WHERE id = ?1", [round + 1])
            .unwrap();
        // With the previous snapshot still pinned, a checkpoint cannot copy
        // past it, so the next writer cannot restart the WAL.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        insert(&conn, 5000 + round);
        let next = PageStream::open(&db).unwrap().unwrap();
        let after = mark(next.connection(), &db);
        let mut now = Vec::new();
        next.copy_to(&mut now, &mut |_, _| {}).unwrap();
        held.finish().unwrap();
        let diff = differing(&image, &now, next.page_size());
        match changed_between(&db, before.as_ref(), after.as_ref()).unwrap() {
            Changes::Pages(named) => assert!(diff.is_subset(&named), "round {round}"),
            Changes::Unknown(why) => panic!("round {round}: {why}"),
        }
        (held, before, image) = (next, after, now);
    }
}

#[test]
fn a_restart_a_replaced_file_or_a_mode_switch_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = database(dir.path());
    let verdict = |before: &Option<Mark>| {
        let (_, _, after) = snapshot(&db);
        changed_between(&db, before.as_ref(), after.as_ref()).unwrap()
    };
    let unknown = |c: Changes, expect: &str| match c {
        Changes::Unknown(why) => assert!(why.contains(expect), "{why}"),
        other => panic!("expected unknown ({expect}), got {other:?}"),
    };

    // Truncated: the old frames after the mark may have been cut off.
    let (_, _, before) = snapshot(&db);
    insert(&conn, 1);
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    insert(&conn, 2);
    unknown(
        verdict(&before),
        "restarted (the old frames after the mark run to the end",
    );

    let (_, _, before) = snapshot(&db);
    conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA journal_mode = WAL;")
        .unwrap();
    insert(&conn, 3);
    // A new WAL file: its inode, or else its salts, differ.
    unknown(verdict(&before), "");

    let (_, _, before) = snapshot(&db);
    drop(conn);
    let other = dir.path().join("other.db");
    std::fs::copy(&db, &other).unwrap();
    std::fs::rename(&other, &db).unwrap();
    let conn = Connection::open(&db).unwrap();
    insert(&conn, 4);
    unknown(verdict(&before), "replaced");

    unknown(verdict(&None), "no WAL position");
}

#[test]
fn a_damaged_frame_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = database(dir.path());
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
    let (_, _, before) = snapshot(&db);
    insert(&conn, 1);
    let (_, _, after) = snapshot(&db);
    let (from, to) = (before.unwrap(), after.unwrap());
    assert!(to.frames > from.frames);
    // Flip a byte inside the first frame after the mark.
    let wal = wal_path(&db);
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = (WAL_HEADER + u64::from(from.frames) * (FRAME_HEADER + u64::from(to.page_size)) + 100)
        as usize;
    bytes[at] ^= 1;
    // Rewritten in place: the same inode, as a disk error would leave it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, &bytes[at..at + 1], at as u64))
        .unwrap();
    match changed_between(&db, Some(&from), Some(&to)).unwrap() {
        Changes::Unknown(why) => assert!(why.contains("checksum"), "{why}"),
        other => panic!("{other:?}"),
    }
}

fn checkpoint(conn: &Connection, mode: &str) {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
        .unwrap();
}

fn update(conn: &Connection, ids: std::ops::Range<i64>) {
    for id in ids {
        conn.execute("UPDATE t SET body = body || 'r' WHERE id = ?1", [id])
            .unwrap();
    }
}

/// A WAL whose first generation is long (hundreds of frames), restarted,
/// with a few frames of the second generation: where a snapshot is taken.
fn after_a_long_generation(dir: &Path) -> (std::path::PathBuf, Connection) {
    let (db, conn) = database(dir);
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
    update(&conn, 1..200);
    checkpoint(&conn, "RESTART");
    update(&conn, 1..3);
    (db, conn)
}

#[test]
fn one_restart_with_the_old_frames_in_place_names_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = after_a_long_generation(dir.path());
    let (image, _, before) = snapshot(&db);
    // After the mark: more of this generation (copied into the database
    // before the restart, so no snapshot of the new one shows them as
    // frames), then a restart and a few frames of the next.
    update(&conn, 300..320);
    checkpoint(&conn, "RESTART");
    update(&conn, 3..5);
    let (now, page_size, after) = snapshot(&db);
    let (from, to) = (before.unwrap(), after.unwrap());
    assert_ne!(from.salts, to.salts, "the WAL restarted");
    let diff = differing(&image, &now, page_size);
    match changed_between(&db, Some(&from), Some(&to)).unwrap() {
        Changes::Pages(named) => {
            assert!(diff.is_subset(&named), "{diff:?} vs {named:?}");
            // Rows 300 to 319 live on pages only the old frames name.
            assert!(diff.len() > 3, "{diff:?}");
        }
        Changes::Unknown(why) => panic!("{why}"),
    }
}

/// A mark in a short generation after a long one, two rows changed after
/// it, a restart, then `then`: the verdict for a snapshot after that.
fn across_a_restart(then: impl FnOnce(&Path, &Connection, &Mark)) -> Changes {
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = after_a_long_generation(dir.path());
    let (_, _, before) = snapshot(&db);
    let from = before.unwrap();
    update(&conn, 300..302);
    checkpoint(&conn, "RESTART");
    then(&db, &conn, &from);
    let (_, _, after) = snapshot(&db);
    changed_between(&db, Some(&from), after.as_ref()).unwrap()
}

#[test]
fn two_restarts_or_new_frames_over_the_old_ones_are_unknown() {
    let unknown = |c: Changes, expect: &str| match c {
        Changes::Unknown(why) => assert!(why.contains(expect), "{why}"),
        other => panic!("expected unknown ({expect}), got {other:?}"),
    };
    let twice = across_a_restart(|_, conn, _| {
        update(conn, 3..4);
        checkpoint(conn, "RESTART");
        update(conn, 4..5);
    });
    unknown(twice, "more than once");
    // The next generation writes past the mark: the old frames there are
    // gone.
    unknown(
        across_a_restart(|_, conn, _| update(conn, 5..60)),
        "reach the old ones",
    );
    // An old frame after the mark damaged on disk.
    let damaged = across_a_restart(|db, conn, from| {
        update(conn, 3..4);
        let frame = FRAME_HEADER + u64::from(from.page_size);
        let at = WAL_HEADER + u64::from(from.frames + 1) * frame + 200;
        std::fs::OpenOptions::new()
            .write(true)
            .open(wal_path(db))
            .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, b"damage", at))
            .unwrap();
    });
    unknown(damaged, "fails its checksum");
}

#[test]
fn only_an_earlier_generation_ends_the_old_frames() {
    let mark = [0x10, 0, 0, 5, 1, 2, 3, 4];
    let with = |first: u32, second: u32| {
        let mut s = [0u8; 8];
        s[..4].copy_from_slice(&first.to_be_bytes());
        s[4..].copy_from_slice(&second.to_be_bytes());
        s
    };
    let first = be32(&mark[..4]);
    assert!(older_generation(&with(first - 1, 99), &mark));
    assert!(older_generation(&with(first - 300, 99), &mark));
    // Its own generation, the next one, a random one, zeroed salts.
    assert!(!older_generation(&with(first, 99), &mark));
    assert!(!older_generation(&with(first + 1, 99), &mark));
    assert!(!older_generation(&with(first ^ 0x8000_0000, 99), &mark));
    assert!(!older_generation(&[0; 8], &mark));
}

#[test]
fn an_open_transaction_past_the_mark_never_hides_the_old_frames() {
    // A second writer's transaction larger than its cache spills frames
    // past the mark (rewriting a spilled page zeroes the salts of the
    // frames after it until commit) while the snapshot is taken.
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = after_a_long_generation(dir.path());
    let (image, _, before) = snapshot(&db);
    update(&conn, 300..340);
    checkpoint(&conn, "RESTART");
    update(&conn, 3..4);
    let big = Connection::open(&db).unwrap();
    big.execute_batch(
        "PRAGMA cache_size = 2; BEGIN;
         UPDATE t SET body = body || 'z';
         UPDATE t SET body = body || 'y' WHERE id % 2 = 0;",
    )
    .unwrap();
    let (now, page_size, after) = snapshot(&db);
    let diff = differing(&image, &now, page_size);
    if let Changes::Pages(named) = changed_between(&db, before.as_ref(), after.as_ref()).unwrap() {
        assert!(diff.is_subset(&named), "{diff:?} vs {named:?}");
    }
    big.execute_batch("ROLLBACK").unwrap();
    let (now, page_size, later) = snapshot(&db);
    let diff = differing(&image, &now, page_size);
    if let Changes::Pages(named) = changed_between(&db, before.as_ref(), later.as_ref()).unwrap() {
        assert!(diff.is_subset(&named), "{diff:?} vs {named:?}");
    }
}
