//! `sqlite-backup prune` end to end on the local tier.

use backup_testkit::testkit::Project;

#[test]
fn prune_keeps_the_newest_and_deletes_exactly_the_rest() {
    let p = Project::new();
    p.demo_db("app.db", 300_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[retention]\nhot_days = 0\nwarm_days = 0\n",
    );
    for _ in 0..3 {
        p.run_ok(&["backup"]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let before = p.catalog();
    assert_eq!(before.len(), 3);

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
        std::thread::sleep(std::time::Duration::from_millis(1100));
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
