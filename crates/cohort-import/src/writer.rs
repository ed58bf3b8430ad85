//! The writer: drains the store's journal of membership changes to Braze.
//!
//! Destinations ([`Destination`]):
//! - **attribute** (the default; any REST API key with `users.track`):
//!   membership is an array custom attribute (`mixpanel_cohorts` unless
//!   configured otherwise) whose values are Mixpanel cohort ids. Each user
//!   gets one `/users/track` object per request with every add and remove
//!   of that round merged, `_update_existing_only` so no user is created, 75
//!   objects per request. The value is the cohort's id, not its name:
//!   renaming a cohort in Mixpanel then changes nothing in Braze, so a
//!   segment built on the value keeps working and no member can end up
//!   under both an old and a new name.
//! - **partner**: Braze's partner cohort API, for holders of a partner key:
//!   the cohort's name is sent first (again whenever it changes; that is
//!   how the partner API renames), then the changes in requests of at most
//!   1000 ids, adds and removes together. External ids only.
//! - **dry run**: the `/users/track` requests the attribute writer would
//!   send are appended to an NDJSON file, and the changes count as sent.
//!
//! Guarantees: a change leaves the journal only after Braze answered for
//! it ([`MembershipStore::confirm`]), so a crash between Braze's answer and
//! the journal's update sends it again (at least once). The journal keeps
//! one change per user and cohort and a round finishes before the next one
//! reads, so changes reach Braze in order per user.
//!
//! Failures: an object Braze refuses is dead-lettered with Braze's message
//! (`refused_by_braze`). A request refused as a whole (a 400) is split in
//! halves until the refused object is alone. 429, 5xx and timeouts are
//! retried inside the client; when they persist, the round's changes count
//! an attempt and the writer backs off (up to a minute). A change that has
//! failed `max_attempts` times and is older than `max_age` is dead-lettered
//! (`braze_unavailable`), so no retry goes on for ever. Refused credentials
//! pause the writer: nothing is dead-lettered, one probe a minute.
//!
//! One writer at a time: a round runs only while its writer holds the
//! store's writer lease ([`MembershipStore::hold_writer_lease`], for
//! [`WriterConfig::lease`]), which it renews at the start of each round and
//! every quarter lease while the round sends. A writer that finds its lease
//! taken, or cannot renew it for half a lease (the store unreachable),
//! stops sending and leaves the round's changes journaled, well before
//! another writer can take the lease over, so that two writers never send
//! at once and changes stay in order per user. [`Writer::run`] gives the
//! lease back when it stops. With [`WriterConfig::take_over_at_start`] (the
//! default, for a service that is the journal's only long-running writer)
//! it takes the lease at start from whoever holds it; replicas sharing one
//! store turn that off ([`WriterConfig::shared`]), so that a replica
//! starting does not steal a live one's lease: it waits until the holder
//! stops, or dies and its lease expires.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::braze::{
    AttributeUpdate, BrazeClient, BrazeError, BrazeUser, MAX_PARTNER_IDS, MAX_TRACK_OBJECTS,
    PartnerCohort, PartnerCredentials,
};
use crate::clock::now_ms;
use crate::stats::{CohortStats, RequestOutcome};
use crate::store::{
    ChangeOp, CohortKey, MembershipStore, PendingChange, RefusedChange, StoreError,
};

/// Failed attempts after which a change is sent in a request of its own.
const ISOLATE_AFTER_ATTEMPTS: u32 = 2;

/// How long a writer's hold on the journal lasts by default.
const WRITER_LEASE: Duration = Duration::from_secs(120);

/// The shortest lease a writer takes (a shorter one is raised to it).
const MIN_LEASE: Duration = Duration::from_millis(100);

/// The default attribute name.
pub const DEFAULT_ATTRIBUTE: &str = "mixpanel_cohorts";

/// Where membership changes go.
pub enum Destination {
    /// An array custom attribute through `/users/track`.
    Attribute {
        /// The client.
        client: BrazeClient,
        /// The attribute's name.
        attribute: String,
    },
    /// Braze's partner cohort API.
    Partner {
        /// The client (its base URL is the customer's REST endpoint).
        client: BrazeClient,
        /// The partner's name and keys.
        credentials: PartnerCredentials,
    },
    /// NDJSON lines of the requests that would be sent: `/users/track`
    /// bodies, or the partner API's (without its keys).
    DryRun {
        /// Where the lines go (a file, stdout).
        file: Mutex<Box<dyn std::io::Write + Send>>,
        /// The attribute's name.
        attribute: String,
        /// The partner's name, when the partner writer is dry-run.
        partner_name: Option<String>,
    },
}

