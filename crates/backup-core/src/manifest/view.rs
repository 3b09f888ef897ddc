//! Reading a sink's catalog at a cost that does not grow with its history.
//!
//! The catalog is the chain of manifests; what readers need of it is its
//! **state**: the entries still listed, and for pack collection the objects
//! pruned incremental snapshots released that are not freed yet. Replaying every
//! manifest gives that state, but a sink receives a manifest per run (86,400
//! a day at one run a second), so every so often ([`checkpoint_every`]
//! appends, and `catalog repair`) a writer stores a **checkpoint**: the
//! state as of one manifest, named by that manifest's run id and SHA-256.
//!
//! A reader takes the newest checkpoint whose sidecar matches, then follows
//! the chain forward from its manifest by the append links
//! (`manifests/chain/<sha256>`, each holding the next manifest's exact
//! bytes) until a link is missing: that manifest is the tip. No listing of
//! `manifests/` is needed, so the cost is one small listing, the checkpoint
//! and the manifests since it, whatever the number of runs. Anything that
//! does not add up (a link whose manifest does not name the one before it,
//! a stored copy that disagrees with its link, an unreadable checkpoint)
//! makes the reader replay every manifest instead, as before checkpoints
//! existed, so a doubt costs time, never a backup.
//!
//! A checkpoint is a summary that `verify --catalog` replays and compares;
//! it is never the only record of anything: the manifests stay.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::digest::{Sha256, Sidecar};
use crate::manifest::{self, CatalogError, Entry, Listed, Manifest, Tip};
use crate::naming;
use crate::page_map::Runs;
use crate::sink::{Sink, SinkError, get_bytes};

pub mod memo;
pub mod released;

pub use released::Segment;

/// Folder of chain links inside a sink.
pub(crate) const LINK_DIR: &str = "manifests/chain";

/// Folder of checkpoints. Their names end in `.checkpoint`, not `.json`, so
/// readers of manifests (older versions too) skip them.
pub const CHECKPOINT_DIR: &str = "manifests/checkpoints";

/// Appends between checkpoints of a small catalog: a reader follows at
/// most this many links (see [`checkpoint_every`]). At 16, the checkpoints
/// of the hour beside Litestream (660 listed snapshots, about 130 kB each)
/// cost about as much per append as the manifest itself; at 32, half that,
/// for a few dozen more small GETs by a process that starts cold.
pub const CHECKPOINT_EVERY: u64 = 32;

/// Appends between checkpoints of a state listing `live` entries: more as
/// the catalog grows, so that checkpoints cost the same per append whatever
/// its size (a checkpoint costs what it lists; at 10,000 entries one every
/// 16 appends was 125 kB written per run). A reader then follows up to
/// `live / 128` links, a few dozen at ten thousand entries.
///
/// ```
/// use backup_core::manifest::view::checkpoint_every;
/// assert_eq!(checkpoint_every(700), 32);
/// assert_eq!(checkpoint_every(10_000), 78);
/// ```
pub fn checkpoint_every(live: usize) -> u64 {
    CHECKPOINT_EVERY.max(live as u64 / 128)
}

/// Checkpoints kept; older ones are deleted after a new one is stored (a
/// reader that finds the newest unreadable falls back to the one before).
const CHECKPOINTS_KEPT: usize = 2;

const FORMAT: &str = "sqlite-backup/checkpoint";
// 4: entries may list packs of XOR deltas, which older readers would misread.
// 5: released objects instead of pruned snapshots (see `compact`).
// 6: entries' page maps in the grouped form of manifest version 5 (their
//    packs are in the checkpoint's table; older readers would not parse them).
// 7: released objects in segments beside it (see `released`).
const VERSION: u32 = 7;
const SUFFIX: &str = ".checkpoint";
/// Checkpoints are zstd-compressed JSON (4.8× smaller: field names and
/// paths repeat in every entry), read by their magic number, so the plain
/// JSON ones written before still read.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The most a checkpoint's JSON may be per compressed byte; measured ratios
/// are about 5.
const MAX_RATIO: u64 = 200;

