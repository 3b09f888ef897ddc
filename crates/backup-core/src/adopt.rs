//! Adopting backups that other tools made: `catalog adopt` finds them in a
//! sink by their names, checks each as `verify` would, and records the good
//! ones in the catalog where they lie, so that `list`, `restore`, `drill`,
//! `verify` and `prune` treat them as their own.
//!
//! Two layouts are built in, those of the operator runbooks this tool
//! replaces, and any other naming can be given as a template in the syntax
//! of artifact names ([`crate::naming`]):
//!
//! | layout | template |
//! |---|---|
//! | [`AZURE_SCRIPT`] | `sqlite/{date}/{label}{ext}` with a `.sha256` sidecar (`{date}/{label}{ext}` below the default prefix `sqlite`) |
//! | [`COLIBRI`] | `{label}-{tag}-{yyyymmdd}{ext}` and `{label}-{yyyymmdd}{ext}` |
//!
//! Adopting never moves, renames, rewrites or re-uploads an object. It
//! writes a `sha256sum` sidecar beside a backup that has none (restore and
//! verify check one against the manifest, as for every backup), and one
//! manifest per sink.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use regex::Regex;

use crate::catalog::append::{self, AppendError, Appended, Draft};
use crate::compress::{Compression, Format};
use crate::database::{CheckLevel, Database};
use crate::digest::Sidecar;
use crate::manifest::{self, Entry};
pub use crate::manifest::{Adopted, TimeFrom};
use crate::naming;
use crate::sink::{Sink, SinkError};
use crate::verify::{self, Checks, Expected};

/// The 4-hourly Azure script: one blob per database and day, overwritten
/// every run, with a `.sha256` sidecar, under `sqlite/` in the container;
/// keys are relative to the sink's prefix, whose default is `sqlite`.
pub const AZURE_SCRIPT: &[&str] = &["{date}/{label}{ext}", "sqlite/{date}/{label}{ext}"];
/// The Colibri runbook's copies in `data/backups`, tagged with the round
/// (`r75`) or the event (`premigrate`), or not at all.
pub const COLIBRI: &[&str] = &["{label}-{tag}-{yyyymmdd}{ext}", "{label}-{yyyymmdd}{ext}"];

/// A template that cannot find backups.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// Not a template ([`naming`]'s syntax).
    #[error("pattern {pattern:?}: {problem}")]
    Bad {
        /// As given.
        pattern: String,
        /// What is wrong.
        problem: String,
    },
}

/// A name template compiled to match keys: once with the configured labels
/// (so that `mission-control-20260416.db` is `mission-control`, not
/// `mission` tagged `control`), once with any label, to name the backups of
/// databases the config does not have.
#[derive(Debug, Clone)]
pub struct Pattern {
    template: String,
    configured: Option<Regex>,
    any: Regex,
    /// Keys start with this (the text before the first placeholder): only
    /// that part of the sink is listed.
    prefix: String,
}

/// What a key's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The label in the name (or the one given, for a template without).
    pub label: Option<String>,
    /// Whether the label is a configured one.
    pub configured: bool,
    /// The tag in the name.
    pub tag: Option<String>,
    /// The time the name gives, and how much of it.
    pub time: Option<(Timestamp, TimeFrom)>,
    /// Compression, from the extension.
    pub format: Format,
}

const WORDS: &str = "[a-z0-9]+(?:-[a-z0-9]+)*";

