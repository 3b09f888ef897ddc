//! kill -9 of `sqlite-backup restore` at random points, in a seeded loop:
//! the target path must always hold the old database or the new verified
//! one, byte for byte, and pass integrity_check; the kept `.broken-` file is
//! always the complete old database; the next run cleans up the leftovers.
//! Needs the binary built: `cargo build -p backup-cli`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use backup_core::digest::Sha256;
use backup_core::inuse::side_file;
use backup_testkit::demo::Rng;
use backup_testkit::restore_support::{Fixture, add_tasks, integrity};

const RUNS: usize = 24;
const SEED: u64 = 0x5EED_0003;

/// Lines printed at the steps worth interrupting right after.
const MARKERS: [&str; 5] = [
    "verifying",
    "ok: sha256",
    "Kept the live database aside",
    "Placed the verified snapshot",
    "Re-checked the placed file",
];

fn reset(f: &Fixture, old: &[u8]) {
    for p in f.broken_files() {
        std::fs::remove_file(p).unwrap();
    }
    for s in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(side_file(&f.db, s));
    }
    std::fs::write(&f.db, old).unwrap();
}

fn partials(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".partial-"))
        .collect()
}

fn spawn(f: &Fixture, piped: bool) -> Child {
    f.cmd()
        .args(["--quiet", "restore", "app"])
        .stdout(if piped { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_at_random_points_never_leaves_the_target_missing_or_partial() {
    let f = Fixture::new(backup_testkit::testkit::binary(), 6 << 20, "");
    let entry = f.backup("one");
    add_tasks(&f.db, 100);
    assert!(!side_file(&f.db, "-wal").exists());
    let old = std::fs::read(&f.db).unwrap();
    let new_sha = entry.db_sha256.clone();
    let dir = f.db.parent().unwrap().to_path_buf();

    // How long an uninterrupted restore takes.
    let t0 = Instant::now();
    let st = spawn(&f, false).wait().unwrap();
    let full = t0.elapsed();
    assert!(st.success());
    assert_eq!(Sha256::hex_of(&std::fs::read(&f.db).unwrap()), new_sha);
    reset(&f, &old);

    let mut rng = Rng::new(SEED);
    let (mut saw_old, mut saw_new) = (0, 0);
    for run in 0..RUNS {
        let mut child;
        let how;
        if run % 2 == 0 {
            // A uniformly random instant over the whole restore.
            let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * 6 / 5));
            child = spawn(&f, false);
            std::thread::sleep(delay);
            how = format!("after {delay:?}");
        } else {
            // Right after a chosen step was printed, plus up to 2 ms.
            let marker = MARKERS[rng.below(MARKERS.len() as u64) as usize];
            let extra = Duration::from_micros(rng.below(2000));
            child = spawn(&f, true);
            let out = BufReader::new(child.stdout.take().unwrap());
            for line in out.lines() {
                if line.map(|l| l.contains(marker)).unwrap_or(true) {
                    break;
                }
            }
            std::thread::sleep(extra);
            how = format!("{extra:?} after {marker:?}");
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();

        let bytes = std::fs::read(&f.db)
            .unwrap_or_else(|e| panic!("run {run} ({how}): target missing: {e}"));
        let is_old = bytes == old;
        let is_new = Sha256::hex_of(&bytes) == new_sha;
        assert!(
            is_old || is_new,
            "run {run} ({how}, {status}): target holds neither the old nor the new database ({} bytes)",
            bytes.len()
        );
        assert_eq!(integrity(&f.db), ["ok"], "run {run} ({how})");
        if is_new {
            assert!(
                !side_file(&f.db, "-wal").exists(),
                "run {run} ({how}): old -wal beside the new database"
            );
            saw_new += 1;
        } else {
            saw_old += 1;
        }
        for b in f.broken_files() {
            if !b.to_string_lossy().ends_with("-wal") {
                assert_eq!(
                    std::fs::read(&b).unwrap(),
                    old,
                    "run {run} ({how}): kept file is not the old database"
                );
            }
        }
        eprintln!(
            "run {run:2}: killed {how:<40} -> {}",
            if is_new { "new" } else { "old" }
        );
        reset(&f, &old);
    }
    assert!(
        saw_old > 0 && saw_new > 0,
        "kills must land both before and after the placement (old {saw_old}, new {saw_new})"
    );

    // The next restore removes the partial files the killed ones left.
    let st = spawn(&f, false).wait().unwrap();
    assert!(st.success());
    assert_eq!(Sha256::hex_of(&std::fs::read(&f.db).unwrap()), new_sha);
    assert_eq!(partials(&dir), Vec::<PathBuf>::new());
}
