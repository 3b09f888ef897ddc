//! Incremental page-level snapshots.
//!
//! A run reads every page of one pinned read transaction (as the full fast
//! path does), hashes each page with BLAKE3 and compares the hashes with the
//! previous snapshot of the same database on the same sink. Only pages that
//! differ are stored, zstd-compressed, in *packs* of at most
//! [`PACK_RAW_BYTES`] of pages each. The manifest entry's [`PageMap`](crate::page_map::PageMap) says
//! where every page of the image lives (run-length encoded). The page map's
//! `hashes_sha256` (SHA-256 over every page's hash) is the image's digest,
//! and the entry's `db_sha256` the SHA-256 of the whole image when the run
//! read every page (a run that read only the pages the WAL named has none:
//! manifest version 2). Verify and restore check both on the reassembled
//! image.
//!
//! Objects a snapshot writes next to its template-named key:
//! - `<base>.NNN.pack`: the pages it stored, in page order, one zstd frame;
//! - `<base>.pageidx`: the entry's `key` (with a sidecar, like an artifact):
//!   the 16-byte BLAKE3 hashes of the pages of its packs, in pack order, zstd
//!   compressed. The next run reads it instead of re-reading the packs.
//!
//! A run where nothing changed writes no pack: only its (tiny) index, its
//! sidecar and a manifest entry whose page map points at earlier packs.
//! Runs also fold the live pages of the chain's small packs into their own
//! ([`crate::compaction`]), so a snapshot needs a bounded number of packs
//! at any chain depth.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

use crate::compress::{Compression, Format};
use crate::database::Database;
use crate::digest::{HashingReader, Sha256};
use crate::encryption::{Identities, Recipients};
use crate::manifest::Entry;
use crate::page_map::{PackRef, PageMapError, Run};
use crate::sink::{Sink, SinkError};
use crate::source::Source;

pub mod hash_file;
pub(crate) mod local_packs;

/// Raw page bytes per pack before it is closed and a new one started.
pub const PACK_RAW_BYTES: u64 = 8 << 20;

/// zstd level of XOR delta packs (base packs use zstd's default). A delta
/// is mostly zero bytes, on which a higher level costs little: level 9
/// stored a soak's deltas 9 % smaller than level 3, for about 2 ms more a
/// pack of a few hundred changed pages.
const XOR_PACK_LEVEL: i32 = 9;

/// XOR packs' match tables, 2^18 entries each instead of level 9's 2^22 and
/// 2^21 (24 MiB that a new encoder zeroes for every pack): on the soak's
/// deltas they stored as small (0.2 % smaller), 0.85 ms a pack faster.
const XOR_TABLE_LOG: u32 = 18;

/// Bytes of each page hash (BLAKE3, truncated to 128 bits).
pub const HASH_LEN: usize = 16;
/// A page's hash.
pub(crate) type PageHash = [u8; HASH_LEN];

/// The default `max_chain` before chains recorded their base's size; it
/// still ends the chains that do not.
const LEGACY_MAX_CHAIN: u32 = 1440;

/// When an incremental run starts a new chain with a full base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A chain older than this (since its full base) gets a new base.
    pub full_every: Duration,
    /// A chain this many snapshots deep (base excluded) gets a new base.
    /// Restores stay fast at any depth (compaction, and the bytes rule in
    /// `decide`), so the default is a day of one run a second.
    pub max_chain: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            full_every: Duration::from_secs(24 * 3600),
            max_chain: 86_400,
        }
    }
}

impl Policy {
    /// Refuse a policy under which every run takes a new full base:
    /// incremental in name only.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.full_every.is_zero() {
            return Err(PolicyError::ZeroFullEvery);
        }
        if self.max_chain == 0 {
            return Err(PolicyError::ZeroMaxChain);
        }
        Ok(())
    }
}

/// An incremental [`Policy`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// [`Policy::full_every`] is zero.
    #[error("full_every must be longer than zero")]
    ZeroFullEvery,
    /// [`Policy::max_chain`] is zero.
    #[error("max_chain must be at least 1")]
    ZeroMaxChain,
}

