//! The spool `serve` runs on, whichever backend the configuration chose:
//! one type for ingest, delivery and the operations endpoints, so that
//! none of them is written twice.

use std::time::Duration;

use super::nats::{NatsConsumerStats, NatsSpool};
use super::sqlite::SqliteSpool;
use super::{
    BatchId, DeadLetter, LeaseLimits, LeasedBatch, NewBatch, Spool, SpoolError, SpoolStats,
};

/// The embedded SQLite spool or the NATS JetStream one.
pub enum AnySpool {
    /// `spool.backend = "sqlite"`.
    Sqlite(SqliteSpool),
    /// `spool.backend = "nats"`.
    Nats(NatsSpool),
}

impl AnySpool {
    /// The storage's failure for good, after which the service must stop
    /// (SQLite only: a NATS connection that drops is retried by its client).
    pub fn failure(&self) -> Option<SpoolError> {
        match self {
            AnySpool::Sqlite(spool) => spool.failure(),
            AnySpool::Nats(_) => None,
        }
    }

    /// Whether the spool can take batches now: for NATS, whether the client
    /// is connected (`/readyz`).
    pub fn is_connected(&self) -> bool {
        match self {
            AnySpool::Sqlite(spool) => spool.failure().is_none(),
            AnySpool::Nats(spool) => spool.is_connected(),
        }
    }

    /// `sqlite` or `nats`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            AnySpool::Sqlite(_) => "sqlite",
            AnySpool::Nats(_) => "nats",
        }
    }

    /// Closes the spool: SQLite checkpoints its WAL; NATS gives the leases
    /// still held back, so that another replica takes them at once.
    pub async fn close(&self) -> Result<(), SpoolError> {
        match self {
            AnySpool::Sqlite(spool) => spool.close().await,
            AnySpool::Nats(spool) => spool.close().await,
        }
    }
}

impl Spool for AnySpool {
    async fn append(&self, batch: NewBatch) -> Result<BatchId, SpoolError> {
        match self {
            AnySpool::Sqlite(spool) => spool.append(batch).await,
            AnySpool::Nats(spool) => spool.append(batch).await,
        }
    }

    async fn lease_within(
        &self,
        limits: LeaseLimits,
        lease: Duration,
    ) -> Result<Vec<LeasedBatch>, SpoolError> {
        match self {
            AnySpool::Sqlite(spool) => spool.lease_within(limits, lease).await,
            AnySpool::Nats(spool) => spool.lease_within(limits, lease).await,
        }
    }

    async fn settle(&self, id: BatchId, dead_letters: Vec<DeadLetter>) -> Result<(), SpoolError> {
        match self {
            AnySpool::Sqlite(spool) => spool.settle(id, dead_letters).await,
            AnySpool::Nats(spool) => spool.settle(id, dead_letters).await,
        }
    }

    async fn release(&self, id: BatchId, retry_in: Duration) -> Result<(), SpoolError> {
        match self {
            AnySpool::Sqlite(spool) => spool.release(id, retry_in).await,
            AnySpool::Nats(spool) => spool.release(id, retry_in).await,
        }
    }

    async fn stats(&self) -> Result<SpoolStats, SpoolError> {
        match self {
            AnySpool::Sqlite(spool) => spool.stats().await,
            AnySpool::Nats(spool) => spool.stats().await,
        }
    }

    async fn consumer_stats(&self) -> Option<Result<NatsConsumerStats, SpoolError>> {
        match self {
            AnySpool::Sqlite(_) => None,
            AnySpool::Nats(spool) => Some(spool.consumer_stats().await),
        }
    }
}
