//! Unit tests for the event parser.

use std::borrow::Cow;
use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::{
    Batch, BatchError, Event, EventType, EventTypeName, FieldLocation, InvalidEvent, InvalidReason,
    NestedProperties, Property, Shape,
};

// Helpers.

fn parse(text: &str) -> Event<'_> {
    match Event::parse(text) {
        Ok(event) => event,
        Err(invalid) => panic!("expected a valid event, got {invalid}\ninput: {text}"),
    }
}

fn parse_err(text: &str) -> InvalidEvent {
    match Event::parse(text) {
        Ok(event) => panic!("expected an invalid event, got {event:?}\ninput: {text}"),
        Err(invalid) => invalid,
    }
}

fn value_of(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).expect("a RawValue is valid JSON")
}

/// Properties as `[key, value]` pairs, values parsed, in order.
fn pairs(list: &[Property<'_>]) -> Value {
    Value::Array(
        list.iter()
            .map(|property| json!([property.key, value_of(&property.value)]))
            .collect(),
    )
}

/// Like [`pairs`], sorted by key, for comparisons across shapes.
fn sorted_pairs(list: &[Property<'_>]) -> Value {
    let mut items: Vec<(String, String)> = list
        .iter()
        .map(|property| {
            (
                property.key.to_string(),
                value_of(&property.value).to_string(),
            )
        })
        .collect();
    items.sort();
    Value::Array(
        items
            .into_iter()
            .map(|(key, value)| json!([key, serde_json::from_str::<Value>(&value).unwrap()]))
            .collect(),
    )
}

fn nested(nested: &Option<NestedProperties<'_>>) -> Value {
    match nested {
        None => Value::Null,
        Some(NestedProperties::Object(list)) => json!({ "object": sorted_pairs(list) }),
        Some(NestedProperties::Undecodable(raw)) => json!({ "undecodable": value_of(raw) }),
    }
}

/// Everything about an event except its wire shape and the HTTP-only extras.
fn logical(event: &Event<'_>) -> Value {
    json!({
        "event_type": event.event_type.as_str(),
        "known": event.event_type.known().map(EventType::name),
        "id": event.id,
        "time": event.time,
        "user_id": event.user.user_id,
        "external_user_id": event.user.external_user_id,
        "device_id": event.user.device_id,
        "timezone": event.user.timezone,
        "properties": sorted_pairs(&event.properties),
        "custom_event_name": event.custom_event_name,
        "custom_properties": nested(&event.custom_properties),
        "purchase_properties": nested(&event.purchase_properties),
    })
}

// Both wire shapes.

#[test]
fn http_and_storage_custom_events_are_the_same_event() {
    let http = r#"{"event_type":"users.behaviors.CustomEvent","id":"ev-1","time":1732792800,
"user":{"user_id":"65f1","external_user_id":"cust-1","device_id":"dev-1","timezone":"Europe/Paris"},
"properties":{"app_id":"app-1","platform":"ios","name":"Added to cart",
"custom_properties":{"sku":"A-1","qty":2,"tags":["x",{"y":null}],"gone":null}}}"#;
    let storage = r#"{"event_type":"users.behaviors.CustomEvent","id":"ev-1","time":1732792800,
"user_id":"65f1","external_user_id":"cust-1","device_id":"dev-1","timezone":"Europe/Paris",
"app_id":"app-1","platform":"ios","name":"Added to cart",
"properties":"{\"sku\":\"A-1\",\"qty\":2,\"tags\":[\"x\",{\"y\":null}],\"gone\":null}"}"#;
    let http = parse(http);
    let storage = parse(storage);
    assert_eq!(http.shape, Shape::Http);
    assert_eq!(storage.shape, Shape::Storage);
    assert_eq!(logical(&http), logical(&storage));
    assert_eq!(
        logical(&http),
        json!({
            "event_type": "users.behaviors.CustomEvent",
            "known": "users.behaviors.CustomEvent",
            "id": "ev-1",
            "time": 1732792800,
            "user_id": "65f1",
            "external_user_id": "cust-1",
            "device_id": "dev-1",
            "timezone": "Europe/Paris",
            "properties": [["app_id", "app-1"], ["platform", "ios"]],
            "custom_event_name": "Added to cart",
            "custom_properties": {"object": [
                ["gone", null], ["qty", 2], ["sku", "A-1"], ["tags", ["x", {"y": null}]]
            ]},
            "purchase_properties": null,
        })
    );
    assert!(http.extra.is_empty());
    assert!(storage.extra.is_empty());
}

#[test]
fn http_and_storage_purchases_are_the_same_event() {
    let http = r#"{"event_type":"users.behaviors.Purchase","id":"p-1","time":1700000000,
"user":{"external_user_id":"cust-2"},
"properties":{"product_id":"sku-9","price":9.990,"currency":"EUR",
"purchase_properties":{"color":"red","size":{"eu":42}}}}"#;
    let storage = r#"{"event_type":"users.behaviors.Purchase","id":"p-1","time":1700000000,
"external_user_id":"cust-2","product_id":"sku-9","price":9.990,"currency":"EUR",
"properties":"{\"color\":\"red\",\"size\":{\"eu\":42}}"}"#;
    let http = parse(http);
    let storage = parse(storage);
    assert_eq!(http.shape, Shape::Http);
    assert_eq!(storage.shape, Shape::Storage);
    assert_eq!(logical(&http), logical(&storage));
    assert_eq!(
        logical(&http)["purchase_properties"],
        json!({"object": [["color", "red"], ["size", {"eu": 42}]]})
    );
    assert_eq!(logical(&http)["custom_properties"], Value::Null);
    assert_eq!(http.custom_event_name, None);
    // The number's text is kept as written, in both shapes.
    for event in [&http, &storage] {
        let price = event.properties.iter().find(|p| p.key == "price").unwrap();
        assert_eq!(price.value.get(), "9.990");
    }
}

#[test]
fn http_and_storage_plain_events_are_the_same_event() {
    let http = r#"{"event_type":"users.messages.email.Click","id":"c-1","time":5,
"user":{"user_id":"u","external_user_id":"cust-3","timezone":"UTC"},
"properties":{"campaign_name":"Winter sale","url":"https://shop.example/"}}"#;
    let storage = r#"{"url":"https://shop.example/","timezone":"UTC","campaign_name":"Winter sale",
"external_user_id":"cust-3","user_id":"u","time":5,"id":"c-1","event_type":"users.messages.email.Click"}"#;
    let http = parse(http);
    let storage = parse(storage);
    assert_eq!(storage.shape, Shape::Storage);
    assert_eq!(logical(&http), logical(&storage));
    assert_eq!(
        http.event_type,
        EventTypeName::Known(EventType::MessagesEmailClick)
    );
    assert_eq!(
        pairs(&http.properties),
        json!([
            ["campaign_name", "Winter sale"],
            ["url", "https://shop.example/"]
        ])
    );
}

#[test]
fn a_string_properties_on_another_type_is_an_ordinary_property() {
    let event = parse(
        r#"{"event_type":"users.messages.email.Open","id":"o-1","time":1,"properties":"{\"a\":1}"}"#,
    );
    assert_eq!(event.shape, Shape::Storage);
    assert!(event.custom_properties.is_none());
    assert!(event.purchase_properties.is_none());
    assert_eq!(
        pairs(&event.properties),
        json!([["properties", "{\"a\":1}"]])
    );
}

// Absent and null.

