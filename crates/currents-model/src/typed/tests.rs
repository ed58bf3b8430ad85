//! Tests of the typed conversion: every type from synthetic events in both
//! wire shapes, required and wrongly typed fields, `extra`, unknown types.

use std::borrow::Cow;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{TypedError, TypedEvent};
use crate::{AvroType, Event, EventType, FieldLocation, FieldSpec, NestedProperties};

// Synthetic events built from each type's schema.

const ID: &str = "5b3f2c1e-8a4d-4e2b-9c1a-0f6e7d8c9b0a";
const TIME: i64 = 1_732_792_800;

/// A value of the field's Avro type, distinct per field where it can be.
fn sample(field: &FieldSpec) -> Value {
    match field.avro_type {
        AvroType::String => json!(format!("{}-value", field.name)),
        AvroType::Int | AvroType::Long => json!(field.name.len()),
        AvroType::Float => json!(field.name.len() as f64 + 0.25),
        AvroType::Boolean => json!(field.name.len().is_multiple_of(2)),
        AvroType::StringArray => json!(["first", field.name]),
    }
}

/// What `{:?}` prints for the typed field holding `sample(field)`.
fn sample_debug(field: &FieldSpec) -> String {
    let value = match field.avro_type {
        AvroType::String => format!("{:?}", format!("{}-value", field.name)),
        AvroType::Int | AvroType::Long => format!("{}", field.name.len()),
        AvroType::Float => format!("{:?}", field.name.len() as f64 + 0.25),
        AvroType::Boolean => format!("{}", field.name.len().is_multiple_of(2)),
        AvroType::StringArray => format!("[\"first\", {:?}]", field.name),
    };
    if field.required {
        value
    } else {
        format!("Some({value})")
    }
}

/// An HTTP connector event of `event_type` with every field for which
/// `keep` holds, each set by `value`.
fn http_event(
    event_type: EventType,
    keep: impl Fn(&FieldSpec) -> bool,
    value: impl Fn(&FieldSpec) -> Value,
) -> Value {
    let mut user = Map::new();
    let mut properties = Map::new();
    for field in event_type.fields().iter().filter(|field| keep(field)) {
        match field.location {
            FieldLocation::Top => {}
            FieldLocation::User => {
                user.insert(field.name.into(), value(field));
            }
            FieldLocation::Properties => {
                properties.insert(field.name.into(), value(field));
            }
            FieldLocation::CustomProperties => {
                properties.insert("custom_properties".into(), json!({"sku": "A-1"}));
            }
            FieldLocation::PurchaseProperties => {
                properties.insert("purchase_properties".into(), json!({"size": "M"}));
            }
        }
    }
    json!({
        "event_type": event_type.name(),
        "id": ID,
        "time": TIME,
        "user": user,
        "properties": properties,
    })
}

