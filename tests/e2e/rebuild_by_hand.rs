//! `contrib/rebuild-image.py`, the documented way to rebuild an image from
//! a chain with only `age`, `zstd` and Python, gives byte for byte what
//! `restore` writes: for sealed and unsealed chains, packs of whole pages
//! with runs stored packed (`zstd+varint+base64:`), XOR deltas, and a
//! long pack list stored packed (`zstd+postcard+base64:`).

use std::path::{Path, PathBuf};

use backup_testkit::testkit::{Project, output_text, require_tool, sh};
use rusqlite::Connection;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/rebuild-image.py")
}

/// Rebuild the newest snapshot with the script and restore it with the
/// binary; the two files must be the same bytes.
fn rebuilt_equals_restored(p: &Project, identity: Option<&str>) {
    let newest = p
        .catalog()
        .into_iter()
        .max_by(|a, b| a.run_id.cmp(&b.run_id))
        .unwrap();
    let manifest = p
        .backups()
        .join("manifests")
        .join(format!("{}.json", newest.run_id));
    let rebuilt = p.join(&format!("rebuilt-{}.db", newest.run_id));
    let out = std::process::Command::new("python3")
        .arg(script())
        .arg(&manifest)
        .arg(&newest.entry.key)
        .arg(p.backups())
        .arg(&rebuilt)
        .args(identity)
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let restored = p.join(&format!("restored-{}.db", newest.run_id));
    let mut args = vec![
        "restore",
        "app",
        "--id",
        &newest.run_id,
        "--to",
        restored.to_str().unwrap(),
    ];
    if let Some(key) = identity {
        args.extend(["--identity", key]);
    }
    p.run_ok(&args);
    assert!(
        std::fs::read(&rebuilt).unwrap() == std::fs::read(&restored).unwrap(),
        "the script's image of {} differs from restore's",
        newest.run_id
    );
}

fn chain_rebuilds_by_hand(sealed: bool) {
    for tool in ["python3", "age", "age-keygen", "zstd"] {
        require_tool(tool);
    }
    let p = Project::new();
    let db = p.join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO t (v) SELECT hex(randomblob(60)) FROM n;",
    )
    .unwrap();
    let mut config =
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nincremental = true\n".to_string();
    let identity = sealed.then(|| {
        sh(p.path(), "age-keygen -o key.txt 2>/dev/null");
        let public = sh(p.path(), "age-keygen -y key.txt");
        config += &format!("\n[encryption]\nrecipients = [\"{}\"]\n", public.trim());
        "key.txt"
    });
    p.write_config(&config);
    p.run_ok(&["backup"]);
    // Without the local image (nor the one the base staged) the next run
    // stores whole pages, and rows
    // changed on every 7th page or so leave far more than 64 runs: stored
    // packed.
    let cache = p.join(".sqlite-backup-state/page-hashes");
    for f in std::fs::read_dir(&cache).unwrap() {
        let f = f.unwrap();
        if f.file_name().to_string_lossy().starts_with("app.image") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    conn.execute(
        "UPDATE t SET v = hex(randomblob(60)) WHERE id % 120 = 0",
        [],
    )
    .unwrap();
    p.run_ok(&["backup"]);
    let newest = &p.catalog()[0].entry;
    let runs = serde_json::to_value(&newest.pages.as_ref().unwrap().runs).unwrap();
    assert!(
        runs.as_str()
            .is_some_and(|r| r.starts_with("zstd+varint+base64:")),
        "expected packed runs, got {runs}"
    );
    rebuilt_equals_restored(&p, identity);
    // A third of the pages changed: the run reads every page, so the local
    // image is whole again and the runs after it store XOR deltas.
    conn.execute("UPDATE t SET v = hex(randomblob(60)) WHERE id <= 7000", [])
        .unwrap();
    p.run_ok(&["backup"]);
    for n in 0..3 {
        conn.execute(
            "UPDATE t SET v = hex(randomblob(60)) WHERE id % 97 = ?1",
            [n],
        )
        .unwrap();
        p.run_ok(&["backup"]);
    }
    let newest = &p.catalog()[0].entry;
    assert!(newest.pages.as_ref().unwrap().has_xor(), "{newest:?}");
    assert_eq!(newest.is_encrypted(), sealed);
    rebuilt_equals_restored(&p, identity);
    // Small XOR packs of lower tiers than those (a few rows, then one row
    // a run) until the map lists more packs than JSON groups hold: its
    // groups are stored packed (`zstd+postcard+base64:`, version 7).
    let packed = |p: &Project| p.catalog()[0].entry.pages.as_ref().unwrap().packs_packed();
    for n in 0..40 {
        let rows = if n < 3 {
            "id % 1999 = ?1"
        } else {
            "id = 1 + ?1 * 61"
        };
        conn.execute(
            &format!("UPDATE t SET v = hex(randomblob(60)) WHERE {rows}"),
            [n],
        )
        .unwrap();
        p.run_ok(&["backup"]);
        if packed(&p) {
            break;
        }
    }
    assert!(packed(&p), "40 runs and the pack list is still short");
    let newest = &p.catalog()[0];
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            p.backups()
                .join(format!("manifests/{}.json", newest.run_id)),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["version"], 7);
    let groups = &manifest["entries"][0]["pages"]["pack_groups"];
    assert!(
        groups
            .as_str()
            .is_some_and(|g| g.starts_with("zstd+postcard+base64:")),
        "{groups}"
    );
    rebuilt_equals_restored(&p, identity);
}

#[test]
fn a_sealed_chain_rebuilds_with_age_zstd_and_the_script() {
    chain_rebuilds_by_hand(true);
}

#[test]
fn an_unsealed_chain_rebuilds_with_zstd_and_the_script() {
    chain_rebuilds_by_hand(false);
}
