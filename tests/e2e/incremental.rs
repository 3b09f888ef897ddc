//! End-to-end: `[snapshot] incremental = true` stores only changed pages,
//! and every snapshot of a chain restores to exactly its image.

mod compaction;
mod daemon;
mod history;
mod large;
mod remote;
mod wal_hint;

use std::path::Path;

use backup_core::digest::Sha256;
use backup_core::manifest::Listed;
use backup_testkit::testkit::{Project, output_text, require_tool, sh};

const CONFIG: &str = "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n\n[snapshot]\nincremental = true\n";

fn sql(p: &Project, script: &str) {
    sh(p.path(), &format!("sqlite3 app.db \"{script}\""));
}

fn dump(p: &Project, db: &Path) -> String {
    sh(p.path(), &format!("sqlite3 '{}' .dump", db.display()))
}

fn newest(p: &Project) -> Listed {
    p.catalog()
        .into_iter()
        .max_by(|a, b| a.run_id.cmp(&b.run_id))
        .unwrap()
}

fn stored(l: &Listed) -> u64 {
    l.entry
        .pages
        .as_ref()
        .expect("incremental entry")
        .stored_bytes
}

fn packs_on_disk(p: &Project) -> usize {
    std::fs::read_dir(p.backups())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .count()
}

fn restore_id(p: &Project, id: &str, to: &Path) -> std::process::Output {
    p.run(&["restore", "app", "--id", id, "--to", to.to_str().unwrap()])
}

