//! The facade: a set of sinks with defaults, and the five things people do
//! with backups (back up, list, verify, restore, prune), each one call.
//!
//! Everything here is built from the modules below it; they stay public for
//! what the facade does not cover (several databases in one run, a dry-run
//! plan to print, the catalog's hash chain).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;

use crate::compress::Compression;
use crate::database::{CheckLevel, Database, SnapshotMethod, validate_label, validate_tag};
use crate::encryption::Identities;
use crate::error::{ConfigError, Error};
use crate::manifest::{Entry, Listed};
use crate::naming::{DEFAULT_LOCAL_TEMPLATE, Template};
use crate::pipeline::{self, Action, Observer, Options, Target};
use crate::prune::{self, PrunePlan, PruneReport};
use crate::restore::{self, PostRestoreHook, Restored, Selector};
use crate::retention::Retention;
use crate::sink::Sink;
use crate::source::Scope;
use crate::verify::{ArtifactReport, Checks};

/// Backups of SQLite databases kept in one or more sinks.
///
/// ```no_run
/// use backup_core::{Backups, Database};
/// # fn sink() -> backup_core::sink::MemorySink { backup_core::sink::MemorySink::new("local") }
/// let backups = Backups::new(sink()); // e.g. backup_local::LocalSink::folder("/var/backups/app")
/// let app = Database::new("app", "/srv/app/app.db");
/// backups.backup(&app)?;
/// backups.verify_latest(&app)?;
/// backups.restore(&app).to("/tmp/app-restored.db").run()?;
/// # Ok::<(), backup_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Backups {
    targets: Vec<Target>,
    options: Options,
    identities: Option<Identities>,
}

/// Builds a [`Backups`] with more than one sink or other settings.
///
/// ```
/// use backup_core::{Backups, CheckLevel, compress::{Compression, Format}, sink::MemorySink};
/// let backups = Backups::builder()
///     .sink(MemorySink::new("local"))
///     .sink_named(MemorySink::new("offsite"), "sqlite/{date}/{label}-{time}{ext}")
///     .unwrap()
///     .compression(Compression::new(Format::Gzip))
///     .check_level(CheckLevel::IntegrityCheck)
///     .build();
/// assert_eq!(backups.sinks().count(), 2);
/// ```
#[derive(Debug, Default)]
pub struct Builder {
    targets: Vec<Target>,
    options: Options,
    identities: Option<Identities>,
}

impl Builder {
    /// Add a sink; artifacts are named `{label}-{tag}-{yyyymmdd}-{time}{ext}`.
    pub fn sink(mut self, sink: impl Sink + 'static) -> Self {
        self.targets.push(Target {
            sink: Arc::new(sink),
            template: Template::parse(DEFAULT_LOCAL_TEMPLATE, false).expect("default template"),
            cold_only: false,
        });
        self
    }

    /// Add a sink with its own name template (placeholders `{label}`,
    /// `{tag}`, `{date}`, `{yyyymmdd}`, `{time}`, `{run}`, `{ext}`).
    pub fn sink_named(mut self, sink: impl Sink + 'static, template: &str) -> Result<Self, Error> {
        let template = Template::parse(template, false).map_err(ConfigError::from)?;
        self.targets.push(Target {
            sink: Arc::new(sink),
            template,
            cold_only: false,
        });
        Ok(self)
    }

