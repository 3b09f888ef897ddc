//! Packs of XOR deltas.
//!
//! A run that has the previous snapshot's pages at hand (a local copy of
//! its image in the state folder) stores each changed page as its XOR with
//! the page's previous version. Most of a changed page is unchanged, so the
//! delta is mostly zeros and compresses to a few percent of the page: on a
//! table updated at random, 8,938 bytes for 104 pages that take 130,827
//! compressed whole.
//!
//! XOR makes the deltas order-free: a page of a snapshot is its page in the
//! image the page map's runs describe (zeros past them), XORed with every
//! delta of that page in every XOR pack the snapshot lists. So packs are
//! read in parallel and applied in any order, and a run folds small XOR
//! packs by XORing their deltas together into one, without reading any
//! older version of a page (see [`crate::compaction::fold_xor`]).
//!
//! Layout, so that `age`, `zstd` and a short script can rebuild an image:
//! two zstd frames, one after the other. The first holds LEB128 varints:
//! the number of deltas, the first delta's page number, then each next
//! page number minus the one before (page numbers ascend). The second
//! holds the deltas, one page size each, in that order.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use integer_encoding::{VarIntReader, VarIntWriter};

use crate::digest::HashingReader;
use crate::encryption::Identities;
use crate::page_map::{PackProblem, PackRef};
use crate::sink::Sink;

/// The first frame of an XOR pack holding deltas of `pages`.
pub(crate) fn header(pages: &[u64], level: i32) -> io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(pages.len() + 8);
    raw.write_varint(pages.len() as u64)?;
    let mut last = None;
    for &p in pages {
        raw.write_varint(last.map_or(p, |l| p - l))?;
        last = Some(p);
    }
    // Its size known, zstd sizes its tables to it.
    zstd::bulk::compress(&raw, level)
}

/// `dst ^= src`.
pub(crate) fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= *s;
    }
}

/// Read the page numbers at the start of an XOR pack's decompressed
/// stream, which must say it holds `expected` deltas.
pub fn page_numbers(mut r: impl Read, expected: u64) -> io::Result<Vec<u64>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let count: u64 = r
        .read_varint()
        .map_err(|e| bad(format!("cannot read its page numbers: {e}")))?;
    if count != expected {
        return Err(bad(format!(
            "holds {count} deltas, the manifest says {expected}"
        )));
    }
    // The count is checked, not trusted for an allocation.
    let mut pages: Vec<u64> = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let step: u64 = r
            .read_varint()
            .map_err(|e| bad(format!("cannot read its page numbers: {e}")))?;
        let page = match pages.last() {
            None => Some(step),
            Some(&l) if step > 0 => l.checked_add(step),
            Some(_) => None,
        };
        pages.push(page.ok_or_else(|| bad("page numbers do not ascend".into()))?);
    }
    Ok(pages)
}

/// The stored bytes, hashed as they are read. Shared, so that
/// [`Reader::finish`] can drain and hash them to their end once the
/// decoders in front of it (age, zstd) have stopped, wherever they stopped.
#[derive(Clone)]
struct Stored(Arc<Mutex<HashingReader<Box<dyn Read + Send>>>>);

impl Read for Stored {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).read(buf)
    }
}

type Decoder = zstd::stream::read::Decoder<'static, BufReader<Box<dyn Read + Send>>>;

/// Where a [`Reader`]'s bytes come from, and what they must hash to.
enum Source {
    /// The pack in its sink: the manifest's size and SHA-256.
    Sink,
    /// The backup host's own plaintext copy of a pack it sealed (see
    /// `incremental::LocalPacks`): the SHA-256 recorded beside it.
    Local { sha256: String },
}

/// The deltas of one XOR pack, read in page order, its stored bytes checked
/// by [`Reader::finish`].
pub(crate) struct Reader {
    pack: PackRef,
    source: Source,
    stored: Stored,
    pages: Vec<u64>,
    next: usize,
    dec: Decoder,
}

