//! `serve` with an archive (`BRIDGE_ARCHIVE_URL`), end to end: batches
//! posted plain and gzip-compressed from two workspaces are delivered to a
//! wiremock Mixpanel and archived, and `backfill --dry-run` on the archive
//! yields exactly the events `serve` delivered; an archive that cannot be
//! written holds delivery back until it can; a location `serve` cannot open
//! stops it at start, naming the setting; `check-config` shows the archive
//! and `--connect` opens it.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request};

use crate::harness::{self, TempDir};
use crate::serve::{Server, TOKEN, batch, free_port, post_to, start_with};
use crate::serve_faults::{Imported, get_async, ids, ok_body, wait_delivered, wait_for_status};

/// A Mixpanel that imports everything, recording each `$insert_id`.
async fn mixpanel() -> (MockServer, Imported) {
    let server = MockServer::start().await;
    let imported = Imported::default();
    Mock::given(method("POST"))
        .and(path("/import"))
        .respond_with({
            let imported = imported.clone();
            move |request: &Request| ok_body(request, &imported)
        })
        .mount(&server)
        .await;
    (server, imported)
}

/// Starts `serve` on `data_dir`, archiving to `archive`, delivering to `uri`.
async fn start_archiving(data_dir: &Path, archive: &Path, uri: &str) -> Server {
    let data_dir = data_dir.to_owned();
    let archive = archive.to_str().unwrap().to_owned();
    let uri = uri.to_owned();
    tokio::task::spawn_blocking(move || {
        start_with(
            &data_dir,
            free_port(),
            Some(&uri),
            &[("BRIDGE_ARCHIVE_URL", &archive), ("RUST_LOG", "info")],
        )
    })
    .await
    .unwrap()
}

/// Posts `body` to `/currents?workspace=<workspace>` (no query without
/// one), gzip-compressed when asked, and checks that it is accepted.
fn post(address: &str, workspace: Option<&str>, body: &str, gzip: bool) {
    let target = match workspace {
        Some(workspace) => format!("/currents?workspace={workspace}"),
        None => "/currents".to_owned(),
    };
    let mut headers = format!("Authorization: Bearer {TOKEN}\r\n");
    let bytes = if gzip {
        headers.push_str("Content-Encoding: gzip\r\n");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(body.as_bytes()).unwrap();
        encoder.finish().unwrap()
    } else {
        body.as_bytes().to_vec()
    };
    let (status, answer) = post_to(address, &target, &headers, &bytes).unwrap();
    assert_eq!(status, 200, "{answer}");
}

/// The keys of the files under `dir`, relative to it, sorted.
fn archived_keys(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, keys: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, keys);
            } else {
                let key = path.strip_prefix(root).unwrap().to_str().unwrap();
                keys.push(key.to_owned());
            }
        }
    }
    let mut keys = Vec::new();
    walk(dir, dir, &mut keys);
    keys.sort();
    keys
}

