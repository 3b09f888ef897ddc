//! The user's shell commands (`post_restore`, the alert `command`): one
//! runner, with the facts in `SQLITE_BACKUP_*` variables and a time limit,
//! so a hung hook never hangs a restore or a daemon.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// It could not be started.
    #[error("could not start {command:?}: {source}")]
    Start {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// It exited non-zero or was killed by a signal.
    #[error("{command:?} failed: {status}")]
    Failed { command: String, status: ExitStatus },
    /// It ran past its time limit and was killed.
    #[error("{command:?} did not finish within {}s and was killed", limit.as_secs())]
    TimedOut { command: String, limit: Duration },
}

/// Run `command` through `sh -c` (`cmd /C` on Windows) with `env` added,
/// stdin closed and stdout sent to `stdout_to` (inherited or discarded).
pub fn run<K, V>(
    command: &str,
    env: impl IntoIterator<Item = (K, V)>,
    show_output: bool,
    limit: Duration,
) -> Result<(), ShellError>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut c = if cfg!(windows) {
        let mut c = Command::new("cmd");
        c.arg("/C").arg(command);
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c").arg(command);
        c
    };
    c.envs(env)
        .stdin(Stdio::null())
        .stdout(if show_output {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::inherit());
    let mut child = c.spawn().map_err(|source| ShellError::Start {
        command: command.to_string(),
        source,
    })?;
    let status = match child.wait_timeout(limit) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ShellError::TimedOut {
                command: command.to_string(),
                limit,
            });
        }
        Err(source) => {
            let _ = child.kill();
            return Err(ShellError::Start {
                command: command.to_string(),
                source,
            });
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(ShellError::Failed {
            command: command.to_string(),
            status,
        })
    }
}

/// How long a `post_restore` command may run before it is killed and the
/// restore reported as failed (the restored file stays in place).
const POST_RESTORE_LIMIT: Duration = Duration::from_secs(600);

/// The configured `post_restore` shell command as the library's hook, with
/// the restore described in `SQLITE_BACKUP_*` variables: `LABEL`, `PATH`
/// (the restored file), `BROKEN` (the kept previous database, empty if
/// none), `SNAPSHOT_ID`, `SNAPSHOT_AT`, `SINK`, `KEY`, and `DRILL` (`1`
/// in a restore drill, where `PATH` is a scratch copy, else `0`).
pub fn post_restore_hook(command: String, drill: bool) -> backup_core::restore::PostRestoreHook {
    backup_core::restore::PostRestoreHook::new(move |r| {
        let s = r.snapshot;
        let env: [(&str, std::ffi::OsString); 8] = [
            ("SQLITE_BACKUP_DRILL", if drill { "1" } else { "0" }.into()),
            ("SQLITE_BACKUP_LABEL", r.label.into()),
            ("SQLITE_BACKUP_PATH", r.path.into()),
            (
                "SQLITE_BACKUP_BROKEN",
                r.broken.unwrap_or(std::path::Path::new("")).into(),
            ),
            ("SQLITE_BACKUP_SNAPSHOT_ID", s.run_id.clone().into()),
            (
                "SQLITE_BACKUP_SNAPSHOT_AT",
                s.entry.snapshot_at.to_string().into(),
            ),
            ("SQLITE_BACKUP_SINK", s.sink.clone().into()),
            ("SQLITE_BACKUP_KEY", s.entry.key.clone().into()),
        ];
        run(&command, env, true, POST_RESTORE_LIMIT).map_err(|e| e.to_string().into())
    })
}
