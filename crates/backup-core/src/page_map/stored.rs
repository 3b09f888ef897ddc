//! A page map as a manifest stores it (manifest version 5): its packs in
//! groups, one per run of consecutive packs that share a page-hash index.
//!
//! Every manifest of a chain lists every pack its image needs, so the list
//! is most of a manifest (35 packs: 10.5 of 13.2 kB at one run a second on a
//! 186 MB database), and a manifest is written twice (its chain claim and
//! its copy). Listed one by one, each pack repeats its index's key and
//! SHA-256 and its own key's stem; a group says them once and each pack is
//! `[name, size, sha256, pages, index_at]`, where the key is the group's
//! `prefix` followed by `name` (and the index key, `prefix` followed by
//! `index`). Groups keep the packs' order: runs name packs by position.
//! Maps written before version 5 (`packs`, one object each) still read.

use std::ops::Not;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{PackRef, PageMap, Runs};

/// Suffix of page-hash index keys: packs named `<stem>.NNN.pack` share
/// the stem of their index `<stem>.pageidx`.
const INDEX_SUFFIX: &str = ".pageidx";

#[derive(Serialize)]
struct Writing<'a> {
    chain_depth: u32,
    chain_started: Timestamp,
    stored_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_bytes: Option<u64>,
    pack_groups: Vec<Group>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hashes_sha256: &'a Option<String>,
    runs: &'a Runs,
}

#[derive(Deserialize)]
pub(super) struct Reading {
    chain_depth: u32,
    chain_started: Timestamp,
    stored_bytes: u64,
    #[serde(default)]
    base_bytes: Option<u64>,
    /// Before version 5.
    #[serde(default)]
    packs: Option<Vec<PackRef>>,
    #[serde(default)]
    pack_groups: Option<Vec<Group>>,
    #[serde(default)]
    hashes_sha256: Option<String>,
    runs: Runs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    prefix: String,
    index: String,
    index_sha256: String,
    #[serde(default, skip_serializing_if = "Not::not")]
    xor: bool,
    packs: Vec<(String, u64, String, u64, u64)>,
}

impl Group {
    fn holds(&self, p: &PackRef) -> bool {
        self.index_sha256 == p.index_sha256
            && self.xor == p.xor
            && p.index.strip_prefix(&self.prefix) == Some(self.index.as_str())
            && p.key.starts_with(&self.prefix)
    }

    /// A group for `p`: prefixed by its index's stem when its key has it.
    fn start(p: &PackRef) -> Self {
        let prefix = p
            .index
            .strip_suffix(INDEX_SUFFIX)
            .filter(|stem| p.key.starts_with(stem))
            .unwrap_or("");
        Self {
            prefix: prefix.to_string(),
            index: p.index[prefix.len()..].to_string(),
            index_sha256: p.index_sha256.clone(),
            xor: p.xor,
            packs: Vec::new(),
        }
    }
}

fn group(packs: &[PackRef]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for p in packs {
        if !groups.last().is_some_and(|g| g.holds(p)) {
            groups.push(Group::start(p));
        }
        let g = groups.last_mut().expect("pushed above");
        g.packs.push((
            p.key[g.prefix.len()..].to_string(),
            p.size,
            p.sha256.clone(),
            p.pages,
            p.index_at,
        ));
    }
    groups
}

fn ungroup(groups: Vec<Group>) -> Vec<PackRef> {
    let mut packs = Vec::new();
    for g in groups {
        let index = format!("{}{}", g.prefix, g.index);
        for (name, size, sha256, pages, index_at) in g.packs {
            packs.push(PackRef {
                key: format!("{}{name}", g.prefix),
                size,
                sha256,
                pages,
                index: index.clone(),
                index_sha256: g.index_sha256.clone(),
                index_at,
                xor: g.xor,
            });
        }
    }
    packs
}

impl Serialize for PageMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Writing {
            chain_depth: self.chain_depth,
            chain_started: self.chain_started,
            stored_bytes: self.stored_bytes,
            base_bytes: self.base_bytes,
            pack_groups: group(&self.packs),
            hashes_sha256: &self.hashes_sha256,
            runs: &self.runs,
        }
        .serialize(s)
    }
}

impl TryFrom<Reading> for PageMap {
    type Error = &'static str;

