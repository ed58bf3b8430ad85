//! The membership store: per (Mixpanel project, cohort), who is a member,
//! and the journal of changes Braze has not yet confirmed.
//!
//! # Contract
//!
//! 1. [`MembershipStore::apply_page`] records one page of membership and
//!    journals the changes it makes, atomically and durably, before it
//!    returns. Only then may the webhook answer Mixpanel `success`.
//! 2. Pages are idempotent: a page already recorded (same cohort, session,
//!    action and page number) changes nothing; the answer says it was a
//!    replay. So Mixpanel's retries, duplicates and restarts from page 1
//!    change nothing twice, in any order.
//! 3. A snapshot (`members`) adds members as its pages arrive, and removes
//!    the members absent from it only when it is complete: when all of its
//!    `total_pages` pages are recorded (webhook), or when
//!    [`MembershipStore::finish_snapshot`] is called (a pull, whose page
//!    count is known only at the end). A snapshot that never completes
//!    removes no one.
//! 4. The journal holds at most one change per (cohort, user): the latest.
//!    An add then a remove before Braze heard of either leaves the remove.
//!    [`MembershipStore::due_changes`] reads it oldest first;
//!    [`MembershipStore::confirm`] deletes a change only if it is still the
//!    one that was read (same `seq`), so a change made while an older one
//!    was in flight is sent after it: changes reach Braze at least once and
//!    in order per user.
//! 5. A change Braze refuses for good leaves the journal through
//!    [`MembershipStore::dead_letter`], in the same step that stores it as
//!    a dead letter with its reason.
//!
//! The embedded implementation is [`sqlite::SqliteStore`]; `nats::NatsStore`
//! (feature `nats`) keeps the same state in NATS JetStream key-value
//! buckets, shared by several processes. Both run one test suite
//! (`conformance`).

#[cfg(test)]
mod conformance;
#[cfg(feature = "nats")]
pub mod nats;
pub mod sqlite;

use std::future::Future;

use crate::braze::BrazeUser;
use crate::identity::UnmatchedReason;

/// A cohort: the Mixpanel project it belongs to and its id there, both as
/// text (Mixpanel sends either strings or numbers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CohortKey {
    /// `mixpanel_project_id`.
    pub project_id: String,
    /// `mixpanel_cohort_id`.
    pub cohort_id: String,
}

/// What a page says about its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// `members`: part of a full snapshot that replaces the membership.
    Snapshot,
    /// `add_members`: these users entered the cohort.
    Add,
    /// `remove_members`: these users left the cohort.
    Remove,
}

/// One page of cohort membership, its members already resolved to Braze
/// users (or to the reason they cannot be).
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipPage {
    /// The cohort.
    pub cohort: CohortKey,
    /// Its current name in Mixpanel.
    pub cohort_name: String,
    /// Snapshot, add or remove.
    pub kind: PageKind,
    /// `mixpanel_session_id`: one sync, possibly over many pages.
    pub session_id: String,
    /// The page number, from 1.
    pub page: u32,
    /// Pages in the session, when known (`None` for a pull, which ends with
    /// [`MembershipStore::finish_snapshot`]).
    pub total_pages: Option<u32>,
    /// The members.
    pub members: Vec<PageMember>,
}

/// A member of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMember {
    /// Mixpanel's `distinct_id` (empty when the member had none).
    pub distinct_id: String,
    /// The Braze user, or why there is none.
    pub identity: Result<BrazeUser, UnmatchedReason>,
}

/// What recording a page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// The page was recorded before; nothing changed.
    pub replayed: bool,
    /// The page belongs to a snapshot that a newer one replaced (or that
    /// completed); it was acknowledged and changed nothing.
    pub stale: bool,
    /// Members added (journaled as adds).
    pub added: u64,
    /// Members removed (journaled as removes), the completed snapshot's
    /// removals included.
    pub removed: u64,
    /// Members of the page without a usable id.
    pub unmatched: u64,
    /// This page completed a snapshot.
    pub snapshot_completed: bool,
}

/// A journaled change: add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeOp {
    /// The user entered the cohort.
    Add,
    /// The user left the cohort.
    Remove,
}

/// A change Braze has not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    /// The cohort.
    pub cohort: CohortKey,
    /// The cohort's current name.
    pub cohort_name: String,
    /// The user.
    pub user: BrazeUser,
    /// Add or remove.
    pub op: ChangeOp,
    /// The journal's sequence number: increases with every change.
    pub seq: i64,
    /// Sends tried and failed for a reason that may pass (an outage).
    pub attempts: u32,
    /// When the change was journaled, UNIX milliseconds.
    pub queued_at_ms: i64,
}

/// A change that will not be sent as it is, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedChange {
    /// The change.
    pub change: PendingChange,
    /// A closed snake_case reason: `refused_by_braze`, `braze_unavailable`,
    /// `unsupported_identity`.
    pub reason: &'static str,
    /// Braze's message, or what went wrong.
    pub detail: String,
}

