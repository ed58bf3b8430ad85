//! The cohort state in NATS JetStream key-value buckets (feature `nats`):
//! [`NatsStore`], a [`MembershipStore`] that several replicas of the bridge
//! share, so that any of them can answer any of Mixpanel's webhook pages
//! and drain the journal, with the observable behaviour of
//! [`super::sqlite::SqliteStore`].
//!
//! Key-value buckets have no transaction over several keys. What they
//! have, and what this design stands on: a write is durable (replicated)
//! when acknowledged; a write can be conditional on the key's revision
//! (compare-and-set, `0` meaning "no value"); every write gets the next
//! sequence number of the bucket's stream (its revision), and one
//! connection's writes get them in the order they were sent; a purge of a
//! key's subject can be limited to the revisions below a bound, which is a
//! delete conditional on the revision that leaves no delete marker.
//!
//! # Buckets and keys
//!
//! Six buckets, `<prefix>-pages`, `-cohorts`, `-members`, `-journal`,
//! `-deferred` and `-dead-letters`, file storage, the configured replicas,
//! one value per key (history 1), so each bucket's stream holds exactly its
//! live keys, in the order they were last written. A key is made of tokens:
//! `<c>` stands for a cohort, `<u>` for a user, `<d>` for a `distinct_id`,
//! `<p>` for (session, action, page number), each the first 128 bits of a
//! SHA-256 in hex; values are JSON and carry the text (`model`).
//!
//! | bucket | key | value |
//! |---|---|---|
//! | pages (values expire after 7 days: the page memory) | `<c>.<p>` | a page's record: where its content is, and its outcome once applied |
//! | | `<c>.<p>.<nonce>.<n>` | the page's content (members resolved to users), in chunks of 256 KiB |
//! | cohorts | `meta.<c>` | the cohort's state: name, member count, last sync, open snapshot, snapshots by session, the next change's ordinal, and the change being applied (`applying`) |
//! | | `lock.<c>` | the cohort's lock (`lock`) |
//! | | `status.<c>` | what the writer notes: last confirmation, last error, name sent to Braze |
//! | | `writer-lease` | the writer lease: owner and expiry (wall clock) |
//! | members | `m.<c>.<u>` | a member: `distinct_id`, the snapshot that last listed it, the ordinal of the change that added it; or a tombstone (`removed`) with the ordinal of the change that removed it |
//! | | `d.<c>.<d>` | the user a `distinct_id` was, when it is not that id itself |
//! | | `u.<c>.<d>` | an unmatched member and its reason |
//! | journal | `<c>.<u>` | the one pending change of that user in that cohort; its **revision is its `seq`** |
//! | deferred | `<c>.<u>` | a deferred change's attempts and wait, for the `seq` it names |
//! | dead-letters | `<c>.<seq>` | a dead letter; its id is the refused change's `seq` |
//!
//! # Recording a page
//!
//! 1. `apply_page` writes the page's content under a nonce of its own,
//!    then creates the page's record `<c>.<p>` (compare-and-set on "no
//!    value") pointing to it. Only one delivery of a page creates its
//!    record; a delivery that finds the record there (a retry, a
//!    duplicate, on any replica) is a replay.
//! 2. It takes the cohort's lock. Under it, it first finishes any change
//!    the cohort's state says is being applied (below), then reads the
//!    page's record: if it has an outcome, the page is applied (by another
//!    delivery's replica, which applies the content *it* recorded);
//!    otherwise this replica applies it.
//! 3. Applying change number `n` (the cohort's next ordinal): write the
//!    cohort's state with `applying = {n, the page}` (compare-and-set);
//!    write the effects (below); write the outcome into the page's record
//!    (compare-and-set); write the state after the change with `applying`
//!    cleared and the ordinal advanced (compare-and-set); clean up (its
//!    tombstones, the page's content); release the lock. Only then does `apply_page`
//!    return, and the webhook answer `success`. A replay also returns only
//!    once the page is applied (taking the lock and applying it if need
//!    be, from the recorded content; from its own, stored first, if the
//!    recorded content expired before anyone applied it).
//!
//! The effects of change `n`, in this order, each step finished before the
//! next: the `distinct_id` index and unmatched entries; the journal
//! entries, in page order (so their `seq`s follow it); the members (a new
//! member carries `by = n`) and tombstones (`by = n`, with the removed
//! member's fields). A snapshot that this change completes then removes
//! the members not listed (journal first, then tombstones) and forgets the
//! unmatched ones not listed.
//!
//! **Redo.** The effects are computed from the page, the cohort's state
//! *before* the change (`applying` set changes nothing else in it) and the
//! members as read, treating a member added by `n` as absent before `n` and
//! a tombstone left by `n` as a member before `n`. A run cut short at any
//! point therefore recomputes, when run again, the same decisions and the
//! same outcome: what was written is recognised by its `by = n`, what was
//! not is written. Since a member's value is written only after its
//! journal entry, a member marked `by = n` has its change journaled. The
//! one thing a re-run may do twice is journal a change again (when the
//! crash fell between a journal entry and its member): the change is then
//! sent to Braze twice, which is harmless (at least once).
//!
//! # Why each guarantee holds
//!
//! - **Answered only after committed.** `apply_page` returns after the
//!   state after the change is written; every effect was acknowledged
//!   (replicated) before. A crash before that leaves no answer: Mixpanel
//!   retries, and the retry (or the next change of the cohort, or
//!   [`NatsStore::recover`]) finishes the change from its recorded
//!   content.
//! - **Idempotent per (cohort, session, action, page).** The record is
//!   created once (compare-and-set on "no value"); a page is applied only
//!   under the cohort's lock and only if its record has no outcome, and
//!   the outcome is written before the lock is released (or, if the
//!   holder dies first, by whoever finishes its change, since `applying`
//!   names the page). A retried page whose answer was lost finds the
//!   outcome: a replay, nothing changes.
//! - **One change at a time per cohort, across replicas.** The cohort's
//!   lock (`lock`'s doc: renewed by compare-and-set; taken over only
//!   after its revision stood still for a whole lease on the taker's own
//!   clock, while the holder stops writing after half a lease without a
//!   renewal) and, behind it, compare-and-set on the cohort's state: a
//!   holder that lost the lock cannot write the state, and stops writing
//!   effects before anyone can take over. Pages of one sync landing on
//!   several replicas at once are applied one after the other, in the
//!   order they take the lock, as SQLite applies concurrent transactions.
//! - **A snapshot removes only when complete.** Its pages are counted in
//!   the cohort's state, once each (a replayed page is not applied again);
//!   the removals are effects of the change that counts its last page (or
//!   of `finish_snapshot`), and nothing else removes. A late page of a
//!   replaced session is stale, as in SQLite.
//! - **One journal entry per (cohort, user), `seq` = revision.** A newer
//!   change overwrites the key and so gets a higher revision. `due_changes`
//!   reads the journal bucket's stream from its start: oldest first, at
//!   most `max`, skipping those deferred to later. `confirm` purges the key
//!   *up to the confirmed `seq`*: if a newer change replaced it, the newer
//!   one survives and is sent next. `defer` writes the attempts and wait
//!   to the deferred bucket, keyed like the journal and naming the `seq`,
//!   so the entry keeps its `seq` and place; a deferral for an older `seq`
//!   is ignored (the new change starts from zero attempts, as in SQLite).
//! - **Dead letters are never lost.** `dead_letter` writes the dead letter
//!   under the key `<c>.<seq>` (so writing it again is harmless), and only
//!   then purges the journal entry up to that `seq`. A crash in between
//!   leaves both: the change is read, refused and dead-lettered again,
//!   under the same key. A change replaced meanwhile is not dead-lettered
//!   (it is moot), as in SQLite.
//! - **One writer drains the journal.** `hold_writer_lease` is a
//!   compare-and-set loop over `writer-lease`: two replicas asking at once
//!   cannot both win. Its expiry is wall-clock time, as in SQLite: replicas'
//!   clocks must agree to well within the lease (120 s for the writer).
//!   The scheduled pull's lease (`pull-lease`) works the same way, so that
//!   one replica pulls per round.
//! - **Dead-letter replays** journal the cohort's current state for the
//!   user under the cohort's lock, then delete the letter: a crash in
//!   between journals it again, harmlessly.
//!
//! # Limits
//!
//! - Throughput is that of the round trips: a page of 10,000 new members
//!   is about 30,000 writes (pipelined) and 10,000 reads; completing a
//!   snapshot reads every member of the cohort.
//! - `cohorts()` counts pending changes, unmatched members and dead
//!   letters with one short-lived consumer each per cohort.
//! - A change left half-applied is finished when its cohort is next
//!   touched or by [`NatsStore::recover`]; if that happens only after its
//!   page's content expired (7 days), what it wrote stays and the next full
//!   snapshot of the cohort repairs the membership.
//! - A user listed under one `distinct_id` by two members (a property that
//!   moved) is found, when it leaves by `distinct_id` alone, through the
//!   last one indexed, where SQLite picks either.

