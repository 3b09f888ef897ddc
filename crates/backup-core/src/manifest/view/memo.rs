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

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::View;
use crate::digest::Sidecar;
use crate::manifest;
use crate::sink::{Sink, get_bytes};

/// `None` until [`remember`]; then views by sink.
static MEMO: Mutex<Option<HashMap<String, View>>> = Mutex::new(None);

fn memo() -> MutexGuard<'static, Option<HashMap<String, View>>> {
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
/// caller's [`keep`] puts the view back, advanced).
pub(super) fn recall(sink: &dyn Sink) -> Option<View> {
    let view = memo().as_mut()?.remove(&id(sink))?;
    let holds_tip = |tip: &manifest::Tip| {
        let sidecar = get_bytes(sink, &manifest::sidecar_key(&tip.key)).ok()?;
        let named = Sidecar::parse(std::str::from_utf8(&sidecar).ok()?).ok()?;
        Some(named.sha256 == tip.sha256)
    };
    (view.tip.as_ref().and_then(holds_tip) == Some(true)).then_some(view)
}

/// Keep `view` of `sink` (when this process keeps views and it was read whole). Threads reading at once
/// may leave the older of their views: that costs the next read a few more
/// links, never a wrong state, since any manifest of the chain is a place
/// to follow the links from.
pub(crate) fn keep(sink: &dyn Sink, view: &View) {
    if !view.problems.is_empty() || view.tip.is_none() {
        return;
    }
    if let Some(kept) = memo().as_mut() {
        kept.insert(id(sink), view.clone());
    }
}
