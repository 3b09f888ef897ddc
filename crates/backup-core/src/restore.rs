//! Restore: the operator's stop-the-world restore runbook (the README's
//! "Restore runbook"), done more carefully than a person would, and never
//! destructive.
//!
//! Two stages, like `backup`: [`plan`] resolves a [`Request`] against the
//! catalog into a [`Plan`] (candidates newest first, the checks, the moves),
//! which `--dry-run` prints; [`execute`] carries it out:
//!
//! 1. remove partial files beside the target left by killed restores;
//! 2. refuse if another process has the database (or its `-wal`/`-shm`/
//!    `-journal`) open or locked ([`crate::inuse`]), unless forced;
//! 3. for each candidate, newest first: stream it from its sink, check the
//!    sidecar and manifest digests, decompress into
//!    `.<name>.partial-<pid>` **beside the target** (same file system, so
//!    the final rename is atomic) and run every check of [`crate::verify`]; when it
//!    fails, walk back to the next older candidate and say what that step
//!    loses ([`Loss`]). When none passes, stop: nothing was touched;
//! 4. probe for other users again (verification can take minutes);
//! 5. keep the live database aside as `<name>.broken-YYYYMMDD-HHMMSS`
//!    (local time, a `-2`, `-3` … suffix when taken) **by hard link**, so
//!    the target path keeps holding the old database; move its `-wal` and
//!    `-journal` aside under the same name (`<broken>-wal`: SQLite pairs
//!    them by name, so the kept copy still has its last commits) and remove
//!    its `-shm` (an index SQLite rebuilds from the WAL);
//! 6. fsync the verified file, rename it over the target, fsync the folder;
//! 7. run `integrity_check` on the placed file;
//! 8. run the optional post-restore hook ([`PostRestoreHook`]).
//!
//! # What the target path holds at every instant
//! Before step 6 it holds the old database file, after it the new verified
//! one: `rename(2)` replaces it atomically, and the old bytes are never
//! modified. One window remains, only when the old database has a
//! non-empty `-wal` or a hot `-journal` (it crashed, or `--force` is used
//! against a running writer): between moving those side files aside and
//! the rename, the path holds the old database *as of its last
//! checkpoint*. The side files must go first: a new database next to an
//! old `-wal` would have the old frames replayed into it. The complete old
//! state is at `<broken>` + `<broken>-wal` throughout.
//!
//! If the file system cannot hard-link, the old database is copied to its
//! `.broken-` name instead (slower, but the path is still never empty).
//!
//! ```no_run
//! use backup_core::{Database, manifest, restore, sink::MemorySink};
//! let db = Database::new("app", "/srv/app.db");
//! let local = MemorySink::new("local"); // backup_local::LocalSink in the CLI
//! let sinks: [&dyn backup_core::sink::Sink; 1] = [&local];
//! let (catalog, _problems) = manifest::view::collect(&sinks);
//! let request = restore::Request::new(db, restore::Selector::Latest);
//! let plan = restore::plan(&catalog, &request)?;
//! let outcome = restore::execute(&plan, &sinks, &restore::Silent)?;
//! assert!(outcome.ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp, ZonedDateTime, civil::Date, tz::TimeZone};

use crate::database::{CheckLevel, Database};
use crate::fsutil;
use crate::inuse::{self, Holder};
use crate::manifest::Listed;
use crate::sink::Sink;
use crate::source::{Scope, Source, SourceError};
use crate::verify::{self, ArtifactReport, Checks, DbReport};

/// Which snapshot to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest one.
    Latest,
    /// The newest one taken on this UTC day.
    Date(Date),
    /// The newest one with this tag.
    Tag(String),
    /// The one of this run id (in any sink that holds a copy).
    Id(String),
    /// The newest one taken at or before this time (point in time).
    At(Timestamp),
}

impl Selector {
    fn starts_at(&self, l: &Listed) -> bool {
        match self {
            Self::Latest => true,
            Self::Date(d) => l.entry.snapshot_at.to_zoned_datetime(TimeZone::UTC).date() == *d,
            Self::Tag(t) => l.entry.tag.as_deref() == Some(t.as_str()),
            Self::Id(id) => l.run_id == *id,
            Self::At(t) => l.entry.snapshot_at <= *t,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => write!(f, "the newest snapshot"),
            Self::Date(d) => write!(f, "the newest snapshot of {d} (UTC)"),
            Self::Tag(t) => write!(f, "the newest snapshot tagged {t:?}"),
            Self::Id(i) => write!(f, "snapshot {i}"),
            Self::At(t) => write!(f, "the newest snapshot taken at or before {t}"),
        }
    }
}

/// What to restore, where, from what.
#[derive(Debug, Clone)]
pub struct Request {
    /// The configured database (label, required tables, checks, post_restore).
    pub database: Database,
    /// Where to put it; defaults to the database's own path.
    pub target: PathBuf,
    /// Which snapshot to start from. With `Latest`, `Date` and `Tag` a
    /// failing candidate walks back through every older snapshot of the
    /// database; with `Id` only through other sinks' copies of that run.
    pub selector: Selector,
    /// Only candidates from this sink.
    pub from: Option<String>,
    /// Restore even when another process uses the target.
    pub force: bool,
    /// The application's own audit, run after the placed file re-checked
    /// clean; an `Err` makes the restore count as failed (the new file
    /// stays, the previous one is kept beside it).
    pub post_restore: Option<PostRestoreHook>,
    /// Keys for encrypted backups.
    pub identities: Option<crate::encryption::Identities>,
    /// Whose snapshots: by default only this machine's file's
    /// ([`crate::source`]).
    pub source: Scope,
}

