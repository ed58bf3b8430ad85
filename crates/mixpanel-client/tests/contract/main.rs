//! The client's requests against Mixpanel's own OpenAPI documents: every
//! kind of request it builds (`/import` with each kind of credentials,
//! `/engage` with each operation, `/cohorts/list`, the `/engage` member
//! query with and without paging and filters) is recorded by a wiremock
//! stand-in and checked by [`openapi`] against the vendored specs in
//! `tests/openapi/`.
//!
//! Deviations the client makes on purpose are listed here, each with why,
//! and the test checks that they are the only ones.
//!
//! The specs are Mixpanel's (MIT), not this crate's, so they stay out of
//! the published package, and this test target with them: it runs from
//! the repository only (`cargo test -p mixpanel-client --test contract`).

mod openapi;
#[path = "../common/updates.rs"]
mod updates;

use std::time::Duration;

use futures_util::TryStreamExt as _;
use mixpanel_client::{
    Client, Credentials, ImportBatch, MemberQuery, ProfileOperation, ProfileUpdate, RetryParams,
};
use serde_json::{Map, Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use openapi::{Recorded, Spec, engage_operation};
use updates::one_of_each_operation;

const PROJECT_ID: &str = "3141592";
const TOKEN: &str = "3f9c1d0e7b2a4c6d8e0f1a2b3c4d5e6f";

fn builder(server: &MockServer, credentials: Credentials) -> mixpanel_client::ClientBuilder {
    Client::builder(credentials)
        .base_url(server.uri())
        .retry(RetryParams::for_test())
        .request_timeout(Duration::from_secs(5))
}

fn service_account() -> Credentials {
    Credentials::service_account("svc.user", "svc-secret", PROJECT_ID)
}

fn batch() -> ImportBatch {
    let mut batch = ImportBatch::new();
    for idx in 0..3 {
        let event = json!({"event": "Email Click", "properties": {
            "distinct_id": format!("cust-{idx}"), "time": 1732792800 + idx,
            "$insert_id": format!("ins-{idx}"), "campaign": "Winter sale"}});
        batch.push(event.to_string().as_bytes());
    }
    batch
}

async fn recorded(server: &MockServer) -> Vec<Recorded> {
    server
        .received_requests()
        .await
        .expect("recording is on")
        .iter()
        .map(Recorded::from)
        .collect()
}

/// The spec operations an `/engage` update request performs: one per kind
/// of update in its body.
fn engage_path_keys(request: &Recorded) -> Vec<&'static str> {
    let updates: Vec<Value> = serde_json::from_slice(&request.body).unwrap_or_default();
    let mut keys: Vec<&'static str> = updates.iter().filter_map(engage_operation).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[tokio::test]
async fn import_requests_match_the_spec_for_every_kind_of_credentials() {
    let cases = [
        ("service account", service_account(), true, &[][..]),
        (
            "service account, no gzip",
            service_account(),
            false,
            &[][..],
        ),
        (
            "API secret with a project id",
            Credentials::api_secret_with_project("api-secret", PROJECT_ID),
            true,
            &[][..],
        ),
        // Known deviations: the spec marks `project_id` required, but
        // these credentials have none to send. Mixpanel's import docs say
        // a request without it is authenticated by the token (or the
        // legacy secret) alone.
        (
            "API secret alone",
            Credentials::api_secret("api-secret"),
            true,
            &["/import: required query parameter \"project_id\" is missing"][..],
        ),
        (
            "project token",
            Credentials::project_token(TOKEN),
            true,
            &["/import: required query parameter \"project_id\" is missing"][..],
        ),
    ];
    let spec = Spec::load("ingestion");
    for (name, credentials, gzip, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"code": 200, "num_records_imported": 3, "status": "OK"})),
            )
            .mount(&server)
            .await;
        let client = builder(&server, credentials).gzip(gzip).build().unwrap();

        client.import(&batch()).await.unwrap();

        let requests = recorded(&server).await;
        assert_eq!(requests.len(), 1, "{name}");
        assert_eq!(spec.check(&["/import"], &requests[0]), expected, "{name}");
    }
}

