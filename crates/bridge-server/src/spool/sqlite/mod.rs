//! The embedded spool: one SQLite database file, no external service.
//!
//! # Durability contract
//!
//! - [`SqliteSpool::append`] answers only after the transaction holding the
//!   batch is committed with `synchronous=FULL` in WAL mode, that is after
//!   the WAL was fsync'd. Only then may the ingest endpoint answer Braze 2xx.
//!   A kill -9 or a power loss loses no acknowledged batch (SQLite's WAL
//!   guarantees; our test covers kill -9 with a real SIGKILL loop).
//! - Only commits holding appends are fsync'd before they are answered
//!   (the writer switches the connection between `synchronous=FULL` and
//!   `NORMAL`). A lease, settle or release that a power loss undoes only
//!   makes a batch due again, delivered twice at worst (Mixpanel keeps one
//!   event per `$insert_id`); WAL commits are ordered, so the next append's
//!   fsync makes the earlier ones durable too. This halves the fsyncs at a
//!   steady rate (`docs/benchmarks.md`, "Cost").
//! - A batch leaves the spool only through [`Spool::settle`], which the
//!   delivery worker calls once Mixpanel accepted it (or its refusals were
//!   dead-lettered): the delete and the dead-letter inserts are one
//!   transaction.
//! - A damaged record never wedges delivery: a row whose body fails its
//!   CRC-32 or length, or that cannot be decoded, is moved to `quarantine`
//!   when it is leased, logged once at error level, counted in
//!   [`SpoolStats::n_quarantined`](crate::spool::SpoolStats) and skipped. A
//!   damaged database file never stops startup: `PRAGMA quick_check` runs at
//!   open, and an unreadable or corrupt file is renamed aside to
//!   `spool.db.corrupt-<unix ms>` (with its `-wal` and `-shm`), kept for
//!   recovery, every row that can still be read is copied into a fresh spool,
//!   and the service starts.
//! - A failed commit is never acknowledged: every request of the group gets
//!   [`SpoolError::Storage`]. An I/O error (which includes a failed fsync) or
//!   corruption stops the spool for good; the process should restart.
//!
//! # Design
//!
//! - **Group commit.** One writer thread owns the only writing connection.
//!   `append`, `lease`, `settle` and `release` send it a request with a
//!   oneshot for the answer; it drains what is waiting (up to
//!   [`SqliteSpoolOptions::max_group_requests`] requests or
//!   [`SqliteSpoolOptions::max_group_bytes`] appended bytes) into one transaction
//!   and one fsync, then answers them all. Concurrent batches share an
//!   fsync; a lone batch still gets its own at once (no timer).
//! - **Nothing blocks the runtime.** The writer is a plain thread;
//!   [`Spool::stats`] runs on `spawn_blocking` inside a span. The CRC-32 of a
//!   body (a few µs for 60 KB) is computed by the caller.
//! - **Leases are visibility timeouts, kept apart from retry delays.** A
//!   batch is due when `visible_at_ms` (its retry delay) is past and it is
//!   not leased (`leased_until_ms` NULL) or its lease has run out. `lease`
//!   sets `leased_until_ms` to now plus the lease time and counts the
//!   delivery in `attempts`; `release` clears the lease and sets
//!   `visible_at_ms` to now plus the delay; `settle` deletes the row. Lease
//!   changes go through the writer. Only one server process uses a spool
//!   (the CLI's [`DeadLetterStore`] never leases), so [`SqliteSpool::open`]
//!   clears every lease: batches a crashed run had leased are due at once
//!   after a restart, while released batches keep their retry delay.
//! - **Size bound.** Stored body bytes are kept in memory (loaded at open,
//!   updated after each commit from the `totals` row, so replays by the CLI
//!   count too) plus the bytes of appends in flight; an append that would go
//!   over [`SqliteSpoolOptions::max_bytes`] gets [`SpoolError::Full`] (503 with
//!   `Retry-After` at the HTTP layer). The bound counts bodies, not SQLite's
//!   pages and indexes, which add a few per cent.
//! - **Space is reclaimed.** Deleted rows free pages, which later appends
//!   reuse, so a steady spool does not grow. The database is created with
//!   `auto_vacuum=INCREMENTAL`: when at least a quarter of the file and
//!   [`SqliteSpoolOptions::reclaim_min_free_bytes`] are free (a drained backlog),
//!   the writer gives pages back with `PRAGMA incremental_vacuum`, 16 MB per
//!   step, at most once a second. It also runs a passive WAL checkpoint at
//!   most once a second, when something was committed; SQLite checkpoints
//!   on its own when the WAL passes 16 MB, and `journal_size_limit`
//!   truncates the WAL back to 64 MB after a checkpoint. `close` gives back
//!   every free page and truncates the WAL to zero.
//! - **Shared with the CLI.** [`DeadLetterStore`] opens the same file from
//!   another process without a writer thread; the busy timeout
//!   ([`SqliteSpoolOptions::busy_timeout`]) makes each side wait for the other's
//!   short transactions.
//!
//! # Storage format, schema version 1 (`PRAGMA user_version = 1`)
//!
//! One file, `<dir>/spool.db` (with SQLite's `spool.db-wal` and
//! `spool.db-shm`), page size 4096, WAL mode, `auto_vacuum=INCREMENTAL`.
//!
//! | table | columns |
//! |---|---|
//! | `batches` | `id` INTEGER PRIMARY KEY AUTOINCREMENT (never reused), `received_at_ms`, `visible_at_ms` (due after this: the retry delay of `release`), `leased_until_ms` NULL (the lease's end; NULL when not leased), `attempts` (deliveries tried: leases handed out), `body_len`, `body_crc32` (CRC-32/IEEE of `body`), `workspace` TEXT NULL, `body` BLOB (the Currents body as received; last, so scans over the small columns do not read it) |
//! | `dead_letters` | `id` INTEGER PRIMARY KEY AUTOINCREMENT, `dead_lettered_at_ms`, `reason`, `detail`, `event_type` NULL, `event_id` NULL, `workspace` NULL, `attempts`, `batch_id` NULL (the batch it came in), `event` BLOB (the event's JSON) |
//! | `quarantine` | `id`, `quarantined_at_ms`, `batch_id`, `reason` (`checksum_mismatch`, `length_mismatch`, `undecodable_row`), `detail`, and the batch's raw `received_at_ms`, `attempts`, `workspace`, `body` |
//! | `totals` | one row: `n_batches`, `n_bytes`, `n_dead_letters`, `n_quarantined`, kept equal to the aggregates by triggers on the three tables, whichever process writes |
//!
//! Indexes: `batches_due (id, visible_at_ms, leased_until_ms)`, a covering
//! index that `lease` scans in id order for due batches (and `open` for
//! leases to clear); `dead_letters (reason)`, `(event_type)`,
//! `(dead_lettered_at_ms)`. A file with a newer `user_version` is refused,
//! never touched.

