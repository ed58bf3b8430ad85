//! The Avro reader on files built from Braze's field tables: every event
//! type round-trips into events `currents_model` reads, and damaged,
//! empty and foreign files fail as documented. `reference` checks it
//! against apache-avro.

mod reference;

use bytes::Bytes;
use currents_model::{Event, EventType, NestedProperties};
use proptest::prelude::*;
use serde_json::Value;

use super::{AvroEvents, Codec, event_type_from_record_name};
use crate::ArchiveError;
use crate::fixtures::{self, AvroFixture};

/// Every event of `file`, or the error that ended them.
fn read_all(file: Vec<u8>, hint: Option<&str>) -> (Vec<String>, Option<ArchiveError>) {
    let events = match AvroEvents::new(Bytes::from(file), hint) {
        Ok(events) => events,
        Err(error) => return (Vec::new(), Some(error)),
    };
    let mut texts = Vec::new();
    for event in events {
        match event {
            Ok(text) => texts.push(text),
            Err(error) => return (texts, Some(error)),
        }
    }
    (texts, None)
}

fn codec_for(idx: usize) -> Codec {
    [Codec::Null, Codec::Deflate, Codec::Snappy][idx % 3]
}

#[test]
fn every_event_type_round_trips_into_events_currents_model_reads() {
    for (idx, &event_type) in EventType::ALL.iter().enumerate() {
        let fixture = AvroFixture::new(event_type)
            .events(12)
            .seed(idx as u64 + 7)
            .codec(codec_for(idx))
            .records_per_block(5);
        let (texts, error) = read_all(fixture.build(), None);
        assert!(error.is_none(), "{event_type:?}: {error:?}");
        let expected = fixture.expected_events();
        let sources = fixture.source_events();
        assert_eq!(texts.len(), 12, "{event_type:?}");
        for ((text, expected), source) in texts.iter().zip(&expected).zip(&sources) {
            let value: Value = serde_json::from_str(text).expect("valid JSON");
            assert_eq!(&value, expected, "{event_type:?}");
            let event = Event::parse(text)
                .unwrap_or_else(|error| panic!("{event_type:?}: {error} in {text}"));
            let original = Event::parse(source).expect("a synthetic event reads");
            assert_eq!(event.event_type.known(), Some(event_type));
            assert_eq!(event.id, original.id);
            assert_eq!(event.time, original.time);
            assert_eq!(event.external_user_id(), original.external_user_id());
            assert_eq!(event.user.user_id, original.user.user_id);
            assert_eq!(event.custom_event_name, original.custom_event_name);
            assert_eq!(
                nested_keys(event.custom_properties.as_ref()),
                nested_keys(original.custom_properties.as_ref()),
                "{event_type:?}"
            );
            assert_eq!(
                nested_keys(event.purchase_properties.as_ref()),
                nested_keys(original.purchase_properties.as_ref()),
                "{event_type:?}"
            );
        }
    }
}

/// The keys of custom or purchase properties, sorted: the fixtures encode
/// them from a sorted map.
fn nested_keys(nested: Option<&NestedProperties<'_>>) -> Option<Vec<String>> {
    let mut keys: Vec<String> = match nested? {
        NestedProperties::Object(list) => list.iter().map(|p| p.key.to_string()).collect(),
        NestedProperties::Undecodable(raw) => vec![raw.get().to_owned()],
    };
    keys.sort();
    Some(keys)
}