    /// Add a shared sink with its template (an already-built [`Target`]).
    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    /// Compression of new artifacts (default: zstd level 3 on every core).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.options.compression = compression;
        self
    }

    /// The check right after each backup (default: `quick_check`).
    pub fn check_level(mut self, level: CheckLevel) -> Self {
        self.options.verify_level = level;
        self
    }

    /// How snapshots are taken (default: one pinned read transaction).
    pub fn snapshot_method(mut self, method: SnapshotMethod) -> Self {
        self.options.snapshot_method = method;
        self
    }

    /// A private folder for scratch copies (default: the system's temporary
    /// folder). Best on the same disk as a local sink, never beside the source.
    pub fn scratch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.scratch_dir = dir.into();
        self
    }

    /// A private folder where incremental runs keep each sink's newest page
    /// hashes, so that a run reads no page index back from the sinks (a
    /// copy that does not match the newest manifest is never used).
    pub fn page_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.page_cache = Some(dir.into());
        self
    }

    /// Keep each incremental run's snapshot pinned until the next run of
    /// the same database, so the WAL cannot restart between runs and the
    /// next run reads only the pages its frames name (for a process that
    /// runs backups every few seconds; see [`crate::pipeline::HeldSnapshots`]).
    pub fn hold_snapshots(mut self, held: crate::pipeline::HeldSnapshots) -> Self {
        self.options.held = Some(held);
        self
    }

    /// When incremental databases start a new chain with a full base
    /// (default: after 24 hours, 86,400 snapshots, or once the packs an image needs hold 1.5× what its base stored).
    pub fn incremental(mut self, policy: crate::incremental::Policy) -> Self {
        self.options.incremental = policy;
        self
    }

    /// Keys that open encrypted backups for verify and restore (backups
    /// themselves need only the recipients, set per [`Database`]).
    pub fn identities(mut self, identities: Identities) -> Self {
        self.identities = Some(identities);
        self
    }

    /// The finished set.
    pub fn build(self) -> Backups {
        Backups {
            targets: self.targets,
            options: self.options,
            identities: self.identities,
        }
    }
}

/// One database backed up: where each copy went.
#[derive(Debug, Clone)]
pub struct BackedUp {
    /// The run (also the manifest's name).
    pub run_id: String,
    /// Per sink: its name and the catalog entry of the copy it holds.
    pub copies: Vec<(String, Entry)>,
}

/// What a backup reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// Copying the snapshot into a scratch file, in pages.
    Snapshot {
        /// Database label.
        label: &'a str,
        /// Pages done.
        done: u64,
        /// Pages in all.
        total: u64,
    },
    /// Compressing and sending, in database bytes read.
    Stream {
        /// Database label.
        label: &'a str,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
}

/// Stops a backup from another thread: the database in flight is abandoned
/// and nothing incomplete is stored.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask the run to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A progress closure and a cancellation token seen as a pipeline observer.
struct Hooks<'a, F> {
    progress: F,
    cancel: Option<&'a CancelToken>,
}

impl<F: Fn(Progress<'_>) + Send + Sync> Observer for Hooks<'_, F> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(CancelToken::is_cancelled)
    }
    fn snapshot_progress(&self, label: &str, done: u64, total: u64) {
        (self.progress)(Progress::Snapshot { label, done, total });
    }
    fn stream_progress(&self, label: &str, done: u64, total: u64) {
        (self.progress)(Progress::Stream { label, done, total });
    }
}

/// A backup that passed every check, and what was found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The catalog entry checked.
    pub listed: Listed,
    /// Digests, sizes, row counts.
    pub report: ArtifactReport,
}

impl Backups {
    /// Backups kept in one sink, with the defaults: zstd level 3,
    /// `quick_check` after each backup, scratch files in the system's
    /// temporary folder.
    pub fn new(sink: impl Sink + 'static) -> Self {
        Self::builder().sink(sink).build()
    }

    /// Start from nothing: add sinks and settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The sinks, in the order given (restore prefers earlier ones).
    pub fn sinks(&self) -> impl Iterator<Item = &dyn Sink> {
        self.targets.iter().map(|t| t.sink.as_ref())
    }

    fn sink_refs(&self) -> Vec<&dyn Sink> {
        self.sinks().collect()
    }

    /// Back up one live database to every sink. The application may keep
    /// reading and writing meanwhile.
    pub fn backup(&self, db: &Database) -> Result<BackedUp, Error> {
        self.backup_with(db, None, |_| {}, None)
    }

