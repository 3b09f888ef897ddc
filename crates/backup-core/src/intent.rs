//! Intent records: what a run is about to write into a sink, so that the
//! objects of a run killed before its manifest can be found and removed.
//!
//! Before the first byte of a database's artifact is written, the run puts
//! `manifests/pending/<run id>-<label>.pending` listing the artifact and sidecar
//! keys it will create (after collision renaming, so never a key an earlier
//! run owns). Once the run's manifest is in the sink, the records go. A run
//! killed in between leaves complete-looking artifacts that no manifest
//! lists (`list` and `restore` never offer them, but they fill the disk);
//! the next run, in [`reclaim`], deletes what such a record names.
//!
//! Records of another process's run that is still going must survive: a
//! record is only acted on once its run is [`GRACE`] old (the run id holds
//! its start time), unless the run's manifest is already there. Templates
//! that may overwrite (`allow_overwrite`) get no records: their keys can
//! belong to an earlier run, and deleting those would lose a backup.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::manifest::{self, Entry, MANIFEST_DIR, Manifest};
use crate::sink::{Sink, SinkError, get_bytes};

/// How old a run without a manifest must be before its objects are removed:
/// longer than any backup runs.
pub const GRACE: SignedDuration = SignedDuration::from_hours(24);

const SUFFIX: &str = ".pending";

/// Their own folder, so that finding them lists only them: `manifests/`
/// holds a manifest, a sidecar and a link per run ever made.
const PENDING_DIR: &str = "manifests/pending";

/// One record: a run's keys for one database in one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The run that writes them.
    pub run_id: String,
    /// Artifact and sidecar keys.
    pub keys: Vec<String>,
}

/// The record's key for `run_id` and `label`.
pub fn key(run_id: &str, label: &str) -> String {
    format!("{PENDING_DIR}/{run_id}-{label}{SUFFIX}")
}

/// Put the record (an atomic `put`: all of it or nothing).
pub fn record(sink: &dyn Sink, label: &str, intent: &Intent) -> Result<(), SinkError> {
    let bytes = serde_json::to_vec_pretty(intent).expect("plain data serializes");
    sink.put(&key(&intent.run_id, label), &bytes)
}

/// Remove the record of `run_id` for `label`: nothing of it was kept in
/// this sink (the upload failed or was abandoned, and was cleaned up).
pub(crate) fn discard(sink: &dyn Sink, run_id: &str, label: &str) -> Result<(), SinkError> {
    sink.delete(&key(run_id, label))
}

/// Remove the records of `run_id` for `labels`, the databases it backed
/// up into this sink (its manifest is written). By key, not by listing the
/// records: one request a database instead of a listing and a delete each
/// run, and a record of another run is never touched.
pub fn clear<'a>(
    sink: &dyn Sink,
    run_id: &str,
    labels: impl IntoIterator<Item = &'a str>,
) -> Result<(), SinkError> {
    labels
        .into_iter()
        .try_for_each(|label| sink.delete(&key(run_id, label)))
}

/// Act on every record left by a run that will not finish: delete the keys
/// its manifest does not need (all of them when it has none), then the
/// record. Returns how many objects were deleted.
pub fn reclaim(sink: &dyn Sink, now: Timestamp) -> Result<usize, SinkError> {
    let legacy = crate::manifest::view::checkpoint_keys(sink)?.is_empty();
    reclaim_records(sink, now, legacy)
}

/// [`reclaim`], looking for records of older versions in `manifests/` too
/// when `legacy`.
pub fn reclaim_records(sink: &dyn Sink, now: Timestamp, legacy: bool) -> Result<usize, SinkError> {
    let mut deleted = 0;
    let mut all_listed: Option<Option<Vec<String>>> = None;
    for k in records(sink, legacy)? {
        let intent: Intent = match get_bytes(sink, &k)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(i) => i,
            // Unreadable: leave it for a person rather than guess.
            None => continue,
        };
        let listed: Vec<String> = match get_bytes(sink, &manifest::manifest_key(&intent.run_id)) {
            Ok(bytes) => match Manifest::from_bytes(&k, &bytes) {
                Ok(m) => m.entries.iter().flat_map(needed_keys).collect(),
                // Its manifest is there but unreadable: it may list any of
                // these keys, so keep them all (and the record).
                Err(_) => continue,
            },
            Err(e) if e.is_not_found() => {
                let started = manifest::run_started(&intent.run_id);
                if started.is_none_or(|t| now.duration_since(t) < GRACE) {
                    continue;
                }
                // The run's manifest may be under a later run id: an append
                // that found a newer tip takes an id after it. Keep whatever
                // any manifest lists; if one cannot be read, keep everything.
                if all_listed.is_none() {
                    all_listed = Some(listed_by_any(sink)?);
                }
                match all_listed.as_ref().expect("just filled") {
                    Some(keys) => keys.clone(),
                    None => continue,
                }
            }
            Err(e) => return Err(e),
        };
        for key in intent.keys.iter().filter(|key| !listed.contains(key)) {
            if sink.size(key)?.is_some() {
                sink.delete(key)?;
                deleted += 1;
            }
        }
        sink.delete(&k)?;
    }
    Ok(deleted)
}

