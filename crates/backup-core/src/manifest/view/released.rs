//! The released objects of a checkpoint, stored beside it in segments by
//! the hour they were released.
//!
//! Pack collection frees what pruned snapshots released only after
//! `pack_grace` (a day by default), so at one run a second a day of
//! releases (each pruned snapshot's page index and its sidecar, and the
//! packs no listed snapshot needs any more: about 250,000 keys) waits in
//! the catalog's state. Inside every checkpoint that made each one
//! megabytes, rewritten every few dozen appends: a cost that grew with the
//! grace period's history, not with what changed. A checkpoint names
//! **segments** instead: one object per hour of release times,
//! content-addressed (`manifests/released/<hour>-<sha256>.released`,
//! zstd-compressed JSON). A segment is written when its hour's set changes
//! (a prune adds to the newest hour, collection takes from the oldest) and
//! is shared by every checkpoint until then.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Released, decode_capped};
use crate::digest::Sha256;
use crate::sink::{Sink, SinkError, get_bytes};

/// Folder of segments. Their names end in `.released`, so readers of
/// manifests and of checkpoints skip them.
pub const DIR: &str = "manifests/released";
const SUFFIX: &str = ".released";
/// Segments fetched at once when a checkpoint is read (a day is 25).
const PARALLEL: usize = 8;

/// A segment as a checkpoint names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Its object key.
    pub key: String,
    /// SHA-256 of its JSON (before compression).
    pub sha256: String,
    /// How many released objects it lists.
    pub objects: u64,
}

/// A segment this process knows is stored, and what it holds: the next
/// checkpoint names it again, without writing it, while its hour's set is
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    hour: i64,
    fingerprint: u64,
    segment: Segment,
}

type Hour<'a> = Vec<(&'a String, &'a Released)>;

fn by_hour(released: &BTreeMap<String, Released>) -> BTreeMap<i64, Hour<'_>> {
    let mut hours: BTreeMap<i64, Hour<'_>> = BTreeMap::new();
    for (key, r) in released {
        hours
            .entry(r.at.as_second().div_euclid(3600))
            .or_default()
            .push((key, r));
    }
    hours
}

/// Whether an hour's set is the one a stored segment holds, without
/// serializing it. In-process only (nothing read from a sink is taken on
/// its word): a segment read back is checked by its SHA-256.
fn fingerprint(objects: &Hour<'_>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for (key, r) in objects {
        key.hash(&mut h);
        r.at.as_nanosecond().hash(&mut h);
        r.size.hash(&mut h);
    }
    h.finish()
}

/// `manifests/released/<hour>-`, the start of every segment key of `hour`.
fn hour_prefix(hour: i64) -> String {
    let at = Timestamp::from_second(hour.saturating_mul(3600)).unwrap_or(Timestamp::UNIX_EPOCH);
    format!("{DIR}/{}-", at.strftime("%Y%m%dT%HZ"))
}

/// The segment keys `sink` holds: one listing, which [`store`] and
/// [`delete_unnamed`] share.
pub fn present(sink: &dyn Sink) -> Result<BTreeSet<String>, SinkError> {
    Ok(sink
        .list(DIR)?
        .into_iter()
        .filter(|k| k.ends_with(SUFFIX))
        .collect())
}

/// Store the segments of `released` that `known` does not already hold
/// and `present` (the sink's listing) still has; what a checkpoint of it
/// names. A segment another writer deleted is written again, so one
/// deletion never leaves every later checkpoint of this process unreadable.
pub fn store(
    sink: &dyn Sink,
    released: &BTreeMap<String, Released>,
    known: &[Stored],
    present: &BTreeSet<String>,
) -> Result<Vec<Stored>, SinkError> {
    let mut out = Vec::new();
    for (hour, objects) in by_hour(released) {
        let fingerprint = fingerprint(&objects);
        if let Some(s) = known.iter().find(|s| {
            s.hour == hour && s.fingerprint == fingerprint && present.contains(&s.segment.key)
        }) {
            out.push(s.clone());
            continue;
        }
        let map: BTreeMap<&String, &Released> = objects.iter().copied().collect();
        let json = serde_json::to_vec(&map).expect("released objects serialize");
        let sha256 = Sha256::hex_of(&json);
        let key = format!("{}{sha256}{SUFFIX}", hour_prefix(hour));
        let bytes = zstd::encode_all(json.as_slice(), 3).expect("compressing in memory");
        sink.put(&key, &bytes)?;
        out.push(Stored {
            hour,
            fingerprint,
            segment: Segment {
                key,
                sha256,
                objects: objects.len() as u64,
            },
        });
    }
    Ok(out)
}

