use std::collections::BTreeMap;
use std::io::Write;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::anchor::{self, AnchorLog};
use crate::catalog::append::write_manifest;
use crate::compress::Format;
use crate::database::CheckLevel;
use crate::manifest::{Pruned, manifest_key};
use crate::sink::MemorySink;

fn t(i: usize) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_800_000_000 + 3600 * i as i64)
}

fn run_id(i: usize) -> String {
    format!("{}-{:04x}", t(i).strftime("%Y%m%dT%H%M%SZ"), i)
}

/// Store a gzip artifact + sidecar and return its entry.
fn artifact(sink: &dyn Sink, i: usize) -> Entry {
    let db = format!("database bytes of run {i}").repeat(50).into_bytes();
    let mut gz = Vec::new();
    {
        let mut enc = Compression::new(Format::Gzip)
            .encoder(Box::new(&mut gz))
            .unwrap();
        enc.write_all(&db).unwrap();
        enc.finish().unwrap();
    }
    let key = format!("app-{i:04}.db.gz");
    let sha256 = Sha256::hex_of(&gz);
    sink.put(&key, &gz).unwrap();
    let sidecar_key = crate::naming::sidecar_key(&key);
    sink.put(
        &sidecar_key,
        crate::digest::Sidecar::new(&sha256, &key)
            .render()
            .as_bytes(),
    )
    .unwrap();
    Entry {
        adopted: None,
        label: "app".into(),
        tag: None,
        key,
        sidecar_key,
        compression: Format::Gzip,
        size: gz.len() as u64,
        sha256,
        db_size: db.len() as u64,
        db_sha256: Sha256::hex_of(&db),
        page_size: 4096,
        page_count: 1,
        schema_sha256: "0".repeat(64),
        row_counts: BTreeMap::from([("tasks".into(), i as u64)]),
        snapshot_at: t(i),
        snapshot_ms: 1,
        verified_with: CheckLevel::QuickCheck,
        source: "/srv/app.db".into(),
        host: None,
        source_mode: None,
        encrypted_to: vec![],
        sealed: None,
        pages: None,
    }
}

/// A sink with `n` chained runs, one artifact each. Returns the heads.
fn chain(n: usize) -> (MemorySink, Vec<String>) {
    chain_on("local", n)
}

/// [`chain`] on a sink named `name`.
fn chain_on(name: &str, n: usize) -> (MemorySink, Vec<String>) {
    let sink = MemorySink::new(name);
    let heads = (0..n)
        .map(|i| {
            let e = artifact(&sink, i);
            write_manifest(&sink, &run_id(i), t(i), t(i), vec![e], vec![])
                .unwrap()
                .1
        })
        .collect();
    (sink, heads)
}

fn check(sink: &dyn Sink, depth: ArtifactCheck, anchors: Option<&AnchorLog>) -> Report {
    verify(sink, &Options { artifacts: depth }, anchors).unwrap()
}

/// Edit a manifest and reseal its sidecar, as someone covering their
/// tracks would: what is left to catch it is the chain (or the anchor). A
/// checkpoint is stored back as plain JSON, as earlier versions wrote them.
fn edit(sink: &MemorySink, key: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let mut bytes = get_bytes(sink, key).unwrap();
    if key.ends_with(".checkpoint") {
        bytes = zstd::decode_all(bytes.as_slice()).unwrap();
    }
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    f(&mut v);
    let mut bytes = serde_json::to_vec_pretty(&v).unwrap();
    bytes.push(b'\n');
    put_sealed(sink, key, &bytes);
}

/// Store manifest bytes with a matching sidecar.
fn put_sealed(sink: &MemorySink, key: &str, bytes: &[u8]) {
    let sidecar = crate::digest::Sidecar::new(Sha256::hex_of(bytes), crate::naming::file_name(key));
    sink.put(&manifest::sidecar_key(key), sidecar.render().as_bytes())
        .unwrap();
    sink.put(key, bytes).unwrap();
}

/// A manifest written the way writers did before appends were serialised:
/// linked to the newest key, with no claim on the chain position.
fn write_unclaimed(sink: &MemorySink, run: usize, entries: Vec<Entry>) -> String {
    let tip = manifest::tip(sink).unwrap();
    let m = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        run_id: run_id(run),
        sink: sink.name().into(),
        tool_version: "old".into(),
        started_at: t(run),
        finished_at: t(run),
        previous: tip.as_ref().map(|t| t.sha256.clone()),
        previous_run_id: tip.as_ref().map(|t| t.run_id.clone()),
        previous_fields: tip.map(|t| t.fields).unwrap_or_default(),
        entries,
        pruned: vec![],
        collected: vec![],
        relinked: vec![],
    };
    put_sealed(sink, &m.key(), &m.to_bytes());
    m.key()
}