/// A post-restore check: told what was restored, it says whether the
/// application accepts it.
///
/// ```
/// use backup_core::restore::PostRestoreHook;
/// let hook = PostRestoreHook::new(|r| {
///     let conn = rusqlite::Connection::open(r.path)?;
///     let n: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
///     if n > 0 { Ok(()) } else { Err("no tables".into()) }
/// });
/// # let _ = hook;
/// ```
#[derive(Clone)]
pub struct PostRestoreHook(Arc<HookFn>);

type HookFn = dyn Fn(&Restored<'_>) -> Result<(), HookError> + Send + Sync;

/// Whatever a [`PostRestoreHook`] rejects the restore with: the
/// application's own error type, or a message (`"no tables".into()`).
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

impl PostRestoreHook {
    /// Wrap a closure.
    pub fn new(f: impl Fn(&Restored<'_>) -> Result<(), HookError> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Its verdict; an error is kept as its text, with its causes.
    fn call(&self, restored: &Restored<'_>) -> Result<(), String> {
        (self.0)(restored).map_err(|e| {
            let mut text = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        })
    }
}

impl fmt::Debug for PostRestoreHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PostRestoreHook(..)")
    }
}

/// What a [`PostRestoreHook`] is told.
#[derive(Debug, Clone, Copy)]
pub struct Restored<'a> {
    /// Database label.
    pub label: &'a str,
    /// The restored file.
    pub path: &'a Path,
    /// Where the previous database is kept, if there was one.
    pub broken: Option<&'a Path>,
    /// The snapshot now at `path`.
    pub snapshot: &'a Listed,
}

impl Request {
    /// Restore `database` in place from `selector`, from any sink, unforced.
    pub fn new(database: Database, selector: Selector) -> Self {
        Self {
            target: database.path.clone(),
            database,
            selector,
            from: None,
            force: false,
            post_restore: None,
            identities: None,
            source: Scope::Own,
        }
    }
}

/// What stepping back from one snapshot to an older one gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// Run id of the newer snapshot.
    pub from_run: String,
    /// Run id of the older snapshot.
    pub to_run: String,
    /// `newer.snapshot_at - older.snapshot_at`: the changes made in this
    /// span are not in the older snapshot.
    pub age_gap: SignedDuration,
    /// Per table in either manifest: (rows in the newer, rows in the older).
    pub rows: BTreeMap<String, (Option<u64>, Option<u64>)>,
}

impl Loss {
    /// Between two catalogued snapshots (manifest facts only).
    pub fn between(newer: &Listed, older: &Listed) -> Self {
        let mut rows: BTreeMap<String, (Option<u64>, Option<u64>)> = BTreeMap::new();
        for (t, n) in &newer.entry.row_counts {
            rows.entry(t.clone()).or_default().0 = Some(*n);
        }
        for (t, n) in &older.entry.row_counts {
            rows.entry(t.clone()).or_default().1 = Some(*n);
        }
        Self {
            from_run: newer.run_id.clone(),
            to_run: older.run_id.clone(),
            age_gap: newer
                .entry
                .snapshot_at
                .duration_since(older.entry.snapshot_at),
            rows,
        }
    }

    /// True when both are copies of the same snapshot (another sink).
    pub(crate) fn is_nothing(&self) -> bool {
        self.age_gap.is_zero() && self.rows.values().all(|(a, b)| a == b)
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_nothing() {
            return write!(f, "loses nothing (a copy of the same snapshot)");
        }
        write!(
            f,
            "loses {} of changes",
            crate::duration::human(self.age_gap.unsigned_abs())
        )?;
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|(t, (a, b))| match (a, b) {
                (Some(a), Some(b)) => {
                    format!("{t} {a} -> {b} ({:+})", *b as i128 - *a as i128)
                }
                (Some(a), None) => format!("{t} {a} -> not recorded"),
                (None, Some(b)) => format!("{t} not recorded -> {b}"),
                (None, None) => format!("{t} not recorded"),
            })
            .collect();
        if !rows.is_empty() {
            write!(f, "; rows: {}", rows.join(", "))?;
        }
        Ok(())
    }
}

/// One snapshot to try, in order.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its catalog entry.
    pub listed: Listed,
    /// What choosing it over the previous candidate loses (`None` for the first).
    pub loss: Option<Loss>,
}

