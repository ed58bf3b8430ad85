//! Delivery tests: a real SQLite spool, a dry-run file or a wiremock Mixpanel.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use mixpanel_client::{BatchLimits, Client, Credentials, RetryParams};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::*;
use crate::metrics::Metrics;
use crate::spool::NewBatch;
use crate::spool::sqlite::{DeadLetterFilter, SqliteSpool, SqliteSpoolOptions};
use currents_mixpanel::{Mapper, MappingConfig};

pub(super) struct TestDir(pub(super) PathBuf);

impl TestDir {
    pub(super) fn new() -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bridge-delivery-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Workspace `brand-b` or app group `ag-b` go to project 1, the rest to 0.
pub(super) struct TwoProjects;

impl Router for TwoProjects {
    fn route(&self, workspace: Option<&str>, app_group_id: Option<&str>) -> usize {
        usize::from(workspace == Some("brand-b") || app_group_id == Some("ag-b"))
    }
}

pub(super) fn options() -> DeliveryOptions {
    DeliveryOptions {
        workers: 1,
        batches_per_lease: 1,
        lease: Duration::from_secs(60),
        linger: Duration::ZERO,
        batch_limits: BatchLimits::default(),
        pause_retry: Duration::from_secs(60),
        max_retry_delay: Duration::from_secs(600),
        max_attempts: 1000,
        max_age: Duration::from_secs(5 * 24 * 3600),
        archive: None,
        idle_poll: Duration::from_millis(10),
    }
}

/// One batch leased and settled.
pub(super) const SETTLED: LeaseResult = LeaseResult {
    settled: 1,
    released: 0,
};
/// One batch leased and released.
pub(super) const RELEASED: LeaseResult = LeaseResult {
    settled: 0,
    released: 1,
};

fn mapper(token: &str) -> Mapper {
    Mapper::new(MappingConfig {
        project_token: Some(token.to_owned()),
        ..MappingConfig::default()
    })
}

pub(super) fn mixpanel(server: &MockServer, name: &str) -> ProjectTarget {
    let client = Client::builder(Credentials::service_account("svc", "secret", "42"))
        .base_url(server.uri())
        .retry(RetryParams {
            max_retries: 1,
            ..RetryParams::for_test()
        })
        .build()
        .unwrap();
    ProjectTarget {
        name: name.to_owned(),
        mapper: mapper(&format!("token-{name}")),
        sink: Sink::Mixpanel(client),
    }
}

pub(super) fn event(id: &str, external_user_id: Option<&str>, app_group_id: &str) -> Value {
    json!({"event_type": "users.messages.email.Click", "id": id, "time": 1732792800,
        "user": {"user_id": "b-1", "external_user_id": external_user_id},
        "properties": {"app_group_id": app_group_id, "campaign_name": "Winter ❄", "url": "https://shop.example/x"}})
}

async fn append(spool: &SqliteSpool, events: &[Value], workspace: Option<&str>) {
    let body = json!({ "events": events }).to_string();
    spool
        .append(NewBatch {
            body: Bytes::from(body),
            workspace: workspace.map(str::to_owned),
            received_at_ms: crate::clock::now_ms(),
        })
        .await
        .unwrap();
}

/// An `/import` that refuses the record with this `$insert_id` ("too old")
/// and imports the others.
fn refusing(insert_id: &'static str) -> impl Fn(&Request) -> ResponseTemplate {
    move |request: &Request| {
        let events = events_in(request);
        match events.iter().position(|event| event["properties"]["$insert_id"] == insert_id) {
            Some(idx) => ResponseTemplate::new(400).set_body_json(json!({"code": 400, "num_records_imported": events.len() - 1,
                "failed_records": [{"index": idx, "$insert_id": insert_id, "field": "properties.time", "message": "too old"}]})),
            None => ResponseTemplate::new(200).set_body_json(json!({"code": 200, "num_records_imported": events.len()})),
        }
    }
}

/// A dry-run project writing to `dry-run/default.ndjson` in `dir`, and that
/// file's path.
fn dry_run_project(dir: &TestDir) -> (ProjectTarget, PathBuf) {
    let file_path = dir.0.join("dry-run/default.ndjson");
    let project = ProjectTarget {
        name: "default".to_owned(),
        mapper: mapper("tok"),
        sink: Sink::DryRun(DryRunFile::open(&file_path).unwrap()),
    };
    (project, file_path)
}

/// A spool in `dir`.
pub(super) fn spool_in(dir: &TestDir) -> Arc<SqliteSpool> {
    Arc::new(SqliteSpool::open(SqliteSpoolOptions::new(dir.0.clone(), 1 << 30)).unwrap())
}

/// Delivery over `spool` to these projects, routed by `TwoProjects`.
fn delivery_to(
    spool: &Arc<SqliteSpool>,
    projects: Vec<ProjectTarget>,
    options: DeliveryOptions,
) -> Delivery<SqliteSpool, TwoProjects> {
    Delivery::new(
        Arc::clone(spool),
        TwoProjects,
        projects,
        options,
        Arc::new(Metrics::new()),
    )
}

/// [`delivery_to`], also handing back its metrics, for the tests that read
/// the Prometheus samples delivery records.
pub(super) fn delivery_with_metrics(
    spool: &Arc<SqliteSpool>,
    projects: Vec<ProjectTarget>,
    options: DeliveryOptions,
) -> (Delivery<SqliteSpool, TwoProjects>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let delivery = Delivery::new(
        Arc::clone(spool),
        TwoProjects,
        projects,
        options,
        Arc::clone(&metrics),
    );
    (delivery, metrics)
}

/// The value of one sample in the metrics text (`name{labels}`), 0 when
/// absent: what a Prometheus scrape would read.
pub(super) fn sample(metrics: &Metrics, name_and_labels: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// An `/import` that takes every record it is sent.
pub(super) fn accepting(request: &Request) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"code": 200, "num_records_imported": events_in(request).len()}))
}

