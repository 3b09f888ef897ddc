//! Settings → object_store client: config file first, then the usual
//! environment variables, then an Azure connection string.

use object_store::ClientConfigKey;
use object_store::RetryConfig;
use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};

use secrecy::ExposeSecret;

use backup_object_store::{Scrubber, StoreError};

use crate::config::AzureConfig;

type AzureError = StoreError;

fn config_error(message: impl Into<String>) -> AzureError {
    StoreError::Config {
        section: "azure",
        message: message.into(),
    }
}

/// The account every Azurite instance serves.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// Azurite's published, well-known development key (not a secret: every
/// emulator accepts it). Used only in emulator mode when no key is given.
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The parts of an Azure Storage connection string (`Key=Value;…`) that
/// matter for Blob storage. The format is the one `az storage` and the
/// portal hand out.
#[derive(Default, PartialEq, Eq)]
pub(crate) struct ConnectionString {
    pub account: Option<String>,
    pub key: Option<String>,
    pub sas: Option<String>,
    pub blob_endpoint: Option<String>,
    pub development: bool,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionString")
            .field("account", &self.account)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("sas", &self.sas.as_ref().map(|_| "<redacted>"))
            .field("blob_endpoint", &self.blob_endpoint)
            .field("development", &self.development)
            .finish()
    }
}

impl ConnectionString {
    /// Parse `DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;EndpointSuffix=core.windows.net`
    /// and friends. Unknown parts are ignored; values may contain `=`.
    pub(crate) fn parse(text: &str) -> Result<Self, AzureError> {
        let mut out = Self::default();
        let mut protocol = None;
        let mut suffix = None;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(config_error(
                    "AZURE_STORAGE_CONNECTION_STRING is not a list of Name=Value parts",
                ));
            };
            let value = value.trim().to_string();
            match name.trim().to_ascii_lowercase().as_str() {
                "accountname" => out.account = Some(value),
                "accountkey" => out.key = Some(value),
                "sharedaccesssignature" => out.sas = Some(value),
                "blobendpoint" => out.blob_endpoint = Some(value),
                "defaultendpointsprotocol" => protocol = Some(value),
                "endpointsuffix" => suffix = Some(value),
                "usedevelopmentstorage" => out.development = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if out.blob_endpoint.is_none()
            && let (Some(account), Some(suffix)) = (&out.account, &suffix)
        {
            let protocol = protocol.as_deref().unwrap_or("https");
            out.blob_endpoint = Some(format!("{protocol}://{account}.blob.{suffix}"));
        }
        Ok(out)
    }
}

/// Everything [`build`] decided, for the sink and for people.
pub(crate) struct Built {
    pub store: MicrosoftAzure,
    pub scrubber: Scrubber,
    pub emulator: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Check an Azure container name: 3–63 lowercase letters, digits and single
/// hyphens, starting and ending with a letter or digit.
pub(crate) fn validate_container(name: &str) -> Result<(), AzureError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(config_error(format!(
            "container {name:?} is not a valid Azure container name \
             (3-63 lowercase letters, digits and single hyphens)"
        )))
    }
}

/// Build the object_store client for `cfg`.
///
/// Precedence: values in the config file, then object_store's own
/// `AZURE_STORAGE_*` variables (`ACCOUNT_NAME`, `ACCOUNT_KEY`/`ACCESS_KEY`,
/// `SAS_KEY`/`SAS_TOKEN`, `CLIENT_ID`/`CLIENT_SECRET`/`TENANT_ID`,
/// `ENDPOINT`, `USE_EMULATOR`, …), then the az CLI's `AZURE_STORAGE_KEY` and
/// `AZURE_STORAGE_CONNECTION_STRING`.
pub(crate) fn build(cfg: &AzureConfig) -> Result<Built, AzureError> {
    validate_container(&cfg.container)?;
    let mut b = MicrosoftAzureBuilder::from_env();

    // az CLI spellings object_store does not read itself.
    if !has(&b, AzureConfigKey::AccessKey)
        && let Some(key) = env("AZURE_STORAGE_KEY")
    {
        b = b.with_access_key(key);
    }
    let mut scrubber = Scrubber::default();
    let mut emulator = cfg.use_emulator;
    let config_has_credentials =
        cfg.account.is_some() || cfg.access_key.is_some() || cfg.sas_token.is_some();
    if !config_has_credentials && let Some(text) = env("AZURE_STORAGE_CONNECTION_STRING") {
        scrubber.add(&text);
        let cs = ConnectionString::parse(&text)?;
        emulator |= cs.development;
        b = with_connection_string(b, cs, cfg);
    }
    b = with_config_credentials(b, cfg);
    emulator |= b
        .get_config_value(&AzureConfigKey::UseEmulator)
        .is_some_and(|v| v == "true");

    let endpoint = cfg
        .endpoint
        .clone()
        .or_else(|| b.get_config_value(&AzureConfigKey::Endpoint));
    b = with_endpoint(b, emulator, endpoint);
    if !emulator && !has(&b, AzureConfigKey::AccountName) {
        return Err(config_error(
            "no storage account: set `account` in [azure] or AZURE_STORAGE_ACCOUNT_NAME \
             (or AZURE_STORAGE_CONNECTION_STRING), or `use_emulator = true` for Azurite",
        ));
    }
    scrub_secrets(&b, &mut scrubber);

    let retry = RetryConfig {
        max_retries: cfg.max_retries,
        ..RetryConfig::default()
    };
    let store = b
        .with_container_name(&cfg.container)
        .with_retry(retry)
        .build()
        .map_err(|e| StoreError::Client {
            section: "azure",
            message: scrubber.scrub(&e.to_string()),
        })?;
    Ok(Built {
        store,
        scrubber,
        emulator,
    })
}

