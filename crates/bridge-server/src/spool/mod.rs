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
//! operator replays or purges them.

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

/// A durable work queue of Currents batches. See the module doc for the contract.
pub trait Spool: Send + Sync + 'static {
    /// Stores a batch durably and returns its id.
    fn append(&self, batch: NewBatch) -> impl Future<Output = Result<BatchId, SpoolError>> + Send;

    /// Leases up to `max_batches` due batches for `lease`, counting one
    /// attempt for each.
    fn lease(
        &self,
        max_batches: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<LeasedBatch>, SpoolError>> + Send;

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
}
