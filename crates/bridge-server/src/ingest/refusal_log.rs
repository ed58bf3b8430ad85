//! Refusals of `POST /currents` in the log: a line when they start, at most
//! one summary per [`SUMMARY_INTERVAL`] while they go on, and a line when
//! batches are accepted again; never a line per request.
//!
//! Under back-pressure (the spool is full, the bridge is shutting down) every
//! request is answered 503 with `Retry-After`. That is the intended answer,
//! and Braze may send thousands of requests a second: a line for each would
//! drown the log, and cost CPU and disk just when the bridge is behind. A
//! Braze connector with a wrong token would do the same with 401s, which an
//! operator must see (Braze drops a batch answered 401), but once, not a
//! thousand times. Exact counts are in the metrics
//! (`bridge_ingest_requests_total{status}`,
//! `bridge_ingest_unavailable_requests_total{reason}`); the log says when
//! refusals start, that they go on, and when they stop.
//!
//! Each [`Refusal`] has its own episode in [`crate::log_limit`], which
//! decides when a line is due: the first refusal at once, then at most one
//! line per [`SUMMARY_INTERVAL`], each refusal counted in exactly one line.
//! A spool hovering at its bound (a batch accepted for each one delivered,
//! the others refused) logs one line per interval, not two per delivered
//! batch; the price is that the end of refusals shorter than the interval
//! is logged up to an interval late. Only the 503 kinds end when a batch is
//! accepted: a wrong token goes on being wrong whatever other requests do.
//!
//! Not here: a 500 is a fault of ours and the trace layer logs each one at
//! error level; other client errors (400, 413) are logged at debug level.

use std::time::{Duration, Instant};

use super::Unavailable;
use crate::log_limit::{self, Episodes, Line};

/// Lines about one kind of refusal are at least this far apart.
pub(crate) const SUMMARY_INTERVAL: Duration = log_limit::SUMMARY_INTERVAL;

/// A kind of refusal the log reports; a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 503: the batch cannot be stored now; Braze retries it.
    Unavailable(Unavailable),
    /// 401: no bearer token.
    MissingToken,
    /// 401: a bearer token that is not configured.
    WrongToken,
}

/// The refusal episodes of one ingest endpoint, and their lines.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    episodes: Episodes<Refusal>,
}

impl Refusal {
    /// Whether accepting a batch ends it: true for the 503 kinds.
    fn ends_on_acceptance(self) -> bool {
        matches!(self, Refusal::Unavailable(_))
    }

    /// The `reason` field of its lines.
    fn label(self) -> &'static str {
        match self {
            Refusal::Unavailable(unavailable) => unavailable.label(),
            Refusal::MissingToken => "missing_token",
            Refusal::WrongToken => "wrong_token",
        }
    }

    /// Why, in words.
    fn describe(self) -> String {
        match self {
            Refusal::Unavailable(unavailable) => unavailable.to_string(),
            Refusal::MissingToken => "no bearer token".to_owned(),
            Refusal::WrongToken => "a bearer token that is not configured".to_owned(),
        }
    }
}

impl RefusalLog {
    /// A log with at most one line per kind of refusal per `interval`.
    pub(crate) fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            episodes: Episodes::new(interval),
        }
    }

    /// Counts a refusal at `now` and logs a line if one is due; returns it.
    pub(crate) fn refused(&self, refusal: Refusal, now: Instant) -> Option<Line> {
        let line = self.episodes.occurred(refusal, now);
        if let Some(line) = line {
            log(refusal, line);
        }
        line
    }

    /// Notes an accepted batch at `now`: ends the 503 refusals, logging the
    /// end of each when a line is due; returns the lines.
    pub(crate) fn accepted(&self, now: Instant) -> Vec<(Refusal, Line)> {
        let lines = self.episodes.ended(now, Refusal::ends_on_acceptance);
        for (refusal, line) in &lines {
            log(*refusal, *line);
        }
        lines
    }
}

/// Writes one line: refusals at warning level (error level when the storage
/// fails), their end at info level.
fn log(refusal: Refusal, line: Line) {
    let reason = refusal.label();
    let why = refusal.describe();
    let is_fault = refusal == Refusal::Unavailable(Unavailable::StorageError);
    let answer = if refusal.ends_on_acceptance() {
        "batches with 503 (Braze retries them)"
    } else {
        "requests with 401 (Braze drops their batches)"
    };
    let n_refused = line.n_events();
    let over_secs = line.over().as_secs();
    match line {
        Line::Started { .. } if is_fault => {
            tracing::error!(reason, n_refused, "Refusing Currents {answer}: {why}.");
        }
        Line::Started { .. } => {
            tracing::warn!(reason, n_refused, "Refusing Currents {answer}: {why}.");
        }
        Line::Summary { .. } if is_fault => {
            tracing::error!(
                reason,
                n_refused,
                over_secs,
                "Still refusing Currents {answer}: {why}."
            );
        }
        Line::Summary { .. } => {
            tracing::warn!(
                reason,
                n_refused,
                over_secs,
                "Still refusing Currents {answer}: {why}."
            );
        }
        Line::Ended { .. } => {
            tracing::info!(
                reason,
                n_refused,
                over_secs,
                "Accepting Currents batches again after refusing them: {why}."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    #[test]
    fn an_accepted_batch_ends_only_the_503_refusals() {
        let log = RefusalLog::new(INTERVAL);
        let start = Instant::now();
        let spool_full = Refusal::Unavailable(Unavailable::SpoolFull);
        assert!(log.refused(spool_full, start).is_some());
        assert!(log.refused(Refusal::WrongToken, start).is_some());
        assert_eq!(log.refused(Refusal::WrongToken, start), None);
        let ended = log.accepted(start + INTERVAL);
        assert_eq!(
            ended,
            vec![(
                spool_full,
                Line::Ended {
                    n_events: 0,
                    over: INTERVAL
                }
            )]
        );
        assert_eq!(
            log.refused(Refusal::WrongToken, start + INTERVAL),
            Some(Line::Summary {
                n_events: 2,
                over: INTERVAL
            })
        );
        assert!(log.accepted(start + INTERVAL * 3).is_empty());
    }
}