impl Pattern {
    /// Compile `template` for the configured `labels`.
    pub fn new(template: &str, labels: &[&str]) -> Result<Self, PatternError> {
        let bad = |problem: String| PatternError::Bad {
            pattern: template.to_string(),
            problem,
        };
        let mut known: Vec<String> = labels.iter().map(|l| regex::escape(l)).collect();
        // Longest first: the regex takes the first alternative that fits.
        known.sort_by_key(|l| std::cmp::Reverse(l.len()));
        let configured = if known.is_empty() {
            None
        } else {
            Some(compile(template, &format!("(?:{})", known.join("|"))).map_err(&bad)?)
        };
        let any = compile(template, WORDS).map_err(&bad)?;
        let prefix = template[..template.find('{').unwrap_or(template.len())].to_string();
        Ok(Pattern {
            template: template.to_string(),
            configured,
            any,
            prefix,
        })
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// What `key` says, when it has this pattern's form with a configured
    /// label (`configured`) or with any.
    fn parse(&self, key: &str, configured: bool) -> Option<Named> {
        let caps = if configured {
            self.configured.as_ref()?.captures(key)?
        } else {
            self.any.captures(key)?
        };
        let text = |name: &str| caps.name(name).map(|m| m.as_str());
        let format = match text("ext") {
            Some(ext) => Format::from_file_name(ext)?,
            None => Format::from_file_name(key)?,
        };
        let date = match (text("date"), text("ymd")) {
            (Some(d), _) => Some(d.parse::<Date>().ok()?),
            (None, Some(d)) => Some(Date::strptime("%Y%m%d", d).ok()?),
            (None, None) => None,
        };
        let time = match text("time") {
            Some(t) => Some(Time::strptime("%H%M%S", t).ok()?),
            None => None,
        };
        let from_run = text("run").and_then(manifest::run_started);
        let time = match (date, time, from_run) {
            (_, _, Some(at)) => Some((at, TimeFrom::Name)),
            (Some(d), Some(t), _) => Some((utc(d.to_datetime(t))?, TimeFrom::Name)),
            (Some(d), None, _) => Some((utc(d.to_datetime(Time::midnight()))?, TimeFrom::NameDate)),
            (None, _, _) => None,
        };
        Some(Named {
            label: text("label").map(str::to_string),
            configured: configured || text("label").is_none(),
            tag: text("tag").map(str::to_string),
            time,
            format,
        })
    }
}

/// The first of `patterns` that reads `key` with a configured label, else
/// the first that reads it with any: a configured database's name is never
/// read as another's with a tag.
pub fn name<'p>(patterns: &'p [Pattern], key: &str) -> Option<(&'p Pattern, Named)> {
    [true, false].into_iter().find_map(|configured| {
        patterns
            .iter()
            .find_map(|p| p.parse(key, configured).map(|n| (p, n)))
    })
}

fn utc(at: DateTime) -> Option<Timestamp> {
    jiff::tz::TimeZone::UTC.to_timestamp(at).ok()
}

/// The regex of `template`: placeholders become named groups, the rest is
/// literal; the whole key must match.
fn compile(template: &str, label: &str) -> Result<Regex, String> {
    let mut re = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        re.push_str(&regex::escape(&rest[..open]));
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or("has an unclosed `{`")?;
        let group = match &rest[open + 1..close] {
            "label" => format!("(?P<label>{label})"),
            "tag" => format!("(?P<tag>{WORDS})"),
            "date" => r"(?P<date>\d{4}-\d{2}-\d{2})".to_string(),
            "yyyymmdd" => r"(?P<ymd>\d{8})".to_string(),
            "time" => r"(?P<time>\d{6})".to_string(),
            "run" => r"(?P<run>\d{8}T\d{6}Z-[0-9a-f]{4})".to_string(),
            "ext" => r"(?P<ext>\.db(?:\.gz|\.zst)?)".to_string(),
            other => {
                return Err(format!(
                    "has an unknown placeholder {{{other}}}; known: {{label}} {{tag}} {{date}} \
                     {{yyyymmdd}} {{time}} {{run}} {{ext}}"
                ));
            }
        };
        re.push_str(&group);
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err("has a stray `}`".into());
    }
    re.push_str(&regex::escape(rest));
    re.push('$');
    Regex::new(&re).map_err(|e| match e {
        regex::Error::Syntax(s) if s.contains("duplicate") => {
            "uses a placeholder twice".to_string()
        }
        other => other.to_string(),
    })
}

/// How to look.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// The templates, tried in order; the first that fits a key names it.
    pub patterns: Vec<Pattern>,
    /// The configured databases: a name's label picks its database.
    pub databases: &'a [Database],
    /// Adopt names whose label is not configured (or that have none) as
    /// this database's.
    pub label: Option<&'a str>,
    /// The check each candidate must pass.
    pub level: CheckLevel,
    /// A folder for the decompressed copies that are checked (each removed
    /// after its check).
    pub scratch: PathBuf,
}

/// What became of one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Checked and ready to record (or recorded).
    Adopt(Box<Entry>),
    /// A backup of a configured database that failed a check: why.
    Reject(String),
    /// Already in the catalog: nothing to do.
    Known,
    /// Not taken: why (a label no database has, no label at all).
    Skip(String),
}

/// One key that has the form of a backup.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its key in the sink.
    pub key: String,
    /// The template that named it.
    pub pattern: String,
    /// The database it is a backup of, when one is known.
    pub label: Option<String>,
    /// The tag its name gives.
    pub tag: Option<String>,
    /// Its time and where that came from.
    pub time: Option<(Timestamp, TimeFrom)>,
    /// Adopted, rejected or skipped.
    pub outcome: Outcome,
}

