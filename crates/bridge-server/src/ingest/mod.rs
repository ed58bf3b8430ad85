//! `POST /currents`: Braze's Custom HTTP connector posts batches here.
//!
//! The answer decides whether Braze keeps or forgets a batch, so each
//! situation has exactly one answer (`docs/specs/ingest.md`):
//!
//! | situation | answer |
//! |---|---|
//! | batch durable in the spool | 200 |
//! | empty body or `{"events":[]}`, valid token | 200, nothing stored |
//! | missing or wrong token | 401 (Braze does not resend: several tokens may be valid at once) |
//! | body not JSON, not `{"events":[...]}`, bad gzip | 400 |
//! | body over the cap, after gzip inflation | 413 (Braze splits the batch) |
//! | more events than `ingest.max_events_per_batch` (1,000) | 413 (Braze splits the batch) |
//! | spool full, storage error, shutting down | 503 with `Retry-After` |
//! | a bug of ours | 500 (the body reveals nothing) |
//!
//! Invalid events inside a valid batch do not change the answer: the batch is
//! stored whole and each invalid event is dead-lettered with its reason when
//! the batch is delivered.
//!
//! Layers, outermost first: sensitive headers → trace → track (metrics and
//! the refusal log, over every answer, timeouts included) → timeout → panic
//! catcher → auth → a share of the body memory budget (`crate::body_budget`)
//! → the compressed-size limit → gzip inflation (an
//! encoding other than gzip: 415 with a JSON error) → the inflated-size limit (`DefaultBodyLimit`, enforced
//! while the handler reads the body) → handler.
//!
//! What the log gets: a 500 is a fault of ours, logged at error level for each
//! request by the trace layer. A 503 is back-pressure and a 401 may be a
//! connector's wrong token: both go to [`refusal_log`], which logs when they
//! start, sums them up every 10 s while they go on, and says when batches are
//! accepted again, instead of a line per request. Other client errors (400,
//! 413) are logged at debug level only.

pub mod auth;
mod refusal_log;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use currents_model::{Batch, BatchError};
use serde::Deserialize;

use crate::body_budget::{BodyBudget, RouteBudget};
use crate::metrics::Metrics;
use crate::spool::{NewBatch, Spool, SpoolError};
use auth::{AuthCheck, BearerTokens};
use refusal_log::{Refusal, RefusalLog};

/// How the endpoint behaves.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Tokens Braze may present; empty accepts any request.
    pub tokens: BearerTokens,
    /// The largest body accepted, counted after gzip inflation.
    pub max_body_bytes: usize,
    /// Time allowed for one request, body and spooling included.
    pub request_timeout: Duration,
    /// The most events one batch may hold (413 beyond, so Braze splits).
    pub max_events_per_batch: usize,
    /// The memory budget for bodies in flight, shared with the other
    /// routes that read bodies.
    pub body_budget: BodyBudget,
}

/// What the handler needs.
pub struct IngestState<S> {
    spool: Arc<S>,
    config: IngestOptions,
    accepting: AtomicBool,
    metrics: Arc<Metrics>,
    refusals: RefusalLog,
}

impl<S: Spool> IngestState<S> {
    /// State over a spool.
    pub fn new(spool: Arc<S>, config: IngestOptions, metrics: Arc<Metrics>) -> IngestState<S> {
        IngestState {
            spool,
            config,
            accepting: AtomicBool::new(true),
            metrics,
            refusals: RefusalLog::new(refusal_log::SUMMARY_INTERVAL),
        }
    }

    /// From now on, answer 503 so that Braze retries elsewhere or later.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Whether batches are being accepted.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }
}

/// The ingest routes, with their layers.
pub fn routes<S: Spool>(state: Arc<IngestState<S>>) -> Router {
    use tower::ServiceBuilder;
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::decompression::RequestDecompressionLayer;
    use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;

    let layers = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(TraceLayer::new_for_http().on_failure(log_server_error))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            track::<S>,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.config.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            IngestError::Internal.into_response()
        }))
        // Credentials before anything looks at the body or its encoding:
        // an unauthenticated request gets 401 whatever it sends.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token::<S>,
        ))
        // Then a share of the memory budget, before the body is read; a
        // request waits for it under the timeout above.
        .layer(axum::middleware::from_fn_with_state(
            RouteBudget {
                budget: state.config.body_budget.clone(),
                max_body_bytes: state.config.max_body_bytes,
            },
            crate::body_budget::hold_while_answering,
        ))
        // The compressed bytes are capped too: a body of empty gzip members
        // inflates to nothing and would otherwise be read until the timeout.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            state.config.max_body_bytes,
        ))
        .layer(RequestDecompressionLayer::new());
    Router::new()
        .route("/currents", post(receive::<S>))
        .route_layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        // Route layers, so that a request to another path is neither
        // counted nor refused as an ingest request.
        .route_layer(layers)
        .with_state(state)
}

