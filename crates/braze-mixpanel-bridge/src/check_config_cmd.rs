//! `check-config`: validates the service's configuration and prints it,
//! secrets redacted, each value with where it came from; or fails with the
//! first mistake, naming the setting.
//!
//! With `--connect` it then looks at what `serve` would use, creating and
//! changing nothing, and appends one line per thing checked to the output
//! as TOML comments (so the output stays a configuration file):
//! - NATS (`spool.backend = "nats"`): connects as `serve` does, compares
//!   the server's `max_payload` with `ingest.max_body_bytes` (when the
//!   setting is left at its default, the body cap follows `max_payload`;
//!   when it is set higher, `serve` lowers it, and this is a problem), and
//!   checks the batch stream, its consumer, the dead-letter stream
//!   ([`bridge_server::spool::nats::check`]) and, when the cohort import is
//!   on, its key-value buckets ([`NatsStore::check`]): each "exists,
//!   settings match", "missing: serve will create it" or "mismatch:
//!   \<setting\> is X, configuration asks Y".
//! - SQLite: there is no server to connect to; it checks that the data
//!   directory can be written (or created).
//! - With `archive.url`: that the archive opens as `serve` opens it (a
//!   directory exists; an object store's client can be built from the
//!   environment). Nothing is written or listed: writes are checked by
//!   delivery, batch by batch.
//!
//! An unreachable server, a mismatch or an `ingest.max_body_bytes` set
//! over what `max_payload` holds fails (exit 1); missing objects do not, since `serve` creates them.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bridge_server::config::{Config, SpoolBackend};
use bridge_server::nats::NatsOptions;
use bridge_server::spool::nats::{HEADER_ALLOWANCE, ObjectState, body_room};
use cohort_import::store::nats::{BucketState, NatsStore};
use currents_archive::store::ArchiveStore;

use crate::server_args::ServerArgs;

/// `check-config`'s arguments: the service's, and `--connect`.
#[derive(clap::Args, Debug)]
pub(crate) struct CheckConfigArgs {
    #[command(flatten)]
    server: ServerArgs,

    /// Also check what serve would use, creating nothing: with
    /// spool.backend = "nats", connect and check the server's max_payload,
    /// the streams, the consumer and the cohort buckets against the
    /// configuration; with SQLite, that the data directory is writable;
    /// with archive.url, that the archive opens.
    #[arg(long)]
    connect: bool,
}

pub(crate) fn run(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let config = args.server.load_config()?;
    let mut stderr = io::stderr().lock();
    for warning in config.warnings() {
        writeln!(stderr, "braze-mixpanel-bridge: warning: {warning}")?;
    }
    drop(stderr);
    let mut stdout = io::stdout();
    stdout.write_all(config.to_redacted_toml().as_bytes())?;
    stdout.flush()?;
    if !args.connect {
        return Ok(ExitCode::SUCCESS);
    }
    let mut report = match &config.spool.backend {
        SpoolBackend::Sqlite => check_data_dir(&config.data_dir),
        SpoolBackend::Nats(options) => crate::dlq_cmd::runtime()?
            .block_on(check_nats(&config, options))
            .context("check-config --connect")?,
    };
    if let Some(archive) = &config.archive {
        report.archive(&archive.url);
    }
    let mut text = String::from("\n");
    for line in &report.lines {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    match report.n_problems {
        0 => Ok(ExitCode::SUCCESS),
        n_problems => anyhow::bail!(
            "{n_problems} problem(s) found by --connect (above): serve would not run as configured"
        ),
    }
}

/// What `--connect` found: one line per thing checked, and how many would
/// stop `serve` or make it fail.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) lines: Vec<String>,
    pub(crate) n_problems: usize,
}

impl Report {
    fn ok(&mut self, line: String) {
        self.lines.push(line);
    }

    fn problem(&mut self, line: String) {
        self.lines.push(line);
        self.n_problems += 1;
    }

    /// How the body cap fits the server's `max_payload`: room for
    /// `ingest.max_body_bytes`, the cap following `max_payload` (the
    /// setting left at its default), or a setting `serve` must lower (a
    /// problem).
    fn body_cap(&mut self, config: &Config, max_payload: usize) {
        let room = body_room(max_payload);
        let cap = config.ingest_body_cap(Some(room));
        let configured = config.ingest.max_body_bytes;
        if cap.lowered_from_setting {
            self.problem(format!(
                "max_payload: mismatch: the server's max_payload is {max_payload} bytes, room for a body of {room} with {HEADER_ALLOWANCE} bytes of headers; ingest.max_body_bytes asks {configured}: serve lowers the cap to {room} (larger batches get 413 and Braze splits them); raise max_payload on every NATS server (up to 64MB) or set ingest.max_body_bytes to {room} at most"
            ));
        } else if cap.bytes < configured {
            self.ok(format!(
                "max_payload: {max_payload} bytes; ingest.max_body_bytes is not set, so the body cap follows it: {room} bytes ({HEADER_ALLOWANCE} bytes kept for headers)"
            ));
        } else {
            self.ok(format!(
                "max_payload: {max_payload} bytes, room for ingest.max_body_bytes ({configured}) and {HEADER_ALLOWANCE} bytes of headers"
            ));
        }
    }

