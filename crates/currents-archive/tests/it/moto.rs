//! A real S3 API for tests: moto's server mode (`moto_server`, from
//! PyPI's `moto[server]`), started on a free loopback port in its own
//! process and killed when dropped.
//!
//! It is found as `moto_server` on `PATH`, or as `python3 -m moto.server`.
//! When neither works, [`MotoServer::start`] panics with the advice to
//! install it inside CI (the `CI` variable is set; `.ci/run` installs it),
//! and elsewhere prints a notice and returns `None`, so that the test
//! skips, as the workspace's other external servers do.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections (Python starts slowly).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One moto server on `127.0.0.1:<port>`.
pub(crate) struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts a server, or returns `None` (after a notice) when moto is
    /// not installed outside CI. Panics when it is missing in CI or does
    /// not start.
    pub(crate) fn start() -> Option<MotoServer> {
        let Some(program) = program() else {
            let advice =
                "moto's server is not installed; pip install 'moto[server]' to run the S3 tests";
            if std::env::var_os("CI").is_some() {
                panic!("{advice} (required in CI)");
            }
            // The notice is the point: a skipped test must say so.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipping: {advice}");
            }
            return None;
        };
        let port = free_port();
        let mut command = Command::new(&program[0]);
        command
            .args(&program[1..])
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program:?}: {error}"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for moto") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("moto exited at start ({status}): {stderr}");
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("moto did not listen on port {port} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its log goes nowhere: a full pipe must not block it.
        drop(child.stderr.take());
        Some(MotoServer { child, port })
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto does not check signatures, so a bare request
    /// does).
    pub(crate) fn create_bucket(&self, bucket: &str) {
        let mut stream =
            TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connect to moto");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send CreateBucket");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read CreateBucket's answer");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "CreateBucket: {response}"
        );
    }

    /// The settings that point an `ArchiveStore` at this server, with
    /// dummy credentials.
    pub(crate) fn s3_options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".to_owned()),
            ("aws_access_key_id", "test-key-id".to_owned()),
            ("aws_secret_access_key", "test-secret-key".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
        ]
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that runs moto's server: `moto_server`, else
/// `python3 -m moto.server`.
fn program() -> Option<Vec<String>> {
    let candidates = [
        vec!["moto_server".to_owned()],
        vec![
            "python3".to_owned(),
            "-m".to_owned(),
            "moto.server".to_owned(),
        ],
    ];
    candidates.into_iter().find(|program| {
        Command::new(&program[0])
            .args(&program[1..])
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free loopback port")
}
