//! Run with: `cargo run --release -p cohort-import --example braze_sink -- [--port N] [--threads N] [--max-requests N] [--window-ms MS] [--delay-ms MS]`
//!
//! A local stand-in for Braze's `/users/track`, for `cargo xtask bench
//! cohorts` and manual tests. It listens on 127.0.0.1 only (`--port 0`,
//! the default, picks a free port) and prints `listening on
//! 127.0.0.1:PORT` on stdout, so that a harness can read the port.
//!
//! `POST /users/track` takes `{"attributes":[…]}` with at most 75 objects
//! (a body that is not such JSON, or holds more, gets 400) and answers 201
//! `{"message":"success","attributes_processed":N}`. It enforces Braze's
//! rate limit by arrival time (when the request's head is read): at most
//! `--max-requests` (3,000) requests within any rolling `--window-ms`
//! (3,000 ms); every request beyond it is counted as a violation and
//! answered 429 with `X-Ratelimit-Retry-After: 1`. Every arrival counts in
//! the window, refused or not. For each `external_id` it notes the arrival
//! time (UNIX milliseconds) of the first object that added a value to an
//! array attribute (`"<attribute>": {"add": [...]}`). With `--delay-ms`,
//! each accepted request is answered that much later, like a Braze a
//! network away. Credentials are not checked.
//!
//! `GET /stats` returns the totals as JSON: `requests`, `objects`,
//! `rejected_429`, `bad_requests`, `max_requests_in_any_3s_window` (in any
//! window of `--window-ms`), `ids` (external ids seen added),
//! `first_arrival_ms` and `last_arrival_ms`. `GET /arrivals` returns
//! `{"<external_id>": ms, …}`; `GET /arrivals?prefix=P` only the ids that
//! start with `P`. `POST /shutdown` stops the sink, which then prints its
//! totals.

use std::collections::{HashMap, VecDeque};
use std::error::Error;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;

/// Braze's cap on attribute objects per `/users/track` request.
const MAX_OBJECTS: usize = 75;

/// The largest body read.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

struct Options {
    port: u16,
    threads: Option<usize>,
    max_requests: usize,
    window: Duration,
    delay: Duration,
}

fn parse_args() -> Result<Options, Box<dyn Error>> {
    const USAGE: &str = "usage: braze_sink [--port N] [--threads N] [--max-requests N] [--window-ms MS] [--delay-ms MS]";
    let mut options = Options {
        port: 0,
        threads: None,
        max_requests: 3000,
        window: Duration::from_secs(3),
        delay: Duration::ZERO,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--port" => options.port = value()?.parse()?,
            "--threads" => options.threads = Some(value()?.parse()?),
            "--max-requests" => options.max_requests = value()?.parse::<usize>()?.max(1),
            "--window-ms" => options.window = Duration::from_millis(value()?.parse()?),
            "--delay-ms" => options.delay = Duration::from_millis(value()?.parse()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}").into()),
        }
    }
    Ok(options)
}

/// What the sink has seen.
#[derive(Default)]
struct Totals {
    /// `/users/track` requests received, accepted or not.
    requests: AtomicU64,
    /// Attribute objects in accepted requests.
    objects: AtomicU64,
    /// Requests refused for the rate limit.
    rejected_429: AtomicU64,
    /// Requests refused as malformed.
    bad_requests: AtomicU64,
}

/// When each external id was first added, and the earliest and latest of
/// those times.
#[derive(Default)]
struct Added {
    by_id: HashMap<String, u64>,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
}

/// Arrival times of the requests within the last window, oldest first.
struct Window {
    arrivals: VecDeque<Instant>,
    max_in_window: usize,
}

struct Sink {
    totals: Totals,
    max_requests: usize,
    window_length: Duration,
    /// How long each accepted request waits for its answer.
    delay: Duration,
    window: Mutex<Window>,
    /// First arrival (UNIX ms) of an object adding a value, per external id.
    added: Mutex<Added>,
    shutdown: Notify,
}

impl Sink {
    /// Counts an arrival at `now`; whether it is within the limit.
    fn admit(&self, now: Instant) -> bool {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        while window
            .arrivals
            .front()
            .is_some_and(|&oldest| oldest + self.window_length <= now)
        {
            window.arrivals.pop_front();
        }
        window.arrivals.push_back(now);
        let in_window = window.arrivals.len();
        window.max_in_window = window.max_in_window.max(in_window);
        in_window <= self.max_requests
    }

    fn stats(&self) -> Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let totals = &self.totals;
        let max_window = self
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .max_in_window;
        let added = self.added.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::json!({
            "requests": get(&totals.requests),
            "objects": get(&totals.objects),
            "rejected_429": get(&totals.rejected_429),
            "bad_requests": get(&totals.bad_requests),
            "max_requests_in_any_3s_window": max_window,
            "ids": added.by_id.len(),
            "first_arrival_ms": added.first_ms,
            "last_arrival_ms": added.last_ms,
        })
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = parse_args()?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = options.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(serve(options))
}

