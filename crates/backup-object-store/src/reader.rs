//! Streaming download: an async byte stream behind a synchronous [`Read`].
//!
//! A task on the sink's runtime pulls chunks from the HTTP body and passes
//! them through a channel of [`CHUNKS_BUFFERED`] chunks; the reader waits on
//! that channel. Memory stays at a few HTTP chunks whatever the object size,
//! and dropping the reader stops the download.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use backup_core::sink::SinkError;

use crate::error::ErrorMap;
use crate::runtime::SinkRuntime;

/// Chunks buffered between the network task and the reader.
pub const CHUNKS_BUFFERED: usize = 4;

pub(crate) struct DownloadReader {
    rx: mpsc::Receiver<Result<Bytes, SinkError>>,
    chunk: Bytes,
    done: bool,
    key: String,
    /// Size the store announced, and bytes received so far: a stream that
    /// ends early is an error, never a silently short file.
    expected: u64,
    received: u64,
    _runtime: Arc<SinkRuntime>,
}

impl DownloadReader {
    pub(crate) fn start(
        runtime: Arc<SinkRuntime>,
        mut stream: BoxStream<'static, object_store::Result<Bytes>>,
        key: String,
        expected: u64,
        errors: Arc<ErrorMap>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CHUNKS_BUFFERED);
        let task_key = key.clone();
        runtime.handle().spawn(async move {
            let key = task_key;
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                let item = item.map_err(|e| errors.sink_error("download", &key, e));
                if tx.send(item).await.is_err() || failed {
                    break; // reader gone, or the error is delivered
                }
            }
        });
        Self {
            rx,
            chunk: Bytes::new(),
            done: false,
            key,
            expected,
            received: 0,
            _runtime: runtime,
        }
    }
}

impl Read for DownloadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() && !self.done && !buf.is_empty() {
            match futures::executor::block_on(self.rx.recv()) {
                Some(Ok(chunk)) => {
                    self.received += chunk.len() as u64;
                    self.chunk = chunk;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Err(io::Error::other(e));
                }
                None => {
                    self.done = true;
                    if self.received != self.expected {
                        return Err(io::Error::other(SinkError::Remote {
                            op: "download",
                            key: self.key.clone(),
                            message: format!(
                                "the download ended after {} of {} bytes",
                                self.received, self.expected
                            ),
                        }));
                    }
                }
            }
        }
        let n = self.chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}
