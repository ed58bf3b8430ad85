//! The [`MembershipStore`] contract as tests, generic over the store, so
//! that every implementation runs the same cases: `sqlite/tests.rs` and
//! `nats/tests.rs` each expand [`conformance_suite!`] with a function that
//! opens a fresh store of theirs.
//!
//! Each case is an async fn taking the store; the few cases that need more
//! than the trait (the members of a cohort, the dead letters and their
//! replay, reopening) reach it through [`TestStore`].

use std::future::Future;
use std::time::Duration;

use super::{
    ChangeOp, CohortDeadLetter, CohortKey, MembershipPage, MembershipStore, PageKind, PageMember,
    RefusedChange,
};
use crate::braze::BrazeUser;
use crate::clock::now_ms;
use crate::identity::UnmatchedReason;

/// What the cases need beyond [`MembershipStore`]: each store's own
/// administration.
pub(crate) trait TestStore: MembershipStore {
    /// Every member of a cohort, ordered by identifier kind then id.
    fn members_of(&self, cohort: &CohortKey) -> impl Future<Output = Vec<BrazeUser>> + Send;
    /// Every dead letter, oldest first.
    fn all_dead_letters(&self) -> impl Future<Output = Vec<CohortDeadLetter>> + Send;
    /// Replays every dead letter; returns how many.
    fn replay_all_dead_letters(&self) -> impl Future<Output = u64> + Send;
}

/// Expands to one `#[tokio::test]` per case of this module, each opening
/// its store with `$open` (an async fn returning `Option<(guard, store)>`;
/// `None` skips the case, the guard keeps whatever the store needs alive)
/// and, for the reopening case, reopening it with `$reopen(&guard, store)`.
macro_rules! conformance_suite {
    ($open:path, $reopen:path) => {
        $crate::store::conformance::conformance_suite!(
            @cases $open;
            add_and_remove_pages_change_membership_and_journal,
            a_replayed_page_changes_nothing,
            a_snapshot_removes_the_absent_only_when_complete,
            a_snapshot_restarted_from_page_one_in_a_new_session_replaces_the_old,
            the_journal_keeps_the_latest_change_and_confirm_respects_newer_ones,
            unmatched_members_are_counted_listed_and_forgotten,
            a_leaving_member_is_found_by_distinct_id,
            a_pull_snapshot_finishes_explicitly,
            dead_letters_leave_the_journal_and_replay_the_current_state,
            a_late_page_of_an_abandoned_snapshot_changes_nothing,
            a_member_added_by_a_diff_during_a_snapshot_stays,
            deferred_changes_wait_and_let_the_others_pass,
            one_writer_at_a_time_holds_the_journal,
            replaying_a_dead_letter_keeps_the_cohorts_current_name,
            the_service_takes_the_journal_over_from_a_holder_that_died,
            a_page_listing_a_user_twice_counts_it_once,
            cohorts_are_listed_with_their_counts,
        );

        #[tokio::test]
        async fn the_store_survives_reopening() {
            let Some((guard, store)) = $open().await else {
                return;
            };
            $crate::store::conformance::the_store_survives_reopening(store, |store| {
                $reopen(&guard, store)
            })
            .await;
        }
    };
    (@cases $open:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((_guard, store)) = $open().await else {
                    return;
                };
                $crate::store::conformance::$case(&store).await;
            }
        )+
    };
}

pub(crate) use conformance_suite;

pub(crate) fn key() -> CohortKey {
    CohortKey {
        project_id: "1".to_owned(),
        cohort_id: "7".to_owned(),
    }
}

pub(crate) fn user(id: &str) -> BrazeUser {
    BrazeUser::ExternalId(id.to_owned())
}

