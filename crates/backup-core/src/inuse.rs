//! Who has this database open: the check a careful operator runs with
//! `lsof` before replacing a file, done without opening the database.
//!
//! Two probes, whose findings are merged:
//! - **Open files** (Linux): every `/proc/<pid>/fd/*` is compared, by
//!   device and inode, with the database and its `-wal`, `-shm` and
//!   `-journal` files. This finds a process that merely has the file open,
//!   even an idle one in rollback mode that holds no lock, and whatever
//!   name it opened it by (a hard link, a bind mount, a symlink).
//! - **Locks**: `/proc/locks` (Linux) lists every lock with its file's
//!   `major:minor:inode`; `fcntl(F_GETLK)` (Unix) asks the kernel whether
//!   any process holds one of SQLite's POSIX locks on the database or its
//!   `-shm` (an open WAL-mode connection always holds one there), and
//!   returns that process's id. Elsewhere the probe tries to take a lock on
//!   the files.
//!
//! Neither probe opens the database with SQLite, so probing never creates a
//! `-wal`/`-shm` file or changes a byte.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let db = dir.path().join("app.db");
//! std::fs::write(&db, b"").unwrap();
//! // This process is never reported as a holder of its own files.
//! assert!(backup_core::inuse::holders(&db).is_empty());
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// How a holder was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// The process has the file open (`/proc/<pid>/fd`).
    OpenFile,
    /// The process holds a lock on the file.
    Lock,
}

/// A process using a database file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// Process id, when the platform tells it.
    pub pid: Option<u32>,
    /// Short process name (`comm`), when readable.
    pub name: Option<String>,
    /// Full command line, when readable.
    pub cmdline: Option<String>,
    /// The file it holds (the database or one of its side files).
    pub file: PathBuf,
    /// How it was found.
    pub evidence: Evidence,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => write!(f, "an unidentified process")?,
        }
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        let how = match self.evidence {
            Evidence::OpenFile => "has open",
            Evidence::Lock => "holds a lock on",
        };
        write!(f, " {how} {}", self.file.display())?;
        if let Some(cmd) = &self.cmdline
            && Some(cmd) != self.name.as_ref()
        {
            write!(f, ": {cmd}")?;
        }
        Ok(())
    }
}

/// The database file and the side files SQLite keeps beside it.
pub fn family(db: &Path) -> [PathBuf; 4] {
    [
        db.to_path_buf(),
        side_file(db, "-wal"),
        side_file(db, "-shm"),
        side_file(db, "-journal"),
    ]
}

/// `app.db` + `-wal` → `app.db-wal`.
pub fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Every other process using `db` (or its `-wal`/`-shm`/`-journal`), one
/// entry per process and file, processes found by both probes once.
///
/// Files are matched by device and inode, not by name: a process that
/// reaches the same file through a hard link, a bind mount or a symlink
/// is found too.
pub fn holders(db: &Path) -> Vec<Holder> {
    let files: Vec<Probed> = family(db)
        .into_iter()
        .filter_map(|p| {
            let id = FileId::of(&p)?;
            Some(Probed {
                path: std::fs::canonicalize(&p).unwrap_or(p),
                id,
            })
        })
        .collect();
    let mut out = open_file_holders(&files);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    for h in proc_lock_holders(&files)
        .into_iter()
        .chain(lock_holders(&paths))
    {
        let known = out
            .iter()
            .any(|o| o.pid == h.pid && (o.pid.is_some() || o.file == h.file));
        if !known {
            out.push(h);
        }
    }
    out
}

/// A file of the family that exists, and its identity.
#[derive(Debug)]
struct Probed {
    path: PathBuf,
    id: FileId,
}

/// Device and inode: what makes two names the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// Of the file `path` names (symlinks followed).
    #[cfg(unix)]
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Elsewhere only existence is known; matching falls back to names.
    #[cfg(not(unix))]
    fn of(path: &Path) -> Option<Self> {
        path.exists().then_some(Self { dev: 0, ino: 0 })
    }
}

