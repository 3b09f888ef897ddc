//! Backups are never more readable than the database they copy: every file
//! and folder a backup creates (local and cold tiers), a `restore --to` a
//! new path, and the warnings of `check` and `status`, with the binary run
//! under `umask 022` (through `sh -c 'umask 022; exec …'`, so the test
//! process's own umask, shared by every thread, is never touched).
//! The scratch files seen while a backup, verify and restore run are
//! covered in crates/backup-local/tests/scratch_modes.rs.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use backup_testkit::testkit::{Project, binary, output_text};

/// `sqlite-backup --config <config> args…` under `umask 022`.
fn run022(p: &Project, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(binary())
        .arg("--config")
        .arg(p.config())
        .args(args)
        .current_dir(p.path())
        .env_remove("SQLITE_BACKUP_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run sqlite-backup")
}

fn ok022(p: &Project, args: &[&str]) -> String {
    let out = run022(p, args);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{args:?}:\n{text}");
    text
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Every file and folder below `root` (itself included), relative to
/// `base`, with its mode; `"d "` marks folders.
fn tree(base: &Path, root: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        if meta.is_dir() {
            out.insert(format!("d {rel}"), mode(&p));
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            out.insert(rel, mode(&p));
        }
    }
    out
}

fn project(source_mode: u32) -> Project {
    let p = Project::new();
    chmod(p.path(), 0o755);
    let db = p.demo_db("app.db", 300_000);
    chmod(&db, source_mode);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[local]\nroot = \"data/backups\"\ncold = \"offsite/sqlite\"\n",
    );
    p
}

#[test]
fn perms_backups_local_and_cold_are_no_more_readable_than_the_source() {
    let mut measured = Vec::new();
    for (source, file, dir) in [
        (0o600, 0o600, 0o700),
        (0o640, 0o640, 0o750),
        (0o644, 0o644, 0o755),
    ] {
        let p = project(source);
        ok022(&p, &["backup", "--tag", "phase1", "--tier", "cold"]);
        ok022(&p, &["backup"]);
        for top in ["data", "offsite"] {
            let found = tree(p.path(), &p.join(top));
            // Artifacts, sidecars, manifests and their sidecars, both tiers.
            assert!(
                found.keys().filter(|k| k.ends_with(".db.zst")).count() >= 1
                    && found.keys().any(|k| k.ends_with(".db.zst.sha256"))
                    && found.keys().any(|k| k.ends_with(".json"))
                    && found.keys().any(|k| k.ends_with(".json.sha256")),
                "{found:?}"
            );
            for (path, m) in &found {
                let want = if path.starts_with("d ") { dir } else { file };
                assert_eq!(
                    *m, want,
                    "source {source:04o}: {path} is {m:04o}, want {want:04o}"
                );
            }
            measured.push(format!(
                "source {source:04o} {top}: {}",
                found
                    .iter()
                    .map(|(k, m)| format!("{k} {m:04o}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // The tool's own state: owner only.
        for (path, m) in tree(p.path(), &p.join(".sqlite-backup-state")) {
            let want = if path.starts_with("d ") { 0o700 } else { 0o600 };
            assert_eq!(m, want, "{path} is {m:04o}");
        }
        // The manifest records the source's mode.
        let entry = &p.catalog()[0].entry;
        assert_eq!(entry.source_mode, Some(source), "{entry:?}");
    }
    println!("{}", measured.join("\n"));
}

#[test]
fn perms_restore_to_a_new_path_gets_the_source_mode_in_place_keeps_the_live_one() {
    let p = project(0o640);
    ok022(&p, &["backup"]);
    ok022(&p, &["restore", "app", "--to", "restored/new/app.db"]);
    let got = tree(p.path(), &p.join("restored"));
    println!("restore --to: {got:?}");
    assert_eq!(
        got,
        BTreeMap::from([
            ("d restored".to_string(), 0o750),
            ("d restored/new".to_string(), 0o750),
            ("restored/new/app.db".to_string(), 0o640),
        ])
    );
    // In place: the live file's mode stays, whatever the backup recorded.
    chmod(&p.join("app.db"), 0o600);
    ok022(&p, &["restore", "app", "--force"]);
    assert_eq!(mode(&p.join("app.db")), 0o600);
}

#[test]
fn perms_several_databases_share_the_most_private_mode() {
    let p = Project::new();
    chmod(p.path(), 0o755);
    chmod(&p.demo_db("a.db", 100_000), 0o644);
    chmod(&p.demo_db("b.db", 100_000), 0o640);
    p.write_config(
        "[[database]]\nlabel = \"a\"\npath = \"a.db\"\n\n[[database]]\nlabel = \"b\"\npath = \"b.db\"\n",
    );
    ok022(&p, &["backup"]);
    for (path, m) in tree(p.path(), &p.backups()) {
        let want = if path.starts_with("d ") { 0o750 } else { 0o640 };
        assert_eq!(m, want, "{path} is {m:04o}");
    }
}

#[test]
fn perms_check_and_status_warn_about_open_backups_and_local_mode_widens_on_purpose() {
    let p = project(0o600);
    ok022(&p, &["backup"]);
    let quiet = |args: &[&str]| {
        let text = ok022(&p, args);
        assert!(!text.contains("more readable"), "{args:?}:\n{text}");
    };
    quiet(&["status"]);
    quiet(&["check", "app.db"]);

    // Someone opens them up (or an older version wrote them 0644).
    let artifact = p.backups().join(&p.catalog()[0].entry.key);
    chmod(&artifact, 0o644);
    chmod(&p.backups(), 0o755);
    for args in [&["status"][..], &["check", "app.db"], &["status", "--json"]] {
        let out = run022(&p, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.contains("more readable"))
            .unwrap_or_else(|| panic!("{args:?}: no warning:\n{}", output_text(&out)));
        assert!(
            line.contains("WARN")
                && line.contains("2 item(s)")
                && line.contains("chmod -R u=rwX,g=,o= ")
                && line.contains("data/backups"),
            "{line}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&run022(&p, &["status", "--json"]).stdout).unwrap();
    assert_eq!(json["permission_warnings"].as_array().unwrap().len(), 1);
    // The hint's chmod fixes it.
    let root = p.backups().display().to_string();
    backup_testkit::testkit::sh(p.path(), &format!("chmod -R u=rwX,g=,o= '{root}'"));
    quiet(&["status"]);
    assert_eq!(mode(&artifact), 0o600);

    // `[local] mode` widens on purpose: new files get it, no warning.
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[local]\nroot = \"data/backups\"\nmode = \"0640\"\n",
    );
    ok022(&p, &["backup"]);
    let newest = &p.catalog()[0].entry;
    assert_eq!(mode(&p.backups().join(&newest.key)), 0o640);
    assert_eq!(mode(&p.backups().join(&newest.sidecar_key)), 0o640);
    quiet(&["status"]);
    // A bad mode is a config error with its line.
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[local]\nmode = \"0755\"\n",
    );
    let out = run022(&p, &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains(":6:"), "{}", output_text(&out));
}
