//! A client-side limiter for Mixpanel's Query API budget: "a maximum of 5
//! concurrent queries and 60 queries per hour" per project.
//!
//! Going over the budget earns 429s, which the transport retries with
//! backoff; waiting here instead keeps the budget for the queries that
//! matter and keeps a long cohort export from starving the other users of
//! the project. The limiter is shared by all clones of a [`crate::Client`];
//! separate clients (or processes) for the same project do not share it.
//!
//! A query takes a concurrency slot first and then a slot in the rolling
//! window, so the recorded start is the real one. One query is one logical
//! request: transport retries of it are not counted again.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// The Query API budget the client keeps to. The default is Mixpanel's
/// documented limit: 5 concurrent queries, 60 per rolling hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Queries in flight at once.
    pub max_concurrent: usize,
    /// Queries started within any `window`.
    pub max_per_window: usize,
    /// The rolling window.
    pub window: Duration,
}

impl Default for QueryLimits {
    fn default() -> QueryLimits {
        QueryLimits {
            max_concurrent: 5,
            max_per_window: 60,
            window: Duration::from_secs(3600),
        }
    }
}

/// Enforces [`QueryLimits`] for every query of one client.
#[derive(Debug)]
pub(crate) struct QueryLimiter {
    limits: QueryLimits,
    concurrent: Semaphore,
    /// When each query of the current window started, oldest first.
    starts: Mutex<VecDeque<Instant>>,
}

/// A query's place in the budget; the concurrency slot is released on drop.
#[derive(Debug)]
pub(crate) struct QueryPermit<'a> {
    _concurrent: SemaphorePermit<'a>,
}

impl QueryLimiter {
    pub(crate) fn new(limits: QueryLimits) -> QueryLimiter {
        let limits = QueryLimits {
            max_concurrent: limits.max_concurrent.max(1),
            max_per_window: limits.max_per_window.max(1),
            window: limits.window,
        };
        QueryLimiter {
            limits,
            concurrent: Semaphore::new(limits.max_concurrent),
            starts: Mutex::new(VecDeque::with_capacity(limits.max_per_window)),
        }
    }

    /// Waits until a query may start: a concurrency slot is free and fewer
    /// than `max_per_window` queries started within the last `window`.
    pub(crate) async fn acquire(&self) -> QueryPermit<'_> {
        let concurrent = self
            .concurrent
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed");
        while let Some(free_at) = self.try_start(Instant::now()) {
            let wait = free_at.saturating_duration_since(Instant::now());
            tracing::info!(
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                max_per_window = self.limits.max_per_window,
                window_secs = self.limits.window.as_secs(),
                "Waiting for the Mixpanel Query API budget."
            );
            tokio::time::sleep_until(free_at).await;
        }
        QueryPermit {
            _concurrent: concurrent,
        }
    }

    /// Records a start at `now` if the window has room; otherwise returns
    /// when the oldest start leaves the window.
    fn try_start(&self, now: Instant) -> Option<Instant> {
        let mut starts = self.starts.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&oldest) = starts.front() {
            if now.saturating_duration_since(oldest) < self.limits.window {
                break;
            }
            starts.pop_front();
        }
        if starts.len() < self.limits.max_per_window {
            starts.push_back(now);
            return None;
        }
        starts.front().map(|&oldest| oldest + self.limits.window)
    }
}

#[cfg(test)]
mod tests;