/// The link that claims the place after the manifest whose bytes hash to
/// `previous` (`None`: the first manifest of the sink).
///
/// ```
/// use backup_core::catalog::append::link_key;
/// assert_eq!(link_key(None), "manifests/chain/genesis");
/// assert_eq!(link_key(Some("ab12")), "manifests/chain/ab12");
/// ```
pub fn link_key(previous: Option<&str>) -> String {
    format!("{LINK_DIR}/{}", previous.unwrap_or("genesis"))
}

/// The key of the checkpoint as of manifest `run_id`.
pub fn checkpoint_key(run_id: &str) -> String {
    format!("{CHECKPOINT_DIR}/{run_id}{SUFFIX}")
}

/// An entry still listed, with the run that recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// Run id of the manifest that listed it.
    pub run_id: String,
    /// The entry.
    pub entry: Entry,
}

/// An object of pruned incremental snapshots that no listed snapshot
/// needs and no pack collection has freed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// When the manifest pruning the last snapshot that needed it finished.
    pub at: Timestamp,
    /// Its size as recorded (0 where not).
    pub size: u64,
}

/// What the manifests up to one of them add up to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Entries no manifest pruned, in manifest order. Shared, not owned:
    /// a long-lived process keeps its view ([`memo`]) and hands out copies
    /// several times a run, and copying every entry's page map each time
    /// cost what the catalog's history weighs (most of a daemon's run time
    /// at a thousand entries).
    pub live: Vec<Arc<Live>>,
    /// What pack collection waits to free, by object key. Only the objects
    /// are kept, not the pruned snapshots: those wait out `pack_grace` (a
    /// day at one run a second is tens of thousands of them), and a state
    /// carrying each one's page map grew a daemon's CPU, memory and
    /// checkpoints minute by minute in the one-hour soak. Shared, as `live`
    /// is: a kept view is handed out several times a run, and a day of
    /// releases is a quarter of a million keys to copy each time.
    pub released: Arc<BTreeMap<String, Released>>,
}

impl State {
    /// The state after manifest `m`. A pure function of the state and the
    /// manifest, so a checkpoint and a replay from the first manifest agree
    /// exactly, which is what `verify --catalog` compares.
    ///
    /// A snapshot pruned twice (two prunes at once) releases its objects at
    /// the first: a run that chose it read the catalog before that manifest.
    pub fn apply(&mut self, m: &Manifest) {
        self.live.extend(m.entries.iter().map(|e| {
            Arc::new(Live {
                run_id: m.run_id.clone(),
                entry: e.clone(),
            })
        }));
        if m.pruned.is_empty() && m.collected.is_empty() {
            return;
        }
        let pruned: BTreeSet<&str> = m.pruned.iter().map(|p| p.key.as_str()).collect();
        let (gone, kept): (Vec<Arc<Live>>, Vec<Arc<Live>>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|l| pruned.contains(l.entry.key.as_str()));
        self.live = kept;
        let gone = gone.iter().map(|l| &l.entry).filter(|e| e.pages.is_some());
        let released = Entry::objects_of(gone);
        let any_released = !released.is_empty();
        for n in released {
            self.release(n.key, m.finished_at, n.size.unwrap_or(0));
        }
        if !m.collected.is_empty() {
            let released = Arc::make_mut(&mut self.released);
            for key in &m.collected {
                released.remove(key);
            }
        }
        if any_released {
            self.drop_needed();
        }
    }

    fn release(&mut self, key: String, at: Timestamp, size: u64) {
        let r = Arc::make_mut(&mut self.released)
            .entry(key)
            .or_insert(Released { at, size });
        r.at = r.at.max(at);
        r.size = r.size.max(size);
    }

    /// Forget released objects a listed snapshot needs: that snapshot
    /// releases them again when it is pruned.
    fn drop_needed(&mut self) {
        let needed = self.needed();
        Arc::make_mut(&mut self.released).retain(|key, _| !needed.contains(key));
    }

    /// The object keys listed incremental snapshots need.
    pub fn needed(&self) -> HashSet<String> {
        let live = self.live.iter().map(|l| &l.entry);
        Entry::objects_of(live.filter(|e| e.pages.is_some()))
            .into_iter()
            .map(|n| n.key)
            .collect()
    }

