//! What the NATS spool writes into JetStream messages besides the bytes it
//! keeps: subjects, header names, header values and message ids.
//!
//! A batch is a message on `<subject_prefix>.<route>` whose payload is the
//! Currents body as received, with headers:
//!
//! | header | value |
//! |---|---|
//! | `Nats-Msg-Id` | hex SHA-256 of the workspace and the body ([`batch_msg_id`]): JetStream stores a batch Braze retries within the duplicate window once |
//! | `Bridge-Workspace` | the workspace (absent when none) |
//! | `Bridge-Received-At-Ms` | when ingest received it, UNIX milliseconds |
//!
//! A dead letter is a message on `<dead-letter prefix>.<reason>` whose
//! payload is the event, with `Nats-Msg-Id` ([`dead_letter_msg_id`]),
//! `Bridge-Reason`, `Bridge-Detail` (at most [`MAX_DETAIL_BYTES`]),
//! `Bridge-Event-Type`, `Bridge-Event-Id`, `Bridge-Workspace` (each absent
//! when unknown), `Bridge-Attempts`, `Bridge-Batch-Id` and
//! `Bridge-Dead-Lettered-At-Ms`.
//!
//! Header values are text on one line, and NATS trims their ends, so string
//! values are percent-encoded where needed ([`encode`]): `%`, control
//! characters, and a space at either end; everything else (UTF-8 included)
//! is kept as it is, readable in `nats stream view`.

use async_nats::HeaderMap;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::spool::{DeadLetter, DeadLetterEntry};

/// The batch's workspace.
pub(crate) const WORKSPACE: &str = "Bridge-Workspace";
/// When ingest received the batch, UNIX milliseconds.
pub(crate) const RECEIVED_AT_MS: &str = "Bridge-Received-At-Ms";
/// A dead letter's reason.
pub(crate) const REASON: &str = "Bridge-Reason";
/// A dead letter's detail.
pub(crate) const DETAIL: &str = "Bridge-Detail";
/// A dead letter's event type.
pub(crate) const EVENT_TYPE: &str = "Bridge-Event-Type";
/// A dead letter's Currents event id.
pub(crate) const EVENT_ID: &str = "Bridge-Event-Id";
/// Delivery attempts made before it was dead-lettered.
pub(crate) const ATTEMPTS: &str = "Bridge-Attempts";
/// The batch stream sequence of the batch it came in.
pub(crate) const BATCH_ID: &str = "Bridge-Batch-Id";
/// When it was dead-lettered, UNIX milliseconds.
pub(crate) const DEAD_LETTERED_AT_MS: &str = "Bridge-Dead-Lettered-At-Ms";

/// A dead letter's detail is cut to this many bytes (at a character
/// boundary, ending with `…`): Mixpanel's messages and parser explanations
/// are far shorter; a detail is not a place for a body.
pub(crate) const MAX_DETAIL_BYTES: usize = 4096;

/// Longest subject token made from a workspace or a reason.
const MAX_TOKEN_BYTES: usize = 64;

/// `value` as a subject token: ASCII letters, digits, `-` and `_` kept,
/// anything else `_`, at most 64 bytes; `_` when empty or absent.
pub(crate) fn token(value: Option<&str>) -> String {
    let token: String = value
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TOKEN_BYTES)
        .collect();
    if token.is_empty() {
        "_".to_owned()
    } else {
        token
    }
}

/// The `Nats-Msg-Id` of a batch: hex SHA-256 over the workspace (with its
/// length, so that no two pairs share an input) and the body.
pub(crate) fn batch_msg_id(workspace: Option<&str>, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    match workspace {
        Some(workspace) => {
            hasher.update([1]);
            hasher.update((workspace.len() as u64).to_be_bytes());
            hasher.update(workspace.as_bytes());
        }
        None => hasher.update([0]),
    }
    hasher.update(body);
    hex(&hasher.finalize())
}

