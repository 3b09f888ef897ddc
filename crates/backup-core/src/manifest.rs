//! Run manifests: the catalog of what each run wrote to a sink.
//!
//! A run writes one manifest per sink, `manifests/<run id>.json`, **last**,
//! after every artifact and sidecar it lists is durably stored. An artifact
//! that no manifest lists is not a backup (an interrupted run), so `list`
//! and `restore` never offer it. Reading the catalog costs one listing of
//! the `manifests/` folder plus one read per run, never a listing of every
//! object.
//!
//! Each manifest has a `sha256sum`-format sidecar, `manifests/<run id>.json.sha256`,
//! written just before it; a manifest that does not match its sidecar is
//! reported by [`read_all`] and none of its entries is offered.
//!
//! Manifests are chained: each names the SHA-256 of the previous manifest
//! of the same sink (`previous`), so a deleted or altered manifest breaks the
//! chain visibly.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::compress::Format;
use crate::database::CheckLevel;
use crate::digest::Sha256;
use crate::sink::{Placement, Sink, SinkError, get_bytes};

mod validate;
pub mod view;
pub use validate::{
    FieldError, MAX_BYTES, MAX_CHAIN_DEPTH, MAX_PAGES, MAX_ROWS, MAX_SNAPSHOT_MS, SHOWN_CHARS,
    SHOWN_MESSAGE_CHARS, Shown, prefix, shown, shown_message,
};

/// `format` field of every manifest.
pub const FORMAT: &str = "sqlite-backup/manifest";
/// Newest manifest version; readers reject newer ones. Version 2 adds
/// incremental snapshots without a whole-image SHA-256, checked with the
/// schema checks only (`verified_with: "schema"`; see [`version_for`]);
/// version 3, page maps packed as varints ([`Runs`](crate::page_map::Runs));
/// version 4, packs of XOR deltas ([`crate::xor_pack`]), which a reader that
/// does not know them would restore as a wrong image; version 5, a page
/// map's packs in groups that share an index (`pack_groups`); version 6,
/// sealed page maps (packs and indexes age files, the page-hash digest
/// sealed), which an older reader would call corrupt; version 7, a long
/// page map's pack groups packed into one string
/// ([`crate::page_map::PageMap::packs_packed`]). A
/// manifest that needs none of these is still written as version 1, so
/// older readers keep reading it.
pub const VERSION: u32 = 7;

/// The lowest version that describes `entries`: every page map is written
/// with its packs grouped (version 5, which holds what versions 2 to 4
/// added); a manifest of full artifacts only is version 1.
pub fn version_for(entries: &[Entry]) -> u32 {
    let maps = || entries.iter().filter(|e| e.pages.is_some());
    if maps().any(|e| {
        e.pages
            .as_ref()
            .is_some_and(crate::page_map::PageMap::packs_packed)
    }) {
        7
    } else if maps().any(Entry::is_encrypted) {
        6
    } else if maps().next().is_some() {
        5
    } else {
        1
    }
}

/// Folder of manifests inside a sink.
pub const MANIFEST_DIR: &str = "manifests";

/// One run's record for one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] at write time.
    pub version: u32,
    /// Unique, time-sortable run id (`20261123T130812Z-1a2b`).
    pub run_id: String,
    /// Name of the sink this manifest describes.
    pub sink: String,
    /// `sqlite-backup` version that wrote it.
    pub tool_version: String,
    /// Run start.
    pub started_at: Timestamp,
    /// Run end (when the manifest was written).
    pub finished_at: Timestamp,
    /// SHA-256 of the previous manifest's bytes in this sink, if any: the
    /// link that makes the catalog a hash chain.
    pub previous: Option<String>,
    /// Run id of the previous manifest, so a missing one can be named.
    /// Absent in manifests written before it existed.
    #[serde(default)]
    pub previous_run_id: Option<String>,
    /// Short digests of every field of the previous manifest (see
    /// [`field_digests`]), so an altered manifest can be diagnosed down to
    /// the field. A locator, not the security boundary: `previous` is.
    #[serde(default)]
    pub previous_fields: BTreeMap<String, String>,
    /// Artifacts written by this run.
    pub entries: Vec<Entry>,
    /// Artifacts of earlier runs deleted by `prune` in this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<Pruned>,
    /// Objects of pruned incremental snapshots (packs, page indexes and
    /// their sidecars) this run deleted: no listed snapshot needed them and
    /// their grace period had passed (see [`crate::prune`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collected: Vec<String>,
    /// Manifests of a forked chain (written before appends were
    /// serialised) that `catalog repair` brought back onto the chain: each
    /// is vouched for by its SHA-256 here, as `previous` vouches for one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relinked: Vec<Relinked>,
}

