//! `dlq`: the dead letters of the spool: `list`, `show`, `replay` (back
//! into delivery) and `purge`, on whichever spool the configuration names
//! (`spool.backend`), with the same filters and the same output.
//!
//! With the SQLite spool it opens the spool's database in the data
//! directory with its own connection ([`DeadLetterStore`]), so it works
//! whether `serve` runs or not: SQLite's locks serialize it with the
//! server's writer (waiting up to [`BUSY_TIMEOUT`]) and every change is one
//! transaction. With NATS it connects as `serve` does
//! ([`bridge_server::nats::connect`]) and works on the dead-letter stream
//! ([`NatsDeadLetterStore`]); both streams must exist (`serve` creates
//! them), and nothing is created here. Both are a [`DeadLetterAdmin`]: one
//! generic [`execute`] prints, filters, replays and purges.
//!
//! Only the spool's settings are read from the configuration
//! ([`config::spool_only`]: the data dir, `spool.backend`, `[nats]`), never
//! the tokens or the Mixpanel credentials.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bridge_server::config::{self, Env, Flags, SpoolBackend, SpoolOnly};
use bridge_server::nats::NatsOptions;
use bridge_server::spool::DeadLetterAdmin;
use bridge_server::spool::nats::{NatsDeadLetterStore, ObjectState};
use bridge_server::spool::sqlite::{DeadLetterEntry, DeadLetterFilter, DeadLetterStore};
use serde_json::{Value, json};

/// How long a call waits for the running server's writer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `detail` the table shows, in characters.
pub(crate) const DETAIL_WIDTH: usize = 60;

/// Exit code of a usage error.
pub(crate) const USAGE: u8 = 2;

/// The usage error of a `replay` with no filter, no `--id` and no `--yes`.
pub(crate) const REPLAY_ALL_NEEDS_YES: &str =
    "replaying every entry needs --yes (or give a filter or --id)";

#[derive(clap::Args, Debug)]
pub(crate) struct DlqArgs {
    /// TOML configuration file, read for the data dir, spool.backend and
    /// nats.* only (else $BRIDGE_CONFIG).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Directory of the SQLite spool and cohort store [env: BRIDGE_DATA_DIR]
    /// [default: the config file's data_dir, else ./bridge-data].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Act on the cohort import's dead letters (membership changes Braze
    /// refused) instead of the spool's events.
    #[arg(long, global = true)]
    cohorts: bool,

    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum DlqCommand {
    /// List dead letters, oldest first: a table, or NDJSON with --json.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Show at most this many entries.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// One JSON object per entry (NDJSON), the event included; the count goes to stderr.
        #[arg(long)]
        json: bool,
    },
    /// Show entries in full, as pretty JSON with the event.
    Show {
        /// Entry ids, as `list` shows them.
        #[arg(value_name = "ID", required = true)]
        ids: Vec<i64>,
    },
    /// Put matching entries back into the spool, to be delivered again
    /// (--yes needed to replay every entry: no filter and no --id).
    Replay(Selection),
    /// Delete matching entries for good (--yes needed, always: purged
    /// entries cannot be recovered).
    Purge(Selection),
}

/// Which entries `replay` and `purge` act on, and the confirmation.
#[derive(clap::Args, Debug)]
pub(crate) struct Selection {
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Only this entry (repeatable).
    #[arg(long = "id", value_name = "ID")]
    pub(crate) ids: Vec<i64>,
    /// Confirms a purge, or a replay of every entry.
    #[arg(long)]
    pub(crate) yes: bool,
}

/// The filters `list`, `replay` and `purge` share. TIME is RFC 3339
/// (`2026-11-28T10:00:00Z`) or a duration ago (`30m`, `2h`, `7d`).
#[derive(clap::Args, Debug, Default)]
pub(crate) struct FilterArgs {
    /// Only this reason (missing_event_type, refused_by_mixpanel, …).
    #[arg(long, value_name = "R")]
    pub(crate) reason: Option<String>,
    /// Only this event type (users.messages.email.Open, …).
    #[arg(long, value_name = "T", conflicts_with = "cohort")]
    pub(crate) event_type: Option<String>,
    /// With --cohorts: only this Mixpanel cohort id.
    #[arg(long, value_name = "ID")]
    pub(crate) cohort: Option<String>,
    /// Dead-lettered at or after TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    pub(crate) since: Option<i64>,
    /// Dead-lettered before TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    pub(crate) until: Option<i64>,
}

impl FilterArgs {
    fn to_filter(&self, ids: Vec<i64>) -> DeadLetterFilter {
        DeadLetterFilter {
            reason: self.reason.clone(),
            event_type: self.event_type.clone(),
            since_ms: self.since,
            until_ms: self.until,
            ids,
        }
    }
}

