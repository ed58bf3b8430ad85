//! A local stand-in for Mixpanel's `/import`, for benchmarks and manual tests.
//!
//! Run with: cargo run --release -p mixpanel-client --example import_sink -- [--port N]
//!
//! It listens on 127.0.0.1 only (`--port 0`, the default, picks a free port)
//! and prints `listening on 127.0.0.1:PORT` on stdout, so that a harness can
//! read the port. `POST /import` answers like Mixpanel: the body, inflated
//! when sent with `Content-Encoding: gzip`, must be a JSON array of at most
//! 2000 event objects and at most 10 MiB (`--max-body-bytes`); it is parsed
//! for real, and a body that is not valid is refused with
//! `{"code":400,"error":…}`; otherwise the answer is
//! `{"code":200,"num_records_imported":N,"status":"OK"}`. Credentials and
//! query parameters are not checked.
//!
//! `GET /stats` returns the totals as JSON (events, requests, bytes); they
//! are also printed when the sink exits, on Ctrl-C, SIGTERM or
//! `POST /shutdown`. `--threads N` sets the async worker threads.

use std::error::Error;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use tokio::sync::Notify;

/// Mixpanel's cap on events per `/import` request.
const MAX_EVENTS: usize = 2000;

struct Options {
    port: u16,
    threads: Option<usize>,
    max_body_bytes: usize,
}

fn parse_args() -> Result<Options, Box<dyn Error>> {
    const USAGE: &str = "usage: import_sink [--port N] [--threads N] [--max-body-bytes N]";
    let mut options = Options {
        port: 0,
        threads: None,
        max_body_bytes: 10 * 1024 * 1024,
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
            "--max-body-bytes" => options.max_body_bytes = value()?.parse()?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}").into()),
        }
    }
    Ok(options)
}

/// What the sink has seen.
#[derive(Default)]
struct Totals {
    /// Events imported (in accepted requests).
    events: AtomicU64,
    /// `/import` requests received, accepted or not.
    requests: AtomicU64,
    /// Requests refused (400 or 413).
    rejected: AtomicU64,
    /// Of the requests, those sent gzip-compressed.
    gzip_requests: AtomicU64,
    /// Request body bytes as received.
    bytes_received: AtomicU64,
    /// Request body bytes after inflating.
    bytes_inflated: AtomicU64,
}

struct Sink {
    totals: Totals,
    max_body_bytes: usize,
    started: Instant,
    shutdown: Notify,
}

impl Sink {
    fn stats(&self) -> serde_json::Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let totals = &self.totals;
        serde_json::json!({
            "events": get(&totals.events),
            "requests": get(&totals.requests),
            "rejected": get(&totals.rejected),
            "gzip_requests": get(&totals.gzip_requests),
            "bytes_received": get(&totals.bytes_received),
            "bytes_inflated": get(&totals.bytes_inflated),
            "uptime_secs": self.started.elapsed().as_secs_f64(),
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
        max_body_bytes: options.max_body_bytes,
        started: Instant::now(),
        shutdown: Notify::new(),
    });
    let app = Router::new()
        .route("/import", post(import))
        .route("/stats", get(stats))
        .route("/shutdown", post(shutdown))
        // Room for a compressed body a little larger than its content.
        .layer(DefaultBodyLimit::max(
            options.max_body_bytes.saturating_mul(2),
        ))
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
        .with_graceful_shutdown(async move {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM can be handled");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
                () = stopping.shutdown.notified() => {}
            }
        })
        .await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "totals {}", sink.stats())?;
    stdout.flush()?;
    Ok(())
}

async fn stats(State(sink): State<Arc<Sink>>) -> Response {
    json_response(StatusCode::OK, &sink.stats())
}

async fn shutdown(State(sink): State<Arc<Sink>>) -> Response {
    sink.shutdown.notify_one();
    json_response(StatusCode::OK, &serde_json::json!({"status": "OK"}))
}

