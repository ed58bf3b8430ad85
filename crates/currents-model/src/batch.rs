//! The Custom HTTP connector's batch envelope, `{"events": [...]}`.
//!
//! A batch is split into raw events without parsing them, so that one bad
//! event never makes the batch unreadable: each event is parsed (and judged)
//! on its own with [`crate::Event::from_raw`]. [`Batch::parse_events`] does
//! both in one pass over the body, which is what a busy service wants.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::RawEvent;
use crate::json::CowStr;
use crate::scan::Scanner;
use crate::{BatchError, Event, InvalidEvent};

/// The events of one batch, each still unparsed JSON text.
#[derive(Debug, Clone, Default)]
pub struct Batch<'a> {
    /// The events in the order Braze sent them.
    pub events: Vec<&'a RawValue>,
}

impl<'a> Batch<'a> {
    /// Reads a request body. An empty body (or one of JSON whitespace only)
    /// is an empty batch: Braze sends one to check credentials. Keys other than `events`
    /// are ignored, except `event_type`: an object that has one is a single
    /// event, not an envelope, and is refused as [`BatchError::NotAnEnvelope`].
    pub fn parse(body: &'a str) -> Result<Batch<'a>, BatchError> {
        read_envelope::<Vec<&'a RawValue>>(body).map(|events| Batch { events })
    }

    /// The number of events in a request body, with the same answers as
    /// [`Batch::parse_bytes`] but nothing kept per event: a service checks a
    /// batch's size against its cap before it spends memory on the events
    /// (a 16 MiB body of `1,1,1,…` holds 8 million of them).
    pub fn count_events(body: &[u8]) -> Result<usize, BatchError> {
        let text = std::str::from_utf8(body).map_err(|error| BatchError::InvalidUtf8 {
            valid_up_to: error.valid_up_to(),
        })?;
        read_envelope::<EventCount>(text).map(|EventCount(n)| n)
    }

    /// Like [`Batch::parse`] for bytes, checking UTF-8 once up front.
    pub fn parse_bytes(body: &'a [u8]) -> Result<Batch<'a>, BatchError> {
        let text = std::str::from_utf8(body).map_err(|error| BatchError::InvalidUtf8 {
            valid_up_to: error.valid_up_to(),
        })?;
        Batch::parse(text)
    }

    /// Whether the batch holds no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Reads a request body and parses every event in it: the same result as
    /// [`Batch::parse`] followed by [`Event::parse`] on each event, in one
    /// pass over the bytes.
    ///
    /// The single pass covers the shape Braze sends, `{"events":[{...},...]}`
    /// (any whitespace) with every element a well-formed object. Any other
    /// body (more keys, an element that is not an object, broken JSON) takes
    /// the two-step path, so that one bad event still only affects itself
    /// and errors read the same.
    pub fn parse_events(body: &'a str) -> Result<Vec<ParsedEvent<'a>>, BatchError> {
        if let Some(events) = parse_events_in_one_pass(body) {
            return Ok(events);
        }
        let batch = Batch::parse(body)?;
        Ok(batch
            .events
            .into_iter()
            .map(|raw| ParsedEvent {
                raw: raw.get(),
                event: Event::from_raw(raw),
            })
            .collect())
    }
}

/// One event of a batch: its JSON text, and the event or why it is invalid.
#[derive(Debug)]
pub struct ParsedEvent<'a> {
    /// The event exactly as it appears in the body.
    pub raw: &'a str,
    /// What it parsed to.
    pub event: Result<Event<'a>, InvalidEvent>,
}

/// The one-pass path of [`Batch::parse_events`]; `None` hands the body to
/// the two-step path.
pub(crate) fn parse_events_in_one_pass(body: &str) -> Option<Vec<ParsedEvent<'_>>> {
    let mut scanner = Scanner::new(body);
    if !scanner.open_object()? || scanner.key()? != "events" {
        return None;
    }
    scanner.eat(b'[')?;
    let mut events = Vec::with_capacity(100);
    if scanner.peek()? == b']' {
        scanner.eat(b']')?;
    } else {
        loop {
            scanner.peek()?;
            let start = scanner.pos();
            let event = RawEvent::scan_event(&mut scanner)?;
            events.push(ParsedEvent {
                raw: &body[start..scanner.pos()],
                event,
            });
            match scanner.peek()? {
                b',' => scanner.eat(b',')?,
                _ => {
                    scanner.eat(b']')?;
                    break;
                }
            }
        }
    }
    scanner.eat(b'}')?;
    scanner.peek().is_none().then_some(events)
}

/// Where the elements of `events` go: kept ([`Batch::parse`]) or only
/// counted ([`Batch::count_events`]).
trait Events<'de>: Default {
    fn push(&mut self, event: &'de RawValue);
}

impl<'de> Events<'de> for Vec<&'de RawValue> {
    fn push(&mut self, event: &'de RawValue) {
        Vec::push(self, event);
    }
}