/// A manifest off the chain, re-linked by a repair manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relinked {
    /// Its key.
    pub key: String,
    /// Its run id.
    pub run_id: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Why it was off the chain, as `verify --catalog` said.
    pub reason: String,
}

/// One artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Database label.
    pub label: String,
    /// Trigger tag (`r75`, `session`, `premigrate`, `phase1`), if any.
    pub tag: Option<String>,
    /// Artifact key in the sink.
    pub key: String,
    /// Sidecar key in the sink.
    pub sidecar_key: String,
    /// Compression format.
    pub compression: Format,
    /// Artifact size in bytes.
    pub size: u64,
    /// SHA-256 of the artifact (equals the sidecar).
    pub sha256: String,
    /// Decompressed database size in bytes.
    pub db_size: u64,
    /// SHA-256 of the decompressed database.
    pub db_sha256: String,
    /// Source page size.
    pub page_size: u64,
    /// Source page count.
    pub page_count: u64,
    /// SHA-256 of the schema.
    pub schema_sha256: String,
    /// Row counts of the required tables.
    pub row_counts: BTreeMap<String, u64>,
    /// Start of the snapshot's read transaction.
    pub snapshot_at: Timestamp,
    /// Snapshot wall time in milliseconds.
    pub snapshot_ms: u64,
    /// The check run right after the backup (it passed, or there would be
    /// no entry).
    pub verified_with: CheckLevel,
    /// Absolute path of the live file at backup time (see [`crate::source`]).
    pub source: String,
    /// The machine it was taken on: with `source`, whose database this is.
    /// Absent in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Permission bits of the source file at backup time, written as
    /// `chmod` takes them (`"0640"`); `restore --to` a new path gives them
    /// to the new file. Absent in manifests written before it existed (the
    /// new file then stays `0600`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "octal_mode")]
    pub source_mode: Option<u32>,
    /// Short fingerprints of the age recipients the artifact is encrypted
    /// to (see [`crate::encryption::fingerprint`]); empty when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypted_to: Vec<String>,
    /// For an encrypted artifact: `db_sha256`, `schema_sha256` and
    /// `row_counts`, sealed to the same recipients (ASCII-armored age). In
    /// the clear those fields are then empty: a plain digest of the content
    /// would let anyone confirm a guess of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// For an incremental-mode snapshot: where every page of its image
    /// lives. `key` is then its page-hash index, and `db_sha256` the digest
    /// of the reassembled image. Absent for a self-contained artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<crate::page_map::PageMap>,
    /// For a backup another tool made, recorded in place by `catalog adopt`
    /// ([`crate::adopt`]): where its time came from. Absent for our own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<Adopted>,
}

/// Where an adopted backup's time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFrom {
    /// A date and a time of day in its name.
    Name,
    /// Only a date in its name: 00:00 UTC that day, a lower bound of what
    /// it holds (the Azure script overwrote one blob per day all day).
    NameDate,
    /// The object's modification time: its name has no date.
    Modified,
}

impl TimeFrom {
    /// For people: `time from name`.
    pub fn describe(self) -> &'static str {
        match self {
            TimeFrom::Name => "time from name",
            TimeFrom::NameDate => "date from name, a lower bound",
            TimeFrom::Modified => "time from modification time",
        }
    }
}