/// The resolved restore: everything `--dry-run` prints.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Database label.
    pub label: String,
    /// Absolute target path: the real file, never a symlink.
    pub target: PathBuf,
    /// The symlink the request named, when it named one: it is kept, and
    /// `target` is the file it points to.
    pub link: Option<PathBuf>,
    /// Whether a database exists there now.
    pub target_exists: bool,
    /// How the first candidate was chosen.
    pub selector: Selector,
    /// Candidates, newest first; the first that passes is placed.
    pub candidates: Vec<Candidate>,
    /// The checks each candidate must pass (and the placed file again).
    pub checks: Checks,
    /// Processes using the target when planned.
    pub holders: Vec<Holder>,
    /// Whether `force` was given.
    pub force: bool,
    /// The verified candidate is decompressed here, beside the target.
    pub scratch: PathBuf,
    /// The name the live database would be kept under if placed now.
    pub broken: Option<PathBuf>,
    /// Side files of the target that exist now (`-wal`, `-shm`, `-journal`).
    pub side_files: Vec<PathBuf>,
    /// Run after placing.
    pub post_restore: Option<PostRestoreHook>,
    /// The database's own source; candidates from another are there only
    /// because the request named it.
    pub source: Source,
}

impl Plan {
    /// Whether execution would refuse (someone uses the target, not forced).
    pub fn refused(&self) -> bool {
        !self.holders.is_empty() && !self.force
    }
}

/// A candidate that failed, and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The candidate.
    pub candidate: Candidate,
    /// What was wrong, one line each.
    pub problems: Vec<String>,
}

/// Why a restore did not happen. In every case the target was not touched.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The catalog has nothing matching.
    #[error("no backup of {label:?} matches {selector}{}", from.as_ref().map(|s| format!(" in sink {s:?}")).unwrap_or_default())]
    NoBackups {
        /// Label.
        label: String,
        /// The selection.
        selector: Selector,
        /// The sink filter.
        from: Option<String>,
    },
    /// Only other machines or files have backups of the label, or the
    /// source asked for names more than one.
    #[error(transparent)]
    WrongSource(#[from] SourceError),
    /// `from` names a sink that is not configured.
    #[error("unknown sink {name:?} (configured: {known})")]
    UnknownSink {
        /// The name asked for.
        name: String,
        /// Configured names, comma-separated.
        known: String,
    },
    /// Another process uses the database.
    #[error("{} is in use, refusing to replace it (stop the application first, or pass --force): {}", target.display(), holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("; "))]
    InUse {
        /// Target path.
        target: PathBuf,
        /// Who.
        holders: Vec<Holder>,
    },
    /// Every candidate failed verification.
    #[error("none of the {} candidate(s) of {label:?} passed verification; the target was not touched{}", rejected.len(), summarize(rejected))]
    NonePassed {
        /// Label.
        label: String,
        /// Each candidate and its problems.
        rejected: Vec<Rejection>,
    },
    /// The backups are encrypted and no identity was given.
    #[error("the backups of {label:?} are encrypted (to {}): pass --identity FILE or set SQLITE_BACKUP_IDENTITY_FILE; nothing was touched", encrypted_to.join(", "))]
    NeedsIdentity {
        /// Label.
        label: String,
        /// Fingerprints of the recipients.
        encrypted_to: Vec<String>,
    },
    /// The identity given is not a recipient of the backups.
    #[error("the {} given cannot decrypt the backups of {label:?} (encrypted to {}); nothing was touched", if encrypted_to == &["passphrase"] { "passphrase" } else { "identity" }, encrypted_to.join(", "))]
    WrongIdentity {
        /// Label.
        label: String,
        /// Fingerprints of the recipients.
        encrypted_to: Vec<String>,
    },
    /// Local file-system work failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn summarize(rejected: &[Rejection]) -> String {
    rejected
        .iter()
        .map(|r| {
            format!(
                "\n  {} ({}, sink {}): {}",
                r.candidate.listed.entry.key,
                r.candidate.listed.run_id,
                r.candidate.listed.sink,
                r.problems.join("; ")
            )
        })
        .collect()
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
    let path = path.to_path_buf();
    move |source| RestoreError::Io { what, path, source }
}

/// Resolve a request against the catalog (`manifest::view::collect` output,
/// newest first, preferred sink first on ties). Reads nothing but the
/// target's directory entry and the process table; changes nothing.
pub fn plan(catalog: &[Listed], request: &Request) -> Result<Plan, RestoreError> {
    let db = &request.database;
    let given =
        std::path::absolute(&request.target).map_err(io_err("resolving", &request.target))?;
    // A symlink is kept: the file it points to is what gets restored (and
    // kept aside as `.broken-`), as the application sees it through the link.
    let target = follow_links(&given).map_err(io_err("following the symlink", &given))?;
    let link = (target != given).then_some(given);
    let mine: Vec<&Listed> = crate::source::select(catalog, db, &request.source)?
        .into_iter()
        .filter(|l| request.from.as_ref().is_none_or(|s| *s == l.sink))
        .collect();
    let start = mine
        .iter()
        .position(|l| request.selector.starts_at(l))
        .ok_or_else(|| RestoreError::NoBackups {
            label: db.label.clone(),
            selector: request.selector.clone(),
            from: request.from.clone(),
        })?;
    let chosen: Vec<&Listed> = match &request.selector {
        Selector::Id(_) => mine[start..]
            .iter()
            .copied()
            .filter(|l| request.selector.starts_at(l))
            .collect(),
        _ => mine[start..].to_vec(),
    };
    let mut candidates: Vec<Candidate> = Vec::with_capacity(chosen.len());
    for (i, l) in chosen.iter().enumerate() {
        candidates.push(Candidate {
            listed: (*l).clone(),
            loss: (i > 0).then(|| Loss::between(chosen[i - 1], l)),
        });
    }
    let target_exists = target.exists();
    let side_files: Vec<PathBuf> = inuse::family(&target)[1..]
        .iter()
        .filter(|p| p.exists())
        .cloned()
        .collect();
    let broken = (target_exists || !side_files.is_empty())
        .then(|| free_broken_name(&target, &ZonedDateTime::now()));
    Ok(Plan {
        label: db.label.clone(),
        link,
        holders: inuse::holders(&target),
        scratch: fsutil::partial_path(&target),
        target,
        target_exists,
        selector: request.selector.clone(),
        candidates,
        checks: Checks::for_database(db, CheckLevel::IntegrityCheck)
            .with_identities(request.identities.clone()),
        force: request.force,
        broken,
        side_files,
        post_restore: request.post_restore.clone(),
        source: Source::local(db),
    })
}

