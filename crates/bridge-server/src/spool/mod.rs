//! The spool: where Currents batches wait, durably, between Braze and Mixpanel.
//!
//! # Contract
//!
//! A spool is a queue of [`NewBatch`]es with at-least-once delivery:
//! 1. [`Spool::append`] returns only once the batch is durable (on disk and
//!    fsync'd for the embedded spool; acknowledged by the log for a
//!    distributed one). Only then may the ingest endpoint answer Braze 2xx.
//! 2. [`Spool::lease`] hands out batches that are due, hiding each for the
//!    lease time and counting the delivery attempt. A leased batch that is
//!    neither settled nor released before its lease ends is handed out again
//!    (the worker died or hung).
//! 3. [`Spool::settle`] finishes a batch: it is removed and its dead letters
//!    are stored, in one atomic step.
//! 4. [`Spool::release`] gives a batch back to be retried after a delay
//!    (the attempt was counted by the lease).
//!
//! These are the semantics of a work queue with visibility timeouts, which
//! both the embedded SQLite spool ([`sqlite::SqliteSpool`]) and a NATS
//! JetStream work-queue stream (ack, nak with delay, ack-wait) provide.
//!
//! Dead letters ([`DeadLetter`]) are events that will never be delivered as
//! they are: invalid input, records Mixpanel refused. They stay until an
//! operator replays or purges them, through a [`DeadLetterAdmin`] (the
//! `dlq` command): [`sqlite::DeadLetterStore`] or
//! [`nats::NatsDeadLetterStore`], which share [`DeadLetterEntry`],
//! [`DeadLetterFilter`] and [`Replayed`]. A letter is one event, except for
//! `archive_failed`, which holds a whole batch as received and is replayed
//! as that batch.
//!
//! Two implementations: [`sqlite::SqliteSpool`], the embedded default (one
//! process), and [`nats::NatsSpool`], a JetStream work-queue stream shared
//! by several `serve` replicas.

pub mod any;
pub mod nats;
pub mod sqlite;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

/// A batch as the ingest endpoint received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatch {
    /// The Currents body, `{"events": [...]}`, as received (after gzip).
    pub body: Bytes,
    /// Which Braze workspace sent it (`?workspace=`), if it said.
    pub workspace: Option<String>,
    /// When it was received, UNIX milliseconds.
    pub received_at_ms: i64,
}

/// The spool's id for a stored batch; increases with arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub i64);

/// A batch handed to a delivery worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedBatch {
    /// Its id, for settling or releasing it.
    pub id: BatchId,
    /// The batch as received.
    pub batch: NewBatch,
    /// Deliveries tried before this one: how often the batch was leased
    /// before (released, or its lease ran out, or its worker died).
    pub attempts: u32,
}

/// The most body bytes a delivery worker leases for one group: one
/// `/import` request's worth and then some, and the bound on what a worker
/// holds in memory (a single larger batch still goes, alone).
pub const LEASE_MAX_BYTES: usize = 8 * 1024 * 1024;

/// How much one [`Spool::lease_within`] may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseLimits {
    /// At most this many batches.
    pub max_batches: usize,
    /// At most this many bytes of bodies.
    pub max_bytes: usize,
    /// Whether a first due batch larger than `max_bytes` is leased alone
    /// (when starting a group, so that no batch is stuck for its size)
    /// rather than left for a later lease (when topping a group up, so that
    /// the group stays within its budget).
    pub oversized_alone: bool,
}

impl LeaseLimits {
    /// A new group: up to `max_batches` and [`LEASE_MAX_BYTES`], or one
    /// larger batch alone.
    pub fn new_group(max_batches: usize) -> Self {
        LeaseLimits {
            max_batches,
            max_bytes: LEASE_MAX_BYTES,
            oversized_alone: true,
        }
    }

    /// More for a group that already holds some: up to `max_batches` and
    /// `max_bytes`, never beyond.
    pub fn top_up(max_batches: usize, max_bytes: usize) -> Self {
        LeaseLimits {
            max_batches,
            max_bytes,
            oversized_alone: false,
        }
    }
}

