//! # backup-object-store
//!
//! The [`Sink`] every object store shares, built on `object_store`: the
//! per-store crates (`backup-azure`, `backup-s3`) only turn their config
//! section into an object_store client ([`StoreConfig`]) and describe how
//! the store speaks ([`Profile`]). Everything else lives here, once:
//!
//! - **Uploads stream**: [`Sink::create`] returns a writer that sends
//!   `part_size_mib` parts while the caller keeps writing, with at most
//!   [`PARTS_IN_MEMORY`] part buffers per upload. `finish` completes the
//!   multipart upload and checks the stored size with a HEAD request. Until
//!   then nothing is visible; a failed, aborted or dropped upload is
//!   aborted on the server.
//! - **Downloads stream**: [`Sink::get`] returns a reader fed chunk by chunk
//!   that fails, rather than ends early, when the stream is cut.
//! - **Conditional create**: [`Sink::put_if_absent`] is `PutMode::Create`
//!   (`If-None-Match: *`), decided by the service.
//! - **Retries** with exponential backoff come from object_store's
//!   `RetryConfig`, set by the per-store builder.
//! - **Secrets** never appear in `Debug` output, [`Sink::location`] or error
//!   messages: every message goes through a [`Scrubber`].
//! - **Leftovers**: [`Sink::clean_incomplete`] runs the store's [`Janitor`]
//!   when it has one (S3 lists and aborts stale multipart uploads).
//! - The core is synchronous: the sink owns a small tokio runtime and waits
//!   for it, so it can be used from plain threads.
#![warn(missing_docs)]

mod error;
mod reader;
mod runtime;
mod scrub;
mod writer;

use std::fmt;
use std::io::Read;
use std::ops::RangeInclusive;
use std::sync::Arc;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use backup_core::sink::{Placement, Sink, SinkError, SinkWriter, validate_key};

pub use error::StoreError;
pub use reader::CHUNKS_BUFFERED;
pub use scrub::Scrubber;
pub use writer::{MAX_PARTS_IN_FLIGHT, PARTS_IN_MEMORY};

use error::ErrorMap;
use reader::DownloadReader;
use runtime::SinkRuntime;
use writer::{BufferGauge, Upload, UploadWriter};

const MIB: usize = 1024 * 1024;

/// How one kind of store differs: names, limits and the words its servers
/// use for refused credentials and missing containers.
#[derive(Debug)]
pub struct Profile {
    /// Sink name, URL scheme of [`Sink::location`] and config section
    /// (`azure`, `s3`).
    pub name: &'static str,
    /// What the top-level namespace is called (`container`, `bucket`).
    pub root_kind: &'static str,
    /// Part sizes the store accepts, in MiB.
    pub part_size_mib: RangeInclusive<usize>,
    /// Error codes meaning the credentials were refused, besides 401/403.
    pub auth_markers: &'static [&'static str],
    /// What to check when they are: which settings and variables.
    pub auth_hint: &'static str,
    /// Error codes meaning the container or bucket does not exist.
    pub missing_root_markers: &'static [&'static str],
}

/// One incomplete (started, neither completed nor aborted) multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    /// Full object path in the store (prefix included).
    pub path: String,
    /// The store's upload id.
    pub upload_id: String,
    /// When it was started, as the store reports it (RFC 3339).
    pub initiated: String,
}

/// Finds and aborts incomplete multipart uploads, for stores that keep them
/// (S3 keeps, and bills, their parts until they are aborted).
pub trait Janitor: Send + Sync + fmt::Debug {
    /// Incomplete uploads whose path starts with `prefix`.
    fn list(
        &self,
        prefix: String,
    ) -> BoxFuture<'static, object_store::Result<Vec<IncompleteUpload>>>;
    /// Abort incomplete uploads below `prefix` old enough to belong to no
    /// running backup; returns how many were aborted.
    fn abort_stale(&self, prefix: String) -> BoxFuture<'static, object_store::Result<usize>>;
}

