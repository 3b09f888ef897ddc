//! A backup run and a catalog read cost the same whatever the catalog's
//! length: readers start from the newest checkpoint and follow the chain
//! links after it, and nothing lists the whole `manifests/` folder (issue:
//! continuous protection at constant cost). Counted on a real sink wrapper,
//! over a thousand runs, with another host's runs interleaved in the same
//! sink; the checkpoints then match a replay of every manifest.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backup_core::catalog;
use backup_core::manifest::view;
use backup_core::manifest::{self, MANIFEST_DIR};
use backup_core::sink::MemorySink;
use backup_core::sink::faults::{Hooked, Op};
use backup_core::{Backups, Database};
use rusqlite::Connection;

const RUNS: usize = 1_000;

/// A database and its application's connection, kept open as a service
/// keeps its own (so runs read only the pages the WAL names).
fn database(dir: &std::path::Path, name: &str, host: &str) -> (Database, Connection) {
    let path = dir.join(name);
    let app = Connection::open(&path).unwrap();
    app.execute_batch(
        // Enough pages that one inserted row is a small change (past half
        // the pages changed, a run starts a new base), and rows that do not
        // compress to nothing (once the packs a chain needs outweigh its
        // base by half, a run starts a new base too).
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO t(v) SELECT hex(randomblob(150)) FROM n;",
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

#[derive(Default)]
struct Counts {
    gets: AtomicUsize,
    whole_listings: AtomicUsize,
}

impl Counts {
    fn now(&self) -> (usize, usize) {
        (
            self.gets.load(Ordering::SeqCst),
            self.whole_listings.load(Ordering::SeqCst),
        )
    }
    fn since(&self, before: (usize, usize)) -> (usize, usize) {
        let now = self.now();
        (now.0 - before.0, now.1 - before.1)
    }
}

#[test]
fn runs_and_catalog_reads_cost_as_much_after_a_thousand_runs_as_after_forty() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemorySink::new("local");
    let counts = Arc::new(Counts::default());
    let seen = counts.clone();
    let spy = Hooked::new(store.clone()).with_hook(move |op, key, _| {
        if op == Op::Get && key.starts_with(MANIFEST_DIR) {
            seen.gets.fetch_add(1, Ordering::SeqCst);
        }
        if op == Op::List && key.trim_end_matches('/') == MANIFEST_DIR {
            seen.whole_listings.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    let host = |name: &str| {
        Backups::builder()
            .sink(spy.clone())
            .scratch_dir(dir.path().join("scratch"))
            .page_cache(dir.path().join(name))
            .build()
    };
    let backups = host("web-1");
    // Another host backs up its own `app` into the same sink.
    let other = host("web-2");
    let (ours, our_app) = database(dir.path(), "ours.db", "web-1");
    let (theirs, their_app) = database(dir.path(), "theirs.db", "web-2");
    let (mut runs, mut lists) = (Vec::with_capacity(RUNS), Vec::new());
    // Whole cycles of checkpoints: a reader follows up to CHECKPOINT_EVERY
    // links (a GET of the link and of its manifest's sidecar each).
    let cycle = 3 * view::CHECKPOINT_EVERY as usize;
    for i in 0..RUNS {
        insert(&our_app, i);
        let before = counts.now();
        let taken = backups.backup(&ours).unwrap();
        runs.push(counts.since(before));
        let depth = taken.copies[0].1.pages.as_ref().unwrap().chain_depth;
        assert_eq!(
            depth as usize, i,
            "run {i} did not chain onto the previous one"
        );
        if i % 3 == 0 {
            insert(&their_app, i);
            other.backup(&theirs).unwrap();
        }
        // A list costs as much as the catalog's live entries weigh: listing
        // in the two windows compared is enough (and keeps the test short).
        if (40..40 + cycle).contains(&i) || i >= RUNS - cycle {
            let before = counts.now();
            let (listed, problems) = backups.list();
            lists.push((i, counts.since(before)));
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(listed.len(), i + 1 + i / 3 + 1, "after run {i}");
        }
    }
    let worst = |v: &[(usize, usize)]| v.iter().map(|c| c.0).max().unwrap();
    let worst_list = |from: usize, to: usize| {
        lists
            .iter()
            .filter(|(i, _)| (from..to).contains(i))
            .map(|(_, c)| c.0)
            .max()
            .unwrap()
    };
    let early = (worst(&runs[40..40 + cycle]), worst_list(40, 40 + cycle));
    let late = (worst(&runs[RUNS - cycle..]), worst_list(RUNS - cycle, RUNS));
    eprintln!(
        "manifest-folder GETs, at most: a run {} around run 40, {} at run {RUNS}; \
         a list {} around run 40, {} at run {RUNS}",
        early.0, late.0, early.1, late.1
    );
    assert!(
        late.0 <= early.0 && late.1 <= early.1,
        "reads grew with the catalog: runs {early:?} around run 40, {late:?} at run {RUNS}"
    );
    let bound = 4 * view::CHECKPOINT_EVERY as usize + 8;
    assert!(early.0 <= bound && early.1 <= bound, "{early:?} > {bound}");
    let listings: usize = runs[40..]
        .iter()
        .chain(lists.iter().filter(|(i, _)| *i >= 40).map(|(_, c)| c))
        .map(|c| c.1)
        .sum();
    assert_eq!(
        listings, 0,
        "something listed all of manifests/ after run 40"
    );

    // What the checkpoints summarise is what every manifest says.
    let (stored, bad) = manifest::read_all(&store).unwrap();
    assert!(bad.is_empty());
    let replayed: Vec<String> = manifest::listed(&store, &stored)
        .into_iter()
        .map(|l| l.entry.key)
        .collect();
    let read: Vec<String> = backups.list().0.into_iter().map(|l| l.entry.key).collect();
    assert_eq!(read, replayed);
    let v = view::view(&store).unwrap();
    assert!(v.checkpoint.is_some() && v.since_checkpoint < view::CHECKPOINT_EVERY);
    assert_eq!(v.manifests as usize, stored.len());
    let report = catalog::verify(&store, &catalog::Options::default(), None).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