/// `path` with every symlink in its last component followed (as `open(2)`
/// would), the folder part canonicalised when it exists. A dangling link
/// gives the path it points to, where the restored file will be created.
fn follow_links(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    // Linux gives up after 40 links (ELOOP); so do we.
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p)?;
                // `join` keeps an absolute link target as it is.
                p = p.parent().unwrap_or(Path::new("/")).join(to);
            }
            _ => {
                if p == path {
                    return Ok(p);
                }
                let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                    return Ok(p);
                };
                return Ok(fs::canonicalize(dir).map_or_else(|_| p.clone(), |d| d.join(name)));
            }
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

/// Check that `from` names one of `sinks`.
pub fn check_sink_name(from: &str, sinks: &[&dyn Sink]) -> Result<(), RestoreError> {
    if sinks.iter().any(|s| s.name() == from) {
        Ok(())
    } else {
        Err(RestoreError::UnknownSink {
            name: from.to_string(),
            known: sinks
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// `<name>.broken-YYYYMMDD-HHMMSS` beside `target`, with `-2`, `-3` … when
/// that name or one of its side-file names is taken.
pub(crate) fn free_broken_name(target: &Path, now: &ZonedDateTime) -> PathBuf {
    let base = broken_name(target, now, 1);
    (1..)
        .map(|n| broken_name(target, now, n))
        .find(|p| inuse::family(p).iter().all(|f| !f.exists()))
        .unwrap_or(base)
}

fn broken_name(target: &Path, now: &ZonedDateTime, n: u32) -> PathBuf {
    let stamp = now.strftime("%Y%m%d-%H%M%S");
    // Shortened like temporary names when a long name would not fit.
    if n == 1 {
        fsutil::with_suffix(target, &format!(".broken-{stamp}"))
    } else {
        fsutil::with_suffix(target, &format!(".broken-{stamp}-{n}"))
    }
}

/// Progress of a restore, as it happens.
#[derive(Debug)]
pub enum Step<'a> {
    /// A partial file of a killed restore was removed.
    CleanedLeftover {
        /// The file.
        path: &'a Path,
    },
    /// Other processes use the target; with `forced` the restore goes on.
    InUse {
        /// Who.
        holders: &'a [Holder],
        /// Whether `force` overrides.
        forced: bool,
    },
    /// Candidate `index` (0-based) is being fetched and verified.
    Verifying {
        /// Position in the plan.
        index: usize,
        /// The candidate.
        candidate: &'a Candidate,
        /// Where it is decompressed.
        into: &'a Path,
    },
    /// It failed.
    Rejected {
        /// The candidate.
        candidate: &'a Candidate,
        /// Why.
        problems: &'a [String],
    },
    /// Trying the next older candidate.
    WalkBack {
        /// The next candidate (its `loss` says what the step loses).
        to: &'a Candidate,
    },
    /// It passed every check.
    Accepted {
        /// The candidate.
        candidate: &'a Candidate,
        /// Its report.
        report: &'a ArtifactReport,
    },
    /// The live database now also has its `.broken-` name.
    KeptAside {
        /// Target.
        from: &'a Path,
        /// Kept name.
        to: &'a Path,
        /// `hard link` or `copy`.
        how: &'static str,
    },
    /// A side file was moved aside.
    SideFileMoved {
        /// From.
        from: &'a Path,
        /// To.
        to: &'a Path,
    },
    /// A `-shm` file was removed.
    SideFileRemoved {
        /// It.
        path: &'a Path,
    },
    /// The verified file was renamed over the target.
    Placed {
        /// Target.
        path: &'a Path,
    },
    /// The placed file was checked again.
    Rechecked {
        /// The result.
        report: &'a DbReport,
    },
    /// The post-restore command is starting.
    PostRestoreStarted,
}

/// Receives [`Step`]s.
pub trait Observer {
    /// Called for each step, in order.
    fn step(&self, step: &Step<'_>);
}

/// Ignores every step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {
    fn step(&self, _: &Step<'_>) {}
}

/// The post-restore hook's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRestore {
    /// Why the application rejected the restored file (`None`: accepted).
    pub error: Option<String>,
}

impl PostRestore {
    /// The hook accepted the restored file.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Time spent per phase.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Fetch, digest, decompress and checks of every candidate tried.
    pub verify: Duration,
    /// Keeping aside, placing, fsyncs.
    pub place: Duration,
    /// Re-check of the placed file.
    pub recheck: Duration,
    /// The post-restore command.
    pub post_restore: Duration,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Target path.
    pub target: PathBuf,
    /// The candidate now at the target.
    pub restored: Candidate,
    /// Its verification report.
    pub report: ArtifactReport,
    /// Newer candidates that failed, newest first.
    pub rejected: Vec<Rejection>,
    /// Where the previous database is kept (`None` if there was none).
    pub broken: Option<PathBuf>,
    /// Side files moved aside (from, to).
    pub moved: Vec<(PathBuf, PathBuf)>,
    /// Side files removed (`-shm`).
    pub removed: Vec<PathBuf>,
    /// Processes that used the target when `force` overrode the refusal.
    pub forced_past: Vec<Holder>,
    /// Checks of the placed file.
    pub recheck: DbReport,
    /// The post-restore command, if configured.
    pub post_restore: Option<PostRestore>,
    /// Time per phase.
    pub timings: Timings,
}

impl Outcome {
    /// The placed file re-checked clean and the post-restore command (if
    /// any) succeeded.
    pub fn ok(&self) -> bool {
        self.recheck.ok() && self.post_restore.as_ref().is_none_or(PostRestore::ok)
    }

    /// What the restore lost compared with the first candidate (`None`
    /// when the first one was restored).
    pub fn total_loss(&self, plan: &Plan) -> Option<Loss> {
        let first = &plan.candidates.first()?.listed;
        (first.run_id != self.restored.listed.run_id || first.sink != self.restored.listed.sink)
            .then(|| Loss::between(first, &self.restored.listed))
    }
}

/// What `--dry-run` found: the candidate a restore would place.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// Index in `plan.candidates`.
    pub chosen: usize,
    /// Its report.
    pub report: ArtifactReport,
    /// Newer candidates that failed.
    pub rejected: Vec<Rejection>,
    /// The temporary folder used (already removed).
    pub scratch_dir: PathBuf,
}

/// Removes a file on drop unless disarmed.
struct Cleanup(Option<PathBuf>);

impl Cleanup {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Try the candidates in order; return the index of the first that passes,
/// its report (its bytes are at `scratch`), and the rejections before it.
fn find_good(
    plan: &Plan,
    sinks: &[&dyn Sink],
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<(usize, ArtifactReport, Vec<Rejection>), RestoreError> {
    let mut rejected = Vec::new();
    for (i, c) in plan.candidates.iter().enumerate() {
        if i > 0 {
            observer.step(&Step::WalkBack { to: c });
        }
        observer.step(&Step::Verifying {
            index: i,
            candidate: c,
            into: scratch,
        });
        match fs::remove_file(scratch) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", scratch)(e)),
        }
        let result = match sinks.iter().find(|s| s.name() == c.listed.sink) {
            None => Err(vec![format!("sink {:?} is not configured", c.listed.sink)]),
            Some(sink) => match verify::verify_entry(*sink, &c.listed.entry, scratch, &plan.checks)
            {
                // Key problems are the same for every candidate: stop, and
                // say what is missing rather than walking back through all.
                Ok(report) if report.needs_identity => {
                    let _ = fs::remove_file(scratch);
                    return Err(RestoreError::NeedsIdentity {
                        label: plan.label.clone(),
                        encrypted_to: c.listed.entry.encrypted_to.clone(),
                    });
                }
                Ok(report) if report.problems.iter().any(verify::Problem::is_key_problem) => {
                    let _ = fs::remove_file(scratch);
                    return Err(RestoreError::WrongIdentity {
                        label: plan.label.clone(),
                        encrypted_to: c.listed.entry.encrypted_to.clone(),
                    });
                }
                Ok(report) if report.ok() => Ok(report),
                Ok(report) => Err(report.all_problems().map(|p| p.to_string()).collect()),
                Err(verify::VerifyError::Sink(e)) => Err(vec![format!("cannot read it: {e}")]),
                // Our own disk failing is not the candidate's fault: stop.
                Err(verify::VerifyError::Scratch { source, .. }) => {
                    let _ = fs::remove_file(scratch);
                    return Err(io_err("writing the candidate to", scratch)(source));
                }
            },
        };
        match result {
            Ok(report) => {
                observer.step(&Step::Accepted {
                    candidate: c,
                    report: &report,
                });
                return Ok((i, report, rejected));
            }
            Err(problems) => {
                let _ = fs::remove_file(scratch);
                observer.step(&Step::Rejected {
                    candidate: c,
                    problems: &problems,
                });
                rejected.push(Rejection {
                    candidate: c.clone(),
                    problems,
                });
            }
        }
    }
    Err(RestoreError::NonePassed {
        label: plan.label.clone(),
        rejected,
    })
}

/// `--dry-run`: verify candidates exactly as a restore would, but into a
/// temporary folder in the system temp dir (removed before returning), and
/// touch nothing beside the target.
pub fn dry_run(
    plan: &Plan,
    sinks: &[&dyn Sink],
    observer: &dyn Observer,
) -> Result<DryRun, RestoreError> {
    let dir = fsutil::private_tempdir("sqlite-backup-restore-dry-run-", None).map_err(io_err(
        "creating a temporary folder in",
        &std::env::temp_dir(),
    ))?;
    let scratch = dir.path().join("candidate.db");
    let (chosen, report, rejected) = find_good(plan, sinks, &scratch, observer)?;
    let scratch_dir = dir.path().to_path_buf();
    drop(dir);
    Ok(DryRun {
        chosen,
        report,
        rejected,
        scratch_dir,
    })
}

fn clean_leftovers(target: &Path, observer: &dyn Observer) {
    let Some(dir) = target.parent() else {
        return;
    };
    let prefix = fsutil::partial_prefix(target)
        .to_string_lossy()
        .into_owned();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && fsutil::is_stale_partial(&n) {
            let p = e.path();
            if fs::remove_file(&p).is_ok() {
                observer.step(&Step::CleanedLeftover { path: &p });
            }
        }
    }
}

fn probe(plan: &Plan, observer: &dyn Observer) -> Result<Vec<Holder>, RestoreError> {
    let holders = inuse::holders(&plan.target);
    if holders.is_empty() {
        return Ok(holders);
    }
    observer.step(&Step::InUse {
        holders: &holders,
        forced: plan.force,
    });
    if plan.force {
        Ok(holders)
    } else {
        Err(RestoreError::InUse {
            target: plan.target.clone(),
            holders,
        })
    }
}

/// Give `file` a second name `to` without ever replacing an existing file:
/// a hard link, or where the file system has none, a copy (written beside,
/// fsynced, then linked or renamed into place).
fn keep_as(file: &Path, to: &Path) -> io::Result<&'static str> {
    match fs::hard_link(file, to) {
        Ok(()) => Ok("hard link"),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            let tmp = fsutil::partial_path(to);
            let r = (|| {
                // 0600 while written, the original's mode once complete.
                let mut out = fsutil::create_partial(&tmp)?;
                io::copy(&mut File::open(file)?, &mut out)?;
                out.sync_all()?;
                fsutil::set_mode(&out, fsutil::mode_of(file)?)?;
                if to.exists() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                fs::rename(&tmp, to)
            })();
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            r.map(|()| "copy")
        }
    }
}

