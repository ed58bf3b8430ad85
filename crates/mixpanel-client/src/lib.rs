//! A Mixpanel client for the ingestion and cohort APIs.
//!
//! - [`Event`]: one event as `/import` takes it,
//!   `{"event": <name>, "properties": {...}}`. It borrows where it can, so an
//!   event built from other JSON is serialized without copying its property
//!   values, and its [`Properties`] never hold a key twice. A serialized
//!   event is always one line ([`ndjson`]).
//! - [`Batcher`] and [`ImportBatch`]: events packed into request bodies
//!   within Mixpanel's limits ([`BatchLimits`]: 2000 events, 10 MB, 1 MB per
//!   event), in order, none split or dropped.
//! - [`Client`]: sends batches to `/import` ([`Client::import`]) with gzip,
//!   `strict=1`, service-account or API-secret auth ([`Credentials`]; the
//!   `project_id` whenever the credentials carry one), the project's
//!   [`Region`] or any base URL, and a per-record [`ImportResult`].
//!   Failures follow Mixpanel's guidance: 429 and 5xx are retried with
//!   capped exponential backoff and full jitter ([`RetryParams`]),
//!   honouring `Retry-After`; 413 splits the batch; 401/403 are
//!   [`Error::Auth`] and never retried.
//! - [`Client::engage`]: user profile updates ([`ProfileUpdate`]:
//!   `$set`, `$set_once`, `$add`, `$union`, `$append`, `$remove`, `$unset`,
//!   `$delete`) through `/engage`, authenticated by the project token, in
//!   requests of at most 2000 updates with `strict=1`, and a per-update
//!   [`EngageResult`]: the updates Mixpanel refused, with its message, and
//!   those refused before sending because Mixpanel's OpenAPI spec refuses
//!   them (an `$add` of a non-number, a `$union` of nothing or of anything
//!   but non-empty lists of numbers and strings, an `$unset` of nothing),
//!   each named by index, `distinct_id` and operation. A 401/403 is
//!   [`Error::TokenRefused`]: the project token is all `/engage` takes.
//! - [`Client::list_cohorts`] and [`Client::cohort_members`]: the Query API
//!   for cohorts, members streamed page by page (a page shorter than the
//!   page size, 1000 unless Mixpanel says otherwise, is the last). Queries
//!   keep to [`QueryLimits`] (Mixpanel's 5 concurrent and 60 per hour per
//!   project), shared by all clones of the client.
//!
//! The requests are checked against Mixpanel's own OpenAPI documents by
//! the crate's contract test (`tests/contract/`, with the specs in
//! `tests/openapi/`).
//!
//! Secrets ([`Secret`]) never appear in `Debug` output, errors or logs.
//!
//! # Features
//!
//! - `network` (default): [`Client`] and everything that talks to Mixpanel,
//!   on tokio, reqwest (rustls) and tower. Without it
//!   (`default-features = false`) the crate is its plain data part only:
//!   [`Event`], [`Batcher`], [`ndjson`], [`reader`], [`Credentials`] and
//!   [`Region`], with serde and serde_json as its only real dependencies, for
//!   programs that build or check events and send them their own way.
//!
//! # Example: an event, without the network
//!
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

#![cfg_attr(feature = "network", doc = include_str!("doc_network.md"))]
#![deny(missing_docs)]

// Plain data: no runtime, no HTTP.
mod batch;
mod config;
mod error;
mod event;
pub mod ndjson;
pub mod reader;

// The network client (feature `network`, on by default).
#[cfg(feature = "network")]
mod client;
#[cfg(feature = "network")]
mod engage;
#[cfg(feature = "network")]
mod import;
#[cfg(feature = "network")]
mod limiter;
#[cfg(feature = "network")]
pub mod pipeline;
#[cfg(feature = "network")]
mod query;
#[cfg(feature = "network")]
mod retry;
#[cfg(feature = "network")]
mod strict;
#[cfg(feature = "network")]
mod transport;

pub use batch::{BatchLimits, Batcher, ImportBatch};
pub use config::{
    CredentialPart, CredentialParts, Credentials, IncompleteCredentials, Region, Secret,
    UnknownRegion,
};
pub use error::Error;
pub use event::{Event, Properties, PropertyValue};

#[cfg(feature = "network")]
pub use client::{Client, ClientBuilder};
#[cfg(feature = "network")]
pub use engage::{EngageResult, FailedUpdate, ProfileOperation, ProfileUpdate};
#[cfg(feature = "network")]
pub use import::{FailedRecord, ImportResult};
#[cfg(feature = "network")]
pub use limiter::QueryLimits;
#[cfg(feature = "network")]
pub use query::{Cohort, CohortMember, MemberQuery};
#[cfg(feature = "network")]
pub use retry::RetryParams;

/// The parsers of Mixpanel's answers, for the fuzz targets in `fuzz/`; not
/// a stable API.
#[cfg(all(feature = "fuzzing", feature = "network"))]
#[doc(hidden)]
pub mod fuzzing {
    /// A 400's body from `/import` read as a partial success of a request of
    /// `n_records`: `Some((n_imported, refused indexes))`, or `None` when the
    /// request must be split instead.
    pub fn read_import_refusal(body: &[u8], n_records: usize) -> Option<(usize, Vec<usize>)> {
        crate::import::read_partial_refusal(body, n_records).map(|refusal| {
            let indexes = refusal.failed.iter().map(|record| record.index).collect();
            (refusal.n_imported, indexes)
        })
    }

    /// The message kept from an answer's body for errors and dead letters.
    pub fn answer_message(body: &[u8]) -> String {
        crate::transport::message_of(body)
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "network"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
