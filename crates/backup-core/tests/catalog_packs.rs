//! `verify --catalog` without `--deep` checks every object a listed
//! snapshot needs (`Entry::objects`): a deleted or one-byte-short pack is
//! named under every entry that needs it, without reading any pack.

use std::path::Path;

use backup_core::catalog::{self, ArtifactCheck, CatalogProblem, Options};
use backup_core::sink::{MemorySink, Sink, get_bytes};
use backup_core::{Backups, Database};

fn chain(dir: &Path) -> (MemorySink, Backups) {
    let path = dir.join("app.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO t(v) SELECT printf('%.200c', 'a') FROM n;",
    )
    .unwrap();
    let mut db = Database::new("app", &path);
    db.incremental = true;
    let sink = MemorySink::new("local");
    let backups = Backups::new(sink.clone());
    backups.backup(&db).unwrap();
    for ch in ["b", "c"] {
        c.execute("UPDATE t SET v = printf('%.200c', ?1) WHERE id < 50", [ch])
            .unwrap();
        backups.backup(&db).unwrap();
    }
    (sink, backups)
}

fn cheap(sink: &MemorySink) -> Vec<CatalogProblem> {
    let opts = Options {
        artifacts: ArtifactCheck::Cheap,
    };
    catalog::verify(sink, &opts, None).unwrap().problems
}

#[test]
fn a_deleted_or_truncated_pack_is_named_under_every_entry_that_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, backups) = chain(dir.path());
    assert_eq!(cheap(&sink), vec![]);
    let listed = backups.list().0;
    assert_eq!(listed.len(), 3);
    // The base pack: every snapshot of the chain still reads pages from it.
    let base = listed[2].entry.pages.as_ref().unwrap().packs[0].key.clone();
    let needing = listed
        .iter()
        .filter(|l| l.entry.objects().iter().any(|n| n.key == base))
        .count();
    assert_eq!(needing, 3, "the base pack serves the whole chain");

    let bytes = get_bytes(&sink, &base).unwrap();
    sink.put(&base, &bytes[..bytes.len() - 1]).unwrap();
    let problems = cheap(&sink);
    let short: Vec<_> = problems
        .iter()
        .filter(|p| {
            matches!(p, CatalogProblem::SizeMismatch { key, actual, recorded, .. }
            if *key == base && *actual + 1 == *recorded)
        })
        .collect();
    assert_eq!(short.len(), needing, "{problems:#?}");

    sink.delete(&base).unwrap();
    let problems = cheap(&sink);
    let missing = problems
        .iter()
        .filter(|p| matches!(p, CatalogProblem::ArtifactMissing { key, .. } if *key == base))
        .count();
    assert_eq!(missing, needing, "{problems:#?}");
    assert!(problems.iter().all(|p| !p.to_string().is_empty()));
}
