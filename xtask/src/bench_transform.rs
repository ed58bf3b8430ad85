//! `cargo xtask bench transform`: the release `transform` command on a large
//! NDJSON file of Currents events, on one thread and on several.
//!
//! It builds the release binary, generates the input once into
//! `target/bench/` (events of the workspace's generator,
//! `currents_model::synthetic`, production mix, one event a line; seeded,
//! so the same bytes on every machine, and reused when already there),
//! then runs `braze-mixpanel-bridge transform FILE --threads N` for each
//! thread count, `--runs` times in turn, with the output and the rejects
//! to `/dev/null` (the default: the disk of a shared machine stays out of
//! the figures) or to files under `target/bench/` (`--output file`, which
//! also checks that every thread count wrote the same bytes). Each round
//! also runs two one-thread processes at once (unless `--no-pair`): their
//! throughput over one process's is what two busy cores give on this
//! machine (shared caches and memory, neighbours on a shared VM), the
//! ceiling for two threads. It reports the wall time, MB/s of input,
//! events/s, the command's CPU seconds and peak RSS, and the speed-up of
//! each over one thread (best run against best run), against the goal of
//! 1.7× on two threads.
//!
//! CPU time and peak RSS are measured as in `bench import`: waited-for
//! children time from `/proc/self/stat`, `VmHWM` polled every 2 ms.
//!
//! ```text
//! cargo xtask bench transform [--size-mb 1024] [--threads 1,2] [--runs 3] [--output null|file] [--no-pair] [--seed S]
//! ```

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use currents_model::synthetic;
use sha2::{Digest as _, Sha256};

use crate::bench_import::{
    cached_input, children_cpu_ticks, clock_ticks_per_sec, collect, say, target_dir,
    wait_measuring_all,
};
use crate::{cargo, run_command};

const USAGE: &str = "usage: cargo xtask bench transform [--size-mb MB] [--threads N,N...] [--runs R] [--output null|file] [--no-pair] [--seed S]";

/// Default seed of the event generator.
const DEFAULT_SEED: u64 = 20_241_212;

/// Distinct users the events are drawn from, as in `bench import`.
const USERS: usize = 250_000;

/// The `token` property of every mapped event.
const PROJECT_TOKEN: &str = "benchtoken0000000000000000000001";

/// The goal from the issue: two threads at least this much faster than one.
const GOAL_SPEED_UP: f64 = 1.7;