impl Reader {
    /// Open `p` in `sink` (sealed packs with `keys`) and read its page
    /// numbers.
    pub fn open(
        sink: &dyn Sink,
        p: &PackRef,
        keys: Option<&Identities>,
    ) -> Result<Self, PackProblem> {
        let input = match sink.get(&p.key) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Err(problem(p, "missing".into())),
            Err(e) => return Err(problem(p, format!("cannot read it: {e}"))),
        };
        Self::from(input, p, keys, Source::Sink)
    }

    /// Open the plaintext copy of `p` at `path`, which must hash to
    /// `sha256`.
    pub fn open_local(path: &Path, p: &PackRef, sha256: String) -> Result<Self, PackProblem> {
        let file = std::fs::File::open(path)
            .map_err(|e| problem(p, format!("its local copy {}: {e}", path.display())))?;
        Self::from(Box::new(file), p, None, Source::Local { sha256 })
    }

    fn from(
        input: Box<dyn Read + Send>,
        p: &PackRef,
        keys: Option<&Identities>,
        source: Source,
    ) -> Result<Self, PackProblem> {
        let stored = Stored(Arc::new(Mutex::new(HashingReader::new(input))));
        let plain: Box<dyn Read + Send> = match keys {
            Some(keys) => keys
                .decrypt(Box::new(stored.clone()), &[])
                .map_err(|e| problem(p, format!("cannot decrypt it: {e}")))?,
            None => Box::new(stored.clone()),
        };
        let mut dec =
            zstd::stream::read::Decoder::new(plain).map_err(|e| problem(p, e.to_string()))?;
        let pages = page_numbers(&mut dec, p.pages).map_err(|e| problem(p, e.to_string()))?;
        Ok(Self {
            pack: p.clone(),
            source,
            stored,
            pages,
            next: 0,
            dec,
        })
    }

    /// The pack's key.
    pub fn key(&self) -> &str {
        &self.pack.key
    }

    /// The page of the next delta.
    pub fn peek(&self) -> Option<u64> {
        self.pages.get(self.next).copied()
    }

    /// The last page a delta is for.
    pub fn last_page(&self) -> Option<u64> {
        self.pages.last().copied()
    }

    /// Read the next delta into `buf` (one page); its page number.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<u64, PackProblem> {
        let page = self.peek().expect("a delta left");
        self.dec
            .read_exact(buf)
            .map_err(|e| problem(&self.pack, format!("cannot decompress it: {e}")))?;
        self.next += 1;
        Ok(page)
    }

    /// Check every stored byte against the manifest's size and SHA-256
    /// (or a local copy's SHA-256), and that nothing follows the deltas.
    pub fn finish(mut self) -> Result<(), PackProblem> {
        let trailing = if self.next == self.pages.len() {
            let mut one = [0u8; 1];
            match self.dec.read(&mut one) {
                Ok(0) => None,
                Ok(_) => Some("more bytes follow its deltas".to_string()),
                Err(e) => Some(format!("cannot decompress it: {e}")),
            }
        } else {
            None
        };
        drop(self.dec);
        let mut stored = self.stored.0.lock().unwrap_or_else(|e| e.into_inner());
        let drained = io::copy(&mut *stored, &mut io::sink());
        let hashing = std::mem::replace(&mut *stored, HashingReader::new(Box::new(io::empty())));
        let (sha, size) = hashing.finish();
        let differs = match &self.source {
            Source::Sink => (size != self.pack.size || sha != self.pack.sha256).then(|| {
                format!(
                    "stored bytes differ from the manifest's ({size} bytes, SHA-256 {sha}; expected {} bytes, {})",
                    self.pack.size, self.pack.sha256
                )
            }),
            Source::Local { sha256 } => (sha != *sha256).then(|| {
                format!("its local copy differs from what was written (SHA-256 {sha}, expected {sha256})")
            }),
        };
        if let Some(why) = differs {
            return Err(problem(&self.pack, why));
        }
        if let Err(e) = drained {
            return Err(problem(&self.pack, format!("cannot read it: {e}")));
        }
        trailing.map_or(Ok(()), |t| Err(problem(&self.pack, t)))
    }
}

