//! Batching for `/import`: events packed into JSON-array request bodies that
//! stay within Mixpanel's limits, in order, never splitting or dropping one.

use crate::{Error, Event};

/// Mixpanel's limits for one `/import` request. Configurable because
/// Mixpanel has changed them before (the byte cap was 2 MB until 2025).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Events per request; Mixpanel accepts at most 2000.
    pub max_events: usize,
    /// Uncompressed body bytes per request; Mixpanel accepts 10 MB.
    pub max_bytes: usize,
    /// Bytes of one event; Mixpanel refuses events of 1 MB or more.
    pub max_event_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> BatchLimits {
        BatchLimits {
            max_events: 2000,
            max_bytes: 10_000_000,
            max_event_bytes: 1_000_000,
        }
    }
}

/// One `/import` request body: a JSON array of events, with the position
/// of each event so that results can name them and a batch can be split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportBatch {
    /// `[e0,e1,…]`, the request body itself; empty while the batch is.
    body: Vec<u8>,
    /// Where each event starts in `body`.
    starts: Vec<usize>,
}

impl ImportBatch {
    /// An empty batch.
    pub fn new() -> ImportBatch {
        ImportBatch::default()
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// An empty batch with room for `body_bytes` of body and `events` events.
    fn with_capacity(body_bytes: usize, events: usize) -> ImportBatch {
        ImportBatch {
            body: Vec::with_capacity(body_bytes),
            starts: Vec::with_capacity(events),
        }
    }

    /// The request body size, uncompressed.
    pub fn body_bytes(&self) -> usize {
        self.body_slice().len()
    }

    /// The JSON text of event `idx`.
    pub fn event(&self, idx: usize) -> &[u8] {
        let start = self.starts[idx];
        let end = self
            .starts
            .get(idx + 1)
            .map_or(self.body.len() - 1, |next| next - 1);
        &self.body[start..end]
    }

    /// The events' JSON texts, in order.
    pub fn events(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|idx| self.event(idx))
    }

    /// The request body: a JSON array.
    pub fn body(&self) -> Vec<u8> {
        self.body_slice().to_vec()
    }

    /// The request body, borrowed.
    pub(crate) fn body_slice(&self) -> &[u8] {
        if self.body.is_empty() {
            b"[]"
        } else {
            &self.body
        }
    }

    /// Empties the batch, keeping its memory for the next events.
    pub fn clear(&mut self) {
        self.body.clear();
        self.starts.clear();
    }

    /// Appends one event's JSON text (no size checks: see [`Batcher`]).
    pub fn push(&mut self, event_json: &[u8]) {
        match self.body.last_mut() {
            // The closing `]` becomes the separator.
            Some(last) => *last = b',',
            None => self.body.push(b'['),
        }
        self.starts.push(self.body.len());
        self.body.extend_from_slice(event_json);
        self.body.push(b']');
    }

    /// The body size after pushing an event of `event_bytes`.
    fn body_bytes_with(&self, event_bytes: usize) -> usize {
        if self.body.is_empty() {
            event_bytes + 2
        } else {
            self.body.len() + 1 + event_bytes
        }
    }

    /// Splits into two halves (the first gets the extra event), for a 413.
    #[cfg_attr(not(feature = "network"), allow(dead_code))]
    pub(crate) fn split(&self) -> (ImportBatch, ImportBatch) {
        let middle = self.len().div_ceil(2);
        let mut first = ImportBatch::new();
        let mut second = ImportBatch::new();
        for (idx, event) in self.events().enumerate() {
            if idx < middle {
                first.push(event);
            } else {
                second.push(event);
            }
        }
        (first, second)
    }
}

/// Packs events into batches within [`BatchLimits`].
///
/// Events keep their order; each lands in exactly one batch. An event larger
/// than `max_bytes` (but under `max_event_bytes`) travels alone.
#[derive(Debug, Clone)]
pub struct Batcher {
    limits: BatchLimits,
    current: ImportBatch,
    /// A finished batch's memory, handed back by [`Batcher::recycle`], to
    /// hold the next batch.
    spare: Option<ImportBatch>,
    /// Reused by [`Batcher::push_event`] to serialize each event without
    /// allocating.
    scratch: Vec<u8>,
}

impl Batcher {
    /// A batcher with these limits.
    pub fn new(limits: BatchLimits) -> Batcher {
        Batcher {
            limits,
            current: ImportBatch::new(),
            spare: None,
            scratch: Vec::new(),
        }
    }

    /// The limits in use.
    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Adds one event given as compact JSON text (one line, valid JSON).
    /// Returns the batch it completed, if adding it had to start a new one.
    /// An event over `max_event_bytes` is refused and not added.
    pub fn push(&mut self, event_json: &[u8]) -> Result<Option<ImportBatch>, Error> {
        if event_json.len() >= self.limits.max_event_bytes {
            return Err(Error::EventTooLarge {
                bytes: event_json.len(),
                limit_bytes: self.limits.max_event_bytes,
            });
        }
        if self.current.body.capacity() == 0
            && let Some(spare) = self.spare.take()
        {
            self.current = spare;
        }
        let is_full = !self.current.is_empty()
            && (self.current.len() >= self.limits.max_events
                || self.current.body_bytes_with(event_json.len()) > self.limits.max_bytes);
        let completed = is_full.then(|| {
            // A recycled batch's memory, or room for a batch like the
            // last one, so that filling it does not copy the body again
            // and again as it grows.
            let next = self.spare.take().unwrap_or_else(|| {
                ImportBatch::with_capacity(
                    (self.current.body.len() + self.current.body.len() / 8)
                        .min(self.limits.max_bytes),
                    self.current.len(),
                )
            });
            std::mem::replace(&mut self.current, next)
        });
        self.current.push(event_json);
        Ok(completed)
    }

    /// Serializes and adds one event.
    pub fn push_event(&mut self, event: &Event<'_>) -> Result<Option<ImportBatch>, Error> {
        let mut json = std::mem::take(&mut self.scratch);
        json.clear();
        event.write_json(&mut json);
        let pushed = self.push(&json);
        self.scratch = json;
        pushed
    }

    /// The events added since the last completed batch, if any.
    pub fn flush(&mut self) -> Option<ImportBatch> {
        (!self.current.is_empty())
            .then(|| std::mem::replace(&mut self.current, self.spare.take().unwrap_or_default()))
    }

    /// Takes back a batch that is done with (sent, or written out): the
    /// next batch fills its memory rather than new memory. A long run then
    /// cycles through a few buffers instead of allocating, touching and
    /// freeing a fresh one of up to `max_bytes` per request. Of two spares
    /// the larger is kept.
    pub fn recycle(&mut self, mut batch: ImportBatch) {
        batch.clear();
        let capacity = batch.body.capacity();
        if self
            .spare
            .as_ref()
            .is_none_or(|spare| spare.body.capacity() < capacity)
        {
            self.spare = Some(batch);
        }
    }

    /// The memory this batcher holds and no longer needs: its spare, or
    /// its open batch if that is empty. For handing on to another
    /// batcher's [`Batcher::recycle`] when this one is done.
    pub fn into_spare(self) -> Option<ImportBatch> {
        let open =
            (self.current.is_empty() && self.current.body.capacity() > 0).then_some(self.current);
        self.spare.or(open)
    }

    /// Events waiting in the open batch.
    pub fn pending(&self) -> usize {
        self.current.len()
    }
}

#[cfg(test)]
mod tests;
