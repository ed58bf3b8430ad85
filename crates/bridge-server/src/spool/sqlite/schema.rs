//! The spool database's schema (version 1), its connection settings and the
//! row types stored in it.
//!
//! Rows are read and written through the dedicated record types here
//! ([`BatchRecord`], [`StoredBatch`], [`DeadLetterRecord`]), never through
//! the domain types in [`crate::spool`], so the stored format changes only
//! with [`SCHEMA_VERSION`].

use std::time::Duration;

use bytes::Bytes;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};

use crate::spool::{BatchId, DeadLetter, LeasedBatch, NewBatch, SpoolError};

/// The schema version this build writes, kept in `PRAGMA user_version`.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The database file's name inside the spool directory.
pub(crate) const FILE_NAME: &str = "spool.db";

/// Version 1: the tables, their indexes, and the triggers that keep the
/// one-row `totals` table equal to the aggregates whichever process writes.
const SCHEMA_V1: &str = "
CREATE TABLE batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    leased_until_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    body_len INTEGER NOT NULL,
    body_crc32 INTEGER NOT NULL,
    workspace TEXT,
    body BLOB NOT NULL
);
CREATE INDEX batches_due ON batches (id, visible_at_ms, leased_until_ms);

CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dead_lettered_at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    event_type TEXT,
    event_id TEXT,
    workspace TEXT,
    attempts INTEGER NOT NULL,
    batch_id INTEGER,
    event BLOB NOT NULL
);
CREATE INDEX dead_letters_reason ON dead_letters (reason);
CREATE INDEX dead_letters_event_type ON dead_letters (event_type);
CREATE INDEX dead_letters_time ON dead_letters (dead_lettered_at_ms);

CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    quarantined_at_ms INTEGER NOT NULL,
    batch_id INTEGER,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    received_at_ms,
    attempts,
    workspace,
    body
);

CREATE TABLE totals (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
    n_batches INTEGER NOT NULL,
    n_bytes INTEGER NOT NULL,
    n_dead_letters INTEGER NOT NULL,
    n_quarantined INTEGER NOT NULL
);
INSERT INTO totals VALUES (0, 0, 0, 0, 0);

CREATE TRIGGER batches_inserted AFTER INSERT ON batches BEGIN
    UPDATE totals SET n_batches = n_batches + 1, n_bytes = n_bytes + NEW.body_len;
END;
CREATE TRIGGER batches_deleted AFTER DELETE ON batches BEGIN
    UPDATE totals SET n_batches = n_batches - 1, n_bytes = n_bytes - OLD.body_len;
END;
CREATE TRIGGER dead_letters_inserted AFTER INSERT ON dead_letters BEGIN
    UPDATE totals SET n_dead_letters = n_dead_letters + 1;
END;
CREATE TRIGGER dead_letters_deleted AFTER DELETE ON dead_letters BEGIN
    UPDATE totals SET n_dead_letters = n_dead_letters - 1;
END;
CREATE TRIGGER quarantine_inserted AFTER INSERT ON quarantine BEGIN
    UPDATE totals SET n_quarantined = n_quarantined + 1;
END;
CREATE TRIGGER quarantine_deleted AFTER DELETE ON quarantine BEGIN
    UPDATE totals SET n_quarantined = n_quarantined - 1;
END;
";

/// The WAL is truncated back to this size after a checkpoint resets it.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 64 << 20;

/// Pages in the WAL before a commit runs a passive checkpoint (16 MB).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4096;

/// Sets the per-connection pragmas every spool connection uses: WAL,
/// `synchronous=FULL` (an fsync per commit; the server's writer lowers it
/// to `NORMAL` for commits without appends, see `writer::Request`), the
/// busy timeout that lets the server and the CLI share the file, and the
/// WAL bounds.
pub(crate) fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    // Only takes effect on a new, empty file, and must come before WAL mode
    // and the first table: freed pages can then be given back to the file
    // system with `PRAGMA incremental_vacuum`. A no-op on an existing spool.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "cannot switch the spool to WAL mode (got {journal_mode})"
            )),
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.query_row(
        &format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}"),
        [],
        |_| Ok(()),
    )?;
    conn.query_row(
        &format!("PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}"),
        [],
        |_| Ok(()),
    )?;
    Ok(())
}

/// Creates the schema in an empty database, or checks the version of an
/// existing one. Only the server creates; the CLI handle only checks.
pub(crate) fn create_or_check(conn: &mut Connection) -> Result<(), SchemaError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(SchemaError::Newer { version });
    }
    let n_tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
        [],
        |row| row.get(0),
    )?;
    if n_tables != 0 {
        return Err(SchemaError::Foreign);
    }
    let txn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    txn.execute_batch(SCHEMA_V1)?;
    txn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    txn.commit()?;
    Ok(())
}

/// Checks, without creating anything, that `conn` holds a spool of this
/// build's schema version.
pub(crate) fn check(conn: &Connection) -> Result<(), SchemaError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(SchemaError::Newer { version });
    }
    if version < SCHEMA_VERSION {
        return Err(SchemaError::Missing);
    }
    Ok(())
}

