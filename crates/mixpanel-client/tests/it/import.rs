//! `/import` against a wiremock Mixpanel: success, partial failure, auth,
//! 413 splits, 429 and 5xx retries, timeouts and refused connections.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mixpanel_client::{BatchLimits, Batcher, Client, Credentials, Error, ImportBatch, RetryParams};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const USERNAME: &str = "svc-bridge.7f3a2c.mp-service-account";
const SECRET: &str = "wB4dZ9q-secret-never-logged";
const PROJECT_ID: &str = "3141592";

fn client(server: &MockServer) -> Client {
    Client::builder(Credentials::service_account(USERNAME, SECRET, PROJECT_ID))
        .base_url(server.uri())
        .retry(RetryParams::for_test())
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn batch(n_events: usize) -> ImportBatch {
    let mut batch = ImportBatch::new();
    for idx in 0..n_events {
        let event = json!({"event": "Email Click", "properties": {
            "distinct_id": format!("cust-{idx}"), "time": 1732792800 + idx as i64,
            "$insert_id": format!("ins-{idx}"), "campaign_name": "Winter sale ❄"}});
        batch.push(event.to_string().as_bytes());
    }
    batch
}

/// The events in a request body, gunzipped when it says so.
fn events_in(request: &Request) -> Vec<Value> {
    let is_gzip = request
        .headers
        .get("content-encoding")
        .is_some_and(|value| value == "gzip");
    let body = if is_gzip {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&request.body[..])
            .read_to_end(&mut text)
            .expect("the body is gzip");
        text
    } else {
        request.body.clone()
    };
    serde_json::from_slice(&body).expect("the body is a JSON array")
}

fn ok(n: usize) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"code": 200, "num_records_imported": n, "status": "OK"}))
}

#[tokio::test]
async fn a_batch_is_sent_gzipped_with_service_account_auth_and_strict() {
    let server = MockServer::start().await;
    // base64("svc-bridge.7f3a2c.mp-service-account:wB4dZ9q-secret-never-logged")
    let expected_auth = format!(
        "Basic {}",
        "c3ZjLWJyaWRnZS43ZjNhMmMubXAtc2VydmljZS1hY2NvdW50OndCNGRaOXEtc2VjcmV0LW5ldmVyLWxvZ2dlZA=="
    );
    Mock::given(method("POST"))
        .and(path("/import"))
        .and(query_param("strict", "1"))
        .and(query_param("project_id", PROJECT_ID))
        .and(header("authorization", expected_auth.as_str()))
        .and(header("content-encoding", "gzip"))
        .and(header("content-type", "application/json"))
        .respond_with(ok(3))
        .expect(1)
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(3)).await.unwrap();
    assert_eq!(result.n_imported, 3);
    assert!(result.failed.is_empty());
    assert_eq!(result.n_requests, 1);
    let requests = server.received_requests().await.unwrap();
    let events = events_in(&requests[0]);
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["properties"]["$insert_id"], "ins-2");
    assert_eq!(events[0]["properties"]["campaign_name"], "Winter sale ❄");
}

#[tokio::test]
async fn api_secret_auth_sends_the_secret_as_user_and_no_project_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/import"))
        // base64("legacy-api-secret:")
        .and(header("authorization", "Basic bGVnYWN5LWFwaS1zZWNyZXQ6"))
        .respond_with(ok(1))
        .expect(1)
        .mount(&server)
        .await;
    let client = Client::builder(Credentials::api_secret("legacy-api-secret"))
        .base_url(server.uri())
        .gzip(false)
        .build()
        .unwrap();
    client.import(&batch(1)).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(!requests[0].url.query().unwrap_or("").contains("project_id"));
    assert!(requests[0].headers.get("content-encoding").is_none());
    assert_eq!(events_in(&requests[0]).len(), 1);
}

/// Mixpanel's spec marks `project_id` required on `/import`: an API
/// secret given one sends it, as a service account does.
#[tokio::test]
async fn api_secret_auth_with_a_project_id_sends_the_project_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .and(query_param("strict", "1"))
        .and(query_param("project_id", "77"))
        .and(header("authorization", "Basic bGVnYWN5LWFwaS1zZWNyZXQ6"))
        .respond_with(ok(1))
        .expect(1)
        .mount(&server)
        .await;
    let client = Client::builder(Credentials::api_secret_with_project(
        "legacy-api-secret",
        "77",
    ))
    .base_url(server.uri())
    .build()
    .unwrap();

    let result = client.import(&batch(1)).await.unwrap();

    assert_eq!(result.n_imported, 1);
}

