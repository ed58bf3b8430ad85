//! Tests of the NATS spool against a real `nats-server` (one per test, on a
//! free loopback port; see `crate::nats::test_server`): the work-queue
//! semantics, attempts counted as the SQLite spool counts them, leases kept
//! by progress acks and lost with their process, duplicates, the size
//! bound, outages and recovery, settings that disagree, and the dead-letter
//! administration.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{NatsDeadLetterStore, NatsSpool};
use crate::nats::test_server::NatsServer;
use crate::nats::{NatsAuth, NatsError, NatsOptions, connect};
use crate::spool::{
    BatchId, DeadLetter, DeadLetterAdmin, DeadLetterFilter, LeasedBatch, NewBatch, Spool,
    SpoolError,
};

const HOUR: Duration = Duration::from_secs(3600);

/// A short `ack_wait`, for leases that must run out within a test.
const ACK_WAIT: Duration = Duration::from_secs(1);

/// How long something that must happen eventually is waited for.
const EVENTUALLY: Duration = Duration::from_secs(30);

fn options(server: &NatsServer) -> NatsOptions {
    let mut options = NatsOptions::new(vec![server.url()]);
    // JetStream reserves a stream's max_bytes on disk: keep it small, so
    // that parallel tests fit any test machine's disk.
    options.max_bytes = 64 << 20;
    options.publish_timeout = Duration::from_secs(2);
    options.connect_timeout = Duration::from_secs(2);
    options
}

async fn open_with(options: &NatsOptions, ack_wait: Duration) -> NatsSpool {
    let client = connect(options).await.expect("connect to nats-server");
    NatsSpool::open(client, options, ack_wait)
        .await
        .expect("open the NATS spool")
}

fn body(seq: u64, n_pad_bytes: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"events":[{{"id":"e{seq}","seq":{seq},"pad":"{}"}}]}}"#,
        "x".repeat(n_pad_bytes)
    ))
}

fn batch(seq: u64) -> NewBatch {
    NewBatch {
        body: body(seq, 64),
        workspace: Some("brand-a".to_owned()),
        received_at_ms: 1_700_000_000_000 + seq as i64,
    }
}

