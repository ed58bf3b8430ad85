//! Tests of the writer's pure parts (merging, chunking, dates), then of
//! its lease among writers sharing a store: a writer that starts leaves a
//! live one the lease, takes over when it stops or its lease expires, keeps
//! the lease through a round longer than it, and stops sending once another
//! writer took it.

use super::*;

fn change(user: &str, cohort: &str, op: ChangeOp, seq: i64) -> PendingChange {
    PendingChange {
        cohort: CohortKey {
            project_id: "1".to_owned(),
            cohort_id: cohort.to_owned(),
        },
        cohort_name: format!("cohort {cohort}"),
        user: BrazeUser::ExternalId(user.to_owned()),
        op,
        seq,
        attempts: 0,
        queued_at_ms: 0,
    }
}

#[test]
fn one_object_per_user_with_adds_and_removes_merged() {
    let objects = merge_by_user(
        "mixpanel_cohorts",
        vec![
            change("u1", "7", ChangeOp::Add, 1),
            change("u2", "7", ChangeOp::Remove, 2),
            change("u1", "8", ChangeOp::Remove, 3),
            change("u1", "9", ChangeOp::Add, 4),
        ],
    );
    assert_eq!(objects.len(), 2);
    assert_eq!(
        objects[0].update.user,
        BrazeUser::ExternalId("u1".to_owned())
    );
    assert_eq!(objects[0].update.add, ["7", "9"]);
    assert_eq!(objects[0].update.remove, ["8"]);
    assert_eq!(objects[0].changes.len(), 3);
    assert_eq!(objects[1].update.remove, ["7"]);
}

#[test]
fn chunks_keep_order_and_size() {
    let chunks = chunk((0..160).collect(), 75);
    assert_eq!(
        chunks.iter().map(Vec::len).collect::<Vec<_>>(),
        [75, 75, 10]
    );
    assert_eq!(chunks[1][0], 75);
    assert!(chunk(Vec::<u8>::new(), 75).is_empty());
}

