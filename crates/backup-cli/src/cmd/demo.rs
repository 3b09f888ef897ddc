//! `sqlite-backup demo`: the quick start in one command. It makes a WAL
//! database, keeps an application writer committing during the backup,
//! backs up into the local default tier, verifies the result fully, lists it.

use anyhow::{Context, Result, bail};
use backup_core::CheckLevel;
use backup_core::verify::{self, Checks};
use backup_demo as demo;

use crate::Exit;
use crate::args::{Cli, DemoArgs};
use crate::settings;

const CONFIG: &str = r#"# sqlite-backup demo config: see the config reference (docs/src/config.md).
[[database]]
label = "demo"
path = "app.db"
required_tables = ["tasks", "thought_records", "merkle_nodes"]
checks = ["SELECT count(*) > 0 FROM tasks"]

[compression]
format = "zstd"
level = 3

# [local] root defaults to "data/backups" beside this file.
"#;

pub fn run(_cli: &Cli, args: &DemoArgs) -> Result<Exit> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let db_path = args.dir.join("app.db");
    let config_path = args.dir.join("sqlite-backup.toml");
    if !db_path.exists() {
        outln!(
            "Creating a {} MB demo database in WAL mode: {}",
            args.size_mb,
            db_path.display()
        );
        demo::create(&db_path, args.size_mb * 1_000_000, 42)
            .context("creating the demo database")?;
    }
    if !config_path.exists() {
        std::fs::write(&config_path, CONFIG).context("writing the demo config")?;
    }
    let config = settings::load_config(&config_path)?;

    outln!("Starting an application writer (200 commits/s) and backing up while it runs…");
    let writer = demo::Writer::start(&db_path, 200).context("starting the writer")?;
    let (_, report) = crate::jobs::backup::run_backup(
        &config,
        &config.databases,
        Some("session".into()),
        false,
        false,
    )?;
    let stats = writer.stop();
    let report = report.expect("not a dry run");
    if report.failed_count() > 0 {
        bail!("the demo backup failed: {:?}", report.outcomes[0].errors);
    }
    let entry = &report.outcomes[0].written[0].1;
    outln!(
        "Backed up {} ({} pages) into {} while the writer committed {} transactions (p99 {:?}).",
        entry.source,
        entry.page_count,
        config.local.root.join(&entry.key).display(),
        stats.commits.len(),
        stats.percentile(0.99)
    );

    outln!(
        "Verifying the new backup from the catalog (sidecar, decompression, integrity_check, tables, checks)…"
    );
    let backups = settings::backups(&config)?;
    let (listed, _) = backups.list();
    let latest = listed.first().context("the catalog lists no backup")?;
    let scratch = backup_core::fsutil::private_tempdir("sqlite-backup-demo-", None)?;
    let checks = Checks::for_database(&config.databases[0].database, CheckLevel::IntegrityCheck);
    let v = verify::verify_entry(
        backups.sinks().next().expect("the local sink"),
        &latest.entry,
        &scratch.path().join("c.db"),
        &checks,
    )?;
    for p in v.all_problems() {
        outln!("  FAIL {p}");
    }
    if !v.ok() {
        return Ok(Exit::Failed);
    }
    outln!(
        "OK: backup verified; {} backup(s) of `demo` in the catalog.",
        listed.len()
    );
    outln!();
    outln!("Next: cd {} && sqlite-backup list", args.dir.display());
    outln!(
        "      sha256sum -c {}.sha256   (from {})",
        backup_core::naming::file_name(&entry.key),
        config.local.root.display()
    );
    Ok(Exit::Ok)
}
