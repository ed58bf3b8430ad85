//! The events of any archived object, whatever its kind: [`ObjectEvents`]
//! picks the reader by [`ObjectKind`] and gives both one interface, so that
//! a backfill reads Braze's Avro files and `serve`'s own batches alike.

use bytes::Bytes;
use currents_model::Shape;

use crate::ArchiveError;
use crate::avro::AvroEvents;
use crate::batches::BatchFileEvents;
use crate::layout::{KeyInfo, ObjectKind};
use crate::store::ArchiveObject;

/// The events of one archived object, in order, numbered from 0.
#[derive(Debug)]
#[non_exhaustive]
// One per object being read, never in a collection: boxing would only add
// an indirection.
#[allow(clippy::large_enum_variant)]
pub enum ObjectEvents {
    /// Braze's Avro file: storage-shaped events.
    Avro(AvroEvents),
    /// Custom HTTP connector envelopes: HTTP-shaped events.
    Batches(BatchFileEvents),
}

impl ObjectEvents {
    /// Reads `bytes` as an object of `kind`; `type_hint` is the event type of
    /// its `event_type=` folder (Avro files only: envelopes name each
    /// event's type).
    pub fn new(
        kind: ObjectKind,
        bytes: Bytes,
        type_hint: Option<&str>,
    ) -> Result<ObjectEvents, ArchiveError> {
        Ok(match kind {
            ObjectKind::Avro => ObjectEvents::Avro(AvroEvents::new(bytes, type_hint)?),
            ObjectKind::Batches => ObjectEvents::Batches(BatchFileEvents::new(bytes)?),
        })
    }

    /// Reads `bytes`, the content of `object`, with the kind and event type
    /// its key says.
    pub fn for_object(object: &ArchiveObject, bytes: Bytes) -> Result<ObjectEvents, ArchiveError> {
        let info = KeyInfo::parse(&object.key);
        ObjectEvents::new(object.kind, bytes, info.event_type)
    }

    /// The shape of the events it yields.
    pub fn shape(&self) -> Shape {
        match self {
            ObjectEvents::Avro(_) => Shape::Storage,
            ObjectEvents::Batches(_) => Shape::Http,
        }
    }

    /// Appends the next event's JSON text to `out`: `Ok(true)`, or
    /// `Ok(false)` at the end. After an error, `Ok(false)`.
    pub fn next_into(&mut self, out: &mut String) -> Result<bool, ArchiveError> {
        match self {
            ObjectEvents::Avro(events) => events.next_into(out),
            ObjectEvents::Batches(events) => events.next_into(out),
        }
    }

    /// Skips up to `n` events (to resume where an earlier run stopped); how
    /// many were skipped.
    pub fn skip_records(&mut self, n: u64) -> Result<u64, ArchiveError> {
        match self {
            ObjectEvents::Avro(events) => events.skip_records(n),
            ObjectEvents::Batches(events) => events.skip_records(n),
        }
    }

    /// The number of the next event (from 0).
    pub fn next_record(&self) -> u64 {
        match self {
            ObjectEvents::Avro(events) => events.next_record(),
            ObjectEvents::Batches(events) => events.next_record(),
        }
    }
}

impl Iterator for ObjectEvents {
    type Item = Result<String, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ObjectEvents::Avro(events) => events.next(),
            ObjectEvents::Batches(events) => events.next(),
        }
    }
}

impl std::iter::FusedIterator for ObjectEvents {}
