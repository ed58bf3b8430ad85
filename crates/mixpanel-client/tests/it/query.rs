//! The Query API against a wiremock Mixpanel: listing cohorts, paging a
//! cohort's members, errors and retries, and the client-side limiter.
//!
//! The limiter's hour-long window is tested on a paused clock in the
//! crate's unit tests; here the window is shortened and real time is used,
//! because a paused clock jumps ahead while real I/O is pending and would
//! fire the requests' timeouts.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, TryStreamExt as _};
use mixpanel_client::{
    Client, Cohort, CohortMember, Credentials, Error, MemberQuery, QueryLimits, RetryParams,
};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const USERNAME: &str = "svc-bridge.7f3a2c.mp-service-account";
const SECRET: &str = "wB4dZ9q-secret-never-logged";
const PROJECT_ID: &str = "3141592";
// base64("svc-bridge.7f3a2c.mp-service-account:wB4dZ9q-secret-never-logged")
const AUTHORIZATION: &str = "Basic c3ZjLWJyaWRnZS43ZjNhMmMubXAtc2VydmljZS1hY2NvdW50OndCNGRaOXEtc2VjcmV0LW5ldmVyLWxvZ2dlZA==";

fn builder(server: &MockServer) -> mixpanel_client::ClientBuilder {
    Client::builder(Credentials::service_account(USERNAME, SECRET, PROJECT_ID))
        .base_url(server.uri())
        .retry(RetryParams::for_test())
        .request_timeout(Duration::from_secs(5))
}

fn client(server: &MockServer) -> Client {
    builder(server).build().unwrap()
}

/// The form fields of a request body, in order.
fn form_of(request: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&request.body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn members_page(page: u64, page_size: usize, ids: &[Value]) -> ResponseTemplate {
    let results: Vec<Value> = ids
        .iter()
        .map(|id| json!({"$distinct_id": id, "$properties": {"$email": format!("{id}@example.com")}}))
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({
        "page": page, "page_size": page_size, "results": results,
        "session_id": "1234567890-EXAMPL", "status": "ok", "total": ids.len(),
    }))
}

/// The whole stream, but at most 50 members, so that a stream that never
/// ends fails the test instead of hanging it.
async fn all_members(
    client: &Client,
    cohort_id: u64,
    query: MemberQuery,
) -> Result<Vec<CohortMember>, Error> {
    client
        .cohort_members(cohort_id, query)
        .take(50)
        .try_collect()
        .await
}

#[tokio::test]
async fn list_cohorts_reads_mixpanels_example_with_auth_and_project_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .and(query_param("project_id", PROJECT_ID))
        .and(header("authorization", AUTHORIZATION))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"count": 150, "is_visible": 1,
             "description": "This cohort is visible, has an id = 1000, and currently has 150 users.",
             "created": "2019-03-19 23:49:51", "project_id": 1, "id": 1000, "name": "Cohort One"},
            {"count": 25, "is_visible": 0, "description": "",
             "created": "2019-04-02 23:22:01", "project_id": 1, "id": 2000, "name": "Cohort Two"},
        ])))
        .expect(1)
        .mount(&server)
        .await;

    let cohorts = client(&server).list_cohorts().await.unwrap();

    assert_eq!(
        cohorts,
        [
            Cohort {
                id: 1000,
                name: "Cohort One".to_owned(),
                description: Some(
                    "This cohort is visible, has an id = 1000, and currently has 150 users."
                        .to_owned()
                ),
                count: Some(150),
                is_visible: true,
                created: Some("2019-03-19 23:49:51".to_owned()),
                project_id: Some(1),
            },
            Cohort {
                id: 2000,
                name: "Cohort Two".to_owned(),
                description: Some(String::new()),
                count: Some(25),
                is_visible: false,
                created: Some("2019-04-02 23:22:01".to_owned()),
                project_id: Some(1),
            },
        ]
    );
}

#[tokio::test]
async fn list_cohorts_401_is_an_auth_error_without_retry_or_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"request": "/api/query/cohorts/list", "error": "Invalid service account credentials"}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server).list_cohorts().await.unwrap_err();

    assert!(
        matches!(&error, Error::Auth { status: 401, message } if message == "Invalid service account credentials"),
        "{error:?}"
    );
    let printed = format!("{error} {error:?}");
    assert!(!printed.contains(SECRET), "{printed}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// The spec gives `/cohorts/list` no request body: the POST says
/// `Content-Length: 0` and carries no Content-Type.
#[tokio::test]
async fn list_cohorts_posts_an_empty_body_with_content_length_0() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .and(header("content-length", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&server)
        .await;

    assert!(client(&server).list_cohorts().await.unwrap().is_empty());

    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].body.is_empty());
    assert!(requests[0].headers.get("content-type").is_none());
}

