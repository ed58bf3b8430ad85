//! The archive step of delivery: before a leased group's events are mapped
//! and sent, each batch is written to the archive (`archive.url`) exactly as
//! received (the body after gzip inflation, as the spool holds it) with
//! `ArchiveStore::put_batch`, at
//! `<prefix>/date=<hour>/workspace=<w>/<received ms>-<hash>.json.gz`, where
//! `backfill` reads it back.
//!
//! Why in delivery and not in ingest: Braze's 2xx must not wait for an
//! object store. The spool already holds the batch durably, so the archive
//! is written afterwards, at delivery's pace, and an archive outage delays
//! delivery without refusing Braze. Why before sending: a batch leaves the
//! spool only when it is settled, so writing it first means that no batch
//! is delivered and removed without being archived, whatever fails on the
//! way ("nothing lost" holds for the archive too).
//!
//! - A group's writes run a few at once ([`CONCURRENT_WRITES`]), all within
//!   [`ARCHIVE_TIMEOUT`] of the start of the step; a write not done by then
//!   has failed. The configuration makes the lease cover this bound besides
//!   the worst case of the requests.
//! - A batch whose write failed is not sent now: it is released with the
//!   usual backoff (the lease counted its attempt), and the rest of the
//!   group is delivered. Past `delivery.max_attempts` or
//!   `delivery.max_age_secs` it is settled with one dead letter instead,
//!   reason [`ARCHIVE_FAILED`], holding the whole body and the last error,
//!   so that no retry loop goes on for ever; `dlq replay` puts the body back
//!   as that batch once the store works again.
//! - Writing a batch twice (a retry after a failure further on, a replica
//!   that died after the write) writes the same key (the workspace, the
//!   received time and a hash of the body): the same object again.
//!
//! Counted per batch in `bridge_archive_batches_total{outcome}`,
//! `bridge_archive_bytes_total` and `/status`; failures are logged per
//! episode by `failure_log`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use currents_archive::StoreError;
use currents_archive::store::ArchiveStore;

use super::{ARCHIVE_FAILED, BatchFate, Delivery, LeaseResult, Router};
use crate::metrics::Metrics;
use crate::spool::{DeadLetter, LeasedBatch, Spool, SpoolError};

/// How long a group's archive step may take, all its writes included
/// (`object_store` retries a failed request inside it). The lease must
/// cover it besides the requests, which the configuration checks.
pub const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Batches written at once: a group holds up to about 20 of Braze's
/// batches, and an object store answers a put in tens of milliseconds.
const CONCURRENT_WRITES: usize = 8;

/// Why a batch could not be archived.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// The store refused or failed (its message names the location and the
    /// key, never a secret).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The group's writes took longer than [`ARCHIVE_TIMEOUT`].
    #[error("the archive did not take the batch within {} s", ARCHIVE_TIMEOUT.as_secs())]
    TimedOut,
}

impl<S: Spool, R: Router> Delivery<S, R> {
    /// Archives each batch of a leased group (when an archive is set).
    /// Returns the batches archived, to be delivered now, and what became of
    /// the others: released for a later attempt, or settled as an
    /// [`ARCHIVE_FAILED`] dead letter past their limits.
    pub(super) async fn archive(
        &self,
        group: Vec<LeasedBatch>,
    ) -> Result<(Vec<LeasedBatch>, LeaseResult), SpoolError> {
        let Some(store) = &self.options.archive else {
            return Ok((group, LeaseResult::default()));
        };
        let deadline = tokio::time::Instant::now() + ARCHIVE_TIMEOUT;
        // Collected first: a stream over a closure's futures would not be
        // `Send` for every lifetime, as a spawned worker needs.
        let pending: Vec<_> = group
            .iter()
            .map(|leased| write_batch(store, leased, deadline))
            .collect();
        let writes: Vec<Result<(), WriteError>> = futures_util::stream::iter(pending)
            .buffered(CONCURRENT_WRITES)
            .collect()
            .await;

        let mut archived = Vec::with_capacity(group.len());
        let mut set_aside = LeaseResult::default();
        let mut n_failed = 0;
        for (leased, written) in group.into_iter().zip(writes) {
            match written {
                Ok(()) => {
                    self.count_written(leased.batch.body.len());
                    archived.push(leased);
                }
                Err(error) => {
                    n_failed += 1;
                    self.count_failed();
                    if self.give_up_or_release(&leased, &error).await? {
                        set_aside.settled += 1;
                    } else {
                        set_aside.released += 1;
                    }
                }
            }
        }
        if n_failed == 0 {
            self.failures.archive_worked(Instant::now());
        }
        Ok((archived, set_aside))
    }

    /// A batch that could not be archived: a dead letter holding the whole
    /// body past its limits (returns `true`: settled), else released with
    /// the usual backoff (`false`).
    async fn give_up_or_release(
        &self,
        leased: &LeasedBatch,
        error: &WriteError,
    ) -> Result<bool, SpoolError> {
        if self.is_past_limits(leased, crate::clock::now_ms()) {
            let mut fate = BatchFate::new(self.projects.len());
            fate.dead_letters.push(DeadLetter {
                event: leased.batch.body.clone(),
                reason: ARCHIVE_FAILED.to_owned(),
                detail: format!("gave up archiving after the attempt or age limit: {error}"),
                event_type: None,
                event_id: None,
                workspace: leased.batch.workspace.clone(),
                attempts: leased.attempts,
            });
            self.settle(leased, fate).await?;
            return Ok(true);
        }
        let wait = self.backoff(leased.attempts);
        self.release(leased, wait).await?;
        self.failures.archive_failed(
            Instant::now(),
            error,
            wait,
            leased.attempts.saturating_add(1),
        );
        Ok(false)
    }

    fn count_written(&self, n_body_bytes: usize) {
        let n_body_bytes = u64::try_from(n_body_bytes).unwrap_or(u64::MAX);
        self.metrics
            .archive_batches
            .get_or_create(&outcome("written"))
            .inc();
        self.metrics.archive_bytes.inc_by(n_body_bytes);
        if let Some(status) = &self.status.archive {
            status.batches_written.fetch_add(1, Ordering::Relaxed);
            status.body_bytes.fetch_add(n_body_bytes, Ordering::Relaxed);
        }
    }

    fn count_failed(&self) {
        self.metrics
            .archive_batches
            .get_or_create(&outcome("failed"))
            .inc();
        if let Some(status) = &self.status.archive {
            status.batches_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Creates both series of `bridge_archive_batches_total` at 0, so that a
/// rate over them exists from the first scrape of a bridge that archives.
pub(super) fn register_series(metrics: &Metrics) {
    for label in ["written", "failed"] {
        metrics
            .archive_batches
            .get_or_create(&outcome(label))
            .inc_by(0);
    }
}

fn outcome(label: &str) -> crate::metrics::Labels {
    vec![("outcome", label.to_owned())]
}

/// Writes one batch, as received, unless `deadline` passes first.
async fn write_batch(
    store: &ArchiveStore,
    leased: &LeasedBatch,
    deadline: tokio::time::Instant,
) -> Result<(), WriteError> {
    let put = store.put_batch(
        leased.batch.workspace.as_deref(),
        leased.batch.received_at_ms,
        leased.batch.body.clone(),
    );
    match tokio::time::timeout_at(deadline, put).await {
        Ok(written) => written.map(|_key| ()).map_err(WriteError::Store),
        Err(_) => Err(WriteError::TimedOut),
    }
}

#[cfg(test)]
mod tests;
