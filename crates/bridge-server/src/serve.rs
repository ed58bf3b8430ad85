//! `serve`: the whole service from a [`Config`]: the embedded spool, the
//! ingest endpoint, the operations endpoints, the archive (when
//! `archive.url` is set) and the delivery workers, with a graceful shutdown.
//!
//! If the spool's storage fails for good (an I/O error, which includes a
//! failed fsync, or corruption; see `spool::sqlite::writer`), a watchdog
//! notices within half a second, the service shuts down the same way and
//! returns [`ServeError::SpoolFailed`] (the binary exits 1), so that a
//! supervisor restarts it and the spool's recovery runs. Without the
//! watchdog the service would answer 503 forever while looking alive. A disk
//! found full when writing (`SQLITE_FULL`) is not such a failure: ingest
//! answers 503 until space is freed.
//!
//! Shutdown (SIGTERM or SIGINT): ingest answers 503 from then on, requests
//! in flight finish, delivery workers finish the batch each holds (bounded
//! for at most 30 s; a batch cut off is handed out again at the next
//! start), and the spool closes cleanly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mixpanel_client::Client;

use crate::body_budget::BodyBudget;
use crate::cohorts::CohortImport;
use crate::config::SpoolBackend;
use crate::config::{Config, OpsListener};
use crate::delivery::{Delivery, DeliveryOptions, DryRunFile, ProjectTarget, Router, Sink};
use crate::ingest::{IngestOptions, IngestState};
use crate::ops::OpsState;
use crate::spool::any::AnySpool;
use crate::spool::nats::NatsSpool;
use crate::spool::sqlite::{SqliteSpool, SqliteSpoolOptions};
use currents_archive::store::ArchiveStore;
use currents_mixpanel::Mapper;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The spool cannot be opened.
    #[error("cannot open the spool")]
    Spool(#[source] crate::spool::SpoolError),
    /// NATS could not be reached, or its streams differ from the
    /// configuration.
    #[error("cannot open the NATS spool")]
    Nats(#[source] crate::nats::NatsError),
    /// The spool's storage failed for good while serving; restarting runs
    /// the spool's recovery.
    #[error("the spool's storage failed while serving; restart the bridge")]
    SpoolFailed(#[source] crate::spool::SpoolError),
    /// The archive (`archive.url`) cannot be opened: an unknown scheme, a
    /// missing directory, a store client that cannot be built.
    #[error("cannot open the archive of archive.url")]
    Archive(#[source] currents_archive::StoreError),
    /// A project's client or dry-run file cannot be set up.
    #[error("cannot set up project {project:?}: {message}")]
    Project {
        /// The project.
        project: String,
        /// Why.
        message: String,
    },
    /// The cohort import cannot be set up.
    #[error(transparent)]
    Cohorts(#[from] crate::cohorts::CohortSetupError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Another `serve` uses the data directory.
    #[error("{} is locked: another serve uses this data dir (or cannot lock it: {reason})", path.display())]
    DataDirLocked {
        /// The lock file.
        path: std::path::PathBuf,
        /// Why the lock could not be taken.
        reason: String,
    },
    /// The listen address cannot be bound, or serving failed.
    #[error("cannot serve on {address}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Routes with the configuration's table.
struct ConfigRouter {
    config: Arc<Config>,
    index: HashMap<String, usize>,
}

impl Router for ConfigRouter {
    fn route(&self, workspace: Option<&str>, app_group_id: Option<&str>) -> usize {
        let project = self.config.route(workspace, app_group_id);
        self.index.get(&project.name).copied().unwrap_or(0)
    }
}

/// Connections the operations listener takes at once (scrapers and probes).
const OPS_MAX_CONNECTIONS: usize = 64;

/// How many events Braze's Custom HTTP connector puts in one batch, at most.
const BRAZE_EVENTS_PER_BATCH: usize = 100;

/// How long a NATS replica may go silent before its leased batches go to
/// another replica: `delivery.lease_secs`, at most 60 s. Shorter than the
/// lease on purpose: progress acks keep a long delivery's lease, and a
/// replica that died hands its batches over within this time rather than
/// the whole lease. `check-config --connect` compares the consumer with it.
pub fn nats_ack_wait(delivery_lease: Duration) -> Duration {
    Duration::from_secs(60).min(delivery_lease)
}

/// The spool the configuration chose: SQLite in the data dir, or NATS.
async fn open_spool(config: &Config) -> Result<AnySpool, ServeError> {
    match &config.spool.backend {
        SpoolBackend::Sqlite => {
            let options =
                SqliteSpoolOptions::new(config.data_dir.join("spool"), config.spool.max_bytes);
            let spool = tokio::task::spawn_blocking(move || SqliteSpool::open(options))
                .await
                .map_err(|error| {
                    ServeError::Spool(crate::spool::SpoolError::Storage(error.to_string()))
                })?
                .map_err(ServeError::Spool)?;
            Ok(AnySpool::Sqlite(spool))
        }
        SpoolBackend::Nats(options) => {
            let client = crate::nats::connect(options)
                .await
                .map_err(ServeError::Nats)?;
            let ack_wait = nats_ack_wait(config.delivery.lease);
            let spool = NatsSpool::open(client, options, ack_wait)
                .await
                .map_err(ServeError::Nats)?;
            tracing::info!(
                servers = ?options.servers,
                stream = %options.stream,
                consumer = %options.consumer,
                replicas = options.replicas,
                "The spool is NATS JetStream."
            );
            Ok(AnySpool::Nats(spool))
        }
    }
}

/// The archive of `archive.url`, when set: opened (its client built, a
/// directory checked) before anything else, so that a location it cannot
/// take stops `serve` at once, naming the setting. Nothing is written yet.
fn open_archive(config: &Config) -> Result<Option<ArchiveStore>, ServeError> {
    let Some(archive) = &config.archive else {
        return Ok(None);
    };
    let store = ArchiveStore::open(&archive.url).map_err(ServeError::Archive)?;
    tracing::info!(
        archive = %store.location(),
        "Every batch is archived, as received, before it is delivered."
    );
    Ok(Some(store))
}

/// The largest batch body ingest takes: `ingest.max_body_bytes`, lowered
/// on NATS to what the servers' `max_payload` holds (a larger batch gets
/// 413 and Braze splits it; NATS would refuse it for ever).
fn ingest_body_cap(config: &Config, spool: &AnySpool) -> usize {
    let room = match spool {
        AnySpool::Nats(spool) => Some(spool.max_body_bytes()),
        AnySpool::Sqlite(_) => None,
    };
    let cap = config.ingest_body_cap(room);
    if cap.lowered_from_setting {
        tracing::warn!(
            max_body_bytes = config.ingest.max_body_bytes,
            body_cap = cap.bytes,
            "ingest.max_body_bytes is above what the NATS servers' max_payload holds: larger batches get 413 (Braze splits them). Raise max_payload on the servers to take them whole."
        );
    } else if cap.bytes < config.ingest.max_body_bytes {
        tracing::info!(
            body_cap = cap.bytes,
            "The body cap follows the NATS servers' max_payload."
        );
    }
    cap.bytes
}

/// Runs the service until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    // One serve per data dir, and the port bound, before the spool is
    // touched: a second start must not reclaim the first one's leases.
    let _lock = DataDirLock::take(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            address: config.listen,
            source,
        })?;
    prepare_private_files(&config).map_err(|error| {
        ServeError::Spool(crate::spool::SpoolError::Storage(format!(
            "cannot prepare the data dir {}: {error}",
            config.data_dir.display()
        )))
    })?;
    let certificate = match &config.tls {
        Some(tls) => Some(crate::tls::ReloadingCert::load(
            &tls.cert_file,
            &tls.key_file,
        )?),
        None => None,
    };
    let ops_listener = match config.ops {
        OpsListener::Address(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| ServeError::Listen { address, source })?,
        ),
        OpsListener::IngestListener => None,
    };
    let archive = open_archive(&config)?;
    let spool = Arc::new(open_spool(&config).await?);

    let metrics = Arc::new(crate::metrics::Metrics::new());
    metrics
        .spool_max_bytes
        .set(i64::try_from(config.spool.max_bytes).unwrap_or(i64::MAX));
    let mut projects = Vec::new();
    let mut index = HashMap::new();
    for (project_idx, project) in config.all_projects().enumerate() {
        index.insert(project.name.clone(), project_idx);
        projects.push(project_target(&config, project)?);
    }
    let delivery = Arc::new(Delivery::new(
        Arc::clone(&spool),
        ConfigRouter {
            config: Arc::clone(&config),
            index,
        },
        projects,
        DeliveryOptions {
            workers: config.delivery.workers,
            // Braze sends about 100 events per batch: lease enough batches
            // to fill one `/import` request.
            batches_per_lease: config
                .delivery
                .batch_limits
                .max_events
                .div_ceil(BRAZE_EVENTS_PER_BATCH)
                .max(1),
            lease: config.delivery.lease,
            linger: config.delivery.linger,
            batch_limits: config.delivery.batch_limits,
            pause_retry: Duration::from_secs(60),
            max_retry_delay: Duration::from_secs(600),
            max_attempts: config.delivery.max_attempts,
            max_age: config.delivery.max_age,
            idle_poll: Duration::from_millis(50),
            archive,
        },
        Arc::clone(&metrics),
    ));

    let body_cap = ingest_body_cap(&config, &spool);
    let tokens = config.ingest.auth.bearer_tokens();
    let body_budget = BodyBudget::new(
        config.ingest.max_inflight_body_bytes,
        metrics.ingest_body_bytes_reserved.clone(),
    );
    let ingest = Arc::new(IngestState::new(
        Arc::clone(&spool),
        IngestOptions {
            tokens,
            max_body_bytes: body_cap,
            request_timeout: config.ingest.request_timeout,
            max_events_per_batch: config.ingest.max_events_per_batch,
            body_budget: body_budget.clone(),
        },
        Arc::clone(&metrics),
    ));
    // On NATS the cohort state shares the spool's connection.
    let nats_client = match &*spool {
        AnySpool::Nats(spool) => Some(spool.client().clone()),
        AnySpool::Sqlite(_) => None,
    };
    let cohorts = CohortImport::open(&config, crate::cohorts::query_client(&config)?, nats_client)
        .await?
        .map(Arc::new);
    let listener_stats = Arc::new(crate::listener::ListenerStats::default());
    let ops = Arc::new(OpsState {
        spool: Arc::clone(&spool),
        ingest: Arc::clone(&ingest),
        delivery: delivery.status(),
        metrics,
        cohorts: cohorts.clone(),
        listener: Arc::clone(&listener_stats),
    });
    let ops_routes = crate::ops::routes(ops);
    let (mut app, ops_app) = match ops_listener {
        Some(_) => (crate::ingest::routes(Arc::clone(&ingest)), Some(ops_routes)),
        None => (
            crate::ingest::routes(Arc::clone(&ingest)).merge(ops_routes),
            None,
        ),
    };
    if let Some(cohorts) = &cohorts {
        app = app.merge(cohorts.routes(config.ingest.request_timeout, &body_budget));
    }

    tracing::info!(
        listen = %config.listen,
        tls = config.tls.is_some(),
        data_dir = %config.data_dir.display(),
        dry_run = config.dry_run,
        "Bridge is serving."
    );

    let (stop_delivery, delivery_stopped) = tokio::sync::watch::channel(false);
    let delivery_task = tokio::spawn(Arc::clone(&delivery).run(delivery_stopped.clone()));
    let delivery_stopped_for_tls = delivery_stopped.clone();
    let cohort_tasks = cohorts
        .as_ref()
        .map(|cohorts| cohorts.spawn(delivery_stopped))
        .unwrap_or_default();

    // A spool whose storage failed (an I/O error on commit, corruption) can
    // acknowledge nothing any more: stop, so a supervisor restarts us and
    // the spool's recovery runs, rather than answering 503 forever.
    let spool_failed = Arc::new(std::sync::Mutex::new(None));
    let watchdog = {
        let spool = Arc::clone(&spool);
        let spool_failed = Arc::clone(&spool_failed);
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Some(failure) = spool.failure() {
                    tracing::error!(error = %failure, "The spool's storage failed; stopping the bridge.");
                    *spool_failed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(failure);
                    return;
                }
            }
        }
    };
    let ingest_for_shutdown = Arc::clone(&ingest);
    let cohorts_for_shutdown = cohorts.clone();
    let shutdown_grace = config.ingest.shutdown_grace;
    let limits = crate::listener::ListenerLimits {
        header_read_timeout: config.ingest.header_read_timeout,
        max_connections: crate::listener::fit_to_open_files_limit(config.ingest.max_connections),
        shutdown_grace: config.ingest.shutdown_grace,
    };
    // The operations listener stops with the ingest one.
    let (stop_ops, mut ops_stopped) = tokio::sync::watch::channel(false);
    let ops_task = match (ops_listener, ops_app) {
        (Some(ops_listener), Some(ops_app)) => {
            if let Ok(address) = ops_listener.local_addr() {
                tracing::info!(ops_listen = %address, "Operations endpoints are served apart from ingest.");
            }
            Some(tokio::spawn(crate::listener::serve(
                ops_listener,
                ops_app,
                crate::listener::ListenerLimits {
                    max_connections: OPS_MAX_CONNECTIONS,
                    ..limits
                },
                Arc::new(crate::listener::ListenerStats::default()),
                None,
                async move {
                    let _ = ops_stopped.changed().await;
                    Duration::ZERO
                },
            )))
        }
        _ => None,
    };
    let tls = certificate.as_ref().map(|certificate| {
        tokio::spawn(Arc::clone(certificate).watch(delivery_stopped_for_tls.clone()));
        tokio_rustls::TlsAcceptor::from(certificate.server_config())
    });
    crate::listener::serve(
        listener,
        app,
        limits,
        Arc::clone(&listener_stats),
        tls,
        async move {
            // A failed spool stops the service at once: it can acknowledge
            // nothing, and clients must not delay the exit (a supervisor
            // restarts it and the spool's recovery runs).
            let grace = tokio::select! {
                () = shutdown => shutdown_grace,
                () = watchdog => Duration::ZERO,
            };
            tracing::info!("Shutting down: refusing new batches, finishing what is in flight.");
            let _ = stop_ops.send(true);
            ingest_for_shutdown.stop_accepting();
            if let Some(cohorts) = &cohorts_for_shutdown {
                cohorts.stop_accepting();
            }
            grace
        },
    )
    .await;

    if let Some(ops_task) = ops_task {
        let _ = ops_task.await;
    }
    let _ = stop_delivery.send(true);
    if tokio::time::timeout(Duration::from_secs(30), delivery_task)
        .await
        .is_err()
    {
        tracing::warn!(
            "Delivery workers did not finish within 30 s; their batches will be handed out again."
        );
    }
    for task in cohort_tasks {
        // A round cut off here leaves its changes in the journal: they are
        // sent again at the next start.
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            tracing::warn!(
                "The cohort writer did not finish within 10 s; its changes stay journaled."
            );
        }
    }
    if let Err(error) = spool.close().await {
        tracing::error!(error = %error, "Cannot close the spool cleanly.");
    }
    tracing::info!("Bridge stopped.");
    let failure = spool_failed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match failure {
        Some(failure) => Err(ServeError::SpoolFailed(failure)),
        None => Ok(()),
    }
}

