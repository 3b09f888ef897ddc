//! Settings → object_store client: `[s3]` first, then object_store's own
//! `AWS_*` variables, then a shared credentials profile (`AWS_PROFILE`).

use std::path::PathBuf;

use object_store::ClientOptions;
use object_store::RetryConfig;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};

use backup_object_store::{Scrubber, StoreError};
use secrecy::ExposeSecret;

use crate::config::S3Config;

fn config_error(message: impl Into<String>) -> StoreError {
    StoreError::Config {
        section: "s3",
        message: message.into(),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Everything [`build`] decided.
pub(crate) struct Built {
    pub store: AmazonS3,
    pub scrubber: Scrubber,
    pub region: String,
    /// `https://host/bucket` (path style) or `https://bucket.host`.
    pub bucket_url: String,
    pub client_options: ClientOptions,
}

/// Check an S3 bucket name: 3–63 lowercase letters, digits, dots and
/// hyphens, starting and ending with a letter or digit.
pub(crate) fn validate_bucket(name: &str) -> Result<(), StoreError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(config_error(format!(
            "bucket {name:?} is not a valid S3 bucket name \
             (3-63 lowercase letters, digits, dots and hyphens)"
        )))
    }
}

/// One `[section]` of an INI-style AWS file, as `key = value` pairs.
fn ini_section(text: &str, wanted: &[String]) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted.iter().any(|w| w == name.trim());
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

fn aws_file(var: &str, name: &str) -> Option<String> {
    let path = env(var)
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)))?;
    std::fs::read_to_string(path).ok()
}

/// Credentials and region of the shared profile (`AWS_PROFILE`, else
/// `default`) in `~/.aws/credentials` and `~/.aws/config`, as the AWS CLI
/// reads them. object_store reads only environment variables.
fn apply_profile(mut b: AmazonS3Builder) -> AmazonS3Builder {
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let has = |b: &AmazonS3Builder, k| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    if !has(&b, AmazonS3ConfigKey::AccessKeyId)
        && let Some(text) = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
    {
        for (k, v) in ini_section(&text, std::slice::from_ref(&profile)) {
            b = match k.as_str() {
                "aws_access_key_id" => b.with_access_key_id(v),
                "aws_secret_access_key" => b.with_secret_access_key(v),
                "aws_session_token" => b.with_token(v),
                _ => b,
            };
        }
    }
    if !has(&b, AmazonS3ConfigKey::Region)
        && let Some(text) = aws_file("AWS_CONFIG_FILE", "config")
    {
        let names = [format!("profile {profile}"), profile.clone()];
        if let Some((_, region)) = ini_section(&text, &names)
            .into_iter()
            .find(|(k, _)| k == "region")
        {
            b = b.with_region(region);
        }
    }
    b
}

/// Build the object_store client for `cfg`. No network.
pub(crate) fn build(cfg: &S3Config) -> Result<Built, StoreError> {
    validate_bucket(&cfg.bucket)?;
    let mut b = AmazonS3Builder::from_env();
    // The config file wins; a key named there is the one used.
    if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
        b = b
            .with_access_key_id(id)
            .with_secret_access_key(secret.expose_secret());
    } else if cfg.access_key_id.is_some() || cfg.secret_access_key.is_some() {
        return Err(config_error(
            "access_key_id and secret_access_key go together (better: AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY in the environment)",
        ));
    }
    let mut b = apply_profile(b);
    if let Some(region) = &cfg.region {
        b = b.with_region(region);
    }
    if b.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
        b = b.with_region("us-east-1");
    }
    if let Some(endpoint) = &cfg.endpoint {
        b = b.with_endpoint(endpoint);
    }
    let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if let Some(endpoint) = &endpoint
        && endpoint.starts_with("http://")
    {
        if !cfg.allow_http {
            return Err(config_error(format!(
                "endpoint {endpoint} is plain HTTP: credentials and backups would cross the \
                 network unencrypted; use https, or set allow_http = true for a server on this host"
            )));
        }
        b = b.with_allow_http(true);
    }

    let mut scrubber = Scrubber::default();
    for key in [AmazonS3ConfigKey::SecretAccessKey, AmazonS3ConfigKey::Token] {
        if let Some(secret) = b.get_config_value(&key) {
            scrubber.add(&secret);
        }
    }

    let region = b
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".into());
    let virtual_hosted = b
        .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| v == "true");
    // The same URL object_store uses, for the one call it lacks
    // (ListMultipartUploads).
    let bucket_url = match (&endpoint, virtual_hosted) {
        (Some(e), true) => e.trim_end_matches('/').to_string(),
        (Some(e), false) => format!("{}/{}", e.trim_end_matches('/'), cfg.bucket),
        (None, true) => format!("https://{}.s3.{region}.amazonaws.com", cfg.bucket),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{}", cfg.bucket),
    };
    let client_options = ClientOptions::new().with_allow_http(cfg.allow_http);

    let retry = RetryConfig {
        max_retries: cfg.max_retries,
        ..RetryConfig::default()
    };
    let store = b
        .with_bucket_name(&cfg.bucket)
        .with_retry(retry)
        .build()
        .map_err(|e| StoreError::Client {
            section: "s3",
            message: scrubber.scrub(&e.to_string()),
        })?;
    Ok(Built {
        store,
        scrubber,
        region,
        bucket_url,
        client_options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["db-backups", "a.b.c", "abc"] {
            assert!(validate_bucket(good).is_ok(), "{good}");
        }
        for bad in ["", "ab", "DB", "a..b", "-ab", "ab-", "a_b"] {
            assert!(validate_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_one_profile_section() {
        let text = "[default]\naws_access_key_id = A\n\n[profile prod]\nregion = eu-west-1\n[prod]\naws_access_key_id = B\n";
        assert_eq!(
            ini_section(text, &["prod".into()]),
            vec![("aws_access_key_id".into(), "B".into())]
        );
        assert_eq!(
            ini_section(text, &["profile prod".into()]),
            vec![("region".into(), "eu-west-1".into())]
        );
    }
}
