//! Restore drills and Prometheus metrics through the real binary: a healthy
//! drill records its RTO, a flipped byte fails the drill, alerts once and
//! names the artifact, the live database never changes; metrics follow a
//! success, a failure, a recovery and a drill, in the textfile and on the
//! daemon's endpoint, both accepted by the real `promtool check metrics`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use backup_testkit::ops_support::{Running, Webhook, sqlite_backup};
use backup_testkit::testkit::output_text;
use serde_json::Value;

fn run(config: &Path, args: &[&str]) -> Output {
    sqlite_backup()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run sqlite-backup")
}

fn run_code(config: &Path, args: &[&str]) -> (i32, String) {
    let o = run(config, args);
    (o.status.code().expect("exit code"), output_text(&o))
}

fn state(dir: &Path) -> Value {
    let bytes = std::fs::read(dir.join(".sqlite-backup-state/state.json")).expect("state file");
    serde_json::from_slice(&bytes).unwrap()
}

/// The live database and its side files, byte for byte.
fn live_bytes(db: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| {
            let p = PathBuf::from(format!("{}{s}", db.display()));
            let b = std::fs::read(&p).ok();
            (p, b)
        })
        .collect()
}

/// The value of the sample `name{labels}` in Prometheus text.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().expect("a number"))
}

/// `promtool check metrics` on `text`; panics with its output when it
/// rejects it, or with the install hint when it is missing.
fn promtool_accepts(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!(
            "`promtool` is required ({e}): apt-get install -y prometheus, or run scripts/test.sh"
        )
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics rejected:\n{}\n---\n{text}",
        output_text(&out)
    );
}

const DB: &str = "app.db";

fn project(extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB);
    backup_testkit::demo::create(&db, 400_000, 7).unwrap();
    let config = dir.path().join("sqlite-backup.toml");
    std::fs::write(
        &config,
        format!(
            "[[database]]\nlabel = \"app\"\npath = \"{DB}\"\nrequired_tables = [\"tasks\"]\n\n[metrics]\ntextfile = \"prom/sqlite_backup.prom\"\n{extra}"
        ),
    )
    .unwrap();
    (dir, db, config)
}

