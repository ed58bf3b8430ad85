//! Tests of the synthetic event generator: determinism by seed, every event
//! parses and has its type's required fields, size band and padding, knobs.

use super::{Config, Generator, Mix};
use crate::{Batch, Event, EventType, EventTypeName, FieldLocation, NestedProperties};

/// FNV-1a, to pin the generator's output in a few bytes.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks that `text` parses as an event of `event_type` with every field
/// its schema requires, and returns the parsed event.
fn check_event<'a>(text: &'a str, event_type: EventType) -> Event<'a> {
    let event = match Event::parse(text) {
        Ok(event) => event,
        Err(invalid) => panic!("{}: {} in {text}", invalid.reason, invalid.detail),
    };
    assert_eq!(event.event_type, EventTypeName::Known(event_type), "{text}");
    for field in event_type.fields().iter().filter(|field| field.required) {
        let present = match (field.location, field.name) {
            (FieldLocation::Top, _) => true, // `id` and `time`: the parser insists.
            (FieldLocation::User, "user_id") => event.user.user_id.is_some(),
            (FieldLocation::User, "external_user_id") => event.user.external_user_id.is_some(),
            (FieldLocation::User, "device_id") => event.user.device_id.is_some(),
            (FieldLocation::User, "timezone") => event.user.timezone.is_some(),
            (FieldLocation::User, other) => event.user.extra.iter().any(|p| p.key == other),
            (FieldLocation::Properties, "name")
                if event_type == EventType::BehaviorsCustomEvent =>
            {
                event.custom_event_name.is_some()
            }
            (FieldLocation::Properties, name) => event
                .properties
                .iter()
                .any(|property| property.key == name && !property.is_null()),
            (FieldLocation::CustomProperties, _) => {
                matches!(event.custom_properties, Some(NestedProperties::Object(_)))
            }
            (FieldLocation::PurchaseProperties, _) => {
                matches!(event.purchase_properties, Some(NestedProperties::Object(_)))
            }
        };
        assert!(
            present,
            "{}: required field {} missing in {text}",
            event_type.name(),
            field.name
        );
    }
    event
}

#[test]
fn the_same_seed_gives_the_same_events_and_another_seed_others() {
    let first = Generator::new(Config::new(7)).envelope(500);
    let second = Generator::new(Config::new(7)).envelope(500);
    let other = Generator::new(Config::new(8)).envelope(500);
    assert_eq!(first, second);
    assert_ne!(first, other);
    // The iterator and `write_event` agree.
    let mut one_by_one = String::new();
    let mut generator = Generator::new(Config::new(7));
    for (n, event) in generator.by_ref().take(500).enumerate() {
        one_by_one.push_str(if n == 0 { "{\"events\":[" } else { "," });
        one_by_one.push_str(&event);
    }
    one_by_one.push_str("]}");
    assert_eq!(one_by_one, first);
}

/// The output for a seed is pinned: the same on every machine, and a change
/// to it is deliberate (the benchmark figures in `docs/benchmarks.md` are
/// taken on these bytes; retake them when this changes).
#[test]
fn a_seed_gives_these_exact_bytes() {
    let body = Generator::new(Config::new(1)).envelope(1_000);
    assert_eq!(
        (body.len(), fnv1a(&body)),
        (708_798, 0x9c66_81a7_a366_aa17),
        "the generator's output changed"
    );
}

#[test]
fn every_type_parses_with_its_required_fields() {
    let mut generator = Generator::new(Config::new(11));
    for &event_type in &EventType::ALL {
        for _ in 0..40 {
            let mut text = String::new();
            let generated = generator.write_event_of(event_type, &mut text);
            assert_eq!(generated.event_type, event_type);
            assert_eq!(generated.span, 0..text.len());
            let event = check_event(&text, event_type);
            let id = &text[generated.id.clone()];
            assert_eq!(event.id, id);
            assert_eq!(id.len(), 36, "{id}");
            assert!(
                id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
                "{id}"
            );
        }
    }
}

#[test]
fn every_type_parses_with_every_optional_field_and_with_none() {
    for optional in [0, 100] {
        let config = Config::new(12).optional_fields(optional).any_size();
        let mut generator = Generator::new(config);
        for &event_type in &EventType::ALL {
            let mut text = String::new();
            generator.write_event_of(event_type, &mut text);
            check_event(&text, event_type);
        }
    }
}

