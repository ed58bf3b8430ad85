//! The reading half of a backfill, run on every core: one archive file at a
//! time per worker, fetched whole, its records decoded and mapped, and
//! handed on as chunks of at most one `/import` request each.

use std::ops::Range;
use std::sync::Arc;

use currents_archive::events::ObjectEvents;
use currents_archive::store::{ArchiveObject, ArchiveStore};
use currents_mixpanel::{Mapper, Outcome, OutcomeCounts};
use currents_model::{Event, InvalidEvent};
use mixpanel_client::{BatchLimits, Batcher, ImportBatch};

use super::send::Totals;
use super::spares::Spares;
use super::{Chunk, FromReaders, Originals};
use crate::delivery::{EVENT_TOO_LARGE, dead_letter_from_text};
use crate::spool::DeadLetter;

/// Records a chunk covers at most, even when few of them map (a file of
/// skipped events still moves its checkpoint along).
const MAX_RECORDS_PER_CHUNK: u64 = 20_000;

/// One file to read, from its checkpoint on.
#[derive(Debug, Clone)]
pub(crate) struct FileUnit {
    /// Its index in the run.
    pub(crate) file: usize,
    /// The store it is in.
    pub(crate) store: Arc<ArchiveStore>,
    /// The object.
    pub(crate) object: ArchiveObject,
    /// Records already settled by an earlier run.
    pub(crate) start: u64,
}

/// What every reader shares.
pub(crate) struct ReadContext {
    pub(crate) mapper: Mapper,
    pub(crate) limits: BatchLimits,
    pub(crate) totals: Arc<Totals>,
    /// Buffers of settled chunks, to fill again.
    pub(crate) spares: Arc<Spares>,
    /// The runtime the object stores' requests run on.
    pub(crate) runtime: tokio::runtime::Handle,
}

impl ReadContext {
    /// Reads, decodes and maps one file, emitting its chunks, then its end
    /// (or why it could not be read to its end).
    pub(crate) fn read_file(&self, unit: FileUnit, emit: &mut dyn FnMut(FromReaders)) {
        let bytes = match self.runtime.block_on(unit.store.get(&unit.object)) {
            Ok(bytes) => bytes,
            Err(error) => {
                emit(FromReaders::Failed {
                    file: unit.file,
                    error: error.to_string(),
                });
                return;
            }
        };
        Totals::add(&self.totals.bytes, bytes.len() as u64);
        let mut events = match ObjectEvents::for_object(&unit.object, bytes) {
            Ok(events) => events,
            Err(error) => {
                emit(FromReaders::Failed {
                    file: unit.file,
                    error: error.to_string(),
                });
                return;
            }
        };
        let mut chunker = Chunker::new(unit.file, unit.start, self.limits, &self.spares);
        if let Err(error) = events.skip_records(unit.start) {
            emit(FromReaders::Failed {
                file: unit.file,
                error: error.to_string(),
            });
            return;
        }
        let mut text = String::new();
        loop {
            text.clear();
            match events.next_into(&mut text) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    chunker.flush(emit);
                    chunker.finish();
                    emit(FromReaders::Failed {
                        file: unit.file,
                        error: error.to_string(),
                    });
                    return;
                }
            }
            let record = events.next_record() - 1;
            Totals::add(&self.totals.records, 1);
            chunker.record(&self.mapper, record, &text, emit);
        }
        let total = chunker.next_record;
        chunker.flush(emit);
        chunker.finish();
        emit(FromReaders::End {
            file: unit.file,
            total: total.max(unit.start),
        });
    }
}

/// Builds one file's chunks.
struct Chunker<'a> {
    file: usize,
    spares: &'a Spares,
    batcher: Batcher,
    /// The first record of the open chunk.
    chunk_start: u64,
    /// The record after the last one seen.
    next_record: u64,
    originals: Originals,
    dead_letters: Vec<DeadLetter>,
    counts: OutcomeCounts,
}

impl<'a> Chunker<'a> {
    fn new(file: usize, start: u64, limits: BatchLimits, spares: &'a Spares) -> Chunker<'a> {
        let mut batcher = Batcher::new(limits);
        if let Some(spare) = spares.take_batch() {
            batcher.recycle(spare);
        }
        Chunker {
            file,
            spares,
            batcher,
            chunk_start: start,
            next_record: start,
            originals: spares.originals_like(&Originals::default()),
            dead_letters: Vec::new(),
            counts: OutcomeCounts::default(),
        }
    }

    /// Maps record `record`, whose Currents JSON is `text`.
    fn record(
        &mut self,
        mapper: &Mapper,
        record: u64,
        text: &str,
        emit: &mut dyn FnMut(FromReaders),
    ) {
        let parsed = Event::parse(text);
        // Counted after a completed batch is emitted: this record belongs
        // to the next chunk.
        match mapper.map_parsed(parsed) {
            Outcome::Mapped(mapped) => match self.batcher.push_event(&mapped) {
                Ok(completed) => {
                    if let Some(batch) = completed {
                        self.emit_chunk(batch, record, emit);
                    }
                    self.counts.mapped += 1;
                    self.originals.push(text);
                }
                Err(error) => {
                    self.counts.mapped += 1;
                    self.dead_letters.push(dead_letter_from_text(
                        text,
                        EVENT_TOO_LARGE,
                        &error.to_string(),
                        None,
                        0,
                    ));
                }
            },
            Outcome::Skipped(reason) => self.counts.skipped[reason as usize] += 1,
            Outcome::Invalid(InvalidEvent { reason, detail, .. }) => {
                self.counts.record_invalid(reason);
                self.dead_letters.push(dead_letter_from_text(
                    text,
                    reason.as_str(),
                    &detail,
                    None,
                    0,
                ));
            }
        }
        self.next_record = record + 1;
        if self.next_record - self.chunk_start >= MAX_RECORDS_PER_CHUNK {
            self.flush(emit);
        }
    }

    /// Emits `batch` as the chunk of the records before `end`.
    fn emit_chunk(&mut self, batch: ImportBatch, end: u64, emit: &mut dyn FnMut(FromReaders)) {
        let records: Range<u64> = self.chunk_start..end;
        let next_originals = self.spares.originals_like(&self.originals);
        if let Some(spare) = self.spares.take_batch() {
            self.batcher.recycle(spare);
        }
        self.chunk_start = end;
        emit(FromReaders::Chunk(Box::new(Chunk {
            file: self.file,
            records,
            batch: Arc::new(batch),
            originals: std::mem::replace(&mut self.originals, next_originals),
            dead_letters: std::mem::take(&mut self.dead_letters),
            counts: std::mem::take(&mut self.counts),
        })));
    }

    /// Hands the buffers it did not fill back to the spares.
    fn finish(self) {
        if let Some(batch) = self.batcher.into_spare() {
            self.spares.put_batch(Arc::new(batch));
        }
        self.spares.put_originals(self.originals);
    }

    /// Emits the open chunk, if it covers any record.
    fn flush(&mut self, emit: &mut dyn FnMut(FromReaders)) {
        if self.next_record > self.chunk_start {
            let batch = self.batcher.flush().unwrap_or_default();
            self.emit_chunk(batch, self.next_record, emit);
        }
    }
}
