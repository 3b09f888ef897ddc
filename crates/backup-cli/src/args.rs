//! Command-line arguments as typed (the "low-level" stage). `settings.rs`
//! resolves them with the config file into what the engine runs.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// WAL-safe online backups of live SQLite databases: snapshot, compress,
/// checksum, ship to local tiers, Azure Blob and S3, verify, restore.
#[derive(Debug, Parser)]
#[command(
    name = "sqlite-backup",
    version,
    after_help = "Examples:\n  sqlite-backup demo                          try it: back up a demo database, no setup\n  sqlite-backup backup                        back up every configured database\n  sqlite-backup backup --label app --tag r75  one database, tagged with its round\n  sqlite-backup list                          what backups exist, per database\n  sqlite-backup verify --latest app           full check of the newest backup\n  sqlite-backup restore app --dry-run         show the restore plan, change nothing\n\nConfig: --config, else $SQLITE_BACKUP_CONFIG, else ./sqlite-backup.toml, else /etc/sqlite-backup.toml.\nExit codes: 0 success, 1 a database failed or corruption was found, 2 bad usage or config."
)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SQLITE_BACKUP_CONFIG",
        default_value = "sqlite-backup.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// When log lines on stderr are colored: auto colors a terminal unless
    /// NO_COLOR is set (see no-color.org).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value_t = Color::Auto
    )]
    pub color: Color,

    /// Only warnings and errors on stderr; no progress bars.
    #[arg(long, short, global = true, help_heading = "Global options")]
    pub quiet: bool,

    /// Also append log lines (same format, same level) to this file.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SQLITE_BACKUP_LOG_FILE",
        value_name = "FILE"
    )]
    pub log_file: Option<PathBuf>,

    /// age identity file (private key) that opens encrypted backups, for
    /// restore and verify. Backups themselves need only the public keys.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SQLITE_BACKUP_IDENTITY_FILE",
        value_name = "FILE"
    )]
    pub identity: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parse the command line, with the linked SQLite's version and fast
    /// paths in `--version` (known only at run time).
    pub fn parse_with_build() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let version = format!(
            "{} with {}",
            env!("CARGO_PKG_VERSION"),
            backup_core::sqlite::build()
        );
        // Once per process; clap takes `&'static str` without its `string` feature.
        let version: &'static str = Box::leak(version.into_boxed_str());
        let matches = Cli::command().version(version).get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if config_defaulted(&matches) {
            cli.config = discover(&cli.config, Path::new(SYSTEM_CONFIG));
        }
        cli
    }
}

/// The config a package installs, used when neither `--config` nor
/// `$SQLITE_BACKUP_CONFIG` names one and the working folder has none.
pub const SYSTEM_CONFIG: &str = "/etc/sqlite-backup.toml";

/// Whether `--config` took its default at every level of the command line
/// (a global option can be given after any subcommand).
fn config_defaulted(matches: &clap::ArgMatches) -> bool {
    let mut m = Some(matches);
    while let Some(level) = m {
        if level
            .value_source("config")
            .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
        {
            return false;
        }
        m = level.subcommand().map(|(_, sub)| sub);
    }
    true
}

