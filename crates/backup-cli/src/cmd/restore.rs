//! `sqlite-backup restore`: resolve flags + config into a restore plan, print
//! each step as it happens and a summary. The work is `backup_core::restore`.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use backup_config::Config;
use backup_core::Backups;
use backup_core::restore::{
    self, Candidate, Observer, Plan, Request, RestoreError, Selector, Step,
};
use backup_core::sink::Sink;
use backup_core::source::{Scope, Source};
use backup_core::verify::ArtifactReport;
use backup_core::{duration, inuse};
use jiff::Timestamp;

use crate::Exit;
use crate::args::{Cli, RestoreArgs};
use crate::output::{age, size, time};
use crate::settings::{self, UsageError};

pub fn run(cli: &Cli, args: &RestoreArgs) -> Result<Exit> {
    if args.json {
        crate::output::json_owns_stdout();
    }
    let config = settings::load_config(&cli.config)?;
    let Planned {
        plan,
        backups,
        database_post_restore,
    } = plan_restore(cli, args, &config)?;
    let refs: Vec<&dyn Sink> = backups.sinks().collect();
    let printer = Printer {
        hot_days: config.retention.hot_days,
        now: Timestamp::now(),
        total: plan.candidates.len(),
    };
    print_plan(
        &plan,
        &printer,
        args.dry_run,
        database_post_restore.as_deref(),
    );
    let started = Instant::now();

    if args.dry_run {
        return dry_run(
            &plan,
            &refs,
            &printer,
            database_post_restore.as_deref(),
            args.json,
        );
    }

    let outcome = match restore::execute(&plan, &refs, &printer) {
        Ok(o) => o,
        Err(e) => return fail(e, args.json.then_some(&plan)),
    };
    if let Some(p) = &outcome.post_restore {
        match &p.error {
            None => outln!("post_restore: ok"),
            Some(e) => outln!("post_restore FAILED: {e}"),
        }
    }
    print_outcome(&plan, &outcome, &printer, started);
    if args.json {
        crate::output::json(&outcome_json(&plan, &outcome));
    }
    Ok(if outcome.ok() { Exit::Ok } else { Exit::Failed })
}

fn candidate_json(c: &Candidate) -> serde_json::Value {
    serde_json::json!({
        "run_id": c.listed.run_id,
        "sink": c.listed.sink,
        "key": c.listed.entry.key,
        "snapshot_at": c.listed.entry.snapshot_at,
        "tag": c.listed.entry.tag,
        "db_sha256": c.listed.entry.db_sha256,
    })
}

fn rejected_json(rejected: &[restore::Rejection]) -> Vec<serde_json::Value> {
    rejected
        .iter()
        .map(|r| {
            let mut c = candidate_json(&r.candidate);
            c["problems"] = serde_json::json!(r.problems);
            c
        })
        .collect()
}

/// `restore --json`: what was placed, what was rejected on the way, where
/// the previous database went.
fn outcome_json(plan: &Plan, outcome: &restore::Outcome) -> serde_json::Value {
    let secs = |d: std::time::Duration| d.as_secs_f64();
    serde_json::json!({
        "ok": outcome.ok(),
        "label": plan.label,
        "target": outcome.target,
        "restored": candidate_json(&outcome.restored),
        "rejected": rejected_json(&outcome.rejected),
        "previous_kept_at": outcome.broken,
        "side_files_moved": outcome.moved.iter().map(|(from, to)| serde_json::json!({"from": from, "to": to})).collect::<Vec<_>>(),
        "recheck_ok": outcome.recheck.ok(),
        "recheck_problems": outcome.recheck.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "post_restore": outcome.post_restore.as_ref().map(|p| serde_json::json!({"error": p.error.as_ref().map(|e| e.to_string())})),
        "forced_past": outcome.forced_past.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        "seconds": {
            "verify": secs(outcome.timings.verify),
            "place": secs(outcome.timings.place),
            "recheck": secs(outcome.timings.recheck),
            "post_restore": secs(outcome.timings.post_restore),
        },
    })
}

/// A restore resolved from flags and config.
struct Planned {
    plan: Plan,
    /// The sinks the plan reads.
    backups: Backups,
    /// The database's post-restore command, for printing.
    database_post_restore: Option<String>,
}