/// Appends `n` batches of one event each, with ids `<prefix>-0`, `<prefix>-1`, ….
async fn append_one_each(spool: &SqliteSpool, prefix: &str, n: usize) {
    for batch_idx in 0..n {
        let id = format!("{prefix}-{batch_idx}");
        append(spool, &[event(&id, Some("cust-1"), "ag")], None).await;
    }
}

/// A Mixpanel that takes every record.
pub(super) async fn mixpanel_accepting() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(accepting)
        .mount(&server)
        .await;
    server
}

pub(super) fn events_in(request: &Request) -> Vec<Value> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&request.body[..])
        .read_to_end(&mut text)
        .unwrap();
    serde_json::from_slice(&text).unwrap()
}

#[tokio::test]
async fn dry_run_writes_mapped_events_and_dead_letters_invalid_ones() {
    let dir = TestDir::new();
    let spool =
        Arc::new(SqliteSpool::open(SqliteSpoolOptions::new(dir.0.join("spool"), 1 << 30)).unwrap());
    let (project, file_path) = dry_run_project(&dir);
    let delivery = delivery_to(&spool, vec![project], options());
    append(
        &spool,
        &[
            event("e-1", Some("cust-1"), "ag"),
            event("e-2", None, "ag"),
            json!({"id": "x"}),
            json!("junk"),
        ],
        None,
    )
    .await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(delivery.deliver_next().await.unwrap(), None);

    let written = std::fs::read_to_string(&file_path).unwrap();
    let lines: Vec<Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event"], "Email Click");
    assert_eq!(lines[0]["properties"]["$insert_id"], "e-1");
    assert_eq!(lines[0]["properties"]["token"], "tok");

    let store = spool.dead_letter_store().unwrap();
    let dead = store.list(&DeadLetterFilter::default(), 10).unwrap();
    let reasons: Vec<&str> = dead
        .iter()
        .map(|entry| entry.letter.reason.as_str())
        .collect();
    assert_eq!(reasons, ["missing_event_type", "not_an_object"]);
    assert_eq!(dead[1].letter.event, Bytes::from_static(b"\"junk\""));
    let status = delivery.status();
    assert_eq!(status.delivered.load(Ordering::Relaxed), 1);
    assert_eq!(
        status.skipped[currents_mixpanel::SkipReason::NoExternalUserId as usize]
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(status.dead_lettered.load(Ordering::Relaxed), 2);
    assert_eq!(spool.stats().await.unwrap().n_batches, 0);
}

#[tokio::test]
async fn refused_records_are_dead_lettered_with_the_original_event_and_routing_splits_projects() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server_a = MockServer::start().await;
    let server_b = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(refusing("bad-1"))
        .mount(&server_a)
        .await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_json(
                json!({"code": 200, "num_records_imported": events_in(request).len()}),
            )
        })
        .mount(&server_b)
        .await;
    let delivery = delivery_to(
        &spool,
        vec![mixpanel(&server_a, "a"), mixpanel(&server_b, "b")],
        options(),
    );
    let bad = event("bad-1", Some("cust-9"), "ag-a");
    append(
        &spool,
        &[
            event("a-1", Some("cust-1"), "ag-a"),
            bad.clone(),
            event("b-1", Some("cust-2"), "ag-b"),
        ],
        None,
    )
    .await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));

    let to_a: Vec<Value> = server_a
        .received_requests()
        .await
        .unwrap()
        .iter()
        .flat_map(events_in)
        .collect();
    let to_b: Vec<Value> = server_b
        .received_requests()
        .await
        .unwrap()
        .iter()
        .flat_map(events_in)
        .collect();
    assert_eq!(to_a.len(), 2);
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0]["properties"]["token"], "token-b");
    let dead = spool
        .dead_letter_store()
        .unwrap()
        .list(&DeadLetterFilter::default(), 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].letter.reason, REFUSED_BY_MIXPANEL);
    assert_eq!(dead[0].letter.detail, "properties.time: too old");
    assert_eq!(dead[0].letter.event_id.as_deref(), Some("bad-1"));
    let stored: Value = serde_json::from_slice(&dead[0].letter.event).unwrap();
    assert_eq!(stored, bad, "the dead letter keeps the Currents event");
}

#[tokio::test]
async fn an_outage_releases_the_batch_and_a_later_attempt_delivers_it() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_json(
                json!({"code": 200, "num_records_imported": events_in(request).len()}),
            )
        })
        .mount(&server)
        .await;
    let mut opts = options();
    opts.max_retry_delay = Duration::ZERO;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], opts);
    append(&spool, &[event("o-1", Some("cust-1"), "ag")], None).await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    assert_eq!(spool.stats().await.unwrap().n_batches, 1, "kept for later");
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        3,
        "two 503s, then the accepted retry"
    );
    let status = delivery.status();
    assert_eq!(status.batches_released.load(Ordering::Relaxed), 1);
    assert_eq!(status.delivered.load(Ordering::Relaxed), 1);
    assert_eq!(spool.stats().await.unwrap().n_batches, 0);
}

