//! Resolve arguments + config file into what the engine runs (the
//! "high-level" stage): sinks, targets, options, selected databases.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use backup_config::{Config, DatabaseConfig};
use backup_core::Backups;
use backup_core::fsutil::{self, Modes};
use backup_core::pipeline::Target;
use backup_core::sink::{Placement, Sink};
use backup_local::LocalSink;

/// A bad invocation or config: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Load the config; any problem is a usage error (exit 2).
pub fn load_config(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| UsageError(e.to_string()).into())
}

/// Load the config if the file exists (for commands that work without one).
pub fn load_optional_config(path: &Path) -> Result<Option<Config>> {
    if path.exists() {
        load_config(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The permission bits of what the local and cold sinks create: `[local]
/// mode` when set; otherwise no more than the most private of the
/// configured databases that exist (their file modes, minus what their
/// folders keep others from reaching; see [`Modes::of_source`]): one folder
/// and one manifest per run hold every database's backups, so the most
/// private one decides. With no database file found: owner only.
pub fn local_modes(config: &Config) -> Modes {
    if let Some(mode) = config.local.mode {
        return Modes::exact(mode);
    }
    config
        .databases
        .iter()
        .filter_map(|d| Modes::of_source(&d.database.path))
        .reduce(Modes::meet)
        .unwrap_or(Modes::PRIVATE)
}

/// The local sinks (`local`, then `cold` when configured), with their modes.
pub fn local_sinks(config: &Config) -> Vec<LocalSink> {
    let modes = local_modes(config);
    let mut out =
        vec![LocalSink::new("local", &config.local.root, Placement::Local).with_modes(modes)];
    if let Some(cold) = &config.local.cold {
        out.push(LocalSink::new("cold", cold, Placement::Cold).with_modes(modes));
    }
    out
}

/// Every configured sink, as backup targets, in restore preference order:
/// local (hot/warm), remote, cold.
pub fn targets(config: &Config) -> Result<Vec<Target>> {
    let mut locals = local_sinks(config).into_iter();
    let mut out = vec![Target {
        sink: Arc::new(locals.next().expect("the local sink")),
        template: config.local.template.clone(),
        cold_only: false,
    }];
    let templates = [
        (config.azure.as_ref()).map(|a| (&a.template, a.allow_overwrite)),
        (config.s3.as_ref()).map(|c| (&c.template, c.allow_overwrite)),
    ];
    for (sink, (template, allow_overwrite)) in remote_sinks(config)?
        .into_iter()
        .zip(templates.into_iter().flatten())
    {
        let template = backup_core::naming::Template::parse(template, allow_overwrite)
            .map_err(|e| UsageError(e.to_string()))?;
        out.push(Target {
            sink,
            template,
            cold_only: false,
        });
    }
    if let Some(cold) = locals.next() {
        out.push(Target {
            sink: Arc::new(cold),
            template: config.local.template.clone(),
            cold_only: true,
        });
    }
    Ok(out)
}

/// The remote sinks built from a config text, kept for the life of the
/// process: a daemon's runs reuse each sink's client, connection pool and
/// runtime instead of building them every run (its root certificates
/// parsed, its threads started and, against a real endpoint, a TLS
/// handshake made again). An edited config file builds new ones; the
/// oldest of more than [`KEPT_CONFIGS`] texts are let go.
static REMOTE_SINKS: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

/// [`Config::text_sha256`] and the remote sinks built from it.
type Kept = (String, Vec<Arc<dyn Sink>>);

const KEPT_CONFIGS: usize = 4;

/// The `[azure]` and `[s3]` sinks of `config`, in that order. Building one
/// makes no network call, so `--dry-run` stays offline.
fn remote_sinks(config: &Config) -> Result<Vec<Arc<dyn Sink>>, UsageError> {
    if config.azure.is_none() && config.s3.is_none() {
        return Ok(Vec::new());
    }
    let mut kept = REMOTE_SINKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, sinks)) = kept.iter().find(|(text, _)| *text == config.text_sha256) {
        return Ok(sinks.clone());
    }
    let build = |cfg: &dyn backup_object_store::StoreConfig| {
        backup_object_store::ObjectStoreSink::from_config_dyn(cfg)
            .map(|s| Arc::new(s) as Arc<dyn Sink>)
            .map_err(|e| UsageError(format!("{e} (in {})", config.file.display())))
    };
    let mut sinks = Vec::new();
    if let Some(azure) = &config.azure {
        sinks.push(build(azure)?);
    }
    if let Some(s3) = &config.s3 {
        sinks.push(build(s3)?);
    }
    if kept.len() == KEPT_CONFIGS {
        kept.remove(0);
    }
    kept.push((config.text_sha256.clone(), sinks.clone()));
    Ok(sinks)
}

/// Just the sinks.
pub fn sinks(config: &Config) -> Result<Vec<Arc<dyn Sink>>> {
    Ok(targets(config)?.into_iter().map(|t| t.sink).collect())
}

/// The library's facade over every sink of `config`, in restore order,
/// with the config's compression, checks, snapshot method, incremental
/// policy, scratch folder and page-hash cache.
pub fn backups(config: &Config) -> Result<Backups> {
    Ok(builder(config)?.build())
}

/// [`backups`], not built yet.
pub fn builder(config: &Config) -> Result<backup_core::Builder> {
    Ok(targets(config)?
        .into_iter()
        .fold(Backups::builder(), |b, t| b.target(t))
        .compression(config.compression)
        .check_level(config.verify_level)
        .snapshot_method(config.snapshot_method)
        .incremental(config.incremental)
        .scratch_dir(scratch_dir(config))
        .page_cache(config.state_dir.join("page-hashes")))
}

/// Scratch folder for snapshots: inside the local root, so it is on the
/// same disk as the hot tier and cleaned by the next run after a crash.
pub fn scratch_dir(config: &Config) -> PathBuf {
    config.local.root.join(".tmp")
}

/// The labels a run also sends to the cold tier: every database with
/// `--tier cold`, else those whose `cold_tags` hold the run's tag.
pub fn cold_labels(
    config: &Config,
    databases: &[DatabaseConfig],
    tag: Option<&str>,
    cold: bool,
) -> Result<Vec<String>> {
    if let Some(t) = tag {
        backup_core::validate_tag(t).map_err(|e| UsageError(e.to_string()))?;
    }
    if cold && config.local.cold.is_none() {
        return Err(UsageError(
            "--tier cold needs a cold folder: set `cold = \"/mnt/offsite/sqlite\"` under [local]"
                .into(),
        )
        .into());
    }
    Ok(databases
        .iter()
        .filter(|d| cold || tag.is_some_and(|t| d.cold_tags.iter().any(|c| c == t)))
        .map(|d| d.database.label.clone())
        .collect())
}

/// The databases named by `--label` (all when none); unknown labels are usage errors.
/// Which backups are this config's own, for the commands that default to
/// them (list, status, verify --latest, restore, drill).
pub struct Own<'a> {
    config: &'a Config,
    host: String,
}

