//! The ingest contract, row by row, through the router with a real spool.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;

use super::*;
use crate::spool::sqlite::{SqliteSpool, SqliteSpoolOptions};

const TOKEN: &str = "cUrReNtS-t0ken==";
const NEXT_TOKEN: &str = "r0tated-t0ken==";

/// A spool in a fresh directory, removed when dropped.
struct TestSpool {
    spool: Arc<SqliteSpool>,
    dir: PathBuf,
}

impl Drop for TestSpool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spool(max_bytes: u64) -> TestSpool {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bridge-ingest-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let spool =
        SqliteSpool::open(SqliteSpoolOptions::new(dir.clone(), max_bytes)).expect("spool opens");
    TestSpool {
        spool: Arc::new(spool),
        dir,
    }
}

fn state(spool: &TestSpool, max_body_bytes: usize) -> Arc<IngestState<SqliteSpool>> {
    state_with_timeout(spool, max_body_bytes, Duration::from_secs(10))
}

fn state_with_timeout(
    spool: &TestSpool,
    max_body_bytes: usize,
    request_timeout: Duration,
) -> Arc<IngestState<SqliteSpool>> {
    state_with_budget(spool, max_body_bytes, request_timeout, 64 << 20)
}

fn state_with_budget(
    spool: &TestSpool,
    max_body_bytes: usize,
    request_timeout: Duration,
    max_inflight_body_bytes: usize,
) -> Arc<IngestState<SqliteSpool>> {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    Arc::new(IngestState::new(
        Arc::clone(&spool.spool),
        IngestOptions {
            tokens: BearerTokens::new([TOKEN, NEXT_TOKEN]),
            max_body_bytes,
            request_timeout,
            max_events_per_batch: 1000,
            body_budget: crate::body_budget::BodyBudget::new(
                max_inflight_body_bytes,
                metrics.ingest_body_bytes_reserved.clone(),
            ),
        },
        metrics,
    ))
}

/// The value of one sample in the metrics text, 0 when absent.
fn sample(state: &IngestState<SqliteSpool>, name_and_labels: &str) -> u64 {
    state
        .metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().unwrap())
}

fn post() -> axum::http::request::Builder {
    Request::post("/currents")
}

async fn send(
    state: &Arc<IngestState<SqliteSpool>>,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = routes(Arc::clone(state))
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

fn authorized(body: &str) -> Request<Body> {
    post()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("braze-currents-version", "1")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn batch_body(n_events: usize) -> String {
    let events: Vec<String> = (0..n_events)
        .map(|idx| {
            format!(
                r#"{{"event_type":"users.messages.email.Open","id":"3f1c2d4e-0000-4000-8000-{idx:012}","time":1732792800,"user":{{"user_id":"65f1","external_user_id":"cust-{idx}"}},"properties":{{"campaign_name":"Été ☀ sale","email_address":"ana.souza@example.com"}}}}"#
            )
        })
        .collect();
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

async fn n_batches(spool: &TestSpool) -> u64 {
    spool.spool.stats().await.unwrap().n_batches
}

#[tokio::test]
async fn a_valid_batch_is_spooled_then_acknowledged() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    let body = batch_body(3);
    let request = post()
        .uri("/currents?workspace=brand-a")
        .header(header::AUTHORIZATION, format!("Bearer {NEXT_TOKEN}"))
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, _, json) = send(&state, request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["events"], 3);
    let leased = spool
        .spool
        .lease(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].batch.body, body.as_bytes());
    assert_eq!(leased[0].batch.workspace.as_deref(), Some("brand-a"));
}

#[tokio::test]
async fn empty_bodies_check_credentials_and_store_nothing() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    for body in ["", "  \n", r#"{"events":[]}"#] {
        let (status, _, json) = send(&state, authorized(body)).await;
        assert_eq!(status, StatusCode::OK, "{body:?}: {json}");
    }
    assert_eq!(n_batches(&spool).await, 0);
    let request = post()
        .header(header::AUTHORIZATION, "Bearer not-a-token")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&state, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_refused() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    let missing = post().body(Body::from(batch_body(1))).unwrap();
    let (status, _, json) = send(&state, missing).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["error"], "missing bearer token");
    let wrong = post()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}x"))
        .body(Body::from(batch_body(1)))
        .unwrap();
    let (status, _, json) = send(&state, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!json.to_string().contains(TOKEN));
    assert_eq!(n_batches(&spool).await, 0);
}

#[tokio::test]
async fn undecodable_bodies_are_400_with_a_json_error() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    for body in [
        "not json",
        r#"{"events":5}"#,
        r#"[{"event_type":"x"}]"#,
        r#"{"events":[1,2"#,
        r#"{"event_type":"users.messages.email.Open","events":[]}"#,
    ] {
        let (status, _, json) = send(&state, authorized(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert!(json["error"].is_string(), "{body:?}: {json}");
    }
    let invalid_utf8 = post()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(vec![b'{', 0xff, b'}']))
        .unwrap();
    let (status, _, _) = send(&state, invalid_utf8).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(n_batches(&spool).await, 0);
}