/// What the catalog records of a backup another tool made, adopted by
/// `catalog adopt` ([`crate::adopt`]), beyond a normal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    /// Where `snapshot_at` came from.
    pub time_from: TimeFrom,
    /// The sidecar adopt wrote because the backup had none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wrote_sidecar: bool,
}

/// What an encrypted entry keeps sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SealedFacts {
    /// SHA-256 of the decompressed database.
    pub db_sha256: String,
    /// SHA-256 of the schema.
    pub schema_sha256: String,
    /// Row counts of the required tables.
    pub row_counts: BTreeMap<String, u64>,
    /// A sealed incremental snapshot's page-hash digest (in the clear its
    /// page map has only a tag keyed by the backup host, see
    /// `incremental::sealed_tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages_sha256: Option<String>,
}

/// What an object is to the manifest entry that needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A classic artifact: the whole compressed image.
    Artifact,
    /// A page-hash index of an incremental snapshot (its own `key`, or the
    /// index of an earlier snapshot whose packs it uses).
    PageIndex,
    /// A pack of pages.
    Pack,
    /// The `.sha256` sidecar of an artifact or a page index.
    Sidecar,
}

/// One object a manifest entry needs, from [`Entry::objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// Its key in the sink.
    pub key: String,
    /// What it is.
    pub role: Role,
    /// Its stored size, where the manifest records it.
    pub size: Option<u64>,
}

impl Entry {
    /// What this snapshot added to the sink: its artifact, or the packs an
    /// incremental run wrote (shared ones count where they were written).
    pub fn stored_bytes(&self) -> u64 {
        self.pages.as_ref().map_or(self.size, |p| p.stored_bytes)
    }

    /// Whether the artifact is encrypted.
    pub fn is_encrypted(&self) -> bool {
        !self.encrypted_to.is_empty() || self.sealed.is_some()
    }

    /// Every object this entry needs to be restored, each once, its own key
    /// first: the artifact or page index and its sidecar, and for an
    /// incremental snapshot every pack of its page map with the page index
    /// naming it and that index's sidecar. Intent records, pack collection,
    /// `verify --catalog` and the tests all ask this one place.
    pub fn objects(&self) -> Vec<Needed> {
        Entry::objects_of([self])
    }

    /// [`Entry::objects`] of several entries together, each object once.
    /// The snapshots of one chain name the same packs (a chain of depth d
    /// names d²/2 packs in all), so a pack's index and sidecar are worked
    /// out once, and a seen key costs one hash lookup.
    pub fn objects_of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Needed> {
        let mut out: Vec<Needed> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut add = |key: &str, role, size| {
            if !seen.contains(key) {
                seen.insert(key.to_string());
                out.push(Needed {
                    key: key.to_string(),
                    role,
                    size,
                });
            }
        };
        let mut indexes: HashSet<&str> = HashSet::new();
        for e in entries {
            let own = if e.pages.is_some() {
                Role::PageIndex
            } else {
                Role::Artifact
            };
            add(&e.key, own, Some(e.size));
            add(&e.sidecar_key, Role::Sidecar, None);
            for p in e.pages.iter().flat_map(|m| &m.packs) {
                add(&p.key, Role::Pack, Some(p.size));
                add(&p.index, Role::PageIndex, None);
                if indexes.insert(&p.index) {
                    add(&crate::naming::sidecar_key(&p.index), Role::Sidecar, None);
                }
            }
        }
        out
    }

