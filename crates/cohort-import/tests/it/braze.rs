//! The Braze client against a wiremock Braze: `/users/track` bodies and
//! answers, the partner cohort API, retries, rate limits and pauses, and
//! secrets kept out of errors.

use std::time::{Duration, Instant};

use cohort_import::braze::{
    AttributeUpdate, BrazeClient, BrazeError, BrazeUser, MAX_PARTNER_IDS, PartnerCohort,
    PartnerCredentials, RateLimit, RefusedObject,
};
use mixpanel_client::{RetryParams, Secret};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const REST_KEY: &str = "rest-key-7c1e9a42-never-logged";
const PARTNER_KEY: &str = "partner-key-5d2b-never-logged";
const CLIENT_SECRET: &str = "client-secret-9f3a-never-logged";

fn builder(server: &MockServer) -> cohort_import::braze::BrazeClientBuilder {
    BrazeClient::builder(Secret::new(REST_KEY))
        .base_url(&format!("{}/", server.uri()))
        .retry(RetryParams::for_test())
        .request_timeout(Duration::from_millis(500))
}

fn client(server: &MockServer) -> BrazeClient {
    builder(server).build().unwrap()
}

fn partner() -> PartnerCredentials {
    PartnerCredentials {
        partner_name: "mixpanel-bridge_1".to_owned(),
        partner_api_key: Secret::new(PARTNER_KEY),
        client_secret: Secret::new(CLIENT_SECRET),
    }
}

fn update(user: BrazeUser, add: &[&str], remove: &[&str]) -> AttributeUpdate {
    AttributeUpdate {
        user,
        attribute: "mixpanel_cohorts".to_owned(),
        add: add.iter().map(|&value| value.to_owned()).collect(),
        remove: remove.iter().map(|&value| value.to_owned()).collect(),
    }
}

fn one_update() -> Vec<AttributeUpdate> {
    vec![update(
        BrazeUser::ExternalId("u1".into()),
        &["Power users"],
        &[],
    )]
}

fn success(n: usize) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .set_body_json(json!({"message": "success", "attributes_processed": n}))
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|idx| format!("{prefix}{idx}")).collect()
}

/// Answers 400 with the request body echoed in the message, as some APIs do.
struct EchoBody(u16);

impl Respond for EchoBody {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body);
        ResponseTemplate::new(self.0)
            .set_body_json(json!({"message": format!("Invalid request: {body}")}))
    }
}

#[tokio::test]
async fn track_attributes_sends_one_object_per_update_with_the_bearer_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/users/track"))
        .and(header(
            "authorization",
            format!("Bearer {REST_KEY}").as_str(),
        ))
        .and(header("content-type", "application/json"))
        .respond_with(success(3))
        .expect(1)
        .mount(&server)
        .await;
    let updates = [
        update(
            BrazeUser::ExternalId("cust-1042".into()),
            &["Power users", "Churn risk"],
            &[],
        ),
        update(
            BrazeUser::Email("ada@example.com".into()),
            &[],
            &["Trial ❄"],
        ),
        update(BrazeUser::ExternalId("cust-7".into()), &["A"], &["B"]),
    ];
    let outcome = client(&server).track_attributes(&updates).await.unwrap();
    assert!(outcome.refused.is_empty());
    assert_eq!(outcome.attempts, 1);
    let requests = server.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body,
        json!({"attributes": [
            {"external_id": "cust-1042", "_update_existing_only": true,
             "mixpanel_cohorts": {"add": ["Power users", "Churn risk"]}},
            {"email": "ada@example.com", "_update_existing_only": true,
             "mixpanel_cohorts": {"remove": ["Trial ❄"]}},
            {"external_id": "cust-7", "_update_existing_only": true,
             "mixpanel_cohorts": {"add": ["A"], "remove": ["B"]}},
        ]})
    );
}

#[tokio::test]
async fn per_object_errors_come_back_as_refused_objects() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/users/track"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "message": "success", "attributes_processed": 1,
            "errors": [{"type": "'external_id' or 'braze_id' or 'user_alias' or 'email' is required",
                        "input_array": "attributes", "index": 1}]})))
        .expect(1)
        .mount(&server)
        .await;
    let updates = [
        update(BrazeUser::ExternalId("u1".into()), &["a"], &[]),
        update(BrazeUser::ExternalId(String::new()), &["a"], &[]),
    ];
    let outcome = client(&server).track_attributes(&updates).await.unwrap();
    assert_eq!(
        outcome.refused,
        [RefusedObject {
            index: 1,
            message: "'external_id' or 'braze_id' or 'user_alias' or 'email' is required"
                .to_owned()
        }]
    );
}

