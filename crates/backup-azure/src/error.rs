//! Errors: building the sink ([`AzureError`]) and mapping object_store
//! failures to [`SinkError`] without leaking credentials.

use backup_core::sink::SinkError;

use crate::scrub::Scrubber;

/// Why an [`AzureSink`](crate::AzureSink) could not be built. Messages never
/// carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// Missing or contradictory settings.
    #[error("[azure] {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// object_store rejected the settings (already scrubbed of secrets).
    #[error("[azure] cannot configure the Azure client: {message}")]
    Client {
        /// The cause, scrubbed.
        message: String,
    },
    /// The sink's I/O runtime could not start.
    #[error("cannot start the Azure I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Map an object_store error for operation `op` on `key`.
pub(crate) fn sink_error(
    scrubber: &Scrubber,
    op: &'static str,
    key: &str,
    err: object_store::Error,
) -> SinkError {
    use object_store::Error as E;
    let key = key.to_string();
    let detail = scrubber.scrub(&err.to_string());
    // Listing errors arrive as `Generic`, without the status mapping the
    // other calls get: recognise them by status line or Azure error code.
    let auth_failure = matches!(err, E::PermissionDenied { .. } | E::Unauthenticated { .. })
        || [
            "403 Forbidden",
            "401 Unauthorized",
            "AuthorizationFailure",
            "AuthenticationFailed",
        ]
        .iter()
        .any(|marker| detail.contains(marker));
    if detail.contains("ContainerNotFound") {
        return SinkError::Remote {
            op,
            key,
            message: format!("the container does not exist (create it first): {detail}"),
        };
    }
    if auth_failure {
        return SinkError::Remote {
            op,
            key,
            message: format!(
                "authentication failed: check the storage account name and the access key or \
                 SAS token (AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, \
                 AZURE_STORAGE_SAS_TOKEN or [azure] in the config); server said: {detail}"
            ),
        };
    }
    match err {
        E::NotFound { .. } => SinkError::NotFound { key },
        _ => SinkError::Remote {
            op,
            key,
            message: detail,
        },
    }
}
