//! `backfill` end to end: Avro archives written by the tests in Braze's
//! layout (`currents_archive::fixtures`), read from a directory, mapped and
//! sent to a wiremock Mixpanel that counts every `$insert_id`; a dry run
//! against the real run, pruning by type and hour, a second run that sends
//! nothing, `kill -9` half-way and a resume that loses nothing, Mixpanel's
//! refusals in `dlq`, damaged, empty and untyped files reported, and the
//! same day read from an S3 prefix (moto's server) as from a directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use currents_archive::avro::Codec;
use currents_archive::fixtures::moto::MotoServer;
use currents_archive::fixtures::{self, AvroFixture};
use currents_archive::layout::Prune;
use currents_archive::store::ArchiveStore;
use currents_model::EventType;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{self, Run, TempDir};
use crate::serve::events_in;

/// How many times Mixpanel imported each `$insert_id`.
type Counted = Arc<Mutex<BTreeMap<String, u32>>>;

/// 2026-11-27T10:00:00Z and the hour after.
const HOUR_A: i64 = 1_795_773_600;
const HOUR_B: i64 = HOUR_A + 3600;

fn insert_id(event: &Value) -> String {
    event["properties"]["$insert_id"]
        .as_str()
        .expect("every event has an $insert_id")
        .to_owned()
}

/// A Mixpanel `/import` that takes everything after `delay`, counting each
/// `$insert_id`, except events whose `$insert_id` is in `refuse`.
async fn mixpanel(delay: Duration, refuse: Vec<String>) -> (MockServer, Counted) {
    let server = MockServer::start().await;
    let counted = Counted::default();
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let counted = Arc::clone(&counted);
            move |request: &Request| {
                let events = events_in(request);
                let mut failed = Vec::new();
                let mut counted = counted.lock().unwrap();
                for (index, event) in events.iter().enumerate() {
                    let id = insert_id(event);
                    if refuse.contains(&id) {
                        failed.push(json!({"index": index, "$insert_id": id, "field": "properties.time", "message": "'properties.time' is invalid"}));
                    } else {
                        *counted.entry(id).or_default() += 1;
                    }
                }
                let template = if failed.is_empty() {
                    ResponseTemplate::new(200).set_body_json(
                        json!({"code": 200, "num_records_imported": events.len(), "status": "OK"}),
                    )
                } else {
                    ResponseTemplate::new(400).set_body_json(json!({
                        "code": 400, "error": "some data points in the request failed validation",
                        "num_records_imported": events.len() - failed.len(),
                        "status": "Bad Request", "failed_records": failed,
                    }))
                };
                template.set_delay(delay)
            }
        })
        .mount(&server)
        .await;
    (server, counted)
}

/// Writes Avro files of a production mix of types, two hours of them,
/// under `dir` in Braze's layout; returns how many files.
fn write_archive(dir: &Path, n_events_per_hour: usize) -> usize {
    let mut objects = Vec::new();
    for (hour_idx, hour) in [HOUR_A, HOUR_B].into_iter().enumerate() {
        let seed = 7 + hour_idx as u64;
        for (seq, (event_type, _, file)) in
            fixtures::production_files(n_events_per_hour, seed, Codec::Deflate)
                .into_iter()
                .enumerate()
        {
            let key = fixtures::braze_key("currents", event_type.name(), hour, seq as u32);
            objects.push((key, file));
        }
    }
    fixtures::write_objects(dir, &objects).unwrap();
    objects.len()
}

fn vars<'a>(mixpanel: &'a str, data_dir: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MIXPANEL_API_URL", mixpanel),
        ("MIXPANEL_PROJECT_TOKEN", harness::TOKEN),
        ("BRIDGE_DATA_DIR", data_dir),
    ]
}

