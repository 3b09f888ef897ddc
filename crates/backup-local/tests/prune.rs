//! `prune` against real folders: exactly the planned artifacts and sidecars
//! disappear from disk, and the appended manifest records them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use backup_core::compress::Format;
use backup_core::jiff::Timestamp;
use backup_core::manifest::{self, Entry};
use backup_core::sink::{Placement, Sink};
use backup_core::{CheckLevel, Retention};
use backup_core::{catalog, prune};
use backup_local::LocalSink;

const DAY: i64 = 86_400;

fn files(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn backup(sink: &dyn Sink, at: Timestamp, tag: Option<&str>) {
    let key = format!(
        "app-{}-{}.db.zst",
        tag.unwrap_or("auto"),
        at.strftime("%Y%m%d-%H%M%S")
    );
    sink.put(&key, b"artifact").unwrap();
    let sidecar_key = format!("{key}.sha256");
    sink.put(&sidecar_key, b"digest").unwrap();
    let entry = Entry {
        adopted: None,
        label: "app".into(),
        tag: tag.map(str::to_string),
        key,
        sidecar_key,
        compression: Format::Zstd,
        size: 8,
        // Any well-formed digest: prune reads manifests, never the bytes.
        sha256: "0".repeat(64),
        db_size: 4096,
        db_sha256: "0".repeat(64),
        page_size: 4096,
        page_count: 1,
        schema_sha256: "0".repeat(64),
        row_counts: BTreeMap::new(),
        snapshot_at: at,
        snapshot_ms: 1,
        verified_with: CheckLevel::QuickCheck,
        source: "/srv/app.db".into(),
        host: None,
        source_mode: None,
        encrypted_to: vec![],
        sealed: None,
        pages: None,
    };
    catalog::append::write_manifest(sink, &manifest::new_run_id(at), at, at, vec![entry], vec![])
        .unwrap();
}

#[test]
fn prune_removes_exactly_the_planned_files() {
    let dir = tempfile::tempdir().unwrap();
    let hot = LocalSink::new("local", dir.path().join("backups"), Placement::Local);
    let cold = LocalSink::new("cold", dir.path().join("offsite"), Placement::Cold);
    let now: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    for k in (0..45).rev() {
        let at = Timestamp::from_second(now.as_second() - k * DAY - 3600).unwrap();
        let tag = if k == 35 { Some("phase1") } else { None };
        backup(&hot, at, tag);
        if tag.is_some() {
            backup(&cold, at, tag);
        }
    }
    let sinks: [&dyn Sink; 2] = [&hot, &cold];
    let before_hot = files(hot.root());
    let before_cold = files(cold.root());
    let plan = prune::plan(&sinks, &[], now, &Retention::default());
    assert_eq!(plan.delete_count(), 14, "{plan:?}");

    let report = prune::apply(&plan, &sinks);
    assert!(report.ok(), "{report:?}");
    let planned: BTreeSet<String> = plan
        .deletions()
        .flat_map(|i| [i.entry.key.clone(), i.entry.sidecar_key.clone()])
        .collect();
    let after = files(hot.root());
    let removed: BTreeSet<String> = before_hot.difference(&after).cloned().collect();
    assert_eq!(removed, planned);
    let added: Vec<&String> = after.difference(&before_hot).collect();
    let (key, _) = report.sinks[0].manifest.clone().unwrap();
    // The manifest, its sha256sum sidecar, and the chain link that
    // claimed its place after the previous head.
    assert_eq!(added.len(), 3, "{added:?}");
    assert_eq!(added[..2], [&key, &format!("{key}.sha256")]);
    assert!(added[2].starts_with("manifests/chain/"), "{added:?}");
    assert_eq!(files(cold.root()), before_cold, "cold tier touched");
    assert!(after.iter().any(|f| f.contains("phase1")));

    let again = prune::plan(&sinks, &[], now, &Retention::default());
    assert_eq!(again.delete_count(), 0, "{again:?}");
}