    /// The entry with its sealed facts opened by `identities` (an
    /// unencrypted entry comes back as it is).
    pub fn opened(
        &self,
        identities: &crate::encryption::Identities,
    ) -> Result<Entry, crate::encryption::OpenError> {
        let Some(sealed) = &self.sealed else {
            return Ok(self.clone());
        };
        let bytes = identities.unseal(sealed).map_err(|e| match e {
            crate::encryption::OpenError::WrongIdentity { .. } => {
                crate::encryption::OpenError::WrongIdentity {
                    encrypted_to: self.encrypted_to.clone(),
                }
            }
            other => other,
        })?;
        let facts: SealedFacts = serde_json::from_slice(&bytes)
            .map_err(|e| crate::encryption::OpenError::Damaged(e.to_string()))?;
        validate::sealed_facts(&facts)
            .map_err(|e| crate::encryption::OpenError::Damaged(e.to_string()))?;
        let mut pages = self.pages.clone();
        if let (Some(map), Some(digest)) = (pages.as_mut(), facts.pages_sha256) {
            map.hashes_sha256 = Some(digest);
        }
        Ok(Entry {
            db_sha256: facts.db_sha256,
            schema_sha256: facts.schema_sha256,
            row_counts: facts.row_counts,
            pages,
            ..self.clone()
        })
    }
}

/// `Option<u32>` permission bits as an octal string, `"0640"`.
mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(m) => s.serialize_str(&crate::fsutil::format_mode(*m)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => crate::fsutil::parse_mode(&text).map(Some).ok_or_else(|| {
                D::Error::custom(format!("source_mode {text:?} is not like \"0640\""))
            }),
        }
    }
}

/// A record that a prune deleted an artifact listed by an earlier manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pruned {
    /// Run id of the manifest that listed it.
    pub run_id: String,
    /// Artifact key.
    pub key: String,
    /// Why it was deleted.
    pub reason: String,
}

/// Why the catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Sink failure.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A manifest that is not valid JSON of our format.
    #[error("manifest {} is unreadable: {}", shown(key), shown_message(message))]
    Malformed {
        /// Manifest key.
        key: String,
        /// Parser message.
        message: String,
    },
    /// A manifest with a field the writer never produces (a digest that is
    /// not hex, a size no database has): not written by this tool.
    #[error("manifest {} {error}; its entries are not offered", shown(key))]
    InvalidField {
        /// Manifest key.
        key: String,
        /// The field and what is wrong with it.
        error: FieldError,
    },
}

impl Manifest {
    /// The key this manifest is stored under.
    pub fn key(&self) -> String {
        manifest_key(&self.run_id)
    }

    /// Serialize (compact, stable field order). Compact, not pretty: a
    /// sink receives a manifest a run, twice (the chain link holds the same
    /// bytes), and indentation was over a quarter of them; `jq .` shows
    /// one as readably.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    /// Parse and check format and version.
    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<Self, CatalogError> {
        let malformed = |message: String| CatalogError::Malformed {
            key: key.to_string(),
            message,
        };
        let newer = |version: u32| {
            malformed(format!(
                "version {version} is newer than this tool understands ({VERSION})"
            ))
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            // A newer version may store a field in a form this one cannot
            // parse: say so rather than name the field.
            #[derive(Deserialize)]
            struct Head {
                version: u32,
            }
            if let Ok(head) = serde_json::from_slice::<Head>(bytes)
                && head.version > VERSION
            {
                return newer(head.version);
            }
            match validate::locate(bytes) {
                Some((field, value)) => CatalogError::InvalidField {
                    key: key.to_string(),
                    error: FieldError {
                        field,
                        value: value.map_or_else(
                            || "missing".to_string(),
                            |v| shown(&v.to_string()).to_string(),
                        ),
                        reason: shown_message(&e.to_string()).to_string(),
                    },
                },
                None => malformed(e.to_string()),
            }
        })?;
        if m.format != FORMAT {
            return Err(malformed(format!(
                "format is {:?}, expected {FORMAT:?}",
                m.format
            )));
        }
        if m.version > VERSION {
            return Err(newer(m.version));
        }
        validate::manifest(&m).map_err(|error| CatalogError::InvalidField {
            key: key.to_string(),
            error,
        })?;
        Ok(m)
    }
}

