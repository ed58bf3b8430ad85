//! `dlq`: the dead letters of the spool in the data directory: `list`,
//! `show`, `replay` (back into delivery) and `purge`.
//!
//! It opens the spool's database with its own connection
//! ([`DeadLetterStore`]), so it works whether `serve` runs or not: SQLite's
//! locks serialize it with the server's writer (waiting up to
//! [`BUSY_TIMEOUT`]) and every change is one transaction. Only the data
//! directory is read from the configuration, never the tokens or the
//! Mixpanel credentials.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bridge_server::config::{self, Env, Flags};
use bridge_server::spool::sqlite::{DeadLetterEntry, DeadLetterFilter, DeadLetterStore};
use serde_json::{Value, json};

/// How long a call waits for the running server's writer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `detail` the table shows, in characters.
pub(crate) const DETAIL_WIDTH: usize = 60;

/// Exit code of a usage error.
pub(crate) const USAGE: u8 = 2;

#[derive(clap::Args, Debug)]
pub(crate) struct DlqArgs {
    /// TOML configuration file, read for `data_dir` only (else $BRIDGE_CONFIG).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Directory of the spool and dead letters [env: BRIDGE_DATA_DIR]
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
    /// Put matching entries back into the spool, to be delivered again.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only this entry (repeatable).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<i64>,
        /// Needed to replay every entry (no filter and no --id).
        #[arg(long)]
        yes: bool,
    },
    /// Delete matching entries for good.
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only this entry (repeatable).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<i64>,
        /// Needed, always: purged entries cannot be recovered.
        #[arg(long)]
        yes: bool,
    },
}

