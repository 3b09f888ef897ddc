//! Files of page hashes in the state folder (each sink's page-hash cache,
//! the WAL hint's), which the next run reads back and checks against the
//! SHA-256 its manifest or state names.
//!
//! A long-lived process that opts in ([`keep_in_memory`]: the daemon) keeps
//! what it wrote, so its next run neither reads nor hashes those files
//! again: at one run a second on a 200 MB database, reading and hashing
//! them three times a run was an eighth of the daemon's CPU. What it kept
//! is used only while the file still has the size, modification time and
//! inode it had after the write; any other file is read and checked as
//! before.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{HASH_LEN, PageHash, hashes_digest};
use crate::digest::HashingReader;

/// The most hash bytes kept; past it, what is kept is dropped (the files are
/// then read, as without keeping): 4 MiB of hashes per 1 GiB of 4 KiB pages.
const MAX_KEPT_BYTES: usize = 64 << 20;

#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

struct Kept {
    stamp: Stamp,
    digest: String,
    hashes: Arc<[PageHash]>,
}

/// `None` until [`keep_in_memory`].
static KEPT: Mutex<Option<HashMap<PathBuf, Kept>>> = Mutex::new(None);

fn kept() -> MutexGuard<'static, Option<HashMap<PathBuf, Kept>>> {
    // Nothing half-written matters: an entry is checked before use.
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keep the page-hash files this process writes in memory from now on.
pub fn keep_in_memory() {
    kept().get_or_insert_with(HashMap::new);
}

/// What this process wrote to `path`, if the file is still that one.
fn recall(path: &Path) -> Option<(String, Arc<[PageHash]>)> {
    let mut guard = kept();
    let map = guard.as_mut()?;
    let k = map.get(path)?;
    if Stamp::of(path).as_ref() != Some(&k.stamp) {
        map.remove(path);
        return None;
    }
    Some((k.digest.clone(), k.hashes.clone()))
}

fn remember(path: &Path, hashes: &[PageHash], digest: &str) {
    let mut guard = kept();
    let Some(map) = guard.as_mut() else {
        return;
    };
    map.remove(path);
    let Some(stamp) = Stamp::of(path) else {
        return;
    };
    // The cache of each sink and the WAL hint hold the same image's hashes.
    let shared = map
        .values()
        .find(|k| k.digest == digest)
        .map(|k| k.hashes.clone());
    let hashes = shared.unwrap_or_else(|| {
        if distinct_bytes(map) + hashes.len() * HASH_LEN > MAX_KEPT_BYTES {
            map.clear();
        }
        hashes.into()
    });
    if hashes.len() * HASH_LEN <= MAX_KEPT_BYTES {
        map.insert(
            path.to_path_buf(),
            Kept {
                stamp,
                digest: digest.to_string(),
                hashes,
            },
        );
    }
}

/// Entries of one digest share their hashes (see [`remember`]).
fn distinct_bytes(map: &HashMap<PathBuf, Kept>) -> usize {
    let mut seen = std::collections::HashSet::new();
    map.values()
        .filter(|k| seen.insert(k.digest.as_str()))
        .map(|k| k.hashes.len() * HASH_LEN)
        .sum()
}

/// Write `hashes` (whose [`hashes_digest`] is `digest`) to `path`: a private
/// file, replaced atomically.
pub(crate) fn write(path: &Path, hashes: &[PageHash], digest: &str) -> io::Result<()> {
    crate::fsutil::atomic_write_mode(path, hashes.as_flattened(), 0o600)?;
    remember(path, hashes, digest);
    Ok(())
}

/// The `pages` hashes in `path`, if their digest is `digest`; `None` when
/// the file is missing, torn, or of another image.
pub(crate) fn read(path: &Path, pages: u64, digest: &str) -> Option<Vec<PageHash>> {
    read_if(path, pages, |d| d == digest)
}

/// [`read`], with the digest accepted by `accept` (a sealed chain's
/// manifest records it keyed).
pub(crate) fn read_if(
    path: &Path,
    pages: u64,
    accept: impl Fn(&str) -> bool,
) -> Option<Vec<PageHash>> {
    if let Some((d, hashes)) = recall(path) {
        return (hashes.len() as u64 == pages && accept(&d)).then(|| hashes.to_vec());
    }
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() as u64 != pages * HASH_LEN as u64 {
        return None;
    }
    let hashes = bytes.as_chunks::<HASH_LEN>().0;
    accept(&hashes_digest(hashes)).then(|| hashes.to_vec())
}

/// The digest of the hashes in `path` (the SHA-256 of its bytes), `None`
/// when there is no such file.
pub(crate) fn digest(path: &Path) -> io::Result<Option<String>> {
    if let Some((d, _)) = recall(path) {
        return Ok(Some(d));
    }
    let f = match std::fs::File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        f => f?,
    };
    let mut r = HashingReader::new(f);
    io::copy(&mut r, &mut io::sink())?;
    Ok(Some(r.finish().0))
}

/// Rename `from` to `to`; what was kept of `from` follows it (a rename
/// keeps the inode and the modification time).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    if let Some(map) = kept().as_mut() {
        map.remove(to);
        if let Some(k) = map.remove(from) {
            map.insert(to.to_path_buf(), k);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(seed: u8, n: usize) -> Vec<PageHash> {
        (0..n)
            .map(|i| [seed.wrapping_add(i as u8); HASH_LEN])
            .collect()
    }

    #[test]
    fn what_was_written_reads_back_and_a_changed_file_is_read_again() {
        keep_in_memory();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pagehashes");
        let h = hashes(1, 300);
        let d = hashes_digest(&h);
        write(&path, &h, &d).unwrap();
        assert_eq!(digest(&path).unwrap().as_deref(), Some(d.as_str()));
        assert_eq!(read(&path, 300, &d), Some(h.clone()));
        assert_eq!(read(&path, 300, &"0".repeat(64)), None);
        assert_eq!(read(&path, 299, &d), None);

        // Replaced behind this process's back: the file is read and checked.
        let other = hashes(7, 300);
        let od = hashes_digest(&other);
        crate::fsutil::atomic_write_mode(&path, other.as_flattened(), 0o600).unwrap();
        assert_eq!(read(&path, 300, &d), None);
        assert_eq!(read(&path, 300, &od), Some(other));
        assert_eq!(digest(&path).unwrap().as_deref(), Some(od.as_str()));

        // A rename carries what was kept; the old name is gone.
        write(&path, &h, &d).unwrap();
        let prev = dir.path().join("app.pagehashes.prev");
        rename(&path, &prev).unwrap();
        assert_eq!(read(&prev, 300, &d), Some(h));
        assert_eq!(digest(&path).unwrap(), None);
        assert_eq!(read(&path, 300, &d), None);
    }

    #[test]
    fn a_torn_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn.pagehashes");
        let h = hashes(3, 10);
        let d = hashes_digest(&h);
        std::fs::write(&path, &h.as_flattened()[..100]).unwrap();
        assert_eq!(read(&path, 10, &d), None);
    }
}
