//! Mixpanel cohorts into Braze.
//!
//! Mixpanel's cohort membership reaches this crate two ways, and both feed
//! one durable state:
//! - **Push**: Mixpanel's cohort sync to a custom webhook. [`webhook`] reads
//!   and answers each page (`members`, `add_members`, `remove_members`),
//!   checks Basic credentials in constant time, and records the page before
//!   it answers `success`.
//! - **Pull**: [`pull`] reads a cohort through `mixpanel-client`'s Query API,
//!   streaming its members, and diffs it against the stored membership.
//!
//! [`identity`] turns each Mixpanel member into a Braze user (by
//! `distinct_id`, a profile property, or the email address), or into a
//! counted reason why it cannot be sent. [`store`] keeps, per (Mixpanel
//! project, cohort), the members and a journal of the changes Braze has not
//! yet confirmed ([`store::MembershipStore`], with SQLite as
//! [`store::sqlite::SqliteStore`], or NATS JetStream key-value buckets
//! shared by several processes as `store::nats::NatsStore`, feature
//! `nats`). [`writer`] drains that journal to Braze
//! through [`braze::BrazeClient`]: as an array custom attribute through
//! `/users/track` (any REST API key), or through Braze's partner cohort API.
//! A change leaves the journal only after Braze answered for it, so a crash
//! resends and never skips.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use cohort_import::braze::{BrazeClient, Instance};
//! use cohort_import::identity::IdentityRule;
//! use cohort_import::store::sqlite::SqliteStore;
//! use cohort_import::webhook::{WebhookConfig, WebhookReceiver};
//! use cohort_import::writer::{Destination, Writer, WriterConfig};
//! use mixpanel_client::Secret;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(SqliteStore::open("cohorts.db".as_ref())?);
//! let receiver = WebhookReceiver::new(
//!     Arc::clone(&store),
//!     WebhookConfig::new(IdentityRule::DistinctId).credentials(["mixpanel:s3cret"]),
//! );
//! // For each POST from Mixpanel: body bytes and the Authorization header.
//! let answer = receiver
//!     .receive(Some("Basic bWl4cGFuZWw6czNjcmV0"), br#"{"action":"add_members","parameters":{"mixpanel_project_id":"1","mixpanel_cohort_id":"7","mixpanel_cohort_name":"Power users","mixpanel_session_id":"s1","page_info":{"total_pages":1,"page_count":1},"members":[{"mixpanel_distinct_id":"u1"}]}}"#)
//!     .await;
//! assert_eq!(answer.status, 200);
//!
//! // Meanwhile, a writer sends the journal to Braze.
//! let client = BrazeClient::builder(Secret::new("rest-api-key")).instance(Instance::Us03).build()?;
//! let writer = Writer::new(store, Destination::attribute(client, "mixpanel_cohorts"), WriterConfig::default());
//! writer.drain_once().await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod braze;
pub mod identity;
pub mod pull;
pub mod stats;
pub mod store;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod webhook;
pub mod writer;

mod clock;
