//! Our reader against apache-avro, the reference implementation: files
//! apache-avro writes (every Avro type, every codec we read) decode to the
//! values apache-avro reads back, and the fixture files we write for every
//! event type read the same in apache-avro as in our reader.

use std::collections::HashMap;

use apache_avro::types::Value as AvroValue;
use apache_avro::{Codec as AvroCodec, DeflateSettings, Reader, Schema as AvroSchema, Writer};
use bytes::Bytes;
use currents_model::EventType;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::super::{AvroEvents, Codec};
use crate::fixtures::AvroFixture;

const EVERYTHING: &str = r#"{"type": "record", "name": "Everything", "namespace": "test.ns", "fields": [
  {"name": "n", "type": "null"},
  {"name": "b", "type": "boolean"},
  {"name": "i", "type": "int"},
  {"name": "l", "type": "long"},
  {"name": "f", "type": "float"},
  {"name": "d", "type": "double"},
  {"name": "by", "type": "bytes"},
  {"name": "s", "type": "string"},
  {"name": "opt", "type": ["null", "string"], "default": null},
  {"name": "multi", "type": ["null", "long", "string",
      {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}]},
  {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
  {"name": "tags", "type": {"type": "array", "items": "string"}},
  {"name": "counts", "type": {"type": "map", "values": "long"}},
  {"name": "four", "type": {"type": "fixed", "name": "Four", "size": 4}},
  {"name": "inner", "type": "Inner"},
  {"name": "list", "type": {"type": "record", "name": "Node", "fields": [
      {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "nested", "type": {"type": "array", "items": {"type": "map", "values": ["null", "double"]}}}
]}"#;

/// An apache-avro value as our reader writes it.
fn to_json(value: &AvroValue) -> Value {
    match value {
        AvroValue::Null => Value::Null,
        AvroValue::Boolean(b) => json!(b),
        AvroValue::Int(n) | AvroValue::Date(n) | AvroValue::TimeMillis(n) => json!(n),
        AvroValue::Long(n)
        | AvroValue::TimeMicros(n)
        | AvroValue::TimestampMillis(n)
        | AvroValue::TimestampMicros(n) => json!(n),
        AvroValue::Float(f) => number_text(serde_json::to_string(f).ok(), f.is_finite()),
        AvroValue::Double(d) => number_text(serde_json::to_string(d).ok(), d.is_finite()),
        AvroValue::Bytes(bytes) | AvroValue::Fixed(_, bytes) => {
            Value::String(bytes.iter().map(|&byte| char::from(byte)).collect())
        }
        AvroValue::String(text) | AvroValue::Enum(_, text) => json!(text),
        AvroValue::Union(_, inner) => to_json(inner),
        AvroValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        AvroValue::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, value)| (key.clone(), to_json(value)))
                .collect(),
        ),
        AvroValue::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), to_json(value)))
                .collect(),
        ),
        other => panic!("not in these tests: {other:?}"),
    }
}

fn number_text(text: Option<String>, finite: bool) -> Value {
    match text {
        Some(text) if finite => serde_json::from_str(&text).unwrap(),
        _ => Value::Null,
    }
}

/// What apache-avro reads from `file`, as JSON.
fn reference_read(file: &[u8]) -> Vec<Value> {
    Reader::new(file)
        .unwrap()
        .map(|value| to_json(&value.unwrap()))
        .collect()
}

