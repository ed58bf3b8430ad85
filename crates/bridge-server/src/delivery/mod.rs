//! Delivery: workers lease spooled batches, map their events, send them to
//! each event's Mixpanel project, and settle the batch only when every
//! project has answered for its events.
//!
//! For one leased batch:
//! - every event is parsed and routed (`?workspace=` of the batch, then the
//!   event's `properties.app_group_id`, then the default project);
//! - it is mapped with its project's mapper: mapped events are batched for
//!   `/import`, skipped events are counted by reason, invalid events become
//!   dead letters;
//! - each project's events are sent (or, in dry-run, appended to its NDJSON
//!   file and fsync'd); records Mixpanel refuses become dead letters with
//!   Mixpanel's message, holding the original Currents event;
//! - if every project accepted its events, the batch is settled (removed,
//!   dead letters stored, atomically);
//! - if a project could not be reached (429/5xx through every retry,
//!   timeouts) the batch is released and retried with backoff; already
//!   delivered events go again, which Mixpanel deduplicates on `$insert_id`;
//! - if a project refused the credentials (401/403), the project is paused
//!   (visible in `/status` and the logs), the batch is released, and a
//!   later attempt finds out whether the credentials work again. Ingest
//!   keeps accepting meanwhile.
//!
//! Nothing is dropped: every event ends delivered, skipped (counted), or in
//! the dead-letter store.
//!
//! Failures that repeat per worker or per batch (the spool cannot be used;
//! a project cannot take its events, or refuses its credentials) are logged
//! per episode by `failure_log`, never a line per attempt.

mod failure_log;
mod project;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use currents_model::{Batch, Event, ParsedEvent};
use mixpanel_client::{Batcher, Error as MixpanelError, ImportBatch};

use crate::log_limit::SUMMARY_INTERVAL;
use crate::mapping::{Outcome, SkipReason};
use crate::metrics::Metrics;
use crate::spool::{DeadLetter, LeasedBatch, Spool, SpoolError};
use failure_log::FailureLog;
pub use project::{DryRunFile, ProjectTarget, Sink};
pub use status::{DeliveryStatus, ProjectStatus};

/// Dead-letter reason for a record Mixpanel refused.
pub const REFUSED_BY_MIXPANEL: &str = "refused_by_mixpanel";
/// Dead-letter reason for a mapped event over Mixpanel's size limit.
pub const EVENT_TOO_LARGE: &str = "event_too_large";
/// Dead-letter reason for a stored body that is no longer a readable batch.
pub const INVALID_BATCH: &str = "invalid_batch";

/// How delivery runs.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Concurrent workers (batches in delivery at once).
    pub workers: usize,
    /// How long a worker holds a batch.
    pub lease: Duration,
    /// Events and bytes per `/import` request.
    pub batch_limits: mixpanel_client::BatchLimits,
    /// How long to wait before trying a paused project again.
    pub pause_retry: Duration,
    /// The longest wait before a failed batch is tried again.
    pub max_retry_delay: Duration,
    /// How often an idle worker looks for work.
    pub idle_poll: Duration,
}

/// Routes events to projects.
pub trait Router: Send + Sync + 'static {
    /// The index of the project for a batch's workspace and an event's app group.
    fn route(&self, workspace: Option<&str>, app_group_id: Option<&str>) -> usize;
}

/// The delivery engine: projects, their routing, the spool, the status.
pub struct Delivery<S, R> {
    spool: Arc<S>,
    router: R,
    projects: Vec<ProjectTarget>,
    options: DeliveryOptions,
    status: Arc<DeliveryStatus>,
    metrics: Arc<Metrics>,
    failures: FailureLog,
}

/// What became of one leased batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchResult {
    /// Every event delivered, skipped or dead-lettered; removed from the spool.
    Settled,
    /// Given back to the spool to be tried again later.
    Released,
}

impl<S: Spool, R: Router> Delivery<S, R> {
    /// A delivery engine over these projects (index = what `router` returns).
    pub fn new(
        spool: Arc<S>,
        router: R,
        projects: Vec<ProjectTarget>,
        options: DeliveryOptions,
        metrics: Arc<Metrics>,
    ) -> Delivery<S, R> {
        let status = Arc::new(DeliveryStatus::new(
            projects.iter().map(|project| project.name.clone()),
        ));
        Delivery {
            spool,
            router,
            projects,
            options,
            status,
            metrics,
            failures: FailureLog::new(SUMMARY_INTERVAL),
        }
    }

    /// Counters and per-project state, shared with `/status` and `/metrics`.
    pub fn status(&self) -> Arc<DeliveryStatus> {
        Arc::clone(&self.status)
    }

