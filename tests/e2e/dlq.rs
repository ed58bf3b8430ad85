//! `dlq` end to end: invalid events posted to a dry-run `serve` end in the
//! dead letters; `dlq list`, `show`, `replay` and `purge` work on them while
//! the server runs and after it was killed, with only the data directory
//! configured (no token, no credentials).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{self, Run, TempDir};
use crate::serve::{self, Server};

/// Runs `braze-mixpanel-bridge dlq <args>` with none of the service's
/// variables set (so no token), plus `vars`.
fn dlq_with(args: &[&str], vars: &[(&str, &Path)]) -> Run {
    let mut command = Command::new(harness::binary());
    command
        .arg("dlq")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("BRIDGE_") || key.starts_with("MIXPANEL_") {
            command.env_remove(key);
        }
    }
    for (key, value) in vars {
        command.env(key, value);
    }
    let output = command.output().expect("the binary runs");
    let run = Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        rejects: String::new(),
    };
    harness::assert_no_panic(&run.stderr);
    run
}

/// `dlq <args> --data-dir <data_dir>`, which must succeed.
fn dlq_ok(data_dir: &Path, args: &[&str]) -> Run {
    let data_dir = data_dir.to_str().expect("a UTF-8 path");
    let mut all = args.to_vec();
    all.extend(["--data-dir", data_dir]);
    let run = dlq_with(&all, &[]);
    assert_eq!(
        run.code(),
        0,
        "dlq {args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// The entries `dlq list --json` prints, and its count line.
fn list_json(data_dir: &Path, extra: &[&str]) -> (Vec<Value>, String) {
    let mut args = vec!["list", "--json"];
    args.extend(extra);
    let run = dlq_ok(data_dir, &args);
    (
        harness::parse_ndjson(&run.stdout, "dlq list --json"),
        run.stderr.trim().to_owned(),
    )
}

fn status(server: &Server) -> Value {
    let (code, body) = serve::get(&server.address, "/status").expect("GET /status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/status is JSON")
}

/// Waits until delivery has dead-lettered `n` events in all and the spool
/// holds no batch.
fn wait_for_dead_lettered(server: &Server, n: u64) {
    serve::wait_for(
        "the invalid events to be dead-lettered",
        Duration::from_secs(20),
        || {
            let status = status(server);
            status["dead_lettered_events"] == n && status["spool"]["batches"] == 0
        },
    );
}

#[test]
fn dead_letters_are_listed_shown_replayed_and_purged_while_serve_runs_and_after() {
    let dir = TempDir::new("dlq");
    let data_dir = dir.join("data");
    let port = serve::free_port();
    let mut server = serve::start(&data_dir, port, None);

    let mut no_time = serve::event("no-time");
    no_time.as_object_mut().unwrap().remove("time");
    let body = json!({"events": [serve::event("ok-1"), {"id": "x"}, "junk", no_time]});
    let (code, response) = serve::post_batch(&server.address, &body.to_string()).unwrap();
    assert_eq!(code, 200, "{response}");
    wait_for_dead_lettered(&server, 3);

    // list: a table with a count line.
    let table = dlq_ok(&data_dir, &["list"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", table.stdout);
    assert!(lines[0].starts_with("ID"), "{}", lines[0]);
    for reason in ["missing_event_type", "not_an_object", "missing_time"] {
        assert!(table.stdout.contains(reason), "{reason}:\n{}", table.stdout);
    }
    assert!(
        lines[1].contains("T") && lines[1].contains("Z  "),
        "{}",
        lines[1]
    );
    assert_eq!(lines[4], "3 shown of 3 matching");
    let limited = dlq_ok(&data_dir, &["list", "--limit", "1"]);
    assert_eq!(limited.stdout.lines().last(), Some("1 shown of 3 matching"));

    // list --json: full entries, the event as JSON.
    let (entries, count) = list_json(&data_dir, &[]);
    assert_eq!(count, "3 shown of 3 matching");
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
    assert_eq!(entries[2]["event"]["id"], "no-time");
    for entry in &entries {
        assert!(entry["attempts"].is_u64(), "{entry}");
        assert!(
            entry["detail"]
                .as_str()
                .is_some_and(|detail| !detail.is_empty())
        );
        assert!(
            entry["dead_lettered_at"]
                .as_str()
                .is_some_and(|time| time.ends_with('Z'))
        );
    }
    let missing_type_attempts = entries[0]["attempts"].clone();

    // Filters: reason, time, event type.
    let (only, count) = list_json(&data_dir, &["--reason", "missing_event_type"]);
    assert_eq!(count, "1 shown of 1 matching");
    assert_eq!(only[0]["id"], entries[0]["id"]);
    let (recent, _) = list_json(
        &data_dir,
        &["--since", "1h", "--until", "2999-01-01T00:00:00Z"],
    );
    assert_eq!(recent.len(), 3);
    let (future, count) = list_json(&data_dir, &["--since", "2999-01-01T00:00:00Z"]);
    assert!(future.is_empty());
    assert_eq!(count, "0 shown of 0 matching");
    let (typed, _) = list_json(&data_dir, &["--event-type", "users.messages.email.Open"]);
    assert!(
        typed.is_empty(),
        "invalid events have no readable type: {typed:?}"
    );
    let bad_time = dlq_with(&["list", "--since", "yesterday"], &[]);
    assert_eq!(bad_time.code(), 2, "{}", bad_time.stderr);
    assert!(
        bad_time.stderr.contains("is not a time"),
        "{}",
        bad_time.stderr
    );

    // show: pretty JSON with the event; an unknown id fails.
    let id = entries[2]["id"].to_string();
    let shown = dlq_ok(&data_dir, &["show", &id]);
    assert!(
        shown.stdout.contains("\n  \"reason\": \"missing_time\""),
        "{}",
        shown.stdout
    );
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["event"], entries[2]["event"]);
    assert_eq!(shown["id"], entries[2]["id"]);
    let data_dir_text = data_dir.to_str().unwrap();
    let unknown = dlq_with(&["show", "999999", "--data-dir", data_dir_text], &[]);
    assert_eq!(unknown.code(), 1);
    assert!(
        unknown.stderr.contains("no dead letter 999999"),
        "{}",
        unknown.stderr
    );

    // replay: refused without a filter or --yes; with a filter, while the
    // server runs, the event is delivered again and, still invalid, comes
    // back as a new entry with its attempts counted.
    let refused = dlq_with(&["replay", "--data-dir", data_dir_text], &[]);
    assert_eq!(refused.code(), 2);
    assert!(
        refused.stderr.contains("replaying every entry needs --yes"),
        "{}",
        refused.stderr
    );
    let replayed = dlq_ok(&data_dir, &["replay", "--reason", "missing_event_type"]);
    assert!(
        replayed
            .stdout
            .contains("replayed 1 event(s) in 1 batch(es) into the spool"),
        "{}",
        replayed.stdout
    );
    wait_for_dead_lettered(&server, 4);
    let (after, count) = list_json(&data_dir, &[]);
    assert_eq!(count, "3 shown of 3 matching");
    assert_eq!(after[..2], entries[1..]);
    assert_eq!(after[2]["reason"], "missing_event_type");
    assert_eq!(after[2]["event"], json!({"id": "x"}));
    assert_eq!(after[2]["attempts"], missing_type_attempts);
    assert!(after[2]["id"].as_i64() > entries[2]["id"].as_i64());
    let dry_run = std::fs::read_to_string(data_dir.join("dry-run/default.ndjson")).unwrap();
    assert_eq!(
        dry_run.lines().count(),
        1,
        "only the valid event is written"
    );
    assert_eq!(status(&server)["spool"]["dead_letters"], 3);

    // purge: --yes always; then by id.
    let refused = dlq_with(&["purge", "--data-dir", data_dir_text], &[]);
    assert_eq!(refused.code(), 2);
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);
    assert_eq!(list_json(&data_dir, &[]).0.len(), 3);
    let id = after[0]["id"].to_string();
    let purged = dlq_ok(&data_dir, &["purge", "--id", &id, "--yes"]);
    assert_eq!(purged.stdout.trim(), "purged 1 entry(ies)");
    assert_eq!(status(&server)["spool"]["dead_letters"], 2);

    // The server is killed: the store still reads, from the data dir in the
    // environment or in a config file, with no token anywhere.
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    drop(server);
    let from_env = dlq_with(&["list"], &[("BRIDGE_DATA_DIR", &data_dir)]);
    assert_eq!(from_env.code(), 0, "{}", from_env.stderr);
    assert_eq!(
        from_env.stdout.lines().last(),
        Some("2 shown of 2 matching")
    );
    let config = dir.write("bridge.toml", format!("data_dir = {:?}\n", data_dir_text));
    let from_file = dlq_with(&["--config", config.to_str().unwrap(), "list"], &[]);
    assert_eq!(from_file.code(), 0, "{}", from_file.stderr);
    assert_eq!(from_file.stdout, from_env.stdout);
    let purged = dlq_ok(&data_dir, &["purge", "--since", "1d", "--yes"]);
    assert_eq!(purged.stdout.trim(), "purged 2 entry(ies)");
    assert_eq!(list_json(&data_dir, &[]).1, "0 shown of 0 matching");
}

#[test]
fn a_data_dir_without_a_spool_is_named() {
    let dir = TempDir::new("dlq-no-spool");
    let missing = dir.join("nowhere");
    let run = dlq_with(&["list", "--data-dir", missing.to_str().unwrap()], &[]);
    assert_eq!(run.code(), 1);
    assert!(
        run.stderr.contains(&format!(
            "no spool at {}: is the data dir right?",
            missing.join("spool").display()
        )),
        "{}",
        run.stderr
    );
}