/// Why the previous snapshot's page hashes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    /// Reading the sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The snapshot's page map cannot be used.
    #[error("{key}: {error}")]
    Map {
        /// The snapshot's key.
        key: String,
        /// What is wrong with its map.
        #[source]
        error: PageMapError,
    },
    /// A sealed chain's page hashes are never read back from the sink: the
    /// host that backs up holds no key that opens them.
    #[error(
        "{key} is sealed: its page hashes are kept only in the local cache of the host that wrote it"
    )]
    Sealed {
        /// The snapshot's key.
        key: String,
    },
    /// The index does not match its recorded digest or is malformed.
    #[error("page-hash index {key}: {reason}")]
    Damaged {
        /// Its key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// BLAKE3 of a page, truncated to [`HASH_LEN`] bytes.
pub(crate) fn page_hash(page: &[u8]) -> PageHash {
    let full = blake3::hash(page);
    let mut h = [0u8; HASH_LEN];
    h.copy_from_slice(&full.as_bytes()[..HASH_LEN]);
    h
}

/// The newest entry of `db` (its label, from its own source) in `sink`'s
/// catalog, if it is an incremental-mode snapshot (a classic artifact has
/// no page hashes: the next run is then a full base). Another host's
/// snapshot under the same label is never a base: its pages are another
/// database's.
///
/// The catalog is read from its newest checkpoint on
/// ([`crate::manifest::view`]), so a run reads a bounded number of objects
/// whatever the catalog's length. Unreadable manifests are skipped, as
/// readers skip them.
pub fn previous(sink: &dyn Sink, db: &Database) -> Result<Option<Entry>, SinkError> {
    let own = Source::local(db);
    let view = crate::manifest::view::view(sink)?;
    let newest = view
        .state
        .live
        .iter()
        .map(|l| &l.entry)
        .filter(|e| e.label == db.label && own.owns(e))
        .max_by_key(|e| e.snapshot_at)
        .cloned();
    let Some(mut newest) = newest.filter(|e| e.pages.is_some()) else {
        return Ok(None);
    };
    // A run builds on its page map: read the runs a checkpoint left in the
    // manifest. If that fails, the map does not check and a new chain starts.
    if let Err(e) = crate::manifest::view::load_runs(sink, &mut newest) {
        tracing::warn!("sink {}: {e}", sink.name());
    }
    Ok(Some(newest))
}

/// The hash of every page of `entry`'s image, read from the page-hash
/// indexes its packs name (each read once, checked against its digest).
pub(crate) fn load_hashes(sink: &dyn Sink, entry: &Entry) -> Result<Vec<PageHash>, IndexError> {
    let map = entry.pages.as_ref().ok_or_else(|| IndexError::Damaged {
        key: entry.key.clone(),
        reason: "not an incremental-mode snapshot".into(),
    })?;
    if entry.is_encrypted() {
        return Err(IndexError::Sealed {
            key: entry.key.clone(),
        });
    }
    if map.has_xor() {
        // Its index holds the hashes of the pages its deltas changed, not
        // of every page: they are kept only in the local cache.
        return Err(IndexError::Damaged {
            key: entry.key.clone(),
            reason: "a snapshot with XOR deltas keeps its page hashes only in the local cache"
                .into(),
        });
    }
    let bad_map = |error| IndexError::Map {
        key: entry.key.clone(),
        error,
    };
    map.check(entry.page_count).map_err(bad_map)?;
    // Hashes each index must hold: as far as its packs of this map reach.
    // Only that prefix is decoded, so memory follows this map, not what
    // the index (written for an older, maybe larger image) claims.
    let mut needed: HashMap<&str, u64> = HashMap::new();
    for p in &map.packs {
        let end = p.index_at.saturating_add(p.pages);
        let n = needed.entry(p.index.as_str()).or_default();
        *n = (*n).max(end);
    }
    let mut indexes: HashMap<&str, Vec<u8>> = HashMap::new();
    for p in &map.packs {
        if !indexes.contains_key(p.index.as_str()) {
            let bytes = crate::sink::get_bytes(sink, &p.index)?;
            let damaged = |reason: String| IndexError::Damaged {
                key: p.index.clone(),
                reason,
            };
            if Sha256::hex_of(&bytes) != p.index_sha256 {
                return Err(damaged("SHA-256 differs from the manifest's".into()));
            }
            let want = needed[p.index.as_str()].saturating_mul(HASH_LEN as u64);
            let mut raw = Vec::new();
            zstd::stream::read::Decoder::new(bytes.as_slice())
                .and_then(|d| d.take(want).read_to_end(&mut raw))
                .map_err(|e| damaged(e.to_string()))?;
            if (raw.len() as u64) < want {
                return Err(damaged(format!(
                    "holds {} page hashes, its packs need {}",
                    raw.len() / HASH_LEN,
                    want / HASH_LEN as u64
                )));
            }
            indexes.insert(p.index.as_str(), raw);
        }
    }
    let runs = map.runs.list(entry.page_count).map_err(bad_map)?;
    let mut out = Vec::with_capacity(entry.page_count as usize);
    for &Run {
        count, pack, at, ..
    } in runs.iter()
    {
        let p = &map.packs[pack as usize];
        let index = &indexes[p.index.as_str()];
        let start = ((p.index_at + at) as usize) * HASH_LEN;
        let end = start + count as usize * HASH_LEN;
        let slice = index.get(start..end).ok_or_else(|| IndexError::Damaged {
            key: p.index.clone(),
            reason: format!("too short for {}", p.key),
        })?;
        out.extend_from_slice(slice.as_chunks::<HASH_LEN>().0);
    }
    Ok(out)
}

/// SHA-256 of page hashes in page order.
pub fn hashes_digest(hashes: &[PageHash]) -> String {
    let mut d = Sha256::new();
    for h in hashes {
        d.update(h);
    }
    d.finish_hex()
}

fn cache_file(dir: &Path, sink: &str, label: &str) -> std::path::PathBuf {
    dir.join(format!("{sink}.{label}.pagehashes"))
}

/// `entry`'s page hashes from the local cache in `dir`, when the cached copy
/// matches the digest its manifest records; `None` otherwise (missing,
/// stale, damaged, or written for another snapshot), and the caller reads
/// them from the sink. The cache saves a remote sink one download of every
/// page index a snapshot's packs name, on every run.
///
/// `seal`: the recipients this run seals to. A sealed entry's cache matches
/// only under the recipients (and passphrase) it was sealed with.
pub fn cached_hashes(
    dir: &Path,
    sink: &str,
    entry: &Entry,
    seal: Option<&Recipients>,
) -> Option<Vec<PageHash>> {
    if entry.is_encrypted() != seal.is_some() {
        return None;
    }
    let file = cache_file(dir, sink, &entry.label);
    cached_in(dir, &file, entry, seal)
        .or_else(|| cached_in(dir, &previous_cache(&file), entry, seal))
}

/// The cache before the newest run's: a run killed before its manifest
/// leaves the catalog at the snapshot it describes.
fn previous_cache(file: &Path) -> std::path::PathBuf {
    file.with_extension("pagehashes.prev")
}

fn cached_in(
    dir: &Path,
    file: &Path,
    entry: &Entry,
    seal: Option<&Recipients>,
) -> Option<Vec<PageHash>> {
    let want = entry.pages.as_ref()?.hashes_sha256.as_ref()?;
    hash_file::read_if(file, entry.page_count, |digest| {
        recorded_digest(dir, digest, seal).is_some_and(|r| r == *want)
    })
}

/// What the manifest of a snapshot whose page hashes have `digest` records
/// in the clear: the digest itself, or for a chain sealed to `seal` its
/// [`sealed_tag`]; `None` when the tag's key cannot be had.
pub(crate) fn recorded_digest(
    dir: &Path,
    digest: &str,
    seal: Option<&Recipients>,
) -> Option<String> {
    let Some(seal) = seal else {
        return Some(digest.to_string());
    };
    sealed_tag(dir, digest, &seal.tag_context())
        .inspect_err(|e| {
            tracing::warn!(
                "cannot use the sealed chains' tag key in {}: {e}",
                dir.display()
            )
        })
        .ok()
}

/// The key file of [`sealed_tag`], in the page-hash cache folder.
const TAG_KEY: &str = "sealed-tag.key";

/// What a sealed chain's manifest shows of its page-hash digest: the digest
/// and the sealing's `context` ([`Recipients::tag_context`]) keyed (BLAKE3)
/// with a secret only this host holds, made on first use in `dir`. An
/// unkeyed digest of the page hashes would let anyone with a guess of the
/// whole database confirm it; the keyed one lets only the host that wrote
/// the snapshot match its cached hashes to it, and only under the same
/// recipients or passphrase (a new passphrase then starts a new chain). A
/// lost key costs a new full base, as a lost cache does.
pub(crate) fn sealed_tag(dir: &Path, digest: &str, context: &[u8]) -> io::Result<String> {
    let key = tag_key(dir)?;
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(digest.as_bytes());
    h.update(&[0]);
    h.update(context);
    Ok(h.finalize().to_hex().to_string())
}

fn tag_key(dir: &Path) -> io::Result<[u8; 32]> {
    let path = dir.join(TAG_KEY);
    let read = |path: &Path| -> io::Result<[u8; 32]> {
        std::fs::read(path)?.try_into().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a 32-byte key", path.display()),
            )
        })
    };
    // A damaged key is replaced: what it tagged no longer matches (one new
    // base), and the chains after it work again.
    let damaged = match read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(
                "{e}; making a new one (the next run of each sealed chain is a full base)"
            );
            true
        }
        other => return other,
    };
    crate::fsutil::create_dir_all_mode(dir, 0o700)?;
    let key: [u8; 32] = rand::random();
    // A private temporary file linked into place, never over another: two
    // runs making the key at once both use the first one linked.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&key)?;
    tmp.as_file().sync_all()?;
    if damaged {
        tmp.persist(&path).map_err(|e| e.error)?;
        return Ok(key);
    }
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(e.error),
    }
}

