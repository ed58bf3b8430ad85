//! The Braze Currents → Mixpanel bridge service: configuration, the HTTP
//! listener and ingest of Currents batches, the durable spool, delivery to
//! Mixpanel through the mapping of `currents-mixpanel`, the cohort webhook
//! and sync, and the operations endpoints. `serve` wires them together.

pub mod backfill;
pub mod body_budget;
pub mod clock;
pub mod cohorts;
pub mod config;
pub mod delivery;
#[cfg(test)]
mod deploy_assets;
pub mod ingest;
pub mod listener;
mod log_limit;
pub mod metrics;
pub mod nats;
pub mod ops;
mod private_files;
pub mod serve;
pub mod spool;
#[cfg(test)]
mod test_logs;
pub mod tls;
