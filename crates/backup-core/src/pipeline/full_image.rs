//! A classic artifact: the whole image of one snapshot, streamed from the
//! pinned read transaction (or a scratch copy) through the fan-out.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;
use tracing::{info, warn};

use super::commit::{Produced, finish_uploads};
use super::fan_out::{FanOut, compress_into, open_fan};
use super::report::Written;
use super::report::sink_error;
use super::{BackupError, PlannedArtifact, RunOpts, SnapshotFailure, Target, fallback_scratch_dir};
use crate::database::{Database, SnapshotMethod};
use crate::fsutil;
use crate::snapshot::{self, PageStream};
use crate::verify::{self, Checks};

use super::twin_check::read_while_checking;

/// Why producing the image failed.
enum Failure {
    /// Reading, compressing or sending the stream failed (sinks may say why).
    Stream(io::Error),
    /// Anything else (snapshot, scratch folder, checker).
    Other(SnapshotFailure),
}

fn snapshot_err(e: snapshot::SnapshotError) -> Failure {
    Failure::Other(e.into())
}

pub(super) fn backup_streams(
    db: &Database,
    artifacts: &[PlannedArtifact],
    targets: &[Target],
    opts: &RunOpts<'_>,
    run_id: &str,
    _run_started: Timestamp,
) -> Result<(Written, Vec<BackupError>), Vec<BackupError>> {
    let (artifacts, mut fan, mut errors) = open_fan(db, artifacts, targets, run_id)?;
    if fan.writers.is_empty() {
        return Err(errors);
    }
    let artifacts = artifacts.as_slice();
    let started = Instant::now();
    let produced = produce(db, opts, run_id, &mut fan);
    let produced = match produced {
        Ok(p) => p,
        Err(Failure::Other(e)) => {
            fan.abort();
            return Err(vec![e.into()]);
        }
        Err(Failure::Stream(error)) => {
            let sinks = fan
                .failures
                .iter()
                .map(|(i, m)| format!("sink {}: {m}", targets[*i].sink.name()))
                .collect::<Vec<_>>();
            fan.abort();
            return Err(vec![SnapshotFailure::Stream { error, sinks }.into()]);
        }
    };
    info!(
        label = %db.label,
        pages = produced.stats.page_count,
        bytes = produced.db_size,
        ms = produced.stats.elapsed.as_millis() as u64,
        "snapshot done"
    );
    if !produced.report.ok() {
        fan.abort();
        return Err(vec![BackupError::Check {
            problems: produced.report.problems.clone(),
        }]);
    }
    for (i, msg) in &fan.failures {
        errors.push(sink_error(targets[*i].sink.name(), msg));
    }
    let (written, sink_errors) =
        finish_uploads(fan, produced, db, artifacts, targets, opts, started);
    errors.extend(sink_errors);
    Ok((written, errors))
}

/// Take the snapshot and push it through the digest and compressor into
/// `fan`, checking it on the way. WAL databases stream their pages straight
/// from the pinned read transaction when SQLite allows; everything else goes
/// through a scratch copy (see the `snapshot` module for why).
fn produce(
    db: &Database,
    opts: &RunOpts<'_>,
    run_id: &str,
    fan: &mut FanOut,
) -> Result<Produced, Failure> {
    if opts.snapshot_method == SnapshotMethod::Backup
        && let Some(stream) = PageStream::open(&db.path).map_err(snapshot_err)?
    {
        return stream_pages(stream, db, opts, fan);
    }
    via_scratch(db, opts, run_id, fan)
}