#[tokio::test]
async fn a_batch_past_its_attempt_limit_is_dead_lettered_with_the_last_error() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("down for maintenance"))
        .mount(&server)
        .await;
    let mut opts = options();
    opts.max_retry_delay = Duration::ZERO;
    opts.max_attempts = 2;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], opts);
    append(&spool, &[event("x-1", Some("cust-1"), "ag")], None).await;
    // First delivery: released; the second reaches the limit and gives up.
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.n_batches, stats.n_dead_letters), (0, 1));
    let status = delivery.status();
    assert_eq!(status.delivered.load(Ordering::Relaxed), 0);
    assert_eq!(status.dead_lettered.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn refused_credentials_pause_the_project_and_success_resumes_it() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": "Invalid credentials"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_json(
                json!({"code": 200, "num_records_imported": events_in(request).len()}),
            )
        })
        .mount(&server)
        .await;
    let mut opts = options();
    opts.pause_retry = Duration::ZERO;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], opts);
    append(&spool, &[event("p-1", Some("cust-1"), "ag")], None).await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    let projects = delivery.status().projects();
    assert_eq!(projects[0].state, "paused");
    assert!(
        projects[0]
            .paused_reason
            .as_deref()
            .unwrap()
            .contains("Invalid credentials")
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "401 is not retried"
    );

    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(delivery.status().projects()[0].state, "delivering");
    assert_eq!(delivery.status().delivered.load(Ordering::Relaxed), 1);
}

/// The failure log, with the time passed in.
mod failure_episodes {
    use super::*;
    use crate::delivery::failure_log::{Failure, FailureLog};
    use crate::log_limit::Line;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn unavailable() -> MixpanelError {
        MixpanelError::Unavailable {
            status: 503,
            attempts: 3,
            retry_after: None,
            message: "down for maintenance".to_owned(),
        }
    }

    fn refused_credentials() -> MixpanelError {
        MixpanelError::Auth {
            status: 401,
            message: "Invalid credentials".to_owned(),
        }
    }

    #[test]
    fn a_failing_spool_logs_a_start_a_summary_per_interval_and_the_end() {
        let log = FailureLog::new(INTERVAL);
        let start = Instant::now();
        let error = SpoolError::Storage("spool.db: database or disk is full".to_owned());
        let mut lines = Vec::new();
        // Four workers, each failing once a second for a minute.
        for secs in 0..60u64 {
            for worker_idx in 0..4 {
                let at = start + Duration::from_secs(secs) + Duration::from_millis(worker_idx * 10);
                lines.extend(log.spool_failed(at, worker_idx as usize, &error));
            }
        }
        assert_eq!(lines[0], Line::Started { n_events: 1 });
        assert_eq!(
            lines.len(),
            6,
            "a start and one summary per 10 s: {lines:?}"
        );
        assert!(
            lines[1..]
                .iter()
                .all(|line| matches!(line, Line::Summary { n_events: 40, .. })),
            "{lines:?}"
        );
        // A worker leases again: the end, with the failures not yet told.
        let ended = log.spool_worked(start + Duration::from_secs(60));
        assert!(
            matches!(ended, Some(Line::Ended { n_events: 39, .. })),
            "{ended:?}"
        );
        let n_logged: u64 = lines.iter().chain(&ended).map(|line| line.n_events()).sum();
        assert_eq!(n_logged, 240, "every failure is counted in one line");
        assert_eq!(log.spool_worked(start + Duration::from_secs(90)), None);
    }

    #[test]
    fn each_project_has_its_own_episodes_and_a_success_ends_both_of_its_own() {
        let log = FailureLog::new(INTERVAL);
        let start = Instant::now();
        let retry_in = Duration::from_secs(5);
        // Project 0 is down; project 1 refuses the credentials.
        for batch_idx in 0..100u32 {
            let at = start + Duration::from_millis(100) * batch_idx;
            log.send_failed(at, 0, "a", &unavailable(), retry_in, 1);
            log.send_failed(at, 1, "b", &refused_credentials(), retry_in, 1);
        }
        assert_eq!(
            log.n_unreported(Failure::CannotDeliver { project_idx: 0 }),
            99,
            "the first was logged, the others counted"
        );
        assert_eq!(
            log.n_unreported(Failure::CredentialsRefused { project_idx: 1 }),
            99
        );
        assert_eq!(
            log.n_unreported(Failure::CannotDeliver { project_idx: 1 }),
            0
        );

        // Project 1 takes a batch: its episode ends, project 0's goes on.
        let at = start + Duration::from_secs(10);
        assert_eq!(
            log.sent(at, 1, "b"),
            vec![Line::Ended {
                n_events: 99,
                over: Duration::from_secs(10)
            }]
        );
        assert_eq!(
            log.n_unreported(Failure::CannotDeliver { project_idx: 0 }),
            99
        );
        assert_eq!(
            log.send_failed(at, 0, "a", &unavailable(), retry_in, 2),
            Some(Line::Summary {
                n_events: 100,
                over: Duration::from_secs(10)
            })
        );
        assert!(log.sent(at + INTERVAL * 2, 1, "b").is_empty(), "said once");
    }

    #[test]
    fn refused_credentials_after_an_outage_are_a_new_episode() {
        let log = FailureLog::new(INTERVAL);
        let start = Instant::now();
        let retry_in = Duration::from_secs(60);
        assert_eq!(
            log.send_failed(start, 0, "a", &unavailable(), retry_in, 1),
            Some(Line::Started { n_events: 1 })
        );
        // Credentials refused during the outage's episode: told at once.
        assert_eq!(
            log.send_failed(start, 0, "a", &refused_credentials(), retry_in, 1),
            Some(Line::Started { n_events: 1 })
        );
        // A success ends both, each with its own line.
        assert_eq!(log.sent(start + INTERVAL, 0, "a").len(), 2);
    }
}

