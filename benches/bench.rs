//! The performance benchmark of issue 8, one command:
//!
//! ```text
//! cargo bench --bench bench -- --size 200MB
//! ```
//!
//! It builds the release `sqlite-backup` binary, generates (and caches) a
//! seeded demo WAL database, then times side by side, each as a child process
//! measured the same way (wall clock, peak RSS from `wait4`): the seed's shell
//! pipeline, the zstd shell pipeline, `zstd` alone, the SQLite checks alone,
//! our backups (zstd and gzip), our restore verification and a whole restore.
//! Then incremental mode: a full base, runs after 1% of the rows changed and
//! after no change, and a restore at chain depth 100 against a restore of a
//! full artifact of the same database; beside the plain chain, a sealed one
//! (the same config plus `[encryption]`) backs up the same changes and is
//! restored at the same depth. Then it runs our backup and
//! `sqlite3 .backup` under a writer committing 1,000 transactions per second.
//! It prints markdown tables for the README.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_testkit::demo;

const USAGE: &str = "\
usage: bench [--size 200MB] [--seed 1] [--runs 1] [--dir target/bench]
             [--writer-rate 1000] [--timeout 30] [--skip-seed] [--chain-depth 100]

  --size         database size to generate (e.g. 200MB, 2GB)
  --seed         demo data seed
  --runs         repeat every measurement and report the median
  --dir          work folder (the generated database is cached there)
  --writer-rate  commits per second of the concurrent writer
  --timeout      seconds before `sqlite3 .backup` under the writer is killed
  --skip-seed    skip the slow seed pipeline (sqlite3 .backup | gzip)
  --chain-depth  incremental chain depth of the restore row (0 skips it)";

struct Args {
    size: u64,
    seed: u64,
    runs: usize,
    dir: PathBuf,
    writer_rate: u32,
    timeout: Duration,
    skip_seed: bool,
    chain_depth: u32,
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        _ => return None,
    };
    Some(n * mult)
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        size: 200_000_000,
        seed: 1,
        runs: 1,
        dir: PathBuf::from("target/bench"),
        writer_rate: 1000,
        timeout: Duration::from_secs(30),
        skip_seed: false,
        chain_depth: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--size" => a.size = parse_size(&value()?).ok_or("bad --size")?,
            "--seed" => a.seed = value()?.parse().map_err(|_| "bad --seed")?,
            "--runs" => a.runs = value()?.parse().map_err(|_| "bad --runs")?,
            "--dir" => a.dir = PathBuf::from(value()?),
            "--writer-rate" => a.writer_rate = value()?.parse().map_err(|_| "bad --writer-rate")?,
            "--timeout" => {
                a.timeout = Duration::from_secs(value()?.parse().map_err(|_| "bad --timeout")?)
            }
            "--skip-seed" => a.skip_seed = true,
            "--chain-depth" => a.chain_depth = value()?.parse().map_err(|_| "bad --chain-depth")?,
            // `cargo bench` passes --bench; ignore it.
            "--bench" => {}
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    a.runs = a.runs.max(1);
    Ok(a)
}

/// One child process run: wall time and the peak RSS of the process tree
/// (the kernel reports the largest of the child and its waited-for children).
#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: Duration,
    /// User + system CPU time: steadier than wall time on a busy machine.
    cpu: Duration,
    max_rss_kib: u64,
    /// False when it failed or was killed at the timeout.
    ok: bool,
    timed_out: bool,
}

