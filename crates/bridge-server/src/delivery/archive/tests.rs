//! The archive step over a real SQLite spool, a directory archive and a
//! wiremock Mixpanel: what is delivered is archived as received; what cannot
//! be archived waits, then goes once the archive works, or becomes an
//! `archive_failed` dead letter past its limits, which a replay brings back.
//!
//! An archive is made to fail by putting a file where its directory (or an
//! hour's folder) must be: writing below a file fails for every user, root
//! included, where permissions would not stop root.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use currents_archive::events::ObjectEvents;
use currents_archive::layout::{KeyInfo, Prune, batch_object_key};
use serde_json::{Value, json};
use wiremock::MockServer;

use super::*;
use crate::delivery::tests::{
    RELEASED, SETTLED, TestDir, delivery_with_metrics, event, events_in, mixpanel,
    mixpanel_accepting, options, sample, spool_in,
};
use crate::delivery::{DeliveryOptions, ProjectTarget};
use crate::spool::NewBatch;
use crate::spool::sqlite::{DeadLetterFilter, SqliteSpool};

/// An empty archive directory in `dir`, and the store on it.
fn archive_in(dir: &TestDir) -> (PathBuf, ArchiveStore) {
    let archive_dir = dir.0.join("archive");
    std::fs::create_dir_all(&archive_dir).unwrap();
    let store = ArchiveStore::open(archive_dir.to_str().unwrap()).unwrap();
    (archive_dir, store)
}

/// The test options, archiving to `store`, leasing up to 10 batches
/// together, with every retry due at once.
fn archiving_to(store: &ArchiveStore) -> DeliveryOptions {
    DeliveryOptions {
        archive: Some(store.clone()),
        batches_per_lease: 10,
        max_retry_delay: Duration::ZERO,
        ..options()
    }
}

/// Appends `body` as received from `workspace` at `received_at_ms`.
async fn append_body(
    spool: &SqliteSpool,
    body: &str,
    workspace: Option<&str>,
    received_at_ms: i64,
) -> NewBatch {
    let batch = NewBatch {
        body: Bytes::from(body.to_owned()),
        workspace: workspace.map(str::to_owned),
        received_at_ms,
    };
    spool.append(batch.clone()).await.unwrap();
    batch
}

/// A batch body of these events.
fn body_of(events: &[Value]) -> String {
    json!({ "events": events }).to_string()
}

/// One archived object: its key, its content inflated, and its events as
/// `backfill` reads them.
#[derive(Debug, PartialEq)]
struct Archived {
    key: String,
    body: Bytes,
    events: Vec<String>,
}

/// Every object of the archive, by key (not the files put in its way).
async fn archived(store: &ArchiveStore) -> Vec<Archived> {
    let listing = store.list(&Prune::new()).await.unwrap();
    let mut objects = Vec::new();
    for object in &listing.objects {
        let compressed = store.get(object).await.unwrap();
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut body)
            .unwrap();
        let events = ObjectEvents::for_object(object, compressed)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        objects.push(Archived {
            key: object.key.clone(),
            body: Bytes::from(body),
            events,
        });
    }
    objects
}

