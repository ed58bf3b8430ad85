//! The Braze Currents → Mixpanel bridge service.
//!
//! Today it holds the mapping from Currents events to Mixpanel events
//! ([`mapping`]) and the batch transformation behind the
//! `braze-mixpanel-bridge transform` command ([`transform`]).

pub mod body_budget;
pub mod cohorts;
pub mod config;
pub mod delivery;
#[cfg(test)]
mod deploy_assets;
pub mod ingest;
pub mod listener;
mod log_limit;
pub mod mapping;
pub mod metrics;
pub mod ops;
mod private_files;
pub mod serve;
pub mod spool;
#[cfg(test)]
mod test_logs;
pub mod tls;
pub mod transform;
