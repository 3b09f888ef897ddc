//! Manifests written before version 5 list a page map's packs one object
//! each. A chain whose newest manifest has that form still lists, restores
//! and verifies, and the next run builds on it.

use backup_core::Backups;
use backup_core::catalog::append::link_key;
use backup_core::catalog::{self, Options};
use backup_core::digest::{Sha256, Sidecar};
use backup_core::manifest::{self, Manifest};
use backup_core::sink::{MemorySink, Sink, get_bytes};

fn value(c: &rusqlite::Connection) -> String {
    c.query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0))
        .unwrap()
}

/// The newest manifest as stored, checked against its sidecar.
fn newest(sink: &MemorySink) -> manifest::Stored {
    let (stored, problems) = manifest::read_all(sink).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    stored
        .into_iter()
        .max_by(|a, b| a.manifest.run_id.cmp(&b.manifest.run_id))
        .unwrap()
}

/// Store the newest manifest of `sink` again as version 4 wrote it: its
/// bytes, sidecar and chain claim (nothing names its digest yet).
fn rewrite_tip_as_version_4(sink: &MemorySink) -> String {
    let key = newest(sink).key;
    let m = Manifest::from_bytes(&key, &get_bytes(sink, &key).unwrap()).unwrap();
    let mut v: serde_json::Value = serde_json::to_value(&m).unwrap();
    assert_eq!(v["version"], 5);
    v["version"] = 4.into();
    for (e, entry) in v["entries"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(&m.entries)
    {
        let pages = e["pages"].as_object_mut().unwrap();
        assert!(pages.remove("pack_groups").is_some());
        let packs = &entry.pages.as_ref().unwrap().packs;
        pages.insert("packs".into(), serde_json::to_value(packs).unwrap());
    }
    let bytes = serde_json::to_vec(&v).unwrap();
    let sha256 = Sha256::hex_of(&bytes);
    let name = key.rsplit('/').next().unwrap();
    sink.put(
        &format!("{key}.sha256"),
        Sidecar::new(&sha256, name).render().as_bytes(),
    )
    .unwrap();
    sink.put(&key, &bytes).unwrap();
    sink.put(&link_key(m.previous.as_deref()), &bytes).unwrap();
    sha256
}

#[test]
fn a_chain_grows_on_a_manifest_that_lists_its_packs_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let (db, c) = backup_testkit::testkit::incremental_app(dir.path());
    let sink = MemorySink::new("local");
    Backups::new(sink.clone()).backup(&db).unwrap();
    c.execute("UPDATE t SET v = 'b' WHERE id < 50", []).unwrap();
    Backups::new(sink.clone()).backup(&db).unwrap();
    let old_sha256 = rewrite_tip_as_version_4(&sink);

    // A fresh reader (a new process) reads the old form.
    let tip = newest(&sink);
    assert_eq!(
        (tip.manifest.version, tip.sha256.as_str()),
        (4, old_sha256.as_str())
    );
    let backups = Backups::new(sink.clone());
    let (listed, problems) = backups.list();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(listed.len(), 2);

    c.execute("UPDATE t SET v = 'c' WHERE id < 50", []).unwrap();
    backups.backup(&db).unwrap();
    let tip = newest(&sink);
    assert_eq!(tip.manifest.version, 5);
    assert_eq!(tip.manifest.previous.as_deref(), Some(old_sha256.as_str()));
    let (listed, problems) = backups.list();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(listed[0].entry.pages.as_ref().unwrap().chain_depth, 2);

    let report = catalog::verify(&sink, &Options::default(), None).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    for (l, want) in listed.iter().zip(["c", "b", &"a".repeat(300)]) {
        let to = dir.path().join(format!("{}.db", l.run_id));
        backups.restore(&db).id(&l.run_id).to(&to).run().unwrap();
        let r = rusqlite::Connection::open(&to).unwrap();
        assert_eq!(value(&r), want, "{}", l.run_id);
    }
}
