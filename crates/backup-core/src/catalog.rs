//! Verify a sink's hash-chained catalog: walk the manifests from the head,
//! check every link, every recorded artifact, and the heads anchored
//! outside the sink.
//!
//! What is detected, and how it is named:
//! - a **deleted** manifest: a `previous` that no stored manifest has, while
//!   the manifest it names by `previous_run_id` is absent
//!   ([`CatalogProblem::Deleted`]);
//! - an **altered** manifest: its bytes no longer hash to what the next
//!   manifest's `previous` names; the fields that changed are found by
//!   comparing with the next manifest's `previous_fields`
//!   ([`CatalogProblem::Altered`]). The head has no next manifest: an altered head
//!   is caught by the anchor ([`CatalogProblem::AnchorNotInChain`]);
//! - a **reordered** chain: a manifest stored under another run's key
//!   ([`CatalogProblem::Misplaced`]), or a link to a later run ([`CatalogProblem::OutOfOrder`]);
//! - a **fork**: two manifests naming the same previous ([`CatalogProblem::Fork`]),
//!   and manifests the walk from the head never reaches ([`CatalogProblem::Unlinked`]);
//!   unless a later manifest of the chain re-linked them (`catalog repair`,
//!   field `relinked`, each vouched for by its SHA-256);
//! - a manifest that does not match its **sidecar**, the head included,
//!   which no later manifest vouches for ([`CatalogProblem::SidecarMismatch`]), or
//!   whose sidecar is gone while older manifests have theirs;
//! - an entry naming a **key no sink would store** (`../../app.db`,
//!   [`CatalogProblem::InvalidKey`]): nothing checks or restores such an entry;
//! - an **artifact** that is gone, has another size or (with
//!   [`ArtifactCheck::Deep`]) other bytes than recorded;
//! - a **head that disagrees with the anchor file**: an anchored head that is
//!   no longer on the chain (history rewritten, head altered, newest runs
//!   deleted).
//!
//! Artifacts recorded as pruned by a later manifest of the chain are not
//! expected to exist. Everything goes through [`Sink`], so local folders and
//! object storage are checked the same way; without [`ArtifactCheck::Deep`]
//! the cost is one listing, one read per manifest and two size lookups per
//! artifact.
//!
//! ```
//! use backup_core::{catalog, sink::MemorySink};
//! let sink = MemorySink::new("memory");
//! let t = jiff::Timestamp::UNIX_EPOCH;
//! catalog::append::write_manifest(&sink, "19700101T000000Z-0001", t, t, vec![], vec![]).unwrap();
//! catalog::append::write_manifest(&sink, "19700101T000001Z-0002", t, t, vec![], vec![]).unwrap();
//! let report = catalog::verify(&sink, &catalog::Options::default(), None).unwrap();
//! assert!(report.ok(), "{:?}", report.problems);
//! assert_eq!(report.chain, 2);
//! ```

pub mod append;
pub mod repair;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;

use jiff::Timestamp;
use serde::Serialize;

use crate::anchor::AnchorLog;
use crate::compress::Compression;
use crate::digest::{HashingReader, HashingWriter, Sha256};
use crate::manifest::{self, Entry, Manifest, view};
use crate::sink::{Sink, SinkError, get_bytes};

/// How much of each recorded artifact to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactCheck {
    /// Only the chain of manifests.
    Skip,
    /// Artifact and sidecar exist, artifact size as recorded (no reads).
    #[default]
    Cheap,
    /// Also stream every artifact: SHA-256 of its bytes and of the
    /// decompressed database as recorded, sidecar as recorded.
    Deep,
}

/// What [`verify`] checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Artifact checks.
    pub artifacts: ArtifactCheck,
}