// The child is reaped by `wait4` below (which also yields its rusage), not by
// `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command, timeout: Option<Duration>) -> Measured {
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut timed_out = false;
    loop {
        let mut status = 0;
        // SAFETY: plain syscall with pointers to locals.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if timed_out { 0 } else { libc::WNOHANG };
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == pid {
            let ok = !timed_out && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            let tv = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            return Measured {
                wall: started.elapsed(),
                cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
                max_rss_kib: usage.ru_maxrss as u64,
                ok,
                timed_out,
            };
        }
        assert!(r == 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if timeout.is_some_and(|t| started.elapsed() > t) {
            // Not reaped yet, so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            timed_out = true;
            continue;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Median by wall time of `runs` measurements (each after `prepare`).
fn median(runs: usize, mut once: impl FnMut() -> Measured) -> Measured {
    median_of((0..runs).map(|_| once()).collect())
}

fn median_of(mut all: Vec<Measured>) -> Measured {
    all.sort_by_key(|m| m.wall);
    all[all.len() / 2]
}

/// [`median`] of runs that also store bytes: the median run by wall time and
/// the median of the bytes stored.
fn median_stored(runs: usize, mut once: impl FnMut() -> (Measured, u64)) -> (Measured, u64) {
    median_stored_of((0..runs).map(|_| once()).collect())
}

fn median_stored_of(all: Vec<(Measured, u64)>) -> (Measured, u64) {
    let (all, mut bytes): (Vec<Measured>, Vec<u64>) = all.into_iter().unzip();
    bytes.sort_unstable();
    (median_of(all), bytes[bytes.len() / 2])
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// A path as the config file spells it (a TOML basic string).
fn q_toml(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn remove(p: &Path) {
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// The largest file under `dir` whose name ends with `suffix`.
fn artifact_size(dir: &Path, suffix: &str) -> Option<u64> {
    let mut best = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                let n = e.metadata().ok()?.len();
                best = Some(best.map_or(n, |b: u64| b.max(n)));
            }
        }
    }
    best
}

fn build_cli() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("target dir");
    // Under `cargo run`/`cargo bench`, make sure the CLI is built with the
    // same profile; otherwise expect it beside us.
    if let Ok(cargo) = std::env::var("CARGO") {
        let release =
            dir.ends_with("release") || dir.parent().is_some_and(|p| p.ends_with("release"));
        let mut c = Command::new(cargo);
        c.args(["build", "--quiet", "-p", "backup-cli"]);
        if release {
            c.arg("--release");
        }
        let ok = c.status().is_ok_and(|s| s.success());
        assert!(ok, "building the sqlite-backup binary failed");
    }
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("sqlite-backup");
        if p.exists() {
            return p;
        }
    }
    panic!("sqlite-backup binary not found beside {}", exe.display());
}

/// Generate the seeded database once per size and seed; later runs reuse it.
///
/// It is generated in a child process: peak RSS is inherited across
/// fork + exec, so this process must stay small for the children's peak RSS
/// to mean anything.
fn demo_database(dir: &Path, size: u64, seed: u64) -> PathBuf {
    let cached = dir.join(format!("demo-{size}-{seed}.db"));
    let done = dir.join(format!("demo-{size}-{seed}.done"));
    if !done.exists() {
        remove(&cached);
        eprintln!(
            "generating a {} MB demo database (cached for next time)…",
            size / 1_000_000
        );
        let t = Instant::now();
        let ok = Command::new(std::env::current_exe().expect("own path"))
            .arg("--generate")
            .arg(&cached)
            .arg(size.to_string())
            .arg(seed.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "generating the demo database failed");
        std::fs::write(&done, b"").expect("marker");
        eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());
    }
    cached
}

fn config(work: &Path, db: &Path, format: &str, method: &str, root: &Path) -> PathBuf {
    let path = work.join(format!("bench-{format}-{method}.toml"));
    let text = format!(
        "state_dir = {state:?}\n\
         [[database]]\nlabel = \"bench\"\npath = {db:?}\n\
         required_tables = [\"tasks\", \"thought_records\", \"merkle_nodes\"]\n\
         [compression]\nformat = {format:?}\n\
         [local]\nroot = {root:?}\n\
         [verify]\nlevel = \"quick_check\"\n\
         [snapshot]\nmethod = {method:?}\n",
        state = work.join(format!("state-{format}")).display().to_string(),
        db = db.display().to_string(),
        root = root.display().to_string(),
    );
    std::fs::write(&path, text).expect("writing config");
    path
}

