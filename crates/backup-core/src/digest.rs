//! Content digests and the `sha256sum`-compatible sidecar format.
//!
//! Every artifact gets a sidecar `<artifact>.sha256` holding one line,
//! `<hex>  <file name>\n`, exactly what `sha256sum` prints, so the plain
//! coreutils tool can check our artifacts without us.

use std::io::{self, Read, Write};

use sha2::Digest as _;

/// SHA-256, the one content digest: it is what `sha256sum` and the seed
/// runbooks use (the `sha2` crate picks CPU acceleration such as SHA-NI at
/// run time).
#[derive(Default, Clone)]
pub struct Sha256(sha2::Sha256);

impl Sha256 {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hex digest of a byte slice, for small things (sidecars, manifests).
    ///
    /// ```
    /// assert_eq!(
    ///     backup_core::digest::Sha256::hex_of(b"abc"),
    ///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    /// );
    /// ```
    pub fn hex_of(data: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(data))
    }
}

impl Sha256 {
    /// Feed more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// Finish and return the lowercase hex digest.
    pub fn finish_hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// A `Write` adapter that hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    digest: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            digest: Sha256::new(),
            bytes: 0,
        }
    }
    /// Return the inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, self.digest.finish_hex(), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A `Read` adapter that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    digest: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            digest: Sha256::new(),
            bytes: 0,
        }
    }
    /// The hex digest and byte count of what was read so far.
    pub fn finish(self) -> (String, u64) {
        (self.digest.finish_hex(), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A parsed sidecar line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// The file name the digest is for, as `sha256sum -c` will look it up.
    pub file_name: String,
}

/// Why a sidecar could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SidecarError {
    /// Not `<64 hex>  <name>` on one line.
    #[error("sidecar is not in `sha256sum` format (`<64 hex digits>  <file name>`): {0}")]
    Malformed(String),
}

impl Sidecar {
    /// Build a sidecar for `file_name`.
    pub fn new(sha256: impl Into<String>, file_name: impl Into<String>) -> Self {
        Self {
            sha256: sha256.into(),
            file_name: file_name.into(),
        }
    }

    /// The exact bytes `sha256sum` would print (text mode: two spaces).
    ///
    /// ```
    /// use backup_core::digest::Sidecar;
    /// let s = Sidecar::new("ab".repeat(32), "app-2026.db.zst");
    /// assert_eq!(Sidecar::parse(&s.render()).unwrap(), s);
    /// ```
    pub fn render(&self) -> String {
        format!("{}  {}\n", self.sha256, self.file_name)
    }

    /// Parse one `sha256sum` line (text `  ` or binary ` *` mode).
    pub fn parse(text: &str) -> Result<Self, SidecarError> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let short = |s: &str| s.chars().take(80).collect::<String>();
        if line.contains('\n') || line.is_empty() {
            return Err(SidecarError::Malformed(format!(
                "expected exactly one line, got {:?}",
                short(text)
            )));
        }
        let (hex_part, rest) = line
            .split_at_checked(64)
            .ok_or_else(|| SidecarError::Malformed(format!("too short: {:?}", short(line))))?;
        if !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(SidecarError::Malformed(format!(
                "digest is not 64 lowercase hex digits: {:?}",
                short(hex_part)
            )));
        }
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| {
                SidecarError::Malformed(format!(
                    "missing the two-space separator: {:?}",
                    short(line)
                ))
            })?;
        if name.is_empty() {
            return Err(SidecarError::Malformed("missing file name".into()));
        }
        Ok(Self::new(hex_part, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_sidecars() {
        for bad in [
            "",
            "abc  x",
            &format!("{}x  f", "a".repeat(63)),
            &format!("{} f", "a".repeat(64)),
            &format!("{}  ", "a".repeat(64)),
            &format!("{}  f\n{}  g\n", "a".repeat(64), "b".repeat(64)),
            &format!("{}  f", "A".repeat(64)),
        ] {
            assert!(Sidecar::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn accepts_binary_mode() {
        let s = Sidecar::parse(&format!("{} *f.gz\n", "0".repeat(64))).unwrap();
        assert_eq!(s.file_name, "f.gz");
    }

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, hex, n) = w.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(n, 3);
        assert_eq!(hex, Sha256::hex_of(b"abc"));
    }
}
