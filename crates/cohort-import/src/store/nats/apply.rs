//! Changing a cohort's membership in the NATS store: recording a page,
//! applying it under the cohort's lock, finishing a snapshot, and finishing
//! whatever a replica that died left half-applied. The design and why it
//! is safe are in the parent module's doc.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};

use super::NatsStore;
use super::lock::CohortLock;
use super::model::{
    Applying, IndexValue, JournalValue, MemberContent, MemberValue, Meta, OutcomeRec,
    PAGE_MEMORY_MS, PageContent, PageRecord, SnapshotRec, UnmatchedValue, UserRec, Work, chunk_key,
    cohort_token, decode, encode, index_key, journal_key, member_key, meta_key, needs_index,
    op_code, record_key, unmatched_key,
};
use crate::clock::now_ms;
use crate::store::{ChangeOp, CohortKey, MembershipPage, PageKind, PageOutcome, StoreError};

/// A page's content is stored in chunks of at most this many bytes (the
/// NATS server's default message limit is 1 MiB).
const CHUNK_BYTES: usize = 256 * 1024;

/// Reads in flight at once.
const READ_CONCURRENCY: usize = 64;

/// What applying a change did, before its cohort's state is written.
struct Executed {
    meta: Meta,
    outcome: PageOutcome,
    cleanup: Cleanup,
}

/// What may go once the change is applied: its tombstones, the index
/// entries of the members it removed, its page's content.
#[derive(Default)]
struct Cleanup {
    /// Member keys and the revision of the tombstone there.
    tombstones: Vec<(String, u64)>,
    /// `distinct_id` index keys and the user they should name.
    index: Vec<(String, UserRec)>,
    /// Keys of the page's content.
    chunks: Vec<String>,
}