struct Row {
    name: String,
    m: Measured,
    output: Option<u64>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--generate") {
        let [path, size, seed] = [2, 3, 4].map(|i| argv.get(i).expect("--generate PATH SIZE SEED"));
        demo::create(
            Path::new(path),
            size.parse().expect("size"),
            seed.parse().expect("seed"),
        )
        .expect("generating the demo database");
        return;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    for tool in ["sqlite3", "zstd", "gzip", "sha256sum"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .map_or(true, |s| !s.success())
        {
            eprintln!("bench needs `{tool}` on PATH for the reference pipelines");
            std::process::exit(2);
        }
    }
    let cli = build_cli();
    std::fs::create_dir_all(&args.dir).expect("bench dir");
    let dir = std::fs::canonicalize(&args.dir).expect("bench dir");
    let cached = demo_database(&dir, args.size, args.seed);
    let work = dir.join("run");
    remove(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    // A private copy: the writer phase changes it. The cached file is
    // checkpointed and closed, so a plain copy is a consistent database.
    let db = work.join("app.db");
    std::fs::copy(&cached, &db).expect("copying the demo database");
    let db_bytes = std::fs::metadata(&db).expect("db").len();
    // Warm the page cache, as the issue's measurements did (in small reads:
    // this process must stay small, see `demo_database`).
    warm(&db);

    let runs = args.runs;
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |name: &str, m: Measured, output: Option<u64>| {
        eprintln!(
            "  {name}: {:.2} s ({:.2} s CPU), {:.1} MiB RSS{}",
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            mib(m.max_rss_kib),
            if m.ok { "" } else { " (FAILED)" }
        );
        rows.push(Row {
            name: name.to_string(),
            m,
            output,
        });
    };
    let out = work.join("out");
    let fresh = |p: &Path| {
        remove(p);
        std::fs::create_dir_all(p).expect("out dir");
    };
    eprintln!("measuring ({runs} run(s) each, median) on {}", db.display());

    let seed_name = "seed: `sqlite3 .backup` → `gzip` → `sha256sum`";
    if !args.skip_seed {
        let m = median(runs, || {
            fresh(&out);
            measure(
                &mut sh(&format!(
                    "sqlite3 {db} \".backup {o}/x.db\" && gzip -6 {o}/x.db && sha256sum {o}/x.db.gz > {o}/x.db.gz.sha256",
                    db = q(&db),
                    o = out.display()
                )),
                None,
            )
        });
        add(seed_name, m, artifact_size(&out, ".gz"));
    }
    let m = median(runs, || {
        fresh(&out);
        measure(
            &mut sh(&format!(
                "sqlite3 {db} \".backup {o}/x.db\" && zstd -q -3 -T0 --rm {o}/x.db && sha256sum {o}/x.db.zst > {o}/x.db.zst.sha256",
                db = q(&db),
                o = out.display()
            )),
            None,
        )
    });
    add(
        "`sqlite3 .backup` → `zstd -3 -T0` → `sha256sum`",
        m,
        artifact_size(&out, ".zst"),
    );
    let m = median(runs, || {
        fresh(&out);
        measure(
            &mut sh(&format!(
                "zstd -q -3 -T0 {} -o {}/alone.zst",
                q(&db),
                out.display()
            )),
            None,
        )
    });
    let zstd_alone_out = artifact_size(&out, ".zst");
    add("`zstd -3 -T0` alone on the file", m, zstd_alone_out);
    for pragma in ["integrity_check", "quick_check"] {
        let m = median(runs, || {
            measure(
                Command::new("sqlite3")
                    .arg(&db)
                    .arg(format!("PRAGMA {pragma}")),
                None,
            )
        });
        add(&format!("`PRAGMA {pragma}` alone"), m, None);
    }

    let ours = |format: &str, method: &str, ext: &str| {
        let root = work.join(format!("backups-{format}-{method}"));
        let cfg = config(&work, &db, format, method, &root);
        let m = median(runs, || {
            remove(&root);
            measure(
                Command::new(&cli)
                    .arg("--config")
                    .arg(&cfg)
                    .args(["--quiet", "backup"]),
                None,
            )
        });
        (m, artifact_size(&root, ext), cfg)
    };
    let (m, size, zstd_cfg) = ours("zstd", "backup", ".zst");
    add(
        "ours: backup, zstd (+ sidecar, quick_check, manifest)",
        m,
        size,
    );
    // The same zstd backup, encrypted to an age recipient (made by the real
    // age-keygen): the cost of encryption at rest.
    let key = work.join("bench-age-key.txt");
    remove(&key);
    let public = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age-keygen -o {} 2>/dev/null && age-keygen -y {}",
            q(&key),
            q(&key)
        ))
        .output()
        .expect("age-keygen (Debian package `age`)");
    assert!(
        public.status.success(),
        "age-keygen failed: install Debian's `age`"
    );
    let public = String::from_utf8_lossy(&public.stdout).trim().to_string();
    let enc_root = work.join("backups-zstd-age");
    let enc_cfg = work.join("bench-zstd-age.toml");
    std::fs::write(
        &enc_cfg,
        std::fs::read_to_string(&zstd_cfg)
            .expect("zstd config")
            .replace(
                &q_toml(&work.join("backups-zstd-backup")),
                &q_toml(&enc_root),
            )
            + &format!("[encryption]\nrecipients = [{public:?}]\n"),
    )
    .expect("writing the encrypted config");
    let m = median(runs, || {
        remove(&enc_root);
        measure(
            Command::new(&cli)
                .arg("--config")
                .arg(&enc_cfg)
                .args(["--quiet", "backup"]),
            None,
        )
    });
    add(
        "ours: backup, zstd + age encryption",
        m,
        artifact_size(&enc_root, ".age"),
    );
    let (m, size, _) = ours("gzip", "backup", ".gz");
    add(
        "ours: backup, gzip (+ sidecar, quick_check, manifest)",
        m,
        size,
    );
    let (m, size, _) = ours("zstd", "backup_api", ".zst");
    add(
        "ours, fallback path: zstd via backup API + scratch file",
        m,
        size,
    );

    // Restore side: the reference is `zstd -d` of our artifact plus
    // integrity_check; ours is the CLI's full verification of the latest
    // backup (sidecar + manifest digests, decompress, fsync, integrity_check,
    // foreign_key_check, required tables), which is what a restore does
    // before its final rename.
    let artifact = find_file(&work.join("backups-zstd-backup"), ".zst").expect("our zstd artifact");
    let m = median(runs, || {
        fresh(&out);
        measure(
            &mut sh(&format!(
                "zstd -q -d -T0 {} -o {}/back.db",
                q(&artifact),
                out.display()
            )),
            None,
        )
    });
    add("`zstd -d` alone (our artifact)", m, Some(db_bytes));
    let m = median(runs, || {
        measure(
            Command::new(&cli)
                .arg("--config")
                .arg(&zstd_cfg)
                .args(["--quiet", "verify", "--latest", "bench"])
                .env("TMPDIR", &work),
            None,
        )
    });
    add(
        "ours: restore verification (digests, decompress, integrity_check)",
        m,
        Some(db_bytes),
    );
    let m = median(runs, || {
        fresh(&out);
        measure(
            Command::new(&cli)
                .arg("--config")
                .arg(&zstd_cfg)
                .args(["--quiet", "restore", "bench", "--to"])
                .arg(out.join("restored.db")),
            None,
        )
    });
    add(
        "ours: restore --to (verification, place, integrity_check again)",
        m,
        Some(db_bytes),
    );

    // Incremental mode on the same database: a full base, runs after
    // changes, and a restore at depth `--chain-depth` of the chain.
    let incr_root = work.join("backups-incremental");
    let incr_cfg = work.join("bench-incremental.toml");
    std::fs::write(
        &incr_cfg,
        std::fs::read_to_string(&zstd_cfg)
            .expect("zstd config")
            .replace(
                &q_toml(&work.join("backups-zstd-backup")),
                &q_toml(&incr_root),
            )
            // [snapshot] is the config's last table.
            + "incremental = true\n",
    )
    .expect("writing the incremental config");
    let backup = |cfg: &Path| {
        measure(
            Command::new(&cli)
                .arg("--config")
                .arg(cfg)
                .args(["--quiet", "backup"]),
            None,
        )
    };
    let (m, stored) = median_stored(runs, || {
        remove(&incr_root);
        let m = backup(&incr_cfg);
        (m, newest(&cli, &incr_cfg).stored)
    });
    add(INCR_BASE, m, Some(stored));
    // The same chain sealed to the age key above. Its own state folder, so
    // that neither chain reads the other's page-hash cache or WAL hint.
    let sealed_root = work.join("backups-incremental-age");
    let sealed_cfg = work.join("bench-incremental-age.toml");
    std::fs::write(
        &sealed_cfg,
        std::fs::read_to_string(&incr_cfg)
            .expect("incremental config")
            .replace(&q_toml(&incr_root), &q_toml(&sealed_root))
            .replace(
                &q_toml(&work.join("state-zstd")),
                &q_toml(&work.join("state-sealed")),
            )
            + &format!("[encryption]\nrecipients = [{public:?}]\n"),
    )
    .expect("writing the sealed incremental config");
    let (m, stored) = median_stored(runs, || {
        remove(&sealed_root);
        let m = backup(&sealed_cfg);
        (m, newest(&cli, &sealed_cfg).stored)
    });
    add(SEALED_BASE, m, Some(stored));
    let stored_run = |cfg: &Path| (backup(cfg), newest(&cli, cfg).stored);
    let mut rng = demo::Rng::new(args.seed);
    for (name, sealed_name, tables) in [
        (INCR_ALL, SEALED_ALL, &demo::TABLES[..]),
        (INCR_TASKS, SEALED_TASKS, &demo::TABLES[..1]),
    ] {
        // Both chains back up each changed database, so they see the same
        // change.
        let (plain, sealed): (Vec<_>, Vec<_>) = (0..runs)
            .map(|_| {
                update_random_rows(&db, &mut rng, tables, 0.01);
                (stored_run(&incr_cfg), stored_run(&sealed_cfg))
            })
            .unzip();
        let (m, stored) = median_stored_of(plain);
        add(name, m, Some(stored));
        let (m, stored) = median_stored_of(sealed);
        add(sealed_name, m, Some(stored));
    }
    let (m, stored) = median_stored(runs, || {
        let m = backup(&incr_cfg);
        (m, newest(&cli, &incr_cfg).stored)
    });
    add(INCR_SAME, m, Some(stored));
    // The same with the application's connection kept open, as a service
    // keeps its own: the WAL survives between runs, and a run reads only
    // the pages its frames name (the first run below reads every page and
    // records where the WAL stood).
    let app = rusqlite::Connection::open(&db).expect("opening the bench database");
    app.execute_batch("PRAGMA wal_autocheckpoint = 0; UPDATE tasks SET id = id WHERE id = 1;")
        .expect("a write through the open connection");
    assert!(backup(&incr_cfg).ok, "incremental backup failed");
    let (m, stored) = median_stored(runs, || {
        let m = backup(&incr_cfg);
        (m, newest(&cli, &incr_cfg).stored)
    });
    add(INCR_HINT, m, Some(stored));
    drop(app);

    let mut notes = Vec::new();
    if args.chain_depth > 0 {
        // Chains of their own, plain and sealed side by side: a base, then
        // only small changes.
        let started = Instant::now();
        let chains = [(&incr_cfg, &incr_root), (&sealed_cfg, &sealed_root)];
        let mut snaps = chains.map(|(cfg, root)| {
            remove(root);
            assert!(backup(cfg).ok, "incremental base failed: {}", cfg.display());
            newest(&cli, cfg)
        });
        let mut built = 0;
        while snaps[0].depth < u64::from(args.chain_depth) {
            update_random_rows(&db, &mut rng, &demo::TABLES, CHAIN_CHANGE);
            for ((cfg, _), snap) in chains.iter().zip(&mut snaps) {
                assert!(
                    backup(cfg).ok,
                    "incremental backup failed: {}",
                    cfg.display()
                );
                let next = newest(&cli, cfg);
                assert_eq!(next.depth, snap.depth + 1, "{} restarted", cfg.display());
                *snap = next;
            }
            built += 1;
        }
        let [snap, sealed_snap] = snaps;
        let took = started.elapsed().as_secs_f64();
        notes.push(format!(
            "Chains for the depth-{} restores (plain and sealed, side by side): a full base, \
             then {built} incremental runs, each after {}% of the rows of every table were \
             updated at random; built in {took:.0} s ({:.2} s per change + both runs).",
            args.chain_depth,
            CHAIN_CHANGE * 100.0,
            took / f64::from(built + 1),
        ));
        // A classic full artifact of exactly the same database.
        let full_root = work.join("backups-zstd-backup");
        remove(&full_root);
        assert!(backup(&zstd_cfg).ok, "full backup failed");
        let restore = |cfg: &Path, id: Option<&str>, identity: Option<&Path>| {
            fresh(&out);
            let mut c = Command::new(&cli);
            c.arg("--config").arg(cfg);
            if let Some(key) = identity {
                c.arg("--identity").arg(key);
            }
            c.args(["--quiet", "restore", "bench"]);
            if let Some(id) = id {
                c.args(["--id", id]);
            }
            measure(c.arg("--to").arg(out.join("restored.db")), None)
        };
        // Alternated, so all three see the same machine load.
        let (mut chain, mut sealed, mut full) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            chain.push(restore(&incr_cfg, Some(&snap.id), None));
            sealed.push(restore(&sealed_cfg, Some(&sealed_snap.id), Some(&key)));
            full.push(restore(&zstd_cfg, None, None));
        }
        add(
            &format!("{INCR_RESTORE} {}", args.chain_depth),
            median_of(chain),
            Some(db_bytes),
        );
        add(
            &format!("{SEALED_RESTORE} {}", args.chain_depth),
            median_of(sealed),
            Some(db_bytes),
        );
        add(FULL_RESTORE, median_of(full), Some(db_bytes));
    }

    let floor = own_peak_rss_kib();
    // Under a writer.
    eprintln!("with a writer at {} commits/s…", args.writer_rate);
    let idle = writer_alone(&db, args.writer_rate);
    remove(&work.join("backups-zstd-backup"));
    let (m_busy, lat) = under_writer(&db, args.writer_rate, || {
        measure(
            Command::new(&cli)
                .arg("--config")
                .arg(&zstd_cfg)
                .args(["--quiet", "backup"]),
            None,
        )
    });
    let (m_sqlite, lat_sqlite) = under_writer(&db, args.writer_rate, || {
        fresh(&out);
        measure(
            Command::new("sqlite3")
                .arg(&db)
                .arg(format!(".backup {}/busy.db", out.display())),
            Some(args.timeout),
        )
    });

    print_report(
        &args,
        db_bytes,
        &rows,
        idle,
        (m_busy, lat),
        (m_sqlite, lat_sqlite),
        &notes,
    );
    println!(
        "Wall and CPU time (user + system) and peak RSS are the kernel's figures for each \
         child process tree (`wait4`). Peak RSS includes at least the benchmark's own \
         {:.1} MiB, inherited at spawn.",
        mib(floor)
    );
}

