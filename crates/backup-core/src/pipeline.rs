//! The backup pipeline: snapshot → compress + digest (one streaming pass) →
//! every sink at once → sidecars → manifest, last.
//!
//! A run is planned first ([`plan`]), so `--dry-run` can print exactly what
//! [`execute`] would do, with the same names.
//!
//! Per database:
//! 1. Pin one read transaction on the source ([`crate::snapshot`]).
//! 2. Stream the image once through the raw-database digest, the compressor
//!    (workers on every core) and the artifact digest into every sink, while
//!    another thread runs the post-backup check on the same image:
//!    - fast path (WAL source, SQLite with `sqlite_dbpage`): the pinned
//!      snapshot's pages go straight into the compressor, and the check reads
//!      the same snapshot on a second connection; no scratch file at all;
//!    - fallback: the online backup API copies the snapshot into a private
//!      scratch file first, then the file is streamed and checked.
//! 3. Only when the check passed are the uploads finished (made visible);
//!    then each stored size is compared and the sidecars written.
//! 4. After all databases, each sink gets one manifest listing what it holds.
//!    Until then nothing of the run is a backup.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use tracing::{info, warn};

use crate::catalog::append::{self, AppendError};
use crate::compress::{Compression, Encoder};
use crate::database::{CheckLevel, Database, SnapshotMethod};
use crate::digest::{HashingWriter, Sha256, Sidecar};
use crate::encryption::{Plain, Recipients};
use crate::fsutil;
use crate::incremental;
use crate::intent;
use crate::manifest::{self, Entry, SealedFacts};
use crate::naming::{self, NameContext, Template};
use crate::sink::{Sink, SinkError, SinkWriter};
use crate::snapshot::{self, PageStream, SnapshotStats};
use crate::verify::{self, Checks, DbReport};

/// A sink and the template naming artifacts in it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// Artifact names.
    pub template: Template,
    /// Only used for cold-tier backups (`--tier cold` or a cold tag).
    pub cold_only: bool,
}

/// Hooks for progress display (the CLI draws bars with them) and for
/// stopping a run early. Every method has a no-op default; calls come from
/// the backup thread.
pub trait Observer: Send + Sync {
    /// Asked before each database, after its snapshot and between streamed
    /// chunks. Once it returns true the run stops cleanly: the database in
    /// flight is abandoned (its uploads aborted, nothing stored), later
    /// databases are not started, and both are reported as skipped with the
    /// reason [`INTERRUPTED`]; databases finished before still get their
    /// manifest, so the run never leaves a complete-looking partial backup.
    fn cancelled(&self) -> bool {
        false
    }
    /// Snapshot progress in pages.
    fn snapshot_progress(&self, _label: &str, _done: u64, _total: u64) {}
    /// Compress + upload progress in database bytes read.
    fn stream_progress(&self, _label: &str, _done: u64, _total: u64) {}
    /// The database is finished (successfully or not).
    fn database_done(&self, _label: &str) {}
}

/// Skip reason of databases abandoned or not started because the run was
/// cancelled (see [`Observer::cancelled`]).
pub const INTERRUPTED: &str = "interrupted: run cancelled, nothing of it stored";

/// An observer that shows nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {}

/// How a run backs up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Trigger tag for every database of the run.
    pub tag: Option<String>,
    /// Also send every database to cold-only targets.
    pub cold: bool,
    /// Also send these databases to cold-only targets (the CLI puts here
    /// the labels whose `cold_tags` hold this run's tag).
    pub cold_labels: Vec<String>,
    /// Compression.
    pub compression: Compression,
    /// Post-backup check.
    pub verify_level: CheckLevel,
    /// Snapshot method.
    pub snapshot_method: SnapshotMethod,
    /// When databases backed up incrementally start a new chain.
    pub incremental: crate::incremental::Policy,
    /// Private folder for snapshot scratch files (same file system as the
    /// local tier is best; never inside a source's folder).
    pub scratch_dir: PathBuf,
    /// Private folder where incremental runs keep each sink's newest page
    /// hashes, so that the next run reads no page index from the sink
    /// (see [`incremental::cached_hashes`]); `None`: always read the sink.
    pub page_cache: Option<PathBuf>,
}

/// The options and the observer of the run under way.
struct RunOpts<'a> {
    opts: &'a Options,
    observer: &'a dyn Observer,
}

impl std::ops::Deref for RunOpts<'_> {
    type Target = Options;
    fn deref(&self) -> &Options {
        self.opts
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tag: None,
            cold: false,
            cold_labels: Vec::new(),
            compression: Compression::default(),
            verify_level: CheckLevel::default(),
            snapshot_method: SnapshotMethod::default(),
            incremental: crate::incremental::Policy::default(),
            scratch_dir: fallback_scratch_dir(),
            page_cache: None,
        }
    }
}

/// One artifact a run will write.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedArtifact {
    /// Index into [`Plan::targets`].
    pub target: usize,
    /// Sink name.
    pub sink: String,
    /// Artifact key.
    pub key: String,
    /// Sidecar key.
    pub sidecar_key: String,
}

/// What a run does with one database.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Back it up to these artifacts.
    Backup(Vec<PlannedArtifact>),
    /// Skip it (a WARN, not a failure): the source does not exist.
    Skip(String),
}

