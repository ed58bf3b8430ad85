//! The NATS store's keys and values: what each bucket holds, as JSON.
//!
//! Keys are made of tokens that NATS accepts whatever the text they stand
//! for: a cohort, a user, a `distinct_id` or a page is the first 128 bits
//! of the SHA-256 of its parts, in hex; the values carry the text itself.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::braze::BrazeUser;
use crate::store::{ChangeOp, CohortKey, MembershipPage, PageKind, PageOutcome, StoreError};

/// How long a page is remembered (its record's bucket's `max_age`), and
/// a finished snapshot's record with it.
pub(super) const PAGE_MEMORY_MS: i64 = 7 * 24 * 3600 * 1000;

/// The writer lease's key in the cohorts bucket.
pub(super) const LEASE_KEY: &str = "writer-lease";

/// The scheduled pull's lease's key in the cohorts bucket.
pub(super) const PULL_LEASE_KEY: &str = "pull-lease";

/// A key token for these parts: 32 hex digits.
fn token(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The cohort's token.
pub(super) fn cohort_token(cohort: &CohortKey) -> String {
    token(&["cohort", &cohort.project_id, &cohort.cohort_id])
}

fn user_token(user: &UserRec) -> String {
    token(&[
        "user",
        if user.k == 1 { "email" } else { "external_id" },
        &user.id,
    ])
}

fn distinct_token(distinct_id: &str) -> String {
    token(&["distinct_id", distinct_id])
}

/// `meta.<cohort>` (cohorts bucket): the cohort's state, written under its lock.
pub(super) fn meta_key(cohort: &str) -> String {
    format!("meta.{cohort}")
}

/// `lock.<cohort>` (cohorts bucket).
pub(super) fn lock_key(cohort: &str) -> String {
    format!("lock.{cohort}")
}

/// `status.<cohort>` (cohorts bucket): what the writer notes.
pub(super) fn status_key(cohort: &str) -> String {
    format!("status.{cohort}")
}

/// `m.<cohort>.<user>` (members bucket).
pub(super) fn member_key(cohort: &str, user: &UserRec) -> String {
    format!("m.{cohort}.{}", user_token(user))
}

/// `d.<cohort>.<distinct_id>` (members bucket): which user a `distinct_id` was.
pub(super) fn index_key(cohort: &str, distinct_id: &str) -> String {
    format!("d.{cohort}.{}", distinct_token(distinct_id))
}

/// `u.<cohort>.<distinct_id>` (members bucket): an unmatched member.
pub(super) fn unmatched_key(cohort: &str, distinct_id: &str) -> String {
    format!("u.{cohort}.{}", distinct_token(distinct_id))
}

/// `<cohort>.<user>` (journal and deferred buckets).
pub(super) fn journal_key(cohort: &str, user: &UserRec) -> String {
    format!("{cohort}.{}", user_token(user))
}

/// `<cohort>.<seq>` (dead letters bucket).
pub(super) fn dead_letter_key(cohort: &str, seq: u64) -> String {
    format!("{cohort}.{seq:020}")
}

/// `<cohort>.<page>` (pages bucket): the page's record.
pub(super) fn record_key(cohort: &str, page: &MembershipPage) -> String {
    let number = page.page.to_string();
    let page = token(&["page", &page.session_id, page.kind.as_action(), &number]);
    format!("{cohort}.{page}")
}

/// `<cohort>.<page>.<nonce>.<n>` (pages bucket): the page's content, in chunks.
pub(super) fn chunk_key(record: &str, nonce: &str, index: u32) -> String {
    format!("{record}.{nonce}.{index}")
}

/// Whether removing this member by its `distinct_id` needs the index: not
/// when the user *is* that `distinct_id` (the default identity rule).
pub(super) fn needs_index(user: &UserRec, distinct_id: &str) -> bool {
    let is_that_id = user.k == 0 && user.id == distinct_id;
    !distinct_id.is_empty() && !is_that_id
}

/// A Braze user: `k` 0 external id, 1 email.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(super) struct UserRec {
    pub(super) k: u8,
    pub(super) id: String,
}

impl From<&BrazeUser> for UserRec {
    fn from(user: &BrazeUser) -> UserRec {
        match user {
            BrazeUser::ExternalId(id) => UserRec {
                k: 0,
                id: id.clone(),
            },
            BrazeUser::Email(email) => UserRec {
                k: 1,
                id: email.clone(),
            },
        }
    }
}

impl UserRec {
    /// The external id `id`.
    pub(super) fn external_id(id: &str) -> UserRec {
        UserRec {
            k: 0,
            id: id.to_owned(),
        }
    }