/// `default` (`./sqlite-backup.toml`) when it exists, else `system` when that
/// exists, else `default` again, so that errors name the file people expect.
fn discover(default: &Path, system: &Path) -> PathBuf {
    if !default.exists() && system.is_file() {
        system.to_path_buf()
    } else {
        default.to_path_buf()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// When to color.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// On a terminal, unless NO_COLOR is set to anything but an empty string.
    Auto,
    /// Always, even into a pipe or file.
    Always,
    /// Never.
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up databases now.
    #[command(
        after_help = "Examples:\n  sqlite-backup backup\n  sqlite-backup backup --label mission-control --label costs\n  sqlite-backup backup --tag premigrate          before a destructive migration\n  sqlite-backup backup --tag phase1 --tier cold  a phase seal, also copied off-host\n  sqlite-backup backup --dry-run                 print planned paths; no snapshot, no upload\n  sqlite-backup backup --json | jq .failed       for scripts\n\nEach database is snapshotted once (one read transaction; writers keep going),\ncompressed and hashed in one pass, sent to every sink, checked, and recorded in\na manifest written last. A missing source file is a warning, not a failure."
    )]
    Backup(BackupArgs),
    /// List backups recorded in the catalogs, newest first.
    #[command(
        after_help = "Examples:\n  sqlite-backup list\n  sqlite-backup list --label mission-control\n  sqlite-backup list --json | jq '.[0]'\n  sqlite-backup list --all-sources               other hosts' backups in shared sinks too\n\nReads the manifests (one listing of manifests/ per sink), never every object.\nOnly this host's own backups unless --all-sources or --source."
    )]
    List(ListArgs),
    /// Verify a backup artifact: digest, decompression, integrity, schema, checks.
    #[command(
        after_help = "Examples:\n  sqlite-backup verify data/backups/app-r75-20260416-130812.db.zst\n  sqlite-backup verify --latest app\n\nChecks: SHA-256 against the sidecar (and the manifest when known), the stream\ndecompresses, PRAGMA integrity_check is exactly `ok`, foreign_key_check is\nempty, required tables exist, configured check queries return true."
    )]
    Verify(VerifyArgs),
    /// Check a live database in place (read-only), exit 1 on corruption.
    #[command(
        after_help = "Examples:\n  sqlite-backup check /srv/app/mission-control.db\n  sqlite-backup check data/colibri.db --quick\n\nRuns PRAGMA integrity_check (or quick_check) and foreign_key_check on a\nread-only connection; in WAL mode writers are not blocked. If the path belongs\nto a configured database, its required tables and checks run too."
    )]
    Check(CheckArgs),
    /// Restore a database from its newest good backup, never destroying the live file.
    #[command(
        after_help = "Examples:\n  sqlite-backup restore mission-control --dry-run     print the plan, change nothing\n  sqlite-backup restore mission-control               newest backup that passes every check\n  sqlite-backup restore colibri --tag r75             newest backup tagged r75\n  sqlite-backup restore colibri --date 2026-04-16     newest backup of that UTC day\n  sqlite-backup restore app --to /tmp/app-copy.db     restore a copy elsewhere\n  sqlite-backup restore app --source web-1            on a new host: web-1's database\n  sqlite-backup restore app --json | jq .restored.run_id\n\nEach candidate is downloaded, its digest checked, decompressed beside the\ntarget and fully verified; a failing candidate makes the restore walk back to\nthe next older one (hot, warm, then cold), saying what each step loses. The live\ndatabase is moved aside as <name>.broken-YYYYMMDD-HHMMSS, never deleted."
    )]
    Restore(RestoreArgs),
    /// Delete backups the retention policy no longer keeps.
    #[command(
        after_help = "Examples:\n  sqlite-backup prune --dry-run     the keep/delete table with reasons; nothing deleted\n  sqlite-backup prune --label app\n\nThe newest verified backup of a database is never deleted."
    )]
    Prune(PruneArgs),
    /// Per database: last success, its age, size, failure count; health-check exit code.
    #[command(
        after_help = "Examples:\n  sqlite-backup status\n  sqlite-backup status --offline       state file only, no sink contacted\n  sqlite-backup status --json\n  sqlite-backup status --reset-failures\n\nReads the state file and the sinks' catalogs, and names any disagreement.\nExits 1 when a database's newest backup is older than max_age_hours."
    )]
    Status(StatusArgs),
    /// Restore drill: restore backups into scratch with every check, measure the RTO.
    #[command(
        after_help = "Examples:\n  sqlite-backup drill\n  sqlite-backup drill --label app --from azure\n\nPer database and sink, the newest backup and one older one chosen at random are\nrestored into a scratch folder in the temp folder (never near the live file,\nwhich is not opened) with every check a restore runs, post_restore included\nwhen drill_post_restore = true. The newest one's restore time is the RTO.\nResults go to the state file and the metrics; failures alert like backups\n(their own streak). Exit 1 when any backup does not restore."
    )]
    Drill(DrillArgs),
    /// Write an HTML page of every database's health and backup history.
    #[command(
        after_help = "Example:\n  sqlite-backup report --html /var/www/backups.html\n\nOne self-contained file (no scripts, no outside resources), from the catalogs\nof every sink and the state file."
    )]
    Report(ReportArgs),
    /// Run backups on a schedule (or once, for cron and timers).
    #[command(
        after_help = "Examples:\n  sqlite-backup daemon                  every 4 hours\n  sqlite-backup daemon --interval 30m\n  sqlite-backup daemon --once           one run, for cron / systemd timers\n  sqlite-backup daemon --interval 1s --prune-every 1m\n                                        continuous, thinned by the retention policy each minute"
    )]
    Daemon(DaemonArgs),
    /// Print service files for systemd timers or launchd.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// The hash-chained catalog: print or anchor its head.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Create a demo WAL database with a busy writer, back it up, verify it.
    #[command(
        after_help = "Example:\n  sqlite-backup demo            # writes ./sqlite-backup-demo/\n  cd sqlite-backup-demo && sqlite-backup list"
    )]
    Demo(DemoArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  sqlite-backup completions bash > /etc/bash_completion.d/sqlite-backup\n  sqlite-backup completions zsh > \"${fpath[1]}/_sqlite-backup\"\n  sqlite-backup completions fish > ~/.config/fish/completions/sqlite-backup.fish"
    )]
    Completions(CompletionsArgs),
    /// Write the man pages (one per command) into a folder.
    #[command(
        after_help = "Example:\n  sqlite-backup man /usr/local/share/man/man1 && man sqlite-backup-restore"
    )]
    Man(ManArgs),
}