#[tokio::test]
async fn an_outage_logs_its_first_failed_attempt_and_counts_the_others() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let mut opts = options();
    opts.max_retry_delay = Duration::ZERO;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], opts);
    append_one_each(&spool, "l", 3).await;
    for _ in 0..3 {
        assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    }
    let cannot_deliver = super::failure_log::Failure::CannotDeliver { project_idx: 0 };
    assert_eq!(
        delivery.failures.n_unreported(cannot_deliver),
        2,
        "the first failed attempt is logged, the next ones counted"
    );
    // Every attempt is still counted in the status and the metrics.
    assert_eq!(
        delivery.status().batches_released.load(Ordering::Relaxed),
        3
    );
    // When the project takes a batch an interval later, the end is logged
    // with the failures not told yet.
    let ended = delivery
        .failures
        .sent(Instant::now() + SUMMARY_INTERVAL, 0, "a");
    assert!(
        matches!(
            ended[..],
            [crate::log_limit::Line::Ended { n_events: 2, .. }]
        ),
        "{ended:?}"
    );
}

#[tokio::test]
async fn batches_leased_together_share_requests_and_refusals_find_their_batch() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(refusing("g-3-1"))
        .mount(&server)
        .await;
    let mut opts = options();
    opts.batches_per_lease = 10;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], opts);
    for batch_idx in 0..5 {
        let events: Vec<Value> = (0..3)
            .map(|idx| event(&format!("g-{batch_idx}-{idx}"), Some("cust-1"), "ag"))
            .collect();
        append(&spool, &events, None).await;
    }
    assert_eq!(
        delivery.deliver_next().await.unwrap(),
        Some(LeaseResult {
            settled: 5,
            released: 0
        })
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "five batches, one request");
    assert_eq!(events_in(&requests[0]).len(), 15);
    let dead = spool
        .dead_letter_store()
        .unwrap()
        .list(&DeadLetterFilter::default(), 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].letter.event_id.as_deref(), Some("g-3-1"));
    let status = delivery.status();
    assert_eq!(status.delivered.load(Ordering::Relaxed), 14);
    assert_eq!(status.dead_lettered.load(Ordering::Relaxed), 1);
    assert_eq!(spool.stats().await.unwrap().n_batches, 0);
}

/// A delivery to an accepting `/import` whose worker leases up to
/// `batches_per_lease` and lingers up to `linger` for them, polling every
/// 10 ms.
async fn lingering_delivery(
    spool: &Arc<SqliteSpool>,
    batches_per_lease: usize,
    linger: Duration,
) -> (MockServer, Delivery<SqliteSpool, TwoProjects>) {
    let server = mixpanel_accepting().await;
    let mut opts = options();
    opts.batches_per_lease = batches_per_lease;
    opts.linger = linger;
    opts.idle_poll = Duration::from_millis(10);
    let delivery = delivery_to(spool, vec![mixpanel(&server, "a")], opts);
    (server, delivery)
}

#[tokio::test]
async fn a_worker_lingers_for_batches_that_arrive_after_its_lease_and_sends_them_together() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let (server, delivery) = lingering_delivery(&spool, 3, Duration::from_secs(30)).await;
    append(&spool, &[event("l-0", Some("cust-1"), "ag")], None).await;
    let late = {
        let spool = Arc::clone(&spool);
        tokio::spawn(async move {
            for idx in 1..4 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                append(
                    &spool,
                    &[event(&format!("l-{idx}"), Some("cust-1"), "ag")],
                    None,
                )
                .await;
            }
        })
    };
    // The group fills (3 batches) long before the 30 s linger ends; the
    // fourth batch waits for the next lease.
    let result = delivery.deliver_next().await.unwrap();
    late.await.unwrap();
    assert_eq!(
        result,
        Some(LeaseResult {
            settled: 3,
            released: 0
        })
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "three batches, one request");
    assert_eq!(events_in(&requests[0]).len(), 3);
    assert_eq!(spool.stats().await.unwrap().n_batches, 1);
}

#[tokio::test]
async fn a_worker_sends_a_partial_group_when_its_linger_ends() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let (server, delivery) = lingering_delivery(&spool, 20, Duration::from_secs(1)).await;
    append_one_each(&spool, "p", 2).await;
    let started = std::time::Instant::now();
    let result = delivery.deliver_next().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        result,
        Some(LeaseResult {
            settled: 2,
            released: 0
        })
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    // Nothing due: no waiting, no request.
    let started = std::time::Instant::now();
    assert_eq!(delivery.deliver_next().await.unwrap(), None);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn lingering_never_holds_more_bodies_than_one_lease_could() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let (_server, delivery) = lingering_delivery(&spool, 20, Duration::from_millis(500)).await;
    // Batches of 40 events of 80 KB each, about 3.2 MB: two fit in a
    // group's 8 MiB, a third does not.
    let big_batch = |seq: usize| -> Vec<Value> {
        (0..40)
            .map(|idx| {
                let mut event = event(&format!("big-{seq}-{idx}"), Some("cust-1"), "ag");
                event["properties"]["url"] = Value::String("x".repeat(80_000));
                event
            })
            .collect()
    };
    append(&spool, &big_batch(0), None).await;
    let late = {
        let spool = Arc::clone(&spool);
        tokio::spawn(async move {
            for seq in 1..3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                append(&spool, &big_batch(seq), None).await;
            }
        })
    };
    let result = delivery.deliver_next().await.unwrap();
    late.await.unwrap();
    assert_eq!(
        result,
        Some(LeaseResult {
            settled: 2,
            released: 0
        })
    );
    // The third waits for the next group, which it starts.
    assert_eq!(spool.stats().await.unwrap().n_batches, 1);
    assert_eq!(
        delivery.deliver_next().await.unwrap(),
        Some(LeaseResult {
            settled: 1,
            released: 0
        })
    );
}

