//! The checks a careful operator runs by hand, on live databases, snapshots
//! and artifacts: `integrity_check` is exactly `ok`, `foreign_key_check` is
//! empty, required tables exist, configured check queries return true, and
//! for artifacts, the sidecar digest matches and the stream decompresses.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufWriter, Read};
use std::path::Path;

use rusqlite::{Connection, types::Value};
use serde::{Deserialize, Serialize};

use crate::database::CheckLevel;
use crate::digest::{HashingReader, HashingWriter};
use crate::sqlite::open_private;

/// What to check in a database.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// `quick_check` or the full `integrity_check`.
    pub level: CheckLevel,
    /// Tables (or views) that must exist.
    pub required_tables: Vec<String>,
    /// Queries that must each return a non-zero integer.
    pub queries: Vec<String>,
    /// Leave out `foreign_key_check` (see [`Checks::after_backup`]).
    pub skip_foreign_keys: bool,
    /// Check that the required tables exist without counting their rows:
    /// `count(*)` visits every leaf page of a table, which a run that reads
    /// only the pages the WAL named cannot afford once a second.
    pub skip_row_counts: bool,

    /// Keys that open encrypted artifacts; without them only the stored
    /// bytes' digests are checked.
    pub identities: Option<crate::encryption::Identities>,
}

impl Checks {
    /// Full checks for a configured database.
    pub fn for_database(db: &crate::database::Database, level: CheckLevel) -> Self {
        Self {
            level,
            required_tables: db.required_tables.clone(),
            queries: db.checks.clone(),
            skip_foreign_keys: false,
            skip_row_counts: false,
            identities: None,
        }
    }

    /// With keys to open encrypted artifacts.
    pub fn with_identities(mut self, identities: Option<crate::encryption::Identities>) -> Self {
        self.identities = identities;
        self
    }

    /// The check of a snapshot right after it is taken. At `quick_check`
    /// level it leaves out `foreign_key_check`: that looks up the parent of
    /// every child row (the costliest check after `integrity_check`, growing
    /// faster than the database), and a violation is the application's
    /// data, copied faithfully, not a fault of the copy. `verify`, `check`
    /// and `restore` always run it; `integrity_check` level runs it here too.
    pub fn after_backup(db: &crate::database::Database, level: CheckLevel) -> Self {
        Self {
            skip_foreign_keys: level == CheckLevel::QuickCheck,
            ..Self::for_database(db, level)
        }
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The file could not be opened or read as SQLite.
    Unreadable {
        /// SQLite's message.
        error: String,
    },
    /// `integrity_check` / `quick_check` returned something other than `ok`.
    Integrity {
        /// The first lines it printed.
        lines: Vec<String>,
    },
    /// `foreign_key_check` returned rows.
    ForeignKeys {
        /// How many violations.
        count: usize,
        /// The first one, as `table(rowid) -> parent`.
        first: String,
    },
    /// A required table is absent.
    MissingTable {
        /// Its name.
        table: String,
    },
    /// A check query returned something other than true.
    CheckFailed {
        /// The query.
        query: String,
        /// What it returned.
        got: String,
    },
    /// The artifact's SHA-256 differs from the expected one.
    DigestMismatch {
        /// Which digest (`sidecar`, `manifest`, `database`).
        against: String,
        /// Expected hex.
        expected: String,
        /// Actual hex.
        actual: String,
    },
    /// The sidecar is missing or malformed.
    Sidecar {
        /// What is wrong.
        error: String,
    },
    /// The compressed stream is corrupt or truncated.
    Decompress {
        /// The decoder's message.
        error: String,
    },
    /// The stored size differs from the recorded one.
    SizeMismatch {
        /// Expected bytes.
        expected: u64,
        /// Actual bytes.
        actual: u64,
    },
    /// The encrypted artifact (or its sealed facts) is damaged or truncated.
    Decrypt {
        /// What age said.
        error: String,
    },
    /// None of the given identities is a recipient of the artifact: a key
    /// problem, not damage.
    WrongIdentity {
        /// Fingerprints of the artifact's recipients.
        encrypted_to: Vec<String>,
    },
    /// A pack an incremental-mode snapshot needs is missing or damaged.
    Pack {
        /// The pack's key.
        key: String,
        /// What is wrong with it.
        error: String,
    },
}

impl Problem {
    /// A problem of the keys given, not of the backup.
    pub fn is_key_problem(&self) -> bool {
        matches!(self, Self::WrongIdentity { .. })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { error } => write!(f, "not a readable SQLite database: {error}"),
            Self::Integrity { lines } => {
                write!(f, "integrity check is not `ok`: {}", lines.join("; "))
            }
            Self::ForeignKeys { count, first } => {
                write!(
                    f,
                    "foreign_key_check found {count} violation(s), first: {first}"
                )
            }
            Self::MissingTable { table } => write!(f, "required table `{table}` is missing"),
            Self::CheckFailed { query, got } => {
                write!(f, "check `{query}` returned {got}, expected true")
            }
            Self::DigestMismatch {
                against,
                expected,
                actual,
            } => write!(
                f,
                "SHA-256 does not match the {against}: expected {expected}, got {actual}"
            ),
            Self::Sidecar { error } => write!(f, "sidecar: {error}"),
            Self::Decompress { error } => {
                write!(f, "cannot decompress (corrupt or truncated): {error}")
            }
            Self::SizeMismatch { expected, actual } => {
                write!(f, "stored size is {actual} bytes, recorded {expected}")
            }
            Self::Decrypt { error } => write!(f, "cannot decrypt: {error}"),
            Self::WrongIdentity { encrypted_to } if encrypted_to == &["passphrase"] => {
                write!(f, "the passphrase given does not open this backup")
            }
            Self::WrongIdentity { encrypted_to } => write!(
                f,
                "the identity given is not a recipient of this backup (encrypted to {})",
                encrypted_to.join(", ")
            ),
            Self::Pack { key, error } => write!(f, "pack {key}: {error}"),
        }
    }
}