#[tokio::test]
async fn engage_requests_match_the_spec_for_every_operation() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": 1, "error": null})))
        .mount(&server)
        .await;
    let client = builder(&server, service_account())
        .project_token(TOKEN)
        .build()
        .unwrap();
    let mut updates = one_of_each_operation();
    updates.push(ProfileUpdate::new("u9", ProfileOperation::Delete));
    updates.push(ProfileUpdate::new("u10", ProfileOperation::Set(Map::new())));

    let result = client.engage(&updates).await.unwrap();
    assert!(result.failed.is_empty(), "{result:?}");

    let requests = recorded(&server).await;
    let mut operations_seen = Vec::new();
    for request in &requests {
        let path_keys = engage_path_keys(request);
        assert!(!path_keys.is_empty(), "{request:?}");
        assert_eq!(spec().check(&path_keys, request), Vec::<String>::new());
        operations_seen.extend(path_keys);
    }
    operations_seen.sort_unstable();
    operations_seen.dedup();
    assert_eq!(operations_seen.len(), 8, "every operation was checked");
}

fn spec() -> Spec {
    Spec::load("ingestion")
}

#[tokio::test]
async fn cohorts_list_matches_the_spec() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    let spec = Spec::load("query");
    for credentials in [
        service_account(),
        Credentials::api_secret_with_project("api-secret", PROJECT_ID),
    ] {
        let client = builder(&server, credentials).build().unwrap();
        client.list_cohorts().await.unwrap();
    }

    let requests = recorded(&server).await;
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(
            spec.check(&["/cohorts/list"], request),
            Vec::<String>::new()
        );
    }
}

/// Pages of two members; the second ends the cohort.
fn members_page(request: &Request) -> ResponseTemplate {
    let page = form_urlencoded::parse(&request.body)
        .find(|(key, _)| key == "page")
        .map(|(_, value)| value.into_owned());
    let (page, ids) = match page.as_deref() {
        None => (0, json!([{"$distinct_id": "a"}, {"$distinct_id": "b"}])),
        _ => (1, json!([{"$distinct_id": "c"}])),
    };
    ResponseTemplate::new(200).set_body_json(json!({
        "page": page, "page_size": 2, "session_id": "1234567890-EXAMPL",
        "status": "ok", "results": ids,
    }))
}

#[tokio::test]
async fn member_queries_match_the_spec_with_and_without_paging_and_filters() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(members_page)
        .mount(&server)
        .await;
    let client = builder(&server, service_account()).build().unwrap();
    let queries = [
        MemberQuery::new(),
        MemberQuery::new()
            .include_all_users(false)
            .output_properties(["$email", "plan & tier"]),
    ];
    for query in queries {
        let members: Vec<_> = client
            .cohort_members(12345, query)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(members.len(), 3);
    }

    let requests = recorded(&server).await;
    assert_eq!(requests.len(), 4, "two queries of two pages");
    let spec = Spec::load("query");
    for request in &requests {
        assert_eq!(spec.check(&["/engage"], request), Vec::<String>::new());
    }
    let with_session = requests
        .iter()
        .filter(|request| form_urlencoded::parse(&request.body).any(|(key, _)| key == "session_id"))
        .count();
    assert_eq!(with_session, 2, "next pages were checked too");
}

fn request(path: &str, query: &[(&str, &str)], headers: &[(&str, &str)], body: &[u8]) -> Recorded {
    Recorded {
        method: "POST".to_owned(),
        path: path.to_owned(),
        query: query
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        headers: headers
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        body: body.to_vec(),
    }
}

