//! The streaming upload: a synchronous [`SinkWriter`] in front of an async
//! task that uploads parts (Azure blocks, S3 parts) while the caller keeps
//! writing.
//!
//! Memory is bounded by design. An upload owns a semaphore of
//! [`PARTS_IN_MEMORY`] permits; a part buffer exists only while it holds a
//! permit, from the first byte written into it until the store has accepted
//! it. So at most `PARTS_IN_MEMORY × part_size` bytes are buffered per
//! upload: one part being filled, up to [`MAX_PARTS_IN_FLIGHT`] on the wire.
//! When the network is slower than the caller, `write` waits for a permit.
//!
//! Nothing becomes visible before the upload is completed in
//! [`SinkWriter::finish`]. Uploaded parts of an unfinished upload are
//! invisible to `get`, `head` and `list`; a failed, aborted or dropped
//! writer aborts the upload (S3 would otherwise keep and bill the parts;
//! Azure discards uncommitted blocks after a week). An object small enough
//! for one part is sent with a single atomic `put`.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use backup_core::sink::{SinkError, SinkWriter};

use crate::error::ErrorMap;
use crate::runtime::{SinkRuntime, join};

/// Parts uploading at once per upload.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;
/// Part buffers alive at once per upload: in flight plus the one being filled.
pub const PARTS_IN_MEMORY: usize = MAX_PARTS_IN_FLIGHT + 1;

/// Bytes held in part buffers, now and at most, across a sink's uploads.
#[derive(Debug, Default)]
pub(crate) struct BufferGauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl BufferGauge {
    fn add(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::SeqCst) + n;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
    fn sub(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::SeqCst);
    }
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    pub(crate) fn reset_peak(&self) {
        self.peak
            .store(self.now.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// The right to hold one part buffer of `bytes` (its capacity) in memory.
struct Ticket {
    _permit: OwnedSemaphorePermit,
    gauge: Arc<BufferGauge>,
    bytes: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

/// A filled (or final) part on its way to the upload task.
struct Part {
    data: Bytes,
    _ticket: Option<Ticket>,
}

enum Msg {
    Part(Part),
    /// The last bytes (possibly none): commit after them.
    Last(Part),
}

/// Everything the upload task needs.
pub(crate) struct Upload {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    pub key: String,
    pub part_size: usize,
    pub errors: Arc<ErrorMap>,
    pub gauge: Arc<BufferGauge>,
    pub runtime: Arc<SinkRuntime>,
}

pub(crate) struct UploadWriter {
    key: String,
    part_size: usize,
    permits: Arc<Semaphore>,
    gauge: Arc<BufferGauge>,
    buf: Option<(Vec<u8>, Ticket)>,
    tx: Option<mpsc::Sender<Msg>>,
    task: Option<JoinHandle<Result<u64, SinkError>>>,
    written: u64,
    /// Keeps the runtime alive while the task runs. Dropping the writer
    /// without `finish` closes `tx` without `Last`: the task then aborts on
    /// its own and nothing gets committed.
    _runtime: Arc<SinkRuntime>,
}

impl UploadWriter {
    pub(crate) fn start(up: Upload) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let task = up.runtime.handle().spawn(upload_task(
            up.store,
            up.path,
            up.key.clone(),
            up.errors,
            rx,
        ));
        Self {
            key: up.key,
            part_size: up.part_size,
            permits: Arc::new(Semaphore::new(PARTS_IN_MEMORY)),
            gauge: up.gauge,
            buf: None,
            tx: Some(tx),
            task: Some(task),
            written: 0,
            _runtime: up.runtime,
        }
    }

    /// The upload task's error, once it has stopped (or a generic one).
    fn task_error(&mut self) -> SinkError {
        self.tx = None;
        match self.task.take() {
            Some(task) => match join(futures::executor::block_on(task), "upload", &self.key) {
                Err(e) => e,
                Ok(_) => self.stopped(),
            },
            None => self.stopped(),
        }
    }

    fn stopped(&self) -> SinkError {
        SinkError::Remote {
            op: "upload",
            key: self.key.clone(),
            message: "the upload already failed or was finished".into(),
        }
    }

    fn new_buffer(&mut self) -> Result<(Vec<u8>, Ticket), SinkError> {
        if self.task.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(self.task_error());
        }
        // Waits while PARTS_IN_MEMORY parts are alive: this is the backpressure.
        let permit = futures::executor::block_on(self.permits.clone().acquire_owned())
            .expect("the semaphore is never closed");
        self.gauge.add(self.part_size);
        let ticket = Ticket {
            _permit: permit,
            gauge: self.gauge.clone(),
            bytes: self.part_size,
        };
        Ok((Vec::with_capacity(self.part_size), ticket))
    }

    fn send(&mut self, msg: Msg) -> Result<(), SinkError> {
        let Some(tx) = &self.tx else {
            return Err(self.task_error());
        };
        match futures::executor::block_on(tx.send(msg)) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.task_error()),
        }
    }

    fn take_part(&mut self) -> Part {
        match self.buf.take() {
            Some((data, ticket)) => Part {
                data: Bytes::from(data),
                _ticket: Some(ticket),
            },
            None => Part {
                data: Bytes::new(),
                _ticket: None,
            },
        }
    }
}

