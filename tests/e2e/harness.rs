//! The one place that runs the real `braze-mixpanel-bridge` binary, plus the
//! golden-file comparison and small builders the rule tests share.
//!
//! The binary is found next to the test executable
//! (`target/<profile>/deps/e2e-…` → `target/<profile>/braze-mixpanel-bridge`);
//! it is (re)built once per test run with `cargo build -p braze-mixpanel-bridge`,
//! which does nothing when it is up to date.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// The Mixpanel project token every test passes.
pub(crate) const TOKEN: &str = "e2e0token0f0r0golden0files00001";

/// The envelope keys every mapped event carries.
pub(crate) const ENVELOPE_KEYS: [&str; 5] =
    ["$partner_id", "distinct_id", "$insert_id", "time", "token"];

/// The workspace's `tests/` directory.
pub(crate) fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the per-type fixtures and their expected outputs live.
pub(crate) fn fixtures_dir() -> PathBuf {
    tests_dir().join("data").join("currents")
}

/// The path of the binary under test, brought up to date on first use.
pub(crate) fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable has a path");
        // target/<profile>/deps/e2e-<hash> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in target/<profile>/deps");
        let binary = profile_dir.join(format!(
            "braze-mixpanel-bridge{}",
            std::env::consts::EXE_SUFFIX
        ));
        // Always build: a no-op when the binary is up to date, and never a
        // stale binary after a change to the library crates.
        build_binary(profile_dir);
        assert!(
            binary.exists(),
            "{} does not exist after building it",
            binary.display()
        );
        binary
    })
}

fn build_binary(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "-p", "braze-mixpanel-bridge"])
        .current_dir(tests_dir());
    // Cargo sets package variables (CARGO_MANIFEST_DIR, CARGO_PKG_*) for
    // this test process; some build scripts (ring's) watch them, so passing
    // them on would rebuild those crates on every run.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        let is_package_variable = key_text.starts_with("CARGO_")
            && !matches!(key_text.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
            || key_text == "OUT_DIR";
        if is_package_variable {
            command.env_remove(&key);
        }
    }
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        command.arg("--release");
    }
    let status = command.status().expect("cargo can be started");
    assert!(
        status.success(),
        "cargo build -p braze-mixpanel-bridge failed: {status}"
    );
}

/// A directory under cargo's per-target temporary directory, removed on drop.
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory whose name starts with `label`.
    pub(crate) fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(format!("{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the temporary directory can be created");
        TempDir { path }
    }

    /// A path inside the directory.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("the temporary file can be written");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What one run of the binary produced.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The `--rejects` file's contents (empty when the flag was not passed by
    /// [`transform`] or the file was not written).
    pub(crate) rejects: String,
}

impl Run {
    /// The exit code; panics if the process was killed by a signal.
    pub(crate) fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| {
            panic!(
                "the binary was killed: {:?}\nstderr:\n{}",
                self.status, self.stderr
            )
        })
    }

    /// Asserts exit 0 and that nothing panicked.
    pub(crate) fn assert_success(&self) -> &Run {
        assert_eq!(self.code(), 0, "expected exit 0\nstderr:\n{}", self.stderr);
        assert_no_panic(&self.stderr);
        self
    }

    /// The Mixpanel events on stdout.
    pub(crate) fn events(&self) -> Vec<Value> {
        parse_ndjson(&self.stdout, "stdout")
    }

    /// The rejects written with `--rejects`.
    pub(crate) fn reject_lines(&self) -> Vec<Value> {
        parse_ndjson(&self.rejects, "rejects")
    }

    /// The counts in the stderr summary: (total, mapped, skipped, invalid).
    pub(crate) fn summary(&self) -> (u64, u64, u64, u64) {
        let line = self
            .stderr
            .lines()
            .find(|line| line.starts_with("transform: "))
            .unwrap_or_else(|| panic!("no summary line on stderr:\n{}", self.stderr));
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|part| !part.is_empty())
            .map(|part| part.parse().expect("digits parse"))
            .collect();
        assert_eq!(numbers.len(), 4, "unexpected summary line {line:?}");
        (numbers[0], numbers[1], numbers[2], numbers[3])
    }
}

/// Fails if `stderr` shows a Rust panic.
pub(crate) fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked:\n{stderr}"
    );
}