/// One database of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanItem {
    /// The database.
    pub database: Database,
    /// What happens to it.
    pub action: Action,
}

/// A resolved run, ready to print or execute.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Run id (also the manifest name).
    pub run_id: String,
    /// Planned start; artifact names use it.
    pub started_at: Timestamp,
    /// Per database.
    pub items: Vec<PlanItem>,
    /// Where artifacts go; [`PlannedArtifact::target`] indexes this.
    pub targets: Vec<Target>,
    /// How.
    pub options: Options,
}

impl Plan {
    /// Objects a fully successful run writes: artifact + sidecar per
    /// artifact, plus one manifest per sink used.
    pub fn expected_objects(&self) -> usize {
        let mut sinks = std::collections::BTreeSet::new();
        let mut n = 0;
        for item in &self.items {
            if let Action::Backup(arts) = &item.action {
                n += 2 * arts.len();
                sinks.extend(arts.iter().map(|a| a.target));
            }
        }
        // Each sink used also gets a manifest and the manifest's sidecar.
        n + 2 * sinks.len()
    }
}

/// Resolve which artifacts each database gets, without touching anything
/// but `stat` of the sources.
pub fn plan(databases: &[Database], targets: &[Target], opts: &Options, now: Timestamp) -> Plan {
    let run_id = manifest::new_run_id(now);
    let items = databases
        .iter()
        .map(|db| {
            let action = if !db.path.exists() {
                Action::Skip(format!("source {} does not exist", db.path.display()))
            } else {
                let cold = opts.cold || opts.cold_labels.contains(&db.label);
                let ext = format!(
                    ".db{}{}",
                    opts.compression.extension(),
                    if db.encryption.is_some() { ".age" } else { "" }
                );
                Action::Backup(
                    targets
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| cold || !t.cold_only)
                        .map(|(i, t)| {
                            let key = t.template.render(&NameContext {
                                label: &db.label,
                                tag: opts.tag.as_deref(),
                                time: now,
                                run_id: &run_id,
                                ext: &ext,
                            });
                            PlannedArtifact {
                                target: i,
                                sink: t.sink.name().to_string(),
                                sidecar_key: naming::sidecar_key(&key),
                                key,
                            }
                        })
                        .collect(),
                )
            };
            PlanItem {
                database: db.clone(),
                action,
            }
        })
        .collect();
    Plan {
        run_id,
        started_at: now,
        items,
        targets: targets.to_vec(),
        options: opts.clone(),
    }
}

/// Why a database was not backed up, or not to every sink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// One sink failed; the others may hold the backup.
    #[error("sink {sink}: {message}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        message: String,
    },
    /// The run's manifest could not be written to a sink, so nothing of
    /// the run counts there (its artifacts were removed again).
    #[error("manifest to sink {sink}: {message}")]
    Manifest {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        message: String,
    },
    /// The snapshot failed its post-backup check; nothing was stored.
    #[error(
        "the snapshot failed its post-backup check, nothing was stored: {}",
        join(problems)
    )]
    Check {
        /// What the check found.
        problems: Vec<crate::verify::Problem>,
    },
    /// The snapshot could not be taken or streamed; nothing was stored.
    #[error("{0}")]
    Snapshot(String),
}

fn join(problems: &[crate::verify::Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn sink_error(sink: &str, message: impl fmt::Display) -> BackupError {
    BackupError::Sink {
        sink: sink.to_string(),
        message: message.to_string(),
    }
}

/// The result for one database.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Label.
    pub label: String,
    /// Skip reason, when skipped.
    pub skipped: Option<String>,
    /// Entries written, with their sink name.
    pub written: Vec<(String, Entry)>,
    /// Errors (any error makes the database count as failed).
    pub errors: Vec<BackupError>,
}

impl Outcome {
    /// Backed up to every planned sink.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.skipped.is_none()
    }
    /// At least one error.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// A run's manifest in one sink: the new head of that sink's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestWritten {
    /// The sink's name.
    pub sink: String,
    /// The manifest's key.
    pub key: String,
    /// Its SHA-256: the catalog's new chain head.
    pub head: String,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Per database, in plan order.
    pub outcomes: Vec<Outcome>,
    /// Manifests written, one per sink that received anything.
    pub manifests: Vec<ManifestWritten>,
    /// Objects a fully successful run would have written.
    pub expected_objects: usize,
    /// Objects actually written and recorded.
    pub written_objects: usize,
}

impl RunReport {
    /// Databases backed up everywhere.
    pub fn ok_count(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok()).count()
    }
    /// Databases with at least one error.
    pub fn failed_count(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failed()).count()
    }
}

