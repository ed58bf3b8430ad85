//! Counters of what the cohort import did, shared by the webhook, the
//! pull and the writer, for a service to export as metrics. Plain atomics:
//! this crate does not choose a metrics library.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::store::PageOutcome;
use crate::webhook::WebhookOutcome;

/// The outcome of one request to Braze: a closed set, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Braze applied every object.
    Success,
    /// Braze applied some objects and refused others.
    PartlyRefused,
    /// Braze refused the request as a whole (a 4xx other than 401/403/429).
    Rejected,
    /// Braze refused the credentials (401/403).
    Unauthorized,
    /// Braze stayed unavailable or rate-limited through every retry.
    Unavailable,
}

/// The counters. All counts only grow.
#[derive(Debug, Default)]
pub struct CohortStats {
    webhook: [AtomicU64; 5],
    /// Members added to cohorts (journaled as adds).
    pub members_added: AtomicU64,
    /// Members removed from cohorts (journaled as removes).
    pub members_removed: AtomicU64,
    /// Members seen without a usable id.
    pub members_unmatched: AtomicU64,
    braze_requests: [AtomicU64; 5],
    /// Changes Braze confirmed.
    pub changes_confirmed: AtomicU64,
    /// Changes set aside as dead letters.
    pub changes_dead_lettered: AtomicU64,
    /// Pulls that completed.
    pub pulls_completed: AtomicU64,
    /// Pulls that failed.
    pub pulls_failed: AtomicU64,
}

impl WebhookOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [WebhookOutcome; 5] = [
        WebhookOutcome::Recorded,
        WebhookOutcome::Replayed,
        WebhookOutcome::Unauthorized,
        WebhookOutcome::Malformed,
        WebhookOutcome::Unavailable,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Recorded => "recorded",
            WebhookOutcome::Replayed => "replayed",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::Malformed => "malformed",
            WebhookOutcome::Unavailable => "unavailable",
        }
    }

    const fn index(self) -> usize {
        match self {
            WebhookOutcome::Recorded => 0,
            WebhookOutcome::Replayed => 1,
            WebhookOutcome::Unauthorized => 2,
            WebhookOutcome::Malformed => 3,
            WebhookOutcome::Unavailable => 4,
        }
    }
}

impl RequestOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [RequestOutcome; 5] = [
        RequestOutcome::Success,
        RequestOutcome::PartlyRefused,
        RequestOutcome::Rejected,
        RequestOutcome::Unauthorized,
        RequestOutcome::Unavailable,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Success => "success",
            RequestOutcome::PartlyRefused => "partly_refused",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::Unauthorized => "unauthorized",
            RequestOutcome::Unavailable => "unavailable",
        }
    }

    const fn index(self) -> usize {
        match self {
            RequestOutcome::Success => 0,
            RequestOutcome::PartlyRefused => 1,
            RequestOutcome::Rejected => 2,
            RequestOutcome::Unauthorized => 3,
            RequestOutcome::Unavailable => 4,
        }
    }
}

impl CohortStats {
    /// Counts one webhook call.
    pub fn count_webhook(&self, outcome: WebhookOutcome) {
        self.webhook[outcome.index()].fetch_add(1, Relaxed);
    }

    /// Webhook calls with this outcome so far.
    pub fn webhook_calls(&self, outcome: WebhookOutcome) -> u64 {
        self.webhook[outcome.index()].load(Relaxed)
    }

    /// Counts what a recorded page changed.
    pub fn count_page(&self, outcome: &PageOutcome) {
        self.members_added.fetch_add(outcome.added, Relaxed);
        self.members_removed.fetch_add(outcome.removed, Relaxed);
        self.members_unmatched.fetch_add(outcome.unmatched, Relaxed);
    }

    /// Counts one request to Braze.
    pub fn count_request(&self, outcome: RequestOutcome) {
        self.braze_requests[outcome.index()].fetch_add(1, Relaxed);
    }

    /// Requests to Braze with this outcome so far.
    pub fn braze_requests(&self, outcome: RequestOutcome) -> u64 {
        self.braze_requests[outcome.index()].load(Relaxed)
    }
}
