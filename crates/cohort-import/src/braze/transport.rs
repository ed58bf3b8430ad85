//! The HTTP transport: one tower stack around reqwest, shared by every
//! endpoint and every clone of the client.
//!
//! Layers, outermost first: retry (capped exponential backoff with full
//! jitter, Braze's `Retry-After`, a shared retry budget) → concurrency limit
//! → the sender, which takes a slot in the rate limiter, then sends with the
//! per-attempt timeout and reports Braze's rate-limit headers back to the
//! limiter. The concurrency slot is taken before the rate slot, so the start
//! the limiter records is the real one; both sit inside the retry, so every
//! attempt counts and a request waiting out its backoff holds nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use mixpanel_client::RetryParams;
use tower::limit::ConcurrencyLimit;
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::retry::{Policy, Retry};
use tower::{Service, ServiceExt as _};

use super::BrazeError;
use super::error::redact;
use super::limiter::{RateLimiter, retry_after};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Characters of a response body kept in an error message.
const MAX_MESSAGE_CHARS: usize = 300;

/// A POST as the transport sends it; cheap to clone for retries. `Debug`
/// shows neither the headers nor the body: the partner API's keys travel
/// in the body.
#[derive(Clone)]
pub(crate) struct HttpRequest {
    /// For logs: `users_track`, `partner_cohort`, `partner_cohort_users`.
    pub(crate) endpoint: &'static str,
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("endpoint", &self.endpoint)
            .field("url", &self.url)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
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
    /// Braze's message (`message`, plus `errors` when present), else the
    /// body text; secrets cut out first, then shortened.
    pub(crate) fn message(&self, secrets: &[&str]) -> String {
        let text = match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::Object(object)) => {
                match (object.get("message"), object.get("errors")) {
                    (Some(serde_json::Value::String(message)), None) => message.clone(),
                    (Some(serde_json::Value::String(message)), Some(errors)) => {
                        format!("{message}: {errors}")
                    }
                    _ => String::from_utf8_lossy(&self.body).into_owned(),
                }
            }
            _ => String::from_utf8_lossy(&self.body).into_owned(),
        };
        let text = redact(text.trim(), secrets);
        match text.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        }
    }

    /// The error for a response that is not a 2xx.
    pub(crate) fn into_error(self, secrets: &[&str]) -> BrazeError {
        let status = self.status.as_u16();
        let message = self.message(secrets);
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                BrazeError::Auth { status, message }
            }
            code if is_retryable_status(code) => BrazeError::Unavailable {
                status,
                attempts: self.attempts,
                retry_after: retry_after(&self.headers),
                message,
            },
            _ => BrazeError::Rejected { status, message },
        }
    }
}

/// Whether a status is worth retrying: 423 (resource locked), 429, 5xx.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::LOCKED
        || status.is_server_error()
}

/// An attempt that got no answer within the timeout.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
struct TimedOut(Duration);

/// Sends one attempt: a rate-limiter slot, then reqwest under the timeout.
#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    limiter: Arc<RateLimiter>,
    timeout: Duration,
}

impl Service<HttpRequest> for Sender {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let Sender {
            client,
            limiter,
            timeout,
        } = self.clone();
        Box::pin(async move {
            limiter.acquire().await;
            let endpoint = request.endpoint;
            let exchange = async {
                let response = client
                    .request(Method::POST, &request.url)
                    .headers(request.headers)
                    .body(request.body)
                    .send()
                    .await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = read_capped(response).await?;
                Ok::<_, BoxError>(HttpResponse {
                    status,
                    headers,
                    body,
                    attempts: 1,
                })
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(response)) => {
                    limiter.observe(endpoint, response.status, &response.headers);
                    Ok(response)
                }
                Ok(Err(error)) => Err(error),
                Err(_) => Err(TimedOut(timeout).into()),
            }
        })
    }
}

/// The largest answer read from Braze (its answers are small JSON).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// An answer larger than [`MAX_RESPONSE_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("Braze's answer is over the {MAX_RESPONSE_BYTES}-byte limit")]
struct ResponseTooLarge;

