//! `sqlite-backup backup`.

use anyhow::Result;
use backup_core::config::Config;
use backup_core::pipeline::{self, Action, Plan, RunReport};

use crate::Exit;
use crate::args::{BackupArgs, Cli, TierArg};
use crate::output::{Table, size};
use crate::settings;

pub fn run(cli: &Cli, args: &BackupArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let databases = settings::select(&config, &args.labels)?;
    let (plan, report) = run_backup(
        &config,
        &databases,
        args.tag.clone(),
        args.tier == Some(TierArg::Cold),
        args.dry_run,
    )?;
    let Some(report) = report else {
        print_plan(&plan, &config);
        return Ok(Exit::Ok);
    };
    print_report(&report);
    Ok(if report.failed_count() > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// Plan and (unless `dry_run`) execute a backup of `databases`.
pub fn run_backup(
    config: &Config,
    databases: &[backup_core::config::Database],
    tag: Option<String>,
    cold: bool,
    dry_run: bool,
) -> Result<(Plan, Option<RunReport>)> {
    let targets = settings::targets(config)?;
    let opts = settings::options(config, tag, cold)?;
    let plan = pipeline::plan(databases, &targets, &opts, jiff::Timestamp::now());
    if dry_run {
        return Ok((plan, None));
    }
    let report = pipeline::execute(&plan, &targets, &opts);
    Ok((plan, Some(report)))
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
            ("FAILED", o.errors.join("; "))
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
    for (sink, _, head) in &report.manifests {
        println!("Catalog head ({sink}): {head}");
    }
}
