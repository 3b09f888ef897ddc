//! The post-backup check, run on a twin connection to the same snapshot
//! while the pages stream, so it costs no extra wall time.

use crate::snapshot::PageStream;
use crate::verify::{self, Checks, DbReport};

use super::SnapshotFailure;

/// Run `read` (which streams `stream`'s pages) while `checks` run on a twin
/// connection; without a twin, the checks run after a successful read on
/// the stream's own connection. Returns what `read` returned and the
/// check's report (empty when the read failed and there was no twin).
pub(super) fn read_while_checking<T, E>(
    stream: &PageStream,
    checks: &Checks,
    read: impl FnOnce() -> Result<T, E>,
) -> Result<(Result<T, E>, DbReport), SnapshotFailure> {
    let checker = stream.twin()?.map(|conn| {
        // The checks revisit pages (foreign_key_check, at integrity_check
        // level, looks up a parent row for every child row); with SQLite's
        // default 2 MiB cache most revisits re-read pages from the OS.
        // 8 MiB halves that system time for a few MiB of memory.
        let _ = conn.pragma_update(None, "cache_size", -8192);
        let checks = checks.clone();
        std::thread::spawn(move || verify::check_connection(&conn, &checks))
    });
    let read = read();
    let report = match checker {
        Some(h) => h.join().map_err(|_| SnapshotFailure::CheckPanicked)?,
        None if read.is_ok() => verify::check_connection(stream.connection(), checks),
        None => DbReport::default(),
    };
    Ok((read, report))
}
