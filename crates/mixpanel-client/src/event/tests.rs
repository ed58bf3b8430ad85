//! Unit tests for the event type: key uniqueness, borrowing, round trips.

use super::*;

#[test]
fn insert_replaces_an_existing_key_in_place() {
    let mut properties = Properties::default();
    properties.insert("a", PropertyValue::Integer(1));
    properties.insert("b", PropertyValue::Integer(2));
    let old = properties.insert("a", PropertyValue::Integer(3));
    assert_eq!(old, Some(PropertyValue::Integer(1)));
    let keys: Vec<&str> = properties.iter().map(|(key, _)| key).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(properties.get("a"), Some(&PropertyValue::Integer(3)));
}

#[test]
fn keys_with_the_same_fingerprint_stay_distinct() {
    // Same length, first, middle and last bytes: the same fingerprint bit.
    let mut properties = Properties::default();
    properties.insert("a11m2qz", PropertyValue::Integer(1));
    properties.insert("a99m8qz", PropertyValue::Integer(2));
    assert_eq!(super::fingerprint("a11m2qz"), super::fingerprint("a99m8qz"));
    assert_eq!(properties.len(), 2);
    assert_eq!(properties.get("a99m8qz"), Some(&PropertyValue::Integer(2)));
    assert_eq!(properties.get("a55m5qz"), None);
}

#[test]
fn parsing_borrows_values_and_keeps_the_last_duplicate() {
    let text = r#"{"event":"Session Start","properties":{"time":5,"distinct_id":"u\"1","time":7,"nested":{"x":[1,2]}}}"#;
    let event = Event::from_json(text).unwrap();
    assert_eq!(event.name, "Session Start");
    assert_eq!(event.time(), Some(7));
    assert_eq!(event.properties.len(), 3);
    // An escaped string is not returned as a slice of the JSON text.
    assert_eq!(event.distinct_id(), None);
    assert_eq!(
        event.to_json(),
        r#"{"event":"Session Start","properties":{"time":7,"distinct_id":"u\"1","nested":{"x":[1,2]}}}"#
    );
}

#[test]
fn strings_are_escaped_when_written() {
    let mut event = Event::new("Name \"quoted\"\n");
    event
        .properties
        .insert("k\u{7}", PropertyValue::from("é \\ \u{1F600}"));
    let reparsed: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(reparsed["event"], "Name \"quoted\"\n");
    assert_eq!(reparsed["properties"]["k\u{7}"], "é \\ \u{1F600}");
}

#[test]
fn an_event_without_a_name_is_an_error() {
    assert!(Event::from_json(r#"{"properties":{}}"#).is_err());
    assert!(Event::from_json(r#"{"event":1}"#).is_err());
}

#[test]
fn equality_ignores_order_and_representation() {
    let a = Event::from_json(r#"{"event":"E","properties":{"a":"x","b":1}}"#).unwrap();
    let mut b = Event::new("E");
    b.properties.insert("b", PropertyValue::Integer(1));
    b.properties.insert("a", PropertyValue::from("x"));
    assert_eq!(a, b);
}

proptest::proptest! {
    #[test]
    fn properties_never_hold_a_key_twice(keys in proptest::collection::vec("[a-d]{0,3}", 0..40)) {
        let mut properties = Properties::default();
        for (idx, key) in keys.iter().enumerate() {
            properties.insert(key.clone(), PropertyValue::Integer(idx as i64));
        }
        let mut distinct: Vec<&String> = keys.iter().collect();
        distinct.sort();
        distinct.dedup();
        proptest::prop_assert_eq!(properties.len(), distinct.len());
        for key in distinct {
            let last = keys.iter().rposition(|k| k == key).unwrap() as i64;
            proptest::prop_assert_eq!(properties.get(key), Some(&PropertyValue::Integer(last)));
        }
    }

    #[test]
    fn write_json_writes_what_serde_json_writes(
        name in "(?s).{0,12}",
        entries in proptest::collection::vec(("(?s).{0,10}", 0u8..3, "(?s).{0,10}", proptest::num::i64::ANY), 0..8),
    ) {
        let mut event = Event::new(name);
        for (key, kind, text, number) in entries {
            let value = match kind {
                0 => PropertyValue::from(text),
                1 => PropertyValue::Integer(number),
                _ => {
                    // JSON text with a line break inside, as cut from a pretty-printed document.
                    let json = format!("[\n {},\n {number}\n]", serde_json::to_string(&text).unwrap());
                    PropertyValue::Json(std::borrow::Cow::Owned(
                        serde_json::value::RawValue::from_string(json).unwrap(),
                    ))
                }
            };
            event.properties.insert(key, value);
        }
        let mut written = Vec::new();
        event.write_json(&mut written);
        proptest::prop_assert_eq!(String::from_utf8(written).unwrap(), serde_json::to_string(&event).unwrap());
    }

    #[test]
    fn needs_escape_finds_every_byte_json_escapes(
        prefix in proptest::collection::vec(0x20u8..0x80, 0..20),
        special in proptest::prop_oneof![0u8..0x20, proptest::strategy::Just(b'"'), proptest::strategy::Just(b'\\')],
        clean_high in proptest::collection::vec(0x80u8..=0xff, 0..12),
    ) {
        let clean: Vec<u8> = prefix.iter().copied().filter(|b| *b != b'"' && *b != b'\\').chain(clean_high).collect();
        proptest::prop_assert!(!super::needs_escape(&clean));
        for at in 0..=clean.len() {
            let mut dirty = clean.clone();
            dirty.insert(at, special);
            proptest::prop_assert!(super::needs_escape(&dirty), "{:?}", dirty);
        }
    }
}
