//! `cargo xtask bench memory`: `serve`'s peak memory (RSS) with its default
//! limits, under the worst load those limits let through, all at once:
//!
//! - a **connection flood**: `--flood` connections (default 8,000, near
//!   `ingest.max_connections`), each sending a request head of 15,000 bytes
//!   that never ends, so that each fills its read buffer; cut ones (the
//!   header timeout, evictions) are opened again at once;
//! - **largest bodies**: `--senders` keep-alive connections (default 16)
//!   posting, authenticated, batches as large as `ingest.max_body_bytes`
//!   allows, back to back; the spool fills up (then 503), and each body is
//!   still read whole first;
//! - **the costliest delivery**: the batches are built to make mapping
//!   expensive (1,000 custom events a batch from `currents_model::synthetic`,
//!   each padded with about 2,000 one-character custom properties, which the
//!   `[Custom event property] ` prefix makes four times larger), delivered to
//!   a loopback `/import` sink by the default 4 workers.
//!
//! It builds the release binary and the sink, starts `serve` with nothing
//! but its address, data dir, token and Mixpanel sink set, polls `VmHWM`
//! every 5 ms for `--seconds` (default 60), and prints the peak beside the
//! bound `docs/configuration.md` states. It fails if the peak is over it.
//!
//! ```text
//! cargo xtask bench memory [--seconds S] [--flood N] [--senders K]
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use currents_model::{EventType, synthetic};

use super::ingest::{Server, exchange, free_port};
use crate::bench_import::{Sink, http, say, target_dir, vm_hwm_bytes};

const USAGE: &str = "usage: cargo xtask bench memory [--seconds S] [--flood N] [--senders K]";
const CURRENTS_TOKEN: &str = "bench-memory-currents-token";
/// `ingest.max_body_bytes`'s default.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The worst-case RSS `docs/configuration.md` states for the defaults.
const STATED_BOUND_BYTES: u64 = 1024 * 1024 * 1024;
/// Bytes of each flood connection's endless head: under hyper's 16 KiB
/// read buffer, so that it is held, not refused.
const FLOOD_HEAD_BYTES: usize = 15_000;

