//! `prune`: apply the [retention policy](crate::retention) to every sink.
//!
//! Two steps, so `--dry-run` prints exactly what a real run would do:
//! [`plan`] reads each sink's catalog and decides keep / delete for every
//! artifact it lists (its `Display` is the table `prune` prints);
//! [`apply`] carries out the deletions.
//!
//! Per sink, `apply` deletes the artifact and then its sidecar of every
//! planned deletion, and finally appends **one** manifest to the sink's
//! chain whose `pruned` list names what went and why. Old manifests are
//! never rewritten or deleted, so the hash chain stays whole and the catalog
//! (`manifest::listed`) stops listing the pruned artifacts. Only deletions
//! that fully succeeded are recorded: an interrupted or failed prune leaves
//! entries still listed whose objects may already be gone, and the next prune
//! plans them again (deleting an absent object is not an error) and records
//! them then.
//!
//! Incremental-mode snapshots share packs, so for them that manifest is
//! only the first phase; the second, [`packs`], frees the packs no listed
//! snapshot needs once their grace period has passed.
//!
//! A sink whose catalog cannot be read whole (listing fails, or a manifest is
//! unreadable) is left untouched and reported in [`PrunePlan::skipped`]: a
//! policy evaluated on part of the history could delete what the missing part
//! makes precious.
//!
//! Every artifact a manifest lists passed its post-backup check, so catalog
//! entries reach the policy as verified.
//!
//! ```
//! use backup_core::{Retention, prune, sink::{MemorySink, Sink}};
//!
//! let local = MemorySink::new("local");
//! let sinks: [&dyn Sink; 1] = [&local];
//! let plan = prune::plan(&sinks, &[], jiff::Timestamp::now(), &Retention::default());
//! for item in plan.deletions() {
//!     println!("{} {}: {}", item.sink, item.entry.key, item.decision.reason);
//! }
//! let report = prune::apply(&plan, &sinks);
//! assert!(report.ok() && report.deleted_count() == 0);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use tracing::{info, warn};

use crate::catalog;
use crate::catalog::append::AppendError;
use crate::manifest::{self, Entry, Listed, Pruned};
use crate::retention::Retention;
use crate::retention::{self, Backup, Decision, Reason};
use crate::sink::{Placement, Sink};
use crate::source::Source;

pub mod packs;

/// One artifact of the catalog and what the policy decided for it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanItem {
    /// Sink name.
    pub sink: String,
    /// Sink placement.
    pub placement: Placement,
    /// Run id of the manifest that lists it.
    pub run_id: String,
    /// The catalog entry.
    pub entry: Entry,
    /// Keep or delete, and why.
    pub decision: Decision,
}

/// A sink `prune` will not touch, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedSink {
    /// Sink name.
    pub sink: String,
    /// What went wrong reading its catalog.
    pub reason: String,
}

/// What a prune will do; `Display` renders the keep / delete table.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunePlan {
    /// The clock the policy was evaluated against.
    pub now: Timestamp,
    /// The policy.
    pub policy: Retention,
    /// Every listed artifact of the selected labels, by label, sink and
    /// newest first.
    pub items: Vec<PlanItem>,
    /// Sinks left alone because their catalog could not be read.
    pub skipped: Vec<SkippedSink>,
}

impl PrunePlan {
    /// The planned deletions.
    pub fn deletions(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| !i.decision.keep)
    }
    /// How many artifacts will be deleted.
    pub fn delete_count(&self) -> usize {
        self.deletions().count()
    }
    /// How many artifacts are kept.
    pub fn keep_count(&self) -> usize {
        self.items.len() - self.delete_count()
    }
    /// Bytes the deletions free (artifact sizes).
    pub fn reclaimed_bytes(&self) -> u64 {
        self.deletions().map(|i| i.entry.size).sum()
    }
}

/// Read the catalog of every sink and apply the policy to the artifacts of
/// `labels` (all labels when empty). Reads only; changes nothing.
pub fn plan(
    sinks: &[&dyn Sink],
    labels: &[String],
    now: Timestamp,
    policy: &Retention,
) -> PrunePlan {
    plan_per_label(sinks, labels, None, now, policy, &|_| policy.clone())
}

