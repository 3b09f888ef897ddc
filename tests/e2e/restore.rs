//! `sqlite-backup restore` end to end: real WAL databases, the real binary,
//! real processes. Needs the binary built: `cargo build -p backup-cli`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Output;

use backup_core::digest::{Sha256, Sidecar};
use backup_core::manifest::Entry;
use backup_core::restore::{self, Observer, Request, Selector, Step};
use backup_core::sink::{Placement, Sink};
use backup_local::LocalSink;
use backup_testkit::restore_support::{
    Fixture, Sqlite3Shell, TABLES, add_tasks, corrupt_index_page, drop_table, flip_byte, integrity,
    open_ro, table_digest,
};
use backup_testkit::testkit::assert_snapshot_point;

fn bin() -> PathBuf {
    backup_testkit::testkit::binary()
}

fn text(o: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn restore(f: &Fixture, extra: &[&str]) -> Output {
    f.cmd()
        .args(["restore", "app"])
        .args(extra)
        .output()
        .expect("run restore")
}

fn sha_of(p: &Path) -> String {
    Sha256::hex_of(&std::fs::read(p).unwrap())
}

fn tasks(p: &Path) -> u64 {
    open_ro(p)
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

#[test]
fn round_trip_under_a_concurrent_writer() {
    let f = Fixture::new(bin(), 8 << 20, "");
    let writer = backup_testkit::demo::Writer::start(&f.db, 300).unwrap();
    writer.wait_for_commits(60);
    let entry = f.backup("live");
    writer.wait_for_commits(60);
    let stats = writer.stop();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    let out = restore(&f, &[]);
    assert!(out.status.success(), "{}", text(&out));

    // The placed file is exactly the manifest's database.
    assert_eq!(sha_of(&f.db), entry.db_sha256);
    assert_eq!(integrity(&f.db), ["ok"]);
    // The source, as it was when the writer stopped, is kept aside.
    let broken = f.broken_files();
    let source_path = broken
        .iter()
        .find(|p| !p.to_string_lossy().ends_with("-wal"))
        .expect("the live database is kept aside");
    let restored = open_ro(&f.db);
    let source = rusqlite::Connection::open(source_path).unwrap();

    // Every row committed before the snapshot began is present, and the
    // writer ran on past it. Content equals the source as of the snapshot:
    // the writer only appends to `tasks`, so that is the source up to the
    // newest id in the snapshot, and the other tables unchanged.
    let max_id = assert_snapshot_point(&f.db, entry.snapshot_at, &stats);
    for t in TABLES {
        let cond = (t == "tasks").then(|| format!("id <= {max_id}"));
        let a = table_digest(&restored, t, None);
        let b = table_digest(&source, t, cond.as_deref());
        assert_eq!(a, b, "table {t} differs from the source as of the snapshot");
        assert_eq!(Some(&a.0), entry.row_counts.get(t), "row count of {t}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Kept the live database aside"), "{stdout}");
    assert!(stdout.contains("Re-checked the placed file: integrity_check ok"));
}

/// Two backups: `good` (older) and `bad` (newer, 50 more tasks); the live
/// database then gets 10 more tasks.
fn two_backups() -> (Fixture, Entry, Entry) {
    let f = Fixture::new(bin(), 1 << 20, "");
    let good = f.backup("good");
    add_tasks(&f.db, 50);
    let bad = f.backup("bad");
    add_tasks(&f.db, 10);
    assert_eq!(bad.row_counts["tasks"], good.row_counts["tasks"] + 50);
    (f, good, bad)
}

fn assert_walks_back(corrupt: impl Fn(&Fixture, &Entry), expected_problem: &str) {
    let (f, good, bad) = two_backups();
    corrupt(&f, &bad);
    let out = restore(&f, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("REJECTED"), "{stdout}");
    assert!(
        stdout
            .to_lowercase()
            .contains(&expected_problem.to_lowercase()),
        "expected {expected_problem:?} in\n{stdout}"
    );
    assert!(
        stdout.contains("walking back to") && stdout.contains("tasks") && stdout.contains("(-50)"),
        "the step back must say what it loses:\n{stdout}"
    );
    assert!(stdout.contains("walked back 1 candidate(s)"), "{stdout}");
    assert_eq!(
        sha_of(&f.db),
        good.db_sha256,
        "the older, good one is placed"
    );
    assert_eq!(tasks(&f.db), good.row_counts["tasks"]);
    assert_eq!(integrity(&f.db), ["ok"]);
}

#[test]
fn walks_back_past_a_flipped_byte() {
    assert_walks_back(
        |f, bad| {
            let p = f.artifact(bad);
            let len = std::fs::metadata(&p).unwrap().len() as usize;
            flip_byte(&p, len / 2);
        },
        "does not match the sidecar",
    );
}

#[test]
fn walks_back_past_a_truncated_artifact() {
    assert_walks_back(
        |f, bad| {
            let p = f.artifact(bad);
            let len = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        },
        "stored size is",
    );
}

#[test]
fn walks_back_past_a_wrong_sidecar() {
    assert_walks_back(
        |f, bad| {
            let name = bad.key.rsplit('/').next().unwrap();
            std::fs::write(
                f.root.join(&bad.sidecar_key),
                Sidecar::new("ab".repeat(32), name).render(),
            )
            .unwrap();
        },
        "does not match the sidecar",
    );
}

#[test]
fn walks_back_past_a_valid_stream_of_a_corrupt_database() {
    assert_walks_back(
        |f, bad| {
            let run = f.run_of(bad);
            f.replace_artifact(&run, &corrupt_index_page(&f.db_bytes(bad)));
        },
        "integrity check is not `ok`",
    );
}

#[test]
fn walks_back_past_a_database_missing_a_required_table() {
    assert_walks_back(
        |f, bad| {
            let run = f.run_of(bad);
            f.replace_artifact(&run, &drop_table(&f.db_bytes(bad), "merkle_nodes"));
        },
        "required table `merkle_nodes` is missing",
    );
}

#[test]
fn none_good_fails_and_touches_nothing() {
    let (f, good, bad) = two_backups();
    flip_byte(&f.artifact(&bad), 100);
    let run = f.run_of(&good);
    f.replace_artifact(&run, &corrupt_index_page(&f.db_bytes(&good)));
    let live = std::fs::read(&f.db).unwrap();
    let folder = f.live_folder();
    let out = restore(&f, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("No candidate passed (2 tried)"), "{all}");
    assert!(all.contains("none of the 2 candidate(s)"), "{all}");
    assert_eq!(
        std::fs::read(&f.db).unwrap(),
        live,
        "live db byte-identical"
    );
    assert_eq!(
        f.live_folder(),
        folder,
        "nothing left behind, nothing moved"
    );
}

#[test]
fn refuses_while_the_sqlite3_shell_has_it_open_and_force_overrides() {
    let (f, _good, bad) = two_backups();
    let shell = Sqlite3Shell::open(&f.db);
    let live = std::fs::read(&f.db).unwrap();
    let folder = f.live_folder();

    let out = restore(&f, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is in use"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {} (sqlite3)", shell.pid())),
        "names the process: {stderr}"
    );
    assert_eq!(std::fs::read(&f.db).unwrap(), live);
    assert_eq!(f.live_folder(), folder);

    let out = restore(&f, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("--force: restoring although"), "{all}");
    assert!(all.contains("WARNING: forced past"), "{all}");
    assert_eq!(sha_of(&f.db), bad.db_sha256);
    let broken = f.broken_files();
    let kept = broken
        .iter()
        .find(|p| !p.to_string_lossy().ends_with("-wal"))
        .expect("the old database is kept");
    assert_eq!(std::fs::read(kept).unwrap(), live);
    drop(shell);
    assert_eq!(integrity(&f.db), ["ok"]);
}

