//! `/engage` against a wiremock Mixpanel: batching at 2000, each operation's
//! JSON, 200 answers that report failure, strict mode's per-update
//! results, auth, retries, 413 splits, `$delete` without `ip`, and updates
//! refused on their own (before sending, or by Mixpanel).

use std::time::Duration;

use mixpanel_client::{Client, Credentials, Error, ProfileOperation, ProfileUpdate, RetryParams};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::updates::{one_of_each_operation, properties};

const TOKEN: &str = "3f9c1d0e7b2a4c6d8e0f1a2b3c4d5e6f";
const SECRET: &str = "wB4dZ9q-secret-never-logged";

fn client(server: &MockServer) -> Client {
    Client::builder(Credentials::service_account("svc", SECRET, "3141592"))
        .base_url(server.uri())
        .project_token(TOKEN)
        .retry(RetryParams::for_test())
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn set(distinct_id: impl Into<String>) -> ProfileUpdate {
    ProfileUpdate::new(
        distinct_id,
        ProfileOperation::Set(properties(json!({"plan": "pro"}))),
    )
}

fn updates_in(request: &Request) -> Vec<Value> {
    serde_json::from_slice(&request.body).expect("the body is a JSON array")
}

fn status_1() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"status": 1, "error": null}))
}

async fn mount_ok(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(status_1())
        .mount(server)
        .await;
}

#[tokio::test]
async fn updates_go_in_requests_of_at_most_2000_each_with_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .and(query_param("verbose", "1"))
        .and(query_param("strict", "1"))
        .and(query_param("ip", "0"))
        .respond_with(status_1())
        .expect(2)
        .mount(&server)
        .await;
    let updates: Vec<ProfileUpdate> = (0..2001).map(|idx| set(format!("cust-{idx}"))).collect();

    let result = client(&server).engage(&updates).await.unwrap();

    assert_eq!(result.n_accepted, 2001);
    assert!(result.failed.is_empty());
    assert_eq!(result.n_requests, 2);
    let requests = server.received_requests().await.unwrap();
    let bodies: Vec<Vec<Value>> = requests.iter().map(updates_in).collect();
    assert_eq!(bodies[0].len(), 2000);
    assert_eq!(bodies[1].len(), 1);
    let distinct_ids: Vec<&str> = bodies
        .iter()
        .flatten()
        .map(|update| update["$distinct_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..2001).map(|idx| format!("cust-{idx}")).collect();
    assert_eq!(distinct_ids, expected, "in order, none lost or repeated");
    assert!(
        bodies
            .iter()
            .flatten()
            .all(|update| update["$token"] == TOKEN),
        "every update carries the project token"
    );
    for request in &requests {
        assert_eq!(request.headers["content-type"], "application/json");
        assert!(
            request.headers.get("content-encoding").is_none(),
            "/engage does not support gzip"
        );
        assert!(
            request.headers.get("authorization").is_none(),
            "the token authenticates /engage; no credentials are sent"
        );
    }
}

#[tokio::test]
async fn each_operation_has_mixpanels_json_shape() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    let updates = one_of_each_operation();

    let result = client(&server).engage(&updates).await.unwrap();

    assert_eq!(result.n_accepted, 8);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "the $delete goes on its own");
    let sent: Vec<Value> = requests.iter().flat_map(updates_in).collect();
    assert_eq!(
        Value::Array(sent),
        json!([
            {"$token": TOKEN, "$distinct_id": "u1",
             "$set": {"$email": "a@example.com", "tier": 2}, "$ignore_time": true},
            {"$token": TOKEN, "$distinct_id": "u2", "$set_once": {"first_seen": "2026-11-28"}},
            {"$token": TOKEN, "$distinct_id": "u3", "$add": {"coins": 13, "debt": -2.5}},
            {"$token": TOKEN, "$distinct_id": "u4", "$union": {"tags": ["a", 1]}},
            {"$token": TOKEN, "$distinct_id": "u5", "$append": {"visits": {"page": "/"}}},
            {"$token": TOKEN, "$distinct_id": "u6", "$remove": {"tags": "a"}},
            {"$token": TOKEN, "$distinct_id": "u7", "$unset": ["$email", "tier"]},
            {"$token": TOKEN, "$distinct_id": "u8", "$delete": null, "$ignore_alias": true},
        ])
    );
}

