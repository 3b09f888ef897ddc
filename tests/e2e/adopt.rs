//! `catalog adopt`: the backups the old runbooks left, laid out exactly as
//! they left them (the Colibri copies in a folder, the Azure script's blobs
//! in Azurite, made with the real `sqlite3`, `gzip` and `sha256sum`), are
//! checked, recorded where they lie, and then listed, restored, verified and
//! pruned like our own; the bad ones are named and left out.

use std::collections::BTreeMap;
use std::path::Path;

use backup_core::sink::Sink;
use backup_testkit::remote::Remote;
use backup_testkit::testkit::{Project, output_text, require_tool, sh};

/// Every file below `dir` with its bytes: what a dry run must not change.
fn snapshot_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn rows(db: &Path, table: &str) -> String {
    sh(
        db.parent().unwrap(),
        &format!(
            "sqlite3 '{}' 'PRAGMA integrity_check; SELECT group_concat(name) FROM {table};'",
            db.display()
        ),
    )
}

#[test]
fn the_colibri_copies_are_adopted_by_their_names_and_a_hot_journal_is_not() {
    require_tool("sqlite3");
    let p = Project::new();
    let live = p.join("colibri.db");
    let backups = p.backups();
    std::fs::create_dir_all(&backups).unwrap();
    let sql = |s: &str| sh(p.path(), &format!("sqlite3 '{}' \"{s}\"", live.display()));
    let copy = |name: &str| sql(&format!(".backup '{}'", backups.join(name).display()));
    sql(
        "PRAGMA journal_mode=WAL; CREATE TABLE rounds(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO rounds(name) VALUES ('r74');",
    );
    copy("colibri-r74-20260415.db");
    sql("INSERT INTO rounds(name) VALUES ('r75');");
    copy("colibri-r75-20260416.db");
    copy("colibri-premigrate-20260416.db");
    sql("INSERT INTO rounds(name) VALUES ('r76');");
    copy("colibri-r76-20260417.db");
    // A copy taken mid-transaction: its rollback journal is still beside it.
    std::fs::write(
        backups.join("colibri-r76-20260417.db-journal"),
        [0xd9u8; 4096],
    )
    .unwrap();
    p.write_config(
        "[[database]]\nlabel = \"colibri\"\npath = \"colibri.db\"\nrequired_tables = [\"rounds\"]\n",
    );
    let before = snapshot_of(&backups);

    let dry = p.run(&["catalog", "adopt", "--dry-run", "--layout", "colibri"]);
    let text = output_text(&dry);
    assert_eq!(dry.status.code(), Some(1), "a rejected candidate: {text}");
    assert!(text.contains("would adopt 3, rejected 1"), "{text}");
    assert!(
        text.contains("colibri-r76-20260417.db") && text.contains("hot rollback journal"),
        "{text}"
    );
    assert_eq!(snapshot_of(&backups), before, "a dry run writes nothing");

    let run = p.run(&["catalog", "adopt", "--layout", "colibri"]);
    let text = output_text(&run);
    assert_eq!(run.status.code(), Some(1), "{text}");
    assert!(text.contains("adopted 3, rejected 1"), "{text}");
    let after = snapshot_of(&backups);
    for (name, bytes) in &before {
        assert_eq!(after.get(name), Some(bytes), "{name} was changed");
    }
    let sidecar = std::fs::read_to_string(backups.join("colibri-r75-20260416.db.sha256")).unwrap();
    assert!(
        sidecar.ends_with("  colibri-r75-20260416.db\n"),
        "{sidecar}"
    );
    sh(&backups, "sha256sum -c colibri-r75-20260416.db.sha256");

    let list = p.run_ok(&["list"]);
    assert_eq!(list.matches("adopted, date from name").count(), 3, "{list}");
    assert!(list.contains("lower bound"), "{list}");
    let json: serde_json::Value = serde_json::from_str(&p.run_ok(&["list", "--json"])).unwrap();
    let tags: Vec<(&str, &str, &str)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tag"].as_str().unwrap(),
                r["taken"].as_str().unwrap(),
                r["adopted"]["time_from"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("premigrate", "2026-04-16 00:00:00Z", "name_date"),
            ("r75", "2026-04-16 00:00:00Z", "name_date"),
            ("r74", "2026-04-15 00:00:00Z", "name_date"),
        ]
    );

    let out = p.join("r75.db");
    p.run_ok(&[
        "restore",
        "colibri",
        "--tag",
        "r75",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(rows(&out, "rounds").trim(), "ok\nr74,r75");
    p.run_ok(&["verify", "--catalog", "--deep"]);
    // A drill restores the newest and one older adopted copy with every check.
    let drill = p.run_ok(&["drill", "--json"]);
    assert!(drill.contains("colibri-"), "{drill}");

    let again = p.run(&["catalog", "adopt"]);
    let text = output_text(&again);
    assert!(
        text.contains("adopted 0, rejected 1, skipped 0, already in the catalog 3"),
        "{text}"
    );

    let kept = p.run_ok(&["prune", "--dry-run"]);
    assert!(kept.contains("keep 3, delete 0"), "{kept}");
    assert!(kept.contains("adopted: kept while"), "{kept}");
    p.write_config(
        "[[database]]\nlabel = \"colibri\"\npath = \"colibri.db\"\nrequired_tables = [\"rounds\"]\n\n\
         [retention]\nadopted = \"policy\"\n",
    );
    let policy = p.run_ok(&["prune", "--dry-run"]);
    assert!(
        policy.contains("2026-04-15 00:00:00Z  r74") && policy.contains("delete 2"),
        "{policy}"
    );
    assert_eq!(
        snapshot_of(&backups).len(),
        after.len(),
        "prune --dry-run deletes nothing"
    );

    // A name without a date is dated by the file's modification time; a
    // name of a database the config does not have is skipped, unless
    // --label says whose it is.
    std::fs::create_dir_all(backups.join("manual")).unwrap();
    copy("manual/colibri.db");
    copy("ledger-r1-20260417.db");
    let mixed = p.run(&[
        "catalog",
        "adopt",
        "--layout",
        "colibri",
        "--pattern",
        "manual/{label}{ext}",
    ]);
    let text = output_text(&mixed);
    assert!(
        text.contains("adopted 1, rejected 1, skipped 1, already in the catalog 3"),
        "{text}"
    );
    let manual = text
        .lines()
        .find(|l| l.contains("manual/colibri.db"))
        .unwrap();
    assert!(manual.contains("time from modification time"), "{manual}");
    let ledger = text.lines().find(|l| l.contains("ledger-r1")).unwrap();
    assert!(
        ledger.starts_with("skipped") && ledger.contains("which the config does not have"),
        "{ledger}"
    );
    let labelled = p.run(&[
        "catalog", "adopt", "--layout", "colibri", "--label", "colibri",
    ]);
    let text = output_text(&labelled);
    assert!(text.contains("adopted 1, rejected 1, skipped 0"), "{text}");
    let list = p.run_ok(&["list"]);
    assert!(list.contains("adopted, time from mtime"), "{list}");
    assert!(list.contains("ledger-r1-20260417.db"), "{list}");
}

#[test]
fn the_azure_script_container_is_adopted_and_its_bad_blobs_are_named() {
    require_tool("sqlite3");
    require_tool("gzip");
    require_tool("sha256sum");
    let az = Remote::azure();
    let sink = az.sink();
    let p = Project::new();
    let labels = ["mission-control", "alai", "ledger", "ops"];
    let work = p.join("script");
    std::fs::create_dir_all(&work).unwrap();
    // What the script did, every day, for every database: sqlite3 .backup,
    // gzip, sha256sum, upload both to sqlite/<day>/ in the container (the
    // sink's default prefix is `sqlite`).
    for day in ["2026-05-05", "2026-05-06", "2026-05-07"] {
        for label in labels {
            sh(
                &work,
                &format!(
                    "rm -f {label}.db {label}.db.gz; \
                     sqlite3 {label}.db \"CREATE TABLE tasks(id INTEGER PRIMARY KEY, name TEXT); \
                     INSERT INTO tasks(name) VALUES ('{label} on {day}');\" && \
                     gzip -f {label}.db && sha256sum {label}.db.gz > {label}.db.gz.sha256"
                ),
            );
            let mut blob = std::fs::read(work.join(format!("{label}.db.gz"))).unwrap();
            let mut sidecar = std::fs::read(work.join(format!("{label}.db.gz.sha256"))).unwrap();
            if (label, day) == ("alai", "2026-05-06") {
                sidecar = format!("{}  alai.db.gz\n", "0".repeat(64)).into_bytes();
            }
            if (label, day) == ("ledger", "2026-05-07") {
                // An upload cut short, its sidecar made from what arrived.
                blob.truncate(blob.len() / 2);
                std::fs::write(work.join("cut.db.gz"), &blob).unwrap();
                let sum = sh(&work, "sha256sum cut.db.gz");
                sidecar = format!("{}  ledger.db.gz\n", &sum[..64]).into_bytes();
            }
            sink.put(&format!("{day}/{label}.db.gz"), &blob).unwrap();
            sink.put(&format!("{day}/{label}.db.gz.sha256"), &sidecar)
                .unwrap();
        }
    }
    let mut config = String::new();
    for label in labels {
        config.push_str(&format!(
            "[[database]]\nlabel = \"{label}\"\npath = \"{label}.db\"\nrequired_tables = [\"tasks\"]\n\n"
        ));
    }
    p.write_config(&format!("{config}{}", az.section("")));
    let keys_before = sink.list("").unwrap();

    let dry = az.run(
        &p,
        &[
            "catalog",
            "adopt",
            "--dry-run",
            "--layout",
            "azure-script",
            "--sink",
            "azure",
        ],
    );
    let text = output_text(&dry);
    assert_eq!(dry.status.code(), Some(1), "{text}");
    assert!(text.contains("would adopt 10, rejected 2"), "{text}");
    let rejected: Vec<&str> = text.lines().filter(|l| l.starts_with("REJECTED")).collect();
    assert_eq!(rejected.len(), 2, "{text}");
    assert!(
        rejected[0].contains("2026-05-06/alai.db.gz") && rejected[0].contains("sidecar"),
        "{text}"
    );
    assert!(rejected[1].contains("2026-05-07/ledger.db.gz"), "{text}");
    assert_eq!(
        sink.list("").unwrap(),
        keys_before,
        "a dry run writes nothing"
    );

    let run = az.run(
        &p,
        &[
            "catalog",
            "adopt",
            "--layout",
            "azure-script",
            "--sink",
            "azure",
        ],
    );
    let text = output_text(&run);
    assert!(text.contains("adopted 10, rejected 2"), "{text}");
    let listed = az.listed();
    assert_eq!(listed.len(), 10);
    assert!(listed.iter().all(|l| l.entry.adopted.is_some()));
    let list = az.run_ok(&p, &["list", "--label", "mission-control"]);
    for day in ["2026-05-05", "2026-05-06", "2026-05-07"] {
        assert!(list.contains(&format!("{day} 00:00:00Z")), "{list}");
    }

    az.run_ok(&p, &["verify", "--catalog", "--deep"]);
    let out = p.join("restored.db");
    az.run_ok(
        &p,
        &[
            "restore",
            "mission-control",
            "--date",
            "2026-05-05",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        rows(&out, "tasks").trim(),
        "ok\nmission-control on 2026-05-05"
    );
    let again = az.run(
        &p,
        &[
            "catalog",
            "adopt",
            "--sink",
            "azure",
            "--layout",
            "azure-script",
        ],
    );
    let text = output_text(&again);
    assert!(
        text.contains("adopted 0, rejected 2, skipped 0, already in the catalog 10"),
        "{text}"
    );
}

/// Two adoptions that examined the same folder before either recorded (two
/// hosts sharing it): the second records nothing, and says the catalog
/// already names what it found.
#[test]
fn a_second_adoption_racing_the_first_records_nothing_twice() {
    use backup_core::adopt::{self, Options, Outcome, Pattern};
    use backup_core::{CheckLevel, Database};
    use backup_local::LocalSink;

    require_tool("sqlite3");
    let p = Project::new();
    let backups = p.backups();
    std::fs::create_dir_all(&backups).unwrap();
    let live = p.join("colibri.db");
    for (name, round) in [("colibri-r1-20260415.db", 1), ("colibri-r2-20260416.db", 2)] {
        sh(
            p.path(),
            &format!(
                "sqlite3 '{}' \"CREATE TABLE IF NOT EXISTS rounds(id INTEGER PRIMARY KEY); INSERT INTO rounds VALUES ({round});\" \".backup '{}'\"",
                live.display(),
                backups.join(name).display()
            ),
        );
    }
    let databases = vec![Database::new("colibri", &live)];
    let options = || Options {
        patterns: adopt::COLIBRI
            .iter()
            .map(|t| Pattern::new(t, &["colibri"]).unwrap())
            .collect(),
        databases: &databases,
        label: None,
        level: CheckLevel::IntegrityCheck,
        scratch: p.join("scratch"),
    };
    let sink = LocalSink::new(
        "local",
        backups.clone(),
        backup_core::sink::Placement::Local,
    );
    let mut first = adopt::examine(&sink, &options()).unwrap();
    let mut second = adopt::examine(&sink, &options()).unwrap();
    let adoptable = |f: &[adopt::Found]| {
        f.iter()
            .filter(|f| matches!(f.outcome, Outcome::Adopt(_)))
            .count()
    };
    assert_eq!((adoptable(&first), adoptable(&second)), (2, 2));

    assert!(
        adopt::record(&sink, &mut first, jiff::Timestamp::now())
            .unwrap()
            .is_some()
    );
    let again = adopt::record(&sink, &mut second, jiff::Timestamp::now()).unwrap();
    assert!(again.is_none(), "recorded twice: {again:?}");
    assert!(
        second.iter().all(|f| f.outcome == Outcome::Known),
        "{second:?}"
    );
    let keys: Vec<String> = backup_testkit::testkit::committed(&sink)
        .into_iter()
        .map(|l| l.entry.key)
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
}