/// Facts about a database recorded in manifests and compared on restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbFacts {
    /// Page size in bytes.
    pub page_size: u64,
    /// Number of pages.
    pub page_count: u64,
    /// SHA-256 over the schema (`type`, `name`, `sql` of `sqlite_schema`, sorted).
    pub schema_sha256: String,
    /// Row counts of the required tables.
    pub row_counts: BTreeMap<String, u64>,
}

/// The outcome of checking one database file.
#[derive(Debug, Clone, Default)]
pub struct DbReport {
    /// Facts, when the file could be read.
    pub facts: Option<DbFacts>,
    /// Everything found wrong; empty means it passed.
    pub problems: Vec<Problem>,
}

impl DbReport {
    /// True when nothing was found wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Run every check on an open connection, one after the other.
pub fn check_connection(conn: &Connection, checks: &Checks) -> DbReport {
    let mut report = DbReport::default();
    if let Err(fatal) = check_integrity(conn, checks.level, &mut report.problems) {
        report.problems.push(fatal);
        return report;
    }
    if !checks.skip_foreign_keys && checks.level != CheckLevel::Schema {
        report.problems.extend(check_foreign_keys(conn));
    }
    check_schema(conn, checks, &mut report);
    report
}

/// `integrity_check` or `quick_check` must say exactly `ok`. `Err` when the
/// file cannot be read as a database at all: no other check is worth running.
fn check_integrity(
    conn: &Connection,
    level: CheckLevel,
    problems: &mut Vec<Problem>,
) -> Result<(), Problem> {
    let pragma = match level {
        CheckLevel::QuickCheck => "PRAGMA quick_check(100)",
        CheckLevel::IntegrityCheck => "PRAGMA integrity_check(100)",
        CheckLevel::Schema => return Ok(()),
    };
    let lines: rusqlite::Result<Vec<String>> = conn
        .prepare(pragma)
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect());
    match lines {
        Ok(lines) if lines == ["ok"] => Ok(()),
        Ok(lines) => {
            problems.push(Problem::Integrity { lines });
            Ok(())
        }
        Err(e) => Err(match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                Problem::Unreadable {
                    error: e.to_string(),
                }
            }
            _ => Problem::Integrity {
                lines: vec![e.to_string()],
            },
        }),
    }
}

