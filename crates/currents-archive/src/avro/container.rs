//! The Avro object container file format: the header (magic, metadata,
//! sync marker) and the blocks that follow it, with their codecs.
//!
//! A file is `Obj\x01`, a metadata map (`avro.schema`, `avro.codec`, …), a
//! 16-byte sync marker, then blocks: a record count, a byte size, that many
//! bytes of (compressed) records, and the sync marker again. Only what
//! Braze's files need is read: the `null`, `deflate` (raw RFC 1951) and
//! `snappy` (each block followed by the CRC-32 of its uncompressed bytes)
//! codecs. Every length is checked against what is left, so a damaged
//! file is an error and never a panic or a huge allocation.

use std::ops::Range;

use crate::ArchiveError;

/// The four bytes every object container file starts with.
pub(crate) const MAGIC: &[u8; 4] = b"Obj\x01";

/// The largest uncompressed block read; Braze's blocks are far smaller.
pub(crate) const MAX_BLOCK_BYTES: usize = 256 << 20;

/// How a file's blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// Not compressed.
    Null,
    /// Raw deflate (RFC 1951, no zlib header).
    Deflate,
    /// Snappy, each block followed by the big-endian CRC-32 of its
    /// uncompressed bytes.
    Snappy,
}

impl Codec {
    /// The name files use in `avro.codec`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Null => "null",
            Codec::Deflate => "deflate",
            Codec::Snappy => "snappy",
        }
    }
}

/// What the header says.
#[derive(Debug)]
pub(crate) struct Header {
    /// `avro.schema`, JSON text.
    pub(crate) schema_json: String,
    pub(crate) codec: Codec,
    pub(crate) sync: [u8; 16],
    /// Where the first block starts.
    pub(crate) data_start: usize,
}

/// Where one block is in the file, before decompression.
#[derive(Debug, Clone)]
pub(crate) struct RawBlock {
    /// Records in the block.
    pub(crate) count: u64,
    /// The block's (compressed) bytes.
    pub(crate) data: Range<usize>,
    /// Where the next block starts.
    pub(crate) next: usize,
}

/// Reads the header of a file.
pub(crate) fn read_header(file: &[u8]) -> Result<Header, ArchiveError> {
    if file.is_empty() {
        return Err(ArchiveError::EmptyFile);
    }
    if !file.starts_with(MAGIC) {
        return Err(not_avro("the file does not start with Obj\\x01"));
    }
    let mut pos = MAGIC.len();
    let mut schema_json = None;
    let mut codec_name = None;
    loop {
        let count = read_long(file, &mut pos).map_err(|detail| not_avro(&detail))?;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            read_long(file, &mut pos).map_err(|detail| not_avro(&detail))?;
        }
        for _ in 0..count.unsigned_abs() {
            let key = read_bytes(file, &mut pos).map_err(|detail| not_avro(&detail))?;
            let value = read_bytes(file, &mut pos).map_err(|detail| not_avro(&detail))?;
            match key {
                b"avro.schema" => schema_json = Some(value),
                b"avro.codec" => codec_name = Some(value),
                _ => {}
            }
        }
    }
    let sync: [u8; 16] = file
        .get(pos..pos + 16)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| not_avro("the header ends before its sync marker"))?;
    let schema_json = schema_json.ok_or_else(|| not_avro("the header has no avro.schema"))?;
    let schema_json = String::from_utf8(schema_json.to_vec())
        .map_err(|_| not_avro("avro.schema is not UTF-8"))?;
    let codec = match codec_name.unwrap_or(b"null") {
        b"null" => Codec::Null,
        b"deflate" => Codec::Deflate,
        b"snappy" => Codec::Snappy,
        other => {
            return Err(ArchiveError::UnsupportedCodec {
                codec: String::from_utf8_lossy(other).into_owned(),
            });
        }
    };
    Ok(Header {
        schema_json,
        codec,
        sync,
        data_start: pos + 16,
    })
}

fn not_avro(detail: &str) -> ArchiveError {
    ArchiveError::NotAvro {
        detail: detail.to_owned(),
    }
}

