//! Manifest fields checked where they are read. A sidecar that matches
//! proves only that nobody changed the bytes *after* the sidecar was
//! written; whoever can write the sink can write both. So before anything
//! shortens, adds or prints a field, it must look like what the writer
//! produces: digests are lowercase hex of the right length, numbers are in
//! a range a SQLite database can reach. Text from a manifest is shown
//! through [`Shown`], bounded and with control characters escaped.

use std::fmt;

use serde_json::Value;

use super::{Entry, FIELD_DIGEST_LEN, Manifest, SealedFacts};
use crate::page_map::PageMap;

/// Characters of an untrusted value shown in a message.
pub const SHOWN_CHARS: usize = 96;

/// Characters of an untrusted message (a parser's, which quotes the input)
/// shown in a message.
pub const SHOWN_MESSAGE_CHARS: usize = 240;

/// Largest page count SQLite allows.
pub const MAX_PAGES: u64 = 4_294_967_294;

/// Largest byte size accepted for an artifact, database, pack or snapshot:
/// 1 PiB, above SQLite's largest database (65,536-byte pages × [`MAX_PAGES`],
/// about 281 TB) with room for compression and encryption overhead, and
/// far below where sums of sizes could overflow.
pub const MAX_BYTES: u64 = 1 << 50;

/// Largest row count (SQLite counts rows in an `i64`).
pub const MAX_ROWS: u64 = i64::MAX as u64;

/// Longest snapshot accepted: a year, in milliseconds.
pub const MAX_SNAPSHOT_MS: u64 = 365 * 24 * 3600 * 1000;

/// Deepest incremental chain accepted: centuries of one snapshot a minute,
/// and far enough from `u32::MAX` that the next depth cannot overflow.
pub const MAX_CHAIN_DEPTH: u32 = 1 << 30;

/// Untrusted text as a message shows it: at most a number of characters
/// (never cut inside one), with control and other unprintable characters
/// escaped (`\n`, `\u{1b}`, `\u{202e}`) so it cannot forge lines or move
/// the terminal's cursor. Quotes and backslashes are kept as they are, so
/// showing shown text again changes nothing but the length.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a> {
    text: &'a str,
    max: usize,
    ellipsis: bool,
}

/// `text` shown for a message, at most [`SHOWN_CHARS`] characters and an
/// ellipsis when cut.
///
/// ```
/// use backup_core::manifest::shown;
/// assert_eq!(shown("a\nb\u{1b}[2J").to_string(), r"a\nb\u{1b}[2J");
/// assert_eq!(shown(&"é".repeat(200)).to_string().chars().count(), 97);
/// ```
pub fn shown(text: &str) -> Shown<'_> {
    Shown {
        text,
        max: SHOWN_CHARS,
        ellipsis: true,
    }
}

/// An untrusted message (a parser's), at most [`SHOWN_MESSAGE_CHARS`].
pub fn shown_message(text: &str) -> Shown<'_> {
    Shown {
        text,
        max: SHOWN_MESSAGE_CHARS,
        ellipsis: true,
    }
}

/// The first `n` characters of a digest, escaped like [`shown`], with no
/// ellipsis (as digests are shortened in messages).
///
/// ```
/// use backup_core::manifest::prefix;
/// assert_eq!(prefix("aéé", 2).to_string(), "aé");
/// ```
pub fn prefix(text: &str, n: usize) -> Shown<'_> {
    Shown {
        text,
        max: n,
        ellipsis: false,
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let mut chars = self.text.chars();
        for c in chars.by_ref().take(self.max) {
            match c {
                // Printable, and escaping them would garble parser
                // messages that quote the input.
                '"' | '\'' | '\\' => f.write_char(c)?,
                _ => write!(f, "{}", c.escape_debug())?,
            }
        }
        if self.ellipsis && chars.next().is_some() {
            f.write_char('…')?;
        }
        Ok(())
    }
}

/// A manifest field whose value the writer never produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` is {value}: {reason}")]
pub struct FieldError {
    /// Field path (`entries[0].sha256`), untrusted parts already [`shown`].
    pub field: String,
    /// The value, [`shown`] (strings quoted).
    pub value: String,
    /// What it should be.
    pub reason: String,
}

type Checked = Result<(), FieldError>;

fn bad(field: impl Into<String>, value: String, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        value,
        reason: reason.into(),
    }
}

