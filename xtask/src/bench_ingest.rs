//! `cargo xtask bench ingest`: `braze-mixpanel-bridge serve` under load.
//!
//! It builds the release binary and the `import_sink` example of
//! `mixpanel-client`, starts the sink on a free loopback port and `serve`
//! on another (a fresh data directory under `target/bench/`, delivering to
//! the sink with a project token), waits for `/readyz`, then runs a load
//! generator in this process: C threads, each with one keep-alive HTTP/1.1
//! connection, posting 100-event Braze Currents batches (the Custom HTTP
//! connector's `{"events":[...]}` shape, about 600 bytes an event, from the
//! workspace's generator `currents_model::synthetic`) to
//! `/currents` for S seconds, as fast as the server acknowledges or paced
//! to a total rate. Bodies are generated before the clock starts; only
//! each event's id is rewritten per request (a copy and 100 small writes),
//! so every event sent is unique.
//!
//! It reports accepted events/s, ack latency percentiles (from writing a
//! request to reading its whole response), non-2xx answers by status, the
//! server's CPU seconds (`/proc/<pid>/stat`) and peak RSS (`VmHWM`, polled
//! every 5 ms), then how long the spool takes to drain into the sink after
//! the load stops (`/status` until `spool.batches` is 0). It fails unless
//! the sink counted at least every accepted event (duplicates allowed).
//! The server is stopped with SIGTERM; every wait has a deadline. Linux
//! only, loopback only.
//!
//! With `--spool nats` (one NATS server) or `--spool nats-r3` (a cluster of
//! three, streams with three replicas), NATS JetStream is the spool: the
//! servers run from `tests/support/nats_servers.rs` in the data directory,
//! `--replicas N` `serve` processes share it and the load threads take turns
//! among them; CPU is summed over the replicas and reported apart for NATS.
//! `cargo xtask bench nats` runs the embedded spool, NATS on one server and
//! NATS R3 one after the other, unpaced and paced, for one table.
//!
//! ```text
//! cargo xtask bench ingest [--concurrency C] [--seconds S] [--rate EVENTS_PER_SEC]
//!                          [--spool sqlite|nats|nats-r3] [--replicas N]
//! cargo xtask bench nats [--seconds S]
//! cargo xtask bench cost [--seconds S] [--rate EVENTS_PER_SEC] [--spool sqlite|nats]
//! ```
//!
//! `cargo xtask bench cost` is the operator's bill: paced to 30,000
//! events/s by default, it reports events per CPU-second of `serve` from
//! the first request until the spool is drained, on the embedded spool and
//! on NATS side by side.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use currents_model::{EventType, synthetic};

#[path = "../../tests/support/nats_servers.rs"]
#[allow(dead_code)]
mod nats_servers;

use crate::bench_import::{
    Sink, clock_ticks_per_sec, collect, http, json_number, say, stat_fields, target_dir,
    vm_hwm_bytes,
};

const USAGE: &str = "usage: cargo xtask bench ingest [--concurrency C] [--seconds S] [--rate EVENTS_PER_SEC] [--spool sqlite|nats|nats-r3] [--replicas N] [--set NAME=VALUE (serve's environment)]... [--floor (the minimal receiver instead of serve)]";
const EVENTS_PER_BATCH: usize = 100;
const BODY_POOL: usize = 64;
const CURRENTS_TOKEN: &str = "bench-currents-token";
const GOAL_EVENTS_PER_SEC: f64 = 100_000.0;
const GOAL_P99_MS: f64 = 20.0;
const GOAL_RSS_MB: f64 = 200.0;
/// Issue 11's goals: ingest with PubAck on one NATS server, and on R3.
const GOAL_NATS_EVENTS_PER_SEC: f64 = 50_000.0;
const GOAL_NATS_R3_EVENTS_PER_SEC: f64 = 25_000.0;
const GOAL_NATS_R3_P99_MS: f64 = 30.0;
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, PartialEq)]
struct Options {
    concurrency: usize,
    seconds: u64,
    rate: Option<f64>,
    spool: SpoolKind,
    replicas: usize,
    /// `--set NAME=VALUE`: settings for `serve`'s environment on top of the
    /// bench's own (which never takes the caller's `BRIDGE_*`), so that a
    /// setting can be compared run by run on one build.
    serve_env: Vec<(String, String)>,
    /// `--floor`: the minimal durable receiver of [`super::floor`] in
    /// place of `serve`, for the least this load costs on this machine.
    floor: bool,
}

/// Where `serve` spools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpoolKind {
    /// The embedded SQLite spool.
    Sqlite,
    /// NATS JetStream on this many servers, streams with as many replicas.
    Nats { nodes: usize },
}

