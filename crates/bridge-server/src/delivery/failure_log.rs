//! Delivery's failures in the log, per episode: a line when they start, at
//! most one summary per interval while they go on, and a line when they end
//! (see `crate::log_limit`).
//!
//! Each failure repeats per worker and per batch: while the spool cannot be
//! used every worker fails once a second; while a project's Mixpanel is down
//! or rate-limits past every retry, or refuses its credentials, or while the
//! archive cannot be written, every leased batch fails, and a backlog holds
//! thousands. A line each would flood the log for as long as the outage
//! lasts. So there is one episode for the spool, one for the archive and
//! two per project (cannot deliver now; refused credentials), shared by all
//! workers: the first failure is logged with its error, then a summary per
//! interval with the count and the latest error, then an info line when the
//! spool or the archive works again or the project takes a batch. The
//! metrics still count every failed delivery
//! (`bridge_delivery_released_batches_total`,
//! `bridge_mixpanel_responses_total{status}`,
//! `bridge_archive_batches_total{outcome="failed"}`); failed spool calls
//! have no metric of their own.
//!
//! Each method takes the time, logs the line that is due and returns it, so
//! tests pass the time in.

use std::time::{Duration, Instant};

use mixpanel_client::Error as MixpanelError;

use crate::log_limit::{Episodes, Line};
use crate::spool::SpoolError;

/// One kind of delivery failure; each has its own episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The spool refused a lease, a settle or a release.
    Spool,
    /// A project's events cannot be delivered now (429 or 5xx through
    /// every retry, timeouts, connection errors): the batch is retried.
    CannotDeliver {
        /// The project, as the router numbers it.
        project_idx: usize,
    },
    /// Mixpanel refused a project's credentials (401/403): it is paused.
    CredentialsRefused {
        /// The project, as the router numbers it.
        project_idx: usize,
    },
    /// A batch could not be written to the archive: it is retried.
    Archive,
}

/// The failure episodes of one delivery engine, shared by its workers.
#[derive(Debug)]
pub(super) struct FailureLog {
    episodes: Episodes<Failure>,
}

impl Failure {
    fn project_idx(self) -> Option<usize> {
        match self {
            Failure::Spool | Failure::Archive => None,
            Failure::CannotDeliver { project_idx }
            | Failure::CredentialsRefused { project_idx } => Some(project_idx),
        }
    }
}

impl FailureLog {
    /// A log with at most one line per kind of failure per `interval`.
    pub(super) fn new(interval: Duration) -> FailureLog {
        FailureLog {
            episodes: Episodes::new(interval),
        }
    }

    /// A worker could not lease, settle or release: logged at error level.
    pub(super) fn spool_failed(
        &self,
        now: Instant,
        worker_idx: usize,
        error: &SpoolError,
    ) -> Option<Line> {
        let line = self.episodes.occurred(Failure::Spool, now)?;
        match line {
            Line::Started { n_events } => tracing::error!(
                worker = worker_idx,
                error = %error,
                n_failures = n_events,
                "Delivery cannot use the spool; retrying."
            ),
            Line::Summary { n_events, over } | Line::Ended { n_events, over } => {
                tracing::error!(
                    error = %error,
                    n_failures = n_events,
                    over_secs = over.as_secs(),
                    "Delivery still cannot use the spool; retrying."
                );
            }
        }
        Some(line)
    }

    /// A worker used the spool: ends the spool's episode, if one is going
    /// on and a line is due.
    pub(super) fn spool_worked(&self, now: Instant) -> Option<Line> {
        let (_, line) = self
            .episodes
            .ended(now, |failure| failure == Failure::Spool)
            .pop()?;
        tracing::info!(
            n_failures = line.n_events(),
            over_secs = line.over().as_secs(),
            "Delivery can use the spool again."
        );
        Some(line)
    }

