//! A dry run's output: the Mixpanel events each archive file maps to, as
//! NDJSON, one file per archive file under `--out`, named after its key
//! (`/` becomes `__`), so that a run can be checked file by file. A file
//! is opened for each chunk and closed after it, so that a run over
//! thousands of files holds few open.

use std::collections::HashSet;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;

use mixpanel_client::ImportBatch;

use super::BackfillError;
use super::checkpoint::FileId;

/// NDJSON files of mapped events under one directory.
#[derive(Debug)]
pub(crate) struct DryRunOutput {
    dir: PathBuf,
    /// Keys written to in this run (their files were emptied first).
    written: HashSet<String>,
}

impl DryRunOutput {
    /// Writes under `dir`, created if missing.
    pub(crate) fn new(dir: PathBuf) -> Result<DryRunOutput, BackfillError> {
        std::fs::create_dir_all(&dir).map_err(|error| BackfillError::io(&dir, &error))?;
        Ok(DryRunOutput {
            dir,
            written: HashSet::new(),
        })
    }

    /// The NDJSON file for an archive file's key.
    pub(crate) fn path_for(&self, key: &str) -> PathBuf {
        let name: String = key.trim_start_matches('/').replace('/', "__");
        self.dir.join(format!("{name}.ndjson"))
    }

    /// Appends `batch`'s events to `file`'s NDJSON (emptied by the run's
    /// first write to it).
    pub(crate) fn write(
        &mut self,
        file: &FileId,
        batch: &ImportBatch,
    ) -> Result<(), BackfillError> {
        let path = self.path_for(&file.key);
        let first = self.written.insert(file.key.clone());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(first)
            .append(!first)
            .open(&path)
            .map_err(|error| BackfillError::io(&path, &error))?;
        let mut writer = BufWriter::new(out);
        for event in batch.events() {
            writer
                .write_all(event)
                .and_then(|()| writer.write_all(b"\n"))
                .map_err(|error| BackfillError::io(&path, &error))?;
        }
        writer
            .flush()
            .map_err(|error| BackfillError::io(&path, &error))
    }
}
