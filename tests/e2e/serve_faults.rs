//! `serve` under faults, end to end: a Mixpanel that is down, rate-limits,
//! refuses single records or credentials; a spool that fills up, and one
//! whose storage fails; hostile request bodies; and logs that must never
//! carry a secret.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{self, TempDir};
use crate::serve::{
    Server, TOKEN, batch, event, events_in, free_port, get, post_batch, start_through, start_with,
    wait_for,
};

/// Fast retries, so that a fault costs seconds, not minutes. The lease rule
/// holds: (10 + 1) × 5 + 10 × 1 = 65 ≤ 600.
pub(crate) const FAST_RETRIES: [(&str, &str); 4] = [
    ("BRIDGE_DELIVERY_RETRY_INITIAL_BACKOFF_SECS", "1"),
    ("BRIDGE_DELIVERY_RETRY_MAX_BACKOFF_SECS", "1"),
    ("BRIDGE_DELIVERY_MAX_RETRIES", "10"),
    ("BRIDGE_DELIVERY_REQUEST_TIMEOUT_SECS", "5"),
];

/// A raw HTTP/1.1 exchange: the status, the header block and the body.
/// Status 0 when the server closed the connection without an answer.
fn raw(address: &str, head: &str, body: &[u8], close_write: bool) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before reading the whole body.
    let _ = stream.write_all(body);
    if close_write {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (headers, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, headers.to_owned(), body.to_owned())
}

fn post_head(length: usize, extra: &str) -> String {
    format!(
        "POST /currents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{extra}Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

fn post_raw(address: &str, body: &[u8], extra: &str) -> (u16, String, String) {
    raw(address, &post_head(body.len(), extra), body, false)
}

pub(crate) fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|idx| format!("{prefix}-{idx}")).collect()
}

/// `/status` once `done` holds for it: the bridge counts a delivery only
/// after it has read Mixpanel's answer, a moment after Mixpanel recorded
/// the request.
pub(crate) async fn wait_for_status(
    address: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, status) = get_async(address, "/status").await;
        let status: Value = serde_json::from_str(&status).unwrap();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The insert ids Mixpanel has answered 200 for.
pub(crate) type Imported = Arc<Mutex<BTreeSet<String>>>;

pub(crate) async fn wait_delivered(
    imported: &Imported,
    expected: &BTreeSet<String>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<String> = expected
            .difference(&imported.lock().unwrap())
            .cloned()
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} events never reached Mixpanel, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A 200 for the whole request, its insert ids recorded as imported.
/// Mounts an `/import` that answers 503 until `up` is set, then imports
/// (recording each `$insert_id`).
async fn mount_down_until_up(mixpanel: &MockServer) -> (Imported, Arc<AtomicBool>) {
    let imported = Imported::default();
    let up = Arc::new(AtomicBool::new(false));
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let up = Arc::clone(&up);
            let imported = Arc::clone(&imported);
            move |request: &Request| {
                if up.load(Ordering::SeqCst) {
                    ok_body(request, &imported)
                } else {
                    ResponseTemplate::new(503)
                }
            }
        })
        .mount(mixpanel)
        .await;
    (imported, up)
}

pub(crate) fn ok_body(request: &Request, imported: &Imported) -> ResponseTemplate {
    let events = events_in(request);
    let mut imported = imported.lock().unwrap();
    for event in &events {
        imported.insert(
            event["properties"]["$insert_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ResponseTemplate::new(200)
        .set_body_json(json!({"code": 200, "num_records_imported": events.len()}))
}

pub(crate) async fn start_async(data_dir: &Path, uri: &str, env: &[(&str, &str)]) -> Server {
    let data_dir = data_dir.to_owned();
    let uri = uri.to_owned();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        start_with(&data_dir, free_port(), Some(&uri), &env)
    })
    .await
    .unwrap()
}

pub(crate) async fn post_async(address: &str, body: String) -> (u16, String) {
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || post_batch(&address, &body).unwrap())
        .await
        .unwrap()
}

