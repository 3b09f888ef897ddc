//! Encryption at rest with [age](https://age-encryption.org): public keys
//! (recipients) to write, private keys (identities) only to read.
//!
//! The host that takes backups needs only [`Recipients`]: it can write
//! backups it can never read back. Each artifact is compressed, then
//! encrypted as one streaming age file (chunks of 64 KiB, each
//! authenticated), so memory stays bounded; the sidecar hashes the stored,
//! encrypted bytes, so `sha256sum -c` works without any key. The manifest's
//! digests of the plaintext (the image's SHA-256, the schema hash) and the
//! row counts are sealed to the same recipients: nothing stored in the clear
//! lets anyone confirm a guess about the content.
//!
//! ```
//! use backup_core::encryption::{Identities, Recipients};
//! let key = age::x25519::Identity::generate();
//! let to = Recipients::parse([key.to_public().to_string()]).unwrap();
//! let sealed = to.seal(b"facts").unwrap();
//! let from = Identities::from_x25519([key]);
//! assert_eq!(from.unseal(&sealed).unwrap(), b"facts");
//! ```

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use age::secrecy::SecretString;
use age::{Decryptor, Encryptor};

use crate::compress::Encoder;
use crate::digest::Sha256;

/// Why keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A recipient that is not an age public key (`age1…`).
    #[error("recipient {index} is not an age public key (age1…): {reason}")]
    BadRecipient {
        /// 1-based position in the list or file.
        index: usize,
        /// What age said.
        reason: String,
    },
    /// No recipient at all: encryption was asked for, with nothing to encrypt to.
    #[error("no recipient given: refusing to write backups that nobody could read")]
    NoRecipients,
    /// A key file that could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An identity file with no usable private key. The key itself is
    /// never part of the message.
    #[error("{path}: no age identity (AGE-SECRET-KEY-1…) in it")]
    NoIdentity {
        /// The file.
        path: String,
    },
}

/// Why an encrypted object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// None of the identities is a recipient of this object.
    #[error("{}", wrong_identity(encrypted_to))]
    WrongIdentity {
        /// Short fingerprints of the recipients, when known.
        encrypted_to: Vec<String>,
    },
    /// The ciphertext is damaged or truncated.
    #[error("the ciphertext is damaged or truncated: {0}")]
    Damaged(String),
}

/// Short, stable name of a recipient for listings: the first 12 hex digits
/// of the SHA-256 of its `age1…` string. It identifies a key without
/// printing it whole.
pub fn fingerprint(recipient: &str) -> String {
    Sha256::hex_of(recipient.trim().as_bytes())[..12].to_string()
}

/// What backups are encrypted to: age public keys, or one passphrase.
#[derive(Clone)]
pub struct Recipients(Arc<RecipientsInner>);

struct RecipientsInner {
    keys: Vec<Box<dyn age::Recipient + Send + Sync>>,
    fingerprints: Vec<String>,
    /// BLAKE3 of the passphrase in passphrase mode: two passphrases share a
    /// fingerprint. Kept in memory only (see [`Recipients::tag_context`]).
    passphrase: Option<[u8; 32]>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Recipients")
            .field(&self.0.fingerprints)
            .finish()
    }
}

impl PartialEq for Recipients {
    fn eq(&self, other: &Self) -> bool {
        self.0.fingerprints == other.0.fingerprints
    }
}