/// Why a request was not accepted; each maps to exactly one status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No bearer token.
    #[error("missing bearer token")]
    MissingToken,
    /// A token that is not configured.
    #[error("invalid bearer token")]
    WrongToken,
    /// Over the size cap after inflation.
    #[error(
        "body is over the {max_body_bytes}-byte limit (after gzip inflation); send smaller batches"
    )]
    TooLarge {
        /// The cap.
        max_body_bytes: usize,
    },
    /// More events than the cap: Braze splits the batch on a 413.
    #[error(
        "the batch holds {n_events} events, over the limit of {max_events_per_batch}; send smaller batches"
    )]
    TooManyEvents {
        /// Events in the batch.
        n_events: usize,
        /// The cap.
        max_events_per_batch: usize,
    },
    /// A `Content-Encoding` other than gzip (or identity).
    #[error("unsupported Content-Encoding: send the body plain or gzip-compressed")]
    UnsupportedEncoding,
    /// Not a readable batch.
    #[error("{0}")]
    BadBody(String),
    /// Cannot store now; Braze should retry.
    #[error("{0}; retry later")]
    Unavailable(Unavailable),
    /// Our own fault.
    #[error("internal error")]
    Internal,
}

/// Why a batch cannot be stored now: the answer is 503, and Braze retries.
/// A closed set, also the `reason` label of
/// `bridge_ingest_unavailable_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The spool is at its size bound until delivery frees space.
    #[error("the spool is full")]
    SpoolFull,
    /// SIGTERM or SIGINT was received, or the spool is closing.
    #[error("the bridge is shutting down")]
    ShuttingDown,
    /// The spool could not store the batch (an I/O error, a full disk).
    #[error("the spool cannot store the batch")]
    StorageError,
    /// The request took longer than `request_timeout`. The timeout layer
    /// answers it (503, no body), never the handler.
    #[error("the request took longer than the request timeout")]
    Timeout,
}

impl Unavailable {
    /// The snake_case name, for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Unavailable::SpoolFull => "spool_full",
            Unavailable::ShuttingDown => "shutting_down",
            Unavailable::StorageError => "storage_error",
            Unavailable::Timeout => "timeout",
        }
    }

    /// The `Retry-After` Braze gets: long enough for delivery to free space,
    /// or for a restart.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Unavailable::SpoolFull => 30,
            Unavailable::ShuttingDown => 5,
            Unavailable::StorageError | Unavailable::Timeout => 10,
        }
    }
}

impl IngestError {
    /// The refusal the log reports, for those it reports.
    fn refusal(&self) -> Option<Refusal> {
        match self {
            IngestError::MissingToken => Some(Refusal::MissingToken),
            IngestError::WrongToken => Some(Refusal::WrongToken),
            IngestError::Unavailable(unavailable) => Some(Refusal::Unavailable(*unavailable)),
            IngestError::TooLarge { .. }
            | IngestError::TooManyEvents { .. }
            | IngestError::UnsupportedEncoding
            | IngestError::BadBody(_)
            | IngestError::Internal => None,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = match &self {
            IngestError::MissingToken | IngestError::WrongToken => StatusCode::UNAUTHORIZED,
            IngestError::TooLarge { .. } | IngestError::TooManyEvents { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::BadBody(_) => StatusCode::BAD_REQUEST,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        match &self {
            IngestError::MissingToken | IngestError::WrongToken => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"currents\""),
                );
            }
            IngestError::Unavailable(unavailable) => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(unavailable.retry_after_secs()),
                );
            }
            _ => {}
        }
        if let Some(refusal) = self.refusal() {
            response.extensions_mut().insert(refusal);
        }
        response
    }
}

/// Counts every answer, times every acknowledgement, and tells the refusal
/// log what was refused and what accepted. It sits outside the timeout, so a
/// 503 without a [`Refusal`] is the timeout layer's.
async fn track<S: Spool>(
    State(state): State<Arc<IngestState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status();
    state
        .metrics
        .record_ingest(status.as_u16(), started.elapsed());
    let refusal = match response.extensions().get::<Refusal>() {
        Some(refusal) => Some(*refusal),
        None if status == StatusCode::SERVICE_UNAVAILABLE => {
            // The timeout layer's bare 503 gets the body and `Retry-After`
            // of every other 503.
            response = IngestError::Unavailable(Unavailable::Timeout).into_response();
            Some(Refusal::Unavailable(Unavailable::Timeout))
        }
        // The compressed-size limit's bare 413 gets the JSON of every 413.
        None if status == StatusCode::PAYLOAD_TOO_LARGE
            && response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_none_or(|value| value != "application/json") =>
        {
            response = IngestError::TooLarge {
                max_body_bytes: state.config.max_body_bytes,
            }
            .into_response();
            None
        }
        // The decompression layer's bare 415 gets a JSON error too.
        None if status == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            response = IngestError::UnsupportedEncoding.into_response();
            None
        }
        None => None,
    };
    let now = Instant::now();
    match refusal {
        Some(refusal) => {
            if let Refusal::Unavailable(unavailable) = refusal {
                state.metrics.record_unavailable(unavailable.label());
            }
            state.refusals.refused(refusal, now);
        }
        None if status.is_success() => {
            state.refusals.accepted(now);
        }
        None => {}
    }
    response
}