/// Carry out a plan.
pub fn execute(plan: &Plan, observer: &dyn Observer) -> RunReport {
    let targets = plan.targets.as_slice();
    let opts = &RunOpts {
        opts: &plan.options,
        observer,
    };
    info!(
        "backup phase start run={} databases={}",
        plan.run_id,
        plan.items.len()
    );
    clean_leftovers(targets, &opts.scratch_dir);
    let mut outcomes = Vec::new();
    for item in &plan.items {
        let label = item.database.label.clone();
        let outcome = match &item.action {
            _ if opts.observer.cancelled() => {
                warn!("not starting label={label}: run cancelled");
                Outcome {
                    label,
                    skipped: Some(INTERRUPTED.into()),
                    written: vec![],
                    errors: vec![],
                }
            }
            Action::Skip(reason) => {
                warn!("skipping label={label}: {reason}");
                Outcome {
                    label,
                    skipped: Some(reason.clone()),
                    written: vec![],
                    errors: vec![],
                }
            }
            Action::Backup(artifacts) => backup_one(
                &item.database,
                artifacts,
                targets,
                opts,
                &plan.run_id,
                plan.started_at,
            ),
        };
        for e in &outcome.errors {
            tracing::error!("backup failed label={}: {e}", outcome.label);
        }
        outcomes.push(outcome);
    }

    // Manifests last, one per sink that received anything.
    let mut manifests = Vec::new();
    let finished_at = Timestamp::now();
    for target in targets {
        let sink_name = target.sink.name();
        let entries: Vec<Entry> = outcomes
            .iter()
            .flat_map(|o| o.written.iter())
            .filter(|(s, _)| s == sink_name)
            .map(|(_, e)| e.clone())
            .collect();
        if entries.is_empty() {
            continue;
        }
        match write_manifest(
            target.sink.as_ref(),
            &plan.run_id,
            plan.started_at,
            finished_at,
            entries,
            vec![],
        ) {
            Ok((key, head)) => {
                info!("manifest written sink={sink_name} key={key} head={head}");
                manifests.push(ManifestWritten {
                    sink: sink_name.to_string(),
                    key,
                    head,
                });
                if let Err(e) = intent::clear(target.sink.as_ref(), &plan.run_id) {
                    warn!("sink {sink_name}: removing this run's intent records: {e}");
                }
            }
            Err(e) => {
                // Without a manifest nothing of this run counts in that sink:
                // remove what it uploaded, so no unlisted artifact lingers
                // there looking like a backup (and filling the disk).
                for o in outcomes.iter_mut() {
                    if o.written.iter().any(|(s, _)| s == sink_name) {
                        o.errors.push(BackupError::Manifest {
                            sink: sink_name.to_string(),
                            message: e.to_string(),
                        });
                        for (_, entry) in o.written.iter().filter(|(s, _)| s == sink_name) {
                            for key in [&entry.sidecar_key, &entry.key] {
                                if let Err(e) = target.sink.delete(key) {
                                    warn!("removing unlisted {key} from sink {sink_name}: {e}");
                                }
                            }
                        }
                        o.written.retain(|(s, _)| s != sink_name);
                    }
                }
                if let Err(e) = intent::clear(target.sink.as_ref(), &plan.run_id) {
                    warn!("sink {sink_name}: removing this run's intent records: {e}");
                }
            }
        }
    }
    let written_objects =
        outcomes.iter().map(|o| 2 * o.written.len()).sum::<usize>() + 2 * manifests.len();
    let report = RunReport {
        run_id: plan.run_id.clone(),
        expected_objects: plan.expected_objects(),
        written_objects,
        outcomes,
        manifests,
    };
    info!(
        "backup phase end ok={} failed={} skipped={} objects={}/{}",
        report.ok_count(),
        report.failed_count(),
        report
            .outcomes
            .iter()
            .filter(|o| o.skipped.is_some())
            .count(),
        report.written_objects,
        report.expected_objects
    );
    report
}

/// Append a manifest to a sink's chain (see [`crate::catalog::append`]).
/// Returns its key and the SHA-256 of its bytes (the new head).
pub fn write_manifest(
    sink: &dyn Sink,
    run_id: &str,
    started_at: Timestamp,
    finished_at: Timestamp,
    entries: Vec<Entry>,
    pruned: Vec<manifest::Pruned>,
) -> Result<(String, String), AppendError> {
    let a = append::append(
        sink,
        append::Draft {
            run_id: run_id.to_string(),
            started_at,
            finished_at,
            entries,
            pruned,
            collected: vec![],
            relinked: vec![],
        },
    )?;
    Ok((a.key, a.sha256))
}

fn clean_leftovers(targets: &[Target], scratch: &Path) {
    for t in targets {
        match t.sink.clean_incomplete() {
            Ok(0) => {}
            Ok(n) => info!(
                "removed {n} leftover partial upload(s) in sink {}",
                t.sink.name()
            ),
            Err(e) => warn!("cleaning partial uploads in sink {}: {e}", t.sink.name()),
        }
        match intent::reclaim(t.sink.as_ref(), Timestamp::now()) {
            Ok(0) => {}
            Ok(n) => info!(
                "removed {n} object(s) of interrupted runs (no manifest lists them) in sink {}",
                t.sink.name()
            ),
            Err(e) => warn!(
                "removing objects of interrupted runs in sink {}: {e}",
                t.sink.name()
            ),
        }
    }
    for dir in [scratch.to_path_buf(), fallback_scratch_dir()] {
        let Ok(dir) = std::fs::read_dir(dir) else {
            continue;
        };
        for f in dir.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if fsutil::is_stale_partial(&name) && std::fs::remove_file(f.path()).is_ok() {
                info!("removed leftover scratch file {name}");
            }
        }
    }
}

