//! End to end: the hash-chained catalog through the real `sqlite-backup`
//! binary on a local tier. Every tampering case must be detected and named
//! (which manifest, which field), with exit code 1.
//!
//! Needs the binary: `cargo build -p backup-cli` first (`--release` too
//! for `cargo test --release`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use backup_core::catalog::{self, ArtifactCheck, Options};
use backup_core::sink::{MemorySink, Placement, Sink, get_bytes};
use backup_local::LocalSink;

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A WAL database, a config, and `runs` backups.
    fn new(runs: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE tasks(id INTEGER PRIMARY KEY, title TEXT NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000)
             INSERT INTO tasks(title) SELECT printf('task %d with some text', i) FROM n;",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sqlite-backup.toml"),
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n\n[local]\nroot = \"backups\"\n# Runs here are milliseconds apart: name artifacts by run id.\ntemplate = \"{label}-{tag}-{run}{ext}\"\n",
        )
        .unwrap();
        let site = Self { dir };
        for i in 0..runs {
            conn.execute("INSERT INTO tasks(title) VALUES (?1)", [format!("run {i}")])
                .unwrap();
            let out = site.run(&["backup"]);
            assert!(out.status.success(), "backup: {}", text(&out));
        }
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Output {
        // Panics with the expected path when the binary is not built.
        Command::new(assert_cmd::cargo::cargo_bin("sqlite-backup"))
            .current_dir(self.dir.path())
            .env_remove("SQLITE_BACKUP_CONFIG")
            .arg("--quiet")
            .args(args)
            .output()
            .unwrap()
    }

    fn sink(&self) -> LocalSink {
        LocalSink::new("local", self.path("backups"), Placement::Local)
    }

    /// Manifest keys, oldest first.
    /// Manifest keys (not their `.sha256` sidecars), oldest first.
    fn manifests(&self) -> Vec<String> {
        let mut keys = self.sink().list("manifests").unwrap();
        keys.retain(|k| k.ends_with(".json"));
        keys
    }

    fn manifest(&self, key: &str) -> serde_json::Value {
        serde_json::from_slice(&get_bytes(&self.sink(), key).unwrap()).unwrap()
    }

    fn edit(&self, key: &str, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v = self.manifest(key);
        f(&mut v);
        let mut bytes = serde_json::to_vec_pretty(&v).unwrap();
        bytes.push(b'\n');
        std::fs::write(self.path(&format!("backups/{key}")), bytes).unwrap();
    }

    fn anchor(&self) {
        let out = self.run(&["catalog", "anchor", "--append", "anchors.txt"]);
        assert!(out.status.success(), "anchor: {}", text(&out));
    }

    /// `verify --catalog` with extra flags: (exit code, stdout + stderr).
    fn verify(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec!["verify", "--catalog"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        (out.status.code().unwrap(), text(&out))
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_names(out: &(i32, String), needles: &[&str]) {
    assert_eq!(out.0, 1, "expected exit 1:\n{}", out.1);
    for n in needles {
        assert!(out.1.contains(n), "missing {n:?} in:\n{}", out.1);
    }
}

#[test]
fn head_is_printed_by_backup_and_catalog_head_and_anchored() {
    let site = Site::new(2);
    let out = site.run(&["backup"]);
    let printed = text(&out);
    let from_backup = printed
        .lines()
        .find_map(|l| l.strip_prefix("Catalog head (local): "))
        .expect("backup prints the head")
        .to_string();
    let head = site.run(&["catalog", "head"]);
    assert_eq!(
        String::from_utf8_lossy(&head.stdout),
        format!("local {from_backup}\n")
    );
    site.anchor();
    site.anchor();
    let anchors = std::fs::read_to_string(site.path("anchors.txt")).unwrap();
    let lines: Vec<&str> = anchors.lines().collect();
    assert_eq!(lines.len(), 2);
    for l in lines {
        let parts: Vec<&str> = l.split(' ').collect();
        assert_eq!(parts.len(), 3, "{l}");
        assert!(parts[0].parse::<jiff::Timestamp>().is_ok(), "{l}");
        assert_eq!(&parts[1..], ["local", from_backup.as_str()]);
    }
    let ok = site.verify(&["--anchor", "anchors.txt", "--deep"]);
    assert_eq!(ok.0, 0, "{}", ok.1);
    assert!(ok.1.contains("head (line 2)"), "{}", ok.1);
}

#[test]
fn a_deleted_manifest_is_named() {
    let site = Site::new(3);
    let keys = site.manifests();
    std::fs::remove_file(site.path(&format!("backups/{}", keys[1]))).unwrap();
    assert_names(
        &site.verify(&[]),
        &[
            &format!("{} was deleted", keys[1]),
            "field `previous` of",
            &keys[2],
        ],
    );
}

#[test]
fn an_altered_manifest_field_is_named() {
    let site = Site::new(3);
    let keys = site.manifests();
    site.edit(&keys[0], |v| {
        let n = v["entries"][0]["row_counts"]["tasks"].as_u64().unwrap();
        v["entries"][0]["row_counts"]["tasks"] = (n + 1).into();
    });
    assert_names(
        &site.verify(&[]),
        &[
            &format!("{} was altered", keys[0]),
            "changed field(s): entries[0].row_counts",
            &keys[1],
        ],
    );
}

#[test]
fn a_reordered_chain_is_named() {
    let site = Site::new(3);
    let keys = site.manifests();
    let (a, b) = (
        site.path(&format!("backups/{}", keys[0])),
        site.path(&format!("backups/{}", keys[1])),
    );
    let tmp = site.path("swap.json");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let run0 = keys[0]
        .trim_start_matches("manifests/")
        .trim_end_matches(".json");
    assert_names(
        &site.verify(&[]),
        &[
            &format!(
                "{} holds the manifest of run {run0} (field `run_id`)",
                keys[1]
            ),
            "reordered",
        ],
    );
}

#[test]
fn changed_artifact_bytes_are_named_with_deep_and_truncation_without() {
    let site = Site::new(2);
    let keys = site.manifests();
    let m = site.manifest(&keys[0]);
    let artifact = site.path(&format!(
        "backups/{}",
        m["entries"][0]["key"].as_str().unwrap()
    ));
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&artifact, &bytes).unwrap();
    // Same size: the cheap check cannot see it, --deep must.
    assert_eq!(site.verify(&[]).0, 0);
    assert_names(
        &site.verify(&["--deep"]),
        &[&format!("{} entries[0].sha256: artifact of", keys[0])],
    );
    std::fs::write(&artifact, &bytes[..mid]).unwrap();
    assert_names(
        &site.verify(&[]),
        &[&format!("{} entries[0].size", keys[0])],
    );
}

#[test]
fn a_head_that_disagrees_with_the_anchor_is_named() {
    let site = Site::new(3);
    site.anchor();
    let keys = site.manifests();
    // Altering the head: no later manifest can notice, the anchor must.
    site.edit(&keys[2], |v| v["entries"][0]["size"] = 1.into());
    let (code, out) = site.verify(&["--anchor", "anchors.txt"]);
    assert_names(
        &(code, out),
        &[
            "anchor line 1",
            "which is not on the chain",
            "LOST (line 1)",
        ],
    );
    // Deleting the newest manifest (a rollback) is caught the same way.
    let site = Site::new(3);
    site.anchor();
    std::fs::remove_file(site.path(&format!("backups/{}", site.manifests()[2]))).unwrap();
    assert_eq!(
        site.verify(&[]).0,
        0,
        "without the anchor a rollback is invisible"
    );
    assert_names(
        &site.verify(&["--anchor", "anchors.txt"]),
        &["anchor line 1", "newest manifests deleted"],
    );
    // And anchoring refuses to vouch for it.
    let out = site.run(&["catalog", "anchor", "--append", "anchors.txt"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(site.path("anchors.txt"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn runs_after_the_anchor_are_not_a_problem_and_usage_errors_exit_2() {
    let site = Site::new(1);
    site.anchor();
    assert!(site.run(&["backup"]).status.success());
    let (code, out) = site.verify(&["--anchor", "anchors.txt"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 run(s) since line 1"), "{out}");
    let missing = site.run(&["verify", "--catalog", "--anchor", "nope.txt"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    let bad = site.run(&["verify", "--anchor", "anchors.txt"]);
    assert_eq!(bad.status.code(), Some(2), "--anchor without --catalog");
    // A damaged anchor file is a problem, not silently skipped.
    std::fs::write(site.path("bad.txt"), "yesterday local 1234\n").unwrap();
    assert_names(&site.verify(&["--anchor", "bad.txt"]), &["line 1"]);
}

/// 1,000 runs in a local folder, one artifact each, built through the same
/// `write_manifest` the pipeline uses (in memory, then written out).
fn thousand_runs(root: &Path) {
    let mem = MemorySink::new("local");
    let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    for i in 0..1000 {
        let t = t0 + jiff::SignedDuration::from_secs(4 * 3600 * i);
        let run_id = backup_core::manifest::new_run_id(t);
        let data = format!("artifact {i}").repeat(100).into_bytes();
        let key = format!("app-{i:04}.db");
        let sha256 = backup_core::digest::Sha256::hex_of(&data);
        mem.put(&key, &data).unwrap();
        let sidecar_key = format!("{key}.sha256");
        mem.put(&sidecar_key, format!("{sha256}  {key}\n").as_bytes())
            .unwrap();
        let entry = backup_core::manifest::Entry {
            adopted: None,
            label: "app".into(),
            tag: None,
            key,
            sidecar_key,
            compression: backup_core::compress::Format::None,
            size: data.len() as u64,
            sha256: sha256.clone(),
            db_size: data.len() as u64,
            db_sha256: sha256,
            page_size: 4096,
            page_count: 1,
            schema_sha256: "0".repeat(64),
            row_counts: [("tasks".to_string(), i as u64)].into(),
            snapshot_at: t,
            snapshot_ms: 1,
            verified_with: Default::default(),
            source: "/srv/app.db".into(),
            host: None,
            source_mode: None,
            encrypted_to: vec![],
            sealed: None,
            pages: None,
        };
        backup_core::catalog::append::write_manifest(&mem, &run_id, t, t, vec![entry], vec![])
            .unwrap();
    }
    for key in mem.keys() {
        let path = root.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, get_bytes(&mem, &key).unwrap()).unwrap();
    }
}

#[test]
fn a_thousand_runs_verify_in_under_a_second() {
    let site = Site::new(0);
    thousand_runs(&site.path("backups"));
    // A generous bound in debug builds; the requirement (1 s) in release.
    let bound = Duration::from_secs_f64(if cfg!(debug_assertions) { 5.0 } else { 1.0 });

    let started = Instant::now();
    let report = catalog::verify(
        &site.sink(),
        &Options {
            artifacts: ArtifactCheck::Cheap,
        },
        None,
    )
    .unwrap();
    let library = started.elapsed();
    assert!(report.ok(), "{:#?}", report.problems);
    assert_eq!((report.chain, report.artifacts), (1000, 1000));

    site.anchor();
    let started = Instant::now();
    let (code, out) = site.verify(&["--anchor", "anchors.txt"]);
    let binary = started.elapsed();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Catalog ok."), "{out}");

    let started = Instant::now();
    let deep = site.verify(&["--deep"]);
    let deep_time = started.elapsed();
    assert_eq!(deep.0, 0, "{}", deep.1);
    eprintln!("1,000 runs: library {library:?}, binary {binary:?}, binary --deep {deep_time:?}");
    assert!(library < bound, "library took {library:?}");
    assert!(binary < bound, "binary took {binary:?}");
}

impl Site {
    /// Write a sidecar that matches the manifest's current bytes, as
    /// someone covering an edit would.
    fn reseal(&self, key: &str) {
        let bytes = std::fs::read(self.path(&format!("backups/{key}"))).unwrap();
        let name = key.rsplit('/').next().unwrap();
        std::fs::write(
            self.path(&format!("backups/{key}.sha256")),
            format!("{}  {name}\n", backup_core::digest::Sha256::hex_of(&bytes)),
        )
        .unwrap();
    }

    fn anchor_refused(&self) -> String {
        let before = std::fs::read(self.path("anchors.txt")).ok();
        let out = self.run(&["catalog", "anchor", "--append", "anchors.txt"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "anchor must refuse: {}",
            text(&out)
        );
        assert_eq!(
            std::fs::read(self.path("anchors.txt")).ok(),
            before,
            "nothing appended"
        );
        text(&out)
    }
}

#[test]
fn edited_row_counts_in_the_head_are_caught_by_verify_and_refused_by_anchor() {
    let site = Site::new(2);
    site.anchor();
    let head = site.manifests().pop().unwrap();
    site.edit(&head, |v| {
        v["entries"][0]["row_counts"]["tasks"] = 1.into();
    });
    // `list` already warned; the catalog checks must say the same.
    let list = site.run(&["list"]);
    assert_eq!(list.status.code(), Some(1), "{}", text(&list));
    for flags in [&[][..], &["--deep"][..]] {
        assert_names(
            &site.verify(flags),
            &[&head, "does not match its sidecar", "Catalog NOT ok"],
        );
    }
    let refused = site.anchor_refused();
    assert!(
        refused.contains(&format!("refusing to anchor head {head}"))
            && refused.contains("does not match its sidecar"),
        "{refused}"
    );
}

#[test]
fn a_resealed_manifest_with_an_escaping_key_is_named_and_refused_by_anchor() {
    let site = Site::new(2);
    let head = site.manifests().pop().unwrap();
    site.edit(&head, |v| v["entries"][0]["key"] = "../../app.db".into());
    site.reseal(&head);
    let out = site.verify(&[]);
    assert_names(&out, &[&head, "entries[0].key", "\"../../app.db\""]);
    assert!(
        !out.1.contains("UNREADABLE"),
        "named, not unreadable: {}",
        out.1
    );
    let refused = site.anchor_refused();
    assert!(refused.contains("entries[0].key"), "{refused}");
    // `list` does not offer it either.
    let list = site.run(&["list", "--json"]);
    assert_eq!(list.status.code(), Some(1), "{}", text(&list));
    assert!(!String::from_utf8_lossy(&list.stdout).contains("../../app.db"));
}

#[test]
fn catalog_repair_relinks_a_fork_and_keeps_every_manifest() {
    let site = Site::new(3);
    let keys = site.manifests();
    // The old behaviour, by hand: a second manifest naming the same previous
    // as the head (two runs that read the tip at once), with its sidecar.
    let mut fork = site.manifest(&keys[2]);
    let fork_run = "20990101T000000Z-0000";
    let fork_key = format!("manifests/{fork_run}.json");
    fork["run_id"] = fork_run.into();
    let mut bytes = serde_json::to_vec_pretty(&fork).unwrap();
    bytes.push(b'\n');
    std::fs::write(site.path(&format!("backups/{fork_key}")), bytes).unwrap();
    site.reseal(&fork_key);
    assert_names(&site.verify(&[]), &["fork:", &keys[2], &fork_key]);
    site.anchor_refused();

    let dry = site.run(&["catalog", "repair", "--dry-run"]);
    let dry_text = text(&dry);
    assert!(dry.status.success(), "{dry_text}");
    assert!(
        dry_text.contains(&keys[2])
            && dry_text.contains("would append")
            && dry_text.contains("forked"),
        "{dry_text}"
    );
    assert_eq!(site.manifests().len(), 4, "dry run wrote nothing");

    let out = site.run(&["catalog", "repair"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = site.manifests();
    assert_eq!(
        after.len(),
        5,
        "every manifest kept, one repair manifest added"
    );
    for k in keys.iter().chain([&fork_key]) {
        assert!(after.contains(k), "{k} kept");
    }
    let repair = site.manifest(after.last().unwrap());
    assert_eq!(repair["relinked"][0]["key"], keys[2].as_str(), "{repair:#}");
    let ok = site.verify(&["--deep"]);
    assert_eq!(ok.0, 0, "{}", ok.1);
    site.anchor();
    // Later backups go on from the repaired head.
    let out = site.run(&["backup"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(site.verify(&["--anchor", "anchors.txt"]).0, 0);
    let again = site.run(&["catalog", "repair"]);
    assert!(
        text(&again).contains("nothing to repair"),
        "{}",
        text(&again)
    );
}

#[test]
fn non_ascii_in_resealed_digest_fields_is_named_not_a_panic() {
    let site = Site::new(2);
    let head = site.manifests().pop().unwrap();
    let file = site.path(&format!("backups/{head}"));
    let original = std::fs::read(&file).unwrap();
    // Byte 16 falls inside a two-byte character: a digest shortened by byte
    // index panicked (exit 101) in the command meant to catch tampering.
    let hostile = format!("a{}", "é".repeat(40));
    for field in ["previous", "entries[0].sha256", "entries[0].db_sha256"] {
        site.edit(&head, |v| match field.strip_prefix("entries[0].") {
            Some(f) => v["entries"][0][f] = hostile.clone().into(),
            None => v[field] = hostile.clone().into(),
        });
        site.reseal(&head);
        let out = site.verify(&["--deep"]);
        assert_names(&out, &[&head, field, "Catalog NOT ok"]);
        assert!(!out.1.contains("panicked"), "{}", out.1);
        // Nothing it says is offered.
        let list = site.run(&["list"]);
        assert_eq!(list.status.code(), Some(1), "{field}: {}", text(&list));
        std::fs::write(&file, &original).unwrap();
        site.reseal(&head);
    }
}

#[test]
fn a_hostile_resealed_manifest_is_refused_by_every_reader_with_safe_text() {
    let site = Site::new(2);
    let head = site.manifests().pop().unwrap();
    let run = backup_core::manifest::run_id_of_key(&head).to_string();
    // Escape sequences, a bidirectional override and 10 KB of text in a
    // digest field; a page size no SQLite database has would do as well.
    let hostile = format!("\u{1b}[2J\u{202e}{}", "é".repeat(5000));
    site.edit(&head, |v| v["entries"][0]["db_sha256"] = hostile.into());
    site.reseal(&head);
    let unsafe_text = |t: &str| t.contains(['\u{1b}', '\u{202e}']) || t.contains(&"é".repeat(200));

    let out = site.verify(&[]);
    assert_names(
        &out,
        &[&head, "entries[0].db_sha256", "64 lowercase hex digits"],
    );
    assert!(!unsafe_text(&out.1), "{}", out.1);
    // `list` and `prune --dry-run` report it (exit 1) and offer nothing of
    // it; `restore` does not find that run.
    for args in [
        &["list"][..],
        &["prune", "--dry-run"],
        &["restore", "app", "--dry-run", "--id", &run],
    ] {
        let out = site.run(args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {t}");
        assert!(!unsafe_text(&t), "{args:?}: {t}");
    }
}