fn plan_restore(cli: &Cli, args: &RestoreArgs, config: &Config) -> Result<Planned> {
    let database = settings::select(config, std::slice::from_ref(&args.label))?.remove(0);
    let selector = selector(
        args.at.as_deref(),
        args.date.as_deref(),
        args.tag.as_deref(),
        args.id.as_deref(),
        Timestamp::now(),
    )
    .map_err(UsageError)?;
    let backups = settings::backups(config)?;
    let refs: Vec<&dyn Sink> = backups.sinks().collect();
    if let Some(from) = &args.from {
        restore::check_sink_name(from, &refs).map_err(|e| UsageError(e.to_string()))?;
    }
    let (catalog, problems) = backups.list();
    for p in &problems {
        tracing::warn!("catalog: {p}");
    }
    let database_post_restore = database.post_restore.clone();
    let post_restore = database_post_restore
        .clone()
        .map(|c| crate::shell::post_restore_hook(c, false));
    let request = Request {
        target: args
            .to
            .clone()
            .unwrap_or_else(|| database.database.path.clone()),
        database: database.database,
        selector,
        from: args.from.clone(),
        force: args.force,
        post_restore,
        identities: settings::identities(cli.identity.as_deref(), Some(config))?,
        source: args.source.clone().map_or(Scope::Own, Scope::Named),
    };
    let plan = restore::plan(&catalog, &request)?;
    Ok(Planned {
        plan,
        backups,
        database_post_restore,
    })
}

/// `--dry-run`: verify the candidates as a restore would, and say what it
/// would place and move, touching nothing.
fn dry_run(
    plan: &Plan,
    refs: &[&dyn Sink],
    printer: &Printer,
    database_post_restore: Option<&str>,
    json: bool,
) -> Result<Exit> {
    if plan.refused() {
        outln!("A restore would be REFUSED now: the database is in use (see above).");
    }
    match restore::dry_run(plan, refs, printer) {
        Ok(d) => {
            outln!(
                "Dry run: candidates were downloaded and verified in {} (now removed); \
                 nothing beside {} was touched.",
                d.scratch_dir.display(),
                plan.target.display()
            );
            let c = &plan.candidates[d.chosen];
            outln!(
                "A restore would place snapshot {} ({}, taken {}){}.",
                c.listed.run_id,
                c.listed.entry.key,
                time(c.listed.entry.snapshot_at),
                if d.rejected.is_empty() {
                    String::new()
                } else {
                    format!(" after rejecting {} newer candidate(s)", d.rejected.len())
                }
            );
            print_moves(plan, database_post_restore);
            if json {
                crate::output::json(&serde_json::json!({
                    "dry_run": true,
                    "ok": !plan.refused(),
                    "label": plan.label,
                    "target": plan.target,
                    "refused_in_use": plan.refused(),
                    "would_restore": candidate_json(c),
                    "rejected": rejected_json(&d.rejected),
                }));
            }
            Ok(if plan.refused() {
                Exit::Failed
            } else {
                Exit::Ok
            })
        }
        Err(e) => fail(e, json.then_some(plan)),
    }
}

/// The summary after a restore: what was placed, how long each phase took,
/// what was lost or forced, and how to swap back.
fn print_outcome(plan: &Plan, outcome: &restore::Outcome, printer: &Printer, started: Instant) {
    let c = &outcome.restored;
    outln!();
    outln!(
        "{} {} from snapshot {} (sink {}, {}, taken {}, {} old) in {}.",
        if outcome.ok() {
            "Restored"
        } else {
            "Restored, WITH PROBLEMS,"
        },
        plan.label,
        c.listed.run_id,
        c.listed.sink,
        printer.tier(c),
        time(c.listed.entry.snapshot_at),
        age(c.listed.entry.snapshot_at, printer.now),
        duration::human(started.elapsed()),
    );
    outln!(
        "  timings: verify {}, place {}, re-check {}{}",
        duration::human(outcome.timings.verify),
        duration::human(outcome.timings.place),
        duration::human(outcome.timings.recheck),
        if outcome.post_restore.is_some() {
            format!(
                ", post_restore {}",
                duration::human(outcome.timings.post_restore)
            )
        } else {
            String::new()
        }
    );
    if let Some(loss) = outcome.total_loss(plan) {
        outln!(
            "  walked back {} candidate(s) past the newest one: {loss}",
            outcome.rejected.len()
        );
    }
    if !outcome.forced_past.is_empty() {
        outln!(
            "  WARNING: forced past {} process(es) still using the old file; restart them so they open the restored one",
            outcome.forced_past.len()
        );
    }
    if let Some(b) = &outcome.broken {
        outln!("  previous database kept at {}", b.display());
        print_swap_back(outcome, b);
    }
    if !outcome.recheck.ok() {
        for p in &outcome.recheck.problems {
            outln!("  re-check FAILED: {p}");
        }
    }
}

