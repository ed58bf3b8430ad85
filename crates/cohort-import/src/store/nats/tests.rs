//! Tests of the NATS membership store against a real `nats-server`: the
//! suite every store runs (`store::conformance`), then what only a shared
//! store faces: replicas applying one sync at once, retries whose answer
//! was lost, writers racing for the lease, and crashes at every step.

use std::time::{Duration, Instant};

use super::test_server::{TEST_LOCK_LEASE, TestServer};
use super::*;
use crate::store::conformance::{TestStore, conformance_suite, journal, key, members, page, user};
use crate::store::{ChangeOp, PageKind, PageMember};

impl TestStore for NatsStore {
    async fn members_of(&self, cohort: &CohortKey) -> Vec<BrazeUser> {
        self.members(cohort).await.expect("members")
    }

    async fn all_dead_letters(&self) -> Vec<CohortDeadLetter> {
        self.dead_letters(&DeadLetterSelection::default(), usize::MAX)
            .await
            .expect("dead letters")
    }

    async fn replay_all_dead_letters(&self) -> u64 {
        self.replay_dead_letters(&DeadLetterSelection::default())
            .await
            .expect("replay")
    }
}

async fn open() -> Option<(TestServer, NatsStore)> {
    let server = TestServer::start()?;
    let store = server.store().await;
    Some((server, store))
}

/// Another replica (a new connection), as after a restart.
async fn reopen(server: &TestServer, store: NatsStore) -> NatsStore {
    drop(store);
    server.store().await
}

conformance_suite!(open, reopen);

fn ids(range: std::ops::Range<u32>, prefix: &str) -> Vec<String> {
    range.map(|n| format!("{prefix}{n:03}")).collect()
}

fn page_of(
    kind: PageKind,
    session: &str,
    number: u32,
    total: u32,
    ids: &[String],
) -> MembershipPage {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    page(kind, session, number, total, &ids)
}

/// The journal as (user, op), sorted.
async fn sorted_journal(store: &NatsStore) -> Vec<(String, ChangeOp)> {
    let mut changes = journal(store).await;
    changes.sort();
    changes
}

fn expect(adds: &[String], removes: &[String]) -> Vec<(String, ChangeOp)> {
    let mut changes: Vec<(String, ChangeOp)> = adds
        .iter()
        .map(|id| (id.clone(), ChangeOp::Add))
        .chain(removes.iter().map(|id| (id.clone(), ChangeOp::Remove)))
        .collect();
    changes.sort();
    changes
}