impl Options {
    /// What received the load: the spool's name, or the floor.
    fn label(&self) -> String {
        if self.floor {
            "floor (no spool, no delivery)".to_owned()
        } else {
            self.spool.name()
        }
    }
}

impl SpoolKind {
    fn name(self) -> String {
        match self {
            SpoolKind::Sqlite => "sqlite".to_owned(),
            SpoolKind::Nats { nodes: 1 } => "nats".to_owned(),
            SpoolKind::Nats { nodes } => format!("nats-r{nodes}"),
        }
    }
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    parse_args_over(
        args,
        Options {
            concurrency: 32,
            seconds: 20,
            rate: None,
            spool: SpoolKind::Sqlite,
            replicas: 1,
            serve_env: Vec::new(),
            floor: false,
        },
    )
}

/// The arguments, over these defaults.
fn parse_args_over(args: &[&str], mut options: Options) -> anyhow::Result<Options> {
    let mut args = args.iter().copied().skip_while(|arg| *arg == "--");
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg {
            "--concurrency" => options.concurrency = value()?.parse().context(USAGE)?,
            "--seconds" => options.seconds = value()?.parse().context(USAGE)?,
            "--rate" => options.rate = Some(value()?.parse().context(USAGE)?),
            "--replicas" => options.replicas = value()?.parse().context(USAGE)?,
            "--floor" => options.floor = true,
            "--set" => {
                let setting = value()?;
                let (name, text) = setting
                    .split_once('=')
                    .with_context(|| format!("--set takes NAME=VALUE, not {setting:?}"))?;
                options.serve_env.push((name.to_owned(), text.to_owned()));
            }
            "--spool" => {
                options.spool = match value()? {
                    "sqlite" => SpoolKind::Sqlite,
                    "nats" => SpoolKind::Nats { nodes: 1 },
                    "nats-r3" => SpoolKind::Nats { nodes: 3 },
                    other => bail!("unknown spool {other:?}\n{USAGE}"),
                }
            }
            _ => bail!("unexpected argument {arg:?}\n{USAGE}"),
        }
    }
    ensure!(
        (1..=1024).contains(&options.concurrency),
        "--concurrency must be 1 to 1024"
    );
    ensure!(
        (1..=600).contains(&options.seconds),
        "--seconds must be 1 to 600"
    );
    if let Some(rate) = options.rate {
        ensure!(rate > 0.0, "--rate must be positive");
    }
    ensure!(
        (1..=8).contains(&options.replicas),
        "--replicas must be 1 to 8"
    );
    ensure!(
        options.replicas == 1 || options.spool != SpoolKind::Sqlite,
        "--replicas above 1 needs a NATS spool: SQLite belongs to one process"
    );
    ensure!(
        !options.floor || (options.spool == SpoolKind::Sqlite && options.replicas == 1),
        "--floor replaces one serve and its spool: no --spool nats or --replicas with it"
    );
    Ok(options)
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    let release = crate::bench_import::build_release_binaries()?;
    let bridge = release.join("braze-mixpanel-bridge");
    let sink = Sink::start(&release.join("examples").join("import_sink"))?;
    let figures = run_with(&bridge, sink, &options)?;
    say(&report(&[(&options, &figures)]));
    ensure!(
        figures.stop_secs.is_finite(),
        "serve did not stop cleanly on SIGTERM"
    );
    Ok(())
}

/// `cargo xtask bench nats`: the embedded spool (one process), NATS on one
/// server and NATS R3 (two replicas each), unpaced and paced to 10,000
/// events/s, in one table.
pub(crate) fn run_nats_comparison(args: &[&str]) -> anyhow::Result<()> {
    let base = parse_args(args)?;
    let mut all_options = Vec::new();
    for (spool, replicas) in [
        (SpoolKind::Sqlite, 1),
        (SpoolKind::Nats { nodes: 1 }, 2),
        (SpoolKind::Nats { nodes: 3 }, 2),
    ] {
        for rate in [None, Some(NATS_PACED_RATE)] {
            all_options.push(Options {
                spool,
                replicas,
                rate,
                ..base.clone()
            });
        }
    }
    let runs = run_each(all_options)?;
    let table: Vec<(&Options, &Figures)> = runs.iter().map(|(o, f)| (o, f)).collect();
    say(&report(&table));
    Ok(())
}

/// Builds the release binaries once, then runs each load against a fresh
/// sink, one after the other.
fn run_each(all_options: Vec<Options>) -> anyhow::Result<Vec<(Options, Figures)>> {
    let release = crate::bench_import::build_release_binaries()?;
    let bridge = release.join("braze-mixpanel-bridge");
    let mut runs = Vec::new();
    for options in all_options {
        let sink = Sink::start(&release.join("examples").join("import_sink"))?;
        let figures = run_with(&bridge, sink, &options)?;
        runs.push((options, figures));
    }
    Ok(runs)
}