/// Run the plan. Refuses (changing nothing) when the target is in use and
/// not forced, or when no candidate passes.
pub fn execute(
    plan: &Plan,
    sinks: &[&dyn Sink],
    observer: &dyn Observer,
) -> Result<Outcome, RestoreError> {
    let target = plan.target.as_path();
    let dir = make_folder(plan)?;
    clean_leftovers(target, observer);
    probe(plan, observer)?;

    // 1. Find a good candidate, decompressed beside the target.
    let t0 = Instant::now();
    let scratch = plan.scratch.as_path();
    let mut cleanup = Cleanup(Some(scratch.to_path_buf()));
    let (chosen, report, rejected) = find_good(plan, sinks, scratch, observer)?;
    let verify_time = t0.elapsed();

    // 2. Verification may have taken minutes: look again.
    let forced_past = probe(plan, observer)?;

    // 3. Same mode and owner as the database it replaces.
    let t1 = Instant::now();
    let old_meta = fs::metadata(target).ok();
    let source_mode = plan.candidates[chosen].listed.entry.source_mode;
    match_old_mode(scratch, old_meta.as_ref(), source_mode)?;

    // 4. Keep the old database aside; the target path still holds it.
    // 5. Its side files go with it, or are removed.
    let Aside {
        broken,
        moved,
        removed,
    } = keep_old_aside(target, &dir, old_meta.is_some(), observer)?;

    // 6. Place: fsync the file, rename over the target, fsync the folder.
    place(scratch, target, &dir, &mut cleanup, observer)?;
    let place_time = t1.elapsed();

    // 7. Check the placed file again.
    let t2 = Instant::now();
    let recheck = recheck_integrity(target);
    observer.step(&Step::Rechecked { report: &recheck });
    let recheck_time = t2.elapsed();

    // 8. The application's own audit.
    let t3 = Instant::now();
    let restored = plan.candidates[chosen].clone();
    let post_restore = match &plan.post_restore {
        Some(hook) if recheck.ok() => {
            observer.step(&Step::PostRestoreStarted);
            let facts = Restored {
                label: &plan.label,
                path: target,
                broken: broken.as_deref(),
                snapshot: &restored.listed,
            };
            Some(PostRestore {
                error: hook.call(&facts).err(),
            })
        }
        _ => None,
    };
    Ok(Outcome {
        target: target.to_path_buf(),
        restored,
        report,
        rejected,
        broken,
        moved,
        removed,
        forced_past,
        recheck,
        post_restore,
        timings: Timings {
            verify: verify_time,
            place: place_time,
            recheck: recheck_time,
            post_restore: t3.elapsed(),
        },
    })
}

