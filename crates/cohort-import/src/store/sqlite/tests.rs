//! Tests of the SQLite membership store: the contract in `store`'s module
//! doc, page by page.

use super::*;
use crate::store::PageMember;

fn key() -> CohortKey {
    CohortKey {
        project_id: "1".to_owned(),
        cohort_id: "7".to_owned(),
    }
}

fn user(id: &str) -> BrazeUser {
    BrazeUser::ExternalId(id.to_owned())
}

fn page(kind: PageKind, session: &str, page: u32, total: u32, ids: &[&str]) -> MembershipPage {
    MembershipPage {
        cohort: key(),
        cohort_name: "Power users".to_owned(),
        kind,
        session_id: session.to_owned(),
        page,
        total_pages: Some(total),
        members: ids
            .iter()
            .map(|id| PageMember {
                distinct_id: (*id).to_owned(),
                identity: Ok(user(id)),
            })
            .collect(),
    }
}

fn open() -> (tempdir::Dir, SqliteStore) {
    let dir = tempdir::Dir::new();
    let store = SqliteStore::open(&dir.path().join("cohorts.db")).expect("store opens");
    (dir, store)
}

/// A private temporary directory, removed on drop.
mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(super) struct Dir(PathBuf);

    impl Dir {
        pub(super) fn new() -> Dir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "cohort-store-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }

        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn members(store: &SqliteStore) -> Vec<String> {
    store
        .members(&key())
        .expect("members")
        .into_iter()
        .map(|user| match user {
            BrazeUser::ExternalId(id) | BrazeUser::Email(id) => id,
        })
        .collect()
}

async fn journal(store: &SqliteStore) -> Vec<(String, ChangeOp)> {
    store
        .due_changes(1000)
        .await
        .expect("journal")
        .into_iter()
        .map(|change| match change.user {
            BrazeUser::ExternalId(id) | BrazeUser::Email(id) => (id, change.op),
        })
        .collect()
}

#[tokio::test]
async fn add_and_remove_pages_change_membership_and_journal() {
    let (_dir, store) = open();
    let outcome = store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    assert_eq!((outcome.added, outcome.removed), (2, 0));
    let outcome = store
        .apply_page(page(PageKind::Remove, "s2", 1, 1, &["a", "zzz"]))
        .await
        .unwrap();
    assert_eq!((outcome.added, outcome.removed), (0, 1));
    assert_eq!(members(&store), ["b"]);
    assert_eq!(
        journal(&store).await,
        [
            ("b".to_owned(), ChangeOp::Add),
            ("a".to_owned(), ChangeOp::Remove)
        ]
    );
    let status = &store.cohorts().await.unwrap()[0];
    assert_eq!((status.members, status.pending), (1, 2));
    assert_eq!(status.name, "Power users");
}

#[tokio::test]
async fn a_replayed_page_changes_nothing() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    store
        .apply_page(page(PageKind::Remove, "s2", 1, 1, &["a"]))
        .await
        .unwrap();
    // The old add page again, after the remove: must not bring `a` back.
    let outcome = store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    assert!(outcome.replayed);
    assert_eq!(outcome.added, 0);
    assert!(members(&store).is_empty());
}

#[tokio::test]
async fn a_snapshot_removes_the_absent_only_when_complete() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Add, "s0", 1, 1, &["old1", "old2", "keep"]))
        .await
        .unwrap();
    store
        .confirm(&store.due_changes(100).await.unwrap())
        .await
        .unwrap();
    // Pages out of order: 3, then 1; nothing removed yet.
    let outcome = store
        .apply_page(page(PageKind::Snapshot, "snap", 3, 3, &["new3"]))
        .await
        .unwrap();
    assert!(!outcome.snapshot_completed);
    store
        .apply_page(page(PageKind::Snapshot, "snap", 1, 3, &["keep", "new1"]))
        .await
        .unwrap();
    assert_eq!(members(&store), ["keep", "new1", "new3", "old1", "old2"]);
    // A duplicate of page 1 changes nothing and completes nothing.
    let outcome = store
        .apply_page(page(PageKind::Snapshot, "snap", 1, 3, &["keep", "new1"]))
        .await
        .unwrap();
    assert!(outcome.replayed && !outcome.snapshot_completed);
    let outcome = store
        .apply_page(page(PageKind::Snapshot, "snap", 2, 3, &[]))
        .await
        .unwrap();
    assert!(outcome.snapshot_completed);
    assert_eq!(outcome.removed, 2);
    assert_eq!(members(&store), ["keep", "new1", "new3"]);
    let mut changes = journal(&store).await;
    changes.sort();
    assert_eq!(
        changes,
        [
            ("new1".to_owned(), ChangeOp::Add),
            ("new3".to_owned(), ChangeOp::Add),
            ("old1".to_owned(), ChangeOp::Remove),
            ("old2".to_owned(), ChangeOp::Remove),
        ]
    );
    assert_eq!(store.cohorts().await.unwrap()[0].members, 3);
}

