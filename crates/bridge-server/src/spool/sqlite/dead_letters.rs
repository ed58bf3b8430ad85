//! The dead-letter store: list, show, replay and purge dead letters, from the
//! server or from the `dlq` command while the server runs.
//!
//! [`DeadLetterStore`] opens the spool's database file with its own
//! connection and starts no thread. It is safe beside a running server:
//! SQLite's locks serialize writers (each waits up to the busy timeout), and
//! every change is one ordinary transaction, so an entry is always in exactly
//! one place, the dead letters or the batches. Its calls block: async code
//! runs them on `spawn_blocking`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags, Row, TransactionBehavior};

use super::schema::{self, BatchRecord, DeadLetterRecord};
use crate::spool::{
    DeadLetter, DeadLetterAdmin, DeadLetterEntry, DeadLetterFilter, REPLAY_MAX_EVENTS_PER_BATCH,
    Replayed, SpoolError, is_json, is_whole_batch, n_events_in_batch, replay_body,
};

/// Dead letters moved per transaction by `replay` and deleted per transaction
/// by `purge`, so the server's writer never waits long for the lock.
const ENTRIES_PER_TRANSACTION: i64 = 5_000;

/// A stored batch that was found damaged and set aside.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineEntry {
    /// The entry's id.
    pub id: i64,
    /// When it was quarantined, UNIX milliseconds.
    pub quarantined_at_ms: i64,
    /// The batch's spool id.
    pub batch_id: Option<i64>,
    /// `checksum_mismatch`, `length_mismatch` or `undecodable_row`.
    pub reason: String,
    /// What exactly was wrong.
    pub detail: String,
    /// The stored body, as far as it could be read.
    pub body: Option<Bytes>,
}

