//! The client-side rate limiter: a rolling window of request start times,
//! and the pauses Braze asks for, shared by every clone of a
//! [`super::BrazeClient`].
//!
//! Each attempt reserves its start time under one short lock: now, or
//! later when `max_requests` starts already lie within the window before
//! it, or when Braze asked for a pause. Reserved times only grow, so the
//! window is a `VecDeque` of instants, pruned from the front; a reservation
//! is O(1) amortized and waiters do not race each other when a slot frees
//! up, which keeps the limiter cheap at thousands of requests per second.
//! The window is counted [`WINDOW_MARGIN`] longer than configured, to
//! absorb jitter between our clock and Braze's.
//!
//! A reservation whose caller goes away (a dropped future) is not handed
//! back; that errs towards sending less. A pause Braze asks for after a
//! request reserved its slot moves the request behind the pause.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

/// Added to every window, for clock jitter between us and Braze.
pub(crate) const WINDOW_MARGIN: Duration = Duration::from_millis(100);
/// The longest pause Braze's headers can impose.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Above this, `X-RateLimit-Reset` is a UNIX time rather than seconds.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// The most requests the client starts within any rolling window, retries
/// included, across all clones. The default is Braze's `/users/track`
/// limit: 3000 requests per 3 seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests started within any `window`; at least 1.
    pub max_requests: u32,
    /// The rolling window (counted 100 ms longer, for clock jitter).
    pub window: Duration,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            max_requests: 3000,
            window: Duration::from_secs(3),
        }
    }
}

/// Enforces a [`RateLimit`] and Braze's pauses for every request of one
/// client.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    max_requests: usize,
    /// The configured window plus [`WINDOW_MARGIN`].
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Start times of requests within the window, and reservations beyond
    /// now; never decreasing.
    starts: VecDeque<Instant>,
    /// No request starts before this (a pause Braze asked for).
    not_before: Option<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> RateLimiter {
        let max_requests = usize::try_from(limit.max_requests.max(1)).unwrap_or(usize::MAX);
        RateLimiter {
            max_requests,
            window: limit.window.saturating_add(WINDOW_MARGIN),
            state: Mutex::new(State {
                starts: VecDeque::with_capacity(max_requests.min(65_536)),
                not_before: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until one more request may start, and counts it as started.
    pub(crate) async fn acquire(&self) {
        loop {
            let now = Instant::now();
            let start = self.reserve(now);
            if start == now {
                return;
            }
            tokio::time::sleep_until(start).await;
            // A pause that came while we slept moves us behind it.
            if self.state().not_before.is_none_or(|pause| pause <= start) {
                return;
            }
        }
    }

    /// Reserves the earliest start at or after `now` that keeps to the
    /// window and Braze's pause.
    fn reserve(&self, now: Instant) -> Instant {
        let mut state = self.state();
        while state
            .starts
            .front()
            .is_some_and(|&oldest| oldest + self.window <= now)
        {
            state.starts.pop_front();
        }
        let mut start = now.max(state.not_before.unwrap_or(now));
        let len = state.starts.len();
        if len >= self.max_requests {
            start = start.max(state.starts[len - self.max_requests] + self.window);
        }
        state.starts.push_back(start);
        start
    }

    /// Holds every request until `until` (unless already held longer).
    /// Returns whether the pause grew.
    pub(crate) fn pause_until(&self, until: Instant) -> bool {
        let mut state = self.state();
        if state.not_before.is_some_and(|pause| pause >= until) {
            return false;
        }
        state.not_before = Some(until);
        true
    }

    /// Applies the pause a response asks for: `X-Ratelimit-Retry-After` or
    /// `Retry-After` on a 429, `X-RateLimit-Reset` when
    /// `X-RateLimit-Remaining` is 0.
    pub(crate) fn observe(&self, endpoint: &'static str, status: StatusCode, headers: &HeaderMap) {
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after(headers))
            .flatten();
        let exhausted =
            header_number(headers, "x-ratelimit-remaining").is_some_and(|left| left < 1.0);
        let reset = exhausted
            .then(|| reset_delay(headers, SystemTime::now()))
            .flatten();
        let Some(pause) = retry_after.max(reset).filter(|pause| !pause.is_zero()) else {
            return;
        };
        if self.pause_until(Instant::now() + pause) {
            tracing::info!(
                endpoint,
                status = status.as_u16(),
                pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                "Braze asked for a pause; holding every request of the client."
            );
        }
    }
}

/// A header as a non-negative number of seconds (fractions allowed).
fn header_number(headers: &HeaderMap, name: &str) -> Option<f64> {
    let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value)
}

/// Seconds as a duration, capped at [`MAX_PAUSE`].
fn capped(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.min(MAX_PAUSE.as_secs_f64()))
}

/// The wait a 429 asks for: `X-Ratelimit-Retry-After`, else `Retry-After`,
/// in seconds (HTTP dates are ignored), capped at an hour.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_number(headers, "x-ratelimit-retry-after")
        .or_else(|| header_number(headers, "retry-after"))
        .map(capped)
}

/// The wait until `X-RateLimit-Reset`: UNIX seconds when over 1e9, else
/// seconds from now; capped at an hour.
fn reset_delay(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let reset = header_number(headers, "x-ratelimit-reset")?;
    if reset > EPOCH_THRESHOLD as f64 {
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        Some(capped((reset - now).max(0.0)))
    } else {
        Some(capped(reset))
    }
}

#[cfg(test)]
mod tests;