mod apply;
mod bucket;
mod lock;
mod model;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};

use self::bucket::Bucket;
use self::model::{
    DeadLetterValue, Deferral, JournalValue, LEASE_KEY, LeaseValue, MemberValue, Meta,
    PAGE_MEMORY_MS, PULL_LEASE_KEY, StatusValue, UserRec, cohort_token, dead_letter_key, decode,
    encode, journal_key, meta_key, op_code, op_from_code, status_key,
};
use super::{
    CohortDeadLetter, CohortKey, CohortStatus, DeadLetterSelection, MembershipPage,
    MembershipStore, PageOutcome, PendingChange, RefusedChange, StoreError, UnmatchedMember,
};
use crate::braze::BrazeUser;
use crate::clock::now_ms;
use crate::identity::UnmatchedReason;

/// How long a cohort's lock lasts without renewal, by default.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(10);

/// How long a change of a cohort waits for its lock, at most.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Writes awaiting their acknowledgement at once.
const WRITE_WINDOW: usize = 512;

/// Concurrent requests of the writer's bulk operations.
const CONCURRENCY: usize = 64;

/// The buckets, by the suffix of their name.
const BUCKETS: [&str; 6] = [
    "pages",
    "cohorts",
    "members",
    "journal",
    "deferred",
    "dead-letters",
];

