//! The HTTP transport: one tower stack around reqwest, shared by every API.
//!
//! Layers, outermost first: retry ([`crate::retry`]) → per-attempt timeout →
//! concurrency limit → reqwest. The concurrency limit sits inside the retry
//! so that a request waiting out its backoff holds no slot.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use tower::limit::ConcurrencyLimit;
use tower::retry::Retry;
use tower::timeout::Timeout;
use tower::{Service, ServiceExt as _};

use crate::Error;
use crate::retry::{Exhausted, RetryParams, RetryPolicy};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request as the transport sends it; cheap to clone for retries.
#[derive(Debug, Clone)]
pub(crate) struct HttpRequest {
    /// For logs and spans: `import`, `engage`, `cohorts_list`, `cohort_members`.
    pub(crate) endpoint: &'static str,
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Whether the request may be sent again after a failure that leaves it
    /// unknown whether Mixpanel applied it (5xx, timeout). True for
    /// idempotent requests; 429s and refused connections are always retried.
    pub(crate) retry_when_unsure: bool,
}

/// A response with its body read.
#[derive(Debug, Clone)]
pub(crate) struct HttpResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Attempts it took, set by the retry policy.
    pub(crate) attempts: u32,
}

impl HttpResponse {
    /// The body as text, shortened for error messages.
    pub(crate) fn message(&self) -> String {
        message_of(&self.body)
    }

    /// The error for a response that is not a success, for statuses every
    /// API treats alike (callers handle 400 and 413 first where they differ).
    pub(crate) fn into_error(self) -> Error {
        let status = self.status.as_u16();
        let message = self.message();
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Auth { status, message },
            status_code if crate::retry::is_retryable_status(status_code) => Error::Unavailable {
                status,
                attempts: self.attempts,
                retry_after: crate::retry::retry_after(&self),
                message,
            },
            _ => Error::Rejected { status, message },
        }
    }
}

/// The longest message kept from an answer, in characters: what Mixpanel
/// (or a proxy) answers ends up in errors, logs and dead letters.
const MAX_MESSAGE_CHARS: usize = 300;

/// An answer's message: its JSON `error`, or else its text, trimmed and
/// cut at [`MAX_MESSAGE_CHARS`] (then marked with `…`).
pub(crate) fn message_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Option<String>,
    }
    let from_json = match serde_json::from_slice(body) {
        Ok(ErrorBody { error: Some(error) }) => Some(error),
        _ => None,
    };
    let text = match &from_json {
        Some(error) => std::borrow::Cow::Borrowed(error.as_str()),
        None => String::from_utf8_lossy(body),
    };
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The reqwest client as a tower service.
#[derive(Clone)]
struct ReqwestService {
    client: reqwest::Client,
}

impl Service<HttpRequest> for ReqwestService {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let response = client
                .request(request.method, &request.url)
                .headers(request.headers)
                .body(request.body)
                .send()
                .await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_capped(response, MAX_RESPONSE_BYTES).await?;
            Ok(HttpResponse {
                status,
                headers,
                body,
                attempts: 1,
            })
        })
    }
}

/// The largest answer read from Mixpanel: a page of cohort members with
/// many properties is the largest expected, far below this.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// An answer larger than [`MAX_RESPONSE_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the answer is over the {max_bytes}-byte limit")]
pub(crate) struct ResponseTooLarge {
    max_bytes: usize,
}

/// Reads a response body, refusing one over `max_bytes` instead of
/// buffering whatever a server (or a proxy) sends.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Bytes, BoxError> {
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Err(Box::new(ResponseTooLarge { max_bytes }));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max_bytes {
            return Err(Box::new(ResponseTooLarge { max_bytes }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The shared, cloneable transport.
#[derive(Clone)]
pub(crate) struct Transport {
    service: Retry<RetryPolicy, Timeout<ConcurrencyLimit<ReqwestService>>>,
}

impl Transport {
    pub(crate) fn new(
        client: reqwest::Client,
        retry: RetryParams,
        request_timeout: Duration,
        max_concurrent_requests: usize,
    ) -> Transport {
        let service = tower::ServiceBuilder::new()
            .retry(RetryPolicy::new(retry))
            .timeout(request_timeout)
            .concurrency_limit(max_concurrent_requests.max(1))
            .service(ReqwestService { client });
        Transport { service }
    }

    /// Sends a request with retries; transport failures become [`Error::Transport`].
    pub(crate) async fn send(&self, request: HttpRequest) -> Result<HttpResponse, Error> {
        match self.service.clone().oneshot(request).await {
            Ok(response) => Ok(response),
            Err(error) => Err(match error.downcast::<Exhausted>() {
                Ok(exhausted) => Error::Transport {
                    attempts: exhausted.attempts,
                    message: exhausted.message,
                },
                Err(other) => Error::Transport {
                    attempts: 1,
                    message: describe(&*other),
                },
            }),
        }
    }
}

/// An error with its causes, `a: b: c`.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_the_json_error_or_the_text_cut_at_300_characters() {
        assert_eq!(
            message_of(br#"{"error":"  Invalid credentials "}"#),
            "Invalid credentials"
        );
        assert_eq!(
            message_of(b" <html>Bad Gateway</html>\n"),
            "<html>Bad Gateway</html>"
        );
        let long_error = format!(r#"{{"error":"{}"}}"#, "é".repeat(5000));
        assert_eq!(
            message_of(long_error.as_bytes()),
            format!("{}…", "é".repeat(300))
        );
        let long_text = "x".repeat(301);
        assert_eq!(
            message_of(long_text.as_bytes()),
            format!("{}…", "x".repeat(300))
        );
        assert_eq!(message_of("x".repeat(300).as_bytes()), "x".repeat(300));
        assert_eq!(message_of(b"\xff ok"), "\u{fffd} ok");
    }
}
