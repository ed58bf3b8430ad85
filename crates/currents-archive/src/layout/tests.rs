//! Key parsing, pruning and our batch keys.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

const BRAZE_KEY: &str = "currents/dataexport.prod-03.S3.integration.5f3c0ffee0ddba11c0ffee42/event_type=users.messages.email.Open/date=2024-11-28-11/version=10/prod/dataexport.prod-03.S3.integration.5f3c0ffee0ddba11c0ffee42+0+0000015000.avro";

/// 2024-11-28T00:00:00Z.
const DAY: i64 = 1_732_752_000;

#[test]
fn a_braze_key_tells_type_hour_version_and_kind() {
    let info = KeyInfo::parse(BRAZE_KEY);
    assert_eq!(info.event_type, Some("users.messages.email.Open"));
    assert_eq!(
        info.period,
        Some(Period {
            start: DAY + 11 * 3_600,
            end: DAY + 12 * 3_600
        })
    );
    assert_eq!(info.version, Some(10));
    assert_eq!(info.kind, Some(ObjectKind::Avro));
    assert_eq!(info.workspace, None);
}

#[test]
fn a_day_folder_is_the_whole_day() {
    let info = KeyInfo::parse("event_type=users.behaviors.CustomEvent/date=2024-11-28/x.avro");
    assert_eq!(
        info.period,
        Some(Period {
            start: DAY,
            end: DAY + 86_400
        })
    );
}

#[test]
fn segments_that_do_not_read_say_nothing() {
    for key in [
        "date=soon/x.avro",
        "date=2024-13-01-00/x.avro",
        "date=2024-02-30/x.avro",
        "date=2023-02-29-00/x.avro",
        "date=2024-11-28-24/x.avro",
        "date=2024-11-28T11/x.avro",
        "date=+024-11-28/x.avro",
        "event_type=/version=x/x.avro",
    ] {
        let info = KeyInfo::parse(key);
        assert_eq!(
            (info.event_type, info.period, info.version),
            (None, None, None),
            "{key}"
        );
    }
    assert!(parse_date("2024-02-29-23").is_some(), "a leap day");
    assert!(parse_date("2000-02-29").is_some(), "a leap century");
    assert!(parse_date("1900-02-29").is_none(), "not a leap century");
}

#[test]
fn kinds_come_from_the_extension() {
    for (key, kind) in [
        ("a/b.avro", Some(ObjectKind::Avro)),
        ("a/B.AVRO", Some(ObjectKind::Avro)),
        ("a/b.json", Some(ObjectKind::Batches)),
        ("a/b.json.gz", Some(ObjectKind::Batches)),
        ("a/b.ndjson", Some(ObjectKind::Batches)),
        ("a/b.ndjson.gz", Some(ObjectKind::Batches)),
        ("a/_SUCCESS", None),
        ("a/b.avro.crc", None),
        ("a/.avro", None),
        ("a/b.gz", None),
        ("a/é.avro", Some(ObjectKind::Avro)),
        ("a/é", None),
    ] {
        assert_eq!(ObjectKind::from_key(key), kind, "{key}");
    }
}

fn email_only() -> EventTypePredicate {
    Arc::new(|event_type: &str| event_type.starts_with("users.messages.email."))
}

#[test]
fn prune_skips_types_and_hours_and_keeps_the_rest() {
    let prune = Prune::new()
        .event_types(email_only())
        .since(DAY + 10 * 3_600)
        .until(DAY + 12 * 3_600);
    assert!(prune.keeps_folder("event_type=users.messages.email.Open"));
    assert!(!prune.keeps_folder("event_type=users.behaviors.CustomEvent"));
    assert!(!prune.keeps_folder("date=2024-11-28-09"), "ends at since");
    assert!(prune.keeps_folder("date=2024-11-28-10"));
    assert!(prune.keeps_folder("date=2024-11-28-11"));
    assert!(!prune.keeps_folder("date=2024-11-28-12"), "starts at until");
    assert!(prune.keeps_folder("date=2024-11-28"), "the day overlaps");
    assert!(!prune.keeps_folder("date=2024-11-27"));
    for other in [
        "version=10",
        "prod",
        "dataexport.prod-03.S3.integration.x",
        "workspace=_",
        "date=soon",
    ] {
        assert!(prune.keeps_folder(other), "{other}");
    }
    assert!(prune.keeps_key(BRAZE_KEY));
    assert!(!prune.keeps_key(&BRAZE_KEY.replace("email.Open", "sms.Send")));
    assert!(!prune.keeps_key(&BRAZE_KEY.replace("2024-11-28-11", "2024-11-28-12")));
    assert!(
        prune.keeps_key("somewhere/else/file.avro"),
        "no segments: kept"
    );
}

