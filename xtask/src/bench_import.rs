//! `cargo xtask bench import`: the end-to-end `/import` benchmark.
//!
//! It builds the release binary and the `import_sink` example of
//! `mixpanel-client` (a local stand-in for Mixpanel's `/import`), generates
//! realistic Mixpanel events as NDJSON into `target/bench/` (seeded, so the
//! same on every machine, and reused when already there), then for each
//! event count and compression setting starts a fresh sink on a free
//! loopback port, runs `braze-mixpanel-bridge import FILE` against it and
//! reports wall time, events/s, the importer's CPU seconds and peak RSS,
//! and MB/s of uncompressed input. A run fails unless the sink counted
//! every event and the importer succeeded; every wait has a deadline.
//!
//! The importer's CPU time is the change in this process's waited-for
//! children time (`/proc/self/stat`) across reaping it, and its peak RSS is
//! its `VmHWM`, polled from `/proc/<pid>/status` every 2 ms until it exits
//! (so a run of a few milliseconds under-reports it): no unsafe code and no
//! dependency needed. Linux only.
//!
//! ```text
//! cargo xtask bench import [--events N]... [--concurrency C] [--gzip on|off|both] [--seed S]
//! ```
//!
//! Without `--events` it runs 100,000 and 1,000,000 events, each with gzip
//! on and off.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, BufWriter, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::{cargo, project_root, run_command};

const USAGE: &str = "usage: cargo xtask bench import [--events N]... [--concurrency C] [--gzip on|off|both] [--seed S]";

/// Default seed of the event generator.
const DEFAULT_SEED: u64 = 20_241_119;

/// The goal from the issue, with gzip on.
const GOAL_EVENTS_PER_SEC: f64 = 300_000.0;

struct Options {
    events: Vec<u64>,
    concurrency: u16,
    gzip: Vec<bool>,
    seed: u64,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut options = Options {
        events: Vec::new(),
        concurrency: 10,
        gzip: vec![true, false],
        seed: DEFAULT_SEED,
    };
    let mut args = args.iter().copied();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg {
            "--events" => {
                let n = value()?.replace(['_', ','], "");
                let n: u64 = n.parse().with_context(|| format!("--events {n}"))?;
                ensure!(n > 0, "--events must be at least 1");
                options.events.push(n);
            }
            "--concurrency" => options.concurrency = value()?.parse().context("--concurrency")?,
            "--gzip" => {
                options.gzip = match value()? {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![true, false],
                    other => bail!("--gzip {other}: expected on, off or both"),
                }
            }
            "--no-gzip" => options.gzip = vec![false],
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if options.events.is_empty() {
        options.events = vec![100_000, 1_000_000];
    }
    Ok(options)
}

/// Figures of one run.
struct Figures {
    events: u64,
    gzip: bool,
    concurrency: u16,
    wall: Duration,
    cpu_secs: f64,
    peak_rss_bytes: u64,
    input_bytes: u64,
    sink_requests: u64,
    sink_bytes_received: u64,
    sink_cpu_secs: f64,
}

impl Figures {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }
}

/// Builds the release `braze-mixpanel-bridge` and the `import_sink`
/// example, and returns the release directory holding them.
pub(crate) fn build_release_binaries() -> anyhow::Result<PathBuf> {
    run_command(cargo().args([
        "build",
        "--release",
        "-p",
        "braze-mixpanel-bridge",
        "-p",
        "mixpanel-client",
        "--bins",
        "--example",
        "import_sink",
    ]))?;
    Ok(target_dir().join("release"))
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    let release = build_release_binaries()?;
    let importer = release.join("braze-mixpanel-bridge");
    let sink = release.join("examples").join("import_sink");
    let clock_ticks = clock_ticks_per_sec();

    let mut results = Vec::new();
    for &n_events in &options.events {
        let file = events_file(n_events, options.seed)?;
        for &gzip in &options.gzip {
            let figures = run_once(
                &importer,
                &sink,
                &file,
                n_events,
                gzip,
                options.concurrency,
                clock_ticks,
            )?;
            say(&format!(
                "{} events, gzip {}: {:.2} s, {:.0} events/s, {:.2} CPU s, peak RSS {:.1} MB",
                figures.events,
                on_off(figures.gzip),
                figures.wall.as_secs_f64(),
                figures.events_per_sec(),
                figures.cpu_secs,
                figures.peak_rss_bytes as f64 / 1e6,
            ));
            results.push(figures);
        }
    }
    say(&report(&results));
    Ok(())
}

