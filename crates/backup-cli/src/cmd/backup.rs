//! `sqlite-backup backup`, and the one place every real run goes through
//! ([`run_backup_with`]): run lock, pipeline, state file, alerts. `backup`,
//! `daemon` and `demo` all call it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::state::{Event, RunResult, State};
use anyhow::{Context, Result};
use backup_config::{Config, DatabaseConfig};
use backup_core::pipeline::{self, Action, Plan, RunReport};
use tracing::{error, info, warn};

use crate::Exit;
use crate::alerts;
use crate::args::{BackupArgs, Cli, TierArg};
use crate::output::{Table, joined, size};
use crate::progress::{self, CliObserver};
use crate::settings;

pub fn run(cli: &Cli, args: &BackupArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let databases = settings::select(&config, &args.labels)?;
    // SIGINT / SIGTERM stop the run as in the daemon: the database in
    // flight is abandoned cleanly (its partial files removed, no manifest
    // names it) instead of the process dying mid-write.
    let cancel = Arc::new(AtomicBool::new(false));
    let signal = on_signal(cancel.clone())?;
    let (plan, report) = run_backup_with(
        &config,
        &databases,
        args.tag.clone(),
        args.tier == Some(TierArg::Cold),
        args.dry_run,
        &RunControl {
            progress: progress::wanted(cli.quiet),
            cancel: Some(cancel),
        },
    )?;
    let Some(report) = report else {
        print_plan(&plan, &config);
        return Ok(Exit::Ok);
    };
    print_report(&report);
    if let Some(name) = signal.get() {
        println!(
            "Interrupted by {name}: the database in flight was abandoned, nothing incomplete was kept."
        );
        return Ok(Exit::Failed);
    }
    Ok(if report.failed_count() > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// Watch for SIGINT / SIGTERM on a thread of its own; on the first one,
/// set `cancel` and record the signal's name.
fn on_signal(cancel: Arc<AtomicBool>) -> Result<Arc<OnceLock<&'static str>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    // Installed here, before the run starts, so no signal is missed.
    let signals = {
        let _in_runtime = runtime.enter();
        crate::signals::Signals::install().context("installing signal handlers")?
    };
    let received = Arc::new(OnceLock::new());
    let seen = received.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let name = runtime.block_on(signals.recv());
            warn!("received {name}: stopping; nothing incomplete is kept");
            let _ = seen.set(name);
            cancel.store(true, Ordering::SeqCst);
        })
        .context("starting the signal watcher")?;
    Ok(received)
}

/// How a run is carried out beyond what the config says.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Draw progress bars for large databases.
    pub progress: bool,
    /// Set to true to stop the run cleanly (the database in flight is
    /// abandoned, nothing incomplete is stored).
    pub cancel: Option<Arc<AtomicBool>>,
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
    let targets = settings::targets(config)?;
    let opts = settings::options(config, databases, tag, cold)?;
    let engine_dbs: Vec<backup_core::Database> =
        databases.iter().map(|d| d.database.clone()).collect();
    if dry_run {
        let plan = pipeline::plan(&engine_dbs, &targets, &opts, jiff::Timestamp::now());
        return Ok((plan, None));
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
    let plan = pipeline::plan(&engine_dbs, &targets, &opts, jiff::Timestamp::now());
    let report = pipeline::execute(&plan, &observer);
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
                "alert label={label} failures={failures}: backup failed {failures} runs in a row: {error}"
            ),
            Event::Recovery { failures } => {
                info!("recovery label={label} failures={failures}: backup succeeded again")
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

fn print_plan(plan: &Plan, config: &Config) {
    println!("Dry run: nothing was snapshotted or written.");
    println!("Run {} would write:", plan.run_id);
    let targets = settings::targets(config).unwrap_or_default();
    for item in &plan.items {
        match &item.action {
            Action::Skip(reason) => println!("  {}: skip ({reason})", item.database.label),
            Action::Backup(arts) => {
                println!(
                    "  {} <- {}",
                    item.database.label,
                    item.database.path.display()
                );
                for a in arts {
                    let loc = targets
                        .get(a.target)
                        .map(|t| t.sink.location())
                        .unwrap_or_default();
                    println!("    {:<6} {}/{}", a.sink, loc.trim_end_matches('/'), a.key);
                    println!(
                        "    {:<6} {}/{}",
                        "",
                        loc.trim_end_matches('/'),
                        a.sidecar_key
                    );
                }
            }
        }
    }
    println!(
        "Expected objects: {} (artifact + sidecar per sink and database, a manifest and its sidecar per sink)",
        plan.expected_objects()
    );
}

fn print_report(report: &RunReport) {
    let mut t = Table::new(&["LABEL", "RESULT", "SIZE", "SINKS", "DETAIL"]);
    for o in &report.outcomes {
        let (result, detail) = if let Some(reason) = &o.skipped {
            ("skipped", reason.clone())
        } else if o.failed() {
            ("FAILED", joined(&o.errors))
        } else {
            ("ok", String::new())
        };
        t.row(vec![
            o.label.clone(),
            result.into(),
            o.written
                .first()
                .map(|(_, e)| size(e.size))
                .unwrap_or_default(),
            o.written
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            detail,
        ]);
    }
    print!("{t}");
    println!(
        "Run {}: {} ok, {} failed, objects written {}/{} expected.",
        report.run_id,
        report.ok_count(),
        report.failed_count(),
        report.written_objects,
        report.expected_objects
    );
    for m in &report.manifests {
        let (sink, head) = (&m.sink, &m.head);
        println!("Catalog head ({sink}): {head}");
    }
}
