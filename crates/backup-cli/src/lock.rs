//! Advisory file locks that keep two runs (or two daemons) of one config
//! from overlapping.
//!
//! A lock is an exclusive `flock`-style lock ([`File::try_lock`]) on a file
//! in the state folder. The operating system drops it when the process
//! ends, however it ends, so a crash never leaves a stale lock. While held,
//! the file contains the holder's pid and start time, so the refusal can say
//! who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use backup_config::Config;

/// File name of the lock held during a backup run.
pub const RUN_LOCK: &str = "run.lock";
/// File name of the lock held for a scheduling daemon's lifetime.
pub const DAEMON_LOCK: &str = "daemon.lock";

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another handle in this one) holds it.
    #[error("{what} is already running{} (lock {path})", holder_text(*pid, since.as_deref()))]
    Held {
        /// What the lock protects, as a phrase (`a backup run`).
        what: String,
        /// The lock file.
        path: PathBuf,
        /// Holder pid, when the file says.
        pid: Option<u32>,
        /// Holder start time (RFC 3339), when the file says.
        since: Option<String>,
    },
    /// The lock file could not be opened or locked.
    #[error("lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn holder_text(pid: Option<u32>, since: Option<&str>) -> String {
    match (pid, since) {
        (Some(p), Some(s)) => format!(", held by pid {p} since {s}"),
        (Some(p), None) => format!(", held by pid {p}"),
        _ => String::new(),
    }
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// The run lock of a state folder: one backup, drill, prune or counter
    /// reset at a time per config.
    pub fn run(state_dir: &Path) -> Result<Self, LockError> {
        Self::acquire(&state_dir.join(RUN_LOCK), "a backup run")
    }

    /// Take the lock at `path` (its folder is created), or say who holds it.
    /// `what` names the protected activity in the error (`a backup run`).
    pub fn acquire(path: &Path, what: &str) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Owner only, like everything else the tool makes for itself.
            backup_core::fsutil::create_dir_all_mode(dir, backup_core::fsutil::PRIVATE_DIR)
                .map_err(io_err)?;
        }
        // Never truncate on open: the holder's pid must stay readable.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let mut pid = None;
                let mut since = None;
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("pid=") {
                        pid = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("since=") {
                        since = Some(v.trim().to_string());
                    }
                }
                return Err(LockError::Held {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                    pid,
                    since,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let stamp = format!(
            "pid={}\nsince={}\n",
            std::process::id(),
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(stamp.as_bytes())?;
            file.flush()
        })()
        .map_err(io_err)?;
        Ok(Self { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Clear the holder stamp, then let closing the file release the lock.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/run.lock");
        let _held = FileLock::acquire(&path, "a backup run").unwrap();
        let e = FileLock::acquire(&path, "a backup run").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("held by pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.starts_with("a backup run is already running"), "{msg}");
    }

    #[test]
    fn released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        drop(FileLock::acquire(&path, "x").unwrap());
        let _again = FileLock::acquire(&path, "x").unwrap();
    }
}

/// A run refused because another one holds the run lock (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}; nothing was backed up, try again when it has finished")]
pub struct RunRefused(pub LockError);

/// The run lock of `config`'s state folder: one backup, drill or prune at a
/// time per config. Held by another: [`RunRefused`], naming the holder.
pub fn take_run_lock(config: &Config) -> anyhow::Result<FileLock> {
    FileLock::run(&config.state_dir).map_err(|e| match e {
        held @ LockError::Held { .. } => anyhow::Error::new(RunRefused(held)),
        other => anyhow::Error::new(other).context("taking the run lock"),
    })
}
