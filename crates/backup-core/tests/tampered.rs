//! Tampered manifests with valid sidecars (whoever can write the sink can
//! recompute those): random mutations of any field, including non-ASCII and
//! control characters, huge numbers, hex of the wrong length, missing
//! fields and wrong types. The library paths behind `verify --catalog`,
//! `list`, `restore` (choosing candidates) and `prune --dry-run` must never
//! panic, must report the tampering, and every problem's text must be safe
//! to print: bounded, without control or bidirectional-override characters.

use std::collections::BTreeMap;
use std::io::Write;

use backup_core::catalog::{self, ArtifactCheck, CatalogProblem, Options};
use backup_core::compress::{Compression, Format};
use backup_core::digest::{Sha256, Sidecar};
use backup_core::jiff::{SignedDuration, Timestamp};
use backup_core::manifest::{self, CatalogError, Entry};
use backup_core::page_map::{PackRef, PageMap, Run};
use backup_core::restore::{self, Request, Selector};
use backup_core::sink::{MemorySink, Sink, get_bytes};
use backup_core::{CheckLevel, Database, Retention, naming, prune};
use proptest::prelude::*;
use serde_json::Value;

/// Longest problem text accepted: a few bounded values and fixed words.
const MAX_TEXT: usize = 2_000;

fn t(i: usize) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_800_000_000 + 3600 * i as i64)
}

fn run_id(i: usize) -> String {
    format!("{}-{:04x}", t(i).strftime("%Y%m%dT%H%M%SZ"), i)
}

fn put_with_sidecar(sink: &dyn Sink, key: &str, bytes: &[u8]) -> String {
    let sha = Sha256::hex_of(bytes);
    sink.put(key, bytes).unwrap();
    let sidecar = Sidecar::new(&sha, naming::file_name(key)).render();
    sink.put(&naming::sidecar_key(key), sidecar.as_bytes())
        .unwrap();
    sha
}

/// A gzip artifact and its entry; with `incremental`, an entry whose image
/// lives in a pack (its `key` is then the page-hash index).
fn entry(sink: &dyn Sink, i: usize, incremental: bool) -> Entry {
    let db = format!("database bytes of run {i}").repeat(40).into_bytes();
    let mut gz = Vec::new();
    {
        let mut enc = Compression::new(Format::Gzip)
            .encoder(Box::new(&mut gz))
            .unwrap();
        enc.write_all(&db).unwrap();
        enc.finish().unwrap();
    }
    let key = format!("app-{i:04}.db.gz");
    let sha256 = put_with_sidecar(sink, &key, &gz);
    let pages = incremental.then(|| {
        let pack = format!("app-{i:04}.001.pack");
        let body = b"pack bytes".to_vec();
        let pack_sha = put_with_sidecar(sink, &pack, &body);
        PageMap {
            chain_depth: 1,
            chain_started: t(0),
            stored_bytes: body.len() as u64,
            base_bytes: None,
            packs: vec![PackRef {
                key: pack,
                size: body.len() as u64,
                sha256: pack_sha,
                pages: 1,
                index: key.clone(),
                index_sha256: sha256.clone(),
                index_at: 0,
                xor: false,
            }],
            hashes_sha256: Some(Sha256::hex_of(b"hashes")),
            runs: vec![Run::from((0, 1, 0, 0))].into(),
        }
    });
    Entry {
        adopted: None,
        label: "app".into(),
        tag: Some("r75".into()),
        sidecar_key: naming::sidecar_key(&key),
        key,
        compression: Format::Gzip,
        size: gz.len() as u64,
        sha256,
        db_size: db.len() as u64,
        db_sha256: Sha256::hex_of(&db),
        page_size: 4096,
        page_count: 1,
        schema_sha256: Sha256::hex_of(b"schema"),
        row_counts: BTreeMap::from([("tasks".into(), i as u64)]),
        snapshot_at: t(i),
        snapshot_ms: 3,
        verified_with: CheckLevel::QuickCheck,
        source: database().path.display().to_string(),
        host: Some("web-1".into()),
        source_mode: Some(0o640),
        encrypted_to: vec![],
        sealed: None,
        pages,
    }
}