/// The `Nats-Msg-Id` of the dead letter at `index` of the settlement of the
/// batch at `batch_sequence`: a settlement tried again (the process died
/// between storing its dead letters and acknowledging the batch, which came
/// back) stores each once. The batch's stream sequence, not its body hash,
/// makes it unique (two batches with one body are two batches), and a hash
/// of the letter guards the index: a second delivery that dead-letters other
/// events (Mixpanel refused different records) stores them, never taking
/// one for another.
pub(crate) fn dead_letter_msg_id(batch_sequence: u64, index: usize, letter: &DeadLetter) -> String {
    let mut hasher = Sha256::new();
    hasher.update((letter.reason.len() as u64).to_be_bytes());
    hasher.update(letter.reason.as_bytes());
    hasher.update(&letter.event);
    let digest = hasher.finalize();
    format!("dl-{batch_sequence}-{index}-{}", hex(&digest[..8]))
}

/// The `Nats-Msg-Id` of a letter added from outside the spool (a
/// backfill's refusal): a hash of its reason, detail and event, so that the
/// same letter added twice within the duplicate window is stored once.
pub(crate) fn added_letter_msg_id(letter: &DeadLetter) -> String {
    let mut hasher = Sha256::new();
    for part in [letter.reason.as_bytes(), letter.detail.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(&letter.event);
    format!("dl-added-{}", hex(&hasher.finalize()[..16]))
}

/// The `Nats-Msg-Id` of a replayed batch: the dead-letter entries it holds,
/// so that a replay run again after a crash between publishing and deleting
/// (within the duplicate window) stores the batch once.
pub(crate) fn replay_msg_id(entry_ids: &[i64]) -> String {
    let mut hasher = Sha256::new();
    for id in entry_ids {
        hasher.update(id.to_be_bytes());
    }
    format!("replay-{}", hex(&hasher.finalize()))
}

/// The headers of a batch.
pub(crate) fn batch_headers(
    msg_id: &str,
    workspace: Option<&str>,
    received_at_ms: i64,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    if let Some(workspace) = workspace {
        headers.insert(WORKSPACE, encode(workspace).as_str());
    }
    headers.insert(RECEIVED_AT_MS, received_at_ms.to_string().as_str());
    headers
}

/// The headers of a dead letter.
pub(crate) fn dead_letter_headers(
    msg_id: &str,
    letter: &DeadLetter,
    batch_id: Option<i64>,
    dead_lettered_at_ms: i64,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    headers.insert(REASON, encode(&letter.reason).as_str());
    headers.insert(
        DETAIL,
        encode(&bounded(&letter.detail, MAX_DETAIL_BYTES)).as_str(),
    );
    for (name, value) in [
        (EVENT_TYPE, &letter.event_type),
        (EVENT_ID, &letter.event_id),
        (WORKSPACE, &letter.workspace),
    ] {
        if let Some(value) = value {
            headers.insert(name, encode(value).as_str());
        }
    }
    headers.insert(ATTEMPTS, letter.attempts.to_string().as_str());
    if let Some(batch_id) = batch_id {
        headers.insert(BATCH_ID, batch_id.to_string().as_str());
    }
    headers.insert(
        DEAD_LETTERED_AT_MS,
        dead_lettered_at_ms.to_string().as_str(),
    );
    headers
}

/// A string header, decoded.
pub(crate) fn text(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers?.get(name).map(|value| decode(value.as_str()))
}

/// An integer header.
pub(crate) fn integer(headers: Option<&HeaderMap>, name: &str) -> Option<i64> {
    headers?.get(name)?.as_str().trim().parse().ok()
}

/// The entry stored at `sequence` of the dead-letter stream, from its
/// headers and payload; `stored_at_ms` (the stream's time) stands in for a
/// missing time. A message someone else published there without our
/// headers reads as a letter with reason `unknown`.
pub(crate) fn decode_dead_letter(
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: Bytes,
    stored_at_ms: i64,
) -> DeadLetterEntry {
    DeadLetterEntry {
        id: i64::try_from(sequence).unwrap_or(i64::MAX),
        dead_lettered_at_ms: integer(headers, DEAD_LETTERED_AT_MS).unwrap_or(stored_at_ms),
        batch_id: integer(headers, BATCH_ID),
        letter: DeadLetter {
            event: payload,
            reason: text(headers, REASON).unwrap_or_else(|| "unknown".to_owned()),
            detail: text(headers, DETAIL).unwrap_or_default(),
            event_type: text(headers, EVENT_TYPE),
            event_id: text(headers, EVENT_ID),
            workspace: text(headers, WORKSPACE),
            attempts: integer(headers, ATTEMPTS)
                .and_then(|attempts| u32::try_from(attempts).ok())
                .unwrap_or(0),
        },
    }
}

/// `value` made safe for a header value: `%`, control characters and a
/// space at either end become `%XX`.
pub(crate) fn encode(value: &str) -> String {
    let last = value.len().saturating_sub(1);
    let mut encoded = String::with_capacity(value.len());
    for (idx, c) in value.char_indices() {
        let at_end = idx == 0 || idx == last;
        if c == '%' || c.is_ascii_control() || (c == ' ' && at_end) {
            encoded.push_str(&format!("%{:02X}", c as u32));
        } else {
            encoded.push(c);
        }
    }
    encoded
}

/// The inverse of [`encode`]; a `%` not followed by two hex digits stays.
pub(crate) fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        if bytes[idx] == b'%'
            && let Some(byte) = bytes
                .get(idx + 1..idx + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            decoded.push(byte);
            idx += 3;
            continue;
        }
        decoded.push(bytes[idx]);
        idx += 1;
    }
    String::from_utf8(decoded)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// `text` cut to at most `max_bytes` bytes at a character boundary, ending