fn anchor_log(lines: &[(&str, &str)]) -> AnchorLog {
    let text: String = lines
        .iter()
        .map(|(sink, head)| format!("{}\n", anchor::format_line(t(0), sink, head)))
        .collect();
    AnchorLog::parse(&text)
}

#[test]
fn a_clean_chain_has_no_problems() {
    let (sink, heads) = chain(5);
    for depth in [
        ArtifactCheck::Skip,
        ArtifactCheck::Cheap,
        ArtifactCheck::Deep,
    ] {
        let r = check(&sink, depth, None);
        assert!(r.ok(), "{depth:?}: {:?}", r.problems);
        assert_eq!(r.chain, 5);
        assert_eq!(r.manifests, 5);
        assert_eq!(r.head.as_deref(), Some(heads[4].as_str()));
        assert_eq!(r.head.as_deref(), manifest::head(&sink).unwrap().as_deref());
    }
    let deep = check(&sink, ArtifactCheck::Deep, None);
    assert_eq!(deep.artifacts, 5);
    assert!(deep.hashed_bytes > 0);
}

#[test]
fn manifests_record_their_predecessor_by_hash_run_and_fields() {
    let (sink, heads) = chain(2);
    let m =
        Manifest::from_bytes("", &get_bytes(&sink, &manifest_key(&run_id(1))).unwrap()).unwrap();
    assert_eq!(m.previous.as_deref(), Some(heads[0].as_str()));
    assert_eq!(m.previous_run_id, Some(run_id(0)));
    assert!(m.previous_fields.contains_key("entries[0].sha256"));
    assert!(m.previous_fields.contains_key("finished_at"));
}

#[test]
fn a_deleted_manifest_is_named() {
    let (sink, _) = chain(5);
    sink.delete(&manifest_key(&run_id(2))).unwrap();
    let r = check(&sink, ArtifactCheck::Cheap, None);
    assert_eq!(
        r.problems,
        vec![CatalogProblem::Deleted {
            run_id: run_id(2),
            key: manifest_key(&run_id(2)),
            sha256: Manifest::from_bytes("", &get_bytes(&sink, &manifest_key(&run_id(3))).unwrap())
                .unwrap()
                .previous
                .unwrap(),
            named_by: manifest_key(&run_id(3)),
        }],
        "{:#?}",
        r.problems
    );
    // The walk resumed below the gap: runs 0 and 1 are still checked.
    assert_eq!(r.chain, 4);
    let text = r.problems[0].to_string();
    assert!(
        text.contains(&manifest_key(&run_id(2))) && text.contains("deleted"),
        "{text}"
    );
}

#[test]
fn an_altered_manifest_is_named_with_its_field() {
    let (sink, _) = chain(5);
    let key = manifest_key(&run_id(1));
    edit(&sink, &key, |v| {
        v["entries"][0]["row_counts"]["tasks"] = 999.into()
    });
    let r = check(&sink, ArtifactCheck::Cheap, None);
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    match &r.problems[0] {
        CatalogProblem::Altered {
            key: k,
            named_by,
            fields,
            ..
        } => {
            assert_eq!(k, &key);
            assert_eq!(named_by, &manifest_key(&run_id(2)));
            assert_eq!(fields, &["entries[0].row_counts"]);
        }
        other => panic!("expected Altered, got {other}"),
    }
    assert_eq!(r.chain, 5);
}

#[test]
fn an_altered_size_is_named_twice_by_chain_and_by_artifact() {
    let (sink, _) = chain(3);
    let key = manifest_key(&run_id(0));
    edit(&sink, &key, |v| v["entries"][0]["size"] = 1.into());
    let r = check(&sink, ArtifactCheck::Cheap, None);
    let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        matches!(&r.problems[0], CatalogProblem::Altered { fields, .. } if fields == &["entries[0].size"]),
        "{text:#?}"
    );
    assert!(
        matches!(
            &r.problems[1],
            CatalogProblem::SizeMismatch {
                recorded: 1,
                index: 0,
                ..
            }
        ),
        "{text:#?}"
    );
}

#[test]
fn a_reformatted_manifest_is_altered_with_no_field_changed() {
    let (sink, _) = chain(3);
    let key = manifest_key(&run_id(1));
    let mut bytes = get_bytes(&sink, &key).unwrap();
    bytes.extend_from_slice(b"\n");
    put_sealed(&sink, &key, &bytes);
    let r = check(&sink, ArtifactCheck::Skip, None);
    assert!(
        matches!(&r.problems[..], [CatalogProblem::Altered { fields, .. }] if fields[0].starts_with("none")),
        "{:#?}",
        r.problems
    );
}

