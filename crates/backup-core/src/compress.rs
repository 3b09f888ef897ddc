//! Compression formats: zstd (default), gzip (the seed's `.db.gz`), none.
//!
//! Artifacts are plain single-frame files that the stock `zstd -d` and
//! `gunzip` binaries read; we add no container format of our own.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// One compression format. The pipeline only sees this trait.
pub trait Compress: Send + Sync {
    /// Short name as written in config and manifests (`zstd`, `gzip`, `none`).
    fn name(&self) -> &'static str;
    /// File name suffix after `.db` (`.zst`, `.gz`, or empty).
    fn extension(&self) -> &'static str;
    /// Wrap `out` in an encoder. Call [`Encoder::finish`] to flush the frame.
    fn encoder<'a>(&self, out: Box<dyn Write + Send + 'a>) -> io::Result<Box<dyn Encoder + 'a>>;
    /// Wrap `input` in a streaming decoder.
    fn decoder<'a>(
        &self,
        input: Box<dyn Read + Send + 'a>,
    ) -> io::Result<Box<dyn Read + Send + 'a>>;
}

/// A streaming encoder that must be finished to write its trailer.
pub trait Encoder: Write + Send {
    /// Write the end of the frame and flush the inner writer.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// The compression settings of a run, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Zstandard, multi-threaded.
    Zstd,
    /// gzip (deflate), readable by `gunzip`.
    Gzip,
    /// No compression: the artifact is a plain SQLite file.
    None,
}

impl Format {
    /// Guess the format from an artifact file name.
    ///
    /// ```
    /// use backup_core::compress::Format;
    /// assert_eq!(Format::from_file_name("a.db.zst"), Some(Format::Zstd));
    /// assert_eq!(Format::from_file_name("a.db.gz"), Some(Format::Gzip));
    /// assert_eq!(Format::from_file_name("a.db"), Some(Format::None));
    /// ```
    pub fn from_file_name(name: &str) -> Option<Self> {
        if name.ends_with(".zst") {
            Some(Self::Zstd)
        } else if name.ends_with(".gz") {
            Some(Self::Gzip)
        } else if name.ends_with(".db") || name.ends_with(".sqlite") || name.ends_with(".sqlite3") {
            Some(Self::None)
        } else {
            None
        }
    }

    /// The lower-case name used in config and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::None => "none",
        }
    }
}

/// A concrete compressor: format plus level and worker threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// The format.
    pub format: Format,
    /// zstd 1–19 (default 3), gzip 1–9 (default 6); ignored for `none`.
    pub level: i32,
    /// zstd worker threads; 0 means one per CPU core.
    pub threads: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Self::new(Format::Zstd)
    }
}

impl Compression {
    /// The format with its default level and all cores.
    pub fn new(format: Format) -> Self {
        let level = match format {
            Format::Zstd => 3,
            Format::Gzip => 6,
            Format::None => 0,
        };
        Self {
            format,
            level,
            threads: 0,
        }
    }

    fn worker_threads(&self) -> u32 {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        }
    }
}

struct ZstdEncoder<'a>(zstd::stream::write::Encoder<'static, Box<dyn Write + Send + 'a>>);
struct GzipEncoder<'a>(flate2::write::GzEncoder<Box<dyn Write + Send + 'a>>);
struct Plain<'a>(Box<dyn Write + Send + 'a>);

macro_rules! forward_write {
    ($t:ident) => {
        impl Write for $t<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.flush()
            }
        }
    };
}
forward_write!(ZstdEncoder);
forward_write!(GzipEncoder);
forward_write!(Plain);

impl Encoder for ZstdEncoder<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish()?.flush()
    }
}
impl Encoder for GzipEncoder<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish()?.flush()
    }
}
impl Encoder for Plain<'_> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl Compress for Compression {
    fn name(&self) -> &'static str {
        self.format.as_str()
    }

    fn extension(&self) -> &'static str {
        match self.format {
            Format::Zstd => ".zst",
            Format::Gzip => ".gz",
            Format::None => "",
        }
    }

    fn encoder<'a>(&self, out: Box<dyn Write + Send + 'a>) -> io::Result<Box<dyn Encoder + 'a>> {
        Ok(match self.format {
            Format::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, self.level)?;
                // Workers compress in the background while we keep reading
                // pages, which is what lets the snapshot read overlap compression.
                enc.multithread(self.worker_threads())?;
                enc.include_checksum(true)?;
                Box::new(ZstdEncoder(enc))
            }
            Format::Gzip => Box::new(GzipEncoder(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(self.level.clamp(0, 9) as u32),
            ))),
            Format::None => Box::new(Plain(out)),
        })
    }

    fn decoder<'a>(
        &self,
        input: Box<dyn Read + Send + 'a>,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self.format {
            // Single frame: trailing garbage after the frame is an error, which
            // is what we want for a tampered artifact.
            Format::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?.single_frame()),
            Format::Gzip => Box::new(flate2::read::GzDecoder::new(input)),
            Format::None => input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_format() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for format in [Format::Zstd, Format::Gzip, Format::None] {
            let c = Compression::new(format);
            let mut out = Vec::new();
            {
                let mut enc = c.encoder(Box::new(&mut out)).unwrap();
                enc.write_all(&data).unwrap();
                enc.finish().unwrap();
            }
            let mut back = Vec::new();
            c.decoder(Box::new(&out[..]))
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{format:?}");
        }
    }

    #[test]
    fn truncated_zstd_is_an_error() {
        let c = Compression::new(Format::Zstd);
        let mut out = Vec::new();
        {
            let mut enc = c.encoder(Box::new(&mut out)).unwrap();
            enc.write_all(&[7u8; 100_000]).unwrap();
            enc.finish().unwrap();
        }
        out.truncate(out.len() - 3);
        let mut back = Vec::new();
        assert!(
            c.decoder(Box::new(&out[..]))
                .unwrap()
                .read_to_end(&mut back)
                .is_err()
        );
    }
}
