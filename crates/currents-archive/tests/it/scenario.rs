//! One archive and what a backfill does with it, run on every kind of
//! store: list with and without pruning (proving with `stats()` that pruned
//! folders were neither listed nor read), read and decode what is kept,
//! write and read back `serve`'s batches.

use std::sync::Arc;

use bytes::Bytes;
use currents_archive::avro::Codec;
use currents_archive::events::ObjectEvents;
use currents_archive::fixtures::{AvroFixture, braze_key};
use currents_archive::layout::{KeyInfo, ObjectKind, Prune};
use currents_archive::store::{ArchiveStore, StoreStats};
use currents_model::synthetic::{Config, Generator};
use currents_model::{Batch, Event, EventType, Shape};

/// 2024-11-28T10:00:00Z.
pub(crate) const TEN_O_CLOCK: i64 = 1_732_788_000;

const TYPES: [EventType; 4] = [
    EventType::MessagesEmailOpen,
    EventType::MessagesEmailClick,
    EventType::BehaviorsCustomEvent,
    EventType::MessagesSmsSend,
];
const HOURS: usize = 3;
const FILES_PER_HOUR: u32 = 2;
const EVENTS_PER_FILE: usize = 3;

/// Braze's tree under `prefix`: 4 types × 3 hours × 2 files of 3 events,
/// plus two objects that are neither Avro nor batches, one in a folder that
/// the type and window prunes below keep, one in a folder they skip.
pub(crate) fn braze_tree(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut objects = Vec::new();
    let mut seq = 0;
    for (type_idx, event_type) in TYPES.into_iter().enumerate() {
        for hour in 0..HOURS {
            let hour_start = TEN_O_CLOCK + 3_600 * hour as i64;
            for _ in 0..FILES_PER_HOUR {
                seq += 1;
                let codec = [Codec::Null, Codec::Deflate, Codec::Snappy][seq as usize % 3];
                let file = AvroFixture::new(event_type)
                    .events(EVENTS_PER_FILE)
                    .seed(u64::from(seq))
                    .start_time(hour_start + 60)
                    .codec(codec)
                    .build();
                objects.push((braze_key(prefix, event_type.name(), hour_start, seq), file));
            }
            if type_idx == 0 && hour == 1 {
                let folder = braze_key(prefix, event_type.name(), hour_start, 0);
                let folder = &folder[..folder.rfind('/').unwrap()];
                objects.push((format!("{folder}/part.avro.crc"), b"crc".to_vec()));
            }
            if type_idx == 3 && hour == 2 {
                let folder = braze_key(prefix, event_type.name(), hour_start, 0);
                let folder = &folder[..folder.rfind('/').unwrap()];
                objects.push((format!("{folder}/_SUCCESS"), Vec::new()));
            }
        }
    }
    objects
}

fn delta(after: StoreStats, before: StoreStats) -> [u64; 6] {
    [
        after.list_calls - before.list_calls,
        after.objects_listed - before.objects_listed,
        after.objects_read - before.objects_read,
        after.bytes_read - before.bytes_read,
        after.objects_written - before.objects_written,
        after.bytes_written - before.bytes_written,
    ]
}