/// `completions` arguments.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man` arguments.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write `sqlite-backup.1`, `sqlite-backup-backup.1`, … into
    /// (created if missing).
    pub dir: PathBuf,
}

/// `report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write the HTML page here.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
}

/// `backup` arguments.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Only these databases (repeatable). Default: all.
    #[arg(long = "label", short = 'l', value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Trigger tag recorded in the name and manifest: r75, session, premigrate, phase1 …
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Also copy to this tier (`cold`: the off-host folder of `[local] cold`).
    #[arg(long, value_enum)]
    pub tier: Option<TierArg>,
    /// Print the planned artifact paths; take no snapshot, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output: the run's (or the plan's) result as one
    /// JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Extra tier for a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    /// The off-host cold tier.
    Cold,
}

/// `list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these databases (repeatable). Default: all.
    #[arg(long = "label", short = 'l', value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Show every source's backups: other machines and files sharing these
    /// sinks under any label (a SOURCE column tells them apart).
    #[arg(long, conflicts_with = "source")]
    pub all_sources: bool,
    /// Another machine's or file's backups, as `list
    /// --all-sources` prints them (`web-2:/srv/app.db`) or by host name
    /// alone. Default: this machine's own database file only.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
}

/// `verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Path of an artifact file (its `.sha256` sidecar must sit beside it).
    #[arg(required_unless_present_any = ["latest", "catalog"], conflicts_with_all = ["latest", "catalog"])]
    pub artifact: Option<PathBuf>,
    /// Verify the newest backup of this database instead.
    #[arg(long, value_name = "LABEL")]
    pub latest: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Walk the hash-chained catalog of every sink instead.
    #[arg(long, conflicts_with = "latest")]
    pub catalog: bool,
    /// With --catalog: the append-only anchor file to compare the heads with.
    #[arg(long, requires = "catalog", value_name = "FILE")]
    pub anchor: Option<PathBuf>,
    /// With --catalog: also re-hash every artifact.
    #[arg(long, requires = "catalog")]
    pub deep: bool,
    /// Another machine's or file's snapshots of the label, as `list
    /// --all-sources` prints them (`web-2:/srv/app.db`) or by host name
    /// alone. Default: this machine's own database file only.
    #[arg(long, value_name = "SOURCE", requires = "latest")]
    pub source: Option<String>,
}

/// `restore` arguments.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The database to restore.
    pub label: String,
    /// Restore to this path instead of the configured database path.
    #[arg(long, value_name = "PATH")]
    pub to: Option<PathBuf>,
    /// Which snapshot: `latest` (default), or the newest taken at or before
    /// a time: RFC 3339 (`2026-12-01T14:30:00Z`) or an age (`15m`, `2h`, `1d`).
    #[arg(long, value_name = "TIME", conflicts_with_all = ["date", "tag", "id"])]
    pub at: Option<String>,
    /// Newest snapshot taken on this UTC day (YYYY-MM-DD).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    /// Newest snapshot with this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// The snapshot of this run id (see `list`).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Only consider this sink (`local`, `cold`, `azure`, `s3`).
    #[arg(long, value_name = "SINK")]
    pub from: Option<String>,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Restore even if another process has the database open (it is still moved aside, not deleted).
    #[arg(long)]
    pub force: bool,
    /// Another machine's or file's snapshots of the label, as `list
    /// --all-sources` prints them (`web-2:/srv/app.db`) or by host name
    /// alone. Default: this machine's own database file only.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Machine-readable output: the result as one JSON object on stdout;
    /// the steps, as they happen, go to stderr.
    #[arg(long)]
    pub json: bool,
}

