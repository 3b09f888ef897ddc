//! The TOML configuration file: what to back up, how, and where.
//!
//! Everything is validated at load time. A bad label, an unknown key or a bad
//! value is rejected with the file, the line and a hint, so a typo never turns
//! into a silently skipped database.
//!
//! Relative paths (database paths, `local.root`, `local.cold`) are resolved
//! against the folder that holds the config file, so a daemon started from
//! any working directory finds the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use backup_azure::AzureConfig;
use backup_core::compress::{Compression, Format};
use backup_core::encryption::Recipients;
use backup_core::incremental::{Policy, PolicyError};
use backup_core::naming::{DEFAULT_LOCAL_TEMPLATE, Template};
use backup_core::retention::RetentionError;
use backup_core::{
    CheckLevel, Database, DatabaseError, Retention, SnapshotMethod, validate_label, validate_tag,
};
use backup_s3::S3Config;
use secrecy::SecretString;

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}{}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// One `[[database]]` table: what the engine backs up, plus what only the
/// command line acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// Label, path, checks and retention, as the engine takes them.
    pub database: Database,
    /// Shell command run after a restore (the application's own audit).
    pub post_restore: Option<String>,
    /// Tags whose backups also go to the cold tier (e.g. `phase1`).
    pub cold_tags: Vec<String>,
    /// Run `post_restore` in restore drills too, with the scratch copy's path.
    pub drill_post_restore: bool,
}

/// `[drill]`: scheduled restore drills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drill {
    /// The daemon runs a drill this often.
    pub every: std::time::Duration,
}

/// `[metrics]`: Prometheus text-format metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metrics {
    /// File rewritten atomically after every run, drill and prune (the
    /// node_exporter textfile-collector convention).
    pub textfile: Option<PathBuf>,
    /// Address of the daemon's HTTP `/metrics` endpoint.
    pub listen: Option<std::net::SocketAddr>,
    /// File mode of the textfile; `None`: keep the existing file's, else
    /// 0644 (node_exporter reads it as its own user).
    pub mode: Option<u32>,
}

/// Where local tiers live.
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    /// Hot and warm tiers.
    pub root: PathBuf,
    /// Optional off-host cold tier.
    pub cold: Option<PathBuf>,
    /// Artifact name template inside `root` / `cold`.
    pub template: Template,
    /// `mode = "0640"`: the permission bits of every backup file in `root`
    /// and `cold`, chosen on purpose by the operator. `None` (the default):
    /// no more than the source databases' own (see `backup_core::fsutil::Modes`).
    pub mode: Option<u32>,
}

/// Per-database retention keys; each one given replaces the global value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionOverride {
    hot_days: Option<u32>,
    warm_days: Option<u32>,
    premigrate_days: Option<u32>,
    keep_last: Option<u32>,
    keep_minutely: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    #[serde(default, deserialize_with = "backup_core::duration::de_opt")]
    keep_within: Option<std::time::Duration>,
    adopted: Option<backup_core::retention::AdoptedRetention>,
}

impl RetentionOverride {
    fn over(&self, base: &Retention) -> Retention {
        Retention {
            hot_days: self.hot_days.unwrap_or(base.hot_days),
            warm_days: self.warm_days.unwrap_or(base.warm_days),
            premigrate_days: self.premigrate_days.unwrap_or(base.premigrate_days),
            keep_last: self.keep_last.unwrap_or(base.keep_last),
            keep_minutely: self.keep_minutely.unwrap_or(base.keep_minutely),
            keep_hourly: self.keep_hourly.unwrap_or(base.keep_hourly),
            keep_daily: self.keep_daily.unwrap_or(base.keep_daily),
            keep_weekly: self.keep_weekly.unwrap_or(base.keep_weekly),
            keep_monthly: self.keep_monthly.unwrap_or(base.keep_monthly),
            keep_within: self.keep_within.or(base.keep_within),
            // Packs are collected per sink, under the global setting.
            pack_grace: base.pack_grace,
            adopted: self.adopted.unwrap_or(base.adopted),
        }
    }
}

/// Failure alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Slack-compatible webhook URL (`{"text": …}` POST).
    pub webhook: Option<SecretString>,
    /// Command run with details in `SQLITE_BACKUP_*` variables.
    pub command: Option<String>,
    /// Consecutive failed runs before the alert goes out.
    #[serde(default = "default_after_failures")]
    pub after_failures: u32,
}

