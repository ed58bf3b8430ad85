//! Pulls through a stand-in for Mixpanel's Query API: members streamed
//! into the store as one snapshot, the absent removed at the end, a failed
//! pull removing no one.

use std::sync::Arc;

use cohort_import::braze::BrazeUser;
use cohort_import::identity::IdentityRule;
use cohort_import::pull::pull_cohorts;
use cohort_import::stats::CohortStats;
use cohort_import::store::sqlite::SqliteStore;
use cohort_import::store::{CohortKey, MembershipStore as _};
use mixpanel_client::{Client, Credentials, RetryParams};
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(server: &MockServer) -> Client {
    Client::builder(Credentials::service_account("svc", "secret", "42"))
        .base_url(server.uri())
        .retry(RetryParams::for_test())
        .build()
        .unwrap()
}

async fn mixpanel_with_members(pages: &[&[&str]]) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": 77, "name": "Power users", "count": 3, "is_visible": 1},
            {"id": 88, "name": "Other", "count": 1, "is_visible": 1},
        ])))
        .mount(&server)
        .await;
    for (page_idx, ids) in pages.iter().enumerate() {
        let results: Vec<_> = ids
            .iter()
            .map(|id| json!({"$distinct_id": id, "$properties": {}}))
            .collect();
        let answer = ResponseTemplate::new(200).set_body_json(json!({
            "page": page_idx, "page_size": 2, "session_id": "sess", "status": "ok",
            "results": results,
        }));
        let matcher = if page_idx == 0 {
            body_string_contains("filter_by_cohort")
        } else {
            body_string_contains(format!("page={page_idx}").as_str())
        };
        Mock::given(method("POST"))
            .and(path("/api/query/engage"))
            .and(matcher)
            .respond_with(answer)
            .with_priority(if page_idx == 0 { 5 } else { 1 })
            .mount(&server)
            .await;
    }
    server
}

fn store(name: &str) -> (std::path::PathBuf, Arc<SqliteStore>) {
    let dir = std::env::temp_dir().join(format!("cohort-pull-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(SqliteStore::open(&dir.join("cohorts.db")).unwrap());
    (dir, store)
}

fn key() -> CohortKey {
    CohortKey {
        project_id: "42".to_owned(),
        cohort_id: "77".to_owned(),
    }
}

#[tokio::test]
async fn a_pull_streams_members_and_removes_the_absent() {
    let (dir, store) = store("ok");
    let stats = CohortStats::default();
    let server = mixpanel_with_members(&[&["a", "b"], &["c"]]).await;
    let reports = pull_cohorts(
        &client(&server),
        &*store,
        &IdentityRule::DistinctId,
        &[77],
        &stats,
    )
    .await
    .unwrap();
    let report = reports[0].as_ref().unwrap();
    assert_eq!(
        (report.members_seen, report.added, report.removed),
        (3, 3, 0)
    );
    assert_eq!(store.members(&key()).unwrap().len(), 3);

    let server = mixpanel_with_members(&[&["b", "d"], &[]]).await;
    let reports = pull_cohorts(
        &client(&server),
        &*store,
        &IdentityRule::DistinctId,
        &[77],
        &stats,
    )
    .await
    .unwrap();
    let report = reports[0].as_ref().unwrap();
    assert_eq!((report.added, report.removed), (1, 2));
    assert_eq!(
        store.members(&key()).unwrap(),
        [
            BrazeUser::ExternalId("b".to_owned()),
            BrazeUser::ExternalId("d".to_owned())
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_failed_pull_removes_no_one_and_notes_the_error() {
    let (dir, store) = store("failed");
    let stats = CohortStats::default();
    let server = mixpanel_with_members(&[&["a", "b"], &["c"]]).await;
    pull_cohorts(
        &client(&server),
        &*store,
        &IdentityRule::DistinctId,
        &[77],
        &stats,
    )
    .await
    .unwrap();
    // Page 0 answers with one member, then page 1 fails for good.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!([{"id": 77, "name": "Power users"}])),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .and(body_string_contains("page=1"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "page": 0, "page_size": 1, "session_id": "s", "status": "ok",
            "results": [{"$distinct_id": "a"}],
        })))
        .with_priority(5)
        .mount(&server)
        .await;
    let reports = pull_cohorts(
        &client(&server),
        &*store,
        &IdentityRule::DistinctId,
        &[77, 99],
        &stats,
    )
    .await
    .unwrap();
    assert!(reports[0].is_err());
    let (missing, _) = reports[1].as_ref().unwrap_err();
    assert_eq!(missing.cohort_id, "99");
    assert_eq!(store.members(&key()).unwrap().len(), 3);
    let status = &store.cohorts().await.unwrap()[0];
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("503"),
        "{status:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
