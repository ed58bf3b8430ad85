//! The cohort state's store, whichever backend the configuration chose:
//! [`AnyStore`], SQLite at `<data_dir>/cohorts/cohorts.db` (one process)
//! or NATS JetStream key-value buckets that every `serve` replica shares
//! (`spool.backend = "nats"`). One type for the webhook, the writer, the
//! pull, `/status` and the commands, so that none of them is written twice.

use std::path::Path;

use cohort_import::braze::BrazeUser;
use cohort_import::store::nats::NatsStore;
use cohort_import::store::sqlite::SqliteStore;
use cohort_import::store::{
    CohortDeadLetter, CohortKey, CohortStatus, DeadLetterSelection, MembershipPage,
    MembershipStore, PageOutcome, PendingChange, RefusedChange, StoreError, UnmatchedMember,
};

use super::{CohortSetupError, store_path};
use crate::config::{Config, SpoolBackend};

/// The embedded SQLite store or the NATS one. Cloning is cheap and shares
/// the store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// `spool.backend = "sqlite"`: `<data_dir>/cohorts/cohorts.db`.
    Sqlite(SqliteStore),
    /// `spool.backend = "nats"`: the `<nats.kv_bucket_prefix>-*` buckets.
    Nats(NatsStore),
}

/// Runs the same call on whichever store it is.
macro_rules! delegate {
    ($self:expr, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call,
            AnyStore::Nats($store) => $call,
        }
    };
}

impl AnyStore {
    /// Opens the store the configuration chose: the SQLite file in the data
    /// dir, or the NATS buckets (created if missing) through `nats`, a
    /// connected client to share (`serve` passes its spool's), else a
    /// connection of its own.
    pub async fn open(
        config: &Config,
        nats: Option<async_nats::Client>,
    ) -> Result<AnyStore, CohortSetupError> {
        match &config.spool.backend {
            SpoolBackend::Sqlite => {
                let path = store_path(&config.data_dir);
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                    .await
                    .map_err(|error| StoreError::Storage(error.to_string()))??;
                Ok(AnyStore::Sqlite(store))
            }
            SpoolBackend::Nats(options) => {
                let client = match nats {
                    Some(client) => client,
                    None => crate::nats::connect(options).await?,
                };
                let jetstream = async_nats::jetstream::ContextBuilder::new()
                    .timeout(options.connect_timeout)
                    .build(client);
                let store =
                    NatsStore::open(jetstream, &options.kv_bucket_prefix, options.replicas).await?;
                Ok(AnyStore::Nats(store))
            }
        }
    }

    /// `sqlite` or `nats`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "sqlite",
            AnyStore::Nats(_) => "nats",
        }
    }

    /// The SQLite file, when it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            AnyStore::Sqlite(store) => Some(store.path()),
            AnyStore::Nats(_) => None,
        }
    }

    /// Whether other processes (replicas) share the store, so that the
    /// writer must never take the lease over from a live one.
    pub fn is_shared(&self) -> bool {
        matches!(self, AnyStore::Nats(_))
    }

    /// Finishes the cohort changes a replica left half-applied (NATS; see
    /// `NatsStore::recover`); returns how many. SQLite has none: its
    /// transactions roll back.
    pub async fn recover(&self) -> Result<u64, StoreError> {
        match self {
            AnyStore::Sqlite(_) => Ok(0),
            AnyStore::Nats(store) => store.recover().await,
        }
    }

    /// Every member of a cohort, in id order (for audits and tests).
    pub async fn members(&self, cohort: &CohortKey) -> Result<Vec<BrazeUser>, StoreError> {
        match self {
            AnyStore::Sqlite(store) => {
                let (store, cohort) = (store.clone(), cohort.clone());
                blocking(move || store.members(&cohort)).await
            }
            AnyStore::Nats(store) => store.members(cohort).await,
        }
    }

    /// Dead letters matching `selection`, oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        selection: &DeadLetterSelection,
        limit: usize,
    ) -> Result<Vec<CohortDeadLetter>, StoreError> {
        match self {
            AnyStore::Sqlite(store) => {
                let (store, selection) = (store.clone(), selection.clone());
                blocking(move || store.dead_letters(&selection, limit)).await
            }
            AnyStore::Nats(store) => store.dead_letters(selection, limit).await,
        }
    }

    /// Puts matching dead letters back into the journal (the cohort's
    /// current state for each user) and deletes them; returns how many.
    pub async fn replay_dead_letters(
        &self,
        selection: &DeadLetterSelection,
    ) -> Result<u64, StoreError> {
        match self {
            AnyStore::Sqlite(store) => {
                let (store, selection) = (store.clone(), selection.clone());
                blocking(move || store.replay_dead_letters(&selection)).await
            }
            AnyStore::Nats(store) => store.replay_dead_letters(selection).await,
        }
    }

    /// Deletes matching dead letters for good; returns how many.
    pub async fn purge_dead_letters(
        &self,
        selection: &DeadLetterSelection,
    ) -> Result<u64, StoreError> {
        match self {
            AnyStore::Sqlite(store) => {
                let (store, selection) = (store.clone(), selection.clone());
                blocking(move || store.purge_dead_letters(&selection)).await
            }
            AnyStore::Nats(store) => store.purge_dead_letters(selection).await,
        }
    }
}

/// Runs one of SQLite's synchronous calls on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Storage(format!("store task failed: {error}")))?
}

impl MembershipStore for AnyStore {
    async fn apply_page(&self, page: MembershipPage) -> Result<PageOutcome, StoreError> {
        delegate!(self, store => store.apply_page(page).await)
    }

    async fn finish_snapshot(
        &self,
        cohort: &CohortKey,
        session_id: &str,
    ) -> Result<PageOutcome, StoreError> {
        delegate!(self, store => store.finish_snapshot(cohort, session_id).await)
    }

    async fn due_changes(&self, max: usize) -> Result<Vec<PendingChange>, StoreError> {
        delegate!(self, store => store.due_changes(max).await)
    }

    async fn confirm(&self, changes: &[PendingChange]) -> Result<(), StoreError> {
        delegate!(self, store => store.confirm(changes).await)
    }

    async fn defer(&self, changes: &[PendingChange], retry_at_ms: i64) -> Result<(), StoreError> {
        delegate!(self, store => store.defer(changes, retry_at_ms).await)
    }

    async fn hold_writer_lease(
        &self,
        owner: &str,
        lease: std::time::Duration,
        take_over: bool,
    ) -> Result<bool, StoreError> {
        delegate!(self, store => store.hold_writer_lease(owner, lease, take_over).await)
    }

    async fn hold_pull_lease(
        &self,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        delegate!(self, store => store.hold_pull_lease(owner, lease).await)
    }

    async fn dead_letter(&self, refused: Vec<RefusedChange>) -> Result<(), StoreError> {
        delegate!(self, store => store.dead_letter(refused).await)
    }

    async fn record_error(
        &self,
        cohort: &CohortKey,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        delegate!(self, store => store.record_error(cohort, error).await)
    }

    async fn record_braze_name(&self, cohort: &CohortKey, name: &str) -> Result<(), StoreError> {
        delegate!(self, store => store.record_braze_name(cohort, name).await)
    }

    async fn cohorts(&self) -> Result<Vec<CohortStatus>, StoreError> {
        delegate!(self, store => store.cohorts().await)
    }

    async fn unmatched(
        &self,
        cohort: &CohortKey,
        max: usize,
    ) -> Result<Vec<UnmatchedMember>, StoreError> {
        delegate!(self, store => store.unmatched(cohort, max).await)
    }
}