fn on_off(flag: bool) -> &'static str {
    if flag { "on" } else { "off" }
}

#[allow(clippy::print_stderr)]
pub(crate) fn say(text: &str) {
    eprintln!("xtask: {text}");
}

fn report(results: &[Figures]) -> String {
    let mut text = String::from(
        "results (importer = braze-mixpanel-bridge import; sink = import_sink on loopback):\n\n\
         | events | gzip | concurrency | events/s | wall s | importer CPU s (user+sys) | importer peak RSS MB | MB/s uncompressed | requests | MB on the wire | sink CPU s |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for figures in results {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.0} | {} | {:.1} | {:.2} |",
            figures.events,
            on_off(figures.gzip),
            figures.concurrency,
            figures.events_per_sec(),
            figures.wall.as_secs_f64(),
            figures.cpu_secs,
            figures.peak_rss_bytes as f64 / 1e6,
            figures.input_bytes as f64 / 1e6 / figures.wall.as_secs_f64(),
            figures.sink_requests,
            figures.sink_bytes_received as f64 / 1e6,
            figures.sink_cpu_secs,
        );
    }
    for figures in results.iter().filter(|figures| figures.gzip) {
        let verdict = if figures.events_per_sec() >= GOAL_EVENTS_PER_SEC {
            "meets"
        } else {
            "is below"
        };
        let _ = writeln!(
            text,
            "\n{} events with gzip: {:.0} events/s {verdict} the goal of {GOAL_EVENTS_PER_SEC:.0} events/s",
            figures.events,
            figures.events_per_sec(),
        );
    }
    text
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                project_root().join(dir)
            }
        })
        .unwrap_or_else(|| project_root().join("target"))
}

/// Runs one import against a fresh sink.
fn run_once(
    importer: &Path,
    sink: &Path,
    file: &Path,
    n_events: u64,
    gzip: bool,
    concurrency: u16,
    clock_ticks: f64,
) -> anyhow::Result<Figures> {
    let input_bytes = std::fs::metadata(file)?.len();
    let sink = Sink::start(sink)?;
    let mut command = Command::new(importer);
    command
        .arg("import")
        .arg(file)
        .args(["--concurrency", &concurrency.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !gzip {
        command.arg("--no-gzip");
    }
    // Only the sink's address and a token: never the caller's Mixpanel settings.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MIXPANEL_") {
            command.env_remove(name);
        }
    }
    command
        .env("MIXPANEL_API_URL", format!("http://{}", sink.address))
        .env("MIXPANEL_PROJECT_TOKEN", "bench-token")
        .env("RUST_LOG", "warn");
    say(&format!(
        "importing {n_events} events, gzip {}, into the sink at {}",
        on_off(gzip),
        sink.address
    ));
    // Generous: a hundred times slower than the goal still finishes.
    let deadline = Duration::from_secs(60) + Duration::from_micros(n_events.saturating_mul(300));
    let children_cpu_before = children_cpu_ticks()?;
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", importer.display()))?;
    let stderr = collect(child.stderr.take());
    let pid = child.id();
    let mut peak_rss_bytes = 0;
    let status = loop {
        if let Some(hwm) = vm_hwm_bytes(pid) {
            peak_rss_bytes = peak_rss_bytes.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the import did not finish within {} s", deadline.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed();
    let cpu_secs = (children_cpu_ticks()? - children_cpu_before) as f64 / clock_ticks;
    let stderr = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    for line in stderr.lines().filter(|line| line.starts_with("import: ")) {
        say(&format!("importer said: {line}"));
    }
    ensure!(
        status.success(),
        "the importer failed with {status}:\n{stderr}"
    );
    let sink_cpu_secs = sink.cpu_ticks() as f64 / clock_ticks;
    let stats = sink.stats()?;
    sink.stop()?;
    let counted = json_number(&stats, "events")?;
    ensure!(
        counted == n_events,
        "the sink counted {counted} events, not {n_events}: {stats}"
    );
    ensure!(
        json_number(&stats, "rejected")? == 0,
        "the sink refused requests: {stats}"
    );
    Ok(Figures {
        events: n_events,
        gzip,
        concurrency,
        wall,
        cpu_secs,
        peak_rss_bytes,
        input_bytes,
        sink_requests: json_number(&stats, "requests")?,
        sink_bytes_received: json_number(&stats, "bytes_received")?,
        sink_cpu_secs,
    })
}

/// Reads a pipe to its end on a thread; the text arrives on the channel.
pub(crate) fn collect(pipe: Option<impl std::io::Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let _ = sender.send(text);
    });
    receiver
}

