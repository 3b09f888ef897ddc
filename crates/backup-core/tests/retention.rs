//! The retention policy as a pure function: keep / delete tables over
//! generated timelines (insta) and the invariants any timeline must keep
//! (proptest).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use backup_core::Retention;
use backup_core::jiff::Timestamp;
use backup_core::retention::{Backup, Decision, evaluate, is_phase_tag};
use backup_core::sink::Placement;
use proptest::prelude::*;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

fn now() -> Timestamp {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

fn ago(secs: i64) -> Timestamp {
    Timestamp::from_second(now().as_second() - secs).unwrap()
}

fn backup(
    label: &str,
    sink: &str,
    placement: Placement,
    at: Timestamp,
    tag: Option<&str>,
) -> Backup {
    Backup {
        id: format!("{label}-{}", at.as_second()),
        label: label.into(),
        sink: sink.into(),
        placement,
        at,
        tag: tag.map(str::to_string),
        verified: true,
    }
}

/// 60 days of 4-hourly backups of `label` in sink `local`, oldest first; with
/// `rounds`, every second one (every 8 hours) is an end-of-round snapshot
/// `r1`, `r2`, … and a phase seal `phase1` is taken on day 20, kept locally
/// and copied to the cold sink.
fn timeline(label: &str, rounds: bool) -> Vec<Backup> {
    let start = now().as_second() - 60 * DAY;
    let mut out = Vec::new();
    let mut round = 0;
    for k in 0..(60 * 6) {
        let at = Timestamp::from_second(start + k * 4 * HOUR).unwrap();
        let tag = if rounds && k % 2 == 1 {
            round += 1;
            Some(format!("r{round}"))
        } else {
            None
        };
        out.push(backup(label, "local", Placement::Local, at, tag.as_deref()));
    }
    if rounds {
        let seal = Timestamp::from_second(start + 20 * DAY + 10 * HOUR).unwrap();
        out.push(backup(
            label,
            "local",
            Placement::Local,
            seal,
            Some("phase1"),
        ));
        out.push(backup(label, "cold", Placement::Cold, seal, Some("phase1")));
    }
    out
}

/// One line per snapshot, by sink and newest first, then a summary.
fn table(snaps: &[Backup], decisions: &[Decision]) -> String {
    let mut rows: Vec<(&Backup, &Decision)> = snaps.iter().zip(decisions).collect();
    rows.sort_by(|a, b| {
        (&a.0.label, &a.0.sink)
            .cmp(&(&b.0.label, &b.0.sink))
            .then(b.0.at.cmp(&a.0.at))
    });
    let mut s = String::new();
    for (b, d) in &rows {
        writeln!(
            s,
            "{:<15} {:<5} {}  {:<7} {:<6} {}{}",
            b.label,
            b.sink,
            b.at.strftime("%Y-%m-%d %H:%M"),
            b.tag.as_deref().unwrap_or("-"),
            d.action(),
            d.reason,
            if b.verified {
                ""
            } else {
                "  [failed verification]"
            }
        )
        .unwrap();
    }
    let kept = decisions.iter().filter(|d| d.keep).count();
    writeln!(s, "keep {kept}, delete {}", decisions.len() - kept).unwrap();
    s
}

#[test]
fn tagged_timeline_with_phase_seal() {
    let snaps = timeline("colibri", true);
    let d = evaluate(&snaps, now(), &Retention::default());
    insta::assert_snapshot!(table(&snaps, &d));
}

#[test]
fn untagged_timeline() {
    let snaps = timeline("mission-control", false);
    let d = evaluate(&snaps, now(), &Retention::default());
    insta::assert_snapshot!(table(&snaps, &d));
}

#[test]
fn newest_snapshot_failed_verification() {
    // A database whose backups stopped 40 days ago, the last one failed
    // its check: only the newest *verified* one survives the expiry.
    let mut snaps: Vec<Backup> = (0..12)
        .map(|k| {
            backup(
                "mission-control",
                "azure",
                Placement::Remote,
                ago(40 * DAY + k * 4 * HOUR),
                None,
            )
        })
        .collect();
    snaps[0].verified = false;
    // A live database whose newest failed: hot keeps both, the newest
    // verified is among them.
    let live: Vec<Backup> = (0..10)
        .map(|k| {
            let mut b = backup(
                "colibri",
                "local",
                Placement::Local,
                ago(k * DAY + HOUR),
                None,
            );
            b.verified = k != 0 && k != 8;
            b
        })
        .collect();
    snaps.extend(live);
    let d = evaluate(&snaps, now(), &Retention::default());
    insta::assert_snapshot!(table(&snaps, &d));
}

#[test]
fn count_rules_add_to_the_tiers() {
    let snaps = timeline("colibri", false);
    let policy = Retention {
        keep_last: 2,
        keep_weekly: 6,
        keep_monthly: 3,
        ..Retention::default()
    };
    let d = evaluate(&snaps, now(), &policy);
    let kept_by = |p: &str| {
        d.iter()
            .filter(|d| d.keep && d.reason.to_string().starts_with(p))
            .count()
    };
    // The newest two are hot; weekly and monthly reach past warm_days.
    assert_eq!(kept_by("keep_last"), 0);
    assert!(kept_by("keep_weekly") >= 1, "{}", table(&snaps, &d));
    assert_eq!(kept_by("keep_monthly"), 1, "{}", table(&snaps, &d));
    let base = evaluate(&snaps, now(), &Retention::default());
    for (with, without) in d.iter().zip(&base) {
        assert!(
            with.keep || !without.keep,
            "count rules never remove a keep"
        );
    }
}

#[test]
fn premigrate_kept_for_its_own_time() {
    let policy = Retention {
        premigrate_days: 45,
        ..Retention::default()
    };
    let snaps = [
        backup("app", "local", Placement::Local, ago(HOUR), None),
        backup(
            "app",
            "local",
            Placement::Local,
            ago(40 * DAY),
            Some("premigrate"),
        ),
        backup(
            "app",
            "local",
            Placement::Local,
            ago(50 * DAY),
            Some("premigrate"),
        ),
    ];
    let d = evaluate(&snaps, now(), &policy);
    assert_eq!(d[1].reason.to_string(), "premigrate: younger than 45 days");
    assert!(d[1].keep);
    assert!(!d[2].keep);
    assert_eq!(d[2].reason.to_string(), "premigrate: older than 45 days");
}

// ---- one rule at a time ----------------------------------------------------

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn reasons(d: &[Decision]) -> Vec<(bool, String)> {
    d.iter().map(|d| (d.keep, d.reason.to_string())).collect()
}

fn kept(reason: &str) -> (bool, String) {
    (true, reason.to_string())
}

fn gone(reason: &str) -> (bool, String) {
    (false, reason.to_string())
}

#[test]
fn cold_seals_keep_one_verified_copy_per_seal() {
    let cold = |at, tag, verified| {
        let mut b = backup("app", "cold", Placement::Cold, at, tag);
        b.verified = verified;
        b
    };
    let snaps = [
        cold(ago(40 * DAY), Some("phase1"), true),
        // Newer, but failed its check: the older verified copy wins.
        cold(ago(35 * DAY), Some("phase1"), false),
        cold(ago(50 * DAY), Some("phase2"), false),
        // In the cold tier an untagged snapshot is a seal of its own time.
        cold(at("2026-01-10T00:00:00Z"), None, true),
    ];
    let d = evaluate(&snaps, now(), &Retention::default());
    assert_eq!(
        reasons(&d),
        [
            kept("cold: phase seal phase1, kept forever"),
            gone("cold: a newer snapshot holds phase seal phase1"),
            kept("cold: phase seal phase2, kept forever (no verified copy exists)"),
            kept("cold: phase seal untagged 2026-01-10 00:00:00, kept forever"),
        ]
    );
}

#[test]
fn keep_within_keeps_the_recent_past_verified_or_not() {
    let policy = Retention {
        hot_days: 0,
        warm_days: 0,
        keep_within: Some(std::time::Duration::from_secs(2 * 3600)),
        ..Retention::default()
    };
    let mut failed = backup("app", "local", Placement::Local, ago(HOUR), None);
    failed.verified = false;
    let snaps = [
        failed,
        backup("app", "local", Placement::Local, ago(3 * HOUR), None),
        backup("app", "local", Placement::Local, ago(4 * HOUR), None),
    ];
    let d = evaluate(&snaps, now(), &policy);
    assert_eq!(
        reasons(&d),
        [
            kept("keep_within: younger than 2h"),
            kept("newest verified backup of app"),
            gone("expired: older than 0 days"),
        ]
    );
}

/// A daemon at one run a second for two hours, pruned to every second of
/// the last ten minutes and one a minute for the hour.
#[test]
fn keep_minutely_thins_a_second_by_second_history_to_a_minute() {
    let policy = Retention {
        hot_days: 0,
        warm_days: 0,
        keep_within: Some(std::time::Duration::from_secs(600)),
        keep_minutely: 60,
        ..Retention::default()
    };
    policy.validate().unwrap();
    let snaps: Vec<Backup> = (1..=2 * HOUR)
        .map(|s| backup("app", "local", Placement::Local, ago(s), None))
        .collect();
    let d = evaluate(&snaps, now(), &policy);
    let age = |b: &Backup| now().as_second() - b.at.as_second();
    for (b, d) in snaps.iter().zip(&d) {
        if age(b) < 600 {
            assert!(d.keep, "{}s old: {}", age(b), d.reason);
        }
    }
    let older: Vec<(i64, String)> = snaps
        .iter()
        .zip(&d)
        .filter(|(b, d)| d.keep && age(b) >= 600)
        .map(|(b, d)| (age(b), d.reason.to_string()))
        .collect();
    // Minutes 23:49 back to 23:00 (23:50 to 23:59 hold younger snapshots,
    // which take their buckets), each by its newest second.
    let expected: Vec<i64> = (0..50).map(|m| 601 + 60 * m).collect();
    assert_eq!(older.iter().map(|o| o.0).collect::<Vec<_>>(), expected);
    assert!(older[0].1.starts_with("keep_minutely"), "{}", older[0].1);
    assert_eq!(d.iter().filter(|d| d.keep).count(), 599 + 50);
}

#[test]
fn warm_keeps_the_newest_verified_per_round_and_per_day() {
    let local = |at, tag, verified| {
        let mut b = backup("app", "local", Placement::Local, at, tag);
        b.verified = verified;
        b
    };
    let snaps = [
        local(ago(HOUR), None, true),
        // Day 2026-02-19: the newer one failed, the older verified one stays.
        local(ago(10 * DAY - HOUR), None, true),
        local(ago(10 * DAY - 2 * HOUR), None, false),
        // Round r5 spans two days: one bucket.
        local(ago(12 * DAY), Some("r5"), true),
        local(ago(11 * DAY), Some("r5"), true),
        // A bucket with no verified snapshot keeps nothing.
        local(ago(20 * DAY), None, false),
    ];
    let d = evaluate(&snaps, now(), &Retention::default());
    assert_eq!(
        reasons(&d),
        [
            kept("hot: younger than 7 days"),
            kept("warm: newest of day 2026-02-19"),
            gone("failed verification, past the hot window"),
            gone("warm: a newer snapshot holds round r5"),
            kept("warm: newest of round r5"),
            gone("failed verification, past the hot window"),
        ]
    );
}

#[test]
fn weekly_count_uses_iso_weeks_across_the_new_year() {
    let policy = Retention {
        hot_days: 0,
        warm_days: 0,
        keep_weekly: 2,
        ..Retention::default()
    };
    let snaps = [
        // Friday and Monday of 2026-W01, which starts in December.
        backup(
            "app",
            "local",
            Placement::Local,
            at("2026-01-02T00:00:00Z"),
            None,
        ),
        backup(
            "app",
            "local",
            Placement::Local,
            at("2025-12-29T12:00:00Z"),
            None,
        ),
        // Sunday of 2025-W52, then 2025-W51 (beyond the two weeks kept).
        backup(
            "app",
            "local",
            Placement::Local,
            at("2025-12-28T00:00:00Z"),
            None,
        ),
        backup(
            "app",
            "local",
            Placement::Local,
            at("2025-12-20T00:00:00Z"),
            None,
        ),
    ];
    let d = evaluate(&snaps, now(), &policy);
    assert_eq!(
        reasons(&d),
        [
            kept("keep_weekly: newest of 2026-W01"),
            gone("expired: older than 0 days"),
            kept("keep_weekly: newest of 2025-W52"),
            gone("expired: older than 0 days"),
        ]
    );
}

#[test]
fn count_rules_skip_unverified_snapshots() {
    let policy = Retention {
        hot_days: 0,
        warm_days: 0,
        keep_last: 1,
        keep_daily: 1,
        ..Retention::default()
    };
    let mut failed = backup("app", "local", Placement::Local, ago(HOUR), None);
    failed.verified = false;
    let snaps = [
        failed,
        backup("app", "local", Placement::Local, ago(2 * HOUR), None),
        backup("app", "local", Placement::Local, ago(DAY + HOUR), None),
    ];
    let d = evaluate(&snaps, now(), &policy);
    assert_eq!(
        reasons(&d),
        [
            gone("failed verification, past the hot window"),
            kept("keep_last"),
            gone("expired: older than 0 days"),
        ]
    );
}

// ---- properties -------------------------------------------------------------

const SINKS: [(&str, Placement); 3] = [
    ("local", Placement::Local),
    ("azure", Placement::Remote),
    ("cold", Placement::Cold),
];

fn tag_strategy() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        4 => (1u32..12).prop_map(|n| Some(format!("r{n}"))),
        1 => Just(Some("session".to_string())),
        1 => Just(Some("premigrate".to_string())),
        1 => (1u32..4).prop_map(|n| Some(format!("phase{n}"))),
    ]
}

