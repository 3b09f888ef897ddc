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
//!
//! A map of more than [`INLINE_PACKS`] packs stores its groups as one
//! string (manifest version 7): at one run a second a chain lists a settled
//! XOR pack per few seconds, and as JSON each costs about 260 bytes in every
//! later manifest and its claim, more than the pack itself over its life.
//! Written as `"zstd+postcard+base64:…"`: the groups in postcard's wire
//! format (LEB128 varints, strings and lists prefixed by their length, a
//! bool as one byte), each SHA-256 as its 32 bytes, then zstd and base64.

use std::ops::Not;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{PackRef, PageMap, Runs};

/// Suffix of page-hash index keys: packs named `<stem>.NNN.pack` share
/// the stem of their index `<stem>.pageidx`.
const INDEX_SUFFIX: &str = ".pageidx";

/// Up to this many packs are listed as JSON groups.
pub const INLINE_PACKS: usize = 8;

const PACKED_PREFIX: &str = "zstd+postcard+base64:";

/// The most bytes packed groups may decode to, and the most the pack
/// references of either form may take once each names its keys and hex
/// digests in full: far past any real chain (about 80 and 250 bytes a
/// pack), and a bound on what a hostile manifest makes a reader allocate
/// (a long prefix shared by many packs is copied into each).
const MAX_PACKED: u64 = 64 << 20;

#[derive(Serialize)]
struct Writing<'a> {
    chain_depth: u32,
    chain_started: Timestamp,
    stored_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_bytes: Option<u64>,
    pack_groups: Groups,
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
    pack_groups: Option<Groups>,
    #[serde(default)]
    hashes_sha256: Option<String>,
    runs: Runs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
enum Groups {
    List(Vec<Group>),
    Packed(String),
}