#[tokio::test]
async fn a_success_status_without_success_in_the_body_is_an_invalid_response() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"message": "Valid data must be provided"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let error = client(&server)
        .track_attributes(&one_update())
        .await
        .unwrap_err();
    assert!(
        matches!(error, BrazeError::InvalidResponse { status: 200, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_401_is_an_auth_error_and_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Invalid API key: xyz"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let error = client(&server)
        .track_attributes(&one_update())
        .await
        .unwrap_err();
    assert!(error.is_auth() && !error.is_retryable(), "{error:?}");
    assert!(matches!(error, BrazeError::Auth { status: 401, .. }));
    assert!(!format!("{error} {error:?}").contains(REST_KEY));
}

#[tokio::test]
async fn a_400_for_the_whole_request_is_rejected_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "Max Input Length Exceeded"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let error = client(&server)
        .track_attributes(&one_update())
        .await
        .unwrap_err();
    match error {
        BrazeError::Rejected { status, message } => {
            assert_eq!(status, 400);
            assert_eq!(message, "Max Input Length Exceeded");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn more_than_75_objects_is_a_config_error_and_nothing_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(success(1))
        .expect(0)
        .mount(&server)
        .await;
    let updates = vec![one_update().remove(0); 76];
    let error = client(&server)
        .track_attributes(&updates)
        .await
        .unwrap_err();
    assert!(matches!(error, BrazeError::Config(_)), "{error:?}");
}

#[tokio::test]
async fn a_429_pauses_the_whole_client_for_x_ratelimit_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("X-Ratelimit-Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(success(1))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);
    let started = Instant::now();
    let first = tokio::spawn({
        let client = client.clone();
        async move {
            let outcome = client.track_attributes(&one_update()).await.unwrap();
            (outcome.attempts, started.elapsed())
        }
    });
    // By now the first call has had its 429; a clone must wait it out too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.track_attributes(&one_update()).await.unwrap();
    let second_done = started.elapsed();
    let (attempts, first_done) = first.await.unwrap();
    assert_eq!(attempts, 2);
    // The test backoff is at most 40 ms; only the header explains a second.
    assert!(first_done >= Duration::from_millis(950), "{first_done:?}");
    assert!(second_done >= Duration::from_millis(950), "{second_done:?}");
}

#[tokio::test]
async fn remaining_zero_holds_the_next_request_until_the_reset() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            success(1)
                .insert_header("X-RateLimit-Remaining", "0")
                .insert_header("X-RateLimit-Reset", "1"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(success(1))
        .mount(&server)
        .await;
    let client = client(&server);
    client.track_attributes(&one_update()).await.unwrap();
    let started = Instant::now();
    client.track_attributes(&one_update()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(850),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_rate_limit_spreads_requests_over_windows() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(success(1))
        .expect(7)
        .mount(&server)
        .await;
    let client = builder(&server)
        .rate_limit(RateLimit {
            max_requests: 3,
            window: Duration::from_millis(400),
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let calls: Vec<_> = (0..7)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.track_attributes(&one_update()).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // 3 at once, 3 after 0.5 s (window + margin), the 7th after 1 s.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
}

#[tokio::test]
async fn a_5xx_is_retried_until_it_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(success(1))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = client(&server)
        .track_attributes(&one_update())
        .await
        .unwrap();
    assert_eq!(outcome.attempts, 3);
}

#[tokio::test]
async fn a_5xx_forever_is_unavailable_after_max_retries_plus_one_attempts() {
    let server = MockServer::start().await;
    let attempts = RetryParams::for_test().max_retries + 1;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"message": "Internal error"})),
        )
        .expect(u64::from(attempts))
        .mount(&server)
        .await;
    let error = client(&server)
        .track_attributes(&one_update())
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    match error {
        BrazeError::Unavailable {
            status,
            attempts: made,
            message,
            ..
        } => {
            assert_eq!((status, made), (500, attempts));
            assert_eq!(message, "Internal error");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn timeouts_are_retried_then_a_transport_error() {
    let server = MockServer::start().await;
    let attempts = RetryParams::for_test().max_retries + 1;
    Mock::given(method("POST"))
        .respond_with(success(1).set_delay(Duration::from_millis(300)))
        .expect(u64::from(attempts))
        .mount(&server)
        .await;
    let client = builder(&server)
        .request_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let error = client.track_attributes(&one_update()).await.unwrap_err();
    assert!(
        matches!(error, BrazeError::Transport { attempts: made, .. } if made == attempts),
        "{error:?}"
    );
}

#[tokio::test]
async fn partner_upsert_sends_the_secrets_in_the_body_and_no_authorization() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/partners/mixpanel-bridge_1/cohorts"))
        .and(body_json(json!({
            "partner_api_key": PARTNER_KEY, "client_secret": CLIENT_SECRET,
            "cohort_id": "mp-7", "name": "Power users", "created_at": "2025-01-31T12:00:00Z"})))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let cohort = PartnerCohort {
        cohort_id: "mp-7".to_owned(),
        name: "Power users".to_owned(),
        created_at: "2025-01-31T12:00:00Z".to_owned(),
    };
    client(&server)
        .partner_upsert_cohort(&partner(), &cohort)
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn partner_changes_send_adds_and_removes_as_groups() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/partners/mixpanel-bridge_1/cohorts/users"))
        .and(body_json(json!({
            "partner_api_key": PARTNER_KEY, "client_secret": CLIENT_SECRET, "cohort_id": "mp-7",
            "cohort_changes": [{"user_ids": ["a0", "a1"]}, {"user_ids": ["r0"], "should_remove": true}]})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/partners/mixpanel-bridge_1/cohorts/users"))
        .and(body_json(json!({
            "partner_api_key": PARTNER_KEY, "client_secret": CLIENT_SECRET, "cohort_id": "mp-8",
            "cohort_changes": [{"user_ids": ["r0", "r1"], "should_remove": true}]})))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    client
        .partner_cohort_changes(&partner(), "mp-7", &ids("a", 2), &ids("r", 1))
        .await
        .unwrap();
    client
        .partner_cohort_changes(&partner(), "mp-8", &[], &ids("r", 2))
        .await
        .unwrap();
    client
        .partner_cohort_changes(&partner(), "mp-9", &[], &[])
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "nothing is sent for no change");
    assert!(
        requests
            .iter()
            .all(|request| request.headers.get("authorization").is_none())
    );
}

#[tokio::test]
async fn partner_limits_and_names_are_checked_before_sending() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let client = client(&server);
    let error = client
        .partner_cohort_changes(
            &partner(),
            "mp-7",
            &ids("a", 600),
            &ids("r", MAX_PARTNER_IDS - 599),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, BrazeError::Config(_)), "{error:?}");
    let mut unsafe_name = partner();
    unsafe_name.partner_name = "acme/../users".to_owned();
    let error = client
        .partner_cohort_changes(&unsafe_name, "mp-7", &ids("a", 1), &[])
        .await
        .unwrap_err();
    assert!(matches!(error, BrazeError::Config(_)), "{error:?}");
}

#[tokio::test]
async fn a_423_locked_cohort_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(423).set_body_json(json!({"message": "Resource locked"})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    client(&server)
        .partner_cohort_changes(&partner(), "mp-7", &ids("a", 3), &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn secrets_echoed_by_braze_never_reach_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/partners/mixpanel-bridge_1/cohorts/users"))
        .respond_with(EchoBody(400))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/partners/mixpanel-bridge_1/cohorts"))
        .respond_with(EchoBody(503))
        .expect(u64::from(RetryParams::for_test().max_retries + 1))
        .mount(&server)
        .await;
    let client = client(&server);
    let rejected = client
        .partner_cohort_changes(&partner(), "mp-7", &ids("a", 2), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(rejected, BrazeError::Rejected { status: 400, .. }),
        "{rejected:?}"
    );
    let cohort = PartnerCohort {
        cohort_id: "mp-7".to_owned(),
        name: "Power users".to_owned(),
        created_at: "2025-01-31T12:00:00Z".to_owned(),
    };
    let unavailable = client
        .partner_upsert_cohort(&partner(), &cohort)
        .await
        .unwrap_err();
    assert!(
        matches!(unavailable, BrazeError::Unavailable { status: 503, .. }),
        "{unavailable:?}"
    );
    for error in [rejected, unavailable] {
        let printed = format!("{error} {error:?}");
        assert!(
            printed.contains("Invalid request"),
            "the message is kept: {printed}"
        );
        assert!(printed.contains("[redacted]"), "{printed}");
        for secret in [PARTNER_KEY, CLIENT_SECRET, REST_KEY] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }
    assert!(!format!("{client:?} {:?}", partner()).contains("never-logged"));
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_not_buffered() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/users/track"))
        .respond_with(ResponseTemplate::new(201).set_body_string("x".repeat(5 * 1024 * 1024)))
        .mount(&server)
        .await;
    let error = client(&server)
        .track_attributes(&one_update())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("byte limit"), "{error}");
}
