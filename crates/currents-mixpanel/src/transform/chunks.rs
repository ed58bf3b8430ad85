//! Line mode on several threads: the input cut into chunks of whole lines on
//! the calling thread, each chunk mapped by a worker of
//! [`crate::pipeline::ordered`] into buffers of its own, the buffers written
//! in input order on the calling thread.
//!
//! The output is that of the line-by-line reader byte for byte, because a
//! chunk's worker does exactly what that reader does for each of its lines
//! (the same [`Output::line`], into a `Vec` instead of the output), and
//! each chunk knows the number of its first line, so reject records carry
//! the same line numbers. The calling thread's own work per byte is small:
//! one `read` into the chunk, a vectorised count of its line breaks, and
//! one `write_all` of each of its buffers. A chunk's buffers (its input,
//! output and rejects) go back to the calling thread with its result and
//! are reused for a later chunk, so that the memory of the chunks in flight
//! is allocated, and faulted in, once rather than once a chunk.

use std::cell::RefCell;
use std::io::{self, BufRead, Read};

use super::{Output, TransformError, TransformOptions};
use crate::mapping::{Mapper, OutcomeCounts};
use crate::pipeline;

/// Maps the rest of a line-mode input, from line `first_line_number` on,
/// on `options`' threads, into `sink`.
pub(super) fn read_chunks(
    input: &mut dyn BufRead,
    sink: &mut Output<'_>,
    first_line_number: u64,
    options: &TransformOptions,
) -> Result<(), TransformError> {
    let mapper = sink.mapper;
    let spare = RefCell::new(Vec::new());
    let chunks = Chunks {
        input,
        chunk_bytes: options.chunk_bytes.get(),
        next_line_number: first_line_number,
        carry: Vec::new(),
        ended: false,
        error: None,
        spare: &spare,
    };
    pipeline::ordered(
        chunks,
        &pipeline::Config::new(options.threads),
        |chunk| map_chunk(chunk?, mapper),
        |mapped| {
            let buffers = sink.chunk(mapped?)?;
            spare.borrow_mut().push(buffers);
            Ok(())
        },
    )
}

/// The memory of a chunk: its input, then its output and its rejects.
#[derive(Default)]
struct Buffers {
    input: Vec<u8>,
    output: Vec<u8>,
    rejects: Vec<u8>,
}

/// Whole lines of the input (in `buffers.input`, the other buffers empty),
/// and the number of the first.
struct Chunk {
    buffers: Buffers,
    first_line_number: u64,
}

/// What a chunk became: its part of the output and of the rejects (in its
/// buffers), and what [`Output`] counts.
struct MappedChunk {
    buffers: Buffers,
    counts: OutcomeCounts,
    json_values: u64,
}

/// The worker's part: every line of the chunk, as the line-by-line reader
/// reads it.
fn map_chunk(chunk: Chunk, mapper: &Mapper) -> Result<MappedChunk, TransformError> {
    let Chunk {
        mut buffers,
        first_line_number,
    } = chunk;
    // Mapped events are about as long as the Currents events they come from.
    let input_len = buffers.input.len();
    buffers.output.reserve(input_len + input_len / 4);
    let mut out = Output {
        output: &mut buffers.output,
        rejects: &mut buffers.rejects,
        mapper,
        counts: OutcomeCounts::default(),
        json_values: 0,
        buffer: Vec::new(),
    };
    let mut rest = buffers.input.as_slice();
    let mut line_number = first_line_number;
    while !rest.is_empty() {
        let line = next_line(&mut rest);
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.line(line, line_number)?;
        }
        line_number += 1;
    }
    let (counts, json_values) = (out.counts, out.json_values);
    Ok(MappedChunk {
        buffers,
        counts,
        json_values,
    })
}

/// The first line of `rest` with its line break if it has one; `rest`
/// moves past it.
fn next_line<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let start: &'a [u8] = rest;
    // `BufRead` on a slice finds the line break with std's `memchr` and
    // cannot fail; the fallback (the whole rest) is never taken.
    let len = rest.skip_until(b'\n').unwrap_or(start.len());
    &start[..len]
}