/// By hand rather than `untagged`, so a damaged list keeps serde's own
/// message (which field, what was found) instead of "did not match any
/// variant".
impl<'de> Deserialize<'de> for Groups {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Groups;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of pack groups or their packed string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Groups, E> {
                Ok(Groups::Packed(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Groups, A::Error> {
                Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(Groups::List)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What [`ungroup`] would allocate for `groups`, about.
fn ungrouped_bytes(groups: &[Group]) -> u64 {
    let each = |g: &Group| (2 * g.prefix.len() + g.index.len() + 2 * 64 + 64) as u64;
    groups
        .iter()
        .flat_map(|g| g.packs.iter().map(move |p| each(g) + p.0.len() as u64))
        .fold(0u64, u64::saturating_add)
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

/// A [`Group`] in the packed form, its digests as bytes.
#[derive(Serialize, Deserialize)]
struct PackedGroup {
    prefix: String,
    index: String,
    index_sha256: [u8; 32],
    xor: bool,
    packs: Vec<(String, u64, [u8; 32], u64, u64)>,
}

/// A SHA-256 as its bytes, when hex gives it back exactly (lowercase, 64
/// digits); a map with any other digest stays JSON.
fn digest_bytes(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    (hex::encode(out) == hex_digest).then_some(out)
}

fn pack_groups(groups: &[Group]) -> Option<String> {
    use base64::Engine;
    let packed = groups
        .iter()
        .map(|g| {
            Some(PackedGroup {
                prefix: g.prefix.clone(),
                index: g.index.clone(),
                index_sha256: digest_bytes(&g.index_sha256)?,
                xor: g.xor,
                packs: g
                    .packs
                    .iter()
                    .map(|(name, size, sha, pages, at)| {
                        Some((name.clone(), *size, digest_bytes(sha)?, *pages, *at))
                    })
                    .collect::<Option<_>>()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let raw = postcard::to_allocvec(&packed).expect("postcard into memory");
    let zstd = zstd::encode_all(raw.as_slice(), 3).expect("zstd into memory");
    let text = base64::engine::general_purpose::STANDARD.encode(zstd);
    Some(format!("{PACKED_PREFIX}{text}"))
}

fn unpack_groups(text: &str) -> Result<Vec<Group>, &'static str> {
    use base64::Engine;
    let b64 = text
        .strip_prefix(PACKED_PREFIX)
        .ok_or("pack_groups: unknown encoding")?;
    let zstd = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "pack_groups: not base64")?;
    let raw = crate::compress::zstd_decode_capped(&zstd, MAX_PACKED)
        .map_err(|_| "pack_groups: not zstd, or too long")?;
    let (packed, rest): (Vec<PackedGroup>, _) =
        postcard::take_from_bytes(&raw).map_err(|_| "pack_groups: damaged")?;
    if !rest.is_empty() {
        return Err("pack_groups: bytes after the groups");
    }
    Ok(packed
        .into_iter()
        .map(|g| Group {
            prefix: g.prefix,
            index: g.index,
            index_sha256: hex::encode(g.index_sha256),
            xor: g.xor,
            packs: g
                .packs
                .into_iter()
                .map(|(name, size, sha, pages, at)| (name, size, hex::encode(sha), pages, at))
                .collect(),
        })
        .collect())
}

impl PageMap {
    /// Whether its packs are stored packed (manifest version 7).
    pub fn packs_packed(&self) -> bool {
        self.packs.len() > INLINE_PACKS
            && self.packs.iter().all(|p| {
                digest_bytes(&p.sha256).is_some() && digest_bytes(&p.index_sha256).is_some()
            })
    }

    fn stored_groups(&self) -> Groups {
        let groups = group(&self.packs);
        match self.packs_packed().then(|| pack_groups(&groups)).flatten() {
            Some(text) => Groups::Packed(text),
            None => Groups::List(groups),
        }
    }
}

impl Serialize for PageMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Writing {
            chain_depth: self.chain_depth,
            chain_started: self.chain_started,
            stored_bytes: self.stored_bytes,
            base_bytes: self.base_bytes,
            pack_groups: self.stored_groups(),
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
            (None, Some(stored)) => {
                let groups = match stored {
                    Groups::List(groups) => groups,
                    Groups::Packed(text) => unpack_groups(&text)?,
                };
                if ungrouped_bytes(&groups) > MAX_PACKED {
                    return Err("pack_groups: more packs or longer keys than any chain has");
                }
                ungroup(groups)
            }
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

    /// A chain an hour into one run a second: a 200 MB base's 24 packs and
    /// 150 settled XOR packs of their own index each.
    fn long_chain() -> Vec<PackRef> {
        let base = "app-auto-20261207-172518-819f";
        let mut packs: Vec<PackRef> = (0..24)
            .map(|i| {
                pack(
                    &format!("{base}.{i:03}.pack"),
                    &format!("{base}.pageidx"),
                    i * 2048,
                    false,
                )
            })
            .collect();
        for i in 0..150u64 {
            let stem = format!(
                "app-auto-20261207-17{:02}{:02}-{i:04x}",
                25 + i / 60,
                i % 60
            );
            let mut p = pack(
                &format!("{stem}.000.pack"),
                &format!("{stem}.pageidx"),
                0,
                true,
            );
            // Digests as real ones are: no two alike.
            p.sha256 = crate::digest::Sha256::hex_of(stem.as_bytes());
            p.index_sha256 = crate::digest::Sha256::hex_of(p.index.as_bytes());
            p.size = 150_000 + i * 37;
            p.pages = 1_400 + i;
            packs.push(p);
        }
        packs
    }

    #[test]
    fn a_long_pack_list_is_packed_and_reads_back_the_same() {
        let m = map(long_chain());
        assert!(m.packs_packed());
        let json = serde_json::to_vec(&m).unwrap();
        let text = serde_json::from_slice::<serde_json::Value>(&json).unwrap()["pack_groups"]
            .as_str()
            .expect("a string")
            .to_string();
        assert!(text.starts_with(PACKED_PREFIX), "{text}");
        let back: PageMap = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, m);
        let listed = serde_json::to_vec(&group(&m.packs)).unwrap().len();
        // Measured: 15,317 of 41,421 bytes.
        assert!(text.len() * 2 < listed, "{} of {listed} bytes", text.len());
    }

    #[test]
    fn short_lists_and_lists_with_unusual_digests_stay_json() {
        let mut packs = long_chain();
        packs.truncate(INLINE_PACKS);
        assert!(!map(packs).packs_packed());
        let mut packs = long_chain();
        // Upper-case hex would not read back as written.
        packs[30].sha256 = packs[30].sha256.to_uppercase();
        let m = map(packs);
        assert!(!m.packs_packed());
        let json = serde_json::to_value(&m).unwrap();
        assert!(json["pack_groups"].is_array());
        assert_eq!(serde_json::from_value::<PageMap>(json).unwrap(), m);
    }

    #[test]
    fn damaged_packed_groups_are_an_error_never_another_map() {
        use base64::Engine;
        let m = map(long_chain());
        let json = serde_json::to_value(&m).unwrap();
        let text = json["pack_groups"].as_str().unwrap().to_string();
        let b64 = text.strip_prefix(PACKED_PREFIX).unwrap();
        let zstd = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let raw = crate::compress::zstd_decode_capped(&zstd, MAX_PACKED).unwrap();
        let encode = |raw: &[u8]| {
            let z = zstd::encode_all(raw, 3).unwrap();
            format!(
                "{PACKED_PREFIX}{}",
                base64::engine::general_purpose::STANDARD.encode(z)
            )
        };
        let mut longer = raw.clone();
        longer.push(0);
        for bad in [
            "zstd+bincode+base64:AAAA".to_string(),
            format!("{PACKED_PREFIX}!!!"),
            format!("{PACKED_PREFIX}{}", &b64[..b64.len() / 2]),
            encode(&raw[..raw.len() - 1]),
            encode(&raw[..raw.len() / 2]),
            encode(&longer),
            // A count of groups far past what the bytes hold.
            encode(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut j = json.clone();
            j["pack_groups"] = bad.clone().into();
            let e = serde_json::from_value::<PageMap>(j).unwrap_err();
            assert!(e.to_string().contains("pack_groups"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_long_prefix_shared_by_many_packs_is_refused_before_it_is_copied() {
        let group = PackedGroup {
            prefix: "p".repeat(1 << 20),
            index: ".pageidx".into(),
            index_sha256: [7; 32],
            xor: false,
            packs: (0..100u64)
                .map(|i| (String::new(), i, [7; 32], 1, i))
                .collect(),
        };
        let raw = postcard::to_allocvec(&vec![group]).unwrap();
        let zstd = zstd::encode_all(raw.as_slice(), 3).unwrap();
        use base64::Engine;
        let text = format!(
            "{PACKED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(zstd)
        );
        assert!(text.len() < 10_000, "{} bytes", text.len());
        let mut json = serde_json::to_value(map(long_chain())).unwrap();
        json["pack_groups"] = text.into();
        let e = serde_json::from_value::<PageMap>(json).unwrap_err();
        assert!(e.to_string().contains("longer keys"), "{e}");
    }

    #[test]
    fn a_damaged_list_says_what_is_wrong() {
        let mut json = serde_json::to_value(map(long_chain()[..3].to_vec())).unwrap();
        json["pack_groups"][0]["packs"][0][1] = "big".into();
        let e = serde_json::from_value::<PageMap>(json).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
