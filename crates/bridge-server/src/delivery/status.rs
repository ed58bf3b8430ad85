//! Delivery counters and per-project state, for `/status` and `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use currents_mixpanel::SkipReason;

/// Shared delivery counters. Counted per batch, never per event in a loop.
pub struct DeliveryStatus {
    /// Events Mixpanel (or the dry-run file) took.
    pub delivered: AtomicU64,
    /// Skipped events, indexed like [`SkipReason::ALL`].
    pub skipped: [AtomicU64; SkipReason::ALL.len()],
    /// Events put in the dead-letter store.
    pub dead_lettered: AtomicU64,
    /// Batches settled.
    pub batches_settled: AtomicU64,
    /// Batches given back for a later attempt.
    pub batches_released: AtomicU64,
    /// Workers started again after a panic.
    pub worker_restarts: AtomicU64,
    /// Deliveries that panicked (a bug) and were caught: a group's, then
    /// each batch's delivered alone.
    pub delivery_panics: AtomicU64,
    /// The archive's counters, when `archive.url` is set.
    pub archive: Option<ArchiveStatus>,
    projects: Vec<Mutex<ProjectStatus>>,
}

/// What delivery's archive step did, for `/status`: counted per batch.
pub struct ArchiveStatus {
    /// Where batches are archived, as the store shows it (no user info, no
    /// query string).
    pub url: String,
    /// Batches written to the archive (a batch written again after a
    /// release or a replay counts again).
    pub batches_written: AtomicU64,
    /// Attempts to write a batch that failed (the batch was released, or
    /// dead-lettered past its limits).
    pub batches_failed: AtomicU64,
    /// Bytes of the bodies written, as received (before compression).
    pub body_bytes: AtomicU64,
}

/// One project's delivery state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProjectStatus {
    /// The project's name.
    pub name: String,
    /// `delivering` or `paused`.
    pub state: &'static str,
    /// Why it is paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
}

impl DeliveryStatus {
    /// Counts a worker started again after a panic.
    pub(super) fn record_worker_restart(&self) {
        self.worker_restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a delivery that panicked and was caught.
    pub(super) fn record_delivery_panic(&self) {
        self.delivery_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Workers started again after a panic, so far.
    pub fn worker_restarts(&self) -> u64 {
        self.worker_restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counters for these projects, and for the archive at `archive_url`
    /// when there is one.
    pub(super) fn new(
        names: impl Iterator<Item = String>,
        archive_url: Option<String>,
    ) -> DeliveryStatus {
        DeliveryStatus {
            archive: archive_url.map(|url| ArchiveStatus {
                url,
                batches_written: AtomicU64::new(0),
                batches_failed: AtomicU64::new(0),
                body_bytes: AtomicU64::new(0),
            }),
            delivered: AtomicU64::new(0),
            worker_restarts: AtomicU64::new(0),
            delivery_panics: AtomicU64::new(0),
            skipped: std::array::from_fn(|_| AtomicU64::new(0)),
            dead_lettered: AtomicU64::new(0),
            batches_settled: AtomicU64::new(0),
            batches_released: AtomicU64::new(0),
            projects: names
                .map(|name| {
                    Mutex::new(ProjectStatus {
                        name,
                        state: "delivering",
                        paused_reason: None,
                    })
                })
                .collect(),
        }
    }

    /// Every project's state.
    pub fn projects(&self) -> Vec<ProjectStatus> {
        self.projects
            .iter()
            .map(|project| {
                project
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }

    pub(super) fn pause(&self, project_idx: usize, reason: String) {
        if let Some(project) = self.projects.get(project_idx) {
            let mut project = project
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            project.state = "paused";
            project.paused_reason = Some(reason);
        }
    }

    /// Marks the project delivering again. The log line saying so is the
    /// failure log's, which writes it once per episode.
    pub(super) fn resume(&self, project_idx: usize) {
        if let Some(project) = self.projects.get(project_idx) {
            let mut project = project
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            project.state = "delivering";
            project.paused_reason = None;
        }
    }

    pub(super) fn record_delivered(&self, n_delivered: u64, skipped: &[u64], n_dead_letters: u64) {
        self.delivered.fetch_add(n_delivered, Ordering::Relaxed);
        for (counter, count) in self.skipped.iter().zip(skipped) {
            counter.fetch_add(*count, Ordering::Relaxed);
        }
        self.dead_lettered
            .fetch_add(n_dead_letters, Ordering::Relaxed);
        self.batches_settled.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record_released(&self) {
        self.batches_released.fetch_add(1, Ordering::Relaxed);
    }
}
