//! Restore drills: prove that backups restore, without touching anything live.
//!
//! For one database and each sink, a drill restores the newest backup and
//! one older backup chosen at random into a fresh scratch folder (under
//! [`Options::scratch_root`], the system temp folder by default: far from
//! the live file), through the same [`restore::plan`] + [`restore::execute`]
//! a real restore uses, so it runs every check a restore runs: digests
//! against sidecar and manifest, decompression, `integrity_check`,
//! `foreign_key_check`, required tables, check queries, the re-check of the
//! placed file and, when given, the post-restore hook with the scratch path.
//! The time the newest one takes is the restore time objective (RTO) as
//! measured, per sink. The scratch folder is removed afterwards.
//!
//! The live database is never opened: the restore target is a path inside
//! the scratch folder, and a restore only ever touches its target's folder.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::database::Database;
use crate::manifest::Listed;
use crate::restore::{self, PostRestoreHook, Request, RestoreError, Selector};
use crate::sink::Sink;
use crate::source::Scope;

/// How a drill runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Folder that receives the scratch folders; `None`: the system temp folder.
    pub scratch_root: Option<PathBuf>,
    /// Only this sink.
    pub from: Option<String>,
    /// The application's audit, run on each restored scratch copy.
    pub post_restore: Option<PostRestoreHook>,
    /// Seed for choosing the older backup (tests); `None`: random.
    pub seed: Option<u64>,
    /// Keys that open encrypted backups.
    pub identities: Option<crate::encryption::Identities>,
    /// Whose snapshots (default: this machine's file's).
    pub source: Scope,
}

/// Why one restored snapshot failed its drill.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The artifact failed a check (digest, decompression, integrity …).
    #[error("{key} (snapshot {run_id}) does not restore: {}", problems.join("; "))]
    Rejected {
        /// Artifact key.
        key: String,
        /// Run id.
        run_id: String,
        /// What was wrong.
        problems: Vec<String>,
    },
    /// It was placed, but the re-check or the post-restore hook failed.
    #[error("{key} (snapshot {run_id}) restored but {problem}")]
    AfterPlacing {
        /// Artifact key.
        key: String,
        /// Run id.
        run_id: String,
        /// What failed.
        problem: String,
    },
    /// The restore could not run (scratch folder, planning).
    #[error("{key} (snapshot {run_id}): {source}")]
    Restore {
        /// Artifact key.
        key: String,
        /// Run id.
        run_id: String,
        /// Cause (boxed: it is large and rare).
        #[source]
        source: Box<RestoreError>,
    },
    /// The scratch folder could not be created.
    #[error("creating a scratch folder in {}: {source}", root.display())]
    Scratch {
        /// Where.
        root: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// One snapshot restored by a drill.
#[derive(Debug)]
pub struct Drilled {
    /// The snapshot.
    pub listed: Listed,
    /// It is the newest of its sink.
    pub newest: bool,
    /// Wall time of the restore, checks included.
    pub elapsed: Duration,
    /// `Ok` when every check passed.
    pub result: Result<(), DrillError>,
}

/// A drill of one database in one sink.
#[derive(Debug)]
pub struct SinkDrill {
    /// Sink name.
    pub sink: String,
    /// The snapshots restored: the newest first, then the older one.
    pub drilled: Vec<Drilled>,
}

impl SinkDrill {
    /// Every restored snapshot passed.
    pub fn ok(&self) -> bool {
        self.drilled.iter().all(|d| d.result.is_ok())
    }

    /// The RTO: how long restoring the newest backup took, when it passed.
    pub fn rto(&self) -> Option<Duration> {
        self.drilled
            .iter()
            .find(|d| d.newest)
            .filter(|d| d.result.is_ok())
            .map(|d| d.elapsed)
    }

    /// The failures, one per failed snapshot.
    pub fn errors(&self) -> impl Iterator<Item = &DrillError> {
        self.drilled.iter().filter_map(|d| d.result.as_ref().err())
    }
}

/// The snapshots a drill restores from one sink's entries of one database
/// (newest first): the newest, and one of the older ones picked by `rng`.
pub fn choose<'a>(entries: &[&'a Listed], rng: &mut impl Rng) -> Vec<&'a Listed> {
    match entries {
        [] => vec![],
        [newest] => vec![*newest],
        [newest, older @ ..] => vec![*newest, older[rng.random_range(0..older.len())]],
    }
}

/// Drill `database` in every sink of `sinks` that holds a backup of it
/// (or only `options.from`), per `catalog` (`manifest::view::collect` output).
/// Sinks with no backup of it are left out; an empty result means there was
/// nothing to drill.
pub fn run(
    catalog: &[Listed],
    database: &Database,
    sinks: &[&dyn Sink],
    options: &Options,
) -> Vec<SinkDrill> {
    let mut rng = match options.seed {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
        None => rand::rngs::StdRng::from_os_rng(),
    };
    let mut out = Vec::new();
    // One source's snapshots; another's, or two files', are never drilled
    // as this database's (`source::select` says why to whoever asks).
    let Ok(mine) = crate::source::select(catalog, database, &options.source) else {
        return out;
    };
    for sink in sinks {
        let name = sink.name();
        if options.from.as_deref().is_some_and(|f| f != name) {
            continue;
        }
        let mut entries: Vec<&Listed> = mine.iter().copied().filter(|l| l.sink == name).collect();
        entries.sort_by_key(|l| std::cmp::Reverse(l.entry.snapshot_at));
        let chosen = choose(&entries, &mut rng);
        if chosen.is_empty() {
            continue;
        }
        let drilled = chosen
            .iter()
            .enumerate()
            .map(|(i, listed)| restore_one(listed, i == 0, database, sinks, options))
            .collect();
        out.push(SinkDrill {
            sink: name.to_string(),
            drilled,
        });
    }
    out
}

