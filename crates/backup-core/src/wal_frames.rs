//! Which pages changed between two snapshots, learned from the WAL frames
//! written between them instead of from reading and hashing every page.
//!
//! In WAL mode every change reaches the database as a frame appended to the
//! `-wal` file: a 24-byte header naming the page, then the page. A snapshot
//! is "the first `mxFrame` frames of this WAL generation on top of the
//! database file", and `sqlite3_snapshot_get` tells us its `mxFrame`, the
//! generation's salts and the running checksum after its last frame
//! ([`Mark`]). The pages that differ between two snapshots of one
//! generation are among those named by the frames after the first mark up
//! to the second: checkpoints only copy frames into the database file, they
//! change no page's content.
//!
//! That knowledge is used only when it is proven complete, else the caller
//! hashes every page ([`Changes::Unknown`] says why):
//! - the WAL was restarted since (new salts: SQLite adds one to the first
//!   salt on every restart and draws the second at random), unless it was
//!   restarted once and the old generation's frames after the mark are
//!   still in the file, whole, up to a frame that proves they end there
//!   (see `across_one_restart`);
//! - the database or the WAL file was replaced (device and inode), or the
//!   page size differs;
//! - a frame between the marks fails its salt or its cumulative checksum,
//!   or the checksum after the last frame is not the one the snapshot
//!   recorded (so the frames read are exactly the ones it covers);
//! - the WAL header changed while it was read (a restart mid-scan);
//! - there is no previous mark (first run, lost state) or none now (the
//!   WAL has no frame since it was created, or this SQLite was built without
//!   `SQLITE_ENABLE_SNAPSHOT`).
//!
//! The frame format is SQLite's documented WAL format
//! (<https://www.sqlite.org/fileformat2.html#walformat>); no maintained crate
//! reads frames with their checksums, and the reader is small, so it is
//! written here.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const WAL_HEADER: u64 = 32;
pub(crate) const FRAME_HEADER: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// Where a snapshot ends in its WAL: what the next run starts reading from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Frames of the WAL generation the snapshot covers (`mxFrame`).
    pub frames: u32,
    /// The generation's salts, as stored in the WAL header.
    pub salts: [u8; 8],
    /// The cumulative checksum after the last covered frame.
    pub checksum: [u32; 2],
    /// Page size.
    pub page_size: u32,
    /// Device and inode of the database file.
    pub db_file: (u64, u64),
    /// Device and inode of the WAL file.
    pub wal_file: (u64, u64),
}

/// What the frames between two marks say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Every page (0-based) that may differ; pages past the end of the
    /// older image are among them when they were written since.
    Pages(BTreeSet<u64>),
    /// Not provable: hash every page. Says why.
    Unknown(String),
}

/// The WAL file of the database at `db`.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Device and inode of the file at `path`.
pub(crate) fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The mark of the snapshot `conn` has pinned (a read transaction that has
/// read something). `None` when SQLite cannot name it: the WAL has had no
/// frame since it was created, or SQLite lacks `SQLITE_ENABLE_SNAPSHOT`.
pub fn mark(conn: &rusqlite::Connection, db: &Path) -> Option<Mark> {
    let header = snapshot_header(conn)?;
    // The snapshot handle is SQLite's copy of its WAL-index header, whose
    // layout the file format documents (the header at the start of the
    // -shm file): iVersion u32, unused u32, iChange u32, isInit u8,
    // bigEndCksum u8, szPage u16, mxFrame u32, nPage u32, aFrameCksum
    // [u32; 2], aSalt [u32; 2], aCksum [u32; 2], in native byte order; the
    // salts are the WAL header's bytes, copied. The version is checked so a
    // layout this code does not know is never read as one it does.
    let u32_at = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().unwrap());
    if u32_at(0) != 3_007_000 {
        return None;
    }
    let page_size = match u16::from_ne_bytes([header[14], header[15]]) {
        1 => 65_536,
        n => u32::from(n),
    };
    Some(Mark {
        frames: u32_at(16),
        checksum: [u32_at(24), u32_at(28)],
        salts: header[32..40].try_into().unwrap(),
        page_size,
        db_file: identity(db).ok()?,
        wal_file: identity(&wal_path(db)).ok()?,
    })
}