/// [`plan`] with a policy per database label (`[[database]] retention`);
/// `global` is the `[retention]` the plan reports as its policy. With
/// `host`, only what that machine wrote is pruned (and what was written
/// before entries named their host): one host never thins out another's
/// runs in a shared sink, whatever its own policy says.
pub fn plan_per_label(
    sinks: &[&dyn Sink],
    labels: &[String],
    host: Option<&str>,
    now: Timestamp,
    global: &Retention,
    policy_for: &dyn Fn(&str) -> Retention,
) -> PrunePlan {
    let (mut listed, skipped) = read_catalogs(sinks, labels);
    if let Some(host) = host {
        listed.retain(|l| l.entry.host.as_deref().is_none_or(|h| h == host));
    }
    let decisions = decide(&listed, now, policy_for);
    let mut items: Vec<PlanItem> = listed
        .into_iter()
        .zip(decisions)
        .map(|(l, decision)| PlanItem {
            sink: l.sink,
            placement: l.placement,
            run_id: l.run_id,
            entry: l.entry,
            decision,
        })
        .collect();
    keep_shared_artifacts(&mut items);
    items.sort_by(|a, b| {
        (&a.entry.label, &a.sink)
            .cmp(&(&b.entry.label, &b.sink))
            .then(b.entry.snapshot_at.cmp(&a.entry.snapshot_at))
            .then(b.run_id.cmp(&a.run_id))
    });
    PrunePlan {
        now,
        policy: global.clone(),
        items,
        skipped,
    }
}

/// The listed artifacts of `labels` (all when empty) in every sink whose
/// catalog reads whole; the other sinks are skipped, with the reason.
fn read_catalogs(sinks: &[&dyn Sink], labels: &[String]) -> (Vec<Listed>, Vec<SkippedSink>) {
    let mut listed = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    for sink in sinks {
        let name = sink.name().to_string();
        if !seen.insert(name.clone()) {
            skipped.push(SkippedSink {
                sink: name,
                reason: "another sink has the same name".into(),
            });
            continue;
        }
        match crate::manifest::view::view(*sink) {
            Err(e) => skipped.push(SkippedSink {
                sink: name,
                reason: format!("cannot read its catalog: {e}"),
            }),
            Ok(v) if !v.problems.is_empty() => skipped.push(SkippedSink {
                sink: name,
                reason: format!(
                    "{} unreadable manifest(s), first: {}",
                    v.problems.len(),
                    v.problems[0]
                ),
            }),
            Ok(v) => listed.extend(
                crate::manifest::view::listed(*sink, &v.state)
                    .into_iter()
                    .filter(|l| labels.is_empty() || labels.contains(&l.entry.label)),
            ),
        }
    }
    for s in &skipped {
        warn!("prune skips sink {}: {}", s.sink, s.reason);
    }
    (listed, skipped)
}

/// The policy's decision for each of `listed` (parallel to it), each label
/// under its own policy.
fn decide(
    listed: &[Listed],
    now: Timestamp,
    policy_for: &dyn Fn(&str) -> Retention,
) -> Vec<Decision> {
    let backups: Vec<Backup> = listed
        .iter()
        .map(|l| Backup {
            id: l.entry.key.clone(),
            label: l.entry.label.clone(),
            sink: l.sink.clone(),
            placement: l.placement,
            at: l.entry.snapshot_at,
            tag: l.entry.tag.clone(),
            verified: true,
        })
        .collect();
    // Each label gets its own policy, and each source of a label its own
    // evaluation: two hosts' `app` are two databases, and one's runs must
    // not count towards the other's `keep_last`.
    let mut decisions: Vec<Option<retention::Decision>> = vec![None; backups.len()];
    let mut groups: BTreeMap<(&str, Source), Vec<usize>> = BTreeMap::new();
    for (i, l) in listed.iter().enumerate() {
        groups
            .entry((l.entry.label.as_str(), Source::of(&l.entry)))
            .or_default()
            .push(i);
    }
    for ((label, _), idx) in groups {
        let policy = policy_for(label);
        let group: Vec<Backup> = idx.iter().map(|&i| backups[i].clone()).collect();
        for (i, d) in idx
            .into_iter()
            .zip(retention::evaluate(&group, now, &policy))
        {
            let keep_adopted = listed[i].entry.adopted.is_some()
                && policy.adopted == retention::AdoptedRetention::Keep;
            decisions[i] = Some(if keep_adopted && !d.keep {
                Decision {
                    keep: true,
                    reason: Reason::Adopted,
                }
            } else {
                d
            });
        }
    }
    decisions
        .into_iter()
        .map(|d| d.expect("every backup has a label"))
        .collect()
}

