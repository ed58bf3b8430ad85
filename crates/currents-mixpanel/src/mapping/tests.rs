//! Unit tests for the mapping rules.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use currents_model::{Batch, EventType, EventTypeName, InvalidReason};
use proptest::prelude::*;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::rules::{self, ExportName, PropertyList};
use super::{Mapper, MappingConfig, Outcome, OutcomeCounts, SkipReason, TypeFilter, identity};

// Helpers.

const TOKEN: &str = "tok-1";
const TIME: i64 = 1732792800;

/// Mixpanel's placeholder ids, as listed in the mapping spec.
const PLACEHOLDERS: [&str; 11] = [
    "null",
    "undefined",
    "none",
    "nil",
    "0",
    "-1",
    "anonymous",
    "[]",
    "{}",
    "lmy47d",
    "00000000-0000-0000-0000-000000000000",
];

/// What became of one event, owned and comparable.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Mapped {
        name: String,
        properties: Map<String, Value>,
    },
    Skipped(SkipReason),
    Invalid(InvalidReason),
}

/// The keys of a JSON object in order, duplicates included.
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(KeysVisitor)
    }
}

fn keys_of(json: &str) -> Vec<String> {
    match serde_json::from_str::<Keys>(json) {
        Ok(Keys(keys)) => keys,
        Err(error) => panic!("not a JSON object ({error}): {json}"),
    }
}

/// Reads a serialized Mixpanel event, checking its structure on the way:
/// exactly `event` (a string) and `properties` (an object), no key twice.
fn decode(json: &str) -> Got {
    assert_eq!(keys_of(json), ["event", "properties"], "{json}");
    let outer: BTreeMap<String, Box<RawValue>> = serde_json::from_str(json).unwrap();
    let properties_text = outer["properties"].get();
    let keys = keys_of(properties_text);
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "duplicate keys in {json}");
    let name: String = serde_json::from_str(outer["event"].get())
        .unwrap_or_else(|_| panic!("the event name is not a string: {json}"));
    let properties: Map<String, Value> = serde_json::from_str(properties_text).unwrap();
    Got::Mapped { name, properties }
}

fn got(outcome: &Outcome<'_>) -> Got {
    match outcome {
        Outcome::Mapped(event) => {
            let mut out = Vec::new();
            event.write_json(&mut out);
            let json = String::from_utf8(out).expect("UTF-8 output");
            assert_eq!(json, event.to_json());
            assert!(!json.contains(['\n', '\r']), "one NDJSON line: {json}");
            decode(&json)
        }
        Outcome::Skipped(reason) => Got::Skipped(*reason),
        Outcome::Invalid(invalid) => Got::Invalid(invalid.reason),
    }
}

fn run(mapper: &Mapper, text: &str) -> Got {
    let raw: &RawValue = serde_json::from_str(text).expect("test input is JSON");
    got(&mapper.map_raw(raw))
}

fn mapper_with(token: Option<&str>, include: Option<&[&str]>, exclude: &[&str]) -> Mapper {
    let to_strings = |patterns: &[&str]| -> Vec<String> {
        patterns.iter().map(|pattern| pattern.to_string()).collect()
    };
    let include = include.map(to_strings);
    Mapper::new(MappingConfig {
        project_token: token.map(str::to_owned),
        type_filter: TypeFilter::new(include.as_deref(), &to_strings(exclude)),
    })
}

fn mapper() -> Mapper {
    mapper_with(Some(TOKEN), None, &[])
}

/// An HTTP-shaped event with id `ev-1`, time [`TIME`], the user `cust-1`
/// (with a Braze id and a time zone, never sent), and these properties.
fn http(event_type: &str, properties: Value) -> String {
    json!({
        "event_type": event_type,
        "id": "ev-1",
        "time": TIME,
        "user": {"user_id": "braze-uid", "external_user_id": "cust-1", "timezone": "Europe/Paris"},
        "properties": properties,
    })
    .to_string()
}

fn mapped(mapper: &Mapper, text: &str) -> (String, Map<String, Value>) {
    match run(mapper, text) {
        Got::Mapped { name, properties } => (name, properties),
        other => panic!("expected a mapped event, got {other:?}\ninput: {text}"),
    }
}

/// The envelope of [`http`] events mapped with [`mapper`], plus `more`.
fn envelope_and(more: Value) -> Map<String, Value> {
    let mut properties = json!({
        "$partner_id": "braze",
        "distinct_id": "cust-1",
        "$insert_id": "ev-1",
        "time": TIME,
        "token": TOKEN,
    });
    let properties = properties.as_object_mut().unwrap();
    properties.extend(more.as_object().unwrap().clone());
    properties.clone()
}

