//! All fixtures at once: every event type in one NDJSON-of-envelopes input,
//! as a replay of a day of Currents traffic would look. Checks conservation
//! (every input event is mapped, skipped or invalid, exactly once), the
//! Mixpanel envelope on every output line, and that batching many types
//! together changes nothing compared with one file per type.

use serde_json::Value;

use crate::golden::{fixture_type, fixtures};
use crate::harness::{self, TempDir, assert_mixpanel_event, fixtures_dir, parse_ndjson};

#[test]
fn mixed_all_types() {
    let fixtures = fixtures();
    assert!(!fixtures.is_empty(), "no fixtures found");
    let mut input = String::new();
    let mut n_input_events = 0u64;
    for fixture in &fixtures {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixtures are readable"))
                .expect("fixtures are JSON");
        n_input_events += doc["events"]
            .as_array()
            .expect("fixtures are envelopes")
            .len() as u64;
        input.push_str(&doc.to_string());
        input.push('\n');
    }
    let dir = TempDir::new("mixed");
    let input_path = dir.write("all-types.ndjson", &input);

    let res = harness::transform_with(input_path.to_str().expect("UTF-8 path"), b"", &[]);
    res.assert_success();
    let events = res.events();
    let rejects = res.reject_lines();

    let (total, mapped, skipped, invalid) = res.summary();
    assert_eq!(total, n_input_events, "summary total\n{}", res.stderr);
    assert_eq!(
        mapped + skipped + invalid,
        n_input_events,
        "conservation\n{}",
        res.stderr
    );
    assert_eq!(mapped, events.len() as u64, "mapped count vs stdout lines");
    assert_eq!(
        skipped + invalid,
        rejects.len() as u64,
        "rejected count vs rejects lines"
    );
    assert_eq!(
        invalid, 0,
        "the fixtures hold no invalid event\n{}",
        res.stderr
    );
    assert!(mapped > 100, "most fixture events map, got {mapped}");

    for event in &events {
        assert_mixpanel_event(event);
    }
    for reject in &rejects {
        assert_eq!(reject["outcome"], "skipped", "{reject}");
        let reason = reject["reason"].as_str().expect("a reason");
        assert!(
            ["no_external_user_id", "not_exported_type"].contains(&reason),
            "{reject}"
        );
    }

    // Line by line, the mixed run equals the per-type golden files in order.
    let mut expected_events = Vec::new();
    let mut expected_rejects = Vec::new();
    for (idx, fixture) in fixtures.iter().enumerate() {
        let event_type = fixture_type(fixture);
        let read = |suffix: &str| {
            let path = fixtures_dir().join(format!("{event_type}.{suffix}"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            parse_ndjson(&text, &path.display().to_string())
        };
        expected_events.extend(read("expected.ndjson"));
        for mut reject in read("rejects.ndjson") {
            // A fixture is one document starting at line 1; here it is line idx + 1.
            reject["line"] = Value::from(idx as u64 + 1);
            expected_rejects.push(reject);
        }
    }
    assert!(
        events == expected_events,
        "mixed stdout differs from the concatenated golden files"
    );
    assert!(
        rejects == expected_rejects,
        "mixed rejects differ from the concatenated golden files"
    );
}
