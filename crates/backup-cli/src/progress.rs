//! Progress bars (indicatif) for snapshot and compress + upload of large
//! databases, and the run's cancellation flag, as one pipeline
//! [`Observer`].
//!
//! Bars are drawn only when stderr is a terminal and `--quiet` is off, and
//! only for databases large enough to take a moment (≥ 32 MiB). Log lines
//! written while bars are visible go through [`suspend`], so the two never
//! garble each other.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backup_core::pipeline::Observer;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Databases smaller than this get no bars.
const LARGE: u64 = 32 << 20;
/// Pages are reported, not bytes; assume the common 4 KiB page.
const ASSUMED_PAGE: u64 = 4096;

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// Whether bars may be drawn: stderr is a terminal and not `--quiet`.
pub fn wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// Run `f` (a write to stderr) with any visible bars hidden meanwhile.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match MULTI.get() {
        Some(m) => m.suspend(f),
        None => f(),
    }
}

/// The observer a CLI run uses: bars (maybe) and cancellation (maybe).
pub struct CliObserver {
    bars: Option<Mutex<HashMap<(String, &'static str), ProgressBar>>>,
    cancel: Option<Arc<AtomicBool>>,
    /// When the previous database finished (or the run started), and each
    /// finished database's duration: databases run one after another, so
    /// the gap between two `database_done` calls is one database's time.
    timing: Mutex<(std::time::Instant, HashMap<String, Duration>)>,
}

impl CliObserver {
    /// Bars when `bars` is true; a run stopped when `cancel` becomes true.
    pub fn new(bars: bool, cancel: Option<Arc<AtomicBool>>) -> Self {
        if bars {
            MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        }
        Self {
            bars: bars.then(Default::default),
            cancel,
            timing: Mutex::new((std::time::Instant::now(), HashMap::new())),
        }
    }

    /// How long `label` took, once it is done.
    pub fn duration(&self, label: &str) -> Option<Duration> {
        let timing = self.timing.lock().unwrap_or_else(|e| e.into_inner());
        timing.1.get(label).copied()
    }

    fn update(&self, label: &str, phase: &'static str, done: u64, total: u64, bytes: bool) {
        let Some(bars) = &self.bars else { return };
        let size = if bytes { total } else { total * ASSUMED_PAGE };
        if size < LARGE {
            return;
        }
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars
            .entry((label.to_string(), phase))
            .or_insert_with(|| new_bar(label, phase, total, bytes));
        bar.set_length(total);
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
        }
    }
}

fn new_bar(label: &str, phase: &str, total: u64, bytes: bool) -> ProgressBar {
    let multi = MULTI.get().expect("initialised with bars");
    let bar = multi.add(ProgressBar::new(total));
    let counts = if bytes {
        "{binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{pos}/{len} pages eta {eta}"
    };
    let style = ProgressStyle::with_template(&format!(
        "{{prefix:>24}} {{wide_bar:.cyan/blue}} {{percent:>3}}% {counts}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{label} {phase}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

impl Observer for CliObserver {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
    fn snapshot_progress(&self, label: &str, done: u64, total: u64) {
        self.update(label, "snapshot", done, total, false);
    }
    fn stream_progress(&self, label: &str, done: u64, total: u64) {
        self.update(label, "compress+upload", done, total, true);
    }
    fn database_done(&self, label: &str) {
        {
            let mut timing = self.timing.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            let took = now - timing.0;
            timing.0 = now;
            timing.1.insert(label.to_string(), took);
        }
        let Some(bars) = &self.bars else { return };
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.retain(|(l, _), bar| {
            if l == label {
                bar.finish_and_clear();
                false
            } else {
                true
            }
        });
    }
}