impl Manifest {
    /// Every object key the manifest's entries name that a sink would
    /// refuse (`../../app.db`): `(field path, key, reason)`. Such a
    /// manifest was not written by us, whatever its sidecar says.
    pub(crate) fn bad_keys(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let packs = e.pages.iter().flat_map(|m| m.packs.iter().enumerate());
            let pack_keys = packs.flat_map(|(j, p)| {
                [
                    (format!("pages.packs[{j}].key"), &p.key),
                    (format!("pages.packs[{j}].index"), &p.index),
                ]
            });
            let own = [
                ("key".to_string(), &e.key),
                ("sidecar_key".to_string(), &e.sidecar_key),
            ];
            for (field, key) in own.into_iter().chain(pack_keys) {
                if let Err(err) = crate::sink::validate_key(key) {
                    let reason = match err {
                        SinkError::InvalidKey { reason, .. } => reason.to_string(),
                        other => other.to_string(),
                    };
                    out.push((format!("entries[{i}].{field}"), key.clone(), reason));
                }
            }
        }
        out
    }
}

/// `manifests/<run id>.json`.
pub fn manifest_key(run_id: &str) -> String {
    format!("{MANIFEST_DIR}/{run_id}.json")
}

/// When the run `run_id` started (second precision), from its id.
///
/// ```
/// use backup_core::manifest::run_started;
/// let t = run_started("20261123T130812Z-1a2b").unwrap();
/// assert_eq!(t.to_string(), "2026-11-23T13:08:12Z");
/// assert!(run_started("not-a-run").is_none());
/// ```
pub fn run_started(run_id: &str) -> Option<Timestamp> {
    let stamp = run_id.split('-').next()?;
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
        .and_then(|dt| dt.to_zoned_datetime(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .ok()
}

/// A new run id from a time: `20261123T130812Z-1a2b`, sortable, unique
/// enough across hosts. The four hex digits are the millisecond (upper ten
/// bits) and six bits of noise, so two runs in the same second still sort in
/// the order they started: the newest manifest key is the chain head, and a
/// run that sorted before its predecessor would fork the chain.
///
/// ```
/// use backup_core::manifest::new_run_id;
/// let t: jiff::Timestamp = "2026-11-23T13:08:12.100Z".parse().unwrap();
/// let later = t + jiff::SignedDuration::from_millis(1);
/// assert!(new_run_id(t) < new_run_id(later));
/// assert!(new_run_id(t).starts_with("20261123T130812Z-"));
/// ```
// Not a ULID or UUIDv7, which would sort the same way: this shape is
// readable in file names and listings, and every catalog written so far
// uses it.
pub fn new_run_id(at: Timestamp) -> String {
    let ms = at.subsec_millisecond().clamp(0, 999) as u16;
    let suffix = (ms << 6) | (rand::random::<u16>() & 0x3f);
    format!("{}-{suffix:04x}", at.strftime("%Y%m%dT%H%M%SZ"))
}

/// A manifest as stored: its key, raw bytes and parsed form.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Manifest key.
    pub key: String,
    /// SHA-256 of the stored bytes (what the next manifest's `previous` names).
    pub sha256: String,
    /// Parsed manifest.
    pub manifest: Manifest,
}

/// The sidecar of a manifest: `manifests/<run id>.json.sha256`, in
/// `sha256sum -c` format like every artifact's. It is written just before
/// the manifest, so a manifest changed by even one byte after it was
/// written (bit rot, a bad copy, an edit) is detected even when its JSON
/// still parses, and even for the newest manifest, which no later manifest
/// names yet.
pub fn sidecar_key(manifest_key: &str) -> String {
    crate::naming::sidecar_key(manifest_key)
}

/// Check manifest bytes against their sidecar. A manifest without one
/// (written before sidecars existed) is accepted; the chain still covers it.
pub(crate) fn check_sidecar(sink: &dyn Sink, key: &str, bytes: &[u8]) -> Result<(), CatalogError> {
    let malformed = |message: String| CatalogError::Malformed {
        key: key.to_string(),
        message,
    };
    let text = match get_bytes(sink, &sidecar_key(key)) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let sidecar = std::str::from_utf8(&text)
        .map_err(|_| malformed("its sidecar is not UTF-8 text".into()))
        .and_then(|t| {
            crate::digest::Sidecar::parse(t)
                .map_err(|e| malformed(format!("its sidecar is unreadable: {e}")))
        })?;
    let actual = Sha256::hex_of(bytes);
    if sidecar.sha256 != actual || sidecar.file_name != crate::naming::file_name(key) {
        return Err(malformed(format!(
            "SHA-256 does not match its sidecar (sidecar {} for \"{}\", manifest {actual}): \
             the manifest or its sidecar was altered; its entries are not offered",
            sidecar.sha256,
            shown(&sidecar.file_name)
        )));
    }
    Ok(())
}

/// A manifest naming keys no sink would store was not written by us:
/// none of its entries may be offered (a restore would try `../../app.db`).
pub(crate) fn refuse_bad_keys(key: &str, m: Manifest) -> Result<Manifest, CatalogError> {
    match m.bad_keys().into_iter().next() {
        None => Ok(m),
        Some((field, bad, reason)) => Err(CatalogError::Malformed {
            key: key.to_string(),
            message: format!(
                "{field} \"{}\" is not an object key ({reason}); its entries are not offered",
                shown(&bad)
            ),
        }),
    }
}

/// Read every manifest of a sink, oldest first. Unreadable manifests, and
/// manifests that do not match their sidecar, are returned as errors beside
/// the good ones, so one bad file does not hide the rest of the catalog;
/// the entries of a bad manifest are not offered (by `list`, `verify
/// --latest`, restore) because nothing it says can be trusted.
pub fn read_all(sink: &dyn Sink) -> Result<(Vec<Stored>, Vec<CatalogError>), SinkError> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for key in keys(sink)? {
        match read_one(sink, key) {
            Ok(Some(stored)) => good.push(stored),
            Ok(None) => {}
            Err(e) => bad.push(e),
        }
    }
    good.sort_by(|a, b| a.manifest.run_id.cmp(&b.manifest.run_id));
    Ok((good, bad))
}

