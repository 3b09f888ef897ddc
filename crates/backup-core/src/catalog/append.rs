//! Appending a manifest to a sink's hash chain: the one operation every
//! writer uses (backup, prune, `catalog repair`), so the catalog's guarantee
//! lives here: **one chain, whoever writes at once**, on one host or on
//! several sharing a folder or a container.
//!
//! Writers do not lock; they race on the chain position, optimistically:
//!
//! 1. Read the tip: the newest manifest (greatest key), as before.
//! 2. Build the next manifest: `previous` is the tip's SHA-256, and its run
//!    id sorts after the tip's (the run's own id if it already does, else a
//!    fresh one just after the tip), so the newest key stays the head.
//! 3. **Claim the place after the tip** with a conditional create
//!    ([`Sink::put_if_absent`]) of the link `manifests/chain/<tip sha256>`
//!    (`manifests/chain/genesis` for a first manifest) holding the new
//!    manifest's exact bytes. Both racers name the same link, so exactly one
//!    wins, on any sink: that create is the commit point.
//! 4. The winner writes the manifest's sidecar, then the manifest at its
//!    usual key `manifests/<run id>.json`, where every reader finds it.
//!
//! A loser reads the winning link, completes the winner's sidecar and
//! manifest if they are not there yet (its writer may have died between 3
//! and 4: the chain must not stall on it), and starts again from that
//! manifest. Every lost race means another writer's manifest was appended,
//! so writers always make progress.
//!
//! Links have no `.json` suffix, so readers of manifests (old versions
//! too) skip them; catalogs written before links existed need nothing: the
//! first append claims the place after their newest manifest.

use jiff::{SignedDuration, Timestamp};
use tracing::warn;

use crate::digest::{Sha256, Sidecar};
use crate::manifest::{self, Entry, MANIFEST_DIR, Manifest, Pruned, Relinked, Tip};
use crate::naming;
use crate::sink::{Sink, SinkError, get_bytes};

use crate::manifest::view;

/// How many lost races [`append`] takes before giving up. Each lost race is
/// another writer's manifest appended, so only a crowd of writers (or a
/// broken link) gets near it.
pub(crate) const MAX_ATTEMPTS: u32 = 200;

pub(crate) use crate::manifest::view::LINK_DIR;
pub use crate::manifest::view::link_key;

/// What a writer wants recorded; [`append`] adds the link fields.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The run's id; replaced by one after the tip's if it does not sort
    /// after it (a run that started earlier but finished later than another).
    pub run_id: String,
    /// Run start.
    pub started_at: Timestamp,
    /// Run end.
    pub finished_at: Timestamp,
    /// Artifacts written.
    pub entries: Vec<Entry>,
    /// Artifacts pruned.
    pub pruned: Vec<Pruned>,
    /// Objects of pruned incremental snapshots collected.
    pub collected: Vec<String>,
    /// Manifests of forked branches brought back onto the chain.
    pub relinked: Vec<Relinked>,
}

impl Draft {
    /// A run started at `started_at` and finished now that recorded
    /// nothing yet: fill in what it did with struct update syntax.
    pub fn new(run_id: String, started_at: Timestamp) -> Self {
        Self {
            run_id,
            started_at,
            finished_at: Timestamp::now(),
            entries: vec![],
            pruned: vec![],
            collected: vec![],
            relinked: vec![],
        }
    }
}

/// An appended manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its key.
    pub key: String,
    /// Its run id (see [`Draft::run_id`]).
    pub run_id: String,
    /// SHA-256 of its bytes: the new chain head.
    pub sha256: String,
    /// Races lost to other writers before it went in.
    pub lost_races: u32,
}

/// Why nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The sink failed before the manifest was committed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A link object is not a manifest of ours; the chain cannot go on past it.
    #[error(
        "chain link {key} is unreadable ({message}); the manifests still hold the chain: \
         move that object away and run again"
    )]
    BadLink {
        /// The link key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// Too many lost races in a row.
    #[error("gave up appending to sink {sink} after losing {attempts} races to other writers")]
    Contended {
        /// Sink name.
        sink: String,
        /// Races lost.
        attempts: u32,
    },
}

