//! `import` end to end: the real binary sends to a wiremock stand-in for
//! Mixpanel's `/import`, and every record ends imported or in `--failed`.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{self, TempDir};

const SECRET: &str = "e2e-service-account-secret-7Qx";

/// What one `import` run produced.
struct ImportRun {
    code: i32,
    stderr: String,
}

/// Runs `import` with service-account credentials against `server`.
async fn import(server: &MockServer, args: &[&str], stdin: Vec<u8>) -> ImportRun {
    let uri = server.uri();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(harness::binary())
            .arg("import")
            .args(&args)
            .env("MIXPANEL_API_URL", uri)
            .env("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "e2e.bridge.sa")
            .env("MIXPANEL_SERVICE_ACCOUNT_SECRET", SECRET)
            .env("MIXPANEL_PROJECT_ID", "2718281")
            .env_remove("MIXPANEL_API_SECRET")
            .env_remove("MIXPANEL_PROJECT_TOKEN")
            .env_remove("MIXPANEL_REGION")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut child_stdin = child.stdin.take().expect("stdin is piped");
        let writer = std::thread::spawn(move || {
            let _ = child_stdin.write_all(&stdin);
        });
        let output = child
            .wait_with_output()
            .expect("the binary can be waited for");
        writer.join().expect("the writer does not panic");
        ImportRun {
            code: output.status.code().expect("the binary exits normally"),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("the blocking task completes")
}

/// The events in a request body, gunzipped when it says so.
fn events_in(request: &Request) -> Vec<Value> {
    let body = if request
        .headers
        .get("content-encoding")
        .is_some_and(|value| value == "gzip")
    {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&request.body[..])
            .read_to_end(&mut text)
            .expect("the body is gzip");
        text
    } else {
        request.body.clone()
    };
    serde_json::from_slice(&body).expect("the body is a JSON array")
}

/// A Mixpanel that imports everything except events whose `$insert_id` is
/// `refused_insert_id`, which it reports as a failed record.
async fn mixpanel(refused_insert_id: &'static str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with(move |request: &Request| {
            let events = events_in(request);
            let failed: Vec<Value> = events
                .iter()
                .enumerate()
                .filter(|(_, event)| event["properties"]["$insert_id"] == refused_insert_id)
                .map(|(idx, _)| json!({"index": idx, "$insert_id": refused_insert_id, "field": "properties.time", "message": "'properties.time' is invalid"}))
                .collect();
            if failed.is_empty() {
                ResponseTemplate::new(200).set_body_json(json!({"code": 200, "num_records_imported": events.len(), "status": "OK"}))
            } else {
                ResponseTemplate::new(400).set_body_json(json!({"code": 400, "num_records_imported": events.len() - failed.len(), "failed_records": failed}))
            }
        })
        .mount(&server)
        .await;
    server
}

async fn received_insert_ids(server: &MockServer) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for request in server
        .received_requests()
        .await
        .expect("requests are recorded")
    {
        assert_eq!(
            request
                .url
                .query_pairs()
                .find(|(key, _)| key == "project_id")
                .map(|(_, value)| value.into_owned()),
            Some("2718281".to_owned())
        );
        for event in events_in(&request) {
            ids.push(
                event["properties"]["$insert_id"]
                    .as_str()
                    .expect("insert id")
                    .to_owned(),
            );
        }
    }
    ids.sort();
    ids
}

/// Every fixture through `transform`, as the NDJSON `import` reads.
fn transformed_fixtures() -> String {
    let mut input = String::new();
    let mut fixtures: Vec<_> = std::fs::read_dir(harness::fixtures_dir())
        .expect("fixtures exist")
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.to_string_lossy().ends_with(".json"))
        .collect();
    fixtures.sort();
    for fixture in fixtures {
        input.push_str(&std::fs::read_to_string(fixture).expect("readable"));
        input.push('\n');
    }
    let run = harness::transform_with("-", input.as_bytes(), &[]);
    run.assert_success();
    run.stdout
}

