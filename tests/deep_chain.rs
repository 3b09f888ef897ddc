//! Measurement, not a functional test: a chain thousands of runs deep,
//! built by the CLI into a local folder and Azurite (127.0.0.1) while the
//! application keeps its connection open and changes a few rows before each
//! run. Prints the run time after 10 runs and at the end, `list` at the
//! end, the newest snapshot's manifest size and packs, and a restore of the
//! newest snapshot (at the chain's depth) from each sink beside a restore
//! of a full artifact of the same database, and restores of three older
//! snapshots (a quarter, half and three quarters in). With `DEEP_DAEMON`,
//! also the daemon's CPU per run early and late, and the store's own time
//! for a small GET and an empty listing before and after the runs, since
//! a store that slows down as it fills (Azurite does) slows every run.
//! Asserts only that every step succeeds and the restores are exact.
//!
//! ```text
//! cargo build --release -p backup-cli
//! SQLITE_BACKUP_BIN=$PWD/target/release/sqlite-backup DEEP_RUNS=1000 DEEP_MB=50 \
//!   cargo test --release --test deep_chain -- --ignored --nocapture
//! ```
//! `DEEP_RUNS` (default 1,000; runs past `max_chain` = 1440 start new
//! chains, as they would for a user) and `DEEP_MB` (default 50);
//! `DEEP_KEEP=1` keeps the project folder and Azurite to look at;
//! `DEEP_DAEMON=200ms` takes the runs with one `daemon --interval 200ms`
//! (which keeps its catalog views between runs) instead of one process a
//! run, while the application changes a row every 50 ms. With it,
//! `DEEP_PRUNE=1m` has the daemon prune every minute under a policy that
//! keeps every snapshot of the last minute and one a minute for the hour
//! (the steady state a user's catalog reaches), and `DEEP_REMOTE=s3` uses
//! moto (127.0.0.1) instead of Azurite. `DEEP_REMOTE=azure-counted` (with
//! `DEEP_DAEMON`) also counts the daemon's requests by kind from Azurite's
//! own request log, over runs 2-101 and the last 100; that log slows
//! Azurite, so take run times from a run without it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use backup_core::manifest::Listed;
use backup_core::sink::{Sink, get_bytes};
use backup_testkit::process::{KillOnDrop, cpu_seconds};
use backup_testkit::remote::Remote;
use backup_testkit::testkit::{Project, assert_image, require_tool};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const INCREMENTAL: &str = "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n\n[snapshot]\nincremental = true\n";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(f: impl FnOnce() -> String) -> (Duration, String) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

fn restore(remote: &Remote, p: &Project, l: &Listed, from: &str, name: &str) -> Duration {
    let (took, _) = timed(|| {
        remote.run_ok(
            p,
            &[
                "restore", "app", "--from", from, "--id", &l.run_id, "--to", name,
            ],
        )
    });
    assert_image(&l.entry, &std::fs::read(p.join(name)).unwrap(), name);
    took
}

/// Median milliseconds of a small GET and of listing an empty folder from
/// the store itself, without our tool: a store whose own requests slow down
/// as it fills makes every run slower whatever the runs do.
fn store_latency(sink: &dyn Sink) -> (f64, f64) {
    sink.put("probe/small", b"0123456789").unwrap();
    let mut get = Vec::new();
    let mut list = Vec::new();
    for _ in 0..50 {
        get.push(
            timed(|| {
                get_bytes(sink, "probe/small")
                    .map(|_| String::new())
                    .unwrap()
            })
            .0,
        );
        list.push(timed(|| sink.list("probe-empty").map(|_| String::new()).unwrap()).0);
    }
    let ms = |v: Vec<Duration>| median(v).as_secs_f64() * 1e3;
    (ms(get), ms(list))
}