/// A cohort of `old` and `keep` members, confirmed (the journal empty).
async fn seed(store: &NatsStore, old: &[String], keep: &[String]) {
    let all: Vec<String> = old.iter().chain(keep).cloned().collect();
    store
        .apply_page(page_of(PageKind::Add, "seed", 1, 1, &all))
        .await
        .unwrap();
    let due = store.due_changes(10_000).await.unwrap();
    store.confirm(&due).await.unwrap();
    assert!(journal(store).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_apply_the_pages_of_one_sync_at_once() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    let old = ids(0..20, "old");
    let keep = ids(0..20, "keep");
    let new = ids(0..80, "new");
    seed(&a, &old, &keep).await;
    // A snapshot of 10 pages: keep and new, spread over both replicas,
    // every page at once, and every third page delivered twice (a retry
    // on the other replica).
    let listed: Vec<String> = keep.iter().chain(&new).cloned().collect();
    let pages: Vec<MembershipPage> = listed
        .chunks(10)
        .zip(1..)
        .map(|(chunk, number)| page_of(PageKind::Snapshot, "snap", number, 10, chunk))
        .collect();
    let mut deliveries = Vec::new();
    for (index, page) in pages.iter().enumerate() {
        let (first, second) = if index % 2 == 0 { (&a, &b) } else { (&b, &a) };
        deliveries.push((first.clone(), page.clone()));
        if index % 3 == 0 {
            deliveries.push((second.clone(), page.clone()));
        }
    }
    let started = Instant::now();
    let outcomes = futures_util::future::join_all(
        deliveries
            .into_iter()
            .map(|(store, page)| tokio::spawn(async move { store.apply_page(page).await })),
    )
    .await;
    let outcomes: Vec<PageOutcome> = outcomes
        .into_iter()
        .map(|joined| joined.expect("task").expect("page applied"))
        .collect();
    let elapsed = started.elapsed();
    assert_eq!(outcomes.iter().filter(|o| o.replayed).count(), 4);
    assert_eq!(outcomes.iter().filter(|o| o.snapshot_completed).count(), 1);
    assert_eq!(outcomes.iter().map(|o| o.added).sum::<u64>(), 80);
    assert_eq!(outcomes.iter().map(|o| o.removed).sum::<u64>(), 20);
    let mut expected_members = listed.clone();
    expected_members.sort();
    assert_eq!(members(&a).await, expected_members);
    assert_eq!(members(&b).await, expected_members);
    assert_eq!(sorted_journal(&b).await, expect(&new, &old));
    let status = &a.cohorts().await.unwrap()[0];
    assert_eq!((status.members, status.pending), (100, 100));
    #[allow(clippy::print_stderr)]
    {
        eprintln!("14 deliveries of 10 snapshot pages over 2 replicas: {elapsed:?}");
    }
}

#[tokio::test]
async fn a_page_retried_after_its_answer_was_lost_is_applied_once() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    let first = a
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    assert_eq!(first.added, 2);
    let seqs: Vec<i64> = a
        .due_changes(10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    // The answer never reached Mixpanel: it retries, on the other replica.
    let retry = b
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    assert!(retry.replayed && retry.added == 0, "{retry:?}");
    let after: Vec<i64> = b
        .due_changes(10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(after, seqs, "the retry journaled nothing");
    assert_eq!(b.cohorts().await.unwrap()[0].members, 2);
}

#[tokio::test]
async fn a_page_recorded_by_a_replica_that_died_is_applied_by_its_retry() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    *a.inner.faults.lock().unwrap() = Some(("page_recorded", 0));
    assert!(
        a.apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
            .await
            .is_err()
    );
    assert!(journal(&b).await.is_empty(), "recorded, not yet applied");
    let retry = b
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(members(&b).await, ["a", "b"]);
    assert_eq!(
        sorted_journal(&b).await,
        expect(&["a".to_owned(), "b".to_owned()], &[])
    );
    let again = b
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(b.cohorts().await.unwrap()[0].members, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_racing_for_the_lease_leave_one_holder() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    let lease = Duration::from_secs(60);
    let attempts = (0..8).map(|n| {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let owner = format!("writer-{n}");
            let held = store.hold_writer_lease(&owner, lease, false).await.unwrap();
            (owner, held)
        })
    });
    let results: Vec<(String, bool)> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    let holders: Vec<&String> = results
        .iter()
        .filter(|(_, held)| *held)
        .map(|(owner, _)| owner)
        .collect();
    assert_eq!(holders.len(), 1, "{results:?}");
    let holder = holders[0].clone();
    assert!(a.hold_writer_lease(&holder, lease, false).await.unwrap());
    assert!(!b.hold_writer_lease("late", lease, false).await.unwrap());
    // The service taking over at start.
    assert!(b.hold_writer_lease("service", lease, true).await.unwrap());
    assert!(!a.hold_writer_lease(&holder, lease, false).await.unwrap());
}

