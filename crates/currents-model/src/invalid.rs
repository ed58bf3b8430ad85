//! Why an event or a batch could not be read, as closed vocabularies.

use std::fmt;

/// Why one event is invalid. The names ([`InvalidReason::as_str`]) are a
/// stable, closed vocabulary for counters and dead-letter entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The text is not JSON at all.
    InvalidJson,
    /// The JSON value is not an object.
    NotAnObject,
    /// No `event_type`, or `null`.
    MissingEventType,
    /// `event_type` is not a string, or is empty.
    InvalidEventType,
    /// No `id`, or `null`.
    MissingId,
    /// `id` is not a string, or is empty.
    InvalidId,
    /// No `time`, or `null`.
    MissingTime,
    /// `time` is not an integer.
    InvalidTime,
    /// `user`, or one of its id fields, has the wrong JSON type.
    InvalidUser,
    /// `properties` is neither an object nor a JSON-encoded string.
    InvalidProperties,
    /// A `users.behaviors.CustomEvent` without a non-empty string `name`.
    MissingCustomEventName,
}

impl InvalidReason {
    /// Every reason, for exhaustive counters.
    pub const ALL: [InvalidReason; 11] = [
        InvalidReason::InvalidJson,
        InvalidReason::NotAnObject,
        InvalidReason::MissingEventType,
        InvalidReason::InvalidEventType,
        InvalidReason::MissingId,
        InvalidReason::InvalidId,
        InvalidReason::MissingTime,
        InvalidReason::InvalidTime,
        InvalidReason::InvalidUser,
        InvalidReason::InvalidProperties,
        InvalidReason::MissingCustomEventName,
    ];

    /// The reason's snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            InvalidReason::InvalidJson => "invalid_json",
            InvalidReason::NotAnObject => "not_an_object",
            InvalidReason::MissingEventType => "missing_event_type",
            InvalidReason::InvalidEventType => "invalid_event_type",
            InvalidReason::MissingId => "missing_id",
            InvalidReason::InvalidId => "invalid_id",
            InvalidReason::MissingTime => "missing_time",
            InvalidReason::InvalidTime => "invalid_time",
            InvalidReason::InvalidUser => "invalid_user",
            InvalidReason::InvalidProperties => "invalid_properties",
            InvalidReason::MissingCustomEventName => "missing_custom_event_name",
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event that could not be read: the reason, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event ({reason}): {detail}")]
pub struct InvalidEvent {
    /// The machine-readable reason.
    pub reason: InvalidReason,
    /// What exactly was wrong, e.g. `time must be an integer of UNIX seconds, found a string`.
    pub detail: String,
}

impl InvalidEvent {
    /// An invalid event with its reason and explanation.
    pub fn new(reason: InvalidReason, detail: impl Into<String>) -> InvalidEvent {
        InvalidEvent {
            reason,
            detail: detail.into(),
        }
    }
}

/// Why a whole batch body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8 (at byte {valid_up_to})")]
    InvalidUtf8 {
        /// Bytes before the first invalid sequence.
        valid_up_to: usize,
    },
    /// The body is not JSON.
    #[error("body is not JSON: {message}")]
    InvalidJson {
        /// The parser's message, with line and column.
        message: String,
    },
    /// The body is JSON but not `{"events": [...]}`.
    #[error("body must be a JSON object with an `events` array")]
    NotAnEnvelope,
}