/// A page of cohort [`key`] whose members are matched by `distinct_id`.
pub(crate) fn page(
    kind: PageKind,
    session: &str,
    page: u32,
    total: u32,
    ids: &[&str],
) -> MembershipPage {
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

/// The ids of the members of cohort [`key`].
pub(crate) async fn members<S: TestStore>(store: &S) -> Vec<String> {
    store
        .members_of(&key())
        .await
        .into_iter()
        .map(|user| match user {
            BrazeUser::ExternalId(id) | BrazeUser::Email(id) => id,
        })
        .collect()
}

/// The journal, oldest first, as (user id, op).
pub(crate) async fn journal<S: MembershipStore>(store: &S) -> Vec<(String, ChangeOp)> {
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

pub(crate) async fn add_and_remove_pages_change_membership_and_journal<S: TestStore>(store: &S) {
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
    assert_eq!(members(store).await, ["b"]);
    assert_eq!(
        journal(store).await,
        [
            ("b".to_owned(), ChangeOp::Add),
            ("a".to_owned(), ChangeOp::Remove)
        ]
    );
    let status = &store.cohorts().await.unwrap()[0];
    assert_eq!((status.members, status.pending), (1, 2));
    assert_eq!(status.name, "Power users");
}

pub(crate) async fn a_replayed_page_changes_nothing<S: TestStore>(store: &S) {
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
    assert!(members(store).await.is_empty());
}

pub(crate) async fn a_snapshot_removes_the_absent_only_when_complete<S: TestStore>(store: &S) {
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
    assert_eq!(
        members(store).await,
        ["keep", "new1", "new3", "old1", "old2"]
    );
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
    assert_eq!(members(store).await, ["keep", "new1", "new3"]);
    let mut changes = journal(store).await;
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

pub(crate) async fn a_snapshot_restarted_from_page_one_in_a_new_session_replaces_the_old<
    S: TestStore,
>(
    store: &S,
) {
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
    assert_eq!(members(store).await, ["a", "c"]);
}

pub(crate) async fn the_journal_keeps_the_latest_change_and_confirm_respects_newer_ones<
    S: TestStore,
>(
    store: &S,
) {
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
    assert_eq!(journal(store).await, [("a".to_owned(), ChangeOp::Remove)]);
    let remove = store.due_changes(10).await.unwrap();
    store.confirm(&remove).await.unwrap();
    assert!(journal(store).await.is_empty());
    assert!(
        store.cohorts().await.unwrap()[0]
            .last_confirmed_ms
            .is_some()
    );
}

pub(crate) async fn unmatched_members_are_counted_listed_and_forgotten<S: TestStore>(store: &S) {
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

pub(crate) async fn a_leaving_member_is_found_by_distinct_id<S: TestStore>(store: &S) {
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
    assert!(members(store).await.is_empty());
}

pub(crate) async fn a_pull_snapshot_finishes_explicitly<S: TestStore>(store: &S) {
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
    assert_eq!(members(store).await, ["b"]);
    // An empty cohort: a pull without any page empties it.
    let outcome = store.finish_snapshot(&key(), "pull-2").await.unwrap();
    assert_eq!(outcome.removed, 1);
    assert!(members(store).await.is_empty());
}

pub(crate) async fn dead_letters_leave_the_journal_and_replay_the_current_state<S: TestStore>(
    store: &S,
) {
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
    assert!(journal(store).await.is_empty());
    let letters = store.all_dead_letters().await;
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].reason, "refused_by_braze");
    assert_eq!(letters[0].detail, "bad user");
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].cohort, key());
    assert_eq!(letters[0].cohort_name, "Power users");
    assert_eq!(store.cohorts().await.unwrap()[0].dead_letters, 2);
    // `b` left meanwhile: replaying journals a remove for it, not the add.
    store
        .apply_page(page(PageKind::Remove, "s2", 1, 1, &["b"]))
        .await
        .unwrap();
    store
        .confirm(&store.due_changes(10).await.unwrap())
        .await
        .unwrap();
    let replayed = store.replay_all_dead_letters().await;
    assert_eq!(replayed, 2);
    let mut changes = journal(store).await;
    changes.sort();
    assert_eq!(
        changes,
        [
            ("a".to_owned(), ChangeOp::Add),
            ("b".to_owned(), ChangeOp::Remove)
        ]
    );
    assert!(store.all_dead_letters().await.is_empty());
}

/// `reopen` closes the store it is given and opens it again (a restart).
pub(crate) async fn the_store_survives_reopening<S, F, Fut>(store: S, reopen: F)
where
    S: TestStore,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = S>,
{
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    let store = reopen(store).await;
    assert_eq!(members(&store).await, ["a"]);
    assert_eq!(journal(&store).await, [("a".to_owned(), ChangeOp::Add)]);
    let outcome = store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    assert!(outcome.replayed);
}

pub(crate) async fn a_late_page_of_an_abandoned_snapshot_changes_nothing<S: TestStore>(store: &S) {
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
    assert_eq!(members(store).await, ["a1", "a2", "b1", "b3"]);
    // Page 3 of the abandoned session a arrives late: acknowledged, ignored.
    let outcome = store
        .apply_page(page(PageKind::Snapshot, "a", 3, 3, &["x"]))
        .await
        .unwrap();
    assert!(outcome.stale && !outcome.snapshot_completed, "{outcome:?}");
    assert_eq!(members(store).await, ["a1", "a2", "b1", "b3"]);
    // And finishing a session that is not the open one does nothing.
    let outcome = store.finish_snapshot(&key(), "a").await.unwrap();
    assert!(outcome.stale);
    assert_eq!(members(store).await, ["a1", "a2", "b1", "b3"]);
}

