//! `prune` against in-memory sinks with real, chained manifests: it deletes
//! exactly the planned artifacts and sidecars, records them in one appended
//! manifest, keeps the chain whole, and a second prune deletes nothing.

use std::collections::{BTreeMap, BTreeSet};

use backup_core::catalog;
use backup_core::compress::Format;
use backup_core::digest::Sha256;
use backup_core::jiff::Timestamp;
use backup_core::manifest::{self, Entry};
use backup_core::prune;
use backup_core::sink::faults::Hooked;
use backup_core::sink::{MemorySink, Placement, Sink, get_bytes};
use backup_core::{CheckLevel, Retention};
use proptest::prelude::*;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

fn now() -> Timestamp {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

fn ago(secs: i64) -> Timestamp {
    Timestamp::from_second(now().as_second() - secs).unwrap()
}

/// A [`MemorySink`] in another placement (the cold tier, object storage).
type Placed = Hooked<MemorySink>;

/// Field `previous` of a stored manifest.
fn m_previous(sink: &dyn Sink, key: &str) -> String {
    let m = manifest::Manifest::from_bytes(key, &get_bytes(sink, key).unwrap()).unwrap();
    m.previous.expect("not the first manifest")
}

fn placed(name: &str, placement: Placement) -> Placed {
    Hooked::new(MemorySink::new(name)).with_placement(placement)
}

/// Store one backup run in `sink`: artifact, sidecar, then its manifest.
fn backup(sink: &dyn Sink, label: &str, at: Timestamp, tag: Option<&str>) -> Entry {
    let stamp = at.strftime("%Y%m%d-%H%M%S");
    let key = format!("{label}-{}-{stamp}.db.zst", tag.unwrap_or("auto"));
    store(sink, label, at, tag, &key)
}

fn store(sink: &dyn Sink, label: &str, at: Timestamp, tag: Option<&str>, key: &str) -> Entry {
    let body = format!("{label} {at} {}", sink.name()).into_bytes();
    let sha = Sha256::hex_of(&body);
    sink.put(key, &body).unwrap();
    let sidecar_key = format!("{key}.sha256");
    sink.put(&sidecar_key, format!("{sha}  {key}\n").as_bytes())
        .unwrap();
    let entry = Entry {
        adopted: None,
        label: label.into(),
        tag: tag.map(str::to_string),
        key: key.into(),
        sidecar_key,
        compression: Format::Zstd,
        size: 1024 * 1024 + body.len() as u64,
        sha256: sha.clone(),
        db_size: 4096,
        db_sha256: sha,
        page_size: 4096,
        page_count: 1,
        schema_sha256: Sha256::hex_of(b"schema"),
        row_counts: BTreeMap::new(),
        snapshot_at: at,
        snapshot_ms: 3,
        verified_with: CheckLevel::QuickCheck,
        source: format!("/srv/{label}.db"),
        host: None,
        source_mode: None,
        encrypted_to: vec![],
        sealed: None,
        pages: None,
    };
    let run_id = manifest::new_run_id(at);
    catalog::append::write_manifest(sink, &run_id, at, at, vec![entry.clone()], vec![]).unwrap();
    entry
}

/// Every manifest names the SHA-256 of the one before it.
fn assert_chain_whole(sink: &dyn Sink) {
    let (stored, bad) = manifest::read_all(sink).unwrap();
    assert!(bad.is_empty());
    let mut previous = None;
    for s in &stored {
        assert_eq!(s.manifest.previous, previous, "chain broken at {}", s.key);
        previous = Some(s.sha256.clone());
    }
    assert_eq!(
        manifest::head(sink).unwrap(),
        previous,
        "head is not the newest"
    );
}

fn objects(sink: &MemorySink) -> BTreeSet<String> {
    sink.keys().into_iter().collect()
}

/// 36 days of 8-hourly round backups (daily copies to Azure), a pre-migration snapshot, a phase
/// seal copied to the cold tier, and a second database gone stale.
fn fleet() -> (Placed, Placed, Placed) {
    let local = placed("local", Placement::Local);
    let azure = placed("azure", Placement::Remote);
    let cold = placed("cold", Placement::Cold);
    let mut runs: Vec<(&Placed, &str, Timestamp, Option<String>)> = Vec::new();
    for k in 0..(36 * 3) {
        let at = ago(k * 8 * HOUR + HOUR);
        runs.push((&local, "colibri", at, Some(format!("r{}", 200 - k))));
        if k % 3 == 0 {
            runs.push((&azure, "colibri", at, None));
        }
    }
    runs.push((&local, "colibri", ago(9 * DAY), Some("premigrate".into())));
    let seal = ago(12 * DAY + 2 * HOUR);
    runs.push((&local, "colibri", seal, Some("phase1".into())));
    runs.push((&cold, "colibri", seal, Some("phase1".into())));
    for k in 0..3 {
        runs.push((&azure, "mission-control", ago(40 * DAY + k * DAY), None));
    }
    // Oldest first, as a real history is written (run ids sort by time).
    runs.sort_by_key(|r| r.2);
    for (sink, label, at, tag) in &runs {
        backup(*sink, label, *at, tag.as_deref());
    }
    drop(runs);
    (local, azure, cold)
}

/// One line per decision: what `--dry-run` shows, without the layout.
fn decisions(plan: &prune::PrunePlan) -> String {
    let mut out = String::new();
    for i in &plan.items {
        out += &format!(
            "{} {} {} {} {} {}: {}\n",
            i.entry.label,
            i.sink,
            i.entry.snapshot_at.strftime("%Y-%m-%d %H:%M:%S"),
            i.entry.tag.as_deref().unwrap_or("-"),
            i.entry.size,
            i.decision.action(),
            i.decision.reason,
        );
    }
    for s in &plan.skipped {
        out += &format!("sink {} left untouched: {}\n", s.sink, s.reason);
    }
    out
}

#[test]
fn dry_run_decisions() {
    let (local, azure, cold) = fleet();
    let sinks: [&dyn Sink; 3] = [&local, &azure, &cold];
    let before: Vec<_> = [&local, &azure, &cold].map(|s| objects(s.inner())).into();
    let plan = prune::plan(&sinks, &[], now(), &Retention::default());
    insta::assert_snapshot!(decisions(&plan));
    let after: Vec<_> = [&local, &azure, &cold].map(|s| objects(s.inner())).into();
    assert_eq!(before, after, "planning changed a sink");
}

#[test]
fn prune_deletes_exactly_the_plan_and_records_it() {
    let (local, azure, cold) = fleet();
    let sinks: [&dyn Sink; 3] = [&local, &azure, &cold];
    let placed = [&local, &azure, &cold];
    let before: Vec<BTreeSet<String>> = placed.iter().map(|s| objects(s.inner())).collect();
    let plan = prune::plan(&sinks, &[], now(), &Retention::default());
    assert!(plan.delete_count() > 0);
    assert!(plan.skipped.is_empty());

    let report = prune::apply(&plan, &sinks);
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.deleted_count(), plan.delete_count());
    assert_eq!(report.bytes(), plan.reclaimed_bytes());

    for (i, sink) in placed.iter().enumerate() {
        let name = sink.name();
        let planned: BTreeSet<String> = plan
            .deletions()
            .filter(|p| p.sink == name)
            .flat_map(|p| [p.entry.key.clone(), p.entry.sidecar_key.clone()])
            .collect();
        let after = objects(sink.inner());
        let removed: BTreeSet<String> = before[i].difference(&after).cloned().collect();
        let added: Vec<String> = after.difference(&before[i]).cloned().collect();
        assert_eq!(removed, planned, "sink {name}: deleted something else");
        let sr = report.sinks.iter().find(|s| s.sink == name);
        if planned.is_empty() {
            assert!(added.is_empty() && sr.is_none(), "sink {name} touched");
            continue;
        }
        // One new manifest, the chain head, recording each deletion.
        let sr = sr.unwrap();
        let (key, head) = sr.manifest.clone().unwrap();
        // The manifest, its sha256sum sidecar and its chain link.
        assert_eq!(
            added,
            vec![
                key.clone(),
                format!("{key}.sha256"),
                backup_core::catalog::append::link_key(Some(&m_previous(*sink, &key)))
            ]
        );
        assert_eq!(manifest::head(*sink).unwrap(), Some(head));
        let m = manifest::Manifest::from_bytes(&key, &get_bytes(*sink, &key).unwrap()).unwrap();
        assert!(m.entries.is_empty());
        let recorded: BTreeMap<&str, &str> = m
            .pruned
            .iter()
            .map(|p| (p.key.as_str(), p.reason.as_str()))
            .collect();
        let expected: BTreeMap<&str, String> = plan
            .deletions()
            .filter(|p| p.sink == name)
            .map(|p| (p.entry.key.as_str(), p.decision.reason.to_string()))
            .collect();
        assert_eq!(recorded.len(), expected.len());
        for (k, r) in &expected {
            assert_eq!(recorded.get(k).copied(), Some(r.as_str()));
        }
        assert_chain_whole(*sink);
        // The catalog no longer lists them; everything it lists still exists.
        let (stored, _) = manifest::read_all(*sink).unwrap();
        for l in manifest::listed(*sink, &stored) {
            assert!(!planned.contains(&l.entry.key));
            assert!(after.contains(&l.entry.key) && after.contains(&l.entry.sidecar_key));
        }
    }
    // The phase seal and the stale database's newest backup survive.
    assert!(
        objects(cold.inner())
            .iter()
            .any(|k| k.starts_with("colibri-phase1"))
    );
    assert!(
        objects(local.inner())
            .iter()
            .any(|k| k.starts_with("colibri-phase1"))
    );
    let stale: Vec<_> = plan
        .items
        .iter()
        .filter(|i| i.entry.label == "mission-control")
        .collect();
    assert_eq!(stale.iter().filter(|i| i.decision.keep).count(), 1);
    assert_eq!(
        stale[0].decision.reason.to_string(),
        "newest verified backup of mission-control"
    );

    let again = prune::plan(&sinks, &[], now(), &Retention::default());
    assert_eq!(again.delete_count(), 0, "{again:?}");
    assert_eq!(again.items.len(), plan.keep_count());
    let report = prune::apply(&again, &sinks);
    assert!(report.sinks.is_empty(), "second apply wrote something");
}

