//! Throughput of decoding Braze's Avro files into storage-shaped JSON
//! events, on one core, against apache-avro's own decoding.
//!
//! The input: 15,000 events of `currents_model::synthetic`'s production mix
//! (all 94 types, weighted as in a production stream; 0.3–2 KB each in the
//! HTTP shape) from a fixed seed, filed as Braze files them: one Avro
//! object container file per event type (`fixtures::production_files`),
//! so 15,000 events in files of 1 to about 2,700 records, written with the
//! `null`, `deflate` and `snappy` codecs (blocks of 1,000 records).
//!
//! Benchmarks (group `decode`, throughput in events, one iteration = all
//! 15,000 events):
//! - `avro_to_json/<codec>`: `AvroEvents::new` on each file, then
//!   `next_into` of every event into one reused `String`: what a backfill
//!   does before mapping;
//! - `avro_to_json_parse/deflate`: the same plus `currents_model::Event::parse`
//!   of each event, the first step of the mapping;
//! - `apache_avro_value/<codec>`: `apache_avro::Reader` decoding every
//!   record into its `Value` tree, no JSON written: the reference
//!   implementation's own cost for the same files.
//!
//! Run with: cargo bench -p currents-archive --bench decode
//!
//! Set `DECODE_BENCH_DUMP=<dir>` to also write the files there, in Braze's
//! layout under one folder per codec (e.g. to count instructions with
//! callgrind on the `avro_to_ndjson` example).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use currents_archive::avro::{AvroEvents, Codec};
use currents_archive::fixtures::{braze_key, production_files, write_objects};
use currents_model::{Event, EventType};

/// Fixed seed: the same files on every run and every machine.
const SEED: u64 = 0x5EED_B2A2_E0C0_FFEE;
/// Events in all the files together: Braze's 15,000-event file size.
const EVENTS: usize = 15_000;

struct Files {
    codec: Codec,
    files: Vec<(EventType, usize, Bytes)>,
}

impl Files {
    fn new(codec: Codec) -> Files {
        let files = production_files(EVENTS, SEED, codec)
            .into_iter()
            .map(|(event_type, n, file)| (event_type, n, Bytes::from(file)))
            .collect();
        Files { codec, files }
    }

    fn bytes(&self) -> usize {
        self.files.iter().map(|(_, _, file)| file.len()).sum()
    }
}

/// Decodes every file; returns the events and the JSON bytes written.
fn decode_all(files: &Files, out: &mut String) -> (usize, usize) {
    let mut n_events = 0;
    let mut n_bytes = 0;
    for (event_type, _, file) in &files.files {
        let mut events =
            AvroEvents::new(file.clone(), Some(event_type.name())).expect("a valid file");
        out.clear();
        while events.next_into(out).expect("valid records") {
            n_events += 1;
            n_bytes += out.len();
            out.clear();
        }
    }
    (n_events, n_bytes)
}

fn decode_and_parse(files: &Files, out: &mut String) -> usize {
    let mut n_parsed = 0;
    for (event_type, _, file) in &files.files {
        let mut events =
            AvroEvents::new(file.clone(), Some(event_type.name())).expect("a valid file");
        out.clear();
        while events.next_into(out).expect("valid records") {
            if Event::parse(out).is_ok() {
                n_parsed += 1;
            }
            out.clear();
        }
    }
    n_parsed
}

fn apache_avro_values(files: &Files) -> usize {
    let mut n_values = 0;
    for (_, _, file) in &files.files {
        for value in apache_avro::Reader::new(&file[..]).expect("a valid file") {
            black_box(value.expect("a valid record"));
            n_values += 1;
        }
    }
    n_values
}

#[allow(clippy::print_stdout)]
fn describe(files: &Files) {
    let mut out = String::new();
    let (n_events, json_bytes) = decode_all(files, &mut out);
    assert_eq!(n_events, EVENTS);
    assert_eq!(
        decode_and_parse(files, &mut out),
        EVENTS,
        "every event parses"
    );
    let largest = files.files.iter().map(|(_, n, _)| *n).max().unwrap_or(0);
    println!(
        "{}: {} files, {} events (largest file {} records), {:.2} MB of Avro, {:.2} MB of JSON out",
        files.codec.name(),
        files.files.len(),
        n_events,
        largest,
        files.bytes() as f64 / 1e6,
        json_bytes as f64 / 1e6,
    );
}

/// Writes every file in Braze's layout under `<dir>/<codec>/`.
fn dump(dir: &std::path::Path, all: &[Files]) {
    for files in all {
        let objects: Vec<(String, Vec<u8>)> = files
            .files
            .iter()
            .enumerate()
            .map(|(seq, (event_type, _, file))| {
                let key = braze_key(
                    files.codec.name(),
                    event_type.name(),
                    1_732_788_000,
                    seq as u32,
                );
                (key, file.to_vec())
            })
            .collect();
        write_objects(dir, &objects).expect("write the files");
    }
}

fn bench(c: &mut Criterion) {
    let all: Vec<Files> = [Codec::Null, Codec::Deflate, Codec::Snappy]
        .into_iter()
        .map(Files::new)
        .collect();
    for files in &all {
        describe(files);
    }
    if let Some(dir) = std::env::var_os("DECODE_BENCH_DUMP") {
        dump(std::path::Path::new(&dir), &all);
    }
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));
    let mut out = String::with_capacity(4096);
    for files in &all {
        group.bench_function(format!("avro_to_json/{}", files.codec.name()), |b| {
            b.iter(|| black_box(decode_all(files, &mut out)))
        });
    }
    let deflate = &all[1];
    group.bench_function("avro_to_json_parse/deflate", |b| {
        b.iter(|| black_box(decode_and_parse(deflate, &mut out)))
    });
    for files in &all {
        group.bench_function(format!("apache_avro_value/{}", files.codec.name()), |b| {
            b.iter(|| black_box(apache_avro_values(files)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
