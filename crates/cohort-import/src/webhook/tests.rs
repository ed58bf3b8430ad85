//! Tests of reading, checking and answering webhook pages.

use serde_json::{Value, json};

use super::*;

fn body(action: &str, page: u32, total: u32, members: Value) -> Vec<u8> {
    json!({
        "action": action,
        "parameters": {
            "mixpanel_project_id": 123,
            "mixpanel_cohort_id": "77",
            "mixpanel_cohort_name": "Power users",
            "mixpanel_session_id": "sess-1",
            "page_info": {"total_pages": total, "page_count": page},
            "members": members,
        }
    })
    .to_string()
    .into_bytes()
}

#[test]
fn reads_a_page_with_ids_as_numbers_or_strings() {
    let page = parse_page(
        &body(
            "members",
            2,
            3,
            json!([{"mixpanel_distinct_id": 42, "email": "a@example.com"}, {"mixpanel_distinct_id": "u2"}]),
        ),
        10,
    )
    .unwrap();
    assert_eq!(page.kind, PageKind::Snapshot);
    assert_eq!(page.cohort.project_id, "123");
    assert_eq!(page.cohort.cohort_id, "77");
    assert_eq!((page.page, page.total_pages), (2, Some(3)));
    assert_eq!(page.members[0].distinct_id.as_deref(), Some("42"));
    assert_eq!(page.members[0].properties["email"], "a@example.com");
}

#[test]
fn refuses_what_is_malformed_with_a_message() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not a JSON object"),
        (b"\xff\xfe{}".to_vec(), "not a JSON object"),
        (
            br#"{"action": "delete_all", "parameters": {}}"#.to_vec(),
            "unknown action",
        ),
        (br#"{"action": "members"}"#.to_vec(), "parameters"),
        (
            br#"{"action": "members", "parameters": {"mixpanel_cohort_id": "1"}}"#.to_vec(),
            "mixpanel_project_id is missing",
        ),
        (body("members", 4, 3, json!([])), "beyond total_pages"),
        (body("members", 0, 3, json!([])), "page_count must be"),
        (
            body("members", 1, 3, json!(["x"])),
            "member 0 is not an object",
        ),
        (
            body("add_members", 1, 1, json!([1, 2])),
            "member 0 is not an object",
        ),
        (
            body("add_members", 1, 1, json!({"a": 1})),
            "expected a list of member objects",
        ),
        (
            body("add_members", 1, 1, json!([{}, {}, {}])),
            "more than 2 members; at most 2 are accepted",
        ),
        ("[".repeat(10_000).into_bytes(), "not a JSON object"),
    ];
    for (body, expected) in cases {
        let error = parse_page(&body, 2).expect_err(expected);
        assert!(
            error.message.contains(expected),
            "{expected:?} not in {:?}",
            error.message
        );
    }
}

#[test]
fn a_page_without_session_is_keyed_by_its_body() {
    let text = br#"{"action":"add_members","parameters":{"mixpanel_project_id":"1","mixpanel_cohort_id":"2","members":[{"mixpanel_distinct_id":"a"}]}}"#;
    let first = parse_page(text, 10).unwrap();
    let again = parse_page(text, 10).unwrap();
    assert_eq!(first.session_id, again.session_id);
    assert!(first.session_id.starts_with("body-sha256:"));
    assert_eq!((first.page, first.total_pages), (1, Some(1)));
}

#[test]
fn basic_credentials_are_checked() {
    let config = WebhookConfig::new(IdentityRule::DistinctId).credentials(["mp:old", "mp:new"]);
    let header = |pair: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    assert!(config.accepts(Some(&header("mp:old"))));
    assert!(config.accepts(Some(&header("mp:new"))));
    assert!(!config.accepts(Some(&header("mp:wrong"))));
    assert!(!config.accepts(Some("Bearer mp:new")));
    assert!(!config.accepts(Some("Basic !!!")));
    assert!(!config.accepts(None));
    assert!(WebhookConfig::new(IdentityRule::DistinctId).accepts(None));
    assert!(!format!("{config:?}").contains("mp:old"));
}

#[test]
fn pages_without_page_info_or_with_zero_pages() {
    let snapshot = br#"{"action":"members","parameters":{"mixpanel_project_id":"1","mixpanel_cohort_id":"2","members":[]}}"#;
    let page = parse_page(snapshot, 10).unwrap();
    // A snapshot page of unknown size can never complete (remove anyone).
    assert_eq!((page.page, page.total_pages), (1, None));
    let empty = body("members", 0, 0, json!([]));
    let page = parse_page(&empty, 10).unwrap();
    assert_eq!((page.page, page.total_pages), (1, Some(1)));
}