/// The `$insert_id`s of a dry run's NDJSON files.
fn dry_run_ids(out: &Path) -> BTreeMap<String, u32> {
    let mut ids = BTreeMap::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "dead-letters.ndjson" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for event in harness::parse_ndjson(&text, "a dry run's events") {
            harness::assert_mixpanel_event(&event);
            *ids.entry(insert_id(&event)).or_default() += 1;
        }
    }
    ids
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn backfill(args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut all = vec!["backfill"];
    all.extend_from_slice(args);
    harness::run_with_env(&all, vars)
}

#[test]
fn a_backfill_sends_what_its_dry_run_shows_and_a_second_run_sends_nothing() {
    let dir = TempDir::new("backfill-dir");
    let archive = dir.join("archive");
    let n_files = write_archive(&archive, 3_000);
    let archive = archive.to_str().unwrap().to_owned();
    let data_dir = dir.join("data");
    let data_dir = data_dir.to_str().unwrap().to_owned();
    let out = dir.join("dry-run");
    let runtime = runtime();
    let (server, counted) = runtime.block_on(mixpanel(Duration::ZERO, Vec::new()));
    let uri = server.uri();
    let vars = vars(&uri, &data_dir);

    let dry = backfill(
        &["--dry-run", "--out", out.to_str().unwrap(), &archive],
        &vars,
    );
    assert_eq!(dry.code(), 0, "{}", dry.stderr);
    let expected = dry_run_ids(&out);
    assert!(
        expected.len() > 2_000,
        "most events map: {}",
        expected.len()
    );
    assert!(expected.values().all(|n| *n == 1));
    assert!(
        dry.stderr
            .contains(&format!("{n_files} file(s) listed, 0 already done")),
        "{}",
        dry.stderr
    );
    assert!(
        counted.lock().unwrap().is_empty(),
        "a dry run sends nothing"
    );

    let real = backfill(&[&archive], &vars);
    assert_eq!(real.code(), 0, "{}", real.stderr);
    assert_eq!(*counted.lock().unwrap(), expected);
    // The events no one can be told by are skipped, counted.
    assert!(
        real.stderr.contains("skipped no_external_user_id: "),
        "{}",
        real.stderr
    );

    let again = backfill(&[&archive], &vars);
    assert_eq!(again.code(), 0, "{}", again.stderr);
    assert!(
        again.stderr.contains(&format!(
            "{n_files} file(s) listed, {n_files} already done by an earlier run, 0 to read"
        )),
        "{}",
        again.stderr
    );
    assert_eq!(*counted.lock().unwrap(), expected, "nothing sent twice");

    // --again sends it all again (Mixpanel keeps one of each).
    let forced = backfill(&["--again", &archive], &vars);
    assert_eq!(forced.code(), 0, "{}", forced.stderr);
    assert!(counted.lock().unwrap().values().all(|n| *n == 2));
}

