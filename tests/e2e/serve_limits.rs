//! `serve` against clients that hold connections: a request head trickled
//! byte by byte, more idle connections than the cap, SIGTERM with a client
//! still trickling; and a second `serve` on the same data dir.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{self, TempDir};
use crate::serve::{batch, free_port, get, post_batch, start_with};

/// Whether the server closed `stream` within `within` (a read gives EOF or
/// an error), sending a byte every 200 ms meanwhile if `trickle`.
fn closed_within(stream: &mut TcpStream, within: Duration, trickle: bool) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buffer = [0u8; 1024];
    while Instant::now() < deadline {
        if trickle && stream.write_all(b"X").is_err() {
            return true;
        }
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_trickled_request_head_is_cut_at_the_header_timeout() {
    let dir = TempDir::new("limits-slowloris");
    let server = start_with(
        &dir.join("data"),
        free_port(),
        None,
        &[("BRIDGE_HEADER_READ_TIMEOUT_SECS", "2")],
    );
    let mut slow = TcpStream::connect(&server.address).unwrap();
    slow.write_all(b"POST /currents HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(8), true),
        "a client trickling its head was still connected after 8 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // An idle keep-alive connection is cut too.
    let mut idle = TcpStream::connect(&server.address).unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(8), false));
    let (status, _) = post_batch(&server.address, &batch(&["after".to_owned()])).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn connections_over_the_cap_are_closed_when_every_one_is_busy() {
    let dir = TempDir::new("limits-cap");
    let server = start_with(
        &dir.join("data"),
        free_port(),
        None,
        &[("BRIDGE_MAX_CONNECTIONS", "20")],
    );
    // 20 requests whose bodies never come: busy, not silent, so none is
    // evicted.
    let head = format!(
        "POST /currents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        crate::serve::TOKEN
    );
    let busy: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.address).unwrap();
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut refused: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&server.address).unwrap())
        .collect();
    let n_closed = refused
        .iter_mut()
        .map(|stream| closed_within(stream, Duration::from_millis(500), false))
        .filter(|closed| *closed)
        .count();
    assert_eq!(n_closed, 20, "{n_closed} of 20 over the cap closed");
    // The busy ones leave; a batch passes.
    drop(busy);
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = post_batch(&server.address, &batch(&["capped".to_owned()])).unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = get(&server.address, "/metrics").unwrap();
    let refused_count: u64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("bridge_listener_connections_total{outcome=\"refused_over_cap\"} ")
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused_count >= 20, "{metrics}");
}

