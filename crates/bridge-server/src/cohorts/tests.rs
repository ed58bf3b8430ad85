//! The cohort import of two `serve` replicas on one real `nats-server`:
//! the pages of one sync split between them and posted at once, one
//! membership in the shared store, one writer at a time sending to Braze,
//! and the other replica taking over when the writer stops.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use cohort_import::store::{CohortKey, MembershipStore as _};
use cohort_import::testsuite::BrazeDouble;
use serde_json::json;
use tower::ServiceExt as _;

use super::*;
use crate::config::{Env, Flags, SpoolBackend};
use crate::nats::test_server::NatsServer;

/// Basic `mixpanel:s3cret`.
const AUTHORIZATION: &str = "Basic bWl4cGFuZWw6czNjcmV0";

/// One replica's cohort import: its route, its tasks, and the Braze
/// stand-in its writer sends to (one per replica, to tell who sent).
struct Replica {
    import: Arc<CohortImport>,
    router: Router,
    braze: BrazeDouble,
    _braze_server: wiremock::MockServer,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Replica {
    /// A replica on `nats`; with `share_client` it gets a connection as
    /// `serve` shares its spool's, else the import connects on its own.
    async fn start(nats: &NatsServer, data_dir: &Path, share_client: bool) -> Replica {
        let (braze_server, braze) = BrazeDouble::start().await;
        let env: Env = [
            ("BRIDGE_CURRENTS_TOKENS", "currents-token"),
            ("MIXPANEL_PROJECT_TOKEN", "project-token"),
            ("BRIDGE_DATA_DIR", &data_dir.display().to_string()),
            ("BRIDGE_SPOOL", "nats"),
            ("BRIDGE_NATS_URLS", &nats.url()),
            ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", "mixpanel:s3cret"),
            ("BRAZE_REST_API_KEY", "braze-key"),
            ("BRAZE_API_URL", &braze_server.uri()),
        ]
        .into_iter()
        .collect();
        let config = Config::from_sources(None, &env, &Flags::default()).unwrap();
        let SpoolBackend::Nats(options) = &config.spool.backend else {
            panic!("not on NATS: {:?}", config.spool.backend);
        };
        let client = if share_client {
            Some(crate::nats::connect(options).await.unwrap())
        } else {
            None
        };
        let import = Arc::new(
            CohortImport::open(&config, None, client)
                .await
                .unwrap()
                .expect("the webhook is on"),
        );
        assert!(import.store.is_shared());
        let metrics = crate::metrics::Metrics::new();
        let router = import.routes(
            Duration::from_secs(60),
            &BodyBudget::new(16 << 20, metrics.ingest_body_bytes_reserved.clone()),
        );
        let (stop, stopped) = watch::channel(false);
        let tasks = import.spawn(stopped);
        Replica {
            import,
            router,
            braze,
            _braze_server: braze_server,
            stop,
            tasks,
        }
    }

    /// Posts one webhook page; returns the status and the body.
    async fn post(&self, body: Vec<u8>) -> (u16, String) {
        let request = Request::post("/mixpanel/cohorts")
            .header(header::AUTHORIZATION, AUTHORIZATION)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Who this replica's writer put in the cohort.
    fn sent_members(&self) -> BTreeSet<String> {
        self.braze
            .members(cohort_import::writer::DEFAULT_ATTRIBUTE, "77")
    }

    /// Stops its tasks as `serve` does at shutdown.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the cohort tasks stop")
                .unwrap();
        }
    }
}

fn cohort() -> CohortKey {
    CohortKey {
        project_id: "31337".to_owned(),
        cohort_id: "77".to_owned(),
    }
}

fn users(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("user-{n:03}")).collect()
}

fn braze_ids(ids: &[String]) -> BTreeSet<String> {
    ids.iter().map(|id| format!("external_id:{id}")).collect()
}

/// One webhook page of cohort 77.
fn page(action: &str, session: &str, page: u32, total: u32, ids: &[String]) -> Vec<u8> {
    let members: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| json!({"mixpanel_distinct_id": id, "email": format!("{id}@example.com")}))
        .collect();
    json!({
        "action": action,
        "parameters": {
            "mixpanel_project_id": 31337,
            "mixpanel_cohort_id": 77,
            "mixpanel_cohort_name": "Power users",
            "mixpanel_cohort_description": "",
            "mixpanel_session_id": session,
            "page_info": {"total_pages": total, "page_count": page},
            "members": members,
        }
    })
    .to_string()
    .into_bytes()
}