/// How the writer works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Changes read from the journal per round.
    pub changes_per_round: usize,
    /// Requests to Braze in flight at once.
    pub max_concurrent_requests: usize,
    /// Failed attempts (an outage) after which a change old enough is
    /// dead-lettered.
    pub max_attempts: u32,
    /// The age after which a change that keeps failing is dead-lettered.
    pub max_age: Duration,
    /// The longest wait between rounds after a failure.
    pub max_backoff: Duration,
    /// How often an idle writer looks at the journal (it is also woken
    /// when a page journals changes).
    pub idle_poll: Duration,
    /// How long refused credentials pause the writer before it probes.
    pub auth_pause: Duration,
    /// How long the writer's hold on the journal lasts without renewal
    /// (at least 100 ms): after a writer dies, another one starts sending
    /// this long after its last renewal. Writers sharing a store should use
    /// the same, well above the clock skew between their machines.
    pub lease: Duration,
    /// Whether [`Writer::run`] takes the lease at start from whoever holds
    /// it (a `cohorts sync` that died would otherwise block it until its
    /// lease ends). Right for the one service of a store; replicas sharing
    /// a store must not, or a replica that starts would steal a live
    /// writer's lease.
    pub take_over_at_start: bool,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// Changes read from the journal.
    pub read: usize,
    /// Changes Braze confirmed.
    pub confirmed: usize,
    /// Changes set aside as dead letters.
    pub dead_lettered: usize,
    /// Changes left for a later round after a failure that may pass.
    pub deferred: usize,
    /// Requests sent.
    pub requests: usize,
}

/// Why a round stopped short.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriterError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Braze refused the credentials; nothing was dead-lettered.
    #[error("Braze refused the credentials: {0}")]
    Auth(BrazeError),
    /// Braze refused the requests as a whole for a reason no object is to
    /// blame for (404, 405, 415: a wrong URL or partner name); nothing was
    /// dead-lettered.
    #[error(
        "Braze refused the endpoint: {0}; check braze.api_url, the instance and braze.partner_name"
    )]
    Endpoint(BrazeError),
    /// Another writer (another process) drains this journal now.
    #[error(
        "another writer (the running serve, or another sync) is sending this journal's changes; they are sent by it"
    )]
    LeaseHeld,
    /// Braze stayed unavailable; the changes stay in the journal.
    #[error("Braze is unavailable: {0}")]
    Unavailable(BrazeError),
    /// The dry-run file cannot be written.
    #[error("cannot write the dry-run file: {0}")]
    DryRun(std::io::Error),
}

/// Drains a store's journal to a destination.
pub struct Writer<S> {
    store: Arc<S>,
    destination: Destination,
    config: WriterConfig,
    stats: Arc<CohortStats>,
    changed: Arc<tokio::sync::Notify>,
    /// Cohort names already sent to the partner API by this process.
    partner_names: Mutex<HashMap<CohortKey, String>>,
    /// Who this writer is, for the journal's lease.
    owner: String,
    /// The last error recorded on each cohort (`None`: none), so that the
    /// store is written only when it changes.
    recorded_errors: tokio::sync::Mutex<HashMap<CohortKey, Option<String>>>,
}

/// What became of one group of changes.
enum Settled {
    Confirmed(Vec<PendingChange>),
    Refused(Vec<RefusedChange>),
    Deferred(Vec<PendingChange>, BrazeError),
    /// Nothing can pass until an operator fixes the set-up.
    Paused(Vec<PendingChange>, WriterError),
}

impl Default for WriterConfig {
    fn default() -> WriterConfig {
        WriterConfig {
            changes_per_round: 30_000,
            max_concurrent_requests: 96,
            max_attempts: 20,
            max_age: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(60),
            idle_poll: Duration::from_secs(1),
            auth_pause: Duration::from_secs(60),
            lease: WRITER_LEASE,
            take_over_at_start: true,
        }
    }
}

impl WriterConfig {
    /// The defaults for one of several writers sharing a store (replicas of
    /// a service on one NATS): the lease is never taken over, only taken
    /// when free or expired.
    pub fn shared() -> WriterConfig {
        WriterConfig {
            take_over_at_start: false,
            ..WriterConfig::default()
        }
    }