pub(crate) fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let flags = Flags {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        ..Flags::default()
    };
    let spool =
        config::spool_only(&flags, &Env::from_process()).context("invalid configuration")?;
    if args.cohorts {
        return crate::dlq_cohorts::run(args.command, &spool);
    }
    if let Some(message) = usage_error(&args.command) {
        return usage(message);
    }
    let runtime = runtime()?;
    let (mut stdout, mut stderr) = (io::stdout(), io::stderr());
    let code = match &spool {
        SpoolOnly {
            backend: SpoolBackend::Sqlite,
            data_dir,
        } => {
            let mut store = open_sqlite(&data_dir.join("spool"))?;
            runtime.block_on(execute(&mut store, args.command, &mut stdout, &mut stderr))?
        }
        SpoolOnly {
            backend: SpoolBackend::Nats(options),
            ..
        } => runtime.block_on(async {
            let mut store = open_nats(options).await?;
            execute(&mut store, args.command, &mut stdout, &mut stderr).await
        })?,
    };
    Ok(ExitCode::from(code))
}

/// The runtime the NATS stores' calls need (the SQLite store's are ready at
/// once): one thread, as the command does one thing at a time.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A mistake in the command itself, found before any store is opened.
fn usage_error(command: &DlqCommand) -> Option<&'static str> {
    match command {
        DlqCommand::List { filter, .. }
        | DlqCommand::Replay(Selection { filter, .. })
        | DlqCommand::Purge(Selection { filter, .. })
            if filter.cohort.is_some() =>
        {
            Some("--cohort filters the cohort import's dead letters: add --cohorts")
        }
        DlqCommand::Replay(Selection { filter, ids, yes })
            if !yes && filter.to_filter(ids.clone()).is_everything() =>
        {
            Some(REPLAY_ALL_NEEDS_YES)
        }
        _ => None,
    }
}

/// Runs `command` on `store`, writing what it shows to `out` and counts,
/// notes and usage errors to `err`; returns the exit code. The same for
/// every [`DeadLetterAdmin`], so that the output is the same whichever
/// spool keeps the dead letters.
pub(crate) async fn execute<S: DeadLetterAdmin>(
    store: &mut S,
    command: DlqCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    match command {
        DlqCommand::List {
            filter,
            limit,
            json,
        } => list(store, &filter.to_filter(Vec::new()), limit, json, out, err).await,
        DlqCommand::Show { ids } => show(store, &ids, out, err).await,
        DlqCommand::Replay(Selection { filter, ids, yes }) => {
            let filter = filter.to_filter(ids);
            if !yes && filter.is_everything() {
                return write_usage(err, REPLAY_ALL_NEEDS_YES);
            }
            let replayed = store.replay(&filter).await?;
            writeln!(
                out,
                "replayed {} event(s) in {} batch(es) into the spool",
                replayed.n_events, replayed.n_batches
            )?;
            if replayed.n_not_json != 0 {
                writeln!(
                    out,
                    "left {} entry(ies) in the dead letters: their event is not JSON",
                    replayed.n_not_json
                )?;
            }
            out.flush()?;
            Ok(0)
        }
        DlqCommand::Purge(Selection { filter, ids, yes }) => {
            let filter = filter.to_filter(ids);
            if !yes {
                let n_matching = store.count(&filter).await?;
                return write_usage(
                    err,
                    &format!(
                        "purging deletes {n_matching} matching entry(ies) for good: pass --yes"
                    ),
                );
            }
            let n_purged = store.purge(&filter).await?;
            writeln!(out, "purged {n_purged} entry(ies)")?;
            out.flush()?;
            Ok(0)
        }
    }
}

pub(crate) fn usage(message: &str) -> anyhow::Result<ExitCode> {
    let code = write_usage(&mut io::stderr(), message)?;
    Ok(ExitCode::from(code))
}

/// Writes a usage error to `err`; returns [`USAGE`].
pub(crate) fn write_usage(err: &mut dyn Write, message: &str) -> anyhow::Result<u8> {
    writeln!(err, "braze-mixpanel-bridge: {message}")?;
    err.flush()?;
    Ok(USAGE)
}

fn open_sqlite(spool_dir: &Path) -> anyhow::Result<DeadLetterStore> {
    if !spool_dir.is_dir() {
        anyhow::bail!(
            "no spool at {}: is the data dir right?",
            spool_dir.display()
        );
    }
    DeadLetterStore::open(spool_dir, BUSY_TIMEOUT)
        .with_context(|| format!("cannot open the spool at {}", spool_dir.display()))
}