fn insert_ids(ndjson: &str) -> Vec<String> {
    let mut ids: Vec<String> = harness::parse_ndjson(ndjson, "events")
        .iter()
        .map(|event| {
            event["properties"]["$insert_id"]
                .as_str()
                .expect("insert id")
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_then_import_delivers_every_event() {
    let events = transformed_fixtures();
    let expected = insert_ids(&events);
    assert!(
        expected.len() > 100,
        "a realistic number of events: {}",
        expected.len()
    );
    let server = mixpanel("no-such-insert-id").await;
    let dir = TempDir::new("import-all");
    let failed_path = dir.join("failed.ndjson");
    let run = import(
        &server,
        &[
            "--batch-size",
            "25",
            "--failed",
            failed_path.to_str().unwrap(),
        ],
        events.into_bytes(),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(received_insert_ids(&server).await, expected);
    assert_eq!(std::fs::read_to_string(&failed_path).unwrap(), "");
    assert!(
        run.stderr.contains(&format!("{} imported", expected.len())),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_invalid_records_are_written_out_and_exit_3() {
    let events = transformed_fixtures();
    let mut lines: Vec<&str> = events.lines().collect();
    let refused: Value = serde_json::from_str(lines[7]).unwrap();
    let refused_id: &'static str = refused["properties"]["$insert_id"]
        .as_str()
        .unwrap()
        .to_owned()
        .leak();
    lines.insert(3, "this line is not JSON");
    lines.insert(5, "[1, 2]");
    let input = lines.join("\n");
    let server = mixpanel(refused_id).await;
    let dir = TempDir::new("import-failed");
    let failed_path = dir.join("failed.ndjson");
    let run = import(
        &server,
        &[
            "--batch-size",
            "10",
            "--failed",
            failed_path.to_str().unwrap(),
        ],
        input.into_bytes(),
    )
    .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    let failed = harness::parse_ndjson(&std::fs::read_to_string(&failed_path).unwrap(), "failed");
    let summary: Vec<(String, u64, String)> = failed
        .iter()
        .map(|line| {
            (
                line["reason"].as_str().unwrap().to_owned(),
                line["line"].as_u64().unwrap(),
                line["file"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("invalid_json".to_owned(), 4, "-".to_owned()),
            ("invalid_json".to_owned(), 6, "-".to_owned()),
            ("refused_by_mixpanel".to_owned(), 10, "-".to_owned()),
        ]
    );
    assert_eq!(failed[2]["event"], refused);
    assert_eq!(failed[2]["field"], "properties.time");
    assert_eq!(failed[2]["detail"], "'properties.time' is invalid");
    assert_eq!(failed[0]["event"], "this line is not JSON");
    // Everything else reached Mixpanel (the refused event was sent, then refused).
    let n_events = events.lines().count();
    assert_eq!(received_insert_ids(&server).await.len(), n_events);
    assert!(
        run.stderr.contains("failed refused_by_mixpanel: 1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("failed invalid_json: 2"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_files_and_json_arrays_are_read() {
    let events = transformed_fixtures();
    let values = harness::parse_ndjson(&events, "events");
    let (first, second) = values.split_at(values.len() / 2);
    let dir = TempDir::new("import-files");
    let array_path = dir.write("first.json", serde_json::to_string_pretty(&first).unwrap());
    let gz_path = dir.join("second.ndjson.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz_path).unwrap(),
        flate2::Compression::default(),
    );
    encoder
        .write_all(harness::ndjson(second).as_bytes())
        .unwrap();
    encoder.finish().unwrap();
    let server = mixpanel("no-such-insert-id").await;
    let run = import(
        &server,
        &[array_path.to_str().unwrap(), gz_path.to_str().unwrap()],
        Vec::new(),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(received_insert_ids(&server).await, insert_ids(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_the_import_with_exit_1() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}),
        ))
        .mount(&server)
        .await;
    let events = transformed_fixtures();
    let run = import(
        &server,
        &["--batch-size", "5", "--concurrency", "2"],
        events.into_bytes(),
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(SECRET), "{}", run.stderr);
    let requests = server.received_requests().await.unwrap().len();
    assert!(
        requests <= 4,
        "stops soon after the first refusal, sent {requests}"
    );
}

#[test]
fn missing_credentials_are_a_clear_error() {
    let output = Command::new(harness::binary())
        .args(["import", "-"])
        .env_remove("MIXPANEL_SERVICE_ACCOUNT_USERNAME")
        .env_remove("MIXPANEL_SERVICE_ACCOUNT_SECRET")
        .env_remove("MIXPANEL_API_SECRET")
        .env_remove("MIXPANEL_PROJECT_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no Mixpanel credentials"), "{stderr}");
}