    /// [`WriterConfig::lease`], at least 100 ms.
    fn lease(&self) -> Duration {
        self.lease.max(MIN_LEASE)
    }
}

impl Destination {
    /// `/users/track` to `attribute`.
    pub fn attribute(client: BrazeClient, attribute: &str) -> Destination {
        Destination::Attribute {
            client,
            attribute: attribute.to_owned(),
        }
    }

    /// The partner cohort API.
    pub fn partner(client: BrazeClient, credentials: PartnerCredentials) -> Destination {
        Destination::Partner {
            client,
            credentials,
        }
    }

    /// Appends the `/users/track` requests to the NDJSON file at `path`
    /// (created if needed, readable by its owner only).
    pub fn dry_run(path: &Path, attribute: &str) -> std::io::Result<Destination> {
        Ok(Destination::dry_run_to(open_dry_run_file(path)?, attribute))
    }

    /// Appends the partner API's requests (without its keys) to the NDJSON
    /// file at `path`.
    pub fn dry_run_partner(path: &Path, partner_name: &str) -> std::io::Result<Destination> {
        Ok(Destination::dry_run_partner_to(
            open_dry_run_file(path)?,
            partner_name,
        ))
    }

    /// Writes the requests as NDJSON lines to `output` (stdout, say).
    pub fn dry_run_to(output: Box<dyn std::io::Write + Send>, attribute: &str) -> Destination {
        Destination::DryRun {
            file: Mutex::new(output),
            attribute: attribute.to_owned(),
            partner_name: None,
        }
    }

    /// Writes the partner API's requests (without its keys) as NDJSON
    /// lines to `output`.
    pub fn dry_run_partner_to(
        output: Box<dyn std::io::Write + Send>,
        partner_name: &str,
    ) -> Destination {
        Destination::DryRun {
            file: Mutex::new(output),
            attribute: DEFAULT_ATTRIBUTE.to_owned(),
            partner_name: Some(partner_name.to_owned()),
        }
    }

    /// `attribute`, `partner` or `dry_run`.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Attribute { .. } => "attribute",
            Destination::Partner { .. } => "partner",
            Destination::DryRun { .. } => "dry_run",
        }
    }
}

