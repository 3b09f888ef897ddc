//! Compression formats: zstd (default), gzip (the seed's `.db.gz`), none.
//!
//! Artifacts are plain files that the stock `zstd -d` and `gunzip` binaries
//! read; we add no container format of our own. zstd artifacts are one frame
//! (zstd's own worker threads use every core). gzip artifacts are a sequence
//! of gzip members, one per 1 MiB of input, compressed on every core (like
//! `pigz`): RFC 1952 defines such a concatenation as one valid gzip file,
//! `gunzip` reads it as one stream, and so does our decoder.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

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
    /// zstd / gzip worker threads; 0 means one per CPU core.
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

    /// The format with `level`, refused outside the format's range (any
    /// level is accepted for `none`, which ignores it).
    pub fn with_level(self, level: i32) -> Result<Self, CompressionError> {
        let out = Self { level, ..self };
        out.validate()?;
        Ok(out)
    }

    /// Refuse a level the format does not have: zstd 1–19, gzip 1–9.
    pub fn validate(&self) -> Result<(), CompressionError> {
        let range = match self.format {
            Format::Zstd => 1..=19,
            Format::Gzip => 1..=9,
            Format::None => return Ok(()),
        };
        if range.contains(&self.level) {
            Ok(())
        } else {
            Err(CompressionError::LevelOutOfRange {
                format: self.format,
                level: self.level,
            })
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

/// A [`Compression`] the codec cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    /// The level is outside the format's range.
    #[error("compression level {level} is out of range for {}", format.as_str())]
    LevelOutOfRange {
        /// The format.
        format: Format,
        /// The level asked for.
        level: i32,
    },
}

struct ZstdEncoder<'a>(zstd::stream::write::Encoder<'static, Box<dyn Write + Send + 'a>>);
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
forward_write!(Plain);

impl Encoder for ZstdEncoder<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish()?.flush()
    }
}
impl Encoder for Plain<'_> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl Compression {
    /// Short name as written in config and manifests (`zstd`, `gzip`, `none`).
    pub fn name(&self) -> &'static str {
        self.format.as_str()
    }

    /// File name suffix after `.db` (`.zst`, `.gz`, or empty).
    pub fn extension(&self) -> &'static str {
        match self.format {
            Format::Zstd => ".zst",
            Format::Gzip => ".gz",
            Format::None => "",
        }
    }

    /// Wrap `out` in an encoder. Call [`Encoder::finish`] to flush the frame.
    pub fn encoder<'a>(
        &self,
        out: Box<dyn Write + Send + 'a>,
    ) -> io::Result<Box<dyn Encoder + 'a>> {
        Ok(match self.format {
            Format::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, self.level)?;
                // Workers compress in the background while we keep reading
                // pages, which is what lets the snapshot read overlap compression.
                enc.multithread(self.worker_threads())?;
                // zstd's default job is 4 windows (8 MiB at level 3) and it
                // keeps several jobs' input and output per worker: ~50 MiB
                // on 2 cores. 2 MiB jobs keep the whole backup under 64 MiB
                // and cost about 1% of ratio (jobs still overlap by part
                // of a window).
                enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
                enc.include_checksum(true)?;
                Box::new(ZstdEncoder(enc))
            }
            Format::Gzip => Box::new(ParallelGzip::new(
                out,
                flate2::Compression::new(self.level.clamp(0, 9) as u32),
                self.worker_threads() as usize,
            )),
            Format::None => Box::new(Plain(out)),
        })
    }

    /// Wrap `input` in a streaming decoder.
    pub fn decoder<'a>(
        &self,
        input: Box<dyn Read + Send + 'a>,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self.format {
            // Single frame: trailing garbage after the frame is an error, which
            // is what we want for a tampered artifact.
            Format::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?.single_frame()),
            // Every member, not just the first: our gzip artifacts have many.
            Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Format::None => input,
        })
    }
}

/// A whole zstd payload read from a sink, refused when it decodes to more
/// than `cap` bytes: nothing read from a sink is trusted, and a few KiB of
/// zstd can claim gigabytes (`zstd::decode_all` has no limit).
pub fn zstd_decode_capped(bytes: &[u8], cap: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)?
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decodes to more than the {cap} bytes it can hold"),
        ));
    }
    Ok(out)
}

/// Input bytes per zstd worker job (see the encoder).
const ZSTD_JOB: u32 = 2 << 20;

/// Input bytes per gzip member. The deflate window is 32 KiB, so restarting
/// it every 1 MiB costs well under 1% of ratio, and chunks in flight stay
/// small (a few MiB) whatever the database size.
const GZIP_MEMBER: usize = 1 << 20;