impl Write for UploadWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            if self.buf.is_none() {
                self.buf = Some(self.new_buffer().map_err(io::Error::other)?);
            }
            let (buf, _) = self.buf.as_mut().expect("just filled");
            let take = (self.part_size - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buf.len() == self.part_size {
                let part = self.take_part();
                self.send(Msg::Part(part)).map_err(io::Error::other)?;
            }
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts go out as they fill; the tail is sent by `finish`.
        Ok(())
    }
}

impl SinkWriter for UploadWriter {
    fn finish(mut self: Box<Self>) -> Result<u64, SinkError> {
        let last = self.take_part();
        self.send(Msg::Last(last))?;
        self.tx = None;
        let task = self.task.take().expect("task runs until finish");
        let size = join(futures::executor::block_on(task), "upload", &self.key)?;
        if size != self.written {
            return Err(SinkError::Remote {
                op: "verify upload",
                key: self.key.clone(),
                message: format!("wrote {} bytes but the store reports {size}", self.written),
            });
        }
        Ok(size)
    }

    fn abort(mut self: Box<Self>) {
        // Closing the channel without `Last` makes the task stop, drop its
        // in-flight parts and abort the upload; wait until it has.
        self.buf = None;
        self.tx = None;
        if let Some(task) = self.task.take() {
            let _ = futures::executor::block_on(task);
        }
    }
}

async fn upload_task(
    store: Arc<dyn ObjectStore>,
    path: Path,
    key: String,
    errors: Arc<ErrorMap>,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<u64, SinkError> {
    let err = |op: &'static str| {
        let key = key.clone();
        let errors = errors.clone();
        move |e: object_store::Error| errors.sink_error(op, &key, e)
    };
    let aborted = || SinkError::Remote {
        op: "upload",
        key: key.clone(),
        message: "upload aborted before finish".into(),
    };

    let first = match rx.recv().await {
        None => return Err(aborted()),
        // Small object: one atomic PUT, no block list.
        Some(Msg::Last(part)) => {
            let len = part.data.len() as u64;
            store
                .put(&path, PutPayload::from_bytes(part.data))
                .await
                .map_err(err("upload"))?;
            return verify_size(&*store, &path, &key, len, err("verify upload")).await;
        }
        Some(Msg::Part(part)) => part,
    };

    let mut upload = store
        .put_multipart(&path)
        .await
        .map_err(err("start upload"))?;
    let mut in_flight = FuturesUnordered::new();
    let mut total = 0u64;
    let mut next = Some(Msg::Part(first));
    let result: Result<(), SinkError> = async {
        loop {
            let msg = match next.take() {
                Some(msg) => Some(msg),
                None => loop {
                    tokio::select! {
                        biased;
                        Some(done) = in_flight.next(), if !in_flight.is_empty() => done?,
                        msg = rx.recv(), if in_flight.len() < MAX_PARTS_IN_FLIGHT => break msg,
                    }
                },
            };
            let (part, last) = match msg {
                None => return Err(aborted()),
                Some(Msg::Part(part)) => (part, false),
                Some(Msg::Last(part)) => (part, true),
            };
            if !part.data.is_empty() {
                total += part.data.len() as u64;
                let sent = upload.put_part(PutPayload::from_bytes(part.data.clone()));
                let on_err = err("upload part");
                in_flight.push(async move {
                    let result = sent.await.map_err(on_err);
                    drop(part); // releases the buffer's permit
                    result
                });
            }
            if last {
                while let Some(done) = in_flight.next().await {
                    done?;
                }
                upload.complete().await.map_err(err("commit upload"))?;
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = result {
        drop(in_flight);
        let _ = upload.abort().await;
        return Err(e);
    }
    verify_size(&*store, &path, &key, total, err("verify upload")).await
}

async fn verify_size(
    store: &dyn ObjectStore,
    path: &Path,
    key: &str,
    expected: u64,
    on_err: impl FnOnce(object_store::Error) -> SinkError,
) -> Result<u64, SinkError> {
    let meta = store.head(path).await.map_err(on_err)?;
    if meta.size != expected {
        return Err(SinkError::Remote {
            op: "verify upload",
            key: key.to_string(),
            message: format!(
                "uploaded {expected} bytes but the store reports {}",
                meta.size
            ),
        });
    }
    Ok(meta.size)
}