/// One event that will not be delivered as it is, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event's JSON text as received.
    pub event: Bytes,
    /// A closed snake_case reason: an invalid reason (`missing_id`, …),
    /// `refused_by_mixpanel`, ….
    pub reason: String,
    /// The details: Mixpanel's message, the parser's explanation.
    pub detail: String,
    /// The event's type, when it could be read.
    pub event_type: Option<String>,
    /// The Currents event id, when it could be read.
    pub event_id: Option<String>,
    /// The workspace of the batch it came in.
    pub workspace: Option<String>,
    /// Delivery attempts made before it was dead-lettered.
    pub attempts: u32,
}

/// The spool's size and age, for metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Batches waiting (leased or not).
    pub n_batches: u64,
    /// Their stored bytes.
    pub n_bytes: u64,
    /// When the oldest waiting batch was received, UNIX milliseconds.
    pub oldest_received_at_ms: Option<i64>,
    /// Dead letters kept.
    pub n_dead_letters: u64,
    /// Stored batches found damaged and set aside (never delivered; kept for
    /// recovery).
    pub n_quarantined: u64,
}

/// Why the spool could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool is at its configured size; try again after delivery frees space.
    #[error("spool is full ({n_bytes} of {max_bytes} bytes)")]
    Full {
        /// Bytes stored.
        n_bytes: u64,
        /// The configured maximum.
        max_bytes: u64,
    },
    /// The spool is closing; nothing more is accepted.
    #[error("spool is shutting down")]
    Closed,
    /// The storage failed (disk error, I/O error, corruption).
    #[error("spool storage failed: {0}")]
    Storage(String),
}

/// Events per replayed batch at most.
pub const REPLAY_MAX_EVENTS_PER_BATCH: usize = 500;

/// Which dead letters an operation applies to. Every field that is set must
/// match; the default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// The reason, exactly (`refused_by_mixpanel`, `missing_id`, …).
    pub reason: Option<String>,
    /// The event type, exactly (`users.messages.email.Click`).
    pub event_type: Option<String>,
    /// Dead-lettered at or after this time, UNIX milliseconds.
    pub since_ms: Option<i64>,
    /// Dead-lettered before this time, UNIX milliseconds.
    pub until_ms: Option<i64>,
    /// Only these entry ids, when not empty.
    pub ids: Vec<i64>,
}

impl DeadLetterFilter {
    /// Whether `entry` matches: the meaning every store's queries have.
    pub fn matches(&self, entry: &DeadLetterEntry) -> bool {
        self.reason
            .as_ref()
            .is_none_or(|reason| *reason == entry.letter.reason)
            && self
                .event_type
                .as_ref()
                .is_none_or(|event_type| Some(event_type) == entry.letter.event_type.as_ref())
            && self
                .since_ms
                .is_none_or(|since_ms| entry.dead_lettered_at_ms >= since_ms)
            && self
                .until_ms
                .is_none_or(|until_ms| entry.dead_lettered_at_ms < until_ms)
            && (self.ids.is_empty() || self.ids.contains(&entry.id))
    }

    /// Whether it matches everything.
    pub fn is_everything(&self) -> bool {
        *self == DeadLetterFilter::default()
    }
}

/// One stored dead letter: the letter as delivery wrote it, and where and
/// when the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterEntry {
    /// The entry's id in the store (SQLite's row id; the NATS dead-letter
    /// stream's sequence).
    pub id: i64,
    /// When it was dead-lettered, UNIX milliseconds.
    pub dead_lettered_at_ms: i64,
    /// The spool id of the batch it came in.
    pub batch_id: Option<i64>,
    /// The event, its reason and details.
    pub letter: DeadLetter,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Events moved back into the spool.
    pub n_events: u64,
    /// Batches they were put in.
    pub n_batches: u64,
    /// Matching entries left in the store because their event is not JSON
    /// (replaying them would make the whole batch unreadable).
    pub n_not_json: u64,
}

/// Whether a dead letter holds a whole batch as received rather than one
/// event: `archive_failed` (delivery could not archive the batch before its
/// limits) and `delivery_panicked` (a bug set the batch aside). Replay puts
/// such a letter back as that batch, alone and unchanged, never inside a
/// new `{"events":[...]}`.
pub(crate) fn is_whole_batch(reason: &str) -> bool {
    reason == crate::delivery::ARCHIVE_FAILED || reason == crate::delivery::DELIVERY_PANICKED
}