/// The complete swap-back, one shell command a line: the kept database
/// goes back **with** the side files moved aside with it (its `-wal` holds
/// commits not yet in the main file; leaving it behind loses them), after
/// the restored database's own side files are removed (SQLite would replay
/// a foreign `-wal` into the old file).
fn print_swap_back(outcome: &restore::Outcome, broken: &Path) {
    use std::io::Write;
    let target = outcome.target.as_path();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut rm = b"rm -f".to_vec();
    for side in &inuse::family(target)[1..] {
        rm.push(b' ');
        rm.extend(sh_quote(side));
    }
    lines.push(rm);
    let mv =
        |from: &Path, to: &Path| [b"mv ".as_slice(), &sh_quote(from), b" ", &sh_quote(to)].concat();
    lines.push(mv(broken, target));
    for (side, kept) in &outcome.moved {
        lines.push(mv(kept, side));
    }
    outln!("  to swap back, with the application stopped, run:");
    // Bytes, not text (paths need not be UTF-8), where `out!` writes.
    let mut out: Box<dyn Write> = match crate::output::human_on_stderr() {
        true => Box::new(std::io::stderr().lock()),
        false => Box::new(std::io::stdout().lock()),
    };
    for l in lines {
        let _ = out.write_all(b"    ");
        let _ = out.write_all(&l);
        let _ = out.write_all(b"\n");
    }
}

