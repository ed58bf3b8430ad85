//! Braze's Avro files as Currents events: [`AvroEvents`] reads an Avro
//! object container file with the schema it carries and yields each record
//! as one event in the storage shape `currents_model::Event::parse` reads.
//!
//! An event is the JSON object `{"event_type": "<type>", <every field of
//! the record, flat, in schema order>}`: a nullable field is its value or
//! `null`, numbers are numbers, `properties` (a custom event's or a
//! purchase's properties, a JSON-encoded string in storage) stays a string,
//! and a field Braze added that our tables do not know passes through as
//! it is. The module `decode` says how each Avro type is written.
//!
//! The event type is the one of the file's `event_type=` folder, passed in
//! as a hint, or else the one its schema's record name carries
//! (`dataexport.<store>.inner.<event type>`, e.g.
//! `dataexport.S3.inner.users.messages.email.Open`); a file whose type
//! cannot be told is an error, never a guess. When both exist and
//! disagree, the folder wins: it is where Braze filed the file, and what
//! the caller selected it by; [`AvroEvents::record_name`] shows the other.
//!
//! The reader is this crate's own (the container format is small): it
//! writes the JSON text straight from the bytes, two and a half to three
//! times faster than `apache-avro` decodes the same files into its `Value`
//! tree alone (the workspace's `docs/benchmarks.md`), and its tests check
//! it against `apache-avro`. It reads the `null`, `deflate` and `snappy`
//! codecs; `deflate` carries no checksum, so damage inside a deflate block
//! is found only when it breaks the stream or the records.

pub(crate) mod container;
mod decode;
mod schema;

use bytes::Bytes;

use self::container::{Header, RawBlock};
use self::decode::Decoder;
use self::schema::Schema;
use crate::ArchiveError;

pub use self::container::Codec;

/// The events of one Avro object container file, in order, numbered from 0.
///
/// It is an [`Iterator`] of events (each a `String`); [`AvroEvents::next_into`]
/// appends them to a buffer you reuse instead. Damaged data yields the
/// records before it, then one [`ArchiveError::Corrupt`] naming the first
/// record not read, then nothing.
///
/// ```
/// # #[cfg(feature = "fixtures")] {
/// use currents_archive::avro::AvroEvents;
/// use currents_archive::fixtures::AvroFixture;
/// use currents_model::{Event, EventType};
///
/// let file = AvroFixture::new(EventType::MessagesEmailOpen).events(3).build();
/// let mut events = AvroEvents::new(file.into(), None)?;
/// assert_eq!(events.event_type(), "users.messages.email.Open");
/// let mut text = String::new();
/// while events.next_into(&mut text)? {
///     let event = Event::parse(&text)?;
///     assert_eq!(event.event_type.as_str(), "users.messages.email.Open");
///     text.clear();
/// }
/// assert_eq!(events.next_record(), 3);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AvroEvents {
    file: Bytes,
    codec: Codec,
    sync: [u8; 16],
    decoder: Decoder,
    event_type: String,
    record_name: Option<String>,
    field_names: Vec<String>,
    /// Where the next block starts in `file`.
    next_block: usize,
    /// The current block, decompressed.
    block: Vec<u8>,
    /// Where the next record starts in `block`.
    block_pos: usize,
    /// Records of the current block not read yet.
    left_in_block: u64,
    next_record: u64,
    /// Set at the end of the file and after an error.
    done: bool,
    /// Where records skipped inside a block are decoded.
    scratch: String,
    /// The length of the last event, to size the next one's `String`.
    last_len: usize,
}

/// The event type a Braze record name carries: `users.messages.email.Open`
/// for `dataexport.S3.inner.users.messages.email.Open` (any one segment in
/// place of `S3`: `AzureBlob`, `GCS`, …); `None` for any other name.
pub fn event_type_from_record_name(full_name: &str) -> Option<&str> {
    let rest = full_name.strip_prefix("dataexport.")?;
    let (store, rest) = rest.split_once('.')?;
    let event_type = rest.strip_prefix("inner.")?;
    (!store.is_empty() && !event_type.is_empty()).then_some(event_type)
}

impl AvroEvents {
    /// Reads the header of `file` and gets ready to yield its events.
    ///
    /// `type_hint` is the event type of the file's `event_type=` folder, if
    /// it has one (see the [module documentation](self)). Errors: an empty
    /// file, one that is not an object container file, an unsupported codec,
    /// a schema that is invalid or not a record, or no way to tell the type.
    pub fn new(file: Bytes, type_hint: Option<&str>) -> Result<AvroEvents, ArchiveError> {
        let Header {
            schema_json,
            codec,
            sync,
            data_start,
        } = container::read_header(&file)?;
        let schema =
            Schema::parse(&schema_json).map_err(|detail| ArchiveError::InvalidSchema { detail })?;
        let record_name = schema.root_name.clone();
        let field_names = schema
            .root_fields()
            .ok_or_else(|| ArchiveError::InvalidSchema {
                detail: "the top-level type is not a record".to_owned(),
            })?
            .iter()
            .map(|field| field.name.clone())
            .collect();
        let event_type = match type_hint.filter(|hint| !hint.is_empty()) {
            Some(hint) => hint.to_owned(),
            None => record_name
                .as_deref()
                .and_then(event_type_from_record_name)
                .map(str::to_owned)
                .ok_or_else(|| ArchiveError::UnknownEventType {
                    record_name: record_name.clone().unwrap_or_default(),
                })?,
        };
        let decoder = Decoder::new(schema, &event_type)
            .map_err(|detail| ArchiveError::InvalidSchema { detail })?;
        Ok(AvroEvents {
            file,
            codec,
            sync,
            decoder,
            event_type,
            record_name,
            field_names,
            next_block: data_start,
            block: Vec::new(),
            block_pos: 0,
            left_in_block: 0,
            next_record: 0,
            done: false,
            scratch: String::new(),
            last_len: 512,
        })
    }

