//! `Entry::objects` is the one answer to "which objects does a listed
//! snapshot need". Property: over random incremental chains (changes,
//! growth, shrinking, new bases), a restore of any listed snapshot reads no
//! object outside its set, and deleting every object outside the union of
//! the listed snapshots' sets (manifests aside) leaves every one restorable,
//! bit for bit.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use backup_core::digest::Sha256;
use backup_core::incremental::Policy;
use backup_core::manifest::MANIFEST_DIR;
use backup_core::sink::faults::{Hooked, Op};
use backup_core::sink::{MemorySink, Sink};
use backup_core::{Backups, Database};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// Rewrite rows `from..from+n` with `c`.
    Change { from: u32, n: u32, c: char },
    /// Append `n` rows.
    Grow { n: u32 },
    /// Delete rows `from..from+n` and VACUUM: the image shrinks.
    Shrink { from: u32, n: u32 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..3000, 1u32..400, prop::char::range('a', 'z'))
            .prop_map(|(from, n, c)| Step::Change { from, n, c }),
        1 => (1u32..600).prop_map(|n| Step::Grow { n }),
        1 => (1u32..3000, 1u32..800).prop_map(|(from, n)| Step::Shrink { from, n }),
    ]
}

fn create(dir: &Path) -> Database {
    let path = dir.join("app.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t(v) SELECT printf('%.300c', 'a') FROM n;",
    )
    .unwrap();
    let mut d = Database::new("app", &path).require_tables(["t"]);
    d.incremental = true;
    d
}

fn apply(d: &Database, s: &Step) {
    let c = rusqlite::Connection::open(&d.path).unwrap();
    match *s {
        Step::Change { from, n, c: ch } => c
            .execute(
                "UPDATE t SET v = printf('%.300c', ?1) WHERE id >= ?2 AND id < ?3",
                rusqlite::params![ch.to_string(), from, from + n],
            )
            .map(drop),
        Step::Grow { n } => c
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO t(v) SELECT printf('%.300c', 'g') FROM n",
                [n],
            )
            .map(drop),
        Step::Shrink { from, n } => c
            .execute("DELETE FROM t WHERE id >= ?1 AND id < ?2", [from, from + n])
            .and_then(|_| c.execute_batch("VACUUM")),
    }
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_object_a_listed_snapshot_reads_is_in_its_objects(
        steps in prop::collection::vec(step(), 1..6),
        max_chain in 2u32..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let app = create(dir.path());
        let store = MemorySink::new("local");
        let reads: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let seen = reads.clone();
        let spy = Hooked::new(store.clone()).with_hook(move |op, key, _| {
            if matches!(op, Op::Get | Op::Read) {
                seen.lock().unwrap().insert(key.to_string());
            }
            Ok(())
        });
        let backups = Backups::builder()
            .sink(spy)
            .incremental(Policy {
                max_chain,
                ..Policy::default()
            })
            .build();
        backups.backup(&app).unwrap();
        for s in &steps {
            apply(&app, s);
            backups.backup(&app).unwrap();
        }
        let (listed, problems) = backups.list();
        prop_assert!(problems.is_empty(), "{problems:?}");
        prop_assert_eq!(listed.len(), steps.len() + 1);

        // Everything not needed goes (manifests aside).
        let needed: BTreeSet<String> = listed
            .iter()
            .flat_map(|l| l.entry.objects())
            .map(|n| n.key)
            .collect();
        for key in store.keys() {
            if !key.starts_with(MANIFEST_DIR) && !needed.contains(&key) {
                store.delete(&key).unwrap();
            }
        }
        let to = dir.path().join("restored.db");
        for l in &listed {
            reads.lock().unwrap().clear();
            let _ = std::fs::remove_file(&to);
            backups.restore(&app).id(&l.run_id).to(&to).run().unwrap();
            prop_assert_eq!(Sha256::hex_of(&std::fs::read(&to).unwrap()), l.entry.db_sha256.clone());
            let own: BTreeSet<String> = l.entry.objects().into_iter().map(|n| n.key).collect();
            let outside: Vec<String> = reads
                .lock()
                .unwrap()
                .iter()
                .filter(|k| !k.starts_with(MANIFEST_DIR) && !own.contains(*k))
                .cloned()
                .collect();
            prop_assert!(outside.is_empty(), "{} read {outside:?}", l.run_id);
        }
    }
}
