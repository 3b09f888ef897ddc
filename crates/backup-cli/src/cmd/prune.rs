//! `sqlite-backup prune`.

use anyhow::Result;
use backup_core::prune;
use backup_core::sink::Sink;

use crate::Exit;
use crate::args::{Cli, PruneArgs};
use crate::settings;

pub fn run(cli: &Cli, args: &PruneArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let labels: Vec<String> = args.label.iter().cloned().collect();
    settings::select(&config, &labels)?;
    let sinks = settings::sinks(&config)?;
    let refs: Vec<&dyn Sink> = sinks.iter().map(|s| s.as_ref()).collect();
    // Each database's own policy; catalogued labels no longer configured get the global one.
    let policy_for = |label: &str| {
        config.database(label).map_or_else(
            || config.retention.clone(),
            |d| d.database.retention.clone(),
        )
    };
    let plan = prune::plan_per_label(
        &refs,
        &labels,
        jiff::Timestamp::now(),
        &config.retention,
        &policy_for,
    );
    print!("{plan}");
    if args.dry_run {
        println!("Dry run: nothing was deleted.");
        return Ok(if plan.skipped.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    let report = prune::apply(&plan, &refs);
    print!("{report}");
    Ok(if report.ok() && plan.skipped.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}
