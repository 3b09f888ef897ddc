//! `sqlite-backup list`.

use std::collections::BTreeSet;

use anyhow::Result;
use backup_config::Config;
use backup_core::adopt::TimeFrom;
use backup_core::manifest::Listed;
use backup_core::sink::Placement;
use backup_core::source::{self, Source};
use jiff::Timestamp;

use crate::Exit;
use crate::args::{Cli, ListArgs};
use crate::output::{Table, age, size, time};
use crate::settings;

/// The tier a listed backup is in now: local ones are hot until `hot_days`,
/// then warm; the cold folder is cold; object storage is named by its sink.
pub fn tier(l: &Listed, hot_days: u32, now: Timestamp) -> String {
    match l.placement {
        Placement::Local => {
            let days = now.duration_since(l.entry.snapshot_at).as_hours() / 24;
            if days < i64::from(hot_days) {
                "hot"
            } else {
                "warm"
            }
            .into()
        }
        Placement::Cold => "cold".into(),
        Placement::Remote => l.sink.clone(),
    }
}

/// `host:/path`, as `--source` takes it.
fn source_of(l: &Listed) -> String {
    Source::of(&l.entry).to_string()
}

fn chain_depth(l: &Listed) -> u32 {
    l.entry.pages.as_ref().map_or(0, |m| m.chain_depth)
}

/// What this snapshot added to the sink: an incremental one shares the
/// packs of those before it.
/// `full`, `incr N` at chain depth N, or `adopted, <where its time came
/// from>` for a backup another tool made.
fn kind(l: &Listed) -> String {
    if let Some(a) = &l.entry.adopted {
        return match a.time_from {
            TimeFrom::Name => "adopted, time from name",
            TimeFrom::NameDate => "adopted, date from name",
            TimeFrom::Modified => "adopted, time from mtime",
        }
        .into();
    }
    match chain_depth(l) {
        0 => "full".into(),
        n => format!("incr {n}"),
    }
}

/// This host's own backups, unless `--all-sources` or `--source`; says on
/// stderr how many of other sources it hides (stdout stays the table or
/// the JSON asked for).
fn keep_sources(all: &mut Vec<Listed>, config: &Config, args: &ListArgs, quiet: bool) {
    let before = all.len();
    if let Some(name) = &args.source {
        all.retain(|l| source::is_named(name, &l.entry));
        return;
    }
    if !args.all_sources {
        let own = settings::Own::new(config);
        all.retain(|l| own.owns(&l.entry));
    }
    if all.len() < before && !quiet {
        eprintln!(
            "note: {} backup(s) of other machines or files in these sinks are not shown \
             (list --all-sources shows them)",
            before - all.len()
        );
    }
}

pub fn run(cli: &Cli, args: &ListArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    settings::select(&config, &args.labels)?;
    let (mut all, problems) = settings::backups(&config)?.list();
    if !args.labels.is_empty() {
        all.retain(|x| args.labels.contains(&x.entry.label));
    }
    for p in &problems {
        tracing::warn!("{p}");
    }
    keep_sources(&mut all, &config, args, cli.quiet);
    let sources: BTreeSet<String> = all.iter().map(source_of).collect();
    let now = Timestamp::now();
    if args.json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|l| {
                serde_json::json!({
                    "label": l.entry.label,
                    "id": l.run_id,
                    "sink": l.sink,
                    "tier": tier(l, config.retention.hot_days, now),
                    "snapshot_at": l.entry.snapshot_at.to_string(),
                    // As the table prints it; `restore --at` takes it back.
                    "taken": time(l.entry.snapshot_at),
                    "tag": l.entry.tag,
                    "key": l.entry.key,
                    "size": l.entry.size,
                    "db_size": l.entry.db_size,
                    "sha256": l.entry.sha256,
                    "verified_with": l.entry.verified_with,
                    "row_counts": l.entry.row_counts,
                    "encrypted_to": l.entry.encrypted_to,
                    "kind": if l.entry.adopted.is_some() {
                        "adopted"
                    } else if chain_depth(l) > 0 {
                        "incremental"
                    } else {
                        "full"
                    },
                    "adopted": l.entry.adopted.as_ref().map(|a| serde_json::json!({
                        "time_from": a.time_from,
                    })),
                    "stored_bytes": l.entry.stored_bytes(),
                    "chain_depth": chain_depth(l),
                    "source": source_of(l),
                    "host": l.entry.host,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else if all.is_empty() {
        outln!("No backups recorded yet. Run `sqlite-backup backup`.");
    } else {
        let several = sources.len() > 1;
        let mut headers = vec!["LABEL"];
        if several {
            headers.push("SOURCE");
        }
        headers.extend([
            "TAKEN (UTC)",
            "AGE",
            "TAG",
            "TIER",
            "SINK",
            "KIND",
            "STORED",
            "VERIFIED",
            "ENCRYPTED TO",
            "ID",
            "KEY",
        ]);
        let mut t = Table::new(&headers);
        for l in &all {
            let mut row = vec![l.entry.label.clone()];
            if several {
                row.push(source_of(l));
            }
            row.extend([
                time(l.entry.snapshot_at),
                age(l.entry.snapshot_at, now),
                l.entry.tag.clone().unwrap_or_else(|| "-".into()),
                tier(l, config.retention.hot_days, now),
                l.sink.clone(),
                kind(l),
                size(l.entry.stored_bytes()),
                l.entry.verified_with.to_string(),
                if l.entry.encrypted_to.is_empty() {
                    "-".into()
                } else {
                    l.entry.encrypted_to.join(",")
                },
                l.run_id.clone(),
                l.entry.key.clone(),
            ]);
            t.row(row);
        }
        out!("{t}");
        let dated = |l: &&Listed| {
            l.entry
                .adopted
                .as_ref()
                .is_some_and(|a| a.time_from == TimeFrom::NameDate)
        };
        if all.iter().any(|l| dated(&l)) {
            outln!(
                "note: a backup adopted with only a date in its name (date from name) is shown at \
                 00:00 UTC that day; it may hold any time of that day, so its time is a lower bound."
            );
        }
    }
    Ok(if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}
