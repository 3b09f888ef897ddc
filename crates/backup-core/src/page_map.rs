//! The page map: where every page of an incremental-mode snapshot lives. It
//! is part of the stored manifest format, so its serialised form stays
//! stable (runs as `[first, count, pack, at]` arrays, or packed when long;
//! packs in groups that share an index, see `stored`).

use std::borrow::Cow;
use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

mod stored;

/// Where every page of an incremental-mode snapshot lives. Stored with its
/// packs grouped by page-hash index (manifest version 5).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "stored::Reading")]
pub struct PageMap {
    /// 0 for a full base, else the number of snapshots since it.
    pub chain_depth: u32,
    /// When the chain's full base was taken (`full_every` counts from here).
    pub chain_started: Timestamp,
    /// Bytes this snapshot stored (its new packs and its index).
    pub stored_bytes: u64,
    /// Bytes the chain's full base stored; `None` in maps written before
    /// it was recorded.
    pub base_bytes: Option<u64>,
    /// Every pack the image needs, its own and earlier ones.
    pub packs: Vec<PackRef>,
    /// SHA-256 of the image's page hashes in page order ([`hashes_digest`](crate::incremental::hashes_digest)):
    /// a cached copy of them is used only when it matches.
    pub hashes_sha256: Option<String>,
    /// Pages `first..first+count` are pages `at..at+count` of `packs[pack]`;
    /// in page order, covering the whole image. Stored packed when long, and
    /// decoded only when this snapshot's pages are read (see [`Runs`]).
    pub runs: Runs,
}

/// Why a stored page map cannot be used; it is never read as another map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageMapError {
    /// The packed runs do not decode.
    #[error("page map runs: {0}")]
    Encoding(&'static str),
    /// A run does not start where the previous one ended.
    #[error("page map: run starts at page {found}, expected {expected}")]
    Gap {
        /// Where it starts.
        found: u64,
        /// Where it should.
        expected: u64,
    },
    /// A run names a pack the map does not list.
    #[error("page map: run names pack #{pack}, there are {packs}")]
    NoSuchPack {
        /// The pack number.
        pack: u32,
        /// How many packs the map lists.
        packs: usize,
    },
    /// A run reaches past the end of its pack.
    #[error("page map: run reaches past the end of {key}")]
    PastPack {
        /// The pack's key.
        key: String,
    },
    /// A run names a pack of XOR deltas, which apply to pages, not hold them.
    #[error("page map: a run names {key}, a pack of XOR deltas")]
    XorRun {
        /// The pack's key.
        key: String,
    },
    /// The runs were left in the entry's manifest (an entry read from a
    /// catalog checkpoint) and not read yet.
    #[error("page map runs not read from the manifest")]
    NotLoaded,
    /// The runs do not cover the image.
    #[error("page map covers {covered} pages, the image has {pages}")]
    Coverage {
        /// Pages the runs cover.
        covered: u64,
        /// Pages of the image.
        pages: u64,
    },
}

/// A page map's runs, as [`PageMap::runs`] stores them. As JSON arrays a
/// run costs about 90 bytes pretty-printed, and scattered changes fragment
/// a map into tens of thousands of runs: megabytes in every manifest, and
/// every `list`, restore and backup parses every manifest. A map of more
/// than [`Runs::INLINE`] runs is therefore stored as one string, kept
/// packed in memory and decoded only for the snapshot whose pages are read;
/// `first` is the sum of the counts before a run. Written as
/// `"zstd+varint+base64:…"` (manifest version 3): per run, LEB128 varints
/// of `count`, `pack`, and `at` minus where the previous run in the same
/// pack ended (zigzag: a pack holds its pages in page order, so that is the
/// few pages skipped, one byte where a fixed field took eight). Read also
/// as `"zstd+base64:…"`, `(count u64, pack u32, at u64)` little-endian per
/// run, and as short readable arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runs(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    List(Vec<Run>),
    Packed(String),
    /// In the manifest of this run id: a checkpoint stores no runs (they
    /// are most of an entry's size), and only the snapshot being read or
    /// built on needs them. Never written.
    #[serde(skip)]
    InManifest(Option<String>),
}

