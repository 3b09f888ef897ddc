//! `sqlite-backup check`.

use anyhow::{Context, Result};
use backup_core::CheckLevel;
use backup_core::snapshot;
use backup_core::verify::{self, Checks};

use crate::Exit;
use crate::args::{CheckArgs, Cli};
use crate::settings::{self, UsageError};

pub fn run(cli: &Cli, args: &CheckArgs) -> Result<Exit> {
    if !args.db_path.is_file() {
        return Err(UsageError(format!("{} is not a file", args.db_path.display())).into());
    }
    let level = if args.quick {
        CheckLevel::QuickCheck
    } else {
        CheckLevel::IntegrityCheck
    };
    // If the path is a configured database, run its own checks too.
    let config = settings::load_optional_config(&cli.config)?;
    let canonical = std::fs::canonicalize(&args.db_path).ok();
    let db = config.as_ref().and_then(|c| {
        c.databases
            .iter()
            .find(|d| std::fs::canonicalize(&d.database.path).ok() == canonical)
            .map(|d| d.database.clone())
    });
    // The backups of a configured database: are they more readable than it?
    if db.is_some()
        && let Some(config) = &config
    {
        for w in settings::permission_warnings(config) {
            tracing::warn!("{w}");
        }
    }
    let checks = match &db {
        Some(db) => Checks::for_database(db, level),
        None => Checks {
            level,
            ..Checks::default()
        },
    };
    let conn = backup_core::sqlite::open_source(&args.db_path)
        .with_context(|| format!("opening {}", args.db_path.display()))?;
    // Read the header first: a database that cannot be read as it is (a
    // hot journal, a read-only WAL, a lock held throughout) is not corrupt,
    // and must never be sent to a restore.
    if let Err(e) = conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))
        && let Some(obstacle) = snapshot::obstacle(&args.db_path, &e)
    {
        match args.json {
            true => crate::output::json(&serde_json::json!({
                "path": args.db_path,
                "ok": false,
                "not_checked": obstacle.to_string(),
            })),
            false => {
                outln!("{}", args.db_path.display());
                outln!("NOT CHECKED: {obstacle}");
            }
        }
        return Ok(Exit::Failed);
    }
    let report = verify::check_connection(&conn, &checks);
    if args.json {
        crate::output::json(&serde_json::json!({
            "path": args.db_path,
            "label": db.as_ref().map(|d| &d.label),
            "check": level.to_string(),
            "ok": report.ok(),
            "page_count": report.facts.as_ref().map(|f| f.page_count),
            "page_size": report.facts.as_ref().map(|f| f.page_size),
            "row_counts": report.facts.as_ref().map(|f| &f.row_counts),
            "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        }));
        return Ok(if report.ok() { Exit::Ok } else { Exit::Failed });
    }
    let what = level.to_string();
    outln!(
        "{}{}",
        args.db_path.display(),
        db.map(|d| format!(" (database {})", d.label))
            .unwrap_or_default()
    );
    if let Some(f) = &report.facts {
        outln!("  {} pages of {} bytes", f.page_count, f.page_size);
        for (t, n) in &f.row_counts {
            outln!("  table {t}: {n} rows");
        }
    }
    for p in &report.problems {
        outln!("  FAIL  {p}");
    }
    if report.ok() {
        outln!("OK: {what} is `ok`, no foreign key violations");
        Ok(Exit::Ok)
    } else {
        outln!(
            "CORRUPT: restore from a backup (`sqlite-backup restore LABEL`); do not repair in place"
        );
        Ok(Exit::Failed)
    }
}
