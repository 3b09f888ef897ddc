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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::lock::{self, FileLock, LockError};
use anyhow::{Context, Result};
use backup_config::Config;
use backup_core::pipeline::RunReport;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::Exit;
use crate::args::{Cli, DaemonArgs};
use crate::cmd::{RunControl, RunRefused, run_backup_with};
use crate::{interval, progress, settings};

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
    let config = settings::load_config(&cli.config)?;
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
    };
    runtime.block_on(schedule(cli, args, every, config, control))
}

async fn schedule(
    cli: &Cli,
    args: &DaemonArgs,
    every: Duration,
    mut config: Config,
    control: RunControl,
) -> Result<Exit> {
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
    loop {
        match settings::load_config(&cli.config) {
            Ok(fresh) => config = fresh,
            Err(e) => error!("config reload failed, keeping the previous config: {e:#}"),
        }
        let end = run_in_thread(config.clone(), control.clone()).await;
        let exit = match end {
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
        };
        if stopping() {
            info!("daemon stopped by signal");
            return Ok(Exit::Ok);
        }
        if args.once {
            return Ok(exit);
        }
        let next = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(every).unwrap_or_default())
            .unwrap_or_else(|_| jiff::Timestamp::now());
        info!(
            "next run at {} (in {})",
            next.strftime("%Y-%m-%dT%H:%M:%SZ"),
            interval::format(every)
        );
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop_rx.wait_for(|stop| *stop) => {
                info!("daemon stopped by signal");
                return Ok(Exit::Ok);
            }
        }
    }
}

/// Run one backup on a plain thread (blocking work, and the blocking HTTP
/// client of the alerts, must not run on the async runtime) and await it.
/// The run watches the cancel flag itself, so this always completes.
async fn run_in_thread(config: Config, control: RunControl) -> RunEnd {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("backup-run".into())
        .spawn(move || {
            let result = run_backup_with(&config, &config.databases, None, false, false, &control);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return RunEnd::Error(anyhow::Error::new(e).context("starting the backup thread"));
    }
    match rx.await {
        Ok(Ok((_, Some(report)))) => RunEnd::Ran(report),
        Ok(Ok((_, None))) => RunEnd::Error(anyhow::anyhow!("the run was planned but not executed")),
        Ok(Err(e)) => match e.downcast_ref::<RunRefused>() {
            Some(refused) => RunEnd::Refused(refused.0.to_string()),
            None => RunEnd::Error(e),
        },
        Err(_) => RunEnd::Error(anyhow::anyhow!("the backup thread panicked")),
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), installed before the first run.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    pub(crate) async fn recv(mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