/// The fast path: one pass, no scratch file. The pinned snapshot's pages go
/// through the raw digest into the compressor on this thread while the
/// post-backup check reads the same snapshot on another connection (and so
/// another core). Without a twin connection the check runs afterwards on the
/// pinned one: the same pages either way.
fn stream_pages(
    stream: PageStream,
    db: &Database,
    opts: &RunOpts<'_>,
    fan: &mut FanOut,
) -> Result<Produced, Failure> {
    let checks = Checks::after_backup(db, opts.verify_level);
    let total = stream.size();
    let page_size = stream.page_size();
    let (streamed, report) = read_while_checking(&stream, &checks, || {
        compress_into(
            fan,
            &opts.compression,
            db.encryption.as_ref(),
            opts.observer,
            |out| {
                stream
                    .copy_to(out, &mut |done, _| {
                        opts.observer
                            .stream_progress(&db.label, done * page_size, total)
                    })
                    .map(|_| ())
            },
        )
    })
    .map_err(Failure::Other)?;
    let (db_sha256, db_size) = streamed.map_err(Failure::Stream)?;
    let stats = stream.finish().map_err(snapshot_err)?;
    opts.observer
        .snapshot_progress(&db.label, stats.page_count, stats.page_count);
    Ok(Produced {
        stats,
        db_sha256,
        db_size,
        report,
    })
}

/// The fallback: the online backup API copies the snapshot into a private
/// scratch file (for rollback-journal sources this ends the read
/// transaction, and the writers' wait, as early as possible); then one
/// thread checks the copy while this one compresses it.
fn via_scratch(
    db: &Database,
    opts: &RunOpts<'_>,
    run_id: &str,
    fan: &mut FanOut,
) -> Result<Produced, Failure> {
    // The scratch folder normally lives in the local tier; when that is not
    // writable (read-only or missing mount), the other sinks must still get
    // the backup, so fall back to the system's temporary folder.
    // Owner only (0700), like the 0600 files in it.
    let scratch_dir = match fsutil::create_dir_all_mode(&opts.scratch_dir, fsutil::PRIVATE_DIR) {
        Ok(()) => opts.scratch_dir.clone(),
        Err(e) => {
            let fallback = fallback_scratch_dir();
            warn!(
                "scratch folder {} is unusable ({e}); using {}",
                opts.scratch_dir.display(),
                fallback.display()
            );
            fsutil::create_dir_all_mode(&fallback, fsutil::PRIVATE_DIR).map_err(|e2| {
                Failure::Other(SnapshotFailure::Scratch {
                    dir: opts.scratch_dir.clone(),
                    error: e,
                    fallback: fallback.clone(),
                    fallback_error: e2,
                })
            })?;
            fallback
        }
    };
    let scratch = Scratch(fsutil::partial_path(
        &scratch_dir.join(format!("{}-{run_id}.db", db.label)),
    ));
    let stats = snapshot::to_file(
        opts.snapshot_method,
        &db.path,
        &scratch.0,
        &mut |done, total| opts.observer.snapshot_progress(&db.label, done, total),
    )
    .map_err(snapshot_err)?;
    if opts.observer.cancelled() {
        return Err(Failure::Other(SnapshotFailure::Interrupted));
    }

    let checks = Checks::after_backup(db, opts.verify_level);
    let check_path = scratch.0.clone();
    let checker = std::thread::spawn(move || verify::check_file(&check_path, &checks));
    let streamed = compress_into(
        fan,
        &opts.compression,
        db.encryption.as_ref(),
        opts.observer,
        |out| {
            let mut file = File::open(&scratch.0)?;
            let total = file.metadata()?.len();
            let mut buf = vec![0u8; 1 << 20];
            let mut done = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                out.write_all(&buf[..n])?;
                done += n as u64;
                opts.observer.stream_progress(&db.label, done, total);
            }
        },
    );
    let report = checker
        .join()
        .map_err(|_| Failure::Other(SnapshotFailure::CheckPanicked))?;
    let (db_sha256, db_size) = streamed.map_err(Failure::Stream)?;
    Ok(Produced {
        stats,
        db_sha256,
        db_size,
        report,
    })
}

/// Deletes the scratch snapshot (and any `-wal`/`-shm` beside it) on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