/// What our reader reads, without the `event_type` it adds.
fn our_read(file: &[u8], hint: Option<&str>) -> Vec<Value> {
    AvroEvents::new(Bytes::copy_from_slice(file), hint)
        .unwrap()
        .map(|text| {
            let mut value: Value = serde_json::from_str(&text.unwrap()).unwrap();
            value.as_object_mut().unwrap().remove("event_type");
            value
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Row {
    b: bool,
    i: i32,
    l: i64,
    f: f32,
    d: f64,
    by: Vec<u8>,
    s: String,
    opt: Option<String>,
    multi: u8,
    color: u32,
    tags: Vec<String>,
    counts: HashMap<String, i64>,
    four: [u8; 4],
    depth: u8,
    nested: Vec<HashMap<String, Option<f64>>>,
}

fn row() -> impl Strategy<Value = Row> {
    let scalars = (
        any::<bool>(),
        any::<i32>(),
        any::<i64>(),
        any::<f32>(),
        any::<f64>(),
    );
    let texts = (
        proptest::collection::vec(any::<u8>(), 0..8),
        any::<String>(),
        proptest::option::of(any::<String>()),
        0_u8..4,
        0_u32..3,
    );
    let collections = (
        proptest::collection::vec(any::<String>(), 0..4),
        proptest::collection::hash_map(any::<String>(), any::<i64>(), 0..4),
        any::<[u8; 4]>(),
        0_u8..4,
        proptest::collection::vec(
            proptest::collection::hash_map("[a-z]{1,3}", proptest::option::of(any::<f64>()), 0..3),
            0..3,
        ),
    );
    (scalars, texts, collections).prop_map(
        |((b, i, l, f, d), (by, s, opt, multi, color), (tags, counts, four, depth, nested))| Row {
            b,
            i,
            l,
            f,
            d,
            by,
            s,
            opt,
            multi,
            color,
            tags,
            counts,
            four,
            depth,
            nested,
        },
    )
}

fn avro_value(row: &Row) -> AvroValue {
    let inner = |x: i32| AvroValue::Record(vec![("x".to_owned(), AvroValue::Int(x))]);
    let multi = match row.multi {
        0 => AvroValue::Union(0, Box::new(AvroValue::Null)),
        1 => AvroValue::Union(1, Box::new(AvroValue::Long(row.l))),
        2 => AvroValue::Union(2, Box::new(AvroValue::String(row.s.clone()))),
        _ => AvroValue::Union(3, Box::new(inner(row.i))),
    };
    let mut list = AvroValue::Union(0, Box::new(AvroValue::Null));
    for depth in 0..row.depth {
        list = AvroValue::Union(
            1,
            Box::new(AvroValue::Record(vec![
                ("v".to_owned(), AvroValue::Int(i32::from(depth))),
                ("next".to_owned(), list),
            ])),
        );
    }
    let list = match list {
        AvroValue::Union(1, node) => *node,
        _ => AvroValue::Record(vec![
            ("v".to_owned(), AvroValue::Int(-1)),
            (
                "next".to_owned(),
                AvroValue::Union(0, Box::new(AvroValue::Null)),
            ),
        ]),
    };
    let symbols = ["RED", "GREEN", "BLUE"];
    AvroValue::Record(vec![
        ("n".to_owned(), AvroValue::Null),
        ("b".to_owned(), AvroValue::Boolean(row.b)),
        ("i".to_owned(), AvroValue::Int(row.i)),
        ("l".to_owned(), AvroValue::Long(row.l)),
        ("f".to_owned(), AvroValue::Float(row.f)),
        ("d".to_owned(), AvroValue::Double(row.d)),
        ("by".to_owned(), AvroValue::Bytes(row.by.clone())),
        ("s".to_owned(), AvroValue::String(row.s.clone())),
        (
            "opt".to_owned(),
            match &row.opt {
                None => AvroValue::Union(0, Box::new(AvroValue::Null)),
                Some(text) => AvroValue::Union(1, Box::new(AvroValue::String(text.clone()))),
            },
        ),
        ("multi".to_owned(), multi),
        (
            "color".to_owned(),
            AvroValue::Enum(row.color, symbols[row.color as usize].to_owned()),
        ),
        (
            "tags".to_owned(),
            AvroValue::Array(row.tags.iter().cloned().map(AvroValue::String).collect()),
        ),
        (
            "counts".to_owned(),
            AvroValue::Map(
                row.counts
                    .iter()
                    .map(|(key, value)| (key.clone(), AvroValue::Long(*value)))
                    .collect(),
            ),
        ),
        ("four".to_owned(), AvroValue::Fixed(4, row.four.to_vec())),
        ("inner".to_owned(), inner(row.i.wrapping_add(1))),
        ("list".to_owned(), list),
        ("ts".to_owned(), AvroValue::TimestampMillis(row.l)),
        (
            "nested".to_owned(),
            AvroValue::Array(
                row.nested
                    .iter()
                    .map(|map| {
                        AvroValue::Map(
                            map.iter()
                                .map(|(key, value)| {
                                    let value = match value {
                                        None => AvroValue::Union(0, Box::new(AvroValue::Null)),
                                        Some(d) => {
                                            AvroValue::Union(1, Box::new(AvroValue::Double(*d)))
                                        }
                                    };
                                    (key.clone(), value)
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        ),
    ])
}

fn apache_codec(idx: usize) -> AvroCodec {
    match idx % 3 {
        0 => AvroCodec::Null,
        1 => AvroCodec::Deflate(DeflateSettings::default()),
        _ => AvroCodec::Snappy,
    }
}

fn written_by_apache_avro(schema: &str, values: &[AvroValue], codec: AvroCodec) -> Vec<u8> {
    let schema = AvroSchema::parse_str(schema).unwrap();
    let mut writer = Writer::with_codec(&schema, Vec::new(), codec).unwrap();
    for (idx, value) in values.iter().enumerate() {
        writer.append_value_ref(value).unwrap();
        // Several blocks per file.
        if idx % 7 == 6 {
            writer.flush().unwrap();
        }
    }
    writer.into_inner().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn files_apache_avro_writes_read_as_apache_avro_reads_them(
        rows in proptest::collection::vec(row(), 0..20),
        codec in 0_usize..3,
    ) {
        let values: Vec<AvroValue> = rows.iter().map(avro_value).collect();
        let file = written_by_apache_avro(EVERYTHING, &values, apache_codec(codec));
        let ours = our_read(&file, Some("test.Everything"));
        let reference = reference_read(&file);
        prop_assert_eq!(ours.len(), rows.len());
        prop_assert_eq!(ours, reference);
        let events = AvroEvents::new(Bytes::from(file), Some("x")).unwrap();
        prop_assert_eq!(events.record_name(), Some("test.ns.Everything"));
        prop_assert_eq!(events.codec(), [Codec::Null, Codec::Deflate, Codec::Snappy][codec]);
    }
}

#[test]
fn our_fixture_files_read_the_same_in_apache_avro() {
    for (idx, &event_type) in EventType::ALL.iter().enumerate() {
        let codec = [Codec::Null, Codec::Deflate, Codec::Snappy][idx % 3];
        let fixture = AvroFixture::new(event_type)
            .events(6)
            .seed(idx as u64)
            .codec(codec)
            .records_per_block(4)
            .extra_field("later", "x");
        let file = fixture.build();
        let reference = reference_read(&file);
        assert_eq!(reference.len(), 6, "{event_type:?}");
        assert_eq!(our_read(&file, None), reference, "{event_type:?}");
        // And apache-avro reads the schema as Braze names it.
        let reader = Reader::new(&file[..]).unwrap();
        let name = match reader.writer_schema() {
            AvroSchema::Record(record) => record.name.fullname(None),
            other => panic!("{other:?}"),
        };
        assert_eq!(name, format!("dataexport.S3.inner.{}", event_type.name()));
    }
}

#[test]
fn expected_events_are_what_apache_avro_reads() {
    let fixture = AvroFixture::new(EventType::BehaviorsLocation)
        .events(20)
        .null_optional_fields();
    let mut reference = reference_read(&fixture.build());
    for (value, expected) in reference.iter_mut().zip(fixture.expected_events()) {
        let mut expected: Map<String, Value> = expected.as_object().unwrap().clone();
        expected.remove("event_type");
        assert_eq!(value, &Value::Object(expected));
    }
}
