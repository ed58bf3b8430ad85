//! `cargo xtask bench cohorts`: the cohort import of `braze-mixpanel-bridge
//! serve`, from Mixpanel's cohort-sync webhook to a loopback Braze.
//!
//! It builds the release binary as the other benches do and, in a second
//! cargo invocation (so that `cohort-import`'s dev-dependencies do not
//! change the features the binary is built with), the `braze_sink` and
//! `snapshot_diff` examples of `cohort-import`. It starts `braze_sink` (a
//! stand-in for Braze's `/users/track` that allows 3,000 requests in any
//! rolling 3 s by arrival time, answering 429 beyond, and notes when each
//! external id first arrived) on a free loopback port, and `serve` on
//! another: the webhook on with Basic credentials, the attribute writer
//! sending to the sink (`BRAZE_API_URL`) at the default rate limit (3,000
//! requests per 3 s), a fresh data directory under `target/bench/`, and a
//! Mixpanel URL that is never called. Then, in order:
//!
//! 1. **Webhook intake.** Pages of 1,000 members shaped like Mixpanel's
//!    (`mixpanel_distinct_id`, email, names, phone number), every id fresh,
//!    are posted to `POST /mixpanel/cohorts` over keep-alive HTTP/1.1
//!    connections (`std::net::TcpStream`, hand-written requests, all built
//!    before the clock starts): `add_members` on one connection (Mixpanel
//!    syncs one page at a time), `add_members` on C connections, and one
//!    `members` snapshot session on one connection (into another cohort, so
//!    that completing it removes no one). Each run reports members
//!    acknowledged (200) per second of wall time and each page's ack latency
//!    (from writing the request to reading the whole answer). The writer
//!    drains to the sink meanwhile, as it would in production.
//! 2. **Braze writer.** The intake leaves a backlog (900,000 changes by
//!    default). xtask waits until the sink has seen every acknowledged id
//!    added and `/status` shows no pending change, checks the set of ids,
//!    and reports the writer's changes/s from the first to the last arrival
//!    at the sink; the same from 3.1 s after the first arrival (once the
//!    client's first window, which it may spend at once, is used up) and
//!    from the end of the intake (when the writer had the machine to
//!    itself); the changes that arrived in each second; and the sink's
//!    request count, 429s and the most requests it saw in any rolling 3 s.
//! 3. **Latency.** With the backlog drained, pages of 100 fresh
//!    `add_members` are posted on one connection at 5 pages/s for 20 s; a
//!    page's latency is the latest arrival at the sink of its ids minus the
//!    time its 200 was read (UNIX milliseconds, one machine's clock).
//! 4. **Snapshot diff.** After `serve` has stopped (SIGTERM), the
//!    `snapshot_diff` example (what `cargo run --release -p cohort-import
//!    --example snapshot_diff -- N` runs; started directly so that its
//!    deadline can stop it) for N = 1,000,000, and 10,000,000 with
//!    `--ten-million`, with its store under `target/bench/`; its output line
//!    is reported.
//!
//! `serve`'s CPU seconds (`/proc/<pid>/stat`) are reported per phase and
//! its peak RSS (`VmHWM`, polled every 5 ms) over the whole run. The tool
//! fails if the sink did not receive every acknowledged member id, if the
//! sink refused a request for its rate limit or saw more than 3,000 in a
//! rolling 3 s, if a snapshot diff fails, or if `serve` does not stop
//! cleanly; a missed goal is printed as `NOT met` and is not a failure.
//! Every wait has a deadline. Linux only, loopback only.
//!
//! `--braze-delay-ms MS` makes the sink answer each request that much later,
//! like a Braze a network away, to see what the writer's concurrency allows
//! when the rate limit is not what holds it back.
//!
//! ```text
//! cargo xtask bench cohorts [--pages N] [--page-size M] [--concurrency C] [--snapshot-pages N]
//!     [--latency-seconds S] [--latency-rate PAGES_PER_SEC] [--braze-delay-ms MS]
//!     [--diff-members N]... [--ten-million] [--no-snapshot-diff]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};

use super::ingest::{Server, exchange, free_port};
use crate::bench_import::{
    Sink, clock_ticks_per_sec, collect, http, json_number, say, target_dir, vm_hwm_bytes,
};
use crate::{cargo, run_command};

const USAGE: &str = "usage: cargo xtask bench cohorts [--pages N] [--page-size M] [--concurrency C] \
[--snapshot-pages N] [--latency-seconds S] [--latency-rate PAGES_PER_SEC] [--braze-delay-ms MS] \
[--diff-members N]... [--ten-million] [--no-snapshot-diff]";

const WEBHOOK_PATH: &str = "/mixpanel/cohorts";
const WEBHOOK_USER: &str = "mixpanel";
const WEBHOOK_PASSWORD: &str = "bench-webhook-password";
const BRAZE_KEY: &str = "bench-braze-rest-key";
const CURRENTS_TOKEN: &str = "bench-currents-token";
const PROJECT_ID: &str = "31337";
/// The cohort of the `add_members` pages (intake and latency).
const ADD_COHORT: &str = "101";
/// The cohort of the `members` snapshot: its own, so that completing the
/// snapshot removes none of the added members.
const SNAPSHOT_COHORT: &str = "102";
/// Members per page in the latency phase.
const LATENCY_PAGE_SIZE: usize = 100;