fn hex(field: impl Into<String>, text: &str, len: usize) -> Checked {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if text.len() == len && text.bytes().all(lower_hex) {
        return Ok(());
    }
    Err(bad(
        field,
        format!("\"{}\"", shown(text)),
        format!("expected {len} lowercase hex digits"),
    ))
}

fn sha256(field: impl Into<String>, text: &str) -> Checked {
    hex(field, text, 64)
}

fn at_most(field: impl Into<String>, n: u64, max: u64, what: &str) -> Checked {
    if n <= max {
        return Ok(());
    }
    Err(bad(field, n.to_string(), format!("above {max}, {what}")))
}

/// Check every digest and number of a parsed manifest.
pub(crate) fn manifest(m: &Manifest) -> Checked {
    if let Some(p) = &m.previous {
        sha256("previous", p)?;
    }
    for (path, digest) in &m.previous_fields {
        hex(
            format!("previous_fields[\"{}\"]", shown(path)),
            digest,
            FIELD_DIGEST_LEN,
        )?;
    }
    for (i, r) in m.relinked.iter().enumerate() {
        sha256(format!("relinked[{i}].sha256"), &r.sha256)?;
    }
    for (i, e) in m.entries.iter().enumerate() {
        entry(&format!("entries[{i}]"), e)?;
    }
    Ok(())
}

fn entry(at: &str, e: &Entry) -> Checked {
    let f = |name: &str| format!("{at}.{name}");
    sha256(f("sha256"), &e.sha256)?;
    // Sealed entries keep these digests encrypted; in the clear they are
    // empty (see `Entry::sealed`).
    let sealed = e.sealed.is_some();
    // An incremental snapshot whose run read only the pages the WAL named
    // has no whole-image SHA-256: its image digest is its page hashes'.
    let page_digest = e.pages.as_ref().is_some_and(|p| p.hashes_sha256.is_some());
    for (name, digest, may_be_empty) in [
        ("db_sha256", &e.db_sha256, sealed || page_digest),
        ("schema_sha256", &e.schema_sha256, sealed),
    ] {
        if !(may_be_empty && digest.is_empty()) {
            sha256(f(name), digest)?;
        }
    }
    at_most(f("size"), e.size, MAX_BYTES, "larger than any backup")?;
    at_most(
        f("db_size"),
        e.db_size,
        MAX_BYTES,
        "larger than any database",
    )?;
    if !(512..=65536).contains(&e.page_size) || !e.page_size.is_power_of_two() {
        return Err(bad(
            f("page_size"),
            e.page_size.to_string(),
            "not a SQLite page size (a power of two from 512 to 65536)",
        ));
    }
    at_most(f("page_count"), e.page_count, MAX_PAGES, "SQLite's largest")?;
    row_counts(&f("row_counts"), &e.row_counts)?;
    at_most(f("snapshot_ms"), e.snapshot_ms, MAX_SNAPSHOT_MS, "a year")?;
    if let Some(host) = &e.host {
        // Printed in listings and matched by `--source host:/path`.
        let odd = |c: char| c == ':' || c == '/' || c.is_whitespace() || c.is_control();
        if host.is_empty() || host.len() > 253 || host.chars().any(odd) {
            return Err(bad(
                f("host"),
                shown(host).to_string(),
                "not a machine name",
            ));
        }
    }
    for (i, fp) in e.encrypted_to.iter().enumerate() {
        if fp != "passphrase" {
            hex(f(&format!("encrypted_to[{i}]")), fp, 12)?;
        }
    }
    if let Some(map) = &e.pages {
        page_map(&f("pages"), map)?;
    }
    Ok(())
}

fn row_counts(at: &str, counts: &std::collections::BTreeMap<String, u64>) -> Checked {
    for (table, &n) in counts {
        at_most(
            format!("{at}[\"{}\"]", shown(table)),
            n,
            MAX_ROWS,
            "SQLite's largest",
        )?;
    }
    Ok(())
}

