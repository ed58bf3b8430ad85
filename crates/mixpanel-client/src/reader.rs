//! Reading Mixpanel events from NDJSON or a JSON array, streaming, so that
//! memory stays flat however large the input.
//!
//! The format is told by the first non-blank byte: `[` starts a JSON array,
//! anything else is NDJSON. Each event must be a JSON object; a line (or
//! array element) that is not is reported as invalid and the rest goes on.
//! A syntax error inside a JSON array cannot be skipped and ends the read.

use std::io::{self, BufRead};

use serde::Deserializer as _;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// One item of the input.
#[derive(Debug)]
pub enum InputItem<'a> {
    /// An event, as one line of compact JSON.
    Event(&'a [u8]),
    /// Input that is not a JSON object, with what is wrong with it.
    Invalid {
        /// The offending text.
        text: &'a [u8],
        /// Why it is not an event.
        message: String,
    },
}

/// How the input was laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One event per line.
    Ndjson,
    /// One JSON array of events.
    JsonArray,
}

/// Why reading stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The input could not be read, or the callback stopped the read.
    #[error("cannot read input")]
    Io(#[from] io::Error),
    /// The JSON array is malformed past recovery.
    #[error("input is not a valid JSON array: {0}")]
    Syntax(String),
}

/// Reads every event of `input`, calling `on_item` with its position (line
/// for NDJSON, element number for an array, both from 1) and the item. An
/// error returned by `on_item` stops the read and is passed back.
pub fn read_events(
    input: &mut dyn BufRead,
    on_item: &mut dyn FnMut(u64, InputItem<'_>) -> io::Result<()>,
) -> Result<InputFormat, ReadError> {
    let first_byte = loop {
        let buffer = input.fill_buf()?;
        let Some(&byte) = buffer.first() else {
            return Ok(InputFormat::Ndjson);
        };
        if byte.is_ascii_whitespace() && byte != b'\n' {
            input.consume(1);
            continue;
        }
        break byte;
    };
    if first_byte == b'[' {
        read_array(input, on_item)?;
        Ok(InputFormat::JsonArray)
    } else {
        read_lines(input, on_item)?;
        Ok(InputFormat::Ndjson)
    }
}

fn read_lines(
    input: &mut dyn BufRead,
    on_item: &mut dyn FnMut(u64, InputItem<'_>) -> io::Result<()>,
) -> Result<(), ReadError> {
    let mut line = Vec::with_capacity(4096);
    let mut line_number = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        line_number += 1;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        on_item(line_number, classify(trimmed))?;
    }
}

/// An event if the text is one JSON object.
fn classify(text: &[u8]) -> InputItem<'_> {
    if text.first() != Some(&b'{') {
        let message = match serde_json::from_slice::<IgnoredAny>(text) {
            Ok(_) => "not a JSON object".to_owned(),
            Err(error) => format!("not JSON: {error}"),
        };
        return InputItem::Invalid { text, message };
    }
    match serde_json::from_slice::<IgnoredAny>(text) {
        Ok(_) => InputItem::Event(text),
        Err(error) => InputItem::Invalid {
            text,
            message: format!("not JSON: {error}"),
        },
    }
}

fn read_array(
    input: &mut dyn BufRead,
    on_item: &mut dyn FnMut(u64, InputItem<'_>) -> io::Result<()>,
) -> Result<(), ReadError> {
    struct ArrayVisitor<'f> {
        on_item: &'f mut dyn FnMut(u64, InputItem<'_>) -> io::Result<()>,
        /// The callback's error, when it stopped the read.
        stopped: &'f mut Option<io::Error>,
    }
    impl<'de> Visitor<'de> for ArrayVisitor<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut element_number = 0u64;
            while let Some(element) = seq.next_element::<Box<RawValue>>()? {
                element_number += 1;
                let compacted = crate::ndjson::compact(element.get());
                let item = classify(compacted.as_bytes());
                if let Err(error) = (self.on_item)(element_number, item) {
                    *self.stopped = Some(error);
                    return Err(serde::de::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }
    let mut stopped = None;
    let mut deserializer = serde_json::Deserializer::from_reader(input);
    let result = deserializer.deserialize_seq(ArrayVisitor {
        on_item,
        stopped: &mut stopped,
    });
    if let Some(error) = stopped {
        return Err(ReadError::Io(error));
    }
    result.map_err(|error| {
        if error.is_io() {
            ReadError::Io(io::Error::other(error))
        } else {
            ReadError::Syntax(error.to_string())
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ReadError::Syntax(error.to_string()))
}