/// Three chained runs; the second one is incremental. Clean as built.
fn chain() -> MemorySink {
    let sink = MemorySink::new("local");
    for i in 0..3 {
        let e = entry(&sink, i, i == 1);
        catalog::append::write_manifest(&sink, &run_id(i), t(i), t(i), vec![e], vec![]).unwrap();
    }
    sink
}

/// Every JSON pointer into a value (objects and arrays included).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Remove,
    Set(Value),
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        // Byte 16 inside a two-byte character.
        Just(format!("a{}", "é".repeat(40))),
        "\\PC{0,40}",
        "[a-f0-9é\\x00-\\x1f\\u{7f}\\u{85}\\u{202e}\\u{2066}\"\\\\]{0,80}",
        "[0-9a-f]{0,63}",
        "[0-9a-f]{65,70}",
        "[0-9A-F]{64}",
        "[0-9a-f]{63}é",
        Just("x\u{1b}[2J".repeat(3000)),
        Just("../../app.db".to_string()),
    ]
}

fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => hostile_string().prop_map(Value::from),
        1 => Just(Value::from(u64::MAX)),
        1 => Just(Value::from(u64::MAX / 2)),
        1 => Just(Value::from(1u64 << 50 | 1)),
        1 => Just(Value::from(i64::MIN)),
        1 => Just(Value::from(-1)),
        1 => Just(Value::from(1e300)),
        1 => Just(Value::from(3)),
        1 => any::<u64>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => Just(Value::Bool(true)),
        1 => Just(Value::Array(vec![])),
        1 => Just(serde_json::json!({"é\u{1b}": "\u{202e}"})),
        1 => hostile_string().prop_map(|s| Value::Array(vec![Value::from(s)])),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => Just(Mutation::Remove),
        5 => hostile_value().prop_map(Mutation::Set),
    ]
}

