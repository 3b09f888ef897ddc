//! End-to-end: `[snapshot] incremental = true` stores only changed pages,
//! and every snapshot of a chain restores to exactly its image.

mod compaction;
mod daemon;
mod history;
mod large;
mod remote;
mod wal_hint;

use std::os::unix::fs::PermissionsExt;
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
    // Runs after a base store XOR deltas: a damaged delta must be named,
    // never applied as a different page.
    assert!(map.packs.last().unwrap().xor, "{map:?}");
    let pack = p.backups().join(&own);

    // A byte of the page list (the first zstd frame), of the deltas, and
    // the last one.
    for damage in ["flip 8", "flip middle", "flip last", "delete"] {
        let original = std::fs::read(&pack).unwrap();
        let mut b = original.clone();
        match damage {
            "delete" => std::fs::remove_file(&pack).unwrap(),
            _ => {
                let i = match damage {
                    "flip 8" => 8,
                    "flip middle" => b.len() / 2,
                    _ => b.len() - 1,
                };
                b[i] ^= 0x40;
                std::fs::write(&pack, b).unwrap();
            }
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

/// The runs after a base store XOR deltas against the local image of the
/// previous snapshot; a local image lost or edited makes the next run that
/// touches a mismatched page a new base (never a wrong delta), and the run
/// after it stores deltas again. Every snapshot restores exactly.
#[test]
fn the_local_image_is_checked_and_a_bad_one_costs_a_new_base() {
    require_tool("sqlite3");
    let p = Project::new();
    p.demo_db("app.db", 2_000_000);
    p.write_config(CONFIG);
    let image = p.join(".sqlite-backup-state/page-hashes/app.image");
    let mut taken: Vec<(Listed, String)> = Vec::new();
    let run = |taken: &mut Vec<(Listed, String)>, n: usize, table: &str| -> String {
        sql(
            &p,
            &format!("UPDATE {table} SET created_at = 'run {n}' WHERE id % 37 = {n};"),
        );
        let out = p.run_ok(&["backup"]);
        let l = newest(&p);
        taken.push((l.clone(), dump(&p, &p.join("app.db"))));
        out
    };
    let depth = |l: &Listed| l.entry.pages.as_ref().unwrap().chain_depth;
    run(&mut taken, 0, "tasks");
    run(&mut taken, 1, "tasks");
    let (second, _) = taken.last().unwrap().clone();
    assert_eq!(depth(&second), 1);
    let map = second.entry.pages.as_ref().unwrap();
    assert!(map.has_xor(), "{map:?}");
    let mode = std::fs::metadata(&image).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The image is the first snapshot's (applied when the second run
    // started); the second's pages wait beside it for the next run.
    assert_eq!(
        std::fs::metadata(&image).unwrap().len(),
        taken[0].0.entry.db_size
    );
    let staged = std::fs::read_to_string(image.with_extension("image.staged")).unwrap();
    assert!(
        staged.contains(map.hashes_sha256.as_deref().unwrap()),
        "{staged}"
    );

    // With the image gone, the staged pages have nothing to apply to and
    // are dropped: no page of the new, empty copy matches, so the next
    // run is a new base.
    std::fs::remove_file(&image).unwrap();
    let out = run(&mut taken, 2, "thought_records");
    assert!(out.contains("full base ("), "{out}");
    assert_eq!(depth(&taken[2].0), 0);
    run(&mut taken, 3, "tasks");
    assert_eq!(depth(&taken[3].0), 1);

    // One byte of every page of the image, as a stray write would leave it;
    // the next run changes pages the last one did not stage.
    let mut bytes = std::fs::read(&image).unwrap();
    for page in bytes.chunks_mut(4096) {
        page[100] ^= 1;
    }
    std::fs::write(&image, &bytes).unwrap();
    let out = run(&mut taken, 4, "thought_records");
    assert!(out.contains("is not the previous snapshot's"), "{out}");
    assert_eq!(depth(&taken[4].0), 0);
    run(&mut taken, 5, "thought_records");
    assert_eq!(depth(&taken[5].0), 1);

    for (n, (l, want)) in taken.iter().enumerate() {
        let to = p.join(&format!("restored-{n}.db"));
        let out = restore_id(&p, &l.run_id, &to);
        assert!(out.status.success(), "{}", output_text(&out));
        assert_eq!(&dump(&p, &to), want, "snapshot {n}");
    }
}
