//! Where archived events sit: Braze's storage layout and ours, read from
//! object keys, and which folders a listing may skip. Pure: no I/O.
//!
//! Braze's storage connectors write Avro object container files under
//!
//! ```text
//! <prefix>/dataexport.<cluster>.<S3|AzureBlob|GCS>.integration.<id>/event_type=<type>/date=<YYYY-MM-DD-HH>/version=<n>/<env>/…+<partition>+<offset>.avro
//! ```
//!
//! a new file every five minutes or 15,000 events per type, never an empty
//! one. [`KeyInfo::parse`] reads what any key says: the event type of an
//! `event_type=` segment, the hour of a `date=YYYY-MM-DD-HH` segment (UTC;
//! `date=YYYY-MM-DD` is read as the whole day), the `version=` and, for
//! our own layout, the `workspace=`. A segment that is absent or does not
//! read (`date=soon`) says nothing, so nothing is pruned on its account.
//!
//! Our own archive, which `serve` writes of the batches it receives, is
//!
//! ```text
//! <prefix>/date=<YYYY-MM-DD-HH>/workspace=<name or _>/<received_at_ms>-<16 hex>.json.gz
//! ```
//!
//! each object the gzip of one Custom HTTP connector request body
//! (`{"events":[...]}`) exactly as received: [`batch_object_key`] names it.
//!
//! The `date=` of Braze's folders is the hour the file was filed under,
//! which Braze does not document as the events' own `time`; events an SDK
//! queued offline arrive late, so a folder may hold events whose `time` is
//! hours or days earlier. [`Prune`] selects folders by their hour; filter on
//! each event's `time` too if the window must be exact.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

/// Decides whether events of a type are wanted, by the type's name (for
/// example `currents_mixpanel::TypeFilter::allows`).
pub type EventTypePredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A span of time in UNIX seconds, `start` included and `end` excluded:
/// the hour (or day) a `date=` segment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    /// The first second, UNIX seconds (UTC).
    pub start: i64,
    /// The first second after it.
    pub end: i64,
}

/// The kinds of objects an archive holds, told by the key's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// `.avro`: an Avro object container file of one event type, as
    /// Braze's storage connectors write them.
    Avro,
    /// `.json`, `.json.gz`, `.ndjson`, `.ndjson.gz`: Custom HTTP connector
    /// envelopes (`{"events":[...]}`), one per object or one per line, as
    /// `serve` archives them.
    Batches,
}

/// What an object key says about its content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyInfo<'a> {
    /// The type of an `event_type=<type>` segment.
    pub event_type: Option<&'a str>,
    /// The hour of a `date=YYYY-MM-DD-HH` segment, or the day of a
    /// `date=YYYY-MM-DD` one.
    pub period: Option<Period>,
    /// The number of a `version=<n>` segment (Braze's Currents version).
    pub version: Option<u32>,
    /// The workspace of a `workspace=<name>` segment (our layout), decoded;
    /// `None` for `workspace=_` too.
    pub workspace: Option<String>,
    /// The kind of the object, by its extension.
    pub kind: Option<ObjectKind>,
}

/// Which folders and objects a listing keeps: event types and a time window.
///
/// A folder named `event_type=<type>` is skipped when the predicate refuses
/// the type; a folder named `date=<hour or day>` when that period lies wholly
/// outside `[since, until)`. Every other folder is kept, and so are objects
/// without such segments: their events are filtered one by one, later, by
/// the caller. With nothing set, everything is kept.
#[derive(Clone, Default)]
pub struct Prune {
    event_types: Option<EventTypePredicate>,
    since: Option<i64>,
    until: Option<i64>,
}

impl ObjectKind {
    /// The kind of the object `key` names, by its extension (ASCII case
    /// ignored); `None` for anything else (`_SUCCESS`, `.crc`, `.tmp`).
    pub fn from_key(key: &str) -> Option<ObjectKind> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let ends_with = |suffix: &str| {
            name.len() > suffix.len()
                && name.is_char_boundary(name.len() - suffix.len())
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        };
        if ends_with(".avro") {
            Some(ObjectKind::Avro)
        } else if [".json", ".json.gz", ".ndjson", ".ndjson.gz"]
            .iter()
            .any(|suffix| ends_with(suffix))
        {
            Some(ObjectKind::Batches)
        } else {
            None
        }
    }
}

