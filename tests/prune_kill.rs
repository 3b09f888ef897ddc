//! kill -9 of `sqlite-backup prune` at random moments (seeded: the seed is
//! printed; `SQLITE_BACKUP_SEED=N` replays a run), on a catalog of
//! incremental snapshots whose packs the prune frees (`pack_grace = "0s"`,
//! so the second phase runs in the same process). After every kill:
//! - the catalog reads whole and every listed snapshot verifies with its
//!   packs (`verify --catalog --deep`) and restores to exactly its image;
//! - the next backups and prunes succeed.
//!
//! At the end, after one prune that is not killed, no pack or page index is
//! left that no listed snapshot needs.
//!
//! Kills: 32 in the normal suite; `SQLITE_BACKUP_KILLS=300` for a soak.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backup_core::digest::Sha256;
use backup_core::sink::Placement;
use backup_core::{incremental, manifest};
use backup_local::LocalSink;
use backup_testkit::demo::Rng;
use backup_testkit::faults::{self, all_files};
use backup_testkit::testkit::{Project, binary, output_text, require_tool, sh};

const CONFIG: &str = r#"[[database]]
label = "app"
path = "app.db"
required_tables = ["tasks"]

[snapshot]
incremental = true

[retention]
hot_days = 0
warm_days = 0
keep_last = 1
pack_grace = "0s"
"#;

/// Log lines a kill can wait for, and up to which occurrence.
const EVENTS: [(&str, u64); 4] = [
    ("prune phase start", 1),
    ("pruned label=", 2),
    ("manifest written", 1),
    ("collected sink=", 4),
];

/// The furthest phase marker a (killed) prune printed.
fn phase(log: &str) -> &'static str {
    faults::furthest_phase(log, PHASE_MARKERS)
}

/// The line that starts each phase, from the last phase to the first.
const PHASE_MARKERS: &[(&str, &str)] = &[
    ("prune phase end", "4 finished"),
    ("collected sink=", "3 freeing packs"),
    ("manifest written", "2 recorded"),
    ("prune phase start", "1 recording"),
];

/// Rewrite a block of neighbouring rows: a few pages of their own, so a
/// later change to the same block supersedes this one's pack.
fn change(p: &Project, rng: &mut Rng) {
    let block = rng.below(4) * 2_000 + 1;
    let mark = rng.below(1_000_000);
    sh(
        p.path(),
        &format!(
            "sqlite3 app.db \"UPDATE tasks SET status = 's{mark}' WHERE id BETWEEN {block} AND {}\"",
            block + 400
        ),
    );
}