fn sha_insert_id(id: &str) -> String {
    Sha256::digest(id.as_bytes())[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn is_mixpanel_insert_id(id: &str) -> bool {
    (1..=36).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

// Skipping.

#[test]
fn skip_reasons_apply_in_order() {
    let filtered = mapper_with(
        Some(TOKEN),
        None,
        &["users.UserOrphan", "users.messages.email.*"],
    );
    let anonymous = |event_type: &str| {
        json!({"event_type": event_type, "id": "a", "time": 1, "user": {"user_id": "b"}})
            .to_string()
    };
    // Not exported beats filtered beats no external id.
    assert_eq!(
        run(&filtered, &anonymous("users.UserOrphan")),
        Got::Skipped(SkipReason::NotExportedType)
    );
    assert_eq!(
        run(&filtered, &anonymous("users.messages.email.Open")),
        Got::Skipped(SkipReason::Filtered)
    );
    assert_eq!(
        run(&filtered, &anonymous("users.messages.sms.Send")),
        Got::Skipped(SkipReason::NoExternalUserId)
    );
    // An include list that leaves a not-exported type out does not change its reason.
    let only_sms = mapper_with(None, Some(&["users.messages.sms.*"]), &[]);
    assert_eq!(
        run(&only_sms, &anonymous("users.profile.Update")),
        Got::Skipped(SkipReason::NotExportedType)
    );
    assert_eq!(
        run(&only_sms, &anonymous("users.messages.email.Open")),
        Got::Skipped(SkipReason::Filtered)
    );
    // An invalid event is invalid, whatever else is true of it.
    let invalid = r#"{"event_type":"users.UserOrphan","id":"a","time":"1"}"#;
    assert_eq!(
        run(&filtered, invalid),
        Got::Invalid(InvalidReason::InvalidTime)
    );
}

#[test]
fn exactly_the_table_s_not_exported_types_are_skipped() {
    let expected: BTreeSet<&str> = [
        "agentconsole.AgentExecuted",
        "agentconsole.ToolInvocation",
        "users.RandomBucketNumberUpdate",
        "users.UserDeleteRequest",
        "users.UserOrphan",
        "users.profile.Update",
    ]
    .into_iter()
    .collect();
    let mapper = mapper();
    let mut not_exported = BTreeSet::new();
    for event_type in EventType::ALL {
        let text = http(event_type.name(), json!({"name": "n"}));
        match run(&mapper, &text) {
            Got::Skipped(SkipReason::NotExportedType) => {
                not_exported.insert(event_type.name());
            }
            Got::Mapped { .. } => {}
            other => panic!("{}: {other:?}", event_type.name()),
        }
    }
    assert_eq!(not_exported, expected);
}

#[test]
fn placeholder_external_ids_are_skipped() {
    let mapper = mapper();
    for placeholder in PLACEHOLDERS {
        let mixed: String = placeholder
            .chars()
            .enumerate()
            .map(|(idx, c)| {
                if idx % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        let variants = [
            placeholder.to_owned(),
            placeholder.to_uppercase(),
            mixed,
            format!("  {placeholder} "),
            format!("\t{}\n", placeholder.to_uppercase()),
        ];
        for external in variants {
            let text = json!({"event_type": "users.messages.email.Open", "id": "a", "time": 1,
                "user": {"external_user_id": external}})
            .to_string();
            assert_eq!(
                run(&mapper, &text),
                Got::Skipped(SkipReason::NoExternalUserId),
                "{external:?}"
            );
            assert!(!identity::is_usable_distinct_id(&external), "{external:?}");
            // The storage shape too.
            let storage = json!({"event_type": "users.messages.email.Open", "id": "a", "time": 1,
                "external_user_id": external})
            .to_string();
            assert_eq!(
                run(&mapper, &storage),
                Got::Skipped(SkipReason::NoExternalUserId)
            );
        }
    }
}

#[test]
fn missing_and_empty_external_ids_are_skipped() {
    let mapper = mapper();
    for user in [
        json!({}),
        json!({"external_user_id": null}),
        json!({"external_user_id": ""}),
        json!({"external_user_id": "   "}),
        json!({"external_user_id": "\t\n"}),
        json!(null),
    ] {
        let text =
            json!({"event_type": "users.messages.email.Open", "id": "a", "time": 1, "user": user})
                .to_string();
        assert_eq!(
            run(&mapper, &text),
            Got::Skipped(SkipReason::NoExternalUserId),
            "{text}"
        );
    }
}

#[test]
fn near_placeholders_are_real_users() {
    let mapper = mapper();
    for external in [
        "nul",
        "null0",
        "nullnull",
        "00",
        "0.0",
        "-1 1",
        "+1",
        "anonymous-1",
        "[ ]",
        "{ }",
        "lmy47",
        "00000000-0000-0000-0000-000000000001",
        "cust-1",
        "\u{e9}",
    ] {
        assert!(identity::is_usable_distinct_id(external), "{external:?}");
        let text = json!({"event_type": "users.messages.email.Open", "id": "a", "time": 1,
            "user": {"external_user_id": external}})
        .to_string();
        let (_, properties) = mapped(&mapper, &text);
        assert_eq!(properties["distinct_id"], json!(external));
    }
}

#[test]
fn distinct_id_is_sent_untrimmed() {
    let mapper = mapper();
    for external in [
        " cust-1 ",
        "\tcust-1",
        "caf\u{e9}",
        "a\"b\\c",
        "line\nbreak",
    ] {
        let text = json!({"event_type": "users.messages.email.Open", "id": "a", "time": 1,
            "user": {"external_user_id": external}})
        .to_string();
        let (_, properties) = mapped(&mapper, &text);
        assert_eq!(properties["distinct_id"], json!(external));
    }
}

// The envelope.

#[test]
fn insert_id_passes_mixpanel_ids_through_and_hashes_the_rest() {
    let mapper = mapper();
    let thirty_six = "a".repeat(36);
    let thirty_seven = "a".repeat(37);
    let cases: &[(&str, &str)] = &[
        (
            "5b3f2c1e-8a4d-4e2b-9c1a-0f6e7d8c9b0a",
            "5b3f2c1e-8a4d-4e2b-9c1a-0f6e7d8c9b0a",
        ),
        ("A", "A"),
        ("-", "-"),
        ("AbC-123", "AbC-123"),
        (&thirty_six, &thirty_six),
        // Expected values computed outside Rust (Python's hashlib).
        (&thirty_seven, "21ec055b38ce759cd4d0f477e9bdec2c"),
        ("a_b", "648fa9b31bc7ff7eb914e7a7180f07e0"),
        ("ev/1", "b595afc610483c2ac34ef7cec0ef5980"),
        ("\u{e9}v\u{e8}nement-1", "90397c7bc9e693052adfa7245833ebd3"),
    ];
    for (id, expected) in cases {
        let text = json!({"event_type": "users.messages.email.Open", "id": id, "time": 1,
            "user": {"external_user_id": "u"}})
        .to_string();
        let (_, properties) = mapped(&mapper, &text);
        assert_eq!(properties["$insert_id"], json!(expected), "{id:?}");
        assert_eq!(identity::insert_id((*id).into()), *expected);
    }
    // Other ids that Mixpanel would refuse are hashed with the same rule;
    // expected values from Python's hashlib, not from this crate's code.
    let hashed: &[(&str, &str)] = &[
        ("", "e3b0c44298fc1c149afbf4c8996fb924"),
        (" ev-1", "a0bece4984df4dfe515c6604c2c01a13"),
        ("ev-1 ", "5840b4baa7a3bde468f8ea5b520aff77"),
        ("ev.1", "116af2467aa1264f3302a4adb83bf680"),
        ("ev:1", "e6590d4c946303203c46fc41a7ff20d6"),
        ("\u{1f600}", "f0443a342c5ef54783a111b51ba56c93"),
        ("\u{0}", "6e340b9cffb37a989ca544e6bb780a2c"),
        ("ev\u{2011}1", "6f972c8d2d97e89fde6fc3c716d1f817"),
    ];
    for (id, expected) in hashed {
        assert_eq!(identity::insert_id((*id).into()), *expected, "{id:?}");
        // Owned or borrowed, the same id gets the same insert id, so a
        // redelivered event keeps it.
        let owned: Cow<'_, str> = Cow::Owned((*id).to_owned());
        assert_eq!(identity::insert_id(owned), *expected, "{id:?}");
    }
    // An id Mixpanel accepts is passed on without a copy.
    assert!(matches!(
        identity::insert_id(Cow::Borrowed("ev-1")),
        Cow::Borrowed("ev-1")
    ));
}

#[test]
fn the_envelope_is_complete_and_exact() {
    let (name, properties) = mapped(&mapper(), &http("users.messages.email.Open", json!({})));
    assert_eq!(name, "Email Open");
    assert_eq!(properties, envelope_and(json!({})));
    let (_, properties) = mapped(
        &mapper_with(None, None, &[]),
        &http("users.messages.email.Open", json!({})),
    );
    assert_eq!(
        Value::Object(properties),
        json!({"$partner_id": "braze", "distinct_id": "cust-1", "$insert_id": "ev-1", "time": TIME})
    );
    for time in [0, -1, i64::MAX, i64::MIN] {
        let text = json!({"event_type": "users.messages.email.Open", "id": "a", "time": time,
            "user": {"external_user_id": "u"}})
        .to_string();
        let (_, properties) = mapped(&mapper(), &text);
        assert_eq!(properties["time"], json!(time));
    }
}

#[test]
fn event_properties_never_overwrite_the_envelope() {
    let hostile = json!({
        "time": 1,
        "distinct_id": "someone-else",
        "token": "other-token",
        "$insert_id": "other-id",
        "$partner_id": "other",
        "campaign_name": "c",
        "custom_properties": {"time": 2, "token": "t"},
    });
    for event_type in [
        "users.messages.carrierpigeon.Send",
        "users.canvas.costep.Send",
        "users.messages.email.Open",
        "users.campaigns.Abort",
    ] {
        for (mapper, token) in [
            (mapper(), Some(TOKEN)),
            (mapper_with(None, None, &[]), None),
        ] {
            let (_, properties) = mapped(&mapper, &http(event_type, hostile.clone()));
            assert_eq!(properties["time"], json!(TIME), "{event_type}");
            assert_eq!(properties["distinct_id"], json!("cust-1"), "{event_type}");
            assert_eq!(properties["$insert_id"], json!("ev-1"), "{event_type}");
            assert_eq!(properties["$partner_id"], json!("braze"), "{event_type}");
            assert_eq!(properties.get("token"), token.map(|t| json!(t)).as_ref());
            assert_eq!(properties["campaign_name"], json!("c"), "{event_type}");
            assert_eq!(properties["[Custom event property] time"], json!(2));
            assert_eq!(properties["[Custom event property] token"], json!("t"));
        }
    }
    // In the storage shape, top-level fields are properties and cannot win either.
    let storage = r#"{"event_type":"users.canvas.costep.Send","id":"ev-1","time":5,
"external_user_id":"cust-1","distinct_id":"x","$insert_id":"y","token":"z","$partner_id":"w"}"#;
    let (_, properties) = mapped(&mapper(), storage);
    assert_eq!(
        Value::Object(properties),
        json!({"$partner_id": "braze", "distinct_id": "cust-1", "$insert_id": "ev-1", "time": 5, "token": TOKEN})
    );
}

// Names.

#[test]
fn custom_events_are_named_after_their_name_which_is_not_a_property() {
    let text = http(
        "users.behaviors.CustomEvent",
        json!({
            "name": "Added to cart",
            "app_id": "app-1",
            "platform": "ios",
            "custom_properties": {"sku": "A-1", "qty": 2, "tags": ["x", {"y": null}], "meta": {"a": null}, "gone": null},
        }),
    );
    let (name, properties) = mapped(&mapper(), &text);
    assert_eq!(name, "[Braze Custom Event] Added to cart");
    assert_eq!(
        properties,
        envelope_and(json!({
            "app_id": "app-1",
            "platform": "ios",
            "[Custom event property] sku": "A-1",
            "[Custom event property] qty": 2,
            "[Custom event property] tags": ["x", {"y": null}],
            "[Custom event property] meta": {"a": null},
        }))
    );
    // Names are used as they are, spaces and all.
    let text = http(
        "users.behaviors.CustomEvent",
        json!({"name": "  caf\u{e9} [x] "}),
    );
    assert_eq!(
        mapped(&mapper(), &text).0,
        "[Braze Custom Event]   caf\u{e9} [x] "
    );
}

#[test]
fn known_types_take_the_table_s_names() {
    let cases = [
        ("users.messages.email.Click", "Email Click"),
        ("users.behaviors.app.SessionStart", "Session Start"),
        ("users.behaviors.Purchase", "Purchase"),
        ("users.canvas.costep.Send", "Canvas Co-Step Send"),
        ("users.messages.rcs.InboundReceive", "RCS Inbound Received"),
        ("users.canvas.exit.MatchedAudience", "Exit Match Audience"),
        ("users.campaigns.Abort", "Campaign Abort"),
        ("users.canvas.Abort", "Canvas Abort"),
        (
            "users.messages.carrierpigeon.Send",
            "users.messages.carrierpigeon.Send",
        ),
        ("users.messages.email.click", "users.messages.email.click"),
        ("caf\u{e9}", "caf\u{e9}"),
    ];
    for (event_type, expected) in cases {
        assert_eq!(
            mapped(&mapper(), &http(event_type, json!({}))).0,
            expected,
            "{event_type}"
        );
    }
}

// Properties.

#[test]
fn the_four_renames() {
    let (_, properties) = mapped(
        &mapper(),
        &http(
            "users.messages.banner.Click",
            json!({
                "device_model": "iPhone15,2",
                "os_version": "iOS 17.1",
                "canvas_step_message_variation_id": "csmv-1",
                "button_id": "b-1",
            }),
        ),
    );
    assert_eq!(
        properties,
        envelope_and(json!({
            "$device": "iPhone15,2",
            "$os": "iOS 17.1",
            "canvas_step_message_variation_api_id": "csmv-1",
            "button_id": "b-1",
        }))
    );
    let (_, properties) = mapped(
        &mapper(),
        &http(
            "users.messages.contentcard.Click",
            json!({"content_card_id": "card-9", "send_id": "s"}),
        ),
    );
    assert_eq!(
        properties,
        envelope_and(json!({"card_id": "card-9", "send_id": "s"}))
    );
    // Renamed, a known field the list leaves out is still dropped.
    let (_, properties) = mapped(
        &mapper(),
        &http(
            "users.messages.email.Abort",
            json!({"canvas_step_message_variation_id": "csmv-1", "abort_type": "t"}),
        ),
    );
    assert_eq!(properties, envelope_and(json!({"abort_type": "t"})));
    // Types with no list, and unknown types, are renamed too.
    for event_type in [
        "users.messages.banner.Dismiss",
        "users.messages.carrierpigeon.Send",
    ] {
        let (_, properties) = mapped(
            &mapper(),
            &http(
                event_type,
                json!({"device_model": "m", "os_version": "o", "content_card_id": "c"}),
            ),
        );
        assert_eq!(
            properties,
            envelope_and(json!({"$device": "m", "$os": "o", "card_id": "c"})),
            "{event_type}"
        );
    }
}

#[test]
fn new_fields_pass_and_known_unlisted_fields_do_not() {
    let (_, properties) = mapped(
        &mapper(),
        &http(
            "users.behaviors.app.FirstSession",
            json!({
                "session_id": "s-1",
                "gender": "F",
                "sdk_version": "4.0",
                "country": "FR",
                "language": "fr",
                "brand_new_field": {"nested": [1, 2]},
                "name": "not a field of this type",
            }),
        ),
    );
    assert_eq!(
        properties,
        envelope_and(json!({
            "session_id": "s-1",
            "brand_new_field": {"nested": [1, 2]},
            "name": "not a field of this type",
        }))
    );
    let (_, properties) = mapped(
        &mapper(),
        &http(
            "users.messages.pushnotification.Open",
            json!({"button_string": "Buy", "campaign_name": "c"}),
        ),
    );
    assert_eq!(properties, envelope_and(json!({"campaign_name": "c"})));
}

#[test]
fn types_without_a_list_pass_every_property() {
    for (event_type, name) in [
        ("users.messages.banner.Dismiss", "Banner Dismiss"),
        ("users.canvas.costep.Send", "Canvas Co-Step Send"),
        ("users.messages.line.Click", "LINE Click"),
    ] {
        let (actual_name, properties) = mapped(
            &mapper(),
            &http(
                event_type,
                json!({"gender": "M", "sdk_version": "1", "anything": [true], "dropped": null}),
            ),
        );
        assert_eq!(actual_name, name);
        assert_eq!(
            properties,
            envelope_and(json!({"gender": "M", "sdk_version": "1", "anything": [true]})),
            "{event_type}"
        );
    }
}

#[test]
fn unknown_and_legacy_types_pass_every_property_but_the_user_s() {
    for (event_type, name) in [
        (
            "users.messages.carrierpigeon.Send",
            "users.messages.carrierpigeon.Send",
        ),
        ("users.campaigns.Abort", "Campaign Abort"),
        ("users.canvas.Abort", "Canvas Abort"),
    ] {
        let text = json!({
            "event_type": event_type,
            "id": "ev-1",
            "time": TIME,
            "top_level_extra": 1,
            "user": {"user_id": "braze-uid", "external_user_id": "cust-1", "device_id": "dev-1",
                "timezone": "Europe/Paris", "user_extra": 2},
            "properties": {"gender": "M", "abort_log": "x", "nothing": null, "nested": {"a": null}},
        })
        .to_string();
        let (actual_name, properties) = mapped(&mapper(), &text);
        assert_eq!(actual_name, name);
        assert_eq!(
            properties,
            envelope_and(
                json!({"gender": "M", "abort_log": "x", "nested": {"a": null}, "device_id": "dev-1"})
            ),
            "{event_type}"
        );
    }
}

#[test]
fn user_device_id_becomes_device_id_and_other_user_fields_are_never_sent() {
    let event = |properties: Value| {
        json!({
            "event_type": "users.behaviors.app.SessionStart",
            "id": "ev-1",
            "time": TIME,
            "user": {"user_id": "braze-uid", "external_user_id": "cust-1", "device_id": "dev \"1\"", "timezone": "UTC"},
            "properties": properties,
        })
        .to_string()
    };
    let (_, properties) = mapped(&mapper(), &event(json!({"session_id": "s"})));
    assert_eq!(
        properties,
        envelope_and(json!({"session_id": "s", "device_id": "dev \"1\""}))
    );
    // user.device_id wins over properties.device_id.
    let (_, properties) = mapped(&mapper(), &event(json!({"device_id": "other"})));
    assert_eq!(properties["device_id"], json!("dev \"1\""));
    // On a type whose table has no device_id, it is a new field and passes.
    let text = json!({"event_type": "users.canvas.exit.MatchedAudience", "id": "ev-1", "time": TIME,
        "user": {"external_user_id": "cust-1", "device_id": "d"}, "properties": {"canvas_api_id": "dropped"}})
    .to_string();
    assert_eq!(
        mapped(&mapper(), &text).1,
        envelope_and(json!({"device_id": "d"}))
    );
    // The storage shape.
    let storage = r#"{"event_type":"users.behaviors.app.SessionStart","id":"ev-1","time":1732792800,
"user_id":"braze-uid","external_user_id":"cust-1","device_id":"d-2","timezone":"UTC","session_id":"s"}"#;
    assert_eq!(
        mapped(&mapper(), storage).1,
        envelope_and(json!({"session_id": "s", "device_id": "d-2"}))
    );
}

#[test]
fn user_fields_in_properties_follow_the_type_s_list() {
    // `user_id` and `timezone` are known fields of First Session, outside its list.
    let (_, properties) = mapped(
        &mapper(),
        &http(
            "users.behaviors.app.FirstSession",
            json!({"user_id": "x", "timezone": "UTC", "external_user_id": "y"}),
        ),
    );
    assert_eq!(properties, envelope_and(json!({})));
    // Session Start has no `timezone` field: there it is a new field, and passes.
    let (_, properties) = mapped(
        &mapper(),
        &http(
            "users.behaviors.app.SessionStart",
            json!({"user_id": "x", "timezone": "UTC"}),
        ),
    );
    assert_eq!(properties, envelope_and(json!({"timezone": "UTC"})));
}

#[test]
fn null_properties_are_dropped() {
    let (_, properties) = mapped(
        &mapper(),
        &http(
            "users.messages.banner.Click",
            json!({"device_model": null, "os_version": null, "button_id": null, "brand_new": null, "app_id": "a"}),
        ),
    );
    assert_eq!(properties, envelope_and(json!({"app_id": "a"})));
    // Whitespace around a null does not hide it, in either shape of nested properties.
    let text = r#"{"event_type":"users.messages.carrierpigeon.Send","id":"ev-1","time":1732792800,
"user":{"external_user_id":"cust-1"},
"properties":{"a" :  null , "b": [ null ] ,
"custom_properties":"{ \"x\" : null , \"y\" : 1 }","purchase_properties":{ "z" : null }}}"#;
    assert_eq!(
        mapped(&mapper(), text).1,
        envelope_and(json!({"b": [null], "[Custom event property] y": 1}))
    );
    let text = json!({"event_type": "users.behaviors.app.SessionStart", "id": "ev-1", "time": TIME,
        "user": {"external_user_id": "cust-1", "device_id": null}})
    .to_string();
    assert_eq!(mapped(&mapper(), &text).1, envelope_and(json!({})));
}

#[test]
fn values_are_copied_byte_for_byte() {
    let text = r#"{"event_type":"users.behaviors.Purchase","id":"ev-1","time":1,
"user":{"external_user_id":"u"},
"properties":{"price":9.990,"product_id":"caf\u00e9","brand_new":[1.0, 2e3, {"k" : "v"}],
"purchase_properties":{"big":123456789012345678901234567890,"f":1.50}}}"#;
    let raw: &RawValue = serde_json::from_str(text).unwrap();
    let mapper = mapper();
    let Outcome::Mapped(event) = mapper.map_raw(raw) else {
        panic!("not mapped")
    };
    let json = event.to_json();
    for fragment in [
        r#""price":9.990"#,
        r#""product_id":"caf\u00e9""#,
        r#""brand_new":[1.0, 2e3, {"k" : "v"}]"#,
        r#""[Purchase property] big":123456789012345678901234567890"#,
        r#""[Purchase property] f":1.50"#,
    ] {
        assert!(json.contains(fragment), "{fragment} not in {json}");
    }
}

#[test]
fn pretty_printed_values_are_sent_on_one_line() {
    let text = "{\"event_type\": \"users.messages.carrierpigeon.Send\",\n \"id\": \"ev-1\",\n \"time\": 1732792800,\n \"user\": {\"external_user_id\": \"cust-1\"},\n \"properties\": {\n  \"list\": [\n   1.50,\n   \"a  b\\n c\",\n   {\"k\" :\r\n \"v\\\\\"}\n  ],\n  \"custom_properties\": {\n   \"o\": {\n    \"x\": null\n   }\n  }\n }\n}";
    let raw: &RawValue = serde_json::from_str(text).unwrap();
    let mapper = mapper();
    let Outcome::Mapped(event) = mapper.map_raw(raw) else {
        panic!("not mapped")
    };
    assert_eq!(
        event.to_json(),
        r#"{"event":"users.messages.carrierpigeon.Send","properties":{"$partner_id":"braze","distinct_id":"cust-1","$insert_id":"ev-1","time":1732792800,"token":"tok-1","list":[1.50,"a  b\n c",{"k":"v\\"}],"[Custom event property] o":{"x":null}}}"#
    );
}

#[test]
fn duplicate_keys_the_last_value_wins() {
    let text = r#"{"event_type":"users.messages.email.Open","id":"ev-1","time":1732792800,
"user":{"external_user_id":"cust-1","external_user_id":"cust-2"},
"properties":{"campaign_name":"a","campaign_name":"b","custom_properties":{"k":1,"k":2}}}"#;
    let (_, properties) = mapped(&mapper(), text);
    assert_eq!(
        Value::Object(properties),
        json!({"$partner_id": "braze", "distinct_id": "cust-2", "$insert_id": "ev-1", "time": TIME,
            "token": TOKEN, "campaign_name": "b", "[Custom event property] k": 2})
    );
}

