//! Helpers for the restore end-to-end tests: a config in a temp folder,
//! running the real binary, reading and rewriting the local catalog,
//! per-table content digests, and a process that holds a database open.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use backup_core::compress::{Compression, Format};
use backup_core::digest::{Sha256, Sidecar};
use backup_core::manifest::{Entry, Manifest};
use rusqlite::{Connection, types::Value};

/// The Colibri tables every test database has (and requires).
pub const TABLES: [&str; 3] = ["tasks", "thought_records", "merkle_nodes"];

/// A temp folder with a live database `app.db`, a local backup root and a
/// config file naming them.
pub struct Fixture {
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The live database.
    pub db: PathBuf,
    /// `[local] root`.
    pub root: PathBuf,
    /// The `sqlite-backup` binary.
    pub bin: PathBuf,
}

impl Fixture {
    /// A demo database of about `bytes` and a config whose database `app`
    /// requires the three Colibri tables; `extra` is appended to the
    /// `[[database]]` table (e.g. `post_restore = "…"`).
    /// `bin` is the `sqlite-backup` binary (`assert_cmd::cargo::cargo_bin`).
    pub fn new(bin: PathBuf, bytes: u64, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("live").join("app.db");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        crate::demo::create(&db, bytes, 7).expect("demo db");
        let root = dir.path().join("backups");
        let config = dir.path().join("sqlite-backup.toml");
        std::fs::write(
            &config,
            format!(
                "[[database]]\nlabel = \"app\"\npath = {:?}\nrequired_tables = [\"tasks\", \"thought_records\", \"merkle_nodes\"]\n{extra}\n\n[local]\nroot = {:?}\n",
                db.display().to_string(),
                root.display().to_string()
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            db,
            root,
            bin,
        }
    }

    /// `sqlite-backup --config <config>` (the real binary).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config").arg(&self.config);
        c
    }

