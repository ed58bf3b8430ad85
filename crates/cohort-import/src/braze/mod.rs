//! A Braze REST client for what the bridge writes: array custom attributes
//! through `/users/track`, and cohorts through Braze's partner cohort API.
//!
//! It follows `mixpanel-client`'s design: one tower stack around reqwest
//! (rustls), retry outermost, with capped exponential backoff and full
//! jitter ([`RetryParams`](mixpanel_client::RetryParams)) and a retry budget shared by all clones; secrets
//! are [`Secret`](mixpanel_client::Secret)s that never print.
//!
//! - [`BrazeClient::track_attributes`]: at most [`MAX_TRACK_OBJECTS`]
//!   attribute objects per request, each adding and removing values of one
//!   array attribute of one existing user ([`AttributeUpdate`]). Braze's
//!   per-object refusals come back in [`TrackOutcome::refused`].
//! - [`BrazeClient::partner_upsert_cohort`] and
//!   [`BrazeClient::partner_cohort_changes`]: the partner cohort API, for
//!   holders of a partner key ([`PartnerCredentials`]); at most
//!   [`MAX_PARTNER_IDS`] user ids per call.
//!
//! # Failures
//!
//! 401/403 are [`BrazeError::Auth`] and never retried; other 4xx (400 for
//! the whole request, 404, 415) are [`BrazeError::Rejected`]. 423, 429, 5xx,
//! timeouts and connection errors are retried inside the transport (both
//! APIs are idempotent for our use: adding or removing the same values
//! twice changes nothing), then end as [`BrazeError::Unavailable`] or
//! [`BrazeError::Transport`]. Secrets never appear in errors or logs: when
//! Braze echoes a request body in an error, the partner key and client
//! secret are cut out of the message before it is shortened.
//!
//! # Rate limits
//!
//! Braze limits `/users/track` to 3000 requests per 3 seconds per workspace
//! ([`RateLimit::default`]). The client never starts more than
//! [`RateLimit::max_requests`] requests within any rolling window, across
//! all clones. Each attempt counts, retries included: the limiter sits
//! inside the retry layer. To absorb jitter between our clock and Braze's,
//! the window is counted 100 ms longer than configured (3.1 s by default).
//! Braze's own signals are honoured too, for every request of the client:
//! after a 429 nothing is sent before `X-Ratelimit-Retry-After` (or
//! `Retry-After`) seconds have passed, and after a response with
//! `X-RateLimit-Remaining: 0` nothing is sent before `X-RateLimit-Reset`
//! (UNIX seconds when over 1 000 000 000, else seconds from now). Both
//! pauses are capped at an hour.
//!
//! # Timing
//!
//! Retry `n` (from 1) waits a random delay in
//! `[0, min(max_delay, initial_delay * 2^(n-1))]`, or the pause Braze asked
//! for when that is longer; nothing sleeps after the last attempt. The
//! timeout of an attempt starts when the request is sent, after the rate
//! limiter let it go. The worst case of one call is therefore about
//! `(max_retries + 1) * request_timeout + max_retries * max_delay`, plus any
//! pause Braze asked for and the time spent waiting for the rate limiter.
//! With the defaults (5 retries, 30 s per attempt, 60 s `max_delay`) that
//! is 6 × 30 s + 5 × 60 s = 8 minutes plus pauses: whatever leases work
//! around a call must lease for longer.

mod client;
mod error;
mod instance;
mod limiter;
mod partner;
mod track;
mod transport;

pub use client::{BrazeClient, BrazeClientBuilder};
pub use error::BrazeError;
pub use instance::{Instance, UnknownInstance};
pub use limiter::RateLimit;
pub use partner::{MAX_PARTNER_IDS, PartnerCohort, PartnerCredentials};
pub(crate) use track::track_body;
pub use track::{AttributeUpdate, BrazeUser, MAX_TRACK_OBJECTS, RefusedObject, TrackOutcome};

#[cfg(test)]
mod tests;
