//! # backup-s3
//!
//! A [`Sink`](backup_core::sink::Sink) over Amazon S3 and S3-compatible
//! stores (Cloudflare R2, MinIO, Backblaze B2, Garage), built on
//! `object_store`'s `AmazonS3`. The sink itself (streaming multipart upload
//! with bounded part buffers, retries, size check, conditional create,
//! scrubbing) is `backup-object-store`'s [`ObjectStoreSink`]; this crate
//! turns `[s3]` into its client and adds what only S3 needs:
//!
//! - **Credentials** from the usual AWS environment variables
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//!   web identity, container and instance credentials through object_store)
//!   or the shared profile `AWS_PROFILE` (else `default`) in
//!   `~/.aws/credentials`. Never in the config file, never printed.
//! - **Parts of at least 5 MiB** (S3 refuses smaller ones except the last).
//! - **Incomplete multipart uploads** are aborted by the writer when it
//!   fails, and those a killed run left behind are listed and aborted by
//!   [`Sink::clean_incomplete`](backup_core::sink::Sink::clean_incomplete)
//!   at the start of the next backup, once `abort_incomplete_after_hours`
//!   old.
//! - `put_if_absent` is `If-None-Match: *`, which AWS, R2 and MinIO honour.
//!
//! ```no_run
//! use backup_core::sink::Sink;
//! let cfg: backup_s3::S3Config = toml::from_str(r#"
//!     bucket = "db-backups"
//!     endpoint = "http://127.0.0.1:9000"
//!     allow_http = true
//! "#).unwrap();
//! let sink = backup_s3::S3Sink::from_config(&cfg).unwrap();
//! assert_eq!(sink.location(), "s3://db-backups/sqlite");
//! sink.put("manifests/x.json", b"{}").unwrap();
//! ```
#![warn(missing_docs)]

mod client;
mod config;
mod janitor;

use std::sync::Arc;
use std::time::Duration;

pub use backup_object_store::{IncompleteUpload, ObjectStoreSink, PARTS_IN_MEMORY};
use backup_object_store::{Parts, Profile, StoreConfig, StoreError};
pub use config::S3Config;

/// An S3 bucket (below a prefix) used as a sink: the shared
/// [`ObjectStoreSink`], built with `S3Sink::from_config(&S3Config)`.
pub type S3Sink = ObjectStoreSink;

/// Why an [`S3Sink`] could not be built. Messages never carry credentials.
pub type S3Error = StoreError;

/// How S3 speaks.
pub static PROFILE: Profile = Profile {
    name: "s3",
    root_kind: "bucket",
    part_size_mib: 5..=5120,
    auth_markers: &[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
    ],
    auth_hint: "check the access key and secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
                AWS_SESSION_TOKEN or the AWS_PROFILE in ~/.aws/credentials), the region, \
                and that the key's policy allows this action on the bucket",
    missing_root_markers: &["NoSuchBucket"],
};

impl StoreConfig for S3Config {
    fn parts(&self) -> Result<Parts, StoreError> {
        let built = client::build(self)?;
        let janitor = janitor::S3Janitor {
            store: built.store.clone(),
            region: built.region.clone(),
            bucket_url: built.bucket_url.clone(),
            client_options: built.client_options,
            abort_after: Duration::from_secs(
                self.abort_incomplete_after_hours.saturating_mul(3600),
            ),
        };
        Ok(Parts {
            profile: &PROFILE,
            store: Arc::new(built.store),
            root: self.bucket.clone(),
            prefix: self.prefix.clone(),
            part_size_mib: self.part_size_mib,
            scrubber: built.scrubber,
            janitor: Some(Arc::new(janitor::SharedJanitor(Arc::new(janitor)))),
            facts: vec![("region", built.region)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_core::sink::{Placement, Sink};

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEYxx";

    fn config(extra: &str) -> S3Config {
        toml::from_str(&format!(
            "bucket = \"db-backups\"\nprefix = \"sqlite/\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn location_debug_and_errors_never_show_the_secret() {
        // SAFETY: the only test of this binary that reads the environment;
        // the settings checks run after it, on this thread.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
        }
        let sink = S3Sink::from_config(&config("region = \"eu-west-1\"")).unwrap();
        let shown = format!("{sink:?} {sink:#?} {sink} {}", sink.location());
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert_eq!(sink.location(), "s3://db-backups/sqlite");
        assert_eq!(sink.name(), "s3");
        assert_eq!(sink.placement(), Placement::Remote);
        let scrubbed = sink.scrub(&format!(
            "403 for {SECRET} and {}",
            SECRET.replace('/', "%2F")
        ));
        assert!(!scrubbed.contains("wJalrXUtnFEMI"), "{scrubbed}");
        assert_eq!(
            sink.path("2026-01-01/app.db.zst").unwrap().as_ref(),
            "sqlite/2026-01-01/app.db.zst"
        );
        assert!(sink.path("../x").is_err());
        bad_settings_are_refused_with_a_reason();
    }

    fn bad_settings_are_refused_with_a_reason() {
        let err = S3Sink::from_config(&config("part_size_mib = 1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("part_size_mib") && err.contains("5..=5120"),
            "{err}"
        );
        let err = S3Sink::from_config(&config("endpoint = \"http://127.0.0.1:9000\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_http"), "{err}");
        assert!(
            S3Sink::from_config(&config(
                "endpoint = \"http://127.0.0.1:9000\"\nallow_http = true"
            ))
            .is_ok()
        );
        let mut cfg = config("");
        cfg.bucket = "Bad_Name".into();
        let err = S3Sink::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("bucket"), "{err}");
        assert!(toml::from_str::<S3Config>("bucket = \"b\"\nsecret = \"x\"").is_err());
    }
}