/// An overwriting name template can store two snapshots under one key:
/// deleting the older one's object would delete the kept newer one, so
/// every sharer of a kept artifact is kept.
fn keep_shared_artifacts(items: &mut [PlanItem]) {
    let mut by_key: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        by_key
            .entry((item.sink.clone(), item.entry.key.clone()))
            .or_default()
            .push(i);
    }
    for sharers in by_key.values() {
        if sharers.len() > 1 && sharers.iter().any(|&i| items[i].decision.keep) {
            for &i in sharers {
                if !items[i].decision.keep {
                    items[i].decision = Decision {
                        keep: true,
                        reason: Reason::SharedArtifact,
                    };
                }
            }
        }
    }
}

/// What [`apply`] did in one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkReport {
    /// Sink name.
    pub sink: String,
    /// Deleted artifacts (sidecars went with them), as recorded in the manifest.
    pub deleted: Vec<Pruned>,
    /// Bytes freed (artifact sizes).
    pub bytes: u64,
    /// The appended manifest: (key, SHA-256 = new chain head).
    pub manifest: Option<(String, String)>,
    /// Deletions or the manifest write that failed.
    pub errors: Vec<String>,
    /// The second phase: packs of pruned incremental snapshots freed.
    pub packs: packs::Collected,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PruneReport {
    /// One per sink that had something to delete.
    pub sinks: Vec<SinkReport>,
}

impl PruneReport {
    /// Packs and page indexes freed, over all sinks.
    pub fn collected_count(&self) -> usize {
        self.sinks.iter().map(|s| s.packs.deleted.len()).sum()
    }
    /// Artifacts deleted and recorded, over all sinks.
    pub fn deleted_count(&self) -> usize {
        self.sinks.iter().map(|s| s.deleted.len()).sum()
    }
    /// Bytes freed over all sinks, packs included.
    pub fn bytes(&self) -> u64 {
        self.sinks.iter().map(|s| s.bytes + s.packs.bytes).sum()
    }
    /// Nothing failed.
    pub fn ok(&self) -> bool {
        self.sinks
            .iter()
            .all(|s| s.errors.is_empty() && s.packs.errors.is_empty())
    }
}

/// Carry out a plan: per sink, delete artifact and sidecar of each planned
/// deletion, then append one manifest recording them. A failure in one sink
/// does not stop the others; it is in the report.
pub fn apply(plan: &PrunePlan, sinks: &[&dyn Sink]) -> PruneReport {
    let mut by_sink: BTreeMap<&str, Vec<&PlanItem>> = BTreeMap::new();
    for item in plan.deletions() {
        by_sink.entry(item.sink.as_str()).or_default().push(item);
    }
    info!(
        "prune phase start deletions={} sinks={}",
        plan.delete_count(),
        by_sink.len()
    );
    let mut report = PruneReport::default();
    // Every sink whose catalog was read takes part: packs released by an
    // earlier prune may be past their grace period now.
    for name in plan.items.iter().map(|i| i.sink.as_str()) {
        by_sink.entry(name).or_default();
    }
    for (name, items) in by_sink {
        let mut sr = SinkReport {
            sink: name.to_string(),
            deleted: vec![],
            bytes: 0,
            manifest: None,
            errors: vec![],
            packs: packs::Collected::default(),
        };
        let Some(sink) = sinks.iter().find(|s| s.name() == name) else {
            sr.errors
                .push(format!("sink {name} is in the plan but was not given"));
            report.sinks.push(sr);
            continue;
        };
        prune_sink(plan, *sink, &items, &mut sr);
        let idle = sr.deleted.is_empty()
            && sr.errors.is_empty()
            && sr.packs == packs::Collected::default();
        if !idle {
            report.sinks.push(sr);
        }
    }
    info!(
        "prune phase end deleted={} bytes={} ok={}",
        report.deleted_count(),
        report.bytes(),
        report.ok()
    );
    report
}