/// `foreign_key_check` must return no rows.
fn check_foreign_keys(conn: &Connection) -> Option<Problem> {
    let fk: rusqlite::Result<Vec<String>> =
        conn.prepare("PRAGMA foreign_key_check").and_then(|mut s| {
            s.query_map([], |r| {
                Ok(format!(
                    "{}({}) -> {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?
                        .map_or("?".into(), |v| v.to_string()),
                    r.get::<_, String>(2)?
                ))
            })?
            .collect()
        });
    match fk {
        Ok(rows) if rows.is_empty() => None,
        Ok(rows) => Some(Problem::ForeignKeys {
            count: rows.len(),
            first: rows[0].clone(),
        }),
        Err(e) => Some(Problem::Unreadable {
            error: e.to_string(),
        }),
    }
}

/// Facts (sizes, schema hash, row counts), required tables and the
/// configured check queries.
fn check_schema(conn: &Connection, checks: &Checks, report: &mut DbReport) {
    let unreadable = |e: rusqlite::Error| Problem::Unreadable {
        error: e.to_string(),
    };
    let mut facts = DbFacts::default();
    match conn.query_row(
        "SELECT page_size, page_count FROM pragma_page_size, pragma_page_count",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
    ) {
        Ok((size, count)) => {
            facts.page_size = size as u64;
            facts.page_count = count as u64;
        }
        Err(e) => report.problems.push(unreadable(e)),
    }
    match schema_sha256(conn) {
        Ok(h) => facts.schema_sha256 = h,
        Err(e) => report.problems.push(unreadable(e)),
    }

    for table in &checks.required_tables {
        let exists = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type IN ('table','view') AND name = ?1",
                [table],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            > 0;
        if !exists {
            report.problems.push(Problem::MissingTable {
                table: table.clone(),
            });
            continue;
        }
        if checks.skip_row_counts {
            continue;
        }
        match conn.query_row(
            &format!("SELECT count(*) FROM {}", quote_ident(table)),
            [],
            |r| r.get::<_, i64>(0),
        ) {
            Ok(n) => {
                facts.row_counts.insert(table.clone(), n as u64);
            }
            Err(e) => report.problems.push(Problem::Integrity {
                lines: vec![format!("counting rows of `{table}`: {e}")],
            }),
        }
    }

    for query in &checks.queries {
        let got = conn.query_row(query, [], |r| r.get::<_, Value>(0));
        let passed = matches!(got, Ok(Value::Integer(n)) if n != 0);
        if !passed {
            report.problems.push(Problem::CheckFailed {
                query: query.clone(),
                got: match got {
                    Ok(v) => format!("{v:?}"),
                    Err(e) => format!("an error: {e}"),
                },
            });
        }
    }
    report.facts = Some(facts);
}

/// Hash of the schema: independent of page layout, changes with any DDL.
pub fn schema_sha256(conn: &Connection) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name",
    )?;
    let mut hasher = crate::digest::Sha256::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        for i in 0..4 {
            let s: String = r.get(i)?;
            hasher.update(s.as_bytes());
            hasher.update(b"\0");
        }
        hasher.update(b"\n");
    }
    Ok(hasher.finish_hex())
}

/// Check a database file that nothing else is using (a snapshot, a
/// decompressed candidate). `foreign_key_check` runs on a second connection
/// and thread while `integrity_check` runs on this one: both are
/// single-threaded scans, so on two cores a verify takes the longer of the
/// two instead of their sum.
pub fn check_file(path: &Path, checks: &Checks) -> DbReport {
    let unreadable = |e: rusqlite::Error| DbReport {
        facts: None,
        problems: vec![Problem::Unreadable {
            error: e.to_string(),
        }],
    };
    // integrity_check looks up a table row for every index entry, and
    // foreign_key_check a parent for every child: with SQLite's default
    // 2 MiB cache most lookups re-read a page from the OS. 8 MiB each
    // measured about half the system time.
    let open = |path: &Path| {
        let conn = open_private(path)?;
        conn.pragma_update(None, "cache_size", -8192)?;
        Ok::<_, rusqlite::Error>(conn)
    };
    let conn = match open(path) {
        Ok(conn) => conn,
        Err(e) => return unreadable(e),
    };
    let fk = if checks.skip_foreign_keys {
        None
    } else {
        match open(path) {
            Ok(second) => Some(std::thread::spawn(move || check_foreign_keys(&second))),
            Err(e) => return unreadable(e),
        }
    };
    let mut report = DbReport::default();
    let integrity = check_integrity(&conn, checks.level, &mut report.problems);
    let fk = fk.map(|h| {
        h.join().unwrap_or_else(|_| {
            Some(Problem::Unreadable {
                error: "foreign_key_check panicked".into(),
            })
        })
    });
    if let Err(fatal) = integrity {
        report.problems.push(fatal);
        return report;
    }
    report.problems.extend(fk.flatten());
    check_schema(&conn, checks, &mut report);
    report
}

