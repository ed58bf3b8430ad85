//! The input shapes `transform` accepts, and what it does with input it
//! cannot read: the same events give the same Mixpanel events whether they
//! come as one envelope (compact or pretty-printed), envelopes one per line,
//! NDJSON of single events, or a JSON array; a non-JSON line is rejected on
//! its own; input that is not JSON at all, or a missing file, exits 1; and
//! `--threads` changes nothing of what is written.

use serde_json::{Value, json};

use crate::harness::{
    self, TempDir, email_open, envelope, http_event, ndjson, transform, transform_with,
};

/// Three events of different types, all for real users.
fn sample_events() -> Vec<Value> {
    vec![
        email_open("0b6c1f0e-2a4d-4c8e-9f1a-3b5d7e9f1a2c", "rita.lopes"),
        http_event(
            "users.behaviors.app.SessionStart",
            "5e8d2c1b-7a3f-4e9d-8c2b-1a0f9e8d7c6b",
            json!("rita.lopes"),
            json!({
                "app_group_id": "3f2b8c1d-0e4a-4b7c-9d6e-5a1f2c3b4d5e",
                "app_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                "session_id": "d4c3b2a1-0f9e-4d8c-b7a6-5f4e3d2c1b0a",
                "platform": "android",
                "os_version": "Android 13",
                "device_model": "Galaxy S23"
            }),
        ),
        http_event(
            "users.behaviors.CustomEvent",
            "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
            json!("kofi.mensah"),
            json!({"name": "Reserved Table", "custom_properties": {"guests": 4, "terrace": true}}),
        ),
    ]
}

fn mapped_from_envelope() -> Vec<Value> {
    let res = transform(&envelope(&sample_events()));
    res.assert_success();
    let events = res.events();
    assert_eq!(
        events.len(),
        3,
        "all three sample events map\n{}",
        res.stderr
    );
    events
}

#[test]
fn ndjson_of_single_events_maps_like_an_envelope() {
    let res = transform(&ndjson(&sample_events()));
    res.assert_success();
    assert_eq!(res.events(), mapped_from_envelope());
    assert_eq!(res.summary(), (3, 3, 0, 0));
}

#[test]
fn pretty_printed_envelope_maps_like_a_compact_one() {
    let pretty =
        serde_json::to_string_pretty(&json!({ "events": sample_events() })).expect("serializes");
    assert!(
        pretty.lines().count() > 10,
        "the input really spans many lines"
    );
    let res = transform(&format!("\n\n{pretty}\n"));
    res.assert_success();
    assert_eq!(res.events(), mapped_from_envelope());
}

#[test]
fn pretty_printed_input_gives_one_line_per_value() {
    let mut click = email_open("7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", "ana.souza");
    click["event_type"] = json!("users.messages.email.Click");
    click["properties"]["suspected_bot_click_reason"] = json!(["user_agent", "ip_address"]);
    let anonymous = email_open("8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e", "null");
    let pretty =
        serde_json::to_string_pretty(&json!({ "events": [click, anonymous] })).expect("serializes");
    let res = transform(&pretty);
    res.assert_success();

    let events = harness::parse_ndjson(&res.stdout, "stdout");
    assert_eq!(events.len(), 1);
    harness::assert_mixpanel_event(&events[0]);
    assert_eq!(
        events[0]["properties"]["suspected_bot_click_reason"],
        json!(["user_agent", "ip_address"])
    );
    let rejects = harness::parse_ndjson(&res.rejects, "rejects");
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["reason"], "no_external_user_id");
    assert_eq!(rejects[0]["line"], 1);
    assert_eq!(rejects[0]["event"], anonymous);

    // Nested values and rejected events arrive with the input's line
    // breaks; the output is NDJSON all the same.
    assert_eq!(res.stdout.lines().count(), 1, "{}", res.stdout);
    assert_eq!(res.rejects.lines().count(), 1, "{}", res.rejects);
}

#[test]
fn json_array_of_events_maps_like_an_envelope() {
    let array = Value::Array(sample_events()).to_string();
    let res = transform(&array);
    res.assert_success();
    assert_eq!(res.events(), mapped_from_envelope());

    let pretty_array =
        serde_json::to_string_pretty(&Value::Array(sample_events())).expect("serializes");
    let res = transform(&pretty_array);
    res.assert_success();
    assert_eq!(res.events(), mapped_from_envelope());
}

#[test]
fn envelopes_one_per_line_report_their_line_numbers() {
    let events = sample_events();
    let anonymous = email_open("6f5e4d3c-2b1a-4098-8765-43210fedcba9", "anonymous");
    let input = format!(
        "{}\n\n{}\n{}\n",
        envelope(&events[..1]),
        envelope(&[events[1].clone(), anonymous.clone()]),
        envelope(&events[2..])
    );
    let res = transform(&input);
    res.assert_success();
    assert_eq!(res.events(), mapped_from_envelope());
    let rejects = res.reject_lines();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["line"], 3, "blank lines count: {}", rejects[0]);
    assert_eq!(rejects[0]["event"], anonymous);
}