    pub(super) fn to_user(&self) -> BrazeUser {
        if self.k == 1 {
            BrazeUser::Email(self.id.clone())
        } else {
            BrazeUser::ExternalId(self.id.clone())
        }
    }
}

/// A cohort's state (`meta.<cohort>`), written only by the holder of its
/// lock, always compare-and-set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) project_id: String,
    pub(super) cohort_id: String,
    pub(super) name: String,
    pub(super) n_members: i64,
    pub(super) last_sync_ms: Option<i64>,
    /// The snapshot in progress (its id).
    pub(super) open_snapshot: Option<u64>,
    /// Snapshots by session, for 7 days.
    pub(super) snapshots: BTreeMap<String, SnapshotRec>,
    /// The ordinal the next change of the membership will carry: every page
    /// and finished snapshot applied gets the next one, never reused.
    pub(super) next_ordinal: u64,
    /// A change of the membership under way: its effects are being
    /// written, and whoever takes the lock next finishes it first.
    pub(super) applying: Option<Applying>,
}

impl Meta {
    pub(super) fn new(cohort: &CohortKey, name: &str) -> Meta {
        Meta {
            project_id: cohort.project_id.clone(),
            cohort_id: cohort.cohort_id.clone(),
            name: name.to_owned(),
            n_members: 0,
            last_sync_ms: None,
            open_snapshot: None,
            snapshots: BTreeMap::new(),
            next_ordinal: 1,
            applying: None,
        }
    }

    pub(super) fn cohort(&self) -> CohortKey {
        CohortKey {
            project_id: self.project_id.clone(),
            cohort_id: self.cohort_id.clone(),
        }
    }
}

/// A snapshot: its id is the ordinal of the change that started it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SnapshotRec {
    pub(super) id: u64,
    pub(super) total_pages: Option<u32>,
    pub(super) n_pages: u32,
    pub(super) completed: bool,
    pub(super) started_ms: i64,
}

/// A change of the membership under way, and its ordinal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Applying {
    pub(super) ordinal: u64,
    pub(super) work: Work,
}

/// What is being applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub(super) enum Work {
    /// The page whose record is at this key.
    Page { record: String },
    /// [`crate::store::MembershipStore::finish_snapshot`] of this session.
    Finish { session: String },
}

/// A page's record (`<cohort>.<page>`, pages bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PageRecord {
    /// Where its content is (`<record>.<nonce>.<n>`).
    pub(super) nonce: String,
    pub(super) chunks: u32,
    pub(super) at_ms: i64,
    /// Set once it is applied.
    pub(super) outcome: Option<OutcomeRec>,
}

/// A [`PageOutcome`], as kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OutcomeRec {
    pub(super) stale: bool,
    pub(super) added: u64,
    pub(super) removed: u64,
    pub(super) unmatched: u64,
    pub(super) snapshot_completed: bool,
}

impl From<PageOutcome> for OutcomeRec {
    fn from(outcome: PageOutcome) -> OutcomeRec {
        OutcomeRec {
            stale: outcome.stale,
            added: outcome.added,
            removed: outcome.removed,
            unmatched: outcome.unmatched,
            snapshot_completed: outcome.snapshot_completed,
        }
    }
}

impl From<OutcomeRec> for PageOutcome {
    fn from(outcome: OutcomeRec) -> PageOutcome {
        PageOutcome {
            replayed: false,
            stale: outcome.stale,
            added: outcome.added,
            removed: outcome.removed,
            unmatched: outcome.unmatched,
            snapshot_completed: outcome.snapshot_completed,
        }
    }
}

/// A page's content, as stored for whoever applies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PageContent {
    pub(super) cohort_name: String,
    /// `members`, `add_members` or `remove_members`.
    pub(super) action: String,
    pub(super) session_id: String,
    pub(super) total_pages: Option<u32>,
    pub(super) members: Vec<MemberContent>,
}

/// A member of a page: its `distinct_id` and its user, or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct MemberContent {
    pub(super) d: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<UserRec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) unmatched: Option<String>,
}

impl PageContent {
    pub(super) fn of(page: &MembershipPage) -> PageContent {
        PageContent {
            cohort_name: page.cohort_name.clone(),
            action: page.kind.as_action().to_owned(),
            session_id: page.session_id.clone(),
            total_pages: page.total_pages,
            members: page
                .members
                .iter()
                .map(|member| match &member.identity {
                    Ok(user) => MemberContent {
                        d: member.distinct_id.clone(),
                        user: Some(user.into()),
                        unmatched: None,
                    },
                    Err(reason) => MemberContent {
                        d: member.distinct_id.clone(),
                        user: None,
                        unmatched: Some(reason.as_str().to_owned()),
                    },
                })
                .collect(),
        }
    }

