//! Pull: read a cohort through Mixpanel's Query API and diff it against
//! the stored membership, for operators without the webhook (or to repair
//! a membership that drifted).
//!
//! A pull is a snapshot: the members stream in from
//! `mixpanel_client::Client::cohort_members` and are recorded in pages of
//! [`PULL_PAGE_MEMBERS`], each one transaction, so memory holds one page
//! whatever the cohort's size (Mixpanel allows 10 million members). When
//! the stream ends, members the pull did not see are removed
//! ([`MembershipStore::finish_snapshot`]). A pull that fails half-way
//! removes no one; its adds stand (those users are members).
//!
//! Every page of members is one query of Mixpanel's Query API budget (60
//! per hour per project, enforced by the client): a cohort of a million
//! members takes about 1000 queries, hours of budget. The webhook is the
//! way for large cohorts.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures_util::TryStreamExt as _;
use mixpanel_client::{Client, Cohort, MemberQuery};

use crate::identity::{IdentityRule, Member};
use crate::stats::CohortStats;
use crate::store::{
    CohortKey, MembershipPage, MembershipStore, PageKind, PageMember, PageOutcome, StoreError,
};

/// Members recorded per transaction during a pull.
pub const PULL_PAGE_MEMBERS: usize = 10_000;

/// When the scheduled pull runs, and what it pulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The cohorts to pull; all of the project's when empty.
    pub ids: Vec<u64>,
    /// The time between the end of one pull and the start of the next.
    pub interval: std::time::Duration,
}

/// What one cohort's pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// The cohort.
    pub cohort: CohortKey,
    /// Its name.
    pub name: String,
    /// Members Mixpanel listed.
    pub members_seen: u64,
    /// Members added.
    pub added: u64,
    /// Members removed.
    pub removed: u64,
    /// Members without a usable id.
    pub unmatched: u64,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// Mixpanel's Query API failed.
    #[error("Mixpanel: {0}")]
    Mixpanel(#[from] mixpanel_client::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client has no project id (the Query API needs one).
    #[error("the Mixpanel client has no project id: use service account credentials")]
    NoProjectId,
}

/// Pulls the cohorts with these ids (all of the project's when `ids` is
/// empty), one after another; each cohort's result is reported on its own.
pub async fn pull_cohorts<S: MembershipStore>(
    client: &Client,
    store: &S,
    identity: &IdentityRule,
    ids: &[u64],
    stats: &CohortStats,
) -> Result<Vec<Result<PullReport, (CohortKey, PullError)>>, PullError> {
    let project_id = client
        .project_id()
        .ok_or(PullError::NoProjectId)?
        .to_owned();
    let cohorts = client.list_cohorts().await?;
    let mut reports = Vec::new();
    for cohort in cohorts
        .iter()
        .filter(|cohort| ids.is_empty() || ids.contains(&cohort.id))
    {
        let key = CohortKey {
            project_id: project_id.clone(),
            cohort_id: cohort.id.to_string(),
        };
        let result = pull_cohort(client, store, identity, cohort).await;
        match &result {
            Ok(report) => {
                stats.pulls_completed.fetch_add(1, Relaxed);
                stats.count_page(&PageOutcome {
                    added: report.added,
                    removed: report.removed,
                    unmatched: report.unmatched,
                    ..PageOutcome::default()
                });
                store.record_error(&key, None).await?;
                tracing::info!(
                    cohort = %key,
                    members = report.members_seen,
                    added = report.added,
                    removed = report.removed,
                    unmatched = report.unmatched,
                    "Pulled a cohort."
                );
            }
            Err(error) => {
                stats.pulls_failed.fetch_add(1, Relaxed);
                tracing::warn!(cohort = %key, error = %error, "Cannot pull a cohort.");
                // The cohort may be unknown to the store yet; then there is
                // nothing to note the error on, and the caller reports it.
                let _ = store.record_error(&key, Some(error.to_string())).await;
            }
        }
        reports.push(result.map_err(|error| (key, error)));
    }
    for id in ids {
        if !cohorts.iter().any(|cohort| cohort.id == *id) {
            let key = CohortKey {
                project_id: project_id.clone(),
                cohort_id: id.to_string(),
            };
            reports.push(Err((
                key,
                PullError::Mixpanel(mixpanel_client::Error::Rejected {
                    status: 404,
                    message: format!("Mixpanel lists no cohort {id} in this project"),
                }),
            )));
        }
    }
    Ok(reports)
}

