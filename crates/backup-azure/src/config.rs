//! Settings of an Azure Blob sink, as the `[azure]` section of the config
//! file holds them.

use secrecy::SecretString;
use serde::Deserialize;

/// The `[azure]` section of the config file. Credentials may also come
/// from `AZURE_STORAGE_*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Storage account name (else `AZURE_STORAGE_ACCOUNT_NAME`).
    pub account: Option<String>,
    /// Access key (else `AZURE_STORAGE_ACCOUNT_KEY`). Prefer the variable.
    pub access_key: Option<SecretString>,
    /// SAS token (else `AZURE_STORAGE_SAS_KEY`).
    pub sas_token: Option<SecretString>,
    /// Container name (must exist).
    pub container: String,
    /// Path prefix inside the container.
    #[serde(default = "default_azure_prefix")]
    pub prefix: String,
    /// Object name template below the prefix.
    #[serde(default = "default_azure_template")]
    pub template: String,
    /// Talk to the Azurite emulator (`AZURITE_BLOB_STORAGE_URL`, default 127.0.0.1:10000).
    #[serde(default)]
    pub use_emulator: bool,
    /// Endpoint override, e.g. `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    /// Accept a template that lets two runs of one day overwrite each other.
    #[serde(default)]
    pub allow_overwrite: bool,
    /// Retries for transient errors.
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    /// Upload part size in MiB (1–1024; an upload buffers at most 3 parts).
    #[serde(default = "default_part_mib")]
    pub part_size_mib: usize,
}

fn default_azure_prefix() -> String {
    "sqlite".into()
}
fn default_azure_template() -> String {
    "{date}/{label}-{time}{ext}".into()
}
fn default_retries() -> usize {
    5
}
fn default_part_mib() -> usize {
    8
}