/// The filters `list`, `replay` and `purge` share. TIME is RFC 3339
/// (`2026-11-28T10:00:00Z`) or a duration ago (`30m`, `2h`, `7d`).
#[derive(clap::Args, Debug)]
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
    let data_dir =
        config::data_dir_only(&flags, &Env::from_process()).context("invalid configuration")?;
    if args.cohorts {
        return crate::dlq_cohorts::run(args.command, &data_dir);
    }
    let spool_dir = data_dir.join("spool");
    let filter_cohort = match &args.command {
        DlqCommand::List { filter, .. }
        | DlqCommand::Replay { filter, .. }
        | DlqCommand::Purge { filter, .. } => filter.cohort.is_some(),
        DlqCommand::Show { .. } => false,
    };
    if filter_cohort {
        return usage("--cohort filters the cohort import's dead letters: add --cohorts");
    }
    match args.command {
        DlqCommand::List {
            filter,
            limit,
            json,
        } => {
            let store = open(&spool_dir)?;
            list(&store, &filter.to_filter(Vec::new()), limit, json)
        }
        DlqCommand::Show { ids } => {
            let store = open(&spool_dir)?;
            show(&store, &ids)
        }
        DlqCommand::Replay { filter, ids, yes } => {
            let filter = filter.to_filter(ids);
            if !yes && filter == DeadLetterFilter::default() {
                return usage("replaying every entry needs --yes (or give a filter or --id)");
            }
            let mut store = open(&spool_dir)?;
            let replayed = store.replay(&filter)?;
            let mut stdout = io::stdout().lock();
            writeln!(
                stdout,
                "replayed {} event(s) in {} batch(es) into the spool",
                replayed.n_events, replayed.n_batches
            )?;
            if replayed.n_not_json != 0 {
                writeln!(
                    stdout,
                    "left {} entry(ies) in the dead letters: their event is not JSON",
                    replayed.n_not_json
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Purge { filter, ids, yes } => {
            let filter = filter.to_filter(ids);
            let mut store = open(&spool_dir)?;
            if !yes {
                let n_matching = store.count(&filter)?;
                return usage(&format!(
                    "purging deletes {n_matching} matching entry(ies) for good: pass --yes"
                ));
            }
            let n_purged = store.purge(&filter)?;
            writeln!(io::stdout().lock(), "purged {n_purged} entry(ies)")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn usage(message: &str) -> anyhow::Result<ExitCode> {
    writeln!(io::stderr().lock(), "braze-mixpanel-bridge: {message}")?;
    Ok(ExitCode::from(USAGE))
}

fn open(spool_dir: &Path) -> anyhow::Result<DeadLetterStore> {
    if !spool_dir.is_dir() {
        anyhow::bail!(
            "no spool at {}: is the data dir right?",
            spool_dir.display()
        );
    }
    DeadLetterStore::open(spool_dir, BUSY_TIMEOUT)
        .with_context(|| format!("cannot open the spool at {}", spool_dir.display()))
}

fn list(
    store: &DeadLetterStore,
    filter: &DeadLetterFilter,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let entries = store.list(filter, limit)?;
    let n_matching = store.count(filter)?;
    let footer = format!("{} shown of {n_matching} matching", entries.len());
    let mut stdout = io::stdout().lock();
    if json {
        for entry in &entries {
            serde_json::to_writer(&mut stdout, &entry_json(entry))?;
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
        writeln!(io::stderr().lock(), "{footer}")?;
        return Ok(ExitCode::SUCCESS);
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
                entry.reason.clone(),
                entry.event_type.clone().unwrap_or_else(|| "-".to_owned()),
                entry.event_id.clone().unwrap_or_else(|| "-".to_owned()),
                entry.attempts.to_string(),
                shorten(&entry.detail, DETAIL_WIDTH),
            ]
        })
        .collect();
    write_table(&mut stdout, &header, &rows)?;
    writeln!(stdout, "{footer}")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes rows under a header, columns padded to their widest cell, the
/// last column unpadded.
pub(crate) fn write_table(
    out: &mut impl Write,
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

fn show(store: &DeadLetterStore, ids: &[i64]) -> anyhow::Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    let mut n_missing = 0;
    for &id in ids {
        match store.get(id)? {
            Some(entry) => {
                serde_json::to_writer_pretty(&mut stdout, &entry_json(&entry))?;
                stdout.write_all(b"\n")?;
            }
            None => {
                n_missing += 1;
                writeln!(
                    io::stderr().lock(),
                    "braze-mixpanel-bridge: no dead letter {id}"
                )?;
            }
        }
    }
    stdout.flush()?;
    Ok(if n_missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// An entry as JSON, the event as JSON itself when it is; an event that is
/// not JSON is a string, with `"event_is_json": false`.
fn entry_json(entry: &DeadLetterEntry) -> Value {
    let text = String::from_utf8_lossy(&entry.event);
    let event = serde_json::from_str::<Value>(&text).ok();
    let mut value = json!({
        "id": entry.id,
        "dead_lettered_at": format_time(entry.dead_lettered_at_ms, true),
        "dead_lettered_at_ms": entry.dead_lettered_at_ms,
        "reason": entry.reason,
        "detail": entry.detail,
        "event_type": entry.event_type,
        "event_id": entry.event_id,
        "workspace": entry.workspace,
        "attempts": entry.attempts,
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

fn parse_time_arg(text: &str) -> Result<i64, String> {
    parse_time(text, now_ms())
}

/// A TIME argument as UNIX milliseconds: RFC 3339 (`2026-11-28T10:00:00Z`,
/// fractions and `+01:00` offsets too) or a duration before `now_ms`
/// (`90s`, `30m`, `2h`, `7d`).
fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let expected = || {
        format!(
            "{text:?} is not a time: expected RFC 3339 (2026-11-28T10:00:00Z) or a duration ago (30m, 2h, 7d)"
        )
    };
    if let Some(unit) = text.chars().last().filter(|c| "smhd".contains(*c)) {
        let digits = &text[..text.len() - 1];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let unit_ms: i64 = match unit {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                _ => 86_400_000,
            };
            let ago = digits
                .parse::<i64>()
                .ok()
                .and_then(|n| n.checked_mul(unit_ms))
                .ok_or_else(expected)?;
            return Ok(now_ms.saturating_sub(ago));
        }
    }
    parse_rfc3339(text).ok_or_else(expected)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` as UNIX milliseconds.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let separators_ok = bytes.get(4) == Some(&b'-')
        && bytes.get(7) == Some(&b'-')
        && matches!(bytes.get(10), Some(b'T' | b't' | b' '))
        && bytes.get(13) == Some(&b':')
        && bytes.get(16) == Some(&b':');
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n_digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits == 0 {
            return None;
        }
        let digits = format!("{:0<3}", &fraction[..n_digits.min(3)]);
        millis = digits.parse::<i64>().ok()?;
        rest = &fraction[n_digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset = &rest.as_bytes()[1..];
            let digits_ok = offset.len() == 5
                && offset[2] == b':'
                && [0, 1, 3, 4].iter().all(|&idx| offset[idx].is_ascii_digit());
            if !digits_ok {
                return None;
            }
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// UNIX milliseconds as RFC 3339 UTC: `2026-11-28T10:00:00Z`, with
/// `.123` milliseconds when `millis` is set.
pub(crate) fn format_time(ms: i64, millis: bool) -> String {
    let seconds = ms.div_euclid(1_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (of_day / 3_600, of_day % 3_600 / 60, of_day % 60);
    if millis {
        let fraction = ms.rem_euclid(1_000);
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:03}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a count of days since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
        assert_eq!(parse_time("0h", NOW), Ok(NOW));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "h",
            "2w",
            "-2h",
            "1.5h",
            "99999999999999999999d",
            "2026-11-28",
            "2026-11-28T10:00:00",
            "2026-11-28T10:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T10:00:00.Z",
            "2026-11-28T10:00:00+0100",
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
        let mut days = days_from_civil(1600, 1, 1);
        let end = days_from_civil(2400, 12, 31);
        while days <= end {
            let ms = days * 86_400_000 + 45_296_789; // 12:34:56.789
            assert_eq!(parse_time(&format_time(ms, true), NOW), Ok(ms));
            days += 1;
        }
    }

    #[test]
    fn details_are_shortened_on_one_line() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("line\nbreak", 20), "line break");
        assert_eq!(shorten("abcdefghijkl", 5), "abcd…");
        assert_eq!(shorten("ééééé", 5), "ééééé");
    }
}
