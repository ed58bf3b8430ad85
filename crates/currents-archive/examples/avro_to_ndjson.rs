//! Decodes Braze Avro files into storage-shaped Currents events, one JSON
//! object per line on stdout: what `braze-mixpanel-bridge transform`
//! reads, so `avro_to_ndjson … | braze-mixpanel-bridge transform` maps an
//! archive without a bucket. The event type comes from an `event_type=`
//! folder in each path, else from the file's record name.
//!
//! With `--check`, each event is also read with `currents_model::Event::parse`,
//! and the first that does not read stops the program.
//!
//! Run with: `cargo run --release -p currents-archive --example avro_to_ndjson -- [--check] FILE...`

use std::error::Error;
use std::io::Write as _;

use bytes::Bytes;
use currents_archive::avro::AvroEvents;
use currents_archive::layout::KeyInfo;
use currents_model::Event;

/// Appends every event of `file` to `out`, one per line, each read by
/// `Event::parse` too when `check` is set; the events read. (Apart from
/// reading and writing files, so that a profiler can count it alone.)
#[inline(never)]
fn decode_file(
    file: Bytes,
    hint: Option<&str>,
    check: bool,
    out: &mut String,
) -> Result<u64, Box<dyn Error>> {
    // Storage-shaped JSON is about twice the size of an uncompressed file.
    out.reserve(file.len() * 3);
    let mut events = AvroEvents::new(file, hint)?;
    let mut start = out.len();
    while events.next_into(out)? {
        if check {
            Event::parse(&out[start..])
                .map_err(|error| format!("record {}: {error}", events.next_record() - 1))?;
        }
        out.push('\n');
        start = out.len();
    }
    Ok(events.next_record())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut paths: Vec<String> = std::env::args().skip(1).collect();
    let check = paths.first().is_some_and(|arg| arg == "--check");
    if check {
        paths.remove(0);
    }
    if paths.is_empty() {
        return Err("usage: avro_to_ndjson [--check] FILE...".into());
    }
    let mut stdout = std::io::stdout().lock();
    let mut out = String::with_capacity(1 << 20);
    let mut n_events = 0;
    for path in &paths {
        let file = Bytes::from(std::fs::read(path)?);
        let hint = KeyInfo::parse(path).event_type;
        out.clear();
        n_events +=
            decode_file(file, hint, check, &mut out).map_err(|error| format!("{path}: {error}"))?;
        stdout.write_all(out.as_bytes())?;
    }
    stdout.flush()?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{n_events} events from {} files", paths.len());
    }
    Ok(())
}
