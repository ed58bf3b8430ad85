//! Tests of the SQLite spool: the work-queue semantics, group commit, the
//! size bound, crash safety under a real SIGKILL, quarantine and recovery of
//! damaged storage, the dead-letter store beside a running spool, and a
//! model-based property test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::{DeadLetterFilter, DeadLetterStore, SqliteSpool, SqliteSpoolOptions};
use crate::spool::{BatchId, DeadLetter, LeasedBatch, NewBatch, Spool, SpoolError};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("bridge-spool-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn db(&self) -> PathBuf {
        self.0.join("spool.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &TempDir) -> SqliteSpoolOptions {
    SqliteSpoolOptions::new(dir.path().to_path_buf(), 1 << 30)
}

fn open(dir: &TempDir) -> SqliteSpool {
    SqliteSpool::open(config(dir)).expect("open spool")
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

const HOUR: Duration = Duration::from_secs(3600);

/// A lease or retry delay short enough for a test to wait for.
const SHORT: Duration = Duration::from_millis(500);

/// Leases (for an hour) the batches that come back once a short lease or
/// retry delay, set at `since` or after it, runs out. What must happen
/// eventually is polled for up to 30 s, so a slow machine cannot fail it;
/// what must not happen yet is judged against the time measured, so a slow
/// machine cannot fail it either: a batch that comes back fails the test
/// only if `delay` had certainly not passed when the spool looked.
async fn lease_once_due(
    spool: &SqliteSpool,
    since: std::time::Instant,
    delay: Duration,
) -> Vec<LeasedBatch> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leased = spool.lease(10, HOUR).await.unwrap();
        // The spool looked before now; its clock counts whole milliseconds.
        let elapsed = since.elapsed() + Duration::from_millis(1);
        if !leased.is_empty() {
            assert!(
                elapsed >= delay,
                "the batch came back {elapsed:?} after a delay of {delay:?}"
            );
            return leased;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the batch never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn append_lease_settle_in_id_order() {
    let dir = TempDir::new("basic");
    let spool = open(&dir);
    let mut ids = Vec::new();
    for seq in 0..3 {
        ids.push(spool.append(batch(seq)).await.unwrap());
    }
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");

    let leased = spool.lease(10, HOUR).await.unwrap();
    assert_eq!(leased.iter().map(|b| b.id).collect::<Vec<_>>(), ids);
    for (seq, leased) in leased.iter().enumerate() {
        assert_eq!(leased.batch, batch(seq as u64));
        assert_eq!(leased.attempts, 0);
    }
    assert!(
        spool.lease(10, HOUR).await.unwrap().is_empty(),
        "leased batches are hidden"
    );

    for id in &ids {
        spool.settle(*id, Vec::new()).await.unwrap();
    }
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.n_batches, stats.n_bytes), (0, 0));
    assert_eq!(stats.oldest_received_at_ms, None);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn lease_takes_at_most_max_batches_oldest_first() {
    let dir = TempDir::new("max");
    let spool = open(&dir);
    for seq in 0..5 {
        spool.append(batch(seq)).await.unwrap();
    }
    let first = spool.lease(2, HOUR).await.unwrap();
    let second = spool.lease(2, HOUR).await.unwrap();
    let third = spool.lease(2, HOUR).await.unwrap();
    let seqs = |leased: &[crate::spool::LeasedBatch]| {
        leased
            .iter()
            .map(|b| b.batch.received_at_ms - 1_700_000_000_000)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&first), [0, 1]);
    assert_eq!(seqs(&second), [2, 3]);
    assert_eq!(seqs(&third), [4]);
    assert!(spool.lease(0, HOUR).await.unwrap().is_empty());
    spool.close().await.unwrap();
}

#[tokio::test]
async fn a_lease_is_bounded_by_bytes_as_well_as_by_count() {
    let dir = TempDir::new("lease-bytes");
    let spool = open(&dir);
    let big = crate::spool::LEASE_MAX_BYTES / 3 + 1;
    for seq in 0..4 {
        spool
            .append(NewBatch {
                body: body(seq, big),
                workspace: None,
                received_at_ms: 1_700_000_000_000 + seq as i64,
            })
            .await
            .unwrap();
    }
    // Three of a third of the budget each do not fit: two are leased.
    assert_eq!(spool.lease(20, HOUR).await.unwrap().len(), 2);
    // One batch is always leased, however large.
    assert_eq!(spool.lease(1, HOUR).await.unwrap().len(), 1);
    assert_eq!(spool.lease(20, HOUR).await.unwrap().len(), 1);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn a_top_up_lease_stays_within_its_bytes_even_for_one_batch() {
    let dir = TempDir::new("lease-top-up");
    let spool = open(&dir);
    for (seq, size) in [(0, 1000), (1, 5000), (2, 1000)] {
        spool
            .append(NewBatch {
                body: body(seq, size),
                workspace: None,
                received_at_ms: 1_700_000_000_000 + seq as i64,
            })
            .await
            .unwrap();
    }
    let top_up = |max_bytes| crate::spool::LeaseLimits::top_up(20, max_bytes);
    // The first batch fits, the second does not: the lease stops there.
    let leased = spool.lease_within(top_up(4000), HOUR).await.unwrap();
    assert_eq!(leased.len(), 1);
    // The second alone is over the budget: nothing, rather than too much.
    assert!(
        spool
            .lease_within(top_up(4000), HOUR)
            .await
            .unwrap()
            .is_empty()
    );
    // A new group takes it anyway, alone.
    let leased = spool
        .lease_within(
            crate::spool::LeaseLimits {
                max_bytes: 4000,
                ..crate::spool::LeaseLimits::new_group(20)
            },
            HOUR,
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert!(leased[0].batch.body.len() > 4000);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_makes_the_batch_visible_again() {
    let dir = TempDir::new("expiry");
    let spool = open(&dir);
    let id = spool.append(batch(1)).await.unwrap();
    let since = std::time::Instant::now();
    let leased = spool.lease(10, SHORT).await.unwrap();
    assert_eq!(leased.len(), 1);
    let again = lease_once_due(&spool, since, SHORT).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, id);
    assert_eq!(
        again[0].attempts, 1,
        "the lease that ran out was a delivery tried"
    );
    spool.close().await.unwrap();
}

#[tokio::test]
async fn attempts_count_leases_and_release_does_not_count_twice() {
    let dir = TempDir::new("attempts");
    let spool = open(&dir);
    let id = spool.append(batch(1)).await.unwrap();
    let mut seen = Vec::new();
    for round in 0..6 {
        let leased = spool.lease(1, Duration::ZERO).await.unwrap();
        assert_eq!(leased.len(), 1);
        seen.push(leased[0].attempts);
        // Alternate between a worker that gives the batch back and one whose
        // lease simply runs out.
        if round % 2 == 0 {
            spool.release(id, Duration::ZERO).await.unwrap();
        }
    }
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    spool.close().await.unwrap();
    drop(spool);
    let conn = raw_connection(&dir);
    let attempts: i64 = conn
        .query_row(
            "SELECT attempts FROM batches WHERE id = ?1",
            [id.0],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(attempts, 6, "the stored count includes the last lease");
}

#[tokio::test]
async fn a_leased_batch_is_due_at_once_after_reopening() {
    let dir = TempDir::new("reopen-leased");
    let spool = open(&dir);
    let first = spool.append(batch(1)).await.unwrap();
    let second = spool.append(batch(2)).await.unwrap();
    let third = spool.append(batch(3)).await.unwrap();
    let leased = spool.lease(2, HOUR).await.unwrap();
    assert_eq!(
        leased.iter().map(|b| b.id).collect::<Vec<_>>(),
        [first, second]
    );
    assert!(
        spool
            .lease(1, HOUR)
            .await
            .unwrap()
            .iter()
            .all(|b| b.id == third)
    );

    // Dropped without close, as close as a test gets to a crash in process.
    drop(spool);
    let spool = open(&dir);
    let again = spool.lease(10, HOUR).await.unwrap();
    assert_eq!(
        again.iter().map(|b| (b.id, b.attempts)).collect::<Vec<_>>(),
        [(first, 1), (second, 1), (third, 1)],
        "every lease of the previous run is cleared, and counted"
    );
    assert!(spool.lease(10, HOUR).await.unwrap().is_empty());

    // The same after a clean close.
    spool.close().await.unwrap();
    drop(spool);
    let spool = open(&dir);
    let again = spool.lease(10, HOUR).await.unwrap();
    assert_eq!(
        again.iter().map(|b| (b.id, b.attempts)).collect::<Vec<_>>(),
        [(first, 2), (second, 2), (third, 2)]
    );
    spool.close().await.unwrap();
}

#[tokio::test]
async fn a_released_batch_keeps_its_retry_delay_across_a_reopen() {
    let dir = TempDir::new("reopen-released");
    let spool = open(&dir);
    let delayed = spool.append(batch(1)).await.unwrap();
    let leased = spool.append(batch(2)).await.unwrap();
    assert_eq!(spool.lease(2, HOUR).await.unwrap().len(), 2);
    spool.release(delayed, HOUR).await.unwrap();
    spool.close().await.unwrap();
    drop(spool);

    let spool = open(&dir);
    let again = spool.lease(10, HOUR).await.unwrap();
    assert_eq!(
        again.iter().map(|b| b.id).collect::<Vec<_>>(),
        [leased],
        "the released batch still waits for its retry"
    );
    spool.close().await.unwrap();
    drop(spool);

    // A short delay still runs out after a reopen.
    let dir = TempDir::new("reopen-released-short");
    let spool = open(&dir);
    let id = spool.append(batch(1)).await.unwrap();
    spool.lease(1, HOUR).await.unwrap();
    let since = std::time::Instant::now();
    spool.release(id, SHORT).await.unwrap();
    drop(spool);
    let spool = open(&dir);
    let leased = lease_once_due(&spool, since, SHORT).await;
    assert_eq!(leased.len(), 1);
    assert_eq!((leased[0].id, leased[0].attempts), (id, 1));
    spool.close().await.unwrap();
}

#[tokio::test]
async fn release_delays_the_batch() {
    let dir = TempDir::new("release");
    let spool = open(&dir);
    let id = spool.append(batch(1)).await.unwrap();
    spool.lease(1, HOUR).await.unwrap();
    let since = std::time::Instant::now();
    spool.release(id, SHORT).await.unwrap();
    let leased = lease_once_due(&spool, since, SHORT).await;
    assert_eq!(leased.len(), 1);
    assert_eq!((leased[0].id, leased[0].attempts), (id, 1));
    spool.release(id, Duration::ZERO).await.unwrap();
    let leased = spool.lease(1, HOUR).await.unwrap();
    assert_eq!((leased[0].id, leased[0].attempts), (id, 2));
    // Releasing or settling a batch that is gone is a no-op.
    spool.settle(id, Vec::new()).await.unwrap();
    spool.release(id, Duration::ZERO).await.unwrap();
    assert_eq!(spool.stats().await.unwrap().n_batches, 0);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn settle_stores_dead_letters_with_the_delete() {
    let dir = TempDir::new("settle");
    let spool = open(&dir);
    let id = spool.append(batch(1)).await.unwrap();
    spool.lease(1, HOUR).await.unwrap();
    let dead_letters = vec![
        dead_letter(
            "refused_by_mixpanel",
            "users.messages.email.Click",
            "brand-a",
            1,
        ),
        dead_letter("missing_id", "users.behaviors.CustomEvent", "brand-a", 2),
    ];
    spool.settle(id, dead_letters.clone()).await.unwrap();
    // Settling again (a second worker whose lease ran out) stores nothing more.
    spool.settle(id, dead_letters.clone()).await.unwrap();
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.n_batches, stats.n_dead_letters), (0, 2));

    let store = spool.dead_letter_store().unwrap();
    let entries = store.list(&DeadLetterFilter::default(), 10).unwrap();
    assert_eq!(entries.len(), 2);
    for (entry, dead_letter) in entries.iter().zip(&dead_letters) {
        assert_eq!(entry.letter.event, dead_letter.event);
        assert_eq!(entry.letter.reason, dead_letter.reason);
        assert_eq!(entry.letter.detail, dead_letter.detail);
        assert_eq!(entry.letter.event_type, dead_letter.event_type);
        assert_eq!(entry.letter.event_id, dead_letter.event_id);
        assert_eq!(entry.letter.workspace, dead_letter.workspace);
        assert_eq!(entry.letter.attempts, 3);
        assert_eq!(entry.batch_id, Some(id.0));
    }
    spool.close().await.unwrap();
}

#[tokio::test]
async fn full_over_max_bytes_and_space_comes_back_after_settle() {
    let dir = TempDir::new("full");
    let batch_len = batch(0).body.len() as u64;
    let mut config = config(&dir);
    config.max_bytes = batch_len * 2 + batch_len / 2;
    let spool = SqliteSpool::open(config.clone()).unwrap();
    let first = spool.append(batch(0)).await.unwrap();
    spool.append(batch(1)).await.unwrap();
    match spool.append(batch(2)).await {
        Err(SpoolError::Full { n_bytes, max_bytes }) => {
            assert_eq!((n_bytes, max_bytes), (batch_len * 2, config.max_bytes));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    spool.lease(1, HOUR).await.unwrap();
    spool.settle(first, Vec::new()).await.unwrap();
    spool.append(batch(2)).await.unwrap();
    spool.close().await.unwrap();

    // The bound holds across a restart: the stored total is loaded at open.
    let spool = SqliteSpool::open(config).unwrap();
    assert!(matches!(
        spool.append(batch(3)).await,
        Err(SpoolError::Full { .. })
    ));
    spool.close().await.unwrap();
}

#[tokio::test]
async fn the_file_shrinks_once_the_backlog_is_delivered() {
    let dir = TempDir::new("reclaim");
    let mut config = config(&dir);
    config.reclaim_min_free_bytes = 0;
    let spool = SqliteSpool::open(config.clone()).unwrap();
    for seq in 0..24 {
        spool
            .append(NewBatch {
                body: body(seq, 50_000),
                workspace: None,
                received_at_ms: 0,
            })
            .await
            .unwrap();
    }
    for leased in spool.lease(100, HOUR).await.unwrap() {
        spool.settle(leased.id, Vec::new()).await.unwrap();
    }
    spool.close().await.unwrap();
    drop(spool);
    let conn = raw_connection(&dir);
    let auto_vacuum: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .unwrap();
    let free: i64 = conn
        .query_row("PRAGMA freelist_count", [], |row| row.get(0))
        .unwrap();
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    drop(conn);
    assert_eq!(
        auto_vacuum, 2,
        "auto_vacuum is INCREMENTAL; free {free} of {pages}"
    );
    let db_bytes = std::fs::metadata(dir.db()).unwrap().len();
    let wal_bytes = std::fs::metadata(dir.path().join("spool.db-wal")).map_or(0, |m| m.len());
    assert!(
        db_bytes < 200_000,
        "spool.db is {db_bytes} bytes after draining 1.2 MB"
    );
    assert_eq!(wal_bytes, 0, "the WAL is truncated on close");
}

#[tokio::test]
async fn stats_count_batches_bytes_and_the_oldest() {
    let dir = TempDir::new("stats");
    let spool = open(&dir);
    assert_eq!(spool.stats().await.unwrap(), Default::default());
    let first = spool.append(batch(5)).await.unwrap();
    spool.append(batch(6)).await.unwrap();
    let stats = spool.stats().await.unwrap();
    assert_eq!(stats.n_batches, 2);
    assert_eq!(
        stats.n_bytes,
        (batch(5).body.len() + batch(6).body.len()) as u64
    );
    assert_eq!(stats.oldest_received_at_ms, Some(batch(5).received_at_ms));
    spool.lease(1, HOUR).await.unwrap();
    spool
        .settle(first, vec![dead_letter("refused_by_mixpanel", "t", "w", 1)])
        .await
        .unwrap();
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.n_batches, stats.n_dead_letters), (1, 1));
    assert_eq!(stats.oldest_received_at_ms, Some(batch(6).received_at_ms));
    spool.close().await.unwrap();
}

#[tokio::test]
async fn calls_after_close_are_refused_and_the_data_stays() {
    let dir = TempDir::new("close");
    let spool = open(&dir);
    let id = spool.append(batch(1)).await.unwrap();
    spool.close().await.unwrap();
    assert!(matches!(
        spool.append(batch(2)).await,
        Err(SpoolError::Closed)
    ));
    assert!(matches!(
        spool.lease(1, HOUR).await,
        Err(SpoolError::Closed)
    ));
    assert!(matches!(
        spool.settle(id, Vec::new()).await,
        Err(SpoolError::Closed)
    ));
    assert!(matches!(
        spool.release(id, HOUR).await,
        Err(SpoolError::Closed)
    ));
    assert!(matches!(spool.stats().await, Err(SpoolError::Closed)));
    spool.close().await.unwrap();
    drop(spool);

    let spool = open(&dir);
    let leased = spool.lease(10, HOUR).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, id);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_commit_acknowledges_nothing_and_the_spool_goes_on() {
    let dir = TempDir::new("busy");
    let mut config = config(&dir);
    config.busy_timeout = Duration::from_millis(100);
    let spool = SqliteSpool::open(config).unwrap();
    // Another process holds the write lock past the busy timeout.
    let conn = raw_connection(&dir);
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    match spool.append(batch(1)).await {
        Err(SpoolError::Storage(_)) => {}
        other => panic!("expected a storage error, got {other:?}"),
    }
    conn.execute_batch("ROLLBACK").unwrap();
    assert!(
        spool.failure().is_none(),
        "a lock timeout does not stop the spool"
    );

    let id = spool.append(batch(2)).await.unwrap();
    let leased = spool.lease(10, HOUR).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!((leased[0].id, &leased[0].batch), (id, &batch(2)));
    // The refused append's reservation was given back.
    let stats = spool.stats().await.unwrap();
    assert_eq!(stats.n_bytes, batch(2).body.len() as u64);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn a_request_queued_as_the_spool_fails_gets_the_failure_wrapped_once() {
    let dir = TempDir::new("failed-once");
    let spool = open(&dir);
    let expected = "spool storage failed: spool.db: disk I/O error";
    spool.shared.fail("spool.db: disk I/O error".to_owned());
    // A request sent just before the failure, past the handle's own check,
    // is refused by the writer.
    let (answer, answered) = tokio::sync::oneshot::channel();
    spool
        .requests
        .send(super::writer::Request::Lease {
            limits: crate::spool::LeaseLimits::new_group(1),
            lease_ms: 1000,
            answer,
        })
        .unwrap();
    let refused = answered.await.unwrap().unwrap_err();
    assert_eq!(refused.to_string(), expected);
    // A request after it is refused by the handle, in the same words.
    assert_eq!(
        spool.lease(1, HOUR).await.unwrap_err().to_string(),
        expected
    );
    assert_eq!(spool.failure().unwrap().to_string(), expected);
    spool.close().await.unwrap();
}

#[test]
fn failed_commits_and_maintenance_are_logged_per_episode() {
    use super::writer::StorageFailureLog;
    use crate::log_limit::Line;

    let full = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("database or disk is full".to_owned()),
    );
    let mut log = StorageFailureLog::default();
    let start = std::time::Instant::now();
    let at = |millis: u64| start + Duration::from_millis(millis);
    // A full disk: a failed group commit every 10 ms for 25 s, with the
    // occasional commit that succeeds (a settle that frees pages).
    let mut lines = Vec::new();
    for step_idx in 0..2500 {
        if step_idx % 100 == 50 {
            lines.extend(log.committed(at(step_idx * 10)));
        } else {
            lines.extend(log.commit_failed(at(step_idx * 10), &full, 3));
        }
    }
    assert_eq!(lines[0], Line::Started { n_events: 1 });
    assert!(
        (3..=4).contains(&lines.len()),
        "a start and about one line per 10 s: {lines:?}"
    );
    // Space is freed: commits succeed, and the end is logged once.
    let ended = log.committed(at(40_000));
    assert!(matches!(ended, Some(Line::Ended { .. })), "{ended:?}");
    let n_logged: u64 = lines.iter().chain(&ended).map(|line| line.n_events()).sum();
    assert_eq!(n_logged, 2475, "every failed commit is counted in one line");
    assert_eq!(log.committed(at(60_000)), None);

    // Maintenance has its own episode, once a second at most.
    assert_eq!(
        log.maintenance_failed(at(60_000), &full, false),
        Some(Line::Started { n_events: 1 })
    );
    for secs in 61..70 {
        assert_eq!(log.maintenance_failed(at(secs * 1000), &full, false), None);
    }
    assert_eq!(
        log.commit_failed(at(65_000), &full, 1),
        Some(Line::Started { n_events: 1 }),
        "a commit failing again starts its own episode"
    );
    assert_eq!(
        log.maintained(at(70_000)),
        Some(Line::Ended {
            n_events: 9,
            over: Duration::from_secs(10)
        })
    );
}

#[tokio::test]
async fn only_commits_with_appends_wait_for_an_fsync() {
    let dir = TempDir::new("fsyncs");
    let spool = open(&dir);
    let counts = |spool: &SqliteSpool| (spool.n_commits(), spool.n_synced_commits());
    let before = counts(&spool);
    spool.append(batch(1)).await.unwrap();
    spool.append(batch(2)).await.unwrap();
    assert_eq!(counts(&spool), (before.0 + 2, before.1 + 2));
    let leased = spool.lease(2, HOUR).await.unwrap();
    spool.settle(leased[0].id, Vec::new()).await.unwrap();
    spool.release(leased[1].id, HOUR).await.unwrap();
    assert_eq!(counts(&spool), (before.0 + 5, before.1 + 2));
    // And the next append is fsync'd again, with what came before it.
    spool.append(batch(3)).await.unwrap();
    assert_eq!(counts(&spool), (before.0 + 6, before.1 + 3));
    spool.close().await.unwrap();
    // Everything committed is there after a reopen: one batch settled.
    let spool = open(&dir);
    assert_eq!(spool.stats().await.unwrap().n_batches, 2);
    spool.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let dir = TempDir::new("group");
    let spool = Arc::new(open(&dir));
    let n_commits_before = spool.n_commits();
    let tasks = (0..200)
        .map(|seq| {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move { spool.append(batch(seq)).await })
        })
        .collect::<Vec<_>>();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap());
    }
    let n_commits = spool.n_commits() - n_commits_before;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert!(
        n_commits < 50,
        "200 concurrent appends took {n_commits} commits"
    );
    assert_eq!(spool.stats().await.unwrap().n_batches, 200);
    spool.close().await.unwrap();
}

