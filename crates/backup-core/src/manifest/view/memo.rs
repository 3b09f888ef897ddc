//! The catalog views a long-lived process keeps between reads.
//!
//! A checkpoint grows with the entries it lists (about a kilobyte each), and
//! every read of it is a GET, a SHA-256 and a parse of the whole thing. A
//! daemon at one run a second would pay that several times a run, for a
//! state it already held a second ago. So a process that opts in (the CLI
//! does, see [`remember`]) keeps each sink's last view and, on the next
//! read, only checks that the sink still holds its tip (the tip's sidecar
//! names the same SHA-256) and follows the append links from there, as a
//! reader does from a checkpoint. A memo that does not check out is
//! dropped and the catalog is read as without one.
//!
//! Library callers keep the old behaviour (every read from the sink) unless
//! they opt in: a test that edits a sink behind a view's back expects the
//! next read to see it.
//!
//! Within one backup run ([`Scope`]) a view checked once is not checked
//! again: the run reads each sink's catalog to find what to build on and
//! again to append, seconds apart, and each check is two requests (the tip's
//! sidecar, the link after it). The second read would only learn early of a
//! writer that appended in between, which the append's conditional claim
//! finds out anyway (it loses the race, reads the winner's link and goes on
//! from there).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::View;
use crate::digest::Sidecar;
use crate::manifest;
use crate::sink::{Sink, get_bytes};

/// `None` until [`remember`]; then views by sink, each with the scope it
/// was last checked in (0: none).
static MEMO: Mutex<Option<HashMap<String, (View, u64)>>> = Mutex::new(None);

/// Scope numbers, never reused; 0 is none.
static SCOPES: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The scope open on this thread. A scope covers its own thread's
    /// reads only: a prune or drill on another thread of the daemon checks
    /// for itself.
    static OPEN: Cell<u64> = const { Cell::new(0) };
}

/// One operation's reads of the catalogs on this thread (a backup run): a
/// view checked within it is trusted for the rest of it. See the module
/// documentation.
#[must_use = "the scope ends when this is dropped"]
pub struct Scope {
    outer: u64,
}

impl Scope {
    /// Open a scope on this thread until the value is dropped.
    pub fn open() -> Self {
        let id = SCOPES.fetch_add(1, Ordering::Relaxed);
        Scope {
            outer: OPEN.replace(id),
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        OPEN.set(self.outer);
    }
}

fn memo() -> MutexGuard<'static, Option<HashMap<String, (View, u64)>>> {
    // A panic elsewhere while holding the lock leaves nothing half-written
    // that matters: at worst a stale view, which is checked before use.
    MEMO.lock().unwrap_or_else(|e| e.into_inner())
}

/// A sink's identity within this process: its name and location.
pub(crate) fn id(sink: &dyn Sink) -> String {
    format!("{}\n{}", sink.name(), sink.location())
}

/// Keep catalog views in memory in this process from now on.
pub fn remember() {
    memo().get_or_insert_with(HashMap::new);
}

/// Whether this process keeps views.
pub fn enabled() -> bool {
    memo().is_some()
}

/// The kept view of `sink`, if its tip is still the sink's (taken out: the
/// caller's [`keep`] puts the view back, advanced), and whether it was
/// checked in this scope already (then it is not checked again, and need
/// not be advanced).
pub(super) fn recall(sink: &dyn Sink) -> Option<(View, bool)> {
    let (view, checked) = memo().as_mut()?.remove(&id(sink))?;
    if checked != 0 && checked == OPEN.get() {
        return Some((view, true));
    }
    let holds_tip = |tip: &manifest::Tip| {
        let sidecar = get_bytes(sink, &manifest::sidecar_key(&tip.key)).ok()?;
        let named = Sidecar::parse(std::str::from_utf8(&sidecar).ok()?).ok()?;
        Some(named.sha256 == tip.sha256)
    };
    (view.tip.as_ref().and_then(holds_tip) == Some(true)).then_some((view, false))
}

/// Drop the kept view of `sink`, if any: the caller is about to advance the
/// one it holds and keep that instead. Until then the two share their
/// released objects, and advancing past a prune would copy them all.
pub(crate) fn forget(sink: &dyn Sink) {
    if let Some(kept) = memo().as_mut() {
        kept.remove(&id(sink));
    }
}

/// Keep `view` of `sink` (when this process keeps views and it was read
/// whole), as checked in the open scope. Threads reading at once
/// may leave the older of their views: that costs the next read a few more
/// links, never a wrong state, since any manifest of the chain is a place
/// to follow the links from.
pub(crate) fn keep(sink: &dyn Sink, view: &View) {
    if !view.problems.is_empty() || view.tip.is_none() {
        return;
    }
    if let Some(kept) = memo().as_mut() {
        kept.insert(id(sink), (view.clone(), OPEN.get()));
    }
}
