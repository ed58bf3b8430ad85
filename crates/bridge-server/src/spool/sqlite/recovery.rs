//! Opening the spool database so that a damaged file never stops the
//! service: check it, and when it is unreadable or corrupt, move it aside,
//! start a fresh spool and copy into it every row that can still be read.
//!
//! The damaged file is kept as `spool.db.corrupt-<unix ms>` (with its
//! `-wal` and `-shm` beside it, renamed the same way) for inspection and
//! manual recovery; nothing deletes it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::schema::{self, SchemaError};
use crate::spool::SpoolError;

/// Rows read per query while salvaging.
const SALVAGE_CHUNK_ROWS: i64 = 256;

/// Read errors after which salvaging a table gives up.
const SALVAGE_MAX_ERRORS: u32 = 64;

/// The tables salvaged and their columns, `id` first.
const SALVAGED_TABLES: [(&str, &str); 3] = [
    (
        "batches",
        "id, received_at_ms, visible_at_ms, leased_until_ms, attempts, body_len, body_crc32, workspace, body",
    ),
    (
        "dead_letters",
        "id, dead_lettered_at_ms, reason, detail, event_type, event_id, workspace, attempts, batch_id, event",
    ),
    (
        "quarantine",
        "id, quarantined_at_ms, batch_id, reason, detail, received_at_ms, attempts, workspace, body",
    ),
];

/// Opens (creating if needed) the spool at `path`, checked with
/// `PRAGMA quick_check`; a damaged file is moved aside and replaced.
pub(crate) fn open_checked(path: &Path, busy_timeout: Duration) -> Result<Connection, SpoolError> {
    let detail = match open_and_check(path, busy_timeout) {
        Ok(conn) => return Ok(conn),
        Err(OpenError::Damaged(detail)) => detail,
        Err(OpenError::Refused(error)) => return Err(error),
    };
    let aside = move_aside(path)?;
    tracing::error!(
        path = %path.display(),
        moved_to = %aside.display(),
        detail = %detail,
        "Spool database is damaged; moved it aside and started a fresh spool. Rows that can still be read are copied over; the damaged file is kept for recovery."
    );
    let mut conn = match open_and_check(path, busy_timeout) {
        Ok(conn) => conn,
        Err(OpenError::Damaged(detail)) => {
            return Err(SpoolError::Storage(format!(
                "{}: a fresh spool is damaged too: {detail}",
                path.display()
            )));
        }
        Err(OpenError::Refused(error)) => return Err(error),
    };
    salvage(&aside, &mut conn);
    Ok(conn)
}

/// Why a file could not be opened as a spool.
enum OpenError {
    /// It is corrupt or not a database: move it aside.
    Damaged(String),
    /// Anything else (permissions, a newer schema): refuse to start.
    Refused(SpoolError),
}

fn open_and_check(path: &Path, busy_timeout: Duration) -> Result<Connection, OpenError> {
    let classify = |error: rusqlite::Error| match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            OpenError::Damaged(error.to_string())
        }
        _ => OpenError::Refused(schema::storage_error(path.display(), &error)),
    };
    let mut conn = Connection::open(path).map_err(classify)?;
    schema::configure(&conn, busy_timeout).map_err(classify)?;
    let problems = quick_check(&conn).map_err(classify)?;
    if !problems.is_empty() {
        return Err(OpenError::Damaged(format!(
            "quick_check: {}",
            problems.join("; ")
        )));
    }
    match schema::create_or_check(&mut conn) {
        Ok(()) => Ok(conn),
        Err(SchemaError::Sqlite(error)) => Err(classify(error)),
        Err(other) => Err(OpenError::Refused(other.into_spool_error(path))),
    }
}

/// The problems `PRAGMA quick_check` finds (at most 10), none when sound.
fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("PRAGMA quick_check(10)")?;
    let lines = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines.into_iter().filter(|line| line != "ok").collect())
}

/// Renames the database and its `-wal`, `-shm` and `-journal` files to
/// `<name>.corrupt-<unix ms>…`; returns the database's new path.
fn move_aside(path: &Path) -> Result<PathBuf, SpoolError> {
    let aside = PathBuf::from(format!(
        "{}.corrupt-{}",
        path.display(),
        crate::clock::now_ms()
    ));
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(SpoolError::Storage(format!(
                    "cannot move damaged spool file {} aside: {error}",
                    from.display()
                )));
            }
        }
    }
    Ok(aside)
}