fn dead_letter(reason: &str, event_type: &str, workspace: &str, seq: u64) -> DeadLetter {
    DeadLetter {
        event: Bytes::from(format!(r#"{{"id":"d{seq}","event_type":"{event_type}"}}"#)),
        reason: reason.to_owned(),
        detail: format!("detail {seq}"),
        event_type: Some(event_type.to_owned()),
        event_id: Some(format!("d{seq}")),
        workspace: Some(workspace.to_owned()),
        attempts: 3,
    }
}

/// Leases (for an hour) the batches that come back once a lease or retry
/// delay, set at `since` or after it, runs out; fails if they come back
/// before `delay` has certainly passed, or not within 30 s.
async fn lease_once_due(spool: &NatsSpool, since: Instant, delay: Duration) -> Vec<LeasedBatch> {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let leased = spool.lease(10, HOUR).await.unwrap();
        if !leased.is_empty() {
            let elapsed = since.elapsed();
            assert!(
                elapsed >= delay,
                "the batch came back {elapsed:?} after a delay of {delay:?}"
            );
            return leased;
        }
        assert!(Instant::now() < deadline, "the batch never came back");
    }
}

/// Leases nothing: nothing is due.
async fn assert_nothing_due(spool: &NatsSpool) {
    let leased = spool.lease(10, HOUR).await.unwrap();
    assert!(
        leased.is_empty(),
        "leased {:?}",
        leased.iter().map(|b| b.id).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn append_lease_settle_in_order_with_the_batch_as_received() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let spool = open_with(&options(&server), HOUR).await;
    assert!(spool.is_connected());
    let mut ids = Vec::new();
    for seq in 0..3 {
        ids.push(spool.append(batch(seq)).await.unwrap());
    }
    let anonymous = NewBatch {
        body: body(9, 8),
        workspace: None,
        received_at_ms: 1_700_000_000_009,
    };
    ids.push(spool.append(anonymous.clone()).await.unwrap());
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");

    let stats = spool.stats().await.unwrap();
    assert_eq!(stats.n_batches, 4);
    assert!(stats.n_bytes > 0);
    assert_eq!(stats.oldest_received_at_ms, Some(1_700_000_000_000));

    let leased = spool.lease(10, HOUR).await.unwrap();
    assert_eq!(leased.iter().map(|b| b.id).collect::<Vec<_>>(), ids);
    for (seq, leased) in leased.iter().take(3).enumerate() {
        assert_eq!(leased.batch, batch(seq as u64));
        assert_eq!(leased.attempts, 0);
    }
    assert_eq!(leased[3].batch, anonymous);
    assert_eq!(spool.consumer_stats().await.unwrap().n_ack_pending, 4);
    assert_nothing_due(&spool).await;

    for id in &ids[..3] {
        spool.settle(*id, Vec::new()).await.unwrap();
    }
    let stats = spool.stats().await.unwrap();
    assert_eq!(stats.n_batches, 1);
    assert_eq!(stats.oldest_received_at_ms, Some(1_700_000_000_009));
    spool.settle(ids[3], Vec::new()).await.unwrap();
    assert_eq!(spool.stats().await.unwrap().n_batches, 0);
    assert_eq!(spool.stats().await.unwrap().oldest_received_at_ms, None);
    // Settling or releasing what this spool does not hold is a no-op.
    spool.settle(ids[0], Vec::new()).await.unwrap();
    spool.release(ids[0], Duration::ZERO).await.unwrap();
    spool.close().await.unwrap();
    assert!(matches!(
        spool.append(batch(5)).await,
        Err(SpoolError::Closed)
    ));
}

#[tokio::test]
async fn a_batch_sent_again_within_the_duplicate_window_is_stored_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let spool = open_with(&options(&server), HOUR).await;
    let first = spool.append(batch(1)).await.unwrap();
    let again = spool.append(batch(1)).await.unwrap();
    assert_eq!(first, again, "the duplicate answers with the first's id");
    // The same body from another workspace, or another body, is another batch.
    let mut other_workspace = batch(1);
    other_workspace.workspace = Some("brand-b".to_owned());
    let second = spool.append(other_workspace).await.unwrap();
    let third = spool.append(batch(2)).await.unwrap();
    assert!(first < second && second < third);
    assert_eq!(spool.stats().await.unwrap().n_batches, 3);
    assert_eq!(spool.lease(10, HOUR).await.unwrap().len(), 3);
}

#[tokio::test]
async fn release_delays_the_batch_and_attempts_count_deliveries() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let spool = open_with(&options(&server), HOUR).await;
    let id = spool.append(batch(1)).await.unwrap();
    assert_eq!(spool.lease(1, HOUR).await.unwrap().len(), 1);
    let since = Instant::now();
    let delay = Duration::from_millis(1500);
    spool.release(id, delay).await.unwrap();
    let leased = lease_once_due(&spool, since, delay).await;
    assert_eq!((leased[0].id, leased[0].attempts), (id, 1));
    spool.release(id, Duration::ZERO).await.unwrap();
    let leased = spool.lease(1, HOUR).await.unwrap();
    assert_eq!((leased[0].id, leased[0].attempts), (id, 2));
    assert_eq!(spool.consumer_stats().await.unwrap().n_redelivered, 1);
}

#[tokio::test]
async fn attempts_count_leases_and_release_does_not_count_twice_as_with_sqlite() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    // The rounds of the SQLite spool's test of the same name: a worker that
    // gives the batch back alternates with one whose lease runs out, while
    // idle leases poll in between (on nats-server 2.9, long polls expiring
    // as a redelivery fell due lost deliveries and skipped counts).
    let spool = open_with(&options(&server), ACK_WAIT).await;
    let id = spool.append(batch(1)).await.unwrap();
    let mut seen = Vec::new();
    for round in 0..10 {
        let deadline = Instant::now() + EVENTUALLY;
        let leased = loop {
            // A lease of zero: it runs out as soon as ack_wait allows.
            let leased = spool.lease(1, Duration::ZERO).await.unwrap();
            if !leased.is_empty() {
                break leased;
            }
            assert!(Instant::now() < deadline, "the batch never came back");
        };
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].id, id);
        seen.push(leased[0].attempts);
        if round % 2 == 0 {
            spool.release(id, Duration::ZERO).await.unwrap();
        }
    }
    assert_eq!(seen, (0..10).collect::<Vec<u32>>());
}