#[tokio::test]
async fn a_200_whose_body_says_status_0_is_rejected_with_mixpanels_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"status": 0, "error": format!("token {TOKEN} is not a valid project token")}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server).engage(&[set("cust-1")]).await.unwrap_err();

    let Error::Rejected { status, message } = &error else {
        panic!("expected Rejected, got {error:?}");
    };
    assert_eq!(*status, 200);
    assert_eq!(message, "token [redacted] is not a valid project token");
    let printed = format!("{error} {error:?}");
    assert!(!printed.contains(TOKEN), "{printed}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn bare_1_and_0_bodies_are_read_too() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(200).set_body_string("1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(200).set_body_string("0"))
        .mount(&server)
        .await;
    let client = client(&server);

    let result = client.engage(&[set("cust-1")]).await.unwrap();
    assert_eq!(result.n_accepted, 1);
    let error = client.engage(&[set("cust-2")]).await.unwrap_err();
    assert!(
        matches!(error, Error::Rejected { status: 200, .. }),
        "{error:?}"
    );
}

/// `/engage` takes no credentials but the project token in each update:
/// a 401 or 403 is about the token, not a service account.
#[tokio::test]
async fn a_401_or_403_blames_the_project_token_and_is_not_retried() {
    for status in [401, 403] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/engage"))
            .respond_with(
                ResponseTemplate::new(status).set_body_json(json!({"error": "unauthorized"})),
            )
            .expect(1)
            .mount(&server)
            .await;

        let error = client(&server).engage(&[set("cust-1")]).await.unwrap_err();

        assert!(error.is_auth(), "{error:?}");
        assert!(
            matches!(&error, Error::TokenRefused { status: got, message } if *got == status && message == "unauthorized"),
            "{error:?}"
        );
        let printed = error.to_string();
        assert!(printed.contains("check the project token"), "{printed}");
        assert!(!printed.contains("service account"), "{printed}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }
}

/// With `strict=1`, Mixpanel lists the updates it refused by index in the
/// request; the others were applied. The indexes map back to the call's
/// slice even when updates refused before sending shift them.
#[tokio::test]
async fn strict_mode_reports_the_updates_mixpanel_refused() {
    for status in [200, 400] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/engage"))
            .and(query_param("strict", "1"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({
                "status": 0, "error": "some profile updates failed validation",
                "failed_records": [
                    {"index": 1, "$distinct_id": "cust-2", "message": "'$set' is invalid: too many properties"},
                    {"index": 2.0, "message": "'$distinct_id' is invalid"},
                ],
            })))
            .expect(1)
            .mount(&server)
            .await;
        let refused_locally = ProfileUpdate::new("cust-0", ProfileOperation::Unset(Vec::new()));
        let updates = [
            refused_locally,
            set("cust-1"),
            set("cust-2"),
            set("cust-3"),
            set("cust-4"),
        ];

        let result = client(&server).engage(&updates).await.unwrap();

        assert_eq!(result.n_accepted, 2, "{status}: {result:?}");
        let failed: Vec<(usize, &str)> = result
            .failed
            .iter()
            .map(|failed| (failed.index, failed.message.as_str()))
            .collect();
        assert_eq!(
            failed,
            [
                (
                    0,
                    r#"update 0 (distinct_id "cust-0", $unset): no property to unset"#
                ),
                (2, "'$set' is invalid: too many properties"),
                (3, "'$distinct_id' is invalid"),
            ],
            "{status}"
        );
    }
}