/// The `$insert_id`s a `backfill --dry-run` of `archive` would send.
fn backfill_dry_run(dir: &TempDir, archive: &Path) -> BTreeSet<String> {
    let out = dir.join("backfill-out");
    let data_dir = dir.join("backfill-data");
    let run = harness::run_with_env(
        &[
            "backfill",
            "--dry-run",
            "--out",
            out.to_str().unwrap(),
            archive.to_str().unwrap(),
        ],
        &[
            ("MIXPANEL_PROJECT_TOKEN", "e2e-project-token"),
            ("BRIDGE_DATA_DIR", data_dir.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let mut insert_ids = BTreeSet::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "dead-letters.ndjson" {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.trim().is_empty(), "dead letters: {text}");
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for event in harness::parse_ndjson(&text, "a dry run's events") {
            let id = event["properties"]["$insert_id"].as_str().unwrap();
            assert!(insert_ids.insert(id.to_owned()), "{id} twice");
        }
    }
    insert_ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_serve_delivered_is_archived_and_backfill_reads_it_back() {
    let (mixpanel, imported) = mixpanel().await;
    let dir = TempDir::new("serve-archive");
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let server = start_archiving(&dir.join("data"), &archive, &mixpanel.uri()).await;

    // Plain and gzip, two workspaces and none, as Braze posts them.
    let posts = [
        (Some("brand-a"), ids("a-plain", 3), false),
        (Some("brand-a"), ids("a-gzip", 4), true),
        (Some("brand-b"), ids("b-gzip", 2), true),
        (Some("brand-b"), ids("b-plain", 5), false),
        (None, ids("none", 1), false),
    ];
    let mut expected = BTreeSet::new();
    for (workspace, ids, gzip) in &posts {
        let address = server.address.clone();
        let body = batch(ids);
        let (workspace, gzip) = (workspace.map(str::to_owned), *gzip);
        tokio::task::spawn_blocking(move || post(&address, workspace.as_deref(), &body, gzip))
            .await
            .unwrap();
        expected.extend(ids.iter().cloned());
    }
    wait_delivered(&imported, &expected, Duration::from_secs(30)).await;

    let status = wait_for_status(&server.address, Duration::from_secs(10), |status| {
        status["archive"]["batches_written"] == posts.len()
    })
    .await;
    assert_eq!(status["archive"]["url"], archive.to_str().unwrap());
    assert_eq!(status["archive"]["batches_failed"], 0);
    let (_, metrics) = get_async(&server.address, "/metrics").await;
    for line in [
        "bridge_archive_batches_total{outcome=\"written\"} 5",
        "bridge_archive_batches_total{outcome=\"failed\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // One object per batch, under its hour and workspace.
    let keys = archived_keys(&archive);
    assert_eq!(keys.len(), posts.len(), "{keys:?}");
    let in_workspace = |name: &str| {
        keys.iter()
            .filter(|key| key.contains(&format!("/workspace={name}/")))
            .count()
    };
    assert_eq!(
        (
            in_workspace("brand-a"),
            in_workspace("brand-b"),
            in_workspace("_")
        ),
        (2, 2, 1),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|key| key.starts_with("date=") && key.ends_with(".json.gz")),
        "{keys:?}"
    );

    // What backfill reads back is exactly what serve delivered.
    let delivered = imported.lock().unwrap().clone();
    assert_eq!(delivered, expected);
    let dir_for_backfill = TempDir::new("serve-archive-backfill");
    let archive_for_backfill = archive.clone();
    let backfilled = tokio::task::spawn_blocking(move || {
        backfill_dry_run(&dir_for_backfill, &archive_for_backfill)
    })
    .await
    .unwrap();
    assert_eq!(backfilled, delivered);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_that_cannot_be_written_holds_delivery_back_until_it_can() {
    let (mixpanel, imported) = mixpanel().await;
    let dir = TempDir::new("serve-archive-outage");
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let mut server = start_archiving(&dir.join("data"), &archive, &mixpanel.uri()).await;

    // A file where the archive's directory was: every write fails, for
    // root too.
    std::fs::remove_dir(&archive).unwrap();
    std::fs::write(&archive, b"in the way").unwrap();
    let address = server.address.clone();
    let ids = ids("held", 3);
    let body = batch(&ids);
    tokio::task::spawn_blocking(move || post(&address, Some("brand-a"), &body, false))
        .await
        .unwrap();
    wait_for_status(&server.address, Duration::from_secs(20), |status| {
        status["archive"]["batches_failed"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        mixpanel.received_requests().await.unwrap().is_empty(),
        "nothing is sent before it is archived"
    );

    // The store is back: the batch is archived, then delivered (its retry
    // comes 5 s after the failure, then 10 s, …).
    std::fs::remove_file(&archive).unwrap();
    std::fs::create_dir(&archive).unwrap();
    let expected: BTreeSet<String> = ids.into_iter().collect();
    wait_delivered(&imported, &expected, Duration::from_secs(60)).await;
    let keys = archived_keys(&archive);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].contains("/workspace=brand-a/"), "{keys:?}");

    server.child.kill().unwrap();
    let stderr = tokio::task::spawn_blocking(move || server.wait_for_stderr())
        .await
        .unwrap();
    // (The episode's end is logged with the first success 10 s or more
    // after its start: later than this test goes.)
    for line in [
        "Every batch is archived, as received, before it is delivered.",
        "Cannot archive a batch now",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
}

#[test]
fn serve_does_not_start_on_an_archive_it_cannot_open() {
    let dir = TempDir::new("serve-archive-missing");
    let missing = dir.join("no-such-archive");
    let data_dir = dir.join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let ops_listen = format!("127.0.0.1:{}", free_port());
    let run = harness::run_with_env(
        &["serve", "--dry-run"],
        &[
            ("BRIDGE_CURRENTS_TOKENS", TOKEN),
            ("BRIDGE_LISTEN", &listen),
            ("BRIDGE_OPS_LISTEN", &ops_listen),
            ("BRIDGE_DATA_DIR", data_dir.to_str().unwrap()),
            ("BRIDGE_ARCHIVE_URL", missing.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot open the archive of archive.url")
            && run.stderr.contains("create the directory first"),
        "{}",
        run.stderr
    );

    // A form that cannot be an archive is refused by the configuration.
    let run = harness::run_with_env(
        &["check-config"],
        &[
            ("BRIDGE_CURRENTS_TOKENS", TOKEN),
            ("MIXPANEL_PROJECT_TOKEN", "e2e-project-token"),
            ("BRIDGE_ARCHIVE_URL", "ftp://archive.example/currents"),
        ],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("BRIDGE_ARCHIVE_URL: expected a directory, or a file://"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_config_shows_the_archive_and_connect_opens_it() {
    let dir = TempDir::new("serve-archive-check");
    let archive = dir.join("archive");
    let archive_text = archive.to_str().unwrap();
    let data_dir = dir.join("data");
    let vars = [
        ("BRIDGE_CURRENTS_TOKENS", TOKEN),
        ("MIXPANEL_PROJECT_TOKEN", "e2e-project-token"),
        ("BRIDGE_DATA_DIR", data_dir.to_str().unwrap()),
        ("BRIDGE_ARCHIVE_URL", archive_text),
    ];
    let run = harness::run_with_env(&["check-config"], &vars);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "\n[archive]\nurl = \"{archive_text}\"  # from BRIDGE_ARCHIVE_URL\n"
        )),
        "{}",
        run.stdout
    );

    // The directory does not exist yet: serve would not start.
    let run = harness::run_with_env(&["check-config", "--connect"], &vars);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "# archive.url: invalid archive location {archive_text:?}: "
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1 problem(s) found by --connect"),
        "{}",
        run.stderr
    );

    std::fs::create_dir(&archive).unwrap();
    let run = harness::run_with_env(&["check-config", "--connect"], &vars);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("# archive {archive_text}: opens (nothing written")),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_dir(&archive).unwrap().count(),
        0,
        "--connect writes nothing"
    );
}