impl Stored {
    /// Its object key.
    pub fn key(&self) -> &str {
        &self.segment.key
    }
}

/// The segments of `stored`, as a checkpoint names them.
pub fn named(stored: &[Stored]) -> Vec<Segment> {
    stored.iter().map(|s| s.segment.clone()).collect()
}

/// What [`load`] read: the released objects, and the segments that
/// hold them.
pub struct Loaded {
    /// The released objects of every segment together.
    pub objects: BTreeMap<String, Released>,
    /// The segments, to name again while their hours are unchanged.
    pub stored: Vec<Stored>,
}

/// Read `segments` (a few at a time) and check each against its name and
/// SHA-256: the released objects they list together, and what this process
/// now knows is stored. `Err` says what is wrong; a sink failure other than
/// a missing object is returned as such.
pub fn load(sink: &dyn Sink, segments: &[Segment]) -> Result<Result<Loaded, String>, SinkError> {
    let mut released = BTreeMap::new();
    let mut stored = Vec::new();
    for chunk in segments.chunks(PARALLEL) {
        let read: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|seg| s.spawn(move || read_one(sink, seg)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a segment read does not panic"))
                .collect()
        });
        for (seg, r) in chunk.iter().zip(read) {
            let objects = match r {
                Ok(Ok(objects)) => objects,
                Ok(Err(why)) => return Ok(Err(why)),
                Err(e) if e.is_not_found() => return Ok(Err(format!("a segment is missing: {e}"))),
                Err(e) => return Err(e),
            };
            // One hour, named as `store` names it: reused while unchanged.
            // Anything else is read but never named again unwritten.
            if let [(hour, group)] = Vec::from_iter(by_hour(&objects)).as_slice()
                && seg.key.starts_with(&hour_prefix(*hour))
            {
                stored.push(Stored {
                    hour: *hour,
                    fingerprint: fingerprint(group),
                    segment: seg.clone(),
                });
            }
            for (key, r) in objects {
                if released.insert(key.clone(), r).is_some() {
                    return Ok(Err(format!("{key} is in two segments")));
                }
            }
        }
    }
    Ok(Ok(Loaded {
        objects: released,
        stored,
    }))
}

fn read_one(
    sink: &dyn Sink,
    seg: &Segment,
) -> Result<Result<BTreeMap<String, Released>, String>, SinkError> {
    let bad = |why: &str| Err(format!("segment {}: {why}", seg.key));
    if !(seg.key.starts_with(DIR) && seg.key.ends_with(&format!("-{}{SUFFIX}", seg.sha256))) {
        return Ok(bad("its name does not carry its SHA-256"));
    }
    let json = match decode_capped(&get_bytes(sink, &seg.key)?) {
        Ok(json) => json,
        Err(e) => return Ok(bad(&e.to_string())),
    };
    if Sha256::hex_of(&json) != seg.sha256 {
        return Ok(bad("SHA-256 does not match"));
    }
    let objects: BTreeMap<String, Released> = match serde_json::from_slice(&json) {
        Ok(o) => o,
        Err(e) => return Ok(bad(&e.to_string())),
    };
    if objects.len() as u64 != seg.objects {
        return Ok(bad(&format!(
            "lists {} objects, the checkpoint says {}",
            objects.len(),
            seg.objects
        )));
    }
    Ok(Ok(objects))
}

