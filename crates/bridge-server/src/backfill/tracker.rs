//! Which records of each file are settled, as chunks come back from
//! Mixpanel in any order: a file's checkpoint advances over the records
//! settled without a gap from its start, never past one still in flight.

use std::collections::BTreeMap;
use std::ops::Range;

use super::checkpoint::{CheckpointError, Checkpoints, FileId, FileProgress};

/// One file of the run.
#[derive(Debug)]
struct FileState {
    id: FileId,
    /// Records `0..done` are settled.
    done: u64,
    /// Settled runs past a gap, by start.
    ahead: BTreeMap<u64, u64>,
    /// The file's record count, once its reader got to the end.
    total: Option<u64>,
    /// Whether the checkpoint on disk is behind.
    dirty: bool,
}

impl FileState {
    fn progress(&self) -> FileProgress {
        FileProgress {
            records_done: self.done,
            finished: self.total == Some(self.done),
        }
    }
}

/// The settled records of every file of a run.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    files: Vec<FileState>,
}

impl Tracker {
    /// Adds a file that starts at `progress` (its checkpoint); returns its
    /// index for [`Tracker::settle`] and [`Tracker::end`].
    pub(crate) fn add(&mut self, id: FileId, progress: FileProgress) -> usize {
        self.files.push(FileState {
            id,
            done: progress.records_done,
            ahead: BTreeMap::new(),
            total: progress.finished.then_some(progress.records_done),
            dirty: false,
        });
        self.files.len() - 1
    }

    /// The file at `file`.
    pub(crate) fn id(&self, file: usize) -> &FileId {
        &self.files[file].id
    }

    /// Records `records` of `file` are settled.
    pub(crate) fn settle(&mut self, file: usize, records: Range<u64>) {
        let state = &mut self.files[file];
        if records.is_empty() || records.end <= state.done {
            return;
        }
        let entry = state.ahead.entry(records.start).or_insert(records.end);
        *entry = (*entry).max(records.end);
        while let Some(entry) = state.ahead.first_entry() {
            if *entry.key() > state.done {
                break;
            }
            let end = entry.remove();
            if end > state.done {
                state.done = end;
                state.dirty = true;
            }
        }
    }

    /// The reader of `file` got to its end: it holds `total` records.
    pub(crate) fn end(&mut self, file: usize, total: u64) {
        let state = &mut self.files[file];
        state.total = Some(total);
        state.dirty = true;
    }

    /// Whether every record of `file` is settled.
    pub(crate) fn is_finished(&self, file: usize) -> bool {
        self.files[file].progress().finished
    }

    /// Writes the checkpoints that moved since the last call.
    pub(crate) fn save(&mut self, checkpoints: &mut Checkpoints) -> Result<(), CheckpointError> {
        for state in &mut self.files {
            if state.dirty {
                checkpoints.record(&state.id, state.progress())?;
                state.dirty = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> FileId {
        FileId {
            location: "/archive".to_owned(),
            key: "a.avro".to_owned(),
            size: 10,
            e_tag: None,
        }
    }

    #[test]
    fn the_checkpoint_never_passes_a_gap() {
        let mut tracker = Tracker::default();
        let file = tracker.add(
            id(),
            FileProgress {
                records_done: 100,
                finished: false,
            },
        );
        tracker.settle(file, 300..400);
        tracker.settle(file, 200..300);
        assert_eq!(tracker.files[file].done, 100, "100..200 is still in flight");
        tracker.settle(file, 100..200);
        assert_eq!(tracker.files[file].done, 400);
        assert!(!tracker.is_finished(file));
        tracker.end(file, 450);
        assert!(!tracker.is_finished(file));
        tracker.settle(file, 400..450);
        assert!(tracker.is_finished(file));
        // Settled twice (a resend): no harm.
        tracker.settle(file, 0..450);
        assert_eq!(tracker.files[file].progress().records_done, 450);
    }

    #[test]
    fn an_empty_remainder_finishes_at_once() {
        let mut tracker = Tracker::default();
        let file = tracker.add(
            id(),
            FileProgress {
                records_done: 7,
                finished: false,
            },
        );
        tracker.end(file, 7);
        assert!(tracker.is_finished(file));
    }
}