    /// [`backup`](Self::backup) with a trigger tag (`r75`, `premigrate`,
    /// `phase1`), a progress callback, and a token to cancel it from another
    /// thread.
    pub fn backup_with(
        &self,
        db: &Database,
        tag: Option<&str>,
        progress: impl Fn(Progress<'_>) + Send + Sync,
        cancel: Option<&CancelToken>,
    ) -> Result<BackedUp, Error> {
        let plan = self.plan_run(std::slice::from_ref(db), tag, &[])?;
        if let Action::Skip(_) = &plan.items[0].action {
            return Err(Error::NoSource {
                path: db.path.clone(),
            });
        }
        let hooks = Hooks { progress, cancel };
        let mut report = pipeline::execute(&plan, &hooks);
        let outcome = report.outcomes.remove(0);
        if outcome.skipped.is_some() {
            return Err(Error::Cancelled);
        }
        if outcome.failed() {
            return Err(Error::Backup {
                label: outcome.label,
                errors: outcome.errors,
            });
        }
        Ok(BackedUp {
            run_id: report.run_id,
            copies: outcome.written,
        })
    }

    /// Several databases in one run, as the command line and the daemon
    /// run them: one run id, one manifest per sink. The plan says what each
    /// database would write where (or why it is skipped) and touches
    /// nothing; [`execute`](Self::execute) carries it out. Databases whose
    /// label is in `cold` also go to cold-only sinks.
    pub fn plan_run(
        &self,
        databases: &[Database],
        tag: Option<&str>,
        cold: &[String],
    ) -> Result<pipeline::Plan, Error> {
        // The rules the config file is held to, for settings built in code.
        for db in databases {
            validate_label(&db.label).map_err(ConfigError::from)?;
            db.validate().map_err(ConfigError::from)?;
        }
        if let Some(t) = tag {
            validate_tag(t).map_err(ConfigError::from)?;
        }
        if self.targets.is_empty() {
            return Err(ConfigError::NoSink.into());
        }
        let options = Options {
            tag: tag.map(str::to_string),
            cold_labels: cold.to_vec(),
            ..self.options.clone()
        };
        options.compression.validate().map_err(ConfigError::from)?;
        options.incremental.validate().map_err(ConfigError::from)?;
        Ok(pipeline::plan(
            databases,
            &self.targets,
            &options,
            Timestamp::now(),
        ))
    }

    /// Carry out a plan from [`plan_run`](Self::plan_run); `observer` sees
    /// progress and can cancel. Per database: what each sink got, or why not.
    pub fn execute(&self, plan: &pipeline::Plan, observer: &dyn Observer) -> pipeline::RunReport {
        pipeline::execute(plan, observer)
    }

    /// Every backup the sinks' catalogs list, newest first. Sinks or
    /// manifests that cannot be read are reported in the second list and
    /// left out of the first.
    pub fn list(&self) -> (Vec<Listed>, Vec<String>) {
        crate::manifest::view::collect(&self.sink_refs())
    }

    /// Restore drill of `db` ([`crate::drill`]): per sink, restore the
    /// newest backup and one older one at random into scratch folders with
    /// every check a restore runs; the live file is never touched.
    pub fn drill(
        &self,
        db: &Database,
        options: &crate::drill::Options,
    ) -> Vec<crate::drill::SinkDrill> {
        let (all, _) = self.list();
        crate::drill::run(&all, db, &self.sink_refs(), options)
    }

    /// Check the newest backup of `db` the way a restore would: digests,
    /// decompression, `integrity_check`, `foreign_key_check`, the required
    /// tables and check queries. Nothing is written but a scratch file.
    pub fn verify_latest(&self, db: &Database) -> Result<Verified, Error> {
        let (all, _) = self.list();
        let newest = crate::source::select(&all, db, &Scope::Own)?
            .first()
            .map(|&l| l.clone())
            .ok_or_else(|| Error::NotFound(format!("no backup of {:?} is listed", db.label)))?;
        self.verify(db, newest)
    }

    /// Check the backup of run `run_id` of `db` in every sink that holds a
    /// copy; the first copy that fails is the error.
    pub fn verify_id(&self, db: &Database, run_id: &str) -> Result<Vec<Verified>, Error> {
        let (all, _) = self.list();
        let copies: Vec<Listed> = all
            .into_iter()
            .filter(|l| l.entry.label == db.label && l.run_id == run_id)
            .collect();
        if copies.is_empty() {
            return Err(Error::NotFound(format!(
                "no backup of {:?} from run {run_id} is listed",
                db.label
            )));
        }
        copies.into_iter().map(|l| self.verify(db, l)).collect()
    }

    /// Check every listed backup of `db` from its own source in every sink
    /// (a deep check; it reads every artifact once).
    pub fn verify_all(&self, db: &Database) -> Result<Vec<Verified>, Error> {
        let (all, _) = self.list();
        crate::source::select(&all, db, &Scope::Own)?
            .into_iter()
            .map(|l| self.verify(db, l.clone()))
            .collect()
    }

    fn verify(&self, db: &Database, listed: Listed) -> Result<Verified, Error> {
        let sink = self
            .sinks()
            .find(|s| s.name() == listed.sink)
            .expect("listed by one of our sinks");
        let prefix = "sqlite-backup-verify-";
        let scratch = crate::fsutil::private_tempdir(prefix, Some(&self.options.scratch_dir))
            .or_else(|_| crate::fsutil::private_tempdir(prefix, None))
            .map_err(|source| Error::Io {
                what: "creating a scratch folder in",
                path: self.options.scratch_dir.clone(),
                source,
            })?;
        let checks = Checks::for_database(db, CheckLevel::IntegrityCheck)
            .with_identities(self.identities.clone());
        let report = crate::verify::verify_entry(
            sink,
            &listed.entry,
            &scratch.path().join("candidate.db"),
            &checks,
        )?;
        if report.needs_identity || report.problems.iter().any(|p| p.is_key_problem()) {
            // Never a silent pass: the content was not checked.
            return Err(Error::Keys(format!(
                "{} in sink {} is encrypted (to {}); give Backups::builder().identities(…) to check it",
                listed.entry.key,
                listed.sink,
                listed.entry.encrypted_to.join(", ")
            )));
        }
        if report.ok() {
            Ok(Verified { listed, report })
        } else {
            Err(Error::Corrupt {
                subject: format!("{} in sink {}", listed.entry.key, listed.sink),
                problems: report.all_problems().cloned().collect(),
            })
        }
    }

    /// Restore `db`: the newest backup that verifies, in place, keeping the
    /// live file aside. Choose another snapshot, target or sink on the
    /// returned [`Restore`] before running it.
    pub fn restore<'a>(&'a self, db: &Database) -> Restore<'a> {
        Restore {
            backups: self,
            request: restore::Request {
                identities: self.identities.clone(),
                ..restore::Request::new(db.clone(), Selector::Latest)
            },
        }
    }

    /// What `policy` would delete now, per sink and backup, with the reason
    /// for each decision. Nothing is touched until [`prune`](Self::prune).
    pub fn prune_plan(&self, policy: &Retention) -> PrunePlan {
        prune::plan(&self.sink_refs(), &[], Timestamp::now(), policy)
    }

    /// Carry out a plan from [`prune_plan`](Self::prune_plan): delete what
    /// it marked, record the deletions in each sink's catalog.
    pub fn prune(&self, plan: &PrunePlan) -> PruneReport {
        prune::apply(plan, &self.sink_refs())
    }
}

