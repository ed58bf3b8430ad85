//! The Braze client's errors, each saying what the caller can do about it.
//! Per-object refusals inside an accepted `/users/track` request are not
//! errors: see [`super::TrackOutcome`].

use std::time::Duration;

/// Why a request to Braze did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrazeError {
    /// Braze refused the key (401/403). Retrying will not help: fix the key,
    /// its permissions (`users.track`) or the instance, then resend.
    #[error(
        "Braze refused the API key (HTTP {status}): {message}; check the key, its permissions and the instance"
    )]
    Auth {
        /// 401 or 403.
        status: u16,
        /// Braze's message.
        message: String,
    },
    /// Braze refused the request for good (a 4xx other than 401, 403, 423
    /// and 429). Resending it unchanged will fail again.
    #[error("Braze rejected the request (HTTP {status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Braze's message.
        message: String,
    },
    /// Braze stayed unavailable, locked or rate-limiting through every
    /// retry (423, 429, 5xx). Resending later is expected to work.
    #[error("Braze kept answering HTTP {status} after {attempts} attempts: {message}")]
    Unavailable {
        /// The last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The last `X-Ratelimit-Retry-After` or `Retry-After`, if Braze
        /// sent one.
        retry_after: Option<Duration>,
        /// Braze's last message.
        message: String,
    },
    /// No answer through every retry: timeouts or connection failures.
    #[error("no answer from Braze after {attempts} attempts: {message}")]
    Transport {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// Braze answered with something this client cannot read, or a success
    /// status whose body does not say success.
    #[error("unexpected answer from Braze (HTTP {status}): {message}")]
    InvalidResponse {
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        message: String,
    },
    /// The client or the call is configured wrongly (too many objects, a
    /// partner name unsafe in a URL, an invalid base URL…); nothing was sent.
    #[error("invalid Braze client configuration or request: {0}")]
    Config(String),
}

impl BrazeError {
    /// Whether sending the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BrazeError::Unavailable { .. } | BrazeError::Transport { .. }
        )
    }

    /// How long Braze asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BrazeError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the key is at fault.
    pub fn is_auth(&self) -> bool {
        matches!(self, BrazeError::Auth { .. })
    }

    /// The error with every occurrence of `secrets` cut out of its message.
    pub(crate) fn redact(self, secrets: &[&str]) -> BrazeError {
        let scrub = |message: String| redact(&message, secrets);
        match self {
            BrazeError::Auth { status, message } => BrazeError::Auth {
                status,
                message: scrub(message),
            },
            BrazeError::Rejected { status, message } => BrazeError::Rejected {
                status,
                message: scrub(message),
            },
            BrazeError::Unavailable {
                status,
                attempts,
                retry_after,
                message,
            } => BrazeError::Unavailable {
                status,
                attempts,
                retry_after,
                message: scrub(message),
            },
            BrazeError::Transport { attempts, message } => BrazeError::Transport {
                attempts,
                message: scrub(message),
            },
            BrazeError::InvalidResponse { status, message } => BrazeError::InvalidResponse {
                status,
                message: scrub(message),
            },
            BrazeError::Config(message) => BrazeError::Config(scrub(message)),
        }
    }
}

/// `text` with every occurrence of each secret, raw or JSON-escaped,
/// replaced by `[redacted]`. Empty secrets are skipped.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for &secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
        let quoted = serde_json::to_string(secret).unwrap_or_default();
        let escaped = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        if !escaped.is_empty() && escaped != secret && text.contains(escaped) {
            text = text.replace(escaped, "[redacted]");
        }
    }
    text
}
