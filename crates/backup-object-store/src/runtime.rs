//! The sink's own tokio runtime: the core is synchronous, object_store is not.
//!
//! Every async operation is spawned onto this runtime and the calling thread
//! waits for its result with a plain executor. That works the same whether
//! the caller is an ordinary thread or (unwisely) a task of another tokio
//! runtime, where `Runtime::block_on` would panic.

use std::future::Future;
use std::panic;

use backup_core::sink::SinkError;
use tokio::runtime::{Handle, Runtime};

/// Owns the runtime; shuts it down without blocking when the last user goes.
#[derive(Debug)]
pub(crate) struct SinkRuntime {
    runtime: Option<Runtime>,
}

impl SinkRuntime {
    /// Two worker threads: uploads overlap with the caller's compression
    /// without taking over a small machine.
    pub(crate) fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store-sink")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .handle()
    }

    /// Run `fut` on the runtime and wait for it on this thread.
    pub(crate) fn run<T, F>(&self, op: &'static str, key: &str, fut: F) -> Result<T, SinkError>
    where
        F: Future<Output = Result<T, SinkError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.handle().spawn(fut);
        join(futures::executor::block_on(task), op, key)
    }
}

/// Flatten a task's result: re-raise its panic, report a cancelled task.
pub(crate) fn join<T>(
    joined: Result<Result<T, SinkError>, tokio::task::JoinError>,
    op: &'static str,
    key: &str,
) -> Result<T, SinkError> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => panic::resume_unwind(e.into_panic()),
        Err(_) => Err(SinkError::Remote {
            op,
            key: key.to_string(),
            message: "the sink's I/O runtime shut down before the operation finished".into(),
        }),
    }
}

impl Drop for SinkRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Unlike a plain drop, this is allowed inside another runtime.
            runtime.shutdown_background();
        }
    }
}
