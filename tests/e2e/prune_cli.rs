//! `sqlite-backup prune` end to end on the local tier.

use backup_core::encryption::Identities;
use backup_core::manifest::Listed;
use backup_testkit::testkit::Project;

/// A demo database under a policy that keeps only the newest backup, after
/// `runs` backups; with the catalog they made.
fn backed_up(runs: usize) -> (Project, Vec<Listed>) {
    let p = Project::new();
    p.demo_db("app.db", 300_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[retention]\nhot_days = 0\nwarm_days = 0\n",
    );
    for _ in 0..runs {
        p.run_ok(&["backup"]);
    }
    let before = p.catalog();
    assert_eq!(before.len(), runs);
    (p, before)
}

#[test]
fn prune_keeps_the_newest_and_deletes_exactly_the_rest() {
    let (p, before) = backed_up(3);

    let dry = p.run_ok(&["prune", "--dry-run"]);
    assert!(dry.contains("Dry run"), "{dry}");
    assert!(dry.contains("newest verified backup of app"), "{dry}");
    assert_eq!(p.catalog().len(), 3, "dry run deleted something");

    p.run_ok(&["prune"]);
    let after = p.catalog();
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].entry.key, before[0].entry.key,
        "the newest must survive"
    );
    for gone in &before[1..] {
        assert!(
            !p.backups().join(&gone.entry.key).exists(),
            "{} still there",
            gone.entry.key
        );
        assert!(!p.backups().join(&gone.entry.sidecar_key).exists());
    }
    assert!(p.backups().join(&before[0].entry.key).exists());
    // A second prune finds nothing more to delete.
    let again = p.run_ok(&["prune", "--dry-run"]);
    assert!(!again.contains("delete  "), "{again:?}");
}

#[test]
fn each_database_follows_its_own_retention() {
    let p = Project::new();
    p.demo_db("keep.db", 200_000);
    p.demo_db("trim.db", 200_000);
    // Global: keep everything for a week. `trim` overrides it to keep only the newest.
    p.write_config(
        "[[database]]\nlabel = \"keep\"\npath = \"keep.db\"\n\n[[database]]\nlabel = \"trim\"\npath = \"trim.db\"\nretention = { hot_days = 0, warm_days = 0 }\n",
    );
    for _ in 0..2 {
        p.run_ok(&["backup"]);
    }
    p.run_ok(&["prune"]);
    let count = |label: &str| {
        p.catalog()
            .iter()
            .filter(|l| l.entry.label == label)
            .count()
    };
    assert_eq!(count("keep"), 2, "the global hot tier keeps both");
    assert_eq!(count("trim"), 1, "trim's own policy keeps only the newest");
}

#[test]
fn incremental_packs_are_freed_after_pack_grace_and_kept_snapshots_restore() {
    incremental_packs_are_freed(false);
}

/// The same on a sealed chain: its folds read the host's plaintext copies
/// of its XOR packs, and prune and collection need no key.
#[test]
fn sealed_packs_are_freed_after_pack_grace_and_kept_snapshots_restore() {
    incremental_packs_are_freed(true);
}