/// The trace layer's failure log. A 500 is a fault of ours: logged at error
/// level, each time. A 503 is back-pressure, for [`track`] and the refusal
/// log to report without a line per request.
fn log_server_error(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass;
    if let ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) = class {
        return;
    }
    tracing::error!(
        classification = %class,
        latency_ms = latency.as_millis(),
        "Answered a Currents request with a server error."
    );
}

async fn require_token<S: Spool>(
    State(state): State<Arc<IngestState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match state.config.tokens.check(authorization) {
        AuthCheck::Valid => next.run(request).await,
        AuthCheck::Missing => IngestError::MissingToken.into_response(),
        AuthCheck::Wrong => IngestError::WrongToken.into_response(),
    }
}

/// Query parameters of `POST /currents`.
#[derive(Debug, Deserialize)]
struct IngestParams {
    /// The Braze workspace, for routing to a Mixpanel project.
    workspace: Option<String>,
}

/// The longest workspace name accepted.
const MAX_WORKSPACE_LEN: usize = 256;

async fn receive<S: Spool>(
    State(state): State<Arc<IngestState<S>>>,
    params: Result<Query<IngestParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, IngestError> {
    if !state.is_accepting() {
        return Err(IngestError::Unavailable(Unavailable::ShuttingDown));
    }
    let Query(params) = params.map_err(|rejection| IngestError::BadBody(rejection.body_text()))?;
    if params
        .workspace
        .as_ref()
        .is_some_and(|workspace| workspace.len() > MAX_WORKSPACE_LEN)
    {
        return Err(IngestError::BadBody(format!(
            "workspace is longer than {MAX_WORKSPACE_LEN} bytes"
        )));
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => IngestError::TooLarge {
            max_body_bytes: state.config.max_body_bytes,
        },
        _ => IngestError::BadBody(format!("cannot read the body: {}", rejection.body_text())),
    })?;
    let version = headers
        .get("braze-currents-version")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    // Counted, not split: nothing is kept per event before the cap is checked.
    let n_events = match Batch::count_events(&body) {
        Ok(n_events) => n_events,
        Err(
            error @ (BatchError::InvalidJson { .. }
            | BatchError::InvalidUtf8 { .. }
            | BatchError::NotAnEnvelope),
        ) => {
            tracing::debug!(error = %error, currents_version = version, "Refused an unreadable Currents body.");
            return Err(IngestError::BadBody(error.to_string()));
        }
        Err(error) => return Err(IngestError::BadBody(error.to_string())),
    };
    if n_events > state.config.max_events_per_batch {
        tracing::debug!(
            n_events,
            max_events_per_batch = state.config.max_events_per_batch,
            "Refused a Currents batch with too many events; Braze splits it."
        );
        return Err(IngestError::TooManyEvents {
            n_events,
            max_events_per_batch: state.config.max_events_per_batch,
        });
    }
    if n_events == 0 {
        tracing::debug!(
            currents_version = version,
            "Accepted an empty Currents batch (credential check)."
        );
        return Ok(accepted(0));
    }
    let batch = NewBatch {
        body,
        workspace: params.workspace,
        received_at_ms: crate::clock::now_ms(),
    };
    match state.spool.append(batch).await {
        Ok(id) => {
            state.metrics.ingest_received_events.inc_by(n_events as u64);
            tracing::debug!(
                batch_id = id.0,
                n_events,
                currents_version = version,
                "Spooled a Currents batch."
            );
            Ok(accepted(n_events))
        }
        // Each refusal is logged at debug level; the refusal log reports
        // them to the operator without a line per request.
        Err(SpoolError::Full { n_bytes, max_bytes }) => {
            tracing::debug!(n_bytes, max_bytes, "Spool is full; asking Braze to retry.");
            Err(IngestError::Unavailable(Unavailable::SpoolFull))
        }
        Err(SpoolError::Closed) => Err(IngestError::Unavailable(Unavailable::ShuttingDown)),
        Err(error) => {
            tracing::debug!(error = %error, "Cannot spool a Currents batch.");
            Err(IngestError::Unavailable(Unavailable::StorageError))
        }
    }
}

fn accepted(n_events: usize) -> Response {
    (
        StatusCode::OK,
        Json(serde_json::json!({ "status": "ok", "events": n_events })),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