mod dead_letters;
mod recovery;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

pub use dead_letters::{DeadLetterStore, QuarantineEntry};

/// The spool's database file in `dir`.
pub fn file_path(dir: &Path) -> PathBuf {
    dir.join(schema::FILE_NAME)
}
// Shared with the NATS spool; re-exported where they were first defined.
pub use crate::spool::{DeadLetterEntry, DeadLetterFilter, REPLAY_MAX_EVENTS_PER_BATCH, Replayed};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use self::schema::{BatchRecord, Totals};
use self::writer::{GroupLimits, Request, Shared, StorageFailureLog, Writer};
use crate::spool::{
    BatchId, DeadLetter, LeaseLimits, LeasedBatch, NewBatch, Spool, SpoolError, SpoolStats,
};

/// Where the spool lives and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteSpoolOptions {
    /// The spool directory; created if missing. The database is `spool.db`
    /// inside it.
    pub dir: PathBuf,
    /// Stored body bytes at most; appends beyond get [`SpoolError::Full`].
    pub max_bytes: u64,
    /// How long a transaction waits for another process's lock (the CLI).
    pub busy_timeout: Duration,
    /// Requests per group commit at most.
    pub max_group_requests: usize,
    /// Appended body bytes per group commit at most.
    pub max_group_bytes: u64,
    /// Free space in the file below which no pages are given back.
    pub reclaim_min_free_bytes: u64,
}

impl SqliteSpoolOptions {
    /// The defaults for a spool in `dir` bounded to `max_bytes`: a 5 s busy
    /// timeout, groups of up to 256 requests or 32 MB, pages given back once
    /// 64 MB (and a quarter of the file) are free.
    pub fn new(dir: PathBuf, max_bytes: u64) -> SqliteSpoolOptions {
        SqliteSpoolOptions {
            dir,
            max_bytes,
            busy_timeout: Duration::from_secs(5),
            max_group_requests: 256,
            max_group_bytes: 32 << 20,
            reclaim_min_free_bytes: 64 << 20,
        }
    }
}

