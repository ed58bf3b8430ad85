//! Retry policy unit tests: backoff bounds and jitter, what is retried for
//! idempotent and non-idempotent requests, the shared budget, `Retry-After`,
//! and the give-up log. The policy is driven by hand, one call per attempt,
//! as tower's `Retry` drives it; delays are read from the sleep's deadline
//! under paused time, so they are exact whatever the machine's speed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use tokio::time::Instant;

use super::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn request(retry_when_unsure: bool) -> HttpRequest {
    HttpRequest {
        endpoint: "engage",
        method: Method::POST,
        url: "http://127.0.0.1:9/engage".to_owned(),
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"[]"),
        retry_when_unsure,
    }
}

fn answer(status: u16) -> Result<HttpResponse, BoxError> {
    Ok(HttpResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::new(),
        attempts: 1,
    })
}

fn answer_with_retry_after(
    status: u16,
    retry_after: &'static str,
) -> Result<HttpResponse, BoxError> {
    let mut result = answer(status);
    if let Ok(response) = &mut result {
        response.headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_static(retry_after),
        );
    }
    result
}

fn timed_out() -> Result<HttpResponse, BoxError> {
    Err(Box::new(tower::timeout::error::Elapsed::new()))
}

/// A real connection refusal from reqwest: a port bound, then freed.
async fn refused() -> Result<HttpResponse, BoxError> {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = reqwest::Client::new()
        .post(format!("http://{address}/engage"))
        .send()
        .await
        .expect_err("nothing listens there");
    assert!(error.is_connect(), "{error:?}");
    Err(Box::new(error))
}

/// Params whose budget never limits and whose backoff is at most 1 ms.
fn params(max_retries: u32) -> RetryParams {
    RetryParams {
        initial_delay: ms(1),
        max_delay: Duration::from_secs(10),
        max_retries,
        min_retries_per_sec: 1000,
        retry_ratio: 1.0,
    }
}

/// One attempt's verdict: the delay before the next attempt, or `None`.
/// Needs paused time for the delay to be exact.
fn attempt(
    policy: &mut RetryPolicy,
    request: &mut HttpRequest,
    result: &mut Result<HttpResponse, BoxError>,
) -> Option<Duration> {
    let now = Instant::now();
    policy
        .retry(request, result)
        .map(|sleep| sleep.deadline() - now)
}

fn exhausted(result: &Result<HttpResponse, BoxError>) -> &Exhausted {
    match result {
        Err(error) => error.downcast_ref::<Exhausted>().expect("an Exhausted"),
        Ok(response) => panic!("expected an error, got {response:?}"),
    }
}

fn attempts_of(result: &Result<HttpResponse, BoxError>) -> u32 {
    result.as_ref().expect("a response").attempts
}

// Backoff.

#[test]
fn backoff_stays_under_its_ceiling_reaches_it_and_jitters() {
    let params = RetryParams {
        initial_delay: ms(100),
        max_delay: ms(1000),
        ..RetryParams::default()
    };
    // min(max_delay, initial * 2^(retry - 1)); retry 40 saturates 2^39.
    let ceilings = [
        (1, 100),
        (2, 200),
        (3, 400),
        (4, 800),
        (5, 1000),
        (6, 1000),
        (40, 1000),
    ];
    for (retry, ceiling) in ceilings {
        let ceiling = ms(ceiling);
        let draws: Vec<Duration> = (0..2000).map(|_| params.backoff(retry)).collect();
        let highest = *draws.iter().max().unwrap();
        let lowest = *draws.iter().min().unwrap();
        assert!(
            highest <= ceiling,
            "retry {retry}: {highest:?} > {ceiling:?}"
        );
        // 2000 uniform draws: missing the top or bottom tenth has odds
        // below 1e-90.
        assert!(
            highest >= ceiling * 9 / 10,
            "retry {retry}: at most {highest:?}"
        );
        assert!(lowest <= ceiling / 10, "retry {retry}: at least {lowest:?}");
        let distinct: BTreeSet<Duration> = draws.into_iter().collect();
        assert!(distinct.len() > 50, "retry {retry}: jitter: {distinct:?}");
    }
}