    /// Runs the workers until `shutdown` turns true, then lets each finish
    /// the batch it holds.
    pub async fn run(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut workers = tokio::task::JoinSet::new();
        for worker_idx in 0..self.options.workers.max(1) {
            let delivery = Arc::clone(&self);
            let mut shutdown = shutdown.clone();
            workers.spawn(async move {
                while !*shutdown.borrow() {
                    let result = delivery.deliver_next().await;
                    let now = Instant::now();
                    match result {
                        Ok(Some(_)) => {
                            delivery.failures.spool_worked(now);
                        }
                        Ok(None) => {
                            delivery.failures.spool_worked(now);
                            tokio::select! {
                                _ = tokio::time::sleep(delivery.options.idle_poll) => {}
                                _ = shutdown.changed() => {}
                            }
                        }
                        Err(error) => {
                            delivery.failures.spool_failed(now, worker_idx, &error);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    /// Leases and delivers one batch, if one is due.
    pub async fn deliver_next(&self) -> Result<Option<BatchResult>, SpoolError> {
        let mut leased = self.spool.lease(1, self.options.lease).await?;
        let Some(batch) = leased.pop() else {
            return Ok(None);
        };
        self.deliver(batch).await.map(Some)
    }

    /// Delivers one leased batch and settles or releases it.
    pub async fn deliver(&self, leased: LeasedBatch) -> Result<BatchResult, SpoolError> {
        let workspace = leased.batch.workspace.as_deref();
        let mut dead_letters = Vec::new();
        let text = std::str::from_utf8(&leased.batch.body).ok();
        let Some(events) = text.and_then(|text| Batch::parse_events(text).ok()) else {
            dead_letters.push(DeadLetter {
                event: leased.batch.body.clone(),
                reason: INVALID_BATCH.to_owned(),
                detail: "the stored body is not a readable Currents batch".to_owned(),
                event_type: None,
                event_id: None,
                workspace: leased.batch.workspace.clone(),
                attempts: leased.attempts,
            });
            self.spool.settle(leased.id, dead_letters).await?;
            self.status.record_dead_letters(1);
            self.metrics
                .dead_lettered_events
                .get_or_create(&vec![("reason", INVALID_BATCH.to_owned())])
                .inc();
            return Ok(BatchResult::Settled);
        };

        // Map every event into its project's request batches.
        let mut outgoing: Vec<Outgoing<'_>> = self
            .projects
            .iter()
            .map(|_| Outgoing::new(self.options.batch_limits))
            .collect();
        let mut skipped = [0u64; SkipReason::ALL.len()];
        for ParsedEvent { raw, event } in events {
            let event = match event {
                Ok(event) => event,
                Err(invalid) => {
                    dead_letters.push(dead_letter(
                        raw,
                        invalid.reason.as_str(),
                        &invalid.detail,
                        None,
                        None,
                        workspace,
                        leased.attempts,
                    ));
                    continue;
                }
            };
            let app_group_id = app_group_id(&event);
            let project_idx = self
                .router
                .route(workspace, app_group_id.as_deref())
                .min(self.projects.len() - 1);
            // The rare dead letter below reads the type and id again from
            // `raw`, so that the common path copies neither.
            match self.projects[project_idx].mapper.map_event(event) {
                Outcome::Mapped(mapped) => {
                    if let Err(error) = outgoing[project_idx].push(&mapped, raw) {
                        dead_letters.push(dead_letter_from_text(
                            raw,
                            EVENT_TOO_LARGE,
                            &error.to_string(),
                            workspace,
                            leased.attempts,
                        ));
                    }
                }
                Outcome::Skipped(reason) => skipped[reason as usize] += 1,
                Outcome::Invalid(invalid) => {
                    dead_letters.push(dead_letter_from_text(
                        raw,
                        invalid.reason.as_str(),
                        &invalid.detail,
                        workspace,
                        leased.attempts,
                    ));
                }
            }
        }

        // Send each project's events; any project that cannot take them now
        // makes the whole batch wait.
        let mut delivered_by_project = vec![0u64; self.projects.len()];
        for (project_idx, project_out) in outgoing.into_iter().enumerate() {
            let batches = project_out.finish();
            if batches.is_empty() {
                continue;
            }
            let project = &self.projects[project_idx];
            match project.send(&batches, &self.metrics).await {
                Ok(sent) => {
                    delivered_by_project[project_idx] += sent.n_delivered;
                    for (batch_idx, index, message) in sent.refused {
                        let raws = &batches[batch_idx].1;
                        dead_letters.push(dead_letter_from_text(
                            raws[index],
                            REFUSED_BY_MIXPANEL,
                            &message,
                            workspace,
                            leased.attempts,
                        ));
                    }
                    self.status.resume(project_idx);
                    self.failures
                        .sent(Instant::now(), project_idx, &project.name);
                }
                Err(error) => {
                    let retry_in = self.retry_delay(&error, leased.attempts);
                    if error.is_auth() {
                        self.status.pause(project_idx, error.to_string());
                    }
                    self.failures.send_failed(
                        Instant::now(),
                        project_idx,
                        &project.name,
                        &error,
                        retry_in,
                        leased.attempts + 1,
                    );
                    self.spool.release(leased.id, retry_in).await?;
                    self.status.record_released();
                    self.metrics.released_batches.inc();
                    return Ok(BatchResult::Released);
                }
            }
        }
        let n_dead_letters = dead_letters.len() as u64;
        let mut dead_by_reason: Vec<(String, u64)> = Vec::new();
        for dead_letter in &dead_letters {
            match dead_by_reason
                .iter_mut()
                .find(|(reason, _)| *reason == dead_letter.reason)
            {
                Some((_, count)) => *count += 1,
                None => dead_by_reason.push((dead_letter.reason.clone(), 1)),
            }
        }
        self.spool.settle(leased.id, dead_letters).await?;
        // Counted once settled, so a batch retried later is not counted twice.
        let n_delivered: u64 = delivered_by_project.iter().sum();
        self.status
            .record_delivered(n_delivered, &skipped, n_dead_letters);
        for (project, count) in self.projects.iter().zip(&delivered_by_project) {
            if *count > 0 {
                self.metrics
                    .delivered_events
                    .get_or_create(&vec![("project", project.name.clone())])
                    .inc_by(*count);
            }
        }
        for (reason, count) in SkipReason::ALL.iter().zip(skipped) {
            if count > 0 {
                self.metrics
                    .discarded_events
                    .get_or_create(&vec![
                        ("reason", reason.as_str().to_owned()),
                        ("intentional", "true".to_owned()),
                    ])
                    .inc_by(count);
            }
        }
        for (reason, count) in dead_by_reason {
            self.metrics
                .dead_lettered_events
                .get_or_create(&vec![("reason", reason)])
                .inc_by(count);
        }
        Ok(BatchResult::Settled)
    }

    /// When to try a batch again: Mixpanel's `Retry-After`, the pause
    /// interval after refused credentials, or a doubling backoff.
    fn retry_delay(&self, error: &MixpanelError, attempts: u32) -> Duration {
        if error.is_auth() {
            return self.options.pause_retry;
        }
        let backoff = Duration::from_secs(5).saturating_mul(2u32.saturating_pow(attempts.min(16)));
        backoff
            .max(error.retry_after().unwrap_or_default())
            .min(self.options.max_retry_delay)
    }
}

/// One project's events of one leased batch, packed into `/import` requests,
/// each request with the raw Currents events behind its records.
struct Outgoing<'a> {
    batcher: Batcher,
    raws: Vec<&'a str>,
    done: Vec<(ImportBatch, Vec<&'a str>)>,
}

impl<'a> Outgoing<'a> {
    fn new(limits: mixpanel_client::BatchLimits) -> Outgoing<'a> {
        Outgoing {
            batcher: Batcher::new(limits),
            raws: Vec::new(),
            done: Vec::new(),
        }
    }

    fn push(
        &mut self,
        event: &mixpanel_client::Event<'_>,
        raw: &'a str,
    ) -> Result<(), MixpanelError> {
        if let Some(full) = self.batcher.push_event(event)? {
            let raws = self.raws.drain(..full.len()).collect();
            self.done.push((full, raws));
        }
        self.raws.push(raw);
        Ok(())
    }

    fn finish(mut self) -> Vec<(ImportBatch, Vec<&'a str>)> {
        if let Some(last) = self.batcher.flush() {
            self.done.push((last, std::mem::take(&mut self.raws)));
        }
        self.done
    }
}

/// The event's `properties.app_group_id` (HTTP shape) or top-level
/// `app_group_id` (storage shape, already moved into the properties).
fn app_group_id(event: &Event<'_>) -> Option<String> {
    let property = event
        .properties
        .iter()
        .rev()
        .find(|property| property.key == "app_group_id")?;
    serde_json::from_str::<String>(property.value.get()).ok()
}

fn dead_letter(
    raw: &str,
    reason: &str,
    detail: &str,
    event_type: Option<String>,
    event_id: Option<String>,
    workspace: Option<&str>,
    attempts: u32,
) -> DeadLetter {
    DeadLetter {
        event: bytes::Bytes::copy_from_slice(mixpanel_client::ndjson::compact(raw).as_bytes()),
        reason: reason.to_owned(),
        detail: detail.to_owned(),
        event_type,
        event_id,
        workspace: workspace.map(str::to_owned),
        attempts,
    }
}

/// A dead letter for a refused record, reading its type and id again.
fn dead_letter_from_text(
    raw: &str,
    reason: &str,
    detail: &str,
    workspace: Option<&str>,
    attempts: u32,
) -> DeadLetter {
    let event = Event::parse(raw).ok();
    let event_type = event
        .as_ref()
        .map(|event| event.event_type.as_str().to_owned());
    let event_id = event.as_ref().map(|event| event.id.to_string());
    dead_letter(
        raw, reason, detail, event_type, event_id, workspace, attempts,
    )
}

#[cfg(test)]
mod tests;
