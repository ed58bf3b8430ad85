//! The cohort import inside the service: Mixpanel's cohort-sync webhook
//! as an HTTP route, the writer that drains the journal to Braze, and the
//! pull schedule. The work itself lives in the `cohort-import` crate; this
//! module builds it from the [`Config`] and runs it.
//!
//! The state lives in the store the configuration chose ([`AnyStore`]):
//! SQLite in the data dir, or, with `spool.backend = "nats"`, NATS
//! JetStream key-value buckets that every replica shares. On NATS any
//! replica answers any page; one replica at a time drains the journal to
//! Braze (the writer lease, never taken over from a live holder: another
//! replica takes it when the holder stops, or its lease expires after it
//! died); and each replica finishes, at start and every minute, the cohort
//! changes a replica that died left half-applied.
//!
//! The route's layers, outermost first: sensitive headers → trace →
//! timeout (503, so Mixpanel retries instead of pausing) → panic catcher →
//! the handler, which checks the credentials before it reads the body and
//! then reads at most `cohorts.max_body_bytes` (413 beyond).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use cohort_import::braze::{BrazeClient, PartnerCredentials};
use cohort_import::stats::CohortStats;
use cohort_import::webhook::{WebhookConfig, WebhookReceiver};
use cohort_import::writer::{Destination, Writer, WriterConfig};
use mixpanel_client::Client;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::body_budget::{BodyBudget, RouteBudget};
use crate::config::{BrazeConfig, CohortWebhookConfig, CohortWriter, Config};

mod store;
#[cfg(test)]
mod tests;

pub use store::AnyStore;

/// How often a replica on NATS finishes the changes others left
/// half-applied (`NatsStore::recover`).
const RECOVER_EVERY: Duration = Duration::from_secs(60);

/// The import's parts, shared by the route, the tasks and `/status`.
pub struct CohortImport {
    /// The membership store.
    pub store: Arc<AnyStore>,
    /// The webhook's receiver.
    pub receiver: Arc<WebhookReceiver<AnyStore>>,
    /// The counters, for `/metrics`.
    pub stats: Arc<CohortStats>,
    writer: Arc<Writer<AnyStore>>,
    pull: Option<(Client, cohort_import::pull::Schedule)>,
    identity: cohort_import::identity::IdentityRule,
    changed: Arc<Notify>,
    webhook: Option<CohortWebhookConfig>,
}

/// Why the import cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CohortSetupError {
    /// The store cannot be opened.
    #[error("cannot open the cohort store: {0}")]
    Store(#[from] cohort_import::store::StoreError),
    /// NATS cannot be reached (`spool.backend = "nats"`).
    #[error("cannot open the cohort store on NATS: {0}")]
    Nats(#[from] crate::nats::NatsError),
    /// The Braze client or the dry-run file cannot be set up.
    #[error("cannot set up the Braze writer: {0}")]
    Writer(String),
    /// The pull schedule needs a Mixpanel service account.
    #[error("cannot set up the cohort pull: {0}")]
    Pull(String),
}

/// Where the SQLite membership store lives: `<data_dir>/cohorts/cohorts.db`.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cohorts").join("cohorts.db")
}

/// Where dry-run Braze requests go: `<data_dir>/dry-run/braze-cohorts.ndjson`.
pub fn dry_run_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dry-run").join("braze-cohorts.ndjson")
}

/// The Mixpanel client the cohort pull reads the Query API with: the
/// default project's, when it has credentials with a project id (the
/// Query API needs one); `None` otherwise.
pub fn query_client(config: &Config) -> Result<Option<Client>, CohortSetupError> {
    let project = &config.default_project;
    let Some(credentials) = project
        .credentials
        .clone()
        .filter(|credentials| credentials.project_id().is_some())
    else {
        return Ok(None);
    };
    let mut builder = Client::builder(credentials).region(project.region);
    if let Some(url) = &project.api_url {
        builder = builder.base_url(url.as_str());
    }
    if let Some(extra_ca) = &config.extra_ca {
        builder = builder.extra_root_certificates(&extra_ca.pem);
    }
    builder
        .build()
        .map(Some)
        .map_err(|error| CohortSetupError::Pull(error.to_string()))
}

/// A Braze client for `braze`, keeping to its rate limit.
pub fn braze_client(
    braze: &BrazeConfig,
    extra_ca: Option<&crate::config::ExtraCa>,
) -> Result<BrazeClient, CohortSetupError> {
    let builder = match &braze.rest_api_key {
        Some(key) => BrazeClient::builder(key.clone()),
        // The partner writer needs no REST key.
        None => BrazeClient::partner_only(),
    };
    let mut builder = builder
        .instance(braze.instance)
        .rate_limit(braze.rate_limit)
        .request_timeout(braze.request_timeout);
    if let Some(url) = &braze.api_url {
        builder = builder.base_url(url);
    }
    if let Some(extra_ca) = extra_ca {
        builder = builder.extra_root_certificates(&extra_ca.pem);
    }
    builder
        .build()
        .map_err(|error| CohortSetupError::Writer(error.to_string()))
}

