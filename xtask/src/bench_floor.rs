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
//! Not a server for anything but this bench: it trusts its client (the
//! bench's own load threads on loopback), though a head over 64 KiB or a
//! body over 64 MiB still ends the connection.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::ingest::find;

/// The longest request head read.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest body read.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Serves until killed.
pub(super) fn serve() -> anyhow::Result<()> {
    let listen = std::env::var("BRIDGE_LISTEN").context("BRIDGE_LISTEN is not set")?;
    let data_dir = std::env::var("BRIDGE_DATA_DIR").context("BRIDGE_DATA_DIR is not set")?;
    std::fs::create_dir_all(&data_dir)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::path::Path::new(&data_dir).join("floor.log"))?;
    let log = Arc::new(Mutex::new(log));
    let listener = TcpListener::bind(&listen).with_context(|| format!("cannot bind {listen}"))?;
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
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