#[test]
fn label_filter_leaves_other_databases_alone() {
    let (local, azure, cold) = fleet();
    let sinks: [&dyn Sink; 3] = [&local, &azure, &cold];
    let plan = prune::plan(
        &sinks,
        &["mission-control".to_string()],
        now(),
        &Retention::default(),
    );
    assert!(
        plan.items
            .iter()
            .all(|i| i.entry.label == "mission-control")
    );
    assert_eq!(plan.delete_count(), 2);
    let colibri_before: Vec<_> = objects(local.inner()).into_iter().collect();
    prune::apply(&plan, &sinks);
    assert_eq!(
        objects(local.inner()).into_iter().collect::<Vec<_>>(),
        colibri_before
    );
}

#[test]
fn overwritten_key_is_not_deleted_under_a_kept_snapshot() {
    // An overwriting template (`{date}/{label}.db.gz`): two runs of one
    // day share the key; the older entry must not take the newer's object.
    let azure = placed("azure", Placement::Remote);
    let key = "2026-01-10/app.db.gz";
    store(&azure, "app", ago(50 * DAY + HOUR), None, key);
    store(&azure, "app", ago(50 * DAY), None, key);
    let sinks: [&dyn Sink; 1] = [&azure];
    let plan = prune::plan(&sinks, &[], now(), &Retention::default());
    assert_eq!(plan.delete_count(), 0, "{}", decisions(&plan));
    assert!(
        plan.items
            .iter()
            .any(|i| i.decision.reason.to_string().contains("same key"))
    );
}

