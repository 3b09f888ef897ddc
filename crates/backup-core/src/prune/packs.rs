//! The second phase of a prune: freeing the packs of pruned incremental
//! snapshots (restic's order).
//!
//! An incremental snapshot shares its packs and page index with the
//! snapshots after it, so the first phase only records it as pruned. This
//! phase then deletes an object (pack, page index, index sidecar) only when
//! 1. no snapshot the catalog still lists needs it, and
//! 2. the manifest that pruned the last snapshot needing it is older than
//!    the grace period ([`Retention::pack_grace`](crate::Retention)).
//!
//! The grace period protects the runs that read the catalog before that
//! manifest: a restore that chose the snapshot, or a backup building on it
//! whose new snapshot will need the same packs. Objects of a backup still
//! being written are never candidates: only pruned snapshots' objects are.
//! Deletions are recorded afterwards in a manifest's `collected` list, so a
//! later prune does not try them again; a prune killed in between leaves
//! objects no listed snapshot needs, which the next one deletes again (a
//! missing object is not an error).

use std::time::Duration;

use jiff::Timestamp;

use crate::manifest::view::State;
use crate::sink::Sink;

/// An object no listed snapshot needs any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unneeded {
    /// Object key.
    pub key: String,
    /// Its size, as recorded.
    pub size: u64,
    /// When the last snapshot needing it was recorded as pruned.
    pub released: Timestamp,
}

/// What the second phase finds in one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Garbage {
    /// Past their grace period: deleted by this prune.
    pub ready: Vec<Unneeded>,
    /// Still in their grace period.
    pub waiting: Vec<Unneeded>,
}

impl Garbage {
    /// Bytes of the ready objects.
    pub fn ready_bytes(&self) -> u64 {
        self.ready.iter().map(|u| u.size).sum()
    }
    /// When the first waiting object becomes ready.
    pub fn next_ready(&self, grace: Duration) -> Option<Timestamp> {
        let grace = jiff::SignedDuration::try_from(grace).ok()?;
        self.waiting
            .iter()
            .map(|u| u.released)
            .min()
            .and_then(|t| t.checked_add(grace).ok())
    }
}

/// Sort the objects pruned incremental snapshots released into ready and
/// waiting. A pure function of the catalog's state, the clock and the grace
/// period.
pub fn find(state: &State, now: Timestamp, grace: Duration) -> Garbage {
    // A snapshot listed after the prune may still need an object (a backup
    // that built on a pruned snapshot within the grace period). And what
    // was read from the sink is not trusted: a key that a listed snapshot
    // of any kind names, or that is part of the catalog, is never a pack
    // to free, whatever a (forged) checkpoint says.
    let listed: std::collections::HashSet<String> =
        crate::manifest::Entry::objects_of(state.live.iter().map(|l| &l.entry))
            .into_iter()
            .map(|n| n.key)
            .collect();
    let grace = jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX);
    let (ready, waiting) = state
        .released
        .iter()
        .filter(|(key, _)| {
            is_pack_object(key)
                && !listed.contains(*key)
                && !key.starts_with(crate::manifest::MANIFEST_DIR)
        })
        .map(|(key, r)| Unneeded {
            key: key.clone(),
            size: r.size,
            released: r.at,
        })
        .partition(|u| now.duration_since(u.released) >= grace);
    Garbage { ready, waiting }
}

/// Whether `key` is named as the objects pruned incremental snapshots
/// release are (a pack, a page index, an index's sidecar). Anything else,
/// a full artifact or a file another tool left beside our backups, is
/// never freed here, whatever a checkpoint says was released.
fn is_pack_object(key: &str) -> bool {
    [".pack", ".pageidx", ".pageidx.sha256"]
        .iter()
        .any(|suffix| key.ends_with(suffix))
}

