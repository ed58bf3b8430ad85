//! Golden files: every Currents event type has a fixture
//! (`tests/data/currents/<event_type>.json`, one Custom HTTP connector
//! envelope) whose `transform --token <TOKEN>` output must equal
//! `<event_type>.expected.ndjson` and whose rejects must equal
//! `<event_type>.rejects.ndjson`, compared as JSON values line by line.
//!
//! A missing expected file is written on the first run; `UPDATE_EXPECT=1`
//! rewrites them all. Review a rewritten file before committing it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{self, expect_file, fixtures_dir};

/// 94 types in `currents-event-fields.tsv` plus the two legacy types
/// (`users.campaigns.Abort`, `users.canvas.Abort`) of the mapping table.
const N_FIXTURES: usize = 96;

/// Every fixture file, sorted by name.
pub(crate) fn fixtures() -> Vec<PathBuf> {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/data/currents exists")
        .map(|entry| entry.expect("the fixture directory is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    fixtures.sort();
    fixtures
}

/// The event type a fixture is for: its file name without `.json`.
pub(crate) fn fixture_type(fixture: &Path) -> String {
    let name = fixture
        .file_name()
        .and_then(|name| name.to_str())
        .expect("fixture names are UTF-8");
    name.strip_suffix(".json")
        .expect("fixtures end in .json")
        .to_owned()
}

/// Runs one fixture through the binary and compares both outputs with their
/// expected files. Returns every mismatch, described.
fn check(fixture: &Path) -> Vec<String> {
    let event_type = fixture_type(fixture);
    let text = std::fs::read_to_string(fixture).expect("fixtures are readable");
    let doc: Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", fixture.display()));
    let events = doc["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no events array", fixture.display()));
    assert!(
        (1..=3).contains(&events.len()),
        "{} must hold 1 to 3 events",
        fixture.display()
    );
    for event in events {
        assert_eq!(
            event["event_type"],
            event_type.as_str(),
            "{}: event of another type",
            fixture.display()
        );
    }

    let fixture_arg = fixture.to_str().expect("fixture paths are UTF-8");
    let res = harness::transform_with(fixture_arg, b"", &[]);
    assert_eq!(
        res.code(),
        0,
        "{}: exit code\nstderr:\n{}",
        fixture.display(),
        res.stderr
    );
    harness::assert_no_panic(&res.stderr);
    let (total, mapped, skipped, invalid) = res.summary();
    assert_eq!(
        total,
        events.len() as u64,
        "{}: summary {}",
        fixture.display(),
        res.stderr
    );
    let mapped_events = harness::parse_ndjson(&res.stdout, "stdout");
    assert_eq!(
        mapped,
        mapped_events.len() as u64,
        "{}: mapped count",
        fixture.display()
    );
    let rejects = harness::parse_ndjson(&res.rejects, "rejects");
    assert_eq!(
        skipped + invalid,
        rejects.len() as u64,
        "{}: rejects count",
        fixture.display()
    );

    let only_unexported = rejects
        .iter()
        .all(|reject| reject["reason"] == "not_exported_type");
    assert!(
        !mapped_events.is_empty() || only_unexported,
        "{}: a fixture of an exported type must map at least one event",
        fixture.display()
    );

    let dir = fixtures_dir();
    let mut mismatches = Vec::new();
    let outputs = [
        ("expected.ndjson", &mapped_events, &res.stdout),
        ("rejects.ndjson", &rejects, &res.rejects),
    ];
    for (suffix, values, text) in outputs {
        let path = dir.join(format!("{event_type}.{suffix}"));
        if let Err(diff) = expect_file(&path, values, text) {
            mismatches.push(diff);
        }
    }
    mismatches
}

#[test]
fn every_event_type_matches_its_golden_files() {
    let fixtures = fixtures();
    assert_eq!(
        fixtures.len(),
        N_FIXTURES,
        "expected one fixture per event type in {}",
        fixtures_dir().display()
    );
    let mismatches: Vec<String> = fixtures.iter().flat_map(|fixture| check(fixture)).collect();
    assert!(
        mismatches.is_empty(),
        "{} golden file(s) differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn every_expected_file_belongs_to_a_fixture() {
    let types: Vec<String> = fixtures()
        .iter()
        .map(|fixture| fixture_type(fixture))
        .collect();
    for entry in std::fs::read_dir(fixtures_dir()).expect("tests/data/currents exists") {
        let path = entry.expect("the fixture directory is readable").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("names are UTF-8")
            .to_owned();
        let owner = name
            .strip_suffix(".expected.ndjson")
            .or_else(|| name.strip_suffix(".rejects.ndjson"))
            .or_else(|| name.strip_suffix(".json"));
        assert!(
            owner.is_some_and(|owner| types.iter().any(|event_type| event_type == owner)),
            "stray file {} in the fixture directory",
            path.display()
        );
    }
}