#[test]
fn default_backoff_is_mixpanels_2_s_doubling_to_60_s() {
    let params = RetryParams::default();
    assert_eq!(params.initial_delay, Duration::from_secs(2));
    assert_eq!(params.max_delay, Duration::from_secs(60));
    for (retry, ceiling) in [(1, 2), (2, 4), (5, 32), (6, 60), (8, 60)] {
        let ceiling = Duration::from_secs(ceiling);
        let draws: Vec<Duration> = (0..500).map(|_| params.backoff(retry)).collect();
        let highest = *draws.iter().max().unwrap();
        assert!(highest <= ceiling, "retry {retry}: {highest:?}");
        assert!(highest >= ceiling * 9 / 10, "retry {retry}: {highest:?}");
    }
}

#[test]
fn test_params_are_fast_and_never_limited_by_the_budget() {
    let params = RetryParams::for_test();
    assert!(params.max_delay <= ms(100), "{params:?}");
    assert!(params.initial_delay <= params.max_delay, "{params:?}");
    assert!(params.max_retries >= 1, "{params:?}");
    assert!(params.min_retries_per_sec >= 100, "{params:?}");
}

// What is retried.

#[test]
fn retryable_statuses_are_429_and_5xx() {
    for status in [429, 500, 502, 503, 504, 599] {
        let status = StatusCode::from_u16(status).unwrap();
        assert!(is_retryable_status(status), "{status}");
    }
    for status in [200, 204, 400, 401, 403, 404, 408, 413, 428, 430, 499] {
        let status = StatusCode::from_u16(status).unwrap();
        assert!(!is_retryable_status(status), "{status}");
    }
}

