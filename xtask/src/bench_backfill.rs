//! `cargo xtask bench backfill`: Avro archives on local disk into a
//! loopback `/import` stand-in, end to end, as an operator runs it.
//!
//! It builds the release binary and `mixpanel-client`'s `import_sink`
//! example, writes (once, under `target/bench/backfill-<events>-<seed>/`) an
//! archive in Braze's layout of synthetic events of the production mix
//! (`currents_archive::fixtures`, deflate, one file per event type and
//! hour, about 100,000 events an hour), then runs `braze-mixpanel-bridge
//! backfill DIR` against a fresh sink with a fresh data dir and reports the
//! wall time, records and events sent per second, the backfill's CPU
//! seconds and its peak RSS (`VmHWM`, polled every 2 ms). A run fails
//! unless the sink counted every event the backfill says it sent.
//!
//! ```text
//! cargo xtask bench backfill [--events N] [--threads N] [--seed S]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use currents_archive::avro::Codec;
use currents_archive::fixtures;

use crate::bench_import::{
    Sink, build_release_binaries, children_cpu_ticks, clock_ticks_per_sec, collect, json_number,
    say, target_dir, wait_measuring,
};

const USAGE: &str = "usage: cargo xtask bench backfill [--events N] [--threads N] [--seed S]";

/// Events per archive hour (one file per event type in each).
const EVENTS_PER_HOUR: u64 = 100_000;

/// The first archive hour: 2026-11-27T00:00:00Z.
const FIRST_HOUR: i64 = 1_795_737_600;

/// The goals from the issue.
const GOAL_EVENTS_PER_SEC: f64 = 250_000.0;
const GOAL_PEAK_RSS_BYTES: u64 = 300_000_000;

struct Options {
    events: u64,
    threads: Option<u16>,
    seed: u64,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut options = Options {
        events: 2_000_000,
        threads: None,
        seed: 20_261_127,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().copied().context(USAGE);
        match *arg {
            "--events" => options.events = value()?.parse().context(USAGE)?,
            "--threads" => options.threads = Some(value()?.parse().context(USAGE)?),
            "--seed" => options.seed = value()?.parse().context(USAGE)?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(options.events > 0, "{USAGE}");
    Ok(options)
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    let release = build_release_binaries()?;
    let bridge = release.join("braze-mixpanel-bridge");
    let sink_program = release.join("examples").join("import_sink");
    let archive = archive(options.events, options.seed)?;
    let archive_bytes = dir_size(&archive)?;
    let data_dir = target_dir().join("bench").join("backfill-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    let sink = Sink::start(&sink_program)?;
    let mut command = Command::new(&bridge);
    command
        .arg("backfill")
        .arg(&archive)
        .arg("--data-dir")
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(threads) = options.threads {
        command.args(["--threads", &threads.to_string()]);
    }
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("MIXPANEL_") || name.starts_with("BRIDGE_") {
            command.env_remove(name);
        }
    }
    command
        .env("MIXPANEL_API_URL", format!("http://{}", sink.address))
        .env("MIXPANEL_PROJECT_TOKEN", "bench-token");
    say(&format!(
        "backfilling {} events ({:.1} MB of Avro) into the sink at {}",
        options.events,
        archive_bytes as f64 / 1e6,
        sink.address
    ));
    let cpu_before = children_cpu_ticks()?;
    let started = Instant::now();
    let mut child = command.spawn().context("cannot start the backfill")?;
    let stderr = collect(child.stderr.take());
    let deadline = Duration::from_secs(60) + Duration::from_micros(options.events * 200);
    let (status, peak_rss) = wait_measuring(&mut child, started, deadline, "the backfill")?;
    let wall = started.elapsed();
    let cpu_secs = (children_cpu_ticks()? - cpu_before) as f64 / clock_ticks_per_sec();
    let stderr = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    for line in stderr.lines().filter(|line| line.starts_with("backfill: ")) {
        say(&format!("backfill said: {line}"));
    }
    ensure!(
        status.success(),
        "the backfill failed with {status}:\n{stderr}"
    );
    let stats = sink.stats()?;
    let sink_cpu_secs = sink.cpu_ticks() as f64 / clock_ticks_per_sec();
    sink.stop()?;
    let sent = sent_events(&stderr)?;
    let counted = json_number(&stats, "events")?;
    ensure!(
        counted == sent,
        "the sink counted {counted} events, the backfill says it sent {sent}"
    );
    let records_per_sec = options.events as f64 / wall.as_secs_f64();
    let sent_per_sec = sent as f64 / wall.as_secs_f64();
    say(&format!(
        "backfill of {} records ({} sent) in {:.2} s: {:.0} records/s, {:.0} events sent/s (goal {:.0}); \
         backfill CPU {:.2} s ({:.2} cores), sink CPU {:.2} s; peak RSS {:.1} MB (goal under {:.0} MB); {} requests",
        options.events,
        sent,
        wall.as_secs_f64(),
        records_per_sec,
        sent_per_sec,
        GOAL_EVENTS_PER_SEC,
        cpu_secs,
        cpu_secs / wall.as_secs_f64(),
        sink_cpu_secs,
        peak_rss as f64 / 1e6,
        GOAL_PEAK_RSS_BYTES as f64 / 1e6,
        json_number(&stats, "requests")?,
    ));
    Ok(())
}

/// The events the backfill's summary says it sent.
fn sent_events(stderr: &str) -> anyhow::Result<u64> {
    let line = stderr
        .lines()
        .find(|line| line.contains(" sent to Mixpanel ("))
        .context("the backfill printed no summary")?;
    // `backfill: <records> events: <sent> sent to Mixpanel (…/s), …`
    line.split(": ")
        .nth(2)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read the summary line {line:?}"))
}

/// The archive of `n_events` events, written once.
fn archive(n_events: u64, seed: u64) -> anyhow::Result<PathBuf> {
    let dir = target_dir()
        .join("bench")
        .join(format!("backfill-{n_events}-{seed}"));
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    say(&format!(
        "writing an archive of {n_events} events to {}",
        dir.display()
    ));
    let mut left = n_events;
    let mut hour_idx = 0u32;
    while left > 0 {
        let n = left.min(EVENTS_PER_HOUR);
        let hour = FIRST_HOUR + i64::from(hour_idx) * 3600;
        let objects: Vec<(String, Vec<u8>)> = fixtures::production_files(
            usize::try_from(n)?,
            seed + u64::from(hour_idx),
            Codec::Deflate,
        )
        .into_iter()
        .enumerate()
        .map(|(seq, (event_type, _, file))| {
            let key = fixtures::braze_key("currents", event_type.name(), hour, seq as u32);
            (key, file)
        })
        .collect();
        fixtures::write_objects(&dir, &objects)?;
        left -= n;
        hour_idx += 1;
    }
    std::fs::write(&done, b"")?;
    Ok(dir)
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
