//! Braze Currents storage archives: Braze's storage layout, its Avro files,
//! and listing and reading them from a local directory or an object store.
//!
//! Braze's storage connectors (Amazon S3, Google Cloud Storage, Azure Blob
//! Storage) write every Currents event to Avro object container files, one
//! event type per folder and an hour per subfolder, and keep them as long as
//! the bucket does; the Custom HTTP connector keeps nothing. This crate
//! reads such an archive back as Currents events, for a backfill or a
//! replay, and names the objects of our own archive of received batches:
//!
//! - [`layout`]: what an object key says ([`layout::KeyInfo`]: event type,
//!   hour, version, kind) and which folders a listing may skip
//!   ([`layout::Prune`]: event types and a time window);
//!   [`layout::batch_object_key`] names an archived batch. Pure.
//! - [`avro`]: [`avro::AvroEvents`] reads an Avro file with the schema it
//!   carries and yields each record as one storage-shaped event, JSON text
//!   that `currents_model::Event::parse` reads. Synchronous, on bytes.
//! - [`batches`]: [`batches::BatchFileEvents`] yields the events of archived
//!   Custom HTTP connector envelopes (`.json.gz`), as they were received.
//! - [`events`]: [`events::ObjectEvents`], either of the two by the object's
//!   kind.
//! - [`store`]: [`store::ArchiveStore`] lists (pruned), reads and writes
//!   archives in a local directory, S3, GCS or Azure, with each store's
//!   usual credentials from the environment; async (tokio).
//!
//! Events are numbered from 0 in each object and can be skipped cheaply, so
//! that a backfill resumes at (object key, record number). Damaged data
//! yields the events before the damage, then an error naming the record.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use currents_archive::events::ObjectEvents;
//! use currents_archive::layout::Prune;
//! use currents_archive::store::ArchiveStore;
//! use currents_model::Event;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // AWS_REGION and credentials from the environment, as the AWS CLI reads them.
//! let store = ArchiveStore::open("s3://my-currents-bucket/currents")?;
//! let prune = Prune::new()
//!     .event_types(Arc::new(|event_type: &str| event_type.starts_with("users.messages.email.")))
//!     .since(1_732_752_000) // 2024-11-28T00:00:00Z
//!     .until(1_732_838_400);
//! let listing = store.list(&prune).await?;
//! let mut text = String::new();
//! for object in &listing.objects {
//!     let mut events = ObjectEvents::for_object(object, store.get(object).await?)?;
//!     while events.next_into(&mut text)? {
//!         let event = Event::parse(&text)?;
//!         println!("{} {} {}", object.key, event.event_type, event.id);
//!         text.clear();
//!     }
//! }
//! eprintln!("{} objects skipped (not Avro or batches)", listing.skipped_keys.len());
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `fixtures` (off by default): the [`fixtures`] module, Avro files and
//!   archive trees built from Braze's field tables, for tests of this crate
//!   and of crates that use it.
//!
//! Every store (S3, GCS, Azure, local directories) is always compiled in:
//! they share one HTTP client (reqwest on rustls with ring), so each costs
//! little on its own.

#![deny(missing_docs)]

pub mod avro;
pub mod batches;
mod error;
pub mod events;
#[cfg(feature = "fixtures")]
pub mod fixtures;
mod json;
pub mod layout;
pub mod store;

pub use error::{ArchiveError, StoreError};

/// The README's examples, run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
