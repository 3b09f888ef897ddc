//! Run history for the report's charts: one JSON line per backup run and per
//! drill of a database, appended to `state_dir/history/<label>.jsonl`.
//!
//! `state.json` holds only the newest of each, and is rewritten whole every
//! run; appending a line instead keeps a run's cost flat however long the
//! history gets. Only a holder of the run lock writes, so appends and the
//! occasional trim never interleave. A line that does not parse (a crash
//! mid-append, a hand edit) is skipped and counted, never fatal: the history
//! is for people, the catalog is the record of what exists.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use backup_core::fsutil;
use backup_core::manifest::Entry;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A history file is trimmed to its newest half once it passes this size:
/// about 25,000 runs, so a day at one run a minute or seven hours at one a
/// second.
const MAX_BYTES: u64 = 4 << 20;

/// What a run stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A self-contained compressed artifact.
    Full,
    /// The full base of an incremental chain.
    Base,
    /// Only the pages that changed since the previous snapshot.
    Incremental,
}

impl Kind {
    pub fn of(entry: &Entry) -> Self {
        match &entry.pages {
            None => Kind::Full,
            Some(p) if p.chain_depth == 0 => Kind::Base,
            Some(_) => Kind::Incremental,
        }
    }
}

/// One backup run of one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The run id (the manifest name).
    #[serde(default)]
    pub run: String,
    /// When the run finished with this database.
    pub at: Timestamp,
    /// How long it took.
    pub ms: u64,
    /// The error, when any part failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The point in time it saved (start of its read transaction), when it
    /// stored anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// Bytes this run added to its first sink.
    #[serde(default)]
    pub stored: u64,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Run `run`, that stored `entry` (`snapshot_ms` after its snapshot
    /// began), for backups made before there was a history or by another
    /// program.
    pub fn from_entry(run: &str, entry: &Entry) -> Self {
        Run {
            run: run.to_string(),
            at: entry
                .snapshot_at
                .saturating_add(jiff::SignedDuration::from_millis(entry.snapshot_ms as i64))
                .unwrap_or(entry.snapshot_at),
            ms: entry.snapshot_ms,
            error: None,
            snapshot_at: Some(entry.snapshot_at),
            kind: Some(Kind::of(entry)),
            stored: entry.stored_bytes(),
        }
    }
}

/// Bytes a snapshot added: its new packs and index, or its whole artifact.
/// One restore drill of one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    pub at: Timestamp,
    pub ok: bool,
    /// The slowest sink's time to a verified restore, when one restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Line {
    Run(Run),
    Drill(Drill),
}

/// A database's history as read back, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub runs: Vec<Run>,
    pub drills: Vec<Drill>,
    /// Lines that did not parse and were skipped.
    pub skipped: usize,
}

pub fn path(state_dir: &Path, label: &str) -> PathBuf {
    state_dir.join("history").join(format!("{label}.jsonl"))
}

/// Append `lines` to `label`'s history, trimming it when it grew past
/// [`MAX_BYTES`]. Failures are logged: a lost history line must never fail
/// a backup.
pub fn append(state_dir: &Path, label: &str, lines: &[Line]) {
    let file = path(state_dir, label);
    if let Err(e) = try_append(&file, lines) {
        tracing::warn!(label = %label, path = %file.display(), error = %e, "run history not written");
    }
}

fn try_append(file: &Path, lines: &[Line]) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        fsutil::create_dir_all_mode(dir, fsutil::PRIVATE_DIR)?;
    }
    let mut text = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut text, line).map_err(io::Error::other)?;
        text.push(b'\n');
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    // One write of whole lines: a crash cuts at most the last line, which
    // the reader then skips.
    f.write_all(&text)?;
    if f.metadata()?.len() > MAX_BYTES {
        trim(file)?;
    }
    Ok(())
}

/// Keep the newest lines that fit in half of [`MAX_BYTES`].
fn trim(file: &Path) -> io::Result<()> {
    let bytes = std::fs::read(file)?;
    let keep_from = bytes.len().saturating_sub((MAX_BYTES / 2) as usize);
    let start = bytes[keep_from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| keep_from + i + 1);
    fsutil::atomic_write(file, &bytes[start..])
}

/// Read `label`'s history; a missing file is an empty history.
pub fn read(state_dir: &Path, label: &str) -> io::Result<History> {
    let file = match File::open(path(state_dir, label)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(History::default()),
        Err(e) => return Err(e),
    };
    let mut history = History::default();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Run(r)) => history.runs.push(r),
            Ok(Line::Drill(d)) => history.drills.push(d),
            Err(_) => history.skipped += 1,
        }
    }
    history.runs.sort_by_key(|r| r.at);
    history.drills.sort_by_key(|d| d.at);
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(second: i64, ok: bool) -> Line {
        Line::Run(Run {
            run: format!("r{second}"),
            at: Timestamp::from_second(1_800_000_000 + second).unwrap(),
            ms: 120,
            error: (!ok).then(|| "disk full".to_string()),
            snapshot_at: ok.then(|| Timestamp::from_second(1_800_000_000 + second).unwrap()),
            kind: ok.then_some(Kind::Incremental),
            stored: 4096,
        })
    }

    #[test]
    fn appends_read_back_in_order_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), "app", &[run(60, true), run(0, false)]);
        let drill = Line::Drill(Drill {
            at: Timestamp::from_second(1_800_000_100).unwrap(),
            ok: true,
            rto_ms: Some(900),
        });
        append(dir.path(), "app", std::slice::from_ref(&drill));
        let file = path(dir.path(), "app");
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(b"{\"event\":\"run\",\"at\":").unwrap();

        let h = read(dir.path(), "app").unwrap();
        assert_eq!(h.runs.len(), 2);
        assert!(!h.runs[0].ok() && h.runs[1].ok(), "oldest first");
        assert_eq!(Line::Drill(h.drills[0].clone()), drill);
        assert_eq!(h.skipped, 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(dir.path(), "other").unwrap(), History::default());
    }

    #[test]
    fn a_full_file_keeps_its_newest_half() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<Line> = (0..40_000).map(|i| run(i, i % 7 != 0)).collect();
        for chunk in lines.chunks(1000) {
            append(dir.path(), "app", chunk);
        }
        let len = std::fs::metadata(path(dir.path(), "app")).unwrap().len();
        assert!(len <= MAX_BYTES, "{len}");
        let h = read(dir.path(), "app").unwrap();
        assert_eq!(h.skipped, 0, "trimmed at a line boundary");
        let newest = h.runs.last().unwrap().at;
        assert_eq!(newest, Timestamp::from_second(1_800_039_999).unwrap());
        assert!(h.runs.len() > 10_000 && h.runs.len() < 40_000);
    }
}