#[tokio::test]
async fn an_expired_lease_makes_the_batch_due_again() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let spool = open_with(&options(&server), ACK_WAIT).await;
    let id = spool.append(batch(1)).await.unwrap();
    let since = Instant::now();
    // A lease shorter than ack_wait hides the batch for ack_wait.
    assert_eq!(spool.lease(10, Duration::ZERO).await.unwrap().len(), 1);
    let again = lease_once_due(&spool, since, ACK_WAIT).await;
    assert_eq!((again[0].id, again[0].attempts), (id, 1));
}

#[tokio::test]
async fn progress_acks_keep_a_lease_longer_than_ack_wait_and_stop_at_its_end() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let spool = open_with(&options(&server), ACK_WAIT).await;
    let id = spool.append(batch(1)).await.unwrap();
    let lease = Duration::from_secs(4);
    let since = Instant::now();
    assert_eq!(spool.lease(1, lease).await.unwrap().len(), 1);
    // Three times ack_wait later, the batch is still hidden.
    while since.elapsed() < ACK_WAIT * 3 {
        assert_nothing_due(&spool).await;
    }
    let again = lease_once_due(&spool, since, lease).await;
    assert_eq!((again[0].id, again[0].attempts), (id, 1));
    // Well before the hour the lease would last if progress acks went on.
    assert!(
        since.elapsed() < lease + ACK_WAIT * 20,
        "the lease was kept {:?} instead of {lease:?}",
        since.elapsed()
    );
}

#[tokio::test]
async fn batches_held_by_a_dead_process_come_back_after_ack_wait() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = options(&server);
    let doomed = open_with(&options, ACK_WAIT).await;
    let ids = [
        doomed.append(batch(1)).await.unwrap(),
        doomed.append(batch(2)).await.unwrap(),
    ];
    assert_eq!(doomed.lease(10, HOUR).await.unwrap().len(), 2);
    let survivor = open_with(&options, ACK_WAIT).await;
    // Dropped without settling or closing: its progress acks stop, as when
    // its process is killed.
    let since = Instant::now();
    drop(doomed);
    let mut again = lease_once_due(&survivor, since, Duration::ZERO).await;
    if again.len() < 2 {
        again.extend(lease_once_due(&survivor, since, Duration::ZERO).await);
    }
    assert_eq!(
        again.iter().map(|b| (b.id, b.attempts)).collect::<Vec<_>>(),
        [(ids[0], 1), (ids[1], 1)]
    );
    // Well before the hour of their leases.
    assert!(
        since.elapsed() < ACK_WAIT * 20,
        "they came back {:?} after the process died",
        since.elapsed()
    );

    // A clean close gives the leases back at once.
    let closing = open_with(&options, ACK_WAIT).await;
    closing.append(batch(3)).await.unwrap();
    let held = closing.lease(10, HOUR).await.unwrap();
    assert_eq!(held.len(), 1);
    closing.close().await.unwrap();
    let again = survivor.lease(10, HOUR).await.unwrap();
    assert_eq!(
        again.iter().map(|b| (b.id, b.attempts)).collect::<Vec<_>>(),
        [(held[0].id, 1)]
    );
}