#[derive(Debug, PartialEq)]
struct Options {
    seconds: u64,
    flood: usize,
    senders: usize,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut options = Options {
        seconds: 60,
        flood: 8000,
        senders: 16,
    };
    let mut args = args.iter().copied().skip_while(|arg| *arg == "--");
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg {
            "--seconds" => options.seconds = value()?.parse().context(USAGE)?,
            "--flood" => options.flood = value()?.parse().context(USAGE)?,
            "--senders" => options.senders = value()?.parse().context(USAGE)?,
            _ => bail!("unexpected argument {arg:?}\n{USAGE}"),
        }
    }
    Ok(options)
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    let release = crate::bench_import::build_release_binaries()?;
    let sink = Sink::start(&release.join("examples").join("import_sink"))?;
    let data_dir = target_dir()
        .join("bench")
        .join(format!("memory-data-{}", std::process::id()));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    let address = format!("127.0.0.1:{}", free_port()?);
    let ops_address = format!("127.0.0.1:{}", free_port()?);
    let mut server = Server::start(
        &release.join("braze-mixpanel-bridge"),
        &[
            ("BRIDGE_LISTEN", &address),
            ("BRIDGE_OPS_LISTEN", &ops_address),
            ("BRIDGE_DATA_DIR", &data_dir.to_string_lossy()),
            ("BRIDGE_CURRENTS_TOKENS", CURRENTS_TOKEN),
            ("MIXPANEL_API_URL", &format!("http://{}", sink.address)),
            ("MIXPANEL_PROJECT_TOKEN", "bench-token"),
        ],
        &ops_address,
    )?;
    let pid = server.child.id();
    let idle_rss = vm_hwm_bytes(pid).unwrap_or(0);
    say(&format!(
        "serve ready on {address} (pid {pid}, {:.0} MiB at rest); {} s of {} flood connections and {} senders of {:.1} MiB batches",
        mib(idle_rss),
        options.seconds,
        options.flood,
        options.senders,
        mib(costly_batch().len() as u64),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, peak_rss) = (Arc::clone(&stop), Arc::clone(&peak_rss));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(hwm) = vm_hwm_bytes(pid) {
                    peak_rss.fetch_max(hwm, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let flood_stats = Arc::new(FloodStats::default());
    let flooders: Vec<_> = (0..4)
        .map(|thread| {
            let n = options.flood / 4 + usize::from(thread < options.flood % 4);
            let (stop, address, stats) =
                (Arc::clone(&stop), address.clone(), Arc::clone(&flood_stats));
            std::thread::spawn(move || flood(&address, n, &stop, &stats))
        })
        .collect();
    let request = Arc::new(costly_request());
    let statuses = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let senders: Vec<_> = (0..options.senders)
        .map(|_| {
            let (stop, address, request, statuses) = (
                Arc::clone(&stop),
                address.clone(),
                Arc::clone(&request),
                Arc::clone(&statuses),
            );
            std::thread::spawn(move || send(&address, &request, &stop, &statuses))
        })
        .collect();

    let started = Instant::now();
    let end = started + Duration::from_secs(options.seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(10).min(end - Instant::now()));
        let status = http(&ops_address, "GET", "/status").unwrap_or_default();
        say(&format!(
            "{:>4.0} s: peak {:.0} MiB, {} flood connections open, {}",
            started.elapsed().as_secs_f64(),
            mib(peak_rss.load(Ordering::Relaxed)),
            flood_stats.open.load(Ordering::Relaxed),
            spool_summary(&status),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in senders.into_iter().chain(flooders) {
        let _ = thread.join();
    }
    let metrics = http(&ops_address, "GET", "/metrics").unwrap_or_default();
    let _ = poller.join();
    let stopped = server.stop();
    sink.stop()?;
    let peak = peak_rss.load(Ordering::Relaxed);

    let mut report = String::new();
    let _ = writeln!(
        report,
        "\n## serve's peak memory under the worst load of its default limits\n"
    );
    let _ = writeln!(report, "| | |\n|---|---|");
    let _ = writeln!(
        report,
        "| load | {} s; {} flood connections ({FLOOD_HEAD_BYTES}-byte endless heads, {} opened in all); {} senders of {:.1} MiB batches |",
        options.seconds,
        options.flood,
        flood_stats.opened.load(Ordering::Relaxed),
        options.senders,
        mib(request.len() as u64)
    );
    let answers: Vec<String> = statuses
        .lock()
        .map(|statuses| {
            statuses
                .iter()
                .map(|(status, n)| format!("{status}: {n}"))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        report,
        "| answers to the senders | {} |",
        answers.join(", ")
    );
    for name in [
        "bridge_delivery_delivered_events_total",
        "bridge_listener_connections_total{outcome=\"evicted_silent\"}",
        "bridge_listener_connections_total{outcome=\"refused_over_cap\"}",
    ] {
        let value = metrics
            .lines()
            .filter(|line| line.starts_with(name.split('{').next().unwrap_or(name)))
            .filter(|line| !name.contains('{') || line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        let _ = writeln!(report, "| `{name}` | {value:.0} |");
    }
    let _ = writeln!(report, "| RSS at rest | {:.0} MiB |", mib(idle_rss));
    let _ = writeln!(
        report,
        "| **peak RSS (VmHWM)** | **{:.0} MiB** |",
        mib(peak)
    );
    let _ = writeln!(
        report,
        "| stated bound (docs/configuration.md) | {:.0} MiB |",
        mib(STATED_BOUND_BYTES)
    );
    say(&report);
    if let Err(error) = stopped {
        say(&format!("WARNING: {error}"));
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    ensure!(
        peak <= STATED_BOUND_BYTES,
        "peak RSS {:.0} MiB is over the stated bound of {:.0} MiB",
        mib(peak),
        mib(STATED_BOUND_BYTES)
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The spool's batches and bytes from `/status`, for progress lines.
fn spool_summary(status: &str) -> String {
    let number = |key: &str| crate::bench_import::json_number(status, key).unwrap_or(0);
    format!(
        "spool {} batches, {:.0} MiB",
        number("batches"),
        mib(number("bytes"))
    )
}

/// A batch as costly to hold and map as the default limits allow: just
/// under `ingest.max_body_bytes`, 1,000 events (the event cap), custom
/// events from the workspace's generator (`currents_model::synthetic`),
/// every optional field written, padded with one-character custom
/// properties up to their share of the body.
fn costly_batch() -> String {
    const EVENTS: usize = 1000;
    // At most this long, so that the events, their commas and the envelope
    // stay under the cap.
    let most = (MAX_BODY_BYTES - 64) / EVENTS - 1;
    let config = synthetic::Config::new(20_241_202)
        .mix(synthetic::Mix::only(EventType::BehaviorsCustomEvent))
        .external_ids(100)
        .optional_fields(100)
        .custom_properties(0..=0)
        .size_band(most - 16, most)
        .padding(true);
    synthetic::Generator::new(config).envelope(EVENTS)
}

/// The whole HTTP request for [`costly_batch`].
fn costly_request() -> Vec<u8> {
    let body = costly_batch();
    let mut request = format!(
        "POST /currents HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {CURRENTS_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    request
}

/// Posts `request` on one keep-alive connection until `stop`, counting the
/// answers by status (and connection errors).
fn send(address: &str, request: &[u8], stop: &AtomicBool, statuses: &Mutex<BTreeMap<String, u64>>) {
    let mut response = Vec::new();
    let mut stream: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let connection = match stream.as_mut() {
            Some(connection) => connection,
            None => match TcpStream::connect(address) {
                Ok(connection) => stream.insert(connection),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let outcome = match exchange(connection, request, &mut response) {
            Ok((status, keep_alive)) => {
                if !keep_alive {
                    stream = None;
                }
                status.to_string()
            }
            Err(_) => {
                stream = None;
                "connection error".to_owned()
            }
        };
        if let Ok(mut statuses) = statuses.lock() {
            *statuses.entry(outcome).or_default() += 1;
        }
    }
}

#[derive(Default)]
struct FloodStats {
    /// Connections open now, over all flood threads.
    open: AtomicU64,
    opened: AtomicU64,
}

/// Keeps `n` connections open with an endless request head each, opening
/// again those the server closes, until `stop`.
fn flood(address: &str, n: usize, stop: &AtomicBool, stats: &FloodStats) {
    let mut head = b"POST /currents HTTP/1.1\r\nHost: bench\r\nX-Padding: ".to_vec();
    head.resize(FLOOD_HEAD_BYTES, b'a');
    let open = |stats: &FloodStats| -> Option<TcpStream> {
        let mut stream = TcpStream::connect(address).ok()?;
        stream.write_all(&head).ok()?;
        stream.set_nonblocking(true).ok()?;
        stats.opened.fetch_add(1, Ordering::Relaxed);
        Some(stream)
    };
    let mut streams: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut buffer = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        for slot in &mut streams {
            let closed = match slot.as_mut() {
                None => true,
                Some(stream) => match stream.read(&mut buffer) {
                    Ok(_) => true,
                    Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
                },
            };
            if closed {
                if slot.take().is_some() {
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                }
                *slot = open(stats);
                if slot.is_some() {
                    stats.open.fetch_add(1, Ordering::Relaxed);
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_costly_batch_is_as_large_as_ingest_allows() {
        let body = costly_batch();
        assert!(body.len() <= MAX_BODY_BYTES, "{}", body.len());
        assert!(body.len() > MAX_BODY_BYTES - 64 * 1024, "{}", body.len());
        assert_eq!(body.matches("\"event_type\"").count(), 1000);
        assert!(body.starts_with("{\"events\":[{") && body.ends_with("}}}]}"));
        // Each event is mostly one-character custom properties.
        let properties = body.matches(":1,").count() / 1000;
        assert!((1_800..=2_200).contains(&properties), "{properties}");
    }
}
