//! Errors: building a sink ([`StoreError`]) and mapping object_store
//! failures to [`SinkError`] in the store's own words, without credentials.

use backup_core::sink::SinkError;

use crate::Profile;
use crate::scrub::Scrubber;

/// Why a sink could not be built. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Missing or contradictory settings.
    #[error("[{section}] {message}")]
    Config {
        /// The config section (`azure`, `s3`).
        section: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// object_store rejected the settings (already scrubbed of secrets).
    #[error("[{section}] cannot configure the client: {message}")]
    Client {
        /// The config section (`azure`, `s3`).
        section: &'static str,
        /// The cause, scrubbed.
        message: String,
    },
    /// The sink's I/O runtime could not start.
    #[error("cannot start the {section} I/O runtime: {source}")]
    Runtime {
        /// The config section (`azure`, `s3`).
        section: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Turns object_store errors into [`SinkError`]s for one store: secrets
/// scrubbed, authentication and missing-container failures said plainly.
#[derive(Debug)]
pub(crate) struct ErrorMap {
    pub(crate) scrubber: Scrubber,
    pub(crate) profile: &'static Profile,
}

impl ErrorMap {
    /// Map an object_store error for operation `op` on `key`.
    pub(crate) fn sink_error(
        &self,
        op: &'static str,
        key: &str,
        err: object_store::Error,
    ) -> SinkError {
        use object_store::Error as E;
        let key = key.to_string();
        let detail = self.scrubber.scrub(&err.to_string());
        let p = self.profile;
        // object_store's listing errors arrive as `Generic`, without the
        // status mapping its other calls get: only for those is the status
        // line or the store's error code read from the text.
        let auth_failure = matches!(err, E::PermissionDenied { .. } | E::Unauthenticated { .. })
            || ["403 Forbidden", "401 Unauthorized"]
                .iter()
                .chain(p.auth_markers)
                .any(|marker| detail.contains(marker));
        if p.missing_root_markers.iter().any(|m| detail.contains(m)) {
            return SinkError::MissingRoot {
                op,
                key,
                message: format!(
                    "the {} does not exist (create it first): {detail}",
                    p.root_kind
                ),
            };
        }
        if auth_failure {
            return SinkError::Unauthorized {
                op,
                key,
                message: format!("{}; server said: {detail}", p.auth_hint),
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
}