#[test]
fn duplicate_keys_last_one_wins_even_when_null() {
    let text = r#"{"event_type":"users.messages.email.Open","id":"ev-1","time":1732792800,
"user":{"external_user_id":"cust-1"},
"properties":{"campaign_name":"a","campaign_name":null,"time":null,"custom_properties":{"k":1,"k":null}}}"#;
    let (_, properties) = mapped(&mapper(), text);
    assert_eq!(
        Value::Object(properties),
        json!({"$partner_id": "braze", "distinct_id": "cust-1", "$insert_id": "ev-1", "time": TIME,
            "token": TOKEN})
    );
}

// Custom and purchase properties.

#[test]
fn purchase_properties_are_prefixed() {
    let text = http(
        "users.behaviors.Purchase",
        json!({
            "product_id": "sku-9",
            "price": 9.99,
            "currency": "EUR",
            "purchase_properties": {"color": "red", "size": {"eu": 42, "us": null}, "none": null, "list": [null]},
        }),
    );
    let (name, properties) = mapped(&mapper(), &text);
    assert_eq!(name, "Purchase");
    assert_eq!(
        properties,
        envelope_and(json!({
            "product_id": "sku-9",
            "price": 9.99,
            "currency": "EUR",
            "[Purchase property] color": "red",
            "[Purchase property] size": {"eu": 42, "us": null},
            "[Purchase property] list": [null],
        }))
    );
}