#[test]
fn swapped_manifests_are_reported_as_reordered() {
    let (sink, _) = chain(4);
    let (a, b) = (manifest_key(&run_id(1)), manifest_key(&run_id(2)));
    let (ba, bb) = (get_bytes(&sink, &a).unwrap(), get_bytes(&sink, &b).unwrap());
    sink.put(&a, &bb).unwrap();
    sink.put(&b, &ba).unwrap();
    let r = check(&sink, ArtifactCheck::Cheap, None);
    assert!(r.problems.contains(&CatalogProblem::Misplaced {
        key: a.clone(),
        run_id: run_id(2)
    }));
    assert!(r.problems.contains(&CatalogProblem::Misplaced {
        key: b.clone(),
        run_id: run_id(1)
    }));
    assert!(!r.ok());
}

#[test]
fn a_manifest_written_behind_the_head_is_cut_off() {
    // Run 1's manifest exists; then a manifest for the older run 0 appears
    // (a clock set back, or a manifest slipped in). It links to run 1 but
    // sorts before it, so the walk from the head never meets it.
    let sink = MemorySink::new("local");
    let e1 = artifact(&sink, 1);
    write_manifest(&sink, &run_id(1), t(1), t(1), vec![e1], vec![]).unwrap();
    let e0 = artifact(&sink, 0);
    let k0 = write_unclaimed(&sink, 0, vec![e0]);
    let r = check(&sink, ArtifactCheck::Skip, None);
    assert_eq!(
        r.problems,
        vec![CatalogProblem::Unlinked { key: k0.clone() }]
    );
    // The next run links to run 1 as well: now two manifests claim it.
    let e2 = artifact(&sink, 2);
    write_manifest(&sink, &run_id(2), t(2), t(2), vec![e2], vec![]).unwrap();
    let r = check(&sink, ArtifactCheck::Skip, None);
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, CatalogProblem::Fork { keys, .. } if keys.contains(&k0))),
        "{:#?}",
        r.problems
    );
}

#[test]
fn previous_pointing_forward_is_out_of_order() {
    let (sink, _) = chain(3);
    // Rewrite the chain so run 2 links to run 0 and run 1 links to run 2:
    // a consistent hash chain in the wrong order.
    let k = |i| manifest_key(&run_id(i));
    let sha = |key: &str| Sha256::hex_of(&get_bytes(&sink, key).unwrap());
    let h0 = sha(&k(0));
    edit(&sink, &k(2), |v| {
        v["previous"] = h0.clone().into();
        v["previous_run_id"] = run_id(0).into();
    });
    let h2 = sha(&k(2));
    edit(&sink, &k(1), |v| {
        v["previous"] = h2.clone().into();
        v["previous_run_id"] = run_id(2).into();
    });
    // Run 1 must be the head to be walked first: store it under a later key.
    let bytes = get_bytes(&sink, &k(1)).unwrap();
    sink.delete(&k(1)).unwrap();
    sink.put(&k(3), &bytes).unwrap();
    let r = check(&sink, ArtifactCheck::Skip, None);
    assert!(
        r.problems.contains(&CatalogProblem::Misplaced {
            key: k(3),
            run_id: run_id(1)
        }),
        "{:#?}",
        r.problems
    );
    assert!(
        r.problems.contains(&CatalogProblem::OutOfOrder {
            key: k(3),
            previous_key: k(2),
            field: "run_id".into()
        }),
        "{:#?}",
        r.problems
    );
}

#[test]
fn two_manifests_claiming_one_previous_are_a_fork() {
    let (sink, heads) = chain(2);
    // A third run written against the same head as run 1: copy run 1's
    // link into a new manifest.
    let e = artifact(&sink, 5);
    let mut m =
        Manifest::from_bytes("", &get_bytes(&sink, &manifest_key(&run_id(1))).unwrap()).unwrap();
    m.run_id = run_id(5);
    m.entries = vec![e];
    sink.put(&m.key(), &m.to_bytes()).unwrap();
    let r = check(&sink, ArtifactCheck::Cheap, None);
    assert!(
        r.problems.contains(&CatalogProblem::Fork {
            previous: Some(heads[0].clone()),
            keys: vec![manifest_key(&run_id(1)), manifest_key(&run_id(5))],
        }),
        "{:#?}",
        r.problems
    );
    assert!(r.problems.contains(&CatalogProblem::Unlinked {
        key: manifest_key(&run_id(1))
    }));
}