/// The target's folder, created if missing. A folder we create for a new
/// database is no more open than the database will be (its source's mode
/// at backup time; else 0700).
fn make_folder(plan: &Plan) -> Result<PathBuf, RestoreError> {
    let dir = plan.target.parent().unwrap_or(Path::new("/")).to_path_buf();
    let dir_mode = plan
        .candidates
        .first()
        .and_then(|c| c.listed.entry.source_mode)
        .map_or(fsutil::PRIVATE_DIR, |m| fsutil::Modes::from_source(m).dir);
    fsutil::create_dir_all_mode(&dir, dir_mode).map_err(io_err("creating the folder", &dir))?;
    Ok(dir)
}

/// Step 3 of [`execute`]: the verified file (at `scratch`) gets the mode and
/// owner of the database it replaces. A new database gets the mode its
/// source had at backup time (the scratch file was created 0600, which it
/// keeps when the manifest does not say).
fn match_old_mode(
    scratch: &Path,
    old_meta: Option<&fs::Metadata>,
    source_mode: Option<u32>,
) -> Result<(), RestoreError> {
    if old_meta.is_none()
        && let Some(mode) = source_mode
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(scratch, fs::Permissions::from_mode(mode & 0o777))
            .map_err(io_err("setting the mode of", scratch))?;
    }
    if let Some(meta) = old_meta {
        let _ = fs::set_permissions(scratch, meta.permissions());
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Err(e) = std::os::unix::fs::chown(scratch, Some(meta.uid()), Some(meta.gid())) {
                tracing::debug!("keeping the restored file's owner: {e}");
            }
        }
    }
    Ok(())
}