/// A `1` only says that one or more updates were valid; without strict
/// mode the client would count them all accepted. A `failed_records`
/// entry that names no update of the request cannot be tied to one, so
/// the answer is unreadable as a whole rather than miscounted.
#[tokio::test]
async fn a_failed_record_naming_no_update_is_an_invalid_response() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"status": 1, "failed_records": [{"index": 0.5, "message": "?"}]}),
        ))
        .mount(&server)
        .await;

    let error = client(&server)
        .engage(&[set("cust-1"), set("cust-2")])
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::InvalidResponse { status: 200, .. }),
        "{error:?}"
    );
}

/// Mixpanel's spec refuses a `$union` of no property, of an empty list,
/// or of anything but numbers and strings, and an `$unset` of nothing:
/// such updates are reported, naming the update, and never sent.
#[tokio::test]
async fn updates_the_spec_refuses_are_reported_and_not_sent() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    let union = |distinct_id: &str, value: Value| {
        ProfileUpdate::new(distinct_id, ProfileOperation::Union(properties(value)))
    };
    let updates = [
        union("u0", json!({})),
        union("u1", json!({"tags": []})),
        union("u2", json!({"tags": [{"a": 1}]})),
        union("u3", json!({"tags": [true]})),
        union("u4", json!({"tags": [null]})),
        ProfileUpdate::new("u5", ProfileOperation::Unset(Vec::new())),
        union("u6", json!({"tags": ["a", 2]})),
        ProfileUpdate::new("u7", ProfileOperation::Unset(vec!["plan".to_owned()])),
    ];

    let result = client(&server).engage(&updates).await.unwrap();

    assert_eq!(result.n_accepted, 2);
    let failed: Vec<&str> = result
        .failed
        .iter()
        .map(|failed| failed.message.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            r#"update 0 (distinct_id "u0", $union): no property to union"#,
            r#"update 1 (distinct_id "u1", $union): property "tags" is an empty list; Mixpanel takes a non-empty list of numbers and strings"#,
            r#"update 2 (distinct_id "u2", $union): property "tags" holds a value that is neither a number nor a string; Mixpanel takes a non-empty list of numbers and strings"#,
            r#"update 3 (distinct_id "u3", $union): property "tags" holds a value that is neither a number nor a string; Mixpanel takes a non-empty list of numbers and strings"#,
            r#"update 4 (distinct_id "u4", $union): property "tags" holds a value that is neither a number nor a string; Mixpanel takes a non-empty list of numbers and strings"#,
            r#"update 5 (distinct_id "u5", $unset): no property to unset"#,
        ]
    );
    let requests = server.received_requests().await.unwrap();
    let sent: Vec<String> = requests
        .iter()
        .flat_map(updates_in)
        .map(|update| update["$distinct_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, ["u6", "u7"]);
}

/// Mixpanel's spec has no `ip` parameter for `$delete`: deletes go in
/// requests of their own, without it, and the order of updates is kept.
#[tokio::test]
async fn deletes_go_without_ip_in_requests_of_their_own_in_order() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    let delete = |distinct_id: &str| ProfileUpdate::new(distinct_id, ProfileOperation::Delete);
    let updates = [
        set("a"),
        delete("b"),
        delete("c"),
        set("d"),
        set("e"),
        delete("f"),
    ];

    let result = client(&server).engage(&updates).await.unwrap();

    assert_eq!(result.n_accepted, 6);
    let requests = server.received_requests().await.unwrap();
    let shapes: Vec<(Vec<String>, bool)> = requests
        .iter()
        .map(|request| {
            let ids = updates_in(request)
                .iter()
                .map(|update| update["$distinct_id"].as_str().unwrap().to_owned())
                .collect();
            let has_ip = request.url.query_pairs().any(|(key, _)| key == "ip");
            (ids, has_ip)
        })
        .collect();
    let expected: Vec<(Vec<String>, bool)> = [
        (&["a"][..], true),
        (&["b", "c"][..], false),
        (&["d", "e"][..], true),
        (&["f"][..], false),
    ]
    .iter()
    .map(|(ids, has_ip)| (ids.iter().map(|id| (*id).to_owned()).collect(), *has_ip))
    .collect();
    assert_eq!(shapes, expected);
}