async fn import(State(sink): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> Response {
    let totals = &sink.totals;
    totals.requests.fetch_add(1, Ordering::Relaxed);
    totals
        .bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    match accept(&sink, &headers, &body) {
        Ok(n_events) => {
            totals.events.fetch_add(n_events as u64, Ordering::Relaxed);
            json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "code": 200,
                    "num_records_imported": n_events,
                    "status": "OK",
                }),
            )
        }
        Err((status, error)) => {
            totals.rejected.fetch_add(1, Ordering::Relaxed);
            json_response(
                status,
                &serde_json::json!({
                    "code": status.as_u16(),
                    "error": error,
                    "status": status.canonical_reason().unwrap_or("Error"),
                }),
            )
        }
    }
}

/// Checks one `/import` body; the number of events it holds.
fn accept(sink: &Sink, headers: &HeaderMap, body: &[u8]) -> Result<usize, (StatusCode, String)> {
    let bad_request = |error: String| (StatusCode::BAD_REQUEST, error);
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} bytes uncompressed",
                sink.max_body_bytes
            ),
        )
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase());
    let inflated;
    let json: &[u8] = match encoding.as_deref() {
        None | Some("" | "identity") => body,
        Some("gzip") => {
            sink.totals.gzip_requests.fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::with_capacity(body.len().saturating_mul(5).min(sink.max_body_bytes));
            flate2::read::MultiGzDecoder::new(body)
                .take(sink.max_body_bytes as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|error| bad_request(format!("cannot decompress the body: {error}")))?;
            inflated = out;
            &inflated
        }
        Some(other) => return Err(bad_request(format!("unsupported Content-Encoding {other}"))),
    };
    if json.len() > sink.max_body_bytes {
        return Err(too_large());
    }
    sink.totals
        .bytes_inflated
        .fetch_add(json.len() as u64, Ordering::Relaxed);
    let events: Vec<AnyObject> = serde_json::from_slice(json)
        .map_err(|error| bad_request(format!("body is not a JSON array of events: {error}")))?;
    if events.len() > MAX_EVENTS {
        return Err(bad_request(format!(
            "{} events in one request; the limit is {MAX_EVENTS}",
            events.len()
        )));
    }
    Ok(events.len())
}

/// Any JSON object, checked for syntax and thrown away.
struct AnyObject;

impl<'de> serde::Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AnyObject, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> Sink {
        Sink {
            totals: Totals::default(),
            max_body_bytes: 1000,
            started: Instant::now(),
            shutdown: Notify::new(),
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("writing to a Vec succeeds");
        encoder.finish().expect("writing to a Vec succeeds")
    }

    #[test]
    fn counts_events_plain_and_gzip() {
        let sink = sink();
        let body = br#"[{"event":"a","properties":{"x":[1,{"y":null}]}},{"event":"b"}]"#;
        assert_eq!(accept(&sink, &HeaderMap::new(), body), Ok(2));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().expect("valid"));
        assert_eq!(accept(&sink, &headers, &gzip(body)), Ok(2));
        assert_eq!(accept(&sink, &headers, &gzip(b"[]")), Ok(0));
    }

    #[test]
    fn refuses_what_mixpanel_refuses() {
        let sink = sink();
        let plain = HeaderMap::new();
        for body in [
            &b"[{\"event\":\"a\"},"[..],
            b"{\"event\":\"a\"}",
            b"[1]",
            b"[{}] x",
        ] {
            let refused = accept(&sink, &plain, body).expect_err("refused");
            assert_eq!(refused.0, StatusCode::BAD_REQUEST);
        }
        let mut gzipped = HeaderMap::new();
        gzipped.insert(header::CONTENT_ENCODING, "gzip".parse().expect("valid"));
        let refused = accept(&sink, &gzipped, b"[{}]").expect_err("not gzip");
        assert_eq!(refused.0, StatusCode::BAD_REQUEST);
        let large = format!("[{}]", vec!["{}"; 600].join(","));
        let refused = accept(&sink, &gzipped, &gzip(large.as_bytes())).expect_err("too large");
        assert_eq!(refused.0, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