#[test]
fn both_shapes_map_to_the_same_event() {
    let pairs = [
        (
            r#"{"event_type":"users.behaviors.CustomEvent","id":"ev-1","time":1732792800,
"user":{"user_id":"b","external_user_id":"cust-1","device_id":"d","timezone":"UTC"},
"properties":{"name":"Added to cart","app_id":"a","device_model":"m",
"custom_properties":{"sku":"A-1","n":null,"o":{"p":[1]}}}}"#,
            r#"{"event_type":"users.behaviors.CustomEvent","id":"ev-1","time":1732792800,
"user_id":"b","external_user_id":"cust-1","device_id":"d","timezone":"UTC",
"name":"Added to cart","app_id":"a","device_model":"m",
"properties":"{\"sku\":\"A-1\",\"n\":null,\"o\":{\"p\":[1]}}"}"#,
        ),
        (
            r#"{"event_type":"users.behaviors.Purchase","id":"ev/1","time":1,
"user":{"external_user_id":" u "},
"properties":{"product_id":"p","price":1.5,"currency":"EUR","gender":"F",
"purchase_properties":"{\"a\":true}"}}"#,
            r#"{"event_type":"users.behaviors.Purchase","id":"ev/1","time":1,
"external_user_id":" u ","product_id":"p","price":1.5,"currency":"EUR","gender":"F",
"properties":"{\"a\":true}"}"#,
        ),
    ];
    for (http_text, storage_text) in pairs {
        let from_http = run(&mapper(), http_text);
        assert!(matches!(from_http, Got::Mapped { .. }), "{from_http:?}");
        assert_eq!(from_http, run(&mapper(), storage_text));
    }
    let Got::Mapped { name, properties } = run(&mapper(), pairs[0].0) else {
        unreachable!()
    };
    assert_eq!(name, "[Braze Custom Event] Added to cart");
    assert_eq!(
        properties,
        envelope_and(json!({
            "app_id": "a",
            "$device": "m",
            "device_id": "d",
            "[Custom event property] sku": "A-1",
            "[Custom event property] o": {"p": [1]},
        }))
    );
}

#[test]
fn undecodable_nested_properties_are_kept_under_the_bare_key() {
    let storage = r#"{"event_type":"users.behaviors.CustomEvent","id":"ev-1","time":1732792800,
"external_user_id":"cust-1","name":"n","properties":"{not json"}"#;
    let (_, properties) = mapped(&mapper(), storage);
    assert_eq!(
        properties,
        envelope_and(json!({"[Custom event property]": "{not json"}))
    );
    let storage = r#"{"event_type":"users.behaviors.Purchase","id":"ev-1","time":1732792800,
"external_user_id":"cust-1","properties":"[1,2]"}"#;
    let (_, properties) = mapped(&mapper(), storage);
    assert_eq!(
        properties,
        envelope_and(json!({"[Purchase property]": "[1,2]"}))
    );
    for (value, expected) in [
        (json!("oops"), json!({"[Custom event property]": "oops"})),
        (json!(12), json!({"[Custom event property]": 12})),
        (
            json!([1, {"a": null}]),
            json!({"[Custom event property]": [1, {"a": null}]}),
        ),
        (json!(null), json!({})),
        (json!("null"), json!({})),
        (json!("{\"k\":1}"), json!({"[Custom event property] k": 1})),
    ] {
        let text = http(
            "users.behaviors.CustomEvent",
            json!({"name": "n", "custom_properties": value}),
        );
        assert_eq!(mapped(&mapper(), &text).1, envelope_and(expected), "{text}");
    }
}

// The type filter.

