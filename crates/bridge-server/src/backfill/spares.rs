//! Buffers of settled chunks, handed back from the sender to the readers.
//!
//! A chunk's request body and originals are each up to a few MB. Freed
//! and allocated anew for every chunk, they would cost page faults each
//! time the allocator gives their pages back (and `serve`'s allocator
//! settings give large allocations back at once: `.cargo/config.toml`).
//! Recycled, a run cycles through about as many buffers as chunks are in
//! flight.

use std::sync::{Arc, Mutex, PoisonError};

use mixpanel_client::ImportBatch;

use super::Originals;

/// Spares kept at most of each kind: more than the chunks a run has in
/// flight and in its channel is memory nobody will ask for.
const MAX_SPARES: usize = 32;

/// The spare buffers, shared by the sender and every reader.
#[derive(Debug, Default)]
pub(crate) struct Spares {
    batches: Mutex<Vec<ImportBatch>>,
    originals: Mutex<Vec<Originals>>,
}

impl Spares {
    /// Keeps a sent batch's memory, if the client let go of it.
    pub(crate) fn put_batch(&self, batch: Arc<ImportBatch>) {
        if let Ok(batch) = Arc::try_unwrap(batch) {
            keep(&self.batches, batch);
        }
    }

    pub(crate) fn put_originals(&self, mut originals: Originals) {
        originals.clear();
        keep(&self.originals, originals);
    }

    pub(crate) fn take_batch(&self) -> Option<ImportBatch> {
        lock(&self.batches).pop()
    }

    /// Empty originals: a spare, or new ones with room for as much as
    /// `like` holds.
    pub(crate) fn originals_like(&self, like: &Originals) -> Originals {
        lock(&self.originals)
            .pop()
            .unwrap_or_else(|| Originals::with_room_of(like))
    }
}

fn keep<T>(spares: &Mutex<Vec<T>>, spare: T) {
    let mut spares = lock(spares);
    if spares.len() < MAX_SPARES {
        spares.push(spare);
    }
}

/// A panicking reader leaves nothing half-done in a list of spares.
fn lock<T>(spares: &Mutex<Vec<T>>) -> std::sync::MutexGuard<'_, Vec<T>> {
    spares.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_the_client_still_holds_is_not_kept() {
        let spares = Spares::default();
        let batch = Arc::new(ImportBatch::new());
        let held = Arc::clone(&batch);
        spares.put_batch(batch);
        assert!(spares.take_batch().is_none());
        spares.put_batch(held);
        assert!(spares.take_batch().is_some());
    }

    #[test]
    fn spare_originals_come_back_empty_and_the_list_is_bounded() {
        let spares = Spares::default();
        let mut originals = Originals::default();
        originals.push("{\"a\":1}");
        spares.put_originals(originals);
        let reused = spares.originals_like(&Originals::default());
        assert_eq!(reused.len(), 0);
        assert!(reused.get(0).is_none());
        for _ in 0..MAX_SPARES + 5 {
            spares.put_batch(Arc::new(ImportBatch::new()));
        }
        assert_eq!(lock(&spares.batches).len(), MAX_SPARES);
    }
}
