//! `backfill`: Braze Currents storage archives (Avro files in S3, Google
//! Cloud Storage, Azure Blob or a directory) into Mixpanel through the same
//! mapping as `serve`, resumable from per-file checkpoints.
//!
//! Readers (one per core) take whole files, decode and map their records
//! and hand chunks of at most one `/import` request each, with the records
//! they cover, through a bounded channel to the sender ([`send`]), which
//! imports a few at a time, stores refusals as dead letters and advances
//! the checkpoints ([`checkpoint`]) over the records settled without a gap
//! ([`tracker`]). Memory is bounded by the chunks in the channel and in
//! flight, whatever the archive's size.

pub mod checkpoint;
pub mod letters;
mod output;
pub mod send;
mod spares;
mod tracker;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use currents_mixpanel::OutcomeCounts;
use mixpanel_client::ImportBatch;

use crate::spool::{DeadLetter, SpoolError};

/// Mapped events of consecutive records of one file.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// The file's index in the run.
    pub(crate) file: usize,
    /// The records it settles (mapped, skipped or dead-lettered).
    pub(crate) records: Range<u64>,
    /// The mapped events, within Mixpanel's request limits.
    pub(crate) batch: Arc<ImportBatch>,
    /// Each mapped event's Currents JSON as the archive held it, in batch
    /// order: a record Mixpanel refuses is dead-lettered as this.
    pub(crate) originals: Originals,
    /// Records that could not be mapped (invalid, too large).
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// The records' outcomes.
    pub(crate) counts: OutcomeCounts,
}

/// Mapped events' Currents JSON, back to back in one buffer: one
/// allocation per chunk rather than one per event.
#[derive(Debug, Default)]
pub(crate) struct Originals {
    text: String,
    /// Where each event's text ends in `text`.
    ends: Vec<usize>,
}

impl Originals {
    /// Empty, with room for as much as `like` holds.
    pub(crate) fn with_room_of(like: &Originals) -> Originals {
        Originals {
            text: String::with_capacity(like.text.len()),
            ends: Vec::with_capacity(like.ends.len()),
        }
    }

    /// Empties it, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    pub(crate) fn push(&mut self, text: &str) {
        self.text.push_str(text);
        self.ends.push(self.text.len());
    }

    /// Event `index`'s text.
    pub(crate) fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        Some(&self.text[start..end])
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}

/// What the readers tell the sender.
#[derive(Debug)]
pub(crate) enum FromReaders {
    /// Some records of a file, mapped.
    Chunk(Box<Chunk>),
    /// A file's reader got to its end: it holds `total` records.
    End {
        /// The file's index.
        file: usize,
        /// Its record count.
        total: u64,
    },
    /// A file could not be read (to its end): after the chunks of the
    /// records before the damage, why.
    Failed {
        /// The file's index.
        file: usize,
        /// What went wrong.
        error: String,
    },
}

/// Why a backfill could not run (or go on).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackfillError {
    /// A local file could not be written or read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An archive location could not be opened or listed.
    #[error("{location}: {message}")]
    Archive {
        /// The location as given.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// The checkpoints could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// The dead-letter store failed.
    #[error("the dead-letter store: {0}")]
    DeadLetters(#[from] SpoolError),
}

impl BackfillError {
    pub(crate) fn io(path: &Path, error: &std::io::Error) -> BackfillError {
        BackfillError::Io {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }
}
mod read;
mod run;

pub use run::{Plan, RunOptions, Selection, Summary, Target, run};