/// Set in the child process of [`kill_9_loses_no_acknowledged_batch`]: the
/// spool directory to append to.
const CRASH_CHILD_DIR: &str = "BRIDGE_SPOOL_TEST_CRASH_CHILD_DIR";
/// Set in the child process: the round, to tell its batches apart.
const CRASH_CHILD_ROUND: &str = "BRIDGE_SPOOL_TEST_CRASH_CHILD_ROUND";

fn crash_body(round: u64, seq: u64) -> Bytes {
    body(
        round * 1_000_000_000 + seq,
        500 + (seq % 7) as usize * 2_000,
    )
}

/// The writer child: appends from 8 tasks until killed, printing each id
/// once `append` has returned it.
fn crash_child(dir: PathBuf, round: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let spool = Arc::new(SqliteSpool::open(SqliteSpoolOptions::new(dir, 1 << 32)).unwrap());
        let tasks = (0..8u64).map(|task| {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move {
                // Bounded, in case the parent dies without killing us.
                for idx in 0..20_000u64 {
                    let seq = task * 1_000_000 + idx;
                    let new_batch = NewBatch {
                        body: crash_body(round, seq),
                        workspace: None,
                        received_at_ms: 0,
                    };
                    let id = spool.append(new_batch).await.unwrap();
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "ACK {} {seq}", id.0).unwrap();
                    stdout.flush().unwrap();
                }
            })
        });
        for task in tasks.collect::<Vec<_>>() {
            task.await.unwrap();
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_batch() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_DIR) {
        let round = std::env::var(CRASH_CHILD_ROUND).unwrap().parse().unwrap();
        crash_child(PathBuf::from(dir), round);
        return;
    }
    let dir = TempDir::new("crash");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut acknowledged = BTreeMap::new();
    for round in 0..4u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "spool::sqlite::tests::kill_9_loses_no_acknowledged_batch",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_DIR, dir.path())
            .env(CRASH_CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let target = 20 + round * 60;
        let mut n_acked = 0;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let Some(ack) = line.strip_prefix("ACK ") else {
                continue;
            };
            let (id, seq) = ack.split_once(' ').unwrap();
            let id: i64 = id.parse().unwrap();
            acknowledged.insert(id, crash_body(round, seq.parse().unwrap()));
            n_acked += 1;
            if n_acked >= target {
                break;
            }
        }
        // SIGKILL on Unix, mid-stream: other appends are in flight.
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(n_acked, target, "the child stopped early");

        runtime.block_on(async {
            let spool = open(&dir);
            let stored = spool
                .lease(usize::MAX >> 1, Duration::ZERO)
                .await
                .unwrap()
                .into_iter()
                .map(|leased| (leased.id.0, leased.batch.body))
                .collect::<BTreeMap<_, _>>();
            for (id, body) in &acknowledged {
                assert_eq!(
                    stored.get(id),
                    Some(body),
                    "round {round}: acknowledged batch {id} is missing or damaged"
                );
            }
            assert_eq!(spool.stats().await.unwrap().n_quarantined, 0);
            spool.close().await.unwrap();
        });
    }
}

