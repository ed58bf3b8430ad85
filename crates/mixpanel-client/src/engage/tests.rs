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

#[test]
fn add_needs_numbers_and_union_needs_arrays() {
    let add = ProfileUpdate::new(
        "c",
        ProfileOperation::Add(properties(json!({"coins": 3, "name": "x"}))),
    );
    assert_eq!(
        add.invalid_values().as_deref(),
        Some(r#"$add property "name" is not a number"#)
    );
    let union = ProfileUpdate::new(
        "c",
        ProfileOperation::Union(properties(json!({"tags": ["a"], "one": "b"}))),
    );
    assert_eq!(
        union.invalid_values().as_deref(),
        Some(r#"$union property "one" is not an array"#)
    );
    let fine = ProfileUpdate::new(
        "c",
        ProfileOperation::Add(properties(json!({"coins": -1.5}))),
    );
    assert_eq!(fine.invalid_values(), None);
    let set = ProfileUpdate::new("c", ProfileOperation::Set(properties(json!({"n": "x"}))));
    assert_eq!(set.invalid_values(), None);
}

#[test]
fn answer_bodies_bare_and_verbose() {
    assert!(check_engage_body(&answer(200, "1")).is_ok());
    assert!(check_engage_body(&answer(200, r#"{"status":1,"error":null}"#)).is_ok());
    let refused = check_engage_body(&answer(200, r#"{"status":0,"error":"bad $add"}"#));
    assert!(
        matches!(&refused, Err(Error::Rejected { status: 200, message }) if message == "bad $add"),
        "{refused:?}"
    );
    assert!(matches!(
        check_engage_body(&answer(200, "0")),
        Err(Error::Rejected { status: 200, .. })
    ));
    assert!(matches!(
        check_engage_body(&answer(200, "<html>proxy</html>")),
        Err(Error::InvalidResponse { status: 200, .. })
    ));
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