const PACKED_PREFIX: &str = "zstd+base64:";
const PACKED_RECORD: usize = 20;
const VARINT_PREFIX: &str = "zstd+varint+base64:";
/// The most bytes one run takes in either packed form: 20 fixed, or three
/// varints of at most 10 + 5 + 10.
const MAX_RECORD: u64 = 25;

impl Runs {
    /// Up to this many runs are written as arrays.
    pub const INLINE: usize = 64;

    /// The runs of an image of at most `pages` pages, decoded if stored
    /// packed; a damaged encoding is an error, never a different map. Every
    /// run holds a page, so `pages` bounds what the decoding may allocate.
    pub fn list(&self, pages: u64) -> Result<Cow<'_, [Run]>, PageMapError> {
        use base64::Engine;
        let text = match &self.0 {
            Repr::List(runs) => return Ok(runs.as_slice().into()),
            Repr::Packed(text) => text,
            Repr::InManifest(_) => return Err(PageMapError::NotLoaded),
        };
        let bad = PageMapError::Encoding;
        let (b64, varint) = match text.strip_prefix(VARINT_PREFIX) {
            Some(b64) => (b64, true),
            None => (
                text.strip_prefix(PACKED_PREFIX)
                    .ok_or_else(|| bad("unknown encoding"))?,
                false,
            ),
        };
        let packed = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("not base64"))?;
        let cap = pages.saturating_add(1).saturating_mul(MAX_RECORD);
        let raw = crate::compress::zstd_decode_capped(&packed, cap)
            .map_err(|_| bad("not zstd, or more runs than pages"))?;
        let runs = if varint {
            decode_varints(&raw)?
        } else {
            decode_fixed(&raw)?
        };
        Ok(runs.into())
    }

    /// The manifest version that can read these runs.
    #[cfg(test)]
    fn version(&self) -> u32 {
        match &self.0 {
            Repr::Packed(text) if text.starts_with(VARINT_PREFIX) => 3,
            _ => 1,
        }
    }
}

/// Give each `(count, pack, at)` its `first` page, the sum of the counts
/// before it.
fn numbered(parts: impl IntoIterator<Item = (u64, u32, u64)>) -> Result<Vec<Run>, PageMapError> {
    let mut first = 0u64;
    let mut runs = Vec::new();
    for (count, pack, at) in parts {
        if count == 0 {
            return Err(PageMapError::Encoding("an empty run"));
        }
        runs.push(Run {
            first,
            count,
            pack,
            at,
        });
        first = first
            .checked_add(count)
            .ok_or(PageMapError::Encoding("page count overflows"))?;
    }
    Ok(runs)
}

fn decode_fixed(raw: &[u8]) -> Result<Vec<Run>, PageMapError> {
    if !raw.len().is_multiple_of(PACKED_RECORD) {
        return Err(PageMapError::Encoding("truncated"));
    }
    numbered(raw.chunks_exact(PACKED_RECORD).map(|r| {
        (
            u64::from_le_bytes(r[0..8].try_into().expect("8 bytes")),
            u32::from_le_bytes(r[8..12].try_into().expect("4 bytes")),
            u64::from_le_bytes(r[12..20].try_into().expect("8 bytes")),
        )
    }))
}

fn decode_varints(mut raw: &[u8]) -> Result<Vec<Run>, PageMapError> {
    use integer_encoding::VarInt;
    fn next<T: VarInt>(raw: &mut &[u8]) -> Result<T, PageMapError> {
        let (v, n) = T::decode_var(raw).ok_or(PageMapError::Encoding("truncated"))?;
        *raw = &raw[n..];
        Ok(v)
    }
    // Where the last run in each pack ended, in that pack's pages.
    let mut ends: HashMap<u32, u64> = HashMap::new();
    let mut parts = Vec::new();
    while !raw.is_empty() {
        let count: u64 = next(&mut raw)?;
        let pack: u32 = next(&mut raw)?;
        let skip: i64 = next(&mut raw)?;
        let end = ends.entry(pack).or_default();
        let at = end
            .checked_add_signed(skip)
            .ok_or(PageMapError::Encoding("a run starts outside its pack"))?;
        *end = at
            .checked_add(count)
            .ok_or(PageMapError::Encoding("a run ends outside its pack"))?;
        parts.push((count, pack, at));
    }
    numbered(parts)
}

