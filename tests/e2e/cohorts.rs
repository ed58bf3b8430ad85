//! The cohort import end to end: the real `serve` receiving Mixpanel's
//! cohort-sync webhook over HTTP, writing to a Braze stand-in (or, in
//! dry-run mode, to a file), through restarts from page 1, duplicates,
//! Braze's rate limits and outages, `kill -9`, hostile bodies; and the
//! `cohorts` and `dlq --cohorts` commands.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use cohort_import::testsuite::BrazeDouble;
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::harness::{self, TempDir};
use crate::serve::{Server, free_port, get, post_to, start_with, wait_for};

const WEBHOOK_PASSWORD: &str = "webhook-password-never-logged";
const BRAZE_KEY: &str = "braze-rest-key-never-logged";
const ATTRIBUTE: &str = "mixpanel_cohorts";

fn authorization() -> String {
    let pair = format!("mixpanel:{WEBHOOK_PASSWORD}");
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `serve` with the cohort webhook on, writing to `braze_url` (or to the
/// dry-run file when `None`).
fn start_cohorts(
    data_dir: &std::path::Path,
    braze_url: Option<&str>,
    extra: &[(&str, &str)],
) -> Server {
    let credentials = format!("old:previous,mixpanel:{WEBHOOK_PASSWORD}");
    let mut env: Vec<(&str, &str)> = vec![
        ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", &credentials),
        ("BRAZE_REST_API_KEY", BRAZE_KEY),
    ];
    if let Some(url) = braze_url {
        env.push(("BRAZE_API_URL", url));
    }
    env.extend_from_slice(extra);
    // A Mixpanel that is never called: the webhook needs no Mixpanel call.
    let mixpanel = braze_url.map(|_| "http://127.0.0.1:9");
    start_with(data_dir, free_port(), mixpanel, &env)
}

fn page(action: &str, session: &str, page: u32, total: u32, ids: &[String]) -> Vec<u8> {
    let members: Vec<Value> = ids
        .iter()
        .map(|id| json!({"mixpanel_distinct_id": id, "email": format!("{id}@example.com"), "first_name": "Ana"}))
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

fn users(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("user-{n}")).collect()
}

fn braze_ids(ids: &[String]) -> BTreeSet<String> {
    ids.iter().map(|id| format!("external_id:{id}")).collect()
}

async fn post_page(address: &str, body: Vec<u8>) -> (u16, String) {
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || {
        post_to(&address, "/mixpanel/cohorts", &authorization(), &body).unwrap()
    })
    .await
    .unwrap()
}

async fn status(address: &str) -> Value {
    let address = address.to_owned();
    let (code, body) = tokio::task::spawn_blocking(move || get(&address, "/status").unwrap())
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until every journaled change has reached Braze.
async fn wait_until_sent(address: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(address).await;
        let pending: u64 = status["cohorts"]
            .as_array()
            .map(|cohorts| {
                cohorts
                    .iter()
                    .map(|cohort| cohort["pending_changes"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        if pending == 0 && status["cohorts"].as_array().is_some_and(|c| !c.is_empty()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "changes still pending: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_page_snapshot_restarted_from_page_one_then_diffs() {
    let dir = TempDir::new("cohorts-sessions");
    let (braze_server, braze) = BrazeDouble::start().await;
    let server = start_cohorts(&dir.join("data"), Some(&braze_server.uri()), &[]);
    let all = users(0..300);

    // Pages of 100; the sync fails after page 2 and Mixpanel restarts it
    // from page 1 in a new session; page 2 of the old one arrives late.
    for page_number in 1..=2 {
        let ids = &all[(page_number as usize - 1) * 100..page_number as usize * 100];
        let (code, body) =
            post_page(&server.address, page("members", "s-a", page_number, 3, ids)).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"action": "members", "status": "success"})
        );
    }
    for page_number in [3, 1, 2, 2] {
        let ids = &all[(page_number as usize - 1) * 100..page_number as usize * 100];
        let (code, _) =
            post_page(&server.address, page("members", "s-b", page_number, 3, ids)).await;
        assert_eq!(code, 200);
    }
    let (code, _) = post_page(
        &server.address,
        page("members", "s-a", 2, 3, &all[100..200]),
    )
    .await;
    assert_eq!(code, 200);
    wait_until_sent(&server.address).await;
    assert_eq!(braze.members(ATTRIBUTE, "77"), braze_ids(&all));

    // Diffs: 10 leave, 5 join; a duplicate remove page changes nothing.
    let leaving = all[0..10].to_vec();
    let joining = users(1000..1005);
    post_page(
        &server.address,
        page("remove_members", "s-c", 1, 1, &leaving),
    )
    .await;
    post_page(&server.address, page("add_members", "s-c", 1, 1, &joining)).await;
    post_page(
        &server.address,
        page("remove_members", "s-c", 1, 1, &leaving),
    )
    .await;
    wait_until_sent(&server.address).await;
    let mut expected: Vec<String> = all[10..].to_vec();
    expected.extend(joining.iter().cloned());
    assert_eq!(braze.members(ATTRIBUTE, "77"), braze_ids(&expected));

    // A new full snapshot of 50 members removes everyone else.
    let kept = expected[0..50].to_vec();
    post_page(&server.address, page("members", "s-d", 1, 1, &kept)).await;
    wait_until_sent(&server.address).await;
    assert_eq!(braze.members(ATTRIBUTE, "77"), braze_ids(&kept));
    let status = status(&server.address).await;
    let cohort = &status["cohorts"][0];
    assert_eq!(cohort["members"], 50, "{status}");
    assert_eq!(cohort["name"], "Power users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braze_rate_limits_outages_and_refusals() {
    let dir = TempDir::new("cohorts-braze-faults");
    let (braze_server, braze) = BrazeDouble::start().await;
    braze.refuse_user("external_id:user-3");
    braze.script([
        ResponseTemplate::new(429).insert_header("X-Ratelimit-Retry-After", "1"),
        ResponseTemplate::new(500),
        ResponseTemplate::new(502),
        ResponseTemplate::new(503),
    ]);
    let server = start_cohorts(&dir.join("data"), Some(&braze_server.uri()), &[]);
    let ids = users(0..10);
    post_page(&server.address, page("add_members", "s", 1, 1, &ids)).await;
    wait_until_sent(&server.address).await;
    let mut delivered = ids.clone();
    delivered.retain(|id| id != "user-3");
    assert_eq!(braze.members(ATTRIBUTE, "77"), braze_ids(&delivered));
    let status = status(&server.address).await;
    assert_eq!(status["cohorts"][0]["dead_letters"], 1, "{status}");

    // The refused change is listed with Braze's reason, and replays.
    let data_dir = dir.join("data");
    let data_dir = data_dir.to_str().unwrap();
    let listed = harness::run(
        &["dlq", "--cohorts", "--data-dir", data_dir, "list", "--json"],
        b"",
    );
    listed.assert_success();
    let letter: Value = serde_json::from_str(listed.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(letter["reason"], "refused_by_braze");
    assert_eq!(letter["external_id"], "user-3");
    assert_eq!(letter["detail"], "user is not allowed");
    let metrics = tokio::task::spawn_blocking({
        let address = server.address.clone();
        move || get(&address, "/metrics").unwrap().1
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("bridge_cohort_dead_lettered_changes_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bridge_cohort_members_added_total 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bridge_cohort_braze_requests_total{outcome=\"partly_refused\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_session_and_mid_write_loses_nothing() {
    let dir = TempDir::new("cohorts-kill");
    let data_dir = dir.join("data");
    let (braze_server, braze) = BrazeDouble::start().await;
    let all = users(0..2000);
    {
        let mut server = start_cohorts(&data_dir, Some(&braze_server.uri()), &[]);
        // Braze fails slowly: the writes in flight at the kill were not
        // applied, so only the journal can bring them to Braze.
        braze.set_delay(Some(Duration::from_secs(5)));
        braze.script(std::iter::repeat_n(ResponseTemplate::new(500), 1000));
        for page_number in 1..=2u32 {
            let ids = &all[(page_number as usize - 1) * 500..page_number as usize * 500];
            let (code, _) =
                post_page(&server.address, page("members", "s-1", page_number, 4, ids)).await;
            assert_eq!(code, 200);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }
    assert!(braze.members(ATTRIBUTE, "77").is_empty());
    braze.clear_script();
    braze.set_delay(None);
    let server = start_cohorts(&data_dir, Some(&braze_server.uri()), &[]);
    // Mixpanel retries the session from page 1: the pages recorded before
    // the kill are replays, the last two complete the snapshot.
    for page_number in 1..=4u32 {
        let ids = &all[(page_number as usize - 1) * 500..page_number as usize * 500];
        let (code, _) =
            post_page(&server.address, page("members", "s-1", page_number, 4, ids)).await;
        assert_eq!(code, 200);
    }
    wait_until_sent(&server.address).await;
    assert_eq!(braze.members(ATTRIBUTE, "77"), braze_ids(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_hostile_bodies_are_refused_and_secrets_stay_out_of_logs() {
    let dir = TempDir::new("cohorts-hostile");
    let (braze_server, braze) = BrazeDouble::start().await;
    let mut server = start_cohorts(
        &dir.join("data"),
        Some(&braze_server.uri()),
        &[("RUST_LOG", "debug")],
    );
    let address = server.address.clone();
    let results = tokio::task::spawn_blocking(move || {
        let ok_page = page("add_members", "s", 1, 1, &users(0..3));
        let wrong = format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode("mixpanel:wrong")
        );
        let mut results = vec![
            ("no credentials", post_to(&address, "/mixpanel/cohorts", "", &ok_page).unwrap()),
            ("wrong credentials", post_to(&address, "/mixpanel/cohorts", &wrong, &ok_page).unwrap()),
        ];
        let auth = authorization();
        let nested = format!(
            "{{\"action\":\"members\",\"parameters\":{}{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let huge_array = format!(
            "{{\"action\":\"add_members\",\"parameters\":{{\"mixpanel_project_id\":1,\"mixpanel_cohort_id\":2,\"members\":[{}{{}}]}}}}",
            "{},".repeat(200_000)
        );
        let mut ten_megabytes = page("add_members", "s", 1, 1, &users(0..1));
        ten_megabytes.truncate(ten_megabytes.len() - 3);
        let filler = format!(",{{\"mixpanel_distinct_id\":\"{}\"}}", "x".repeat(1000));
        while ten_megabytes.len() < 10 * 1024 * 1024 {
            ten_megabytes.extend_from_slice(filler.as_bytes());
        }
        ten_megabytes.extend_from_slice(b"]}}");
        let hostile: Vec<(&str, Vec<u8>)> = vec![
            ("deep nesting", nested.into_bytes()),
            ("huge array", huge_array.into_bytes()),
            ("invalid UTF-8", b"{\"action\":\"members\xff\xfe\"}".to_vec()),
            ("10 MB of members", ten_megabytes),
        ];
        for (label, body) in hostile {
            results.push((label, post_to(&address, "/mixpanel/cohorts", &auth, &body).unwrap()));
        }
        results
    })
    .await
    .unwrap();
    let codes: Vec<(&str, u16)> = results
        .iter()
        .map(|(label, (code, _))| (*label, *code))
        .collect();
    assert_eq!(
        codes,
        [
            ("no credentials", 401),
            ("wrong credentials", 401),
            ("deep nesting", 400),
            ("huge array", 400),
            ("invalid UTF-8", 400),
            ("10 MB of members", 413),
        ]
    );
    for (label, (_, body)) in &results {
        let answer: Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("{label}: {body}"));
        assert_eq!(answer["status"], "failure", "{label}");
    }
    // Still serving, and nothing reached Braze.
    let (code, _) = post_page(
        &server.address,
        page("add_members", "s", 1, 1, &users(0..3)),
    )
    .await;
    assert_eq!(code, 200);
    wait_until_sent(&server.address).await;
    assert_eq!(braze.members(ATTRIBUTE, "77").len(), 3);
    server.child.kill().unwrap();
    let log = server.wait_for_stderr();
    harness::assert_no_panic(&log);
    assert!(log.contains("DEBUG"), "debug logging was on");
    for secret in [WEBHOOK_PASSWORD, BRAZE_KEY, "previous"] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_the_braze_requests_to_a_file_and_status_reports() {
    let dir = TempDir::new("cohorts-dry-run");
    let data_dir = dir.join("data");
    let server = start_cohorts(&data_dir, None, &[]);
    post_page(
        &server.address,
        page("add_members", "s", 1, 1, &users(0..3)),
    )
    .await;
    post_page(
        &server.address,
        page("remove_members", "s", 1, 1, &users(0..1)),
    )
    .await;
    let file = data_dir.join("dry-run").join("braze-cohorts.ndjson");
    wait_for("the dry-run file", Duration::from_secs(20), || {
        std::fs::read_to_string(&file).is_ok_and(|text| text.contains("\"remove\""))
    });
    let text = std::fs::read_to_string(&file).unwrap();
    let requests = harness::parse_ndjson(&text, "dry-run file");
    let objects: Vec<&Value> = requests
        .iter()
        .flat_map(|request| request["body"]["attributes"].as_array().unwrap())
        .collect();
    assert!(
        requests
            .iter()
            .all(|request| request["endpoint"] == "/users/track")
    );
    assert!(
        objects
            .iter()
            .all(|object| object["_update_existing_only"] == true)
    );
    assert!(objects.iter().any(
        |object| object["external_id"] == "user-2" && object[ATTRIBUTE]["add"] == json!(["77"])
    ));
    wait_until_sent(&server.address).await;
    drop(server);

    let data_dir_text = data_dir.to_str().unwrap();
    let status = harness::run(
        &["cohorts", "status", "--data-dir", data_dir_text, "--json"],
        b"",
    );
    status.assert_success();
    let line: Value = serde_json::from_str(status.stdout.trim()).unwrap();
    assert_eq!(line["cohort_id"], "77");
    assert_eq!(line["members"], 2);
    assert_eq!(line["pending_changes"], 0);
}

/// A Mixpanel Query API stand-in: two cohorts, cohort 77 with `ids` (one
/// page), cohort 88 empty.
async fn mixpanel_query(ids: &[String]) -> wiremock::MockServer {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/query/cohorts/list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": 77, "name": "Power users", "count": ids.len(), "is_visible": 1},
            {"id": 88, "name": "Dormant", "count": 0, "is_visible": 0},
        ])))
        .mount(&server)
        .await;
    let results: Vec<Value> = ids
        .iter()
        .map(|id| json!({"$distinct_id": id, "$properties": {}}))
        .collect();
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .and(body_string_contains("%22id%22%3A77"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "page": 0, "page_size": 1000, "session_id": "q", "status": "ok", "results": results,
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/query/engage"))
        .and(body_string_contains("%22id%22%3A88"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "page": 0, "page_size": 1000, "session_id": "q", "status": "ok", "results": [],
        })))
        .mount(&server)
        .await;
    server
}

/// Runs the binary with the Mixpanel service account and the Braze key.
fn run_cohorts_cli(args: &[&str], mixpanel_url: &str, braze_url: &str) -> harness::Run {
    let mut command = std::process::Command::new(harness::binary());
    command
        .args(args)
        .env_remove("BRIDGE_CONFIG")
        .env("MIXPANEL_API_URL", mixpanel_url)
        .env("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "e2e.sa")
        .env(
            "MIXPANEL_SERVICE_ACCOUNT_SECRET",
            "e2e-sa-secret-never-logged",
        )
        .env("MIXPANEL_PROJECT_ID", "31337")
        .env("MIXPANEL_PROJECT_TOKEN", "e2e-project-token")
        .env("BRAZE_REST_API_KEY", BRAZE_KEY)
        .env("BRAZE_API_URL", braze_url);
    let output = command.output().expect("the binary runs");
    harness::Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        rejects: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohorts_list_and_sync_pull_from_mixpanel_and_write_to_braze() {
    let dir = TempDir::new("cohorts-cli");
    let data_dir = dir.join("data");
    let data_dir_text = data_dir.to_str().unwrap().to_owned();
    let (braze_server, braze) = BrazeDouble::start().await;
    let braze_url = braze_server.uri();
    let mixpanel = mixpanel_query(&users(0..5)).await;
    let mixpanel_url = mixpanel.uri();

    let (listed, dry_run, requests_after_dry_run, synced) = tokio::task::spawn_blocking({
        let (data_dir, mixpanel_url, braze_url) = (
            data_dir_text.clone(),
            mixpanel_url.clone(),
            braze_url.clone(),
        );
        let braze = braze.clone();
        move || {
            let listed = run_cohorts_cli(&["cohorts", "list"], &mixpanel_url, &braze_url);
            let dry_run = run_cohorts_cli(
                &[
                    "cohorts",
                    "sync",
                    "--data-dir",
                    &data_dir,
                    "--cohort",
                    "77",
                    "--dry-run",
                ],
                &mixpanel_url,
                &braze_url,
            );
            let requests_after_dry_run = braze.requests();
            let synced = run_cohorts_cli(
                &["cohorts", "sync", "--data-dir", &data_dir],
                &mixpanel_url,
                &braze_url,
            );
            (listed, dry_run, requests_after_dry_run, synced)
        }
    })
    .await
    .unwrap();
    listed.assert_success();
    assert!(
        listed.stdout.contains("77") && listed.stdout.contains("Power users"),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("Dormant"));

    // The dry run prints the requests and changes nothing.
    dry_run.assert_success();
    let requests = harness::parse_ndjson(&dry_run.stdout, "dry-run requests");
    assert_eq!(
        requests[0]["body"]["attributes"].as_array().unwrap().len(),
        5
    );
    assert_eq!(requests_after_dry_run, 0, "{}", dry_run.stderr);

    synced.assert_success();
    assert!(synced.stderr.contains("5 added"), "{}", synced.stderr);
    assert_eq!(braze.members(ATTRIBUTE, "77"), braze_ids(&users(0..5)));
    for secret in [BRAZE_KEY, "e2e-sa-secret-never-logged"] {
        assert!(!synced.stderr.contains(secret));
    }

    // The same pull as a schedule inside `serve`: cohort 77 shrank.
    drop(mixpanel);
    let mixpanel = mixpanel_query(&users(0..2)).await;
    let mut command_env = vec![
        ("BRAZE_REST_API_KEY", BRAZE_KEY),
        ("BRAZE_API_URL", braze_url.as_str()),
        ("BRIDGE_COHORT_PULL_INTERVAL_SECS", "60"),
        ("BRIDGE_COHORT_PULL_COHORTS", "77"),
    ];
    let mixpanel_uri = mixpanel.uri();
    command_env.push(("MIXPANEL_API_URL", mixpanel_uri.as_str()));
    let server = start_with(&data_dir, free_port(), Some(&mixpanel_uri), &command_env);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while braze.members(ATTRIBUTE, "77") != braze_ids(&users(0..2)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            braze.members(ATTRIBUTE, "77")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
    let status = harness::run(&["cohorts", "status", "--data-dir", &data_dir_text], b"");
    status.assert_success();
    assert!(status.stdout.contains("31337/77"), "{}", status.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partner_writer_through_serve_keeps_its_keys_out_of_the_log() {
    const PARTNER_KEY: &str = "partner-key-never-logged";
    const IMPORT_KEY: &str = "data-import-key-never-logged";
    let dir = TempDir::new("cohorts-partner");
    let (braze_server, braze) = BrazeDouble::start().await;
    let credentials = format!("mixpanel:{WEBHOOK_PASSWORD}");
    let braze_url = braze_server.uri();
    let mut server = start_with(
        &dir.join("data"),
        free_port(),
        Some("http://127.0.0.1:9"),
        &[
            ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", &credentials),
            ("BRIDGE_COHORT_WRITER", "partner"),
            ("BRAZE_PARTNER_NAME", "acme"),
            ("BRAZE_PARTNER_API_KEY", PARTNER_KEY),
            ("BRAZE_DATA_IMPORT_KEY", IMPORT_KEY),
            ("BRAZE_API_URL", &braze_url),
            ("RUST_LOG", "debug"),
        ],
    );
    post_page(
        &server.address,
        page("add_members", "s", 1, 1, &users(0..4)),
    )
    .await;
    post_page(
        &server.address,
        page("remove_members", "s", 1, 1, &users(0..1)),
    )
    .await;
    wait_until_sent(&server.address).await;
    assert_eq!(braze.partner_name("77").as_deref(), Some("Power users"));
    assert_eq!(
        braze.partner_members("77"),
        users(1..4).into_iter().collect::<BTreeSet<_>>()
    );
    server.child.kill().unwrap();
    let log = server.wait_for_stderr();
    for secret in [PARTNER_KEY, IMPORT_KEY, WEBHOOK_PASSWORD] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}
