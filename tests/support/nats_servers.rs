//! Real NATS servers for the NATS JetStream backend's end-to-end tests and
//! benchmarks: one node, or a cluster, each on loopback ports of its own with
//! its own store directory, stopped (SIGKILL) and started again at will.
//! Included by path by `tests/e2e` and by `xtask`'s benchmarks, so that both
//! run NATS the same way; it depends on nothing but std.
//!
//! `nats-server` is found on `PATH` or in `/usr/sbin` (Debian's package).
//! Inside CI (`CI` set) a missing server is an error; elsewhere the caller
//! gets `None` and a notice is printed, since `.ci/run` installs it.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary, or `None` (with a notice) outside CI.
pub(crate) fn nats_server_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    let found = on_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nats-server");
        sbin.is_file().then_some(sbin)
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is not installed (apt-get install nats-server); CI needs it"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping: nats-server is not installed (apt-get install nats-server)");
        }
    }
    found
}

/// A free loopback port, found by binding port 0 and letting it go.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// One running (or stopped) `nats-server`.
pub(crate) struct NatsNode {
    binary: PathBuf,
    name: String,
    store_dir: PathBuf,
    client_port: u16,
    monitor_port: u16,
    /// `(cluster port, every node's cluster port)` when in a cluster.
    cluster: Option<(u16, Vec<u16>)>,
    child: Option<Child>,
}

impl NatsNode {
    /// The client URL, `nats://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// The process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server and waits until JetStream answers its health check.
    pub(crate) fn start(&mut self) {
        self.spawn();
        self.wait_healthy(Duration::from_secs(60));
    }

    /// Starts the process without waiting for it.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-js", "-n", &self.name])
            .args(["-p", &self.client_port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-sd")
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(log_file(&self.store_dir));
        if let Some((cluster_port, all)) = &self.cluster {
            let routes: Vec<String> = all
                .iter()
                .filter(|port| *port != cluster_port)
                .map(|port| format!("nats://127.0.0.1:{port}"))
                .collect();
            command
                .args(["--cluster_name", "bridge-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
                .args(["--routes", &routes.join(",")]);
        }
        self.child = Some(command.spawn().expect("nats-server starts"));
    }

    /// SIGKILL: the server stops at once, as on a lost machine.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_healthy() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become healthy within {timeout:?}; its log: {}",
                self.name,
                self.store_dir.with_extension("log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /healthz` on the monitoring port answers 200.
    pub(crate) fn is_healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.monitor_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }
}

/// The server's log, beside its store directory, for a failing test's
/// reader.
fn log_file(store_dir: &Path) -> Stdio {
    let path = store_dir.with_extension("log");
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(file) => Stdio::from(file),
        Err(_) => Stdio::null(),
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One node, or a cluster of several, under `dir`.
pub(crate) struct Nats {
    pub(crate) nodes: Vec<NatsNode>,
}

impl Nats {
    /// A single JetStream server, started; `None` when nats-server is
    /// missing outside CI.
    pub(crate) fn single(dir: &Path) -> Option<Nats> {
        Nats::build(dir, 1)
    }

    /// A cluster of `n` JetStream servers, started; `None` when
    /// nats-server is missing outside CI.
    pub(crate) fn cluster(dir: &Path, n: usize) -> Option<Nats> {
        Nats::build(dir, n)
    }

    fn build(dir: &Path, n: usize) -> Option<Nats> {
        let binary = nats_server_binary()?;
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsNode> = (0..n)
            .map(|idx| NatsNode {
                binary: binary.clone(),
                name: format!("n{idx}"),
                store_dir: dir.join(format!("nats-{idx}")),
                client_port: free_port(),
                monitor_port: free_port(),
                cluster: (n > 1).then(|| (cluster_ports[idx], cluster_ports.clone())),
                child: None,
            })
            .collect();
        // A cluster's JetStream is healthy only once its nodes see each
        // other: start them all, then wait for each.
        for node in &mut nodes {
            node.spawn();
        }
        for node in &nodes {
            node.wait_healthy(Duration::from_secs(60));
        }
        Some(Nats { nodes })
    }

    /// Every node's URL, comma-separated, as `BRIDGE_NATS_URLS` takes them.
    pub(crate) fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsNode::url).collect();
        urls.join(",")
    }
}
