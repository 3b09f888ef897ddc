//! End-to-end: `sqlite-backup backup` on real WAL databases with a real
//! concurrent writer, artifacts checked by the real coreutils / zstd / gzip /
//! sqlite3 binaries, and `verify` / `check` rejecting damaged inputs.

use std::path::Path;

use backup_testkit::demo::Writer;
use backup_testkit::testkit::{
    Project, assert_snapshot_point, output_text, require_tool, sh, task_ids,
};

fn config(db: &str, format: &str) -> String {
    format!(
        "[[database]]\nlabel = \"app\"\npath = \"{db}\"\nrequired_tables = [\"tasks\", \"thought_records\", \"merkle_nodes\"]\nchecks = [\"SELECT count(*) > 0 FROM tasks\"]\n\n[compression]\nformat = \"{format}\"\n"
    )
}

#[test]
fn wal_backup_under_a_concurrent_writer_holds_every_prior_commit() {
    require_tool("zstd");
    require_tool("sqlite3");
    let p = Project::new();
    let db = p.demo_db("app.db", 24_000_000);
    p.write_config(&config("app.db", "zstd"));

    let writer = Writer::start(&db, 500).unwrap();
    writer.wait_for_commits(100);
    let out = p.run_ok(&["backup"]);
    writer.wait_for_commits(100);
    let stats = writer.stop();
    assert!(stats.errors.is_empty(), "writer errors: {:?}", stats.errors);
    assert!(out.contains("snapshot done label=app"), "{out}");

    let listed = p.catalog();
    assert_eq!(listed.len(), 1);
    let entry = &listed[0].entry;
    let artifact = p.backups().join(&entry.key);
    sh(
        p.path(),
        &format!("zstd -q -d '{}' -o restored.db", artifact.display()),
    );
    let restored = p.join("restored.db");

    // No gap, nothing half-written, every acknowledged commit present.
    let max = assert_snapshot_point(&restored, entry.snapshot_at, &stats);
    assert_eq!(
        sh(p.path(), "sqlite3 restored.db 'PRAGMA integrity_check;'").trim(),
        "ok"
    );
    // The source was not changed by the backup beyond the writer's own rows.
    assert!(task_ids(&db).len() as i64 >= max);
}

#[test]
fn artifacts_interoperate_with_the_standard_tools() {
    for tool in ["sha256sum", "zstd", "gunzip", "sqlite3"] {
        require_tool(tool);
    }
    for (format, decompress) in [
        ("zstd", "zstd -q -d -c"),
        ("gzip", "gunzip -c"),
        ("none", "cat"),
    ] {
        let p = Project::new();
        p.demo_db("app.db", 3_000_000);
        p.write_config(&config("app.db", format));
        p.run_ok(&["backup", "--tag", "r75"]);
        let entry = p.catalog().remove(0).entry;
        let ext = match format {
            "zstd" => ".db.zst",
            "gzip" => ".db.gz",
            _ => ".db",
        };
        assert!(
            entry.key.starts_with("app-r75-") && entry.key.ends_with(ext),
            "{}",
            entry.key
        );
        let dir = p.backups();
        let check = sh(&dir, &format!("sha256sum -c '{}.sha256'", entry.key));
        assert!(check.trim().ends_with(": OK"), "{check}");
        let plain = p.join("plain.db");
        sh(
            &dir,
            &format!("{decompress} '{}' > '{}'", entry.key, plain.display()),
        );
        assert_eq!(
            sh(p.path(), "sha256sum plain.db")
                .split_whitespace()
                .next()
                .unwrap(),
            entry.db_sha256,
            "{format}: decompressed bytes differ from the manifest's database digest"
        );
        assert_eq!(
            sh(p.path(), "sqlite3 plain.db 'PRAGMA integrity_check;'").trim(),
            "ok"
        );
        assert_eq!(
            sh(p.path(), "sqlite3 plain.db 'SELECT count(*) FROM tasks;'").trim(),
            entry.row_counts["tasks"].to_string()
        );
    }
}

fn damaged_copy(p: &Project, name: &str, damage: impl FnOnce(&Path, &Path)) -> String {
    let entry = p.catalog().remove(0).entry;
    let cases = p.join("cases").join(name);
    std::fs::create_dir_all(&cases).unwrap();
    let artifact = cases.join(&entry.key);
    let sidecar = cases.join(format!("{}.sha256", entry.key));
    std::fs::copy(p.backups().join(&entry.key), &artifact).unwrap();
    std::fs::copy(p.backups().join(&entry.sidecar_key), &sidecar).unwrap();
    damage(&artifact, &sidecar);
    artifact.display().to_string()
}