/// The events of a batch, counted and dropped.
#[derive(Default)]
struct EventCount(usize);

impl<'de> Events<'de> for EventCount {
    fn push(&mut self, _: &'de RawValue) {
        self.0 += 1;
    }
}

/// The body's `events`, or why it is not a batch; an empty body is an empty
/// batch.
fn read_envelope<'de, E: Events<'de>>(body: &'de str) -> Result<E, BatchError> {
    let body_start = body.trim_start_matches([' ', '\t', '\n', '\r']);
    if body_start.is_empty() {
        return Ok(E::default());
    }
    if body_start.as_bytes().first() != Some(&b'{') {
        return Err(match serde_json::from_str::<IgnoredAny>(body) {
            Ok(_) => BatchError::NotAnEnvelope,
            Err(error) => BatchError::InvalidJson {
                message: error.to_string(),
            },
        });
    }
    let envelope: Envelope<E> =
        serde_json::from_str(body).map_err(|error| BatchError::InvalidJson {
            message: error.to_string(),
        })?;
    match envelope.events {
        Some(events) if !envelope.has_event_type => Ok(events),
        _ => Err(BatchError::NotAnEnvelope),
    }
}

/// `events` is `None` when absent or not an array.
struct Envelope<E> {
    events: Option<E>,
    has_event_type: bool,
}

impl<'de, E: Events<'de>> Deserialize<'de> for Envelope<E> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor<E>(std::marker::PhantomData<E>);
        impl<'de, E: Events<'de>> Visitor<'de> for EnvelopeVisitor<E> {
            type Value = Envelope<E>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with an `events` array")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut events = None;
                let mut has_event_type = false;
                while let Some(CowStr(key)) = map.next_key()? {
                    if key == "events" {
                        events = map.next_value::<EventsField<E>>()?.0;
                    } else {
                        has_event_type |= key == "event_type";
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Envelope {
                    events,
                    has_event_type,
                })
            }
        }
        deserializer.deserialize_map(EnvelopeVisitor(std::marker::PhantomData))
    }
}

/// The `events` value: the array's elements, or `None` for any other value.
struct EventsField<E>(Option<E>);

impl<'de, E: Events<'de>> Deserialize<'de> for EventsField<E> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventsVisitor<E>(std::marker::PhantomData<E>);
        impl<'de, E: Events<'de>> Visitor<'de> for EventsVisitor<E> {
            type Value = EventsField<E>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of events")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut events = E::default();
                while let Some(event) = seq.next_element::<&'de RawValue>()? {
                    events.push(event);
                }
                Ok(EventsField(Some(events)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(EventsField(None))
            }
            fn visit_bool<Er: de::Error>(self, _: bool) -> Result<Self::Value, Er> {
                Ok(EventsField(None))
            }
            fn visit_i64<Er: de::Error>(self, _: i64) -> Result<Self::Value, Er> {
                Ok(EventsField(None))
            }
            fn visit_u64<Er: de::Error>(self, _: u64) -> Result<Self::Value, Er> {
                Ok(EventsField(None))
            }
            fn visit_f64<Er: de::Error>(self, _: f64) -> Result<Self::Value, Er> {
                Ok(EventsField(None))
            }
            fn visit_str<Er: de::Error>(self, _: &str) -> Result<Self::Value, Er> {
                Ok(EventsField(None))
            }
            fn visit_unit<Er: de::Error>(self) -> Result<Self::Value, Er> {
                Ok(EventsField(None))
            }
        }
        deserializer.deserialize_any(EventsVisitor(std::marker::PhantomData))
    }
}
