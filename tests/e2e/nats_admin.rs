//! The administration commands on the NATS backend, against real
//! `nats-server`s: `check-config --connect` (what is missing, what matches,
//! what differs, a body cap set over the server's `max_payload`, an unreachable
//! server; and the SQLite data dir), `dlq` and `dlq --cohorts` failing
//! clearly before `serve` created anything, `dlq --cohorts` on cohort dead
//! letters (and `cohorts status`) in NATS key-value buckets printing what
//! it prints on SQLite, and
//! `dlq list|show|replay|purge` on dead letters a NATS-backed `serve`
//! stored, while it runs and after it was killed.
//!
//! JetStream objects are made here only to differ from the configuration
//! (through async-nats) or, for the cohort state, by the library `serve`
//! uses (`cohort_import::store::nats::NatsStore`); the spool's streams are
//! `serve`'s to create.

use std::time::Duration;

use async_nats::jetstream;
use cohort_import::braze::BrazeUser;
use cohort_import::store::nats::NatsStore;
use cohort_import::store::sqlite::SqliteStore;
use cohort_import::store::{
    CohortKey, MembershipPage, MembershipStore, PageKind, PageMember, RefusedChange,
};
use serde_json::{Value, json};

use crate::harness::{self, Run, TempDir};
use crate::nats_harness::Nats;
use crate::serve;

/// What the commands below are given: a token and dry run, so that no
/// Mixpanel credential is needed, and a batch stream small enough for any
/// test machine's disk.
const BASE: [(&str, &str); 3] = [
    ("BRIDGE_CURRENTS_TOKENS", "e2e-token"),
    ("BRIDGE_DRY_RUN", "true"),
    ("BRIDGE_SPOOL_MAX_BYTES", "67108864"),
];

/// The batch stream's size in bytes, as [`BASE`] sets it.
const SPOOL_MAX_BYTES: i64 = 64 << 20;

/// Runs the binary with `args` and none of the service's variables of the
/// test's own environment, plus `vars`.
fn bridge(args: &[&str], vars: &[(&str, &str)]) -> Run {
    harness::run_with_env(args, vars)
}

/// The NATS variables for `url`, on top of [`BASE`] and `extra`.
fn nats_vars<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut vars = BASE.to_vec();
    vars.extend([("BRIDGE_SPOOL", "nats"), ("BRIDGE_NATS_URLS", url)]);
    vars.extend_from_slice(extra);
    vars
}

/// The lines `check-config --connect` appends after the configuration,
/// without their `# `.
fn report(run: &Run) -> Vec<String> {
    let (_, report) = run
        .stdout
        .rsplit_once("\n\n")
        .unwrap_or_else(|| panic!("no report:\n{}", run.stdout));
    report
        .lines()
        .map(|line| {
            line.strip_prefix("# ")
                .unwrap_or_else(|| panic!("not a comment: {line:?}"))
                .to_owned()
        })
        .collect()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    serve::free_port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn jetstream_of(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("connects to NATS"))
}