/// `cargo xtask bench cost`: what `serve` costs at one Mixpanel project's
/// full rate. Load paced to 30,000 events/s (8 connections, 100-event
/// batches) for 10 s, delivered to the loopback sink; the figure is events
/// per CPU-second of `serve` from the first request until the spool is
/// drained. The embedded spool, then NATS on one server (one replica, the
/// NATS server's CPU apart), unless `--spool` picks one.
pub(crate) fn run_cost(args: &[&str]) -> anyhow::Result<()> {
    let spool_given = args.contains(&"--spool");
    let base = parse_args_over(
        args,
        Options {
            concurrency: 8,
            seconds: 10,
            rate: Some(COST_RATE),
            spool: SpoolKind::Sqlite,
            replicas: 1,
            serve_env: Vec::new(),
            floor: false,
        },
    )?;
    let spools = if spool_given {
        vec![base.spool]
    } else {
        vec![SpoolKind::Sqlite, SpoolKind::Nats { nodes: 1 }]
    };
    // `--floor`: the floor first, then serve on each spool, in one sitting.
    let floor = base.floor.then(|| base.clone());
    let runs = run_each(
        floor
            .into_iter()
            .chain(spools.into_iter().map(|spool| Options {
                spool,
                floor: false,
                ..base.clone()
            }))
            .collect(),
    )?;
    let table: Vec<(&Options, &Figures)> = runs.iter().map(|(o, f)| (o, f)).collect();
    say(&report(&table));
    say(&cost_report(&table));
    Ok(())
}

/// One Mixpanel project's full rate, the rate `bench cost` paces to.
const COST_RATE: f64 = 30_000.0;
/// Issue 13's goal: events per CPU-second of `serve`, end to end, on the
/// embedded spool (0.15 of a core at 30,000 events/s).
const GOAL_EVENTS_PER_CPU_SEC: f64 = 200_000.0;

fn cost_report(runs: &[(&Options, &Figures)]) -> String {
    let mut text = String::from(
        "cost (serve's CPU from the first request until the spool is drained):\n\n\
         | spool | pacing | events accepted | events delivered | serve CPU s | events per CPU-second | cores at the paced rate | NATS CPU s | events per CPU-second with NATS |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (options, figures) in runs {
        let serve_cpu = figures.cpu_secs();
        let per_cpu_sec = figures.events_per_cpu_sec();
        let with_nats = figures.accepted_events as f64 / (serve_cpu + figures.nats_cpu_secs);
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.3} | {:.2} | {:.0} |",
            options.label(),
            options
                .rate
                .map_or("none".to_owned(), |rate| format!("{rate:.0}/s")),
            figures.accepted_events,
            figures.sink_events,
            serve_cpu,
            per_cpu_sec,
            options.rate.unwrap_or(f64::NAN) / per_cpu_sec,
            figures.nats_cpu_secs,
            with_nats,
        );
    }
    let floor = runs
        .iter()
        .find(|(options, _)| options.floor)
        .map(|(_, figures)| figures.events_per_cpu_sec());
    for (options, figures) in runs {
        if options.spool == SpoolKind::Sqlite && !options.floor {
            let per_cpu_sec = figures.events_per_cpu_sec();
            let _ = writeln!(
                text,
                "\ngoal ≥ {GOAL_EVENTS_PER_CPU_SEC:.0} events per CPU-second on the embedded spool: {}",
                if per_cpu_sec >= GOAL_EVENTS_PER_CPU_SEC {
                    "met"
                } else {
                    "NOT met"
                }
            );
            if let Some(floor) = floor {
                let _ = writeln!(
                    text,
                    "serve costs {:.1} times the floor ({floor:.0} events per CPU-second)",
                    floor / per_cpu_sec
                );
            }
        }
    }
    text
}

/// The paced rate of `bench nats`, at which the p99 goal is stated.
const NATS_PACED_RATE: f64 = 10_000.0;