    pub(super) fn kind(&self) -> PageKind {
        match self.action.as_str() {
            "add_members" => PageKind::Add,
            "remove_members" => PageKind::Remove,
            _ => PageKind::Snapshot,
        }
    }
}

/// A member (`m.<cohort>.<user>`), or the tombstone a change left when it
/// removed one (`removed`), kept until that change is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct MemberValue {
    pub(super) user: UserRec,
    pub(super) d: String,
    /// The snapshot that last listed it.
    pub(super) seen_in: Option<u64>,
    /// The ordinal of the change that added it (or, for a tombstone,
    /// removed it).
    pub(super) by: u64,
    #[serde(default)]
    pub(super) removed: bool,
}

impl MemberValue {
    /// Whether it was a member before change `ordinal`: a member, or one
    /// that this very change removed (a tombstone of its own).
    pub(super) fn was_member_before(&self, ordinal: u64) -> bool {
        !self.removed || self.by == ordinal
    }
}

/// An unmatched member (`u.<cohort>.<distinct_id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct UnmatchedValue {
    pub(super) d: String,
    pub(super) reason: String,
    pub(super) seen_in: Option<u64>,
    pub(super) at_ms: i64,
}

/// A `distinct_id`'s user (`d.<cohort>.<distinct_id>`); checked against the
/// member's own `d` before use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct IndexValue {
    pub(super) user: UserRec,
}

/// A journaled change (`<cohort>.<user>`, journal bucket); its `seq` is
/// the entry's revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct JournalValue {
    pub(super) project_id: String,
    pub(super) cohort_id: String,
    pub(super) user: UserRec,
    /// 0 add, 1 remove.
    pub(super) op: u8,
    pub(super) queued_ms: i64,
    /// The ordinal of the change that journaled it (0: a replayed dead letter).
    pub(super) by: u64,
}

pub(super) fn op_code(op: ChangeOp) -> u8 {
    match op {
        ChangeOp::Add => 0,
        ChangeOp::Remove => 1,
    }
}

pub(super) fn op_from_code(code: u8) -> ChangeOp {
    if code == 1 {
        ChangeOp::Remove
    } else {
        ChangeOp::Add
    }
}

/// A deferred change's attempts and wait (`<cohort>.<user>`, deferred
/// bucket), valid while the journal entry is still at `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Deferral {
    pub(super) seq: u64,
    pub(super) attempts: u32,
    pub(super) not_before_ms: i64,
}

/// A dead letter (`<cohort>.<seq>`); its id is the refused change's seq.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct DeadLetterValue {
    pub(super) at_ms: i64,
    pub(super) project_id: String,
    pub(super) cohort_id: String,
    pub(super) cohort_name: String,
    pub(super) user: UserRec,
    pub(super) op: u8,
    pub(super) reason: String,
    pub(super) detail: String,
    pub(super) attempts: u32,
}

/// What the writer notes about a cohort (`status.<cohort>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct StatusValue {
    pub(super) last_confirmed_ms: Option<i64>,
    pub(super) last_error: Option<String>,
    pub(super) braze_name: Option<String>,
}

/// A cohort's lock (`lock.<cohort>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LockValue {
    pub(super) owner: String,
    pub(super) held: bool,
}

/// A lease: the writer's ([`LEASE_KEY`]) or the pull's ([`PULL_LEASE_KEY`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LeaseValue {
    pub(super) owner: String,
    pub(super) expires_ms: i64,
}

/// A value as stored.
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Bytes, StoreError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|error| {
        StoreError::Storage(format!("cannot encode a cohort store value: {error}"))
    })
}

/// A stored value, if there is one.
pub(super) fn decode<T: DeserializeOwned>(
    what: &str,
    value: Option<&Bytes>,
) -> Result<Option<T>, StoreError> {
    value
        .map(|bytes| {
            serde_json::from_slice(bytes).map_err(|error| {
                StoreError::Storage(format!(
                    "unreadable {what} in the NATS cohort store (written by another version?): {error}"
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_valid_key_tokens_and_differ_by_part_boundaries() {
        let a = token(&["ab", "c"]);
        let b = token(&["a", "bc"]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|byte| byte.is_ascii_hexdigit()));
    }

    #[test]
    fn the_index_is_needed_only_when_the_user_is_not_its_distinct_id() {
        assert!(!needs_index(&UserRec::external_id("d1"), "d1"));
        assert!(needs_index(&UserRec::external_id("u1"), "d1"));
        assert!(needs_index(
            &UserRec {
                k: 1,
                id: "d1".to_owned()
            },
            "d1"
        ));
        assert!(!needs_index(&UserRec::external_id("u1"), ""));
    }
}