#[test]
fn drill_passes_records_rto_then_a_flipped_byte_fails_alerts_once_and_names_it() {
    let hook = Webhook::start();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("audited");
    let (dir, db, config) = project(&format!(
        "\n[alerts]\nwebhook = \"{}\"\nafter_failures = 1\n",
        hook.url("/hook")
    ));
    // post_restore runs in drills, on the scratch copy, never the live path.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "required_tables = [\"tasks\"]\n",
        &format!(
            "required_tables = [\"tasks\"]\ndrill_post_restore = true\npost_restore = 'echo \"$SQLITE_BACKUP_DRILL $SQLITE_BACKUP_PATH\" >> \"{}\"'\n",
            marker.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    for _ in 0..3 {
        let (c, out) = run_code(&config, &["backup"]);
        assert_eq!(c, 0, "{out}");
    }
    let live = live_bytes(&db);

    let (c, out) = run_code(&config, &["drill"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(live_bytes(&db), live, "a drill changed the live database");
    let s = state(dir.path());
    let drill = &s["databases"]["app"]["drill"]["last"]["sinks"][0];
    assert_eq!(drill["sink"], "local");
    assert!(drill["error"].is_null(), "{drill}");
    assert_eq!(
        drill["snapshots"].as_array().unwrap().len(),
        2,
        "newest + one older"
    );
    let rto = drill["rto_ms"].as_u64().expect("RTO recorded");
    assert!(rto > 0, "{drill}");
    let audited = std::fs::read_to_string(&marker).expect("post_restore ran");
    assert_eq!(audited.lines().count(), 2, "{audited}");
    for line in audited.lines() {
        let (flag, path) = line.split_once(' ').unwrap();
        assert_eq!(flag, "1", "SQLITE_BACKUP_DRILL");
        assert!(
            !Path::new(path).starts_with(dir.path()),
            "scratch near the live file: {path}"
        );
        assert!(
            !Path::new(path).exists(),
            "scratch copy left behind: {path}"
        );
    }
    let prom = std::fs::read_to_string(dir.path().join("prom/sqlite_backup.prom")).unwrap();
    let local = "database=\"app\",sink=\"local\"";
    assert_eq!(
        sample(&prom, "sqlite_backup_drill_success", local),
        Some(1.0)
    );
    assert_eq!(
        sample(&prom, "sqlite_backup_drill_rto_seconds", local),
        Some(rto as f64 / 1000.0)
    );
    assert!(hook.received().is_empty());

    // Flip one byte in the middle of the newest artifact.
    let newest = s["databases"]["app"]["sinks"]["local"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let artifact = dir.path().join("data/backups").join(&newest);
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&artifact, &bytes).unwrap();

    for attempt in 1..=2 {
        let (c, out) = run_code(&config, &["drill"]);
        assert_eq!(c, 1, "drill {attempt} must fail:\n{out}");
        assert!(out.contains(&newest), "the artifact is not named:\n{out}");
        assert_eq!(
            live_bytes(&db),
            live,
            "a failed drill changed the live database"
        );
        let posts = hook.received();
        assert_eq!(
            posts.len(),
            1,
            "one alert per streak, after drill {attempt}"
        );
        let text = serde_json::from_str::<Value>(&posts[0].body).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.contains("restore drill of `app` failed 1 time"),
            "{text}"
        );
        assert!(text.contains(&newest), "{text}");
    }
    let s = state(dir.path());
    assert_eq!(s["databases"]["app"]["drill"]["consecutive_failures"], 2);
    assert_eq!(
        s["databases"]["app"]["consecutive_failures"], 0,
        "drills have their own streak"
    );
    let prom = std::fs::read_to_string(dir.path().join("prom/sqlite_backup.prom")).unwrap();
    assert_eq!(
        sample(&prom, "sqlite_backup_drill_success", local),
        Some(0.0)
    );
    assert_eq!(
        sample(&prom, "sqlite_backup_drill_rto_seconds", local),
        None
    );
    assert_eq!(
        sample(
            &prom,
            "sqlite_backup_drill_consecutive_failures",
            "database=\"app\""
        ),
        Some(2.0)
    );
    promtool_accepts(&prom);
}

#[test]
fn drill_from_an_unknown_sink_is_a_usage_error() {
    let (_dir, _db, config) = project("");
    let (c, out) = run_code(&config, &["drill", "--from", "tape"]);
    assert_eq!(c, 2, "{out}");
    assert!(out.contains("unknown sink \"tape\""), "{out}");
}

#[test]
fn metrics_follow_success_failure_recovery_and_drill() {
    let (dir, db, config) = project("");
    let prom_path = dir.path().join("prom/sqlite_backup.prom");
    let prom = || std::fs::read_to_string(&prom_path).unwrap();
    let app = "database=\"app\"";
    let local = "database=\"app\",sink=\"local\"";

    // Success.
    let (c, out) = run_code(&config, &["backup"]);
    assert_eq!(c, 0, "{out}");
    let m = prom();
    promtool_accepts(&m);
    assert_eq!(
        sample(&m, "sqlite_backup_consecutive_failures", app),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "sqlite_backup_last_attempt_success", app),
        Some(1.0)
    );
    let first_success = sample(&m, "sqlite_backup_last_success_timestamp_seconds", local).unwrap();
    let stored = sample(&m, "sqlite_backup_stored_bytes", local).unwrap();
    let artifact = state(dir.path())["databases"]["app"]["sinks"]["local"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        stored as u64,
        std::fs::metadata(dir.path().join("data/backups").join(&artifact))
            .unwrap()
            .len()
    );
    assert!(sample(&m, "sqlite_backup_database_bytes", app).unwrap() >= 400_000.0);
    assert!(sample(&m, "sqlite_backup_duration_seconds", app).unwrap() > 0.0);
    // No age in a file that is read after it was written: it would freeze.
    assert_eq!(
        sample(&m, "sqlite_backup_newest_backup_age_seconds", local),
        None
    );

    // Failure: the source is no database.
    let good = std::fs::read(&db).unwrap();
    let _ = std::fs::remove_file(format!("{}-wal", db.display()));
    let _ = std::fs::remove_file(format!("{}-shm", db.display()));
    std::fs::write(&db, "not a database\n".repeat(100)).unwrap();
    let (c, out) = run_code(&config, &["backup"]);
    assert_eq!(c, 1, "{out}");
    let m = prom();
    assert_eq!(
        sample(&m, "sqlite_backup_consecutive_failures", app),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "sqlite_backup_last_attempt_success", app),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "sqlite_backup_last_success_timestamp_seconds", local),
        Some(first_success),
        "a failure does not move the last success"
    );
    assert!(
        sample(&m, "sqlite_backup_last_attempt_timestamp_seconds", app).unwrap() >= first_success
    );

    // Recovery.
    std::fs::write(&db, &good).unwrap();
    let (c, out) = run_code(&config, &["backup"]);
    assert_eq!(c, 0, "{out}");
    let m = prom();
    assert_eq!(
        sample(&m, "sqlite_backup_consecutive_failures", app),
        Some(0.0)
    );
    assert!(
        sample(&m, "sqlite_backup_last_success_timestamp_seconds", local).unwrap() > first_success
    );
    assert_eq!(
        sample(&m, "sqlite_backup_drill_success", local),
        None,
        "no drill yet"
    );

    // Drill.
    let (c, out) = run_code(&config, &["drill"]);
    assert_eq!(c, 0, "{out}");
    let m = prom();
    promtool_accepts(&m);
    assert_eq!(sample(&m, "sqlite_backup_drill_success", local), Some(1.0));
    assert!(sample(&m, "sqlite_backup_drill_rto_seconds", local).unwrap() > 0.0);

    // Prune deletions are counted (keep only the newest).
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[retention]\nhot_days = 0\nwarm_days = 0\nkeep_last = 1\n";
    std::fs::write(&config, text).unwrap();
    let (c, out) = run_code(&config, &["prune"]);
    assert_eq!(c, 0, "{out}");
    let m = prom();
    assert_eq!(
        sample(&m, "sqlite_backup_pruned_artifacts_total", local),
        Some(1.0),
        "{m}"
    );
    promtool_accepts(&m);
}