/// The outcome of verifying one artifact.
#[derive(Debug, Clone, Default)]
pub struct ArtifactReport {
    /// SHA-256 of the artifact bytes as read.
    pub sha256: String,
    /// Artifact bytes read.
    pub size: u64,
    /// SHA-256 of the decompressed database.
    pub db_sha256: String,
    /// Decompressed bytes.
    pub db_size: u64,
    /// Database checks (empty when the stream itself was bad).
    pub db: DbReport,
    /// Stream-level problems (digest, decompression, size).
    pub problems: Vec<Problem>,
    /// The artifact is encrypted and no identity was given: only the stored
    /// bytes were checked (digests, size), not the database inside.
    pub needs_identity: bool,
}

impl ArtifactReport {
    /// All problems, stream-level first.
    pub fn all_problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().chain(&self.db.problems)
    }
    /// True when nothing was found wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.db.ok()
    }
}

/// What an artifact is expected to be.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// SHA-256 from the sidecar.
    pub sidecar_sha256: Option<String>,
    /// SHA-256 recorded in the manifest.
    pub manifest_sha256: Option<String>,
    /// Decompressed SHA-256 recorded in the manifest.
    pub db_sha256: Option<String>,
    /// Artifact size recorded in the manifest.
    pub size: Option<u64>,
    /// Recipients' fingerprints when the artifact is age-encrypted.
    pub encrypted_to: Option<Vec<String>>,
}

/// Stream an artifact once: hash it, decompress it into `scratch` (a new
/// file), hash the database bytes, then run `checks` on the result when the
/// stream itself was sound. Memory stays bounded by the decoder's window.
pub fn verify_stream(
    input: Box<dyn Read + Send>,
    compression: &crate::compress::Compression,
    expected: &Expected,
    scratch: &Path,
    checks: &Checks,
) -> io::Result<ArtifactReport> {
    let mut report = ArtifactReport::default();
    let mut hashing_in = HashingReader::new(input);
    // 0600 from creation: a copy of someone's database.
    let out = crate::fsutil::create_private(scratch)?;
    let mut hashing_out = HashingWriter::new(BufWriter::with_capacity(
        1 << 20,
        crate::fsutil::WritebackFile::new(out),
    ));
    let copy = decode_into(
        &mut hashing_in,
        &mut hashing_out,
        compression,
        expected,
        checks,
        &mut report,
    )?;
    // Drain the rest so the artifact digest covers every byte even when the
    // decoder stopped early (trailing garbage).
    let drained = io::copy(&mut hashing_in, &mut io::sink());
    if let Err(e) = copy
        && !matches!(report.problems.last(), Some(Problem::Decrypt { .. }))
    {
        report.problems.push(Problem::Decompress {
            error: e.to_string(),
        });
    }
    drained?;
    let (w, db_sha, db_size) = hashing_out.finish();
    let file = w.into_inner().map_err(|e| e.into_error())?.into_inner();
    file.sync_all()?;
    let (sha, size) = hashing_in.finish();
    report.sha256 = sha;
    report.size = size;
    report.db_sha256 = db_sha;
    report.db_size = db_size;

    compare_stored(&mut report, expected);
    if report.problems.is_empty() && !report.needs_identity {
        let db_sha = report.db_sha256.clone();
        let mut p = Vec::new();
        if let Some(want) = &expected.db_sha256
            && *want != db_sha
        {
            p.push(Problem::DigestMismatch {
                against: "manifest's database digest".into(),
                expected: want.clone(),
                actual: db_sha,
            });
        }
        report.problems.extend(p);
        report.db = check_file(scratch, checks);
    }
    Ok(report)
}

