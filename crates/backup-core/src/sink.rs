//! Where artifacts go: the [`Sink`] trait, an in-memory sink for tests, and
//! the conformance suite every sink must pass.
//!
//! A sink stores objects under `/`-separated keys relative to its own root.
//! The contract that keeps backups trustworthy:
//! - [`Sink::create`] streams an object that becomes visible only when
//!   [`SinkWriter::finish`] succeeds; an aborted or dropped writer leaves
//!   nothing that `get` or `list` would return.
//! - [`Sink::put`] is atomic: readers see the old object, or the new one.
//! - [`Sink::put_if_absent`] is atomic too, and of two writers creating one
//!   key exactly one succeeds: the primitive the catalog's append serialises
//!   on, across processes and hosts.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

#[cfg(any(test, feature = "testing"))]
pub mod faults;

/// What went wrong talking to a sink. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The object does not exist.
    #[error("{key}: not found")]
    NotFound {
        /// Object key.
        key: String,
    },
    /// A key that would escape the sink's root or is otherwise unusable.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// Object key.
        key: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// [`Sink::put_if_absent`] found an object already there (left untouched).
    #[error("{key}: already exists")]
    AlreadyExists {
        /// Object key.
        key: String,
    },
    /// Local I/O failed.
    #[error("{op} {key}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Object key.
        key: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The store refused our credentials (authentication or permission).
    #[error("{op} {key}: authentication failed: {message}")]
    Unauthorized {
        /// What we were doing.
        op: &'static str,
        /// Object key.
        key: String,
        /// How to fix it and what the server said, scrubbed of secrets.
        message: String,
    },
    /// The sink's root (an Azure container, an S3 bucket) does not exist.
    #[error("{op} {key}: {message}")]
    MissingRoot {
        /// What we were doing.
        op: &'static str,
        /// Object key.
        key: String,
        /// What is missing and what the server said, scrubbed of secrets.
        message: String,
    },
    /// The remote store refused or failed otherwise. The cause is kept as
    /// scrubbed text rather than as a source error: a store client's errors
    /// can carry credentials (SAS tokens in URLs).
    #[error("{op} {key}: {message}")]
    Remote {
        /// What we were doing.
        op: &'static str,
        /// Object key.
        key: String,
        /// Human-readable cause, already scrubbed of secrets.
        message: String,
    },
}

impl SinkError {
    /// True when the object was simply absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True when the store refused the credentials.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
    }

    /// True when a conditional create lost to an existing object.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }
}

/// Where a sink sits in the tier layout.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// On this host (hot and warm tiers).
    Local,
    /// Object storage.
    Remote,
    /// Off-host cold tier (external drive, mounted share).
    Cold,
}

/// A streaming upload in progress.
pub trait SinkWriter: Write + Send {
    /// Make the object visible and return its stored size in bytes.
    fn finish(self: Box<Self>) -> Result<u64, SinkError>;
    /// Throw the partial object away. Dropping without `finish` does the same
    /// as far as the sink can manage.
    fn abort(self: Box<Self>);
}

/// A place to keep backup artifacts.
pub trait Sink: Send + Sync + fmt::Debug {
    /// The name used in config, manifests and output (`local`, `cold`, `azure`).
    fn name(&self) -> &str;
    /// Where it is, for people: a folder or `azure://container/prefix`. Never secrets.
    fn location(&self) -> String;
    /// Which tier this sink serves.
    fn placement(&self) -> Placement;
    /// Start streaming a new object at `key`.
    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError>;
    /// Store a small object atomically (sidecars, manifests).
    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError>;
    /// Store a small object atomically only if nothing is stored at `key`:
    /// [`SinkError::AlreadyExists`] otherwise, and the stored object is left
    /// as it was. Of several writers racing on one key (other processes,
    /// other hosts), exactly one succeeds. Readers see nothing or all of it.
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError>;
    /// Stream an object back.
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError>;
    /// The stored size, or `None` when absent.
    fn size(&self, key: &str) -> Result<Option<u64>, SinkError>;
    /// Keys directly or indirectly below `prefix` (a folder, no trailing `/`), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError>;
    /// Remove an object; removing an absent object is not an error.
    fn delete(&self, key: &str) -> Result<(), SinkError>;
    /// Remove leftovers of interrupted uploads; returns how many.
    fn clean_incomplete(&self) -> Result<usize, SinkError> {
        Ok(0)
    }
    /// When the object was last written, where the sink knows (`catalog
    /// adopt` dates a backup whose name has no date by it); `None` when
    /// absent or unknown.
    fn modified(&self, _key: &str) -> Result<Option<jiff::Timestamp>, SinkError> {
        Ok(None)
    }
}