/// Where snapshots go when the configured scratch folder cannot be created.
pub fn fallback_scratch_dir() -> PathBuf {
    std::env::temp_dir().join("sqlite-backup-scratch")
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

/// Writes every chunk to all live sink writers; a sink that fails is
/// dropped from the fan-out and reported, the others carry on.
struct FanOut {
    writers: Vec<(usize, Option<Box<dyn SinkWriter>>)>,
    failures: Vec<(usize, String)>,
    digest: Sha256,
    bytes: u64,
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

fn backup_one(
    db: &Database,
    artifacts: &[PlannedArtifact],
    targets: &[Target],
    opts: &RunOpts<'_>,
    run_id: &str,
    run_started: Timestamp,
) -> Outcome {
    let mut outcome = Outcome {
        label: db.label.clone(),
        skipped: None,
        written: vec![],
        errors: vec![],
    };
    // Only cold-only targets: nothing to chain, one classic image.
    let incremental = db.incremental
        && db.encryption.is_none()
        && artifacts.iter().any(|a| !targets[a.target].cold_only);
    let result = if incremental {
        backup_incremental(db, artifacts, targets, opts, run_id)
    } else {
        backup_streams(db, artifacts, targets, opts, run_id, run_started)
    };
    match result {
        Ok((written, errors)) => {
            outcome.written = written;
            outcome.errors = errors;
        }
        Err(_) if opts.observer.cancelled() => {
            warn!(
                "abandoned label={}: run cancelled, nothing stored",
                db.label
            );
            outcome.skipped = Some(INTERRUPTED.into());
        }
        Err(e) => outcome.errors.extend(e),
    }
    // Sinks that keep nothing of this database need no record of it.
    for a in artifacts {
        let sink = targets[a.target].sink.as_ref();
        if !outcome.written.iter().any(|(s, _)| s == sink.name())
            && let Err(e) = intent::discard(sink, run_id, &db.label)
        {
            warn!("sink {}: removing an intent record: {e}", a.sink);
        }
    }
    opts.observer.database_done(&db.label);
    outcome
}

type Written = Vec<(String, Entry)>;

/// The image of one database, compressed into the fan-out, and its check.
struct Produced {
    stats: SnapshotStats,
    /// SHA-256 and size of the raw database image (what a restore writes).
    db_sha256: String,
    db_size: u64,
    /// The post-backup check of exactly that image.
    report: DbReport,
}

/// Why producing the image failed.
enum Failure {
    /// Reading, compressing or sending the stream failed (sinks may say why).
    Stream(io::Error),
    /// Anything else (snapshot, scratch folder, checker).
    Other(String),
}

fn backup_streams(
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
    let abort_all = |fan: FanOut| {
        for (_, w) in fan.writers {
            if let Some(w) = w {
                w.abort();
            }
        }
    };
    let produced = match produced {
        Ok(p) => p,
        Err(Failure::Other(e)) => {
            abort_all(fan);
            return Err(vec![BackupError::Snapshot(e)]);
        }
        Err(Failure::Stream(e)) => {
            let detail = fan
                .failures
                .iter()
                .map(|(i, m)| format!("sink {}: {m}", targets[*i].sink.name()))
                .collect::<Vec<_>>();
            abort_all(fan);
            return Err(vec![BackupError::Snapshot(format!(
                "streaming the snapshot: {e}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", detail.join("; "))
                }
            ))]);
        }
    };
    info!(
        "snapshot done label={} pages={} bytes={} ms={}",
        db.label,
        produced.stats.page_count,
        produced.db_size,
        produced.stats.elapsed.as_millis()
    );
    if !produced.report.ok() {
        abort_all(fan);
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

/// A classic artifact's writer in each of `artifacts`' sinks, under a name
/// no earlier run used; the sinks that cannot take one are in the errors.
fn open_fan(
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

/// Calls `each(page number, page)` for every `page_size` bytes written.
struct PageSplit<F> {
    page_size: usize,
    buf: Vec<u8>,
    next: u64,
    each: F,
}

impl<F: FnMut(u64, &[u8]) -> io::Result<()>> Write for PageSplit<F> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= self.page_size {
                (self.each)(self.next, &data[..self.page_size])?;
                self.next += 1;
                data = &data[self.page_size..];
                continue;
            }
            let take = (self.page_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.page_size {
                (self.each)(self.next, &self.buf)?;
                self.next += 1;
                self.buf.clear();
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Run every page of `stream` through `each`, stopping when the run is
/// cancelled.
fn for_each_page(
    stream: &PageStream,
    observer: &dyn Observer,
    each: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut split = PageSplit {
        page_size: stream.page_size() as usize,
        buf: Vec::new(),
        next: 0,
        each,
    };
    stream.copy_to(
        &mut Cancellable {
            inner: &mut split,
            observer,
        },
        &mut |_, _| {},
    )?;
    Ok(())
}

/// One sink's share of an incremental run.
struct IncrTarget<'a> {
    artifact: &'a PlannedArtifact,
    sink: &'a dyn Sink,
    previous: Option<Entry>,
    /// The previous snapshot's runs, decoded, when this one builds on it.
    previous_runs: Vec<incremental::Run>,
    decision: incremental::Decision,
    index_key: String,
    base: String,
}

/// An incremental-mode backup (see [`crate::incremental`]): hash every page
/// of the pinned snapshot, check the snapshot, then store per sink only the
/// pages that differ from that sink's previous snapshot. Cold-only targets
/// get one classic full artifact of the same snapshot instead (a phase seal
/// restores from one object), written during the same pass.
fn backup_incremental(
    db: &Database,
    artifacts: &[PlannedArtifact],
    targets: &[Target],
    opts: &RunOpts<'_>,
    run_id: &str,
) -> Result<(Written, Vec<BackupError>), Vec<BackupError>> {
    use incremental::{Decision, PackWriter};
    let snap_err = |e: String| vec![BackupError::Snapshot(e)];
    let Some(stream) = PageStream::open(&db.path).map_err(|e| snap_err(e.to_string()))? else {
        warn!(
            "label={}: incremental mode needs a WAL database and sqlite_dbpage; taking a full artifact",
            db.label
        );
        return backup_streams(db, artifacts, targets, opts, run_id, Timestamp::now());
    };
    let (cold, artifacts): (Vec<PlannedArtifact>, Vec<PlannedArtifact>) = artifacts
        .iter()
        .cloned()
        .partition(|a| targets[a.target].cold_only);
    let started = Instant::now();
    let checks = Checks::after_backup(db, opts.verify_level);
    let twin = stream.twin().map_err(|e| snap_err(e.to_string()))?;
    let checker = twin.map(|conn| {
        let _ = conn.pragma_update(None, "cache_size", -8192);
        let checks = checks.clone();
        std::thread::spawn(move || verify::check_connection(&conn, &checks))
    });
    // Pass 1: the hash of every page and the digest of the whole image.
    let mut hashes = Vec::new();
    let mut image = Sha256::new();
    let hashed = for_each_page(&stream, opts.observer, |_, page| {
        image.update(page);
        hashes.push(incremental::page_hash(page));
        Ok(())
    });
    let report = match checker {
        Some(h) => h
            .join()
            .map_err(|_| snap_err("post-backup check panicked".into()))?,
        None if hashed.is_ok() => verify::check_connection(stream.connection(), &checks),
        None => DbReport::default(),
    };
    hashed.map_err(|e| snap_err(format!("reading the snapshot: {e}")))?;
    if !report.ok() {
        return Err(vec![BackupError::Check {
            problems: report.problems.clone(),
        }]);
    }
    let db_sha256 = image.finish_hex();
    let hashes_sha256 = incremental::hashes_digest(&hashes);
    let page_size = stream.page_size();
    let now = Timestamp::now();
    info!(
        "pages hashed label={} pages={} ms={}",
        db.label,
        hashes.len(),
        started.elapsed().as_millis()
    );

    let mut errors = Vec::new();
    let mut seal = None;
    if !cold.is_empty() {
        match open_fan(db, &cold, targets, run_id) {
            Ok((planned, fan, open_errors)) => {
                errors.extend(open_errors);
                if !fan.writers.is_empty() {
                    seal = Some((planned, fan));
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    let mut parts = Vec::new();
    for a in &artifacts {
        let sink = targets[a.target].sink.as_ref();
        let previous = match incremental::previous(sink, &db.label) {
            Ok(p) => p,
            Err(e) => {
                errors.push(sink_error(&a.sink, e));
                continue;
            }
        };
        let cached = |p: &Entry| {
            let dir = opts.page_cache.as_deref()?;
            incremental::cached_hashes(dir, &a.sink, p)
        };
        let prev_hashes = match &previous {
            Some(p) => match cached(p).map_or_else(|| incremental::load_hashes(sink, p), Ok) {
                Ok(h) => Some(h),
                Err(e) => {
                    warn!("sink {}: {e}; starting a new chain", a.sink);
                    None
                }
            },
            None => None,
        };
        let mut decision = incremental::decide(
            previous.as_ref().zip(prev_hashes.as_deref()),
            page_size,
            &hashes,
            now,
            &opts.incremental,
        );
        // Building on the previous snapshot needs its runs, decoded once.
        let mut previous_runs = Vec::new();
        if let (Decision::Incremental(_), Some(p)) = (&decision, &previous) {
            let map = p.pages.as_ref().expect("an incremental snapshot has a map");
            match map
                .check(p.page_count)
                .and_then(|()| map.runs.list().map(|r| r.into_owned()))
            {
                Ok(runs) => previous_runs = runs,
                Err(why) => decision = Decision::Full(format!("previous page map: {why}")),
            }
        }
        if let Decision::Full(why) = &decision {
            info!("label={} sink={}: full base ({why})", db.label, a.sink);
        }
        let stem = match a.key.rfind(".db") {
            Some(i) => &a.key[..i],
            None => a.key.as_str(),
        };
        let suffix = run_id.rsplit('-').next().unwrap_or(run_id);
        let base = format!("{stem}-{suffix}");
        let index_key = format!("{base}.pageidx");
        let stores = match &decision {
            Decision::Full(_) => hashes.len(),
            Decision::Incremental(c) => c.iter().filter(|c| **c).count(),
        } as u64;
        let packs = (stores * page_size).div_ceil(incremental::PACK_RAW_BYTES) + 1;
        let mut keys = vec![index_key.clone(), naming::sidecar_key(&index_key)];
        keys.extend((0..packs as usize).map(|n| PackWriter::pack_key(&base, n)));
        if let Err(e) = intent::record(
            sink,
            &db.label,
            &intent::Intent {
                run_id: run_id.to_string(),
                keys,
            },
        ) {
            warn!("sink {}: cannot record what this run writes: {e}", a.sink);
        }
        parts.push(IncrTarget {
            artifact: a,
            sink,
            previous,
            previous_runs,
            decision,
            index_key,
            base,
        });
    }

    // Pass 2, on the same pinned snapshot: each sink's new pages into its
    // packs, and its page map.
    // Packs are always zstd at its default level: they are read page by
    // page on restore, whatever the configured artifact format.
    let level = zstd::DEFAULT_COMPRESSION_LEVEL;
    let mut writers: Vec<(PackWriter<'_>, Vec<incremental::Run>, Option<SinkError>)> = parts
        .iter()
        .map(|p| {
            (
                PackWriter::new(p.sink, &p.base, &p.index_key, level),
                Vec::new(),
                None,
            )
        })
        .collect();
    // Where each page lives in each sink's previous snapshot: a cursor into
    // its runs, which are in page order.
    let mut cursors = vec![0usize; parts.len()];
    let mut pages = |i: u64, page: &[u8]| {
        let hash = &hashes[i as usize];
        for (t, part) in parts.iter().enumerate() {
            let (w, runs, failed) = &mut writers[t];
            if failed.is_some() {
                continue;
            }
            let store = match &part.decision {
                Decision::Full(_) => true,
                Decision::Incremental(changed) => changed[i as usize],
            };
            if store {
                match w.add(page, hash) {
                    // New packs come after the previous snapshot's.
                    Ok((pack, at)) => {
                        let before = part
                            .previous
                            .as_ref()
                            .and_then(|p| p.pages.as_ref())
                            .filter(|_| matches!(part.decision, Decision::Incremental(_)))
                            .map_or(0, |m| m.packs.len() as u32);
                        incremental::push_run(runs, i, before + pack, at);
                    }
                    Err(e) => *failed = Some(e),
                }
            } else {
                let prev = &part.previous_runs;
                let c = &mut cursors[t];
                while prev[*c].0 + prev[*c].1 <= i {
                    *c += 1;
                }
                let r = prev[*c];
                incremental::push_run(runs, i, r.2, r.3 + (i - r.0));
            }
        }
        Ok(())
    };
    // The seal's compressor is fed the same pages; a seal that fails stops
    // being fed, and the chains carry on.
    let mut copied = Ok(());
    let sealed = seal.as_mut().map(|(_, fan)| {
        compress_into(fan, &opts.compression, None, opts.observer, |out| {
            let mut seal_failed = None;
            copied = for_each_page(&stream, opts.observer, |i, page| {
                if seal_failed.is_none()
                    && let Err(e) = out.write_all(page)
                {
                    seal_failed = Some(e);
                }
                pages(i, page)
            });
            seal_failed.map_or(Ok(()), Err)
        })
    });
    if sealed.is_none() {
        copied = for_each_page(&stream, opts.observer, &mut pages);
    }
    let abort = |fan: FanOut| {
        for w in fan.writers.into_iter().filter_map(|(_, w)| w) {
            w.abort();
        }
    };
    if let Err(e) = copied {
        if let Some((_, fan)) = seal {
            abort(fan);
        }
        return Err(snap_err(format!("reading the snapshot: {e}")));
    }
    let stats = stream.finish().map_err(|e| snap_err(e.to_string()))?;
    opts.observer
        .snapshot_progress(&db.label, stats.page_count, stats.page_count);
    let mut written = Vec::new();
    if let (Some((planned, fan)), Some(sealed)) = (seal, sealed) {
        for (i, msg) in &fan.failures {
            errors.push(sink_error(targets[*i].sink.name(), msg));
        }
        match sealed {
            Ok((image_sha256, db_size)) => {
                debug_assert_eq!(image_sha256, db_sha256, "one snapshot, one image");
                let produced = Produced {
                    stats: stats.clone(),
                    db_sha256: image_sha256,
                    db_size,
                    report: report.clone(),
                };
                let (w, e) = finish_uploads(fan, produced, db, &planned, targets, opts, started);
                written.extend(w);
                errors.extend(e);
            }
            Err(e) => {
                for (i, _) in fan.writers.iter().filter(|(_, w)| w.is_some()) {
                    errors.push(sink_error(
                        targets[*i].sink.name(),
                        format!("writing the full image: {e}"),
                    ));
                }
                abort(fan);
            }
        }
    }
    let facts = report.facts.unwrap_or_default();
    let clear = SealedFacts {
        db_sha256,
        schema_sha256: facts.schema_sha256,
        row_counts: facts.row_counts,
    };
    let source_mode = fsutil::mode_of(&db.path).ok();
    for (part, (w, runs, failed)) in parts.iter().zip(writers) {
        let a = part.artifact;
        let stored = failed.map_or(Ok(()), Err).and_then(|()| w.finish());
        let (new_packs, index) = match stored {
            Ok(x) => x,
            Err(e) => {
                errors.push(sink_error(&a.sink, e));
                continue;
            }
        };
        info!(
            "packs written label={} sink={} packs={} bytes={}",
            db.label,
            a.sink,
            new_packs.len(),
            new_packs.iter().map(|p| p.size).sum::<u64>()
        );
        let index_sha = Sha256::hex_of(&index);
        let put = part.sink.put(&part.index_key, &index).and_then(|()| {
            part.sink.put(
                &naming::sidecar_key(&part.index_key),
                Sidecar::new(&index_sha, naming::file_name(&part.index_key))
                    .render()
                    .as_bytes(),
            )
        });
        if let Err(e) = put {
            errors.push(sink_error(&a.sink, e));
            continue;
        }
        let stored_bytes = index.len() as u64 + new_packs.iter().map(|p| p.size).sum::<u64>();
        let prev_map = part
            .previous
            .as_ref()
            .and_then(|p| p.pages.clone())
            .filter(|_| matches!(part.decision, Decision::Incremental(_)));
        let (chain_depth, chain_started, mut packs) = match prev_map {
            Some(m) => (m.chain_depth + 1, m.chain_started, m.packs),
            None => (0, stats.taken_at, Vec::new()),
        };
        packs.extend(new_packs);
        // Keep only the packs some page still lives in, renumbered.
        let mut used = vec![false; packs.len()];
        for r in &runs {
            used[r.2 as usize] = true;
        }
        let mut renumber = vec![0u32; packs.len()];
        let mut kept = Vec::new();
        for (n, p) in packs.into_iter().enumerate() {
            if used[n] {
                renumber[n] = kept.len() as u32;
                kept.push(p);
            }
        }
        let runs: Vec<incremental::Run> = runs
            .into_iter()
            .map(|r| incremental::Run(r.0, r.1, renumber[r.2 as usize], r.3))
            .collect();
        let map = incremental::PageMap {
            chain_depth,
            chain_started,
            stored_bytes,
            packs: kept,
            hashes_sha256: Some(hashes_sha256.clone()),
            runs: runs.into(),
        };
        // Written before the manifest: a cache is trusted only when its
        // digest matches the newest manifest's, so one for a snapshot that
        // never made it into the catalog is simply not used.
        if let Some(dir) = &opts.page_cache
            && let Err(e) = incremental::cache_hashes(dir, &a.sink, &db.label, &hashes)
        {
            warn!(
                "sink {}: cannot cache page hashes in {}: {e}",
                a.sink,
                dir.display()
            );
        }
        info!(
            "incremental done label={} sink={} depth={} stored_bytes={} ms={}",
            db.label,
            a.sink,
            chain_depth,
            stored_bytes,
            started.elapsed().as_millis()
        );
        let stored = Stored {
            key: part.index_key.clone(),
            sidecar_key: naming::sidecar_key(&part.index_key),
            compression: crate::compress::Format::Zstd,
            size: index.len() as u64,
            sha256: index_sha,
            db_size: stats.page_count * stats.page_size,
            page_size: stats.page_size,
            page_count: stats.page_count,
            facts: clear.clone(),
        };
        let entry = Entry {
            pages: Some(map),
            ..new_entry(db, opts, &stats, source_mode, stored)
        };
        written.push((a.sink.clone(), entry));
    }
    Ok((written, errors))
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
        && let Some(stream) =
            PageStream::open(&db.path).map_err(|e| Failure::Other(e.to_string()))?
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
    let twin = stream.twin().map_err(|e| Failure::Other(e.to_string()))?;
    let checker = twin.map(|conn| {
        // The checks revisit pages (foreign_key_check, at integrity_check
        // level, looks up a parent row for every child row); with SQLite's
        // default 2 MiB cache most revisits re-read pages from the OS.
        // 8 MiB halves that system time for a few MiB of memory.
        let _ = conn.pragma_update(None, "cache_size", -8192);
        let checks = checks.clone();
        std::thread::spawn(move || verify::check_connection(&conn, &checks))
    });
    let total = stream.size();
    let page_size = stream.page_size();
    let streamed = compress_into(
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
    );
    let report = match checker {
        Some(h) => h
            .join()
            .map_err(|_| Failure::Other("post-backup check panicked".into()))?,
        None if streamed.is_ok() => verify::check_connection(stream.connection(), &checks),
        None => DbReport::default(),
    };
    let (db_sha256, db_size) = streamed.map_err(Failure::Stream)?;
    let stats = stream.finish().map_err(|e| Failure::Other(e.to_string()))?;
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
                Failure::Other(format!(
                    "creating scratch folder {} ({e}) or {} ({e2})",
                    opts.scratch_dir.display(),
                    fallback.display()
                ))
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
    .map_err(|e| Failure::Other(e.to_string()))?;
    if opts.observer.cancelled() {
        return Err(Failure::Other(INTERRUPTED.into()));
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
        .map_err(|_| Failure::Other("post-backup check panicked".into()))?;
    let (db_sha256, db_size) = streamed.map_err(Failure::Stream)?;
    Ok(Produced {
        stats,
        db_sha256,
        db_size,
        report,
    })
}

/// Stops a stream as soon as the run is cancelled (SIGTERM in the daemon).
struct Cancellable<'a> {
    inner: &'a mut dyn Write,
    observer: &'a dyn Observer,
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
fn compress_into(
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

/// What a manifest entry records of one stored object and the image it
/// holds; the rest of the entry is the run's (see [`new_entry`]).
struct Stored {
    key: String,
    sidecar_key: String,
    compression: crate::compress::Format,
    size: u64,
    sha256: String,
    db_size: u64,
    page_size: u64,
    page_count: u64,
    /// In the clear, or emptied when they are sealed.
    facts: SealedFacts,
}

/// The manifest entry of `stored`, a snapshot of `db` this run took
/// (`stats`). It says unencrypted and self-contained (no page map); callers
/// set those fields when they differ.
fn new_entry(
    db: &Database,
    opts: &RunOpts<'_>,
    stats: &SnapshotStats,
    source_mode: Option<u32>,
    stored: Stored,
) -> Entry {
    Entry {
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
        source: db.path.display().to_string(),
        source_mode,
        encrypted_to: vec![],
        sealed: None,
        pages: None,
    }
}

/// Make every upload that survived visible, compare its stored size, write
/// its sidecar, and return the manifest entries and the sinks that failed.
fn finish_uploads(
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
    // What the content digests and row counts look like in the manifest:
    // in the clear, or sealed to the artifact's recipients.
    let mut clear = SealedFacts {
        db_sha256: produced.db_sha256.clone(),
        schema_sha256: facts.schema_sha256.clone(),
        row_counts: facts.row_counts.clone(),
    };
    let (mut encrypted_to, mut sealed) = (Vec::new(), None);
    if let Some(r) = &db.encryption {
        let facts_json = serde_json::to_vec(&clear).expect("facts serialize");
        match r.seal(&facts_json) {
            Ok(s) => {
                sealed = Some(s);
                encrypted_to = r.fingerprints().to_vec();
                clear = SealedFacts {
                    db_sha256: String::new(),
                    schema_sha256: String::new(),
                    row_counts: Default::default(),
                };
            }
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
        }
    }
    let mut written = Vec::new();
    for (i, w) in fan.writers {
        let Some(w) = w else { continue };
        let a = artifacts.iter().find(|a| a.target == i).expect("planned");
        let sink = targets[i].sink.as_ref();
        let stored = w.finish().and_then(|n| {
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
                Sidecar::new(&sha256, naming::file_name(&a.key))
                    .render()
                    .as_bytes(),
            )
        });
        match stored {
            Ok(()) => {
                info!(
                    "upload done label={} sink={} key={} bytes={} ms={}",
                    db.label,
                    a.sink,
                    a.key,
                    size,
                    started.elapsed().as_millis()
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
                    facts: clear.clone(),
                };
                let entry = Entry {
                    encrypted_to: encrypted_to.clone(),
                    sealed: sealed.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Format;
    use crate::sink::MemorySink;

    /// Back up a demo database under a busy writer with `method`, then verify
    /// the artifact the way a restore does.
    fn backup_and_verify(method: SnapshotMethod, format: Format) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        backup_testkit::demo::create(&src, 3_000_000, 11).unwrap();
        let db = Database {
            label: "app".into(),
            path: src.clone(),
            required_tables: backup_testkit::demo::TABLES.map(String::from).to_vec(),
            checks: vec![],
            retention: Default::default(),
            encryption: None,
            incremental: false,
        };
        let sink: Arc<dyn Sink> = Arc::new(MemorySink::new("memory"));
        let targets = [Target {
            sink: sink.clone(),
            template: Template::parse("{label}-{run}{ext}", false).unwrap(),
            cold_only: false,
        }];
        let opts = Options {
            compression: Compression::new(format),
            snapshot_method: method,
            scratch_dir: dir.path().join("scratch"),
            ..Options::default()
        };
        let writer = backup_testkit::demo::Writer::start(&src, 0).unwrap();
        let plan = plan(std::slice::from_ref(&db), &targets, &opts, Timestamp::now());
        let report = execute(&plan, &Silent);
        let stats = writer.stop();
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        assert_eq!(report.failed_count(), 0, "{:?}", report.outcomes);
        let (_, entry) = &report.outcomes[0].written[0];
        assert!(entry.row_counts["tasks"] > 0);
        let scratch = dir.path().join("restored.db");
        let checks = Checks {
            level: CheckLevel::IntegrityCheck,
            required_tables: db.required_tables.clone(),
            queries: vec![],
            ..Default::default()
        };
        let verified = verify::verify_entry(sink.as_ref(), entry, &scratch, &checks).unwrap();
        assert!(
            verified.ok(),
            "{:?}",
            verified.all_problems().collect::<Vec<_>>()
        );
        assert_eq!(verified.db_sha256, entry.db_sha256);
        let restored = rusqlite::Connection::open(&scratch).unwrap();
        let tasks: i64 = restored
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .unwrap();
        // The manifest's row count was taken on the very image stored.
        assert_eq!(tasks as u64, entry.row_counts["tasks"]);
        // Nothing left in the scratch folder.
        let left = std::fs::read_dir(&opts.scratch_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0);
    }

    #[test]
    fn streamed_pages_back_up_and_verify() {
        backup_and_verify(SnapshotMethod::Backup, Format::Zstd);
        backup_and_verify(SnapshotMethod::Backup, Format::Gzip);
    }

    #[test]
    fn backup_api_fallback_backs_up_and_verifies() {
        backup_and_verify(SnapshotMethod::BackupApi, Format::Zstd);
        backup_and_verify(SnapshotMethod::BackupApi, Format::None);
    }
}