fn filter(include: Option<&[&str]>, exclude: &[&str]) -> TypeFilter {
    let to_strings =
        |patterns: &[&str]| -> Vec<String> { patterns.iter().map(|p| p.to_string()).collect() };
    let include = include.map(to_strings);
    TypeFilter::new(include.as_deref(), &to_strings(exclude))
}

#[test]
fn type_filter_patterns() {
    let all = TypeFilter::default();
    assert!(all.allows("users.messages.email.Click"));
    assert!(all.allows("anything at all"));
    assert_eq!(all, filter(None, &[]));

    let exact = filter(Some(&["users.messages.email.Click"]), &[]);
    assert!(exact.allows("users.messages.email.Click"));
    assert!(!exact.allows("users.messages.email.Click2"));
    assert!(!exact.allows("users.messages.email.click"));
    assert!(!exact.allows("users.messages.email.Open"));

    let prefix = filter(Some(&["users.messages.email.*"]), &[]);
    assert!(prefix.allows("users.messages.email.Click"));
    assert!(prefix.allows("users.messages.email.new.Thing"));
    assert!(!prefix.allows("users.messages.email"));
    assert!(!prefix.allows("users.messages.emailx.Click"));
    assert!(!prefix.allows("users.messages.sms.Send"));

    let star = filter(Some(&["*"]), &[]);
    assert!(star.allows("users.messages.sms.Send"));
    assert!(star.allows(""));

    // A star that does not follow a dot is part of an exact name.
    let no_dot = filter(Some(&["users.messages.email*"]), &[]);
    assert!(!no_dot.allows("users.messages.email.Click"));
    assert!(no_dot.allows("users.messages.email*"));

    let trimmed = filter(Some(&["  users.messages.email.Click "]), &[]);
    assert!(trimmed.allows("users.messages.email.Click"));

    let nothing = filter(Some(&[]), &[]);
    assert!(!nothing.allows("users.messages.email.Click"));

    let deny_wins = filter(
        Some(&["users.messages.*", "users.messages.email.Click"]),
        &["users.messages.email.Click", "users.messages.sms.*"],
    );
    assert!(deny_wins.allows("users.messages.email.Open"));
    assert!(!deny_wins.allows("users.messages.email.Click"));
    assert!(!deny_wins.allows("users.messages.sms.Send"));
    assert!(!deny_wins.allows("users.behaviors.Purchase"));

    let exclude_only = filter(None, &["users.behaviors.*"]);
    assert!(!exclude_only.allows("users.behaviors.Purchase"));
    assert!(exclude_only.allows("users.messages.email.Open"));
    assert!(!filter(None, &["*"]).allows("users.messages.email.Open"));
}

#[test]
fn unmatched_patterns_are_reported_in_order() {
    let type_filter = filter(
        Some(&[
            "users.messages.email.*",
            "users.mesages.email.Click",
            "users.campaigns.Abort",
            "users.messages.email*",
            "*",
        ]),
        &[
            "users.nothing.*",
            "agentconsole.AgentExecuted",
            " users.messages.sms.Send ",
        ],
    );
    assert_eq!(
        type_filter.unmatched_patterns(),
        [
            "users.mesages.email.Click",
            "users.messages.email*",
            "users.nothing.*"
        ]
    );
    assert!(TypeFilter::default().unmatched_patterns().is_empty());
}

#[test]
fn the_mapper_applies_the_filter_to_raw_type_names() {
    let mapper = mapper_with(
        None,
        Some(&["users.messages.*", "users.canvas.Abort"]),
        &["users.messages.carrierpigeon.*"],
    );
    let cases = [
        ("users.messages.email.Open", None),
        ("users.canvas.Abort", None),
        (
            "users.messages.carrierpigeon.Send",
            Some(SkipReason::Filtered),
        ),
        ("users.campaigns.Abort", Some(SkipReason::Filtered)),
        ("users.behaviors.Purchase", Some(SkipReason::Filtered)),
    ];
    for (event_type, expected) in cases {
        let outcome = run(&mapper, &http(event_type, json!({})));
        match expected {
            Some(reason) => assert_eq!(outcome, Got::Skipped(reason), "{event_type}"),
            None => assert!(matches!(outcome, Got::Mapped { .. }), "{event_type}"),
        }
    }
}

// Counting.

#[test]
fn outcome_counts_add_up() {
    let mapper = mapper_with(None, None, &["users.messages.sms.*"]);
    let body = r#"{"events":[
{"event_type":"users.messages.email.Open","id":"1","time":1,"user":{"external_user_id":"u"}},
{"event_type":"users.messages.email.Open","id":"2","time":1,"user":{"external_user_id":"v"}},
{"event_type":"users.messages.email.Open","id":"3","time":1,"user":{"external_user_id":"null"}},
{"event_type":"users.messages.sms.Send","id":"4","time":1,"user":{"external_user_id":"u"}},
{"event_type":"users.UserOrphan","id":"5","time":1},
{"event_type":"users.messages.email.Open","id":"6","time":1.5},
{"event_type":"users.messages.email.Open","id":"","time":1},
[],
{"event_type":"users.behaviors.CustomEvent","id":"9","time":1,"properties":{}},
{"event_type":"users.messages.email.Open","id":"10","time":"1"}
]}"#;
    let batch = Batch::parse(body).unwrap();
    let outcomes = mapper.map_batch(&batch.events);
    assert_eq!(outcomes.len(), 10);
    let kinds: Vec<Got> = outcomes.iter().map(got).collect();
    assert!(matches!(&kinds[0], Got::Mapped { properties, .. } if properties["$insert_id"] == "1"));
    assert!(matches!(&kinds[1], Got::Mapped { properties, .. } if properties["$insert_id"] == "2"));
    assert_eq!(
        kinds[2..],
        [
            Got::Skipped(SkipReason::NoExternalUserId),
            Got::Skipped(SkipReason::Filtered),
            Got::Skipped(SkipReason::NotExportedType),
            Got::Invalid(InvalidReason::InvalidTime),
            Got::Invalid(InvalidReason::InvalidId),
            Got::Invalid(InvalidReason::NotAnObject),
            Got::Invalid(InvalidReason::MissingCustomEventName),
            Got::Invalid(InvalidReason::InvalidTime),
        ]
    );
    let mut counts = OutcomeCounts::default();
    for outcome in &outcomes {
        counts.record(outcome);
    }
    assert_eq!(counts.mapped, 2);
    assert_eq!(counts.total_skipped(), 3);
    assert_eq!(counts.total_invalid(), 5);
    assert_eq!(counts.total(), 10);
    assert_eq!(
        counts.skipped_by_reason().collect::<Vec<_>>(),
        [
            (SkipReason::NotExportedType, 1),
            (SkipReason::Filtered, 1),
            (SkipReason::NoExternalUserId, 1),
        ]
    );
    assert_eq!(
        counts.invalid_by_reason().collect::<Vec<_>>(),
        [
            (InvalidReason::NotAnObject, 1),
            (InvalidReason::InvalidId, 1),
            (InvalidReason::InvalidTime, 2),
            (InvalidReason::MissingCustomEventName, 1),
        ]
    );
}

#[test]
fn every_reason_has_its_own_counter() {
    let mut counts = OutcomeCounts::default();
    assert_eq!(counts.total(), 0);
    assert_eq!(counts.skipped_by_reason().count(), 0);
    for (idx, reason) in InvalidReason::ALL.into_iter().enumerate() {
        for _ in 0..=idx {
            counts.record_invalid(reason);
        }
    }
    for (idx, reason) in SkipReason::ALL.into_iter().enumerate() {
        for _ in 0..=idx {
            counts.record(&Outcome::Skipped(reason));
        }
    }
    let invalid: Vec<(InvalidReason, u64)> = counts.invalid_by_reason().collect();
    let expected: Vec<(InvalidReason, u64)> = InvalidReason::ALL.into_iter().zip(1..).collect();
    assert_eq!(invalid, expected);
    let skipped: Vec<(SkipReason, u64)> = counts.skipped_by_reason().collect();
    assert_eq!(
        skipped,
        [
            (SkipReason::NotExportedType, 1),
            (SkipReason::Filtered, 2),
            (SkipReason::NoExternalUserId, 3),
        ]
    );
    assert_eq!(counts.total_invalid(), 66);
    assert_eq!(counts.total(), 66 + 6);
}

#[test]
fn skip_reason_names() {
    let names: Vec<String> = SkipReason::ALL.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        names,
        ["not_exported_type", "filtered", "no_external_user_id"]
    );
    for reason in SkipReason::ALL {
        assert_eq!(reason.as_str(), reason.to_string());
    }
}

// The tables.