/// The same event in the storage shape: flat, nested properties encoded.
fn storage_event(event_type: EventType) -> Value {
    let mut object = Map::new();
    object.insert("event_type".into(), json!(event_type.name()));
    object.insert("id".into(), json!(ID));
    object.insert("time".into(), json!(TIME));
    for field in event_type.fields() {
        match field.location {
            FieldLocation::Top => {}
            FieldLocation::User | FieldLocation::Properties => {
                object.insert(field.name.into(), sample(field));
            }
            FieldLocation::CustomProperties => {
                object.insert("properties".into(), json!(r#"{"sku":"A-1"}"#));
            }
            FieldLocation::PurchaseProperties => {
                object.insert("properties".into(), json!(r#"{"size":"M"}"#));
            }
        }
    }
    Value::Object(object)
}

fn full_http_event(event_type: EventType) -> Value {
    http_event(event_type, |_| true, sample)
}

fn typed(text: &str) -> TypedEvent<'_> {
    let event = Event::parse(text).unwrap_or_else(|invalid| panic!("{invalid}\n{text}"));
    event
        .typed()
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
}

fn typed_err(text: &str) -> TypedError {
    let event = Event::parse(text).unwrap_or_else(|invalid| panic!("{invalid}\n{text}"));
    match event.typed() {
        Ok(typed) => panic!("expected an error, got {typed:?}\n{text}"),
        Err(error) => error,
    }
}

/// The Rust name of a field in the typed struct.
fn rust_field(event_type: EventType, field: &FieldSpec) -> &'static str {
    match field.location {
        FieldLocation::CustomProperties => "custom_properties",
        FieldLocation::PurchaseProperties => "purchase_properties",
        _ => {
            assert!(
                !matches!(field.name, "type" | "match" | "ref" | "move" | "fn"),
                "{}: update this test for keyword field {}",
                event_type.name(),
                field.name
            );
            field.name
        }
    }
}

/// Checks that `typed` is `event_type`'s variant and that every field of
/// the type holds the sample value, by the derived `Debug` output.
fn assert_all_fields(event_type: EventType, typed: &TypedEvent<'_>) {
    assert_eq!(typed.event_type(), Some(event_type));
    assert_eq!(typed.id(), ID);
    assert_eq!(typed.time(), TIME);
    let debug = format!("{typed:?}");
    let variant = format!("{event_type:?}");
    assert!(
        debug.starts_with(&format!(
            "{variant}({variant} {{ id: {ID:?}, time: {TIME}, "
        )) && debug.ends_with(", extra: [] })"),
        "{debug}"
    );
    for field in event_type.fields() {
        let expected = match field.location {
            FieldLocation::Top => continue,
            FieldLocation::CustomProperties | FieldLocation::PurchaseProperties => {
                format!(
                    " {}: Some(Object([Property {{ key: ",
                    rust_field(event_type, field)
                )
            }
            _ => format!(
                " {}: {},",
                rust_field(event_type, field),
                sample_debug(field)
            ),
        };
        assert!(
            debug.contains(&expected),
            "{}: expected `{expected}` in {debug}",
            event_type.name()
        );
    }
}

// Every type.

#[test]
fn every_type_converts_from_an_http_event_with_every_field() {
    for event_type in EventType::ALL {
        let text = full_http_event(event_type).to_string();
        assert_all_fields(event_type, &typed(&text));
    }
}

#[test]
fn every_type_converts_from_a_storage_event_with_every_field() {
    for event_type in EventType::ALL {
        let text = storage_event(event_type).to_string();
        assert_all_fields(event_type, &typed(&text));
    }
}

#[test]
fn every_type_converts_with_only_its_required_fields() {
    for event_type in EventType::ALL {
        let text = http_event(event_type, |field| field.required, sample).to_string();
        let typed = typed(&text);
        assert_eq!(typed.event_type(), Some(event_type));
        let debug = format!("{typed:?}");
        for field in event_type.fields() {
            let rust = rust_field(event_type, field);
            if field.location == FieldLocation::Top {
                continue;
            }
            let expected = if field.required {
                match field.location {
                    FieldLocation::CustomProperties | FieldLocation::PurchaseProperties => {
                        format!(" {rust}: Some(")
                    }
                    _ => format!(" {rust}: {},", sample_debug(field)),
                }
            } else {
                format!(" {rust}: None,")
            };
            assert!(
                debug.contains(&expected),
                "expected `{expected}` in {debug}"
            );
        }
    }
}

#[test]
fn every_required_field_is_required() {
    let mut checked = 0;
    for event_type in EventType::ALL {
        for missing in event_type.fields() {
            let skip = !missing.required
                // `id` and `time` are checked by the parser.
                || missing.location == FieldLocation::Top
                // Kept as they arrived, `None` when the event has none.
                || matches!(
                    missing.location,
                    FieldLocation::CustomProperties | FieldLocation::PurchaseProperties
                )
                // The parser rejects a custom event without a name.
                || (event_type == EventType::BehaviorsCustomEvent && missing.name == "name");
            if skip {
                continue;
            }
            let expected = TypedError::Missing {
                event_type,
                field: missing.name,
            };
            let absent = http_event(event_type, |field| field != missing, sample);
            assert_eq!(typed_err(&absent.to_string()), expected);
            let null = http_event(
                event_type,
                |_| true,
                |field| {
                    if field == missing {
                        Value::Null
                    } else {
                        sample(field)
                    }
                },
            );
            assert_eq!(typed_err(&null.to_string()), expected);
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} required fields checked");
}

#[test]
fn every_property_field_rejects_the_wrong_json_type() {
    for event_type in EventType::ALL {
        for wrong in event_type.fields() {
            let is_custom_event_name =
                event_type == EventType::BehaviorsCustomEvent && wrong.name == "name";
            if wrong.location != FieldLocation::Properties || is_custom_event_name {
                continue;
            }
            let (value, expected, found) = match wrong.avro_type {
                AvroType::String => (json!(12), "a string", "a number"),
                AvroType::Int | AvroType::Long => (json!("12"), "an integer", "a string"),
                AvroType::Float => (json!(true), "a number", "a boolean"),
                AvroType::Boolean => (json!("true"), "a boolean", "a string"),
                AvroType::StringArray => (json!({"a": 1}), "an array of strings", "an object"),
            };
            let text = http_event(
                event_type,
                |_| true,
                |field| {
                    if field == wrong {
                        value.clone()
                    } else {
                        sample(field)
                    }
                },
            )
            .to_string();
            let error = typed_err(&text);
            assert_eq!(
                error,
                TypedError::WrongType {
                    event_type,
                    field: wrong.name,
                    expected,
                    found,
                }
            );
            assert_eq!(error.event_type(), event_type);
            assert_eq!(error.field(), wrong.name);
        }
    }
}

// Typed access, by hand.

const EMAIL_CLICK: &str = r#"{"event_type":"users.messages.email.Click","id":"ev-1","time":1732792800,
"user":{"user_id":"65f1","external_user_id":"cust-1","timezone":"Europe/Paris"},
"properties":{"email_address":"ada@example.com","url":"https://shop.example/sale",
"is_amp":false,"suspected_bot_click_reason":["ip","ua"],"campaign_id":null}}"#;

#[test]
fn fields_are_typed_and_borrow_from_the_input() {
    let TypedEvent::MessagesEmailClick(click) = typed(EMAIL_CLICK) else {
        panic!("expected an email click");
    };
    assert_eq!(click.id, "ev-1");
    assert_eq!(click.time, 1_732_792_800);
    assert_eq!(click.user_id, "65f1");
    assert_eq!(click.external_user_id.as_deref(), Some("cust-1"));
    assert_eq!(click.timezone.as_deref(), Some("Europe/Paris"));
    assert_eq!(click.email_address, "ada@example.com");
    assert_eq!(click.url.as_deref(), Some("https://shop.example/sale"));
    assert_eq!(click.is_amp, Some(false));
    assert_eq!(click.campaign_id, None);
    assert_eq!(click.canvas_id, None);
    let reasons = click.suspected_bot_click_reason.expect("reasons are set");
    assert_eq!(reasons, ["ip", "ua"]);
    assert!(
        reasons
            .iter()
            .all(|reason| matches!(reason, Cow::Borrowed(_)))
    );
    assert!(matches!(click.email_address, Cow::Borrowed(_)));
    assert!(matches!(click.url, Some(Cow::Borrowed(_))));
    assert!(click.extra.is_empty());
}

#[test]
fn escaped_strings_are_decoded() {
    let text = r#"{"event_type":"users.messages.email.Click","id":"ev-1","time":1,
"user":{"user_id":"u"},"properties":{"email_address":"a\"b\u00e9@example.com",
"suspected_bot_click_reason":["tab\there"]}}"#;
    let TypedEvent::MessagesEmailClick(click) = typed(text) else {
        panic!("expected an email click");
    };
    assert_eq!(click.email_address, "a\"bé@example.com");
    assert!(matches!(click.email_address, Cow::Owned(_)));
    assert_eq!(
        click.suspected_bot_click_reason.as_deref(),
        Some(&[Cow::Borrowed("tab\there")][..])
    );
}

#[test]
fn a_string_that_is_not_unicode_is_an_error() {
    // The parser keeps property values as unchecked text; a lone surrogate
    // escape only fails when the string is decoded.
    let text = r#"{"event_type":"users.messages.email.Click","id":"ev-1","time":1,
"user":{"user_id":"u"},"properties":{"email_address":"a\ud800b"}}"#;
    assert_eq!(
        typed_err(text).to_string(),
        "users.messages.email.Click: field email_address must be a string, \
         found a string with an invalid escape"
    );
}