/// Why a sink could not be searched or recorded into.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Its catalog does not read whole: what it holds is not known.
    #[error("the catalog of sink {sink} does not read whole ({problems}); run `verify --catalog`")]
    Catalog {
        /// Sink name.
        sink: String,
        /// What was wrong.
        problems: String,
    },
    /// The manifest did not go in.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The scratch folder.
    #[error("scratch folder {path}: {source}")]
    Scratch {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Names that are never backups themselves.
fn is_companion(key: &str) -> bool {
    key.starts_with(manifest::MANIFEST_DIR)
        || [".sha256", "-journal", "-wal", "-shm"]
            .iter()
            .any(|s| key.ends_with(s))
}

/// Find the backups in `sink` that `options` describe and check each; write
/// nothing. Keys the catalog already names are reported as skipped, so a
/// second adoption adopts nothing.
pub fn examine(sink: &dyn Sink, options: &Options<'_>) -> Result<Vec<Found>, AdoptError> {
    let known = known_keys(sink)?;
    let mut prefixes: Vec<&str> = options
        .patterns
        .iter()
        .map(|p| p.prefix.trim_end_matches('/'))
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    // A prefix inside another is listed with it.
    let mut keys: Vec<String> = Vec::new();
    for (i, prefix) in prefixes.iter().enumerate() {
        if prefixes[..i].iter().any(|p| prefix.starts_with(p)) {
            continue;
        }
        keys.extend(sink.list(folder_of(prefix))?);
    }
    keys.sort();
    keys.dedup();
    // Companions (sidecar, journal, WAL) are looked up here, not asked for.
    let listed: HashSet<&str> = keys.iter().map(String::as_str).collect();
    std::fs::create_dir_all(&options.scratch).map_err(|source| AdoptError::Scratch {
        path: options.scratch.display().to_string(),
        source,
    })?;
    let mut found = Vec::new();
    for key in keys.iter().filter(|k| !is_companion(k)) {
        let Some((pattern, named)) = name(&options.patterns, key) else {
            continue;
        };
        let database = resolve(&named, options);
        let label = database.map(|d| d.label.clone()).or(named.label.clone());
        let mut f = Found {
            key: key.to_string(),
            pattern: pattern.template.clone(),
            label,
            tag: named.tag.clone(),
            time: named.time,
            outcome: Outcome::Skip(String::new()),
        };
        f.outcome = if known.contains(key) {
            Outcome::Known
        } else if let Some(db) = database {
            if f.time.is_none() {
                f.time = sink.modified(key)?.map(|t| (t, TimeFrom::Modified));
            }
            match f.time {
                None => Outcome::Reject(
                    "its name has no date and the sink gives no modification time".into(),
                ),
                Some((at, time_from)) => {
                    let candidate = Candidate {
                        key,
                        named: &named,
                        db,
                        at,
                        time_from,
                    };
                    check(sink, &candidate, &listed, options)?
                }
            }
        } else {
            Outcome::Skip(match &named.label {
                Some(l) => format!(
                    "its name says database {l:?}, which the config does not have \
                     (give --label to adopt it as one that it has)"
                ),
                None => "its name has no label: give --label".into(),
            })
        };
        found.push(f);
    }
    Ok(found)
}

/// Every key the catalog of `sink` names.
fn known_keys(sink: &dyn Sink) -> Result<HashSet<String>, AdoptError> {
    let (listed, problems) = manifest::view::collect(&[sink]);
    if !problems.is_empty() {
        return Err(AdoptError::Catalog {
            sink: sink.name().to_string(),
            problems: problems.join("; "),
        });
    }
    Ok(Entry::objects_of(listed.iter().map(|l| &l.entry))
        .into_iter()
        .map(|n| n.key)
        .collect())
}

/// The prefix up to its last `/`: the folder to list.
fn folder_of(prefix: &str) -> &str {
    prefix.rfind('/').map_or("", |i| &prefix[..i])
}

fn resolve<'a>(named: &Named, options: &Options<'a>) -> Option<&'a Database> {
    let by_label = |l: &str| options.databases.iter().find(|d| d.label == l);
    match (&named.label, named.configured) {
        (Some(l), true) => by_label(l),
        _ => options.label.and_then(by_label),
    }
}

