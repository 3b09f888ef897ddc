//! The source is sacred and secrets stay secret:
//! - backing up (and `check`, `verify`) never modifies a source database:
//!   bytes and mtime unchanged when nothing else writes; a rollback-journal
//!   database never gets `-wal` / `-shm` / `-journal` files, not even
//!   for a moment (a WAL database that nothing has open gets an empty
//!   `-wal` and a `-shm`, as from any SQLite reader: see the test);
//! - the backup folder is never read as a source, however it is spelled;
//! - a secret in the config (`[alerts] webhook`, `[azure] access_key`,
//!   `sas_token`) never appears in the output or logs of any command, nor
//!   in any file the tool writes, including on errors.
//!
//! Still to add after the merges: the secrets sweep over `restore`, `prune`,
//! `status`, `daemon --once` (with a failing webhook), `catalog` and the
//! Azure sink's own errors (a wrong key against Azurite) once those commands
//! do real work; today they are stubs or refuse the [azure] section, and are
//! swept as such.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use backup_core::digest::Sha256;
use backup_testkit::faults::all_files;
use backup_testkit::testkit::{Project, binary, output_text};
use rusqlite::Connection;

#[derive(Debug, PartialEq)]
struct FileState {
    sha256: String,
    mtime: SystemTime,
    siblings: Vec<String>,
}

fn state(db: &Path) -> FileState {
    let dir = db.parent().unwrap();
    let stem = db.file_name().unwrap().to_string_lossy().into_owned();
    FileState {
        sha256: Sha256::hex_of(&std::fs::read(db).unwrap()),
        mtime: std::fs::metadata(db).unwrap().modified().unwrap(),
        siblings: std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&stem))
            .collect(),
    }
}

fn watch_for(paths: Vec<PathBuf>) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            for p in &paths {
                if p.exists() && !seen.contains(&p.display().to_string()) {
                    seen.push(p.display().to_string());
                }
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        seen
    });
    (stop, h)
}

#[test]
fn backup_check_and_verify_never_touch_the_source() {
    for mode in ["WAL", "DELETE"] {
        let p = Project::new();
        let db = p.demo_db("app.db", 2_000_000);
        Connection::open(&db)
            .unwrap()
            .pragma_update(None, "journal_mode", mode)
            .unwrap();
        p.write_config(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n",
        );
        // An mtime in the past, so that any write shows without waiting for
        // the clock to tick past the file system's granularity.
        std::fs::File::options()
            .write(true)
            .open(&db)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
            .unwrap();
        let before = state(&db);
        let companions: Vec<PathBuf> = ["-wal", "-shm", "-journal"]
            .iter()
            .map(|s| p.join(&format!("app.db{s}")))
            .collect();
        let (stop, watcher) = watch_for(companions);
        p.run_ok(&["backup"]);
        p.run_ok(&["check", db.to_str().unwrap()]);
        p.run_ok(&["verify", "--latest", "app"]);
        stop.store(true, Ordering::Relaxed);
        let appeared = watcher.join().unwrap();
        let mut after = state(&db);
        if mode == "WAL" {
            // SQLite's documented behaviour for any reader of a WAL database
            // (https://sqlite.org/wal.html#readonly): the wal-index (-shm)
            // and an empty -wal are created when absent, and a read-only
            // connection cannot remove them. The database file itself and
            // its content are untouched; the -wal holds nothing.
            if let Ok(m) = std::fs::metadata(p.join("app.db-wal")) {
                assert_eq!(m.len(), 0, "the backup wrote WAL frames");
            }
            after
                .siblings
                .retain(|n| n != "app.db-wal" && n != "app.db-shm");
        }
        assert_eq!(before, after, "{mode}: the source changed");
        if mode == "DELETE" {
            assert!(
                appeared.is_empty(),
                "rollback-journal source got companion files: {appeared:?}"
            );
        } else {
            eprintln!(
                "WAL source: companion files created by reading (empty -wal checked): {appeared:?}"
            );
        }
    }
}

#[test]
fn the_backup_folder_is_never_a_source_however_it_is_spelled() {
    let p = Project::new();
    p.demo_db("app.db", 200_000);
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n");
    p.run_ok(&["backup"]);
    let artifact = p.catalog().remove(0).entry.key;
    std::fs::create_dir_all(p.join("cold")).unwrap();
    std::os::unix::fs::symlink(p.backups(), p.join("alias")).unwrap();
    std::os::unix::fs::symlink(p.backups().join(&artifact), p.join("link.db")).unwrap();
    for path in [
        format!("data/backups/{artifact}"),
        "data/backups/.tmp/x.db".into(),
        "data/../data/backups/x.db".into(),
        "./data/./backups/x.db".into(),
        p.backups().join("x.db").display().to_string(),
        "alias/x.db".into(),
        "link.db".into(),
        "data/backups".into(),
        "cold/x.db".into(),
    ] {
        p.write_config(&format!(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[[database]]\nlabel = \"loop\"\npath = \"{path}\"\n\n[local]\ncold = \"cold\"\n"
        ));
        let out = p.run(&["backup"]);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{path}: {text}");
        // The folder itself is refused earlier, as a folder.
        let reason = if path == "data/backups" {
            "is a directory"
        } else {
            "inside the backup folder"
        };
        assert!(text.contains(reason), "{path}: {text}");
    }
}

