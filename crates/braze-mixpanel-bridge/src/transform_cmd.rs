//! `transform`: Currents events from a file or stdin to Mixpanel NDJSON.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use currents_mixpanel::transform::{Summary, TransformOptions, transform_parallel};
use currents_mixpanel::{Mapper, MappingConfig, TypeFilter};

/// Arguments of `transform`.
#[derive(clap::Args)]
pub(crate) struct TransformArgs {
    /// Input file of Currents events: one batch envelope, envelopes one per
    /// line, or NDJSON of single events. `-` reads stdin.
    #[arg(default_value = "-")]
    input: PathBuf,

    /// Mixpanel project token, sent as `token` in every event.
    #[arg(long, env = "MIXPANEL_PROJECT_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Only export these event types (comma-separated; `users.messages.email.*` matches a prefix).
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    include_types: Option<Vec<String>>,

    /// Never export these event types (comma-separated; wins over --include-types).
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    exclude_types: Vec<String>,

    /// Write every skipped or invalid event, with its reason, to FILE as NDJSON.
    #[arg(long, value_name = "FILE")]
    rejects: Option<PathBuf>,

    /// Map line-by-line input (NDJSON, envelopes one per line) on N threads;
    /// the output is the same, in the same order. A single pretty-printed
    /// document is read by one thread. [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
}

pub(crate) fn run(args: TransformArgs) -> anyhow::Result<ExitCode> {
    let type_filter = TypeFilter::new(args.include_types.as_deref(), &args.exclude_types);
    warn_unmatched_patterns(&type_filter)?;
    let mut stderr = io::stderr().lock();
    let mapper = Mapper::new(MappingConfig {
        project_token: args.token,
        type_filter,
    });

    let mut input: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        Box::new(BufReader::with_capacity(256 * 1024, file))
    };
    let mut rejects: Box<dyn Write> = match &args.rejects {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(io::sink()),
    };
    let mut output = BufWriter::with_capacity(256 * 1024, io::stdout().lock());

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
    let options = TransformOptions::new(threads);
    let summary = transform_parallel(&mut input, &mut output, &mut rejects, &mapper, &options)
        .with_context(|| format!("cannot transform {}", args.input.display()))?;
    output.flush().context("cannot write output")?;
    rejects.flush().context("cannot write rejects")?;
    write_summary(&mut stderr, &summary)?;
    Ok(ExitCode::SUCCESS)
}

fn write_summary(out: &mut dyn Write, summary: &Summary) -> io::Result<()> {
    let counts = &summary.counts;
    writeln!(
        out,
        "transform: {} events: {} mapped, {} skipped, {} invalid",
        counts.total(),
        counts.mapped,
        counts.total_skipped(),
        counts.total_invalid()
    )?;
    for (reason, count) in counts.skipped_by_reason() {
        writeln!(out, "  skipped {reason}: {count}")?;
    }
    for (reason, count) in counts.invalid_by_reason() {
        writeln!(out, "  invalid {reason}: {count}")?;
    }
    Ok(())
}

/// Warns on stderr about each type pattern that matches no known Currents
/// event type (a typo, most likely): `transform` and `backfill`.
pub(crate) fn warn_unmatched_patterns(type_filter: &TypeFilter) -> io::Result<()> {
    let mut stderr = io::stderr().lock();
    for pattern in type_filter.unmatched_patterns() {
        writeln!(
            stderr,
            "braze-mixpanel-bridge: warning: type pattern {pattern:?} matches no known Currents event type"
        )?;
    }
    Ok(())
}