#[cfg(target_os = "linux")]
fn open_file_holders(files: &[Probed]) -> Vec<Holder> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Processes of other users are unreadable without privileges; the
        // lock probe still sees those that hold a lock.
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let mut seen: Vec<&PathBuf> = Vec::new();
        for fd in fds.flatten() {
            // `stat` through the fd link reports the open file itself,
            // whichever name it was opened by.
            let Some(id) = FileId::of(&fd.path()) else {
                continue;
            };
            if let Some(file) = files.iter().find(|f| f.id == id).map(|f| &f.path)
                && !seen.contains(&file)
            {
                seen.push(file);
                out.push(Holder {
                    pid: Some(pid),
                    name: process_name(pid),
                    cmdline: process_cmdline(pid),
                    file: file.clone(),
                    evidence: Evidence::OpenFile,
                });
            }
        }
    }
    out
}

/// Every lock in `/proc/locks` on one of `files`, matched by the
/// `major:minor:inode` the kernel lists (Linux). Unlike `F_GETLK`, which
/// reports one conflicting lock, this lists every holder.
#[cfg(target_os = "linux")]
fn proc_lock_holders(files: &[Probed]) -> Vec<Holder> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut out: Vec<Holder> = Vec::new();
    for lock in text.lines().filter_map(parse_proc_lock) {
        let Some(file) = files.iter().find(|f| {
            f.id.ino == lock.ino
                && nix::sys::stat::major(f.id.dev) == lock.major
                && nix::sys::stat::minor(f.id.dev) == lock.minor
        }) else {
            continue;
        };
        // Open-file-description locks list pid -1.
        let pid = u32::try_from(lock.pid).ok().filter(|p| *p > 0);
        if pid == Some(me) || out.iter().any(|h| h.pid == pid && h.file == file.path) {
            continue;
        }
        out.push(Holder {
            pid,
            name: pid.and_then(process_name),
            cmdline: pid.and_then(process_cmdline),
            file: file.path.clone(),
            evidence: Evidence::Lock,
        });
    }
    out
}

#[cfg(not(target_os = "linux"))]
fn proc_lock_holders(_files: &[Probed]) -> Vec<Holder> {
    Vec::new()
}

/// One line of `/proc/locks`, the fields we use.
#[derive(Debug, PartialEq, Eq)]
struct ProcLock {
    pid: i64,
    major: u64,
    minor: u64,
    ino: u64,
}

/// `1: POSIX  ADVISORY  READ 1234 08:01:131090 1073741824 1073741825`, or
/// with `->` after the index for a process waiting for the lock.
fn parse_proc_lock(line: &str) -> Option<ProcLock> {
    let mut fields = line.split_whitespace().filter(|f| *f != "->").skip(4);
    let pid = fields.next()?.parse().ok()?;
    let mut dev = fields.next()?.split(':');
    let major = u64::from_str_radix(dev.next()?, 16).ok()?;
    let minor = u64::from_str_radix(dev.next()?, 16).ok()?;
    let ino = dev.next()?.parse().ok()?;
    Some(ProcLock {
        pid,
        major,
        minor,
        ino,
    })
}

#[cfg(not(target_os = "linux"))]
fn open_file_holders(_files: &[Probed]) -> Vec<Holder> {
    Vec::new()
}

/// `comm` of a process (Linux).
pub(crate) fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
        .filter(|s| !s.is_empty())
}

/// Command line of a process, arguments joined by spaces (Linux).
pub(crate) fn process_cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| !s.is_empty())
}

#[cfg(unix)]
fn lock_holders(files: &[PathBuf]) -> Vec<Holder> {
    let mut out = Vec::new();
    for file in files {
        // Only the database and its -shm carry SQLite's locks.
        let name = file.to_string_lossy();
        if name.ends_with("-wal") || name.ends_with("-journal") {
            continue;
        }
        let Ok(f) = std::fs::File::open(file) else {
            continue;
        };
        use nix::libc;
        let mut fl = libc::flock {
            l_type: libc::F_WRLCK as _,
            l_whence: libc::SEEK_SET as _,
            l_start: 0,
            l_len: 0, // the whole file, including SQLite's lock bytes at 1 GiB
            l_pid: 0,
        };
        // F_GETLK takes no lock: it asks who would block this one.
        let asked = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETLK(&mut fl));
        if asked.is_ok() && i32::from(fl.l_type) != libc::F_UNLCK {
            // Open-file-description locks report pid -1.
            let pid = u32::try_from(fl.l_pid).ok().filter(|p| *p > 0);
            out.push(Holder {
                pid,
                name: pid.and_then(process_name),
                cmdline: pid.and_then(process_cmdline),
                file: file.clone(),
                evidence: Evidence::Lock,
            });
        }
    }
    out
}