    /// The state a checkpoint written before version 5 describes: the
    /// pruned snapshots whole, and the objects collection freed.
    fn from_pruned_snapshots(
        live: Vec<Arc<Live>>,
        pruned: Vec<PrunedSnapshot>,
        collected: &BTreeSet<String>,
    ) -> State {
        let mut state = State {
            live,
            released: Default::default(),
        };
        for p in pruned {
            for n in p.entry.objects() {
                if !collected.contains(&n.key) {
                    state.release(n.key, p.pruned_at, n.size.unwrap_or(0));
                }
            }
        }
        state.drop_needed();
        state
    }

    /// Whether this state (a checkpoint's) is `replay`'s, page-map runs
    /// aside where this one left them in their manifests.
    pub fn matches_replay(&self, replay: &State) -> bool {
        if self.live.len() != replay.live.len() || self.released != replay.released {
            return false;
        }
        self.live.iter().zip(&replay.live).all(|(mine, theirs)| {
            let mut e = theirs.entry.clone();
            if let (Some(m), Some(t)) = (&mine.entry.pages, e.pages.as_mut())
                && let Some(run_id) = m.runs.manifest()
            {
                t.runs = Runs::in_manifest(run_id.map(str::to_string));
            }
            mine.run_id == theirs.run_id && mine.entry == e
        })
    }

    /// Every object key a listed snapshot names or collection waits to free.
    pub fn named_keys(&self) -> BTreeSet<String> {
        let live = Entry::objects_of(self.live.iter().map(|l| &l.entry));
        live.into_iter()
            .map(|n| n.key)
            .chain(self.released.keys().cloned())
            .collect()
    }
}

/// A pruned snapshot as checkpoints before version 5 stored it.
#[derive(Debug, Clone, Deserialize)]
struct PrunedSnapshot {
    pruned_at: Timestamp,
    entry: Entry,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always `sqlite-backup/checkpoint`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Run id of the manifest it summarises (the chain head as of it).
    pub run_id: String,
    /// SHA-256 of that manifest's bytes.
    pub head: String,
    /// [`manifest::field_digests`] of that manifest (the next append's
    /// `previous_fields`, without reading it again).
    pub head_fields: BTreeMap<String, String>,
    /// How many manifests it summarises.
    pub manifests: u64,
    /// The state as of that manifest. Stored with every pack reference
    /// once (see `compact` below): the entries of one chain name the same packs.
    #[serde(with = "compact")]
    pub state: State,
    /// Where its state's released objects are (version 7; before, they
    /// were inside `state`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_segments: Vec<Segment>,
    /// The segments as this process read them, to name again unwritten.
    #[serde(skip)]
    pub(crate) stored_segments: Vec<released::Stored>,
}