/// An index written as a float (`1.0`) names a record as well as `1`;
/// one that names no record (`1.5`, `-1`) makes the answer unreadable as
/// a whole, and the batch is split as for any unreadable 400.
#[tokio::test]
async fn a_failed_index_written_as_an_integral_float_is_read() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 400, "num_records_imported": 2.0, "status": "Bad Request",
            "failed_records": [
                {"index": 1.0, "$insert_id": "ins-1", "message": "bad time"},
                {"index": 0.0, "$insert_id": "ins-0", "message": "bad id"},
            ],
        })))
        .expect(1)
        .mount(&server)
        .await;

    let result = client(&server).import(&batch(4)).await.unwrap();

    let failed: Vec<(usize, &str)> = result
        .failed
        .iter()
        .map(|record| (record.index, record.message.as_str()))
        .collect();
    assert_eq!(failed, [(0, "bad id"), (1, "bad time")]);
    assert_eq!(result.n_imported, 2);
    assert_eq!(result.n_requests, 1);
}

#[tokio::test]
async fn a_400_is_a_partial_success_reported_per_record_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
        "code": 400, "num_records_imported": 3, "status": "Bad Request",
        "error": "some data points in the request failed validation",
        "failed_records": [
            {"index": 1, "insert_id": "ins-1", "field": "properties.time",
             "message": "'properties.time' is invalid: must be specified as seconds since epoch"},
            {"index": 4, "$insert_id": "ins-4", "field": "properties.utm_source",
             "message": "properties.utm_source is invalid: string should be valid utf8"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(5)).await.unwrap();
    assert_eq!(result.n_imported, 3);
    let failed: Vec<(usize, Option<&str>, Option<&str>)> = result
        .failed
        .iter()
        .map(|record| {
            (
                record.index,
                record.insert_id.as_deref(),
                record.field.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            (1, Some("ins-1"), Some("properties.time")),
            (4, Some("ins-4"), Some("properties.utm_source"))
        ]
    );
    assert!(result.failed[1].message.contains("valid utf8"));
}

#[tokio::test]
async fn a_400_without_failed_records_is_split_until_the_refused_record_stands_alone() {
    let server = MockServer::start().await;
    // Mixpanel refuses any request holding event 2 as a whole, without
    // saying which record: only splitting can find it.
    Mock::given(method("POST"))
        .respond_with(move |request: &Request| {
            let events = events_in(request);
            if events
                .iter()
                .any(|event| event["properties"]["$insert_id"] == "ins-2")
            {
                ResponseTemplate::new(400).set_body_json(
                    json!({"code": 400, "error": "invalid JSON body", "status": "Bad Request"}),
                )
            } else {
                ok(events.len())
            }
        })
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(4)).await.unwrap();
    assert_eq!(result.failed.len(), 1, "{result:?}");
    assert_eq!(result.failed[0].index, 2);
    assert!(
        result.failed[0].message.contains("invalid JSON body"),
        "{:?}",
        result.failed[0]
    );
    assert_eq!(result.n_imported, 3);
}

#[tokio::test]
async fn a_400_for_every_part_of_the_batch_is_the_requests_fault() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("<html>proxy error</html>"))
        .expect(3)
        .mount(&server)
        .await;
    let error = client(&server).import(&batch(8)).await.unwrap_err();
    assert!(
        matches!(&error, Error::Rejected { status: 400, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_record_listed_twice_fails_once_and_an_index_outside_the_batch_splits() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 400, "num_records_imported": 1, "status": "Bad Request",
            "failed_records": [
                {"index": 1, "$insert_id": "b", "field": "properties.time", "message": "bad time"},
                {"index": 1, "$insert_id": "b", "field": "properties.time", "message": "bad time"},
            ],
        })))
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(2)).await.unwrap();
    assert_eq!(result.failed.len(), 1, "{result:?}");
    assert_eq!(result.failed[0].index, 1);
}

#[tokio::test]
async fn unauthorized_is_an_auth_error_without_retries_or_secrets() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let error = client.import(&batch(2)).await.unwrap_err();
    assert!(error.is_auth(), "{error:?}");
    assert!(!error.is_retryable());
    let printed = format!("{error} {error:?} {client:?}");
    assert!(printed.contains("Invalid credentials"), "{printed}");
    assert!(!printed.contains(SECRET), "{printed}");
}