#[tokio::test]
async fn invalid_events_inside_a_valid_batch_do_not_refuse_it() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    let body = r#"{"events":[{"event_type":"users.messages.email.Open","id":"a-1","time":1,"user":{"external_user_id":"u"}},{"id":7},"garbage",null]}"#;
    let (status, _, json) = send(&state, authorized(body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["events"], 4);
    assert_eq!(n_batches(&spool).await, 1);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_inflated_and_the_cap_applies_after_inflation() {
    let spool = spool(1 << 30);
    let state = state(&spool, 64 * 1024);
    let body = batch_body(5);
    let request = post()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(body.as_bytes())))
        .unwrap();
    let (status, _, json) = send(&state, request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let leased = spool
        .spool
        .lease(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(leased[0].batch.body, body.as_bytes(), "stored inflated");

    // A gzip bomb: 64 MB of zeros in well under 100 KB.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 100 * 1024);
    let request = post()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(bomb))
        .unwrap();
    let (status, _, json) = send(&state, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");

    let broken = post()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(b"\x1f\x8bnot really gzip".to_vec()))
        .unwrap();
    let (status, _, _) = send(&state, broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_plain_body_over_the_cap_is_413() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1024);
    let (status, _, json) = send(&state, authorized(&batch_body(20))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        json["error"].as_str().unwrap().contains("1024-byte limit"),
        "{json}"
    );
    assert_eq!(n_batches(&spool).await, 0);
}

#[tokio::test]
async fn a_batch_over_the_event_cap_is_413_so_braze_splits_it() {
    let spool = spool(1 << 30);
    let state = state(&spool, 64 * 1024 * 1024);
    let (status, _, json) = send(&state, authorized(&batch_body(1001))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("1001 events, over the limit of 1000"),
        "{json}"
    );
    assert_eq!(n_batches(&spool).await, 0);
    // A million invalid events in a small body: refused, not stored.
    let tiny_events = format!("{{\"events\":[{}1]}}", "1,".repeat(999_999));
    let (status, _, _) = send(&state, authorized(&tiny_events)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(n_batches(&spool).await, 0);
    let (status, _, _) = send(&state, authorized(&batch_body(1000))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn credentials_come_before_the_content_encoding() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1024 * 1024);
    let brotli = post()
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from("not even brotli"))
        .unwrap();
    let (status, _, _) = send(&state, brotli).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let deflate = post()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_ENCODING, "deflate")
        .body(Body::from("x"))
        .unwrap();
    let (status, _, json) = send(&state, deflate).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        json["error"].as_str().unwrap().contains("Content-Encoding"),
        "{json}"
    );
}

#[tokio::test]
async fn empty_gzip_members_past_the_cap_are_413_without_waiting_for_the_timeout() {
    let spool = spool(1 << 30);
    let state = state_with_timeout(&spool, 64 * 1024, Duration::from_secs(30));
    let empty_member = gzip(b"");
    let body: Vec<u8> = empty_member
        .iter()
        .copied()
        .cycle()
        .take(empty_member.len() * 10_000)
        .collect();
    let request = post()
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(body))
        .unwrap();
    let started = std::time::Instant::now();
    let (status, _, json) = send(&state, request).await;
    // The timeout would have answered 503: a 413 is the cap's own answer.
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("byte limit"),
        "{json}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_full_spool_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    let body = batch_body(10);
    let spool = spool(body.len() as u64 * 2 + 10);
    let state = state(&spool, 1 << 20);
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..5 {
        let (status, headers, _) = send(&state, authorized(&body)).await;
        match status {
            StatusCode::OK => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert_eq!(
                    headers[header::RETRY_AFTER],
                    "30",
                    "time for delivery to free space"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        accepted >= 2 && refused >= 1,
        "accepted {accepted}, refused {refused}"
    );
    assert_eq!(n_batches(&spool).await, accepted);
    assert_eq!(
        sample(
            &state,
            "bridge_ingest_unavailable_requests_total{reason=\"spool_full\"}"
        ),
        refused
    );
    assert_eq!(
        sample(&state, "bridge_ingest_requests_total{status=\"503\"}"),
        refused
    );
}

#[tokio::test]
async fn shutting_down_answers_503() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    state.stop_accepting();
    let (status, headers, _) = send(&state, authorized(&batch_body(1))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert_eq!(n_batches(&spool).await, 0);
    assert_eq!(
        sample(
            &state,
            "bridge_ingest_unavailable_requests_total{reason=\"shutting_down\"}"
        ),
        1
    );
}

#[tokio::test]
async fn a_request_that_times_out_is_a_503_like_any_other_and_counted() {
    let spool = spool(1 << 30);
    let state = state_with_timeout(&spool, 1 << 20, Duration::from_millis(200));
    // Another connection holds the write lock, as the dead-letter CLI may:
    // the append waits for it (up to the spool's 5 s busy timeout), longer
    // than the request may take.
    let blocker = rusqlite::Connection::open(spool.dir.join("spool.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, headers, body) = send(&state, authorized(&batch_body(1))).await;
    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "10");
    assert!(body["error"].as_str().is_some(), "{body}");
    assert_eq!(
        sample(
            &state,
            "bridge_ingest_unavailable_requests_total{reason=\"timeout\"}"
        ),
        1
    );
    assert_eq!(
        sample(&state, "bridge_ingest_requests_total{status=\"503\"}"),
        1
    );
}

#[tokio::test]
async fn other_paths_are_not_ingest_requests() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    let request = Request::get("/currents/../admin")
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = send(&state, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !state
            .metrics
            .render()
            .contains("bridge_ingest_requests_total"),
        "{}",
        state.metrics.render()
    );
}

/// A body whose chunks arrive when the test sends them; it ends when the
/// sender is dropped.
fn trickled_body() -> (tokio::sync::mpsc::Sender<&'static [u8]>, Body) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<&'static [u8]>(4);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(chunk)),
            receiver,
        ))
    });
    (sender, Body::from_stream(stream))
}