/// A state as stored in a checkpoint: the page maps' pack references in
/// one table, each entry naming its packs by position (version 2: the
/// snapshots of a chain name many of the same packs, so storing them per
/// entry grows with the square of the chain's depth), no page-map runs
/// (version 3: fragmented runs are most of an entry, 6.5 of 7.5 MB at a
/// thousand entries, and every run read the whole checkpoint), and the
/// released objects rather than the pruned snapshots (version 5). Runs read
/// from a checkpoint are [`Runs::in_manifest`]: [`load_runs`] reads them
/// from the entry's manifest when a snapshot is read or built on. Versions
/// 1 (whole entries) to 4 still read.
mod compact {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Live, PrunedSnapshot, Released, State};
    use crate::manifest::Entry;
    use crate::page_map::{PackRef, Runs};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Compact {
        packs: Vec<PackRef>,
        live: Vec<(Live, Vec<u32>)>,
        /// Version 5.
        #[serde(default)]
        released_objects: BTreeMap<String, Released>,
        /// Versions 2 to 4: pruned snapshots whole ...
        #[serde(default, skip_serializing)]
        released: Vec<(PrunedSnapshot, Vec<u32>)>,
        /// ... and the objects collection freed.
        #[serde(default, skip_serializing)]
        collected: BTreeSet<String>,
        /// The entries' runs are in their manifests (version 3).
        #[serde(default)]
        runs_in_manifests: bool,
    }

    /// Version 1.
    #[derive(Deserialize)]
    struct Whole {
        live: Vec<Arc<Live>>,
        released: Vec<PrunedSnapshot>,
        collected: BTreeSet<String>,
    }

    /// Store no runs: an empty list stands in, [`Compact::runs_in_manifests`] says so.
    fn drop_runs(entry: &mut Entry) {
        if let Some(map) = entry.pages.as_mut() {
            map.runs = Vec::new().into();
        }
    }

    /// Move `entry`'s pack references into `table`; their positions.
    fn intern(
        entry: &mut Entry,
        table: &mut Vec<PackRef>,
        seen: &mut HashMap<String, Vec<u32>>,
    ) -> Vec<u32> {
        let Some(map) = entry.pages.as_mut() else {
            return Vec::new();
        };
        std::mem::take(&mut map.packs)
            .into_iter()
            .map(|p| {
                let same = seen.entry(p.key.clone()).or_default();
                if let Some(&i) = same.iter().find(|&&i| table[i as usize] == p) {
                    return i;
                }
                let i = table.len() as u32;
                table.push(p);
                same.push(i);
                i
            })
            .collect()
    }

    fn restore(entry: &mut Entry, ids: &[u32], table: &[PackRef]) -> Result<(), String> {
        let packs = ids
            .iter()
            .map(|&i| table.get(i as usize).cloned().ok_or(format!("no pack {i}")))
            .collect::<Result<Vec<_>, _>>()?;
        match entry.pages.as_mut() {
            Some(map) => map.packs = packs,
            None if packs.is_empty() => {}
            None => return Err(format!("entry {} has no page map", entry.key)),
        }
        Ok(())
    }

    pub fn serialize<S: Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
        let (mut packs, mut seen) = (Vec::new(), HashMap::new());
        let live = state
            .live
            .iter()
            .map(|l| {
                let mut l = Live::clone(l);
                let ids = intern(&mut l.entry, &mut packs, &mut seen);
                drop_runs(&mut l.entry);
                (l, ids)
            })
            .collect();
        Compact {
            packs,
            live,
            released_objects: BTreeMap::clone(&state.released),
            released: Vec::new(),
            collected: BTreeSet::new(),
            runs_in_manifests: true,
        }
        .serialize(s)
    }

    /// Version 1 (see [`super::CheckpointV1`]).
    pub fn deserialize_v1<'de, D: Deserializer<'de>>(d: D) -> Result<State, D::Error> {
        let w = Whole::deserialize(d)?;
        Ok(State::from_pruned_snapshots(
            w.live,
            w.released,
            &w.collected,
        ))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<State, D::Error> {
        let c = Compact::deserialize(d)?;
        let bad = serde::de::Error::custom;
        let mut live = Vec::with_capacity(c.live.len());
        for (mut l, ids) in c.live {
            restore(&mut l.entry, &ids, &c.packs).map_err(bad)?;
            if let Some(map) = l.entry.pages.as_mut().filter(|_| c.runs_in_manifests) {
                map.runs = Runs::in_manifest(Some(l.run_id.clone()));
            }
            live.push(Arc::new(l));
        }
        if c.released.is_empty() {
            return Ok(State {
                live,
                released: Arc::new(c.released_objects),
            });
        }
        let mut pruned = Vec::with_capacity(c.released.len());
        for (mut r, ids) in c.released {
            restore(&mut r.entry, &ids, &c.packs).map_err(bad)?;
            pruned.push(r);
        }
        Ok(State::from_pruned_snapshots(live, pruned, &c.collected))
    }
}

/// A checkpoint of version 1 (whole entries), read only when the current
/// form does not parse: an untagged enum of both made serde buffer every
/// checkpoint whole before parsing it (a third of a run's CPU at a
/// thousand live entries).
#[derive(Deserialize)]
struct CheckpointV1 {
    format: String,
    version: u32,
    run_id: String,
    head: String,
    head_fields: BTreeMap<String, String>,
    manifests: u64,
    #[serde(deserialize_with = "compact::deserialize_v1")]
    state: State,
}

impl From<CheckpointV1> for Checkpoint {
    fn from(c: CheckpointV1) -> Self {
        Self {
            format: c.format,
            version: c.version,
            run_id: c.run_id,
            head: c.head,
            head_fields: c.head_fields,
            manifests: c.manifests,
            state: c.state,
            released_segments: Vec::new(),
            stored_segments: Vec::new(),
        }
    }
}