    fn try_from(r: Reading) -> Result<Self, Self::Error> {
        let packs = match (r.packs, r.pack_groups) {
            (Some(packs), None) => packs,
            (None, Some(groups)) => ungroup(groups),
            (None, None) => return Err("missing field `pack_groups`"),
            (Some(_), Some(_)) => return Err("both `packs` and `pack_groups`"),
        };
        Ok(Self {
            chain_depth: r.chain_depth,
            chain_started: r.chain_started,
            stored_bytes: r.stored_bytes,
            base_bytes: r.base_bytes,
            packs,
            hashes_sha256: r.hashes_sha256,
            runs: r.runs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(key: &str, index: &str, index_at: u64, xor: bool) -> PackRef {
        PackRef {
            key: key.into(),
            size: 100 + index_at,
            sha256: format!("{index_at:064x}"),
            pages: 7,
            index: index.into(),
            index_sha256: format!("{:064x}", index.len()),
            index_at,
            xor,
        }
    }

    fn map(packs: Vec<PackRef>) -> PageMap {
        PageMap {
            chain_depth: 3,
            chain_started: "2026-12-07T12:00:00Z".parse().unwrap(),
            stored_bytes: 9,
            base_bytes: Some(9),
            packs,
            hashes_sha256: None,
            runs: Vec::new().into(),
        }
    }

    #[test]
    fn packs_are_grouped_by_index_in_order_and_read_back_the_same() {
        let packs = vec![
            pack("a-1.000.pack", "a-1.pageidx", 0, false),
            pack("a-1.001.pack", "a-1.pageidx", 7, false),
            pack("a-2.000.pack", "a-2.pageidx", 0, true),
            // Back to the first index after another: a group of its own,
            // since runs name packs by position.
            pack("a-1.002.pack", "a-1.pageidx", 14, false),
            // A key without its index's stem, and an index with no suffix.
            pack("compacted-9.pack", "a-2.pageidx", 3, true),
            pack("x.pack", "x-index", 0, false),
        ];
        let m = map(packs.clone());
        let json = serde_json::to_value(&m).unwrap();
        assert!(json.get("packs").is_none(), "{json}");
        let groups = json["pack_groups"].as_array().unwrap();
        assert_eq!(groups.len(), 5);
        assert_eq!(groups[0]["prefix"], "a-1");
        assert_eq!(groups[0]["index"], ".pageidx");
        assert_eq!(groups[0]["packs"][1][0], ".001.pack");
        assert_eq!(groups[3]["prefix"], "");
        assert_eq!(groups[3]["index"], "a-2.pageidx");
        assert_eq!(groups[3]["packs"][0][0], "compacted-9.pack");
        let back: PageMap = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn grouped_packs_take_about_a_third_of_the_listed_bytes() {
        let packs: Vec<PackRef> = (0..23)
            .map(|i| {
                pack(
                    &format!("app-auto-20261207-115812-f256.{i:03}.pack"),
                    "app-auto-20261207-115812-f256.pageidx",
                    i * 2048,
                    false,
                )
            })
            .collect();
        let listed = serde_json::to_vec(&packs).unwrap().len();
        let grouped = serde_json::to_vec(&group(&packs)).unwrap().len();
        // Measured: 2,326 of 6,772 bytes for a 200 MB base's 23 packs.
        assert!(grouped * 5 < listed * 2, "{grouped} of {listed} bytes");
    }

    #[test]
    fn maps_written_before_groups_still_read_and_mixed_forms_do_not() {
        let m = map(vec![pack("a-1.000.pack", "a-1.pageidx", 0, true)]);
        let mut old = serde_json::to_value(&m).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("pack_groups");
        o.insert("packs".into(), serde_json::to_value(&m.packs).unwrap());
        assert_eq!(serde_json::from_value::<PageMap>(old.clone()).unwrap(), m);

        let mut both = old.clone();
        both["pack_groups"] = serde_json::json!([]);
        let e = serde_json::from_value::<PageMap>(both).unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
        old.as_object_mut().unwrap().remove("packs");
        let e = serde_json::from_value::<PageMap>(old).unwrap_err();
        assert!(e.to_string().contains("pack_groups"), "{e}");
    }
}
