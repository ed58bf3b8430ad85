//! `transform_parallel` against `transform`: the same output, rejects,
//! summary and error, byte for byte, whatever the threads and wherever the
//! chunk boundaries fall.

use std::io::{self, BufRead, BufReader, Read};
use std::num::NonZeroUsize;

use currents_model::synthetic::{self, Generator};
use proptest::prelude::*;

use super::{TransformOptions, transform, transform_parallel};
use crate::mapping::{Mapper, MappingConfig, TypeFilter};

/// Chunk sizes that put boundaries everywhere: inside every line, at line
/// breaks, around multi-byte characters, and a default-sized one.
const CHUNK_SIZES: [usize; 9] = [1, 2, 3, 7, 64, 333, 4096, 65_536, 1 << 20];

fn mapper() -> Mapper {
    Mapper::new(MappingConfig {
        project_token: Some("0123456789abcdef".to_owned()),
        // Some types skipped by the filter, besides Braze's own rules.
        type_filter: TypeFilter::new(None, &["users.behaviors.app.*".to_owned()]),
    })
}

fn options(threads: usize, chunk_bytes: usize) -> TransformOptions {
    TransformOptions::new(NonZeroUsize::new(threads).unwrap())
        .chunk_bytes(NonZeroUsize::new(chunk_bytes).unwrap())
}

/// What a transformation wrote and returned, comparable.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    output: Vec<u8>,
    rejects: Vec<u8>,
    /// The summary or the error, as text.
    result: String,
}

fn run(input: &mut dyn BufRead, options: Option<&TransformOptions>) -> Run {
    let (mut output, mut rejects) = (Vec::new(), Vec::new());
    let mapper = mapper();
    let res = match options {
        None => transform(input, &mut output, &mut rejects, &mapper),
        Some(options) => transform_parallel(input, &mut output, &mut rejects, &mapper, options),
    };
    let result = match res {
        Ok(summary) => format!("{:?} {:?}", summary.format, summary.counts),
        Err(error) => format!("{error:?}"),
    };
    Run {
        output,
        rejects,
        result,
    }
}

/// The one helper that calls the API under test: `transform_parallel` with
/// `options` does exactly what `transform` does on `input`, and `reader`
/// makes the reader of each (a slice, or one that fails part way).
fn check_same_with(
    input: &[u8],
    options: &TransformOptions,
    reader: &dyn Fn(&[u8]) -> Box<dyn BufRead + '_>,
) {
    let expected = run(&mut reader(input), None);
    let actual = run(&mut reader(input), Some(options));
    if actual != expected {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        assert_eq!(
            text(&actual.output),
            text(&expected.output),
            "output, {options:?}"
        );
        assert_eq!(
            text(&actual.rejects),
            text(&expected.rejects),
            "rejects, {options:?}"
        );
        assert_eq!(actual.result, expected.result, "summary, {options:?}");
        assert_eq!(actual, expected, "bytes, {options:?}");
    }
}

fn check_same(input: &[u8], options: &TransformOptions) {
    check_same_with(input, options, &|input| Box::new(input));
}

/// One line of every kind line mode meets, drawn with a small splitmix64.
struct Lines {
    generator: Generator,
    state: u64,
}

impl Lines {
    fn new(seed: u64) -> Lines {
        let config = synthetic::Config::new(seed)
            .users(40)
            // A third of the users have no external id: their events are skipped.
            .external_ids(66);
        Lines {
            generator: Generator::new(config),
            state: seed,
        }
    }