/// What a per-store builder hands over to make an [`ObjectStoreSink`].
pub struct Parts {
    /// How the store differs.
    pub profile: &'static Profile,
    /// The client, already bound to its container or bucket.
    pub store: Arc<dyn ObjectStore>,
    /// Container or bucket name, for [`Sink::location`].
    pub root: String,
    /// Path prefix inside it (no leading or trailing `/`).
    pub prefix: String,
    /// Upload part size.
    pub part_size_mib: usize,
    /// Knows every configured secret.
    pub scrubber: Scrubber,
    /// Cleans incomplete uploads, when the store keeps them.
    pub janitor: Option<Arc<dyn Janitor>>,
    /// Extra facts for `Debug` (never secrets), e.g. `("emulator", "true")`.
    pub facts: Vec<(&'static str, String)>,
}

/// A config section that can build an object_store client (no network).
pub trait StoreConfig {
    /// Validate the settings, read the environment and build the client.
    fn parts(&self) -> Result<Parts, StoreError>;
}

/// A container or bucket (below a prefix) used as a [`Sink`].
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    runtime: Arc<SinkRuntime>,
    errors: Arc<ErrorMap>,
    gauge: Arc<BufferGauge>,
    janitor: Option<Arc<dyn Janitor>>,
    profile: &'static Profile,
    root: String,
    prefix: String,
    part_size: usize,
    facts: Vec<(&'static str, String)>,
}

impl fmt::Debug for ObjectStoreSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not the object_store client: only what a person needs.
        let mut d = f.debug_struct("ObjectStoreSink");
        d.field("location", &self.location());
        for (name, value) in &self.facts {
            d.field(name, value);
        }
        d.field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ObjectStoreSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location())
    }
}

impl ObjectStoreSink {
    /// Build a sink from a config section (`AzureConfig`, `S3Config`) and
    /// the environment. Does not touch the network (so `--dry-run` can
    /// build it). The error text never contains credentials.
    pub fn from_config(cfg: &impl StoreConfig) -> Result<ObjectStoreSink, StoreError> {
        Self::from_parts(cfg.parts()?)
    }

    /// [`from_config`](Self::from_config) for a section chosen at run time.
    pub fn from_config_dyn(cfg: &dyn StoreConfig) -> Result<ObjectStoreSink, StoreError> {
        Self::from_parts(cfg.parts()?)
    }

    /// Build a sink from a client and its description.
    pub fn from_parts(parts: Parts) -> Result<ObjectStoreSink, StoreError> {
        let p = parts.profile;
        if !p.part_size_mib.contains(&parts.part_size_mib) {
            return Err(StoreError::Config {
                section: p.name,
                message: format!(
                    "part_size_mib = {} is outside {}..={} (memory per upload is {}× the part size)",
                    parts.part_size_mib,
                    p.part_size_mib.start(),
                    p.part_size_mib.end(),
                    PARTS_IN_MEMORY
                ),
            });
        }
        let runtime = SinkRuntime::new().map_err(|source| StoreError::Runtime {
            section: p.name,
            source,
        })?;
        Ok(ObjectStoreSink {
            store: parts.store,
            runtime: Arc::new(runtime),
            errors: Arc::new(ErrorMap {
                scrubber: parts.scrubber,
                profile: p,
            }),
            gauge: Arc::default(),
            janitor: parts.janitor,
            profile: p,
            root: parts.root,
            prefix: parts.prefix.trim_matches('/').to_string(),
            part_size: parts.part_size_mib * MIB,
            facts: parts.facts,
        })
    }

    /// Bytes per uploaded part.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The most memory one upload may hold in part buffers:
    /// [`PARTS_IN_MEMORY`] × [`part_size`](Self::part_size).
    pub fn max_upload_buffer(&self) -> usize {
        PARTS_IN_MEMORY * self.part_size
    }

    /// The most bytes held in part buffers at once (across this sink's
    /// uploads) since it was built or [`reset_buffer_peak`](Self::reset_buffer_peak).
    pub fn buffer_peak(&self) -> usize {
        self.gauge.peak()
    }

    /// Start measuring [`buffer_peak`](Self::buffer_peak) afresh.
    pub fn reset_buffer_peak(&self) {
        self.gauge.reset_peak();
    }

    /// Remove every configured secret and signature from `text`.
    pub fn scrub(&self, text: &str) -> String {
        self.errors.scrubber.scrub(text)
    }

    /// Incomplete multipart uploads below this sink's prefix (empty for
    /// stores without a [`Janitor`], where they are invisible).
    pub fn incomplete_uploads(&self) -> Result<Vec<IncompleteUpload>, SinkError> {
        let Some(janitor) = self.janitor.clone() else {
            return Ok(Vec::new());
        };
        let prefix = self.store_prefix();
        let errors = self.errors.clone();
        self.runtime.run("list uploads", "", async move {
            janitor
                .list(prefix)
                .await
                .map_err(|e| errors.sink_error("list uploads", "", e))
        })
    }

    /// The object path prefix of this sink's keys (`prefix/`, or empty).
    fn store_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// The object_store path of `key`.
    pub fn path(&self, key: &str) -> Result<Path, SinkError> {
        validate_key(key)?;
        let full = format!("{}{key}", self.store_prefix());
        Path::parse(&full).map_err(|_| SinkError::InvalidKey {
            key: key.to_string(),
            reason: "not a valid object name",
        })
    }

