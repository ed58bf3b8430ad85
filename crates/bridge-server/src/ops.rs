//! Operations endpoints: `/healthz` (alive), `/readyz` (able to accept),
//! `/status` (JSON: delivery state per project, backlog, counters).

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
use crate::spool::Spool;

/// What the operations endpoints read.
pub struct OpsState<S> {
    /// The spool, for backlog figures.
    pub spool: Arc<S>,
    /// Ingest, for readiness.
    pub ingest: Arc<IngestState<S>>,
    /// Delivery counters and project states.
    pub delivery: Arc<DeliveryStatus>,
}

/// `/healthz`, `/readyz` and `/status`.
pub fn routes<S: Spool>(state: Arc<OpsState<S>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S>))
        .route("/status", get(status::<S>))
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
    Json(json!({
        "accepting": state.ingest.is_accepting(),
        "spool": spool,
        "delivered_events": delivery.delivered.load(Relaxed),
        "skipped_events": skipped,
        "dead_lettered_events": delivery.dead_lettered.load(Relaxed),
        "batches_settled": delivery.batches_settled.load(Relaxed),
        "batches_released": delivery.batches_released.load(Relaxed),
        "projects": delivery.projects(),
    }))
    .into_response()
}
