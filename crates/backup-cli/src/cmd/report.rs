//! `sqlite-backup report --html FILE`: one self-contained page (no scripts,
//! no outside resources) with each database's health, its newest backup,
//! the last drill, and the history of backups in every sink, read from the
//! catalogs and the state file. maud escapes every value it inserts.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use backup_config::Config;
use backup_core::manifest::Listed;
use jiff::Timestamp;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::Exit;
use crate::args::{Cli, ReportArgs};
use crate::health::Health;
use crate::output::{age, size, time};
use crate::settings;
use crate::state::{DbState, State};

/// Backups shown per database in the history table.
const HISTORY: usize = 30;

pub fn run(cli: &Cli, args: &ReportArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let (mut catalog, problems) = settings::backups(&config)?.list();
    let own = settings::Own::new(&config);
    catalog.retain(|l| own.owns(&l.entry));
    let (state, _) = State::load_or_recover(&config.state_dir);
    let page = render(&config, &catalog, &problems, &state, Timestamp::now());
    backup_core::fsutil::atomic_write_mode(&args.html, page.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", args.html.display()))?;
    outln!("Report written to {}", args.html.display());
    Ok(Exit::Ok)
}

const STYLE: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d2330; background: #f7f8fa; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; } h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; }
.meta { color: #5b6475; margin-bottom: 1.5rem; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0001; }
th, td { padding: .35rem .7rem; text-align: left; border-bottom: 1px solid #e6e8ee; }
th { background: #eef0f5; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #107a3a; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; } .warn { color: #a15c00; }
.bars { display: flex; align-items: flex-end; gap: 3px; height: 80px; margin: .5rem 0 1rem; }
.bars div { width: 14px; background: #5b7fd6; border-radius: 2px 2px 0 0; }
";

fn render(
    config: &Config,
    catalog: &[Listed],
    problems: &[String],
    state: &State,
    now: Timestamp,
) -> String {
    let mut by_label: BTreeMap<&str, Vec<&Listed>> = BTreeMap::new();
    for l in catalog {
        by_label.entry(l.entry.label.as_str()).or_default().push(l);
    }
    let empty = DbState::default();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "sqlite-backup report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "sqlite-backup report" }
                div.meta { "Generated " (time(now)) " from " (config.file.display().to_string()) }
                @if !problems.is_empty() {
                    p.bad { "Catalog problems: " (problems.join("; ")) }
                }
                table {
                    tr { th { "Database" } th { "Health" } th { "Newest backup" } th { "Age" }
                         th { "Size" } th { "Sinks" } th { "Failures" } th { "Last drill" } }
                    @for d in &config.databases {
                        @let label = d.database.label.as_str();
                        @let s = state.databases.get(label).unwrap_or(&empty);
                        @let newest = by_label.get(label).and_then(|v| v.first());
                        tr {
                            td { (label) }
                            td { (health(newest.copied(), s, config.max_age_hours, now)) }
                            td { (newest.map_or("never".into(), |l| time(l.entry.snapshot_at))) }
                            td { (newest.map_or("-".into(), |l| age(l.entry.snapshot_at, now))) }
                            td.num { (newest.map_or("-".into(), |l| size(l.entry.size))) }
                            td { (sinks_of(by_label.get(label), newest.copied())) }
                            td.num { (s.consecutive_failures) }
                            td { (drill(s)) }
                        }
                    }
                }
                @for (label, list) in &by_label {
                    h2 { (label) }
                    (bars(list))
                    table {
                        tr { th { "Taken (UTC)" } th { "Tag" } th { "Sink" } th { "Size" }
                             th { "Database" } th { "Checked" } th { "Key" } }
                        @for l in list.iter().take(HISTORY) {
                            tr {
                                td { (time(l.entry.snapshot_at)) }
                                td { (l.entry.tag.as_deref().unwrap_or("-")) }
                                td { (l.sink) }
                                td.num { (size(l.entry.size)) }
                                td.num { (size(l.entry.db_size)) }
                                td { (l.entry.verified_with.to_string()) }
                                td { (l.entry.key) }
                            }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

fn health(newest: Option<&Listed>, s: &DbState, max_age_hours: u32, now: Timestamp) -> Markup {
    let h = crate::health::health(
        newest.map(|l| l.entry.snapshot_at),
        s.consecutive_failures,
        max_age_hours,
        now,
    );
    let class = match h {
        Health::Ok => "ok",
        Health::Stale => "warn",
        Health::Failing | Health::Never => "bad",
    };
    html! { span class=(class) { (h.as_str()) } }
}

fn sinks_of(list: Option<&Vec<&Listed>>, newest: Option<&Listed>) -> String {
    let Some(newest) = newest else {
        return "-".into();
    };
    let mut names: Vec<&str> = list
        .into_iter()
        .flatten()
        .filter(|l| l.run_id == newest.run_id)
        .map(|l| l.sink.as_str())
        .collect();
    names.dedup();
    names.join(", ")
}

fn drill(s: &DbState) -> Markup {
    html! {
        @match &s.drill.last {
            None => { "never" }
            Some(d) => {
                @let failed = d.sinks.iter().any(|x| x.error.is_some());
                @let rto = d.sinks.iter().filter_map(|x| x.rto_ms).max();
                @if failed { span.bad { "failed" } } @else { span.ok { "passed" } }
                " " (time(d.at))
                @if let Some(ms) = rto { " (RTO " (ms) " ms)" }
            }
        }
    }
}

/// Artifact sizes, oldest left, as plain CSS bars (no script, no image).
fn bars(list: &[&Listed]) -> Markup {
    let shown: Vec<&&Listed> = list.iter().take(HISTORY).collect();
    let max = shown.iter().map(|l| l.entry.size).max().unwrap_or(1).max(1);
    html! {
        div.bars title="artifact size per backup, oldest left" {
            @for l in shown.iter().rev() {
                @let pct = (l.entry.size * 100 / max).max(2);
                div style=(format!("height:{pct}%")) title=(format!("{} {}", time(l.entry.snapshot_at), size(l.entry.size))) {}
            }
        }
    }
}