fn problem(p: &PackRef, reason: String) -> PackProblem {
    PackProblem {
        key: p.key.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incremental::{PackWriter, page_hash};
    use crate::sink::MemorySink;

    const PAGE: usize = 512;

    fn written(sink: &MemorySink, deltas: &[(u64, u8)]) -> PackRef {
        let mut w = PackWriter::xor(sink, "t", "t.pageidx");
        for &(n, b) in deltas {
            let d = vec![b; PAGE];
            w.add_delta(n, &d, &page_hash(&d)).unwrap();
        }
        let (mut packs, _) = w.finish().unwrap();
        assert_eq!(packs.len(), 1);
        packs.remove(0)
    }

    fn read_all(sink: &MemorySink, p: &PackRef) -> Result<Vec<(u64, u8)>, PackProblem> {
        let mut r = Reader::open(sink, p, None)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; PAGE];
        while r.peek().is_some() {
            let n = r.read(&mut buf)?;
            assert!(buf.iter().all(|b| *b == buf[0]));
            out.push((n, buf[0]));
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn deltas_read_back_in_page_order_and_the_layout_is_two_zstd_frames() {
        let sink = MemorySink::new("m");
        let deltas = [(0, 1), (7, 2), (8, 3), (1_000_000, 4)];
        let p = written(&sink, &deltas);
        assert!(p.xor);
        assert_eq!(p.pages, 4);
        assert_eq!(read_all(&sink, &p).unwrap(), deltas);

        // What the module documents, decoded by hand: varints, then deltas.
        let bytes = crate::sink::get_bytes(&sink, &p.key).unwrap();
        let raw = zstd::decode_all(bytes.as_slice()).unwrap();
        // 1,000,000 - 8 = 999,992 takes three bytes.
        assert_eq!(&raw[..7], &[4, 0, 7, 1, 0xb8, 0x84, 0x3d]);
        assert_eq!(raw.len(), 7 + 4 * PAGE);
        assert_eq!(raw[raw.len() - 1], 4);
    }

    #[test]
    fn a_damaged_or_misdescribed_pack_is_named_never_read_as_other_deltas() {
        let sink = MemorySink::new("m");
        let p = written(&sink, &[(3, 1), (4, 2)]);
        let bytes = crate::sink::get_bytes(&sink, &p.key).unwrap();

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        sink.put(&p.key, &flipped).unwrap();
        let e = read_all(&sink, &p).unwrap_err();
        assert_eq!(e.key, p.key);

        sink.put(&p.key, &bytes).unwrap();
        let more = PackRef {
            pages: 3,
            ..p.clone()
        };
        let e = read_all(&sink, &more).unwrap_err();
        assert!(e.reason.contains("holds 2 deltas"), "{}", e.reason);

        // Page numbers that do not ascend.
        let header = zstd::encode_all(&[2u8, 5, 0][..], 3).unwrap();
        let body = zstd::encode_all(&vec![0u8; 2 * PAGE][..], 3).unwrap();
        let forged = [header, body].concat();
        sink.put("forged", &forged).unwrap();
        let forged = PackRef {
            key: "forged".into(),
            size: forged.len() as u64,
            sha256: crate::digest::Sha256::hex_of(&forged),
            pages: 2,
            ..p.clone()
        };
        let e = read_all(&sink, &forged).unwrap_err();
        assert!(e.reason.contains("do not ascend"), "{}", e.reason);

        sink.delete(&p.key).unwrap();
        assert_eq!(read_all(&sink, &p).unwrap_err().reason, "missing");
    }
}