#[test]
fn daemon_runs_a_due_drill_and_serves_metrics() {
    let (dir, _db, config) = project("listen = \"127.0.0.1:0\"\n\n[drill]\nevery = \"24h\"\n");
    let mut cmd = sqlite_backup();
    cmd.arg("--config")
        .arg(&config)
        .args(["daemon", "--interval", "1h"]);
    let mut daemon = Running::spawn(cmd);
    let line = daemon.wait_for("metrics endpoint listening on ", Duration::from_secs(30));
    let url = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    // Never drilled: the drill is due right after the first backup.
    daemon.wait_for("drill done", Duration::from_secs(120));
    let body = reqwest::blocking::get(&url)
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("GET /metrics");
    let local = "database=\"app\",sink=\"local\"";
    assert_eq!(
        sample(&body, "sqlite_backup_drill_success", local),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "sqlite_backup_consecutive_failures",
            "database=\"app\""
        ),
        Some(0.0)
    );
    // A scrape computes the age and health at its own time.
    assert!(sample(&body, "sqlite_backup_newest_backup_age_seconds", local).unwrap() >= 0.0);
    assert_eq!(
        sample(&body, "sqlite_backup_healthy", "database=\"app\""),
        Some(1.0)
    );
    promtool_accepts(&body);
    let missing = reqwest::blocking::get(url.replace("/metrics", "/other")).unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    // The textfile is written too, and agrees.
    let file = std::fs::read_to_string(dir.path().join("prom/sqlite_backup.prom")).unwrap();
    assert_eq!(
        sample(&file, "sqlite_backup_drill_success", local),
        Some(1.0)
    );
    daemon.signal("TERM");
    let (code, log) = daemon.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("next run at"), "{log}");
}