#[cfg(not(unix))]
fn lock_holders(files: &[PathBuf]) -> Vec<Holder> {
    let mut out = Vec::new();
    for file in files {
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
        else {
            continue;
        };
        if let Err(std::fs::TryLockError::WouldBlock) = f.try_lock() {
            out.push(Holder {
                pid: None,
                name: None,
                cmdline: None,
                file: file.clone(),
                evidence: Evidence::Lock,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names() {
        let f = family(Path::new("/d/app.db"));
        assert_eq!(f[1], Path::new("/d/app.db-wal"));
        assert_eq!(f[2], Path::new("/d/app.db-shm"));
        assert_eq!(f[3], Path::new("/d/app.db-journal"));
    }

    #[test]
    fn proc_locks_lines_parse() {
        assert_eq!(
            parse_proc_lock("1: POSIX  ADVISORY  READ 1234 08:01:131090 1073741824 1073741825"),
            Some(ProcLock {
                pid: 1234,
                major: 8,
                minor: 1,
                ino: 131090
            })
        );
        assert_eq!(
            parse_proc_lock("2: -> POSIX  ADVISORY  WRITE 77 00:2a:42 0 EOF"),
            Some(ProcLock {
                pid: 77,
                major: 0,
                minor: 0x2a,
                ino: 42
            })
        );
        assert_eq!(
            parse_proc_lock("3: OFDLCK ADVISORY  READ -1 fd:00:9 0 EOF").map(|l| l.pid),
            Some(-1)
        );
        assert_eq!(parse_proc_lock("garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_locks_finds_a_lock_taken_through_a_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"x").unwrap();
        let link = dir.path().join("link.db");
        std::fs::hard_link(&db, &link).unwrap();
        // flock(1) holds a lock that F_GETLK cannot see; /proc/locks lists it.
        let mut child = std::process::Command::new("flock")
            .arg("-s")
            .arg(&link)
            .args(["sleep", "30"])
            .spawn()
            .expect("flock (util-linux) is installed");
        let probed = [Probed {
            path: db.clone(),
            id: FileId::of(&db).unwrap(),
        }];
        let mut found = Vec::new();
        for _ in 0..250 {
            found = proc_lock_holders(&probed);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, Some(child.id()));
        assert_eq!(found[0].evidence, Evidence::Lock);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_a_child_holding_the_file_open_under_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"x").unwrap();
        let link = dir.path().join("link.db");
        std::fs::hard_link(&db, &link).unwrap();
        let mut child = std::process::Command::new("tail")
            .arg("-f")
            .arg(&link)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut found = Vec::new();
        for _ in 0..100 {
            found = holders(&db);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, Some(child.id()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_a_child_holding_the_file_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"x").unwrap();
        // `tail -f` keeps the file open and takes no lock.
        let mut child = std::process::Command::new("tail")
            .arg("-f")
            .arg(&db)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut found = Vec::new();
        for _ in 0..100 {
            found = holders(&db);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, Some(child.id()));
        assert_eq!(found[0].name.as_deref(), Some("tail"));
        assert_eq!(found[0].evidence, Evidence::OpenFile);
    }

    #[cfg(unix)]
    #[test]
    fn finds_a_lock_held_by_an_sqlite_connection_elsewhere() {
        // A WAL-mode connection in another process holds a lock on -shm;
        // spawn one with the sqlite3 shell when it is installed.
        let Ok(_) = std::process::Command::new("sqlite3")
            .arg("-version")
            .output()
        else {
            eprintln!("sqlite3 not installed; skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(c);
        let mut child = std::process::Command::new("sqlite3")
            .arg(&db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::{BufRead, Write};
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "SELECT count(*) FROM t;").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "1");
        let locks = lock_holders(&[
            std::fs::canonicalize(&db).unwrap(),
            std::fs::canonicalize(side_file(&db, "-shm")).unwrap(),
        ]);
        drop(stdin);
        child.wait().unwrap();
        assert!(locks.iter().any(|h| h.pid == Some(child.id())), "{locks:?}");
    }
}
