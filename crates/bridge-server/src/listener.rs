//! The HTTP listener: hyper's HTTP/1.1 server with the limits a service on
//! the open internet needs, which `axum::serve` does not set.
//!
//! - **Header-read timeout** (`ListenerLimits::header_read_timeout`, 10 s by
//!   default): a client must send a whole request head within it, or the
//!   connection is closed. Hyper arms it whenever it waits for a request
//!   head, so it also closes a keep-alive connection left idle that long,
//!   and a client trickling a header (slowloris) is cut.
//! - **Connection cap** (`max_connections`), so that clients cannot use up
//!   the open-files limit. At the cap, the oldest connection with no
//!   request in flight (idle between requests, or still sending a head),
//!   open for at least a second, is closed to make room, so that such
//!   clients cannot keep a sender out; only when every connection is busy
//!   (or new) is the new one closed. Evictions and refusals are counted,
//!   refusals logged once per episode.
//! - **Read buffer** of 16 KiB per connection (`MAX_READ_BUFFER_BYTES`):
//!   a longer request head gets 431, and memory per connection stays small.
//! - **Bounded graceful shutdown** (`shutdown_grace`): on shutdown the
//!   listener stops accepting, connections finish their request in flight
//!   and are closed; any still open after the grace period are cut, so that
//!   no client can hold the process.
//!
//! - **TLS** (optional): the handshake runs in the connection's task, under
//!   the header-read timeout (see `crate::tls` for the certificate).
//!
//! The body of a request is bounded in time by each route's own timeout
//! layer, and in size by its body limit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::log_limit::{Episode, SUMMARY_INTERVAL};

/// The listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time allowed for a request head, and for an idle keep-alive
    /// connection to send its next one.
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed when accepted.
    pub max_connections: usize,
    /// How long shutdown waits for open connections before it cuts them.
    pub shutdown_grace: Duration,
}

/// What the listener counts, for metrics.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub refused_over_cap: AtomicU64,
    /// Connections still open when the shutdown grace ended, cut.
    pub cut_at_shutdown: AtomicU64,
    /// Connections closed at the cap to make room, because they had not
    /// sent a request.
    pub evicted_silent: AtomicU64,
}