/// A running `import_sink`, stopped (or killed) when dropped.
pub(crate) struct Sink {
    child: Child,
    pub(crate) address: String,
    rest_of_stdout: Option<mpsc::Receiver<String>>,
}

impl Sink {
    pub(crate) fn start(program: &Path) -> anyhow::Result<Sink> {
        Sink::start_with(program, &[])
    }

    /// [`Sink::start`] with more arguments for the sink.
    pub(crate) fn start_with(program: &Path, args: &[&str]) -> anyhow::Result<Sink> {
        let mut child = Command::new(program)
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child.stdout.take().context("the sink's stdout")?;
        let (first_line, lines) = mpsc::channel();
        let (rest, rest_of_stdout) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = first_line.send(line);
            let mut text = String::new();
            let _ = reader.read_to_string(&mut text);
            let _ = rest.send(text);
        });
        let mut sink = Sink {
            child,
            address: String::new(),
            rest_of_stdout: Some(rest_of_stdout),
        };
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .context("the sink did not say where it listens within 30 s")?;
        sink.address = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from the sink: {line:?}"))?
            .to_owned();
        Ok(sink)
    }

    /// CPU ticks (user + system) the sink has used so far.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        stat.ok()
            .and_then(|stat| stat_fields(&stat, &[14, 15]))
            .map_or(0, |fields| fields.iter().sum())
    }

    pub(crate) fn stats(&self) -> anyhow::Result<String> {
        http(&self.address, "GET", "/stats")
    }

    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        http(&self.address, "POST", "/shutdown")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            ensure!(
                Instant::now() < deadline,
                "the sink did not stop within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(rest) = self.rest_of_stdout.take()
            && let Ok(text) = rest.recv_timeout(Duration::from_secs(5))
        {
            for line in text.lines() {
                say(&format!("sink said: {line}"));
            }
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request without a body on loopback; the response body.
pub(crate) fn http(address: &str, method: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(address).with_context(|| format!("connect {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("{method} {path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: not an HTTP response: {response:?}"))?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
    Ok(body.to_owned())
}

/// The unsigned integer value of `"key":` in flat JSON text.
pub(crate) fn json_number(json: &str, key: &str) -> anyhow::Result<u64> {
    let pattern = format!("\"{key}\":");
    let start = json
        .find(&pattern)
        .with_context(|| format!("no {key} in {json}"))?
        + pattern.len();
    let digits: String = json[start..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .with_context(|| format!("{key} is not a count in {json}"))
}

/// Fields of a `/proc/<pid>/stat` line, numbered from 1 as in proc(5).
pub(crate) fn stat_fields(stat: &str, numbers: &[usize]) -> Option<Vec<u64>> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    numbers
        .iter()
        .map(|&number| fields.get(number.checked_sub(3)?)?.parse().ok())
        .collect()
}

/// CPU ticks (user + system) of this process's children reaped so far.
fn children_cpu_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("cannot read /proc/self/stat")?;
    let fields = stat_fields(&stat, &[16, 17]).context("unexpected /proc/self/stat")?;
    Ok(fields.iter().sum())
}

pub(crate) fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A process's peak resident set size so far, while it runs.
pub(crate) fn vm_hwm_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The NDJSON file of `n_events` generated events, made if missing.
fn events_file(n_events: u64, seed: u64) -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("import-events-{n_events}-seed{seed}.ndjson"));
    if path.exists() {
        say(&format!("reusing {}", path.display()));
        return Ok(path);
    }
    say(&format!(
        "generating {n_events} events into {}",
        path.display()
    ));
    let partial = path.with_extension("ndjson.partial");
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial)?);
    let mut generator = EventGenerator::new(seed);
    let mut line = String::with_capacity(2048);
    for idx in 0..n_events {
        line.clear();
        generator.event(idx, &mut line);
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    drop(out);
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// splitmix64: small, fast and the same everywhere.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What an event carries besides the common properties.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Session,
    Purchase,
    Custom,
    Email,
    Push,
    InApp,
    ContentCard,
    Sms,
    Webhook,
    CanvasEntry,
}

/// Event names as the bridge maps Braze types, with relative frequency.
const EVENT_NAMES: &[(&str, Kind, u64)] = &[
    ("Session Start", Kind::Session, 15),
    ("Session End", Kind::Session, 13),
    ("Purchase", Kind::Purchase, 3),
    ("[Braze Custom Event] Viewed Product", Kind::Custom, 10),
    ("[Braze Custom Event] Added To Cart", Kind::Custom, 5),
    ("Email Send", Kind::Email, 8),
    ("Email Delivery", Kind::Email, 8),
    ("Email Open", Kind::Email, 6),
    ("Email Click", Kind::Email, 3),
    ("Email Unsubscribe", Kind::Email, 1),
    ("Push Notification Send", Kind::Push, 7),
    ("Push Notification Open", Kind::Push, 3),
    ("In-App Message Impression", Kind::InApp, 6),
    ("In-App Message Click", Kind::InApp, 2),
    ("Content Card Impression", Kind::ContentCard, 4),
    ("Content Card Click", Kind::ContentCard, 1),
    ("SMS Delivery", Kind::Sms, 4),
    ("SMS Send", Kind::Sms, 3),
    ("Webhook Send", Kind::Webhook, 2),
    ("Canvas Entry", Kind::CanvasEntry, 3),
];

const CAMPAIGN_NAMES: &[&str] = &[
    "Winter Sale ❄️ – Jäger boots",
    "Cart reminder 🛒",
    "Welcome series: día 1",
    "Spring restock",
    "Loyalty points expiring",
    "Back in stock: espresso beans",
    "Weekly digest",
    "Price drop alert",
];
const CANVAS_NAMES: &[&str] = &[
    "Onboarding Journey 2025",
    "Loyalty tier upgrade ⭐",
    "Réactivation – clients dormants",
    "Abandoned browse",
    "Post-purchase cross-sell",
];
const STEP_NAMES: &[&str] = &[
    "Send coupon – 10 €",
    "Wait for purchase",
    "Entry step",
    "Reminder 2",
    "Final nudge",
];
const VARIATION_NAMES: &[&str] = &["Control", "Variant A – short copy", "Variant B"];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.6422.53 Mobile Safari/537.36",
];
const DEVICES: &[(&str, &str, &str)] = &[
    ("iPhone15,3", "iOS 17.5.1", "ios"),
    ("iPhone14,2", "iOS 16.7.8", "ios"),
    ("Pixel 8", "Android 14", "android"),
    ("SM-S918B", "Android 14", "android"),
    ("Macintosh", "Mac OS X 14.4", "web"),
    ("Windows", "Windows 10", "web"),
];
const FIRST_NAMES: &[&str] = &[
    "ana", "jonas", "mei", "olu", "sofia", "lukas", "amara", "diego", "chloé", "ravi",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.de",
    "mail.example.org",
    "example.com.br",
];
const PAGES: &[&str] = &[
    "ofertas",
    "products/espresso-250g",
    "cart",
    "account/points",
    "blog/brew-guide",
];
const SKUS: &[&str] = &[
    "sku-CAFE-250g",
    "sku-MUG-blue",
    "sku-FILTRO-02",
    "sku-GRINDER-S",
    "sku-TEA-GREEN",
];
const MAILBOX_PROVIDERS: &[&str] = &["Gmail", "Yahoo", "Outlook", "Apple"];

