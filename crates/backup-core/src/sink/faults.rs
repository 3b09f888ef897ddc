//! Fault injection as [`Sink`] wrappers, in the spirit of `object_store`'s
//! `throttle.rs` and `limit.rs`: a test wraps a real sink instead of
//! sprinkling `if test { … }` branches through the engine.
//!
//! - [`FailAfter`]: the sink accepts `bytes` bytes in total (streamed writes
//!   and `put`s together), then every write fails like a full disk
//!   (`ErrorKind::StorageFull`). `FailAfter::new(sink, 0)` is a full disk.
//! - [`FailOn`]: one operation fails, optionally only for keys containing a
//!   given text (e.g. fail only the `put` of `manifests/`).
//!
//! ```
//! use std::io::Write;
//! use backup_core::sink::{MemorySink, Sink};
//! use backup_core::sink::faults::{FailAfter, FailOn, Op};
//!
//! let mem = MemorySink::new("mem");
//! let full = FailAfter::new(mem.clone(), 10);
//! let mut w = full.create("a.db").unwrap();
//! assert!(w.write_all(&[0u8; 64]).is_err());
//! w.abort();
//! assert!(mem.keys().is_empty());
//!
//! let no_manifests = FailOn::new(mem.clone(), Op::Put).for_keys("manifests/");
//! assert!(no_manifests.put("manifests/r.json", b"{}").is_err());
//! assert!(no_manifests.put("a.db.sha256", b"x").is_ok());
//! ```

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Placement, Sink, SinkError, SinkWriter};

/// An operation of the [`Sink`] / [`SinkWriter`] contract that [`FailOn`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Sink::create`].
    Create,
    /// Every `write` of a streamed upload.
    Write,
    /// [`SinkWriter::finish`] (the upload never becomes visible).
    Finish,
    /// [`Sink::put`] and [`Sink::put_if_absent`] (sidecars, manifests, chain links).
    Put,
    /// [`Sink::get`].
    Get,
    /// [`Sink::list`].
    List,
    /// [`Sink::delete`].
    Delete,
}

fn injected(op: &'static str, key: &str, what: &str) -> SinkError {
    SinkError::Io {
        op,
        key: key.to_string(),
        source: io::Error::other(format!("injected fault: {what}")),
    }
}

/// A sink with a fixed byte budget shared by every write: a disk that fills up.
#[derive(Debug, Clone)]
pub struct FailAfter<S> {
    inner: S,
    left: Arc<AtomicU64>,
}

impl<S: Sink> FailAfter<S> {
    /// Accept `bytes` bytes in total, then fail every write.
    pub fn new(inner: S, bytes: u64) -> Self {
        Self {
            inner,
            left: Arc::new(AtomicU64::new(bytes)),
        }
    }

    /// Take `len` bytes of the budget for a small atomic object: all of it
    /// fits, or nothing is taken and the write fails like a full disk.
    fn reserve(&self, key: &str, len: usize) -> Result<(), SinkError> {
        let grant = take(&self.left, len as u64);
        if grant < len as u64 {
            self.left.fetch_add(grant, Ordering::SeqCst);
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
    }

    /// Bytes still accepted.
    pub fn remaining(&self) -> u64 {
        self.left.load(Ordering::SeqCst)
    }
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

struct BudgetWriter {
    inner: Box<dyn SinkWriter>,
    left: Arc<AtomicU64>,
}

impl Write for BudgetWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let grant = take(&self.left, buf.len() as u64) as usize;
        if grant == 0 {
            // What a full disk says: ENOSPC.
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected fault: no space left on device",
            ));
        }
        // A short write, like write(2) on a filling disk; write_all retries
        // with the rest and then meets the error above.
        self.inner.write_all(&buf[..grant])?;
        Ok(grant)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SinkWriter for BudgetWriter {
    fn finish(self: Box<Self>) -> Result<u64, SinkError> {
        self.inner.finish()
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

impl<S: Sink> Sink for FailAfter<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn placement(&self) -> Placement {
        self.inner.placement()
    }
    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(BudgetWriter {
            inner: self.inner.create(key)?,
            left: self.left.clone(),
        }))
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        self.reserve(key, data.len())?;
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        self.reserve(key, data.len())?;
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError> {
        self.inner.get(key)
    }
    fn size(&self, key: &str) -> Result<Option<u64>, SinkError> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), SinkError> {
        self.inner.delete(key)
    }
    fn clean_incomplete(&self) -> Result<usize, SinkError> {
        self.inner.clean_incomplete()
    }
}