/// A restore being set up; [`run`](Self::run) carries it out.
#[derive(Debug)]
pub struct Restore<'a> {
    backups: &'a Backups,
    request: restore::Request,
}

impl Restore<'_> {
    /// The newest snapshot taken at or before `time`.
    pub fn at(mut self, time: Timestamp) -> Self {
        self.request.selector = Selector::At(time);
        self
    }

    /// The snapshot of this run.
    pub fn id(mut self, run_id: &str) -> Self {
        self.request.selector = Selector::Id(run_id.to_string());
        self
    }

    /// The newest snapshot with this tag.
    pub fn tag(mut self, tag: &str) -> Self {
        self.request.selector = Selector::Tag(tag.to_string());
        self
    }

    /// Restore to another path instead of the database's own.
    pub fn to(mut self, path: impl AsRef<Path>) -> Self {
        self.request.target = path.as_ref().to_path_buf();
        self
    }

    /// Another source's snapshots (`host:/path` as listed, or a host
    /// name), or [`Scope::All`]; by default only this machine's file's.
    pub fn source(mut self, scope: Scope) -> Self {
        self.request.source = scope;
        self
    }

    /// Only candidates from the sink with this name.
    pub fn from(mut self, sink: &str) -> Self {
        self.request.from = Some(sink.to_string());
        self
    }

    /// Replace the database even while another process uses it.
    pub fn force(mut self) -> Self {
        self.request.force = true;
        self
    }

    /// The application's own check of the restored file; an `Err` makes the
    /// restore fail (the previous database stays kept beside it).
    pub fn post_restore(
        mut self,
        check: impl Fn(&Restored<'_>) -> Result<(), restore::HookError> + Send + Sync + 'static,
    ) -> Self {
        self.request.post_restore = Some(PostRestoreHook::new(check));
        self
    }

    /// The resolved plan: candidates newest first, the moves it would make.
    pub fn plan(&self) -> Result<restore::Plan, Error> {
        let (catalog, _) = self.backups.list();
        Ok(restore::plan(&catalog, &self.request)?)
    }

    /// Verify candidates exactly as a restore would, in a temporary folder,
    /// and touch nothing else: the candidate a restore would place.
    pub fn dry_run(&self) -> Result<restore::DryRun, Error> {
        let plan = self.plan()?;
        Ok(restore::dry_run(
            &plan,
            &self.backups.sink_refs(),
            &restore::Silent,
        )?)
    }

    /// Restore: walks back through older snapshots while a candidate fails,
    /// refuses while the database is in use (unless forced), keeps the live
    /// file as `<name>.broken-<time>`, places the verified file atomically
    /// and checks it again.
    pub fn run(&self) -> Result<restore::Outcome, Error> {
        let plan = self.plan()?;
        let outcome = restore::execute(&plan, &self.backups.sink_refs(), &restore::Silent)?;
        if !outcome.recheck.ok() {
            return Err(Error::Corrupt {
                subject: format!("the placed file {}", outcome.target.display()),
                problems: outcome.recheck.problems.clone(),
            });
        }
        if let Some(error) = outcome.post_restore.as_ref().and_then(|p| p.error.clone()) {
            return Err(Error::PostRestore {
                path: outcome.target.clone(),
                broken: outcome.broken.clone(),
                error,
            });
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption::Recipients;
    use crate::sink::MemorySink;

    fn database(dir: &Path) -> PathBuf {
        let path = dir.join("app.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (x TEXT);
                 INSERT INTO t VALUES ('kept private');",
            )
            .unwrap();
        path
    }

    #[test]
    fn encrypted_backups_never_verify_silently_without_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let to = Recipients::parse([key.to_public().to_string()]).unwrap();
        let app = Database::new("app", database(dir.path()))
            .require_tables(["t"])
            .encrypt_to(to);
        let sink = MemorySink::new("local");
        let writer = Backups::builder()
            .sink(sink.clone())
            .scratch_dir(dir.path().join("scratch"))
            .build();
        let taken = writer.backup(&app).unwrap();
        assert!(taken.copies[0].1.key.ends_with(".db.zst.age"));
        assert!(matches!(writer.verify_latest(&app), Err(Error::Keys(_))));
        assert!(matches!(
            writer.restore(&app).to(dir.path().join("r.db")).run(),
            Err(Error::Keys(_))
        ));

        let reader = Backups::builder()
            .sink(sink)
            .scratch_dir(dir.path().join("scratch"))
            .identities(Identities::from_x25519([key]))
            .build();
        reader.verify_latest(&app).unwrap();
        reader
            .restore(&app)
            .to(dir.path().join("r.db"))
            .run()
            .unwrap();
        let x: String = rusqlite::Connection::open(dir.path().join("r.db"))
            .unwrap()
            .query_row("SELECT x FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(x, "kept private");
    }
}