/// Keep `hashes` (a new snapshot's, in page order, whose digest is
/// `digest`) as the cache for the next run of `label` to `sink`: a private
/// file, replaced atomically.
///
/// The cache it replaces becomes the previous one only when it is of
/// `previous` (what the manifest of the snapshot this run builds on, the
/// sink's newest, records of its page hashes, see [`recorded_digest`]):
/// after a failed run the cache is of a snapshot the catalog never listed,
/// and a second failed run must not rotate the newest listed snapshot's
/// hashes away (an XOR or sealed chain cannot read them back from the sink,
/// so losing them costs a new base).
pub(crate) fn cache_hashes(
    dir: &Path,
    sink: &str,
    label: &str,
    hashes: &[PageHash],
    digest: &str,
    previous: Option<&str>,
    seal: Option<&Recipients>,
) -> io::Result<()> {
    crate::fsutil::create_dir_all_mode(dir, 0o700)?;
    let file = cache_file(dir, sink, label);
    let rotate = match previous {
        // A new base: whatever the sink's newest is, it is not this run's.
        None => true,
        Some(previous) => hash_file::digest(&file)?
            .and_then(|d| recorded_digest(dir, &d, seal))
            .is_some_and(|d| d == previous),
    };
    if rotate {
        match hash_file::rename(&file, &previous_cache(&file)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    hash_file::write(&file, hashes, digest)
}

/// What a run stores for one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every page, a new chain; the reason is logged.
    Full(String),
    /// Only the pages marked true, on top of the previous snapshot.
    Incremental(Vec<bool>),
}

/// Decide, from the previous snapshot and its page hashes, what this run
/// stores. A pure function of its inputs; `sealed_to` is the fingerprints
/// of the recipients this run seals to (empty: not sealed).
pub(crate) fn decide(
    previous: Option<(&Entry, &[PageHash])>,
    page_size: u64,
    hashes: &[PageHash],
    now: Timestamp,
    policy: &Policy,
    sealed_to: &[String],
) -> Decision {
    let Some((prev, prev_hashes)) = previous else {
        return Decision::Full("no earlier incremental-mode snapshot on this sink".into());
    };
    let Some(map) = &prev.pages else {
        return Decision::Full("the newest snapshot is a full artifact".into());
    };
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    if sorted(&prev.encrypted_to) != sorted(sealed_to) {
        return Decision::Full(
            match (prev.encrypted_to.is_empty(), sealed_to.is_empty()) {
                (true, _) => "the newest snapshot is not sealed; this chain is",
                (_, true) => "the newest snapshot is sealed; this chain is not",
                _ => "the recipients changed: a chain sealed to the new ones starts",
            }
            .into(),
        );
    }
    if prev.page_size != page_size {
        return Decision::Full(format!(
            "page size changed ({} → {page_size})",
            prev.page_size
        ));
    }
    if map.chain_depth >= policy.max_chain {
        return Decision::Full(format!("chain reached {} snapshots", map.chain_depth));
    }
    // A restore reads every pack the image needs: once they hold half as
    // much again as the base, a new base costs less than what every later
    // restore (and the chain's storage) would.
    match map.base_bytes {
        Some(base) => {
            let needed = map.packs.iter().fold(0u64, |n, p| n.saturating_add(p.size));
            if needed > base.saturating_add(base / 2) {
                return Decision::Full(format!(
                    "the packs the image needs hold {needed} bytes, 1.5x its base's {base}"
                ));
            }
        }
        // A chain begun before the base's size was recorded keeps the
        // depth limit it began under.
        None if map.chain_depth >= LEGACY_MAX_CHAIN.min(policy.max_chain) => {
            return Decision::Full(format!("chain reached {} snapshots", map.chain_depth));
        }
        None => {}
    }
    let age = now.duration_since(map.chain_started);
    if age.as_secs_f64() >= policy.full_every.as_secs_f64() {
        return Decision::Full("chain reached full_every".into());
    }
    let changed: Vec<bool> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| prev_hashes.get(i) != Some(h))
        .collect();
    let n = changed.iter().filter(|c| **c).count();
    // Past half the pages, a chain link costs about what a base does, and a
    // base shortens every later restore.
    if n * 2 > hashes.len() {
        return Decision::Full(format!("{n} of {} pages changed", hashes.len()));
    }
    Decision::Incremental(changed)
}