/// Braze's `/users/track` limit, which `serve` keeps by default and the
/// sink enforces.
const BRAZE_MAX_REQUESTS: u64 = 3000;
const BRAZE_WINDOW_SECS: f64 = 3.0;
const OBJECTS_PER_REQUEST: f64 = 75.0;
/// The client's window (3 s and its 100 ms margin): what the writer may
/// send at once before the limit holds it.
const BURST_MS: u64 = 3100;

const GOAL_MEMBERS_PER_SEC: f64 = 100_000.0;
/// 90 % of what the limit lets through: 3,000 requests per 3 s × 75.
const GOAL_CHANGES_PER_SEC: f64 =
    0.9 * BRAZE_MAX_REQUESTS as f64 / BRAZE_WINDOW_SECS * OBJECTS_PER_REQUEST;
const GOAL_LATENCY_P99_MS: f64 = 1000.0;
const GOAL_DIFF_MEMBERS: u64 = 1_000_000;
const GOAL_DIFF_SECS: f64 = 3.0;
const GOAL_DIFF_RSS_MB: f64 = 200.0;

#[derive(Debug, PartialEq)]
struct Options {
    pages: usize,
    page_size: usize,
    concurrency: usize,
    snapshot_pages: usize,
    latency_seconds: u64,
    latency_rate: f64,
    braze_delay_ms: u64,
    diff_members: Vec<u64>,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut options = Options {
        pages: 300,
        page_size: 1000,
        concurrency: 4,
        snapshot_pages: 300,
        latency_seconds: 20,
        latency_rate: 5.0,
        braze_delay_ms: 0,
        diff_members: Vec::new(),
    };
    let mut ten_million = false;
    let mut no_diff = false;
    let mut args = args.iter().copied().skip_while(|arg| *arg == "--");
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        let count = |text: &str| -> anyhow::Result<u64> {
            text.replace(['_', ','], "")
                .parse()
                .with_context(|| format!("{arg} {text}\n{USAGE}"))
        };
        match arg {
            "--pages" => options.pages = count(value()?)? as usize,
            "--page-size" => options.page_size = count(value()?)? as usize,
            "--concurrency" => options.concurrency = count(value()?)? as usize,
            "--snapshot-pages" => options.snapshot_pages = count(value()?)? as usize,
            "--latency-seconds" => options.latency_seconds = count(value()?)?,
            "--latency-rate" => options.latency_rate = value()?.parse().context(USAGE)?,
            "--braze-delay-ms" => options.braze_delay_ms = count(value()?)?,
            "--diff-members" => options.diff_members.push(count(value()?)?),
            "--ten-million" => ten_million = true,
            "--no-snapshot-diff" => no_diff = true,
            _ => bail!("unexpected argument {arg:?}\n{USAGE}"),
        }
    }
    ensure!(
        (1..=100_000).contains(&options.pages),
        "--pages must be 1 to 100,000"
    );
    ensure!(
        (1..=100_000).contains(&options.snapshot_pages),
        "--snapshot-pages must be 1 to 100,000"
    );
    ensure!(
        (1..=10_000).contains(&options.page_size),
        "--page-size must be 1 to 10,000 (serve's default page limit)"
    );
    ensure!(
        (1..=64).contains(&options.concurrency),
        "--concurrency must be 1 to 64"
    );
    ensure!(
        (1..=600).contains(&options.latency_seconds),
        "--latency-seconds must be 1 to 600"
    );
    ensure!(
        options.latency_rate > 0.0 && options.latency_rate <= 100.0,
        "--latency-rate must be above 0 and at most 100 pages/s"
    );
    ensure!(
        options.braze_delay_ms <= 10_000,
        "--braze-delay-ms must be at most 10,000"
    );
    ensure!(
        options.diff_members.iter().all(|&n| n >= 100),
        "--diff-members must be at least 100"
    );
    if options.diff_members.is_empty() {
        options.diff_members.push(GOAL_DIFF_MEMBERS);
    }
    if ten_million && !options.diff_members.contains(&10_000_000) {
        options.diff_members.push(10_000_000);
    }
    if no_diff {
        options.diff_members.clear();
    }
    Ok(options)
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    let release = crate::bench_import::build_release_binaries()?;
    run_command(cargo().args([
        "build",
        "--release",
        "-p",
        "cohort-import",
        "--example",
        "braze_sink",
        "--example",
        "snapshot_diff",
    ]))?;
    let bridge = release.join("braze-mixpanel-bridge");
    let sink = Sink::start_with(
        &release.join("examples").join("braze_sink"),
        &["--delay-ms", &options.braze_delay_ms.to_string()],
    )?;
    let mut figures = run_with(&bridge, sink, &options)?;
    for &members in &options.diff_members {
        figures.diffs.push(snapshot_diff(
            &release.join("examples").join("snapshot_diff"),
            members,
        )?);
    }
    say(&report(&options, &figures));
    let problems = figures.problems();
    ensure!(
        problems.is_empty(),
        "correctness check failed:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// One intake run: which pages, on how many connections.
#[derive(Debug, Clone)]
struct IntakeRun {
    action: &'static str,
    /// Tells its member ids apart from every other run's.
    tag: &'static str,
    cohort: &'static str,
    connections: usize,
    pages: usize,
    page_size: usize,
}

impl IntakeRun {
    /// The ids of page `page_idx` (from 0).
    fn ids(&self, page_idx: usize) -> impl Iterator<Item = String> + '_ {
        let first = page_idx * self.page_size;
        (first..first + self.page_size).map(|n| member_id(self.tag, n))
    }
}