/// Page 2 of 2 of a snapshot, applied by a replica that crashes at
/// `fault` (after `hits` passes), then retried on another: the end state
/// is the same as without the crash.
async fn crash_then_retry(server: &TestServer, prefix: &str, fault: &'static str, hits: u32) {
    let a = server.store_with_prefix(prefix).await;
    let b = server.store_with_prefix(prefix).await;
    let old = ids(0..3, "old");
    let keep = ids(0..3, "keep");
    let new = ids(0..6, "new");
    seed(&b, &old, &keep).await;
    let first: Vec<String> = keep.iter().chain(&new[..3]).cloned().collect();
    b.apply_page(page_of(PageKind::Snapshot, "snap", 1, 2, &first))
        .await
        .unwrap();
    let mut crashing = a.clone();
    crashing.write_window = 1;
    *crashing.inner.faults.lock().unwrap() = Some((fault, hits));
    let last = page_of(PageKind::Snapshot, "snap", 2, 2, &new[3..]);
    let crashed = crashing.apply_page(last.clone()).await;
    assert!(crashed.is_err(), "{fault} {hits}: {crashed:?}");
    let retry = b.apply_page(last.clone()).await.unwrap();
    // Recorded before the crash, the page is a replay; else the retry is
    // its first recording.
    let recorded = fault != "content_stored";
    assert_eq!(retry.replayed, recorded, "{fault} {hits}: {retry:?}");
    let mut expected: Vec<String> = keep.iter().chain(&new).cloned().collect();
    expected.sort();
    assert_eq!(members(&b).await, expected, "{fault} {hits}");
    assert_eq!(
        sorted_journal(&b).await,
        expect(&new, &old),
        "{fault} {hits}"
    );
    let status = &b.cohorts().await.unwrap()[0];
    assert_eq!((status.members, status.pending), (9, 9), "{fault} {hits}");
    // The page's outcome, as the replica that finished it recorded it.
    let cohort = cohort_token(&key());
    let record = b
        .inner
        .pages
        .read(&model::record_key(&cohort, &last))
        .await
        .unwrap();
    let record: model::PageRecord = decode("record", record.value.as_ref()).unwrap().unwrap();
    let outcome = record.outcome.expect("applied");
    assert_eq!(
        (outcome.added, outcome.removed, outcome.snapshot_completed),
        (3, 3, true),
        "{fault} {hits}"
    );
    // No tombstone, no half-applied change left.
    let meta = b.inner.cohorts.read(&meta_key(&cohort)).await.unwrap();
    let meta: Meta = decode("meta", meta.value.as_ref()).unwrap().unwrap();
    assert!(meta.applying.is_none());
    assert_eq!(tombstones(&b).await, 0, "{fault} {hits}");
}

/// Tombstones left in cohort [`key`].
async fn tombstones(store: &NatsStore) -> u32 {
    let cohort = cohort_token(&key());
    let mut tombstones = 0;
    store
        .inner
        .members
        .scan(&format!("m.{cohort}.>"), |_, value, _| {
            let member: MemberValue = decode("member", Some(&value)).unwrap().unwrap();
            tombstones += u32::from(member.removed);
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    tombstones
}

#[tokio::test]
async fn a_crash_at_any_step_of_a_page_is_finished_by_the_next_replica() {
    let Some(server) = TestServer::start() else {
        return;
    };
    // Every write of the page (content, record, the cohort's state,
    // journal and tombstones one by one) and each step between them.
    let mut cases: Vec<(&'static str, u32)> = vec![
        ("content_stored", 0),
        ("page_recorded", 0),
        ("intent_written", 0),
        ("journal_written", 0),
        ("effects_written", 0),
        ("record_written", 0),
    ];
    cases.extend((0..12).map(|hits| ("write", hits)));
    // Each case in buckets of its own, all at once: their waits for the
    // dead replica's lock overlap.
    futures_util::future::join_all(cases.into_iter().enumerate().map(|(n, (fault, hits))| {
        let server = &server;
        async move { crash_then_retry(server, &format!("crash{n}"), fault, hits).await }
    }))
    .await;
}

#[tokio::test]
async fn recover_finishes_what_a_dead_replica_left_without_waiting_for_a_retry() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    seed(&b, &["a".to_owned()], &[]).await;
    let mut crashing = a.clone();
    crashing.write_window = 1;
    *crashing.inner.faults.lock().unwrap() = Some(("write", 1));
    let remove = page(PageKind::Remove, "s2", 1, 1, &["a"]);
    assert!(crashing.apply_page(remove.clone()).await.is_err());
    assert_eq!(b.recover().await.unwrap(), 1);
    assert!(members(&b).await.is_empty());
    assert_eq!(journal(&b).await, [("a".to_owned(), ChangeOp::Remove)]);
    assert_eq!(b.recover().await.unwrap(), 0);
    assert_eq!(tombstones(&b).await, 0);
    let retry = b.apply_page(remove).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(b.cohorts().await.unwrap()[0].members, 0);
}

#[tokio::test]
async fn a_page_whose_recorded_content_is_gone_is_applied_from_its_retry() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    *a.inner.faults.lock().unwrap() = Some(("page_recorded", 0));
    let added = page(PageKind::Add, "s1", 1, 1, &["a"]);
    assert!(a.apply_page(added.clone()).await.is_err());
    // The content expires before the record (the edge of the page memory).
    let record = model::record_key(&cohort_token(&key()), &added);
    let entry: model::PageRecord = decode(
        "record",
        b.inner.pages.read(&record).await.unwrap().value.as_ref(),
    )
    .unwrap()
    .unwrap();
    b.inner
        .pages
        .purge(&model::chunk_key(&record, &entry.nonce, 0))
        .await
        .unwrap();
    let retry = b.apply_page(added).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(members(&b).await, ["a"]);
    assert_eq!(journal(&b).await, [("a".to_owned(), ChangeOp::Add)]);
}