/// The dead letters of the NATS spool `options` describe: connects, checks
/// that `serve` has created both streams (a replay publishes to the batch
/// stream), and opens the dead-letter stream. Creates nothing.
pub(crate) async fn open_nats(options: &NatsOptions) -> anyhow::Result<NatsDeadLetterStore> {
    let client = bridge_server::nats::connect(options).await?;
    // The lease only matters to the consumer's comparison, not looked at
    // here: any will do.
    let any_lease = Duration::from_secs(600);
    let checks = bridge_server::spool::nats::check(client.clone(), options, any_lease)
        .await
        .context("cannot read the NATS spool's streams")?;
    let missing: Vec<&str> = checks
        .iter()
        .filter(|check| check.state == ObjectState::Missing && check.object.starts_with("stream "))
        .map(|check| check.object.as_str())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the NATS spool has no {} yet: start `serve` once with this configuration to create it (or check nats.stream and nats.dead_letter_stream)",
            missing.join(" and no ")
        );
    }
    Ok(NatsDeadLetterStore::open(client, options).await?)
}

async fn list<S: DeadLetterAdmin>(
    store: &S,
    filter: &DeadLetterFilter,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let entries = store.list(filter, limit).await?;
    let n_matching = store.count(filter).await?;
    let footer = format!("{} shown of {n_matching} matching", entries.len());
    if json {
        for entry in &entries {
            serde_json::to_writer(&mut *out, &entry_json(entry))?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        writeln!(err, "{footer}")?;
        return Ok(0);
    }
    let header = [
        "ID",
        "TIME",
        "REASON",
        "EVENT TYPE",
        "EVENT ID",
        "ATTEMPTS",
        "DETAIL",
    ];
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                entry.id.to_string(),
                format_time(entry.dead_lettered_at_ms, false),
                entry.letter.reason.clone(),
                entry
                    .letter
                    .event_type
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                entry
                    .letter
                    .event_id
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                entry.letter.attempts.to_string(),
                shorten(&entry.letter.detail, DETAIL_WIDTH),
            ]
        })
        .collect();
    write_table(out, &header, &rows)?;
    writeln!(out, "{footer}")?;
    out.flush()?;
    Ok(0)
}

/// Writes rows under a header, columns padded to their widest cell, the
/// last column unpadded.
pub(crate) fn write_table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|title| (*title).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (idx, (cell, width)) in row.iter().zip(&widths).enumerate() {
            line.push_str(cell);
            if idx + 1 < row.len() {
                let pad = width - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

async fn show<S: DeadLetterAdmin>(
    store: &S,
    ids: &[i64],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let mut n_missing = 0;
    for &id in ids {
        match store.get(id).await? {
            Some(entry) => {
                serde_json::to_writer_pretty(&mut *out, &entry_json(&entry))?;
                out.write_all(b"\n")?;
            }
            None => {
                n_missing += 1;
                writeln!(err, "braze-mixpanel-bridge: no dead letter {id}")?;
            }
        }
    }
    out.flush()?;
    Ok(if n_missing == 0 { 0 } else { 1 })
}

/// An entry as JSON, the event as JSON itself when it is; an event that is
/// not JSON is a string, with `"event_is_json": false`.
fn entry_json(entry: &DeadLetterEntry) -> Value {
    let text = String::from_utf8_lossy(&entry.letter.event);
    let event = serde_json::from_str::<Value>(&text).ok();
    let mut value = json!({
        "id": entry.id,
        "dead_lettered_at": format_time(entry.dead_lettered_at_ms, true),
        "dead_lettered_at_ms": entry.dead_lettered_at_ms,
        "reason": entry.letter.reason,
        "detail": entry.letter.detail,
        "event_type": entry.letter.event_type,
        "event_id": entry.letter.event_id,
        "workspace": entry.letter.workspace,
        "attempts": entry.letter.attempts,
        "batch_id": entry.batch_id,
    });
    match event {
        Some(event) => value["event"] = event,
        None => {
            value["event"] = Value::String(text.into_owned());
            value["event_is_json"] = Value::Bool(false);
        }
    }
    value
}

/// `text` on one line, cut to `width` characters with `…`.
pub(crate) fn shorten(text: &str, width: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= width {
        return one_line;
    }
    let mut short: String = one_line.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short
}

fn parse_time_arg(text: &str) -> Result<i64, String> {
    parse_time(text, bridge_server::clock::now_ms())
}

/// A TIME argument as UNIX milliseconds: an RFC 3339 / ISO 8601 instant
/// with its offset (`2026-11-28T10:00:00Z`, `2026-11-28T11:30:00+01:30`) or
/// a duration before `now_ms` (`90s`, `30m`, `2h`, `7d`, `1w`, `1h30m`;
/// a day is 24 hours).
pub(crate) fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let expected = || {
        format!(
            "{text:?} is not a time: expected RFC 3339 (2026-11-28T10:00:00Z) or a duration ago (30m, 2h, 7d)"
        )
    };
    if let Ok(instant) = text.parse::<jiff::Timestamp>() {
        return Ok(instant.as_millisecond());
    }
    let span = text.parse::<jiff::Span>().map_err(|_| expected())?;
    if span.is_negative() {
        return Err(expected());
    }
    let ago = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| expected())?;
    let ago_ms = i64::try_from(ago.as_millis()).map_err(|_| expected())?;
    Ok(now_ms.saturating_sub(ago_ms))
}

