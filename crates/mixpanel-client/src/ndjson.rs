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
    if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_none() {
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
    fn one_line_text_is_borrowed() {
        assert!(matches!(
            compact("{ \"a\": 1 }"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