/// Copies every readable row of the damaged database at `aside` into the
/// fresh spool, keeping ids. Rows are copied raw: checksums are checked when
/// a batch is leased, so a damaged body is quarantined then. Best effort:
/// what cannot be read is reported and stays in the damaged file.
fn salvage(aside: &Path, conn: &mut Connection) {
    let damaged = match Connection::open_with_flags(
        aside,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(damaged) => damaged,
        Err(error) => {
            tracing::error!(error = %error, "Nothing salvaged from the damaged spool.");
            return;
        }
    };
    // Keep the damaged file as it is: no checkpoint into it on close.
    let _ = damaged.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    );
    let readable = damaged.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
        row.get::<_, i64>(0)
    });
    if let Err(error) = readable {
        tracing::error!(error = %error, "Nothing salvaged from the damaged spool: it is not readable as a database.");
        return;
    }
    for (table, columns) in SALVAGED_TABLES {
        match salvage_table(&damaged, conn, table, columns) {
            Ok((n_copied, 0)) => {
                tracing::warn!(table, n_copied, "Salvaged rows from the damaged spool.");
            }
            Ok((n_copied, n_errors)) => tracing::error!(
                table,
                n_copied,
                n_errors,
                "Salvaged rows from the damaged spool; some could not be read and stay in the damaged file."
            ),
            Err(error) => tracing::error!(
                table,
                error = %error,
                "Could not write salvaged rows into the fresh spool."
            ),
        }
    }
}

/// Copies one table; returns rows copied and read errors met. The outer
/// error is the fresh spool failing.
fn salvage_table(
    damaged: &Connection,
    conn: &mut Connection,
    table: &str,
    columns: &str,
) -> rusqlite::Result<(u64, u32)> {
    let n_columns = columns.split(',').count();
    let placeholders = vec!["?"; n_columns].join(", ");
    let insert_sql = format!("INSERT INTO {table} ({columns}) VALUES ({placeholders})");
    let select_sql = format!(
        "SELECT {columns} FROM {table} WHERE id > ?1 ORDER BY id LIMIT {SALVAGE_CHUNK_ROWS}"
    );
    let mut last_id = i64::MIN;
    let mut skip: i64 = 1;
    let mut n_copied = 0;
    let mut n_errors = 0;
    loop {
        let (rows, read_error) = read_chunk(damaged, &select_sql, last_id, n_columns);
        let n_rows = rows.len();
        let txn = conn.transaction()?;
        for row in rows {
            if let Some(Value::Integer(id)) = row.first() {
                last_id = *id;
            }
            match txn.execute(&insert_sql, rusqlite::params_from_iter(row)) {
                Ok(_) => n_copied += 1,
                Err(_) => n_errors += 1,
            }
        }
        txn.commit()?;
        match read_error {
            None if (n_rows as i64) < SALVAGE_CHUNK_ROWS => return Ok((n_copied, n_errors)),
            None => skip = 1,
            Some(_) => {
                n_errors += 1;
                if n_errors >= SALVAGE_MAX_ERRORS || last_id == i64::MAX {
                    return Ok((n_copied, n_errors));
                }
                last_id = last_id.saturating_add(skip);
                skip = skip.saturating_mul(2);
            }
        }
    }
}

/// Reads rows after `last_id` until the chunk ends or a read fails.
fn read_chunk(
    damaged: &Connection,
    select_sql: &str,
    last_id: i64,
    n_columns: usize,
) -> (Vec<Vec<Value>>, Option<rusqlite::Error>) {
    let mut rows_read = Vec::new();
    let mut statement = match damaged.prepare(select_sql) {
        Ok(statement) => statement,
        Err(error) => return (rows_read, Some(error)),
    };
    let mut rows = match statement.query([last_id]) {
        Ok(rows) => rows,
        Err(error) => return (rows_read, Some(error)),
    };
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let values = (0..n_columns)
                    .map(|idx| row.get::<_, Value>(idx))
                    .collect::<rusqlite::Result<Vec<_>>>();
                match values {
                    Ok(values) => rows_read.push(values),
                    Err(error) => return (rows_read, Some(error)),
                }
            }
            Ok(None) => return (rows_read, None),
            Err(error) => return (rows_read, Some(error)),
        }
    }
}
