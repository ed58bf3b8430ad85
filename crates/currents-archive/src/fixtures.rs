//! Test fixtures (feature `fixtures`, off by default): Avro object container
//! files as Braze writes them, built from `currents_model`'s field tables,
//! laid out in Braze's folders, and damaged on purpose.
//!
//! Braze's own sample files are not ours to copy, so these are built from
//! the tables: each event type's schema is a record
//! `dataexport.S3.inner.<event type>` whose required fields are of their
//! Avro type and optional ones `["null", T]` with default `null`. Records
//! come from `currents_model::synthetic` (realistic HTTP-connector events)
//! flattened into the storage shape ([`storage_event`]): `user{}` and
//! `properties{}` fields move to the top level, and `custom_properties` or
//! `purchase_properties` become the JSON-encoded string field `properties`.
//!
//! [`AvroFixture`] builds one file with options for what Braze's files may
//! hold: optional fields left null, a field missing from the schema, a field
//! our tables do not know yet, the codec, blocks of a given size.
//! [`AvroFixture::expected_events`] gives the storage-shaped events a reader
//! must produce. [`braze_key`] and [`write_objects`] lay files out as Braze
//! does; [`truncated`], [`with_bad_sync_marker`] and [`with_flipped_byte`]
//! damage them, and [`empty_file`] is one. [`moto::MotoServer`] starts a
//! real S3 API (moto's server mode) for tests.
//!
//! ```
//! use currents_archive::avro::{AvroEvents, Codec};
//! use currents_archive::fixtures::AvroFixture;
//! use currents_model::EventType;
//!
//! let fixture = AvroFixture::new(EventType::MessagesEmailClick)
//!     .events(20)
//!     .codec(Codec::Deflate)
//!     .extra_field("added_later", "new");
//! let events: Vec<String> = AvroEvents::new(fixture.build().into(), None)?
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(events.len(), 20);
//! assert!(events[0].contains(r#""added_later":"new""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod moto;
use std::io::Write as _;

use currents_model::synthetic::{Config, Generator, Mix};
use currents_model::{AvroType, EventType, FieldSpec};
use serde_json::{Map, Value, json};

use crate::avro::Codec;
use crate::avro::container::{self, MAGIC};
use crate::layout::format_hour;

/// One Avro file of one event type, to build; see the
/// [module documentation](self).
#[derive(Debug, Clone)]
pub struct AvroFixture {
    event_type: EventType,
    n_events: usize,
    seed: u64,
    start_time: i64,
    http_events: Option<Vec<String>>,
    codec: Codec,
    null_optional: bool,
    dropped_fields: Vec<String>,
    extra_fields: Vec<(String, String)>,
    record_name: Option<String>,
    records_per_block: usize,
}

impl AvroFixture {
    /// Ten synthetic events of `event_type`, seed 1, no compression, blocks
    /// of 1,000 records.
    pub fn new(event_type: EventType) -> AvroFixture {
        AvroFixture {
            event_type,
            n_events: 10,
            seed: 1,
            start_time: 1_732_792_800,
            http_events: None,
            codec: Codec::Null,
            null_optional: false,
            dropped_fields: Vec::new(),
            extra_fields: Vec::new(),
            record_name: None,
            records_per_block: 1_000,
        }
    }

    /// How many synthetic events.
    pub fn events(mut self, n_events: usize) -> AvroFixture {
        self.n_events = n_events;
        self
    }

    /// The synthetic generator's seed.
    pub fn seed(mut self, seed: u64) -> AvroFixture {
        self.seed = seed;
        self
    }

    /// The first synthetic event's `time` (UNIX seconds).
    pub fn start_time(mut self, unix_secs: i64) -> AvroFixture {
        self.start_time = unix_secs;
        self
    }

    /// These HTTP-connector events (of this fixture's type) instead of
    /// synthetic ones.
    pub fn http_events(mut self, events: Vec<String>) -> AvroFixture {
        self.http_events = Some(events);
        self
    }

    /// The codec (default `null`).
    pub fn codec(mut self, codec: Codec) -> AvroFixture {
        self.codec = codec;
        self
    }

    /// Writes every optional field as `null`.
    pub fn null_optional_fields(mut self) -> AvroFixture {
        self.null_optional = true;
        self
    }

    /// Leaves the field `name` out of the schema (and the records), as an
    /// older Currents version would.
    pub fn drop_field(mut self, name: &str) -> AvroFixture {
        self.dropped_fields.push(name.to_owned());
        self
    }