type Job = (Vec<u8>, Sender<io::Result<Vec<u8>>>);

/// gzip on several cores: input is cut into [`GZIP_MEMBER`] chunks, each
/// compressed by a worker into a complete gzip member, and the members are
/// written in order. At most two chunks per worker are in flight, which
/// bounds memory.
struct ParallelGzip<'a> {
    out: Box<dyn Write + Send + 'a>,
    buf: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    /// Results in submission order, so members are written in input order.
    in_flight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    workers: Vec<JoinHandle<()>>,
    members: u64,
}

impl<'a> ParallelGzip<'a> {
    fn new(out: Box<dyn Write + Send + 'a>, level: flate2::Compression, threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    loop {
                        // Hold the lock only to take a job, not to compress it.
                        let job = rx.lock().map(|r| r.recv());
                        let Ok(Ok((chunk, reply))) = job else { break };
                        let _ = reply.send(gzip_member(&chunk, level));
                    }
                })
            })
            .collect();
        Self {
            out,
            buf: Vec::with_capacity(GZIP_MEMBER),
            jobs: Some(tx),
            in_flight: VecDeque::new(),
            max_in_flight: 2 * threads,
            workers,
            members: 0,
        }
    }

    /// Write the oldest member once it is compressed.
    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.in_flight.pop_front() {
            let member = rx
                .recv()
                .map_err(|_| io::Error::other("a gzip worker stopped"))??;
            self.out.write_all(&member)?;
        }
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(GZIP_MEMBER));
        let (reply, rx) = std::sync::mpsc::channel();
        self.jobs
            .as_ref()
            .expect("open until finish")
            .send((chunk, reply))
            .map_err(|_| io::Error::other("the gzip workers stopped"))?;
        self.in_flight.push_back(rx);
        self.members += 1;
        Ok(())
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn gzip_member(chunk: &[u8], level: flate2::Compression) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(chunk.len() / 2), level);
    enc.write_all(chunk)?;
    enc.finish()
}

impl Write for ParallelGzip<'_> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (GZIP_MEMBER - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == GZIP_MEMBER {
                self.submit()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Encoder for ParallelGzip<'_> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        // Empty input still gets one (empty) member: a valid gzip file.
        if !self.buf.is_empty() || self.members == 0 {
            self.submit()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.stop_workers();
        self.out.flush()
    }
}

impl Drop for ParallelGzip<'_> {
    fn drop(&mut self) {
        self.in_flight.clear();
        self.stop_workers();
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
    fn a_capped_decode_refuses_a_payload_that_claims_more() {
        let zeros = zstd::encode_all(&[0u8; 1 << 20][..], 19).unwrap();
        assert!(zeros.len() < 200, "a small object");
        assert_eq!(zstd_decode_capped(&zeros, 1 << 20).unwrap().len(), 1 << 20);
        let err = zstd_decode_capped(&zeros, (1 << 20) - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(zstd_decode_capped(b"not zstd", 100).is_err());
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

    #[test]
    fn gzip_has_many_members_that_gunzip_reads() {
        let data: Vec<u8> = (0..3 * GZIP_MEMBER as u32 + 12345)
            .map(|i| (i % 97) as u8)
            .collect();
        let c = Compression::new(Format::Gzip);
        let mut out = Vec::new();
        {
            let mut enc = c.encoder(Box::new(&mut out)).unwrap();
            enc.write_all(&data).unwrap();
            enc.finish().unwrap();
        }
        // A single-member decoder stops after the first 1 MiB ...
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut first)
            .unwrap();
        assert_eq!(first.len(), GZIP_MEMBER);
        // ... ours reads them all.
        let mut back = Vec::new();
        c.decoder(Box::new(&out[..]))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // And so does the real `gunzip`, when it is installed.
        if let Ok(mut child) = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            let mut stdin = child.stdin.take().unwrap();
            let input = out.clone();
            let feeder = std::thread::spawn(move || stdin.write_all(&input));
            let output = child.wait_with_output().unwrap();
            feeder.join().unwrap().unwrap();
            assert!(output.status.success());
            assert_eq!(output.stdout, data);
        }
    }

    #[test]
    fn empty_gzip_is_valid() {
        let c = Compression::new(Format::Gzip);
        let mut out = Vec::new();
        c.encoder(Box::new(&mut out)).unwrap().finish().unwrap();
        let mut back = Vec::new();
        c.decoder(Box::new(&out[..]))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty() && !out.is_empty());
    }
}
