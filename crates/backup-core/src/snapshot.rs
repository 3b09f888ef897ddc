//! Taking a consistent, point-in-time image of a live database.
//!
//! Two ways, both under **one read transaction** for the whole copy, so
//! commits by other connections can never restart it (unlike
//! `sqlite3 .backup`, which steps 100 pages at a time and starts over after
//! every foreign commit):
//!
//! - [`PageStream`], the fast path for WAL databases: the raw pages of the
//!   pinned read transaction are read through the `sqlite_dbpage` virtual
//!   table and streamed straight into the compressor, with no scratch copy.
//!   It needs a SQLite built with `SQLITE_ENABLE_DBPAGE_VTAB` (this
//!   workspace sets it in `.cargo/config.toml`) and is detected at run time.
//!   With `SQLITE_ENABLE_SNAPSHOT` too, [`PageStream::twin`] opens a second
//!   connection on the very same snapshot so the post-backup check runs on
//!   another core while the pages stream.
//! - [`OnlineBackup`], the fallback: SQLite's online backup API into a
//!   private scratch file. It first opens the read transaction on the source
//!   and keeps it; `sqlite3_backup_step` then reuses that transaction instead
//!   of opening a fresh one per step, so it finishes in one pass while still
//!   reporting progress between steps.
//!
//! What writers see while the read transaction is open:
//! - WAL databases: writers keep committing; only checkpoints cannot move
//!   past our snapshot until it ends (the WAL grows meanwhile by whatever is
//!   committed during the backup). Holding the snapshot through compression
//!   costs writers nothing, which is why streaming is used only in WAL mode.
//! - rollback-journal databases: readers continue, but a writer's commit
//!   **waits** (up to its busy timeout) until the read transaction ends:
//!   SQLite cannot commit while any reader holds its SHARED lock. The
//!   pipeline therefore never streams such a database through the
//!   compressor; it copies it with [`OnlineBackup`] (about as long as reading
//!   the file once, ~0.5 s per 200 MB on a warm cache), releases the lock,
//!   and compresses the scratch copy afterwards. A writer with a busy
//!   timeout shorter than that copy gets `SQLITE_BUSY`. Use WAL for busy
//!   databases.
//!
//! What the source file sees: nothing. Connections are read-only; the main
//! file's bytes and mtime never change, and a rollback-journal database
//! gets no companion file. One SQLite rule applies to every reader of a WAL
//! database: when no other connection has it open, reading creates the
//! wal-index (`-shm`) and an empty `-wal`, which a read-only connection
//! cannot remove again (<https://sqlite.org/wal.html#readonly>); they hold
//! no data and the application's next connection uses them as its own.
//!
//! Getting the read lock in the first place is bounded too: the source
//! connection retries every millisecond for about 30 s (see
//! [`BUSY_RETRIES`]), which finds the short gaps between a busy
//! rollback-journal writer's commits; then it fails with `SQLITE_BUSY`
//! rather than wait forever.
//!
//! Why the pin matters, shown by `tests/reliability_load.rs`: with another
//! connection committing between every two steps, the pinned copy of 1 100
//! pages finishes in 12 steps of 100, while the same `step(100)` loop
//! without the pinned transaction starts over at every step (not done
//! after 240 steps). Against a live writer at ~6 000 commits/s the pinned
//! copy takes about 0.1 s.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::database::SnapshotMethod;
use crate::sqlite::{BUSY_RETRIES, open_source};
use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, backup::StepResult};

/// Numbers about one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotStats {
    /// When the read transaction began: the snapshot holds every commit before it.
    pub taken_at: Timestamp,
    /// Database page size in bytes.
    pub page_size: u64,
    /// Pages copied.
    pub page_count: u64,
    /// Wall time of the copy.
    pub elapsed: Duration,
}

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
#[error("snapshot of {path}: {}", match obstacle { Some(o) => o.to_string(), None => source.to_string() })]
pub struct SnapshotError {
    /// The source database.
    pub path: String,
    /// SQLite's error.
    #[source]
    pub source: rusqlite::Error,
    /// What really stands in the way, when SQLite's message would mislead
    /// (a hot journal, a read-only WAL database, a lock holder).
    pub obstacle: Option<Box<Obstacle>>,
}

