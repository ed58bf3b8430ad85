//! Events that are readable but deliberately not sent, each counted under
//! its reason: users without a usable external id (`no_external_user_id`),
//! types Braze does not export (`not_exported_type`), and types the operator
//! filtered out with `--include-types` / `--exclude-types` (`filtered`).

use serde_json::{Value, json};

use crate::harness::{self, TempDir, email_open, envelope, http_event, transform};

/// Runs `events` (one envelope) and returns, per event, either the mapped
/// event's `distinct_id` or the reject's reason, in input order.
fn outcomes_of(events: &[Value], extra: &[&str]) -> Vec<String> {
    let dir = TempDir::new("skip");
    let path = dir.write("batch.json", envelope(events));
    let res = harness::transform_with(path.to_str().expect("UTF-8 path"), b"", extra);
    res.assert_success();
    let mut mapped = res.events().into_iter();
    let mut rejects = res.reject_lines().into_iter();
    let mut outcomes = Vec::new();
    for event in events {
        // Each input event is either the next mapped event or the next reject.
        let next_reject_is_this = rejects
            .as_slice()
            .first()
            .is_some_and(|reject| reject["event"] == *event);
        if next_reject_is_this {
            let reject = rejects.next().expect("peeked");
            assert_eq!(reject["outcome"], "skipped", "{reject}");
            assert_eq!(reject["line"], 1, "{reject}");
            assert!(
                reject.get("detail").is_none(),
                "a skip has no detail: {reject}"
            );
            outcomes.push(format!(
                "skipped:{}",
                reject["reason"].as_str().expect("a reason")
            ));
        } else {
            let event = mapped
                .next()
                .unwrap_or_else(|| panic!("event neither mapped nor rejected: {event}"));
            harness::assert_mixpanel_event(&event);
            outcomes.push(format!(
                "mapped:{}",
                event["properties"]["distinct_id"]
                    .as_str()
                    .expect("a distinct_id")
            ));
        }
    }
    assert!(
        mapped.next().is_none() && rejects.next().is_none(),
        "more outcomes than events"
    );
    outcomes
}

#[test]
fn placeholder_external_ids_are_skipped() {
    let placeholders = [
        Value::Null,
        json!(""),
        json!("  "),
        json!("null"),
        json!("NULL"),
        json!("Undefined"),
        json!("none"),
        json!("nil"),
        json!("0"),
        json!("-1"),
        json!("anonymous"),
        json!(" Anonymous\t"),
        json!("[]"),
        json!("{}"),
        json!("LMY47D"),
        json!("00000000-0000-0000-0000-000000000000"),
    ];
    let mut events: Vec<Value> = placeholders
        .iter()
        .enumerate()
        .map(|(idx, external_id)| {
            let mut event = email_open(&format!("1d2e3f40-5a6b-4c7d-8e9f-{idx:012}"), "x");
            event["user"]["external_user_id"] = external_id.clone();
            event
        })
        .collect();
    let mut absent = email_open("1d2e3f40-5a6b-4c7d-8e9f-ffffffffffff", "x");
    absent["user"]
        .as_object_mut()
        .expect("user is an object")
        .remove("external_user_id");
    events.push(absent);
    let mut no_user = email_open("1d2e3f40-5a6b-4c7d-8e9f-fffffffffffe", "x");
    no_user.as_object_mut().expect("an object").remove("user");
    events.push(no_user);

    let outcomes = outcomes_of(&events, &[]);
    for (event, outcome) in events.iter().zip(&outcomes) {
        assert_eq!(
            outcome, "skipped:no_external_user_id",
            "external id {}",
            event["user"]["external_user_id"]
        );
    }
}

#[test]
fn ids_that_only_resemble_placeholders_are_real_users_and_sent_unchanged() {
    let real_ids = [
        "0x",
        "null-user",
        "anonymous1",
        "10",
        "00000000-0000-0000-0000-000000000001",
        " ana.souza ",
        "Zoë Ångström",
    ];
    let events: Vec<Value> = real_ids
        .iter()
        .enumerate()
        .map(|(idx, id)| email_open(&format!("2e3f4051-6b7c-4d8e-9fa0-{idx:012}"), id))
        .collect();
    let outcomes = outcomes_of(&events, &[]);
    let expected: Vec<String> = real_ids.iter().map(|id| format!("mapped:{id}")).collect();
    assert_eq!(
        outcomes, expected,
        "distinct_id is the external id, untrimmed"
    );
}

#[test]
fn types_braze_does_not_export_are_skipped() {
    let not_exported = [
        "agentconsole.AgentExecuted",
        "agentconsole.ToolInvocation",
        "users.RandomBucketNumberUpdate",
        "users.UserDeleteRequest",
        "users.UserOrphan",
        "users.profile.Update",
    ];
    let events: Vec<Value> = not_exported
        .iter()
        .enumerate()
        .map(|(idx, event_type)| {
            http_event(
                event_type,
                &format!("3f405162-7c8d-4e9f-a0b1-{idx:012}"),
                json!("ana.souza"),
                json!({"app_group_id": "3f2b8c1d-0e4a-4b7c-9d6e-5a1f2c3b4d5e"}),
            )
        })
        .collect();
    let outcomes = outcomes_of(&events, &[]);
    assert!(
        outcomes
            .iter()
            .all(|outcome| outcome == "skipped:not_exported_type"),
        "{outcomes:?}"
    );
}