#[tokio::test]
async fn a_project_that_cannot_take_events_holds_back_only_the_batches_with_its_events() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server_a = MockServer::start().await;
    let server_b = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_json(
                json!({"code": 200, "num_records_imported": events_in(request).len()}),
            )
        })
        .mount(&server_a)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server_b)
        .await;
    let mut opts = options();
    opts.batches_per_lease = 10;
    let delivery = delivery_to(
        &spool,
        vec![mixpanel(&server_a, "a"), mixpanel(&server_b, "b")],
        opts,
    );
    append(&spool, &[event("only-a-1", Some("cust-1"), "ag-a")], None).await;
    append(
        &spool,
        &[
            event("mixed-a", Some("cust-1"), "ag-a"),
            event("mixed-b", Some("cust-2"), "ag-b"),
        ],
        None,
    )
    .await;
    append(&spool, &[event("only-a-2", Some("cust-1"), "ag-a")], None).await;
    assert_eq!(
        delivery.deliver_next().await.unwrap(),
        Some(LeaseResult {
            settled: 2,
            released: 1
        })
    );
    let stats = spool.stats().await.unwrap();
    assert_eq!(stats.n_batches, 1, "the batch with an event for b waits");
}

#[tokio::test]
async fn a_paused_project_is_probed_once_per_interval_not_once_per_batch() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": "Invalid credentials"})),
        )
        .mount(&server)
        .await;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], options());
    append_one_each(&spool, "p", 4).await;
    for _ in 0..4 {
        assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    }
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "one refused request, then the paused project waits"
    );
    assert_eq!(delivery.status().projects()[0].state, "paused");
    assert_eq!(spool.stats().await.unwrap().n_batches, 4, "nothing is lost");
}

/// Panics the first time it routes, then routes everything to project 0.
struct PanicsOnce(std::sync::atomic::AtomicBool);

impl Router for PanicsOnce {
    fn route(&self, _: Option<&str>, _: Option<&str>) -> usize {
        assert!(
            self.0.swap(true, Ordering::SeqCst),
            "a bug in routing (the test's)"
        );
        0
    }
}

#[tokio::test]
async fn a_delivery_that_panics_once_is_caught_and_its_batch_delivered_alone() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_json(
                json!({"code": 200, "num_records_imported": events_in(request).len()}),
            )
        })
        .mount(&server)
        .await;
    let mut opts = options();
    // The panicking worker's lease ends quickly, so the batch comes back.
    opts.lease = Duration::from_millis(200);
    opts.idle_poll = Duration::from_millis(20);
    let delivery = Arc::new(Delivery::new(
        Arc::clone(&spool),
        PanicsOnce(std::sync::atomic::AtomicBool::new(false)),
        vec![mixpanel(&server, "a")],
        opts,
        Arc::new(Metrics::new()),
    ));
    append(&spool, &[event("p-1", Some("cust-1"), "ag")], None).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(Arc::clone(&delivery).run(stopped));
    let status = delivery.status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status.delivered.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status.delivery_panics.load(Ordering::Relaxed), 1);
    assert_eq!(
        status.worker_restarts(),
        0,
        "the panic was caught in delivery"
    );
    assert_eq!(status.dead_lettered.load(Ordering::Relaxed), 0);
    let _ = stop.send(true);
    running.await.unwrap();
}

#[tokio::test]
async fn only_the_requests_that_failed_expire_the_ones_answered_before_are_delivered() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    // The first request goes through; every later one fails.
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_json(
                json!({"code": 200, "num_records_imported": events_in(request).len()}),
            )
        })
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let mut opts = options();
    opts.max_retry_delay = Duration::ZERO;
    opts.max_attempts = 1;
    opts.batch_limits = mixpanel_client::BatchLimits {
        max_events: 1,
        ..mixpanel_client::BatchLimits::default()
    };
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], opts);
    append(
        &spool,
        &[
            event("two-1", Some("cust-1"), "ag"),
            event("two-2", Some("cust-2"), "ag"),
        ],
        None,
    )
    .await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    let status = delivery.status();
    assert_eq!(
        status.delivered.load(Ordering::Relaxed),
        1,
        "the answered one"
    );
    assert_eq!(
        status.dead_lettered.load(Ordering::Relaxed),
        1,
        "the failed one"
    );
}