/// with `…` when cut.
pub(crate) fn bounded(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max_bytes {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max_bytes.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &text[..end]))
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_round_trip() {
        for value in [
            "brand-a",
            " leading and trailing ",
            "100% sure",
            "line\r\nbreak\ttab",
            "ünïcödé ✓",
            "%41 is not decoded twice",
            "",
        ] {
            let encoded = encode(value);
            assert!(!encoded.contains(['\r', '\n']), "{encoded:?}");
            assert_eq!(encoded.trim(), encoded, "{encoded:?}");
            assert_eq!(decode(&encoded), value);
        }
        assert_eq!(encode("brand a"), "brand a");
    }

    #[test]
    fn tokens_are_single_subject_tokens() {
        assert_eq!(token(Some("brand-a")), "brand-a");
        assert_eq!(token(Some("brand.a *>")), "brand_a___");
        assert_eq!(token(Some("")), "_");
        assert_eq!(token(None), "_");
        assert_eq!(token(Some(&"x".repeat(100))).len(), 64);
    }

    #[test]
    fn batch_ids_tell_workspaces_apart() {
        let body = br#"{"events":[]}"#;
        assert_eq!(batch_msg_id(Some("a"), body), batch_msg_id(Some("a"), body));
        assert_ne!(batch_msg_id(Some("a"), body), batch_msg_id(None, body));
        assert_ne!(batch_msg_id(Some(""), body), batch_msg_id(None, body));
        assert_ne!(batch_msg_id(Some("a"), body), batch_msg_id(Some("b"), body));
        assert_eq!(batch_msg_id(None, body).len(), 64);
    }

    #[test]
    fn details_are_bounded_at_a_character_boundary() {
        let long = "é".repeat(5000);
        let cut = bounded(&long, MAX_DETAIL_BYTES);
        assert!(cut.len() <= MAX_DETAIL_BYTES);
        assert!(cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));
        assert_eq!(bounded("short", MAX_DETAIL_BYTES), "short");
    }
}
