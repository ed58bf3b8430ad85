//! Types for Mixpanel's ingestion APIs.
//!
//! [`Event`] is one event as Mixpanel's `/import` endpoint takes it:
//! `{"event": <name>, "properties": {...}}`. It borrows where it can, so an
//! event built from other JSON (or read from an NDJSON file) is serialized
//! without copying its property values, and its [`Properties`] never hold a
//! key twice. A serialized event is always one line, so it can be written
//! as NDJSON ([`ndjson`]).
//!
//! # Example
//!
//! ```
//! use mixpanel_client::{Event, PropertyValue};
//!
//! let mut event = Event::new("Email Click");
//! event.properties.insert("distinct_id", PropertyValue::from("cust-1042"));
//! event.properties.insert("time", PropertyValue::Integer(1732792800));
//! event.properties.insert("$insert_id", PropertyValue::from("5b3f2c1e"));
//! event.properties.insert_json("tags", r#"["winter","sale"]"#)?;
//!
//! assert_eq!(
//!     event.to_json(),
//!     r#"{"event":"Email Click","properties":{"distinct_id":"cust-1042","time":1732792800,"$insert_id":"5b3f2c1e","tags":["winter","sale"]}}"#
//! );
//!
//! let json = event.to_json();
//! let parsed = Event::from_json(&json)?;
//! assert_eq!(parsed.insert_id(), Some("5b3f2c1e"));
//! # Ok::<(), serde_json::Error>(())
//! ```

#![deny(missing_docs)]

mod event;
pub mod ndjson;

pub use event::{Event, Properties, PropertyValue};