/// Collects pages into packs of at most [`PACK_RAW_BYTES`] and stores each
/// one as it closes, so memory stays bounded by one pack.
pub(crate) struct PackWriter<'a> {
    sink: &'a dyn Sink,
    base: String,
    index_key: String,
    current: Option<(zstd::stream::write::Encoder<'static, Vec<u8>>, u64)>,
    /// Packs stored so far.
    pub packs: Vec<PackRef>,
    /// Hashes of every page written, in pack order.
    hashes: Vec<u8>,
    level: i32,
    /// Writing XOR packs: the page numbers of the current pack's deltas.
    xor: Option<Vec<u64>>,
    /// A sealed chain: each pack and the index is one age file.
    seal: Option<Recipients>,
    /// Where a sealed chain keeps the plaintext of its XOR packs.
    keep_plain: Option<local_packs::LocalPacks>,
}

impl<'a> PackWriter<'a> {
    /// Packs named `<base>.NNN.pack`, indexed by `index_key`.
    pub fn new(sink: &'a dyn Sink, base: &str, index_key: &str, level: i32) -> Self {
        Self {
            sink,
            base: base.to_string(),
            index_key: index_key.to_string(),
            current: None,
            packs: Vec::new(),
            hashes: Vec::new(),
            level,
            xor: None,
            seal: None,
            keep_plain: None,
        }
    }

    /// Seal every pack and the index to `recipients`; keep a copy of each
    /// XOR pack (its plaintext, when sealed) in `local` for later folds.
    pub(crate) fn sealed_to(
        self,
        recipients: Option<Recipients>,
        local: Option<local_packs::LocalPacks>,
    ) -> Self {
        Self {
            seal: recipients,
            keep_plain: local,
            ..self
        }
    }