/// The manifest keys of a sink, oldest first (keys sort as run ids do).
pub fn keys(sink: &dyn Sink) -> Result<Vec<String>, SinkError> {
    let mut keys: Vec<String> = sink
        .list(MANIFEST_DIR)?
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    keys.sort();
    Ok(keys)
}

/// One manifest, checked as [`read_all`] checks each: against its sidecar,
/// its format and its fields. `None`: it is gone (pruned races are not an
/// error).
pub fn read_one(sink: &dyn Sink, key: String) -> Result<Option<Stored>, CatalogError> {
    let bytes = match get_bytes(sink, &key) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    check_sidecar(sink, &key, &bytes)?;
    let manifest = refuse_bad_keys(&key, Manifest::from_bytes(&key, &bytes)?)?;
    Ok(Some(Stored {
        sha256: Sha256::hex_of(&bytes),
        key,
        manifest,
    }))
}

/// SHA-256 of the newest manifest's bytes: the chain head.
pub fn head(sink: &dyn Sink) -> Result<Option<String>, SinkError> {
    Ok(tip(sink)?.map(|t| t.sha256))
}

/// The newest manifest of a sink (greatest key), as the next manifest
/// links to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    /// Its key.
    pub key: String,
    /// Its run id (from the key, so an unreadable manifest still has one).
    pub run_id: String,
    /// SHA-256 of its bytes: the chain head.
    pub sha256: String,
    /// [`field_digests`] of its bytes.
    pub fields: BTreeMap<String, String>,
}