impl Recipients {
    /// Parse `age1…` public keys. An empty list or a malformed key is an
    /// error: a run must never fall back to plaintext.
    pub fn parse<I, S>(keys: I) -> Result<Self, KeyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed: Vec<Box<dyn age::Recipient + Send + Sync>> = Vec::new();
        let mut fingerprints = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let key = key.as_ref().trim();
            let r: age::x25519::Recipient =
                key.parse().map_err(|e: &str| KeyError::BadRecipient {
                    index: i + 1,
                    reason: e.to_string(),
                })?;
            fingerprints.push(fingerprint(key));
            parsed.push(Box::new(r));
        }
        if parsed.is_empty() {
            return Err(KeyError::NoRecipients);
        }
        Ok(Self(Arc::new(RecipientsInner {
            keys: parsed,
            fingerprints,
            passphrase: None,
        })))
    }

    /// The keys of an age recipients file: one `age1…` per line, `#`
    /// comments and blank lines ignored.
    pub(crate) fn parse_file_text(text: &str) -> Result<Vec<String>, KeyError> {
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect())
    }

    /// Read an age recipients file.
    pub fn read_file(path: &Path) -> Result<Vec<String>, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_file_text(&text)
    }

    /// Encrypt with a passphrase instead of keys (age's scrypt mode: about
    /// a second of work for each object written or read).
    pub fn passphrase(passphrase: SecretString) -> Self {
        use age::secrecy::ExposeSecret;
        let hashed = *blake3::hash(passphrase.expose_secret().as_bytes()).as_bytes();
        Self(Arc::new(RecipientsInner {
            keys: vec![Box::new(age::scrypt::Recipient::new(passphrase))],
            fingerprints: vec![PASSPHRASE.into()],
            passphrase: Some(hashed),
        }))
    }

    /// What tells these recipients from others, for a key the backup host
    /// holds to mix into what it records in the clear (a sealed chain's
    /// tag): the sorted fingerprints, and in passphrase mode a hash of the
    /// passphrase, which the fingerprint (`passphrase`) does not tell.
    /// Never written anywhere as it is.
    pub(crate) fn tag_context(&self) -> Vec<u8> {
        let mut fingerprints = self.0.fingerprints.clone();
        fingerprints.sort();
        let mut out = fingerprints.join(",").into_bytes();
        if let Some(p) = &self.0.passphrase {
            out.push(0);
            out.extend_from_slice(p);
        }
        out
    }

    /// Short fingerprints of the recipients (see [`fingerprint`]), or
    /// `passphrase`.
    pub fn fingerprints(&self) -> &[String] {
        &self.0.fingerprints
    }

    fn encryptor(&self) -> io::Result<Encryptor> {
        Encryptor::with_recipients(
            self.0
                .keys
                .iter()
                .map(|k| k.as_ref() as &dyn age::Recipient),
        )
        .map_err(io::Error::other)
    }

    /// Wrap `out` so that everything written is encrypted; the encoder's
    /// `finish` writes the last authenticated chunk.
    pub fn encrypt<'a>(
        &self,
        out: Box<dyn Write + Send + 'a>,
    ) -> io::Result<Box<dyn Encoder + 'a>> {
        Ok(Box::new(AgeWriter(self.encryptor()?.wrap_output(out)?)))
    }

    /// Encrypt `plaintext` into one binary age file (a pack or page index
    /// of a sealed chain: at most a pack's bytes in memory).
    pub fn seal_bytes(&self, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + 512);
        let mut w = self.encryptor()?.wrap_output(&mut out)?;
        w.write_all(plaintext)?;
        w.finish()?;
        Ok(out)
    }

    /// Encrypt a small value into ASCII-armored text (for manifest fields).
    pub fn seal(&self, plaintext: &[u8]) -> io::Result<String> {
        let mut armored =
            age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor)?;
        let mut w = self.encryptor()?.wrap_output(&mut armored)?;
        w.write_all(plaintext)?;
        w.finish()?;
        let bytes = armored.finish()?;
        String::from_utf8(bytes).map_err(io::Error::other)
    }
}

struct AgeWriter<'a>(age::stream::StreamWriter<Box<dyn Write + Send + 'a>>);

impl Write for AgeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Encoder for AgeWriter<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish()?.flush()
    }
}

/// The private keys that read encrypted backups (restore, verify, drills).
/// Never printed: `Debug` shows only how many there are.
#[derive(Clone)]
pub struct Identities(Arc<Vec<Box<dyn age::Identity + Send + Sync>>>);

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({} key(s))", self.0.len())
    }
}

impl Identities {
    /// Generated or parsed x25519 keys.
    pub fn from_x25519(keys: impl IntoIterator<Item = age::x25519::Identity>) -> Self {
        Self(Arc::new(
            keys.into_iter()
                .map(|k| Box::new(k) as Box<dyn age::Identity + Send + Sync>)
                .collect(),
        ))
    }