/// A free loopback port, found by binding port 0 and letting it go.
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The running `serve`, killed when dropped unless it was stopped.
pub(super) struct Server {
    pub(super) child: Child,
    /// All `serve` wrote to stderr, once it has exited.
    pub(super) stderr: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts `serve` with these settings only (never the caller's
    /// `BRIDGE_*`, `MIXPANEL_*` or `BRAZE_*` ones) and waits up to 30 s until
    /// `/readyz` answers on `ops_address`.
    pub(super) fn start(
        bridge: &Path,
        env: &[(&str, &str)],
        ops_address: &str,
    ) -> anyhow::Result<Server> {
        let mut command = Command::new(bridge);
        command.arg("serve");
        Server::start_command(command, env, ops_address)
    }

    /// Starts `command` the way [`Server::start`] starts `serve`.
    fn start_command(
        mut command: Command,
        env: &[(&str, &str)],
        ops_address: &str,
    ) -> anyhow::Result<Server> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if ["MIXPANEL_", "BRIDGE_", "BRAZE_"]
                .iter()
                .any(|prefix| name_text.starts_with(prefix))
            {
                command.env_remove(name);
            }
        }
        command.env("RUST_LOG", "warn").envs(env.iter().copied());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        let stderr = collect(child.stderr.take());
        let mut server = Server { child, stderr };
        let ready_deadline = Instant::now() + Duration::from_secs(30);
        while http(ops_address, "GET", "/readyz").is_err() {
            if let Some(status) = server.child.try_wait()? {
                let text = server
                    .stderr
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default();
                bail!("serve exited with {status} before it was ready:\n{text}");
            }
            ensure!(
                Instant::now() < ready_deadline,
                "serve was not ready within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub(super) fn cpu_ticks(&self) -> u64 {
        pid_cpu_ticks(self.child.id())
    }

    /// SIGTERM, then up to 60 s for a graceful exit; how long it took.
    pub(super) fn stop(&mut self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed: {status}");
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "serve exited with {status}");
                return Ok(started.elapsed().as_secs_f64());
            }
            ensure!(
                Instant::now() < deadline,
                "serve did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, for the floor, which has nothing to finish; 0 s.
    fn kill(&mut self) -> anyhow::Result<f64> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Figures {
    load_secs: f64,
    requests: u64,
    accepted_events: u64,
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    cpu_load_secs: f64,
    cpu_drain_secs: f64,
    nats_cpu_secs: f64,
    peak_rss_bytes: u64,
    drain_secs: f64,
    sink_events: u64,
    sink_cpu_secs: f64,
    body_bytes: usize,
    stop_secs: f64,
}

impl Figures {
    /// The server's CPU-seconds, load and drain.
    fn cpu_secs(&self) -> f64 {
        self.cpu_load_secs + self.cpu_drain_secs
    }

    /// Events accepted per CPU-second of the server, the cost figure.
    fn events_per_cpu_sec(&self) -> f64 {
        self.accepted_events as f64 / self.cpu_secs()
    }

    fn events_per_sec(&self) -> f64 {
        self.accepted_events as f64 / self.load_secs
    }

    fn percentile_ms(&self, percent: usize) -> f64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return f64::NAN;
        }
        let idx = (n * percent / 100).min(n - 1);
        f64::from(self.latencies_us[idx]) / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.latencies_us
            .last()
            .map_or(f64::NAN, |&us| f64::from(us) / 1000.0)
    }
}

