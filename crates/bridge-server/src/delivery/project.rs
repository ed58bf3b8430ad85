//! One Mixpanel project as delivery sees it: its mapper and where its
//! events go (Mixpanel, or a dry-run NDJSON file).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mixpanel_client::{Client, Error as MixpanelError, ImportBatch};

use crate::metrics::{Metrics, status_label};
use currents_mixpanel::Mapper;

/// Where a project's events go.
pub enum Sink {
    /// Mixpanel's `/import`.
    Mixpanel(Client),
    /// An NDJSON file (dry-run): each event one line, fsync'd per batch.
    DryRun(DryRunFile),
}

/// An append-only NDJSON file of mapped events.
pub struct DryRunFile {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl DryRunFile {
    /// Opens (or creates) the file for appending, with its directory.
    pub fn open(path: &Path) -> std::io::Result<DryRunFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(DryRunFile {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Where the events go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn append(&self, text: Vec<u8>) -> std::io::Result<()> {
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || {
            let mut file = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            file.write_all(&text)?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// A project delivery can send to.
pub struct ProjectTarget {
    /// The project's name (`default`, or its `[[projects]]` name).
    pub name: String,
    /// Its mapping (token, type filter).
    pub mapper: Mapper,
    /// Where its events go.
    pub sink: Sink,
}

/// Records one `/import` call's final answer, duration and retries.
fn record_import(
    metrics: &Metrics,
    result: &Result<mixpanel_client::ImportResult, MixpanelError>,
    elapsed: std::time::Duration,
) {
    let (status, attempts) = match result {
        Ok(result) if result.failed.is_empty() => ("200", result.n_requests),
        Ok(result) => ("400", result.n_requests),
        Err(MixpanelError::Auth { status, .. }) => (status_label(*status), 1),
        Err(MixpanelError::Unavailable {
            status, attempts, ..
        }) => (status_label(*status), *attempts),
        Err(MixpanelError::Rejected { status, .. }) => (status_label(*status), 1),
        Err(MixpanelError::Transport { attempts, .. }) => ("transport", *attempts),
        Err(_) => ("other", 1),
    };
    metrics.record_import(status, elapsed, u64::from(attempts.saturating_sub(1)));
}

/// A send that failed part-way: what the requests before the failing one
/// got, and from which request on nothing is known.
pub(super) struct SendFailure {
    /// The requests answered before the failure.
    pub(super) sent: Sent,
    /// The index of the request that failed; it and those after it were not
    /// (or not surely) taken.
    pub(super) failed_from: usize,
    /// Why.
    pub(super) error: MixpanelError,
}

/// What a project took of one leased batch.
pub(super) struct Sent {
    pub(super) n_delivered: u64,
    /// (request batch, record index, Mixpanel's message) of each refused record.
    pub(super) refused: Vec<(usize, usize, String)>,
}

impl ProjectTarget {
    pub(super) async fn send<Origin: Sync>(
        &self,
        batches: &[(Arc<ImportBatch>, Origin)],
        metrics: &Metrics,
    ) -> Result<Sent, SendFailure> {
        let mut sent = Sent {
            n_delivered: 0,
            refused: Vec::new(),
        };
        match &self.sink {
            Sink::Mixpanel(client) => {
                for (batch_idx, (batch, _)) in batches.iter().enumerate() {
                    let started = std::time::Instant::now();
                    let result = client.import_shared(Arc::clone(batch)).await;
                    record_import(metrics, &result, started.elapsed());
                    let result = match result {
                        Ok(result) => result,
                        Err(error) => {
                            return Err(SendFailure {
                                sent,
                                failed_from: batch_idx,
                                error,
                            });
                        }
                    };
                    sent.n_delivered += (batch.len() - result.failed.len()) as u64;
                    for failed in result.failed {
                        let message = match &failed.field {
                            Some(field) => format!("{field}: {}", failed.message),
                            None => failed.message,
                        };
                        sent.refused.push((batch_idx, failed.index, message));
                    }
                }
            }
            Sink::DryRun(file) => {
                let mut text = Vec::new();
                for (batch, _) in batches {
                    for event in batch.events() {
                        text.extend_from_slice(event);
                        text.push(b'\n');
                    }
                    sent.n_delivered += batch.len() as u64;
                }
                if let Err(error) = file.append(text).await {
                    return Err(SendFailure {
                        sent: Sent {
                            n_delivered: 0,
                            refused: Vec::new(),
                        },
                        failed_from: 0,
                        error: MixpanelError::Transport {
                            attempts: 1,
                            message: format!(
                                "cannot write the dry-run file {}: {error}",
                                file.path().display()
                            ),
                        },
                    });
                }
            }
        }
        Ok(sent)
    }
}