/// The events of a whole-batch dead letter, for [`Replayed::n_events`]
/// (1 for a body that is not a readable batch: it is still one entry).
pub(crate) fn n_events_in_batch(body: &[u8]) -> u64 {
    std::str::from_utf8(body)
        .ok()
        .and_then(|text| currents_model::Batch::parse(text).ok())
        .map_or(1, |batch| batch.events.len() as u64)
}

/// Whether `bytes` is one JSON value (a dead letter that can be replayed).
pub(crate) fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&serde_json::value::RawValue>(bytes).is_ok()
}

/// The body of a replayed batch: `{"events":[...]}` around `events`.
pub(crate) fn replay_body<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut body = Vec::from(&b"{\"events\":["[..]);
    for (idx, event) in events.into_iter().enumerate() {
        if idx != 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

/// The dead-letter administration the `dlq` command needs, whichever spool
/// keeps them: list, show, count, replay and purge with the same
/// [`DeadLetterFilter`] semantics, entries oldest first.
///
/// The SQLite store's calls block (they run inline: use it from the CLI or
/// on `spawn_blocking`); the NATS store's are requests to the server.
pub trait DeadLetterAdmin {
    /// Entries matching `filter`, oldest first, at most `limit`.
    fn list(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetterEntry>, SpoolError>>;

    /// How many entries match `filter`.
    fn count(&self, filter: &DeadLetterFilter) -> impl Future<Output = Result<u64, SpoolError>>;

    /// The entry `id`, if it is stored.
    fn get(&self, id: i64) -> impl Future<Output = Result<Option<DeadLetterEntry>, SpoolError>>;

    /// Moves the entries matching `filter` back into the spool as new
    /// batches `{"events":[...]}`, one workspace per batch and at most
    /// [`REPLAY_MAX_EVENTS_PER_BATCH`] events each, oldest first; an entry
    /// holding a whole batch (reason `archive_failed`) goes back as that batch,
    /// alone; entries whose event is not JSON stay (counted in
    /// [`Replayed::n_not_json`]).
    fn replay(
        &mut self,
        filter: &DeadLetterFilter,
    ) -> impl Future<Output = Result<Replayed, SpoolError>>;

    /// Deletes the entries matching `filter`; returns how many.
    fn purge(&mut self, filter: &DeadLetterFilter)
    -> impl Future<Output = Result<u64, SpoolError>>;

    /// Stores letters that came from outside the spool (no batch: the
    /// refusals of a `backfill`), durably, before returning how many.
    fn add(&mut self, letters: &[DeadLetter]) -> impl Future<Output = Result<u64, SpoolError>>;
}

/// A durable work queue of Currents batches. See the module doc for the contract.
pub trait Spool: Send + Sync + 'static {
    /// Stores a batch durably and returns its id.
    fn append(&self, batch: NewBatch) -> impl Future<Output = Result<BatchId, SpoolError>> + Send;

    /// Leases due batches within `limits` for `lease`, oldest first,
    /// counting one attempt for each.
    fn lease_within(
        &self,
        limits: LeaseLimits,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<LeasedBatch>, SpoolError>> + Send;

    /// Leases a new group: up to `max_batches` due batches and
    /// [`LEASE_MAX_BYTES`] (or one larger batch alone) for `lease`.
    fn lease(
        &self,
        max_batches: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<LeasedBatch>, SpoolError>> + Send {
        self.lease_within(LeaseLimits::new_group(max_batches), lease)
    }

    /// Removes a delivered batch and stores its dead letters, atomically.
    fn settle(
        &self,
        id: BatchId,
        dead_letters: Vec<DeadLetter>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Gives a leased batch back, due again after `retry_in` (its attempt was
    /// counted when it was leased).
    fn release(
        &self,
        id: BatchId,
        retry_in: Duration,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Current size and age.
    fn stats(&self) -> impl Future<Output = Result<SpoolStats, SpoolError>> + Send;

    /// The figures of the consumer that replicas share (NATS), for
    /// `/status` and `/metrics`; `None` for a spool owned by one process.
    fn consumer_stats(
        &self,
    ) -> impl Future<Output = Option<Result<nats::NatsConsumerStats, SpoolError>>> + Send {
        async { None }
    }
}
