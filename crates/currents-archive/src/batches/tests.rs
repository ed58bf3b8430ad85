//! Archived envelopes: one per object or per line, gzip or not, and the
//! line that is not an envelope.

use std::io::Write as _;

use bytes::Bytes;
use currents_model::synthetic::{Config, Generator};
use currents_model::{Batch, Event, Shape};

use super::BatchFileEvents;
use crate::ArchiveError;

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn envelopes(n: usize, events_each: usize) -> Vec<String> {
    let mut generator = Generator::new(Config::new(3));
    (0..n).map(|_| generator.envelope(events_each)).collect()
}

fn expected_events(bodies: &[String]) -> Vec<String> {
    bodies
        .iter()
        .flat_map(|body| {
            Batch::parse(body)
                .unwrap()
                .events
                .iter()
                .map(|raw| raw.get().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn read_all(object: Vec<u8>) -> (Vec<String>, Option<ArchiveError>) {
    let events = match BatchFileEvents::new(Bytes::from(object)) {
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

#[test]
fn one_envelope_per_object_gzip_or_not() {
    let bodies = envelopes(1, 7);
    let expected = expected_events(&bodies);
    for object in [bodies[0].clone().into_bytes(), gzip(&bodies[0])] {
        let (texts, error) = read_all(object);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(texts, expected);
        for text in &texts {
            assert_eq!(Event::parse(text).unwrap().shape, Shape::Http);
        }
    }
    // Pretty-printed over several lines, it is still one envelope.
    let pretty = format!("{{\n  \"events\": [\n{}\n  ]\n}}\n", expected.join(",\n"));
    assert_eq!(read_all(pretty.into_bytes()).0, expected);
}

#[test]
fn one_envelope_per_line_blank_lines_and_empty_batches_skipped() {
    let bodies = envelopes(4, 3);
    let expected = expected_events(&bodies);
    let text = format!(
        "{}\n\n{}\r\n{{\"events\":[]}}\n{}\n{}",
        bodies[0], bodies[1], bodies[2], bodies[3]
    );
    for object in [text.clone().into_bytes(), gzip(&text)] {
        let (texts, error) = read_all(object);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(texts, expected);
    }
    // Several gzip members, one after the other, read as one stream.
    let mut members = gzip(&format!("{}\n", bodies[0]));
    members.extend(gzip(&bodies[1]));
    assert_eq!(read_all(members).0, expected[..6]);
}

#[test]
fn a_line_that_is_not_an_envelope_ends_the_events_with_its_number() {
    let bodies = envelopes(2, 3);
    let expected = expected_events(&bodies);
    let text = format!(
        "{}\n{}\n{{\"event_type\":\"x\"}}\n{}",
        bodies[0], bodies[1], bodies[0]
    );
    let (texts, error) = read_all(text.into_bytes());
    assert_eq!(texts, expected);
    match error {
        Some(ArchiveError::Envelope {
            line: 3, record: 6, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let (texts, error) = read_all(b"{\"events\":[".to_vec());
    assert!(texts.is_empty());
    assert!(
        matches!(
            error,
            Some(ArchiveError::Envelope {
                line: 1,
                record: 0,
                ..
            })
        ),
        "{error:?}"
    );
}

#[test]
fn bad_objects_fail_up_front() {
    assert!(matches!(
        read_all(Vec::new()).1,
        Some(ArchiveError::EmptyFile)
    ));
    assert!(matches!(
        read_all(vec![0x1f, 0x8b, 0, 1, 2]).1,
        Some(ArchiveError::Gzip { .. })
    ));
    assert!(matches!(
        read_all(b"{\"events\":[\xff]}".to_vec()).1,
        Some(ArchiveError::NotUtf8 { valid_up_to: 11 })
    ));
}

#[test]
fn events_can_be_skipped_across_envelopes() {
    let bodies = envelopes(3, 4);
    let expected = expected_events(&bodies);
    let text = bodies.join("\n");
    for skip in [0_u64, 1, 4, 5, 11, 12] {
        let mut events = BatchFileEvents::new(Bytes::from(text.clone())).unwrap();
        assert_eq!(events.skip_records(skip).unwrap(), skip);
        assert_eq!(events.next_record(), skip);
        let rest: Vec<String> = events.collect::<Result<_, _>>().unwrap();
        assert_eq!(rest, expected[skip as usize..]);
    }
    let mut events = BatchFileEvents::new(Bytes::from(text)).unwrap();
    assert_eq!(events.skip_records(50).unwrap(), 12);
    let mut out = String::new();
    assert!(!events.next_into(&mut out).unwrap());
}
