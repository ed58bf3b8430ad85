//! Decodes Braze Avro files into storage-shaped Currents events, one JSON
//! object per line on stdout: what `braze-mixpanel-bridge transform`
//! reads, so `avro_to_ndjson … | braze-mixpanel-bridge transform` maps an
//! archive without a bucket. The event type comes from an `event_type=`
//! folder in each path, else from the file's record name.
//!
//! Run with: `cargo run --release -p currents-archive --example avro_to_ndjson -- FILE...`

use std::error::Error;
use std::io::Write as _;

use bytes::Bytes;
use currents_archive::ArchiveError;
use currents_archive::avro::AvroEvents;
use currents_archive::layout::KeyInfo;

/// Appends every event of `file` to `out`, one per line; the events read.
/// (Apart from reading and writing files, so that a profiler can count it
/// alone.)
#[inline(never)]
fn decode_file(file: Bytes, hint: Option<&str>, out: &mut String) -> Result<u64, ArchiveError> {
    // Storage-shaped JSON is about twice the size of an uncompressed file.
    out.reserve(file.len() * 3);
    let mut events = AvroEvents::new(file, hint)?;
    while events.next_into(out)? {
        out.push('\n');
    }
    Ok(events.next_record())
}

fn main() -> Result<(), Box<dyn Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        return Err("usage: avro_to_ndjson FILE...".into());
    }
    let mut stdout = std::io::stdout().lock();
    let mut out = String::with_capacity(1 << 20);
    let mut n_events = 0;
    for path in &paths {
        let file = Bytes::from(std::fs::read(path)?);
        let hint = KeyInfo::parse(path).event_type;
        out.clear();
        n_events +=
            decode_file(file, hint, &mut out).map_err(|error| format!("{path}: {error}"))?;
        stdout.write_all(out.as_bytes())?;
    }
    stdout.flush()?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{n_events} events from {} files", paths.len());
    }
    Ok(())
}
