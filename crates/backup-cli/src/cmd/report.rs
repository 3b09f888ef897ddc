//! `sqlite-backup report --html FILE`: one self-contained page (no scripts,
//! no outside resources) with each database's health, its newest backup,
//! the last drill, charts of its runs over the last days (from the run
//! history, [`crate::history`]), and the backups each sink lists. maud
//! escapes every value it inserts; the charts come from [`crate::charts`].

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use backup_config::Config;
use backup_core::manifest::Listed;
use jiff::Timestamp;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::Exit;
use crate::args::{Cli, ReportArgs};
use crate::charts::{self, Figure, Window};
use crate::health::Health;
use crate::history::{self, Drill, History, Run};
use crate::output::{age, size, time};
use crate::settings;
use crate::state::{DbState, State};

/// Backups shown per database in the catalog table.
const HISTORY: usize = 20;
/// Days of runs the charts show.
const DAYS: i64 = 7;

pub fn run(cli: &Cli, args: &ReportArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let (mut catalog, problems) = settings::backups(&config)?.list();
    let own = settings::Own::new(&config);
    catalog.retain(|l| own.owns(&l.entry));
    let (state, _) = State::load_or_recover(&config.state_dir);
    let mut labels: Vec<&str> = config
        .databases
        .iter()
        .map(|d| d.database.label.as_str())
        .collect();
    for l in &catalog {
        if !labels.contains(&l.entry.label.as_str()) {
            labels.push(&l.entry.label);
        }
    }
    let histories: BTreeMap<String, History> = labels
        .iter()
        .map(|&label| {
            let h = history::read(&config.state_dir, label).unwrap_or_else(|e| {
                tracing::warn!(label = %label, error = %e, "run history not read");
                History::default()
            });
            (label.to_string(), h)
        })
        .collect();
    let page = render(
        &config,
        &catalog,
        &problems,
        &state,
        &histories,
        Timestamp::now(),
    );
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
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 1rem; margin: .75rem 0 1rem; }
figure { margin: 0; background: #fff; padding: .5rem; box-shadow: 0 1px 2px #0001; break-inside: avoid; }
figure svg { width: 100%; height: auto; display: block; }
figcaption { color: #3d4555; font-size: 12.5px; margin-top: .35rem; }
section { break-before: auto; }
@media print { body { background: #fff; margin: 0; } figure, table { box-shadow: none; } .charts { grid-template-columns: 1fr 1fr; } }
";

fn render(
    config: &Config,
    catalog: &[Listed],
    problems: &[String],
    state: &State,
    histories: &BTreeMap<String, History>,
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
                         th { "Stored" } th { "Sinks" } th { "Failures" } th { "Last drill" } }
                    @for d in &config.databases {
                        @let label = d.database.label.as_str();
                        @let s = state.databases.get(label).unwrap_or(&empty);
                        @let newest = by_label.get(label).and_then(|v| v.first());
                        tr {
                            td { (label) }
                            td { (health(newest.copied(), s, config.max_age_hours, now)) }
                            td { (newest.map_or("never".into(), |l| time(l.entry.snapshot_at))) }
                            td { (newest.map_or("-".into(), |l| age(l.entry.snapshot_at, now))) }
                            td.num { (newest.map_or("-".into(), |l| size(l.entry.stored_bytes()))) }
                            td { (sinks_of(by_label.get(label), newest.copied())) }
                            td.num { (s.consecutive_failures) }
                            td { (drill(s)) }
                        }
                    }
                }
                @for (label, history) in histories {
                    @let list = by_label.get(label.as_str()).map_or(&[][..], |v| v.as_slice());
                    section {
                        h2 { (label) }
                        (charts_of(history, list, state.databases.get(label).unwrap_or(&empty), config.max_age_hours, now))
                        @if !list.is_empty() {
                            table {
                                tr { th { "Taken (UTC)" } th { "Tag" } th { "Sink" } th { "Kind" } th { "Stored" }
                                     th { "Database" } th { "Checked" } th { "Key" } }
                                @for l in list.iter().take(HISTORY) {
                                    tr {
                                        td { (time(l.entry.snapshot_at)) }
                                        td { (l.entry.tag.as_deref().unwrap_or("-")) }
                                        td { (l.sink) }
                                        td { (if l.entry.adopted.is_some() { "adopted" } else { kind_name(history::Kind::of(&l.entry)) }) }
                                        td.num { (size(l.entry.stored_bytes())) }
                                        td.num { (size(l.entry.db_size)) }
                                        td { (l.entry.verified_with.to_string()) }
                                        td { (l.entry.key) }
                                    }
                                }
                            }
                            @if list.len() > HISTORY {
                                p.meta { "The newest " (HISTORY) " of " (list.len()) " listed backups; `sqlite-backup list --label " (label) "` shows all." }
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

fn kind_name(kind: history::Kind) -> &'static str {
    match kind {
        history::Kind::Full => "full",
        history::Kind::Base => "base",
        history::Kind::Incremental => "incremental",
    }
}

/// The five charts of one database over the last [`DAYS`] days. Runs come
/// from the run history, plus the catalog's entries of runs it does not
/// name (backups made before there was a history, or by the library), and
/// the page says how many those were.
fn charts_of(
    history: &History,
    listed: &[&Listed],
    s: &DbState,
    max_age_hours: u32,
    now: Timestamp,
) -> Markup {
    let in_history: std::collections::HashSet<&str> =
        history.runs.iter().map(|r| r.run.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    let mut runs: Vec<Run> = listed
        .iter()
        .filter(|l| !in_history.contains(l.run_id.as_str()) && seen.insert(l.run_id.as_str()))
        .map(|l| Run::from_entry(&l.run_id, &l.entry))
        .collect();
    runs.extend(history.runs.iter().cloned());
    runs.sort_by_key(|r| r.at);
    let last_drill: Vec<Drill>;
    let drills: &[Drill] = if history.drills.is_empty() {
        last_drill = s
            .drill
            .last
            .iter()
            .map(|d| Drill {
                at: d.at,
                ok: d.error().is_none(),
                rto_ms: d.sinks.iter().filter_map(|x| x.rto_ms).max(),
            })
            .collect();
        &last_drill
    } else {
        &history.drills
    };
    let oldest = runs
        .iter()
        .map(|r| r.at)
        .chain(drills.iter().map(|d| d.at))
        .min();
    let window = Window::ending(now, oldest, DAYS);
    let runs: Vec<&Run> = runs.iter().filter(|r| r.at >= window.from).collect();
    let from_catalog = runs
        .iter()
        .filter(|r| seen.contains(r.run.as_str()))
        .count();
    let drills: Vec<&Drill> = drills.iter().filter(|d| d.at >= window.from).collect();
    if runs.is_empty() && drills.is_empty() {
        return html! { p.meta { "No runs in the last " (DAYS) " days." } };
    }
    let figures: Vec<Figure> = vec![
        charts::timeline(&runs, &window),
        charts::stored(&runs, &window),
        charts::duration(&runs, &window),
        charts::lag(&runs, &window, max_age_hours),
        charts::drill_rto(&drills, &window),
    ];
    html! {
        @if from_catalog > 0 {
            p.meta { "Drawn from catalog entries alone: " (from_catalog) " of these runs, which the run history does not name (made before it existed, or through the library); a failure among them would not show." }
        }
        @if history.skipped > 0 {
            p.warn { (history.skipped) " unreadable lines of the run history were skipped." }
        }
        div.charts {
            @for f in &figures {
                figure {
                    (PreEscaped(&f.svg))
                    figcaption { (f.caption) }
                }
            }
        }
    }
}