#[test]
fn types_and_hours_select_whole_folders() {
    let dir = TempDir::new("backfill-prune");
    let archive = dir.join("archive");
    write_archive(&archive, 2_000);
    let out = dir.join("dry-run");
    let data_dir = dir.join("data");
    let vars = vars("http://127.0.0.1:9", data_dir.to_str().unwrap());
    let run = backfill(
        &[
            "--dry-run",
            "--out",
            out.to_str().unwrap(),
            "--types",
            "users.messages.email.*",
            "--since",
            "2026-11-27-11",
            archive.to_str().unwrap(),
        ],
        &vars,
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    // Only the second hour's email files were listed at all.
    let email_types = EventType::ALL
        .iter()
        .filter(|event_type| event_type.name().starts_with("users.messages.email."))
        .count();
    let listed: u64 = run
        .stderr
        .split("backfill: ")
        .nth(1)
        .and_then(|line| line.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the plan's line");
    assert!(
        listed >= 1 && listed as usize <= email_types,
        "{}",
        run.stderr
    );
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "dead-letters.ndjson" {
            continue;
        }
        assert!(name.contains("event_type=users.messages.email."), "{name}");
        assert!(name.contains("date=2026-11-27-11"), "{name}");
    }
}

#[test]
fn a_backfill_killed_half_way_resumes_without_losing_an_event() {
    let dir = TempDir::new("backfill-kill");
    let archive = dir.join("archive");
    write_archive(&archive, 20_000);
    let archive = archive.to_str().unwrap().to_owned();
    let data_dir = dir.join("data");
    let data_dir = data_dir.to_str().unwrap().to_owned();
    let out = dir.join("dry-run");
    let runtime = runtime();
    // Slow enough that the kill lands with most of the archive unsent.
    let (server, counted) = runtime.block_on(mixpanel(Duration::from_millis(40), Vec::new()));
    let uri = server.uri();
    let vars = vars(&uri, &data_dir);
    let dry = backfill(
        &["--dry-run", "--out", out.to_str().unwrap(), &archive],
        &vars,
    );
    assert_eq!(dry.code(), 0, "{}", dry.stderr);
    let expected = dry_run_ids(&out);

    let concurrency = 4;
    let mut child = harness::command_with_env(
        &[
            "backfill",
            "--concurrency",
            &concurrency.to_string(),
            &archive,
        ],
        &vars,
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted.lock().unwrap().len() < expected.len() / 4 {
        assert!(Instant::now() < deadline, "the backfill made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = counted.lock().unwrap().len();
    assert!(
        before < expected.len(),
        "killed half-way: {before} of {}",
        expected.len()
    );

    let resumed = backfill(
        &["--concurrency", &concurrency.to_string(), &archive],
        &vars,
    );
    assert_eq!(resumed.code(), 0, "{}", resumed.stderr);
    let counted = counted.lock().unwrap().clone();
    let missing: Vec<&String> = expected
        .keys()
        .filter(|id| !counted.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert_eq!(counted.len(), expected.len());
    // Sent twice: at most what was in flight when the process died (each
    // request up to 2,000 events, plus what settled since the last
    // checkpoint); Mixpanel keeps one of each on `$insert_id`.
    let twice = counted.values().filter(|n| **n > 1).count();
    assert!(twice <= (concurrency + 2) * 2_000, "{twice} sent twice");
}

#[test]
fn refusals_go_to_the_dead_letters_and_damaged_files_are_reported() {
    let dir = TempDir::new("backfill-faults");
    let archive = dir.join("archive");
    let good = AvroFixture::new(EventType::MessagesEmailOpen)
        .events(50)
        .seed(3);
    let good_file = good.build();
    let damaged = fixtures::with_flipped_byte(
        &AvroFixture::new(EventType::MessagesEmailClick)
            .events(400)
            .records_per_block(100)
            .codec(Codec::Deflate)
            .build(),
        2,
    );
    let untyped = AvroFixture::new(EventType::MessagesEmailDelivery)
        .events(5)
        .record_name("acme.Thing")
        .build();
    fixtures::write_objects(
        &archive,
        &[
            (
                fixtures::braze_key("c", "users.messages.email.Open", HOUR_A, 1),
                good_file,
            ),
            (
                fixtures::braze_key("c", "users.messages.email.Click", HOUR_A, 2),
                damaged,
            ),
            (
                fixtures::braze_key("c", "users.messages.email.Bounce", HOUR_A, 3),
                Vec::new(),
            ),
            ("c/loose/untyped.avro".to_owned(), untyped),
        ],
    )
    .unwrap();
    let data_dir = dir.join("data");
    let data_dir = data_dir.to_str().unwrap().to_owned();
    let out = dir.join("dry-run");
    let archive = archive.to_str().unwrap().to_owned();
    let runtime = runtime();
    let dry = backfill(
        &["--dry-run", "--out", out.to_str().unwrap(), &archive],
        &vars("http://127.0.0.1:9", &data_dir),
    );
    assert_eq!(dry.code(), 3, "{}", dry.stderr);
    let sent_ids: Vec<String> = dry_run_ids(&out).into_keys().collect();
    // Two of the email opens (the good file's events).
    let opens = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_str().unwrap().contains("email.Open"))
        .expect("the good file's NDJSON");
    let opens = harness::parse_ndjson(&std::fs::read_to_string(opens).unwrap(), "opens");
    assert!(opens.len() >= 40, "{}", opens.len());
    let refused = vec![insert_id(&opens[0]), insert_id(&opens[1])];
    let (server, counted) = runtime.block_on(mixpanel(Duration::ZERO, refused.clone()));
    let uri = server.uri();
    let vars = vars(&uri, &data_dir);

    let run = backfill(&[&archive], &vars);
    assert_eq!(run.code(), 3, "{}", run.stderr);
    for needle in [
        "failed file c/",
        "event_type=users.messages.email.Click",
        "event_type=users.messages.email.Bounce",
        "untyped.avro",
        "2 dead-lettered",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle:?} in:\n{}",
            run.stderr
        );
    }
    assert_eq!(counted.lock().unwrap().len(), sent_ids.len() - 2);
    // The refusals are in the spool's dead letters, with Mixpanel's message.
    let dlq = harness::run_with_env(&["dlq", "list", "--json"], &vars);
    assert_eq!(dlq.code(), 0, "{}", dlq.stderr);
    let letters = harness::parse_ndjson(&dlq.stdout, "dlq list --json");
    assert_eq!(letters.len(), 2, "{}", dlq.stdout);
    for letter in &letters {
        assert_eq!(letter["reason"], "refused_by_mixpanel");
        assert!(
            letter["detail"]
                .as_str()
                .unwrap()
                .contains("properties.time")
        );
        assert_eq!(letter["event_type"], "users.messages.email.Open");
    }
}

#[test]
fn a_day_from_an_s3_prefix_dry_runs_as_from_a_directory() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    moto.create_bucket("acme-currents");
    let dir = TempDir::new("backfill-s3");
    let archive = dir.join("archive");
    write_archive(&archive, 1_000);
    // The same files in the bucket, under the prefix `currents/`.
    let options = moto.s3_options();
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    runtime().block_on(async {
        let bucket = ArchiveStore::open_with_options("s3://acme-currents", &options).unwrap();
        let local = ArchiveStore::open(archive.to_str().unwrap()).unwrap();
        for object in local.list(&Prune::new()).await.unwrap().objects {
            let bytes = local.get(&object).await.unwrap();
            bucket.put(&object.key, bytes).await.unwrap();
        }
    });
    let data_dir = dir.join("data");
    let data_dir = data_dir.to_str().unwrap().to_owned();
    let endpoint = moto.endpoint();
    let mut vars = vars("http://127.0.0.1:9", &data_dir);
    vars.extend([
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ("AWS_REGION", "us-east-1"),
    ]);
    let from_s3 = dir.join("from-s3");
    let from_dir = dir.join("from-dir");
    // The README's line: one day, dry run.
    let day = [
        "--since",
        "2026-11-27",
        "--until",
        "2026-11-28",
        "--dry-run",
        "--out",
    ];
    let mut args: Vec<&str> = day.to_vec();
    args.extend([from_s3.to_str().unwrap(), "s3://acme-currents/currents"]);
    let run = backfill(&args, &vars);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert!(!run.stderr.contains("test-secret-key"), "{}", run.stderr);
    let mut args: Vec<&str> = day.to_vec();
    let local = archive.join("currents");
    args.extend([from_dir.to_str().unwrap(), local.to_str().unwrap()]);
    let run = backfill(&args, &vars);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let (s3_ids, dir_ids) = (dry_run_ids(&from_s3), dry_run_ids(&from_dir));
    assert!(s3_ids.len() > 1_000, "{}", s3_ids.len());
    assert_eq!(s3_ids, dir_ids);
}