#[test]
fn unknown_types_are_sent_under_their_own_name_with_every_property() {
    let event = http_event(
        "users.messages.hologram.Beam",
        "4a5b6c7d-8e9f-4a0b-9c1d-2e3f4a5b6c7d",
        json!("ana.souza"),
        json!({"hologram_id": "h-77", "gender": "F", "os_version": "visionOS 2", "nothing": null}),
    );
    let res = transform(&envelope(&[event]));
    res.assert_success();
    let events = res.events();
    assert_eq!(events.len(), 1, "{}", res.rejects);
    assert_eq!(events[0]["event"], "users.messages.hologram.Beam");
    let properties = harness::assert_mixpanel_event(&events[0]);
    assert_eq!(properties["hologram_id"], "h-77");
    assert_eq!(properties["gender"], "F");
    assert_eq!(properties["$os"], "visionOS 2");
    assert_eq!(
        properties["device_id"],
        "7c1e4b2a-9d3f-4e6a-b8c5-2f1a0d9e3b47"
    );
    assert!(!properties.contains_key("nothing"));
}

/// Email Open, Email Click, push Send and a session start, all for real users.
fn mixed_channel_events() -> Vec<Value> {
    let mut click = email_open("5b6c7d8e-9fa0-4b1c-8d2e-3f4a5b6c7d8e", "ana.souza");
    click["event_type"] = json!("users.messages.email.Click");
    let push = http_event(
        "users.messages.pushnotification.Send",
        "6c7d8e9f-a0b1-4c2d-9e3f-4a5b6c7d8e9f",
        json!("ana.souza"),
        json!({"platform": "ios", "campaign_name": "Café ☕ – 20% off"}),
    );
    let session = http_event(
        "users.behaviors.app.SessionStart",
        "7d8e9fa0-b1c2-4d3e-8f4a-5b6c7d8e9fa0",
        json!("ana.souza"),
        json!({"session_id": "s-1"}),
    );
    vec![
        email_open("4a5b6c7d-8e9f-4a0b-9c1d-000000000001", "ana.souza"),
        click,
        push,
        session,
    ]
}

#[test]
fn include_types_with_a_prefix_pattern_filters_other_types() {
    let events = mixed_channel_events();
    let outcomes = outcomes_of(&events, &["--include-types", "users.messages.email.*"]);
    assert_eq!(
        outcomes,
        [
            "mapped:ana.souza",
            "mapped:ana.souza",
            "skipped:filtered",
            "skipped:filtered"
        ]
    );

    let outcomes = outcomes_of(
        &events,
        &[
            "--include-types",
            "users.behaviors.app.SessionStart,users.messages.email.Click",
        ],
    );
    assert_eq!(
        outcomes,
        [
            "skipped:filtered",
            "mapped:ana.souza",
            "skipped:filtered",
            "mapped:ana.souza"
        ]
    );
}

#[test]
fn exclude_types_filters_and_wins_over_include() {
    let events = mixed_channel_events();
    let outcomes = outcomes_of(&events, &["--exclude-types", "users.messages.email.*"]);
    assert_eq!(
        outcomes,
        [
            "skipped:filtered",
            "skipped:filtered",
            "mapped:ana.souza",
            "mapped:ana.souza"
        ]
    );

    let outcomes = outcomes_of(
        &events,
        &[
            "--include-types",
            "users.messages.email.*,users.messages.pushnotification.Send",
            "--exclude-types",
            "users.messages.email.Open",
        ],
    );
    assert_eq!(
        outcomes,
        [
            "skipped:filtered",
            "mapped:ana.souza",
            "mapped:ana.souza",
            "skipped:filtered"
        ]
    );
}

#[test]
fn skip_reasons_have_a_fixed_precedence() {
    // Not exported beats filtered; filtered beats a missing external id.
    let profile = http_event(
        "users.profile.Update",
        "8e9fa0b1-c2d3-4e4f-9a5b-6c7d8e9fa0b1",
        json!("ana"),
        json!({}),
    );
    let anonymous_open = email_open("9fa0b1c2-d3e4-4f5a-8b6c-7d8e9fa0b1c2", "anonymous");
    let outcomes = outcomes_of(
        &[profile, anonymous_open],
        &[
            "--exclude-types",
            "users.profile.Update,users.messages.email.Open",
        ],
    );
    assert_eq!(outcomes, ["skipped:not_exported_type", "skipped:filtered"]);
}

#[test]
fn an_unmatched_type_pattern_warns_but_runs() {
    let dir = TempDir::new("warn");
    let path = dir.write("batch.json", envelope(&mixed_channel_events()));
    let res = harness::transform_with(
        path.to_str().expect("UTF-8 path"),
        b"",
        &["--include-types", "users.messages.emial.*"],
    );
    res.assert_success();
    assert!(
        res.stderr.contains("warning") && res.stderr.contains("users.messages.emial.*"),
        "{}",
        res.stderr
    );
    assert_eq!(res.summary(), (4, 0, 4, 0));
}