/// A key named as a backup of a configured database, with its time.
struct Candidate<'a> {
    key: &'a str,
    named: &'a Named,
    db: &'a Database,
    at: Timestamp,
    time_from: TimeFrom,
}

/// Check one candidate as `verify` checks a backup: the sidecar when there
/// is one, no hot journal or WAL beside a plain copy, a clean decompression,
/// and the database's checks.
fn check(
    sink: &dyn Sink,
    c: &Candidate<'_>,
    listed: &HashSet<&str>,
    options: &Options<'_>,
) -> Result<Outcome, AdoptError> {
    let (key, named, db) = (c.key, c.named, c.db);
    for (suffix, what) in [
        ("-journal", "a hot rollback journal"),
        ("-wal", "a write-ahead log"),
    ] {
        let beside = format!("{key}{suffix}");
        if !listed.contains(beside.as_str()) {
            continue;
        }
        if let Some(n) = sink.size(&beside)?.filter(|&n| n > 0) {
            return Ok(Outcome::Reject(format!(
                "{what} stands beside it ({beside}, {n} bytes): the copy may miss or half-hold \
                 changes; open it once with sqlite3 to settle it, then adopt again"
            )));
        }
    }
    let sidecar_key = naming::sidecar_key(key);
    let sidecar = match listed
        .contains(sidecar_key.as_str())
        .then(|| verify::read_sidecar(sink, &sidecar_key))
        .transpose()?
    {
        None => None,
        Some(Ok(s)) if s.file_name != naming::file_name(key) => {
            return Ok(Outcome::Reject(format!(
                "its sidecar {sidecar_key} names {:?}, not {:?}",
                s.file_name,
                naming::file_name(key)
            )));
        }
        Some(Ok(s)) => Some(s.sha256),
        Some(Err(p)) => return Ok(Outcome::Reject(p.to_string())),
    };
    let scratch = scratch_file(&options.scratch, key);
    let checks = Checks::for_database(db, options.level);
    let expected = Expected {
        sidecar_sha256: sidecar.clone(),
        ..Expected::default()
    };
    let report = verify::verify_stream(
        sink.get(key)?,
        &Compression::new(named.format),
        &expected,
        &scratch,
        &checks,
    );
    let _ = std::fs::remove_file(&scratch);
    let report = report.map_err(|source| AdoptError::Scratch {
        path: scratch.display().to_string(),
        source,
    })?;
    let problems: Vec<String> = report.all_problems().map(|p| p.to_string()).collect();
    if !problems.is_empty() {
        return Ok(Outcome::Reject(problems.join("; ")));
    }
    let facts = report.db.facts.unwrap_or_default();
    let source = crate::source::Source::local(db);
    Ok(Outcome::Adopt(Box::new(Entry {
        label: db.label.clone(),
        tag: named.tag.clone(),
        key: key.to_string(),
        sidecar_key,
        compression: named.format,
        size: report.size,
        sha256: report.sha256,
        db_size: report.db_size,
        db_sha256: report.db_sha256,
        page_size: facts.page_size,
        page_count: facts.page_count,
        schema_sha256: facts.schema_sha256,
        row_counts: facts.row_counts,
        snapshot_at: c.at,
        snapshot_ms: 0,
        verified_with: options.level,
        source: source.path,
        host: source.host,
        source_mode: None,
        encrypted_to: vec![],
        sealed: None,
        pages: None,
        adopted: Some(Adopted {
            time_from: c.time_from,
            wrote_sidecar: sidecar.is_none(),
        }),
    })))
}

fn scratch_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!(
        ".adopt-{}-{}",
        std::process::id(),
        naming::file_name(key)
    ))
}

