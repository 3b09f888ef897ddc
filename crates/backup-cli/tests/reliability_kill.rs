//! kill -9 of `sqlite-backup backup` at random moments (seeded: the seed is
//! printed; `SQLITE_BACKUP_SEED=N` replays a run). After every kill:
//! - `list` succeeds and shows only complete backups (artifact + sidecar +
//!   manifest entry), in both sinks (local and cold);
//! - every listed artifact verifies (digest, decompression, integrity);
//! - leftovers (`.partial-<pid>` files, scratch in `data/backups/.tmp`) are
//!   removed by the next run, and the next run succeeds.
//!
//! The delays spread over the whole run, so kills land in every phase; the
//! phase reached is read from the log markers the killed process printed.
//!
//! Kills: 36 in the normal suite. Soak run (300 kills):
//! `SQLITE_BACKUP_KILLS=300 cargo test -p backup-cli --test reliability_kill -- --ignored`

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_core::CheckLevel;
use backup_core::manifest;
use backup_core::sink::{Placement, Sink};
use backup_core::verify::{self, Checks};
use backup_local::LocalSink;
use backup_testkit::demo::Rng;
use backup_testkit::faults::{self, all_files, temp_files};
use backup_testkit::testkit::{Project, binary, output_text};

fn sinks(p: &Project) -> Vec<LocalSink> {
    vec![
        LocalSink::new("local", p.backups(), Placement::Local),
        LocalSink::new("cold", p.join("cold"), Placement::Cold),
    ]
}

/// Everything the catalog lists verifies (each artifact once: `seen`
/// remembers those already verified); returns how many backups are listed.
fn check_catalog(p: &Project, seen: &mut BTreeSet<(String, String)>) -> usize {
    let mut n = 0;
    for sink in sinks(p) {
        let (stored, bad) = manifest::read_all(&sink).unwrap();
        assert!(
            bad.is_empty(),
            "a killed run left an unreadable manifest: {bad:?}"
        );
        for l in manifest::listed(&sink, &stored) {
            n += 1;
            if !seen.insert((sink.name().to_string(), l.entry.key.clone())) {
                continue;
            }
            let scratch = p.join(&format!("verify-{}.db", seen.len()));
            let checks = Checks {
                level: CheckLevel::IntegrityCheck,
                required_tables: vec!["tasks".into()],
                queries: vec![],
                ..Default::default()
            };
            let r = verify::verify_entry(&sink, &l.entry, &scratch, &checks).unwrap();
            assert!(
                r.ok(),
                "listed backup {} in {} does not verify: {:?}",
                l.entry.key,
                sink.name(),
                r.all_problems().collect::<Vec<_>>()
            );
            std::fs::remove_file(&scratch).unwrap();
        }
    }
    n
}

/// The furthest phase marker a (killed) run printed.
fn phase(log: &str) -> &'static str {
    if log.contains("backup phase end") {
        "5 finished"
    } else if log.contains("manifest written") {
        "4 manifests"
    } else if log.contains("upload done") {
        "3 sidecars+manifest"
    } else if log.contains("snapshot done") {
        "2 stream+check"
    } else if log.contains("backup phase start") {
        "1 snapshot"
    } else {
        "0 startup"
    }
}