impl Default for ListenerLimits {
    fn default() -> ListenerLimits {
        ListenerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 8192,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The most a connection buffers while it reads (hyper's default is about
/// 400 KiB): a request head must fit in it (431 beyond), and it bounds what
/// each of `max_connections` clients can make the process hold before its
/// request is authenticated.
const MAX_READ_BUFFER_BYTES: usize = 16 * 1024;

/// File descriptors kept free for everything but client connections: the
/// spool and the cohort store, the connections to Mixpanel and Braze, logs.
const RESERVED_FILES: u64 = 256;

/// `max_connections`, lowered to fit under the process's open-files limit
/// (less [`RESERVED_FILES`]) where that is lower, with a warning: past the
/// limit, `accept` fails and a real batch would go unanswered.
pub fn fit_to_open_files_limit(max_connections: usize) -> usize {
    let Some(soft_limit) = open_files_soft_limit() else {
        return max_connections;
    };
    let room =
        usize::try_from(soft_limit.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
    if room < max_connections {
        tracing::warn!(
            max_connections,
            lowered_to = room,
            open_files_limit = soft_limit,
            "ingest.max_connections is above what the open-files limit allows; using less. Raise the limit (ulimit -n, LimitNOFILE=) to serve more connections."
        );
        return room;
    }
    max_connections
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None`
/// where it cannot be read or is unlimited.
fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down
/// within the grace it resolves to (normally `limits.shutdown_grace`; zero
/// when the service must stop at once), cutting connections still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    stats: Arc<ListenerStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = Duration> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_READ_BUFFER_BYTES)
        .keep_alive(true);
    let tracked = Arc::new(Tracked::default());
    // Told when the shutdown grace ends: connections still open close.
    let (cut, cut_signal) = tokio::sync::watch::channel(false);
    let mut refusals = Episode::default();
    let mut accept_errors = Episode::default();
    let mut shutdown = std::pin::pin!(shutdown);
    let grace = loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // The shutdown future says how long to wait for open connections.
            grace = &mut shutdown => break grace,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                if let Some(line) = accept_errors.ended(Instant::now(), SUMMARY_INTERVAL) {
                    tracing::info!(n_failures = line.n_events(), "Accepting connections again.");
                }
                stream
            }
            Err(error) => {
                // Out of file descriptors, most often: wait instead of
                // spinning, and say so per episode.
                if let Some(line) = accept_errors.occurred(Instant::now(), SUMMARY_INTERVAL) {
                    tracing::error!(error = %error, n_failures = line.n_events(), "Cannot accept connections (the open-files limit?); retrying.");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => Some(slot),
            // At the cap: make room by closing the oldest connection that
            // has not sent a request yet (idle or trickling), so that such
            // clients cannot keep a sender out.
            Err(_) if tracked.evict_oldest_silent() => {
                stats.evicted_silent.fetch_add(1, Ordering::Relaxed);
                tokio::time::timeout(EVICTION_WAIT, Arc::clone(&slots).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(slot) = slot else {
            stats.refused_over_cap.fetch_add(1, Ordering::Relaxed);
            if let Some(line) = refusals.occurred(Instant::now(), SUMMARY_INTERVAL) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    n_refused = line.n_events(),
                    "Refusing connections: the connection cap is reached and every connection is in use."
                );
            }
            drop(stream);
            continue;
        };
        if let Some(line) = refusals.ended(Instant::now(), SUMMARY_INTERVAL) {
            tracing::info!(
                n_refused = line.n_events(),
                "Connections are accepted again: below the connection cap."
            );
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (entry, evicted) = tracked.add();
        let started = Arc::clone(&entry.in_flight);
        let finished = Arc::clone(&entry.in_flight);
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request(
                    move |request: axum::extract::Request<hyper::body::Incoming>| {
                        started.fetch_add(1, Ordering::Relaxed);
                        request
                    },
                )
                .map_response(move |response: axum::response::Response| {
                    finished.fetch_sub(1, Ordering::Relaxed);
                    response
                })
                .service(app.clone()),
        );
        let tracked_for_task = Arc::clone(&tracked);
        let mut cut_now = cut_signal.clone();
        let Some(tls) = &tls else {
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                tokio::select! {
                    _ = connection => {}
                    () = evicted.notified() => {}
                    _ = cut_now.changed() => {}
                }
                tracked_for_task.remove(entry.id);
                drop(slot);
            });
            continue;
        };
        // The handshake gets the header-read timeout too, so that a client
        // that never finishes it cannot hold a connection.
        let handshake = tokio::time::timeout(limits.header_read_timeout, tls.accept(stream));
        let watcher = graceful.watcher();
        let http = http.clone();
        tokio::spawn(async move {
            let served = async {
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let connection =
                            watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                        let _ = connection.await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(error = %error, "A TLS handshake failed.");
                    }
                    Err(_) => tracing::debug!("A TLS handshake timed out."),
                }
            };
            tokio::select! {
                () = served => {}
                () = evicted.notified() => {}
                _ = cut_now.changed() => {}
            }
            tracked_for_task.remove(entry.id);
            drop(slot);
        });
    };
    drop(listener);
    let open = limits.max_connections.max(1) - slots.available_permits();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            let still_open = limits.max_connections.max(1) - slots.available_permits();
            let _ = cut.send(true);
            stats.cut_at_shutdown.fetch_add(still_open as u64, Ordering::Relaxed);
            tracing::warn!(
                still_open,
                open_at_shutdown = open,
                grace_secs = grace.as_secs(),
                "Cutting the connections still open after the shutdown grace period."
            );
        }
    }
}

/// How long an accepted connection waits for the slot of the connection
/// evicted for it.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// How long a connection is spared from eviction after it opens.
const EVICTION_MIN_AGE: Duration = Duration::from_secs(1);

/// The open connections, oldest first, each with whether it has sent a
/// request, so that at the cap the oldest silent one can be closed.
#[derive(Default)]
struct Tracked {
    next_id: AtomicU64,
    open: std::sync::Mutex<std::collections::VecDeque<Arc<Connection>>>,
}

/// One open connection.
struct Connection {
    id: u64,
    opened: Instant,
    /// Requests being handled now; 0 between requests and before the first.
    in_flight: Arc<AtomicU64>,
    evict: Arc<tokio::sync::Notify>,
}

impl Tracked {
    /// Registers a new connection; returns it and what tells its task to
    /// close it.
    fn add(&self) -> (Arc<Connection>, Arc<tokio::sync::Notify>) {
        let evict = Arc::new(tokio::sync::Notify::new());
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            opened: Instant::now(),
            in_flight: Arc::new(AtomicU64::new(0)),
            evict: Arc::clone(&evict),
        });
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(Arc::clone(&connection));
        (connection, evict)
    }

    fn remove(&self, id: u64) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(position) = open.iter().position(|connection| connection.id == id) {
            open.remove(position);
        }
    }

    /// Tells the oldest connection with no request in flight (idle, or
    /// still sending its head) and open for at least [`EVICTION_MIN_AGE`]
    /// to close; whether there was one. The age spares a connection that
    /// just arrived (a TLS handshake, a head on its way).
    fn evict_oldest_silent(&self) -> bool {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(position) = open.iter().position(|connection| {
            connection.in_flight.load(Ordering::Relaxed) == 0
                && connection.opened.elapsed() >= EVICTION_MIN_AGE
        }) else {
            return false;
        };
        if let Some(connection) = open.remove(position) {
            connection.evict.notify_one();
        }
        true
    }
}