/// Delete the segments of `present` (listed before this checkpoint's
/// were stored, so none another writer stores meanwhile) that none of
/// `keep` names (those of the checkpoints still kept). Failures are
/// logged: a leftover segment costs only space.
pub fn delete_unnamed(sink: &dyn Sink, present: &BTreeSet<String>, keep: &BTreeSet<&str>) {
    for key in present.iter().filter(|k| !keep.contains(k.as_str())) {
        if let Err(e) = sink.delete(key) {
            warn!("sink {}: deleting released segment {key}: {e}", sink.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use jiff::SignedDuration;

    use super::*;
    use crate::manifest::Tip;
    use crate::manifest::view::{self, CHECKPOINT_DIR, State};
    use crate::sink::MemorySink;
    use crate::sink::faults::{Hooked, Op};

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap() + SignedDuration::from_mins(minute)
    }

    fn tip(i: usize) -> Tip {
        Tip {
            key: format!("manifests/r{i:06}.json"),
            run_id: format!("r{i:06}"),
            sha256: "0".repeat(64),
            fields: BTreeMap::new(),
        }
    }

    /// A prune at `minute` releasing `n` objects (a page index, its sidecar
    /// and a pack per pruned snapshot, as names go).
    fn release(state: &mut State, minute: i64, n: usize) {
        for k in 0..n {
            let salt = (k as i64 * 7919 + minute * 104_729) % 65_536;
            let key = format!("app-auto-{minute:06}-{k:04}-{salt:04x}.pageidx");
            Arc::make_mut(&mut state.released).insert(
                key,
                Released {
                    at: at(minute),
                    size: 4_000 + k as u64,
                },
            );
        }
    }

    /// Bytes put under the checkpoint and segment folders.
    fn counted() -> (Hooked<MemorySink>, MemorySink, Arc<AtomicUsize>) {
        let store = MemorySink::new("local");
        let bytes = Arc::new(AtomicUsize::new(0));
        let b = bytes.clone();
        let sink = Hooked::new(store.clone()).with_hook(move |op, key, len| {
            if op == Op::Put && (key.starts_with(CHECKPOINT_DIR) || key.starts_with(DIR)) {
                b.fetch_add(len, Ordering::SeqCst);
            }
            Ok(())
        });
        (sink, store, bytes)
    }

    /// Thirty hours of a prune every ten minutes under a day's grace, two
    /// checkpoints between prunes: what a checkpoint writes stays what an
    /// hour of releases weighs (the newest hour's segment, and the oldest's
    /// once collection takes from it) while the objects waiting grow
    /// fifteenfold.
    #[test]
    fn checkpoints_write_what_changed_not_what_waits_for_collection() {
        let (sink, store, bytes) = counted();
        let mut state = State::default();
        let mut known = Vec::new();
        let mut per_checkpoint = Vec::new();
        let mut waiting = Vec::new();
        let mut i = 0;
        for minute in (0..30 * 60).step_by(10) {
            release(&mut state, minute, 300);
            Arc::make_mut(&mut state.released)
                .retain(|_, r| r.at.duration_since(at(minute)) > -SignedDuration::from_hours(24));
            for _ in 0..2 {
                i += 1;
                let before = bytes.load(Ordering::SeqCst);
                known = view::write_checkpoint(&sink, &state, &tip(i), i as u64, &known)
                    .expect("a checkpoint");
                per_checkpoint.push(bytes.load(Ordering::SeqCst) - before);
                waiting.push(state.released.len());
            }
            // Only the kept checkpoints' segments stay.
            let named: BTreeSet<&str> = known.iter().map(Stored::key).collect();
            assert!(store.list(DIR).unwrap().len() <= named.len() + 2);
        }
        let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
        let (early, late) = (&per_checkpoint[12..24], &per_checkpoint[336..360]);
        eprintln!(
            "bytes per checkpoint: hours 1-2 {:.0} ({} waiting), hours 28-30 {:.0} ({} waiting)",
            mean(early),
            waiting[18],
            mean(late),
            waiting[350]
        );
        assert!(waiting[350] >= 12 * waiting[18], "{waiting:?}");
        assert!(mean(late) <= 3.0 * mean(early), "{per_checkpoint:?}");
        // Inside the checkpoint, as before version 7, every one would carry them all.
        let inline = serde_json::to_vec(&*state.released).unwrap();
        let inline = zstd::encode_all(inline.as_slice(), 3).unwrap().len();
        eprintln!("the same released objects inside a checkpoint: {inline} bytes");
        assert!(mean(late) * 10.0 < inline as f64);

        // What a reader gets back is the state written, segments and all.
        let key = view::checkpoint_key(&tip(i).run_id);
        let read = view::read_checkpoint(&store, &key).unwrap();
        assert_eq!(read.state.released, state.released);
        assert!((24..=25).contains(&read.released_segments.len()));
        assert_eq!(read.stored_segments, known);
    }

    /// A checkpoint write stopped after any of its puts (as a kill -9 stops
    /// it: nothing after that put happens) leaves the checkpoint before it
    /// whole, segments and all, and names no checkpoint that is not; the
    /// next write is whole.
    #[test]
    fn a_checkpoint_write_stopped_after_any_put_leaves_the_one_before_whole() {
        let mut first = State::default();
        release(&mut first, 0, 50);
        release(&mut first, 60, 50);
        let mut second = first.clone();
        release(&mut second, 120, 50);
        Arc::make_mut(&mut second.released).retain(|_, r| r.at > at(0));
        // The puts and deletes of a whole write: the new hour's segment (the
        // middle hour is unchanged, the first is still the older
        // checkpoint's), the sidecar, the checkpoint.
        let whole = {
            let store = MemorySink::new("local");
            let known = view::write_checkpoint(&store, &first, &tip(1), 1, &[]).unwrap();
            let ops = Arc::new(AtomicUsize::new(0));
            let o = ops.clone();
            let sink = Hooked::new(store).with_hook(move |op, _, _| {
                if matches!(op, Op::Put | Op::Delete) {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            });
            view::write_checkpoint(&sink, &second, &tip(2), 2, &known).unwrap();
            ops.load(Ordering::SeqCst)
        };
        assert_eq!(whole, 3);
        for stop_after in 0..=whole {
            let store = MemorySink::new("local");
            let known = view::write_checkpoint(&store, &first, &tip(1), 1, &[]).unwrap();
            let puts = Arc::new(AtomicUsize::new(0));
            let p = puts.clone();
            let sink = Hooked::new(store.clone()).with_hook(move |op, key, _| {
                if matches!(op, Op::Put | Op::Delete)
                    && p.fetch_add(1, Ordering::SeqCst) >= stop_after
                {
                    return Err(SinkError::NotFound { key: key.into() });
                }
                Ok(())
            });
            let done = view::write_checkpoint(&sink, &second, &tip(2), 2, &known);
            let newest = view::checkpoint_keys(&store).unwrap().pop().unwrap();
            let read = view::read_checkpoint(&store, &newest).unwrap();
            if newest == view::checkpoint_key(&tip(2).run_id) {
                assert_eq!(
                    read.state.released, second.released,
                    "stopped after {stop_after}"
                );
            } else {
                assert_eq!(
                    read.state.released, first.released,
                    "stopped after {stop_after}"
                );
                assert!(done.is_none());
                let older = view::checkpoint_key(&tip(1).run_id);
                assert_eq!(
                    view::read_checkpoint(&store, &older)
                        .unwrap()
                        .state
                        .released,
                    first.released
                );
            }
            let again = view::write_checkpoint(&store, &second, &tip(3), 3, &known).unwrap();
            let key = view::checkpoint_key(&tip(3).run_id);
            assert_eq!(
                view::read_checkpoint(&store, &key).unwrap().state.released,
                second.released
            );
            assert_eq!(again.len(), 2);
            assert_eq!(done.is_some(), stop_after == whole);
        }
    }

    #[test]
    fn a_damaged_or_missing_segment_makes_its_checkpoint_unreadable_by_name() {
        let store = MemorySink::new("local");
        let mut state = State::default();
        release(&mut state, 0, 10);
        release(&mut state, 120, 10);
        let segments = view::write_checkpoint(&store, &state, &tip(1), 1, &[]).unwrap();
        let key = view::checkpoint_key(&tip(1).run_id);
        let first = segments[0].key().to_string();
        let good = get_bytes(&store, &first).unwrap();
        let other = get_bytes(&store, segments[1].key()).unwrap();
        store.put(&first, &other).unwrap();
        let e = view::read_checkpoint(&store, &key).unwrap_err().to_string();
        assert!(
            e.contains(&first) && e.contains("SHA-256 does not match"),
            "{e}"
        );
        store.delete(&first).unwrap();
        let e = view::read_checkpoint(&store, &key).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        store.put(&first, &good).unwrap();
        assert_eq!(
            view::read_checkpoint(&store, &key).unwrap().state.released,
            state.released
        );
        // Deleted behind a writer that knew it: the next checkpoint writes
        // it again rather than name what is gone.
        store.delete(&first).unwrap();
        let again = view::write_checkpoint(&store, &state, &tip(2), 2, &segments).unwrap();
        assert_eq!(again, segments);
        let key = view::checkpoint_key(&tip(2).run_id);
        assert_eq!(
            view::read_checkpoint(&store, &key).unwrap().state.released,
            state.released
        );
    }
}