fn member_id(tag: &str, n: usize) -> String {
    format!("bench-{tag}-{n:07}")
}

struct IntakeFigures {
    run: IntakeRun,
    secs: f64,
    /// Pages answered 200, by index.
    acked_pages: Vec<usize>,
    /// Per page, sorted.
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    cpu_secs: f64,
}

impl IntakeFigures {
    fn members_acked(&self) -> u64 {
        (self.acked_pages.len() * self.run.page_size) as u64
    }

    fn members_per_sec(&self) -> f64 {
        self.members_acked() as f64 / self.secs
    }
}

struct WriterFigures {
    /// When each acknowledged id first arrived at the sink, UNIX ms, sorted.
    arrivals_ms: Vec<u64>,
    /// When the last intake page was acknowledged, UNIX ms.
    intake_end_ms: u64,
    /// From the end of the intake until `/status` showed nothing pending.
    drain_secs: f64,
    missing: Vec<String>,
    cpu_secs: f64,
}

impl WriterFigures {
    fn first_ms(&self) -> u64 {
        self.arrivals_ms.first().copied().unwrap_or(0)
    }

    fn last_ms(&self) -> u64 {
        self.arrivals_ms.last().copied().unwrap_or(0)
    }

    /// Changes per second from the first to the last arrival.
    fn changes_per_sec(&self) -> f64 {
        self.arrivals_ms.len() as f64 / ((self.last_ms() - self.first_ms()) as f64 / 1000.0)
    }

    /// Changes arriving after `from_ms`, the seconds from then to the last
    /// arrival, and their rate.
    fn after(&self, from_ms: u64) -> (usize, f64, f64) {
        let count = self.arrivals_ms.len() - self.arrivals_ms.partition_point(|&ms| ms <= from_ms);
        let secs = self.last_ms().saturating_sub(from_ms) as f64 / 1000.0;
        (count, secs, count as f64 / secs)
    }

    /// Changes arriving in each whole second from the first arrival.
    fn per_second(&self) -> Vec<usize> {
        let first = self.first_ms();
        let mut counts = Vec::new();
        for &ms in &self.arrivals_ms {
            let second = ((ms - first) / 1000) as usize;
            if counts.len() <= second {
                counts.resize(second + 1, 0);
            }
            counts[second] += 1;
        }
        counts
    }
}

struct LatencyFigures {
    pages: usize,
    acked: usize,
    statuses: BTreeMap<u16, u64>,
    /// Per acknowledged page, sorted, in ms (may be slightly negative: the
    /// writer can reach the sink before the 200 is read).
    latencies_ms: Vec<f64>,
    missing: Vec<String>,
    cpu_secs: f64,
}

struct SinkFigures {
    requests: u64,
    objects: u64,
    rejected_429: u64,
    bad_requests: u64,
    max_window: u64,
    ids: u64,
    cpu_secs: f64,
}

struct DiffFigures {
    members: u64,
    line: String,
    diff_secs: f64,
    rss_mb: f64,
}

struct Figures {
    intake: Vec<IntakeFigures>,
    writer: WriterFigures,
    latency: LatencyFigures,
    sink: SinkFigures,
    peak_rss_bytes: u64,
    cpu_total_secs: f64,
    stop_secs: f64,
    diffs: Vec<DiffFigures>,
}