impl<S: MembershipStore> Writer<S> {
    /// A writer from `store` to `destination`.
    pub fn new(store: Arc<S>, destination: Destination, config: WriterConfig) -> Writer<S> {
        Writer {
            store,
            destination,
            config,
            stats: Arc::new(CohortStats::default()),
            changed: Arc::new(tokio::sync::Notify::new()),
            partner_names: Mutex::new(HashMap::new()),
            owner: format!("pid-{}-{:016x}", std::process::id(), rand::random::<u64>()),
            recorded_errors: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Notes each cohort's last error (or its recovery) in the store, when
    /// it changed, for `cohorts status`.
    async fn record_cohort_errors(&self, errors: HashMap<CohortKey, Option<String>>) {
        let mut recorded = self.recorded_errors.lock().await;
        for (cohort, error) in errors {
            if recorded.get(&cohort) == Some(&error) {
                continue;
            }
            let error_text = error.as_ref().map(|error| format!("Braze: {error}"));
            match self.store.record_error(&cohort, error_text).await {
                Ok(()) => {
                    recorded.insert(cohort, error);
                }
                Err(error) => {
                    tracing::warn!(error = %error, "Cannot note a cohort's last error.");
                }
            }
        }
    }

    /// Counts into `stats`.
    pub fn with_stats(mut self, stats: Arc<CohortStats>) -> Writer<S> {
        self.stats = stats;
        self
    }

    /// Wakes on `changed` (give the same to the webhook receiver).
    pub fn with_notify(mut self, changed: Arc<tokio::sync::Notify>) -> Writer<S> {
        self.changed = changed;
        self
    }

    /// The destination's kind: `attribute`, `partner` or `dry_run`.
    pub fn destination_kind(&self) -> &'static str {
        self.destination.kind()
    }

    /// Runs rounds until the journal is empty, a round fails, or nothing
    /// more can be done now; returns the sum of the rounds.
    pub async fn drain_once(&self) -> Result<RoundReport, WriterError> {
        let drained = self.drain_rounds().await;
        // Let a running service take over at once, not when the lease ends.
        if !matches!(drained, Err(WriterError::LeaseHeld)) {
            let _ = self
                .store
                .hold_writer_lease(&self.owner, Duration::ZERO, false)
                .await;
        }
        drained
    }

    async fn drain_rounds(&self) -> Result<RoundReport, WriterError> {
        let mut total = RoundReport::default();
        loop {
            let round = self.round().await?;
            let is_done = round.read < self.config.changes_per_round
                || round.confirmed + round.dead_lettered == 0;
            total.read += round.read;
            total.confirmed += round.confirmed;
            total.dead_lettered += round.dead_lettered;
            total.deferred += round.deferred;
            total.requests += round.requests;
            if is_done {
                return Ok(total);
            }
        }
    }

    /// Drains the journal until `stop` turns true, waiting for changes when
    /// it is empty and backing off after failures.
    /// Gives the lease back when it stops, so that another writer takes
    /// over at once.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        // The service is the journal's main writer: a holder that died (a
        // crashed sync, a killed service) must not block it until its
        // lease ends; a live sync notices at its next renewal and stops.
        // Replicas sharing the store do not (`take_over_at_start`).
        if self.config.take_over_at_start
            && let Err(error) = self
                .store
                .hold_writer_lease(&self.owner, self.config.lease(), true)
                .await
        {
            tracing::warn!(error = %error, "Cannot take the cohort journal's lease.");
        }
        let mut failures: u32 = 0;
        let mut auth_failing = false;
        let mut lease_elsewhere = false;
        while !*stop.borrow() {
            let round = self.round().await;
            if lease_elsewhere && round.is_ok() {
                lease_elsewhere = false;
                tracing::info!("This writer holds the cohort journal now; it sends the changes.");
            }
            let wait = match round {
                Ok(report) if report.read == 0 => {
                    failures = 0;
                    self.config.idle_poll
                }
                Ok(report) if report.deferred > 0 && report.confirmed == 0 => {
                    failures += 1;
                    backoff(failures, self.config.max_backoff)
                }
                Ok(_) => {
                    failures = 0;
                    if auth_failing {
                        auth_failing = false;
                        tracing::info!("Braze accepts the credentials again; cohort changes flow.");
                    }
                    continue;
                }
                Err(error @ (WriterError::Auth(_) | WriterError::Endpoint(_))) => {
                    if !auth_failing {
                        tracing::error!(error = %error, "Braze refuses every request; cohort changes wait in the journal. Fix the set-up; the writer retries once a minute.");
                        auth_failing = true;
                    }
                    self.config.auth_pause
                }
                Err(WriterError::LeaseHeld) => {
                    if !lease_elsewhere {
                        tracing::info!(
                            "Another writer holds the cohort journal (another replica, or a cohorts sync); waiting for it to stop or its lease to expire."
                        );
                        lease_elsewhere = true;
                    }
                    self.config.idle_poll
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(error = %error, failures, "Cannot write cohort changes to Braze now; retrying.");
                    }
                    backoff(failures, self.config.max_backoff)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.changed.notified(), if failures == 0 && !auth_failing => {}
                _ = stop.changed() => {}
            }
        }
        // Another writer (a replica) may go on at once rather than when
        // the lease ends.
        if let Err(error) = self
            .store
            .hold_writer_lease(&self.owner, Duration::ZERO, false)
            .await
        {
            tracing::warn!(error = %error, "Cannot give the cohort journal's lease back; it expires by itself.");
        }
    }

    /// One round: reads up to `changes_per_round` changes and settles each.
    pub async fn round(&self) -> Result<RoundReport, WriterError> {
        let held_at = tokio::time::Instant::now();
        if !self
            .store
            .hold_writer_lease(&self.owner, self.config.lease(), false)
            .await?
        {
            return Err(WriterError::LeaseHeld);
        }
        let changes = self
            .store
            .due_changes(self.config.changes_per_round)
            .await?;
        let mut report = RoundReport {
            read: changes.len(),
            ..RoundReport::default()
        };
        if changes.is_empty() {
            return Ok(report);
        }
        let send = async {
            Ok(match &self.destination {
                Destination::Attribute { client, attribute } => {
                    self.send_attributes(client, attribute, changes, &mut report)
                        .await
                }
                Destination::Partner {
                    client,
                    credentials,
                } => {
                    self.send_partner(client, credentials, changes, &mut report)
                        .await
                }
                Destination::DryRun {
                    file,
                    attribute,
                    partner_name,
                } => {
                    let text = match partner_name {
                        Some(partner_name) => {
                            dry_run_partner_lines(partner_name, &changes, &mut report)
                        }
                        None => dry_run_track_lines(attribute, &changes, &mut report)?,
                    };
                    let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                    file.write_all(&text).map_err(WriterError::DryRun)?;
                    file.flush().map_err(WriterError::DryRun)?;
                    vec![Settled::Confirmed(changes)]
                }
            })
        };
        let settled = self.holding_lease(held_at, send).await?;
        self.settle(settled, &mut report).await
    }

