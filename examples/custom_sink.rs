//! A store of your own: implement `Sink` for it, prove it with the exported
//! conformance suite, then back up to it like to any other.
//!
//! The toy store keeps every object as a row of one SQLite file (like
//! SQLite's own `sqlar` archives). A real one would stream uploads instead
//! of buffering them.
//!
//! `cargo run --example custom_sink` (the suite needs backup-core's
//! `testing` feature, which this package enables for its examples)

use std::io::{self, Cursor, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use backup_core::sink::{Placement, Sink, SinkError, SinkWriter, conformance, validate_key};
use backup_core::{Backups, Database};
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, Clone)]
struct ArchiveSink {
    conn: Arc<Mutex<Connection>>,
}

impl ArchiveSink {
    fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, data BLOB NOT NULL)",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn store(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        self.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT OR REPLACE INTO objects (key, data) VALUES (?1, ?2)",
                params![key, data],
            )
            .map(drop)
            .map_err(|e| remote("put", key, e))
    }
}

fn remote(op: &'static str, key: &str, e: rusqlite::Error) -> SinkError {
    SinkError::Remote {
        op,
        key: key.to_string(),
        message: e.to_string(),
    }
}

/// An upload: the object becomes visible only at `finish`.
struct Upload {
    sink: ArchiveSink,
    key: String,
    buf: Vec<u8>,
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SinkWriter for Upload {
    fn finish(self: Box<Self>) -> Result<u64, SinkError> {
        self.sink.store(&self.key, &self.buf)?;
        Ok(self.buf.len() as u64)
    }
    fn abort(self: Box<Self>) {}
}

impl Sink for ArchiveSink {
    fn name(&self) -> &str {
        "archive"
    }
    fn location(&self) -> String {
        let conn = self.conn.lock().unwrap();
        format!("sqlar:{}", conn.path().unwrap_or_default())
    }
    fn placement(&self) -> Placement {
        Placement::Remote
    }
    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        validate_key(key)?;
        Ok(Box::new(Upload {
            sink: self.clone(),
            key: key.to_string(),
            buf: Vec::new(),
        }))
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        validate_key(key)?;
        self.store(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        validate_key(key)?;
        // The primary key makes the insert the one atomic test-and-set.
        let inserted = self
            .conn
            .lock()
            .unwrap()
            .execute(
                "INSERT OR IGNORE INTO objects (key, data) VALUES (?1, ?2)",
                params![key, data],
            )
            .map_err(|e| remote("put", key, e))?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(SinkError::AlreadyExists {
                key: key.to_string(),
            })
        }
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError> {
        validate_key(key)?;
        let data: Option<Vec<u8>> = self
            .conn
            .lock()
            .unwrap()
            .query_row("SELECT data FROM objects WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| remote("get", key, e))?;
        match data {
            Some(d) => Ok(Box::new(Cursor::new(d))),
            None => Err(SinkError::NotFound {
                key: key.to_string(),
            }),
        }
    }
    fn size(&self, key: &str) -> Result<Option<u64>, SinkError> {
        validate_key(key)?;
        self.conn
            .lock()
            .unwrap()
            .query_row(
                "SELECT length(data) FROM objects WHERE key = ?1",
                [key],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.map(|n| n as u64))
            .map_err(|e| remote("size", key, e))
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let folder = format!("{}/", prefix.trim_end_matches('/'));
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare("SELECT key FROM objects ORDER BY key")
            .map_err(|e| remote("list", prefix, e))?;
        let keys = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| remote("list", prefix, e))?;
        Ok(keys
            .into_iter()
            .filter(|k| prefix.is_empty() || k.starts_with(&folder))
            .collect())
    }
    fn delete(&self, key: &str) -> Result<(), SinkError> {
        validate_key(key)?;
        self.conn
            .lock()
            .unwrap()
            .execute("DELETE FROM objects WHERE key = ?1", [key])
            .map(drop)
            .map_err(|e| remote("delete", key, e))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;

    // 1. The conformance suite panics on the first broken promise.
    conformance::run(&ArchiveSink::open(&tmp.path().join("suite.sqlar"))?);
    println!("ArchiveSink passes the Sink conformance suite");

    // 2. Then it is a sink like any other.
    let db_path = tmp.path().join("app.db");
    Connection::open(&db_path)?.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO notes (body) VALUES ('kept in an archive');",
    )?;
    let backups = Backups::new(ArchiveSink::open(&tmp.path().join("backups.sqlar"))?);
    let app = Database::new("app", &db_path).require_tables(["notes"]);
    let taken = backups.backup(&app)?;
    let verified = backups.verify_latest(&app)?;
    println!(
        "backed up and verified {} in the archive ({} bytes)",
        taken.copies[0].1.key, verified.report.size
    );
    assert_eq!(verified.listed.sink, "archive");
    Ok(())
}