#[test]
fn a_non_json_line_is_rejected_and_the_rest_proceeds() {
    let events = sample_events();
    let input = format!(
        "{}\nthis line is not JSON {{\"events\": [\n{}\n",
        envelope(&events[..2]),
        envelope(&events[2..])
    );
    let res = transform(&input);
    res.assert_success();
    assert_eq!(res.events(), mapped_from_envelope());
    let rejects = res.reject_lines();
    assert_eq!(rejects.len(), 1, "{}", res.rejects);
    assert_eq!(rejects[0]["outcome"], "invalid");
    assert_eq!(rejects[0]["reason"], "invalid_json");
    assert_eq!(rejects[0]["line"], 2);
    assert_eq!(rejects[0]["event"], "this line is not JSON {\"events\": [");
    assert!(
        rejects[0]["detail"]
            .as_str()
            .is_some_and(|detail| !detail.is_empty())
    );
    assert_eq!(res.summary(), (4, 3, 0, 1));
    assert!(
        res.stderr.contains("invalid_json"),
        "the summary names the reason:\n{}",
        res.stderr
    );
}

#[test]
fn threads_do_not_change_the_output() {
    // About 4 MB, so that the default 1 MiB chunks cut it several times,
    // with every kind of line and a reject on every tenth.
    let events = sample_events();
    let anonymous = email_open("6f5e4d3c-2b1a-4098-8765-43210fedcba9", "anonymous");
    let block = format!(
        "{}\n{}\n\n{}\nnot JSON {{\n{}\n",
        envelope(&events),
        ndjson(&events).trim_end(),
        envelope(&[anonymous.clone(), events[0].clone()]),
        serde_json::to_string(&events).expect("events are JSON"),
    );
    let input = block.repeat(1_000);
    let one = transform_with("-", input.as_bytes(), &["--threads", "1"]);
    one.assert_success();
    assert_eq!(one.summary(), (12_000, 10_000, 1_000, 1_000));
    for threads in ["2", "3"] {
        let many = transform_with("-", input.as_bytes(), &["--threads", threads]);
        many.assert_success();
        assert!(many.stdout == one.stdout, "{threads} threads: other output");
        assert!(
            many.rejects == one.rejects,
            "{threads} threads: other rejects"
        );
        assert_eq!(many.stderr, one.stderr, "{threads} threads: other summary");
    }
    let res = transform_with("-", input.as_bytes(), &["--threads", "0"]);
    assert_eq!(res.code(), 2, "no thread is a usage error:\n{}", res.stderr);
}

#[test]
fn input_that_is_not_json_exits_1() {
    for input in [
        "hello, this is plain text\nand more of it\n",
        "{\"events\": [ {\"event_type\": \n",
    ] {
        let res = transform(input);
        assert_eq!(res.code(), 1, "input {input:?}\nstderr:\n{}", res.stderr);
        harness::assert_no_panic(&res.stderr);
        assert!(res.stdout.is_empty(), "nothing is written: {}", res.stdout);
        assert!(
            res.stderr.contains("braze-mixpanel-bridge:") && res.stderr.contains("not JSON"),
            "stderr explains:\n{}",
            res.stderr
        );
    }
}

#[test]
fn a_non_json_first_line_makes_the_whole_input_one_unreadable_document() {
    // The format is chosen from the first non-blank line: one that is not a
    // complete JSON value starts a document, so a broken first line refuses
    // the input even when the lines after it are valid events.
    let valid = email_open("9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f", "ana.souza");
    let res = transform(&format!("garbage before the events\n{valid}\n"));
    assert_eq!(res.code(), 1, "stderr:\n{}", res.stderr);
    harness::assert_no_panic(&res.stderr);
    assert!(res.stdout.is_empty());
    assert!(res.stderr.contains("not JSON"), "{}", res.stderr);
}

#[test]
fn empty_input_exits_0_with_nothing_mapped() {
    let res = transform("\n   \n");
    res.assert_success();
    assert!(res.stdout.is_empty());
    assert_eq!(res.summary(), (0, 0, 0, 0));
}

#[test]
fn a_file_and_stdin_give_the_same_output() {
    let dir = TempDir::new("file-input");
    let path = dir.write("batch.json", envelope(&sample_events()));
    let res = harness::transform_with(path.to_str().expect("UTF-8 path"), b"", &[]);
    res.assert_success();
    assert_eq!(res.events(), mapped_from_envelope());
}

#[test]
fn a_missing_file_exits_1() {
    let dir = TempDir::new("missing");
    let path = dir.join("no-such-file.json");
    let res = harness::transform_with(path.to_str().expect("UTF-8 path"), b"", &[]);
    assert_eq!(res.code(), 1, "stderr:\n{}", res.stderr);
    harness::assert_no_panic(&res.stderr);
    assert!(
        res.stderr.contains("no-such-file.json"),
        "stderr names the file:\n{}",
        res.stderr
    );
    assert!(res.stdout.is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let cases: [&[&str]; 4] = [
        &["transform", "--no-such-flag"],
        &["no-such-command"],
        &[],
        &["transform", "a.json", "b.json"],
    ];
    for args in cases {
        let res = harness::run(args, b"");
        assert_eq!(res.code(), 2, "args {args:?}\nstderr:\n{}", res.stderr);
        assert!(!res.stderr.is_empty(), "a usage message for {args:?}");
        assert!(res.stdout.is_empty(), "args {args:?}: {}", res.stdout);
    }
}

#[test]
fn help_and_version_exit_0() {
    let res = harness::run(&["transform", "--help"], b"");
    assert_eq!(res.code(), 0, "{}", res.stderr);
    assert!(res.stdout.contains("--include-types"), "{}", res.stdout);
    let res = harness::run(&["--version"], b"");
    assert_eq!(res.code(), 0, "{}", res.stderr);
    assert!(
        res.stdout.starts_with("braze-mixpanel-bridge "),
        "{}",
        res.stdout
    );
}
