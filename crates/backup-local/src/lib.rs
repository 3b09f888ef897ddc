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
//! ```
//! use backup_core::sink::{Sink, conformance};
//! let dir = tempfile::tempdir().unwrap();
//! let sink = backup_local::LocalSink::new("local", dir.path(), backup_core::sink::Placement::Local);
//! sink.put("manifests/x.json", b"{}").unwrap();
//! assert_eq!(sink.list("manifests").unwrap(), vec!["manifests/x.json"]);
//! ```
#![warn(missing_docs)]

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use backup_core::fsutil::{self, WritebackFile};
use backup_core::sink::{Placement, Sink, SinkError, SinkWriter, validate_key};

/// A folder used as a sink.
#[derive(Debug, Clone)]
pub struct LocalSink {
    name: String,
    root: PathBuf,
    placement: Placement,
}

impl LocalSink {
    /// A sink named `name` over `root` (created on first write).
    pub fn new(name: impl Into<String>, root: impl Into<PathBuf>, placement: Placement) -> Self {
        Self {
            name: name.into(),
            root: root.into(),
            placement,
        }
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

    fn create_new_in_place(path: &Path, key: &str, data: &[u8]) -> Result<(), SinkError> {
        let mut f = match File::create_new(path) {
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
        fs::create_dir_all(&parent).map_err(Self::io("create folder for", key))?;
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
        let file = File::create(&tmp).map_err(Self::io("create", key))?;
        Ok(Box::new(LocalWriter {
            key: key.to_string(),
            path,
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, WritebackFile::new(file))),
            bytes: 0,
        }))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        let (path, _) = self.prepare(key)?;
        fsutil::atomic_write(&path, data).map_err(Self::io("write", key))
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
        let written = (|| {
            let mut f = File::create_new(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
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
                Self::create_new_in_place(&path, key, data)
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

    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let prefix = prefix.trim_end_matches('/');
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path_of(prefix)?
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::io("list", prefix)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(Self::io("list", prefix))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Hidden entries are ours: partial files and scratch folders.
                if name.starts_with('.') {
                    continue;
                }
                let ft = entry.file_type().map_err(Self::io("list", prefix))?;
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if ft.is_file() {
                    let rel = entry
                        .path()
                        .strip_prefix(&self.root)
                        .expect("under root")
                        .to_path_buf();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
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
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() && name != ".tmp" {
                    stack.push(entry.path());
                } else if ft.is_file()
                    && fsutil::is_stale_partial(&name)
                    && fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_sink_conforms() {
        let dir = tempfile::tempdir().unwrap();
        backup_core::sink::conformance::run(&LocalSink::new("local", dir.path(), Placement::Local));
    }

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
}
