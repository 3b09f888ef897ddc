//! The retention policy as a pure function: snapshots, a clock and a
//! [`Retention`] in, one keep / delete [`Decision`] with a human reason per
//! snapshot out. It knows nothing of sinks, manifests or files;
//! [`crate::prune`] feeds it the catalog and carries out its decisions.
//!
//! # The rules
//!
//! Snapshots are evaluated in groups of one database (label) in one sink:
//! every sink, local or Azure, keeps its own history under the same rules.
//! Ages are `now - snapshot time`; calendar buckets (days, weeks, months)
//! are UTC. A snapshot is **kept when any rule keeps it** (the rules are a
//! union), and deleted otherwise:
//!
//! 1. **Newest verified.** The newest verified snapshot of a group is never
//!    deleted, whatever the other rules say.
//! 2. **Cold.** A phase seal (tag `phase<N>`) is kept forever, one per seal:
//!    if a seal was taken twice, the newest verified copy (else the newest)
//!    is the one kept. In a sink with [`Placement::Cold`] every snapshot is a
//!    seal: it is named by its tag, or by its own time when untagged.
//! 3. **Hot.** Every snapshot younger than `hot_days` is kept, verified or
//!    not. **Within.** The same for `keep_within` (`"2h"`), in any unit: a
//!    one-minute schedule sets `hot_days = 0` and `keep_within`, and lets
//!    the warm tier and the count rules thin the rest.
//! 4. **Pre-migration.** A `premigrate` snapshot is kept until it is
//!    `premigrate_days` old. It never takes a warm slot.
//! 5. **Warm.** From `hot_days` to `warm_days`, the newest verified snapshot
//!    of each round (tag `r<N>`) is kept; every other snapshot (untagged,
//!    `session`, any other tag) counts in its UTC day, and the newest verified
//!    one per day is kept. A bucket with no verified snapshot keeps nothing.
//! 6. **Counts** (restic-style, all off by default). `keep_last = n` keeps
//!    the newest n verified snapshots; `keep_minutely`, `keep_hourly`,
//!    `keep_daily`, `keep_weekly` (ISO weeks) and `keep_monthly = n` each
//!    keep the newest verified snapshot of each of the newest n minutes /
//!    hours / days / weeks / months that have one. Like restic, each count
//!    rule is applied on its own over the whole group, regardless of age or
//!    tier.
//!
//! Anything else is deleted: older than `warm_days` and not kept by a rule
//! above, superseded by a newer snapshot of its round or day, a duplicate of
//! a newer seal, or a failed (unverified) snapshot past the hot window.
//!
//! Because every rule picks "the newest (verified) of a bucket" or depends
//! on age alone, applying the decisions and evaluating again at the same
//! time deletes nothing more.
//!
//! ```
//! use backup_core::retention::Retention;
//! use backup_core::retention::{Backup, evaluate};
//! use backup_core::sink::Placement;
//! use jiff::Timestamp;
//!
//! let now: Timestamp = "2026-03-01T00:00:00Z".parse()?;
//! let day = |d: i64| Timestamp::from_second(now.as_second() - d * 86_400).unwrap();
//! let snap = |id: &str, at, tag: Option<&str>| Backup {
//!     id: id.into(),
//!     label: "app".into(),
//!     sink: "local".into(),
//!     placement: Placement::Local,
//!     at,
//!     tag: tag.map(str::to_string),
//!     verified: true,
//! };
//! let snaps = [
//!     snap("a", day(1), None),
//!     snap("b", day(40), Some("phase1")),
//!     snap("c", day(45), Some("r12")),
//! ];
//! let d = evaluate(&snaps, now, &Retention::default());
//! assert!(d[0].keep && d[0].reason.to_string() == "hot: younger than 7 days");
//! assert!(d[1].keep && d[1].reason.to_string() == "cold: phase seal phase1, kept forever");
//! assert!(!d[2].keep && d[2].reason.to_string() == "expired: older than 30 days");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::sink::Placement;

