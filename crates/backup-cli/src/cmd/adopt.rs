//! `sqlite-backup catalog adopt`: record the backups other tools made, after
//! checking each (see [`backup_core::adopt`]).

use anyhow::{Context, Result};
use backup_core::adopt::{self, Found, Options, Outcome, Pattern};
use backup_core::{CheckLevel, Database};

use crate::Exit;
use crate::args::{AdoptArgs, AdoptLayout, Cli};
use crate::output::{Table, time};
use crate::settings::{self, UsageError};

pub fn run(cli: &Cli, args: &AdoptArgs) -> Result<Exit> {
    let config = settings::load_config(&cli.config)?;
    let databases: Vec<Database> = config
        .databases
        .iter()
        .map(|d| d.database.clone())
        .collect();
    if let Some(l) = &args.label
        && !databases.iter().any(|d| &d.label == l)
    {
        return Err(UsageError(format!(
            "--label {l}: the config has no [[database]] with that label"
        ))
        .into());
    }
    let labels: Vec<&str> = databases.iter().map(|d| d.label.as_str()).collect();
    let patterns = patterns(args, &labels)?;
    let mut sinks = settings::sinks(&config)?;
    if let Some(name) = &args.sink {
        sinks.retain(|s| s.name() == name);
        if sinks.is_empty() {
            return Err(
                UsageError(format!("--sink {name}: no configured sink has that name")).into(),
            );
        }
    }
    let options = Options {
        patterns,
        databases: &databases,
        label: args.label.as_deref(),
        level: CheckLevel::IntegrityCheck,
        scratch: settings::scratch_dir(&config),
    };
    // Two adoptions at once would both record what they found.
    let _lock = if args.dry_run {
        None
    } else {
        Some(crate::lock::take_run_lock(&config)?)
    };
    let mut rejected = 0;
    let mut report = Vec::new();
    for sink in &sinks {
        let name = sink.name();
        let mut found = adopt::examine(sink.as_ref(), &options)
            .with_context(|| format!("looking for backups to adopt in sink {name}"))?;
        rejected += found
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Reject(_)))
            .count();
        let manifest = if args.dry_run {
            None
        } else {
            adopt::record(sink.as_ref(), &mut found, jiff::Timestamp::now())
                .with_context(|| format!("recording the adopted backups in sink {name}"))?
                .map(|a| a.run_id)
        };
        if !args.json {
            print(name, &found, args.dry_run, manifest.as_deref());
        }
        report.push(serde_json::json!({
            "sink": name,
            "manifest": manifest,
            "found": found.iter().map(to_json).collect::<Vec<_>>(),
        }));
    }
    if args.json {
        crate::output::json(&serde_json::json!({ "dry_run": args.dry_run, "sinks": report }));
    }
    Ok(if rejected > 0 { Exit::Failed } else { Exit::Ok })
}

fn patterns(args: &AdoptArgs, labels: &[&str]) -> Result<Vec<Pattern>> {
    let mut templates: Vec<&str> = Vec::new();
    let layouts = if args.layout.is_empty() && args.pattern.is_empty() {
        vec![AdoptLayout::AzureScript, AdoptLayout::Colibri]
    } else {
        args.layout.clone()
    };
    for layout in layouts {
        templates.extend(match layout {
            AdoptLayout::AzureScript => adopt::AZURE_SCRIPT,
            AdoptLayout::Colibri => adopt::COLIBRI,
        });
    }
    templates.extend(args.pattern.iter().map(String::as_str));
    templates
        .into_iter()
        .map(|t| Pattern::new(t, labels).map_err(|e| UsageError(e.to_string()).into()))
        .collect()
}

fn verdict(outcome: &Outcome, dry_run: bool) -> (&'static str, String) {
    match outcome {
        Outcome::Adopt(e) => (
            if dry_run { "would adopt" } else { "adopted" },
            if e.adopted.as_ref().is_some_and(|a| a.wrote_sidecar) {
                "no sidecar: one is written beside it".into()
            } else {
                String::new()
            },
        ),
        Outcome::Reject(why) => ("REJECTED", why.clone()),
        Outcome::Skip(why) => ("skipped", why.clone()),
        Outcome::Known => ("known", "already in the catalog".into()),
    }
}

fn print(sink: &str, found: &[Found], dry_run: bool, manifest: Option<&str>) {
    let shown: Vec<&Found> = found
        .iter()
        .filter(|f| f.outcome != Outcome::Known)
        .collect();
    if !shown.is_empty() {
        let mut t = Table::new(&[
            "RESULT",
            "LABEL",
            "TAG",
            "TIME (UTC)",
            "TIME FROM",
            "KEY",
            "DETAIL",
        ]);
        for f in &shown {
            let (result, detail) = verdict(&f.outcome, dry_run);
            t.row(vec![
                result.to_string(),
                f.label.clone().unwrap_or_else(|| "-".into()),
                f.tag.clone().unwrap_or_else(|| "-".into()),
                f.time.map_or("-".into(), |(at, _)| time(at)),
                f.time
                    .map_or("-".into(), |(_, from)| from.describe().into()),
                f.key.clone(),
                detail,
            ]);
        }
        out!("{t}");
    }
    let count = |what: fn(&Outcome) -> bool| found.iter().filter(|f| what(&f.outcome)).count();
    let adopted = count(|o| matches!(o, Outcome::Adopt(_)));
    let rejected = count(|o| matches!(o, Outcome::Reject(_)));
    let skipped = count(|o| matches!(o, Outcome::Skip(_)));
    let already = count(|o| *o == Outcome::Known);
    let verb = if dry_run { "would adopt" } else { "adopted" };
    outln!(
        "Sink {sink}: {verb} {adopted}, rejected {rejected}, skipped {skipped}, already in the catalog {already}{}",
        manifest.map_or(String::new(), |m| format!(" (manifest {m})"))
    );
}

fn to_json(f: &Found) -> serde_json::Value {
    let (result, reason) = match &f.outcome {
        Outcome::Adopt(_) => ("adopt", None),
        Outcome::Reject(why) => ("reject", Some(why.as_str())),
        Outcome::Skip(why) => ("skip", Some(why.as_str())),
        Outcome::Known => ("skip", Some("already in the catalog")),
    };
    serde_json::json!({
        "key": f.key,
        "pattern": f.pattern,
        "label": f.label,
        "tag": f.tag,
        "snapshot_at": f.time.map(|(at, _)| at.to_string()),
        "time_from": f.time.map(|(_, from)| from),
        "result": result,
        "reason": reason,
    })
}