fn snapshot_strategy() -> impl Strategy<Value = Backup> {
    (
        0usize..2,
        0usize..SINKS.len(),
        // Up to 100 days back, and a little into the future (clock skew).
        -120i64..(100 * 24 * 60),
        tag_strategy(),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(label, sink, minutes, tag, verified)| Backup {
            id: String::new(),
            label: ["app", "mission-control"][label].into(),
            sink: SINKS[sink].0.into(),
            placement: SINKS[sink].1,
            at: ago(minutes * 60),
            tag,
            verified,
        })
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 1 => 1u32..6]
}

fn policy_strategy() -> impl Strategy<Value = Retention> {
    (
        0u32..10,
        0u32..45,
        0u32..45,
        (count(), count(), count(), count(), count(), count()),
        prop::option::of(1u64..72 * 60),
    )
        .prop_map(
            |(hot_days, warm_days, premigrate_days, (l, mi, h, d, w, m), within)| Retention {
                hot_days,
                warm_days,
                premigrate_days,
                keep_last: l,
                keep_minutely: mi,
                keep_hourly: h,
                keep_daily: d,
                keep_weekly: w,
                keep_monthly: m,
                keep_within: within.map(|mins| std::time::Duration::from_secs(mins * 60)),
                ..Retention::default()
            },
        )
}

