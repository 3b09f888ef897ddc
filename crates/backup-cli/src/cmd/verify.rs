//! `sqlite-backup verify`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use backup_config::Config;
use backup_core::CheckLevel;
use backup_core::compress::{Compression, Format};
use backup_core::digest::Sidecar;
use backup_core::manifest::Entry;
use backup_core::sink::Placement;
use backup_core::verify::{self, ArtifactReport, Checks, Expected, Problem};

use backup_core::source::Scope;

use crate::Exit;
use crate::args::{Cli, VerifyArgs};
use crate::output::size;
use crate::settings::{self, UsageError};

pub fn run(cli: &Cli, args: &VerifyArgs) -> Result<Exit> {
    if args.catalog {
        return super::catalog::verify(cli, args);
    }
    let scratch_dir = backup_core::fsutil::private_tempdir("sqlite-backup-verify-", None)
        .context("creating a scratch folder")?;
    let scratch = scratch_dir.path().join("candidate.db");
    let (subject, report) = match (&args.artifact, &args.latest) {
        (_, Some(label)) => verify_latest(cli, label, args.source.as_deref(), &scratch)?,
        (Some(path), None) => {
            let config = settings::load_optional_config(&cli.config)?;
            let identities = settings::identities(cli.identity.as_deref(), config.as_ref())?;
            let report = verify_file(path, config.as_ref(), identities, &scratch)?;
            (path.display().to_string(), report)
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let ok = report.ok();
    let key_problem = report.problems.iter().any(Problem::is_key_problem);
    if args.json {
        print_json(&subject, &report, key_problem)?;
    } else {
        print_text(&subject, &report, key_problem);
    }
    Ok(if key_problem {
        Exit::Usage
    } else if ok {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// `--latest LABEL`: the newest catalogued artifact of `label` in any sink,
/// named for the output, and its report.
fn verify_latest(
    cli: &Cli,
    label: &str,
    source: Option<&str>,
    scratch: &Path,
) -> Result<(String, ArtifactReport)> {
    let config = settings::load_config(&cli.config)?;
    let db = settings::select(&config, &[label.to_string()])?.remove(0);
    let backups = settings::backups(&config)?;
    let (all, _) = backups.list();
    let scope = source.map_or(Scope::Own, |s| Scope::Named(s.to_string()));
    let Some(latest) = backup_core::source::select(&all, &db.database, &scope)?
        .first()
        .map(|&l| l.clone())
    else {
        bail!("no backup of {label:?} is recorded in any catalog");
    };
    let sink = backups
        .sinks()
        .find(|s| s.name() == latest.sink)
        .expect("listed sink");
    let checks = Checks::for_database(&db.database, CheckLevel::IntegrityCheck).with_identities(
        settings::identities(cli.identity.as_deref(), Some(&config))?,
    );
    let report = verify::verify_entry(sink, &latest.entry, scratch, &checks)?;
    Ok((
        format!(
            "{} ({} in sink {})",
            latest.entry.key, latest.run_id, latest.sink
        ),
        report,
    ))
}

fn print_json(subject: &str, report: &ArtifactReport, key_problem: bool) -> Result<()> {
    let problems: Vec<&Problem> = report.all_problems().collect();
    outln!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "artifact": subject,
            "ok": report.ok(),
            "content_checked": !report.needs_identity && !key_problem,
            "sha256": report.sha256,
            "size": report.size,
            "db_sha256": report.db_sha256,
            "db_size": report.db_size,
            "problems": problems,
            "row_counts": report.db.facts.as_ref().map(|f| &f.row_counts),
        }))?
    );
    Ok(())
}

fn print_text(subject: &str, report: &ArtifactReport, key_problem: bool) {
    outln!("{subject}");
    outln!(
        "  artifact  {} ({}), sha256 {}",
        size(report.size),
        report.size,
        report.sha256
    );
    if report.db_size > 0 {
        outln!(
            "  database  {} decompressed, sha256 {}",
            size(report.db_size),
            report.db_sha256
        );
    }
    if let Some(f) = &report.db.facts {
        for (t, n) in &f.row_counts {
            outln!("  table     {t}: {n} rows");
        }
    }
    for p in report.all_problems() {
        outln!("  FAIL      {p}");
    }
    outln!(
        "{}",
        if key_problem {
            "NOT CHECKED: the identity or passphrase given cannot open this backup (see above); it is not called corrupt"
        } else if !report.ok() {
            "CORRUPT: do not restore from this artifact"
        } else if report.needs_identity {
            "OK, stored bytes only: the artifact's SHA-256 and size match; its content is encrypted, \
             so checking the database inside needs the identity (--identity FILE or SQLITE_BACKUP_IDENTITY_FILE)"
        } else {
            "OK: every check passed"
        }
    );
}

/// Verify an artifact file by path, with its sidecar beside it and, when it
/// lives in the configured local root, its manifest entry.
fn verify_file(
    path: &Path,
    config: Option<&Config>,
    identities: Option<backup_core::encryption::Identities>,
    scratch: &Path,
) -> Result<ArtifactReport> {
    // As `check` does: a missing input is a usage error, not a bad backup.
    if !path.is_file() {
        return Err(UsageError(format!("{} is not a file", path.display())).into());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| UsageError(format!("{} is not a file name", path.display())))?;
    let encrypted = name.ends_with(".age");
    let format = Format::from_file_name(name.trim_end_matches(".age")).ok_or_else(|| {
        UsageError(format!(
            "{name}: unknown artifact type (expected .db, .db.gz or .db.zst, each maybe .age)"
        ))
    })?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut pre = Vec::new();
    let sidecar_path = PathBuf::from(format!("{}.sha256", path.display()));
    let sidecar = match std::fs::read_to_string(&sidecar_path) {
        Ok(text) => match Sidecar::parse(&text) {
            Ok(s) if s.file_name == name => Some(s.sha256),
            Ok(s) => {
                pre.push(Problem::Sidecar {
                    error: format!("names {:?}, expected {name:?}", s.file_name),
                });
                Some(s.sha256)
            }
            Err(e) => {
                pre.push(Problem::Sidecar {
                    error: e.to_string(),
                });
                None
            }
        },
        Err(e) => {
            pre.push(Problem::Sidecar {
                error: format!("{}: {e}", sidecar_path.display()),
            });
            None
        }
    };
    let entry = config.and_then(|c| find_entry(c, path));
    // The database's own checks apply only when the catalog names the
    // artifact: a file name alone does not say which database it copies
    // (label `app` is a prefix of `app-data-…`).
    let db = config
        .zip(entry.as_ref())
        .and_then(|(c, e)| c.database(&e.label).map(|d| d.database.clone()));
    let checks = match &db {
        Some(db) => Checks::for_database(db, CheckLevel::IntegrityCheck),
        None => Checks {
            level: CheckLevel::IntegrityCheck,
            ..Checks::default()
        },
    }
    .with_identities(identities.clone());
    let db_sha256 = entry
        .as_ref()
        .and_then(|e| verify::expected_db_sha256(e, identities.as_ref(), &mut pre));
    let expected = Expected {
        sidecar_sha256: sidecar,
        manifest_sha256: entry.as_ref().map(|e| e.sha256.clone()),
        db_sha256,
        size: entry.as_ref().map(|e| e.size),
        encrypted_to: encrypted.then(|| {
            entry
                .as_ref()
                .map(|e| e.encrypted_to.clone())
                .unwrap_or_default()
        }),
    };
    let mut report = verify::verify_stream(
        Box::new(std::io::BufReader::new(file)),
        &Compression::new(format),
        &expected,
        scratch,
        &checks,
    )?;
    if !pre.is_empty() {
        pre.append(&mut report.problems);
        report.problems = pre;
        report.db = Default::default();
    }
    Ok(report)
}

/// The catalog entry of the artifact at `path`, when it lies in the
/// configured local root or cold folder: found by its key in that sink's
/// manifests.
fn find_entry(config: &Config, path: &Path) -> Option<Entry> {
    let abs = std::fs::canonicalize(path).ok()?;
    let folders = [
        Some((&config.local.root, Placement::Local)),
        config.local.cold.as_ref().map(|c| (c, Placement::Cold)),
    ];
    folders
        .into_iter()
        .flatten()
        .find_map(|(folder, placement)| {
            let root = std::fs::canonicalize(folder).ok()?;
            let key = abs.strip_prefix(&root).ok()?.to_str()?.replace('\\', "/");
            let sink = backup_local::LocalSink::new("local", folder, placement);
            let view = backup_core::manifest::view::view(&sink).ok()?;
            backup_core::manifest::view::listed(&sink, &view.state)
                .into_iter()
                .find(|l| l.entry.key == key)
                .map(|l| l.entry)
        })
}
