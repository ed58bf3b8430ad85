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
//!   `strict=1`, service-account or API-secret auth ([`Credentials`]), the
//!   project's [`Region`] or any base URL, and a per-record
//!   [`ImportResult`]. Failures follow Mixpanel's guidance: 429 and 5xx are
//!   retried with capped exponential backoff and full jitter
//!   ([`RetryParams`]), honouring `Retry-After`; 413 splits the batch;
//!   401/403 are [`Error::Auth`] and never retried.
//! - [`Client::engage`]: user profile updates ([`ProfileUpdate`]:
//!   `$set`, `$set_once`, `$add`, `$union`, `$append`, `$remove`, `$unset`,
//!   `$delete`) through `/engage`, authenticated by the project token, in
//!   requests of at most 2000 updates, with the answer's body checked
//!   (Mixpanel answers 200 to some failures).
//! - [`Client::list_cohorts`] and [`Client::cohort_members`]: the Query API
//!   for cohorts, members streamed page by page. Queries keep to
//!   [`QueryLimits`] (Mixpanel's 5 concurrent and 60 per hour per project),
//!   shared by all clones of the client.
//!
//! Secrets ([`Secret`]) never appear in `Debug` output, errors or logs.
//!
//! # Example
//!
//! ```no_run
//! use mixpanel_client::{Batcher, BatchLimits, Client, Credentials, Event, PropertyValue, Region};
//!
//! # async fn run() -> Result<(), mixpanel_client::Error> {
//! let client = Client::builder(Credentials::service_account("svc.user", "secret", "12345"))
//!     .region(Region::Eu)
//!     .build()?;
//!
//! let mut event = Event::new("Email Click");
//! event.properties.insert("distinct_id", PropertyValue::from("cust-1042"));
//! event.properties.insert("time", PropertyValue::Integer(1732792800));
//! event.properties.insert("$insert_id", PropertyValue::from("5b3f2c1e"));
//!
//! let mut batcher = Batcher::new(BatchLimits::default());
//! let mut batches = Vec::new();
//! batches.extend(batcher.push_event(&event)?);
//! batches.extend(batcher.flush());
//! for batch in &batches {
//!     let result = client.import(batch).await?;
//!     for failed in &result.failed {
//!         eprintln!("record {} refused: {}", failed.index, failed.message);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Profiles (`/engage`)
//!
//! ```no_run
//! use mixpanel_client::{Client, Credentials, ProfileOperation, ProfileUpdate};
//! use serde_json::{Map, Value, json};
//!
//! fn properties(value: Value) -> Map<String, Value> {
//!     value.as_object().cloned().unwrap_or_default()
//! }
//!
//! # async fn run() -> Result<(), mixpanel_client::Error> {
//! let client = Client::builder(Credentials::service_account("svc.user", "secret", "12345"))
//!     .project_token("0123456789abcdef0123456789abcdef")
//!     .build()?;
//!
//! let plan = properties(json!({"plan": "pro", "$email": "ada@example.com"}));
//! let mut set = ProfileUpdate::new("cust-1042", ProfileOperation::Set(plan));
//! set.ignore_time = true; // a sync, not user activity: keep $last_seen
//! let coins = properties(json!({"coins": 13}));
//! let add = ProfileUpdate::new("cust-1042", ProfileOperation::Add(coins));
//! let unset = ProfileUpdate::new("cust-7", ProfileOperation::Unset(vec!["trial_ends".to_owned()]));
//!
//! let result = client.engage(&[set, add, unset]).await?;
//! for failed in &result.failed {
//!     eprintln!("update {} refused: {}", failed.index, failed.message);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Cohorts (Query API)
//!
//! ```no_run
//! use futures_util::TryStreamExt as _;
//! use mixpanel_client::{Client, Credentials, MemberQuery, Region};
//!
//! # async fn run() -> Result<(), mixpanel_client::Error> {
//! let client = Client::builder(Credentials::service_account("svc.user", "secret", "12345"))
//!     .region(Region::Eu)
//!     .build()?;
//!
//! for cohort in client.list_cohorts().await? {
//!     println!("{} {} ({:?} members)", cohort.id, cohort.name, cohort.count);
//! }
//!
//! let query = MemberQuery::new()
//!     .include_all_users(false)
//!     .output_properties(["$email"]);
//! let mut members = std::pin::pin!(client.cohort_members(1000, query));
//! while let Some(member) = members.try_next().await? {
//!     println!("{} {:?}", member.distinct_id, member.properties.get("$email"));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Building an event without the network:
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

mod batch;
mod client;
mod config;
mod engage;
mod error;
mod event;
mod import;
mod limiter;
pub mod ndjson;
pub mod pipeline;
mod query;
pub mod reader;
mod retry;
mod transport;

pub use batch::{BatchLimits, Batcher, ImportBatch};
pub use client::{Client, ClientBuilder};
pub use config::{Credentials, Region, Secret, UnknownRegion};
pub use engage::{EngageResult, FailedUpdate, ProfileOperation, ProfileUpdate};
pub use error::Error;
pub use event::{Event, Properties, PropertyValue};
pub use import::{FailedRecord, ImportResult};
pub use limiter::QueryLimits;
pub use query::{Cohort, CohortMember, MemberQuery};
pub use retry::RetryParams;

/// The parsers of Mixpanel's answers, for the fuzz targets in `fuzz/`; not
/// a stable API.
#[cfg(feature = "fuzzing")]
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
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