/// Retention policy settings, the `[retention]` table. The rules and how
/// they combine are in this module; `prune` applies them per
/// database and sink. Every field is optional; zero turns a rule off.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Hot tier: keep every snapshot younger than this many days (default 7).
    pub hot_days: u32,
    /// Warm tier: from `hot_days` until this many days (default 30), keep
    /// the newest verified snapshot of each round (tag `r<N>`) and, for other
    /// snapshots, of each UTC day. Older snapshots go unless another rule
    /// keeps them. Phase seals (`phase<N>`, or anything in the cold tier)
    /// are kept forever regardless.
    pub warm_days: u32,
    /// Keep `premigrate` snapshots this many days (default 30).
    pub premigrate_days: u32,
    /// restic-style: also keep the newest N verified snapshots.
    pub keep_last: u32,
    /// Also keep the newest verified snapshot of each of the newest N UTC
    /// minutes that have one (restic has no such rule; a daemon running
    /// every second needs one between `keep_within` and `keep_hourly`).
    pub keep_minutely: u32,
    /// restic-style: also keep the newest verified snapshot of each of the
    /// newest N UTC hours that have one.
    pub keep_hourly: u32,
    /// restic-style: the same per UTC day, for N days.
    pub keep_daily: u32,
    /// restic-style: the same per ISO week, for N weeks.
    pub keep_weekly: u32,
    /// restic-style: the same per calendar month (UTC), for N months.
    pub keep_monthly: u32,
    /// Keep every snapshot younger than this (`"2h"`), verified or not:
    /// with a one-minute schedule, the recent past at full resolution while
    /// `hot_days = 0` and the count rules thin the rest.
    #[serde(deserialize_with = "crate::duration::de_opt")]
    pub keep_within: Option<Duration>,
    /// How long the packs and page indexes of pruned incremental snapshots
    /// stay after no listed snapshot needs them (default `"24h"`): longer
    /// than any backup or restore takes, so a run that planned to read a
    /// pack never finds it gone. See [`crate::prune`].
    #[serde(deserialize_with = "crate::duration::de")]
    pub pack_grace: Duration,
    /// What happens to backups `catalog adopt` recorded: kept whatever the
    /// rules say (the default), or thinned by them like our own.
    pub adopted: AdoptedRetention,
}

/// `[retention] adopted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdoptedRetention {
    /// Never deleted by `prune`.
    #[default]
    Keep,
    /// Under the retention rules, as our own backups are.
    Policy,
}

/// Default [`Retention::pack_grace`].
pub(crate) const PACK_GRACE: Duration = Duration::from_secs(24 * 3600);

impl Default for Retention {
    fn default() -> Self {
        Self {
            hot_days: 7,
            warm_days: 30,
            premigrate_days: 30,
            keep_last: 0,
            keep_minutely: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_within: None,
            pack_grace: PACK_GRACE,
            adopted: AdoptedRetention::Keep,
        }
    }
}

impl Retention {
    /// Refuse settings whose rules contradict each other: the policy would
    /// keep less (or thin less) than it reads as keeping.
    pub fn validate(&self) -> Result<(), RetentionError> {
        // Warm keeps one per round/day *after* hot ends: a hot span longer
        // than the warm one would silently make the warm tier empty.
        if self.warm_days != 0 && self.hot_days > self.warm_days {
            return Err(RetentionError::HotBeyondWarm {
                hot_days: self.hot_days,
                warm_days: self.warm_days,
            });
        }
        // hot_days keeps everything younger anyway: a shorter keep_within
        // would look like it thins snapshots and not do it.
        if let Some(keep_within) = self.keep_within
            && u64::from(self.hot_days) * 86_400 >= keep_within.as_secs()
        {
            return Err(RetentionError::KeepWithinInsideHot {
                keep_within,
                hot_days: self.hot_days,
            });
        }
        Ok(())
    }
}

/// A [`Retention`] whose rules contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// The hot tier outlasts the warm one, leaving the warm tier empty.
    #[error("hot_days = {hot_days} is longer than warm_days = {warm_days}")]
    HotBeyondWarm {
        /// [`Retention::hot_days`].
        hot_days: u32,
        /// [`Retention::warm_days`].
        warm_days: u32,
    },
    /// `keep_within` is no longer than the hot tier, so it keeps nothing more.
    #[error(
        "keep_within = {:?} has no effect while hot_days = {hot_days} keeps every snapshot younger than {hot_days} days",
        crate::duration::human(*keep_within)
    )]
    KeepWithinInsideHot {
        /// [`Retention::keep_within`].
        keep_within: Duration,
        /// [`Retention::hot_days`].
        hot_days: u32,
    },
}

const DAY: i64 = 86_400;

