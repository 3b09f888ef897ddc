//! Fault injection and observation as one [`Sink`] wrapper, in the spirit of
//! `object_store`'s `throttle.rs` and `limit.rs`: a test wraps a real sink
//! instead of sprinkling `if test { … }` branches through the engine.
//!
//! [`Hooked`] forwards every call to the sink it wraps, after showing it to
//! a hook that may fail it (or watch, or hold it back), and can claim
//! another [`Placement`]. Two hooks come ready-made:
//! - [`fail_after`]: the sink accepts `bytes` bytes in total (streamed writes
//!   and `put`s together), then every write fails like a full disk
//!   (`ErrorKind::StorageFull`). `fail_after(sink, 0)` is a full disk.
//! - [`fail_on`]: one operation fails, optionally only for keys containing a
//!   given text (e.g. fail only the `put` of `manifests/`).
//!
//! ```
//! use std::io::Write;
//! use backup_core::sink::{MemorySink, Placement, Sink};
//! use backup_core::sink::faults::{Hooked, Op, fail_after, fail_on};
//!
//! let mem = MemorySink::new("mem");
//! let full = fail_after(mem.clone(), 10);
//! let mut w = full.create("a.db").unwrap();
//! assert!(w.write_all(&[0u8; 64]).is_err());
//! w.abort();
//! assert!(mem.keys().is_empty());
//!
//! let no_manifests = fail_on(mem.clone(), Op::Put, "manifests/");
//! assert!(no_manifests.put("manifests/r.json", b"{}").is_err());
//! assert!(no_manifests.put("a.db.sha256", b"x").is_ok());
//!
//! let cold = Hooked::new(mem.clone()).with_placement(Placement::Cold);
//! assert_eq!(cold.placement(), Placement::Cold);
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Placement, Sink, SinkError, SinkWriter};

/// An operation of the [`Sink`] / [`SinkWriter`] contract, as a hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Sink::create`].
    Create,
    /// Every `write` of a streamed upload.
    Write,
    /// [`SinkWriter::finish`] (when it fails, the upload never becomes visible).
    Finish,
    /// [`Sink::put`] and [`Sink::put_if_absent`] (sidecars, manifests, chain links).
    Put,
    /// [`Sink::get`].
    Get,
    /// Every `read` of a stream `get` returned.
    Read,
    /// [`Sink::size`].
    Size,
    /// [`Sink::list`] (the hook sees the prefix as the key).
    List,
    /// [`Sink::delete`].
    Delete,
}

impl Op {
    /// The `op` of the [`SinkError`] a failure reports, and what failed.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Op::Create => ("create", "create"),
            Op::Write => ("write", "write"),
            Op::Finish => ("finish", "finish"),
            Op::Put => ("write", "put"),
            Op::Get => ("read", "get"),
            Op::Read => ("read", "read"),
            Op::Size => ("size", "size"),
            Op::List => ("list", "list"),
            Op::Delete => ("delete", "delete"),
        }
    }
}

/// Runs before each operation with its key and how many bytes it moves
/// (`Write`, `Put`, `Read`; else 0). An error fails the operation instead.
type Hook = dyn Fn(Op, &str, usize) -> Result<(), SinkError> + Send + Sync;

/// A sink that forwards every call to `inner` once its hook lets it.
#[derive(Clone)]
pub struct Hooked<S> {
    inner: S,
    hook: Arc<Hook>,
    placement: Option<Placement>,
}

impl<S: Sink> Hooked<S> {
    /// Forward everything to `inner`, unchanged until told otherwise.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            hook: Arc::new(|_, _, _| Ok(())),
            placement: None,
        }
    }

    /// Show every operation to `hook` first.
    pub fn with_hook(
        mut self,
        hook: impl Fn(Op, &str, usize) -> Result<(), SinkError> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Arc::new(hook);
        self
    }

    /// Serve the `placement` tier whatever `inner` says.
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Hooked<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

/// A hook's error as a stream reports it: an injected I/O error keeps its kind.
fn into_io(e: SinkError) -> io::Error {
    match e {
        SinkError::Io { source, .. } => source,
        e => io::Error::other(e),
    }
}

struct HookedWriter {
    inner: Box<dyn SinkWriter>,
    key: String,
    hook: Arc<Hook>,
}

impl Write for HookedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.hook)(Op::Write, &self.key, buf.len()).map_err(into_io)?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SinkWriter for HookedWriter {
    fn finish(self: Box<Self>) -> Result<u64, SinkError> {
        if let Err(e) = (self.hook)(Op::Finish, &self.key, 0) {
            self.inner.abort();
            return Err(e);
        }
        self.inner.finish()
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

struct HookedReader {
    inner: Box<dyn Read + Send>,
    key: String,
    hook: Arc<Hook>,
}

impl Read for HookedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (self.hook)(Op::Read, &self.key, buf.len()).map_err(into_io)?;
        self.inner.read(buf)
    }
}