#[test]
fn check_config_connect_reports_missing_matching_and_differing_objects() {
    let dir = TempDir::new("nats-check-config");
    let Some(nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    let url = nats.urls();
    let credentials = "mixpanel:webhook-password";
    let vars = nats_vars(
        &url,
        &[
            ("BRIDGE_MAX_BODY_BYTES", "1000000"),
            ("BRIDGE_COHORT_WEBHOOK_CREDENTIALS", credentials),
        ],
    );
    let check = || bridge(&["check-config", "--connect"], &vars);

    // Nothing yet: everything is missing, which serve creates.
    let run = check();
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("backend = \"nats\""),
        "the configuration comes first:\n{}",
        run.stdout
    );
    let lines = report(&run);
    assert!(
        lines[0].starts_with("NATS: connected to nats-server 2."),
        "{lines:?}"
    );
    assert!(
        lines[1]
            .starts_with("max_payload: 1048576 bytes, room for ingest.max_body_bytes (1000000)"),
        "{lines:?}"
    );
    let missing: Vec<String> = [
        "stream bridge-batches",
        "consumer bridge-delivery of stream bridge-batches",
        "stream bridge-dead-letters",
        "key-value bucket bridge-cohorts-pages",
        "key-value bucket bridge-cohorts-cohorts",
        "key-value bucket bridge-cohorts-members",
        "key-value bucket bridge-cohorts-journal",
        "key-value bucket bridge-cohorts-deferred",
        "key-value bucket bridge-cohorts-dead-letters",
    ]
    .iter()
    .map(|object| format!("{object}: missing: serve will create it"))
    .collect();
    assert_eq!(lines[2..], missing[..]);
    // Checking created nothing.
    assert_eq!(report(&check()), lines);

    // The cohort state as serve makes it, and the batch stream as the
    // configuration describes it: they match. Then a dead-letter stream
    // with an age limit and a consumer with another ack_wait: mismatches.
    runtime().block_on(async {
        let jetstream = jetstream_of(&url).await;
        NatsStore::open(jetstream.clone(), "bridge-cohorts", 1)
            .await
            .unwrap();
        jetstream
            .create_stream(jetstream::stream::Config {
                name: "bridge-batches".to_owned(),
                subjects: vec!["bridge.batches.>".to_owned()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                discard: jetstream::stream::DiscardPolicy::New,
                max_bytes: SPOOL_MAX_BYTES,
                duplicate_window: Duration::from_secs(120),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let lines = report(&check());
    assert_eq!(lines[2], "stream bridge-batches: exists, settings match");
    assert_eq!(lines[3], missing[1]);
    assert_eq!(lines[4], missing[2]);
    for line in &lines[5..] {
        assert!(line.ends_with(": exists, settings match"), "{line}");
    }

    runtime().block_on(async {
        let jetstream = jetstream_of(&url).await;
        jetstream
            .create_stream(jetstream::stream::Config {
                name: "bridge-dead-letters".to_owned(),
                subjects: vec!["bridge-dead-letters.>".to_owned()],
                max_age: Duration::from_secs(3600),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
        jetstream
            .get_stream("bridge-batches")
            .await
            .unwrap()
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("bridge-delivery".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let run = check();
    assert_eq!(run.code(), 1, "{}\n{}", run.stdout, run.stderr);
    let lines = report(&run);
    assert_eq!(
        lines[3],
        "consumer bridge-delivery of stream bridge-batches: mismatch: ack_wait is 30s, configuration asks 60s (the delivery lease)"
    );
    assert_eq!(
        lines[4],
        "stream bridge-dead-letters: mismatch: limits (max_bytes, max_msgs, max_age) is -1, -1, 3600s, configuration asks none"
    );
    assert!(
        run.stderr
            .contains("2 problem(s) found by --connect (above): serve would not run as configured"),
        "{}",
        run.stderr
    );

    // The lease the configuration asks for matches the consumer.
    let mut with_lease = vars.clone();
    with_lease.push(("BRIDGE_DELIVERY_LEASE_SECS", "30"));
    with_lease.push(("BRIDGE_DELIVERY_MAX_RETRIES", "0"));
    with_lease.push(("BRIDGE_DELIVERY_REQUEST_TIMEOUT_SECS", "30"));
    let run = bridge(&["check-config", "--connect"], &with_lease);
    assert_eq!(
        report(&run)[3],
        "consumer bridge-delivery of stream bridge-batches: exists, settings match"
    );
    assert_eq!(run.code(), 1, "the dead-letter stream still differs");
}

#[test]
fn check_config_connect_fits_the_body_cap_to_the_servers_max_payload() {
    let dir = TempDir::new("nats-max-payload");
    let Some(nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    let url = nats.urls();
    // Left at its default (16 MiB), the body cap follows nats-server's
    // default max_payload (1 MiB).
    let run = bridge(&["check-config", "--connect"], &nats_vars(&url, &[]));
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);
    let lines = report(&run);
    assert_eq!(
        lines[1],
        "max_payload: 1048576 bytes; ingest.max_body_bytes is not set, so the body cap follows it: 1047552 bytes (1024 bytes kept for headers)"
    );
    // Without the cohort import its buckets are not looked at.
    assert_eq!(
        lines.last().unwrap(),
        "key-value buckets bridge-cohorts-*: not used (the cohort import is off)"
    );
    // Set above it, the setting cannot be honoured: a problem.
    let run = bridge(
        &["check-config", "--connect"],
        &nats_vars(&url, &[("BRIDGE_MAX_BODY_BYTES", "16777216")]),
    );
    assert_eq!(run.code(), 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        report(&run)[1],
        "max_payload: mismatch: the server's max_payload is 1048576 bytes, room for a body of 1047552 with 1024 bytes of headers; ingest.max_body_bytes asks 16777216: serve lowers the cap to 1047552 (larger batches get 413 and Braze splits them); raise max_payload on every NATS server (up to 64MB) or set ingest.max_body_bytes to 1047552 at most"
    );
    assert!(
        run.stderr.contains("1 problem(s) found by --connect"),
        "{}",
        run.stderr
    );
    // Exactly what fits passes.
    let run = bridge(
        &["check-config", "--connect"],
        &nats_vars(&url, &[("BRIDGE_MAX_BODY_BYTES", "1047552")]),
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        report(&run)[1],
        "max_payload: 1048576 bytes, room for ingest.max_body_bytes (1047552) and 1024 bytes of headers"
    );
}

#[test]
fn unreachable_nats_fails_check_config_and_dlq_clearly() {
    let url = format!("nats://127.0.0.1:{}", closed_port());
    let vars = nats_vars(&url, &[("BRIDGE_NATS_CONNECT_TIMEOUT_SECS", "1")]);
    let expected = format!("cannot connect to NATS at {url}");
    for args in [
        &["check-config", "--connect"][..],
        &["dlq", "list"],
        &["dlq", "--cohorts", "list"],
    ] {
        let run = bridge(args, &vars);
        assert_eq!(run.code(), 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("braze-mixpanel-bridge: ") && run.stderr.contains(&expected),
            "{args:?}: {}",
            run.stderr
        );
    }
    // Without --connect, check-config does not connect.
    let run = bridge(&["check-config"], &vars);
    assert_eq!(run.code(), 0, "{}", run.stderr);
}

#[test]
fn check_config_connect_on_sqlite_checks_the_data_dir() {
    let dir = TempDir::new("sqlite-check-config");
    let data_dir = dir.join("data");
    let data_dir_text = data_dir.to_str().unwrap();
    let mut vars = BASE.to_vec();
    vars.push(("BRIDGE_DATA_DIR", data_dir_text));
    let run = bridge(&["check-config", "--connect"], &vars);
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(
        report(&run),
        [
            "spool.backend is sqlite: no server to connect to".to_owned(),
            format!(
                "data dir {data_dir_text}: missing: serve will create it (in {}, writable)",
                dir.join("").to_str().unwrap().trim_end_matches('/')
            ),
        ]
    );
    assert!(!data_dir.exists(), "--connect creates nothing");
    std::fs::create_dir(&data_dir).unwrap();
    let run = bridge(&["check-config", "--connect"], &vars);
    assert_eq!(
        report(&run)[1],
        format!("data dir {data_dir_text}: exists and is writable")
    );
    assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), 0);
    let file = dir.write("not-a-dir", "");
    vars.push(("BRIDGE_DATA_DIR", file.to_str().unwrap()));
    let run = bridge(&["check-config", "--connect"], &vars);
    assert_eq!(run.code(), 1);
    assert!(
        report(&run)[1].ends_with(": exists but is not a directory"),
        "{}",
        run.stdout
    );
}

#[test]
fn dlq_on_nats_before_serve_created_anything_says_so() {
    let dir = TempDir::new("nats-dlq-empty");
    let Some(nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    let url = nats.urls();
    // Only the spool's settings are read: no token, no dry run needed.
    let vars = [("BRIDGE_SPOOL", "nats"), ("BRIDGE_NATS_URLS", url.as_str())];
    let run = bridge(&["dlq", "list"], &vars);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "braze-mixpanel-bridge: the NATS spool has no stream bridge-batches and no stream bridge-dead-letters yet: start `serve` once with this configuration to create it (or check nats.stream and nats.dead_letter_stream)"
    );
    let run = bridge(&["dlq", "--cohorts", "list"], &vars);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "the cohort state has no NATS key-value bucket bridge-cohorts-pages, bridge-cohorts-cohorts,"
        ),
        "{}",
        run.stderr
    );
    // Usage errors come before any connection.
    let run = bridge(&["dlq", "replay"], &vars);
    assert_eq!(run.code(), 2, "{}", run.stderr);
    // Nothing was created.
    let run = bridge(
        &["check-config", "--connect"],
        &nats_vars(&url, &[("BRIDGE_MAX_BODY_BYTES", "1000000")]),
    );
    assert!(
        report(&run)[2..]
            .iter()
            .all(|line| line.ends_with("missing: serve will create it")
                || line.starts_with("key-value buckets")),
        "{}",
        run.stdout
    );
}

fn cohort() -> CohortKey {
    CohortKey {
        project_id: "31337".to_owned(),
        cohort_id: "42".to_owned(),
    }
}

/// Three users added to a cohort whose changes Braze refused, as the
/// writer dead-letters them.
async fn cohort_dead_letters<S: MembershipStore>(store: &S) {
    let page = MembershipPage {
        cohort: cohort(),
        cohort_name: "Power users".to_owned(),
        kind: PageKind::Add,
        session_id: "s1".to_owned(),
        page: 1,
        total_pages: Some(1),
        members: ["u1", "u2", "u3"]
            .into_iter()
            .map(|id| PageMember {
                distinct_id: id.to_owned(),
                identity: Ok(BrazeUser::ExternalId(id.to_owned())),
            })
            .collect(),
    };
    store.apply_page(page).await.unwrap();
    let changes = store.due_changes(10).await.unwrap();
    let refused = changes
        .into_iter()
        .enumerate()
        .map(|(idx, change)| RefusedChange {
            change,
            reason: if idx == 1 {
                "unsupported_identity"
            } else {
                "refused_by_braze"
            },
            detail: format!("Braze said no to change {idx}"),
        })
        .collect();
    store.dead_letter(refused).await.unwrap();
}

/// `text` with the times of `dlq` output blanked: RFC 3339 times
/// (`2026-11-28T10:00:00Z`, `…00.123Z`) and the digits of
/// `"dead_lettered_at_ms"` and `"last_sync_ms"`.
fn without_times(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some((key, after)) = ["\"dead_lettered_at_ms\":", "\"last_sync_ms\":"]
            .iter()
            .find_map(|key| Some((key, rest.strip_prefix(key)?)))
        {
            kept.push_str(key);
            kept.push_str(" <ms>");
            rest = after
                .trim_start_matches(' ')
                .trim_start_matches(|c: char| c.is_ascii_digit());
            continue;
        }
        if let Some(len) = time_at(rest) {
            kept.push_str("<time>");
            rest = &rest[len..];
            continue;
        }
        kept.push(c);
        rest = &rest[c.len_utf8()..];
    }
    kept
}

/// The length of the RFC 3339 UTC time `text` starts with, if it does.
fn time_at(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let fits = bytes.len() > shape.len()
        && bytes.iter().zip(shape).all(|(byte, want)| match want {
            b'd' => byte.is_ascii_digit(),
            other => byte == other,
        });
    if !fits {
        return None;
    }
    let mut len = shape.len();
    if bytes[len] == b'.' {
        len += 1 + bytes[len + 1..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
    }
    (bytes.get(len) == Some(&b'Z')).then_some(len + 1)
}

#[test]
fn dlq_cohorts_on_nats_prints_what_it_prints_on_sqlite() {
    let dir = TempDir::new("nats-dlq-cohorts");
    let Some(nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    let url = nats.urls();
    let data_dir = dir.join("data");
    runtime().block_on(async {
        let store = NatsStore::open(jetstream_of(&url).await, "bridge-cohorts", 1)
            .await
            .unwrap();
        cohort_dead_letters(&store).await;
        let sqlite = SqliteStore::open(&data_dir.join("cohorts").join("cohorts.db")).unwrap();
        cohort_dead_letters(&sqlite).await;
    });
    let data_dir_text = data_dir.to_str().unwrap();
    let on_sqlite = [("BRIDGE_DATA_DIR", data_dir_text)];
    let on_nats = [
        ("BRIDGE_SPOOL", "nats"),
        ("BRIDGE_NATS_URLS", url.as_str()),
        // The data dir is not read on NATS.
        ("BRIDGE_DATA_DIR", "/nonexistent"),
    ];
    let script: &[&[&str]] = &[
        &["cohorts", "status"],
        &["dlq", "--cohorts", "list"],
        &["dlq", "--cohorts", "list", "--json"],
        &[
            "dlq",
            "--cohorts",
            "list",
            "--reason",
            "refused_by_braze",
            "--cohort",
            "42",
        ],
        &["dlq", "--cohorts", "show", "2", "99"],
        &[
            "dlq",
            "--cohorts",
            "purge",
            "--reason",
            "unsupported_identity",
        ],
        &[
            "dlq",
            "--cohorts",
            "replay",
            "--reason",
            "unsupported_identity",
        ],
        &["dlq", "--cohorts", "list", "--json"],
        &["cohorts", "status", "--json", "--unmatched", "5"],
        &["dlq", "--cohorts", "purge", "--since", "1d", "--yes"],
        &["dlq", "--cohorts", "list"],
        &["cohorts", "status"],
    ];
    let transcript = |vars: &[(&str, &str)]| -> String {
        let mut text = String::new();
        for all in script {
            let run = bridge(all, vars);
            text.push_str(&format!(
                "$ {}\n[exit {}]\n{}\n[stderr]\n{}\n",
                all.join(" "),
                run.code(),
                without_times(&run.stdout),
                run.stderr
            ));
        }
        text
    };
    let sqlite = transcript(&on_sqlite);
    for needle in [
        "3 shown\n",
        "$ dlq --cohorts show 2 99\n[exit 1]\n{\n  \"attempts\": 1,",
        "braze-mixpanel-bridge: 1 id(s) name no cohort dead letter",
        "braze-mixpanel-bridge: purging deletes 1 matching entry(ies) for good: pass --yes",
        "replayed 1 change(s) into the cohort journal",
        "purged 2 entry(ies)",
        "$ cohorts status\n[exit 0]\nCOHORT ",
        "\"dead_letters\":2,",
    ] {
        assert!(sqlite.contains(needle), "{needle:?} in:\n{sqlite}");
    }
    assert_eq!(transcript(&on_nats), sqlite);
}

/// Waits until `dlq list --json` on `vars` shows `n` entries.
fn wait_for_dead_letters(vars: &[(&str, &str)], n: usize) -> Vec<Value> {
    let mut entries = Vec::new();
    serve::wait_for("the dead letters in NATS", Duration::from_secs(30), || {
        let run = bridge(&["dlq", "list", "--json"], vars);
        if run.code() != 0 {
            return false;
        }
        entries = harness::parse_ndjson(&run.stdout, "dlq list --json");
        entries.len() == n
    });
    entries
}

/// `dlq <args>` on `vars`, which must succeed.
fn dlq_ok(args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut all = vec!["dlq"];
    all.extend_from_slice(args);
    let run = bridge(&all, vars);
    assert_eq!(run.code(), 0, "{all:?}\n{}\n{}", run.stdout, run.stderr);
    run
}

#[test]
fn dlq_lists_shows_replays_and_purges_what_serve_dead_lettered_in_nats() {
    let dir = TempDir::new("nats-dlq-serve");
    let Some(nats) = Nats::single(&dir.join("nats")) else {
        return;
    };
    let url = nats.urls();
    let serve_env = [
        ("BRIDGE_SPOOL", "nats"),
        ("BRIDGE_NATS_URLS", url.as_str()),
        ("BRIDGE_SPOOL_MAX_BYTES", "67108864"),
        ("BRIDGE_MAX_BODY_BYTES", "1000000"),
    ];
    let mut server = serve::start_with(&dir.join("data"), serve::free_port(), None, &serve_env);
    let vars = [("BRIDGE_SPOOL", "nats"), ("BRIDGE_NATS_URLS", url.as_str())];

    let mut no_time = serve::event("no-time");
    no_time.as_object_mut().unwrap().remove("time");
    let body = json!({"events": [serve::event("ok-1"), {"id": "x"}, "junk", no_time]});
    let (code, response) = serve::post_batch(&server.address, &body.to_string()).unwrap();
    assert_eq!(code, 200, "{response}");
    let entries = wait_for_dead_letters(&vars, 3);
    let reasons: Vec<&str> = entries
        .iter()
        .map(|entry| entry["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["missing_event_type", "not_an_object", "missing_time"]
    );
    assert_eq!(entries[0]["event"], json!({"id": "x"}));
    assert_eq!(entries[1]["event"], json!("junk"));

    // serve made everything check-config --connect looks at.
    let run = bridge(
        &["check-config", "--connect"],
        &nats_vars(&url, &[("BRIDGE_MAX_BODY_BYTES", "1000000")]),
    );
    assert_eq!(run.code(), 0, "{}\n{}", run.stdout, run.stderr);
    for line in &report(&run)[2..5] {
        assert!(line.ends_with(": exists, settings match"), "{line}");
    }

    // list: the table and its count; show; filters.
    let table = dlq_ok(&["list"], &vars);
    assert_eq!(table.stdout.lines().count(), 5, "{}", table.stdout);
    assert_eq!(table.stdout.lines().last(), Some("3 shown of 3 matching"));
    let id = entries[2]["id"].to_string();
    let shown: Value = serde_json::from_str(&dlq_ok(&["show", &id], &vars).stdout).unwrap();
    assert_eq!(shown, entries[2]);
    let only = dlq_ok(&["list", "--json", "--reason", "missing_event_type"], &vars);
    assert_eq!(only.stderr.trim(), "1 shown of 1 matching");

    // replay: back into the batch stream; still invalid, it comes back.
    let replayed = dlq_ok(&["replay", "--reason", "missing_event_type"], &vars);
    assert_eq!(
        replayed.stdout.trim(),
        "replayed 1 event(s) in 1 batch(es) into the spool"
    );
    let after = wait_for_dead_letters(&vars, 3);
    assert_eq!(after[..2], entries[1..]);
    assert_eq!(after[2]["reason"], "missing_event_type");
    assert!(after[2]["id"].as_i64() > entries[2]["id"].as_i64());

    // purge; then, serve killed, NATS still holds the rest.
    let purged = dlq_ok(
        &["purge", "--id", &after[0]["id"].to_string(), "--yes"],
        &vars,
    );
    assert_eq!(purged.stdout.trim(), "purged 1 entry(ies)");
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    drop(server);
    let left = dlq_ok(&["list"], &vars);
    assert_eq!(left.stdout.lines().last(), Some("2 shown of 2 matching"));
    let purged = dlq_ok(&["purge", "--since", "1d", "--yes"], &vars);
    assert_eq!(purged.stdout.trim(), "purged 2 entry(ies)");
}