    /// Read an age identity file (`age-keygen` output: `AGE-SECRET-KEY-1…`
    /// lines, `#` comments).
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let keys: Vec<age::x25519::Identity> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .filter_map(|l| l.parse().ok())
            .collect();
        if keys.is_empty() {
            return Err(KeyError::NoIdentity {
                path: path.display().to_string(),
            });
        }
        Ok(Self::from_x25519(keys))
    }

    /// The passphrase of backups encrypted in passphrase mode.
    pub fn passphrase(passphrase: SecretString) -> Self {
        Self(Arc::new(vec![Box::new(age::scrypt::Identity::new(
            passphrase,
        ))]))
    }

    fn decryptor<'a, R: Read + 'a>(
        &self,
        input: R,
        encrypted_to: &[String],
    ) -> Result<age::stream::StreamReader<R>, OpenError> {
        let d = Decryptor::new(input).map_err(|e| damaged(e, encrypted_to))?;
        let scrypt = d.is_scrypt();
        d.decrypt(self.0.iter().map(|k| k.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                // A wrong passphrase fails the scrypt stanza's AEAD, as a
                // damaged stanza would: the two cannot be told apart, and
                // calling a backup corrupt for a mistyped passphrase would
                // send a restore walking back past good backups.
                age::DecryptError::DecryptionFailed if scrypt => OpenError::WrongIdentity {
                    encrypted_to: vec![PASSPHRASE.into()],
                },
                e => damaged(e, encrypted_to),
            })
    }

    /// A reader of the plaintext of `input`. Damage later in the stream
    /// shows as an I/O error of kind `InvalidData` while reading.
    pub fn decrypt<'a>(
        &self,
        input: Box<dyn Read + Send + 'a>,
        encrypted_to: &[String],
    ) -> Result<Box<dyn Read + Send + 'a>, OpenError> {
        Ok(Box::new(self.decryptor(input, encrypted_to)?))
    }

    /// Open a value made by [`Recipients::seal`].
    pub fn unseal(&self, armored: &str) -> Result<Vec<u8>, OpenError> {
        let reader = age::armor::ArmoredReader::new(BufReader::new(armored.as_bytes()));
        let mut out = Vec::new();
        self.decryptor(reader, &[])?
            .read_to_end(&mut out)
            .map_err(|e| OpenError::Damaged(e.to_string()))?;
        Ok(out)
    }
}

/// How backups encrypted in passphrase mode name their "recipient".
const PASSPHRASE: &str = "passphrase";

fn wrong_identity(encrypted_to: &[String]) -> String {
    match encrypted_to {
        [p] if p == PASSPHRASE => {
            "the passphrase does not open it (it was encrypted with another one)".into()
        }
        [] => {
            "none of the given identities can decrypt it (it was encrypted to unknown recipients)"
                .into()
        }
        _ => format!(
            "none of the given identities can decrypt it (it was encrypted to {})",
            encrypted_to.join(", ")
        ),
    }
}

fn damaged(e: age::DecryptError, encrypted_to: &[String]) -> OpenError {
    match e {
        age::DecryptError::NoMatchingKeys => OpenError::WrongIdentity {
            encrypted_to: encrypted_to.to_vec(),
        },
        other => OpenError::Damaged(other.to_string()),
    }
}

/// A pass-through [`Encoder`] for unencrypted artifacts.
pub(crate) struct Plain<'a>(pub Box<dyn Write + Send + 'a>);

impl Write for Plain<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Encoder for Plain<'_> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_round_trip_and_a_wrong_key_is_named() {
        let key = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let public = key.to_public().to_string();
        let to = Recipients::parse([&public]).unwrap();
        let mut stored = Vec::new();
        {
            let mut w = to.encrypt(Box::new(&mut stored)).unwrap();
            w.write_all(&vec![7u8; 200_000]).unwrap();
            w.finish().unwrap();
        }
        let mut plain = Vec::new();
        Identities::from_x25519([key])
            .decrypt(Box::new(stored.as_slice()), to.fingerprints())
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, vec![7u8; 200_000]);
        match Identities::from_x25519([other])
            .decrypt(Box::new(stored.as_slice()), to.fingerprints())
        {
            Err(OpenError::WrongIdentity { encrypted_to }) => {
                assert_eq!(encrypted_to, vec![fingerprint(&public)])
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn bad_or_missing_recipients_are_refused() {
        assert!(matches!(
            Recipients::parse(["age1notakey"]),
            Err(KeyError::BadRecipient { index: 1, .. })
        ));
        assert!(matches!(
            Recipients::parse(Vec::<String>::new()),
            Err(KeyError::NoRecipients)
        ));
    }
}
