//! Carrying out a plan: database by database, then one manifest per sink.

use std::path::Path;

use jiff::Timestamp;
use tracing::{info, warn};

use super::full_image::backup_streams;
use super::incremental::backup_incremental;
use super::{
    Action, BackupError, INTERRUPTED, ManifestWritten, Observer, Outcome, Plan, PlanItem,
    PlannedArtifact, RunOpts, RunReport, Target, fallback_scratch_dir,
};
use crate::catalog::append::{AppendError, write_manifest};
use crate::database::Database;
use crate::fsutil;
use crate::intent;
use crate::manifest::Entry;

/// Carry out a plan.
pub fn execute(plan: &Plan, observer: &dyn Observer) -> RunReport {
    let targets = plan.targets.as_slice();
    let opts = &RunOpts {
        opts: &plan.options,
        observer,
    };
    info!(
        run = %plan.run_id,
        databases = plan.items.len(),
        "backup phase start"
    );
    // Each sink's catalog is checked once a run, not at every read of it.
    let _reads = crate::manifest::view::memo::Scope::open();
    clean_leftovers(targets, &opts.scratch_dir);
    let mut outcomes: Vec<Outcome> = plan
        .items
        .iter()
        .map(|item| run_item(plan, item, opts))
        .collect();
    // Manifests last, one per sink that received anything.
    let manifests = write_manifests(plan, &mut outcomes);
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
        ok = report.ok_count(),
        failed = report.failed_count(),
        skipped = report
            .outcomes
            .iter()
            .filter(|o| o.skipped.is_some())
            .count(),
        objects = %format_args!("{}/{}", report.written_objects, report.expected_objects),
        "backup phase end"
    );
    report
}

/// Back up one planned database, unless the plan skips it or the run was
/// cancelled before it started.
fn run_item(plan: &Plan, item: &PlanItem, opts: &RunOpts<'_>) -> Outcome {
    let label = item.database.label.clone();
    let outcome = match &item.action {
        _ if opts.observer.cancelled() => {
            warn!(label = %label, "not starting: run cancelled");
            Outcome {
                label,
                skipped: Some(INTERRUPTED.into()),
                written: vec![],
                errors: vec![],
            }
        }
        Action::Skip(reason) => {
            warn!(label = %label, "skipping: {reason}");
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
            &plan.targets,
            opts,
            &plan.run_id,
            plan.started_at,
        ),
    };
    for e in &outcome.errors {
        tracing::error!(label = %outcome.label, error = %e, "backup failed");
    }
    outcome
}

/// One manifest per sink that received anything; a sink whose manifest
/// cannot be written loses this run's uploads.
fn write_manifests(plan: &Plan, outcomes: &mut [Outcome]) -> Vec<ManifestWritten> {
    let mut manifests = Vec::new();
    let finished_at = Timestamp::now();
    for (t, target) in plan.targets.iter().enumerate() {
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
                info!(sink = %sink_name, key = %key, head = %head, "manifest written");
                manifests.push(ManifestWritten {
                    sink: sink_name.to_string(),
                    key,
                    head,
                });
            }
            Err(e) => unlist_uploads(target, outcomes, e),
        }
        if let Err(e) = intent::clear(target.sink.as_ref(), &plan.run_id, labels_into(plan, t)) {
            warn!("sink {sink_name}: removing this run's intent records: {e}");
        }
    }
    manifests
}

/// The databases the plan backs up into target `t`: those whose intent
/// records this run wrote there.
fn labels_into(plan: &Plan, t: usize) -> impl Iterator<Item = &str> {
    plan.items
        .iter()
        .filter(move |i| match &i.action {
            Action::Backup(artifacts) => artifacts.iter().any(|a| a.target == t),
            Action::Skip(_) => false,
        })
        .map(|i| i.database.label.as_str())
}

/// Without a manifest nothing of this run counts in `target`'s sink: remove
/// what it uploaded there, so no unlisted artifact lingers looking like a
/// backup (and filling the disk), and fail the databases that had.
fn unlist_uploads(target: &Target, outcomes: &mut [Outcome], e: AppendError) {
    let sink_name = target.sink.name();
    let e = std::sync::Arc::new(e);
    for o in outcomes.iter_mut() {
        if o.written.iter().any(|(s, _)| s == sink_name) {
            o.errors.push(BackupError::Manifest {
                sink: sink_name.to_string(),
                error: e.clone(),
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
}

/// How often a long-lived process (one that keeps its catalog views, see
/// [`crate::manifest::view::memo`]) sweeps a sink for partial uploads.
/// A local sink's sweep walks every object, which a daemon at one run a
/// second would pay every second for a tree that only grows. A leftover
/// partial never looks like a backup, so finding it later costs only its
/// space for a while.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether `sink` is due for a sweep of partial uploads and of the objects
/// of interrupted runs: always in a process that does not keep views, else
/// once per [`SWEEP_EVERY`]. Intent records wait [`intent::GRACE`] (a day)
/// before they are acted on, and listing them and the checkpoints cost two
/// requests a run.
fn sweep_due(sink: &dyn crate::sink::Sink) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    static SWEPT: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    if !crate::manifest::view::memo::enabled() {
        return true;
    }
    let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
    let swept = swept.get_or_insert_with(HashMap::new);
    let id = crate::manifest::view::memo::id(sink);
    let now = Instant::now();
    if swept
        .get(&id)
        .is_some_and(|at| now.duration_since(*at) < SWEEP_EVERY)
    {
        return false;
    }
    swept.insert(id, now);
    true
}

fn clean_leftovers(targets: &[Target], scratch: &Path) {
    for t in targets.iter().filter(|t| sweep_due(t.sink.as_ref())) {
        let swept = t.sink.clean_incomplete();
        match swept {
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
    let incremental = db.incremental && artifacts.iter().any(|a| !targets[a.target].cold_only);
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
