//! A cohort's lock (`lock.<cohort>` in the cohorts bucket): one writer of a
//! cohort's membership at a time, across replicas, without trusting any
//! clock but each replica's own monotonic one.
//!
//! Taking it is a compare-and-set of `{owner, held: true}` over a free lock
//! (or none). The holder renews it (another compare-and-set, which changes
//! its revision) every quarter lease, and stops writing (`check` fails)
//! once half a lease has passed since it *sent* its last renewal that
//! succeeded. A replica that finds it held watches its revision: only when
//! the revision has not changed for a whole lease, on the watcher's own
//! clock, does it take the lock over (compare-and-set on that revision).
//! The holder's last renewal was written before the watcher first saw it,
//! so the holder stopped writing at least half a lease before the takeover:
//! two replicas never write one cohort at once, whatever their clocks say,
//! as long as a write reaches the server within half a lease of being sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::bucket::Bucket;
use super::model::{LockValue, decode, encode, lock_key};
use crate::store::StoreError;

/// A held lock.
pub(super) struct CohortLock {
    bucket: Bucket,
    key: String,
    owner: String,
    revision: Arc<AtomicU64>,
    /// When the holder must stop writing.
    deadline: Arc<Mutex<Instant>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl CohortLock {
    /// Takes the lock of `cohort` (a token) as `owner`, waiting for it at
    /// most `wait`.
    pub(super) async fn acquire(
        bucket: &Bucket,
        cohort: &str,
        owner: String,
        lease: Duration,
        wait: Duration,
    ) -> Result<CohortLock, StoreError> {
        let key = lock_key(cohort);
        let started = Instant::now();
        let mine = encode(&LockValue {
            owner: owner.clone(),
            held: true,
        })?;
        // The holder's revision, and since when this replica has seen it.
        let mut watched: Option<(u64, Instant)> = None;
        let mut pause = Duration::from_millis(5);
        loop {
            let slot = bucket.read(&key).await?;
            let lock: Option<LockValue> = decode("cohort lock", slot.value.as_ref())?;
            let free = lock.as_ref().is_none_or(|lock| !lock.held);
            let stale = match watched {
                Some((revision, since)) if revision == slot.revision => since.elapsed() >= lease,
                _ => {
                    watched = Some((slot.revision, Instant::now()));
                    false
                }
            };
            if free || stale {
                let sent = Instant::now();
                if let Some(revision) = bucket.cas(&key, mine.clone(), slot.revision).await? {
                    if stale {
                        tracing::warn!(
                            lock = %key,
                            previous = lock.map(|lock| lock.owner).unwrap_or_default(),
                            "Took over a cohort's lock whose holder stopped renewing it (a replica died?); finishing its work."
                        );
                    }
                    return Ok(CohortLock::held(bucket, key, owner, revision, sent, lease));
                }
                continue;
            }
            if started.elapsed() >= wait {
                return Err(StoreError::Storage(format!(
                    "cohort {cohort} is busy: another replica has held its lock for {} s",
                    wait.as_secs()
                )));
            }
            let jitter = Duration::from_micros(rand::random::<u64>() % 5_000);
            tokio::time::sleep(pause + jitter).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn held(
        bucket: &Bucket,
        key: String,
        owner: String,
        revision: u64,
        sent: Instant,
        lease: Duration,
    ) -> CohortLock {
        let revision = Arc::new(AtomicU64::new(revision));
        let deadline = Arc::new(Mutex::new(sent + lease / 2));
        let heartbeat = tokio::spawn(renew(
            bucket.clone(),
            key.clone(),
            owner.clone(),
            Arc::clone(&revision),
            Arc::clone(&deadline),
            lease,
        ));
        CohortLock {
            bucket: bucket.clone(),
            key,
            owner,
            revision,
            deadline,
            heartbeat: Some(heartbeat),
        }
    }

    /// Fails once this holder may no longer write.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        let deadline = *self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
        if Instant::now() < deadline {
            Ok(())
        } else {
            Err(StoreError::Storage(format!(
                "lost the cohort lock {} (its renewals failed); another replica finishes the work",
                self.key
            )))
        }
    }

    async fn stop_renewing(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
            let _ = heartbeat.await;
        }
    }

    /// Frees the lock (if it is still this holder's).
    pub(super) async fn release(mut self) {
        self.stop_renewing().await;
        let free = LockValue {
            owner: self.owner.clone(),
            held: false,
        };
        let Ok(free) = encode(&free) else { return };
        let revision = self.revision.load(Ordering::SeqCst);
        match self.bucket.cas(&self.key, free, revision).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(lock = %self.key, "A cohort's lock was taken over before it was released.");
            }
            Err(error) => {
                tracing::warn!(lock = %self.key, error = %error, "Cannot free a cohort's lock; it frees itself after its lease.");
            }
        }
    }

    /// Stops renewing without freeing: what a replica that dies leaves
    /// (tests simulate crashes with it).
    #[cfg(test)]
    pub(super) async fn abandon(mut self) {
        self.stop_renewing().await;
    }
}

impl Drop for CohortLock {
    fn drop(&mut self) {
        // A holder dropped without release (its task cancelled): stop
        // renewing, and the lock frees itself after its lease.
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
    }
}

/// Renews the lock every quarter lease until aborted or refused.
async fn renew(
    bucket: Bucket,
    key: String,
    owner: String,
    revision: Arc<AtomicU64>,
    deadline: Arc<Mutex<Instant>>,
    lease: Duration,
) {
    let Ok(mine) = encode(&LockValue { owner, held: true }) else {
        return;
    };
    loop {
        tokio::time::sleep(lease / 4).await;
        let sent = Instant::now();
        let current = revision.load(Ordering::SeqCst);
        match bucket.cas(&key, mine.clone(), current).await {
            Ok(Some(renewed)) => {
                revision.store(renewed, Ordering::SeqCst);
                *deadline.lock().unwrap_or_else(PoisonError::into_inner) = sent + lease / 2;
            }
            Ok(None) => {
                tracing::warn!(lock = %key, "A cohort's lock was taken over while held; stopping its work.");
                *deadline.lock().unwrap_or_else(PoisonError::into_inner) = sent;
                return;
            }
            Err(error) => {
                // Tried again next time; the deadline stands meanwhile.
                tracing::warn!(lock = %key, error = %error, "Cannot renew a cohort's lock.");
            }
        }
    }
}