/// One snapshot as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Caller's identifier (an artifact key); only echoed in output.
    pub id: String,
    /// Database label.
    pub label: String,
    /// Sink name: snapshots are evaluated per (label, sink).
    pub sink: String,
    /// Where the sink sits; [`Placement::Cold`] makes every snapshot a seal.
    pub placement: Placement,
    /// When the snapshot was taken.
    pub at: Timestamp,
    /// Trigger tag (`r75`, `session`, `premigrate`, `phase1`), if any.
    pub tag: Option<String>,
    /// It passed its integrity check.
    pub verified: bool,
}

/// A restic-style count rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CountRule {
    /// `keep_last`.
    Last,
    /// `keep_minutely`.
    Minutely,
    /// `keep_hourly`.
    Hourly,
    /// `keep_daily`.
    Daily,
    /// `keep_weekly`.
    Weekly,
    /// `keep_monthly`.
    Monthly,
}

impl CountRule {
    /// The config key.
    pub fn key(self) -> &'static str {
        match self {
            Self::Last => "keep_last",
            Self::Minutely => "keep_minutely",
            Self::Hourly => "keep_hourly",
            Self::Daily => "keep_daily",
            Self::Weekly => "keep_weekly",
            Self::Monthly => "keep_monthly",
        }
    }
}

/// Why a snapshot is kept or deleted. `Display` gives the sentence shown by
/// `prune` and recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Kept: a phase seal (or any snapshot of the cold tier).
    ColdSeal {
        /// Seal name: the tag, or the snapshot time for an untagged cold copy.
        seal: String,
        /// No verified copy of this seal exists; this one is kept anyway.
        unverified: bool,
    },
    /// Kept: younger than `hot_days`.
    Hot {
        /// The setting.
        hot_days: u32,
    },
    /// Kept: younger than `keep_within`.
    Within {
        /// The setting.
        keep_within: Duration,
    },
    /// Kept: a pre-migration snapshot younger than `premigrate_days`.
    Premigrate {
        /// The setting.
        premigrate_days: u32,
    },
    /// Kept: newest verified snapshot of its warm bucket.
    Warm {
        /// `round r75` or `2026-01-03`.
        bucket: Bucket,
    },
    /// Kept by a count rule.
    Count {
        /// Which rule.
        rule: CountRule,
        /// The rule's bucket (`2026-01-03`, `2026-W01`…), empty for `keep_last`.
        bucket: String,
    },
    /// Kept: the newest verified snapshot of the database in this sink,
    /// which no other rule kept.
    NewestVerified {
        /// Database label.
        label: String,
    },
    /// Kept: another kept snapshot is stored under the same artifact key
    /// (an overwriting name template), so deleting this one would delete it.
    /// Set by [`crate::prune`], never by [`evaluate`].
    SharedArtifact,
    /// Kept: a backup another tool made, adopted into the catalog, while
    /// `adopted = "keep"`. Set by [`crate::prune`].
    Adopted,
    /// Deleted: a newer snapshot holds the same seal.
    ColdDuplicate {
        /// Seal name.
        seal: String,
    },
    /// Deleted: a newer verified snapshot holds its warm bucket.
    WarmSuperseded {
        /// The bucket.
        bucket: Bucket,
    },
    /// Deleted: past the hot window and it failed verification.
    Unverified,
    /// Deleted: a pre-migration snapshot older than `premigrate_days`.
    PremigrateExpired {
        /// The setting.
        premigrate_days: u32,
    },
    /// Deleted: older than `warm_days`.
    Expired {
        /// The setting.
        warm_days: u32,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ColdSeal {
                seal,
                unverified: false,
            } => write!(f, "cold: phase seal {seal}, kept forever"),
            Self::ColdSeal {
                seal,
                unverified: true,
            } => write!(
                f,
                "cold: phase seal {seal}, kept forever (no verified copy exists)"
            ),
            Self::Hot { hot_days } => write!(f, "hot: younger than {hot_days} days"),
            Self::Within { keep_within } => write!(
                f,
                "keep_within: younger than {}",
                crate::duration::human(*keep_within)
            ),
            Self::Premigrate { premigrate_days } => {
                write!(f, "premigrate: younger than {premigrate_days} days")
            }
            Self::Warm { bucket } => write!(f, "warm: newest of {bucket}"),
            Self::Count { rule, bucket } if bucket.is_empty() => write!(f, "{}", rule.key()),
            Self::Count { rule, bucket } => write!(f, "{}: newest of {bucket}", rule.key()),
            Self::NewestVerified { label } => write!(f, "newest verified backup of {label}"),
            Self::Adopted => write!(f, "adopted: kept while [retention] adopted = \"keep\""),
            Self::SharedArtifact => {
                write!(f, "shares its artifact with a kept snapshot (same key)")
            }
            Self::ColdDuplicate { seal } => {
                write!(f, "cold: a newer snapshot holds phase seal {seal}")
            }
            Self::WarmSuperseded { bucket } => {
                write!(f, "warm: a newer snapshot holds {bucket}")
            }
            Self::Unverified => write!(f, "failed verification, past the hot window"),
            Self::PremigrateExpired { premigrate_days } => {
                write!(f, "premigrate: older than {premigrate_days} days")
            }
            Self::Expired { warm_days } => write!(f, "expired: older than {warm_days} days"),
        }
    }
}

