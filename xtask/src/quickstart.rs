//! The README's quickstart, run from a release archive: what someone who
//! downloads `braze-mixpanel-bridge-<version>-<target>.tar.gz` does first.
//! `cargo xtask ci` runs it on the archive `cargo xtask dist` just built
//! (and `cargo xtask dist --check` does too).
//!
//! It checks the archive against its `.sha256` file (in Rust, and with
//! `sha256sum -c` where that exists), unpacks it into a scratch directory,
//! checks the layout and `--version`, then, from a working directory of its
//! own (so `./bridge-data`, as in the README):
//!
//! 1. starts `serve --dry-run` with the README's `BRIDGE_CURRENTS_TOKENS`
//!    and `BRIDGE_COHORT_WEBHOOK_CREDENTIALS` (on free loopback ports rather
//!    than 8080 and 9090, through `BRIDGE_LISTEN` and `BRIDGE_OPS_LISTEN`);
//! 2. posts `tests/data/currents/users.messages.email.Click.json` to
//!    `/currents` and waits until `bridge-data/dry-run/default.ndjson` holds
//!    the golden Mixpanel events of that file (less the project token,
//!    which the quickstart does not set);
//! 3. reads `/status` on the operations listener;
//! 4. posts `tests/data/cohorts/add_members.json` to `/mixpanel/cohorts`
//!    and waits until `bridge-data/dry-run/braze-cohorts.ndjson` adds each
//!    member to the cohort; runs `cohorts status`;
//! 5. stops `serve` with SIGTERM (it must exit 0);
//! 6. runs `transform … --token demo-token` and compares it with the
//!    golden file.
//!
//! Every wait has a deadline. Loopback only.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use serde_json::Value;

use crate::bench_import::{collect, http, say};
use crate::dist::{BIN, sha256_hex, sums_path};
use crate::project_root;

const CURRENTS_FILE: &str = "tests/data/currents/users.messages.email.Click.json";
const GOLDEN_FILE: &str = "tests/data/currents/users.messages.email.Click.expected.ndjson";
const COHORT_FILE: &str = "tests/data/cohorts/add_members.json";
const COHORT_ID: &str = "4242";
const COHORT_MEMBERS: [&str; 3] = ["cust-1042", "cust-2077", "3099"];
const DEADLINE: Duration = Duration::from_secs(30);

/// Checks, unpacks and runs the quickstart on `archive`; the scratch
/// directory is removed on success and kept (and named) on failure.
pub(crate) fn run(archive: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    check_sums(archive)?;
    let dir = crate::scratch_dir("quickstart")?;
    let result = run_in(archive, &dir);
    match &result {
        Ok(()) => {
            std::fs::remove_dir_all(&dir)?;
            say(&format!(
                "the README's quickstart passed on {} in {:.1} s",
                archive.display(),
                started.elapsed().as_secs_f64()
            ));
        }
        Err(_) => say(&format!("kept {} for a look", dir.display())),
    }
    result
}

