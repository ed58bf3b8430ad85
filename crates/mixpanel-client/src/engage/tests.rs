//! `/engage` unit tests: wire shapes, answer bodies, value checks, splits.

use serde_json::json;

use super::*;

fn wire(update: &ProfileUpdate) -> Value {
    serde_json::to_value(WireUpdate {
        token: "tok",
        update,
    })
    .unwrap()
}

fn properties(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn answer(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::from(body.to_owned()),
        attempts: 1,
    }
}

#[test]
fn delete_with_ignore_flags_has_a_null_value_and_both_flags() {
    let mut update = ProfileUpdate::new("cust-1", ProfileOperation::Delete);
    update.ignore_time = true;
    update.ignore_alias = true;
    assert_eq!(
        wire(&update),
        json!({"$token": "tok", "$distinct_id": "cust-1", "$delete": null,
               "$ignore_time": true, "$ignore_alias": true})
    );
    let text = serde_json::to_string(&WireUpdate {
        token: "tok",
        update: &ProfileUpdate::new("cust-1", ProfileOperation::Unset(vec!["a".into()])),
    })
    .unwrap();
    assert_eq!(
        text, r#"{"$token":"tok","$distinct_id":"cust-1","$unset":["a"]}"#,
        "token and distinct id come first, flags only when set"
    );
}

fn violation(operation: ProfileOperation) -> Option<String> {
    ProfileUpdate::new("c", operation).spec_violation()
}

