//! `sqlite-backup status`: per configured database the last success, its
//! age, size and sinks, the failure streak and the last error, the last
//! restore drill. It reads the state file and the sinks' catalogs (the
//! manifests, as `list` does, this config's own source only), so it is
//! right when the state folder is new or a run with another state folder
//! took the newest backup, and it names any disagreement
//! between the two; `--offline` reads only the state file (no sink is
//! contacted: cheap enough for a health check every minute). Exit 1 when
//! any database's newest success is older than `max_age_hours`, or it never
//! succeeded.

use crate::lock::{FileLock, LockError};
use crate::state::{DbState, State, Success};
use anyhow::{Context, Result};
use backup_config::Config;
use backup_core::manifest::Listed;
use jiff::Timestamp;

use crate::Exit;
use crate::args::{Cli, StatusArgs};
use crate::health::{Health, health};
use crate::output::{Table, age, size, time};
use crate::settings;

pub fn run(cli: &Cli, args: &StatusArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    // A health check of nothing must not pass.
    if config.databases.is_empty() {
        return Err(settings::UsageError(format!(
            "{} configures no [[database]]: there is no backup health to report",
            config.file.display()
        ))
        .into());
    }
    if args.reset_failures {
        reset(&config)?;
    }
    let state = State::load(&config.state_dir).context("reading the state file")?;
    let catalog = if args.offline {
        None
    } else {
        Some(own_catalog(&config)?)
    };
    let now = Timestamp::now();
    let empty = DbState::default();
    let rows: Vec<Row> = config
        .databases
        .iter()
        .map(|d| {
            let label = d.database.label.as_str();
            let s = state.databases.get(label).unwrap_or(&empty);
            let (success, source, disagreement) = match &catalog {
                None => (s.last_success.clone(), "state", None),
                Some((all, problems)) => reconcile(label, s.last_success.as_ref(), all, problems),
            };
            let h = health(
                success.as_ref().map(|x| x.at),
                s.consecutive_failures,
                config.max_age_hours,
                now,
            );
            Row {
                label,
                state: s,
                success,
                source,
                disagreement,
                health: h,
            }
        })
        .collect();
    let healthy = rows.iter().all(|r| r.health == Health::Ok);
    // A warning, not unhealthy: the backups themselves are fine.
    let permissions = settings::permission_warnings(&config);
    for w in &permissions {
        tracing::warn!("{w}");
    }

    if args.json {
        let databases: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let (label, s, h) = (r.label, r.state, r.health);
                let success = r.success.as_ref();
                let failure = s.last_failure.as_ref();
                let drill = s.drill.last.as_ref();
                serde_json::json!({
                    "source": r.source,
                    "disagreement": r.disagreement,
                    "drill": drill.map(|d| serde_json::json!({
                        "at": d.at.to_string(),
                        "id": d.drill_id,
                        "ok": d.error().is_none(),
                        "error": d.error(),
                        "consecutive_failures": s.drill.consecutive_failures,
                        "rto_ms": d.sinks.iter().map(|x| (x.sink.clone(), x.rto_ms)).collect::<std::collections::BTreeMap<_, _>>(),
                    })),
                    "label": label,
                    "path": config.database(label).map(|d| d.database.path.display().to_string()),
                    "health": h.as_str(),
                    "last_success": success.map(|x| x.at.to_string()),
                    "age_seconds": success.map(|x| now.duration_since(x.at).as_secs().max(0)),
                    "run_id": success.map(|x| x.run_id.clone()),
                    "size": success.map(|x| x.size),
                    "sink": success.and_then(|x| x.sinks.first().cloned()),
                    "sinks": success.map(|x| x.sinks.clone()).unwrap_or_default(),
                    "key": success.map(|x| x.key.clone()),
                    "consecutive_failures": s.consecutive_failures,
                    "alerted": s.alerted,
                    "last_failure": failure.map(|x| x.at.to_string()),
                    "last_error": failure.map(|x| x.error.clone()),
                })
            })
            .collect();
        let out = serde_json::json!({
            "checked_at": now.to_string(),
            "max_age_hours": config.max_age_hours,
            "healthy": healthy,
            "state_file": State::path(&config.state_dir).display().to_string(),
            "catalog_read": catalog.is_some(),
            "databases": databases,
            "permission_warnings": permissions,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&config, &rows, now);
    }
    Ok(if healthy { Exit::Ok } else { Exit::Failed })
}

/// One database's line of `status`.
struct Row<'a> {
    label: &'a str,
    state: &'a DbState,
    /// The newest success, from whichever source knows the newer one.
    success: Option<Success>,
    /// `state` or `catalog`: where `success` came from.
    source: &'static str,
    /// What the state file and the catalogs disagree on, if anything.
    disagreement: Option<String>,
    health: Health,
}