    /// Whether the archive of `archive.url` opens as `serve` opens it.
    fn archive(&mut self, url: &str) {
        match ArchiveStore::open(url) {
            Ok(store) => self.ok(format!(
                "archive {}: opens (nothing written: delivery writes each batch there before sending it)",
                store.location()
            )),
            Err(error) => self.problem(format!("archive.url: {error}")),
        }
    }

    /// One object's line: `<object>: exists, settings match`, `…: missing:
    /// serve will create it` or `…: mismatch: <setting> is X, configuration
    /// asks Y` (a problem).
    fn object(&mut self, object: &str, state: Found<'_>) {
        match state {
            Found::Matches => self.ok(format!("{object}: exists, settings match")),
            Found::Missing => self.ok(format!("{object}: missing: serve will create it")),
            Found::Mismatch {
                setting,
                found,
                wanted,
            } => self.problem(format!(
                "{object}: mismatch: {setting} is {found}, configuration asks {wanted}"
            )),
        }
    }
}

/// A stream's, consumer's or bucket's state, whoever reported it.
enum Found<'a> {
    Matches,
    Missing,
    Mismatch {
        setting: &'a str,
        found: &'a str,
        wanted: &'a str,
    },
}

impl<'a> From<&'a ObjectState> for Found<'a> {
    fn from(state: &'a ObjectState) -> Found<'a> {
        match state {
            ObjectState::Matches => Found::Matches,
            ObjectState::Missing => Found::Missing,
            ObjectState::Mismatch {
                setting,
                found,
                wanted,
            } => Found::Mismatch {
                setting,
                found,
                wanted,
            },
        }
    }
}

impl<'a> From<&'a BucketState> for Found<'a> {
    fn from(state: &'a BucketState) -> Found<'a> {
        match state {
            BucketState::Matches => Found::Matches,
            BucketState::Missing => Found::Missing,
            BucketState::Mismatch {
                setting,
                found,
                wanted,
            } => Found::Mismatch {
                setting,
                found,
                wanted,
            },
        }
    }
}

/// Connects to NATS and compares what it has with what `serve` would
/// create or check. Fails when NATS cannot be reached or a request fails.
pub(crate) async fn check_nats(config: &Config, options: &NatsOptions) -> anyhow::Result<Report> {
    let client = bridge_server::nats::connect(options).await?;
    let info = client.server_info();
    let mut report = Report::default();
    report.ok(format!(
        "NATS: connected to nats-server {} ({}){}",
        info.version,
        info.server_name,
        if info.jetstream {
            ""
        } else {
            ", JetStream not enabled on this server"
        }
    ));
    report.body_cap(config, info.max_payload);
    let checks = bridge_server::spool::nats::check(
        client.clone(),
        options,
        bridge_server::serve::nats_ack_wait(config.delivery.lease),
    )
    .await?;
    for check in &checks {
        report.object(&check.object, Found::from(&check.state));
    }
    if config.cohorts.is_enabled() {
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .timeout(options.connect_timeout)
            .build(client);
        let buckets =
            NatsStore::check(&jetstream, &options.kv_bucket_prefix, options.replicas).await?;
        for bucket in &buckets {
            report.object(
                &format!("key-value bucket {}", bucket.name),
                Found::from(&bucket.state),
            );
        }
    } else {
        report.ok(format!(
            "key-value buckets {}-*: not used (the cohort import is off)",
            options.kv_bucket_prefix
        ));
    }
    Ok(report)
}

/// With SQLite there is nothing to connect to: checks that the data dir
/// can be written, or created by `serve` (its closest existing parent can
/// be written). Creates nothing that it does not remove.
pub(crate) fn check_data_dir(data_dir: &Path) -> Report {
    let mut report = Report::default();
    report.ok("spool.backend is sqlite: no server to connect to".to_owned());
    let shown = data_dir.display();
    if data_dir.is_dir() {
        match probe_writable(data_dir) {
            Ok(()) => report.ok(format!("data dir {shown}: exists and is writable")),
            Err(error) => {
                report.problem(format!(
                    "data dir {shown}: exists but is not writable: {error}"
                ));
            }
        }
        return report;
    }
    if data_dir.exists() {
        report.problem(format!("data dir {shown}: exists but is not a directory"));
        return report;
    }
    let parent = data_dir
        .ancestors()
        .skip(1)
        .find(|ancestor| ancestor.as_os_str().is_empty() || ancestor.is_dir());
    let parent = match parent {
        Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
        Some(parent) => parent,
        None => {
            report.problem(format!("data dir {shown}: missing, and no parent exists"));
            return report;
        }
    };
    match probe_writable(parent) {
        Ok(()) => report.ok(format!(
            "data dir {shown}: missing: serve will create it (in {}, writable)",
            parent.display()
        )),
        Err(error) => report.problem(format!(
            "data dir {shown}: missing, and {} is not writable: {error}",
            parent.display()
        )),
    }
    report
}

/// Creates and removes a file in `dir`.
fn probe_writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".check-config-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}