/// Mixpanel events shaped like the bridge's output for Braze events.
struct EventGenerator {
    rng: Rng,
    total_weight: u64,
    campaigns: Vec<String>,
    canvases: Vec<String>,
    apps: Vec<String>,
}

impl EventGenerator {
    fn new(seed: u64) -> EventGenerator {
        let mut rng = Rng(seed);
        let mut ids = |n: usize| -> Vec<String> { (0..n).map(|_| uuid(&mut rng)).collect() };
        let campaigns = ids(CAMPAIGN_NAMES.len());
        let canvases = ids(CANVAS_NAMES.len());
        let apps = ids(3);
        EventGenerator {
            rng,
            total_weight: EVENT_NAMES.iter().map(|(_, _, weight)| weight).sum(),
            campaigns,
            canvases,
            apps,
        }
    }

    /// Appends event number `idx` as one line of JSON (without newline).
    fn event(&mut self, idx: u64, out: &mut String) {
        let mut roll = self.rng.below(self.total_weight);
        let (name, kind) = EVENT_NAMES
            .iter()
            .find_map(|&(name, kind, weight)| {
                if roll < weight {
                    Some((name, kind))
                } else {
                    roll -= weight;
                    None
                }
            })
            .map_or(("Session Start", Kind::Session), |found| found);
        let rng = &mut self.rng;
        let user = rng.below(250_000);
        out.push_str("{\"event\":");
        push_json_string(out, name);
        out.push_str(",\"properties\":{\"$partner_id\":\"braze\"");
        let _ = write!(out, ",\"distinct_id\":\"cust-{user:07}\"");
        let insert_id = uuid(rng);
        string(out, "$insert_id", &insert_id);
        let time = 1_732_000_000 + idx / 4 + rng.below(900);
        let _ = write!(out, ",\"time\":{time}");
        string(out, "token", "benchtoken0000000000000000000001");
        string(out, "app_group_id", "6a2f1c0e-8b3d-4e7a-9c51-3f0d2e8b7a14");
        let (device, os, platform) = DEVICES[rng.below(DEVICES.len() as u64) as usize];
        let app = &self.apps[rng.below(self.apps.len() as u64) as usize];
        let has_device = matches!(
            kind,
            Kind::Session
                | Kind::Purchase
                | Kind::Custom
                | Kind::Push
                | Kind::InApp
                | Kind::ContentCard
        );
        if has_device {
            string(out, "app_id", app);
            // Older SDKs and server-side sessions send no device details.
            if kind != Kind::Session || rng.chance(50) {
                string(out, "platform", platform);
                string(out, "$os", os);
                string(out, "$device", device);
                let device_id = uuid(rng);
                string(out, "device_id", &device_id);
            }
        }
        let is_message = !matches!(kind, Kind::Session | Kind::Purchase | Kind::Custom);
        if is_message {
            // A message comes from a campaign or from a canvas step.
            if kind == Kind::CanvasEntry || rng.chance(45) {
                let canvas = rng.below(self.canvases.len() as u64) as usize;
                string(out, "canvas_id", &self.canvases[canvas]);
                string(out, "canvas_name", CANVAS_NAMES[canvas]);
                let variation = uuid(rng);
                string(out, "canvas_variation_id", &variation);
                string(out, "canvas_variation_name", rng.pick(VARIATION_NAMES));
                if kind != Kind::CanvasEntry {
                    let step = uuid(rng);
                    string(out, "canvas_step_id", &step);
                    string(out, "canvas_step_name", rng.pick(STEP_NAMES));
                }
            } else {
                let campaign = rng.below(self.campaigns.len() as u64) as usize;
                string(out, "campaign_id", &self.campaigns[campaign]);
                string(out, "campaign_name", CAMPAIGN_NAMES[campaign]);
                let variation = uuid(rng);
                string(out, "message_variation_id", &variation);
                string(out, "message_variation_name", rng.pick(VARIATION_NAMES));
            }
            if kind != Kind::CanvasEntry {
                let send_id = hex_id(rng);
                string(out, "send_id", &send_id);
                let dispatch_id = hex_id(rng);
                string(out, "dispatch_id", &dispatch_id);
            }
        }
        match kind {
            Kind::Session => {
                let session_id = uuid(rng);
                string(out, "session_id", &session_id);
                if name == "Session End" {
                    let _ = write!(out, ",\"duration\":{}", rng.below(3600));
                }
            }
            Kind::Purchase => {
                string(out, "product_id", rng.pick(SKUS));
                let _ = write!(
                    out,
                    ",\"price\":{}.{:02},\"currency\":\"USD\"",
                    rng.below(200),
                    rng.below(100)
                );
                if rng.chance(50) {
                    string(out, "[Purchase property] grind", "espresso");
                    let _ = write!(out, ",\"[Purchase property] gift_wrap\":{}", rng.chance(20));
                }
            }
            Kind::Custom => {
                string(out, "[Custom event property] sku", rng.pick(SKUS));
                let _ = write!(
                    out,
                    ",\"[Custom event property] cart_value\":{}.{}",
                    rng.below(300),
                    rng.below(10)
                );
                if rng.chance(40) {
                    let _ = write!(
                        out,
                        ",\"[Custom event property] delivery\":{{\"city\":\"São Paulo\",\"window\":{{\"from\":\"09:00\",\"to\":\"12:00\"}}}}"
                    );
                }
                if rng.chance(30) {
                    out.push_str(",\"[Custom event property] skus\":[");
                    push_json_string(out, rng.pick(SKUS));
                    out.push(',');
                    push_json_string(out, rng.pick(SKUS));
                    out.push(']');
                }
            }
            Kind::Email => {
                let email = format!("{}.{}@{}", rng.pick(FIRST_NAMES), user, rng.pick(DOMAINS));
                string(out, "email_address", &email);
                if rng.chance(30) {
                    string(out, "mailbox_provider", rng.pick(MAILBOX_PROVIDERS));
                    string(out, "esp", "amazon_ses");
                    string(out, "from_domain", "news.cafe-example.com");
                }
                if matches!(name, "Email Open" | "Email Click") {
                    string(out, "user_agent", rng.pick(USER_AGENTS));
                    string(out, "$device", device);
                    string(out, "device_os", os);
                    string(out, "browser", "Chrome");
                    string(out, "device_class", "desktop");
                    string(out, "ip_pool", "marketing-pool-1");
                    let _ = write!(out, ",\"is_amp\":false,\"machine_open\":null");
                }
                if name == "Email Click" {
                    push_url(out, rng);
                    string(out, "link_alias", "hero_cta");
                    let link_id = hex_id(rng);
                    string(out, "link_id", &link_id[..8]);
                    let _ = write!(
                        out,
                        ",\"is_suspected_bot_click\":false,\"suspected_bot_click_reason\":[\"user_agent\"]"
                    );
                }
            }
            Kind::Push | Kind::InApp | Kind::ContentCard => {
                if rng.chance(40) {
                    let ad_id = uuid(rng).to_ascii_uppercase();
                    string(out, "ad_id", &ad_id);
                    string(out, "ad_id_type", "ios_idfa");
                    let _ = write!(out, ",\"ad_tracking_enabled\":true");
                }
                if name.ends_with("Click") {
                    string(out, "button_id", "0");
                    push_url(out, rng);
                }
                if kind == Kind::ContentCard {
                    let card = hex_id(rng);
                    string(out, "card_id", &card);
                }
                if kind == Kind::InApp && rng.chance(30) {
                    string(
                        out,
                        "message_extras",
                        "{\"coupon\": \"CAFE20\", \"tier\": \"gold\", \"headline\": \"Café ☕ – 20% off\"}",
                    );
                }
            }
            Kind::Sms => {
                let _ = write!(
                    out,
                    ",\"to_phone_number\":\"+1555{:07}\",\"subscription_group_id\":\"{}\"",
                    rng.below(10_000_000),
                    self.apps[0]
                );
                if rng.chance(50) {
                    string(out, "from_phone_number", "+15550100200");
                    string(out, "provider_error_code", "");
                }
            }
            Kind::Webhook => {
                push_url(out, rng);
            }
            Kind::CanvasEntry => {
                let _ = write!(out, ",\"in_control_group\":{}", rng.chance(10));
            }
        }
        out.push_str("}}");
    }
}

