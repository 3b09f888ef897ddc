//! `sqlite-backup catalog` (head, anchor, repair) and `verify --catalog`.

use std::path::Path;

use anyhow::{Context, Result};
use backup_core::anchor::{self, AnchorLog, BadLine};
use backup_core::catalog::{self, ArtifactCheck, Options, Report, repair};
use backup_core::manifest::{self, prefix, shown, shown_message};

use crate::Exit;
use crate::args::{AnchorArgs, CatalogCommand, Cli, HeadArgs, RepairArgs, VerifyArgs};
use crate::output::{Table, size};
use crate::settings::{self, UsageError};

pub fn run(cli: &Cli, args: &CatalogCommand) -> Result<Exit> {
    match args {
        CatalogCommand::Head(a) => head(cli, a),
        CatalogCommand::Anchor(a) => anchor(cli, a),
        CatalogCommand::Repair(a) => repair(cli, a),
        CatalogCommand::Adopt(a) => super::adopt::run(cli, a),
    }
}

/// Per sink: complete unfinished links, then re-link every manifest off
/// the chain with one appended repair manifest. Never deletes.
fn repair(cli: &Cli, args: &RepairArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let mut failed = false;
    for sink in settings::sinks(&config)? {
        let name = sink.name().to_string();
        let plan = repair::plan(sink.as_ref())
            .with_context(|| format!("reading the catalog of sink {name}"))?;
        if !plan.blocking.is_empty() {
            failed = true;
            outln!("Sink {name}: not repaired; these problems need a person, not a re-link:");
            for p in &plan.blocking {
                outln!("  - {p}");
            }
            continue;
        }
        if !plan.needed() {
            outln!("Sink {name}: one chain, nothing to repair.");
            continue;
        }
        let verb = if args.dry_run { "would" } else { "will" };
        for (link, key) in &plan.unfinished {
            outln!("Sink {name}: {verb} store {key}, committed by {link} but never stored");
        }
        if !plan.relink.is_empty() {
            outln!(
                "Sink {name}: {verb} append a repair manifest re-linking {} manifest(s), oldest first:",
                plan.relink.len()
            );
            for r in &plan.relink {
                outln!(
                    "  {}  sha256 {}…  ({})",
                    shown(&r.key),
                    prefix(&r.sha256, 16),
                    shown_message(&r.reason)
                );
            }
        }
        if args.dry_run {
            continue;
        }
        match repair::apply(sink.as_ref(), jiff::Timestamp::now()) {
            Ok(Some(a)) => outln!(
                "Sink {name}: appended {} (new head {}); every manifest kept.",
                a.key,
                a.sha256
            ),
            Ok(None) => outln!("Sink {name}: unfinished links stored; nothing to re-link."),
            Err(e) => {
                failed = true;
                eprintln!("error: sink {name}: repair failed: {e}");
            }
        }
    }
    if args.dry_run {
        outln!("Dry run: nothing was written.");
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

/// `<sink> <head>` per sink; `-` for a sink without manifests.
fn head(cli: &Cli, args: &HeadArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let mut heads = Vec::new();
    for sink in settings::sinks(&config)? {
        let head = manifest::head(sink.as_ref())
            .with_context(|| format!("reading the catalog of sink {}", sink.name()))?;
        match args.json {
            true => heads.push(serde_json::json!({"sink": sink.name(), "head": head})),
            false => outln!("{} {}", sink.name(), head.as_deref().unwrap_or("-")),
        }
    }
    if args.json {
        crate::output::json(&serde_json::json!({ "heads": heads }));
    }
    Ok(Exit::Ok)
}

/// Append `<time> <sink> <head>` per sink, after checking that each chain
/// is whole and still contains what the file anchored before: anchoring a
/// tampered chain would vouch for it.
fn anchor(cli: &Cli, args: &AnchorArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let log = read_anchor_file(&args.append, true)?;
    if let Some(bad) = log.bad_lines.first() {
        eprintln!(
            "error: {} line {}: {} (fix the file by hand; nothing was appended)",
            args.append.display(),
            bad.line,
            bad.reason
        );
        return Ok(Exit::Failed);
    }
    let opts = Options {
        artifacts: ArtifactCheck::Skip,
    };
    let mut heads = Vec::new();
    let mut refused = false;
    for sink in settings::sinks(&config)? {
        let report = catalog::verify(sink.as_ref(), &opts, Some(&log))
            .with_context(|| format!("reading the catalog of sink {}", sink.name()))?;
        if !report.ok() {
            refused = true;
            if let Some(head) = &report.head_key {
                eprintln!(
                    "error: sink {}: refusing to anchor head {head}: the catalog does not verify",
                    report.sink
                );
            }
            for p in &report.problems {
                eprintln!("error: sink {}: {p}", report.sink);
            }
            continue;
        }
        match report.head {
            Some(h) => heads.push((report.sink, h)),
            None => eprintln!(
                "note: sink {} has no manifests yet; nothing to anchor",
                report.sink
            ),
        }
    }
    if refused {
        eprintln!(
            "error: refusing to anchor a catalog with problems; nothing was appended (see `sqlite-backup verify --catalog`)"
        );
        return Ok(Exit::Failed);
    }
    if heads.is_empty() {
        eprintln!("error: no catalog to anchor yet: run a backup first");
        return Ok(Exit::Failed);
    }
    let lines = anchor::append(&args.append, &heads, jiff::Timestamp::now())
        .with_context(|| format!("appending to {}", args.append.display()))?;
    for l in &lines {
        outln!("{l}");
    }
    eprintln!(
        "Appended {} line(s) to {}. Keep that file away from the backups.",
        lines.len(),
        args.append.display()
    );
    Ok(Exit::Ok)
}

fn read_anchor_file(path: &Path, may_be_missing: bool) -> Result<AnchorLog> {
    match AnchorLog::read(path) {
        Ok(log) => Ok(log),
        Err(e) if may_be_missing && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(AnchorLog::default())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(UsageError(format!(
            "anchor file {} does not exist (create it with `sqlite-backup catalog anchor --append {}`)",
            path.display(),
            path.display()
        ))
        .into()),
        Err(e) => Err(e).with_context(|| format!("reading anchor file {}", path.display())),
    }
}

/// `verify --catalog [--anchor FILE] [--deep] [--json]`.
pub fn verify(cli: &Cli, args: &VerifyArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let log = match &args.anchor {
        Some(path) => Some(read_anchor_file(path, false)?),
        None => None,
    };
    let opts = Options {
        artifacts: if args.deep {
            ArtifactCheck::Deep
        } else {
            ArtifactCheck::Cheap
        },
    };
    let sinks = settings::sinks(&config)?;
    let mut results: Vec<(String, Result<Report, String>)> = Vec::new();
    for sink in &sinks {
        let r = catalog::verify(sink.as_ref(), &opts, log.as_ref()).map_err(|e| e.to_string());
        results.push((sink.name().to_string(), r));
    }
    let unknown: Vec<&str> = log
        .as_ref()
        .map(|l| {
            l.sinks()
                .into_iter()
                .filter(|s| !sinks.iter().any(|k| k.name() == *s))
                .collect()
        })
        .unwrap_or_default();
    let bad_lines = log.as_ref().map(|l| l.bad_lines.as_slice()).unwrap_or(&[]);
    let ok = bad_lines.is_empty()
        && results
            .iter()
            .all(|(_, r)| r.as_ref().is_ok_and(Report::ok));

    if args.json {
        print_json(&results, ok, opts.artifacts, args, &unknown, bad_lines)?;
        return Ok(if ok { Exit::Ok } else { Exit::Failed });
    }
    print_reports(&results, opts.artifacts, args);
    if let Some(path) = &args.anchor {
        print_anchor_notes(path, bad_lines, &unknown);
    }
    outln!(
        "\n{}",
        if ok {
            "Catalog ok."
        } else {
            "Catalog NOT ok: see the problems above."
        }
    );
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

type SinkResult = (String, Result<Report, String>);

fn print_json(
    results: &[SinkResult],
    ok: bool,
    artifacts: ArtifactCheck,
    args: &VerifyArgs,
    unknown: &[&str],
    bad_lines: &[BadLine],
) -> Result<()> {
    {
        let sinks: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, r)| match r {
                Ok(report) => serde_json::json!({"ok": report.ok(), "report": report}),
                Err(e) => serde_json::json!({"ok": false, "sink": name, "error": e}),
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": ok,
                "artifact_check": artifacts,
                "anchor_file": args.anchor.as_ref().map(|p| serde_json::json!({
                    "path": p.display().to_string(),
                    "bad_lines": bad_lines,
                    "unknown_sinks": unknown,
                })),
                "sinks": sinks,
            }))?
        );
    }
    Ok(())
}