/// Record what [`examine`] found adoptable in `sink`: a sidecar beside each
/// that had none, then one manifest naming them all. Nothing when there is
/// nothing to adopt. What the catalog names by now becomes
/// [`Outcome::Known`] in `found`.
pub fn record(
    sink: &dyn Sink,
    found: &mut [Found],
    now: Timestamp,
) -> Result<Option<Appended>, AdoptError> {
    if !found.iter().any(|f| matches!(f.outcome, Outcome::Adopt(_))) {
        return Ok(None);
    }
    // Checking took a while: another adoption (from another host sharing
    // the sink: the CLI holds the run lock against this host's) may have
    // recorded some of these meanwhile. What is left is the moment between
    // this read and the append.
    let known = known_keys(sink)?;
    let mut entries = Vec::new();
    for f in found.iter_mut() {
        if let Outcome::Adopt(e) = &f.outcome {
            if known.contains(&e.key) {
                f.outcome = Outcome::Known;
            } else {
                entries.push((**e).clone());
            }
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    for e in &entries {
        if e.adopted.as_ref().is_some_and(|a| a.wrote_sidecar) {
            let text = Sidecar::new(&e.sha256, naming::file_name(&e.key)).render();
            match sink.put_if_absent(&e.sidecar_key, text.as_bytes()) {
                Err(err) if !err.is_already_exists() => return Err(err.into()),
                _ => {}
            }
        }
    }
    let appended = append::append(
        sink,
        Draft {
            entries,
            ..Draft::new(manifest::new_run_id(now), now)
        },
    )?;
    Ok(Some(appended))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_azure_script_layout_names_label_and_day() {
        let p: Vec<Pattern> = AZURE_SCRIPT
            .iter()
            .map(|t| Pattern::new(t, &["mission-control", "alai"]).unwrap())
            .collect();
        let read = |key: &str| name(&p, key).map(|(_, n)| n);
        let n = read("sqlite/2026-05-05/mission-control.db.gz").unwrap();
        assert_eq!(n.label.as_deref(), Some("mission-control"));
        assert!(n.configured);
        assert_eq!(n.format, Format::Gzip);
        assert_eq!(
            n.time,
            Some((at("2026-05-05T00:00:00Z"), TimeFrom::NameDate))
        );
        let other = read("sqlite/2026-05-05/ledger.db.gz").unwrap();
        assert_eq!(
            (other.label.as_deref(), other.configured),
            (Some("ledger"), false)
        );
        assert_eq!(read("sqlite/2026-05-05/mission-control.db.gz.sha256"), None);
        assert_eq!(read("sqlite/2026-13-05/alai.db.gz"), None, "no such month");
        let n = read("2026-05-06/alai.db.gz").unwrap();
        assert_eq!(
            n.time,
            Some((at("2026-05-06T00:00:00Z"), TimeFrom::NameDate))
        );
        assert_eq!(
            (p[0].prefix.as_str(), p[1].prefix.as_str()),
            ("", "sqlite/")
        );
    }

    #[test]
    fn colibri_names_keep_hyphenated_labels_whole() {
        let labels = ["colibri", "mission-control"];
        let p: Vec<Pattern> = COLIBRI
            .iter()
            .map(|t| Pattern::new(t, &labels).unwrap())
            .collect();
        let read = |key: &str| name(&p, key).map(|(_, n)| n).unwrap();
        let n = read("colibri-r75-20260416.db");
        assert_eq!(
            (n.label.as_deref(), n.tag.as_deref()),
            (Some("colibri"), Some("r75"))
        );
        assert_eq!(n.format, Format::None);
        let n = read("mission-control-premigrate-20260416.db");
        assert_eq!(n.label.as_deref(), Some("mission-control"));
        assert_eq!(n.tag.as_deref(), Some("premigrate"));
        let n = read("mission-control-20260416.db");
        assert_eq!((n.label.as_deref(), n.tag), (Some("mission-control"), None));
        let n = read("ledger-r3-20260416.db");
        assert_eq!((n.label.as_deref(), n.configured), (Some("ledger"), false));
    }

    #[test]
    fn templates_with_time_or_run_give_the_time_and_bad_ones_say_why() {
        let read = |template: &str, key: &str| {
            let p = [Pattern::new(template, &["app"]).unwrap()];
            name(&p, key).map(|(_, n)| n).unwrap()
        };
        let n = read(
            "backups/{label}_{yyyymmdd}_{time}{ext}",
            "backups/app_20260505_134501.db.zst",
        );
        assert_eq!(n.time, Some((at("2026-05-05T13:45:01Z"), TimeFrom::Name)));
        let n = read("{label}/{run}.db", "app/20260505T134501Z-1a2b.db");
        assert_eq!(n.time, Some((at("2026-05-05T13:45:01Z"), TimeFrom::Name)));
        assert_eq!(read("dumps/{label}.db", "dumps/app.db").time, None);
        for (bad, says) in [
            ("{label}-{when}.db", "unknown placeholder {when}"),
            ("{label}-{date.db", "unclosed"),
            ("{label}-{date}}.db", "stray"),
            ("{label}-{date}-{date}.db", "twice"),
        ] {
            let e = Pattern::new(bad, &["app"]).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
