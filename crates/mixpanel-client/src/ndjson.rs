//! NDJSON helpers: one JSON value per line.
//!
//! JSON text kept verbatim (a [`serde_json::value::RawValue`] cut from a
//! pretty-printed document) may contain line breaks, which would split one
//! value over several NDJSON lines. [`compact`] removes the whitespace
//! between tokens and leaves every string, number and literal byte for byte.

use std::borrow::Cow;

/// `json` without whitespace between tokens. Expects valid JSON; text that
/// already has no line breaks is returned as is, without copying.
pub fn compact(json: &str) -> Cow<'_, str> {
    if !has_line_break(json.as_bytes()) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for ch in json.chars() {
        if in_string {
            out.push(ch);
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

/// Whether `bytes`, valid JSON, hold a line break. A string, number or
/// literal with nothing around it cannot (a line break inside a JSON string
/// is always escaped), and most property values are one.
#[inline]
fn has_line_break(bytes: &[u8]) -> bool {
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    let is_bare_scalar = matches!(first, b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
        && !matches!(last, b' ' | b'\t' | b'\n' | b'\r');
    !is_bare_scalar && memchr::memchr2(b'\n', b'\r', bytes).is_some()
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn keeps_strings_and_drops_whitespace_between_tokens() {
        let pretty = "{\n  \"a b\": [1, 2.5e3,\n true],\r\n \"q\\\" \\n\": \"x  y\"\n}";
        assert_eq!(
            compact(pretty),
            "{\"a b\":[1,2.5e3,true],\"q\\\" \\n\":\"x  y\"}"
        );
    }

    #[test]
    fn short_and_long_values_are_both_checked() {
        assert_eq!(compact("[1,\n2]"), "[1,2]");
        assert_eq!(compact("\"a\"\r"), "\"a\"");
        assert_eq!(compact("12 \n "), "12");
        assert_eq!(compact("\n\"a\\nb\""), "\"a\\nb\"");
        let long = format!("[{}\n]", "1,".repeat(40) + "1");
        assert_eq!(compact(&long), format!("[{}]", "1,".repeat(40) + "1"));
    }

    #[test]
    fn one_line_text_is_borrowed() {
        assert!(matches!(
            compact("{ \"a\": 1 }"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