/// Something wrong with a catalog. Every variant names the manifest (key)
/// and, where it applies, the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CatalogProblem {
    /// A stored manifest that is not valid JSON of our format.
    Unreadable {
        /// Manifest key.
        key: String,
        /// Parser message.
        message: String,
    },
    /// A manifest stored under the key of another run (field `run_id`):
    /// manifests were renamed or swapped.
    Misplaced {
        /// Where it is stored.
        key: String,
        /// The run id it records.
        run_id: String,
    },
    /// A manifest whose field `sink` names neither this sink nor the sink
    /// this catalog began on (see [`Report::copy_of`]): copied over from
    /// another sink's catalog.
    WrongSink {
        /// Manifest key.
        key: String,
        /// The sink it records.
        sink: String,
    },
    /// A manifest named by the next one is not stored.
    Deleted {
        /// Its run id (field `previous_run_id` of `named_by`).
        run_id: String,
        /// The key it should have.
        key: String,
        /// SHA-256 it had (field `previous` of `named_by`).
        sha256: String,
        /// The manifest that names it.
        named_by: String,
    },
    /// A manifest whose bytes changed since the next one was written.
    Altered {
        /// Manifest key.
        key: String,
        /// SHA-256 recorded in field `previous` of `named_by`.
        recorded: String,
        /// SHA-256 of its bytes now.
        actual: String,
        /// The manifest that links to it.
        named_by: String,
        /// Changed field paths (`entries[0].size`), from `previous_fields`
        /// of `named_by`; empty when they cannot be told.
        fields: Vec<String>,
    },
    /// Field `previous` names no stored manifest, and the manifest does not
    /// say which run it was (written before `previous_run_id` existed).
    BrokenLink {
        /// The manifest with the dangling link.
        key: String,
        /// The SHA-256 it names.
        previous: String,
    },
    /// A link that goes forward in time: field `previous` of `key` names a
    /// manifest of a later (or the same) run.
    OutOfOrder {
        /// The manifest holding the link.
        key: String,
        /// The manifest it links to.
        previous_key: String,
        /// Which field disagrees (`run_id` or `started_at`).
        field: String,
    },
    /// Several manifests name the same previous manifest (or several start
    /// a chain): concurrent runs, or a history grafted in.
    Fork {
        /// The shared `previous` (none: several first manifests).
        previous: Option<String>,
        /// The manifests that claim it.
        keys: Vec<String>,
    },
    /// A stored manifest that the walk from the head never reaches.
    Unlinked {
        /// Manifest key.
        key: String,
    },
    /// A manifest whose bytes do not match its sidecar
    /// (`<key>.sha256`, written just before it): the manifest or the sidecar
    /// was changed afterwards.
    SidecarMismatch {
        /// Manifest key.
        key: String,
        /// What the sidecar says (a SHA-256, or why it cannot be read).
        sidecar: String,
        /// SHA-256 of the manifest's bytes.
        actual: String,
    },
    /// A manifest without its sidecar while older manifests have theirs
    /// (every manifest since sidecars exist is written after its sidecar).
    ManifestSidecarMissing {
        /// Manifest key.
        key: String,
    },
    /// An entry names an object key that no sink would store (it escapes
    /// the sink's root, or is empty): not written by this tool.
    InvalidKey {
        /// Manifest key.
        manifest: String,
        /// Field path (`entries[0].key`).
        field: String,
        /// The key as recorded.
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// A manifest field the writer never produces (a digest that is not
    /// lowercase hex of the right length, a size or page count out of
    /// range): not written by sqlite-backup, and nothing it says is used.
    InvalidField {
        /// Manifest key.
        key: String,
        /// Field path (`entries[0].sha256`).
        field: String,
        /// The value, bounded and escaped.
        value: String,
        /// What it should be.
        reason: String,
    },
    /// Field `relinked` of a manifest vouches for a manifest that is gone or
    /// no longer has the recorded bytes.
    RelinkBroken {
        /// The re-linked manifest's key.
        key: String,
        /// The manifest holding the `relinked` record.
        named_by: String,
        /// SHA-256 recorded.
        recorded: String,
        /// SHA-256 of its bytes now; none when it is not stored.
        actual: Option<String>,
    },
    /// A recorded artifact is gone (and no later manifest pruned it).
    ArtifactMissing {
        /// Manifest key.
        manifest: String,
        /// Index in `entries`.
        index: usize,
        /// Artifact key.
        key: String,
    },
    /// A recorded sidecar is gone.
    SidecarMissing {
        /// Manifest key.
        manifest: String,
        /// Index in `entries`.
        index: usize,
        /// Sidecar key.
        key: String,
    },
    /// The artifact's stored size differs from field `entries[i].size`.
    SizeMismatch {
        /// Manifest key.
        manifest: String,
        /// Index in `entries`.
        index: usize,
        /// Artifact key.
        key: String,
        /// Recorded size.
        recorded: u64,
        /// Stored size.
        actual: u64,
    },
    /// A digest of the artifact differs from the recorded one.
    DigestMismatch {
        /// Manifest key.
        manifest: String,
        /// Index in `entries`.
        index: usize,
        /// Artifact key.
        key: String,
        /// The entry field: `sha256` (artifact bytes, or what the sidecar
        /// says) or `db_sha256` (decompressed database).
        field: String,
        /// What was measured: `artifact`, `sidecar` or `database`.
        against: String,
        /// Recorded hex.
        recorded: String,
        /// Actual hex.
        actual: String,
    },
    /// The artifact could not be read or decompressed to the end.
    ArtifactUnreadable {
        /// Manifest key.
        manifest: String,
        /// Index in `entries`.
        index: usize,
        /// Artifact key.
        key: String,
        /// The error.
        message: String,
    },
    /// An anchored head is not on the chain: the history was rewritten, the
    /// head altered, or the newest manifests deleted.
    AnchorNotInChain {
        /// Line of the anchor file.
        line: usize,
        /// When it was anchored.
        anchored_at: Timestamp,
        /// The anchored head.
        head: String,
        /// A stored manifest with those bytes, off the chain, if any.
        stored_as: Option<String>,
    },
    /// A checkpoint that does not summarise the manifests it names: readers
    /// starting from it would see another catalog than the manifests hold.
    Checkpoint {
        /// Checkpoint key.
        key: String,
        /// What does not match.
        message: String,
    },
}

/// A digest shortened for a message. It may come from a hostile manifest:
/// cut by characters, never by byte, and escaped.
fn short(hex: &str) -> manifest::Shown<'_> {
    manifest::prefix(hex, 16)
}

/// A list of untrusted names, each [`manifest::shown`], at most
/// [`SHOWN_ITEMS`] of them.
fn shown_list(items: &[String]) -> String {
    let mut out: Vec<String> = items
        .iter()
        .take(SHOWN_ITEMS)
        .map(|s| manifest::shown(s).to_string())
        .collect();
    if items.len() > SHOWN_ITEMS {
        out.push(format!("and {} more", items.len() - SHOWN_ITEMS));
    }
    out.join(", ")
}

/// Items of a list shown in one problem.
const SHOWN_ITEMS: usize = 12;