/// A warm-tier bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bucket {
    /// A round tag (`r75`).
    Round(String),
    /// A UTC day (`2026-01-03`).
    Day(String),
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Round(r) => write!(f, "round {r}"),
            Self::Day(d) => write!(f, "day {d}"),
        }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Keep it (else delete it).
    pub keep: bool,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// `keep` or `delete`.
    pub fn action(&self) -> &'static str {
        if self.keep { "keep" } else { "delete" }
    }
}

/// `r` followed by digits: an end-of-round tag.
///
/// ```
/// use backup_core::retention::is_round_tag;
/// assert!(is_round_tag("r75"));
/// assert!(!is_round_tag("r") && !is_round_tag("rx1") && !is_round_tag("session"));
/// ```
pub fn is_round_tag(tag: &str) -> bool {
    numbered(tag, "r")
}

/// `phase` followed by digits: a phase-seal tag (cold tier).
///
/// ```
/// use backup_core::retention::is_phase_tag;
/// assert!(is_phase_tag("phase1"));
/// assert!(!is_phase_tag("phase") && !is_phase_tag("premigrate"));
/// ```
pub fn is_phase_tag(tag: &str) -> bool {
    numbered(tag, "phase")
}

/// The tag of pre-migration snapshots.
pub(crate) const PREMIGRATE_TAG: &str = "premigrate";

fn numbered(tag: &str, prefix: &str) -> bool {
    tag.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Decide keep / delete for every snapshot; the result is parallel to
/// `snapshots`. See the module doc for the rules.
pub fn evaluate(snapshots: &[Backup], now: Timestamp, policy: &Retention) -> Vec<Decision> {
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        groups
            .entry((s.label.as_str(), s.sink.as_str()))
            .or_default()
            .push(i);
    }
    let mut out: Vec<Option<Decision>> = vec![None; snapshots.len()];
    for members in groups.values() {
        for (i, d) in evaluate_group(snapshots, members, now, policy) {
            out[i] = Some(d);
        }
    }
    out.into_iter()
        .map(|d| d.expect("every snapshot is in a group"))
        .collect()
}

/// The newest member of `members` (ties broken by input order, later wins
/// so that the result does not depend on sorting stability).
fn newest<'a>(snapshots: &[Backup], members: impl IntoIterator<Item = &'a usize>) -> Option<usize> {
    members
        .into_iter()
        .copied()
        .max_by_key(|&i| (snapshots[i].at, i))
}

/// Names the calendar bucket of a snapshot, for the count rules.
type BucketOf = fn(&Backup) -> String;

/// The policy for one (label, sink) group, as a list of rules. Rules run in
/// the order their reasons are most telling: the first rule to keep a
/// snapshot gives its reason.
fn evaluate_group(
    snaps: &[Backup],
    members: &[usize],
    now: Timestamp,
    p: &Retention,
) -> Vec<(usize, Decision)> {
    let mut g = Group::new(snaps, members, now, p);
    g.cold_seals();
    g.hot();
    g.within();
    g.premigrate();
    g.warm();
    let verified = g.verified_newest_first();
    g.keep_last(&verified);
    g.calendar_counts(&verified);
    g.newest_verified(&verified);
    g.decisions()
}

/// One group under evaluation: the rules record what they keep and delete.
struct Group<'a> {
    snaps: &'a [Backup],
    members: &'a [usize],
    now: Timestamp,
    p: &'a Retention,
    /// Kept snapshots; the first reason written wins.
    kept: BTreeMap<usize, Reason>,
    /// Why a snapshot no rule keeps is deleted, when a rule knows better
    /// than "expired".
    deleted: BTreeMap<usize, Reason>,
}

