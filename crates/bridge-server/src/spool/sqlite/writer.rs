//! The writer thread: the one connection that writes to the spool, and group
//! commit.
//!
//! Callers send [`Request`]s over a channel, each with a oneshot for its
//! answer. The thread takes the first request, drains whatever else is
//! already waiting (up to [`GroupLimits`]), applies them all in one
//! `BEGIN IMMEDIATE` transaction, commits once (one WAL fsync under
//! `synchronous=FULL`), and only then answers every request. When anything in
//! the group fails, the transaction is rolled back and every request gets
//! [`SpoolError::Storage`]: nothing is acknowledged that was not committed.
//!
//! A failure that says the storage itself is unreliable (an I/O error, which
//! includes a failed fsync, or corruption) marks the spool failed for good:
//! after a failed fsync the kernel may have dropped the dirty pages, so no
//! later success could be trusted. Every later call gets
//! [`SpoolError::Storage`] and the process should restart (which checks the
//! file and recovers; see [`super::recovery`]). Other failures (disk full, the
//! CLI holding the write lock past the busy timeout) fail only their group.
//!
//! Failures are logged per episode ([`StorageFailureLog`], on `crate::log_limit`):
//! a full disk fails every group commit, many a second, so the first failure
//! is logged at error level with its error, then at most one summary per
//! interval with the count and the latest error, then one info line when
//! commits succeed again. Failed maintenance is logged the same way at
//! warning level. The failure that stops the spool for good is logged
//! whatever the episode, once: nothing is committed after it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use super::schema::{self, BatchRecord, Damage, DeadLetterRecord, StoredBatch, Totals};
use crate::log_limit::{Episode, Line, SUMMARY_INTERVAL};
use crate::spool::{BatchId, DeadLetter, LeaseLimits, LeasedBatch, SpoolError};

/// How often, at most, the writer looks at free pages and the WAL.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Pages given back per maintenance step while the spool is running (16 MB
/// at the default page size), so one step never holds the write lock long.
const VACUUM_STEP_PAGES: i64 = 4096;