pub(crate) async fn get_async(address: &str, target: &'static str) -> (u16, String) {
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || get(&address, target).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixpanel_outage_then_recovery() {
    const FAILURES: usize = 4;
    let mixpanel = MockServer::start().await;
    let imported = Imported::default();
    let seen = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let seen = Arc::clone(&seen);
            let imported = Arc::clone(&imported);
            move |request: &Request| {
                if seen.fetch_add(1, Ordering::SeqCst) < FAILURES {
                    ResponseTemplate::new(503).set_body_string("down for maintenance")
                } else {
                    ok_body(request, &imported)
                }
            }
        })
        .mount(&mixpanel)
        .await;
    let dir = TempDir::new("serve-outage");
    let server = start_async(&dir.join("data"), &mixpanel.uri(), &FAST_RETRIES).await;

    let mut expected = BTreeSet::new();
    for batch_idx in 0..3 {
        let ids = ids(&format!("out{batch_idx}"), 10);
        let (status, body) = post_async(&server.address, batch(&ids)).await;
        assert_eq!(status, 200, "{body}");
        expected.extend(ids);
    }
    wait_delivered(&imported, &expected, Duration::from_secs(30)).await;
    assert!(
        seen.load(Ordering::SeqCst) > FAILURES,
        "Mixpanel answered 200 at last"
    );

    let status = wait_for_status(&server.address, Duration::from_secs(10), |status| {
        status["delivered_events"] == 30
    })
    .await;
    let (_, metrics) = get_async(&server.address, "/metrics").await;
    let retries = metrics
        .lines()
        .find_map(|line| line.strip_prefix("bridge_mixpanel_retries_total "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        status["batches_released"].as_u64().unwrap() > 0 || retries > 0.0,
        "no retry visible: {status}\n{metrics}"
    );
    assert_eq!(status["delivered_events"], 30, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_backed_off() {
    const STORM: Duration = Duration::from_secs(2);
    let mixpanel = MockServer::start().await;
    let imported = Imported::default();
    let first = Arc::new(OnceLock::<Instant>::new());
    let during_storm = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let first = Arc::clone(&first);
            let imported = Arc::clone(&imported);
            let during_storm = Arc::clone(&during_storm);
            move |request: &Request| {
                let began = *first.get_or_init(Instant::now);
                if began.elapsed() < STORM {
                    during_storm.fetch_add(1, Ordering::SeqCst);
                    ResponseTemplate::new(429).set_body_string("slow down")
                } else {
                    ok_body(request, &imported)
                }
            }
        })
        .mount(&mixpanel)
        .await;
    let dir = TempDir::new("serve-429");
    let mut env = FAST_RETRIES.to_vec();
    env.push(("BRIDGE_DELIVERY_WORKERS", "1"));
    let server = start_async(&dir.join("data"), &mixpanel.uri(), &env).await;

    let mut expected = BTreeSet::new();
    for batch_idx in 0..3 {
        let ids = ids(&format!("storm{batch_idx}"), 10);
        let (status, body) = post_async(&server.address, batch(&ids)).await;
        assert_eq!(status, 200, "{body}");
        expected.extend(ids);
    }
    wait_delivered(&imported, &expected, Duration::from_secs(30)).await;
    let stormed = during_storm.load(Ordering::SeqCst);
    // One worker, full-jitter backoff under 1 s: a handful of requests in
    // 2 s. Without any backoff it would be hundreds.
    assert!(
        (1..=25).contains(&stormed),
        "{stormed} requests during a 2 s storm of 429s"
    );
    wait_for_status(&server.address, Duration::from_secs(10), |status| {
        status["delivered_events"] == 30
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_partial_dead_letters_exactly_the_refused_records() {
    const REFUSED: &str = "part-1-3";
    let mixpanel = MockServer::start().await;
    let imported = Imported::default();
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let imported = Arc::clone(&imported);
            move |request: &Request| {
                let events = events_in(request);
                match events
                    .iter()
                    .position(|event| event["properties"]["$insert_id"] == REFUSED)
                {
                    Some(index) => ResponseTemplate::new(400).set_body_json(json!({
                        "code": 400,
                        "error": "some data points in the request failed validation",
                        "num_records_imported": events.len() - 1,
                        "status": "Bad Request",
                        "failed_records": [{"index": index, "$insert_id": REFUSED,
                            "field": "properties.time", "message": "too old"}],
                    })),
                    None => ok_body(request, &imported),
                }
            }
        })
        .mount(&mixpanel)
        .await;
    let dir = TempDir::new("serve-400-partial");
    let data_dir = dir.join("data");
    let server = start_async(&data_dir, &mixpanel.uri(), &FAST_RETRIES).await;
    for batch_idx in 0..2 {
        let (status, body) = post_async(
            &server.address,
            batch(&ids(&format!("part-{batch_idx}"), 5)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let address = server.address.clone();
    let status = tokio::task::spawn_blocking(move || {
        let mut last = Value::Null;
        wait_for("both batches settled", Duration::from_secs(30), || {
            let (_, body) = get(&address, "/status").unwrap();
            last = serde_json::from_str(&body).unwrap();
            last["batches_settled"] == 2
        });
        last
    })
    .await
    .unwrap();
    assert_eq!(status["delivered_events"], 9, "{status}");
    assert_eq!(status["dead_lettered_events"], 1, "{status}");

    let output = std::process::Command::new(harness::binary())
        .args(["dlq", "list", "--json", "--data-dir"])
        .arg(&data_dir)
        .env_remove("BRIDGE_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let entries = harness::parse_ndjson(
        &String::from_utf8(output.stdout).unwrap(),
        "dlq list --json",
    );
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["reason"], "refused_by_mixpanel", "{entries:?}");
    assert_eq!(entries[0]["event"]["id"], REFUSED, "{entries:?}");
    drop(server);
}

/// The `Retry-After` of a 503's header block.
fn retry_after_of(headers: &str) -> String {
    headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("retry-after")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("503 without Retry-After:\n{headers}"))
}

/// Sends SIGTERM and returns all the server wrote to stderr.
async fn stop(mut server: Server) -> String {
    let pid = server.child.id().to_string();
    tokio::task::spawn_blocking(move || {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        server.wait_for_stderr()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_loses_nothing_acknowledged() {
    /// Requests sent once the spool is full, all refused.
    const N_REFUSED: usize = 200;
    let started = Instant::now();
    let mixpanel = MockServer::start().await;
    let (imported, up) = mount_down_until_up(&mixpanel).await;
    let dir = TempDir::new("serve-full-spool");
    let mut env = FAST_RETRIES.to_vec();
    env.extend([
        ("BRIDGE_MAX_BODY_BYTES", "8192"),
        ("BRIDGE_SPOOL_MAX_BYTES", "16384"),
    ]);
    let server = start_async(&dir.join("data"), &mixpanel.uri(), &env).await;

    let address = server.address.clone();
    let (acknowledged, retry_after) = tokio::task::spawn_blocking(move || {
        let mut acknowledged = BTreeSet::new();
        for batch_idx in 0..200 {
            let ids = ids(&format!("full{batch_idx}"), 5);
            let body = batch(&ids);
            assert!(body.len() < 8192);
            let (status, headers, text) = post_raw(&address, body.as_bytes(), "");
            match status {
                200 => acknowledged.extend(ids),
                503 => return (acknowledged, retry_after_of(&headers)),
                other => panic!("unexpected {other}: {text}"),
            }
        }
        panic!("the spool never filled up");
    })
    .await
    .unwrap();
    // Braze keeps posting; Mixpanel is still down, so nothing frees space.
    let address = server.address.clone();
    tokio::task::spawn_blocking(move || {
        for batch_idx in 0..N_REFUSED {
            let body = batch(&ids(&format!("refused{batch_idx}"), 5));
            let (status, headers, text) = post_raw(&address, body.as_bytes(), "");
            assert_eq!(status, 503, "{text}");
            retry_after_of(&headers);
        }
    })
    .await
    .unwrap();
    assert!(!acknowledged.is_empty());
    assert!(
        retry_after.parse::<u64>().is_ok_and(|secs| secs > 0),
        "Retry-After: {retry_after}"
    );
    up.store(true, Ordering::SeqCst);
    wait_delivered(&imported, &acknowledged, Duration::from_secs(40)).await;
    // Delivery frees space: ingest accepts again.
    let address = server.address.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("ingest to accept again", Duration::from_secs(20), || {
            post_batch(&address, &batch(&ids("again", 1))).is_ok_and(|(status, _)| status == 200)
        });
    })
    .await
    .unwrap();

    // Over 200 answers 503, intended back-pressure: a warning when it
    // starts and a summary per 10 s while it lasts, not an error each.
    let stderr = stop(server).await;
    harness::assert_no_panic(&stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("ERROR"))
        .collect();
    assert!(
        !errors
            .iter()
            .any(|line| line.contains("503") || line.contains("Currents")),
        "503s logged as errors:\n{stderr}"
    );
    assert!(errors.len() * 10 < N_REFUSED, "{stderr}");
    let refusal_lines = stderr
        .lines()
        .filter(|line| {
            line.contains("refusing Currents batches") || line.contains("Refusing Currents batches")
        })
        .count();
    let max_lines = 2 + started.elapsed().as_secs() as usize / 10;
    assert!(
        (1..=max_lines).contains(&refusal_lines),
        "{refusal_lines} lines about refusals, expected 1 to {max_lines}:\n{stderr}"
    );
    // Mixpanel was down meanwhile: batch after batch failed delivery, which
    // the log reports per episode too, not per attempt.
    let delivery_lines = stderr
        .lines()
        .filter(|line| {
            line.contains("Cannot deliver a batch now") || line.contains("Still cannot deliver")
        })
        .count();
    assert!(
        delivery_lines <= max_lines,
        "{delivery_lines} lines about failed deliveries, expected at most {max_lines}:\n{stderr}"
    );
}

/// Runs the binary with the size of the files it writes capped by
/// `ulimit -f` (4096 blocks: 2 MiB in POSIX shells, 4 MiB in bash's own
/// mode), so that a write past the cap fails with `EFBIG`, which SQLite
/// reports as an I/O error: a storage failure, without root or a special
/// file system. `SIGXFSZ` would kill the process at that write; ignored
/// here, it stays ignored across `exec`.
fn capped_file_size() -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "trap '' XFSZ; ulimit -f 4096 && exec \"$@\"", "sh"])
        .arg(harness::binary());
    command
}