// Every string here may come from a hostile manifest or listing: each is
// shown bounded and escaped (`s`, `short`, `shown_list`).
// Over 100 lines on purpose: one arm per problem, a table of messages read
// side by side with the variants, not steps that splitting would name.
impl fmt::Display for CatalogProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = manifest::shown;
        match self {
            Self::Unreadable { key, message } => write!(
                f,
                "{} is unreadable: {}",
                s(key),
                manifest::shown_message(message)
            ),
            Self::Misplaced { key, run_id } => write!(
                f,
                "{} holds the manifest of run {} (field `run_id`): manifests were renamed or reordered",
                s(key),
                s(run_id)
            ),
            Self::WrongSink { key, sink } => write!(
                f,
                "{} records sink \"{}\" (field `sink`): copied from another sink",
                s(key),
                s(sink)
            ),
            Self::Deleted {
                run_id,
                key,
                sha256,
                named_by,
            } => write!(
                f,
                "{} was deleted: field `previous` of {} names run {} (sha256 {}), which is not stored",
                s(key),
                s(named_by),
                s(run_id),
                short(sha256)
            ),
            Self::Altered {
                key,
                recorded,
                actual,
                named_by,
                fields,
            } => {
                write!(
                    f,
                    "{} was altered: its sha256 is {}, field `previous` of {} recorded {}",
                    s(key),
                    short(actual),
                    s(named_by),
                    short(recorded)
                )?;
                if fields.is_empty() {
                    write!(f, "; changed field(s) unknown")
                } else {
                    write!(f, "; changed field(s): {}", shown_list(fields))
                }
            }
            Self::BrokenLink { key, previous } => write!(
                f,
                "field `previous` of {} names sha256 {}, which no stored manifest has: the manifest before it was deleted or altered",
                s(key),
                short(previous)
            ),
            Self::OutOfOrder {
                key,
                previous_key,
                field,
            } => write!(
                f,
                "chain out of order: field `previous` of {} links to {}, which is not older (field `{}`)",
                s(key),
                s(previous_key),
                s(field)
            ),
            Self::Fork { previous, keys } => match previous {
                Some(p) => write!(
                    f,
                    "fork: {} all name previous {}",
                    shown_list(keys),
                    short(p)
                ),
                None => write!(f, "fork: {} all start a chain", shown_list(keys)),
            },
            Self::Unlinked { key } => write!(f, "{} is not on the chain from the head", s(key)),
            Self::SidecarMismatch {
                key,
                sidecar,
                actual,
            } => write!(
                f,
                "{} does not match its sidecar (sidecar {}, manifest sha256 {}): the manifest or its sidecar was altered after it was written",
                s(key),
                short(sidecar),
                short(actual)
            ),
            Self::ManifestSidecarMissing { key } => write!(
                f,
                "{} has no sidecar, while older manifests have theirs: the sidecar was deleted or the manifest slipped in",
                s(key)
            ),
            Self::InvalidKey {
                manifest,
                field,
                key,
                reason,
            } => write!(
                f,
                "{} {}: \"{}\" is not an object key of this sink ({}); this manifest was not written by sqlite-backup",
                s(manifest),
                s(field),
                s(key),
                s(reason)
            ),
            Self::InvalidField {
                key,
                field,
                value,
                reason,
            } => write!(
                f,
                "{} field `{}` is {}: {}; this manifest was not written by sqlite-backup, and none of it is used",
                s(key),
                s(field),
                manifest::shown_message(value),
                s(reason)
            ),
            Self::RelinkBroken {
                key,
                named_by,
                recorded,
                actual,
            } => match actual {
                Some(a) => write!(
                    f,
                    "{} was altered: its sha256 is {}, field `relinked` of {} recorded {}",
                    s(key),
                    short(a),
                    s(named_by),
                    short(recorded)
                ),
                None => write!(
                    f,
                    "{} was deleted: field `relinked` of {} names it (sha256 {}), and it is not stored",
                    s(key),
                    s(named_by),
                    short(recorded)
                ),
            },
            Self::ArtifactMissing {
                manifest,
                index,
                key,
            } => write!(
                f,
                "{} entries[{index}].key: artifact {} is missing (and not recorded as pruned)",
                s(manifest),
                s(key)
            ),
            Self::SidecarMissing {
                manifest,
                index,
                key,
            } => write!(
                f,
                "{} entries[{index}].sidecar_key: sidecar {} is missing",
                s(manifest),
                s(key)
            ),
            Self::SizeMismatch {
                manifest,
                index,
                key,
                recorded,
                actual,
            } => write!(
                f,
                "{} entries[{index}].size: {} is {actual} bytes, recorded {recorded}",
                s(manifest),
                s(key)
            ),
            Self::DigestMismatch {
                manifest,
                index,
                key,
                field,
                against,
                recorded,
                actual,
            } => write!(
                f,
                "{} entries[{index}].{}: {} of {} hashes to {}, recorded {}",
                s(manifest),
                s(field),
                s(against),
                s(key),
                short(actual),
                short(recorded)
            ),
            Self::ArtifactUnreadable {
                manifest,
                index,
                key,
                message,
            } => write!(
                f,
                "{} entries[{index}]: {} cannot be read to the end: {}",
                s(manifest),
                s(key),
                manifest::shown_message(message)
            ),
            Self::AnchorNotInChain {
                line,
                anchored_at,
                head,
                stored_as,
            } => {
                write!(
                    f,
                    "anchor line {line} ({anchored_at}) names head {}, which is not on the chain",
                    short(head)
                )?;
                match stored_as {
                    Some(k) => write!(f, " (stored as {}, cut off from the head)", s(k)),
                    None => write!(
                        f,
                        ": history rewritten, head altered, or newest manifests deleted"
                    ),
                }
            }
            Self::Checkpoint { key, message } => write!(
                f,
                "checkpoint {} {}; readers fall back to reading every manifest only \
                 when it is unreadable, so move it away (`catalog repair` writes a new one)",
                s(key),
                manifest::shown_message(message)
            ),
        }
    }
}

/// How a sink's head relates to the anchor file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AnchorStatus {
    /// The newest anchor of the sink is the current head.
    Head {
        /// Its line.
        line: usize,
    },
    /// The newest anchor is on the chain, `runs` manifests behind the head
    /// (runs since the last anchoring; not a problem).
    Behind {
        /// Its line.
        line: usize,
        /// Manifests after it.
        runs: usize,
    },
    /// The newest anchor is not on the chain (a [`CatalogProblem::AnchorNotInChain`]).
    Lost {
        /// Its line.
        line: usize,
    },
    /// The anchor file has no line for this sink.
    NotAnchored,
}

impl fmt::Display for AnchorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Head { line } => write!(f, "head (line {line})"),
            Self::Behind { line, runs } => write!(f, "{runs} run(s) since line {line}"),
            Self::Lost { line } => write!(f, "LOST (line {line})"),
            Self::NotAnchored => write!(f, "not anchored"),
        }
    }
}