/// `prune` arguments.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only these databases (repeatable). Default: all.
    #[arg(long = "label", short = 'l', value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Print the keep/delete table; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output: the plan and what each sink did, as one
    /// JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Reset every consecutive-failure counter (backups and drills) to zero.
    #[arg(long)]
    pub reset_failures: bool,
    /// Read only the state file; contact no sink (for frequent health checks).
    #[arg(long)]
    pub offline: bool,
}

/// `drill` arguments.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Only these databases (repeatable). Default: all.
    #[arg(long = "label", short = 'l', value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Only this sink (`local`, `cold`, `azure`, `s3`). Default: every sink.
    #[arg(long, value_name = "SINK")]
    pub from: Option<String>,
    /// Another machine's or file's snapshots of the label, as `list
    /// --all-sources` prints them (`web-2:/srv/app.db`) or by host name
    /// alone. Default: this machine's own database file only.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Machine-readable output: per database and sink, each snapshot
    /// drilled, its restore time and result, as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `daemon` arguments.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Time between runs: 4h, 30m, 90s.
    #[arg(long, default_value = "4h")]
    pub interval: String,
    /// Run once and exit (for cron / systemd timers / launchd).
    #[arg(long)]
    pub once: bool,
    /// Also prune by the retention policy after a run, at most this often
    /// (1m, 1h): a daemon at `--interval 1s` otherwise lists every run
    /// forever. Off by default; with --once, prunes after the run.
    #[arg(long, value_name = "INTERVAL")]
    pub prune_every: Option<String>,
}

/// `schedule` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Print a systemd service + timer pair or a launchd plist.
    #[command(
        after_help = "Examples:\n  sqlite-backup schedule print --systemd --user app            every 4h, as the account `app`\n  sqlite-backup schedule print --systemd --user app --interval 1s   continuous: one daemon service\n  sqlite-backup schedule print --launchd --interval 1h\n\nThe systemd service is sandboxed: read-only except the folders the config writes\n(ReadWritePaths), no privileges; check it with `systemd-analyze security`."
    )]
    Print(SchedulePrintArgs),
}

/// `schedule print` arguments.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("format").required(true).args(["systemd", "launchd"])))]
pub struct SchedulePrintArgs {
    /// systemd service and timer units.
    #[arg(long)]
    pub systemd: bool,
    /// A launchd plist (StartInterval).
    #[arg(long)]
    pub launchd: bool,
    /// Interval between runs.
    #[arg(long, default_value = "4h")]
    pub interval: String,
    /// systemd: the account the service runs as (one that may read the
    /// databases and write their folders, as the application's own user
    /// can). Without it the unit runs as root.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

/// `catalog` subcommands.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Print the chain head (SHA-256 of the newest manifest) of every sink.
    #[command(
        after_help = "Examples:\n  sqlite-backup catalog head\n  sqlite-backup catalog head --json | jq -r '.heads[] | \"\\(.sink) \\(.head)\"'"
    )]
    Head(HeadArgs),
    /// Append a line (time, sink, head) per sink to an append-only file you keep elsewhere.
    #[command(
        after_help = "Example:\n  sqlite-backup catalog anchor --append /mnt/offsite/sqlite-backup.anchors\n\nRefused when a chain does not verify or no longer holds what the file anchored\nbefore; `verify --catalog --anchor FILE` later proves nothing was rewritten."
    )]
    Anchor(AnchorArgs),
    /// Bring a forked chain back to one chain; keeps every manifest.
    #[command(
        after_help = "Examples:\n  sqlite-backup catalog repair --dry-run   show what would be re-linked\n  sqlite-backup catalog repair\n\nFor catalogs that forked before appends were serialised (two runs at once named\nthe same previous manifest). Nothing is deleted or rewritten: one repair manifest\nis appended whose `relinked` field lists every manifest off the chain, oldest\nfirst, with its SHA-256; `verify --catalog` then reaches them through it.\nAny other problem (altered or deleted manifests, broken sidecars) is refused."
    )]
    Repair(RepairArgs),
    /// Record backups other tools made (the Azure script's, the Colibri runbook's, or any
    /// naming) in the catalog, where they lie, after checking each.
    #[command(
        after_help = "Examples:\n  sqlite-backup catalog adopt --dry-run                 what would be adopted, and why not\n  sqlite-backup catalog adopt                           both built-in layouts, every sink\n  sqlite-backup catalog adopt --layout azure-script --sink azure\n  sqlite-backup catalog adopt --pattern 'old/{label}_{yyyymmdd}_{time}{ext}'\n  sqlite-backup catalog adopt --pattern 'dumps/nightly.db.gz' --label app\n\nLayouts:\n  azure-script  sqlite/{date}/{label}.db.gz with a .sha256 sidecar (the 4-hourly script;\n                {date}/{label}.db.gz below the Azure sink's default prefix sqlite)\n  colibri       {label}-{tag}-{yyyymmdd}.db and {label}-{yyyymmdd}.db (the Colibri runbook)\n\nEach candidate must match its sidecar (when it has one), decompress, pass\nintegrity_check and foreign_key_check, and hold the database's required_tables and\nchecks; a candidate that fails is listed with the reason and not adopted (exit 1).\nNothing is moved, renamed or rewritten; a .sha256 sidecar is written beside a backup\nthat has none. Adopting twice adopts nothing twice. Adopted backups are kept by\n`prune` unless [retention] adopted = \"policy\"."
    )]
    Adopt(AdoptArgs),
}