/// The writer's destination from the configuration: the dry-run file when
/// `dry_run`, else the configured Braze API.
pub fn destination(config: &Config) -> Result<Destination, CohortSetupError> {
    let cohorts = &config.cohorts;
    if config.dry_run {
        let path = dry_run_path(&config.data_dir);
        let fail = |error: std::io::Error| {
            CohortSetupError::Writer(format!("cannot open {}: {error}", path.display()))
        };
        return match &cohorts.writer {
            CohortWriter::Attribute { attribute } => {
                Destination::dry_run(&path, attribute).map_err(fail)
            }
            CohortWriter::Partner { partner_name, .. } => {
                Destination::dry_run_partner(&path, partner_name).map_err(fail)
            }
        };
    }
    let braze = cohorts.braze.as_ref().ok_or_else(|| {
        CohortSetupError::Writer(
            "no Braze connection: set BRAZE_REST_API_KEY (or the partner keys)".to_owned(),
        )
    })?;
    let client = braze_client(braze, config.extra_ca.as_ref())?;
    Ok(match &cohorts.writer {
        CohortWriter::Attribute { attribute } => Destination::attribute(client, attribute),
        CohortWriter::Partner {
            partner_name,
            partner_api_key,
            data_import_key,
        } => Destination::partner(
            client,
            PartnerCredentials {
                partner_name: partner_name.clone(),
                partner_api_key: partner_api_key.clone(),
                client_secret: data_import_key.clone(),
            },
        ),
    })
}

impl CohortImport {
    /// Builds the import when the configuration turns it on, over the
    /// store it chose ([`AnyStore::open`]; `nats`: a connected client to
    /// share, else the import connects on its own).
    pub async fn open(
        config: &Config,
        pull_client: Option<Client>,
        nats: Option<async_nats::Client>,
    ) -> Result<Option<CohortImport>, CohortSetupError> {
        let cohorts = &config.cohorts;
        if !cohorts.is_enabled() {
            return Ok(None);
        }
        let store = Arc::new(AnyStore::open(config, nats).await?);
        let stats = Arc::new(CohortStats::default());
        let changed = Arc::new(Notify::new());
        let mut webhook_config = WebhookConfig::new(cohorts.identity.clone());
        if let Some(webhook) = &cohorts.webhook {
            webhook_config = webhook_config
                .credentials(webhook.credentials.iter().map(|secret| secret.expose()))
                .max_members_per_page(webhook.max_members_per_page);
        }
        let receiver = Arc::new(
            WebhookReceiver::new(Arc::clone(&store), webhook_config)
                .with_stats(Arc::clone(&stats))
                .with_notify(Arc::clone(&changed)),
        );
        // Replicas sharing the store never take the lease over from a live
        // writer; the one service of a SQLite store does at start.
        let writer_config = if store.is_shared() {
            WriterConfig::shared()
        } else {
            WriterConfig::default()
        };
        let writer = Arc::new(
            Writer::new(Arc::clone(&store), destination(config)?, writer_config)
                .with_stats(Arc::clone(&stats))
                .with_notify(Arc::clone(&changed)),
        );
        let pull = match &cohorts.pull {
            Some(schedule) => {
                let client = pull_client.ok_or_else(|| {
                    CohortSetupError::Pull(
                        "the default Mixpanel project needs service account credentials and a project id".to_owned(),
                    )
                })?;
                Some((
                    client,
                    cohort_import::pull::Schedule {
                        ids: schedule.cohort_ids.clone(),
                        interval: schedule.interval,
                    },
                ))
            }
            None => None,
        };
        let destination_kind = writer.destination_kind();
        let location = match &config.spool.backend {
            crate::config::SpoolBackend::Sqlite => {
                store_path(&config.data_dir).display().to_string()
            }
            crate::config::SpoolBackend::Nats(options) => {
                format!("NATS key-value buckets {}-*", options.kv_bucket_prefix)
            }
        };
        tracing::info!(
            store = %location,
            webhook = cohorts.webhook.as_ref().map_or("off", |webhook| webhook.path.as_str()),
            pull_interval_secs = cohorts.pull.as_ref().map(|pull| pull.interval.as_secs()),
            identity = %cohorts.identity.as_config(),
            writer = destination_kind,
            "Cohort import is on."
        );
        if config.dry_run {
            tracing::info!(path = %dry_run_path(&config.data_dir).display(), "Dry run: Braze requests go to a file.");
        }
        Ok(Some(CohortImport {
            store,
            receiver,
            stats,
            writer,
            pull,
            identity: cohorts.identity.clone(),
            changed,
            webhook: cohorts.webhook.clone(),
        }))
    }

