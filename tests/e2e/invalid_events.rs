//! Invalid events (spec rule 7): each is rejected with its reason and kept
//! whole in the rejects file, and never stops the valid events around it.

use serde_json::{Value, json};

use crate::harness::{self, email_open, envelope, http_event, transform};

/// A valid Email Open, then a mutation of it that must be invalid for `reason`.
fn case(reason: &'static str, mutate: impl FnOnce(&mut Value)) -> (&'static str, Value) {
    let mut event = email_open("b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e", "ana.souza");
    mutate(&mut event);
    (reason, event)
}

fn remove(event: &mut Value, key: &str) {
    event.as_object_mut().expect("an object").remove(key);
}

fn custom_event(properties: Value) -> Value {
    http_event(
        "users.behaviors.CustomEvent",
        "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f",
        json!("ana.souza"),
        properties,
    )
}

fn cases() -> Vec<(&'static str, Value)> {
    vec![
        ("not_an_object", json!(42)),
        ("not_an_object", json!("users.messages.email.Open")),
        (
            "not_an_object",
            json!([{"event_type": "users.messages.email.Open"}]),
        ),
        ("not_an_object", Value::Null),
        case("missing_event_type", |event| remove(event, "event_type")),
        case("missing_event_type", |event| {
            event["event_type"] = Value::Null
        }),
        case("invalid_event_type", |event| event["event_type"] = json!(7)),
        case("invalid_event_type", |event| {
            event["event_type"] = json!("")
        }),
        case("invalid_event_type", |event| {
            event["event_type"] = json!(["users.messages.email.Open"])
        }),
        case("missing_id", |event| remove(event, "id")),
        case("missing_id", |event| event["id"] = Value::Null),
        case("invalid_id", |event| event["id"] = json!(123_456)),
        case("invalid_id", |event| event["id"] = json!("")),
        case("invalid_id", |event| event["id"] = json!({"uuid": "x"})),
        case("missing_time", |event| remove(event, "time")),
        case("missing_time", |event| event["time"] = Value::Null),
        case("invalid_time", |event| {
            event["time"] = json!(1_736_512_345.5)
        }),
        case("invalid_time", |event| event["time"] = json!("1736512345")),
        case("invalid_time", |event| {
            event["time"] = json!("2025-01-10T12:32:25Z")
        }),
        case("invalid_time", |event| event["time"] = json!(true)),
        case("invalid_user", |event| event["user"] = json!("ana.souza")),
        case("invalid_user", |event| event["user"] = json!(["ana.souza"])),
        case("invalid_user", |event| {
            event["user"]["external_user_id"] = json!(48_213)
        }),
        case("invalid_user", |event| {
            event["user"]["device_id"] = json!({"id": "d"})
        }),
        case("invalid_properties", |event| {
            event["properties"] = json!([1, 2])
        }),
        case("invalid_properties", |event| {
            event["properties"] = json!(17)
        }),
        case("invalid_properties", |event| {
            event["properties"] = json!(false)
        }),
        (
            "missing_custom_event_name",
            custom_event(json!({"custom_properties": {"a": 1}})),
        ),
        (
            "missing_custom_event_name",
            custom_event(json!({"name": null})),
        ),
        (
            "missing_custom_event_name",
            custom_event(json!({"name": ""})),
        ),
        (
            "missing_custom_event_name",
            custom_event(json!({"name": 12})),
        ),
    ]
}

#[test]
fn each_invalid_event_is_rejected_with_its_reason() {
    for (reason, event) in cases() {
        let res = transform(&envelope(std::slice::from_ref(&event)));
        res.assert_success();
        assert!(
            res.stdout.is_empty(),
            "{reason}: nothing is sent for {event}\n{}",
            res.stdout
        );
        let rejects = res.reject_lines();
        assert_eq!(rejects.len(), 1, "{reason}: {event}");
        let reject = &rejects[0];
        assert_eq!(reject["outcome"], "invalid", "{reject}");
        assert_eq!(reject["reason"], reason, "for {event}: {reject}");
        assert_eq!(reject["event"], event, "the event is kept whole: {reject}");
        assert_eq!(reject["line"], 1, "{reject}");
        assert!(
            reject["detail"]
                .as_str()
                .is_some_and(|detail| !detail.is_empty()),
            "a detail for people: {reject}"
        );
        assert_eq!(res.summary(), (1, 0, 0, 1), "{reason}");
        assert!(
            res.stderr.contains(reason),
            "the summary counts {reason}:\n{}",
            res.stderr
        );
    }
}

#[test]
fn invalid_events_never_stop_their_batch() {
    let cases = cases();
    let mut events = Vec::new();
    let mut n_valid = 0;
    for (idx, (_, invalid)) in cases.iter().enumerate() {
        events.push(email_open(
            &format!("d3e4f5a6-b7c8-4d9e-8f0a-{idx:012}"),
            "ana.souza",
        ));
        n_valid += 1;
        events.push(invalid.clone());
    }
    let res = transform(&envelope(&events));
    res.assert_success();
    let mapped = res.events();
    assert_eq!(
        mapped.len(),
        n_valid,
        "every valid event is sent\n{}",
        res.stderr
    );
    for (idx, event) in mapped.iter().enumerate() {
        harness::assert_mixpanel_event(event);
        assert_eq!(
            event["properties"]["$insert_id"],
            format!("d3e4f5a6-b7c8-4d9e-8f0a-{idx:012}"),
            "order kept"
        );
    }
    let rejects = res.reject_lines();
    let reasons: Vec<&str> = rejects
        .iter()
        .map(|reject| reject["reason"].as_str().expect("a reason"))
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(reason, _)| *reason).collect();
    assert_eq!(reasons, expected);
    let n_events = events.len() as u64;
    assert_eq!(
        res.summary(),
        (n_events, n_valid as u64, 0, cases.len() as u64)
    );
}

#[test]
fn an_envelope_whose_events_is_not_an_array_is_one_invalid_event() {
    // `{"events": 5}` is not an envelope, so it is judged as a single event.
    let res = transform("{\"events\": 5}\n");
    res.assert_success();
    let rejects = res.reject_lines();
    assert_eq!(rejects.len(), 1, "{}", res.rejects);
    assert_eq!(rejects[0]["outcome"], "invalid");
    assert_eq!(rejects[0]["reason"], "missing_event_type");
}