/// Restore one snapshot into a scratch folder of its own, then remove it.
fn restore_one(
    listed: &Listed,
    newest: bool,
    database: &Database,
    sinks: &[&dyn Sink],
    options: &Options,
) -> Drilled {
    let started = Instant::now();
    let result = (|| {
        let root = options
            .scratch_root
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("sqlite-backup-drill-")
            .tempdir_in(&root)
            .map_err(|source| DrillError::Scratch { root, source })?;
        let key = || listed.entry.key.clone();
        let run_id = || listed.run_id.clone();
        // Only this snapshot of this sink: a drill must not walk back to
        // another candidate and report a pass.
        let request = Request {
            database: database.clone(),
            target: dir.path().join(format!("{}.db", database.label)),
            selector: Selector::Id(listed.run_id.clone()),
            from: Some(listed.sink.clone()),
            force: false,
            post_restore: options.post_restore.clone(),
            identities: options.identities.clone(),
            source: Scope::All,
        };
        let plan = restore::plan(std::slice::from_ref(listed), &request).map_err(|source| {
            DrillError::Restore {
                key: key(),
                run_id: run_id(),
                source: Box::new(source),
            }
        })?;
        let outcome = match restore::execute(&plan, sinks, &restore::Silent) {
            Ok(o) => o,
            Err(RestoreError::NonePassed { rejected, .. }) => {
                return Err(DrillError::Rejected {
                    key: key(),
                    run_id: run_id(),
                    problems: rejected.into_iter().flat_map(|r| r.problems).collect(),
                });
            }
            Err(source) => {
                return Err(DrillError::Restore {
                    key: key(),
                    run_id: run_id(),
                    source: Box::new(source),
                });
            }
        };
        if let Some(p) = outcome.recheck.problems.first() {
            return Err(DrillError::AfterPlacing {
                key: key(),
                run_id: run_id(),
                problem: format!("the re-check failed: {p}"),
            });
        }
        if let Some(e) = outcome.post_restore.and_then(|p| p.error) {
            return Err(DrillError::AfterPlacing {
                key: key(),
                run_id: run_id(),
                problem: format!("post_restore rejected it: {e}"),
            });
        }
        Ok(())
    })();
    Drilled {
        listed: listed.clone(),
        newest,
        elapsed: started.elapsed(),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    fn db(dir: &std::path::Path) -> Database {
        let path = dir.join("app.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE tasks(id INTEGER PRIMARY KEY, t TEXT);
             INSERT INTO tasks(t) VALUES ('one'), ('two');",
        )
        .unwrap();
        Database::new("app", &path).require_tables(["tasks"])
    }

    #[test]
    fn choose_takes_the_newest_and_one_older() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let e = crate::manifest::sample_entry();
        let l = |run: &str| Listed {
            sink: "local".into(),
            placement: crate::sink::Placement::Local,
            run_id: run.into(),
            entry: e.clone(),
        };
        let (a, b, c) = (l("a"), l("b"), l("c"));
        assert!(choose(&[], &mut rng).is_empty());
        assert_eq!(choose(&[&a], &mut rng).len(), 1);
        let mut older = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let picked = choose(&[&a, &b, &c], &mut rng);
            assert_eq!(picked[0].run_id, "a");
            older.insert(picked[1].run_id.clone());
        }
        assert_eq!(older.into_iter().collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn a_healthy_sink_passes_and_a_corrupt_artifact_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let database = db(dir.path());
        let live_before = std::fs::read(&database.path).unwrap();
        let sink = MemorySink::new("local");
        let backups = crate::Backups::new(sink.clone());
        backups.backup(&database).unwrap();
        backups.backup(&database).unwrap();
        let sinks: [&dyn Sink; 1] = [&sink];
        let (catalog, _) = crate::manifest::view::collect(&sinks);
        let scratch = tempfile::tempdir().unwrap();
        let options = Options {
            scratch_root: Some(scratch.path().to_path_buf()),
            seed: Some(7),
            ..Options::default()
        };
        let report = run(&catalog, &database, &sinks, &options);
        assert_eq!(report.len(), 1);
        assert!(report[0].ok(), "{:?}", report[0]);
        assert_eq!(report[0].drilled.len(), 2);
        assert!(report[0].rto().is_some());
        // Scratch folders are gone.
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);

        let newest = &catalog[0].entry.key;
        let mut bytes = crate::sink::get_bytes(&sink, newest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        sink.put(newest, &bytes).unwrap();
        let report = run(&catalog, &database, &sinks, &options);
        assert!(!report[0].ok());
        assert_eq!(report[0].rto(), None);
        let e = report[0].errors().next().unwrap().to_string();
        assert!(e.contains(newest.as_str()), "{e}");
        assert_eq!(std::fs::read(&database.path).unwrap(), live_before);
    }
}
