//! Retry policy: capped exponential backoff with full jitter, `Retry-After`,
//! and a shared retry budget, as a tower [`Policy`].
//!
//! Retried: 429, 5xx, timeouts and connection errors. Not retried: anything
//! else, which `import` and `engage` handle: a 400 is answered per record
//! (or, refused as a whole, split until the refused record stands alone),
//! 401/403 need new credentials, 413 needs a smaller request. A request that is not
//! idempotent (`/engage` with `$add` or `$append`) is retried only when
//! Mixpanel cannot have applied it: a 429 or a refused connection.
//!
//! Timing: attempt `n` (counting retries from 1) waits a uniformly random
//! delay in `[0, min(max_delay, initial_delay * 2^(n-1))]`, or at least the
//! `Retry-After` Mixpanel sent, capped at `max_delay`. The policy never
//! sleeps after the last attempt. The worst case for one request is
//! therefore `(max_retries + 1) * request_timeout + max_retries * max_delay`;
//! a caller that leases work around a request (a durable queue handing a
//! batch to one worker at a time) must lease for longer than that. A longer `Retry-After` is left to the
//! caller, through the error's `retry_after`.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rand::Rng as _;
use tower::retry::Policy;
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::transport::{BoxError, HttpRequest, HttpResponse};

/// How the client retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryParams {
    /// The first backoff ceiling; doubles each retry. Mixpanel advises 2 s.
    pub initial_delay: Duration,
    /// The largest backoff ceiling. Mixpanel advises 60 s.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Retries allowed beyond `retry_ratio` of recent requests, per second.
    pub min_retries_per_sec: u32,
    /// Fraction of recent requests that may be retried (the shared budget
    /// that stops retries from multiplying load during an outage).
    pub retry_ratio: f32,
}

impl Default for RetryParams {
    fn default() -> RetryParams {
        RetryParams {
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            max_retries: 8,
            min_retries_per_sec: 10,
            retry_ratio: 0.5,
        }
    }
}

impl RetryParams {
    /// Millisecond delays, for tests.
    pub fn for_test() -> RetryParams {
        RetryParams {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(40),
            max_retries: 4,
            min_retries_per_sec: 1000,
            retry_ratio: 1.0,
        }
    }

    /// The backoff before retry number `retry` (from 1), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let ceiling = self
            .initial_delay
            .saturating_mul(factor)
            .min(self.max_delay);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ceiling_ms))
    }
}

/// The tower policy; one clone per request, sharing the budget.
#[derive(Clone)]
pub(crate) struct RetryPolicy {
    params: Arc<RetryParams>,
    budget: Arc<TpsBudget>,
    /// Attempts made for the current request.
    attempts: u32,
}

/// The request failed in transport on every attempt.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Exhausted {
    pub(crate) attempts: u32,
    pub(crate) message: String,
}

impl RetryPolicy {
    pub(crate) fn new(params: RetryParams) -> RetryPolicy {
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            params.min_retries_per_sec,
            params.retry_ratio,
        );
        RetryPolicy {
            params: Arc::new(params),
            budget: Arc::new(budget),
            attempts: 0,
        }
    }
}

/// Whether a status is worth retrying.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in seconds; HTTP dates are not used by Mixpanel and are ignored.
pub(crate) fn retry_after(response: &HttpResponse) -> Option<Duration> {
    let value = response.headers.get(http::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(3600)))
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
                let is_safe =
                    response.status == StatusCode::TOO_MANY_REQUESTS || request.retry_when_unsure;
                if !is_retryable_status(response.status) || !is_safe {
                    return None;
                }
                (
                    format!("HTTP {}", response.status.as_u16()),
                    retry_after(response),
                )
            }
            Err(error) => {
                let never_sent = error
                    .downcast_ref::<reqwest::Error>()
                    .is_some_and(reqwest::Error::is_connect);
                if !never_sent && !request.retry_when_unsure {
                    *result = Err(Box::new(Exhausted {
                        attempts: self.attempts,
                        message: crate::transport::describe(&**error),
                    }));
                    return None;
                }
                (crate::transport::describe(&**error), None)
            }
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
                "Giving up on Mixpanel request."
            );
            if let Err(error) = result {
                *result = Err(Box::new(Exhausted {
                    attempts: self.attempts,
                    message: crate::transport::describe(&**error),
                }));
            }
            return None;
        }
        // `Retry-After` is honoured up to `max_delay`, so that one request
        // never outlasts the lease arithmetic of its caller (see the module
        // doc); a longer wait is the caller's, with the error's
        // `retry_after`.
        let delay = self
            .params
            .backoff(self.attempts)
            .max(server_delay.unwrap_or_default().min(self.params.max_delay));
        tracing::debug!(
            endpoint = request.endpoint,
            attempt = self.attempts,
            reason = %reason,
            delay_ms = delay.as_millis() as u64,
            "Retrying Mixpanel request."
        );
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &HttpRequest) -> Option<HttpRequest> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests;
