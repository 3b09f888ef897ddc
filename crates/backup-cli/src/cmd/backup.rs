//! `sqlite-backup backup`: parse, run the backup job
//! ([`crate::jobs::backup`]), print.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use backup_config::Config;
use backup_core::pipeline::{Action, Plan, RunReport};
use tracing::warn;

use crate::Exit;
use crate::args::{BackupArgs, Cli, TierArg};
use crate::jobs::backup::{RunControl, run_backup_with};
use crate::output::{Table, joined, size};
use crate::progress;
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
            held: None,
        },
    )?;
    let Some(report) = report else {
        match args.json {
            true => outln!(
                "{}",
                serde_json::to_string_pretty(&plan_json(&plan, &config))?
            ),
            false => print_plan(&plan, &config),
        }
        return Ok(Exit::Ok);
    };
    let interrupted = signal.get().copied();
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report_json(&report, interrupted))?
        );
    } else {
        print_report(&report);
    }
    if let Some(name) = interrupted {
        if !args.json {
            outln!(
                "Interrupted by {name}: the database in flight was abandoned, nothing incomplete was kept."
            );
        }
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

fn print_plan(plan: &Plan, config: &Config) {
    outln!("Dry run: nothing was snapshotted or written.");
    outln!("Run {} would write:", plan.run_id);
    let targets = settings::targets(config).unwrap_or_default();
    for item in &plan.items {
        match &item.action {
            Action::Skip(reason) => outln!("  {}: skip ({reason})", item.database.label),
            Action::Backup(arts) => {
                outln!(
                    "  {} <- {}",
                    item.database.label,
                    item.database.path.display()
                );
                for a in arts {
                    let loc = targets
                        .get(a.target)
                        .map(|t| t.sink.location())
                        .unwrap_or_default();
                    outln!("    {:<6} {}/{}", a.sink, loc.trim_end_matches('/'), a.key);
                    outln!(
                        "    {:<6} {}/{}",
                        "",
                        loc.trim_end_matches('/'),
                        a.sidecar_key
                    );
                }
            }
        }
    }
    outln!(
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
    out!("{t}");
    outln!(
        "Run {}: {} ok, {} failed, objects written {}/{} expected.",
        report.run_id,
        report.ok_count(),
        report.failed_count(),
        report.written_objects,
        report.expected_objects
    );
    for m in &report.manifests {
        let (sink, head) = (&m.sink, &m.head);
        outln!("Catalog head ({sink}): {head}");
    }
}

/// `backup --dry-run --json`.
fn plan_json(plan: &Plan, config: &Config) -> serde_json::Value {
    let targets = settings::targets(config).unwrap_or_default();
    let databases: Vec<serde_json::Value> = plan
        .items
        .iter()
        .map(|item| match &item.action {
            Action::Skip(reason) => serde_json::json!({
                "label": item.database.label,
                "action": "skip",
                "reason": reason,
            }),
            Action::Backup(arts) => serde_json::json!({
                "label": item.database.label,
                "action": "backup",
                "path": item.database.path,
                "artifacts": arts.iter().map(|a| serde_json::json!({
                    "sink": a.sink,
                    "location": targets.get(a.target).map(|t| t.sink.location()),
                    "key": a.key,
                    "sidecar_key": a.sidecar_key,
                })).collect::<Vec<_>>(),
            }),
        })
        .collect();
    serde_json::json!({
        "dry_run": true,
        "run_id": plan.run_id,
        "databases": databases,
        "expected_objects": plan.expected_objects(),
    })
}

/// `backup --json`: what `print_report` shows, with each copy's key and
/// digests.
fn report_json(report: &RunReport, interrupted: Option<&str>) -> serde_json::Value {
    let databases: Vec<serde_json::Value> = report
        .outcomes
        .iter()
        .map(|o| {
            let result = if o.skipped.is_some() {
                "skipped"
            } else if o.failed() {
                "failed"
            } else {
                "ok"
            };
            serde_json::json!({
                "label": o.label,
                "result": result,
                "skipped": o.skipped,
                "errors": o.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                "copies": o.written.iter().map(|(sink, e)| serde_json::json!({
                    "sink": sink,
                    "key": e.key,
                    "size": e.size,
                    "sha256": e.sha256,
                    "db_sha256": e.db_sha256,
                    "snapshot_at": e.snapshot_at,
                    "incremental": e.pages.is_some(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "run_id": report.run_id,
        "ok": report.ok_count(),
        "failed": report.failed_count(),
        "interrupted_by": interrupted,
        "objects_written": report.written_objects,
        "objects_expected": report.expected_objects,
        "databases": databases,
        "manifests": report.manifests.iter().map(|m| serde_json::json!({
            "sink": m.sink,
            "key": m.key,
            "head": m.head,
        })).collect::<Vec<_>>(),
    })
}