#[test]
fn the_production_mix_stays_in_its_size_band() {
    let mut generator = Generator::new(Config::new(13));
    let mut body = String::new();
    let generated = generator.write_envelope(10_000, &mut body);
    let mut types = std::collections::BTreeSet::new();
    let mut below = 0;
    for (parsed, generated) in Batch::parse_events(&body)
        .expect("an envelope")
        .into_iter()
        .zip(&generated)
    {
        assert_eq!(parsed.raw, &body[generated.span.clone()]);
        check_event(parsed.raw, generated.event_type);
        types.insert(generated.event_type);
        let len = parsed.raw.len();
        assert!(len <= 2_000, "{len} bytes: {}", parsed.raw);
        assert_eq!(generated.in_band, len >= 300);
        if len < 300 {
            below += 1;
            // Only a type whose whole schema is that small.
            assert_eq!(
                generated.event_type,
                EventType::UserDeleteRequest,
                "{}",
                parsed.raw
            );
        }
    }
    assert_eq!(generated.len(), 10_000);
    assert_eq!(types.len(), EventType::ALL.len(), "every type occurs");
    assert!(below <= 100, "{below} events under 300 bytes");
}

#[test]
fn padding_fills_events_up_to_the_band_in_their_own_properties() {
    let config = Config::new(14)
        .mix(Mix::uniform())
        .size_band(3_000, 3_016)
        .custom_properties(0..=0)
        .padding(true);
    let mut generator = Generator::new(config);
    for &event_type in &EventType::ALL {
        let mut text = String::new();
        let generated = generator.write_event_of(event_type, &mut text);
        assert!(generated.in_band, "{} bytes: {text}", text.len());
        let event = check_event(&text, event_type);
        let padded = |properties: &Option<NestedProperties<'_>>| match properties {
            Some(NestedProperties::Object(properties)) => {
                properties.iter().any(|property| property.key == "0")
            }
            _ => false,
        };
        match event_type {
            EventType::BehaviorsCustomEvent => assert!(padded(&event.custom_properties)),
            EventType::BehaviorsPurchase => assert!(padded(&event.purchase_properties)),
            _ => assert!(event.properties.iter().any(|p| p.key == "0")),
        }
    }
    // Without padding, the same events stay small.
    let config = Config::new(14).size_band(3_000, 3_016);
    let mut generator = Generator::new(config);
    let mut text = String::new();
    let generated = generator.write_event_of(EventType::BehaviorsCustomEvent, &mut text);
    assert!(!generated.in_band && text.len() < 3_000);
}

#[test]
fn knobs_change_what_they_say() {
    let only_click = Config::new(15)
        .mix(Mix::weighted(&[
            (EventType::MessagesEmailClick, 3),
            (EventType::BehaviorsCustomEvent, 1),
            (EventType::BehaviorsPurchase, 0),
        ]))
        .users(1)
        .external_ids(100)
        .custom_properties(12..=12)
        .start_time(1_800_000_000);
    let mut generator = Generator::new(only_click);
    let mut user_ids = std::collections::BTreeSet::new();
    let mut clicks = 0;
    let mut last_time = 1_800_000_000;
    for text in generator.by_ref().take(400) {
        let event = Event::parse(&text).expect("valid");
        let event_type = event.event_type.known().expect("known");
        assert!(event.external_user_id().is_some());
        user_ids.insert(event.user.user_id.clone().expect("user_id").into_owned());
        assert!((last_time..=last_time + 2).contains(&event.time));
        last_time = event.time;
        match event_type {
            EventType::MessagesEmailClick => clicks += 1,
            EventType::BehaviorsCustomEvent => match &event.custom_properties {
                Some(NestedProperties::Object(properties)) => assert_eq!(properties.len(), 12),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?} is not in the mix"),
        }
    }
    assert_eq!(user_ids.len(), 1);
    assert!((250..350).contains(&clicks), "{clicks} clicks of 400");

    let anonymous = Config::new(16).external_ids(0).users(50);
    for text in Generator::new(anonymous).take(200) {
        assert_eq!(Event::parse(&text).expect("valid").external_user_id(), None);
    }
    let mut many_users = Generator::new(
        Config::new(17)
            .users(1_000_000)
            .mix(Mix::only(EventType::BehaviorsCustomEvent)),
    );
    let ids: std::collections::BTreeSet<String> = many_users
        .by_ref()
        .take(1_000)
        .map(|text| {
            let event = Event::parse(&text).expect("valid");
            event.user.user_id.expect("user_id").into_owned()
        })
        .collect();
    assert!(ids.len() > 990, "{} distinct users", ids.len());
}

#[test]
fn a_user_is_the_same_in_every_event() {
    let mut generator = Generator::new(
        Config::new(18)
            .users(3)
            .external_ids(100)
            .mix(Mix::only(EventType::MessagesEmailOpen)),
    );
    let mut seen = std::collections::BTreeMap::new();
    for text in generator.by_ref().take(300) {
        let event = Event::parse(&text).expect("valid");
        let user_id = event.user.user_id.clone().expect("user_id").into_owned();
        let external = event.external_user_id().expect("external").to_owned();
        assert_eq!(
            seen.entry(user_id).or_insert_with(|| external.clone()),
            &external
        );
    }
    assert_eq!(seen.len(), 3);
}

#[test]
#[should_panic(expected = "positive weight")]
fn a_mix_of_nothing_is_refused() {
    let _ = Mix::weighted(&[(EventType::BehaviorsPurchase, 0)]);
}