/// The archive's digest against its `.sha256` file.
pub(crate) fn check_sums(archive: &Path) -> anyhow::Result<()> {
    let sums = sums_path(archive);
    let text = std::fs::read_to_string(&sums)
        .with_context(|| format!("cannot read {}", sums.display()))?;
    let name = file_name(archive)?;
    let bytes =
        std::fs::read(archive).with_context(|| format!("cannot read {}", archive.display()))?;
    ensure!(
        text == crate::dist::sums_line(&bytes, &name),
        "{} does not match {name} (sha256 {}): {text:?}",
        sums.display(),
        sha256_hex(&bytes)
    );
    // The coreutils tool agrees, where it exists.
    if let Ok(output) = Command::new("sha256sum")
        .arg("--check")
        .arg("--strict")
        .arg(file_name(&sums)?)
        .current_dir(archive.parent().context("an archive without a directory")?)
        .output()
    {
        ensure!(
            output.status.success(),
            "sha256sum --check {}: {}{}",
            sums.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    Ok(path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned())
}

fn run_in(archive: &Path, dir: &Path) -> anyhow::Result<()> {
    crate::dist::unpack(archive, dir)?;
    let name = file_name(archive)?;
    let top_name = name
        .strip_suffix(".tar.gz")
        .with_context(|| format!("{name} is not a .tar.gz"))?;
    let top = dir.join(top_name);
    check_layout(&top)?;
    let bin = top.join(BIN);

    let version = bridge(&bin, dir, &["--version"], &[])?;
    let version = version
        .trim()
        .strip_prefix(&format!("{BIN} "))
        .with_context(|| format!("unexpected --version: {version:?}"))?;
    ensure!(
        top_name.starts_with(&format!("{BIN}-{version}-")),
        "the archive {top_name} holds version {version}"
    );

    let repo = project_root();
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let ops = format!("127.0.0.1:{}", free_port()?);
    let mut serve = Serve::start(
        &bin,
        &work,
        &[
            ("BRIDGE_CURRENTS_TOKENS", "demo-token"),
            (
                "BRIDGE_COHORT_WEBHOOK_CREDENTIALS",
                "mixpanel:demo-password",
            ),
            ("BRIDGE_LISTEN", &listen),
            ("BRIDGE_OPS_LISTEN", &ops),
        ],
        &ops,
    )?;

    // Currents in, Mixpanel events out to the dry-run file.
    let batch = std::fs::read(repo.join(CURRENTS_FILE))?;
    let (status, body) = request(
        &listen,
        "POST",
        "/currents",
        &[("Authorization", "Bearer demo-token".to_owned())],
        &batch,
    )?;
    ensure!(status == 200, "POST /currents: {status} {body}");
    let golden = std::fs::read_to_string(repo.join(GOLDEN_FILE))?;
    let expected = events(&golden, None)?;
    let dry_run = work.join("bridge-data/dry-run/default.ndjson");
    let delivered = wait_for("the Mixpanel events in the dry-run file", || {
        let text = std::fs::read_to_string(&dry_run).unwrap_or_default();
        let lines = text.lines().count();
        Ok((lines >= expected.len()).then_some(text))
    })?;
    ensure!(
        events(&delivered, None)? == expected,
        "{} differs from {GOLDEN_FILE} (less its token):\n{delivered}",
        dry_run.display()
    );

    let status_body = http(&ops, "GET", "/status")?;
    serde_json::from_str::<Value>(&status_body)
        .with_context(|| format!("/status is not JSON: {status_body}"))?;

    // A Mixpanel cohort in, Braze requests out to the dry-run file.
    let page = std::fs::read(repo.join(COHORT_FILE))?;
    let credentials = base64::engine::general_purpose::STANDARD.encode("mixpanel:demo-password");
    let (status, body) = request(
        &listen,
        "POST",
        "/mixpanel/cohorts",
        &[
            ("Authorization", format!("Basic {credentials}")),
            ("Content-Type", "application/json".to_owned()),
        ],
        &page,
    )?;
    ensure!(status == 200, "POST /mixpanel/cohorts: {status} {body}");
    let braze_file = work.join("bridge-data/dry-run/braze-cohorts.ndjson");
    wait_for("the Braze requests in the dry-run file", || {
        let text = std::fs::read_to_string(&braze_file).unwrap_or_default();
        let added = cohort_additions(&text)?;
        Ok((added == COHORT_MEMBERS.iter().map(|id| id.to_string()).collect()).then_some(()))
    })?;
    let status_text = bridge(&bin, &work, &["cohorts", "status"], &[])?;
    ensure!(
        status_text.contains(COHORT_ID),
        "cohorts status does not show cohort {COHORT_ID}:\n{status_text}"
    );

    serve.stop()?;

    // The same mapping on a file.
    let transformed = bridge(
        &bin,
        &work,
        &[
            "transform",
            repo.join(CURRENTS_FILE)
                .to_str()
                .context("a path that is not UTF-8")?,
            "--token",
            "demo-token",
        ],
        &[],
    )?;
    ensure!(
        events(&transformed, Some("demo-token"))? == events(&golden, Some("demo-token"))?,
        "transform's output differs from {GOLDEN_FILE}:\n{transformed}"
    );
    Ok(())
}

/// What the archive must hold, beyond the files `dist` requires of the
/// repository.
fn check_layout(top: &Path) -> anyhow::Result<()> {
    for path in [
        BIN,
        "README.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "docs/bridge.example.toml",
        "deploy/systemd/braze-mixpanel-bridge.service",
        "man/braze-mixpanel-bridge.1",
        "man/braze-mixpanel-bridge-serve.1",
        "complete/braze-mixpanel-bridge.bash",
        "complete/_braze-mixpanel-bridge",
        "complete/braze-mixpanel-bridge.fish",
    ] {
        ensure!(
            top.join(path).is_file(),
            "the archive has no {path} under {}",
            top.display()
        );
    }
    Ok(())
}

/// Mixpanel events of NDJSON text as a set of values, with each event's
/// `token` property set to `token` (or removed).
fn events(text: &str, token: Option<&str>) -> anyhow::Result<BTreeSet<String>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut event: Value =
                serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
            let properties = event
                .get_mut("properties")
                .and_then(Value::as_object_mut)
                .with_context(|| format!("no properties: {line}"))?;
            match token {
                Some(token) => {
                    properties.insert("token".to_owned(), Value::from(token));
                }
                None => {
                    properties.remove("token");
                }
            }
            Ok(event.to_string())
        })
        .collect()
}

/// The `external_id`s the dry-run Braze requests add to the cohort.
fn cohort_additions(text: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut added = BTreeSet::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let request: Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(
            request["endpoint"] == "/users/track",
            "not a /users/track request: {line}"
        );
        let objects = request["body"]["attributes"]
            .as_array()
            .with_context(|| format!("no attributes: {line}"))?;
        for object in objects {
            let adds = object["mixpanel_cohorts"]["add"].as_array();
            if adds.is_some_and(|adds| adds.iter().any(|id| id == COHORT_ID))
                && let Some(id) = object["external_id"].as_str()
            {
                added.insert(id.to_owned());
            }
        }
    }
    Ok(added)
}

