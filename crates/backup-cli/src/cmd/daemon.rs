//! `sqlite-backup daemon`: backups on a schedule (tokio), or once.
//!
//! - One daemon per config: `state_dir/daemon.lock` is held for the
//!   daemon's lifetime; a second daemon is refused (exit 1) naming the pid.
//! - Never two runs at once: every run (daemon or manual `backup`) holds
//!   `state_dir/run.lock`. When a manual run holds it at a scheduled time,
//!   the daemon skips that run with a WARN and tries again next interval.
//! - The config is re-read before every run, so edits apply without a
//!   restart (an invalid edit is logged and the previous config kept).
//! - SIGINT / SIGTERM: the run in flight stops at its next check point; the
//!   database in flight is abandoned (uploads aborted, no manifest names it,
//!   so nothing incomplete looks like a backup), databases already finished
//!   keep their manifest, the state file is written, and the process exits 0.
//! - `--once`: one run, then exit 0 when every database succeeded, 1 when
//!   some failed (what cron and systemd timers should see).
//! - `[drill] every`: after a backup run, a restore drill of every database
//!   runs when the oldest database's last drill is that old (or it never
//!   had one); the daemon wakes for whichever of the two is due first.
//!   `--once` runs a due drill too, so timers need no unit of their own.
//! - `--prune-every 1m`: after a backup run, `prune` (every database, by
//!   its retention policy) when the last prune is that old, on the same
//!   thread of runs, so a prune never overlaps a run.
//! - `[metrics] listen`: an HTTP `/metrics` endpoint for the daemon's
//!   lifetime (not with `--once`), rendered from the state file per scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::lock::{self, FileLock, LockError};
use anyhow::{Context, Result};
use backup_config::Config;
use backup_core::pipeline::{HeldSnapshots, RunReport};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::Exit;
use crate::args::{Cli, DaemonArgs};
use crate::jobs::backup::{RunControl, run_backup_with};
use crate::jobs::drill::run_drill;
use crate::lock::RunRefused;
use crate::signals::Signals;
use crate::state::State;
use crate::{interval, progress, settings};

/// The longest interval at which runs keep their snapshot pinned until the
/// next (see `HeldSnapshots`).
const HOLD_UP_TO: Duration = Duration::from_secs(60);

/// How one scheduled run ended.
enum RunEnd {
    /// It ran; here is what happened.
    Ran(RunReport),
    /// Another run held the lock.
    Refused(String),
    /// It could not start (config, sinks, lock file).
    Error(anyhow::Error),
}

pub fn run(cli: &Cli, args: &DaemonArgs) -> Result<Exit> {
    let every = interval::parse(&args.interval)?;
    let prune_every = (args.prune_every.as_deref())
        .map(interval::parse)
        .transpose()
        .context("--prune-every")?;
    let config = settings::load_config(&cli.config)?;
    if !args.once {
        // Each run reads back the page hashes the run before wrote.
        backup_core::incremental::hash_file::keep_in_memory();
    }
    let _daemon_lock = if args.once {
        None
    } else {
        Some(
            FileLock::acquire(
                &config.state_dir.join(lock::DAEMON_LOCK),
                "a sqlite-backup daemon for this config",
            )
            .map_err(|e| match e {
                held @ LockError::Held { .. } => {
                    anyhow::anyhow!("{held}; not starting a second one")
                }
                other => anyhow::Error::new(other).context("taking the daemon lock"),
            })?,
        )
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let control = RunControl {
        progress: progress::wanted(cli.quiet),
        cancel: Some(Arc::new(AtomicBool::new(false))),
        // At a short interval, each run's snapshot stays pinned until the
        // next, so the WAL cannot restart in between and runs read only
        // what changed. At a long one that would hold a checkpoint back
        // for too long.
        held: (!args.once && every <= HOLD_UP_TO).then(HeldSnapshots::new),
    };
    runtime.block_on(schedule(cli, args, every, prune_every, config, control))
}

async fn schedule(
    cli: &Cli,
    args: &DaemonArgs,
    every: Duration,
    prune_every: Option<Duration>,
    mut config: Config,
    control: RunControl,
) -> Result<Exit> {
    // Drills of encrypted backups need the identity; backups never do.
    let identities = settings::identities(cli.identity.as_deref(), Some(&config))?;
    let shared = Arc::new(std::sync::Mutex::new(config.clone()));
    if !args.once
        && let Some(addr) = config.metrics.listen
    {
        crate::metrics::serve(addr, shared.clone())
            .await
            .with_context(|| {
                format!("starting the metrics endpoint on {addr} ([metrics] listen)")
            })?;
    }
    let cancel = control.cancel.clone().expect("daemon runs are cancellable");
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let signals = Signals::install().context("installing signal handlers")?;
    tokio::spawn(async move {
        let name = signals.recv().await;
        warn!(
            "received {name}: stopping; the database in flight is finished or abandoned, nothing incomplete is kept"
        );
        cancel.store(true, Ordering::SeqCst);
        let _ = stop_tx.send(true);
    });
    if args.once {
        info!("daemon run once config={}", config.file.display());
    } else {
        info!(
            "daemon started pid={} interval={} config={}",
            std::process::id(),
            interval::format(every),
            config.file.display()
        );
    }
    let stopping = || {
        control
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    };
    let mut next_backup = jiff::Timestamp::now();
    let mut next_prune = jiff::Timestamp::now();
    loop {
        match settings::load_config(&cli.config) {
            Ok(fresh) => {
                config = fresh;
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = config.clone();
            }
            Err(e) => error!("config reload failed, keeping the previous config: {e:#}"),
        }
        let mut exit = Exit::Ok;
        if jiff::Timestamp::now() >= next_backup || args.once {
            exit = backup_once(config.clone(), control.clone()).await;
            next_backup = later(jiff::Timestamp::now(), every);
            if let Some(prune_every) = prune_every
                && !stopping()
                && jiff::Timestamp::now() >= next_prune
            {
                if !prune_in_thread(config.clone()).await {
                    exit = Exit::Failed;
                }
                next_prune = later(jiff::Timestamp::now(), prune_every);
            }
        }
        if !stopping() && drill_due(&config).is_some_and(|at| at <= jiff::Timestamp::now()) {
            let drilled = drill_in_thread(config.clone(), identities.clone()).await;
            if !drilled {
                exit = Exit::Failed;
            }
        }
        if stopping() {
            info!("daemon stopped by signal");
            return Ok(Exit::Ok);
        }
        if args.once {
            return Ok(exit);
        }
        let next = match drill_due(&config) {
            Some(d) if d < next_backup => {
                info!("next restore drill at {}", d.strftime("%Y-%m-%dT%H:%M:%SZ"));
                d
            }
            _ => {
                info!(
                    "next run at {} (in {})",
                    next_backup.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    interval::format(every)
                );
                next_backup
            }
        };
        let wait = jiff::Timestamp::now()
            .duration_until(next)
            .try_into()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop_rx.wait_for(|stop| *stop) => {
                info!("daemon stopped by signal");
                return Ok(Exit::Ok);
            }
        }
    }
}