/// The data dir's directories 0700 and its files 0600, created before
/// anything opens them (see `private_files`).
fn prepare_private_files(config: &Config) -> std::io::Result<()> {
    use crate::private_files::{ensure_private_dir, ensure_private_file};
    let data_dir = &config.data_dir;
    ensure_private_dir(data_dir)?;
    ensure_private_dir(&data_dir.join("spool"))?;
    ensure_private_file(&data_dir.join("spool").join("spool.db"))?;
    // On NATS the cohort state is in NATS, not in the data dir.
    if config.cohorts.is_enabled() && config.spool.backend == SpoolBackend::Sqlite {
        let store = crate::cohorts::store_path(data_dir);
        if let Some(dir) = store.parent() {
            ensure_private_dir(dir)?;
        }
        ensure_private_file(&store)?;
    }
    if config.dry_run {
        ensure_private_dir(&data_dir.join("dry-run"))?;
        for project in config.all_projects() {
            ensure_private_file(&config.dry_run_path(project))?;
        }
        if config.cohorts.is_enabled() {
            ensure_private_file(&crate::cohorts::dry_run_path(data_dir))?;
        }
    }
    Ok(())
}

fn project_target(
    config: &Config,
    project: &crate::config::ProjectConfig,
) -> Result<ProjectTarget, ServeError> {
    let fail = |message: String| ServeError::Project {
        project: project.name.clone(),
        message,
    };
    let sink = if config.dry_run {
        let path = config.dry_run_path(project);
        let file = DryRunFile::open(&path)
            .map_err(|error| fail(format!("cannot open {}: {error}", path.display())))?;
        tracing::info!(project = %project.name, path = %path.display(), "Dry run: mapped events go to a file.");
        Sink::DryRun(file)
    } else {
        let credentials = project
            .credentials
            .clone()
            .ok_or_else(|| fail("no Mixpanel credentials".to_owned()))?;
        let mut builder = Client::builder(credentials)
            .region(project.region)
            .request_timeout(config.delivery.request_timeout)
            .retry(config.delivery.retry.clone())
            .max_concurrent_requests(config.delivery.concurrency);
        if let Some(url) = &project.api_url {
            builder = builder.base_url(url.as_str());
        }
        if let Some(extra_ca) = &config.extra_ca {
            builder = builder.extra_root_certificates(&extra_ca.pem);
        }
        Sink::Mixpanel(builder.build().map_err(|error| fail(error.to_string()))?)
    };
    Ok(ProjectTarget {
        name: project.name.clone(),
        mapper: Mapper::new(config.mapping_config(project)),
        sink,
    })
}

/// An exclusive lock on `<data_dir>/serve.lock`, held while the service
/// runs (the OS releases it when the process ends, however it ends).
struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    fn take(data_dir: &std::path::Path) -> Result<DataDirLock, ServeError> {
        let path = data_dir.join("serve.lock");
        let locked = |reason: String| ServeError::DataDirLocked {
            path: path.clone(),
            reason,
        };
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(data_dir)
            .map_err(|error| locked(format!("cannot create the data dir: {error}")))?;
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|error| locked(error.to_string()))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(locked("held by another process".to_owned()))
            }
            Err(std::fs::TryLockError::Error(error)) => Err(locked(error.to_string())),
        }
    }
}