#[test]
fn post_restore_gets_the_facts_and_its_failure_is_reported() {
    let keep = tempfile::tempdir().unwrap();
    let env_file = keep.path().join("env.txt");
    let f = Fixture::new(
        bin(),
        256 << 10,
        &format!(
            "post_restore = 'env | grep ^SQLITE_BACKUP_ | sort > {}; exit 3'",
            env_file.display()
        ),
    );
    let e = f.backup("one");
    let live = std::fs::read(&f.db).unwrap();
    let out = restore(&f, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("post_restore FAILED"), "{stdout}");
    assert!(stdout.contains("exit status: 3"), "{stdout}");
    assert!(stdout.contains("WITH PROBLEMS"), "{stdout}");
    assert!(
        stdout.contains("to swap back, with the application stopped, run:"),
        "{stdout}"
    );
    let broken = f.broken_files();
    let kept = broken
        .iter()
        .find(|p| !p.to_string_lossy().ends_with("-wal"))
        .expect("previous database stays aside");
    assert_eq!(std::fs::read(kept).unwrap(), live);
    assert_eq!(sha_of(&f.db), e.db_sha256);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("SQLITE_BACKUP_LABEL=app\n"), "{env}");
    assert!(
        env.contains(&format!("SQLITE_BACKUP_PATH={}\n", f.db.display())),
        "{env}"
    );
    assert!(
        env.contains(&format!("SQLITE_BACKUP_BROKEN={}\n", kept.display())),
        "{env}"
    );
    assert!(env.contains("SQLITE_BACKUP_SNAPSHOT_ID="), "{env}");
}

