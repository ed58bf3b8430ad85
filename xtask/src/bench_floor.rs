//! The cost bench's floor: the least a receiver that keeps "fsync before
//! the 2xx" can spend on the bench's load, to set `serve`'s figure against.
//!
//! `cargo xtask bench cost --floor` starts this instead of `serve` (as
//! `xtask bench floor-server`, on the same `BRIDGE_LISTEN` and
//! `BRIDGE_DATA_DIR`): one thread per connection reads each request with
//! plain `std` I/O, appends its body to one file and `fdatasync`s it before
//! answering 200. It does nothing else: no HTTP framework, no checks, no
//! parsing, no spool, no delivery. What it costs on a machine is what the
//! network stack and the disk alone cost there, which no implementation of
//! ingest gets under; the rest of `serve`'s cost is ours.
//!
//! Not a server for anything but this bench: it binds only loopback
//! addresses, and a head over 64 KiB, a body over 64 MiB or a client
//! silent for 60 s ends its connection.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::ingest::find;

/// The longest request head read.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest body read.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How long a read may wait for the client.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves until killed.
pub(super) fn serve() -> anyhow::Result<()> {
    let listen = std::env::var("BRIDGE_LISTEN").context("BRIDGE_LISTEN is not set")?;
    let address: SocketAddr = listen
        .parse()
        .with_context(|| format!("BRIDGE_LISTEN {listen:?} is not an IP address and port"))?;
    anyhow::ensure!(
        address.ip().is_loopback(),
        "the floor server listens on loopback only, not {listen}"
    );
    let data_dir = std::env::var("BRIDGE_DATA_DIR").context("BRIDGE_DATA_DIR is not set")?;
    std::fs::create_dir_all(&data_dir)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::path::Path::new(&data_dir).join("floor.log"))?;
    let log = Arc::new(Mutex::new(log));
    let listener = TcpListener::bind(address).with_context(|| format!("cannot bind {listen}"))?;
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            // A connection that breaks ends its thread; the bench counts it.
            let _ = connection(stream, &log);
        });
    }
    Ok(())
}

/// Answers the requests on one connection until it closes.
fn connection(mut stream: TcpStream, log: &Mutex<File>) -> anyhow::Result<()> {
    let mut buffer = Vec::with_capacity(128 * 1024);
    let mut chunk = vec![0_u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            anyhow::ensure!(buffer.len() <= MAX_HEAD_BYTES, "request head too long");
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&buffer[..head_end])?.to_ascii_lowercase();
        let content_length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(Ok(0), |value| value.trim().parse::<usize>())?;
        anyhow::ensure!(content_length <= MAX_BODY_BYTES, "body too large");
        while buffer.len() < head_end + content_length {
            let n = stream.read(&mut chunk)?;
            anyhow::ensure!(n > 0, "connection closed inside a body");
            buffer.extend_from_slice(&chunk[..n]);
        }
        let response: &[u8] = if head.starts_with("post ") {
            let body = &buffer[head_end..head_end + content_length];
            let file = log
                .lock()
                .map_err(|_| anyhow::anyhow!("log lock poisoned"))?;
            (&*file).write_all(body)?;
            file.sync_data()?;
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        } else {
            // `/readyz` and `/status`: ready, and nothing left to deliver.
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"batches\":0}"
        };
        stream.write_all(response)?;
        if head.contains("connection: close") {
            return Ok(());
        }
        buffer.drain(..head_end + content_length);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Shutdown;

    use super::*;

    /// One client's bytes through [`connection`]: its result, what the
    /// client read back, and what reached the log.
    fn exchange(request: &[u8]) -> (anyhow::Result<()>, Vec<u8>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let log_path = std::env::temp_dir().join(format!(
            "xtask-floor-{}-{:?}.log",
            std::process::id(),
            std::thread::current().id()
        ));
        let log = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&log_path)
            .unwrap();
        let serving = std::thread::spawn(move || {
            let log = Mutex::new(log);
            connection(server, &log)
        });
        // The server may stop reading early: a refused write is its answer.
        let _ = client.write_all(request);
        let _ = client.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer);
        let result = serving.join().unwrap();
        let logged = std::fs::read(&log_path).unwrap();
        std::fs::remove_file(&log_path).unwrap();
        (result, answer, logged)
    }

    #[test]
    fn appends_each_body_before_answering() {
        let (result, answer, logged) = exchange(
            b"POST /currents HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
              POST /currents HTTP/1.1\r\nContent-Length: 6\r\n\r\n world",
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(logged, b"hello world");
        let answer = String::from_utf8(answer).unwrap();
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    }

    #[test]
    fn an_endless_head_ends_the_connection() {
        let request = vec![b'x'; MAX_HEAD_BYTES + 128 * 1024];
        let (result, answer, logged) = exchange(&request);
        assert!(
            result.unwrap_err().to_string().contains("head too long"),
            "the head's cap"
        );
        assert!(answer.is_empty());
        assert!(logged.is_empty());
    }

    #[test]
    fn a_huge_declared_body_is_refused_before_it_is_read() {
        let (result, answer, logged) = exchange(
            format!(
                "POST /currents HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY_BYTES + 1
            )
            .as_bytes(),
        );
        assert!(
            result.unwrap_err().to_string().contains("body too large"),
            "the body's cap"
        );
        assert!(answer.is_empty());
        assert!(logged.is_empty());
    }

    #[test]
    fn a_body_cut_short_is_not_logged() {
        let (result, _, logged) =
            exchange(b"POST /currents HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort");
        assert!(result.is_err());
        assert!(logged.is_empty());
    }
}
