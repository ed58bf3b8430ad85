//! Throughput of the bridge's hot path against a plain `serde_json::Value`
//! round trip of the same bytes.
//!
//! The input is a deterministic, realistic stream of Braze Currents events in
//! the Custom HTTP connector shape: envelopes of 100 events (`{"events":[...]}`)
//! drawn from all 94 event types with a production-like mix (message
//! engagement, sessions and custom events frequent; rare types rare). Each
//! event is built from its type's field schema (`EventType::fields`) with
//! realistic values, and weighs 0.3–2 KB (only `users.UserDeleteRequest`,
//! whose whole schema is four short fields, comes out smaller). The stream
//! comes from the workspace's one generator, `currents_model::synthetic`
//! (feature `synthetic`), with a fixed seed, so every run measures the same
//! bytes.
//!
//! Benchmarks (one group, `mapping`, throughput in events):
//! - `bridge`: per envelope, `Batch::parse_events` (the envelope and its
//!   events in one pass), `Mapper::map_parsed` on every event and
//!   `write_json` of every mapped event plus a newline into a reused buffer
//!   (the NDJSON body that would go to Mixpanel);
//! - `parse_map`: the same without serializing, to show what writing costs;
//! - `parse_only`: `Batch::parse_events` alone;
//! - `split_only`: `Batch::parse` alone, serde_json splitting an envelope
//!   into its raw events (a full validating scan of the envelope);
//! - `serde_json_value_roundtrip/envelope`: `serde_json::from_str::<Value>`
//!   of the envelope and `serde_json::to_writer` of the whole value;
//! - `serde_json_value_roundtrip/per_event`: the envelope parsed into a
//!   `Value`, then each event written as its own NDJSON line (the same job
//!   shape as `bridge`, with no mapping).
//!
//! One iteration processes the whole stream. Events/s are counted over every
//! input event, mapped or skipped.
//!
//! Run with: cargo xtask bench
//!
//! Set `MAPPING_BENCH_DUMP=<file>` to also write the stream there, one
//! envelope per line.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use currents_mixpanel::{Mapper, MappingConfig, Outcome, OutcomeCounts};
use currents_model::synthetic::{Config, Generator, Mix};
use currents_model::{Batch, EventType};
use serde_json::Value;

/// Fixed seed: the stream is the same on every run and every machine.
const SEED: u64 = 0x5EED_B2A2_E0C0_FFEE;
/// Envelopes in the stream.
const ENVELOPES: usize = 100;
/// Events per envelope, as the Custom HTTP connector batches them.
const EVENTS_PER_ENVELOPE: usize = 100;
/// Distinct users the events are drawn from.
const USERS: usize = 2_000;
/// The size band every event is kept in.
const MIN_EVENT_BYTES: usize = 300;
const MAX_EVENT_BYTES: usize = 2_000;
/// 2024-11-28T11:20:00Z, the stream's first second.
const BASE_TIME: i64 = 1_732_792_800;

// ---------------------------------------------------------------------------
// The stream

struct Stream {
    envelopes: Vec<String>,
    event_sizes: Vec<usize>,
    type_counts: Vec<usize>,
    /// Types whose every field together still makes less than
    /// `MIN_EVENT_BYTES` (e.g. `users.UserDeleteRequest`), with their counts.
    undersized: BTreeMap<&'static str, usize>,
}

impl Stream {
    fn events(&self) -> usize {
        self.event_sizes.len()
    }

    fn bytes(&self) -> usize {
        self.envelopes.iter().map(String::len).sum()
    }
}