/// Posts a snapshot of `ids` in `n_pages` pages, all at once, the odd
/// pages to `first` and the even ones to `second`.
async fn post_snapshot_split(
    first: &Replica,
    second: &Replica,
    session: &str,
    ids: &[String],
    n_pages: u32,
) {
    let per_page = ids.len().div_ceil(n_pages as usize);
    let posts = ids.chunks(per_page).zip(1..).map(|(chunk, number)| {
        let replica = if number % 2 == 1 { first } else { second };
        replica.post(page("members", session, number, n_pages, chunk))
    });
    for (status, body) in futures_util::future::join_all(posts).await {
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("success"), "{body}");
    }
}

/// Waits until `done`, for at most 30 s.
async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pending(replica: &Replica) -> u64 {
    replica
        .import
        .store
        .cohorts()
        .await
        .unwrap()
        .iter()
        .map(|status| status.pending)
        .sum()
}

async fn stored_members(replica: &Replica) -> BTreeSet<String> {
    replica
        .import
        .store
        .members(&cohort())
        .await
        .unwrap()
        .iter()
        .map(|user| match user {
            cohort_import::braze::BrazeUser::ExternalId(id) => format!("external_id:{id}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_nats_share_the_cohorts_and_one_writer_sends() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let data_dir = std::env::temp_dir().join(format!("bridge-cohorts-nats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);

    // The first replica runs alone for a while and becomes the writer.
    let first = Replica::start(&nats, &data_dir.join("a"), true).await;
    let early = users(900..905);
    let (status, body) = first.post(page("add_members", "s0", 1, 1, &early)).await;
    assert_eq!(status, 200, "{body}");
    wait_for("the first replica sends the early members", async || {
        first.sent_members() == braze_ids(&early)
    })
    .await;

    // A second replica starts beside the live writer: it must not take the
    // lease over.
    let second = Replica::start(&nats, &data_dir.join("b"), false).await;

    // A sync of 100 members, its pages split between the replicas and
    // posted at once: one membership, sent by the first replica alone.
    let sync1 = users(0..100);
    post_snapshot_split(&first, &second, "s1", &sync1, 4).await;
    assert_eq!(stored_members(&first).await, braze_ids(&sync1));
    assert_eq!(stored_members(&second).await, braze_ids(&sync1));
    wait_for("the first sync reaches Braze", async || {
        pending(&second).await == 0 && first.sent_members() == braze_ids(&sync1)
    })
    .await;

    // A second sync: 50 leave, 30 join; still the same writer.
    let sync2 = users(50..130);
    post_snapshot_split(&second, &first, "s2", &sync2, 4).await;
    assert_eq!(stored_members(&second).await, braze_ids(&sync2));
    wait_for("the second sync reaches Braze", async || {
        pending(&second).await == 0 && first.sent_members() == braze_ids(&sync2)
    })
    .await;
    assert_eq!(second.braze.requests(), 0, "the second replica sent too");

    // The writer stops (giving its lease back): the other one takes over.
    let stopped_braze = first.braze.clone();
    let requests_before = stopped_braze.requests();
    first.stop().await;
    let joined = users(200..210);
    let (status, body) = second.post(page("add_members", "s3", 1, 1, &joined)).await;
    assert_eq!(status, 200, "{body}");
    wait_for("the second replica sends the new members", async || {
        second.sent_members() == braze_ids(&joined)
    })
    .await;
    assert_eq!(pending(&second).await, 0);
    let mut expected = braze_ids(&sync2);
    expected.extend(braze_ids(&joined));
    assert_eq!(stored_members(&second).await, expected);
    // Nothing more went through the stopped replica, and nothing of the
    // cohort state went to the data dirs.
    assert_eq!(stopped_braze.requests(), requests_before);
    assert!(!store_path(&data_dir.join("a")).exists());
    assert!(!store_path(&data_dir.join("b")).exists());
    second.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
