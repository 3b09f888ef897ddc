//! Restore the newest good backup of a database, with the application's own
//! check of the restored file, after the live database was damaged.
//!
//! `cargo run --example restore_latest`

use backup_core::{Backups, Database};
use backup_local::LocalSink;
use rusqlite::Connection;

fn count(path: &std::path::Path) -> rusqlite::Result<i64> {
    Connection::open(path)?.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let db_path = tmp.path().join("app.db");
    let conn = Connection::open(&db_path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO tasks (title) SELECT 'task ' || i FROM n;",
    )?;

    let backups = Backups::new(LocalSink::folder(tmp.path().join("backups")));
    let app = Database::new("app", &db_path).require_tables(["tasks"]);
    backups.backup(&app)?;

    // An accident after the backup.
    conn.execute("DELETE FROM tasks", [])?;
    drop(conn);
    assert_eq!(count(&db_path)?, 0);

    // Restore in place; the damaged file is kept beside it, never deleted.
    let outcome = backups
        .restore(&app)
        .post_restore(|r| match count(r.path)? {
            1000 => Ok(()),
            n => Err(format!("expected 1000 tasks, found {n}").into()),
        })
        .run()?;

    println!(
        "restored {} from {} ({}), the previous file kept at {}",
        outcome.target.display(),
        outcome.restored.listed.entry.key,
        outcome.restored.listed.sink,
        outcome
            .broken
            .as_ref()
            .map_or("-".into(), |b| b.display().to_string())
    );
    assert_eq!(count(&db_path)?, 1000);
    assert!(outcome.broken.is_some_and(|b| b.exists()));
    Ok(())
}