#[tokio::test]
async fn a_crash_while_finishing_a_pull_is_finished_by_the_next_change() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    seed(&b, &["gone".to_owned()], &["stay".to_owned()]).await;
    let mut pulled = page(PageKind::Snapshot, "pull-1", 1, 1, &["stay"]);
    pulled.total_pages = None;
    b.apply_page(pulled).await.unwrap();
    let mut crashing = a.clone();
    crashing.write_window = 1;
    *crashing.inner.faults.lock().unwrap() = Some(("journal_written", 0));
    assert!(crashing.finish_snapshot(&key(), "pull-1").await.is_err());
    // The next change of the cohort finishes it first.
    b.apply_page(page(PageKind::Add, "s3", 1, 1, &["late"]))
        .await
        .unwrap();
    assert_eq!(members(&b).await, ["late", "stay"]);
    assert_eq!(
        sorted_journal(&b).await,
        expect(&["late".to_owned()], &["gone".to_owned()])
    );
    let outcome = b.finish_snapshot(&key(), "pull-1").await.unwrap();
    assert!(outcome.stale, "finished once: {outcome:?}");
}

#[tokio::test]
async fn a_dead_letter_written_before_a_crash_is_not_lost_nor_doubled() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    a.apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    let refused = |changes: Vec<PendingChange>| {
        changes
            .into_iter()
            .map(|change| RefusedChange {
                change,
                reason: "refused_by_braze",
                detail: "no".to_owned(),
            })
            .collect::<Vec<_>>()
    };
    *a.inner.faults.lock().unwrap() = Some(("dead_letter_written", 0));
    let due = a.due_changes(10).await.unwrap();
    assert!(a.dead_letter(refused(due.clone())).await.is_err());
    // Both there: the letter, and the change still in the journal.
    assert_eq!(b.all_dead_letters().await.len(), 1);
    let again = b.due_changes(10).await.unwrap();
    assert_eq!(again, due);
    b.dead_letter(refused(again)).await.unwrap();
    assert!(journal(&b).await.is_empty());
    let letters = b.all_dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, due[0].seq);
    assert_eq!(letters[0].user, user("a"));
    assert_eq!(b.cohorts().await.unwrap()[0].dead_letters, 1);
    assert_eq!(
        b.purge_dead_letters(&DeadLetterSelection::default())
            .await
            .unwrap(),
        1
    );
    assert!(b.all_dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_big_page_is_stored_in_chunks_and_applied_from_them() {
    let Some(server) = TestServer::start() else {
        return;
    };
    // A lock lease far above the test's usual 2 s: 30,000 writes on a
    // loaded machine must not outlast the lock's renewals.
    let lease = Duration::from_secs(30);
    let (a, b) = (
        server.store().await.with_lock_lease(lease),
        server.store().await.with_lock_lease(lease),
    );
    // 10,000 members (Mixpanel's largest page) with long ids: over 1 MiB.
    let mut big = page(PageKind::Add, "big", 1, 1, &[]);
    big.members = (0..10_000)
        .map(|n| {
            let id = format!("{n:05}-{}", "x".repeat(100));
            PageMember {
                distinct_id: id.clone(),
                identity: Ok(user(&id)),
            }
        })
        .collect();
    *a.inner.faults.lock().unwrap() = Some(("page_recorded", 0));
    assert!(a.apply_page(big.clone()).await.is_err());
    let started = Instant::now();
    let retry = b.apply_page(big).await.unwrap();
    let elapsed = started.elapsed();
    assert!(retry.replayed);
    let status = &b.cohorts().await.unwrap()[0];
    assert_eq!((status.members, status.pending), (10_000, 10_000));
    let started = Instant::now();
    let due = b.due_changes(30_000).await.unwrap();
    let read = started.elapsed();
    assert_eq!(due.len(), 10_000);
    assert!(due.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    let started = Instant::now();
    b.confirm(&due).await.unwrap();
    let confirmed = started.elapsed();
    assert!(journal(&b).await.is_empty());
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "10,000 new members: applied from chunks in {elapsed:?}, read from the journal in {read:?}, confirmed in {confirmed:?}"
        );
    }
}