const INCR_BASE: &str = "ours, incremental: full base (zstd packs + page index)";
const INCR_ALL: &str = "ours, incremental: after 1% of the rows of every table changed";
const INCR_TASKS: &str = "ours, incremental: after 1% of `tasks` rows changed";
const INCR_SAME: &str = "ours, incremental: nothing changed";
const INCR_HINT: &str =
    "ours, incremental: nothing changed, application connection open (WAL names the pages)";
const INCR_RESTORE: &str = "ours, incremental: restore --id at chain depth";
const FULL_RESTORE: &str = "ours: restore --to of a full artifact of that same database";
/// The sealed chain's rows: names that do not start with the plain ones',
/// which `find` matches by prefix.
const SEALED_BASE: &str = "ours, incremental sealed (age): full base";
const SEALED_ALL: &str =
    "ours, incremental sealed (age): after 1% of the rows of every table changed";
const SEALED_TASKS: &str = "ours, incremental sealed (age): after 1% of `tasks` rows changed";
const SEALED_RESTORE: &str =
    "ours, incremental sealed (age): restore --id --identity at chain depth";
/// Fraction of the rows changed between the runs that build the chain for
/// the depth restore: small, as between minutely runs.
const CHAIN_CHANGE: f64 = 0.0002;

/// The newest snapshot in a config's catalog.
struct Snap {
    id: String,
    stored: u64,
    depth: u64,
}