impl<'a> KeyInfo<'a> {
    /// Reads every segment of `key` (folders and file name, separated by
    /// `/`). When a segment kind repeats, the deepest wins.
    pub fn parse(key: &'a str) -> KeyInfo<'a> {
        let mut info = KeyInfo {
            kind: ObjectKind::from_key(key),
            ..KeyInfo::default()
        };
        for segment in key.split('/') {
            match Segment::parse(segment) {
                Segment::EventType(event_type) => info.event_type = Some(event_type),
                Segment::Date(period) => info.period = Some(period),
                Segment::Version(version) => info.version = Some(version),
                Segment::Workspace(workspace) => info.workspace = workspace,
                Segment::Other => {}
            }
        }
        info
    }
}

impl Prune {
    /// Keeps everything.
    pub fn new() -> Prune {
        Prune::default()
    }

    /// Keeps only `event_type=` folders whose type `allows` accepts.
    pub fn event_types(mut self, allows: EventTypePredicate) -> Prune {
        self.event_types = Some(allows);
        self
    }

    /// Skips `date=` folders that end at or before `unix_secs`.
    pub fn since(mut self, unix_secs: i64) -> Prune {
        self.since = Some(unix_secs);
        self
    }

    /// Skips `date=` folders that start at or after `unix_secs`.
    pub fn until(mut self, unix_secs: i64) -> Prune {
        self.until = Some(unix_secs);
        self
    }

    /// The window's start, if set.
    pub fn since_secs(&self) -> Option<i64> {
        self.since
    }

    /// The window's end, if set.
    pub fn until_secs(&self) -> Option<i64> {
        self.until
    }

    /// Whether events of this type are wanted.
    pub fn keeps_event_type(&self, event_type: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|allows| allows(event_type))
    }

    /// Whether `period` overlaps the window.
    pub fn keeps_period(&self, period: Period) -> bool {
        self.since.is_none_or(|since| period.end > since)
            && self.until.is_none_or(|until| period.start < until)
    }

    /// Whether a listing descends into the folder named `segment` (one
    /// path segment, without `/`).
    pub fn keeps_folder(&self, segment: &str) -> bool {
        self.keeps_segment(segment)
    }

    /// Whether an object is kept: every segment of its key passes.
    pub fn keeps_key(&self, key: &str) -> bool {
        key.split('/').all(|segment| self.keeps_segment(segment))
    }

    /// Whether the event-type predicate is set, so that a listing must look
    /// for `event_type=` folders.
    pub(crate) fn filters_types(&self) -> bool {
        self.event_types.is_some()
    }

    /// Whether a window is set, so that a listing must look for `date=` folders.
    pub(crate) fn filters_time(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    fn keeps_segment(&self, segment: &str) -> bool {
        match Segment::parse(segment) {
            Segment::EventType(event_type) => self.keeps_event_type(event_type),
            Segment::Date(period) => self.keeps_period(period),
            Segment::Version(_) | Segment::Workspace(_) | Segment::Other => true,
        }
    }
}

impl fmt::Debug for Prune {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prune")
            .field(
                "event_types",
                &self.event_types.as_ref().map(|_| "<predicate>"),
            )
            .field("since", &self.since)
            .field("until", &self.until)
            .finish()
    }
}

/// One path segment, read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    EventType(&'a str),
    Date(Period),
    Version(u32),
    Workspace(Option<String>),
    Other,
}