#[test]
fn unreadable_catalog_leaves_the_sink_untouched() {
    let local = placed("local", Placement::Local);
    for k in 0..5 {
        backup(&local, "app", ago(60 * DAY + k * DAY), None);
    }
    local
        .put("manifests/zzz-broken.json", b"{ not json")
        .unwrap();
    let sinks: [&dyn Sink; 1] = [&local];
    let before = objects(local.inner());
    let plan = prune::plan(&sinks, &[], now(), &Retention::default());
    assert_eq!(plan.skipped.len(), 1);
    assert!(plan.items.is_empty());
    assert!(decisions(&plan).contains("left untouched"));
    prune::apply(&plan, &sinks);
    assert_eq!(objects(local.inner()), before);
}

#[test]
fn prune_manifest_heads_the_chain_even_with_a_clock_behind() {
    // Backups stamped in the future (another host's clock): the prune's
    // manifest must still sort last, or the next run would fork the chain.
    let local = placed("local", Placement::Local);
    let future = Timestamp::from_second(Timestamp::now().as_second() + 400 * DAY).unwrap();
    for k in (0..4).rev() {
        backup(
            &local,
            "app",
            Timestamp::from_second(future.as_second() - k * 60 * DAY).unwrap(),
            None,
        );
    }
    let sinks: [&dyn Sink; 1] = [&local];
    let plan = prune::plan(&sinks, &[], future, &Retention::default());
    assert_eq!(plan.delete_count(), 3);
    let report = prune::apply(&plan, &sinks);
    assert!(report.ok(), "{report:?}");
    assert_chain_whole(&local);
    // The next backup chains onto the prune manifest.
    backup(
        &local,
        "app",
        Timestamp::from_second(future.as_second() + DAY).unwrap(),
        Some("r1"),
    );
    assert_chain_whole(&local);
}

// ---- property: apply then plan again deletes nothing -----------------------