    /// Run `backup --tag TAG`; panics unless it succeeds. Returns the new entry.
    pub fn backup(&self, tag: &str) -> Entry {
        let before: Vec<PathBuf> = self.manifests().into_iter().map(|(p, _)| p).collect();
        let out = self
            .cmd()
            .args(["backup", "--tag", tag])
            .output()
            .expect("run backup");
        assert!(
            out.status.success(),
            "backup failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Run ids of the same second do not sort by time: find the new one.
        let (_, m) = self
            .manifests()
            .into_iter()
            .find(|(p, _)| !before.contains(p))
            .expect("a new manifest");
        m.entries.into_iter().next().expect("an entry")
    }

    /// The local manifests, oldest first, with their paths.
    pub fn manifests(&self) -> Vec<(PathBuf, Manifest)> {
        let mut v: Vec<(PathBuf, Manifest)> = std::fs::read_dir(self.root.join("manifests"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .map(|p| {
                        let m = Manifest::from_bytes("m", &std::fs::read(&p).unwrap()).unwrap();
                        (p, m)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.1.run_id.cmp(&b.1.run_id));
        v
    }

    /// The run id of the manifest that lists `e`.
    pub fn run_of(&self, e: &Entry) -> String {
        self.manifests()
            .into_iter()
            .find(|(_, m)| m.entries[0].key == e.key)
            .expect("manifest of the entry")
            .1
            .run_id
    }

    /// The file of an artifact key.
    pub fn artifact(&self, e: &Entry) -> PathBuf {
        self.root.join(&e.key)
    }

    /// The database bytes inside an artifact (decompressed).
    pub fn db_bytes(&self, e: &Entry) -> Vec<u8> {
        let f = std::fs::File::open(self.artifact(e)).unwrap();
        let mut d = Compression::new(e.compression)
            .decoder(Box::new(f))
            .unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out).unwrap();
        out
    }

    /// Replace the artifact of the entry with run id `run` by a valid
    /// compressed stream of `db`, and rewrite its sidecar and manifest
    /// digests to match: only the database checks can catch what is wrong.
    pub fn replace_artifact(&self, run: &str, db: &[u8]) {
        let (path, mut m) = self
            .manifests()
            .into_iter()
            .find(|(_, m)| m.run_id == run)
            .expect("manifest of run");
        let e = &mut m.entries[0];
        assert_eq!(e.compression, Format::Zstd);
        let mut compressed = Vec::new();
        {
            let mut enc = Compression::new(Format::Zstd)
                .encoder(Box::new(&mut compressed))
                .unwrap();
            enc.write_all(db).unwrap();
            enc.finish().unwrap();
        }
        std::fs::write(self.artifact(e), &compressed).unwrap();
        let sha = Sha256::hex_of(&compressed);
        let name = e.key.rsplit('/').next().unwrap().to_string();
        std::fs::write(
            self.root.join(&e.sidecar_key),
            Sidecar::new(sha.clone(), name).render(),
        )
        .unwrap();
        e.sha256 = sha;
        e.size = compressed.len() as u64;
        e.db_sha256 = Sha256::hex_of(db);
        e.db_size = db.len() as u64;
        let bytes = m.to_bytes();
        // Keep the manifest's own sidecar consistent too: only the
        // database checks may catch what is wrong.
        let key = m.key();
        let sidecar = self.root.join(backup_core::manifest::sidecar_key(&key));
        std::fs::write(
            sidecar,
            Sidecar::new(Sha256::hex_of(&bytes), backup_core::naming::file_name(&key)).render(),
        )
        .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Files in the live folder other than the database itself.
    pub fn live_folder(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.db.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// `.broken-` files beside the live database.
    pub fn broken_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.db.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".broken-"))
            .collect();
        v.sort();
        v
    }
}

/// Add `n` tasks (so consecutive snapshots differ).
pub fn add_tasks(db: &Path, n: usize) {
    let c = Connection::open(db).unwrap();
    c.execute_batch("BEGIN").unwrap();
    for _ in 0..n {
        c.execute(
            "INSERT INTO tasks (title, owner, status, priority, created_at) VALUES ('added', 'test', 'pending', 1, 'now')",
            [],
        )
        .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
}

/// Open a database file read-only without side files (never changes it).
pub fn open_ro(path: &Path) -> Connection {
    backup_core::sqlite::open_private(path).expect("open")
}

/// `PRAGMA integrity_check` result lines; a check that stops on an error
/// (`database disk image is malformed`) gives that error as its one line.
pub fn integrity(path: &Path) -> Vec<String> {
    let c = open_ro(path);
    let mut s = c.prepare("PRAGMA integrity_check").unwrap();
    s.query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<_, _>>())
        .unwrap_or_else(|e| vec![e.to_string()])
}

/// SHA-256 over every row of `table` in rowid order (all columns, typed),
/// restricted by an optional SQL condition.
pub fn table_digest(conn: &Connection, table: &str, condition: Option<&str>) -> (u64, String) {
    let sql = format!(
        "SELECT * FROM \"{table}\"{} ORDER BY rowid",
        condition.map(|c| format!(" WHERE {c}")).unwrap_or_default()
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    let n = stmt.column_count();
    let mut rows = stmt.query([]).unwrap();
    let mut buf = Vec::new();
    let mut count = 0;
    while let Some(r) = rows.next().unwrap() {
        count += 1;
        for i in 0..n {
            let v: Value = r.get(i).unwrap();
            buf.extend_from_slice(format!("{v:?}").as_bytes());
            buf.push(0);
        }
        buf.push(b'\n');
    }
    (count, Sha256::hex_of(&buf))
}

/// Flip one byte of a file.
pub fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

/// A database image whose `integrity_check` fails but which still opens:
/// the cell-pointer array of an index's root page is overwritten.
pub fn corrupt_index_page(db: &[u8]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.db");
    std::fs::write(&p, db).unwrap();
    let (page_size, root): (i64, i64) = {
        let c = open_ro(&p);
        c.query_row(
            "SELECT (SELECT page_size FROM pragma_page_size), rootpage FROM sqlite_schema WHERE name = 'tasks_owner'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let mut out = db.to_vec();
    let start = ((root - 1) * page_size) as usize;
    for b in &mut out[start + 12..start + 64] {
        *b = 0xEE;
    }
    std::fs::write(&p, &out).unwrap();
    let lines = integrity(&p);
    assert_ne!(
        lines,
        ["ok"],
        "the corruption must be visible to integrity_check"
    );
    out
}

/// A copy of a database image without the table `merkle_nodes`.
pub fn drop_table(db: &[u8], table: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.db");
    std::fs::write(&p, db).unwrap();
    let c = Connection::open(&p).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode=DELETE; DROP TABLE \"{table}\";"
    ))
    .unwrap();
    drop(c);
    std::fs::read(&p).unwrap()
}

/// The real `sqlite3` shell with a database open (it has read from it, so
/// in WAL mode it also holds its `-shm` lock). Dropping it ends the shell.
pub struct Sqlite3Shell {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Sqlite3Shell {
    /// Start `sqlite3 DB` and wait until it has answered a query.
    pub fn open(db: &Path) -> Self {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the sqlite3 shell is installed");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "SELECT 'ready', count(*) FROM tasks;").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready|"), "{line:?}");
        Self {
            child,
            stdin: Some(stdin),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sqlite3Shell {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