/// Why a database cannot be used as a spool.
#[derive(Debug)]
pub(crate) enum SchemaError {
    /// Written by a newer build; never touched.
    Newer { version: i64 },
    /// Has tables but no spool schema: some other database.
    Foreign,
    /// Has no spool schema yet (never opened by the server).
    Missing,
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(error: rusqlite::Error) -> Self {
        SchemaError::Sqlite(error)
    }
}

impl SchemaError {
    /// The error to report for the database at `path`.
    pub(crate) fn into_spool_error(self, path: &std::path::Path) -> SpoolError {
        let path = path.display();
        match self {
            SchemaError::Newer { version } => SpoolError::Storage(format!(
                "spool {path} has schema version {version}, newer than this build's {SCHEMA_VERSION}; run a newer build"
            )),
            SchemaError::Foreign => SpoolError::Storage(format!(
                "{path} is an SQLite database but not a spool; move it away or choose another spool directory"
            )),
            SchemaError::Missing => SpoolError::Storage(format!(
                "{path} holds no spool yet; start the server once to create it"
            )),
            SchemaError::Sqlite(error) => storage_error(path, &error),
        }
    }
}

/// A storage error naming the file.
pub(crate) fn storage_error(path: impl std::fmt::Display, error: &rusqlite::Error) -> SpoolError {
    SpoolError::Storage(format!("{path}: {error}"))
}

/// Ends every lease, making the batches leased by a previous run of the
/// server due at once (a batch released with a delay keeps it); returns how
/// many. Only one server process uses a spool, so at open no lease is held
/// by a live worker.
pub(crate) fn clear_leases(conn: &Connection) -> rusqlite::Result<usize> {
    // Find them on the small covering index rather than scanning the rows.
    conn.execute(
        "UPDATE batches SET leased_until_ms = NULL WHERE id IN (
             SELECT id FROM batches INDEXED BY batches_due WHERE leased_until_ms IS NOT NULL
         )",
        [],
    )
}

/// The CRC-32 (IEEE) of a stored body.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// A batch row to insert.
pub(crate) struct BatchRecord {
    /// `received_at_ms`.
    pub(crate) received_at_ms: i64,
    /// `workspace`.
    pub(crate) workspace: Option<String>,
    /// `body`.
    pub(crate) body: Bytes,
    /// `body_crc32`, computed by the caller off the writer thread.
    pub(crate) body_crc32: u32,
}

impl BatchRecord {
    /// The record for a received batch.
    pub(crate) fn new(batch: NewBatch) -> BatchRecord {
        let body_crc32 = crc32(&batch.body);
        BatchRecord {
            received_at_ms: batch.received_at_ms,
            workspace: batch.workspace,
            body: batch.body,
            body_crc32,
        }
    }

    /// Inserts the row, due at `visible_at_ms`, and returns its id.
    pub(crate) fn insert(&self, conn: &Connection, visible_at_ms: i64) -> rusqlite::Result<i64> {
        let mut statement = conn.prepare_cached(
            "INSERT INTO batches
                 (received_at_ms, visible_at_ms, attempts, body_len, body_crc32, workspace, body)
             VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6)",
        )?;
        statement.execute(rusqlite::params![
            self.received_at_ms,
            visible_at_ms,
            i64::try_from(self.body.len()).unwrap_or(i64::MAX),
            i64::from(self.body_crc32),
            self.workspace,
            &self.body[..],
        ])?;
        Ok(conn.last_insert_rowid())
    }
}

/// The columns [`StoredBatch::decode`] reads, in order.
pub(crate) const STORED_BATCH_COLUMNS: &str =
    "id, received_at_ms, attempts, body_len, body_crc32, workspace, body";

/// A batch row as read back, checked against its length and checksum.
pub(crate) struct StoredBatch {
    /// `id`.
    pub(crate) id: i64,
    /// `received_at_ms`.
    pub(crate) received_at_ms: i64,
    /// `attempts`.
    pub(crate) attempts: u32,
    /// `workspace`.
    pub(crate) workspace: Option<String>,
    /// `body`.
    pub(crate) body: Vec<u8>,
}

/// Why a stored row cannot be handed out; it is quarantined.
pub(crate) struct Damage {
    /// Closed snake_case reason: `checksum_mismatch`, `length_mismatch`,
    /// `undecodable_row`.
    pub(crate) reason: &'static str,
    /// What exactly is wrong.
    pub(crate) detail: String,
}