#[test]
fn dry_run_changes_nothing_and_tells_the_truth() {
    let (f, good, bad) = two_backups();
    flip_byte(&f.artifact(&bad), 200);
    let live = std::fs::read(&f.db).unwrap();
    let folder = f.live_folder();
    let out = restore(&f, &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("REJECTED"), "{stdout}");
    assert!(
        stdout.contains(&format!("({}, taken", good.key)),
        "names the candidate it would place: {stdout}"
    );
    assert!(stdout.contains("(now removed)"), "{stdout}");
    assert!(stdout.contains("keep "), "{stdout}");
    assert_eq!(std::fs::read(&f.db).unwrap(), live);
    assert_eq!(f.live_folder(), folder);
}

#[test]
fn restores_to_a_new_path_and_selects_by_tag_and_id() {
    let (f, good, bad) = two_backups();
    let to = f.dir.path().join("elsewhere").join("copy.db");
    let out = restore(&f, &["--to", to.to_str().unwrap(), "--tag", "good"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha_of(&to), good.db_sha256);
    assert!(
        !std::fs::read_dir(to.parent().unwrap())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("broken")),
        "nothing to keep aside at a new path"
    );
    let bad_run = f.run_of(&bad);
    let out = restore(&f, &["--to", to.to_str().unwrap(), "--id", &bad_run]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha_of(&to), bad.db_sha256);
    // The copy it replaced is kept aside.
    let kept: Vec<_> = std::fs::read_dir(to.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("copy.db.broken-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(sha_of(&kept[0].path()), good.db_sha256);

    let out = restore(&f, &["--tag", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = restore(&f, &["--from", "nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = restore(&f, &["--date", "2026-02-30"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// At every step of a restore, the target holds the old database or the
/// new verified one, never anything else and never nothing.
#[test]
fn the_target_always_holds_old_or_new_at_every_step() {
    struct Watch<'a> {
        target: &'a Path,
        old: Vec<u8>,
        new_sha: String,
        seen: RefCell<Vec<String>>,
    }
    impl Observer for Watch<'_> {
        fn step(&self, step: &Step<'_>) {
            let bytes = std::fs::read(self.target).expect("target exists at every step");
            let is_old = bytes == self.old;
            let is_new = Sha256::hex_of(&bytes) == self.new_sha;
            assert!(is_old || is_new, "target is neither at {step:?}");
            let wal = backup_core::inuse::side_file(self.target, "-wal");
            if is_new {
                assert!(!wal.exists(), "an old -wal beside the new database");
            }
            self.seen.borrow_mut().push(format!(
                "{}:{}",
                format!("{step:?}").split([' ', '{']).next().unwrap(),
                if is_old { "old" } else { "new" }
            ));
        }
    }
    let (f, _good, bad) = two_backups();
    // A crashed writer: the live database has a non-empty -wal.
    let writer = rusqlite::Connection::open(&f.db).unwrap();
    writer
        .execute_batch("PRAGMA wal_autocheckpoint=0; INSERT INTO tasks (title, owner, status, priority, created_at) VALUES ('in wal', 'x', 'x', 1, 'x');")
        .unwrap();
    let wal_bytes =
        std::fs::read(backup_core::inuse::side_file(&f.db, "-wal")).expect("a -wal exists");
    assert!(!wal_bytes.is_empty());
    std::mem::forget(writer); // like a crash: no checkpoint, -wal stays
    // forget() keeps our own fds open, but our process is never a "holder".

    let config = backup_config::Config::load(&f.config).unwrap();
    let db = config.database("app").unwrap().database.clone();
    let local = LocalSink::new("local", &f.root, Placement::Local);
    let sinks: [&dyn Sink; 1] = [&local];
    let (catalog, _) = backup_core::manifest::view::collect(&sinks);
    let plan = restore::plan(&catalog, &Request::new(db, Selector::Latest)).unwrap();
    let watch = Watch {
        target: &f.db,
        old: std::fs::read(&f.db).unwrap(),
        new_sha: bad.db_sha256.clone(),
        seen: RefCell::default(),
    };
    let outcome = restore::execute(&plan, &sinks, &watch).unwrap();
    assert!(outcome.ok());
    let seen = watch.seen.into_inner();
    assert_eq!(
        seen,
        [
            "Verifying:old",
            "Accepted:old",
            "KeptAside:old",
            "SideFileMoved:old",
            "SideFileRemoved:old",
            "Placed:new",
            "Rechecked:new"
        ]
    );
    // The kept copy still has its last commit: the -wal went with it.
    let broken = outcome.broken.unwrap();
    assert_eq!(
        std::fs::read(backup_core::inuse::side_file(&broken, "-wal")).unwrap(),
        wal_bytes
    );
    let n: i64 = rusqlite::Connection::open(&broken)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM tasks WHERE title = 'in wal'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// The shell lines printed under "to swap back".
fn swap_back_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.contains("to swap back"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn following_the_printed_swap_back_keeps_every_commit_of_the_wal() {
    // A failing post_restore is when people swap back; the advice is the same
    // after a clean restore.
    let f = Fixture::new(bin(), 256 << 10, "post_restore = 'exit 3'");
    f.backup("one");
    // 50 commits that live only in the WAL: no checkpoint, not even on close
    // (as after an application killed before its checkpoint).
    // Counted through SQLite as the application would (WAL included).
    let live_tasks = |p: &Path| -> u64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    };
    let before = live_tasks(&f.db);
    {
        let c = rusqlite::Connection::open(&f.db).unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .unwrap();
        for i in 0..50 {
            c.execute(
                "INSERT INTO tasks (title, owner, status, priority, created_at) \
                 VALUES (?1, 'test', 'pending', 1, 'now')",
                [format!("only in the wal {i}")],
            )
            .unwrap();
        }
    }
    let wal = backup_core::inuse::side_file(&f.db, "-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "the commits are in the WAL"
    );

    let out = restore(&f, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "post_restore failed: {}",
        text(&out)
    );
    assert_eq!(tasks(&f.db), before, "the snapshot is in place");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = swap_back_lines(&stdout);
    assert!(lines.iter().any(|l| l.contains("-wal")), "{stdout}");
    // Follow the advice to the letter.
    let o = std::process::Command::new("sh")
        .arg("-ec")
        .arg(lines.join("\n"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{lines:?}: {}", text(&o));
    assert_eq!(
        live_tasks(&f.db),
        before + 50,
        "all 50 WAL-only commits are back"
    );
    assert_eq!(integrity(&f.db), ["ok"]);
    assert!(f.broken_files().is_empty(), "{:?}", f.broken_files());
}

#[test]
fn refuses_when_a_process_holds_the_database_through_a_hard_link() {
    let (f, _good, _bad) = two_backups();
    // Rollback-journal mode: an idle connection holds no lock, only an
    // open file, and here under another name.
    rusqlite::Connection::open(&f.db)
        .unwrap()
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
    let other = f.dir.path().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    let link = other.join("same-file.db");
    std::fs::hard_link(&f.db, &link).unwrap();
    let shell = Sqlite3Shell::open(&link);
    let live = std::fs::read(&f.db).unwrap();

    let out = restore(&f, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("is in use"), "{all}");
    assert!(
        all.contains(&format!("pid {} (sqlite3)", shell.pid())),
        "{all}"
    );
    assert_eq!(std::fs::read(&f.db).unwrap(), live, "untouched");
    drop(shell);
}

#[test]
fn restores_the_file_a_symlink_points_to_and_keeps_the_link() {
    let (f, _good, newest) = two_backups();
    // Move the database elsewhere and leave a relative symlink at its path.
    let real_dir = f.dir.path().join("real");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("app.db");
    std::fs::rename(&f.db, &real).unwrap();
    for side in ["-wal", "-shm"] {
        let from = backup_core::inuse::side_file(&f.db, side);
        if from.exists() {
            std::fs::rename(&from, backup_core::inuse::side_file(&real, side)).unwrap();
        }
    }
    std::os::unix::fs::symlink("../real/app.db", &f.db).unwrap();
    add_tasks(&f.db, 5);
    let old_tasks = tasks(&real);

    let out = restore(&f, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("is a symlink: restoring the file it points to"),
        "{all}"
    );
    // The link is still a link, to the same place, and reads the snapshot.
    assert!(
        std::fs::symlink_metadata(&f.db)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(&f.db).unwrap(),
        Path::new("../real/app.db")
    );
    assert_eq!(sha_of(&real), newest.db_sha256);
    // The kept copy is the real old file, not a link to the live one.
    let kept: Vec<PathBuf> = std::fs::read_dir(&real_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.contains(".broken-") && !n.ends_with("-wal")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        std::fs::symlink_metadata(&kept[0])
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(tasks(&kept[0]), old_tasks);
}

/// Whatever `list` prints as a snapshot's time, pasted into `restore --at`,
/// selects the snapshot on that line: TAKEN (to the second) picks the newest
/// snapshot of that second, `snapshot_at` exactly its own.
#[test]
fn every_time_list_prints_round_trips_through_restore_at() {
    let f = Fixture::new(bin(), 1 << 18, "");
    for i in 0..5 {
        add_tasks(&f.db, 3);
        f.backup(&format!("t{i}"));
    }
    let out = f.cmd().args(["list", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 5);
    let at = |r: &serde_json::Value| {
        r["snapshot_at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let mut same_second = 0;
    for row in &rows {
        let taken = row["taken"].as_str().unwrap();
        let second = at(row).strftime("%Y-%m-%d %H:%M:%SZ").to_string();
        assert_eq!(taken, second, "TAKEN is the second of snapshot_at");
        // Newest first: the first row of that second is the one TAKEN means.
        let newest_of_second = rows.iter().find(|r| r["taken"] == row["taken"]).unwrap();
        same_second += usize::from(newest_of_second != row);
        for (typed, want) in [
            (taken, newest_of_second),
            (row["snapshot_at"].as_str().unwrap(), row),
        ] {
            let out = restore(&f, &["--dry-run", "--at", typed]);
            assert!(out.status.success(), "--at {typed}: {}", text(&out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let key = want["key"].as_str().unwrap();
            assert!(
                stdout.contains(&format!("({key}, taken")),
                "--at {typed} must select {key}:\n{stdout}"
            );
        }
    }
    eprintln!("{same_second} of 5 snapshots shared their second with a newer one");
}

/// `restore --json`: stdout is one JSON object (the steps go to stderr),
/// naming what was placed, what was rejected and why, and where the
/// previous database went; a dry run and a restore that finds nothing good
/// say so the same way.
#[test]
fn restore_json_reports_the_walk_back_and_keeps_stdout_for_json() {
    let (f, good, bad) = two_backups();
    flip_byte(&f.artifact(&bad), 100);
    let json = |extra: &[&str]| {
        let out = restore(&f, &[&["--json"], extra].concat());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", text(&out)));
        (out.status.code(), v, stderr)
    };

    let (code, dry, stderr) = json(&["--dry-run"]);
    assert_eq!(code, Some(0));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["would_restore"]["db_sha256"], good.db_sha256.as_str());
    assert!(
        stderr.contains("REJECTED"),
        "the steps go to stderr:\n{stderr}"
    );

    let (code, done, _) = json(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(done["ok"], true);
    assert_eq!(done["restored"]["db_sha256"], good.db_sha256.as_str());
    assert_eq!(done["rejected"][0]["db_sha256"], bad.db_sha256.as_str());
    let problems = done["rejected"][0]["problems"].to_string();
    assert!(
        problems.contains("does not match the sidecar"),
        "{problems}"
    );
    let kept = std::path::PathBuf::from(done["previous_kept_at"].as_str().unwrap());
    assert!(kept.is_file(), "{}", kept.display());
    assert_eq!(sha_of(&f.db), good.db_sha256);

    let run = f.run_of(&good);
    f.replace_artifact(&run, &corrupt_index_page(&f.db_bytes(&good)));
    let (code, failed, _) = json(&[]);
    assert_eq!(code, Some(1));
    assert_eq!(failed["ok"], false);
    assert!(failed["restored"].is_null());
    assert_eq!(failed["rejected"].as_array().unwrap().len(), 2, "{failed}");
}
