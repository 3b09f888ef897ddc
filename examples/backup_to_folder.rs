//! Back up a live SQLite database into a folder and verify it, while the
//! application keeps writing: the embedding API's common case.
//!
//! `cargo run --example backup_to_folder -- /srv/app.db /var/backups/app`
//! (without arguments it makes a demo database in a temporary folder).

use backup_core::{Backups, Database};
use backup_local::LocalSink;
use backup_testkit::demo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (db_path, folder) = match args.as_slice() {
        [db, folder] => (db.into(), folder.into()),
        _ => {
            let db = tmp.path().join("app.db");
            demo::create(&db, 2_000_000, 1)?;
            (db, tmp.path().join("backups"))
        }
    };
    let writer = demo::Writer::start(&db_path, 100).ok(); // the application keeps writing

    // The whole embedding: a sink, a database, backup, verify.
    let backups = Backups::new(LocalSink::folder(&folder));
    let app = Database::new("app", &db_path).require_tables(demo::TABLES);
    let taken = backups.backup(&app)?;
    let verified = backups.verify_latest(&app)?;

    if let Some(w) = writer {
        w.stop();
    }
    let (sink, entry) = &taken.copies[0];
    println!("backed up {} to {sink}: {}", app.label, entry.key);
    println!(
        "verified {}: {} bytes, sha256 {}, rows {:?}",
        verified.listed.entry.key,
        verified.report.size,
        verified.report.sha256,
        verified.report.db.facts.as_ref().map(|f| &f.row_counts)
    );
    assert_eq!(
        verified.listed.run_id, taken.run_id,
        "the newest backup is ours"
    );
    assert!(folder.join(&entry.key).is_file());
    Ok(())
}