fn page_map(at: &str, map: &PageMap) -> Checked {
    let f = |name: &str| format!("{at}.{name}");
    if map.chain_depth > MAX_CHAIN_DEPTH {
        return Err(bad(
            f("chain_depth"),
            map.chain_depth.to_string(),
            format!("above {MAX_CHAIN_DEPTH}"),
        ));
    }
    at_most(
        f("stored_bytes"),
        map.stored_bytes,
        MAX_BYTES,
        "larger than any snapshot",
    )?;
    if let Some(b) = map.base_bytes {
        at_most(f("base_bytes"), b, MAX_BYTES, "larger than any snapshot")?;
    }
    if let Some(h) = &map.hashes_sha256 {
        sha256(f("hashes_sha256"), h)?;
    }
    for (i, p) in map.packs.iter().enumerate() {
        let f = |name: &str| format!("{at}.packs[{i}].{name}");
        at_most(f("size"), p.size, MAX_BYTES, "larger than any pack")?;
        sha256(f("sha256"), &p.sha256)?;
        at_most(
            f("pages"),
            p.pages,
            MAX_PAGES,
            "SQLite's largest page count",
        )?;
        sha256(f("index_sha256"), &p.index_sha256)?;
        at_most(
            f("index_at"),
            p.index_at,
            MAX_PAGES,
            "SQLite's largest page count",
        )?;
    }
    Ok(())
}

/// Check the facts an encrypted entry keeps sealed, once opened: whoever
/// has a recipient's public key can seal anything.
pub(crate) fn sealed_facts(facts: &SealedFacts) -> Checked {
    // A run that read only the pages the WAL named has no image SHA-256.
    if let Some(pages) = &facts.pages_sha256 {
        sha256("sealed.pages_sha256", pages)?;
    }
    if !(facts.pages_sha256.is_some() && facts.db_sha256.is_empty()) {
        sha256("sealed.db_sha256", &facts.db_sha256)?;
    }
    sha256("sealed.schema_sha256", &facts.schema_sha256)?;
    row_counts("sealed.row_counts", &facts.row_counts)
}

/// Where a manifest that does not deserialise goes wrong: the path of the
/// first field that fails on its own (`entries[0].pages.packs[0].size`) and
/// its value (`None`: missing). Found by putting the manifest's fields, one
/// at a time, into a manifest known to deserialise; serde's own message
/// gives only a line and column. `None` when the bytes are not a JSON
/// object, or no single field is to blame.
pub(crate) fn locate(bytes: &[u8]) -> Option<(String, Option<Value>)> {
    let suspect: Value = serde_json::from_slice(bytes).ok()?;
    if !suspect.is_object() {
        return None;
    }
    let template = template();
    let mut doc = template.clone();
    descend(&mut doc, "", "", &template, &suspect)
}

fn parses(doc: &Value) -> bool {
    use serde::Deserialize;
    Manifest::deserialize(doc).is_ok()
}

/// The path of `key` below `path`: `a.b`, or `a["…"]` for a key that is not
/// a plain name (a table in `row_counts`, shown).
fn child_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match (plain, path.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[\"{}\"]", shown(key)),
    }
}

/// Try each child of `suspect` (at JSON pointer `ptr` of `doc`, where
/// `doc` holds `tmpl`) in place of the template's; descend into the first
/// that fails.
fn descend(
    doc: &mut Value,
    ptr: &str,
    path: &str,
    tmpl: &Value,
    suspect: &Value,
) -> Option<(String, Option<Value>)> {
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match (tmpl, suspect) {
        (Value::Object(t), Value::Object(s)) => {
            // Fields the reader does not know are ignored (version rule).
            for (k, sv) in s.iter().filter(|(k, _)| t.contains_key(*k)) {
                let tv = &t[k];
                let child_ptr = format!("{ptr}/{}", escape(k));
                let slot = doc.pointer_mut(&child_ptr)?;
                *slot = sv.clone();
                let ok = parses(doc);
                *doc.pointer_mut(&child_ptr)? = tv.clone();
                if !ok {
                    let here = child_path(path, k);
                    return descend(doc, &child_ptr, &here, tv, sv)
                        .or_else(|| Some((here, Some(sv.clone()))));
                }
            }
            for k in t.keys().filter(|k| !s.contains_key(*k)) {
                let Some(Value::Object(parent)) = doc.pointer_mut(ptr) else {
                    return None;
                };
                let tv = parent.remove(k)?;
                let ok = parses(doc);
                if let Some(Value::Object(parent)) = doc.pointer_mut(ptr) {
                    parent.insert(k.clone(), tv);
                }
                if !ok {
                    return Some((child_path(path, k), None));
                }
            }
            None
        }
        (Value::Array(t), Value::Array(s)) if !t.is_empty() => {
            // The template's lists hold one item; a longer array is a tuple
            // (a page-map run, a grouped pack), tried place by place.
            let tuple = t.len() > 1;
            for (i, sv) in s.iter().enumerate() {
                let at = if tuple { i } else { 0 };
                let tv = t.get(at)?;
                let child_ptr = format!("{ptr}/{at}");
                *doc.pointer_mut(&child_ptr)? = sv.clone();
                let ok = parses(doc);
                *doc.pointer_mut(&child_ptr)? = tv.clone();
                if !ok {
                    let here = format!("{path}[{i}]");
                    return descend(doc, &child_ptr, &here, tv, sv)
                        .or_else(|| Some((here, Some(sv.clone()))));
                }
            }
            None
        }
        _ => None,
    }
}

