//! What an incremental run remembers locally so the next one reads only the
//! pages the WAL says changed: the previous snapshot's WAL mark and the
//! hashes of every page of its image (see [`crate::wal_frames`]).
//!
//! Kept in the page cache folder as `<label>.wal-hint.json` and
//! `<label>.wal-hint.pagehashes`. The JSON names the SHA-256 of the hashes
//! file, so a torn or stale pair is never used: the run reads every page.
//! The state describes an image, not a catalog: a run whose uploads failed
//! still leaves a correct one.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::incremental::{PageHash, hash_file};
use crate::wal_frames::{self, Changes, Mark};

/// A run reads and checks every page (`quick_check` included) at least this
/// often, whatever the WAL says: the whole-image SHA-256 is recorded again,
/// and damage to pages no one writes is found within the hour.
pub(super) const FULL_READ_EVERY: SignedDuration = SignedDuration::from_secs(3600);

#[derive(Debug, Serialize, Deserialize)]
struct State {
    mark: Mark,
    page_count: u64,
    hashes_sha256: String,
    full_read_at: Timestamp,
}

fn files(dir: &Path, label: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{label}.wal-hint.json")),
        dir.join(format!("{label}.wal-hint.pagehashes")),
    )
}

/// What the previous run left that this one may build on.
pub(super) struct Known {
    /// Every page's hash in the previous image.
    pub hashes: Vec<PageHash>,
    /// The pages (0-based, below this image's page count) to read again.
    pub changed: Vec<u64>,
    /// When a run last read every page.
    pub full_read_at: Timestamp,
}

/// How much of the image a run reads, and whether it checks it page by page.
pub(super) enum Read {
    /// Only the pages the WAL names.
    Changed(Known),
    /// Every page, to learn what changed, but without the whole-image
    /// SHA-256 and the page-by-page check: the WAL cannot name the changes
    /// (a checkpoint restarted it), yet the database was read and checked
    /// whole less than [`FULL_READ_EVERY`] ago (at `full_read_at`), the same
    /// file, and runs that read only what the WAL named rest on that check
    /// just as well.
    Rescan { full_read_at: Timestamp },
    /// Every page, checked (the configured `quick_check` or
    /// `integrity_check`), with the whole-image SHA-256.
    Verified,
}

/// What this run must read: the pages the WAL proves changed since the
/// previous run, else every page (the reason logged), checked whole when
/// nothing recent vouches for the file.
pub(super) fn known(
    dir: &Path,
    label: &str,
    db: &Path,
    now: Option<&Mark>,
    page_count: u64,
    at: Timestamp,
) -> Read {
    let verified = |why: &str| {
        info!(label, "wal hint: reading and checking every page ({why})");
        Read::Verified
    };
    let (json, bin) = files(dir, label);
    let state: State = match std::fs::read(&json) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(_) => return verified("its state file is unreadable"),
        },
        Err(_) => return verified("no state from a previous run"),
    };
    if at.duration_since(state.full_read_at) >= FULL_READ_EVERY {
        return verified("the last full read is over an hour old");
    }
    let file = now.map_or_else(|| wal_frames::identity(db).ok(), |m| Some(m.db_file));
    if file != Some(state.mark.db_file) {
        return verified("the database file was replaced");
    }
    let rescan = |why: &str| {
        info!(label, "wal hint: reading every page ({why})");
        Read::Rescan {
            full_read_at: state.full_read_at,
        }
    };
    let changes = match wal_frames::changed_between(db, Some(&state.mark), now) {
        Ok(Changes::Pages(p)) => p,
        Ok(Changes::Unknown(why)) => return rescan(&why),
        Err(e) => return rescan(&format!("reading the WAL: {e}")),
    };
    let Some(hashes) = hash_file::read(&bin, state.page_count, &state.hashes_sha256) else {
        return rescan("its page hashes are missing, torn or not of its image");
    };
    // A page past the previous end that no frame names would be hashed from
    // nothing: SQLite writes every new page through the WAL, so that is
    // never the case, but a doubt means a full read.
    if (state.page_count..page_count).any(|p| !changes.contains(&p)) {
        return rescan("the image grew by pages no frame names");
    }
    Read::Changed(Known {
        hashes,
        changed: changes.into_iter().filter(|&p| p < page_count).collect(),
        full_read_at: state.full_read_at,
    })
}

/// Remember `hashes` (the image at `mark`) for the next run. Hashes first,
/// then the JSON naming their digest, each replaced atomically.
pub(super) fn remember(
    dir: &Path,
    label: &str,
    mark: Option<Mark>,
    hashes: &[PageHash],
    hashes_sha256: &str,
    full_read_at: Timestamp,
) {
    let (json, bin) = files(dir, label);
    let Some(mark) = mark else {
        // Nothing to build on: a stale state must not outlive its image.
        let _ = std::fs::remove_file(&json);
        return;
    };
    let state = State {
        mark,
        page_count: hashes.len() as u64,
        hashes_sha256: hashes_sha256.to_string(),
        full_read_at,
    };
    let written = crate::fsutil::create_dir_all_mode(dir, 0o700)
        .and_then(|()| hash_file::write(&bin, hashes, hashes_sha256))
        .and_then(|()| {
            let bytes = serde_json::to_vec(&state).expect("the state serializes");
            crate::fsutil::atomic_write_mode(&json, &bytes, 0o600)
        });
    if let Err(e) = written {
        warn!(
            "label={label}: cannot keep the WAL hint in {}: {e}; the next run reads every page",
            dir.display()
        );
        let _ = std::fs::remove_file(&json);
    }
}