#[tokio::test]
async fn a_503_is_retried_and_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_ok(&server).await;

    let result = client(&server)
        .engage(&[set("cust-1"), set("cust-2")])
        .await
        .unwrap();

    assert_eq!(result.n_accepted, 2);
    assert_eq!(result.n_requests, 2);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].body, requests[1].body,
        "the retry resends the same body"
    );
}

#[tokio::test]
async fn cumulative_updates_are_not_resent_after_a_503_but_are_after_a_429() {
    let increment = || {
        let mut by = serde_json::Map::new();
        by.insert("Coins".to_owned(), serde_json::json!(5));
        ProfileUpdate::new("cust-1", ProfileOperation::Add(by))
    };
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let error = client(&server).engage(&[increment()]).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unavailable {
                status: 503,
                attempts: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "an $add Mixpanel may have applied is not sent twice"
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_ok(&server).await;
    let result = client(&server).engage(&[increment()]).await.unwrap();
    assert_eq!(result.n_accepted, 1);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "a 429 was not applied: resent"
    );
}

fn append(distinct_id: &str) -> ProfileUpdate {
    ProfileUpdate::new(
        distinct_id,
        ProfileOperation::Append(properties(json!({"Badges": "gold"}))),
    )
}

/// An `$append` Mixpanel may have applied is not sent again: after a 5xx,
/// the caller gets the answer from the first and only attempt.
#[tokio::test]
async fn cumulative_updates_are_not_resent_after_any_5xx() {
    for status in [500, 502, 504] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/engage"))
            .respond_with(ResponseTemplate::new(status))
            .expect(1)
            .mount(&server)
            .await;
        let error = client(&server)
            .engage(&[append("cust-1")])
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Unavailable { status: got, attempts: 1, .. } if got == status),
            "{status}: {error:?}"
        );
    }
}

/// A timed-out `$append` may have been applied: not resent, whereas a
/// `$set` (idempotent) is.
#[tokio::test]
async fn cumulative_updates_are_not_resent_after_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(status_1().set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_ok(&server).await;
    let error = client(&server)
        .engage(&[set("cust-0"), append("cust-1")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Transport { attempts: 1, .. }),
        "{error:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    // The same timeout on a request of `$set`s only: resent.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(status_1().set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_ok(&server).await;
    let result = client(&server).engage(&[set("cust-0")]).await.unwrap();
    assert_eq!(result.n_accepted, 1);
    assert_eq!(result.n_requests, 2);
}

/// A 429 means Mixpanel applied nothing: the `$append` is resent, with the
/// same body.
#[tokio::test]
async fn cumulative_updates_are_resent_after_a_429() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_ok(&server).await;
    let result = client(&server).engage(&[append("cust-1")]).await.unwrap();
    assert_eq!(result.n_accepted, 1);
    assert_eq!(result.n_requests, 3);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|request| request.body == requests[0].body)
    );
}

/// A refused connection sent nothing: even an `$add` is retried, up to the
/// retry limit.
#[tokio::test]
async fn cumulative_updates_are_retried_when_the_connection_is_refused() {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::builder(Credentials::service_account("svc", SECRET, "3141592"))
        .base_url(format!("http://{address}"))
        .project_token(TOKEN)
        .retry(RetryParams::for_test())
        .build()
        .unwrap();
    let add = ProfileUpdate::new(
        "cust-1",
        ProfileOperation::Add(properties(json!({"Coins": 5}))),
    );
    let error = client.engage(&[add, append("cust-1")]).await.unwrap_err();
    match &error {
        Error::Transport { attempts, .. } => {
            assert_eq!(*attempts, RetryParams::for_test().max_retries + 1);
        }
        other => panic!("expected Transport, got {other:?}"),
    }
}