#[test]
fn sigterm_stops_serve_within_the_grace_period_despite_a_trickling_client() {
    let dir = TempDir::new("limits-sigterm");
    let mut server = start_with(
        &dir.join("data"),
        free_port(),
        None,
        &[
            ("BRIDGE_HEADER_READ_TIMEOUT_SECS", "300"),
            ("BRIDGE_SHUTDOWN_GRACE_SECS", "2"),
        ],
    );
    let mut slow = TcpStream::connect(&server.address).unwrap();
    slow.write_all(b"POST /currents HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let trickler = std::thread::spawn(move || {
        for _ in 0..150 {
            if slow.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    let log = server.wait_for_stderr();
    assert!(log.contains("shutdown grace"), "{log}");
    let _ = trickler.join();
}

#[test]
fn a_second_serve_on_the_same_data_dir_refuses_to_start() {
    let dir = TempDir::new("limits-lock");
    let data_dir = dir.join("data");
    let first = start_with(&data_dir, free_port(), None, &[]);
    let second = std::process::Command::new(harness::binary())
        .args(["serve", "--dry-run"])
        .env("BRIDGE_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("BRIDGE_DATA_DIR", &data_dir)
        .env("BRIDGE_CURRENTS_TOKENS", "some-token")
        .env_remove("BRIDGE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another serve uses this data dir"),
        "{stderr}"
    );
    let (status, _) = post_batch(&first.address, &batch(&["still-first".to_owned()])).unwrap();
    assert_eq!(status, 200);
}

#[cfg(unix)]
#[test]
fn the_data_dir_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("limits-files");
    let data_dir = dir.join("data");
    let server = start_with(
        &data_dir,
        free_port(),
        None,
        &[("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "mixpanel:secret")],
    );
    let (status, _) = post_batch(&server.address, &batch(&["private".to_owned()])).unwrap();
    assert_eq!(status, 200);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    for directory in ["", "spool", "cohorts", "dry-run"] {
        let path = data_dir.join(directory);
        assert_eq!(mode(&path), 0o700, "{}", path.display());
    }
    for file in [
        "spool/spool.db",
        "spool/spool.db-wal",
        "cohorts/cohorts.db",
        "dry-run/default.ndjson",
        "dry-run/braze-cohorts.ndjson",
        "serve.lock",
    ] {
        let path = data_dir.join(file);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn operations_endpoints_have_a_listener_of_their_own_by_default() {
    let dir = TempDir::new("limits-ops");
    let (port, ops_port) = (free_port(), free_port());
    let mut child = std::process::Command::new(harness::binary())
        .args(["serve", "--dry-run"])
        .env("BRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("BRIDGE_OPS_LISTEN", format!("127.0.0.1:{ops_port}"))
        .env("BRIDGE_DATA_DIR", dir.join("data"))
        .env("BRIDGE_CURRENTS_TOKENS", crate::serve::TOKEN)
        .env_remove("BRIDGE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let address = format!("127.0.0.1:{port}");
    let ops_address = format!("127.0.0.1:{ops_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(get(&ops_address, "/readyz"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "the ops listener never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for path in ["/status", "/metrics", "/readyz", "/healthz"] {
        let (status, _) = get(&address, path).unwrap();
        assert_eq!(status, 404, "{path} on the ingest listener");
        let (status, _) = get(&ops_address, path).unwrap();
        assert_eq!(status, 200, "{path} on the ops listener");
    }
    let (status, _) = post_batch(&address, &batch(&["ops".to_owned()])).unwrap();
    assert_eq!(status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_batch_is_answered_within_a_second_beside_5000_idle_connections() {
    let dir = TempDir::new("limits-5000");
    let server = start_with(&dir.join("data"), free_port(), None, &[]);
    let idle: Vec<TcpStream> = (0..5000)
        .filter_map(|_| TcpStream::connect(&server.address).ok())
        .collect();
    assert!(idle.len() >= 4900, "only {} connections opened", idle.len());
    let started = Instant::now();
    let (status, body) = post_batch(&server.address, &batch(&["beside-idle".to_owned()])).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn at_the_cap_a_silent_connection_makes_room_for_a_sender() {
    let dir = TempDir::new("limits-evict");
    let server = start_with(
        &dir.join("data"),
        free_port(),
        None,
        &[
            ("BRIDGE_MAX_CONNECTIONS", "20"),
            ("BRIDGE_HEADER_READ_TIMEOUT_SECS", "60"),
        ],
    );
    let accepted = || -> u64 {
        let (_, metrics) = get(&server.address, "/metrics").unwrap();
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("bridge_listener_connections_total{outcome=\"accepted\"} ")
            })
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    // 20 connections that send nothing fill the cap (their head timeout is
    // a minute away). On a loaded machine the listener takes them with a
    // delay: 19 first, until it has (each metrics read is one more
    // connection, closed at once), then the 20th.
    let before = accepted();
    let mut idle: Vec<TcpStream> = (0..19)
        .map(|_| TcpStream::connect(&server.address).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Each read's own connection counts too.
    let mut reads = 0;
    loop {
        reads += 1;
        let taken = accepted() - before;
        if taken >= 19 + reads {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listener took {taken} connections"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    idle.push(TcpStream::connect(&server.address).unwrap());
    // Connections are spared for a second after they open.
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let (status, body) = post_batch(&server.address, &batch(&["evicting".to_owned()])).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (_, metrics) = get(&server.address, "/metrics").unwrap();
    let evicted: u64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("bridge_listener_connections_total{outcome=\"evicted_silent\"} ")
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    assert!(evicted >= 1, "{metrics}");
    drop(idle);
}

#[test]
fn forty_large_bodies_at_once_are_read_within_the_memory_budget() {
    let dir = TempDir::new("limits-budget");
    let server = start_with(
        &dir.join("data"),
        free_port(),
        None,
        &[
            ("BRIDGE_MAX_BODY_BYTES", "4194304"),
            ("BRIDGE_MAX_INFLIGHT_BODY_BYTES", "8388608"),
            ("BRIDGE_DELIVERY_WORKERS", "1"),
        ],
    );
    // 700 events of about 5.5 KB: a batch of just under 4 MiB.
    let padding = "p".repeat(5300);
    let events: Vec<String> = (0..700)
        .map(|idx| {
            let mut event = crate::serve::event(&format!("budget-{idx}"));
            event["properties"]["padding"] = serde_json::json!(padding);
            event.to_string()
        })
        .collect();
    let body = format!("{{\"events\":[{}]}}", events.join(","));
    assert!(
        body.len() > 3 << 20 && body.len() < 4 << 20,
        "{}",
        body.len()
    );
    let pid = server.child.id();
    let before_kib = harness::peak_rss_kib(pid);
    let senders: Vec<_> = (0..40)
        .map(|_| {
            let (address, body) = (server.address.clone(), body.clone());
            std::thread::spawn(move || post_batch(&address, &body).map(|(status, _)| status))
        })
        .collect();
    let statuses: Vec<u16> = senders
        .into_iter()
        .map(|sender| sender.join().unwrap().unwrap())
        .collect();
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    // Read all at once, the bodies alone would take 40 × 4 MiB; the
    // budget lets 2 be read at a time.
    let peak_kib = harness::peak_rss_kib(pid);
    assert!(
        peak_kib < before_kib + 100 * 1024,
        "peak RSS {peak_kib} KiB, {before_kib} KiB before the load"
    );
}