#[tokio::test]
async fn forbidden_is_an_auth_error_too() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_string("forbidden"))
        .expect(1)
        .mount(&server)
        .await;
    let error = client(&server).import(&batch(1)).await.unwrap_err();
    assert!(
        matches!(error, Error::Auth { status: 403, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_413_splits_the_batch_until_it_fits_and_keeps_indexes() {
    let server = MockServer::start().await;
    // Accept at most 2 events per request; fail the event with insert id ins-4.
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(|request: &Request| {
            let events = events_in(request);
            if events.len() > 2 {
                return ResponseTemplate::new(413).set_body_json(json!({"code": 413, "error": "request exceeds max limit", "status": "Request Entity Too Large"}));
            }
            match events.iter().position(|event| event["properties"]["$insert_id"] == "ins-4") {
                Some(idx) => ResponseTemplate::new(400).set_body_json(json!({
                    "code": 400, "num_records_imported": events.len() - 1,
                    "failed_records": [{"index": idx, "$insert_id": "ins-4", "field": "properties.time", "message": "too old"}]})),
                None => ok(events.len()),
            }
        })
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(7)).await.unwrap();
    assert_eq!(result.n_imported, 6);
    assert_eq!(result.failed.len(), 1);
    assert_eq!(
        result.failed[0].index, 4,
        "index is relative to the original batch"
    );
    // 7 → 4 + 3 → (2 + 2) + (2 + 1): 3 refused requests and 4 accepted ones.
    assert_eq!(result.n_requests, 7);
    let mut delivered: Vec<String> = Vec::new();
    for request in server.received_requests().await.unwrap() {
        let events = events_in(&request);
        if events.len() <= 2 {
            delivered.extend(events.iter().map(|event| {
                event["properties"]["$insert_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }));
        }
    }
    delivered.sort();
    let expected: Vec<String> = (0..7).map(|idx| format!("ins-{idx}")).collect();
    assert_eq!(delivered, expected, "each event delivered exactly once");
}

#[tokio::test]
async fn a_single_event_refused_as_too_large_is_a_failed_record() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(413).set_body_json(json!({"error": "request exceeds max limit"})),
        )
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(1)).await.unwrap();
    assert_eq!(result.n_imported, 0);
    assert_eq!(result.failed.len(), 1);
    assert!(
        result.failed[0].message.contains("too large"),
        "{:?}",
        result.failed
    );
}

/// Answers `failures` times with `status` (and the given headers), then 200.
fn fail_then_succeed(
    status: u16,
    failures: usize,
    retry_after: Option<&'static str>,
) -> impl Fn(&Request) -> ResponseTemplate {
    let calls = Arc::new(AtomicUsize::new(0));
    move |request: &Request| {
        if calls.fetch_add(1, Ordering::SeqCst) < failures {
            let mut template = ResponseTemplate::new(status).set_body_json(json!({"code": status, "error": "Project exceeded rate limits. Please retry the request with exponential backoff."}));
            if let Some(seconds) = retry_after {
                template = template.insert_header("retry-after", seconds);
            }
            template
        } else {
            ok(events_in(request).len())
        }
    }
}

#[tokio::test]
async fn a_retry_after_beyond_max_delay_is_capped_and_left_to_the_caller() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .mount(&server)
        .await;
    let started = Instant::now();
    let error = client(&server).import(&batch(1)).await.unwrap_err();
    // for_test: 4 retries of at most 40 ms each, not an hour (the bound
    // is loose so that a loaded machine cannot fail it).
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_with_backoff() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(fail_then_succeed(429, 2, None))
        .expect(3)
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(4)).await.unwrap();
    assert_eq!(result.n_imported, 4);
    assert_eq!(result.n_requests, 3);
}

#[tokio::test]
async fn a_429_with_retry_after_waits_at_least_that_long() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(fail_then_succeed(429, 1, Some("1")))
        .expect(2)
        .mount(&server)
        .await;
    let started = Instant::now();
    // Retry-After is honoured up to the policy's max_delay (2 s here).
    let client = Client::builder(Credentials::service_account(USERNAME, SECRET, PROJECT_ID))
        .base_url(server.uri())
        .retry(RetryParams {
            max_delay: Duration::from_secs(2),
            ..RetryParams::for_test()
        })
        .build()
        .unwrap();
    let result = client.import(&batch(1)).await.unwrap();
    // The test backoff is at most 40 ms; only Retry-After explains a second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(result.n_requests, 2);
}

#[tokio::test]
async fn a_503_then_success_imports_everything() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(fail_then_succeed(503, 3, None))
        .expect(4)
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(2)).await.unwrap();
    assert_eq!(result.n_imported, 2);
    assert_eq!(result.n_requests, 4);
}

