//! `backfill`: Braze Currents storage archives into Mixpanel, resumable,
//! on every core (`bridge_server::backfill`; `docs/backfill.md`).

use std::io::{self, Write as _};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bridge_server::backfill::checkpoint::Checkpoints;
use bridge_server::backfill::letters::LetterStore;
use bridge_server::backfill::send::Totals;
use bridge_server::backfill::{Plan, RunOptions, Selection, Summary, Target, run};
use bridge_server::config::{self, Env, Flags, SpoolBackend, SpoolOnly};
use currents_archive::layout::Prune;
use currents_mixpanel::{Mapper, MappingConfig, TypeFilter};
use mixpanel_client::BatchLimits;

use crate::import_cmd::EXIT_RECORDS_FAILED;
use crate::mixpanel_args::MixpanelArgs;
use crate::progress::Progress;

/// Arguments of `backfill`.
#[derive(clap::Args, Debug)]
pub(crate) struct BackfillArgs {
    /// Where the archives are: directories or object store URLs
    /// (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
    /// `file:///path`), each read with its store's usual credentials.
    #[arg(required = true, value_name = "DIR or URL")]
    locations: Vec<String>,

    #[command(flatten)]
    mixpanel: MixpanelArgs,

    /// Only these event types (comma-separated; `users.messages.email.*`
    /// matches a prefix). Other types' folders are not even listed.
    #[arg(
        long,
        alias = "include-types",
        value_delimiter = ',',
        value_name = "TYPES"
    )]
    types: Option<Vec<String>>,

    /// Never these event types (comma-separated; wins over --types).
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    exclude_types: Vec<String>,

    /// Only the hours Braze wrote at or after TIME: `2026-11-28`,
    /// `2026-11-28-10` (Braze's folder hours, UTC), RFC 3339, or a duration
    /// ago (`36h`, `7d`).
    #[arg(long, value_name = "TIME", value_parser = parse_hour_arg)]
    since: Option<i64>,

    /// Only the hours Braze wrote before TIME (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_hour_arg)]
    until: Option<i64>,

    /// Send nothing: write the Mixpanel events each file maps to as NDJSON
    /// under --out, and what would be dead-lettered to
    /// `dead-letters.ndjson` there. Needs no Mixpanel credentials and
    /// changes no checkpoint.
    #[arg(long)]
    dry_run: bool,

    /// The dry run's output directory.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "backfill-dry-run",
        requires = "dry_run"
    )]
    out: PathBuf,

    /// Send again what earlier backfills of these locations sent (forget
    /// their checkpoints first).
    #[arg(long)]
    again: bool,

    /// Files read, decoded and mapped at once [default: the cores].
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,

    /// `/import` requests in flight at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    concurrency: u16,

    /// TOML configuration file (else $BRIDGE_CONFIG): the data dir and the
    /// spool, where checkpoints and dead letters go.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Where the checkpoints (`backfill/`) and the dead letters (the
    /// spool's) are kept [env: BRIDGE_DATA_DIR] [default: ./bridge-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

pub(crate) fn run_command(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let type_filter = TypeFilter::new(args.types.as_deref(), &args.exclude_types);
    crate::transform_cmd::warn_unmatched_patterns(&type_filter)?;
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        anyhow::bail!("--since must be before --until");
    }
    let mut prune = Prune::new();
    {
        let filter = type_filter.clone();
        prune = prune.event_types(Arc::new(move |event_type: &str| filter.allows(event_type)));
    }
    if let Some(since) = args.since {
        prune = prune.since(since);
    }
    if let Some(until) = args.until {
        prune = prune.until(until);
    }
    let selection = Selection {
        locations: args.locations.clone(),
        prune,
    };
    let target = if args.dry_run {
        Target::DryRun(args.out.clone())
    } else {
        Target::Mixpanel(
            args.mixpanel
                .client_builder()?
                .max_concurrent_requests(usize::from(args.concurrency))
                .build()
                .context("cannot set up the Mixpanel client")?,
        )
    };
    let options = RunOptions {
        mapper: Mapper::new(MappingConfig {
            project_token: args.mixpanel.project_token().map(str::to_owned),
            type_filter,
        }),
        threads: args
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN),
        max_in_flight: usize::from(args.concurrency),
        limits: BatchLimits::default(),
    };
    let flags = Flags {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        ..Flags::default()
    };
    let spool =
        config::spool_only(&flags, &Env::from_process()).context("invalid configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(backfill(
        selection,
        options,
        target,
        &spool,
        args.dry_run,
        args.again,
    ))
}