impl<'a> Own<'a> {
    pub fn new(config: &'a Config) -> Self {
        Own {
            config,
            host: config.host_name(),
        }
    }

    /// For a configured label: taken from that database's file on this
    /// machine. For any other label: written by this machine (or before
    /// entries named their host).
    pub fn owns(&self, entry: &backup_core::manifest::Entry) -> bool {
        match self.config.database(&entry.label) {
            Some(d) => backup_core::source::Source::local(&d.database).owns(entry),
            None => entry.host.as_ref().is_none_or(|h| *h == self.host),
        }
    }
}

pub fn select(config: &Config, labels: &[String]) -> Result<Vec<DatabaseConfig>> {
    if labels.is_empty() {
        return Ok(config.databases.clone());
    }
    labels
        .iter()
        .map(|l| {
            config.database(l).cloned().ok_or_else(|| {
                let known: Vec<&str> = config
                    .databases
                    .iter()
                    .map(|d| d.database.label.as_str())
                    .collect();
                UsageError(format!(
                    "no database labelled {l:?} in {} (known: {})",
                    config.file.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
                .into()
            })
        })
        .collect()
}

/// One line per local sink whose folder, or anything in it, is more
/// readable than the sink's modes ([`local_modes`]), with the `chmod` that
/// fixes it. Reads only the folders' entries (no file contents), so it is
/// cheap enough for `status`. A folder that cannot be read is a line too.
pub fn permission_warnings(config: &Config) -> Vec<String> {
    let why = if config.local.mode.is_some() {
        "[local] mode allows"
    } else {
        "its databases are"
    };
    let mut out = Vec::new();
    for sink in local_sinks(config) {
        let modes = sink.modes();
        let root = sink.root().display().to_string();
        match sink.too_open() {
            Ok(found) if found.is_empty() => {}
            Ok(found) => {
                let first = &found[0];
                out.push(format!(
                    "backup folder {root} ({}) is more readable than {why} ({} files, {} folders): {} item(s), e.g. {} is {}; fix: chmod -R {} {}",
                    sink.name(),
                    fsutil::format_mode(modes.file),
                    fsutil::format_mode(modes.dir),
                    found.len(),
                    first.path.display(),
                    fsutil::format_mode(first.mode),
                    modes.chmod_spec(),
                    shell_quote(&root),
                ));
            }
            Err(e) => out.push(format!(
                "backup folder {root} ({}): cannot check its permissions: {e}",
                sink.name()
            )),
        }
    }
    out
}

/// `text` quoted for `sh` when it needs it.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The keys that open encrypted backups: `--identity FILE` (or
/// `SQLITE_BACKUP_IDENTITY_FILE`), else the passphrase of a config in
/// passphrase mode. An unreadable or empty identity file is a usage error.
pub fn identities(
    identity: Option<&Path>,
    config: Option<&Config>,
) -> Result<Option<backup_core::encryption::Identities>> {
    if let Some(path) = identity {
        warn_if_others_can_read(path);
        return backup_core::encryption::Identities::read_file(path)
            .map(Some)
            .map_err(|e| UsageError(format!("--identity: {e}")).into());
    }
    Ok(config
        .and_then(|c| c.passphrase.clone())
        .map(backup_core::encryption::Identities::passphrase))
}

/// An identity file others can read opens every backup for them. ssh
/// refuses such a key; we warn instead, loudly, because refusing would block
/// a restore in the very emergency it is for, over a mode the fix for which
/// is one command.
fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return; // reading it reports the problem
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "identity file {} has mode {mode:04o}: other users of this host can read it and \
             decrypt every backup; run `chmod 600 {}`",
            path.display(),
            shlex::try_quote(&path.to_string_lossy()).unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(config: &str) -> Arc<dyn Sink> {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(config, &dir.path().join("sqlite-backup.toml")).unwrap();
        let targets = targets(&config).unwrap();
        assert_eq!(targets.len(), 2, "local and azure");
        targets[1].sink.clone()
    }

    #[test]
    fn a_config_keeps_its_remote_sinks_until_its_text_changes() {
        let a = "[azure]\nuse_emulator = true\ncontainer = \"backups\"\n";
        let b = "[azure]\nuse_emulator = true\ncontainer = \"backups\"\nprefix = \"other\"\n";
        let first = remote(a);
        assert!(
            Arc::ptr_eq(&first, &remote(a)),
            "the same text: the same sink"
        );
        let changed = remote(b);
        assert!(!Arc::ptr_eq(&first, &changed), "an edited file: a new sink");
        assert!(
            changed.location().contains("other"),
            "{}",
            changed.location()
        );
    }
}