#[tokio::test]
async fn a_full_stream_refuses_appends_until_batches_are_settled() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let mut options = options(&server);
    options.max_bytes = 2_000;
    let spool = open_with(&options, HOUR).await;
    let mut ids = Vec::new();
    let full = loop {
        match spool.append(batch(ids.len() as u64)).await {
            Ok(id) => ids.push(id),
            Err(error) => break error,
        }
        assert!(ids.len() < 100, "the stream never filled");
    };
    match full {
        SpoolError::Full { n_bytes, max_bytes } => {
            assert_eq!(max_bytes, 2_000);
            assert!(n_bytes > 1_000 && n_bytes <= 2_000, "{n_bytes}");
        }
        other => panic!("expected Full, got {other:?}"),
    }
    // Nothing acknowledged was dropped to make room.
    assert_eq!(spool.stats().await.unwrap().n_batches, ids.len() as u64);
    let leased = spool.lease(1, HOUR).await.unwrap();
    assert_eq!(leased[0].id, ids[0]);
    spool.settle(ids[0], Vec::new()).await.unwrap();
    spool.append(batch(1000)).await.unwrap();
}

#[tokio::test]
async fn a_lease_is_bounded_by_bytes_and_a_larger_batch_goes_alone() {
    let Some(server) = NatsServer::start_with_config("max_payload: 16MB") else {
        return;
    };
    let spool = open_with(&options(&server), HOUR).await;
    let third = crate::spool::LEASE_MAX_BYTES / 3 + 1;
    let mut ids = Vec::new();
    for seq in 0..3 {
        let batch = NewBatch {
            body: body(seq, third),
            workspace: None,
            received_at_ms: 1_700_000_000_000,
        };
        ids.push(spool.append(batch).await.unwrap());
    }
    let huge = NewBatch {
        body: body(3, crate::spool::LEASE_MAX_BYTES + 1024),
        workspace: None,
        received_at_ms: 1_700_000_000_000,
    };
    ids.push(spool.append(huge).await.unwrap());
    let ids_of = |leased: Vec<LeasedBatch>| {
        leased
            .iter()
            .map(|b| (b.id, b.attempts))
            .collect::<Vec<_>>()
    };
    // Three of a third of the bound each do not fit: two are leased.
    assert_eq!(
        ids_of(spool.lease(20, HOUR).await.unwrap()),
        [(ids[0], 0), (ids[1], 0)]
    );
    assert_eq!(ids_of(spool.lease(20, HOUR).await.unwrap()), [(ids[2], 0)]);
    // Larger than the bound alone: leased alone, and not counted as tried
    // by the lease that could not take it.
    assert_eq!(ids_of(spool.lease(20, HOUR).await.unwrap()), [(ids[3], 0)]);
}

#[tokio::test]
async fn a_top_up_lease_stays_within_its_bytes_even_for_one_batch() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let spool = open_with(&options(&server), HOUR).await;
    let mut ids = Vec::new();
    for (seq, size) in [(0, 1000), (1, 5000), (2, 1000)] {
        let batch = NewBatch {
            body: body(seq, size),
            workspace: None,
            received_at_ms: 1_700_000_000_000,
        };
        ids.push(spool.append(batch).await.unwrap());
    }
    let top_up = crate::spool::LeaseLimits::top_up(20, 4000);
    let leased = spool.lease_within(top_up, HOUR).await.unwrap();
    assert_eq!(leased.iter().map(|b| b.id).collect::<Vec<_>>(), [ids[0]]);
    // The second alone is over the budget: nothing, rather than too much.
    assert!(spool.lease_within(top_up, HOUR).await.unwrap().is_empty());
    // A new group takes it anyway, alone, and not counted as tried before.
    let new_group = crate::spool::LeaseLimits {
        max_bytes: 4000,
        ..crate::spool::LeaseLimits::new_group(20)
    };
    let leased = spool.lease_within(new_group, HOUR).await.unwrap();
    assert_eq!(
        leased
            .iter()
            .map(|b| (b.id, b.attempts))
            .collect::<Vec<_>>(),
        [(ids[1], 0)]
    );
}