#[cfg(sqlite_snapshot)]
fn snapshot_header(conn: &rusqlite::Connection) -> Option<[u8; 48]> {
    use rusqlite::ffi;
    let mut snap: *mut ffi::sqlite3_snapshot = std::ptr::null_mut();
    // SAFETY: an open connection used by this thread only during the call;
    // the snapshot object is 48 bytes (`sqlite3_snapshot { unsigned char
    // hidden[48]; }`), copied out and freed right away.
    unsafe {
        if ffi::sqlite3_snapshot_get(conn.handle(), c"main".as_ptr(), &mut snap) != ffi::SQLITE_OK {
            return None;
        }
        let bytes = *(snap as *const [u8; 48]);
        ffi::sqlite3_snapshot_free(snap);
        Some(bytes)
    }
}

#[cfg(not(sqlite_snapshot))]
fn snapshot_header(_: &rusqlite::Connection) -> Option<[u8; 48]> {
    None
}

/// The pages the frames after `from` up to `to` name, for the database at
/// `db`, when that is provably every page that changed between the two
/// snapshots (see the module documentation).
pub fn changed_between(db: &Path, from: Option<&Mark>, to: Option<&Mark>) -> io::Result<Changes> {
    let unknown = |why: &str| Ok(Changes::Unknown(why.to_string()));
    let (Some(from), Some(to)) = (from, to) else {
        return unknown(if from.is_none() {
            "no WAL position recorded by the previous run"
        } else {
            "SQLite cannot name this snapshot's WAL position"
        });
    };
    if from.db_file != to.db_file {
        return unknown("the database file was replaced");
    }
    if from.wal_file != to.wal_file {
        return unknown("the WAL file was replaced");
    }
    if from.page_size != to.page_size {
        return unknown("the page size changed");
    }
    if from.salts != to.salts {
        return across_one_restart(db, from, to);
    }
    if to.frames < from.frames {
        return unknown("the WAL holds fewer frames than before");
    }
    // Its header holds `to`'s salts, which are `from`'s.
    let Some((wal, mut input, big_endian)) = open_wal(db, to)? else {
        return unknown("the WAL file is gone, replaced, or its header is not the recorded one");
    };
    let scan = Scan::read(&mut input, from, to.page_size, big_endian, Some(to.frames))?;
    if let Some(why) = scan.short_of(to) {
        return Ok(Changes::Unknown(why));
    }
    // A restart while the frames were read rewrites the header first.
    if header_order(&mut BufReader::new(&wal), to)?.is_none() {
        return unknown("the WAL was restarted while it was read");
    }
    Ok(Changes::Pages(scan.pages))
}