/// One request to the writer.
pub(crate) enum Request {
    /// Store a batch.
    Append {
        /// The row to insert.
        record: BatchRecord,
        /// Its id once committed.
        answer: oneshot::Sender<Result<BatchId, SpoolError>>,
    },
    /// Lease due batches.
    Lease {
        /// How many, and how many bytes.
        limits: LeaseLimits,
        /// For this long.
        lease_ms: i64,
        /// The batches once their leases are committed.
        answer: oneshot::Sender<Result<Vec<LeasedBatch>, SpoolError>>,
    },
    /// Remove a batch and store its dead letters.
    Settle {
        /// The batch.
        id: BatchId,
        /// Its dead letters.
        dead_letters: Vec<DeadLetter>,
        /// Done once committed.
        answer: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Give a batch back for later.
    Release {
        /// The batch.
        id: BatchId,
        /// Due again after this.
        retry_in_ms: i64,
        /// Done once committed.
        answer: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Finish what is queued before this, checkpoint, and stop.
    Shutdown {
        /// Answered when the WAL is checkpointed, just before the thread ends.
        answer: oneshot::Sender<()>,
    },
}

impl Request {
    /// Body bytes this request reserved against the size bound.
    fn reserved_bytes(&self) -> u64 {
        match self {
            Request::Append { record, .. } => record.body.len() as u64,
            _ => 0,
        }
    }

    /// Whether the commit holding this request must reach the disk before
    /// it is answered. Only an append must: its answer lets the ingest
    /// endpoint acknowledge a batch to Braze. A lease, settle or release
    /// that a power loss undoes (the machine failing, not the process: a
    /// killed process loses nothing the kernel holds) only makes a batch
    /// due again: delivered a second time at worst (Mixpanel keeps one
    /// event per `$insert_id`), its dead letters written again with it.
    /// WAL commits are ordered, so the next append's fsync makes the
    /// earlier commits durable too, and a checkpoint does without appends.
    fn needs_fsync(&self) -> bool {
        matches!(self, Request::Append { .. })
    }

    /// Answers with `error`.
    fn refuse(self, error: SpoolError) {
        match self {
            Request::Append { answer, .. } => {
                let _ = answer.send(Err(error));
            }
            Request::Lease { answer, .. } => {
                let _ = answer.send(Err(error));
            }
            Request::Settle { answer, .. } | Request::Release { answer, .. } => {
                let _ = answer.send(Err(error));
            }
            Request::Shutdown { answer } => {
                let _ = answer.send(());
            }
        }
    }
}

/// State shared between the spool handle and its writer thread.
pub(crate) struct Shared {
    /// Set by `close` (or drop); nothing more is accepted.
    pub(crate) closed: AtomicBool,
    /// Body bytes committed, as of the last commit.
    pub(crate) committed_bytes: AtomicU64,
    /// Body bytes of appends sent to the writer and not yet answered.
    pub(crate) pending_bytes: AtomicU64,
    /// Transactions committed for requests.
    pub(crate) n_commits: AtomicU64,
    /// Of those, the ones fsync'd before they were answered (those with
    /// appends).
    pub(crate) n_synced_commits: AtomicU64,
    /// Set when the storage failed in a way no later success can undo.
    pub(crate) failure: Mutex<Option<String>>,
    /// The size bound.
    pub(crate) max_bytes: u64,
}

impl Shared {
    /// The error every call gets once the spool has failed, if it has.
    pub(crate) fn failure(&self) -> Option<SpoolError> {
        self.failure_message().map(SpoolError::Storage)
    }

    /// Why the spool failed for good, if it did: the text of
    /// [`SpoolError::Storage`], not yet wrapped in it.
    fn failure_message(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Marks the spool failed for good; the first message stays.
    pub(crate) fn fail(&self, message: String) {
        let mut failure = self
            .failure
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        failure.get_or_insert(message);
    }

    /// Reserves `n_bytes` for an append, or says the spool is full.
    pub(crate) fn reserve(&self, n_bytes: u64) -> Result<(), SpoolError> {
        let pending_after = self.pending_bytes.fetch_add(n_bytes, Ordering::AcqRel) + n_bytes;
        let committed = self.committed_bytes.load(Ordering::Acquire);
        if committed.saturating_add(pending_after) > self.max_bytes {
            self.pending_bytes.fetch_sub(n_bytes, Ordering::AcqRel);
            return Err(SpoolError::Full {
                n_bytes: committed.saturating_add(pending_after - n_bytes),
                max_bytes: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Gives back a reservation.
    pub(crate) fn unreserve(&self, n_bytes: u64) {
        self.pending_bytes.fetch_sub(n_bytes, Ordering::AcqRel);
    }
}

/// How much one group may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLimits {
    /// Requests per transaction.
    pub(crate) max_requests: usize,
    /// Appended body bytes per transaction.
    pub(crate) max_bytes: u64,
}

/// The writer's failures in the log, an episode each for group commits and
/// for maintenance (see the module doc). Each method takes the time, logs
/// the line that is due and returns it.
#[derive(Debug, Default)]
pub(crate) struct StorageFailureLog {
    commits: Episode,
    maintenance: Episode,
}

/// What one applied request produced, answered after the commit.
enum Applied {
    Appended(i64),
    Leased(Vec<LeasedBatch>),
    Done,
}

/// The writer thread's state.
pub(crate) struct Writer {
    /// The write connection.
    pub(crate) conn: Connection,
    /// The database file, for messages.
    pub(crate) path: PathBuf,
    /// Shared with the handle.
    pub(crate) shared: Arc<Shared>,
    /// Group size.
    pub(crate) limits: GroupLimits,
    /// Free space below which pages are not given back.
    pub(crate) reclaim_min_free_bytes: u64,
    /// Failures, logged per episode.
    pub(crate) failures: StorageFailureLog,
    /// Whether the connection is at `synchronous=FULL` (an fsync per
    /// commit) rather than `NORMAL`; see [`Request::needs_fsync`].
    pub(crate) fsyncs_commits: bool,
}

impl Writer {
    /// Runs until a [`Request::Shutdown`] or until every sender is gone.
    pub(crate) fn run(mut self, requests: mpsc::Receiver<Request>) {
        let span = tracing::info_span!("spool_writer", path = %self.path.display());
        let _entered = span.enter();
        let mut last_maintenance = Instant::now();
        let mut n_commits_at_maintenance = 0;
        loop {
            let first = match requests.recv_timeout(MAINTENANCE_INTERVAL) {
                Ok(request) => request,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let n_commits = self.shared.n_commits.load(Ordering::Relaxed);
                    if n_commits != n_commits_at_maintenance {
                        n_commits_at_maintenance = n_commits;
                        self.maintain(false);
                    }
                    last_maintenance = Instant::now();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut group = Vec::new();
            let mut shutdown = None;
            let mut group_bytes = 0;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                if let Request::Shutdown { answer } = request {
                    shutdown = Some(answer);
                    break;
                }
                group_bytes += request.reserved_bytes();
                group.push(request);
                if group.len() >= self.limits.max_requests || group_bytes >= self.limits.max_bytes {
                    break;
                }
                next = requests.try_recv().ok();
            }
            if !group.is_empty() {
                self.commit_group(group);
            }
            if let Some(answer) = shutdown {
                self.shut_down(&requests);
                let _ = answer.send(());
                return;
            }
            if last_maintenance.elapsed() >= MAINTENANCE_INTERVAL {
                n_commits_at_maintenance = self.shared.n_commits.load(Ordering::Relaxed);
                self.maintain(false);
                last_maintenance = Instant::now();
            }
        }
        self.shut_down(&requests);
    }

    /// Refuses what is still queued, gives back some free pages (bounded, to
    /// keep shutdown quick) and truncates the WAL.
    fn shut_down(&mut self, requests: &mpsc::Receiver<Request>) {
        while let Ok(request) = requests.try_recv() {
            let reserved = request.reserved_bytes();
            request.refuse(SpoolError::Closed);
            self.shared.unreserve(reserved);
        }
        self.maintain(true);
        tracing::debug!("Spool writer stopped.");
    }

    /// Applies `group` in one transaction and answers every request.
    fn commit_group(&mut self, group: Vec<Request>) {
        let group_bytes: u64 = group.iter().map(Request::reserved_bytes).sum();
        // Requests sent just before the spool failed: the failure's message
        // as it is, not wrapped a second time.
        if let Some(message) = self.shared.failure_message() {
            for request in group {
                request.refuse(SpoolError::Storage(message.clone()));
            }
            self.shared.unreserve(group_bytes);
            return;
        }
        let now_ms = crate::clock::now_ms();
        match self.apply(&group, now_ms) {
            Ok((outcomes, totals, quarantined)) => {
                self.shared
                    .committed_bytes
                    .store(totals.n_bytes, Ordering::Release);
                self.shared.unreserve(group_bytes);
                self.shared.n_commits.fetch_add(1, Ordering::Relaxed);
                if self.fsyncs_commits {
                    self.shared.n_synced_commits.fetch_add(1, Ordering::Relaxed);
                }
                self.failures.committed(Instant::now());
                for (batch_id, damage) in quarantined {
                    tracing::error!(
                        batch_id,
                        reason = damage.reason,
                        detail = %damage.detail,
                        "Stored batch is damaged; moved it to quarantine and skipped it."
                    );
                }
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    answer(request, outcome);
                }
            }
            Err(error) => {
                self.shared.unreserve(group_bytes);
                let fatal = matches!(
                    error.sqlite_error_code(),
                    Some(
                        ErrorCode::SystemIoFailure
                            | ErrorCode::DatabaseCorrupt
                            | ErrorCode::NotADatabase
                    )
                );
                let message = format!("{}: {error}", self.path.display());
                if fatal {
                    tracing::error!(
                        error = %error,
                        n_requests = group.len(),
                        "Spool commit failed on an I/O error or corruption; refusing everything from now on, restart the process."
                    );
                    self.shared.fail(format!(
                        "{message} (the spool stopped after this; restart the process)"
                    ));
                } else {
                    self.failures
                        .commit_failed(Instant::now(), &error, group.len());
                }
                for request in group {
                    request.refuse(SpoolError::Storage(message.clone()));
                }
            }
        }
    }

    /// The transaction: every request, the totals, one commit.
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        group: &[Request],
        now_ms: i64,
    ) -> rusqlite::Result<(Vec<Applied>, Totals, Vec<(i64, Damage)>)> {
        let needs_fsync = group.iter().any(Request::needs_fsync);
        if needs_fsync != self.fsyncs_commits {
            let mode = if needs_fsync { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", mode)?;
            self.fsyncs_commits = needs_fsync;
        }
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut quarantined = Vec::new();
        for request in group {
            let outcome = match request {
                Request::Append { record, .. } => Applied::Appended(record.insert(&txn, now_ms)?),
                Request::Lease {
                    limits, lease_ms, ..
                } => Applied::Leased(lease(
                    &txn,
                    *limits,
                    now_ms,
                    now_ms.saturating_add(*lease_ms),
                    &mut quarantined,
                )?),
                Request::Settle {
                    id, dead_letters, ..
                } => {
                    settle(&txn, *id, dead_letters, now_ms)?;
                    Applied::Done
                }
                Request::Release {
                    id, retry_in_ms, ..
                } => {
                    release(&txn, *id, now_ms.saturating_add(*retry_in_ms))?;
                    Applied::Done
                }
                Request::Shutdown { .. } => Applied::Done,
            };
            outcomes.push(outcome);
        }
        let totals = Totals::read(&txn)?;
        txn.commit()?;
        Ok((outcomes, totals, quarantined))
    }

    /// Gives free pages back to the file system when they are many, and
    /// checkpoints the WAL (truncating it when closing). Failures are logged:
    /// the data is safe in the WAL either way.
    fn maintain(&mut self, closing: bool) {
        if self.shared.failure().is_some() {
            return;
        }
        let result = (|| -> rusqlite::Result<()> {
            let page_size: i64 = self
                .conn
                .query_row("PRAGMA page_size", [], |row| row.get(0))?;
            let page_count: i64 = self
                .conn
                .query_row("PRAGMA page_count", [], |row| row.get(0))?;
            let free_pages: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
            let free_bytes = u64::try_from(free_pages.saturating_mul(page_size)).unwrap_or(0);
            if free_pages > 0
                && free_bytes >= self.reclaim_min_free_bytes
                && free_pages.saturating_mul(4) >= page_count
            {
                // Closing gives back a few steps at most, so that shutdown
                // stays quick after a large backlog drained (freeing a
                // 2 GB file page by page takes minutes); the rest is given
                // back by the maintenance of the next run.
                let n_pages = if closing {
                    free_pages.min(VACUUM_STEP_PAGES.saturating_mul(4))
                } else {
                    free_pages.min(VACUUM_STEP_PAGES)
                };
                // Each step of this pragma frees one page: run it to the end.
                let mut statement = self
                    .conn
                    .prepare(&format!("PRAGMA incremental_vacuum({n_pages})"))?;
                let mut rows = statement.query([])?;
                while rows.next()?.is_some() {}
                tracing::debug!(n_pages, "Gave free spool pages back to the file system.");
            }
            let mode = if closing { "TRUNCATE" } else { "PASSIVE" };
            self.conn
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.failures.maintained(Instant::now());
            }
            Err(error) => {
                self.failures
                    .maintenance_failed(Instant::now(), &error, closing);
            }
        }
    }
}

impl StorageFailureLog {
    /// A group commit failed, not for good.
    pub(crate) fn commit_failed(
        &mut self,
        now: Instant,
        error: &rusqlite::Error,
        n_requests: usize,
    ) -> Option<Line> {
        let line = self.commits.occurred(now, SUMMARY_INTERVAL)?;
        match line {
            Line::Started { n_events } => tracing::error!(
                error = %error,
                n_requests,
                n_failed_commits = n_events,
                "Spool commit failed; nothing in it was acknowledged."
            ),
            Line::Summary { n_events, over } | Line::Ended { n_events, over } => {
                tracing::error!(
                    error = %error,
                    n_failed_commits = n_events,
                    over_secs = over.as_secs(),
                    "Spool commits still fail; nothing in them was acknowledged."
                );
            }
        }
        Some(line)
    }

    /// A group commit succeeded.
    pub(crate) fn committed(&mut self, now: Instant) -> Option<Line> {
        let line = self.commits.ended(now, SUMMARY_INTERVAL)?;
        tracing::info!(
            n_failed_commits = line.n_events(),
            over_secs = line.over().as_secs(),
            "Spool commits succeed again."
        );
        Some(line)
    }

    /// Giving back pages or checkpointing the WAL failed.
    pub(crate) fn maintenance_failed(
        &mut self,
        now: Instant,
        error: &rusqlite::Error,
        closing: bool,
    ) -> Option<Line> {
        let line = self.maintenance.occurred(now, SUMMARY_INTERVAL)?;
        match line {
            Line::Started { n_events } => tracing::warn!(
                error = %error,
                closing,
                n_failures = n_events,
                "Spool maintenance failed; will try again."
            ),
            Line::Summary { n_events, over } | Line::Ended { n_events, over } => {
                tracing::warn!(
                    error = %error,
                    closing,
                    n_failures = n_events,
                    over_secs = over.as_secs(),
                    "Spool maintenance still fails; will try again."
                );
            }
        }
        Some(line)
    }

    /// Maintenance succeeded.
    pub(crate) fn maintained(&mut self, now: Instant) -> Option<Line> {
        let line = self.maintenance.ended(now, SUMMARY_INTERVAL)?;
        tracing::info!(
            n_failures = line.n_events(),
            over_secs = line.over().as_secs(),
            "Spool maintenance succeeds again."
        );
        Some(line)
    }
}

/// Sends the outcome to the request's waiter.
fn answer(request: Request, outcome: Applied) {
    match (request, outcome) {
        (Request::Append { answer, .. }, Applied::Appended(id)) => {
            let _ = answer.send(Ok(BatchId(id)));
        }
        (Request::Lease { answer, .. }, Applied::Leased(batches)) => {
            let _ = answer.send(Ok(batches));
        }
        (Request::Settle { answer, .. } | Request::Release { answer, .. }, _) => {
            let _ = answer.send(Ok(()));
        }
        (request, _) => request.refuse(SpoolError::Storage(
            "spool writer paired a request with the wrong outcome".to_owned(),
        )),
    }
}

/// Leases due batches within `limits` until `leased_until_ms`, in id
/// order, counting the delivery in `attempts`; damaged rows go to
/// quarantine instead. A batch is due when its retry delay is over and it
/// is not leased, or its lease has run out.
fn lease(
    conn: &Connection,
    limits: LeaseLimits,
    now_ms: i64,
    leased_until_ms: i64,
    quarantined: &mut Vec<(i64, Damage)>,
) -> rusqlite::Result<Vec<LeasedBatch>> {
    // Find the due ids on the small covering index, in id order, so batches
    // waiting for a retry or leased at the head cost a few bytes each, not a
    // page.
    let due_ids = {
        let mut statement = conn.prepare_cached(
            "SELECT id FROM batches INDEXED BY batches_due
             WHERE visible_at_ms <= ?1
               AND (leased_until_ms IS NULL OR leased_until_ms <= ?1)
             ORDER BY id LIMIT ?2",
        )?;
        let limit = i64::try_from(limits.max_batches).unwrap_or(i64::MAX);
        statement
            .query_map(rusqlite::params![now_ms, limit], |row| row.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut leased = Vec::with_capacity(due_ids.len());
    let mut leased_bytes = 0usize;
    for id in due_ids {
        let decoded = conn
            .prepare_cached(&format!(
                "SELECT {} FROM batches WHERE id = ?1",
                schema::STORED_BATCH_COLUMNS
            ))?
            .query_row([id], StoredBatch::decode)?;
        match decoded {
            Ok(stored) => {
                // A lease is bounded by bytes as well as by count, so that
                // a worker holds a bounded amount of bodies (a larger batch
                // alone when starting a group, so that none is stuck).
                let body_bytes = stored.body.len();
                let first_alone = leased.is_empty() && limits.oversized_alone;
                if !first_alone && leased_bytes + body_bytes > limits.max_bytes {
                    break;
                }
                leased_bytes += body_bytes;
                // `stored.attempts` is read before this increment: the
                // deliveries tried before this one.
                conn.prepare_cached(
                    "UPDATE batches SET leased_until_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
                )?
                .execute([id, leased_until_ms])?;
                leased.push(stored.into_leased());
            }
            Err(damage) => {
                schema::quarantine_batch(conn, id, &damage, now_ms)?;
                quarantined.push((id, damage));
            }
        }
    }
    Ok(leased)
}

/// Deletes the batch and inserts its dead letters. A batch that is already
/// gone (settled by another worker after this one's lease ran out) is left
/// alone, and its dead letters are not stored twice.
fn settle(
    conn: &Connection,
    id: BatchId,
    dead_letters: &[DeadLetter],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let n_deleted = conn
        .prepare_cached("DELETE FROM batches WHERE id = ?1")?
        .execute([id.0])?;
    if n_deleted == 0 {
        tracing::warn!(
            batch_id = id.0,
            n_dead_letters = dead_letters.len(),
            "Settled a batch that is no longer in the spool (settled twice after a lease ran out?); ignored it."
        );
        return Ok(());
    }
    for dead_letter in dead_letters {
        DeadLetterRecord {
            dead_lettered_at_ms: now_ms,
            batch_id: Some(id.0),
            dead_letter,
        }
        .insert(conn)?;
    }
    Ok(())
}

/// Ends the batch's lease and makes it due at `visible_at_ms`. The attempt
/// was already counted when it was leased.
fn release(conn: &Connection, id: BatchId, visible_at_ms: i64) -> rusqlite::Result<()> {
    let n_updated = conn
        .prepare_cached(
            "UPDATE batches SET visible_at_ms = ?2, leased_until_ms = NULL WHERE id = ?1",
        )?
        .execute([id.0, visible_at_ms])?;
    if n_updated == 0 {
        tracing::warn!(
            batch_id = id.0,
            "Released a batch that is no longer in the spool; ignored it."
        );
    }
    Ok(())
}