#[tokio::test]
async fn a_429_storm_gives_up_after_the_retry_limit_as_unavailable() {
    let server = MockServer::start().await;
    let max_retries = RetryParams::for_test().max_retries as u64;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0")
                .set_body_json(json!({"error": "Project exceeded rate limits."})),
        )
        .expect(max_retries + 1)
        .mount(&server)
        .await;
    let error = client(&server).import(&batch(2)).await.unwrap_err();
    assert!(error.is_retryable());
    match error {
        Error::Unavailable {
            status,
            attempts,
            retry_after,
            ..
        } => {
            assert_eq!(status, 429);
            assert_eq!(u64::from(attempts), max_retries + 1);
            assert_eq!(retry_after, Some(Duration::ZERO));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried() {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .respond_with(move |request: &Request| {
            let template = ok(events_in(request).len());
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                template.set_delay(Duration::from_secs(3))
            } else {
                template
            }
        })
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(3)).await.unwrap();
    assert_eq!(result.n_imported, 3);
    assert_eq!(result.n_requests, 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_after_every_retry() {
    // Bind a port, then free it: nothing listens there.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::builder(Credentials::service_account(USERNAME, SECRET, PROJECT_ID))
        .base_url(format!("http://{address}"))
        .retry(RetryParams::for_test())
        .build()
        .unwrap();
    let error = client.import(&batch(1)).await.unwrap_err();
    assert!(error.is_retryable());
    match &error {
        Error::Transport { attempts, .. } => {
            assert_eq!(*attempts, RetryParams::for_test().max_retries + 1);
        }
        other => panic!("expected Transport, got {other:?}"),
    }
    assert!(!format!("{error:?}").contains(SECRET));
}

#[tokio::test]
async fn batches_from_the_batcher_respect_the_limits_on_the_wire() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| ok(events_in(request).len()))
        .mount(&server)
        .await;
    let client = client(&server);
    let mut batcher = Batcher::new(BatchLimits {
        max_events: 2000,
        max_bytes: 50_000,
        max_event_bytes: 1_000_000,
    });
    let mut batches = Vec::new();
    for idx in 0..4500 {
        let event = json!({"event": "Session Start", "properties": {"distinct_id": format!("u{idx}"), "time": 1, "$insert_id": format!("i{idx}")}});
        batches.extend(batcher.push(event.to_string().as_bytes()).unwrap());
    }
    batches.extend(batcher.flush());
    let mut n_imported = 0;
    for batch in &batches {
        n_imported += client.import(batch).await.unwrap().n_imported;
    }
    assert_eq!(n_imported, 4500);
    let mut next = 0;
    for request in server.received_requests().await.unwrap() {
        let events = events_in(&request);
        assert!(events.len() <= 2000);
        assert!(serde_json::to_vec(&events).unwrap().len() <= 50_000);
        for event in events {
            assert_eq!(event["properties"]["$insert_id"], format!("i{next}"));
            next += 1;
        }
    }
    assert_eq!(next, 4500);
}

/// The shared retry budget: with no per-second reserve and one retry per
/// request seen, an outage stops retries long before `max_retries`, and
/// what earlier successes earned is shared by every clone of the client.
#[tokio::test]
async fn the_retry_budget_runs_out_before_the_retry_limit() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| ok(events_in(request).len()))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let client = Client::builder(Credentials::service_account(USERNAME, SECRET, PROJECT_ID))
        .base_url(server.uri())
        .retry(RetryParams {
            max_retries: 8,
            min_retries_per_sec: 0,
            retry_ratio: 1.0,
            ..RetryParams::for_test()
        })
        .build()
        .unwrap();
    // Three successes earn three retries.
    for _ in 0..3 {
        client.import(&batch(1)).await.unwrap();
    }
    // The failing request's own first attempt earns one more: 1 + 4
    // attempts, not 1 + 8.
    let error = client.clone().import(&batch(1)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unavailable {
                status: 503,
                attempts: 5,
                ..
            }
        ),
        "{error:?}"
    );
    // The budget is spent: the next failing request gets one retry, its own.
    let error = client.import(&batch(1)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unavailable {
                status: 503,
                attempts: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3 + 5 + 2);
}

/// After a 413 split, both halves refused as a whole is the request's
/// fault too: an error after three requests, not a split down to single
/// events.
#[tokio::test]
async fn a_413_then_a_400_for_both_halves_is_the_requests_fault() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            if events_in(request).len() > 4 {
                ResponseTemplate::new(413)
                    .set_body_json(json!({"error": "request exceeds max limit"}))
            } else {
                ResponseTemplate::new(400).set_body_string("<html>proxy error</html>")
            }
        })
        .expect(3)
        .mount(&server)
        .await;
    let error = client(&server).import(&batch(8)).await.unwrap_err();
    assert!(
        matches!(&error, Error::Rejected { status: 400, message } if message.contains("proxy error")),
        "{error:?}"
    );
}

