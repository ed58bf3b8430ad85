//! The embedded membership store: one SQLite database (`cohorts.db`).
//!
//! Durability: WAL mode with `synchronous=FULL`, so a transaction is on
//! disk (fsync'd) when its commit returns; every call of the
//! [`MembershipStore`] trait is one transaction. The connection sits behind
//! a mutex and every call runs on `spawn_blocking`, so the async runtime
//! never waits on the disk. The CLI (`cohorts status`, `dlq --cohorts`)
//! opens its own connection beside a running server; SQLite's locks
//! serialize them (busy timeout 10 s).
//!
//! # Schema, version 1 (`PRAGMA user_version = 1`)
//!
//! - `cohorts(id, project_id, cohort_id, name, n_members, last_sync_ms,
//!   last_confirmed_ms, last_error, braze_name, open_snapshot)`: one row per
//!   cohort; `n_members` is kept in step with `members` in the same
//!   transactions; `open_snapshot` is the snapshot in progress.
//! - `members(cohort, user_kind, user_id, distinct_id, seen_in)`: the
//!   membership; `seen_in` is the snapshot (`snapshots.id`) that last
//!   listed the member, so completing a snapshot removes the rows it did not
//!   mark. `user_kind`: 0 external id, 1 email.
//! - `pending(cohort, user_kind, user_id, op, seq, attempts, not_before_ms,
//!   queued_ms)`: the journal, one row per (cohort, user); `seq` orders it;
//!   a change that failed waits until `not_before_ms`. `op`: 0 add, 1 remove.
//! - `pages(cohort, session_id, action, page, at_ms)`: every page recorded,
//!   for idempotency; rows older than 7 days are pruned as pages arrive
//!   (Mixpanel restarts a failed sync within a minute, and forgets a sync
//!   after 3 days).
//! - `snapshots(id, cohort, session_id, total_pages, n_pages, completed,
//!   started_ms)`, pruned like `pages`; ids are never reused
//!   (`AUTOINCREMENT`), since members keep the id of the last snapshot that
//!   listed them.
//! - `unmatched(cohort, distinct_id, reason, seen_in, at_ms)`.
//! - `dead_letters(id, at_ms, project_id, cohort_id, cohort_name,
//!   user_kind, user_id, op, reason, detail, attempts)`.
//! - `writer_lease(id = 1, owner, expires_ms)`: which writer may drain the
//!   journal (one at a time, so that changes stay in order per user).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, Transaction, TransactionBehavior, params};

use super::{
    ChangeOp, CohortKey, CohortStatus, MembershipPage, MembershipStore, PageKind, PageOutcome,
    PendingChange, RefusedChange, StoreError, UnmatchedMember,
};
pub use super::{CohortDeadLetter, DeadLetterSelection};
use crate::braze::BrazeUser;
use crate::clock::now_ms;
use crate::identity::UnmatchedReason;

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for another one's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long recorded pages are remembered for idempotency.
const PAGE_MEMORY_MS: i64 = 7 * 24 * 3600 * 1000;