impl Runs {
    /// Runs left in the manifest of `run_id` (`None`: of no manifest the
    /// reader needs), as a checkpoint reads them.
    pub fn in_manifest(run_id: Option<String>) -> Self {
        Self(Repr::InManifest(run_id))
    }

    /// The run id of the manifest holding these runs, when they are not
    /// loaded: `Some(None)` when no manifest was named.
    pub fn manifest(&self) -> Option<Option<&str>> {
        match &self.0 {
            Repr::InManifest(run_id) => Some(run_id.as_deref()),
            _ => None,
        }
    }
}

impl From<Vec<Run>> for Runs {
    fn from(runs: Vec<Run>) -> Self {
        if runs.len() <= Self::INLINE {
            return Self(Repr::List(runs));
        }
        use base64::Engine;
        use integer_encoding::VarIntWriter;
        let mut raw = Vec::with_capacity(runs.len() * 4);
        let mut ends: HashMap<u32, u64> = HashMap::new();
        for &Run {
            count, pack, at, ..
        } in &runs
        {
            let end = ends.entry(pack).or_default();
            // Page counts stay far below 2^62 (`MAX_PAGES`), so the
            // difference of two fits an i64.
            let skip = at as i64 - *end as i64;
            *end = at + count;
            let written = raw
                .write_varint(count)
                .and_then(|_| raw.write_varint(pack))
                .and_then(|_| raw.write_varint(skip));
            written.expect("writing into memory");
        }
        let packed = zstd::encode_all(raw.as_slice(), 3).expect("zstd into memory");
        let text = base64::engine::general_purpose::STANDARD.encode(packed);
        Self(Repr::Packed(format!("{VARINT_PREFIX}{text}")))
    }
}

impl Serialize for Runs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Runs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Repr::deserialize(d).map(Self)
    }
}

/// One run of consecutive pages stored consecutively in one pack. Stored as
/// the array `[first, count, pack, at]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(u64, u64, u32, u64)", into = "(u64, u64, u32, u64)")]
pub struct Run {
    /// Its first page (0-based).
    pub first: u64,
    /// Pages in it.
    pub count: u64,
    /// The pack holding them: an index into [`PageMap::packs`].
    pub pack: u32,
    /// Where `first` is in that pack, in pages.
    pub at: u64,
}

impl Run {
    /// The page after its last.
    pub fn end(&self) -> u64 {
        self.first + self.count
    }
}

impl From<(u64, u64, u32, u64)> for Run {
    fn from((first, count, pack, at): (u64, u64, u32, u64)) -> Self {
        Self {
            first,
            count,
            pack,
            at,
        }
    }
}

impl From<Run> for (u64, u64, u32, u64) {
    fn from(r: Run) -> Self {
        (r.first, r.count, r.pack, r.at)
    }
}

/// What went wrong reassembling an image; names the pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackProblem {
    /// The pack's key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A pack, as a snapshot needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    /// Object key.
    pub key: String,
    /// Stored bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
    /// Pages in it.
    pub pages: u64,
    /// Key of the page-hash index holding its pages' hashes.
    pub index: String,
    /// SHA-256 of that index's stored bytes.
    pub index_sha256: String,
    /// Position of its first page's hash in that index.
    pub index_at: u64,
    /// Its pages are XOR deltas ([`crate::xor_pack`]), applied on top of
    /// the image the runs describe; `pages` counts them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub xor: bool,
}

#[cfg(test)]
impl PackRef {
    /// An XOR pack `key` of `size` bytes and one delta, for tests.
    pub(crate) fn sample_xor(key: &str, size: u64) -> Self {
        Self {
            key: key.into(),
            size,
            sha256: "0".repeat(64),
            pages: 1,
            index: "i".into(),
            index_sha256: "0".repeat(64),
            index_at: 0,
            xor: true,
        }
    }
}

