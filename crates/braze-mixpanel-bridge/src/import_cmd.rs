//! `import`: Mixpanel events (NDJSON or JSON arrays, `.gz` too) into
//! Mixpanel's `/import`, with progress, every failed record written out.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mixpanel_client::BatchLimits;
use mixpanel_client::pipeline::{self, Counters, Failure, FailureReason, Feeder, Position};
use mixpanel_client::reader::{InputItem, read_events};
use serde_json::value::RawValue;

use crate::mixpanel_args::MixpanelArgs;
use crate::progress::Progress;

/// Exit code when the import ran but some records were not imported.
pub(crate) const EXIT_RECORDS_FAILED: u8 = 3;

/// Arguments of `import`.
#[derive(clap::Args, Debug)]
pub(crate) struct ImportArgs {
    /// Files of Mixpanel events: NDJSON or a JSON array, gzip when named
    /// `*.gz`. `-` (the default) reads stdin.
    #[arg(default_value = "-")]
    files: Vec<PathBuf>,

    #[command(flatten)]
    mixpanel: MixpanelArgs,

    /// Requests in flight at once (Mixpanel suggests 10 to 20).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    concurrency: u16,

    /// Events per request (Mixpanel accepts at most 2000).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u16).range(1..=2000))]
    batch_size: u16,

    /// Uncompressed bytes per request (Mixpanel accepts 10 MB).
    #[arg(long, default_value_t = 10_000_000)]
    max_batch_bytes: usize,

    /// Send request bodies uncompressed.
    #[arg(long)]
    no_gzip: bool,

    /// Write every record that was not imported, with the reason, to FILE (NDJSON).
    #[arg(long, value_name = "FILE")]
    failed: Option<PathBuf>,
}

pub(crate) fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let concurrency = usize::from(args.concurrency);
    let client = args
        .mixpanel
        .client_builder()?
        .gzip(!args.no_gzip)
        .max_concurrent_requests(concurrency)
        .build()?;
    let limits = BatchLimits {
        max_events: usize::from(args.batch_size),
        max_bytes: args.max_batch_bytes.max(1),
        ..BatchLimits::default()
    };
    let mut failed_out: Box<dyn Write> = match &args.failed {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(io::sink()),
    };
    let sources: Vec<String> = args
        .files
        .iter()
        .map(|path| path.display().to_string())
        .collect();

    let counters = Arc::new(Counters::default());
    // A few batches ready are enough to refill free request slots; each
    // one queued is memory held (up to --max-batch-bytes).
    let max_queued_batches = concurrency.min(4);
    let (feeder, work) = pipeline::channel(limits, max_queued_batches, Arc::clone(&counters));
    let files = args.files.clone();
    let reader = std::thread::spawn(move || read_all(&files, feeder));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = Instant::now();
    let progress = {
        let counters = Arc::clone(&counters);
        Progress::start("import", None, move |elapsed| {
            (0, progress_line(&counters, elapsed))
        })
    };
    let mut failures = FailedRecordsFile {
        out: &mut *failed_out,
        sources: &sources,
        by_reason: BTreeMap::new(),
        write_error: None,
    };
    let outcome = runtime.block_on(pipeline::run(
        &client,
        work,
        concurrency,
        &counters,
        &mut |failure| failures.record(failure),
    ));
    progress.finish();
    let read_result = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
    if let Some(error) = failures.write_error.take() {
        return Err(error).context("cannot write the failed records");
    }
    failures
        .out
        .flush()
        .context("cannot write the failed records")?;
    write_summary(&counters, &failures.by_reason, started.elapsed())?;
    outcome.context("import stopped")?;
    read_result?;
    let n_failed = Counters::get(&counters.failed);
    Ok(if n_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RECORDS_FAILED)
    })
}