/// Read the newest manifest of a sink, if any.
pub fn tip(sink: &dyn Sink) -> Result<Option<Tip>, SinkError> {
    let Some(key) = keys(sink)?.pop() else {
        return Ok(None);
    };
    let bytes = get_bytes(sink, &key)?;
    Ok(Some(Tip {
        run_id: run_id_of_key(&key).to_string(),
        sha256: Sha256::hex_of(&bytes),
        fields: field_digests(&bytes),
        key,
    }))
}

/// The run id a manifest key stands for: `manifests/<run id>.json`.
///
/// ```
/// use backup_core::manifest::run_id_of_key;
/// assert_eq!(run_id_of_key("manifests/20261123T130812Z-1a2b.json"), "20261123T130812Z-1a2b");
/// ```
pub fn run_id_of_key(key: &str) -> &str {
    let name = key.strip_prefix(MANIFEST_DIR).unwrap_or(key);
    let name = name.trim_start_matches('/');
    name.strip_suffix(".json").unwrap_or(name)
}

/// Hex digits kept of each field digest in `previous_fields`.
pub const FIELD_DIGEST_LEN: usize = 16;

/// Short digests of the fields of a manifest, keyed by path: every
/// top-level field (`run_id`, `finished_at`, …) and, for arrays of objects
/// (`entries`, `pruned`), every field of every item (`entries[0].size`).
/// Each value is the first [`FIELD_DIGEST_LEN`] hex digits of the SHA-256 of
/// the field's compact JSON. Works on any JSON object, so it reads manifests
/// of other versions too; bytes that are not a JSON object give an empty map.
///
/// ```
/// use backup_core::manifest::field_digests;
/// let d = field_digests(br#"{"run_id":"r1","entries":[{"size":3}]}"#);
/// assert_eq!(d.keys().collect::<Vec<_>>(), ["entries[0].size", "run_id"]);
/// ```
pub fn field_digests(bytes: &[u8]) -> BTreeMap<String, String> {
    use serde_json::Value;
    let short = |v: &Value| {
        let json = serde_json::to_vec(v).expect("a JSON value serializes");
        Sha256::hex_of(&json)[..FIELD_DIGEST_LEN].to_string()
    };
    let mut out = BTreeMap::new();
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(bytes) else {
        return out;
    };
    for (name, value) in &top {
        match value {
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                for (i, item) in items.iter().enumerate() {
                    for (field, v) in item.as_object().expect("checked") {
                        out.insert(format!("{name}[{i}].{field}"), short(v));
                    }
                }
            }
            _ => {
                out.insert(name.clone(), short(value));
            }
        }
    }
    out
}

/// An artifact as found in the catalog.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Sink name.
    pub sink: String,
    /// Sink placement (local / remote / cold).
    pub placement: Placement,
    /// Run id.
    pub run_id: String,
    /// The entry.
    pub entry: Entry,
}

/// Every artifact still listed (not pruned) in a sink's catalog, newest first.
/// A prune hides what was listed before it, in chain (run id) order, as
/// [`view::State::apply`] does: a later snapshot under a pruned key (names
/// are per second, and a prune may free one within its second) is listed.
pub fn listed(sink: &dyn Sink, stored: &[Stored]) -> Vec<Listed> {
    let mut in_order: Vec<&Stored> = stored.iter().collect();
    in_order.sort_by(|a, b| a.manifest.run_id.cmp(&b.manifest.run_id));
    let mut state = view::State::default();
    for s in in_order {
        state.apply(&s.manifest);
    }
    view::listed(sink, &state)
}