/// The WAL of `db` if it is still the file `mark` names, buffered, with
/// the checksum byte order its header gives.
fn open_wal(db: &Path, mark: &Mark) -> io::Result<Option<(File, BufReader<File>, bool)>> {
    let wal = match File::open(wal_path(db)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if identity_of(&wal)? != mark.wal_file {
        return Ok(None);
    }
    let mut input = BufReader::with_capacity(1 << 20, wal.try_clone()?);
    let Some(big_endian) = header_order(&mut input, mark)? else {
        return Ok(None);
    };
    Ok(Some((wal, input, big_endian)))
}

/// When the WAL restarted once between the marks, the changed pages are
/// those of the old generation's frames after `from` (copied into the
/// database before the restart) and of the new generation's frames up to
/// `to`. The new generation overwrites the file from its start, so at one
/// run a second, with a WAL held long (see `pipeline::held`), the old
/// frames after the mark are still in place. They count only when that is
/// proven:
/// - exactly one restart: SQLite adds one to the first salt on each, and a
///   WAL made anew (a journal-mode switch) has random salts and checkpoint
///   sequence 0;
/// - the old frames read continue the mark's salts and checksum, and end on
///   a frame of an earlier generation ([`older_generation`]). SQLite's own
///   recovery ends a WAL at its first frame that breaks the chain, so
///   nothing of the old generation follows; a frame of the new generation
///   there (it has reached them), zeroed salts (a transaction's frames
///   before its commit), the file's end (a truncating checkpoint or a size
///   limit), or a broken checksum under the old salts leaves a doubt;
/// - a second read of them gives the same frames: the new generation's
///   writer was not overwriting them meanwhile.
fn across_one_restart(db: &Path, from: &Mark, to: &Mark) -> io::Result<Changes> {
    let unknown = |why: &str| Ok(Changes::Unknown(format!("the WAL was restarted ({why})")));
    if be32(&to.salts[..4]) != be32(&from.salts[..4]).wrapping_add(1) {
        return unknown("more than once, or made anew: other salts");
    }
    let Some((wal, mut input, big_endian)) = open_wal(db, to)? else {
        return unknown("and its file is gone, replaced or rewritten");
    };
    let mut header = [0u8; WAL_HEADER as usize];
    input.seek(SeekFrom::Start(0))?;
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return unknown("and cut short"),
        Err(e) => return Err(e),
    }
    if be32(&header[12..16]) == 0 {
        return unknown("made anew: checkpoint sequence 0");
    }
    let seed = wal_checksum([0, 0], &header[..24], big_endian);
    if seed != [be32(&header[24..28]), be32(&header[28..32])] {
        return unknown("its header fails its checksum");
    }
    let old = Scan::read(&mut input, from, from.page_size, big_endian, None)?;
    match old.stop {
        Stop::OtherSalts(salts) if older_generation(&salts, &from.salts) => {}
        Stop::OtherSalts(salts) if salts == to.salts => {
            return unknown("the new frames reach the old ones after the mark");
        }
        Stop::OtherSalts(_) => {
            return unknown(
                "the old frames after the mark end on a frame of no earlier generation",
            );
        }
        Stop::End => return unknown("the old frames after the mark run to the end of the file"),
        Stop::Checksum | Stop::PageZero => {
            return unknown("an old frame after the mark fails its checksum");
        }
        Stop::Limit => unreachable!("no limit"),
    }
    let start = Mark {
        frames: 0,
        checksum: seed,
        ..*to
    };
    let new = Scan::read(
        &mut input,
        &start,
        to.page_size,
        big_endian,
        Some(to.frames),
    )?;
    if let Some(why) = new.short_of(to) {
        return Ok(Changes::Unknown(why));
    }
    let again = Scan::read(&mut input, from, from.page_size, big_endian, None)?;
    if (again.frames, &again.pages, &again.stop) != (old.frames, &old.pages, &old.stop) {
        return unknown("its old frames changed while they were read");
    }
    if header_order(&mut BufReader::new(&wal), to)?.is_none() {
        return unknown("again while it was read");
    }
    let mut pages = old.pages;
    pages.extend(new.pages);
    Ok(Changes::Pages(pages))
}

/// Restarts back a frame may be from and still count as an earlier
/// generation of the same WAL (see [`older_generation`]).
const GENERATIONS_BACK: u32 = 1 << 16;

/// Whether a frame with `salts` can only be from a generation before the
/// one of `mark`: its first salt a little lower (each restart adds one).
/// Anything else is not proof that the generation of `mark` ended before
/// it: zeroed salts are what SQLite writes in a frame of an open
/// transaction that rewrote a spilled page (they are filled in at commit,
/// and stay zero after a rollback), and a header read while it was being
/// written mixes two.
fn older_generation(salts: &[u8; 8], mark: &[u8; 8]) -> bool {
    let back = be32(&mark[..4]).wrapping_sub(be32(&salts[..4]));
    *salts != [0; 8] && (1..=GENERATIONS_BACK).contains(&back)
}

/// Why a scan of frames stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// It read the frames it was asked for.
    Limit,
    /// The file ended (mid-frame or at a frame's start).
    End,
    /// A frame of another generation (salts as in its header).
    OtherSalts([u8; 8]),
    /// A frame of this generation that does not continue the checksum.
    Checksum,
    /// A frame naming page 0, which SQLite never writes.
    PageZero,
}

