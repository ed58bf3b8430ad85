//! A bulk import pipeline: events from any source, batched on the reading
//! thread, imported with bounded concurrency, every record accounted for.
//!
//! The two halves meet in a bounded channel, so memory stays flat: a
//! [`Feeder`] (synchronous, e.g. on a thread reading a file) batches events
//! and sends full batches; [`run`] (async) imports up to `max_in_flight`
//! batches at once. Every record ends imported or reported to the failure
//! callback with a [`FailureReason`]; [`Counters`] can be read at any time
//! for progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use crate::{BatchLimits, Batcher, Client, Error, ImportBatch};

/// Where a record came from: which input, and which line or element in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The input's number, from 0, in the order the inputs were given.
    pub source: u32,
    /// The line (NDJSON) or array element, from 1.
    pub line: u64,
}

/// Why a record was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The input was not a JSON object.
    InvalidJson,
    /// The event is over Mixpanel's per-event size limit.
    EventTooLarge,
    /// Mixpanel refused the record (a 400 `failed_records` entry, or a
    /// single event refused as too large).
    Refused,
    /// The request carrying it failed after every retry, or was refused as
    /// a whole; the record may be sent again later.
    RequestFailed,
}

impl FailureReason {
    /// The reason's snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureReason::InvalidJson => "invalid_json",
            FailureReason::EventTooLarge => "event_too_large",
            FailureReason::Refused => "refused_by_mixpanel",
            FailureReason::RequestFailed => "request_failed",
        }
    }
}

/// One record that was not imported.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Where it came from.
    pub position: Position,
    /// Why it failed.
    pub reason: FailureReason,
    /// The explanation (Mixpanel's, where it gave one).
    pub message: String,
    /// The offending field, when Mixpanel named one.
    pub field: Option<String>,
    /// The record's text as read.
    pub record: Vec<u8>,
}

/// Running totals, shared between the pipeline and whoever shows progress.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read (events and invalid input).
    pub read: AtomicU64,
    /// Records Mixpanel imported.
    pub imported: AtomicU64,
    /// Records not imported.
    pub failed: AtomicU64,
    /// Batches sent.
    pub batches: AtomicU64,
    /// HTTP requests made (retries and splits included).
    pub requests: AtomicU64,
    /// Uncompressed request body bytes of the batches sent.
    pub bytes: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

enum Work {
    Batch(ImportBatch, Vec<Position>),
    Failure(Failure),
}

/// The receiving end of the pipeline, for [`run`].
pub struct WorkReceiver {
    receiver: mpsc::Receiver<Work>,
}

/// The reading side: batches events and hands them to [`run`].
pub struct Feeder {
    batcher: Batcher,
    positions: Vec<Position>,
    sender: mpsc::Sender<Work>,
    counters: Arc<Counters>,
}

/// The receiver went away: the import stopped (see what [`run`] returned).
#[derive(Debug, thiserror::Error)]
#[error("the import stopped")]
pub struct Stopped;

/// A connected feeder and receiver. `max_queued_batches` bounds the
/// batches waiting between them (and so the memory in use).
pub fn channel(
    limits: BatchLimits,
    max_queued_batches: usize,
    counters: Arc<Counters>,
) -> (Feeder, WorkReceiver) {
    let (sender, receiver) = mpsc::channel(max_queued_batches.max(1));
    let feeder = Feeder {
        batcher: Batcher::new(limits),
        positions: Vec::with_capacity(limits.max_events),
        sender,
        counters,
    };
    (feeder, WorkReceiver { receiver })
}

impl Feeder {
    /// Adds one event (one JSON object, on one line). Blocks while the
    /// queue is full; must not be called from an async task.
    pub fn event(&mut self, position: Position, json: &[u8]) -> Result<(), Stopped> {
        Counters::add(&self.counters.read, 1);
        match self.batcher.push(json) {
            Ok(completed) => {
                if let Some(batch) = completed {
                    let positions = self.positions.drain(..batch.len()).collect();
                    self.send(Work::Batch(batch, positions))?;
                }
                self.positions.push(position);
                Ok(())
            }
            Err(error) => self.send(Work::Failure(Failure {
                position,
                reason: FailureReason::EventTooLarge,
                message: error.to_string(),
                field: None,
                record: json.to_vec(),
            })),
        }
    }