/// A filled-in entry for tests.
#[cfg(test)]
pub(crate) fn sample_entry() -> Entry {
    Entry {
        adopted: None,
        label: "mission-control".into(),
        tag: Some("r75".into()),
        key: "mission-control-r75-20260416-130812.db.zst".into(),
        sidecar_key: "mission-control-r75-20260416-130812.db.zst.sha256".into(),
        compression: Format::Zstd,
        size: 1_234_567,
        sha256: Sha256::hex_of(b"artifact"),
        db_size: 8_388_608,
        db_sha256: Sha256::hex_of(b"database"),
        page_size: 4096,
        page_count: 2048,
        schema_sha256: Sha256::hex_of(b"schema"),
        row_counts: BTreeMap::from([("merkle_nodes".into(), 7), ("tasks".into(), 42)]),
        snapshot_at: "2026-04-16T13:08:12.345Z".parse().unwrap(),
        snapshot_ms: 180,
        verified_with: CheckLevel::QuickCheck,
        source: "/srv/app/mission-control.db".into(),
        host: Some("web-1".into()),
        source_mode: Some(0o640),
        encrypted_to: vec![],
        sealed: None,
        pages: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    fn entry() -> Entry {
        sample_entry()
    }

    /// The bytes of a second manifest in a chain (so every link field is
    /// filled), with times, digests and the tool version redacted: a change
    /// here is a format change and needs the version rule of the README.
    #[test]
    fn manifest_format_is_stable() {
        let sink = MemorySink::new("local");
        let t0: Timestamp = "2026-04-16T13:08:12Z".parse().unwrap();
        let t1: Timestamp = "2026-04-16T13:08:14Z".parse().unwrap();
        crate::catalog::append::write_manifest(
            &sink,
            "20260416T130812Z-1a2b",
            t0,
            t1,
            vec![entry()],
            vec![],
        )
        .unwrap();
        let (key, _) = crate::catalog::append::write_manifest(
            &sink,
            "20260416T170812Z-3c4d",
            t0,
            t1,
            vec![entry()],
            vec![Pruned {
                run_id: "20260301T130812Z-5e6f".into(),
                key: "mission-control-20260301-130812.db.zst".into(),
                reason: "older than 30 days (warm tier)".into(),
            }],
        )
        .unwrap();
        let stored = String::from_utf8(get_bytes(&sink, &key).unwrap()).unwrap();
        // Stored compact, one line; shown here indented, in the same field
        // order.
        assert_eq!(stored.lines().count(), 1, "{stored}");
        let m = Manifest::from_bytes(&key, stored.as_bytes()).unwrap();
        assert_eq!(m.to_bytes(), stored.as_bytes());
        let text = serde_json::to_string_pretty(&m).unwrap() + "\n";
        insta::with_settings!({filters => vec![
            (r"[0-9a-f]{64}", "[sha256]"),
            (r"\b[0-9a-f]{16}\b", "[field digest]"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
            (r#"(?m)^  "tool_version": "[^"]*""#, r#"  "tool_version": "[version]""#),
        ]}, {
            insta::assert_snapshot!(text);
        });
    }

    #[test]
    fn manifests_without_link_fields_still_read() {
        // Written before `previous_run_id` / `previous_fields` existed.
        let m = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            run_id: "r".into(),
            sink: "local".into(),
            tool_version: "0.1.0".into(),
            started_at: Timestamp::UNIX_EPOCH,
            finished_at: Timestamp::UNIX_EPOCH,
            previous: None,
            previous_run_id: None,
            previous_fields: BTreeMap::new(),
            entries: vec![entry()],
            pruned: vec![],
            collected: vec![],
            relinked: vec![],
        };
        let mut v = serde_json::to_value(&m).unwrap();
        v.as_object_mut().unwrap().remove("previous_run_id");
        v.as_object_mut().unwrap().remove("previous_fields");
        let back = Manifest::from_bytes("k", &serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, m);
        // Written before `source_mode` existed: unknown.
        v["entries"][0]
            .as_object_mut()
            .unwrap()
            .remove("source_mode");
        let back = Manifest::from_bytes("k", &serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back.entries[0].source_mode, None);
        // A newer version is refused, not misread.
        v["version"] = (VERSION + 1).into();
        assert!(Manifest::from_bytes("k", &serde_json::to_vec(&v).unwrap()).is_err());
        // A field in a form this version cannot parse: still "newer".
        v["entries"] = "a form of the future".into();
        let e = Manifest::from_bytes("k", &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("newer than this tool"), "{e}");
    }
}
