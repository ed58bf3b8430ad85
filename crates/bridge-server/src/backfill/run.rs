//! A backfill from start to end: the plan (what to read, from where each
//! file resumes), then the readers on every core and the sender together.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use currents_archive::layout::Prune;
use currents_archive::store::ArchiveStore;
use currents_mixpanel::pipeline::{self, Config as PipelineConfig};
use currents_mixpanel::{Mapper, OutcomeCounts};
use mixpanel_client::{BatchLimits, Client};
use tokio::sync::mpsc;

use super::checkpoint::{Checkpoints, FileId};
use super::letters::LetterStore;
use super::output::DryRunOutput;
use super::read::{FileUnit, ReadContext};
use super::send::{Destination, Sender, Totals};
use super::spares::Spares;
use super::tracker::Tracker;
use super::{BackfillError, FromReaders};

/// What to read.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Directories or object store URLs (`s3://bucket/prefix`, …).
    pub locations: Vec<String>,
    /// The event types and hours to read; whole folders outside them are
    /// not even listed.
    pub prune: Prune,
}

/// The files of a run, each from its checkpoint on.
#[derive(Debug)]
pub struct Plan {
    units: Vec<FileUnit>,
    tracker: Tracker,
    /// Files listed.
    pub files_listed: u64,
    /// Of those, files an earlier run finished (not read again).
    pub files_already_done: u64,
    /// Bytes of the files to read.
    pub bytes_to_read: u64,
    /// Objects in the folders listed that are neither Avro files nor
    /// batches (not read).
    pub objects_ignored: u64,
}

impl Plan {
    /// Lists every location and looks up each file's checkpoint
    /// (`checkpoints` is `None` for a dry run, which reads everything and
    /// records nothing). With `again`, earlier checkpoints of these
    /// locations are forgotten first.
    pub async fn make(
        selection: &Selection,
        checkpoints: Option<&mut Checkpoints>,
        again: bool,
    ) -> Result<Plan, BackfillError> {
        let mut checkpoints = checkpoints;
        let mut plan = Plan {
            units: Vec::new(),
            tracker: Tracker::default(),
            files_listed: 0,
            files_already_done: 0,
            bytes_to_read: 0,
            objects_ignored: 0,
        };
        for location in &selection.locations {
            let store =
                Arc::new(
                    ArchiveStore::open(location).map_err(|error| BackfillError::Archive {
                        location: location.clone(),
                        message: error.to_string(),
                    })?,
                );
            let listed =
                store
                    .list(&selection.prune)
                    .await
                    .map_err(|error| BackfillError::Archive {
                        location: location.clone(),
                        message: error.to_string(),
                    })?;
            if again && let Some(checkpoints) = checkpoints.as_deref_mut() {
                checkpoints.forget(location)?;
            }
            plan.objects_ignored += listed.skipped_keys.len() as u64;
            for object in listed.objects {
                plan.files_listed += 1;
                let id = FileId {
                    location: location.clone(),
                    key: object.key.clone(),
                    size: object.size,
                    e_tag: object.e_tag.clone(),
                };
                let progress = match checkpoints.as_deref() {
                    Some(checkpoints) => checkpoints.progress(&id)?,
                    None => Default::default(),
                };
                if progress.finished {
                    plan.files_already_done += 1;
                    continue;
                }
                plan.bytes_to_read += object.size;
                let file = plan.tracker.add(id, progress);
                plan.units.push(FileUnit {
                    file,
                    store: Arc::clone(&store),
                    object,
                    start: progress.records_done,
                });
            }
        }
        Ok(plan)
    }

    /// Files to read.
    pub fn files_to_read(&self) -> u64 {
        self.units.len() as u64
    }
}

/// How to read and send.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The mapping, as `serve` does it (token, type filter).
    pub mapper: Mapper,
    /// Reader threads (files read, decoded and mapped at once).
    pub threads: NonZeroUsize,
    /// `/import` requests in flight at once.
    pub max_in_flight: usize,
    /// Mixpanel's request limits.
    pub limits: BatchLimits,
}

/// Where the events go: Mixpanel, or NDJSON files in a directory.
#[derive(Debug)]
pub enum Target {
    /// `/import` through this client.
    Mixpanel(Client),
    /// `--dry-run --out DIR`.
    DryRun(std::path::PathBuf),
}

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    /// Files listed, already done, read to their end, that could not be.
    pub files_listed: u64,
    /// Files an earlier run had finished.
    pub files_already_done: u64,
    /// Files whose every record is settled now.
    pub files_done: u64,
    /// Files that could not be read (to their end), with why.
    pub files_failed: Vec<(String, String)>,
    /// Every record's mapping outcome.
    pub counts: OutcomeCounts,
    /// Events Mixpanel imported (dry run: written).
    pub sent: u64,
    /// Events stored as dead letters.
    pub dead_lettered: u64,
    /// Archive bytes read.
    pub bytes: u64,
    /// `/import` requests made.
    pub requests: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// Why sending stopped before the end, if it did.
    pub stopped: Option<String>,
}

/// Runs `plan`: readers on `options.threads` threads, the sender here.
pub async fn run(
    plan: Plan,
    options: RunOptions,
    target: Target,
    checkpoints: Option<&mut Checkpoints>,
    letters: &mut LetterStore,
    totals: Arc<Totals>,
) -> Result<Summary, BackfillError> {
    let started = Instant::now();
    let Plan {
        units,
        mut tracker,
        files_listed,
        files_already_done,
        ..
    } = plan;
    let destination = match target {
        Target::Mixpanel(client) => Destination::Mixpanel(client),
        Target::DryRun(dir) => Destination::DryRun(DryRunOutput::new(dir)?),
    };
    let spares = Arc::new(Spares::default());
    let context = ReadContext {
        mapper: options.mapper,
        limits: options.limits,
        totals: Arc::clone(&totals),
        spares: Arc::clone(&spares),
        runtime: tokio::runtime::Handle::current(),
    };
    // Room for a few chunks per reader between the readers and the sender.
    let (to_sender, from_readers) = mpsc::channel(2 * options.threads.get());
    let pipeline_config = PipelineConfig::new(options.threads);
    let readers = tokio::task::spawn_blocking(move || {
        pipeline::unordered(
            units.into_iter(),
            &pipeline_config,
            |unit, emit| context.read_file(unit, emit),
            |item: FromReaders| to_sender.blocking_send(item),
        )
    });
    let report = Sender {
        destination,
        max_in_flight: options.max_in_flight,
        tracker: &mut tracker,
        checkpoints,
        letters,
        totals: Arc::clone(&totals),
        spares,
    }
    .run(from_readers)
    .await;
    // The sender dropped its receiver: readers still going stop at their
    // next chunk.
    let _ = readers.await;
    let report = report?;
    Ok(Summary {
        files_listed,
        files_already_done,
        files_done: Totals::get(&totals.files_done),
        files_failed: report.failed_files,
        counts: report.counts,
        sent: Totals::get(&totals.sent),
        dead_lettered: Totals::get(&totals.dead_lettered),
        bytes: Totals::get(&totals.bytes),
        requests: Totals::get(&totals.requests),
        elapsed: started.elapsed(),
        stopped: report.stopped,
    })
}
