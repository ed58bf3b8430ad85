//! Tests of the writer's pure parts: merging, chunking, dates.

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
