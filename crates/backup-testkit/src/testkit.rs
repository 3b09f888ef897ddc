//! Test helpers: a temp project with a config, the real binary, tools.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use backup_core::catalog::append;
use backup_core::manifest::{self, Listed, Manifest};
use backup_core::sink::{Placement, Sink, get_bytes};
use backup_local::LocalSink;

/// Path of the `sqlite-backup` binary the running test uses.
///
/// `SQLITE_BACKUP_BIN` overrides. Otherwise it is the binary beside the
/// test executable (`<target>/<profile>/deps/<test>` →
/// `<target>/<profile>/sqlite-backup`). `cargo test --workspace` builds
/// backup-cli's binary for its own integration test (`tests/binary.rs`), and
/// compiles every target before it runs any test, so the workspace-level
/// tests in the root `tests/` always find the current one there.
/// `CARGO_BIN_EXE_sqlite-backup` names the same file, but only to code
/// compiled inside backup-cli's tests; `tests/binary.rs` asserts that both
/// agree.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SQLITE_BACKUP_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("<target>/<profile>")
            .to_path_buf();
        let bin = profile_dir.join(format!("sqlite-backup{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.exists(),
            "{} is missing: run the tests with `cargo test --workspace` (which builds it), build it with `cargo build -p backup-cli`, or set SQLITE_BACKUP_BIN",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Fail (never skip) when an external tool is missing.
pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is required by this test: install it (Debian: apt-get install -y sqlite3 zstd coreutils gzip) or run `bash scripts/test`"
    );
}

/// A temporary project: a folder with databases, a config and backups.
pub struct Project {
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

impl Project {
    /// An empty project folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<project>/<name>`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The config file path.
    pub fn config(&self) -> PathBuf {
        self.join("sqlite-backup.toml")
    }

    /// Write the config file.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).expect("write config");
    }

    /// The local backup root (`[local] root` default).
    pub fn backups(&self) -> PathBuf {
        self.join("data/backups")
    }

    /// A demo database of about `bytes` at `<project>/<name>`.
    pub fn demo_db(&self, name: &str, bytes: u64) -> PathBuf {
        let p = self.join(name);
        crate::demo::create(&p, bytes, 7).expect("demo db");
        p
    }

    /// The binary with `--config <project config>` and `args`, ready to run
    /// (add environment variables to it first if need be).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(self.path())
            .env_remove("SQLITE_BACKUP_CONFIG")
            .env_remove("RUST_LOG");
        c
    }

    /// Run the binary with `--config <project config>` and `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run sqlite-backup")
    }

    /// Run and assert the exit code; returns stdout + stderr as text.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = output_text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "sqlite-backup {args:?} failed:\n{text}"
        );
        text
    }

    /// `restore LABEL --id RUN --to <scratch>` of a listed snapshot must
    /// succeed and give exactly its image ([`assert_image`]); the restored
    /// file is removed again.
    pub fn assert_restores_exactly(&self, l: &Listed) {
        self.assert_restores_exactly_with(l, None);
    }

    /// [`Self::assert_restores_exactly`], with `--identity identity` for a
    /// sealed snapshot, checked against its opened facts.
    pub fn assert_restores_exactly_with(&self, l: &Listed, identity: Option<&Path>) {
        let to = self.join(&format!("restored-{}.db", l.run_id));
        let mut args = vec![
            "restore",
            &l.entry.label,
            "--id",
            &l.run_id,
            "--to",
            to.to_str().expect("UTF-8 test path"),
        ];
        if let Some(key) = identity {
            args.extend(["--identity", key.to_str().expect("UTF-8 test path")]);
        }
        let out = self.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        let bytes = std::fs::read(&to).expect("restored file");
        let entry = match identity {
            Some(key) => {
                let keys = backup_core::encryption::Identities::read_file(key).expect("identity");
                l.entry.opened(&keys).expect("the sealed facts open")
            }
            None => l.entry.clone(),
        };
        assert_image(&entry, &bytes, &l.run_id);
        std::fs::remove_file(&to).expect("remove the restored file");
    }

    /// The local sink's catalog, newest first.
    pub fn catalog(&self) -> Vec<Listed> {
        let sink = LocalSink::new("local", self.backups(), Placement::Local);
        committed(&sink)
    }
}