/// The table of sinks, then each sink's problems.
fn print_reports(results: &[SinkResult], artifacts: ArtifactCheck, args: &VerifyArgs) {
    outln!(
        "Catalog check: hash chain{}{}",
        match artifacts {
            ArtifactCheck::Deep => ", every artifact re-hashed (--deep)",
            _ => ", artifacts exist with their recorded size (--deep re-hashes them)",
        },
        match &args.anchor {
            Some(p) => format!(", heads against {}", p.display()),
            None => ", no anchor file (--anchor FILE)".into(),
        }
    );
    let mut t = Table::new(&[
        "SINK",
        "MANIFESTS",
        "CHAIN",
        "ARTIFACTS",
        "PRUNED",
        "HEAD",
        "ANCHOR",
        "RESULT",
    ]);
    for (name, r) in results {
        match r {
            Ok(r) => t.row(vec![
                name.clone(),
                r.manifests.to_string(),
                r.chain.to_string(),
                match artifacts {
                    ArtifactCheck::Deep => format!("{} ({})", r.artifacts, size(r.hashed_bytes)),
                    _ => r.artifacts.to_string(),
                },
                r.pruned.to_string(),
                r.head
                    .as_deref()
                    .map(|h| format!("{}…", prefix(h, 16)))
                    .unwrap_or_else(|| "-".into()),
                r.anchor
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "-".into()),
                if r.ok() {
                    "ok".into()
                } else {
                    format!("{} PROBLEM(S)", r.problems.len())
                },
            ]),
            Err(_) => t.row(vec![
                name.clone(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "UNREADABLE".into(),
            ]),
        }
    }
    out!("{t}");
    for (name, r) in results {
        if let Ok(Report {
            copy_of: Some(origin),
            ..
        }) = r
        {
            outln!(
                "Sink {name} holds a copy of sink {}'s catalog (field `sink` of its first manifest): manifests recording {0} are its own.",
                shown(origin)
            );
        }
    }
    for (name, r) in results {
        match r {
            Ok(r) if !r.ok() => {
                outln!("\nSink {name} ({}):", r.location);
                for p in &r.problems {
                    outln!("  - {p}");
                }
            }
            Ok(_) => {}
            Err(e) => outln!("\nSink {name}: cannot read the catalog: {e}"),
        }
    }
}

fn print_anchor_notes(path: &Path, bad_lines: &[BadLine], unknown: &[&str]) {
    for b in bad_lines {
        outln!(
            "\nAnchor file {} line {}: {} ({:?})",
            path.display(),
            b.line,
            b.reason,
            b.text
        );
    }
    for s in unknown {
        outln!(
            "\nNote: anchor file {} names sink {s:?}, which is not configured.",
            path.display()
        );
    }
}