#[test]
fn every_type_has_a_rule_and_lists_are_sorted() {
    let mut named = 0;
    for event_type in EventType::ALL {
        let rule = rules::lookup(&EventTypeName::Known(event_type)).expect("every known type");
        if let ExportName::Named(name) = rule.name {
            named += 1;
            assert!(!name.is_empty());
        }
        if let PropertyList::Only(keys) = rule.properties {
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "{}: sorted for binary search",
                event_type.name()
            );
            for key in keys {
                assert!(rule.properties.contains(key));
            }
        }
    }
    assert_eq!(named, 94 - 6);
    let names: Vec<&str> = rules::all_type_names().collect();
    assert_eq!(names.len(), 96);
    assert_eq!(names[94..], ["users.campaigns.Abort", "users.canvas.Abort"]);
    let unknown = EventTypeName::Other("users.messages.carrierpigeon.Send".into());
    assert_eq!(rules::lookup(&unknown), None);
    assert!(PropertyList::All.contains("anything"));
}

// Property tests.

/// The spec's mapping table (`currents-to-mixpanel.tsv`), copied into the
/// test rather than read from the generated rules it checks: a type, its
/// Mixpanel name (`None`: not exported) and whether its property list is
/// open (`*`: every property passes).
const SPEC_TABLE: [(&str, Option<&str>, bool); 96] = [
    ("agentconsole.AgentExecuted", None, true),
    ("agentconsole.ToolInvocation", None, true),
    ("users.RandomBucketNumberUpdate", None, true),
    ("users.UserDeleteRequest", None, true),
    ("users.UserOrphan", None, true),
    (
        "users.behaviors.CustomEvent",
        Some("[Braze Custom Event]"),
        false,
    ),
    (
        "users.behaviors.InstallAttribution",
        Some("Install Attribution"),
        false,
    ),
    ("users.behaviors.Location", Some("Location"), false),
    ("users.behaviors.Purchase", Some("Purchase"), false),
    ("users.behaviors.Uninstall", Some("Uninstall"), false),
    (
        "users.behaviors.app.FirstSession",
        Some("First Session"),
        false,
    ),
    ("users.behaviors.app.SessionEnd", Some("Session End"), false),
    (
        "users.behaviors.app.SessionStart",
        Some("Session Start"),
        false,
    ),
    (
        "users.behaviors.liveactivity.PushToStartTokenChange",
        Some("Live Activity Push To Start Token Change"),
        false,
    ),
    (
        "users.behaviors.liveactivity.UpdateTokenChange",
        Some("Live Activity Update Token Change"),
        false,
    ),
    (
        "users.behaviors.pushnotification.TokenStateChange",
        Some("Push Notification Token State Change"),
        false,
    ),
    (
        "users.behaviors.subscription.GlobalStateChange",
        Some("Global Subscription State Change"),
        false,
    ),
    (
        "users.behaviors.subscriptiongroup.StateChange",
        Some("Subscription Group State Change"),
        false,
    ),
    (
        "users.campaigns.Conversion",
        Some("Campaign Conversion"),
        false,
    ),
    (
        "users.campaigns.EnrollInControl",
        Some("Campaign Control Group Enrollment"),
        false,
    ),
    ("users.canvas.Conversion", Some("Canvas Conversion"), false),
    ("users.canvas.Entry", Some("Canvas Entry"), false),
    (
        "users.canvas.costep.Send",
        Some("Canvas Co-Step Send"),
        true,
    ),
    (
        "users.canvas.exit.MatchedAudience",
        Some("Exit Match Audience"),
        false,
    ),
    (
        "users.canvas.exit.PerformedEvent",
        Some("Exit Perform Event"),
        false,
    ),
    (
        "users.canvas.experimentstep.Conversion",
        Some("Experiment Step Conversion"),
        false,
    ),
    (
        "users.canvas.experimentstep.SplitEntry",
        Some("Experiment Split Entry"),
        false,
    ),
    (
        "users.canvasstep.Progression",
        Some("Canvas Step Progression"),
        false,
    ),
    ("users.messages.banner.Abort", Some("Banner Abort"), false),
    ("users.messages.banner.Click", Some("Banner Click"), false),
    (
        "users.messages.banner.Dismiss",
        Some("Banner Dismiss"),
        true,
    ),
    (
        "users.messages.banner.Impression",
        Some("Banner Impression"),
        false,
    ),
    (
        "users.messages.contentcard.Abort",
        Some("Content Card Abort"),
        false,
    ),
    (
        "users.messages.contentcard.Click",
        Some("Content Card Click"),
        false,
    ),
    (
        "users.messages.contentcard.Dismiss",
        Some("Content Card Dismiss"),
        false,
    ),
    (
        "users.messages.contentcard.Impression",
        Some("Content Card Impression"),
        false,
    ),
    (
        "users.messages.contentcard.Send",
        Some("Content Card Send"),
        false,
    ),
    ("users.messages.email.Abort", Some("Email Abort"), false),
    ("users.messages.email.Bounce", Some("Email Bounce"), false),
    ("users.messages.email.Click", Some("Email Click"), false),
    (
        "users.messages.email.Deferral",
        Some("Email Deferral"),
        false,
    ),
    (
        "users.messages.email.Delivery",
        Some("Email Delivery"),
        false,
    ),
    (
        "users.messages.email.MarkAsSpam",
        Some("Email Mark As Spam"),
        false,
    ),
    ("users.messages.email.Open", Some("Email Open"), false),
    ("users.messages.email.Retry", Some("Email Retry"), false),
    ("users.messages.email.Send", Some("Email Send"), false),
    (
        "users.messages.email.SoftBounce",
        Some("Email Soft Bounce"),
        false,
    ),
    (
        "users.messages.email.Unsubscribe",
        Some("Email Unsubscribe"),
        false,
    ),
    (
        "users.messages.featureflag.Impression",
        Some("Feature Flag Experiment Impression"),
        false,
    ),
    (
        "users.messages.inappmessage.Abort",
        Some("In-App Message Abort"),
        false,
    ),
    (
        "users.messages.inappmessage.Click",
        Some("In-App Message Click"),
        false,
    ),
    (
        "users.messages.inappmessage.Impression",
        Some("In-App Message Impression"),
        false,
    ),
    ("users.messages.line.Abort", Some("LINE Abort"), true),
    ("users.messages.line.Click", Some("LINE Click"), true),
    (
        "users.messages.line.InboundReceive",
        Some("LINE Inbound Receive"),
        true,
    ),
    ("users.messages.line.Retry", Some("LINE Retry"), true),
    ("users.messages.line.Send", Some("LINE Send"), true),
    (
        "users.messages.liveactivity.Outcome",
        Some("Live Activity Outcome"),
        true,
    ),
    (
        "users.messages.liveactivity.Send",
        Some("Live Activity Send"),
        true,
    ),
    (
        "users.messages.pushnotification.Abort",
        Some("Push Notification Abort"),
        false,
    ),
    (
        "users.messages.pushnotification.Bounce",
        Some("Push Notification Bounce"),
        false,
    ),
    (
        "users.messages.pushnotification.IosForeground",
        Some("Push Notification iOS Foreground Open"),
        false,
    ),
    (
        "users.messages.pushnotification.Open",
        Some("Push Notification Open"),
        false,
    ),
    (
        "users.messages.pushnotification.Retry",
        Some("Push Notification Retry"),
        false,
    ),
    (
        "users.messages.pushnotification.Send",
        Some("Push Notification Send"),
        false,
    ),
    ("users.messages.rcs.Abort", Some("RCS Abort"), true),
    ("users.messages.rcs.Click", Some("RCS Click"), true),
    ("users.messages.rcs.Delivery", Some("RCS Delivery"), true),
    (
        "users.messages.rcs.InboundReceive",
        Some("RCS Inbound Received"),
        true,
    ),
    ("users.messages.rcs.Read", Some("RCS Read"), true),
    ("users.messages.rcs.Rejection", Some("RCS Rejection"), true),
    ("users.messages.rcs.Send", Some("RCS Send"), true),
    ("users.messages.sms.Abort", Some("SMS Abort"), false),
    (
        "users.messages.sms.CarrierSend",
        Some("SMS Carrier Send"),
        false,
    ),
    ("users.messages.sms.Delivery", Some("SMS Delivery"), false),
    (
        "users.messages.sms.DeliveryFailure",
        Some("SMS Delivery Failure"),
        false,
    ),
    (
        "users.messages.sms.InboundReceive",
        Some("SMS Inbound Received"),
        false,
    ),
    ("users.messages.sms.Rejection", Some("SMS Rejection"), false),
    ("users.messages.sms.Retry", Some("SMS Retry"), false),
    ("users.messages.sms.Send", Some("SMS Send"), false),
    (
        "users.messages.sms.ShortLinkClick",
        Some("SMS Short Link Click"),
        false,
    ),
    ("users.messages.webhook.Abort", Some("Webhook Abort"), false),
    (
        "users.messages.webhook.Failure",
        Some("Webhook Failure"),
        false,
    ),
    ("users.messages.webhook.Retry", Some("Webhook Retry"), false),
    ("users.messages.webhook.Send", Some("Webhook Send"), false),
    (
        "users.messages.whatsapp.Abort",
        Some("WhatsApp Abort"),
        false,
    ),
    (
        "users.messages.whatsapp.Click",
        Some("WhatsApp Tracked Link Click"),
        false,
    ),
    (
        "users.messages.whatsapp.Delivery",
        Some("WhatsApp Delivery"),
        false,
    ),
    (
        "users.messages.whatsapp.Failure",
        Some("WhatsApp Failure"),
        false,
    ),
    (
        "users.messages.whatsapp.InboundReceive",
        Some("WhatsApp Inbound Received"),
        false,
    ),
    ("users.messages.whatsapp.Read", Some("WhatsApp Read"), false),
    (
        "users.messages.whatsapp.Retry",
        Some("WhatsApp Retry"),
        false,
    ),
    ("users.messages.whatsapp.Send", Some("WhatsApp Send"), false),
    ("users.profile.Update", None, true),
    ("users.campaigns.Abort", Some("Campaign Abort"), true),
    ("users.canvas.Abort", Some("Canvas Abort"), true),
];