/// Runs the binary with `args` and `stdin`, capturing everything.
pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("MIXPANEL_PROJECT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary can be started");
    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    // A separate writer, so that a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        // The binary may stop reading early (e.g. on a usage error): ignore EPIPE.
        let _ = child_stdin.write_all(&input);
    });
    let output = child
        .wait_with_output()
        .expect("the binary can be waited for");
    writer.join().expect("the stdin writer does not panic");
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        rejects: String::new(),
    }
}

/// Runs the binary with `args`, no stdin, and exactly the `BRIDGE_*`,
/// `MIXPANEL_*` and `BRAZE_*` variables of `vars` (none inherited).
pub(crate) fn run_with_env(args: &[&str], vars: &[(&str, &str)]) -> Run {
    let output = command_with_env(args, vars)
        .output()
        .expect("the binary runs");
    let run = Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        rejects: String::new(),
    };
    assert_no_panic(&run.stderr);
    run
}

/// The command [`run_with_env`] runs, to spawn it instead.
pub(crate) fn command_with_env(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("BRIDGE_") || key.starts_with("MIXPANEL_") || key.starts_with("BRAZE_") {
            command.env_remove(key);
        }
    }
    for (key, value) in vars {
        command.env(key, value);
    }
    command
}

/// Runs `transform` on `input` (a file path, or `-` for `stdin`) with the
/// test token, `extra` arguments and a rejects file, and reads the rejects.
pub(crate) fn transform_with(input: &str, stdin: &[u8], extra: &[&str]) -> Run {
    let dir = TempDir::new("transform");
    let rejects_path = dir.join("rejects.ndjson");
    let rejects_arg = rejects_path.to_str().expect("temporary paths are UTF-8");
    let mut args = vec![
        "transform",
        input,
        "--token",
        TOKEN,
        "--rejects",
        rejects_arg,
    ];
    args.extend_from_slice(extra);
    let mut res = run(&args, stdin);
    res.rejects = std::fs::read_to_string(&rejects_path).unwrap_or_default();
    res
}

/// Runs `transform -` on `stdin` with the test token and a rejects file.
pub(crate) fn transform(stdin: &str) -> Run {
    transform_with("-", stdin.as_bytes(), &[])
}

/// Parses NDJSON text, one JSON value per non-empty line.
pub(crate) fn parse_ndjson(text: &str, what: &str) -> Vec<Value> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(idx, line)| {
            serde_json::from_str(line).unwrap_or_else(|error| {
                panic!("{what} line {} is not JSON ({error}): {line}", idx + 1)
            })
        })
        .collect()
}

/// Compares `actual` (the values an output held, and its text) with the
/// NDJSON file at `path`, value by value.
///
/// A missing file is written (and the comparison passes); with
/// `UPDATE_EXPECT=1` the file is rewritten. Otherwise a mismatch is returned
/// as a readable diff that names the file. The file is always NDJSON: when
/// the output text is not one value per line, its values are written one
/// per line instead.
pub(crate) fn expect_file(path: &Path, actual: &[Value], actual_text: &str) -> Result<(), String> {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|value| value == "1");
    if update || !path.exists() {
        let one_per_line = actual_text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .count()
            == actual.len();
        let contents = if one_per_line {
            actual_text.to_owned()
        } else {
            actual.iter().map(|value| format!("{value}\n")).collect()
        };
        std::fs::write(path, contents)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        return Ok(());
    }
    let expected_text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let expected = parse_ndjson(&expected_text, &path.display().to_string());
    if expected == actual {
        return Ok(());
    }
    let mut diff = format!(
        "{} differs ({} expected lines, {} actual); rerun with UPDATE_EXPECT=1 to accept:\n",
        path.display(),
        expected.len(),
        actual.len()
    );
    for idx in 0..expected.len().max(actual.len()) {
        match (expected.get(idx), actual.get(idx)) {
            (Some(want), Some(got)) if want == got => {}
            (Some(want), Some(got)) => {
                let _ = writeln!(diff, "  line {}:", idx + 1);
                describe_difference(&mut diff, "", want, got);
            }
            (Some(want), None) => {
                let _ = writeln!(diff, "  line {}: missing, expected {want}", idx + 1);
            }
            (None, Some(got)) => {
                let _ = writeln!(diff, "  line {}: unexpected {got}", idx + 1);
            }
            (None, None) => unreachable!("idx is below one of the lengths"),
        }
    }
    Err(diff)
}