/// The ids of these events.
fn ids_of(events: &[String]) -> Vec<String> {
    events
        .iter()
        .map(|text| {
            let event: Value = serde_json::from_str(text).unwrap();
            event["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Where `batch` is archived.
fn key_of(batch: &NewBatch) -> String {
    batch_object_key(
        "",
        batch.workspace.as_deref(),
        batch.received_at_ms,
        &batch.body,
    )
}

/// The `$insert_id`s Mixpanel received.
async fn insert_ids(server: &MockServer) -> Vec<String> {
    let mut ids: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .flat_map(events_in)
        .map(|event| {
            event["properties"]["$insert_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

fn two_projects(server: &MockServer) -> Vec<ProjectTarget> {
    vec![mixpanel(server, "a"), mixpanel(server, "b")]
}

#[tokio::test]
async fn every_delivered_batch_is_archived_as_received_under_its_hour_and_workspace() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let (_, store) = archive_in(&dir);
    let server = mixpanel_accepting().await;
    let (delivery, metrics) =
        delivery_with_metrics(&spool, two_projects(&server), archiving_to(&store));
    let now_ms = crate::clock::now_ms();
    // As Braze wrote it, spaces and newline included: archived byte for byte.
    let spaced = format!(
        "{{ \"events\" : [ {} ,\n {} ] }}",
        event("s-1", Some("cust-1"), "ag"),
        event("s-2", Some("cust-2"), "ag")
    );
    let batches = [
        append_body(&spool, &spaced, None, now_ms).await,
        append_body(
            &spool,
            &body_of(&[event("b-1", Some("cust-3"), "ag-b")]),
            Some("brand-b"),
            now_ms - 3_600_000,
        )
        .await,
        append_body(
            &spool,
            &body_of(&[event("e-1", Some("cust-4"), "ag")]),
            Some("acme eu"),
            now_ms,
        )
        .await,
    ];

    assert_eq!(
        delivery.deliver_next().await.unwrap(),
        Some(LeaseResult {
            settled: 3,
            released: 0
        })
    );
    assert_eq!(insert_ids(&server).await, ["b-1", "e-1", "s-1", "s-2"]);

    let mut batches_by_key = batches.to_vec();
    batches_by_key.sort_by_key(key_of);
    let objects = archived(&store).await;
    let keys_and_bodies: Vec<(&str, &Bytes)> = objects
        .iter()
        .map(|object| (object.key.as_str(), &object.body))
        .collect();
    let expected: Vec<(String, &Bytes)> = batches_by_key
        .iter()
        .map(|batch| (key_of(batch), &batch.body))
        .collect();
    let expected: Vec<(&str, &Bytes)> = expected
        .iter()
        .map(|(key, body)| (key.as_str(), *body))
        .collect();
    assert_eq!(keys_and_bodies, expected, "each batch, byte for byte");
    for (object, batch) in objects.iter().zip(&batches_by_key) {
        let info = KeyInfo::parse(&object.key);
        assert_eq!(info.workspace, batch.workspace, "{}", object.key);
        let hour_start_secs = batch.received_at_ms.div_euclid(3_600_000) * 3_600;
        assert_eq!(
            info.period.unwrap().start,
            hour_start_secs,
            "{}",
            object.key
        );
        // What backfill reads back: the batch's events, as they came.
        let sent: Value = serde_json::from_slice(&batch.body).unwrap();
        let sent_ids: Vec<&str> = sent["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids_of(&object.events), sent_ids, "{}", object.key);
    }

    let body_bytes: u64 = batches.iter().map(|batch| batch.body.len() as u64).sum();
    assert_eq!(
        sample(
            &metrics,
            "bridge_archive_batches_total{outcome=\"written\"}"
        ),
        3
    );
    assert_eq!(
        sample(&metrics, "bridge_archive_batches_total{outcome=\"failed\"}"),
        0
    );
    assert!(
        metrics
            .render()
            .contains("bridge_archive_batches_total{outcome=\"failed\"} 0"),
        "the failed series exists from the start"
    );
    assert_eq!(sample(&metrics, "bridge_archive_bytes_total"), body_bytes);
    let status = delivery.status();
    let archive = status.archive.as_ref().unwrap();
    assert_eq!(archive.url, store.location());
    assert_eq!(archive.batches_written.load(Ordering::Relaxed), 3);
    assert_eq!(archive.body_bytes.load(Ordering::Relaxed), body_bytes);
}

#[tokio::test]
async fn a_batch_that_cannot_be_archived_waits_undelivered_and_the_rest_of_its_group_goes() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let (archive_dir, store) = archive_in(&dir);
    let server = mixpanel_accepting().await;
    let (delivery, metrics) =
        delivery_with_metrics(&spool, two_projects(&server), archiving_to(&store));
    let now_ms = crate::clock::now_ms();
    let blocked = append_body(
        &spool,
        &body_of(&[event("late-1", Some("cust-1"), "ag")]),
        None,
        now_ms - 2 * 3_600_000,
    )
    .await;
    let free = append_body(
        &spool,
        &body_of(&[event("now-1", Some("cust-2"), "ag")]),
        None,
        now_ms,
    )
    .await;
    // A file where the blocked batch's hour folder must go.
    let key = key_of(&blocked);
    let hour_folder = archive_dir.join(key.split('/').next().unwrap());
    std::fs::write(&hour_folder, b"in the way").unwrap();

    assert_eq!(
        delivery.deliver_next().await.unwrap(),
        Some(LeaseResult {
            settled: 1,
            released: 1
        })
    );
    assert_eq!(
        insert_ids(&server).await,
        ["now-1"],
        "only what was archived"
    );
    let keys: Vec<String> = archived(&store).await.into_iter().map(|o| o.key).collect();
    assert_eq!(keys, [key_of(&free)]);
    assert_eq!(spool.stats().await.unwrap().n_batches, 1, "it waits");
    assert_eq!(
        sample(&metrics, "bridge_archive_batches_total{outcome=\"failed\"}"),
        1
    );
    assert_eq!(
        sample(&metrics, "bridge_delivery_released_batches_total"),
        1
    );
    let status = delivery.status();
    assert_eq!(
        status
            .archive
            .as_ref()
            .unwrap()
            .batches_failed
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(status.batches_released.load(Ordering::Relaxed), 1);

    // The archive works again: the batch is archived, then delivered.
    std::fs::remove_file(&hour_folder).unwrap();
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(insert_ids(&server).await, ["late-1", "now-1"]);
    let objects = archived(&store).await;
    assert_eq!(objects.len(), 2);
    assert!(
        objects
            .iter()
            .any(|object| object.key == key && object.body == blocked.body)
    );
    assert_eq!(
        sample(
            &metrics,
            "bridge_archive_batches_total{outcome=\"written\"}"
        ),
        2
    );
    assert_eq!(spool.stats().await.unwrap().n_batches, 0);
}

#[tokio::test]
async fn a_batch_never_archived_becomes_an_archive_failed_dead_letter_and_a_replay_brings_it_back()
{
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let (archive_dir, store) = archive_in(&dir);
    let server = mixpanel_accepting().await;
    let opts = DeliveryOptions {
        max_attempts: 2,
        ..archiving_to(&store)
    };
    let (delivery, metrics) = delivery_with_metrics(&spool, two_projects(&server), opts);
    let batch = append_body(
        &spool,
        &body_of(&[
            event("x-1", Some("cust-1"), "ag-b"),
            event("x-2", Some("cust-2"), "ag-b"),
        ]),
        Some("brand-b"),
        crate::clock::now_ms(),
    )
    .await;
    // A file where the archive's directory was: nothing can be written.
    std::fs::remove_dir(&archive_dir).unwrap();
    std::fs::write(&archive_dir, b"in the way").unwrap();

    // The first attempt is released, the second reaches the limit.
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(
        delivery.deliver_next().await.unwrap(),
        None,
        "no loop goes on"
    );
    assert!(
        insert_ids(&server).await.is_empty(),
        "nothing unarchived is sent"
    );

    let mut dead_letters = spool.dead_letter_store().unwrap();
    let entries = dead_letters.list(&DeadLetterFilter::default(), 10).unwrap();
    assert_eq!(entries.len(), 1);
    let letter = &entries[0].letter;
    assert_eq!(letter.reason, ARCHIVE_FAILED);
    assert_eq!(letter.event, batch.body, "the whole body, as received");
    assert_eq!(letter.workspace.as_deref(), Some("brand-b"));
    assert_eq!(letter.attempts, 1);
    assert!(
        letter
            .detail
            .starts_with("gave up archiving after the attempt or age limit: cannot write"),
        "{}",
        letter.detail
    );
    assert_eq!(
        sample(&metrics, "bridge_archive_batches_total{outcome=\"failed\"}"),
        2
    );
    assert_eq!(
        sample(
            &metrics,
            "bridge_delivery_dead_lettered_events_total{reason=\"archive_failed\"}"
        ),
        1
    );
    assert_eq!(delivery.status().dead_lettered.load(Ordering::Relaxed), 1);

    // The store is back: `dlq replay` puts the batch back as it was, and it
    // is archived and delivered like any other.
    std::fs::remove_file(&archive_dir).unwrap();
    std::fs::create_dir(&archive_dir).unwrap();
    let replayed = dead_letters
        .replay(&DeadLetterFilter {
            reason: Some(ARCHIVE_FAILED.to_owned()),
            ..DeadLetterFilter::default()
        })
        .unwrap();
    assert_eq!((replayed.n_events, replayed.n_batches), (2, 1));
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(insert_ids(&server).await, ["x-1", "x-2"]);
    let objects = archived(&store).await;
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].body, batch.body);
    assert_eq!(
        KeyInfo::parse(&objects[0].key).workspace.as_deref(),
        Some("brand-b")
    );
    assert_eq!(spool.stats().await.unwrap().n_dead_letters, 0);
}

#[tokio::test]
async fn without_an_archive_nothing_is_counted_for_it() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = mixpanel_accepting().await;
    let (delivery, metrics) = delivery_with_metrics(&spool, two_projects(&server), options());
    append_body(
        &spool,
        &body_of(&[event("n-1", Some("cust-1"), "ag")]),
        None,
        crate::clock::now_ms(),
    )
    .await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert!(delivery.status().archive.is_none());
    assert!(!metrics.render().contains("bridge_archive_batches_total{"));
}