/// `p` quoted for a POSIX shell, byte for byte (non-UTF-8 names included).
fn sh_quote(p: &Path) -> Vec<u8> {
    let bytes = p.as_os_str().as_encoded_bytes();
    let mut out = vec![b'\''];
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// A restore that placed nothing; with `--json` (its plan given), the
/// failure as JSON on stdout too.
fn fail(e: RestoreError, json: Option<&Plan>) -> Result<Exit> {
    if let RestoreError::NonePassed { rejected, .. } = &e {
        outln!(
            "No candidate passed ({} tried); nothing was changed.",
            rejected.len()
        );
    }
    if let Some(plan) = json {
        let rejected = match &e {
            RestoreError::NonePassed { rejected, .. } => rejected_json(rejected),
            _ => Vec::new(),
        };
        crate::output::json(&serde_json::json!({
            "ok": false,
            "label": plan.label,
            "target": plan.target,
            "restored": null,
            "error": e.to_string(),
            "rejected": rejected,
        }));
    }
    // The wrong key is a bad invocation (exit 2); no key at all, like a
    // failed restore, exits 1 naming what is missing.
    if let RestoreError::WrongIdentity { .. } = &e {
        return Err(UsageError(e.to_string()).into());
    }
    Err(e.into())
}

struct Printer {
    hot_days: u32,
    now: Timestamp,
    total: usize,
}

impl Printer {
    fn tier(&self, c: &Candidate) -> String {
        super::list::tier(&c.listed, self.hot_days, self.now)
    }

    fn describe(&self, c: &Candidate) -> String {
        format!(
            "{} {} {:<5} {:<6} {:<10} {:>9}  {}",
            c.listed.run_id,
            time(c.listed.entry.snapshot_at),
            self.tier(c),
            c.listed.sink,
            c.listed.entry.tag.as_deref().unwrap_or("-"),
            size(c.listed.entry.size),
            c.listed.entry.key
        )
    }
}

fn passed(report: &ArtifactReport) -> String {
    let mut parts = vec![
        "sha256 matches sidecar and manifest".to_string(),
        "decompressed".to_string(),
        "integrity_check ok".to_string(),
        "foreign_key_check empty".to_string(),
    ];
    if let Some(f) = &report.db.facts
        && !f.row_counts.is_empty()
    {
        parts.push(format!(
            "required tables present ({})",
            f.row_counts
                .iter()
                .map(|(t, n)| format!("{t} {n} rows"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    parts.join(", ")
}

impl Observer for Printer {
    fn step(&self, step: &Step<'_>) {
        match step {
            Step::CleanedLeftover { path } => {
                outln!(
                    "Removed a leftover of an interrupted restore: {}",
                    path.display()
                )
            }
            Step::InUse { holders, forced } => {
                for h in *holders {
                    if *forced {
                        tracing::warn!("--force: restoring although {h}");
                    }
                    outln!("In use: {h}");
                }
            }
            Step::Verifying {
                index,
                candidate,
                into,
            } => outln!(
                "[{}/{}] verifying {} (sink {}, taken {}) into {}",
                index + 1,
                self.total,
                candidate.listed.entry.key,
                candidate.listed.sink,
                time(candidate.listed.entry.snapshot_at),
                into.display()
            ),
            Step::Rejected { problems, .. } => {
                for p in *problems {
                    outln!("      REJECTED: {p}");
                }
            }
            Step::WalkBack { to } => outln!(
                "      walking back to {} (sink {}, {}): {}",
                to.listed.run_id,
                to.listed.sink,
                self.tier(to),
                to.loss.as_ref().map(|l| l.to_string()).unwrap_or_default()
            ),
            Step::Accepted { report, .. } => outln!("      ok: {}", passed(report)),
            Step::KeptAside { from, to, how } => outln!(
                "Kept the live database aside: {} -> {} ({how})",
                from.display(),
                to.display()
            ),
            Step::SideFileMoved { from, to } => {
                outln!("Moved aside {} -> {}", from.display(), to.display())
            }
            Step::SideFileRemoved { path } => outln!("Removed {}", path.display()),
            Step::Placed { path } => outln!(
                "Placed the verified snapshot at {} (fsync file, rename, fsync folder)",
                path.display()
            ),
            Step::Rechecked { report } => {
                if report.ok() {
                    outln!("Re-checked the placed file: integrity_check ok");
                } else {
                    outln!("Re-check of the placed file FAILED");
                }
            }
            Step::PostRestoreStarted => outln!("Running post_restore…"),
        }
    }
}

fn print_plan(plan: &Plan, p: &Printer, dry_run: bool, post_restore_command: Option<&str>) {
    outln!(
        "{}restore {} -> {}{}",
        if dry_run { "Dry run: " } else { "" },
        plan.label,
        plan.target.display(),
        if plan.target_exists {
            ""
        } else {
            " (no database there yet)"
        }
    );
    if let Some(link) = &plan.link {
        outln!(
            "  {} is a symlink: restoring the file it points to, {} (the link is kept)",
            link.display(),
            plan.target.display()
        );
    }
    outln!(
        "Selection: {}; {} candidate(s), tried newest first:",
        plan.selector,
        plan.candidates.len()
    );
    let own = &plan.source;
    let mut theirs: Vec<String> = plan
        .candidates
        .iter()
        .filter(|c| !own.owns(&c.listed.entry))
        .map(|c| Source::of(&c.listed.entry).to_string())
        .collect();
    theirs.dedup();
    for source in theirs {
        outln!(
            "Source: {source}: ANOTHER machine's or file's database (this config's is {own}), \
             chosen with --source"
        );
    }
    for (i, c) in plan.candidates.iter().enumerate() {
        outln!("  {}. {}", i + 1, p.describe(c));
        if let Some(loss) = &c.loss {
            outln!("     step back from {}: {loss}", loss.from_run);
        }
    }
    let mut checks = vec![
        "sidecar + manifest sha256".to_string(),
        "decompress".to_string(),
        "integrity_check = ok".to_string(),
        "foreign_key_check empty".to_string(),
    ];
    if !plan.checks.required_tables.is_empty() {
        checks.push(format!(
            "required tables {}",
            plan.checks.required_tables.join(", ")
        ));
    }
    checks.extend(plan.checks.queries.iter().map(|q| format!("check `{q}`")));
    outln!("Checks: {}", checks.join("; "));
    if plan.holders.is_empty() {
        outln!("In use: no other process has it open or locked");
    } else {
        for h in &plan.holders {
            outln!(
                "In use: {h}{}",
                if plan.force {
                    " (--force: restoring anyway)"
                } else {
                    ""
                }
            );
        }
    }
    if dry_run {
        return;
    }
    print_moves(plan, post_restore_command);
}

fn print_moves(plan: &Plan, post_restore_command: Option<&str>) {
    outln!("Moves:");
    outln!(
        "  decompress + verify into {} (beside the target)",
        plan.scratch.display()
    );
    if let Some(b) = &plan.broken {
        if plan.target_exists {
            outln!(
                "  keep {} as {} (hard link; never deleted)",
                plan.target.display(),
                b.display()
            );
        }
        for s in &plan.side_files {
            let name = s.to_string_lossy();
            if name.ends_with("-shm") {
                outln!("  remove {} (rebuilt by SQLite)", s.display());
            } else {
                let suffix = if name.ends_with("-wal") {
                    "-wal"
                } else {
                    "-journal"
                };
                outln!("  move {} -> {}{suffix}", s.display(), b.display());
            }
        }
    }
    outln!(
        "  rename {} -> {} (fsync file, rename, fsync folder), then integrity_check it",
        plan.scratch.display(),
        plan.target.display()
    );
    if let Some(cmd) = post_restore_command {
        outln!("  run post_restore: sh -c {cmd:?}");
    }
}

/// The snapshot the mutually exclusive flags ask for; `Err` is a usage
/// error's message. `--at` takes `latest`, an RFC 3339 time, or an age
/// (`15m`, `2h`, `1d 6h`: that long before `now`).
fn selector(
    at: Option<&str>,
    date: Option<&str>,
    tag: Option<&str>,
    id: Option<&str>,
    now: Timestamp,
) -> Result<Selector, String> {
    match (at, date, tag, id) {
        (Some("latest"), None, None, None) | (None, None, None, None) => Ok(Selector::Latest),
        (Some(a), None, None, None) => point_in_time(a, now).map(Selector::At),
        (None, Some(d), None, None) => d
            .parse::<jiff::civil::Date>()
            .map(Selector::Date)
            .map_err(|e| format!("--date {d:?} is not a YYYY-MM-DD date: {e}")),
        (None, None, Some(t), None) => Ok(Selector::Tag(t.to_string())),
        (None, None, None, Some(i)) => Ok(Selector::Id(i.to_string())),
        _ => Err("choose one of --at, --date, --tag, --id".into()),
    }
}

fn point_in_time(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(to_end_of_second(text, t));
    }
    // "2h" and "2h ago" both mean two hours before now; a day is 24 hours.
    let age =
        backup_config::parse_duration(text.trim().trim_end_matches("ago")).ok_or_else(|| {
            format!(
                "--at {text:?}: expected `latest`, an RFC 3339 time (2026-12-01T14:30:00Z) \
                 or an age such as 15m, 2h or 1d"
            )
        })?;
    now.checked_sub(age)
        .map_err(|e| format!("--at {text:?}: {e}"))
}

/// A time typed to the second, as `list` prints TAKEN, stands for that whole
/// second: pasting `2026-12-04 13:48:01Z` selects the snapshot `list` showed
/// on that line, not the one before it (`snapshot_at` has nanoseconds). A
/// time with a fraction is taken as it is.
fn to_end_of_second(text: &str, t: Timestamp) -> Timestamp {
    // The fraction is the only part of an RFC 3339 time after a `.` or `,`.
    if text.contains(['.', ',']) || t.subsec_nanosecond() != 0 {
        return t;
    }
    t.checked_add(jiff::SignedDuration::from_nanos(999_999_999))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_to_the_second_covers_that_second_and_a_fraction_is_exact() {
        let now: Timestamp = "2026-12-04T14:00:00Z".parse().unwrap();
        let end: Timestamp = "2026-12-04T13:48:01.999999999Z".parse().unwrap();
        // As `list` prints TAKEN, and as RFC 3339.
        for typed in [
            "2026-12-04 13:48:01Z",
            "2026-12-04T13:48:01Z",
            "2026-12-04T14:48:01+01:00",
        ] {
            assert_eq!(point_in_time(typed, now), Ok(end), "{typed}");
        }
        for exact in ["2026-12-04T13:48:01.5Z", "2026-12-04T13:48:01.000Z"] {
            assert_eq!(
                point_in_time(exact, now),
                Ok(exact.parse().unwrap()),
                "{exact}"
            );
        }
        // An age is measured from now, to the nanosecond.
        assert_eq!(
            point_in_time("1h", now),
            Ok("2026-12-04T13:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn at_takes_latest_a_time_or_an_age() {
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let at = |a: &str| selector(Some(a), None, None, None, now);
        assert_eq!(at("latest"), Ok(Selector::Latest));
        // To the second: the whole second (see to_end_of_second).
        assert_eq!(
            at("2026-11-30T08:00:00Z"),
            Ok(Selector::At(
                "2026-11-30T08:00:00.999999999Z".parse().unwrap()
            ))
        );
        assert_eq!(
            at("15m"),
            Ok(Selector::At("2026-12-01T11:45:00Z".parse().unwrap()))
        );
        assert_eq!(
            at("2h ago"),
            Ok(Selector::At("2026-12-01T10:00:00Z".parse().unwrap()))
        );
        assert_eq!(
            at("1d"),
            Ok(Selector::At("2026-11-30T12:00:00Z".parse().unwrap()))
        );
        assert!(at("yesterday").is_err());
        assert!(selector(None, Some("2026-13-40"), None, None, now).is_err());
        assert!(selector(Some("latest"), None, Some("r1"), None, now).is_err());
    }
}
