//! Batcher tests: limits, order, and exactly-once placement (proptest).

use proptest::prelude::*;

use super::*;

fn event(n: usize, bytes: usize) -> Vec<u8> {
    let prefix = format!("{{\"event\":\"e\",\"properties\":{{\"n\":{n},\"pad\":\"");
    let mut json = prefix.into_bytes();
    let filler = bytes.saturating_sub(json.len() + 3).max(1);
    json.extend(std::iter::repeat_n(b'x', filler));
    json.extend_from_slice(b"\"}}");
    json
}

#[test]
fn body_is_a_json_array_and_events_are_addressable() {
    let mut batch = ImportBatch::new();
    assert_eq!(batch.body(), b"[]");
    batch.push(br#"{"a":1}"#);
    batch.push(br#"{"b":2}"#);
    assert_eq!(batch.body(), br#"[{"a":1},{"b":2}]"#);
    assert_eq!(batch.body_bytes(), batch.body().len());
    assert_eq!(batch.event(0), br#"{"a":1}"#);
    assert_eq!(batch.event(1), br#"{"b":2}"#);
    let (first, second) = batch.split();
    assert_eq!(first.body(), br#"[{"a":1}]"#);
    assert_eq!(second.body(), br#"[{"b":2}]"#);
}

#[test]
fn body_bytes_is_the_body_length_at_every_step() {
    let mut batch = ImportBatch::new();
    assert_eq!(batch.body_bytes(), 2);
    for (idx, event) in [&br#"{"a":1}"#[..], b"{}", br#"{"c":[1,2]}"#]
        .iter()
        .enumerate()
    {
        let expected = batch.body_bytes_with(event.len());
        batch.push(event);
        assert_eq!(batch.body_bytes(), expected);
        assert_eq!(batch.body_bytes(), batch.body().len());
        assert_eq!(batch.event(idx), *event);
    }
    assert_eq!(batch.body(), br#"[{"a":1},{},{"c":[1,2]}]"#);
}

#[test]
fn event_count_limit_starts_a_new_batch() {
    let mut batcher = Batcher::new(BatchLimits {
        max_events: 2,
        ..BatchLimits::default()
    });
    assert_eq!(batcher.push(b"{}").unwrap(), None);
    assert_eq!(batcher.push(b"{}").unwrap(), None);
    let full = batcher
        .push(b"{}")
        .unwrap()
        .expect("third event starts a new batch");
    assert_eq!(full.len(), 2);
    assert_eq!(batcher.flush().map(|batch| batch.len()), Some(1));
    assert_eq!(batcher.flush(), None);
}

#[test]
fn an_event_at_the_per_event_limit_is_refused_alone() {
    let mut batcher = Batcher::new(BatchLimits {
        max_event_bytes: 100,
        ..BatchLimits::default()
    });
    batcher.push(&event(0, 50)).unwrap();
    let error = batcher.push(&event(1, 100)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::EventTooLarge {
                bytes: 100,
                limit_bytes: 100
            }
        ),
        "{error:?}"
    );
    assert_eq!(batcher.pending(), 1, "the refused event is not added");
}

#[test]
fn an_event_over_the_request_cap_travels_alone() {
    let mut batcher = Batcher::new(BatchLimits {
        max_events: 10,
        max_bytes: 100,
        max_event_bytes: 1000,
    });
    batcher.push(&event(0, 40)).unwrap();
    let first = batcher
        .push(&event(1, 300))
        .unwrap()
        .expect("flushes the small one");
    assert_eq!(first.len(), 1);
    let second = batcher
        .push(&event(2, 40))
        .unwrap()
        .expect("the big one goes alone");
    assert_eq!(second.len(), 1);
    assert_eq!(second.event(0), &event(1, 300)[..]);
}

#[test]
fn a_recycled_batch_holds_the_next_batch() {
    let limits = BatchLimits {
        max_events: 3,
        ..BatchLimits::default()
    };
    let mut batcher = Batcher::new(limits);
    for n in 0..3 {
        assert_eq!(batcher.push(&event(n, 200)).unwrap(), None);
    }
    let first = batcher.push(&event(3, 200)).unwrap().expect("a full batch");
    assert_eq!(first.len(), 3);
    let memory = first.body.as_ptr();
    batcher.recycle(first);
    batcher.push(&event(4, 200)).unwrap();
    batcher.push(&event(5, 200)).unwrap();
    // The batch now filling is the one opened by event 3; the recycled
    // memory takes the batch after it.
    let second = batcher.push(&event(6, 200)).unwrap().expect("a full batch");
    assert_eq!(second.events().count(), 3);
    let third = batcher.flush().expect("event 6");
    assert_eq!(third.body.as_ptr(), memory);
    assert_eq!(third.body(), [b"[", &event(6, 200)[..], b"]"].concat());
    assert_eq!(third.len(), 1);
}

#[test]
fn a_new_batcher_fills_a_spare_first_and_gives_unused_memory_back() {
    let mut sent = ImportBatch::new();
    sent.push(&event(0, 5000));
    let memory = sent.body.as_ptr();
    let mut batcher = Batcher::new(BatchLimits::default());
    batcher.recycle(sent);
    batcher.push(&event(1, 100)).unwrap();
    let batch = batcher.flush().expect("one event");
    assert_eq!(batch.body.as_ptr(), memory);
    assert_eq!(batch.body(), [b"[", &event(1, 100)[..], b"]"].concat());

    let mut idle = Batcher::new(BatchLimits::default());
    assert!(idle.clone().into_spare().is_none());
    idle.recycle(batch);
    let spare = idle.into_spare().expect("the recycled batch");
    assert!(spare.is_empty());
    assert_eq!(spare.body.as_ptr(), memory);
}

proptest! {
    #[test]
    fn every_event_lands_in_exactly_one_batch_in_order(
        sizes in proptest::collection::vec(30usize..400, 0..300),
        max_events in 1usize..50,
        max_bytes in 200usize..3000,
    ) {
        let limits = BatchLimits { max_events, max_bytes, max_event_bytes: 1000 };
        let mut batcher = Batcher::new(limits);
        let mut batches = Vec::new();
        for (n, size) in sizes.iter().enumerate() {
            if let Some(batch) = batcher.push(&event(n, *size)).unwrap() {
                batches.push(batch);
            }
        }
        batches.extend(batcher.flush());
        let mut seen = Vec::new();
        for batch in &batches {
            prop_assert!(!batch.is_empty());
            prop_assert!(batch.len() <= max_events);
            prop_assert!(batch.len() == 1 || batch.body_bytes() <= max_bytes);
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(&batch.body()).unwrap();
            prop_assert_eq!(parsed.len(), batch.len());
            for value in parsed {
                seen.push(value["properties"]["n"].as_u64().unwrap() as usize);
            }
        }
        let expected: Vec<usize> = (0..sizes.len()).collect();
        prop_assert_eq!(seen, expected);
    }
}