/// The embedded spool. See the module doc for the contract and the format.
pub struct SqliteSpool {
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    reader: Arc<Mutex<Connection>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
    busy_timeout: Duration,
}

impl std::fmt::Debug for SqliteSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSpool")
            .field("dir", &self.dir)
            .field("max_bytes", &self.shared.max_bytes)
            .finish_non_exhaustive()
    }
}

impl SqliteSpool {
    /// Opens (or creates) the spool in `config.dir` and starts its writer
    /// thread. Checks the file with `PRAGMA quick_check` first, which reads
    /// the whole file: this blocks, so call it before serving or on
    /// `spawn_blocking`.
    pub fn open(config: SqliteSpoolOptions) -> Result<SqliteSpool, SpoolError> {
        std::fs::create_dir_all(&config.dir).map_err(|error| {
            SpoolError::Storage(format!(
                "cannot create spool directory {}: {error}",
                config.dir.display()
            ))
        })?;
        let path = config.dir.join(schema::FILE_NAME);
        let conn = recovery::open_checked(&path, config.busy_timeout)?;
        let n_recovered_leases = schema::clear_leases(&conn)
            .map_err(|error| schema::storage_error(path.display(), &error))?;
        if n_recovered_leases > 0 {
            tracing::info!(
                n_batches = n_recovered_leases,
                "Recovered batches leased by a previous run; they are due again now."
            );
        }
        let totals =
            Totals::read(&conn).map_err(|error| schema::storage_error(path.display(), &error))?;
        let reader = open_reader(&path, config.busy_timeout)?;
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            committed_bytes: AtomicU64::new(totals.n_bytes),
            pending_bytes: AtomicU64::new(0),
            n_commits: AtomicU64::new(0),
            n_synced_commits: AtomicU64::new(0),
            failure: Mutex::new(None),
            max_bytes: config.max_bytes,
        });
        let writer = Writer {
            conn,
            path: path.clone(),
            shared: Arc::clone(&shared),
            limits: GroupLimits {
                max_requests: config.max_group_requests.max(1),
                max_bytes: config.max_group_bytes.max(1),
            },
            reclaim_min_free_bytes: config.reclaim_min_free_bytes,
            failures: StorageFailureLog::default(),
            fsyncs_commits: true,
        };
        let (requests, receiver) = mpsc::channel();
        let writer_thread = std::thread::Builder::new()
            .name("spool-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|error| {
                SpoolError::Storage(format!("cannot start the spool writer thread: {error}"))
            })?;
        tracing::info!(
            path = %path.display(),
            n_batches = totals.n_batches,
            n_bytes = totals.n_bytes,
            n_dead_letters = totals.n_dead_letters,
            n_quarantined = totals.n_quarantined,
            "Opened the spool."
        );
        Ok(SqliteSpool {
            requests,
            shared,
            reader: Arc::new(Mutex::new(reader)),
            writer_thread: Mutex::new(Some(writer_thread)),
            dir: config.dir,
            busy_timeout: config.busy_timeout,
        })
    }

    /// Opens a [`DeadLetterStore`] on this spool's file (its own connection).
    pub fn dead_letter_store(&self) -> Result<DeadLetterStore, SpoolError> {
        DeadLetterStore::open(&self.dir, self.busy_timeout)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Transactions committed for requests since open. With appends per
    /// commit it shows how much group commit shares.
    pub fn n_commits(&self) -> u64 {
        self.shared.n_commits.load(Ordering::Relaxed)
    }

    /// Of [`SqliteSpool::n_commits`], those fsync'd before they were
    /// answered: the ones holding appends (see the module doc).
    pub fn n_synced_commits(&self) -> u64 {
        self.shared.n_synced_commits.load(Ordering::Relaxed)
    }

    /// Why the spool stopped for good (an I/O error or corruption), if it
    /// did; the process should then restart. Readiness checks use this.
    pub fn failure(&self) -> Option<SpoolError> {
        self.shared.failure()
    }

    /// Stops accepting (every later call gets [`SpoolError::Closed`]),
    /// finishes the writes already queued, gives back free pages, truncates
    /// the WAL and joins the writer thread.
    pub async fn close(&self) -> Result<(), SpoolError> {
        self.shared.closed.store(true, Ordering::Release);
        let (answer, done) = oneshot::channel();
        if self.requests.send(Request::Shutdown { answer }).is_ok() {
            // An error means the writer is already gone, which is what we wait for.
            let _ = done.await;
        }
        let writer_thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(writer_thread) = writer_thread {
            let joined = tokio::task::spawn_blocking(move || writer_thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(SpoolError::Storage(
                    "the spool writer thread panicked".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Refuses when closed or failed.
    fn check_accepting(&self) -> Result<(), SpoolError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(SpoolError::Closed);
        }
        match self.shared.failure() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Sends `request` and waits for its answer.
    async fn call<T>(
        &self,
        request: Request,
        answer: oneshot::Receiver<Result<T, SpoolError>>,
    ) -> Result<T, SpoolError> {
        if self.requests.send(request).is_err() {
            return Err(SpoolError::Closed);
        }
        // A dropped sender means the writer stopped before answering.
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }
}

impl Spool for SqliteSpool {
    async fn append(&self, batch: NewBatch) -> Result<BatchId, SpoolError> {
        self.check_accepting()?;
        let n_bytes = batch.body.len() as u64;
        self.shared.reserve(n_bytes)?;
        let record = BatchRecord::new(batch);
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::SendError(_)) = self.requests.send(Request::Append { record, answer }) {
            self.shared.unreserve(n_bytes);
            return Err(SpoolError::Closed);
        }
        answered.await.unwrap_or(Err(SpoolError::Closed))
    }

    async fn lease_within(
        &self,
        limits: LeaseLimits,
        lease: Duration,
    ) -> Result<Vec<LeasedBatch>, SpoolError> {
        self.check_accepting()?;
        if limits.max_batches == 0 {
            return Ok(Vec::new());
        }
        let (answer, answered) = oneshot::channel();
        let request = Request::Lease {
            limits,
            lease_ms: schema::duration_ms(lease),
            answer,
        };
        self.call(request, answered).await
    }

    async fn settle(&self, id: BatchId, dead_letters: Vec<DeadLetter>) -> Result<(), SpoolError> {
        self.check_accepting()?;
        let (answer, answered) = oneshot::channel();
        let request = Request::Settle {
            id,
            dead_letters,
            answer,
        };
        self.call(request, answered).await
    }

    async fn release(&self, id: BatchId, retry_in: Duration) -> Result<(), SpoolError> {
        self.check_accepting()?;
        let (answer, answered) = oneshot::channel();
        let request = Request::Release {
            id,
            retry_in_ms: schema::duration_ms(retry_in),
            answer,
        };
        self.call(request, answered).await
    }

    async fn stats(&self) -> Result<SpoolStats, SpoolError> {
        self.check_accepting()?;
        let reader = Arc::clone(&self.reader);
        let span = tracing::debug_span!("spool_stats");
        let stats = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = reader.lock().unwrap_or_else(|poison| poison.into_inner());
            read_stats(&mut conn)
        })
        .await
        .map_err(|error| SpoolError::Storage(format!("spool stats task failed: {error}")))?;
        stats.map_err(|error| {
            schema::storage_error(self.dir.join(schema::FILE_NAME).display(), &error)
        })
    }
}

impl Drop for SqliteSpool {
    /// Without [`SqliteSpool::close`], the writer still finishes what is
    /// queued and checkpoints, but nobody waits for it.
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            let (answer, _done) = oneshot::channel();
            let _ = self.requests.send(Request::Shutdown { answer });
        }
    }
}

/// A read-only connection for stats.
fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, SpoolError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| schema::storage_error(path.display(), &error))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|error| schema::storage_error(path.display(), &error))?;
    Ok(conn)
}

/// The stats, read in one read transaction.
fn read_stats(conn: &mut Connection) -> rusqlite::Result<SpoolStats> {
    let txn = conn.transaction()?;
    let totals = Totals::read(&txn)?;
    // Ids grow with arrival, so the lowest id is the oldest batch; replayed
    // dead letters are new batches received at replay time.
    let oldest_received_at_ms = txn
        .prepare_cached("SELECT received_at_ms FROM batches ORDER BY id LIMIT 1")?
        .query_row([], |row| row.get::<_, i64>(0))
        .map(Some)
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })?;
    txn.finish()?;
    Ok(SpoolStats {
        n_batches: totals.n_batches,
        n_bytes: totals.n_bytes,
        oldest_received_at_ms,
        n_dead_letters: totals.n_dead_letters,
        n_quarantined: totals.n_quarantined,
    })
}