/// Reads the block starting at `at`: `None` at the end of the file. The
/// sync marker after it must be the header's.
pub(crate) fn read_block(
    file: &[u8],
    at: usize,
    sync: &[u8; 16],
) -> Result<Option<RawBlock>, String> {
    if at >= file.len() {
        return Ok(None);
    }
    let mut pos = at;
    let count = read_long(file, &mut pos)?;
    let count = u64::try_from(count).map_err(|_| format!("negative record count {count}"))?;
    let size = read_long(file, &mut pos)?;
    let size = usize::try_from(size).map_err(|_| format!("negative block size {size}"))?;
    let left = file.len() - pos;
    if size > left || left - size < 16 {
        return Err(format!(
            "the file ends inside a block ({size} bytes and a sync marker announced, {left} left): truncated?"
        ));
    }
    let data = pos..pos + size;
    let marker = &file[data.end..data.end + 16];
    if marker != sync {
        return Err("the sync marker after the block is wrong: damaged data".to_owned());
    }
    Ok(Some(RawBlock {
        count,
        data,
        next: pos + size + 16,
    }))
}

/// Decompresses one block's bytes into `out` (cleared first).
pub(crate) fn decompress(codec: Codec, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    match codec {
        Codec::Null => {
            out.extend_from_slice(data);
            Ok(())
        }
        Codec::Deflate => inflate_raw(data, out),
        Codec::Snappy => {
            let Some(split) = data.len().checked_sub(4) else {
                return Err("a snappy block shorter than its checksum".to_owned());
            };
            let (compressed, checksum) = data.split_at(split);
            let len = snap::raw::decompress_len(compressed)
                .map_err(|error| format!("cannot read the snappy block: {error}"))?;
            if len > MAX_BLOCK_BYTES {
                return Err(format!(
                    "the block inflates to more than {MAX_BLOCK_BYTES} bytes"
                ));
            }
            out.resize(len, 0);
            let written = snap::raw::Decoder::new()
                .decompress(compressed, out)
                .map_err(|error| format!("cannot read the snappy block: {error}"))?;
            out.truncate(written);
            let expected = u32::from_be_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
            if crc32fast::hash(out) != expected {
                return Err("the snappy block's checksum does not match".to_owned());
            }
            Ok(())
        }
    }
}

/// Inflates raw deflate data (RFC 1951) into `out`, straight into its
/// spare capacity: no reader, no intermediate buffer.
fn inflate_raw(data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut inflater = flate2::Decompress::new(false);
    out.reserve(data.len().saturating_mul(4).clamp(4_096, MAX_BLOCK_BYTES));
    loop {
        let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        let input = data.get(consumed..).unwrap_or_default();
        let before = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress_vec(input, out, flate2::FlushDecompress::Finish)
            .map_err(|error| format!("cannot inflate the block: {error}"))?;
        if status == flate2::Status::StreamEnd {
            if out.len() > MAX_BLOCK_BYTES {
                return Err(format!(
                    "the block inflates to more than {MAX_BLOCK_BYTES} bytes"
                ));
            }
            return Ok(());
        }
        if out.len() == out.capacity() {
            if out.len() >= MAX_BLOCK_BYTES {
                return Err(format!(
                    "the block inflates to more than {MAX_BLOCK_BYTES} bytes"
                ));
            }
            out.reserve(out.len().min(MAX_BLOCK_BYTES - out.len()).max(4_096));
        } else if (inflater.total_in(), inflater.total_out()) == before {
            return Err("the block's deflate data ends before its end: truncated".to_owned());
        }
    }
}

/// Reads a zigzag-encoded variable-length `long`.
#[inline]
pub(crate) fn read_long(data: &[u8], pos: &mut usize) -> Result<i64, String> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let Some(&byte) = data.get(*pos) else {
            return Err("the data ends inside a number".to_owned());
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err("a number longer than 10 bytes".to_owned());
        }
    }
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

/// Reads a length-prefixed byte string.
#[inline]
pub(crate) fn read_bytes<'d>(data: &'d [u8], pos: &mut usize) -> Result<&'d [u8], String> {
    let len = read_long(data, pos)?;
    let len = usize::try_from(len).map_err(|_| format!("negative length {len}"))?;
    let end = pos
        .checked_add(len)
        .filter(|&end| end <= data.len())
        .ok_or_else(|| {
            format!(
                "a length of {len} bytes runs past the data ({} left)",
                data.len() - *pos
            )
        })?;
    let bytes = &data[*pos..end];
    *pos = end;
    Ok(bytes)
}
