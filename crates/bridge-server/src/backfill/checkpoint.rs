//! Where a backfill stands, per archive file: how many of its records are
//! settled (sent to Mixpanel, skipped with a counted reason, or
//! dead-lettered), so that an interrupted backfill resumes there and a
//! repeated one sends nothing twice.
//!
//! The checkpoints live in `<data_dir>/backfill/checkpoints.db` (SQLite,
//! WAL, `synchronous = FULL`): a record counts as settled only once the
//! row saying so is on disk. A file is keyed by the location it was listed
//! under and its key there, and remembers its size and ETag: a file that
//! changed since (Braze never rewrites its files; someone else might) is
//! read again from the start, with a warning.
//!
//! A crash between Mixpanel's answer and the checkpoint's commit sends
//! those records again on resume; Mixpanel keeps one of each, as it
//! deduplicates on `$insert_id` (the Currents event id).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

/// The checkpoints file under the data dir.
pub fn checkpoints_path(data_dir: &Path) -> PathBuf {
    data_dir.join("backfill").join("checkpoints.db")
}

/// One archive file, as it was listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The location it was listed under, as given (`s3://bucket/prefix`,
    /// a directory).
    pub location: String,
    /// Its key in that location.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, when the store gives one.
    pub e_tag: Option<String>,
}

/// Where a file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileProgress {
    /// Records `0..records_done` are settled.
    pub records_done: u64,
    /// Every record of the file is settled.
    pub finished: bool,
}

/// Why the checkpoints cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("backfill checkpoints at {path}: {message}")]
pub struct CheckpointError {
    path: PathBuf,
    message: String,
}

/// The checkpoints of every backfill run with one data dir.
#[derive(Debug)]
pub struct Checkpoints {
    conn: Connection,
    path: PathBuf,
}

impl Checkpoints {
    /// Opens (or creates) the checkpoints under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Checkpoints, CheckpointError> {
        let path = checkpoints_path(data_dir);
        let fail = |message: String| CheckpointError {
            path: path.clone(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| fail(error.to_string()))?;
        }
        let conn = Connection::open(&path).map_err(|error| fail(error.to_string()))?;
        let checkpoints = Checkpoints { conn, path };
        checkpoints
            .prepare()
            .map_err(|error| checkpoints.error(&error))?;
        Ok(checkpoints)
    }

    fn prepare(&self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(Duration::from_secs(10))?;
        self.conn
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS files (
                 location TEXT NOT NULL,
                 key TEXT NOT NULL,
                 size INTEGER NOT NULL,
                 e_tag TEXT,
                 records_done INTEGER NOT NULL,
                 finished INTEGER NOT NULL,
                 updated_ms INTEGER NOT NULL,
                 PRIMARY KEY (location, key)
             )",
        )
    }

    /// Where `file` stands; from the start when it is new, or when it
    /// changed since it was checkpointed (logged).
    pub fn progress(&self, file: &FileId) -> Result<FileProgress, CheckpointError> {
        let row: Option<(i64, Option<String>, i64, bool)> = self
            .conn
            .query_row(
                "SELECT size, e_tag, records_done, finished FROM files
                 WHERE location = ?1 AND key = ?2",
                params![file.location, file.key],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(|error| self.error(&error))?;
        let Some((size, e_tag, records_done, finished)) = row else {
            return Ok(FileProgress::default());
        };
        if u64::try_from(size).ok() != Some(file.size) || e_tag != file.e_tag {
            tracing::warn!(
                location = %file.location,
                key = %file.key,
                "An archive file changed since it was checkpointed: reading it again from the start."
            );
            return Ok(FileProgress::default());
        }
        Ok(FileProgress {
            records_done: u64::try_from(records_done).unwrap_or(0),
            finished,
        })
    }

    /// Records that `file` stands at `progress`, durably.
    pub fn record(&mut self, file: &FileId, progress: FileProgress) -> Result<(), CheckpointError> {
        self.conn
            .prepare_cached(
                "INSERT INTO files (location, key, size, e_tag, records_done, finished, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (location, key) DO UPDATE SET
                     size = excluded.size, e_tag = excluded.e_tag,
                     records_done = excluded.records_done, finished = excluded.finished,
                     updated_ms = excluded.updated_ms",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    file.location,
                    file.key,
                    i64::try_from(file.size).unwrap_or(i64::MAX),
                    file.e_tag,
                    i64::try_from(progress.records_done).unwrap_or(i64::MAX),
                    progress.finished,
                    crate::clock::now_ms(),
                ])
            })
            .map_err(|error| self.error(&error))?;
        Ok(())
    }

    /// Forgets every file of `location`, so that the next backfill of it
    /// sends everything again (`backfill --again`); returns how many.
    pub fn forget(&mut self, location: &str) -> Result<u64, CheckpointError> {
        self.conn
            .execute("DELETE FROM files WHERE location = ?1", [location])
            .map(|n| n as u64)
            .map_err(|error| self.error(&error))
    }

    fn error(&self, error: &rusqlite::Error) -> CheckpointError {
        CheckpointError {
            path: self.path.clone(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str, size: u64) -> FileId {
        FileId {
            location: "s3://bucket/currents".to_owned(),
            key: key.to_owned(),
            size,
            e_tag: Some("\"abc\"".to_owned()),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "bridge-checkpoints-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn progress_survives_reopening_and_a_changed_file_starts_over() {
        let dir = temp_dir("reopen");
        let a = file("a.avro", 100);
        {
            let mut checkpoints = Checkpoints::open(&dir).unwrap();
            assert_eq!(checkpoints.progress(&a).unwrap(), FileProgress::default());
            let halfway = FileProgress {
                records_done: 40,
                finished: false,
            };
            checkpoints.record(&a, halfway).unwrap();
            assert_eq!(checkpoints.progress(&a).unwrap(), halfway);
        }
        let mut checkpoints = Checkpoints::open(&dir).unwrap();
        assert_eq!(checkpoints.progress(&a).unwrap().records_done, 40);
        // Another size or ETag: another file.
        assert_eq!(
            checkpoints.progress(&file("a.avro", 101)).unwrap(),
            FileProgress::default()
        );
        let done = FileProgress {
            records_done: 70,
            finished: true,
        };
        checkpoints.record(&a, done).unwrap();
        assert_eq!(checkpoints.progress(&a).unwrap(), done);
        // Another location keeps its own.
        let elsewhere = FileId {
            location: "/archive".to_owned(),
            ..a.clone()
        };
        assert_eq!(
            checkpoints.progress(&elsewhere).unwrap(),
            FileProgress::default()
        );
        assert_eq!(checkpoints.forget("s3://bucket/currents").unwrap(), 1);
        assert_eq!(checkpoints.progress(&a).unwrap(), FileProgress::default());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
