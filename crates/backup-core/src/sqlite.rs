//! Opening SQLite connections the way every part of this crate does: live
//! sources read-only with a patient busy handler, private snapshot files
//! `immutable`, and any path Linux allows through a `file:` URI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Open a live database read-only, the way every part of this crate does:
/// we never write to a source, and we wait politely for brief locks.
pub fn open_source(path: &Path) -> rusqlite::Result<Connection> {
    // Always through a URI: this SQLite is built with SQLITE_USE_URI, so a
    // plain name starting with `file:` would be parsed as one anyway.
    let mut conn = Connection::open_with_flags(
        sqlite_uri(path, ""),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_handler(Some(retry_every_millisecond))?;
    Ok(conn)
}

/// How many times a busy snapshot retries, once a millisecond (about 30 s).
pub const BUSY_RETRIES: i32 = 30_000;

/// The busy handler of every source connection: retry each millisecond for
/// about 30 s, then give up with `SQLITE_BUSY`.
///
/// SQLite's own `busy_timeout` backs off to 100 ms sleeps. A rollback-journal
/// writer committing back to back leaves only short gaps between its
/// exclusive locks, and a reader polling every 100 ms almost never lands in
/// one: measured, a snapshot waited 6 s for its first read lock against a
/// full-speed writer. Polling every millisecond finds a gap within a few
/// milliseconds; once the snapshot holds its read lock, the writer waits
/// for the copy instead (see the module doc).
fn retry_every_millisecond(prior_calls: i32) -> bool {
    if prior_calls >= BUSY_RETRIES {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// Open a private snapshot file that nothing else touches: `immutable=1`
/// means no locks and no `-wal`/`-shm` files are created beside it, so
/// checking it can never change its bytes.
pub fn open_private(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        sqlite_uri(path, "immutable=1"),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Bytes kept as they are in a `file:` URI path: RFC 3986 unreserved
/// characters and `/`. Everything else, including every byte of a
/// non-ASCII or non-UTF-8 name, becomes `%XX`, which SQLite decodes back
/// to exactly that byte.
const URI_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `path` as a SQLite `file:` URI with `query` parameters (may be empty),
/// for opening with `SQLITE_OPEN_URI`. Any name Linux allows round-trips:
/// spaces, `%`, `?`, `#`, non-ASCII and non-UTF-8 bytes. The result is
/// plain ASCII.
///
/// ```
/// use std::path::Path;
/// use backup_core::sqlite::sqlite_uri;
/// assert_eq!(sqlite_uri(Path::new("/tmp/dé/a b?#%.db"), "immutable=1"),
///            Path::new("file:///tmp/d%C3%A9/a%20b%3F%23%25.db?immutable=1"));
/// // A relative name that looks like a URI stays a file name.
/// assert_eq!(sqlite_uri(Path::new("file:x.db"), ""), Path::new("file:file%3Ax.db"));
/// ```
pub fn sqlite_uri(path: &Path, query: &str) -> PathBuf {
    let bytes = path_bytes(path);
    // `file:///abs` (empty authority): a path starting with `//` must not
    // be read as `file://authority/...`.
    let mut uri = String::from(if path.is_absolute() {
        "file://"
    } else {
        "file:"
    });
    uri.extend(percent_encoding::percent_encode(&bytes, URI_PATH));
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(query);
    }
    uri.into()
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> std::borrow::Cow<'_, [u8]> {
    use std::os::unix::ffi::OsStrExt;
    std::borrow::Cow::Borrowed(path.as_os_str().as_bytes())
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> std::borrow::Cow<'_, [u8]> {
    match path.to_string_lossy() {
        std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(s.as_bytes()),
        std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.into_bytes()),
    }
}

/// What the SQLite this crate is linked with can do, for `--version` and
/// bug reports: the fast paths fall back quietly when it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// `sqlite_version()`.
    pub version: String,
    /// `sqlite_dbpage`: WAL databases stream their pages, no scratch copy.
    pub dbpage: bool,
    /// `SQLITE_ENABLE_SNAPSHOT`: the post-backup check reads the same
    /// snapshot, and runs read only the pages the WAL names.
    pub snapshot: bool,
}

/// True when this SQLite build has the `sqlite_dbpage` virtual table.
pub(crate) fn has_dbpage(conn: &Connection) -> bool {
    conn.prepare("SELECT data FROM sqlite_dbpage WHERE pgno = 1")
        .is_ok()
}

/// The linked SQLite's [`Build`].
pub fn build() -> Build {
    let conn = Connection::open_in_memory().ok();
    Build {
        version: rusqlite::version().to_string(),
        dbpage: conn.as_ref().is_some_and(has_dbpage),
        snapshot: cfg!(sqlite_snapshot),
    }
}

impl std::fmt::Display for Build {
    /// `SQLite 3.50.2 (sqlite_dbpage: yes, snapshots: yes)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no (slower fallback)" };
        write!(
            f,
            "SQLite {} (sqlite_dbpage: {}, snapshots: {})",
            self.version,
            yes(self.dbpage),
            yes(self.snapshot)
        )
    }
}
