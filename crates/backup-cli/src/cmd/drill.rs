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
    print_report(&report);
    Ok(if report.ok() { Exit::Ok } else { Exit::Failed })
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