    /// Adds an optional string field our tables do not know, with `value` in
    /// every record, as a later Currents version would.
    pub fn extra_field(mut self, name: &str, value: &str) -> AvroFixture {
        self.extra_fields.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Names the record `full_name` instead of
    /// `dataexport.S3.inner.<event type>`.
    pub fn record_name(mut self, full_name: &str) -> AvroFixture {
        self.record_name = Some(full_name.to_owned());
        self
    }

    /// Records per block (at least 1).
    pub fn records_per_block(mut self, records: usize) -> AvroFixture {
        self.records_per_block = records.max(1);
        self
    }

    /// The file.
    pub fn build(&self) -> Vec<u8> {
        let fields = self.fields();
        let records: Vec<Map<String, Value>> = self
            .storage_records()
            .into_iter()
            .map(|record| self.adjust(record))
            .collect();
        let mut encoded = Vec::with_capacity(records.len());
        for record in &records {
            let mut bytes = Vec::with_capacity(512);
            for field in &fields {
                encode_field(&mut bytes, field, record.get(&field.name));
            }
            encoded.push(bytes);
        }
        write_container(
            &self.schema_json(&fields),
            self.codec,
            self.seed,
            &encoded,
            self.records_per_block,
        )
    }

    /// The events a reader must produce from [`AvroFixture::build`]'s file,
    /// with no type hint: `{"event_type": …, <each field of the schema>}`,
    /// floats as `f32` keeps them.
    pub fn expected_events(&self) -> Vec<Value> {
        let fields = self.fields();
        let event_type = self.event_type.name();
        self.storage_records()
            .into_iter()
            .map(|record| {
                let record = self.adjust(record);
                let mut event = Map::new();
                event.insert("event_type".to_owned(), json!(event_type));
                for field in &fields {
                    let value = record.get(&field.name).cloned().unwrap_or(Value::Null);
                    let value = match (&value, field.avro_type) {
                        (Value::Null, _) => value,
                        (_, AvroType::Float) => f32_value(&value),
                        _ => value,
                    };
                    event.insert(field.name.clone(), value);
                }
                Value::Object(event)
            })
            .collect()
    }

    /// The HTTP-connector events the records come from.
    pub fn source_events(&self) -> Vec<String> {
        if let Some(events) = &self.http_events {
            return events.clone();
        }
        let config = Config::new(self.seed)
            .mix(Mix::only(self.event_type))
            .start_time(self.start_time);
        Generator::new(config).take(self.n_events).collect()
    }

    fn storage_records(&self) -> Vec<Map<String, Value>> {
        self.source_events()
            .iter()
            .filter_map(|event| storage_event(event).ok())
            .collect()
    }

    /// A record as the options say: nulls, extra values, required fields filled.
    fn adjust(&self, mut record: Map<String, Value>) -> Map<String, Value> {
        for field in self.event_type.fields() {
            if self.null_optional && !field.required {
                record.insert(field.name.to_owned(), Value::Null);
            }
        }
        for (name, value) in &self.extra_fields {
            record.insert(name.clone(), json!(value));
        }
        for field in self.fields() {
            let missing = record.get(&field.name).is_none_or(Value::is_null);
            if field.required && missing {
                record.insert(field.name.clone(), placeholder(field.avro_type));
            }
        }
        record
    }

    /// The schema's fields: the table's, minus the dropped, plus the extra.
    fn fields(&self) -> Vec<FixtureField> {
        let mut fields: Vec<FixtureField> = self
            .event_type
            .fields()
            .iter()
            .filter(|field| !self.dropped_fields.iter().any(|name| name == field.name))
            .map(FixtureField::from_spec)
            .collect();
        fields.extend(self.extra_fields.iter().map(|(name, _)| FixtureField {
            name: name.clone(),
            avro_type: AvroType::String,
            required: false,
        }));
        fields
    }

    fn schema_json(&self, fields: &[FixtureField]) -> String {
        let full_name = self
            .record_name
            .clone()
            .unwrap_or_else(|| format!("dataexport.S3.inner.{}", self.event_type.name()));
        let (namespace, name) = full_name
            .rsplit_once('.')
            .map_or((None, full_name.as_str()), |(space, name)| {
                (Some(space), name)
            });
        let fields: Vec<Value> = fields
            .iter()
            .map(|field| {
                let kind = avro_type_json(field.avro_type);
                if field.required {
                    json!({"name": field.name, "type": kind})
                } else {
                    json!({"name": field.name, "type": ["null", kind], "default": null})
                }
            })
            .collect();
        let mut schema = json!({"type": "record", "name": name, "fields": fields});
        if let (Some(namespace), Some(object)) = (namespace, schema.as_object_mut()) {
            object.insert("namespace".to_owned(), json!(namespace));
        }
        schema.to_string()
    }
}

/// One field of a fixture's schema.
#[derive(Debug, Clone)]
struct FixtureField {
    name: String,
    avro_type: AvroType,
    required: bool,
}

impl FixtureField {
    fn from_spec(spec: &FieldSpec) -> FixtureField {
        FixtureField {
            name: spec.name.to_owned(),
            avro_type: spec.avro_type,
            required: spec.required,
        }
    }
}

/// An HTTP-connector event in the storage shape: `event_type` first, then
/// the top-level fields, `user{}`'s and `properties{}`'s fields moved up,
/// and `custom_properties` or `purchase_properties` as the JSON-encoded
/// string field `properties`.
pub fn storage_event(http_event: &str) -> Result<Map<String, Value>, String> {
    let Value::Object(event) =
        serde_json::from_str(http_event).map_err(|error| error.to_string())?
    else {
        return Err("an event is a JSON object".to_owned());
    };
    let mut storage = Map::new();
    for (key, value) in event {
        match (key.as_str(), value) {
            ("user" | "properties", Value::Object(inner)) => {
                for (inner_key, inner_value) in inner {
                    match (inner_key.as_str(), inner_value) {
                        ("custom_properties" | "purchase_properties", nested) => {
                            let encoded = match nested {
                                Value::Null => Value::Null,
                                other => Value::String(other.to_string()),
                            };
                            storage.insert("properties".to_owned(), encoded);
                        }
                        (_, inner_value) => {
                            storage.insert(inner_key, inner_value);
                        }
                    }
                }
            }
            (_, value) => {
                storage.insert(key, value);
            }
        }
    }
    Ok(storage)
}

/// Synthetic events of [`Mix::production`] (all types, weighted as in a
/// production stream), grouped into one Avro file per type as Braze files
/// them: `(type, events in the file, file)`, in type order.
pub fn production_files(
    n_events: usize,
    seed: u64,
    codec: Codec,
) -> Vec<(EventType, usize, Vec<u8>)> {
    let mut by_type: std::collections::BTreeMap<EventType, Vec<String>> = Default::default();
    let mut generator = Generator::new(Config::new(seed));
    for _ in 0..n_events {
        let mut text = String::with_capacity(1024);
        let generated = generator.write_event(&mut text);
        by_type.entry(generated.event_type).or_default().push(text);
    }
    by_type
        .into_iter()
        .map(|(event_type, events)| {
            let n = events.len();
            let file = AvroFixture::new(event_type)
                .http_events(events)
                .codec(codec)
                .seed(seed)
                .build();
            (event_type, n, file)
        })
        .collect()
}

/// The integration folder of [`braze_key`]'s keys.
pub const INTEGRATION_FOLDER: &str = "dataexport.prod-03.S3.integration.5f3c0ffee0ddba11c0ffee42";

/// A key in Braze's layout: `<prefix>/dataexport.prod-03.S3.integration.<id>/event_type=<type>/date=<hour of unix_secs>/version=10/prod/<id>+<partition>+<offset>.avro`,
/// with `seq` making the file name unique.
pub fn braze_key(prefix: &str, event_type: &str, unix_secs: i64, seq: u32) -> String {
    let prefix = prefix.trim_matches('/');
    let separator = if prefix.is_empty() { "" } else { "/" };
    let hour = format_hour(unix_secs);
    let partition = seq % 4;
    let offset = u64::from(seq) * 15_000;
    format!(
        "{prefix}{separator}{INTEGRATION_FOLDER}/event_type={event_type}/date={hour}/version=10/prod/{INTEGRATION_FOLDER}+{partition}+{offset:010}.avro"
    )
}

/// Writes each `(key, bytes)` under `dir`, creating folders.
pub fn write_objects(dir: &std::path::Path, objects: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    for (key, bytes) in objects {
        let path = dir.join(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

/// An empty object: Braze never writes one, and reading one is an error.
pub fn empty_file() -> Vec<u8> {
    Vec::new()
}

/// The first `len` bytes of `file`.
pub fn truncated(file: &[u8], len: usize) -> Vec<u8> {
    file[..len.min(file.len())].to_vec()
}

/// `file` with the sync marker that ends block `block` (from 0) damaged:
/// the records of the blocks before it read, then an error. The file must
/// be valid and have that block.
pub fn with_bad_sync_marker(file: &[u8], block: usize) -> Vec<u8> {
    let mut damaged = file.to_vec();
    if let Some(span) = block_spans(file).get(block) {
        for byte in &mut damaged[span.data.end..span.data.end + 16] {
            *byte ^= 0xff;
        }
    }
    damaged
}

/// `file` with one byte in the middle of block `block`'s data flipped: with
/// compression, the block cannot be inflated; without, what breaks depends
/// on the byte. The file must be valid and have that block.
pub fn with_flipped_byte(file: &[u8], block: usize) -> Vec<u8> {
    let mut damaged = file.to_vec();
    if let Some(span) = block_spans(file).get(block) {
        let middle = span.data.start + span.data.len() / 2;
        damaged[middle] ^= 0xff;
    }
    damaged
}

/// Where each block of a valid file is.
pub(crate) fn block_spans(file: &[u8]) -> Vec<container::RawBlock> {
    let Ok(header) = container::read_header(file) else {
        return Vec::new();
    };
    let mut spans = Vec::new();
    let mut at = header.data_start;
    while let Ok(Some(block)) = container::read_block(file, at, &header.sync) {
        at = block.next;
        spans.push(block);
    }
    spans
}

/// Writes an object container file of already encoded records.
fn write_container(
    schema_json: &str,
    codec: Codec,
    seed: u64,
    records: &[Vec<u8>],
    records_per_block: usize,
) -> Vec<u8> {
    let mut file = Vec::with_capacity(records.iter().map(Vec::len).sum::<usize>() + 4096);
    file.extend_from_slice(MAGIC);
    write_long(&mut file, 2);
    write_bytes(&mut file, b"avro.schema");
    write_bytes(&mut file, schema_json.as_bytes());
    write_bytes(&mut file, b"avro.codec");
    write_bytes(&mut file, codec.name().as_bytes());
    write_long(&mut file, 0);
    let mut sync = [0_u8; 16];
    for (idx, byte) in sync.iter_mut().enumerate() {
        *byte = (seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(idx as u32 * 4)
            >> 56) as u8
            ^ idx as u8;
    }
    file.extend_from_slice(&sync);
    for chunk in records.chunks(records_per_block) {
        let data: Vec<u8> = chunk.concat();
        let compressed = compress(codec, &data);
        write_long(&mut file, chunk.len() as i64);
        write_long(&mut file, compressed.len() as i64);
        file.extend_from_slice(&compressed);
        file.extend_from_slice(&sync);
    }
    file
}

fn compress(codec: Codec, data: &[u8]) -> Vec<u8> {
    match codec {
        Codec::Deflate => {
            let mut encoder =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = encoder.write_all(data);
            encoder.finish().unwrap_or_default()
        }
        Codec::Snappy => {
            let mut compressed = snap::raw::Encoder::new()
                .compress_vec(data)
                .unwrap_or_default();
            compressed.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
            compressed
        }
        _ => data.to_vec(),
    }
}

fn encode_field(out: &mut Vec<u8>, field: &FixtureField, value: Option<&Value>) {
    let value = value.filter(|value| !value.is_null());
    if !field.required {
        match value {
            None => {
                write_long(out, 0);
                return;
            }
            Some(_) => write_long(out, 1),
        }
    }
    let value = value
        .cloned()
        .unwrap_or_else(|| placeholder(field.avro_type));
    match field.avro_type {
        AvroType::String => {
            let text = match &value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            write_bytes(out, text.as_bytes());
        }
        AvroType::Int | AvroType::Long => write_long(out, value.as_i64().unwrap_or(0)),
        AvroType::Float => {
            out.extend_from_slice(&(value.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
        }
        AvroType::Boolean => out.push(u8::from(value.as_bool().unwrap_or(false))),
        AvroType::StringArray => {
            let items = value.as_array().cloned().unwrap_or_default();
            if !items.is_empty() {
                write_long(out, items.len() as i64);
                for item in items {
                    let text = match item {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    write_bytes(out, text.as_bytes());
                }
            }
            write_long(out, 0);
        }
        _ => write_bytes(out, value.to_string().as_bytes()),
    }
}

fn placeholder(avro_type: AvroType) -> Value {
    match avro_type {
        AvroType::Int | AvroType::Long => json!(0),
        AvroType::Float => json!(0.0),
        AvroType::Boolean => json!(false),
        AvroType::StringArray => json!([]),
        _ => json!(""),
    }
}

fn avro_type_json(avro_type: AvroType) -> Value {
    match avro_type {
        AvroType::Int => json!("int"),
        AvroType::Long => json!("long"),
        AvroType::Float => json!("float"),
        AvroType::Boolean => json!("boolean"),
        AvroType::StringArray => json!({"type": "array", "items": "string"}),
        _ => json!("string"),
    }
}

/// A JSON number as an `f32` keeps it, written as the reader writes it.
fn f32_value(value: &Value) -> Value {
    let rounded = value.as_f64().unwrap_or(0.0) as f32;
    serde_json::to_string(&rounded)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}