#[test]
fn an_empty_prune_keeps_everything() {
    let prune = Prune::new();
    assert!(!prune.filters_types() && !prune.filters_time());
    assert!(prune.keeps_folder("event_type=anything"));
    assert!(prune.keeps_folder("date=1970-01-01-00"));
    assert!(prune.keeps_key(BRAZE_KEY));
    assert!(format!("{:?}", Prune::new().event_types(email_only())).contains("<predicate>"));
}

#[test]
fn batch_keys_follow_our_layout() {
    let body = br#"{"events":[]}"#;
    let key = batch_object_key("/archive/", Some("acme eu_1"), 1_732_792_801_234, body);
    let hash = &key[key.rfind('-').unwrap() + 1..key.len() - ".json.gz".len()];
    assert_eq!(
        key,
        format!("archive/date=2024-11-28-11/workspace=acme_20eu_5f1/1732792801234-{hash}.json.gz")
    );
    assert_eq!(hash.len(), 16);
    assert!(hash.bytes().all(|byte| byte.is_ascii_hexdigit()));
    let info = KeyInfo::parse(&key);
    assert_eq!(info.workspace.as_deref(), Some("acme eu_1"));
    assert_eq!(info.kind, Some(ObjectKind::Batches));
    assert_eq!(
        info.period.map(|period| period.start),
        Some(DAY + 11 * 3_600)
    );

    assert_eq!(
        batch_object_key("", None, 0, body),
        format!("date=1970-01-01-00/workspace=_/0-{hash}.json.gz")
    );
    assert_eq!(
        KeyInfo::parse(&batch_object_key("", Some(""), 0, body)).workspace,
        None
    );
    assert_ne!(
        batch_object_key("", None, 0, body),
        batch_object_key("", None, 0, br#"{"events": []}"#),
        "the hash is the body's"
    );
}

#[test]
fn workspace_names_are_one_safe_segment() {
    assert_eq!(encode_workspace("acme-prod.eu"), "acme-prod.eu");
    assert_eq!(encode_workspace("_"), "_5f");
    assert_eq!(encode_workspace("."), "_2e");
    assert_eq!(encode_workspace(".."), "_2e.");
    assert_eq!(encode_workspace("a/b"), "a_2fb");
    assert_eq!(encode_workspace("é"), "_c3_a9");
    assert_eq!(
        decode_workspace("not_zzencoded").as_deref(),
        Some("not_zzencoded")
    );
}

proptest! {
    #[test]
    fn any_workspace_round_trips(name in any::<String>()) {
        let segment = encode_workspace(&name);
        prop_assert!(!segment.is_empty() && segment != "." && segment != "..");
        prop_assert!(segment.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-._".contains(&byte)));
        let expected = (!name.is_empty()).then(|| name.clone());
        prop_assert_eq!(decode_workspace(&segment), expected);
    }

    #[test]
    fn any_hour_round_trips(unix_secs in -62_135_596_800_i64..253_402_300_799) {
        let text = format_hour(unix_secs);
        let period = parse_date(&text).unwrap();
        prop_assert!(period.start <= unix_secs && unix_secs < period.end);
        prop_assert_eq!(period.end - period.start, 3_600);
        let day = parse_date(&text[..10]).unwrap();
        prop_assert!(day.start <= period.start && period.end <= day.end);
    }

    #[test]
    fn a_period_is_kept_exactly_when_it_overlaps_the_window(
        start in 0_i64..1_000, len in 1_i64..100, since in 0_i64..1_000, width in 0_i64..200,
    ) {
        let period = Period { start, end: start + len };
        let prune = Prune::new().since(since).until(since + width);
        let overlaps = (start..start + len).any(|second| (since..since + width).contains(&second));
        prop_assert_eq!(prune.keeps_period(period), overlaps);
    }
}
