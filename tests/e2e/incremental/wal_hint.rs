//! Runs that read only the pages the WAL names: an application that keeps
//! its connection open (so its WAL survives between runs) gets snapshots
//! that read a few pages, restore exactly, and verify by their page-hash
//! digest; a restart of the WAL, or a damaged hint, falls back to reading
//! every page.

use rusqlite::Connection;

use backup_core::digest::{Sha256, Sidecar};
use backup_core::manifest::{self, Listed};
use backup_core::sink::Placement;
use backup_local::LocalSink;
use backup_testkit::testkit::{Project, assert_image, output_text, require_tool};

use super::{CONFIG, dump, newest};

/// `backup`, returning the "pages hashed" log line.
fn backup(p: &Project) -> String {
    let out = p.run_ok(&["backup"]);
    out.lines()
        .find(|l| l.contains("pages hashed"))
        .unwrap_or_else(|| panic!("no pages hashed line: {out}"))
        .to_string()
}

/// Edit a stored manifest and reseal its sidecar.
fn edit_manifest(p: &Project, key: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let path = p.backups().join(key);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut v);
    let mut bytes = serde_json::to_vec_pretty(&v).unwrap();
    bytes.push(b'\n');
    std::fs::write(&path, &bytes).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let sidecar = Sidecar::new(Sha256::hex_of(&bytes), name).render();
    std::fs::write(format!("{}.sha256", path.display()), sidecar).unwrap();
}

fn restored(p: &Project, l: &Listed, name: &str) -> std::path::PathBuf {
    let to = p.join(name);
    let out = p.run(&[
        "restore",
        "app",
        "--id",
        &l.run_id,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_image(&l.entry, &std::fs::read(&to).unwrap(), name);
    to
}

#[test]
fn an_open_application_connection_lets_runs_read_only_what_changed() {
    require_tool("sqlite3");
    let p = Project::new();
    let db = p.demo_db("app.db", 2_000_000);
    p.write_config(CONFIG);
    // The application: one connection, open for the whole test.
    let app = Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    app.execute("UPDATE tasks SET title = 'first' WHERE id = 1", [])
        .unwrap();
    let first = backup(&p);
    assert!(first.contains("read=all"), "{first}");
    assert!(
        !newest(&p).entry.db_sha256.is_empty(),
        "a full read records the image SHA-256"
    );
    assert_eq!(newest(&p).entry.verified_with.to_string(), "quick_check");

    for round in 0..3 {
        app.execute(
            "UPDATE tasks SET title = ?1 WHERE id = ?2",
            rusqlite::params![format!("round {round}"), 10 + round * 500],
        )
        .unwrap();
        let line = backup(&p);
        assert!(line.contains("named by the WAL"), "round {round}: {line}");
        let l = newest(&p);
        assert!(
            l.entry.db_sha256.is_empty(),
            "no whole-image digest without a full read"
        );
        assert_eq!(l.entry.verified_with.to_string(), "schema");
        assert!(l.entry.pages.as_ref().unwrap().hashes_sha256.is_some());
        let to = restored(&p, &l, &format!("round-{round}.db"));
        assert_eq!(dump(&p, &to), dump(&p, &db), "round {round}");
    }
    // Every manifest with a page map is version 5 (its packs grouped by
    // index), which also covers XOR deltas and version 2's missing
    // whole-image digest.
    let versions: Vec<u32> =
        manifest::read_all(&LocalSink::new("local", p.backups(), Placement::Local))
            .unwrap()
            .0
            .iter()
            .map(|s| s.manifest.version)
            .collect();
    assert_eq!(versions, [5, 5, 5, 5]);
    let out = p.run(&["verify", "--catalog", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    // A checkpoint that restarts the WAL: the next run cannot know what
    // changed and reads every page. The first run's full check (this hour,
    // this file) still vouches for the database, so it is not checked page
    // by page again: no image SHA-256, no row counts, the schema checks.
    app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    app.execute("UPDATE tasks SET title = 'after restart' WHERE id = 3", [])
        .unwrap();
    let out = p.run_ok(&["backup"]);
    assert!(
        out.contains("reading every page (the WAL was restarted"),
        "{out}"
    );
    assert!(out.contains("read=all"), "{out}");
    let l = newest(&p);
    assert!(l.entry.db_sha256.is_empty());
    assert!(l.entry.row_counts.is_empty());
    assert_eq!(l.entry.verified_with.to_string(), "schema");
    let to = restored(&p, &l, "after-restart.db");
    assert_eq!(dump(&p, &to), dump(&p, &db));

    // A damaged hint file is not used.
    app.execute("UPDATE tasks SET title = 'damaged' WHERE id = 4", [])
        .unwrap();
    let hint = p
        .path()
        .join(".sqlite-backup-state/page-hashes/app.wal-hint.pagehashes");
    let mut bytes = std::fs::read(&hint).unwrap();
    bytes[7] ^= 1;
    std::fs::write(&hint, bytes).unwrap();
    let line = backup(&p);
    assert!(line.contains("read=all"), "{line}");
    let to = restored(&p, &newest(&p), "after-damage.db");
    assert_eq!(dump(&p, &to), dump(&p, &db));

    // Another file moved over the database: nothing vouches for it, so the
    // run reads and checks it whole again.
    drop(app);
    let copy = p.join("copy.db");
    Connection::open(&db)
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let other = Connection::open(&copy).unwrap();
    other
        .execute_batch(
            "PRAGMA journal_mode = WAL; UPDATE tasks SET title = 'moved in' WHERE id = 5;",
        )
        .unwrap();
    drop(other);
    std::fs::rename(&copy, &db).unwrap();
    let out = p.run_ok(&["backup"]);
    assert!(
        out.contains("reading and checking every page (the database file was replaced)"),
        "{out}"
    );
    let l = newest(&p);
    assert!(!l.entry.db_sha256.is_empty());
    assert!(l.entry.row_counts["tasks"] > 0);
    assert_eq!(l.entry.verified_with.to_string(), "quick_check");
    let to = restored(&p, &l, "moved-in.db");
    assert_eq!(dump(&p, &to), dump(&p, &db));
}

#[test]
fn verify_names_a_page_digest_that_does_not_match_the_image() {
    require_tool("sqlite3");
    let p = Project::new();
    let db = p.demo_db("app.db", 1_000_000);
    p.write_config(CONFIG);
    let app = Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA wal_autocheckpoint = 0;").unwrap();
    // A WAL with no frame yet has no position to start from.
    app.execute("UPDATE tasks SET title = 'w' WHERE id = 2", [])
        .unwrap();
    p.run_ok(&["backup"]);
    app.execute("UPDATE tasks SET title = 'x' WHERE id = 1", [])
        .unwrap();
    assert!(backup(&p).contains("named by the WAL"));
    let l = newest(&p);
    let key = format!("{}/{}.json", manifest::MANIFEST_DIR, l.run_id);
    // Change the recorded digest and reseal the manifest's sidecar, as
    // someone covering their tracks would: the reassembled image disagrees.
    edit_manifest(&p, &key, |v| {
        v["entries"][0]["pages"]["hashes_sha256"] = "0".repeat(64).into();
    });
    let out = p.run(&["verify", "--latest", "app"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("page-hash digest"), "{text}");
}

#[test]
fn schema_is_recorded_never_configured() {
    let p = Project::new();
    p.write_config(&format!("{CONFIG}\n[verify]\nlevel = \"schema\"\n"));
    let out = p.run(&["list"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("quick_check") && text.contains("integrity_check"),
        "{text}"
    );
}
