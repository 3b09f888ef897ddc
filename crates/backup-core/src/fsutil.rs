//! Durable file-system steps shared by the local sink and restore.

use std::ffi::{OsStr, OsString};
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
            // (nix wraps fcntl and stat, but not sync_file_range.)
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

/// The longest file name Linux file systems take (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Room kept after every name we make for what SQLite may add to it
/// (`-journal`, the longest of its companion suffixes).
const COMPANION: usize = "-journal".len();

/// A temporary name beside `target` that marks its owner process, so a later
/// run can tell leftovers of a killed process from work in progress:
/// `.<name>.partial-<pid>`, with `<name>` shortened (see [`shorten`]) when
/// the result, plus a SQLite companion suffix, would not fit in
/// [`NAME_MAX`]: wherever the final name fits, so does its temporary name.
///
/// ```
/// use std::path::Path;
/// use backup_core::fsutil::{partial_path, NAME_MAX};
/// let p = partial_path(Path::new("/d/app.db"));
/// assert_eq!(p, Path::new(&format!("/d/.app.db.partial-{}", std::process::id())));
/// let long = "x".repeat(248);
/// let p = partial_path(&Path::new("/d").join(&long));
/// let name = p.file_name().unwrap().len();
/// assert!(name + "-journal".len() <= NAME_MAX, "{name}");
/// ```
pub fn partial_path(target: &Path) -> PathBuf {
    let mut name = partial_prefix(target);
    name.push(std::process::id().to_string());
    target.with_file_name(name)
}

/// `.<name>.partial-`: what every [`partial_path`] of `target` starts with,
/// whichever process made it.
pub fn partial_prefix(target: &Path) -> OsString {
    // `.` + `.partial-` + the longest pid (10 digits) + a companion suffix.
    let budget = NAME_MAX - 1 - ".partial-".len() - 10 - COMPANION;
    let mut name = OsString::from(".");
    name.push(shorten(target.file_name().unwrap_or_default(), budget));
    name.push(".partial-");
    name
}

/// A name made of `target`'s file name and `suffix` that fits in
/// [`NAME_MAX`] with room for a SQLite companion suffix (`-wal`, `-journal`):
/// `<name><suffix>`, with `<name>` shortened as [`shorten`] does when needed.
pub fn with_suffix(target: &Path, suffix: &str) -> PathBuf {
    let budget = NAME_MAX.saturating_sub(suffix.len() + COMPANION);
    let mut name = shorten(target.file_name().unwrap_or_default(), budget);
    name.push(suffix);
    target.with_file_name(name)
}

/// `name` itself when it has at most `budget` bytes; otherwise its first
/// bytes (cut on a character boundary when it is UTF-8), `~` and 16 hex
/// digits of the SHA-256 of the whole name, `budget` bytes at most: still
/// recognisable, and distinct for distinct long names.
pub fn shorten(name: &OsStr, budget: usize) -> OsString {
    if name.len() <= budget {
        return name.to_os_string();
    }
    let hash = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(name.as_encoded_bytes())[..8])
    };
    let keep = budget.saturating_sub(1 + hash.len());
    let mut out = match name.to_str() {
        Some(s) => {
            let mut cut = keep.min(s.len());
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            OsString::from(&s[..cut])
        }
        None => cut_bytes(name, keep),
    };
    out.push("~");
    out.push(hash);
    out
}

#[cfg(unix)]
fn cut_bytes(name: &OsStr, keep: usize) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(&name.as_bytes()[..keep.min(name.len())]).to_os_string()
}

#[cfg(not(unix))]
fn cut_bytes(name: &OsStr, keep: usize) -> OsString {
    let s = name.to_string_lossy();
    let mut cut = keep.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    OsString::from(&s[..cut])
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
// Not tempfile's `persist`: it neither fsyncs the file nor the folder, and
// its random names would hide a killed writer's leftover from the pid-based
// cleanup ([`is_stale_partial`]).
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
    fn long_names_get_temporary_names_that_fit_and_stay_recognisable() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a".repeat(248), "é".repeat(124), "ü".repeat(127) + "x"] {
            let target = dir.path().join(&name);
            let tmp = partial_path(&target);
            let tmp_name = tmp.file_name().unwrap().to_str().unwrap().to_string();
            assert!(tmp_name.len() + "-journal".len() <= NAME_MAX, "{tmp_name}");
            // The file system takes it, with SQLite's companion too.
            File::create(&tmp).unwrap();
            File::create(dir.path().join(format!("{tmp_name}-journal"))).unwrap();
            // Same target, same name; another target, another name.
            assert_eq!(partial_path(&target), tmp);
            assert_ne!(partial_path(&dir.path().join(format!("{name}2"))), tmp);
            assert!(tmp_name.starts_with(&*partial_prefix(&target).to_string_lossy()));
            // A dead owner's leftover is still recognised as stale.
            let dead = tmp_name.replace(&format!("-{}", std::process::id()), "-999999999");
            assert!(is_stale_partial(&dead), "{dead}");
        }
        let kept = with_suffix(
            &dir.path().join("b".repeat(250)),
            ".broken-20260101-000000-2",
        );
        let n = kept.file_name().unwrap().len();
        assert!(n + "-journal".len() <= NAME_MAX && kept.to_string_lossy().ends_with("-2"));
    }

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