impl<'a> Group<'a> {
    fn new(snaps: &'a [Backup], members: &'a [usize], now: Timestamp, p: &'a Retention) -> Self {
        Self {
            snaps,
            members,
            now,
            p,
            kept: BTreeMap::new(),
            deleted: BTreeMap::new(),
        }
    }

    fn age(&self, i: usize) -> i64 {
        self.now
            .as_second()
            .saturating_sub(self.snaps[i].at.as_second())
    }

    fn younger(&self, i: usize, days: u32) -> bool {
        self.age(i) < i64::from(days) * DAY
    }

    fn tag(&self, i: usize) -> Option<&'a str> {
        self.snaps[i].tag.as_deref()
    }

    fn keep(&mut self, i: usize, r: Reason) {
        self.kept.entry(i).or_insert(r);
    }

    /// Cold: one copy per seal, forever; the newest verified one, else the
    /// newest.
    fn cold_seals(&mut self) {
        let mut seals: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in self.members {
            if let Some(seal) = seal_of(&self.snaps[i]) {
                seals.entry(seal).or_default().push(i);
            }
        }
        for (seal, copies) in seals {
            let verified = newest(
                self.snaps,
                copies.iter().filter(|&&i| self.snaps[i].verified),
            );
            let chosen = verified
                .or_else(|| newest(self.snaps, &copies))
                .expect("non-empty");
            self.keep(
                chosen,
                Reason::ColdSeal {
                    seal: seal.clone(),
                    unverified: verified.is_none(),
                },
            );
            for &i in copies.iter().filter(|&&i| i != chosen) {
                self.deleted
                    .insert(i, Reason::ColdDuplicate { seal: seal.clone() });
            }
        }
    }

    /// Hot: everything younger than `hot_days`.
    fn hot(&mut self) {
        let hot_days = self.p.hot_days;
        for &i in self.members {
            if self.younger(i, hot_days) {
                self.keep(i, Reason::Hot { hot_days });
            }
        }
    }

    /// `keep_within`: like hot, in any unit.
    fn within(&mut self) {
        let Some(keep_within) = self.p.keep_within else {
            return;
        };
        let limit = i64::try_from(keep_within.as_secs()).unwrap_or(i64::MAX);
        for &i in self.members {
            if self.age(i) < limit {
                self.keep(i, Reason::Within { keep_within });
            }
        }
    }

    /// Pre-migration snapshots, for their own time.
    fn premigrate(&mut self) {
        let premigrate_days = self.p.premigrate_days;
        for &i in self.members {
            if self.tag(i) != Some(PREMIGRATE_TAG) {
                continue;
            }
            if self.younger(i, premigrate_days) {
                self.keep(i, Reason::Premigrate { premigrate_days });
            } else {
                self.deleted
                    .entry(i)
                    .or_insert(Reason::PremigrateExpired { premigrate_days });
            }
        }
    }

    /// Warm: the newest verified snapshot per round / per UTC day, from
    /// `hot_days` to `warm_days`; the rest of each bucket is superseded.
    fn warm(&mut self) {
        let mut warm: BTreeMap<Bucket, Vec<usize>> = BTreeMap::new();
        for &i in self.members {
            let eligible = !self.younger(i, self.p.hot_days)
                && self.younger(i, self.p.warm_days)
                && self.tag(i) != Some(PREMIGRATE_TAG)
                && !self.tag(i).is_some_and(is_phase_tag);
            if eligible {
                warm.entry(warm_bucket(&self.snaps[i])).or_default().push(i);
            }
        }
        for (bucket, list) in warm {
            let chosen = newest(self.snaps, list.iter().filter(|&&i| self.snaps[i].verified));
            if let Some(c) = chosen {
                self.keep(
                    c,
                    Reason::Warm {
                        bucket: bucket.clone(),
                    },
                );
            }
            for &i in list.iter().filter(|&&i| Some(i) != chosen) {
                let r = if self.snaps[i].verified {
                    Reason::WarmSuperseded {
                        bucket: bucket.clone(),
                    }
                } else {
                    Reason::Unverified
                };
                self.deleted.entry(i).or_insert(r);
            }
        }
    }

    /// The verified members, newest first: what the count rules pick from.
    fn verified_newest_first(&self) -> Vec<usize> {
        let mut verified: Vec<usize> = self
            .members
            .iter()
            .copied()
            .filter(|&i| self.snaps[i].verified)
            .collect();
        verified.sort_by_key(|&i| std::cmp::Reverse((self.snaps[i].at, i)));
        verified
    }

    /// `keep_last`: the newest n verified snapshots.
    fn keep_last(&mut self, verified: &[usize]) {
        for &i in verified.iter().take(self.p.keep_last as usize) {
            self.keep(
                i,
                Reason::Count {
                    rule: CountRule::Last,
                    bucket: String::new(),
                },
            );
        }
    }

    /// `keep_minutely` … `keep_monthly`: the newest verified snapshot of each
    /// of the newest n calendar buckets that have one.
    fn calendar_counts(&mut self, verified: &[usize]) {
        let rules: [(CountRule, u32, BucketOf); 5] = [
            (CountRule::Minutely, self.p.keep_minutely, minute_bucket),
            (CountRule::Hourly, self.p.keep_hourly, hour_bucket),
            (CountRule::Daily, self.p.keep_daily, day_bucket),
            (CountRule::Weekly, self.p.keep_weekly, week_bucket),
            (CountRule::Monthly, self.p.keep_monthly, month_bucket),
        ];
        for (rule, n, bucket_of) in rules {
            let mut taken = 0;
            let mut last: Option<String> = None;
            // Newest first: the first snapshot of each new bucket is its newest.
            for &i in verified {
                if taken >= n {
                    break;
                }
                let b = bucket_of(&self.snaps[i]);
                if last.as_ref() != Some(&b) {
                    self.keep(
                        i,
                        Reason::Count {
                            rule,
                            bucket: b.clone(),
                        },
                    );
                    taken += 1;
                    last = Some(b);
                }
            }
        }
    }

    /// Never the newest verified one.
    fn newest_verified(&mut self, verified: &[usize]) {
        if let Some(&i) = verified.first() {
            let label = self.snaps[i].label.clone();
            self.keep(i, Reason::NewestVerified { label });
        }
    }

    /// Kept with the first keeper's reason; otherwise deleted with the
    /// reason a rule gave, else as expired (or unverified).
    fn decisions(mut self) -> Vec<(usize, Decision)> {
        self.members
            .iter()
            .map(|&i| {
                let d = match self.kept.remove(&i) {
                    Some(reason) => Decision { keep: true, reason },
                    None => Decision {
                        keep: false,
                        reason: self
                            .deleted
                            .remove(&i)
                            .unwrap_or(if self.snaps[i].verified {
                                Reason::Expired {
                                    warm_days: self.p.warm_days,
                                }
                            } else {
                                Reason::Unverified
                            }),
                    },
                };
                (i, d)
            })
            .collect()
    }
}