/// The result of verifying one sink's catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Sink name.
    pub sink: String,
    /// Sink location.
    pub location: String,
    /// Current head (SHA-256 of the newest manifest), if any.
    pub head: Option<String>,
    /// Key of the newest manifest.
    pub head_key: Option<String>,
    /// Manifests stored.
    pub manifests: usize,
    /// Manifests reached walking from the head.
    pub chain: usize,
    /// Artifacts checked.
    pub artifacts: usize,
    /// Artifacts recorded as pruned by a later manifest (not checked).
    pub pruned: usize,
    /// Artifact bytes re-hashed (deep).
    pub hashed_bytes: u64,
    /// Which artifact checks ran.
    pub artifact_check: ArtifactCheck,
    /// Relation to the anchor file, when one was given.
    pub anchor: Option<AnchorStatus>,
    /// The sink this catalog began on, when it is not this one: the sink
    /// holds a faithful copy of that sink's catalog (`rclone sync`, bucket
    /// replication). It is field `sink` of the catalog's first manifest:
    /// the one without `previous` that most stored manifests descend from
    /// through links that hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// What is wrong.
    pub problems: Vec<CatalogProblem>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One stored manifest during the walk.
struct Node {
    key: String,
    /// Parsed run id, else the key's.
    run_id: String,
    sha256: String,
    bytes: Vec<u8>,
    manifest: Option<Manifest>,
}

/// Read every manifest of a sink with its raw bytes, sorted by key.
fn read_nodes(sink: &dyn Sink) -> Result<(Vec<Node>, Vec<CatalogProblem>), SinkError> {
    let mut nodes = Vec::new();
    let mut problems = Vec::new();
    let mut sealed_before = false;
    for key in manifest::keys(sink)? {
        let bytes = match get_bytes(sink, &key) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        match check_seal(sink, &key, &bytes)? {
            Seal::Matches => sealed_before = true,
            // Written before manifests had sidecars: the chain covers it.
            Seal::Absent if !sealed_before => {}
            Seal::Absent => {
                problems.push(CatalogProblem::ManifestSidecarMissing { key: key.clone() })
            }
            Seal::Differs(sidecar) => {
                sealed_before = true;
                problems.push(CatalogProblem::SidecarMismatch {
                    key: key.clone(),
                    sidecar,
                    actual: Sha256::hex_of(&bytes),
                });
            }
        }
        let manifest = match Manifest::from_bytes(&key, &bytes) {
            Ok(m) => Some(m),
            Err(manifest::CatalogError::InvalidField { error, .. }) => {
                problems.push(CatalogProblem::InvalidField {
                    key: key.clone(),
                    field: error.field,
                    value: error.value,
                    reason: error.reason,
                });
                None
            }
            Err(e) => {
                problems.push(CatalogProblem::Unreadable {
                    key: key.clone(),
                    message: match e {
                        manifest::CatalogError::Malformed { message, .. } => message,
                        other => other.to_string(),
                    },
                });
                None
            }
        };
        nodes.push(Node {
            run_id: manifest
                .as_ref()
                .map(|m| m.run_id.clone())
                .unwrap_or_else(|| manifest::run_id_of_key(&key).to_string()),
            sha256: Sha256::hex_of(&bytes),
            key,
            bytes,
            manifest,
        });
    }
    Ok((nodes, problems))
}

enum Seal {
    Matches,
    Absent,
    /// What the sidecar says instead.
    Differs(String),
}

/// Compare a manifest's bytes with its sidecar (hash and file name).
fn check_seal(sink: &dyn Sink, key: &str, bytes: &[u8]) -> Result<Seal, SinkError> {
    let text = match get_bytes(sink, &manifest::sidecar_key(key)) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(Seal::Absent),
        Err(e) => return Err(e),
    };
    let parsed = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| crate::digest::Sidecar::parse(t).ok());
    Ok(match parsed {
        None => Seal::Differs("unreadable".into()),
        Some(s) if s.file_name != crate::naming::file_name(key) => {
            Seal::Differs(format!("{} for {:?}", s.sha256, s.file_name))
        }
        Some(s) if s.sha256 != Sha256::hex_of(bytes) => Seal::Differs(s.sha256),
        Some(_) => Seal::Matches,
    })
}

/// Field paths that differ between what was recorded and what is stored.
fn changed_fields(
    recorded: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    if recorded.is_empty() {
        return vec![];
    }
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for (path, digest) in recorded {
        match now.get(path) {
            Some(d) if d == digest => {}
            Some(_) => push(path.clone()),
            None => push(format!("{} (removed)", item_of(path))),
        }
    }
    for path in now.keys().filter(|p| !recorded.contains_key(*p)) {
        push(format!("{} (added)", item_of(path)));
    }
    if out.is_empty() {
        out.push("none: same field values, different bytes (reformatted)".into());
    }
    out
}

/// `entries[3].size` → `entries[3]`; `run_id` → `run_id`.
fn item_of(path: &str) -> &str {
    match path.find("].") {
        Some(i) => &path[..=i],
        None => path,
    }
}

/// Walk and check the catalog of one sink. `anchors`: the anchor file, to
/// compare the head with. Fails only when the sink cannot be read; what is
/// found wrong is in the report.
pub fn verify(
    sink: &dyn Sink,
    opts: &Options,
    anchors: Option<&AnchorLog>,
) -> Result<Report, SinkError> {
    let (nodes, mut problems) = read_nodes(sink)?;
    let mut report = Report {
        sink: sink.name().to_string(),
        location: sink.location(),
        head: nodes.last().map(|n| n.sha256.clone()),
        head_key: nodes.last().map(|n| n.key.clone()),
        manifests: nodes.len(),
        chain: 0,
        artifacts: 0,
        pruned: 0,
        hashed_bytes: 0,
        artifact_check: opts.artifacts,
        anchor: None,
        copy_of: None,
        problems: vec![],
    };
    let chain = Chain::new(&nodes);
    // 1. What each manifest says of itself; the sink it records is checked
    //    against this sink and the one the catalog began on.
    let origin = chain.origin().filter(|o| *o != sink.name());
    report.copy_of = origin.map(str::to_string);
    manifest_facts(sink.name(), origin, &nodes, &mut problems);
    // 2. The walk from the head, then the manifests a repair relinked.
    let walk = chain.walk(&mut problems);
    let walk = chain.follow_relinks(walk, &mut problems);
    let reached: Vec<usize> = (0..nodes.len()).filter(|&i| walk.visited[i]).collect();
    report.chain = reached.len();
    // 3. Forks, and manifests no walk reached.
    chain.forks(&walk.relinked, &mut problems);
    for (i, n) in nodes.iter().enumerate() {
        if !walk.visited[i] {
            problems.push(CatalogProblem::Unlinked { key: n.key.clone() });
        }
    }
    // 4. The artifacts of the chain, minus those a later manifest pruned.
    if opts.artifacts != ArtifactCheck::Skip {
        check_artifacts(
            sink,
            &nodes,
            &reached,
            opts.artifacts,
            &mut report,
            &mut problems,
        )?;
    }
    // 5. The anchor file.
    if let Some(log) = anchors {
        report.anchor = Some(chain.anchors(log, sink.name(), &walk.position, &mut problems));
    }
    // 6. Each checkpoint against a replay of the manifests it summarises.
    check_checkpoints(sink, &nodes, &mut problems)?;
    report.problems = problems;
    Ok(report)
}