fn parse_checkpoint(json: &[u8]) -> serde_json::Result<Checkpoint> {
    serde_json::from_slice(json).or_else(|current| {
        serde_json::from_slice::<CheckpointV1>(json)
            .map(Checkpoint::from)
            .map_err(|_| current)
    })
}

impl Checkpoint {
    /// The chain head it names, as an append builds on it.
    fn tip(&self) -> Tip {
        Tip {
            key: manifest::manifest_key(&self.run_id),
            run_id: self.run_id.clone(),
            sha256: self.head.clone(),
            fields: self.head_fields.clone(),
        }
    }
}

/// Why a stored checkpoint is not used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Sink failure.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Not a checkpoint this version reads, or not matching its sidecar.
    #[error("checkpoint {key} is unreadable: {message}")]
    Malformed {
        /// Its key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Read one checkpoint, checked against its sidecar.
pub fn read_checkpoint(sink: &dyn Sink, key: &str) -> Result<Checkpoint, CheckpointError> {
    let malformed = |message: String| CheckpointError::Malformed {
        key: key.to_string(),
        message,
    };
    let bytes = get_bytes(sink, key)?;
    let sidecar = get_bytes(sink, &naming::sidecar_key(key))?;
    let sidecar = std::str::from_utf8(&sidecar)
        .ok()
        .and_then(|t| Sidecar::parse(t).ok())
        .ok_or_else(|| malformed("its sidecar is unreadable".into()))?;
    if sidecar.sha256 != Sha256::hex_of(&bytes) {
        return Err(malformed("SHA-256 does not match its sidecar".into()));
    }
    let mut c: Checkpoint = if bytes.starts_with(&ZSTD_MAGIC) {
        // Decoded whole, then parsed: serde_json parses a slice several
        // times faster than a reader (which it reads a byte at a time), and
        // every run reads the newest checkpoint. Past the cap the JSON ends
        // early and is malformed.
        let json = decode_capped(&bytes).map_err(|e| malformed(e.to_string()))?;
        parse_checkpoint(&json)
    } else {
        // Written before checkpoints were compressed.
        parse_checkpoint(&bytes)
    }
    .map_err(|e| malformed(e.to_string()))?;
    if c.format != FORMAT || c.version > VERSION {
        return Err(malformed(format!(
            "format {:?} version {} is not one this tool reads",
            c.format, c.version
        )));
    }
    if checkpoint_key(&c.run_id) != key {
        return Err(malformed(format!("it names run {}", c.run_id)));
    }
    if !c.released_segments.is_empty() {
        if !c.state.released.is_empty() {
            return Err(malformed(
                "it lists released objects both inside and in segments".into(),
            ));
        }
        let loaded = released::load(sink, &c.released_segments)?.map_err(malformed)?;
        c.state.released = Arc::new(loaded.objects);
        c.stored_segments = loaded.stored;
    }
    Ok(c)
}

/// Decode zstd-compressed JSON read from a sink, at most [`MAX_RATIO`]
/// bytes per compressed byte (past it the JSON ends early and is
/// malformed).
fn decode_capped(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let cap = (bytes.len() as u64).saturating_mul(MAX_RATIO);
    let decoder = zstd::stream::read::Decoder::new(bytes)?;
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(decoder, cap), &mut json)?;
    Ok(json)
}