/// The decoding half of [`verify_stream`]: decrypt (when encrypted and an
/// identity is given) and decompress `input` into `out`. The outer error is
/// a decoder that cannot start; the inner one is how the copy ended, which
/// the caller reports as a problem. Decryption problems go to `report`.
fn decode_into<R: Read + Send, W: io::Write>(
    input: &mut R,
    out: &mut W,
    compression: &crate::compress::Compression,
    expected: &Expected,
    checks: &Checks,
    report: &mut ArtifactReport,
) -> io::Result<io::Result<u64>> {
    Ok(match (&expected.encrypted_to, &checks.identities) {
        (None, _) => {
            let mut decoder = compression.decoder(Box::new(&mut *input))?;
            io::copy(&mut decoder, out)
        }
        (Some(_), None) => {
            report.needs_identity = true;
            Ok(0)
        }
        (Some(to), Some(ids)) => match ids.decrypt(Box::new(&mut *input), to) {
            Ok(plain) => {
                let mut decoder = compression.decoder(plain)?;
                io::copy(&mut decoder, out).inspect_err(|e| {
                    // age reports a damaged chunk as InvalidData.
                    if e.kind() == io::ErrorKind::InvalidData {
                        report.problems.push(Problem::Decrypt {
                            error: e.to_string(),
                        });
                    }
                })
            }
            Err(crate::encryption::OpenError::WrongIdentity { encrypted_to }) => {
                report
                    .problems
                    .push(Problem::WrongIdentity { encrypted_to });
                Ok(0)
            }
            Err(crate::encryption::OpenError::Damaged(error)) => {
                report.problems.push(Problem::Decrypt { error });
                Ok(0)
            }
        },
    })
}

/// The stored bytes' digest and size against the sidecar and the manifest.
fn compare_stored(report: &mut ArtifactReport, expected: &Expected) {
    let mut compare = |against: &str, want: &Option<String>, got: &str| {
        if let Some(want) = want
            && want != got
        {
            report.problems.push(Problem::DigestMismatch {
                against: against.into(),
                expected: want.clone(),
                actual: got.to_string(),
            });
        }
    };
    compare("sidecar", &expected.sidecar_sha256, &report.sha256.clone());
    compare(
        "manifest",
        &expected.manifest_sha256,
        &report.sha256.clone(),
    );
    if let Some(want) = expected.size
        && want != report.size
    {
        report.problems.push(Problem::SizeMismatch {
            expected: want,
            actual: report.size,
        });
    }
}