/// The newest success of `label` from the state file and the catalogs
/// (`all`, newest first), where it came from, and their disagreement.
fn reconcile(
    label: &str,
    state: Option<&Success>,
    all: &[Listed],
    problems: &[String],
) -> (Option<Success>, &'static str, Option<String>) {
    let newest = all.iter().find(|l| l.entry.label == label);
    let from_catalog = newest.map(|n| Success {
        at: n.entry.snapshot_at,
        run_id: n.run_id.clone(),
        sinks: all
            .iter()
            .filter(|l| l.entry.label == label && l.run_id == n.run_id)
            .map(|l| l.sink.clone())
            .collect(),
        key: n.entry.key.clone(),
        size: n.entry.size,
    });
    let unreadable = (!problems.is_empty())
        .then(|| format!("some catalogs could not be read ({})", problems.join("; ")));
    match (state, from_catalog) {
        (None, None) => (None, "state", unreadable),
        (Some(s), None) => (
            Some(s.clone()),
            "state",
            Some(unreadable.unwrap_or_else(|| {
                format!(
                    "the state file names backup {} but no sink's catalog lists a backup of it (pruned or deleted?)",
                    s.run_id
                )
            })),
        ),
        (None, Some(c)) => {
            let note = format!(
                "the state file has no record of it; the catalog's newest is {} in {} (new state folder, or another host backed it up)",
                c.run_id,
                c.sinks.join(",")
            );
            (Some(c), "catalog", Some(note))
        }
        (Some(s), Some(c)) if c.run_id == s.run_id => (Some(s.clone()), "state", unreadable),
        (Some(s), Some(c)) if c.at > s.at => {
            let note = format!(
                "the catalog has a newer backup ({}, in {}) than the state file ({}): another host or state folder took it",
                c.run_id,
                c.sinks.join(","),
                s.run_id
            );
            (Some(c), "catalog", Some(note))
        }
        (Some(s), Some(c)) => {
            let note = format!(
                "the state file's newest backup {} is not in any catalog; the catalog's newest is {}",
                s.run_id, c.run_id
            );
            (Some(s.clone()), "state", Some(note))
        }
    }
}

/// This config's own backups in every sink's catalog (another host's run
/// under the same label is not this database's), and the problems met.
fn own_catalog(config: &Config) -> Result<(Vec<Listed>, Vec<String>)> {
    let (mut all, problems) = settings::backups(config)?.list();
    for p in &problems {
        tracing::warn!("catalog: {p}");
    }
    let own = settings::Own::new(config);
    all.retain(|l| own.owns(&l.entry));
    Ok((all, problems))
}

fn print_table(config: &Config, rows: &[Row<'_>], now: Timestamp) {
    if rows.is_empty() {
        outln!("No databases configured in {}.", config.file.display());
        return;
    }
    let mut t = Table::new(&[
        "LABEL",
        "HEALTH",
        "LAST SUCCESS (UTC)",
        "AGE",
        "SIZE",
        "SINK",
        "FAILURES",
        "LAST ERROR",
    ]);
    for r in rows {
        let (label, s, h) = (r.label, r.state, r.health);
        let success = r.success.as_ref();
        t.row(vec![
            label.to_string(),
            h.as_str().to_uppercase(),
            success.map_or("never".into(), |x| time(x.at)),
            success.map_or("-".into(), |x| age(x.at, now)),
            success.map_or("-".into(), |x| size(x.size)),
            success.map_or("-".into(), |x| x.sinks.join(",")),
            s.consecutive_failures.to_string(),
            s.last_failure
                .as_ref()
                .filter(|_| s.consecutive_failures > 0)
                .map_or(String::new(), |f| {
                    format!("{} ({})", f.error, age(f.at, now) + " ago")
                }),
        ]);
    }
    out!("{t}");
    for r in rows {
        if let Some(d) = &r.disagreement {
            outln!("note: {}: {d}", r.label);
        }
        print_drill(r, now);
    }
    let with = |h: Health| -> Vec<&str> {
        rows.iter()
            .filter(|r| r.health == h)
            .map(|r| r.label)
            .collect()
    };
    let (failing, old) = (
        with(Health::Failing),
        [with(Health::Never), with(Health::Stale)].concat(),
    );
    if failing.is_empty() && old.is_empty() {
        outln!(
            "All {} databases have a backup newer than {} h.",
            rows.len(),
            config.max_age_hours
        );
    }
    if !failing.is_empty() {
        outln!(
            "UNHEALTHY: the latest backup run failed for {}.",
            failing.join(", ")
        );
    }
    if !old.is_empty() {
        outln!(
            "UNHEALTHY: no backup newer than {} h for {} (max_age_hours in {}).",
            config.max_age_hours,
            old.join(", "),
            config.file.display()
        );
    }
}

/// The last restore drill of a database, one line.
fn print_drill(r: &Row<'_>, now: Timestamp) {
    if let Some(drill) = &r.state.drill.last {
        let rto: Vec<String> = drill
            .sinks
            .iter()
            .filter_map(|x| {
                x.rto_ms.map(|ms| {
                    format!(
                        "{} RTO {}",
                        x.sink,
                        backup_core::duration::human(std::time::Duration::from_millis(ms))
                    )
                })
            })
            .collect();
        match drill.error() {
            None => outln!(
                "drill: {}: passed {} ago ({})",
                r.label,
                age(drill.at, now),
                rto.join(", ")
            ),
            Some(e) => outln!(
                "drill: {}: FAILED {} ago ({} in a row): {e}",
                r.label,
                age(drill.at, now),
                r.state.drill.consecutive_failures
            ),
        }
    }
}

/// Zero every counter, under the run lock (a run in progress would
/// overwrite the reset when it saves).
fn reset(config: &Config) -> Result<()> {
    let _lock = FileLock::run(&config.state_dir).map_err(|e| match e {
        held @ LockError::Held { .. } => {
            anyhow::anyhow!(
                "cannot reset the failure counters now: {held}; try again when it has finished"
            )
        }
        other => anyhow::Error::new(other),
    })?;
    let mut state = State::load(&config.state_dir).context("reading the state file")?;
    let mut changed = Vec::new();
    for (label, db) in state.databases.iter_mut() {
        let before = db.reset_failures();
        if before > 0 {
            changed.push(format!("{label} ({before} -> 0)"));
        }
    }
    state
        .save(&config.state_dir)
        .context("writing the state file")?;
    if changed.is_empty() {
        eprintln!("No failure counters to reset.");
    } else {
        eprintln!("Reset failure counters: {}.", changed.join(", "));
    }
    Ok(())
}
