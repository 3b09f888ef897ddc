//! One stream into every sink at once: the multi-sink writer, its keys and
//! the compress (+ encrypt) stage in front of it.

use std::io::{self, BufWriter, Write};

use crate::compress::{Compression, Encoder};
use crate::database::Database;
use crate::digest::{HashingWriter, Sha256};
use crate::encryption::{Plain, Recipients};
use crate::intent;
use crate::naming;
use crate::sink::SinkWriter;
use tracing::warn;

use super::report::sink_error;
use super::{BackupError, INTERRUPTED, Observer, PlannedArtifact, Target};

/// Writes every chunk to all live sink writers; a sink that fails is
/// dropped from the fan-out and reported, the others carry on.
pub(super) struct FanOut {
    pub(super) writers: Vec<(usize, Option<Box<dyn SinkWriter>>)>,
    pub(super) failures: Vec<(usize, String)>,
    pub(super) digest: Sha256,
    pub(super) bytes: u64,
}

impl Write for FanOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.digest.update(buf);
        self.bytes += buf.len() as u64;
        let mut live = 0;
        for (i, slot) in self.writers.iter_mut() {
            if let Some(w) = slot {
                if let Err(e) = w.write_all(buf) {
                    self.failures.push((*i, e.to_string()));
                    if let Some(w) = slot.take() {
                        w.abort();
                    }
                } else {
                    live += 1;
                }
            }
        }
        if live == 0 {
            return Err(io::Error::other("every sink failed"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FanOut {
    /// Aborts every upload still open: nothing of the stream is stored.
    pub(super) fn abort(self) {
        for w in self.writers.into_iter().filter_map(|(_, w)| w) {
            w.abort();
        }
    }
}

/// A classic artifact's writer in each of `artifacts`' sinks, under a name
/// no earlier run used; the sinks that cannot take one are in the errors.
pub(super) fn open_fan(
    db: &Database,
    artifacts: &[PlannedArtifact],
    targets: &[Target],
    run_id: &str,
) -> Result<(Vec<PlannedArtifact>, FanOut, Vec<BackupError>), Vec<BackupError>> {
    let mut errors = Vec::new();
    let mut writers = Vec::new();
    // Two runs in the same second render the same name: never let the
    // second replace the first one's artifact. Such a run gets the run id's
    // suffix in its name instead (`app-r75-20261123-130812-1a2b.db.zst`).
    let artifacts: Vec<PlannedArtifact> = artifacts
        .iter()
        .map(|a| unique_name(a, &targets[a.target], run_id))
        .collect::<Result<_, _>>()
        .map_err(|e| vec![e])?;
    for a in &artifacts {
        let target = &targets[a.target];
        // Name the keys before writing them, so that if this process is
        // killed before its manifest a later run can remove them.
        if !target.template.allows_overwrite() {
            let record = intent::Intent {
                run_id: run_id.to_string(),
                keys: vec![a.key.clone(), a.sidecar_key.clone()],
            };
            if let Err(e) = intent::record(target.sink.as_ref(), &db.label, &record) {
                warn!("sink {}: cannot record what this run writes: {e}", a.sink);
            }
        }
        match target.sink.create(&a.key) {
            Ok(w) => writers.push((a.target, Some(w))),
            Err(e) => errors.push(sink_error(&a.sink, e)),
        }
    }
    let fan = FanOut {
        writers,
        failures: vec![],
        digest: Sha256::new(),
        bytes: 0,
    };
    Ok((artifacts, fan, errors))
}

/// `a` itself, or — when its key is already taken in the sink and the
/// template does not allow overwriting — `a` with the run id's suffix
/// inserted before the extension.
fn unique_name(
    a: &PlannedArtifact,
    target: &Target,
    run_id: &str,
) -> Result<PlannedArtifact, BackupError> {
    let taken = |key: &str| {
        target
            .sink
            .size(key)
            .map(|s| s.is_some())
            .map_err(|e| sink_error(&a.sink, e))
    };
    if target.template.allows_overwrite() || !taken(&a.key)? {
        return Ok(a.clone());
    }
    let suffix = run_id.rsplit('-').next().unwrap_or(run_id);
    let (stem, ext) = match a.key.rfind(".db") {
        Some(i) => a.key.split_at(i),
        None => (a.key.as_str(), ""),
    };
    let key = format!("{stem}-{suffix}{ext}");
    if taken(&key)? {
        return Err(sink_error(
            &a.sink,
            format!(
                "{} and {key} already exist; refusing to overwrite an earlier backup",
                a.key
            ),
        ));
    }
    Ok(PlannedArtifact {
        sidecar_key: naming::sidecar_key(&key),
        key,
        ..a.clone()
    })
}

/// Stops a stream as soon as the run is cancelled (SIGTERM in the daemon).
pub(super) struct Cancellable<'a> {
    pub(super) inner: &'a mut dyn Write,
    pub(super) observer: &'a dyn Observer,
}

impl Write for Cancellable<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.observer.cancelled() {
            // Not ErrorKind::Interrupted: `write_all` would retry that forever.
            return Err(io::Error::other(INTERRUPTED));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Push a raw database image, written by `produce`, through the raw digest
/// and the compressor into `fan`. Returns the image's SHA-256 and size.
pub(super) fn compress_into(
    fan: &mut FanOut,
    compression: &Compression,
    encryption: Option<&Recipients>,
    observer: &dyn Observer,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<(String, u64)> {
    // Compressed, then encrypted (ciphertext does not compress), then sent:
    // the fan-out's digest, and so the sidecar, covers the stored bytes.
    let mut sealed: Box<dyn Encoder + '_> = match encryption {
        Some(r) => r.encrypt(Box::new(fan))?,
        None => Box::new(Plain(Box::new(fan))),
    };
    let encoder = compression.encoder(Box::new(&mut sealed))?;
    // Pages arrive 4 KiB at a time; the digest and the compressor's input
    // handling work best on large blocks.
    let mut raw = BufWriter::with_capacity(1 << 20, HashingWriter::new(encoder));
    produce(&mut Cancellable {
        inner: &mut raw,
        observer,
    })?;
    let (encoder, db_sha256, db_size) = raw.into_inner().map_err(|e| e.into_error())?.finish();
    encoder.finish()?;
    sealed.finish()?;
    Ok((db_sha256, db_size))
}