impl Figures {
    /// Failed correctness checks (not goals).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (what, missing) in [
            ("intake", &self.writer.missing),
            ("latency", &self.latency.missing),
        ] {
            if !missing.is_empty() {
                problems.push(format!(
                    "{} acknowledged member ids of the {what} phase never reached the sink, e.g. {}",
                    missing.len(),
                    missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if self.sink.rejected_429 > 0 {
            problems.push(format!(
                "the sink refused {} requests for the rate limit",
                self.sink.rejected_429
            ));
        }
        if self.sink.max_window > BRAZE_MAX_REQUESTS {
            problems.push(format!(
                "the sink saw {} requests within 3 s, above the limit of {BRAZE_MAX_REQUESTS}",
                self.sink.max_window
            ));
        }
        if self.sink.bad_requests > 0 {
            problems.push(format!(
                "the sink refused {} malformed requests",
                self.sink.bad_requests
            ));
        }
        if !self.stop_secs.is_finite() {
            problems.push("serve did not stop cleanly on SIGTERM".to_owned());
        }
        problems
    }
}

/// Starts `serve` with the cohort webhook on, writing to the sink.
fn start_serve(bridge: &Path, data_dir: &Path, sink: &Sink) -> anyhow::Result<(Server, String)> {
    let address = format!("127.0.0.1:{}", free_port()?);
    let credentials = format!("{WEBHOOK_USER}:{WEBHOOK_PASSWORD}");
    let braze_url = format!("http://{}", sink.address);
    let mut server = Server::start(
        bridge,
        &[
            ("BRIDGE_LISTEN", &address),
            // The bench reads /status and /readyz on the same address.
            ("BRIDGE_OPS_ON_INGEST_LISTENER", "true"),
            ("BRIDGE_DATA_DIR", &data_dir.to_string_lossy()),
            ("BRIDGE_CURRENTS_TOKENS", CURRENTS_TOKEN),
            // A Mixpanel that is never called: the cohort import needs none.
            ("MIXPANEL_API_URL", "http://127.0.0.1:9"),
            ("MIXPANEL_PROJECT_TOKEN", "bench-token"),
            ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", &credentials),
            ("BRAZE_REST_API_KEY", BRAZE_KEY),
            ("BRAZE_API_URL", &braze_url),
        ],
        &address,
    )?;
    // Whatever serve says goes to the terminal once it exits.
    let stderr = std::mem::replace(&mut server.stderr, std::sync::mpsc::channel().1);
    std::thread::spawn(move || {
        if let Ok(text) = stderr.recv() {
            for line in text.lines().take(40) {
                say(&format!("serve said: {line}"));
            }
        }
    });
    Ok((server, address))
}

fn run_with(bridge: &Path, sink: Sink, options: &Options) -> anyhow::Result<Figures> {
    let clock_ticks = clock_ticks_per_sec();
    let data_dir = target_dir()
        .join("bench")
        .join(format!("cohorts-data-{}", std::process::id()));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    std::fs::create_dir_all(&data_dir)?;
    let (mut server, address) = start_serve(bridge, &data_dir, &sink)?;
    let pid = server.child.id();
    say(&format!(
        "serve ready on {address} (pid {pid}), Braze sink on {}, data in {}",
        sink.address,
        data_dir.display()
    ));
    let stop_polling = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let poller = {
        let stop_polling = Arc::clone(&stop_polling);
        let peak_rss = Arc::clone(&peak_rss);
        std::thread::spawn(move || {
            while !stop_polling.load(Ordering::Relaxed) {
                if let Some(hwm) = vm_hwm_bytes(pid) {
                    peak_rss.fetch_max(hwm, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let cpu_start = server.cpu_ticks();

    // 1. Intake.
    let runs = [
        IntakeRun {
            action: "add_members",
            tag: "a1",
            cohort: ADD_COHORT,
            connections: 1,
            pages: options.pages,
            page_size: options.page_size,
        },
        IntakeRun {
            action: "add_members",
            tag: "ac",
            cohort: ADD_COHORT,
            connections: options.concurrency,
            pages: options.pages,
            page_size: options.page_size,
        },
        IntakeRun {
            action: "members",
            tag: "s1",
            cohort: SNAPSHOT_COHORT,
            connections: 1,
            pages: options.snapshot_pages,
            page_size: options.page_size,
        },
    ];
    let mut intake_figures = Vec::new();
    for run in runs {
        let requests = page_requests(&address, &run);
        say(&format!(
            "intake: {} pages of {} {} members on {} connection(s)",
            run.pages, run.page_size, run.action, run.connections
        ));
        let cpu_before = server.cpu_ticks();
        let figures = intake(&address, run, requests)?;
        let cpu_secs = (server.cpu_ticks() - cpu_before) as f64 / clock_ticks;
        say(&format!(
            "intake: {:.0} members/s, {} of {} pages acknowledged",
            figures.members_per_sec(),
            figures.acked_pages.len(),
            figures.run.pages
        ));
        intake_figures.push(IntakeFigures {
            cpu_secs,
            ..figures
        });
    }
    let intake_end = Instant::now();
    let intake_end_ms = unix_ms();
    let cpu_after_intake = server.cpu_ticks();

    // 2. The writer drains the backlog.
    let expected: u64 = intake_figures
        .iter()
        .map(IntakeFigures::members_acked)
        .sum();
    say(&format!("writer: waiting for {expected} ids at the sink"));
    let deadline = Duration::from_secs(120) + Duration::from_millis(expected / 10);
    wait_for_sink_ids(&sink, expected, deadline)?;
    wait_until_nothing_pending(&address, Duration::from_secs(60))?;
    let drain_secs = intake_end.elapsed().as_secs_f64();
    let cpu_after_drain = server.cpu_ticks();
    let arrivals = parse_arrivals(&http(&sink.address, "GET", "/arrivals?prefix=bench-")?)?;
    let mut missing = Vec::new();
    let mut times = Vec::with_capacity(expected as usize);
    for figures in &intake_figures {
        for &page_idx in &figures.acked_pages {
            for id in figures.run.ids(page_idx) {
                match arrivals.get(&id) {
                    Some(&ms) => times.push(ms),
                    None => missing.push(id),
                }
            }
        }
    }
    drop(arrivals);
    times.sort_unstable();
    let writer = WriterFigures {
        arrivals_ms: times,
        intake_end_ms,
        drain_secs,
        missing,
        cpu_secs: (cpu_after_drain - cpu_after_intake) as f64 / clock_ticks,
    };
    say(&format!(
        "writer: {} changes from the first to the last arrival in {:.2} s: {:.0} changes/s",
        writer.arrivals_ms.len(),
        (writer.last_ms() - writer.first_ms()) as f64 / 1000.0,
        writer.changes_per_sec()
    ));

    // 3. Latency with the backlog drained.
    say(&format!(
        "latency: pages of {LATENCY_PAGE_SIZE} add_members at {} pages/s for {} s",
        options.latency_rate, options.latency_seconds
    ));
    let latency = latency(&address, &sink, options, expected)?;
    let cpu_after_latency = server.cpu_ticks();
    let latency = LatencyFigures {
        cpu_secs: (cpu_after_latency - cpu_after_drain) as f64 / clock_ticks,
        ..latency
    };

    let stop = server.stop();
    stop_polling.store(true, Ordering::Relaxed);
    poller
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS poller panicked"))?;
    let stop_secs = match stop {
        Ok(secs) => secs,
        Err(error) => {
            say(&format!("WARNING: {error}"));
            f64::NAN
        }
    };
    let stats = sink.stats()?;
    let sink_cpu_secs = sink.cpu_ticks() as f64 / clock_ticks;
    sink.stop()?;
    let sink = SinkFigures {
        requests: json_number(&stats, "requests")?,
        objects: json_number(&stats, "objects")?,
        rejected_429: json_number(&stats, "rejected_429")?,
        bad_requests: json_number(&stats, "bad_requests")?,
        max_window: json_number(&stats, "max_requests_in_any_3s_window")?,
        ids: json_number(&stats, "ids")?,
        cpu_secs: sink_cpu_secs,
    };
    if stop_secs.is_finite() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(Figures {
        intake: intake_figures,
        writer,
        latency,
        sink,
        peak_rss_bytes: peak_rss.load(Ordering::Relaxed),
        cpu_total_secs: (cpu_after_latency - cpu_start) as f64 / clock_ticks,
        stop_secs,
        diffs: Vec::new(),
    })
}

/// The HTTP requests of a run's pages, in page order.
fn page_requests(address: &str, run: &IntakeRun) -> Vec<Vec<u8>> {
    let session = format!("bench-session-{}", run.tag);
    (0..run.pages)
        .map(|page_idx| {
            let body = page_body(
                run.action,
                run.cohort,
                &session,
                (page_idx + 1, run.pages),
                run.ids(page_idx),
            );
            post_request(address, &body)
        })
        .collect()
}

/// One webhook page as Mixpanel sends it.
fn page_body(
    action: &str,
    cohort: &str,
    session: &str,
    (page, total_pages): (usize, usize),
    ids: impl Iterator<Item = String>,
) -> String {
    let mut body = String::with_capacity(160 * 1024);
    let _ = write!(
        body,
        "{{\"action\":\"{action}\",\"parameters\":{{\"mixpanel_project_id\":\"{PROJECT_ID}\",\
         \"mixpanel_cohort_id\":\"{cohort}\",\"mixpanel_cohort_name\":\"Bench cohort {cohort}\",\
         \"mixpanel_cohort_description\":\"\",\"mixpanel_session_id\":\"{session}\",\
         \"page_info\":{{\"total_pages\":{total_pages},\"page_count\":{page}}},\"members\":["
    );
    for (idx, id) in ids.enumerate() {
        if idx > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            "{{\"email\":\"{id}@example.com\",\"mixpanel_distinct_id\":\"{id}\",\
             \"first_name\":\"Ana\",\"last_name\":\"Souza\",\"phone_number\":\"+1555{:07}\"}}",
            idx * 7919 % 10_000_000
        );
    }
    body.push_str("]}}");
    body
}

fn post_request(address: &str, body: &str) -> Vec<u8> {
    let credentials = base64(format!("{WEBHOOK_USER}:{WEBHOOK_PASSWORD}").as_bytes());
    format!(
        "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One keep-alive connection to `serve`, reopened after an error.
struct Connection<'a> {
    address: &'a str,
    stream: Option<TcpStream>,
    response: Vec<u8>,
}

impl Connection<'_> {
    fn new(address: &str) -> Connection<'_> {
        Connection {
            address,
            stream: None,
            response: Vec::with_capacity(4096),
        }
    }

    /// Sends one request and reads its answer: the status (0 for a
    /// connection error).
    fn post(&mut self, request: &[u8]) -> u16 {
        let outcome = match self.stream.as_mut() {
            Some(stream) => exchange(stream, request, &mut self.response),
            None => TcpStream::connect(self.address)
                .map_err(anyhow::Error::from)
                .and_then(|new| {
                    new.set_nodelay(true)?;
                    new.set_read_timeout(Some(Duration::from_secs(30)))?;
                    new.set_write_timeout(Some(Duration::from_secs(30)))?;
                    let new = self.stream.insert(new);
                    exchange(new, request, &mut self.response)
                }),
        };
        match outcome {
            Ok((status, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                status
            }
            Err(_) => {
                self.stream = None;
                0
            }
        }
    }
}

/// Posts a run's pages, page `i` on connection `i % connections`.
fn intake(address: &str, run: IntakeRun, requests: Vec<Vec<u8>>) -> anyhow::Result<IntakeFigures> {
    let requests = Arc::new(requests);
    let started = Instant::now();
    let workers: Vec<_> = (0..run.connections)
        .map(|thread| {
            let requests = Arc::clone(&requests);
            let address = address.to_owned();
            let connections = run.connections;
            std::thread::spawn(move || {
                let mut connection = Connection::new(&address);
                let mut results = Vec::new();
                for page_idx in (thread..requests.len()).step_by(connections) {
                    let sent = Instant::now();
                    let status = connection.post(&requests[page_idx]);
                    let latency = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                    results.push((page_idx, status, latency));
                }
                results
            })
        })
        .collect();
    let mut results = Vec::new();
    for worker in workers {
        results.extend(
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("an intake thread panicked"))?,
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let mut acked_pages = Vec::new();
    let mut latencies_us = Vec::new();
    let mut statuses = BTreeMap::new();
    for (page_idx, status, latency) in results {
        *statuses.entry(status).or_insert(0) += 1;
        latencies_us.push(latency);
        if status == 200 {
            acked_pages.push(page_idx);
        }
    }
    latencies_us.sort_unstable();
    acked_pages.sort_unstable();
    Ok(IntakeFigures {
        run,
        secs,
        acked_pages,
        latencies_us,
        statuses,
        cpu_secs: 0.0,
    })
}

/// Waits until the sink has seen at least `expected` ids added.
fn wait_for_sink_ids(sink: &Sink, expected: u64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let stats = sink.stats()?;
        let ids = json_number(&stats, "ids")?;
        if ids >= expected {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the sink saw {ids} of {expected} ids within {} s: {stats}",
            within.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `serve`'s `/status` shows no pending cohort change.
fn wait_until_nothing_pending(address: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let status = http(address, "GET", "/status")?;
        let pending = sum_of(&status, "pending_changes");
        if pending == 0 && status.contains("\"pending_changes\"") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "changes still pending after {} s: {status}",
            within.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Paced pages of fresh `add_members`; each page's latency to the sink.
fn latency(
    address: &str,
    sink: &Sink,
    options: &Options,
    ids_before: u64,
) -> anyhow::Result<LatencyFigures> {
    let pages = ((options.latency_seconds as f64 * options.latency_rate).round() as usize).max(1);
    let run = IntakeRun {
        action: "add_members",
        tag: "l",
        cohort: ADD_COHORT,
        connections: 1,
        pages,
        page_size: LATENCY_PAGE_SIZE,
    };
    let requests = page_requests(address, &run);
    let interval = Duration::from_secs_f64(1.0 / options.latency_rate);
    let mut connection = Connection::new(address);
    let mut acks: Vec<(usize, f64)> = Vec::with_capacity(pages);
    let mut statuses = BTreeMap::new();
    let started = Instant::now();
    for (page_idx, request) in requests.iter().enumerate() {
        let due = started + interval.mul_f64(page_idx as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let status = connection.post(request);
        let acked_ms = unix_ms_f64();
        *statuses.entry(status).or_insert(0) += 1;
        if status == 200 {
            acks.push((page_idx, acked_ms));
        }
    }
    let expected = ids_before + (acks.len() * LATENCY_PAGE_SIZE) as u64;
    wait_for_sink_ids(sink, expected, Duration::from_secs(30))?;
    let arrivals = parse_arrivals(&http(&sink.address, "GET", "/arrivals?prefix=bench-l-")?)?;
    let mut missing = Vec::new();
    let mut latencies_ms = Vec::with_capacity(acks.len());
    for &(page_idx, acked_ms) in &acks {
        let mut latest: Option<u64> = None;
        for id in run.ids(page_idx) {
            match arrivals.get(&id) {
                Some(&ms) => latest = latest.max(Some(ms)),
                None => missing.push(id),
            }
        }
        if let Some(latest) = latest {
            latencies_ms.push(latest as f64 - acked_ms);
        }
    }
    latencies_ms.sort_unstable_by(f64::total_cmp);
    Ok(LatencyFigures {
        pages,
        acked: acks.len(),
        statuses,
        latencies_ms,
        missing,
        cpu_secs: 0.0,
    })
}

/// Runs the `snapshot_diff` example for `members`; its output line.
fn snapshot_diff(program: &Path, members: u64) -> anyhow::Result<DiffFigures> {
    let tmp: PathBuf = target_dir().join("bench").join("snapshot-diff-tmp");
    std::fs::create_dir_all(&tmp)?;
    say(&format!(
        "snapshot diff: {} {members} (store under {})",
        program.display(),
        tmp.display()
    ));
    let mut child = Command::new(program)
        .arg(members.to_string())
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let within = Duration::from_secs(120) + Duration::from_micros(members.saturating_mul(100));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "snapshot_diff {members} did not finish within {} s",
                within.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = stdout
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    let errors = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    ensure!(
        status.success(),
        "snapshot_diff {members} failed with {status}:\n{text}{errors}"
    );
    let line = text
        .lines()
        .find(|line| line.starts_with("members "))
        .with_context(|| format!("no result line from snapshot_diff: {text:?}"))?
        .to_owned();
    say(&format!("snapshot diff: {line}"));
    Ok(DiffFigures {
        members,
        diff_secs: number_after(&line, "; diff ").context("no diff time in its line")?,
        rss_mb: number_after(&line, "peak RSS ").context("no peak RSS in its line")?,
        line,
    })
}

fn report(options: &Options, figures: &Figures) -> String {
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let delay = if options.braze_delay_ms == 0 {
        String::new()
    } else {
        format!(", answering {} ms late", options.braze_delay_ms)
    };
    let mut text = format!(
        "results (serve on loopback; webhook pages from this process; Braze = braze_sink{delay}):\n\n\
         webhook intake, pages answered 200 (durably recorded) per second of wall time:\n\n\
         | run | connections | pages × members | members/s | wall s | ack p50 ms | ack p99 ms | ack max ms | non-200 | serve CPU s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for intake in &figures.intake {
        let latencies = &intake.latencies_us;
        let _ = writeln!(
            text,
            "| {} | {} | {} × {} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
            intake.run.action,
            intake.run.connections,
            intake.run.pages,
            intake.run.page_size,
            intake.members_per_sec(),
            intake.secs,
            percentile(latencies, 50) / 1000.0,
            percentile(latencies, 99) / 1000.0,
            latencies
                .last()
                .map_or(f64::NAN, |&us| f64::from(us) / 1000.0),
            non_200(&intake.statuses),
            intake.cpu_secs,
        );
    }
    for intake in &figures.intake {
        let _ = writeln!(
            text,
            "goal ≥ {GOAL_MEMBERS_PER_SEC:.0} members/s ({}, {} connection(s)): {}",
            intake.run.action,
            intake.run.connections,
            verdict(intake.members_per_sec() >= GOAL_MEMBERS_PER_SEC)
        );
    }

    let writer = &figures.writer;
    let sink = &figures.sink;
    let span_secs = (writer.last_ms() - writer.first_ms()) as f64 / 1000.0;
    let (burst_count, burst_secs, burst_rate) = writer.after(writer.first_ms() + BURST_MS);
    let (after_count, after_secs, after_rate) = writer.after(writer.intake_end_ms);
    let _ = write!(
        text,
        "\nBraze writer, draining the intake's backlog (default rate limit {BRAZE_MAX_REQUESTS} requests per {BRAZE_WINDOW_SECS} s, counted 100 ms longer by the client):\n\n\
         | changes | first → last arrival s | changes/s | after the first 3.1 s: changes, s, changes/s | after the intake: changes, s, changes/s | drain after the intake s | sink requests | objects/request | 429s | max requests in any 3 s | serve CPU s (drain) |\n\
         |---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|\n\
         | {} | {span_secs:.2} | {:.0} | {burst_count}, {burst_secs:.2}, {burst_rate:.0} | {after_count}, {after_secs:.2}, {after_rate:.0} | {:.2} | {} | {:.1} | {} | {} | {:.1} |\n",
        writer.arrivals_ms.len(),
        writer.changes_per_sec(),
        writer.drain_secs,
        sink.requests,
        sink.objects as f64 / sink.requests.max(1) as f64,
        sink.rejected_429,
        sink.max_window,
        writer.cpu_secs,
    );
    let timeline: Vec<String> = writer
        .per_second()
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(
        text,
        "changes arriving in each second from the first arrival: {}",
        timeline.join(", ")
    );
    let _ = writeln!(
        text,
        "sink: {} objects for {} distinct ids ({} resent), sink CPU {:.1} s",
        sink.objects,
        sink.ids,
        sink.objects.saturating_sub(sink.ids),
        sink.cpu_secs
    );
    let _ = writeln!(
        text,
        "goal ≥ {GOAL_CHANGES_PER_SEC:.0} changes/s (90 % of the limit): {}",
        verdict(writer.changes_per_sec() >= GOAL_CHANGES_PER_SEC)
    );
    let _ = writeln!(
        text,
        "rate limit kept (0 × 429, ≤ {BRAZE_MAX_REQUESTS} in any 3 s): {}",
        verdict(sink.rejected_429 == 0 && sink.max_window <= BRAZE_MAX_REQUESTS)
    );

    let latency = &figures.latency;
    let latencies = &latency.latencies_ms;
    let at = |percent: usize| {
        let n = latencies.len();
        if n == 0 {
            f64::NAN
        } else {
            latencies[(n * percent / 100).min(n - 1)]
        }
    };
    let _ = write!(
        text,
        "\nlatency, webhook 200 read → latest arrival of the page's ids at the sink (backlog drained):\n\n\
         | pages × members | pace | p50 ms | p99 ms | max ms | non-200 | serve CPU s |\n\
         |---:|---|---:|---:|---:|---|---:|\n\
         | {} × {LATENCY_PAGE_SIZE} | {} pages/s for {} s | {:.0} | {:.0} | {:.0} | {} | {:.1} |\n",
        latency.acked,
        options.latency_rate,
        options.latency_seconds,
        whole_ms(at(50)),
        whole_ms(at(99)),
        whole_ms(latencies.last().copied().unwrap_or(f64::NAN)),
        non_200(&latency.statuses),
        latency.cpu_secs,
    );
    let _ = writeln!(
        text,
        "goal p99 ≤ {GOAL_LATENCY_P99_MS:.0} ms: {}",
        verdict(at(99) <= GOAL_LATENCY_P99_MS)
    );
    if latency.acked < latency.pages {
        let _ = writeln!(
            text,
            "only {} of {} latency pages were acknowledged",
            latency.acked, latency.pages
        );
    }

    let _ = writeln!(
        text,
        "\nserve: {:.1} CPU s over the run (intake, drain and latency), peak RSS {:.1} MB, stopped {:.1} s after SIGTERM",
        figures.cpu_total_secs,
        figures.peak_rss_bytes as f64 / 1e6,
        figures.stop_secs
    );

    if !figures.diffs.is_empty() {
        text.push_str(
            "\nsnapshot diff (`snapshot_diff` example: 1 % left, 1 % joined, pages of 10,000):\n\n",
        );
        for diff in &figures.diffs {
            let _ = writeln!(text, "    {}", diff.line);
        }
        for diff in figures
            .diffs
            .iter()
            .filter(|diff| diff.members == GOAL_DIFF_MEMBERS)
        {
            let _ = writeln!(
                text,
                "goal diff of {GOAL_DIFF_MEMBERS} members ≤ {GOAL_DIFF_SECS} s: {}; peak RSS ≤ {GOAL_DIFF_RSS_MB} MB: {}",
                verdict(diff.diff_secs <= GOAL_DIFF_SECS),
                verdict(diff.rss_mb <= GOAL_DIFF_RSS_MB)
            );
        }
    }
    text
}

fn non_200(statuses: &BTreeMap<u16, u64>) -> String {
    let others: Vec<String> = statuses
        .iter()
        .filter(|(status, _)| **status != 200)
        .map(|(status, count)| {
            if *status == 0 {
                format!("{count} × connection error")
            } else {
                format!("{count} × {status}")
            }
        })
        .collect();
    if others.is_empty() {
        "none".to_owned()
    } else {
        others.join(", ")
    }
}

/// Rounded to whole milliseconds (the sink's resolution), never `-0`.
fn whole_ms(ms: f64) -> f64 {
    ms.round() + 0.0
}

/// The `percent` percentile of sorted values, NaN when there are none.
fn percentile(sorted: &[u32], percent: usize) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    f64::from(sorted[(n * percent / 100).min(n - 1)])
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn unix_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1000.0)
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0_u32, |word, (idx, &byte)| {
            word | u32::from(byte) << (16 - 8 * idx)
        });
        for idx in 0..4 {
            if idx <= chunk.len() {
                out.push(char::from(ALPHABET[(word >> (18 - 6 * idx) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A flat JSON object of ids (without escapes) to unsigned integers.
fn parse_arrivals(json: &str) -> anyhow::Result<HashMap<String, u64>> {
    let inner = json
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .with_context(|| format!("not a JSON object: {:.200}", json))?;
    let mut arrivals = HashMap::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let quoted = rest
            .strip_prefix('"')
            .with_context(|| format!("expected a key at {:.40}", rest))?;
        let end = quoted.find('"').context("an unterminated key")?;
        let id = &quoted[..end];
        let value = quoted[end + 1..]
            .trim_start()
            .strip_prefix(':')
            .with_context(|| format!("expected ':' after {id:?}"))?
            .trim_start();
        let digits = value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len());
        let ms = value[..digits]
            .parse()
            .with_context(|| format!("{id:?} has no count"))?;
        arrivals.insert(id.to_owned(), ms);
        rest = value[digits..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(arrivals)
}

/// The sum of every `"key": N` in JSON text.
fn sum_of(json: &str, key: &str) -> u64 {
    let pattern = format!("\"{key}\":");
    json.match_indices(&pattern)
        .filter_map(|(at, _)| {
            let value = json[at + pattern.len()..].trim_start();
            let digits = value
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(value.len());
            value[..digits].parse::<u64>().ok()
        })
        .sum()
}

/// The number right after `label` in a line of text.
fn number_after(line: &str, label: &str) -> Option<f64> {
    let start = line.find(label)? + label.len();
    let text: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let options = parse_args(&["--pages", "50", "--concurrency", "8", "--ten-million"]).ok();
        assert_eq!(
            options,
            Some(Options {
                pages: 50,
                page_size: 1000,
                concurrency: 8,
                snapshot_pages: 300,
                latency_seconds: 20,
                latency_rate: 5.0,
                braze_delay_ms: 0,
                diff_members: vec![1_000_000, 10_000_000],
            })
        );
        let options = parse_args(&["--no-snapshot-diff"]).ok();
        assert_eq!(options.map(|options| options.diff_members), Some(vec![]));
        assert!(parse_args(&["--bogus"]).is_err());
        assert!(parse_args(&["--pages"]).is_err());
        assert!(parse_args(&["--page-size", "20000"]).is_err());
    }

    #[test]
    fn pages_are_webhook_bodies_with_distinct_ids() {
        let run = IntakeRun {
            action: "members",
            tag: "s1",
            cohort: SNAPSHOT_COHORT,
            connections: 1,
            pages: 3,
            page_size: 4,
        };
        let requests = page_requests("127.0.0.1:1", &run);
        assert_eq!(requests.len(), 3);
        let text = String::from_utf8(requests[1].clone()).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("POST /mixpanel/cohorts HTTP/1.1\r\n"));
        assert!(head.ends_with(&format!("\r\nContent-Length: {}", body.len())));
        assert!(head.contains("Authorization: Basic bWl4cGFuZWw6YmVuY2gtd2ViaG9vay1wYXNzd29yZA=="));
        assert!(body.starts_with("{\"action\":\"members\",\"parameters\":{"));
        assert!(body.contains("\"page_info\":{\"total_pages\":3,\"page_count\":2}"));
        assert!(body.ends_with("}]}}"));
        assert_eq!(body.matches("\"mixpanel_distinct_id\":").count(), 4);
        assert!(body.contains("\"mixpanel_distinct_id\":\"bench-s1-0000004\""));
        assert!(body.contains("\"mixpanel_distinct_id\":\"bench-s1-0000007\""));
    }

    #[test]
    fn encodes_base64() {
        assert_eq!(base64(b"mixpanel:s3cret"), "bWl4cGFuZWw6czNjcmV0");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn reads_sink_and_status_json() {
        let arrivals = parse_arrivals(r#"{"bench-a1-0000001":1764300000123,"x":5}"#).ok();
        assert_eq!(
            arrivals,
            Some(HashMap::from([
                ("bench-a1-0000001".to_owned(), 1_764_300_000_123),
                ("x".to_owned(), 5)
            ]))
        );
        assert_eq!(parse_arrivals("{}").ok(), Some(HashMap::new()));
        assert!(parse_arrivals("[1]").is_err());
        let status = r#"{"cohorts":[{"pending_changes":3},{"pending_changes":4}]}"#;
        assert_eq!(sum_of(status, "pending_changes"), 7);
        let line = "members 1000000: first snapshot 9.10 s; diff 2.35 s (10000 added, 10000 removed); peak RSS 61 MB";
        assert_eq!(number_after(line, "; diff "), Some(2.35));
        assert_eq!(number_after(line, "peak RSS "), Some(61.0));
    }
}
