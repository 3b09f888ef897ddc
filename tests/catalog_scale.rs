//! Measurement, not a functional test: what a catalog ten thousand runs
//! long costs the CLI. The library makes the runs quickly (one process,
//! keeping its catalog views, as the daemon does) into a local folder the
//! CLI's config names; then fresh `sqlite-backup` processes run `list
//! --json`, `backup` and `status`, after 10 runs and at the end. Asserts
//! only that every step succeeds and `list` shows every run.
//!
//! ```text
//! cargo build --release -p backup-cli
//! SQLITE_BACKUP_BIN=$PWD/target/release/sqlite-backup SCALE_RUNS=10000 \
//!   cargo test --release --test catalog_scale -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use backup_core::manifest::view;
use backup_core::{Backups, Database};
use backup_local::LocalSink;
use backup_testkit::testkit::Project;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

/// Median wall time of `n` fresh processes running `args`.
fn cli(p: &Project, args: &[&str], n: usize) -> f64 {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                p.run_ok(args);
                t.elapsed()
            })
            .collect(),
    )
}

#[test]
#[ignore = "measurement, minutes: run with --ignored --nocapture (see the file's header)"]
fn a_catalog_ten_thousand_runs_long() {
    let runs: usize = std::env::var("SCALE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let p = Project::new();
    let db = p.demo_db("app.db", 5_000_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[snapshot]\nincremental = true\n",
    );
    let app = rusqlite::Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    let rows: i64 = app
        .query_row("SELECT max(id) FROM tasks", [], |r| r.get(0))
        .unwrap();
    view::memo::remember();
    let backups = Backups::builder()
        .sink(LocalSink::folder(p.backups()))
        .scratch_dir(p.join("scratch"))
        .page_cache(p.join(".sqlite-backup-state/page-hashes"))
        .build();
    let mut database = Database::new("app", &db).require_tables(["tasks"]);
    database.incremental = true;
    database = database.host(backup_core::source::this_host());
    let change = |i: usize| {
        app.execute(
            "UPDATE tasks SET title = ?1 WHERE id = ?2",
            rusqlite::params![format!("r{i}"), 1 + (i as i64 * 7919) % rows],
        )
        .unwrap();
    };
    let started = Instant::now();
    let mut at_10 = None;
    for i in 0..runs {
        change(i);
        backups.backup(&database).unwrap();
        if i + 1 == 10 {
            at_10 = Some((
                cli(&p, &["list", "--json"], 5),
                cli(&p, &["backup"], 5),
                cli(&p, &["status"], 5),
            ));
        }
        if (i + 1) % 1_000 == 0 {
            eprintln!("{} runs in {:.0?}", i + 1, started.elapsed());
        }
    }
    let (list_10, backup_10, status_10) = at_10.unwrap();
    let list = cli(&p, &["list", "--json"], 5);
    let backup = cli(&p, &["backup"], 5);
    let status = cli(&p, &["status"], 5);
    let listed = p.catalog().len();
    assert!(listed >= runs, "{listed} listed after {runs} runs");
    let checkpoint = std::fs::read_dir(p.backups().join(view::CHECKPOINT_DIR))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".checkpoint"))
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap_or(0);
    println!(
        "\n{runs} runs into a local folder in {:.0?}\n",
        started.elapsed()
    );
    println!("| a fresh process, median of 5 (s) | after 10 runs | after {runs} | ratio |");
    println!("|---|---:|---:|---:|");
    for (what, early, late) in [
        ("`list --json`", list_10, list),
        ("`backup` (one incremental run)", backup_10, backup),
        ("`status`", status_10, status),
    ] {
        println!("| {what} | {early:.3} | {late:.3} | {:.2}× |", late / early);
    }
    println!("\nlisted: {listed}; newest checkpoint: {checkpoint} bytes");
}