    /// Runs `send` while renewing the lease (last renewed when asked at
    /// `held_at`) every quarter lease. Stops it (its changes stay
    /// journaled, to be sent again) when another writer took the lease
    /// ([`WriterError::LeaseHeld`]), or when the lease could not be renewed
    /// for half a lease: another writer may take it over once it expires,
    /// and must find this one silent by then.
    async fn holding_lease<T>(
        &self,
        held_at: tokio::time::Instant,
        send: impl std::future::Future<Output = Result<T, WriterError>>,
    ) -> Result<T, WriterError> {
        let lease = self.config.lease();
        let keep = async {
            let mut renewed_at = held_at;
            loop {
                tokio::time::sleep(lease / 4).await;
                let asked_at = tokio::time::Instant::now();
                let give_up_at = renewed_at + lease / 2;
                let renewal = tokio::time::timeout_at(
                    give_up_at,
                    self.store.hold_writer_lease(&self.owner, lease, false),
                )
                .await;
                match renewal {
                    Ok(Ok(true)) => renewed_at = asked_at,
                    Ok(Ok(false)) => {
                        tracing::warn!(
                            "Another writer took the cohort journal's lease during a round; this one stops sending, the round's changes stay journaled."
                        );
                        return WriterError::LeaseHeld;
                    }
                    Ok(Err(error)) if tokio::time::Instant::now() < give_up_at => {
                        tracing::warn!(error = %error, "Cannot renew the cohort journal's lease; trying again.");
                    }
                    Ok(Err(error)) => return WriterError::Store(error),
                    Err(_) => {
                        return WriterError::Store(StoreError::Storage(format!(
                            "the writer lease could not be renewed for {:?}; this writer stops sending",
                            lease / 2
                        )));
                    }
                }
            }
        };
        tokio::select! {
            biased;
            sent = send => sent,
            error = keep => Err(error),
        }
    }

    /// Records each group's fate in the store.
    async fn settle(
        &self,
        settled: Vec<Settled>,
        report: &mut RoundReport,
    ) -> Result<RoundReport, WriterError> {
        let mut confirmed = Vec::new();
        let mut refused = Vec::new();
        let mut deferred = Vec::new();
        let mut paused = None;
        let mut last_error = None;
        // Each cohort's last error this round (None: it made progress).
        let mut cohort_errors: HashMap<CohortKey, Option<String>> = HashMap::new();
        for group in settled {
            match group {
                Settled::Confirmed(changes) => {
                    for change in &changes {
                        cohort_errors.entry(change.cohort.clone()).or_insert(None);
                    }
                    confirmed.extend(changes);
                }
                Settled::Refused(changes) => refused.extend(changes),
                Settled::Deferred(changes, error) => {
                    for change in &changes {
                        cohort_errors.insert(change.cohort.clone(), Some(error.to_string()));
                    }
                    deferred.extend(changes);
                    last_error = Some(error);
                }
                Settled::Paused(changes, error) => {
                    for change in &changes {
                        cohort_errors.insert(change.cohort.clone(), Some(error.to_string()));
                    }
                    paused = Some(error);
                }
            }
        }
        // Changes failing for too long leave the journal as dead letters.
        let now = now_ms();
        let max_age_ms = i64::try_from(self.config.max_age.as_millis()).unwrap_or(i64::MAX);
        let (expired, retry): (Vec<_>, Vec<_>) = deferred.into_iter().partition(|change| {
            change.attempts + 1 >= self.config.max_attempts
                && now.saturating_sub(change.queued_at_ms) >= max_age_ms
        });
        let detail = last_error
            .as_ref()
            .map_or_else(String::new, ToString::to_string);
        refused.extend(expired.into_iter().map(|change| RefusedChange {
            change,
            reason: "braze_unavailable",
            detail: detail.clone(),
        }));
        if !confirmed.is_empty() {
            self.store.confirm(&confirmed).await?;
        }
        if let Some(first) = refused.first() {
            // One line a round, not one per change.
            tracing::warn!(
                n_changes = refused.len(),
                cohort = %first.change.cohort,
                reason = first.reason,
                detail = %first.detail,
                "Cohort changes were dead-lettered (the first one's reason shown); see dlq --cohorts list."
            );
            report.dead_lettered = refused.len();
            self.store.dead_letter(refused).await?;
        }
        // Each deferred change waits its own backoff, so the changes behind
        // it are not held up; the retry hint Braze gave is the least wait.
        let hint = last_error.as_ref().and_then(BrazeError::retry_after);
        for change in &retry {
            let wait =
                backoff(change.attempts + 1, self.config.max_backoff).max(hint.unwrap_or_default());
            let retry_at = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            self.store
                .defer(std::slice::from_ref(change), retry_at)
                .await?;
        }
        self.record_cohort_errors(cohort_errors).await;
        report.confirmed = confirmed.len();
        report.deferred = retry.len();
        use std::sync::atomic::Ordering::Relaxed;
        self.stats
            .changes_confirmed
            .fetch_add(report.confirmed as u64, Relaxed);
        self.stats
            .changes_dead_lettered
            .fetch_add(report.dead_lettered as u64, Relaxed);
        if let Some(error) = paused {
            return Err(error);
        }
        if report.deferred > 0
            && report.confirmed == 0
            && let Some(error) = last_error
        {
            return Err(WriterError::Unavailable(error));
        }
        Ok(report.clone())
    }