#[test]
fn numbers_are_typed_by_avro_type() {
    // `users.behaviors.Purchase`: `price` is a float.
    let purchase = |price: &str| {
        format!(
            r#"{{"event_type":"users.behaviors.Purchase","id":"p-1","time":1,"user":{{"user_id":"u"}},
"properties":{{"product_id":"sku","currency":"EUR","price":{price}}}}}"#
        )
    };
    for (price, expected) in [("3", 3.0), ("19.99", 19.99), ("-0.5", -0.5), ("1e2", 100.0)] {
        let text = purchase(price);
        let TypedEvent::BehaviorsPurchase(typed) = typed(&text) else {
            panic!("expected a purchase");
        };
        assert_eq!(typed.price, expected, "{price}");
    }
    assert_eq!(
        typed_err(&purchase("1e400")).to_string(),
        "users.behaviors.Purchase: field price must be a number, found a number out of range"
    );

    // Any type with an optional int property will do.
    let (event_type, field) = EventType::ALL
        .iter()
        .find_map(|event_type| {
            event_type
                .fields()
                .iter()
                .find(|field| {
                    field.location == FieldLocation::Properties
                        && field.avro_type == AvroType::Int
                        && !field.required
                })
                .map(|field| (*event_type, field))
        })
        .expect("some type has an optional int property");
    // The number's exact text, which a `Value` would normalise.
    let with = |number: &str| {
        let mut event = http_event(event_type, |field| field.required, sample);
        event["properties"][field.name] = json!("NUMBER");
        event.to_string().replace(r#""NUMBER""#, number)
    };
    for (number, expected) in [("0", 0), ("-12", -12), ("9223372036854775807", i64::MAX)] {
        let debug = format!("{:?}", typed(&with(number)));
        assert!(
            debug.contains(&format!(" {}: Some({expected}),", field.name)),
            "{debug}"
        );
    }
    for (number, found) in [
        ("1.5", "a non-integer number"),
        ("2.0", "a non-integer number"),
        ("1e3", "a non-integer number"),
        ("9223372036854775808", "an integer out of range"),
    ] {
        assert_eq!(
            typed_err(&with(number)),
            TypedError::WrongType {
                event_type,
                field: field.name,
                expected: "an integer",
                found,
            },
            "{number}"
        );
    }
}