impl SnapshotError {
    /// A mapper from SQLite errors to snapshot errors of `source`.
    fn of(source: &Path) -> impl Fn(rusqlite::Error) -> Self + Copy + '_ {
        move |e| Self {
            path: source.display().to_string(),
            obstacle: obstacle(source, &e).map(Box::new),
            source: e,
        }
    }
}

/// Why a healthy live database cannot be read as it is. None of these is
/// corruption, and none is fixed by a restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Obstacle {
    /// A writer stopped mid-transaction (killed, crashed, power loss) and
    /// left a hot rollback journal, which only a read-write connection may
    /// roll back.
    #[error(
        "{} is a hot journal: a writer stopped in the middle of a transaction. \
         The database is whole once that journal is rolled back, which takes one \
         read-write open by the application (or `sqlite3 DB 'PRAGMA user_version'`); \
         this tool only ever opens live databases read-only. Not corruption: do not restore",
        journal.display()
    )]
    HotJournal {
        /// The `-journal` file.
        journal: PathBuf,
    },
    /// A WAL database whose `-shm` is missing and cannot be created (a
    /// read-only mount or folder): SQLite cannot read it read-only.
    #[error(
        "WAL database without its {} on a read-only location: SQLite needs the -shm \
         file (or the `immutable` flag, safe only when nothing can write the file) to \
         read it. Open it once read-write where it is writable, or copy the folder \
         somewhere writable. Not corruption: do not restore",
        shm.display()
    )]
    ReadOnlyWal {
        /// The missing `-shm` file.
        shm: PathBuf,
    },
    /// Another process kept a lock for the whole busy wait.
    #[error("{error} (waited about {}s): {holders}", BUSY_RETRIES / 1000)]
    Locked {
        /// SQLite's message.
        error: String,
        /// Who holds it, as `inuse` tells.
        holders: String,
    },
}

/// What really stops `path` from being read, given SQLite's error `e`, or
/// `None` when the error means what it says.
pub fn obstacle(path: &Path, e: &rusqlite::Error) -> Option<Obstacle> {
    use rusqlite::ffi;
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return None;
    };
    let journal = crate::inuse::side_file(path, "-journal");
    let shm = crate::inuse::side_file(path, "-shm");
    if f.extended_code == ffi::SQLITE_READONLY_ROLLBACK {
        return Some(Obstacle::HotJournal { journal });
    }
    match f.code {
        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
            let holders = crate::inuse::holders(path);
            let holders = if holders.is_empty() {
                "no holder could be identified".to_string()
            } else {
                let list: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
                format!("held by {}", list.join("; "))
            };
            return Some(Obstacle::Locked {
                error: e.to_string(),
                holders,
            });
        }
        _ => {}
    }
    let read_only_kind = matches!(
        f.code,
        rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly
    );
    if read_only_kind && is_wal_file(path) && !shm.exists() {
        return Some(Obstacle::ReadOnlyWal { shm });
    }
    if f.code == rusqlite::ErrorCode::ReadOnly
        && std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0)
    {
        return Some(Obstacle::HotJournal { journal });
    }
    None
}

/// Whether the header says WAL (file format versions 2 at offsets 18-19).
fn is_wal_file(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| header[18] == 2 && header[19] == 2)
}

/// Progress callback: pages done, pages total.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Copy a live database into a new file `dest` (which must not exist) with
/// `method`: the scratch-file path of a backup. The streaming path is
/// [`PageStream`], which writes no file. `dest` is created `0600` (see
/// [`crate::fsutil::create_private`]) before SQLite opens it, whatever the
/// umask: SQLite would create it `0644` minus the umask, and gives its
/// `-journal` the mode of the database file.
pub(crate) fn to_file(
    method: SnapshotMethod,
    source: &Path,
    dest: &Path,
    progress: Progress<'_>,
) -> Result<SnapshotStats, SnapshotError> {
    match method {
        SnapshotMethod::Backup | SnapshotMethod::BackupApi => {
            OnlineBackup::default().take(source, dest, progress)
        }
        SnapshotMethod::VacuumInto => VacuumInto.take(source, dest, progress),
    }
}

