//! Delivery: workers lease spooled batches, map their events, send them to
//! each event's Mixpanel project, and settle a batch only when every
//! project has answered for its events.
//!
//! A worker leases a group of batches, enough to fill one `/import` request
//! (Braze sends about 100 events per batch; Mixpanel takes 2,000 per
//! request). For the group:
//! - every event is parsed and routed (`?workspace=` of its batch, then the
//!   event's `properties.app_group_id`, then the default project);
//! - it is mapped with its project's mapper: mapped events are packed into
//!   that project's `/import` requests, skipped events are counted by
//!   reason, invalid events become dead letters of their batch;
//! - each project's events are sent (or, in dry-run, appended to its NDJSON
//!   file and fsync'd); records Mixpanel refuses become dead letters of
//!   their batch with Mixpanel's message, holding the original Currents
//!   event;
//! - each batch is then settled (removed, dead letters stored, atomically)
//!   if every project holding some of its events accepted them, and
//!   released otherwise;
//! - if a project could not be reached (429/5xx through every retry,
//!   timeouts) its batches are released and retried with backoff; already
//!   delivered events go again, which Mixpanel deduplicates on `$insert_id`;
//! - if a project refused the credentials (401/403), the project is paused
//!   (visible in `/status` and the logs): its batches wait in the spool
//!   without a request, until one probe a minute later finds whether the
//!   credentials work again. Ingest keeps accepting meanwhile.
//!
//! With an archive (`archive.url`), a leased group is first written to it,
//! each batch exactly as received, a few at once (`archive`): a batch that
//! cannot be archived now is not sent, but released with the usual backoff,
//! and the rest of the group is delivered. Past the attempt or age limit it
//! becomes one dead letter holding the whole body (`archive_failed`), which
//! `dlq replay` puts back as that batch. The archive step is bounded by
//! [`ARCHIVE_TIMEOUT`], which the lease must cover besides the requests.
//!
//! Nothing is dropped: every event ends delivered, skipped (counted), or in
//! the dead-letter store.
//!
//! Failures that repeat per worker or per batch (the spool cannot be used;
//! a project cannot take its events, or refuses its credentials) are logged
//! per episode by `failure_log`, never a line per attempt.

mod archive;
mod failure_log;
mod project;
mod status;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;

use currents_model::{Batch, Event, ParsedEvent};
use mixpanel_client::{Batcher, Error as MixpanelError, ImportBatch};

use crate::log_limit::SUMMARY_INTERVAL;
use crate::metrics::Metrics;
use crate::spool::{DeadLetter, LEASE_MAX_BYTES, LeaseLimits, LeasedBatch, Spool, SpoolError};
pub use archive::ARCHIVE_TIMEOUT;
use currents_mixpanel::{Outcome, SkipReason};
use failure_log::FailureLog;
pub use project::{DryRunFile, ProjectTarget, Sink};
pub use status::{ArchiveStatus, DeliveryStatus, ProjectStatus};

/// Bodies up to this size are parsed whole in one pass (the fast path);
/// larger ones event by event, so that a worker never holds the parsed
/// form of a large batch (several times its size for an event full of
/// small properties) all at once.
const PARSE_WHOLE_MAX_BYTES: usize = 1024 * 1024;

/// Events mapped between two yields to the runtime (a few milliseconds of
/// work even for events full of properties).
const EVENTS_PER_YIELD: usize = 64;

/// A stored body's events, parsed as they are taken; `None` when it is not
/// a readable batch.
fn parse_events(text: &str) -> Option<Box<dyn Iterator<Item = ParsedEvent<'_>> + Send + '_>> {
    if text.len() <= PARSE_WHOLE_MAX_BYTES {
        return Some(Box::new(Batch::parse_events(text).ok()?.into_iter()));
    }
    let batch = Batch::parse(text).ok()?;
    Some(Box::new(batch.events.into_iter().map(|raw| ParsedEvent {
        raw: raw.get(),
        event: Event::from_raw(raw),
    })))
}

