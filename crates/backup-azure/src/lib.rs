//! # backup-azure
//!
//! A [`Sink`](backup_core::sink::Sink) over Azure Blob Storage, built on `object_store`'s
//! `MicrosoftAzure` backend, for the engine in `backup-core`. The sink
//! itself (streaming, retries, scrubbing) is `backup-object-store`'s
//! [`ObjectStoreSink`]; this crate turns `[azure]` into its client.
//!
//! - **Credentials** come from the `[azure]` config section or the usual
//!   environment variables (`AZURE_STORAGE_ACCOUNT_NAME`,
//!   `AZURE_STORAGE_ACCOUNT_KEY` / `AZURE_STORAGE_KEY`,
//!   `AZURE_STORAGE_SAS_TOKEN` / `AZURE_STORAGE_SAS_KEY`,
//!   `AZURE_STORAGE_CONNECTION_STRING`, service-principal and managed-identity
//!   variables through object_store). They never appear in `Debug` output,
//!   [`Sink::location`](backup_core::sink::Sink::location) or error messages.
//! - **Emulator**: `use_emulator = true` talks to Azurite, at `endpoint` when
//!   given (e.g. `http://127.0.0.1:10000/devstoreaccount1`), else at
//!   `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`).
//! - **Uploads stream**: [`Sink::create`](backup_core::sink::Sink::create) returns a writer that sends
//!   `part_size_mib` blocks while the caller keeps writing, with at most
//!   [`PARTS_IN_MEMORY`] part buffers per upload. `finish` commits the block
//!   list and checks the stored size with a HEAD request. Until then nothing
//!   is visible; an aborted or dropped upload leaves only uncommitted blocks,
//!   which Azure never lists and discards after a week.
//! - **Downloads stream**: [`Sink::get`](backup_core::sink::Sink::get) returns a reader fed chunk by chunk.
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

use std::sync::Arc;

pub use backup_object_store::{
    CHUNKS_BUFFERED, MAX_PARTS_IN_FLIGHT, ObjectStoreSink, PARTS_IN_MEMORY,
};
use backup_object_store::{Parts, Profile, StoreConfig, StoreError};

#[cfg(feature = "testing")]
pub use client::{AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY};
pub use config::AzureConfig;

/// An Azure Blob container (below a prefix) used as a [`Sink`](backup_core::sink::Sink): the shared
/// [`ObjectStoreSink`], built with `AzureSink::from_config(&AzureConfig)`.
pub type AzureSink = ObjectStoreSink;

/// Why an [`AzureSink`] could not be built. Messages never carry credentials.
pub type AzureError = StoreError;

/// How Azure Blob Storage speaks.
pub static PROFILE: Profile = Profile {
    name: "azure",
    root_kind: "container",
    part_size_mib: 1..=1024,
    auth_markers: &["AuthorizationFailure", "AuthenticationFailed"],
    auth_hint: "check the storage account name and the access key or SAS token \
                (AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, \
                AZURE_STORAGE_SAS_TOKEN or [azure] in the config)",
    missing_root_markers: &["ContainerNotFound"],
};

impl StoreConfig for AzureConfig {
    fn parts(&self) -> Result<Parts, StoreError> {
        let built = client::build(self)?;
        Ok(Parts {
            profile: &PROFILE,
            store: Arc::new(built.store),
            root: self.container.clone(),
            prefix: self.prefix.clone(),
            part_size_mib: self.part_size_mib,
            scrubber: built.scrubber,
            // Uncommitted blocks are invisible and Azure deletes them after
            // seven days: nothing to list or abort.
            janitor: None,
            facts: vec![("emulator", built.emulator.to_string())],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_core::sink::{Placement, Sink};
    use secrecy::SecretString;

    const MIB: usize = 1024 * 1024;

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
        let scrubbed = sink.scrub(&format!(
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
