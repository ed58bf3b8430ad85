//! The whole path inside the crate: webhook pages into the store, the
//! writer to a Braze stand-in, failures and recovery.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cohort_import::braze::BrazeClient;
use cohort_import::identity::IdentityRule;
use cohort_import::store::MembershipStore as _;
use cohort_import::store::sqlite::{DeadLetterSelection, SqliteStore};
use cohort_import::testsuite::BrazeDouble;
use cohort_import::webhook::{WebhookConfig, WebhookReceiver};
use cohort_import::writer::{Destination, Writer, WriterConfig, WriterError};
use mixpanel_client::{RetryParams, Secret};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

const ATTRIBUTE: &str = "mixpanel_cohorts";

struct Setup {
    _dir: TempDir,
    store: Arc<SqliteStore>,
    receiver: WebhookReceiver<SqliteStore>,
    writer: Writer<SqliteStore>,
    braze: BrazeDouble,
    _server: wiremock::MockServer,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn setup(name: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("cohort-flow-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(SqliteStore::open(&dir.join("cohorts.db")).unwrap());
    let (server, braze) = BrazeDouble::start().await;
    let client = BrazeClient::builder(Secret::new("rest-key"))
        .base_url(&server.uri())
        .retry(RetryParams::for_test())
        .build()
        .unwrap();
    let receiver = WebhookReceiver::new(
        Arc::clone(&store),
        WebhookConfig::new(IdentityRule::DistinctId).credentials(["mixpanel:s3cret"]),
    );
    let writer = Writer::new(
        Arc::clone(&store),
        Destination::attribute(client, ATTRIBUTE),
        WriterConfig {
            max_backoff: Duration::from_millis(10),
            ..WriterConfig::default()
        },
    );
    Setup {
        _dir: TempDir(dir),
        store,
        receiver,
        writer,
        braze,
        _server: server,
    }
}

fn auth() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("mixpanel:s3cret")
    )
}

fn page(action: &str, session: &str, page: u32, total: u32, ids: &[&str]) -> Vec<u8> {
    let members: Vec<Value> = ids
        .iter()
        .map(|id| json!({"mixpanel_distinct_id": id, "email": format!("{id}@example.com")}))
        .collect();
    json!({
        "action": action,
        "parameters": {
            "mixpanel_project_id": "1",
            "mixpanel_cohort_id": "77",
            "mixpanel_cohort_name": "Power users",
            "mixpanel_session_id": session,
            "page_info": {"total_pages": total, "page_count": page},
            "members": members,
        }
    })
    .to_string()
    .into_bytes()
}

async fn post(setup: &Setup, body: &[u8]) -> (u16, Value) {
    let answer = setup.receiver.receive(Some(&auth()), body).await;
    (answer.status, serde_json::from_slice(&answer.body).unwrap())
}

fn ids(users: &[&str]) -> std::collections::BTreeSet<String> {
    users.iter().map(|id| format!("external_id:{id}")).collect()
}

#[tokio::test]
async fn a_snapshot_then_diffs_reach_braze_as_the_cohort_is() {
    let setup = setup("snapshot").await;
    let (status, answer) = post(&setup, &page("members", "s1", 1, 2, &["a", "b"])).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"action": "members", "status": "success"}));
    post(&setup, &page("members", "s1", 2, 2, &["c"])).await;
    setup.writer.drain_once().await.unwrap();
    assert_eq!(setup.braze.members(ATTRIBUTE, "77"), ids(&["a", "b", "c"]));

    post(&setup, &page("add_members", "s2", 1, 1, &["d"])).await;
    post(&setup, &page("remove_members", "s2", 1, 1, &["a"])).await;
    // A new full snapshot without `b`.
    post(&setup, &page("members", "s3", 1, 1, &["c", "d", "e"])).await;
    let report = setup.writer.drain_once().await.unwrap();
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(setup.braze.members(ATTRIBUTE, "77"), ids(&["c", "d", "e"]));
    let status = &setup.store.cohorts().await.unwrap()[0];
    assert_eq!((status.members, status.pending), (3, 0));
}

#[tokio::test]
async fn wrong_credentials_and_malformed_pages_are_refused_without_effect() {
    let setup = setup("refused").await;
    let answer = setup
        .receiver
        .receive(
            Some("Basic bm9wZTpub3Bl"),
            &page("add_members", "s", 1, 1, &["a"]),
        )
        .await;
    assert_eq!(answer.status, 401);
    let answer = setup.receiver.receive(Some(&auth()), b"{\"action\":").await;
    assert_eq!(answer.status, 400);
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["status"], "failure");
    assert!(body["error"]["message"].as_str().unwrap().contains("JSON"));
    assert!(setup.store.cohorts().await.unwrap().is_empty());
}

#[tokio::test]
async fn rate_limits_and_outages_delay_but_lose_nothing() {
    let setup = setup("outage").await;
    post(&setup, &page("add_members", "s1", 1, 1, &["a", "b"])).await;
    setup.braze.script([
        ResponseTemplate::new(429).insert_header("X-Ratelimit-Retry-After", "1"),
        ResponseTemplate::new(503),
    ]);
    let started = std::time::Instant::now();
    setup.writer.drain_once().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(setup.braze.members(ATTRIBUTE, "77"), ids(&["a", "b"]));

    // An outage longer than the client's retries: the changes stay journaled.
    post(&setup, &page("remove_members", "s2", 1, 1, &["a"])).await;
    setup
        .braze
        .script(std::iter::repeat_n(ResponseTemplate::new(503), 5));
    let error = setup.writer.drain_once().await.unwrap_err();
    assert!(matches!(error, WriterError::Unavailable(_)), "{error}");
    let status = &setup.store.cohorts().await.unwrap()[0];
    assert_eq!(status.pending, 1);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("503"),
        "{status:?}"
    );
    // The change waits its backoff (10 ms here), then goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    setup.writer.drain_once().await.unwrap();
    assert_eq!(setup.store.cohorts().await.unwrap()[0].last_error, None);
    assert_eq!(setup.braze.members(ATTRIBUTE, "77"), ids(&["b"]));
}

