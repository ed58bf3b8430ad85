//! Run with: `cargo run --release -p cohort-import --example snapshot_diff -- [MEMBERS]`
//!
//! Times the diff of a full `members` snapshot against the stored
//! membership, as a pull or a webhook snapshot does it: a store holding
//! MEMBERS members (default 1,000,000) receives a new snapshot of the same
//! size in which 1 % of the members changed (1 % left, 1 % joined), in
//! pages of 10,000, each one durable transaction, then completes it. Prints
//! the time, the changes journaled and the process's peak RSS.

use std::time::Instant;

use cohort_import::braze::BrazeUser;
use cohort_import::store::sqlite::SqliteStore;
use cohort_import::store::{CohortKey, MembershipPage, MembershipStore, PageKind, PageMember};

const PAGE: usize = 10_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n_members: usize = match std::env::args().nth(1) {
        Some(text) => text.parse()?,
        None => 1_000_000,
    };
    let dir = std::env::temp_dir().join(format!("snapshot-diff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&dir.join("cohorts.db"))?;
    let cohort = CohortKey {
        project_id: "1".to_owned(),
        cohort_id: "77".to_owned(),
    };

    let load_started = Instant::now();
    snapshot(&store, &cohort, "load", 0..n_members).await?;
    let load = load_started.elapsed();
    // Braze has seen the first snapshot: empty the journal.
    loop {
        let changes = store.due_changes(100_000).await?;
        if changes.is_empty() {
            break;
        }
        store.confirm(&changes).await?;
    }

    let shift = n_members / 100;
    let diff_started = Instant::now();
    let outcome = snapshot(&store, &cohort, "diff", shift..n_members + shift).await?;
    let diff = diff_started.elapsed();
    let rss_mb = peak_rss_bytes() as f64 / 1e6;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "members {n_members}: first snapshot {:.2} s; diff {:.2} s ({} added, {} removed); peak RSS {rss_mb:.0} MB",
            load.as_secs_f64(),
            diff.as_secs_f64(),
            outcome.0,
            outcome.1
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Records members `ids` as one snapshot in pages; returns (added, removed).
async fn snapshot(
    store: &SqliteStore,
    cohort: &CohortKey,
    session: &str,
    ids: std::ops::Range<usize>,
) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let mut added = 0;
    let mut removed = 0;
    let ids: Vec<usize> = ids.collect();
    for (page_idx, page) in ids.chunks(PAGE).enumerate() {
        let members = page
            .iter()
            .map(|n| {
                let id = format!("user-{n:09}");
                PageMember {
                    distinct_id: id.clone(),
                    identity: Ok(BrazeUser::ExternalId(id)),
                }
            })
            .collect();
        let outcome = store
            .apply_page(MembershipPage {
                cohort: cohort.clone(),
                cohort_name: "Bench".to_owned(),
                kind: PageKind::Snapshot,
                session_id: session.to_owned(),
                page: u32::try_from(page_idx + 1)?,
                total_pages: None,
                members,
            })
            .await?;
        added += outcome.added;
        removed += outcome.removed;
    }
    let outcome = store.finish_snapshot(cohort, session).await?;
    Ok((added, removed + outcome.removed))
}

/// The process's peak resident set (`VmHWM`), 0 where unknown.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kb| kb * 1024)
}