#[test]
fn verify_rejects_flipped_truncated_and_wrong_sidecar() {
    let p = Project::new();
    p.demo_db("app.db", 2_000_000);
    p.write_config(&config("app.db", "zstd"));
    p.run_ok(&["backup"]);
    let good = damaged_copy(&p, "good", |_, _| {});
    let out = p.run_ok(&["verify", &good]);
    assert!(out.contains("OK: every check passed"), "{out}");

    let flipped = damaged_copy(&p, "flipped", |a, _| {
        let mut b = std::fs::read(a).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x01;
        std::fs::write(a, b).unwrap();
    });
    let truncated = damaged_copy(&p, "truncated", |a, _| {
        let b = std::fs::read(a).unwrap();
        std::fs::write(a, &b[..b.len() - 100]).unwrap();
    });
    let wrong_sidecar = damaged_copy(&p, "sidecar", |_, s| {
        let t = std::fs::read_to_string(s).unwrap();
        let c = if t.starts_with('0') { "1" } else { "0" };
        std::fs::write(s, format!("{c}{}", &t[1..])).unwrap();
    });
    let missing_sidecar = damaged_copy(&p, "nosidecar", |_, s| std::fs::remove_file(s).unwrap());
    for (case, path, expect) in [
        (
            "flipped byte",
            &flipped,
            "SHA-256 does not match the sidecar",
        ),
        (
            "truncated",
            &truncated,
            "SHA-256 does not match the sidecar",
        ),
        (
            "wrong sidecar",
            &wrong_sidecar,
            "SHA-256 does not match the sidecar",
        ),
        ("missing sidecar", &missing_sidecar, "sidecar:"),
    ] {
        let out = p.run(&["verify", path]);
        let text = output_text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: verify accepted it:\n{text}"
        );
        assert!(text.contains(expect), "{case}: unclear message:\n{text}");
        assert!(text.contains("CORRUPT"), "{case}:\n{text}");
    }

    // The same damage in place is caught by `verify --latest` through the manifest.
    let entry = p.catalog().remove(0).entry;
    let artifact = p.backups().join(&entry.key);
    let mut b = std::fs::read(&artifact).unwrap();
    b[100] ^= 0xff;
    std::fs::write(&artifact, b).unwrap();
    let out = p.run(&["verify", "--latest", "app"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("does not match the manifest"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn missing_source_is_a_warning_and_a_skip() {
    let p = Project::new();
    p.demo_db("present.db", 500_000);
    p.write_config(
        "[[database]]\nlabel = \"present\"\npath = \"present.db\"\n\n[[database]]\nlabel = \"gone\"\npath = \"gone.db\"\n",
    );
    let out = p.run(&["backup"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("WARN") && text.contains("gone"), "{text}");
    assert!(text.contains("skipped"), "{text}");
    assert!(text.contains("objects written 4/4"), "{text}");
    let labels: Vec<String> = p.catalog().into_iter().map(|l| l.entry.label).collect();
    assert_eq!(labels, ["present"]);
}

#[test]
fn a_corrupt_source_fails_its_database_only_and_stores_nothing() {
    let p = Project::new();
    p.demo_db("good.db", 500_000);
    std::fs::write(p.join("bad.db"), vec![b'x'; 64 * 1024]).unwrap();
    p.write_config("[[database]]\nlabel = \"good\"\npath = \"good.db\"\n\n[[database]]\nlabel = \"bad\"\npath = \"bad.db\"\n");
    let out = p.run(&["backup"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED") && text.contains("bad"), "{text}");
    let labels: Vec<String> = p.catalog().into_iter().map(|l| l.entry.label).collect();
    assert_eq!(labels, ["good"]);
    let files: Vec<String> = std::fs::read_dir(p.backups())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bad"))
        .collect();
    assert!(files.is_empty(), "failed database left files: {files:?}");
}

#[test]
fn dry_run_writes_nothing_and_prints_planned_paths() {
    let p = Project::new();
    p.demo_db("app.db", 500_000);
    p.write_config(&config("app.db", "gzip"));
    let out = p.run_ok(&["backup", "--dry-run"]);
    assert!(out.contains("app-auto-") && out.contains(".db.gz"), "{out}");
    assert!(out.contains(".db.gz.sha256"), "{out}");
    assert!(!p.backups().exists(), "dry run created the backup folder");
}

#[test]
fn check_finds_corruption_in_a_live_database() {
    let p = Project::new();
    let db = p.demo_db("app.db", 2_000_000);
    let out = p.run_ok(&["check", db.to_str().unwrap()]);
    assert!(out.contains("OK: integrity_check is `ok`"), "{out}");
    // Overwrite the middle of an index page region with garbage.
    let mut b = std::fs::read(&db).unwrap();
    let page = 4096;
    let mid = (b.len() / page / 2) * page;
    for x in &mut b[mid + 100..mid + 2000] {
        *x = 0x5a;
    }
    std::fs::write(&db, b).unwrap();
    let out = p.run(&["check", db.to_str().unwrap()]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("CORRUPT"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let p = Project::new();
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n");
    let out = p.run(&["backup", "--label", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("known: app"));
    p.write_config("[[database]]\nlabel = \"App Store\"\npath = \"app.db\"\n");
    let out = p.run(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        output_text(&out).contains("sqlite-backup.toml:2:"),
        "{}",
        output_text(&out)
    );
    let out = p.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_second_run_with_the_same_name_never_replaces_the_first() {
    let p = Project::new();
    p.demo_db("app.db", 300_000);
    // A template with only the date: two runs the same day share a name.
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[local]\ntemplate = \"{label}-{yyyymmdd}{ext}\"\n");
    let out = p.run(&["list"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an overwriting local template must be refused"
    );
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n");
    p.run_ok(&["backup"]);
    let first = p.catalog().remove(0).entry;
    let bytes = std::fs::read(p.backups().join(&first.key)).unwrap();
    // Force the same name: the same second is likely but not certain, so
    // retry until a collision happens (bounded).
    let mut collided = false;
    for _ in 0..40 {
        p.run_ok(&["backup"]);
        let keys: Vec<String> = p.catalog().into_iter().map(|l| l.entry.key).collect();
        let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            keys.len(),
            "two catalog entries share an artifact: {keys:?}"
        );
        if keys.iter().any(|k| k.len() > first.key.len()) {
            collided = true;
            break;
        }
    }
    assert!(
        collided,
        "no two runs fell in the same second: the test proved nothing"
    );
    assert_eq!(
        std::fs::read(p.backups().join(&first.key)).unwrap(),
        bytes,
        "the first backup changed"
    );
    // Every listed backup still verifies.
    for l in p.catalog() {
        p.run_ok(&["verify", p.backups().join(&l.entry.key).to_str().unwrap()]);
    }
}

/// A foreign-key violation is the application's data, copied faithfully: the
/// default post-backup check (`quick_check`) does not fail the backup for it,
/// while `verify` reports it and `integrity_check` level fails the backup.
#[test]
fn foreign_key_violations_fail_verify_and_the_full_post_backup_check() {
    let p = Project::new();
    let db = p.demo_db("app.db", 500_000);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO thought_records (task_id, body, created_at) VALUES (-5, 'orphan', 'now');",
    )
    .unwrap();
    drop(conn);
    p.write_config(&config("app.db", "zstd"));
    p.run_ok(&["backup"]);
    let out = p.run(&["verify", "--latest", "app"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("foreign_key_check found 1 violation"),
        "{text}"
    );

    p.write_config(&format!(
        "{}\n[verify]\nlevel = \"integrity_check\"\n",
        config("app.db", "zstd")
    ));
    let out = p.run(&["backup"]);
    let text = output_text(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("foreign_key_check found 1 violation"),
        "{text}"
    );
}

/// A run killed after writing its artifact but before its manifest leaves a
/// complete-looking, unlisted artifact. Its intent record lets a later run
/// remove it once the run is a day old; files no record names are never
/// touched, nor is a record of a run that may still be going.
#[test]
fn objects_of_a_killed_run_are_removed_a_day_later_and_nothing_else() {
    use backup_core::intent::{self, Intent};
    let p = Project::new();
    p.demo_db("app.db", 300_000);
    p.write_config(&config("app.db", "zstd"));
    p.run_ok(&["backup"]);
    let sink =
        backup_local::LocalSink::new("local", p.backups(), backup_core::sink::Placement::Local);
    let plant = |run_id: &str, key: &str| {
        let keys = vec![key.to_string(), format!("{key}.sha256")];
        for k in &keys {
            std::fs::write(p.backups().join(k), b"complete-looking").unwrap();
        }
        let record = Intent {
            run_id: run_id.into(),
            keys,
        };
        intent::record(&sink, "app", &record).unwrap();
    };
    plant("20200101T000000Z-0001", "app-auto-20200101-000000.db.zst");
    let recent = manifest_run_id_now();
    plant(&recent, "app-auto-recent.db.zst");
    std::fs::write(p.backups().join("notes.db.zst"), b"the operator's own file").unwrap();

    let out = p.run_ok(&["backup"]);
    assert!(
        out.contains("removed 2 object(s) of interrupted runs"),
        "{out}"
    );
    let names: Vec<String> = std::fs::read_dir(p.backups())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("app-auto-20200101")),
        "{names:?}"
    );
    assert!(
        names.contains(&"app-auto-recent.db.zst".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"notes.db.zst".to_string()), "{names:?}");
    // The two real backups are still listed and intact.
    assert_eq!(p.catalog().len(), 2);
    let pending: Vec<String> = std::fs::read_dir(p.backups().join("manifests/pending"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pending"))
        .collect();
    assert_eq!(pending, [format!("{recent}-app.pending")]);
}

fn manifest_run_id_now() -> String {
    backup_core::manifest::new_run_id(jiff::Timestamp::now())
}

#[test]
fn a_hot_journal_is_named_never_called_corrupt() {
    use std::io::{BufRead, Write};
    require_tool("sqlite3");
    let p = Project::new();
    let db = p.demo_db("app.db", 1_000_000);
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
    p.write_config(&config("app.db", "zstd"));
    // A writer in the middle of a big transaction, its tiny cache spilling
    // changed pages into the database file, killed before it commits.
    let mut writer = std::process::Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    writeln!(
        stdin,
        "PRAGMA cache_size = 5; BEGIN; UPDATE tasks SET title = hex(randomblob(40)); SELECT 'ready';"
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(writer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    writer.kill().unwrap(); // SIGKILL: no rollback, no cleanup
    writer.wait().unwrap();
    let journal = p.join("app.db-journal");
    assert!(
        std::fs::metadata(&journal).unwrap().len() > 0,
        "a hot journal"
    );

    let out = p.run(&["check", db.to_str().unwrap()]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("is a hot journal"), "{text}");
    assert!(text.contains("do not restore"), "{text}");
    assert!(
        !text.contains("CORRUPT") && !text.contains("integrity check"),
        "{text}"
    );

    let out = p.run(&["backup"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("is a hot journal"), "{text}");
    assert!(!text.contains("integrity check is not"), "{text}");
    assert!(p.catalog().is_empty());
    // Untouched by us: the journal is still there for the application.
    assert!(journal.exists());

    // One read-write open (the application's) rolls it back; all is well.
    rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let out = p.run_ok(&["check", db.to_str().unwrap()]);
    assert!(out.contains("OK: integrity_check is `ok`"), "{out}");
    p.run_ok(&["backup"]);
}

#[test]
fn a_wal_database_on_a_read_only_mount_without_shm_is_named() {
    // A read-only bind mount needs a private mount namespace (root, or
    // unprivileged user namespaces); where that is refused, say so and stop.
    let probe = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("unshare -m is not permitted here; the read-only mount case is not run");
        return;
    }
    let p = Project::new();
    let rw = p.join("rw");
    std::fs::create_dir(&rw).unwrap();
    let db = rw.join("app.db");
    backup_testkit::demo::create(&db, 200_000, 1).unwrap();
    assert!(!p.join("rw/app.db-shm").exists());
    std::fs::create_dir(p.join("ro")).unwrap();
    p.write_config(&config("ro/app.db", "zstd"));
    let script = format!(
        "mount --bind rw ro && mount -o remount,ro,bind ro && \
         {bin} check ro/app.db; echo \"check exit $?\"; \
         {bin} --config sqlite-backup.toml backup; echo \"backup exit $?\"",
        bin = backup_testkit::testkit::binary().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .current_dir(p.path())
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(text.contains("check exit 1"), "{text}");
    assert!(text.contains("backup exit 1"), "{text}");
    assert_eq!(
        text.matches("WAL database without its").count(),
        3,
        "check, backup's table and log: {text}"
    );
    assert!(
        !text.contains("CORRUPT") && !text.contains("integrity check"),
        "{text}"
    );
}

#[test]
fn a_folder_as_database_path_is_a_config_error() {
    let p = Project::new();
    p.write_config("[[database]]\nlabel = \"app\"\npath = \".\"\n");
    let out = p.run(&["backup"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("is a directory"), "{text}");
    assert!(text.contains("sqlite-backup.toml:1:"), "{text}");
}

#[test]
fn the_manifest_records_the_absolute_source_path() {
    let p = Project::new();
    std::fs::create_dir_all(p.join("cfg")).unwrap();
    std::fs::create_dir_all(p.join("db")).unwrap();
    backup_testkit::demo::create(&p.join("db/app.db"), 200_000, 1).unwrap();
    std::fs::write(
        p.join("cfg/sqlite-backup.toml"),
        "[[database]]\nlabel = \"app\"\npath = \"../db/app.db\"\n\n[local]\nroot = \"../data/backups\"\n",
    )
    .unwrap();
    // A relative --config, from the project folder.
    let out = std::process::Command::new(backup_testkit::testkit::binary())
        .args(["--config", "cfg/sqlite-backup.toml", "backup"])
        .current_dir(p.path())
        .env_remove("SQLITE_BACKUP_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let listed = p.catalog();
    let want = std::fs::canonicalize(p.path()).unwrap().join("db/app.db");
    assert_eq!(listed[0].entry.source, want.display().to_string());
}