    /// A batch could not be archived and was released: logged at warning
    /// level, as it is retried.
    pub(super) fn archive_failed(
        &self,
        now: Instant,
        error: &dyn std::fmt::Display,
        retry_in: Duration,
        attempts: u32,
    ) -> Option<Line> {
        let line = self.episodes.occurred(Failure::Archive, now)?;
        let retry_in_secs = retry_in.as_secs();
        match line {
            Line::Started { n_events } => tracing::warn!(
                error = %error,
                n_failures = n_events,
                retry_in_secs,
                attempts,
                "Cannot archive a batch now; it is not delivered until it is archived, and will be retried."
            ),
            Line::Summary { n_events, over } | Line::Ended { n_events, over } => {
                tracing::warn!(
                    error = %error,
                    n_failures = n_events,
                    over_secs = over.as_secs(),
                    retry_in_secs,
                    attempts,
                    "Still cannot archive batches; they wait in the spool and will be retried."
                );
            }
        }
        Some(line)
    }

    /// A batch was archived: ends the archive's episode, if one is going on
    /// and a line is due.
    pub(super) fn archive_worked(&self, now: Instant) -> Option<Line> {
        let (_, line) = self
            .episodes
            .ended(now, |failure| failure == Failure::Archive)
            .pop()?;
        tracing::info!(
            n_failures = line.n_events(),
            over_secs = line.over().as_secs(),
            "Archiving batches again."
        );
        Some(line)
    }

    /// A project could not take a batch's events: refused credentials at
    /// error level, anything else (retried later) at warning level.
    pub(super) fn send_failed(
        &self,
        now: Instant,
        project_idx: usize,
        project: &str,
        error: &MixpanelError,
        retry_in: Duration,
        attempts: u32,
    ) -> Option<Line> {
        let retry_in_secs = retry_in.as_secs();
        if error.is_auth() {
            let line = self
                .episodes
                .occurred(Failure::CredentialsRefused { project_idx }, now)?;
            match line {
                Line::Started { n_events } => tracing::error!(
                    project = %project,
                    error = %error,
                    n_failures = n_events,
                    retry_in_secs,
                    "Mixpanel refused the project's credentials; delivery to it is paused, ingest goes on."
                ),
                Line::Summary { n_events, over } | Line::Ended { n_events, over } => {
                    tracing::error!(
                        project = %project,
                        error = %error,
                        n_failures = n_events,
                        over_secs = over.as_secs(),
                        retry_in_secs,
                        "Mixpanel still refuses the project's credentials; delivery to it is paused, ingest goes on."
                    );
                }
            }
            return Some(line);
        }
        let line = self
            .episodes
            .occurred(Failure::CannotDeliver { project_idx }, now)?;
        match line {
            Line::Started { n_events } => tracing::warn!(
                project = %project,
                error = %error,
                n_failures = n_events,
                retry_in_secs,
                attempts,
                "Cannot deliver a batch now; it will be retried."
            ),
            Line::Summary { n_events, over } | Line::Ended { n_events, over } => {
                tracing::warn!(
                    project = %project,
                    error = %error,
                    n_failures = n_events,
                    over_secs = over.as_secs(),
                    retry_in_secs,
                    attempts,
                    "Still cannot deliver batches now; they will be retried."
                );
            }
        }
        Some(line)
    }

    /// A project took a batch's events: ends its episodes, logging the end
    /// of each that is due at info level.
    pub(super) fn sent(&self, now: Instant, project_idx: usize, project: &str) -> Vec<Line> {
        let ended = self
            .episodes
            .ended(now, |failure| failure.project_idx() == Some(project_idx));
        let mut lines = Vec::with_capacity(ended.len());
        for (failure, line) in ended {
            let n_failures = line.n_events();
            let over_secs = line.over().as_secs();
            if let Failure::CredentialsRefused { .. } = failure {
                tracing::info!(
                    project = %project,
                    n_failures,
                    over_secs,
                    "Mixpanel accepts the project's credentials again; delivery resumed."
                );
            } else {
                tracing::info!(
                    project = %project,
                    n_failures,
                    over_secs,
                    "Delivering to the project again."
                );
            }
            lines.push(line);
        }
        lines
    }

    /// Failures of this kind counted but not yet in a line.
    #[cfg(test)]
    pub(super) fn n_unreported(&self, failure: Failure) -> u64 {
        self.episodes.n_unreported(failure)
    }
}
