//! Pruning incremental snapshots frees packs in two phases: first the
//! prune's manifest records which snapshots went; then only packs that no
//! listed snapshot needs are deleted, and only once their grace period has
//! passed. Every kept snapshot restores exactly throughout.

use std::collections::BTreeSet;
use std::path::Path;

use backup_core::digest::Sha256;
use backup_core::jiff::{SignedDuration, Timestamp};
use backup_core::manifest::{self, Listed};
use backup_core::sink::{MemorySink, Sink};
use backup_core::{Backups, Database, Retention, prune};

fn db(dir: &Path) -> Database {
    let path = dir.join("app.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO t(v) SELECT printf('%.200c', 'a') FROM n;",
    )
    .unwrap();
    let mut d = Database::new("app", &path).require_tables(["t"]);
    d.incremental = true;
    d
}

/// Rewrite the rows `from..to`, which live on a run of pages of their own.
fn touch(d: &Database, from: u32, to: u32, text: &str) {
    let c = rusqlite::Connection::open(&d.path).unwrap();
    c.execute(
        "UPDATE t SET v = printf('%.200c', ?1) WHERE id >= ?2 AND id < ?3",
        rusqlite::params![text, from, to],
    )
    .unwrap();
}

fn newest(b: &Backups) -> Listed {
    b.list().0.into_iter().next().unwrap()
}

fn pack_keys(l: &Listed) -> BTreeSet<String> {
    let map = l.entry.pages.as_ref().unwrap();
    map.packs.iter().map(|p| p.key.clone()).collect()
}

fn restores_exactly(b: &Backups, d: &Database, l: &Listed, to: &Path) {
    let _ = std::fs::remove_file(to);
    b.restore(d).id(&l.run_id).to(to).run().unwrap();
    assert_eq!(
        Sha256::hex_of(&std::fs::read(to).unwrap()),
        l.entry.db_sha256
    );
}

/// A base and two snapshots that rewrite the same rows, so the second
/// one's own pack is superseded by the third's.
struct ThreeSnapshots {
    dir: tempfile::TempDir,
    app: Database,
    sink: MemorySink,
    b: Backups,
    base: Listed,
    second: Listed,
    third: Listed,
}

fn three_snapshots() -> ThreeSnapshots {
    let dir = tempfile::tempdir().unwrap();
    let app = db(dir.path());
    let sink = MemorySink::new("local");
    let b = Backups::new(sink.clone());
    b.backup(&app).unwrap();
    let base = newest(&b);
    touch(&app, 100, 400, "b");
    b.backup(&app).unwrap();
    let second = newest(&b);
    touch(&app, 100, 400, "c");
    b.backup(&app).unwrap();
    let third = newest(&b);
    ThreeSnapshots {
        dir,
        app,
        sink,
        b,
        base,
        second,
        third,
    }
}

/// Keeps only the newest snapshot.
fn keep_last_one() -> Retention {
    Retention {
        hot_days: 0,
        warm_days: 0,
        keep_last: 1,
        ..Retention::default()
    }
}