/// `t + every`, saturating.
fn later(t: jiff::Timestamp, every: Duration) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(every).unwrap_or_default())
        .unwrap_or(t)
}

/// When the next drill is due: the oldest configured database's last
/// drill plus `[drill] every` (now, when one was never drilled); `None`
/// without `[drill]`.
fn drill_due(config: &Config) -> Option<jiff::Timestamp> {
    let every = config.drill?.every;
    let state = State::load(&config.state_dir).unwrap_or_default();
    let now = jiff::Timestamp::now();
    config
        .databases
        .iter()
        .map(|d| {
            state
                .databases
                .get(&d.database.label)
                .and_then(|s| s.drill.last.as_ref())
                .map_or(now, |l| later(l.at, every))
        })
        .min()
}

/// Run `job` on a plain thread named `name` (blocking work, and the
/// blocking HTTP client of the alerts, must not run on the async runtime)
/// and await it; `Err` says why it gave no result.
async fn on_thread<T: Send + 'static>(
    name: &str,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(job());
        })
        .map_err(|e| format!("starting the {name} thread: {e}"))?;
    rx.await.map_err(|_| format!("the {name} thread panicked"))
}

/// Run a drill of every database on a plain thread; true when it passed.
async fn drill_in_thread(
    config: Config,
    identities: Option<backup_core::encryption::Identities>,
) -> bool {
    let drilled = on_thread("drill", move || {
        run_drill(
            &config,
            &config.databases,
            None,
            &backup_core::source::Scope::Own,
            identities,
        )
    });
    match drilled.await {
        Ok(Ok(report)) => {
            info!(id = %report.drill_id, ok = report.ok(), "drill done");
            report.ok()
        }
        Ok(Err(e)) => {
            match e.downcast_ref::<RunRefused>() {
                Some(r) => warn!("scheduled drill skipped: {}", r.0),
                None => error!("scheduled drill failed to start: {e:#}"),
            }
            false
        }
        Err(e) => {
            error!("{e}");
            false
        }
    }
}

/// A prune on a plain thread (it blocks on the sinks); true when it passed.
async fn prune_in_thread(config: Config) -> bool {
    match on_thread("prune", move || super::prune::prune_logged(&config)).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            error!("scheduled prune failed to start: {e:#}");
            false
        }
        Err(e) => {
            error!("{e}");
            false
        }
    }
}

/// One scheduled backup run, its outcome as an exit code.
async fn backup_once(config: Config, control: RunControl) -> Exit {
    {
        let end = run_in_thread(config, control).await;
        match end {
            RunEnd::Ran(report) if report.failed_count() > 0 => Exit::Failed,
            RunEnd::Ran(_) => Exit::Ok,
            RunEnd::Refused(why) => {
                warn!("scheduled run skipped: {why}");
                Exit::Failed
            }
            RunEnd::Error(e) => {
                error!("scheduled run failed to start: {e:#}");
                Exit::Failed
            }
        }
    }
}

/// Run one backup on a plain thread and await it. The run watches the
/// cancel flag itself, so this always completes.
async fn run_in_thread(config: Config, control: RunControl) -> RunEnd {
    let ran = on_thread("backup-run", move || {
        run_backup_with(&config, &config.databases, None, false, false, &control)
    });
    match ran.await {
        Ok(Ok((_, Some(report)))) => RunEnd::Ran(report),
        Ok(Ok((_, None))) => RunEnd::Error(anyhow::anyhow!("the run was planned but not executed")),
        Ok(Err(e)) => match e.downcast_ref::<RunRefused>() {
            Some(refused) => RunEnd::Refused(refused.0.to_string()),
            None => RunEnd::Error(e),
        },
        Err(e) => RunEnd::Error(anyhow::anyhow!(e)),
    }
}