impl PageMap {
    /// Whether some pack holds XOR deltas: the runs then describe the image
    /// the deltas apply to, and pages past them start as zeros.
    pub fn has_xor(&self) -> bool {
        self.packs.iter().any(|p| p.xor)
    }

    /// Checks that the runs cover pages `0..page_count` in order (with XOR
    /// packs, a prefix of them) and point inside their plain packs.
    pub fn check(&self, page_count: u64) -> Result<(), PageMapError> {
        let mut next = 0;
        for r in self.runs.list(page_count)?.iter() {
            if r.first != next {
                return Err(PageMapError::Gap {
                    found: r.first,
                    expected: next,
                });
            }
            let Some(p) = self.packs.get(r.pack as usize) else {
                return Err(PageMapError::NoSuchPack {
                    pack: r.pack,
                    packs: self.packs.len(),
                });
            };
            if p.xor {
                return Err(PageMapError::XorRun { key: p.key.clone() });
            }
            if r.at.checked_add(r.count).is_none_or(|end| end > p.pages) {
                return Err(PageMapError::PastPack { key: p.key.clone() });
            }
            next = r.first + r.count;
        }
        let xor = self.has_xor();
        if next != page_count && !(xor && next < page_count) {
            return Err(PageMapError::Coverage {
                covered: next,
                pages: page_count,
            });
        }
        Ok(())
    }
}

/// Builds the page map of a new snapshot page by page, in page order: each
/// page is either stored by this run (in one of its new packs) or left where
/// the previous snapshot of the chain has it.
#[derive(Debug, Default)]
pub struct Builder {
    /// The previous snapshot's runs (empty for a full base).
    previous: Vec<Run>,
    /// The run of `previous` that the last unchanged page was found in.
    cursor: usize,
    /// This run's packs are numbered after the previous snapshot's.
    first_new_pack: u32,
    runs: Vec<Run>,
}

impl Builder {
    /// A map for a full base: every page is stored by this run.
    pub fn full() -> Self {
        Self::default()
    }

    /// A map that builds on a snapshot with these runs over `packs` packs.
    pub fn on(previous: Vec<Run>, packs: usize) -> Self {
        Self {
            previous,
            first_new_pack: packs as u32,
            ..Self::default()
        }
    }

    /// `page` was stored by this run in its new pack `pack`, at `at`.
    pub fn stored(&mut self, page: u64, pack: u32, at: u64) {
        self.push(page, self.first_new_pack + pack, at);
    }

    /// `page` did not change: it stays where the previous snapshot has it.
    /// Pages come in order, so the search only moves forward.
    ///
    /// # Panics
    /// When the previous snapshot has no such page: a page past the end of
    /// the previous image is always stored, never unchanged.
    pub fn unchanged(&mut self, page: u64) {
        while self.previous[self.cursor].end() <= page {
            self.cursor += 1;
        }
        let r = self.previous[self.cursor];
        self.push(page, r.pack, r.at + (page - r.first));
    }

    fn push(&mut self, page: u64, pack: u32, at: u64) {
        if let Some(last) = self.runs.last_mut()
            && last.end() == page
            && last.pack == pack
            && last.at + last.count == at
        {
            last.count += 1;
            return;
        }
        self.runs.push(Run {
            first: page,
            count: 1,
            pack,
            at,
        });
    }