/// Every artifact and sidecar key the sink's manifests list; `None` when a
/// manifest cannot be read (it might list anything).
fn listed_by_any(sink: &dyn Sink) -> Result<Option<Vec<String>>, SinkError> {
    let view = crate::manifest::view::view(sink)?;
    if !view.problems.is_empty() {
        return Ok(None);
    }
    Ok(Some(view.state.named_keys().into_iter().collect()))
}

fn needed_keys(e: &Entry) -> impl Iterator<Item = String> {
    e.objects().into_iter().map(|n| n.key)
}

/// The records in the sink. Versions before checkpoints put them directly
/// in `manifests/`; those are looked for too while the sink has no
/// checkpoint (its catalog is then read whole anyway), and by `catalog
/// repair`, since listing `manifests/` costs what the catalog's history
/// weighs.
fn records(sink: &dyn Sink, legacy: bool) -> Result<Vec<String>, SinkError> {
    let mut keys = sink.list(PENDING_DIR)?;
    if legacy {
        keys.extend(
            sink.list(MANIFEST_DIR)?
                .into_iter()
                .filter(|k| k.matches('/').count() == 1),
        );
    }
    keys.retain(|k| k.ends_with(SUFFIX));
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    const RUN: &str = "20261123T100000Z-1a2b";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn stored(sink: &MemorySink) -> Vec<String> {
        sink.list("").unwrap()
    }

    fn killed_run(sink: &MemorySink) {
        let keys = vec![
            "app-1000.db.zst".to_string(),
            "app-1000.db.zst.sha256".into(),
        ];
        record(
            sink,
            "app",
            &Intent {
                run_id: RUN.into(),
                keys: keys.clone(),
            },
        )
        .unwrap();
        for k in &keys {
            sink.put(k, b"x").unwrap();
        }
        // Another run's backup, which no record names.
        sink.put("app-0900.db.zst", b"older").unwrap();
    }

    #[test]
    fn a_killed_run_is_reclaimed_only_after_the_grace_period() {
        let sink = MemorySink::new("local");
        killed_run(&sink);
        assert_eq!(reclaim(&sink, at("2026-11-23T12:00:00Z")).unwrap(), 0);
        assert_eq!(stored(&sink).len(), 4, "a run 2 h old may still be going");
        assert_eq!(reclaim(&sink, at("2026-11-24T10:00:01Z")).unwrap(), 2);
        assert_eq!(stored(&sink), ["app-0900.db.zst"]);
    }

    #[test]
    fn with_its_manifest_written_only_unlisted_keys_go() {
        let sink = MemorySink::new("local");
        killed_run(&sink);
        let mut entry = manifest::sample_entry();
        entry.key = "app-1000.db.zst".into();
        entry.sidecar_key = "app-1000.db.zst.sha256".into();
        let t = at("2026-11-23T10:00:00Z");
        crate::catalog::append::write_manifest(&sink, RUN, t, t, vec![entry], vec![]).unwrap();
        // The manifest lists both keys, so nothing is deleted, and the
        // record goes at once (no grace period needed).
        assert_eq!(reclaim(&sink, at("2026-11-23T10:05:00Z")).unwrap(), 0);
        assert!(stored(&sink).iter().all(|k| !k.ends_with(SUFFIX)));
        assert!(stored(&sink).contains(&"app-1000.db.zst".to_string()));
    }

    #[test]
    fn an_unreadable_manifest_of_the_run_keeps_every_key_and_the_record() {
        let sink = MemorySink::new("local");
        killed_run(&sink);
        sink.put(&manifest::manifest_key(RUN), b"{ not a manifest")
            .unwrap();
        let before = stored(&sink);
        assert_eq!(reclaim(&sink, at("2026-11-25T00:00:00Z")).unwrap(), 0);
        assert_eq!(stored(&sink), before, "nothing it might list is deleted");
    }

    #[test]
    fn a_manifest_appended_under_a_later_run_id_still_protects_its_keys() {
        let sink = MemorySink::new("local");
        killed_run(&sink);
        // Another writer appended a run that started later; this run's
        // manifest then goes in under an id after that one.
        let t = at("2026-11-23T11:00:00Z");
        crate::catalog::append::write_manifest(
            &sink,
            "20261123T110000Z-0000",
            t,
            t,
            vec![],
            vec![],
        )
        .unwrap();
        let mut entry = manifest::sample_entry();
        entry.key = "app-1000.db.zst".into();
        entry.sidecar_key = "app-1000.db.zst.sha256".into();
        let (key, _) =
            crate::catalog::append::write_manifest(&sink, RUN, t, t, vec![entry], vec![]).unwrap();
        assert_ne!(key, manifest::manifest_key(RUN), "renamed after the tip");
        // Past the grace period, the record is acted on: nothing it lists goes.
        assert_eq!(reclaim(&sink, at("2026-11-25T00:00:00Z")).unwrap(), 0);
        assert!(stored(&sink).contains(&"app-1000.db.zst".to_string()));
        assert!(stored(&sink).iter().all(|k| !k.ends_with(SUFFIX)));
    }

    /// An incremental snapshot's packs are listed only in its page map: a
    /// run killed between its manifest and clearing its record must keep
    /// them, whether its manifest is under its own run id or a later one.
    #[test]
    fn the_packs_of_a_listed_incremental_snapshot_are_kept() {
        use crate::page_map::{PackRef, PageMap, Run};
        let t = at("2026-11-23T10:00:00Z");
        for (manifest_id, now) in [
            (RUN, at("2026-11-23T10:05:00Z")),
            ("20261123T110000Z-0000", at("2026-11-25T00:00:00Z")),
        ] {
            let sink = MemorySink::new("local");
            let keys: Vec<String> = ["app.pageidx", "app.pageidx.sha256", "app.000.pack"]
                .map(String::from)
                .to_vec();
            let intent = Intent {
                run_id: RUN.into(),
                keys: [&keys[..], &["app.001.pack".to_string()]].concat(),
            };
            record(&sink, "app", &intent).unwrap();
            for k in &keys {
                sink.put(k, b"x").unwrap();
            }
            let mut entry = manifest::sample_entry();
            entry.key = keys[0].clone();
            entry.sidecar_key = keys[1].clone();
            entry.page_count = 1;
            entry.pages = Some(PageMap {
                chain_depth: 0,
                chain_started: t,
                stored_bytes: 1,
                base_bytes: None,
                hashes_sha256: None,
                packs: vec![PackRef {
                    key: keys[2].clone(),
                    size: 1,
                    sha256: "0".repeat(64),
                    pages: 1,
                    index: keys[0].clone(),
                    index_sha256: "0".repeat(64),
                    index_at: 0,
                    xor: false,
                }],
                runs: vec![Run {
                    first: 0,
                    count: 1,
                    pack: 0,
                    at: 0,
                }]
                .into(),
            });
            crate::catalog::append::write_manifest(&sink, manifest_id, t, t, vec![entry], vec![])
                .unwrap();
            assert_eq!(reclaim(&sink, now).unwrap(), 0, "manifest {manifest_id}");
            for k in &keys {
                assert!(
                    stored(&sink).contains(k),
                    "{k} deleted (manifest {manifest_id})"
                );
            }
            assert!(stored(&sink).iter().all(|k| !k.ends_with(SUFFIX)));
        }
    }

    #[test]
    fn clear_removes_only_that_runs_records() {
        let sink = MemorySink::new("local");
        killed_run(&sink);
        let other = Intent {
            run_id: "20261123T110000Z-3c4d".into(),
            keys: vec![],
        };
        record(&sink, "app", &other).unwrap();
        clear(&sink, RUN, ["app", "never-recorded"]).unwrap();
        let left: Vec<String> = records(&sink, false).unwrap();
        assert_eq!(left, [key(&other.run_id, "app")]);
    }
}