/// Replay the manifests in order and compare each stored checkpoint with
/// the state as of the manifest it names.
fn check_checkpoints(
    sink: &dyn Sink,
    nodes: &[Node],
    problems: &mut Vec<CatalogProblem>,
) -> Result<(), SinkError> {
    let mut wanted = BTreeMap::new();
    for key in view::checkpoint_keys(sink)? {
        match view::read_checkpoint(sink, &key) {
            Ok(c) => {
                wanted.insert(c.run_id.clone(), (key, c));
            }
            Err(view::CheckpointError::Sink(e)) if !e.is_not_found() => return Err(e),
            Err(e) => problems.push(CatalogProblem::Checkpoint {
                key,
                message: match e {
                    view::CheckpointError::Malformed { message, .. } => {
                        format!("is unreadable: {message}")
                    }
                    other => other.to_string(),
                },
            }),
        }
    }
    let mut state = view::State::default();
    for (i, n) in nodes.iter().enumerate() {
        if let Some(m) = &n.manifest {
            state.apply(m);
        }
        let Some((key, c)) = wanted.remove(&n.run_id) else {
            continue;
        };
        let message = if c.head != n.sha256 {
            Some(format!(
                "names manifest {} with SHA-256 {}, but its bytes hash to {}",
                n.key,
                short(&c.head),
                short(&n.sha256)
            ))
        } else if c.manifests != i as u64 + 1 {
            Some(format!(
                "counts {} manifests up to {}, the catalog has {}",
                c.manifests,
                n.key,
                i + 1
            ))
        } else if !c.state.matches_replay(&state)
            || c.head_fields != manifest::field_digests(&n.bytes)
        {
            Some(format!(
                "does not match the manifests up to {} ({} listed entries, a replay gives {})",
                n.key,
                c.state.live.len(),
                state.live.len()
            ))
        } else {
            None
        };
        if let Some(message) = message {
            problems.push(CatalogProblem::Checkpoint { key, message });
        }
    }
    problems.extend(
        wanted
            .into_values()
            .map(|(key, c)| CatalogProblem::Checkpoint {
                key,
                message: format!("names manifest {}, which is not in the catalog", c.run_id),
            }),
    );
    Ok(())
}

/// `origin`: the sink the chain began on, when not this one (a copy); a
/// manifest recording it is no more out of place than one recording
/// `sink` (runs after a fail-over to the copy record the copy's name).
fn manifest_facts(
    sink: &str,
    origin: Option<&str>,
    nodes: &[Node],
    problems: &mut Vec<CatalogProblem>,
) {
    for n in nodes {
        let Some(m) = &n.manifest else { continue };
        if manifest::manifest_key(&m.run_id) != n.key {
            problems.push(CatalogProblem::Misplaced {
                key: n.key.clone(),
                run_id: m.run_id.clone(),
            });
        }
        if m.sink != sink && Some(m.sink.as_str()) != origin {
            problems.push(CatalogProblem::WrongSink {
                key: n.key.clone(),
                sink: m.sink.clone(),
            });
        }
        for (field, key, reason) in m.bad_keys() {
            problems.push(CatalogProblem::InvalidKey {
                manifest: n.key.clone(),
                field,
                key,
                reason,
            });
        }
    }
}

/// A sink's manifests, found by their SHA-256 or their key.
struct Chain<'a> {
    nodes: &'a [Node],
    by_sha: HashMap<&'a str, usize>,
    by_key: HashMap<&'a str, usize>,
}

/// What the walks reached.
struct Walk {
    visited: Vec<bool>,
    /// The main chain, head first.
    chain: Vec<usize>,
    /// How many manifests of the main chain come after each reached one.
    position: Vec<Option<usize>>,
    /// Reached only through a repair's `relinked`.
    relinked: Vec<bool>,
}