/// Read a whole small object (sidecar, manifest) into memory.
pub fn get_bytes(sink: &dyn Sink, key: &str) -> Result<Vec<u8>, SinkError> {
    let mut out = Vec::new();
    sink.get(key)?
        .read_to_end(&mut out)
        .map_err(|source| SinkError::Io {
            op: "read",
            key: key.to_string(),
            source,
        })?;
    Ok(out)
}

/// Check that `key` is a clean relative path: no `..`, no empty or `.`
/// segments, no leading `/`, no backslashes or control characters.
///
/// ```
/// use backup_core::sink::validate_key;
/// assert!(validate_key("sqlite/2026-01-01/app.db.zst").is_ok());
/// assert!(validate_key("../etc/passwd").is_err());
/// assert!(validate_key("/abs").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<(), SinkError> {
    let bad = |reason| {
        Err(SinkError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') {
        return bad("absolute path");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return bad("control character or backslash");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("empty, `.` or `..` path segment");
    }
    Ok(())
}

/// An in-memory sink, for tests and examples. Clones share storage.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    name: String,
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemorySink {
    /// A new empty sink called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            objects: Arc::default(),
        }
    }

    /// All stored keys (for assertions).
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }
}

struct MemoryWriter {
    key: String,
    buf: Vec<u8>,
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SinkWriter for MemoryWriter {
    fn finish(self: Box<Self>) -> Result<u64, SinkError> {
        let n = self.buf.len() as u64;
        self.objects.lock().unwrap().insert(self.key, self.buf);
        Ok(n)
    }
    fn abort(self: Box<Self>) {}
}

impl Sink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }
    fn location(&self) -> String {
        format!("memory://{}", self.name)
    }
    fn placement(&self) -> Placement {
        Placement::Local
    }
    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        validate_key(key)?;
        Ok(Box::new(MemoryWriter {
            key: key.to_string(),
            buf: Vec::new(),
            objects: self.objects.clone(),
        }))
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        validate_key(key)?;
        self.objects
            .lock()
            .unwrap()
            .insert(key.to_string(), data.to_vec());
        Ok(())
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        validate_key(key)?;
        match self.objects.lock().unwrap().entry(key.to_string()) {
            std::collections::btree_map::Entry::Occupied(_) => Err(SinkError::AlreadyExists {
                key: key.to_string(),
            }),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(data.to_vec());
                Ok(())
            }
        }
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError> {
        validate_key(key)?;
        let data = self.objects.lock().unwrap().get(key).cloned();
        data.map(|d| Box::new(io::Cursor::new(d)) as Box<dyn Read + Send>)
            .ok_or_else(|| SinkError::NotFound {
                key: key.to_string(),
            })
    }
    fn size(&self, key: &str) -> Result<Option<u64>, SinkError> {
        validate_key(key)?;
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|d| d.len() as u64))
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let objects = self.objects.lock().unwrap();
        if prefix.is_empty() {
            return Ok(objects.keys().cloned().collect());
        }
        // A range of the ordered keys, as an object store's index answers
        // a prefix: scanning every key made this test sink's runs grow with
        // what it holds, which is no real store's cost.
        let folder = format!("{}/", prefix.trim_end_matches('/'));
        Ok(objects
            .range(folder.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&folder))
            .cloned()
            .collect())
    }
    fn delete(&self, key: &str) -> Result<(), SinkError> {
        validate_key(key)?;
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
}

/// The conformance suite: every [`Sink`] implementation runs
/// [`conformance::run`] against a fresh, empty instance in its tests.
#[cfg(any(test, feature = "testing"))]
pub mod conformance {
    use super::*;

    /// Run every check; panics with a description on the first failure.
    pub fn run(sink: &dyn Sink) {
        streaming_round_trip(sink);
        aborted_upload_leaves_nothing(sink);
        dropped_upload_leaves_nothing(sink);
        put_replaces_atomically(sink);
        put_if_absent_creates_once(sink);
        list_is_scoped_and_sorted(sink);
        delete_is_idempotent(sink);
        missing_objects_are_not_found(sink);
        rejects_escaping_keys(sink);
    }