#[tokio::test]
async fn refused_objects_are_dead_lettered_and_the_rest_delivered() {
    let setup = setup("refusal").await;
    setup.braze.refuse_user("external_id:bad");
    post(&setup, &page("add_members", "s1", 1, 1, &["a", "bad", "c"])).await;
    let report = setup.writer.drain_once().await.unwrap();
    assert_eq!((report.confirmed, report.dead_lettered), (2, 1));
    assert_eq!(setup.braze.members(ATTRIBUTE, "77"), ids(&["a", "c"]));
    let letters = setup
        .store
        .dead_letters(&DeadLetterSelection::default(), 10)
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "refused_by_braze");
    assert_eq!(letters[0].detail, "user is not allowed");
}

#[tokio::test]
async fn a_request_refused_as_a_whole_is_split_to_find_the_culprit() {
    let setup = setup("split").await;
    post(
        &setup,
        &page("add_members", "s1", 1, 1, &["a", "b", "c", "d"]),
    )
    .await;
    // The whole request refused once, then each half is fine but the
    // first quarter is refused again alone.
    setup.braze.script([
        ResponseTemplate::new(400).set_body_json(json!({"message": "bad request"})),
        ResponseTemplate::new(400).set_body_json(json!({"message": "bad request"})),
        ResponseTemplate::new(400).set_body_json(json!({"message": "a is bad"})),
    ]);
    let report = setup.writer.drain_once().await.unwrap();
    assert_eq!(report.confirmed + report.dead_lettered, 4);
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(setup.braze.members(ATTRIBUTE, "77").len(), 3);
}

#[tokio::test]
async fn refused_credentials_pause_without_dead_letters() {
    let setup = setup("auth").await;
    post(&setup, &page("add_members", "s1", 1, 1, &["a"])).await;
    setup.braze.script([ResponseTemplate::new(401)]);
    let error = setup.writer.drain_once().await.unwrap_err();
    assert!(matches!(error, WriterError::Auth(_)), "{error}");
    let status = &setup.store.cohorts().await.unwrap()[0];
    assert_eq!((status.pending, status.dead_letters), (1, 0));
    setup.writer.drain_once().await.unwrap();
    assert_eq!(setup.braze.members(ATTRIBUTE, "77"), ids(&["a"]));
}

#[tokio::test]
async fn the_partner_writer_names_the_cohort_and_sends_diffs() {
    let setup = setup("partner").await;
    let client = BrazeClient::builder(Secret::new("unused"))
        .base_url(&setup._server.uri())
        .retry(RetryParams::for_test())
        .build()
        .unwrap();
    let writer = Writer::new(
        Arc::clone(&setup.store),
        Destination::partner(
            client,
            cohort_import::braze::PartnerCredentials {
                partner_name: "acme".to_owned(),
                partner_api_key: Secret::new("partner-key"),
                client_secret: Secret::new("import-key"),
            },
        ),
        WriterConfig::default(),
    );
    post(&setup, &page("add_members", "s1", 1, 1, &["a", "b"])).await;
    writer.drain_once().await.unwrap();
    post(&setup, &page("remove_members", "s2", 1, 1, &["a"])).await;
    writer.drain_once().await.unwrap();
    assert_eq!(
        setup.braze.partner_name("77").as_deref(),
        Some("Power users")
    );
    assert_eq!(
        setup.braze.partner_members("77"),
        ["b".to_owned()].into_iter().collect()
    );
}

#[tokio::test]
async fn a_wrong_endpoint_pauses_the_writer_without_dead_letters() {
    let setup = setup("endpoint").await;
    post(&setup, &page("add_members", "s1", 1, 1, &["a", "b"])).await;
    setup
        .braze
        .script([ResponseTemplate::new(404).set_body_string("no such route")]);
    let error = setup.writer.drain_once().await.unwrap_err();
    assert!(matches!(error, WriterError::Endpoint(_)), "{error}");
    let status = &setup.store.cohorts().await.unwrap()[0];
    assert_eq!((status.pending, status.dead_letters), (2, 0));
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("404")
    );
    setup.writer.drain_once().await.unwrap();
    assert_eq!(setup.braze.members(ATTRIBUTE, "77"), ids(&["a", "b"]));
}

#[tokio::test]
async fn a_second_writer_waits_for_the_first() {
    let setup = setup("lease").await;
    post(&setup, &page("add_members", "s1", 1, 1, &["a"])).await;
    assert!(
        setup
            .store
            .hold_writer_lease("another process", Duration::from_secs(60), false)
            .await
            .unwrap()
    );
    let error = setup.writer.drain_once().await.unwrap_err();
    assert!(matches!(error, WriterError::LeaseHeld), "{error}");
    assert_eq!(setup.braze.requests(), 0);
    setup
        .store
        .hold_writer_lease("another process", Duration::ZERO, false)
        .await
        .unwrap();
    setup.writer.drain_once().await.unwrap();
    assert_eq!(setup.braze.members(ATTRIBUTE, "77"), ids(&["a"]));
}
