//! Every Prometheus metric of the bridge, declared in one place.
//!
//! Names follow `bridge_<subsystem>_<name>_<unit>[_total]` in base units
//! (seconds, bytes); labels come only from closed sets (a status, an
//! outcome, a reason, a configured project), never from user data. Counters
//! are incremented per batch, never per event in a loop.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label pairs; values from closed sets only.
pub type Labels = Vec<(&'static str, String)>;

/// The bridge's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// `bridge_ingest_requests_total{status}`: answers to `POST /currents`.
    pub ingest_requests: Family<Labels, Counter>,
    /// `bridge_ingest_unavailable_requests_total{reason}`: the 503 answers
    /// among them, by reason: `spool_full`, `shutting_down`,
    /// `storage_error`, `timeout`. Braze retries these batches later.
    pub ingest_unavailable_requests: Family<Labels, Counter>,
    /// `bridge_ingest_received_events_total`: events in accepted batches.
    pub ingest_received_events: Counter,
    /// `bridge_ingest_ack_duration_seconds`: request to 2xx, spooling included.
    pub ingest_ack_duration: Histogram,
    /// `bridge_ingest_body_bytes_reserved`: bytes of the body memory budget
    /// (`ingest.max_inflight_body_bytes`) held by requests in flight.
    pub ingest_body_bytes_reserved: Gauge,
    /// `bridge_delivery_delivered_events_total{project}`.
    pub delivered_events: Family<Labels, Counter>,
    /// `bridge_delivery_dead_lettered_events_total{reason}`.
    pub dead_lettered_events: Family<Labels, Counter>,
    /// `bridge_discarded_events_total{reason,intentional}`: skipped events.
    pub discarded_events: Family<Labels, Counter>,
    /// `bridge_delivery_released_batches_total`: batches given back for a retry.
    pub released_batches: Counter,
    /// `bridge_archive_batches_total{outcome}`: batches delivery wrote to
    /// the archive (`written`) or could not (`failed`: released for a
    /// retry, or dead-lettered as `archive_failed` past the limits).
    pub archive_batches: Family<Labels, Counter>,
    /// `bridge_archive_bytes_total`: bytes of the bodies archived, as
    /// received (before compression).
    pub archive_bytes: Counter,
    /// `bridge_mixpanel_import_duration_seconds`: one `/import` call, retries included.
    pub mixpanel_import_duration: Histogram,
    /// `bridge_mixpanel_responses_total{status}`: final answers to `/import` calls.
    pub mixpanel_responses: Family<Labels, Counter>,
    /// `bridge_mixpanel_retries_total`: requests repeated after 429, 5xx or timeouts.
    pub mixpanel_retries: Counter,
    /// `bridge_spool_bytes`: stored batch bytes.
    pub spool_bytes: Gauge,
    /// `bridge_spool_batches`: stored batches.
    pub spool_batches: Gauge,
    /// `bridge_spool_oldest_age_seconds`: age of the oldest stored batch.
    pub spool_oldest_age_seconds: Gauge,
    /// `bridge_spool_max_bytes`: the configured `spool.max_bytes`, at which
    /// ingest answers 503 (set once by `serve`; 0 until then).
    pub spool_max_bytes: Gauge,
    /// `bridge_spool_quarantined_batches`: stored batches found damaged and
    /// set aside (never delivered; kept for recovery).
    pub spool_quarantined_batches: Gauge,
    /// `bridge_spool_consumer_pending_batches`: with NATS, batches not yet
    /// handed to any replica (0 with SQLite); set at scrape time.
    pub spool_consumer_pending_batches: Gauge,
    /// `bridge_spool_consumer_ack_pending_batches`: with NATS, batches handed
    /// to a replica and not yet settled or released.
    pub spool_consumer_ack_pending_batches: Gauge,
    /// `bridge_spool_consumer_redelivered_batches`: with NATS, batches handed
    /// out more than once and not yet settled (a replica died, or a release).
    pub spool_consumer_redelivered_batches: Gauge,
    /// `bridge_dead_letters`: entries in the dead-letter store.
    pub dead_letters: Gauge,
    /// `bridge_ready`: 1 when `/readyz` would answer 200 (accepting, and the
    /// spool answers), 0 otherwise; set at scrape time.
    pub ready: Gauge,
    /// `bridge_delivery_project_paused{project}`: 1 while delivery to the
    /// project is paused (Mixpanel refused its credentials), 0 while it
    /// delivers; one series per configured project, set at scrape time.
    pub project_paused: Family<Labels, Gauge>,
    /// `bridge_delivery_worker_restarts_total`: delivery workers started
    /// again after a panic (a bug), copied in at scrape time.
    pub delivery_worker_restarts: Counter,
    /// `bridge_listener_connections_total{outcome}`: connections `accepted`,
    /// `refused_over_cap` (closed at once: `ingest.max_connections` were
    /// open and busy), `evicted_silent` (closed at the cap to make room: it
    /// had not sent a request) and `cut_at_shutdown` (still open after the
    /// shutdown grace).
    pub listener_connections: Family<Labels, Counter>,
    /// `bridge_cohort_webhook_requests_total{outcome}`: calls of Mixpanel's
    /// cohort webhook: `recorded`, `replayed`, `unauthorized`, `malformed`,
    /// `unavailable`.
    pub cohort_webhook_requests: Family<Labels, Counter>,
    /// `bridge_cohort_members_added_total`: members who entered a cohort.
    pub cohort_members_added: Counter,
    /// `bridge_cohort_members_removed_total`: members who left a cohort.
    pub cohort_members_removed: Counter,
    /// `bridge_cohort_unmatched_members_total`: members seen without a
    /// usable Braze id (never sent).
    pub cohort_unmatched_members: Counter,
    /// `bridge_cohort_braze_requests_total{outcome}`: requests to Braze:
    /// `success`, `partly_refused`, `rejected`, `unauthorized`, `unavailable`.
    pub cohort_braze_requests: Family<Labels, Counter>,
    /// `bridge_cohort_confirmed_changes_total`: membership changes Braze applied.
    pub cohort_confirmed_changes: Counter,
    /// `bridge_cohort_dead_lettered_changes_total`: changes set aside.
    pub cohort_dead_lettered_changes: Counter,
    /// `bridge_cohort_pending_changes`: changes waiting for Braze.
    pub cohort_pending_changes: Gauge,
    /// `bridge_cohort_last_sync_age_seconds{cohort}`: seconds since each
    /// cohort's membership was last recorded (`<project>/<cohort id>`;
    /// Mixpanel syncs at most 60 cohorts per project, a bounded set).
    pub cohort_last_sync_age_seconds: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bridge");
        let metrics = Metrics {
            ingest_requests: Family::default(),
            ingest_unavailable_requests: Family::default(),
            ingest_received_events: Counter::default(),
            ingest_ack_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            ingest_body_bytes_reserved: Gauge::default(),
            delivered_events: Family::default(),
            dead_lettered_events: Family::default(),
            discarded_events: Family::default(),
            released_batches: Counter::default(),
            archive_batches: Family::default(),
            archive_bytes: Counter::default(),
            mixpanel_import_duration: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            mixpanel_responses: Family::default(),
            mixpanel_retries: Counter::default(),
            spool_bytes: Gauge::default(),
            spool_batches: Gauge::default(),
            spool_oldest_age_seconds: Gauge::default(),
            spool_max_bytes: Gauge::default(),
            spool_quarantined_batches: Gauge::default(),
            spool_consumer_pending_batches: Gauge::default(),
            spool_consumer_ack_pending_batches: Gauge::default(),
            spool_consumer_redelivered_batches: Gauge::default(),
            dead_letters: Gauge::default(),
            ready: Gauge::default(),
            project_paused: Family::default(),
            delivery_worker_restarts: Counter::default(),
            listener_connections: Family::default(),
            cohort_webhook_requests: Family::default(),
            cohort_members_added: Counter::default(),
            cohort_members_removed: Counter::default(),
            cohort_unmatched_members: Counter::default(),
            cohort_braze_requests: Family::default(),
            cohort_confirmed_changes: Counter::default(),
            cohort_dead_lettered_changes: Counter::default(),
            cohort_pending_changes: Gauge::default(),
            cohort_last_sync_age_seconds: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ingest_requests",
            "Answers to POST /currents, by status",
            metrics.ingest_requests.clone(),
        );
        registry.register(
            "ingest_unavailable_requests",
            "Answers 503 to POST /currents (Braze retries), by reason",
            metrics.ingest_unavailable_requests.clone(),
        );
        registry.register(
            "ingest_received_events",
            "Events in accepted Currents batches",
            metrics.ingest_received_events.clone(),
        );
        registry.register(
            "ingest_ack_duration_seconds",
            "Time from request to acknowledgement, spooling included",
            metrics.ingest_ack_duration.clone(),
        );
        registry.register(
            "ingest_body_bytes_reserved",
            "Bytes of the body memory budget held by requests in flight",
            metrics.ingest_body_bytes_reserved.clone(),
        );
        registry.register(
            "delivery_delivered_events",
            "Events Mixpanel (or the dry-run file) took, by project",
            metrics.delivered_events.clone(),
        );
        registry.register(
            "delivery_dead_lettered_events",
            "Events put in the dead-letter store, by reason",
            metrics.dead_lettered_events.clone(),
        );
        registry.register(
            "discarded_events",
            "Events not sent on purpose (skipped), by reason",
            metrics.discarded_events.clone(),
        );
        registry.register(
            "delivery_released_batches",
            "Batches given back to the spool for a later attempt",
            metrics.released_batches.clone(),
        );
        registry.register(
            "archive_batches",
            "Batches written to the archive before delivery, or not, by outcome",
            metrics.archive_batches.clone(),
        );
        registry.register(
            "archive_bytes",
            "Bytes of the bodies archived, before compression",
            metrics.archive_bytes.clone(),
        );
        registry.register(
            "mixpanel_import_duration_seconds",
            "One /import call, retries included",
            metrics.mixpanel_import_duration.clone(),
        );
        registry.register(
            "mixpanel_responses",
            "Final answers to /import calls, by status",
            metrics.mixpanel_responses.clone(),
        );
        registry.register(
            "mixpanel_retries",
            "/import requests repeated after 429, 5xx or timeouts",
            metrics.mixpanel_retries.clone(),
        );
        registry.register(
            "spool_bytes",
            "Stored batch bytes",
            metrics.spool_bytes.clone(),
        );
        registry.register(
            "spool_batches",
            "Stored batches",
            metrics.spool_batches.clone(),
        );
        registry.register(
            "spool_oldest_age_seconds",
            "Age of the oldest stored batch",
            metrics.spool_oldest_age_seconds.clone(),
        );
        registry.register(
            "spool_max_bytes",
            "The configured spool.max_bytes, at which ingest answers 503",
            metrics.spool_max_bytes.clone(),
        );
        registry.register(
            "spool_quarantined_batches",
            "Stored batches found damaged and set aside",
            metrics.spool_quarantined_batches.clone(),
        );
        registry.register(
            "spool_consumer_pending_batches",
            "With NATS, batches not yet handed to any replica",
            metrics.spool_consumer_pending_batches.clone(),
        );
        registry.register(
            "spool_consumer_ack_pending_batches",
            "With NATS, batches handed to a replica and not yet settled or released",
            metrics.spool_consumer_ack_pending_batches.clone(),
        );
        registry.register(
            "spool_consumer_redelivered_batches",
            "With NATS, batches handed out more than once and not yet settled",
            metrics.spool_consumer_redelivered_batches.clone(),
        );
        registry.register(
            "dead_letters",
            "Entries in the dead-letter store",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "ready",
            "1 when /readyz answers 200, 0 otherwise",
            metrics.ready.clone(),
        );
        registry.register(
            "delivery_project_paused",
            "1 while delivery to the project is paused after refused credentials",
            metrics.project_paused.clone(),
        );
        registry.register(
            "delivery_worker_restarts",
            "Delivery workers started again after a panic",
            metrics.delivery_worker_restarts.clone(),
        );
        registry.register(
            "listener_connections",
            "Connections to the HTTP listener, by outcome",
            metrics.listener_connections.clone(),
        );
        registry.register(
            "cohort_webhook_requests",
            "Calls of Mixpanel's cohort webhook, by outcome",
            metrics.cohort_webhook_requests.clone(),
        );
        registry.register(
            "cohort_members_added",
            "Members who entered a cohort",
            metrics.cohort_members_added.clone(),
        );
        registry.register(
            "cohort_members_removed",
            "Members who left a cohort",
            metrics.cohort_members_removed.clone(),
        );
        registry.register(
            "cohort_unmatched_members",
            "Cohort members seen without a usable Braze id",
            metrics.cohort_unmatched_members.clone(),
        );
        registry.register(
            "cohort_braze_requests",
            "Requests to Braze for cohort membership, by outcome",
            metrics.cohort_braze_requests.clone(),
        );
        registry.register(
            "cohort_confirmed_changes",
            "Cohort membership changes Braze applied",
            metrics.cohort_confirmed_changes.clone(),
        );
        registry.register(
            "cohort_dead_lettered_changes",
            "Cohort membership changes set aside as dead letters",
            metrics.cohort_dead_lettered_changes.clone(),
        );
        registry.register(
            "cohort_pending_changes",
            "Cohort membership changes waiting for Braze",
            metrics.cohort_pending_changes.clone(),
        );
        registry.register(
            "cohort_last_sync_age_seconds",
            "Seconds since each cohort's membership was last recorded",
            metrics.cohort_last_sync_age_seconds.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Copies the listener's connection counts in, at scrape time.
    pub fn refresh_listener(&self, stats: &crate::listener::ListenerStats) {
        use std::sync::atomic::Ordering::Relaxed;
        for (outcome, count) in [
            ("accepted", &stats.accepted),
            ("refused_over_cap", &stats.refused_over_cap),
            ("cut_at_shutdown", &stats.cut_at_shutdown),
            ("evicted_silent", &stats.evicted_silent),
        ] {
            set_counter(
                &self
                    .listener_connections
                    .get_or_create(&vec![("outcome", outcome.to_owned())]),
                count.load(Relaxed),
            );
        }
    }

    /// Copies each project's delivery state and the worker restarts in, at
    /// scrape time.
    pub fn refresh_delivery(
        &self,
        projects: &[crate::delivery::ProjectStatus],
        worker_restarts: u64,
    ) {
        for project in projects {
            self.project_paused
                .get_or_create(&vec![("project", project.name.clone())])
                .set(i64::from(project.state == "paused"));
        }
        set_counter(&self.delivery_worker_restarts, worker_restarts);
    }

    /// Copies the cohort import's counters and each cohort's state in,
    /// at scrape time (the import keeps its own counts; see
    /// `cohort_import::stats`).
    pub fn refresh_cohorts(
        &self,
        stats: &cohort_import::stats::CohortStats,
        cohorts: &[cohort_import::store::CohortStatus],
        now_ms: i64,
    ) {
        use std::sync::atomic::Ordering::Relaxed;

        use cohort_import::stats::RequestOutcome;
        use cohort_import::webhook::WebhookOutcome;

        for outcome in WebhookOutcome::ALL {
            set_counter(
                &self
                    .cohort_webhook_requests
                    .get_or_create(&vec![("outcome", outcome.as_str().to_owned())]),
                stats.webhook_calls(outcome),
            );
        }
        for outcome in RequestOutcome::ALL {
            set_counter(
                &self
                    .cohort_braze_requests
                    .get_or_create(&vec![("outcome", outcome.as_str().to_owned())]),
                stats.braze_requests(outcome),
            );
        }
        set_counter(
            &self.cohort_members_added,
            stats.members_added.load(Relaxed),
        );
        set_counter(
            &self.cohort_members_removed,
            stats.members_removed.load(Relaxed),
        );
        set_counter(
            &self.cohort_unmatched_members,
            stats.members_unmatched.load(Relaxed),
        );
        set_counter(
            &self.cohort_confirmed_changes,
            stats.changes_confirmed.load(Relaxed),
        );
        set_counter(
            &self.cohort_dead_lettered_changes,
            stats.changes_dead_lettered.load(Relaxed),
        );
        let pending: u64 = cohorts.iter().map(|cohort| cohort.pending).sum();
        self.cohort_pending_changes
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        for cohort in cohorts {
            if let Some(last_sync_ms) = cohort.last_sync_ms {
                self.cohort_last_sync_age_seconds
                    .get_or_create(&vec![("cohort", cohort.cohort.to_string())])
                    .set(now_ms.saturating_sub(last_sync_ms).max(0) / 1000);
            }
        }
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Records one answer to `POST /currents`.
    pub fn record_ingest(&self, status: u16, elapsed: Duration) {
        self.ingest_requests
            .get_or_create(&vec![("status", status_label(status).to_owned())])
            .inc();
        if (200..300).contains(&status) {
            self.ingest_ack_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// Records why one answer to `POST /currents` was 503; `reason` is an
    /// `ingest::Unavailable` label.
    pub fn record_unavailable(&self, reason: &'static str) {
        self.ingest_unavailable_requests
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Records one `/import` call's final answer, duration and retries.
    pub fn record_import(&self, status: &str, elapsed: Duration, retries: u64) {
        self.mixpanel_responses
            .get_or_create(&vec![("status", status.to_owned())])
            .inc();
        self.mixpanel_import_duration.observe(elapsed.as_secs_f64());
        self.mixpanel_retries.inc_by(retries);
    }
}

/// Sets a counter to a total kept elsewhere (it only grows there).
fn set_counter(counter: &Counter, total: u64) {
    counter
        .inner()
        .store(total, std::sync::atomic::Ordering::Relaxed);
}

/// A closed set of status labels.
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        408 => "408",
        413 => "413",
        415 => "415",
        429 => "429",
        503 => "503",
        201..=299 => "2xx",
        402..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention_and_labels_are_closed() {
        let metrics = Metrics::new();
        metrics.record_ingest(200, Duration::from_millis(3));
        metrics.record_ingest(401, Duration::from_millis(1));
        metrics.record_ingest(503, Duration::from_millis(1));
        metrics.record_unavailable("spool_full");
        metrics.record_import("400", Duration::from_millis(80), 2);
        metrics
            .discarded_events
            .get_or_create(&vec![
                ("reason", "no_external_user_id".to_owned()),
                ("intentional", "true".to_owned()),
            ])
            .inc_by(3);
        let text = metrics.render();
        for line in text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("bridge_"), "{line}");
            assert!(
                name.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{line}"
            );
        }
        assert!(
            text.contains("bridge_ingest_requests_total{status=\"401\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bridge_ingest_unavailable_requests_total{reason=\"spool_full\"} 1"),
            "{text}"
        );
        assert!(text.contains("bridge_mixpanel_retries_total 2"), "{text}");
        assert!(text.contains("bridge_discarded_events_total{reason=\"no_external_user_id\",intentional=\"true\"} 3"), "{text}");
        assert!(
            text.contains("bridge_ingest_ack_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn each_project_shows_whether_it_is_paused() {
        use crate::delivery::ProjectStatus;

        let metrics = Metrics::new();
        let project = |name: &str, state: &'static str| ProjectStatus {
            name: name.to_owned(),
            state,
            paused_reason: (state == "paused").then(|| "refused".to_owned()),
        };
        metrics.refresh_delivery(
            &[project("default", "delivering"), project("eu", "paused")],
            2,
        );
        let text = metrics.render();
        for expected in [
            "bridge_delivery_project_paused{project=\"default\"} 0\n",
            "bridge_delivery_project_paused{project=\"eu\"} 1\n",
            "bridge_delivery_worker_restarts_total 2\n",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }

        // Resumed: the series stays, at 0.
        metrics.refresh_delivery(
            &[
                project("default", "delivering"),
                project("eu", "delivering"),
            ],
            2,
        );
        assert!(
            metrics
                .render()
                .contains("bridge_delivery_project_paused{project=\"eu\"} 0\n")
        );
    }
}