/// Read the page-map runs of `entry` (listed under `run_id`) from its
/// manifest when a checkpoint left them there (one GET); the manifest is
/// checked against its sidecar, and its entry must be this one in every
/// other field. Does nothing when the runs are loaded.
pub fn load_runs(sink: &dyn Sink, entry: &mut Entry) -> Result<(), CatalogError> {
    let Some(run_id) = entry.pages.as_ref().and_then(|m| m.runs.manifest()) else {
        return Ok(());
    };
    let key = manifest::manifest_key(run_id.unwrap_or_default());
    let malformed = |message: &str| CatalogError::Malformed {
        key: key.clone(),
        message: message.to_string(),
    };
    if run_id.is_none() {
        return Err(malformed(
            "no manifest named for a pruned snapshot's page map",
        ));
    }
    let stored = manifest::read_one(sink, key.clone())?.ok_or_else(|| malformed("missing"))?;
    let Some(mut found) = stored
        .manifest
        .entries
        .into_iter()
        .find(|e| e.key == entry.key && e.label == entry.label)
    else {
        return Err(malformed(&format!("has no entry {}", entry.key)));
    };
    let elided = entry.pages.as_ref().map(|m| m.runs.clone());
    let runs = match (found.pages.as_mut(), elided) {
        (Some(m), Some(elided)) => std::mem::replace(&mut m.runs, elided),
        _ => return Err(malformed(&format!("entry {} has no page map", entry.key))),
    };
    // `base_bytes` only decides when a chain takes a new base, and a
    // checkpoint written by an older version drops it: the manifest's wins.
    let base_bytes = found.pages.as_ref().and_then(|m| m.base_bytes);
    if let Some(m) = found.pages.as_mut() {
        m.base_bytes = entry.pages.as_ref().and_then(|m| m.base_bytes);
    }
    if found != *entry {
        return Err(malformed(&format!(
            "entry {} differs from the catalog checkpoint's",
            entry.key
        )));
    }
    if let Some(map) = entry.pages.as_mut() {
        map.runs = runs;
        map.base_bytes = base_bytes;
    }
    Ok(())
}

/// The checkpoint keys of a sink, oldest first.
pub fn checkpoint_keys(sink: &dyn Sink) -> Result<Vec<String>, SinkError> {
    let mut keys: Vec<String> = sink
        .list(CHECKPOINT_DIR)?
        .into_iter()
        .filter(|k| k.ends_with(SUFFIX))
        .collect();
    keys.sort();
    Ok(keys)
}

/// A sink's catalog as read.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Its state as of the tip.
    pub state: State,
    /// The newest manifest.
    pub tip: Option<Tip>,
    /// How many manifests the chain holds up to the tip.
    pub manifests: u64,
    /// Manifests read after the checkpoint used (all of them without one).
    pub since_checkpoint: u64,
    /// The checkpoint it started from.
    pub checkpoint: Option<String>,
    /// Manifests that could not be read (only when every manifest was
    /// read): their entries are not offered.
    pub problems: Vec<String>,
    /// The claim the tip was read from, when it was reached by following
    /// one: its stored copy may be missing (its writer is between claim and
    /// store, or died there), and the next append completes it.
    pub tip_link: Option<String>,
    /// The released segments of the checkpoint read or written last.
    pub segments: Vec<released::Stored>,
}

/// Read `sink`'s catalog: the view this process kept of it, if it opted in
/// ([`memo::remember`]) and the sink still holds its tip, else the newest
/// usable checkpoint, else every manifest; then the manifests after it.
pub fn view(sink: &dyn Sink) -> Result<View, SinkError> {
    if let Some((mut kept, checked)) = memo::recall(sink)
        && (checked || advance(sink, &mut kept)?.is_ok())
    {
        memo::keep(sink, &kept);
        return Ok(kept);
    }
    let view = read_view(sink)?;
    memo::keep(sink, &view);
    Ok(view)
}

fn read_view(sink: &dyn Sink) -> Result<View, SinkError> {
    for key in checkpoint_keys(sink)?.iter().rev().take(CHECKPOINTS_KEPT) {
        let checkpoint = match read_checkpoint(sink, key) {
            Ok(c) => c,
            Err(CheckpointError::Sink(e)) if !e.is_not_found() => return Err(e),
            Err(e) => {
                warn!("sink {}: {e}; trying an older one", sink.name());
                continue;
            }
        };
        match follow(sink, key, checkpoint)? {
            Ok(view) => return Ok(view),
            Err(why) => {
                warn!(
                    "sink {}: the chain after checkpoint {key} does not add up ({why}); \
                     reading every manifest",
                    sink.name()
                );
                break;
            }
        }
    }
    replay(sink)
}

/// The chain after `checkpoint`, link by link; `Err(why)` when a link does
/// not prove the next manifest.
fn follow(
    sink: &dyn Sink,
    key: &str,
    checkpoint: Checkpoint,
) -> Result<Result<View, String>, SinkError> {
    let mut view = View {
        tip: Some(checkpoint.tip()),
        manifests: checkpoint.manifests,
        checkpoint: Some(key.to_string()),
        state: checkpoint.state,
        segments: checkpoint.stored_segments,
        ..View::default()
    };
    Ok(advance(sink, &mut view)?.map(|()| view))
}