#[tokio::test]
async fn a_batch_over_a_mebibyte_is_parsed_event_by_event_with_the_same_outcomes() {
    let dir = TestDir::new();
    let spool =
        Arc::new(SqliteSpool::open(SqliteSpoolOptions::new(dir.0.join("spool"), 1 << 30)).unwrap());
    let (project, file_path) = dry_run_project(&dir);
    let delivery = delivery_to(&spool, vec![project], options());
    let padding = "x".repeat(4000);
    let mut events: Vec<Value> = (0..300)
        .map(|idx| {
            let mut event = event(&format!("big-{idx}"), Some("cust-1"), "ag");
            event["properties"]["url"] = json!(padding);
            event
        })
        .collect();
    events[7] = json!({"id": "no-type"});
    events[8] = event("no-user", None, "ag");
    let body = json!({ "events": events }).to_string();
    assert!(body.len() > super::PARSE_WHOLE_MAX_BYTES);
    append(&spool, &events, None).await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));

    let written = std::fs::read_to_string(&file_path).unwrap();
    assert_eq!(written.lines().count(), 298);
    let dead = spool
        .dead_letter_store()
        .unwrap()
        .list(&DeadLetterFilter::default(), 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].letter.reason, "missing_event_type");
    let status = delivery.status();
    assert_eq!(status.delivered.load(Ordering::Relaxed), 298);
    assert_eq!(
        status.skipped[currents_mixpanel::SkipReason::NoExternalUserId as usize]
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn once_a_probe_is_accepted_the_next_batches_go_out_without_waiting_again() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": "Invalid credentials"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(accepting)
        .mount(&server)
        .await;
    let mut opts = options();
    // The interval is over at once: the next delivery is the probe.
    opts.pause_retry = Duration::ZERO;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], opts);
    append_one_each(&spool, "r", 3).await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    assert_eq!(delivery.status().projects()[0].state, "paused");
    // The probe is accepted...
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    // ...so the batches after it go out at once, not after another wait
    // (the one other batches get while a probe is out).
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        4,
        "the refusal, the probe, and one request per batch after it"
    );
    assert_eq!(delivery.status().delivered.load(Ordering::Relaxed), 3);
    assert_eq!(delivery.status().projects()[0].state, "delivering");
    assert_eq!(spool.stats().await.unwrap().n_batches, 0);
}

#[tokio::test]
async fn a_paused_project_gets_one_probe_when_its_interval_ends_however_many_batches_are_due() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": "Invalid credentials"}))
                .set_delay(Duration::from_millis(100)),
        )
        .mount(&server)
        .await;
    let mut opts = options();
    // The interval is over at once: whoever delivers next probes.
    opts.pause_retry = Duration::ZERO;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], opts);
    append_one_each(&spool, "q", 4).await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    // Four workers' leases, all due (the released batch had no delay).
    let mut groups = Vec::new();
    for _ in 0..4 {
        let group = spool.lease(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(group.len(), 1);
        groups.push(group);
    }
    let mut groups = groups.into_iter();
    // The first worker probes: polled once, its request is out (no answer
    // yet: the mock answers after a delay, and the future is not polled
    // again until the others are done).
    let probe_group = groups.next().unwrap();
    let mut probe = std::pin::pin!(delivery.deliver(&probe_group));
    let first_poll =
        std::future::poll_fn(|cx| std::task::Poll::Ready(probe.as_mut().poll(cx).is_pending()))
            .await;
    assert!(first_poll, "the probe waits for Mixpanel's answer");
    // The others find the probe out and wait without a request.
    for group in groups {
        assert_eq!(delivery.deliver(&group).await.unwrap(), RELEASED);
    }
    assert_eq!(probe.await.unwrap(), RELEASED, "the probe is refused too");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "the first refusal and one probe, not a request per due batch"
    );
    assert_eq!(delivery.status().projects()[0].state, "paused");
    assert_eq!(spool.stats().await.unwrap().n_batches, 4, "nothing is lost");
}

#[tokio::test]
async fn dead_letters_and_skipped_events_are_counted_per_reason_in_the_metrics_once_settled() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    // The first request fails through its retry: the batch is released, and
    // nothing of it may be counted until it is settled.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(refusing("bad-1"))
        .mount(&server)
        .await;
    let mut opts = options();
    opts.max_retry_delay = Duration::ZERO;
    opts.batches_per_lease = 10;
    let (delivery, metrics) = delivery_with_metrics(
        &spool,
        vec![mixpanel(&server, "a"), mixpanel(&server, "b")],
        opts,
    );
    let mut orphan = event("orphan-1", Some("cust-3"), "ag");
    orphan["event_type"] = json!("users.UserOrphan");
    append(
        &spool,
        &[
            event("ok-1", Some("cust-1"), "ag"),
            event("bad-1", Some("cust-2"), "ag"),
            json!({"id": "no-type-1"}),
            json!({"id": "no-type-2"}),
            json!("junk"),
            event("anonymous-1", None, "ag"),
            event("anonymous-2", None, "ag"),
            orphan,
        ],
        None,
    )
    .await;
    // Nothing for Mixpanel in this one: settled on the first delivery.
    append(
        &spool,
        &[json!({"id": "no-type-3"}), event("anonymous-3", None, "ag")],
        None,
    )
    .await;
    assert_eq!(
        delivery.deliver_next().await.unwrap(),
        Some(LeaseResult {
            settled: 1,
            released: 1
        })
    );
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    assert_eq!(spool.stats().await.unwrap().n_batches, 0);

    let dead = "bridge_delivery_dead_lettered_events_total";
    let discarded = "bridge_discarded_events_total";
    for (name_and_labels, expected) in [
        (format!("{dead}{{reason=\"missing_event_type\"}}"), 3),
        (format!("{dead}{{reason=\"not_an_object\"}}"), 1),
        (format!("{dead}{{reason=\"{REFUSED_BY_MIXPANEL}\"}}"), 1),
        (format!("{dead}{{reason=\"{DELIVERY_FAILED}\"}}"), 0),
        (
            format!("{discarded}{{reason=\"no_external_user_id\",intentional=\"true\"}}"),
            3,
        ),
        (
            format!("{discarded}{{reason=\"not_exported_type\",intentional=\"true\"}}"),
            1,
        ),
        (
            format!("{discarded}{{reason=\"filtered\",intentional=\"true\"}}"),
            0,
        ),
        (
            "bridge_delivery_delivered_events_total{project=\"a\"}".to_owned(),
            1,
        ),
        ("bridge_delivery_released_batches_total".to_owned(), 1),
    ] {
        assert_eq!(
            sample(&metrics, &name_and_labels),
            expected,
            "{name_and_labels} in:\n{}",
            metrics.render()
        );
    }
    // Series only for what happened: none at 0 for a reason that never
    // occurred, nor for project b, which got no event.
    let rendered = metrics.render();
    assert!(!rendered.contains("reason=\"filtered\""), "{rendered}");
    assert!(!rendered.contains("project=\"b\""), "{rendered}");
    let status = delivery.status();
    assert_eq!(status.dead_lettered.load(Ordering::Relaxed), 5);
}

