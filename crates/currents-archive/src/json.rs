//! Writing JSON text directly into a byte buffer: strings with JSON's
//! escapes, integers and floats, with no intermediate value.
//!
//! The Avro decoder writes every event through these, so they are the hot
//! path of decoding. Strings are escaped as serde_json escapes them (the
//! same bytes: the tests compare the two), eight bytes at a time while no
//! escape is needed. They take bytes, not `&str`: escaping only ever
//! touches ASCII bytes, which are never part of a multi-byte UTF-8
//! sequence, so the decoder checks a whole event's UTF-8 once at its end
//! instead of once per string.

/// `ESCAPE[byte]`: 0 for a byte copied as is, else the letter of its short
/// escape (`"`, `\`, `b`, `f`, `n`, `r`, `t`) or `u` for `\u00XX`.
static ESCAPE: [u8; 256] = {
    let mut table = [0_u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `text` (UTF-8, or bytes whose UTF-8 the caller checks later)
/// as a JSON string, quotes included.
pub(crate) fn push_str(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut run_start = 0;
    let mut idx = 0;
    while idx < text.len() {
        // Whole eight-byte chunks while none of their bytes needs an
        // escape (most strings have none at all), then byte by byte up to
        // the next chunk.
        idx += clean_chunks_len(&text[idx..]);
        let chunk_end = (idx + 8).min(text.len());
        if chunk_end - idx < 8 && !needs_escape(padded_word(&text[idx..chunk_end])) {
            break;
        }
        while idx < chunk_end {
            let byte = text[idx];
            let escape = ESCAPE[usize::from(byte)];
            if escape != 0 {
                out.extend_from_slice(&text[run_start..idx]);
                push_escape(out, byte, escape);
                run_start = idx + 1;
            }
            idx += 1;
        }
    }
    out.extend_from_slice(&text[run_start..]);
    out.push(b'"');
}

/// The length of the leading whole eight-byte chunks of `bytes` that need
/// no escape.
#[inline]
fn clean_chunks_len(bytes: &[u8]) -> usize {
    let mut len = 0;
    for chunk in bytes.chunks_exact(8) {
        if needs_escape(padded_word(chunk)) {
            break;
        }
        len += 8;
    }
    len
}

/// Up to eight bytes as a word, padded with a byte that needs no escape.
#[inline]
fn padded_word(bytes: &[u8]) -> u64 {
    let mut word = [b'a'; 8];
    let len = bytes.len().min(8);
    word[..len].copy_from_slice(&bytes[..len]);
    u64::from_le_bytes(word)
}

/// Whether any of the eight bytes of `word` is below 0x20, `"` or `\\`
/// (the classic "has a zero byte" bit trick, exact for these tests).
#[inline]
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    (below_space | quote | backslash) != 0
}

fn push_escape(out: &mut Vec<u8>, byte: u8, escape: u8) {
    if escape == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX_DIGITS[usize::from(byte >> 4)],
            HEX_DIGITS[usize::from(byte & 0xf)],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', escape]);
    }
}

/// Appends bytes as a JSON string of the characters U+0000 to U+00FF, one
/// per byte: Avro's own JSON encoding of `bytes` and `fixed` values.
pub(crate) fn push_latin1(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut utf8 = Vec::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        if byte < 0x80 {
            utf8.push(byte);
        } else {
            utf8.extend_from_slice(&[0xc0 | (byte >> 6), 0x80 | (byte & 0x3f)]);
        }
    }
    push_str(out, &utf8);
}

/// Appends an integer.
pub(crate) fn push_i64(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0_u8; 20];
    let mut n = value.unsigned_abs();
    let mut idx = digits.len();
    loop {
        idx -= 1;
        digits[idx] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[idx..]);
}

/// Appends a `double` as serde_json writes it (shortest text that reads
/// back the same, `1.0` for whole numbers); `null` when it is not finite,
/// since JSON has no NaN or infinity.
pub(crate) fn push_f64(out: &mut Vec<u8>, value: f64) {
    if !value.is_finite() || serde_json::to_writer(&mut *out, &value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Appends a `float` with the shortest text that reads back as the same
/// `f32` (`0.1`, not `0.10000000149011612`); `null` when it is not finite.
pub(crate) fn push_f32(out: &mut Vec<u8>, value: f32) {
    if !value.is_finite() || serde_json::to_writer(&mut *out, &value).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests;
