//! Profile updates shared by the integration and the contract tests: one of
//! each `/engage` operation, with both flags used once.

use mixpanel_client::{ProfileOperation, ProfileUpdate};
use serde_json::{Map, Value, json};

/// A JSON object literal as a property map.
pub(crate) fn properties(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

/// `u1` to `u8`: `$set` (ignoring time), `$set_once`, `$add`, `$union`,
/// `$append`, `$remove`, `$unset`, `$delete` (ignoring aliases).
pub(crate) fn one_of_each_operation() -> Vec<ProfileUpdate> {
    let mut ignoring_time = ProfileUpdate::new(
        "u1",
        ProfileOperation::Set(properties(json!({"$email": "a@example.com", "tier": 2}))),
    );
    ignoring_time.ignore_time = true;
    let mut delete_ignoring_alias = ProfileUpdate::new("u8", ProfileOperation::Delete);
    delete_ignoring_alias.ignore_alias = true;
    vec![
        ignoring_time,
        ProfileUpdate::new(
            "u2",
            ProfileOperation::SetOnce(properties(json!({"first_seen": "2026-11-28"}))),
        ),
        ProfileUpdate::new(
            "u3",
            ProfileOperation::Add(properties(json!({"coins": 13, "debt": -2.5}))),
        ),
        ProfileUpdate::new(
            "u4",
            ProfileOperation::Union(properties(json!({"tags": ["a", 1]}))),
        ),
        ProfileUpdate::new(
            "u5",
            ProfileOperation::Append(properties(json!({"visits": {"page": "/"}}))),
        ),
        ProfileUpdate::new(
            "u6",
            ProfileOperation::Remove(properties(json!({"tags": "a"}))),
        ),
        ProfileUpdate::new(
            "u7",
            ProfileOperation::Unset(vec!["$email".to_owned(), "tier".to_owned()]),
        ),
        delete_ignoring_alias,
    ]
}
