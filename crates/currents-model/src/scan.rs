//! A fast path for reading events: a strict JSON scanner that finds keys and
//! the extent of values without building anything.
//!
//! serde_json stays the authority. The scanner only handles what it can judge
//! exactly (well-formed JSON, keys without escapes, nesting within serde_json's
//! limit) and answers `None` for anything else, so the caller hands that text
//! to serde_json, which reads it or says what is wrong. Accepting is the
//! dangerous direction: everything the scanner accepts, serde_json accepts
//! too, with the same meaning (checked by the differential tests in
//! `crate::tests`).

/// How deep an event may nest, counting the event object: well within
/// serde_json's limit of 128, which a batch's envelope takes two levels of.
/// Deeper events go to serde_json, which judges them.
pub(crate) const MAX_EVENT_DEPTH: usize = 100;

/// A position in JSON text. Every method leaves `pos` after what it read.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Scanner<'a> {
        Scanner { text, pos: 0 }
    }

    /// How many bytes have been read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Skips JSON whitespace and returns the next byte, if any.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        let bytes = self.bytes();
        while let Some(&byte) = bytes.get(self.pos) {
            if !matches!(byte, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(byte);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `byte` after optional whitespace.
    pub(crate) fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Reads an object key (the opening quote is next) and the colon after
    /// it. Keys with escapes are left to serde_json, which decodes them.
    pub(crate) fn key(&mut self) -> Option<&'a str> {
        let (content, escaped) = self.string()?;
        if escaped {
            return None;
        }
        self.eat(b':')?;
        Some(content)
    }

    /// After a member: `Some(true)` when another follows (a comma was read),
    /// `Some(false)` at the end of the object.
    pub(crate) fn next_member(&mut self) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.pos += 1;
                (self.peek()? == b'"').then_some(true)
            }
            b'}' => {
                self.pos += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Opens an object: `Some(true)` when it has a first member (its key's
    /// quote is next), `Some(false)` when it is empty (and already closed).
    pub(crate) fn open_object(&mut self) -> Option<bool> {
        self.eat(b'{')?;
        match self.peek()? {
            b'"' => Some(true),
            b'}' => {
                self.pos += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Reads a string (the opening quote is next): its JSON text with the
    /// quotes, its text between them, and whether that has escapes.
    pub(crate) fn raw_string(&mut self) -> Option<(&'a str, &'a str, bool)> {
        let start = self.pos;
        let (content, escaped) = self.string()?;
        Some((&self.text[start..self.pos], content, escaped))
    }

    /// Reads one value, which may nest `depth` more levels, and returns its text.
    pub(crate) fn raw_value(&mut self, depth: usize) -> Option<&'a str> {
        self.peek()?;
        let start = self.pos;
        self.value(depth)?;
        Some(&self.text[start..self.pos])
    }

    /// Reads a string (the opening quote is next): its text between the
    /// quotes, and whether that has escapes.
    #[inline]
    pub(crate) fn string(&mut self) -> Option<(&'a str, bool)> {
        let bytes = self.bytes();
        if bytes.get(self.pos) != Some(&b'"') {
            return None;
        }
        let start = self.pos + 1;
        let end = start + clean_prefix_len(&bytes[start..]);
        if bytes.get(end) == Some(&b'"') {
            // Nearly every string: no escapes.
            self.pos = end + 1;
            return Some((&self.text[start..end], false));
        }
        self.string_with_escapes(start, end)
    }

    /// The rest of a string from `idx`, where an escape or a control
    /// character was found.
    #[inline(never)]
    fn string_with_escapes(&mut self, start: usize, mut idx: usize) -> Option<(&'a str, bool)> {
        let bytes = self.bytes();
        loop {
            match *bytes.get(idx)? {
                b'"' => {
                    self.pos = idx + 1;
                    return Some((&self.text[start..idx], true));
                }
                b'\\' => {
                    idx += match *bytes.get(idx + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        // Surrogates (which must pair up where a string is
                        // decoded) are left to serde_json.
                        b'u' if !is_surrogate_or_invalid(bytes.get(idx + 2..idx + 6)?) => 6,
                        _ => return None,
                    };
                }
                // A control character, which JSON strings cannot hold raw.
                _ => return None,
            }
            idx += clean_prefix_len(&bytes[idx..]);
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        let bytes = self.bytes();
        match *bytes.get(self.pos)? {
            b'"' => self.string().map(drop),
            b'{' => {
                let depth = depth.checked_sub(1)?;
                let mut more = self.open_object()?;
                while more {
                    self.string()?;
                    self.eat(b':')?;
                    self.peek()?;
                    self.value(depth)?;
                    more = self.next_member()?;
                }
                Some(())
            }
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.pos += 1;
                if self.peek()? == b']' {
                    self.pos += 1;
                    return Some(());
                }
                loop {
                    self.peek()?;
                    self.value(depth)?;
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b']' => {
                            self.pos += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes().get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// A number by JSON's grammar. serde_json also refuses some that the
    /// grammar allows (an exponent too large to hold, for one); those are
    /// left to it.
    fn number(&mut self) -> Option<()> {
        let bytes = self.bytes();
        let digits = |mut idx: usize| {
            while bytes.get(idx).is_some_and(u8::is_ascii_digit) {
                idx += 1;
            }
            idx
        };
        let mut idx = self.pos + usize::from(bytes[self.pos] == b'-');
        idx = match *bytes.get(idx)? {
            b'0' => idx + 1,
            b'1'..=b'9' => digits(idx),
            _ => return None,
        };
        if bytes.get(idx) == Some(&b'.') {
            let end = digits(idx + 1);
            if end == idx + 1 {
                return None;
            }
            idx = end;
        }
        if matches!(bytes.get(idx), Some(b'e' | b'E')) {
            // Exponents are rare in events; serde_json judges their range.
            return None;
        }
        if idx - self.pos > 20 {
            // Long numbers: serde_json decides how it reads them.
            return None;
        }
        self.pos = idx;
        Some(())
    }
}

/// Whether the four bytes of a `\uXXXX` escape are not hex digits, or name a
/// UTF-16 surrogate.
fn is_surrogate_or_invalid(hex: &[u8]) -> bool {
    let Some(code) = std::str::from_utf8(hex)
        .ok()
        .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    else {
        return true;
    };
    !hex.iter().all(u8::is_ascii_hexdigit) || (0xD800..=0xDFFF).contains(&code)
}

/// How many leading bytes need no attention inside a string: not `"`, `\`
/// or a control character. Eight bytes at a time.
#[inline]
fn clean_prefix_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let mut idx = 0;
    while let Some(chunk) = bytes.get(idx..idx + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let found = ((word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash))
            & HIGH;
        if found != 0 {
            // The lowest flagged byte is always a real one.
            return idx + (found.trailing_zeros() / 8) as usize;
        }
        idx += 8;
    }
    idx + bytes[idx..]
        .iter()
        .position(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
        .unwrap_or(bytes.len() - idx)
}