fn newest(cli: &Path, cfg: &Path) -> Snap {
    let out = Command::new(cli)
        .arg("--config")
        .arg(cfg)
        .args(["list", "--json"])
        .output()
        .expect("running list");
    assert!(
        out.status.success(),
        "list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("list --json");
    // Run ids sort by time.
    let row = rows
        .iter()
        .max_by_key(|r| r["id"].as_str().unwrap_or_default().to_string())
        .expect("a snapshot in the catalog");
    Snap {
        id: row["id"].as_str().expect("id").to_string(),
        stored: row["stored_bytes"].as_u64().expect("stored_bytes"),
        depth: row["chain_depth"].as_u64().expect("chain_depth"),
    }
}

/// Update `fraction` of the rows of each of `tables`, picked at random
/// (seeded), in one transaction by the real `sqlite3` (a child process keeps
/// this one small, see `demo_database`). Rows are updated in place and keep
/// about their size, as most application updates do: pages change but
/// rarely split.
fn update_random_rows(db: &Path, rng: &mut demo::Rng, tables: &[&str], fraction: f64) {
    let query = tables
        .iter()
        .map(|t| format!("(SELECT coalesce(max(id), 0) FROM {t})"))
        .collect::<Vec<_>>()
        .join(", ");
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(format!("SELECT {query};"))
        .output()
        .expect("sqlite3");
    assert!(out.status.success(), "sqlite3 failed");
    let maxima: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split('|')
        .map(|v| v.parse().expect("max id"))
        .collect();
    let mut sql = String::from("BEGIN;\n");
    for (table, max) in tables.iter().zip(maxima) {
        let n = ((max as f64 * fraction).round() as u64).clamp(1, max.max(1));
        let mut ids = std::collections::BTreeSet::new();
        while (ids.len() as u64) < n {
            ids.insert(1 + rng.below(max));
        }
        let set = match *table {
            "tasks" => {
                "status = CASE status WHEN 'done' THEN 'running' ELSE 'done' END, \
                 priority = (priority + 1) % 5"
            }
            "thought_records" => "body = substr(body, 2) || substr(body, 1, 1)",
            "merkle_nodes" => "level = (level + 1) % 20",
            other => panic!("no update for table {other}"),
        };
        let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
        let _ = writeln!(
            sql,
            "UPDATE {table} SET {set} WHERE id IN ({});",
            ids.join(",")
        );
    }
    sql.push_str("COMMIT;\n");
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sqlite3");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("writing to sqlite3");
    assert!(
        child.wait().is_ok_and(|s| s.success()),
        "sqlite3 update failed"
    );
}

fn warm(path: &Path) {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("db");
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf).is_ok_and(|n| n > 0) {}
}