#[tokio::test]
async fn an_outage_fails_fast_and_the_spool_recovers_without_reopening() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let options = options(&server);
    let spool = open_with(&options, HOUR).await;
    let before = spool.append(batch(1)).await.unwrap();

    server.stop();
    let started = Instant::now();
    let error = spool.append(batch(2)).await.unwrap_err();
    assert!(
        started.elapsed() <= options.publish_timeout + Duration::from_secs(2),
        "the append took {:?}",
        started.elapsed()
    );
    match &error {
        SpoolError::Storage(message) => assert!(message.contains("NATS"), "{message}"),
        other => panic!("expected Storage, got {other:?}"),
    }
    let deadline = Instant::now() + EVENTUALLY;
    while spool.is_connected() {
        assert!(Instant::now() < deadline, "the loss was never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    assert!(matches!(
        spool.lease(10, HOUR).await,
        Err(SpoolError::Storage(_))
    ));
    assert!(matches!(spool.stats().await, Err(SpoolError::Storage(_))));
    assert!(
        started.elapsed() < options.publish_timeout,
        "while disconnected, calls fail at once"
    );

    server.restart();
    let deadline = Instant::now() + EVENTUALLY;
    let after = loop {
        match spool.append(batch(3)).await {
            Ok(id) => break id,
            Err(SpoolError::Storage(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the spool did not recover: {error}"),
        }
    };
    assert!(spool.is_connected());
    let leased = spool.lease(10, HOUR).await.unwrap();
    let leased_ids: Vec<BatchId> = leased.iter().map(|b| b.id).collect();
    assert!(leased_ids.contains(&before), "{leased_ids:?}");
    assert!(leased_ids.contains(&after), "{leased_ids:?}");
}

#[tokio::test]
async fn settings_that_differ_from_the_configuration_are_named() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = options(&server);
    let client = connect(&options).await.unwrap();
    NatsSpool::open(client.clone(), &options, HOUR)
        .await
        .unwrap();
    // Opening again with the same settings (another replica) is fine.
    NatsSpool::open(client.clone(), &options, HOUR)
        .await
        .unwrap();

    let mut replicas = options.clone();
    replicas.replicas = 3;
    let error = NatsSpool::open(client.clone(), &replicas, HOUR)
        .await
        .unwrap_err();
    assert!(matches!(error, NatsError::Mismatch { .. }), "{error}");
    assert_eq!(
        error.to_string().split(';').next().unwrap(),
        "stream bridge-batches has replicas 1, the configuration asks for 3"
    );

    let mut max_bytes = options.clone();
    max_bytes.max_bytes = 1 << 20;
    let error = NatsSpool::open(client.clone(), &max_bytes, HOUR)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "stream bridge-batches has max_bytes {}, the configuration asks for 1048576",
            options.max_bytes
        )),
        "{error}"
    );

    let mut window = options.clone();
    window.duplicate_window = Duration::from_secs(30);
    let error = NatsSpool::open(client.clone(), &window, HOUR)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "stream bridge-batches has duplicate_window 120s, the configuration asks for 30s"
        ),
        "{error}"
    );

    let error = NatsSpool::open(client.clone(), &options, Duration::from_secs(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("consumer bridge-delivery of stream bridge-batches has ack_wait 3600s, the configuration asks for 60s"),
        "{error}"
    );

    let mut overlapping = options.clone();
    overlapping.subject_prefix = "bridge-dead-letters.batches".to_owned();
    let error = NatsSpool::open(client, &overlapping, HOUR)
        .await
        .unwrap_err();
    assert!(matches!(error, NatsError::Invalid(_)), "{error}");
}

