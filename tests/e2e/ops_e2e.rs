//! Operations, end to end through the real binary: failure streak alerts,
//! run and daemon locks, SIGTERM during a run, `status`, service files, logs.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use backup_testkit::ops_support::{Running, Webhook, sqlite_backup};
use serde_json::Value;

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("sqlite-backup.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn run(config: &Path, args: &[&str]) -> Output {
    sqlite_backup()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run sqlite-backup")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn status_json(config: &Path) -> (i32, Value) {
    let o = run(config, &["status", "--json"]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}\n{}", stdout(&o), stderr(&o)));
    (code(&o), v)
}

fn small_db(path: &Path) {
    backup_testkit::demo::create(path, 300_000, 7).unwrap();
}

fn not_a_database(path: &Path) {
    std::fs::write(
        path,
        "this is a text file, not a SQLite database\n".repeat(200),
    )
    .unwrap();
}

#[test]
fn failure_streak_alerts_once_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start();
    let secret_url = hook.url("/services/T000/B000/SECRET-TOKEN");
    let events = dir.path().join("events.log");
    let db = dir.path().join("app.db");
    not_a_database(&db);
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[[database]]
label = "app"
path = "app.db"

[alerts]
webhook = "{secret_url}"
command = 'echo "$SQLITE_BACKUP_EVENT $SQLITE_BACKUP_LABEL $SQLITE_BACKUP_FAILURES" >> "{}"'
after_failures = 3
"#,
            events.display()
        ),
    );
    let mut all_stderr = String::new();
    for n in 1..=3 {
        let o = run(&config, &["daemon", "--once"]);
        all_stderr += &stderr(&o);
        assert_eq!(code(&o), 1, "run {n} must fail:\n{}", stderr(&o));
        let expected = if n < 3 { 0 } else { 1 };
        assert_eq!(hook.received().len(), expected, "after run {n}");
    }
    let posts = hook.received();
    assert_eq!(posts[0].path, "/services/T000/B000/SECRET-TOKEN");
    let payload: Value = serde_json::from_str(&posts[0].body).unwrap();
    let text = payload["text"].as_str().unwrap();
    assert!(text.contains("`app`"), "{text}");
    assert!(text.contains("failed 3 runs in a row"), "{text}");
    assert!(text.contains("not a database"), "{text}");
    assert_eq!(
        payload.as_object().unwrap().len(),
        1,
        "Slack payload: only text"
    );

    // A fourth failure sends nothing new; `backup` shares the bookkeeping.
    let o = run(&config, &["backup"]);
    all_stderr += &stderr(&o);
    assert_eq!(code(&o), 1);
    assert_eq!(hook.received().len(), 1, "one alert per streak");

    let (exit, status) = status_json(&config);
    assert_eq!(exit, 1, "never backed up = unhealthy");
    let app = &status["databases"][0];
    assert_eq!(app["consecutive_failures"], 4);
    assert_eq!(app["alerted"], true);
    assert!(
        app["last_error"]
            .as_str()
            .unwrap()
            .contains("not a database")
    );

    // Fixed: the next run succeeds, sends the recovery message, resets.
    std::fs::remove_file(&db).unwrap();
    small_db(&db);
    let log_file = dir.path().join("logs/sqlite-backup.log");
    let o = sqlite_backup()
        .arg("--config")
        .arg(&config)
        .arg("--log-file")
        .arg(&log_file)
        .args(["daemon", "--once"])
        .output()
        .unwrap();
    all_stderr += &stderr(&o);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let posts = hook.received();
    assert_eq!(posts.len(), 2);
    let text: Value = serde_json::from_str(&posts[1].body).unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(text.contains("`app` recovered"), "{text}");
    assert!(text.contains("after 4 failed runs"), "{text}");
    let (exit, status) = status_json(&config);
    assert_eq!(exit, 0);
    assert_eq!(status["databases"][0]["consecutive_failures"], 0);
    assert_eq!(status["databases"][0]["alerted"], false);
    assert_eq!(status["databases"][0]["health"], "ok");

    // The command channel got the same two events.
    assert_eq!(
        std::fs::read_to_string(&events).unwrap(),
        "failure app 3\nrecovery app 4\n"
    );
    // The log file has the phase markers of that run.
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(logged.contains("backup phase start"), "{logged}");
    assert!(logged.contains("snapshot done label=app"), "{logged}");
    assert!(
        logged.contains("backup phase end ok=1 failed=0"),
        "{logged}"
    );
    // The webhook URL is a secret: never in any output.
    assert!(!all_stderr.contains("SECRET-TOKEN"), "{all_stderr}");
    assert!(!logged.contains("SECRET-TOKEN"));
}