#[test]
fn status_reads_the_catalog_when_the_state_folder_is_gone() {
    let (dir, _db, config) = project("");
    let (c, out) = run_code(&config, &["backup"]);
    assert_eq!(c, 0, "{out}");
    let run_id = state(dir.path())["databases"]["app"]["last_success"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_dir_all(dir.path().join(".sqlite-backup-state")).unwrap();

    let o = run(&config, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let app = &v["databases"][0];
    assert_eq!(app["health"], "ok");
    assert_eq!(app["run_id"], run_id.as_str());
    assert_eq!(app["source"], "catalog");
    assert!(
        app["disagreement"]
            .as_str()
            .unwrap()
            .contains("the state file has no record of it"),
        "{app}"
    );
    let (c, out) = run_code(&config, &["status"]);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("note: app: the state file has no record"),
        "{out}"
    );

    // --offline keeps the state-file-only view: never backed up, exit 1.
    let o = run(&config, &["status", "--offline", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["databases"][0]["health"], "never");
    assert_eq!(v["catalog_read"], false);
}

/// node_exporter reads the textfile as its own user: a rewrite keeps the
/// mode and group the operator gave it, `[metrics] mode` sets one, and a new
/// file is 0644 (it was 0600, unreadable to the collector).
#[test]
fn the_metrics_textfile_stays_readable_to_the_collector() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    backup_testkit::demo::create(&dir.path().join("app.db"), 200_000, 3).unwrap();
    let write = |extra: &str| {
        let config = dir.path().join("sqlite-backup.toml");
        std::fs::write(
            &config,
            format!("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[metrics]\ntextfile = \"m/app.prom\"\n{extra}"),
        )
        .unwrap();
        config
    };
    let prom = dir.path().join("m/app.prom");
    let mode = || std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;

    let config = write("");
    let (code, text) = run_code(&config, &["backup"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(mode(), 0o644, "a new file is readable by the collector");

    // The operator's choice survives the next rewrite, group included.
    std::fs::set_permissions(&prom, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&prom, None, Some(4242)).unwrap();
    let (code, text) = run_code(&config, &["backup"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(mode(), 0o640);
    assert_eq!(std::fs::metadata(&prom).unwrap().gid(), 4242);

    // An explicit mode wins.
    let config = write("mode = \"0604\"\n");
    let (code, text) = run_code(&config, &["backup"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(mode(), 0o604);
    let config = write("mode = \"0755\"\n");
    let (code, text) = run_code(&config, &["backup"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("[metrics] mode"), "{text}");
}

/// The shipped alert rules: `promtool` accepts them and their tests pass
/// (backups stop and the stale alert fires; they recover and it clears),
/// and every metric they name is one the textfile really carries after a
/// backup and a drill, so a renamed metric cannot silence them.
#[test]
fn the_shipped_alert_rules_pass_promtool_and_name_real_metrics() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    for args in [
        &["check", "rules", "sqlite-backup-rules.yml"][..],
        &["test", "rules", "sqlite-backup-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&rules)
            .output()
            .expect("promtool (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}",
            output_text(&out)
        );
    }

    let (dir, _db, config) = project("");
    assert_eq!(run_code(&config, &["backup"]).0, 0);
    assert_eq!(run_code(&config, &["drill"]).0, 0);
    let file = std::fs::read_to_string(dir.path().join("prom/sqlite_backup.prom")).unwrap();
    let text = std::fs::read_to_string(rules.join("sqlite-backup-rules.yml")).unwrap();
    let named: std::collections::BTreeSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sqlite_backup_"))
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    for name in named {
        assert!(
            file.lines().any(|l| l.starts_with(&format!("{name}{{"))),
            "{name} is not in the textfile:\n{file}"
        );
    }
}