/// Panics on every event of a batch sent with `?workspace=poison`.
struct PanicsOnPoison;

impl Router for PanicsOnPoison {
    fn route(&self, workspace: Option<&str>, _: Option<&str>) -> usize {
        assert_ne!(workspace, Some("poison"), "a bug in routing (the test's)");
        0
    }
}

#[tokio::test]
async fn a_batch_that_always_panics_is_set_aside_and_its_group_delivered() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(|request: &Request| {
            events_in(request)
                .iter()
                .any(|event| event["properties"]["$insert_id"] == "later")
        })
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_json(
                json!({"code": 200, "num_records_imported": events_in(request).len()}),
            )
        })
        .mount(&server)
        .await;
    let mut opts = options();
    opts.batches_per_lease = 4;
    let metrics = Arc::new(Metrics::new());
    let delivery = Delivery::new(
        Arc::clone(&spool),
        PanicsOnPoison,
        vec![mixpanel(&server, "a")],
        opts,
        Arc::clone(&metrics),
    );
    append(&spool, &[event("ok-1", Some("cust-1"), "ag")], None).await;
    append(
        &spool,
        &[event("bad-1", Some("cust-2"), "ag")],
        Some("poison"),
    )
    .await;
    append(&spool, &[event("ok-2", Some("cust-3"), "ag")], None).await;
    append(&spool, &[event("later", Some("cust-4"), "ag")], None).await;
    let result = delivery.deliver_next().await.unwrap().unwrap();
    // Delivered alone, each batch still settles or waits on its own: the
    // fourth one's Mixpanel request fails, and it is released.
    assert_eq!(result.settled, 3);
    assert_eq!(result.released, 1);

    let status = delivery.status();
    assert_eq!(status.delivered.load(Ordering::Relaxed), 2);
    // The group's panic, then the poison batch's own.
    assert_eq!(status.delivery_panics.load(Ordering::Relaxed), 2);
    let dead = spool
        .dead_letter_store()
        .unwrap()
        .list(&DeadLetterFilter::default(), 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].letter.reason, super::DELIVERY_PANICKED);
    assert_eq!(dead[0].letter.workspace.as_deref(), Some("poison"));
    let kept: Value = serde_json::from_slice(&dead[0].letter.event).unwrap();
    assert_eq!(kept["events"][0]["id"], "bad-1", "the whole batch is kept");
    assert!(
        metrics
            .render()
            .contains("bridge_delivery_dead_lettered_events_total{reason=\"delivery_panicked\"} 1"),
        "{}",
        metrics.render()
    );
    assert_eq!(
        spool.stats().await.unwrap().n_batches,
        1,
        "the released one"
    );
}

/// A spool that runs `before_lease` before each lease: a place for a test
/// to panic outside the delivery that `deliver_next` guards.
struct LeaseHook<F> {
    inner: Arc<SqliteSpool>,
    before_lease: F,
}

impl<F: Fn() + Send + Sync + 'static> Spool for LeaseHook<F> {
    async fn append(&self, batch: NewBatch) -> Result<crate::spool::BatchId, SpoolError> {
        self.inner.append(batch).await
    }
    async fn lease_within(
        &self,
        limits: crate::spool::LeaseLimits,
        lease: Duration,
    ) -> Result<Vec<LeasedBatch>, SpoolError> {
        (self.before_lease)();
        self.inner.lease_within(limits, lease).await
    }
    async fn settle(
        &self,
        id: crate::spool::BatchId,
        dead_letters: Vec<DeadLetter>,
    ) -> Result<(), SpoolError> {
        self.inner.settle(id, dead_letters).await
    }
    async fn release(
        &self,
        id: crate::spool::BatchId,
        retry_in: Duration,
    ) -> Result<(), SpoolError> {
        self.inner.release(id, retry_in).await
    }
    async fn stats(&self) -> Result<crate::spool::SpoolStats, SpoolError> {
        self.inner.stats().await
    }
}