impl<'a> Chain<'a> {
    fn new(nodes: &'a [Node]) -> Self {
        let index = |f: fn(&Node) -> &str| -> HashMap<&'a str, usize> {
            nodes.iter().enumerate().map(|(i, n)| (f(n), i)).collect()
        };
        Self {
            nodes,
            by_sha: index(|n| n.sha256.as_str()),
            by_key: index(|n| n.key.as_str()),
        }
    }

    /// The sink this catalog began on: field `sink` of its genesis (a
    /// manifest without `previous`) that the most stored manifests descend
    /// from through links that hold (`previous` naming its bytes). It must
    /// be named by a successor, unless it is the only manifest, and no
    /// other genesis may tie with it.
    ///
    /// Why the genesis, and not only the sink's own name, a catalog id or a
    /// setting: the check on field `sink` is there to catch a manifest
    /// spliced in from another sink's catalog, while a faithful copy of a
    /// whole catalog (rclone, bucket replication) keeps names that are not
    /// the new sink's. The hash chain already ties every manifest to its
    /// genesis by SHA-256, so the genesis tells a copy from a splice with no
    /// new field: it works for catalogs copied before this check knew of
    /// copies, and an id written in each manifest would be one more claim a
    /// splicer can copy, vouched for by nothing the chain does not already
    /// vouch for. Counting descendants rather than following the walk from
    /// the head keeps a spliced newest manifest from taking the catalog's
    /// name: a copy brings its whole chain, a splice a few manifests. A
    /// manifest spliced in records another sink than the genesis (named by
    /// [`manifest_facts`]); one from another catalog of a sink with the same
    /// name breaks the chain (named by the walk).
    fn origin(&self) -> Option<&'a str> {
        let nodes = self.nodes;
        // root[i]: the genesis manifest i descends from (Some(None): a
        // link that does not hold, or an unreadable manifest on the way).
        let mut root: Vec<Option<Option<usize>>> = vec![None; nodes.len()];
        for start in 0..nodes.len() {
            let mut path = Vec::new();
            let mut cur = start;
            let found = loop {
                if let Some(r) = root[cur] {
                    break r;
                }
                // Hash links cannot loop; bytes from a sink are hostile.
                if path.len() > nodes.len() {
                    break None;
                }
                path.push(cur);
                let Some(m) = &nodes[cur].manifest else {
                    break None;
                };
                match m.previous.as_deref() {
                    None => break Some(cur),
                    Some(prev) => match self.by_sha.get(prev) {
                        Some(&p) => cur = p,
                        None => break None,
                    },
                }
            };
            for i in path {
                root[i] = Some(found);
            }
        }
        let mut descendants: BTreeMap<usize, usize> = BTreeMap::new();
        for r in root.into_iter().flatten().flatten() {
            *descendants.entry(r).or_default() += 1;
        }
        let most = *descendants.values().max()?;
        let mut best = descendants.iter().filter(|(_, n)| **n == most);
        let (&genesis, _) = best.next()?;
        let vouched = most >= 2 || nodes.len() == 1;
        if best.next().is_some() || !vouched {
            return None;
        }
        nodes[genesis].manifest.as_ref().map(|m| m.sink.as_str())
    }

    /// The newest manifest not yet visited that is older than `bound`:
    /// where the walk resumes after a gap.
    fn resume(&self, visited: &[bool], bound: &str) -> Option<usize> {
        (0..self.nodes.len())
            .rev()
            .find(|&i| !visited[i] && self.nodes[i].run_id.as_str() < bound)
    }

    /// From the head along `previous`, naming each broken link and going on
    /// past it.
    fn walk(&self, problems: &mut Vec<CatalogProblem>) -> Walk {
        let nodes = self.nodes;
        let mut visited = vec![false; nodes.len()];
        let mut chain: Vec<usize> = Vec::new();
        let mut cur = nodes.len().checked_sub(1);
        while let Some(c) = cur {
            visited[c] = true;
            chain.push(c);
            let node = &nodes[c];
            let Some(m) = &node.manifest else {
                // Unreadable (already reported): its link is unknown.
                cur = self.resume(&visited, &node.run_id);
                continue;
            };
            let Some(prev) = &m.previous else { break };
            if let Some(&p) = self.by_sha.get(prev.as_str())
                && !visited[p]
            {
                let older = &nodes[p];
                // Keys (run ids) grow along the chain: appends give each
                // manifest a run id after its previous one's. Start times
                // need not: runs that overlap are appended in the order
                // they finish.
                if older.run_id >= node.run_id {
                    problems.push(CatalogProblem::OutOfOrder {
                        key: node.key.clone(),
                        previous_key: older.key.clone(),
                        field: "run_id".into(),
                    });
                }
                cur = Some(p);
                continue;
            }
            cur = self.broken_link(node, m, prev, &visited, problems);
        }
        let mut position = vec![None; nodes.len()];
        for (pos, &i) in chain.iter().enumerate() {
            position[i] = Some(pos);
        }
        Walk {
            relinked: vec![false; nodes.len()],
            visited,
            chain,
            position,
        }
    }

    /// Names a broken link (whether the manifest it names is gone or
    /// changed); returns where the walk goes on.
    fn broken_link(
        &self,
        node: &Node,
        m: &Manifest,
        prev: &str,
        visited: &[bool],
        problems: &mut Vec<CatalogProblem>,
    ) -> Option<usize> {
        let named = m.previous_run_id.as_deref();
        let named_idx = named
            .and_then(|r| self.by_key.get(manifest::manifest_key(r).as_str()))
            .copied()
            .filter(|&i| !visited[i]);
        match (named, named_idx) {
            (Some(_), Some(p)) => {
                let older = &self.nodes[p];
                problems.push(CatalogProblem::Altered {
                    key: older.key.clone(),
                    recorded: prev.to_string(),
                    actual: older.sha256.clone(),
                    named_by: node.key.clone(),
                    fields: changed_fields(
                        &m.previous_fields,
                        &manifest::field_digests(&older.bytes),
                    ),
                });
                Some(p)
            }
            (Some(run_id), None) => {
                problems.push(CatalogProblem::Deleted {
                    run_id: run_id.to_string(),
                    key: manifest::manifest_key(run_id),
                    sha256: prev.to_string(),
                    named_by: node.key.clone(),
                });
                self.resume(visited, run_id)
            }
            (None, _) => {
                problems.push(CatalogProblem::BrokenLink {
                    key: node.key.clone(),
                    previous: prev.to_string(),
                });
                self.resume(visited, &node.run_id)
            }
        }
    }

    /// Manifests a repair brought back onto the chain: each vouched for by
    /// its SHA-256 in field `relinked` of a manifest already reached.
    fn follow_relinks(&self, mut walk: Walk, problems: &mut Vec<CatalogProblem>) -> Walk {
        let nodes = self.nodes;
        let mut work = walk.chain.clone();
        while let Some(i) = work.pop() {
            let Some(m) = &nodes[i].manifest else {
                continue;
            };
            for r in &m.relinked {
                let found = self.by_key.get(r.key.as_str()).copied();
                match found {
                    Some(j) if nodes[j].sha256 == r.sha256 => {
                        if !walk.visited[j] {
                            walk.visited[j] = true;
                            walk.relinked[j] = true;
                            walk.position[j] = walk.position[i];
                            work.push(j);
                        }
                    }
                    _ => problems.push(CatalogProblem::RelinkBroken {
                        key: r.key.clone(),
                        named_by: nodes[i].key.clone(),
                        recorded: r.sha256.clone(),
                        actual: found.map(|j| nodes[j].sha256.clone()),
                    }),
                }
            }
        }
        walk
    }

    /// One `previous` claimed twice, unless a repair settled it.
    fn forks(&self, relinked: &[bool], problems: &mut Vec<CatalogProblem>) {
        let mut claims: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
        for n in self.nodes {
            if let Some(m) = &n.manifest {
                claims
                    .entry(m.previous.as_deref())
                    .or_default()
                    .push(&n.key);
            }
        }
        for (previous, keys) in claims {
            // Settled once all but one of them were re-linked by a repair.
            let unsettled = keys
                .iter()
                .filter(|k| self.by_key.get(**k).is_none_or(|&i| !relinked[i]))
                .count();
            if unsettled > 1 {
                problems.push(CatalogProblem::Fork {
                    previous: previous.map(str::to_string),
                    keys: keys.into_iter().map(str::to_string).collect(),
                });
            }
        }
    }

    /// Every anchored head is on the chain; how far the newest is behind.
    fn anchors(
        &self,
        log: &AnchorLog,
        sink: &str,
        position: &[Option<usize>],
        problems: &mut Vec<CatalogProblem>,
    ) -> AnchorStatus {
        let nodes = self.nodes;
        let position: HashMap<&str, usize> = (0..nodes.len())
            .filter_map(|i| Some((nodes[i].sha256.as_str(), position[i]?)))
            .collect();
        for a in log.for_sink(sink) {
            if !position.contains_key(a.head.as_str()) {
                problems.push(CatalogProblem::AnchorNotInChain {
                    line: a.line,
                    anchored_at: a.at,
                    head: a.head.clone(),
                    stored_as: self
                        .by_sha
                        .get(a.head.as_str())
                        .map(|&i| nodes[i].key.clone()),
                });
            }
        }
        match log.newest(sink) {
            None => AnchorStatus::NotAnchored,
            Some(a) => match position.get(a.head.as_str()) {
                Some(0) => AnchorStatus::Head { line: a.line },
                Some(&runs) => AnchorStatus::Behind { line: a.line, runs },
                None => AnchorStatus::Lost { line: a.line },
            },
        }
    }
}