/// Reads every input in order into the feeder. Runs on its own thread.
fn read_all(files: &[PathBuf], mut feeder: Feeder) -> anyhow::Result<()> {
    for (source_idx, path) in files.iter().enumerate() {
        let mut input = open(path)?;
        let source = u32::try_from(source_idx).unwrap_or(u32::MAX);
        let mut on_item = |line: u64, item: InputItem<'_>| {
            let position = Position { source, line };
            let sent = match item {
                InputItem::Event(json) => feeder.event(position, json),
                InputItem::Invalid { text, message } => feeder.invalid(position, text, message),
            };
            sent.map_err(io::Error::other)
        };
        match read_events(&mut *input, &mut on_item) {
            Ok(_) => {}
            // The import stopped (its own error is reported); stop reading.
            Err(mixpanel_client::reader::ReadError::Io(error))
                if error
                    .get_ref()
                    .is_some_and(|inner| inner.is::<pipeline::Stopped>()) =>
            {
                return Ok(());
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        }
    }
    feeder.finish().ok();
    Ok(())
}

fn open(path: &PathBuf) -> anyhow::Result<Box<dyn BufRead>> {
    let raw: Box<dyn io::Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
    };
    let is_gzip = path.extension().is_some_and(|ext| ext == "gz");
    Ok(if is_gzip {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::read::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, raw))
    })
}

/// Writes failed records as NDJSON and counts them by reason.
struct FailedRecordsFile<'a> {
    out: &'a mut dyn Write,
    sources: &'a [String],
    by_reason: BTreeMap<&'static str, u64>,
    write_error: Option<io::Error>,
}

#[derive(serde::Serialize)]
struct FailedLine<'a> {
    file: &'a str,
    line: u64,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    detail: &'a str,
    event: FailedEvent<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum FailedEvent<'a> {
    Json(&'a RawValue),
    Text(std::borrow::Cow<'a, str>),
}

impl FailedRecordsFile<'_> {
    fn record(&mut self, failure: Failure) {
        *self.by_reason.entry(failure.reason.as_str()).or_default() += 1;
        if self.write_error.is_some() {
            return;
        }
        let text = std::str::from_utf8(&failure.record).ok();
        let event = match text.and_then(|text| serde_json::from_str::<&RawValue>(text).ok()) {
            Some(raw) if failure.reason != FailureReason::InvalidJson => FailedEvent::Json(raw),
            _ => FailedEvent::Text(String::from_utf8_lossy(&failure.record)),
        };
        let line = FailedLine {
            file: self
                .sources
                .get(failure.position.source as usize)
                .map_or("-", String::as_str),
            line: failure.position.line,
            reason: failure.reason.as_str(),
            field: failure.field.as_deref(),
            detail: &failure.message,
            event,
        };
        let written = serde_json::to_writer(&mut *self.out, &line)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(error) = written {
            self.write_error = Some(error);
        }
    }
}

fn progress_line(counters: &Counters, elapsed: Duration) -> String {
    let imported = Counters::get(&counters.imported);
    let retries =
        Counters::get(&counters.requests).saturating_sub(Counters::get(&counters.batches));
    format!(
        "{} read, {} imported ({:.0} events/s), {} failed, {:.1} MB sent, {} retries",
        Counters::get(&counters.read),
        imported,
        imported as f64 / elapsed.as_secs_f64().max(0.001),
        Counters::get(&counters.failed),
        Counters::get(&counters.bytes) as f64 / 1e6,
        retries,
    )
}

fn write_summary(
    counters: &Counters,
    by_reason: &BTreeMap<&'static str, u64>,
    elapsed: Duration,
) -> io::Result<()> {
    let mut stderr = io::stderr().lock();
    writeln!(
        stderr,
        "import: {} in {:.1} s; {} batches, {} requests",
        progress_line(counters, elapsed),
        elapsed.as_secs_f64(),
        Counters::get(&counters.batches),
        Counters::get(&counters.requests),
    )?;
    for (reason, count) in by_reason {
        writeln!(stderr, "  failed {reason}: {count}")?;
    }
    Ok(())
}
