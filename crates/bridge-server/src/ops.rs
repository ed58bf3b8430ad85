//! Operations endpoints: `/healthz` (alive), `/readyz` (able to accept),
//! `/status` (JSON: delivery state per project, backlog, counters, the
//! archive's counts when it is on, each cohort of the cohort import),
//! `/metrics` (Prometheus, see [`crate::metrics`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::delivery::DeliveryStatus;
use crate::ingest::IngestState;
use crate::metrics::Metrics;
use crate::spool::Spool;
use currents_mixpanel::SkipReason;

/// What the operations endpoints read.
pub struct OpsState<S> {
    /// The spool, for backlog figures.
    pub spool: Arc<S>,
    /// Ingest, for readiness.
    pub ingest: Arc<IngestState<S>>,
    /// Delivery counters and project states.
    pub delivery: Arc<DeliveryStatus>,
    /// The Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The cohort import, when it is on.
    pub cohorts: Option<Arc<crate::cohorts::CohortImport>>,
    /// The listener's connection counts.
    pub listener: Arc<crate::listener::ListenerStats>,
}

/// `/healthz`, `/readyz` and `/status`.
pub fn routes<S: Spool>(state: Arc<OpsState<S>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S>))
        .route("/status", get(status::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(state)
}

async fn readyz<S: Spool>(State(state): State<Arc<OpsState<S>>>) -> Response {
    if !state.ingest.is_accepting() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match state.spool.stats().await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("spool: {error}")).into_response(),
    }
}