#[tokio::test]
async fn dead_letters_are_stored_once_listed_filtered_replayed_and_purged() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = options(&server);
    let spool = open_with(&options, ACK_WAIT).await;
    let id = spool.append(batch(1)).await.unwrap();
    let leased = spool.lease(1, HOUR).await.unwrap();
    assert_eq!(leased[0].id, id);
    let before_ms = crate::clock::now_ms();
    let mut refused_by_b = dead_letter(
        "refused_by_mixpanel",
        "users.behaviors.CustomEvent",
        "brand-b",
        3,
    );
    refused_by_b.detail = "d".repeat(10_000);
    let dead_letters = vec![
        dead_letter(
            "refused_by_mixpanel",
            "users.messages.email.Click",
            "brand-a",
            1,
        ),
        dead_letter("missing_id", "users.behaviors.CustomEvent", "brand-a", 2),
        refused_by_b,
        DeadLetter {
            event: Bytes::from_static(b"not json"),
            ..dead_letter("invalid_batch", "x", "brand-a", 4)
        },
    ];

    // The process dies after storing the dead letters, before the ack:
    // the batch comes back, is settled again, and they are stored once.
    spool
        .shared
        .publish_dead_letters(id.0 as u64, id, &dead_letters)
        .await
        .unwrap();
    let since = Instant::now();
    drop(spool);
    let spool = open_with(&options, ACK_WAIT).await;
    let again = lease_once_due(&spool, since, Duration::ZERO).await;
    assert_eq!((again[0].id, again[0].attempts), (id, 1));
    spool.settle(id, dead_letters.clone()).await.unwrap();
    let after_ms = crate::clock::now_ms();
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.n_batches, stats.n_dead_letters), (0, 4));

    let mut store = spool.dead_letter_store();
    let everything = DeadLetterFilter::default();
    let entries = store.list(&everything, 10).await.unwrap();
    assert_eq!(entries.len(), 4);
    for (entry, dead_letter) in entries.iter().zip(&dead_letters) {
        assert_eq!(entry.letter.event, dead_letter.event);
        assert_eq!(entry.letter.reason, dead_letter.reason);
        assert_eq!(entry.letter.event_type, dead_letter.event_type);
        assert_eq!(entry.letter.event_id, dead_letter.event_id);
        assert_eq!(entry.letter.workspace, dead_letter.workspace);
        assert_eq!(entry.letter.attempts, 3);
        assert_eq!(entry.batch_id, Some(id.0));
        assert!((before_ms..=after_ms).contains(&entry.dead_lettered_at_ms));
    }
    assert_eq!(entries[0].letter.detail, "detail 1");
    assert!(entries[2].letter.detail.len() <= super::wire::MAX_DETAIL_BYTES);
    assert!(entries[2].letter.detail.ends_with('…'));
    assert!(entries.windows(2).all(|pair| pair[0].id < pair[1].id));
    assert_eq!(
        store.get(entries[1].id).await.unwrap().as_ref(),
        Some(&entries[1])
    );
    assert_eq!(store.get(entries[3].id + 100).await.unwrap(), None);
    assert_eq!(store.list(&everything, 2).await.unwrap(), entries[..2]);
    assert_eq!(store.count(&everything).await.unwrap(), 4);

    let by_reason = DeadLetterFilter {
        reason: Some("refused_by_mixpanel".to_owned()),
        ..DeadLetterFilter::default()
    };
    let refused = store.list(&by_reason, 10).await.unwrap();
    assert_eq!(refused, [entries[0].clone(), entries[2].clone()]);
    assert_eq!(store.count(&by_reason).await.unwrap(), 2);
    let by_type = DeadLetterFilter {
        event_type: Some("users.behaviors.CustomEvent".to_owned()),
        ..DeadLetterFilter::default()
    };
    assert_eq!(store.count(&by_type).await.unwrap(), 2);
    let by_ids = DeadLetterFilter {
        ids: vec![entries[3].id, entries[1].id, entries[3].id + 100],
        ..DeadLetterFilter::default()
    };
    assert_eq!(
        store.list(&by_ids, 10).await.unwrap(),
        [entries[1].clone(), entries[3].clone()]
    );
    let later = DeadLetterFilter {
        since_ms: Some(after_ms + 1),
        ..DeadLetterFilter::default()
    };
    assert_eq!(store.count(&later).await.unwrap(), 0);
    let until = DeadLetterFilter {
        until_ms: Some(after_ms + 1),
        ..DeadLetterFilter::default()
    };
    assert_eq!(store.count(&until).await.unwrap(), 4);

    // Replay the refused ones: one batch per workspace, entries removed.
    let replayed = DeadLetterAdmin::replay(&mut store, &by_reason)
        .await
        .unwrap();
    assert_eq!(
        (replayed.n_events, replayed.n_batches, replayed.n_not_json),
        (2, 2, 0)
    );
    assert_eq!(store.count(&everything).await.unwrap(), 2);
    let batches = spool.lease(10, HOUR).await.unwrap();
    let mut replayed_batches: Vec<(Option<String>, Bytes)> = batches
        .iter()
        .map(|b| (b.batch.workspace.clone(), b.batch.body.clone()))
        .collect();
    replayed_batches.sort();
    assert_eq!(
        replayed_batches,
        [
            (
                Some("brand-a".to_owned()),
                Bytes::from(format!(
                    r#"{{"events":[{}]}}"#,
                    std::str::from_utf8(&dead_letters[0].event).unwrap()
                ))
            ),
            (
                Some("brand-b".to_owned()),
                Bytes::from(format!(
                    r#"{{"events":[{}]}}"#,
                    std::str::from_utf8(&dead_letters[2].event).unwrap()
                ))
            ),
        ]
    );
    assert!(batches.iter().all(|b| b.attempts == 0));

    // What is not JSON stays; purge takes what matches, then everything.
    let replayed = store.replay(&everything).await.unwrap();
    assert_eq!(
        (replayed.n_events, replayed.n_batches, replayed.n_not_json),
        (1, 1, 1)
    );
    assert_eq!(store.count(&everything).await.unwrap(), 1);
    let invalid = DeadLetterFilter {
        reason: Some("invalid_batch".to_owned()),
        ..DeadLetterFilter::default()
    };
    assert_eq!(store.purge(&by_reason).await.unwrap(), 0);
    assert_eq!(store.purge(&invalid).await.unwrap(), 1);
    assert_eq!(store.count(&everything).await.unwrap(), 0);
    spool
        .shared
        .publish_dead_letters(2, BatchId(2), &dead_letters[..2])
        .await
        .unwrap();
    assert_eq!(
        DeadLetterAdmin::purge(&mut store, &everything)
            .await
            .unwrap(),
        2
    );
    assert_eq!(spool.stats().await.unwrap().n_dead_letters, 0);
}

