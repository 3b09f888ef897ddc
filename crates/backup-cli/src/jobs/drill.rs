//! The drill job: restore drills ([`backup_core::drill`]) of the
//! configured databases under the run lock, recorded in the state file (own
//! failure streak and alerts) and in the metrics. `drill` and `daemon`
//! call it.
//!
//! A drill holds the run lock like a backup: it writes the state file, and
//! a prune running meanwhile could delete the artifact being restored.

use anyhow::Result;
use backup_config::{Config, DatabaseConfig};
use backup_core::drill::{self, SinkDrill};
use backup_core::sink::Sink;
use backup_core::source::Scope;
use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::alerts;
use crate::history;
use crate::settings::{self, UsageError};
use crate::state::{self, Event, State};

/// One drill of several databases.
#[derive(Debug)]
pub struct DrillReport {
    /// `drill-<UTC time>`.
    pub drill_id: String,
    /// Per database: its per-sink results (empty: nothing to drill).
    pub databases: Vec<(String, Vec<SinkDrill>)>,
}

impl DrillReport {
    /// Every database had something to drill and every drill passed.
    pub fn ok(&self) -> bool {
        self.databases
            .iter()
            .all(|(_, sinks)| !sinks.is_empty() && sinks.iter().all(SinkDrill::ok))
    }
}

/// Drill `databases` (all sinks, or only `from`; their own source's
/// snapshots unless `source` names another), holding the run lock, then
/// record the results and send the alerts they call for.
pub fn run_drill(
    config: &Config,
    databases: &[DatabaseConfig],
    from: Option<&str>,
    source: &Scope,
    identities: Option<backup_core::encryption::Identities>,
) -> Result<DrillReport> {
    let backups = settings::backups(config)?;
    let refs: Vec<&dyn Sink> = backups.sinks().collect();
    if let Some(from) = from {
        backup_core::restore::check_sink_name(from, &refs)
            .map_err(|e| UsageError(e.to_string()))?;
    }
    let _lock = crate::lock::take_run_lock(config)?;
    let drill_id = format!("drill-{}", Timestamp::now().strftime("%Y%m%dT%H%M%SZ"));
    info!(id = %drill_id, databases = databases.len(), "drill start");
    // One read of every sink's catalog for all databases.
    let (catalog, problems) = backups.list();
    for p in &problems {
        warn!("catalog: {p}");
    }
    let mut report = DrillReport {
        drill_id,
        databases: Vec::new(),
    };
    for d in databases {
        let options = drill::Options {
            from: from.map(str::to_string),
            post_restore: d
                .post_restore
                .clone()
                .filter(|_| d.drill_post_restore)
                .map(|c| crate::shell::post_restore_hook(c, true)),
            identities: identities.clone(),
            source: source.clone(),
            ..drill::Options::default()
        };
        let label = d.database.label.clone();
        let sinks = drill::run(&catalog, &d.database, &refs, &options);
        if sinks.is_empty() {
            match backup_core::source::select(&catalog, &d.database, source) {
                Err(e) => error!(label = %label, error = %e, "drill failed"),
                Ok(_) => error!(
                    label = %label,
                    "drill failed: no backup of it is listed in any sink drilled"
                ),
            }
        }
        for s in &sinks {
            match s.errors().map(|e| e.to_string()).collect::<Vec<_>>() {
                errors if errors.is_empty() => info!(
                    label = %label,
                    sink = %s.sink,
                    snapshots = s.drilled.len(),
                    rto_ms = s.rto().map_or(0, |d| d.as_millis() as u64),
                    "drill ok"
                ),
                errors => error!(
                    label = %label,
                    sink = %s.sink,
                    error = %errors.join("; "),
                    "drill FAILED"
                ),
            }
        }
        report.databases.push((label, sinks));
    }
    record(config, &report);
    Ok(report)
}

/// The state file's record of one database's drill.
fn to_state(drill_id: &str, sinks: &[SinkDrill]) -> state::DrillRun {
    let mut out: Vec<state::SinkDrillRecord> = sinks
        .iter()
        .map(|s| {
            let errors: Vec<String> = s.errors().map(|e| e.to_string()).collect();
            state::SinkDrillRecord {
                sink: s.sink.clone(),
                snapshots: s.drilled.iter().map(|d| d.listed.run_id.clone()).collect(),
                rto_ms: s.rto().map(|d| d.as_millis() as u64),
                error: (!errors.is_empty()).then(|| errors.join("; ")),
            }
        })
        .collect();
    if out.is_empty() {
        // Nothing restorable is a failed drill, not a skipped one.
        out.push(state::SinkDrillRecord {
            sink: "-".into(),
            snapshots: vec![],
            rto_ms: None,
            error: Some("no backup of it is listed in any sink".into()),
        });
    }
    state::DrillRun {
        at: Timestamp::now(),
        drill_id: drill_id.to_string(),
        sinks: out,
    }
}

/// Record each database's drill in the state file, alert, write metrics.
fn record(config: &Config, report: &DrillReport) {
    let (mut state, problem) = State::load_or_recover(&config.state_dir);
    if let Some(p) = problem {
        warn!("{p}; failure counters start again from zero");
    }
    let threshold = config.alerts.as_ref().map_or(3, |a| a.after_failures);
    let mut events = Vec::new();
    for (label, sinks) in &report.databases {
        let run = to_state(&report.drill_id, sinks);
        history::append(
            &config.state_dir,
            label,
            &[history::Line::Drill(history::Drill {
                at: run.at,
                ok: run.error().is_none(),
                rto_ms: run.sinks.iter().filter_map(|s| s.rto_ms).max(),
            })],
        );
        if let Some(event) = state.database(label).record_drill(run, threshold) {
            events.push((label.clone(), event));
        }
    }
    state.save_logged(&config.state_dir);
    let mut undelivered = false;
    for (label, event) in &events {
        match event {
            Event::Alert { failures, error } => error!(
                label = %label,
                drill_failures = failures,
                error = %error,
                "alert: restore drill failed {failures} times in a row"
            ),
            Event::Recovery { failures } => {
                info!(
                    label = %label,
                    drill_failures = failures,
                    "recovery: restore drill passed again"
                )
            }
        }
        let notice = alerts::Notice {
            job: alerts::Job::Drill,
            label,
            event,
            run_id: &report.drill_id,
            config: &config.file,
        };
        if !alerts::send(config.alerts.as_ref(), &notice) && matches!(event, Event::Alert { .. }) {
            state.database(label).drill.alerted = false;
            undelivered = true;
        }
    }
    if undelivered {
        state.save_logged(&config.state_dir);
    }
    crate::metrics::write_textfile(config, &state);
}