/// Apply `m` at pointer `p`; false when it changes nothing.
fn apply(v: &mut Value, p: &str, m: &Mutation) -> bool {
    let before = v.clone();
    match m {
        Mutation::Set(new) => *v.pointer_mut(p).unwrap() = new.clone(),
        Mutation::Remove => {
            let (parent, last) = p.rsplit_once('/').unwrap();
            match v.pointer_mut(parent).unwrap() {
                Value::Object(o) => {
                    o.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(a) => {
                    a.remove(last.parse::<usize>().unwrap());
                }
                _ => unreachable!(),
            }
        }
    }
    *v != before
}

fn assert_safe(what: &str, text: &str) {
    let n = text.chars().count();
    assert!(n <= MAX_TEXT, "{what}: {n} characters: {text:.300}");
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    assert!(
        !text.chars().any(bad),
        "{what}: unsafe character in {text:?}"
    );
}

fn database() -> Database {
    Database {
        label: "app".into(),
        path: std::env::temp_dir().join("tampered-test-nonexistent.db"),
        required_tables: vec!["tasks".into()],
        checks: vec![],
        retention: Default::default(),
        encryption: None,
        incremental: false,
        host: Some("web-1".into()),
    }
}

/// Tamper with manifest `target` (0..3, 2 = the head) and reseal it, then
/// run every reading path. Returns the verify problems.
fn tamper_and_read(target: usize, pick: prop::sample::Index, m: &Mutation) -> Option<()> {
    let sink = chain();
    let key = manifest::manifest_key(&run_id(target));
    let mut v: Value = serde_json::from_slice(&get_bytes(&sink, &key).unwrap()).unwrap();
    let mut ptrs = Vec::new();
    pointers(&v, String::new(), &mut ptrs);
    let p = pick.get(&ptrs).clone();
    if !apply(&mut v, &p, m) {
        return None;
    }
    let mut bytes = serde_json::to_vec_pretty(&v).unwrap();
    bytes.push(b'\n');
    put_with_sidecar(&sink, &key, &bytes);
    let sinks: [&dyn Sink; 1] = [&sink];

    // verify --catalog (deep: every digest is compared and shown).
    let report = catalog::verify(
        &sink,
        &Options {
            artifacts: ArtifactCheck::Deep,
        },
        None,
    )
    .unwrap();
    for problem in &report.problems {
        assert_safe(&p, &problem.to_string());
    }
    // Any change to a manifest a later one links to breaks the chain.
    if target < 2 {
        assert!(!report.ok(), "{p} {m:?}: not reported");
    }
    let refused = report.problems.iter().any(|problem| {
        matches!(problem, CatalogProblem::InvalidField { key: k, .. } | CatalogProblem::Unreadable { key: k, .. } if *k == key)
    });

    // list
    let (listed, problems) = manifest::view::collect(&sinks);
    for problem in &problems {
        assert_safe("list", problem);
    }
    let offered = listed.iter().any(|l| l.run_id == run_id(target));
    if refused {
        assert!(!problems.is_empty(), "{p} {m:?}: list reports nothing");
        assert!(!offered, "{p} {m:?}: list offers a refused manifest");
    }
    let (stored, bad) = manifest::read_all(&sink).unwrap();
    for e in &bad {
        assert_safe("read_all", &e.to_string());
        if let CatalogError::InvalidField { error, .. } = e {
            assert_safe("field", &error.field);
        }
    }
    drop(stored);

    // restore: choosing candidates, and what stepping back loses.
    for selector in [
        Selector::Latest,
        Selector::Tag("r75".into()),
        Selector::Id(run_id(target)),
        Selector::At(t(target)),
    ] {
        match restore::plan(&listed, &Request::new(database(), selector)) {
            Ok(plan) => {
                for c in &plan.candidates {
                    assert!(
                        !(refused && c.listed.run_id == run_id(target)),
                        "{p} {m:?}: restore offers a refused manifest"
                    );
                    if let Some(loss) = &c.loss {
                        let _ = loss.to_string();
                    }
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }

    // prune --dry-run
    let plan = prune::plan(&sinks, &[], t(400), &Retention::default());
    for s in &plan.skipped {
        assert_safe("prune", &s.reason);
    }
    if refused {
        assert!(
            !plan.skipped.is_empty(),
            "{p} {m:?}: prune does not skip the sink"
        );
    }
    let _ = (plan.delete_count(), plan.reclaimed_bytes());
    Some(())
}

#[test]
fn the_untampered_chain_is_clean() {
    let sink = chain();
    let r = catalog::verify(
        &sink,
        &Options {
            artifacts: ArtifactCheck::Deep,
        },
        None,
    )
    .unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
    let (listed, problems) = manifest::view::collect(&[&sink]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(listed.len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tampered_manifests_are_reported_safely_by_every_reader(
        target in 0usize..3,
        pick in any::<prop::sample::Index>(),
        m in mutation(),
    ) {
        tamper_and_read(target, pick, &m);
    }
}

/// Marks a field to remove in [`each_bad_field_is_named`].
static REMOVE: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::from("remove this field"));

/// A bad digest or number names the manifest and the field, in the
/// library's typed error and in `verify --catalog`.
#[test]
fn each_bad_field_is_named() {
    let long = format!("a{}", "é".repeat(40));
    let cases: &[(&str, Value, &str)] = &[
        ("/previous", long.clone().into(), "previous"),
        ("/previous", "ABC".into(), "previous"),
        (
            "/previous_fields/run_id",
            "zz".into(),
            "previous_fields[\"run_id\"]",
        ),
        (
            "/entries/0/sha256",
            "0".repeat(63).into(),
            "entries[0].sha256",
        ),
        (
            "/entries/0/db_sha256",
            "A".repeat(64).into(),
            "entries[0].db_sha256",
        ),
        (
            "/entries/0/schema_sha256",
            long.clone().into(),
            "entries[0].schema_sha256",
        ),
        ("/entries/0/size", u64::MAX.into(), "entries[0].size"),
        (
            "/entries/0/db_size",
            (1u64 << 51).into(),
            "entries[0].db_size",
        ),
        ("/entries/0/page_size", 4097.into(), "entries[0].page_size"),
        ("/entries/0/page_size", 0.into(), "entries[0].page_size"),
        (
            "/entries/0/page_count",
            u64::MAX.into(),
            "entries[0].page_count",
        ),
        (
            "/entries/0/row_counts/tasks",
            u64::MAX.into(),
            "entries[0].row_counts[\"tasks\"]",
        ),
        (
            "/entries/0/snapshot_ms",
            u64::MAX.into(),
            "entries[0].snapshot_ms",
        ),
        (
            "/entries/0/encrypted_to",
            serde_json::json!(["é"]),
            "entries[0].encrypted_to[0]",
        ),
        (
            "/entries/0/pages/chain_depth",
            u32::MAX.into(),
            "entries[0].pages.chain_depth",
        ),
        (
            "/entries/0/pages/stored_bytes",
            u64::MAX.into(),
            "entries[0].pages.stored_bytes",
        ),
        (
            "/entries/0/pages/hashes_sha256",
            long.clone().into(),
            "entries[0].pages.hashes_sha256",
        ),
        (
            "/entries/0/pages/pack_groups/0/packs/0/1",
            u64::MAX.into(),
            "entries[0].pages.packs[0].size",
        ),
        (
            "/entries/0/pages/pack_groups/0/packs/0/2",
            "".into(),
            "entries[0].pages.packs[0].sha256",
        ),
        (
            "/entries/0/pages/pack_groups/0/packs/0/3",
            u64::MAX.into(),
            "entries[0].pages.packs[0].pages",
        ),
        (
            "/entries/0/pages/pack_groups/0/index_sha256",
            long.clone().into(),
            "entries[0].pages.packs[0].index_sha256",
        ),
        (
            "/entries/0/pages/pack_groups/0/packs/0/4",
            u64::MAX.into(),
            "entries[0].pages.packs[0].index_at",
        ),
        // Wrong types and missing fields: serde's message gives only a line
        // and column; the field is found.
        ("/previous", 3.into(), "previous"),
        ("/entries/0/size", "é".into(), "entries[0].size"),
        (
            "/entries/0/snapshot_at",
            u64::MAX.into(),
            "entries[0].snapshot_at",
        ),
        (
            "/entries/0/row_counts/tasks",
            (-1).into(),
            "entries[0].row_counts",
        ),
        (
            "/entries/0/pages/pack_groups/0/packs/0/2",
            Value::Bool(true),
            "entries[0].pages.pack_groups[0].packs[0][2]",
        ),
        (
            "/entries/0/pages/runs",
            serde_json::json!([[0, 1, -3, 0]]),
            "entries[0].pages.runs[0][2]",
        ),
        (
            "/entries/0/pages/pack_groups/0/packs/0",
            serde_json::json!([".000.pack", 1, "0"]),
            "entries[0].pages.pack_groups[0].packs[0]",
        ),
        // Both the grouped packs and the list they replaced.
        (
            "/entries/0/pages/packs",
            serde_json::json!([]),
            "entries[0].pages",
        ),
        ("/entries/0/db_size", Value::Null, "entries[0].db_size"),
        (
            "/entries/0/page_size",
            REMOVE.clone(),
            "entries[0].page_size",
        ),
        (
            "/relinked",
            serde_json::json!([{"key": "k", "run_id": "r", "reason": "r"}]),
            "relinked[0].sha256",
        ),
    ];
    for (pointer, value, field) in cases {
        let sink = chain();
        let key = manifest::manifest_key(&run_id(1));
        let mut v: Value = serde_json::from_slice(&get_bytes(&sink, &key).unwrap()).unwrap();
        // Insert, as optional fields the writer leaves out may be absent.
        let (parent, name) = pointer.rsplit_once('/').unwrap();
        match v.pointer_mut(parent).unwrap() {
            // A pack's fields are a tuple: `[name, size, sha256, pages, index_at]`.
            Value::Array(items) => items[name.parse::<usize>().unwrap()] = value.clone(),
            parent => {
                let parent = parent.as_object_mut().unwrap();
                if *value == *REMOVE {
                    parent.remove(name);
                } else {
                    parent.insert(name.to_string(), value.clone());
                }
            }
        }
        let bytes = serde_json::to_vec_pretty(&v).unwrap();
        put_with_sidecar(&sink, &key, &bytes);
        match manifest::Manifest::from_bytes(&key, &bytes) {
            Err(CatalogError::InvalidField { key: k, error }) => {
                assert_eq!((k.as_str(), error.field.as_str()), (key.as_str(), *field));
                assert_safe(field, &error.to_string());
            }
            other => panic!("{pointer}: {other:?}"),
        }
        let r = catalog::verify(&sink, &Options::default(), None).unwrap();
        let named = r.problems.iter().any(|p| {
            matches!(p, CatalogProblem::InvalidField { key: k, field: f, .. } if *k == key && f == field)
        });
        assert!(named, "{pointer}: {:#?}", r.problems);
        for p in &r.problems {
            assert_safe(field, &p.to_string());
        }
    }
}