/// Polls `ready` every 50 ms until it gives a value, for up to 30 s.
fn wait_for<T>(
    what: &str,
    mut ready: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = ready()? {
            return Ok(value);
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: not there within {} s",
            DEADLINE.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port, found by binding port 0 and letting it go.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs the unpacked binary to its end in `dir`, with only `env` of the
/// bridge's variables; its stdout, or an error with its stderr.
fn bridge(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let output = clean_command(bin, dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    ensure!(
        output.status.success(),
        "{BIN} {} exited with {}:\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The binary, run in `dir` without the caller's `BRIDGE_*`, `MIXPANEL_*`,
/// `BRAZE_*` or `RUST_LOG`.
fn clean_command(bin: &Path, dir: &Path) -> Command {
    let mut command = Command::new(bin);
    command.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if ["BRIDGE_", "MIXPANEL_", "BRAZE_", "RUST_LOG"]
            .iter()
            .any(|prefix| text.starts_with(prefix))
        {
            command.env_remove(&name);
        }
    }
    command
}

/// `serve` running, killed when dropped unless stopped.
struct Serve {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    /// Starts `serve --dry-run` in `dir` and waits for `/readyz` on `ops`.
    fn start(bin: &Path, dir: &Path, env: &[(&str, &str)], ops: &str) -> anyhow::Result<Serve> {
        let mut child = clean_command(bin, dir)
            .args(["serve", "--dry-run"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = collect(child.stderr.take());
        let mut serve = Serve { child, stderr };
        let deadline = Instant::now() + DEADLINE;
        while http(ops, "GET", "/readyz").is_err() {
            if let Some(status) = serve.child.try_wait()? {
                bail!(
                    "serve exited with {status} before it was ready:\n{}",
                    serve.log()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "serve was not ready within {} s",
                DEADLINE.as_secs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(serve)
    }

    /// What `serve` wrote to stderr, once it has exited.
    fn log(&self) -> String {
        self.stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default()
    }

    /// SIGTERM, then up to 60 s for an exit with status 0.
    fn stop(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "serve exited with {status} on SIGTERM:\n{}",
                    self.log()
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "serve did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request with a body on loopback, the connection closed
/// after it; the status and the response body.
fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address).with_context(|| format!("connect {address}"))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.set_write_timeout(Some(DEADLINE))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("{method} {path}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: not an HTTP response: {response:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{method} {path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_compare_without_or_with_a_given_token() {
        let a = r#"{"event":"E","properties":{"distinct_id":"1","time":1,"token":"t1"}}"#;
        let b = r#"{"event":"E","properties":{"token":"t2","time":1,"distinct_id":"1"}}"#;
        let c = r#"{"event":"E","properties":{"distinct_id":"1","time":2}}"#;
        assert_eq!(events(a, None).unwrap(), events(b, None).unwrap());
        assert_eq!(events(a, Some("x")).unwrap(), events(b, Some("x")).unwrap());
        assert_ne!(events(a, None).unwrap(), events(c, None).unwrap());
        assert!(events("{\"event\":1}", None).is_err());
    }

    #[test]
    fn reads_the_cohort_additions_of_dry_run_requests() {
        let text = concat!(
            r#"{"endpoint":"/users/track","body":{"attributes":[{"external_id":"a","mixpanel_cohorts":{"add":["4242"]}},{"external_id":"b","mixpanel_cohorts":{"remove":["4242"]}}]}}"#,
            "\n",
            r#"{"endpoint":"/users/track","body":{"attributes":[{"external_id":"c","mixpanel_cohorts":{"add":["1","4242"]}},{"external_id":"d","mixpanel_cohorts":{"add":["1"]}}]}}"#,
            "\n"
        );
        let added: Vec<String> = cohort_additions(text).unwrap().into_iter().collect();
        assert_eq!(added, ["a", "c"]);
        assert!(cohort_additions(r#"{"endpoint":"/other","body":{}}"#).is_err());
    }

    #[test]
    fn checks_an_archive_against_its_sums_file() {
        let dir = crate::scratch_dir("quickstart-sums").unwrap();
        let archive = dir.join("x-1.0.0-t.tar.gz");
        std::fs::write(&archive, b"archive bytes").unwrap();
        std::fs::write(
            sums_path(&archive),
            crate::dist::sums_line(b"archive bytes", "x-1.0.0-t.tar.gz"),
        )
        .unwrap();
        check_sums(&archive).unwrap();
        std::fs::write(&archive, b"archive bytez").unwrap();
        assert!(check_sums(&archive).is_err());
        std::fs::write(
            sums_path(&archive),
            crate::dist::sums_line(b"archive bytez", "other.tar.gz"),
        )
        .unwrap();
        assert!(check_sums(&archive).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
