//! Formatting for people: sizes, ages, aligned tables.

use std::sync::atomic::{AtomicBool, Ordering};

use jiff::{SignedDuration, Timestamp};

static HUMAN_ON_STDERR: AtomicBool = AtomicBool::new(false);

/// From now on stdout carries only the JSON [`json`] prints: a command
/// whose steps are reported as they happen (`restore`) still shows them,
/// on stderr.
pub fn json_owns_stdout() {
    HUMAN_ON_STDERR.store(true, Ordering::Relaxed);
}

/// Whether `out!` writes to stderr.
pub fn human_on_stderr() -> bool {
    HUMAN_ON_STDERR.load(Ordering::Relaxed)
}

/// `value`, pretty, on stdout (a closed stdout is dropped, as `out!` does).
pub fn json(value: &serde_json::Value) {
    use std::io::Write as _;
    let text = serde_json::to_string_pretty(value).expect("a JSON value serializes");
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// `1.2 MiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// How long ago `since` was: `3h 12m 5s`, `2d 4h 1m 3s`.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let d = now.duration_since(since).max(SignedDuration::ZERO);
    backup_core::duration::human(std::time::Duration::from_secs(d.as_secs() as u64))
}

/// `2026-11-23 13:08:12Z`.
pub fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// A plain aligned table: no borders, two spaces between columns, for
/// terminals and for logs alike.
pub struct Table(comfy_table::Table);

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING)
            .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
            .set_header(header.to_vec());
        for c in t.column_iter_mut() {
            c.set_padding((0, 2));
        }
        Self(t)
    }
    /// Add a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.0.add_row(cells);
    }
    /// Right-align column `index` (sizes, counts).
    pub fn align_right(&mut self, index: usize) {
        if let Some(c) = self.0.column_mut(index) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in self.0.lines() {
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Items one after another, separated by `; `.
pub fn joined<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