    /// A writer of XOR packs ([`crate::xor_pack`]), added to with
    /// [`Self::add_delta`].
    pub fn xor(sink: &'a dyn Sink, base: &str, index_key: &str) -> Self {
        Self {
            xor: Some(Vec::new()),
            ..Self::new(sink, base, index_key, XOR_PACK_LEVEL)
        }
    }

    /// Add the XOR delta of page `page_no` (page numbers ascending); `hash`
    /// is the page's in this run's image.
    pub fn add_delta(
        &mut self,
        page_no: u64,
        delta: &[u8],
        hash: &PageHash,
    ) -> Result<(), SinkError> {
        self.add(delta, hash)?;
        self.xor
            .as_mut()
            .expect("a writer of XOR packs")
            .push(page_no);
        Ok(())
    }

    /// Key of pack `n`.
    pub(crate) fn pack_key(base: &str, n: usize) -> String {
        format!("{base}.{n:03}.pack")
    }

    /// Add a page; returns (pack number, page offset in it).
    pub fn add(&mut self, page: &[u8], hash: &PageHash) -> Result<(u32, u64), SinkError> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, n)| n * page.len() as u64 >= PACK_RAW_BYTES)
        {
            self.close()?;
        }
        if self.current.is_none() {
            let enc = self.encoder().map_err(|e| io_sink(&self.base, e))?;
            self.current = Some((enc, 0));
        }
        let (enc, n) = self.current.as_mut().expect("just opened");
        enc.write_all(page).map_err(|e| io_sink(&self.base, e))?;
        self.hashes.extend_from_slice(hash);
        let at = *n;
        *n += 1;
        Ok((self.packs.len() as u32, at))
    }

    fn encoder(&self) -> io::Result<zstd::stream::write::Encoder<'static, Vec<u8>>> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), self.level)?;
        if self.xor.is_some() {
            use zstd::stream::raw::CParameter::{ChainLog, HashLog};
            enc.set_parameter(HashLog(XOR_TABLE_LOG))?;
            enc.set_parameter(ChainLog(XOR_TABLE_LOG))?;
        }
        Ok(enc)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let Some((enc, pages)) = self.current.take() else {
            return Ok(());
        };
        let mut bytes = enc.finish().map_err(|e| io_sink(&self.base, e))?;
        let xor = self.xor.is_some();
        if let Some(list) = self.xor.as_mut() {
            let header =
                crate::xor_pack::header(list, self.level).map_err(|e| io_sink(&self.base, e))?;
            list.clear();
            bytes.splice(0..0, header);
        }
        let key = Self::pack_key(&self.base, self.packs.len());
        let plain = match &self.seal {
            Some(r) => {
                let sealed = r.seal_bytes(&bytes).map_err(|e| io_sink(&self.base, e))?;
                Some(std::mem::replace(&mut bytes, sealed))
            }
            None => None,
        };
        if let (true, Some(local)) = (xor, &self.keep_plain) {
            let kept = local.keep(
                &key,
                plain.as_ref().unwrap_or(&bytes),
                &Sha256::hex_of(&bytes),
            );
            if let Err(e) = kept {
                // A sealed chain's fold then costs a full base; an unsealed
                // one reads the pack back from the sink.
                tracing::warn!("cannot keep a copy of {key} for later folds: {e}");
            }
        }
        self.sink.put(&key, &bytes)?;
        let index_at = self.packs.iter().map(|p| p.pages).sum();
        self.packs.push(PackRef {
            key,
            size: bytes.len() as u64,
            sha256: Sha256::hex_of(&bytes),
            pages,
            index: self.index_key.clone(),
            index_sha256: String::new(),
            index_at,
            xor,
        });
        Ok(())
    }

    /// Store the last pack and return the packs and the compressed index
    /// bytes (the caller stores the index, its sidecar, and fills in
    /// `index_sha256` through [`Self::finish`]'s result).
    pub fn finish(mut self) -> Result<(Vec<PackRef>, Vec<u8>), SinkError> {
        self.close()?;
        // Its size known, zstd sizes its tables to it.
        let mut index = zstd::bulk::compress(&self.hashes, self.level)
            .map_err(|e| io_sink(&self.index_key, e))?;
        if let Some(r) = &self.seal {
            index = r
                .seal_bytes(&index)
                .map_err(|e| io_sink(&self.index_key, e))?;
        }
        let sha = Sha256::hex_of(&index);
        for p in &mut self.packs {
            p.index_sha256 = sha.clone();
        }
        Ok((self.packs, index))
    }
}

fn io_sink(key: &str, e: io::Error) -> SinkError {
    SinkError::Remote {
        op: "compress",
        key: key.to_string(),
        message: e.to_string(),
    }
}

pub use crate::page_map::PackProblem;