    /// Sends changes as `/users/track` attribute objects.
    async fn send_attributes(
        &self,
        client: &BrazeClient,
        attribute: &str,
        changes: Vec<PendingChange>,
        report: &mut RoundReport,
    ) -> Vec<Settled> {
        let objects = merge_by_user(attribute, changes);
        // Objects that already failed twice go alone, so that one that
        // makes Braze fail cannot hold the others back.
        let (suspects, objects): (Vec<_>, Vec<_>) = objects.into_iter().partition(|object| {
            object
                .changes
                .iter()
                .any(|change| change.attempts >= ISOLATE_AFTER_ATTEMPTS)
        });
        let mut requests: Vec<Vec<UserObject>> = chunk(objects, MAX_TRACK_OBJECTS);
        requests.extend(suspects.into_iter().map(|object| vec![object]));
        report.requests += requests.len();
        futures_util::stream::iter(requests)
            .map(|request| self.send_track(client, request))
            .buffer_unordered(self.config.max_concurrent_requests.max(1))
            .collect::<Vec<Vec<Settled>>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One `/users/track` request; a whole-request refusal is split in
    /// halves until the refused object stands alone.
    async fn send_track(&self, client: &BrazeClient, objects: Vec<UserObject>) -> Vec<Settled> {
        let mut settled = Vec::new();
        let mut queue = vec![objects];
        while let Some(objects) = queue.pop() {
            let updates: Vec<AttributeUpdate> =
                objects.iter().map(|object| object.update.clone()).collect();
            match client.track_attributes(&updates).await {
                Ok(outcome) => {
                    let outcome_kind = if outcome.refused.is_empty() {
                        RequestOutcome::Success
                    } else {
                        RequestOutcome::PartlyRefused
                    };
                    self.stats.count_request(outcome_kind);
                    let mut refused_idx: HashMap<usize, String> = outcome
                        .refused
                        .into_iter()
                        .map(|refused| (refused.index, refused.message))
                        .collect();
                    let mut confirmed = Vec::new();
                    let mut refused = Vec::new();
                    for (object_idx, object) in objects.into_iter().enumerate() {
                        match refused_idx.remove(&object_idx) {
                            Some(message) => {
                                refused.extend(object.changes.into_iter().map(|change| {
                                    RefusedChange {
                                        change,
                                        reason: "refused_by_braze",
                                        detail: message.clone(),
                                    }
                                }));
                            }
                            None => confirmed.extend(object.changes),
                        }
                    }
                    settled.push(Settled::Confirmed(confirmed));
                    settled.push(Settled::Refused(refused));
                }
                Err(error @ BrazeError::Rejected { status, .. })
                    if objects.len() > 1 && blames_the_objects(status) =>
                {
                    self.stats.count_request(RequestOutcome::Rejected);
                    tracing::debug!(error = %error, objects = objects.len(), "Braze refused a request as a whole; splitting it.");
                    let mut objects = objects;
                    let second = objects.split_off(objects.len() / 2);
                    queue.push(second);
                    queue.push(objects);
                }
                Err(error) => {
                    let changes: Vec<PendingChange> = objects
                        .into_iter()
                        .flat_map(|object| object.changes)
                        .collect();
                    settled.push(self.failed(error, changes));
                }
            }
        }
        settled
    }

    /// What a failed request's changes come to.
    fn failed(&self, error: BrazeError, changes: Vec<PendingChange>) -> Settled {
        if error.is_auth() {
            self.stats.count_request(RequestOutcome::Unauthorized);
            return Settled::Paused(changes, WriterError::Auth(error));
        }
        if let BrazeError::Rejected { status, .. } = &error
            && !blames_the_objects(*status)
        {
            self.stats.count_request(RequestOutcome::Rejected);
            return Settled::Paused(changes, WriterError::Endpoint(error));
        }
        if matches!(error, BrazeError::Rejected { .. } | BrazeError::Config(_)) {
            self.stats.count_request(RequestOutcome::Rejected);
            let detail = error.to_string();
            return Settled::Refused(
                changes
                    .into_iter()
                    .map(|change| RefusedChange {
                        change,
                        reason: "refused_by_braze",
                        detail: detail.clone(),
                    })
                    .collect(),
            );
        }
        self.stats.count_request(RequestOutcome::Unavailable);
        Settled::Deferred(changes, error)
    }

    /// Sends changes through the partner cohort API, cohort by cohort.
    async fn send_partner(
        &self,
        client: &BrazeClient,
        credentials: &PartnerCredentials,
        changes: Vec<PendingChange>,
        report: &mut RoundReport,
    ) -> Vec<Settled> {
        let mut settled = Vec::new();
        let mut by_cohort: Vec<(CohortKey, Vec<PendingChange>)> = Vec::new();
        for change in changes {
            if let BrazeUser::Email(_) = change.user {
                settled.push(Settled::Refused(vec![RefusedChange {
                    change,
                    reason: "unsupported_identity",
                    detail: "the partner cohort API takes external ids only".to_owned(),
                }]));
                continue;
            }
            match by_cohort
                .iter_mut()
                .find(|(cohort, _)| *cohort == change.cohort)
            {
                Some((_, group)) => group.push(change),
                None => by_cohort.push((change.cohort.clone(), vec![change])),
            }
        }
        for (cohort, group) in by_cohort {
            let name = group[0].cohort_name.clone();
            if let Err(error) = self
                .ensure_partner_name(client, credentials, &cohort, &name)
                .await
            {
                report.requests += 1;
                settled.push(self.failed(error, group));
                continue;
            }
            for request in chunk(group, MAX_PARTNER_IDS) {
                report.requests += 1;
                let (adds, removes) = partner_ids(&request);
                match client
                    .partner_cohort_changes(credentials, &cohort.cohort_id, &adds, &removes)
                    .await
                {
                    Ok(()) => {
                        self.stats.count_request(RequestOutcome::Success);
                        settled.push(Settled::Confirmed(request));
                    }
                    Err(error) => settled.push(self.failed(error, request)),
                }
            }
        }
        settled
    }

    /// Sends the cohort's name unless this process already sent this name.
    async fn ensure_partner_name(
        &self,
        client: &BrazeClient,
        credentials: &PartnerCredentials,
        cohort: &CohortKey,
        name: &str,
    ) -> Result<(), BrazeError> {
        let is_known = self
            .partner_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(cohort)
            .is_some_and(|sent| sent == name);
        if is_known {
            return Ok(());
        }
        let shown_name = if name.is_empty() {
            format!("Mixpanel cohort {}", cohort.cohort_id)
        } else {
            name.to_owned()
        };
        client
            .partner_upsert_cohort(
                credentials,
                &PartnerCohort {
                    cohort_id: cohort.cohort_id.clone(),
                    name: shown_name,
                    created_at: rfc3339_utc(now_ms() / 1000),
                },
            )
            .await?;
        self.stats.count_request(RequestOutcome::Success);
        if let Err(error) = self.store.record_braze_name(cohort, name).await {
            tracing::warn!(error = %error, "Cannot note the cohort name sent to Braze.");
        }
        self.partner_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cohort.clone(), name.to_owned());
        Ok(())
    }
}

