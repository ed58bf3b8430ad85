//! Writing JSON text directly into a `String`: strings with JSON's escapes,
//! integers and floats, with no intermediate value.
//!
//! The Avro decoder writes every event through these, so they are the hot
//! path of decoding. Strings are escaped as serde_json escapes them (the
//! same bytes: the tests compare the two), copying runs that need no escape
//! whole; writing into a `String` rather than a `Vec<u8>` keeps the output
//! valid UTF-8 by construction, so nobody checks it again.

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

/// Appends `text` as a JSON string, quotes included.
pub(crate) fn push_str(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (idx, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(byte)];
        if escape == 0 {
            continue;
        }
        // Escaped bytes are ASCII, so `idx` is a character boundary.
        out.push_str(&text[run_start..idx]);
        out.push('\\');
        if escape == b'u' {
            out.push_str("u00");
            out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
        } else {
            out.push(char::from(escape));
        }
        run_start = idx + 1;
    }
    out.push_str(&text[run_start..]);
    out.push('"');
}

/// Appends bytes as a JSON string of the characters U+0000 to U+00FF, one
/// per byte: Avro's own JSON encoding of `bytes` and `fixed` values.
pub(crate) fn push_latin1(out: &mut String, bytes: &[u8]) {
    let text: String = bytes.iter().map(|&byte| char::from(byte)).collect();
    push_str(out, &text);
}

/// Appends an integer.
pub(crate) fn push_i64(out: &mut String, value: i64) {
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
        out.push('-');
    }
    for &digit in &digits[idx..] {
        out.push(char::from(digit));
    }
}

/// Appends a `double` as serde_json writes it (shortest text that reads
/// back the same, `1.0` for whole numbers); `null` when it is not finite,
/// since JSON has no NaN or infinity.
pub(crate) fn push_f64(out: &mut String, value: f64) {
    let mut buf = [0_u8; 32];
    let len = if value.is_finite() {
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        match serde_json::to_writer(&mut cursor, &value) {
            Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
            Err(_) => 0,
        }
    } else {
        0
    };
    push_number_text(out, &buf[..len]);
}

/// Appends a `float` with the shortest text that reads back as the same
/// `f32` (`0.1`, not `0.10000000149011612`); `null` when it is not finite.
pub(crate) fn push_f32(out: &mut String, value: f32) {
    let mut buf = [0_u8; 32];
    let len = if value.is_finite() {
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        match serde_json::to_writer(&mut cursor, &value) {
            Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
            Err(_) => 0,
        }
    } else {
        0
    };
    push_number_text(out, &buf[..len]);
}

/// The number serde_json wrote (ASCII), or `null` when it wrote nothing.
fn push_number_text(out: &mut String, text: &[u8]) {
    match std::str::from_utf8(text) {
        Ok(text) if !text.is_empty() => out.push_str(text),
        _ => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests;