/// What [`collect`] did in one sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    /// Objects deleted and recorded.
    pub deleted: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
    /// Objects still in their grace period.
    pub waiting: usize,
    /// When the first of those becomes ready.
    pub next_ready: Option<Timestamp>,
    /// The manifest recording the deletions: (key, SHA-256).
    pub manifest: Option<(String, String)>,
    /// What failed.
    pub errors: Vec<String>,
}

/// Read `sink`'s catalog, delete what [`find`] says is ready and record it
/// in a new manifest. A catalog that cannot be read whole is left alone:
/// an unreadable manifest may list a snapshot that needs a pack.
pub fn collect(sink: &dyn Sink, now: Timestamp, grace: Duration) -> Collected {
    let mut out = Collected::default();
    let view = match crate::manifest::view::view(sink) {
        Ok(v) if v.problems.is_empty() => v,
        Ok(v) => {
            out.errors.push(format!(
                "packs not collected: {} unreadable manifest(s), first: {}",
                v.problems.len(),
                v.problems[0]
            ));
            return out;
        }
        Err(e) => {
            out.errors
                .push(format!("packs not collected: cannot read the catalog: {e}"));
            return out;
        }
    };
    let garbage = find(&view.state, now, grace);
    out.waiting = garbage.waiting.len();
    out.next_ready = garbage.next_ready(grace);
    if garbage.ready.is_empty() {
        return out;
    }
    let started = Timestamp::now();
    for u in &garbage.ready {
        match sink.delete(&u.key) {
            Ok(()) => {
                tracing::info!(sink = sink.name(), key = %u.key, "collected");
                out.deleted.push(u.key.clone());
                out.bytes += u.size;
            }
            Err(e) => out.errors.push(format!("deleting {}: {e}", u.key)),
        }
    }
    if out.deleted.is_empty() {
        return out;
    }
    let appended = super::next_run_id(sink, started).and_then(|run_id| {
        crate::catalog::append::append(
            sink,
            crate::catalog::append::Draft {
                collected: out.deleted.clone(),
                ..crate::catalog::append::Draft::new(run_id, started)
            },
        )
    });
    match appended {
        Ok(a) => out.manifest = Some((a.key, a.sha256)),
        // Deleted but unrecorded: the next prune finds them again and
        // records them then.
        Err(e) => out
            .errors
            .push(format!("writing the collection manifest: {e}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::view::Released;

    /// A checkpoint that says a catalog object, a listed snapshot's own
    /// artifact or a file not named as a pack was released does not get
    /// any of them freed.
    #[test]
    fn only_released_objects_outside_the_catalog_and_the_listed_are_freed() {
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut state = State::default();
        for key in [
            "manifests/20260101T000000Z-aaaa.json",
            "app-1.pack",
            "app-2.pack",
            "app-1.pageidx.sha256",
            "colibri-r74-20260415.db",
            "app-20260101.db.zst",
        ] {
            std::sync::Arc::make_mut(&mut state.released)
                .insert(key.into(), Released { at, size: 1 });
        }
        let mut live = crate::manifest::view::Live {
            run_id: "20260101T000000Z-bbbb".into(),
            entry: serde_json::from_value(serde_json::json!({
                "label": "app", "key": "app-2.pack", "sidecar_key": "app-2.pack.sha256",
                "compression": "zstd", "size": 1, "sha256": "00", "db_size": 1,
                "db_sha256": "00", "page_size": 4096, "page_count": 1, "schema_sha256": "00",
                "row_counts": {}, "snapshot_at": "2026-01-01T00:00:00Z", "snapshot_ms": 1,
                "verified_with": "quick_check", "source": "app.db"
            }))
            .unwrap(),
        };
        live.entry.pages = None;
        state.live.push(std::sync::Arc::new(live));
        let g = find(
            &state,
            at + jiff::SignedDuration::from_hours(48),
            Duration::from_secs(60),
        );
        let ready: Vec<&str> = g.ready.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(ready, ["app-1.pack", "app-1.pageidx.sha256"], "{g:?}");
    }
}