#[test]
fn packs_of_pruned_snapshots_go_only_when_unneeded_and_past_the_grace_period() {
    let ThreeSnapshots {
        dir,
        app,
        sink,
        b,
        base,
        second,
        third,
    } = three_snapshots();

    let own_pack: BTreeSet<String> = pack_keys(&second)
        .difference(&pack_keys(&base))
        .cloned()
        .collect();
    assert_eq!(own_pack.len(), 1, "the second snapshot wrote one pack");
    assert!(
        own_pack.is_disjoint(&pack_keys(&third)),
        "the third snapshot does not need the second's pack"
    );
    let base_pack = pack_keys(&base);
    assert!(
        !base_pack.is_disjoint(&pack_keys(&third)),
        "the third still needs the base's pack for the pages nobody touched"
    );

    let policy = keep_last_one();
    let sinks: Vec<&dyn Sink> = b.sinks().collect();
    let now = Timestamp::now();
    let plan = prune::plan(&sinks, &[], now, &policy);
    assert_eq!(plan.delete_count(), 2);
    let report = prune::apply(&plan, &sinks);
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.deleted_count(), 2);
    // Phase one only: recorded, nothing of theirs deleted yet.
    assert_eq!(report.collected_count(), 0);
    assert!(report.sinks[0].packs.waiting > 0);
    // Grace counts from the prune's manifest, written after `now`.
    let ready = report.sinks[0].packs.next_ready.expect("a release time");
    for key in own_pack.iter().chain(&base_pack) {
        assert!(sink.size(key).unwrap().is_some(), "{key} is still there");
    }
    assert_eq!(b.list().0.len(), 1);
    restores_exactly(&b, &app, &third, &dir.path().join("r1.db"));

    // An hour before the grace period ends, still nothing goes.
    let grace = SignedDuration::try_from(policy.pack_grace).unwrap();
    let early = now + grace - SignedDuration::from_hours(1);
    let report = prune::apply(&prune::plan(&sinks, &[], early, &policy), &sinks);
    assert_eq!(report.collected_count(), 0, "{report:?}");

    // Past it, the second snapshot's pack and index go; the base's pack and
    // index stay because the third snapshot still needs them.
    assert!(ready >= now + grace, "{ready} is before {now} + grace");
    let late = ready + SignedDuration::from_secs(1);
    let report = prune::apply(&prune::plan(&sinks, &[], late, &policy), &sinks);
    assert!(report.ok(), "{report:?}");
    let collected: BTreeSet<String> = report.sinks[0].packs.deleted.iter().cloned().collect();
    for key in &own_pack {
        assert!(collected.contains(key), "{key} collected: {collected:?}");
        assert_eq!(sink.size(key).unwrap(), None);
    }
    assert!(collected.contains(&second.entry.key));
    assert!(collected.contains(&second.entry.sidecar_key));
    for key in base_pack
        .iter()
        .chain([&base.entry.key, &base.entry.sidecar_key])
    {
        assert!(!collected.contains(key));
        assert!(sink.size(key).unwrap().is_some());
    }
    assert!(report.sinks[0].packs.bytes > 0);
    restores_exactly(&b, &app, &third, &dir.path().join("r2.db"));

    // Recorded in the chain, which stays whole; a second pass frees nothing.
    let (stored, bad) = manifest::read_all(&sink).unwrap();
    assert!(bad.is_empty());
    let recorded: BTreeSet<&String> = stored.iter().flat_map(|s| &s.manifest.collected).collect();
    assert_eq!(recorded.len(), collected.len());
    let chain = backup_core::catalog::verify(&sink, &Default::default(), None).unwrap();
    assert!(chain.ok(), "{:#?}", chain.problems);
    let report = prune::apply(&prune::plan(&sinks, &[], late, &policy), &sinks);
    assert_eq!(report.collected_count(), 0);
    assert!(report.sinks.is_empty(), "{report:?}");

    // The chain goes on from what is left.
    touch(&app, 5000, 5100, "d");
    b.backup(&app).unwrap();
    let fourth = newest(&b);
    assert_eq!(fourth.entry.pages.as_ref().unwrap().chain_depth, 3);
    restores_exactly(&b, &app, &fourth, &dir.path().join("r3.db"));
}

#[test]
fn keep_within_keeps_every_recent_snapshot_and_thins_the_rest() {
    use backup_core::retention::{Backup, evaluate};
    use backup_core::sink::Placement;
    let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
    // One snapshot a minute for five hours.
    let snaps: Vec<Backup> = (0..300)
        .map(|m| Backup {
            id: format!("s{m}"),
            label: "app".into(),
            sink: "local".into(),
            placement: Placement::Local,
            at: now - SignedDuration::from_mins(m),
            tag: None,
            verified: true,
        })
        .collect();
    let policy = Retention {
        hot_days: 0,
        keep_within: Some(std::time::Duration::from_secs(2 * 3600)),
        keep_hourly: 24,
        ..Retention::default()
    };
    let d = evaluate(&snaps, now, &policy);
    let kept: Vec<usize> = (0..snaps.len()).filter(|&i| d[i].keep).collect();
    // 120 within two hours; then the warm tier's newest of the day (the
    // newest overall, already kept) and the newest of each older hour.
    assert!(
        kept.iter()
            .take(120)
            .eq((0..120).collect::<Vec<_>>().iter())
    );
    assert_eq!(d[0].reason.to_string(), "keep_within: younger than 2h");
    let older: Vec<usize> = kept.iter().copied().filter(|&i| i >= 120).collect();
    assert!(older.len() <= 4, "hourly thinning: {older:?}");
    assert!(!d[200].keep);
}