/// What [`keep_old_aside`] did with the old database and its side files.
#[derive(Default)]
struct Aside {
    broken: Option<PathBuf>,
    moved: Vec<(PathBuf, PathBuf)>,
    removed: Vec<PathBuf>,
}

/// Steps 4 and 5 of [`execute`]: keep the old database (if `old_exists`)
/// under a free broken name, and clear its side files from the target's
/// family. Nothing to do when the target has neither.
fn keep_old_aside(
    target: &Path,
    dir: &Path,
    old_exists: bool,
    observer: &dyn Observer,
) -> Result<Aside, RestoreError> {
    let family = inuse::family(target);
    let side_exists = family[1..].iter().any(|p| p.exists());
    if !old_exists && !side_exists {
        return Ok(Aside::default());
    }
    let name = loop {
        let candidate = free_broken_name(target, &ZonedDateTime::now());
        if !old_exists {
            break candidate;
        }
        match keep_as(target, &candidate) {
            Ok(how) => {
                observer.step(&Step::KeptAside {
                    from: target,
                    to: &candidate,
                    how,
                });
                break candidate;
            }
            // Raced with another name taker: pick the next free name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("keeping the live database aside as", &candidate)(e)),
        }
    };
    fsutil::fsync_dir(dir).map_err(io_err("syncing", dir))?;
    let mut aside = clear_side_files(&family, &name, observer)?;
    fsutil::fsync_dir(dir).map_err(io_err("syncing", dir))?;
    aside.broken = Some(name);
    Ok(aside)
}