fn run_strategy() -> impl Strategy<Value = Vec<(usize, usize, i64, Option<String>)>> {
    let tag = prop_oneof![
        3 => Just(None),
        3 => (1u32..8).prop_map(|n| Some(format!("r{n}"))),
        1 => Just(Some("premigrate".to_string())),
        1 => (1u32..3).prop_map(|n| Some(format!("phase{n}"))),
    ];
    prop::collection::vec((0usize..2, 0usize..3, 0i64..(70 * 24), tag), 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn second_prune_deletes_nothing(runs in run_strategy(), hot in 0u32..9, warm in 0u32..40, keep_daily in 0u32..4) {
        let sinks = [
            placed("local", Placement::Local),
            placed("azure", Placement::Remote),
            placed("cold", Placement::Cold),
        ];
        let mut used = BTreeSet::new();
        let mut runs = runs;
        // Oldest first, as a real history is written.
        runs.sort_by_key(|r| std::cmp::Reverse(r.2));
        for (label, sink, hours, tag) in runs {
            let at = ago(hours * HOUR);
            // One run per sink and time: keys and run ids are unique.
            if used.insert((sink, hours)) {
                backup(&sinks[sink], ["app", "mission-control"][label], at, tag.as_deref());
            }
        }
        let dyns: Vec<&dyn Sink> = sinks.iter().map(|s| s as &dyn Sink).collect();
        let policy = Retention { hot_days: hot, warm_days: warm, keep_daily, ..Retention::default() };
        let plan = prune::plan(&dyns, &[], now(), &policy);
        let report = prune::apply(&plan, &dyns);
        prop_assert!(report.ok());
        prop_assert_eq!(report.deleted_count(), plan.delete_count());
        let again = prune::plan(&dyns, &[], now(), &policy);
        prop_assert_eq!(again.delete_count(), 0, "{}", decisions(&again));
        prop_assert_eq!(again.items.len(), plan.keep_count());
        for s in &sinks {
            assert_chain_whole(s);
        }
    }
}

/// Store a backup of `label` taken by `host` (an entry naming its machine).
fn backup_by(sink: &dyn Sink, host: &str, label: &str, at: Timestamp) -> Entry {
    let key = format!("{label}-{host}-{}.db.zst", at.strftime("%Y%m%d-%H%M%S"));
    let body = format!("{host} {label} {at}").into_bytes();
    let sha = Sha256::hex_of(&body);
    sink.put(&key, &body).unwrap();
    let sidecar_key = format!("{key}.sha256");
    sink.put(&sidecar_key, format!("{sha}  {key}\n").as_bytes())
        .unwrap();
    let entry = Entry {
        host: Some(host.into()),
        key,
        sidecar_key,
        sha256: sha.clone(),
        db_sha256: sha,
        ..store(
            &MemorySink::new("scratch"),
            label,
            at,
            None,
            "unused.db.zst",
        )
    };
    let run_id = manifest::new_run_id(at);
    catalog::append::write_manifest(sink, &run_id, at, at, vec![entry.clone()], vec![]).unwrap();
    entry
}

/// Two hosts share a sink and a label: `keep_last` counts each host's runs
/// apart, and a host's prune never deletes what the other wrote.
#[test]
fn hosts_sharing_a_sink_each_keep_their_own_runs() {
    let sink = MemorySink::new("local");
    for k in (0..6).rev() {
        backup_by(&sink, "web-1", "app", ago(k * HOUR + 60));
        if k < 2 {
            backup_by(&sink, "web-2", "app", ago(k * HOUR));
        }
    }
    let dyns: [&dyn Sink; 1] = [&sink];
    let policy = Retention {
        hot_days: 0,
        warm_days: 0,
        keep_last: 3,
        ..Retention::default()
    };
    let by = |plan: &prune::PrunePlan, host: &str, keep: bool| {
        plan.items
            .iter()
            .filter(|i| i.entry.host.as_deref() == Some(host) && i.decision.keep == keep)
            .count()
    };

    // The whole sink: each source evaluated on its own.
    let all = prune::plan(&dyns, &[], now(), &policy);
    assert_eq!((by(&all, "web-1", true), by(&all, "web-1", false)), (3, 3));
    assert_eq!((by(&all, "web-2", true), by(&all, "web-2", false)), (2, 0));

    // web-2's prune with keep_last = 1 plans only web-2's runs.
    let strict = Retention {
        keep_last: 1,
        ..policy.clone()
    };
    let theirs = prune::plan_per_label(&dyns, &[], Some("web-2"), now(), &strict, &|_| {
        strict.clone()
    });
    assert_eq!(by(&theirs, "web-1", true) + by(&theirs, "web-1", false), 0);
    assert_eq!(
        (by(&theirs, "web-2", true), by(&theirs, "web-2", false)),
        (1, 1)
    );
    let report = prune::apply(&theirs, &dyns);
    assert!(report.ok());
    let (listed, _) = manifest::view::collect(&dyns);
    let web1 = listed
        .iter()
        .filter(|l| l.entry.host.as_deref() == Some("web-1"));
    assert_eq!(web1.count(), 6, "web-2's prune touched web-1's runs");
}