    /// The webhook route (none when only the pull is on).
    /// Bodies take their share of `body_budget` once the credentials pass.
    pub fn routes(&self, request_timeout: Duration, body_budget: &BodyBudget) -> Router {
        let Some(webhook) = &self.webhook else {
            return Router::new();
        };
        use tower::ServiceBuilder;
        use tower_http::catch_panic::CatchPanicLayer;
        use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
        use tower_http::timeout::TimeoutLayer;
        use tower_http::trace::TraceLayer;

        let layers = ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
            ]))
            .layer(TraceLayer::new_for_http())
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                request_timeout,
            ))
            .layer(CatchPanicLayer::new());
        let state = Arc::new(WebhookState {
            receiver: Arc::clone(&self.receiver),
            max_body_bytes: webhook.max_body_bytes,
            last_refusal_warning_secs: AtomicI64::new(i64::MIN / 2),
        });
        Router::new()
            .route(&webhook.path, post(receive_page))
            .route_layer(axum::middleware::from_fn_with_state(
                RouteBudget {
                    budget: body_budget.clone(),
                    max_body_bytes: webhook.max_body_bytes,
                },
                crate::body_budget::hold_while_answering,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                require_credentials,
            ))
            .route_layer(DefaultBodyLimit::max(webhook.max_body_bytes))
            .route_layer(layers)
            .with_state(state)
    }

    /// Starts the writer, the pull schedule and, on NATS, the recovery of
    /// changes left half-applied (now, then every minute); they stop when
    /// `stop` turns true.
    pub fn spawn(&self, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(Arc::clone(&self.writer).run(stop.clone()))];
        if self.store.is_shared() {
            tasks.push(tokio::spawn(recover_every(
                Arc::clone(&self.store),
                RECOVER_EVERY,
                stop.clone(),
            )));
        }
        if let Some((client, schedule)) = &self.pull {
            tasks.push(tokio::spawn(cohort_import::pull::pull_every(
                client.clone(),
                Arc::clone(&self.store),
                self.identity.clone(),
                schedule.clone(),
                Arc::clone(&self.stats),
                Arc::clone(&self.changed),
                stop,
            )));
        }
        tasks
    }

    /// From now on the webhook answers 503 (Mixpanel retries).
    pub fn stop_accepting(&self) {
        self.receiver.stop_accepting();
    }
}

/// Finishes the cohort changes that replicas left half-applied, now and
/// then every `interval`, until `stop` turns true (a recovery cut short
/// then is finished by the next one, on any replica).
async fn recover_every(store: Arc<AnyStore>, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        let recovered = tokio::select! {
            recovered = store.recover() => recovered,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        match recovered {
            Ok(0) => {}
            Ok(n_changes) => tracing::info!(
                n_changes,
                "Finished cohort changes that a replica left half-applied."
            ),
            Err(error) => tracing::warn!(
                error = %error,
                "Cannot finish the cohort changes a replica left half-applied; the next change of each cohort, or the next try, finishes them."
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// One cohort's state as `/status` and `cohorts status --json` show it.
pub fn status_json(status: &cohort_import::store::CohortStatus) -> serde_json::Value {
    serde_json::json!({
        "project_id": status.cohort.project_id,
        "cohort_id": status.cohort.cohort_id,
        "name": status.name,
        "members": status.members,
        "pending_changes": status.pending,
        "unmatched_members": status.unmatched,
        "dead_letters": status.dead_letters,
        "last_sync_ms": status.last_sync_ms,
        "last_confirmed_ms": status.last_confirmed_ms,
        "last_error": status.last_error,
    })
}

struct WebhookState {
    receiver: Arc<WebhookReceiver<AnyStore>>,
    max_body_bytes: usize,
    /// When the last refused call was logged, UNIX seconds.
    last_refusal_warning_secs: AtomicI64,
}

/// Refuses a request without accepted credentials before its body is read.
async fn require_credentials(
    State(state): State<Arc<WebhookState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if state.receiver.config().accepts(authorization) {
        return next.run(request).await;
    }
    // Mixpanel pauses a sync that gets a 401: say so, at most once a minute.
    let now_secs = crate::clock::now_ms() / 1000;
    let last_secs = state.last_refusal_warning_secs.load(Ordering::Relaxed);
    if now_secs - last_secs >= 60
        && state
            .last_refusal_warning_secs
            .compare_exchange(last_secs, now_secs, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            has_credentials = authorization.is_some(),
            "Refused a cohort webhook call without accepted credentials; Mixpanel pauses a sync that gets this 401. Check the webhook's Basic auth (at most one warning a minute)."
        );
    }
    // The receiver gives the 401 answer (and counts it).
    into_response(state.receiver.receive(authorization, b"").await)
}

/// `POST <webhook path>`: at most `max_body_bytes` of body (enforced while
/// it is read), then the receiver.
async fn receive_page(
    State(state): State<Arc<WebhookState>>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            // Over the cap: 413. Any other failure to read the body (a cut
            // connection, a timeout) may pass: 503, since a 400 would pause
            // Mixpanel's sync.
            let (status, message) = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the page is over the {}-byte limit", state.max_body_bytes),
                )
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the request body could not be read; retry".to_owned(),
                )
            };
            let body = serde_json::json!({
                "action": null,
                "status": "failure",
                "error": {"message": message, "code": status.as_u16()},
            });
            let mut response = (status, axum::Json(body)).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            return response;
        }
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    into_response(state.receiver.receive(authorization, &body).await)
}

fn into_response(answer: cohort_import::webhook::WebhookAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.body,
    )
        .into_response();
    if let Some(seconds) = answer.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