#[derive(Debug, PartialEq)]
struct Options {
    size_mb: u64,
    threads: Vec<u32>,
    runs: u32,
    to_files: bool,
    /// Also run two one-thread processes at once.
    pair: bool,
    seed: u64,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut options = Options {
        size_mb: 1024,
        threads: vec![1, 2],
        runs: 3,
        to_files: false,
        pair: true,
        seed: DEFAULT_SEED,
    };
    let mut args = args.iter().copied();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg {
            "--size-mb" => {
                options.size_mb = value()?.parse().context("--size-mb")?;
                ensure!(options.size_mb > 0, "--size-mb must be at least 1");
            }
            "--threads" => {
                options.threads = value()?
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse::<u32>()
                            .with_context(|| format!("--threads {n}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
                ensure!(
                    options.threads.iter().all(|n| *n > 0),
                    "--threads takes counts of at least 1"
                );
            }
            "--runs" => {
                options.runs = value()?.parse().context("--runs")?;
                ensure!(options.runs > 0, "--runs must be at least 1");
            }
            "--output" => {
                options.to_files = match value()? {
                    "null" => false,
                    "file" => true,
                    other => bail!("--output {other}: expected null or file"),
                }
            }
            "--no-pair" => options.pair = false,
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(options)
}

/// What one run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One `transform --threads N`.
    Threads(u32),
    /// Two `transform --threads 1` at once, output to `/dev/null`: what two
    /// busy cores give this machine, the ceiling for two threads.
    Pair,
}

impl Kind {
    fn processes(self) -> u32 {
        match self {
            Kind::Threads(_) => 1,
            Kind::Pair => 2,
        }
    }

    fn label(self) -> String {
        match self {
            Kind::Threads(threads) => format!("{threads} thread(s)"),
            Kind::Pair => "2 processes of 1 thread at once".to_owned(),
        }
    }
}

/// Figures of one run.
struct Figures {
    kind: Kind,
    wall: Duration,
    /// Of every process of the run.
    cpu_secs: f64,
    /// Of the largest process.
    peak_rss_bytes: u64,
    /// Counted by each process.
    events: u64,
    /// SHA-256 of the output and of the rejects, with `--output file`.
    digests: Option<(String, String)>,
}

impl Figures {
    /// Input bytes per second, all processes together.
    fn mb_per_sec(&self, input_bytes: u64) -> f64 {
        f64::from(self.kind.processes()) * input_bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }

    fn events_per_sec(&self) -> f64 {
        f64::from(self.kind.processes()) * self.events as f64 / self.wall.as_secs_f64()
    }
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    run_command(cargo().args(["build", "--release", "-p", "braze-mixpanel-bridge"]))?;
    let program = target_dir().join("release").join("braze-mixpanel-bridge");
    let input = input_file(options.size_mb, options.seed)?;
    let input_bytes = std::fs::metadata(&input)?.len();
    let clock_ticks = clock_ticks_per_sec();
    let mut kinds: Vec<Kind> = options.threads.iter().copied().map(Kind::Threads).collect();
    if options.pair {
        kinds.push(Kind::Pair);
    }
    say(&format!("load average before: {}", load_average()));

    let mut results = Vec::new();
    for run in 1..=options.runs {
        for &kind in &kinds {
            let figures = run_once(&program, &input, kind, options.to_files, clock_ticks)?;
            say(&format!(
                "run {run}, {}: {:.2} s, {:.0} MB/s, {:.0} events/s, {:.2} CPU s, peak RSS {:.1} MB",
                kind.label(),
                figures.wall.as_secs_f64(),
                figures.mb_per_sec(input_bytes),
                figures.events_per_sec(),
                figures.cpu_secs,
                figures.peak_rss_bytes as f64 / 1e6,
            ));
            results.push(figures);
        }
    }
    say(&format!("load average after: {}", load_average()));
    check_same_outcome(&results)?;
    say(&report(&results, &kinds, input_bytes, &options));
    Ok(())
}

/// Starts the processes of one run and waits for them all; their figures.
fn run_once(
    program: &Path,
    input: &Path,
    kind: Kind,
    to_files: bool,
    clock_ticks: f64,
) -> anyhow::Result<Figures> {
    let dir = target_dir().join("bench");
    let to_files = to_files && kind.processes() == 1;
    let (output_path, rejects_path) = if to_files {
        (
            dir.join("transform-output.ndjson"),
            dir.join("transform-rejects.ndjson"),
        )
    } else {
        (PathBuf::from("/dev/null"), PathBuf::from("/dev/null"))
    };
    let threads = match kind {
        Kind::Threads(threads) => threads,
        Kind::Pair => 1,
    };
    let children_cpu_before = children_cpu_ticks()?;
    let started = Instant::now();
    let mut children = Vec::new();
    let mut stderrs = Vec::new();
    for _ in 0..kind.processes() {
        let output = File::create(&output_path)
            .with_context(|| format!("cannot create {}", output_path.display()))?;
        let mut child = Command::new(program)
            .arg("transform")
            .arg(input)
            .args(["--token", PROJECT_TOKEN, "--threads", &threads.to_string()])
            .arg("--rejects")
            .arg(&rejects_path)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(Stdio::piped())
            .env_remove("MIXPANEL_PROJECT_TOKEN")
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        stderrs.push(collect(child.stderr.take()));
        children.push(child);
    }
    // Generous: ten times slower than one thread on the slowest machine seen.
    let deadline = Duration::from_secs(1200);
    let (statuses, peak_rss_bytes) =
        wait_measuring_all(&mut children, started, deadline, "transform")?;
    let wall = started.elapsed();
    let cpu_secs = (children_cpu_ticks()? - children_cpu_before) as f64 / clock_ticks;
    let mut events = Vec::new();
    for (stderr, status) in stderrs.into_iter().zip(statuses) {
        let stderr = stderr
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        ensure!(
            status.success(),
            "transform failed with {status}:\n{stderr}"
        );
        events.push(
            summary_events(&stderr)
                .with_context(|| format!("no summary in transform's stderr:\n{stderr}"))?,
        );
    }
    ensure!(
        events.windows(2).all(|pair| pair[0] == pair[1]),
        "the processes of one run counted different events: {events:?}"
    );
    let digests = if to_files {
        Some((sha256_of(&output_path)?, sha256_of(&rejects_path)?))
    } else {
        None
    };
    Ok(Figures {
        kind,
        wall,
        cpu_secs,
        peak_rss_bytes,
        events: events.first().copied().unwrap_or_default(),
        digests,
    })
}

/// Every run counted the same events and, with files, wrote the same bytes.
fn check_same_outcome(results: &[Figures]) -> anyhow::Result<()> {
    let Some(first) = results.first() else {
        return Ok(());
    };
    for figures in results {
        ensure!(
            figures.events == first.events,
            "{} counted {} events, {} {}",
            figures.kind.label(),
            figures.events,
            first.kind.label(),
            first.events
        );
        if figures.digests.is_some() && first.digests.is_some() {
            ensure!(
                figures.digests == first.digests,
                "{} wrote other bytes than {}: {:?} and {:?}",
                figures.kind.label(),
                first.kind.label(),
                figures.digests,
                first.digests
            );
        }
    }
    if let Some((output, rejects)) = &first.digests {
        say(&format!(
            "every thread count wrote the same output (SHA-256 {output}) and rejects ({rejects})"
        ));
    }
    Ok(())
}

fn report(results: &[Figures], kinds: &[Kind], input_bytes: u64, options: &Options) -> String {
    let mut text = format!(
        "results (braze-mixpanel-bridge transform, {:.1} MB input, output and rejects to {}):\n\n\
         | run of | run | wall s | MB/s | events/s | CPU s (user+sys) | peak RSS MB |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        input_bytes as f64 / 1e6,
        if options.to_files {
            "files (one-thread pairs: /dev/null)"
        } else {
            "/dev/null"
        },
    );
    for &kind in kinds {
        let runs = results.iter().filter(|figures| figures.kind == kind);
        for (run, figures) in runs.enumerate() {
            let _ = writeln!(
                text,
                "| {} | {} | {:.2} | {:.0} | {:.0} | {:.2} | {:.1} |",
                kind.label(),
                run + 1,
                figures.wall.as_secs_f64(),
                figures.mb_per_sec(input_bytes),
                figures.events_per_sec(),
                figures.cpu_secs,
                figures.peak_rss_bytes as f64 / 1e6,
            );
        }
    }
    // The best run of each kind, by throughput.
    let best = |kind: Kind| {
        results
            .iter()
            .filter(|figures| figures.kind == kind)
            .max_by(|a, b| {
                a.mb_per_sec(input_bytes)
                    .total_cmp(&b.mb_per_sec(input_bytes))
            })
    };
    let events = results.first().map_or(0, |figures| figures.events);
    let _ = writeln!(
        text,
        "\n{events} events a process; best of {} run(s):",
        options.runs
    );
    let one_thread = best(Kind::Threads(1)).map(|figures| figures.mb_per_sec(input_bytes));
    for &kind in kinds {
        let Some(figures) = best(kind) else {
            continue;
        };
        let _ = write!(
            text,
            "\n{}: {:.2} s, {:.0} MB/s, {:.0} events/s",
            kind.label(),
            figures.wall.as_secs_f64(),
            figures.mb_per_sec(input_bytes),
            figures.events_per_sec(),
        );
        let Some(one_thread) = one_thread.filter(|_| kind != Kind::Threads(1)) else {
            continue;
        };
        let speed_up = figures.mb_per_sec(input_bytes) / one_thread;
        let _ = write!(text, ", {speed_up:.2}× one thread");
        match kind {
            Kind::Threads(2) => {
                let verdict = if speed_up >= GOAL_SPEED_UP {
                    "meets"
                } else {
                    "is below"
                };
                let _ = write!(text, " ({verdict} the goal of {GOAL_SPEED_UP}×)");
            }
            Kind::Pair => {
                let _ = write!(text, " (what two busy cores give here)");
            }
            Kind::Threads(_) => {}
        }
    }
    text
}

/// The event count of `transform`'s summary line.
fn summary_events(stderr: &str) -> Option<u64> {
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix("transform: "))?;
    line.split(' ').next()?.parse().ok()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// The NDJSON file of about `size_mb` MB of generated events, made if missing.
fn input_file(size_mb: u64, seed: u64) -> anyhow::Result<PathBuf> {
    cached_input(
        &format!("transform-currents-{size_mb}mb-seed{seed}.ndjson"),
        &format!("{size_mb} MB of Currents events"),
        |out| write_events(size_mb * 1_000_000, seed, out),
    )
}

/// Currents events of the workspace's generator, production mix, one a
/// line, until at least `min_bytes` are written.
fn write_events(min_bytes: u64, seed: u64, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let config = synthetic::Config::new(seed)
        .mix(synthetic::Mix::production())
        .users(USERS);
    let mut generator = synthetic::Generator::new(config);
    let mut line = String::with_capacity(4096);
    let mut written = 0;
    while written < min_bytes {
        line.clear();
        generator.write_event(&mut line);
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_arguments() {
        let options = parse_args(&["--size-mb", "64", "--threads", "1,2,4", "--output", "file"]);
        assert_eq!(
            options.ok(),
            Some(Options {
                size_mb: 64,
                threads: vec![1, 2, 4],
                runs: 3,
                to_files: true,
                pair: true,
                seed: DEFAULT_SEED,
            })
        );
        assert!(parse_args(&["--threads", "0"]).is_err());
        assert!(parse_args(&["--output", "disk"]).is_err());
        assert!(parse_args(&["--size-mb"]).is_err());
        assert_eq!(
            parse_args(&["--no-pair"]).map(|options| options.pair).ok(),
            Some(false)
        );
    }

    #[test]
    fn reads_the_summary_and_writes_whole_events() {
        let stderr = "transform: 1234 events: 1000 mapped, 200 skipped, 34 invalid\n  skipped filtered: 200\n";
        assert_eq!(summary_events(stderr), Some(1234));
        assert_eq!(summary_events("nothing"), None);

        let mut first = Vec::new();
        assert!(write_events(100_000, 3, &mut first).is_ok());
        let mut second = Vec::new();
        assert!(write_events(100_000, 3, &mut second).is_ok());
        assert_eq!(first, second, "deterministic");
        let text = String::from_utf8(first).unwrap_or_default();
        assert!(text.len() >= 100_000 && text.ends_with('\n'));
        assert!(
            text.lines()
                .all(|line| line.starts_with('{') && line.ends_with('}'))
        );
    }
}