#[tokio::test]
async fn bodies_in_flight_wait_for_the_memory_budget() {
    let spool = spool(1 << 30);
    // A budget of one largest body: a gzip request (size unknown until
    // inflated) reserves all of it while its body is read.
    let max_body_bytes = 64 * 1024;
    let state = state_with_budget(
        &spool,
        max_body_bytes,
        Duration::from_secs(30),
        max_body_bytes,
    );
    let app = routes(Arc::clone(&state));
    let (sender, body) = trickled_body();
    let holder = tokio::spawn(
        app.clone().oneshot(
            post()
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_ENCODING, "gzip")
                .body(body)
                .unwrap(),
        ),
    );
    sender.send(&[0x1f]).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sample(&state, "bridge_ingest_body_bytes_reserved") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first request never reserved its share"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        sample(&state, "bridge_ingest_body_bytes_reserved"),
        max_body_bytes as u64
    );

    // A small batch does not fit: it waits (its answer would come at once
    // otherwise)...
    let small = batch_body(1);
    let waiting = tokio::spawn(app.clone().oneshot(authorized(&small)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a request over the budget must wait"
    );

    // ...until the first request is answered and gives its share back.
    drop(sender);
    let first = holder.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::BAD_REQUEST);
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(sample(&state, "bridge_ingest_body_bytes_reserved"), 0);
}

#[tokio::test]
async fn unauthenticated_requests_take_nothing_from_the_budget() {
    let spool = spool(1 << 30);
    let state = state_with_budget(&spool, 1024, Duration::from_secs(5), 1024);
    let (_sender, body) = trickled_body();
    let app = routes(Arc::clone(&state));
    let response = app
        .oneshot(
            post()
                .header(header::CONTENT_ENCODING, "gzip")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sample(&state, "bridge_ingest_body_bytes_reserved"), 0);
}