/// The artifacts of the reached manifests, minus those a later manifest
/// pruned.
fn check_artifacts(
    sink: &dyn Sink,
    nodes: &[Node],
    reached: &[usize],
    depth: ArtifactCheck,
    report: &mut Report,
    problems: &mut Vec<CatalogProblem>,
) -> Result<(), SinkError> {
    let mut pruned_at: HashMap<(&str, &str), &str> = HashMap::new();
    for &i in reached {
        if let Some(m) = &nodes[i].manifest {
            for p in &m.pruned {
                pruned_at.insert((&p.run_id, &p.key), &m.run_id);
            }
        }
    }
    let mut sizes = HashMap::new();
    for &i in reached {
        let Some(m) = &nodes[i].manifest else {
            continue;
        };
        for (index, entry) in m.entries.iter().enumerate() {
            // Reported as InvalidKey above (any object's key); never looked up.
            if entry
                .objects()
                .iter()
                .any(|n| crate::sink::validate_key(&n.key).is_err())
            {
                continue;
            }
            let pruned = pruned_at
                .get(&(m.run_id.as_str(), entry.key.as_str()))
                .is_some_and(|by| *by > m.run_id.as_str());
            if pruned {
                report.pruned += 1;
                continue;
            }
            report.artifacts += 1;
            check_artifact(
                sink,
                &nodes[i].key,
                index,
                entry,
                depth,
                &mut sizes,
                problems,
                &mut report.hashed_bytes,
            )?;
        }
    }
    Ok(())
}

/// Checks one listed entry: every object it needs exists at its recorded
/// size (without reading any), and at `Deep` its digests too.
#[allow(clippy::too_many_arguments)]
fn check_artifact(
    sink: &dyn Sink,
    manifest_key: &str,
    index: usize,
    entry: &Entry,
    depth: ArtifactCheck,
    sizes: &mut HashMap<String, Option<u64>>,
    problems: &mut Vec<CatalogProblem>,
    hashed: &mut u64,
) -> Result<(), SinkError> {
    let at = Place {
        manifest: manifest_key,
        index,
    };
    let complete = check_presence(sink, at, entry, sizes, problems)?;
    if !complete || depth != ArtifactCheck::Deep {
        return Ok(());
    }
    match crate::verify::read_sidecar(sink, &entry.sidecar_key)? {
        Ok(s) if s.sha256 != entry.sha256 => {
            problems.push(at.digest(&entry.key, "sha256", "sidecar", &entry.sha256, &s.sha256));
        }
        Ok(_) => {}
        // A missing one is named already.
        Err(_) if sizes.get(&entry.sidecar_key) == Some(&None) => {}
        Err(_) => problems.push(CatalogProblem::SidecarMissing {
            manifest: at.manifest.to_string(),
            index,
            key: entry.sidecar_key.clone(),
        }),
    }
    match &entry.pages {
        Some(map) => check_packs(sink, at, map, problems, hashed),
        None => check_image(sink, at, entry, problems, hashed),
    }
}

/// Where a listed entry sits: its manifest and its place in it.
#[derive(Clone, Copy)]
struct Place<'a> {
    manifest: &'a str,
    index: usize,
}

impl Place<'_> {
    fn digest(
        &self,
        key: &str,
        field: &str,
        against: &str,
        recorded: &str,
        actual: &str,
    ) -> CatalogProblem {
        CatalogProblem::DigestMismatch {
            manifest: self.manifest.to_string(),
            index: self.index,
            key: key.to_string(),
            field: field.into(),
            against: against.into(),
            recorded: recorded.into(),
            actual: actual.into(),
        }
    }
}

