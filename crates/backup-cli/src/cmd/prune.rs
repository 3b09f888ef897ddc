//! `sqlite-backup prune`.

use anyhow::Result;
use backup_core::prune::{self, PrunePlan, PruneReport, packs};
use backup_core::sink::Sink;

use crate::Exit;
use crate::args::{Cli, PruneArgs};
use crate::output::{Table, size, time};
use crate::settings;

pub fn run(cli: &Cli, args: &PruneArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let labels = args.labels.clone();
    settings::select(&config, &labels)?;
    let sinks = settings::sinks(&config)?;
    let refs: Vec<&dyn Sink> = sinks.iter().map(|s| s.as_ref()).collect();
    let plan = plan(&config, &refs, &labels);
    if !args.json {
        out!("{}", plan_table(&plan));
    }
    if args.dry_run {
        match args.json {
            true => outln!("{}", serde_json::to_string_pretty(&json(&plan, None))?),
            false => {
                out!("{}", packs_preview(&plan, &refs));
                outln!("Dry run: nothing was deleted.");
            }
        }
        return Ok(if plan.skipped.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    let report = prune::apply(&plan, &refs);
    match args.json {
        true => outln!(
            "{}",
            serde_json::to_string_pretty(&json(&plan, Some(&report)))?
        ),
        false => out!("{}", report_text(&report)),
    }
    record(&config, &plan, &report);
    Ok(if report.ok() && plan.skipped.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// What the policy keeps and deletes of `labels` (all when empty) in `sinks`.
fn plan(config: &backup_config::Config, sinks: &[&dyn Sink], labels: &[String]) -> PrunePlan {
    // Each database's own policy; catalogued labels no longer configured get the global one.
    let policy_for = |label: &str| {
        config.database(label).map_or_else(
            || config.retention.clone(),
            |d| d.database.retention.clone(),
        )
    };
    // Only what this machine wrote: hosts sharing a sink prune their own.
    let host = config.host_name();
    prune::plan_per_label(
        sinks,
        labels,
        Some(&host),
        jiff::Timestamp::now(),
        &config.retention,
        &policy_for,
    )
}

/// A prune of every database, as `prune` does it, for the daemon's
/// `--prune-every`: logged instead of printed; true when nothing failed.
pub fn prune_logged(config: &backup_config::Config) -> Result<bool> {
    let sinks = settings::sinks(config)?;
    let refs: Vec<&dyn Sink> = sinks.iter().map(|s| s.as_ref()).collect();
    let plan = plan(config, &refs, &[]);
    let report = prune::apply(&plan, &refs);
    record(config, &plan, &report);
    for s in &report.sinks {
        for e in s.errors.iter().chain(&s.packs.errors) {
            tracing::error!("prune in sink {}: {e}", s.sink);
        }
    }
    for s in &plan.skipped {
        tracing::warn!("prune left sink {} untouched: {}", s.sink, s.reason);
    }
    let ok = report.ok() && plan.skipped.is_empty();
    tracing::info!(
        kept = plan.keep_count(),
        deleted = report.deleted_count(),
        packs_freed = report.collected_count(),
        bytes_freed = report.bytes(),
        ok,
        "prune done"
    );
    Ok(ok)
}

/// Count the deletions in the state file (the metrics' prune counter).
/// Taken under the run lock, as every state write is; when a run holds it,
/// the counts are lost with a warning rather than blocking the prune.
fn record(config: &backup_config::Config, plan: &PrunePlan, report: &PruneReport) {
    use crate::lock::FileLock;
    let lock = FileLock::run(&config.state_dir);
    let Ok(_lock) = lock.map_err(|e| {
        tracing::warn!("prune deletions not counted in the state file: {e}");
    }) else {
        return;
    };
    let (mut state, _) = crate::state::State::load_or_recover(&config.state_dir);
    for s in &report.sinks {
        let mut per_label: std::collections::BTreeMap<&str, u64> = Default::default();
        for p in &s.deleted {
            // The manifest's record names the key; the plan knows its database.
            if let Some(i) = plan
                .items
                .iter()
                .find(|i| i.sink == s.sink && i.entry.key == p.key)
            {
                *per_label.entry(i.entry.label.as_str()).or_default() += 1;
            }
        }
        for (label, n) in per_label {
            state.database(label).record_pruned(&s.sink, n);
        }
    }
    state.save_logged(&config.state_dir);
    crate::metrics::write_textfile(config, &state);
}

/// The `--dry-run` table: every snapshot, what happens to it and why.
fn plan_table(plan: &PrunePlan) -> String {
    let mut t = Table::new(&[
        "LABEL", "SINK", "SNAPSHOT", "TAG", "SIZE", "ACTION", "REASON",
    ]);
    t.align_right(4);
    for i in &plan.items {
        t.row(vec![
            i.entry.label.clone(),
            i.sink.clone(),
            time(i.entry.snapshot_at),
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

/// The second phase as it stands before this prune: packs of snapshots
/// already pruned that nothing needs.
fn packs_preview(plan: &PrunePlan, sinks: &[&dyn Sink]) -> String {
    let grace = plan.policy.pack_grace;
    let mut out = String::new();
    for sink in sinks {
        let Ok(view) = backup_core::manifest::view::view(*sink) else {
            continue;
        };
        if !view.problems.is_empty() {
            continue;
        }
        let g = packs::find(&view.state, plan.now, grace);
        if !g.ready.is_empty() {
            out += &format!(
                "{}: {} object(s) of pruned incremental snapshots ({}) would be freed\n",
                sink.name(),
                g.ready.len(),
                size(g.ready_bytes())
            );
        }
        out += &waiting_line(sink.name(), g.waiting.len(), g.next_ready(grace));
    }
    out
}

fn waiting_line(sink: &str, waiting: usize, next: Option<jiff::Timestamp>) -> String {
    match (waiting, next) {
        (0, _) => String::new(),
        (n, Some(t)) => format!(
            "{sink}: {n} object(s) of pruned incremental snapshots wait for pack_grace (the first until {})\n",
            t.strftime("%Y-%m-%d %H:%M:%S UTC")
        ),
        (n, None) => {
            format!("{sink}: {n} object(s) of pruned incremental snapshots wait for pack_grace\n")
        }
    }
}

/// What a prune did, per sink.
fn report_text(report: &PruneReport) -> String {
    if report.sinks.is_empty() {
        return "nothing to prune\n".into();
    }
    let mut out = String::new();
    // One line per phase that did something: what went, and its record.
    let done = |sink: &str, what: String, manifest: &Option<(String, String)>| {
        let recorded = manifest
            .as_ref()
            .map(|(key, _)| format!(", recorded in {key}"))
            .unwrap_or_default();
        format!("{sink}: {what}{recorded}\n")
    };
    for s in &report.sinks {
        let p = &s.packs;
        if !s.deleted.is_empty() || !s.errors.is_empty() || p == &Default::default() {
            let what = format!(
                "deleted {} snapshot(s), {} freed",
                s.deleted.len(),
                size(s.bytes)
            );
            out += &done(&s.sink, what, &s.manifest);
        }
        if !p.deleted.is_empty() {
            let what = format!(
                "freed {} pack object(s) of pruned incremental snapshots, {}",
                p.deleted.len(),
                size(p.bytes)
            );
            out += &done(&s.sink, what, &p.manifest);
        }
        out += &waiting_line(&s.sink, p.waiting, p.next_ready);
        for e in s.errors.iter().chain(&p.errors) {
            out += &format!("  error: {e}\n");
        }
    }
    out
}

/// `prune --json`: the plan (every snapshot, its action and reason) and,
/// unless a dry run, what each sink did.
fn json(plan: &PrunePlan, report: Option<&PruneReport>) -> serde_json::Value {
    let snapshots: Vec<serde_json::Value> = plan
        .items
        .iter()
        .map(|i| {
            serde_json::json!({
                "label": i.entry.label,
                "sink": i.sink,
                "run_id": i.run_id,
                "key": i.entry.key,
                "snapshot_at": i.entry.snapshot_at,
                "tag": i.entry.tag,
                "size": i.entry.size,
                "action": i.decision.action().to_string(),
                "reason": i.decision.reason.to_string(),
            })
        })
        .collect();
    let sinks = report.map(|r| {
        r.sinks
            .iter()
            .map(|s| {
                serde_json::json!({
                    "sink": s.sink,
                    "deleted": s.deleted.iter().map(|p| &p.key).collect::<Vec<_>>(),
                    "bytes": s.bytes,
                    "manifest": s.manifest.as_ref().map(|(key, _)| key),
                    "packs_freed": s.packs.deleted,
                    "packs_bytes": s.packs.bytes,
                    "packs_waiting": s.packs.waiting,
                    "errors": s.errors.iter().chain(&s.packs.errors).collect::<Vec<_>>(),
                })
            })
            .collect::<Vec<_>>()
    });
    serde_json::json!({
        "dry_run": report.is_none(),
        "keep": plan.keep_count(),
        "delete": plan.delete_count(),
        "bytes_freed": plan.reclaimed_bytes(),
        "snapshots": snapshots,
        "skipped_sinks": plan.skipped.iter().map(|s| serde_json::json!({
            "sink": s.sink,
            "reason": s.reason,
        })).collect::<Vec<_>>(),
        "sinks": sinks,
    })
}
