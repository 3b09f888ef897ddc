//! Copies of the XOR packs a host wrote and may fold again. A run folds
//! small XOR packs by XORing their deltas into its own (see
//! [`crate::compaction::fold_xor`]), but a host cannot read its sealed packs
//! back: it holds no key that opens them. So it keeps, in its state folder
//! (private, as the page hashes are), the compressed plaintext of each XOR
//! pack it seals, until the pack settles or leaves the chain. It does the
//! same for unsealed packs on an object store, which it could read back but
//! would pay a GET and the bytes' transfer for, about once a run at one run a
//! second. Beside each copy are its SHA-256 and that of the pack as stored:
//! a copy is used only for that pack and only with every byte as written. A
//! sealed chain with a missing or damaged copy takes a new full base, as a
//! lost page-hash cache does; an unsealed one reads that pack from the sink.
//! (The folder is still `sealed-packs/`, as it was named when only sealed
//! chains kept copies: renaming it would cost those a new base.)

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Sha256;
use crate::page_map::{PackProblem, PackRef};
use crate::xor_pack;

/// One sink's copies for one database.
#[derive(Debug, Clone)]
pub(crate) struct LocalPacks {
    dir: PathBuf,
}

impl LocalPacks {
    /// The copies of `label`'s chain on `sink`, below the page-hash cache.
    pub fn new(cache: &Path, sink: &str, label: &str) -> Self {
        Self {
            dir: cache.join("sealed-packs").join(format!("{sink}.{label}")),
        }
    }

    /// A file name per key: keys may hold folders, and two keys may share a
    /// last part.
    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&Sha256::hex_of(key.as_bytes())[..32])
    }

    fn digest_path(&self, key: &str) -> PathBuf {
        self.path(key).with_extension("sha256")
    }

    /// Keep `plain`, the bytes of pack `key` before they were sealed into
    /// the bytes whose SHA-256 is `stored`.
    pub fn keep(&self, key: &str, plain: &[u8], stored: &str) -> io::Result<()> {
        crate::fsutil::create_dir_all_mode(&self.dir, 0o700)?;
        crate::fsutil::atomic_write_mode(&self.path(key), plain, 0o600)?;
        let digests = format!("{} {stored}\n", Sha256::hex_of(plain));
        crate::fsutil::atomic_write_mode(&self.digest_path(key), digests.as_bytes(), 0o600)
    }

    /// The SHA-256 of `p`'s copy as written, if the copy is of exactly the
    /// pack the manifest names (the stored bytes' SHA-256 it was sealed
    /// into).
    fn plain_sha256(&self, p: &PackRef) -> Option<String> {
        let digests = std::fs::read_to_string(self.digest_path(&p.key)).ok()?;
        match digests.split_whitespace().collect::<Vec<_>>()[..] {
            [plain, stored] if stored == p.sha256 => Some(plain.to_string()),
            _ => None,
        }
    }

    /// Whether `p` has a copy that a fold can use: of this very pack, and
    /// with every byte as written. Checked before a run decides to fold, so
    /// a damaged copy costs a new base, never a run that fails again and
    /// again.
    pub fn usable(&self, p: &PackRef) -> bool {
        let Some(want) = self.plain_sha256(p) else {
            return false;
        };
        let Ok(file) = std::fs::File::open(self.path(&p.key)) else {
            return false;
        };
        let mut hashing = crate::digest::HashingReader::new(file);
        io::copy(&mut hashing, &mut io::sink()).is_ok() && hashing.finish().0 == want
    }

    /// A reader of `p`'s deltas from its copy.
    pub fn open(&self, p: &PackRef) -> Result<xor_pack::Reader, PackProblem> {
        let sha256 = self.plain_sha256(p).ok_or_else(|| PackProblem {
            key: p.key.clone(),
            reason: "its local copy is missing or of another pack".into(),
        })?;
        xor_pack::Reader::open_local(&self.path(&p.key), p, sha256)
    }

    /// Remove every copy but those of `keep`: the packs the sink's newest
    /// snapshot may still fold. A copy of a pack written by a run that
    /// never made it into the catalog goes too.
    pub fn retain<'a>(&self, keep: impl IntoIterator<Item = &'a PackRef>) -> io::Result<()> {
        let names: std::collections::HashSet<PathBuf> = keep
            .into_iter()
            .flat_map(|p| [self.path(&p.key), self.digest_path(&p.key)])
            .collect();
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r?,
        };
        for entry in entries {
            let path = entry?.path();
            if !names.contains(&path) {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(key: &str) -> PackRef {
        PackRef::sample_xor(key, 1)
    }

    #[test]
    fn copies_are_private_checked_and_only_the_kept_ones_stay() {
        let cache = tempfile::tempdir().unwrap();
        let local = LocalPacks::new(cache.path(), "azure", "app");
        let (a, b) = (
            pack("2026-12-07/app-1.000.pack"),
            pack("2026-12-08/app-1.000.pack"),
        );
        local.keep(&a.key, b"plaintext a", &a.sha256).unwrap();
        local.keep(&b.key, b"plaintext b", &b.sha256).unwrap();
        assert!(local.usable(&a) && local.usable(&b));
        // A pack of the same key the copy was not sealed into.
        let resealed = PackRef {
            sha256: "1".repeat(64),
            ..a.clone()
        };
        assert!(!local.usable(&resealed));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(local.path(&a.key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Edited behind the host's back: not usable, and named when read.
        std::fs::write(local.path(&a.key), b"plaintext A").unwrap();
        assert!(!local.usable(&a));
        let e = match local.open(&a) {
            Err(e) => e,
            Ok(r) => r.finish().unwrap_err(),
        };
        assert_eq!(e.key, a.key);

        local.retain([&b]).unwrap();
        assert!(!local.path(&a.key).exists() && local.usable(&b));
        local.retain([]).unwrap();
        assert!(!local.usable(&b));
        assert_eq!(std::fs::read_dir(&local.dir).unwrap().count(), 0);
    }
}
