//! Hostile or unlucky input: deep nesting, huge strings, bytes that are not
//! UTF-8, and a reader that stops early (`transform | head -1`). The binary
//! must neither crash nor lose the well-formed events around the bad ones.

use std::io::{BufRead, BufReader, Read as _};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{self, TempDir, email_open, envelope, http_event, transform};

fn nested(depth: usize) -> Value {
    let mut value = json!("bottom");
    for level in 0..depth {
        value = json!({ format!("level_{level}"): value });
    }
    value
}

#[test]
fn a_custom_property_nested_100_levels_deep_is_copied_untouched() {
    let deep = nested(100);
    let event = http_event(
        "users.behaviors.CustomEvent",
        "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d",
        json!("ana.souza"),
        json!({"name": "Deep Thought", "custom_properties": {"deep": deep, "flat": 1}}),
    );
    let res = transform(&envelope(&[event]));
    res.assert_success();
    let events = res.events();
    assert_eq!(events.len(), 1, "rejects: {}", res.rejects);
    assert_eq!(
        events[0]["properties"]["[Custom event property] deep"],
        deep
    );
    assert_eq!(events[0]["properties"]["[Custom event property] flat"], 1);
}

#[test]
fn absurdly_deep_nesting_does_not_crash() {
    // Far deeper than any recursive parser's stack allows.
    let depth = 100_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let deep_property = format!(
        "{{\"event_type\":\"users.behaviors.CustomEvent\",\"id\":\"deep-1\",\"time\":1736512345,\
         \"user\":{{\"external_user_id\":\"ana.souza\"}},\"properties\":{{\"name\":\"Deep\",\
         \"custom_properties\":{{\"k\":{deep}}}}}}}"
    );
    let valid = email_open("1b2c3d4e-5f6a-4b7c-9d8e-9f0a1b2c3d4e", "ana.souza").to_string();
    let input = format!("{valid}\n{deep_property}\n{deep}\n{{\"events\":{deep}}}\n{valid}\n");
    let res = transform(&input);
    harness::assert_no_panic(&res.stderr);
    assert_eq!(res.code(), 0, "stderr:\n{}", res.stderr);
    assert_eq!(res.summary(), (5, 3, 0, 2), "{}", res.stderr);

    // Deep values are copied as they are: too deep for serde_json's default
    // parser, so the lines holding them are checked as text.
    let stdout: Vec<&str> = res.stdout.lines().collect();
    assert_eq!(stdout.len(), 3);
    assert_eq!(
        serde_json::from_str::<Value>(stdout[0]).expect("JSON"),
        serde_json::from_str::<Value>(stdout[2]).expect("JSON")
    );
    assert!(
        stdout[1].starts_with("{\"event\":\"[Braze Custom Event] Deep\""),
        "{}",
        &stdout[1][..80]
    );
    assert!(
        stdout[1].contains(&format!("\"[Custom event property] k\":{deep}")),
        "the value is kept whole"
    );
    let rejects: Vec<&str> = res.rejects.lines().collect();
    assert_eq!(rejects.len(), 2);
    for (reject, line) in rejects.iter().zip([3, 4]) {
        assert!(
            reject.contains("\"reason\":\"not_an_object\""),
            "{}",
            &reject[..120]
        );
        assert!(
            reject.contains(&format!("\"line\":{line},")),
            "{}",
            &reject[..120]
        );
    }
}

#[test]
fn a_one_megabyte_string_passes_through() {
    let big: String = "Café ☕ – ".chars().cycle().take(1_048_576).collect();
    let event = http_event(
        "users.behaviors.CustomEvent",
        "2c3d4e5f-6a7b-4c8d-9e0f-0a1b2c3d4e5f",
        json!("ana.souza"),
        json!({"name": "Big Note", "custom_properties": {"note": big}}),
    );
    let res = transform(&envelope(&[event]));
    res.assert_success();
    let events = res.events();
    assert_eq!(events.len(), 1);
    let note = events[0]["properties"]["[Custom event property] note"]
        .as_str()
        .expect("a string");
    assert!(
        note == big,
        "the 1 MB string is copied unchanged ({} chars)",
        note.chars().count()
    );
}

#[test]
fn a_line_that_is_not_utf8_is_rejected_and_the_rest_proceeds() {
    let first = email_open("3d4e5f6a-7b8c-4d9e-8f0a-1b2c3d4e5f6a", "ana.souza").to_string();
    let last = email_open("4e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b", "jonas.mueller").to_string();
    let mut input = Vec::new();
    input.extend_from_slice(first.as_bytes());
    input.extend_from_slice(
        b"\n{\"event_type\": \"users.messages.email.Open\", \"id\": \"\xff\xfe\xfd\"}\n",
    );
    input.extend_from_slice(last.as_bytes());
    input.push(b'\n');
    let res = harness::transform_with("-", &input, &[]);
    res.assert_success();
    let events = res.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["properties"]["distinct_id"], "jonas.mueller");
    let rejects = res.reject_lines();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["reason"], "invalid_json");
    assert_eq!(rejects[0]["line"], 2);
    assert!(
        rejects[0]["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("UTF-8")),
        "{}",
        rejects[0]
    );
}

#[test]
fn a_document_that_is_not_utf8_exits_1() {
    let res = harness::transform_with("-", b"{\n  \"events\": [\"\xff\"]\n}\n", &[]);
    assert_eq!(res.code(), 1, "stderr:\n{}", res.stderr);
    harness::assert_no_panic(&res.stderr);
    assert!(res.stderr.contains("UTF-8"), "{}", res.stderr);
}

#[test]
fn a_closed_stdout_exits_0() {
    let dir = TempDir::new("pipe");
    let batch = envelope(
        &(0..100)
            .map(|idx| email_open(&format!("5f6a7b8c-9d0e-4f1a-8b2c-{idx:012}"), "ana.souza"))
            .collect::<Vec<_>>(),
    );
    // 200 envelopes of 100 events: far more output than a pipe buffers.
    let input: String = (0..200).map(|_| format!("{batch}\n")).collect();
    let path = dir.write("large.ndjson", input);

    let mut child = Command::new(harness::binary())
        .args([
            "transform",
            path.to_str().expect("UTF-8 path"),
            "--token",
            harness::TOKEN,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut reader = BufReader::new(stdout);
    let mut first_line = String::new();
    reader
        .read_line(&mut first_line)
        .expect("one line can be read");
    let first: Value = serde_json::from_str(&first_line).expect("the first line is JSON");
    harness::assert_mixpanel_event(&first);
    drop(reader); // `head -1` exits: the read end of the pipe closes.

    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .expect("stderr is readable");
    let status = child.wait().expect("the binary can be waited for");
    harness::assert_no_panic(&stderr);
    assert_eq!(
        status.code(),
        Some(0),
        "a closed stdout is a normal way to stop\nstderr:\n{stderr}"
    );
}
