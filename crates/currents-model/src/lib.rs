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
//! # Typed access
//!
//! [`Event::typed`] turns an event into the struct of its type, one per
//! [`EventType`], with each field of Braze's schema typed by its Avro type
//! (a required field plain, an optional one an `Option`) and what the schema
//! does not name kept in `extra`. See [`typed`] for the rules.
//!
//! ```
//! use currents_model::Event;
//! use currents_model::typed::TypedEvent;
//!
//! let event = Event::parse(r#"{
//!     "event_type": "users.messages.email.Click",
//!     "id": "5b3f2c1e-8a4d-4e2b-9c1a-0f6e7d8c9b0a",
//!     "time": 1732792800,
//!     "user": {"user_id": "65f1c0ffee", "external_user_id": "cust-1042"},
//!     "properties": {"email_address": "ada@example.com", "url": "https://shop.example/sale",
//!                    "is_amp": false}
//! }"#)?;
//! match event.typed()? {
//!     TypedEvent::MessagesEmailClick(click) => {
//!         assert_eq!(click.url.as_deref(), Some("https://shop.example/sale"));
//!         assert_eq!(click.email_address, "ada@example.com");
//!         assert_eq!(click.is_amp, Some(false));
//!         assert_eq!(click.campaign_id, None);
//!     }
//!     TypedEvent::Other(unknown) => println!("unknown type {}", unknown.event_type),
//!     other => println!("another type: {:?}", other.event_type()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
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
pub mod typed;
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
