//! The client's errors, each saying what the caller can do about it.

use std::time::Duration;

/// Why a request to Mixpanel did not succeed. Per-record failures inside an
/// accepted `/import` or `/engage` request are not errors: see
/// [`crate::ImportResult`] and [`crate::EngageResult`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Mixpanel refused the credentials (401/403). Retrying will not help:
    /// fix the credentials or the service account's role, then resend.
    #[error(
        "Mixpanel refused the credentials (HTTP {status}): {message}; check the service account, its role and the project id"
    )]
    Auth {
        /// 401 or 403.
        status: u16,
        /// Mixpanel's message.
        message: String,
    },
    /// `/engage` refused the project token (401/403). The token, in each
    /// update as `$token`, is the only credential `/engage` takes (no
    /// service account or API secret is sent there): check
    /// [`crate::ClientBuilder::project_token`] against the project's
    /// settings, then resend. Never retried.
    #[error(
        "Mixpanel refused the project token (HTTP {status}): {message}; check the project token (the project settings' token, given to ClientBuilder::project_token), the only credential /engage takes"
    )]
    TokenRefused {
        /// 401 or 403.
        status: u16,
        /// Mixpanel's message.
        message: String,
    },
    /// Mixpanel refused the request for good (a 4xx other than 401, 403,
    /// 413 and 429, or a 200 whose body reports a failure). Resending it
    /// unchanged will fail again.
    #[error("Mixpanel rejected the request (HTTP {status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Mixpanel's message.
        message: String,
    },
    /// Mixpanel stayed unavailable or rate-limited through every retry
    /// (429, 5xx). Resending later is expected to work.
    #[error("Mixpanel kept answering HTTP {status} after {attempts} attempts: {message}")]
    Unavailable {
        /// The last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// Mixpanel's last message.
        message: String,
        /// The last `Retry-After`, if Mixpanel sent one.
        retry_after: Option<Duration>,
    },
    /// No answer through every retry: timeouts or connection failures.
    #[error("no answer from Mixpanel after {attempts} attempts: {message}")]
    Transport {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// One event is larger than Mixpanel accepts (1 MB uncompressed); it
    /// can never be imported as it is.
    #[error("event of {bytes} bytes is over the {limit_bytes}-byte limit for one event")]
    EventTooLarge {
        /// The event's size.
        bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// A single event is still too large for Mixpanel's request limit (413).
    #[error("Mixpanel refused a single event as too large (HTTP 413): {message}")]
    TooLarge {
        /// Mixpanel's message.
        message: String,
    },
    /// Mixpanel answered with something this client cannot read.
    #[error("unexpected answer from Mixpanel (HTTP {status}): {message}")]
    InvalidResponse {
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        message: String,
    },
    /// The client is configured wrongly (e.g. no project id where one is
    /// needed); nothing was sent.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether sending the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Transport { .. })
    }

    /// How long Mixpanel asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the credentials (or, for `/engage`, the project token) are
    /// at fault.
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Auth { .. } | Error::TokenRefused { .. })
    }
}