/// A manifest with every field filled (and every list one item long), as
/// JSON: what [`locate`] substitutes fields into.
fn template() -> Value {
    use crate::page_map::{PackRef, Run};
    let t = jiff::Timestamp::UNIX_EPOCH;
    let digest = || "0".repeat(64);
    let m = Manifest {
        format: super::FORMAT.into(),
        version: super::VERSION,
        run_id: "r".into(),
        sink: "s".into(),
        tool_version: "0".into(),
        started_at: t,
        finished_at: t,
        previous: Some(digest()),
        previous_run_id: Some("r".into()),
        previous_fields: [("run_id".to_string(), "0".repeat(FIELD_DIGEST_LEN))].into(),
        entries: vec![Entry {
            adopted: None,
            label: "l".into(),
            tag: Some("t".into()),
            key: "k".into(),
            sidecar_key: "k.sha256".into(),
            compression: crate::compress::Format::Zstd,
            size: 1,
            sha256: digest(),
            db_size: 1,
            db_sha256: digest(),
            page_size: 4096,
            page_count: 1,
            schema_sha256: digest(),
            row_counts: [("t".to_string(), 1)].into(),
            snapshot_at: t,
            snapshot_ms: 1,
            verified_with: crate::database::CheckLevel::QuickCheck,
            source: "s".into(),
            host: Some("h".into()),
            source_mode: Some(0o600),
            encrypted_to: vec!["passphrase".into()],
            sealed: Some("s".into()),
            pages: Some(PageMap {
                chain_depth: 0,
                chain_started: t,
                stored_bytes: 1,
                base_bytes: Some(1),
                packs: vec![PackRef {
                    key: "p".into(),
                    size: 1,
                    sha256: digest(),
                    pages: 1,
                    index: "k".into(),
                    index_sha256: digest(),
                    index_at: 0,
                    xor: false,
                }],
                hashes_sha256: Some(digest()),
                runs: vec![Run::from((0, 1, 0, 0))].into(),
            }),
        }],
        pruned: vec![super::Pruned {
            run_id: "r".into(),
            key: "k".into(),
            reason: "r".into(),
        }],
        collected: vec!["c".into()],
        relinked: vec![super::Relinked {
            key: "k".into(),
            run_id: "r".into(),
            sha256: digest(),
            reason: "r".into(),
        }],
    };
    serde_json::to_value(&m).expect("a manifest serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_and_bounds_by_characters() {
        let s = shown("\u{202e}evil\r\n\t\u{7}\u{0}").to_string();
        assert_eq!(s, r"\u{202e}evil\r\n\t\u{7}\0");
        let long = format!("a{}", "é".repeat(500));
        let s = shown(&long).to_string();
        assert_eq!(s.chars().count(), SHOWN_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(
            prefix(&long, 16).to_string(),
            format!("a{}", "é".repeat(15))
        );
        assert_eq!(shown("\"q\" it's").to_string(), "\"q\" it's");
    }

    #[test]
    fn the_writers_values_pass() {
        manifest(&Manifest {
            format: super::super::FORMAT.into(),
            version: super::super::VERSION,
            run_id: "r".into(),
            sink: "local".into(),
            tool_version: "0".into(),
            started_at: jiff::Timestamp::UNIX_EPOCH,
            finished_at: jiff::Timestamp::UNIX_EPOCH,
            previous: Some(crate::digest::Sha256::hex_of(b"m")),
            previous_run_id: None,
            previous_fields: super::super::field_digests(br#"{"a":1}"#),
            entries: vec![super::super::sample_entry()],
            pruned: vec![],
            collected: vec![],
            relinked: vec![],
        })
        .unwrap();
    }
}