/// Every listed snapshot verifies with its packs (`verify --catalog --deep`)
/// and reassembles to exactly its image (in process, which is what restore
/// does before it checks and places a file); with `restore`, every one is
/// also restored through the CLI.
fn check(p: &Project, n: u32, restore: bool) -> usize {
    let out = p.run(&["verify", "--catalog", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let sink = LocalSink::new("local", p.backups(), Placement::Local);
    let listed = p.catalog();
    for l in &listed {
        if restore {
            p.assert_restores_exactly(l);
            continue;
        }
        let to = p.join(&format!("reassembled-{n}-{}.db", l.run_id));
        let image = incremental::reassemble_to(&sink, &l.entry, &to, None)
            .unwrap()
            .unwrap_or_else(|e| panic!("snapshot {} cannot be reassembled: {e:?}", l.run_id));
        assert_eq!(image.mismatch(&l.entry), None);
        assert_eq!(Sha256::hex_of(&std::fs::read(&to).unwrap()), image.sha256);
        std::fs::remove_file(&to).unwrap();
    }
    listed.len()
}

/// Packs and page indexes (with sidecars) on disk that no listed snapshot
/// needs.
fn unneeded(p: &Project) -> Vec<String> {
    let sink = LocalSink::new("local", p.backups(), Placement::Local);
    let (stored, bad) = manifest::read_all(&sink).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let needed: BTreeSet<String> = manifest::listed(&sink, &stored)
        .into_iter()
        .flat_map(|l| l.entry.objects())
        .map(|n| n.key)
        .collect();
    all_files(&p.backups())
        .into_iter()
        .filter(|f| !f.starts_with("manifests/") && !needed.contains(f))
        .collect()
}

fn kill_prunes(kills: u32, default_seed: u64) {
    require_tool("sqlite3");
    let seed = faults::seed("prune kill -9", default_seed);
    let mut rng = Rng::new(seed);
    let p = Project::new();
    p.demo_db("app.db", 2_000_000);
    p.write_config(CONFIG);
    p.run_ok(&["backup"]);

    let mut full = Duration::ZERO;
    let mut phases: BTreeMap<&str, u32> = BTreeMap::new();
    let wanted = ["1 recording", "2 recorded", "3 freeing packs"];
    let mut i = 0;
    // After the planned kills, a phase none reached (freeing packs lasts a
    // few milliseconds) is aimed at by killing on the line that starts it;
    // such a kill can still arrive after the run ended, hence the budget.
    let missing = |phases: &BTreeMap<&str, u32>| {
        wanted
            .into_iter()
            .find(|w| kills >= 30 && !phases.contains_key(w))
    };
    while i < kills || (missing(&phases).is_some() && i < 4 * kills) {
        // Something to prune: snapshots whose blocks overlap.
        for _ in 0..2 {
            change(&p, &mut rng);
            p.run_ok(&["backup"]);
        }
        if full.is_zero() {
            // How long an uninterrupted prune takes, to spread the kills.
            let t0 = Instant::now();
            p.run_ok(&["prune"]);
            full = t0.elapsed();
            eprintln!("an uninterrupted prune takes {full:?}");
            continue;
        }
        // Half the kills at a random moment of the whole run; the other
        // half just after a seeded log event, so that the short phases
        // (recording, freeing packs) are hit on any machine.
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(p.config())
            .arg("prune")
            .current_dir(p.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines_tx, lines) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut log = String::new();
        let aimed = missing(&phases).filter(|_| i >= kills).map(|w| {
            let marker = PHASE_MARKERS.iter().find(|(_, ph)| *ph == w).unwrap().0;
            (marker, 1)
        });
        let how = if i % 2 == 0 && aimed.is_none() {
            let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * 11 / 10 + 1));
            std::thread::sleep(delay);
            format!("after {delay:?}")
        } else {
            let (marker, nth) = aimed.unwrap_or_else(|| {
                let (marker, nth) = EVENTS[rng.below(EVENTS.len() as u64) as usize];
                (marker, 1 + rng.below(nth) as usize)
            });
            let mut seen = 0;
            for line in lines.iter() {
                seen += usize::from(line.contains(marker));
                log.push_str(&line);
                log.push('\n');
                if seen == nth {
                    break;
                }
            }
            format!("at {marker:?} #{nth}")
        };
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        log.extend(lines.try_iter().map(|l| l + "\n"));
        let ph = phase(&log);
        *phases.entry(ph).or_default() += 1;
        let listed = check(&p, i, false);
        eprintln!("kill {i}: {how}, phase {ph}, {listed} snapshot(s) listed");
        i += 1;
    }

    // One prune that runs to the end frees what killed ones left behind.
    p.run_ok(&["prune"]);
    let left = unneeded(&p);
    assert!(
        left.is_empty(),
        "unneeded objects after a whole prune: {left:?}"
    );
    let listed = check(&p, i, true);
    eprintln!(
        "prune kill -9: seed={seed} kills={i} by phase {phases:?}; {listed} snapshot(s) listed at the end"
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
fn kill_9_of_prune_leaves_every_kept_snapshot_restorable() {
    let kills = std::env::var("SQLITE_BACKUP_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(32);
    kill_prunes(kills, 0x5eed_9a11);
}