    fn map(
        &self,
        op: &'static str,
        key: &str,
    ) -> impl FnOnce(object_store::Error) -> SinkError + use<> {
        let errors = self.errors.clone();
        let key = key.to_string();
        move |e| errors.sink_error(op, &key, e)
    }
}

impl Sink for ObjectStoreSink {
    fn name(&self) -> &str {
        self.profile.name
    }

    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("{}://{}", self.profile.name, self.root)
        } else {
            format!("{}://{}/{}", self.profile.name, self.root, self.prefix)
        }
    }

    fn placement(&self) -> Placement {
        Placement::Remote
    }

    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        let path = self.path(key)?;
        Ok(Box::new(UploadWriter::start(Upload {
            store: self.store.clone(),
            path,
            key: key.to_string(),
            part_size: self.part_size,
            errors: self.errors.clone(),
            gauge: self.gauge.clone(),
            runtime: self.runtime.clone(),
        })))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let payload = PutPayload::from(data.to_vec());
        let on_err = self.map("put", key);
        self.runtime.run("put", key, async move {
            store.put(&path, payload).await.map(drop).map_err(on_err)
        })
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<(), SinkError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let payload = PutPayload::from(data.to_vec());
        let on_err = self.map("put", key);
        let owned_key = key.to_string();
        // `If-None-Match: *`: the service decides, so writers on different
        // hosts agree. object_store maps the 409/412 answer to AlreadyExists.
        self.runtime.run("put", key, async move {
            match store.put_opts(&path, payload, PutMode::Create.into()).await {
                Ok(_) => Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    Err(SinkError::AlreadyExists { key: owned_key })
                }
                Err(e) => Err(on_err(e)),
            }
        })
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, SinkError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let on_err = self.map("get", key);
        let result =
            self.runtime.run(
                "get",
                key,
                async move { store.get(&path).await.map_err(on_err) },
            )?;
        let expected = result.meta.size;
        Ok(Box::new(DownloadReader::start(
            self.runtime.clone(),
            result.into_stream(),
            key.to_string(),
            expected,
            self.errors.clone(),
        )))
    }

    fn size(&self, key: &str) -> Result<Option<u64>, SinkError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let on_err = self.map("size", key);
        self.runtime
            .run("size", key, async move {
                match store.head(&path).await {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(on_err(e)),
                }
            })
            .or_else(|e| if e.is_not_found() { Ok(None) } else { Err(e) })
    }

    fn modified(&self, key: &str) -> Result<Option<jiff::Timestamp>, SinkError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let on_err = self.map("head", key);
        self.runtime
            .run("head", key, async move {
                match store.head(&path).await {
                    Ok(meta) => Ok(jiff::Timestamp::from_millisecond(
                        meta.last_modified.timestamp_millis(),
                    )
                    .ok()),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(on_err(e)),
                }
            })
            .or_else(|e| if e.is_not_found() { Ok(None) } else { Err(e) })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let folder = prefix.trim_matches('/');
        let root = if folder.is_empty() {
            if self.prefix.is_empty() {
                None
            } else {
                Some(
                    Path::parse(&self.prefix).map_err(|_| SinkError::InvalidKey {
                        key: self.prefix.clone(),
                        reason: "not a valid object prefix",
                    })?,
                )
            }
        } else {
            Some(self.path(folder)?)
        };
        let strip = self.store_prefix();
        let store = self.store.clone();
        let on_err = self.map("list", prefix);
        let mut keys = self.runtime.run("list", prefix, async move {
            store
                .list(root.as_ref())
                .map_ok(|meta| meta.location.to_string())
                .try_collect::<Vec<_>>()
                .await
                .map_err(on_err)
        })?;
        keys.retain_mut(|k| match k.strip_prefix(&strip) {
            Some(rest) => {
                *k = rest.to_string();
                true
            }
            None => false,
        });
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<(), SinkError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let on_err = self.map("delete", key);
        self.runtime.run("delete", key, async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(on_err(e)),
            }
        })
    }

    /// Stores without a janitor (Azure: uncommitted blocks are invisible and
    /// discarded after seven days) have nothing to clean.
    fn clean_incomplete(&self) -> Result<usize, SinkError> {
        let Some(janitor) = self.janitor.clone() else {
            return Ok(0);
        };
        let prefix = self.store_prefix();
        let errors = self.errors.clone();
        self.runtime.run("clean uploads", "", async move {
            janitor
                .abort_stale(prefix)
                .await
                .map_err(|e| errors.sink_error("clean uploads", "", e))
        })
    }
}