/// What the server has of one of the store's buckets ([`NatsStore::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketState {
    /// It exists with the settings the store needs.
    Matches,
    /// It does not exist; [`NatsStore::open`] creates it.
    Missing,
    /// It exists with another value of a setting (`replicas`, or `history`:
    /// values kept per key); [`NatsStore::open`] refuses it.
    Mismatch {
        /// The setting.
        setting: String,
        /// Its value on the server.
        found: String,
        /// The value the store needs.
        wanted: String,
    },
}

/// One bucket and what the server has of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCheck {
    /// The bucket's name (`bridge-cohorts-pages`); its stream is `KV_<name>`.
    pub name: String,
    /// Whether it matches.
    pub state: BucketState,
}

/// Refuses a prefix no bucket name can be made of, and no replica.
fn check_settings(bucket_prefix: &str, replicas: usize) -> Result<(), StoreError> {
    if bucket_prefix.is_empty()
        || !bucket_prefix
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    {
        return Err(StoreError::Storage(format!(
            "{bucket_prefix:?} cannot prefix NATS key-value bucket names: use letters, digits, - and _"
        )));
    }
    if replicas == 0 {
        return Err(StoreError::Storage(
            "a NATS key-value bucket needs at least 1 replica".to_owned(),
        ));
    }
    Ok(())
}

/// The [`MembershipStore`] in NATS JetStream key-value buckets; the module
/// doc has the design. Cloning is cheap and shares the buckets.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
    lock_lease: Duration,
    lock_wait: Duration,
    write_window: usize,
}

struct Inner {
    pages: Bucket,
    cohorts: Bucket,
    members: Bucket,
    journal: Bucket,
    deferred: Bucket,
    dead: Bucket,
    /// This store's name in locks.
    owner: String,
    acquisitions: AtomicU64,
    /// The journal keys that had a deferral at the last `due_changes`:
    /// confirming or dead-lettering one of them removes it.
    deferred_keys: Mutex<HashSet<String>>,
    #[cfg(test)]
    faults: Mutex<Option<(&'static str, u32)>>,
    #[cfg(test)]
    crashed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("cohorts", &self.inner.cohorts.name())
            .field("owner", &self.inner.owner)
            .field("lock_lease", &self.lock_lease)
            .finish_non_exhaustive()
    }
}