#[test]
fn one_percent_changed_stores_a_few_percent_and_no_change_stores_no_pack() {
    require_tool("sqlite3");
    let p = Project::new();
    p.demo_db("app.db", 4_000_000);
    p.write_config(CONFIG);
    p.run_ok(&["backup"]);
    let full = newest(&p);
    assert_eq!(full.entry.pages.as_ref().unwrap().chain_depth, 0);

    // 1% of the rows, spread over the table.
    sql(
        &p,
        "UPDATE tasks SET status = 'x' || id WHERE id % 100 = 7;",
    );
    p.run_ok(&["backup"]);
    let incr = newest(&p);
    let map = incr.entry.pages.as_ref().unwrap();
    assert_eq!(map.chain_depth, 1);
    assert!(
        stored(&incr) * 20 <= stored(&full),
        "incremental stored {} bytes, full {}",
        stored(&incr),
        stored(&full)
    );

    let packs = packs_on_disk(&p);
    p.run_ok(&["backup"]);
    let same = newest(&p);
    assert_eq!(
        packs_on_disk(&p),
        packs,
        "a run with no change stores no pack"
    );
    assert_eq!(same.entry.pages.as_ref().unwrap().chain_depth, 2);
    let digest = |l: &Listed| l.entry.pages.as_ref().unwrap().hashes_sha256.clone();
    assert!(digest(&same).is_some());
    assert_eq!(digest(&same), digest(&incr));
    assert!(
        stored(&same) < 200,
        "no-change run stored {}",
        stored(&same)
    );

    eprintln!(
        "stored bytes: full {}, 1% of rows {}, no change {}",
        stored(&full),
        stored(&incr),
        stored(&same)
    );
    let out = p.run(&["list", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows.iter().find(|r| r["id"] == incr.run_id).unwrap();
    assert_eq!(row["kind"], "incremental");
    assert_eq!(row["chain_depth"], 1);
    assert_eq!(row["stored_bytes"], stored(&incr));
}

#[test]
fn every_snapshot_of_a_chain_restores_exactly() {
    require_tool("sqlite3");
    let p = Project::new();
    p.demo_db("app.db", 2_000_000);
    p.write_config(CONFIG);
    let mut taken = Vec::new();
    let steps = [
        "UPDATE tasks SET priority = priority + 1 WHERE id % 50 = 3;",
        "INSERT INTO tasks(title, owner, status, priority, created_at) SELECT title, owner, status, priority, created_at FROM tasks;",
        "DELETE FROM thought_records WHERE id % 2 = 0;",
        "VACUUM;",
        "DELETE FROM tasks WHERE id > 100 AND id NOT IN (SELECT task_id FROM thought_records); VACUUM;",
        "PRAGMA journal_mode = DELETE; PRAGMA page_size = 1024; VACUUM; PRAGMA journal_mode = WAL;",
        "UPDATE tasks SET title = 'after page size change' WHERE id = 1;",
    ];
    for (i, step) in std::iter::once("").chain(steps).enumerate() {
        if !step.is_empty() {
            sql(&p, step);
        }
        p.run_ok(&["backup"]);
        let l = newest(&p);
        taken.push((l, dump(&p, &p.join("app.db"))));
        assert_eq!(taken.len(), i + 1);
    }
    let depths: Vec<u32> = taken
        .iter()
        .map(|(l, _)| l.entry.pages.as_ref().unwrap().chain_depth)
        .collect();
    assert!(depths.iter().any(|d| *d > 0), "{depths:?}");
    assert_eq!(
        depths[6], 0,
        "a page-size change starts a new chain: {depths:?}"
    );
    for (n, (l, want)) in taken.iter().enumerate() {
        let to = p.join(&format!("restored-{n}.db"));
        let out = restore_id(&p, &l.run_id, &to);
        assert!(out.status.success(), "{}", output_text(&out));
        assert_eq!(
            Sha256::hex_of(&std::fs::read(&to).unwrap()),
            l.entry.db_sha256
        );
        assert_eq!(&dump(&p, &to), want, "snapshot {n}");
    }
}

#[test]
fn a_missing_or_damaged_pack_is_named_and_restore_walks_back() {
    require_tool("sqlite3");
    let p = Project::new();
    p.demo_db("app.db", 2_000_000);
    p.write_config(CONFIG);
    p.run_ok(&["backup"]);
    sql(&p, "UPDATE tasks SET status = 'a' WHERE id % 40 = 1;");
    p.run_ok(&["backup"]);
    let good = newest(&p);
    sql(&p, "UPDATE tasks SET status = 'b' WHERE id % 40 = 2;");
    p.run_ok(&["backup"]);
    let bad = newest(&p);
    let map = bad.entry.pages.as_ref().unwrap();
    let own = map.packs.last().unwrap().key.clone();
    assert!(
        !good
            .entry
            .pages
            .as_ref()
            .unwrap()
            .packs
            .iter()
            .any(|x| x.key == own)
    );
    let pack = p.backups().join(&own);

    for damage in ["flip", "delete"] {
        let original = std::fs::read(&pack).unwrap();
        if damage == "flip" {
            let mut b = original.clone();
            let i = b.len() / 2;
            b[i] ^= 0x40;
            std::fs::write(&pack, b).unwrap();
        } else {
            std::fs::remove_file(&pack).unwrap();
        }
        let out = p.run(&["verify", "--catalog", "--deep"]);
        let text = output_text(&out);
        assert!(!out.status.success(), "{damage}: {text}");
        assert!(text.contains(&own), "{damage}: names the pack: {text}");

        let to = p.join("walked.db");
        let _ = std::fs::remove_file(&to);
        let out = p.run(&["restore", "app", "--to", to.to_str().unwrap()]);
        let text = output_text(&out);
        assert!(out.status.success(), "{damage}: {text}");
        assert_eq!(
            Sha256::hex_of(&std::fs::read(&to).unwrap()),
            good.entry.db_sha256,
            "{damage}: walked back to the snapshot that does not need it"
        );
        std::fs::write(&pack, original).unwrap();
    }
}

#[test]
fn incremental_with_encryption_is_refused_at_load() {
    let p = Project::new();
    p.demo_db("app.db", 200_000);
    p.write_config(&format!(
        "{CONFIG}\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n"
    ));
    let out = p.run(&["backup"]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("incremental snapshots cannot be encrypted"),
        "{}",
        output_text(&out)
    );
}