/// UNIX milliseconds as RFC 3339 UTC: `2026-11-28T10:00:00Z`, with
/// `.123` milliseconds when `millis` is set.
pub(crate) fn format_time(ms: i64, millis: bool) -> String {
    let instant = if millis {
        jiff::Timestamp::from_millisecond(ms)
    } else {
        jiff::Timestamp::from_second(ms.div_euclid(1_000))
    };
    match instant {
        Ok(instant) if millis => format!("{instant:.3}"),
        Ok(instant) => format!("{instant:.0}"),
        // Outside years -9999..=9999: no store writes such a time.
        Err(_) => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_860_000_000; // 2026-11-28T10:00:00Z

    #[test]
    fn rfc3339_utc_is_parsed() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z", NOW), Ok(0));
        assert_eq!(parse_time("2026-11-28T10:00:00Z", NOW), Ok(NOW));
        assert_eq!(parse_time("2000-02-29T23:59:59Z", NOW), Ok(951_868_799_000));
        assert_eq!(parse_time("1969-12-31T23:59:59Z", NOW), Ok(-1_000));
        assert_eq!(parse_time(" 2026-11-28t10:00:00z ", NOW), Ok(NOW));
    }

    #[test]
    fn rfc3339_fractions_and_offsets_are_parsed() {
        assert_eq!(parse_time("2026-11-28T10:00:00.5Z", NOW), Ok(NOW + 500));
        assert_eq!(
            parse_time("2026-11-28T10:00:00.123456Z", NOW),
            Ok(NOW + 123)
        );
        assert_eq!(parse_time("2026-11-28T11:30:00+01:30", NOW), Ok(NOW));
        assert_eq!(parse_time("2026-11-28T08:00:00-02:00", NOW), Ok(NOW));
    }

    #[test]
    fn durations_mean_that_long_ago() {
        assert_eq!(parse_time("90s", NOW), Ok(NOW - 90_000));
        assert_eq!(parse_time("30m", NOW), Ok(NOW - 1_800_000));
        assert_eq!(parse_time("2h", NOW), Ok(NOW - 7_200_000));
        assert_eq!(parse_time("7d", NOW), Ok(NOW - 604_800_000));
        assert_eq!(parse_time("1w", NOW), Ok(NOW - 604_800_000));
        assert_eq!(parse_time("1h30m", NOW), Ok(NOW - 5_400_000));
        assert_eq!(parse_time("0h", NOW), Ok(NOW));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "h",
            "-2h",
            "2 fortnights",
            "1mo",
            "99999999999999999999d",
            "2026-11-28",
            "2026-11-28T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-28T25:00:00Z",
            "2026-11-28T10:00:00.Z",
            "2026-11-28T10:00:00Zjunk",
            "２026-11-28T10:00:00Z",
        ] {
            let error = parse_time(text, NOW).expect_err(text);
            assert!(error.contains("is not a time"), "{error}");
        }
    }

    #[test]
    fn times_are_formatted_in_utc() {
        assert_eq!(format_time(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(NOW, false), "2026-11-28T10:00:00Z");
        assert_eq!(format_time(NOW + 42, true), "2026-11-28T10:00:00.042Z");
        assert_eq!(
            format_time(951_868_799_999, true),
            "2000-02-29T23:59:59.999Z"
        );
        assert_eq!(format_time(-1, true), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn formatting_and_parsing_agree_on_every_day_for_centuries() {
        let first_day = -135_140; // 1600-01-01
        let last_day = 157_054; // 2400-01-01
        for days in first_day..=last_day {
            let ms = days * 86_400_000 + 45_296_789; // 12:34:56.789
            assert_eq!(parse_time(&format_time(ms, true), NOW), Ok(ms));
        }
        assert_eq!(
            format_time(first_day * 86_400_000, false),
            "1600-01-01T00:00:00Z"
        );
        assert_eq!(
            format_time(last_day * 86_400_000, false),
            "2400-01-01T00:00:00Z"
        );
    }

    #[test]
    fn details_are_shortened_on_one_line() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("line\nbreak", 20), "line break");
        assert_eq!(shorten("abcdefghijkl", 5), "abcd…");
        assert_eq!(shorten("ééééé", 5), "ééééé");
    }
}