/// Dead-letter reason for a record Mixpanel refused.
pub const REFUSED_BY_MIXPANEL: &str = "refused_by_mixpanel";
/// Dead-letter reason for a mapped event over Mixpanel's size limit.
pub const EVENT_TOO_LARGE: &str = "event_too_large";
/// Dead-letter reason for an event whose batch kept failing past the
/// attempt or age limit.
pub const DELIVERY_FAILED: &str = "delivery_failed";
/// Dead-letter reason for a batch whose delivery panicked, alone (a bug);
/// the whole body is kept.
pub const DELIVERY_PANICKED: &str = "delivery_panicked";
/// Dead-letter reason for a stored body that is no longer a readable batch.
pub const INVALID_BATCH: &str = "invalid_batch";
/// Dead-letter reason for a batch that could not be written to the archive
/// (`archive.url`) past the attempt or age limit; the whole body is kept,
/// and `dlq replay` puts it back as that batch.
pub const ARCHIVE_FAILED: &str = "archive_failed";

/// How delivery runs.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Concurrent workers (leased groups in delivery at once).
    pub workers: usize,
    /// Batches a worker leases and sends together; Braze's batches hold
    /// about 100 events, so 20 fill Mixpanel's 2,000-event requests.
    pub batches_per_lease: usize,
    /// How long a worker holds a batch (from when it leased it; the
    /// linger comes on top).
    pub lease: Duration,
    /// How long a worker that leased less than a full group waits for more
    /// batches before it sends what it has: a steady flow of small Braze
    /// batches then goes out in full `/import` requests, not one request
    /// (and one lease and settle) per batch or two. Zero: no waiting.
    pub linger: Duration,
    /// Events and bytes per `/import` request.
    pub batch_limits: mixpanel_client::BatchLimits,
    /// How long to wait before trying a paused project again.
    pub pause_retry: Duration,
    /// The longest wait before a failed batch is tried again.
    pub max_retry_delay: Duration,
    /// How often an idle worker looks for work.
    pub idle_poll: Duration,
    /// Deliveries tried after which a batch's events that still cannot be
    /// delivered are dead-lettered (`delivery_failed`, with the last error).
    pub max_attempts: u32,
    /// The age since Braze sent a batch after which the same happens.
    pub max_age: Duration,
    /// Where each leased batch is archived, as received, before its events
    /// are sent; `None`: no archive.
    pub archive: Option<currents_archive::store::ArchiveStore>,
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
    pauses: Pauses,
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
        let n_projects = projects.len();
        let archive_location = options
            .archive
            .as_ref()
            .map(|store| store.location().to_owned());
        let status = Arc::new(DeliveryStatus::new(
            projects.iter().map(|project| project.name.clone()),
            archive_location,
        ));
        if options.archive.is_some() {
            archive::register_series(&metrics);
        }
        Delivery {
            spool,
            router,
            projects,
            options,
            status,
            metrics,
            failures: FailureLog::new(SUMMARY_INTERVAL),
            pauses: Pauses::new(n_projects),
        }
    }

    /// Counters and per-project state, shared with `/status` and `/metrics`.
    pub fn status(&self) -> Arc<DeliveryStatus> {
        Arc::clone(&self.status)
    }

    /// Runs the workers until `shutdown` turns true, then lets each finish
    /// the batch it holds. A worker that panics (a bug) is logged and
    /// started again, so that delivery never quietly loses a worker; its
    /// leased batches are handed out again when their lease ends.
    pub async fn run(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut workers = tokio::task::JoinSet::new();
        for worker_idx in 0..self.options.workers.max(1) {
            workers.spawn(Arc::clone(&self).work(worker_idx, shutdown.clone()));
        }
        while let Some(joined) = workers.join_next_with_id().await {
            let Err(error) = joined else { continue };
            if !error.is_panic() || *shutdown.borrow() {
                continue;
            }
            tracing::error!(error = %error, "A delivery worker panicked; starting another.");
            self.status.record_worker_restart();
            let worker_idx = self.status.worker_restarts() as usize;
            workers.spawn(Arc::clone(&self).work(worker_idx, shutdown.clone()));
        }
    }

    /// One worker: delivers until `shutdown` turns true.
    async fn work(
        self: Arc<Self>,
        worker_idx: usize,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        while !*shutdown.borrow() {
            let result = self.deliver_next().await;
            let now = Instant::now();
            match result {
                Ok(Some(_)) => {
                    self.failures.spool_worked(now);
                }
                Ok(None) => {
                    self.failures.spool_worked(now);
                    tokio::select! {
                        _ = tokio::time::sleep(self.options.idle_poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(error) => {
                    self.failures.spool_failed(now, worker_idx, &error);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Leases the batches that are due (up to
    /// [`DeliveryOptions::batches_per_lease`]) and delivers them together.
    pub async fn deliver_next(&self) -> Result<Option<LeaseResult>, SpoolError> {
        let leased = self.lease_group().await?;
        if leased.is_empty() {
            return Ok(None);
        }
        // Archived first (when on): what cannot be archived now waits.
        let (leased, set_aside) = self.archive(leased).await?;
        if leased.is_empty() {
            return Ok(Some(set_aside));
        }
        let delivered = match AssertUnwindSafe(self.deliver(&leased)).catch_unwind().await {
            Ok(result) => result?,
            Err(_) => self.isolate_panic(leased).await?,
        };
        Ok(Some(LeaseResult {
            settled: delivered.settled + set_aside.settled,
            released: delivered.released + set_aside.released,
        }))
    }

    /// Leases up to a full group; when fewer batches are due, looks again
    /// every `idle_poll` for up to `linger` for more, within the group's
    /// byte budget ([`LEASE_MAX_BYTES`]), so that lingering never holds more
    /// bodies than one lease could. A spool error while lingering ends the
    /// wait: the batches already leased are delivered, not left to their
    /// lease's end.
    async fn lease_group(&self) -> Result<Vec<LeasedBatch>, SpoolError> {
        let max = self.options.batches_per_lease.max(1);
        let lease = self.options.lease + self.options.linger;
        let mut group = self.spool.lease(max, lease).await?;
        if group.is_empty() || self.options.linger.is_zero() {
            return Ok(group);
        }
        let mut n_bytes = body_bytes(&group);
        let deadline = tokio::time::Instant::now() + self.options.linger;
        while group.len() < max && n_bytes < LEASE_MAX_BYTES {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep((deadline - now).min(self.options.idle_poll)).await;
            let limits = LeaseLimits::top_up(max - group.len(), LEASE_MAX_BYTES - n_bytes);
            match self.spool.lease_within(limits, lease).await {
                Ok(more) => {
                    n_bytes += body_bytes(&more);
                    group.extend(more);
                }
                Err(error) => {
                    tracing::warn!(error = %error, "Cannot lease more batches; delivering those leased.");
                    break;
                }
            }
        }
        Ok(group)
    }

    /// Delivery panicked (a bug) on a group: each batch is delivered alone,
    /// and one that panics again is set aside whole as a dead letter
    /// (`delivery_panicked`), so that one batch can neither hold back the
    /// others nor make the workers panic on it for ever. The panic message
    /// has been printed by the panic hook.
    async fn isolate_panic(&self, group: Vec<LeasedBatch>) -> Result<LeaseResult, SpoolError> {
        self.status.record_delivery_panic();
        tracing::error!(
            n_batches = group.len(),
            "Delivery panicked (a bug); delivering each batch of the group alone."
        );
        let mut total = LeaseResult::default();
        for leased in group {
            match AssertUnwindSafe(self.deliver(std::slice::from_ref(&leased)))
                .catch_unwind()
                .await
            {
                Ok(result) => {
                    let result = result?;
                    total.settled += result.settled;
                    total.released += result.released;
                }
                Err(_) => {
                    self.status.record_delivery_panic();
                    tracing::error!(
                        batch_id = leased.id.0,
                        "Delivery panicked on this batch alone; it is set aside as a dead letter."
                    );
                    let mut fate = BatchFate::new(self.projects.len());
                    fate.dead_letters.push(DeadLetter {
                        event: leased.batch.body.clone(),
                        reason: DELIVERY_PANICKED.to_owned(),
                        detail:
                            "delivering this batch panicked (a bug of the bridge); set aside whole"
                                .to_owned(),
                        event_type: None,
                        event_id: None,
                        workspace: leased.batch.workspace.clone(),
                        attempts: leased.attempts,
                    });
                    self.settle(&leased, fate).await?;
                    total.settled += 1;
                }
            }
        }
        Ok(total)
    }

    /// Delivers leased batches together: their events are mapped and packed
    /// into shared `/import` requests per project, so that Braze's batches
    /// of about 100 events travel in requests of up to 2,000. Each batch is
    /// then settled or released on its own: released when a project that
    /// holds some of its events could not take them, settled otherwise.
    pub async fn deliver(&self, group: &[LeasedBatch]) -> Result<LeaseResult, SpoolError> {
        let n_projects = self.projects.len();
        let mut fates: Vec<BatchFate> = group.iter().map(|_| BatchFate::new(n_projects)).collect();
        let mut outgoing: Vec<Outgoing<'_>> = self
            .projects
            .iter()
            .map(|_| Outgoing::new(self.options.batch_limits))
            .collect();

        // Map every event of every batch into its project's requests.
        let mut events_since_yield = 0;
        for (batch_idx, leased) in group.iter().enumerate() {
            let fate = &mut fates[batch_idx];
            let workspace = leased.batch.workspace.as_deref();
            let text = std::str::from_utf8(&leased.batch.body).ok();
            let Some(events) = text.and_then(parse_events) else {
                fate.dead_letters.push(DeadLetter {
                    event: leased.batch.body.clone(),
                    reason: INVALID_BATCH.to_owned(),
                    detail: "the stored body is not a readable Currents batch".to_owned(),
                    event_type: None,
                    event_id: None,
                    workspace: leased.batch.workspace.clone(),
                    attempts: leased.attempts,
                });
                continue;
            };
            for ParsedEvent { raw, event } in events {
                // Mapping is CPU work on the runtime's threads: a large
                // group must not hold them from ingest and the listener.
                events_since_yield += 1;
                if events_since_yield == EVENTS_PER_YIELD {
                    events_since_yield = 0;
                    tokio::task::yield_now().await;
                }
                let event = match event {
                    Ok(event) => event,
                    Err(invalid) => {
                        fate.dead_letters.push(dead_letter(
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
                    .min(n_projects - 1);
                // The rare dead letter below reads the type and id again
                // from `raw`, so that the common path copies neither.
                match self.projects[project_idx].mapper.map_event(event) {
                    Outcome::Mapped(mapped) => {
                        match outgoing[project_idx].push(&mapped, batch_idx, raw) {
                            Ok(()) => fate.sent_to[project_idx] += 1,
                            Err(error) => fate.dead_letters.push(dead_letter_from_text(
                                raw,
                                EVENT_TOO_LARGE,
                                &error.to_string(),
                                workspace,
                                leased.attempts,
                            )),
                        }
                    }
                    Outcome::Skipped(reason) => fate.skipped[reason as usize] += 1,
                    Outcome::Invalid(invalid) => fate.dead_letters.push(dead_letter_from_text(
                        raw,
                        invalid.reason.as_str(),
                        &invalid.detail,
                        workspace,
                        leased.attempts,
                    )),
                }
            }
        }

        // Send each project's events. A project that cannot take them now
        // makes every batch with events for it wait.
        let max_attempts = group
            .iter()
            .map(|leased| leased.attempts)
            .max()
            .unwrap_or(0);
        let mut retry_in: Vec<Option<Duration>> = vec![None; n_projects];
        for (project_idx, project_out) in outgoing.into_iter().enumerate() {
            let requests = project_out.finish();
            if requests.is_empty() {
                continue;
            }
            let project = &self.projects[project_idx];
            if let Some(wait) = self.pauses.wait(project_idx, Instant::now()) {
                // Paused after refused credentials: one probe per interval,
                // not a refused request per batch.
                mark_waiting(&mut fates, &requests, project_idx);
                retry_in[project_idx] = Some(wait);
                continue;
            }
            match project.send(&requests, &self.metrics).await {
                Ok(sent) => {
                    record_refused(group, &mut fates, &requests, project_idx, sent.refused);
                    self.pauses.resume(project_idx);
                    self.status.resume(project_idx);
                    self.failures
                        .sent(Instant::now(), project_idx, &project.name);
                }
                Err(failure) => {
                    // The requests before the failing one were answered:
                    // their refusals are dead letters, their events
                    // delivered; only the rest waits (or expires).
                    record_refused(
                        group,
                        &mut fates,
                        &requests,
                        project_idx,
                        failure.sent.refused,
                    );
                    let error = failure.error;
                    let unanswered = &requests[failure.failed_from..];
                    let wait = self.retry_delay(&error, max_attempts);
                    if error.is_auth() {
                        self.pauses.pause(project_idx, Instant::now() + wait);
                        self.status.pause(project_idx, error.to_string());
                    } else {
                        // Batches past their limits stop waiting for this
                        // project: their events for it become dead letters
                        // with the error, so no retry goes on for ever.
                        // (Refused credentials are the operator's to fix:
                        // those batches wait.)
                        self.expire(group, &mut fates, unanswered, project_idx, &error);
                    }
                    mark_waiting(&mut fates, unanswered, project_idx);
                    self.failures.send_failed(
                        Instant::now(),
                        project_idx,
                        &project.name,
                        &error,
                        wait,
                        max_attempts + 1,
                    );
                    retry_in[project_idx] = Some(wait);
                }
            }
        }

        // Settle or release each batch on its own.
        let mut result = LeaseResult::default();
        for (leased, fate) in group.iter().zip(fates) {
            let wait = (0..n_projects)
                .filter(|project_idx| fate.waiting_on[*project_idx] && !fate.expired[*project_idx])
                .filter_map(|project_idx| retry_in[project_idx])
                .max();
            if let Some(wait) = wait {
                self.release(leased, wait).await?;
                result.released += 1;
            } else {
                self.settle(leased, fate).await?;
                result.settled += 1;
            }
        }
        Ok(result)
    }

    /// Gives a batch back to the spool, due again in `wait`, and counts it.
    async fn release(&self, leased: &LeasedBatch, wait: Duration) -> Result<(), SpoolError> {
        self.spool.release(leased.id, wait).await?;
        self.status.record_released();
        self.metrics.released_batches.inc();
        Ok(())
    }

    /// Removes a delivered batch, stores its dead letters, and counts it.
    async fn settle(&self, leased: &LeasedBatch, fate: BatchFate) -> Result<(), SpoolError> {
        let n_dead_letters = fate.dead_letters.len() as u64;
        let mut dead_by_reason: Vec<(String, u64)> = Vec::new();
        for dead_letter in &fate.dead_letters {
            match dead_by_reason
                .iter_mut()
                .find(|(reason, _)| *reason == dead_letter.reason)
            {
                Some((_, count)) => *count += 1,
                None => dead_by_reason.push((dead_letter.reason.clone(), 1)),
            }
        }
        self.spool.settle(leased.id, fate.dead_letters).await?;
        // Counted once settled, so a batch retried later is not counted twice.
        let delivered_by_project: Vec<u64> = fate
            .sent_to
            .iter()
            .zip(&fate.refused_by)
            .map(|(sent, refused)| sent - refused)
            .collect();
        let n_delivered: u64 = delivered_by_project.iter().sum();
        self.status
            .record_delivered(n_delivered, &fate.skipped, n_dead_letters);
        for (project, count) in self.projects.iter().zip(&delivered_by_project) {
            if *count > 0 {
                self.metrics
                    .delivered_events
                    .get_or_create(&vec![("project", project.name.clone())])
                    .inc_by(*count);
            }
        }
        for (reason, count) in SkipReason::ALL.iter().zip(fate.skipped) {
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
        Ok(())
    }

    /// Dead-letters the events for `project_idx` of every batch of the
    /// group past its attempt or age limit.
    fn expire(
        &self,
        group: &[LeasedBatch],
        fates: &mut [BatchFate],
        requests: &[OutgoingRequest<'_>],
        project_idx: usize,
        error: &MixpanelError,
    ) {
        let now_ms = crate::clock::now_ms();
        let detail = format!("gave up after the attempt or age limit: {error}");
        for (_, origins) in requests {
            for &(batch_idx, raw) in origins {
                let leased = &group[batch_idx];
                if !self.is_past_limits(leased, now_ms) {
                    continue;
                }
                let fate = &mut fates[batch_idx];
                fate.expired[project_idx] = true;
                fate.refused_by[project_idx] += 1;
                fate.dead_letters.push(dead_letter_from_text(
                    raw,
                    DELIVERY_FAILED,
                    &detail,
                    leased.batch.workspace.as_deref(),
                    leased.attempts,
                ));
            }
        }
    }

    /// Whether this attempt at a batch is its last: the attempt limit
    /// (`delivery.max_attempts`) or the age limit (`delivery.max_age_secs`)
    /// is reached, so what still fails becomes a dead letter.
    fn is_past_limits(&self, leased: &LeasedBatch, now_ms: i64) -> bool {
        let max_age_ms = i64::try_from(self.options.max_age.as_millis()).unwrap_or(i64::MAX);
        leased.attempts.saturating_add(1) >= self.options.max_attempts
            || now_ms.saturating_sub(leased.batch.received_at_ms) >= max_age_ms
    }

    /// When to try a batch again: Mixpanel's `Retry-After`, the pause
    /// interval after refused credentials, or a doubling backoff.
    fn retry_delay(&self, error: &MixpanelError, attempts: u32) -> Duration {
        if error.is_auth() {
            return self.options.pause_retry;
        }
        self.backoff(attempts)
            .max(error.retry_after().unwrap_or_default())
            .min(self.options.max_retry_delay)
    }

    /// The doubling backoff after `attempts` failed deliveries: 5 s, 10 s,
    /// 20 s, … up to the longest retry delay.
    fn backoff(&self, attempts: u32) -> Duration {
        Duration::from_secs(5)
            .saturating_mul(2u32.saturating_pow(attempts.min(16)))
            .min(self.options.max_retry_delay)
    }
}

/// One `/import` request of a leased group: its events (shared with the
/// client, which compresses and sends them without a copy), and the leased
/// batch and raw Currents event behind each.
type OutgoingRequest<'a> = (Arc<ImportBatch>, Vec<(usize, &'a str)>);

/// One project's events of a leased group, packed into `/import` requests,
/// each request with the leased batch and raw Currents event behind each
/// of its records.
struct Outgoing<'a> {
    batcher: Batcher,
    raws: Vec<(usize, &'a str)>,
    done: Vec<OutgoingRequest<'a>>,
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
        batch_idx: usize,
        raw: &'a str,
    ) -> Result<(), MixpanelError> {
        if let Some(full) = self.batcher.push_event(event)? {
            let raws = self.raws.drain(..full.len()).collect();
            self.done.push((Arc::new(full), raws));
        }
        self.raws.push((batch_idx, raw));
        Ok(())
    }

    fn finish(mut self) -> Vec<OutgoingRequest<'a>> {
        if let Some(last) = self.batcher.flush() {
            self.done
                .push((Arc::new(last), std::mem::take(&mut self.raws)));
        }
        self.done
    }
}

/// Marks the batches with events in `requests` as waiting for the project.
fn mark_waiting(fates: &mut [BatchFate], requests: &[OutgoingRequest<'_>], project_idx: usize) {
    for (_, origins) in requests {
        for &(batch_idx, _) in origins {
            fates[batch_idx].waiting_on[project_idx] = true;
        }
    }
}

/// The records a project refused become dead letters of their batches.
fn record_refused(
    group: &[LeasedBatch],
    fates: &mut [BatchFate],
    requests: &[OutgoingRequest<'_>],
    project_idx: usize,
    refused: Vec<(usize, usize, String)>,
) {
    for (request_idx, index, message) in refused {
        let (batch_idx, raw) = requests[request_idx].1[index];
        let leased = &group[batch_idx];
        fates[batch_idx].refused_by[project_idx] += 1;
        fates[batch_idx].dead_letters.push(dead_letter_from_text(
            raw,
            REFUSED_BY_MIXPANEL,
            &message,
            leased.batch.workspace.as_deref(),
            leased.attempts,
        ));
    }
}

/// What happened to one batch of a leased group.
struct BatchFate {
    /// Events sent to each project.
    sent_to: Vec<u64>,
    /// Of those, records each project refused (now dead letters).
    refused_by: Vec<u64>,
    skipped: [u64; SkipReason::ALL.len()],
    dead_letters: Vec<DeadLetter>,
    /// Projects for which this batch is past its limits (its events for
    /// them are dead letters now).
    expired: Vec<bool>,
    /// Projects that have not taken some of this batch's events (their
    /// request failed, or the project is paused): the batch waits for them.
    waiting_on: Vec<bool>,
}

impl BatchFate {
    fn new(n_projects: usize) -> BatchFate {
        BatchFate {
            sent_to: vec![0; n_projects],
            refused_by: vec![0; n_projects],
            skipped: [0; SkipReason::ALL.len()],
            dead_letters: Vec::new(),
            expired: vec![false; n_projects],
            waiting_on: vec![false; n_projects],
        }
    }
}

/// When each paused project (refused credentials) may be tried again.
/// While one waits, its events are not sent at all; the first worker to
/// find the wait over sends one probe, and the others keep waiting.
#[derive(Default)]
struct Pauses {
    until: std::sync::Mutex<Vec<Option<Instant>>>,
}

impl Pauses {
    fn new(n_projects: usize) -> Pauses {
        Pauses {
            until: std::sync::Mutex::new(vec![None; n_projects]),
        }
    }

    /// How long a paused project's events must still wait, or `None` to
    /// send them (not paused, or this caller's turn to probe).
    fn wait(&self, project_idx: usize, now: Instant) -> Option<Duration> {
        let mut until = self
            .until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let slot = until.get_mut(project_idx)?;
        match *slot {
            Some(deadline) if now < deadline => Some(deadline - now),
            Some(_) => {
                // This caller probes; the others wait for its answer.
                *slot = Some(now + PROBE_ANSWER_WAIT);
                None
            }
            None => None,
        }
    }

    fn pause(&self, project_idx: usize, until: Instant) {
        let mut slots = self
            .until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(slot) = slots.get_mut(project_idx) {
            *slot = Some(until);
        }
    }

    fn resume(&self, project_idx: usize) {
        let mut slots = self
            .until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(slot) = slots.get_mut(project_idx) {
            *slot = None;
        }
    }
}

/// How long other batches of a paused project wait while one probe is out.
const PROBE_ANSWER_WAIT: Duration = Duration::from_secs(30);

/// What became of a leased group of batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseResult {
    /// Batches whose every event was delivered, skipped or dead-lettered,
    /// now removed from the spool.
    pub settled: usize,
    /// Batches given back to the spool to be tried again later.
    pub released: usize,
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

/// A dead letter for a record that will not be sent as it is, reading its
/// type and id again from `raw` (the rare path: the common one copies
/// neither); backfill's dead letters too.
pub(crate) fn dead_letter_from_text(
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

/// The body bytes of leased batches, as a lease's byte limit counts them.
fn body_bytes(batches: &[LeasedBatch]) -> usize {
    batches.iter().map(|leased| leased.batch.body.len()).sum()
}

#[cfg(test)]
mod tests;