fn has(b: &MicrosoftAzureBuilder, key: AzureConfigKey) -> bool {
    b.get_config_value(&key).is_some_and(|v| !v.is_empty())
}

/// The parts of `AZURE_STORAGE_CONNECTION_STRING` (the `development` flag
/// is the caller's); an `endpoint` in the config file still wins.
fn with_connection_string(
    mut b: MicrosoftAzureBuilder,
    cs: ConnectionString,
    cfg: &AzureConfig,
) -> MicrosoftAzureBuilder {
    if let Some(account) = cs.account {
        b = b.with_account(account);
    }
    if let Some(key) = cs.key {
        b = b.with_access_key(key);
    }
    if let Some(sas) = cs.sas {
        b = b.with_config(AzureConfigKey::SasKey, sas);
    }
    if let Some(endpoint) = cs.blob_endpoint
        && cfg.endpoint.is_none()
    {
        b = b.with_endpoint(endpoint);
    }
    b
}

/// The config file wins; a credential named there is the one used.
fn with_config_credentials(
    mut b: MicrosoftAzureBuilder,
    cfg: &AzureConfig,
) -> MicrosoftAzureBuilder {
    if let Some(account) = &cfg.account {
        b = b.with_account(account);
    }
    if let Some(key) = &cfg.access_key {
        b = b
            .with_access_key(key.expose_secret())
            .with_config(AzureConfigKey::CredentialType, "access_key");
    } else if let Some(sas) = &cfg.sas_token {
        b = b
            .with_config(AzureConfigKey::SasKey, sas.expose_secret())
            .with_config(AzureConfigKey::CredentialType, "sas_token");
    }
    b
}

fn with_endpoint(
    mut b: MicrosoftAzureBuilder,
    emulator: bool,
    endpoint: Option<String>,
) -> MicrosoftAzureBuilder {
    match (emulator, endpoint) {
        (true, Some(endpoint)) => {
            // An explicit emulator address: talk to it as an ordinary
            // account at that endpoint (object_store's emulator mode only
            // reads AZURITE_BLOB_STORAGE_URL).
            b = b.with_use_emulator(false).with_endpoint(endpoint.clone());
            if !has(&b, AzureConfigKey::AccountName) {
                b = b.with_account(AZURITE_ACCOUNT);
            }
            if !has(&b, AzureConfigKey::AccessKey) && !has(&b, AzureConfigKey::SasKey) {
                b = b.with_access_key(AZURITE_ACCOUNT_KEY);
            }
            if endpoint.starts_with("http://") {
                b = b.with_config(AzureConfigKey::Client(ClientConfigKey::AllowHttp), "true");
            }
        }
        (true, None) => b = b.with_use_emulator(true),
        (false, Some(endpoint)) => {
            b = b.with_endpoint(endpoint.clone());
            if endpoint.starts_with("http://") {
                b = b.with_config(AzureConfigKey::Client(ClientConfigKey::AllowHttp), "true");
            }
        }
        (false, None) => {}
    }
    b
}

/// Every secret the client will hold, so no error message echoes one.
fn scrub_secrets(b: &MicrosoftAzureBuilder, scrubber: &mut Scrubber) {
    for key in [
        AzureConfigKey::AccessKey,
        AzureConfigKey::SasKey,
        AzureConfigKey::ClientSecret,
        AzureConfigKey::Token,
        AzureConfigKey::FabricSessionToken,
    ] {
        if let Some(secret) = b.get_config_value(&key) {
            scrubber.add(&secret);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_account_key_connection_strings() {
        let cs = ConnectionString::parse(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=abc/def==;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(cs.account.as_deref(), Some("acme"));
        assert_eq!(cs.key.as_deref(), Some("abc/def=="));
        assert_eq!(
            cs.blob_endpoint.as_deref(),
            Some("https://acme.blob.core.windows.net")
        );
        assert!(!format!("{cs:?}").contains("abc/def"));
    }

    #[test]
    fn parses_sas_and_development_connection_strings() {
        let cs = ConnectionString::parse(
            "BlobEndpoint=https://acme.blob.core.windows.net/;SharedAccessSignature=sv=2024&sig=xyz%3D",
        )
        .unwrap();
        assert_eq!(cs.sas.as_deref(), Some("sv=2024&sig=xyz%3D"));
        assert_eq!(
            cs.blob_endpoint.as_deref(),
            Some("https://acme.blob.core.windows.net/")
        );
        assert!(
            ConnectionString::parse("UseDevelopmentStorage=true")
                .unwrap()
                .development
        );
        assert!(ConnectionString::parse("garbage").is_err());
    }

    #[test]
    fn container_names_follow_azure_rules() {
        assert!(validate_container("db-backups").is_ok());
        for bad in ["", "ab", "DB", "a--b", "-ab", "ab-", "a_b"] {
            assert!(validate_container(bad).is_err(), "{bad}");
        }
    }
}