#[tokio::test]
async fn a_snapshot_restarted_from_page_one_in_a_new_session_replaces_the_old() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Snapshot, "try1", 1, 2, &["a", "b"]))
        .await
        .unwrap();
    // Mixpanel gave up on try1 and restarts the sync from page 1.
    store
        .apply_page(page(PageKind::Snapshot, "try2", 1, 2, &["a"]))
        .await
        .unwrap();
    let outcome = store
        .apply_page(page(PageKind::Snapshot, "try2", 2, 2, &["c"]))
        .await
        .unwrap();
    assert!(outcome.snapshot_completed);
    assert_eq!(members(&store), ["a", "c"]);
}

#[tokio::test]
async fn the_journal_keeps_the_latest_change_and_confirm_respects_newer_ones() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    let in_flight = store.due_changes(10).await.unwrap();
    assert_eq!(in_flight.len(), 1);
    // While the add is in flight, `a` leaves.
    store
        .apply_page(page(PageKind::Remove, "s2", 1, 1, &["a"]))
        .await
        .unwrap();
    store.confirm(&in_flight).await.unwrap();
    assert_eq!(journal(&store).await, [("a".to_owned(), ChangeOp::Remove)]);
    let remove = store.due_changes(10).await.unwrap();
    store.confirm(&remove).await.unwrap();
    assert!(journal(&store).await.is_empty());
    assert!(
        store.cohorts().await.unwrap()[0]
            .last_confirmed_ms
            .is_some()
    );
}

#[tokio::test]
async fn unmatched_members_are_counted_listed_and_forgotten() {
    let (_dir, store) = open();
    let mut with_unmatched = page(PageKind::Snapshot, "s1", 1, 1, &["a"]);
    with_unmatched.members.push(PageMember {
        distinct_id: "anon".to_owned(),
        identity: Err(UnmatchedReason::NoProperty),
    });
    let outcome = store.apply_page(with_unmatched).await.unwrap();
    assert_eq!(outcome.unmatched, 1);
    let unmatched = store.unmatched(&key(), 10).await.unwrap();
    assert_eq!(unmatched[0].distinct_id, "anon");
    assert_eq!(unmatched[0].reason, UnmatchedReason::NoProperty);
    assert_eq!(store.cohorts().await.unwrap()[0].unmatched, 1);
    // The next snapshot does not list `anon`: forgotten.
    store
        .apply_page(page(PageKind::Snapshot, "s2", 1, 1, &["a"]))
        .await
        .unwrap();
    assert!(store.unmatched(&key(), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_leaving_member_is_found_by_distinct_id() {
    let (_dir, store) = open();
    let mut joined = page(PageKind::Add, "s1", 1, 1, &[]);
    joined.members.push(PageMember {
        distinct_id: "d1".to_owned(),
        identity: Ok(user("braze-1")),
    });
    store.apply_page(joined).await.unwrap();
    // The remove page no longer carries the property the id came from.
    let mut left = page(PageKind::Remove, "s2", 1, 1, &[]);
    left.members.push(PageMember {
        distinct_id: "d1".to_owned(),
        identity: Err(UnmatchedReason::NoProperty),
    });
    let outcome = store.apply_page(left).await.unwrap();
    assert_eq!(outcome.removed, 1);
    assert!(members(&store).is_empty());
}

#[tokio::test]
async fn a_pull_snapshot_finishes_explicitly() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    let mut first = page(PageKind::Snapshot, "pull-1", 1, 1, &["b"]);
    first.total_pages = None;
    let outcome = store.apply_page(first).await.unwrap();
    assert!(!outcome.snapshot_completed);
    let outcome = store.finish_snapshot(&key(), "pull-1").await.unwrap();
    assert_eq!(outcome.removed, 1);
    assert_eq!(members(&store), ["b"]);
    // An empty cohort: a pull without any page empties it.
    let outcome = store.finish_snapshot(&key(), "pull-2").await.unwrap();
    assert_eq!(outcome.removed, 1);
    assert!(members(&store).is_empty());
}

#[tokio::test]
async fn dead_letters_leave_the_journal_and_replay_the_current_state() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    let changes = store.due_changes(10).await.unwrap();
    store
        .dead_letter(
            changes
                .iter()
                .cloned()
                .map(|change| RefusedChange {
                    change,
                    reason: "refused_by_braze",
                    detail: "bad user".to_owned(),
                })
                .collect(),
        )
        .await
        .unwrap();
    assert!(journal(&store).await.is_empty());
    let letters = store
        .dead_letters(&DeadLetterSelection::default(), 10)
        .unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].reason, "refused_by_braze");
    assert_eq!(letters[0].attempts, 1);
    // `b` left meanwhile: replaying journals a remove for it, not the add.
    store
        .apply_page(page(PageKind::Remove, "s2", 1, 1, &["b"]))
        .await
        .unwrap();
    store
        .confirm(&store.due_changes(10).await.unwrap())
        .await
        .unwrap();
    let replayed = store
        .replay_dead_letters(&DeadLetterSelection::default())
        .unwrap();
    assert_eq!(replayed, 2);
    let mut changes = journal(&store).await;
    changes.sort();
    assert_eq!(
        changes,
        [
            ("a".to_owned(), ChangeOp::Add),
            ("b".to_owned(), ChangeOp::Remove)
        ]
    );
    assert!(
        store
            .dead_letters(&DeadLetterSelection::default(), 10)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_store_survives_reopening() {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("cohorts.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(members(&store), ["a"]);
    assert_eq!(journal(&store).await, [("a".to_owned(), ChangeOp::Add)]);
    let outcome = store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    assert!(outcome.replayed);
}

#[tokio::test]
async fn a_late_page_of_an_abandoned_snapshot_changes_nothing() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Snapshot, "a", 1, 3, &["a1"]))
        .await
        .unwrap();
    store
        .apply_page(page(PageKind::Snapshot, "a", 2, 3, &["a2"]))
        .await
        .unwrap();
    // Mixpanel restarted the sync as session b, which completes.
    for (number, ids) in [(1, &["a1", "b1"][..]), (2, &["a2"][..]), (3, &["b3"][..])] {
        store
            .apply_page(page(PageKind::Snapshot, "b", number, 3, ids))
            .await
            .unwrap();
    }
    assert_eq!(members(&store), ["a1", "a2", "b1", "b3"]);
    // Page 3 of the abandoned session a arrives late: acknowledged, ignored.
    let outcome = store
        .apply_page(page(PageKind::Snapshot, "a", 3, 3, &["x"]))
        .await
        .unwrap();
    assert!(outcome.stale && !outcome.snapshot_completed, "{outcome:?}");
    assert_eq!(members(&store), ["a1", "a2", "b1", "b3"]);
    // And finishing a session that is not the open one does nothing.
    let outcome = store.finish_snapshot(&key(), "a").await.unwrap();
    assert!(outcome.stale);
    assert_eq!(members(&store), ["a1", "a2", "b1", "b3"]);
}