/// Opens the database file directly, as something other than the spool.
fn raw_connection(dir: &TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.db()).unwrap()
}

#[tokio::test]
async fn damaged_rows_are_quarantined_and_the_rest_delivered() {
    let dir = TempDir::new("quarantine");
    let spool = open(&dir);
    let mut ids = Vec::new();
    for seq in 0..4 {
        ids.push(spool.append(batch(seq)).await.unwrap());
    }
    spool.close().await.unwrap();
    drop(spool);

    let conn = raw_connection(&dir);
    let mut flipped = batch(1).body.to_vec();
    flipped[20] ^= 0x55;
    conn.execute(
        "UPDATE batches SET body = ?2 WHERE id = ?1",
        rusqlite::params![ids[1].0, flipped],
    )
    .unwrap();
    conn.execute("UPDATE batches SET body = 42 WHERE id = ?1", [ids[2].0])
        .unwrap();
    drop(conn);

    let spool = open(&dir);
    let leased = spool.lease(10, HOUR).await.unwrap();
    assert_eq!(
        leased.iter().map(|b| b.id).collect::<Vec<_>>(),
        [ids[0], ids[3]]
    );
    assert_eq!(leased[1].batch, batch(3));
    assert!(spool.lease(10, Duration::ZERO).await.unwrap().is_empty());
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.n_batches, stats.n_quarantined), (2, 2));

    let quarantined = spool.dead_letter_store().unwrap().quarantined(10).unwrap();
    let found = quarantined
        .iter()
        .map(|entry| (entry.batch_id, entry.reason.as_str()))
        .collect::<Vec<_>>();
    assert_eq!(
        found,
        [
            (Some(ids[1].0), "checksum_mismatch"),
            (Some(ids[2].0), "undecodable_row")
        ]
    );
    assert_eq!(quarantined[0].body.as_deref(), Some(&flipped[..]));
    spool.close().await.unwrap();
}

