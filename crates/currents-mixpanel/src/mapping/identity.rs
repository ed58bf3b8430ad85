//! The two identity rules of the mapping: which external ids are real users
//! (`distinct_id`), and how a Currents id becomes a Mixpanel `$insert_id`.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Ids Mixpanel treats as placeholders rather than users; compared after
/// trimming, ignoring ASCII case.
const PLACEHOLDER_IDS: &[&str] = &[
    "null",
    "undefined",
    "none",
    "nil",
    "0",
    "-1",
    "anonymous",
    "[]",
    "{}",
    "lmy47d",
    "00000000-0000-0000-0000-000000000000",
];

/// Whether `external_user_id` identifies a real user. Empty and
/// whitespace-only ids do not.
pub(crate) fn is_usable_distinct_id(external_user_id: &str) -> bool {
    let trimmed = external_user_id.trim();
    !trimmed.is_empty()
        && !PLACEHOLDER_IDS
            .iter()
            .any(|placeholder| trimmed.eq_ignore_ascii_case(placeholder))
}

/// The `$insert_id` for a Currents event id: the id itself when Mixpanel
/// accepts it as is (`^[A-Za-z0-9-]{1,36}$`), otherwise the lowercase hex of
/// the first 16 bytes of its SHA-256, so a redelivered event keeps its id.
pub(crate) fn insert_id(currents_id: Cow<'_, str>) -> Cow<'_, str> {
    // A fold rather than `all`: a branch-free pass over at most 36 bytes.
    let usable = (1..=36).contains(&currents_id.len())
        && currents_id.bytes().fold(true, |usable, byte| {
            usable & (byte.is_ascii_alphanumeric() | (byte == b'-'))
        });
    if usable {
        return currents_id;
    }
    let digest = Sha256::digest(currents_id.as_bytes());
    let mut hex = String::with_capacity(32);
    for byte in &digest[..16] {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    Cow::Owned(hex)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