#[tokio::test]
async fn a_workspace_of_256_bytes_is_accepted_and_one_of_257_refused() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    let with_workspace = |workspace: &str| {
        post()
            .uri(format!("/currents?workspace={workspace}"))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(batch_body(1)))
            .unwrap()
    };
    // Bytes, not characters: 128 two-byte characters are 256 bytes.
    let at_limit = "é".repeat(128);
    assert_eq!(at_limit.len(), 256);
    let encoded: String = at_limit
        .bytes()
        .map(|byte| format!("%{byte:02X}"))
        .collect();
    let (status, _, json) = send(&state, with_workspace(&encoded)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, _, json) = send(&state, with_workspace(&"w".repeat(256))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let leased = spool
        .spool
        .lease(10, Duration::from_secs(60))
        .await
        .unwrap();
    let workspaces: Vec<&str> = leased
        .iter()
        .filter_map(|leased| leased.batch.workspace.as_deref())
        .collect();
    assert_eq!(workspaces, [at_limit, "w".repeat(256)]);

    for over in ["w".repeat(257), format!("{encoded}w")] {
        let (status, _, json) = send(&state, with_workspace(&over)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
        assert_eq!(
            json["error"], "workspace is longer than 256 bytes",
            "{json}"
        );
    }
    assert_eq!(n_batches(&spool).await, 2, "nothing more stored");
}

#[tokio::test]
async fn a_spool_closing_under_a_request_answers_503_with_the_shutdown_retry_after() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    // Still accepting, but the spool is already closed (shutdown's last step).
    spool.spool.close().await.unwrap();
    let (status, headers, json) = send(&state, authorized(&batch_body(1))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert_eq!(
        sample(
            &state,
            "bridge_ingest_unavailable_requests_total{reason=\"shutting_down\"}"
        ),
        1
    );
}

#[tokio::test]
async fn a_content_length_over_the_cap_is_a_413_with_the_json_of_every_413() {
    let spool = spool(1 << 30);
    let state = state(&spool, 64 * 1024);
    // Refused on its Content-Length by the compressed-size limit, before
    // the body is read: the answer still reads like every other 413.
    for encoding in ["gzip", "identity"] {
        let body = vec![b' '; 64 * 1024 + 1];
        let request = post()
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_ENCODING, encoding)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        let (status, headers, json) = send(&state, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{encoding}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(
            json["error"].as_str().unwrap().contains("65536-byte limit"),
            "{json}"
        );
    }
}

#[tokio::test]
async fn an_accepted_batch_ends_a_503_episode_and_a_refused_one_does_not() {
    let body = batch_body(5);
    // Room for one small batch, not for a large one.
    let spool = spool(body.len() as u64 + 100);
    let state = state(&spool, 1 << 20);
    // The same state with a refusal log that writes every line at once
    // (no 10 s between lines), so that an episode's end shows at once.
    let state = Arc::new(IngestState {
        spool: Arc::clone(&state.spool),
        config: state.config.clone(),
        accepting: AtomicBool::new(true),
        metrics: Arc::clone(&state.metrics),
        refusals: RefusalLog::new(Duration::ZERO),
    });
    let large = batch_body(50);
    let (status, _, _) = send(&state, authorized(&large)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // A 400 is neither a refusal the log reports nor an acceptance...
    let (status, _, _) = send(&state, authorized("{")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        state.refusals.accepted(std::time::Instant::now()).len(),
        1,
        "the 503 episode must still be open after a 400"
    );
    // ...while a 200 ends the episode.
    let (status, _, _) = send(&state, authorized(&large)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = send(&state, authorized(&body)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        state
            .refusals
            .accepted(std::time::Instant::now())
            .is_empty(),
        "the 200 ended the episode"
    );
}

#[tokio::test]
async fn a_batch_is_stored_with_the_time_it_was_received() {
    let spool = spool(1 << 30);
    let state = state(&spool, 1 << 20);
    let before = crate::clock::now_ms();
    let (status, _, _) = send(&state, authorized(&batch_body(1))).await;
    assert_eq!(status, StatusCode::OK);
    let after = crate::clock::now_ms();
    let leased = spool.spool.lease(1, Duration::from_secs(60)).await.unwrap();
    let received_at_ms = leased[0].batch.received_at_ms;
    assert!(
        (before..=after).contains(&received_at_ms),
        "{before} <= {received_at_ms} <= {after}"
    );
    // And it is the wall clock: after 2020-01-01.
    assert!(received_at_ms > 1_577_836_800_000);
}

/// A spool whose append panics: a bug of ours, as ingest sees it.
struct PanickingSpool;

impl Spool for PanickingSpool {
    async fn append(&self, _: NewBatch) -> Result<crate::spool::BatchId, SpoolError> {
        panic!("a bug in appending (the test's)");
    }
    async fn lease_within(
        &self,
        _: crate::spool::LeaseLimits,
        _: Duration,
    ) -> Result<Vec<crate::spool::LeasedBatch>, SpoolError> {
        Ok(Vec::new())
    }
    async fn settle(
        &self,
        _: crate::spool::BatchId,
        _: Vec<crate::spool::DeadLetter>,
    ) -> Result<(), SpoolError> {
        Ok(())
    }
    async fn release(&self, _: crate::spool::BatchId, _: Duration) -> Result<(), SpoolError> {
        Ok(())
    }
    async fn stats(&self) -> Result<crate::spool::SpoolStats, SpoolError> {
        Ok(crate::spool::SpoolStats::default())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_fault_of_ours_is_a_500_that_reveals_nothing_and_is_logged_as_an_error() {
    let (logs, _guard) = crate::test_logs::Logs::capture();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let state = Arc::new(IngestState::new(
        Arc::new(PanickingSpool),
        IngestOptions {
            tokens: BearerTokens::new([TOKEN]),
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            max_events_per_batch: 1000,
            body_budget: crate::body_budget::BodyBudget::new(
                64 << 20,
                metrics.ingest_body_bytes_reserved.clone(),
            ),
        },
        metrics,
    ));
    let response = routes(state)
        .oneshot(authorized(&batch_body(1)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(&body[..], br#"{"error":"internal error"}"#);
    let text = logs.text();
    assert!(
        text.lines().any(|line| line.contains("ERROR")
            && line.contains("Answered a Currents request with a server error")),
        "{text}"
    );
}
