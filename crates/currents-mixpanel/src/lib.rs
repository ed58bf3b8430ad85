//! Braze Currents events to Mixpanel events, exactly as Braze's own Mixpanel
//! export maps them.
//!
//! - [`Mapper`]: one Currents event ([`currents_model::Event`]) becomes one
//!   [`mixpanel_client::Event`], or an [`Outcome`] that says why not: every
//!   event gets exactly one of `Mapped`, `Skipped` ([`SkipReason`]) or
//!   `Invalid`.
//! - [`MappingConfig`]: the project token and the [`TypeFilter`] of event
//!   types to export.
//! - [`OutcomeCounts`]: outcomes counted by reason.
//! - [`transform`]: a whole input (batch envelopes, NDJSON or a JSON array)
//!   to Mixpanel NDJSON, with each skipped or invalid event written to a
//!   rejects stream with its reason; [`transform::transform_parallel`] does
//!   the same on several threads, with the same output byte for byte.
//! - [`pipeline`]: the small parallel pipeline on std threads behind it
//!   (units read and results written on the calling thread, in order or as
//!   they come, with bounded memory), for other batch jobs too.
//!
//! The crate does no I/O of its own and needs no async runtime (its threads
//! are std's): it depends on `currents-model` and on `mixpanel-client`
//! without its network feature.
//!
//! # Example
//!
//! ```
//! use currents_mixpanel::{Mapper, MappingConfig, Outcome};
//! use currents_model::Batch;
//!
//! let body = r#"{"events":[{"event_type":"users.messages.email.Click",
//!   "id":"5b3f2c1e-8a4d-4e2b-9c1a-0f6e7d8c9b0a","time":1732792800,
//!   "user":{"user_id":"65f1c0ffee","external_user_id":"cust-1042"},
//!   "properties":{"campaign_name":"Winter sale"}}]}"#;
//! let mapper = Mapper::new(MappingConfig::default());
//! let parsed = Batch::parse_events(body)?.remove(0);
//! let Outcome::Mapped(event) = mapper.map_parsed(parsed.event) else {
//!     panic!("a click by a known user is exported");
//! };
//! assert_eq!(event.name, "Email Click");
//! assert_eq!(event.properties.get_str("distinct_id"), Some("cust-1042"));
//! assert_eq!(event.properties.get_str("campaign_name"), Some("Winter sale"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The rules, and each choice made where Braze's documentation is silent,
//! are in the workspace's `docs/mapping.md`.

#![deny(missing_docs)]

mod mapping;
pub mod pipeline;
pub mod transform;

pub use mapping::{Mapper, MappingConfig, Outcome, OutcomeCounts, SkipReason, TypeFilter};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