/// Why an artifact could not be verified at all (as opposed to being found bad).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading from the sink failed.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// Local scratch I/O failed.
    #[error("scratch file {path}: {source}")]
    Scratch {
        /// Scratch path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The database digest a check of `entry` should find. An encrypted entry's
/// digest is sealed: opened with `identities`, or `None` without them (the
/// content is not checked then). Opening failures go to `problems`.
pub fn expected_db_sha256(
    entry: &crate::manifest::Entry,
    identities: Option<&crate::encryption::Identities>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match (identities, entry.is_encrypted()) {
        (_, false) => Some(entry.db_sha256.clone()),
        (None, true) => None,
        (Some(ids), true) => match entry.opened(ids) {
            Ok(e) => Some(e.db_sha256),
            Err(crate::encryption::OpenError::WrongIdentity { encrypted_to }) => {
                problems.push(Problem::WrongIdentity { encrypted_to });
                None
            }
            Err(crate::encryption::OpenError::Damaged(error)) => {
                problems.push(Problem::Decrypt {
                    error: format!("the manifest's sealed facts: {error}"),
                });
                None
            }
        },
    }
}

/// Read and parse a sidecar; a missing or malformed one becomes a problem.
pub(crate) fn read_sidecar(
    sink: &dyn crate::sink::Sink,
    key: &str,
) -> Result<Result<crate::digest::Sidecar, Problem>, crate::sink::SinkError> {
    match crate::sink::get_bytes(sink, key) {
        Ok(bytes) => Ok(String::from_utf8(bytes)
            .map_err(|_| Problem::Sidecar {
                error: format!("{key} is not UTF-8 text"),
            })
            .and_then(|t| {
                crate::digest::Sidecar::parse(&t).map_err(|e| Problem::Sidecar {
                    error: format!("{key}: {e}"),
                })
            })),
        Err(e) if e.is_not_found() => Ok(Err(Problem::Sidecar {
            error: format!("{key} is missing"),
        })),
        Err(e) => Err(e),
    }
}

/// Verify one catalogued artifact of a sink: sidecar, manifest digests and
/// size, decompression into `scratch` (a new file), and `checks`.
pub fn verify_entry(
    sink: &dyn crate::sink::Sink,
    entry: &crate::manifest::Entry,
    scratch: &Path,
    checks: &Checks,
) -> Result<ArtifactReport, VerifyError> {
    let mut pre = Vec::new();
    let sidecar = match read_sidecar(sink, &entry.sidecar_key)? {
        Ok(s) => {
            if s.file_name != crate::naming::file_name(&entry.key) {
                pre.push(Problem::Sidecar {
                    error: format!(
                        "names {:?}, expected {:?}",
                        s.file_name,
                        crate::naming::file_name(&entry.key)
                    ),
                });
            }
            Some(s.sha256)
        }
        Err(p) => {
            pre.push(p);
            None
        }
    };
    let compression = crate::compress::Compression::new(entry.compression);
    let db_sha256 = expected_db_sha256(entry, checks.identities.as_ref(), &mut pre);
    let expected = Expected {
        sidecar_sha256: sidecar,
        manifest_sha256: Some(entry.sha256.clone()),
        db_sha256,
        size: Some(entry.size),
        encrypted_to: entry.is_encrypted().then(|| entry.encrypted_to.clone()),
    };
    if entry.pages.is_some() {
        return verify_pages(sink, entry, pre, scratch, checks);
    }
    let input = sink.get(&entry.key)?;
    let mut report =
        verify_stream(input, &compression, &expected, scratch, checks).map_err(|source| {
            VerifyError::Scratch {
                path: scratch.display().to_string(),
                source,
            }
        })?;
    if !pre.is_empty() {
        for p in report.problems.drain(..) {
            if !pre.contains(&p) {
                pre.push(p);
            }
        }
        report.problems = pre;
        report.db = DbReport::default();
    }
    Ok(report)
}

/// [`verify_entry`] for an incremental-mode snapshot: its page-hash index
/// against the manifest and sidecar, then the image reassembled from its
/// packs (each read once) into `scratch`, its digests against the
/// manifest's, then `checks`.
fn verify_pages(
    sink: &dyn crate::sink::Sink,
    entry: &crate::manifest::Entry,
    mut problems: Vec<Problem>,
    scratch: &Path,
    checks: &Checks,
) -> Result<ArtifactReport, VerifyError> {
    let mut report = ArtifactReport::default();
    match crate::sink::get_bytes(sink, &entry.key) {
        Ok(index) => {
            report.sha256 = crate::digest::Sha256::hex_of(&index);
            report.size = index.len() as u64;
            if report.sha256 != entry.sha256 {
                problems.push(Problem::DigestMismatch {
                    against: "manifest".into(),
                    expected: entry.sha256.clone(),
                    actual: report.sha256.clone(),
                });
            }
        }
        Err(e) if e.is_not_found() => problems.push(Problem::Pack {
            key: entry.key.clone(),
            error: "page-hash index is missing".into(),
        }),
        Err(e) => return Err(e.into()),
    }
    let scratch_err = |source| VerifyError::Scratch {
        path: scratch.display().to_string(),
        source,
    };
    // An entry read from a checkpoint has its runs in its manifest, which
    // holds the entry as stored: load them before its facts are opened.
    let mut loaded = entry.clone();
    if let Err(e) = crate::manifest::view::load_runs(sink, &mut loaded) {
        problems.push(Problem::Pack {
            key: entry.key.clone(),
            error: e.to_string(),
        });
        report.problems = problems;
        return Ok(report);
    }
    let entry = &loaded;
    let opened;
    let (entry, keys) = match (entry.is_encrypted(), checks.identities.as_ref()) {
        (false, _) => (entry, None),
        // Without a key, what can be checked is what is stored.
        (true, None) => {
            report.needs_identity = true;
            problems.extend(stored_packs(sink, entry)?);
            report.problems = problems;
            return Ok(report);
        }
        (true, Some(keys)) => match entry.opened(keys) {
            Ok(e) => {
                opened = e;
                (&opened, Some(keys))
            }
            // The caller's check of the sealed facts named the problem.
            Err(_) => {
                report.problems = problems;
                return Ok(report);
            }
        },
    };
    match crate::incremental::reassemble_to(sink, entry, scratch, keys).map_err(scratch_err)? {
        Ok(image) => {
            if let Some((which, expected, actual)) = image.mismatch(entry) {
                problems.push(Problem::DigestMismatch {
                    against: format!("manifest's {which}"),
                    expected,
                    actual,
                });
            }
            report.db_sha256 = image.sha256;
            report.db_size = image.size;
        }
        Err(p) => problems.push(Problem::Pack {
            key: p.key,
            error: p.reason,
        }),
    }
    if problems.is_empty() {
        report.db = check_file(scratch, checks);
    }
    report.problems = problems;
    Ok(report)
}

/// The problems of the packs `entry` needs, from their stored bytes alone:
/// each one's size and SHA-256 against the manifest's (a sealed chain
/// checked without its key).
fn stored_packs(
    sink: &dyn crate::sink::Sink,
    entry: &crate::manifest::Entry,
) -> Result<Vec<Problem>, VerifyError> {
    let mut problems = Vec::new();
    for p in entry.pages.iter().flat_map(|m| &m.packs) {
        let input = match sink.get(&p.key) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                problems.push(Problem::Pack {
                    key: p.key.clone(),
                    error: "missing".into(),
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut hashing = HashingReader::new(input);
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| {
            VerifyError::from(crate::sink::SinkError::Remote {
                op: "get",
                key: p.key.clone(),
                message: e.to_string(),
            })
        })?;
        let (sha, size) = hashing.finish();
        if size != p.size || sha != p.sha256 {
            problems.push(Problem::Pack {
                key: p.key.clone(),
                error: format!(
                    "stored bytes differ from the manifest's ({size} bytes, SHA-256 {sha}; expected {} bytes, {})",
                    p.size, p.sha256
                ),
            });
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database whose one child row points at a parent that does not
    /// exist (written with enforcement off, as many applications run).
    fn orphaned(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("orphan.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id));
             INSERT INTO parent VALUES (1);
             INSERT INTO child VALUES (1, 1), (2, 7);",
        )
        .unwrap();
        path
    }

    #[test]
    fn check_file_reports_foreign_key_violations_unless_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = orphaned(dir.path());
        let checks = Checks {
            level: CheckLevel::IntegrityCheck,
            required_tables: vec!["child".into()],
            ..Checks::default()
        };
        for report in [
            check_file(&path, &checks),
            check_connection(&open_private(&path).unwrap(), &checks),
        ] {
            assert_eq!(
                report.problems,
                [Problem::ForeignKeys {
                    count: 1,
                    first: "child(2) -> parent".into()
                }]
            );
            assert_eq!(report.facts.unwrap().row_counts["child"], 2);
        }
        let skipping = Checks {
            skip_foreign_keys: true,
            ..checks
        };
        assert!(check_file(&path, &skipping).ok());
    }

    #[test]
    fn check_file_stops_at_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let report = check_file(&path, &Checks::default());
        assert!(
            matches!(report.problems.as_slice(), [Problem::Unreadable { .. }]),
            "{:?}",
            report.problems
        );
        assert!(report.facts.is_none());
    }

    #[test]
    fn after_backup_skips_foreign_keys_only_at_quick_check() {
        let db = crate::database::Database {
            label: "app".into(),
            path: "app.db".into(),
            required_tables: vec!["tasks".into()],
            checks: vec![],
            retention: Default::default(),
            encryption: None,
            incremental: false,
            host: None,
        };
        assert!(Checks::after_backup(&db, CheckLevel::QuickCheck).skip_foreign_keys);
        assert!(!Checks::after_backup(&db, CheckLevel::IntegrityCheck).skip_foreign_keys);
        assert!(!Checks::for_database(&db, CheckLevel::QuickCheck).skip_foreign_keys);
    }
}