/// This process's own peak RSS (`VmHWM`, which unlike `getrusage` does not
/// include what `cargo run` used before exec): a floor under every child's
/// figure, since a child starts as a copy of this process.
fn own_peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn find_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
}

/// Writer latency: p50, p99, max, commits.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    commits: usize,
    errors: usize,
}

fn latency(stats: &demo::WriterStats, from: jiff::Timestamp, to: jiff::Timestamp) -> Latency {
    let window = demo::WriterStats {
        latencies: stats
            .commits
            .iter()
            .zip(&stats.latencies)
            .filter(|((_, at), _)| *at >= from && *at <= to)
            .map(|(_, l)| *l)
            .collect(),
        ..Default::default()
    };
    Latency {
        p50: window.percentile(0.5),
        p99: window.percentile(0.99),
        max: window.percentile(1.0),
        commits: window.latencies.len(),
        errors: stats.errors.len(),
    }
}

fn writer_alone(db: &Path, rate: u32) -> Latency {
    let w = demo::Writer::start(db, rate).expect("writer");
    let from = jiff::Timestamp::now();
    std::thread::sleep(Duration::from_secs(2));
    let to = jiff::Timestamp::now();
    latency(&w.stop(), from, to)
}

fn under_writer(db: &Path, rate: u32, run: impl FnOnce() -> Measured) -> (Measured, Latency) {
    let w = demo::Writer::start(db, rate).expect("writer");
    std::thread::sleep(Duration::from_millis(500));
    let from = jiff::Timestamp::now();
    let m = run();
    let to = jiff::Timestamp::now();
    std::thread::sleep(Duration::from_millis(200));
    (m, latency(&w.stop(), from, to))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn print_report(
    args: &Args,
    db_bytes: u64,
    rows: &[Row],
    idle: Latency,
    busy: (Measured, Latency),
    sqlite: (Measured, Latency),
    notes: &[String],
) {
    let mut s = String::new();
    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix))
            .map(|r| r.m)
    };
    let _ = writeln!(
        s,
        "\n### {:.0} MB database (seed {}, {} run(s), median), {} cores\n",
        db_bytes as f64 / 1e6,
        args.seed,
        args.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let _ = writeln!(
        s,
        "| step | wall (s) | CPU (s) | MB/s | output (MB) | peak RSS (MiB) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {}{} | {:.2} | {:.2} | {:.0} | {} | {:.1} |",
            r.name,
            if r.m.ok { "" } else { " **(failed)**" },
            r.m.wall.as_secs_f64(),
            r.m.cpu.as_secs_f64(),
            db_bytes as f64 / 1e6 / r.m.wall.as_secs_f64(),
            r.output.map_or("–".into(), |n| if n < 100_000 {
                // What a run with no change stores would read 0.0.
                format!("{n} bytes")
            } else {
                format!("{:.1}", n as f64 / 1e6)
            }),
            mib(r.m.max_rss_kib),
        );
    }

    let _ = writeln!(s, "\n| target | measured | goal | met |");
    let _ = writeln!(s, "|---|---:|---|---|");
    let mut target =
        |name: &str, value: Option<f64>, goal: &str, met: fn(f64) -> bool, unit: &str| {
            let (v, ok) = match value {
                Some(v) => (
                    format!("{v:.2}{unit}"),
                    if met(v) { "yes" } else { "**no**" },
                ),
                None => ("–".into(), "–"),
            };
            let _ = writeln!(s, "| {name} | {v} | {goal} | {ok} |");
        };
    let secs = |m: Option<Measured>| m.map(|m| m.wall.as_secs_f64());
    let ours_zstd = secs(find("ours: backup, zstd"));
    let ours_gzip = secs(find("ours: backup, gzip"));
    let seed = secs(find("seed:"));
    let zstd_alone = secs(find("`zstd -3 -T0` alone"));
    let zstd_pipe = secs(find("`sqlite3 .backup` → `zstd"));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    target(
        "zstd backup ÷ `zstd -3 -T0` alone",
        ratio(ours_zstd, zstd_alone),
        "≤ 1.1×",
        |v| v <= 1.1,
        "×",
    );
    let cpu = |m: Option<Measured>| m.map(|m| m.cpu.as_secs_f64());
    target(
        "(CPU time: zstd backup ÷ `zstd -3 -T0` alone)",
        ratio(
            cpu(find("ours: backup, zstd")),
            cpu(find("`zstd -3 -T0` alone")),
        ),
        "(context)",
        |_| true,
        "×",
    );
    target(
        "zstd shell pipeline ÷ zstd backup",
        ratio(zstd_pipe, ours_zstd),
        "(context)",
        |_| true,
        "×",
    );
    target(
        "encrypted ÷ plain zstd backup",
        ratio(secs(find("ours: backup, zstd + age")), ours_zstd),
        "≤ 1.1×",
        |v| v <= 1.1,
        "×",
    );
    target(
        "seed pipeline ÷ zstd backup",
        ratio(seed, ours_zstd),
        "≥ 8×",
        |v| v >= 8.0,
        "×",
    );
    target(
        "seed pipeline ÷ gzip backup",
        ratio(seed, ours_gzip),
        "≥ 2×",
        |v| v >= 2.0,
        "×",
    );
    let peak = rows
        .iter()
        .filter(|r| r.name.starts_with("ours"))
        .map(|r| mib(r.m.max_rss_kib))
        .fold(0.0, f64::max);
    target("our peak RSS (MiB)", Some(peak), "≤ 64", |v| v <= 64.0, "");
    let reference = secs(find("`zstd -d` alone"))
        .zip(secs(find("`PRAGMA integrity_check`")))
        .map(|(a, b)| a + b);
    for (name, row) in [
        (
            "restore verification ÷ (`zstd -d` + integrity_check)",
            "ours: restore verification",
        ),
        (
            "whole restore ÷ (`zstd -d` + integrity_check)",
            "ours: restore --to",
        ),
    ] {
        let measured = ratio(secs(find(row)), reference);
        target(name, measured, "≤ 2×", |v| v <= 2.0, "×");
    }
    let output = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix))
            .and_then(|r| r.output)
            .map(|n| n as f64)
    };
    let full_bytes = output("ours: backup, zstd");
    let percent = |a: Option<f64>, b: Option<f64>| ratio(a, b).map(|v| v * 100.0);
    target(
        "incremental full base ÷ zstd backup: wall",
        ratio(secs(find(INCR_BASE)), ours_zstd),
        "(context)",
        |_| true,
        "×",
    );
    target(
        "incremental full base ÷ zstd backup: stored bytes",
        percent(output(INCR_BASE), full_bytes),
        "(context)",
        |_| true,
        " %",
    );
    // Both readings of "1% of the rows": of every table, and of the narrow
    // `tasks` rows only (fewer pages per changed row).
    for (row, what) in [(INCR_ALL, "every table"), (INCR_TASKS, "`tasks`")] {
        target(
            &format!("1% of the rows of {what} changed: stored bytes ÷ zstd backup's"),
            percent(output(row), full_bytes),
            "≤ 5 %",
            |v| v <= 5.0,
            " %",
        );
        target(
            &format!("1% of the rows of {what} changed: wall ÷ zstd backup"),
            ratio(secs(find(row)), ours_zstd),
            "≤ 0.5×",
            |v| v <= 0.5,
            "×",
        );
    }
    // The issue's bound on sealing: each pair backed up the same change.
    target(
        "sealed ÷ plain incremental full base: wall",
        ratio(secs(find(SEALED_BASE)), secs(find(INCR_BASE))),
        "(context)",
        |_| true,
        "×",
    );
    for (plain, sealed, what) in [
        (INCR_ALL, SEALED_ALL, "every table"),
        (INCR_TASKS, SEALED_TASKS, "`tasks`"),
    ] {
        target(
            &format!("sealed ÷ plain incremental run after 1% changed ({what}): wall"),
            ratio(secs(find(sealed)), secs(find(plain))),
            "≤ 1.15×",
            |v| v <= 1.15,
            "×",
        );
        target(
            &format!("sealed ÷ plain incremental run after 1% changed ({what}): stored bytes"),
            ratio(output(sealed), output(plain)),
            "≤ 1.15×",
            |v| v <= 1.15,
            "×",
        );
    }
    target(
        "nothing changed: wall ÷ zstd backup",
        ratio(secs(find(INCR_SAME)), ours_zstd),
        "(context)",
        |_| true,
        "×",
    );
    let cpu = |m: Option<Measured>| m.map(|m| m.cpu.as_secs_f64());
    target(
        "nothing changed, WAL names the pages: CPU ÷ zstd backup's",
        ratio(cpu(find(INCR_HINT)), cpu(find("ours: backup, zstd"))),
        "≤ 0.05×",
        |v| v <= 0.05,
        "×",
    );
    target(
        &format!(
            "restore at chain depth {} ÷ restore of a full artifact",
            args.chain_depth
        ),
        ratio(secs(find(INCR_RESTORE)), secs(find(FULL_RESTORE))),
        "≤ 1.3×",
        |v| v <= 1.3,
        "×",
    );
    target(
        "sealed ÷ plain restore at the same chain depth",
        ratio(secs(find(SEALED_RESTORE)), secs(find(INCR_RESTORE))),
        "(context)",
        |_| true,
        "×",
    );
    target(
        "writer p99 during our backup (ms)",
        busy.0.ok.then_some(busy.1.p99.as_secs_f64() * 1000.0),
        "< 5 ms",
        |v| v < 5.0,
        "",
    );

    let _ = writeln!(
        s,
        "\n| with a writer at {} commits/s | result | wall (s) | writer commits | p50 (ms) | p99 (ms) | max (ms) |",
        args.writer_rate
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| writer alone (2 s) | – | – | {} | {} | {} | {} |",
        idle.commits,
        ms(idle.p50),
        ms(idle.p99),
        ms(idle.max)
    );
    let verdict = |m: &Measured| {
        if m.timed_out {
            format!(
                "**killed: not finished after {} s**",
                args.timeout.as_secs()
            )
        } else if m.ok {
            "finished".to_string()
        } else {
            "**failed**".to_string()
        }
    };
    for (name, (m, l)) in [
        ("ours: backup, zstd", busy),
        ("`sqlite3 .backup` (the seed)", sqlite),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.2} | {} | {} | {} | {} |",
            verdict(&m),
            m.wall.as_secs_f64(),
            l.commits,
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }
    if busy.1.errors + sqlite.1.errors > 0 {
        let _ = writeln!(s, "\nwriter errors: {}", busy.1.errors + sqlite.1.errors);
    }
    for n in notes {
        let _ = writeln!(s, "\n{n}");
    }
    println!("{s}");
}
