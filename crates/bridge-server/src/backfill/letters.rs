//! Where a backfill's dead letters go: the spool's dead-letter store
//! (SQLite in the data dir, or the NATS dead-letter stream), the one
//! `dlq` lists and replays, or, in a dry run, an NDJSON file.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::spool::nats::NatsDeadLetterStore;
use crate::spool::sqlite::{DeadLetterStore, SqliteSpool, SqliteSpoolOptions};
use crate::spool::{DeadLetter, SpoolError};

use super::BackfillError;

/// How long a dead-letter write waits for `serve`'s writer on the same
/// SQLite spool.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A backfill's dead-letter store.
pub enum LetterStore {
    /// The SQLite spool's dead letters in the data dir.
    Sqlite(DeadLetterStore),
    /// The NATS spool's dead-letter stream.
    Nats(Box<NatsDeadLetterStore>),
    /// A dry run's `dead-letters.ndjson`: what would be dead-lettered.
    File {
        /// The file's path, for errors.
        path: PathBuf,
        /// The open file.
        writer: BufWriter<File>,
    },
}

impl std::fmt::Debug for LetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LetterStore::Sqlite(store) => store.fmt(f),
            LetterStore::Nats(store) => store.fmt(f),
            LetterStore::File { path, .. } => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl LetterStore {
    /// The SQLite spool's dead letters in `spool_dir`, creating the spool
    /// when no `serve` has yet (it is `serve`'s own file: a `serve` started
    /// later finds the letters there).
    pub async fn sqlite(spool_dir: &Path, max_bytes: u64) -> Result<LetterStore, SpoolError> {
        if !crate::spool::sqlite::file_path(spool_dir).exists() {
            let options = SqliteSpoolOptions::new(spool_dir.to_owned(), max_bytes);
            let spool = tokio::task::spawn_blocking(move || SqliteSpool::open(options))
                .await
                .map_err(|error| SpoolError::Storage(error.to_string()))??;
            spool.close().await?;
        }
        Ok(LetterStore::Sqlite(DeadLetterStore::open(
            spool_dir,
            BUSY_TIMEOUT,
        )?))
    }

    /// A dry run's file of would-be dead letters, created (or emptied).
    pub fn file(path: PathBuf) -> Result<LetterStore, BackfillError> {
        let file = File::create(&path).map_err(|error| BackfillError::io(&path, &error))?;
        Ok(LetterStore::File {
            path,
            writer: BufWriter::new(file),
        })
    }

    /// Stores `letters` durably (a dry run: writes them out).
    pub(crate) async fn add(&mut self, letters: &[DeadLetter]) -> Result<(), BackfillError> {
        match self {
            LetterStore::Sqlite(store) => {
                store.add(letters)?;
            }
            LetterStore::Nats(store) => {
                store.add(letters).await?;
            }
            LetterStore::File { path, writer } => {
                for letter in letters {
                    let line = serde_json::json!({
                        "reason": letter.reason,
                        "detail": letter.detail,
                        "event_type": letter.event_type,
                        "event_id": letter.event_id,
                        "event": String::from_utf8_lossy(&letter.event),
                    });
                    serde_json::to_writer(&mut *writer, &line)
                        .map_err(|error| BackfillError::io(path, &error.into()))?;
                    writer
                        .write_all(b"\n")
                        .map_err(|error| BackfillError::io(path, &error))?;
                }
            }
        }
        Ok(())
    }

    /// Flushes a dry run's file.
    pub(crate) fn finish(&mut self) -> Result<(), BackfillError> {
        if let LetterStore::File { path, writer } = self {
            writer
                .flush()
                .map_err(|error| BackfillError::io(path, &error))?;
        }
        Ok(())
    }
}