/// One cohort's state, for `cohorts status` and `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortStatus {
    /// The cohort.
    pub cohort: CohortKey,
    /// Its name as last seen.
    pub name: String,
    /// Members now.
    pub members: u64,
    /// Changes not yet confirmed by Braze.
    pub pending: u64,
    /// Members without a usable id, as of the last page or snapshot.
    pub unmatched: u64,
    /// Dead letters kept for this cohort.
    pub dead_letters: u64,
    /// When Mixpanel's membership was last recorded (a page, or a finished
    /// pull), UNIX milliseconds.
    pub last_sync_ms: Option<i64>,
    /// When Braze last confirmed a change, UNIX milliseconds.
    pub last_confirmed_ms: Option<i64>,
    /// The last error syncing this cohort, cleared by the next success.
    pub last_error: Option<String>,
    /// The name last sent to Braze's partner API, if that writer is used.
    pub braze_name: Option<String>,
}

/// A member without a usable id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedMember {
    /// Mixpanel's `distinct_id`.
    pub distinct_id: String,
    /// Why it cannot be sent.
    pub reason: UnmatchedReason,
}

/// A dead letter, as `dlq --cohorts` shows it (the administration of
/// [`sqlite::SqliteStore`] and `nats::NatsStore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortDeadLetter {
    /// Its id.
    pub id: i64,
    /// When it was stored, UNIX milliseconds.
    pub at_ms: i64,
    /// The cohort.
    pub cohort: CohortKey,
    /// The cohort's name then.
    pub cohort_name: String,
    /// The user.
    pub user: BrazeUser,
    /// The change.
    pub op: ChangeOp,
    /// The closed reason.
    pub reason: String,
    /// Braze's message, or what went wrong.
    pub detail: String,
    /// Failed attempts before it was set aside.
    pub attempts: u32,
}

/// Which dead letters a `dlq --cohorts` command acts on; empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterSelection {
    /// Only these ids.
    pub ids: Vec<i64>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this Mixpanel cohort id.
    pub cohort_id: Option<String>,
    /// Stored at or after, UNIX milliseconds.
    pub since_ms: Option<i64>,
    /// Stored before, UNIX milliseconds.
    pub until_ms: Option<i64>,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage failed (disk error, I/O error, corruption, full disk).
    #[error("cohort store failed: {0}")]
    Storage(String),
    /// The store is closing.
    #[error("cohort store is shutting down")]
    Closed,
}

/// The durable state of cohort membership. See the module doc for the contract.
pub trait MembershipStore: Send + Sync + 'static {
    /// Records a page and journals its changes, durably.
    fn apply_page(
        &self,
        page: MembershipPage,
    ) -> impl Future<Output = Result<PageOutcome, StoreError>> + Send;

    /// Completes a snapshot whose page count was not known in advance:
    /// members not seen in session `session_id` are removed.
    fn finish_snapshot(
        &self,
        cohort: &CohortKey,
        session_id: &str,
    ) -> impl Future<Output = Result<PageOutcome, StoreError>> + Send;

    /// Up to `max` journaled changes, oldest first.
    fn due_changes(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<PendingChange>, StoreError>> + Send;

    /// Braze applied these changes: each leaves the journal unless a newer
    /// change for the same cohort and user replaced it meanwhile.
    fn confirm(
        &self,
        changes: &[PendingChange],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// These changes failed for a reason that may pass: count an attempt
    /// and hold them back until `retry_at_ms` (UNIX milliseconds), so that
    /// the changes behind them go first.
    fn defer(
        &self,
        changes: &[PendingChange],
        retry_at_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes or renews the right to drain the journal for `lease`, unless
    /// another `owner` holds it (or whoever holds it, with `take_over`: the
    /// service does at start, since a holder that died would otherwise
    /// block it until its lease ends): one writer at a time keeps changes
    /// in order per user. Returns whether `owner` holds it now.
    fn hold_writer_lease(
        &self,
        owner: &str,
        lease: std::time::Duration,
        take_over: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes or renews the right to run the scheduled pull for `lease`,
    /// unless another `owner` holds it; returns whether `owner` holds it
    /// now. Several processes pulling on one schedule take turns this way,
    /// so that each round runs once ([`crate::pull::pull_every`]). A store
    /// only one process uses may always answer yes.
    fn hold_pull_lease(
        &self,
        owner: &str,
        lease: std::time::Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// These changes will not be sent as they are: store them as dead
    /// letters and take them out of the journal, atomically.
    fn dead_letter(
        &self,
        refused: Vec<RefusedChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Notes the outcome of the last sync attempt of a cohort (`None`:
    /// success, clearing the last error).
    fn record_error(
        &self,
        cohort: &CohortKey,
        error: Option<String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Notes the name last sent to Braze for a cohort (partner API).
    fn record_braze_name(
        &self,
        cohort: &CohortKey,
        name: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every cohort's state.
    fn cohorts(&self) -> impl Future<Output = Result<Vec<CohortStatus>, StoreError>> + Send;

    /// Up to `max` members of a cohort without a usable id.
    fn unmatched(
        &self,
        cohort: &CohortKey,
        max: usize,
    ) -> impl Future<Output = Result<Vec<UnmatchedMember>, StoreError>> + Send;
}

impl PageKind {
    /// Mixpanel's name for it: `members`, `add_members`, `remove_members`.
    pub const fn as_action(self) -> &'static str {
        match self {
            PageKind::Snapshot => "members",
            PageKind::Add => "add_members",
            PageKind::Remove => "remove_members",
        }
    }
}

impl ChangeOp {
    /// `add` or `remove`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Add => "add",
            ChangeOp::Remove => "remove",
        }
    }
}

impl std::fmt::Display for CohortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.project_id, self.cohort_id)
    }
}