impl NatsStore {
    /// Takes or renews the lease under `key` (compare and set, so two
    /// replicas asking at once cannot both win): free when unset, expired,
    /// held by `owner`, or with `take_over`.
    async fn hold_lease(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
        take_over: bool,
    ) -> Result<bool, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        loop {
            let slot = self.inner.cohorts.read(key).await?;
            let now = now_ms();
            let current: Option<LeaseValue> = decode("lease", slot.value.as_ref())?;
            let free = current.as_ref().is_none_or(|current| {
                take_over || current.owner == owner || current.expires_ms <= now
            });
            if !free {
                return Ok(false);
            }
            let mine = LeaseValue {
                owner: owner.to_owned(),
                expires_ms: now.saturating_add(lease_ms),
            };
            if self
                .inner
                .cohorts
                .cas(key, encode(&mine)?, slot.revision)
                .await?
                .is_some()
            {
                return Ok(true);
            }
            // Someone else wrote it meanwhile: judge again.
        }
    }

    /// Opens the store in the buckets `<bucket_prefix>-pages`, `-cohorts`,
    /// `-members`, `-journal`, `-deferred` and `-dead-letters`, creating
    /// those that do not exist with `replicas` replicas (1, or 3 on a
    /// cluster of 3 or more). An existing bucket with another number of
    /// replicas is an error that names it.
    pub async fn open(
        jetstream: async_nats::jetstream::Context,
        bucket_prefix: &str,
        replicas: usize,
    ) -> Result<NatsStore, StoreError> {
        check_settings(bucket_prefix, replicas)?;
        let names = NatsStore::bucket_names(bucket_prefix);
        let open = |name: &str| {
            let max_age = if name.ends_with("-pages") {
                Duration::from_millis(PAGE_MEMORY_MS as u64)
            } else {
                Duration::ZERO
            };
            let jetstream = jetstream.clone();
            let name = name.to_owned();
            async move { Bucket::open(&jetstream, &name, replicas, max_age).await }
        };
        let [pages, cohorts, members, journal, deferred, dead] = [
            open(&names[0]).await?,
            open(&names[1]).await?,
            open(&names[2]).await?,
            open(&names[3]).await?,
            open(&names[4]).await?,
            open(&names[5]).await?,
        ];
        Ok(NatsStore {
            inner: Arc::new(Inner {
                pages,
                cohorts,
                members,
                journal,
                deferred,
                dead,
                owner: format!("pid-{}-{:016x}", std::process::id(), rand::random::<u64>()),
                acquisitions: AtomicU64::new(0),
                deferred_keys: Mutex::new(HashSet::new()),
                #[cfg(test)]
                faults: Mutex::new(None),
                #[cfg(test)]
                crashed: std::sync::atomic::AtomicBool::new(false),
            }),
            lock_lease: DEFAULT_LOCK_LEASE,
            lock_wait: LOCK_WAIT,
            write_window: WRITE_WINDOW,
        })
    }

    /// The names of the buckets a store with this prefix uses.
    pub fn bucket_names(bucket_prefix: &str) -> Vec<String> {
        BUCKETS
            .iter()
            .map(|suffix| format!("{bucket_prefix}-{suffix}"))
            .collect()
    }

    /// Compares the buckets a store with this prefix and `replicas` uses
    /// with what the server has, as [`NatsStore::open`] would, without
    /// creating or changing anything (`check-config --connect`): one
    /// [`BucketCheck`] per bucket, in [`NatsStore::bucket_names`]'s order.
    /// Fails only when a request fails.
    pub async fn check(
        jetstream: &async_nats::jetstream::Context,
        bucket_prefix: &str,
        replicas: usize,
    ) -> Result<Vec<BucketCheck>, StoreError> {
        use async_nats::jetstream::context::GetStreamErrorKind;

        check_settings(bucket_prefix, replicas)?;
        let mut checks = Vec::with_capacity(BUCKETS.len());
        for name in NatsStore::bucket_names(bucket_prefix) {
            let state = match jetstream.get_stream(format!("KV_{name}")).await {
                Ok(stream) => match bucket::mismatch(&stream.cached_info().config, replicas) {
                    None => BucketState::Matches,
                    Some((setting, found, wanted)) => BucketState::Mismatch {
                        setting: setting.to_owned(),
                        found,
                        wanted,
                    },
                },
                Err(error)
                    if matches!(error.kind(), GetStreamErrorKind::JetStream(ref jetstream_error)
                        if jetstream_error.code() == 404) =>
                {
                    BucketState::Missing
                }
                Err(error) => {
                    return Err(StoreError::Storage(format!(
                        "cannot read the NATS key-value bucket {name}: {error}"
                    )));
                }
            };
            checks.push(BucketCheck { name, state });
        }
        Ok(checks)
    }

    /// How long a cohort's lock lasts without renewal
    /// ([`DEFAULT_LOCK_LEASE`] unless set): after a replica dies while
    /// changing a cohort, that cohort's next change waits this long. Every
    /// replica should use the same.
    pub fn with_lock_lease(mut self, lease: Duration) -> NatsStore {
        self.lock_lease = lease.max(Duration::from_millis(100));
        self.lock_wait = LOCK_WAIT.max(self.lock_lease * 3);
        self
    }

    /// Finishes every cohort change that a replica left half-applied (it
    /// died, or lost NATS, in the middle); returns how many. A change is
    /// also finished by the next change of its cohort, so this only makes
    /// recovery prompt: call it at start and now and then (a minute).
    pub async fn recover(&self) -> Result<u64, StoreError> {
        let mut interrupted = Vec::new();
        self.inner
            .cohorts
            .scan("meta.>", |key, value, _| {
                if let Ok(Some(meta)) = decode::<Meta>("cohort state", Some(&value))
                    && meta.applying.is_some()
                {
                    interrupted.push(key.trim_start_matches("meta.").to_owned());
                }
                ControlFlow::Continue(())
            })
            .await?;
        let mut finished = 0;
        for cohort in interrupted {
            let lock = self.lock(&cohort).await?;
            let recovered = self.recover_locked(&lock, &cohort).await;
            self.unlock(lock, &recovered).await;
            recovered?;
            finished += 1;
        }
        Ok(finished)
    }

    /// Every member of a cohort (for audits and tests), by identifier kind
    /// then id.
    pub async fn members(&self, cohort: &CohortKey) -> Result<Vec<BrazeUser>, StoreError> {
        let token = cohort_token(cohort);
        let mut users = Vec::new();
        let mut bad = None;
        self.inner
            .members
            .scan(&format!("m.{token}.>"), |_, value, _| {
                match decode::<MemberValue>("member", Some(&value)) {
                    Ok(Some(member)) if !member.removed => users.push(member.user),
                    Ok(_) => {}
                    Err(error) => bad = Some(error),
                }
                ControlFlow::Continue(())
            })
            .await?;
        if let Some(error) = bad {
            return Err(error);
        }
        users.sort();
        Ok(users.iter().map(UserRec::to_user).collect())
    }

    /// Dead letters matching `selection`, oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        selection: &DeadLetterSelection,
        limit: usize,
    ) -> Result<Vec<CohortDeadLetter>, StoreError> {
        Ok(self
            .select_dead_letters(selection, limit)
            .await?
            .into_iter()
            .map(|(letter, _, _)| letter)
            .collect())
    }

    /// Dead letters matching `selection` with their key and revision.
    async fn select_dead_letters(
        &self,
        selection: &DeadLetterSelection,
        limit: usize,
    ) -> Result<Vec<(CohortDeadLetter, String, u64)>, StoreError> {
        let mut letters = Vec::new();
        let mut bad = None;
        self.inner
            .dead
            .scan(">", |key, value, revision| {
                let value = match decode::<DeadLetterValue>("dead letter", Some(&value)) {
                    Ok(Some(value)) => value,
                    Ok(None) => return ControlFlow::Continue(()),
                    Err(error) => {
                        bad = Some(error);
                        return ControlFlow::Break(());
                    }
                };
                let id = key
                    .rsplit('.')
                    .next()
                    .and_then(|seq| seq.parse::<i64>().ok())
                    .unwrap_or_default();
                let letter = CohortDeadLetter {
                    id,
                    at_ms: value.at_ms,
                    cohort: CohortKey {
                        project_id: value.project_id,
                        cohort_id: value.cohort_id,
                    },
                    cohort_name: value.cohort_name,
                    user: value.user.to_user(),
                    op: op_from_code(value.op),
                    reason: value.reason,
                    detail: value.detail,
                    attempts: value.attempts,
                };
                if selects(selection, &letter) {
                    letters.push((letter, key.to_owned(), revision));
                }
                ControlFlow::Continue(())
            })
            .await?;
        if let Some(error) = bad {
            return Err(error);
        }
        letters.sort_by_key(|(letter, _, _)| letter.id);
        letters.truncate(limit);
        Ok(letters)
    }

    /// Puts matching dead letters back into the journal and deletes them.
    /// What is journaled is the cohort's current state for that user (an
    /// add if the user is a member now, else a remove), so a replay never
    /// undoes a later change. Returns how many were replayed.
    pub async fn replay_dead_letters(
        &self,
        selection: &DeadLetterSelection,
    ) -> Result<u64, StoreError> {
        let letters = self.select_dead_letters(selection, usize::MAX).await?;
        let mut by_cohort: BTreeMap<CohortKey, Vec<(CohortDeadLetter, String, u64)>> =
            BTreeMap::new();
        for letter in letters {
            by_cohort
                .entry(letter.0.cohort.clone())
                .or_default()
                .push(letter);
        }
        let mut replayed = 0;
        for (key, letters) in by_cohort {
            let cohort = cohort_token(&key);
            let lock = self.lock(&cohort).await?;
            let done = async {
                let (meta, revision) = self.recover_locked(&lock, &cohort).await?;
                if meta.is_none() {
                    // A cohort the store forgot: known again, by the name
                    // the letter has.
                    let meta = Meta::new(&key, &letters[0].0.cohort_name);
                    lock.check()?;
                    self.inner
                        .cohorts
                        .cas(&meta_key(&cohort), encode(&meta)?, revision)
                        .await?;
                }
                let mut done = 0;
                for (letter, dead_key, dead_revision) in &letters {
                    let user = UserRec::from(&letter.user);
                    let is_member = self
                        .read_member(&cohort, &user)
                        .await?
                        .is_some_and(|member| !member.removed);
                    let op = if is_member {
                        super::ChangeOp::Add
                    } else {
                        super::ChangeOp::Remove
                    };
                    let value = JournalValue {
                        project_id: key.project_id.clone(),
                        cohort_id: key.cohort_id.clone(),
                        user: user.clone(),
                        op: op_code(op),
                        queued_ms: now_ms(),
                        by: 0,
                    };
                    lock.check()?;
                    self.inner
                        .journal
                        .put(&journal_key(&cohort, &user), encode(&value)?)
                        .await?;
                    self.inner
                        .dead
                        .purge_through(dead_key, *dead_revision)
                        .await?;
                    done += 1;
                }
                Ok::<u64, StoreError>(done)
            }
            .await;
            self.unlock(lock, &done).await;
            replayed += done?;
        }
        Ok(replayed)
    }

    /// Deletes matching dead letters for good; returns how many.
    pub async fn purge_dead_letters(
        &self,
        selection: &DeadLetterSelection,
    ) -> Result<u64, StoreError> {
        let letters = self.select_dead_letters(selection, usize::MAX).await?;
        let n = letters.len() as u64;
        futures_util::stream::iter(letters)
            .map(|(_, key, revision)| async move {
                self.inner.dead.purge_through(&key, revision).await
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(n)
    }

    /// Changes the writer's status of a cohort the store knows.
    async fn update_status(
        &self,
        cohort: &CohortKey,
        change: impl Fn(&mut StatusValue),
    ) -> Result<(), StoreError> {
        let token = cohort_token(cohort);
        if self
            .inner
            .cohorts
            .read(&meta_key(&token))
            .await?
            .value
            .is_none()
        {
            return Ok(());
        }
        let key = status_key(&token);
        loop {
            let slot = self.inner.cohorts.read(&key).await?;
            let mut status: StatusValue =
                decode("cohort status", slot.value.as_ref())?.unwrap_or_default();
            change(&mut status);
            if self
                .inner
                .cohorts
                .cas(&key, encode(&status)?, slot.revision)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
    }

    /// Removes the deferral of a journal key, if it had one.
    async fn forget_deferral(&self, key: &str) -> Result<(), StoreError> {
        let had = self
            .inner
            .deferred_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        if had {
            self.inner.deferred.purge(key).await?;
        }
        Ok(())
    }

    /// The cohort's status row.
    async fn cohort_status(&self, token: String, meta: Meta) -> Result<CohortStatus, StoreError> {
        let status_slot = self.inner.cohorts.read(&status_key(&token)).await?;
        let status: StatusValue =
            decode("cohort status", status_slot.value.as_ref())?.unwrap_or_default();
        let (in_journal, in_unmatched, in_dead) = (
            format!("{token}.>"),
            format!("u.{token}.>"),
            format!("{token}.>"),
        );
        let (pending, unmatched, dead_letters) = tokio::try_join!(
            self.inner.journal.count(&in_journal),
            self.inner.members.count(&in_unmatched),
            self.inner.dead.count(&in_dead),
        )?;
        Ok(CohortStatus {
            cohort: meta.cohort(),
            name: meta.name,
            members: meta.n_members.max(0) as u64,
            pending,
            unmatched,
            dead_letters,
            last_sync_ms: meta.last_sync_ms,
            last_confirmed_ms: status.last_confirmed_ms,
            last_error: status.last_error,
            braze_name: status.braze_name,
        })
    }

    #[cfg(test)]
    fn fault(&self, point: &'static str) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.inner.crashed.load(Ordering::SeqCst) {
            return Err(StoreError::Storage("simulated crash".to_owned()));
        }
        let mut faults = self
            .inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, hits)) = faults.as_mut()
            && *at == point
        {
            if *hits == 0 {
                *faults = None;
                self.inner.crashed.store(true, Ordering::SeqCst);
                return Err(StoreError::Storage(format!("simulated crash at {point}")));
            }
            *hits -= 1;
        }
        Ok(())
    }

    #[cfg(not(test))]
    #[allow(clippy::unused_self)]
    #[inline]
    fn fault(&self, _point: &'static str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether a simulated crash happened (tests).
    #[cfg(test)]
    fn crashed(&self) -> bool {
        self.inner.crashed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl MembershipStore for NatsStore {
    async fn apply_page(&self, page: MembershipPage) -> Result<PageOutcome, StoreError> {
        self.apply(page).await
    }

    async fn finish_snapshot(
        &self,
        cohort: &CohortKey,
        session_id: &str,
    ) -> Result<PageOutcome, StoreError> {
        self.finish(cohort, session_id).await
    }

    async fn due_changes(&self, max: usize) -> Result<Vec<PendingChange>, StoreError> {
        let now = now_ms();
        let mut deferrals: HashMap<String, (Deferral, u64)> = HashMap::new();
        self.inner
            .deferred
            .scan(">", |key, value, revision| {
                if let Ok(Some(deferral)) = decode::<Deferral>("deferral", Some(&value)) {
                    deferrals.insert(key.to_owned(), (deferral, revision));
                }
                ControlFlow::Continue(())
            })
            .await?;
        *self
            .inner
            .deferred_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = deferrals.keys().cloned().collect();
        let mut due: Vec<(String, JournalValue, u64, u32)> = Vec::new();
        let mut bad = None;
        if max > 0 {
            self.inner
                .journal
                .scan(">", |key, value, seq| {
                    let entry = match decode::<JournalValue>("journal entry", Some(&value)) {
                        Ok(Some(entry)) => entry,
                        Ok(None) => return ControlFlow::Continue(()),
                        Err(error) => {
                            bad = Some(error);
                            return ControlFlow::Break(());
                        }
                    };
                    let (attempts, not_before_ms) = match deferrals.get(key) {
                        Some((deferral, _)) if deferral.seq == seq => {
                            (deferral.attempts, deferral.not_before_ms)
                        }
                        _ => (0, 0),
                    };
                    if not_before_ms > now {
                        return ControlFlow::Continue(());
                    }
                    let cohort = key.split('.').next().unwrap_or_default().to_owned();
                    due.push((cohort, entry, seq, attempts));
                    if due.len() >= max {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .await?;
        }
        if let Some(error) = bad {
            return Err(error);
        }
        // Each cohort's current name.
        let mut names: HashMap<String, String> = HashMap::new();
        for (cohort, _, _, _) in &due {
            if names.contains_key(cohort) {
                continue;
            }
            let slot = self.inner.cohorts.read(&meta_key(cohort)).await?;
            let name = decode::<Meta>("cohort state", slot.value.as_ref())?
                .map(|meta| meta.name)
                .unwrap_or_default();
            names.insert(cohort.clone(), name);
        }
        Ok(due
            .into_iter()
            .map(|(cohort, entry, seq, attempts)| PendingChange {
                cohort: CohortKey {
                    project_id: entry.project_id,
                    cohort_id: entry.cohort_id,
                },
                cohort_name: names.get(&cohort).cloned().unwrap_or_default(),
                user: entry.user.to_user(),
                op: op_from_code(entry.op),
                seq: i64::try_from(seq).unwrap_or(i64::MAX),
                attempts,
                queued_at_ms: entry.queued_ms,
            })
            .collect())
    }

    async fn confirm(&self, changes: &[PendingChange]) -> Result<(), StoreError> {
        let confirmed: Vec<(String, u64)> = changes
            .iter()
            .map(|change| {
                let key = journal_key(&cohort_token(&change.cohort), &(&change.user).into());
                (key, u64::try_from(change.seq).unwrap_or(0))
            })
            .collect();
        futures_util::stream::iter(confirmed)
            .map(|(key, seq)| async move {
                // Gone only if it is still this change: a newer one has a
                // higher revision and survives.
                self.inner.journal.purge_through(&key, seq).await?;
                self.forget_deferral(&key).await
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let now = now_ms();
        let cohorts: HashSet<&CohortKey> = changes.iter().map(|change| &change.cohort).collect();
        for cohort in cohorts {
            self.update_status(cohort, |status| status.last_confirmed_ms = Some(now))
                .await?;
        }
        Ok(())
    }

    async fn defer(&self, changes: &[PendingChange], retry_at_ms: i64) -> Result<(), StoreError> {
        for change in changes {
            let key = journal_key(&cohort_token(&change.cohort), &(&change.user).into());
            let seq = u64::try_from(change.seq).unwrap_or(0);
            let slot = self.inner.deferred.read(&key).await?;
            let attempts = decode::<Deferral>("deferral", slot.value.as_ref())?
                .filter(|deferral| deferral.seq == seq)
                .map_or(0, |deferral| deferral.attempts);
            let deferral = Deferral {
                seq,
                attempts: attempts + 1,
                not_before_ms: retry_at_ms,
            };
            self.inner.deferred.put(&key, encode(&deferral)?).await?;
            self.inner
                .deferred_keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key);
        }
        Ok(())
    }

    async fn hold_writer_lease(
        &self,
        owner: &str,
        lease: Duration,
        take_over: bool,
    ) -> Result<bool, StoreError> {
        self.hold_lease(LEASE_KEY, owner, lease, take_over).await
    }

    async fn hold_pull_lease(&self, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        self.hold_lease(PULL_LEASE_KEY, owner, lease, false).await
    }

    async fn dead_letter(&self, refused: Vec<RefusedChange>) -> Result<(), StoreError> {
        let now = now_ms();
        futures_util::stream::iter(refused)
            .map(|refused| async move {
                let RefusedChange {
                    change,
                    reason,
                    detail,
                } = refused;
                let cohort = cohort_token(&change.cohort);
                let user = UserRec::from(&change.user);
                let key = journal_key(&cohort, &user);
                let seq = u64::try_from(change.seq).unwrap_or(0);
                // A newer change replaced it meanwhile: that one will be
                // sent; this one is moot.
                let slot = self.inner.journal.read(&key).await?;
                if slot.value.is_none() || slot.revision != seq {
                    return Ok(());
                }
                let letter = DeadLetterValue {
                    at_ms: now,
                    project_id: change.cohort.project_id.clone(),
                    cohort_id: change.cohort.cohort_id.clone(),
                    cohort_name: change.cohort_name.clone(),
                    user,
                    op: op_code(change.op),
                    reason: reason.to_owned(),
                    detail,
                    attempts: change.attempts + 1,
                };
                self.inner
                    .dead
                    .put(&dead_letter_key(&cohort, seq), encode(&letter)?)
                    .await?;
                self.fault("dead_letter_written")?;
                self.inner.journal.purge_through(&key, seq).await?;
                self.forget_deferral(&key).await
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn record_error(
        &self,
        cohort: &CohortKey,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        self.update_status(cohort, |status| status.last_error.clone_from(&error))
            .await
    }

    async fn record_braze_name(&self, cohort: &CohortKey, name: &str) -> Result<(), StoreError> {
        self.update_status(cohort, |status| status.braze_name = Some(name.to_owned()))
            .await
    }

    async fn cohorts(&self) -> Result<Vec<CohortStatus>, StoreError> {
        let mut metas = Vec::new();
        let mut bad = None;
        self.inner
            .cohorts
            .scan("meta.>", |key, value, _| {
                match decode::<Meta>("cohort state", Some(&value)) {
                    Ok(Some(meta)) => {
                        metas.push((key.trim_start_matches("meta.").to_owned(), meta));
                    }
                    Ok(None) => {}
                    Err(error) => bad = Some(error),
                }
                ControlFlow::Continue(())
            })
            .await?;
        if let Some(error) = bad {
            return Err(error);
        }
        let mut statuses: Vec<CohortStatus> = futures_util::stream::iter(metas)
            .map(|(token, meta)| self.cohort_status(token, meta))
            .buffer_unordered(8)
            .try_collect()
            .await?;
        statuses.sort_by(|a, b| a.cohort.cmp(&b.cohort));
        Ok(statuses)
    }

    async fn unmatched(
        &self,
        cohort: &CohortKey,
        max: usize,
    ) -> Result<Vec<UnmatchedMember>, StoreError> {
        let token = cohort_token(cohort);
        let mut members = Vec::new();
        self.inner
            .members
            .scan(&format!("u.{token}.>"), |_, value, _| {
                if let Ok(Some(unmatched)) =
                    decode::<model::UnmatchedValue>("unmatched member", Some(&value))
                {
                    members.push(UnmatchedMember {
                        distinct_id: unmatched.d,
                        reason: UnmatchedReason::from_name(&unmatched.reason)
                            .unwrap_or(UnmatchedReason::NotText),
                    });
                }
                ControlFlow::Continue(())
            })
            .await?;
        members.sort_by(|a, b| a.distinct_id.cmp(&b.distinct_id));
        members.truncate(max);
        Ok(members)
    }
}

/// Whether a dead letter matches a selection (empty matches all).
fn selects(selection: &DeadLetterSelection, letter: &CohortDeadLetter) -> bool {
    (selection.ids.is_empty() || selection.ids.contains(&letter.id))
        && selection
            .reason
            .as_ref()
            .is_none_or(|reason| *reason == letter.reason)
        && selection
            .cohort_id
            .as_ref()
            .is_none_or(|cohort_id| *cohort_id == letter.cohort.cohort_id)
        && selection.since_ms.is_none_or(|since| letter.at_ms >= since)
        && selection.until_ms.is_none_or(|until| letter.at_ms < until)
}
