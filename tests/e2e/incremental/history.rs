//! A long incremental history (60 runs over three chains) restored at
//! seeded points in time: `restore --at` gives exactly the newest snapshot
//! taken at or before the time asked for, to the nanosecond.

use std::path::Path;

use backup_core::digest::Sha256;
use backup_testkit::demo::Rng;
use backup_testkit::testkit::{Project, output_text, require_tool};
use jiff::{SignedDuration, Timestamp};
use rusqlite::{Connection, params};

use super::{CONFIG, dump, newest};

const RUNS: usize = 60;
const MAX_CHAIN: usize = 20;

/// A few random updates, inserts and deletes in one transaction, leaving
/// no dangling foreign key (restore runs `foreign_key_check`).
fn scramble(db: &Path, rng: &mut Rng) {
    let mut conn = Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    let max: i64 = tx
        .query_row("SELECT max(id) FROM tasks", [], |r| r.get(0))
        .unwrap();
    // Few enough that no run changes half the pages (that is a new base).
    for _ in 0..2 + rng.below(6) {
        let (op, id, v) = (
            rng.below(4),
            1 + rng.below(max as u64) as i64,
            rng.below(1_000_000_000),
        );
        match op {
            0 => tx
                .execute(
                    "UPDATE tasks SET status = ?1, priority = ?2 WHERE id = ?3",
                    params![format!("s{v}"), (v % 5) as i64, id],
                )
                .unwrap(),
            1 => tx
                .execute(
                    "UPDATE thought_records SET body = ?1 WHERE task_id = ?2",
                    params![format!("rewritten {v} ").repeat(1 + (v % 30) as usize), id],
                )
                .unwrap(),
            2 => {
                tx.execute(
                    "INSERT INTO tasks(title, owner, status, priority, created_at) VALUES (?1, 'history', 'pending', 1, '2026-12-01T00:00:00Z')",
                    params![format!("inserted {v}")],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO thought_records(task_id, body, created_at) VALUES (last_insert_rowid(), ?1, '2026-12-01T00:00:00Z')",
                    params![format!("note {v}")],
                )
                .unwrap()
            }
            _ => {
                tx.execute("DELETE FROM thought_records WHERE task_id = ?1", [id])
                    .unwrap();
                tx.execute("DELETE FROM tasks WHERE id = ?1", [id]).unwrap()
            }
        };
    }
    tx.commit().unwrap();
}

struct Taken {
    run_id: String,
    at: Timestamp,
    db_sha256: String,
    dump_sha256: String,
}

/// A time strictly between `a` and `b` (`a < b`).
fn between(a: Timestamp, b: Timestamp, rng: &mut Rng) -> Timestamp {
    let gap = b.duration_since(a).as_nanos();
    assert!(gap >= 2, "snapshots {a} and {b} are less than 2 ns apart");
    a + SignedDuration::from_nanos(1 + rng.below((gap - 1) as u64) as i64)
}

#[test]
fn sixty_runs_restore_at_ten_random_times() {
    require_tool("sqlite3");
    let p = Project::new();
    let db = p.demo_db("app.db", 2_000_000);
    p.write_config(&format!("{CONFIG}max_chain = {MAX_CHAIN}\n"));
    let mut rng = Rng::new(60);

    let mut taken: Vec<Taken> = Vec::new();
    for i in 0..RUNS {
        if i > 0 {
            scramble(&db, &mut rng);
        }
        p.run_ok(&["backup"]);
        assert_eq!(p.catalog().len(), i + 1);
        let l = newest(&p);
        let map = l.entry.pages.as_ref().expect("incremental entry");
        // max_chain links after each full base, then a new base.
        assert_eq!(map.chain_depth as usize, i % (MAX_CHAIN + 1), "run {i}");
        // Nothing writes now: the live database is the snapshot.
        taken.push(Taken {
            run_id: l.run_id,
            at: l.entry.snapshot_at,
            db_sha256: l.entry.db_sha256,
            dump_sha256: Sha256::hex_of(dump(&p, &db).as_bytes()),
        });
    }
    for w in taken.windows(2) {
        assert!(w[0].at < w[1].at, "{} then {}", w[0].at, w[1].at);
        assert_ne!(w[0].dump_sha256, w[1].dump_sha256, "a run saw no change");
    }
    let same_second = taken
        .windows(2)
        .filter(|w| w[0].at.as_second() == w[1].at.as_second())
        .count();
    // The catalog keeps sub-second times: `list --json` shows the fraction.
    let out = p.run(&["list", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for t in &taken {
        let row = rows.iter().find(|r| r["id"] == t.run_id.as_str()).unwrap();
        assert_eq!(
            row["snapshot_at"]
                .as_str()
                .unwrap()
                .parse::<Timestamp>()
                .unwrap(),
            t.at
        );
    }
    eprintln!(
        "{same_second} of {} consecutive runs fell in one second",
        RUNS - 1
    );

    // 4 times exactly at a snapshot, 5 between two, 1 before the first.
    let mut points: Vec<(Timestamp, Option<usize>)> = Vec::new();
    for _ in 0..4 {
        let i = rng.below(RUNS as u64) as usize;
        points.push((taken[i].at, Some(i)));
    }
    for _ in 0..5 {
        let i = rng.below(RUNS as u64 - 1) as usize;
        points.push((between(taken[i].at, taken[i + 1].at, &mut rng), Some(i)));
    }
    let early = SignedDuration::from_nanos(1 + rng.below(1_000_000_000) as i64);
    points.push((taken[0].at - early, None));

    for (n, (at, want)) in points.iter().enumerate() {
        // The expectation, from the recorded times alone.
        assert_eq!(*want, taken.iter().rposition(|t| t.at <= *at));
        let name = format!("at-{n}.db");
        let to = p.join(&name);
        let out = p.run(&["restore", "app", "--at", &at.to_string(), "--to", &name]);
        let text = output_text(&out);
        let Some(i) = *want else {
            assert_eq!(out.status.code(), Some(1), "{at}: {text}");
            assert!(
                text.contains(
                    "no backup of \"app\" matches the newest snapshot taken at or before"
                ),
                "{at}: {text}"
            );
            let left: Vec<String> = std::fs::read_dir(p.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.starts_with(&name) || f.contains(".partial"))
                .collect();
            assert!(left.is_empty(), "a failed restore left {left:?}");
            continue;
        };
        assert!(out.status.success(), "{at}: {text}");
        let t = &taken[i];
        assert!(
            text.contains(&format!("from snapshot {} ", t.run_id)),
            "{at}: expected {}: {text}",
            t.run_id
        );
        assert_eq!(
            Sha256::hex_of(&std::fs::read(&to).unwrap()),
            t.db_sha256,
            "{at}: snapshot {i}"
        );
        assert_eq!(
            Sha256::hex_of(dump(&p, &to).as_bytes()),
            t.dump_sha256,
            "{at}: snapshot {i}"
        );
    }
}