fn build_stream() -> Stream {
    let config = Config::new(SEED)
        .mix(Mix::production())
        .users(USERS)
        .size_band(MIN_EVENT_BYTES, MAX_EVENT_BYTES)
        .start_time(BASE_TIME);
    let mut generator = Generator::new(config);
    let mut envelopes = Vec::with_capacity(ENVELOPES);
    let mut event_sizes = Vec::with_capacity(ENVELOPES * EVENTS_PER_ENVELOPE);
    let mut type_counts = vec![0; EventType::ALL.len()];
    let mut undersized = BTreeMap::new();
    for _ in 0..ENVELOPES {
        let mut body = String::with_capacity(EVENTS_PER_ENVELOPE * 1024);
        for event in generator.write_envelope(EVENTS_PER_ENVELOPE, &mut body) {
            let size = event.span.len();
            if size < MIN_EVENT_BYTES {
                *undersized.entry(event.event_type.name()).or_insert(0) += 1;
            }
            event_sizes.push(size);
            let idx = EventType::ALL
                .iter()
                .position(|t| *t == event.event_type)
                .expect("generated from ALL");
            type_counts[idx] += 1;
        }
        envelopes.push(body);
    }
    Stream {
        envelopes,
        event_sizes,
        type_counts,
        undersized,
    }
}

// ---------------------------------------------------------------------------
// The work measured

/// Parse, map and serialize one envelope; returns how many events were mapped.
fn bridge_envelope(mapper: &Mapper, body: &str, out: &mut Vec<u8>) -> usize {
    out.clear();
    let events = Batch::parse_events(body).expect("the stream holds valid envelopes");
    let mut mapped = 0;
    for parsed in events {
        if let Outcome::Mapped(event) = mapper.map_parsed(parsed.event) {
            event.write_json(out);
            out.push(b'\n');
            mapped += 1;
        }
    }
    mapped
}

fn project_token() -> MappingConfig {
    MappingConfig {
        project_token: Some("3f0c2b9e5d7a41c8b6e2f9a0d4c1b7e5".to_owned()),
        ..MappingConfig::default()
    }
}

/// Prints what the stream is made of and checks it is what the issue asks for.
#[allow(clippy::print_stdout)]
fn describe(stream: &Stream, mapper: &Mapper) {
    let mut sizes = stream.event_sizes.clone();
    sizes.sort_unstable();
    let at = |q: f64| sizes[((sizes.len() - 1) as f64 * q).round() as usize];
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    let types_present = stream.type_counts.iter().filter(|c| **c > 0).count();

    let mut counts = OutcomeCounts::default();
    let mut out_bytes = 0;
    let mut buf = Vec::new();
    for body in &stream.envelopes {
        for parsed in Batch::parse_events(body).expect("valid envelope") {
            counts.record(&mapper.map_parsed(parsed.event));
        }
        bridge_envelope(mapper, body, &mut buf);
        out_bytes += buf.len();
    }
    let undersized: usize = stream.undersized.values().sum();

    println!(
        "stream: {} envelopes x {} events = {} events, {:.2} MB of JSON, {} of {} event types",
        stream.envelopes.len(),
        EVENTS_PER_ENVELOPE,
        stream.events(),
        stream.bytes() as f64 / 1e6,
        types_present,
        EventType::ALL.len()
    );
    println!(
        "event size (bytes): min {} / p1 {} / p10 {} / median {} / p90 {} / p99 {} / max {} / mean {:.0}",
        sizes[0],
        at(0.01),
        at(0.10),
        at(0.50),
        at(0.90),
        at(0.99),
        sizes[sizes.len() - 1],
        mean
    );
    println!(
        "below {MIN_EVENT_BYTES} bytes even with every schema field: {undersized} events ({:?})",
        stream.undersized
    );
    let skipped: Vec<String> = counts
        .skipped_by_reason()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    println!(
        "outcomes: {} mapped, {} skipped ({}), {} invalid; NDJSON out {:.2} MB",
        counts.mapped,
        counts.total_skipped(),
        skipped.join(", "),
        counts.total_invalid(),
        out_bytes as f64 / 1e6
    );
    assert_eq!(
        types_present,
        EventType::ALL.len(),
        "every event type occurs"
    );
    assert_eq!(
        counts.total_invalid(),
        0,
        "the stream holds only valid events"
    );
    assert!(
        sizes[sizes.len() - 1] <= MAX_EVENT_BYTES,
        "events stay within {MAX_EVENT_BYTES} bytes"
    );
    assert!(
        undersized * 100 <= stream.events(),
        "at most 1% of events (types with tiny schemas) are under {MIN_EVENT_BYTES} bytes"
    );
}