#[test]
fn reset_failures_zeroes_the_counter() {
    let dir = tempfile::tempdir().unwrap();
    not_a_database(&dir.path().join("app.db"));
    let config = write_config(
        dir.path(),
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n",
    );
    for _ in 0..2 {
        assert_eq!(code(&run(&config, &["-q", "backup"])), 1);
    }
    assert_eq!(
        status_json(&config).1["databases"][0]["consecutive_failures"],
        2
    );
    let o = run(&config, &["status", "--reset-failures"]);
    assert!(stderr(&o).contains("app (2 -> 0)"), "{}", stderr(&o));
    assert_eq!(
        status_json(&config).1["databases"][0]["consecutive_failures"],
        0
    );
}

#[test]
fn second_daemon_is_refused_and_manual_backup_between_runs_works() {
    let dir = tempfile::tempdir().unwrap();
    small_db(&dir.path().join("app.db"));
    let config = write_config(
        dir.path(),
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n",
    );
    let mut first = sqlite_backup();
    first
        .arg("--config")
        .arg(&config)
        .args(["daemon", "--interval", "1h"]);
    let mut first = Running::spawn(first);
    first.wait_for("daemon started", Duration::from_secs(30));
    first.wait_for("next run at", Duration::from_secs(60));

    let o = run(&config, &["daemon", "--interval", "1h"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(
        msg.contains("a sqlite-backup daemon for this config is already running")
            && msg.contains(&format!("held by pid {}", first.child.id())),
        "{msg}"
    );

    // Between the daemon's runs a manual backup is fine.
    let o = run(&config, &["backup", "--tag", "premigrate"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    first.signal("TERM");
    let (exit, log) = first.finish(Duration::from_secs(30));
    assert_eq!(exit, Some(0), "{log}");
    assert!(log.contains("daemon stopped by signal"), "{log}");
}

#[test]
fn sigterm_during_a_run_keeps_nothing_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    backup_testkit::demo::create(&db, 150_000_000, 1).unwrap();
    // Level 19 makes the compress + upload phase long enough to hit.
    let config = write_config(
        dir.path(),
        "[[database]]\nlabel = \"big\"\npath = \"big.db\"\n\n[compression]\nformat = \"zstd\"\nlevel = 19\n",
    );
    let mut cmd = sqlite_backup();
    cmd.arg("--config").arg(&config).args(["daemon", "--once"]);
    let mut daemon = Running::spawn(cmd);
    daemon.wait_for("backup phase start", Duration::from_secs(60));

    // A manual backup during the run is refused, naming the holder.
    let o = run(&config, &["backup"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "a backup run is already running, held by pid {}",
            daemon.child.id()
        )),
        "{}",
        stderr(&o)
    );

    // Mid-stream: compressed pages have reached the partial artifact (zstd
    // -19 takes far longer than that for all of 150 MB).
    let streaming = || {
        files_under(&dir.path().join("data/backups"))
            .iter()
            .any(|f| {
                f.to_string_lossy().contains(".partial-")
                    && std::fs::metadata(f).is_ok_and(|m| m.len() > 0)
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !streaming() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never started"
        );
        // Polling the folder, not waiting out a guess.
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.signal("TERM");
    let (exit, log) = daemon.finish(Duration::from_secs(120));
    assert_eq!(exit, Some(0), "{log}");
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(log.contains("abandoned label=big"), "{log}");

    // The state file is valid, and records no success (nor a failure).
    let state: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(".sqlite-backup-state/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["format"], "sqlite-backup/state");
    let big = &state["databases"]["big"];
    assert!(big.is_null() || big["last_success"].is_null(), "{state}");

    // Nothing is listed, and nothing incomplete is left on disk.
    let o = run(&config, &["list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed, serde_json::json!([]));
    let leftovers = files_under(&dir.path().join("data/backups"));
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Replace values that change from run to run.
fn redact(v: &mut Value) {
    const VOLATILE: [&str; 7] = [
        "checked_at",
        "last_success",
        "age_seconds",
        "run_id",
        "size",
        "key",
        "last_failure",
    ];
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if VOLATILE.contains(&k.as_str()) && !val.is_null() {
                    *val = Value::String(format!("[{k}]"));
                } else if k == "path" || k == "state_file" {
                    *val = Value::String("[path]".into());
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[test]
fn status_json_schema_and_stale_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    small_db(&dir.path().join("app.db"));
    let both = "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[[database]]\nlabel = \"gone\"\npath = \"gone.db\"\n";
    let config = write_config(dir.path(), both);

    // JSON logs on a real run: every stderr line is one JSON object.
    let o = run(&config, &["--log-format", "json", "backup"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines: Vec<Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("backup phase start"))
    }));

    // `gone` was never backed up (source missing): unhealthy, exit 1.
    let (exit, mut status) = status_json(&config);
    assert_eq!(exit, 1);
    redact(&mut status);
    insta::assert_json_snapshot!("status_json", status);

    // Only `app` configured: healthy.
    write_config(
        dir.path(),
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n",
    );
    let o = run(&config, &["status"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("All 1 databases have a backup newer than 26 h."));

    // The newest success 30 h ago is stale with the default max age 26 h.
    let state_path = dir.path().join(".sqlite-backup-state/state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(30);
    state["databases"]["app"]["last_success"]["at"] = Value::String(old.to_string());
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let o = run(&config, &["status"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("STALE"), "{}", stdout(&o));
    assert!(stdout(&o).contains("UNHEALTHY"), "{}", stdout(&o));
    let (exit, status) = status_json(&config);
    assert_eq!(
        (exit, &status["databases"][0]["health"]),
        (1, &Value::from("stale"))
    );
    assert!(status["databases"][0]["age_seconds"].as_i64().unwrap() >= 30 * 3600);
}

fn schedule(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n",
    );
    let o = run(&config, &[&["schedule", "print"], args].concat());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let bin = std::fs::canonicalize(backup_testkit::ops_support::binary()).unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    stdout(&o)
        .replace(&bin.display().to_string(), "[BIN]")
        .replace(&root.display().to_string(), "[DIR]")
}

#[test]
fn schedule_print_systemd() {
    let out = schedule(&["--systemd"]);
    assert!(out.contains("ExecStart=[BIN] --config [DIR]/sqlite-backup.toml daemon --once\n"));
    insta::assert_snapshot!("schedule_systemd", out);
}

#[test]
fn schedule_print_launchd() {
    let out = schedule(&["--launchd", "--interval", "30m"]);
    assert!(out.contains("<key>StartInterval</key>\n    <integer>1800</integer>"));
    insta::assert_snapshot!("schedule_launchd", out);
}

#[test]
fn bad_interval_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let o = run(&config, &["daemon", "--once", "--interval", "4x"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("interval \"4x\" is not valid"));
}

#[test]
fn sigint_during_a_backup_keeps_nothing_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    backup_testkit::demo::create(&db, 80_000_000, 1).unwrap();
    // Level 19 makes the compress + write phase long enough to hit.
    let config = write_config(
        dir.path(),
        "[[database]]\nlabel = \"big\"\npath = \"big.db\"\n\n[compression]\nformat = \"zstd\"\nlevel = 19\n",
    );
    let mut cmd = sqlite_backup();
    cmd.arg("--config").arg(&config).arg("backup");
    let mut backup = Running::spawn(cmd);
    backup.wait_for("backup phase start", Duration::from_secs(60));
    // Mid-stream: the artifact's partial file exists in the local root.
    let root = dir.path().join("data/backups");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !files_under(&root)
        .iter()
        .any(|f| f.to_string_lossy().contains(".partial-"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no partial file appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    backup.signal("INT");
    let (exit, log) = backup.finish(Duration::from_secs(120));
    assert_eq!(exit, Some(1), "{log}");
    assert!(log.contains("received SIGINT"), "{log}");
    assert!(log.contains("abandoned label=big"), "{log}");

    let o = run(&config, &["list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed, serde_json::json!([]));
    let leftovers = files_under(&root);
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// One health rule for `status`, `status --json`, the metrics and the
/// report: a run that fails right after a success is not "ok".
#[test]
fn status_metrics_and_report_call_a_failed_latest_run_failing() {
    let dir = tempfile::tempdir().unwrap();
    small_db(&dir.path().join("app.db"));
    let config = write_config(
        dir.path(),
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[metrics]\ntextfile = \"metrics.prom\"\n",
    );
    let o = run(&config, &["backup"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (exit, status) = status_json(&config);
    assert_eq!(
        (exit, &status["databases"][0]["health"]),
        (0, &Value::from("ok"))
    );

    // The source becomes unreadable as a database: the next run fails.
    not_a_database(&dir.path().join("app.db"));
    let _ = std::fs::remove_file(dir.path().join("app.db-wal"));
    let o = run(&config, &["backup"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));

    let (exit, status) = status_json(&config);
    assert_eq!(
        (exit, &status["databases"][0]["health"]),
        (1, &Value::from("failing")),
        "{status:#}"
    );
    let o = run(&config, &["status"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("FAILING"), "{}", stdout(&o));
    // The textfile states the failure; `healthy` is a scrape's (it would
    // freeze in a file).
    let metrics = std::fs::read_to_string(dir.path().join("metrics.prom")).unwrap();
    assert!(
        metrics.contains("sqlite_backup_last_attempt_success{database=\"app\"} 0")
            && metrics.contains("sqlite_backup_consecutive_failures{database=\"app\"} 1"),
        "{metrics}"
    );
    let page = dir.path().join("report.html");
    let o = run(&config, &["report", "--html", page.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains(">failing<"), "the report agrees");
}

/// JSON logs carry their values as fields, so `jq` selects one database's
/// lines, a failure's error and a restore's steps; the text format reads as
/// before (`snapshot done label=app pages=…`).
#[test]
fn json_logs_answer_jq_queries() {
    let dir = tempfile::tempdir().unwrap();
    small_db(&dir.path().join("app.db"));
    small_db(&dir.path().join("costs.db"));
    std::fs::write(dir.path().join("broken.db"), "not a database\n".repeat(100)).unwrap();
    let config = write_config(
        dir.path(),
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[[database]]\nlabel = \"costs\"\npath = \"costs.db\"\n\n\
         [[database]]\nlabel = \"broken\"\npath = \"broken.db\"\n",
    );
    let o = run(&config, &["--log-format", "json", "backup"]);
    assert_eq!(code(&o), 1, "broken fails: {}", stderr(&o));
    let logs = dir.path().join("backup.jsonl");
    std::fs::write(&logs, stderr(&o)).unwrap();
    let jq = |filter: &str| {
        let out = std::process::Command::new("jq")
            .args(["-r", filter])
            .arg(&logs)
            .output()
            .expect("jq (Debian package jq)");
        assert!(
            out.status.success(),
            "jq {filter}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let app = jq(r#"select(.label == "app") | .message"#);
    assert!(app.lines().any(|m| m == "snapshot done"), "{app}");
    assert!(app.lines().any(|m| m == "upload done"), "{app}");
    let bytes = jq(r#"select(.label == "app" and .message == "upload done") | .bytes"#);
    assert!(bytes.trim().parse::<u64>().unwrap() > 0, "{bytes}");
    assert_eq!(
        jq(r#"select(.label == "costs") | .label"#).lines().count(),
        2,
        "snapshot and upload"
    );
    let error = jq(r#"select(.level == "ERROR" and .label == "broken") | .error"#);
    assert!(!error.trim().is_empty() && error != "null\n", "{error}");
    // The README's queries.
    let uploads = jq(r#"select(.message == "upload done") | "\(.label) \(.sink) \(.bytes)""#);
    assert_eq!(uploads.lines().count(), 2, "{uploads}");
    assert!(
        uploads
            .lines()
            .all(|l| l.split(' ').nth(2).unwrap().parse::<u64>().is_ok())
    );
    let failures =
        jq(r#"select(.level == "ERROR") | {"label": .label, "error": .error} | tostring"#);
    assert!(failures.contains(r#""label":"broken""#), "{failures}");
    let end = jq(r#"select(.message == "backup phase end") | "\(.ok) \(.failed)""#);
    assert_eq!(end.trim(), "2 1");

    // The text format keeps `key=value` after the message.
    let o = run(&config, &["backup", "--label", "app"]);
    assert!(
        stderr(&o).contains("snapshot done label=app pages="),
        "{}",
        stderr(&o)
    );
}

/// logrotate's default moves the log file away and expects a new one: the
/// daemon's next lines go to a new file at the path, not into the rotated
/// one, with no signal needed.
#[test]
fn a_rotated_log_file_is_reopened_at_its_path() {
    let dir = tempfile::tempdir().unwrap();
    small_db(&dir.path().join("app.db"));
    let config = write_config(
        dir.path(),
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n",
    );
    let log = dir.path().join("logs/sqlite-backup.log");
    let mut cmd = sqlite_backup();
    cmd.arg("--config")
        .arg(&config)
        .arg("--log-file")
        .arg(&log)
        .args(["daemon", "--interval", "1s"]);
    let mut daemon = Running::spawn(cmd);
    let run_of = |line: &str| {
        line.split("run=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let first = run_of(&daemon.wait_for("backup phase start", Duration::from_secs(60)));
    daemon.wait_for("backup phase end", Duration::from_secs(60));
    let rotated = dir.path().join("logs/sqlite-backup.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // The next run may have started before the rename (the interval is
    // short): two more runs ending means one started after it.
    for _ in 0..2 {
        daemon.wait_for_next("backup phase end", Duration::from_secs(60));
    }
    daemon.signal("TERM");
    let (code, out) = daemon.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).expect("a new log file at the path");
    assert!(old.contains(&first), "{old}");
    let started_after: Vec<String> = new
        .lines()
        .filter(|l| l.contains("backup phase start"))
        .map(run_of)
        .filter(|run| !old.contains(run.as_str()))
        .collect();
    assert!(
        !started_after.is_empty(),
        "no run that started after the rename logged to the new file:\n{new}"
    );
}

/// Every file a backup, a drill and a prune write lies inside the unit's
/// `ReadWritePaths=` (or its private /tmp): under `ProtectSystem=strict`
/// nothing else is writable.
fn files_changed_since(dir: &Path, since: std::time::SystemTime, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files_changed_since(&path, since, out);
        } else if meta.modified().unwrap() >= since {
            out.push(path);
        }
    }
}

/// The printed systemd unit is hardened (`systemd-analyze security` ≤ 3.0,
/// 9.6 before), `systemd-analyze verify` accepts it, and the folders it
/// lets the service write are all a real backup, drill and prune write.
#[test]
fn the_systemd_unit_is_hardened_and_writes_only_where_the_config_says() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("srv data")).unwrap();
    small_db(&root.join("srv data/app.db"));
    let config = write_config(
        root,
        "state_dir = \"state\"\n[[database]]\nlabel = \"app\"\npath = \"srv data/app.db\"\n\n\
         [local]\nroot = \"backups\"\n\n[metrics]\ntextfile = \"prom/sb.prom\"\n\n\
         [retention]\nhot_days = 0\nwarm_days = 0\n",
    );
    let log = root.join("logs/sb.log");
    let o = sqlite_backup()
        .arg("--config")
        .arg(&config)
        .arg("--log-file")
        .arg(&log)
        .args(["schedule", "print", "--systemd", "--user", "sqlite-backup"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    let part = |from: &str, to: Option<&str>| {
        let start = text.find(from).unwrap() + from.len();
        let end = to.map_or(text.len(), |t| text.find(t).unwrap());
        text[start..end].to_string()
    };
    let units = root.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let service = units.join("sqlite-backup.service");
    let timer = units.join("sqlite-backup.timer");
    std::fs::write(
        &service,
        part(
            "# ---- sqlite-backup.service ----\n",
            Some("# ---- sqlite-backup.timer"),
        ),
    )
    .unwrap();
    std::fs::write(&timer, part("# ---- sqlite-backup.timer ----\n", None)).unwrap();
    let analyze = |args: &[&str], file: &Path| {
        let out = std::process::Command::new("systemd-analyze")
            .args(args)
            .arg(file)
            .output()
            .expect("systemd-analyze (Debian package systemd)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, verified) = analyze(&["verify"], &service);
    assert!(ok, "{verified}");
    assert!(analyze(&["verify"], &timer).0);
    let (_, security) = analyze(&["security", "--offline=true"], &service);
    let score: f64 = security
        .lines()
        .find_map(|l| l.split("exposure level for sqlite-backup.service: ").nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{security}"));
    assert!(score <= 3.0, "exposure {score}:\n{security}");

    let line = part("ReadWritePaths=", Some("\nProtectSystem="));
    let writable: Vec<PathBuf> = line
        .split(" -")
        .map(|p| PathBuf::from(p.trim_start_matches('-').trim_matches('"')))
        .collect();
    assert!(writable.iter().any(|p| p.ends_with("srv data")), "{line}");
    let since = std::time::SystemTime::now() - Duration::from_secs(1);
    for args in [&["backup"][..], &["backup"], &["drill"], &["prune"]] {
        let o = sqlite_backup()
            .arg("--config")
            .arg(&config)
            .arg("--log-file")
            .arg(&log)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    }
    let mut changed = Vec::new();
    files_changed_since(root, since, &mut changed);
    let outside: Vec<&PathBuf> = changed
        .iter()
        .filter(|f| !f.starts_with(&units) && f.as_path() != config.as_path())
        .filter(|f| !writable.iter().any(|w| f.starts_with(w)))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside ReadWritePaths={line}: {outside:?}"
    );
    assert!(changed.iter().any(|f| f.starts_with(root.join("backups"))));
    assert!(changed.iter().any(|f| f.starts_with(root.join("prom"))));
}