/// Create and open a new private database file (a snapshot's destination):
/// an empty file created `0600`, then opened by SQLite (an empty file is an
/// empty database).
fn open_new(path: &Path) -> rusqlite::Result<Connection> {
    create_empty_private(path)?;
    Connection::open_with_flags(
        crate::sqlite::sqlite_uri(path, ""),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Create `path` as an empty `0600` file (it must not exist), so that
/// SQLite, opening it, keeps that mode (and gives it to its `-journal`).
fn create_empty_private(path: &Path) -> rusqlite::Result<()> {
    crate::fsutil::create_private(path).map(drop).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("creating {}: {e}", path.display())),
        )
    })
}

/// SQLite's online backup API under one pinned read transaction.
#[derive(Debug, Clone, Copy)]
pub struct OnlineBackup {
    /// Pages per step (between progress reports). Any value copies the same
    /// snapshot because the read transaction is pinned.
    pub pages_per_step: i32,
}

impl Default for OnlineBackup {
    fn default() -> Self {
        // 4096 pages = 16 MiB at the default page size: frequent enough for
        // a progress bar, rare enough to cost nothing.
        Self {
            pages_per_step: 4096,
        }
    }
}

impl OnlineBackup {
    /// Copy `source` into `dest` (which must not exist).
    pub fn take(
        &self,
        source: &Path,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<SnapshotStats, SnapshotError> {
        let fail = SnapshotError::of(source);
        let started = Instant::now();
        let src = open_source(source).map_err(fail)?;
        // Pin the read transaction: from the first read on, every step sees
        // this one snapshot, and foreign commits cannot restart the copy.
        src.execute_batch("BEGIN DEFERRED").map_err(fail)?;
        let taken_at = Timestamp::now();
        let (page_size, total): (i64, i64) = src
            .query_row(
                "SELECT (SELECT count(*) FROM sqlite_schema), page_size, page_count \
                 FROM pragma_page_size, pragma_page_count",
                [],
                |r| Ok((r.get(1)?, r.get(2)?)),
            )
            .map_err(fail)?;
        let mut dst = open_new(dest).map_err(fail)?;
        {
            let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(fail)?;
            let mut waits = 0u32;
            loop {
                match backup.step(self.pages_per_step).map_err(fail)? {
                    StepResult::Done => break,
                    StepResult::More => {
                        let p = backup.progress();
                        progress((p.pagecount - p.remaining) as u64, p.pagecount as u64);
                    }
                    // Only the destination can be busy here (it is ours and
                    // new), so this is rare; wait briefly, but never forever.
                    StepResult::Busy | StepResult::Locked => {
                        waits += 1;
                        if waits > 3000 {
                            return Err(fail(rusqlite::Error::SqliteFailure(
                                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                                Some("backup destination stayed locked for 30 s".into()),
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => {}
                }
            }
        }
        src.execute_batch("COMMIT").map_err(fail)?;
        drop(dst);
        progress(total as u64, total as u64);
        Ok(SnapshotStats {
            taken_at,
            page_size: page_size as u64,
            page_count: total as u64,
            elapsed: started.elapsed(),
        })
    }
}

/// `VACUUM INTO`: one read transaction, output rebuilt and defragmented.
#[derive(Debug, Clone, Copy, Default)]
pub struct VacuumInto;

impl VacuumInto {
    /// Copy `source` into `dest` (which must not exist).
    pub fn take(
        &self,
        source: &Path,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<SnapshotStats, SnapshotError> {
        let fail = SnapshotError::of(source);
        let started = Instant::now();
        let src = open_source(source).map_err(fail)?;
        let taken_at = Timestamp::now();
        // VACUUM INTO takes a URI too (ASCII, so any path fits in a string).
        let dest_uri = crate::sqlite::sqlite_uri(dest, "");
        // VACUUM INTO writes into an existing file when it is empty.
        create_empty_private(dest).map_err(fail)?;
        src.execute("VACUUM INTO ?1", [dest_uri.to_string_lossy()])
            .map_err(fail)?;
        let out = crate::sqlite::open_private(dest).map_err(fail)?;
        let (page_size, pages): (i64, i64) = out
            .query_row(
                "SELECT page_size, page_count FROM pragma_page_size, pragma_page_count",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(fail)?;
        progress(pages as u64, pages as u64);
        Ok(SnapshotStats {
            taken_at,
            page_size: page_size as u64,
            page_count: pages as u64,
            elapsed: started.elapsed(),
        })
    }
}

/// A pinned read transaction on a live WAL database whose raw pages stream
/// straight into a writer (the compressor): the fast path, no scratch copy.
///
/// ```no_run
/// use backup_core::snapshot::PageStream;
/// let Some(stream) = PageStream::open("app.db".as_ref())? else {
///     return Ok(()); // not WAL, or SQLite without sqlite_dbpage: use OnlineBackup
/// };
/// let mut out = Vec::new();
/// stream.copy_to(&mut out, &mut |_, _| {})?;
/// let stats = stream.finish()?;
/// assert_eq!(out.len() as u64, stats.page_count * stats.page_size);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PageStream {
    conn: Connection,
    source: PathBuf,
    taken_at: Timestamp,
    started: Instant,
    page_size: u64,
    page_count: u64,
}

impl std::fmt::Debug for PageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageStream")
            .field("source", &self.source)
            .field("page_size", &self.page_size)
            .field("page_count", &self.page_count)
            .finish_non_exhaustive()
    }
}

impl PageStream {
    /// Pin a read transaction on `source` and learn its size. `Ok(None)` when
    /// the fast path does not apply: the database is not in WAL mode (see the
    /// module docs on rollback journals), or this SQLite has no
    /// `sqlite_dbpage`.
    pub fn open(source: &Path) -> Result<Option<Self>, SnapshotError> {
        let fail = SnapshotError::of(source);
        let started = Instant::now();
        let conn = open_source(source).map_err(fail)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(None);
        }
        if !crate::sqlite::has_dbpage(&conn) {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "this SQLite has no sqlite_dbpage: WAL databases are copied through a scratch \
                     file (about twice the I/O); build it with \
                     LIBSQLITE3_FLAGS=\"-DSQLITE_ENABLE_DBPAGE_VTAB -DSQLITE_ENABLE_SNAPSHOT\" \
                     for the streaming path (see backup-core's crate docs)"
                );
            });
            return Ok(None);
        }
        // The snapshot's time is taken before its first read: every commit
        // acknowledged before `taken_at` is in it (a commit between a later
        // clock reading and the read would be claimed but missing).
        let taken_at = Timestamp::now();
        // The first read after BEGIN fixes the snapshot for every later read.
        conn.execute_batch("BEGIN DEFERRED").map_err(fail)?;
        let (page_size, page_count): (i64, i64) = conn
            .query_row(
                "SELECT page_size, page_count FROM pragma_page_size, pragma_page_count",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(fail)?;
        Ok(Some(Self {
            conn,
            source: source.to_path_buf(),
            taken_at,
            started,
            page_size: page_size as u64,
            page_count: page_count as u64,
        }))
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Bytes the image will have.
    pub fn size(&self) -> u64 {
        self.page_size * self.page_count
    }

    /// The pinned connection: queries on it read the snapshot being streamed.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// A second connection reading exactly the snapshot being streamed, for
    /// checks on another thread. `Ok(None)` when that cannot be guaranteed
    /// (SQLite built without `SQLITE_ENABLE_SNAPSHOT`, or a commit slipped in
    /// while the twin was being opened); then check on [`Self::connection`]
    /// after streaming instead.
    pub fn twin(&self) -> Result<Option<Connection>, SnapshotError> {
        let fail = SnapshotError::of(&self.source);
        #[cfg(sqlite_snapshot)]
        {
            let twin = open_source(&self.source).map_err(fail)?;
            // One read outside a transaction first: SQLite attaches the WAL
            // to a connection on its first read, and `sqlite3_snapshot_open`
            // fails on a connection that has none yet.
            twin.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                .map_err(fail)?;
            twin.execute_batch("BEGIN DEFERRED").map_err(fail)?;
            Ok(share_snapshot(&self.conn, &twin)
                .map_err(fail)?
                .then_some(twin))
        }
        #[cfg(not(sqlite_snapshot))]
        {
            let _ = fail;
            Ok(None)
        }
    }

    /// Write every page of the snapshot, in order, into `out`; returns the
    /// bytes written. `progress` gets pages done and total.
    pub fn copy_to(&self, out: &mut dyn Write, progress: Progress<'_>) -> io::Result<u64> {
        let sql_err = |e: rusqlite::Error| io::Error::other(SnapshotError::of(&self.source)(e));
        let mut stmt = self
            .conn
            .prepare("SELECT data FROM sqlite_dbpage ORDER BY pgno")
            .map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        let mut pages = 0u64;
        while let Some(row) = rows.next().map_err(sql_err)? {
            out.write_all(self.page_of(row, pages)?)?;
            pages += 1;
            if pages.is_multiple_of(1024) {
                progress(pages, self.page_count);
            }
        }
        if pages != self.page_count {
            return Err(io::Error::other(format!(
                "streamed {pages} pages of {}, its snapshot has {}",
                self.source.display(),
                self.page_count
            )));
        }
        progress(pages, self.page_count);
        Ok(pages * self.page_size)
    }

    /// Read the pages numbered `pages` (0-based, ascending) of the snapshot,
    /// one lookup each, calling `each(page number, page)`: what a run reads
    /// when it already knows which few pages it needs.
    pub fn read_pages(
        &self,
        pages: &[u64],
        mut each: impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let sql_err = |e: rusqlite::Error| io::Error::other(SnapshotError::of(&self.source)(e));
        let mut stmt = self
            .conn
            .prepare("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")
            .map_err(sql_err)?;
        for &page in pages {
            let mut rows = stmt.query([page as i64 + 1]).map_err(sql_err)?;
            let row = rows.next().map_err(sql_err)?.ok_or_else(|| {
                io::Error::other(format!(
                    "page {} of {} is missing from its snapshot",
                    page + 1,
                    self.source.display()
                ))
            })?;
            each(page, self.page_of(row, page)?)?;
        }
        Ok(())
    }

    /// The `data` column of a `sqlite_dbpage` row: page `page` (0-based),
    /// exactly one page long.
    fn page_of<'r>(&self, row: &'r rusqlite::Row<'_>, page: u64) -> io::Result<&'r [u8]> {
        let sql_err = |e: rusqlite::Error| io::Error::other(SnapshotError::of(&self.source)(e));
        let data = row
            .get_ref(0)
            .map_err(sql_err)?
            .as_blob()
            .map_err(|e| sql_err(rusqlite::Error::from(e)))?;
        if data.len() as u64 != self.page_size {
            return Err(io::Error::other(format!(
                "page {} of {} has {} bytes, expected {}",
                page + 1,
                self.source.display(),
                data.len(),
                self.page_size
            )));
        }
        Ok(data)
    }

    /// End the read transaction (checkpoints may proceed again).
    pub fn finish(self) -> Result<SnapshotStats, SnapshotError> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(SnapshotError::of(&self.source))?;
        Ok(self.stats())
    }

    /// What was taken, so far; the read transaction stays open.
    pub fn stats(&self) -> SnapshotStats {
        SnapshotStats {
            taken_at: self.taken_at,
            page_size: self.page_size,
            page_count: self.page_count,
            elapsed: self.started.elapsed(),
        }
    }
}

/// Make `twin` (in `BEGIN`, nothing read yet) read the snapshot `pinned`
/// holds, through `sqlite3_snapshot_get` / `sqlite3_snapshot_open`. Returns
/// false when that cannot be guaranteed.
///
/// SQLite refuses `sqlite3_snapshot_get` while no frame has been written to
/// the WAL since it was created (a quiet, freshly checkpointed database).
/// Then `pinned` reads the database file alone, and it holds WAL read-lock 0,
/// which stops any checkpoint from writing into that file. So if the twin,
/// once its own read transaction has begun, also sees a WAL without frames,
/// nothing was committed in between and both read the same bytes; if it
/// sees frames, a commit slipped in and we give up on the twin.
#[cfg(sqlite_snapshot)]
fn share_snapshot(pinned: &Connection, twin: &Connection) -> rusqlite::Result<bool> {
    use rusqlite::ffi;
    let get = |conn: &Connection| {
        let mut snap: *mut ffi::sqlite3_snapshot = std::ptr::null_mut();
        // SAFETY: an open connection used by this thread only during the call.
        let rc = unsafe { ffi::sqlite3_snapshot_get(conn.handle(), c"main".as_ptr(), &mut snap) };
        (rc == ffi::SQLITE_OK).then_some(snap)
    };
    match get(pinned) {
        Some(snap) => {
            // SAFETY: `twin` is open, in BEGIN with nothing read yet; the
            // snapshot object is freed right after use.
            let rc = unsafe {
                let rc = ffi::sqlite3_snapshot_open(twin.handle(), c"main".as_ptr(), snap);
                ffi::sqlite3_snapshot_free(snap);
                rc
            };
            if rc != ffi::SQLITE_OK {
                // SQLITE_ERROR_SNAPSHOT: `pinned` reads the database file
                // alone (every frame was checkpointed) and a writer has
                // since restarted the WAL, so the snapshot cannot be named
                // any more, though `pinned` still reads it. SQLITE_BUSY: a
                // checkpoint holds the lock. Either way the checks fall back
                // to the pinned connection, after streaming.
                return Ok(false);
            }
            // The first read fixes the twin's transaction on that snapshot.
            twin.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            Ok(true)
        }
        None => {
            twin.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            match get(twin) {
                None => Ok(true),
                Some(snap) => {
                    // SAFETY: freeing the object we were just given.
                    unsafe { ffi::sqlite3_snapshot_free(snap) };
                    Ok(false)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_testkit::demo;

    #[test]
    fn a_lock_held_throughout_names_its_holder() {
        use std::io::{BufRead, Write};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        let c = Connection::open(&src).unwrap();
        c.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(c);
        let mut holder = std::process::Command::new("sqlite3")
            .arg(&src)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the sqlite3 shell is installed");
        let mut stdin = holder.stdin.take().unwrap();
        writeln!(
            stdin,
            "BEGIN EXCLUSIVE; INSERT INTO t VALUES (2); SELECT 'ready';"
        )
        .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        // The same error the busy wait ends with, without the 30 s wait.
        let conn = Connection::open_with_flags(
            crate::sqlite::sqlite_uri(&src, ""),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let e = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        let err = SnapshotError::of(&src)(e).to_string();
        drop(stdin);
        holder.wait().unwrap();
        assert!(err.contains("database is locked"), "{err}");
        assert!(
            err.contains(&format!("pid {} (sqlite3)", holder.id())),
            "{err}"
        );
    }

    #[test]
    fn a_wal_file_that_cannot_be_opened_without_shm_is_not_called_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        let c = Connection::open(&src).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x);")
            .unwrap();
        drop(c);
        assert!(!crate::inuse::side_file(&src, "-shm").exists());
        // What SQLite reports on a read-only mount (see tests/backup.rs for
        // the real mount, where permitted).
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some("unable to open database file".into()),
        );
        assert!(matches!(
            obstacle(&src, &e),
            Some(Obstacle::ReadOnlyWal { .. })
        ));
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .unwrap()
    }

    fn ok_file(path: &Path) -> i64 {
        let conn = crate::sqlite::open_private(path).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        count(&conn)
    }

    #[test]
    fn pages_looked_up_one_by_one_are_those_of_the_pinned_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        demo::create(&src, 200_000, 7).unwrap();
        let stream = PageStream::open(&src)
            .unwrap()
            .expect("WAL + sqlite_dbpage");
        // A commit after the pin changes pages the lookups must not see.
        let writer = Connection::open(&src).unwrap();
        writer
            .execute_batch("UPDATE tasks SET title = title || '!'")
            .unwrap();
        let mut image = Vec::new();
        stream.copy_to(&mut image, &mut |_, _| {}).unwrap();
        let ps = stream.page_size() as usize;
        let last = (image.len() / ps - 1) as u64;
        let wanted = [0, 2, last / 2, last];
        let mut seen = Vec::new();
        stream
            .read_pages(&wanted, |i, page| {
                assert_eq!(
                    page,
                    &image[i as usize * ps..(i as usize + 1) * ps],
                    "page {i}"
                );
                seen.push(i);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, wanted);
        let past = stream.read_pages(&[last + 1], |_, _| Ok(()));
        assert!(past.unwrap_err().to_string().contains("missing"));
    }

    #[test]
    fn streams_one_consistent_snapshot_under_a_busy_writer() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        demo::create(&src, 2_000_000, 7).unwrap();
        let writer = demo::Writer::start(&src, 0).unwrap();
        writer.wait_for_commits(1);
        let stream = PageStream::open(&src)
            .unwrap()
            .expect("WAL + sqlite_dbpage");
        let pinned = count(stream.connection());
        // Let the writer commit while the snapshot is pinned.
        writer.wait_for_commits(2);
        let mut image = Vec::new();
        let mut calls = 0;
        let n = stream
            .copy_to(&mut image, &mut |done, total| {
                calls += 1;
                assert!(done <= total);
            })
            .unwrap();
        let stats = stream.finish().unwrap();
        let done = writer.stop();
        assert!(done.errors.is_empty(), "{:?}", done.errors);
        assert!(calls >= 1);
        assert_eq!(n, image.len() as u64);
        assert_eq!(n, stats.page_count * stats.page_size);
        let copy = dir.path().join("copy.db");
        std::fs::write(&copy, &image).unwrap();
        // Exactly the pinned snapshot: every row committed before it, none after.
        assert_eq!(ok_file(&copy), pinned);
        let later = count(&Connection::open(&src).unwrap());
        assert!(
            later > pinned,
            "the writer kept committing ({later} > {pinned})"
        );
    }

    #[cfg(sqlite_snapshot)]
    #[test]
    fn twin_reads_the_pinned_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        demo::create(&src, 500_000, 3).unwrap();
        // Quiet database, empty WAL: the twin proves nothing was committed.
        let stream = PageStream::open(&src).unwrap().unwrap();
        let twin = stream
            .twin()
            .unwrap()
            .expect("built with SQLITE_ENABLE_SNAPSHOT");
        assert_eq!(count(&twin), count(stream.connection()));
        drop((twin, stream.finish().unwrap()));
        // With frames in the WAL (this connection commits one and keeps the
        // WAL from being removed) and a writer committing meanwhile.
        let keeper = Connection::open(&src).unwrap();
        keeper
            .execute("INSERT INTO merkle_nodes (level, hash) VALUES (0, 'x')", [])
            .unwrap();
        let writer = demo::Writer::start(&src, 0).unwrap();
        let stream = PageStream::open(&src).unwrap().unwrap();
        let pinned = count(stream.connection());
        writer.wait_for_commits(2);
        let twin = stream.twin().unwrap().expect("a snapshot to share");
        let stats = writer.stop();
        assert!(!stats.commits.is_empty());
        assert_eq!(count(&twin), pinned);
        assert!(count(&keeper) > pinned);
    }

    #[cfg(sqlite_snapshot)]
    #[test]
    fn twin_after_a_wal_restart() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app.db");
        demo::create(&src, 200_000, 3).unwrap();
        // Frames in the WAL, all of them checkpointed: the next reader
        // reads the database file alone, and the next writer restarts the WAL.
        let keeper = Connection::open(&src).unwrap();
        keeper
            .execute("INSERT INTO merkle_nodes (level, hash) VALUES (0, 'x')", [])
            .unwrap();
        keeper
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        let nodes = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM merkle_nodes", [], |r| r.get(0))
                .unwrap()
        };
        let stream = PageStream::open(&src).unwrap().unwrap();
        let pinned = nodes(stream.connection());
        keeper
            .execute("INSERT INTO merkle_nodes (level, hash) VALUES (0, 'y')", [])
            .unwrap();
        assert!(nodes(&keeper) > pinned);
        // The snapshot can no longer be named: no twin, and no error either
        // (this failed a backup under a busy writer once).
        let twin = stream.twin().unwrap();
        assert!(twin.is_none());
        assert_eq!(nodes(stream.connection()), pinned);
    }

    #[test]
    fn rollback_journal_databases_take_the_scratch_path() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("plain.db");
        let conn = Connection::open(&src).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(PageStream::open(&src).unwrap().is_none());
        let dest = dir.path().join("copy.db");
        let stats = OnlineBackup::default()
            .take(&src, &dest, &mut |_, _| {})
            .unwrap();
        assert_eq!(stats.page_count, 2);
    }
}
