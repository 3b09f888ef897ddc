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
pub(crate) fn partial_prefix(target: &Path) -> OsString {
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
pub(crate) fn with_suffix(target: &Path, suffix: &str) -> PathBuf {
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
pub(crate) fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Write `data` to `target` atomically: a partial file beside it (`0600`
/// from creation), fsync, rename over the target, fsync the directory. The
/// result is `0600`; see [`atomic_write_mode`] for another mode.
// Not tempfile's `persist`: it neither fsyncs the file nor the folder, and
// its random names would hide a killed writer's leftover from the pid-based
// cleanup ([`is_stale_partial`]).
pub fn atomic_write(target: &Path, data: &[u8]) -> io::Result<()> {
    atomic_write_mode(target, data, PRIVATE_FILE)
}

/// [`atomic_write`] giving the file exactly `mode` (permission bits,
/// whatever the umask). The partial file is created `0600` and gets `mode`
/// (by `fchmod` on its descriptor) after its last byte is written, before
/// the rename makes it visible under its name.
pub fn atomic_write_mode(target: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    atomic_write_owned(target, data, mode, None)
}

/// [`atomic_write_mode`], also giving the file group `group` (when set)
/// before it becomes visible: a file another user's process reads (a
/// metrics collector) keeps the group it was given.
pub fn atomic_write_owned(
    target: &Path,
    data: &[u8],
    mode: u32,
    group: Option<u32>,
) -> io::Result<()> {
    let tmp = partial_path(target);
    let result = (|| {
        let mut f = create_partial(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        if group.is_some() {
            std::os::unix::fs::fchown(&f, None, group)?;
        }
        set_mode(&f, mode)?;
        std::fs::rename(&tmp, target)?;
        // `report.html` has the parent "", which is the working folder.
        fsync_dir(
            target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Permission bits of scratch and partial files: owner read and write.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
/// Permission bits of folders made only for ourselves: owner only.
pub const PRIVATE_DIR: u32 = 0o700;

/// Create a new file (it must not exist) for writing, readable and
/// writable by its owner only (`0600`) from the moment it exists. The mode
/// is given to `open(2)`, and the umask can only remove bits, so no umask
/// makes it wider; a `chmod` afterwards would leave a moment in which it is.
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut options = File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE);
    }
    options.open(path)
}

/// [`create_private`] for a partial file of ours ([`partial_path`]): one
/// left at the same name (by an earlier process that had our pid) is
/// removed first, so the new one is still created `0600`, never reused
/// with whatever mode it had.
pub fn create_partial(path: &Path) -> io::Result<File> {
    match create_private(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            create_private(path)
        }
        r => r,
    }
}

/// A new temporary folder (removed when dropped), owner only (`0700`) from
/// creation, in `parent` or else the system's temporary folder. tempfile's
/// own default is `0777` minus the umask: `0755` under the usual one.
pub fn private_tempdir(prefix: &str, parent: Option<&Path>) -> io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(PRIVATE_DIR));
    }
    match parent {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
}

/// Give an open file exactly these permission bits (`fchmod` on its
/// descriptor: no path lookup, so nothing else can be changed by mistake).
pub fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// The permission bits (`0o777` part) of `path`, following symlinks.
pub(crate) fn mode_of(path: &Path) -> io::Result<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).map(|_| PRIVATE_FILE)
    }
}