fn default_after_failures() -> u32 {
    3
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// SHA-256 (hex) of the text it was parsed from: what was built from
    /// one config can be kept while its file stays the same.
    pub text_sha256: String,
    /// Databases, in file order.
    pub databases: Vec<DatabaseConfig>,
    /// Compression of new artifacts.
    pub compression: Compression,
    /// Local tiers.
    pub local: Local,
    /// Azure Blob, when configured.
    pub azure: Option<AzureConfig>,
    /// S3 or an S3-compatible store, when configured.
    pub s3: Option<S3Config>,
    /// Retention policy.
    pub retention: Retention,
    /// Alerts.
    pub alerts: Option<Alerts>,
    /// Check run right after each backup.
    pub verify_level: CheckLevel,
    /// How snapshots are taken.
    pub snapshot_method: SnapshotMethod,
    /// When incremental databases start a new chain (`[snapshot] full_every`, `max_chain`).
    pub incremental: Policy,
    /// Where run state (failure counts, locks) is kept.
    pub state_dir: PathBuf,
    /// `status` exits non-zero when a database's newest backup is older.
    pub max_age_hours: u32,
    /// The passphrase of `[encryption] passphrase_env`, which also opens
    /// the backups it encrypted. Never printed.
    pub passphrase: Option<SecretString>,
    /// Restore drills, when scheduled.
    pub drill: Option<Drill>,
    /// Metrics outputs.
    pub metrics: Metrics,
    /// This machine's name in shared sinks (`host = "web-1"`); `None`: its
    /// host name.
    pub host: Option<String>,
}

// ---- raw, as written in the file ------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    database: Vec<Spanned<RawDatabase>>,
    #[serde(default)]
    compression: Option<RawCompression>,
    #[serde(default)]
    local: Option<RawLocal>,
    azure: Option<Spanned<AzureConfig>>,
    s3: Option<Spanned<S3Config>>,
    retention: Option<Spanned<Retention>>,
    alerts: Option<Alerts>,
    #[serde(default)]
    verify: Option<RawVerify>,
    #[serde(default)]
    snapshot: Option<RawSnapshot>,
    state_dir: Option<String>,
    max_age_hours: Option<u32>,
    encryption: Option<Spanned<RawEncryption>>,
    drill: Option<Spanned<RawDrill>>,
    metrics: Option<Spanned<RawMetrics>>,
    host: Option<Spanned<String>>,
}

/// `[encryption]`, or a database's own `encryption = { … }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    #[serde(default)]
    recipients: Vec<String>,
    recipients_file: Option<String>,
    passphrase_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    every: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    textfile: Option<String>,
    listen: Option<String>,
    mode: Option<Spanned<String>>,
}

/// A duration as people write it (`24h`, `30m`, `1d`); the config file,
/// `daemon --interval` and `restore --at 2h` all read durations through this.
pub use backup_core::duration::parse as parse_duration;

/// [`parse_duration`], refusing zero.
/// For serde's "unknown field `incremntal`, expected one of `label`, …"
/// (or "unknown variant"): the expected name closest to the one written,
/// when it is close enough to be a typo.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (written, expected) = rest.split_once('`')?;
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (strsim::damerau_levenshtein(written, name), name))
        .min()?;
    // Two edits, or fewer for short names: past that it is another key.
    (best.0 <= 2.min(written.len() / 3).max(1)).then(|| format!("did you mean `{}`?", best.1))
}