async fn serve(options: Options) -> Result<(), Box<dyn Error>> {
    let sink = Arc::new(Sink {
        totals: Totals::default(),
        max_requests: options.max_requests,
        window_length: options.window,
        delay: options.delay,
        window: Mutex::new(Window {
            arrivals: VecDeque::with_capacity(options.max_requests + 1),
            max_in_window: 0,
        }),
        added: Mutex::new(Added::default()),
        shutdown: Notify::new(),
    });
    let app = Router::new()
        .route("/users/track", post(track))
        .route("/stats", get(stats))
        .route("/arrivals", get(arrivals))
        .route("/shutdown", post(shutdown))
        .with_state(Arc::clone(&sink));
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port))).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", listener.local_addr()?)?;
        stdout.flush()?;
    }
    let stopping = Arc::clone(&sink);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopping.shutdown.notified().await })
        .await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "totals {}", sink.stats())?;
    stdout.flush()?;
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[derive(Deserialize)]
struct TrackBody {
    #[serde(default)]
    attributes: Vec<Map<String, Value>>,
}

/// `POST /users/track`.
async fn track(State(sink): State<Arc<Sink>>, request: Request) -> Response {
    // Arrival: the head has been read; the body has not.
    let arrived = Instant::now();
    let arrived_ms = unix_ms();
    sink.totals.requests.fetch_add(1, Ordering::Relaxed);
    if !sink.admit(arrived) {
        sink.totals.rejected_429.fetch_add(1, Ordering::Relaxed);
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &serde_json::json!({"message": "Too Many Requests"}),
        );
        response.headers_mut().insert(
            "x-ratelimit-retry-after",
            header::HeaderValue::from_static("1"),
        );
        return response;
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => return bad_request(&sink, &format!("cannot read the body: {error}")),
    };
    let body: TrackBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return bad_request(&sink, &format!("not a /users/track body: {error}")),
    };
    if body.attributes.len() > MAX_OBJECTS {
        return bad_request(
            &sink,
            &format!(
                "{} attribute objects; at most {MAX_OBJECTS}",
                body.attributes.len()
            ),
        );
    }
    let n_objects = body.attributes.len();
    sink.totals
        .objects
        .fetch_add(n_objects as u64, Ordering::Relaxed);
    {
        let mut added = sink.added.lock().unwrap_or_else(PoisonError::into_inner);
        for object in body.attributes {
            let Some(Value::String(id)) = object.get("external_id") else {
                continue;
            };
            let adds = object.values().any(|value| {
                value
                    .get("add")
                    .and_then(Value::as_array)
                    .is_some_and(|values| !values.is_empty())
            });
            if adds && !added.by_id.contains_key(id) {
                added.by_id.insert(id.clone(), arrived_ms);
                added.first_ms = Some(added.first_ms.map_or(arrived_ms, |ms| ms.min(arrived_ms)));
                added.last_ms = Some(added.last_ms.map_or(arrived_ms, |ms| ms.max(arrived_ms)));
            }
        }
    }
    if !sink.delay.is_zero() {
        tokio::time::sleep(sink.delay).await;
    }
    json_response(
        StatusCode::CREATED,
        &serde_json::json!({"message": "success", "attributes_processed": n_objects}),
    )
}

fn bad_request(sink: &Sink, message: &str) -> Response {
    sink.totals.bad_requests.fetch_add(1, Ordering::Relaxed);
    json_response(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"message": message}),
    )
}

async fn stats(State(sink): State<Arc<Sink>>) -> Response {
    json_response(StatusCode::OK, &sink.stats())
}

/// `GET /arrivals[?prefix=P]`: `{"<external_id>": ms, …}`.
async fn arrivals(State(sink): State<Arc<Sink>>, request: Request) -> Response {
    let prefix = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("prefix="))
        .unwrap_or("")
        .to_owned();
    let added = sink.added.lock().unwrap_or_else(PoisonError::into_inner);
    let selected: Map<String, Value> = added
        .by_id
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        .map(|(id, &ms)| (id.clone(), Value::from(ms)))
        .collect();
    drop(added);
    json_response(StatusCode::OK, &Value::Object(selected))
}

async fn shutdown(State(sink): State<Arc<Sink>>) -> Response {
    sink.shutdown.notify_one();
    json_response(StatusCode::OK, &serde_json::json!({"status": "OK"}))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body.to_string()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(max_requests: usize) -> Sink {
        Sink {
            totals: Totals::default(),
            max_requests,
            window_length: Duration::from_secs(3),
            delay: Duration::ZERO,
            window: Mutex::new(Window {
                arrivals: VecDeque::new(),
                max_in_window: 0,
            }),
            added: Mutex::new(Added::default()),
            shutdown: Notify::new(),
        }
    }

    #[test]
    fn admits_at_most_the_limit_in_any_rolling_window() {
        let sink = sink(3);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(sink.admit(at(0)));
        assert!(sink.admit(at(1000)));
        assert!(sink.admit(at(2000)));
        assert!(!sink.admit(at(2999)), "the fourth within 3 s");
        // Only 0 has left the window at 3500, and refused arrivals count.
        assert!(!sink.admit(at(3500)));
        assert!(sink.admit(at(5000)));
        let window = sink.window.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(window.max_in_window, 4);
    }
}
