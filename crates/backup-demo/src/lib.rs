//! A realistic demo database and a busy writer, for the `demo` command, the
//! examples, the tests and the benchmark.
//!
//! The schema is the Colibri case from the runbooks (`tasks`,
//! `thought_records`, `merkle_nodes`) with indexes and a foreign key; rows
//! are text-like (compressible about 3× like real application data) with
//! about 10% incompressible blobs. Generation is seeded, so a size and seed
//! always give the same bytes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng as _, RngCore, SeedableRng};
use rusqlite::{Connection, params};

/// Tables every demo database has.
pub const TABLES: [&str; 3] = ["tasks", "thought_records", "merkle_nodes"];

const WORDS: [&str; 32] = [
    "round",
    "seal",
    "task",
    "owner",
    "status",
    "pending",
    "done",
    "merkle",
    "root",
    "audit",
    "chain",
    "thought",
    "record",
    "decision",
    "phase",
    "budget",
    "token",
    "cost",
    "index",
    "vector",
    "session",
    "agent",
    "review",
    "deploy",
    "backup",
    "restore",
    "verify",
    "schema",
    "migration",
    "priority",
    "history",
    "summary",
];

/// A seeded generator: the same seed gives the same demo database.
#[derive(Debug, Clone)]
pub struct Rng(StdRng);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n.max(1))
    }
    fn sentence(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| *WORDS.choose(&mut self.0).expect("words"))
            .collect::<Vec<_>>()
            .join(" ")
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.0.fill_bytes(&mut v);
        v
    }
}

/// Create the schema in an open connection, in WAL mode.
pub fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA foreign_keys = ON;
         CREATE TABLE IF NOT EXISTS tasks (
             id INTEGER PRIMARY KEY, title TEXT NOT NULL, owner TEXT NOT NULL,
             status TEXT NOT NULL, priority INTEGER NOT NULL, created_at TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status, priority);
         CREATE INDEX IF NOT EXISTS tasks_owner ON tasks(owner);
         CREATE TABLE IF NOT EXISTS thought_records (
             id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id),
             body TEXT NOT NULL, attachment BLOB, created_at TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS thought_task ON thought_records(task_id);
         CREATE TABLE IF NOT EXISTS merkle_nodes (
             id INTEGER PRIMARY KEY, level INTEGER NOT NULL, hash TEXT NOT NULL UNIQUE,
             parent INTEGER REFERENCES merkle_nodes(id));",
    )
}

/// Create (or grow) a demo database at `path` to about `target_bytes`.
pub fn create(path: &Path, target_bytes: u64, seed: u64) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    create_schema(&conn)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let mut rng = Rng::new(seed);
    let mut task_id: i64 =
        conn.query_row("SELECT coalesce(max(id), 0) FROM tasks", [], |r| r.get(0))?;
    let mut node_id: i64 =
        conn.query_row("SELECT coalesce(max(id), 0) FROM merkle_nodes", [], |r| {
            r.get(0)
        })?;
    let size = |c: &Connection| -> rusqlite::Result<u64> {
        c.query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get::<_, i64>(0).map(|v| v as u64),
        )
    };
    while size(&conn)? < target_bytes {
        let tx = conn.transaction()?;
        for _ in 0..2000 {
            task_id += 1;
            let title = rng.sentence(6);
            let owner = format!("agent-{}", rng.below(40));
            let status = ["pending", "running", "done", "blocked"][rng.below(4) as usize];
            tx.execute(
                "INSERT INTO tasks VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    task_id,
                    title,
                    owner,
                    status,
                    rng.below(5) as i64,
                    "2026-11-23T00:00:00Z"
                ],
            )?;
            // ~10% of the bytes are incompressible attachments.
            let attachment = (rng.below(10) == 0).then(|| rng.bytes(1200));
            tx.execute(
                "INSERT INTO thought_records (task_id, body, attachment, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![task_id, rng.sentence(40), attachment, "2026-11-23T00:00:00Z"],
            )?;
            node_id += 1;
            let parent = (node_id > 1).then(|| 1 + rng.below(node_id as u64 - 1) as i64);
            tx.execute(
                "INSERT INTO merkle_nodes VALUES (?1, ?2, ?3, ?4)",
                params![
                    node_id,
                    rng.below(20) as i64,
                    hex::encode(rng.bytes(32)),
                    parent
                ],
            )?;
        }
        tx.commit()?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// What a [`Writer`] did.