/// Reads a response body, refusing one over [`MAX_RESPONSE_BYTES`] instead
/// of buffering whatever a server (or a proxy) sends.
async fn read_capped(mut response: reqwest::Response) -> Result<Bytes, BoxError> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_RESPONSE_BYTES as u64)
    {
        return Err(Box::new(ResponseTooLarge));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Box::new(ResponseTooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The request failed in transport on every attempt.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Exhausted {
    attempts: u32,
    message: String,
}

/// The tower retry policy; one clone per request, sharing the budget.
#[derive(Clone)]
struct RetryPolicy {
    params: Arc<RetryParams>,
    budget: Arc<TpsBudget>,
    /// Attempts made for the current request.
    attempts: u32,
}

impl Policy<HttpRequest, HttpResponse, BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut HttpRequest,
        result: &mut Result<HttpResponse, BoxError>,
    ) -> Option<Self::Future> {
        self.attempts += 1;
        if self.attempts == 1 {
            self.budget.deposit();
        }
        let (reason, server_delay) = match result {
            Ok(response) => {
                response.attempts = self.attempts;
                if !is_retryable_status(response.status) {
                    return None;
                }
                (
                    format!("HTTP {}", response.status.as_u16()),
                    retry_after(&response.headers),
                )
            }
            Err(error) => (describe(&**error), None),
        };
        let out_of_attempts = self.attempts > self.params.max_retries;
        // Per-request events are DEBUG: the caller gets the error and knows
        // how to report an outage without a line per request.
        if out_of_attempts || !self.budget.withdraw() {
            tracing::debug!(
                endpoint = request.endpoint,
                attempts = self.attempts,
                reason = %reason,
                out_of_budget = !out_of_attempts,
                "Giving up on Braze request."
            );
            if result.is_err() {
                *result = Err(Box::new(Exhausted {
                    attempts: self.attempts,
                    message: reason,
                }));
            }
            return None;
        }
        let delay = self
            .params
            .backoff(self.attempts)
            .max(server_delay.unwrap_or_default());
        tracing::debug!(
            endpoint = request.endpoint,
            attempt = self.attempts,
            reason = %reason,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "Retrying Braze request."
        );
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &HttpRequest) -> Option<HttpRequest> {
        Some(request.clone())
    }
}

/// The shared, cloneable transport.
#[derive(Clone)]
pub(crate) struct Transport {
    service: Retry<RetryPolicy, ConcurrencyLimit<Sender>>,
}

impl Transport {
    /// The stack; `retry.retry_ratio` must be within `0.0..=1000.0`.
    pub(crate) fn new(
        client: reqwest::Client,
        retry: RetryParams,
        request_timeout: Duration,
        max_concurrent_requests: usize,
        limiter: Arc<RateLimiter>,
    ) -> Transport {
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            retry.min_retries_per_sec,
            retry.retry_ratio,
        );
        let policy = RetryPolicy {
            params: Arc::new(retry),
            budget: Arc::new(budget),
            attempts: 0,
        };
        let service = tower::ServiceBuilder::new()
            .retry(policy)
            .concurrency_limit(max_concurrent_requests.max(1))
            .service(Sender {
                client,
                limiter,
                timeout: request_timeout,
            });
        Transport { service }
    }

    /// Sends a request with retries; transport failures become
    /// [`BrazeError::Transport`]. Statuses are the caller's to judge.
    pub(crate) async fn send(&self, request: HttpRequest) -> Result<HttpResponse, BrazeError> {
        match self.service.clone().oneshot(request).await {
            Ok(response) => Ok(response),
            Err(error) => Err(match error.downcast::<Exhausted>() {
                Ok(exhausted) => BrazeError::Transport {
                    attempts: exhausted.attempts,
                    message: exhausted.message,
                },
                Err(other) => BrazeError::Transport {
                    attempts: 1,
                    message: describe(&*other),
                },
            }),
        }
    }
}

/// An error with its causes, `a: b: c`.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