#[tokio::test]
async fn a_worker_that_panics_outside_a_delivery_is_started_again() {
    let dir = TestDir::new();
    let inner = spool_in(&dir);
    // The first lease panics, then the spool behaves.
    let panicked = std::sync::atomic::AtomicBool::new(false);
    let spool = Arc::new(LeaseHook {
        inner: Arc::clone(&inner),
        before_lease: move || {
            assert!(
                panicked.swap(true, Ordering::SeqCst),
                "a bug in leasing (the test's)"
            );
        },
    });
    let opts = options();
    let (project, _) = dry_run_project(&dir);
    let delivery = Arc::new(Delivery::new(
        Arc::clone(&spool),
        TwoProjects,
        vec![project],
        opts,
        Arc::new(Metrics::new()),
    ));
    append(&inner, &[event("p-1", Some("cust-1"), "ag")], None).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(Arc::clone(&delivery).run(stopped));
    let status = delivery.status();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while inner.stats().await.unwrap().n_batches > 0 {
        assert!(std::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status.worker_restarts(), 1);
    let _ = stop.send(true);
    running.await.unwrap();
}

#[tokio::test]
async fn a_worker_that_panics_during_shutdown_is_not_started_again() {
    let dir = TestDir::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The first lease asks the workers to stop, then panics: a panic
    // during shutdown.
    let spool = Arc::new(LeaseHook {
        inner: spool_in(&dir),
        before_lease: move || {
            let _ = stop.send(true);
            panic!("a bug in leasing while stopping (the test's)");
        },
    });
    let (project, _) = dry_run_project(&dir);
    let delivery = Arc::new(Delivery::new(
        spool,
        TwoProjects,
        vec![project],
        options(),
        Arc::new(Metrics::new()),
    ));
    tokio::time::timeout(Duration::from_secs(20), Arc::clone(&delivery).run(stopped))
        .await
        .expect("delivery stops");
    assert_eq!(delivery.status().worker_restarts(), 0);
}

/// Routes everything past the last project.
struct OutOfRange;

impl Router for OutOfRange {
    fn route(&self, _: Option<&str>, _: Option<&str>) -> usize {
        7
    }
}

#[tokio::test]
async fn a_route_past_the_last_project_goes_to_the_last_project() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let (last, file_path) = dry_run_project(&dir);
    let first = ProjectTarget {
        name: "first".to_owned(),
        mapper: mapper("tok-first"),
        sink: Sink::DryRun(DryRunFile::open(&dir.0.join("dry-run/first.ndjson")).unwrap()),
    };
    let delivery = Delivery::new(
        Arc::clone(&spool),
        OutOfRange,
        vec![first, last],
        options(),
        Arc::new(Metrics::new()),
    );
    append_one_each(&spool, "far", 1).await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    let written = std::fs::read_to_string(&file_path).unwrap();
    assert_eq!(written.lines().count(), 1);
    assert!(written.contains("far-0"), "{written}");
}

/// Notes, at each event routed, how often another task has run so far.
struct WatchingRouter {
    other_task_runs: Arc<std::sync::atomic::AtomicUsize>,
    seen: std::sync::Mutex<std::collections::BTreeSet<usize>>,
}

impl Router for Arc<WatchingRouter> {
    fn route(&self, _: Option<&str>, _: Option<&str>) -> usize {
        let runs = self.other_task_runs.load(Ordering::Relaxed);
        self.seen.lock().unwrap().insert(runs);
        0
    }
}

#[tokio::test(flavor = "current_thread")]
async fn mapping_a_large_group_lets_other_tasks_run() {
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let (project, _) = dry_run_project(&dir);
    let other_task_runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let router = Arc::new(WatchingRouter {
        other_task_runs: Arc::clone(&other_task_runs),
        seen: std::sync::Mutex::default(),
    });
    let delivery = Delivery::new(
        Arc::clone(&spool),
        Arc::clone(&router),
        vec![project],
        options(),
        Arc::new(Metrics::new()),
    );
    let events: Vec<Value> = (0..1000)
        .map(|idx| event(&format!("y-{idx}"), Some("cust-1"), "ag"))
        .collect();
    append(&spool, &events, None).await;
    let other = tokio::spawn(async move {
        loop {
            other_task_runs.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(SETTLED));
    other.abort();
    // Mapping has no await of its own: the other task runs between two
    // events only when delivery yields, once every 64 events.
    let n_seen = router.seen.lock().unwrap().len();
    assert!(
        n_seen >= 1000 / 64,
        "the other task ran {n_seen} times during mapping"
    );
}

#[test]
fn a_pause_ends_at_its_deadline_with_one_probe_and_the_others_wait_for_it() {
    let pauses = super::Pauses::new(2);
    let now = std::time::Instant::now();
    let minute = Duration::from_secs(60);
    assert_eq!(pauses.wait(0, now), None, "not paused");
    pauses.pause(0, now + minute);
    assert_eq!(pauses.wait(0, now), Some(minute));
    assert_eq!(pauses.wait(1, now), None, "the other project is not paused");
    // At the deadline itself, this caller probes...
    assert_eq!(pauses.wait(0, now + minute), None);
    // ...and the next ones wait for the probe's answer.
    assert_eq!(pauses.wait(0, now + minute), Some(super::PROBE_ANSWER_WAIT));
    pauses.resume(0);
    assert_eq!(pauses.wait(0, now + minute), None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_send_is_logged_with_the_attempt_it_was() {
    let (logs, _guard) = crate::test_logs::Logs::capture();
    let dir = TestDir::new();
    let spool = spool_in(&dir);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let delivery = delivery_to(&spool, vec![mixpanel(&server, "a")], options());
    append_one_each(&spool, "down", 1).await;
    assert_eq!(delivery.deliver_next().await.unwrap(), Some(RELEASED));
    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("Cannot deliver a batch now"))
        .unwrap_or_else(|| panic!("no line for the failed send in:\n{text}"));
    assert!(line.contains("attempts=1"), "{line}");
}
