//! `catalog repair`: bring a chain that forked before appends were
//! serialised (two writers named the same `previous`) back to one chain.
//!
//! Nothing is deleted or rewritten: a repair appends one manifest (through
//! [`append`](super::append::append), like every writer) whose field
//! `relinked` lists every manifest off the chain, oldest first, each with the
//! SHA-256 of its bytes. From then on [`verify`] reaches them
//! through that record, as it reaches the others through `previous`, and
//! checks their artifacts again. The repair manifest is the record of what
//! was done. Links whose writer died before storing its manifest are
//! completed first.
//!
//! A repair only settles forks. Any other problem (an altered or deleted
//! manifest, a broken sidecar, a bad key) blocks it: re-linking would vouch
//! for tampered history.

use jiff::Timestamp;

use super::append::{self, AppendError, Appended, Draft};
use super::{ArtifactCheck, CatalogProblem, Options, verify};
use crate::digest::Sha256;
use crate::manifest::{self, Manifest, Relinked};
use crate::sink::{Sink, SinkError, get_bytes};

/// What a repair of one sink would do.
#[derive(Debug, Clone, Default)]
pub struct RepairPlan {
    /// Links whose manifest copy is missing: `(link key, manifest key)`.
    pub unfinished: Vec<(String, String)>,
    /// Manifests off the chain, oldest first, that the repair re-links.
    pub relink: Vec<Relinked>,
    /// Checkpoints that do not match the manifests: replaced by a new one.
    pub bad_checkpoints: Vec<String>,
    /// Problems a repair does not fix; it refuses while there are any.
    pub blocking: Vec<CatalogProblem>,
}

impl RepairPlan {
    /// True when there is something to do (and nothing blocks it).
    pub fn needed(&self) -> bool {
        !self.unfinished.is_empty() || !self.relink.is_empty() || !self.bad_checkpoints.is_empty()
    }
}

/// Why a repair did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Appending (or completing a link) failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The catalog has problems a repair must not paper over.
    #[error("{} problem(s) that a repair does not fix, first: {}", .0.len(), .0[0])]
    Blocked(Vec<CatalogProblem>),
}