/// Step 5 of [`execute`]: -wal and -journal go with the old database kept
/// as `name` (they hold its last commits), -shm is removed. They must be
/// gone before the new file is placed, or SQLite would replay them into it.
fn clear_side_files(
    family: &[PathBuf; 4],
    name: &Path,
    observer: &dyn Observer,
) -> Result<Aside, RestoreError> {
    let mut aside = Aside::default();
    for (side, suffix) in [(&family[1], "-wal"), (&family[3], "-journal")] {
        if side.exists() {
            let to = inuse::side_file(name, suffix);
            keep_as(side, &to).map_err(io_err("keeping aside", side))?;
            fs::remove_file(side).map_err(io_err("removing", side))?;
            observer.step(&Step::SideFileMoved {
                from: side,
                to: &to,
            });
            aside.moved.push((side.clone(), to));
        }
    }
    let shm = &family[2];
    match fs::remove_file(shm) {
        Ok(()) => {
            observer.step(&Step::SideFileRemoved { path: shm });
            aside.removed.push(shm.clone());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", shm)(e)),
    }
    Ok(aside)
}

/// Step 6 of [`execute`]: fsync the verified file, rename it over the
/// target, fsync the folder. From the rename on the file is the target's,
/// so `cleanup` no longer removes it.
fn place(
    scratch: &Path,
    target: &Path,
    dir: &Path,
    cleanup: &mut Cleanup,
    observer: &dyn Observer,
) -> Result<(), RestoreError> {
    File::open(scratch)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", scratch))?;
    fs::rename(scratch, target).map_err(io_err("placing the verified file at", target))?;
    cleanup.disarm();
    fsutil::fsync_dir(dir).map_err(io_err("syncing", dir))?;
    observer.step(&Step::Placed { path: target });
    Ok(())
}

/// `PRAGMA integrity_check` alone on the placed file (the candidate passed
/// every other check minutes ago, byte for byte the same file), opened
/// read-only and immutable so checking creates no side files.
fn recheck_integrity(path: &Path) -> DbReport {
    let checks = Checks {
        level: CheckLevel::IntegrityCheck,
        skip_foreign_keys: true,
        ..Checks::default()
    };
    verify::check_file(path, &checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;
    use crate::sink::Placement;

    fn listed(run: &str, sink: &str, at: &str, tag: Option<&str>, tasks: u64) -> Listed {
        Listed {
            sink: sink.into(),
            placement: Placement::Local,
            run_id: run.into(),
            entry: Entry {
                adopted: None,
                label: "app".into(),
                tag: tag.map(Into::into),
                key: format!("app-{run}.db.zst"),
                sidecar_key: format!("app-{run}.db.zst.sha256"),
                compression: crate::compress::Format::Zstd,
                size: 1,
                sha256: String::new(),
                db_size: 1,
                db_sha256: String::new(),
                page_size: 4096,
                page_count: 1,
                schema_sha256: String::new(),
                row_counts: [("tasks".to_string(), tasks)].into(),
                snapshot_at: at.parse().unwrap(),
                snapshot_ms: 1,
                verified_with: CheckLevel::IntegrityCheck,
                source: db().path.display().to_string(),
                host: None,
                source_mode: None,
                encrypted_to: vec![],
                sealed: None,
                pages: None,
            },
        }
    }

    fn db() -> Database {
        Database {
            label: "app".into(),
            path: std::env::temp_dir().join("restore-plan-test-nonexistent.db"),
            required_tables: vec!["tasks".into()],
            checks: vec![],
            retention: Default::default(),
            encryption: None,
            incremental: false,
            host: None,
        }
    }

    fn catalog() -> Vec<Listed> {
        vec![
            listed("r3", "local", "2026-04-17T10:00:00Z", None, 300),
            listed("r2", "local", "2026-04-16T12:00:00Z", Some("r75"), 200),
            listed("r2", "cold", "2026-04-16T12:00:00Z", Some("r75"), 200),
            listed("r1", "local", "2026-04-16T08:00:00Z", None, 100),
        ]
    }

    fn runs(p: &Plan) -> Vec<String> {
        p.candidates
            .iter()
            .map(|c| format!("{}@{}", c.listed.run_id, c.listed.sink))
            .collect()
    }

    #[test]
    fn selectors_pick_the_start_and_walk_back_through_older() {
        let c = catalog();
        let p = plan(&c, &Request::new(db(), Selector::Latest)).unwrap();
        assert_eq!(runs(&p), ["r3@local", "r2@local", "r2@cold", "r1@local"]);
        let p = plan(&c, &Request::new(db(), Selector::Tag("r75".into()))).unwrap();
        assert_eq!(runs(&p), ["r2@local", "r2@cold", "r1@local"]);
        let date = Selector::Date("2026-04-16".parse().unwrap());
        let p = plan(&c, &Request::new(db(), date)).unwrap();
        assert_eq!(runs(&p), ["r2@local", "r2@cold", "r1@local"]);
        let p = plan(&c, &Request::new(db(), Selector::Id("r2".into()))).unwrap();
        assert_eq!(runs(&p), ["r2@local", "r2@cold"]);
        let mut r = Request::new(db(), Selector::Latest);
        r.from = Some("cold".into());
        assert_eq!(runs(&plan(&c, &r).unwrap()), ["r2@cold"]);
        let e = plan(&c, &Request::new(db(), Selector::Tag("nope".into()))).unwrap_err();
        assert!(matches!(e, RestoreError::NoBackups { .. }), "{e}");
    }

    #[test]
    fn another_sources_snapshots_are_never_candidates_unless_named() {
        let mut theirs = listed("r9", "local", "2026-11-02T10:00:00Z", None, 9);
        theirs.entry.host = Some("web-2".into());
        let mut c = catalog();
        c.insert(0, theirs);
        let r = Request::new(db(), Selector::Latest);
        assert!(
            !runs(&plan(&c, &r).unwrap())
                .iter()
                .any(|x| x.starts_with("r9"))
        );

        let only_theirs = vec![c[0].clone()];
        let e = plan(&only_theirs, &r).unwrap_err();
        assert!(
            matches!(&e, RestoreError::WrongSource(SourceError::Elsewhere { others, .. }) if others[0].starts_with("web-2:")),
            "{e}"
        );
        assert!(e.to_string().contains("--source web-2:"), "{e}");

        let named = Request {
            source: Scope::Named("web-2".into()),
            ..Request::new(db(), Selector::Latest)
        };
        assert_eq!(runs(&plan(&c, &named).unwrap()), ["r9@local"]);
    }

    #[test]
    fn each_step_back_says_what_it_loses() {
        let p = plan(&catalog(), &Request::new(db(), Selector::Latest)).unwrap();
        assert!(p.candidates[0].loss.is_none());
        let step = p.candidates[1].loss.as_ref().unwrap();
        assert_eq!(step.age_gap, SignedDuration::from_hours(22));
        assert_eq!(
            step.to_string(),
            "loses 22h of changes; rows: tasks 300 -> 200 (-100)"
        );
        let same = p.candidates[2].loss.as_ref().unwrap();
        assert!(same.is_nothing());
        assert_eq!(
            same.to_string(),
            "loses nothing (a copy of the same snapshot)"
        );
    }

    #[test]
    fn broken_names_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.db");
        let now: ZonedDateTime = "2026-04-16T13:08:12[UTC]".parse().unwrap();
        let first = free_broken_name(&target, &now);
        assert_eq!(first, dir.path().join("app.db.broken-20260416-130812"));
        fs::write(&first, b"x").unwrap();
        let second = free_broken_name(&target, &now);
        assert_eq!(second, dir.path().join("app.db.broken-20260416-130812-2"));
        fs::write(inuse::side_file(&second, "-wal"), b"x").unwrap();
        assert_eq!(
            free_broken_name(&target, &now),
            dir.path().join("app.db.broken-20260416-130812-3")
        );
    }
}