/// Reassemble `entry`'s image into `out` (a new, empty file): every pack
/// the page map needs is read once, in order, with one page in memory at a
/// time, checked against its recorded size and SHA-256, and opened with
/// `keys` when the chain is sealed. Returns the image's digests, or the
/// first pack found missing or damaged.
pub(crate) fn reassemble(
    sink: &dyn Sink,
    entry: &Entry,
    out: &std::fs::File,
    keys: Option<&Identities>,
) -> io::Result<Result<Reassembled, PackProblem>> {
    // An entry read from a checkpoint has its runs in its manifest.
    let loaded;
    let entry = if entry
        .pages
        .as_ref()
        .is_some_and(|m| m.runs.manifest().is_some())
    {
        let mut e = entry.clone();
        if let Err(e) = crate::manifest::view::load_runs(sink, &mut e) {
            return Ok(Err(PackProblem {
                key: entry.key.clone(),
                reason: e.to_string(),
            }));
        }
        loaded = e;
        &loaded
    } else {
        entry
    };
    let Some(map) = &entry.pages else {
        return Ok(Err(PackProblem {
            key: entry.key.clone(),
            reason: "not an incremental-mode snapshot".into(),
        }));
    };
    if let Err(e) = map.check(entry.page_count) {
        return Ok(Err(PackProblem {
            key: entry.key.clone(),
            reason: e.to_string(),
        }));
    }
    let page_size = entry.page_size as usize;
    out.set_len(entry.page_count * entry.page_size)?;
    // Per pack: (offset in pack, count, first image page), in pack order.
    let runs = match map.runs.list(entry.page_count) {
        Ok(runs) => runs,
        Err(e) => {
            return Ok(Err(PackProblem {
                key: entry.key.clone(),
                reason: e.to_string(),
            }));
        }
    };
    let mut wanted: BTreeMap<u32, Vec<Span>> = BTreeMap::new();
    for &Run {
        first,
        count,
        pack,
        at,
    } in runs.iter()
    {
        wanted.entry(pack).or_default().push((at, count, first));
    }
    let work: Vec<(u32, Vec<Span>)> = wanted.into_iter().collect();
    let plain = in_parallel(
        work.len(),
        |i, page| {
            let (pack, spans) = &work[i];
            let p = &map.packs[*pack as usize];
            let keys = keys.filter(|_| entry.is_encrypted());
            read_pack(sink, p, spans, entry.page_size, page, out, keys)
        },
        page_size,
    );
    if let Err(problem) = plain? {
        return Ok(Err(problem));
    }
    // The XOR deltas apply on top of the whole image the runs describe, in
    // any order; one page's read-XOR-write at a time.
    let xor: Vec<&PackRef> = map.packs.iter().filter(|p| p.xor).collect();
    let locks: Vec<std::sync::Mutex<()>> = (0..64).map(|_| Default::default()).collect();
    let deltas = in_parallel(
        xor.len(),
        |i, page| apply_xor(sink, xor[i], entry, page, out, &locks, keys),
        page_size,
    );
    if let Err(problem) = deltas? {
        return Ok(Err(problem));
    }
    out.sync_all()?;
    // One more sequential pass for the image digests: pages were written
    // out of order above.
    let mut sha256 = Sha256::new();
    let mut pages = Sha256::new();
    let mut buf = vec![0u8; page_size.max(1 << 20) / page_size * page_size];
    let mut at = 0u64;
    let len = entry.page_count * entry.page_size;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        out.read_exact_at(&mut buf[..n], at)?;
        sha256.update(&buf[..n]);
        for page in buf[..n].chunks(page_size) {
            pages.update(&page_hash(page));
        }
        at += n as u64;
    }
    Ok(Ok(Reassembled {
        sha256: sha256.finish_hex(),
        size: len,
        pages_sha256: pages.finish_hex(),
    }))
}

/// The digests of a reassembled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembled {
    /// SHA-256 of the whole image.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 over its pages' hashes ([`hashes_digest`]).
    pub pages_sha256: String,
}

impl Reassembled {
    /// The digests of `image` (page size `page_size`).
    pub fn of(image: &[u8], page_size: u64) -> Self {
        let hashes: Vec<PageHash> = image.chunks(page_size as usize).map(page_hash).collect();
        Self {
            sha256: Sha256::hex_of(image),
            size: image.len() as u64,
            pages_sha256: hashes_digest(&hashes),
        }
    }

    /// The first digest `entry` records that this image does not have:
    /// `(which, recorded, found)`. An entry has a whole-image SHA-256 unless
    /// its run read only the pages the WAL named; every entry written since
    /// page hashes existed has their digest.
    pub fn mismatch(&self, entry: &Entry) -> Option<(&'static str, String, String)> {
        if !entry.db_sha256.is_empty() && entry.db_sha256 != self.sha256 {
            return Some((
                "image SHA-256",
                entry.db_sha256.clone(),
                self.sha256.clone(),
            ));
        }
        let recorded = entry.pages.as_ref()?.hashes_sha256.as_ref()?;
        (*recorded != self.pages_sha256).then(|| {
            (
                "page-hash digest",
                recorded.clone(),
                self.pages_sha256.clone(),
            )
        })
    }
}