/// Look at a sink's catalog and say what [`apply`] would do. Reads only.
pub fn plan(sink: &dyn Sink) -> Result<RepairPlan, RepairError> {
    let unfinished = append::unfinished(sink)?;
    let report = verify(
        sink,
        &Options {
            artifacts: ArtifactCheck::Skip,
        },
        None,
    )?;
    let mut out = RepairPlan {
        unfinished,
        ..RepairPlan::default()
    };
    for p in &report.problems {
        match p {
            CatalogProblem::Unlinked { key } => {
                let bytes = get_bytes(sink, key)?;
                let m = Manifest::from_bytes(key, &bytes)
                    .map_err(|e| RepairError::Blocked(vec![unreadable(key, e)]))?;
                let reason = report
                    .problems
                    .iter()
                    .find_map(|f| match f {
                        CatalogProblem::Fork { previous, keys } if keys.contains(key) => {
                            Some(format!(
                                "forked: {} also name{} previous {}",
                                keys.iter()
                                    .filter(|k| *k != key)
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                if keys.len() > 2 { "" } else { "s" },
                                previous.as_deref().map_or("(none: a first manifest)", |p| p
                                    .get(..16)
                                    .unwrap_or(p))
                            ))
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| "not on the chain from the head".into());
                out.relink.push(Relinked {
                    key: key.clone(),
                    run_id: m.run_id,
                    sha256: Sha256::hex_of(&bytes),
                    reason,
                });
            }
            // Settled by re-linking the manifests above.
            CatalogProblem::Fork { .. } => {}
            CatalogProblem::Checkpoint { key, .. } => out.bad_checkpoints.push(key.clone()),
            other => out.blocking.push(other.clone()),
        }
    }
    out.relink.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(out)
}

fn unreadable(key: &str, e: manifest::CatalogError) -> CatalogProblem {
    CatalogProblem::Unreadable {
        key: key.to_string(),
        message: e.to_string(),
    }
}

/// Complete unfinished links, then append one manifest re-linking every
/// manifest off the chain, then replace bad checkpoints by a checkpoint of
/// the whole catalog (a catalog without one gets its first). Returns the
/// repair manifest, or `None` when no re-linking was needed. The plan is
/// made again here, so a run that appended meanwhile is taken into account.
pub fn apply(sink: &dyn Sink, now: Timestamp) -> Result<Option<Appended>, RepairError> {
    let first = plan(sink)?;
    if !first.blocking.is_empty() {
        return Err(RepairError::Blocked(first.blocking));
    }
    append::finish(sink, &first.unfinished)?;
    let plan = plan(sink)?;
    if !plan.blocking.is_empty() {
        return Err(RepairError::Blocked(plan.blocking));
    }
    for key in &plan.bad_checkpoints {
        for k in [crate::naming::sidecar_key(key), key.clone()] {
            sink.delete(&k)?;
        }
    }
    // Records of interrupted runs left by versions before checkpoints.
    crate::intent::reclaim_records(sink, now, true)?;
    if plan.relink.is_empty() {
        crate::manifest::view::checkpoint_whole(sink)?;
        return Ok(None);
    }
    let appended = append::append(
        sink,
        Draft {
            relinked: plan.relink,
            ..Draft::new(manifest::new_run_id(now), now)
        },
    )?;
    crate::manifest::view::checkpoint_whole(sink)?;
    Ok(Some(appended))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    /// Two manifests naming the same previous, as concurrent writers made
    /// them before appends were serialised.
    fn forked() -> (MemorySink, Vec<String>) {
        let sink = MemorySink::new("m");
        let t: Timestamp = "2026-11-23T13:00:00Z".parse().unwrap();
        let base = crate::catalog::append::write_manifest(
            &sink,
            "20261123T130000Z-0001",
            t,
            t,
            vec![],
            vec![],
        )
        .unwrap();
        let mut keys = vec![base.0];
        for id in ["20261123T140000Z-0001", "20261123T150000Z-0001"] {
            let mut m = Manifest::from_bytes("x", &get_bytes(&sink, &keys[0]).unwrap()).unwrap();
            m.run_id = id.into();
            m.previous = Some(base.1.clone());
            m.previous_run_id = Some("20261123T130000Z-0001".into());
            let bytes = m.to_bytes();
            sink.put(
                &manifest::sidecar_key(&m.key()),
                crate::digest::Sidecar::new(
                    Sha256::hex_of(&bytes),
                    crate::naming::file_name(&m.key()),
                )
                .render()
                .as_bytes(),
            )
            .unwrap();
            sink.put(&m.key(), &bytes).unwrap();
            keys.push(m.key());
        }
        (sink, keys)
    }

    #[test]
    fn a_fork_is_relinked_and_every_manifest_kept() {
        let (sink, keys) = forked();
        let before = verify(&sink, &Options::default(), None).unwrap();
        assert!(
            before
                .problems
                .iter()
                .any(|p| matches!(p, CatalogProblem::Fork { .. })),
            "{:?}",
            before.problems
        );
        let plan = plan(&sink).unwrap();
        assert!(plan.blocking.is_empty(), "{:?}", plan.blocking);
        assert_eq!(
            plan.relink
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>(),
            [keys[1].as_str()]
        );
        assert!(
            plan.relink[0].reason.contains(&keys[2]),
            "{}",
            plan.relink[0].reason
        );
        let done = apply(&sink, Timestamp::now())
            .unwrap()
            .expect("a repair manifest");
        let after = verify(&sink, &Options::default(), None).unwrap();
        assert!(after.ok(), "{:?}", after.problems);
        assert_eq!((after.manifests, after.chain), (4, 4));
        for k in &keys {
            assert!(sink.size(k).unwrap().is_some(), "{k} kept");
        }
        let m = Manifest::from_bytes("x", &get_bytes(&sink, &done.key).unwrap()).unwrap();
        assert_eq!(m.relinked.len(), 1);
        // Nothing left to do.
        assert!(apply(&sink, Timestamp::now()).unwrap().is_none());
        // Altering a re-linked manifest is caught through the repair record.
        let mut v: serde_json::Value =
            serde_json::from_slice(&get_bytes(&sink, &keys[1]).unwrap()).unwrap();
        v["finished_at"] = "2030-01-01T00:00:00Z".into();
        sink.put(&keys[1], &serde_json::to_vec_pretty(&v).unwrap())
            .unwrap();
        let r = verify(&sink, &Options::default(), None).unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| matches!(p, CatalogProblem::RelinkBroken { key, actual: Some(_), .. } if key == &keys[1])),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn a_repair_refuses_tampered_history() {
        let (sink, keys) = forked();
        sink.put(&keys[0], b"{\"format\":\"sqlite-backup/manifest\"}")
            .unwrap();
        assert!(matches!(
            apply(&sink, Timestamp::now()),
            Err(RepairError::Blocked(_))
        ));
    }
}