#[tokio::test]
async fn a_member_added_by_a_diff_during_a_snapshot_stays() {
    let (_dir, store) = open();
    let mut first = page(PageKind::Snapshot, "pull-1", 1, 1, &["a"]);
    first.total_pages = None;
    store.apply_page(first).await.unwrap();
    // The webhook adds `late` while the pull is still reading.
    store
        .apply_page(page(PageKind::Add, "hook", 1, 1, &["late"]))
        .await
        .unwrap();
    store.finish_snapshot(&key(), "pull-1").await.unwrap();
    assert_eq!(members(&store), ["a", "late"]);
}

#[tokio::test]
async fn deferred_changes_wait_and_let_the_others_pass() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    let changes = store.due_changes(10).await.unwrap();
    store.defer(&changes[..1], now_ms() + 60_000).await.unwrap();
    assert_eq!(journal(&store).await, [("b".to_owned(), ChangeOp::Add)]);
    store.defer(&changes[..1], 0).await.unwrap();
    let due = store.due_changes(10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].attempts, 2);
}

#[tokio::test]
async fn one_writer_at_a_time_holds_the_journal() {
    let (_dir, store) = open();
    let lease = Duration::from_secs(60);
    assert!(
        store
            .hold_writer_lease("serve", lease, false)
            .await
            .unwrap()
    );
    assert!(!store.hold_writer_lease("cli", lease, false).await.unwrap());
    assert!(
        store
            .hold_writer_lease("serve", lease, false)
            .await
            .unwrap()
    );
    // Released (a zero lease), the other may take it.
    assert!(
        store
            .hold_writer_lease("serve", Duration::ZERO, false)
            .await
            .unwrap()
    );
    assert!(store.hold_writer_lease("cli", lease, false).await.unwrap());
}

#[tokio::test]
async fn replaying_a_dead_letter_keeps_the_cohorts_current_name() {
    let (_dir, store) = open();
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    let change = store.due_changes(1).await.unwrap().remove(0);
    store
        .dead_letter(vec![RefusedChange {
            change,
            reason: "refused_by_braze",
            detail: String::new(),
        }])
        .await
        .unwrap();
    let mut renamed = page(PageKind::Add, "s2", 1, 1, &[]);
    renamed.cohort_name = "Renamed".to_owned();
    store.apply_page(renamed).await.unwrap();
    store
        .replay_dead_letters(&DeadLetterSelection::default())
        .unwrap();
    assert_eq!(store.cohorts().await.unwrap()[0].name, "Renamed");
}

#[tokio::test]
async fn the_service_takes_the_journal_over_from_a_holder_that_died() {
    let (_dir, store) = open();
    let lease = Duration::from_secs(60);
    assert!(
        store
            .hold_writer_lease("killed serve", lease, false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .hold_writer_lease("new serve", lease, false)
            .await
            .unwrap()
    );
    assert!(
        store
            .hold_writer_lease("new serve", lease, true)
            .await
            .unwrap()
    );
    assert!(
        !store
            .hold_writer_lease("killed serve", lease, false)
            .await
            .unwrap()
    );
}