/// Whether a whole-request refusal with this status may be the fault of
/// one of its objects (then the request is split to find it): 400, 413 and
/// 422 say something about the body; other 4xx (404, 405, 415, …) say the
/// endpoint is wrong for every object alike.
fn blames_the_objects(status: u16) -> bool {
    matches!(status, 400 | 413 | 422)
}

/// One user's attribute object and the changes it carries.
struct UserObject {
    update: AttributeUpdate,
    changes: Vec<PendingChange>,
}

/// Merges changes into one object per user, in order of first appearance.
fn merge_by_user(attribute: &str, changes: Vec<PendingChange>) -> Vec<UserObject> {
    let mut index: HashMap<BrazeUser, usize> = HashMap::new();
    let mut objects: Vec<UserObject> = Vec::new();
    for change in changes {
        let object_idx = *index.entry(change.user.clone()).or_insert_with(|| {
            objects.push(UserObject {
                update: AttributeUpdate {
                    user: change.user.clone(),
                    attribute: attribute.to_owned(),
                    add: Vec::new(),
                    remove: Vec::new(),
                },
                changes: Vec::new(),
            });
            objects.len() - 1
        });
        let object = &mut objects[object_idx];
        let value = change.cohort.cohort_id.clone();
        match change.op {
            ChangeOp::Add => object.update.add.push(value),
            ChangeOp::Remove => object.update.remove.push(value),
        }
        object.changes.push(change);
    }
    objects
}