#[tokio::test]
async fn open_names_a_bucket_whose_replicas_differ() {
    let Some(server) = TestServer::start() else {
        return;
    };
    NatsStore::open(server.jetstream().await, "rep", 1)
        .await
        .unwrap();
    let error = NatsStore::open(server.jetstream().await, "rep", 3)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rep-pages") && error.contains("1 replica"),
        "{error}"
    );
    let error = NatsStore::open(server.jetstream().await, "a.b", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("a.b"), "{error}");
    assert_eq!(
        NatsStore::bucket_names("bridge-cohorts"),
        [
            "bridge-cohorts-pages",
            "bridge-cohorts-cohorts",
            "bridge-cohorts-members",
            "bridge-cohorts-journal",
            "bridge-cohorts-deferred",
            "bridge-cohorts-dead-letters"
        ]
    );
}

#[tokio::test]
async fn check_reports_missing_matching_and_differing_buckets_and_creates_none() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let jetstream = server.jetstream().await;
    let states = |checks: Vec<BucketCheck>| -> Vec<(String, BucketState)> {
        checks
            .into_iter()
            .map(|check| (check.name, check.state))
            .collect()
    };
    let missing = states(NatsStore::check(&jetstream, "chk", 1).await.unwrap());
    assert_eq!(missing.len(), 6);
    assert!(
        missing
            .iter()
            .all(|(_, state)| *state == BucketState::Missing),
        "{missing:?}"
    );
    assert_eq!(missing[0].0, "chk-pages");
    // Checking created nothing.
    let again = states(NatsStore::check(&jetstream, "chk", 1).await.unwrap());
    assert_eq!(again, missing);

    NatsStore::open(jetstream.clone(), "chk", 1).await.unwrap();
    let checks = NatsStore::check(&jetstream, "chk", 1).await.unwrap();
    assert!(
        checks
            .iter()
            .all(|check| check.state == BucketState::Matches),
        "{checks:?}"
    );
    let checks = NatsStore::check(&jetstream, "chk", 3).await.unwrap();
    assert_eq!(
        checks[5].state,
        BucketState::Mismatch {
            setting: "replicas".to_owned(),
            found: "1".to_owned(),
            wanted: "3".to_owned(),
        }
    );

    // A bucket that keeps history, not made by the bridge.
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "KV_hist-journal".to_owned(),
            subjects: vec!["$KV.hist-journal.>".to_owned()],
            max_messages_per_subject: 5,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let checks = states(NatsStore::check(&jetstream, "hist", 1).await.unwrap());
    assert_eq!(checks[2], ("hist-members".to_owned(), BucketState::Missing));
    assert_eq!(
        checks[3],
        (
            "hist-journal".to_owned(),
            BucketState::Mismatch {
                setting: "history".to_owned(),
                found: "5".to_owned(),
                wanted: "1".to_owned(),
            }
        )
    );
    assert!(NatsStore::check(&jetstream, "a.b", 1).await.is_err());
}