/// Move `view` forward along the append links from its tip until a link is
/// missing; `Err(why)` (with `view` as far as it got) when a link does not
/// prove the next manifest.
fn advance(sink: &dyn Sink, view: &mut View) -> Result<Result<(), String>, SinkError> {
    let Some(mut head) = view.tip.as_ref().map(|t| t.sha256.clone()) else {
        return Ok(Ok(()));
    };
    loop {
        let link = link_key(Some(&head));
        let bytes = match get_bytes(sink, &link) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(Ok(())),
            Err(e) => return Err(e),
        };
        let m = match linked_manifest(sink, &link, &bytes, &head) {
            Ok(m) => m,
            Err(CatalogError::Sink(e)) => return Err(e),
            Err(e) => return Ok(Err(e.to_string())),
        };
        head = Sha256::hex_of(&bytes);
        view.state.apply(&m);
        view.manifests += 1;
        view.since_checkpoint += 1;
        view.tip = Some(Tip {
            key: m.key(),
            run_id: m.run_id.clone(),
            sha256: head.clone(),
            fields: manifest::field_digests(&bytes),
        });
        view.tip_link = Some(link);
    }
}

/// The manifest a link holds, checked as every manifest read is, and
/// against the one before it.
fn linked_manifest(
    sink: &dyn Sink,
    link: &str,
    bytes: &[u8],
    previous: &str,
) -> Result<Manifest, CatalogError> {
    let m = manifest::refuse_bad_keys(link, Manifest::from_bytes(link, bytes)?)?;
    if m.previous.as_deref() != Some(previous) {
        return Err(CatalogError::Malformed {
            key: link.to_string(),
            message: "it does not name the manifest before it".into(),
        });
    }
    // Its stored copy's sidecar, when written, must vouch for these bytes.
    manifest::check_sidecar(sink, &m.key(), bytes)?;
    Ok(m)
}