fn incremental_packs_are_freed(sealed: bool) {
    use backup_core::digest::Sha256;
    use backup_testkit::testkit::{output_text, require_tool, sh};
    require_tool("sqlite3");
    let p = Project::new();
    p.demo_db("app.db", 2_000_000);
    let encryption = if sealed {
        require_tool("age-keygen");
        sh(p.path(), "age-keygen -o key.txt 2>/dev/null");
        let public = sh(p.path(), "age-keygen -y key.txt");
        format!("\n[encryption]\nrecipients = [\"{}\"]\n", public.trim())
    } else {
        String::new()
    };
    let config = |grace: &str| {
        format!(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[snapshot]\nincremental = true\n\n\
             [retention]\nhot_days = 0\nwarm_days = 0\nkeep_last = 1\n{grace}{encryption}"
        )
    };
    p.write_config(&config(""));
    let update = |mark: &str| {
        sh(
            p.path(),
            &format!(
                "sqlite3 app.db \"UPDATE tasks SET title = '{mark}' || id WHERE id BETWEEN 200 AND 600\""
            ),
        )
    };
    // Each run stores its changes as XOR deltas that the newer snapshots
    // still need, until a run folds the small packs into its own: the
    // snapshots before it then name packs the newest does not.
    p.run_ok(&["backup"]);
    let mut runs = 1;
    loop {
        update(&format!("r{runs}"));
        let out = p.run_ok(&["backup"]);
        runs += 1;
        if out.contains("packs folded") {
            break;
        }
        assert!(runs < 20, "no run folded packs");
    }
    let mut all = p.catalog();
    all.sort_by(|a, b| b.run_id.cmp(&a.run_id));
    assert_eq!(all.len(), runs);
    let cache = p.join(".sqlite-backup-state/page-hashes/local.app.pagehashes");
    assert_eq!(
        std::fs::metadata(&cache).unwrap().len(),
        all[0].entry.page_count * 16,
        "the newest page hashes are cached in the state folder"
    );
    let packs = |i: usize| -> Vec<String> {
        let map = all[i].entry.pages.as_ref().unwrap();
        map.packs.iter().map(|x| x.key.clone()).collect()
    };
    // Newest first: the middle snapshot's own pack was folded into the
    // newest's.
    let middle_pack = packs(1)
        .into_iter()
        .find(|k| !packs(2).contains(k))
        .unwrap();
    assert!(!packs(0).contains(&middle_pack));

    let table = p.run_ok(&["list"]);
    for shown in ["KIND", "STORED", "full", "incr 1", "incr 2"] {
        assert!(table.contains(shown), "list shows {shown}: {table}");
    }

    let out = p.run_ok(&["prune"]);
    assert!(
        out.contains(&format!("deleted {} snapshot(s)", runs - 1)),
        "{out}"
    );
    assert!(
        out.contains("wait for pack_grace (the first until"),
        "{out}"
    );
    assert!(
        p.backups().join(&middle_pack).exists(),
        "freed before its grace period"
    );
    let dry = p.run_ok(&["prune", "--dry-run"]);
    assert!(dry.contains("wait for pack_grace"), "{dry}");

    p.write_config(&config("pack_grace = \"0s\"\n"));
    let dry = p.run_ok(&["prune", "--dry-run"]);
    assert!(dry.contains("would be freed"), "{dry}");
    assert!(p.backups().join(&middle_pack).exists());
    let out = p.run_ok(&["prune"]);
    assert!(out.contains("freed "), "{out}");
    assert!(
        out.contains("pack object(s) of pruned incremental snapshots"),
        "{out}"
    );
    assert!(!p.backups().join(&middle_pack).exists());
    for kept in packs(0) {
        assert!(p.backups().join(&kept).exists(), "{kept} is still needed");
    }
    p.run_ok(&["verify", "--catalog", "--deep"]);
    let to = p.join("restored.db");
    let mut restore = vec!["restore", "app", "--to", to.to_str().unwrap()];
    let newest = if sealed {
        restore.extend(["--identity", "key.txt"]);
        let keys = Identities::read_file(&p.join("key.txt")).unwrap();
        all[0].entry.opened(&keys).unwrap()
    } else {
        all[0].entry.clone()
    };
    let out = p.run(&restore);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        Sha256::hex_of(&std::fs::read(&to).unwrap()),
        newest.db_sha256
    );
    let again = p.run_ok(&["prune"]);
    assert!(again.contains("nothing to prune"), "{again}");
    if sealed {
        // Plaintext copies stay only for the packs the newest snapshot can
        // still fold: those a run folded go at the start of the next run
        // (here one with nothing to store), once the fold is listed.
        p.run_ok(&["backup"]);
        let map = newest.pages.as_ref().unwrap();
        let settled = backup_core::compaction::settled_pages(newest.page_size);
        let foldable = map.packs.iter().filter(|x| x.xor && x.pages < settled);
        let copies =
            std::fs::read_dir(p.join(".sqlite-backup-state/page-hashes/sealed-packs/local.app"))
                .unwrap()
                .count();
        assert_eq!(
            copies,
            2 * foldable.count(),
            "a copy and its SHA-256 per pack"
        );
        assert!(copies > 0);
    }
}