#[tokio::test]
async fn a_lock_is_taken_over_only_after_its_holder_stopped_renewing() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let (a, b) = (server.store().await, server.store().await);
    let held = a.lock("c").await.unwrap();
    // Renewed while held: the other replica waits for it.
    let waiting = tokio::time::timeout(TEST_LOCK_LEASE * 2, b.lock("c")).await;
    assert!(waiting.is_err(), "taken while renewed");
    held.check().unwrap();
    held.release().await;
    b.lock("c").await.unwrap().abandon().await;
    // Abandoned (a crash): taken over after a lease without renewal.
    let started = Instant::now();
    let taken = a.lock("c").await.unwrap();
    assert!(started.elapsed() >= TEST_LOCK_LEASE);
    taken.release().await;
}

/// A Mixpanel stand-in with one cohort of two members; counts how many
/// times the cohorts were listed (once per pull round).
async fn mixpanel_counting_rounds() -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"id": 77, "name": "Power users", "count": 2, "is_visible": 1},
        ])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "page": 0, "page_size": 1000, "session_id": "sess", "status": "ok",
            "results": [
                {"$distinct_id": "u1", "$properties": {}},
                {"$distinct_id": "u2", "$properties": {}},
            ],
        })))
        .mount(&server)
        .await;
    server
}

async fn rounds(server: &wiremock::MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|request| request.url.path() == "/api/query/cohorts/list")
        .count()
}

/// One replica's pull schedule on its own connection to the store.
fn spawn_schedule(
    store: NatsStore,
    mixpanel: &wiremock::MockServer,
    interval: Duration,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let client = mixpanel_client::Client::builder(mixpanel_client::Credentials::service_account(
        "svc", "secret", "42",
    ))
    .base_url(mixpanel.uri())
    .retry(mixpanel_client::RetryParams::for_test())
    .build()
    .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(crate::pull::pull_every(
        client,
        std::sync::Arc::new(store),
        crate::identity::IdentityRule::default(),
        crate::pull::Schedule {
            ids: Vec::new(),
            interval,
        },
        std::sync::Arc::default(),
        std::sync::Arc::default(),
        stopped,
    ));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_take_turns_at_the_pull_schedule() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let mixpanel = mixpanel_counting_rounds().await;
    let interval = Duration::from_secs(1);
    let (stop_first, first) = spawn_schedule(server.store().await, &mixpanel, interval);
    // The first replica takes the lease with its first round.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (stop_second, second) = spawn_schedule(server.store().await, &mixpanel, interval);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    // One round per interval, not one per replica: 1 at the start, then
    // about 1 a second (each round ends a little after it starts).
    let together = rounds(&mixpanel).await;
    assert!((3..=5).contains(&together), "{together} rounds in 3.5 s");

    // The holder stops (as if it died): the other takes over once the
    // lease lapses, within an interval and a look.
    stop_first.send(true).unwrap();
    first.await.unwrap();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let after = rounds(&mixpanel).await;
    assert!(
        after >= together + 2,
        "the second replica took over: {together} then {after}"
    );
    stop_second.send(true).unwrap();
    second.await.unwrap();
    let members = server
        .store()
        .await
        .members(&CohortKey {
            project_id: "42".to_owned(),
            cohort_id: "77".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(members.len(), 2);
}