#[tokio::test]
async fn a_replay_groups_events_by_workspace_in_batches_of_500() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = options(&server);
    let spool = open_with(&options, HOUR).await;
    let letters: Vec<DeadLetter> = (0..1_100)
        .map(|seq| {
            dead_letter(
                "missing_id",
                "t",
                if seq % 11 == 0 { "b" } else { "a" },
                seq,
            )
        })
        .collect();
    spool
        .shared
        .publish_dead_letters(7, BatchId(7), &letters)
        .await
        .unwrap();
    let client = connect(&options).await.unwrap();
    let mut store = NatsDeadLetterStore::open(client, &options).await.unwrap();
    assert_eq!(
        store.count(&DeadLetterFilter::default()).await.unwrap(),
        1_100
    );
    let replayed = store.replay(&DeadLetterFilter::default()).await.unwrap();
    // 1,000 for "a" (500 + 500), 100 for "b".
    assert_eq!((replayed.n_events, replayed.n_batches), (1_100, 3));
    let mut sizes: Vec<(Option<String>, usize)> = spool
        .lease(10, HOUR)
        .await
        .unwrap()
        .iter()
        .map(|b| {
            let text = std::str::from_utf8(&b.batch.body).unwrap();
            let batch: serde_json::Value = serde_json::from_str(text).unwrap();
            (
                b.batch.workspace.clone(),
                batch["events"].as_array().unwrap().len(),
            )
        })
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [
            (Some("a".to_owned()), 500),
            (Some("a".to_owned()), 500),
            (Some("b".to_owned()), 100)
        ]
    );
    assert_eq!(store.count(&DeadLetterFilter::default()).await.unwrap(), 0);
}