/// Every object of [`Entry::objects`] exists, at its recorded size where
/// there is one. A missing or short pack is named under every entry that
/// needs it; `sizes` asks the sink once per object however many do.
/// Returns whether the entry's own artifact (or page index) is there.
fn check_presence(
    sink: &dyn Sink,
    at: Place<'_>,
    entry: &Entry,
    sizes: &mut HashMap<String, Option<u64>>,
    problems: &mut Vec<CatalogProblem>,
) -> Result<bool, SinkError> {
    // `objects` lists the entry's own key first (all valid: see
    // check_artifacts).
    for needed in entry.objects() {
        let actual = match sizes.get(&needed.key) {
            Some(size) => *size,
            None => {
                let size = sink.size(&needed.key)?;
                sizes.insert(needed.key.clone(), size);
                size
            }
        };
        let manifest = at.manifest.to_string();
        match (actual, needed.size) {
            (None, _) if needed.key == entry.key => {
                // Its own object gone: nothing else of it matters.
                problems.push(CatalogProblem::ArtifactMissing {
                    manifest,
                    index: at.index,
                    key: needed.key,
                });
                return Ok(false);
            }
            (None, _) => {
                problems.push(if needed.role == manifest::Role::Sidecar {
                    CatalogProblem::SidecarMissing {
                        manifest,
                        index: at.index,
                        key: needed.key,
                    }
                } else {
                    CatalogProblem::ArtifactMissing {
                        manifest,
                        index: at.index,
                        key: needed.key,
                    }
                });
            }
            (Some(actual), Some(recorded)) if actual != recorded => {
                problems.push(CatalogProblem::SizeMismatch {
                    manifest,
                    index: at.index,
                    key: needed.key,
                    recorded,
                    actual,
                });
            }
            _ => {}
        }
    }
    Ok(true)
}

/// Deep: each pack of an incremental snapshot hashes to its recorded
/// SHA-256 (its page index was checked as the entry's own object).
fn check_packs(
    sink: &dyn Sink,
    at: Place<'_>,
    map: &crate::page_map::PageMap,
    problems: &mut Vec<CatalogProblem>,
    hashed: &mut u64,
) -> Result<(), SinkError> {
    for (i, pack) in map.packs.iter().enumerate() {
        let mut reader = match sink.get(&pack.key) {
            Ok(r) => r,
            // Named by check_presence already, unless it went since.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let mut h = crate::digest::HashingReader::new(&mut reader);
        if let Err(e) = std::io::copy(&mut h, &mut std::io::sink()) {
            problems.push(CatalogProblem::ArtifactUnreadable {
                manifest: at.manifest.to_string(),
                index: at.index,
                key: pack.key.clone(),
                message: e.to_string(),
            });
            continue;
        }
        let (sha, n) = h.finish();
        // What was read, not what the manifest claims (which may be
        // anything up to manifest::MAX_BYTES, however many packs).
        *hashed = hashed.saturating_add(n);
        if sha != pack.sha256 {
            let field = format!("pages.packs[{i}].sha256");
            problems.push(at.digest(&pack.key, &field, "stored pack", &pack.sha256, &sha));
        }
    }
    Ok(())
}

/// Deep: a classic artifact hashes to its recorded SHA-256, and decompresses
/// to the recorded database.
fn check_image(
    sink: &dyn Sink,
    at: Place<'_>,
    entry: &Entry,
    problems: &mut Vec<CatalogProblem>,
    hashed: &mut u64,
) -> Result<(), SinkError> {
    let unreadable = |message: String| CatalogProblem::ArtifactUnreadable {
        manifest: at.manifest.to_string(),
        index: at.index,
        key: entry.key.clone(),
        message,
    };
    let rehash = match rehash(sink, entry) {
        Ok(r) => r,
        Err(RehashError::Sink(e)) if e.is_not_found() => {
            problems.push(CatalogProblem::ArtifactMissing {
                manifest: at.manifest.to_string(),
                index: at.index,
                key: entry.key.clone(),
            });
            return Ok(());
        }
        Err(RehashError::Sink(e)) => return Err(e),
        Err(RehashError::Read(e)) => {
            problems.push(unreadable(e.to_string()));
            return Ok(());
        }
    };
    *hashed = hashed.saturating_add(rehash.size);
    if rehash.sha256 != entry.sha256 {
        problems.push(at.digest(
            &entry.key,
            "sha256",
            "artifact",
            &entry.sha256,
            &rehash.sha256,
        ));
    }
    match rehash.decoded {
        Ok(db_sha256) if db_sha256 != entry.db_sha256 => {
            problems.push(at.digest(
                &entry.key,
                "db_sha256",
                "database",
                &entry.db_sha256,
                &db_sha256,
            ));
        }
        Ok(_) => {}
        Err(message) => problems.push(unreadable(format!("decompression failed: {message}"))),
    }
    Ok(())
}

enum RehashError {
    Sink(SinkError),
    Read(io::Error),
}

struct Rehash {
    sha256: String,
    size: u64,
    /// SHA-256 of the decompressed bytes, or the decoder's error.
    decoded: Result<String, String>,
}

/// Stream an artifact once: hash its bytes and, through the decoder, the
/// database bytes. Nothing is written anywhere.
fn rehash(sink: &dyn Sink, entry: &Entry) -> Result<Rehash, RehashError> {
    let input = sink.get(&entry.key).map_err(RehashError::Sink)?;
    let mut raw = HashingReader::new(input);
    let decoded = {
        let mut db = HashingWriter::new(io::sink());
        let copied = Compression::new(entry.compression)
            .decoder(Box::new(&mut raw))
            .and_then(|mut d| io::copy(&mut d, &mut db));
        copied.map(|_| db.finish().1).map_err(|e| e.to_string())
    };
    // Hash whatever the decoder left (trailing bytes count too).
    io::copy(&mut raw, &mut io::sink()).map_err(RehashError::Read)?;
    let (sha256, size) = raw.finish();
    Ok(Rehash {
        sha256,
        size,
        decoded,
    })
}

#[cfg(test)]
mod tests;
