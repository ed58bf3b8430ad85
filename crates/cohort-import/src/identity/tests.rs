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

#[test]
fn external_ids_up_to_987_bytes_are_accepted() {
    let rule = IdentityRule::DistinctId;
    // 987 bytes exactly, in multi-byte characters: the limit is in bytes.
    let longest = format!("{}é", "x".repeat(MAX_EXTERNAL_ID_BYTES - 2));
    assert_eq!(longest.len(), 987);
    assert_eq!(
        rule.resolve(&member(Some(&longest), json!({}))),
        Ok(BrazeUser::ExternalId(longest.clone()))
    );
    let one_more = format!("{longest}x");
    assert_eq!(
        rule.resolve(&member(Some(&one_more), json!({}))),
        Err(UnmatchedReason::IdTooLong)
    );
    // The same limit holds for an id read from a property.
    let rule = IdentityRule::Property("braze_id".to_owned());
    assert_eq!(
        rule.resolve(&member(None, json!({"braze_id": longest}))),
        Ok(BrazeUser::ExternalId(longest.clone()))
    );
    assert_eq!(
        rule.resolve(&member(None, json!({"braze_id": one_more}))),
        Err(UnmatchedReason::IdTooLong)
    );
}

#[test]
fn ids_are_sent_as_given_but_blank_or_control_ones_are_not() {
    let rule = IdentityRule::Property("braze_id".to_owned());
    // Not trimmed: Braze's external_id is the exact text.
    assert_eq!(
        rule.resolve(&member(None, json!({"braze_id": " b-1 "}))),
        Ok(BrazeUser::ExternalId(" b-1 ".to_owned()))
    );
    assert_eq!(
        rule.resolve(&member(None, json!({"braze_id": " \t"}))),
        Err(UnmatchedReason::NoProperty)
    );
    assert_eq!(
        rule.resolve(&member(None, json!({"braze_id": "b\n1"}))),
        Err(UnmatchedReason::ControlCharacters)
    );
    assert_eq!(
        rule.resolve(&member(None, json!({"braze_id": 1.5}))),
        Ok(BrazeUser::ExternalId("1.5".to_owned()))
    );
    for not_text in [json!(true), json!(["b-1"]), json!({"id": "b-1"})] {
        assert_eq!(
            rule.resolve(&member(None, json!({ "braze_id": not_text }))),
            Err(UnmatchedReason::NotText),
            "{not_text}"
        );
    }
}

#[test]
fn a_property_without_its_dollar_is_found_with_one() {
    let rule = IdentityRule::Property("braze_id".to_owned());
    assert_eq!(
        rule.resolve(&member(None, json!({"$braze_id": "b-2"}))),
        Ok(BrazeUser::ExternalId("b-2".to_owned()))
    );
    // The exact name wins over the other spelling.
    assert_eq!(
        rule.resolve(&member(
            None,
            json!({"$braze_id": "b-2", "braze_id": "b-3"})
        )),
        Ok(BrazeUser::ExternalId("b-3".to_owned()))
    );
}

#[test]
fn an_email_needs_an_at_sign_and_no_spaces_or_control_characters() {
    let rule = IdentityRule::Email;
    let resolve = |email: &str| rule.resolve(&member(Some("d"), json!({ "$email": email })));
    assert_eq!(
        resolve("  Ada.Lovelace+mp@Example.COM "),
        Ok(BrazeUser::Email("ada.lovelace+mp@example.com".to_owned()))
    );
    for invalid in [
        "ada.example.com",
        "ada lovelace@example.com",
        "ada@example.com\u{a0}x",
        "ada\u{7}@example.com",
        "ada@exa\u{0}mple.com",
    ] {
        assert_eq!(
            resolve(invalid),
            Err(UnmatchedReason::InvalidEmail),
            "{invalid:?}"
        );
    }
    assert_eq!(resolve(" \t "), Err(UnmatchedReason::NoEmail));
    // At most Braze's 987 bytes, as for an external id.
    let local = "a".repeat(MAX_EXTERNAL_ID_BYTES - "@example.com".len());
    let longest = format!("{local}@example.com");
    assert_eq!(longest.len(), MAX_EXTERNAL_ID_BYTES);
    assert_eq!(resolve(&longest), Ok(BrazeUser::Email(longest.clone())));
    assert_eq!(
        resolve(&format!("a{longest}")),
        Err(UnmatchedReason::InvalidEmail)
    );
    // `$email` first, `email` otherwise; a number is not an address.
    assert_eq!(
        rule.resolve(&member(
            None,
            json!({"$email": "first@example.com", "email": "second@example.com"})
        )),
        Ok(BrazeUser::Email("first@example.com".to_owned()))
    );
    assert_eq!(
        rule.resolve(&member(
            None,
            json!({"$email": null, "email": "b@example.com"})
        )),
        Ok(BrazeUser::Email("b@example.com".to_owned()))
    );
    assert_eq!(
        rule.resolve(&member(None, json!({"email": 42}))),
        Err(UnmatchedReason::InvalidEmail)
    );
    assert_eq!(
        rule.resolve(&member(None, json!({"email": ["a@example.com"]}))),
        Err(UnmatchedReason::NotText)
    );
}

#[test]
fn rules_are_read_from_their_configuration_spelling() {
    let parse = IdentityRule::parse;
    assert_eq!(
        parse("mixpanel_distinct_id"),
        Some(IdentityRule::DistinctId)
    );
    assert_eq!(parse(" distinct_id "), Some(IdentityRule::DistinctId));
    assert_eq!(parse("email"), Some(IdentityRule::Email));
    assert_eq!(
        parse("property: $braze_external_id "),
        Some(IdentityRule::Property("$braze_external_id".to_owned()))
    );
    for refused in ["", "Email", "property", "property:  ", "prop:x", "$email"] {
        assert_eq!(parse(refused), None, "{refused:?}");
    }
    assert_eq!(IdentityRule::DistinctId.as_config(), "mixpanel_distinct_id");
    assert_eq!(IdentityRule::Email.as_config(), "email");
    assert_eq!(
        IdentityRule::Property("$braze_external_id".to_owned()).as_config(),
        "property:$braze_external_id"
    );
    assert_eq!(IdentityRule::default(), IdentityRule::DistinctId);
}

#[test]
fn a_pull_asks_for_the_property_the_rule_reads() {
    assert!(IdentityRule::DistinctId.output_properties().is_empty());
    assert_eq!(IdentityRule::Email.output_properties(), ["$email"]);
    assert_eq!(
        IdentityRule::Property("$braze_external_id".to_owned()).output_properties(),
        ["$braze_external_id"]
    );
}

#[test]
fn reasons_have_fixed_snake_case_names() {
    let names: Vec<String> = UnmatchedReason::ALL
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        names,
        [
            "no_distinct_id",
            "no_property",
            "no_email",
            "invalid_email",
            "id_too_long",
            "not_text",
            "control_characters",
        ]
    );
    for reason in UnmatchedReason::ALL {
        assert_eq!(reason.as_str(), reason.to_string());
    }
    assert_eq!(UnmatchedReason::from_name("No_Email"), None);
    assert_eq!(UnmatchedReason::from_name(""), None);
}