#[tokio::test]
async fn the_first_error_stops_the_call_after_earlier_requests() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(status_1())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "bad request"})))
        .mount(&server)
        .await;
    let updates: Vec<ProfileUpdate> = (0..4001).map(|idx| set(format!("cust-{idx}"))).collect();

    let error = client(&server).engage(&updates).await.unwrap_err();

    assert!(
        matches!(&error, Error::Rejected { status: 400, message } if message == "bad request"),
        "{error:?}"
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "the third request is never sent"
    );
}

#[tokio::test]
async fn without_a_project_token_nothing_is_sent() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    let client = Client::builder(Credentials::service_account("svc", SECRET, "3141592"))
        .base_url(server.uri())
        .build()
        .unwrap();

    let error = client.engage(&[set("cust-1")]).await.unwrap_err();

    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn oversized_and_mistyped_updates_fail_alone() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    let huge = ProfileUpdate::new(
        "cust-huge",
        ProfileOperation::Set(properties(json!({"blob": "x".repeat(1_000_000)}))),
    );
    let not_a_number = ProfileUpdate::new(
        "cust-nan",
        ProfileOperation::Add(properties(json!({"coins": "13"}))),
    );
    let updates = [
        set("cust-0"),
        huge,
        set("cust-2"),
        not_a_number,
        set("cust-4"),
    ];

    let result = client(&server).engage(&updates).await.unwrap();

    assert_eq!(result.n_accepted, 3);
    let failed: Vec<usize> = result.failed.iter().map(|failed| failed.index).collect();
    assert_eq!(failed, [1, 3]);
    assert!(
        result.failed[0].message.contains("1000000 bytes"),
        "{:?}",
        result.failed[0]
    );
    assert_eq!(
        result.failed[1].message,
        r#"update 3 (distinct_id "cust-nan", $add): property "coins" is not a number"#
    );
    let requests = server.received_requests().await.unwrap();
    let sent: Vec<Value> = requests.iter().flat_map(updates_in).collect();
    let sent: Vec<&str> = sent
        .iter()
        .map(|update| update["$distinct_id"].as_str().unwrap())
        .collect();
    assert_eq!(sent, ["cust-0", "cust-2", "cust-4"]);
}

#[tokio::test]
async fn a_413_splits_the_request_until_the_parts_fit() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engage"))
        .respond_with(|request: &Request| {
            if updates_in(request).len() > 1 {
                ResponseTemplate::new(413).set_body_json(json!({"error": "too large"}))
            } else {
                ResponseTemplate::new(200).set_body_json(json!({"status": 1}))
            }
        })
        .mount(&server)
        .await;
    let updates: Vec<ProfileUpdate> = (0..3).map(|idx| set(format!("cust-{idx}"))).collect();

    let result = client(&server).engage(&updates).await.unwrap();

    assert_eq!(result.n_accepted, 3);
    assert!(result.failed.is_empty());
    // [0,1,2] → 413; [0,1] → 413; [0]; [1]; [2].
    assert_eq!(result.n_requests, 5);
    let requests = server.received_requests().await.unwrap();
    let accepted: Vec<String> = requests
        .iter()
        .map(updates_in)
        .filter(|updates| updates.len() == 1)
        .map(|updates| updates[0]["$distinct_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(accepted, ["cust-0", "cust-1", "cust-2"], "order is kept");
}

#[tokio::test]
async fn an_empty_call_sends_nothing() {
    let server = MockServer::start().await;
    mount_ok(&server).await;

    let result = client(&server).engage(&[]).await.unwrap();

    assert_eq!(result.n_requests, 0);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[test]
fn the_token_never_prints() {
    let client = Client::builder(Credentials::service_account("svc", SECRET, "3141592"))
        .project_token(TOKEN)
        .build()
        .unwrap();
    let printed = format!("{client:?}");
    assert!(!printed.contains(TOKEN), "{printed}");
    assert!(!printed.contains(SECRET), "{printed}");
}
