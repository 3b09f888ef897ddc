//! Incremental runs pruned as they go, into a real local folder: the
//! objects pruned snapshots release wait out `pack_grace` in segments
//! beside the checkpoints, every segment a checkpoint names is there and
//! no other is left, a fresh reader's state is a replay's, and
//! `verify --catalog` finds the checkpoints true to the manifests.

use std::collections::BTreeSet;

use backup_core::manifest::{self, view};
use backup_core::sink::{Placement, Sink};
use backup_core::{Backups, Retention, catalog};
use backup_local::LocalSink;
use backup_testkit::testkit::incremental_app;

#[test]
fn pruned_runs_keep_their_released_objects_in_segments_a_fresh_reader_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = incremental_app(dir.path());
    let sink = LocalSink::new("local", dir.path().join("backups"), Placement::Local);
    let backups = Backups::builder()
        .sink(sink.clone())
        .scratch_dir(dir.path().join("scratch"))
        .page_cache(dir.path().join("cache"))
        .build();
    let policy = Retention {
        hot_days: 0,
        warm_days: 0,
        keep_last: 3,
        ..Retention::default()
    };
    let runs = 3 * view::CHECKPOINT_EVERY as i64 + 5;
    for round in 0..runs {
        app.execute("UPDATE t SET v = 'b' || v WHERE id = ?1", [round * 7 + 1])
            .unwrap();
        backups.backup(&db).unwrap();
        if round % 10 == 9 {
            let report = backups.prune(&backups.prune_plan(&policy));
            assert!(report.deleted_count() > 0, "{report:?}");
        }
    }

    let v = view::view(&sink).unwrap();
    let key = v.checkpoint.clone().expect("a checkpoint");
    let c = view::read_checkpoint(&sink, &key).unwrap();
    assert!(!c.released_segments.is_empty());
    assert!(!c.state.released.is_empty());
    // A fresh reader's state is what every manifest adds up to.
    let (stored, bad) = manifest::read_all(&sink).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let mut replayed = view::State::default();
    for s in &stored {
        replayed.apply(&s.manifest);
    }
    assert_eq!(v.state.released, replayed.released);
    assert_eq!(v.state.live.len(), replayed.live.len());

    // Every segment a kept checkpoint names is stored, and nothing else.
    let mut named = BTreeSet::new();
    for key in view::checkpoint_keys(&sink).unwrap() {
        let c = view::read_checkpoint(&sink, &key).unwrap();
        named.extend(c.released_segments.into_iter().map(|s| s.key));
    }
    let present: BTreeSet<String> = sink
        .list(view::released::DIR)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(present, named);

    let report = catalog::verify(&sink, &catalog::Options::default(), None).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