/// Create `dir` and its missing parents, each with exactly `mode`
/// (whatever the umask); folders that exist are left as they are.
///
/// Each folder is created with `mode` by `mkdir(2)`, so the umask can only
/// narrow it; when it did (a configured mode wider than the umask allows),
/// the new, still empty folder gets `mode` by `chmod` right away.
pub fn create_dir_all_mode(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_mode(parent, mode)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode);
    }
    match builder.create(dir) {
        Ok(()) => {}
        // Made by someone else meanwhile: theirs, leave its mode alone.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    #[cfg(unix)]
    if mode_of(dir)? != mode & 0o777 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The permission bits of what a local sink creates: its files (artifacts,
/// sidecars, manifests) and its folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Files, e.g. `0o600`.
    pub file: u32,
    /// Folders, e.g. `0o700`.
    pub dir: u32,
}

impl Default for Modes {
    fn default() -> Self {
        Self::PRIVATE
    }
}

impl Modes {
    /// Owner only: files `0600`, folders `0700`.
    pub const PRIVATE: Modes = Modes {
        file: PRIVATE_FILE,
        dir: PRIVATE_DIR,
    };

    /// Files with exactly `file` (e.g. a configured `0640`), folders with
    /// the same bits plus search (`x`) wherever `file` grants read.
    ///
    /// ```
    /// use backup_core::fsutil::Modes;
    /// assert_eq!(Modes::exact(0o640), Modes { file: 0o640, dir: 0o750 });
    /// ```
    pub fn exact(file: u32) -> Modes {
        let file = file & 0o777;
        Modes {
            file,
            dir: file | ((file & 0o444) >> 2),
        }
    }

    /// What backups of a database file with permission bits `source` get:
    /// owner read and write (the tool's own user must read them back), and
    /// read for group and others only where `source` grants it; never
    /// write or execute for them.
    ///
    /// ```
    /// use backup_core::fsutil::Modes;
    /// assert_eq!(Modes::from_source(0o600), Modes::PRIVATE);
    /// assert_eq!(Modes::from_source(0o640), Modes { file: 0o640, dir: 0o750 });
    /// assert_eq!(Modes::from_source(0o666), Modes { file: 0o644, dir: 0o755 });
    /// assert_eq!(Modes::from_source(0o400), Modes::PRIVATE);
    /// ```
    pub fn from_source(source: u32) -> Modes {
        Modes::exact(PRIVATE_FILE | (source & 0o044))
    }

    /// The modes for backups of the database file at `path`, as readable
    /// as the file really is: its own bits, minus group or other read when
    /// its folder does not let group or others reach it (no `x`). `None`
    /// when it cannot be read (absent).
    pub fn of_source(path: &Path) -> Option<Modes> {
        let file = mode_of(path).ok()?;
        let reach = path
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .and_then(|d| mode_of(d).ok())
            .map(|d| ((d & 0o010) << 2) | ((d & 0o001) << 2))
            .unwrap_or(0);
        Some(Modes::from_source(file & (0o600 | reach)))
    }

    /// The more restrictive of both: only the bits both grant.
    pub fn meet(self, other: Modes) -> Modes {
        Modes {
            file: self.file & other.file,
            dir: self.dir & other.dir,
        }
    }

    /// True when a file (or, with `is_dir`, a folder) with permission bits
    /// `mode` grants anything beyond these modes.
    pub fn exceeded_by(self, mode: u32, is_dir: bool) -> bool {
        let allowed = if is_dir { self.dir } else { self.file };
        mode & 0o777 & !allowed != 0
    }

    /// `chmod` symbolic modes that bring files and folders back to these
    /// modes in one recursive call (`X`: search on folders only), e.g.
    /// `u=rwX,g=rX,o=` for `0640`.
    pub fn chmod_spec(self) -> String {
        let who = |shift: u32| {
            let bits = (self.file >> shift) & 0o7;
            let mut s = String::new();
            if bits & 4 != 0 {
                s.push('r');
            }
            if bits & 2 != 0 {
                s.push('w');
            }
            if (self.dir >> shift) & 1 != 0 {
                s.push('X');
            }
            s
        };
        format!("u={},g={},o={}", who(6), who(3), who(0))
    }
}

/// Format permission bits as `chmod` takes them: `0640`.
pub fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Parse `0640` / `640` (octal permission bits, at most `0777`).
pub fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
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
    fn private_files_and_folders_get_their_modes_whatever_the_umask_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let file = create_private(&f).unwrap();
        assert_eq!(mode_of(&f).unwrap(), 0o600);
        assert!(create_private(&f).is_err(), "must not exist");
        set_mode(&file, 0o640).unwrap();
        assert_eq!(mode_of(&f).unwrap(), 0o640);
        // A leftover partial of ours is replaced, not reused with its mode.
        let p = partial_path(&dir.path().join("g"));
        std::fs::write(&p, b"old").unwrap();
        set_mode(&File::open(&p).unwrap(), 0o666).unwrap();
        create_partial(&p).unwrap();
        assert_eq!(mode_of(&p).unwrap(), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        // atomic_write: 0600, or exactly the mode asked for, even wider
        // than a 022 umask would let open(2) make it.
        let a = dir.path().join("a");
        atomic_write(&a, b"x").unwrap();
        assert_eq!(mode_of(&a).unwrap(), 0o600);
        atomic_write_mode(&a, b"y", 0o664).unwrap();
        assert_eq!(
            (mode_of(&a).unwrap(), std::fs::read(&a).unwrap()),
            (0o664, b"y".to_vec())
        );
        // Every folder created gets the mode; existing ones keep theirs.
        let deep = dir.path().join("x/y/z");
        create_dir_all_mode(&deep, 0o775).unwrap();
        for d in ["x", "x/y", "x/y/z"] {
            assert_eq!(mode_of(&dir.path().join(d)).unwrap(), 0o775, "{d}");
        }
        let before = mode_of(dir.path()).unwrap();
        create_dir_all_mode(&dir.path().join("x/w"), 0o700).unwrap();
        assert_eq!(mode_of(&dir.path().join("x")).unwrap(), 0o775);
        assert_eq!(mode_of(&dir.path().join("x/w")).unwrap(), 0o700);
        assert_eq!(mode_of(dir.path()).unwrap(), before);
    }

    #[test]
    fn modes_follow_the_source_and_what_its_folder_lets_through() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"").unwrap();
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        chmod(dir.path(), 0o755);
        for (file, want) in [
            (0o600, Modes::PRIVATE),
            (
                0o640,
                Modes {
                    file: 0o640,
                    dir: 0o750,
                },
            ),
            (
                0o644,
                Modes {
                    file: 0o644,
                    dir: 0o755,
                },
            ),
            (
                0o664,
                Modes {
                    file: 0o644,
                    dir: 0o755,
                },
            ),
            (
                0o604,
                Modes {
                    file: 0o604,
                    dir: 0o705,
                },
            ),
        ] {
            chmod(&db, file);
            assert_eq!(Modes::of_source(&db), Some(want), "{file:o}");
        }
        // A 0644 file in a 0750 folder: others cannot reach it.
        chmod(&db, 0o644);
        chmod(dir.path(), 0o750);
        assert_eq!(
            Modes::of_source(&db),
            Some(Modes {
                file: 0o640,
                dir: 0o750
            })
        );
        chmod(dir.path(), 0o700);
        assert_eq!(Modes::of_source(&db), Some(Modes::PRIVATE));
        chmod(dir.path(), 0o755);
        assert_eq!(Modes::of_source(&dir.path().join("absent.db")), None);
        // Several databases: the most private wins.
        let m = Modes::from_source(0o644).meet(Modes::from_source(0o640));
        assert_eq!(
            m,
            Modes {
                file: 0o640,
                dir: 0o750
            }
        );
        assert!(m.exceeded_by(0o644, false) && !m.exceeded_by(0o600, false));
        assert!(m.exceeded_by(0o755, true) && !m.exceeded_by(0o750, true));
        assert_eq!(m.chmod_spec(), "u=rwX,g=rX,o=");
        assert_eq!(Modes::PRIVATE.chmod_spec(), "u=rwX,g=,o=");
        assert_eq!(
            (format_mode(0o640), parse_mode("0640"), parse_mode("640")),
            ("0640".into(), Some(0o640), Some(0o640))
        );
        assert_eq!(
            (parse_mode("0800"), parse_mode("1777"), parse_mode("")),
            (None, None, None)
        );
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
