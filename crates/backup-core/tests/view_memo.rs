//! A process that keeps its catalog views (the CLI, and so the daemon)
//! reads a sink's checkpoint once: every later run checks that the sink
//! still holds the tip it knows and follows the links appended since,
//! another host's included. Counted on a real sink wrapper; the views it
//! keeps must agree with a replay of every manifest, and a sink emptied
//! behind its back must not be built on.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backup_core::manifest::view::{self, CHECKPOINT_DIR};
use backup_core::manifest::{self};
use backup_core::sink::faults::{Hooked, Op};
use backup_core::sink::{MemorySink, Placement, Sink, SinkError, SinkWriter};
use backup_core::{Backups, Database};
use rusqlite::Connection;

const RUNS: usize = 120;

/// The same storage as seen from another process: another location, so
/// this process's memo of it is not shared.
#[derive(Clone, Debug)]
struct Elsewhere(MemorySink);

impl Sink for Elsewhere {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn location(&self) -> String {
        format!("{} (another process)", self.0.location())
    }
    fn placement(&self) -> Placement {
        self.0.placement()
    }
    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        self.0.create(key)
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        self.0.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        self.0.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError> {
        self.0.get(key)
    }
    fn size(&self, key: &str) -> Result<Option<u64>, SinkError> {
        self.0.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.0.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), SinkError> {
        self.0.delete(key)
    }
}

fn database(dir: &std::path::Path, name: &str, host: &str) -> (Database, Connection) {
    let path = dir.join(name);
    let app = Connection::open(&path).unwrap();
    app.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO t(v) SELECT printf('%.300c', 'a') FROM n;",
    )
    .unwrap();
    let mut d = Database::new("app", path).require_tables(["t"]).host(host);
    d.incremental = true;
    (d, app)
}

fn insert(app: &Connection, i: usize) {
    app.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")])
        .unwrap();
}

fn host(dir: &std::path::Path, name: &str, sink: impl Sink + 'static) -> Backups {
    Backups::builder()
        .sink(sink)
        .scratch_dir(dir.join("scratch"))
        .page_cache(dir.join(name))
        .build()
}

#[test]
fn a_process_that_keeps_views_reads_the_checkpoint_once() {
    view::memo::remember();
    let dir = tempfile::tempdir().unwrap();
    let store = MemorySink::new("local");
    let (read, written) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, w) = (read.clone(), written.clone());
    let (checkpoint_lists, pending_lists) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (cl, pl) = (checkpoint_lists.clone(), pending_lists.clone());
    // Reads of the chain a run makes: the tip's sidecar, the link after
    // it, the manifests' sizes.
    let chain_reads = Arc::new(AtomicUsize::new(0));
    let cr = chain_reads.clone();
    let spy = Hooked::new(store.clone()).with_hook(move |op, key, _| {
        let catalog = key.starts_with("manifests/chain/")
            || (key.starts_with("manifests/") && key.ends_with(".json.sha256"))
            || (op == Op::Size && key.starts_with("manifests/"));
        if catalog && matches!(op, Op::Get | Op::Size) {
            cr.fetch_add(1, Ordering::SeqCst);
        }
        if op == Op::List {
            match key.trim_end_matches('/') {
                CHECKPOINT_DIR => cl.fetch_add(1, Ordering::SeqCst),
                "manifests/pending" => pl.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }
        if key.starts_with(CHECKPOINT_DIR) && key.ends_with(".checkpoint") {
            match op {
                Op::Get => r.fetch_add(1, Ordering::SeqCst),
                Op::Put => w.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }
        Ok(())
    });
    let ours = host(dir.path(), "web-1", spy.clone());
    let theirs = host(dir.path(), "web-2", Elsewhere(store.clone()));
    let (our_db, our_app) = database(dir.path(), "ours.db", "web-1");
    let (their_db, their_app) = database(dir.path(), "theirs.db", "web-2");
    for i in 0..RUNS {
        insert(&our_app, i);
        let taken = ours.backup(&our_db).unwrap();
        let depth = taken.copies[0].1.pages.as_ref().unwrap().chain_depth;
        assert_eq!(depth as usize, i, "run {i} did not build on run {}", i - 1);
        if i % 3 == 0 {
            insert(&their_app, i);
            theirs.backup(&their_db).unwrap();
        }
    }
    let (read, written) = (read.load(Ordering::SeqCst), written.load(Ordering::SeqCst));
    eprintln!("checkpoints: {written} written, {read} read by this process");
    assert!(
        written >= RUNS / view::CHECKPOINT_EVERY as usize,
        "{written} written"
    );
    assert_eq!(read, 0, "a run read a checkpoint although it kept the view");
    // Leftovers of interrupted runs are looked for when the process starts
    // and then every few minutes, not every run: checkpoints are listed by
    // the first run's reads and when one is written, and the one listing a
    // run is of this run's own intent records.
    let (cl, pl) = (
        checkpoint_lists.load(Ordering::SeqCst),
        pending_lists.load(Ordering::SeqCst),
    );
    assert!(cl <= written + 3, "checkpoints listed {cl} times");
    // A run removes its own intent records by key.
    assert!(pl <= 1, "intent records listed {pl} times");
    // A run checks its sink's chain once (the tip's sidecar, the link after
    // it), not again when it appends, and follows each link another host
    // appended since (that link, its copy's sidecar, and whether that copy
    // is stored, as its writer may have died before storing it). Its own
    // tip's copy it knows is stored. Before: five a run, and more.
    let theirs_appended = RUNS.div_ceil(3);
    let reads = chain_reads.load(Ordering::SeqCst);
    eprintln!("chain reads: {reads} over {RUNS} runs");
    assert!(
        reads <= 2 * RUNS + 3 * theirs_appended,
        "{reads} chain reads over {RUNS} runs"
    );

    // What it kept is what every manifest says.
    let kept = view::view(&spy).unwrap();
    let (stored, bad) = manifest::read_all(&store).unwrap();
    assert!(bad.is_empty());
    let mut replay = view::State::default();
    for s in &stored {
        replay.apply(&s.manifest);
    }
    assert_eq!(kept.manifests as usize, stored.len());
    assert!(kept.state.matches_replay(&replay));
    assert_eq!(kept.state.live.len(), RUNS + RUNS.div_ceil(3));
    // Handed out again, it shares what it lists rather than copying it
    // (a day of released objects is a quarter of a million keys).
    let again = view::view(&spy).unwrap();
    assert!(Arc::ptr_eq(&kept.state.released, &again.state.released));
    assert!(
        kept.state
            .live
            .iter()
            .zip(&again.state.live)
            .all(|(a, b)| Arc::ptr_eq(a, b))
    );

    // Emptied behind this process's back (a new bucket under the same
    // name): the next run is a full base in a new catalog.
    for key in store.keys() {
        store.delete(&key).unwrap();
    }
    insert(&our_app, RUNS);
    let taken = ours.backup(&our_db).unwrap();
    assert_eq!(taken.copies[0].1.pages.as_ref().unwrap().chain_depth, 0);
    let (listed, problems) = ours.list();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(listed.len(), 1);
}
