//! tracing setup: human lines or JSON on stderr (stdout is for results),
//! optionally also appended to a log file.
//!
//! Levels: `info` by default, `warn` on stderr with `--quiet`; `RUST_LOG`
//! overrides both. The log file always gets `info` (or `RUST_LOG`), so a
//! quiet cron job still leaves a full record. Lines written while progress
//! bars are visible hide the bars for a moment instead of garbling them.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::args::{Color, LogFormat};
use crate::progress;

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Install the global subscriber.
pub fn init(format: LogFormat, color: Color, quiet: bool, log_file: Option<&Path>) -> Result<()> {
    let filter = |default: &str| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
    };
    let mut layers: Vec<BoxedLayer> = vec![
        layer(format, StderrWriter, colored(color))
            .with_filter(filter(if quiet { "warn" } else { "info" }))
            .boxed(),
    ];
    if let Some(path) = log_file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the log folder {}", dir.display()))?;
        }
        let file = LogFile::open(path)
            .with_context(|| format!("opening the log file {}", path.display()))?;
        layers.push(
            layer(format, file, false)
                .with_filter(filter("info"))
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers).init();
    Ok(())
}

fn layer<W>(format: LogFormat, writer: W, ansi: bool) -> BoxedLayer
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => base.boxed(),
        LogFormat::Json => base.json().flatten_event(true).boxed(),
    }
}

/// Whether stderr's lines are colored.
fn colored(color: Color) -> bool {
    match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
        }
    }
}

/// The `--log-file`, reopened when it was moved away: logrotate's default
/// (rename, then a new file) needs no `postrotate` signal, and a daemon's
/// lines go on into the file at the path, not into the rotated one. A
/// `stat` per line is the cost, for a few lines a run.
struct LogFile {
    path: std::path::PathBuf,
    file: Mutex<std::fs::File>,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(Self::append(path)?),
        })
    }

    fn append(path: &Path) -> io::Result<std::fs::File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Whether the open file is still the one at the path.
    fn current(&self, file: &std::fs::File) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.path), file.metadata()) {
            (Ok(at_path), Ok(open)) => at_path.ino() == open.ino() && at_path.dev() == open.dev(),
            _ => false,
        }
    }
}

/// One line's writer: the file, reopened first if it was rotated.
struct LogLine<'a>(std::sync::MutexGuard<'a, std::fs::File>);

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogLine<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if !self.current(&file)
            && let Ok(fresh) = Self::append(&self.path)
        {
            *file = fresh;
        }
        LogLine(file)
    }
}

/// stderr, with progress bars suspended around each line.
struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        progress::suspend(|| io::stderr().write(buf))
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        progress::suspend(|| io::stderr().write_all(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for StderrWriter {
    type Writer = StderrWriter;
    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter
    }
}