/// The spec's row for a type name, if the spec lists it.
fn spec_row(event_type: &str) -> Option<(Option<&'static str>, bool)> {
    SPEC_TABLE
        .iter()
        .find(|(name, _, _)| *name == event_type)
        .map(|(_, mixpanel_name, open)| (*mixpanel_name, *open))
}

#[test]
fn every_type_of_the_spec_gets_its_name() {
    let mapper = mapper();
    for (event_type, expected, _) in SPEC_TABLE {
        let text = http(event_type, json!({"name": "n"}));
        match (run(&mapper, &text), expected) {
            (Got::Mapped { name, .. }, Some(expected))
                if event_type == "users.behaviors.CustomEvent" =>
            {
                assert_eq!(name, format!("{expected} n"));
            }
            (Got::Mapped { name, .. }, Some(expected)) => {
                assert_eq!(name, expected, "{event_type}")
            }
            (Got::Skipped(SkipReason::NotExportedType), None) => {}
            (other, expected) => panic!("{event_type}: {other:?}, expected {expected:?}"),
        }
    }
    // The code's table lists the same types, in the spec's order.
    let spec_types: Vec<&str> = SPEC_TABLE.iter().map(|(name, _, _)| *name).collect();
    let code_types: Vec<&str> = rules::all_type_names().collect();
    assert_eq!(code_types, spec_types);
}

/// One generated input event, with what the mapping should make of it.
#[derive(Debug, Clone)]
struct Input {
    http: bool,
    /// Whether values are pretty-printed, line breaks and all.
    pretty: bool,
    event_type: String,
    id: String,
    time: i64,
    /// `None`: absent; `Some(None)`: null.
    external: Option<Option<String>>,
    device_id: Option<String>,
    /// In order, keys may repeat.
    properties: Vec<(String, Value)>,
    name: Option<Value>,
    custom: Option<Value>,
    purchase: Option<Value>,
}

/// Values no generated property holds: seeing them in the output means a
/// user field leaked.
const USER_ID_MARKER: &str = "user-id-marker-\u{1f512}";
const TIMEZONE_MARKER: &str = "timezone-marker-\u{1f512}";

/// Keys the storage shape reads as something other than a property.
const STORAGE_RESERVED: &[&str] = &[
    "event_type",
    "id",
    "time",
    "user",
    "properties",
    "user_id",
    "external_user_id",
    "device_id",
    "timezone",
    "name",
    "custom_properties",
    "purchase_properties",
];

const INTERESTING_KEYS: &[&str] = &[
    "time",
    "distinct_id",
    "token",
    "$insert_id",
    "$partner_id",
    "device_model",
    "os_version",
    "content_card_id",
    "canvas_step_message_variation_id",
    "$device",
    "$os",
    "card_id",
    "canvas_step_message_variation_api_id",
    "gender",
    "sdk_version",
    "button_string",
    "device_id",
    "user_id",
    "timezone",
    "app_id",
    "campaign_name",
    "session_id",
    "platform",
    "brand_new_field",
    "[Custom event property] x",
];

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap()
}

impl Input {
    fn to_json(&self) -> String {
        let mut top = vec![
            format!("\"event_type\":{}", json_text(&self.event_type)),
            format!("\"id\":{}", json_text(&self.id)),
            format!("\"time\":{}", self.time),
        ];
        let mut user = vec![
            format!("\"user_id\":{}", json_text(&USER_ID_MARKER)),
            format!("\"timezone\":{}", json_text(&TIMEZONE_MARKER)),
        ];
        match &self.external {
            None => {}
            Some(external) => user.push(format!("\"external_user_id\":{}", json_text(external))),
        }
        if let Some(device_id) = &self.device_id {
            user.push(format!("\"device_id\":{}", json_text(device_id)));
        }
        let text = |value: &Value| {
            if self.pretty {
                serde_json::to_string_pretty(value).unwrap()
            } else {
                value.to_string()
            }
        };
        let mut properties: Vec<String> = self
            .properties
            .iter()
            .map(|(key, value)| format!("{}:{}", json_text(key), text(value)))
            .collect();
        if let Some(name) = &self.name {
            properties.push(format!("\"name\":{}", text(name)));
        }
        if self.http {
            if let Some(custom) = &self.custom {
                properties.push(format!("\"custom_properties\":{}", text(custom)));
            }
            if let Some(purchase) = &self.purchase {
                properties.push(format!("\"purchase_properties\":{}", text(purchase)));
            }
            top.push(format!("\"user\":{{{}}}", user.join(",")));
            top.push(format!("\"properties\":{{{}}}", properties.join(",")));
        } else {
            top.extend(user);
            top.extend(properties);
            if let Some(encoded) = self.storage_nested() {
                top.push(format!("\"properties\":{}", json_text(&encoded)));
            }
        }
        format!("{{{}}}", top.join(","))
    }

    /// The storage shape's JSON-encoded `properties`, for the types that have one.
    fn storage_nested(&self) -> Option<String> {
        let nested = match self.event_type.as_str() {
            "users.behaviors.CustomEvent" => self.custom.as_ref(),
            "users.behaviors.Purchase" => self.purchase.as_ref(),
            _ => None,
        }?;
        Some(match nested {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }

    fn is_custom_event(&self) -> bool {
        self.event_type == "users.behaviors.CustomEvent"
    }

    /// The outcome, worked out from the rules rather than the code.
    fn expected(&self, type_filter: &TypeFilter) -> Got {
        if self.event_type.is_empty() {
            return Got::Invalid(InvalidReason::InvalidEventType);
        }
        if self.id.is_empty() {
            return Got::Invalid(InvalidReason::InvalidId);
        }
        let has_name = matches!(&self.name, Some(Value::String(name)) if !name.is_empty());
        if self.is_custom_event() && !has_name {
            return Got::Invalid(InvalidReason::MissingCustomEventName);
        }
        if spec_row(&self.event_type).is_some_and(|(name, _)| name.is_none()) {
            return Got::Skipped(SkipReason::NotExportedType);
        }
        if !type_filter.allows(&self.event_type) {
            return Got::Skipped(SkipReason::Filtered);
        }
        let usable = match &self.external {
            Some(Some(external)) => {
                let trimmed = external.trim();
                !trimmed.is_empty()
                    && !PLACEHOLDERS
                        .iter()
                        .any(|placeholder| trimmed.to_ascii_lowercase() == *placeholder)
            }
            _ => false,
        };
        if !usable {
            return Got::Skipped(SkipReason::NoExternalUserId);
        }
        Got::Mapped {
            name: String::new(),
            properties: Map::new(),
        }
    }
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,8}",
        "\\PC{0,8}",
        "(?s).{0,6}",
        Just("caf\u{e9} \u{1f600}".to_owned()),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        3 => arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec((arb_string(), inner), 0..3)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((arb_string(), arb_json()), 0..4)
        .prop_map(|entries| Value::Object(entries.into_iter().collect()))
}

fn arb_nested() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        3 => arb_object().prop_map(Some),
        2 => arb_object().prop_map(|object| Some(Value::String(object.to_string()))),
        1 => arb_json().prop_map(Some),
        1 => Just(Some(json!("not json"))),
    ]
}