#[test]
fn changed_artifact_bytes_are_caught_by_size_cheaply_and_by_digest_deeply() {
    let (sink, _) = chain(3);
    let key = "app-0001.db.gz";
    let mut bytes = get_bytes(&sink, key).unwrap();
    // Same length, one byte flipped in the middle: only --deep can tell.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    sink.put(key, &bytes).unwrap();
    assert!(check(&sink, ArtifactCheck::Cheap, None).ok());
    let r = check(&sink, ArtifactCheck::Deep, None);
    let m1 = manifest_key(&run_id(1));
    assert!(
        r.problems.iter().any(|p| matches!(p,
            CatalogProblem::DigestMismatch { manifest, index: 0, field, against, .. }
                if manifest == &m1 && field == "sha256" && against == "artifact")),
        "{:#?}",
        r.problems
    );
    // Truncated: the size gives it away without reading.
    sink.put(key, &bytes[..mid]).unwrap();
    let r = check(&sink, ArtifactCheck::Cheap, None);
    assert!(
        matches!(&r.problems[..], [CatalogProblem::SizeMismatch { manifest, index: 0, .. }] if manifest == &m1),
        "{:#?}",
        r.problems
    );
}

#[test]
fn missing_artifacts_are_errors_unless_a_later_manifest_pruned_them() {
    let (sink, _) = chain(3);
    sink.delete("app-0000.db.gz").unwrap();
    sink.delete("app-0000.db.gz.sha256").unwrap();
    let r = check(&sink, ArtifactCheck::Cheap, None);
    assert!(
        matches!(
            &r.problems[..],
            [CatalogProblem::ArtifactMissing { index: 0, .. }]
        ),
        "{:#?}",
        r.problems
    );
    // A prune run records the deletion: the chain is whole, nothing is missing.
    write_manifest(
        &sink,
        &run_id(3),
        t(3),
        t(3),
        vec![],
        vec![Pruned {
            run_id: run_id(0),
            key: "app-0000.db.gz".into(),
            reason: "older than 30 days".into(),
        }],
    )
    .unwrap();
    for depth in [ArtifactCheck::Cheap, ArtifactCheck::Deep] {
        let r = check(&sink, depth, None);
        assert!(r.ok(), "{:#?}", r.problems);
        assert_eq!((r.pruned, r.artifacts, r.chain), (1, 2, 4));
    }
}

#[test]
fn the_anchor_catches_an_altered_head_and_a_truncated_chain() {
    let (sink, heads) = chain(3);
    let log = anchor_log(&[("local", &heads[1]), ("local", &heads[2])]);
    let r = check(&sink, ArtifactCheck::Skip, Some(&log));
    assert!(r.ok());
    assert_eq!(r.anchor, Some(AnchorStatus::Head { line: 2 }));

    // Runs after the last anchoring are not a problem.
    let e = artifact(&sink, 3);
    write_manifest(&sink, &run_id(3), t(3), t(3), vec![e], vec![]).unwrap();
    let r = check(&sink, ArtifactCheck::Skip, Some(&log));
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.anchor, Some(AnchorStatus::Behind { line: 2, runs: 1 }));

    // Delete the two newest: the anchored head of line 2 is gone.
    sink.delete(&manifest_key(&run_id(3))).unwrap();
    sink.delete(&manifest_key(&run_id(2))).unwrap();
    let r = check(&sink, ArtifactCheck::Skip, Some(&log));
    assert_eq!(
        r.problems,
        vec![CatalogProblem::AnchorNotInChain {
            line: 2,
            anchored_at: t(0),
            head: heads[2].clone(),
            stored_as: None
        }]
    );
    assert_eq!(r.anchor, Some(AnchorStatus::Lost { line: 2 }));

    // Alter the head itself (no later manifest can notice): the anchor does.
    let (sink, heads) = chain(3);
    edit(&sink, &manifest_key(&run_id(2)), |v| {
        v["entries"][0]["label"] = "other".into()
    });
    let log = anchor_log(&[("local", &heads[2])]);
    let r = check(&sink, ArtifactCheck::Skip, Some(&log));
    assert!(
        matches!(&r.problems[..], [CatalogProblem::AnchorNotInChain { line: 1, head, .. }] if head == &heads[2]),
        "{:#?}",
        r.problems
    );
}

#[test]
fn a_rewritten_history_is_caught_by_an_old_anchor() {
    // Someone rebuilds the whole chain with one run left out: every link
    // is consistent, only the anchors can tell.
    let (sink, heads) = chain(4);
    let rebuilt = MemorySink::new("local");
    for i in [0usize, 1, 3] {
        let e = artifact(&rebuilt, i);
        write_manifest(&rebuilt, &run_id(i), t(i), t(i), vec![e], vec![]).unwrap();
    }
    let log = anchor_log(&[("local", &heads[2])]);
    assert!(check(&sink, ArtifactCheck::Cheap, Some(&log)).ok());
    let r = check(&rebuilt, ArtifactCheck::Cheap, Some(&log));
    assert!(
        matches!(
            &r.problems[..],
            [CatalogProblem::AnchorNotInChain { line: 1, .. }]
        ),
        "{:#?}",
        r.problems
    );
}

