//! Limiter tests on a paused clock: the rolling window with its margin,
//! fairness under concurrency, and the pauses Braze's headers ask for.

use std::sync::Arc;

use futures_util::FutureExt as _;
use http::HeaderValue;

use super::*;

fn limiter(max_requests: u32, window_secs: u64) -> RateLimiter {
    RateLimiter::new(RateLimit {
        max_requests,
        window: Duration::from_secs(window_secs),
    })
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for &(name, value) in pairs {
        headers.insert(name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

#[tokio::test(start_paused = true)]
async fn the_21st_request_at_10_per_second_starts_after_two_windows_and_margins() {
    let limiter = limiter(10, 1);
    let start = Instant::now();
    let mut starts = Vec::new();
    for _ in 0..21 {
        limiter.acquire().await;
        starts.push(Instant::now() - start);
    }
    assert!(starts[..10].iter().all(|at| at.is_zero()), "{starts:?}");
    assert_eq!(starts[10], Duration::from_millis(1100));
    assert_eq!(starts[19], Duration::from_millis(1100));
    assert!(starts[20] >= Duration::from_millis(2200), "{starts:?}");
    assert_eq!(starts[20], Duration::from_millis(2200));
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_never_exceed_the_limit_in_any_window() {
    let limiter = Arc::new(limiter(10, 1));
    let start = Instant::now();
    let tasks: Vec<_> = (0..55)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now() - start
            })
        })
        .collect();
    let mut starts = Vec::new();
    for task in tasks {
        starts.push(task.await.unwrap());
    }
    starts.sort();
    let window = Duration::from_millis(1100);
    for (first, &at) in starts.iter().enumerate() {
        let within = starts[first..]
            .iter()
            .filter(|&&later| later - at < window)
            .count();
        assert!(within <= 10, "{within} starts within {window:?} of {at:?}");
    }
    assert_eq!(*starts.last().unwrap(), Duration::from_millis(5500));
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_every_request_for_the_retry_after() {
    let limiter = limiter(100, 1);
    let start = Instant::now();
    limiter.observe(
        "test",
        StatusCode::TOO_MANY_REQUESTS,
        &headers(&[("X-Ratelimit-Retry-After", "7"), ("Retry-After", "2")]),
    );
    let waiting = limiter.acquire();
    tokio::pin!(waiting);
    assert!(
        (&mut waiting).now_or_never().is_none(),
        "must wait out the pause"
    );
    waiting.await;
    assert_eq!(Instant::now() - start, Duration::from_secs(7));
    limiter.acquire().await;
    assert_eq!(Instant::now() - start, Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_pause_that_comes_while_waiting_for_a_slot_moves_the_request() {
    let limiter = Arc::new(limiter(1, 1));
    let start = Instant::now();
    limiter.acquire().await;
    let waiter = {
        let limiter = Arc::clone(&limiter);
        tokio::spawn(async move {
            limiter.acquire().await;
            Instant::now() - start
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    limiter.pause_until(start + Duration::from_secs(5));
    assert_eq!(waiter.await.unwrap(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn remaining_zero_holds_requests_until_the_reset() {
    let limiter = limiter(100, 1);
    let start = Instant::now();
    limiter.observe(
        "test",
        StatusCode::OK,
        &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "3")]),
    );
    limiter.acquire().await;
    assert_eq!(Instant::now() - start, Duration::from_secs(3));

    // Remaining above zero: the reset is only information.
    limiter.observe(
        "test",
        StatusCode::OK,
        &headers(&[("x-ratelimit-remaining", "12"), ("x-ratelimit-reset", "30")]),
    );
    limiter.acquire().await;
    assert_eq!(Instant::now() - start, Duration::from_secs(3));
}

#[test]
fn reset_is_epoch_seconds_above_1e9_and_pauses_are_capped_at_an_hour() {
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let at = |value: &str| {
        reset_delay(
            &headers(&[("x-ratelimit-reset", value), ("x-ratelimit-remaining", "0")]),
            now,
        )
    };
    assert_eq!(at("1750000012"), Some(Duration::from_secs(12)));
    assert_eq!(
        at("1749999000"),
        Some(Duration::ZERO),
        "a reset in the past"
    );
    assert_eq!(at("1760000000"), Some(MAX_PAUSE));
    assert_eq!(at("45"), Some(Duration::from_secs(45)));
    assert_eq!(at("999999999"), Some(MAX_PAUSE));
    assert_eq!(at("soon"), None);

    assert_eq!(
        retry_after(&headers(&[("retry-after", "86400")])),
        Some(MAX_PAUSE)
    );
    assert_eq!(
        retry_after(&headers(&[(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT"
        )])),
        None
    );
    assert_eq!(
        retry_after(&headers(&[("X-RATELIMIT-RETRY-AFTER", "1")])),
        Some(Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn a_zero_limit_is_raised_to_one_instead_of_blocking_forever() {
    let limiter = limiter(0, 2);
    let start = Instant::now();
    limiter.acquire().await;
    limiter.acquire().await;
    assert_eq!(Instant::now() - start, Duration::from_millis(2100));
}