impl StoredBatch {
    /// Reads a row selected with [`STORED_BATCH_COLUMNS`]. The outer error is
    /// SQLite failing; the inner one is a row that is damaged.
    pub(crate) fn decode(row: &Row<'_>) -> rusqlite::Result<Result<StoredBatch, Damage>> {
        let id = row.get::<_, i64>(0)?;
        let undecodable = |column: &str, value: ValueRef<'_>| Damage {
            reason: "undecodable_row",
            detail: format!("column {column} holds a {}", value.data_type()),
        };
        let received_at_ms = match row.get_ref(1)? {
            ValueRef::Integer(value) => value,
            other => return Ok(Err(undecodable("received_at_ms", other))),
        };
        let attempts = match row.get_ref(2)? {
            ValueRef::Integer(value) if (0..=i64::from(u32::MAX)).contains(&value) => value as u32,
            other => return Ok(Err(undecodable("attempts", other))),
        };
        let body_len = match row.get_ref(3)? {
            ValueRef::Integer(value) => value,
            other => return Ok(Err(undecodable("body_len", other))),
        };
        let body_crc32 = match row.get_ref(4)? {
            ValueRef::Integer(value) => value,
            other => return Ok(Err(undecodable("body_crc32", other))),
        };
        let workspace = match row.get_ref(5)? {
            ValueRef::Null => None,
            ValueRef::Text(text) => match std::str::from_utf8(text) {
                Ok(text) => Some(text.to_owned()),
                Err(_) => {
                    return Ok(Err(Damage {
                        reason: "undecodable_row",
                        detail: "column workspace is not UTF-8".to_owned(),
                    }));
                }
            },
            other => return Ok(Err(undecodable("workspace", other))),
        };
        let body = match row.get_ref(6)? {
            ValueRef::Blob(body) => body,
            other => return Ok(Err(undecodable("body", other))),
        };
        if i64::try_from(body.len()) != Ok(body_len) {
            return Ok(Err(Damage {
                reason: "length_mismatch",
                detail: format!("body has {} bytes, {body_len} were stored", body.len()),
            }));
        }
        let actual_crc32 = crc32(body);
        if i64::from(actual_crc32) != body_crc32 {
            return Ok(Err(Damage {
                reason: "checksum_mismatch",
                detail: format!(
                    "body CRC-32 is {actual_crc32:#010x}, {body_crc32:#010x} was stored"
                ),
            }));
        }
        Ok(Ok(StoredBatch {
            id,
            received_at_ms,
            attempts,
            workspace,
            body: body.to_vec(),
        }))
    }

    /// The batch as handed to a delivery worker.
    pub(crate) fn into_leased(self) -> LeasedBatch {
        LeasedBatch {
            id: BatchId(self.id),
            batch: NewBatch {
                body: Bytes::from(self.body),
                workspace: self.workspace,
                received_at_ms: self.received_at_ms,
            },
            attempts: self.attempts,
        }
    }
}

/// Moves the row `batch_id` of `batches` to `quarantine`, keeping its raw
/// columns for recovery.
pub(crate) fn quarantine_batch(
    conn: &Connection,
    batch_id: i64,
    damage: &Damage,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO quarantine
             (quarantined_at_ms, batch_id, reason, detail, received_at_ms, attempts, workspace, body)
         SELECT ?1, id, ?2, ?3, received_at_ms, attempts, workspace, body
         FROM batches WHERE id = ?4",
    )?
    .execute(rusqlite::params![now_ms, damage.reason, damage.detail, batch_id])?;
    conn.prepare_cached("DELETE FROM batches WHERE id = ?1")?
        .execute([batch_id])?;
    Ok(())
}

/// A dead-letter row to insert.
pub(crate) struct DeadLetterRecord<'a> {
    /// `dead_lettered_at_ms`.
    pub(crate) dead_lettered_at_ms: i64,
    /// `batch_id`: the batch it came in.
    pub(crate) batch_id: Option<i64>,
    /// Every other column, from the dead letter.
    pub(crate) dead_letter: &'a DeadLetter,
}

impl DeadLetterRecord<'_> {
    /// Inserts the row.
    pub(crate) fn insert(&self, conn: &Connection) -> rusqlite::Result<()> {
        let dead_letter = self.dead_letter;
        conn.prepare_cached(
            "INSERT INTO dead_letters
                 (dead_lettered_at_ms, reason, detail, event_type, event_id, workspace,
                  attempts, batch_id, event)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(rusqlite::params![
            self.dead_lettered_at_ms,
            dead_letter.reason,
            dead_letter.detail,
            dead_letter.event_type,
            dead_letter.event_id,
            dead_letter.workspace,
            i64::from(dead_letter.attempts),
            self.batch_id,
            &dead_letter.event[..],
        ])?;
        Ok(())
    }
}

/// The one-row `totals` table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    /// `n_batches`.
    pub(crate) n_batches: u64,
    /// `n_bytes`.
    pub(crate) n_bytes: u64,
    /// `n_dead_letters`.
    pub(crate) n_dead_letters: u64,
    /// `n_quarantined`.
    pub(crate) n_quarantined: u64,
}

impl Totals {
    /// Reads the totals.
    pub(crate) fn read(conn: &Connection) -> rusqlite::Result<Totals> {
        conn.prepare_cached(
            "SELECT n_batches, n_bytes, n_dead_letters, n_quarantined FROM totals WHERE singleton = 0",
        )?
        .query_row([], |row| {
            let get = |idx: usize| row.get::<_, i64>(idx).map(|value| value.max(0) as u64);
            Ok(Totals {
                n_batches: get(0)?,
                n_bytes: get(1)?,
                n_dead_letters: get(2)?,
                n_quarantined: get(3)?,
            })
        })
    }
}

/// `duration` in milliseconds, saturating.
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
