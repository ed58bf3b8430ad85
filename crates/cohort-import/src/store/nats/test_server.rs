//! A real `nats-server` for the NATS store's tests: each test starts its
//! own, with JetStream in a temporary directory, on a port of the loopback
//! interface that the server picks, and stops it when dropped.
//!
//! Without `nats-server` on the `PATH` (Debian: `apt-get install
//! nats-server`), a test is skipped with a notice, except in CI (`CI` set),
//! where that is a failure.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream;

use super::NatsStore;

/// The lock lease of the tests' stores: short, so that a takeover after a
/// simulated crash is quick, yet long enough that a loaded machine renews
/// in time (a holder stops writing half a lease after its last renewal,
/// and renews every quarter lease).
pub(super) const TEST_LOCK_LEASE: Duration = Duration::from_secs(2);

/// A running server, stopped on drop.
pub(super) struct TestServer {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl TestServer {
    /// Starts a server; `None` (with a notice) if `nats-server` is not
    /// installed, outside CI.
    pub(super) fn start() -> Option<TestServer> {
        let Some(binary) = find_binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is not installed, and CI runs the NATS store's tests: apt-get install nats-server"
            );
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "skipping a NATS store test: nats-server is not installed (apt-get install nats-server)"
                );
            }
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cohort-nats-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut child = Command::new(binary)
            .args(["-js", "-sd"])
            .arg(&dir)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts");
        // The server logs to stderr: its port, then that it is ready.
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut port = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("Listening for client connections on ") {
                    port = line[at..]
                        .rsplit(':')
                        .next()
                        .map(|port| port.trim().to_owned());
                }
                if line.contains("Server is ready")
                    && let Some(port) = port.take()
                {
                    let _ = sender.send(port);
                }
                // Go on reading, so that the server never blocks on a full pipe.
            }
        });
        let port = match receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => port,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server did not start: {error}");
            }
        };
        Some(TestServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }

    /// A new connection's JetStream context.
    pub(super) async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::connect(&self.url)
            .await
            .expect("connects to nats-server");
        jetstream::new(client)
    }

    /// A store over a new connection (a replica), buckets `test-*`.
    pub(super) async fn store(&self) -> NatsStore {
        self.store_with_prefix("test").await
    }

    /// A store over a new connection, buckets `<prefix>-*`.
    pub(super) async fn store_with_prefix(&self, prefix: &str) -> NatsStore {
        NatsStore::open(self.jetstream().await, prefix, 1)
            .await
            .expect("store opens")
            .with_lock_lease(TEST_LOCK_LEASE)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nats-server` on the `PATH`, or where Debian puts it.
fn find_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"));
    on_path
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|candidate| candidate.is_file())
}