#[derive(Debug, Clone, Default)]
pub struct WriterStats {
    /// Ids of the rows it committed, with the time each commit returned.
    pub commits: Vec<(i64, Timestamp)>,
    /// Commit latency of each transaction.
    pub latencies: Vec<Duration>,
    /// Errors (busy timeouts etc.).
    pub errors: Vec<String>,
}

impl WriterStats {
    /// Latency percentile (0.0–1.0).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.latencies.clone();
        v.sort();
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

/// An application writer on its own connection, committing one small
/// transaction at a time into `tasks` with increasing ids.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<WriterStats>>,
    committed: Arc<(Mutex<u64>, Condvar)>,
}

impl Writer {
    /// Start committing about `per_second` transactions per second (0 = as
    /// fast as possible) to the database at `path`, each inserting a row.
    pub fn start(path: &Path, per_second: u32) -> rusqlite::Result<Self> {
        Self::spawn(path, per_second, false)
    }

    /// The same, each transaction also updating one random existing row:
    /// an application's writes land all over the file, not only at its end.
    pub fn start_updating(path: &Path, per_second: u32) -> rusqlite::Result<Self> {
        Self::spawn(path, per_second, true)
    }

    fn spawn(path: &Path, per_second: u32, update: bool) -> rusqlite::Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let committed = Arc::new((Mutex::new(0u64), Condvar::new()));
        let counter = committed.clone();
        let handle = std::thread::spawn(move || {
            let mut stats = WriterStats::default();
            let interval = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
            let mut rng = Rng::new(std::process::id() as u64);
            let mut next = Instant::now();
            let mut last: i64 = conn
                .query_row("SELECT coalesce(max(id), 0) FROM tasks", [], |r| r.get(0))
                .unwrap_or(0);
            while !flag.load(Ordering::Relaxed) {
                let id = last + 1;
                let t0 = Instant::now();
                let target = 1 + rng.below(last.max(1) as u64) as i64;
                let title = rng.sentence(5);
                let r = conn.transaction().and_then(|tx| {
                    tx.execute(
                        "INSERT INTO tasks VALUES (?1, ?2, 'writer', 'pending', 1, ?3)",
                        params![id, title, Timestamp::now().to_string()],
                    )?;
                    if update {
                        tx.execute(
                            "UPDATE tasks SET status = 'done', title = ?1 WHERE id = ?2",
                            params![title, target],
                        )?;
                    }
                    tx.commit()
                });
                let elapsed = t0.elapsed();
                match r {
                    Ok(_) => {
                        stats.commits.push((id, Timestamp::now()));
                        stats.latencies.push(elapsed);
                        last = id;
                        *counter.0.lock().unwrap() += 1;
                        counter.1.notify_all();
                    }
                    Err(e) => stats.errors.push(e.to_string()),
                }
                if let Some(iv) = interval {
                    next += iv;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    } else {
                        next = Instant::now();
                    }
                }
            }
            stats
        });
        Ok(Self {
            stop,
            handle: Some(handle),
            committed,
        })
    }

    /// Block until `n` more transactions have committed: a test waits on
    /// the writer's progress, not on the clock.
    pub fn wait_for_commits(&self, n: u64) {
        let (count, changed) = &*self.committed;
        let mut c = count.lock().unwrap();
        let target = *c + n;
        while *c < target {
            let (next, timeout) = changed.wait_timeout(c, Duration::from_secs(60)).unwrap();
            c = next;
            assert!(
                *c >= target || !timeout.timed_out(),
                "the writer stopped committing"
            );
        }
    }

    /// Stop and return what it did.
    pub fn stop(mut self) -> WriterStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("writer thread")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