/// Each run's time, and for a daemon its CPU seconds per run over runs
/// 2-101 and over the last 100, and the same for its requests by kind when
/// they are counted.
struct Taken {
    took: Vec<Duration>,
    cpu_per_run: Option<(f64, f64)>,
    requests_per_run: Option<PerKind>,
}

/// Requests per run by kind: runs 2-101, the last 100.
type PerKind = BTreeMap<String, (f64, f64)>;

/// A few rows changed before each run, one CLI process a run.
fn one_shot_runs(remote: &Remote, p: &Project, app: &Connection, rows: i64, runs: usize) -> Taken {
    let mut took = Vec::with_capacity(runs);
    for round in 0..runs as i64 {
        for k in 0..3 {
            app.execute(
                "UPDATE tasks SET title = ?1 WHERE id = ?2",
                rusqlite::params![format!("r{round}"), 1 + (round * 7919 + k * 104_729) % rows],
            )
            .unwrap();
        }
        // Checkpoints as SQLite's own auto-checkpoint would, now and then.
        if round % 500 == 499 {
            app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
        took.push(timed(|| remote.run_ok(p, &["backup"])).0);
        if (round + 1) % 1_000 == 0 {
            eprintln!("{} runs", round + 1);
        }
    }
    Taken {
        took,
        cpu_per_run: None,
        requests_per_run: None,
    }
}

/// `daemon --interval <interval>` while the application changes a few rows
/// every 50 ms: each run's time from its "backup phase start" line to its
/// "backup phase end" line, as they arrive.
fn daemon_runs(
    remote: &Remote,
    p: &Project,
    db: &std::path::Path,
    rows: i64,
    runs: usize,
    interval: &str,
    prune: Option<&str>,
) -> Taken {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), db.to_path_buf());
        std::thread::spawn(move || {
            let app = Connection::open(db).unwrap();
            app.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut round = 0i64;
            while !stop.load(Ordering::SeqCst) {
                app.execute(
                    "UPDATE tasks SET title = ?1 WHERE id = ?2",
                    rusqlite::params![format!("w{round}"), 1 + (round * 7919) % rows],
                )
                .unwrap();
                round += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut args = vec!["daemon", "--interval", interval];
    if let Some(every) = prune {
        args.extend(["--prune-every", every]);
    }
    let mut daemon = KillOnDrop(
        remote
            .command(p, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the daemon"),
    );
    let mut took = Vec::with_capacity(runs);
    let mut begun = None;
    let mut log = Vec::new();
    // CPU at the ends of runs 1, 101, runs - 100 and runs.
    let marks = [1, 101.min(runs), runs.saturating_sub(100).max(1), runs];
    let mut cpu = Vec::new();
    let counted = match remote {
        Remote::Azure(az) => az.requests().cloned(),
        Remote::S3(_) => None,
    };
    let mut requests = Vec::new();
    for line in BufReader::new(daemon.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        assert!(!line.contains("ERROR"), "{line}\n{}", log.join("\n"));
        if line.contains("backup phase start") {
            begun = Some(Instant::now());
        } else if line.contains("backup phase end") {
            assert!(line.contains("ok=1 failed=0"), "{line}");
            took.push(begun.take().expect("a run that started").elapsed());
            for _ in marks.iter().filter(|&&m| m == took.len()) {
                cpu.push(cpu_seconds(daemon.id()));
                requests.extend(counted.as_ref().map(|c| c.snapshot()));
            }
            if took.len() % 1_000 == 0 {
                eprintln!("{} runs", took.len());
            }
            if took.len() == runs {
                break;
            }
        }
        log.push(line);
        if log.len() > 200 {
            log.drain(..100);
        }
    }
    let pid = daemon.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(daemon.wait().unwrap().success());
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(
        took.len(),
        runs,
        "the daemon stopped early:\n{}",
        log.join("\n")
    );
    let runs_between = |a: usize, b: usize| (marks[b] - marks[a]).max(1) as f64;
    let per_run = |a: usize, b: usize| (cpu[b] - cpu[a]) / runs_between(a, b);
    let requests_per_run = (requests.len() == marks.len()).then(|| {
        let kinds: std::collections::BTreeSet<&String> =
            requests.iter().flat_map(|r| r.keys()).collect();
        let between = |k: &String, a: usize, b: usize| {
            let n = |i: usize| requests[i].get(k).copied().unwrap_or(0) as f64;
            (n(b) - n(a)) / runs_between(a, b)
        };
        kinds
            .into_iter()
            .map(|k| (k.clone(), (between(k, 0, 1), between(k, 2, 3))))
            .collect()
    });
    Taken {
        took,
        cpu_per_run: Some((per_run(0, 1), per_run(2, 3))),
        requests_per_run,
    }
}

#[test]
#[ignore = "measurement, minutes: run with --ignored --nocapture (see the file's header)"]
fn a_chain_thousands_of_runs_deep() {
    require_tool("sqlite3");
    let runs: usize = env_or("DEEP_RUNS", 1_000);
    let mb: u64 = env_or("DEEP_MB", 50);
    let remote = match std::env::var("DEEP_REMOTE").as_deref() {
        Ok("s3") => Remote::s3(),
        Ok("azure-counted") => Remote::azure_counting(),
        _ => Remote::azure(),
    };
    let prune = std::env::var("DEEP_PRUNE").ok();
    let policy = if prune.is_some() {
        "\n[retention]\nhot_days = 0\nwarm_days = 0\nkeep_within = \"1m\"\nkeep_minutely = 60\n"
    } else {
        ""
    };
    let p = Project::new();
    let db = p.demo_db("app.db", mb * 1_000_000);
    let rows: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT max(id) FROM tasks", [], |r| r.get(0))
        .unwrap();
    p.write_config(&format!("{INCREMENTAL}{policy}\n{}", remote.section("")));
    let app = Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();

    let store_before = store_latency(&remote.sink());
    let started = Instant::now();
    let Taken {
        took,
        cpu_per_run,
        requests_per_run,
    } = match std::env::var("DEEP_DAEMON") {
        Ok(interval) => {
            drop(app);
            daemon_runs(&remote, &p, &db, rows, runs, &interval, prune.as_deref())
        }
        Err(_) => one_shot_runs(&remote, &p, &app, rows, runs),
    };
    eprintln!("{runs} runs in {:.0?}", started.elapsed());
    let store_after = store_latency(&remote.sink());
    let (list_took, list) = timed(|| remote.run_ok(&p, &["list", "--json"]));
    let listed: Vec<serde_json::Value> = serde_json::from_str(
        list.lines()
            .skip_while(|l| !l.starts_with('['))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    )
    .unwrap_or_default();

    let mut catalog = p.catalog();
    catalog.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    if prune.is_none() {
        assert_eq!(catalog.len(), runs);
    }
    let newest = catalog.last().unwrap().clone();
    let map = newest.entry.pages.as_ref().unwrap();
    let manifest = std::fs::metadata(
        p.backups()
            .join(backup_core::manifest::MANIFEST_DIR)
            .join(format!("{}.json", newest.run_id)),
    )
    .map(|m| m.len())
    .unwrap_or(0);
    // Snapshots across the history (older chains included) restore
    // exactly, not only the newest.
    let mut older = Vec::new();
    for k in 1..4 {
        let l = &catalog[catalog.len() * k / 4];
        let name = format!("older-{k}.db");
        older.push((l.clone(), restore(&remote, &p, l, "local", &name)));
    }
    let deep_local = restore(&remote, &p, &newest, "local", "deep-local.db");
    let deep_remote = restore(&remote, &p, &newest, remote.name(), "deep-remote.db");

    // A full artifact of the same database, restored the same way.
    p.write_config(&format!(
        "{}\n{}",
        INCREMENTAL.replace("incremental = true", "incremental = false"),
        remote.section("")
    ));
    remote.run_ok(&p, &["backup"]);
    let mut catalog = p.catalog();
    catalog.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    let full = catalog.last().unwrap().clone();
    assert!(full.entry.pages.is_none());
    let full_local = restore(&remote, &p, &full, "local", "full-local.db");
    let full_remote = restore(&remote, &p, &full, remote.name(), "full-remote.db");

    let early = median(took[1..11.min(runs)].to_vec());
    let late = median(took[runs.saturating_sub(10)..].to_vec());
    // A hundred runs each side: ten runs at 200 ms are two seconds, which
    // any other process on the machine can sway.
    let early_100 = median(took[1..101.min(runs)].to_vec());
    let late_100 = median(took[runs.saturating_sub(100)..].to_vec());
    let s = |d: Duration| d.as_secs_f64();
    println!(
        "\n{runs} runs in {:.0} s over a {:.1} MB database; newest at chain depth {}\n",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&db).unwrap().len() as f64 / 1e6,
        map.chain_depth
    );
    println!("| measure | result |\n|---|---:|");
    println!("| run time, median of runs 2-11 (s) | {:.3} |", s(early));
    println!(
        "| run time, median of the last 10 runs (s) | {:.3} |",
        s(late)
    );
    println!("| later ÷ earlier | {:.2}× |", s(late) / s(early));
    println!(
        "| run time, median of runs 2-101 (s) | {:.3} |",
        s(early_100)
    );
    println!(
        "| run time, median of the last 100 runs (s) | {:.3} |",
        s(late_100)
    );
    println!(
        "| later ÷ earlier, 100 runs each | {:.2}× |",
        s(late_100) / s(early_100)
    );
    if let Some((early, late)) = cpu_per_run {
        println!(
            "| daemon CPU per run, runs 2-101 / last 100 (ms) | {:.1} / {:.1} ({:.2}×) |",
            early * 1e3,
            late * 1e3,
            late / early
        );
    }
    if let Some(kinds) = &requests_per_run {
        let (early, late) = kinds
            .values()
            .fold((0.0, 0.0), |(e, l), (a, b)| (e + a, l + b));
        println!("| requests per run, runs 2-101 / last 100 | {early:.2} / {late:.2} |");
        for (kind, (a, b)) in kinds {
            println!("| … `{kind}` | {a:.2} / {b:.2} |");
        }
    }
    println!(
        "| {} alone: small GET, empty listing, before the runs (ms) | {:.2} / {:.2} |",
        remote.name(),
        store_before.0,
        store_before.1
    );
    println!(
        "| {} alone: small GET, empty listing, after them (ms) | {:.2} / {:.2} ({:.1}× / {:.1}×) |",
        remote.name(),
        store_after.0,
        store_after.1,
        store_after.0 / store_before.0,
        store_after.1 / store_before.1
    );
    println!(
        "| `list --json` after {runs} runs (s, {} rows) | {:.3} |",
        listed.len(),
        s(list_took)
    );
    println!("| newest manifest (bytes) | {manifest} |");
    println!("| packs the newest snapshot needs | {} |", map.packs.len());
    for (from, deep, full) in [
        ("local", deep_local, full_local),
        (remote.name(), deep_remote, full_remote),
    ] {
        println!(
            "| restore at depth {} from {from} ÷ full artifact ({:.2} s ÷ {:.2} s) | {:.2}× |",
            map.chain_depth,
            s(deep),
            s(full),
            s(deep) / s(full)
        );
    }
    for (l, took) in &older {
        println!(
            "| restore of run {} (depth {}) from local, exact (s) | {:.2} |",
            l.run_id,
            l.entry.pages.as_ref().map_or(0, |m| m.chain_depth),
            s(*took)
        );
    }
    if std::env::var_os("DEEP_KEEP").is_some() {
        println!("\nkept: {} (Azurite left running)", p.path().display());
        std::mem::forget(p);
        std::mem::forget(remote);
    }
}