async fn backfill(
    selection: Selection,
    options: RunOptions,
    target: Target,
    spool: &SpoolOnly,
    dry_run: bool,
    again: bool,
) -> anyhow::Result<ExitCode> {
    let (mut checkpoints, mut letters) = if dry_run {
        let Target::DryRun(dir) = &target else {
            unreachable!("a dry run writes files")
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        (None, LetterStore::file(dir.join("dead-letters.ndjson"))?)
    } else {
        let checkpoints = Checkpoints::open(&spool.data_dir)?;
        let letters = match &spool.backend {
            SpoolBackend::Sqlite => {
                LetterStore::sqlite(&spool.data_dir.join("spool"), u64::MAX).await?
            }
            SpoolBackend::Nats(options) => {
                let client = bridge_server::nats::connect(options).await?;
                LetterStore::Nats(Box::new(
                    bridge_server::spool::nats::NatsDeadLetterStore::open(client, options).await?,
                ))
            }
        };
        (Some(checkpoints), letters)
    };
    let plan = Plan::make(&selection, checkpoints.as_mut(), again).await?;
    let mut stderr = io::stderr().lock();
    writeln!(
        stderr,
        "backfill: {} file(s) listed, {} already done by an earlier run, {} to read ({:.1} MB)",
        plan.files_listed,
        plan.files_already_done,
        plan.files_to_read(),
        plan.bytes_to_read as f64 / 1e6
    )?;
    drop(stderr);
    let totals = Arc::new(Totals::default());
    let progress = {
        let totals = Arc::clone(&totals);
        Progress::start("backfill", Some(plan.bytes_to_read), move |elapsed| {
            (Totals::get(&totals.bytes), progress_line(&totals, elapsed))
        })
    };
    let summary = run(
        plan,
        options,
        target,
        checkpoints.as_mut(),
        &mut letters,
        Arc::clone(&totals),
    )
    .await;
    progress.finish();
    let summary = summary?;
    write_summary(&summary, dry_run)?;
    Ok(
        if summary.stopped.is_some()
            || !summary.files_failed.is_empty()
            || summary.dead_lettered > 0
        {
            ExitCode::from(EXIT_RECORDS_FAILED)
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn progress_line(totals: &Totals, elapsed: Duration) -> String {
    let records = Totals::get(&totals.records);
    format!(
        "{} files done, {} records read ({:.0}/s), {} sent, {} dead-lettered, {:.1} MB read",
        Totals::get(&totals.files_done),
        records,
        records as f64 / elapsed.as_secs_f64().max(0.001),
        Totals::get(&totals.sent),
        Totals::get(&totals.dead_lettered),
        Totals::get(&totals.bytes) as f64 / 1e6,
    )
}

fn write_summary(summary: &Summary, dry_run: bool) -> io::Result<()> {
    let mut out = io::stderr().lock();
    let counts = &summary.counts;
    let seconds = summary.elapsed.as_secs_f64().max(0.001);
    writeln!(
        out,
        "backfill: {} file(s) listed: {} done before, {} done now, {} failed; {:.1} MB read in {:.1} s",
        summary.files_listed,
        summary.files_already_done,
        summary.files_done,
        summary.files_failed.len(),
        summary.bytes as f64 / 1e6,
        seconds,
    )?;
    writeln!(
        out,
        "backfill: {} events: {} {} ({:.0}/s), {} skipped, {} dead-lettered; {} requests",
        counts.total(),
        summary.sent,
        if dry_run {
            "written"
        } else {
            "sent to Mixpanel"
        },
        summary.sent as f64 / seconds,
        counts.total_skipped(),
        summary.dead_lettered,
        summary.requests,
    )?;
    for (reason, count) in counts.skipped_by_reason() {
        writeln!(out, "  skipped {}: {count}", reason.as_str())?;
    }
    for (reason, count) in counts.invalid_by_reason() {
        writeln!(out, "  invalid {}: {count}", reason.as_str())?;
    }
    for (key, error) in &summary.files_failed {
        writeln!(out, "  failed file {key}: {error}")?;
    }
    if let Some(reason) = &summary.stopped {
        writeln!(
            out,
            "backfill: stopped early: {reason}; run the same command again to resume"
        )?;
    }
    Ok(())
}

/// A `--since`/`--until` TIME as UNIX seconds: Braze's folder forms
/// (`YYYY-MM-DD`, `YYYY-MM-DD-HH`, UTC) or whatever `dlq` takes.
fn parse_hour_arg(text: &str) -> Result<i64, String> {
    parse_hour(text, bridge_server::clock::now_ms())
}

fn parse_hour(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let parts: Vec<&str> = text.split('-').collect();
    let is_digits =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
    let folder_hour = match parts.as_slice() {
        [y, m, d] if is_digits(y, 4) && is_digits(m, 2) && is_digits(d, 2) => Some((y, m, d, "00")),
        [y, m, d, h]
            if is_digits(y, 4) && is_digits(m, 2) && is_digits(d, 2) && is_digits(h, 2) =>
        {
            Some((y, m, d, *h))
        }
        _ => None,
    };
    if let Some((y, m, d, h)) = folder_hour {
        let instant = format!("{y}-{m}-{d}T{h}:00:00Z")
            .parse::<jiff::Timestamp>()
            .map_err(|error| format!("{text:?} is not a time: {error}"))?;
        return Ok(instant.as_second());
    }
    crate::dlq_cmd::parse_time(text, now_ms).map(|ms| ms.div_euclid(1_000))
}

#[cfg(test)]
mod tests {
    use super::parse_hour;

    #[test]
    fn times_take_brazes_folder_forms_and_the_dlq_ones() {
        let now_ms = 1_764_324_000_000; // 2025-11-28T10:00:00Z
        assert_eq!(parse_hour("2025-11-28", now_ms), Ok(1_764_288_000));
        assert_eq!(parse_hour("2025-11-28-10", now_ms), Ok(1_764_324_000));
        assert_eq!(
            parse_hour("2025-11-28T10:00:00Z", now_ms),
            Ok(1_764_324_000)
        );
        assert_eq!(parse_hour("1h", now_ms), Ok(1_764_320_400));
        assert!(parse_hour("2025-11-28-25", now_ms).is_err());
        assert!(parse_hour("yesterday", now_ms).is_err());
    }
}