/// `image` must be exactly the image `entry` records: its whole-image
/// SHA-256 when it has one, and its page-hash digest when it has one (an
/// incremental run that read only the pages the WAL named records only that).
pub fn assert_image(entry: &backup_core::manifest::Entry, image: &[u8], what: &str) {
    let found = backup_core::incremental::Reassembled::of(image, entry.page_size);
    assert_eq!(found.size, entry.db_size, "{what}: size");
    assert_eq!(found.mismatch(entry), None, "{what}: another image");
    assert!(
        !entry.db_sha256.is_empty() || entry.pages.is_some(),
        "{what}: the entry records no image digest"
    );
}

/// `app.db` in `dir`: WAL mode, no automatic checkpoints, a table `t` of
/// 2,000 rows over a few hundred pages (one changed row is a small change),
/// as the incremental-mode engine tests need; and the application's open
/// connection, which keeps the WAL between runs. The database backs up
/// incrementally.
pub fn incremental_app(dir: &Path) -> (backup_core::Database, rusqlite::Connection) {
    let path = dir.join("app.db");
    let app = rusqlite::Connection::open(&path).expect("open app.db");
    app.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO t(v) SELECT printf('%.300c', 'a') FROM n;",
    )
    .expect("create app.db");
    let mut d = backup_core::Database::new("app", path).require_tables(["t"]);
    d.incremental = true;
    (d, app)
}

/// What `sink`'s manifests list, read one by one without checkpoints (an
/// oracle for the tool's own reading): the stored manifests, and those a
/// claim committed whose writer was killed before storing them. Every
/// manifest must read.
pub fn committed(sink: &dyn Sink) -> Vec<Listed> {
    let (mut stored, bad) = manifest::read_all(sink).expect("read manifests");
    assert!(
        bad.is_empty(),
        "{}: unreadable manifests: {bad:?}",
        sink.name()
    );
    for (link, key) in append::unfinished(sink).expect("read chain claims") {
        let bytes = get_bytes(sink, &link).expect("read a claim");
        stored.push(manifest::Stored {
            sha256: backup_core::digest::Sha256::hex_of(&bytes),
            manifest: Manifest::from_bytes(&link, &bytes).expect("a claim holds a manifest"),
            key,
        });
    }
    stored.sort_by(|a, b| a.manifest.run_id.cmp(&b.manifest.run_id));
    manifest::listed(sink, &stored)
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run a shell command line in `dir`, assert success, return stdout.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed:\n{}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `tasks.id` in a database file, ascending.
pub fn task_ids(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn
        .prepare("SELECT id FROM tasks ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("ids")
}

/// Assert that `snapshot` holds a writer's commits up to exactly one point:
/// ids 1..=max with no gap, every commit acknowledged before `snapshot_at`,
/// and at least one commit after it (else the writer was idle and the test
/// proves nothing). Returns max.
pub fn assert_snapshot_point(
    snapshot: &Path,
    snapshot_at: jiff::Timestamp,
    stats: &crate::demo::WriterStats,
) -> i64 {
    let ids = task_ids(snapshot);
    let max = *ids.last().expect("tasks in the snapshot");
    assert_eq!(ids, (1..=max).collect::<Vec<_>>(), "gap in the snapshot");
    let before: Vec<i64> = stats
        .commits
        .iter()
        .filter(|(_, t)| *t < snapshot_at)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        !before.is_empty(),
        "the writer committed nothing before the snapshot: the test proves nothing"
    );
    assert!(
        before.iter().all(|id| *id <= max),
        "a commit acknowledged before the snapshot began is missing"
    );
    assert!(
        stats.commits.iter().any(|(id, _)| *id > max),
        "no commit after the snapshot point: the writer was not running through it"
    );
    max
}

/// Per-table content checksum (SHA-256 over every row in rowid order).
pub fn table_checksums(db: &Path) -> std::collections::BTreeMap<String, String> {
    use backup_core::digest::Sha256;
    let conn = rusqlite::Connection::open(db).expect("open");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let mut h = Sha256::new();
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
                .unwrap();
            let n = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            while let Some(r) = rows.next().unwrap() {
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i).unwrap();
                    h.update(format!("{v:?}\u{1f}").as_bytes());
                }
                h.update(b"\n");
            }
            (t, h.finish_hex())
        })
        .collect()
}