#[test]
fn optional_fields_may_be_null_absent_or_new() {
    let fixture = AvroFixture::new(EventType::MessagesEmailOpen)
        .events(5)
        .null_optional_fields()
        .drop_field("machine_open")
        .extra_field("added_in_v12", "yes \"quoted\"");
    let (texts, error) = read_all(fixture.build(), None);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(texts.len(), 5);
    for text in &texts {
        let value: Value = serde_json::from_str(text).unwrap();
        for field in EventType::MessagesEmailOpen.fields() {
            if field.name == "machine_open" {
                assert!(value.get(field.name).is_none(), "a dropped field is absent");
            } else if !field.required {
                assert_eq!(value[field.name], Value::Null, "{}", field.name);
            }
        }
        assert_eq!(value["added_in_v12"], "yes \"quoted\"");
        let event = Event::parse(text).unwrap();
        assert_eq!(event.external_user_id(), None, "optional, so null");
        let added = event
            .properties
            .iter()
            .find(|p| p.key == "added_in_v12")
            .unwrap();
        assert_eq!(added.value.get(), r#""yes \"quoted\"""#);
    }
}

#[test]
fn the_folder_names_the_type_else_the_record_name_does() {
    let file = AvroFixture::new(EventType::MessagesEmailOpen)
        .events(2)
        .build();
    let events = AvroEvents::new(Bytes::from(file.clone()), None).unwrap();
    assert_eq!(events.event_type(), "users.messages.email.Open");
    assert_eq!(
        events.record_name(),
        Some("dataexport.S3.inner.users.messages.email.Open")
    );
    assert_eq!(events.codec(), Codec::Null);
    assert!(events.field_names().any(|name| name == "email_address"));

    // The folder wins when both are there and disagree.
    let (texts, _) = read_all(file, Some("users.messages.email.Click"));
    assert!(texts[0].starts_with(r#"{"event_type":"users.messages.email.Click","#));

    // Any store segment: S3, AzureBlob, GCS.
    let azure = AvroFixture::new(EventType::BehaviorsPurchase)
        .record_name("dataexport.AzureBlob.inner.users.behaviors.Purchase")
        .build();
    let (texts, error) = read_all(azure, None);
    assert!(error.is_none());
    assert_eq!(
        Event::parse(&texts[0]).unwrap().event_type.known(),
        Some(EventType::BehaviorsPurchase)
    );
}

#[test]
fn a_file_whose_type_cannot_be_told_is_an_error() {
    let foreign = AvroFixture::new(EventType::MessagesEmailOpen)
        .record_name("com.example.Thing")
        .build();
    match AvroEvents::new(Bytes::from(foreign.clone()), None) {
        Err(ArchiveError::UnknownEventType { record_name }) => {
            assert_eq!(record_name, "com.example.Thing")
        }
        other => panic!("{other:?}"),
    }
    let message = AvroEvents::new(Bytes::from(foreign.clone()), None)
        .unwrap_err()
        .to_string();
    assert!(message.contains("cannot tell the event type"), "{message}");
    // With a folder, it reads.
    let (texts, error) = read_all(foreign, Some("users.messages.email.Open"));
    assert!(error.is_none() && texts.len() == 10);

    for name in [
        "dataexport.S3.inner.",
        "dataexport..inner.users.x",
        "dataexport.S3.outer.users.x",
        "S3.inner.users.x",
    ] {
        assert_eq!(event_type_from_record_name(name), None, "{name}");
    }
    assert_eq!(
        event_type_from_record_name("dataexport.GCS.inner.users.behaviors.app.SessionStart"),
        Some("users.behaviors.app.SessionStart")
    );
}

#[test]
fn an_empty_file_is_an_error_and_a_file_without_records_yields_nothing() {
    assert!(matches!(
        AvroEvents::new(Bytes::new(), None),
        Err(ArchiveError::EmptyFile)
    ));
    assert_eq!(
        AvroEvents::new(Bytes::new(), None).unwrap_err().to_string(),
        "empty file"
    );
    let header_only = AvroFixture::new(EventType::MessagesSmsSend)
        .events(0)
        .build();
    let (texts, error) = read_all(header_only, None);
    assert!(texts.is_empty() && error.is_none(), "{error:?}");
    assert!(matches!(
        AvroEvents::new(Bytes::from_static(b"{\"events\":[]}"), None),
        Err(ArchiveError::NotAvro { .. })
    ));
}

#[test]
fn an_unsupported_codec_is_named() {
    let mut file = AvroFixture::new(EventType::MessagesEmailOpen).build();
    // The codec's value follows its key and its length (one byte); same
    // length as "null", so the header stays well-formed.
    let key = file
        .windows(10)
        .position(|window| window == b"avro.codec")
        .unwrap();
    let value = key + 10 + 1;
    assert_eq!(&file[value..value + 4], b"null");
    file[value..value + 4].copy_from_slice(b"lz4x");
    match AvroEvents::new(Bytes::from(file), None) {
        Err(ArchiveError::UnsupportedCodec { codec }) => assert_eq!(codec, "lz4x"),
        other => panic!("{other:?}"),
    }
}

fn thirty_in_blocks_of_ten(codec: Codec) -> AvroFixture {
    AvroFixture::new(EventType::BehaviorsCustomEvent)
        .events(30)
        .codec(codec)
        .records_per_block(10)
}

#[test]
fn a_damaged_file_yields_its_good_records_then_an_error_naming_the_record() {
    for codec in [Codec::Null, Codec::Deflate, Codec::Snappy] {
        let fixture = thirty_in_blocks_of_ten(codec);
        let file = fixture.build();
        let expected = fixture.expected_events();

        let (texts, error) = read_all(fixtures::with_bad_sync_marker(&file, 1), None);
        assert_eq!(texts.len(), 10, "{codec:?}");
        match error {
            Some(ArchiveError::Corrupt { record: 10, detail }) => {
                assert!(detail.contains("sync marker"), "{detail}")
            }
            other => panic!("{codec:?}: {other:?}"),
        }
        for (text, expected) in texts.iter().zip(&expected) {
            assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), expected);
        }

        let (texts, error) = read_all(fixtures::truncated(&file, file.len() - 100), None);
        assert_eq!(texts.len(), 20, "{codec:?}");
        assert!(
            matches!(error, Some(ArchiveError::Corrupt { record: 20, .. })),
            "{error:?}"
        );
        assert!(error.unwrap().to_string().starts_with("record 20: "));
    }
    // A snappy block fails as a whole when a byte of it flips: its checksum
    // says so.
    let file = thirty_in_blocks_of_ten(Codec::Snappy).build();
    let (texts, error) = read_all(fixtures::with_flipped_byte(&file, 2), None);
    assert_eq!(texts.len(), 20);
    match error {
        Some(ArchiveError::Corrupt { record: 20, detail }) => {
            assert!(detail.contains("checksum"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // Deflate has no checksum: a flipped byte is found only if it breaks the
    // stream or the records; either way the blocks before it read.
    let fixture = thirty_in_blocks_of_ten(Codec::Deflate);
    let (texts, error) = read_all(fixtures::with_flipped_byte(&fixture.build(), 2), None);
    let expected = fixture.expected_events();
    for (text, expected) in texts.iter().zip(&expected).take(20) {
        assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), expected);
    }
    if let Some(error) = error {
        assert!(
            matches!(error, ArchiveError::Corrupt { record, .. } if record >= 20),
            "{error:?}"
        );
    }
}

#[test]
fn after_an_error_nothing_more_is_read() {
    let file = thirty_in_blocks_of_ten(Codec::Null).build();
    let mut events =
        AvroEvents::new(Bytes::from(fixtures::with_bad_sync_marker(&file, 0)), None).unwrap();
    let mut out = String::from("kept");
    assert!(events.next_into(&mut out).is_err());
    assert_eq!(out, "kept", "nothing appended on error");
    assert!(!events.next_into(&mut out).unwrap());
    assert!(events.next().is_none());
}

#[test]
fn records_can_be_skipped_to_resume() {
    for codec in [Codec::Null, Codec::Deflate] {
        let fixture = thirty_in_blocks_of_ten(codec);
        let file = Bytes::from(fixture.build());
        let all: Vec<String> = AvroEvents::new(file.clone(), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for skip in [0, 1, 9, 10, 15, 29, 30] {
            let mut events = AvroEvents::new(file.clone(), None).unwrap();
            assert_eq!(events.skip_records(skip).unwrap(), skip);
            assert_eq!(events.next_record(), skip);
            let rest: Vec<String> = events.collect::<Result<_, _>>().unwrap();
            assert_eq!(rest, all[skip as usize..], "skip {skip}");
        }
        let mut events = AvroEvents::new(file.clone(), None).unwrap();
        assert_eq!(events.skip_records(100).unwrap(), 30);
        assert!(events.next().is_none());
        // Skipping in two steps, the second inside a block.
        let mut events = AvroEvents::new(file, None).unwrap();
        assert_eq!(events.skip_records(12).unwrap(), 12);
        assert_eq!(events.skip_records(5).unwrap(), 5);
        assert_eq!(events.next().unwrap().unwrap(), all[17]);
    }
    // Skipping over a damaged block still reports the damage where it is.
    let file = thirty_in_blocks_of_ten(Codec::Null).build();
    let damaged = Bytes::from(fixtures::with_bad_sync_marker(&file, 1));
    let mut events = AvroEvents::new(damaged, None).unwrap();
    match events.skip_records(25) {
        Err(ArchiveError::Corrupt { record: 10, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn next_into_appends_to_a_reused_buffer() {
    let file = Bytes::from(
        AvroFixture::new(EventType::MessagesPushnotificationSend)
            .events(3)
            .build(),
    );
    let expected: Vec<String> = AvroEvents::new(file.clone(), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut events = AvroEvents::new(file, None).unwrap();
    let mut out = String::new();
    while events.next_into(&mut out).unwrap() {
        out.push('\n');
    }
    assert_eq!(out, expected.join("\n") + "\n");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Damage anywhere never panics: each file ends in events then at most
    /// one error.
    #[test]
    fn damaged_files_never_panic(
        codec_idx in 0_usize..3,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1_u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut file = thirty_in_blocks_of_ten(codec_for(codec_idx)).events(12).build();
        for (at, mask) in flips {
            let at = at.index(file.len());
            file[at] ^= mask;
        }
        if truncate {
            let len = cut.index(file.len());
            file.truncate(len);
        }
        if let Ok(mut events) = AvroEvents::new(Bytes::from(file), None) {
            let mut n_errors = 0;
            let mut n_events = 0;
            for event in events.by_ref() {
                match event {
                    Ok(text) => {
                        prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
                        n_events += 1;
                    }
                    Err(_) => n_errors += 1,
                }
            }
            prop_assert!(n_errors <= 1);
            prop_assert_eq!(events.next_record(), n_events);
        }
    }
}

#[test]
fn a_string_that_is_not_utf8_is_damage() {
    let fixture = AvroFixture::new(EventType::MessagesEmailOpen).events(3);
    let mut file = fixture.build();
    let second_id = fixture.expected_events()[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = file
        .windows(second_id.len())
        .position(|window| window == second_id.as_bytes())
        .unwrap();
    file[at] = 0xff;
    let (texts, error) = read_all(file, None);
    assert_eq!(texts.len(), 1);
    match error {
        Some(ArchiveError::Corrupt { record: 1, detail }) => {
            assert!(detail.contains("UTF-8"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}