    /// The runs, over only the packs some page still lives in: `packs` are
    /// the previous snapshot's followed by this run's new ones; those no
    /// page uses any more are dropped and the rest renumbered.
    pub fn finish(self, packs: Vec<PackRef>) -> (Runs, Vec<PackRef>) {
        let mut used = vec![false; packs.len()];
        for r in &self.runs {
            used[r.pack as usize] = true;
        }
        let mut renumber = vec![0u32; packs.len()];
        let mut kept = Vec::new();
        for (n, p) in packs.into_iter().enumerate() {
            if used[n] {
                renumber[n] = kept.len() as u32;
                kept.push(p);
            }
        }
        let runs: Vec<Run> = self
            .runs
            .into_iter()
            .map(|r| Run {
                pack: renumber[r.pack as usize],
                ..r
            })
            .collect();
        (runs.into(), kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_page_maps_are_packed_and_read_back_and_short_ones_stay_arrays() {
        // Alternating packs, as scattered changes leave them.
        let runs =
            |n: u64| -> Vec<Run> { (0..n).map(|i| run(i * 2, 2, (i % 2) as u32, i)).collect() };
        let map = |n: u64| PageMap {
            chain_depth: 3,
            chain_started: Timestamp::UNIX_EPOCH,
            stored_bytes: 1,
            base_bytes: None,
            packs: vec![],
            hashes_sha256: None,
            runs: runs(n).into(),
        };
        let short = serde_json::to_string_pretty(&map(3)).unwrap();
        assert!(short.contains("\"runs\": [\n"), "{short}");
        let back = serde_json::from_str::<PageMap>(&short).unwrap();
        assert_eq!(
            back.runs.list(u64::MAX).unwrap().as_ref(),
            runs(3).as_slice()
        );

        let pretty_arrays = serde_json::to_string_pretty(&runs(20_000)).unwrap().len();
        let text = serde_json::to_string_pretty(&map(20_000)).unwrap();
        assert!(text.contains("\"runs\": \"zstd+varint+base64:"));
        assert!(
            text.len() * 20 < pretty_arrays,
            "{} vs {pretty_arrays}",
            text.len()
        );
        let back = serde_json::from_str::<PageMap>(&text).unwrap();
        assert_eq!(
            back.runs.list(u64::MAX).unwrap().as_ref(),
            runs(20_000).as_slice()
        );
        assert_eq!(back, map(20_000));
        assert_eq!(back.runs.version(), 3);

        // Damage is an error, never a different map.
        for damaged in [
            text.replace("zstd+varint+base64:", "zstd+varint+base64:AAAA"),
            text.replace("zstd+varint+base64:", "gzip:"),
            text.replace("zstd+varint+base64:", "zstd+base64:"),
        ] {
            let m = serde_json::from_str::<PageMap>(&damaged).unwrap();
            assert!(m.runs.list(u64::MAX).is_err());
            assert!(m.check(40_000).is_err());
        }
    }

    /// The first packed form, `(count u64, pack u32, at u64)` per run.
    fn fixed(runs: &[Run]) -> Runs {
        use base64::Engine;
        let mut raw = Vec::new();
        for r in runs {
            raw.extend_from_slice(&r.count.to_le_bytes());
            raw.extend_from_slice(&r.pack.to_le_bytes());
            raw.extend_from_slice(&r.at.to_le_bytes());
        }
        let packed = zstd::encode_all(raw.as_slice(), 3).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(packed);
        Runs(Repr::Packed(format!("{PACKED_PREFIX}{b64}")))
    }

    /// A 200 MB database (49,000 pages) after 40 runs of 100 scattered
    /// changes each, every run's pages in a pack of its own.
    fn scattered() -> Vec<Run> {
        let pages = 49_000u64;
        let mut owner: Vec<(u32, u64)> = (0..pages).map(|p| (0, p)).collect();
        let mut seed = 7u64;
        for run in 1..=40u32 {
            let mut changed: Vec<u64> = (0..100)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) % pages
                })
                .collect();
            changed.sort_unstable();
            changed.dedup();
            for (i, p) in changed.into_iter().enumerate() {
                owner[p as usize] = (run, i as u64);
            }
        }
        let mut runs: Vec<Run> = Vec::new();
        for (page, &(pack, at)) in owner.iter().enumerate() {
            match runs.last_mut() {
                Some(r) if r.pack == pack && r.at + r.count == at => r.count += 1,
                _ => runs.push(run(page as u64, 1, pack, at)),
            }
        }
        runs
    }

    #[test]
    fn scattered_maps_pack_small_and_the_first_packed_form_still_reads() {
        let runs = scattered();
        let old = fixed(&runs);
        assert_eq!(old.list(u64::MAX).unwrap().as_ref(), runs.as_slice());
        assert_eq!(old.version(), 1);
        let new = Runs::from(runs.clone());
        assert_eq!(new.list(u64::MAX).unwrap().as_ref(), runs.as_slice());
        let size = |r: &Runs| serde_json::to_string(r).unwrap().len();
        // Measured: 7,381 runs, 29,886 bytes packed the first way, 11,445
        // this way (2.6x smaller).
        assert!(
            size(&new) * 2 < size(&old),
            "{} runs: {} bytes, {} before",
            runs.len(),
            size(&new),
            size(&old)
        );
    }

    #[test]
    fn a_varint_run_outside_its_pack_is_an_error() {
        use base64::Engine;
        use integer_encoding::VarIntWriter;
        // One run, then one that starts before page 0 of its pack.
        let mut raw = Vec::new();
        for v in [(3u64, 0u32, 0i64), (1, 0, -5)] {
            raw.write_varint(v.0).unwrap();
            raw.write_varint(v.1).unwrap();
            raw.write_varint(v.2).unwrap();
        }
        let packed = zstd::encode_all(raw.as_slice(), 3).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(packed);
        let runs = Runs(Repr::Packed(format!("{VARINT_PREFIX}{b64}")));
        assert_eq!(
            runs.list(u64::MAX).unwrap_err(),
            PageMapError::Encoding("a run starts outside its pack")
        );
        // Cut inside a varint.
        let runs = Runs(Repr::Packed(format!(
            "{VARINT_PREFIX}{}",
            base64::engine::general_purpose::STANDARD
                .encode(zstd::encode_all(&[0x80u8][..], 3).unwrap())
        )));
        assert_eq!(
            runs.list(u64::MAX).unwrap_err(),
            PageMapError::Encoding("truncated")
        );
    }

    fn packed_varints(runs: &[(u64, u32, i64)]) -> Runs {
        use base64::Engine;
        use integer_encoding::VarIntWriter;
        let mut raw = Vec::new();
        for v in runs {
            raw.write_varint(v.0).unwrap();
            raw.write_varint(v.1).unwrap();
            raw.write_varint(v.2).unwrap();
        }
        let packed = zstd::encode_all(raw.as_slice(), 19).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(packed);
        Runs(Repr::Packed(format!("{VARINT_PREFIX}{b64}")))
    }

    #[test]
    fn runs_that_cannot_fit_the_image_are_refused_before_they_are_decoded() {
        // 100,000 one-page runs compress to a few hundred bytes; an image
        // of 1,000 pages cannot have them, and a manifest that says so is
        // refused before its runs fill memory.
        let many = packed_varints(&vec![(1, 0, 0); 100_000]);
        assert!(matches!(&many.0, Repr::Packed(t) if t.len() < 1_000));
        assert_eq!(many.list(100_000).unwrap().len(), 100_000);
        assert_eq!(
            many.list(1_000).unwrap_err(),
            PageMapError::Encoding("not zstd, or more runs than pages")
        );
        // A run of no pages is damage, not a way around that bound.
        assert_eq!(
            packed_varints(&[(2, 0, 0), (0, 0, 0)])
                .list(10)
                .unwrap_err(),
            PageMapError::Encoding("an empty run")
        );
    }

    fn run(first: u64, count: u64, pack: u32, at: u64) -> Run {
        Run {
            first,
            count,
            pack,
            at,
        }
    }

    fn pack(n: u64) -> PackRef {
        PackRef {
            key: format!("p{n}.pack"),
            size: n,
            sha256: String::new(),
            pages: 100,
            index: format!("i{n}.pageidx"),
            index_sha256: String::new(),
            index_at: 0,
            xor: false,
        }
    }

    fn runs_of(b: Builder, packs: u64) -> (Vec<Run>, Vec<String>) {
        let (runs, kept) = b.finish((0..packs).map(pack).collect());
        let keys = kept.into_iter().map(|p| p.key).collect();
        (runs.list(u64::MAX).unwrap().into_owned(), keys)
    }

    #[test]
    fn runs_merge_only_when_both_sides_continue() {
        let mut b = Builder::full();
        b.stored(0, 0, 0);
        b.stored(1, 0, 1);
        b.stored(2, 1, 0);
        b.stored(3, 0, 5);
        let (runs, keys) = runs_of(b, 2);
        assert_eq!(
            runs,
            vec![run(0, 2, 0, 0), run(2, 1, 1, 0), run(3, 1, 0, 5)]
        );
        assert_eq!(keys, ["p0.pack", "p1.pack"]);
    }

    #[test]
    fn an_empty_image_has_no_runs_and_keeps_no_pack() {
        let (runs, keys) = runs_of(Builder::full(), 1);
        assert!(runs.is_empty());
        assert!(keys.is_empty());
        let (runs, keys) = runs_of(Builder::on(vec![run(0, 3, 0, 0)], 1), 1);
        assert!(runs.is_empty() && keys.is_empty());
    }

    #[test]
    fn unchanged_pages_keep_their_place_and_changed_ones_go_to_new_packs() {
        // Previous: pages 0..4 in pack 0, 4..6 in pack 1 at 10.
        let previous = vec![run(0, 4, 0, 0), run(4, 2, 1, 10)];
        let mut b = Builder::on(previous, 2);
        b.unchanged(0);
        b.unchanged(1);
        b.stored(2, 0, 0); // new pack 0 is pack 2 overall
        b.unchanged(3);
        b.unchanged(4);
        b.unchanged(5);
        let (runs, keys) = runs_of(b, 3);
        assert_eq!(
            runs,
            vec![
                run(0, 2, 0, 0),
                run(2, 1, 2, 0),
                run(3, 1, 0, 3),
                run(4, 2, 1, 10)
            ]
        );
        assert_eq!(keys, ["p0.pack", "p1.pack", "p2.pack"]);
    }

    #[test]
    fn all_changed_drops_every_earlier_pack() {
        let mut b = Builder::on(vec![run(0, 3, 0, 0), run(3, 1, 1, 0)], 2);
        for page in 0..4 {
            b.stored(page, 0, page);
        }
        let (runs, keys) = runs_of(b, 3);
        assert_eq!(runs, vec![run(0, 4, 0, 0)]);
        assert_eq!(keys, ["p2.pack"]);
    }

    #[test]
    fn growth_and_shrink() {
        // Grown from 2 to 4 pages: the new pages are stored.
        let mut b = Builder::on(vec![run(0, 2, 0, 0)], 1);
        b.unchanged(0);
        b.unchanged(1);
        b.stored(2, 0, 0);
        b.stored(3, 0, 1);
        let (runs, keys) = runs_of(b, 2);
        assert_eq!(runs, vec![run(0, 2, 0, 0), run(2, 2, 1, 0)]);
        assert_eq!(keys, ["p0.pack", "p1.pack"]);
        // Shrunk from 4 to 1 page: the pack holding only the lost pages goes.
        let mut b = Builder::on(vec![run(0, 2, 0, 0), run(2, 2, 1, 0)], 2);
        b.unchanged(0);
        let (runs, keys) = runs_of(b, 2);
        assert_eq!(runs, vec![run(0, 1, 0, 0)]);
        assert_eq!(keys, ["p0.pack"]);
    }

    #[test]
    fn a_run_crossing_into_the_next_pack_splits() {
        // This run's pages 0..3 fill new pack 0 up to page 2, then pack 1.
        let mut b = Builder::full();
        b.stored(0, 0, 0);
        b.stored(1, 0, 1);
        b.stored(2, 1, 0);
        b.stored(3, 1, 1);
        let (runs, _) = runs_of(b, 2);
        assert_eq!(runs, vec![run(0, 2, 0, 0), run(2, 2, 1, 0)]);
        // And the same map read back through a previous run that spans both.
        let mut b = Builder::on(runs, 2);
        for page in 0..4 {
            b.unchanged(page);
        }
        let (again, _) = runs_of(b, 2);
        assert_eq!(again, vec![run(0, 2, 0, 0), run(2, 2, 1, 0)]);
    }
}