#[test]
fn arrays_must_hold_only_strings() {
    let text = r#"{"event_type":"users.messages.email.Click","id":"ev-1","time":1,
"user":{"user_id":"u"},"properties":{"email_address":"a@b.c",
"suspected_bot_click_reason":["ip",null]}}"#;
    assert_eq!(
        typed_err(text).to_string(),
        "users.messages.email.Click: field suspected_bot_click_reason must be an array of \
         strings, found an array with an element that is not a string"
    );
}

#[test]
fn errors_name_the_type_and_the_field() {
    let wrong = EMAIL_CLICK.replace(r#""ada@example.com""#, "42");
    assert_eq!(
        typed_err(&wrong).to_string(),
        "users.messages.email.Click: field email_address must be a string, found a number"
    );
    let missing = EMAIL_CLICK.replace(r#""ada@example.com""#, "null");
    assert_eq!(
        typed_err(&missing).to_string(),
        "users.messages.email.Click: required field email_address is absent or null"
    );
    let no_user = EMAIL_CLICK.replace(r#""user_id":"65f1","#, "");
    assert_eq!(
        typed_err(&no_user),
        TypedError::Missing {
            event_type: EventType::MessagesEmailClick,
            field: "user_id",
        }
    );
    // A wrong type is reported before a missing field.
    let both = missing.replace(r#""is_amp":false"#, r#""is_amp":"no""#);
    assert_eq!(
        typed_err(&both).to_string(),
        "users.messages.email.Click: field is_amp must be a boolean, found a string"
    );
}

#[test]
fn the_last_of_duplicate_keys_wins_and_a_trailing_null_unsets() {
    let text = r#"{"event_type":"users.messages.email.Click","id":"ev-1","time":1,
"user":{"user_id":"u"},"properties":{"email_address":"a@b.c",
"url":"https://first.example","url":"https://second.example",
"campaign_id":"c-1","campaign_id":null,
"email_address":null,"email_address":"last@b.c"}}"#;
    let TypedEvent::MessagesEmailClick(click) = typed(text) else {
        panic!("expected an email click");
    };
    assert_eq!(click.url.as_deref(), Some("https://second.example"));
    assert_eq!(click.campaign_id, None);
    assert_eq!(click.email_address, "last@b.c");

    let unset = text.replace(r#""email_address":"last@b.c""#, r#""esp":null"#);
    assert_eq!(
        typed_err(&unset),
        TypedError::Missing {
            event_type: EventType::MessagesEmailClick,
            field: "email_address",
        }
    );
}

// What the type does not declare.

#[test]
fn unknown_fields_land_in_extra_in_order() {
    let text = r#"{"event_type":"users.messages.email.Click","id":"ev-1","time":1,
"top_level_new":{"a":1},
"user":{"user_id":"u","device_id":"dev-1","user_new":true},
"properties":{"zeta":1,"email_address":"a@b.c","alpha":"x","custom_properties":{"k":[1,"v"]},
"beta":null}}"#;
    let TypedEvent::MessagesEmailClick(click) = typed(text) else {
        panic!("expected an email click");
    };
    let extra: Vec<(&str, &str)> = click
        .extra
        .iter()
        .map(|property| (property.key.as_ref(), property.value.get()))
        .collect();
    assert_eq!(
        extra,
        [
            ("zeta", "1"),
            ("alpha", r#""x""#),
            ("beta", "null"),
            // `users.messages.email.Click` has no `device_id` nor custom properties.
            ("device_id", r#""dev-1""#),
            ("custom_properties", r#"{"k":[1,"v"]}"#),
            ("top_level_new", r#"{"a":1}"#),
            ("user_new", "true"),
        ]
    );
}

#[test]
fn unknown_storage_fields_land_in_extra() {
    let text = r#"{"event_type":"users.messages.email.Click","id":"ev-1","time":1,
"user_id":"u","email_address":"a@b.c","new_field":[1],"device_id":"dev-1"}"#;
    let TypedEvent::MessagesEmailClick(click) = typed(text) else {
        panic!("expected an email click");
    };
    let extra: Vec<(&str, &str)> = click
        .extra
        .iter()
        .map(|property| (property.key.as_ref(), property.value.get()))
        .collect();
    assert_eq!(extra, [("new_field", "[1]"), ("device_id", r#""dev-1""#)]);
}

#[test]
fn unknown_types_are_other_and_unchanged() {
    let text = r#"{"event_type":"users.messages.carrierpigeon.Send","id":"ev-9","time":5,
"user":{"user_id":"u"},"properties":{"campaign_id":12,"feathers":"grey"}}"#;
    let event = Event::parse(text).unwrap();
    let TypedEvent::Other(other) = event.typed().unwrap() else {
        panic!("expected an unknown type");
    };
    assert_eq!(
        other.event_type.as_str(),
        "users.messages.carrierpigeon.Send"
    );
    assert_eq!(other.id, "ev-9");
    assert_eq!(other.time, 5);
    assert_eq!(other.properties.len(), 2);
    assert_eq!(other.properties[0].value.get(), "12");

    let typed = Event::parse(text).unwrap().typed().unwrap();
    assert_eq!(typed.event_type(), None);
    assert_eq!(typed.id(), "ev-9");
    assert_eq!(typed.time(), 5);
}

// Custom events and purchases, both shapes.

#[test]
fn custom_events_take_their_name_and_properties_in_both_shapes() {
    let http = r#"{"event_type":"users.behaviors.CustomEvent","id":"ev-1","time":1732792800,
"user":{"user_id":"65f1","external_user_id":"cust-1","device_id":"dev-1"},
"properties":{"app_id":"app-1","name":"Added to cart","ad_tracking_enabled":true,
"custom_properties":{"sku":"A-1","qty":2}}}"#;
    let storage = r#"{"event_type":"users.behaviors.CustomEvent","id":"ev-1","time":1732792800,
"user_id":"65f1","external_user_id":"cust-1","device_id":"dev-1",
"app_id":"app-1","name":"Added to cart","ad_tracking_enabled":true,
"properties":"{\"sku\":\"A-1\",\"qty\":2}"}"#;
    for text in [http, storage] {
        let TypedEvent::BehaviorsCustomEvent(custom) = typed(text) else {
            panic!("expected a custom event");
        };
        assert_eq!(custom.name, "Added to cart");
        assert_eq!(custom.user_id, "65f1");
        assert_eq!(custom.device_id.as_deref(), Some("dev-1"));
        assert_eq!(custom.app_id.as_deref(), Some("app-1"));
        assert_eq!(custom.ad_tracking_enabled, Some(true));
        let Some(NestedProperties::Object(properties)) = &custom.custom_properties else {
            panic!(
                "expected custom properties, got {:?}",
                custom.custom_properties
            );
        };
        let pairs: Vec<(&str, &str)> = properties
            .iter()
            .map(|property| (property.key.as_ref(), property.value.get()))
            .collect();
        assert_eq!(pairs, [("sku", r#""A-1""#), ("qty", "2")]);
        assert!(custom.extra.is_empty(), "{:?}", custom.extra);
    }
}

#[test]
fn purchases_without_their_own_properties_convert() {
    let text = r#"{"event_type":"users.behaviors.Purchase","id":"p-1","time":1,
"external_user_id":"cust-2","user_id":"u","product_id":"sku-9","price":9.99,"currency":"EUR"}"#;
    let TypedEvent::BehaviorsPurchase(purchase) = typed(text) else {
        panic!("expected a purchase");
    };
    assert_eq!(purchase.product_id, "sku-9");
    assert_eq!(purchase.price, 9.99);
    assert_eq!(purchase.currency, "EUR");
    assert!(purchase.purchase_properties.is_none());
}

// Robustness.

/// Small JSON values of every kind.
fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(Value::from),
        "[a-z\"\\\\é]{0,6}".prop_map(Value::from),
        prop::collection::vec("[a-z]{0,3}".prop_map(Value::from), 0..3).prop_map(Value::Array),
        Just(json!([1, null])),
        Just(json!({"a": 1})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any values in any fields: the conversion never panics, and an error
    /// names a field of the type.
    #[test]
    fn any_field_values_convert_or_name_the_field(
        type_idx in 0..EventType::ALL.len(),
        values in prop::collection::vec(arb_value(), 64),
    ) {
        let event_type = EventType::ALL[type_idx];
        let fields = event_type.fields();
        let text = http_event(
            event_type,
            |field| field.location == FieldLocation::Properties,
            |field| {
                let idx = fields.iter().position(|candidate| candidate == field).unwrap();
                values[idx % values.len()].clone()
            },
        )
        .to_string();
        let Ok(event) = Event::parse(&text) else {
            // A custom event whose name is not a non-empty string.
            prop_assert_eq!(event_type, EventType::BehaviorsCustomEvent);
            return Ok(());
        };
        match event.typed() {
            Ok(typed) => prop_assert_eq!(typed.event_type(), Some(event_type)),
            Err(error) => {
                prop_assert_eq!(error.event_type(), event_type);
                prop_assert!(event_type.has_field(error.field()), "{}", error);
            }
        }
    }
}

#[test]
fn owned_values_convert_too() {
    // Values a caller built, rather than slices of the input.
    let mut event = Event::parse(EMAIL_CLICK).unwrap();
    for property in &mut event.properties {
        let text = match property.key.as_ref() {
            "email_address" => " \"bob@example.com\"\n",
            "suspected_bot_click_reason" => "[ \"x\\ty\" ]",
            "is_amp" => " true ",
            _ => continue,
        };
        property.value = Cow::Owned(serde_json::value::RawValue::from_string(text.into()).unwrap());
    }
    let TypedEvent::MessagesEmailClick(click) = event.typed().unwrap() else {
        panic!("expected an email click");
    };
    assert_eq!(click.email_address, "bob@example.com");
    assert!(matches!(click.email_address, Cow::Owned(_)));
    assert_eq!(click.suspected_bot_click_reason.unwrap(), ["x\ty"]);
    assert_eq!(click.is_amp, Some(true));
}
