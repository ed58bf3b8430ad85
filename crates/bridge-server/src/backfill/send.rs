//! The sending half of a backfill: chunks of mapped events, as the readers
//! produce them, imported into Mixpanel a few requests at a time (or, in a
//! dry run, written out), their refusals stored as dead letters, and the
//! checkpoints advanced over what is settled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use currents_mixpanel::OutcomeCounts;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use mixpanel_client::{Client, ImportResult};
use tokio::sync::mpsc;

use super::checkpoint::Checkpoints;
use super::letters::LetterStore;
use super::output::DryRunOutput;
use super::spares::Spares;
use super::tracker::Tracker;
use super::{BackfillError, Chunk, FromReaders};
use crate::delivery::{REFUSED_BY_MIXPANEL, dead_letter_from_text};

/// How often the checkpoints are written while chunks settle (and at the
/// end of each file, and at the end): a crash sends again at most what
/// settled in this time, which Mixpanel deduplicates.
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// Running totals, read by the progress display while the run goes on.
#[derive(Debug, Default)]
pub struct Totals {
    /// Archive records read (events, valid or not).
    pub records: AtomicU64,
    /// Archive bytes read.
    pub bytes: AtomicU64,
    /// Files whose every record is settled.
    pub files_done: AtomicU64,
    /// Events Mixpanel imported (or, in a dry run, written).
    pub sent: AtomicU64,
    /// Events stored as dead letters (refused by Mixpanel, invalid, too large).
    pub dead_lettered: AtomicU64,
    /// `/import` requests made, retries included.
    pub requests: AtomicU64,
}

impl Totals {
    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// Where the mapped events go.
pub(crate) enum Destination {
    /// Mixpanel's `/import`, through this client.
    Mixpanel(Client),
    /// NDJSON files (`--dry-run`).
    DryRun(DryRunOutput),
}

/// What the sending half found besides the totals.
#[derive(Debug, Default)]
pub(crate) struct SendReport {
    /// Every mapped event's outcome, by reason.
    pub(crate) counts: OutcomeCounts,
    /// Why sending stopped early, if it did (the rest stays for a resume).
    pub(crate) stopped: Option<String>,
    /// Files that could not be read to their end, with why (their records
    /// before the damage are settled; a resume reads them again from
    /// there).
    pub(crate) failed_files: Vec<(String, String)>,
}

/// The state the sending loop works on.
pub(crate) struct Sender<'a> {
    pub(crate) destination: Destination,
    pub(crate) max_in_flight: usize,
    pub(crate) tracker: &'a mut Tracker,
    /// `None` in a dry run: it changes no checkpoint.
    pub(crate) checkpoints: Option<&'a mut Checkpoints>,
    pub(crate) letters: &'a mut LetterStore,
    pub(crate) totals: Arc<Totals>,
    /// Where settled chunks' buffers go back to the readers.
    pub(crate) spares: Arc<Spares>,
}

impl Sender<'_> {
    /// Takes everything the readers send until they are done (or sending
    /// must stop: Mixpanel refused the credentials, or kept failing after
    /// the client's retries). Chunks in flight are always accounted for
    /// before it returns.
    pub(crate) async fn run(
        mut self,
        mut from_readers: mpsc::Receiver<FromReaders>,
    ) -> Result<SendReport, BackfillError> {
        let mut report = SendReport::default();
        let mut in_flight = FuturesUnordered::new();
        let mut readers_done = false;
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let can_take = !readers_done
                && report.stopped.is_none()
                && in_flight.len() < self.max_in_flight.max(1);
            tokio::select! {
                next = from_readers.recv(), if can_take => match next {
                    Some(FromReaders::Chunk(chunk)) => {
                        report.counts.add(&chunk.counts);
                        match &mut self.destination {
                            Destination::Mixpanel(client) => {
                                let client = client.clone();
                                in_flight.push(async move {
                                    let result = client.import_shared(Arc::clone(&chunk.batch)).await;
                                    (chunk, result)
                                });
                            }
                            Destination::DryRun(output) => {
                                output.write(self.tracker.id(chunk.file), &chunk.batch)?;
                                let result = Ok(ImportResult {
                                    n_imported: chunk.batch.len(),
                                    ..ImportResult::default()
                                });
                                self.settle(chunk, result, &mut report).await?;
                            }
                        }
                    }
                    Some(FromReaders::End { file, total }) => {
                        self.tracker.end(file, total);
                        self.note_if_finished(file);
                    }
                    Some(FromReaders::Failed { file, error }) => {
                        tracing::warn!(key = %self.tracker.id(file).key, error = %error, "Cannot read an archive file to its end.");
                        report.failed_files.push((self.tracker.id(file).key.clone(), error));
                    }
                    None => readers_done = true,
                },
                Some((chunk, result)) = in_flight.next() => {
                    self.settle(chunk, result, &mut report).await?;
                }
                _ = save.tick() => self.save()?,
                else => break,
            }
            if (readers_done || report.stopped.is_some()) && in_flight.is_empty() {
                break;
            }
        }
        self.save()?;
        self.letters.finish()?;
        Ok(report)
    }

    /// One chunk's answer: its refusals and mapping failures stored as dead
    /// letters, then its records settled; or, when Mixpanel gave no
    /// answer, sending stops and the chunk stays unsettled.
    async fn settle(
        &mut self,
        chunk: Box<Chunk>,
        result: Result<ImportResult, mixpanel_client::Error>,
        report: &mut SendReport,
    ) -> Result<(), BackfillError> {
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!(error = %error, "Mixpanel did not take a backfill request; stopping.");
                report.stopped.get_or_insert_with(|| error.to_string());
                return Ok(());
            }
        };
        Totals::add(&self.totals.requests, u64::from(result.n_requests));
        let Chunk {
            file,
            records,
            batch,
            originals,
            mut dead_letters,
            ..
        } = *chunk;
        self.spares.put_batch(batch);
        for refused in &result.failed {
            // The Currents event as the archive held it, so that a replay
            // maps it again.
            dead_letters.push(dead_letter_from_text(
                originals.get(refused.index).unwrap_or_default(),
                REFUSED_BY_MIXPANEL,
                &refused.message,
                None,
                1,
            ));
        }
        if !dead_letters.is_empty() {
            self.letters.add(&dead_letters).await?;
        }
        Totals::add(&self.totals.dead_lettered, dead_letters.len() as u64);
        Totals::add(
            &self.totals.sent,
            (originals.len() - result.failed.len()) as u64,
        );
        self.spares.put_originals(originals);
        self.tracker.settle(file, records);
        self.note_if_finished(file);
        Ok(())
    }

    fn note_if_finished(&mut self, file: usize) {
        if self.tracker.is_finished(file) {
            Totals::add(&self.totals.files_done, 1);
        }
    }

    fn save(&mut self) -> Result<(), BackfillError> {
        if let Some(checkpoints) = self.checkpoints.as_deref_mut() {
            self.tracker.save(checkpoints)?;
        }
        Ok(())
    }
}

impl Totals {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