/// [`apply`] in one sink: delete, record the deletions in one manifest,
/// then free the packs nothing needs any more.
fn prune_sink(plan: &PrunePlan, sink: &dyn Sink, items: &[&PlanItem], sr: &mut SinkReport) {
    let name = sink.name();
    let started = Timestamp::now();
    delete_items(sink, items, sr);
    if !sr.deleted.is_empty() {
        record_pruned(sink, started, sr);
    }
    // Only after this prune's record is in the catalog: its snapshots
    // must count as gone when deciding what nothing needs.
    // The plan's clock was read before this prune's own record was
    // written; what it released is measured against the time now.
    let now = plan.now.max(Timestamp::now());
    sr.packs = packs::collect(sink, now, plan.policy.pack_grace);
    for e in sr.errors.iter().chain(&sr.packs.errors) {
        tracing::error!(sink = %name, error = %e, "prune failed");
    }
}

/// Delete the artifact and sidecar of each planned deletion; what went is
/// added to `sr.deleted`, what failed to `sr.errors`.
fn delete_items(sink: &dyn Sink, items: &[&PlanItem], sr: &mut SinkReport) {
    let name = sink.name();
    let mut gone: BTreeSet<&str> = BTreeSet::new();
    for item in items {
        let e = &item.entry;
        // An incremental-mode snapshot shares its packs and index with
        // later snapshots: it is only recorded as removed here, and
        // `packs::collect` frees what no listed snapshot needs.
        let shared = e.pages.is_some();
        let deleted = gone.contains(e.key.as_str())
            || shared
            || sink
                .delete(&e.key)
                .and_then(|()| sink.delete(&e.sidecar_key))
                .map_err(|err| {
                    sr.errors.push(format!("deleting {}: {err}", e.key));
                })
                .is_ok();
        if !deleted {
            continue;
        }
        if gone.insert(e.key.as_str()) && !shared {
            sr.bytes += e.size;
        }
        info!(
            "pruned label={} sink={name} key={} reason={}",
            e.label, e.key, item.decision.reason
        );
        sr.deleted.push(Pruned {
            run_id: item.run_id.clone(),
            key: e.key.clone(),
            reason: item.decision.reason.to_string(),
        });
    }
}

/// Append the one manifest that records this prune's deletions.
fn record_pruned(sink: &dyn Sink, started: Timestamp, sr: &mut SinkReport) {
    let name = sink.name();
    let written = next_run_id(sink, started).and_then(|run_id| {
        catalog::append::write_manifest(
            sink,
            &run_id,
            started,
            Timestamp::now(),
            vec![],
            sr.deleted.clone(),
        )
    });
    match written {
        Ok((key, head)) => {
            info!(sink = %name, key = %key, head = %head, "manifest written");
            sr.manifest = Some((key, head));
        }
        Err(e) => {
            // The objects are gone but still listed; the next prune
            // plans them again and records them.
            sr.errors
                .push(format!("writing the prune manifest to {name}: {e}"));
        }
    }
}

/// A run id that sorts after the newest manifest of the sink, so the new
/// manifest becomes the chain head even if this host's clock is behind.
fn next_run_id(sink: &dyn Sink, at: Timestamp) -> Result<String, AppendError> {
    let tip = crate::manifest::view::view(sink)?.tip;
    let mut at = at;
    if let Some(t) = tip.and_then(|t| manifest::run_started(&t.run_id))
        && t.as_second() >= at.as_second()
    {
        at = Timestamp::from_second(t.as_second() + 1).unwrap_or(at);
    }
    Ok(manifest::new_run_id(at))
}