#[test]
fn add_needs_numbers_and_union_needs_arrays() {
    assert_eq!(
        violation(ProfileOperation::Add(properties(
            json!({"coins": 3, "name": "x"})
        )))
        .as_deref(),
        Some(r#"property "name" is not a number"#)
    );
    assert_eq!(
        violation(ProfileOperation::Union(properties(
            json!({"tags": ["a"], "one": "b"})
        )))
        .as_deref(),
        Some(
            r#"property "one" is not a list; Mixpanel takes a non-empty list of numbers and strings"#
        )
    );
    assert_eq!(
        violation(ProfileOperation::Add(properties(json!({"coins": -1.5})))),
        None
    );
    assert_eq!(
        violation(ProfileOperation::Set(properties(json!({"n": "x"})))),
        None
    );
}

/// What Mixpanel's spec refuses: `$union` is `minProperties: 1`, each
/// value `minItems: 1` of numbers and strings; `$unset` is `minItems: 1`.
#[test]
fn union_and_unset_are_held_to_the_spec() {
    let union = |value: Value| violation(ProfileOperation::Union(properties(value)));
    assert_eq!(union(json!({})).as_deref(), Some("no property to union"));
    for (value, problem) in [
        (json!({"t": []}), "is an empty list"),
        (json!({"t": ["a", {"b": 1}]}), "holds a value"),
        (json!({"t": [true]}), "holds a value"),
        (json!({"t": [null]}), "holds a value"),
        (json!({"t": [["nested"]]}), "holds a value"),
        (json!({"ok": [1], "t": {"a": 1}}), "is not a list"),
    ] {
        let message = union(value.clone()).unwrap_or_default();
        assert!(message.contains(problem), "{value}: {message}");
        assert!(
            message.starts_with(r#"property "t" "#),
            "{value}: {message}"
        );
    }
    assert_eq!(union(json!({"t": ["a", 1, -2.5]})), None);

    assert_eq!(
        violation(ProfileOperation::Unset(Vec::new())).as_deref(),
        Some("no property to unset")
    );
    assert_eq!(violation(ProfileOperation::Unset(vec!["a".into()])), None);
    assert_eq!(violation(ProfileOperation::Set(Map::new())), None);
    assert_eq!(violation(ProfileOperation::Delete), None);
}

#[test]
fn a_description_names_the_update() {
    let update = ProfileUpdate::new("cust-1", ProfileOperation::Unset(Vec::new()));
    assert_eq!(
        update.describe(3, "no property to unset"),
        r#"update 3 (distinct_id "cust-1", $unset): no property to unset"#
    );
}

#[test]
fn answer_bodies_bare_and_verbose() {
    let read = |status: u16, body: &str| read_engage_answer(&answer(status, body), 3);
    assert_eq!(read(200, "1").unwrap(), []);
    assert_eq!(read(200, r#"{"status":1,"error":null}"#).unwrap(), []);
    let refused = read(200, r#"{"status":0,"error":"bad $add"}"#);
    assert!(
        matches!(&refused, Err(Error::Rejected { status: 200, message }) if message == "bad $add"),
        "{refused:?}"
    );
    assert!(matches!(
        read(200, "0"),
        Err(Error::Rejected { status: 200, .. })
    ));
    assert!(matches!(
        read(200, "<html>proxy</html>"),
        Err(Error::InvalidResponse { status: 200, .. })
    ));
    assert!(matches!(
        read(400, r#"{"error":"bad request"}"#),
        Err(Error::Rejected { status: 400, message }) if message == "bad request"
    ));
}

#[test]
fn strict_answers_name_the_refused_updates() {
    let read = |status: u16, body: &str| read_engage_answer(&answer(status, body), 3);
    for status in [200, 400] {
        let refused = read(
            status,
            r#"{"status":0,"error":"some updates failed","failed_records":[
                {"index":2,"$distinct_id":"c","message":"bad $union"},
                {"index":0.0,"message":"bad $add"},
                {"index":2,"message":"bad $union"}]}"#,
        )
        .unwrap();
        assert_eq!(
            refused,
            [(0, "bad $add".to_owned()), (2, "bad $union".to_owned())],
            "{status}"
        );
    }
    assert_eq!(
        read(200, r#"{"status":1,"failed_records":[]}"#).unwrap(),
        []
    );
    assert_eq!(
        read(200, r#"{"failed_records":[{"index":1}]}"#).unwrap(),
        [(1, "no message".to_owned())]
    );
    // An entry naming no update spoils the answer as a whole.
    for entry in [
        r#"{"index":3}"#,
        r#"{"index":1.5}"#,
        r#"{"index":-1}"#,
        r#"{}"#,
    ] {
        let body = format!(r#"{{"status":1,"failed_records":[{{"index":0}},{entry}]}}"#);
        assert!(
            matches!(
                read(200, &body),
                Err(Error::InvalidResponse { status: 200, .. })
            ),
            "{entry}"
        );
    }
}

#[test]
fn chunks_split_in_order_and_bodies_are_json_arrays() {
    let mut chunk = EngageChunk::default();
    for index in 0..5 {
        chunk.push(index, format!("{{\"i\":{index}}}").into_bytes(), false);
    }
    assert_eq!(
        &chunk.body()[..],
        br#"[{"i":0},{"i":1},{"i":2},{"i":3},{"i":4}]"#
    );
    let (first, second) = chunk.split();
    assert_eq!(&first.body()[..], br#"[{"i":0},{"i":1},{"i":2}]"#);
    assert_eq!(&second.body()[..], br#"[{"i":3},{"i":4}]"#);
    assert_eq!(second.updates[0].0, 3);
    assert!(!first.is_delete && !second.is_delete);
    assert_eq!(
        first.n_bytes + second.n_bytes,
        first.body().len() + second.body().len() - 2
    );
}

#[test]
fn a_chunk_is_full_at_2000_updates_or_10_mb() {
    let mut chunk = EngageChunk::default();
    for index in 0..MAX_UPDATES_PER_REQUEST {
        assert!(chunk.has_room_for(10));
        chunk.push(index, vec![b'1'; 10], false);
    }
    assert!(!chunk.has_room_for(10));

    let mut chunk = EngageChunk::default();
    chunk.push(0, vec![b'1'; MAX_REQUEST_BYTES - 1000], false);
    assert!(chunk.has_room_for(100));
    assert!(!chunk.has_room_for(1000));
}

#[test]
fn the_token_is_scrubbed_from_messages() {
    let error = redact(
        Error::Rejected {
            status: 200,
            message: "invalid token tok-123 for project".to_owned(),
        },
        "tok-123",
    );
    assert_eq!(
        error.to_string(),
        "Mixpanel rejected the request (HTTP 200): invalid token [redacted] for project"
    );
}

#[test]
fn deletes_are_sent_without_ip_and_everything_else_with_it() {
    let mut chunk = EngageChunk::default();
    chunk.push(0, b"{}".to_vec(), false);
    assert_eq!(
        chunk.url("https://api.mixpanel.com"),
        "https://api.mixpanel.com/engage?verbose=1&strict=1&ip=0"
    );
    chunk.is_delete = true;
    chunk.push(1, b"{}".to_vec(), false);
    assert_eq!(
        chunk.url("https://api.mixpanel.com"),
        "https://api.mixpanel.com/engage?verbose=1&strict=1"
    );
    let (first, second) = chunk.split();
    assert!(first.is_delete && second.is_delete, "halves keep the kind");
}