/// What a change works from.
enum Input<'a> {
    Page(&'a PageContent),
    Finish(&'a str),
}

impl NatsStore {
    /// [`crate::store::MembershipStore::apply_page`].
    pub(super) async fn apply(&self, page: MembershipPage) -> Result<PageOutcome, StoreError> {
        let cohort = cohort_token(&page.cohort);
        let record = record_key(&cohort, &page);
        let content = PageContent::of(&page);
        let existing = self.inner.pages.read(&record).await?;
        if existing.value.is_some() {
            self.settle(&page.cohort, &cohort, &record, &content, false)
                .await?;
            return Ok(replayed());
        }
        // The content first, under a key of this delivery's own, then the
        // record that points to it: a record always has its content.
        let (nonce, n_chunks) = self.store_content(&record, &content).await?;
        self.fault("content_stored")?;
        let entry = PageRecord {
            nonce: nonce.clone(),
            chunks: n_chunks,
            at_ms: now_ms(),
            outcome: None,
        };
        let created = self
            .inner
            .pages
            .cas(&record, encode(&entry)?, existing.revision)
            .await?;
        if created.is_none() {
            // Another delivery of this page (a retry, a duplicate, on this
            // replica or another) recorded it first: its content counts.
            self.purge_chunks(&record, &nonce, n_chunks).await;
            self.settle(&page.cohort, &cohort, &record, &content, false)
                .await?;
            return Ok(replayed());
        }
        self.fault("page_recorded")?;
        self.settle(&page.cohort, &cohort, &record, &content, true)
            .await
    }

    /// Writes a page's content in chunks under a new nonce; returns the
    /// nonce and the number of chunks.
    async fn store_content(
        &self,
        record: &str,
        content: &PageContent,
    ) -> Result<(String, u32), StoreError> {
        let bytes = encode(content)?;
        let nonce = format!("{:016x}", rand::random::<u64>());
        let chunks: Vec<(String, Bytes)> = bytes
            .chunks(CHUNK_BYTES)
            .zip(0..)
            .map(|(chunk, index)| (chunk_key(record, &nonce, index), bytes.slice_ref(chunk)))
            .collect();
        let n_chunks = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        self.inner
            .pages
            .put_many(chunks, self.write_window, || Ok(()))
            .await?;
        Ok((nonce, n_chunks))
    }

    /// Makes sure the page recorded at `record` is applied, applying it if
    /// no one has; returns its outcome. `own` is the page as this delivery
    /// has it, and `recorded` says whether this delivery recorded it (else
    /// the recorded content counts, and `own` stands in only if that is
    /// gone).
    async fn settle(
        &self,
        key: &CohortKey,
        cohort: &str,
        record: &str,
        own: &PageContent,
        recorded: bool,
    ) -> Result<PageOutcome, StoreError> {
        let lock = self.lock(cohort).await?;
        let settled = async {
            let (meta, meta_revision) = self.recover_locked(&lock, cohort).await?;
            let slot = self.inner.pages.read(record).await?;
            let Some(mut entry) = decode::<PageRecord>("page record", slot.value.as_ref())? else {
                // Forgotten (older than the page memory): nothing to do.
                return Ok(PageOutcome::default());
            };
            if let Some(outcome) = entry.outcome {
                return Ok(outcome.into());
            }
            let mut record_revision = slot.revision;
            let loaded = if recorded {
                None
            } else {
                self.load_content(record, &entry).await?
            };
            let content = match loaded {
                Some(content) => content,
                None if recorded => own.clone(),
                None => {
                    // Recorded, never applied, and its content expired
                    // (the edge of the page memory): this delivery's
                    // content takes its place, stored first so that a
                    // crash from here on can still be finished.
                    let (nonce, chunks) = self.store_content(record, own).await?;
                    entry.nonce = nonce;
                    entry.chunks = chunks;
                    lock.check()?;
                    record_revision = self
                        .inner
                        .pages
                        .cas(record, encode(&entry)?, record_revision)
                        .await?
                        .ok_or_else(|| {
                            StoreError::Storage(format!(
                                "page record {record} changed under the cohort's lock"
                            ))
                        })?;
                    own.clone()
                }
            };
            let meta0 = meta.unwrap_or_else(|| Meta::new(key, &content.cohort_name));
            let work = Work::Page {
                record: record.to_owned(),
            };
            let (outcome, _, _) = self
                .begin(
                    &lock,
                    cohort,
                    meta0,
                    meta_revision,
                    work,
                    Input::Page(&content),
                    Some((record, entry, record_revision)),
                )
                .await?;
            Ok(outcome)
        }
        .await;
        self.unlock(lock, &settled).await;
        settled
    }

    /// [`crate::store::MembershipStore::finish_snapshot`].
    pub(super) async fn finish(
        &self,
        key: &CohortKey,
        session_id: &str,
    ) -> Result<PageOutcome, StoreError> {
        let cohort = cohort_token(key);
        if self
            .inner
            .cohorts
            .read(&meta_key(&cohort))
            .await?
            .value
            .is_none()
        {
            return Ok(PageOutcome::default());
        }
        let lock = self.lock(&cohort).await?;
        let finished = async {
            let (meta, meta_revision) = self.recover_locked(&lock, &cohort).await?;
            let Some(meta) = meta else {
                return Ok(PageOutcome::default());
            };
            if matches!(meta.snapshots.get(session_id), Some(snapshot) if meta.open_snapshot != Some(snapshot.id))
            {
                return Ok(PageOutcome {
                    stale: true,
                    ..PageOutcome::default()
                });
            }
            let work = Work::Finish {
                session: session_id.to_owned(),
            };
            let (outcome, _, _) = self
                .begin(
                    &lock,
                    &cohort,
                    meta,
                    meta_revision,
                    work,
                    Input::Finish(session_id),
                    None,
                )
                .await?;
            Ok(outcome)
        }
        .await;
        self.unlock(lock, &finished).await;
        finished
    }

    /// Takes a cohort's lock.
    pub(super) async fn lock(&self, cohort: &str) -> Result<CohortLock, StoreError> {
        let owner = format!(
            "{}/{}",
            self.inner.owner,
            self.inner
                .acquisitions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        CohortLock::acquire(
            &self.inner.cohorts,
            cohort,
            owner,
            self.lock_lease,
            self.lock_wait,
        )
        .await
    }

    /// Frees a cohort's lock after `result`; a simulated crash (tests)
    /// leaves it held, as a dead replica would.
    pub(super) async fn unlock<T>(&self, lock: CohortLock, result: &Result<T, StoreError>) {
        #[cfg(test)]
        if result.is_err() && self.crashed() {
            lock.abandon().await;
            return;
        }
        let _ = result;
        lock.release().await;
    }

    /// Under the cohort's lock: finishes a change a replica left
    /// half-applied, if any; returns the cohort's state and its revision.
    pub(super) async fn recover_locked(
        &self,
        lock: &CohortLock,
        cohort: &str,
    ) -> Result<(Option<Meta>, u64), StoreError> {
        let slot = self.inner.cohorts.read(&meta_key(cohort)).await?;
        let meta: Option<Meta> = decode("cohort state", slot.value.as_ref())?;
        let Some(Applying { ordinal, work }) = meta.as_ref().and_then(|meta| meta.applying.clone())
        else {
            return Ok((meta, slot.revision));
        };
        let Some(mut meta0) = meta else {
            return Ok((None, slot.revision));
        };
        meta0.applying = None;
        tracing::info!(
            cohort = %meta0.cohort(),
            ordinal,
            "Finishing a cohort change that a replica left half-applied."
        );
        let (_, meta, revision) = match &work {
            Work::Page { record } => {
                let record_slot = self.inner.pages.read(record).await?;
                let entry = decode::<PageRecord>("page record", record_slot.value.as_ref())?;
                let content = match &entry {
                    Some(entry) => self.load_content(record, entry).await?,
                    None => None,
                };
                match (entry, content) {
                    (Some(entry), Some(content)) => {
                        self.complete(
                            lock,
                            cohort,
                            meta0,
                            slot.revision,
                            ordinal,
                            Input::Page(&content),
                            Some((record, entry, record_slot.revision)),
                        )
                        .await?
                    }
                    _ => {
                        // Its content expired (a week without any page
                        // or recovery for this cohort): what was written
                        // of it stays, and the next snapshot sets the
                        // membership right.
                        tracing::error!(
                            cohort = %meta0.cohort(),
                            record,
                            "A half-applied cohort page cannot be finished: its content is gone. The next full sync of the cohort repairs its membership."
                        );
                        meta0.next_ordinal = ordinal + 1;
                        let revision = self.write_meta(lock, cohort, &meta0, slot.revision).await?;
                        (PageOutcome::default(), meta0, revision)
                    }
                }
            }
            Work::Finish { session } => {
                self.complete(
                    lock,
                    cohort,
                    meta0,
                    slot.revision,
                    ordinal,
                    Input::Finish(session),
                    None,
                )
                .await?
            }
        };
        Ok((Some(meta), revision))
    }

    /// Declares the change (the cohort's state with `applying` set: from
    /// then on, whoever holds the lock finishes it), then applies it.
    #[allow(clippy::too_many_arguments)]
    async fn begin(
        &self,
        lock: &CohortLock,
        cohort: &str,
        meta0: Meta,
        meta_revision: u64,
        work: Work,
        input: Input<'_>,
        record: Option<(&str, PageRecord, u64)>,
    ) -> Result<(PageOutcome, Meta, u64), StoreError> {
        let ordinal = meta0.next_ordinal;
        let mut intent = meta0.clone();
        intent.applying = Some(Applying { ordinal, work });
        let revision = self
            .write_meta(lock, cohort, &intent, meta_revision)
            .await?;
        self.fault("intent_written")?;
        self.complete(lock, cohort, meta0, revision, ordinal, input, record)
            .await
    }

    /// Applies change `ordinal` over `meta0` (the state before it), marks
    /// its page applied, writes the state after it, and cleans up. Safe to
    /// run again after a crash at any point: see the module doc.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        lock: &CohortLock,
        cohort: &str,
        meta0: Meta,
        meta_revision: u64,
        ordinal: u64,
        input: Input<'_>,
        record: Option<(&str, PageRecord, u64)>,
    ) -> Result<(PageOutcome, Meta, u64), StoreError> {
        let mut executed = self.execute(lock, cohort, &meta0, ordinal, input).await?;
        self.fault("effects_written")?;
        if let Some((record, mut entry, revision)) = record {
            executed.cleanup.chunks = (0..entry.chunks)
                .map(|index| chunk_key(record, &entry.nonce, index))
                .collect();
            entry.outcome = Some(OutcomeRec::from(executed.outcome));
            lock.check()?;
            if self
                .inner
                .pages
                .cas(record, encode(&entry)?, revision)
                .await?
                .is_none()
            {
                return Err(StoreError::Storage(format!(
                    "page record {record} changed under the cohort's lock"
                )));
            }
        }
        self.fault("record_written")?;
        let mut after = executed.meta;
        after.applying = None;
        after.next_ordinal = ordinal + 1;
        let revision = self.write_meta(lock, cohort, &after, meta_revision).await?;
        self.clean(cohort, executed.cleanup).await;
        Ok((executed.outcome, after, revision))
    }

    /// Writes the cohort's state over `revision`, still holding the lock.
    async fn write_meta(
        &self,
        lock: &CohortLock,
        cohort: &str,
        meta: &Meta,
        revision: u64,
    ) -> Result<u64, StoreError> {
        lock.check()?;
        self.inner
            .cohorts
            .cas(&meta_key(cohort), encode(meta)?, revision)
            .await?
            .ok_or_else(|| {
                StoreError::Storage(format!(
                    "cohort {} changed under its lock (the lock was taken over)",
                    meta.cohort()
                ))
            })
    }

    /// The effects of change `ordinal` (a page, or finishing a snapshot)
    /// over the state `meta0`, written to members and journal, and the
    /// state after it (not yet written).
    async fn execute(
        &self,
        lock: &CohortLock,
        cohort: &str,
        meta0: &Meta,
        ordinal: u64,
        input: Input<'_>,
    ) -> Result<Executed, StoreError> {
        let now = now_ms();
        let mut meta = meta0.clone();
        meta.applying = None;
        meta.snapshots.retain(|_, snapshot| {
            meta0.open_snapshot == Some(snapshot.id)
                || snapshot.started_ms >= now.saturating_sub(PAGE_MEMORY_MS)
        });
        let mut outcome = PageOutcome::default();
        let mut cleanup = Cleanup::default();
        let (session, total_pages, kind) = match &input {
            Input::Page(content) => {
                if !content.cohort_name.is_empty() {
                    meta.name.clone_from(&content.cohort_name);
                }
                (
                    content.session_id.as_str(),
                    content.total_pages,
                    content.kind(),
                )
            }
            Input::Finish(session) => (*session, None, PageKind::Snapshot),
        };
        // The snapshot this change belongs to. A snapshot page of a
        // session that was replaced or completed is stale: acknowledged,
        // it changes nothing (it would undo the newer snapshot).
        let snapshot = match kind {
            PageKind::Snapshot => match meta.snapshots.get(session) {
                Some(snapshot) if meta.open_snapshot == Some(snapshot.id) => Some(snapshot.id),
                Some(_) => {
                    outcome.stale = true;
                    return Ok(Executed {
                        meta,
                        outcome,
                        cleanup,
                    });
                }
                None => {
                    meta.snapshots.insert(
                        session.to_owned(),
                        SnapshotRec {
                            id: ordinal,
                            total_pages,
                            n_pages: 0,
                            completed: false,
                            started_ms: now,
                        },
                    );
                    meta.open_snapshot = Some(ordinal);
                    Some(ordinal)
                }
            },
            PageKind::Add => meta.open_snapshot,
            PageKind::Remove => None,
        };
        if let Input::Page(content) = &input {
            match kind {
                PageKind::Remove => {
                    outcome.removed = self
                        .remove_members(lock, cohort, &meta, ordinal, content, &mut cleanup)
                        .await?;
                }
                PageKind::Snapshot | PageKind::Add => {
                    let (added, unmatched) = self
                        .add_members(lock, cohort, &meta, ordinal, content, snapshot, now)
                        .await?;
                    outcome.added = added;
                    outcome.unmatched = unmatched;
                }
            }
            meta.n_members += outcome.added as i64 - outcome.removed as i64;
            meta.last_sync_ms = Some(now);
        }
        let Some(snapshot) = snapshot.filter(|_| kind == PageKind::Snapshot) else {
            return Ok(Executed {
                meta,
                outcome,
                cleanup,
            });
        };
        let is_complete = match &input {
            Input::Finish(_) => true,
            Input::Page(_) => match meta.snapshots.get_mut(session) {
                Some(record) => {
                    record.n_pages += 1;
                    total_pages.is_some_and(|total| record.n_pages >= total)
                }
                None => false,
            },
        };
        if is_complete {
            let removed = self
                .complete_snapshot(lock, cohort, &meta, ordinal, snapshot, now, &mut cleanup)
                .await?;
            outcome.removed += removed;
            outcome.snapshot_completed = true;
            meta.n_members -= removed as i64;
            meta.last_sync_ms = Some(now);
            meta.open_snapshot = None;
            if let Some(record) = meta.snapshots.get_mut(session) {
                record.completed = true;
            }
        }
        Ok(Executed {
            meta,
            outcome,
            cleanup,
        })
    }

    /// Adds (or, in a snapshot, marks as seen) the matched members of a
    /// page and notes its unmatched ones. Returns (added, unmatched).
    #[allow(clippy::too_many_arguments)]
    async fn add_members(
        &self,
        lock: &CohortLock,
        cohort: &str,
        meta: &Meta,
        ordinal: u64,
        content: &PageContent,
        snapshot: Option<u64>,
        now: i64,
    ) -> Result<(u64, u64), StoreError> {
        // Each user once: its first place in the page, and the
        // `distinct_id` a snapshot lists last (an add page keeps the
        // first), as the SQLite store does.
        let mut order: Vec<UserRec> = Vec::new();
        let mut distinct: HashMap<UserRec, String> = HashMap::new();
        let mut unmatched: BTreeMap<String, String> = BTreeMap::new();
        let mut n_unmatched = 0;
        for member in &content.members {
            match &member.user {
                Some(user) => match distinct.get_mut(user) {
                    Some(known) => {
                        if snapshot.is_some() {
                            known.clone_from(&member.d);
                        }
                    }
                    None => {
                        order.push(user.clone());
                        distinct.insert(user.clone(), member.d.clone());
                    }
                },
                None => {
                    n_unmatched += 1;
                    let reason = member.unmatched.clone().unwrap_or_default();
                    unmatched.insert(member.d.clone(), reason);
                }
            }
        }
        let states = self.read_members(cohort, &order).await?;
        let mut first_writes: Vec<(String, Bytes)> = Vec::new();
        let mut journal = Vec::new();
        let mut members = Vec::new();
        let mut added = 0;
        for (d, reason) in unmatched {
            let value = UnmatchedValue {
                d: d.clone(),
                reason,
                seen_in: snapshot,
                at_ms: now,
            };
            first_writes.push((unmatched_key(cohort, &d), encode(&value)?));
        }
        for (user, state) in order.into_iter().zip(states) {
            let d = distinct.remove(&user).unwrap_or_default();
            match state {
                // Added by this very change, before a crash: its journal
                // entry was written before it.
                Some((member, _)) if !member.removed && member.by == ordinal => added += 1,
                Some((member, _)) if !member.removed => {
                    let Some(snapshot) = snapshot else { continue };
                    if member.seen_in == Some(snapshot) && member.d == d {
                        continue;
                    }
                    if member.d != d && needs_index(&user, &d) {
                        first_writes.push(index_entry(cohort, &d, &user)?);
                    }
                    let key = member_key(cohort, &user);
                    let value = MemberValue {
                        seen_in: Some(snapshot),
                        d,
                        ..member
                    };
                    members.push((key, encode(&value)?));
                }
                _ => {
                    added += 1;
                    if needs_index(&user, &d) {
                        first_writes.push(index_entry(cohort, &d, &user)?);
                    }
                    journal.push(self.journal_entry(
                        cohort,
                        meta,
                        &user,
                        ChangeOp::Add,
                        ordinal,
                        now,
                    )?);
                    let value = MemberValue {
                        user: user.clone(),
                        d,
                        seen_in: snapshot,
                        by: ordinal,
                        removed: false,
                    };
                    members.push((member_key(cohort, &user), encode(&value)?));
                }
            }
        }
        // Index and unmatched, then the journal in page order, then the
        // members: a member exists only once its change is journaled.
        self.write(lock, &self.inner.members, first_writes).await?;
        self.write(lock, &self.inner.journal, journal).await?;
        self.fault("journal_written")?;
        self.write(lock, &self.inner.members, members).await?;
        Ok((added, n_unmatched))
    }

    /// Removes the members of a remove page, found by their user or else
    /// by their `distinct_id`. Returns how many were members.
    async fn remove_members(
        &self,
        lock: &CohortLock,
        cohort: &str,
        meta: &Meta,
        ordinal: u64,
        content: &PageContent,
        cleanup: &mut Cleanup,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let forgotten: HashSet<String> = content
            .members
            .iter()
            .map(|member| unmatched_key(cohort, &member.d))
            .collect();
        futures_util::stream::iter(forgotten)
            .map(|key| async move { self.inner.members.purge(&key).await })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let found: Vec<Option<(UserRec, MemberValue, u64)>> =
            futures_util::stream::iter(content.members.clone())
                .map(|member| async move { self.find_leaving(cohort, &member, ordinal).await })
                .buffered(READ_CONCURRENCY)
                .try_collect()
                .await?;
        let mut handled = HashSet::new();
        let mut journal = Vec::new();
        let mut tombstones = Vec::new();
        let mut removed = 0;
        for (user, member, revision) in found.into_iter().flatten() {
            if !handled.insert(user.clone()) {
                continue;
            }
            removed += 1;
            if needs_index(&user, &member.d) {
                cleanup
                    .index
                    .push((index_key(cohort, &member.d), user.clone()));
            }
            if member.removed {
                // Removed by this very change before a crash.
                cleanup
                    .tombstones
                    .push((member_key(cohort, &user), revision));
                continue;
            }
            journal.push(self.journal_entry(
                cohort,
                meta,
                &user,
                ChangeOp::Remove,
                ordinal,
                now,
            )?);
            tombstones.push((member_key(cohort, &user), tombstone(member, ordinal)?));
        }
        self.write(lock, &self.inner.journal, journal).await?;
        self.fault("journal_written")?;
        let keys: Vec<String> = tombstones.iter().map(|(key, _)| key.clone()).collect();
        let revisions = self.write(lock, &self.inner.members, tombstones).await?;
        cleanup.tombstones.extend(keys.into_iter().zip(revisions));
        Ok(removed)
    }

    /// The member a remove page's member names, if it was a member before
    /// change `ordinal`: by its user, else by its `distinct_id` (through
    /// the index, or as an external id), checked against the member.
    async fn find_leaving(
        &self,
        cohort: &str,
        member: &MemberContent,
        ordinal: u64,
    ) -> Result<Option<(UserRec, MemberValue, u64)>, StoreError> {
        if let Some(user) = &member.user
            && let Some((found, revision)) = self.read_member_revision(cohort, user).await?
            && found.was_member_before(ordinal)
        {
            return Ok(Some((user.clone(), found, revision)));
        }
        if member.d.is_empty() {
            return Ok(None);
        }
        let slot = self
            .inner
            .members
            .read(&index_key(cohort, &member.d))
            .await?;
        let mut candidates = Vec::with_capacity(2);
        if let Some(index) = decode::<IndexValue>("member index", slot.value.as_ref())? {
            candidates.push(index.user);
        }
        candidates.push(UserRec::external_id(&member.d));
        for user in candidates {
            if let Some((found, revision)) = self.read_member_revision(cohort, &user).await?
                && found.was_member_before(ordinal)
                && found.d == member.d
            {
                return Ok(Some((user, found, revision)));
            }
        }
        Ok(None)
    }

    /// Completes snapshot `snapshot`: removes (and journals) every member
    /// it did not list, forgets the unmatched members it did not list.
    /// Returns how many were removed.
    #[allow(clippy::too_many_arguments)]
    async fn complete_snapshot(
        &self,
        lock: &CohortLock,
        cohort: &str,
        meta: &Meta,
        ordinal: u64,
        snapshot: u64,
        now: i64,
        cleanup: &mut Cleanup,
    ) -> Result<u64, StoreError> {
        let mut leaving = Vec::new();
        let mut removed = 0;
        let mut bad = None;
        self.inner
            .members
            .scan(&format!("m.{cohort}.>"), |key, value, revision| {
                let member: MemberValue = match decode("member", Some(&value)) {
                    Ok(Some(member)) => member,
                    Ok(None) => return ControlFlow::Continue(()),
                    Err(error) => {
                        bad = Some(error);
                        return ControlFlow::Break(());
                    }
                };
                if member.removed {
                    // Ours (from before a crash), or an older change's
                    // that was not cleaned up: either way it may go.
                    if member.by == ordinal {
                        removed += 1;
                    }
                    cleanup.tombstones.push((key.to_owned(), revision));
                } else if member.seen_in != Some(snapshot) {
                    removed += 1;
                    leaving.push((key.to_owned(), member));
                }
                ControlFlow::Continue(())
            })
            .await?;
        if let Some(error) = bad {
            return Err(error);
        }
        let mut journal = Vec::with_capacity(leaving.len());
        let mut tombstones = Vec::with_capacity(leaving.len());
        for (key, member) in leaving {
            if needs_index(&member.user, &member.d) {
                cleanup
                    .index
                    .push((index_key(cohort, &member.d), member.user.clone()));
            }
            journal.push(self.journal_entry(
                cohort,
                meta,
                &member.user,
                ChangeOp::Remove,
                ordinal,
                now,
            )?);
            tombstones.push((key, tombstone(member, ordinal)?));
        }
        let mut stale_unmatched = Vec::new();
        self.inner
            .members
            .scan(&format!("u.{cohort}.>"), |key, value, revision| {
                if let Ok(Some(unmatched)) =
                    decode::<UnmatchedValue>("unmatched member", Some(&value))
                    && unmatched.seen_in != Some(snapshot)
                {
                    stale_unmatched.push((key.to_owned(), revision));
                }
                ControlFlow::Continue(())
            })
            .await?;
        self.write(lock, &self.inner.journal, journal).await?;
        self.fault("journal_written")?;
        let keys: Vec<String> = tombstones.iter().map(|(key, _)| key.clone()).collect();
        let revisions = self.write(lock, &self.inner.members, tombstones).await?;
        cleanup.tombstones.extend(keys.into_iter().zip(revisions));
        lock.check()?;
        futures_util::stream::iter(stale_unmatched)
            .map(|(key, revision)| async move {
                self.inner.members.purge_through(&key, revision).await
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(removed)
    }

    /// A journal entry for `user` (the entry's revision is its seq).
    fn journal_entry(
        &self,
        cohort: &str,
        meta: &Meta,
        user: &UserRec,
        op: ChangeOp,
        ordinal: u64,
        now: i64,
    ) -> Result<(String, Bytes), StoreError> {
        let value = JournalValue {
            project_id: meta.project_id.clone(),
            cohort_id: meta.cohort_id.clone(),
            user: user.clone(),
            op: op_code(op),
            queued_ms: now,
            by: ordinal,
        };
        Ok((journal_key(cohort, user), encode(&value)?))
    }

    /// Writes in order while the lock holds.
    async fn write(
        &self,
        lock: &CohortLock,
        bucket: &super::bucket::Bucket,
        items: Vec<(String, Bytes)>,
    ) -> Result<Vec<u64>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        bucket
            .put_many(items, self.write_window, || {
                lock.check()?;
                self.fault("write")
            })
            .await
    }

    /// The members (or tombstones) of these users, with their revisions.
    async fn read_members(
        &self,
        cohort: &str,
        users: &[UserRec],
    ) -> Result<Vec<Option<(MemberValue, u64)>>, StoreError> {
        futures_util::stream::iter(users.to_vec())
            .map(|user| async move { self.read_member_revision(cohort, &user).await })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The member (or tombstone) of this user, and its revision.
    async fn read_member_revision(
        &self,
        cohort: &str,
        user: &UserRec,
    ) -> Result<Option<(MemberValue, u64)>, StoreError> {
        let slot = self.inner.members.read(&member_key(cohort, user)).await?;
        Ok(decode::<MemberValue>("member", slot.value.as_ref())?
            .map(|member| (member, slot.revision)))
    }

    /// The member (or tombstone) of this user.
    pub(super) async fn read_member(
        &self,
        cohort: &str,
        user: &UserRec,
    ) -> Result<Option<MemberValue>, StoreError> {
        let slot = self.inner.members.read(&member_key(cohort, user)).await?;
        decode("member", slot.value.as_ref())
    }

    /// A recorded page's content, if all of it is still there.
    async fn load_content(
        &self,
        record: &str,
        entry: &PageRecord,
    ) -> Result<Option<PageContent>, StoreError> {
        let chunks: Vec<Option<Bytes>> = futures_util::stream::iter(0..entry.chunks)
            .map(|index| async move {
                let slot = self
                    .inner
                    .pages
                    .read(&chunk_key(record, &entry.nonce, index))
                    .await?;
                Ok::<_, StoreError>(slot.value)
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut bytes = Vec::new();
        for chunk in chunks {
            let Some(chunk) = chunk else { return Ok(None) };
            bytes.extend_from_slice(&chunk);
        }
        decode("page content", Some(&Bytes::from(bytes)))
    }

    async fn purge_chunks(&self, record: &str, nonce: &str, n_chunks: u32) {
        for index in 0..n_chunks {
            let key = chunk_key(record, nonce, index);
            if let Err(error) = self.inner.pages.purge(&key).await {
                tracing::debug!(error = %error, "Cannot remove a page's content; it expires with the page memory.");
            }
        }
    }

    /// Best effort, once a change is applied: tombstones, index entries of
    /// the members it removed (if they still name them), its page's
    /// content. What is left does no harm: a tombstone is no member, an
    /// index entry is checked before use, content expires.
    async fn clean(&self, cohort: &str, cleanup: Cleanup) {
        let Cleanup {
            tombstones,
            index,
            chunks,
        } = cleanup;
        let tombstones =
            futures_util::stream::iter(tombstones)
                .map(|(key, revision)| async move {
                    self.inner.members.purge_through(&key, revision).await
                })
                .buffer_unordered(READ_CONCURRENCY)
                .try_collect::<Vec<()>>();
        let index = futures_util::stream::iter(index)
            .map(|(key, user)| async move {
                let slot = self.inner.members.read(&key).await?;
                if let Some(entry) = decode::<IndexValue>("member index", slot.value.as_ref())?
                    && entry.user == user
                {
                    self.inner
                        .members
                        .purge_through(&key, slot.revision)
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<()>>();
        let chunks = futures_util::stream::iter(chunks)
            .map(|key| async move { self.inner.pages.purge(&key).await })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<()>>();
        let (tombstones, index, chunks) = tokio::join!(tombstones, index, chunks);
        for error in [tombstones.err(), index.err(), chunks.err()]
            .into_iter()
            .flatten()
        {
            tracing::debug!(cohort, error = %error, "Cannot clean up after a cohort change; harmless, and cleaned at the next snapshot.");
        }
    }
}

/// The answer to a page recorded before.
fn replayed() -> PageOutcome {
    PageOutcome {
        replayed: true,
        ..PageOutcome::default()
    }
}

fn index_entry(cohort: &str, d: &str, user: &UserRec) -> Result<(String, Bytes), StoreError> {
    Ok((
        index_key(cohort, d),
        encode(&IndexValue { user: user.clone() })?,
    ))
}

/// The tombstone change `ordinal` leaves where it removes `member`.
fn tombstone(member: MemberValue, ordinal: u64) -> Result<Bytes, StoreError> {
    encode(&MemberValue {
        by: ordinal,
        removed: true,
        ..member
    })
}
