//! # backup-local
//!
//! A [`Sink`] over a local folder: the hot and warm tiers under a folder such
//! as `data/backups/`, or the cold tier on an off-host mount.
//!
//! Layout of one folder:
//! ```text
//! data/backups/
//!   colibri-r75-20260416-130812.db.zst          artifact
//!   colibri-r75-20260416-130812.db.zst.sha256   sidecar (sha256sum -c format)
//!   manifests/20260416T130812Z-1a2b.json         run manifest, written last
//!   .tmp/                                        snapshot scratch files
//! ```
//!
//! Every object is written to `.<name>.partial-<pid>` beside its final name,
//! fsynced, renamed, and the folder fsynced: a crash leaves either nothing
//! or a complete file, and the next run removes partial files whose process
//! is gone. (`object_store`'s `LocalFileSystem` also renames into place but
//! does not fsync, which is not enough for the only copy of someone's data.)
//!
//! ## Permissions
//!
//! A backup is a copy of a database: it must never be more readable than the
//! database. The sink's [`Modes`] (owner only, `0600` / `0700`, unless set
//! with [`LocalSink::with_modes`]) are given at creation: partial files are
//! created `0600` (`open(2)` with that mode, which no umask widens), get the
//! sink's file mode by `fchmod` on the descriptor once written, and only
//! then are renamed to their name; folders the sink creates get the folder
//! mode from `mkdir(2)`. So no moment exists in which an object, or a part
//! of one, is more readable than the sink's modes. Folders that exist
//! already are left alone; [`LocalSink::too_open`] finds those (and files)
//! that grant more than the modes.
//!
//! ```
//! use backup_core::sink::Sink;
//! let dir = tempfile::tempdir().unwrap();
//! let sink = backup_local::LocalSink::folder(dir.path());
//! sink.put("manifests/x.json", b"{}").unwrap();
//! assert_eq!(sink.list("manifests").unwrap(), vec!["manifests/x.json"]);
//! ```
#![warn(missing_docs)]

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use backup_core::fsutil::{self, Modes, WritebackFile};
use backup_core::sink::{Placement, Sink, SinkError, SinkWriter, validate_key};
use walkdir::WalkDir;

/// A folder used as a sink.
#[derive(Debug, Clone)]
pub struct LocalSink {
    name: String,
    root: PathBuf,
    placement: Placement,
    modes: Modes,
}

/// A file or folder of a sink that grants more than the sink's [`Modes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOpen {
    /// Its path.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// A folder.
    pub is_dir: bool,
}

impl LocalSink {
    /// A sink named `name` over `root` (created on first write), whose
    /// files are `0600` and folders `0700` (see [`Self::with_modes`]).
    pub fn new(name: impl Into<String>, root: impl Into<PathBuf>, placement: Placement) -> Self {
        Self {
            name: name.into(),
            root: root.into(),
            placement,
            modes: Modes::PRIVATE,
        }
    }

    /// The same sink creating files and folders with `modes` instead, e.g.
    /// [`Modes::of_source`] of the database it backs up. A sink shared by
    /// several databases takes the [`Modes::meet`] of theirs: one folder
    /// and one manifest per run hold them all, so the most private wins.
    pub fn with_modes(mut self, modes: Modes) -> Self {
        self.modes = modes;
        self
    }

    /// The modes of what it creates.
    pub fn modes(&self) -> Modes {
        self.modes
    }

    /// Create the root folder (and missing parents) with the folder mode,
    /// if missing. Writes do this on their own; call it first when
    /// something else may create a folder inside the root (the snapshot
    /// scratch folder `.tmp`), so the root still gets the sink's mode.
    pub fn ensure_root(&self) -> io::Result<()> {
        fsutil::create_dir_all_mode(&self.root, self.modes.dir)
    }