#[test]
fn absent_and_null_user_fields_are_the_same() {
    for field in ["user_id", "external_user_id", "device_id", "timezone"] {
        let base = r#""event_type":"users.behaviors.app.SessionStart","id":"s-1","time":1"#;
        let http_absent = format!(r#"{{{base},"user":{{}},"properties":{{}}}}"#);
        let http_null = format!(r#"{{{base},"user":{{"{field}":null}},"properties":{{}}}}"#);
        let storage_absent = format!(r#"{{{base}}}"#);
        let storage_null = format!(r#"{{{base},"{field}":null}}"#);
        let expected = logical(&parse(&http_absent));
        for text in [&http_null, &storage_absent, &storage_null] {
            let event = parse(text);
            assert_eq!(logical(&event), expected, "{field}: {text}");
            let user = &event.user;
            assert!(
                user.user_id.is_none()
                    && user.external_user_id.is_none()
                    && user.device_id.is_none()
                    && user.timezone.is_none(),
                "{text}"
            );
            assert!(user.extra.is_empty(), "{text}");
            assert!(event.properties.is_empty(), "{text}");
        }
    }
}

#[test]
fn absent_and_null_user_and_properties_are_the_same() {
    let base = r#""event_type":"users.behaviors.Uninstall","id":"u-1","time":7"#;
    let texts = [
        format!("{{{base}}}"),
        format!(r#"{{{base},"user":null}}"#),
        format!(r#"{{{base},"properties":null}}"#),
        format!(r#"{{{base},"user":null,"properties":null}}"#),
    ];
    let expected = logical(&parse(&texts[0]));
    for text in &texts {
        let event = parse(text);
        assert_eq!(logical(&event), expected, "{text}");
        assert_eq!(event.shape, Shape::Storage, "{text}");
        assert!(event.extra.is_empty());
    }
    assert_eq!(expected["properties"], json!([]));
    assert_eq!(expected["external_user_id"], Value::Null);
}

#[test]
fn a_null_property_value_is_kept_for_the_mapper_to_drop() {
    let event = parse(
        r#"{"event_type":"users.messages.email.Open","id":"o-1","time":1,"properties":{"a":null,"b":1}}"#,
    );
    assert_eq!(event.properties.len(), 2);
    assert!(event.properties[0].is_null());
    assert!(!event.properties[1].is_null());
}

// Unknown fields and types.

#[test]
fn unknown_fields_are_kept() {
    let event = parse(
        r#"{"event_type":"users.messages.email.Open","id":"o-1","time":1,"brand_new_top":{"x":[1]},
"user":{"external_user_id":"c","user_alias":{"label":"l"}},
"properties":{"campaign_name":"c","brand_new_property":true}}"#,
    );
    assert_eq!(event.shape, Shape::Http);
    assert_eq!(pairs(&event.extra), json!([["brand_new_top", {"x": [1]}]]));
    assert_eq!(
        pairs(&event.user.extra),
        json!([["user_alias", {"label": "l"}]])
    );
    assert_eq!(
        pairs(&event.properties),
        json!([["campaign_name", "c"], ["brand_new_property", true]])
    );
    // In the storage shape an unknown top-level field is a property.
    let storage = parse(
        r#"{"event_type":"users.messages.email.Open","id":"o-1","time":1,"brand_new_top":[2]}"#,
    );
    assert!(storage.extra.is_empty());
    assert_eq!(pairs(&storage.properties), json!([["brand_new_top", [2]]]));
}

#[test]
fn unknown_event_types_are_kept_by_name() {
    for name in [
        "users.messages.carrierpigeon.Send",
        "users.messages.email.click",
        "users.messages.email.Click ",
        " ",
        "caf\u{e9}",
    ] {
        let text = json!({"event_type": name, "id": "x", "time": 1}).to_string();
        let event = parse(&text);
        assert_eq!(event.event_type, EventTypeName::Other(Cow::Borrowed(name)));
        assert_eq!(event.event_type.as_str(), name);
        assert_eq!(event.event_type.known(), None);
        assert_eq!(event.event_type.to_string(), name);
    }
    let known = parse(r#"{"event_type":"users.messages.email.Cl\u0069ck","id":"x","time":1}"#);
    assert_eq!(
        known.event_type,
        EventTypeName::Known(EventType::MessagesEmailClick)
    );
    assert_eq!(known.event_type.to_string(), "users.messages.email.Click");
}

// Invalid events.

#[test]
fn invalid_events_say_why() {
    const E: &str = r#""event_type":"users.messages.email.Open""#;
    const I: &str = r#""id":"x""#;
    const T: &str = r#""time":1"#;
    const C: &str = r#""event_type":"users.behaviors.CustomEvent","id":"x","time":1"#;
    let cases: Vec<(String, InvalidReason, &str)> = vec![
        ("not json".into(), InvalidReason::InvalidJson, "expected"),
        ("".into(), InvalidReason::InvalidJson, "EOF"),
        ("{\"event_type\":".into(), InvalidReason::InvalidJson, "EOF"),
        (
            format!("{{{E},{I},{T}}} trailing"),
            InvalidReason::InvalidJson,
            "trailing",
        ),
        (
            "[1,2]".into(),
            InvalidReason::NotAnObject,
            "event is not a JSON object",
        ),
        (
            "\"text\"".into(),
            InvalidReason::NotAnObject,
            "event is not a JSON object",
        ),
        (
            "null".into(),
            InvalidReason::NotAnObject,
            "event is not a JSON object",
        ),
        (
            "12".into(),
            InvalidReason::NotAnObject,
            "event is not a JSON object",
        ),
        (
            format!("{{{I},{T}}}"),
            InvalidReason::MissingEventType,
            "event has no event_type",
        ),
        (
            format!("{{\"event_type\":null,{I},{T}}}"),
            InvalidReason::MissingEventType,
            "event has no event_type",
        ),
        (
            format!("{{\"event_type\":5,{I},{T}}}"),
            InvalidReason::InvalidEventType,
            "event_type must be a string, found an integer",
        ),
        (
            format!("{{\"event_type\":[\"a\"],{I},{T}}}"),
            InvalidReason::InvalidEventType,
            "event_type must be a string, found an array",
        ),
        (
            format!("{{\"event_type\":{{}},{I},{T}}}"),
            InvalidReason::InvalidEventType,
            "event_type must be a string, found an object",
        ),
        (
            format!("{{\"event_type\":\"\",{I},{T}}}"),
            InvalidReason::InvalidEventType,
            "event_type must be a non-empty string, found an empty string",
        ),
        (
            format!("{{{E},{T}}}"),
            InvalidReason::MissingId,
            "event has no id",
        ),
        (
            format!("{{{E},\"id\":null,{T}}}"),
            InvalidReason::MissingId,
            "event has no id",
        ),
        (
            format!("{{{E},\"id\":42,{T}}}"),
            InvalidReason::InvalidId,
            "id must be a string, found an integer",
        ),
        (
            format!("{{{E},\"id\":true,{T}}}"),
            InvalidReason::InvalidId,
            "id must be a string, found a boolean",
        ),
        (
            format!("{{{E},\"id\":\"\",{T}}}"),
            InvalidReason::InvalidId,
            "id must be a non-empty string, found an empty string",
        ),
        (
            format!("{{{E},{I}}}"),
            InvalidReason::MissingTime,
            "event has no time",
        ),
        (
            format!("{{{E},{I},\"time\":null}}"),
            InvalidReason::MissingTime,
            "event has no time",
        ),
        (
            format!("{{{E},{I},\"time\":1732792800.5}}"),
            InvalidReason::InvalidTime,
            "time must be an integer of UNIX seconds, found a non-integer number",
        ),
        (
            format!("{{{E},{I},\"time\":1732792800.0}}"),
            InvalidReason::InvalidTime,
            "found a non-integer number",
        ),
        (
            format!("{{{E},{I},\"time\":1.7e9}}"),
            InvalidReason::InvalidTime,
            "found a non-integer number",
        ),
        (
            format!("{{{E},{I},\"time\":\"1732792800\"}}"),
            InvalidReason::InvalidTime,
            "time must be an integer of UNIX seconds, found a string",
        ),
        (
            format!("{{{E},{I},\"time\":18446744073709551616}}"),
            InvalidReason::InvalidTime,
            "found a non-integer number",
        ),
        (
            format!("{{{E},{I},\"time\":9223372036854775808}}"),
            InvalidReason::InvalidTime,
            "found a non-integer number",
        ),
        (
            format!("{{{E},{I},\"time\":-9223372036854775809}}"),
            InvalidReason::InvalidTime,
            "found a non-integer number",
        ),
        (
            format!("{{{E},{I},\"time\":false}}"),
            InvalidReason::InvalidTime,
            "found a boolean",
        ),
        (
            format!("{{{E},{I},{T},\"user\":\"cust-1\"}}"),
            InvalidReason::InvalidUser,
            "user must be an object, found a string",
        ),
        (
            format!("{{{E},{I},{T},\"user\":[1]}}"),
            InvalidReason::InvalidUser,
            "user must be an object, found an array",
        ),
        (
            format!("{{{E},{I},{T},\"user\":7}}"),
            InvalidReason::InvalidUser,
            "user must be an object, found a number",
        ),
        (
            format!("{{{E},{I},{T},\"user\":true}}"),
            InvalidReason::InvalidUser,
            "user must be an object, found a boolean",
        ),
        (
            format!("{{{E},{I},{T},\"user\":{{\"external_user_id\":42}}}}"),
            InvalidReason::InvalidUser,
            "external_user_id must be a string or null, found an integer",
        ),
        (
            format!("{{{E},{I},{T},\"user\":{{\"user_id\":{{}}}}}}"),
            InvalidReason::InvalidUser,
            "user_id must be a string or null, found an object",
        ),
        (
            format!("{{{E},{I},{T},\"user\":{{\"device_id\":1.5}}}}"),
            InvalidReason::InvalidUser,
            "device_id must be a string or null, found a non-integer number",
        ),
        (
            format!("{{{E},{I},{T},\"user\":{{\"timezone\":[]}}}}"),
            InvalidReason::InvalidUser,
            "timezone must be a string or null, found an array",
        ),
        (
            format!("{{{E},{I},{T},\"external_user_id\":42}}"),
            InvalidReason::InvalidUser,
            "external_user_id must be a string or null, found an integer",
        ),
        (
            format!("{{{E},{I},{T},\"timezone\":false}}"),
            InvalidReason::InvalidUser,
            "timezone must be a string or null, found a boolean",
        ),
        (
            format!("{{{E},{I},{T},\"properties\":5}}"),
            InvalidReason::InvalidProperties,
            "properties must be an object, found a number",
        ),
        (
            format!("{{{E},{I},{T},\"properties\":[{{\"a\":1}}]}}"),
            InvalidReason::InvalidProperties,
            "properties must be an object, found an array",
        ),
        (
            format!("{{{E},{I},{T},\"properties\":true}}"),
            InvalidReason::InvalidProperties,
            "properties must be an object, found a boolean",
        ),
        (
            format!("{{{C},\"properties\":{{}}}}"),
            InvalidReason::MissingCustomEventName,
            "a custom event needs a name",
        ),
        (
            format!("{{{C}}}"),
            InvalidReason::MissingCustomEventName,
            "a custom event needs a name",
        ),
        (
            format!("{{{C},\"properties\":{{\"name\":null}}}}"),
            InvalidReason::MissingCustomEventName,
            "a custom event needs a name",
        ),
        (
            format!("{{{C},\"properties\":{{\"name\":42}}}}"),
            InvalidReason::MissingCustomEventName,
            "a custom event's name must be a string, found an integer",
        ),
        (
            format!("{{{C},\"properties\":{{\"name\":\"\"}}}}"),
            InvalidReason::MissingCustomEventName,
            "a custom event's name must not be empty",
        ),
        (
            format!("{{{C},\"name\":\"\",\"properties\":\"{{}}\"}}"),
            InvalidReason::MissingCustomEventName,
            "a custom event's name must not be empty",
        ),
    ];
    let mut seen = BTreeSet::new();
    for (text, reason, detail) in &cases {
        let invalid = parse_err(text);
        assert_eq!(invalid.reason, *reason, "{text}: {}", invalid.detail);
        assert!(
            invalid.detail.contains(detail),
            "{text}: detail {:?} should contain {detail:?}",
            invalid.detail
        );
        assert_eq!(
            invalid.to_string(),
            format!("invalid event ({}): {}", reason.as_str(), invalid.detail)
        );
        seen.insert(invalid.reason);
    }
    let all: BTreeSet<InvalidReason> = InvalidReason::ALL.into_iter().collect();
    assert_eq!(seen, all, "every reason is produced by some input");
}

#[test]
fn the_first_problem_in_check_order_is_reported() {
    // event_type, then id, then time, then user, then properties, then name.
    let cases = [
        (
            r#"{"event_type":1,"id":2,"time":"x"}"#,
            InvalidReason::InvalidEventType,
        ),
        (
            r#"{"event_type":"a","id":2,"time":"x"}"#,
            InvalidReason::InvalidId,
        ),
        (
            r#"{"event_type":"a","id":"b","time":"x","user":5}"#,
            InvalidReason::InvalidTime,
        ),
        (
            r#"{"event_type":"a","id":"b","time":1,"user":5,"properties":5}"#,
            InvalidReason::InvalidUser,
        ),
        (
            r#"{"event_type":"users.behaviors.CustomEvent","id":"b","time":1,"properties":5}"#,
            InvalidReason::InvalidProperties,
        ),
    ];
    for (text, reason) in cases {
        assert_eq!(parse_err(text).reason, reason, "{text}");
    }
}

#[test]
fn invalid_reason_names_are_distinct_snake_case() {
    let names: BTreeSet<&str> = InvalidReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), InvalidReason::ALL.len());
    for reason in InvalidReason::ALL {
        let name = reason.as_str();
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        assert_eq!(reason.to_string(), name);
    }
    assert_eq!(
        InvalidReason::MissingCustomEventName.as_str(),
        "missing_custom_event_name"
    );
}

#[test]
fn valid_edge_values_are_accepted() {
    let event = parse(r#"{"event_type":"users.messages.email.Open","id":" ","time":-1}"#);
    assert_eq!(event.id, " ");
    assert_eq!(event.time, -1);
    let event = parse(
        r#"  {"event_type":"users.messages.email.Open","id":"x","time":9223372036854775807}  "#,
    );
    assert_eq!(event.time, i64::MAX);
    let event =
        parse(r#"{"event_type":"users.messages.email.Open","id":"x","time":-9223372036854775808}"#);
    assert_eq!(event.time, i64::MIN);
}

#[test]
fn the_last_of_duplicate_keys_wins() {
    let event = parse(
        r#"{"event_type":"users.behaviors.CustomEvent","id":"a","id":"b","time":1,"time":2,
"properties":{"name":"first","name":"second","x":1}}"#,
    );
    assert_eq!(event.id, "b");
    assert_eq!(event.time, 2);
    assert_eq!(event.custom_event_name.as_deref(), Some("second"));
    assert_eq!(pairs(&event.properties), json!([["x", 1]]));
}

// Escapes and borrowing.

#[test]
fn escaped_keys_and_strings_are_decoded() {
    let text = r#"{"event_type":"users.behaviors.CustomEvent","\u0069d":"ev\u002d1","time":1,
"user":{"external_user_id":"caf\u00e9","device_\u0069d":"d\"q"},
"properties":{"n\u0061me":"caf\u00e9 \ud83d\ude00","caf\u00e9":"caf\u00e9","plain":"x",
"custom_properties":{"\u00fcber":"\u00e9t\u00e9"}}}"#;
    let event = parse(text);
    assert_eq!(event.id, "ev-1");
    assert_eq!(event.external_user_id(), Some("café"));
    assert_eq!(event.user.device_id.as_deref(), Some("d\"q"));
    assert_eq!(event.custom_event_name.as_deref(), Some("café 😀"));
    assert_eq!(event.properties.len(), 2);
    assert_eq!(event.properties[0].key, "café");
    // Values stay JSON text, escapes included, and decode to the same string.
    assert_eq!(event.properties[0].value.get(), r#""caf\u00e9""#);
    assert_eq!(value_of(&event.properties[0].value), json!("café"));
    assert_eq!(
        nested(&event.custom_properties),
        json!({"object": [["über", "été"]]})
    );
    // Strings with escapes are copied; the others borrow from the input.
    assert!(matches!(event.id, Cow::Owned(_)));
    assert!(matches!(event.properties[0].key, Cow::Owned(_)));
    assert!(matches!(event.properties[1].key, Cow::Borrowed("plain")));
    assert!(matches!(event.properties[1].value, Cow::Borrowed(_)));
}

#[test]
fn strings_without_escapes_borrow_from_the_input() {
    let text = r#"{"event_type":"users.messages.email.Open","id":"ev-1","time":1,
"user":{"external_user_id":"cust-1"},"properties":{"campaign_name":"c"}}"#;
    let event = parse(text);
    assert!(matches!(event.id, Cow::Borrowed("ev-1")));
    assert!(matches!(
        event.user.external_user_id,
        Some(Cow::Borrowed("cust-1"))
    ));
    assert!(matches!(event.properties[0].key, Cow::Borrowed(_)));
    assert!(matches!(event.properties[0].value, Cow::Borrowed(_)));
}

#[test]
fn from_raw_reads_batch_elements() {
    let body = r#"{"events":[ {"event_type":"users.messages.email.Open","id":"a","time":1} , 7 ]}"#;
    let batch = Batch::parse(body).unwrap();
    assert_eq!(batch.events.len(), 2);
    let event = Event::from_raw(batch.events[0]).unwrap();
    assert_eq!(event.id, "a");
    assert_eq!(
        Event::from_raw(batch.events[1]).unwrap_err().reason,
        InvalidReason::NotAnObject
    );
}

// Nested custom and purchase properties.

#[test]
fn nested_properties_in_every_form() {
    let cases: &[(&str, Value)] = &[
        (
            r#"{"a":1,"b":{"c":[null]}}"#,
            json!({"object": [["a", 1], ["b", {"c": [null]}]]}),
        ),
        ("{}", json!({"object": []})),
        (
            r#""{\"a\":1,\"b\":null}""#,
            json!({"object": [["a", 1], ["b", null]]}),
        ),
        (
            r#"" {\"a\":\"caf\\u00e9\"} ""#,
            json!({"object": [["a", "café"]]}),
        ),
        (r#""not json""#, json!({"undecodable": "not json"})),
        (r#""[1,2]""#, json!({"undecodable": "[1,2]"})),
        (r#""""#, json!({"undecodable": ""})),
        (r#""{\"a\":1""#, json!({"undecodable": "{\"a\":1"})),
        ("12.5", json!({"undecodable": 12.5})),
        ("[1,{\"a\":2}]", json!({"undecodable": [1, {"a": 2}]})),
        ("true", json!({"undecodable": true})),
        ("null", Value::Null),
        (r#""null""#, Value::Null),
        (r#"" null ""#, Value::Null),
    ];
    for (value, expected) in cases {
        let custom = format!(
            r#"{{"event_type":"users.behaviors.CustomEvent","id":"c","time":1,"properties":{{"name":"n","custom_properties":{value}}}}}"#
        );
        let event = parse(&custom);
        assert_eq!(&nested(&event.custom_properties), expected, "{custom}");
        assert!(event.purchase_properties.is_none());
        assert!(event.properties.is_empty(), "{custom}");

        let purchase = format!(
            r#"{{"event_type":"users.behaviors.Purchase","id":"p","time":1,"properties":{{"purchase_properties":{value}}}}}"#
        );
        let event = parse(&purchase);
        assert_eq!(&nested(&event.purchase_properties), expected, "{purchase}");
        assert!(event.custom_properties.is_none());
    }
}

#[test]
fn storage_encoded_properties_in_every_form() {
    let cases: &[(&str, Value)] = &[
        (
            r#""{\"a\":[1,{\"b\":null}]}""#,
            json!({"object": [["a", [1, {"b": null}]]]}),
        ),
        (r#""not json""#, json!({"undecodable": "not json"})),
        (r#""\"a string\"""#, json!({"undecodable": "\"a string\""})),
        (r#""null""#, Value::Null),
    ];
    for (value, expected) in cases {
        let custom = format!(
            r#"{{"event_type":"users.behaviors.CustomEvent","id":"c","time":1,"name":"n","properties":{value}}}"#
        );
        let event = parse(&custom);
        assert_eq!(event.shape, Shape::Storage);
        assert_eq!(&nested(&event.custom_properties), expected, "{custom}");
        let purchase = format!(
            r#"{{"event_type":"users.behaviors.Purchase","id":"p","time":1,"properties":{value}}}"#
        );
        let event = parse(&purchase);
        assert_eq!(&nested(&event.purchase_properties), expected, "{purchase}");
        assert!(event.properties.is_empty());
    }
}

#[test]
fn nested_properties_are_read_for_any_type() {
    let event = parse(
        r#"{"event_type":"users.messages.email.Open","id":"o","time":1,"properties":{"custom_properties":{"a":1},"purchase_properties":"{\"b\":2}"}}"#,
    );
    assert_eq!(
        nested(&event.custom_properties),
        json!({"object": [["a", 1]]})
    );
    assert_eq!(
        nested(&event.purchase_properties),
        json!({"object": [["b", 2]]})
    );
    assert!(event.properties.is_empty());
}

// Batches.

fn batch_result(body: &str) -> Result<Vec<Value>, BatchError> {
    Batch::parse(body).map(|batch| batch.events.iter().map(|raw| value_of(raw)).collect())
}

#[test]
fn batch_envelopes() {
    let ok: &[(&str, Value)] = &[
        ("", json!([])),
        (" \n\t\r ", json!([])),
        (r#"{"events":[]}"#, json!([])),
        (" {\"events\" : [ ] } \n", json!([])),
        (
            r#"{"events":[{"a":1},2,"x",null]}"#,
            json!([{"a": 1}, 2, "x", null]),
        ),
        (
            r#"{"meta":{"event_type":1},"events":[{}],"other":[1]}"#,
            json!([{}]),
        ),
        (r#"{"\u0065vents":[1]}"#, json!([1])),
    ];
    for (body, expected) in ok {
        assert_eq!(
            batch_result(body).map(Value::Array).as_ref(),
            Ok(expected),
            "{body:?}"
        );
    }
    let not_envelopes = [
        r#"{"events":5}"#,
        r#"{"events":null}"#,
        r#"{"events":{"a":[]}}"#,
        r#"{"events":"[]"}"#,
        r#"{"events":true}"#,
        r#"{"events":-1.5}"#,
        "{}",
        r#"{"Events":[]}"#,
        r#"[{"event_type":"users.messages.email.Open","id":"a","time":1}]"#,
        "[]",
        "5",
        "\"events\"",
        "null",
        r#"{"event_type":"users.messages.email.Open","events":[{"a":1}]}"#,
        r#"{"events":[{"a":1}],"event_type":null}"#,
        r#"{"event_type":"users.messages.email.Open","id":"a","time":1}"#,
    ];
    for body in not_envelopes {
        assert_eq!(
            batch_result(body),
            Err(BatchError::NotAnEnvelope),
            "{body:?}"
        );
    }
    for body in [
        "not json",
        "{",
        r#"{"events":[1,]}"#,
        r#"{"events":[]} trailing"#,
        r#"{"events":[]}{"events":[]}"#,
        "[1,",
    ] {
        match batch_result(body) {
            Err(BatchError::InvalidJson { message }) => {
                assert!(message.contains("line 1"), "{body:?}: {message}")
            }
            other => panic!("{body:?}: expected InvalidJson, got {other:?}"),
        }
    }
    assert_eq!(
        BatchError::NotAnEnvelope.to_string(),
        "body must be a JSON object with an `events` array"
    );
}

/// Each event's text and parse result, as `Batch::parse` then `Event::from_raw` give them.
fn events_in_two_steps(body: &str) -> Result<Vec<(String, String)>, BatchError> {
    Batch::parse(body).map(|batch| {
        let events = batch.events.iter();
        events
            .map(|raw| (raw.get().to_owned(), format!("{:?}", Event::from_raw(raw))))
            .collect()
    })
}

/// The same from `Batch::parse_events`, which must agree in every case.
fn events_in_one_pass(body: &str) -> Result<Vec<(String, String)>, BatchError> {
    Batch::parse_events(body).map(|events| {
        let events = events.into_iter();
        events
            .map(|parsed| (parsed.raw.to_owned(), format!("{:?}", parsed.event)))
            .collect()
    })
}

#[test]
fn parse_events_agrees_with_the_two_step_path() {
    let event = r#"{"event_type":"users.messages.email.Open","id":"e-1","time":1732792800,"user":{"external_user_id":"u-1"},"properties":{"email_address":"a@example.com"}}"#;
    let bodies = [
        "",
        " \n",
        r#"{"events":[]}"#,
        " {\"events\" : [ ] } \n",
        &format!(r#"{{"events":[{event}]}}"#),
        &format!("\r\n{{ \"events\" :\n[ {event} ,\n\t{event} ]\n}}\n"),
        &format!(r#"{{"events":[{event},{{"id":5}},{{"event_type":"x","id":"a","time":1.5}}]}}"#),
        &format!(r#"{{"events":[{event},2,"x",null]}}"#),
        &format!(r#"{{"events":[{event}],"more":1}}"#),
        &format!(r#"{{"meta":1,"events":[{event}]}}"#),
        &format!(r#"{{"events":[{event},]}}"#),
        &format!(r#"{{"events":[{event}]}} trailing"#),
        &format!(r#"{{"events":[{event}]}}{{}}"#),
        &format!(r#"{{"events":[{event}]"#),
        &format!(r#"{{"events":[{event}"#),
        &format!("{{\"events\":[{event}]}}\u{a0}"),
        &format!("{{\"events\":\u{a0}[{event}]}}"),
        r#"{"events":[{"event_type":"users.messages.email.Open","events":[]}]}"#,
        r#"{"event_type":"users.messages.email.Open","events":[{"a":1}]}"#,
        r#"{"events":[{"a":1}],"event_type":null}"#,
    ];
    for body in bodies {
        assert_eq!(
            events_in_one_pass(body),
            events_in_two_steps(body),
            "{body:?}"
        );
    }
    // The shapes Braze sends do take the single pass, invalid events and all.
    for body in &bodies[2..7] {
        let events = crate::batch::parse_events_in_one_pass(body);
        assert!(events.is_some(), "{body:?}");
    }
}

#[test]
fn only_json_whitespace_makes_an_empty_batch() {
    for body in ["\u{a0}", "\u{b}", " \u{2028} "] {
        assert!(
            matches!(Batch::parse(body), Err(BatchError::InvalidJson { .. })),
            "{body:?}"
        );
        assert_eq!(events_in_one_pass(body), events_in_two_steps(body));
    }
}

#[test]
fn batch_bytes_must_be_utf8() {
    let error = Batch::parse_bytes(b"{\"events\":[\"\xff\"]}").unwrap_err();
    assert_eq!(error, BatchError::InvalidUtf8 { valid_up_to: 12 });
    assert_eq!(error.to_string(), "body is not valid UTF-8 (at byte 12)");
    let error = Batch::parse_bytes(b"\xc3").unwrap_err();
    assert_eq!(error, BatchError::InvalidUtf8 { valid_up_to: 0 });
    let batch = Batch::parse_bytes("{\"events\":[\"café\"]}".as_bytes()).unwrap();
    assert_eq!(batch.events.len(), 1);
    assert!(!batch.is_empty());
    assert!(Batch::parse_bytes(b"").unwrap().is_empty());
}

#[test]
fn count_events_counts_what_parse_splits() {
    let cases: [(&[u8], Result<usize, BatchError>); 7] = [
        (b"", Ok(0)),
        (b" {\"events\":[]} ", Ok(0)),
        (b"{\"events\":[1,{\"a\":[2,3]},\"x\",null]}", Ok(4)),
        (b"{\"other\":[1,2],\"events\":[{}]}", Ok(1)),
        (b"{\"events\":{\"a\":1}}", Err(BatchError::NotAnEnvelope)),
        (
            b"{\"event_type\":\"x\",\"events\":[1]}",
            Err(BatchError::NotAnEnvelope),
        ),
        (b"[1,2]", Err(BatchError::NotAnEnvelope)),
    ];
    for (body, expected) in cases {
        assert_eq!(
            Batch::count_events(body),
            expected,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(matches!(
        Batch::count_events(b"{\"events\":[1,"),
        Err(BatchError::InvalidJson { .. })
    ));
    assert_eq!(
        Batch::count_events(b"\xff"),
        Err(BatchError::InvalidUtf8 { valid_up_to: 0 })
    );
    let million: Vec<u8> = [&b"{\"events\":["[..], &b"1,".repeat(999_999), b"1]}"].concat();
    assert_eq!(Batch::count_events(&million), Ok(1_000_000));
}

// The event type table.

#[test]
fn there_are_94_types_sorted_by_name_and_round_tripping() {
    assert_eq!(EventType::ALL.len(), 94);
    let names: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    for event_type in EventType::ALL {
        assert_eq!(EventType::from_name(event_type.name()), Some(event_type));
        assert!(
            event_type.name().starts_with("users.")
                || event_type.name().starts_with("agentconsole."),
            "{}",
            event_type.name()
        );
        assert_eq!(
            EventTypeName::parse(Cow::Borrowed(event_type.name())),
            EventTypeName::Known(event_type)
        );
    }
    assert_eq!(EventType::from_name("users.messages.email.click"), None);
    assert_eq!(EventType::from_name("users.campaigns.Abort"), None);
    assert_eq!(EventType::from_name(""), None);
    assert_eq!(
        EventType::BehaviorsCustomEvent.name(),
        "users.behaviors.CustomEvent"
    );
}

#[test]
fn every_type_has_sorted_unique_fields_with_id_and_time_on_top() {
    for event_type in EventType::ALL {
        let fields = event_type.fields();
        let name = event_type.name();
        assert!(
            fields.windows(2).all(|w| w[0].name < w[1].name),
            "{name}: fields sorted and unique"
        );
        for field_name in ["id", "time"] {
            let field = event_type
                .field(field_name)
                .unwrap_or_else(|| panic!("{name} has no {field_name}"));
            assert_eq!(field.location, FieldLocation::Top, "{name}.{field_name}");
            assert!(field.required, "{name}.{field_name}");
        }
        for field in fields {
            assert_eq!(event_type.field(field.name), Some(field));
            assert!(event_type.has_field(field.name));
            let user_field = matches!(
                field.name,
                "user_id" | "external_user_id" | "device_id" | "timezone"
            );
            assert_eq!(
                field.location == FieldLocation::User,
                user_field,
                "{name}.{}",
                field.name
            );
        }
        assert!(!event_type.has_field("no_such_field"));
        assert!(!event_type.has_field(""));
    }
}

#[test]
fn only_custom_events_and_purchases_have_nested_properties() {
    for event_type in EventType::ALL {
        let nested: Vec<(&str, FieldLocation)> = event_type
            .fields()
            .iter()
            .filter(|field| {
                matches!(
                    field.location,
                    FieldLocation::CustomProperties | FieldLocation::PurchaseProperties
                )
            })
            .map(|field| (field.name, field.location))
            .collect();
        let expected = match event_type {
            EventType::BehaviorsCustomEvent => {
                vec![("properties", FieldLocation::CustomProperties)]
            }
            EventType::BehaviorsPurchase => vec![("properties", FieldLocation::PurchaseProperties)],
            _ => vec![],
        };
        assert_eq!(nested, expected, "{}", event_type.name());
    }
    let name = EventType::BehaviorsCustomEvent.field("name").unwrap();
    assert_eq!(name.location, FieldLocation::Properties);
    assert!(name.required);
}

// Property tests.

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,8}",
        "\\PC{0,8}",
        "(?s).{0,6}",
        Just("caf\u{e9} \u{1f600}".to_owned()),
        Just("\"\\\u{0}\n".to_owned()),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((arb_string(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

const EVENT_KEYS: &[&str] = &[
    "event_type",
    "id",
    "time",
    "user",
    "properties",
    "name",
    "user_id",
    "external_user_id",
    "device_id",
    "timezone",
    "custom_properties",
    "purchase_properties",
    "events",
];

/// A JSON object that looks like an event: its keys are mostly the ones the
/// parser looks at, with plausible or arbitrary values.
fn arb_event_like() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(EVENT_KEYS).prop_map(str::to_owned),
        1 => arb_string(),
    ];
    let event_type = prop_oneof![
        prop::sample::select(EventType::ALL.to_vec()).prop_map(|t| json!(t.name())),
        Just(json!("users.behaviors.CustomEvent")),
        Just(json!("users.behaviors.Purchase")),
        arb_json(),
    ];
    let value = prop_oneof![
        arb_json(),
        prop::collection::vec((key.clone(), arb_json()), 0..5)
            .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        arb_json().prop_map(|value| Value::String(value.to_string())),
    ];
    (
        event_type,
        prop_oneof![arb_string().prop_map(Value::String), arb_json()],
        prop_oneof![any::<i64>().prop_map(Value::from), arb_json()],
        prop::collection::vec((key, value), 0..6),
    )
        .prop_map(|(event_type, id, time, rest)| {
            let mut object = serde_json::Map::new();
            object.insert("event_type".into(), event_type);
            object.insert("id".into(), id);
            object.insert("time".into(), time);
            for (key, value) in rest {
                object.insert(key, value);
            }
            Value::Object(object)
        })
}

/// What is known about an event from its JSON value alone.
fn check_event(value: &Value, text: &str) {
    let result = Event::parse(text);
    let Some(object) = value.as_object() else {
        assert_eq!(result.unwrap_err().reason, InvalidReason::NotAnObject);
        return;
    };
    match object.get("event_type") {
        None | Some(Value::Null) => {
            assert_eq!(result.unwrap_err().reason, InvalidReason::MissingEventType);
            return;
        }
        Some(Value::String(name)) if !name.is_empty() => {}
        Some(_) => {
            assert_eq!(result.unwrap_err().reason, InvalidReason::InvalidEventType);
            return;
        }
    }
    match result {
        Ok(event) => {
            assert_eq!(
                Some(event.event_type.as_str()),
                object["event_type"].as_str()
            );
            assert_eq!(Some(event.id.as_ref()), object["id"].as_str());
            assert!(!event.id.is_empty());
            assert_eq!(Some(event.time), object["time"].as_i64());
            if event.event_type == EventTypeName::Known(EventType::BehaviorsCustomEvent) {
                assert!(
                    event
                        .custom_event_name
                        .as_deref()
                        .is_some_and(|name| !name.is_empty())
                );
            } else {
                assert!(event.custom_event_name.is_none());
            }
            let http = object.get("user").is_some_and(Value::is_object)
                || object.get("properties").is_some_and(Value::is_object);
            let expected_shape = if http { Shape::Http } else { Shape::Storage };
            assert_eq!(event.shape, expected_shape);
            let external = if http {
                object
                    .get("user")
                    .and_then(|user| user.get("external_user_id"))
            } else {
                object.get("external_user_id")
            };
            assert_eq!(
                event.external_user_id(),
                external.and_then(Value::as_str),
                "{text}"
            );
            for property in event.properties.iter().chain(&event.extra) {
                let _: Value = value_of(&property.value);
            }
        }
        Err(invalid) => {
            assert!(!invalid.detail.is_empty());
            assert_ne!(invalid.reason, InvalidReason::InvalidJson, "{text}");
            assert_ne!(invalid.reason, InvalidReason::NotAnObject, "{text}");
        }
    }
}

/// What is known about a batch body from its JSON value alone.
fn check_batch(value: &Value, text: &str) {
    let result = batch_result(text);
    let events = value
        .as_object()
        .filter(|object| !object.contains_key("event_type"))
        .and_then(|object| object.get("events"))
        .and_then(Value::as_array);
    match events {
        Some(events) => {
            // Parse the expected values from text too, so floats round the same way.
            let events: Vec<Value> = events
                .iter()
                .map(|event| serde_json::from_str(&event.to_string()).unwrap())
                .collect();
            assert_eq!(result, Ok(events), "{text}")
        }
        None => assert_eq!(result, Err(BatchError::NotAnEnvelope), "{text}"),
    }
}

/// Text inserted into valid JSON to probe what the fast parser accepts:
/// each is valid in some places and invalid in others.
const JSON_EDITS: &[&str] = &[
    " ",
    "\n",
    ",",
    ":",
    "]",
    "}",
    "[",
    "{",
    "\"",
    "\\",
    "-",
    "0",
    "01",
    "-0",
    "1.5",
    "1.",
    ".5",
    "1e5",
    "1E-2",
    "99999999999999999999",
    "123456789012345678901234",
    "\\u0041",
    "\\uD83D\\uDE00",
    "\\uD800",
    "\\uDC00x",
    "\\u12",
    "\\x",
    "\\/",
    "\u{1}",
    "\u{7f}",
    "\u{a0}",
    "\u{2028}",
    "nul",
    "tru",
    "true",
    "null",
    "\"a\":1,",
    "[]",
    "{}",
    "\"\":\"\",",
];

/// Every single edit from `JSON_EDITS` at every position of realistic events:
/// wherever serde_json refuses the result, the fast parser must step aside.
#[test]
fn the_fast_parser_agrees_with_serde_json_on_every_single_edit() {
    let http = r#"{"event_type":"users.behaviors.CustomEvent","id":"5b3f2c1e-8a4d","time":1732792800,"user":{"user_id":"65f1","external_user_id":"cust-1","device_id":null,"tz":[1,-2.5,true,false]},"properties":{"name":"Caf\u00e9 \"x\"","custom_properties":{"n":0,"list":[{"a":[]},"\\/"],"o":{}},"app_id":"a1"},"sdk":"9.1"}"#;
    let storage = r#"{"event_type":"users.behaviors.Purchase","id":"p-1","time":5,"external_user_id":"u","properties":"{\"sku\":\"x\"}","price":-0.0}"#;
    // Escaped scalars (read by serde_json inside the fast path), top-level
    // user fields, a name and an encoded string of the storage shape,
    // duplicate keys, a negative 17-digit time.
    let storage_custom = r#"{"event_type":"users.behaviors.CustomEvent","id":"ev\u002d2","time":-12345678901234567,"user_id":"u\"1","external_user_id":null,"device_id":"d\/1","timezone":"Europe/Paris","name":"Caf\u00e9","properties":"{\"k\":[1,{}],\"s\":\"n\\u00e9\"}","dup":1,"dup":[]}"#;
    // Duplicate and escaped user fields, an 18-digit time, custom and
    // purchase properties that are not objects.
    let http_purchase = r#"{"event_type":"users.behaviors.Purchase","id":"p\u00e9","time":123456789012345678,"user":{"external_user_id":"a","external_user_id":"caf\u00e9","user_id":null,"timezone":"UTC","x":{"y":[-0]}},"properties":{"purchase_properties":"{\"sku\":\"\\u00e9\"}","custom_properties":[1,{"a":"b"}],"price":1.5}}"#;
    // Values of the wrong kind where the reader looks at the kind.
    let wrong_kinds = r#"{"event_type":"users.messages.email.Open","id":"i","time":0,"user":"s","properties":[true,null,-2]}"#;
    let wrong_scalars =
        r#"{"event_type":{"a":[1]},"id":[false],"time":"1","user":{"user_id":{"n":null}}}"#;
    let storage_custom_event = parse(storage_custom);
    assert_eq!(
        storage_custom_event.custom_event_name.as_deref(),
        Some("Café")
    );
    assert_eq!(storage_custom_event.user.user_id.as_deref(), Some("u\"1"));
    let http_purchase_event = parse(http_purchase);
    assert_eq!(http_purchase_event.external_user_id(), Some("café"));
    assert!(matches!(
        http_purchase_event.custom_properties,
        Some(NestedProperties::Undecodable(_))
    ));
    assert_eq!(parse_err(wrong_kinds).reason, InvalidReason::InvalidUser);
    assert_eq!(
        parse_err(wrong_scalars).reason,
        InvalidReason::InvalidEventType
    );
    let pretty_value: Value = serde_json::from_str(http).unwrap();
    let pretty = serde_json::to_string_pretty(&pretty_value).unwrap();
    let mut fast = 0;
    for base in [
        http,
        storage,
        pretty.as_str(),
        storage_custom,
        http_purchase,
        wrong_kinds,
        wrong_scalars,
    ] {
        assert!(
            crate::batch::parse_events_in_one_pass(&format!(r#"{{"events":[{base}]}}"#)).is_some()
        );
        let positions = base.char_indices().map(|(idx, _)| idx).chain([base.len()]);
        for at in positions {
            for edit in JSON_EDITS {
                let mut text = base.to_owned();
                text.insert_str(at, edit);
                let mut scanner = crate::scan::Scanner::new(&text);
                fast += usize::from(crate::event::RawEvent::scan_event(&mut scanner).is_some());
                assert_eq!(
                    format!("{:?}", Event::parse(&text)),
                    format!("{:?}", Event::parse_with_serde(&text)),
                    "{text}"
                );
            }
        }
    }
    // Many edits leave valid JSON, which the fast parser must keep reading.
    assert!(fast > 5_000, "only {fast} edited events took the fast path");
}

/// The same for custom and purchase property objects, which are read on
/// their own.
#[test]
fn the_fast_object_reader_agrees_with_serde_json_on_every_single_edit() {
    let base = r#"{"plan":"Caf\u00e9 \"x\"","n":-1.5,"ok":true,"none":null,"list":[{"a":[]},"\\/"],"o":{"p":0}}"#;
    // Numbers around the scanner's 20-character limit, duplicate keys, and
    // strings long enough to be searched eight bytes at a time.
    let long = r#"{"u":18446744073709551615,"i":-9223372036854775808,"d":0.123456789012345678,"s":"abcdefghijklmnop\"q\\r","s":{"t":"0123456789abcdef"}}"#;
    let mut fast = 0;
    for base in [base, long] {
        assert!(crate::event::scan_object(base).is_some(), "{base}");
        for at in base.char_indices().map(|(idx, _)| idx).chain([base.len()]) {
            for edit in JSON_EDITS {
                let mut text = base.to_owned();
                text.insert_str(at, edit);
                if let Some(list) = crate::event::scan_object(&text) {
                    fast += 1;
                    let by_serde = serde_json::from_str::<crate::json::PropertyList<'_>>(&text);
                    let by_serde = by_serde.unwrap_or_else(|error| panic!("{text}: {error}"));
                    assert_eq!(format!("{list:?}"), format!("{:?}", by_serde.0), "{text}");
                }
            }
        }
    }
    assert!(
        fast > 2_000,
        "only {fast} edited objects took the fast path"
    );
}

/// Event texts with `@` standing for a value, one per place where the fast
/// reader looks at values differently.
const VALUE_SLOTS: &[&str] = &[
    r#"{"event_type":@,"id":"a","time":1}"#,
    r#"{"event_type":"x","id":@,"time":1}"#,
    r#"{"event_type":"x","id":"a","time":@}"#,
    r#"{"event_type":"x","id":"a","time":1,"p":@}"#,
    r#"{"event_type":"x","id":"a","time":1,"user":@}"#,
    r#"{"event_type":"x","id":"a","time":1,"user":{"external_user_id":@}}"#,
    r#"{"event_type":"x","id":"a","time":1,"user":{"u":@}}"#,
    r#"{"event_type":"x","id":"a","time":1,"external_user_id":@}"#,
    r#"{"event_type":"x","id":"a","time":1,"properties":@}"#,
    r#"{"event_type":"x","id":"a","time":1,"properties":{"p":@}}"#,
    r#"{"event_type":"x","id":"a","time":1,"properties":{"custom_properties":@}}"#,
    r#"{"event_type":"x","id":"a","time":1,"properties":{"custom_properties":{"k":@}}}"#,
    r#"{"event_type":"users.behaviors.CustomEvent","id":"a","time":1,"properties":{"name":@}}"#,
    r#"{"event_type":"users.behaviors.Purchase","id":"a","time":1,"properties":@}"#,
];

/// Checks one event text both ways, alone and in a batch, and says whether
/// the fast reader took it.
fn agrees_with_serde_json(text: &str) -> bool {
    assert_eq!(
        format!("{:?}", Event::parse(text)),
        format!("{:?}", Event::parse_with_serde(text)),
        "{text}"
    );
    let body = format!("{{\"events\":[{text}]}}");
    assert_eq!(
        events_in_one_pass(&body),
        events_in_two_steps(&body),
        "{body}"
    );
    let mut scanner = crate::scan::Scanner::new(text);
    crate::event::RawEvent::scan_event(&mut scanner).is_some() && scanner.peek().is_none()
}

/// Every value of up to three characters from an alphabet of JSON's
/// troublemakers, in every slot: the systematic complement of the
/// single-edit tests, which only insert into a few events.
#[test]
fn the_fast_parser_agrees_with_serde_json_on_every_short_value_in_every_slot() {
    let alphabet = [
        "\"", "\\", "u", "0", "1", "-", ".", "e", "n", "t", " ", "{", "}", "[", "]", ",", ":",
        "\u{1}", "\u{e9}",
    ];
    let mut values = vec![String::new()];
    let mut start = 0;
    for _ in 0..3 {
        let end = values.len();
        for idx in start..end {
            for piece in alphabet {
                values.push(format!("{}{piece}", values[idx]));
            }
        }
        start = end;
    }
    let mut fast = 0;
    for value in &values {
        for slot in VALUE_SLOTS {
            fast += usize::from(agrees_with_serde_json(&slot.replace('@', value)));
        }
        // What the scanner delimits is one valid JSON value, the same one.
        let mut scanner = crate::scan::Scanner::new(value);
        if let Some(raw) = scanner.raw_value(crate::scan::MAX_EVENT_DEPTH)
            && scanner.peek().is_none()
        {
            let by_serde: &RawValue = serde_json::from_str(value).unwrap();
            assert_eq!(raw, by_serde.get(), "{value:?}");
        }
    }
    assert!(fast > 500, "only {fast} events took the fast path");
}

/// Numbers on both sides of the fast reader's limits (18 digits read
/// directly, 20 characters scanned, `-0`, fractions, leading zeros), in
/// every slot.
#[test]
fn the_fast_parser_agrees_with_serde_json_on_numbers_at_its_limits() {
    let numbers = [
        "0",
        "-0",
        "0.0",
        "-0.0",
        "1.0",
        "-7",
        "99999999999999999",
        "999999999999999999",
        "-999999999999999999",
        "1000000000000000000",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999",
        "-1844674407370955161",
        "123456789.1234567891",
        "0.000000000000000001",
        "100000000000000000000",
        "-18446744073709551616",
        "1234567890.1234567890",
        "00",
        "01",
        "-01",
        "1.",
        ".1",
        "+1",
        "-",
        "1e2",
        "0x1",
    ];
    for number in numbers {
        // The fast reader must take these, or the test proves nothing.
        let short_and_plain = serde_json::from_str::<&RawValue>(number).is_ok()
            && number.len() <= 20
            && !number.contains(['e', 'E']);
        for slot in VALUE_SLOTS {
            let text = slot.replace('@', number);
            let fast = agrees_with_serde_json(&text);
            assert!(fast || !short_and_plain, "{text}");
        }
    }
    let time = |number: &str| {
        Event::parse(&format!(r#"{{"event_type":"x","id":"a","time":{number}}}"#))
            .map(|event| event.time)
            .map_err(|invalid| invalid.detail)
    };
    assert_eq!(time("999999999999999999"), Ok(999_999_999_999_999_999));
    assert_eq!(time("-9223372036854775808"), Ok(i64::MIN));
    for other in ["-0", "9223372036854775808", "18446744073709551616", "1.0"] {
        assert_eq!(
            time(other),
            Err("time must be an integer of UNIX seconds, found a non-integer number".into()),
            "{other}"
        );
    }
}

#[test]
fn the_fast_parser_agrees_with_serde_json_on_deep_nesting() {
    for depth in [1, 97, 98, 99, 100, 101, 125, 126, 127, 128, 129, 200] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for event in [
            format!(r#"{{"event_type":"x","id":"a","time":1,"extra":{nested}}}"#),
            format!(r#"{{"event_type":"x","id":"a","time":1,"properties":{{"p":{nested}}}}}"#),
            format!(r#"{{"event_type":"x","id":"a","time":1,"user":{nested}}}"#),
            format!(r#"{{"event_type":{nested},"id":"a","time":1}}"#),
        ] {
            assert_eq!(
                format!("{:?}", Event::parse(&event)),
                format!("{:?}", Event::parse_with_serde(&event)),
                "depth {depth}"
            );
            let body = format!(r#"{{"events":[{event}]}}"#);
            assert_eq!(
                events_in_one_pass(&body),
                events_in_two_steps(&body),
                "depth {depth}"
            );
        }
    }
}

#[test]
fn borrowed_raw_values_take_the_fast_path() {
    for json in [r#""text""#, "12", "[1,{\"a\":null}]", "{}", "null"] {
        let raw = crate::json::borrow_raw_by_marker(json).expect("serde_json takes the marker");
        assert_eq!(raw.get(), json);
        assert_eq!(raw.get().as_ptr(), json.as_ptr(), "borrowed, not copied");
        // The fallback gives the same value, also borrowed.
        let validated: &RawValue = serde_json::from_str(json).unwrap();
        assert_eq!(validated.get().as_ptr(), json.as_ptr());
        assert_eq!(validated.get().len(), json.len());
    }
}

fn no_persistence() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(no_persistence())]

    #[test]
    fn arbitrary_json_never_panics(value in arb_json(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        check_event(&value, &text);
        check_batch(&value, &text);
        let envelope = json!({ "events": [value] });
        check_batch(&envelope, &envelope.to_string());
    }

    #[test]
    fn arbitrary_event_like_objects_never_panic(value in arb_event_like()) {
        let text = value.to_string();
        check_event(&value, &text);
        let envelope = json!({ "events": [value.clone(), value] });
        let body = envelope.to_string();
        check_batch(&envelope, &body);
        for raw in Batch::parse(&body).unwrap().events {
            let _ = Event::from_raw(raw);
        }
    }

    #[test]
    fn parse_events_agrees_with_the_two_step_path_on_any_batch(
        events in prop::collection::vec(prop_oneof![4 => arb_event_like(), 1 => arb_json()], 0..4),
        pretty in any::<bool>(),
        cut in prop::option::of(0usize..2000),
    ) {
        let envelope = json!({ "events": events });
        let mut body = if pretty {
            serde_json::to_string_pretty(&envelope).unwrap()
        } else {
            envelope.to_string()
        };
        if let Some(cut) = cut {
            let cut = (0..=cut.min(body.len())).rev().find(|idx| body.is_char_boundary(*idx)).unwrap();
            body.truncate(cut);
        }
        prop_assert_eq!(events_in_one_pass(&body), events_in_two_steps(&body), "{}", body);
        prop_assert_eq!(
            Batch::count_events(body.as_bytes()),
            Batch::parse(&body).map(|batch| batch.events.len()),
            "{}", body
        );
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,40}", cut in 0usize..200, value in arb_event_like()) {
        let _ = Event::parse(&text);
        let _ = Batch::parse(&text);
        // A truncated event is not JSON, and says so.
        let full = value.to_string();
        let cut = (0..=cut.min(full.len())).rev().find(|idx| full.is_char_boundary(*idx)).unwrap();
        let truncated = &full[..cut];
        if cut < full.len() {
            let invalid = Event::parse(truncated).unwrap_err();
            prop_assert_eq!(invalid.reason, InvalidReason::InvalidJson);
            let is_invalid_json = matches!(Batch::parse(truncated), Err(BatchError::InvalidJson { .. }));
            prop_assert!(truncated.trim().is_empty() || is_invalid_json);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        prop_assert_eq!(
            Batch::count_events(&bytes),
            Batch::parse_bytes(&bytes).map(|batch| batch.events.len())
        );
        match Batch::parse_bytes(&bytes) {
            Err(BatchError::InvalidUtf8 { valid_up_to }) => {
                prop_assert!(std::str::from_utf8(&bytes).is_err());
                prop_assert!(std::str::from_utf8(&bytes[..valid_up_to]).is_ok());
            }
            _ => prop_assert!(std::str::from_utf8(&bytes).is_ok()),
        }
    }
}

proptest! {
    #![proptest_config(no_persistence())]
    #[test]
    fn the_fast_parser_agrees_with_serde_json(
        value in arb_event_like(),
        pretty in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(JSON_EDITS)), 0..3),
    ) {
        let mut text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        for (at, edit) in edits {
            // Next to a structural character, where edits matter most.
            let spots: Vec<usize> = text
                .char_indices()
                .filter(|(_, ch)| "{}[],:\"\\0123456789".contains(*ch))
                .flat_map(|(idx, ch)| [idx, idx + ch.len_utf8()])
                .collect();
            let at = if spots.is_empty() { 0 } else { spots[at.index(spots.len())] };
            text.insert_str(at, edit);
        }
        prop_assert_eq!(
            format!("{:?}", Event::parse(&text)),
            format!("{:?}", Event::parse_with_serde(&text)),
            "{}", text
        );
        let body = format!("{{\"events\":[{text},{text}]}}");
        prop_assert_eq!(events_in_one_pass(&body), events_in_two_steps(&body), "{}", body);
        prop_assert_eq!(
            Batch::count_events(body.as_bytes()),
            Batch::parse(&body).map(|batch| batch.events.len()),
            "{}", body
        );
    }
}
