//! Query API unit tests: form bodies, regional hosts, lenient parsing.

use super::*;
use crate::{Credentials, Region};

fn pager(client: &Client, query: MemberQuery, cursor: Cursor) -> MemberPager {
    MemberPager {
        client: client.clone(),
        cohort_id: 1234,
        query,
        cursor,
        page_size: None,
        members: Vec::new().into_iter(),
    }
}

fn client(region: Region) -> Client {
    Client::builder(Credentials::service_account("svc", "secret", "42"))
        .region(region)
        .build()
        .unwrap()
}

#[test]
fn the_form_carries_the_cohort_the_options_and_the_cursor() {
    let client = client(Region::Us);
    let first = pager(&client, MemberQuery::new(), Cursor::First);
    assert_eq!(first.form(), "filter_by_cohort=%7B%22id%22%3A1234%7D");

    let query = MemberQuery::new()
        .include_all_users(false)
        .output_properties(["$email", "plan & tier"]);
    let next = pager(
        &client,
        query,
        Cursor::Next {
            session_id: "1234567890-EXAMPL".to_owned(),
            page: 2,
        },
    );
    let pairs: Vec<(String, String)> = form_urlencoded::parse(next.form().as_bytes())
        .into_owned()
        .collect();
    let expected = [
        ("filter_by_cohort", r#"{"id":1234}"#),
        ("include_all_users", "false"),
        ("output_properties", r#"["$email","plan & tier"]"#),
        ("session_id", "1234567890-EXAMPL"),
        ("page", "2"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    assert_eq!(pairs, expected);
}

#[test]
fn each_region_queries_its_own_host() {
    for (region, host) in [
        (Region::Us, "https://mixpanel.com/api/query"),
        (Region::Eu, "https://eu.mixpanel.com/api/query"),
        (Region::In, "https://in.mixpanel.com/api/query"),
    ] {
        assert_eq!(client(region).inner.query_url, host, "{region:?}");
    }
    for (region, host) in [
        (Region::Eu, "https://api-eu.mixpanel.com"),
        (Region::In, "https://api-in.mixpanel.com"),
    ] {
        assert_eq!(client(region).inner.ingestion_url, host, "{region:?}");
    }
}

#[test]
fn cohorts_accept_numeric_or_boolean_visibility_and_missing_fields() {
    let cohorts: Vec<RawCohort> = serde_json::from_str(
        r#"[{"id":1,"name":"a","is_visible":1},{"id":2,"name":"b","is_visible":false},{"id":3}]"#,
    )
    .unwrap();
    let visible: Vec<bool> = cohorts.iter().map(|cohort| cohort.is_visible).collect();
    assert_eq!(visible, [true, false, false]);
    assert_eq!(cohorts[2].name, "");
    assert!(serde_json::from_str::<Vec<RawCohort>>(r#"[{"id":1,"is_visible":"yes"}]"#).is_err());
}

#[test]
fn distinct_ids_may_be_numbers_but_not_objects() {
    let member: RawMember = serde_json::from_str(r#"{"$distinct_id": 4}"#).unwrap();
    assert_eq!(member.distinct_id, "4");
    assert!(member.properties.is_empty());
    assert!(serde_json::from_str::<RawMember>(r#"{"$distinct_id": {"a": 1}}"#).is_err());
}

#[test]
fn credentials_without_a_project_id_cannot_query() {
    let client = Client::builder(Credentials::api_secret("secret"))
        .build()
        .unwrap();
    assert!(matches!(client.query_project_id(), Err(Error::Config(_))));
}

#[test]
fn a_cohort_that_cannot_be_read_is_skipped_not_the_list() {
    let entries: Vec<Value> = serde_json::from_str(
        r#"[{"id":1,"name":"a"},{"name":"no id","count":3},{"id":null},
            {"id":"x"},{"id":2,"is_visible":"yes"},{"id":3,"name":"c"}]"#,
    )
    .unwrap();

    let (cohorts, skipped) = read_cohorts(entries);

    let ids: Vec<u64> = cohorts.iter().map(|cohort| cohort.id).collect();
    assert_eq!(ids, [1, 3]);
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert!(
        skipped[0].starts_with("cohort 1 (missing field `id`)"),
        "{skipped:?}"
    );
    assert!(
        skipped[0].ends_with(r#"{"count":3,"name":"no id"}"#)
            || skipped[0].ends_with(r#"{"name":"no id","count":3}"#),
        "{skipped:?}"
    );
}