#[test]
fn dates_are_rfc3339_utc() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339_utc(1_798_761_599), "2026-12-31T23:59:59Z");
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let max = Duration::from_secs(60);
    assert_eq!(backoff(1, max), Duration::from_secs(1));
    assert_eq!(backoff(3, max), Duration::from_secs(4));
    assert_eq!(backoff(40, max), max);
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_store(name: &str) -> (TempDir, Arc<crate::store::sqlite::SqliteStore>) {
    let dir = std::env::temp_dir().join(format!("cohort-writer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = crate::store::sqlite::SqliteStore::open(&dir.join("cohorts.db")).unwrap();
    (TempDir(dir), Arc::new(store))
}

/// Journals the adds of `users` to cohort 77, as one page of session
/// `session`.
async fn journal_adds(store: &impl MembershipStore, session: &str, users: &[&str]) {
    let page = crate::store::MembershipPage {
        cohort: CohortKey {
            project_id: "1".to_owned(),
            cohort_id: "77".to_owned(),
        },
        cohort_name: "Power users".to_owned(),
        kind: crate::store::PageKind::Add,
        session_id: session.to_owned(),
        page: 1,
        total_pages: Some(1),
        members: users
            .iter()
            .map(|user| crate::store::PageMember {
                distinct_id: (*user).to_owned(),
                identity: Ok(BrazeUser::ExternalId((*user).to_owned())),
            })
            .collect(),
    };
    store.apply_page(page).await.unwrap();
}

/// Writers sharing a store, with a lease of `lease`, quick to poll.
fn shared(lease: Duration) -> WriterConfig {
    WriterConfig {
        lease,
        idle_poll: Duration::from_millis(20),
        max_backoff: Duration::from_millis(20),
        ..WriterConfig::shared()
    }
}

/// A writer to a Braze stand-in of its own, so that a test sees which
/// writer sent what.
async fn writer_to_braze<S: MembershipStore>(
    store: &Arc<S>,
    config: WriterConfig,
) -> (
    Arc<Writer<S>>,
    crate::testsuite::BrazeDouble,
    wiremock::MockServer,
) {
    let (server, braze) = crate::testsuite::BrazeDouble::start().await;
    let client = BrazeClient::builder(mixpanel_client::Secret::new("rest-key"))
        .base_url(&server.uri())
        .retry(mixpanel_client::RetryParams::for_test())
        .build()
        .unwrap();
    let writer = Writer::new(
        Arc::clone(store),
        Destination::attribute(client, DEFAULT_ATTRIBUTE),
        config,
    );
    (Arc::new(writer), braze, server)
}

fn members(braze: &crate::testsuite::BrazeDouble) -> Vec<String> {
    braze.members(DEFAULT_ATTRIBUTE, "77").into_iter().collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_shared_writer_leaves_a_live_one_the_lease_and_takes_it_when_it_stops() {
    let (_dir, store) = temp_store("shared-stop");
    // A lease far longer than the test: only a lease given back lets the
    // second writer in.
    let (first, first_braze, _first_server) =
        writer_to_braze(&store, shared(Duration::from_secs(60))).await;
    let (second, second_braze, _second_server) =
        writer_to_braze(&store, shared(Duration::from_secs(60))).await;
    let (stop_first, first_stopped) = tokio::sync::watch::channel(false);
    let first_task = tokio::spawn(Arc::clone(&first).run(first_stopped));
    journal_adds(&*store, "s1", &["a"]).await;
    wait_for("the first writer sends a", || {
        members(&first_braze) == ["external_id:a"]
    })
    .await;

    let (stop_second, second_stopped) = tokio::sync::watch::channel(false);
    let second_task = tokio::spawn(Arc::clone(&second).run(second_stopped));
    journal_adds(&*store, "s2", &["b"]).await;
    wait_for("the first writer sends b", || {
        members(&first_braze).len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        second_braze.requests(),
        0,
        "the second writer stole the lease"
    );

    stop_first.send(true).unwrap();
    first_task.await.unwrap();
    journal_adds(&*store, "s3", &["c"]).await;
    wait_for("the second writer sends c", || {
        members(&second_braze) == ["external_id:c"]
    })
    .await;
    assert_eq!(members(&first_braze), ["external_id:a", "external_id:b"]);
    stop_second.send(true).unwrap();
    second_task.await.unwrap();
}

#[tokio::test]
async fn a_shared_writer_takes_over_from_one_that_died_when_its_lease_expires() {
    let (_dir, store) = temp_store("shared-died");
    let lease = Duration::from_millis(800);
    let (first, first_braze, _first_server) = writer_to_braze(&store, shared(lease)).await;
    let (second, second_braze, _second_server) = writer_to_braze(&store, shared(lease)).await;
    let (_stop_first, first_stopped) = tokio::sync::watch::channel(false);
    let first_task = tokio::spawn(Arc::clone(&first).run(first_stopped));
    journal_adds(&*store, "s1", &["a"]).await;
    wait_for("the first writer sends a", || {
        !members(&first_braze).is_empty()
    })
    .await;
    let (stop_second, second_stopped) = tokio::sync::watch::channel(false);
    let second_task = tokio::spawn(Arc::clone(&second).run(second_stopped));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Killed: its lease is not given back.
    first_task.abort();
    let died_at = std::time::Instant::now();
    journal_adds(&*store, "s2", &["b"]).await;
    wait_for("the second writer sends b", || {
        members(&second_braze) == ["external_id:b"]
    })
    .await;
    assert!(
        died_at.elapsed() >= lease / 2,
        "the second writer sent {:?} after the first died, within its lease",
        died_at.elapsed()
    );
    assert_eq!(members(&first_braze), ["external_id:a"]);
    stop_second.send(true).unwrap();
    second_task.await.unwrap();
}

#[tokio::test]
async fn a_round_longer_than_the_lease_keeps_it() {
    let (_dir, store) = temp_store("long-round");
    let lease = Duration::from_secs(1);
    let (writer, braze, _server) = writer_to_braze(&store, shared(lease)).await;
    braze.set_delay(Some(Duration::from_millis(2500)));
    journal_adds(&*store, "s1", &["a"]).await;
    let round = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move { writer.round().await }
    });
    wait_for("the round sends", || braze.requests() == 1).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert!(
            !store
                .hold_writer_lease("another replica", lease, false)
                .await
                .unwrap(),
            "the lease lapsed {:?} into the round",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = round.await.unwrap().unwrap();
    assert_eq!(report.confirmed, 1);
    assert!(store.due_changes(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_writer_whose_lease_was_taken_stops_sending() {
    let (_dir, store) = temp_store("lease-taken");
    let lease = Duration::from_millis(400);
    let (writer, braze, _server) = writer_to_braze(&store, shared(lease)).await;
    braze.set_delay(Some(Duration::from_secs(10)));
    journal_adds(&*store, "s1", &["a"]).await;
    let started = std::time::Instant::now();
    let round = tokio::spawn({
        let writer = Arc::clone(&writer);
        async move { writer.round().await }
    });
    wait_for("the round sends", || braze.requests() == 1).await;
    assert!(
        store
            .hold_writer_lease("another replica", Duration::from_secs(60), true)
            .await
            .unwrap()
    );
    let error = round.await.unwrap().unwrap_err();
    assert!(matches!(error, WriterError::LeaseHeld), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Not confirmed: whoever holds the lease sends it again.
    assert_eq!(store.due_changes(10).await.unwrap().len(), 1);
}