async fn metrics<S: Spool>(State(state): State<Arc<OpsState<S>>>) -> Response {
    let spool_stats = state.spool.stats().await;
    // The same judgement as `/readyz`.
    state.metrics.ready.set(i64::from(
        state.ingest.is_accepting() && spool_stats.is_ok(),
    ));
    if let Ok(stats) = spool_stats {
        let metrics = &state.metrics;
        metrics
            .spool_bytes
            .set(i64::try_from(stats.n_bytes).unwrap_or(i64::MAX));
        metrics
            .spool_batches
            .set(i64::try_from(stats.n_batches).unwrap_or(i64::MAX));
        metrics
            .dead_letters
            .set(i64::try_from(stats.n_dead_letters).unwrap_or(i64::MAX));
        metrics
            .spool_quarantined_batches
            .set(i64::try_from(stats.n_quarantined).unwrap_or(i64::MAX));
        let age_ms = stats.oldest_received_at_ms.map_or(0, |oldest| {
            crate::clock::now_ms().saturating_sub(oldest).max(0)
        });
        metrics.spool_oldest_age_seconds.set(age_ms / 1000);
    }
    if let Some(Ok(consumer)) = state.spool.consumer_stats().await {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let metrics = &state.metrics;
        metrics
            .spool_consumer_pending_batches
            .set(gauge(consumer.n_pending));
        metrics
            .spool_consumer_ack_pending_batches
            .set(gauge(consumer.n_ack_pending));
        metrics
            .spool_consumer_redelivered_batches
            .set(gauge(consumer.n_redelivered));
    }
    state.metrics.refresh_listener(&state.listener);
    state
        .metrics
        .refresh_delivery(&state.delivery.projects(), state.delivery.worker_restarts());
    if let Some(cohorts) = &state.cohorts
        && let Ok(statuses) = cohort_import::store::MembershipStore::cohorts(&*cohorts.store).await
    {
        state
            .metrics
            .refresh_cohorts(&cohorts.stats, &statuses, crate::clock::now_ms());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn status<S: Spool>(State(state): State<Arc<OpsState<S>>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let spool = match state.spool.stats().await {
        Ok(stats) => json!({
            "batches": stats.n_batches,
            "bytes": stats.n_bytes,
            "oldest_received_at_ms": stats.oldest_received_at_ms,
            "dead_letters": stats.n_dead_letters,
        }),
        Err(error) => json!({ "error": error.to_string() }),
    };
    let consumer = match state.spool.consumer_stats().await {
        None => serde_json::Value::Null,
        Some(Ok(consumer)) => json!({
            "pending": consumer.n_pending,
            "ack_pending": consumer.n_ack_pending,
            "redelivered": consumer.n_redelivered,
            "waiting": consumer.n_waiting,
        }),
        Some(Err(error)) => json!({ "error": error.to_string() }),
    };
    let delivery = &state.delivery;
    let skipped: serde_json::Map<String, serde_json::Value> = SkipReason::ALL
        .iter()
        .zip(&delivery.skipped)
        .map(|(reason, count)| (reason.as_str().to_owned(), json!(count.load(Relaxed))))
        .collect();
    let cohorts = match &state.cohorts {
        None => serde_json::Value::Null,
        Some(cohorts) => {
            match cohort_import::store::MembershipStore::cohorts(&*cohorts.store).await {
                Ok(statuses) => serde_json::Value::Array(
                    statuses.iter().map(crate::cohorts::status_json).collect(),
                ),
                Err(error) => json!({ "error": error.to_string() }),
            }
        }
    };
    let archive = match &delivery.archive {
        None => serde_json::Value::Null,
        Some(archive) => json!({
            "url": archive.url,
            "batches_written": archive.batches_written.load(Relaxed),
            "batches_failed": archive.batches_failed.load(Relaxed),
            "body_bytes": archive.body_bytes.load(Relaxed),
        }),
    };
    Json(json!({
        "accepting": state.ingest.is_accepting(),
        "archive": archive,
        "cohorts": cohorts,
        "spool": spool,
        "consumer": consumer,
        "delivered_events": delivery.delivered.load(Relaxed),
        "skipped_events": skipped,
        "dead_lettered_events": delivery.dead_lettered.load(Relaxed),
        "batches_settled": delivery.batches_settled.load(Relaxed),
        "batches_released": delivery.batches_released.load(Relaxed),
        "delivery_worker_restarts": delivery.worker_restarts.load(Relaxed),
        "delivery_panics": delivery.delivery_panics.load(Relaxed),
        "projects": delivery.projects(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    //! The backlog figures of `/status` and `/metrics`, over a real spool.

    use std::time::{Duration, Instant};

    use axum::body::Body;
    use axum::http::Request;
    use bytes::Bytes;
    use tower::ServiceExt as _;

    use super::*;
    use crate::clock::now_ms;
    use crate::delivery::{Delivery, DeliveryOptions, Router as DeliveryRouter};
    use crate::ingest::{IngestOptions, auth::BearerTokens};
    use crate::spool::NewBatch;
    use crate::spool::sqlite::{SqliteSpool, SqliteSpoolOptions};

    /// Every event to the only project (the tests configure none).
    struct OneProject;

    impl DeliveryRouter for OneProject {
        fn route(&self, _: Option<&str>, _: Option<&str>) -> usize {
            0
        }
    }

    /// The operations state over a spool in `dir`; the delivery engine is
    /// built (never run) only for the status it shares.
    fn ops_state(dir: &std::path::Path) -> Arc<OpsState<SqliteSpool>> {
        let spool =
            Arc::new(SqliteSpool::open(SqliteSpoolOptions::new(dir.to_owned(), 1 << 30)).unwrap());
        let metrics = Arc::new(Metrics::new());
        let ingest = Arc::new(IngestState::new(
            Arc::clone(&spool),
            IngestOptions {
                tokens: BearerTokens::new([]),
                max_body_bytes: 1 << 20,
                request_timeout: Duration::from_secs(10),
                max_events_per_batch: 1000,
                body_budget: crate::body_budget::BodyBudget::new(
                    1 << 20,
                    metrics.ingest_body_bytes_reserved.clone(),
                ),
            },
            Arc::clone(&metrics),
        ));
        let delivery = Delivery::new(
            Arc::clone(&spool),
            OneProject,
            Vec::new(),
            DeliveryOptions {
                workers: 1,
                batches_per_lease: 1,
                lease: Duration::from_secs(60),
                linger: Duration::ZERO,
                batch_limits: mixpanel_client::BatchLimits::default(),
                pause_retry: Duration::from_secs(60),
                max_retry_delay: Duration::from_secs(600),
                idle_poll: Duration::from_millis(50),
                max_attempts: 10,
                max_age: Duration::from_secs(3600),
                archive: None,
            },
            Arc::clone(&metrics),
        );
        Arc::new(OpsState {
            spool,
            ingest,
            delivery: delivery.status(),
            metrics,
            cohorts: None,
            listener: Arc::new(crate::listener::ListenerStats::default()),
        })
    }

    async fn get_text(state: &Arc<OpsState<SqliteSpool>>, path: &str) -> String {
        let response = routes(Arc::clone(state))
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_backlog_age_is_the_oldest_batchs() {
        let dir = std::env::temp_dir().join(format!("bridge-ops-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = ops_state(&dir);
        let started = Instant::now();
        let hour_ago_ms = now_ms() - 3_600_000;
        for received_at_ms in [hour_ago_ms, hour_ago_ms + 3_000_000] {
            state
                .spool
                .append(NewBatch {
                    body: Bytes::from_static(br#"{"events":[{"id":"e"}]}"#),
                    workspace: None,
                    received_at_ms,
                })
                .await
                .unwrap();
        }

        let status: serde_json::Value =
            serde_json::from_str(&get_text(&state, "/status").await).unwrap();
        assert_eq!(status["spool"]["batches"], 2, "{status}");
        assert_eq!(
            status["spool"]["oldest_received_at_ms"], hour_ago_ms,
            "{status}"
        );

        let metrics = get_text(&state, "/metrics").await;
        let age_secs: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix("bridge_spool_oldest_age_seconds "))
            .unwrap_or_else(|| panic!("no backlog age in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        // An hour, plus however long this test took to get here.
        let slack_secs = started.elapsed().as_secs() + 1;
        assert!(
            (3600..=3600 + slack_secs).contains(&age_secs),
            "age {age_secs} s, expected an hour (+{slack_secs} s)"
        );
        assert!(metrics.contains("bridge_spool_batches 2\n"), "{metrics}");
        assert!(
            metrics.contains("bridge_spool_quarantined_batches 0\n"),
            "{metrics}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn ready_in_the_metrics_follows_readyz() {
        let dir = std::env::temp_dir().join(format!("bridge-ops-ready-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = ops_state(&dir);
        assert!(
            get_text(&state, "/metrics")
                .await
                .contains("bridge_ready 1\n")
        );

        state.ingest.stop_accepting();
        let response = routes(Arc::clone(&state))
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let metrics = get_text(&state, "/metrics").await;
        assert!(metrics.contains("bridge_ready 0\n"), "{metrics}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