impl<S: Sink> Sink for Hooked<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn placement(&self) -> Placement {
        self.placement.unwrap_or_else(|| self.inner.placement())
    }
    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        (self.hook)(Op::Create, key, 0)?;
        Ok(Box::new(HookedWriter {
            inner: self.inner.create(key)?,
            key: key.to_string(),
            hook: self.hook.clone(),
        }))
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        (self.hook)(Op::Put, key, data.len())?;
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        // A conditional create is a put as far as hooks go.
        (self.hook)(Op::Put, key, data.len())?;
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError> {
        (self.hook)(Op::Get, key, 0)?;
        Ok(Box::new(HookedReader {
            inner: self.inner.get(key)?,
            key: key.to_string(),
            hook: self.hook.clone(),
        }))
    }
    fn size(&self, key: &str) -> Result<Option<u64>, SinkError> {
        (self.hook)(Op::Size, key, 0)?;
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        (self.hook)(Op::List, prefix, 0)?;
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), SinkError> {
        (self.hook)(Op::Delete, key, 0)?;
        self.inner.delete(key)
    }
    fn clean_incomplete(&self) -> Result<usize, SinkError> {
        self.inner.clean_incomplete()
    }
    fn modified(&self, key: &str) -> Result<Option<jiff::Timestamp>, SinkError> {
        self.inner.modified(key)
    }
}

/// A sink with a fixed byte budget shared by every write: a disk that fills
/// up. A `put` fits whole or takes nothing; a streamed write that does not
/// fit whole uses up what was left and fails, as `write_all` on a full disk
/// does (its last part is not passed on: the upload is lost either way).
pub fn fail_after<S: Sink>(inner: S, bytes: u64) -> Hooked<S> {
    let left = AtomicU64::new(bytes);
    Hooked::new(inner).with_hook(move |op, key, len| {
        let want = len as u64;
        let granted = match op {
            Op::Write => take(&left, want),
            Op::Put => {
                let granted = take(&left, want);
                if granted < want {
                    left.fetch_add(granted, Ordering::SeqCst);
                }
                granted
            }
            _ => return Ok(()),
        };
        if granted < want {
            // What a full disk says: ENOSPC.
            return Err(SinkError::Io {
                op: "write",
                key: key.to_string(),
                source: io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected fault: no space left on device",
                ),
            });
        }
        Ok(())
    })
}

/// Take up to `want` bytes of a budget; returns how many were granted.
fn take(left: &AtomicU64, want: u64) -> u64 {
    let mut cur = left.load(Ordering::SeqCst);
    loop {
        let grant = cur.min(want);
        match left.compare_exchange(cur, cur - grant, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return grant,
            Err(now) => cur = now,
        }
    }
}

/// A sink whose `op` fails for every key containing `keys` (`""`: every key).
pub fn fail_on<S: Sink>(inner: S, op: Op, keys: &str) -> Hooked<S> {
    let keys = keys.to_string();
    Hooked::new(inner).with_hook(move |o, key, _| {
        if o != op || !key.contains(keys.as_str()) {
            return Ok(());
        }
        let (verb, what) = op.names();
        Err(SinkError::Io {
            op: verb,
            key: key.to_string(),
            source: io::Error::other(format!("injected fault: {what} failed")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    #[test]
    fn wrappers_that_do_not_fire_still_conform() {
        crate::sink::conformance::run(&fail_after(MemorySink::new("m"), u64::MAX / 2));
        crate::sink::conformance::run(&fail_on(MemorySink::new("m"), Op::Put, "never"));
        crate::sink::conformance::run(
            &Hooked::new(MemorySink::new("m")).with_placement(Placement::Cold),
        );
    }

    #[test]
    fn fail_after_is_a_shared_budget() {
        let mem = MemorySink::new("m");
        let s = fail_after(mem.clone(), 100);
        s.put("a", &[1; 60]).unwrap();
        assert!(s.put("b", &[1; 60]).is_err(), "put is all or nothing");
        let mut w = s.create("c").unwrap();
        let e = w.write_all(&[2; 60]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        w.abort();
        assert_eq!(mem.keys(), vec!["a"]);
        // The failed write used up the rest.
        assert!(
            s.put("d", &[1]).is_err(),
            "budget left after the disk filled"
        );
    }

    #[test]
    fn fail_on_fails_one_operation_of_matching_keys() {
        let mem = MemorySink::new("m");
        let s = fail_on(mem.clone(), Op::Finish, "manifests/");
        let mut w = s.create("manifests/r.json").unwrap();
        w.write_all(b"{}").unwrap();
        let e = w.finish().unwrap_err();
        assert!(e.to_string().contains("finish failed"), "{e}");
        s.create("a.db").unwrap().finish().unwrap();
        assert_eq!(
            mem.keys(),
            vec!["a.db"],
            "the failed upload stays invisible"
        );
    }
}