/// A handle on the dead letters of the spool in a directory.
pub struct DeadLetterStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for DeadLetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DeadLetterStore {
    /// Opens the spool in `dir`, which the server must have created. Starts
    /// no thread and creates nothing; `busy_timeout` is how long a call waits
    /// for the server's writer.
    pub fn open(dir: &Path, busy_timeout: Duration) -> Result<DeadLetterStore, SpoolError> {
        let path = dir.join(schema::FILE_NAME);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| schema::storage_error(path.display(), &error))?;
        schema::configure(&conn, busy_timeout)
            .map_err(|error| schema::storage_error(path.display(), &error))?;
        schema::check(&conn).map_err(|error| error.into_spool_error(&path))?;
        Ok(DeadLetterStore { conn, path })
    }

    /// Entries matching `filter`, oldest first, at most `limit`.
    pub fn list(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, SpoolError> {
        let (conditions, mut params) = where_clause(filter);
        params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM dead_letters WHERE {conditions} ORDER BY id LIMIT ?"
        );
        self.query_entries(&sql, params)
    }

    /// How many entries match `filter`.
    pub fn count(&self, filter: &DeadLetterFilter) -> Result<u64, SpoolError> {
        let (conditions, params) = where_clause(filter);
        let sql = format!("SELECT count(*) FROM dead_letters WHERE {conditions}");
        self.conn
            .query_row(&sql, rusqlite::params_from_iter(params), |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(|error| self.error(&error))
    }

    /// The entry `id`, if it is stored.
    pub fn get(&self, id: i64) -> Result<Option<DeadLetterEntry>, SpoolError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM dead_letters WHERE id = ?");
        let mut entries = self.query_entries(&sql, vec![Value::Integer(id)])?;
        Ok(entries.pop())
    }

    /// Moves the entries matching `filter` back into the spool as new
    /// batches `{"events":[...]}`, one workspace per batch and at most
    /// [`REPLAY_MAX_EVENTS_PER_BATCH`] events each, in id order; an entry
    /// holding a whole batch (`archive_failed`) goes back as that batch. Each
    /// transaction inserts the batches and deletes their entries together,
    /// so an interrupted replay can simply be run again.
    pub fn replay(&mut self, filter: &DeadLetterFilter) -> Result<Replayed, SpoolError> {
        let mut replayed = Replayed::default();
        let mut last_id = i64::MIN;
        loop {
            let n_read = self
                .replay_chunk(filter, &mut last_id, &mut replayed)
                .map_err(|error| self.error(&error))?;
            if n_read < ENTRIES_PER_TRANSACTION as usize {
                break;
            }
        }
        if replayed.n_not_json != 0 {
            tracing::warn!(
                n_not_json = replayed.n_not_json,
                "Left dead letters whose event is not JSON in the store."
            );
        }
        tracing::info!(
            n_events = replayed.n_events,
            n_batches = replayed.n_batches,
            "Replayed dead letters into the spool."
        );
        Ok(replayed)
    }

    /// Stores letters that came in no batch (a backfill's refusals), in
    /// one transaction; returns how many.
    pub fn add(&mut self, letters: &[DeadLetter]) -> Result<u64, SpoolError> {
        let now_ms = crate::clock::now_ms();
        let insert = |conn: &mut Connection| -> rusqlite::Result<()> {
            let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for dead_letter in letters {
                DeadLetterRecord {
                    dead_lettered_at_ms: now_ms,
                    batch_id: None,
                    dead_letter,
                }
                .insert(&txn)?;
            }
            txn.commit()
        };
        insert(&mut self.conn).map_err(|error| self.error(&error))?;
        Ok(letters.len() as u64)
    }

    /// Deletes the entries matching `filter`; returns how many.
    pub fn purge(&mut self, filter: &DeadLetterFilter) -> Result<u64, SpoolError> {
        let (conditions, params) = where_clause(filter);
        let sql = format!(
            "DELETE FROM dead_letters WHERE id IN
                 (SELECT id FROM dead_letters WHERE {conditions} LIMIT {ENTRIES_PER_TRANSACTION})"
        );
        let mut n_purged = 0;
        loop {
            let n_deleted = self
                .conn
                .execute(&sql, rusqlite::params_from_iter(params.iter()))
                .map_err(|error| self.error(&error))?;
            n_purged += n_deleted as u64;
            if n_deleted == 0 {
                break;
            }
        }
        tracing::info!(n_purged, "Purged dead letters.");
        Ok(n_purged)
    }

    /// Quarantined batches, oldest first, at most `limit`.
    pub fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineEntry>, SpoolError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT id, quarantined_at_ms, batch_id, reason, detail, body
                 FROM quarantine ORDER BY id LIMIT ?1",
            )?;
            let entries = statement
                .query_map([limit], |row| {
                    Ok(QuarantineEntry {
                        id: row.get(0)?,
                        quarantined_at_ms: row.get(1)?,
                        batch_id: row.get(2)?,
                        reason: row.get(3)?,
                        detail: row.get(4)?,
                        body: match row.get_ref(5)? {
                            ValueRef::Blob(bytes) | ValueRef::Text(bytes) => {
                                Some(Bytes::copy_from_slice(bytes))
                            }
                            _ => None,
                        },
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(entries)
        })();
        result.map_err(|error: rusqlite::Error| self.error(&error))
    }

    fn replay_chunk(
        &mut self,
        filter: &DeadLetterFilter,
        last_id: &mut i64,
        replayed: &mut Replayed,
    ) -> rusqlite::Result<usize> {
        let (conditions, mut params) = where_clause(filter);
        params.push(Value::Integer(*last_id));
        let sql = format!(
            "SELECT id, workspace, event, reason FROM dead_letters
             WHERE {conditions} AND id > ? ORDER BY id LIMIT {ENTRIES_PER_TRANSACTION}"
        );
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut by_workspace: BTreeMap<Option<String>, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
        let mut whole_batches: Vec<(i64, Option<String>, Vec<u8>)> = Vec::new();
        let mut n_read = 0;
        {
            let mut statement = txn.prepare(&sql)?;
            let mut rows = statement.query(rusqlite::params_from_iter(params))?;
            while let Some(row) = rows.next()? {
                n_read += 1;
                let id: i64 = row.get(0)?;
                *last_id = id;
                let workspace: Option<String> = row.get(1)?;
                let event = row.get_ref(2)?.as_bytes().map(<[u8]>::to_vec);
                let event = match event {
                    Ok(event) if is_json(&event) => event,
                    _ => {
                        replayed.n_not_json += 1;
                        continue;
                    }
                };
                let reason: String = row.get(3)?;
                if is_whole_batch(&reason) {
                    whole_batches.push((id, workspace, event));
                    continue;
                }
                by_workspace.entry(workspace).or_default().push((id, event));
            }
        }
        let now_ms = crate::clock::now_ms();
        for (id, workspace, body) in whole_batches {
            replayed.n_events += n_events_in_batch(&body);
            let record = BatchRecord::new(crate::spool::NewBatch {
                body: Bytes::from(body),
                workspace,
                received_at_ms: now_ms,
            });
            record.insert(&txn, now_ms)?;
            txn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                .execute([id])?;
            replayed.n_batches += 1;
        }
        for (workspace, entries) in by_workspace {
            for chunk in entries.chunks(REPLAY_MAX_EVENTS_PER_BATCH) {
                let body = replay_body(chunk.iter().map(|(_, event)| event.as_slice()));
                let record = BatchRecord::new(crate::spool::NewBatch {
                    body,
                    workspace: workspace.clone(),
                    received_at_ms: now_ms,
                });
                record.insert(&txn, now_ms)?;
                let mut delete = txn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?;
                for (id, _) in chunk {
                    delete.execute([id])?;
                }
                replayed.n_batches += 1;
                replayed.n_events += chunk.len() as u64;
            }
        }
        txn.commit()?;
        Ok(n_read)
    }

    fn query_entries(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<DeadLetterEntry>, SpoolError> {
        let result = (|| {
            let mut statement = self.conn.prepare(sql)?;
            let entries = statement
                .query_map(rusqlite::params_from_iter(params), decode_entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(entries)
        })();
        result.map_err(|error: rusqlite::Error| self.error(&error))
    }

    fn error(&self, error: &rusqlite::Error) -> SpoolError {
        schema::storage_error(self.path.display(), error)
    }
}

/// The columns [`decode_entry`] reads, in order.
const ENTRY_COLUMNS: &str = "id, dead_lettered_at_ms, reason, detail, event_type, event_id, \
                             workspace, attempts, batch_id, event";

fn decode_entry(row: &Row<'_>) -> rusqlite::Result<DeadLetterEntry> {
    let attempts: i64 = row.get(7)?;
    Ok(DeadLetterEntry {
        id: row.get(0)?,
        dead_lettered_at_ms: row.get(1)?,
        batch_id: row.get(8)?,
        letter: DeadLetter {
            event: Bytes::copy_from_slice(row.get_ref(9)?.as_bytes()?),
            reason: row.get(2)?,
            detail: row.get(3)?,
            event_type: row.get(4)?,
            event_id: row.get(5)?,
            workspace: row.get(6)?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        },
    })
}

/// The SQL condition for `filter` and its parameters.
fn where_clause(filter: &DeadLetterFilter) -> (String, Vec<Value>) {
    let mut conditions = vec!["1".to_owned()];
    let mut params = Vec::new();
    if let Some(reason) = &filter.reason {
        conditions.push("reason = ?".to_owned());
        params.push(Value::Text(reason.clone()));
    }
    if let Some(event_type) = &filter.event_type {
        conditions.push("event_type = ?".to_owned());
        params.push(Value::Text(event_type.clone()));
    }
    if let Some(since_ms) = filter.since_ms {
        conditions.push("dead_lettered_at_ms >= ?".to_owned());
        params.push(Value::Integer(since_ms));
    }
    if let Some(until_ms) = filter.until_ms {
        conditions.push("dead_lettered_at_ms < ?".to_owned());
        params.push(Value::Integer(until_ms));
    }
    if !filter.ids.is_empty() {
        let placeholders = vec!["?"; filter.ids.len()].join(", ");
        conditions.push(format!("id IN ({placeholders})"));
        params.extend(filter.ids.iter().map(|id| Value::Integer(*id)));
    }
    (conditions.join(" AND "), params)
}

/// The `dlq` command's operations on the SQLite spool: the inherent calls,
/// run inline (they block).
impl DeadLetterAdmin for DeadLetterStore {
    async fn list(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, SpoolError> {
        DeadLetterStore::list(self, filter, limit)
    }

    async fn count(&self, filter: &DeadLetterFilter) -> Result<u64, SpoolError> {
        DeadLetterStore::count(self, filter)
    }

    async fn get(&self, id: i64) -> Result<Option<DeadLetterEntry>, SpoolError> {
        DeadLetterStore::get(self, id)
    }

    async fn replay(&mut self, filter: &DeadLetterFilter) -> Result<Replayed, SpoolError> {
        DeadLetterStore::replay(self, filter)
    }

    async fn purge(&mut self, filter: &DeadLetterFilter) -> Result<u64, SpoolError> {
        DeadLetterStore::purge(self, filter)
    }

    async fn add(&mut self, letters: &[DeadLetter]) -> Result<u64, SpoolError> {
        DeadLetterStore::add(self, letters)
    }
}