/// An accepted batch of 100 events of about 2 KB each.
fn big_batch(ids: &[String]) -> String {
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut event = event(id);
            event["properties"]["campaign_name"] = json!("x".repeat(2000));
            event
        })
        .collect();
    json!({ "events": events }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_spool_stops_serve_with_exit_1_and_a_restart_delivers_what_was_acknowledged() {
    let mixpanel = MockServer::start().await;
    let (imported, up) = mount_down_until_up(&mixpanel).await;
    let dir = TempDir::new("serve-spool-failure");
    let data_dir = dir.join("data");

    // Mixpanel is down, so every acknowledged batch stays in the spool,
    // which grows until a write to its WAL goes past the cap. Without
    // retries, a delivery worker is never in the middle of one at shutdown.
    let uri = mixpanel.uri();
    let (mut server, acknowledged, refusal) = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        move || {
            let mut env = FAST_RETRIES.to_vec();
            env.extend([
                ("BRIDGE_DELIVERY_MAX_RETRIES", "0"),
                ("BRIDGE_MAX_BODY_BYTES", "1048576"),
            ]);
            let server =
                start_through(capped_file_size(), &data_dir, free_port(), Some(&uri), &env);
            let mut acknowledged = BTreeSet::new();
            for batch_idx in 0..200 {
                let ids = ids(&format!("fail{batch_idx}"), 100);
                match post_batch(&server.address, &big_batch(&ids)) {
                    Ok((200, _)) => acknowledged.extend(ids),
                    Ok((status, body)) => {
                        return (server, acknowledged, format!("{status} {body}"));
                    }
                    Err(error) => return (server, acknowledged, error.to_string()),
                }
            }
            panic!("the spool took 40 MB without failing");
        }
    })
    .await
    .unwrap();
    assert!(
        !acknowledged.is_empty(),
        "the very first batch failed: {refusal}"
    );
    assert!(
        refusal.starts_with("503 ") || !refusal.starts_with(char::is_numeric),
        "a failed spool must answer 503 (or be gone): {refusal}"
    );

    // The watchdog stops serve; it exits 1 so that a supervisor restarts it.
    let deadline = Instant::now() + Duration::from_secs(45);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() >= deadline {
            let stderr = String::from_utf8_lossy(&server.stderr.lock().unwrap()).into_owned();
            panic!("serve still runs 45 s after its spool failed ({refusal}):\n{stderr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = tokio::task::spawn_blocking(move || server.wait_for_stderr())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(1), "{exit:?}:\n{stderr}");
    harness::assert_no_panic(&stderr);
    assert!(
        stderr.contains("The spool's storage failed; stopping the bridge."),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "braze-mixpanel-bridge: the spool's storage failed while serving; restart the bridge"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("spool storage failed: spool storage failed"),
        "the failure is wrapped twice:\n{stderr}"
    );
    // Every worker fails on the spool until serve stops: one line says so.
    let spool_lines = stderr
        .lines()
        .filter(|line| line.contains("Delivery cannot use the spool"))
        .count();
    assert!(spool_lines <= 1, "{spool_lines} lines:\n{stderr}");

    // The restart a supervisor would do: the spool recovers, and every
    // batch acknowledged before the failure is delivered.
    up.store(true, Ordering::SeqCst);
    let server = start_async(&data_dir, &mixpanel.uri(), &FAST_RETRIES).await;
    wait_delivered(&imported, &acknowledged, Duration::from_secs(60)).await;
    drop(server);
}

#[test]
fn hostile_bodies_never_crash_the_server() {
    let dir = TempDir::new("serve-hostile");
    let server = start_with(
        &dir.join("data"),
        free_port(),
        None,
        &[("BRIDGE_MAX_BODY_BYTES", "4194304")],
    );
    let address = &server.address;

    // 100,000 levels of `[`: beyond any parser's depth limit, never a crash.
    let deep = format!(
        "{{\"events\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, _, body) = post_raw(address, deep.as_bytes(), "");
    assert!(matches!(status, 200 | 400), "deep nesting: {status} {body}");
    let unclosed = format!("{{\"events\":{}", "[".repeat(100_000));
    let (status, _, body) = post_raw(address, unclosed.as_bytes(), "");
    assert_eq!(status, 400, "unclosed nesting: {body}");

    // A 1 MB string inside a valid batch: stored, the answer is 200.
    let mut big = event("big-string");
    big["properties"]["campaign_name"] = json!("x".repeat(1_000_000));
    let (status, _, body) = post_raw(address, json!({"events": [big]}).to_string().as_bytes(), "");
    assert_eq!(status, 200, "1 MB string: {body}");

    // Not UTF-8.
    let mut bad = b"{\"events\":[{\"id\":\"".to_vec();
    bad.extend([0xff, 0xfe, 0xc3]);
    bad.extend(b"\"}]}");
    let (status, _, body) = post_raw(address, &bad, "");
    assert_eq!(status, 400, "invalid UTF-8: {body}");
    assert!(body.contains("\"error\""), "{body}");

    // Wrong types.
    let (status, _, body) = post_raw(address, br#"{"events":"x"}"#, "");
    assert_eq!(status, 400, "events as a string: {body}");
    let (status, _, body) = post_raw(address, br#"{"events":[1,true,null]}"#, "");
    assert_eq!(status, 200, "invalid events in a valid batch: {body}");

    // A gzip bomb: 64 MB of spaces inflate beyond the 4 MiB cap.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&spaces).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    let (status, _, body) = post_raw(address, &bomb, "Content-Encoding: gzip\r\n");
    assert_eq!(status, 413, "gzip bomb: {body}");

    // A body cut short of its Content-Length: refused or dropped, never
    // stored and never a 5xx.
    let head = post_head(1_000_000, "");
    let (status, _, body) = raw(address, &head, br#"{"events":[{"#, true);
    assert!(matches!(status, 0 | 400), "truncated body: {status} {body}");

    assert_eq!(get(address, "/healthz").unwrap().0, 200);
    let (_, status) = get(address, "/status").unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["accepting"], true, "{status}");
    drop(server);
}

/// Waits (up to 30 s) until the server's stderr holds a line with each of
/// `needles`, and returns it so far: a check of what the logs hold must
/// not run before the lines it is about are written.
async fn wait_for_log_lines(server: &Server, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stderr = String::from_utf8_lossy(&server.stderr.lock().unwrap()).into_owned();
        if needles.iter().all(|needle| stderr.contains(needle)) {
            return stderr;
        }
        assert!(
            Instant::now() < deadline,
            "no line with each of {needles:?} after 30 s:\n{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs() {
    const SA_SECRET: &str = "e2e-sa-secret-never-logged";
    const PROJECT_TOKEN: &str = "e2e-project-token";
    let mixpanel = MockServer::start().await;
    let imported = Imported::default();
    let seen = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let seen = Arc::clone(&seen);
            let imported = Arc::clone(&imported);
            move |request: &Request| {
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    ResponseTemplate::new(401).set_body_json(
                        json!({"code": 401, "error": "Invalid credentials", "status": 0}),
                    )
                } else {
                    ok_body(request, &imported)
                }
            }
        })
        .mount(&mixpanel)
        .await;
    let dir = TempDir::new("serve-secrets");
    let mut env = FAST_RETRIES.to_vec();
    env.extend([("RUST_LOG", "debug"), ("BRIDGE_LOG_FORMAT", "json")]);
    let server = start_async(&dir.join("data"), &mixpanel.uri(), &env).await;

    let address = server.address.clone();
    tokio::task::spawn_blocking(move || {
        let body = batch(&ids("secret", 3));
        let head = format!(
            "POST /currents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-{TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let (status, _, _) = raw(&address, &head, body.as_bytes(), false);
        assert_eq!(status, 401);
        let (status, text) = post_batch(&address, &body).unwrap();
        assert_eq!(status, 200, "{text}");
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "Mixpanel was never called");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The lines that carry the context a secret could leak through: the
    // refused token, and Mixpanel's refusal of the service account. Checked
    // once written, not after a guess at how long writing takes.
    let credentials_line = "Mixpanel refused the project's credentials";
    let token_line = "Refusing Currents requests with 401";
    let logged = wait_for_log_lines(&server, &[credentials_line, token_line]).await;
    let refusal = logged
        .lines()
        .find(|line| line.contains(credentials_line))
        .unwrap();
    assert!(
        refusal.contains("Invalid credentials"),
        "the line gives Mixpanel's answer: {refusal}"
    );

    let stderr = stop(server).await;
    harness::assert_no_panic(&stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 5, "too few log lines to judge:\n{stderr}");
    for needle in [credentials_line, token_line] {
        assert!(stderr.contains(needle), "{needle:?} missing:\n{stderr}");
    }
    assert!(
        lines.iter().any(|line| line.starts_with('{')),
        "no JSON log lines:\n{stderr}"
    );
    for secret in [TOKEN, SA_SECRET, PROJECT_TOKEN] {
        assert!(
            !stderr.contains(secret),
            "the secret {secret:?} appears in the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_without_failed_records_is_isolated_and_dead_lettered() {
    let mixpanel = MockServer::start().await;
    let imported = Imported::default();
    // Mixpanel refuses any request holding the poison event as a whole,
    // without saying which record: only splitting finds it.
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let imported = Arc::clone(&imported);
            move |request: &Request| {
                let is_poisoned = events_in(request)
                    .iter()
                    .any(|event| event["properties"]["distinct_id"] == "cust-poison-1");
                if is_poisoned {
                    ResponseTemplate::new(400).set_body_json(
                        json!({"code": 400, "error": "invalid value", "status": "Bad Request"}),
                    )
                } else {
                    ok_body(request, &imported)
                }
            }
        })
        .mount(&mixpanel)
        .await;
    let dir = TempDir::new("serve-poison");
    let server = start_async(&dir.join("data"), &mixpanel.uri(), &FAST_RETRIES).await;
    let mut ids_sent = ids("fine", 29);
    ids_sent.push("poison-1".to_owned());
    let (status, body) = post_async(&server.address, batch(&ids_sent)).await;
    assert_eq!(status, 200, "{body}");
    wait_for_status(&server.address, Duration::from_secs(30), |status| {
        status["dead_lettered_events"] == 1 && status["delivered_events"] == 29
    })
    .await;
    assert_eq!(imported.lock().unwrap().len(), 29);
    let listed = harness::run(
        &[
            "dlq",
            "--data-dir",
            dir.join("data").to_str().unwrap(),
            "list",
            "--json",
        ],
        b"",
    );
    listed.assert_success();
    let letter: Value = serde_json::from_str(listed.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(letter["reason"], "refused_by_mixpanel");
    assert!(
        letter["detail"].as_str().unwrap().contains("invalid value"),
        "{letter}"
    );
}

#[test]
fn a_million_events_in_a_small_body_get_413_and_the_server_stays_small() {
    let dir = TempDir::new("serve-million");
    let server = start_with(&dir.join("data"), free_port(), None, &[]);
    let body = format!("{{\"events\":[{}1]}}", "1,".repeat(999_999));
    let (status, _, body) = post_raw(&server.address, body.as_bytes(), "");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("over the limit of 1000"), "{body}");
    let (status, _) = post_batch(&server.address, &batch(&["after-million".to_owned()])).unwrap();
    assert_eq!(status, 200);
    let rss_kb = crate::harness::peak_rss_kib(server.child.id());
    assert!(rss_kb < 200 * 1024, "peak RSS {rss_kb} kB");
}

#[test]
fn a_trickled_body_is_cut_at_the_request_timeout() {
    let dir = TempDir::new("serve-slow-body");
    let server = start_with(
        &dir.join("data"),
        free_port(),
        None,
        &[("BRIDGE_REQUEST_TIMEOUT_SECS", "2")],
    );
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream.write_all(post_head(10_000, "").as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a trickled body was still being read after 8 s"
        );
        if stream.write_all(b" ").is_err() {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|window| window == b"\r\n\r\n") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
}
