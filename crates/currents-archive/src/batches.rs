//! Archived Custom HTTP connector batches as events: [`BatchFileEvents`]
//! reads an object of `{"events":[...]}` envelopes (the whole object one
//! envelope, or one per line; gzip-compressed or not) and yields each
//! event's JSON text exactly as it was received, in the HTTP shape.
//!
//! This is what `serve`'s own archive holds (one request body per
//! `.json.gz` object, see [`crate::layout::batch_object_key`]), and what
//! `transform` reads. Envelopes are split with `currents_model::Batch`, so
//! they are read as the service reads them.

use std::io::Read as _;
use std::ops::Range;

use bytes::Bytes;
use currents_model::Batch;

use crate::ArchiveError;

/// The most bytes a gzip-compressed object may inflate to.
pub const MAX_INFLATED_BYTES: usize = 1 << 30;

/// The events of one batch object, in order, numbered from 0 across its
/// envelopes.
///
/// It is an [`Iterator`] of events (each a `String`);
/// [`BatchFileEvents::next_into`] appends them to a buffer you reuse
/// instead. A line that is not an envelope yields the events before it,
/// then one [`ArchiveError::Envelope`] naming the line, then nothing.
#[derive(Debug)]
pub struct BatchFileEvents {
    text: String,
    /// The events of the current envelope, as ranges of `text`.
    events: Vec<Range<usize>>,
    /// The next of them.
    event_idx: usize,
    /// Where the next line starts (one envelope per line).
    next_line: usize,
    /// The number of the last line read, from 1.
    line: usize,
    next_record: u64,
    done: bool,
}

impl BatchFileEvents {
    /// Reads `object`: inflated if it starts with gzip's magic bytes (several
    /// gzip members are read one after the other), then taken as one
    /// envelope if it reads as one, else as one envelope per line (blank
    /// lines skipped).
    ///
    /// Errors: an empty object, gzip data that cannot be inflated or
    /// inflates beyond [`MAX_INFLATED_BYTES`], text that is not UTF-8. An
    /// envelope that cannot be read is an error when its turn comes.
    pub fn new(object: Bytes) -> Result<BatchFileEvents, ArchiveError> {
        if object.is_empty() {
            return Err(ArchiveError::EmptyFile);
        }
        let bytes = if object.starts_with(&[0x1f, 0x8b]) {
            inflate(&object)?
        } else {
            object.to_vec()
        };
        let text = String::from_utf8(bytes).map_err(|error| ArchiveError::NotUtf8 {
            valid_up_to: error.utf8_error().valid_up_to(),
        })?;
        let mut events = BatchFileEvents {
            events: Vec::new(),
            event_idx: 0,
            next_line: 0,
            line: 0,
            next_record: 0,
            done: false,
            text,
        };
        if let Ok(batch) = Batch::parse(&events.text) {
            events.events = ranges(&events.text, &batch);
            events.next_line = events.text.len();
            events.line = 1;
        }
        Ok(events)
    }

    /// The number of the next record (from 0): how many events were read
    /// or skipped so far.
    pub fn next_record(&self) -> u64 {
        self.next_record
    }

    /// Appends the next event's JSON text to `out`: `Ok(true)`, or
    /// `Ok(false)` at the end. On error nothing is appended, and every later
    /// call returns `Ok(false)`.
    pub fn next_into(&mut self, out: &mut String) -> Result<bool, ArchiveError> {
        match self.next_range()? {
            Some(range) => {
                out.push_str(&self.text[range]);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Skips up to `n` events; how many were skipped (fewer at the end).
    /// Events of an envelope are skipped without being looked at, but each
    /// line reached is split into its events.
    pub fn skip_records(&mut self, n: u64) -> Result<u64, ArchiveError> {
        let mut skipped = 0;
        while skipped < n {
            let left = u64::try_from(self.events.len() - self.event_idx).unwrap_or(u64::MAX);
            if left > 0 {
                let step = left.min(n - skipped);
                self.event_idx += usize::try_from(step).unwrap_or(usize::MAX);
                self.next_record += step;
                skipped += step;
                continue;
            }
            if !self.next_envelope()? {
                break;
            }
        }
        Ok(skipped)
    }

    fn next_range(&mut self) -> Result<Option<Range<usize>>, ArchiveError> {
        while self.event_idx == self.events.len() {
            if !self.next_envelope()? {
                return Ok(None);
            }
        }
        let range = self.events[self.event_idx].clone();
        self.event_idx += 1;
        self.next_record += 1;
        Ok(Some(range))
    }

    /// Reads the next non-blank line's envelope: `false` at the end.
    fn next_envelope(&mut self) -> Result<bool, ArchiveError> {
        if self.done {
            return Ok(false);
        }
        loop {
            if self.next_line >= self.text.len() {
                self.done = true;
                return Ok(false);
            }
            let start = self.next_line;
            let end = self.text[start..]
                .find('\n')
                .map_or(self.text.len(), |idx| start + idx);
            self.next_line = end + 1;
            self.line += 1;
            let line = &self.text[start..end];
            if line.trim().is_empty() {
                continue;
            }
            match Batch::parse(line) {
                Ok(batch) => {
                    self.events = ranges(&self.text, &batch);
                    self.event_idx = 0;
                    return Ok(true);
                }
                Err(source) => {
                    self.done = true;
                    self.events.clear();
                    self.event_idx = 0;
                    return Err(ArchiveError::Envelope {
                        line: self.line,
                        record: self.next_record,
                        source,
                    });
                }
            }
        }
    }
}

impl Iterator for BatchFileEvents {
    type Item = Result<String, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_range() {
            Ok(Some(range)) => Some(Ok(self.text[range].to_owned())),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        }
    }
}

impl std::iter::FusedIterator for BatchFileEvents {}

/// Where each event of `batch` is in `text`, which it was parsed from.
fn ranges(text: &str, batch: &Batch<'_>) -> Vec<Range<usize>> {
    let base = text.as_ptr() as usize;
    batch
        .events
        .iter()
        .map(|raw| {
            let start = raw.get().as_ptr() as usize - base;
            start..start + raw.get().len()
        })
        .collect()
}

/// Inflates gzip data, all its members, within [`MAX_INFLATED_BYTES`].
fn inflate(compressed: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(8).min(64 << 20));
    let limit = u64::try_from(MAX_INFLATED_BYTES).unwrap_or(u64::MAX) + 1;
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|error| ArchiveError::Gzip {
            detail: error.to_string(),
        })?;
    if out.len() > MAX_INFLATED_BYTES {
        return Err(ArchiveError::TooLarge {
            what: "the gzip object",
            max_bytes: MAX_INFLATED_BYTES,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