    fn pattern(len: usize) -> Vec<u8> {
        // Deterministic, not compressible by accident, crosses chunk borders.
        let mut x: u32 = 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn streaming_round_trip(sink: &dyn Sink) {
        let data = pattern(3 * 1024 * 1024 + 17);
        let key = "conformance/stream/a.db.zst";
        let mut w = sink.create(key).expect("create");
        for chunk in data.chunks(64 * 1024 + 3) {
            w.write_all(chunk).expect("write");
        }
        assert_eq!(sink.size(key).expect("size"), None, "visible before finish");
        let n = w.finish().expect("finish");
        assert_eq!(n, data.len() as u64, "finish reports stored size");
        assert_eq!(sink.size(key).unwrap(), Some(data.len() as u64));
        let back = get_bytes(sink, key).expect("get");
        assert!(back == data, "round trip changed the bytes");
        sink.delete(key).unwrap();
    }

    fn aborted_upload_leaves_nothing(sink: &dyn Sink) {
        let key = "conformance/abort/a.db";
        let mut w = sink.create(key).unwrap();
        w.write_all(&pattern(100_000)).unwrap();
        w.abort();
        assert_eq!(sink.size(key).unwrap(), None, "aborted object visible");
        assert!(
            sink.list("conformance/abort").unwrap().is_empty(),
            "aborted upload listed"
        );
    }

    fn dropped_upload_leaves_nothing(sink: &dyn Sink) {
        let key = "conformance/drop/a.db";
        {
            let mut w = sink.create(key).unwrap();
            w.write_all(&pattern(10_000)).unwrap();
        }
        assert_eq!(sink.size(key).unwrap(), None, "dropped object visible");
        assert!(sink.list("conformance/drop").unwrap().is_empty());
    }

    fn put_replaces_atomically(sink: &dyn Sink) {
        let key = "conformance/put/m.json";
        sink.put(key, b"one").unwrap();
        sink.put(key, b"two!").unwrap();
        assert_eq!(get_bytes(sink, key).unwrap(), b"two!");
        assert_eq!(sink.size(key).unwrap(), Some(4));
        sink.delete(key).unwrap();
    }

    fn put_if_absent_creates_once(sink: &dyn Sink) {
        let key = "conformance/claim/next";
        sink.put_if_absent(key, b"first")
            .expect("create an absent key");
        match sink.put_if_absent(key, b"second!") {
            Err(e) => assert!(e.is_already_exists(), "expected AlreadyExists, got {e}"),
            Ok(()) => panic!("put_if_absent replaced an existing object"),
        }
        assert_eq!(get_bytes(sink, key).unwrap(), b"first", "loser changed it");
        assert_eq!(sink.size(key).unwrap(), Some(5));
        // An object stored by `put` counts as present too.
        sink.put("conformance/claim/put", b"x").unwrap();
        assert!(
            sink.put_if_absent("conformance/claim/put", b"y")
                .is_err_and(|e| e.is_already_exists())
        );
        assert!(sink.put_if_absent("../x", b"x").is_err(), "escaping key");
        // Nothing else is left behind (no temporary objects listed).
        assert_eq!(
            sink.list("conformance/claim").unwrap(),
            vec!["conformance/claim/next", "conformance/claim/put"]
        );
        for k in sink.list("conformance/claim").unwrap() {
            sink.delete(&k).unwrap();
        }
        // Racing writers, each with its own handle on the sink: one wins.
        let wins = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let wins = &wins;
                s.spawn(
                    move || match sink.put_if_absent("conformance/claim/race", &[i; 64]) {
                        Ok(()) => {
                            wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(e) => assert!(e.is_already_exists(), "racer {i}: {e}"),
                    },
                );
            }
        });
        assert_eq!(wins.into_inner(), 1, "exactly one racer creates the key");
        let stored = get_bytes(sink, "conformance/claim/race").unwrap();
        assert!(stored.len() == 64 && stored.iter().all(|b| *b == stored[0]));
        sink.delete("conformance/claim/race").unwrap();
    }

    fn list_is_scoped_and_sorted(sink: &dyn Sink) {
        for k in [
            "conformance/list/b/2.json",
            "conformance/list/a.json",
            "conformance/list/b/1.json",
            "conformance/listing-sibling.json",
        ] {
            sink.put(k, b"x").unwrap();
        }
        assert_eq!(
            sink.list("conformance/list").unwrap(),
            vec![
                "conformance/list/a.json",
                "conformance/list/b/1.json",
                "conformance/list/b/2.json"
            ],
            "list must return full keys below the folder only, sorted"
        );
        for k in sink.list("conformance").unwrap() {
            sink.delete(&k).unwrap();
        }
        assert!(sink.list("conformance").unwrap().is_empty());
    }

    fn delete_is_idempotent(sink: &dyn Sink) {
        sink.delete("conformance/never-existed.db")
            .expect("delete absent");
    }

    fn missing_objects_are_not_found(sink: &dyn Sink) {
        match sink.get("conformance/missing.db") {
            Err(e) => assert!(e.is_not_found(), "expected NotFound, got {e}"),
            Ok(_) => panic!("get of a missing object succeeded"),
        }
        assert_eq!(sink.size("conformance/missing.db").unwrap(), None);
    }

    fn rejects_escaping_keys(sink: &dyn Sink) {
        for key in ["../x", "/abs", "a/../../b", "a//b", ""] {
            assert!(sink.put(key, b"x").is_err(), "put accepted {key:?}");
            assert!(
                sink.put_if_absent(key, b"x").is_err(),
                "put_if_absent accepted {key:?}"
            );
            assert!(sink.create(key).is_err(), "create accepted {key:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_sink_conforms() {
        super::conformance::run(&super::MemorySink::new("memory"));
    }
}