fn run_with(bridge: &Path, sink: Sink, options: &Options) -> anyhow::Result<Figures> {
    let clock_ticks = clock_ticks_per_sec();
    let data_dir = target_dir()
        .join("bench")
        .join(format!("ingest-data-{}", std::process::id()));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    std::fs::create_dir_all(&data_dir)?;
    let nats = match options.spool {
        SpoolKind::Sqlite => None,
        SpoolKind::Nats { nodes } => Some(
            nats_servers::Nats::cluster(&data_dir.join("nats"), nodes)
                .context("nats-server is not installed (apt-get install nats-server)")?,
        ),
    };
    let mut servers = Vec::with_capacity(options.replicas);
    let mut addresses = Vec::with_capacity(options.replicas);
    for replica in 0..options.replicas {
        let address = format!("127.0.0.1:{}", free_port()?);
        let replica_dir = data_dir.join(format!("replica-{replica}"));
        let sink_url = format!("http://{}", sink.address);
        let replica_dir_text = replica_dir.to_string_lossy();
        let mut env = vec![
            ("BRIDGE_LISTEN", address.as_str()),
            // The bench reads /status and /readyz on the same address.
            ("BRIDGE_OPS_ON_INGEST_LISTENER", "true"),
            ("BRIDGE_DATA_DIR", &replica_dir_text),
            ("BRIDGE_CURRENTS_TOKENS", CURRENTS_TOKEN),
            ("MIXPANEL_API_URL", &sink_url),
            ("MIXPANEL_PROJECT_TOKEN", "bench-token"),
        ];
        let nats_urls = nats.as_ref().map(nats_servers::Nats::urls);
        let nats_replicas = nats.as_ref().map(|nats| nats.nodes.len().to_string());
        if let (Some(urls), Some(replicas)) = (&nats_urls, &nats_replicas) {
            env.extend([
                ("BRIDGE_SPOOL", "nats"),
                ("BRIDGE_NATS_URLS", urls.as_str()),
                ("BRIDGE_NATS_REPLICAS", replicas.as_str()),
            ]);
        }
        env.extend(
            options
                .serve_env
                .iter()
                .map(|(name, text)| (name.as_str(), text.as_str())),
        );
        let server = if options.floor {
            let mut command = Command::new(std::env::current_exe()?);
            command.args(["bench", "floor-server"]);
            Server::start_command(command, &env, &address)?
        } else {
            Server::start(bridge, &env, &address)?
        };
        if !options.serve_env.is_empty() {
            let settings: Vec<String> = options
                .serve_env
                .iter()
                .map(|(name, text)| format!("{name}={text}"))
                .collect();
            say(&format!("serve {replica} settings: {}", settings.join(" ")));
        }
        say(&format!(
            "serve {replica} ready on {address} (pid {}), data in {}",
            server.child.id(),
            replica_dir.display()
        ));
        servers.push(server);
        addresses.push(address);
    }
    let nats_pids: Vec<u32> = nats
        .iter()
        .flat_map(|nats| nats.nodes.iter().filter_map(nats_servers::NatsNode::pid))
        .collect();
    say(&format!(
        "spool {}, {} replica(s), sink on {}",
        options.label(),
        options.replicas,
        sink.address
    ));
    let pids: Vec<u32> = servers.iter().map(|server| server.child.id()).collect();

    let pool = Arc::new(body_pool(20_241_128));
    let body_bytes = pool.iter().map(|body| body.bytes.len()).sum::<usize>() / pool.len();
    let stop_polling = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let poller = {
        let stop_polling = Arc::clone(&stop_polling);
        let peak_rss = Arc::clone(&peak_rss);
        std::thread::spawn(move || {
            while !stop_polling.load(Ordering::Relaxed) {
                for pid in &pids {
                    if let Some(hwm) = vm_hwm_bytes(*pid) {
                        peak_rss.fetch_max(hwm, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    say(&format!(
        "load: {} connections for {} s, {}",
        options.concurrency,
        options.seconds,
        options.rate.map_or("unpaced".to_owned(), |rate| format!(
            "paced to {rate:.0} events/s"
        ))
    ));
    let cpu_ticks = |servers: &[Server]| servers.iter().map(Server::cpu_ticks).sum::<u64>();
    let nats_ticks = || nats_pids.iter().map(|pid| pid_cpu_ticks(*pid)).sum::<u64>();
    let cpu_before = cpu_ticks(&servers);
    let nats_before = nats_ticks();
    let started = Instant::now();
    let end = started + Duration::from_secs(options.seconds);
    let interval = options.rate.map(|rate| {
        Duration::from_secs_f64(EVENTS_PER_BATCH as f64 * options.concurrency as f64 / rate)
    });
    let workers: Vec<_> = (0..options.concurrency)
        .map(|thread| {
            let pool = Arc::clone(&pool);
            let address = addresses[thread % addresses.len()].clone();
            let threads = options.concurrency;
            std::thread::spawn(move || {
                load((thread, threads), &address, &pool, (started, end), interval)
            })
        })
        .collect();
    let mut results = Vec::new();
    for worker in workers {
        results.push(
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?,
        );
    }
    let load_secs = started.elapsed().as_secs_f64();
    let load_end = Instant::now();
    let cpu_after_load = cpu_ticks(&servers);

    let mut latencies_us = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut accepted_events = 0;
    for result in results {
        latencies_us.extend(result.latencies_us);
        accepted_events += result.accepted_events;
        for (status, count) in result.statuses {
            *statuses.entry(status).or_insert(0) += count;
        }
    }
    latencies_us.sort_unstable();
    let requests = latencies_us.len() as u64;

    say(&format!(
        "load done: {accepted_events} events accepted in {load_secs:.1} s; draining the spool"
    ));
    let address = &addresses[0];
    let drain_secs = loop {
        let status = http(address, "GET", "/status")?;
        if json_number(&status, "batches")? == 0 {
            break load_end.elapsed().as_secs_f64();
        }
        ensure!(
            load_end.elapsed() < DRAIN_DEADLINE,
            "the spool did not drain within {} s: {status}",
            DRAIN_DEADLINE.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let cpu_after_drain = cpu_ticks(&servers);
    let nats_after = nats_ticks();
    stop_polling.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let status = http(address, "GET", "/status")?;
    let mut stop = Ok(0.0_f64);
    for server in &mut servers {
        // The floor has nothing to finish and no handler for SIGTERM.
        let stopped = if options.floor {
            server.kill()
        } else {
            server.stop()
        };
        let text = server
            .stderr
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        for line in text.lines().take(20) {
            say(&format!("serve said: {line}"));
        }
        stop = match (stop, stopped) {
            (Ok(longest), Ok(secs)) => Ok(longest.max(secs)),
            (Err(error), _) | (_, Err(error)) => Err(error),
        };
    }
    drop(nats);
    let sink_cpu_secs = sink.cpu_ticks() as f64 / clock_ticks;
    let stats = sink.stats()?;
    sink.stop()?;
    let sink_events = json_number(&stats, "events")?;
    let stop_secs = match stop {
        Ok(secs) => secs,
        Err(error) => {
            say(&format!("WARNING: {error}"));
            f64::NAN
        }
    };
    ensure!(
        options.floor || sink_events >= accepted_events,
        "the sink counted {sink_events} events, fewer than the {accepted_events} accepted: {stats}; serve: {status}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(Figures {
        load_secs,
        requests,
        accepted_events,
        latencies_us,
        statuses,
        cpu_load_secs: (cpu_after_load - cpu_before) as f64 / clock_ticks,
        cpu_drain_secs: (cpu_after_drain - cpu_after_load) as f64 / clock_ticks,
        nats_cpu_secs: (nats_after - nats_before) as f64 / clock_ticks,
        peak_rss_bytes: peak_rss.load(Ordering::Relaxed),
        drain_secs,
        sink_events,
        sink_cpu_secs,
        body_bytes,
        stop_secs,
    })
}

fn report(runs: &[(&Options, &Figures)]) -> String {
    let mut text = String::from(
        "results (serve on loopback, delivering to import_sink):\n\n\
         | spool | replicas | connections | pacing | accepted events/s | requests | p50 ms | p99 ms | max ms | non-2xx | serve CPU s (load) | serve CPU s (drain) | NATS CPU s | peak RSS MB | drain s | sink events |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (options, figures) in runs {
        let non_2xx: Vec<String> = figures
            .statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(status, count)| {
                if *status == 0 {
                    format!("{count} × connection error")
                } else {
                    format!("{count} × {status}")
                }
            })
            .collect();
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            options.label(),
            options.replicas,
            options.concurrency,
            options
                .rate
                .map_or("none".to_owned(), |rate| format!("{rate:.0}/s")),
            figures.events_per_sec(),
            figures.requests,
            figures.percentile_ms(50),
            figures.percentile_ms(99),
            figures.max_ms(),
            if non_2xx.is_empty() {
                "none".to_owned()
            } else {
                non_2xx.join(", ")
            },
            figures.cpu_load_secs,
            figures.cpu_drain_secs,
            figures.nats_cpu_secs,
            figures.peak_rss_bytes as f64 / 1e6,
            figures.drain_secs,
            figures.sink_events,
        );
    }
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    for (options, figures) in runs {
        let _ = writeln!(
            text,
            "\n{} ({} replica(s), {}): {} s of load, {} events accepted, bodies about {} bytes ({} events), sink CPU {:.1} s, serve stopped {:.1} s after SIGTERM",
            options.label(),
            options.replicas,
            options
                .rate
                .map_or("unpaced".to_owned(), |rate| format!("paced to {rate:.0}/s")),
            figures.load_secs.round(),
            figures.accepted_events,
            figures.body_bytes,
            EVENTS_PER_BATCH,
            figures.sink_cpu_secs,
            figures.stop_secs,
        );
        let (goal_rate, goal_p99) = match options.spool {
            SpoolKind::Sqlite => (GOAL_EVENTS_PER_SEC, GOAL_P99_MS),
            SpoolKind::Nats { nodes: 1 } => (GOAL_NATS_EVENTS_PER_SEC, f64::NAN),
            SpoolKind::Nats { .. } => (GOAL_NATS_R3_EVENTS_PER_SEC, GOAL_NATS_R3_P99_MS),
        };
        if options.rate.is_none() {
            let _ = writeln!(
                text,
                "goal ≥ {goal_rate:.0} events/s: {}",
                verdict(figures.events_per_sec() >= goal_rate)
            );
        } else if goal_p99.is_finite() {
            let _ = writeln!(
                text,
                "goal p99 ≤ {goal_p99} ms: {}",
                verdict(figures.percentile_ms(99) <= goal_p99)
            );
        }
        if options.spool == SpoolKind::Sqlite {
            let _ = writeln!(
                text,
                "goal peak RSS ≤ {GOAL_RSS_MB} MB: {}",
                verdict(figures.peak_rss_bytes as f64 / 1e6 <= GOAL_RSS_MB)
            );
        }
    }
    text
}

/// The CPU ticks (user and system) of a process so far.
fn pid_cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_fields(&stat, &[14, 15]))
        .map_or(0, |fields| fields.iter().sum())
}

/// One pre-generated request body and where its events' id suffixes are.
struct Body {
    bytes: Vec<u8>,
    /// Offsets of the 12 hex digits ending each event's id.
    id_suffixes: Vec<usize>,
}

/// Pre-generated bodies: Custom HTTP connector batches of 100 events from
/// the workspace's generator (`currents_model::synthetic`), half custom
/// events (3–7 custom properties) and half e-mail Send, Delivery, Open and
/// Click, every user with an external id (so that delivery sends every
/// event), about 600 bytes an event as before the shared generator.
fn body_pool(seed: u64) -> Vec<Body> {
    let config = synthetic::Config::new(seed)
        .mix(synthetic::Mix::weighted(&[
            (EventType::BehaviorsCustomEvent, 4),
            (EventType::MessagesEmailSend, 1),
            (EventType::MessagesEmailDelivery, 1),
            (EventType::MessagesEmailOpen, 1),
            (EventType::MessagesEmailClick, 1),
        ]))
        .users(250_000)
        .external_ids(100)
        .optional_fields(45)
        .custom_properties(3..=7)
        .start_time(1_764_300_000);
    let mut generator = synthetic::Generator::new(config);
    (0..BODY_POOL)
        .map(|_| {
            let mut text = String::with_capacity(EVENTS_PER_BATCH * 700);
            let events = generator.write_envelope(EVENTS_PER_BATCH, &mut text);
            Body {
                bytes: text.into_bytes(),
                // The id is a UUID: its last 12 characters are hex digits.
                id_suffixes: events.iter().map(|event| event.id.end - 12).collect(),
            }
        })
        .collect()
}

/// Writes `value` as 12 lowercase hex digits into `out`.
fn write_hex12(out: &mut [u8], value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (idx, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((value >> (4 * (11 - idx))) & 0xf) as usize];
    }
}

#[derive(Default)]
struct LoadResult {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    accepted_events: u64,
}

/// One connection's share of the load, until `end`.
fn load(
    (thread, threads): (usize, usize),
    address: &str,
    pool: &[Body],
    (started, end): (Instant, Instant),
    interval: Option<Duration>,
) -> LoadResult {
    let mut result = LoadResult::default();
    let mut request = Vec::with_capacity(128 * 1024);
    let mut response = Vec::with_capacity(4096);
    let mut stream: Option<TcpStream> = None;
    let mut sequence: u64 = 0;
    // Spread paced threads over the first interval.
    let offset = interval.map_or(Duration::ZERO, |interval| {
        interval.mul_f64(thread as f64 / threads as f64)
    });
    loop {
        let now = Instant::now();
        if let Some(interval) = interval {
            let due = started + offset + interval.mul_f64(sequence as f64);
            if due >= end {
                break;
            }
            if due > now {
                std::thread::sleep(due - now);
            }
        } else if now >= end {
            break;
        }
        let body = &pool[(thread + sequence as usize) % pool.len()];
        request.clear();
        let _ = write!(
            request,
            "POST /currents HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CURRENTS_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.bytes.len()
        );
        let body_start = request.len();
        request.extend_from_slice(&body.bytes);
        for (idx, &suffix) in body.id_suffixes.iter().enumerate() {
            let unique = ((thread as u64) << 36) | (sequence << 7) | idx as u64;
            let at = body_start + suffix;
            write_hex12(&mut request[at..at + 12], unique);
        }
        sequence += 1;
        let sent = Instant::now();
        let outcome = match stream.as_mut() {
            Some(stream) => exchange(stream, &request, &mut response),
            None => TcpStream::connect(address)
                .map_err(anyhow::Error::from)
                .and_then(|new| {
                    new.set_nodelay(true)?;
                    new.set_read_timeout(Some(Duration::from_secs(30)))?;
                    new.set_write_timeout(Some(Duration::from_secs(30)))?;
                    let new = stream.insert(new);
                    exchange(new, &request, &mut response)
                }),
        };
        let latency = sent.elapsed();
        let status = match outcome {
            Ok((status, keep_alive)) => {
                if !keep_alive {
                    stream = None;
                }
                status
            }
            Err(_) => {
                stream = None;
                0
            }
        };
        result
            .latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        *result.statuses.entry(status).or_insert(0) += 1;
        if (200..300).contains(&status) {
            result.accepted_events += body.id_suffixes.len() as u64;
        }
    }
    result
}

/// Sends one request and reads its response: the status and whether the
/// connection stays open.
pub(super) fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    response: &mut Vec<u8>,
) -> anyhow::Result<(u16, bool)> {
    stream.write_all(request)?;
    response.clear();
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = find(response, b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed before the response head");
        response.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&response[..head_end])?.to_ascii_lowercase();
    let (status, content_length, chunked, keep_alive) = parse_head(&head)?;
    if chunked {
        while find(&response[head_end..], b"0\r\n\r\n").is_none() {
            let n = stream.read(&mut chunk)?;
            ensure!(n > 0, "connection closed inside a chunked body");
            response.extend_from_slice(&chunk[..n]);
        }
    } else {
        while response.len() < head_end + content_length {
            let n = stream.read(&mut chunk)?;
            ensure!(n > 0, "connection closed inside the body");
            response.extend_from_slice(&chunk[..n]);
        }
    }
    Ok((status, keep_alive))
}

/// Status, Content-Length, chunked and keep-alive from a lowercased head.
fn parse_head(head: &str) -> anyhow::Result<(u16, usize, bool, bool)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut content_length = 0;
    let mut chunked = false;
    let mut keep_alive = status_line.starts_with("http/1.1");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim() {
            "content-length" => content_length = value.parse()?,
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => keep_alive = !value.contains("close"),
            _ => {}
        }
    }
    Ok((status, content_length, chunked, keep_alive))
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use currents_mixpanel::{Mapper, MappingConfig, Outcome};
    use currents_model::Batch;

    use super::*;

    #[test]
    fn parses_options() {
        let options = parse_args(&["--concurrency", "8", "--rate", "30000"]).ok();
        assert_eq!(
            options,
            Some(Options {
                concurrency: 8,
                seconds: 20,
                rate: Some(30_000.0),
                spool: SpoolKind::Sqlite,
                replicas: 1,
                serve_env: Vec::new(),
                floor: false,
            })
        );
        let nats = parse_args(&["--spool", "nats-r3", "--replicas", "2"]).ok();
        assert_eq!(
            nats.map(|options| (options.spool, options.replicas)),
            Some((SpoolKind::Nats { nodes: 3 }, 2))
        );
        assert!(
            parse_args(&["--replicas", "2"]).is_err(),
            "SQLite is one process"
        );
        assert!(parse_args(&["--spool", "kafka"]).is_err());
        assert_eq!(parse_args(&["--floor"]).ok().map(|o| o.floor), Some(true));
        assert!(
            parse_args(&["--floor", "--spool", "nats"]).is_err(),
            "the floor has no spool"
        );
        assert!(parse_args(&["--bogus"]).is_err());
        assert!(parse_args(&["--seconds"]).is_err());
        let options = parse_args(&["--set", "BRIDGE_DELIVERY_LINGER_MS=0", "--set", "A=b=c"]);
        assert_eq!(
            options.ok().map(|options| options.serve_env),
            Some(vec![
                ("BRIDGE_DELIVERY_LINGER_MS".to_owned(), "0".to_owned()),
                ("A".to_owned(), "b=c".to_owned()),
            ])
        );
        assert!(parse_args(&["--set", "NO_EQUALS"]).is_err());
    }

    #[test]
    fn bodies_are_batches_of_realistic_events_with_rewritable_ids() {
        let pool = body_pool(7);
        assert_eq!(pool.len(), BODY_POOL);
        for body in &pool {
            let text = std::str::from_utf8(&body.bytes).unwrap_or_default();
            assert!(text.starts_with("{\"events\":[{") && text.ends_with("}]}"));
            assert_eq!(text.matches("\"event_type\":").count(), EVENTS_PER_BATCH);
            assert_eq!(body.id_suffixes.len(), EVENTS_PER_BATCH);
            let per_event = body.bytes.len() / EVENTS_PER_BATCH;
            assert!((450..=750).contains(&per_event), "{per_event} bytes");
            for &at in &body.id_suffixes {
                assert_eq!(body.bytes.get(at + 12), Some(&b'"'));
                assert_eq!(body.bytes.get(at - 1), Some(&b'-'));
            }
            // Delivery sends every event, or the sink's count would not add up.
            let mapper = Mapper::new(MappingConfig::default());
            let batch = Batch::parse_events(text).unwrap_or_default();
            assert_eq!(batch.len(), EVENTS_PER_BATCH);
            for parsed in batch {
                assert!(
                    matches!(mapper.map_parsed(parsed.event), Outcome::Mapped(_)),
                    "{}",
                    parsed.raw
                );
            }
        }
        let mut digits = [0_u8; 12];
        write_hex12(&mut digits, 0xab_cdef_0123);
        assert_eq!(&digits, b"00abcdef0123");
    }

    #[test]
    fn parses_response_heads() {
        let head = "http/1.1 200 ok\r\ncontent-length: 17\r\n\r\n";
        assert_eq!(parse_head(head).ok(), Some((200, 17, false, true)));
        let head = "http/1.1 503 service unavailable\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(head).ok(), Some((503, 0, true, false)));
        assert!(parse_head("garbage\r\n\r\n").is_err());
    }
}
