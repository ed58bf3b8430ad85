//! Braze Currents events as Rust types, with no I/O.
//!
//! Braze Currents streams engagement and behaviour events out of Braze. This
//! crate knows every event type Braze publishes ([`EventType`], 94 types,
//! each with its field schema from Braze's tables: [`EventType::fields`]) and
//! reads events in both shapes Braze writes them:
//!
//! - the **Custom HTTP connector** shape: `{"event_type", "id", "time",
//!   "user": {...}, "properties": {...}}`, sent in batches of
//!   `{"events": [...]}` ([`Batch`]);
//! - the **storage** (Avro export) shape: every field at the top level, with a
//!   custom event's or purchase's own properties as a JSON-encoded string.
//!
//! Both become the same [`Event`]. The parser is lenient where Braze evolves
//! and strict where correctness needs it:
//!
//! - an absent field and a `null` field mean the same;
//! - unknown fields are kept ([`Event::extra`], [`User::extra`], and unknown
//!   `properties` keys in [`Event::properties`]);
//! - unknown event types are kept as [`EventTypeName::Other`];
//! - an event without a string `event_type`, a non-empty string `id` or an
//!   integer `time` is invalid, and [`InvalidEvent`] says which.
//!
//! It is built for throughput: keys and strings borrow from the input when
//! they have no escapes, and property values are kept as unparsed JSON text
//! ([`serde_json::value::RawValue`]) until someone needs them. Events are
//! read by a strict JSON scanner; whatever it cannot judge exactly goes to
//! serde_json, so both read any text the same way. [`Batch::parse_events`]
//! reads a body and its events in one pass. (serde_json's
//! `arbitrary_precision` feature, which hands numbers to parsers as maps,
//! is not supported: with it the serde path would refuse every `time`.)
//!
//! # Example
//!
//! ```
//! use currents_model::{Batch, Event, EventType, EventTypeName};
//!
//! let body = r#"{"events":[{
//!     "event_type": "users.messages.email.Click",
//!     "id": "5b3f2c1e-8a4d-4e2b-9c1a-0f6e7d8c9b0a",
//!     "time": 1732792800,
//!     "user": {"user_id": "65f1c0ffee", "external_user_id": "cust-1042"},
//!     "properties": {"campaign_name": "Winter sale", "url": "https://shop.example/sale"}
//! }]}"#;
//!
//! let batch = Batch::parse(body)?;
//! let event = Event::from_raw(batch.events[0])?;
//! assert_eq!(event.event_type, EventTypeName::Known(EventType::MessagesEmailClick));
//! assert_eq!(event.external_user_id(), Some("cust-1042"));
//! assert_eq!(event.properties[0].key, "campaign_name");
//! assert_eq!(event.properties[0].value.get(), r#""Winter sale""#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `typed` (off by default): `Event::typed` and the `typed` module, one
//!   struct per event type with each field typed by its Avro type. It is
//!   about 15,000 generated lines, so it is compiled only for those who ask.
//! - `synthetic` (off by default): the `synthetic` module, a deterministic
//!   generator of realistic events of every type from its field schema, for
//!   benchmarks, load tools and tests. No extra dependency.
//!
#![cfg_attr(feature = "typed", doc = include_str!("doc_typed.md"))]
//! # Regenerating the tables
//!
//! `src/generated.rs` (the types and their schemas) and
//! `src/typed_generated.rs` (the typed structs and their conversion) are
//! produced from Braze's field tables by `cargo xtask codegen` in this
//! crate's workspace; CI fails when they are stale.

#![deny(missing_docs)]

mod batch;
mod event;
mod generated;
mod invalid;
mod json;
mod scan;
mod schema;
#[cfg(feature = "synthetic")]
pub mod synthetic;
#[cfg(feature = "typed")]
pub mod typed;
#[cfg(feature = "typed")]
mod typed_generated;

pub use batch::{Batch, ParsedEvent};
pub use event::{Event, EventTypeName, NestedProperties, Property, Shape, User};
pub use generated::EventType;
pub use invalid::{BatchError, InvalidEvent, InvalidReason};
pub use schema::{AvroType, FieldLocation, FieldSpec};

#[cfg(test)]
mod tests;

/// The README's examples, run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
