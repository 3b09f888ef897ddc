//! `sqlite-backup status`: per configured database the last success, its
//! age, size and sinks, the failure streak and the last error, from the
//! state file (no sink is contacted, so it is cheap enough for a health
//! check every minute). Exit 1 when any database's newest success is older
//! than `max_age_hours`, or it never succeeded.

use crate::lock::{self, FileLock, LockError};
use crate::state::{DbState, State};
use anyhow::{Context, Result};
use backup_config::Config;
use jiff::Timestamp;

use crate::Exit;
use crate::args::{Cli, StatusArgs};
use crate::output::{Table, age, size, time};
use crate::settings;

/// Health of one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Newest success within `max_age_hours`.
    Ok,
    /// Newest success too old.
    Stale,
    /// Never backed up.
    Never,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Stale => "stale",
            Health::Never => "never",
        }
    }
}

fn health(db: &DbState, max_age_hours: u32, now: Timestamp) -> Health {
    match &db.last_success {
        None => Health::Never,
        Some(s) if now.duration_since(s.at).as_secs() > i64::from(max_age_hours) * 3600 => {
            Health::Stale
        }
        Some(_) => Health::Ok,
    }
}

pub fn run(cli: &Cli, args: &StatusArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    if args.reset_failures {
        reset(&config)?;
    }
    let state = State::load(&config.state_dir).context("reading the state file")?;
    let now = Timestamp::now();
    let empty = DbState::default();
    let rows: Vec<(&str, &DbState, Health)> = config
        .databases
        .iter()
        .map(|d| {
            let label = d.database.label.as_str();
            let s = state.databases.get(label).unwrap_or(&empty);
            (label, s, health(s, config.max_age_hours, now))
        })
        .collect();
    let healthy = rows.iter().all(|(_, _, h)| *h == Health::Ok);
    // A warning, not unhealthy: the backups themselves are fine.
    let permissions = settings::permission_warnings(&config);
    for w in &permissions {
        tracing::warn!("{w}");
    }

    if args.json {
        let databases: Vec<serde_json::Value> = rows
            .iter()
            .map(|(label, s, h)| {
                let success = s.last_success.as_ref();
                let failure = s.last_failure.as_ref();
                serde_json::json!({
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
            "databases": databases,
            "permission_warnings": permissions,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&config, &rows, now);
    }
    Ok(if healthy { Exit::Ok } else { Exit::Failed })
}

fn print_table(config: &Config, rows: &[(&str, &DbState, Health)], now: Timestamp) {
    if rows.is_empty() {
        println!("No databases configured in {}.", config.file.display());
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
    for (label, s, h) in rows {
        let success = s.last_success.as_ref();
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
    print!("{t}");
    let bad: Vec<&str> = rows
        .iter()
        .filter(|(_, _, h)| *h != Health::Ok)
        .map(|(l, _, _)| *l)
        .collect();
    if bad.is_empty() {
        println!(
            "All {} databases have a backup newer than {} h.",
            rows.len(),
            config.max_age_hours
        );
    } else {
        println!(
            "UNHEALTHY: no backup newer than {} h for {} (max_age_hours in {}).",
            config.max_age_hours,
            bad.join(", "),
            config.file.display()
        );
    }
}

/// Zero every counter, under the run lock (a run in progress would
/// overwrite the reset when it saves).
fn reset(config: &Config) -> Result<()> {
    let _lock = FileLock::acquire(&config.state_dir.join(lock::RUN_LOCK), "a backup run").map_err(
        |e| match e {
            held @ LockError::Held { .. } => {
                anyhow::anyhow!(
                    "cannot reset the failure counters now: {held}; try again when it has finished"
                )
            }
            other => anyhow::Error::new(other),
        },
    )?;
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
