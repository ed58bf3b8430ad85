//! A real `nats-server` for tests: started on a free loopback port with
//! JetStream in a temporary store directory, stopped (and its directory
//! removed) when dropped, and restartable on the same port and store.
//!
//! It uses the standard library only, so that the workspace's end-to-end
//! tests can include this very file (`#[path = "…/nats/test_server.rs"]
//! mod nats_server;`) without depending on `bridge-server`, whose only
//! dependent is the binary.
//!
//! `nats-server` is found on `PATH`, or where Debian installs it
//! (`/usr/sbin`, which a normal user's `PATH` may lack); `apt-get install
//! nats-server`, 2.9.10 or later. When it is missing, [`NatsServer::start`] panics with
//! that advice inside CI (the `CI` variable is set), and elsewhere prints a
//! notice and returns `None`, so that the test skips, as `cargo xtask ci`
//! treats its other optional tools.

#![allow(dead_code)]

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The program looked for on `PATH`.
pub(crate) const PROGRAM: &str = "nats-server";

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `nats-server` process with JetStream, on `127.0.0.1:<port>`.
pub(crate) struct NatsServer {
    program: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra_config: String,
}

impl NatsServer {
    /// Starts a server with JetStream and default limits, or returns `None`
    /// (after a notice on stderr) when `nats-server` is not installed
    /// outside CI. Panics when it is missing in CI or does not start.
    pub(crate) fn start() -> Option<NatsServer> {
        NatsServer::start_with_config("")
    }

    /// Like [`NatsServer::start`], with `extra_config` appended to the
    /// server's configuration file (`max_payload: 4MB`,
    /// `authorization { … }`).
    pub(crate) fn start_with_config(extra_config: &str) -> Option<NatsServer> {
        let Some(program) = program() else {
            let advice = format!(
                "{PROGRAM} is not on PATH; install it (Debian/Ubuntu: apt-get install nats-server) to run the NATS tests"
            );
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
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bridge-nats-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("store")).expect("create the nats-server directory");
        let mut server = NatsServer {
            program,
            child: None,
            port: free_port(),
            dir,
            extra_config: extra_config.to_owned(),
        };
        server.spawn();
        Some(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The server's directory: `store/` (JetStream), `nats.conf`, `nats.log`.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (SIGKILL: no lame-duck goodbye) and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// What the server logged, for a failure message.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let config = self.dir.join("nats.conf");
        // Forward slashes and no quotes needed inside: the path is ours.
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: \"{store}\"\n}}\n{extra}\n",
                port = self.port,
                store = self.dir.join("store").display(),
                extra = self.extra_config,
            ),
        )
        .expect("write nats.conf");
        let log = self.dir.join("nats.log");
        let mut child = Command::new(&self.program)
            .arg("-c")
            .arg(&config)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {PROGRAM}: {error}"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for nats-server") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!(
                    "{PROGRAM} exited at start ({status}): {stderr}\n{}",
                    self.log()
                );
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{PROGRAM} did not listen on port {} within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where Debian's package installs it, outside a normal user's `PATH`.
const DEBIAN_PATH: &str = "/usr/sbin/nats-server";

/// The `nats-server` to run: the one on `PATH`, else Debian's.
pub(crate) fn program() -> Option<PathBuf> {
    [PathBuf::from(PROGRAM), PathBuf::from(DEBIAN_PATH)]
        .into_iter()
        .find(|program| {
            Command::new(program)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
}

/// Whether `nats-server` is installed.
pub(crate) fn is_installed() -> bool {
    program().is_some()
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free loopback port")
}