impl Output<'_> {
    /// The calling thread's part: a mapped chunk written and counted; its
    /// buffers, emptied, for another chunk.
    fn chunk(&mut self, chunk: MappedChunk) -> Result<Buffers, TransformError> {
        let MappedChunk {
            mut buffers,
            counts,
            json_values,
        } = chunk;
        self.output
            .write_all(&buffers.output)
            .map_err(TransformError::Write)?;
        self.rejects
            .write_all(&buffers.rejects)
            .map_err(TransformError::Write)?;
        self.counts.add(&counts);
        self.json_values += json_values;
        buffers.input.clear();
        buffers.output.clear();
        buffers.rejects.clear();
        Ok(buffers)
    }
}

/// The input cut into [`Chunk`]s; after a read error, the complete lines
/// before it and then the error, as the line-by-line reader would have
/// mapped those lines and then stopped.
struct Chunks<'a> {
    input: &'a mut dyn BufRead,
    chunk_bytes: usize,
    next_line_number: u64,
    /// The start of a line the last chunk did not end with (no line break).
    carry: Vec<u8>,
    /// The input has ended (its end, or an error): it is not read again.
    ended: bool,
    /// The error that ended it, until returned.
    error: Option<io::Error>,
    /// Buffers of chunks already written, to reuse.
    spare: &'a RefCell<Vec<Buffers>>,
}

impl Iterator for Chunks<'_> {
    type Item = Result<Chunk, TransformError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut buffers = self.spare.borrow_mut().pop().unwrap_or_default();
        let bytes = &mut buffers.input;
        bytes.extend_from_slice(&self.carry);
        self.carry.clear();
        loop {
            if self.ended {
                // A line cut by an error is not mapped.
                if let Some(error) = self.error.take() {
                    return Some(Err(TransformError::Read(error)));
                }
                // The last line, without a line break.
                return (!bytes.is_empty()).then(|| Ok(self.chunk(buffers)));
            }
            // `bytes` holds no line break yet: search only what comes now.
            let searched = bytes.len();
            self.fill(bytes, searched + self.chunk_bytes);
            if let Some(last_break) = bytes[searched..].iter().rposition(|byte| *byte == b'\n') {
                let end = searched + last_break + 1;
                self.carry.extend_from_slice(&bytes[end..]);
                bytes.truncate(end);
                return Some(Ok(self.chunk(buffers)));
            }
        }
    }
}

impl Chunks<'_> {
    /// Reads into `bytes` until it is `target` long or the input ends.
    fn fill(&mut self, bytes: &mut Vec<u8>, target: usize) {
        let wanted = target - bytes.len();
        bytes.reserve_exact(wanted);
        // `read_to_end` reads into the spare capacity without zeroing it
        // first (for std's readers), retries when interrupted, and keeps
        // what it read before an error.
        match (&mut *self.input).take(wanted as u64).read_to_end(bytes) {
            Ok(n_read) if n_read < wanted => self.ended = true,
            Ok(_) => {}
            Err(error) => {
                self.ended = true;
                self.error = Some(error);
            }
        }
    }

    fn chunk(&mut self, buffers: Buffers) -> Chunk {
        let first_line_number = self.next_line_number;
        self.next_line_number += count_line_breaks(&buffers.input);
        Chunk {
            buffers,
            first_line_number,
        }
    }
}

/// The line breaks in `bytes`, counted into a `u8` per 255 bytes so that
/// the compiler vectorises the loop: about 0.1 ns a byte. Counted into a
/// `usize`, it cost the calling thread ten times more, a tenth of what
/// mapping the chunk costs a worker.
fn count_line_breaks(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|block| {
            let n_in_block = block
                .iter()
                .fold(0u8, |n, byte| n + u8::from(*byte == b'\n'));
            u64::from(n_in_block)
        })
        .sum()
}
