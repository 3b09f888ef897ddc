//! `sqlite-backup prune`.

use anyhow::Result;
use backup_core::prune::{self, PrunePlan, PruneReport};
use backup_core::sink::Sink;

use crate::Exit;
use crate::args::{Cli, PruneArgs};
use crate::output::{Table, size};
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
    print!("{}", plan_table(&plan));
    if args.dry_run {
        println!("Dry run: nothing was deleted.");
        return Ok(if plan.skipped.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    let report = prune::apply(&plan, &refs);
    print!("{}", report_text(&report));
    Ok(if report.ok() && plan.skipped.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// The `--dry-run` table: every snapshot, what happens to it and why.
fn plan_table(plan: &PrunePlan) -> String {
    let mut t = Table::new(&[
        "label",
        "sink",
        "snapshot (UTC)",
        "tag",
        "size",
        "action",
        "reason",
    ]);
    t.align_right(4);
    for i in &plan.items {
        t.row(vec![
            i.entry.label.clone(),
            i.sink.clone(),
            i.entry
                .snapshot_at
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string(),
            i.entry.tag.clone().unwrap_or_else(|| "-".into()),
            size(i.entry.size),
            i.decision.action().to_string(),
            i.decision.reason.to_string(),
        ]);
    }
    let mut out = t.to_string();
    out += &format!(
        "{} snapshot(s): keep {}, delete {} ({} freed)\n",
        plan.items.len(),
        plan.keep_count(),
        plan.delete_count(),
        size(plan.reclaimed_bytes())
    );
    for s in &plan.skipped {
        out += &format!("sink {} left untouched: {}\n", s.sink, s.reason);
    }
    out
}

/// What a prune did, per sink.
fn report_text(report: &PruneReport) -> String {
    if report.sinks.is_empty() {
        return "nothing to prune\n".into();
    }
    let mut out = String::new();
    for s in &report.sinks {
        out += &format!(
            "{}: deleted {} snapshot(s), {} freed",
            s.sink,
            s.deleted.len(),
            size(s.bytes)
        );
        if let Some((key, _)) = &s.manifest {
            out += &format!(", recorded in {key}");
        }
        out.push('\n');
        for e in &s.errors {
            out += &format!("  error: {e}\n");
        }
    }
    out
}
