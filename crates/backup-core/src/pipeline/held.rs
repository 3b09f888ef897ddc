//! Snapshots a long-running process keeps pinned from one incremental run
//! to the next.
//!
//! SQLite restarts its WAL (new salts, frames overwritten from the start)
//! when a writer finds every frame copied into the database and no reader
//! using the WAL. After a restart the next run cannot learn from the frames
//! what changed and reads every page ([`crate::wal_frames`]). A run's read
//! transaction, kept open until the next run has pinned its own, stops
//! checkpoints from copying past it, so the WAL cannot restart in between.
//! The price is a WAL that holds one interval's writes more; above
//! [`MAX_HELD_WAL`] bytes the snapshot is let go, a checkpoint can complete
//! and the WAL restarts. The next run still learns what changed when the
//! old frames after its mark are in place, as they are while the new
//! generation is shorter than the old one was (see
//! [`crate::wal_frames::changed_between`]); else it reads every page once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::snapshot::{PageStream, SnapshotError, SnapshotStats};
use crate::wal_frames;

/// A WAL larger than this is not held back from its checkpoint.
pub const MAX_HELD_WAL: u64 = 64 << 20;

/// The snapshot pinned by the latest run of each database (by path).
#[derive(Clone, Default)]
pub struct HeldSnapshots(Arc<Mutex<HashMap<PathBuf, PageStream>>>);

impl std::fmt::Debug for HeldSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("HeldSnapshots")
            .field("held", &held)
            .finish()
    }
}

impl HeldSnapshots {
    /// Nothing held yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many databases have a snapshot held.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// End the run of `db` with `stream`: keep it pinned (releasing the one
    /// the previous run kept), unless the WAL is over [`MAX_HELD_WAL`].
    pub(super) fn keep(
        &self,
        db: &Path,
        stream: PageStream,
    ) -> Result<SnapshotStats, SnapshotError> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let previous = held.remove(db);
        // The frames the snapshot covers, not the file's length: a restart
        // writes over the file from its start, so a file grown once by a
        // burst stays that long.
        let wal = wal_frames::mark(stream.connection(), db).map_or(0, |m| {
            u64::from(m.frames) * (u64::from(m.page_size) + wal_frames::FRAME_HEADER)
        });
        let stats = if wal > MAX_HELD_WAL {
            debug!(
                "{}: WAL is {wal} bytes; letting its checkpoint complete",
                db.display()
            );
            stream.finish()?
        } else {
            let stats = stream.stats();
            held.insert(db.to_path_buf(), stream);
            stats
        };
        // After the new pin: the WAL was never free to restart in between.
        if let Some(p) = previous {
            let _ = p.finish();
        }
        Ok(stats)
    }
}