impl<'a> Segment<'a> {
    pub(crate) fn parse(segment: &'a str) -> Segment<'a> {
        let Some((name, value)) = segment.split_once('=') else {
            return Segment::Other;
        };
        let read = match name {
            "event_type" if !value.is_empty() => Some(Segment::EventType(value)),
            "date" => parse_date(value).map(Segment::Date),
            "version" => value.parse().ok().map(Segment::Version),
            "workspace" => Some(Segment::Workspace(decode_workspace(value))),
            _ => None,
        };
        read.unwrap_or(Segment::Other)
    }
}

/// `YYYY-MM-DD-HH` as its hour, `YYYY-MM-DD` as its day; `None` for
/// anything else, including impossible dates.
pub(crate) fn parse_date(value: &str) -> Option<Period> {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let has_hour = match bytes.len() {
        10 => false,
        13 if bytes[10] == b'-' => true,
        _ => return None,
    };
    if bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = digits(0..4)?;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let day_start = days_from_civil(year, month, day) * 86_400;
    if has_hour {
        let hour = digits(11..13)?;
        if hour > 23 {
            return None;
        }
        let start = day_start + hour * 3_600;
        Some(Period {
            start,
            end: start + 3_600,
        })
    } else {
        Some(Period {
            start: day_start,
            end: day_start + 86_400,
        })
    }
}

/// `YYYY-MM-DD-HH` of the hour holding `unix_secs` (UTC).
pub(crate) fn format_hour(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let hour = unix_secs.rem_euclid(86_400) / 3_600;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}-{hour:02}")
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
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

/// The date of a day counted from 1970-01-01 (Hinnant's `civil_from_days`).
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

/// The key of one archived batch in our layout:
/// `<prefix>/date=<YYYY-MM-DD-HH>/workspace=<name or _>/<received_at_ms>-<16 hex>.json.gz`.
///
/// - `prefix` may be empty; slashes around it are trimmed.
/// - The hour is that of `received_at_ms` (UNIX milliseconds, UTC).
/// - The workspace is written so that any name is one safe path segment on
///   every store and file system: ASCII letters, digits, `-` and `.` stay as
///   they are (but a leading `.`), every other byte of its UTF-8 becomes `_`
///   and two lowercase hex digits (`acme eu` → `acme_20eu`, `a_b` →
///   `a_5fb`). No workspace, or an empty name, is `_`, which no name encodes
///   to. [`KeyInfo::parse`] decodes it.
/// - The 16 hex digits are the first 8 bytes of the body's SHA-256, so that
///   the same body received in the same millisecond is the same object
///   (written twice, stored once) and different bodies never collide.
pub fn batch_object_key(
    prefix: &str,
    workspace: Option<&str>,
    received_at_ms: i64,
    body: &[u8],
) -> String {
    let digest = Sha256::digest(body);
    let mut hash = String::with_capacity(16);
    for byte in &digest[..8] {
        hash.push(char::from(HEX[usize::from(byte >> 4)]));
        hash.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    let prefix = prefix.trim_matches('/');
    let hour = format_hour(received_at_ms.div_euclid(1_000));
    let workspace = encode_workspace(workspace.unwrap_or(""));
    let separator = if prefix.is_empty() { "" } else { "/" };
    format!("{prefix}{separator}date={hour}/workspace={workspace}/{received_at_ms}-{hash}.json.gz")
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A workspace name as one safe path segment; see [`batch_object_key`].
pub(crate) fn encode_workspace(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut encoded = String::with_capacity(name.len());
    for (idx, &byte) in name.as_bytes().iter().enumerate() {
        let plain = byte.is_ascii_alphanumeric() || byte == b'-' || (byte == b'.' && idx > 0);
        if plain {
            encoded.push(char::from(byte));
        } else {
            encoded.push('_');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    encoded
}

/// The value of a lowercase hex digit, as [`encode_workspace`] writes them.
fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// The workspace a `workspace=` segment names: `None` for `_`; a segment
/// that is not our encoding is taken as it is.
pub(crate) fn decode_workspace(segment: &str) -> Option<String> {
    if segment == "_" || segment.is_empty() {
        return None;
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        if bytes[idx] == b'_' {
            let hex = bytes
                .get(idx + 1..idx + 3)
                .and_then(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?));
            match hex {
                Some(byte) => {
                    decoded.push(byte);
                    idx += 3;
                    continue;
                }
                None => return Some(segment.to_owned()),
            }
        }
        decoded.push(bytes[idx]);
        idx += 1;
    }
    Some(String::from_utf8(decoded).unwrap_or_else(|_| segment.to_owned()))
}

#[cfg(test)]
mod tests;