#[test]
fn a_manifest_without_run_link_reports_a_broken_link() {
    // Manifests written before `previous_run_id` existed.
    let (sink, _) = chain(3);
    for i in 0..3 {
        edit(&sink, &manifest_key(&run_id(i)), |v| {
            let o = v.as_object_mut().unwrap();
            o.remove("previous_run_id");
            o.remove("previous_fields");
        });
    }
    // The edits themselves broke the links (bytes changed); relink.
    let relinked = MemorySink::new("local");
    let mut previous: Option<String> = None;
    for i in 0..3 {
        let key = manifest_key(&run_id(i));
        let mut m = Manifest::from_bytes("", &get_bytes(&sink, &key).unwrap()).unwrap();
        m.previous = previous.clone();
        m.previous_run_id = None;
        m.previous_fields.clear();
        let mut v = serde_json::to_value(&m).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("previous_run_id");
        o.remove("previous_fields");
        let bytes = serde_json::to_vec_pretty(&v).unwrap();
        previous = Some(Sha256::hex_of(&bytes));
        relinked.put(&key, &bytes).unwrap();
    }
    assert!(check(&relinked, ArtifactCheck::Skip, None).ok());
    relinked.delete(&manifest_key(&run_id(1))).unwrap();
    let r = check(&relinked, ArtifactCheck::Skip, None);
    assert!(
        matches!(&r.problems[..], [CatalogProblem::BrokenLink { key, .. }] if key == &manifest_key(&run_id(2))),
        "{:#?}",
        r.problems
    );
}