/// One cohort without an `id` does not cost the others.
#[tokio::test]
async fn a_cohort_without_an_id_is_skipped() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": 1000, "name": "Cohort One", "count": 150, "is_visible": 1},
            {"name": "Being created", "count": 0, "is_visible": 0},
            {"id": 2000, "name": "Cohort Two", "count": 25, "is_visible": 0},
        ])))
        .mount(&server)
        .await;

    let cohorts = client(&server).list_cohorts().await.unwrap();

    let names: Vec<(u64, &str)> = cohorts
        .iter()
        .map(|cohort| (cohort.id, cohort.name.as_str()))
        .collect();
    assert_eq!(names, [(1000, "Cohort One"), (2000, "Cohort Two")]);
}

#[tokio::test]
async fn an_unreadable_cohort_list_is_an_invalid_response() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"cohorts": []})))
        .mount(&server)
        .await;

    let error = client(&server).list_cohorts().await.unwrap_err();

    assert!(
        matches!(error, Error::InvalidResponse { status: 200, .. }),
        "{error:?}"
    );
}

/// Answers pages 0, 1 and 2 of a cohort of five, two per page.
struct ThreePages;

impl Respond for ThreePages {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = form_of(request);
        match field(&form, "page") {
            None => members_page(0, 2, &[json!("cust-1"), json!(42)]),
            Some("1") => members_page(1, 2, &[json!("cust-3"), json!(4)]),
            Some("2") => members_page(2, 2, &[json!("cust-5")]),
            Some(other) => ResponseTemplate::new(400)
                .set_body_json(json!({"error": format!("no page {other}")})),
        }
    }
}

#[tokio::test]
async fn members_are_paged_by_session_id_and_page_until_a_page_is_short() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .and(query_param("project_id", PROJECT_ID))
        .and(header("authorization", AUTHORIZATION))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ThreePages)
        .expect(3)
        .mount(&server)
        .await;
    let query = MemberQuery::new()
        .include_all_users(false)
        .output_properties(["$email"]);

    let members = all_members(&client(&server), 12345, query).await.unwrap();

    let ids: Vec<&str> = members
        .iter()
        .map(|member| member.distinct_id.as_str())
        .collect();
    assert_eq!(ids, ["cust-1", "42", "cust-3", "4", "cust-5"]);
    assert_eq!(members[1].properties["$email"], "42@example.com");
    let forms: Vec<Vec<(String, String)>> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(form_of)
        .collect();
    for form in &forms {
        assert_eq!(field(form, "filter_by_cohort"), Some(r#"{"id":12345}"#));
        assert_eq!(field(form, "include_all_users"), Some("false"));
        assert_eq!(field(form, "output_properties"), Some(r#"["$email"]"#));
    }
    assert_eq!(field(&forms[0], "session_id"), None);
    assert_eq!(field(&forms[0], "page"), None);
    for (form, page) in forms[1..].iter().zip(["1", "2"]) {
        assert_eq!(field(form, "session_id"), Some("1234567890-EXAMPL"));
        assert_eq!(field(form, "page"), Some(page));
    }
}

#[tokio::test]
async fn pages_are_fetched_only_as_the_stream_is_read() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(ThreePages)
        .mount(&server)
        .await;
    let client = client(&server);
    let mut members = pin!(client.cohort_members(12345, MemberQuery::new()));

    assert!(server.received_requests().await.unwrap().is_empty());
    let first = members.next().await.unwrap().unwrap();
    let second = members.next().await.unwrap().unwrap();
    assert_eq!(
        (first.distinct_id.as_str(), second.distinct_id.as_str()),
        ("cust-1", "42")
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "the second page waits until the first is read"
    );
}

#[tokio::test]
async fn an_empty_cohort_is_an_empty_stream_after_one_query() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(members_page(0, 1000, &[]))
        .expect(1)
        .mount(&server)
        .await;

    let members = all_members(&client(&server), 7, MemberQuery::new())
        .await
        .unwrap();

    assert!(members.is_empty());
    let form = form_of(&server.received_requests().await.unwrap()[0]);
    assert_eq!(
        form,
        [("filter_by_cohort".to_owned(), r#"{"id":7}"#.to_owned())]
    );
}

/// Mixpanel's documented page size is 1000: an answer without
/// `page_size` whose page is shorter is the last, and no query (of 60 an
/// hour) goes on an empty page after it.
#[tokio::test]
async fn without_a_page_size_a_short_page_is_the_last() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(|request: &Request| {
            let results = match field(&form_of(request), "page") {
                None => json!([{"$distinct_id": "cust-1"}]),
                _ => json!([]),
            };
            ResponseTemplate::new(200).set_body_json(
                json!({"page": 0, "session_id": "S", "status": "ok", "results": results}),
            )
        })
        .mount(&server)
        .await;

    let members = tokio::time::timeout(
        Duration::from_secs(5),
        all_members(&client(&server), 7, MemberQuery::new()),
    )
    .await
    .expect("the stream ends")
    .unwrap();

    assert_eq!(members.len(), 1);
    assert_eq!(members[0].properties, serde_json::Map::new());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// Without `page_size`, a page of 1000 is full (Mixpanel's default size),
/// and a `page_size` given once stays in force for answers that omit it.
#[tokio::test]
async fn the_page_size_in_force_is_the_last_given_or_1000() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(|request: &Request| {
            let ids = |range: std::ops::Range<usize>| -> Vec<Value> {
                range.map(|idx| json!({"$distinct_id": format!("c{idx}")})).collect()
            };
            let body = match field(&form_of(request), "page") {
                // 1000 members, no page_size: full at the default.
                None => json!({"page": 0, "session_id": "S", "status": "ok", "results": ids(0..1000)}),
                // 3 members of a page size of 3: full.
                Some("1") => json!({"page": 1, "page_size": 3, "session_id": "S", "status": "ok", "results": ids(1000..1003)}),
                // 3 members, no page_size: still full at 3.
                Some("2") => json!({"page": 2, "session_id": "S", "status": "ok", "results": ids(1003..1006)}),
                // 2 members, no page_size: short at 3, the last.
                Some("3") => json!({"page": 3, "session_id": "S", "status": "ok", "results": ids(1006..1008)}),
                Some(other) => return ResponseTemplate::new(400)
                    .set_body_json(json!({"error": format!("no page {other}")})),
            };
            ResponseTemplate::new(200).set_body_json(body)
        })
        .mount(&server)
        .await;

    let members: Vec<CohortMember> = client(&server)
        .cohort_members(7, MemberQuery::new())
        .try_collect()
        .await
        .unwrap();

    assert_eq!(members.len(), 1008);
    assert_eq!(members[1007].distinct_id, "c1007");
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_429_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"error": "rate limited"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(members_page(0, 1000, &[json!("cust-1")]))
        .mount(&server)
        .await;

    let members = all_members(&client(&server), 7, MemberQuery::new())
        .await
        .unwrap();

    assert_eq!(members.len(), 1);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_failing_page_ends_the_stream_with_its_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(members_page(0, 1, &[json!("cust-1")]))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"status": "error", "error": "session expired"})),
        )
        .mount(&server)
        .await;
    let client = client(&server);

    let items: Vec<Result<CohortMember, Error>> = client
        .cohort_members(7, MemberQuery::new())
        .take(10)
        .collect()
        .await;

    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().distinct_id, "cust-1");
    assert!(
        matches!(&items[1], Err(Error::Rejected { status: 200, message }) if message == "session expired"),
        "{:?}",
        items[1]
    );
}

