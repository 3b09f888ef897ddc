//! Durable file-system steps shared by the local sink and restore.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Flush a directory entry to disk so a rename inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A file being written front to back that hands each full 8 MiB to the
/// disk as it goes (Linux `sync_file_range`, like RocksDB's `bytes_per_sync`),
/// so the closing `fsync` finds little left to write instead of the whole
/// file, and dirty pages never pile up in memory. Elsewhere a plain file.
/// Wrap it in a `BufWriter`; call `sync_all` on [`Self::into_inner`] to finish.
#[derive(Debug)]
pub struct WritebackFile {
    file: File,
    written: u64,
    handed: u64,
}

impl WritebackFile {
    /// How much to let accumulate before starting writeback.
    const STEP: u64 = 8 << 20;

    /// Wrap a freshly created (empty) file.
    pub fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            handed: 0,
        }
    }

    /// The file, for the closing `sync_all`.
    pub fn into_inner(self) -> File {
        self.file
    }

    fn hand_over(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on an fd we own. A failure only means
            // the closing fsync does all the work, as without this call.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.handed as libc::off64_t,
                    (self.written - self.handed) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.handed = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.handed >= Self::STEP {
            self.hand_over();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A temporary name beside `target` that marks its owner process, so a later
/// run can tell leftovers of a killed process from work in progress.
pub fn partial_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// If `file_name` is a partial file left by a process that no longer runs,
/// return true (it is safe to delete).
///
/// Partial files are always hidden (`.<name>.partial-<pid>`, see
/// [`partial_path`]); a snapshot scratch file may also have SQLite's own
/// companions beside it (`-journal`, `-wal`, `-shm`), which a killed process
/// leaves behind too.
///
/// ```
/// use backup_core::fsutil::is_stale_partial;
/// // pid 999999999 is beyond any pid_max: the owner is gone.
/// assert!(is_stale_partial(".a.db.partial-999999999"));
/// assert!(is_stale_partial(".a.db.partial-999999999-journal"));
/// assert!(!is_stale_partial("a.db.partial-999999999")); // not ours: not hidden
/// assert!(!is_stale_partial(".a.db.partial-999999999-x"));
/// ```
pub fn is_stale_partial(file_name: &str) -> bool {
    if !file_name.starts_with('.') {
        return false;
    }
    let Some((_, rest)) = file_name.rsplit_once(".partial-") else {
        return false;
    };
    let pid = ["-journal", "-wal", "-shm"]
        .iter()
        .find_map(|s| rest.strip_suffix(s))
        .unwrap_or(rest);
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    match pid.parse::<u32>() {
        Ok(pid) => !pid_alive(pid),
        Err(_) => false,
    }
}

/// Whether a process with this id is running (Linux: `/proc`; elsewhere we
/// assume it is, and leave the file alone).
pub fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Write `data` to `target` atomically: a partial file beside it, fsync,
/// rename over the target, fsync the directory.
pub fn atomic_write(target: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = partial_path(target);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        fsync_dir(target.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_file_writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = io::BufWriter::new(WritebackFile::new(File::create(&path).unwrap()));
        // Past two writeback steps, in odd-sized pieces.
        let data: Vec<u8> = (0..(17u32 << 20) + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        for piece in data.chunks(999_983) {
            w.write_all(piece).unwrap();
        }
        let inner = w.into_inner().map_err(|e| e.into_error()).unwrap();
        assert!(inner.handed >= 16 << 20 && inner.handed <= inner.written);
        inner.into_inner().sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