/// Files in the spool directory whose name starts with `spool.db.corrupt-`.
fn moved_aside(dir: &TempDir) -> Vec<String> {
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with("spool.db.corrupt-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect()
}

#[tokio::test]
async fn a_garbage_file_is_moved_aside_and_a_fresh_spool_starts() {
    let dir = TempDir::new("garbage");
    let garbage = (0..10_000u32)
        .map(|i| (i * 7919 % 251) as u8)
        .collect::<Vec<_>>();
    std::fs::write(dir.db(), &garbage).unwrap();
    let spool = open(&dir);
    assert_eq!(moved_aside(&dir).len(), 1);
    let aside = dir.path().join(&moved_aside(&dir)[0]);
    assert_eq!(
        std::fs::read(aside).unwrap(),
        garbage,
        "the damaged file is kept as it was"
    );
    let id = spool.append(batch(1)).await.unwrap();
    assert_eq!(spool.lease(1, HOUR).await.unwrap()[0].id, id);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_page_is_moved_aside_and_readable_rows_are_kept() {
    let dir = TempDir::new("corrupt-page");
    let spool = open(&dir);
    let mut bodies = BTreeMap::new();
    for seq in 0..30 {
        let new_batch = NewBatch {
            body: body(seq, 3_000),
            workspace: None,
            received_at_ms: 0,
        };
        let id = spool.append(new_batch.clone()).await.unwrap();
        bodies.insert(id, new_batch.body);
    }
    spool.close().await.unwrap();
    drop(spool);

    // Overwrite pages 3 to 5 (table b-tree pages) with garbage.
    let mut file = std::fs::read(dir.db()).unwrap();
    for byte in &mut file[2 * 4096..5 * 4096] {
        *byte = 0xA5;
    }
    std::fs::write(dir.db(), &file).unwrap();

    let spool = open(&dir);
    assert_eq!(moved_aside(&dir).len(), 1);
    let leased = spool.lease(100, HOUR).await.unwrap();
    assert!(leased.len() <= bodies.len());
    for leased in &leased {
        assert_eq!(
            Some(&leased.batch.body),
            bodies.get(&leased.id),
            "salvaged rows are intact"
        );
    }
    spool.append(batch(99)).await.unwrap();
    spool.close().await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = TempDir::new("newer");
    open(&dir).close().await.unwrap();
    raw_connection(&dir)
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match SqliteSpool::open(config(&dir)) {
        Err(SpoolError::Storage(message)) => assert!(message.contains("newer"), "{message}"),
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert!(moved_aside(&dir).is_empty());
    assert!(DeadLetterStore::open(dir.path(), Duration::from_secs(1)).is_err());
    let missing = TempDir::new("missing");
    assert!(DeadLetterStore::open(missing.path(), Duration::from_secs(1)).is_err());
}

/// Settles one batch per dead letter group and returns the spool.
async fn spool_with_dead_letters(dir: &TempDir, groups: Vec<Vec<DeadLetter>>) -> SqliteSpool {
    let spool = open(dir);
    for (seq, dead_letters) in groups.into_iter().enumerate() {
        let id = spool.append(batch(seq as u64)).await.unwrap();
        spool.settle(id, dead_letters).await.unwrap();
    }
    spool
}

#[tokio::test]
async fn dead_letters_are_listed_by_each_filter() {
    let dir = TempDir::new("dlq-list");
    let spool = spool_with_dead_letters(
        &dir,
        vec![vec![
            dead_letter("refused_by_mixpanel", "users.messages.email.Click", "a", 1),
            dead_letter("missing_id", "users.messages.email.Click", "a", 2),
        ]],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between_ms = crate::clock::now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let id = spool.append(batch(9)).await.unwrap();
    spool
        .settle(
            id,
            vec![dead_letter(
                "refused_by_mixpanel",
                "users.behaviors.CustomEvent",
                "b",
                3,
            )],
        )
        .await
        .unwrap();
    let store = spool.dead_letter_store().unwrap();
    let event_ids = |filter: DeadLetterFilter| {
        store
            .list(&filter, 100)
            .unwrap()
            .into_iter()
            .map(|entry| entry.letter.event_id.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(event_ids(DeadLetterFilter::default()), ["d1", "d2", "d3"]);
    let by_reason = DeadLetterFilter {
        reason: Some("refused_by_mixpanel".to_owned()),
        ..Default::default()
    };
    assert_eq!(event_ids(by_reason.clone()), ["d1", "d3"]);
    let by_type = DeadLetterFilter {
        event_type: Some("users.messages.email.Click".to_owned()),
        ..Default::default()
    };
    assert_eq!(event_ids(by_type), ["d1", "d2"]);
    let since = DeadLetterFilter {
        since_ms: Some(between_ms),
        ..Default::default()
    };
    assert_eq!(event_ids(since), ["d3"]);
    let until = DeadLetterFilter {
        until_ms: Some(between_ms),
        ..by_reason.clone()
    };
    assert_eq!(event_ids(until), ["d1"]);
    let all = store.list(&DeadLetterFilter::default(), 100).unwrap();
    let by_ids = DeadLetterFilter {
        ids: vec![all[0].id, all[2].id],
        ..Default::default()
    };
    assert_eq!(event_ids(by_ids), ["d1", "d3"]);
    assert_eq!(
        store.list(&DeadLetterFilter::default(), 2).unwrap().len(),
        2
    );
    assert_eq!(store.count(&by_reason).unwrap(), 2);

    assert_eq!(store.get(all[1].id).unwrap().as_ref(), Some(&all[1]));
    assert_eq!(store.get(-1).unwrap(), None);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn replay_moves_dead_letters_back_as_batches() {
    let dir = TempDir::new("dlq-replay");
    let mut not_json = dead_letter("invalid_json", "t", "a", 9);
    not_json.event = Bytes::from_static(b"{\"id\": ");
    let spool = spool_with_dead_letters(
        &dir,
        vec![vec![
            dead_letter("refused_by_mixpanel", "t", "a", 1),
            dead_letter("refused_by_mixpanel", "t", "b", 2),
            dead_letter("refused_by_mixpanel", "t", "a", 3),
            dead_letter("missing_id", "t", "a", 4),
            not_json,
        ]],
    )
    .await;
    let mut store = spool.dead_letter_store().unwrap();
    let replayed = store
        .replay(&DeadLetterFilter {
            reason: Some("refused_by_mixpanel".to_owned()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (replayed.n_events, replayed.n_batches, replayed.n_not_json),
        (3, 2, 0)
    );
    let left = store.list(&DeadLetterFilter::default(), 10).unwrap();
    assert_eq!(
        left.iter()
            .map(|e| e.letter.reason.as_str())
            .collect::<Vec<_>>(),
        ["missing_id", "invalid_json"]
    );

    let leased = spool.lease(10, HOUR).await.unwrap();
    let batches = leased
        .iter()
        .map(|leased| {
            let body: serde_json::Value = serde_json::from_slice(&leased.batch.body).unwrap();
            let ids = body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| event["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>();
            (
                leased.batch.workspace.clone().unwrap(),
                ids,
                leased.attempts,
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(
        batches,
        [
            ("a".to_owned(), vec!["d1".to_owned(), "d3".to_owned()], 0),
            ("b".to_owned(), vec!["d2".to_owned()], 0),
        ]
    );

    // An entry whose event is not JSON stays put.
    let replayed = store.replay(&DeadLetterFilter::default()).unwrap();
    assert_eq!((replayed.n_events, replayed.n_not_json), (1, 1));
    assert_eq!(spool.stats().await.unwrap().n_dead_letters, 1);

    assert_eq!(store.purge(&DeadLetterFilter::default()).unwrap(), 1);
    assert_eq!(store.purge(&DeadLetterFilter::default()).unwrap(), 0);
    assert_eq!(spool.stats().await.unwrap().n_dead_letters, 0);
    spool.close().await.unwrap();
}

/// A dead letter holding a whole batch, as delivery sets one aside when it
/// cannot archive it (`archive_failed`) or a bug made it panic
/// (`delivery_panicked`).
fn whole_batch_letter(reason: &str, workspace: Option<&str>, body: &'static str) -> DeadLetter {
    DeadLetter {
        event: Bytes::from_static(body.as_bytes()),
        reason: reason.to_owned(),
        detail: "gave up archiving after the attempt or age limit: cannot write".to_owned(),
        event_type: None,
        event_id: None,
        workspace: workspace.map(str::to_owned),
        attempts: 9,
    }
}

#[tokio::test]
async fn a_whole_batch_letter_is_replayed_as_that_batch_alone() {
    let dir = TempDir::new("dlq-replay-whole");
    const BODY: &str = "{\"events\": [{\"id\":\"w1\"}, {\"id\":\"w2\"}]}";
    let spool = spool_with_dead_letters(
        &dir,
        vec![vec![
            dead_letter("refused_by_mixpanel", "t", "a", 1),
            whole_batch_letter(crate::delivery::ARCHIVE_FAILED, Some("a"), BODY),
            whole_batch_letter(crate::delivery::DELIVERY_PANICKED, None, "{\"events\":[]}"),
        ]],
    )
    .await;
    let mut store = spool.dead_letter_store().unwrap();
    let replayed = store.replay(&DeadLetterFilter::default()).unwrap();
    // The two events of the whole batch, none of the empty one, and d1.
    assert_eq!(
        (replayed.n_events, replayed.n_batches, replayed.n_not_json),
        (3, 3, 0)
    );
    assert_eq!(spool.stats().await.unwrap().n_dead_letters, 0);
    let mut batches: Vec<(Option<String>, Bytes)> = spool
        .lease(10, HOUR)
        .await
        .unwrap()
        .into_iter()
        .map(|leased| (leased.batch.workspace, leased.batch.body))
        .collect();
    batches.sort();
    assert_eq!(
        batches,
        [
            (None, Bytes::from_static(b"{\"events\":[]}")),
            (Some("a".to_owned()), Bytes::from_static(BODY.as_bytes())),
            (
                Some("a".to_owned()),
                Bytes::from_static(b"{\"events\":[{\"id\":\"d1\",\"event_type\":\"t\"}]}")
            ),
        ],
        "the whole batch goes back byte for byte, not inside another envelope"
    );
    spool.close().await.unwrap();
}

#[tokio::test]
async fn replayed_batches_hold_at_most_500_events() {
    let dir = TempDir::new("dlq-500");
    let dead_letters = (0..1_200)
        .map(|seq| dead_letter("refused_by_mixpanel", "t", "a", seq))
        .collect();
    let spool = spool_with_dead_letters(&dir, vec![dead_letters]).await;
    let replayed = spool
        .dead_letter_store()
        .unwrap()
        .replay(&DeadLetterFilter::default())
        .unwrap();
    assert_eq!((replayed.n_events, replayed.n_batches), (1_200, 3));
    let sizes = spool
        .lease(10, HOUR)
        .await
        .unwrap()
        .iter()
        .map(|leased| {
            let body: serde_json::Value = serde_json::from_slice(&leased.batch.body).unwrap();
            body["events"].as_array().unwrap().len()
        })
        .collect::<Vec<_>>();
    assert_eq!(sizes, [500, 500, 200]);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn purge_deletes_only_what_matches() {
    let dir = TempDir::new("dlq-purge");
    let spool = spool_with_dead_letters(
        &dir,
        vec![vec![
            dead_letter("refused_by_mixpanel", "t", "a", 1),
            dead_letter("missing_id", "t", "a", 2),
        ]],
    )
    .await;
    let mut store = spool.dead_letter_store().unwrap();
    let purged = store
        .purge(&DeadLetterFilter {
            reason: Some("missing_id".to_owned()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(purged, 1);
    let left = store.list(&DeadLetterFilter::default(), 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].letter.reason, "refused_by_mixpanel");
    spool.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_handle_replays_while_the_spool_appends() {
    let dir = TempDir::new("dlq-concurrent");
    let n_dead_letters = 1_000u64;
    let dead_letters = (0..n_dead_letters)
        .map(|seq| dead_letter("refused_by_mixpanel", "t", &format!("w{}", seq % 3), seq))
        .collect();
    let spool = Arc::new(spool_with_dead_letters(&dir, vec![dead_letters]).await);

    // The CLI: its own connection, as another process would open it.
    let cli_dir = dir.path().to_path_buf();
    let cli = std::thread::spawn(move || {
        let mut store = DeadLetterStore::open(&cli_dir, Duration::from_secs(5)).unwrap();
        let all = store
            .list(&DeadLetterFilter::default(), usize::MAX)
            .unwrap();
        let mut n_events = 0;
        let mut n_batches = 0;
        for chunk in all.chunks(100) {
            let filter = DeadLetterFilter {
                ids: chunk.iter().map(|entry| entry.id).collect(),
                ..Default::default()
            };
            let replayed = store.replay(&filter).unwrap();
            n_events += replayed.n_events;
            n_batches += replayed.n_batches;
            store.list(&DeadLetterFilter::default(), 10).unwrap();
        }
        (n_events, n_batches)
    });
    let appends = (0..8u64)
        .map(|task| {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move {
                for idx in 0..40 {
                    spool.append(batch(1_000 + task * 100 + idx)).await.unwrap();
                }
            })
        })
        .collect::<Vec<_>>();
    for append in appends {
        append.await.unwrap();
    }
    let (n_events, n_batches) = cli.join().unwrap();
    assert_eq!(n_events, n_dead_letters);

    let stats = spool.stats().await.unwrap();
    assert_eq!(stats.n_dead_letters, 0);
    assert_eq!(stats.n_batches, 320 + n_batches);
    let leased = spool.lease(10_000, HOUR).await.unwrap();
    assert_eq!(leased.len() as u64, 320 + n_batches);
    let n_replayed_events: usize = leased
        .iter()
        .filter(|leased| leased.batch.workspace.as_deref() != Some("brand-a"))
        .map(|leased| {
            let body: serde_json::Value = serde_json::from_slice(&leased.batch.body).unwrap();
            body["events"].as_array().unwrap().len()
        })
        .sum();
    assert_eq!(n_replayed_events as u64, n_dead_letters);
    spool.close().await.unwrap();
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Append { n_pad_bytes: usize },
    Lease { max_batches: usize },
    Settle { pick: usize, n_dead_letters: usize },
    Release { pick: usize, delayed: bool },
    Reopen { clean: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2_000usize).prop_map(|n_pad_bytes| Op::Append { n_pad_bytes }),
        2 => (1..4usize).prop_map(|max_batches| Op::Lease { max_batches }),
        2 => (any::<usize>(), 0..3usize)
            .prop_map(|(pick, n_dead_letters)| Op::Settle { pick, n_dead_letters }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, delayed)| Op::Release { pick, delayed }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

/// A batch in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelState {
    Due,
    Leased,
    Delayed,
}

/// Runs `ops` against a spool and a plain in-memory model; every answer and
/// the stats after each step must agree.
async fn check_against_model(ops: Vec<Op>) {
    let dir = TempDir::new("model");
    let mut spool = open(&dir);
    let mut model: BTreeMap<BatchId, (Bytes, u32, ModelState)> = BTreeMap::new();
    let mut leased_ids: Vec<BatchId> = Vec::new();
    let mut n_dead_letters = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { n_pad_bytes } => {
                let new_batch = NewBatch {
                    body: body(step as u64, n_pad_bytes),
                    workspace: None,
                    received_at_ms: step as i64,
                };
                let id = spool.append(new_batch.clone()).await.unwrap();
                assert!(model.keys().all(|known| *known < id), "ids increase");
                model.insert(id, (new_batch.body, 0, ModelState::Due));
            }
            Op::Lease { max_batches } => {
                let leased = spool.lease(max_batches, HOUR).await.unwrap();
                let expected = model
                    .iter()
                    .filter(|(_, (_, _, state))| *state == ModelState::Due)
                    .take(max_batches)
                    .map(|(id, (body, attempts, _))| (*id, body.clone(), *attempts))
                    .collect::<Vec<_>>();
                let actual = leased
                    .into_iter()
                    .map(|leased| (leased.id, leased.batch.body, leased.attempts))
                    .collect::<Vec<_>>();
                assert_eq!(actual, expected);
                for (id, _, _) in actual {
                    let entry = model.get_mut(&id).unwrap();
                    entry.1 += 1;
                    entry.2 = ModelState::Leased;
                    leased_ids.push(id);
                }
            }
            Op::Settle {
                pick,
                n_dead_letters: n_new,
            } => {
                if leased_ids.is_empty() {
                    continue;
                }
                let id = leased_ids.remove(pick % leased_ids.len());
                let dead_letters = (0..n_new)
                    .map(|seq| dead_letter("refused_by_mixpanel", "t", "w", seq as u64))
                    .collect();
                spool.settle(id, dead_letters).await.unwrap();
                model.remove(&id);
                n_dead_letters += n_new as u64;
            }
            Op::Release { pick, delayed } => {
                if leased_ids.is_empty() {
                    continue;
                }
                let id = leased_ids.remove(pick % leased_ids.len());
                let retry_in = if delayed { HOUR } else { Duration::ZERO };
                spool.release(id, retry_in).await.unwrap();
                let entry = model.get_mut(&id).unwrap();
                entry.2 = if delayed {
                    ModelState::Delayed
                } else {
                    ModelState::Due
                };
            }
            Op::Reopen { clean } => {
                if clean {
                    spool.close().await.unwrap();
                }
                drop(spool);
                spool = open(&dir);
                // Leases of the previous run are cleared; delays are kept.
                for (_, _, state) in model.values_mut() {
                    if *state == ModelState::Leased {
                        *state = ModelState::Due;
                    }
                }
                leased_ids.clear();
            }
        }
        let stats = spool.stats().await.unwrap();
        assert_eq!(stats.n_batches, model.len() as u64);
        let n_bytes: usize = model.values().map(|(body, _, _)| body.len()).sum();
        assert_eq!(stats.n_bytes, n_bytes as u64);
        assert_eq!(stats.n_dead_letters, n_dead_letters);
    }
    spool.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn the_spool_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(check_against_model(ops));
    }
}

#[tokio::test]
async fn letters_added_from_outside_a_batch_are_listed_and_replayed() {
    let dir = TempDir::new("dlq-add");
    let spool = open(&dir);
    let mut store = DeadLetterStore::open(dir.path(), Duration::from_secs(5)).unwrap();
    let letters: Vec<DeadLetter> = (0..3)
        .map(|seq| dead_letter("refused_by_mixpanel", "t", "brand-a", seq))
        .collect();
    assert_eq!(store.add(&letters).unwrap(), 3);
    assert_eq!(spool.stats().await.unwrap().n_dead_letters, 3);
    let entries = store.list(&DeadLetterFilter::default(), 10).unwrap();
    let stored: Vec<&DeadLetter> = entries.iter().map(|entry| &entry.letter).collect();
    assert_eq!(stored, letters.iter().collect::<Vec<_>>());
    assert!(entries.iter().all(|entry| entry.batch_id.is_none()));
    let replayed = store.replay(&DeadLetterFilter::default()).unwrap();
    assert_eq!((replayed.n_events, replayed.n_batches), (3, 1));
    assert_eq!(spool.stats().await.unwrap().n_dead_letters, 0);
    spool.close().await.unwrap();
}
