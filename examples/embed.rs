//! Embedding backup-core in your own program, as after `cargo add backup-core
//! backup-local`: back up a live WAL database into a local folder while the
//! application keeps writing, then verify the newest backup from the catalog.
//!
//! Run: `cargo run --example embed -- /path/to/app.db /path/to/backups`
//! (without arguments it makes a demo database in a temporary folder).

use std::path::PathBuf;
use std::sync::Arc;

use backup_core::compress::{Compression, Format};
use backup_core::config::{CheckLevel, Database, SnapshotMethod};
use backup_core::naming::Template;
use backup_core::pipeline::{self, Options, Silent, Target};
use backup_core::sink::{Placement, Sink};
use backup_core::{demo, manifest, verify};
use backup_local::LocalSink;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tmp = tempfile::tempdir()?;
    let (db_path, root) = match args.as_slice() {
        [db, root] => (PathBuf::from(db), PathBuf::from(root)),
        _ => {
            let db = tmp.path().join("app.db");
            demo::create(&db, 5_000_000, 1)?;
            (db, tmp.path().join("backups"))
        }
    };

    let database = Database {
        label: "app".into(),
        path: db_path.clone(),
        required_tables: vec![],
        checks: vec![],
        post_restore: None,
        cold_tags: vec![],
        retention: Default::default(),
    };
    let sink: Arc<dyn Sink> = Arc::new(LocalSink::new("local", &root, Placement::Local));
    let targets = [Target {
        sink: sink.clone(),
        template: Template::parse("{label}-{tag}-{yyyymmdd}-{time}{ext}", false)?,
        cold_only: false,
    }];
    let opts = Options {
        tag: Some("session".into()),
        cold: false,
        compression: Compression::new(Format::Zstd),
        verify_level: CheckLevel::QuickCheck,
        snapshot_method: SnapshotMethod::Backup,
        scratch_dir: root.join(".tmp"),
        observer: Arc::new(Silent),
    };

    // The application keeps writing while we back up.
    let writer = demo::Writer::start(&db_path, 100).ok();
    let plan = pipeline::plan(
        std::slice::from_ref(&database),
        &targets,
        &opts,
        jiff::Timestamp::now(),
    );
    let report = pipeline::execute(&plan, &targets, &opts);
    if let Some(w) = writer {
        w.stop();
    }
    for o in &report.outcomes {
        println!("{}: ok={} errors={:?}", o.label, o.ok(), o.errors);
    }

    let (listed, _) = manifest::collect(&[sink.as_ref()]);
    let newest = listed.first().ok_or("no backup listed")?;
    let checks = verify::Checks::for_database(&database, CheckLevel::IntegrityCheck);
    let scratch = tempfile::tempdir()?;
    let result = verify::verify_entry(
        sink.as_ref(),
        &newest.entry,
        &scratch.path().join("c.db"),
        &checks,
    )?;
    println!(
        "newest backup {} in {}: {} ({} bytes, sha256 {})",
        newest.entry.key,
        root.display(),
        if result.ok() { "verified" } else { "CORRUPT" },
        result.size,
        result.sha256
    );
    if result.ok() {
        Ok(())
    } else {
        Err("verification failed".into())
    }
}