#[tokio::test]
async fn credentials_without_a_project_id_are_a_config_error_and_send_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(members_page(0, 1000, &[]))
        .mount(&server)
        .await;
    let client = Client::builder(Credentials::api_secret("legacy-secret"))
        .base_url(server.uri())
        .build()
        .unwrap();

    let listed = client.list_cohorts().await;
    let members = all_members(&client, 7, MemberQuery::new()).await;

    assert!(matches!(listed, Err(Error::Config(_))), "{listed:?}");
    assert!(matches!(members, Err(Error::Config(_))), "{members:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_deprecated_api_secret_with_a_project_id_can_query() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .and(query_param("project_id", "77"))
        // base64("legacy-secret:")
        .and(header("authorization", "Basic bGVnYWN5LXNlY3JldDo="))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    let credentials = Credentials::ApiSecret {
        secret: "legacy-secret".into(),
        project_id: Some("77".to_owned()),
    };
    let client = Client::builder(credentials)
        .base_url(server.uri())
        .build()
        .unwrap();

    assert!(client.list_cohorts().await.unwrap().is_empty());
}

/// Answers after a delay and records when each request arrived.
struct SlowAndTimed {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    delay: Duration,
}

impl Respond for SlowAndTimed {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(200)
            .set_body_json(json!([]))
            .set_delay(self.delay)
    }
}

#[tokio::test]
async fn at_most_five_queries_run_at_once_across_clones() {
    let server = MockServer::start().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let delay = Duration::from_millis(300);
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .respond_with(SlowAndTimed {
            arrivals: Arc::clone(&arrivals),
            delay,
        })
        .expect(10)
        .mount(&server)
        .await;
    // The transport alone would allow all ten at once.
    let client = builder(&server)
        .max_concurrent_requests(50)
        .build()
        .unwrap();

    let queries = (0..10).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.list_cohorts().await })
    });
    for query in futures_util::future::join_all(queries).await {
        query.unwrap().unwrap();
    }

    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    // Query i + 5 can start only after one of the five before it ended.
    for (earlier, later) in arrivals.iter().zip(&arrivals[5..]) {
        let gap = later.duration_since(*earlier);
        assert!(
            gap >= delay - Duration::from_millis(50),
            "two queries five apart started {gap:?} apart"
        );
    }
}

#[tokio::test]
async fn queries_over_the_window_budget_wait_for_it_to_roll() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(ThreePages)
        .expect(3)
        .mount(&server)
        .await;
    let window = Duration::from_millis(400);
    let client = builder(&server)
        .query_limits(QueryLimits {
            max_concurrent: 5,
            max_per_window: 2,
            window,
        })
        .build()
        .unwrap();
    let started = Instant::now();

    // Three pages are three queries: the third waits for the first to leave
    // the window.
    let members = all_members(&client, 12345, MemberQuery::new())
        .await
        .unwrap();

    assert_eq!(members.len(), 5);
    let elapsed = started.elapsed();
    assert!(elapsed >= window, "three queries in {elapsed:?}");
}