    /// Reports input that is not an event.
    pub fn invalid(
        &mut self,
        position: Position,
        text: &[u8],
        message: String,
    ) -> Result<(), Stopped> {
        Counters::add(&self.counters.read, 1);
        self.send(Work::Failure(Failure {
            position,
            reason: FailureReason::InvalidJson,
            message,
            field: None,
            record: text.to_vec(),
        }))
    }

    /// Sends the last, partly filled batch. Dropping the feeder without
    /// calling this loses nothing sent so far but leaves those events unsent.
    pub fn finish(mut self) -> Result<(), Stopped> {
        if let Some(batch) = self.batcher.flush() {
            let positions = std::mem::take(&mut self.positions);
            self.send(Work::Batch(batch, positions))?;
        }
        Ok(())
    }

    fn send(&self, work: Work) -> Result<(), Stopped> {
        self.sender.blocking_send(work).map_err(|_| Stopped)
    }
}

/// Imports everything the feeder sends until it finishes, `max_in_flight`
/// batches at a time, reporting each record that is not imported.
///
/// Returns an error only when going on is pointless: Mixpanel refused the
/// credentials ([`Error::Auth`]). Batches already in flight are still
/// accounted for; batches not yet read are left unread.
pub async fn run(
    client: &Client,
    mut work: WorkReceiver,
    max_in_flight: usize,
    counters: &Counters,
    on_failure: &mut dyn FnMut(Failure),
) -> Result<(), Error> {
    let mut in_flight = FuturesUnordered::new();
    let mut input_done = false;
    let mut auth_error = None;
    loop {
        let can_take_more =
            !input_done && auth_error.is_none() && in_flight.len() < max_in_flight.max(1);
        tokio::select! {
            next = work.receiver.recv(), if can_take_more => match next {
                Some(Work::Batch(batch, positions)) => {
                    Counters::add(&counters.batches, 1);
                    Counters::add(&counters.bytes, batch.body_bytes() as u64);
                    let batch = Arc::new(batch);
                    in_flight.push(async move {
                        let result = client.import_shared(Arc::clone(&batch)).await;
                        (batch, positions, result)
                    });
                }
                Some(Work::Failure(failure)) => {
                    Counters::add(&counters.failed, 1);
                    on_failure(failure);
                }
                None => input_done = true,
            },
            Some((batch, positions, result)) = in_flight.next() => {
                if let Err(error) = account(&batch, &positions, result, counters, on_failure) {
                    auth_error = Some(error);
                }
            }
            else => break,
        }
        if (input_done || auth_error.is_some()) && in_flight.is_empty() {
            break;
        }
    }
    match auth_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Counts one batch's result and reports its failed records.
fn account(
    batch: &ImportBatch,
    positions: &[Position],
    result: Result<crate::ImportResult, Error>,
    counters: &Counters,
    on_failure: &mut dyn FnMut(Failure),
) -> Result<(), Error> {
    match result {
        Ok(result) => {
            Counters::add(&counters.requests, u64::from(result.n_requests));
            let n_failed = result.failed.len() as u64;
            Counters::add(
                &counters.imported,
                (batch.len() as u64).saturating_sub(n_failed),
            );
            Counters::add(&counters.failed, n_failed);
            for record in result.failed {
                on_failure(Failure {
                    position: positions[record.index],
                    reason: FailureReason::Refused,
                    message: record.message,
                    field: record.field,
                    record: batch.event(record.index).to_vec(),
                });
            }
            Ok(())
        }
        Err(error) => {
            Counters::add(&counters.requests, 1);
            Counters::add(&counters.failed, batch.len() as u64);
            let message = error.to_string();
            for (idx, position) in positions.iter().enumerate() {
                on_failure(Failure {
                    position: *position,
                    reason: FailureReason::RequestFailed,
                    message: message.clone(),
                    field: None,
                    record: batch.event(idx).to_vec(),
                });
            }
            if error.is_auth() { Err(error) } else { Ok(()) }
        }
    }
}