/// Writes where two JSON values differ, key by key for objects.
fn describe_difference(out: &mut String, at: &str, want: &Value, got: &Value) {
    match (want, got) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, want_value) in want {
                let path = format!("{at}/{key}");
                match got.get(key) {
                    None => {
                        let _ = writeln!(out, "    - {path}: {want_value} (missing)");
                    }
                    Some(got_value) if got_value != want_value => {
                        describe_difference(out, &path, want_value, got_value);
                    }
                    Some(_) => {}
                }
            }
            for (key, got_value) in got {
                if !want.contains_key(key) {
                    let _ = writeln!(out, "    + {at}/{key}: {got_value} (unexpected)");
                }
            }
        }
        _ => {
            let _ = writeln!(out, "    ~ {at}: expected {want}, got {got}");
        }
    }
}

/// Asserts that `event` is a Mixpanel event with the full envelope, and
/// returns its properties.
pub(crate) fn assert_mixpanel_event(event: &Value) -> &serde_json::Map<String, Value> {
    let name = event["event"].as_str();
    assert!(
        name.is_some_and(|name| !name.is_empty()),
        "no event name: {event}"
    );
    let object = event.as_object().expect("an event is an object");
    assert_eq!(
        object.len(),
        2,
        "an event has exactly `event` and `properties`: {event}"
    );
    let properties = event["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties: {event}"));
    for key in ENVELOPE_KEYS {
        assert!(properties.contains_key(key), "{key} missing: {event}");
    }
    assert_eq!(properties["$partner_id"], "braze", "{event}");
    assert_eq!(properties["token"], TOKEN, "{event}");
    let distinct_id = properties["distinct_id"].as_str().unwrap_or_default();
    assert!(
        !distinct_id.trim().is_empty(),
        "distinct_id must be a real id: {event}"
    );
    assert!(
        is_valid_insert_id(&properties["$insert_id"]),
        "bad $insert_id: {event}"
    );
    assert!(
        properties["time"].is_i64(),
        "time must be an integer: {event}"
    );
    assert!(
        properties.values().all(|value| !value.is_null()),
        "null property: {event}"
    );
    properties
}

/// Whether `value` is a string matching `^[A-Za-z0-9-]{1,36}$`.
pub(crate) fn is_valid_insert_id(value: &Value) -> bool {
    value.as_str().is_some_and(|id| {
        (1..=36).contains(&id.len())
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    })
}

/// A Custom HTTP connector event with a usable user, for rule tests.
pub(crate) fn http_event(
    event_type: &str,
    id: &str,
    external_user_id: Value,
    properties: Value,
) -> Value {
    json!({
        "event_type": event_type,
        "id": id,
        "time": 1_736_512_345,
        "user": {
            "user_id": "65a1f0c2e4b0d3a9f1c27e58",
            "external_user_id": external_user_id,
            "device_id": "7c1e4b2a-9d3f-4e6a-b8c5-2f1a0d9e3b47",
            "timezone": "Europe/Lisbon"
        },
        "properties": properties
    })
}

/// An email Open event for user `external_user_id`.
pub(crate) fn email_open(id: &str, external_user_id: &str) -> Value {
    http_event(
        "users.messages.email.Open",
        id,
        json!(external_user_id),
        json!({
            "app_group_id": "3f2b8c1d-0e4a-4b7c-9d6e-5a1f2c3b4d5e",
            "campaign_id": "c0ffee00-1234-4abc-8def-0123456789ab",
            "campaign_name": "Boletim de março – Café ☕",
            "email_address": "rita.lopes@example.pt",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/126.0",
            "machine_open": "false",
            "is_amp": false
        }),
    )
}

/// Wraps events in a `{"events": [...]}` envelope, on one line.
pub(crate) fn envelope(events: &[Value]) -> String {
    json!({ "events": events }).to_string()
}

/// Events as NDJSON, one per line.
pub(crate) fn ndjson(values: &[Value]) -> String {
    values.iter().map(|value| format!("{value}\n")).collect()
}

/// The peak resident memory (`VmHWM`) of process `pid` so far, in KiB; 0
/// when it cannot be read.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
