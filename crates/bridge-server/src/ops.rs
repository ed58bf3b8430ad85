//! Operations endpoints: `/healthz` (alive), `/readyz` (able to accept),
//! `/status` (JSON: delivery state per project, backlog, counters, each
//! cohort of the cohort import),
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
use crate::mapping::SkipReason;
use crate::metrics::Metrics;
use crate::spool::Spool;

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
    if let Ok(stats) = state.spool.stats().await {
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
        let age_ms = stats.oldest_received_at_ms.map_or(0, |oldest| {
            crate::ingest::now_ms().saturating_sub(oldest).max(0)
        });
        metrics.spool_oldest_age_seconds.set(age_ms / 1000);
    }
    state.metrics.refresh_listener(&state.listener);
    if let Some(cohorts) = &state.cohorts
        && let Ok(statuses) = cohort_import::store::MembershipStore::cohorts(&*cohorts.store).await
    {
        state
            .metrics
            .refresh_cohorts(&cohorts.stats, &statuses, crate::ingest::now_ms());
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
    Json(json!({
        "accepting": state.ingest.is_accepting(),
        "cohorts": cohorts,
        "spool": spool,
        "delivered_events": delivery.delivered.load(Relaxed),
        "skipped_events": skipped,
        "dead_lettered_events": delivery.dead_lettered.load(Relaxed),
        "batches_settled": delivery.batches_settled.load(Relaxed),
        "batches_released": delivery.batches_released.load(Relaxed),
        "delivery_worker_restarts": delivery.worker_restarts.load(Relaxed),
        "projects": delivery.projects(),
    }))
    .into_response()
}
