//! Tests of the identity rules.

use serde_json::json;

use super::*;

fn member(distinct_id: Option<&str>, properties: serde_json::Value) -> Member {
    Member {
        distinct_id: distinct_id.map(str::to_owned),
        properties: properties.as_object().cloned().unwrap_or_default(),
    }
}

#[test]
fn distinct_id_is_the_external_id() {
    let rule = IdentityRule::DistinctId;
    assert_eq!(
        rule.resolve(&member(Some("u1"), json!({}))),
        Ok(BrazeUser::ExternalId("u1".to_owned()))
    );
    assert_eq!(
        rule.resolve(&member(None, json!({}))),
        Err(UnmatchedReason::NoDistinctId)
    );
    assert_eq!(
        rule.resolve(&member(Some("  "), json!({}))),
        Err(UnmatchedReason::NoDistinctId)
    );
    let long = "x".repeat(MAX_EXTERNAL_ID_BYTES + 1);
    assert_eq!(
        rule.resolve(&member(Some(&long), json!({}))),
        Err(UnmatchedReason::IdTooLong)
    );
    assert_eq!(
        rule.resolve(&member(Some("a\u{0}b"), json!({}))),
        Err(UnmatchedReason::ControlCharacters)
    );
}

#[test]
fn a_property_with_or_without_its_dollar() {
    let rule = IdentityRule::Property("$braze_external_id".to_owned());
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"$braze_external_id": "b-1"}))),
        Ok(BrazeUser::ExternalId("b-1".to_owned()))
    );
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"braze_external_id": 42}))),
        Ok(BrazeUser::ExternalId("42".to_owned()))
    );
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"other": "x"}))),
        Err(UnmatchedReason::NoProperty)
    );
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"$braze_external_id": null}))),
        Err(UnmatchedReason::NoProperty)
    );
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"$braze_external_id": {"a": 1}}))),
        Err(UnmatchedReason::NotText)
    );
}

#[test]
fn email_from_either_spelling_lowercased() {
    let rule = IdentityRule::Email;
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"email": "Ada@Example.com"}))),
        Ok(BrazeUser::Email("ada@example.com".to_owned()))
    );
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"$email": "b@example.com"}))),
        Ok(BrazeUser::Email("b@example.com".to_owned()))
    );
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"email": ""}))),
        Err(UnmatchedReason::NoEmail)
    );
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({"email": "not an email"}))),
        Err(UnmatchedReason::InvalidEmail)
    );
    assert_eq!(
        rule.resolve(&member(Some("d"), json!({}))),
        Err(UnmatchedReason::NoEmail)
    );
}

#[test]
fn rules_round_trip_through_their_spelling() {
    for rule in [
        IdentityRule::DistinctId,
        IdentityRule::Email,
        IdentityRule::Property("$braze_external_id".to_owned()),
    ] {
        assert_eq!(IdentityRule::parse(&rule.as_config()), Some(rule));
    }
    assert_eq!(IdentityRule::parse("property:"), None);
    assert_eq!(IdentityRule::parse("phone"), None);
}

#[test]
fn reasons_round_trip_through_their_names() {
    for reason in UnmatchedReason::ALL {
        assert_eq!(UnmatchedReason::from_name(reason.as_str()), Some(reason));
    }
}
