//! Limiter tests on a paused clock: the rolling window and the concurrency cap.

use futures_util::FutureExt as _;

use super::*;

#[tokio::test(start_paused = true)]
async fn the_61st_query_in_an_hour_waits_until_the_first_leaves_the_window() {
    let limiter = QueryLimiter::new(QueryLimits::default());
    let start = Instant::now();
    for _ in 0..60 {
        drop(limiter.acquire().await);
    }
    assert_eq!(Instant::now(), start, "the first 60 start at once");

    tokio::time::advance(Duration::from_secs(600)).await;
    let waiting = limiter.acquire();
    tokio::pin!(waiting);
    assert!(
        (&mut waiting).now_or_never().is_none(),
        "the 61st must wait"
    );
    drop(waiting.await);
    assert_eq!(Instant::now() - start, Duration::from_secs(3600));
}

#[tokio::test(start_paused = true)]
async fn the_window_rolls_instead_of_resetting() {
    let limiter = QueryLimiter::new(QueryLimits::default());
    let start = Instant::now();
    for _ in 0..30 {
        drop(limiter.acquire().await);
    }
    tokio::time::advance(Duration::from_secs(1800)).await;
    for _ in 0..30 {
        drop(limiter.acquire().await);
    }
    // The first 30 leave the window at 1 h, the next 30 at 1.5 h.
    for _ in 0..30 {
        drop(limiter.acquire().await);
    }
    assert_eq!(Instant::now() - start, Duration::from_secs(3600));
    drop(limiter.acquire().await);
    assert_eq!(Instant::now() - start, Duration::from_secs(5400));
}

#[tokio::test(start_paused = true)]
async fn at_most_max_concurrent_queries_hold_a_permit() {
    let limiter = QueryLimiter::new(QueryLimits::default());
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(limiter.acquire().now_or_never().expect("a free slot"));
    }
    let sixth = limiter.acquire();
    tokio::pin!(sixth);
    assert!((&mut sixth).now_or_never().is_none(), "the sixth must wait");
    held.pop();
    assert!(
        (&mut sixth).now_or_never().is_some(),
        "a released slot goes to the waiting query"
    );
}

#[tokio::test(start_paused = true)]
async fn zero_limits_are_raised_to_one_instead_of_blocking_forever() {
    let limiter = QueryLimiter::new(QueryLimits {
        max_concurrent: 0,
        max_per_window: 0,
        window: Duration::from_secs(10),
    });
    let start = Instant::now();
    drop(limiter.acquire().await);
    drop(limiter.acquire().await);
    assert_eq!(Instant::now() - start, Duration::from_secs(10));
}