    /// The events' type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The full name of the schema's record
    /// (`dataexport.S3.inner.users.messages.email.Open`).
    pub fn record_name(&self) -> Option<&str> {
        self.record_name.as_deref()
    }

    /// The names of the record's fields, in schema order: what each event
    /// has besides `event_type`.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.field_names.iter().map(String::as_str)
    }

    /// The file's codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The number of the next record (from 0): how many were read or
    /// skipped so far.
    pub fn next_record(&self) -> u64 {
        self.next_record
    }

    /// Appends the next event to `out`: `Ok(true)`, or `Ok(false)` at the
    /// end. On error nothing is appended, and every later call returns
    /// `Ok(false)`.
    pub fn next_into(&mut self, out: &mut String) -> Result<bool, ArchiveError> {
        if self.done {
            return Ok(false);
        }
        if self.left_in_block == 0 {
            match self.load_next_block() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return Ok(false);
                }
                Err(detail) => return Err(self.fail(detail)),
            }
        }
        let start = out.len();
        match self.decoder.record(&self.block, &mut self.block_pos, out) {
            Ok(()) => {
                self.left_in_block -= 1;
                self.next_record += 1;
                self.last_len = out.len() - start;
                Ok(true)
            }
            Err(detail) => Err(self.fail(detail)),
        }
    }

    /// Skips up to `n` records; how many were skipped (fewer at the end of
    /// the file). A block whose records are all skipped is not even
    /// decompressed, so resuming at record N of a file costs little more
    /// than reading its remaining records; records skipped inside a block
    /// are decoded and dropped. Damage met on the way is an error, as when
    /// reading.
    pub fn skip_records(&mut self, n: u64) -> Result<u64, ArchiveError> {
        let mut skipped = 0;
        while skipped < n && !self.done {
            if self.left_in_block > 0 {
                self.scratch.clear();
                let mut scratch = std::mem::take(&mut self.scratch);
                let res = self.next_into(&mut scratch);
                self.scratch = scratch;
                if !res? {
                    break;
                }
                skipped += 1;
                continue;
            }
            if let Err(detail) = self.check_block_consumed() {
                return Err(self.fail(detail));
            }
            let raw = match container::read_block(&self.file, self.next_block, &self.sync) {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Err(detail) => return Err(self.fail(detail)),
            };
            if raw.count <= n - skipped {
                self.next_block = raw.next;
                self.next_record += raw.count;
                skipped += raw.count;
                continue;
            }
            if let Err(detail) = self.open_block(&raw) {
                return Err(self.fail(detail));
            }
        }
        Ok(skipped)
    }

    fn fail(&mut self, detail: String) -> ArchiveError {
        self.done = true;
        ArchiveError::Corrupt {
            record: self.next_record,
            detail,
        }
    }

    /// The previous block must have ended with its last record.
    fn check_block_consumed(&self) -> Result<(), String> {
        let left_over = self.block.len() - self.block_pos;
        if left_over > 0 {
            return Err(format!(
                "{left_over} bytes follow the last record of the previous block"
            ));
        }
        Ok(())
    }

    /// Moves to the next block with records: `false` at the end of the file.
    fn load_next_block(&mut self) -> Result<bool, String> {
        self.check_block_consumed()?;
        loop {
            let Some(raw) = container::read_block(&self.file, self.next_block, &self.sync)? else {
                return Ok(false);
            };
            if raw.count == 0 {
                self.next_block = raw.next;
                continue;
            }
            self.open_block(&raw)?;
            return Ok(true);
        }
    }

    /// Decompresses `raw` as the current block.
    fn open_block(&mut self, raw: &RawBlock) -> Result<(), String> {
        container::decompress(self.codec, &self.file[raw.data.clone()], &mut self.block)?;
        let min_size = self.decoder.min_record_size();
        let block_len = u64::try_from(self.block.len()).unwrap_or(u64::MAX);
        let fits = match u64::try_from(min_size).unwrap_or(u64::MAX) {
            // Records that take no bytes (a record without fields): still
            // no more of them than a damaged count could make up.
            0 => raw.count <= block_len.saturating_add(1 << 16),
            size => raw.count <= block_len / size,
        };
        if !fits {
            return Err(format!(
                "a block of {} bytes cannot hold the {} records it announces",
                self.block.len(),
                raw.count
            ));
        }
        self.next_block = raw.next;
        self.block_pos = 0;
        self.left_in_block = raw.count;
        Ok(())
    }
}

impl Iterator for AvroEvents {
    type Item = Result<String, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut out = String::with_capacity(self.last_len + self.last_len / 4);
        match self.next_into(&mut out) {
            Ok(true) => Some(Ok(out)),
            Ok(false) => None,
            Err(error) => Some(Err(error)),
        }
    }
}

impl std::iter::FusedIterator for AvroEvents {}

#[cfg(test)]
mod tests;