const WEBHOOK: &str = "https://hooks.example/T000/B000/XOXBWEBHOOKSECRET7d1f";
const ACCESS_KEY: &str = "AZUREKEYSECRET0123456789abcdefghij==";
const SAS: &str = "sv=2026-01-01&sig=SASSIGNATURESECRET%3D";
const SECRETS: [&str; 3] = [WEBHOOK, ACCESS_KEY, SAS];

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        // The whole value, and its most distinctive part.
        let core = s.split(['/', '=', '&']).max_by_key(|p| p.len()).unwrap();
        assert!(
            !text.contains(s) && !text.contains(core),
            "{what} printed a secret:\n{text}"
        );
    }
}

fn sweep(p: &Project, label: &str) -> usize {
    let artifact = p.backups().join("x.db.zst").display().to_string();
    let anchor = p.join("anchor.txt").display().to_string();
    let db = p.join("app.db").display().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["backup"],
        vec!["backup", "--dry-run"],
        vec!["backup", "--label", "nope"],
        vec!["--log-format", "json", "backup"],
        vec!["list"],
        vec!["list", "--json"],
        vec!["verify", "--latest", "app"],
        vec!["verify", &artifact],
        vec!["verify", "--catalog"],
        vec!["check", &db],
        vec!["restore", "app", "--dry-run"],
        vec!["prune", "--dry-run"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["daemon", "--once"],
        vec!["schedule", "print", "--systemd"],
        vec!["schedule", "print", "--launchd"],
        vec!["catalog", "head"],
        vec!["catalog", "anchor", "--append", &anchor],
    ];
    for args in &commands {
        for rust_log in [None, Some("trace")] {
            let mut cmd = Command::new(binary());
            cmd.arg("--config")
                .arg(p.config())
                .args(args)
                .current_dir(p.path())
                .env_remove("RUST_LOG");
            if let Some(l) = rust_log {
                cmd.env("RUST_LOG", l);
            }
            let out = cmd.output().unwrap();
            assert_no_secret(
                &format!("{label}: sqlite-backup {args:?} (RUST_LOG={rust_log:?})"),
                &output_text(&out),
            );
        }
    }
    // Nor in any file it wrote (state, manifests, sidecars, anchors).
    for f in all_files(p.path()) {
        if f == "sqlite-backup.toml" {
            continue;
        }
        let bytes = std::fs::read(p.join(&f)).unwrap();
        assert_no_secret(
            &format!("{label}: file {f}"),
            &String::from_utf8_lossy(&bytes),
        );
    }
    commands.len() * 2
}

#[test]
fn secrets_in_the_config_never_appear_in_any_output() {
    let db = "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n";
    let alerts = format!("[alerts]\nwebhook = \"{WEBHOOK}\"\nafter_failures = 2\n");
    let azure = format!(
        "[azure]\ncontainer = \"c\"\naccess_key = \"{ACCESS_KEY}\"\nsas_token = \"{SAS}\"\n"
    );
    let configs = [
        ("alerts webhook", format!("{db}\n{alerts}")),
        ("azure keys", format!("{db}\n{azure}\n{alerts}")),
        // Broken configs whose errors are printed near the secrets.
        (
            "unknown key beside the secrets",
            format!("{db}\n{alerts}bogus = 1\n\n{azure}"),
        ),
        (
            "secret line unterminated",
            format!("{db}\n[azure]\ncontainer = \"c\"\naccess_key = \"{ACCESS_KEY}\n"),
        ),
        (
            "secret key duplicated",
            format!(
                "{db}\n[azure]\ncontainer = \"c\"\naccess_key = \"{ACCESS_KEY}\"\naccess_key = \"{ACCESS_KEY}\"\n"
            ),
        ),
        (
            "secret of the wrong type",
            format!("{db}\n[alerts]\nwebhook = [\"{WEBHOOK}\"]\n"),
        ),
        (
            "bad label beside the secrets",
            format!("[[database]]\nlabel = \"Bad Label\"\npath = \"app.db\"\n\n{alerts}\n{azure}"),
        ),
    ];
    let mut runs = 0;
    for (label, config) in configs {
        let p = Project::new();
        p.demo_db("app.db", 100_000);
        p.write_config(&config);
        runs += sweep(&p, label);
    }
    eprintln!("secrets: {runs} command runs swept for 3 secrets, plus every file written");
}