/// The checker is what the tests above rely on: it must refuse what the
/// spec refuses.
#[test]
fn the_checker_refuses_requests_the_spec_refuses() {
    let ingestion = Spec::load("ingestion");
    let query = Spec::load("query");
    let json = ("content-type", "application/json");
    let engage_query = [("verbose", "1"), ("strict", "1"), ("ip", "0")];
    let update = |operation: &str, value: Value| {
        let mut update = json!({"$token": TOKEN, "$distinct_id": "u1"});
        update[operation] = value;
        serde_json::to_vec(&json!([update])).unwrap()
    };
    let cases: Vec<(&Spec, Vec<&str>, Recorded, &str)> =
        vec![
        (
            &ingestion,
            vec!["/engage#profile-union"],
            request("/engage", &engage_query, &[json], &update("$union", json!({}))),
            "breaks minProperties 1",
        ),
        (
            &ingestion,
            vec!["/engage#profile-union"],
            request("/engage", &engage_query, &[json], &update("$union", json!({"t": []}))),
            "breaks minItems 1",
        ),
        (
            &ingestion,
            vec!["/engage#profile-union"],
            request("/engage", &engage_query, &[json], &update("$union", json!({"t": [true]}))),
            "matches 0 of the 2 oneOf branches",
        ),
        (
            &ingestion,
            vec!["/engage#profile-unset"],
            request("/engage", &engage_query, &[json], &update("$unset", json!([]))),
            "breaks minItems 1",
        ),
        (
            &ingestion,
            vec!["/engage#profile-numerical-add"],
            request("/engage", &engage_query, &[json], &update("$add", json!({"n": "1"}))),
            "is not of type number",
        ),
        (
            &ingestion,
            vec!["/engage#profile-delete"],
            request("/engage", &engage_query, &[json], &update("$delete", Value::Null)),
            "query parameter \"ip\" is not in the spec",
        ),
        (
            &ingestion,
            vec!["/engage#profile-set"],
            request(
                "/engage",
                &[("strict", "2")],
                &[json],
                &update("$set", json!({})),
            ),
            "2 breaks maximum 1",
        ),
        (
            &ingestion,
            vec!["/engage#profile-set"],
            request(
                "/engage",
                &[],
                &[json, ("authorization", "Basic c2VjcmV0Og==")],
                &update("$set", json!({})),
            ),
            "sends credentials, though the operation takes none",
        ),
        (
            &ingestion,
            vec!["/import"],
            request(
                "/import",
                &[("project_id", PROJECT_ID)],
                &[json, ("authorization", "Basic c2VjcmV0Og==")],
                br#"[{"event":"e","properties":{"time":1,"distinct_id":"d","$insert_id":"i"}}]"#,
            ),
            "required query parameter \"strict\" is missing",
        ),
        (
            &ingestion,
            vec!["/import"],
            request(
                "/import",
                &[("strict", "1"), ("project_id", PROJECT_ID)],
                &[json],
                br#"[{"event":"e","properties":{"time":1,"distinct_id":"d","$insert_id":"i"}}]"#,
            ),
            "meets none of the security requirements",
        ),
        (
            &ingestion,
            vec!["/import"],
            request(
                "/import",
                &[("strict", "1"), ("project_id", PROJECT_ID)],
                &[json, ("authorization", "Basic c2VjcmV0Og==")],
                br#"[{"event":"e","properties":{"distinct_id":"d","$insert_id":"i"}}]"#,
            ),
            "required property \"time\" is missing",
        ),
        (
            &ingestion,
            vec!["/import"],
            request(
                "/import",
                &[("strict", "1"), ("project_id", PROJECT_ID)],
                &[("content-type", "text/plain"), ("authorization", "Basic c2VjcmV0Og==")],
                b"[]",
            ),
            "Content-Type text/plain is not one of",
        ),
        (
            &query,
            vec!["/cohorts/list"],
            request(
                "/api/query/cohorts/list",
                &[("project_id", PROJECT_ID)],
                &[("authorization", "Basic c2VjcmV0Og==")],
                b"",
            ),
            "a POST without a body must say Content-Length: 0",
        ),
        (
            &query,
            vec!["/engage"],
            request(
                "/api/query/engage",
                &[("project_id", PROJECT_ID)],
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("authorization", "Basic c2VjcmV0Og=="),
                ],
                b"filter_by_cohort=%7B%22id%22%3A1%7D&page=next&limit=5",
            ),
            "form.page: \"next\" is not of type integer",
        ),
        (
            &query,
            vec!["/engage"],
            request(
                "/api/query/engage",
                &[("project_id", PROJECT_ID)],
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("authorization", "Basic c2VjcmV0Og=="),
                ],
                b"filter_by_cohort=%7B%22id%22%3A1%7D&limit=5",
            ),
            "form field \"limit\" is not in the spec",
        ),
        (
            &query,
            vec!["/engage"],
            request(
                "/api/query/engage",
                &[],
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("authorization", "Basic c2VjcmV0Og=="),
                ],
                b"filter_by_cohort=%7B%22id%22%3A1%7D",
            ),
            "required query parameter \"project_id\" is missing",
        ),
    ];
    for (spec, path_keys, recorded, expected) in cases {
        let problems = spec.check(&path_keys, &recorded);
        assert!(
            problems.iter().any(|problem| problem.contains(expected)),
            "{path_keys:?} {:?}: expected a problem with {expected:?}, got {problems:?}",
            String::from_utf8_lossy(&recorded.body)
        );
    }

    // And a request that is right passes.
    let good = request(
        "/engage",
        &engage_query,
        &[json],
        &update("$union", json!({"tags": ["a", 1]})),
    );
    assert_eq!(
        ingestion.check(&["/engage#profile-union"], &good),
        Vec::<String>::new()
    );
}