/// A sink whose `op` fails (for every key, or only keys containing a text).
#[derive(Debug, Clone)]
pub struct FailOn<S> {
    inner: S,
    op: Op,
    key_contains: Option<String>,
}

impl<S: Sink> FailOn<S> {
    /// Fail `op` for every key.
    pub fn new(inner: S, op: Op) -> Self {
        Self {
            inner,
            op,
            key_contains: None,
        }
    }

    /// Only fail keys that contain `text`.
    pub fn for_keys(mut self, text: impl Into<String>) -> Self {
        self.key_contains = Some(text.into());
        self
    }

    fn fails(&self, op: Op, key: &str) -> bool {
        op == self.op && self.key_contains.as_deref().is_none_or(|t| key.contains(t))
    }
}

struct FailingWriter {
    inner: Box<dyn SinkWriter>,
    key: String,
    fail_write: bool,
    fail_finish: bool,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.fail_write {
            return Err(io::Error::other("injected fault: write failed"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SinkWriter for FailingWriter {
    fn finish(self: Box<Self>) -> Result<u64, SinkError> {
        if self.fail_finish {
            self.inner.abort();
            return Err(injected("finish", &self.key, "finish failed"));
        }
        self.inner.finish()
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

impl<S: Sink> Sink for FailOn<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn placement(&self) -> Placement {
        self.inner.placement()
    }
    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        if self.fails(Op::Create, key) {
            return Err(injected("create", key, "create failed"));
        }
        Ok(Box::new(FailingWriter {
            inner: self.inner.create(key)?,
            key: key.to_string(),
            fail_write: self.fails(Op::Write, key),
            fail_finish: self.fails(Op::Finish, key),
        }))
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        if self.fails(Op::Put, key) {
            return Err(injected("write", key, "put failed"));
        }
        self.inner.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        // A conditional create is a put as far as faults go.
        if self.fails(Op::Put, key) {
            return Err(injected("write", key, "put failed"));
        }
        self.inner.put_if_absent(key, data)
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError> {
        if self.fails(Op::Get, key) {
            return Err(injected("read", key, "get failed"));
        }
        self.inner.get(key)
    }
    fn size(&self, key: &str) -> Result<Option<u64>, SinkError> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        if self.fails(Op::List, prefix) {
            return Err(injected("list", prefix, "list failed"));
        }
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), SinkError> {
        if self.fails(Op::Delete, key) {
            return Err(injected("delete", key, "delete failed"));
        }
        self.inner.delete(key)
    }
    fn clean_incomplete(&self) -> Result<usize, SinkError> {
        self.inner.clean_incomplete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    #[test]
    fn wrappers_that_do_not_fire_still_conform() {
        crate::sink::conformance::run(&FailAfter::new(MemorySink::new("m"), u64::MAX / 2));
        crate::sink::conformance::run(
            &FailOn::new(MemorySink::new("m"), Op::Put).for_keys("never"),
        );
    }

    #[test]
    fn fail_after_is_a_shared_budget() {
        let mem = MemorySink::new("m");
        let s = FailAfter::new(mem.clone(), 100);
        s.put("a", &[1; 60]).unwrap();
        assert!(s.put("b", &[1; 60]).is_err(), "put is all or nothing");
        let mut w = s.create("c").unwrap();
        let e = w.write_all(&[2; 60]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        w.abort();
        assert_eq!(mem.keys(), vec!["a"]);
        assert_eq!(s.remaining(), 0);
    }
}
