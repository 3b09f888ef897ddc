//! Committing uploads: make them visible, check their size, write their
//! sidecars, and build the manifest entries that record them.

use std::time::Instant;

use tracing::info;

use super::fan_out::FanOut;
use super::report::Written;
use super::report::sink_error;
use super::{BackupError, PlannedArtifact, RunOpts, Target};
use crate::database::Database;
use crate::digest::Sidecar;
use crate::fsutil;
use crate::manifest::{Entry, SealedFacts};
use crate::naming;
use crate::snapshot::SnapshotStats;
use crate::verify::DbReport;

/// The image of one database, compressed into the fan-out, and its check.
pub(super) struct Produced {
    pub(super) stats: SnapshotStats,
    /// SHA-256 and size of the raw database image (what a restore writes).
    pub(super) db_sha256: String,
    pub(super) db_size: u64,
    /// The post-backup check of exactly that image.
    pub(super) report: DbReport,
}

/// What a manifest entry records of one stored object and the image it
/// holds; the rest of the entry is the run's (see [`new_entry`]).
pub(super) struct Stored {
    pub(super) key: String,
    pub(super) sidecar_key: String,
    pub(super) compression: crate::compress::Format,
    pub(super) size: u64,
    pub(super) sha256: String,
    pub(super) db_size: u64,
    pub(super) page_size: u64,
    pub(super) page_count: u64,
    /// In the clear, or emptied when they are sealed.
    pub(super) facts: SealedFacts,
}

/// The manifest entry of `stored`, a snapshot of `db` this run took
/// (`stats`). It says unencrypted and self-contained (no page map); callers
/// set those fields when they differ.
pub(super) fn new_entry(
    db: &Database,
    opts: &RunOpts<'_>,
    stats: &SnapshotStats,
    source_mode: Option<u32>,
    stored: Stored,
) -> Entry {
    let source = crate::source::Source::local(db);
    Entry {
        adopted: None,
        label: db.label.clone(),
        tag: opts.tag.clone(),
        key: stored.key,
        sidecar_key: stored.sidecar_key,
        compression: stored.compression,
        size: stored.size,
        sha256: stored.sha256,
        db_size: stored.db_size,
        db_sha256: stored.facts.db_sha256,
        page_size: stored.page_size,
        page_count: stored.page_count,
        schema_sha256: stored.facts.schema_sha256,
        row_counts: stored.facts.row_counts,
        snapshot_at: stats.taken_at,
        snapshot_ms: stats.elapsed.as_millis() as u64,
        verified_with: opts.verify_level,
        source: source.path,
        host: source.host,
        source_mode,
        encrypted_to: vec![],
        sealed: None,
        pages: None,
    }
}

/// Make every upload that survived visible, compare its stored size, write
/// its sidecar, and return the manifest entries and the sinks that failed.
pub(super) fn finish_uploads(
    fan: FanOut,
    produced: Produced,
    db: &Database,
    artifacts: &[PlannedArtifact],
    targets: &[Target],
    opts: &RunOpts<'_>,
    started: Instant,
) -> (Written, Vec<BackupError>) {
    let mut errors = Vec::new();
    let facts = produced.report.facts.unwrap_or_default();
    let sha256 = fan.digest.clone().finish_hex();
    let size = fan.bytes;
    // Recorded so that `restore --to` a new path gives the new file the
    // source's mode, not the umask's.
    let source_mode = fsutil::mode_of(&db.path).ok();
    let clear = SealedFacts {
        db_sha256: produced.db_sha256.clone(),
        schema_sha256: facts.schema_sha256.clone(),
        row_counts: facts.row_counts.clone(),
        pages_sha256: None,
    };
    let recorded = match ManifestFacts::new(db, clear) {
        Ok(recorded) => recorded,
        Err(e) => {
            for (i, w) in fan.writers {
                if let Some(w) = w {
                    w.abort();
                }
                errors.push(sink_error(
                    targets[i].sink.name(),
                    format!("sealing the manifest facts: {e}"),
                ));
            }
            return (Vec::new(), errors);
        }
    };
    let mut written = Vec::new();
    for (i, w) in fan.writers {
        let Some(w) = w else { continue };
        let a = artifacts.iter().find(|a| a.target == i).expect("planned");
        let sink = targets[i].sink.as_ref();
        match commit_upload(sink, a, w, size, &sha256) {
            Ok(()) => {
                info!(
                    label = %db.label,
                    sink = %a.sink,
                    key = %a.key,
                    bytes = size,
                    ms = started.elapsed().as_millis() as u64,
                    "upload done"
                );
                let stored = Stored {
                    key: a.key.clone(),
                    sidecar_key: a.sidecar_key.clone(),
                    compression: opts.compression.format,
                    size,
                    sha256: sha256.clone(),
                    db_size: produced.db_size,
                    page_size: facts.page_size,
                    page_count: facts.page_count,
                    facts: recorded.clear.clone(),
                };
                let entry = Entry {
                    encrypted_to: recorded.encrypted_to.clone(),
                    sealed: recorded.sealed.clone(),
                    ..new_entry(db, opts, &produced.stats, source_mode, stored)
                };
                written.push((a.sink.clone(), entry));
            }
            Err(e) => {
                let _ = sink.delete(&a.key);
                errors.push(sink_error(&a.sink, e));
            }
        }
    }
    (written, errors)
}

/// What the content digests and row counts look like in the manifest: in
/// the clear, or sealed to the artifact's recipients.
pub(super) struct ManifestFacts {
    /// Emptied when sealed.
    pub(super) clear: SealedFacts,
    pub(super) encrypted_to: Vec<String>,
    pub(super) sealed: Option<String>,
}

impl ManifestFacts {
    pub(super) fn new(db: &Database, clear: SealedFacts) -> std::io::Result<Self> {
        let Some(r) = &db.encryption else {
            return Ok(Self {
                clear,
                encrypted_to: Vec::new(),
                sealed: None,
            });
        };
        let facts_json = serde_json::to_vec(&clear).expect("facts serialize");
        let sealed = r.seal(&facts_json)?;
        Ok(Self {
            clear: SealedFacts::default(),
            encrypted_to: r.fingerprints().to_vec(),
            sealed: Some(sealed),
        })
    }
}

/// Make one upload visible, check the sink stored every byte sent (else
/// remove it), then write its sidecar.
fn commit_upload(
    sink: &dyn crate::sink::Sink,
    a: &PlannedArtifact,
    w: Box<dyn crate::sink::SinkWriter>,
    size: u64,
    sha256: &str,
) -> Result<(), crate::sink::SinkError> {
    let n = w.finish()?;
    if n != size {
        let _ = sink.delete(&a.key);
        return Err(crate::sink::SinkError::Remote {
            op: "verify size of",
            key: a.key.clone(),
            message: format!("stored {n} bytes, sent {size}"),
        });
    }
    sink.put(
        &a.sidecar_key,
        Sidecar::new(sha256, naming::file_name(&a.key))
            .render()
            .as_bytes(),
    )
}
