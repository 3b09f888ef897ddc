//! # backup-azure
//!
//! A [`Sink`] over Azure Blob Storage, built on `object_store`'s
//! `MicrosoftAzure` backend, for the engine in `backup-core`.
//!
//! - **Credentials** come from the `[azure]` config section or the usual
//!   environment variables (`AZURE_STORAGE_ACCOUNT_NAME`,
//!   `AZURE_STORAGE_ACCOUNT_KEY` / `AZURE_STORAGE_KEY`,
//!   `AZURE_STORAGE_SAS_TOKEN` / `AZURE_STORAGE_SAS_KEY`,
//!   `AZURE_STORAGE_CONNECTION_STRING`, service-principal and managed-identity
//!   variables through object_store). They never appear in `Debug` output,
//!   [`Sink::location`] or error messages.
//! - **Emulator**: `use_emulator = true` talks to Azurite, at `endpoint` when
//!   given (e.g. `http://127.0.0.1:10000/devstoreaccount1`), else at
//!   `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`).
//! - **Uploads stream**: [`Sink::create`] returns a writer that sends
//!   `part_size_mib` blocks while the caller keeps writing, with at most
//!   [`PARTS_IN_MEMORY`] part buffers per upload. `finish` commits the block
//!   list and checks the stored size with a HEAD request. Until then nothing
//!   is visible; an aborted or dropped upload leaves only uncommitted blocks,
//!   which Azure never lists and discards after a week.
//! - **Downloads stream**: [`Sink::get`] returns a reader fed chunk by chunk.
//! - **Retries** with exponential backoff come from object_store's
//!   `RetryConfig` (`max_retries` in the config).
//! - The core is synchronous: the sink owns a small tokio runtime and waits
//!   for it, so it can be used from plain threads.
//!
//! Object keys are relative to `prefix` inside the container.
//!
//! ```no_run
//! use backup_core::sink::Sink;
//! let cfg: backup_azure::AzureConfig = toml::from_str(r#"
//!     container = "db-backups"
//!     use_emulator = true
//!     endpoint = "http://127.0.0.1:10000/devstoreaccount1"
//! "#).unwrap();
//! let sink = backup_azure::AzureSink::from_config(&cfg).unwrap();
//! assert_eq!(sink.location(), "azure://db-backups/sqlite");
//! sink.put("manifests/x.json", b"{}").unwrap();
//! ```
#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod reader;
mod runtime;
mod scrub;
mod writer;

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use backup_core::sink::{Placement, Sink, SinkError, SinkWriter, validate_key};

#[cfg(feature = "testing")]
pub use client::{AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY};
pub use config::AzureConfig;
pub use error::AzureError;
pub use reader::CHUNKS_BUFFERED;
pub use writer::{MAX_PARTS_IN_FLIGHT, PARTS_IN_MEMORY};

use reader::AzureReader;
use runtime::SinkRuntime;
use scrub::Scrubber;
use writer::{AzureWriter, BufferGauge, Upload};

const MIB: usize = 1024 * 1024;

/// An Azure Blob container (below a prefix) used as a [`Sink`].
pub struct AzureSink {
    store: Arc<dyn ObjectStore>,
    runtime: Arc<SinkRuntime>,
    scrubber: Arc<Scrubber>,
    gauge: Arc<BufferGauge>,
    container: String,
    prefix: String,
    part_size: usize,
    emulator: bool,
}

impl fmt::Debug for AzureSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not the object_store client: only what a person needs.
        f.debug_struct("AzureSink")
            .field("location", &self.location())
            .field("emulator", &self.emulator)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AzureSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location())
    }
}

impl AzureSink {
    /// Build a sink from the `[azure]` config section and the environment.
    /// Does not touch the network (so `--dry-run` can build it).
    ///
    /// Fails on an invalid container name, a part size outside 1–1024 MiB,
    /// a missing account outside emulator mode, or settings object_store
    /// rejects. The error text never contains credentials.
    pub fn from_config(cfg: &AzureConfig) -> Result<AzureSink, AzureError> {
        if !(1..=1024).contains(&cfg.part_size_mib) {
            return Err(AzureError::Config {
                message: format!(
                    "part_size_mib = {} is outside 1..=1024 (memory per upload is {}× the part size)",
                    cfg.part_size_mib, PARTS_IN_MEMORY
                ),
            });
        }
        let built = client::build(cfg)?;
        let runtime = SinkRuntime::new().map_err(AzureError::Runtime)?;
        Ok(AzureSink {
            store: Arc::new(built.store),
            runtime: Arc::new(runtime),
            scrubber: Arc::new(built.scrubber),
            gauge: Arc::default(),
            container: cfg.container.clone(),
            prefix: cfg.prefix.trim_matches('/').to_string(),
            part_size: cfg.part_size_mib * MIB,
            emulator: built.emulator,
        })
    }

    /// Bytes per uploaded part (block).
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