/// Pulls one cohort: streams its members into the store as one snapshot.
pub async fn pull_cohort<S: MembershipStore>(
    client: &Client,
    store: &S,
    identity: &IdentityRule,
    cohort: &Cohort,
) -> Result<PullReport, PullError> {
    let project_id = client
        .project_id()
        .ok_or(PullError::NoProjectId)?
        .to_owned();
    let key = CohortKey {
        project_id,
        cohort_id: cohort.id.to_string(),
    };
    let mut query = MemberQuery::new();
    let properties = identity.output_properties();
    if !properties.is_empty() {
        // Only members with a profile can carry the property.
        query = query.include_all_users(false).output_properties(properties);
    }
    let session_id = format!("pull-{}", crate::clock::now_ms());
    let mut report = PullReport {
        cohort: key.clone(),
        name: cohort.name.clone(),
        ..PullReport::default()
    };
    let mut members = std::pin::pin!(client.cohort_members(cohort.id, query));
    let mut page = Vec::with_capacity(PULL_PAGE_MEMBERS);
    let mut page_number = 0;
    loop {
        let member = members.try_next().await?;
        let is_end = member.is_none();
        if let Some(member) = member {
            report.members_seen += 1;
            let member = Member {
                distinct_id: Some(member.distinct_id),
                properties: member.properties,
            };
            page.push(PageMember {
                distinct_id: member.distinct_id.clone().unwrap_or_default(),
                identity: identity.resolve(&member),
            });
        }
        if page.len() >= PULL_PAGE_MEMBERS || (is_end && !page.is_empty()) {
            page_number += 1;
            let outcome = store
                .apply_page(MembershipPage {
                    cohort: key.clone(),
                    cohort_name: cohort.name.clone(),
                    kind: PageKind::Snapshot,
                    session_id: session_id.clone(),
                    page: page_number,
                    total_pages: None,
                    members: std::mem::take(&mut page),
                })
                .await?;
            add(&mut report, &outcome);
        }
        if is_end {
            break;
        }
    }
    let outcome = store.finish_snapshot(&key, &session_id).await?;
    add(&mut report, &outcome);
    Ok(report)
}

/// Pulls on a schedule until `stop` turns true: every
/// `schedule.interval`, the cohorts `schedule.ids` (all when empty).
/// Failures are logged and noted on each cohort; the next round tries
/// again.
///
/// Processes that share a store (replicas on NATS) take turns through the
/// store's pull lease ([`MembershipStore::hold_pull_lease`]): a round runs
/// where the lease is taken, the lease is renewed while it runs, and it is
/// then held for `interval` more, so that the next round is due an
/// interval after this one ended, wherever it runs. The others look again
/// every [`PULL_LEASE_CHECK`] at most; one that sees the lease lapse (its
/// holder died or stopped) takes the next round. A pull that loses the
/// lease midway stops: a cut-short pull removes no one.
pub async fn pull_every<S: MembershipStore>(
    client: Client,
    store: Arc<S>,
    identity: IdentityRule,
    schedule: Schedule,
    stats: Arc<CohortStats>,
    changed: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let owner = format!("pid-{}-{:016x}", std::process::id(), rand::random::<u64>());
    let check_every = schedule.interval.min(PULL_LEASE_CHECK);
    while !*stop.borrow() {
        let wait = match store.hold_pull_lease(&owner, schedule.interval).await {
            Ok(true) => {
                let pulled = tokio::select! {
                    pulled = pull_holding_lease(&client, &*store, &identity, &schedule, &stats, &owner) => pulled,
                    _ = stop.changed() => return,
                };
                match pulled {
                    Ok(()) => changed.notify_one(),
                    Err(error) => {
                        tracing::warn!(error = %error, "The scheduled cohort pull did not finish.")
                    }
                }
                // The next round is due an interval from now, here or on
                // another replica.
                if let Err(error) = store.hold_pull_lease(&owner, schedule.interval).await {
                    tracing::warn!(error = %error, "Cannot renew the cohort pull lease.");
                }
                schedule.interval
            }
            Ok(false) => check_every,
            Err(error) => {
                tracing::warn!(error = %error, "Cannot take the cohort pull lease.");
                check_every
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The longest a process waits before it looks at the pull lease again
/// when another holds it.
pub const PULL_LEASE_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a scheduled round stopped short.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("cannot list Mixpanel cohorts: {0}")]
    Pull(#[from] PullError),
    #[error("another process took the pull lease")]
    LeaseLost,
    #[error("cannot renew the pull lease: {0}")]
    Lease(#[from] StoreError),
}

/// One round of the schedule, renewing the pull lease every third of the
/// interval; ends when the lease is lost.
async fn pull_holding_lease<S: MembershipStore>(
    client: &Client,
    store: &S,
    identity: &IdentityRule,
    schedule: &Schedule,
    stats: &CohortStats,
    owner: &str,
) -> Result<(), RoundError> {
    let pull = pull_cohorts(client, store, identity, &schedule.ids, stats);
    let mut pull = std::pin::pin!(pull);
    let mut renew = tokio::time::interval(schedule.interval / 3);
    renew.tick().await;
    loop {
        tokio::select! {
            pulled = &mut pull => return pulled.map(drop).map_err(RoundError::from),
            _ = renew.tick() => {
                if !store.hold_pull_lease(owner, schedule.interval).await? {
                    return Err(RoundError::LeaseLost);
                }
            }
        }
    }
}

fn add(report: &mut PullReport, outcome: &PageOutcome) {
    report.added += outcome.added;
    report.removed += outcome.removed;
    report.unmatched += outcome.unmatched;
}