#[test]
fn retry_after_is_whole_seconds_capped_at_an_hour() {
    let parse = |value: Option<&'static str>| {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static(value));
        }
        retry_after(&HttpResponse {
            status: StatusCode::TOO_MANY_REQUESTS,
            headers,
            body: Bytes::new(),
            attempts: 1,
        })
    };
    let secs = |seconds| Some(Duration::from_secs(seconds));
    assert_eq!(parse(Some("0")), secs(0));
    assert_eq!(parse(Some("7")), secs(7));
    assert_eq!(parse(Some(" 12\t")), secs(12));
    assert_eq!(parse(Some("3600")), secs(3600));
    assert_eq!(parse(Some("3601")), secs(3600));
    assert_eq!(parse(Some("18446744073709551615")), secs(3600));
    // Not a number of seconds: ignored, the backoff decides.
    assert_eq!(parse(None), None);
    assert_eq!(parse(Some("")), None);
    assert_eq!(parse(Some("soon")), None);
    assert_eq!(parse(Some("1.5")), None);
    assert_eq!(parse(Some("-1")), None);
    assert_eq!(parse(Some("18446744073709551616")), None);
    assert_eq!(parse(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_request_is_retried_after_429_5xx_and_timeouts_only() {
    let policy = RetryPolicy::new(params(3));
    for (name, mut result) in [
        ("429", answer(429)),
        ("500", answer(500)),
        ("503", answer(503)),
        ("timeout", timed_out()),
        ("refused", refused().await),
    ] {
        let mut request = request(true);
        let delay = attempt(&mut policy.clone(), &mut request, &mut result);
        assert!(
            delay.is_some_and(|delay| delay <= ms(1)),
            "{name}: {delay:?}"
        );
    }
    for status in [200, 400, 401, 403, 404, 413] {
        let mut result = answer(status);
        let delay = attempt(&mut policy.clone(), &mut request(true), &mut result);
        assert_eq!(delay, None, "{status}");
        assert_eq!(attempts_of(&result), 1, "{status}");
    }
}

/// `/engage` with `$add` or `$append`: applied twice if sent twice, so it is
/// resent only when Mixpanel cannot have applied it.
#[tokio::test(start_paused = true)]
async fn a_non_idempotent_request_is_retried_only_after_429_or_a_refused_connection() {
    let policy = RetryPolicy::new(params(3));

    for status in [500, 502, 503, 504] {
        let mut result = answer(status);
        let delay = attempt(&mut policy.clone(), &mut request(false), &mut result);
        assert_eq!(delay, None, "{status} may have been applied");
        // The answer itself goes back to the caller, attempts counted.
        assert_eq!(result.as_ref().unwrap().status.as_u16(), status);
        assert_eq!(attempts_of(&result), 1);
    }

    let mut result = timed_out();
    let delay = attempt(&mut policy.clone(), &mut request(false), &mut result);
    assert_eq!(delay, None, "a timed-out request may have been applied");
    let error = exhausted(&result);
    assert_eq!(error.attempts, 1);
    assert_eq!(error.message, "request timed out");

    let mut result = answer(429);
    let delay = attempt(&mut policy.clone(), &mut request(false), &mut result);
    assert!(delay.is_some(), "a 429 was not applied");

    let mut result = refused().await;
    let delay = attempt(&mut policy.clone(), &mut request(false), &mut result);
    assert!(delay.is_some(), "a refused connection sent nothing");
}

// How many times.

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_retries_with_the_attempts_counted() {
    for max_retries in [0, 1, 3] {
        let mut policy = RetryPolicy::new(params(max_retries));
        let mut request = request(true);
        for retry in 1..=max_retries {
            let mut result = answer(503);
            assert!(
                attempt(&mut policy, &mut request, &mut result).is_some(),
                "max {max_retries}: attempt {retry}"
            );
            assert_eq!(attempts_of(&result), retry);
        }
        let mut result = answer(503);
        assert_eq!(attempt(&mut policy, &mut request, &mut result), None);
        assert_eq!(attempts_of(&result), max_retries + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_transport_error_on_the_last_attempt_is_exhausted_with_its_attempts() {
    let mut policy = RetryPolicy::new(params(2));
    let mut request = request(true);
    for _ in 0..2 {
        assert!(attempt(&mut policy, &mut request, &mut timed_out()).is_some());
    }
    let mut result = timed_out();
    assert_eq!(attempt(&mut policy, &mut request, &mut result), None);
    let error = exhausted(&result);
    assert_eq!(error.attempts, 3);
    assert_eq!(error.message, "request timed out");
}

/// The budget (no per-second reserve, one retry per request seen): every
/// request's first attempt deposits, every retry withdraws, and clones
/// share it, so during an outage retries stop long before `max_retries`.
#[tokio::test(start_paused = true)]
async fn the_shared_budget_stops_retries_before_max_retries() {
    let policy = RetryPolicy::new(RetryParams {
        min_retries_per_sec: 0,
        retry_ratio: 1.0,
        ..params(8)
    });

    // A lone failing request: its own deposit pays for one retry.
    let mut lone = policy.clone();
    let mut request = request(true);
    assert!(attempt(&mut lone, &mut request, &mut answer(503)).is_some());
    let mut result = timed_out();
    assert_eq!(attempt(&mut lone, &mut request, &mut result), None);
    assert_eq!(
        exhausted(&result).attempts,
        2,
        "out of budget, not of attempts"
    );

    // Two requests that succeed at once pay for two more retries of a third.
    for _ in 0..2 {
        let mut result = answer(200);
        assert_eq!(
            attempt(&mut policy.clone(), &mut request, &mut result),
            None
        );
    }
    let mut third = policy.clone();
    for retry in 1..=3 {
        assert!(
            attempt(&mut third, &mut request, &mut answer(503)).is_some(),
            "retry {retry}"
        );
    }
    let mut result = answer(503);
    assert_eq!(attempt(&mut third, &mut request, &mut result), None);
    assert_eq!(attempts_of(&result), 4);
}

/// With no deposits at all, `min_retries_per_sec` alone allows that many
/// retries per second over the budget's 10 s window.
#[tokio::test(start_paused = true)]
async fn the_budget_reserve_is_min_retries_per_sec_over_ten_seconds() {
    let policy = RetryPolicy::new(RetryParams {
        min_retries_per_sec: 2,
        retry_ratio: 0.0,
        ..params(100)
    });
    let mut request = request(true);
    let mut retries = 0;
    let mut one = policy.clone();
    while attempt(&mut one, &mut request, &mut answer(503)).is_some() {
        retries += 1;
    }
    assert_eq!(retries, 20);
    // Shared: another request finds the budget spent.
    assert_eq!(
        attempt(&mut policy.clone(), &mut request, &mut answer(503)),
        None
    );
}

// How long.

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_max_delay() {
    let policy = RetryPolicy::new(params(3));
    let mut request = request(true);
    let delay = |result: &mut Result<HttpResponse, BoxError>, request: &mut HttpRequest| {
        attempt(&mut policy.clone(), request, result).expect("retried")
    };
    // The backoff is at most 1 ms here: a longer wait is Retry-After's.
    assert_eq!(
        delay(&mut answer_with_retry_after(429, "3"), &mut request),
        Duration::from_secs(3)
    );
    assert_eq!(
        delay(&mut answer_with_retry_after(503, "7"), &mut request),
        Duration::from_secs(7)
    );
    // Capped at max_delay (10 s); the error's retry_after tells the caller.
    assert_eq!(
        delay(&mut answer_with_retry_after(429, "3600"), &mut request),
        Duration::from_secs(10)
    );
    assert_eq!(
        delay(&mut answer_with_retry_after(429, "11"), &mut request),
        Duration::from_secs(10)
    );
    // Without one, or with one Mixpanel does not send, the backoff decides.
    assert!(delay(&mut answer(429), &mut request) <= ms(1));
    assert!(delay(&mut answer_with_retry_after(429, "soon"), &mut request) <= ms(1));
    assert!(delay(&mut answer_with_retry_after(429, "0"), &mut request) <= ms(1));
}

/// The policy counts its retries: retry `n` of a request draws under
/// `initial * 2^(n-1)`, not under the first retry's ceiling every time.
#[tokio::test(start_paused = true)]
async fn each_retry_of_a_request_draws_under_a_doubling_ceiling() {
    let params = RetryParams {
        initial_delay: ms(100),
        max_delay: ms(1000),
        ..params(3)
    };
    let ceilings = [ms(100), ms(200), ms(400)];
    let mut longest = [Duration::ZERO; 3];
    let mut distinct = BTreeSet::new();
    for _ in 0..300 {
        let mut policy = RetryPolicy::new(params.clone());
        let mut request = request(true);
        for (slot, ceiling) in longest.iter_mut().zip(ceilings) {
            let delay = attempt(&mut policy, &mut request, &mut answer(503)).unwrap();
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            *slot = (*slot).max(delay);
            distinct.insert(delay);
        }
    }
    for (longest, ceiling) in longest.into_iter().zip(ceilings) {
        assert!(longest >= ceiling * 9 / 10, "{longest:?} under {ceiling:?}");
    }
    assert!(distinct.len() > 100, "jitter: {}", distinct.len());
}

#[test]
fn a_retried_request_is_sent_again_unchanged() {
    let mut policy = RetryPolicy::new(params(1));
    let mut original = request(false);
    original.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let copy = policy
        .clone_request(&original)
        .expect("requests are cloneable");
    assert_eq!(copy.endpoint, original.endpoint);
    assert_eq!(copy.method, original.method);
    assert_eq!(copy.url, original.url);
    assert_eq!(copy.headers, original.headers);
    assert_eq!(copy.body, original.body);
    assert_eq!(copy.retry_when_unsure, original.retry_when_unsure);
}

// The give-up log.

/// The fields of the events logged while `run` runs, as text.
fn logged(run: impl FnOnce()) -> Vec<BTreeMap<String, String>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = Recorder {
        events: Arc::clone(&events),
    };
    tracing::subscriber::with_default(subscriber, run);
    let events = events.lock().unwrap();
    events.clone()
}

/// A minimal subscriber that keeps every event's fields.
struct Recorder {
    events: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.events.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn giving_up_logs_whether_the_budget_or_the_attempts_ran_out() {
    let give_up = |params: RetryParams, attempts: u32| {
        let mut policy = RetryPolicy::new(params);
        let events = logged(|| {
            for _ in 0..attempts {
                attempt(&mut policy, &mut request(true), &mut answer(503));
            }
        });
        let last = events.last().expect("logged").clone();
        assert_eq!(
            last.get("message").map(String::as_str),
            Some("Giving up on Mixpanel request."),
            "{events:?}"
        );
        last
    };
    let out_of_attempts = give_up(params(1), 2);
    assert_eq!(out_of_attempts["out_of_budget"], "false");
    assert_eq!(out_of_attempts["attempts"], "2");
    let out_of_budget = give_up(
        RetryParams {
            min_retries_per_sec: 0,
            retry_ratio: 1.0,
            ..params(5)
        },
        2,
    );
    assert_eq!(out_of_budget["out_of_budget"], "true");
    assert_eq!(out_of_budget["attempts"], "2");
}