pub(crate) async fn a_member_added_by_a_diff_during_a_snapshot_stays<S: TestStore>(store: &S) {
    let mut first = page(PageKind::Snapshot, "pull-1", 1, 1, &["a"]);
    first.total_pages = None;
    store.apply_page(first).await.unwrap();
    // The webhook adds `late` while the pull is still reading.
    store
        .apply_page(page(PageKind::Add, "hook", 1, 1, &["late"]))
        .await
        .unwrap();
    store.finish_snapshot(&key(), "pull-1").await.unwrap();
    assert_eq!(members(store).await, ["a", "late"]);
}

pub(crate) async fn deferred_changes_wait_and_let_the_others_pass<S: TestStore>(store: &S) {
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a", "b"]))
        .await
        .unwrap();
    let changes = store.due_changes(10).await.unwrap();
    assert_eq!(changes[0].user, user("a"), "oldest first, in page order");
    store.defer(&changes[..1], now_ms() + 60_000).await.unwrap();
    assert_eq!(journal(store).await, [("b".to_owned(), ChangeOp::Add)]);
    store.defer(&changes[..1], 0).await.unwrap();
    let due = store.due_changes(10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].attempts, 2);
    assert_eq!(due[0].seq, changes[0].seq, "a deferral keeps the seq");
}

pub(crate) async fn one_writer_at_a_time_holds_the_journal<S: TestStore>(store: &S) {
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

pub(crate) async fn replaying_a_dead_letter_keeps_the_cohorts_current_name<S: TestStore>(
    store: &S,
) {
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
    store.replay_all_dead_letters().await;
    assert_eq!(store.cohorts().await.unwrap()[0].name, "Renamed");
    let due = store.due_changes(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].cohort_name, "Renamed");
}

pub(crate) async fn the_service_takes_the_journal_over_from_a_holder_that_died<S: TestStore>(
    store: &S,
) {
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

pub(crate) async fn a_page_listing_a_user_twice_counts_it_once<S: TestStore>(store: &S) {
    let outcome = store
        .apply_page(page(PageKind::Snapshot, "s1", 1, 1, &["a", "b", "a"]))
        .await
        .unwrap();
    assert_eq!(outcome.added, 2);
    let outcome = store
        .apply_page(page(PageKind::Remove, "s2", 1, 1, &["a", "a"]))
        .await
        .unwrap();
    assert_eq!(outcome.removed, 1);
    assert_eq!(members(store).await, ["b"]);
    assert_eq!(store.cohorts().await.unwrap()[0].members, 1);
}

pub(crate) async fn cohorts_are_listed_with_their_counts<S: TestStore>(store: &S) {
    let mut other = page(PageKind::Add, "o1", 1, 1, &["x", "y", "z"]);
    other.cohort = CohortKey {
        project_id: "1".to_owned(),
        cohort_id: "9".to_owned(),
    };
    other.cohort_name = "Other".to_owned();
    store.apply_page(other).await.unwrap();
    store
        .apply_page(page(PageKind::Add, "s1", 1, 1, &["a"]))
        .await
        .unwrap();
    store
        .record_error(&key(), Some("Braze: down".to_owned()))
        .await
        .unwrap();
    store
        .record_braze_name(&key(), "Power users")
        .await
        .unwrap();
    let cohorts = store.cohorts().await.unwrap();
    assert_eq!(cohorts.len(), 2);
    assert_eq!(cohorts[0].cohort, key());
    assert_eq!((cohorts[0].members, cohorts[0].pending), (1, 1));
    assert_eq!(cohorts[0].last_error.as_deref(), Some("Braze: down"));
    assert_eq!(cohorts[0].braze_name.as_deref(), Some("Power users"));
    assert!(cohorts[0].last_sync_ms.is_some());
    assert_eq!(cohorts[1].name, "Other");
    assert_eq!((cohorts[1].members, cohorts[1].pending), (3, 3));
    assert_eq!(cohorts[1].last_error, None);
    store.record_error(&key(), None).await.unwrap();
    assert_eq!(store.cohorts().await.unwrap()[0].last_error, None);
    // A cohort the store does not know is not created by a note.
    let unknown = CohortKey {
        project_id: "2".to_owned(),
        cohort_id: "1".to_owned(),
    };
    store
        .record_error(&unknown, Some("x".to_owned()))
        .await
        .unwrap();
    assert_eq!(store.cohorts().await.unwrap().len(), 2);
}