fn push_url(out: &mut String, rng: &mut Rng) {
    let url = format!(
        "https://www.cafe-example.com/{}?utm_source=braze&utm_medium=email&utm_campaign=cafe-{:04x}&lang=pt",
        rng.pick(PAGES),
        rng.below(0x10000)
    );
    string(out, "url", &url);
}

/// Appends `,"key":"value"`.
fn string(out: &mut String, key: &str, value: &str) {
    out.push(',');
    push_json_string(out, key);
    out.push(':');
    push_json_string(out, value);
}

fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn uuid(rng: &mut Rng) -> String {
    let high = rng.next();
    let low = rng.next();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xfff,
        ((low >> 48) & 0x3fff) | 0x8000,
        low & 0xffff_ffff_ffff
    )
}

/// A 24-hex-digit id, like Braze's send and dispatch ids.
pub(crate) fn hex_id(rng: &mut Rng) -> String {
    format!("{:016x}{:08x}", rng.next(), rng.next() >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deterministic_json_objects_of_realistic_size() {
        let mut first = EventGenerator::new(7);
        let mut second = EventGenerator::new(7);
        let mut sizes = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for idx in 0..5000 {
            let (mut a, mut b) = (String::new(), String::new());
            first.event(idx, &mut a);
            second.event(idx, &mut b);
            assert_eq!(a, b);
            assert!(a.starts_with("{\"event\":\"") && a.ends_with("}}"), "{a}");
            assert!(!a.contains('\n'));
            let name = a["{\"event\":\"".len()..].split('"').next().unwrap_or("");
            names.insert(name.to_owned());
            sizes.push(a.len());
        }
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        assert!((300..=1500).contains(&sizes[0]), "min {}", sizes[0]);
        assert!(
            sizes[sizes.len() - 1] <= 1500,
            "max {}",
            sizes[sizes.len() - 1]
        );
        assert!((500..=700).contains(&median), "median {median}");
        assert_eq!(names.len(), EVENT_NAMES.len());
    }

    #[test]
    fn reads_proc_stat_fields_and_json_counts() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15";
        assert_eq!(stat_fields(stat, &[14, 15]), Some(vec![11, 12]));
        assert_eq!(stat_fields(stat, &[16, 17]), Some(vec![13, 14]));
        let json = r#"{"events":1000000,"requests":500,"rejected":0}"#;
        assert_eq!(json_number(json, "events").ok(), Some(1_000_000));
        assert_eq!(json_number(json, "rejected").ok(), Some(0));
        assert!(json_number(json, "bytes").is_err());
    }
}