/// Lists, reads and decodes the tree [`braze_tree`] wrote at the store's root.
pub(crate) async fn list_and_read(store: &ArchiveStore) {
    let n_files = TYPES.len() * HOURS * FILES_PER_HOUR as usize;

    // Everything: one flat listing of the whole prefix.
    let before = store.stats();
    let all = store.list(&Prune::new()).await.unwrap();
    assert_eq!(all.objects.len(), n_files);
    assert_eq!(all.skipped_keys.len(), 2, "{:?}", all.skipped_keys);
    assert!(
        all.objects.windows(2).all(|pair| pair[0].key < pair[1].key),
        "sorted, each once"
    );
    assert!(
        all.objects
            .iter()
            .all(|object| object.kind == ObjectKind::Avro && object.size > 0)
    );
    assert!(
        all.objects
            .iter()
            .all(|object| object.last_modified_ms > 1_600_000_000_000)
    );
    assert_eq!(
        delta(store.stats(), before),
        [1, n_files as u64 + 2, 0, 0, 0, 0]
    );

    // E-mail types only: the other types' folders are never listed.
    let email = Prune::new().event_types(Arc::new(|event_type: &str| {
        event_type.starts_with("users.messages.email.")
    }));
    let before = store.stats();
    let listing = store.list(&email).await.unwrap();
    let kept = 2 * HOURS * FILES_PER_HOUR as usize;
    assert_eq!(listing.objects.len(), kept);
    assert_eq!(
        listing.skipped_keys.len(),
        1,
        "the .crc beside e-mail opens"
    );
    // The prefix, the integration folder, then one flat listing per kept type.
    let [list_calls, objects_listed, ..] = delta(store.stats(), before);
    assert_eq!(list_calls, 2 + 2);
    assert_eq!(
        objects_listed,
        kept as u64 + 1,
        "only the kept types' objects were listed"
    );
    for object in &listing.objects {
        let event_type = KeyInfo::parse(&object.key).event_type.unwrap();
        assert!(
            event_type.starts_with("users.messages.email."),
            "{}",
            object.key
        );
    }

    // Types and the hour from 11:00 to 12:00.
    let window = email
        .clone()
        .since(TEN_O_CLOCK + 3_600)
        .until(TEN_O_CLOCK + 2 * 3_600);
    let before = store.stats();
    let listing = store.list(&window).await.unwrap();
    let kept = 2 * FILES_PER_HOUR as usize;
    assert_eq!(listing.objects.len(), kept);
    let [list_calls, objects_listed, ..] = delta(store.stats(), before);
    // Prefix, integration folder, 2 type folders, then one flat listing per
    // kept hour.
    assert_eq!(list_calls, 2 + 2 + 2);
    assert_eq!(
        objects_listed,
        kept as u64 + 1,
        "only the kept hours' objects were listed"
    );

    // Read what is kept: only those objects are read.
    let before = store.stats();
    let mut n_events = 0;
    let mut text = String::new();
    for object in &listing.objects {
        let bytes = store.get(object).await.unwrap();
        assert_eq!(bytes.len() as u64, object.size);
        let mut events = ObjectEvents::for_object(object, bytes).unwrap();
        assert_eq!(events.shape(), Shape::Storage);
        let folder_type = KeyInfo::parse(&object.key).event_type.unwrap();
        while events.next_into(&mut text).unwrap() {
            let event = Event::parse(&text).unwrap();
            assert_eq!(event.event_type.as_str(), folder_type);
            let hour = TEN_O_CLOCK + 3_600;
            assert!((hour..hour + 3_600).contains(&event.time), "{}", event.time);
            n_events += 1;
            text.clear();
        }
    }
    assert_eq!(n_events, kept * EVENTS_PER_FILE);
    let read_bytes: u64 = listing.objects.iter().map(|object| object.size).sum();
    assert_eq!(
        delta(store.stats(), before),
        [0, 0, kept as u64, read_bytes, 0, 0]
    );

    // An object that is not there.
    let missing = store
        .get_key("currents/nothing-here.avro")
        .await
        .unwrap_err();
    assert!(
        matches!(missing, currents_archive::StoreError::NotFound { .. }),
        "{missing:?}"
    );
}

/// Writes batches as `serve` does, lists them by hour and reads them back.
pub(crate) async fn write_and_read_batches(store: &ArchiveStore) {
    let mut generator = Generator::new(Config::new(11));
    let bodies: Vec<String> = (0..3).map(|_| generator.envelope(4)).collect();
    let received = [
        TEN_O_CLOCK * 1_000 + 5,
        TEN_O_CLOCK * 1_000 + 3_600_000 + 7,
        TEN_O_CLOCK * 1_000 + 3_600_000 + 9,
    ];
    let before = store.stats();
    let mut keys = Vec::new();
    for (body, received_at_ms) in bodies.iter().zip(received) {
        let key = store
            .put_batch(Some("acme eu"), received_at_ms, Bytes::from(body.clone()))
            .await
            .unwrap();
        keys.push(key);
    }
    // The same body at the same millisecond is the same object.
    let again = store
        .put_batch(Some("acme eu"), received[0], Bytes::from(bodies[0].clone()))
        .await
        .unwrap();
    assert_eq!(again, keys[0]);
    let [_, _, _, _, written, written_bytes] = delta(store.stats(), before);
    assert_eq!(written, 4);
    assert!(written_bytes > 0);

    let eleven = Prune::new()
        .since(TEN_O_CLOCK + 3_600)
        .until(TEN_O_CLOCK + 2 * 3_600);
    let listing = store.list(&eleven).await.unwrap();
    let listed: Vec<&str> = listing
        .objects
        .iter()
        .map(|object| object.key.as_str())
        .filter(|key| key.contains("workspace="))
        .collect();
    assert_eq!(listed, [keys[1].as_str(), keys[2].as_str()]);
    for (object, body) in listing
        .objects
        .iter()
        .filter(|object| object.key.contains("workspace="))
        .zip(&bodies[1..])
    {
        assert_eq!(object.kind, ObjectKind::Batches);
        assert_eq!(
            KeyInfo::parse(&object.key).workspace.as_deref(),
            Some("acme eu")
        );
        let events = ObjectEvents::for_object(object, store.get(object).await.unwrap()).unwrap();
        assert_eq!(events.shape(), Shape::Http);
        let texts: Vec<String> = events.collect::<Result<_, _>>().unwrap();
        let expected: Vec<&str> = Batch::parse(body)
            .unwrap()
            .events
            .iter()
            .map(|raw| raw.get())
            .collect();
        assert_eq!(texts, expected);
    }
}