    /// The root folder and everything below it (scratch folders too) that
    /// grants more than the sink's modes, in path order. Symlinks are not
    /// followed. An absent root has none.
    pub fn too_open(&self) -> io::Result<Vec<TooOpen>> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(path) = stack.pop() {
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                for entry in fs::read_dir(&path)? {
                    stack.push(entry?.path());
                }
            } else if !meta.is_file() {
                continue;
            }
            if self.modes.exceeded_by(mode, meta.is_dir()) {
                out.push(TooOpen {
                    path,
                    mode,
                    is_dir: meta.is_dir(),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The usual local sink: named `local`, hot and warm tiers in `root`.
    pub fn folder(root: impl Into<PathBuf>) -> Self {
        Self::new("local", root, Placement::Local)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file path of a key (after validating it).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, SinkError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(op: &'static str, key: &str) -> impl FnOnce(io::Error) -> SinkError {
        let key = key.to_string();
        move |source| {
            if source.kind() == io::ErrorKind::NotFound && op == "read" {
                SinkError::NotFound { key }
            } else {
                SinkError::Io { op, key, source }
            }
        }
    }

    fn create_new_in_place(&self, path: &Path, key: &str, data: &[u8]) -> Result<(), SinkError> {
        let mut f = match fsutil::create_private(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SinkError::AlreadyExists {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(Self::io("write", key)(e)),
        };
        let written = f
            .write_all(data)
            .and_then(|()| f.sync_all())
            .and_then(|()| fsutil::set_mode(&f, self.modes.file))
            .and_then(|()| fsutil::fsync_dir(path.parent().expect("key has a parent")));
        if written.is_err() {
            // A short object must not stay claimed.
            let _ = fs::remove_file(path);
        }
        written.map_err(Self::io("write", key))
    }

    fn prepare(&self, key: &str) -> Result<(PathBuf, PathBuf), SinkError> {
        let path = self.path_of(key)?;
        let parent = path.parent().expect("key has a parent").to_path_buf();
        fsutil::create_dir_all_mode(&parent, self.modes.dir)
            .map_err(Self::io("create folder for", key))?;
        let tmp = fsutil::partial_path(&path);
        Ok((path, tmp))
    }
}

struct LocalWriter {
    key: String,
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<WritebackFile>>,
    bytes: u64,
    mode: u32,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("open").write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open").flush()
    }
}

impl SinkWriter for LocalWriter {
    fn finish(mut self: Box<Self>) -> Result<u64, SinkError> {
        let file = self.file.take().expect("open");
        let key = self.key.clone();
        let done = (|| {
            let file = file.into_inner().map_err(|e| e.into_error())?.into_inner();
            file.sync_all()?;
            // Created 0600; the sink's mode only now, on the descriptor,
            // just before the rename gives it its name.
            fsutil::set_mode(&file, self.mode)?;
            drop(file);
            fs::rename(&self.tmp, &self.path)?;
            fsutil::fsync_dir(self.path.parent().expect("parent"))
        })();
        match done {
            Ok(()) => Ok(self.bytes),
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                Err(SinkError::Io {
                    op: "write",
                    key,
                    source: e,
                })
            }
        }
    }
    fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Dropped without finish (error or panic upstream): leave nothing.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Sink for LocalSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn placement(&self) -> Placement {
        self.placement
    }

    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        let (path, tmp) = self.prepare(key)?;
        let file = fsutil::create_partial(&tmp).map_err(Self::io("create", key))?;
        Ok(Box::new(LocalWriter {
            key: key.to_string(),
            path,
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, WritebackFile::new(file))),
            bytes: 0,
            mode: self.modes.file,
        }))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        let (path, _) = self.prepare(key)?;
        fsutil::atomic_write_mode(&path, data, self.modes.file).map_err(Self::io("write", key))
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        let (path, _) = self.prepare(key)?;
        let parent = path.parent().expect("key has a parent");
        // Unique per call, not only per process: threads may race on one key.
        // Still a `.partial-<pid>` name, so a killed writer's file is cleaned.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().expect("key has a name").to_string_lossy();
        let nonce = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = fsutil::partial_path(&parent.join(format!("{name}.{nonce}")));
        // Private from creation, then the sink's mode before the name
        // appears, as `put` does.
        let written = (|| {
            let mut f = fsutil::create_private(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fsutil::set_mode(&f, self.modes.file)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Self::io("write", key)(e));
        }
        // link(2) never replaces an existing name (EEXIST), and the name
        // appears with the whole synced file behind it: create-if-absent and
        // atomic for readers in one call, across processes and NFS clients.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => fsutil::fsync_dir(parent).map_err(Self::io("write", key)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SinkError::AlreadyExists {
                key: key.to_string(),
            }),
            // No hard links here (FAT/exFAT drives for the cold tier say
            // EPERM): O_EXCL still lets exactly one writer create the name,
            // though a reader racing the write may see it short.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
                ) =>
            {
                self.create_new_in_place(&path, key, data)
            }
            Err(e) => Err(Self::io("write", key)(e)),
        }
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError> {
        let path = self.path_of(key)?;
        let f = File::open(path).map_err(Self::io("read", key))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }

    fn size(&self, key: &str) -> Result<Option<u64>, SinkError> {
        match fs::metadata(self.path_of(key)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io("stat", key)(e)),
        }
    }

    fn modified(&self, key: &str) -> Result<Option<jiff::Timestamp>, SinkError> {
        match fs::metadata(self.path_of(key)?).and_then(|m| m.modified()) {
            Ok(t) => Ok(jiff::Timestamp::try_from(t).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io("stat", key)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let prefix = prefix.trim_end_matches('/');
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path_of(prefix)?
        };
        let mut out = Vec::new();
        // Hidden entries are ours: partial files and scratch folders.
        let walk = WalkDir::new(&start)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
                    continue;
                }
                Err(e) => return Err(Self::io("list", prefix)(e.into())),
            };
            if entry.file_type().is_file() {
                let rel = entry.path().strip_prefix(&self.root).expect("under root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), SinkError> {
        match fs::remove_file(self.path_of(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io("delete", key)(e)),
        }
    }

    fn clean_incomplete(&self) -> Result<usize, SinkError> {
        let mut removed = 0;
        let walk = WalkDir::new(&self.root)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".tmp")
            .flatten();
        for entry in walk {
            if entry.file_type().is_file()
                && fsutil::is_stale_partial(&entry.file_name().to_string_lossy())
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_partials_are_cleaned_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalSink::new("local", dir.path(), Placement::Local);
        // pid 999999999 cannot exist (beyond pid_max).
        fs::write(dir.path().join(".a.db.zst.partial-999999999"), b"x").unwrap();
        let mine = sink.create("b.db.zst").unwrap();
        assert_eq!(sink.clean_incomplete().unwrap(), 1);
        assert_eq!(mine.finish().unwrap(), 0);
        assert_eq!(sink.list("").unwrap(), vec!["b.db.zst"]);
    }

    #[test]
    fn objects_and_folders_get_the_sink_modes_and_too_open_finds_the_rest() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let sink = LocalSink::folder(&root).with_modes(Modes::exact(0o640));
        let mut w = sink.create("x/y.db.zst").unwrap();
        w.write_all(b"data").unwrap();
        // While written: a 0600 partial file, nothing under its name.
        let partial = fsutil::partial_path(&root.join("x/y.db.zst"));
        assert_eq!(mode(&partial), 0o600);
        w.finish().unwrap();
        sink.put("x/y.db.zst.sha256", b"sum").unwrap();
        for (p, m) in [
            ("a", 0o750),
            ("a/b", 0o750),
            ("a/b/x", 0o750),
            ("a/b/x/y.db.zst", 0o640),
            ("a/b/x/y.db.zst.sha256", 0o640),
        ] {
            assert_eq!(mode(&dir.path().join(p)), m, "{p}");
        }
        assert!(sink.too_open().unwrap().is_empty());
        // The default is owner only; what it finds beyond that, in order.
        let private = LocalSink::folder(&root);
        let found: Vec<(String, u32)> = private
            .too_open()
            .unwrap()
            .into_iter()
            .map(|t| {
                (
                    t.path.strip_prefix(&root).unwrap().display().to_string(),
                    t.mode,
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (String::new(), 0o750),
                ("x".into(), 0o750),
                ("x/y.db.zst".into(), 0o640),
                ("x/y.db.zst.sha256".into(), 0o640),
            ]
        );
        assert!(
            LocalSink::folder(dir.path().join("absent"))
                .too_open()
                .unwrap()
                .is_empty()
        );
    }
}