fn bench_mapping(c: &mut Criterion) {
    let stream = build_stream();
    let mapper = Mapper::new(project_token());
    describe(&stream, &mapper);
    if let Some(path) = std::env::var_os("MAPPING_BENCH_DUMP") {
        // One envelope per line, e.g. to feed `braze-mixpanel-bridge transform`.
        let lines: Vec<&str> = stream.envelopes.iter().map(String::as_str).collect();
        std::fs::write(&path, lines.join("\n") + "\n").expect("MAPPING_BENCH_DUMP is writable");
    }

    let mut group = c.benchmark_group("mapping");
    group.throughput(Throughput::ElementsAndBytes {
        elements: stream.events() as u64,
        bytes: stream.bytes() as u64,
    });
    let mut out = Vec::with_capacity(EVENTS_PER_ENVELOPE * 2048);

    group.bench_function("bridge", |b| {
        b.iter(|| {
            let mut mapped = 0;
            for body in &stream.envelopes {
                mapped += bridge_envelope(&mapper, black_box(body), &mut out);
                black_box(&out);
            }
            mapped
        })
    });

    group.bench_function("parse_map", |b| {
        b.iter(|| {
            let mut mapped = 0;
            for body in &stream.envelopes {
                let events = Batch::parse_events(black_box(body)).expect("valid envelope");
                for parsed in events {
                    if let Outcome::Mapped(event) = mapper.map_parsed(parsed.event) {
                        black_box(&event);
                        mapped += 1;
                    }
                }
            }
            mapped
        })
    });

    group.bench_function("parse_only", |b| {
        b.iter(|| {
            let mut parsed = 0;
            for body in &stream.envelopes {
                let events = Batch::parse_events(black_box(body)).expect("valid envelope");
                for item in events {
                    let event = item.event.expect("valid event");
                    black_box(&event);
                    parsed += 1;
                }
            }
            parsed
        })
    });

    group.bench_function("split_only", |b| {
        b.iter(|| {
            let mut split = 0;
            for body in &stream.envelopes {
                split += Batch::parse(black_box(body))
                    .expect("valid envelope")
                    .events
                    .len();
            }
            split
        })
    });

    // What `serve` does to a body before it answers Braze: count its events.
    group.bench_function("count_only", |b| {
        b.iter(|| {
            let mut counted = 0;
            for body in &stream.envelopes {
                counted += Batch::count_events(black_box(body).as_bytes()).expect("valid envelope");
            }
            counted
        })
    });

    group.bench_function("serde_json_value_roundtrip/envelope", |b| {
        b.iter(|| {
            for body in &stream.envelopes {
                out.clear();
                let value: Value = serde_json::from_str(black_box(body)).expect("valid JSON");
                serde_json::to_writer(&mut out, &value).expect("writing to a Vec cannot fail");
                black_box(&out);
            }
        })
    });

    group.bench_function("serde_json_value_roundtrip/per_event", |b| {
        b.iter(|| {
            for body in &stream.envelopes {
                out.clear();
                let value: Value = serde_json::from_str(black_box(body)).expect("valid JSON");
                for event in value["events"].as_array().expect("an events array") {
                    serde_json::to_writer(&mut out, event).expect("writing to a Vec cannot fail");
                    out.push(b'\n');
                }
                black_box(&out);
            }
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    // One iteration is the whole stream (10,000 events, tens of ms), so fewer,
    // longer samples than criterion's default.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = bench_mapping
}
criterion_main!(benches);