/// A built-in layout of `catalog adopt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdoptLayout {
    /// `sqlite/{date}/{label}{ext}` with `.sha256` sidecars (also below the prefix `sqlite`).
    AzureScript,
    /// `{label}-{tag}-{yyyymmdd}{ext}` and `{label}-{yyyymmdd}{ext}`.
    Colibri,
}

/// `catalog adopt` arguments.
#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// A built-in layout (repeatable). Without --layout or --pattern: both.
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub layout: Vec<AdoptLayout>,
    /// Any other naming, in the template syntax of artifact names: {label} {tag} {date}
    /// {yyyymmdd} {time} {run} {ext} (repeatable; the first that fits a key names it).
    #[arg(long, value_name = "TEMPLATE")]
    pub pattern: Vec<String>,
    /// Adopt backups whose name gives no configured label (or no label) as this database's.
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// Only this sink (default: every configured one).
    #[arg(long, value_name = "NAME")]
    pub sink: Option<String>,
    /// Show what would be adopted, rejected or skipped, and why; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output: `{"sinks": [{"sink", "manifest", "found": [...]}]}`.
    #[arg(long)]
    pub json: bool,
}

/// `catalog head` arguments.
#[derive(Debug, Args)]
pub struct HeadArgs {
    /// Machine-readable output: `{"heads": [{"sink", "head"}]}`.
    #[arg(long)]
    pub json: bool,
}

/// `catalog repair` arguments.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Print what would be re-linked; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `catalog anchor` arguments.
#[derive(Debug, Args)]
pub struct AnchorArgs {
    /// The anchor file.
    #[arg(long, value_name = "FILE")]
    pub append: PathBuf,
}

/// `check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The live database file.
    pub db_path: PathBuf,
    /// Run quick_check instead of the full integrity_check.
    #[arg(long)]
    pub quick: bool,
    /// Machine-readable output: the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo database, config and backups.
    #[arg(long, default_value = "sqlite-backup-demo")]
    pub dir: PathBuf,
    /// Approximate size of the demo database in MB.
    #[arg(long, default_value_t = 20)]
    pub size_mb: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_system_config_is_the_last_resort() {
        let dir = tempfile::tempdir().unwrap();
        let (local, system) = (
            dir.path().join("sqlite-backup.toml"),
            dir.path().join("etc.toml"),
        );
        assert_eq!(discover(&local, &system), local, "neither exists");
        std::fs::write(&system, "").unwrap();
        assert_eq!(discover(&local, &system), system);
        std::fs::write(&local, "").unwrap();
        assert_eq!(
            discover(&local, &system),
            local,
            "the working folder's first"
        );
    }

    #[test]
    fn a_config_given_anywhere_is_not_a_default() {
        let defaulted = |args: &[&str]| {
            config_defaulted(&Cli::command().get_matches_from(args.iter().copied()))
        };
        assert!(defaulted(&["sqlite-backup", "status"]));
        assert!(!defaulted(&[
            "sqlite-backup",
            "--config",
            "a.toml",
            "status"
        ]));
        assert!(!defaulted(&[
            "sqlite-backup",
            "status",
            "--config",
            "a.toml"
        ]));
        assert!(Cli::try_parse_from(["sqlite-backup", "status"]).is_ok());
    }
}