#[test]
fn keep_within_needs_hot_days_zero_and_keeps_the_recent_past() {
    let p = Project::new();
    p.demo_db("app.db", 200_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[retention]\nkeep_within = \"2h\"\n",
    );
    let out = p.run(&["prune", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    let text = backup_testkit::testkit::output_text(&out);
    assert!(
        text.contains("keep_within = \"2h\" has no effect while hot_days = 7"),
        "{text}"
    );
    assert!(text.contains("set hot_days = 0"), "{text}");

    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[retention]\nhot_days = 0\nkeep_within = \"2h\"\n",
    );
    p.run_ok(&["backup"]);
    let dry = p.run_ok(&["prune", "--dry-run"]);
    assert!(dry.contains("keep_within: younger than 2h"), "{dry}");

    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[retention]\nhot_days = 0\nkeep_within = \"soon\"\n",
    );
    let out = p.run(&["prune", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    let text = backup_testkit::testkit::output_text(&out);
    assert!(text.contains("\"soon\" is not a duration"), "{text}");
}

/// `daemon --prune-every`: the first run is followed by a prune (the
/// policy keeps only the newest), and the next runs within the hour are not.
#[test]
fn the_daemon_prunes_after_a_run_when_due() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let (p, before) = backed_up(2);

    let mut daemon = p
        .command(&["daemon", "--interval", "200ms", "--prune-every", "1h"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut prunes, mut runs_after_prune, mut log) = (Vec::new(), 0, Vec::new());
    for line in BufReader::new(daemon.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("prune done") {
            prunes.push(line.clone());
        } else if line.contains("backup phase end") && !prunes.is_empty() {
            runs_after_prune += 1;
        }
        log.push(line);
        if runs_after_prune == 2 {
            break;
        }
    }
    let pid = daemon.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(daemon.wait().unwrap().success());
    let log = log.join("\n");
    assert_eq!(prunes.len(), 1, "one prune within the hour:\n{log}");
    assert!(prunes[0].contains("deleted=2"), "{}", prunes[0]);
    assert!(prunes[0].contains("ok=true"), "{}", prunes[0]);
    let after = p.catalog();
    for gone in &before {
        assert!(
            after.iter().all(|l| l.run_id != gone.run_id),
            "run {} still listed",
            gone.run_id
        );
    }
    // Names are per second, so a later run may reuse a pruned one's: count
    // what is stored instead.
    let stored = std::fs::read_dir(p.backups())
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().ends_with(".db.zst"))
        .count();
    assert_eq!(
        stored,
        after.len(),
        "artifacts stored beside the listed ones:\n{log}"
    );
    // The run the prune kept and the two after it.
    assert_eq!(after.len(), 3, "{after:#?}");
}

#[test]
fn the_daemon_refuses_a_bad_prune_interval() {
    let p = Project::new();
    p.demo_db("app.db", 100_000);
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n");
    let o = p.run(&["daemon", "--once", "--prune-every", "soon"]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--prune-every"), "{err}");
    assert!(p.catalog().is_empty(), "nothing runs on a bad flag");
}

/// A reader that leaves early (`list | head -1`) is no failure: the command
/// ends quietly with its own exit code, and a backup whose summary nobody
/// reads is still made whole.
#[test]
fn a_closed_stdout_ends_commands_quietly_and_loses_no_backup() {
    let (p, before) = backed_up(2);
    let closed = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = p
            .command(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        out.status.code()
    };
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["status"],
        &["prune", "--dry-run"],
        &["schedule", "print", "--systemd"],
        &["--help"],
    ] {
        assert_eq!(closed(args), Some(0), "{args:?}");
    }
    assert_eq!(closed(&["backup"]), Some(0));
    assert_eq!(
        p.catalog().len(),
        before.len() + 1,
        "the backup was not made"
    );
    p.assert_restores_exactly(&p.catalog()[0]);
}

/// `prune --json`: the plan as one object a script reads, and after a real
/// prune the keys each sink deleted, which are exactly the files gone.
#[test]
fn prune_json_lists_the_plan_and_what_was_deleted() {
    let (p, before) = backed_up(3);
    let stdout = |args: &[&str]| {
        let out = p.run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let dry = stdout(&["prune", "--dry-run", "--json"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        (dry["keep"].as_u64(), dry["delete"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(dry["snapshots"].as_array().unwrap().len(), 3);
    assert!(dry["sinks"].is_null());
    assert_eq!(p.catalog().len(), 3, "a dry run deleted something");

    let done = stdout(&["prune", "--json"]);
    assert_eq!(done["dry_run"], false);
    let mut deleted: Vec<&str> = done["sinks"][0]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    deleted.sort();
    let mut expected: Vec<&str> = before[1..].iter().map(|l| l.entry.key.as_str()).collect();
    expected.sort();
    assert_eq!(deleted, expected);
    for key in deleted {
        assert!(!p.backups().join(key).exists(), "{key}");
    }

    // The table's headings and times read as every other table's.
    let (p, _) = backed_up(2);
    let table = p.run_ok(&["prune", "--dry-run"]);
    assert!(
        table.contains("LABEL") && table.contains("SNAPSHOT"),
        "{table}"
    );
    let t = p.catalog()[0]
        .entry
        .snapshot_at
        .strftime("%Y-%m-%d %H:%M:%SZ")
        .to_string();
    assert!(table.contains(&t), "{t} in {table}");
}

/// `--label` repeats on `list` and `prune` as on `backup` and `drill`.
#[test]
fn label_repeats_on_list_and_prune() {
    let p = Project::new();
    for name in ["a", "b", "c"] {
        p.demo_db(&format!("{name}.db"), 100_000);
    }
    p.write_config(
        "[[database]]\nlabel = \"a\"\npath = \"a.db\"\n\n[[database]]\nlabel = \"b\"\npath = \"b.db\"\n\n\
         [[database]]\nlabel = \"c\"\npath = \"c.db\"\n\n[retention]\nhot_days = 0\nwarm_days = 0\n",
    );
    p.run_ok(&["backup"]);
    p.run_ok(&["backup"]);
    let labels = |args: &[&str]| {
        let out = p.run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut l: Vec<String> = rows
            .iter()
            .map(|r| r["label"].as_str().unwrap().to_string())
            .collect();
        l.sort();
        l.dedup();
        l
    };
    assert_eq!(
        labels(&["list", "--json", "-l", "a", "--label", "c"]),
        ["a", "c"]
    );
    p.run_ok(&["prune", "--label", "a", "--label", "b"]);
    let left: Vec<String> = p.catalog().iter().map(|l| l.entry.label.clone()).collect();
    let count = |label: &str| left.iter().filter(|l| *l == label).count();
    assert_eq!((count("a"), count("b"), count("c")), (1, 1, 2), "{left:?}");
}