#[tokio::test]
async fn the_dead_letter_store_needs_the_streams_serve_creates() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = options(&server);
    let client = connect(&options).await.unwrap();
    let error = NatsDeadLetterStore::open(client, &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("bridge-dead-letters does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn connect_uses_the_credentials_and_never_prints_them() {
    let Some(server) =
        NatsServer::start_with_config("authorization { user: bridge, password: \"pa55-word\" }")
    else {
        return;
    };
    let mut options = options(&server);
    options.auth = NatsAuth::UserPassword {
        user: "bridge".to_owned(),
        password: mixpanel_client::Secret::new("pa55-word"),
    };
    let spool = open_with(&options, HOUR).await;
    spool.append(batch(1)).await.unwrap();
    options.auth = NatsAuth::UserPassword {
        user: "bridge".to_owned(),
        password: mixpanel_client::Secret::new("wr0ng-word"),
    };
    let error = connect(&options).await.unwrap_err().to_string();
    assert!(error.contains("authorization violation"), "{error}");
    assert!(!error.contains("wr0ng-word"), "{error}");

    let Some(server) = NatsServer::start_with_config("authorization { token: \"t0ken-s3cret\" }")
    else {
        return;
    };
    let mut options = self::options(&server);
    options.auth = NatsAuth::Token(mixpanel_client::Secret::new("t0ken-s3cret"));
    connect(&options).await.unwrap();
    options.auth = NatsAuth::Token(mixpanel_client::Secret::new("wr0ng-t0ken"));
    let error = connect(&options).await.unwrap_err().to_string();
    assert!(!error.contains("wr0ng-t0ken"), "{error}");
}

#[tokio::test]
async fn a_whole_batch_letter_is_replayed_as_that_batch_alone() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = options(&server);
    let spool = open_with(&options, HOUR).await;
    const BODY: &str = "{\"events\": [{\"id\":\"w1\"}, {\"id\":\"w2\"}]}";
    let whole = DeadLetter {
        event: Bytes::from_static(BODY.as_bytes()),
        reason: crate::delivery::ARCHIVE_FAILED.to_owned(),
        detail: "gave up archiving after the attempt or age limit: cannot write".to_owned(),
        event_type: None,
        event_id: None,
        workspace: Some("a".to_owned()),
        attempts: 9,
    };
    let letters = vec![dead_letter("refused_by_mixpanel", "t", "a", 1), whole];
    spool
        .shared
        .publish_dead_letters(3, BatchId(3), &letters)
        .await
        .unwrap();
    let client = connect(&options).await.unwrap();
    let mut store = NatsDeadLetterStore::open(client, &options).await.unwrap();
    let replayed = store.replay(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!((replayed.n_events, replayed.n_batches), (3, 2));
    let mut bodies: Vec<Bytes> = spool
        .lease(10, HOUR)
        .await
        .unwrap()
        .into_iter()
        .map(|leased| leased.batch.body)
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            Bytes::from_static(BODY.as_bytes()),
            Bytes::from_static(b"{\"events\":[{\"id\":\"d1\",\"event_type\":\"t\"}]}"),
        ],
        "the whole batch goes back byte for byte, not inside another envelope"
    );
}

#[tokio::test]
async fn letters_added_from_outside_a_batch_are_stored_once_and_replayed() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = options(&server);
    let spool = open_with(&options, HOUR).await;
    let letters: Vec<DeadLetter> = (0..3)
        .map(|seq| dead_letter("refused_by_mixpanel", "t", "brand-a", seq))
        .collect();
    let client = connect(&options).await.unwrap();
    let mut store = NatsDeadLetterStore::open(client, &options).await.unwrap();
    assert_eq!(DeadLetterAdmin::add(&mut store, &letters).await.unwrap(), 3);
    // Added again (a backfill run twice): stored once.
    assert_eq!(DeadLetterAdmin::add(&mut store, &letters).await.unwrap(), 3);
    let entries = store
        .list(&DeadLetterFilter::default(), usize::MAX)
        .await
        .unwrap();
    let stored: Vec<&DeadLetter> = entries.iter().map(|entry| &entry.letter).collect();
    assert_eq!(stored, letters.iter().collect::<Vec<_>>());
    assert!(entries.iter().all(|entry| entry.batch_id.is_none()));
    let replayed = store.replay(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!((replayed.n_events, replayed.n_batches), (3, 1));
    assert_eq!(spool.lease(10, HOUR).await.unwrap().len(), 1);
}