#[test]
fn an_unreadable_manifest_is_named_and_the_walk_goes_on() {
    let (sink, _) = chain(4);
    put_sealed(&sink, &manifest_key(&run_id(1)), b"{ not json");
    let r = check(&sink, ArtifactCheck::Cheap, None);
    let kinds: Vec<&str> = r
        .problems
        .iter()
        .map(|p| match p {
            CatalogProblem::Unreadable { .. } => "unreadable",
            CatalogProblem::Altered { .. } => "altered",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["unreadable", "altered"], "{:#?}", r.problems);
    assert_eq!(r.chain, 4);
}

#[test]
fn a_manifest_copied_from_another_sink_is_named() {
    let (sink, _) = chain(2);
    let key = manifest_key(&run_id(1));
    edit(&sink, &key, |v| v["sink"] = "azure".into());
    let r = check(&sink, ArtifactCheck::Skip, None);
    assert!(r.problems.contains(&CatalogProblem::WrongSink {
        key,
        sink: "azure".into()
    }));
}

/// Every object of `from` copied to a new sink named `name`, byte for
/// byte, as `rclone sync` or bucket replication copies a container.
fn mirror(from: &MemorySink, name: &str) -> MemorySink {
    let to = MemorySink::new(name);
    for key in from.list("").unwrap() {
        to.put(&key, &get_bytes(from, &key).unwrap()).unwrap();
    }
    to
}

/// Copy one manifest and its sidecar from `from` into `to`.
fn splice(from: &MemorySink, to: &MemorySink, key: &str) {
    for k in [key.to_string(), manifest::sidecar_key(key)] {
        to.put(&k, &get_bytes(from, &k).unwrap()).unwrap();
    }
}

fn wrong_sinks(r: &Report) -> Vec<(&str, &str)> {
    r.problems
        .iter()
        .filter_map(|p| match p {
            CatalogProblem::WrongSink { key, sink } => Some((key.as_str(), sink.as_str())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_faithful_copy_of_a_catalog_verifies_and_a_manifest_spliced_into_it_is_named() {
    let (azure, _) = chain_on("azure", 4);
    let copy = mirror(&azure, "s3");
    let r = check(&copy, ArtifactCheck::Deep, None);
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!((r.chain, r.artifacts), (4, 4));
    assert_eq!(r.copy_of.as_deref(), Some("azure"));
    // The original is no copy.
    assert_eq!(check(&azure, ArtifactCheck::Skip, None).copy_of, None);

    // After a fail-over, runs append to the copy under its own name.
    let e = artifact(&copy, 4);
    write_manifest(&copy, &run_id(4), t(4), t(4), vec![e], vec![]).unwrap();
    let r = check(&copy, ArtifactCheck::Deep, None);
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.chain, 5);

    // One manifest of the sibling sink's catalog (same runs), spliced in
    // as a new run: named, and the copy is still known for what it is.
    let (local, _) = chain(6);
    let spliced = manifest_key(&run_id(5));
    splice(&local, &copy, &spliced);
    let r = check(&copy, ArtifactCheck::Skip, None);
    assert_eq!(
        wrong_sinks(&r),
        [(spliced.as_str(), "local")],
        "{:#?}",
        r.problems
    );
    assert_eq!(r.copy_of.as_deref(), Some("azure"));

    // Spliced over a run the copy holds: named too (and the link to it
    // breaks).
    let copy = mirror(&azure, "s3");
    let over = manifest_key(&run_id(2));
    splice(&local, &copy, &over);
    let r = check(&copy, ArtifactCheck::Skip, None);
    assert_eq!(
        wrong_sinks(&r),
        [(over.as_str(), "local")],
        "{:#?}",
        r.problems
    );
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, CatalogProblem::Altered { key, .. } if *key == over)),
        "{:#?}",
        r.problems
    );
}

#[test]
fn a_copy_whose_first_manifest_is_not_vouched_for_names_every_manifest() {
    // The genesis tells what the catalog is a copy of only while the chain
    // vouches for it: an edited one (resealed) cannot rename the catalog.
    let (azure, _) = chain_on("azure", 3);
    let copy = mirror(&azure, "s3");
    let genesis = manifest_key(&run_id(0));
    edit(&copy, &genesis, |v| v["sink"] = "local".into());
    let r = check(&copy, ArtifactCheck::Skip, None);
    assert_eq!(r.copy_of, None);
    let named: Vec<&str> = wrong_sinks(&r).iter().map(|(k, _)| *k).collect();
    assert_eq!(named.len(), 3, "{:#?}", r.problems);
    assert!(named.contains(&genesis.as_str()));
}

#[test]
fn an_empty_sink_is_fine_unless_anchored() {
    let sink = MemorySink::new("local");
    assert!(check(&sink, ArtifactCheck::Deep, None).ok());
    let log = anchor_log(&[("local", &"e".repeat(64))]);
    let r = check(&sink, ArtifactCheck::Deep, Some(&log));
    assert!(matches!(
        &r.problems[..],
        [CatalogProblem::AnchorNotInChain { .. }]
    ));
    let other = anchor_log(&[("cold", &"e".repeat(64))]);
    let r = check(&sink, ArtifactCheck::Deep, Some(&other));
    assert!(r.ok());
    assert_eq!(r.anchor, Some(AnchorStatus::NotAnchored));
}

#[test]
fn a_thousand_runs_verify_quickly() {
    let sink = MemorySink::new("local");
    let mut previous = None;
    // Built directly (write_manifest re-lists the folder each time).
    for i in 0..1000 {
        let e = artifact(&sink, i);
        let m = Manifest {
            format: manifest::FORMAT.into(),
            version: manifest::VERSION,
            run_id: run_id(i),
            sink: "local".into(),
            tool_version: "test".into(),
            started_at: t(i),
            finished_at: t(i),
            previous: previous
                .as_ref()
                .map(|(s, _, _): &(String, String, _)| s.clone()),
            previous_run_id: previous.as_ref().map(|(_, r, _)| r.clone()),
            previous_fields: previous.map(|(_, _, f)| f).unwrap_or_default(),
            entries: vec![e],
            pruned: vec![],
            collected: vec![],
            relinked: vec![],
        };
        let bytes = m.to_bytes();
        sink.put(&m.key(), &bytes).unwrap();
        previous = Some((
            Sha256::hex_of(&bytes),
            m.run_id.clone(),
            manifest::field_digests(&bytes),
        ));
    }
    let started = std::time::Instant::now();
    let r = check(&sink, ArtifactCheck::Cheap, None);
    let took = started.elapsed();
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!((r.chain, r.artifacts), (1000, 1000));
    let bound = if cfg!(debug_assertions) { 5.0 } else { 1.0 };
    assert!(took.as_secs_f64() < bound, "took {took:?}");
    eprintln!("1,000-run chain verified in {took:?}");
}

#[test]
fn an_edit_without_resealing_is_caught_by_the_sidecar_even_at_the_head() {
    let (sink, _) = chain(3);
    let head = manifest_key(&run_id(2));
    let mut v: serde_json::Value =
        serde_json::from_slice(&get_bytes(&sink, &head).unwrap()).unwrap();
    v["entries"][0]["row_counts"]["tasks"] = 7.into();
    sink.put(&head, &serde_json::to_vec_pretty(&v).unwrap())
        .unwrap();
    for depth in [ArtifactCheck::Skip, ArtifactCheck::Deep] {
        let r = check(&sink, depth, None);
        assert!(
            matches!(&r.problems[..], [CatalogProblem::SidecarMismatch { key, .. }] if key == &head),
            "{depth:?}: {:#?}",
            r.problems
        );
    }
    // A deleted sidecar, while older manifests have theirs.
    sink.delete(&manifest::sidecar_key(&head)).unwrap();
    let r = check(&sink, ArtifactCheck::Skip, None);
    assert_eq!(
        r.problems,
        vec![CatalogProblem::ManifestSidecarMissing { key: head.clone() }]
    );
    // Catalogs from before sidecars (none at all) are fine.
    for i in 0..3 {
        sink.delete(&manifest::sidecar_key(&manifest_key(&run_id(i))))
            .unwrap();
    }
    sink.put(&head, &serde_json::to_vec_pretty(&v).unwrap())
        .unwrap();
    assert!(check(&sink, ArtifactCheck::Skip, None).ok());
}

#[test]
fn an_escaping_entry_key_is_named_and_never_looked_up() {
    let (sink, _) = chain(2);
    let head = manifest_key(&run_id(1));
    edit(&sink, &head, |v| {
        v["entries"][0]["key"] = "../../app.db".into();
        v["entries"][0]["sidecar_key"] = "/etc/passwd".into();
    });
    for depth in [
        ArtifactCheck::Skip,
        ArtifactCheck::Cheap,
        ArtifactCheck::Deep,
    ] {
        // Not a sink error (the whole catalog unreadable): a named problem.
        let r = check(&sink, depth, None);
        let fields: Vec<&str> = r
            .problems
            .iter()
            .filter_map(|p| match p {
                CatalogProblem::InvalidKey {
                    manifest, field, ..
                } if manifest == &head => Some(field.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            fields,
            ["entries[0].key", "entries[0].sidecar_key"],
            "{:#?}",
            r.problems
        );
    }
    // `list` does not offer its entries.
    let (stored, bad) = manifest::read_all(&sink).unwrap();
    assert_eq!(stored.len(), 1);
    assert!(bad[0].to_string().contains("entries[0].key"), "{}", bad[0]);
}

#[test]
fn non_ascii_in_resealed_digest_fields_is_named_not_a_panic() {
    let (sink, _) = chain(2);
    let head = manifest_key(&run_id(1));
    let original = get_bytes(&sink, &head).unwrap();
    // Byte 16 falls inside a two-byte character: a digest shortened by byte
    // index panics there.
    let hostile = format!("a{}", "é".repeat(40));
    for (field, path) in [
        ("previous", &["previous"][..]),
        ("entries[0].sha256", &["entries", "0", "sha256"][..]),
        ("entries[0].db_sha256", &["entries", "0", "db_sha256"][..]),
    ] {
        edit(&sink, &head, |v| {
            let mut at = v;
            for p in path {
                at = match p.parse::<usize>() {
                    Ok(i) => &mut at[i],
                    Err(_) => &mut at[*p],
                };
            }
            *at = hostile.clone().into();
        });
        let r = check(&sink, ArtifactCheck::Deep, None);
        let text: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains(&head) && t.contains(field)),
            "{field}: {text:#?}"
        );
        put_sealed(&sink, &head, &original);
    }
}

/// The keys `view::collect` offers from `sink`, and those a replay of
/// every manifest lists.
fn offered_and_replayed(sink: &MemorySink) -> (Vec<String>, Vec<String>) {
    let (offered, problems) = view::collect(&[sink]);
    assert!(problems.is_empty(), "{problems:?}");
    let (stored, _) = manifest::read_all(sink).unwrap();
    let keys = |l: Vec<manifest::Listed>| l.into_iter().map(|l| l.entry.key).collect();
    (keys(offered), keys(manifest::listed(sink, &stored)))
}

#[test]
fn readers_start_from_the_newest_checkpoint_and_see_what_a_replay_sees() {
    let every = view::CHECKPOINT_EVERY as usize;
    let (sink, heads) = chain(3 * every + 5);
    prune_one(&sink, 3 * every + 5, 2);
    let keys = view::checkpoint_keys(&sink).unwrap();
    assert_eq!(keys.len(), 2, "older checkpoints are deleted: {keys:?}");
    let stored = get_bytes(&sink, keys.last().unwrap()).unwrap();
    assert!(stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "zstd");
    let v = view::view(&sink).unwrap();
    assert_eq!(v.checkpoint.as_deref(), keys.last().map(String::as_str));
    assert_eq!(v.since_checkpoint, 6);
    assert_eq!(v.manifests as usize, heads.len() + 1);
    assert_eq!(
        v.tip.unwrap().sha256,
        manifest::head(&sink).unwrap().unwrap()
    );
    let (offered, replayed) = offered_and_replayed(&sink);
    assert_eq!(offered.len(), heads.len() - 1);
    assert_eq!(offered, replayed);
    assert!(check(&sink, ArtifactCheck::Skip, None).ok());
}

/// Record that run `run` pruned the artifact of run `i`.
fn prune_one(sink: &MemorySink, run: usize, i: usize) {
    let pruned = Pruned {
        run_id: run_id(i),
        key: format!("app-{i:04}.db.gz"),
        reason: "test".into(),
    };
    let at = t(run);
    crate::catalog::append::append(
        sink,
        crate::catalog::append::Draft {
            run_id: run_id(run),
            started_at: at,
            finished_at: at,
            entries: vec![],
            pruned: vec![pruned],
            collected: vec![],
            relinked: vec![],
        },
    )
    .unwrap();
}

#[test]
fn a_checkpoint_that_disagrees_with_the_manifests_is_named_and_repair_replaces_it() {
    let (sink, heads) = chain(view::CHECKPOINT_EVERY as usize + 3);
    let key = view::checkpoint_keys(&sink).unwrap().pop().unwrap();
    // Sealed again after the edit, as someone covering their tracks would:
    // readers trust it, the replay in `verify --catalog` does not.
    edit(&sink, &key, |v| {
        v["state"]["live"].as_array_mut().unwrap().remove(0);
    });
    let (offered, replayed) = offered_and_replayed(&sink);
    assert_eq!(offered.len() + 1, replayed.len());
    let problems = check(&sink, ArtifactCheck::Skip, None).problems;
    assert!(
        matches!(&problems[..], [CatalogProblem::Checkpoint { key: k, message }]
            if *k == key && message.contains("does not match")),
        "{problems:?}"
    );
    assert!(problems[0].to_string().contains("catalog repair"));
    repair::apply(&sink, Timestamp::now()).unwrap();
    assert!(check(&sink, ArtifactCheck::Skip, None).ok());
    let (offered, replayed) = offered_and_replayed(&sink);
    assert_eq!((offered.len(), replayed.len()), (heads.len(), heads.len()));
}

#[test]
fn a_checkpoint_or_link_that_fails_its_seal_is_not_used() {
    let (sink, heads) = chain(view::CHECKPOINT_EVERY as usize + 3);
    let key = view::checkpoint_keys(&sink).unwrap().pop().unwrap();
    let mut bytes = get_bytes(&sink, &key).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    sink.put(&key, &bytes).unwrap();
    let v = view::view(&sink).unwrap();
    assert_eq!((v.checkpoint, v.state.live.len()), (None, heads.len()));
    let problems = check(&sink, ArtifactCheck::Skip, None).problems;
    assert!(
        matches!(&problems[..], [CatalogProblem::Checkpoint { message, .. }] if message.contains("unreadable")),
        "{problems:?}"
    );
    repair::apply(&sink, Timestamp::now()).unwrap();
    assert!(view::view(&sink).unwrap().checkpoint.is_some());
    // A link after the checkpoint whose bytes its manifest's sidecar does
    // not vouch for: readers replay every manifest rather than trust it.
    let (sink, heads) = chain(view::CHECKPOINT_EVERY as usize + 3);
    let after = &heads[view::CHECKPOINT_EVERY as usize - 1];
    let link = view::link_key(Some(after));
    let edited = String::from_utf8(get_bytes(&sink, &link).unwrap())
        .unwrap()
        .replace("\"size\"", "\"size\" ");
    sink.put(&link, edited.as_bytes()).unwrap();
    let v = view::view(&sink).unwrap();
    assert_eq!((v.checkpoint, v.state.live.len()), (None, heads.len()));
}

/// A checkpoint written in version 1's form (whole entries, no pack table)
/// still reads, to the same live entries.
#[test]
fn a_version_one_checkpoint_still_reads() {
    let (sink, _) = chain(4);
    let key = crate::manifest::view::checkpoint_whole(&sink)
        .unwrap()
        .expect("a checkpoint");
    let current = crate::manifest::view::read_checkpoint(&sink, &key).unwrap();
    edit(&sink, &key, |v| {
        let live: Vec<serde_json::Value> = v["state"]["live"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[0].clone())
            .collect();
        v["version"] = 1.into();
        v["state"] = serde_json::json!({ "live": live, "released": [], "collected": [] });
    });
    let old = crate::manifest::view::read_checkpoint(&sink, &key).unwrap();
    assert_eq!(old.version, 1);
    assert_eq!(old.state.live.len(), 4);
    assert_eq!(old.state.live, current.state.live);
}