fn timeline_strategy() -> impl Strategy<Value = Vec<Backup>> {
    prop::collection::vec(snapshot_strategy(), 0..80).prop_map(|mut v| {
        for (i, b) in v.iter_mut().enumerate() {
            b.id = format!("s{i}");
        }
        v
    })
}

type Group<'a> = BTreeMap<(&'a str, &'a str), Vec<usize>>;

fn groups(snaps: &[Backup]) -> Group<'_> {
    let mut g: Group<'_> = BTreeMap::new();
    for (i, s) in snaps.iter().enumerate() {
        g.entry((&s.label, &s.sink)).or_default().push(i);
    }
    g
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn newest_verified_per_database_survives(snaps in timeline_strategy(), policy in policy_strategy()) {
        let d = evaluate(&snaps, now(), &policy);
        prop_assert_eq!(d.len(), snaps.len());
        for members in groups(&snaps).values() {
            let newest = members.iter().filter(|&&i| snaps[i].verified).map(|&i| snaps[i].at).max();
            if let Some(at) = newest {
                prop_assert!(
                    members.iter().any(|&i| snaps[i].verified && snaps[i].at == at && d[i].keep),
                    "newest verified snapshot deleted"
                );
            }
        }
    }

    #[test]
    fn every_phase_seal_survives(snaps in timeline_strategy(), policy in policy_strategy()) {
        let d = evaluate(&snaps, now(), &policy);
        // (label, sink, seal) -> members
        let mut seals: BTreeMap<(&str, &str, String), Vec<usize>> = BTreeMap::new();
        for (i, s) in snaps.iter().enumerate() {
            let seal = match (&s.tag, s.placement) {
                (Some(t), _) if is_phase_tag(t) => t.clone(),
                (Some(t), Placement::Cold) => t.clone(),
                (None, Placement::Cold) => s.at.as_second().to_string(),
                _ => continue,
            };
            seals.entry((&s.label, &s.sink, seal)).or_default().push(i);
        }
        for (seal, members) in &seals {
            let any_verified = members.iter().any(|&i| snaps[i].verified);
            prop_assert!(
                members.iter().any(|&i| d[i].keep && (snaps[i].verified || !any_verified)),
                "seal {:?} lost", seal
            );
        }
    }

    #[test]
    fn pruning_twice_deletes_nothing_more(snaps in timeline_strategy(), policy in policy_strategy()) {
        let d = evaluate(&snaps, now(), &policy);
        let kept: Vec<Backup> = snaps.iter().zip(&d).filter(|(_, d)| d.keep).map(|(s, _)| s.clone()).collect();
        let again = evaluate(&kept, now(), &policy);
        for (s, d) in kept.iter().zip(&again) {
            prop_assert!(d.keep, "second pass deletes {} ({:?}): {}", s.id, s.tag, d.reason);
        }
    }

    #[test]
    fn hot_snapshots_all_survive(snaps in timeline_strategy(), policy in policy_strategy()) {
        let d = evaluate(&snaps, now(), &policy);
        for (s, d) in snaps.iter().zip(&d) {
            if now().as_second() - s.at.as_second() < i64::from(policy.hot_days) * DAY {
                prop_assert!(d.keep, "hot snapshot {} deleted: {}", s.id, d.reason);
            }
        }
    }

    #[test]
    fn count_rules_only_add(snaps in timeline_strategy(), policy in policy_strategy()) {
        let tiers_only = Retention { keep_last: 0, keep_minutely: 0, keep_hourly: 0, keep_daily: 0, keep_weekly: 0, keep_monthly: 0, ..policy.clone() };
        let with = evaluate(&snaps, now(), &policy);
        let without = evaluate(&snaps, now(), &tiers_only);
        for (a, b) in with.iter().zip(&without) {
            prop_assert!(a.keep || !b.keep);
        }
    }
}
