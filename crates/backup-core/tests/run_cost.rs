//! A backup run reads a bounded number of manifests whatever the catalog's
//! length: an incremental run finds its base in the newest manifests, not
//! by reading every manifest the sink ever received (issue: continuous
//! protection at constant cost). Counted on a real sink wrapper, over a
//! thousand runs, with another host's runs interleaved in the same sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backup_core::manifest::MANIFEST_DIR;
use backup_core::sink::MemorySink;
use backup_core::sink::faults::{Hooked, Op};
use backup_core::{Backups, Database};

const RUNS: usize = 1_000;

fn database(dir: &std::path::Path, name: &str, host: &str) -> Database {
    let path = dir.join(name);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            // Enough pages that one inserted row is a small change (past
            // half the pages changed, a run starts a new base).
            "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             INSERT INTO t(v) SELECT printf('%.300c', 'a') FROM n;",
        )
        .unwrap();
    let mut d = Database::new("app", path).require_tables(["t"]).host(host);
    d.incremental = true;
    d
}

fn insert(d: &Database, i: usize) {
    rusqlite::Connection::open(&d.path)
        .unwrap()
        .execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")])
        .unwrap();
}

#[test]
fn an_incremental_run_reads_as_many_manifests_after_a_thousand_runs_as_after_ten() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemorySink::new("local");
    let manifest_gets = Arc::new(AtomicUsize::new(0));
    let seen = manifest_gets.clone();
    let spy = Hooked::new(store.clone()).with_hook(move |op, key, _| {
        if op == Op::Get && key.starts_with(MANIFEST_DIR) {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    let backups = Backups::builder()
        .sink(spy)
        .scratch_dir(dir.path().join("scratch"))
        .build();
    let ours = database(dir.path(), "ours.db", "web-1");
    // Another host backs up its own `app` into the same sink.
    let theirs = database(dir.path(), "theirs.db", "web-2");
    let mut reads = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        insert(&ours, i);
        let before = manifest_gets.load(Ordering::SeqCst);
        let taken = backups.backup(&ours).unwrap();
        reads.push(manifest_gets.load(Ordering::SeqCst) - before);
        let depth = taken.copies[0].1.pages.as_ref().unwrap().chain_depth;
        assert_eq!(
            depth as usize, i,
            "run {i} did not chain onto the previous one"
        );
        if i % 3 == 0 {
            insert(&theirs, i);
            backups.backup(&theirs).unwrap();
        }
    }
    // Each manifest read is two GETs (it and its sidecar); a run reads its
    // base's manifest (and the other host's newer one, every third run)
    // and the chain tip it appends to.
    let early = *reads[10..20].iter().max().unwrap();
    let late = *reads[RUNS - 10..].iter().max().unwrap();
    eprintln!("manifest GETs per run: at most {early} around run 10, {late} at run {RUNS}");
    assert!(
        late <= early && late <= 6,
        "manifest reads per run grew with the catalog: {early} around run 10, {late} at run {RUNS}"
    );
}
