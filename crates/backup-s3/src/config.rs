//! Settings of an S3 sink, as the `[s3]` section of the config file holds
//! them. Credentials belong in the usual AWS environment variables or a
//! shared credentials profile; the config may name them too (for tests and
//! odd setups), and they are never printed.

use secrecy::SecretString;
use serde::Deserialize;

/// The `[s3]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name (must exist).
    pub bucket: String,
    /// Access key id (else `AWS_ACCESS_KEY_ID` or the profile). Prefer the variable.
    pub access_key_id: Option<String>,
    /// Secret access key (else `AWS_SECRET_ACCESS_KEY` or the profile). Prefer the variable.
    pub secret_access_key: Option<SecretString>,
    /// Key prefix inside the bucket.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Object name template below the prefix.
    #[serde(default = "default_template")]
    pub template: String,
    /// Region (else `AWS_REGION` / `AWS_DEFAULT_REGION`, the profile's
    /// region, then `us-east-1`). Cloudflare R2 wants `auto`.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store, e.g. `http://127.0.0.1:9000`
    /// (else `AWS_ENDPOINT_URL`; AWS itself when neither is set).
    pub endpoint: Option<String>,
    /// Allow plain-HTTP endpoints: for a local server only.
    #[serde(default)]
    pub allow_http: bool,
    /// Upload part size in MiB (5–5120: S3 refuses smaller parts except the
    /// last; an upload buffers at most 3 parts).
    #[serde(default = "default_part_mib")]
    pub part_size_mib: usize,
    /// Retries for transient errors.
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    /// Accept a template that lets two runs of one day overwrite each other.
    #[serde(default)]
    pub allow_overwrite: bool,
    /// Multipart uploads left open below the prefix by failed or killed runs
    /// are aborted by the next backup once they are this old. Another host
    /// may be uploading to the same prefix right now, so 0 only when one
    /// host writes it.
    #[serde(default = "default_abort_hours")]
    pub abort_incomplete_after_hours: u64,
}

fn default_prefix() -> String {
    "sqlite".into()
}
fn default_template() -> String {
    "{date}/{label}-{time}{ext}".into()
}
fn default_retries() -> usize {
    5
}
fn default_part_mib() -> usize {
    8
}
fn default_abort_hours() -> u64 {
    24
}