/// Run `job(i, page buffer)` for `i` in `0..jobs`, a few at a time: against
/// a remote sink each GET waits on the network, and a deep chain needs
/// many packs. Each reader holds one page and one decoder, so memory stays
/// bounded. The first failure in job order, as a sequential read would find
/// it; the other readers stop at their next job.
fn in_parallel(
    jobs: usize,
    job: impl Fn(usize, &mut [u8]) -> io::Result<Result<(), PackProblem>> + Sync,
    page_size: usize,
) -> io::Result<Result<(), PackProblem>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, io::Result<Result<(), PackProblem>>)> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..PARALLEL_PACKS.min(jobs))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    let mut page = vec![0u8; page_size];
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= jobs {
                            return done;
                        }
                        let r = job(i, &mut page);
                        let failed = !matches!(r, Ok(Ok(())));
                        done.push((i, r));
                        if failed {
                            next.store(jobs, std::sync::atomic::Ordering::Relaxed);
                            return done;
                        }
                    }
                })
            })
            .collect();
        readers
            .into_iter()
            .flat_map(|r| r.join().expect("a pack reader panicked"))
            .collect()
    });
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    for (_, r) in results {
        if let Err(problem) = r? {
            return Ok(Err(problem));
        }
    }
    Ok(Ok(()))
}

/// XOR every delta of pack `p` into its page of `out`.
fn apply_xor(
    sink: &dyn Sink,
    p: &PackRef,
    entry: &Entry,
    delta: &mut [u8],
    out: &std::fs::File,
    locks: &[std::sync::Mutex<()>],
    keys: Option<&Identities>,
) -> io::Result<Result<(), PackProblem>> {
    let keys = keys.filter(|_| entry.is_encrypted());
    let mut reader = match crate::xor_pack::Reader::open(sink, p, keys) {
        Ok(r) => r,
        Err(problem) => return Ok(Err(problem)),
    };
    if let Some(last) = reader.last_page().filter(|&l| l >= entry.page_count) {
        return Ok(Err(PackProblem {
            key: p.key.clone(),
            reason: format!("holds a delta of page {last}, past the image's end"),
        }));
    }
    let mut page = vec![0u8; delta.len()];
    while reader.peek().is_some() {
        let n = match reader.read(delta) {
            Ok(n) => n,
            Err(problem) => return Ok(Err(problem)),
        };
        let at = n * entry.page_size;
        let _one = locks[(n % locks.len() as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        out.read_exact_at(&mut page, at)?;
        crate::xor_pack::xor_into(&mut page, delta);
        out.write_all_at(&page, at)?;
    }
    Ok(reader.finish())
}

/// Pages of a pack an image needs: `(offset in pack, count, first image
/// page)`.
type Span = (u64, u64, u64);

/// Read one pack: write the pages of `spans` (sorted) into `out`, and check
/// the pack's size and SHA-256 over every stored byte.
fn read_pack(
    sink: &dyn Sink,
    p: &PackRef,
    spans: &[Span],
    page_size: u64,
    page: &mut [u8],
    out: &std::fs::File,
    keys: Option<&Identities>,
) -> io::Result<Result<(), PackProblem>> {
    let problem = |reason: String| PackProblem {
        key: p.key.clone(),
        reason,
    };
    let input = match sink.get(&p.key) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Err(problem("missing".into()))),
        Err(e) => return Ok(Err(problem(format!("cannot read it: {e}")))),
    };
    let mut hashing = HashingReader::new(input);
    let decoded = (|| -> io::Result<()> {
        let stored: Box<dyn Read + Send + '_> = Box::new(&mut hashing);
        let plain = match keys {
            Some(keys) => keys
                .decrypt(stored, &[])
                .map_err(|e| io::Error::other(format!("cannot decrypt it: {e}")))?,
            None => stored,
        };
        let mut dec = Compression::new(Format::Zstd).decoder(plain)?;
        let mut pos = 0u64;
        for &(at, count, first) in spans {
            while pos < at {
                dec.read_exact(page)?;
                pos += 1;
            }
            for k in 0..count {
                dec.read_exact(page)?;
                pos += 1;
                out.write_all_at(page, (first + k) * page_size)?;
            }
        }
        Ok(())
    })();
    // The rest of the pack holds pages this image does not need: it is
    // hashed (the stored bytes' SHA-256 is the pack's check) but not
    // decompressed. Hash every stored byte, even when decoding stopped
    // early.
    let drained = io::copy(&mut hashing, &mut io::sink());
    let (sha, size) = hashing.finish();
    if size != p.size || sha != p.sha256 {
        return Ok(Err(problem(format!(
            "stored bytes differ from the manifest's ({size} bytes, SHA-256 {sha}; expected {} bytes, {})",
            p.size, p.sha256
        ))));
    }
    if let Err(e) = decoded.and(drained.map(|_| ())) {
        return Ok(Err(problem(format!("cannot read its pages: {e}"))));
    }
    Ok(Ok(()))
}

/// Packs a restore reads at once.
pub const PARALLEL_PACKS: usize = 4;

