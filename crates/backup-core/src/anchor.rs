//! The anchor file: an append-only log of catalog heads that the user keeps
//! outside every sink (a document, a signed commit, another machine).
//!
//! One line per anchor, `<RFC 3339 time> <sink> <head>`:
//! ```text
//! 2026-11-23T13:08:12Z local 3f2a…64 hex digits…
//! 2026-11-23T13:08:12Z azure 9c41…64 hex digits…
//! ```
//! Blank lines and lines starting with `#` are ignored, so the file can carry
//! notes. Whoever can rewrite the sinks cannot rewrite this file, so a
//! history rewritten in a sink (a deleted, altered or re-chained manifest,
//! a truncated chain) no longer contains the anchored head, and
//! [`crate::catalog::verify`] says so.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use jiff::Timestamp;
use serde::Serialize;

/// One anchored head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anchor {
    /// 1-based line number in the file.
    pub line: usize,
    /// When it was anchored.
    pub at: Timestamp,
    /// Sink name.
    pub sink: String,
    /// The chain head (SHA-256 of the sink's newest manifest) at that time.
    pub head: String,
}

/// A line that is not an anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// The line as found.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed anchor file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnchorLog {
    /// Anchors in file order (oldest first, as appended).
    pub anchors: Vec<Anchor>,
    /// Lines that could not be read as anchors.
    pub bad_lines: Vec<BadLine>,
}

impl AnchorLog {
    /// Parse the text of an anchor file.
    ///
    /// ```
    /// use backup_core::anchor::AnchorLog;
    /// let head = "ab".repeat(32);
    /// let log = AnchorLog::parse(&format!("# mine\n2026-11-23T13:08:12Z local {head}\n"));
    /// assert_eq!(log.newest("local").unwrap().line, 2);
    /// assert!(log.bad_lines.is_empty());
    /// ```
    pub fn parse(text: &str) -> Self {
        let mut log = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok((at, sink, head)) => log.anchors.push(Anchor {
                    line: i + 1,
                    at,
                    sink,
                    head,
                }),
                Err(reason) => log.bad_lines.push(BadLine {
                    line: i + 1,
                    text: raw.to_string(),
                    reason,
                }),
            }
        }
        log
    }

    /// Read and parse an anchor file.
    pub fn read(path: &Path) -> io::Result<Self> {
        Ok(Self::parse(&fs::read_to_string(path)?))
    }

    /// Anchors of one sink, in file order.
    pub(crate) fn for_sink<'a>(&'a self, sink: &'a str) -> impl Iterator<Item = &'a Anchor> + 'a {
        self.anchors.iter().filter(move |a| a.sink == sink)
    }

    /// The newest anchor of a sink: its last line in the file.
    pub fn newest(&self, sink: &str) -> Option<&Anchor> {
        self.anchors.iter().rev().find(|a| a.sink == sink)
    }

    /// Every sink named in the file, in order of first appearance.
    pub fn sinks(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for a in &self.anchors {
            if !out.contains(&a.sink.as_str()) {
                out.push(&a.sink);
            }
        }
        out
    }
}

fn parse_line(line: &str) -> Result<(Timestamp, String, String), String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [time, sink, head] = parts[..] else {
        return Err(format!(
            "expected `<time> <sink> <head>`, found {} field(s)",
            parts.len()
        ));
    };
    let at: Timestamp = time
        .parse()
        .map_err(|e| format!("time {time:?} is not RFC 3339: {e}"))?;
    if !is_sha256_hex(head) {
        return Err(format!(
            "head {head:?} is not a SHA-256 (64 lowercase hex digits)"
        ));
    }
    Ok((at, sink.to_string(), head.to_string()))
}

/// True for 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Format one anchor line (no newline).
///
/// ```
/// let at: jiff::Timestamp = "2026-11-23T13:08:12.5Z".parse().unwrap();
/// let line = backup_core::anchor::format_line(at, "local", &"0".repeat(64));
/// assert_eq!(line, format!("2026-11-23T13:08:12Z local {}", "0".repeat(64)));
/// ```
pub fn format_line(at: Timestamp, sink: &str, head: &str) -> String {
    format!("{} {sink} {head}", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
}

/// Append one line per `(sink, head)` to the anchor file at `path`, creating
/// it if missing, in one write, then fsync it (and its folder when it was
/// created). Returns the lines written.
pub fn append(path: &Path, heads: &[(String, String)], at: Timestamp) -> io::Result<Vec<String>> {
    for (sink, head) in heads {
        if sink.is_empty() || sink.chars().any(char::is_whitespace) || !is_sha256_hex(head) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to anchor sink {sink:?} head {head:?}"),
            ));
        }
    }
    let lines: Vec<String> = heads
        .iter()
        .map(|(sink, head)| format_line(at, sink, head))
        .collect();
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let mut text = String::new();
    if needs_newline(&mut file)? {
        text.push('\n');
    }
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    if created {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        crate::fsutil::fsync_dir(parent.unwrap_or(Path::new(".")))?;
    }
    Ok(lines)
}

/// Whether a non-empty file lacks a final newline.
fn needs_newline(file: &mut File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_creates_then_appends_and_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchors.txt");
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let h1 = "a".repeat(64);
        let h2 = "b".repeat(64);
        append(&path, &[("local".into(), h1.clone())], t0).unwrap();
        // A hand edit without a final newline must not glue lines together.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"# checked by hand").unwrap();
        append(
            &path,
            &[("local".into(), h2.clone()), ("cold".into(), h1.clone())],
            t0,
        )
        .unwrap();
        let log = AnchorLog::read(&path).unwrap();
        assert!(log.bad_lines.is_empty(), "{:?}", log.bad_lines);
        assert_eq!(log.anchors.len(), 3);
        assert_eq!(log.newest("local").unwrap().head, h2);
        assert_eq!(log.newest("local").unwrap().line, 3);
        assert_eq!(log.newest("cold").unwrap().head, h1);
        assert_eq!(log.sinks(), ["local", "cold"]);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let log = AnchorLog::parse(&format!(
            "2026-01-01T00:00:00Z local {}\nyesterday local abc\n\n2026-01-01T00:00:00Z local\n",
            "c".repeat(64)
        ));
        assert_eq!(log.anchors.len(), 1);
        let lines: Vec<usize> = log.bad_lines.iter().map(|b| b.line).collect();
        assert_eq!(lines, [2, 4]);
    }

    #[test]
    fn refuses_to_write_a_malformed_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let t0 = Timestamp::UNIX_EPOCH;
        assert!(append(&path, &[("local".into(), "xyz".into())], t0).is_err());
        assert!(append(&path, &[("lo cal".into(), "a".repeat(64))], t0).is_err());
        assert!(!path.exists());
    }
}