/// The frames of one WAL generation after a mark, read until one does not
/// continue its salts and checksum, or up to a limit.
struct Scan {
    /// Frames read that continue the chain: the last one's number.
    frames: u32,
    checksum: [u32; 2],
    /// The pages those frames name (0-based).
    pages: BTreeSet<u64>,
    stop: Stop,
}

impl Scan {
    fn read(
        input: &mut BufReader<File>,
        after: &Mark,
        page_size: u32,
        big_endian: bool,
        limit: Option<u32>,
    ) -> io::Result<Self> {
        let frame_len = FRAME_HEADER + u64::from(page_size);
        input.seek(SeekFrom::Start(
            WAL_HEADER + u64::from(after.frames) * frame_len,
        ))?;
        let mut scan = Scan {
            frames: after.frames,
            checksum: after.checksum,
            pages: BTreeSet::new(),
            stop: Stop::Limit,
        };
        let mut header = [0u8; FRAME_HEADER as usize];
        let mut page = vec![0u8; page_size as usize];
        while limit.is_none_or(|l| scan.frames < l) {
            let read = input
                .read_exact(&mut header)
                .and_then(|()| input.read_exact(&mut page));
            match read {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    scan.stop = Stop::End;
                    break;
                }
                Err(e) => return Err(e),
            }
            if header[8..16] != after.salts {
                scan.stop = Stop::OtherSalts(header[8..16].try_into().expect("8 bytes"));
                break;
            }
            let checksum = wal_checksum(scan.checksum, &header[..8], big_endian);
            let checksum = wal_checksum(checksum, &page, big_endian);
            if [be32(&header[16..20]), be32(&header[20..24])] != checksum {
                scan.stop = Stop::Checksum;
                break;
            }
            let Some(p) = be32(&header[..4]).checked_sub(1) else {
                scan.stop = Stop::PageZero;
                break;
            };
            scan.pages.insert(u64::from(p));
            scan.frames += 1;
            scan.checksum = checksum;
        }
        Ok(scan)
    }

    /// Why these frames are not exactly those up to `to`, if they are not.
    fn short_of(&self, to: &Mark) -> Option<String> {
        let n = self.frames + 1;
        match self.stop {
            Stop::Limit if self.checksum == to.checksum => None,
            Stop::Limit => {
                Some("the frames read end on another checksum than the snapshot's".into())
            }
            Stop::End => Some("the WAL is shorter than the snapshot it holds".into()),
            Stop::OtherSalts(_) => Some(format!("frame {n} has other salts")),
            Stop::Checksum => Some(format!("frame {n} fails its checksum")),
            Stop::PageZero => Some(format!("frame {n} names page 0")),
        }
    }
}

fn identity_of(f: &File) -> io::Result<(u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap())
}

/// Read the WAL header at the start of `input`; the checksum byte order
/// when its magic, page size and salts are those of `mark`.
fn header_order(input: &mut (impl Read + Seek), mark: &Mark) -> io::Result<Option<bool>> {
    input.seek(SeekFrom::Start(0))?;
    let mut h = [0u8; WAL_HEADER as usize];
    match input.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let big_endian = match be32(&h[..4]) {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return Ok(None),
    };
    let page_size = be32(&h[8..12]);
    let ok = page_size == mark.page_size && h[16..24] == mark.salts;
    Ok(ok.then_some(big_endian))
}

/// SQLite's WAL checksum, continued over `data` (a multiple of 8 bytes).
fn wal_checksum(mut s: [u32; 2], data: &[u8], big_endian: bool) -> [u32; 2] {
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let b: [u8; 4] = b.try_into().unwrap();
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s[0] = s[0].wrapping_add(word(&pair[..4])).wrapping_add(s[1]);
        s[1] = s[1].wrapping_add(word(&pair[4..])).wrapping_add(s[0]);
    }
    s
}

#[cfg(test)]
mod tests;