fn parse_every(text: &str) -> Option<std::time::Duration> {
    parse_duration(text).filter(|d| !d.is_zero())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    label: Spanned<String>,
    path: String,
    #[serde(default)]
    required_tables: Vec<String>,
    #[serde(default)]
    checks: Vec<String>,
    post_restore: Option<String>,
    #[serde(default)]
    cold_tags: Vec<String>,
    #[serde(default)]
    retention: RetentionOverride,
    encryption: Option<Spanned<RawEncryption>>,
    incremental: Option<bool>,
    #[serde(default)]
    drill_post_restore: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompression {
    format: Option<Format>,
    level: Option<Spanned<i32>>,
    threads: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    root: Option<String>,
    cold: Option<String>,
    template: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    level: Option<ConfiguredLevel>,
}

/// The levels a config may choose (`schema` is only ever recorded).
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ConfiguredLevel {
    QuickCheck,
    IntegrityCheck,
}

impl From<ConfiguredLevel> for CheckLevel {
    fn from(l: ConfiguredLevel) -> Self {
        match l {
            ConfiguredLevel::QuickCheck => CheckLevel::QuickCheck,
            ConfiguredLevel::IntegrityCheck => CheckLevel::IntegrityCheck,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    method: Option<SnapshotMethod>,
    #[serde(default)]
    incremental: bool,
    full_every: Option<Spanned<String>>,
    max_chain: Option<u32>,
}

/// `path` with `.` and `..` resolved without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// `path` resolved as far as it exists (symlinks followed), the rest
/// appended: two spellings of one place compare equal even before the
/// file or folder is created.
fn resolved(path: &Path) -> PathBuf {
    let path = lexical(path);
    let mut head = path.clone();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = head.canonicalize() {
            let mut out = real;
            out.extend(tail.iter().rev());
            return lexical(&out);
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return path,
        }
    }
}

/// `path` made absolute, its folder part resolved as the OS would (so
/// `cfg/../db/app.db` is recorded as `/srv/db/app.db`), its last component
/// kept as written (a symlinked database stays the link). Without an
/// existing folder, `.` and `..` are resolved lexically.
fn absolute_path(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => {
            std::fs::canonicalize(dir).map_or_else(|_| lexical(&abs), |d| d.join(name))
        }
        _ => lexical(&abs),
    }
}

/// Whether `path` is `folder` or lies inside it, however either is spelled
/// (`./`, `..`, symlinks).
fn is_inside(path: &Path, folder: &Path) -> bool {
    lexical(path).starts_with(lexical(folder)) || resolved(path).starts_with(resolved(folder))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The text being parsed and the file it came from: errors are located in
/// it, relative paths anchored at its folder.
struct Source<'a> {
    text: &'a str,
    file: &'a Path,
    base: &'a Path,
}

/// What a `[[database]]` table inherits from the file's global sections.
struct Defaults<'a> {
    host: Option<String>,
    retention: &'a Retention,
    encryption: Option<&'a Recipients>,
    incremental: bool,
}

const RECIPIENTS_HINT: &str =
    "recipients are age public keys (age1…), e.g. from `age-keygen -y key.txt`";

impl Config {
    /// Read and validate a config file.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            message: format!("cannot read config: {e}"),
            hint: Some(
                "pass --config PATH, set SQLITE_BACKUP_CONFIG, or create ./sqlite-backup.toml"
                    .into(),
            ),
        })?;
        Self::parse(&text, file)
    }

    /// Parse and validate config text; `file` names it in errors and anchors
    /// relative paths.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let src = Source { text, file, base };
        // Sections are checked in this order so that a file with several
        // mistakes always reports the same one first.
        let raw = src.raw_config()?;
        let incremental = src.incremental_policy(raw.snapshot.as_ref())?;
        let retention = src.global_retention(raw.retention)?;
        let passphrase = passphrase_from_env(raw.encryption.as_ref());
        let encryption = raw.encryption.map(|e| src.recipients(e)).transpose()?;
        let host = src.host(raw.host)?;
        let defaults = Defaults {
            host: host.clone(),
            retention: &retention,
            encryption: encryption.as_ref(),
            incremental: raw.snapshot.as_ref().is_some_and(|s| s.incremental),
        };
        let databases = src.databases(raw.database, &defaults)?;
        let compression = src.compression(raw.compression)?;
        let local = src.local(raw.local.unwrap_or_default())?;
        let azure = raw.azure.map(|a| src.azure(a)).transpose()?;
        let s3 = raw.s3.map(|c| src.s3(c)).transpose()?;
        src.refuse_databases_in_backup_folders(&databases, &local)?;
        let drill = raw.drill.map(|d| src.drill(d)).transpose()?;
        let metrics = raw.metrics.map(|m| src.metrics(m)).transpose()?;
        Ok(Config {
            file: file.to_path_buf(),
            text_sha256: backup_core::digest::Sha256::hex_of(text.as_bytes()),
            databases,
            compression,
            local,
            azure,
            s3,
            retention,
            alerts: raw.alerts,
            verify_level: raw
                .verify
                .and_then(|v| v.level)
                .map(CheckLevel::from)
                .unwrap_or_default(),
            snapshot_method: raw.snapshot.and_then(|s| s.method).unwrap_or_default(),
            incremental,
            state_dir: raw
                .state_dir
                .as_deref()
                .map(|p| src.resolve(p))
                .unwrap_or_else(|| base.join(".sqlite-backup-state")),
            max_age_hours: raw.max_age_hours.unwrap_or(26),
            passphrase,
            drill,
            metrics: metrics.unwrap_or_default(),
            host,
        })
    }

    /// This machine's name in shared sinks: `host`, else its host name.
    pub fn host_name(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(backup_core::source::this_host)
    }

    /// The database with this label.
    pub fn database(&self, label: &str) -> Option<&DatabaseConfig> {
        self.databases.iter().find(|d| d.database.label == label)
    }
}

