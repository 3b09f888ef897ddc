//! The backup job, the one place every real run goes through: run lock,
//! pipeline, state file, alerts, metrics. `backup`, `daemon` and `demo`
//! all call it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use backup_config::{Config, DatabaseConfig};
use backup_core::pipeline::{Plan, RunReport};
use tracing::{error, info, warn};

use crate::alerts;
use crate::history;
use crate::output::joined;
use crate::progress::CliObserver;
use crate::settings;
use crate::state::{Event, RunResult, State};

/// How a run is carried out beyond what the config says.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Draw progress bars for large databases.
    pub progress: bool,
    /// Set to true to stop the run cleanly (the database in flight is
    /// abandoned, nothing incomplete is stored).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Keep incremental snapshots pinned between runs (the daemon at a
    /// short interval).
    pub held: Option<backup_core::pipeline::HeldSnapshots>,
}

/// Plan and (unless `dry_run`) execute a backup of `databases`, silently.
pub fn run_backup(
    config: &Config,
    databases: &[DatabaseConfig],
    tag: Option<String>,
    cold: bool,
    dry_run: bool,
) -> Result<(Plan, Option<RunReport>)> {
    run_backup_with(
        config,
        databases,
        tag,
        cold,
        dry_run,
        &RunControl::default(),
    )
}

/// Plan and (unless `dry_run`) execute a backup of `databases`.
///
/// A real run holds `state_dir/run.lock` throughout (another run of the
/// same config is refused with [`RunRefused`](crate::lock::RunRefused), naming the holder's pid),
/// then records each database's result in the state file and sends the
/// alerts and recovery messages that result calls for.
pub fn run_backup_with(
    config: &Config,
    databases: &[DatabaseConfig],
    tag: Option<String>,
    cold: bool,
    dry_run: bool,
    control: &RunControl,
) -> Result<(Plan, Option<RunReport>)> {
    let mut builder = settings::builder(config)?;
    if let Some(held) = &control.held {
        builder = builder.hold_snapshots(held.clone());
    }
    let backups = builder.build();
    let cold = settings::cold_labels(config, databases, tag.as_deref(), cold)?;
    let engine_dbs: Vec<backup_core::Database> =
        databases.iter().map(|d| d.database.clone()).collect();
    if dry_run {
        return Ok((backups.plan_run(&engine_dbs, tag.as_deref(), &cold)?, None));
    }
    let _lock = crate::lock::take_run_lock(config)?;
    // The local roots first, with the sinks' folder mode: the snapshot
    // scratch folder inside the local root would otherwise create it 0700.
    // A failure here shows as that sink's failure in the run.
    for sink in settings::local_sinks(config) {
        if let Err(e) = sink.ensure_root() {
            tracing::debug!("creating {}: {e}", sink.root().display());
        }
    }
    let observer = CliObserver::new(control.progress, control.cancel.clone());
    let plan = backups.plan_run(&engine_dbs, tag.as_deref(), &cold)?;
    let report = backups.execute(&plan, &observer);
    record_run(config, &report, &observer);
    Ok((plan, Some(report)))
}

/// Update the state file with a run's results and send what it calls for.
/// Problems here are logged, never fatal: the backups themselves are done.
fn record_run(config: &Config, report: &RunReport, observer: &CliObserver) {
    let (mut state, problem) = State::load_or_recover(&config.state_dir);
    if let Some(p) = problem {
        warn!("{p}; failure counters start again from zero");
    }
    let threshold = config.alerts.as_ref().map_or(3, |a| a.after_failures);
    let now = jiff::Timestamp::now();
    let mut events = Vec::new();
    for o in &report.outcomes {
        let run = RunResult {
            at: o.written.first().map_or(now, |(_, e)| e.snapshot_at),
            run_id: report.run_id.clone(),
            written: o
                .written
                .iter()
                .map(|(sink, e)| (sink.clone(), e.key.clone(), e.size))
                .collect(),
            error: (!o.errors.is_empty()).then(|| joined(&o.errors)),
            duration_ms: observer
                .duration(&o.label)
                .map_or(0, |d| d.as_millis() as u64),
            db_size: o.written.first().map(|(_, e)| e.db_size),
        };
        let first = o.written.first().map(|(_, e)| e);
        // A database skipped for not existing yet did not run.
        if first.is_some() || run.error.is_some() {
            history::append(
                &config.state_dir,
                &o.label,
                &[history::Line::Run(history::Run {
                    run: report.run_id.clone(),
                    at: now,
                    ms: run.duration_ms,
                    error: run.error.clone(),
                    snapshot_at: first.map(|e| e.snapshot_at),
                    kind: first.map(history::Kind::of),
                    stored: first.map_or(0, backup_core::manifest::Entry::stored_bytes),
                })],
            );
        }
        let db = state.database(&o.label);
        if let Some(event) = db.record(&run, threshold) {
            events.push((o.label.clone(), event));
        } else if run.error.is_some() {
            info!(
                "failure count label={} failures={} alert_after={threshold}",
                o.label, db.consecutive_failures
            );
        }
    }
    state.save_logged(&config.state_dir);
    let mut undelivered = false;
    for (label, event) in &events {
        match event {
            Event::Alert { failures, error } => error!(
                label = %label,
                failures,
                error = %error,
                "alert: backup failed {failures} runs in a row"
            ),
            Event::Recovery { failures } => {
                info!(label = %label, failures, "recovery: backup succeeded again")
            }
        }
        let notice = alerts::Notice {
            job: alerts::Job::Backup,
            label,
            event,
            run_id: &report.run_id,
            config: &config.file,
        };
        if !alerts::send(config.alerts.as_ref(), &notice) && matches!(event, Event::Alert { .. }) {
            state.database(label).alert_undelivered();
            undelivered = true;
        }
    }
    if undelivered {
        state.save_logged(&config.state_dir);
    }
    crate::metrics::write_textfile(config, &state);
}