/// Reassemble into a new private file at `path`.
pub fn reassemble_to(
    sink: &dyn Sink,
    entry: &Entry,
    path: &Path,
    keys: Option<&Identities>,
) -> io::Result<Result<Reassembled, PackProblem>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    reassemble(sink, entry, &file, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_map::PageMap;

    fn chain_entry(encrypted_to: &[&str]) -> Entry {
        let mut e = crate::manifest::sample_entry();
        e.page_count = 4;
        e.encrypted_to = encrypted_to.iter().map(|s| s.to_string()).collect();
        e.pages = Some(PageMap {
            chain_depth: 1,
            chain_started: e.snapshot_at,
            stored_bytes: 1,
            base_bytes: None,
            packs: Vec::new(),
            hashes_sha256: None,
            runs: Vec::new().into(),
        });
        e
    }

    #[test]
    fn a_chain_continues_only_under_the_recipients_it_is_sealed_to() {
        let prev = chain_entry(&["aaaaaaaaaaaa"]);
        let hashes = vec![[1u8; HASH_LEN]; 4];
        let mut next = hashes.clone();
        next[2] = [2; HASH_LEN];
        let decide_with = |prev: &Entry, sealed_to: &[String]| {
            decide(
                Some((prev, &hashes)),
                4096,
                &next,
                prev.snapshot_at,
                &Policy::default(),
                sealed_to,
            )
        };
        let same = vec!["aaaaaaaaaaaa".to_string()];
        assert_eq!(
            decide_with(&prev, &same),
            Decision::Incremental(vec![false, false, true, false])
        );
        let why = |d: Decision| match d {
            Decision::Full(why) => why,
            d => panic!("a new base, not {d:?}"),
        };
        let rotated = vec!["bbbbbbbbbbbb".to_string()];
        assert!(why(decide_with(&prev, &rotated)).contains("recipients changed"));
        assert!(why(decide_with(&prev, &[])).contains("sealed; this chain is not"));
        let plain = chain_entry(&[]);
        assert!(why(decide_with(&plain, &same)).contains("not sealed; this chain is"));
    }

    #[test]
    fn a_chain_whose_packs_outgrow_its_base_by_half_takes_a_new_base() {
        let pack = |size| PackRef::sample_xor(&format!("p{size}"), size);
        let hashes = vec![[1u8; HASH_LEN]; 4];
        let decide_on = |packs: Vec<PackRef>, base_bytes| {
            let mut prev = chain_entry(&[]);
            let map = prev.pages.as_mut().unwrap();
            map.packs = packs;
            map.base_bytes = base_bytes;
            decide(
                Some((&prev, &hashes)),
                4096,
                &hashes,
                prev.snapshot_at,
                &Policy::default(),
                &[],
            )
        };
        let continues = Decision::Incremental(vec![false; 4]);
        assert_eq!(
            decide_on(vec![pack(1000), pack(500)], Some(1000)),
            continues
        );
        assert!(matches!(
            decide_on(vec![pack(1000), pack(501)], Some(1000)),
            Decision::Full(why) if why.contains("1.5x its base")
        ));
        // Maps from before the base's size was recorded: depth and age only.
        assert_eq!(decide_on(vec![pack(1000), pack(9000)], None), continues);
    }

    #[test]
    fn the_sealed_tag_is_keyed_by_a_private_key_of_this_host_only() {
        let digest = "0".repeat(64);
        let ctx = b"fingerprint";
        let host = tempfile::tempdir().unwrap();
        let tag = sealed_tag(host.path(), &digest, ctx).unwrap();
        assert_eq!(
            sealed_tag(host.path(), &digest, ctx).unwrap(),
            tag,
            "stable"
        );
        assert_ne!(tag, digest);
        assert_ne!(sealed_tag(host.path(), &"1".repeat(64), ctx).unwrap(), tag);
        assert_ne!(sealed_tag(host.path(), &digest, b"other").unwrap(), tag);
        use std::os::unix::fs::PermissionsExt;
        let key = host.path().join(TAG_KEY);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another host (or this one after losing its key) tags differently:
        // its cache never matches, and a new base follows.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(sealed_tag(other.path(), &digest, ctx).unwrap(), tag);
        // A damaged key is replaced once, then tags are stable again.
        std::fs::write(&key, b"short").unwrap();
        let again = sealed_tag(host.path(), &digest, ctx).unwrap();
        assert_ne!(again, tag);
        assert_eq!(sealed_tag(host.path(), &digest, ctx).unwrap(), again);
        assert_eq!(
            recorded_digest(host.path(), &digest, None),
            Some(digest.clone())
        );
        // Two passphrases share the fingerprint `passphrase`, not the tag.
        let one = Recipients::passphrase("one".to_string().into());
        let two = Recipients::passphrase("two".to_string().into());
        assert_eq!(one.fingerprints(), two.fingerprints());
        assert_ne!(
            recorded_digest(host.path(), &digest, Some(&one)),
            recorded_digest(host.path(), &digest, Some(&two))
        );
    }

    #[test]
    fn hosts_making_the_key_at_once_agree_on_one() {
        let host = tempfile::tempdir().unwrap();
        let digest = "0".repeat(64);
        let tags: Vec<String> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| sealed_tag(host.path(), &digest, b"").unwrap()))
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(tags.iter().all(|t| *t == tags[0]), "{tags:?}");
    }
}
