//! The daemon in incremental mode under a busy writer: one run at a time,
//! a growing chain, every snapshot verifies and the newest restores.

use std::time::{Duration, Instant};

use backup_core::manifest;
use backup_core::manifest::Listed;
use backup_core::sink::Placement;
use backup_local::LocalSink;
use backup_testkit::demo::Writer;
use backup_testkit::ops_support::Running;
use backup_testkit::testkit::{
    Project, assert_image, assert_snapshot_point, output_text, require_tool,
};
use jiff::Timestamp;

use super::CONFIG;

const RUNS: usize = 6;

/// `(time, "start" | "end", run id)` of every run boundary in the log, in
/// log order. A text log line starts with its RFC 3339 time.
fn boundaries(log: &str) -> Vec<(Timestamp, &'static str, String)> {
    log.lines()
        .filter_map(|l| {
            let at: Timestamp = l.split_whitespace().next()?.parse().ok()?;
            if let Some(rest) = l.split("backup phase start run=").nth(1) {
                let run = rest.split_whitespace().next()?.to_string();
                Some((at, "start", run))
            } else if l.contains("backup phase end ") {
                Some((at, "end", String::new()))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn daemon_in_incremental_mode_never_overlaps_and_its_chain_restores() {
    require_tool("sqlite3");
    let p = Project::new();
    let db = p.demo_db("app.db", 1_000_000);
    p.write_config(CONFIG);
    let writer = Writer::start(&db, 200).unwrap();
    let mut daemon = Running::spawn(p.command(&["daemon", "--interval", "1s"]));
    daemon.wait_for("daemon started", Duration::from_secs(30));

    // The catalog is the event: a run counts once its manifest is listed.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !p.backups().join("manifests").exists() || p.catalog().len() < RUNS {
        assert!(
            Instant::now() < deadline,
            "{RUNS} runs not listed within 90 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.signal("TERM");
    let (code, log) = daemon.finish(Duration::from_secs(60));
    let stats = writer.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("daemon stopped by signal"), "{log}");
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);

    // From the log: start, end, start, end…; each start after the previous end.
    let marks = boundaries(&log);
    assert!(marks.len() >= 2 * RUNS, "{log}");
    for (i, w) in marks.windows(2).enumerate() {
        let want = if i % 2 == 0 {
            ("start", "end")
        } else {
            ("end", "start")
        };
        assert_eq!((w[0].1, w[1].1), want, "runs overlap in the log:\n{log}");
        assert!(w[0].0 <= w[1].0, "log time went back:\n{log}");
    }
    // From the manifests: each run started after the previous one finished,
    // and every run the catalog lists is one the log shows.
    let local = LocalSink::new("local", p.backups(), Placement::Local);
    let (stored, _) = manifest::read_all(&local).unwrap();
    assert!(stored.len() >= RUNS);
    for w in stored.windows(2) {
        assert!(
            w[0].manifest.finished_at <= w[1].manifest.started_at,
            "run {} started before run {} finished",
            w[1].manifest.run_id,
            w[0].manifest.run_id
        );
    }
    for s in &stored {
        assert!(
            marks
                .iter()
                .any(|(_, k, run)| *k == "start" && *run == s.manifest.run_id),
            "run {} is not in the log",
            s.manifest.run_id
        );
    }

    let mut listed = p.catalog();
    listed.reverse();
    let depths: Vec<u32> = listed
        .iter()
        .map(|l| l.entry.pages.as_ref().expect("incremental").chain_depth)
        .collect();
    assert_eq!(depths, (0..listed.len() as u32).collect::<Vec<_>>());
    let digest = |l: &Listed| l.entry.pages.as_ref().unwrap().hashes_sha256.clone();
    for w in listed.windows(2) {
        assert!(digest(&w[0]).is_some());
        assert_ne!(
            digest(&w[0]),
            digest(&w[1]),
            "the writer committed nothing between two runs"
        );
    }
    // The writer keeps its connection open, so the WAL survives between
    // runs: after the first, runs read only the pages its frames name,
    // unless a checkpoint restarted it in between.
    let hashed: Vec<&str> = log.lines().filter(|l| l.contains("pages hashed")).collect();
    let from_wal = hashed
        .iter()
        .filter(|l| l.contains("named by the WAL"))
        .count();
    eprintln!(
        "{from_wal} of {} runs read only what the WAL named",
        hashed.len()
    );
    assert!(from_wal >= 1, "{hashed:#?}");

    let out = p.run(&["verify", "--catalog", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    let newest = listed.last().unwrap();
    let out = p.run_ok(&["restore", "app", "--to", "newest.db"]);
    assert!(
        out.contains(&format!("from snapshot {} ", newest.run_id)),
        "{out}"
    );
    let to = p.join("newest.db");
    assert_image(&newest.entry, &std::fs::read(&to).unwrap(), "newest");
    assert_snapshot_point(&to, newest.entry.snapshot_at, &stats);
    eprintln!(
        "{} runs listed, {} commits by the writer, chain depths {depths:?}",
        listed.len(),
        stats.commits.len()
    );
}