fn arb_external() -> impl Strategy<Value = Option<Option<String>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(None)),
        2 => (prop::sample::select(PLACEHOLDERS.to_vec()), "[ \t]{0,2}", "[ \t]{0,2}", any::<bool>())
            .prop_map(|(placeholder, before, after, upper)| {
                let placeholder = if upper { placeholder.to_uppercase() } else { placeholder.to_owned() };
                Some(Some(format!("{before}{placeholder}{after}")))
            }),
        4 => "[ a-zA-Z0-9-]{0,10}".prop_map(|id| Some(Some(id))),
        2 => "\\PC{0,10}".prop_map(|id| Some(Some(id))),
    ]
}

fn arb_event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(EventType::ALL.to_vec()).prop_map(|t| t.name().to_owned()),
        2 => prop::sample::select(vec![
            "users.behaviors.CustomEvent",
            "users.behaviors.Purchase",
            "users.campaigns.Abort",
            "users.canvas.Abort",
        ])
        .prop_map(str::to_owned),
        1 => "users\\.[a-z]{1,6}\\.[A-Z][a-z]{0,6}",
        1 => "\\PC{0,8}",
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(INTERESTING_KEYS.to_vec()).prop_map(str::to_owned),
        1 => "[a-z_$]{1,8}",
        1 => arb_string(),
    ]
}

fn arb_input() -> impl Strategy<Value = Input> {
    (
        (any::<bool>(), any::<bool>()),
        arb_event_type(),
        prop_oneof![
            4 => "[A-Za-z0-9-]{1,40}",
            2 => "\\PC{1,40}",
            1 => Just(String::new()),
        ],
        any::<i64>(),
        arb_external(),
        prop::option::of("\\PC{0,8}"),
        prop::collection::vec((arb_key(), arb_json()), 0..8),
        prop_oneof![
            6 => "\\PC{1,8}".prop_map(|name| Some(Value::String(name))),
            1 => Just(None),
            1 => Just(Some(json!(""))),
            1 => arb_json().prop_map(Some),
        ],
        arb_nested(),
        arb_nested(),
    )
        .prop_map(
            |(
                (http, pretty),
                event_type,
                id,
                time,
                external,
                device_id,
                properties,
                name,
                custom,
                purchase,
            )| {
                let mut input = Input {
                    http,
                    pretty,
                    event_type,
                    id,
                    time,
                    external,
                    device_id,
                    properties,
                    name,
                    custom,
                    purchase,
                };
                let reserved: &[&str] = if input.http {
                    &["name", "custom_properties", "purchase_properties"]
                } else {
                    STORAGE_RESERVED
                };
                input
                    .properties
                    .retain(|(key, _)| !reserved.contains(&key.as_str()));
                input
            },
        )
}

fn arb_config() -> impl Strategy<Value = (Option<String>, TypeFilter)> {
    let filters = vec![
        TypeFilter::default(),
        filter(None, &["users.messages.email.*"]),
        filter(Some(&["users.behaviors.*", "users.campaigns.Abort"]), &[]),
    ];
    (
        prop::option::of("[a-z0-9]{0,8}"),
        prop::sample::select(filters),
    )
}

/// Checks one mapped event against its input.
fn check_mapped(input: &Input, token: Option<&str>, name: &str, properties: &Map<String, Value>) {
    // The name, from the spec's table, not the code's.
    let row = spec_row(&input.event_type);
    let expected_name = match row {
        Some((Some(prefix), _)) if input.is_custom_event() => {
            format!(
                "{prefix} {}",
                input.name.as_ref().unwrap().as_str().unwrap()
            )
        }
        Some((Some(name), _)) => name.to_owned(),
        Some((None, _)) => unreachable!("not exported types are skipped"),
        None => input.event_type.clone(),
    };
    assert_eq!(name, expected_name);

    // The envelope.
    assert_eq!(properties["$partner_id"], json!("braze"));
    let external = input.external.clone().flatten().unwrap();
    assert_eq!(properties["distinct_id"], json!(external));
    let insert_id = properties["$insert_id"].as_str().unwrap();
    if is_mixpanel_insert_id(&input.id) {
        assert_eq!(insert_id, input.id);
    } else {
        assert_eq!(insert_id, sha_insert_id(&input.id));
        assert_eq!(insert_id.len(), 32);
        assert!(
            insert_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
    assert_eq!(properties["time"].as_i64(), Some(input.time));
    assert!(properties["time"].is_i64() || properties["time"].is_u64());
    assert_eq!(properties.get("token").and_then(Value::as_str), token);

    // No nulls, no user fields, nothing the type does not send.
    for (key, value) in properties {
        assert!(!value.is_null(), "{key} is null");
        assert_ne!(value, USER_ID_MARKER, "{key}");
        assert_ne!(value, TIMEZONE_MARKER, "{key}");
        assert!(!(input.is_custom_event() && key == "name"));
        assert_ne!(key, "custom_properties");
        assert_ne!(key, "purchase_properties");
    }

    // Properties that pass whatever the type: the last non-null value wins.
    // Types the spec does not list pass every property, like open lists.
    let passes_all = row.is_none_or(|(_, open)| open);
    if passes_all {
        let renamed_keys = [
            "device_model",
            "os_version",
            "content_card_id",
            "canvas_step_message_variation_id",
            "$device",
            "$os",
            "card_id",
            "canvas_step_message_variation_api_id",
            "device_id",
            "time",
            "distinct_id",
            "token",
            "$insert_id",
            "$partner_id",
        ];
        let mut last: BTreeMap<&str, &Value> = BTreeMap::new();
        for (key, value) in &input.properties {
            last.insert(key, value);
        }
        for (key, value) in last {
            // Renamed and envelope keys, and keys that nested properties may reuse.
            if renamed_keys.contains(&key) || key.starts_with('[') {
                continue;
            }
            if !value.is_null() {
                let sent = properties
                    .get(key)
                    .unwrap_or_else(|| panic!("{key} not sent"));
                // Compare through text, so floats round the same way.
                let expected: Value = serde_json::from_str(&value.to_string()).unwrap();
                assert_eq!(sent, &expected, "{key}");
            }
        }
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
    fn mapping_arbitrary_events(input in arb_input(), (token, type_filter) in arb_config()) {
        let mapper = Mapper::new(MappingConfig {
            project_token: token.clone(),
            type_filter: type_filter.clone(),
        });
        let text = input.to_json();
        let outcome = run(&mapper, &text);
        match (&outcome, input.expected(&type_filter)) {
            (Got::Mapped { name, properties }, Got::Mapped { .. }) => {
                check_mapped(&input, token.as_deref(), name, properties);
            }
            (actual, expected) => prop_assert_eq!(actual, &expected, "{}", text),
        }
    }

    #[test]
    fn every_event_of_a_batch_gets_one_outcome(inputs in prop::collection::vec(arb_input(), 0..8)) {
        let mapper = mapper();
        let texts: Vec<String> = inputs.iter().map(Input::to_json).collect();
        let body = format!("{{\"events\":[{}]}}", texts.join(","));
        let batch = Batch::parse(&body).unwrap();
        prop_assert_eq!(batch.events.len(), inputs.len());
        let outcomes = mapper.map_batch(&batch.events);
        prop_assert_eq!(outcomes.len(), inputs.len());
        let mut counts = OutcomeCounts::default();
        for ((outcome, text), input) in outcomes.iter().zip(&texts).zip(&inputs) {
            counts.record(outcome);
            let outcome = got(outcome);
            prop_assert_eq!(&outcome, &run(&mapper, text));
            if let Got::Mapped { properties, .. } = &outcome {
                prop_assert_eq!(properties["time"].as_i64(), Some(input.time));
            }
        }
        prop_assert_eq!(counts.total(), inputs.len() as u64);
        let mapped = outcomes.iter().filter(|o| matches!(o, Outcome::Mapped(_))).count();
        prop_assert_eq!(counts.mapped, mapped as u64);
    }

    #[test]
    fn arbitrary_json_never_panics(value in arb_json(), wrap in any::<bool>()) {
        let value = if wrap { json!({"event_type": "users.messages.email.Open", "id": "a", "time": 1, "properties": value}) } else { value };
        let text = value.to_string();
        let outcome = run(&mapper(), &text);
        if !value.is_object() {
            prop_assert_eq!(outcome, Got::Invalid(InvalidReason::NotAnObject));
        }
    }
}