/// The seal a snapshot holds, if any: its phase tag, or in a cold sink its
/// tag or (untagged) its own time.
fn seal_of(b: &Backup) -> Option<String> {
    match b.tag.as_deref() {
        Some(t) if is_phase_tag(t) => Some(t.to_string()),
        Some(t) if b.placement == Placement::Cold => Some(t.to_string()),
        None if b.placement == Placement::Cold => {
            Some(b.at.strftime("untagged %Y-%m-%d %H:%M:%S").to_string())
        }
        _ => None,
    }
}

/// A warm snapshot's bucket: its round, else its UTC day.
fn warm_bucket(b: &Backup) -> Bucket {
    match b.tag.as_deref() {
        Some(t) if is_round_tag(t) => Bucket::Round(t.to_string()),
        _ => Bucket::Day(day_bucket(b)),
    }
}

fn minute_bucket(b: &Backup) -> String {
    b.at.strftime("%Y-%m-%d %H:%M").to_string()
}

fn hour_bucket(b: &Backup) -> String {
    b.at.strftime("%Y-%m-%d %H:00").to_string()
}

fn day_bucket(b: &Backup) -> String {
    b.at.strftime("%Y-%m-%d").to_string()
}

fn week_bucket(b: &Backup) -> String {
    let w = b.at.to_zoned_datetime(TimeZone::UTC).date().iso_week_date();
    format!("{:04}-W{:02}", w.year(), w.week())
}

fn month_bucket(b: &Backup) -> String {
    b.at.to_zoned_datetime(TimeZone::UTC)
        .date()
        .strftime("%Y-%m")
        .to_string()
}
