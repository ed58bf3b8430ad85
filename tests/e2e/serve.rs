//! `serve` end to end: the real binary on a loopback port, Braze-like
//! batches posted over HTTP, a dry-run file or a wiremock Mixpanel behind
//! it, and a `kill -9` in the middle.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{self, TempDir};

pub(crate) const TOKEN: &str = "e2e-currents-token==";

/// A running `serve`, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) address: String,
    /// Everything the server wrote to stderr so far, drained on a thread so
    /// that the server never blocks on a full pipe.
    pub(crate) stderr: Arc<Mutex<Vec<u8>>>,
    /// The thread draining stderr; it ends when the server exits.
    pub(crate) drain: Option<JoinHandle<()>>,
}

impl Server {
    /// Waits for the server to exit (after a signal) and returns all it
    /// wrote to stderr.
    pub(crate) fn wait_for_stderr(&mut self) -> String {
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn start(data_dir: &Path, port: u16, mixpanel_url: Option<&str>) -> Server {
    start_with(data_dir, port, mixpanel_url, &[])
}

/// [`start`], with extra environment variables (set last, so they win).
pub(crate) fn start_with(
    data_dir: &Path,
    port: u16,
    mixpanel_url: Option<&str>,
    env: &[(&str, &str)],
) -> Server {
    start_through(
        Command::new(harness::binary()),
        data_dir,
        port,
        mixpanel_url,
        env,
    )
}

/// [`start_with`], running `serve` as arguments of `command`: the binary
/// itself, or a wrapper that ends by running the binary with them.
pub(crate) fn start_through(
    mut command: Command,
    data_dir: &Path,
    port: u16,
    mixpanel_url: Option<&str>,
    env: &[(&str, &str)],
) -> Server {
    command
        .arg("serve")
        .env("BRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        // The tests read /status and /readyz on the ingest address;
        // `serve_limits` checks the default, a listener of their own.
        .env("BRIDGE_OPS_ON_INGEST_LISTENER", "true")
        .env("BRIDGE_DATA_DIR", data_dir)
        .env("BRIDGE_CURRENTS_TOKENS", format!("old-token,{TOKEN}"))
        .env("RUST_LOG", "warn")
        .env_remove("BRIDGE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("MIXPANEL_") {
            command.env_remove(key);
        }
    }
    match mixpanel_url {
        Some(url) => {
            command
                .env("MIXPANEL_API_URL", url)
                .env("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "e2e.sa")
                .env(
                    "MIXPANEL_SERVICE_ACCOUNT_SECRET",
                    "e2e-sa-secret-never-logged",
                )
                .env("MIXPANEL_PROJECT_ID", "31337")
                .env("MIXPANEL_PROJECT_TOKEN", "e2e-project-token");
        }
        None => {
            command.arg("--dry-run");
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("serve starts");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let drain = std::thread::spawn({
        let stderr = Arc::clone(&stderr);
        move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                stderr.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        }
    });
    let server = Server {
        child,
        address: format!("127.0.0.1:{port}"),
        stderr,
        drain: Some(drain),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok((200, _)) = get(&server.address, "/readyz") {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("serve did not become ready");
}

/// A minimal HTTP/1.1 client: one request per connection.
fn http(address: &str, request: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((status, body))
}

pub(crate) fn get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    http(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

/// `POST path` with extra header lines (each ending in `\r\n`) and a body.
pub(crate) fn post_to(
    address: &str,
    path: &str,
    extra_headers: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{extra_headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    http(address, &request, body)
}

pub(crate) fn post_batch(address: &str, body: &str) -> std::io::Result<(u16, String)> {
    let request = format!(
        "POST /currents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nBraze-Currents-Version: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    http(address, &request, body.as_bytes())
}

pub(crate) fn event(id: &str) -> Value {
    json!({"event_type": "users.messages.email.Open", "id": id, "time": 1732792800,
        "user": {"user_id": "65f1c0", "external_user_id": format!("cust-{id}")},
        "properties": {"campaign_name": "Rentrée 🍂", "email_address": "ana.souza@example.com", "app_group_id": "ag-1"}})
}

pub(crate) fn batch(ids: &[String]) -> String {
    json!({ "events": ids.iter().map(|id| event(id)).collect::<Vec<_>>() }).to_string()
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn dry_run_serves_maps_and_writes_the_events() {
    let dir = TempDir::new("serve-dry-run");
    let port = free_port();
    let server = start(&dir.join("data"), port, None);
    let ids: Vec<String> = (0..5).map(|idx| format!("dry-{idx}")).collect();
    let (status, body) = post_batch(&server.address, &batch(&ids)).unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _) = post_batch(&server.address, "{\"events\":[]}").unwrap();
    assert_eq!(status, 200);
    let file = dir.join("data/dry-run/default.ndjson");
    wait_for("the dry-run file", Duration::from_secs(20), || {
        std::fs::read_to_string(&file).is_ok_and(|text| text.lines().count() == 5)
    });
    let events = harness::parse_ndjson(&std::fs::read_to_string(&file).unwrap(), "dry-run");
    assert_eq!(events[0]["event"], "Email Open");
    assert_eq!(events[4]["properties"]["$insert_id"], "dry-4");
    let (status, body) = get(&server.address, "/status").unwrap();
    assert_eq!(status, 200);
    let status_json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["delivered_events"], 5);
    assert_eq!(status_json["projects"][0]["state"], "delivering");
    let (status, metrics) = get(&server.address, "/metrics").unwrap();
    assert_eq!(status, 200);
    for expected in [
        "bridge_ingest_received_events_total 5",
        "bridge_delivery_delivered_events_total{project=\"default\"} 5",
        "bridge_ingest_requests_total{status=\"200\"} 2",
        "bridge_spool_batches 0",
        // The default `spool.max_bytes`, 2 GiB.
        "bridge_spool_max_bytes 2147483648",
        "bridge_ready 1",
        "bridge_delivery_project_paused{project=\"default\"} 0",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
}

pub(crate) fn events_in(request: &Request) -> Vec<Value> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&request.body[..])
        .read_to_end(&mut text)
        .unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// Events acknowledged under load before [`every_acknowledged_event_survives_kill_9`]
/// kills the server: ten of the posters' batches.
const KILL_AFTER_EVENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9() {
    let mixpanel = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(200).set_body_json(
                json!({"code": 200, "num_records_imported": events_in(request).len()}),
            )
        })
        .mount(&mixpanel)
        .await;
    let uri = mixpanel.uri();
    let dir = TempDir::new("serve-kill-9");
    let data_dir = dir.join("data");
    let port = free_port();

    let acknowledged = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        let uri = uri.clone();
        move || {
            let mut server = start(&data_dir, port, Some(&uri));
            // Four posters, 20-event batches, until the kill.
            let (sender, receiver) = std::sync::mpsc::channel::<Vec<String>>();
            let mut posters = Vec::new();
            for poster in 0..4 {
                let sender = sender.clone();
                let address = server.address.clone();
                posters.push(std::thread::spawn(move || {
                    for batch_idx in 0.. {
                        let ids: Vec<String> = (0..20)
                            .map(|idx| format!("k{poster}-{batch_idx}-{idx}"))
                            .collect();
                        match post_batch(&address, &batch(&ids)) {
                            Ok((200, _)) => {
                                if sender.send(ids).is_err() {
                                    return;
                                }
                            }
                            _ => return,
                        }
                    }
                }));
            }
            drop(sender);
            // Kill once enough is acknowledged, whatever the machine's
            // speed; the posters are still sending, so appends are in
            // flight when the kill lands.
            let mut acknowledged = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while acknowledged.len() < KILL_AFTER_EVENTS {
                let left = deadline.saturating_duration_since(Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(ids) => acknowledged.extend(ids),
                    Err(error) => panic!(
                        "only {} events acknowledged before the kill ({error})",
                        acknowledged.len()
                    ),
                }
            }
            server.child.kill().expect("SIGKILL");
            let _ = server.child.wait();
            for poster in posters {
                let _ = poster.join();
            }
            acknowledged.extend(receiver.into_iter().flatten());
            acknowledged
        }
    })
    .await
    .unwrap();
    assert!(acknowledged.len() >= KILL_AFTER_EVENTS);

    // Restart on the same data: everything acknowledged must reach Mixpanel.
    let restarted = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        move || start(&data_dir, port, Some(&uri))
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut delivered = BTreeSet::new();
        for request in mixpanel.received_requests().await.unwrap() {
            for event in events_in(&request) {
                delivered.insert(
                    event["properties"]["$insert_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        let missing: Vec<&String> = acknowledged.difference(&delivered).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never reached Mixpanel, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(restarted);
}