#[test]
fn page_hash_cache_spares_the_index_and_is_used_only_when_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    let app = db(dir.path());
    let sink = MemorySink::new("local");
    let cache = dir.path().join("cache");
    let b = Backups::builder()
        .sink(sink.clone())
        .page_cache(&cache)
        .build();
    b.backup(&app).unwrap();
    let base = newest(&b);
    let cached = backup_core::incremental::cached_hashes(&cache, "local", &base.entry, None)
        .expect("the run cached its page hashes");
    assert_eq!(cached.len() as u64, base.entry.page_count);

    // With the index in the sink damaged, the cached hashes still let the
    // next run build on the base (without the cache it starts a new chain).
    let index = backup_core::sink::get_bytes(&sink, &base.entry.key).unwrap();
    sink.put(&base.entry.key, b"damaged").unwrap();
    touch(&app, 100, 200, "b");
    b.backup(&app).unwrap();
    let second = newest(&b);
    assert_eq!(second.entry.pages.as_ref().unwrap().chain_depth, 1);
    restores_exactly(&b, &app, &second, &dir.path().join("r1.db"));
    sink.put(&base.entry.key, &index).unwrap();

    // A cache that does not match the newest manifest is not used.
    let file = cache.join("local.app.pagehashes");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(
        backup_core::incremental::cached_hashes(&cache, "local", &second.entry, None).is_none()
    );
    std::fs::write(&file, &bytes[..bytes.len() - 16]).unwrap();
    assert!(
        backup_core::incremental::cached_hashes(&cache, "local", &second.entry, None).is_none()
    );
    assert!(
        backup_core::incremental::cached_hashes(&cache, "other", &second.entry, None).is_none()
    );
    // The chain stores XOR deltas, whose page indexes hold only the pages
    // each run changed: without its cache the run cannot learn every
    // page's hash from the sink, so it starts a new base, and rewrites the
    // cache for the run after it.
    assert!(second.entry.pages.as_ref().unwrap().has_xor());
    touch(&app, 300, 400, "c");
    b.backup(&app).unwrap();
    let third = newest(&b);
    assert_eq!(third.entry.pages.as_ref().unwrap().chain_depth, 0);
    restores_exactly(&b, &app, &third, &dir.path().join("r2.db"));
    assert!(backup_core::incremental::cached_hashes(&cache, "local", &third.entry, None).is_some());
    touch(&app, 500, 600, "d");
    b.backup(&app).unwrap();
    let fourth = newest(&b);
    assert_eq!(fourth.entry.pages.as_ref().unwrap().chain_depth, 1);
    restores_exactly(&b, &app, &fourth, &dir.path().join("r3.db"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Two runs in a row fail at their manifest, each after caching the
    // hashes of a snapshot the catalog never lists: the newest listed
    // one's hashes survive both, so the next run continues its chain.
    let failing = Backups::builder()
        .sink(backup_core::sink::faults::fail_on(
            sink.clone(),
            backup_core::sink::faults::Op::Put,
            "manifests/",
        ))
        .page_cache(&cache)
        .build();
    for (n, rows) in [(700, 800), (900, 1000)] {
        touch(&app, n, rows, "failed");
        assert!(failing.backup(&app).is_err());
        assert_eq!(newest(&b).run_id, fourth.run_id);
    }
    touch(&app, 1100, 1200, "e");
    b.backup(&app).unwrap();
    let fifth = newest(&b);
    assert_eq!(fifth.entry.pages.as_ref().unwrap().chain_depth, 2);
    restores_exactly(&b, &app, &fifth, &dir.path().join("r4.db"));
}

/// Checkpoints before version 5 stored the pruned snapshots whole; they
/// read as the objects those snapshots release, as a replay has them.
#[test]
fn a_checkpoint_of_pruned_snapshots_whole_reads_as_what_they_release() {
    use backup_core::digest::Sidecar;
    use backup_core::manifest::view;
    use backup_core::sink::get_bytes;

    let ThreeSnapshots {
        sink,
        b,
        base,
        second,
        ..
    } = three_snapshots();
    let sinks: Vec<&dyn Sink> = b.sinks().collect();
    let report = prune::apply(
        &prune::plan(&sinks, &[], Timestamp::now(), &keep_last_one()),
        &sinks,
    );
    assert_eq!(report.deleted_count(), 2, "{report:?}");

    let key = view::checkpoint_whole(&sink).unwrap().unwrap();
    let now = view::read_checkpoint(&sink, &key).unwrap();
    let own_pack = pack_keys(&second)
        .difference(&pack_keys(&base))
        .next()
        .cloned()
        .unwrap();
    let waiting: BTreeSet<&String> = now.state.released.keys().collect();
    assert!(waiting.contains(&own_pack), "{waiting:?}");
    assert!(waiting.contains(&second.entry.key));
    assert!(
        !waiting.contains(&base.entry.key),
        "the kept snapshot still needs the base's index"
    );

    // The same checkpoint as version 4 wrote it.
    let json = zstd::decode_all(get_bytes(&sink, &key).unwrap().as_slice()).unwrap();
    let mut v4: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v4["version"] = 4.into();
    // Its released objects are in segments beside it (version 7).
    assert!(
        v4.as_object_mut()
            .unwrap()
            .remove("released_segments")
            .is_some()
    );
    let state = v4["state"].as_object_mut().unwrap();
    state.remove("released_objects");
    // Page maps listed their packs before manifest version 5 grouped them
    // (in a checkpoint, none: they are in its table).
    let listed = |pages: &mut serde_json::Value| {
        let pages = pages.as_object_mut().unwrap();
        assert!(pages.remove("pack_groups").is_some());
        pages.insert("packs".into(), serde_json::json!([]));
    };
    for live in state["live"].as_array_mut().unwrap() {
        listed(&mut live[0]["entry"]["pages"]);
    }
    let mut released = Vec::new();
    for (l, pruned_at) in [
        (&base, "2026-01-01T00:00:00Z"),
        (&second, "2026-01-02T00:00:00Z"),
    ] {
        let mut entry = serde_json::to_value(&l.entry).unwrap();
        listed(&mut entry["pages"]);
        let packs = serde_json::to_value(&l.entry.pages.as_ref().unwrap().packs).unwrap();
        let table = state["packs"].as_array_mut().unwrap();
        let ids: Vec<usize> = packs
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                table.push(p.clone());
                table.len() - 1
            })
            .collect();
        released.push(serde_json::json!([{"pruned_at": pruned_at, "entry": entry}, ids]));
    }
    state.insert("released".into(), released.into());
    // What collection had freed is not waited for again.
    state.insert(
        "collected".into(),
        serde_json::json!([&second.entry.sidecar_key]),
    );
    let bytes = serde_json::to_vec(&v4).unwrap();
    sink.put(&key, &bytes).unwrap();
    let name = key.rsplit('/').next().unwrap();
    let sidecar = Sidecar::new(Sha256::hex_of(&bytes), name).render();
    sink.put(&format!("{key}.sha256"), sidecar.as_bytes())
        .unwrap();

    let old = view::read_checkpoint(&sink, &key).unwrap();
    let keys: BTreeSet<&String> = old.state.released.keys().collect();
    let mut expected = waiting.clone();
    assert!(expected.remove(&second.entry.sidecar_key));
    assert_eq!(keys, expected);
    assert_eq!(
        old.state.released[&own_pack].at,
        "2026-01-02T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(old.state.live, now.state.live);
}