/// Every manifest, oldest first. The tip is the newest manifest of the same
/// listing, followed by its links: a manifest appended while the listing
/// was read is then counted in the state as well as named as the tip, so a
/// checkpoint written from this view never misses it.
fn replay(sink: &dyn Sink) -> Result<View, SinkError> {
    let keys = manifest::keys(sink)?;
    let mut state = State::default();
    let mut problems = Vec::new();
    let mut stored = Vec::new();
    for key in &keys {
        match manifest::read_one(sink, key.clone()) {
            Ok(Some(s)) => stored.push(s),
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    stored.sort_by(|a, b| a.manifest.run_id.cmp(&b.manifest.run_id));
    for s in &stored {
        state.apply(&s.manifest);
    }
    let read = (stored.len() + problems.len()) as u64;
    let mut view = View {
        state,
        tip: newest(sink, &keys)?,
        manifests: read,
        since_checkpoint: read,
        checkpoint: None,
        problems,
        tip_link: None,
        segments: Vec::new(),
    };
    if let Err(why) = advance(sink, &mut view)? {
        // Appends will meet the bad link themselves and say so.
        warn!("sink {}: {why}", sink.name());
    }
    Ok(view)
}

/// The newest of `keys` that is still there, as an append builds on it.
fn newest(sink: &dyn Sink, keys: &[String]) -> Result<Option<Tip>, SinkError> {
    for key in keys.iter().rev() {
        match get_bytes(sink, key) {
            Ok(bytes) => {
                return Ok(Some(Tip {
                    key: key.clone(),
                    run_id: manifest::run_id_of_key(key).to_string(),
                    sha256: Sha256::hex_of(&bytes),
                    fields: manifest::field_digests(&bytes),
                }));
            }
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Replay every manifest of `sink` and store a checkpoint of the result,
/// unless a manifest is unreadable. Returns the checkpoint's key.
pub fn checkpoint_whole(sink: &dyn Sink) -> Result<Option<String>, SinkError> {
    let view = replay(sink)?;
    match (&view.tip, view.problems.is_empty()) {
        (Some(tip), true) => {
            write_checkpoint(sink, &view.state, tip, view.manifests, &[]);
            Ok(Some(checkpoint_key(&tip.run_id)))
        }
        _ => Ok(None),
    }
}

/// Store a checkpoint of `state` as of the manifest `tip` (the
/// `manifests`-th), its released objects in the segments `known` does not
/// already hold, then delete the checkpoints before the last few and the
/// segments neither it nor `known` (the checkpoint before, kept) names.
/// Returns its segments. A checkpoint only saves readers time, so failures
/// are logged, not returned.
pub fn write_checkpoint(
    sink: &dyn Sink,
    state: &State,
    tip: &Tip,
    manifests: u64,
    known: &[released::Stored],
) -> Option<Vec<released::Stored>> {
    let written = released::present(sink).and_then(|present| {
        Ok((
            released::store(sink, &state.released, known, &present)?,
            present,
        ))
    });
    let (segments, present) = match written {
        Ok(s) => s,
        Err(e) => {
            warn!("sink {}: storing released segments: {e}", sink.name());
            return None;
        }
    };
    let c = Checkpoint {
        format: FORMAT.into(),
        version: VERSION,
        run_id: tip.run_id.clone(),
        head: tip.sha256.clone(),
        head_fields: tip.fields.clone(),
        manifests,
        state: State {
            live: state.live.clone(),
            released: Default::default(),
        },
        released_segments: released::named(&segments),
        stored_segments: Vec::new(),
    };
    let key = checkpoint_key(&c.run_id);
    let json = serde_json::to_vec(&c).expect("a checkpoint serializes");
    let bytes = zstd::encode_all(json.as_slice(), 3).expect("compressing in memory");
    let sidecar = Sidecar::new(Sha256::hex_of(&bytes), naming::file_name(&key)).render();
    // Sidecar first: a checkpoint without a matching sidecar is not used.
    let stored = sink
        .put(&naming::sidecar_key(&key), sidecar.as_bytes())
        .and_then(|()| sink.put(&key, &bytes));
    if let Err(e) = stored {
        warn!("sink {}: storing checkpoint {key}: {e}", sink.name());
        return None;
    }
    info!(
        sink = sink.name(),
        key = %key,
        manifests,
        live = state.live.len(),
        released = state.released.len(),
        segments = segments.len(),
        bytes = bytes.len(),
        "checkpoint written"
    );
    let old = match checkpoint_keys(sink) {
        Ok(keys) => keys,
        Err(e) => {
            warn!("sink {}: listing checkpoints: {e}", sink.name());
            return Some(segments);
        }
    };
    let keep_from = old.len().saturating_sub(CHECKPOINTS_KEPT);
    for k in old[..keep_from].iter().filter(|k| **k < key) {
        for k in [naming::sidecar_key(k), k.clone()] {
            if let Err(e) = sink.delete(&k) {
                warn!("sink {}: deleting old checkpoint {k}: {e}", sink.name());
            }
        }
    }
    let keep: BTreeSet<&str> = segments.iter().chain(known).map(|s| s.key()).collect();
    released::delete_unnamed(sink, &present, &keep);
    Some(segments)
}

/// Every artifact still listed in `sink`'s catalog, newest first.
pub fn listed(sink: &dyn Sink, state: &State) -> Vec<Listed> {
    let mut out: Vec<Listed> = state
        .live
        .iter()
        .map(|l| Listed {
            sink: sink.name().to_string(),
            placement: sink.placement(),
            run_id: l.run_id.clone(),
            entry: l.entry.clone(),
        })
        .collect();
    out.sort_by_key(|l| std::cmp::Reverse(l.entry.snapshot_at));
    out
}

/// The catalog of several sinks together: every listed artifact, newest
/// first (ties keep the sinks' order, so put the preferred sink first), and
/// the problems met reading it (an unreadable sink or manifest).
pub fn collect(sinks: &[&dyn Sink]) -> (Vec<Listed>, Vec<String>) {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for sink in sinks {
        match view(*sink) {
            Ok(v) => {
                problems.extend(
                    v.problems
                        .iter()
                        .map(|e| format!("sink {}: {e}", sink.name())),
                );
                all.extend(listed(*sink, &v.state));
            }
            Err(e) => problems.push(format!("sink {}: {e}", sink.name())),
        }
    }
    // Stable sort: equal times keep sink order.
    all.sort_by_key(|l| std::cmp::Reverse(l.entry.snapshot_at));
    (all, problems)
}