/// Indexes Mixpanel reports in a part of a split batch are relative to
/// that part; the result's are relative to the whole batch.
#[tokio::test]
async fn failed_records_in_a_split_part_keep_their_index_in_the_batch() {
    let server = MockServer::start().await;
    // At most 4 events per request; ins-5 and ins-7 are refused.
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            let events = events_in(request);
            if events.len() > 4 {
                return ResponseTemplate::new(413);
            }
            let failed: Vec<Value> = events
                .iter()
                .enumerate()
                .filter(|(_, event)| {
                    ["ins-5", "ins-7"].contains(&event["properties"]["$insert_id"].as_str().unwrap())
                })
                .map(|(idx, event)| json!({"index": idx, "$insert_id": event["properties"]["$insert_id"], "message": "bad"}))
                .collect();
            if failed.is_empty() {
                ok(events.len())
            } else {
                // No num_records_imported: the client counts the others.
                ResponseTemplate::new(400).set_body_json(json!({"failed_records": failed}))
            }
        })
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(8)).await.unwrap();
    let failed: Vec<(usize, Option<&str>)> = result
        .failed
        .iter()
        .map(|record| (record.index, record.insert_id.as_deref()))
        .collect();
    assert_eq!(failed, [(5, Some("ins-5")), (7, Some("ins-7"))]);
    assert_eq!(result.n_imported, 6);
    assert_eq!(result.n_requests, 3);
    assert_eq!(result.failed[0].message, "bad");
}

/// A failed record's index one past the batch's end cannot be tied to a
/// record: the batch is split instead of trusting it.
#[tokio::test]
async fn a_failed_index_just_past_the_batch_splits_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            let events = events_in(request);
            if events.len() == 2 {
                ResponseTemplate::new(400).set_body_json(json!({
                    "num_records_imported": 2,
                    "failed_records": [{"index": 2, "message": "no such record"}]}))
            } else {
                ok(events.len())
            }
        })
        .mount(&server)
        .await;
    let result = client(&server).import(&batch(2)).await.unwrap();
    assert!(result.failed.is_empty(), "{result:?}");
    assert_eq!(result.n_imported, 2);
    assert_eq!(result.n_requests, 3);
}

/// A 200 without a count means every record was imported; with one,
/// Mixpanel's count is reported.
#[tokio::test]
async fn a_200_reports_mixpanels_count_or_the_whole_batch() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("OK"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok(2))
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(client.import(&batch(3)).await.unwrap().n_imported, 3);
    assert_eq!(client.import(&batch(3)).await.unwrap().n_imported, 2);
}

/// Answers no branch expects are errors, not silent successes.
#[tokio::test]
async fn other_statuses_are_errors() {
    for (status, retryable) in [(404, false), (409, false), (500, true)] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string("nope"))
            .mount(&server)
            .await;
        let client = Client::builder(Credentials::service_account(USERNAME, SECRET, PROJECT_ID))
            .base_url(server.uri())
            .retry(RetryParams {
                max_retries: 0,
                ..RetryParams::for_test()
            })
            .build()
            .unwrap();
        let error = client.import(&batch(2)).await.unwrap_err();
        assert_eq!(error.is_retryable(), retryable, "{status}: {error:?}");
        assert!(format!("{error}").contains("nope"), "{status}: {error}");
    }
}

#[tokio::test]
async fn an_empty_batch_sends_nothing() {
    let server = MockServer::start().await;
    let result = client(&server).import(&ImportBatch::new()).await.unwrap();
    assert_eq!(result, mixpanel_client::ImportResult::default());
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// A single event refused, as too large or as a whole, is a failed record
/// after one request: it is neither split nor sent again.
#[tokio::test]
async fn a_single_refused_event_costs_one_request() {
    for refusal in [
        ResponseTemplate::new(413).set_body_json(json!({"error": "request exceeds max limit"})),
        ResponseTemplate::new(400).set_body_json(json!({"error": "invalid JSON body"})),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(refusal)
            .up_to_n_times(1)
            .with_priority(1)
            .expect(1)
            .mount(&server)
            .await;
        // Any further request would be accepted: only the count tells.
        Mock::given(method("POST"))
            .respond_with(|request: &Request| ok(events_in(request).len()))
            .expect(0)
            .mount(&server)
            .await;
        let result = client(&server).import(&batch(1)).await.unwrap();
        assert_eq!(result.n_requests, 1, "{result:?}");
        assert_eq!(result.n_imported, 0, "{result:?}");
        assert_eq!(result.failed.len(), 1, "{result:?}");
        assert_eq!(result.failed[0].index, 0);
    }
}