    fn draw(&mut self, below: u64) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % below
    }

    fn event(&mut self) -> String {
        let mut text = String::new();
        self.generator.write_event(&mut text);
        text
    }

    /// A line of kind `kind % 14`, without its line break.
    fn line(&mut self, kind: u64) -> Vec<u8> {
        let text = match kind % 14 {
            0 | 1 => self.event(),
            2 => {
                let n_events = 1 + self.draw(4) as usize;
                self.generator.envelope(n_events)
            }
            3 => {
                let events: Vec<String> = (0..=self.draw(3)).map(|_| self.event()).collect();
                format!("[{}]", events.join(","))
            }
            4 => String::new(),
            5 => " \t  ".to_owned(),
            6 => r#"{"event_type": "users.messages.email.Click", broken"#.to_owned(),
            7 => return b"{\"event_type\":\"custom\xff\xfe\"}".to_vec(),
            8 => ["42", "\"text\"", "{}", "null", "[]", "{\"events\":5}"][self.draw(6) as usize]
                .to_owned(),
            // An event that cannot be read: no id.
            9 => r#"{"event_type":"users.messages.email.Click","time":1732792800}"#.to_owned(),
            10 => format!("{}\r", self.event()),
            11 => format!(r#"{{"events":[{{"id":1}},{}]}}"#, self.event()),
            12 => format!(r#"  {{ "events" : [ {} ] }}  "#, self.event()),
            // Non-ASCII text around where a chunk may be cut.
            _ => r#"{"event_type":"users.behaviors.CustomEvent","name":"café ☕ 日本"}"#.to_owned(),
        };
        text.into_bytes()
    }

    /// `n_lines` lines of every kind, the first an event (so the input is
    /// read line by line), after `leading_blank_lines`.
    fn corpus(&mut self, n_lines: usize, leading_blank_lines: usize, final_break: bool) -> Vec<u8> {
        let mut input = b"\n  \n".repeat(leading_blank_lines);
        input.extend(self.event().as_bytes());
        for _ in 1..n_lines {
            input.push(b'\n');
            let kind = self.draw(14);
            input.extend(self.line(kind));
        }
        if final_break {
            input.push(b'\n');
        }
        input
    }
}

#[test]
fn parallel_output_is_the_single_threaded_output_byte_for_byte() {
    for seed in 0..3 {
        let input = Lines::new(seed).corpus(250, seed as usize, seed != 1);
        for threads in 1..=3 {
            for chunk_bytes in CHUNK_SIZES {
                check_same(&input, &options(threads, chunk_bytes));
            }
        }
    }
}

#[test]
fn the_corpus_has_every_outcome() {
    let input = Lines::new(0).corpus(250, 0, true);
    let res = run(&mut input.as_slice(), None);
    let text = String::from_utf8_lossy(&res.rejects);
    for needle in [
        "\"reason\":\"invalid_json\"",
        "\"reason\":\"no_external_user_id\"",
        "\"outcome\":\"invalid\"",
        "\"reason\":\"filtered\"",
    ] {
        assert!(text.contains(needle), "no {needle} in the rejects:\n{text}");
    }
    assert!(res.output.len() > 10_000, "few events mapped");
    assert!(res.result.starts_with("Lines"), "{}", res.result);
}

#[test]
fn documents_and_empty_input_are_read_as_before() {
    let mut lines = Lines::new(5);
    let envelope = lines.generator.envelope(3);
    let pretty = envelope.replace(",\"", ",\n  \"");
    for input in [
        format!("\n\n{pretty}\n"),
        pretty.clone(),
        format!("{pretty}\n{{not json"),
        "\n   \n".to_owned(),
        String::new(),
        "{not json\n".to_owned(),
    ] {
        for threads in 1..=3 {
            check_same(input.as_bytes(), &options(threads, 5));
        }
    }
}

#[test]
fn a_read_error_stops_both_after_the_same_lines() {
    /// Gives `bytes` up to `fail_at`, then fails.
    struct Failing<'a> {
        bytes: &'a [u8],
        fail_at: usize,
    }
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.fail_at).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            self.fail_at -= n;
            Ok(n)
        }
    }
    let input = Lines::new(9).corpus(60, 0, true);
    for fail_at in [1, 700, input.len() / 2, input.len() - 1] {
        for threads in 1..=3 {
            for chunk_bytes in [1, 50, 1000, 1 << 20] {
                check_same_with(&input, &options(threads, chunk_bytes), &|input| {
                    let failing = Failing {
                        bytes: input,
                        fail_at,
                    };
                    Box::new(BufReader::with_capacity(97, failing))
                });
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_mix_of_lines_and_chunk_sizes_gives_the_same_bytes(
        seed in any::<u64>(),
        kinds in proptest::collection::vec(0u64..14, 0..40),
        leading_blank_lines in 0usize..3,
        final_break in any::<bool>(),
        threads in 1usize..=3,
        chunk_bytes in 1usize..2_000,
    ) {
        let mut lines = Lines::new(seed);
        let mut input = b"\n".repeat(leading_blank_lines);
        input.extend(lines.event().as_bytes());
        for kind in kinds {
            input.push(b'\n');
            input.extend(lines.line(kind));
        }
        if final_break {
            input.push(b'\n');
        }
        check_same(&input, &options(threads, chunk_bytes));
    }
}
