//! Pack compaction in a deep chain: an application with its connection
//! open changes a few rows before each of many runs into a local folder and
//! Azurite. Runs fold the chain's small packs into their own, so the newest
//! snapshot needs a bounded number of packs; every snapshot sampled (those
//! that folded among them) restores exactly from both sinks; and once the
//! older snapshots are pruned, collection frees the packs folded away while
//! the newest still restores. Folds into Azure read the packs they fold from
//! the copies the host kept, not back from Azure (counted by Azurite), and
//! from Azure once those copies are gone.

use rusqlite::Connection;

use backup_core::compaction::FAN_IN;
use backup_core::manifest::Listed;
use backup_core::sink::Sink;
use backup_testkit::remote::Remote;
use backup_testkit::testkit::{Project, assert_image, require_tool};

use super::{CONFIG, dump};

const RUNS: usize = 48;

fn catalog(p: &Project) -> Vec<Listed> {
    let mut all = p.catalog();
    all.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    all
}

fn restores_exactly(remote: &Remote, p: &Project, l: &Listed, from: &str, name: &str) {
    remote.run_ok(
        p,
        &[
            "restore", "app", "--from", from, "--id", &l.run_id, "--to", name,
        ],
    );
    assert_image(&l.entry, &std::fs::read(p.join(name)).unwrap(), name);
}

#[test]
fn a_deep_chain_folds_small_packs_and_every_snapshot_restores() {
    require_tool("sqlite3");
    let remote = Remote::azure_counting();
    let pack_gets = || {
        let counts = remote.azurite().requests().unwrap().snapshot();
        counts.get("GET pack").copied().unwrap_or(0)
    };
    let p = Project::new();
    let db = p.demo_db("app.db", 3_000_000);
    let retention =
        "[retention]\nhot_days = 0\nwarm_days = 0\nkeep_last = 1\npack_grace = \"0s\"\n";
    let config = |retention: &str| format!("{CONFIG}\n{}\n{retention}", remote.section(""));
    p.write_config(&config(""));
    let app = Connection::open(&db).unwrap();
    app.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();

    let mut folded_at = Vec::new();
    for round in 0..RUNS {
        // A few rows spread over the table: a handful of pages a run.
        for k in 0..3 {
            app.execute(
                "UPDATE tasks SET title = ?1 WHERE id = ?2",
                rusqlite::params![
                    format!("r{round}"),
                    (1 + (round * 97 + k * 331) % 2_000) as i64
                ],
            )
            .unwrap();
        }
        let out = remote.run_ok(&p, &["backup"]);
        if out.contains("packs folded") {
            folded_at.push(round);
        }
        // Between two folds (one every FAN_IN runs here), so the next one
        // folds packs whose copies are gone.
        if round == RUNS / 2 + FAN_IN / 2 {
            assert!(!folded_at.is_empty());
            assert_eq!(pack_gets(), 0, "a fold read a pack back from Azure");
            // Copies lost (a new state folder): folds read from Azure.
            let copies = p.join(".sqlite-backup-state/page-hashes/sealed-packs/azure.app");
            assert!(
                copies.is_dir() && !walkdir(&copies).is_empty(),
                "no copies kept in {}",
                copies.display()
            );
            std::fs::remove_dir_all(&copies).unwrap();
        }
    }
    assert!(pack_gets() > 0, "no fold after the copies went read Azure");
    let all = catalog(&p);
    assert_eq!(all.len(), RUNS);
    let depths: Vec<u32> = all
        .iter()
        .map(|l| l.entry.pages.as_ref().unwrap().chain_depth)
        .collect();
    assert_eq!(depths, (0..RUNS as u32).collect::<Vec<_>>(), "one chain");
    assert!(folded_at.len() >= 3, "runs that folded: {folded_at:?}");

    // Without folding the newest would name a pack per run.
    let newest = all.last().unwrap();
    let needed = newest.entry.pages.as_ref().unwrap().packs.len();
    assert!(
        needed <= 2 * (FAN_IN - 1) + 1,
        "newest needs {needed} packs"
    );

    let sampled = [1, folded_at[0], folded_at[folded_at.len() / 2], RUNS - 1];
    for i in sampled {
        for from in ["local", "azure"] {
            restores_exactly(&remote, &p, &all[i], from, &format!("{from}-{i}.db"));
        }
    }
    assert_eq!(dump(&p, &p.join("azure-47.db")), dump(&p, &db));
    remote.run_ok(&p, &["verify", "--catalog", "--deep"]);

    // Keep only the newest: every pack it does not name is freed, in both
    // sinks, and it still restores.
    p.write_config(&config(retention));
    remote.run_ok(&p, &["prune"]);
    let packs_in = |dir: &std::path::Path| -> usize {
        walkdir(dir).iter().filter(|n| n.ends_with(".pack")).count()
    };
    assert_eq!(packs_in(&p.backups()), needed, "local packs after prune");
    let azure = remote.sink().list("").unwrap();
    assert_eq!(
        azure.iter().filter(|k| k.ends_with(".pack")).count(),
        needed,
        "azure packs after prune"
    );
    for from in ["local", "azure"] {
        restores_exactly(&remote, &p, newest, from, &format!("pruned-{from}.db"));
    }
}

fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path.to_string_lossy().into_owned());
        }
    }
    out
}