    /// The container and prefix as object_store path of `key`.
    fn path(&self, key: &str) -> Result<Path, SinkError> {
        validate_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|_| SinkError::InvalidKey {
            key: key.to_string(),
            reason: "not a valid blob name",
        })
    }

    fn map(
        &self,
        op: &'static str,
        key: &str,
    ) -> impl FnOnce(object_store::Error) -> SinkError + use<> {
        let scrubber = self.scrubber.clone();
        let key = key.to_string();
        move |e| error::sink_error(&scrubber, op, &key, e)
    }
}

impl Sink for AzureSink {
    fn name(&self) -> &str {
        "azure"
    }

    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("azure://{}", self.container)
        } else {
            format!("azure://{}/{}", self.container, self.prefix)
        }
    }

    fn placement(&self) -> Placement {
        Placement::Remote
    }

    fn create(&self, key: &str) -> Result<Box<dyn SinkWriter>, SinkError> {
        let path = self.path(key)?;
        Ok(Box::new(AzureWriter::start(Upload {
            store: self.store.clone(),
            path,
            key: key.to_string(),
            part_size: self.part_size,
            scrubber: self.scrubber.clone(),
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
        Ok(Box::new(AzureReader::start(
            self.runtime.clone(),
            result.into_stream(),
            key.to_string(),
            expected,
            self.scrubber.clone(),
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

    fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let folder = prefix.trim_matches('/');
        let root = if folder.is_empty() {
            if self.prefix.is_empty() {
                None
            } else {
                Some(
                    Path::parse(&self.prefix).map_err(|_| SinkError::InvalidKey {
                        key: self.prefix.clone(),
                        reason: "not a valid blob prefix",
                    })?,
                )
            }
        } else {
            Some(self.path(folder)?)
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
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

    // clean_incomplete: uncommitted blocks are invisible and Azure deletes
    // them after seven days; there is nothing to list or remove.
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    const KEY: &str =
        "c2VjcmV0LWtleS10aGF0LW11c3QtbmV2ZXItYmUtcHJpbnRlZC1hbnl3aGVyZS0xMjM0NTY3ODkwYWJjZGVmZ2g=";
    const SAS: &str =
        "sv=2024-11-04&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=SaSsIgNaTuRe%2Bvalue%3D";

    fn config() -> AzureConfig {
        toml::from_str(
            r#"
            account = "acme"
            container = "db-backups"
            prefix = "sqlite/"
            "#,
        )
        .unwrap()
    }

    fn assert_clean(text: &str) {
        for needle in [
            "c2VjcmV0",
            "SaSsIgNaTuRe",
            "SaSsIgNaTuRe%2Bvalue",
            "sig=SaS",
        ] {
            assert!(!text.contains(needle), "secret leaked: {text}");
        }
    }

    #[test]
    fn debug_and_display_never_show_credentials() {
        let mut cfg = config();
        cfg.access_key = Some(SecretString::from(KEY));
        assert_clean(&format!("{cfg:?} {cfg:#?}"));
        let sink = AzureSink::from_config(&cfg).unwrap();
        assert_clean(&format!("{sink:?} {sink:#?} {sink} {}", sink.location()));
        assert_eq!(sink.location(), "azure://db-backups/sqlite");
        assert_eq!(sink.to_string(), "azure://db-backups/sqlite");
        assert_eq!(sink.name(), "azure");
        assert_eq!(sink.placement(), Placement::Remote);

        let mut cfg = config();
        cfg.sas_token = Some(SecretString::from(SAS));
        assert_clean(&format!("{cfg:?} {cfg:#?}"));
        let sink = AzureSink::from_config(&cfg).unwrap();
        assert_clean(&format!("{sink:?} {sink:#?} {sink}"));
    }

    #[test]
    fn errors_never_show_credentials() {
        let mut cfg = config();
        cfg.access_key = Some(SecretString::from(KEY));
        let sink = AzureSink::from_config(&cfg).unwrap();
        let scrubbed = sink.scrubber.scrub(&format!(
            "403 for {KEY} at https://acme.blob.core.windows.net/c/x?{SAS}"
        ));
        assert_clean(&scrubbed);

        // A key that is not even valid base64 is rejected without echoing it.
        let mut cfg = config();
        cfg.access_key = Some(SecretString::from("not base64 but secret!!"));
        let err = AzureSink::from_config(&cfg).unwrap_err().to_string();
        assert!(!err.contains("not base64 but secret"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let mut cfg = config();
        cfg.container = "Bad_Name".into();
        let err = AzureSink::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("container"), "{err}");

        let mut cfg = config();
        cfg.part_size_mib = 0;
        assert!(AzureSink::from_config(&cfg).is_err());
    }

    #[test]
    fn keys_live_below_the_prefix() {
        let mut cfg = config();
        cfg.access_key = Some(SecretString::from(KEY));
        let sink = AzureSink::from_config(&cfg).unwrap();
        assert_eq!(
            sink.path("2026-01-01/app.db.zst").unwrap().as_ref(),
            "sqlite/2026-01-01/app.db.zst"
        );
        assert!(sink.path("../x").is_err());
        assert_eq!(sink.max_upload_buffer(), PARTS_IN_MEMORY * 8 * MIB);
    }
}
