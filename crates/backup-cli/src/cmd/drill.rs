//! `sqlite-backup drill`: run the drill job ([`crate::jobs::drill`]) and
//! print a table with the RTO per database and sink. Exit 1 when any drill
//! failed.

use anyhow::Result;
use backup_core::duration;
use backup_core::source::Scope;

use crate::Exit;
use crate::args::{Cli, DrillArgs};
use crate::jobs::drill::{DrillReport, run_drill};
use crate::output::Table;
use crate::settings;

pub fn run(cli: &Cli, args: &DrillArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let databases = settings::select(&config, &args.labels)?;
    let identities = settings::identities(cli.identity.as_deref(), Some(&config))?;
    let source = args.source.clone().map_or(Scope::Own, Scope::Named);
    let report = run_drill(
        &config,
        &databases,
        args.from.as_deref(),
        &source,
        identities,
    )?;
    match args.json {
        true => crate::output::json(&json(&report)),
        false => print_report(&report),
    }
    Ok(if report.ok() { Exit::Ok } else { Exit::Failed })
}

/// `drill --json`: per database and sink, each snapshot drilled, its
/// restore time and result.
fn json(report: &DrillReport) -> serde_json::Value {
    let databases: Vec<serde_json::Value> = report
        .databases
        .iter()
        .map(|(label, sinks)| {
            serde_json::json!({
                "label": label,
                "ok": !sinks.is_empty() && sinks.iter().all(|s| s.ok()),
                "sinks": sinks.iter().map(|s| serde_json::json!({
                    "sink": s.sink,
                    "ok": s.ok(),
                    "rto_seconds": s.rto().map(|d| d.as_secs_f64()),
                    "snapshots": s.drilled.iter().map(|d| serde_json::json!({
                        "run_id": d.listed.run_id,
                        "key": d.listed.entry.key,
                        "newest": d.newest,
                        "seconds": d.elapsed.as_secs_f64(),
                        "error": d.result.as_ref().err().map(|e| e.to_string()),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "drill_id": report.drill_id,
        "ok": report.ok(),
        "databases": databases,
    })
}

fn print_report(report: &DrillReport) {
    let mut t = Table::new(&["LABEL", "SINK", "RESULT", "RTO", "SNAPSHOTS", "DETAIL"]);
    for (label, sinks) in &report.databases {
        if sinks.is_empty() {
            t.row(vec![
                label.clone(),
                "-".into(),
                "FAILED".into(),
                "-".into(),
                "-".into(),
                "no backup of it is listed in any sink".into(),
            ]);
        }
        for s in sinks {
            let errors: Vec<String> = s.errors().map(|e| e.to_string()).collect();
            t.row(vec![
                label.clone(),
                s.sink.clone(),
                if errors.is_empty() { "ok" } else { "FAILED" }.into(),
                s.rto().map_or("-".into(), duration::human),
                s.drilled
                    .iter()
                    .map(|d| d.listed.run_id.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                errors.join("; "),
            ]);
        }
    }
    out!("{t}");
    outln!(
        "Drill {}: {}; the live databases were not opened.",
        report.drill_id,
        if report.ok() {
            "every backup drilled restored and passed every check"
        } else {
            "FAILED: some backups do not restore (see above)"
        }
    );
}