/// The embedded [`MembershipStore`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// A second connection for the status queries, so that `/status` and
    /// `/metrics` never wait behind a page being recorded (WAL readers do
    /// not block the writer).
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, a file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let conn = Connection::open(path).map_err(storage)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(storage)?;
        let journal_mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(storage)?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Storage(format!(
                "{} cannot use WAL mode (got {journal_mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(storage)?;
        migrate(&conn)?;
        let reader = Connection::open(path).map_err(storage)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(storage)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_owned(),
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` in one write transaction on a blocking thread.
    async fn transact<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            in_transaction(&conn, TransactionBehavior::Immediate, work)
        })
        .await
        .map_err(|error| StoreError::Storage(format!("store task failed: {error}")))?
    }

    /// Runs `work` in one read transaction on the reader connection.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            in_transaction(&reader, TransactionBehavior::Deferred, work)
        })
        .await
        .map_err(|error| StoreError::Storage(format!("store task failed: {error}")))?
    }

    /// Runs `work` synchronously in one write transaction (for the CLI).
    fn transact_blocking<T>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        in_transaction(&self.conn, TransactionBehavior::Immediate, work)
    }

    /// Dead letters matching `selection`, oldest first, at most `limit`.
    pub fn dead_letters(
        &self,
        selection: &DeadLetterSelection,
        limit: usize,
    ) -> Result<Vec<CohortDeadLetter>, StoreError> {
        let selection = selection.clone();
        self.transact_blocking(move |tx| select_dead_letters(tx, &selection, limit))
    }

    /// Puts matching dead letters back into the journal and deletes them.
    /// What is journaled is the cohort's current state for that user (an
    /// add if the user is a member now, else a remove), so a replay never
    /// undoes a later change. Returns how many were replayed.
    pub fn replay_dead_letters(&self, selection: &DeadLetterSelection) -> Result<u64, StoreError> {
        let selection = selection.clone();
        self.transact_blocking(move |tx| {
            let letters = select_dead_letters(tx, &selection, usize::MAX)?;
            let now = now_ms();
            for (seq, letter) in (next_seq(tx)?..).zip(&letters) {
                // The cohort as it is now (a replay must not bring back an
                // old name).
                let cohort = match find_cohort(tx, &letter.cohort)? {
                    Some(cohort) => cohort,
                    None => cohort_row(tx, &letter.cohort, &letter.cohort_name, now)?,
                };
                let (kind, id) = user_columns(&letter.user);
                let is_member: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS(SELECT 1 FROM members WHERE cohort = ?1 AND user_kind = ?2 AND user_id = ?3)",
                    )?
                    .query_row(params![cohort, kind, id], |row| row.get(0))?;
                let op = if is_member { ChangeOp::Add } else { ChangeOp::Remove };
                journal(tx, cohort, kind, id, op, seq, now)?;
                tx.execute("DELETE FROM dead_letters WHERE id = ?1", [letter.id])?;
            }
            Ok(letters.len() as u64)
        })
    }

    /// Deletes matching dead letters for good; returns how many.
    pub fn purge_dead_letters(&self, selection: &DeadLetterSelection) -> Result<u64, StoreError> {
        let selection = selection.clone();
        self.transact_blocking(move |tx| {
            let letters = select_dead_letters(tx, &selection, usize::MAX)?;
            for letter in &letters {
                tx.execute("DELETE FROM dead_letters WHERE id = ?1", [letter.id])?;
            }
            Ok(letters.len() as u64)
        })
    }

    /// Copies the whole store into a new database at `path` (`VACUUM
    /// INTO`) and opens the copy: a dry run works on it and changes nothing.
    pub fn copy_to(&self, path: &Path) -> Result<SqliteStore, StoreError> {
        {
            let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            let target = path
                .to_str()
                .ok_or_else(|| StoreError::Storage(format!("{} is not UTF-8", path.display())))?;
            conn.execute("VACUUM INTO ?1", [target]).map_err(storage)?;
        }
        SqliteStore::open(path)
    }

    /// Every member of a cohort (for tests and audits), in id order.
    pub fn members(&self, cohort: &CohortKey) -> Result<Vec<BrazeUser>, StoreError> {
        let cohort = cohort.clone();
        self.transact_blocking(move |tx| {
            let mut statement = tx.prepare(
                "SELECT m.user_kind, m.user_id FROM members m JOIN cohorts c ON c.id = m.cohort
                 WHERE c.project_id = ?1 AND c.cohort_id = ?2 ORDER BY m.user_kind, m.user_id",
            )?;
            let rows = statement
                .query_map(params![cohort.project_id, cohort.cohort_id], |row| {
                    Ok(user_from_columns(row.get(0)?, row.get(1)?))
                })?;
            rows.collect()
        })
    }

    /// [`MembershipStore::cohorts`], synchronously (for the CLI).
    pub fn cohorts_blocking(&self) -> Result<Vec<CohortStatus>, StoreError> {
        self.transact_blocking(select_cohorts)
    }
}

impl MembershipStore for SqliteStore {
    async fn apply_page(&self, page: MembershipPage) -> Result<PageOutcome, StoreError> {
        self.transact(move |tx| apply_page(tx, &page)).await
    }

    async fn finish_snapshot(
        &self,
        cohort: &CohortKey,
        session_id: &str,
    ) -> Result<PageOutcome, StoreError> {
        let cohort = cohort.clone();
        let session_id = session_id.to_owned();
        self.transact(move |tx| {
            let now = now_ms();
            let Some(cohort_id) = find_cohort(tx, &cohort)? else {
                return Ok(PageOutcome::default());
            };
            let snapshot: Option<i64> = tx
                .query_row(
                    "SELECT id FROM snapshots WHERE cohort = ?1 AND session_id = ?2",
                    params![cohort_id, session_id],
                    |row| row.get(0),
                )
                .optional()?;
            let snapshot = match snapshot {
                // Still the open one: complete it.
                Some(snapshot) if open_snapshot(tx, cohort_id)? == Some(snapshot) => snapshot,
                // Completed before, or replaced by a newer snapshot.
                Some(_) => {
                    return Ok(PageOutcome {
                        stale: true,
                        ..PageOutcome::default()
                    });
                }
                // No page at all: the cohort is empty, and this empties it.
                None => start_snapshot(tx, cohort_id, &session_id, None, now)?,
            };
            let removed = complete_snapshot(tx, cohort_id, snapshot, now)?;
            Ok(PageOutcome {
                removed,
                snapshot_completed: true,
                ..PageOutcome::default()
            })
        })
        .await
    }

    async fn due_changes(&self, max: usize) -> Result<Vec<PendingChange>, StoreError> {
        self.transact(move |tx| {
            let mut statement = tx.prepare_cached(
                "SELECT c.project_id, c.cohort_id, c.name, p.user_kind, p.user_id, p.op, p.seq,
                        p.attempts, p.queued_ms
                 FROM pending p JOIN cohorts c ON c.id = p.cohort
                 WHERE p.not_before_ms <= ?2
                 ORDER BY p.seq LIMIT ?1",
            )?;
            let now = now_ms();
            let rows = statement.query_map(
                params![i64::try_from(max).unwrap_or(i64::MAX), now],
                |row| {
                    Ok(PendingChange {
                        cohort: CohortKey {
                            project_id: row.get(0)?,
                            cohort_id: row.get(1)?,
                        },
                        cohort_name: row.get(2)?,
                        user: user_from_columns(row.get(3)?, row.get(4)?),
                        op: op_from_column(row.get(5)?),
                        seq: row.get(6)?,
                        attempts: row.get(7)?,
                        queued_at_ms: row.get(8)?,
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    async fn confirm(&self, changes: &[PendingChange]) -> Result<(), StoreError> {
        let changes = changes.to_vec();
        self.transact(move |tx| {
            let now = now_ms();
            let mut delete = tx.prepare_cached(
                "DELETE FROM pending WHERE cohort = (SELECT id FROM cohorts WHERE project_id = ?1 AND cohort_id = ?2)
                 AND user_kind = ?3 AND user_id = ?4 AND seq = ?5",
            )?;
            let mut touch = tx.prepare_cached(
                "UPDATE cohorts SET last_confirmed_ms = ?3 WHERE project_id = ?1 AND cohort_id = ?2",
            )?;
            let mut last_cohort: Option<&CohortKey> = None;
            for change in &changes {
                let (kind, id) = user_columns(&change.user);
                delete.execute(params![
                    change.cohort.project_id,
                    change.cohort.cohort_id,
                    kind,
                    id,
                    change.seq
                ])?;
                if last_cohort != Some(&change.cohort) {
                    touch.execute(params![change.cohort.project_id, change.cohort.cohort_id, now])?;
                    last_cohort = Some(&change.cohort);
                }
            }
            Ok(())
        })
        .await
    }

    async fn defer(&self, changes: &[PendingChange], retry_at_ms: i64) -> Result<(), StoreError> {
        let changes = changes.to_vec();
        self.transact(move |tx| {
            let mut update = tx.prepare_cached(
                "UPDATE pending SET attempts = attempts + 1, not_before_ms = ?6
                 WHERE cohort = (SELECT id FROM cohorts WHERE project_id = ?1 AND cohort_id = ?2)
                 AND user_kind = ?3 AND user_id = ?4 AND seq = ?5",
            )?;
            for change in &changes {
                let (kind, id) = user_columns(&change.user);
                update.execute(params![
                    change.cohort.project_id,
                    change.cohort.cohort_id,
                    kind,
                    id,
                    change.seq,
                    retry_at_ms
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn hold_writer_lease(
        &self,
        owner: &str,
        lease: Duration,
        take_over: bool,
    ) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.transact(move |tx| {
            let now = now_ms();
            let held = tx.execute(
                "INSERT INTO writer_lease (id, owner, expires_ms) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
                 WHERE ?4 OR writer_lease.owner = excluded.owner OR writer_lease.expires_ms <= ?3",
                params![owner, now.saturating_add(lease_ms), now, take_over],
            )?;
            Ok(held == 1)
        })
        .await
    }

    /// Always held: one `serve` at a time has a data dir (its lock), so
    /// one process pulls on the schedule.
    async fn hold_pull_lease(&self, _owner: &str, _lease: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn dead_letter(&self, refused: Vec<RefusedChange>) -> Result<(), StoreError> {
        self.transact(move |tx| {
            let now = now_ms();
            let mut delete = tx.prepare_cached(
                "DELETE FROM pending WHERE cohort = (SELECT id FROM cohorts WHERE project_id = ?1 AND cohort_id = ?2)
                 AND user_kind = ?3 AND user_id = ?4 AND seq = ?5",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO dead_letters (at_ms, project_id, cohort_id, cohort_name, user_kind, user_id, op, reason, detail, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for RefusedChange {
                change,
                reason,
                detail,
            } in &refused
            {
                let (kind, id) = user_columns(&change.user);
                let deleted = delete.execute(params![
                    change.cohort.project_id,
                    change.cohort.cohort_id,
                    kind,
                    id,
                    change.seq
                ])?;
                // A newer change replaced it meanwhile: that one will be
                // sent; this one is moot.
                if deleted == 0 {
                    continue;
                }
                insert.execute(params![
                    now,
                    change.cohort.project_id,
                    change.cohort.cohort_id,
                    change.cohort_name,
                    kind,
                    id,
                    op_column(change.op),
                    reason,
                    detail,
                    change.attempts + 1,
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn record_error(
        &self,
        cohort: &CohortKey,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let cohort = cohort.clone();
        self.transact(move |tx| {
            tx.execute(
                "UPDATE cohorts SET last_error = ?3 WHERE project_id = ?1 AND cohort_id = ?2",
                params![cohort.project_id, cohort.cohort_id, error],
            )?;
            Ok(())
        })
        .await
    }

    async fn record_braze_name(&self, cohort: &CohortKey, name: &str) -> Result<(), StoreError> {
        let cohort = cohort.clone();
        let name = name.to_owned();
        self.transact(move |tx| {
            tx.execute(
                "UPDATE cohorts SET braze_name = ?3 WHERE project_id = ?1 AND cohort_id = ?2",
                params![cohort.project_id, cohort.cohort_id, name],
            )?;
            Ok(())
        })
        .await
    }

    async fn cohorts(&self) -> Result<Vec<CohortStatus>, StoreError> {
        self.read(select_cohorts).await
    }

    async fn unmatched(
        &self,
        cohort: &CohortKey,
        max: usize,
    ) -> Result<Vec<UnmatchedMember>, StoreError> {
        let cohort = cohort.clone();
        self.read(move |tx| {
            let mut statement = tx.prepare(
                "SELECT u.distinct_id, u.reason FROM unmatched u JOIN cohorts c ON c.id = u.cohort
                 WHERE c.project_id = ?1 AND c.cohort_id = ?2 ORDER BY u.distinct_id LIMIT ?3",
            )?;
            let rows = statement.query_map(
                params![
                    cohort.project_id,
                    cohort.cohort_id,
                    i64::try_from(max).unwrap_or(i64::MAX)
                ],
                |row| {
                    let reason: String = row.get(1)?;
                    Ok(UnmatchedMember {
                        distinct_id: row.get(0)?,
                        reason: UnmatchedReason::from_name(&reason)
                            .unwrap_or(UnmatchedReason::NotText),
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }
}

/// Runs `work` in a transaction. Writes use IMMEDIATE transactions: they
/// take the write lock at the start, so that two processes (serve and the
/// CLI) wait for each other (busy timeout) instead of failing on a stale
/// read snapshot.
fn in_transaction<T>(
    conn: &Mutex<Connection>,
    behavior: TransactionBehavior,
    work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
    let tx = conn.transaction_with_behavior(behavior).map_err(storage)?;
    let value = work(&tx).map_err(storage)?;
    tx.commit().map_err(storage)?;
    Ok(value)
}

/// Records one page in `tx`. See the module contract.
fn apply_page(tx: &Transaction<'_>, page: &MembershipPage) -> rusqlite::Result<PageOutcome> {
    let now = now_ms();
    let cohort = cohort_row(tx, &page.cohort, &page.cohort_name, now)?;
    let is_new = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO pages (cohort, session_id, action, page, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            cohort,
            page.session_id,
            page.kind.as_action(),
            page.page,
            now
        ])?
        == 1;
    if !is_new {
        return Ok(PageOutcome {
            replayed: true,
            ..PageOutcome::default()
        });
    }
    // Forget what Mixpanel can no longer replay (both use an index on
    // age, so this costs nothing when there is nothing to forget).
    tx.prepare_cached("DELETE FROM pages WHERE at_ms < ?1")?
        .execute([now - PAGE_MEMORY_MS])?;
    tx.prepare_cached("DELETE FROM snapshots WHERE started_ms < ?1")?
        .execute([now - PAGE_MEMORY_MS])?;
    let mut outcome = PageOutcome::default();
    let mut seq = next_seq(tx)?;
    // A snapshot page marks its members as seen in its snapshot; a diff
    // page that adds during an open snapshot marks them as seen in it too,
    // so that completing the snapshot does not remove them.
    let snapshot = match page.kind {
        PageKind::Snapshot => match snapshot_for(tx, cohort, page, now)? {
            Some(snapshot) => Some(snapshot),
            None => {
                return Ok(PageOutcome {
                    stale: true,
                    ..PageOutcome::default()
                });
            }
        },
        PageKind::Add => open_snapshot(tx, cohort)?,
        PageKind::Remove => None,
    };
    let mut n_members_delta: i64 = 0;
    for member in &page.members {
        let change = match (page.kind, &member.identity) {
            (PageKind::Snapshot | PageKind::Add, Ok(user)) => {
                add_member(tx, cohort, user, &member.distinct_id, snapshot, now)?
            }
            (PageKind::Snapshot | PageKind::Add, Err(reason)) => {
                outcome.unmatched += 1;
                tx.prepare_cached(
                    "INSERT INTO unmatched (cohort, distinct_id, reason, seen_in, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (cohort, distinct_id) DO UPDATE SET reason = excluded.reason, seen_in = excluded.seen_in, at_ms = excluded.at_ms",
                )?
                .execute(params![cohort, member.distinct_id, reason.as_str(), snapshot, now])?;
                None
            }
            (PageKind::Remove, identity) => {
                tx.prepare_cached("DELETE FROM unmatched WHERE cohort = ?1 AND distinct_id = ?2")?
                    .execute(params![cohort, member.distinct_id])?;
                remove_member(tx, cohort, identity.as_ref().ok(), &member.distinct_id)?
            }
        };
        if let Some((kind, id, op)) = change {
            journal(tx, cohort, kind, &id, op, seq, now)?;
            seq += 1;
            match op {
                ChangeOp::Add => {
                    outcome.added += 1;
                    n_members_delta += 1;
                }
                ChangeOp::Remove => {
                    outcome.removed += 1;
                    n_members_delta -= 1;
                }
            }
        }
    }
    tx.prepare_cached(
        "UPDATE cohorts SET n_members = n_members + ?2, last_sync_ms = ?3 WHERE id = ?1",
    )?
    .execute(params![cohort, n_members_delta, now])?;
    if let (PageKind::Snapshot, Some(snapshot), Some(total_pages)) =
        (page.kind, snapshot, page.total_pages)
    {
        let n_pages: u32 = tx
            .prepare_cached(
                "UPDATE snapshots SET n_pages = n_pages + 1 WHERE id = ?1 RETURNING n_pages",
            )?
            .query_row([snapshot], |row| row.get(0))?;
        if n_pages >= total_pages {
            outcome.removed += complete_snapshot(tx, cohort, snapshot, now)?;
            outcome.snapshot_completed = true;
        }
    }
    Ok(outcome)
}

/// A change to journal: the user's columns and the operation.
type Change = (i64, String, ChangeOp);

/// Makes `user` a member. In a snapshot the member is marked as seen in
/// it; an add page leaves a known member as it is. Returns the add to
/// journal if the user was not a member.
fn add_member(
    tx: &Transaction<'_>,
    cohort: i64,
    user: &BrazeUser,
    distinct_id: &str,
    snapshot: Option<i64>,
    _now: i64,
) -> rusqlite::Result<Option<Change>> {
    let (kind, id) = user_columns(user);
    if let Some(snapshot) = snapshot {
        let marked = tx
            .prepare_cached(
                "UPDATE members SET seen_in = ?4 WHERE cohort = ?1 AND user_kind = ?2 AND user_id = ?3",
            )?
            .execute(params![cohort, kind, id, snapshot])?;
        if marked == 1 {
            // `distinct_id` is rewritten only when it changed: rewriting
            // it always would touch its index for every member of every
            // snapshot.
            tx.prepare_cached(
                "UPDATE members SET distinct_id = ?4 WHERE cohort = ?1 AND user_kind = ?2 AND user_id = ?3 AND distinct_id != ?4",
            )?
            .execute(params![cohort, kind, id, distinct_id])?;
            return Ok(None);
        }
    }
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO members (cohort, user_kind, user_id, distinct_id, seen_in) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![cohort, kind, id, distinct_id, snapshot])?;
    Ok((inserted == 1).then(|| (kind, id.to_owned(), ChangeOp::Add)))
}

/// Removes a member, found by its Braze user or else by its
/// `distinct_id` (a leaving member may no longer carry the property its
/// id came from). Returns the remove to journal if it was a member.
fn remove_member(
    tx: &Transaction<'_>,
    cohort: i64,
    user: Option<&BrazeUser>,
    distinct_id: &str,
) -> rusqlite::Result<Option<Change>> {
    if let Some(user) = user {
        let (kind, id) = user_columns(user);
        let deleted = tx
            .prepare_cached(
                "DELETE FROM members WHERE cohort = ?1 AND user_kind = ?2 AND user_id = ?3",
            )?
            .execute(params![cohort, kind, id])?;
        if deleted == 1 {
            return Ok(Some((kind, id.to_owned(), ChangeOp::Remove)));
        }
    }
    Ok(remove_by_distinct_id(tx, cohort, distinct_id)?
        .map(|(kind, id)| (kind, id, ChangeOp::Remove)))
}

/// The snapshot a page of session `page.session_id` belongs to: the
/// cohort's open snapshot if it is that session's, a new one (which
/// abandons any other open snapshot) if the session is new, or `None` if
/// the session was abandoned or completed before: its late pages change
/// nothing, or they would undo what the newer snapshot recorded.
fn snapshot_for(
    tx: &Transaction<'_>,
    cohort: i64,
    page: &MembershipPage,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let existing: Option<i64> = tx
        .prepare_cached("SELECT id FROM snapshots WHERE cohort = ?1 AND session_id = ?2")?
        .query_row(params![cohort, page.session_id], |row| row.get(0))
        .optional()?;
    match existing {
        Some(id) if open_snapshot(tx, cohort)? == Some(id) => Ok(Some(id)),
        Some(_) => Ok(None),
        None => start_snapshot(tx, cohort, &page.session_id, page.total_pages, now).map(Some),
    }
}

/// The cohort's snapshot in progress, if any.
fn open_snapshot(tx: &Transaction<'_>, cohort: i64) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached("SELECT open_snapshot FROM cohorts WHERE id = ?1")?
        .query_row([cohort], |row| row.get(0))
}

/// Starts a snapshot and makes it the cohort's open one.
fn start_snapshot(
    tx: &Transaction<'_>,
    cohort: i64,
    session_id: &str,
    total_pages: Option<u32>,
    now: i64,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO snapshots (cohort, session_id, total_pages, n_pages, completed, started_ms) VALUES (?1, ?2, ?3, 0, 0, ?4)",
    )?
    .execute(params![cohort, session_id, total_pages, now])?;
    let snapshot = tx.last_insert_rowid();
    tx.prepare_cached("UPDATE cohorts SET open_snapshot = ?2 WHERE id = ?1")?
        .execute(params![cohort, snapshot])?;
    Ok(snapshot)
}

/// Removes (and journals) every member the snapshot did not list, forgets
/// unmatched members it did not list, and marks it complete. Returns the
/// number removed. The removals are journaled by one statement, so that
/// memory does not grow with the cohort.
fn complete_snapshot(
    tx: &Transaction<'_>,
    cohort: i64,
    snapshot: i64,
    now: i64,
) -> rusqlite::Result<u64> {
    let base_seq = next_seq(tx)? - 1;
    let removed = tx
        .prepare_cached(
            "INSERT INTO pending (cohort, user_kind, user_id, op, seq, attempts, not_before_ms, queued_ms)
             SELECT cohort, user_kind, user_id, 1, ?3 + ROW_NUMBER() OVER (), 0, 0, ?4
             FROM members WHERE cohort = ?1 AND (seen_in IS NULL OR seen_in != ?2)
             ON CONFLICT (cohort, user_kind, user_id) DO UPDATE SET op = excluded.op, seq = excluded.seq,
                 attempts = 0, not_before_ms = 0, queued_ms = excluded.queued_ms",
        )?
        .execute(params![cohort, snapshot, base_seq, now])? as u64;
    tx.prepare_cached(
        "DELETE FROM members WHERE cohort = ?1 AND (seen_in IS NULL OR seen_in != ?2)",
    )?
    .execute(params![cohort, snapshot])?;
    tx.prepare_cached(
        "DELETE FROM unmatched WHERE cohort = ?1 AND (seen_in IS NULL OR seen_in != ?2)",
    )?
    .execute(params![cohort, snapshot])?;
    tx.prepare_cached("UPDATE snapshots SET completed = 1 WHERE id = ?1")?
        .execute([snapshot])?;
    tx.prepare_cached(
        "UPDATE cohorts SET n_members = n_members - ?2, last_sync_ms = ?3, open_snapshot = NULL WHERE id = ?1",
    )?
    .execute(params![cohort, removed as i64, now])?;
    Ok(removed)
}

/// Deletes the member with this `distinct_id`, returning its Braze user.
fn remove_by_distinct_id(
    tx: &Transaction<'_>,
    cohort: i64,
    distinct_id: &str,
) -> rusqlite::Result<Option<(i64, String)>> {
    if distinct_id.is_empty() {
        return Ok(None);
    }
    let found: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT user_kind, user_id FROM members WHERE cohort = ?1 AND distinct_id = ?2 LIMIT 1",
        )?
        .query_row(params![cohort, distinct_id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    if let Some((kind, id)) = &found {
        tx.prepare_cached(
            "DELETE FROM members WHERE cohort = ?1 AND user_kind = ?2 AND user_id = ?3",
        )?
        .execute(params![cohort, kind, id])?;
    }
    Ok(found)
}

/// Journals `op` for a user, replacing any older change for it.
fn journal(
    tx: &Transaction<'_>,
    cohort: i64,
    kind: i64,
    id: &str,
    op: ChangeOp,
    seq: i64,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO pending (cohort, user_kind, user_id, op, seq, attempts, not_before_ms, queued_ms) VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6)
         ON CONFLICT (cohort, user_kind, user_id) DO UPDATE SET op = excluded.op, seq = excluded.seq, attempts = 0, not_before_ms = 0, queued_ms = excluded.queued_ms",
    )?
    .execute(params![cohort, kind, id, op_column(op), seq, now])?;
    Ok(())
}

/// The next journal sequence number.
fn next_seq(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM pending")?
        .query_row([], |row| row.get(0))
}

/// The cohort's row id, created if new; its name is brought up to date.
fn cohort_row(
    tx: &Transaction<'_>,
    cohort: &CohortKey,
    name: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO cohorts (project_id, cohort_id, name, n_members, created_ms) VALUES (?1, ?2, ?3, 0, ?4)
         ON CONFLICT (project_id, cohort_id) DO UPDATE SET name = CASE WHEN excluded.name = '' THEN name ELSE excluded.name END",
    )?
    .execute(params![cohort.project_id, cohort.cohort_id, name, now])?;
    tx.prepare_cached("SELECT id FROM cohorts WHERE project_id = ?1 AND cohort_id = ?2")?
        .query_row(params![cohort.project_id, cohort.cohort_id], |row| {
            row.get(0)
        })
}

fn find_cohort(tx: &Transaction<'_>, cohort: &CohortKey) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached("SELECT id FROM cohorts WHERE project_id = ?1 AND cohort_id = ?2")?
        .query_row(params![cohort.project_id, cohort.cohort_id], |row| {
            row.get(0)
        })
        .optional()
}

fn select_cohorts(tx: &Transaction<'_>) -> rusqlite::Result<Vec<CohortStatus>> {
    let mut statement = tx.prepare(
        "SELECT c.project_id, c.cohort_id, c.name, c.n_members,
                (SELECT COUNT(*) FROM pending p WHERE p.cohort = c.id),
                (SELECT COUNT(*) FROM unmatched u WHERE u.cohort = c.id),
                (SELECT COUNT(*) FROM dead_letters d WHERE d.project_id = c.project_id AND d.cohort_id = c.cohort_id),
                c.last_sync_ms, c.last_confirmed_ms, c.last_error, c.braze_name
         FROM cohorts c ORDER BY c.project_id, c.cohort_id",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(CohortStatus {
            cohort: CohortKey {
                project_id: row.get(0)?,
                cohort_id: row.get(1)?,
            },
            name: row.get(2)?,
            members: row.get::<_, i64>(3)?.max(0) as u64,
            pending: row.get::<_, i64>(4)? as u64,
            unmatched: row.get::<_, i64>(5)? as u64,
            dead_letters: row.get::<_, i64>(6)? as u64,
            last_sync_ms: row.get(7)?,
            last_confirmed_ms: row.get(8)?,
            last_error: row.get(9)?,
            braze_name: row.get(10)?,
        })
    })?;
    rows.collect()
}

fn select_dead_letters(
    tx: &Transaction<'_>,
    selection: &DeadLetterSelection,
    limit: usize,
) -> rusqlite::Result<Vec<CohortDeadLetter>> {
    let mut statement = tx.prepare(
        "SELECT id, at_ms, project_id, cohort_id, cohort_name, user_kind, user_id, op, reason, detail, attempts
         FROM dead_letters
         WHERE (?1 IS NULL OR reason = ?1) AND (?2 IS NULL OR cohort_id = ?2)
           AND (?3 IS NULL OR at_ms >= ?3) AND (?4 IS NULL OR at_ms < ?4)
         ORDER BY id",
    )?;
    let rows = statement.query_map(
        params![
            selection.reason,
            selection.cohort_id,
            selection.since_ms,
            selection.until_ms
        ],
        |row| {
            Ok(CohortDeadLetter {
                id: row.get(0)?,
                at_ms: row.get(1)?,
                cohort: CohortKey {
                    project_id: row.get(2)?,
                    cohort_id: row.get(3)?,
                },
                cohort_name: row.get(4)?,
                user: user_from_columns(row.get(5)?, row.get(6)?),
                op: op_from_column(row.get(7)?),
                reason: row.get(8)?,
                detail: row.get(9)?,
                attempts: row.get(10)?,
            })
        },
    )?;
    let mut letters = Vec::new();
    for letter in rows {
        let letter = letter?;
        if !selection.ids.is_empty() && !selection.ids.contains(&letter.id) {
            continue;
        }
        letters.push(letter);
        if letters.len() >= limit {
            break;
        }
    }
    Ok(letters)
}

fn user_columns(user: &BrazeUser) -> (i64, &str) {
    match user {
        BrazeUser::ExternalId(id) => (0, id),
        BrazeUser::Email(email) => (1, email),
    }
}

fn user_from_columns(kind: i64, id: String) -> BrazeUser {
    match kind {
        1 => BrazeUser::Email(id),
        _ => BrazeUser::ExternalId(id),
    }
}

fn op_column(op: ChangeOp) -> i64 {
    match op {
        ChangeOp::Add => 0,
        ChangeOp::Remove => 1,
    }
}

fn op_from_column(column: i64) -> ChangeOp {
    if column == 1 {
        ChangeOp::Remove
    } else {
        ChangeOp::Add
    }
}

fn storage(error: rusqlite::Error) -> StoreError {
    StoreError::Storage(error.to_string())
}

/// Creates the directory readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|error| StoreError::Storage(format!("cannot create {}: {error}", dir.display())))
}

/// Creates or checks the schema.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(storage)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version != 0 {
        return Err(StoreError::Storage(format!(
            "cohort store schema version {version} is not {SCHEMA_VERSION}: written by another version of the bridge"
        )));
    }
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE cohorts (
             id INTEGER PRIMARY KEY,
             project_id TEXT NOT NULL,
             cohort_id TEXT NOT NULL,
             name TEXT NOT NULL,
             n_members INTEGER NOT NULL,
             created_ms INTEGER NOT NULL,
             last_sync_ms INTEGER,
             last_confirmed_ms INTEGER,
             last_error TEXT,
             braze_name TEXT,
             open_snapshot INTEGER,
             UNIQUE (project_id, cohort_id)
         );
         CREATE TABLE members (
             cohort INTEGER NOT NULL,
             user_kind INTEGER NOT NULL,
             user_id TEXT NOT NULL,
             distinct_id TEXT NOT NULL,
             seen_in INTEGER,
             PRIMARY KEY (cohort, user_kind, user_id)
         ) WITHOUT ROWID;
         CREATE INDEX members_by_distinct_id ON members (cohort, distinct_id);
         CREATE TABLE pending (
             cohort INTEGER NOT NULL,
             user_kind INTEGER NOT NULL,
             user_id TEXT NOT NULL,
             op INTEGER NOT NULL,
             seq INTEGER NOT NULL,
             attempts INTEGER NOT NULL,
             not_before_ms INTEGER NOT NULL,
             queued_ms INTEGER NOT NULL,
             PRIMARY KEY (cohort, user_kind, user_id)
         ) WITHOUT ROWID;
         CREATE UNIQUE INDEX pending_by_seq ON pending (seq);
         CREATE TABLE pages (
             cohort INTEGER NOT NULL,
             session_id TEXT NOT NULL,
             action TEXT NOT NULL,
             page INTEGER NOT NULL,
             at_ms INTEGER NOT NULL,
             PRIMARY KEY (cohort, session_id, action, page)
         ) WITHOUT ROWID;
         CREATE INDEX pages_by_age ON pages (at_ms);
         CREATE TABLE snapshots (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             cohort INTEGER NOT NULL,
             session_id TEXT NOT NULL,
             total_pages INTEGER,
             n_pages INTEGER NOT NULL,
             completed INTEGER NOT NULL,
             started_ms INTEGER NOT NULL,
             UNIQUE (cohort, session_id)
         );
         CREATE INDEX snapshots_by_age ON snapshots (started_ms);
         CREATE TABLE unmatched (
             cohort INTEGER NOT NULL,
             distinct_id TEXT NOT NULL,
             reason TEXT NOT NULL,
             seen_in INTEGER,
             at_ms INTEGER NOT NULL,
             PRIMARY KEY (cohort, distinct_id)
         ) WITHOUT ROWID;
         CREATE TABLE dead_letters (
             id INTEGER PRIMARY KEY,
             at_ms INTEGER NOT NULL,
             project_id TEXT NOT NULL,
             cohort_id TEXT NOT NULL,
             cohort_name TEXT NOT NULL,
             user_kind INTEGER NOT NULL,
             user_id TEXT NOT NULL,
             op INTEGER NOT NULL,
             reason TEXT NOT NULL,
             detail TEXT NOT NULL,
             attempts INTEGER NOT NULL
         );
         CREATE INDEX dead_letters_by_cohort ON dead_letters (project_id, cohort_id);
         CREATE TABLE writer_lease (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             owner TEXT NOT NULL,
             expires_ms INTEGER NOT NULL
         );
         PRAGMA user_version = 1;
         COMMIT;",
    )
    .map_err(storage)
}

#[cfg(test)]
mod tests;