/// The external ids to add and to remove.
fn partner_ids(changes: &[PendingChange]) -> (Vec<String>, Vec<String>) {
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for change in changes {
        if let BrazeUser::ExternalId(id) = &change.user {
            match change.op {
                ChangeOp::Add => adds.push(id.clone()),
                ChangeOp::Remove => removes.push(id.clone()),
            }
        }
    }
    (adds, removes)
}

/// Splits `items` into chunks of at most `size`, in order.
fn chunk<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::with_capacity(items.len().div_ceil(size.max(1)));
    let mut current = Vec::with_capacity(size.min(items.len()));
    for item in items {
        current.push(item);
        if current.len() == size {
            chunks.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Opens (creating it and its directory if needed) a dry-run file for
/// appending, readable by its owner only.
fn open_dry_run_file(path: &Path) -> std::io::Result<Box<dyn std::io::Write + Send>> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    Ok(Box::new(options.open(path)?))
}

/// The `/users/track` requests for `changes`, as NDJSON lines.
fn dry_run_track_lines(
    attribute: &str,
    changes: &[PendingChange],
    report: &mut RoundReport,
) -> Result<Vec<u8>, WriterError> {
    let objects = merge_by_user(attribute, changes.to_vec());
    let mut text = Vec::new();
    for request in chunk(objects, MAX_TRACK_OBJECTS) {
        let updates: Vec<AttributeUpdate> =
            request.into_iter().map(|object| object.update).collect();
        let body = crate::braze::track_body(&updates)
            .map_err(|error| WriterError::DryRun(std::io::Error::other(error.to_string())))?;
        text.extend_from_slice(b"{\"endpoint\":\"/users/track\",\"body\":");
        text.extend_from_slice(&body);
        text.extend_from_slice(b"}\n");
        report.requests += 1;
    }
    Ok(text)
}

/// The partner API's change requests for `changes`, as NDJSON lines, with
/// the keys left out.
fn dry_run_partner_lines(
    partner_name: &str,
    changes: &[PendingChange],
    report: &mut RoundReport,
) -> Vec<u8> {
    let mut by_cohort: Vec<(&CohortKey, Vec<PendingChange>)> = Vec::new();
    for change in changes {
        match by_cohort
            .iter_mut()
            .find(|(cohort, _)| **cohort == change.cohort)
        {
            Some((_, group)) => group.push(change.clone()),
            None => by_cohort.push((&change.cohort, vec![change.clone()])),
        }
    }
    let mut text = Vec::new();
    for (cohort, group) in by_cohort {
        for request in chunk(group, MAX_PARTNER_IDS) {
            let (adds, removes) = partner_ids(&request);
            let line = serde_json::json!({
                "endpoint": format!("/partners/{partner_name}/cohorts/users"),
                "body": {
                    "cohort_id": cohort.cohort_id,
                    "cohort_changes": [
                        {"user_ids": adds},
                        {"user_ids": removes, "should_remove": true},
                    ],
                },
            });
            text.extend_from_slice(line.to_string().as_bytes());
            text.push(b'\n');
            report.requests += 1;
        }
    }
    text
}

/// Full-jitter-free capped doubling from 1 s; the client already jitters.
fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(max)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for UNIX seconds (the partner API's `created_at`).
fn rfc3339_utc(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests;
