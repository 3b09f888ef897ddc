//! A checkpoint of a deep incremental chain stores each pack reference
//! once: the snapshots of a chain name many of the same packs, so whole
//! entries would make the checkpoint grow with the square of the depth.

use backup_core::Backups;
use backup_core::digest::{Sha256, Sidecar};
use backup_core::manifest::{self, view};
use backup_core::sink::{MemorySink, Sink, get_bytes};
use backup_testkit::testkit::incremental_app;

#[test]
fn a_deep_chain_checkpoint_names_each_pack_once_and_reads_as_the_manifests_do() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = incremental_app(dir.path());
    let sink = MemorySink::new("local");
    let backups = Backups::builder()
        .sink(sink.clone())
        .scratch_dir(dir.path().join("scratch"))
        .page_cache(dir.path().join("cache"))
        .build();
    let runs = view::CHECKPOINT_EVERY as i64 + 3;
    for round in 0..runs {
        app.execute("UPDATE t SET v = 'b' || v WHERE id = ?1", [round * 50 + 1])
            .unwrap();
        backups.backup(&db).unwrap();
    }

    let key = view::checkpoint_keys(&sink).unwrap().pop().unwrap();
    // Stored zstd-compressed.
    let json = zstd::decode_all(get_bytes(&sink, &key).unwrap().as_slice()).unwrap();
    let text = String::from_utf8(json).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    let packs = stored["state"]["packs"].as_array().unwrap();
    let live = stored["state"]["live"].as_array().unwrap();
    assert_eq!(live.len() as i64, view::CHECKPOINT_EVERY as i64);
    for p in packs {
        let key = p["key"].as_str().unwrap();
        assert_eq!(text.matches(key).count(), 1, "{key} stored more than once");
    }
    // Every run stored a pack that some live snapshot still names, while
    // the deepest names only the few its chain has not folded.
    let deepest = live.last().unwrap()[1].as_array().unwrap().len();
    assert!(
        packs.len() >= view::CHECKPOINT_EVERY as usize,
        "{}",
        packs.len()
    );
    assert!(deepest < packs.len() / 2, "{deepest} of {}", packs.len());

    // Read back, it is what a replay of the manifests gives.
    let c = view::read_checkpoint(&sink, &key).unwrap();
    let (stored, _) = manifest::read_all(&sink).unwrap();
    let upto: Vec<_> = stored
        .into_iter()
        .filter(|s| s.manifest.run_id <= c.run_id)
        .collect();
    let mut replayed = view::State::default();
    for s in &upto {
        replayed.apply(&s.manifest);
    }
    assert!(c.state.matches_replay(&replayed));
    // It stores no page-map runs: each entry reads them from its manifest
    // when it is restored or built on, exactly as the replay has them.
    assert!(
        !text.contains("zstd+base64:"),
        "runs stored in the checkpoint"
    );
    assert_ne!(c.state, replayed);
    for (l, r) in c.state.live.iter().zip(&replayed.live) {
        let mut entry = l.entry.clone();
        view::load_runs(&sink, &mut entry).unwrap();
        assert_eq!(entry, r.entry);
        view::load_runs(&sink, &mut entry).unwrap();
        assert_eq!(entry, r.entry, "loading twice changes nothing");
    }
    // A manifest that disagrees with the checkpoint is named.
    let mut other = c.state.live[3].entry.clone();
    other.pages.as_mut().unwrap().stored_bytes += 1;
    let err = view::load_runs(&sink, &mut other).unwrap_err().to_string();
    assert!(err.contains("differs from the catalog checkpoint"), "{err}");

    // A version 1 checkpoint (whole entries) still reads.
    let mut v1: serde_json::Value = serde_json::from_str(&text).unwrap();
    v1["version"] = 1.into();
    let live: Vec<&view::Live> = replayed.live.iter().map(|l| &**l).collect();
    v1["state"] = serde_json::json!({"live": live, "released": [], "collected": []});
    let bytes = serde_json::to_vec(&v1).unwrap();
    let name = key.rsplit('/').next().unwrap();
    sink.put(&key, &bytes).unwrap();
    sink.put(
        &format!("{key}.sha256"),
        Sidecar::new(Sha256::hex_of(&bytes), name)
            .render()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(view::read_checkpoint(&sink, &key).unwrap().state, replayed);

    let v = view::view(&sink).unwrap();
    assert_eq!(v.checkpoint.as_deref(), Some(key.as_str()));
    assert_eq!(v.state.live.len() as i64, runs);
}