/// `[encryption] passphrase_env`'s value, kept so that the backups it
/// encrypted can be opened again.
fn passphrase_from_env(encryption: Option<&Spanned<RawEncryption>>) -> Option<SecretString> {
    encryption
        .and_then(|e| e.get_ref().passphrase_env.as_ref())
        .and_then(|var| std::env::var(var).ok())
        .map(|p| p.as_str().into())
}

impl Source<'_> {
    fn err(&self, offset: Option<usize>, message: String, hint: Option<&str>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: offset.map(|o| line_of(self.text, o)),
            message,
            hint: hint.map(str::to_string),
        }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    /// The TOML as written: syntax, unknown keys and types.
    fn raw_config(&self) -> Result<RawConfig, ConfigError> {
        toml::from_str(self.text).map_err(|e| {
            let message = e.message().trim().to_string();
            let spelling = did_you_mean(&message);
            let hint = if let Some(hint) = &spelling {
                Some(hint.as_str())
            } else if message.contains("unknown field") {
                Some(
                    "check the spelling; the config reference (docs/src/config.md) lists every key",
                )
            } else if message.contains("unknown variant") {
                Some("use one of the values listed above")
            } else {
                None
            };
            self.err(e.span().map(|s| s.start), message, hint)
        })
    }

    /// `[snapshot] full_every` and `max_chain`.
    fn incremental_policy(&self, snapshot: Option<&RawSnapshot>) -> Result<Policy, ConfigError> {
        let mut policy = Policy::default();
        let Some(s) = snapshot else {
            return Ok(policy);
        };
        let not_a_duration = |every: &Spanned<String>| {
            self.err(
                Some(every.span().start),
                format!("full_every = {:?} is not a duration", every.get_ref()),
                Some("e.g. full_every = \"24h\""),
            )
        };
        if let Some(every) = &s.full_every {
            policy.full_every =
                parse_duration(every.get_ref()).ok_or_else(|| not_a_duration(every))?;
        }
        if let Some(n) = s.max_chain {
            policy.max_chain = n;
        }
        policy.validate().map_err(|e| match (e, &s.full_every) {
            (PolicyError::ZeroFullEvery, Some(every)) => not_a_duration(every),
            (e, _) => self.err(None, format!("[snapshot] {e}"), None),
        })?;
        Ok(policy)
    }

    /// `[retention]`, which every database's own `retention` overrides.
    fn global_retention(&self, raw: Option<Spanned<Retention>>) -> Result<Retention, ConfigError> {
        let Some(r) = raw else {
            return Ok(Retention::default());
        };
        let at = r.span().start;
        let r = r.into_inner();
        r.validate().map_err(|e| self.retention_error(at, &e))?;
        Ok(r)
    }

    fn retention_error(&self, at: usize, e: &RetentionError) -> ConfigError {
        let hint = match e {
            RetentionError::HotBeyondWarm { .. } => {
                "the warm tier starts where the hot one ends: make warm_days at least hot_days (or 0 to turn it off)"
            }
            RetentionError::KeepWithinInsideHot { .. } => {
                "set hot_days = 0 next to keep_within, and let warm_days or keep_hourly / keep_daily thin the older snapshots"
            }
        };
        self.err(Some(at), e.to_string(), Some(hint))
    }

    /// `[encryption]` or a database's own, read from the environment and
    /// the recipients file. Keys are checked now, before anything runs: a
    /// configured but unusable recipient must stop the run, never let it
    /// write plaintext.
    fn recipients(&self, e: Spanned<RawEncryption>) -> Result<Recipients, ConfigError> {
        let at = e.span().start;
        let e = e.into_inner();
        let bad = |m: String| self.err(Some(at), m, Some(RECIPIENTS_HINT));
        if let Some(var) = &e.passphrase_env {
            if !e.recipients.is_empty() || e.recipients_file.is_some() {
                return Err(bad(
                    "encryption: passphrase_env cannot be combined with recipients (age allows one or the other)".into(),
                ));
            }
            let pass = std::env::var(var).ok().filter(|p| !p.is_empty()).ok_or_else(|| {
                bad(format!(
                    "encryption: passphrase_env names {var:?}, which is not set in the environment"
                ))
            })?;
            return Ok(Recipients::passphrase(pass.as_str().into()));
        }
        let mut keys = e.recipients;
        if let Some(f) = &e.recipients_file {
            keys.extend(
                Recipients::read_file(&self.resolve(f))
                    .map_err(|e| bad(format!("encryption: {e}")))?,
            );
        }
        Recipients::parse(&keys).map_err(|e| bad(format!("encryption: {e}")))
    }

    /// The `[[database]]` tables, in file order.
    fn databases(
        &self,
        raw: Vec<Spanned<RawDatabase>>,
        defaults: &Defaults<'_>,
    ) -> Result<Vec<DatabaseConfig>, ConfigError> {
        let mut seen = BTreeMap::new();
        raw.into_iter()
            .map(|db| self.database(db, defaults, &mut seen))
            .collect()
    }

    /// One `[[database]]` table; `seen` maps the labels so far to where
    /// each was first written.
    fn database(
        &self,
        spanned: Spanned<RawDatabase>,
        defaults: &Defaults<'_>,
        seen: &mut BTreeMap<String, usize>,
    ) -> Result<DatabaseConfig, ConfigError> {
        let start = spanned.span().start;
        let db = spanned.into_inner();
        let label = self.unique_label(db.label, seen)?;
        // Checked as written: a blank path would resolve to the config's folder.
        if db.path.trim().is_empty() {
            let e = DatabaseError::EmptyPath { label };
            return Err(self.err(Some(start), e.to_string(), None));
        }
        for tag in &db.cold_tags {
            validate_tag(tag).map_err(|m| self.err(Some(start), m.to_string(), None))?;
        }
        let path = self.database_path(&label, &db.path, start)?;
        let encryption = match db.encryption {
            Some(e) => Some(self.recipients(e)?),
            None => defaults.encryption.cloned(),
        };
        let database = Database {
            label,
            path,
            required_tables: db.required_tables,
            checks: db.checks,
            retention: db.retention.over(defaults.retention),
            encryption,
            incremental: db.incremental.unwrap_or(defaults.incremental),
            host: defaults.host.clone(),
        };
        database
            .validate()
            .map_err(|e| self.database_error(start, e))?;
        Ok(DatabaseConfig {
            database,
            post_restore: db.post_restore,
            cold_tags: db.cold_tags,
            drill_post_restore: db.drill_post_restore,
        })
    }

    /// A valid label not used by an earlier database.
    fn unique_label(
        &self,
        label: Spanned<String>,
        seen: &mut BTreeMap<String, usize>,
    ) -> Result<String, ConfigError> {
        let at = label.span().start;
        let label = label.into_inner();
        validate_label(&label).map_err(|m| {
            self.err(
                Some(at),
                m.to_string(),
                Some("e.g. label = \"mission-control\" (no spaces, no upper case, no `/`)"),
            )
        })?;
        if let Some(first) = seen.insert(label.clone(), at) {
            return Err(self.err(
                Some(at),
                format!(
                    "duplicate label {label:?} (first used on line {})",
                    line_of(self.text, first)
                ),
                Some("every database needs its own label"),
            ));
        }
        Ok(label)
    }

    /// The database's absolute path (its folder resolved on the file
    /// system), refused when it names a folder.
    fn database_path(&self, label: &str, path: &str, at: usize) -> Result<PathBuf, ConfigError> {
        let path = absolute_path(&self.resolve(path));
        if path.is_dir() {
            return Err(self.err(
                Some(at),
                format!(
                    "database {label:?}: path {} is a directory, not a database file",
                    path.display()
                ),
                Some("name the database file itself, e.g. path = \"data/app.db\""),
            ));
        }
        Ok(path)
    }

    fn database_error(&self, at: usize, e: DatabaseError) -> ConfigError {
        match e {
            // Same text as for `[retention]`: the line says which database.
            DatabaseError::Retention { source, .. } => self.retention_error(at, &source),
            e => self.err(Some(at), e.to_string(), None),
        }
    }

    /// `[compression]`.
    fn compression(&self, raw: Option<RawCompression>) -> Result<Compression, ConfigError> {
        let Some(c) = raw else {
            return Ok(Compression::default());
        };
        let mut compression = Compression::new(c.format.unwrap_or(Format::Zstd));
        if let Some(level) = c.level {
            let at = level.span().start;
            compression = compression.with_level(level.into_inner()).map_err(|e| {
                self.err(
                    Some(at),
                    e.to_string(),
                    Some("zstd takes 1-19 (3 is a good default), gzip 1-9 (6)"),
                )
            })?;
        }
        compression.threads = c.threads.unwrap_or(0);
        Ok(compression)
    }

    /// `[local]`.
    fn local(&self, raw: RawLocal) -> Result<Local, ConfigError> {
        let template = match raw.template {
            Some(t) => {
                let at = t.span().start;
                Template::parse(t.get_ref(), false).map_err(|m| {
                    self.err(
                        Some(at),
                        m.to_string(),
                        Some("placeholders: {label} {tag} {date} {time} {ext}"),
                    )
                })?
            }
            None => Template::parse(DEFAULT_LOCAL_TEMPLATE, false).expect("default template"),
        };
        Ok(Local {
            root: self.resolve(raw.root.as_deref().unwrap_or("data/backups")),
            cold: raw.cold.as_deref().map(|p| self.resolve(p)),
            template,
            mode: raw.mode.map(|m| self.local_mode(m)).transpose()?,
        })
    }

    /// `[local] mode`: octal, owner read and write, no execute.
    fn local_mode(&self, mode: Spanned<String>) -> Result<u32, ConfigError> {
        let at = mode.span().start;
        let text = mode.into_inner();
        backup_core::fsutil::parse_mode(&text)
            .filter(|m| m & 0o600 == 0o600 && m & 0o111 == 0)
            .ok_or_else(|| {
                self.err(
                    Some(at),
                    format!("[local] mode {text:?} is not a file mode the tool can use"),
                    Some("octal, owner read and write, no execute: e.g. mode = \"0640\" (group may read); leave it out to follow the databases' own modes"),
                )
            })
    }

    fn azure(&self, a: Spanned<AzureConfig>) -> Result<AzureConfig, ConfigError> {
        let at = a.span().start;
        let a = a.into_inner();
        self.check_remote("azure", at, &a.template, a.allow_overwrite, &a.prefix)?;
        Ok(a)
    }

    fn s3(&self, c: Spanned<S3Config>) -> Result<S3Config, ConfigError> {
        let at = c.span().start;
        let c = c.into_inner();
        self.check_remote("s3", at, &c.template, c.allow_overwrite, &c.prefix)?;
        Ok(c)
    }

    /// Both object-store sections are checked alike: a template that
    /// cannot overwrite (unless allowed) and a clean prefix.
    fn check_remote(
        &self,
        section: &str,
        at: usize,
        template: &str,
        allow_overwrite: bool,
        prefix: &str,
    ) -> Result<(), ConfigError> {
        Template::parse(template, allow_overwrite).map_err(|m| {
            self.err(
                Some(at),
                format!("[{section}] template: {m}"),
                Some("include {time} so runs of the same day get distinct names, or set allow_overwrite = true"),
            )
        })?;
        if !prefix.is_empty() {
            backup_core::sink::validate_key(prefix.trim_matches('/'))
                .map_err(|e| self.err(Some(at), format!("[{section}] prefix: {e}"), None))?;
        }
        Ok(())
    }

    fn refuse_databases_in_backup_folders(
        &self,
        databases: &[DatabaseConfig],
        local: &Local,
    ) -> Result<(), ConfigError> {
        for db in databases.iter().map(|d| &d.database) {
            for root in std::iter::once(&local.root).chain(local.cold.as_ref()) {
                if is_inside(&db.path, root) {
                    return Err(self.err(
                        None,
                        format!(
                            "database {:?} lives inside the backup folder {}",
                            db.label,
                            root.display()
                        ),
                        Some("never back up the backup folder into itself"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `host`: this machine's name in shared sinks. It is printed as
    /// `host:/path` and matched by `--source`, so it must read as one word.
    fn host(&self, host: Option<Spanned<String>>) -> Result<Option<String>, ConfigError> {
        let Some(host) = host else { return Ok(None) };
        let at = host.span().start;
        let host = host.into_inner();
        let bad = host.is_empty()
            || host.len() > 253
            || host
                .chars()
                .any(|c| c == ':' || c == '/' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(self.err(
                Some(at),
                format!("host {host:?} is not a machine name"),
                Some("use letters, digits, '-' and '.', as in host = \"web-1\""),
            ));
        }
        Ok(Some(host))
    }

    /// `[drill]`.
    fn drill(&self, d: Spanned<RawDrill>) -> Result<Drill, ConfigError> {
        let at = d.span().start;
        let every = parse_every(&d.get_ref().every).ok_or_else(|| {
            self.err(
                Some(at),
                format!("[drill] every = {:?} is not a duration", d.get_ref().every),
                Some("a number and a unit, e.g. every = \"24h\", \"12h\" or \"7d\""),
            )
        })?;
        Ok(Drill { every })
    }

    /// `[metrics]`.
    fn metrics(&self, m: Spanned<RawMetrics>) -> Result<Metrics, ConfigError> {
        let at = m.span().start;
        let m = m.into_inner();
        let listen = match m.listen {
            Some(l) => Some(l.parse().map_err(|e| {
                self.err(
                    Some(at),
                    format!("[metrics] listen = {l:?}: {e}"),
                    Some("an IP address and a port, e.g. listen = \"127.0.0.1:9464\""),
                )
            })?),
            None => None,
        };
        let mode = match m.mode {
            Some(mode) => {
                let at = mode.span().start;
                let text = mode.into_inner();
                // Metrics hold no database content; owner write, no execute.
                let parsed = backup_core::fsutil::parse_mode(&text)
                    .filter(|m| m & 0o200 != 0 && m & 0o111 == 0);
                Some(parsed.ok_or_else(|| {
                    self.err(
                        Some(at),
                        format!("[metrics] mode {text:?} is not a file mode the tool can use"),
                        Some("octal, owner write, no execute: e.g. mode = \"0644\" (node_exporter runs as its own user)"),
                    )
                })?)
            }
            None => None,
        };
        Ok(Metrics {
            textfile: m.textfile.as_deref().map(|p| self.resolve(p)),
            listen,
            mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/sb/sqlite-backup.toml"))
    }

    #[test]
    fn drill_and_metrics_sections() {
        let c = parse(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\ndrill_post_restore = true\n\n[drill]\nevery = \"24h\"\n\n[metrics]\ntextfile = \"m/sb.prom\"\nlisten = \"127.0.0.1:9464\"\n",
        )
        .unwrap();
        assert!(c.databases[0].drill_post_restore);
        assert_eq!(c.drill.unwrap().every.as_secs(), 86_400);
        assert_eq!(c.metrics.textfile.unwrap(), Path::new("/etc/sb/m/sb.prom"));
        assert_eq!(c.metrics.listen.unwrap().port(), 9464);
        let e = parse("[drill]\nevery = \"sometimes\"\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let e = parse("[drill]\nevery = \"0s\"\n").unwrap_err();
        assert!(e.message.contains("[drill] every"), "{e}");
        let e = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(e.message.contains("[metrics] listen"), "{e}");
        let c = parse("").unwrap();
        assert_eq!((c.drill, c.metrics), (None, Metrics::default()));
    }

    #[test]
    fn host_names_this_machine_for_every_database() {
        let c =
            parse("host = \"web-1\"\n[[database]]\nlabel = \"app\"\npath = \"app.db\"\n").unwrap();
        assert_eq!(c.host.as_deref(), Some("web-1"));
        assert_eq!(c.host_name(), "web-1");
        assert_eq!(c.databases[0].database.host.as_deref(), Some("web-1"));
        for bad in ["", "web 1", "web:1", "a/b"] {
            let e = parse(&format!("host = {bad:?}\n")).unwrap_err();
            assert_eq!(e.line, Some(1), "{e}");
            assert!(e.message.contains("not a machine name"), "{e}");
        }
        assert!(!parse("").unwrap().host_name().is_empty());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n").unwrap();
        assert_eq!(c.databases[0].database.path, Path::new("/etc/sb/app.db"));
        assert_eq!(c.local.root, Path::new("/etc/sb/data/backups"));
        assert_eq!(c.compression.format, Format::Zstd);
        assert_eq!(c.compression.level, 3);
        assert_eq!(c.retention.hot_days, 7);
        assert_eq!(c.retention.warm_days, 30);
    }

    #[test]
    fn a_folder_as_database_path_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = Config::parse(
            "[[database]]\nlabel = \"app\"\npath = \".\"\n",
            &dir.path().join("sqlite-backup.toml"),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("is a directory"), "{e}");
    }

    #[test]
    fn database_paths_are_absolute_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cfg")).unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        // A relative config path, as `--config cfg/sqlite-backup.toml` gives.
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(dir.path(), &cwd).join("cfg/sqlite-backup.toml");
        let c = Config::parse(
            "[[database]]\nlabel = \"app\"\npath = \"../db/app.db\"\n",
            &rel,
        )
        .unwrap();
        let want = std::fs::canonicalize(dir.path()).unwrap().join("db/app.db");
        assert_eq!(c.databases[0].database.path, want);
    }

    /// `to` spelled relative to `from` (both absolute).
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let mut up = PathBuf::new();
        let mut base = from.to_path_buf();
        while !to.starts_with(&base) {
            up.push("..");
            base.pop();
        }
        up.join(to.strip_prefix(&base).unwrap())
    }

    #[test]
    fn hot_days_beyond_warm_days_is_refused_on_its_line() {
        let e = parse("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[retention]\nhot_days = 40\nwarm_days = 30\n")
            .unwrap_err();
        assert!(
            e.message
                .contains("hot_days = 40 is longer than warm_days = 30"),
            "{e}"
        );
        assert!(matches!(e.line, Some(5) | Some(6)), "{e}");
        let e = parse(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nretention = { hot_days = 31 }\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        // warm_days = 0 turns the warm tier off: any hot span is fine.
        parse("[retention]\nhot_days = 40\nwarm_days = 0\n").unwrap();
    }

    #[test]
    fn bad_label_names_the_line() {
        let e = parse("[[database]]\nlabel = \"ok\"\npath = \"a.db\"\n\n[[database]]\nlabel = \"Bad Label\"\npath = \"b.db\"\n")
            .unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("Bad Label"));
    }

    #[test]
    fn unknown_key_names_the_line() {
        let e = parse("[compression]\nformat = \"zstd\"\nlevle = 3\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("levle"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `level`?"), "{e}");
        let e =
            parse("[[database]]\nlabel = \"a\"\npath = \"a.db\"\nincremntal = true\n").unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("did you mean `incremental`?"),
            "{e}"
        );
        let e = parse("[compression]\nformat = \"zstdd\"\n").unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean `zstd`?"), "{e}");
        // Nothing close: the general hint.
        let e = parse("[compression]\nspeed = 3\n").unwrap_err();
        assert!(e.hint.unwrap().contains("check the spelling"));
    }

    #[test]
    fn s3_section_is_checked_like_azure() {
        let e = parse("[s3]\nbucket = \"b\"\ntemplate = \"{date}/{label}.db.gz\"\n").unwrap_err();
        assert!(e.to_string().contains("[s3] template"), "{e}");
        let c = parse("[s3]\nbucket = \"b\"\ntemplate = \"{date}/{label}.db.gz\"\nallow_overwrite = true\nregion = \"auto\"\npart_size_mib = 16\n").unwrap();
        let s3 = c.s3.unwrap();
        assert_eq!(
            (s3.prefix.as_str(), s3.part_size_mib, s3.max_retries),
            ("sqlite", 16, 5)
        );
        assert!(parse("[s3]\nbucket = \"b\"\nprefix = \"../x\"\n").is_err());
        assert!(parse("[s3]\nbucket = \"b\"\nsecret = \"x\"\n").is_err());
    }

    #[test]
    fn overwriting_azure_template_is_refused() {
        let e =
            parse("[azure]\ncontainer = \"c\"\ntemplate = \"{date}/{label}.db.gz\"\n").unwrap_err();
        assert!(e.message.contains("overwrite"), "{e}");
        parse("[azure]\ncontainer = \"c\"\ntemplate = \"{date}/{label}.db.gz\"\nallow_overwrite = true\n")
            .unwrap();
    }

    #[test]
    fn source_inside_backup_root_is_refused() {
        let e = parse("[local]\nroot = \"b\"\n[[database]]\nlabel = \"x\"\npath = \"b/x.db\"\n")
            .unwrap_err();
        assert!(e.message.contains("inside the backup folder"), "{e}");
        for spelled in ["./b/x.db", "a/../b/x.db", "b/./x.db", "b"] {
            let e = parse(&format!(
                "[local]\nroot = \"b\"\n[[database]]\nlabel = \"x\"\npath = \"{spelled}\"\n"
            ))
            .unwrap_err();
            assert!(
                e.message.contains("inside the backup folder"),
                "{spelled}: {e}"
            );
        }
        parse("[local]\nroot = \"b\"\n[[database]]\nlabel = \"x\"\npath = \"bb/x.db\"\n").unwrap();
    }

    #[test]
    fn local_mode_is_octal_owner_rw_no_execute() {
        assert_eq!(parse("").unwrap().local.mode, None);
        let c = parse("[local]\nmode = \"0640\"\n").unwrap();
        assert_eq!(c.local.mode, Some(0o640));
        assert_eq!(
            parse("[local]\nmode = \"644\"\n").unwrap().local.mode,
            Some(0o644)
        );
        for bad in ["0755", "0440", "rw-r-----", "", "01640", "0x1a4"] {
            let e = parse(&format!("[local]\nmode = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.line, Some(2), "{bad}: {e}");
            assert!(e.message.contains("mode"), "{bad}: {e}");
        }
    }
}