fn kill_runs(kills: u32, default_seed: u64) {
    let seed = faults::seed("kill -9", default_seed);
    let mut rng = Rng::new(seed);
    let p = Project::new();
    p.demo_db("app.db", 3_000_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n\n[local]\ncold = \"cold\"\n\n[verify]\nlevel = \"integrity_check\"\n",
    );
    // How long an uninterrupted run takes, to spread kills over all of it.
    let t0 = Instant::now();
    p.run_ok(&["backup", "--tier", "cold"]);
    let mut full = t0.elapsed();
    eprintln!("an uninterrupted run takes {full:?}");

    let mut phases: BTreeMap<&str, u32> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut completions = 1;
    let mut leftovers_seen = 0;
    let wanted = ["1 snapshot", "2 stream+check", "3 sidecars+manifest"];
    let missing = |phases: &BTreeMap<&str, u32>| wanted.iter().any(|w| !phases.contains_key(w));
    // The planned kills at random moments, then, while a phase was missed
    // (finishing the artifacts takes a few milliseconds), kills aimed at the
    // boundary between the kills that landed before that phase and those
    // that landed after it, give or take 4 ms of spawn jitter.
    let mut landed: Vec<(Duration, &str)> = Vec::new();
    let mut i = 0;
    while i < kills || (kills >= 30 && missing(&phases) && i < 3 * kills) {
        let aim = wanted
            .iter()
            .find(|w| i >= kills && !phases.contains_key(**w))
            .and_then(|w| {
                let before = landed
                    .iter()
                    .filter(|(_, p)| p < w)
                    .map(|(d, _)| *d)
                    .max()?;
                let after = landed
                    .iter()
                    .filter(|(_, p)| p > w)
                    .map(|(d, _)| *d)
                    .min()?;
                Some((before + after) / 2)
            });
        let delay = match aim {
            Some(boundary) => (boundary + Duration::from_micros(rng.below(8_001)))
                .saturating_sub(Duration::from_millis(4)),
            None => Duration::from_micros(rng.below(full.as_micros() as u64 * 11 / 10 + 1)),
        };
        let child = Command::new(binary())
            .args(["--config"])
            .arg(p.config())
            .args(["backup", "--tier", "cold"])
            .current_dir(p.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let mut child = child;
        let _ = child.kill(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        let log = output_text(&out);
        let ph = phase(&log);
        *phases.entry(ph).or_default() += 1;
        landed.push((delay, ph));
        eprintln!("kill {i}: after {delay:?}, phase {ph}");

        // The catalog never shows anything incomplete, and `list` works.
        let listed = check_catalog(&p, &mut seen);
        let out = p.run(&["list", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows.len(), listed, "list disagrees with the catalog");
        if i % 8 == 0 {
            p.run_ok(&["verify", "--latest", "app"]);
        }
        let left = temp_files(&p.backups()).len() + temp_files(&p.join("cold")).len();
        leftovers_seen += left;

        // Now and then (seeded) a run that is not killed: it must succeed and
        // leave no temporary file from any earlier killed run.
        if rng.below(3) == 0 || i + 1 >= kills {
            let t0 = Instant::now();
            let text = p.run_ok(&["backup", "--tier", "cold"]);
            full = t0.elapsed();
            completions += 1;
            for dir in [p.backups(), p.join("cold")] {
                assert_eq!(
                    temp_files(&dir),
                    Vec::<String>::new(),
                    "leftovers not cleaned by the next run in {}:\n{text}",
                    dir.display()
                );
            }
        }
        i += 1;
    }
    let total = check_catalog(&p, &mut seen);
    // Artifacts renamed into place by a run killed before its manifest are
    // complete files that no manifest lists: not backups, not offered.
    let listed_keys: Vec<String> = sinks(&p)
        .iter()
        .flat_map(|s| {
            let (stored, _) = manifest::read_all(s).unwrap();
            manifest::listed(s, &stored)
                .into_iter()
                .flat_map(|l| [l.entry.key, l.entry.sidecar_key])
                .collect::<Vec<_>>()
        })
        .collect();
    let orphans = all_files(&p.backups())
        .into_iter()
        .filter(|f| !f.starts_with("manifests/") && !listed_keys.contains(f))
        .count();
    eprintln!(
        "kill -9: seed={seed} kills={i} by phase {phases:?}; listed backups at the end {total} \
         (from {completions} completed runs + kills after the manifest); temp files seen after kills \
         {leftovers_seen}, all cleaned; unlisted orphan files {orphans}"
    );
    assert!(
        total >= 2 * completions,
        "every completed run is listed in both sinks"
    );
    if kills >= 30 {
        for ph in wanted {
            assert!(
                phases.get(ph).copied().unwrap_or(0) > 0,
                "no kill landed in phase {ph}: {phases:?} (seed {seed})"
            );
        }
    }
}

#[test]
fn kill_9_at_random_moments_never_lists_an_incomplete_backup() {
    kill_runs(36, 20261123);
}

#[test]
#[ignore = "soak run: SQLITE_BACKUP_KILLS=300 cargo test -p backup-cli --test reliability_kill -- --ignored"]
fn kill_9_soak() {
    let kills = std::env::var("SQLITE_BACKUP_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    kill_runs(kills, 1);
}