/// Append a manifest for `draft` to the chain of `sink` and return where it
/// went. See the module documentation for the protocol.
pub fn append(sink: &dyn Sink, draft: Draft) -> Result<Appended, AppendError> {
    let view = view::view(sink)?;
    // A writer that died between claim and store must not leave its
    // manifest only in the claim once the chain moves past it. Such a
    // manifest is always the tip the next append reads (or the claim it
    // loses to, which it completes below), so checking the tip suffices.
    if let (Some(link), Some(tip)) = (&view.tip_link, &view.tip)
        && sink.size(&tip.key)?.is_none()
    {
        complete(sink, link, &get_bytes(sink, link)?)?;
    }
    let mut tip = view.tip.clone();
    for lost_races in 0..MAX_ATTEMPTS {
        let previous = tip.as_ref().map(|t| t.sha256.clone());
        let m = Manifest {
            format: manifest::FORMAT.into(),
            version: manifest::version_for(&draft.entries),
            run_id: run_id_after(
                &draft.run_id,
                tip.as_ref().map(|t| t.run_id.as_str()),
                Timestamp::now(),
            ),
            sink: sink.name().to_string(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            started_at: draft.started_at,
            finished_at: draft.finished_at,
            previous: previous.clone(),
            previous_run_id: tip.as_ref().map(|t| t.run_id.clone()),
            previous_fields: tip.take().map(|t| t.fields).unwrap_or_default(),
            entries: draft.entries.clone(),
            pruned: draft.pruned.clone(),
            collected: draft.collected.clone(),
            relinked: draft.relinked.clone(),
        };
        let bytes = m.to_bytes();
        let link = link_key(previous.as_deref());
        let claimed = match sink.put_if_absent(&link, &bytes) {
            Ok(()) => bytes.clone(),
            Err(e) if e.is_already_exists() => get_bytes(sink, &link)?,
            Err(e) => return Err(e.into()),
        };
        // Equal bytes: ours, also when a retried create was answered
        // "exists" after its first try went through. (Another writer's
        // byte-identical manifest would record the very same thing.)
        let won = claimed == bytes;
        let (next, stored) = complete(sink, &link, &claimed)?;
        if won {
            if lost_races == 0 {
                // Its copy stored, the next append need not check for it.
                let link = (!stored).then_some(link);
                after_append(sink, view, &m, &next, link);
            }
            return Ok(Appended {
                key: next.key,
                run_id: next.run_id,
                sha256: next.sha256,
                lost_races,
            });
        }
        tip = Some(next);
    }
    Err(AppendError::Contended {
        sink: sink.name().to_string(),
        attempts: MAX_ATTEMPTS,
    })
}

/// `view` (read just before appending, with no race lost) moved past the
/// appended manifest: stored as a checkpoint when
/// [`view::checkpoint_every`] manifests have been appended since the last
/// one (or there is none yet), and kept in memory for the next read (see
/// [`view::memo`]). Only a view read whole is used: a checkpoint past an
/// unreadable manifest would hide it, and pack collection would no longer
/// see what it lists.
fn after_append(
    sink: &dyn Sink,
    mut view: view::View,
    appended: &Manifest,
    tip: &Tip,
    link: Option<String>,
) {
    let due = view.since_checkpoint + 1 >= view::checkpoint_every(view.state.live.len());
    if !view.problems.is_empty() || !(due || view::memo::enabled()) {
        return;
    }
    view::memo::forget(sink);
    view.state.apply(appended);
    view.manifests += 1;
    view.since_checkpoint += 1;
    view.tip = Some(tip.clone());
    view.tip_link = link;
    if due {
        // A failed checkpoint is tried again at the next due append, not at
        // every one: it only saves readers time.
        view.since_checkpoint = 0;
        if let Some(segments) =
            view::write_checkpoint(sink, &view.state, tip, view.manifests, &view.segments)
        {
            view.checkpoint = Some(view::checkpoint_key(&tip.run_id));
            view.segments = segments;
        }
    }
    view::memo::keep(sink, &view);
}

/// Make sure the manifest claimed by `link` (bytes `claimed`) is stored
/// under its key with its sidecar, and return it as a tip, and whether
/// both copies are now stored. Idempotent and
/// safe to race: both objects are created only if absent, with the bytes the
/// link fixes. A failure after the claim is logged, not returned: the
/// manifest is on the chain, and the next append (or `catalog repair`)
/// completes it.
fn complete(sink: &dyn Sink, link: &str, claimed: &[u8]) -> Result<(Tip, bool), AppendError> {
    let m = Manifest::from_bytes(link, claimed).map_err(|e| AppendError::BadLink {
        key: link.to_string(),
        message: e.to_string(),
    })?;
    let key = m.key();
    let sha256 = Sha256::hex_of(claimed);
    let sidecar = Sidecar::new(&sha256, naming::file_name(&key)).render();
    // Sidecar first, manifest last, as every manifest is written.
    let stored = [
        (manifest::sidecar_key(&key), sidecar.as_bytes()),
        (key.clone(), claimed),
    ]
    .iter()
    .try_for_each(|(k, data)| match sink.put_if_absent(k, data) {
        Err(e) if !e.is_already_exists() => Err(e),
        _ => Ok(()),
    });
    if let Err(e) = &stored {
        warn!(
            "sink {}: manifest {key} is on the chain ({link}) but storing its copy failed: {e}; \
             the next append or `sqlite-backup catalog repair` completes it",
            sink.name()
        );
    }
    let tip = Tip {
        run_id: m.run_id,
        fields: manifest::field_digests(claimed),
        sha256,
        key,
    };
    Ok((tip, stored.is_ok()))
}

/// Links whose manifest copy is missing (a writer died between claiming and
/// storing): `(link key, manifest key)`.
pub fn unfinished(sink: &dyn Sink) -> Result<Vec<(String, String)>, AppendError> {
    let stored: std::collections::BTreeSet<String> = sink
        .list(MANIFEST_DIR)?
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    let mut out = Vec::new();
    for link in sink.list(LINK_DIR)? {
        let bytes = get_bytes(sink, &link)?;
        let m = Manifest::from_bytes(&link, &bytes).map_err(|e| AppendError::BadLink {
            key: link.clone(),
            message: e.to_string(),
        })?;
        if !stored.contains(&m.key()) {
            out.push((link, m.key()));
        }
    }
    Ok(out)
}

/// Store the copies of the [`unfinished`] links.
pub fn finish(sink: &dyn Sink, links: &[(String, String)]) -> Result<(), AppendError> {
    for (link, _) in links {
        complete(sink, link, &get_bytes(sink, link)?)?;
    }
    Ok(())
}

/// A run id that sorts after `tip`: `wanted` when it already does, else
/// one for `now`, else one for just after the tip's own time (a clock
/// behind the tip's writer, or many appends within a millisecond).
///
/// ```
/// use backup_core::catalog::append::run_id_after;
/// let now: jiff::Timestamp = "2026-11-23T13:08:12.500Z".parse().unwrap();
/// assert_eq!(run_id_after("20261123T130812Z-1a2b", None, now), "20261123T130812Z-1a2b");
/// let later = "20261123T150000Z-0040";
/// let id = run_id_after("20261123T130812Z-1a2b", Some(later), now);
/// assert!(id.as_str() > later && id.starts_with("20261123T150000Z-"), "{id}");
/// ```
pub fn run_id_after(wanted: &str, tip: Option<&str>, now: Timestamp) -> String {
    let Some(tip) = tip else {
        return wanted.to_string();
    };
    if wanted > tip {
        return wanted.to_string();
    }
    let fresh = manifest::new_run_id(now);
    if fresh.as_str() > tip {
        return fresh;
    }
    if let Some(at) = run_time(tip) {
        let next = manifest::new_run_id(at + SignedDuration::from_millis(1));
        if next.as_str() > tip {
            return next;
        }
    }
    // Not one of our ids: extend it, which sorts after it.
    format!("{tip}-0")
}

/// The time a run id stands for, to the millisecond (see
/// [`manifest::new_run_id`]: the suffix holds the millisecond).
fn run_time(run_id: &str) -> Option<Timestamp> {
    let at = manifest::run_started(run_id)?;
    let suffix = run_id.split_once('-')?.1;
    let bits = u16::from_str_radix(suffix, 16)
        .ok()
        .filter(|_| suffix.len() == 4)?;
    Some(at + SignedDuration::from_millis(i64::from((bits >> 6).min(999))))
}

/// Append a manifest to a sink's chain (see [`append`]).
/// Returns its key and the SHA-256 of its bytes (the new head).
pub fn write_manifest(
    sink: &dyn Sink,
    run_id: &str,
    started_at: Timestamp,
    finished_at: Timestamp,
    entries: Vec<Entry>,
    pruned: Vec<manifest::Pruned>,
) -> Result<(String, String), AppendError> {
    let a = append(
        sink,
        Draft {
            run_id: run_id.to_string(),
            started_at,
            finished_at,
            entries,
            pruned,
            collected: vec![],
            relinked: vec![],
        },
    )?;
    Ok((a.key, a.sha256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    fn draft(run_id: &str) -> Draft {
        let t: Timestamp = "2026-11-23T13:08:12Z".parse().unwrap();
        Draft {
            run_id: run_id.into(),
            started_at: t,
            finished_at: t,
            entries: vec![],
            pruned: vec![],
            collected: vec![],
            relinked: vec![],
        }
    }

    #[test]
    fn appends_claim_the_place_after_the_tip() {
        let sink = MemorySink::new("m");
        let a = append(&sink, draft("20261123T130812Z-0001")).unwrap();
        let b = append(&sink, draft("20261123T130813Z-0002")).unwrap();
        assert_eq!(
            get_bytes(&sink, &link_key(None)).unwrap(),
            get_bytes(&sink, &a.key).unwrap()
        );
        assert_eq!(
            get_bytes(&sink, &link_key(Some(&a.sha256))).unwrap(),
            get_bytes(&sink, &b.key).unwrap()
        );
        assert_eq!(manifest::head(&sink).unwrap(), Some(b.sha256));
    }

    #[test]
    fn a_run_that_sorts_before_the_tip_gets_an_id_after_it() {
        let sink = MemorySink::new("m");
        let late = append(&sink, draft("20261123T140000Z-0001")).unwrap();
        let early = append(&sink, draft("20261123T130000Z-0001")).unwrap();
        assert!(early.run_id > late.run_id, "{early:?} {late:?}");
        let r = crate::catalog::verify(&sink, &Default::default(), None).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.chain, 2);
    }

    #[test]
    fn a_claim_whose_writer_died_is_completed_by_the_next_writer() {
        let sink = MemorySink::new("m");
        let a = append(&sink, draft("20261123T130812Z-0001")).unwrap();
        // A writer claimed the place after `a`, then died before storing
        // its manifest: only the link exists.
        let mut m = Manifest::from_bytes("x", &get_bytes(&sink, &a.key).unwrap()).unwrap();
        m.run_id = "20261123T130813Z-0002".into();
        m.previous = Some(a.sha256.clone());
        m.previous_run_id = Some(a.run_id.clone());
        sink.put_if_absent(&link_key(Some(&a.sha256)), &m.to_bytes())
            .unwrap();
        assert_eq!(unfinished(&sink).unwrap().len(), 1);
        let c = append(&sink, draft("20261123T130814Z-0003")).unwrap();
        assert_eq!(c.lost_races, 0, "the reader followed the claim");
        assert!(unfinished(&sink).unwrap().is_empty());
        let r = crate::catalog::verify(&sink, &Default::default(), None).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.chain, 3);
    }

    #[test]
    fn racing_writers_keep_one_chain() {
        let sink = MemorySink::new("m");
        std::thread::scope(|s| {
            for w in 0..4 {
                let sink = sink.clone();
                s.spawn(move || {
                    for i in 0..25 {
                        let now = Timestamp::now();
                        let d = Draft {
                            started_at: now,
                            ..draft(&manifest::new_run_id(now))
                        };
                        append(&sink, d).unwrap_or_else(|e| panic!("{w}/{i}: {e}"));
                    }
                });
            }
        });
        let r = crate::catalog::verify(&sink, &Default::default(), None).unwrap();
        assert!(r.ok(), "{:#?}", r.problems);
        assert_eq!((r.manifests, r.chain), (100, 100));
    }

    #[test]
    fn run_ids_after_the_tip() {
        let now: Timestamp = "2026-11-23T13:08:12.500Z".parse().unwrap();
        // Tip in the same millisecond as `now`, or ahead of it.
        for tip in [
            manifest::new_run_id(now),
            "20261123T130812Z-ffff".to_string(),
            "20301123T130812Z-0000".into(),
            "not-a-run-id".into(),
        ] {
            let id = run_id_after("20261123T130812Z-0000", Some(&tip), now);
            assert!(id > tip, "{id} after {tip}");
        }
    }
}
